package virtio

import "sync"

// worker is the goroutine that runs a device's queue processing. vCPU
// threads and device goroutines only set bits in pending and signal.
type worker struct {
	// mu guards the fields below; cond signals any change to them.
	mu      sync.Mutex
	cond    *sync.Cond
	pending uint32 // queues to process
	active  bool   // the driver set DRIVER_OK and did not reset since
	paused  bool   // Pause called and not undone
	busy    bool   // inside a processing pass
	closed  bool
	done    chan struct{}
}

func (w *worker) start(t *Transport) {
	w.cond = sync.NewCond(&w.mu)
	w.done = make(chan struct{})
	go w.run(t)
}

func (w *worker) run(t *Transport) {
	defer close(w.done)
	w.mu.Lock()
	for {
		for !w.closed && (!w.active || w.paused || w.pending == 0) {
			w.cond.Wait()
		}
		if w.closed {
			w.mu.Unlock()
			return
		}
		mask := w.pending
		w.pending = 0
		w.busy = true
		w.mu.Unlock()

		more := t.process(mask)

		w.mu.Lock()
		w.pending |= more
		w.busy = false
		w.cond.Broadcast()
	}
}

func allQueues(n int) uint32 { return uint32(1)<<n - 1 }

func (w *worker) kick(i int) {
	w.mu.Lock()
	w.pending |= 1 << i
	w.cond.Broadcast()
	w.mu.Unlock()
}

// setActive starts (with every queue pending) or stops processing; when
// stopping it waits for the pass in flight.
func (w *worker) setActive(on bool, queues int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.active = on
	if on {
		w.pending |= allQueues(queues)
	} else {
		w.pending = 0
		for w.busy {
			w.cond.Wait()
		}
	}
	w.cond.Broadcast()
}

func (w *worker) pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.paused = true
	for w.busy {
		w.cond.Wait()
	}
}

func (w *worker) resume(queues int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.paused = false
	w.pending |= allQueues(queues)
	w.cond.Broadcast()
}

func (w *worker) waitIdle() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.closed && w.active && !w.paused && (w.busy || w.pending != 0) {
		w.cond.Wait()
	}
}

func (w *worker) stop() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	<-w.done
}
