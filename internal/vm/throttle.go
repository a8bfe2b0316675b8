package vm

import (
	"time"
)

// throttlePeriod is the auto-converge period: with throttle p%, every vCPU
// sleeps p% of each period outside the guest.
const throttlePeriod = 10 * time.Millisecond

// SetThrottle slows every vCPU to (100-percent)% of its speed, as QEMU's
// auto-converge does, so that a guest dirtying memory faster than the link
// carries it lets a live migration converge. 0 turns it off. It returns at
// once; a goroutine kicks the vCPUs every throttlePeriod.
func (v *VM) SetThrottle(percent int) {
	percent = min(max(percent, 0), 99)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.throttleStop != nil {
		close(v.throttleStop)
		v.throttleStop = nil
	}
	v.throttlePct = percent
	if percent == 0 {
		return
	}
	stop := make(chan struct{})
	v.throttleStop = stop
	sleep := throttlePeriod * time.Duration(percent) / 100
	go func() {
		t := time.NewTicker(throttlePeriod)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-v.stopped:
				return
			case <-t.C:
			}
			for _, c := range v.vcpus {
				c.throttle.Store(int64(sleep))
				c.kick()
			}
		}
	}()
}

// Throttle returns the current auto-converge throttle in percent.
func (v *VM) Throttle() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.throttlePct
}

// sleep parks the vCPU thread for d, or until a request arrives.
func (c *vcpu) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case r := <-c.reqs:
		// Put it back for the request loop; the channel has room since
		// we just took it out and only requesters add.
		c.reqs <- r
	}
}
