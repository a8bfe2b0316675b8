package irqchip

import (
	"sync/atomic"
	"testing"
)

func newTestPIT(start int64) (*PIT, *FakeClock, *atomic.Int64) {
	clk := NewFakeClock(start)
	var n atomic.Int64
	return NewPIT(clk, func() { n.Add(1) }), clk, &n
}

func pitOut(p *PIT, port uint16, v uint8) {
	if !p.Out(port, v) {
		panic("port not handled")
	}
}

func pitIn(p *PIT, port uint16) uint8 {
	v, ok := p.In(port)
	if !ok {
		panic("port not handled")
	}
	return v
}

func TestPITPeriodicIRQ0(t *testing.T) {
	for _, tc := range []struct {
		mode  uint8
		count uint16
		span  int64
		want  int64
	}{
		{2, 1193, 1e9, 1000},      // Linux's HZ=1000 LATCH: 999.85 us
		{3, 11931, 1e9, 100},      // 9.9993 ms
		{2, 0, 10e9, 182},         // count 0 is 65536: 18.2 Hz
		{3, 59659, 50_000_000, 1}, // 49.9998 ms
	} {
		p, clk, n := newTestPIT(5e9)
		pitOut(p, 0x43, 0x30|tc.mode<<1) // ch0, lo/hi
		pitOut(p, 0x40, uint8(tc.count))
		pitOut(p, 0x40, uint8(tc.count>>8))
		clk.Advance(tc.span)
		if got := n.Load(); got != tc.want {
			t.Errorf("mode %d count %d: %d IRQs in %d ns, want %d", tc.mode, tc.count, got, tc.span, tc.want)
		}
	}
	// one-shot (mode 0) fires once at terminal count
	p, clk, n := newTestPIT(0)
	pitOut(p, 0x43, 0x30)
	pitOut(p, 0x40, 0x9B)
	pitOut(p, 0x40, 0x2E) // 11931 ticks: 9999.2 us
	clk.Advance(9_999_000)
	if n.Load() != 0 {
		t.Fatal("mode 0 fired early")
	}
	clk.Advance(1e9)
	if n.Load() != 1 {
		t.Fatalf("mode 0 fired %d times", n.Load())
	}
}

func TestPITIRQ0ThroughChipset(t *testing.T) {
	vm := newTestVM(t, 1)
	vm.enable()
	picInit(vm, 0x20, 0x28, 0x01)
	vm.outb(0x21, 0xFE)
	vm.outb(0x43, 0x34)
	vm.outb(0x40, 0xA9)
	vm.outb(0x40, 0x04) // 1193
	for i := range 10 {
		vm.clk.Advance(1_000_000)
		mustVec(t, vm.Chipset, 0, 0x20)
		vm.outb(0x20, 0x20)
		_ = i
	}
}

func TestPITChannel2Calibration(t *testing.T) {
	// guest/src/apic.c calibrate_pit, step by step, polling every 1 us
	vm := newTestVM(t, 1)
	vm.enable()
	lapic := vm.LAPIC(0)
	lapic.Write(regTDCR, 3)
	lapic.Write(regLVTTimer, lvtMasked|0x40)
	rdtsc := func() uint64 { return uint64(vm.clk.Now()) * 2 }

	p61 := vm.inb(0x61)
	vm.outb(0x61, p61&^3|1)
	vm.outb(0x43, 0xB0)
	lapic.Write(regTMICT, 0xFFFFFFFF)
	vm.outb(0x42, 59659&0xFF)
	vm.outb(0x42, 59659>>8)
	t0 := rdtsc()
	a0 := lapic.Read(regTMCCT)
	if vm.inb(0x61)&0x20 != 0 {
		t.Fatal("OUT2 high at start")
	}
	var t1 uint64
	var a1 uint32
	for n := 0; ; n++ {
		vm.clk.Advance(1000)
		if vm.inb(0x61)&0x20 != 0 {
			t1 = rdtsc()
			a1 = lapic.Read(regTMCCT)
			break
		}
		if n > 100000 {
			t.Fatal("OUT2 never went high")
		}
	}
	if d := t1 - t0; d != 100_000_000 { // 50 ms at 2 GHz, to the 1 us poll
		t.Errorf("OUT2 rose after %d TSC ticks", d)
	}
	tscHz := (t1 - t0) * PITHz / 59659
	apicHz := uint64(a0-a1) * PITHz / 59659
	if tscHz < 1_999_900_000 || tscHz > 2_000_100_000 {
		t.Errorf("calibrated TSC %d Hz", tscHz)
	}
	if apicHz < 62_490_000 || apicHz > 62_510_000 {
		t.Errorf("calibrated APIC timer %d Hz, want 62.5 MHz", apicHz)
	}
	// gate low then high restarts a mode 2 count; speaker bit reads back
	vm.outb(0x43, 0xB4)
	vm.outb(0x42, 0x00)
	vm.outb(0x42, 0x10)
	vm.outb(0x61, 0x02)
	if v := vm.inb(0x61); v&3 != 2 {
		t.Errorf("port 0x61 = %#x", v)
	}
	vm.clk.Advance(1_000_000)
	vm.outb(0x61, 0x03)
	vm.outb(0x43, 0x80) // latch ch2
	lo, hi := vm.inb(0x42), vm.inb(0x42)
	if c := uint16(lo) | uint16(hi)<<8; c != 0x1000 {
		t.Errorf("count after gate restart = %#x", c)
	}
}

func TestPITLatchAndReadBack(t *testing.T) {
	p, clk, _ := newTestPIT(0)
	pitOut(p, 0x43, 0x34) // ch0 lo/hi mode 2
	pitOut(p, 0x40, 0x00)
	pitOut(p, 0x40, 0x10)  // 4096
	clk.Advance(1_000_000) // 1193.18 ticks
	pitOut(p, 0x43, 0x00)  // latch ch0
	clk.Advance(100_000)
	lo := pitIn(p, 0x40)
	clk.Advance(100_000)
	hi := pitIn(p, 0x40)
	if c := uint16(lo) | uint16(hi)<<8; c != 4096-1193 {
		t.Fatalf("latched count %d, want %d", c, 4096-1193)
	}
	// unlatched reads follow the clock, lo then hi
	lo, hi = pitIn(p, 0x40), pitIn(p, 0x40)
	if c := uint16(lo) | uint16(hi)<<8; c != 4096-1431 {
		t.Fatalf("live count %d, want %d", c, 4096-1431)
	}
	// read-back: status and count of ch0
	pitOut(p, 0x43, 0xC2)
	st := pitIn(p, 0x40)
	if st&0x3F != 0x34 {
		t.Fatalf("status %#x", st)
	}
	lo, hi = pitIn(p, 0x40), pitIn(p, 0x40)
	if c := uint16(lo) | uint16(hi)<<8; c != 4096-1431 {
		t.Fatalf("read-back count %d", c)
	}
	// lsb-only access
	pitOut(p, 0x43, 0x50) // ch1, lsb, mode 0
	pitOut(p, 0x41, 200)
	clk.Advance(10_000) // 11.9 ticks
	if v := pitIn(p, 0x41); v != 200-11 {
		t.Fatalf("lsb count %d", v)
	}
	// mode 0 OUT via read-back status once the count expires
	clk.Advance(1_000_000)
	pitOut(p, 0x43, 0xE4) // status only, ch1
	if st := pitIn(p, 0x41); st&0x80 == 0 {
		t.Fatalf("OUT1 low after terminal count: %#x", st)
	}
}
