package irqchip

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentDevicesAndVCPUs raises lines from device goroutines, fires
// timers from a clock goroutine and sends IPIs from vCPU 1 while vCPU 0
// acknowledges and EOIs; run it with -race.
func TestConcurrentDevicesAndVCPUs(t *testing.T) {
	vm := newTestVM(t, 2)
	vm.enable()
	picInit(vm, 0x20, 0x28, 0x01)
	vm.outb(0x21, 0xFE) // PIT on the PIC, ExtINT to vCPU 0
	vm.outb(0x43, 0x34)
	vm.outb(0x40, 0xA9)
	vm.outb(0x40, 0x04)
	vm.ioapicWrite(0x10+2*5, 0x35)             // edge, vCPU 0
	vm.ioapicWrite(0x10+2*20, redirLevel|0x44) // level, vCPU 0
	a0 := vm.LAPIC(0)
	a0.Write(regLVTTimer, lvtTimerPeriod|0x40)
	a0.Write(regTMICT, 200_000)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var got [256]atomic.Int64
	goLoop := func(f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				f(i)
			}
		}()
	}
	goLoop(func(int) { vm.PulseIRQ(5) })
	goLoop(func(i int) { vm.SetIRQ(20, i%2 == 0) })
	goLoop(func(int) { vm.clk.Advance(50_000) })
	goLoop(func(int) { // vCPU 1: IPIs to vCPU 0, and its own interrupts
		sendIPI(vm.LAPIC(1), 0, 0x4050)
		if _, ok := vm.PendingInterrupt(1); ok {
			vm.LAPIC(1).Write(regEOI, 0)
		}
	})
	goLoop(func(i int) { // migration thread snapshotting
		if i%64 == 0 {
			if _, err := vm.Save(); err != nil {
				panic(err)
			}
		}
		time.Sleep(10 * time.Microsecond)
	})
	vcpu0 := func() { // ack and EOI, as the interpreter and guest would
		v, ok := vm.PendingInterrupt(0)
		if !ok {
			return
		}
		got[v].Add(1)
		if v >= 0x20 && v < 0x30 {
			vm.outb(0x20, 0x20)
		} else {
			a0.Write(regTPR, 0x10)
			_ = a0.Read(regTMCCT)
			a0.Write(regTPR, 0)
			a0.Write(regEOI, 0)
		}
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		vcpu0()
	}
	stop.Store(true)
	wg.Wait()
	for _, v := range []uint8{0x20, 0x35, 0x40, 0x44, 0x50} {
		if got[v].Load() == 0 {
			t.Errorf("vector %#x never delivered", v)
		}
	}
	// nothing is stuck: drain, then a fresh level assertion gets through
	vm.SetIRQ(20, false)
	a0.Write(regTMICT, 0)
	vm.outb(0x21, 0xFF)
	for range 1000 {
		vcpu0()
	}
	mustNone(t, vm.Chipset, 0)
	vm.SetIRQ(20, true)
	mustVec(t, vm.Chipset, 0, 0x44)
}

func TestRealClockPauseResume(t *testing.T) {
	c := NewRealClock(5_000_000_000)
	if now := c.Now(); now < 5_000_000_000 || now > 6_000_000_000 {
		t.Fatalf("Now = %d", now)
	}
	fired := make(chan int64, 2)
	// start is read before arming: read after, a preemption between the
	// two would make a timer on time look early.
	start := c.Now()
	c.AfterFunc(int64(2*time.Millisecond), func() { fired <- c.Now() })
	held := c.AfterFunc(int64(30*time.Millisecond), func() { fired <- c.Now() })
	select {
	case at := <-fired:
		if at-start < int64(2*time.Millisecond) {
			t.Fatalf("fired %d ns after arming, before 2 ms", at-start)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("2 ms timer did not fire")
	}
	c.Pause()
	frozen := c.Now()
	time.Sleep(40 * time.Millisecond)
	if c.Now() != frozen {
		t.Fatal("guest clock moved while paused")
	}
	select {
	case <-fired:
		t.Fatal("timer fired while paused")
	default:
	}
	c.Resume()
	select {
	case at := <-fired:
		if at-start < int64(30*time.Millisecond) {
			t.Fatalf("held timer fired at guest +%d ns", at-start)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held timer lost across pause")
	}
	if held() {
		t.Error("stop after firing reported success")
	}
	stopMe := c.AfterFunc(int64(time.Hour), func() { t.Error("stopped timer fired") })
	if !stopMe() {
		t.Error("stop failed")
	}
	c.Set(100)
	if now := c.Now(); now < 100 || now > int64(time.Second) {
		t.Errorf("Now after Set = %d", now)
	}
}
