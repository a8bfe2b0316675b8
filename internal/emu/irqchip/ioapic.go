package irqchip

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// IOAPIC geometry and registers.
const (
	IOAPICPins    = 24
	ioapicVersion = 0x11 | (IOAPICPins-1)<<16

	ioregsel  = 0x00
	iowin     = 0x10
	ioapicEOI = 0x40

	redirVector   = 0xFF
	redirLogical  = 1 << 11
	redirStatus   = 1 << 12
	redirRemote   = 1 << 14
	redirLevel    = 1 << 15
	redirMasked   = 1 << 16
	redirWritable = 0xFF000000_0001AFFF // vector, mode, dest mode, polarity, trigger, mask, dest
)

// IOAPIC is an 82093AA-style I/O APIC with 24 pins, version 0x11 as KVM's.
type IOAPIC struct {
	bus *APICBus

	// mu guards the fields below.
	mu       sync.Mutex
	base     uint64
	regsel   uint32
	id       uint32
	irr      uint32 // per pin: line asserted (level) or high (edge)
	redirtbl [IOAPICPins]uint64
}

// NewIOAPIC returns an IOAPIC with every pin masked, delivering to bus.
func NewIOAPIC(bus *APICBus) *IOAPIC {
	io := &IOAPIC{bus: bus, base: IOAPICBase}
	for i := range io.redirtbl {
		io.redirtbl[i] = redirMasked
	}
	return io
}

// serviceLocked delivers pin's interrupt if it is unmasked and (for level)
// no EOI is outstanding.
func (io *IOAPIC) serviceLocked(pin int) {
	e := io.redirtbl[pin]
	level := e&redirLevel != 0
	if e&redirMasked != 0 || level && e&redirRemote != 0 {
		return
	}
	m := Message{
		Vector:  uint8(e),
		Mode:    DeliveryMode(e >> 8 & 7),
		Logical: e&redirLogical != 0,
		Dest:    uint8(e >> 56),
		Level:   level,
		Assert:  true,
	}
	if m.Mode == ModeStartup || m.Mode == ModeSMI || m.Mode == 3 {
		return
	}
	n := 0
	if io.bus != nil {
		n = io.bus.Deliver(nil, m)
	}
	if n > 0 && level {
		io.redirtbl[pin] |= redirRemote
	}
}

// SetIRQ drives pin to level: an edge pin fires on the rising edge, a level
// pin fires while asserted and no EOI is outstanding.
func (io *IOAPIC) SetIRQ(pin int, level bool) {
	if pin < 0 || pin >= IOAPICPins {
		return
	}
	io.mu.Lock()
	defer io.mu.Unlock()
	m := uint32(1) << pin
	if !level {
		io.irr &^= m
		return
	}
	old := io.irr
	io.irr |= m
	if io.redirtbl[pin]&redirLevel == 0 && old&m != 0 {
		return // edge pin already high
	}
	io.serviceLocked(pin)
}

// EOI is the EOI broadcast from a LAPIC for a level-triggered vector: it
// clears remote IRR of the pins with that vector and re-delivers those
// whose line is still asserted.
func (io *IOAPIC) EOI(vector uint8) {
	io.mu.Lock()
	defer io.mu.Unlock()
	for pin, e := range io.redirtbl {
		if uint8(e) != vector || e&redirRemote == 0 {
			continue
		}
		io.redirtbl[pin] &^= redirRemote
		if e&redirLevel != 0 && io.irr&(1<<pin) != 0 {
			io.serviceLocked(pin)
		}
	}
}

func (io *IOAPIC) readIndirectLocked() uint32 {
	switch r := io.regsel & 0xFF; {
	case r == 0:
		return io.id << 24
	case r == 1:
		return ioapicVersion
	case r == 2:
		return io.id << 24 // arbitration ID
	case r >= 0x10 && r < 0x10+2*IOAPICPins:
		e := io.redirtbl[(r-0x10)/2]
		if r&1 == 1 {
			return uint32(e >> 32)
		}
		return uint32(e)
	}
	return 0xFFFFFFFF
}

