package migration

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/godwit-vmm/godwit/internal/memory"
	"github.com/godwit-vmm/godwit/internal/migration/wire"
)

// Frame batching on the data streams: a PAGES frame carries at most this
// many DATA pages (1 MiB), so the writer goroutines pipeline with the
// sender that scans the bitmap.
const batchPages = 256

var zeroPage [memory.PageSize]byte

// sendRound sends every page set in s.bitmaps as round iter, clearing each
// 2 MiB chunk in KVM's log right before reading it, and waits for the
// destination's ITER_DONE. In the first round, pages the guest never
// touched (not present in the host mapping) are skipped: the destination's
// fresh RAM already reads as zero there.
func (s *Source) sendRound(ctx context.Context, iter uint32, first bool) (Round, error) {
	rd := Round{Iteration: int(iter)}
	before := s.bytes.Load()
	if err := s.sendControl(wire.TypeIterBegin, iter, nil); err != nil {
		return rd, err
	}
	n := len(s.streams)
	batches := make([][]wire.Run, n)
	batchData := make([]int, n)
	flush := func(i int) error {
		if len(batches[i]) == 0 {
			return nil
		}
		err := s.streams[i].send(iter, batches[i])
		batches[i], batchData[i] = nil, 0
		return err
	}
	present := make([]bool, chunkPages)
	for ri, r := range s.regions {
		bm := s.bitmaps[ri]
		const wordsPerChunk = chunkPages / 64
		for w := 0; w < len(bm); w += wordsPerChunk {
			words := bm[w:min(w+wordsPerChunk, len(bm))]
			if allZero(words) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return rd, fmt.Errorf("migration: cancelled: %w", err)
			}
			firstPage := uint64(w) * 64
			// Clear before read: a write after this point sets the bit
			// again and the page goes in a later round.
			if err := s.vm.ClearDirtyLog(ri, firstPage, words); err != nil {
				return rd, err
			}
			npages := min(uint64(chunkPages), r.Pages()-firstPage)
			if first {
				if err := s.present.lookup(r.Host, firstPage, present[:npages]); err != nil {
					return rd, err
				}
			}
			st := wire.StreamFor(r.GPA+firstPage*memory.PageSize, n)
			var run *wire.Run
			for i := uint64(0); i < npages; i++ {
				if words[i/64]&(1<<(i%64)) == 0 {
					run = nil
					continue
				}
				if first && !present[i] {
					rd.SkippedPages++
					run = nil
					continue
				}
				p := firstPage + i
				page := r.Host[p*memory.PageSize : (p+1)*memory.PageSize]
				kind := wire.KindData
				if bytes.Equal(page, zeroPage[:]) {
					kind = wire.KindZero
					rd.ZeroPages++
				} else {
					rd.DataPages++
					batchData[st]++
				}
				if run != nil && run.Kind == kind {
					run.NPages++
					if kind == wire.KindData {
						run.Data = r.Host[run.GPA-r.GPA : (p+1)*memory.PageSize]
					}
				} else {
					nr := wire.Run{GPA: r.GPA + p*memory.PageSize, NPages: 1, Kind: kind}
					if kind == wire.KindData {
						nr.Data = page
					}
					batches[st] = append(batches[st], nr)
					run = &batches[st][len(batches[st])-1]
				}
				if batchData[st] >= batchPages || len(batches[st]) >= wire.MaxRuns-1 {
					if err := flush(st); err != nil {
						return rd, s.streamFailed(err)
					}
					run = nil
				}
			}
			clear(words)
		}
	}
	for i := range batches {
		if err := flush(i); err != nil {
			return rd, s.streamFailed(err)
		}
	}
	for _, st := range s.streams {
		if err := st.end(iter); err != nil {
			return rd, s.streamFailed(err)
		}
	}
	if err := s.sendControl(wire.TypeIterEnd, iter, nil); err != nil {
		return rd, err
	}
	h, _, err := s.reply(ctx)
	if err != nil {
		return rd, err
	}
	if h.Type != wire.TypeIterDone || h.Iteration != iter {
		return rd, fmt.Errorf("migration: destination sent %v(%d), want ITER_DONE(%d)", h.Type, h.Iteration, iter)
	}
	rd.Bytes = s.bytes.Load() - before
	return rd, nil
}

func allZero(w []uint64) bool {
	for _, x := range w {
		if x != 0 {
			return false
		}
	}
	return true
}

