package migration

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
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

// TestRateLimiterPaceOnFakeClock: at 1 MiB/s each 1 MiB write takes its
// second on the shared timeline, to the nanosecond: the second write is
// held until exactly one second has passed, not before.
func TestRateLimiterPaceOnFakeClock(t *testing.T) {
	clock := clockwork.NewFakeClock()
	l := newRateLimiter(1 << 20)
	l.clock = clock
	l.wait(1 << 20) // goes at once and books [0, 1 s)
	done := make(chan struct{})
	go func() { l.wait(1 << 20); close(done) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("the second write did not wait for its slot")
	}
	clock.Advance(time.Second - time.Nanosecond)
	select {
	case <-done:
		t.Fatal("the second write went 1 ns before its slot")
	case <-time.After(50 * time.Millisecond):
	}
	clock.Advance(time.Nanosecond)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the second write still waits at its slot")
	}
	// Idle time is not banked: after a pause the next write goes at once
	// and books from now, so no burst can exceed the rate.
	clock.Advance(10 * time.Second)
	l.wait(1 << 20)
	if got, want := l.next, clock.Now().Add(time.Second); !got.Equal(want) {
		t.Errorf("after idling the next slot starts at %v, want %v", got, want)
	}
}
