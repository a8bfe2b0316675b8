package irqchip

import (
	"testing"
)

var dividers = []struct {
	tdcr uint32
	div  int64
}{{0, 2}, {1, 4}, {2, 8}, {3, 16}, {8, 32}, {9, 64}, {10, 128}, {11, 1}}

func TestLAPICTimerOneShot(t *testing.T) {
	for _, d := range dividers {
		vm := newTestVM(t, 1)
		vm.enable()
		a := vm.LAPIC(0)
		a.Write(regTDCR, d.tdcr)
		a.Write(regLVTTimer, 0x40)
		a.Write(regTMICT, 1000)
		if got := a.Read(regTMCCT); got != 1000 {
			t.Errorf("div %d: TMCCT at start = %d", d.div, got)
		}
		vm.clk.Advance(500 * d.div)
		if got := a.Read(regTMCCT); got != 500 {
			t.Errorf("div %d: TMCCT half way = %d", d.div, got)
		}
		vm.clk.Advance(500*d.div - 1)
		if irr(a, 0x40) {
			t.Fatalf("div %d: fired early", d.div)
		}
		vm.clk.Advance(1)
		if !irr(a, 0x40) || vm.wakes[0].Load() != 1 {
			t.Fatalf("div %d: not fired at 1000*%d ns (wakes %d)", d.div, d.div, vm.wakes[0].Load())
		}
		if got := a.Read(regTMCCT); got != 0 {
			t.Errorf("div %d: TMCCT after expiry = %d", d.div, got)
		}
		vm.clk.Advance(1e9)
		if vm.wakes[0].Load() != 1 {
			t.Errorf("div %d: one-shot fired again", d.div)
		}
	}
}

func TestLAPICTimerPeriodic(t *testing.T) {
	for _, d := range dividers {
		vm := newTestVM(t, 1)
		vm.enable()
		a := vm.LAPIC(0)
		a.Write(regTDCR, d.tdcr)
		a.Write(regLVTTimer, lvtTimerPeriod|0x40)
		const period = 1_024_000 // ns: a whole count at every divider
		count := uint32(period / d.div)
		a.Write(regTMICT, count)
		prev := a.Read(regTMCCT)
		for i := range 4 { // TMCCT decreases within a period
			vm.clk.Advance(period / 5)
			got := a.Read(regTMCCT)
			if got >= prev {
				t.Fatalf("div %d: TMCCT %d after %d, not decreasing", d.div, got, prev)
			}
			if want := count - uint32(int64(i+1)*period/5/d.div); got != want {
				t.Fatalf("div %d: TMCCT = %d, want %d", d.div, got, want)
			}
			prev = got
		}
		vm.clk.Advance(period/5 - 1)
		if vm.wakes[0].Load() != 0 {
			t.Fatalf("div %d: fired before a period", d.div)
		}
		vm.clk.Advance(1 + 9*period) // 10 periods in all
		if got := vm.wakes[0].Load(); got != 10 {
			t.Fatalf("div %d: %d fires in 10 periods", d.div, got)
		}
		if got := a.Read(regTMCCT); got != count {
			t.Errorf("div %d: TMCCT at period start = %d, want %d", d.div, got, count)
		}
		// masking the LVT keeps the timer counting but delivers nothing
		mustVec(t, vm.Chipset, 0, 0x40)
		a.Write(regEOI, 0)
		a.Write(regLVTTimer, lvtTimerPeriod|lvtMasked|0x40)
		vm.clk.Advance(5_000_000)
		mustNone(t, vm.Chipset, 0)
		a.Write(regTMICT, 0) // stops
		if vm.clk.Pending() != 0 {
			t.Fatalf("div %d: timer still armed after TMICT=0", d.div)
		}
	}
}

