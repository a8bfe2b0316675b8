package serial

import "fmt"

// StateVersion is the version of State that this package writes.
const StateVersion = 1

// State is the UART's migratable state: its registers and the input the
// guest has not read yet. Output already handed to the writer is not part
// of it.
type State struct {
	Version     uint32
	DLL, DLM    uint8
	IER, IIRFCR uint8 // IIRFCR holds the FCR bits the model keeps
	LCR, MCR    uint8
	Overrun     bool
	MSR, SCR    uint8
	THREPending bool
	RX          []byte
}

// Save returns the UART's state.
func (u *UART) Save() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return State{
		Version: StateVersion,
		DLL:     u.dll, DLM: u.dlm,
		IER: u.ier, IIRFCR: u.fcr,
		LCR: u.lcr, MCR: u.mcr,
		Overrun: u.lsrOverrun,
		MSR:     u.msr, SCR: u.scr,
		THREPending: u.threPending,
		RX:          append([]byte(nil), u.rx...),
	}
}

// Restore loads s and raises the interrupt if one is pending: the guest may
// have missed the edge that the source sent just before it stopped.
func (u *UART) Restore(s State) error {
	if s.Version != StateVersion {
		return fmt.Errorf("serial: restore UART at %#x: state version %d, want %d", u.base, s.Version, StateVersion)
	}
	if len(s.RX) > RXFIFOCap {
		return fmt.Errorf("serial: restore UART at %#x: %d bytes of pending input exceed the %d-byte FIFO", u.base, len(s.RX), RXFIFOCap)
	}
	u.mu.Lock()
	u.dll, u.dlm = s.DLL, s.DLM
	u.ier = s.IER & ierMask
	u.fcr = s.IIRFCR & (fcrEnable | 0xC0)
	u.lcr = s.LCR
	u.mcr = s.MCR & mcrMask
	u.lsrOverrun = s.Overrun
	u.msr, u.scr = s.MSR, s.SCR
	u.threPending = s.THREPending
	u.rx = append([]byte(nil), s.RX...)
	fire := u.reasons() != 0
	u.mu.Unlock()
	if fire {
		u.irq.Trigger()
	}
	return nil
}
