package serial

import (
	"io"
	"sync"
)

// outputBufferCap bounds guest output waiting for a slow writer.
const outputBufferCap = 1 << 20

// asyncWriter hands bytes to an io.Writer from its own goroutine so that the
// vCPU thread that transmits never waits for the console. Bytes beyond the
// buffer's capacity are dropped and counted.
type asyncWriter struct {
	out io.Writer
	cap int

	// mu guards the fields below; cond signals changes to them.
	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte // waiting to be written
	writing bool   // the goroutine is inside out.Write
	closed  bool
	dropped uint64
	done    chan struct{} // closed when the goroutine exits
}

func newAsyncWriter(out io.Writer, capacity int) *asyncWriter {
	w := &asyncWriter{out: out, cap: capacity, done: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	if out == nil {
		w.out = io.Discard
	}
	go w.run()
	return w
}

// Write queues p (never blocks on the underlying writer).
func (w *asyncWriter) Write(p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if room := w.cap - len(w.buf); len(p) > room {
		w.dropped += uint64(len(p) - room)
		p = p[:room]
	}
	w.buf = append(w.buf, p...)
	w.cond.Broadcast()
}

func (w *asyncWriter) run() {
	defer close(w.done)
	w.mu.Lock()
	for {
		for len(w.buf) == 0 && !w.closed {
			w.cond.Wait()
		}
		if len(w.buf) == 0 && w.closed {
			w.mu.Unlock()
			return
		}
		b := w.buf
		w.buf = nil
		w.writing = true
		w.mu.Unlock()
		w.out.Write(b) // a console write error loses output, nothing else
		w.mu.Lock()
		w.writing = false
		w.cond.Broadcast()
	}
}

// Flush waits until everything queued so far has been written.
func (w *asyncWriter) Flush() {
	w.mu.Lock()
	for (len(w.buf) > 0 || w.writing) && !w.closed {
		w.cond.Wait()
	}
	w.mu.Unlock()
}

// Dropped returns the number of bytes dropped for lack of room.
func (w *asyncWriter) Dropped() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped
}

// Close writes what is queued, then stops the goroutine.
func (w *asyncWriter) Close() error {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	<-w.done
	return nil
}
