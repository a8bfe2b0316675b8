package irqchip

import (
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
)

func TestLAPICSaveRestoreTimer(t *testing.T) {
	for _, periodic := range []bool{false, true} {
		src := newTestVM(t, 1)
		src.enable()
		a := src.LAPIC(0)
		a.Write(regTDCR, 3)
		lvt := uint32(0x40)
		if periodic {
			lvt |= lvtTimerPeriod
		}
		a.Write(regLVTTimer, lvt)
		a.Write(regTMICT, 62500) // 1 ms
		a.Inject(0x51, false)
		mustVec(t, src.Chipset, 0, 0x51) // in service at save
		a.Inject(0x33, false)            // pending at save
		src.clk.Advance(500_000)
		s := a.Save()

		// destination: another clock origin; the LAPIC keeps time remaining
		dstClk := NewFakeClock(77_000_000_000)
		var wakes int
		b := NewLAPIC(LAPICConfig{ID: 0, Sched: dstClk, Wake: func() { wakes++ }})
		if err := b.Restore(&s); err != nil {
			t.Fatal(err)
		}
		if got := b.Save(); got != s {
			t.Fatalf("periodic=%v: save after restore differs", periodic)
		}
		if got := b.Read(regTMCCT); got != 31250 {
			t.Fatalf("TMCCT after restore = %d", got)
		}
		dstClk.Advance(500_000 - 1)
		if b.bit(regIRR, 0x40) {
			t.Fatal("fired early after restore")
		}
		dstClk.Advance(1)
		if !irr(b, 0x40) {
			t.Fatal("did not fire at the remaining time")
		}
		if periodic {
			b.Write(regEOI, 0) // 0x51
			if v, ok := b.Ack(); !ok || v != 0x40 {
				t.Fatalf("ack %#x", v)
			}
			b.Write(regEOI, 0)
			dstClk.Advance(1_000_000)
			if !irr(b, 0x40) || b.Read(regTMCCT) != 62500 {
				t.Fatal("periodic timer lost its period after restore")
			}
		}
		if !periodic {
			b.Write(regEOI, 0) // 0x51
		}
		if v, ok := b.Ack(); !ok || v != 0x40 {
			t.Fatalf("ack after restore %#x %v", v, ok)
		}
	}
}

func TestPITSaveRestore(t *testing.T) {
	p, clk, _ := newTestPIT(3e9)
	pitOut(p, 0x43, 0x34)
	pitOut(p, 0x40, 0xA9)
	pitOut(p, 0x40, 0x04) // 1193: 999847 ns
	pitOut(p, 0x61, 0x03)
	pitOut(p, 0x43, 0xB0)
	pitOut(p, 0x42, 0x34) // half-written lo/hi count on ch2
	clk.Advance(10_500_000)
	pitOut(p, 0x43, 0x00) // a latched count travels too
	s := p.Save()

	// destination: the guest clock continues from the source's
	clk2 := NewFakeClock(clk.Now())
	var n int
	q := NewPIT(clk2, func() { n++ })
	if err := q.Restore(&s); err != nil {
		t.Fatal(err)
	}
	if q.Save() != s {
		t.Fatal("save after restore differs")
	}
	// the 11th period ends at 10998323 ns: 498323 ns after the save
	clk2.Advance(498_322)
	if n != 0 {
		t.Fatal("fired early after restore")
	}
	clk2.Advance(1)
	if n != 1 {
		t.Fatalf("%d IRQs at the 11th period", n)
	}
	lo, hi := pitIn(q, 0x40), pitIn(q, 0x40)
	if c := uint16(lo) | uint16(hi)<<8; c != 1193-(12528-10*1193) {
		t.Fatalf("latched count after restore %d", c)
	}
	pitOut(q, 0x42, 0x12) // completes the count started on the source
	q.mu.Lock()
	c := q.ch[2].count
	q.mu.Unlock()
	if c != 0x1234 {
		t.Fatalf("ch2 count %#x", c)
	}
}

