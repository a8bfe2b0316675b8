package fence

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestPublishRead(t *testing.T) {
	p := NewPublisher(filepath.Join(t.TempDir(), "fence"))
	if err := p.PublishAt(123456789); err != nil {
		t.Fatal(err)
	}
	if d, err := Read(p.Path()); err != nil || d != 123456789 {
		t.Fatalf("Read = %d, %v", d, err)
	}
}

// fakeClock is a clock the test advances; Mono counts from its creation.
type fakeClock struct {
	*clockwork.FakeClock
	base time.Time
}

func newFakeClock() fakeClock {
	c := clockwork.NewFakeClock()
	return fakeClock{FakeClock: c, base: c.Now()}
}

func (c fakeClock) Mono() int64 { return int64(c.Since(c.base)) }

// watched is a fence followed on a fake clock.
type watched struct {
	t       *testing.T
	clock   fakeClock
	pub     *Publisher
	ctx     context.Context
	fired   chan string
	updates chan int64
}

func watchFake(t *testing.T, interval time.Duration, publish func(*Publisher, fakeClock)) *watched {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	w := &watched{t: t, clock: newFakeClock(), pub: NewPublisher(filepath.Join(t.TempDir(), "fence")), ctx: ctx,
		fired: make(chan string, 1), updates: make(chan int64, 1000)}
	if publish != nil {
		publish(w.pub, w.clock)
	}
	stop := follow(w.clock, w.pub.Path(), interval, func(d int64) { w.updates <- d }, func(r string) { w.fired <- r })
	t.Cleanup(stop)
	if publish != nil {
		// The first read happens at once; from then on the clock is the
		// test's to move.
		if fired, r := w.settle(); fired {
			t.Fatalf("fired on the first read: %s", r)
		}
	}
	return w
}

// settle waits until the watcher has handled everything the clock's last
// move made due: it waits on its timer again, or it fired. It reports
// whether it fired, and why.
func (w *watched) settle() (fired bool, reason string) {
	w.t.Helper()
	armed := make(chan error, 1)
	go func() { armed <- w.clock.BlockUntilContext(w.ctx, 1) }()
	select {
	case r := <-w.fired:
		return true, r
	case err := <-armed:
		if err != nil {
			w.t.Fatalf("the watcher neither waits nor fires: %v", err)
		}
	}
	// Armed: the expiry, if any, was sent before the timer was reset.
	select {
	case r := <-w.fired:
		return true, r
	default:
		return false, ""
	}
}

// advance moves the clock by d in steps no longer than step, and fails if
// the watcher fires. A step that passes a poll stops short of the next
// one as long as step divides the poll interval, so the polls keep their
// times exactly (the watcher re-arms its timer from the time it reads).
func (w *watched) advance(d, step time.Duration) {
	w.t.Helper()
	for d > 0 {
		s := min(d, step)
		w.clock.Advance(s)
		d -= s
		if fired, r := w.settle(); fired {
			w.t.Fatalf("fired at %v on the fake clock, before the deadline: %s", time.Duration(w.clock.Mono()), r)
		}
	}
}

// TestFollowFiresAtDeadline: on a fake clock the fence fires at the
// deadline to the nanosecond, never before, and hands every deadline it
// reads to update.
func TestFollowFiresAtDeadline(t *testing.T) {
	// One nanosecond after the poll at 140 ms: a fence that fired early by
	// any margin would fire at that poll.
	const deadline = 140*time.Millisecond + time.Nanosecond
	w := watchFake(t, 20*time.Millisecond, func(p *Publisher, c fakeClock) {
		if err := p.PublishAt(c.Mono() + int64(deadline)); err != nil {
			t.Fatal(err)
		}
	})
	w.advance(deadline-time.Nanosecond, 5*time.Millisecond)
	w.clock.Advance(time.Nanosecond)
	fired, r := w.settle()
	if !fired {
		t.Fatalf("not fired at the deadline (%v)", time.Duration(w.clock.Mono()))
	}
	if !strings.Contains(r, "deadline passed 0s ago") {
		t.Errorf("reason %q, want the deadline passed 0s ago", r)
	}
	// A read at 0 and one per poll (20, 40, ... 140 ms), then at the deadline.
	if n := len(w.updates); n != 9 {
		t.Errorf("update called %d times, want 9 (every poll and the deadline)", n)
	}
	for len(w.updates) > 0 {
		if d := <-w.updates; d != int64(deadline) {
			t.Errorf("update(%d), want %d", d, int64(deadline))
		}
	}
}

