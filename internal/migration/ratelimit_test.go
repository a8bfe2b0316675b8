package migration

import (
	"testing"
	"time"
)

// TestRateLimiter: writes pace to the rate; a write waiting for its slot
// goes at once when the cap is lifted (setRate 0) or the limiter is
// disabled, and a higher rate shortens its wait.
func TestRateLimiter(t *testing.T) {
	l := newRateLimiter(1 << 20) // 1 MiB/s
	l.wait(1 << 20)              // the first write goes at once, and books 1 s
	waited := func(f func()) time.Duration {
		done := make(chan time.Duration)
		go func() {
			t0 := time.Now()
			l.wait(1 << 20)
			done <- time.Since(t0)
		}()
		time.Sleep(50 * time.Millisecond)
		f()
		select {
		case d := <-done:
			return d
		case <-time.After(5 * time.Second):
			t.Fatal("a write still waits 5 s after the change")
			return 0
		}
	}
	if d := waited(func() { l.setRate(0) }); d > 500*time.Millisecond {
		t.Errorf("lifting the cap released the write after %v", d)
	}
	l.setRate(1 << 20)
	l.wait(1 << 20)
	if d := waited(func() { l.setRate(100 << 20) }); d > 500*time.Millisecond {
		t.Errorf("a 100x rate released the write after %v", d)
	}
	l.setRate(1)
	l.wait(1 << 20)
	if d := waited(l.disable); d > 500*time.Millisecond {
		t.Errorf("disable released the write after %v", d)
	}
	l.setRate(1)
	if d := waited(func() {}); d > 400*time.Millisecond {
		t.Errorf("a disabled limiter held a write for %v", d)
	}
}
