package vm

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPanicWatch: output passes through untouched; a kernel panic ends
// with an error holding the last lines, at the end marker or after the
// grace time; ordinary output never does.
func TestPanicWatch(t *testing.T) {
	for _, end := range []bool{true, false} {
		var out bytes.Buffer
		got := make(chan error, 2)
		w := newPanicWatch(&out, func(err error) { got <- err })
		var text strings.Builder
		for i := range 20 {
			fmt.Fprintf(&text, "[    1.%06d] line %d\r\n", i, i)
		}
		text.WriteString("[    2.000000] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
		text.WriteString("[    2.000001] CPU: 0 PID: 1 Comm: swapper/0\n")
		if end {
			text.WriteString("[    2.000002] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---\n")
		}
		// Written in odd pieces, as a UART delivers it.
		b := []byte(text.String())
		start := time.Now()
		for len(b) > 0 {
			n := min(len(b), 7)
			w.Write(b[:n])
			b = b[n:]
		}
		if out.String() != text.String() {
			t.Fatal("the console output was changed")
		}
		var err error
		select {
		case err = <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("end marker %v: no panic reported", end)
		}
		if waited := time.Since(start); end && waited > panicGrace/2 || !end && waited < panicGrace/2 {
			t.Errorf("end marker %v: reported after %v", end, waited)
		}
		msg := err.Error()
		if !strings.Contains(msg, "Unable to mount root fs") || !strings.Contains(msg, "line 19") || strings.Contains(msg, "line 5 ") ||
			strings.Contains(msg, "\n") {
			t.Errorf("end marker %v: error %q: want the last lines on one line", end, msg)
		}
		w.Write([]byte("Kernel panic - not syncing: again\n---[ end Kernel panic\n"))
		select {
		case err := <-got:
			t.Errorf("a second report: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	w := newPanicWatch(&bytes.Buffer{}, func(err error) { t.Errorf("reported %v", err) })
	w.Write([]byte("HB 1 2 3\nno panic here, even with a very long line " + strings.Repeat("x", 2*lineMax) + "\n"))
	time.Sleep(50 * time.Millisecond)
}
