package irqchip

import "testing"

// picInit programs both PICs as Linux's init_8259A and SeaBIOS's pic_setup
// do: ICW1 0x11, ICW2 base, ICW3 cascade on IRQ 2, ICW4 icw4.
func picInit(vm *testVM, master, slave, icw4 uint8) {
	vm.outb(0x21, 0xFF)
	vm.outb(0xA1, 0xFF)
	vm.outb(0x20, 0x11)
	vm.outb(0x21, master)
	vm.outb(0x21, 0x04)
	vm.outb(0x21, icw4)
	vm.outb(0xA0, 0x11)
	vm.outb(0xA1, slave)
	vm.outb(0xA1, 0x02)
	vm.outb(0xA1, icw4)
	vm.outb(0x21, 0xFB) // everything masked but the cascade
	vm.outb(0xA1, 0xFF)
}

func TestPICLinuxInitPriorityCascade(t *testing.T) {
	vm := newTestVM(t, 1)
	picInit(vm, 0x30, 0x38, 0x01)
	if vm.inb(0x21) != 0xFB || vm.inb(0xA1) != 0xFF {
		t.Fatal("IMR after init")
	}
	vm.PulseIRQ(4)
	mustNone(t, vm.Chipset, 0) // masked
	vm.outb(0x21, 0xE0)        // unmask 0-4
	vm.outb(0xA1, 0x00)
	if !vm.PIC().INTR() {
		t.Fatal("IRQ 4 latched while masked is lost")
	}
	vm.PulseIRQ(3)
	vm.PulseIRQ(10) // slave IRQ 2, through master IRQ 2
	vm.PulseIRQ(1)
	mustVec(t, vm.Chipset, 0, 0x31)
	mustNone(t, vm.Chipset, 0) // 1 in service blocks the rest
	vm.outb(0x20, 0x20)
	mustVec(t, vm.Chipset, 0, 0x3A) // IRQ 10 ranks at IRQ 2
	// ISR readback: master IRQ 2 and slave IRQ 2 in service
	vm.outb(0x20, 0x0B)
	vm.outb(0xA0, 0x0B)
	if vm.inb(0x20) != 0x04 || vm.inb(0xA0) != 0x04 {
		t.Fatal("ISR after cascade ack")
	}
	vm.outb(0xA0, 0x20)
	vm.outb(0x20, 0x20)
	mustVec(t, vm.Chipset, 0, 0x33)
	vm.outb(0x20, 0x63) // specific EOI IRQ 3
	mustVec(t, vm.Chipset, 0, 0x34)
	vm.outb(0x20, 0x20)
	mustNone(t, vm.Chipset, 0)
	// IRR readback
	vm.outb(0x20, 0x0A)
	vm.PulseIRQ(0)
	if vm.inb(0x20) != 0x01 {
		t.Fatal("IRR readback")
	}
	// nothing pending at INTA: spurious IRQ 7
	vm.outb(0x21, 0xFF)
	if v := vm.PIC().Ack(); v != 0x37 {
		t.Fatalf("spurious vector %#x", v)
	}
}

func TestPICSeaBIOSInitAutoEOIRotatePoll(t *testing.T) {
	vm := newTestVM(t, 1)
	picInit(vm, 0x08, 0x70, 0x01) // SeaBIOS's bases
	vm.outb(0x21, 0x00)
	vm.outb(0xA1, 0x00)
	vm.PulseIRQ(8)
	mustVec(t, vm.Chipset, 0, 0x70)
	vm.outb(0xA0, 0x20)
	vm.outb(0x20, 0x20)

	// auto-EOI: nothing stays in service
	picInit(vm, 0x20, 0x28, 0x03)
	vm.outb(0x21, 0x00)
	vm.PulseIRQ(5)
	vm.PulseIRQ(6)
	mustVec(t, vm.Chipset, 0, 0x25)
	mustVec(t, vm.Chipset, 0, 0x26)
	vm.outb(0x20, 0x0B)
	if vm.inb(0x20) != 0 {
		t.Fatal("ISR set in auto-EOI mode")
	}

	// rotate on non-specific EOI: the serviced IRQ becomes the lowest
	picInit(vm, 0x20, 0x28, 0x01)
	vm.outb(0x21, 0x00)
	vm.PulseIRQ(1)
	mustVec(t, vm.Chipset, 0, 0x21)
	vm.outb(0x20, 0xA0) // rotate on non-specific EOI
	vm.PulseIRQ(0)
	vm.PulseIRQ(3)
	mustVec(t, vm.Chipset, 0, 0x23) // 2 now highest, 1 lowest: 3 before 0
	vm.outb(0x20, 0x20)
	mustVec(t, vm.Chipset, 0, 0x20)
	vm.outb(0x20, 0x20)

	// poll mode: OCW3 poll, the read acknowledges
	vm.outb(0x20, 0xC7) // set priority: IRQ 0 highest again
	vm.PulseIRQ(4)
	vm.outb(0x20, 0x0C)
	if v := vm.inb(0x20); v != 0x84 {
		t.Fatalf("poll = %#x", v)
	}
	vm.outb(0x20, 0x0C)
	if v := vm.inb(0x20); v != 0 {
		t.Fatalf("second poll = %#x", v)
	}
	vm.outb(0x20, 0x20)
}

func TestPICELCRLevel(t *testing.T) {
	vm := newTestVM(t, 1)
	picInit(vm, 0x20, 0x28, 0x01)
	vm.outb(0x21, 0x00)
	vm.outb(0xA1, 0x00)
	vm.outb(0x4D1, 0x02|0x01) // IRQ 9 level (IRQ 8 is not maskable into level)
	if vm.inb(0x4D1) != 0x02 {
		t.Fatalf("ELCR2 = %#x", vm.inb(0x4D1))
	}
	vm.SetIRQ(9, true)
	mustVec(t, vm.Chipset, 0, 0x29)
	vm.outb(0xA0, 0x20)
	vm.outb(0x20, 0x20)
	mustVec(t, vm.Chipset, 0, 0x29) // still asserted: again
	vm.SetIRQ(9, false)             // the handler quiets the device, then EOIs
	vm.outb(0xA0, 0x20)
	vm.outb(0x20, 0x20)
	mustNone(t, vm.Chipset, 0)
	// an edge line asserted and held fires once
	vm.SetIRQ(3, true)
	mustVec(t, vm.Chipset, 0, 0x23)
	vm.outb(0x20, 0x20)
	mustNone(t, vm.Chipset, 0)
}

func TestPICSpecialMaskMode(t *testing.T) {
	vm := newTestVM(t, 1)
	picInit(vm, 0x20, 0x28, 0x01)
	vm.outb(0x21, 0x00)
	vm.PulseIRQ(3)
	mustVec(t, vm.Chipset, 0, 0x23)
	// the IRQ 3 handler masks itself and enters special mask mode so that
	// lower priorities get through while 3 is in service
	vm.outb(0x21, 0x08)
	vm.outb(0x20, 0x68)
	vm.PulseIRQ(5)
	mustVec(t, vm.Chipset, 0, 0x25)
	vm.outb(0x20, 0x65) // specific EOI 5
	vm.outb(0x20, 0x48) // leave special mask mode
	vm.PulseIRQ(6)
	mustNone(t, vm.Chipset, 0) // 3 still in service blocks 6
	vm.outb(0x20, 0x63)
	mustVec(t, vm.Chipset, 0, 0x26)
}