func TestLAPICTimerMinPeriodAndDivideChange(t *testing.T) {
	vm := newTestVM(t, 1)
	vm.enable()
	a := vm.LAPIC(0)
	a.Write(regTDCR, 11) // divide by 1
	a.Write(regLVTTimer, lvtTimerPeriod|0x40)
	a.Write(regTMICT, 10) // 10 ns: clamped to 200 us
	vm.clk.Advance(1_000_000)
	if got := vm.wakes[0].Load(); got != 5 {
		t.Fatalf("clamped periodic fired %d times in 1 ms, want 5", got)
	}
	// one-shot: change the divider half way, the remaining count keeps going
	a.Write(regLVTTimer, 0x41)
	a.Write(regTDCR, 3)
	a.Write(regTMICT, 1000) // 16 us
	vm.clk.Advance(8000)
	a.Write(regTDCR, 0) // /2: 500 ticks left = 1 us
	if got := a.Read(regTMCCT); got != 500 {
		t.Fatalf("TMCCT after divide change = %d", got)
	}
	vm.clk.Advance(999)
	if irr(a, 0x41) {
		t.Fatal("fired early")
	}
	vm.clk.Advance(1)
	if !irr(a, 0x41) {
		t.Fatal("not fired after the rescaled count")
	}
}

func TestLAPICTimerTSCDeadline(t *testing.T) {
	vm := newTestVM(t, 1)
	vm.enable()
	a := vm.LAPIC(0)
	tsc := func() uint64 { return uint64(vm.clk.Now()) * 2 }
	// writes outside TSC-deadline mode are ignored
	if err := a.WriteMSR(MSRTSCDeadline, tsc()+100); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.ReadMSR(MSRTSCDeadline); v != 0 || vm.clk.Pending() != 0 {
		t.Fatal("deadline armed in one-shot mode")
	}
	a.Write(regLVTTimer, lvtTimerTSC|0x42)
	a.Write(regTMICT, 1000) // ignored in TSC-deadline mode
	if a.Read(regTMICT) != 0 || vm.clk.Pending() != 0 {
		t.Fatal("TMICT counted in TSC-deadline mode")
	}
	dl := tsc() + 2_000_000 // 1 ms at 2 GHz
	if err := a.WriteMSR(MSRTSCDeadline, dl); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.ReadMSR(MSRTSCDeadline); v != dl {
		t.Fatalf("deadline reads %d, want %d", v, dl)
	}
	vm.clk.Advance(999_999)
	if irr(a, 0x42) {
		t.Fatal("fired early")
	}
	vm.clk.Advance(1)
	if !irr(a, 0x42) {
		t.Fatal("not fired at the deadline")
	}
	if v, _ := a.ReadMSR(MSRTSCDeadline); v != 0 {
		t.Fatalf("deadline after expiry = %d", v)
	}
	mustVec(t, vm.Chipset, 0, 0x42)
	a.Write(regEOI, 0)
	// a deadline in the past fires at once; zero disarms
	_ = a.WriteMSR(MSRTSCDeadline, 1)
	if !irr(a, 0x42) {
		t.Fatal("past deadline did not fire")
	}
	mustVec(t, vm.Chipset, 0, 0x42)
	a.Write(regEOI, 0)
	_ = a.WriteMSR(MSRTSCDeadline, tsc()+1000)
	_ = a.WriteMSR(MSRTSCDeadline, 0)
	vm.clk.Advance(1e6)
	mustNone(t, vm.Chipset, 0)
}

