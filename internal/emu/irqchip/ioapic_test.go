package irqchip

import "testing"

func TestIOAPICEdgeLevelMask(t *testing.T) {
	vm := newTestVM(t, 2)
	vm.enable()
	vm.LAPIC(0).Write(regLVTLINT0, lvtMasked)
	if got := vm.ioapicRead(1); got != 0x170011 {
		t.Fatalf("version = %#x", got)
	}
	// pin 5 edge to vCPU 1, physical
	vm.ioapicWrite(0x10+2*5+1, 1<<24)
	vm.ioapicWrite(0x10+2*5, 0x35)
	vm.PulseIRQ(5)
	vm.PulseIRQ(5) // coalesced in the IRR
	mustNone(t, vm.Chipset, 0)
	mustVec(t, vm.Chipset, 1, 0x35)
	mustNone(t, vm.Chipset, 1)
	vm.LAPIC(1).Write(regEOI, 0)
	// GSI 20: level, logical flat to vCPU 0
	vm.LAPIC(0).Write(regLDR, 1<<24)
	vm.ioapicWrite(0x10+2*20+1, 1<<24)
	vm.ioapicWrite(0x10+2*20, redirLevel|redirLogical|0x44)
	vm.SetIRQ(20, true)
	mustVec(t, vm.Chipset, 0, 0x44)
	if vm.ioapicRead(0x10+2*20)&redirRemote == 0 {
		t.Fatal("remote IRR clear after level delivery")
	}
	vm.SetIRQ(20, true) // still asserted, EOI outstanding: nothing new
	mustNone(t, vm.Chipset, 0)
	vm.LAPIC(0).Write(regEOI, 0) // TMR set: EOI broadcast re-delivers
	mustVec(t, vm.Chipset, 0, 0x44)
	vm.SetIRQ(20, false)
	vm.LAPIC(0).Write(regEOI, 0)
	if vm.ioapicRead(0x10+2*20)&redirRemote != 0 {
		t.Fatal("remote IRR set after EOI")
	}
	mustNone(t, vm.Chipset, 0)
	// the EOI register (+0x40) also clears remote IRR
	vm.SetIRQ(20, true)
	mustVec(t, vm.Chipset, 0, 0x44)
	vm.SetIRQ(20, false)
	vm.MMIOWrite(0, IOAPICBase+0x40, 4, 0x44)
	if vm.ioapicRead(0x10+2*20)&redirRemote != 0 {
		t.Fatal("remote IRR set after IOAPIC EOI")
	}
	vm.LAPIC(0).Write(regEOI, 0)
	// masked: edges are lost, an asserted level line fires on unmask
	vm.ioapicWrite(0x10+2*5, redirMasked|0x35)
	vm.PulseIRQ(5)
	mustNone(t, vm.Chipset, 1)
	vm.ioapicWrite(0x10+2*20, redirMasked|redirLevel|redirLogical|0x44)
	vm.SetIRQ(20, true)
	mustNone(t, vm.Chipset, 0)
	vm.ioapicWrite(0x10+2*20, redirLevel|redirLogical|0x44)
	mustVec(t, vm.Chipset, 0, 0x44)
	// NMI delivery mode
	vm.ioapicWrite(0x10+2*7+1, 1<<24)
	vm.ioapicWrite(0x10+2*7, 4<<8)
	vm.PulseIRQ(7)
	if !vm.LAPIC(1).TakeNMI() {
		t.Fatal("IOAPIC NMI lost")
	}
}
