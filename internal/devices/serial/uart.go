// Package serial emulates an 8250/16550A UART, the guest's console (COM1 at
// port 0x3F8, IRQ 4).
//
// The model keeps the registers a Linux or firmware driver programs (divisor
// latch, IER, IIR with the THRE interrupt, FCR, LCR, MCR with loopback, LSR,
// MSR, scratch) and transmits instantly: the transmitter is always empty
// again by the time the guest looks. Output goes to an io.Writer through a
// bounded buffer drained by a goroutine, so a slow console never stalls a
// vCPU; host console input is queued into a bounded receive FIFO.
//
// Who may import: the vm layer (to put the UART on the port bus) and
// migration (through Save/Restore). It depends on package devices only.
package serial

import (
	"io"
	"sync"

	"github.com/godwit-vmm/godwit/internal/devices"
)

// Standard PC COM port bases and IRQs.
const (
	COM1Base = 0x3F8
	COM1IRQ  = 4
)

// RXFIFOCap bounds the host input queued for the guest; input beyond it is
// dropped and reported to the guest as an overrun.
const RXFIFOCap = 64 << 10

// Register offsets from the base port.
const (
	regData = 0 // RBR (read) / THR (write); DLL when LCR.DLAB
	regIER  = 1 // interrupt enable; DLM when LCR.DLAB
	regIIR  = 2 // interrupt identification (read) / FCR (write)
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7
)

// IER bits.
const (
	ierRDA  = 0x01 // received data available
	ierTHRE = 0x02 // transmitter holding register empty
	ierRLS  = 0x04 // receiver line status
	ierMS   = 0x08 // modem status
	ierMask = 0x0F
)

// IIR values, highest priority first.
const (
	iirNone     = 0x01
	iirRLS      = 0x06
	iirRDA      = 0x04
	iirTHRE     = 0x02
	iirMS       = 0x00
	iirFIFOBits = 0xC0
)

// FCR bits.
const (
	fcrEnable  = 0x01
	fcrClearRX = 0x02
)

// LCR, MCR, LSR and MSR bits.
const (
	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1F

	lsrDR   = 0x01
	lsrOE   = 0x02
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	msrDCTS = 0x01
	msrDDSR = 0x02
	msrTERI = 0x04
	msrDDCD = 0x08
	msrCTS  = 0x10
	msrDSR  = 0x20
	msrRI   = 0x40
	msrDCD  = 0x80
	// msrIdle is what the modem lines show outside loopback: carrier,
	// data set ready and clear to send, as a connected null modem would.
	msrIdle = msrDCD | msrDSR | msrCTS
)

// pending interrupt reasons, as a bit set.
const (
	reasonRLS = 1 << iota
	reasonRDA
	reasonTHRE
	reasonMS
)

// UART is one 16550A. Its methods are safe for concurrent use by vCPU
// threads and the host input goroutine.
type UART struct {
	base uint16
	irq  devices.Interrupt
	out  *asyncWriter

	// mu guards the registers and the receive FIFO below.
	mu          sync.Mutex
	dll, dlm    uint8
	ier         uint8
	fcr         uint8 // only fcrEnable and the trigger bits are kept
	lcr         uint8
	mcr         uint8
	lsrOverrun  bool  // OE, cleared by reading LSR
	msr         uint8 // modem status incl. delta bits (low nibble)
	scr         uint8
	threPending bool   // THRE interrupt armed; reading IIR clears it
	rx          []byte // receive FIFO, oldest first
}

// New returns a UART at I/O port base that raises irq and writes the
// guest's output to out. Call Close to stop the output goroutine.
func New(base uint16, irq devices.Interrupt, out io.Writer) *UART {
	if irq == nil {
		irq = devices.NoInterrupt
	}
	return &UART{
		base: base,
		irq:  irq,
		out:  newAsyncWriter(out, outputBufferCap),
		dll:  0x0C, // 9600 baud, as the BIOS leaves it
		lcr:  0x03, // 8N1
		mcr:  mcrOUT2,
		msr:  msrIdle,
	}
}

// Close flushes the output and stops the output goroutine.
func (u *UART) Close() error { return u.out.Close() }

// Flush waits until all output written so far has reached the writer.
func (u *UART) Flush() { u.out.Flush() }

// OutputDropped returns how many output bytes were dropped because the
// writer could not keep up.
func (u *UART) OutputDropped() uint64 { return u.out.Dropped() }

// Input queues host console input for the guest. Bytes beyond RXFIFOCap are
// dropped and flagged to the guest as an overrun.
func (u *UART) Input(b []byte) {
	if len(b) == 0 {
		return
	}
	u.mu.Lock()
	before := u.reasons()
	room := RXFIFOCap - len(u.rx)
	if len(b) > room {
		b = b[:room]
		u.lsrOverrun = true
	}
	u.rx = append(u.rx, b...)
	fire := u.newReasons(before) || u.reasons()&reasonRDA != 0
	u.mu.Unlock()
	if fire {
		u.irq.Trigger()
	}
}

// ReadPort implements devices.PortIO. Only the first byte of a wider access
// is a register; the rest read as zero.
func (u *UART) ReadPort(port uint16, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if len(data) == 0 || port < u.base || port > u.base+7 {
		return
	}
	u.mu.Lock()
	before := u.reasons()
	data[0] = u.readReg(port - u.base)
	fire := u.newReasons(before)
	u.mu.Unlock()
	if fire {
		u.irq.Trigger()
	}
}