func TestLAPICPriority(t *testing.T) {
	vm := newTestVM(t, 1)
	vm.enable()
	a := vm.LAPIC(0)
	for _, v := range []uint8{0x50, 0x31, 0x60} {
		a.Inject(v, false)
	}
	if v, ok := a.PendingVector(); !ok || v != 0x60 {
		t.Fatalf("pending %#x %v", v, ok)
	}
	mustVec(t, vm.Chipset, 0, 0x60)
	if got := a.Read(regPPR); got != 0x60 {
		t.Fatalf("PPR = %#x", got)
	}
	mustNone(t, vm.Chipset, 0) // 0x50 is below the in-service class
	a.Inject(0x65, false)      // same class as 0x60: blocked too
	mustNone(t, vm.Chipset, 0)
	a.Inject(0x70, false) // higher class nests
	mustVec(t, vm.Chipset, 0, 0x70)
	if got := a.Read(regISR + 0x30); got != 1<<(0x70-0x60)|1 { // ISR[3]: 0x60..0x7f
		t.Fatalf("ISR[3] = %#x", got)
	}
	a.Write(regEOI, 0) // clears 0x70, the highest
	mustNone(t, vm.Chipset, 0)
	a.Write(regEOI, 0) // 0x60
	mustVec(t, vm.Chipset, 0, 0x65)
	a.Write(regEOI, 0) // 0x65
	if got := a.Read(regISR + 0x30); got != 0 {
		t.Fatalf("ISR[3] after EOIs = %#x", got)
	}
	// TPR masks by class
	a.Write(regTPR, 0x50)
	if got := a.Read(regPPR); got != 0x50 {
		t.Fatalf("PPR = %#x with TPR 0x50", got)
	}
	mustNone(t, vm.Chipset, 0)
	w := vm.wakes[0].Load()
	a.Write(regTPR, 0x4F)
	if vm.wakes[0].Load() == w {
		t.Error("lowering TPR below a pending class does not wake")
	}
	mustVec(t, vm.Chipset, 0, 0x50)
	if got := a.Read(regPPR); got != 0x50 {
		t.Fatalf("PPR = %#x with ISR 0x50, TPR 0x4f", got)
	}
	a.Write(regEOI, 0)
	a.Write(regTPR, 0)
	mustVec(t, vm.Chipset, 0, 0x31)
	a.Write(regEOI, 0)
	mustNone(t, vm.Chipset, 0)
}

func TestLAPICSpuriousAndDisabled(t *testing.T) {
	vm := newTestVM(t, 1)
	a := vm.LAPIC(0)
	a.Write(regLVTLINT0, lvtMasked) // no PIC
	// software-disabled: fixed interrupts are not accepted, LVTs stay masked
	if a.Inject(0x40, false) {
		t.Fatal("disabled APIC accepted a fixed interrupt")
	}
	a.Write(regLVTTimer, 0x40)
	if a.Read(regLVTTimer)&lvtMasked == 0 {
		t.Fatal("LVT unmasked while software-disabled")
	}
	a.Write(regSVR, 0x1EF)
	a.Inject(0x40, false)
	if v, ok := a.PendingVector(); !ok || v != 0x40 {
		t.Fatal("not pending")
	}
	// INTR raised, then the APIC is disabled before INTA: spurious vector
	a.Write(regSVR, 0x0EF)
	mustVec(t, vm.Chipset, 0, 0xEF)
	if a.Read(regISR+0x20) != 0 {
		t.Fatal("spurious vector set an ISR bit")
	}
	mustNone(t, vm.Chipset, 0)
	// the same with TPR raised between INTR and INTA
	a.Write(regSVR, 0x1EF)
	a.PendingVector()
	a.Write(regTPR, 0xF0)
	mustVec(t, vm.Chipset, 0, 0xEF)
	a.Write(regTPR, 0)
	mustVec(t, vm.Chipset, 0, 0x40)
}