// TestFollowRenewedKeepsRunning: a fence whose deadline keeps moving
// never fires; once the renewals stop, it fires at the last deadline.
func TestFollowRenewedKeepsRunning(t *testing.T) {
	w := watchFake(t, 10*time.Millisecond, func(p *Publisher, c fakeClock) {
		p.PublishAt(c.Mono() + int64(100*time.Millisecond))
	})
	var last int64
	for range 20 {
		w.advance(40*time.Millisecond, 5*time.Millisecond)
		last = w.clock.Mono() + int64(100*time.Millisecond)
		if err := w.pub.PublishAt(last); err != nil {
			t.Fatal(err)
		}
	}
	// 800 ms on the clock, far past the first deadline: renewed, running.
	w.advance(time.Duration(last-w.clock.Mono())-time.Nanosecond, 5*time.Millisecond)
	w.clock.Advance(time.Nanosecond)
	if fired, _ := w.settle(); !fired {
		t.Fatalf("not fired at the last deadline once renewals stopped")
	}
	if now := w.clock.Mono(); now != last {
		t.Errorf("fired at %d, the last deadline is %d", now, last)
	}
}

// TestFollowFailsClosed: a fence that cannot be read stops the VM at once,
// and a fence file that goes away stops it at the next poll, with update
// told a deadline long past first.
func TestFollowFailsClosed(t *testing.T) {
	w := watchFake(t, 10*time.Millisecond, nil)
	fired, r := w.settle()
	if !fired || !strings.Contains(r, "cannot read") {
		t.Fatalf("missing fence file: fired %v, reason %q", fired, r)
	}
	if d := <-w.updates; d != 1 {
		t.Errorf("update(%d), want 1 (long past)", d)
	}

	w = watchFake(t, 10*time.Millisecond, func(p *Publisher, c fakeClock) {
		p.PublishAt(c.Mono() + int64(time.Hour))
	})
	w.advance(25*time.Millisecond, 5*time.Millisecond)
	if err := os.Remove(w.pub.Path()); err != nil {
		t.Fatal(err)
	}
	w.advance(5*time.Millisecond-time.Nanosecond, 5*time.Millisecond)
	w.clock.Advance(time.Nanosecond) // the poll at 30 ms
	if fired, r := w.settle(); !fired || !strings.Contains(r, "cannot read") {
		t.Fatalf("fence file removed: fired %v, reason %q", fired, r)
	}
}

// TestWatchFiresAtDeadline runs the real clock: the fence fires once
// CLOCK_MONOTONIC has reached the deadline (read in the callback, so the
// check is exact), and within a bound loose enough for a loaded machine.
func TestWatchFiresAtDeadline(t *testing.T) {
	p := NewPublisher(filepath.Join(t.TempDir(), "fence"))
	deadline := Now() + int64(150*time.Millisecond)
	if err := p.PublishAt(deadline); err != nil {
		t.Fatal(err)
	}
	type firing struct {
		at     int64
		reason string
	}
	fired := make(chan firing, 1)
	stop := Watch(p.Path(), 20*time.Millisecond, func(r string) { fired <- firing{Now(), r} })
	defer stop()
	select {
	case f := <-fired:
		if f.at < deadline {
			t.Errorf("fired %v before the deadline", time.Duration(deadline-f.at))
		}
		if !strings.Contains(f.reason, "deadline passed") {
			t.Errorf("reason %q", f.reason)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("fence did not fire within 30 s of a deadline 150 ms away")
	}
}

func TestCheckReadable(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o711)
	os.Chmod(filepath.Dir(dir), 0o711)
	f := filepath.Join(dir, "fence")
	if err := CheckReadable(f, 65534, 65534); err != nil {
		t.Errorf("not yet published, reachable directory: %v", err)
	}
	os.WriteFile(f, make([]byte, 16), 0o600)
	os.Chmod(f, 0o600)
	if err := CheckReadable(f, 65534, 65534); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Errorf("file 0600 of another user: %v", err)
	}
	os.Chmod(f, 0o644)
	if err := CheckReadable(f, 65534, 65534); err != nil {
		t.Errorf("file 0644: %v", err)
	}
	os.Chmod(dir, 0o700)
	if err := CheckReadable(f, 65534, 65534); err == nil || !strings.Contains(err.Error(), "cannot search") {
		t.Errorf("directory 0700 of another user: %v", err)
	}
	if err := CheckReadable(f, os.Getuid(), os.Getgid()); err != nil {
		t.Errorf("its owner: %v", err)
	}
}
