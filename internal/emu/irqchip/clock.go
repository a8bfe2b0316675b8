package irqchip

import (
	"sync"
	"time"
)

// Clock is the guest clock: nanoseconds that stand still while the VM is
// paused.
type Clock interface {
	Now() int64
}

// Scheduler is a guest clock that can run a function later.
type Scheduler interface {
	Clock
	// AfterFunc calls f on its own goroutine (or, for FakeClock, from
	// Advance) once the guest clock has advanced by d ns (d <= 0: as soon
	// as possible). stop cancels the call and reports whether it did so
	// before f started.
	AfterFunc(d int64, f func()) (stop func() bool)
}

// RealClock is the production guest clock: host CLOCK_MONOTONIC minus the
// time spent paused, plus an offset set by Set. Pause freezes the clock
// and holds every timer; Resume re-arms them with the guest time they had
// left.
type RealClock struct {
	base time.Time // monotonic reference

	// mu guards the fields below.
	mu       sync.Mutex
	offset   int64 // guest ns = time.Since(base) + offset, while running
	paused   bool
	pausedAt int64 // guest ns at Pause
	timers   map[*realTimer]struct{}
}

type realTimer struct {
	at   int64 // guest-ns deadline
	f    func()
	host *time.Timer
	arm  uint64 // incremented on each re-arm; a stale host timer is ignored
	done bool
}

// NewRealClock returns a running guest clock that reads start now.
func NewRealClock(start int64) *RealClock {
	return &RealClock{base: time.Now(), offset: start, timers: map[*realTimer]struct{}{}}
}

func (c *RealClock) nowLocked() int64 {
	if c.paused {
		return c.pausedAt
	}
	return int64(time.Since(c.base)) + c.offset
}

// Now returns the guest time in ns.
func (c *RealClock) Now() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nowLocked()
}

// Set makes the guest clock read now, keeping timers at their guest
// deadlines. A migration destination sets its clock to the source's guest
// time before restoring device state.
func (c *RealClock) Set(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		c.pausedAt = now
		return
	}
	c.offset = now - int64(time.Since(c.base))
	for t := range c.timers {
		c.armLocked(t, now)
	}
}

// Pause freezes the guest clock and holds every timer.
func (c *RealClock) Pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		return
	}
	c.pausedAt = c.nowLocked()
	c.paused = true
	for t := range c.timers {
		t.arm++
		if t.host != nil {
			t.host.Stop()
			t.host = nil
		}
	}
}

// Resume restarts the guest clock from where Pause froze it and re-arms
// every timer with the guest time it had left.
func (c *RealClock) Resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.paused {
		return
	}
	c.paused = false
	c.offset = c.pausedAt - int64(time.Since(c.base))
	now := c.nowLocked()
	for t := range c.timers {
		c.armLocked(t, now)
	}
}

// armLocked (re)starts t's host timer; c.mu is held and the clock runs.
func (c *RealClock) armLocked(t *realTimer, now int64) {
	if t.host != nil {
		t.host.Stop()
	}
	t.arm++
	arm := t.arm
	d := max(t.at-now, 0)
	t.host = time.AfterFunc(time.Duration(d), func() { c.fire(t, arm) })
}

func (c *RealClock) fire(t *realTimer, arm uint64) {
	c.mu.Lock()
	if t.done || t.arm != arm || c.paused {
		c.mu.Unlock()
		return
	}
	if now := c.nowLocked(); now < t.at { // woke early against a moved clock
		c.armLocked(t, now)
		c.mu.Unlock()
		return
	}
	t.done = true
	t.host = nil
	delete(c.timers, t)
	c.mu.Unlock()
	t.f()
}

// AfterFunc implements Scheduler.
func (c *RealClock) AfterFunc(d int64, f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.nowLocked()
	t := &realTimer{at: now + max(d, 0), f: f}
	c.timers[t] = struct{}{}
	if !c.paused {
		c.armLocked(t, now)
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if t.done {
			return false
		}
		t.done = true
		t.arm++
		if t.host != nil {
			t.host.Stop()
			t.host = nil
		}
		delete(c.timers, t)
		return true
	}
}

// FakeClock is a Scheduler for tests: time moves only in Advance, which
// runs due timers in deadline order (ties in scheduling order) on the
// caller's goroutine, with Now reading each timer's deadline while it runs.
type FakeClock struct {
	// mu guards the fields below.
	mu     sync.Mutex
	now    int64
	seq    uint64
	timers []*fakeTimer
}

type fakeTimer struct {
	at  int64
	seq uint64
	f   func()
}

// NewFakeClock returns a fake clock reading start.
func NewFakeClock(start int64) *FakeClock { return &FakeClock{now: start} }

// Now implements Clock.
func (c *FakeClock) Now() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements Scheduler.
func (c *FakeClock) AfterFunc(d int64, f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{at: c.now + max(d, 0), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.timers {
			if x == t {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				return true
			}
		}
		return false
	}
}

// Pending returns how many timers are armed.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Advance moves the clock forward by d ns, running every timer that falls
// due, including timers armed by the timers it runs.
func (c *FakeClock) Advance(d int64) {
	c.mu.Lock()
	target := c.now + d
	c.mu.Unlock()
	for {
		c.mu.Lock()
		best := -1
		for i, t := range c.timers {
			if t.at <= target && (best < 0 || t.at < c.timers[best].at ||
				t.at == c.timers[best].at && t.seq < c.timers[best].seq) {
				best = i
			}
		}
		if best < 0 {
			c.now = max(c.now, target)
			c.mu.Unlock()
			return
		}
		t := c.timers[best]
		c.timers = append(c.timers[:best], c.timers[best+1:]...)
		c.now = max(c.now, t.at)
		c.mu.Unlock()
		t.f()
	}
}