func TestLAPICRegisters(t *testing.T) {
	vm := newTestVM(t, 2)
	a := vm.LAPIC(1)
	if got := a.Read(regID); got != 1<<24 {
		t.Errorf("ID = %#x", got)
	}
	if got := a.Read(regVersion); got != 0x50014 {
		t.Errorf("version = %#x", got)
	}
	if got := a.Read(regDFR); got != 0xFFFFFFFF {
		t.Errorf("DFR = %#x", got)
	}
	a.Write(regLDR, 0x12345678)
	if got := a.Read(regLDR); got != 0x12000000 {
		t.Errorf("LDR = %#x", got)
	}
	// ESR: errors show after a write
	a.Write(regSVR, 0x1FF)
	a.Write(regICRLow, 0x4000|5) // fixed vector 5: send illegal vector
	if got := a.Read(regESR); got != 0 {
		t.Errorf("ESR before write = %#x", got)
	}
	a.Write(regESR, 0)
	if got := a.Read(regESR); got != esrSendIllegalVector {
		t.Errorf("ESR = %#x", got)
	}
	a.Write(regESR, 0)
	if got := a.Read(regESR); got != 0 {
		t.Errorf("ESR after second write = %#x", got)
	}
	// APIC base MSR
	if v, _ := vm.LAPIC(0).ReadMSR(MSRAPICBase); v != LAPICBase|APICBaseEnable|APICBaseBSP {
		t.Errorf("BSP APIC base = %#x", v)
	}
	if v, _ := a.ReadMSR(MSRAPICBase); v != LAPICBase|APICBaseEnable {
		t.Errorf("AP APIC base = %#x", v)
	}
	if err := a.WriteMSR(MSRAPICBase, LAPICBase|APICBaseEnable|APICBaseEXTD); err != ErrX2APIC {
		t.Errorf("x2APIC enable: %v", err)
	}
	if err := a.WriteMSR(MSRAPICBase, LAPICBase|APICBaseEnable|1); err == nil {
		t.Error("reserved bit accepted")
	}
	// global disable: the page is gone, the state reset, the PIC reaches the CPU
	if err := a.WriteMSR(MSRAPICBase, LAPICBase); err != nil {
		t.Fatal(err)
	}
	if _, ok := vm.MMIORead(1, LAPICBase+regID, 4); ok {
		t.Error("disabled APIC page decoded")
	}
	if !a.AcceptsPIC() {
		t.Error("globally disabled APIC does not pass the PIC through")
	}
	_ = a.WriteMSR(MSRAPICBase, LAPICBase|APICBaseEnable)
	if v, ok := vm.MMIORead(1, LAPICBase+regSVR, 4); !ok || v != 0xFF {
		t.Errorf("SVR after re-enable = %#x %v", v, ok)
	}
	// sub-dword reads
	if v, _ := vm.MMIORead(1, LAPICBase+regVersion+2, 1); v != 5 {
		t.Errorf("byte read of max LVT = %d", v)
	}
}

func TestLAPICResetDeliverableRelocate(t *testing.T) {
	vm := newTestVM(t, 2)
	vm.enable()
	a := vm.LAPIC(1)
	a.Write(regID, 7<<24)
	a.Write(regLVTTimer, lvtTimerPeriod|0x40)
	a.Write(regTMICT, 1_000_000)
	a.Inject(0x60, false)
	if !a.Deliverable() { // no side effect: INTR is not signalled
		t.Fatal("not deliverable")
	}
	a.Write(regTPR, 0x70)
	if v, ok := a.Ack(); ok {
		t.Fatalf("Deliverable signalled INTR: Ack gave %#x", v)
	}
	a.Reset()
	if a.Read(regID) != 1<<24 || a.Read(regSVR) != 0xFF || a.Read(regLVTTimer) != lvtMasked ||
		a.Read(regTMICT) != 0 || a.Read(regIRR+0x30) != 0 || vm.clk.Pending() != 0 {
		t.Fatal("INIT reset incomplete")
	}
	if vm.LAPIC(0).Read(regLVTLINT0) != 0x700 || a.Read(regLVTLINT0) != lvtMasked {
		t.Fatal("LINT0 reset values")
	}
	// relocating the page moves the MMIO window
	if err := a.WriteMSR(MSRAPICBase, 0xFED00000|APICBaseEnable); err != nil {
		t.Fatal(err)
	}
	if _, ok := vm.MMIORead(1, LAPICBase+regID, 4); ok {
		t.Error("old page still decoded")
	}
	if v, ok := vm.MMIORead(1, 0xFED00000+regID, 4); !ok || v != 1<<24 {
		t.Errorf("relocated ID read %#x %v", v, ok)
	}
	// one-shot -> periodic while counting takes effect at expiry
	b := vm.LAPIC(0)
	b.Write(regTDCR, 11)
	b.Write(regLVTTimer, 0x41)
	b.Write(regTMICT, 300_000)
	b.Write(regLVTTimer, lvtTimerPeriod|0x41)
	vm.clk.Advance(900_000)
	if got := vm.wakes[0].Load(); got != 3 {
		t.Errorf("one-shot turned periodic fired %d times, want 3", got)
	}
}
