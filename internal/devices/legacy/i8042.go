package legacy

import (
	"fmt"
	"sync"
)

// i8042 status register bits.
const (
	statusOBF    = 0x01 // output buffer full: data for the guest at 0x60
	statusSystem = 0x04 // self-test passed
	statusCmd    = 0x08 // last write was to the command port
)

// i8042 controller commands (written to 0x64).
const (
	cmdReadCTR    = 0x20
	cmdWriteCTR   = 0x60
	cmdDisableAux = 0xA7
	cmdEnableAux  = 0xA8
	cmdTestAux    = 0xA9
	cmdSelfTest   = 0xAA
	cmdTestKbd    = 0xAB
	cmdDisableKbd = 0xAD
	cmdEnableKbd  = 0xAE
	cmdReadOutp   = 0xD0
	cmdWriteOutp  = 0xD1
	cmdPulseReset = 0xFE
)

const (
	ctrDefault  = 0x00
	outpDefault = 0x01 // bit 0 high: CPU not held in reset
	outBufCap   = 16
)

// I8042 is a keyboard-controller stub with no keyboard attached. It answers
// the controller commands Linux and firmware use during probing, and treats
// command 0xFE (pulse reset line), or clearing bit 0 of the output port, as
// a machine reset, which is how a guest reboots.
type I8042 struct {
	reset func()

	// mu guards the fields below.
	mu      sync.Mutex
	status  uint8
	ctr     uint8 // controller configuration ("command byte")
	outp    uint8 // output port
	pending uint8 // command waiting for its data byte at 0x60, or 0
	out     []byte
}

// NewI8042 returns the controller; reset is called from the vCPU thread and
// must not block.
func NewI8042(reset func()) *I8042 {
	return &I8042{reset: reset, status: statusSystem, ctr: ctrDefault, outp: outpDefault}
}

// ReadPort implements devices.PortIO.
func (k *I8042) ReadPort(port uint16, data []byte) {
	fill(data, 0)
	if len(data) == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch port {
	case PortI8042Command:
		data[0] = k.statusByte()
	case PortI8042Data:
		if len(k.out) > 0 {
			data[0] = k.out[0]
			k.out = k.out[1:]
		}
	}
}

// WritePort implements devices.PortIO.
func (k *I8042) WritePort(port uint16, data []byte) {
	if len(data) == 0 {
		return
	}
	v := data[0]
	k.mu.Lock()
	doReset := false
	switch port {
	case PortI8042Command:
		k.status |= statusCmd
		doReset = k.command(v)
	case PortI8042Data:
		k.status &^= statusCmd
		doReset = k.data(v)
	}
	k.mu.Unlock()
	if doReset && k.reset != nil {
		k.reset()
	}
}

func (k *I8042) statusByte() uint8 {
	s := k.status
	if len(k.out) > 0 {
		s |= statusOBF
	}
	return s
}

func (k *I8042) push(b ...byte) {
	for _, v := range b {
		if len(k.out) < outBufCap {
			k.out = append(k.out, v)
		}
	}
}

// command runs a controller command and reports whether it resets the
// machine; k.mu is held.
func (k *I8042) command(c uint8) bool {
	k.pending = 0
	switch c {
	case cmdReadCTR:
		k.push(k.ctr)
	case cmdWriteCTR, cmdWriteOutp:
		k.pending = c
	case cmdReadOutp:
		k.push(k.outp)
	case cmdSelfTest:
		k.push(0x55)
	case cmdTestKbd, cmdTestAux:
		k.push(0x00)
	case cmdDisableKbd:
		k.ctr |= 0x10
	case cmdEnableKbd:
		k.ctr &^= 0x10
	case cmdDisableAux:
		k.ctr |= 0x20
	case cmdEnableAux:
		k.ctr &^= 0x20
	case cmdPulseReset:
		return true
	}
	return false
}

// data handles a byte written to 0x60 and reports whether it resets the
// machine; k.mu is held.
func (k *I8042) data(v uint8) bool {
	c := k.pending
	k.pending = 0
	switch c {
	case cmdWriteCTR:
		k.ctr = v
	case cmdWriteOutp:
		k.outp = v
		return v&0x01 == 0 // bit 0 low: CPU reset line asserted
	default:
		// A command for the keyboard, and there is none: no answer, which
		// the guest reads as "no keyboard" after its timeout.
	}
	return false
}

// I8042StateVersion is the version of I8042State written by this package.
const I8042StateVersion = 1

// I8042State is the controller's migratable state.
type I8042State struct {
	Version uint32
	Status  uint8
	CTR     uint8
	Outp    uint8
	Pending uint8
	Out     []byte
}

// Save returns the controller's state.
func (k *I8042) Save() I8042State {
	k.mu.Lock()
	defer k.mu.Unlock()
	return I8042State{
		Version: I8042StateVersion,
		Status:  k.status, CTR: k.ctr, Outp: k.outp, Pending: k.pending,
		Out: append([]byte(nil), k.out...),
	}
}

// Restore loads s.
func (k *I8042) Restore(s I8042State) error {
	if s.Version != I8042StateVersion {
		return fmt.Errorf("legacy: restore i8042: state version %d, want %d", s.Version, I8042StateVersion)
	}
	if len(s.Out) > outBufCap {
		return fmt.Errorf("legacy: restore i8042: %d output bytes exceed the %d-byte buffer", len(s.Out), outBufCap)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.status, k.ctr, k.outp, k.pending = s.Status&^statusOBF, s.CTR, s.Outp, s.Pending
	k.out = append([]byte(nil), s.Out...)
	return nil
}
