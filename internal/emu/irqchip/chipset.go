package irqchip

import (
	"errors"
	"fmt"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// GSIs is the number of GSIs of the default routing: 0..23.
const GSIs = IOAPICPins

// ChipsetConfig configures a Chipset.
type ChipsetConfig struct {
	VCPUs int       // number of LAPICs, vCPU i has APIC ID i
	Sched Scheduler // guest clock for every timer
	// TSC returns vCPU i's TSC and TSCHz its frequency (TSC-deadline mode).
	TSC   func(vcpu int) uint64
	TSCHz uint64
	// Wake is called whenever something becomes deliverable to vCPU i:
	// an IRR bit, an NMI, INIT or SIPI, ExtINT from the PIC. It may run on
	// any goroutine, possibly with the IOAPIC's lock held, and must not
	// call back into this package synchronously.
	Wake func(vcpu int)
}

// Validate checks the configuration.
func (c *ChipsetConfig) Validate() error {
	switch {
	case c.VCPUs < 1 || c.VCPUs > 255:
		return fmt.Errorf("irqchip: %d vCPUs; xAPIC mode needs 1..255", c.VCPUs)
	case c.Sched == nil:
		return errors.New("irqchip: no scheduler (guest clock)")
	}
	return nil
}

// Chipset is the VM's interrupt controllers and timers, wired as KVM's
// in-kernel irqchip with its default routing.
type Chipset struct {
	bus    *APICBus
	lapics []*LAPIC
	pic    *PIC
	ioapic *IOAPIC
	pit    *PIT
	wake   func(int)
}

// NewChipset builds the LAPICs, the PIC pair, the IOAPIC and the PIT.
func NewChipset(cfg ChipsetConfig) (*Chipset, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Chipset{bus: &APICBus{}, wake: cfg.Wake}
	if c.wake == nil {
		c.wake = func(int) {}
	}
	c.pic = NewPIC(c.picINTR)
	c.ioapic = NewIOAPIC(c.bus)
	for i := range cfg.VCPUs {
		var tsc func() uint64
		if cfg.TSC != nil {
			tsc = func() uint64 { return cfg.TSC(i) }
		}
		c.lapics = append(c.lapics, NewLAPIC(LAPICConfig{
			ID: i, Sched: cfg.Sched, TSC: tsc, TSCHz: cfg.TSCHz,
			Wake: func() { c.wake(i) }, Bus: c.bus, PIC: c.pic, EOI: c.ioapic.EOI,
		}))
	}
	c.pit = NewPIT(cfg.Sched, func() { c.PulseIRQ(0) })
	return c, nil
}

// picINTR wakes the vCPUs that take ExtINT from the PIC.
func (c *Chipset) picINTR() {
	for i, a := range c.lapics {
		if a.AcceptsPIC() {
			c.wake(i)
		}
	}
}

// LAPIC returns vCPU i's local APIC.
func (c *Chipset) LAPIC(vcpu int) *LAPIC { return c.lapics[vcpu] }

// PIC returns the 8259 pair.
func (c *Chipset) PIC() *PIC { return c.pic }

// IOAPIC returns the IOAPIC.
func (c *Chipset) IOAPIC() *IOAPIC { return c.ioapic }

// PIT returns the 8254.
func (c *Chipset) PIT() *PIT { return c.pit }

// SetIRQ drives GSI gsi: GSI n < 16 reaches PIC pin n and IOAPIC pin n,
// GSI 16..23 the IOAPIC only (KVM's default routing; note GSI 0, the PIT,
// is IOAPIC pin 0, not pin 2 as QEMU routes it).
func (c *Chipset) SetIRQ(gsi uint32, level bool) {
	if gsi < 16 {
		c.pic.SetIRQ(int(gsi), level)
	}
	if gsi < GSIs {
		c.ioapic.SetIRQ(int(gsi), level)
	}
}

// PulseIRQ raises then lowers an edge-triggered GSI.
func (c *Chipset) PulseIRQ(gsi uint32) {
	c.SetIRQ(gsi, true)
	c.SetIRQ(gsi, false)
}

// PortIn handles reads of the PIC, ELCR, PIT and 0x61 ports. Multi-byte
// accesses read consecutive ports, 0xFF for unhandled ones.
func (c *Chipset) PortIn(port uint16, size int) (uint32, bool) {
	if !c.handles(port) {
		return 0, false
	}
	var v uint32
	for i := range min(max(size, 1), 4) {
		b, ok := c.in8(port + uint16(i))
		if !ok {
			b = 0xFF
		}
		v |= uint32(b) << (8 * i)
	}
	return v, true
}

// PortOut handles writes of the PIC, ELCR, PIT and 0x61 ports.
func (c *Chipset) PortOut(port uint16, size int, val uint32) bool {
	if !c.handles(port) {
		return false
	}
	for i := range min(max(size, 1), 4) {
		c.out8(port+uint16(i), uint8(val>>(8*i)))
	}
	return true
}

func (c *Chipset) handles(port uint16) bool {
	switch port {
	case 0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x40, 0x41, 0x42, 0x43, 0x61:
		return true
	}
	return false
}

func (c *Chipset) in8(port uint16) (uint8, bool) {
	if v, ok := c.pic.In(port); ok {
		return v, true
	}
	return c.pit.In(port)
}

func (c *Chipset) out8(port uint16, v uint8) {
	if !c.pic.Out(port, v) {
		c.pit.Out(port, v)
	}
}

// MMIORead handles a read of vCPU vcpu's LAPIC page or of the IOAPIC.
// Sizes 1, 2 and 4 read within one 32-bit register; 8 reads two.
func (c *Chipset) MMIORead(vcpu int, gpa uint64, size int) (uint64, bool) {
	read, ok := c.mmio(vcpu, gpa)
	if !ok {
		return 0, false
	}
	off := uint32(gpa & 0xFFF)
	var v uint64
	switch size {
	case 8:
		v = uint64(read(off&^3)) | uint64(read(off&^3+4))<<32
	case 1, 2:
		v = uint64(read(off&^3)>>(8*(off&3))) & (1<<(8*size) - 1)
	default:
		v = uint64(read(off &^ 3))
	}
	return v, true
}

func (c *Chipset) mmio(vcpu int, gpa uint64) (func(uint32) uint32, bool) {
	if gpa&^0xFFF == IOAPICBase {
		return func(off uint32) uint32 { return c.ioapic.Read(off) }, true
	}
	if vcpu < 0 || vcpu >= len(c.lapics) {
		return nil, false
	}
	a := c.lapics[vcpu]
	if a.Enabled() && gpa&^0xFFF == a.Base() {
		return func(off uint32) uint32 { return a.Read(off) }, true
	}
	return nil, false
}

// MMIOWrite handles a write of vCPU vcpu's LAPIC page or of the IOAPIC.
// LAPIC writes other than 32-bit aligned ones are dropped (as KVM drops
// them); IOAPIC writes of 1, 2 or 4 bytes are widened to 32 bits.
func (c *Chipset) MMIOWrite(vcpu int, gpa uint64, size int, val uint64) bool {
	if _, ok := c.mmio(vcpu, gpa); !ok {
		return false
	}
	off := uint32(gpa & 0xFFF)
	if gpa&^0xFFF == IOAPICBase {
		if off&3 == 0 {
			c.ioapic.Write(off, uint32(val))
		}
		return true
	}
	if size == 4 && off&3 == 0 || size == 8 && off&7 == 0 {
		c.lapics[vcpu].Write(off, uint32(val))
	}
	return true
}

// PendingInterrupt acknowledges the highest-priority interrupt for vCPU
// vcpu (ExtINT from the PIC or its LAPIC's IRR): the CPU interpreter calls
// it at an instruction boundary when RFLAGS.IF=1.
func (c *Chipset) PendingInterrupt(vcpu int) (vector uint8, ok bool) {
	if vcpu < 0 || vcpu >= len(c.lapics) {
		return 0, false
	}
	return c.lapics[vcpu].Ack()
}

// ChipsetState is the whole irqchip in KVM's layouts.
type ChipsetState struct {
	PICMaster hv.IRQChip
	PICSlave  hv.IRQChip
	IOAPIC    hv.IRQChip
	PIT       hv.PITState2
	LAPICs    []hv.LAPICState
}

// Save returns every device's state. The VM should be paused so the
// devices are mutually consistent.
func (c *Chipset) Save() (ChipsetState, error) {
	var s ChipsetState
	var err error
	if s.PICMaster, err = c.pic.Save(hv.IRQChipPICMaster); err != nil {
		return s, err
	}
	if s.PICSlave, err = c.pic.Save(hv.IRQChipPICSlave); err != nil {
		return s, err
	}
	s.IOAPIC = c.ioapic.Save()
	s.PIT = c.pit.Save()
	for _, a := range c.lapics {
		s.LAPICs = append(s.LAPICs, a.Save())
	}
	return s, nil
}

// Restore loads every device's state: LAPICs first, then the PICs, the
// IOAPIC (which may re-deliver asserted level lines) and the PIT.
func (c *Chipset) Restore(s *ChipsetState) error {
	if len(s.LAPICs) != len(c.lapics) {
		return fmt.Errorf("irqchip: restore: state has %d LAPICs, VM has %d vCPUs", len(s.LAPICs), len(c.lapics))
	}
	for i := range c.lapics {
		if err := c.lapics[i].Restore(&s.LAPICs[i]); err != nil {
			return fmt.Errorf("irqchip: restore vcpu %d LAPIC: %w", i, err)
		}
	}
	if err := c.SetIRQChip(&s.PICMaster); err != nil {
		return err
	}
	if err := c.SetIRQChip(&s.PICSlave); err != nil {
		return err
	}
	if err := c.SetIRQChip(&s.IOAPIC); err != nil {
		return err
	}
	return c.pit.Restore(&s.PIT)
}

// GetIRQChip fills chip with the state of chip.ChipID, as KVM_GET_IRQCHIP.
func (c *Chipset) GetIRQChip(chip *hv.IRQChip) error {
	var err error
	switch chip.ChipID {
	case hv.IRQChipPICMaster, hv.IRQChipPICSlave:
		*chip, err = c.pic.Save(chip.ChipID)
	case hv.IRQChipIOAPIC:
		*chip = c.ioapic.Save()
	default:
		err = fmt.Errorf("irqchip: no chip with id %d", chip.ChipID)
	}
	return err
}

// SetIRQChip loads the state of chip.ChipID, as KVM_SET_IRQCHIP.
func (c *Chipset) SetIRQChip(chip *hv.IRQChip) error {
	switch chip.ChipID {
	case hv.IRQChipPICMaster, hv.IRQChipPICSlave:
		return c.pic.Restore(chip)
	case hv.IRQChipIOAPIC:
		return c.ioapic.Restore(chip)
	}
	return fmt.Errorf("irqchip: no chip with id %d", chip.ChipID)
}
