package irqchip

import (
	"fmt"
	"sync"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// PIC ports.
const (
	PortPICMaster = 0x20
	PortPICSlave  = 0xA0
	PortELCR      = 0x4D0 // 0x4D0 master, 0x4D1 slave
)

// pic8259 is one 8259A, with the fields of struct kvm_pic_state.
type pic8259 struct {
	lastIRR            uint8 // input line levels, for edge detection
	irr                uint8
	imr                uint8
	isr                uint8
	priorityAdd        uint8 // the IRQ with the highest priority
	irqBase            uint8
	readRegSelect      bool // OCW3 RR/RIS: read ISR (true) or IRR
	poll               bool
	specialMask        bool
	initState          uint8 // 0 ready, 1..3 expecting ICW2..ICW4
	autoEOI            bool
	rotateOnAutoEOI    bool
	specialFullyNested bool
	init4              bool
	elcr               uint8
	elcrMask           uint8
}

// priority returns the priority (0 highest) of the best bit in mask
// relative to priorityAdd, or 8 for none.
func (c *pic8259) priority(mask uint8) int {
	if mask == 0 {
		return 8
	}
	p := 0
	for mask&(1<<((p+int(c.priorityAdd))&7)) == 0 {
		p++
	}
	return p
}

// irq returns the IRQ the chip would present, or -1.
func (c *pic8259) irq(master bool) int {
	p := c.priority(c.irr &^ c.imr)
	if p == 8 {
		return -1
	}
	isr := c.isr
	if c.specialMask {
		isr &^= c.imr
	}
	if master && c.specialFullyNested {
		isr &^= 1 << 2 // the slave may interrupt its own in-service IRQ
	}
	if p < c.priority(isr) {
		return (p + int(c.priorityAdd)) & 7
	}
	return -1
}

func (c *pic8259) setIRQ(n int, level bool) {
	m := uint8(1) << n
	if c.elcr&m != 0 { // level-triggered
		if level {
			c.irr |= m
			c.lastIRR |= m
		} else {
			c.irr &^= m
			c.lastIRR &^= m
		}
		return
	}
	if level {
		if c.lastIRR&m == 0 {
			c.irr |= m
		}
		c.lastIRR |= m
	} else {
		c.lastIRR &^= m
	}
}

func (c *pic8259) intack(n int) {
	m := uint8(1) << n
	if c.autoEOI {
		if c.rotateOnAutoEOI {
			c.priorityAdd = uint8(n+1) & 7
		}
	} else {
		c.isr |= m
	}
	if c.elcr&m == 0 { // a level-triggered request stays until the line drops
		c.irr &^= m
	}
}

func (c *pic8259) reset() {
	c.lastIRR = 0
	c.irr &= c.elcr
	c.imr = 0
	c.isr = 0
	c.priorityAdd = 0
	c.readRegSelect = false
	c.poll = false
	c.specialMask = false
	c.autoEOI = false
	c.rotateOnAutoEOI = false
	c.specialFullyNested = false
	c.init4 = false
	c.initState = 0
}

// PIC is the cascaded pair of 8259As (slave on master IRQ 2) with the
// PIIX edge/level control registers.
type PIC struct {
	notify func() // INTR asserted; called without mu held

	// mu guards chips.
	mu    sync.Mutex
	chips [2]pic8259
}

// NewPIC returns the pair in its reset state; notify (may be nil) is
// called whenever INTR is asserted, from any goroutine, without locks held.
func NewPIC(notify func()) *PIC {
	p := &PIC{notify: notify}
	p.chips[0].elcrMask = 0xF8
	p.chips[1].elcrMask = 0xDE
	return p
}

// updateLocked propagates the slave's output to master IRQ 2 and returns
// the master's INTR output.
func (p *PIC) updateLocked() bool {
	p.chips[0].setIRQ(2, p.chips[1].irq(false) >= 0)
	return p.chips[0].irq(true) >= 0
}

func (p *PIC) unlock(intr bool) {
	p.mu.Unlock()
	if intr && p.notify != nil {
		p.notify()
	}
}

// SetIRQ drives input line n (0-15) to level.
func (p *PIC) SetIRQ(n int, level bool) {
	if n < 0 || n > 15 {
		return
	}
	p.mu.Lock()
	p.chips[n>>3].setIRQ(n&7, level)
	p.unlock(p.updateLocked() && level)
}

// INTR reports whether the master asserts its interrupt output.
func (p *PIC) INTR() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.updateLocked()
}

// PendingVector returns the vector an INTA cycle would return now.
func (p *PIC) PendingVector() (uint8, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.updateLocked()
	irq := p.chips[0].irq(true)
	if irq < 0 {
		return 0, false
	}
	if irq == 2 {
		if s := p.chips[1].irq(false); s >= 0 {
			return p.chips[1].irqBase + uint8(s), true
		}
		return p.chips[1].irqBase + 7, true
	}
	return p.chips[0].irqBase + uint8(irq), true
}

// Ack is the INTA cycle: it returns the vector of the highest-priority
// request and marks it in service; with nothing to deliver it returns the
// spurious IRQ 7 (or 15, through the slave).
func (p *PIC) Ack() uint8 {
	p.mu.Lock()
	p.updateLocked()
	m, s := &p.chips[0], &p.chips[1]
	var v uint8
	irq := m.irq(true)
	switch {
	case irq < 0:
		v = m.irqBase + 7
	case irq == 2:
		m.intack(2)
		if i := s.irq(false); i >= 0 {
			s.intack(i)
			v = s.irqBase + uint8(i)
		} else {
			v = s.irqBase + 7
		}
	default:
		m.intack(irq)
		v = m.irqBase + uint8(irq)
	}
	p.unlock(p.updateLocked())
	return v
}