// WritePort implements devices.PortIO. Only the first byte of a wider
// access is used.
func (u *UART) WritePort(port uint16, data []byte) {
	if len(data) == 0 || port < u.base || port > u.base+7 {
		return
	}
	u.mu.Lock()
	if port-u.base == regData && u.lcr&lcrDLAB == 0 {
		// Writing THR fills it, which drops the THRE interrupt; the
		// instant transmit below empties it again. On an edge-triggered
		// line that is a new edge for every byte, as on hardware.
		u.threPending = false
	}
	before := u.reasons()
	txed := u.writeReg(port-u.base, data[0])
	fire := u.newReasons(before)
	u.mu.Unlock()
	if txed != nil {
		u.out.Write(txed)
	}
	if fire {
		u.irq.Trigger()
	}
}

// readReg returns register off; u.mu is held.
func (u *UART) readReg(off uint16) uint8 {
	switch off {
	case regData:
		if u.lcr&lcrDLAB != 0 {
			return u.dll
		}
		if len(u.rx) == 0 {
			return 0
		}
		b := u.rx[0]
		u.rx = u.rx[1:]
		if len(u.rx) == 0 {
			u.rx = nil // let the backing array go
		}
		return b
	case regIER:
		if u.lcr&lcrDLAB != 0 {
			return u.dlm
		}
		return u.ier
	case regIIR:
		v := u.iir()
		if v == iirTHRE {
			u.threPending = false // reading IIR acknowledges THRE
		}
		if u.fcr&fcrEnable != 0 {
			v |= iirFIFOBits
		}
		return v
	case regLCR:
		return u.lcr
	case regMCR:
		return u.mcr
	case regLSR:
		v := uint8(lsrTHRE | lsrTEMT)
		if len(u.rx) > 0 {
			v |= lsrDR
		}
		if u.lsrOverrun {
			v |= lsrOE
			u.lsrOverrun = false
		}
		return v
	case regMSR:
		v := u.msr
		u.msr &^= msrDCTS | msrDDSR | msrTERI | msrDDCD
		return v
	case regSCR:
		return u.scr
	}
	return 0
}

// writeReg writes register off and returns the byte to transmit, if any;
// u.mu is held.
func (u *UART) writeReg(off uint16, v uint8) []byte {
	switch off {
	case regData:
		if u.lcr&lcrDLAB != 0 {
			u.dll = v
			return nil
		}
		// The byte leaves at once, so THR is empty again: re-arm THRE.
		u.threPending = true
		if u.mcr&mcrLoop != 0 {
			if len(u.rx) < RXFIFOCap {
				u.rx = append(u.rx, v)
			} else {
				u.lsrOverrun = true
			}
			return nil
		}
		return []byte{v}
	case regIER:
		if u.lcr&lcrDLAB != 0 {
			u.dlm = v
			return nil
		}
		old := u.ier
		u.ier = v & ierMask
		if u.ier&ierTHRE != 0 && old&ierTHRE == 0 {
			// Enabling the THRE interrupt while THR is empty raises it:
			// Linux's 8250 driver waits for exactly this.
			u.threPending = true
		}
		if u.ier&ierTHRE == 0 {
			u.threPending = false
		}
	case regIIR: // FCR
		if v&fcrClearRX != 0 {
			u.rx = nil
		}
		u.fcr = v & (fcrEnable | 0xC0)
	case regLCR:
		u.lcr = v
	case regMCR:
		u.setMCR(v & mcrMask)
	case regLSR:
		// Read-only (factory test register on some parts): ignore.
	case regMSR:
		// Read-only.
	case regSCR:
		u.scr = v
	}
	return nil
}

// setMCR updates MCR and, in loopback, the modem status lines that mirror
// it; u.mu is held.
func (u *UART) setMCR(v uint8) {
	u.mcr = v
	var lines uint8 = msrIdle
	if v&mcrLoop != 0 {
		lines = 0
		if v&mcrRTS != 0 {
			lines |= msrCTS
		}
		if v&mcrDTR != 0 {
			lines |= msrDSR
		}
		if v&mcrOUT1 != 0 {
			lines |= msrRI
		}
		if v&mcrOUT2 != 0 {
			lines |= msrDCD
		}
	}
	old := u.msr & 0xF0
	delta := u.msr & 0x0F
	if (old^lines)&msrCTS != 0 {
		delta |= msrDCTS
	}
	if (old^lines)&msrDSR != 0 {
		delta |= msrDDSR
	}
	if old&msrRI != 0 && lines&msrRI == 0 {
		delta |= msrTERI
	}
	if (old^lines)&msrDCD != 0 {
		delta |= msrDDCD
	}
	u.msr = lines | delta
}

// reasons returns the set of enabled, pending interrupt reasons; u.mu is held.
func (u *UART) reasons() int {
	r := 0
	if u.ier&ierRLS != 0 && u.lsrOverrun {
		r |= reasonRLS
	}
	if u.ier&ierRDA != 0 && len(u.rx) > 0 {
		r |= reasonRDA
	}
	if u.ier&ierTHRE != 0 && u.threPending {
		r |= reasonTHRE
	}
	if u.ier&ierMS != 0 && u.msr&0x0F != 0 {
		r |= reasonMS
	}
	return r
}

// newReasons reports whether an interrupt reason appeared since before was
// taken: the line is edge-triggered, so that is when to pulse it.
func (u *UART) newReasons(before int) bool {
	return u.reasons()&^before != 0
}

// iir returns the IIR value for the highest-priority pending reason,
// without the FIFO bits; u.mu is held.
func (u *UART) iir() uint8 {
	r := u.reasons()
	switch {
	case r&reasonRLS != 0:
		return iirRLS
	case r&reasonRDA != 0:
		return iirRDA
	case r&reasonTHRE != 0:
		return iirTHRE
	case r&reasonMS != 0:
		return iirMS
	}
	return iirNone
}
