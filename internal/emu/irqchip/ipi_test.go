package irqchip

import (
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
)

func sendIPI(a *LAPIC, dest uint8, low uint32) {
	a.Write(regICRHigh, uint32(dest)<<24)
	a.Write(regICRLow, low)
}

// received returns which vCPUs have vector v in their IRR, and clears it.
func received(vm *testVM, v uint8) []int {
	var got []int
	for i, a := range vm.lapics {
		if irr(a, v) {
			got = append(got, i)
			if x, ok := vm.PendingInterrupt(i); !ok || x != v {
				panic("IRR set but not deliverable")
			}
			a.Write(regEOI, 0)
		}
	}
	return got
}

func eq(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestIPIFixedDestinations(t *testing.T) {
	vm := newTestVM(t, 4)
	vm.enable()
	const logical = 1 << 11
	for i, a := range vm.lapics {
		a.Write(regLDR, 1<<(24+i)) // flat: one bit each
	}
	src := vm.LAPIC(1)
	tests := []struct {
		name string
		dest uint8
		low  uint32
		want []int
	}{
		{"physical", 2, 0x4000 | 0x40, []int{2}},
		{"physical broadcast", 0xFF, 0x40, []int{0, 1, 2, 3}},
		{"physical none", 9, 0x40, nil},
		{"logical flat", 0x5, logical | 0x40, []int{0, 2}},
		{"logical flat broadcast", 0xFF, logical | 0x40, []int{0, 1, 2, 3}},
		{"self", 0, 1<<18 | 0x40, []int{1}},
		{"all", 0, 2<<18 | 0x40, []int{0, 1, 2, 3}},
		{"all but self", 0, 3<<18 | 0x40, []int{0, 2, 3}},
		{"lowest priority", 0xC, logical | 1<<8 | 0x40, []int{2}},
		{"SMI ignored", 0xFF, 2<<8 | 0x40, nil},
	}
	for _, tc := range tests {
		sendIPI(src, tc.dest, tc.low)
		if got := received(vm, 0x40); !eq(got, tc.want) {
			t.Errorf("%s: delivered to %v, want %v", tc.name, got, tc.want)
		}
		if src.Read(regICRLow)&icrBusy != 0 {
			t.Errorf("%s: delivery status busy", tc.name)
		}
	}
	// cluster model: cluster 1 holds vCPUs 2 and 3
	for i, a := range vm.lapics {
		a.Write(regDFR, 0x0FFFFFFF)
		a.Write(regLDR, uint32(i/2)<<28|1<<(24+i%2))
	}
	sendIPI(src, 0x12, logical|0x40)
	if got := received(vm, 0x40); !eq(got, []int{3}) {
		t.Errorf("cluster 1 member 2: %v", got)
	}
	sendIPI(src, 0x03, logical|0x40)
	if got := received(vm, 0x40); !eq(got, []int{0, 1}) {
		t.Errorf("cluster 0 members 1,2: %v", got)
	}
	// an AP whose APIC is software-disabled does not take fixed IPIs
	vm.LAPIC(3).Write(regSVR, 0xFF)
	sendIPI(src, 0, 2<<18|0x40)
	if got := received(vm, 0x40); !eq(got, []int{0, 1, 2}) {
		t.Errorf("all with vCPU 3 disabled: %v", got)
	}
}

func TestIPINMIInitSIPI(t *testing.T) {
	vm := newTestVM(t, 3)
	bsp := vm.LAPIC(0)
	bsp.Write(regSVR, 0x1FF)
	// the Linux/SeaBIOS AP start sequence with shorthand all-but-self
	sendIPI(bsp, 0, 3<<18|0x4500)      // INIT assert
	sendIPI(bsp, 0, 3<<18|0x8500)      // INIT level de-assert: ignored
	sendIPI(bsp, 0, 3<<18|0x4600|0x9A) // SIPI vector 0x9A
	for i := 1; i < 3; i++ {
		a := vm.LAPIC(i)
		if !a.TakeINIT() || a.TakeINIT() {
			t.Errorf("vcpu %d: INIT not latched exactly once", i)
		}
		if v, ok := a.TakeSIPI(); !ok || v != 0x9A {
			t.Errorf("vcpu %d: SIPI %#x %v", i, v, ok)
		}
		if vm.wakes[i].Load() != 2 {
			t.Errorf("vcpu %d: %d wakes, want 2", i, vm.wakes[i].Load())
		}
	}
	if bsp.TakeINIT() {
		t.Error("all-but-self reached the sender")
	}
	// NMI, physical and to self
	sendIPI(bsp, 2, 0x4400)
	if !vm.LAPIC(2).TakeNMI() || vm.LAPIC(1).TakeNMI() {
		t.Error("physical NMI misrouted")
	}
	sendIPI(bsp, 0, 1<<18|0x4400)
	if !bsp.TakeNMI() {
		t.Error("self NMI lost")
	}
	// LINT1 is NMI when so programmed
	bsp.Write(regLVTLINT1, 4<<8)
	bsp.LocalNMI()
	if !bsp.TakeNMI() {
		t.Error("LINT1 NMI lost")
	}
}

func TestExtINTThroughLINT0(t *testing.T) {
	vm := newTestVM(t, 2)
	vm.enable()
	// the BSP's LINT0 is ExtINT at reset (virtual wire), the AP's masked
	vm.LAPIC(0).Write(regLVTLINT0, 7<<8)
	picInit(vm, 0x20, 0x28, 0x01)
	vm.outb(0x21, 0xFD) // unmask IRQ 1 only
	w0, w1 := vm.wakes[0].Load(), vm.wakes[1].Load()
	vm.PulseIRQ(1)
	if vm.wakes[0].Load() == w0 || vm.wakes[1].Load() != w1 {
		t.Fatal("PIC INTR woke the wrong vCPU")
	}
	if v, ok := vm.LAPIC(0).PendingVector(); !ok || v != 0x21 {
		t.Fatalf("pending %#x %v", v, ok)
	}
	mustNone(t, vm.Chipset, 1)
	mustVec(t, vm.Chipset, 0, 0x21)
	mustNone(t, vm.Chipset, 0)
	vm.outb(0x20, 0x20) // EOI
	// masking LINT0 cuts the PIC off
	vm.LAPIC(0).Write(regLVTLINT0, lvtMasked|7<<8)
	vm.PulseIRQ(1)
	mustNone(t, vm.Chipset, 0)
	vm.LAPIC(0).Write(regLVTLINT0, 7<<8)
	mustVec(t, vm.Chipset, 0, 0x21)
}

func TestChipsetConfigAndEvents(t *testing.T) {
	for _, cfg := range []ChipsetConfig{{VCPUs: 0, Sched: NewFakeClock(0)}, {VCPUs: 256, Sched: NewFakeClock(0)}, {VCPUs: 1}} {
		if _, err := NewChipset(cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
	vm := newTestVM(t, 2)
	var chip hv.IRQChip
	chip.ChipID = 9
	if err := vm.GetIRQChip(&chip); err == nil {
		t.Error("GetIRQChip accepted chip 9")
	}
	if _, ok := vm.PendingInterrupt(5); ok {
		t.Error("interrupt for a vCPU that does not exist")
	}
	if vm.LAPIC(1).HasEvents() {
		t.Fatal("events at reset")
	}
	sendIPI(vm.LAPIC(0), 1, 0x4600|0x10) // SIPI, physical
	if !vm.LAPIC(1).HasEvents() {
		t.Fatal("SIPI not latched")
	}
	if v, ok := vm.LAPIC(1).TakeSIPI(); !ok || v != 0x10 || vm.LAPIC(1).HasEvents() {
		t.Fatalf("SIPI %#x %v", v, ok)
	}
	// unhandled ports and addresses fall through to the backend's bus
	if _, ok := vm.PortIn(0x3F8, 1); ok {
		t.Error("COM1 claimed")
	}
	if vm.MMIOWrite(0, 0xFEB00000, 4, 0) {
		t.Error("0xFEB00000 claimed")
	}
}