// In reads a PIC port (0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1).
func (p *PIC) In(port uint16) (uint8, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch port {
	case PortELCR, PortELCR + 1:
		return p.chips[port-PortELCR].elcr, true
	case PortPICMaster, PortPICMaster + 1, PortPICSlave, PortPICSlave + 1:
	default:
		return 0, false
	}
	c := &p.chips[port>>7&1]
	if c.poll {
		c.poll = false
		irq := c.irq(port < PortPICSlave)
		if irq < 0 {
			return 0, true
		}
		c.intack(irq)
		p.updateLocked()
		return 0x80 | uint8(irq), true
	}
	if port&1 == 1 {
		return c.imr, true
	}
	if c.readRegSelect {
		return c.isr, true
	}
	return c.irr, true
}

// Out writes a PIC port.
func (p *PIC) Out(port uint16, val uint8) bool {
	p.mu.Lock()
	switch port {
	case PortELCR, PortELCR + 1:
		c := &p.chips[port-PortELCR]
		c.elcr = val & c.elcrMask
		p.unlock(p.updateLocked())
		return true
	case PortPICMaster, PortPICMaster + 1, PortPICSlave, PortPICSlave + 1:
	default:
		p.mu.Unlock()
		return false
	}
	c := &p.chips[port>>7&1]
	if port&1 == 0 {
		switch {
		case val&0x10 != 0: // ICW1
			c.reset()
			c.init4 = val&1 != 0
			c.initState = 1
			// single mode (bit 1) and level-triggered mode (bit 3) are not
			// modelled: the pair is always cascaded and ELCR sets levels
		case val&0x08 != 0: // OCW3
			if val&0x04 != 0 {
				c.poll = true
			}
			if val&0x02 != 0 {
				c.readRegSelect = val&1 != 0
			}
			if val&0x40 != 0 {
				c.specialMask = val&0x20 != 0
			}
		default: // OCW2
			switch cmd := val >> 5; cmd {
			case 0, 4:
				c.rotateOnAutoEOI = cmd == 4
			case 1, 5: // non-specific EOI, rotate on it
				if pr := c.priority(c.isr); pr != 8 {
					irq := (pr + int(c.priorityAdd)) & 7
					c.isr &^= 1 << irq
					if cmd == 5 {
						c.priorityAdd = uint8(irq+1) & 7
					}
				}
			case 3: // specific EOI
				c.isr &^= 1 << (val & 7)
			case 6: // set priority
				c.priorityAdd = (val + 1) & 7
			case 7: // rotate on specific EOI
				c.isr &^= 1 << (val & 7)
				c.priorityAdd = (val + 1) & 7
			}
		}
	} else {
		switch c.initState {
		case 0: // OCW1
			c.imr = val
		case 1: // ICW2
			c.irqBase = val & 0xF8
			c.initState = 2
		case 2: // ICW3
			if c.init4 {
				c.initState = 3
			} else {
				c.initState = 0
			}
		case 3: // ICW4
			c.specialFullyNested = val&0x10 != 0
			c.autoEOI = val&0x02 != 0
			c.initState = 0
		}
	}
	p.unlock(p.updateLocked())
	return true
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Save returns the state of chip chipID (hv.IRQChipPICMaster or
// hv.IRQChipPICSlave) as struct kvm_pic_state.
func (p *PIC) Save(chipID uint32) (hv.IRQChip, error) {
	if chipID > hv.IRQChipPICSlave {
		return hv.IRQChip{}, fmt.Errorf("irqchip: PIC save: chip id %d is not a PIC", chipID)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &p.chips[chipID]
	s := hv.IRQChip{ChipID: chipID}
	copy(s.Chip[:16], []byte{
		c.lastIRR, c.irr, c.imr, c.isr, c.priorityAdd, c.irqBase,
		b2u(c.readRegSelect), b2u(c.poll), b2u(c.specialMask), c.initState,
		b2u(c.autoEOI), b2u(c.rotateOnAutoEOI), b2u(c.specialFullyNested),
		b2u(c.init4), c.elcr, c.elcrMask,
	})
	return s, nil
}

// Restore loads one chip from struct kvm_pic_state. Out-of-range values
// are clamped (init_state > 3 becomes 0; irq_base loses its low bits).
func (p *PIC) Restore(s *hv.IRQChip) error {
	if s.ChipID > hv.IRQChipPICSlave {
		return fmt.Errorf("irqchip: PIC restore: chip id %d is not a PIC", s.ChipID)
	}
	b := s.Chip[:16]
	p.mu.Lock()
	c := &p.chips[s.ChipID]
	*c = pic8259{
		lastIRR: b[0], irr: b[1], imr: b[2], isr: b[3], priorityAdd: b[4] & 7,
		irqBase: b[5] & 0xF8, readRegSelect: b[6] != 0, poll: b[7] != 0,
		specialMask: b[8] != 0, initState: b[9], autoEOI: b[10] != 0,
		rotateOnAutoEOI: b[11] != 0, specialFullyNested: b[12] != 0,
		init4: b[13] != 0, elcr: b[14], elcrMask: b[15],
	}
	if c.initState > 3 {
		c.initState = 0
	}
	c.elcr &= c.elcrMask
	p.unlock(p.updateLocked())
	return nil
}