func (io *IOAPIC) writeIndirectLocked(val uint32) {
	r := io.regsel & 0xFF
	switch {
	case r == 0:
		io.id = val >> 24 & 0xF
	case r >= 0x10 && r < 0x10+2*IOAPICPins:
		pin := int(r-0x10) / 2
		e := io.redirtbl[pin]
		if r&1 == 1 {
			e = e&0xFFFFFFFF | uint64(val)<<32
		} else {
			e = e&^0xFFFFFFFF | uint64(val)
		}
		e = e&redirWritable | io.redirtbl[pin]&redirRemote
		if e&redirLevel == 0 {
			e &^= redirRemote // Linux expects remote IRR cleared by switching to edge
		}
		io.redirtbl[pin] = e
		if e&redirLevel != 0 && e&redirMasked == 0 && io.irr&(1<<pin) != 0 {
			io.serviceLocked(pin)
		}
	}
}

// Read reads the register window at offset (0x00 IOREGSEL, 0x10 IOWIN).
func (io *IOAPIC) Read(offset uint32) uint32 {
	io.mu.Lock()
	defer io.mu.Unlock()
	switch offset {
	case ioregsel:
		return io.regsel
	case iowin:
		return io.readIndirectLocked()
	}
	return 0
}

// Write writes the register window (0x00 IOREGSEL, 0x10 IOWIN, 0x40 EOI).
func (io *IOAPIC) Write(offset uint32, val uint32) {
	if offset == ioapicEOI {
		io.EOI(uint8(val))
		return
	}
	io.mu.Lock()
	defer io.mu.Unlock()
	switch offset {
	case ioregsel:
		io.regsel = val & 0xFF
	case iowin:
		io.writeIndirectLocked(val)
	}
}

// Save returns the state as struct kvm_ioapic_state in an hv.IRQChip.
func (io *IOAPIC) Save() hv.IRQChip {
	io.mu.Lock()
	defer io.mu.Unlock()
	s := hv.IRQChip{ChipID: hv.IRQChipIOAPIC}
	b := s.Chip[:]
	binary.LittleEndian.PutUint64(b[0:], io.base)
	binary.LittleEndian.PutUint32(b[8:], io.regsel)
	binary.LittleEndian.PutUint32(b[12:], io.id)
	binary.LittleEndian.PutUint32(b[16:], io.irr)
	for i, e := range io.redirtbl {
		binary.LittleEndian.PutUint64(b[24+8*i:], e)
	}
	return s
}

// Restore loads struct kvm_ioapic_state. Reserved bits are dropped; the
// base address must be the IOAPIC's.
func (io *IOAPIC) Restore(s *hv.IRQChip) error {
	if s.ChipID != hv.IRQChipIOAPIC {
		return fmt.Errorf("irqchip: IOAPIC restore: chip id %d is not the IOAPIC", s.ChipID)
	}
	b := s.Chip[:]
	if base := binary.LittleEndian.Uint64(b[0:]); base != IOAPICBase {
		return fmt.Errorf("irqchip: IOAPIC restore: base address %#x, want %#x", base, IOAPICBase)
	}
	io.mu.Lock()
	defer io.mu.Unlock()
	io.regsel = binary.LittleEndian.Uint32(b[8:]) & 0xFF
	io.id = binary.LittleEndian.Uint32(b[12:]) & 0xF
	io.irr = binary.LittleEndian.Uint32(b[16:]) & (1<<IOAPICPins - 1)
	for i := range io.redirtbl {
		io.redirtbl[i] = binary.LittleEndian.Uint64(b[24+8*i:]) & (redirWritable | redirRemote)
	}
	for pin, e := range io.redirtbl { // asserted level lines with no EOI pending
		if e&redirLevel != 0 && io.irr&(1<<pin) != 0 {
			io.serviceLocked(pin)
		}
	}
	return nil
}
