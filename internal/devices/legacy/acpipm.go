package legacy

import (
	"fmt"
	"sync"
)

// PM1 register bits (ACPI 6.0 section 4.8.3).
const (
	pm1CntSCIEn     = 1 << 0  // SCI_EN: the machine is in ACPI mode
	pm1CntBMRld     = 1 << 1  // BM_RLD: bus master wakes from C3
	pm1CntSlpTyp    = 7 << 10 // SLP_TYPx: the sleep state to enter
	pm1CntSlpTypLSB = 10
	pm1CntSlpEn     = 1 << 13 // SLP_EN: enter SLP_TYPx now (write-only)
	pm1CntStored    = pm1CntBMRld | pm1CntSlpTyp

	// SleepTypeS5 is the SLP_TYP value the DSDT's \_S5 object gives for
	// soft-off.
	SleepTypeS5 = 5

	// ACPIPMLen is the number of ports the device decodes from its base.
	ACPIPMLen = 6
)

// ACPIPM is the ACPI PM1a register block of a PC that is always in ACPI
// mode (the FADT names no SMI command port): at base+0 PM1_STS (16 bits,
// write 1 to clear), base+2 PM1_EN (16 bits), base+4 PM1_CNT (16 bits,
// SCI_EN always set). Writing PM1_CNT with SLP_EN and SLP_TYP =
// SleepTypeS5 powers the machine off; other sleep states (S1-S4) are
// not offered by the DSDT and such writes are ignored.
//
// No event of this machine sets a PM1_STS bit (no PM timer, power button
// or RTC alarm), so the device never raises the SCI.
type ACPIPM struct {
	base     uint16
	poweroff func()

	// mu guards the registers.
	mu     sync.Mutex
	status uint16
	enable uint16
	cnt    uint16 // BM_RLD and SLP_TYP as last written
}

// NewACPIPM returns the PM1 block at ports [base, base+ACPIPMLen).
// poweroff is called from the vCPU thread on an S5 request and must not
// block.
func NewACPIPM(base uint16, poweroff func()) *ACPIPM {
	return &ACPIPM{base: base, poweroff: poweroff}
}

// control returns PM1_CNT as the guest reads it; p.mu is held.
func (p *ACPIPM) control() uint16 { return p.cnt | pm1CntSCIEn }

// ReadPort implements devices.PortIO. Each byte of the access reads the
// register byte at its port; ports past the block read as all-ones.
func (p *ACPIPM) ReadPort(port uint16, data []byte) {
	p.mu.Lock()
	regs := [ACPIPMLen]byte{
		byte(p.status), byte(p.status >> 8),
		byte(p.enable), byte(p.enable >> 8),
		byte(p.control()), byte(p.control() >> 8),
	}
	p.mu.Unlock()
	for i := range data {
		off := int(port-p.base) + i
		if off < 0 || off >= ACPIPMLen {
			data[i] = 0xFF
			continue
		}
		data[i] = regs[off]
	}
}

// WritePort implements devices.PortIO. Each byte of the access writes the
// register byte at its port, so 8-, 16- and 32-bit accesses all work.
func (p *ACPIPM) WritePort(port uint16, data []byte) {
	p.mu.Lock()
	sleep := false
	for i, b := range data {
		off := int(port-p.base) + i
		v, shift := uint16(b), 8*uint(off&1)
		switch off {
		case 0, 1:
			p.status &^= v << shift
		case 2, 3:
			p.enable = p.enable&^(0xFF<<shift) | v<<shift
		case 4, 5:
			written := p.cnt&^(0xFF<<shift) | v<<shift
			p.cnt = written & pm1CntStored
			if off == 5 && written&pm1CntSlpEn != 0 {
				sleep = (written&pm1CntSlpTyp)>>pm1CntSlpTypLSB == SleepTypeS5
			}
		}
	}
	p.mu.Unlock()
	if sleep && p.poweroff != nil {
		p.poweroff()
	}
}

// ACPIPMStateVersion is the version of ACPIPMState written by this package.
const ACPIPMStateVersion = 1

// ACPIPMState is the PM1 block's migratable state.
type ACPIPMState struct {
	Version uint32
	Status  uint16
	Enable  uint16
	Control uint16
}

// Save returns the registers.
func (p *ACPIPM) Save() ACPIPMState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return ACPIPMState{Version: ACPIPMStateVersion, Status: p.status, Enable: p.enable, Control: p.control()}
}

// Restore loads s.
func (p *ACPIPM) Restore(s ACPIPMState) error {
	if s.Version != ACPIPMStateVersion {
		return fmt.Errorf("legacy: restore acpi pm: state version %d, want %d", s.Version, ACPIPMStateVersion)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status, p.enable, p.cnt = s.Status, s.Enable, s.Control&pm1CntStored
	return nil
}