func TestPICIOAPICSaveRestore(t *testing.T) {
	vm := newTestVM(t, 2)
	vm.enable()
	picInit(vm, 0x20, 0x28, 0x01)
	vm.outb(0x21, 0x00)
	vm.outb(0xA1, 0x00)
	vm.outb(0x4D1, 0x02)
	vm.PulseIRQ(1)
	vm.PulseIRQ(4)
	vm.SetIRQ(9, true)
	vm.LAPIC(0).Write(regLVTLINT0, 7<<8)
	mustVec(t, vm.Chipset, 0, 0x21) // 1 in service, 4 and 9 pending
	vm.outb(0x20, 0x0B)             // read ISR next
	vm.ioapicWrite(0x10+2*20, redirLevel|0x44)
	vm.SetIRQ(20, true)
	vm.ioapicWrite(0x10+2*3+1, 0xFF<<24)
	vm.ioapicWrite(0x03, 0) // ioregsel left at 3

	s, err := vm.Save()
	if err != nil {
		t.Fatal(err)
	}
	dst := newTestVM(t, 2)
	if err := dst.Restore(&s); err != nil {
		t.Fatal(err)
	}
	s2, err := dst.Save()
	if err != nil {
		t.Fatal(err)
	}
	if s.PICMaster != s2.PICMaster || s.PICSlave != s2.PICSlave || s.IOAPIC != s2.IOAPIC || s.PIT != s2.PIT {
		t.Fatal("chip state differs after round trip")
	}
	for i := range s.LAPICs {
		if s.LAPICs[i] != s2.LAPICs[i] {
			t.Fatalf("LAPIC %d differs after round trip", i)
		}
	}
	// the restored machine carries on
	vm.Chipset = dst.Chipset
	if v := vm.inb(0x20); v != 0x02 {
		t.Fatalf("master ISR after restore = %#x", v)
	}
	vm.outb(0x20, 0x20)
	mustVec(t, vm.Chipset, 0, 0x29) // the cascade ranks above IRQ 4
	vm.SetIRQ(9, false)
	vm.outb(0xA0, 0x20)
	vm.outb(0x20, 0x20)
	mustVec(t, vm.Chipset, 0, 0x24)
	vm.outb(0x20, 0x20)
	mustNone(t, vm.Chipset, 1)
	// IOAPIC remote IRR and the LAPIC's TMR came along: EOI re-delivers
	// the still-asserted level line
	mustVec(t, vm.Chipset, 0, 0x44)
	mustNone(t, vm.Chipset, 0)
	vm.LAPIC(0).Write(regEOI, 0)
	mustVec(t, vm.Chipset, 0, 0x44)
	// errors
	bad := s.IOAPIC
	bad.ChipID = 7
	if err := dst.SetIRQChip(&bad); err == nil {
		t.Error("bad chip id accepted")
	}
	s.LAPICs = s.LAPICs[:1]
	if err := dst.Restore(&s); err == nil {
		t.Error("LAPIC count mismatch accepted")
	}
}

func TestStateLayoutOffsets(t *testing.T) {
	// kvm_ioapic_state: redirtbl at byte 24; kvm_pit_state2: flags at 72
	vm := newTestVM(t, 1)
	vm.ioapicWrite(0x10+2*1, 0x1A34)
	s := vm.IOAPIC().Save()
	if s.Chip[0] != 0x00 || s.Chip[2] != 0xC0 || s.Chip[3] != 0xFE || s.Chip[8] != 0x12 || s.Chip[32] != 0x34 || s.Chip[33] != 0x0A {
		t.Fatalf("ioapic layout: % x", s.Chip[:40])
	}
	vm.outb(0x61, 0x02)
	vm.outb(0x43, 0xB6)
	vm.outb(0x42, 0x78)
	vm.outb(0x42, 0x56)
	ps := vm.PIT().Save()
	if ps[72] != pitFlagSpeaker || ps[48] != 0x78 || ps[49] != 0x56 || ps[48+13] != 3 || ps[48+12] != 3 {
		t.Fatalf("pit layout: % x", ps[:80])
	}
	var chip hv.IRQChip
	chip.ChipID = hv.IRQChipPICSlave
	if err := vm.GetIRQChip(&chip); err != nil || chip.Chip[15] != 0xDE {
		t.Fatalf("slave elcr_mask %#x %v", chip.Chip[15], err)
	}
}