// stream is one data connection and the goroutine that writes to it, so
// that scanning the bitmap and writing to the socket overlap.
type stream struct {
	c     *wire.Conn
	work  chan streamMsg
	bytes *atomic.Uint64
	limit *rateLimiter // shared by the session's streams
	err   atomic.Pointer[error]
	done  chan struct{}
}

type streamMsg struct {
	iter uint32
	runs []wire.Run
	ack  chan error // set for DATA_END: answered once everything before is written
}

func newStream(c *wire.Conn, counter *atomic.Uint64, limit *rateLimiter) *stream {
	st := &stream{c: c, work: make(chan streamMsg, 8), bytes: counter, limit: limit, done: make(chan struct{})}
	go st.loop()
	return st
}

func (st *stream) loop() {
	defer close(st.done)
	for m := range st.work {
		if e := st.err.Load(); e != nil {
			if m.ack != nil {
				m.ack <- *e
			}
			continue
		}
		var err error
		if m.ack != nil {
			err = st.c.WriteFrame(wire.TypeDataEnd, 0, m.iter, nil)
			st.bytes.Add(wire.HeaderSize)
		} else {
			st.limit.wait(wire.PagesPayloadLen(m.runs) + wire.HeaderSize)
			var n int64
			n, err = st.c.WritePages(m.iter, m.runs)
			st.bytes.Add(uint64(n))
		}
		if err != nil {
			err = fmt.Errorf("migration: data stream: %w", err)
			st.err.Store(&err)
		}
		if m.ack != nil {
			m.ack <- err
		}
	}
}

func (st *stream) send(iter uint32, runs []wire.Run) error {
	if e := st.err.Load(); e != nil {
		return *e
	}
	st.work <- streamMsg{iter: iter, runs: runs}
	return nil
}

// end writes DATA_END(iter) after everything queued and waits for it.
func (st *stream) end(iter uint32) error {
	ack := make(chan error, 1)
	st.work <- streamMsg{iter: iter, ack: ack}
	return <-ack
}

func (st *stream) close() {
	st.c.Close()
	close(st.work)
	<-st.done
}

// rateLimiter paces the data streams to a bandwidth limit (bytes/s): each
// write reserves its bytes on a shared timeline and sleeps until its slot.
type rateLimiter struct {
	off   atomic.Bool // set by disable, for good
	clock clockwork.Clock

	mu      sync.Mutex
	rate    float64 // bytes per second, 0: none
	next    time.Time
	changed chan struct{} // closed and replaced by setRate and disable: sleepers recompute
}

// disable lifts the limit: the switchover sends its last pages as fast as
// the link goes, since the guest is paused meanwhile (as QEMU does). A
// cancelled migration lifts it too, so that no stream sleeps on.
func (l *rateLimiter) disable() {
	if l != nil {
		l.off.Store(true)
		l.wakeSleepers()
	}
}

// newRateLimiter returns a limiter at bytesPerSec; 0: no limit (yet: see
// setRate).
func newRateLimiter(bytesPerSec uint64) *rateLimiter {
	return &rateLimiter{rate: float64(bytesPerSec), changed: make(chan struct{}), clock: clockwork.NewRealClock()}
}

// setRate changes the limit (0: none). Writes waiting for their slot
// take their place again on the new timeline.
func (l *rateLimiter) setRate(bytesPerSec uint64) {
	l.mu.Lock()
	l.rate = float64(bytesPerSec)
	l.next = time.Time{}
	l.mu.Unlock()
	l.wakeSleepers()
}

// wakeSleepers makes every write waiting for its slot look again.
func (l *rateLimiter) wakeSleepers() {
	l.mu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// wait blocks until n more bytes may go.
func (l *rateLimiter) wait(n uint64) {
	for l != nil && !l.off.Load() {
		l.mu.Lock()
		if l.rate == 0 {
			l.mu.Unlock()
			return
		}
		now := l.clock.Now()
		start := l.next
		if start.Before(now) {
			start = now
		}
		l.next = start.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
		changed := l.changed
		l.mu.Unlock()
		d := start.Sub(now)
		if d <= 0 {
			return
		}
		t := l.clock.NewTimer(d)
		select {
		case <-t.Chan():
			return
		case <-changed:
			t.Stop() // the rate changed or the limit is off: look again
		}
	}
}
