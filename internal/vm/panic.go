package vm

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// A Linux guest that panics prints "Kernel panic - not syncing" and then
// spins forever. panicWatch sits between the serial port and the console:
// it passes every byte on, keeps the last lines, and when a kernel reports
// a panic it ends the VM with an error holding those lines, rather than
// leaving a VM that looks alive and does nothing.

const (
	panicTail  = 12                           // console lines kept for the error
	panicLine  = "Kernel panic - not syncing" // what Linux prints first
	panicEnd   = "---[ end Kernel panic"      // and last
	panicGrace = 2 * time.Second              // wait for the end line at most this long
	lineMax    = 512                          // longer partial lines are cut
)

// panicWatch is an io.Writer for the guest's serial output.
type panicWatch struct {
	out     io.Writer
	onPanic func(error) // called once, from its own goroutine

	mu      sync.Mutex
	partial []byte
	lines   []string // the last panicTail lines
	timer   *time.Timer
	fired   bool
}

func newPanicWatch(out io.Writer, onPanic func(error)) *panicWatch {
	return &panicWatch{out: out, onPanic: onPanic}
}

// Write passes p on and scans its lines.
func (w *panicWatch) Write(p []byte) (int, error) {
	n, err := w.out.Write(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(strings.TrimRight(string(w.partial[:i]), "\r"))
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > lineMax {
		w.line(string(w.partial))
		w.partial = w.partial[:0]
	}
	return n, err
}

// line records one line; mu is held.
func (w *panicWatch) line(s string) {
	w.lines = append(w.lines, s)
	if len(w.lines) > panicTail {
		w.lines = w.lines[len(w.lines)-panicTail:]
	}
	switch {
	case w.fired:
	case strings.Contains(s, panicLine) && w.timer == nil:
		w.timer = time.AfterFunc(panicGrace, w.fire)
	case strings.Contains(s, panicEnd) && w.timer != nil:
		if w.timer.Stop() {
			go w.fire()
		}
	}
}

// fire ends the VM with the kept lines.
func (w *panicWatch) fire() {
	w.mu.Lock()
	if w.fired {
		w.mu.Unlock()
		return
	}
	w.fired = true
	var kept []string
	for _, l := range w.lines {
		if l = strings.TrimSpace(l); l != "" {
			kept = append(kept, l)
		}
	}
	w.mu.Unlock()
	w.onPanic(fmt.Errorf("guest kernel panic; its last console lines: %s", strings.Join(kept, " | ")))
}
