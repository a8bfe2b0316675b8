package emu

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/godwit-vmm/godwit/internal/emu/cpu"
	"github.com/godwit-vmm/godwit/internal/emu/irqchip"
	"github.com/godwit-vmm/godwit/internal/hv"
)

// Guest-physical pages the chipset serves.
const (
	lapicBase  = 0xfee00000
	ioapicBase = 0xfec00000
	pageSize   = 0x1000
)

// runBudget is how many instructions a vCPU runs between checks of its
// requests when nothing else ends the run.
const runBudget = 1 << 16

// VCPU is a software vCPU: the CPU, its LAPIC, and the state of the exit
// in progress.
type VCPU struct {
	id    int
	vm    *VM
	cpu   *cpu.CPU
	lapic *irqchip.LAPIC

	offset atomic.Uint64 // TSC = hostTSC() + offset; read by timer goroutines
	mp     uint32        // hv.MPState*; the vCPU thread's own

	immediate atomic.Bool   // SetImmediateExit
	wake      chan struct{} // a halted or waiting vCPU sleeps on it

	// The exit for the VMM, valid until the next Run.
	io      hv.IO
	mmio    hv.MMIO
	ioBuf   [8]byte
	pending pendingKind // an IN or MMIO read the next Run completes
	ierr    hv.InternalError
}

type pendingKind int

const (
	pendingNone pendingKind = iota
	pendingIn
	pendingMMIORead
)

var _ hv.VCPU = (*VCPU)(nil)

// ID is the vCPU's index.
func (c *VCPU) ID() int { return c.id }

func (c *VCPU) tsc() uint64 { return hostTSC() + c.offset.Load() }

// wakeUp is the LAPIC's callback when something becomes deliverable: a
// running CPU polls for the interrupt within a few instructions (an NMI,
// INIT or SIPI, which the run loop takes, ends the run), a halted vCPU
// wakes.
func (c *VCPU) wakeUp() {
	if c.lapic.HasEvents() {
		c.cpu.Kick()
	} else {
		c.cpu.NotifyInterrupt()
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// SetImmediateExit makes Run return ErrInterrupted at once while on.
func (c *VCPU) SetImmediateExit(on bool) {
	c.immediate.Store(on)
}

// Kick makes Run return ErrInterrupted soon, and the next Run at once.
func (c *VCPU) Kick() {
	c.immediate.Store(true)
	c.wakeUp()
}

// complete finishes the IN or MMIO read of the last exit with the data the
// VMM left in the exit's buffer.
func (c *VCPU) complete() {
	switch c.pending {
	case pendingIn:
		c.cpu.CompleteIn(uint32(binary.LittleEndian.Uint64(c.ioBuf[:])))
	case pendingMMIORead:
		c.cpu.CompleteMMIORead(binary.LittleEndian.Uint64(c.ioBuf[:]))
	}
	c.pending = pendingNone
}

// Run runs the guest until an exit for the VMM.
func (c *VCPU) Run() (hv.Exit, error) {
	if c.pending != pendingNone {
		c.complete()
		// The completed instruction must run before anything else
		// (KVM completes it even with immediate_exit set).
		if ex := c.cpu.Step(); ex.Kind != cpu.ExitNone && ex.Kind != cpu.ExitBudget {
			if e, done := c.handle(ex); done {
				return e, nil
			}
		}
	}
	for {
		if c.immediate.Load() {
			return hv.ExitIntr, hv.ErrInterrupted
		}
		if !c.runnable() {
			c.sleep()
			continue
		}
		ex := c.cpu.Run(runBudget)
		if e, done := c.handle(ex); done {
			return e, nil
		}
	}
}

// runnable takes the LAPIC's INIT, SIPI and NMI and says whether the CPU
// may execute.
func (c *VCPU) runnable() bool {
	if c.lapic.TakeINIT() {
		c.cpu.Reset()
		c.mp = hv.MPStateInitReceived
	}
	if v, ok := c.lapic.TakeSIPI(); ok && c.mp == hv.MPStateInitReceived {
		c.cpu.StartupIPI(v)
		c.mp = hv.MPStateRunnable
	}
	switch c.mp {
	case hv.MPStateUninitialized, hv.MPStateInitReceived, hv.MPStateSIPIReceived:
		return false
	}
	if c.lapic.TakeNMI() {
		c.cpu.InjectNMI()
		c.mp = hv.MPStateRunnable
	}
	if c.mp == hv.MPStateHalted {
		if !c.lapic.Deliverable() || c.cpu.GetRegs().RFLAGS&(1<<9) == 0 {
			return false
		}
		c.mp = hv.MPStateRunnable
	}
	return true
}

// sleep waits for a wake-up: an interrupt, an IPI, a timer or a kick.
func (c *VCPU) sleep() {
	<-c.wake
}

// handle turns a CPU exit into an exit for the VMM (done) or goes on.
func (c *VCPU) handle(ex cpu.Exit) (hv.Exit, bool) {
	switch ex.Kind {
	case cpu.ExitNone, cpu.ExitBudget, cpu.ExitKicked:
		return 0, false
	case cpu.ExitHLT:
		c.mp = hv.MPStateHalted
		return 0, false
	case cpu.ExitIO:
		c.io = hv.IO{Out: ex.Write, Size: ex.Size, Port: ex.Port, Data: c.ioBuf[:ex.Size]}
		if ex.Write {
			binary.LittleEndian.PutUint64(c.ioBuf[:], ex.Data)
		} else {
			clear(c.ioBuf[:])
			c.pending = pendingIn
		}
		return hv.ExitIO, true
	case cpu.ExitMMIO:
		c.mmio = hv.MMIO{Addr: ex.Addr, Write: ex.Write, Data: c.ioBuf[:ex.Size]}
		if ex.Write {
			binary.LittleEndian.PutUint64(c.ioBuf[:], ex.Data)
		} else {
			clear(c.ioBuf[:])
			c.pending = pendingMMIORead
		}
		return hv.ExitMMIO, true
	case cpu.ExitShutdown:
		return hv.ExitShutdown, true
	case cpu.ExitInternalError:
		c.ierr = hv.InternalError{Suberror: hv.InternalErrorEmulation, Insn: ex.Insn, Reason: ex.Reason}
		return hv.ExitInternalError, true
	}
	c.ierr = hv.InternalError{Suberror: hv.InternalErrorEmulation, Insn: ex.Insn,
		Reason: fmt.Sprintf("unexpected software CPU exit %d (%s)", ex.Kind, ex.Reason)}
	return hv.ExitInternalError, true
}

// IO is the port I/O of the last ExitIO.
func (c *VCPU) IO() hv.IO { return c.io }

// MMIO is the access of the last ExitMMIO.
func (c *VCPU) MMIO() hv.MMIO { return c.mmio }

// InternalError is the last ExitInternalError.
func (c *VCPU) InternalError() hv.InternalError { return c.ierr }

// SystemEvent: the software CPU raises none (power-off and reset are ports
// the VMM serves).
func (c *VCPU) SystemEvent() uint32 { return 0 }

// GetRegs returns the general registers, RFLAGS materialised.
func (c *VCPU) GetRegs() (hv.Regs, error) { return c.cpu.GetRegs(), nil }

// SetRegs sets the general registers.
func (c *VCPU) SetRegs(r hv.Regs) error { c.cpu.SetRegs(r); return nil }

// GetSregs2 returns the segment and control registers, with the LAPIC's
// base and TPR as KVM reports them.
func (c *VCPU) GetSregs2() (hv.Sregs2, error) {
	s := c.cpu.GetSregs2()
	// The whole IA32_APIC_BASE, enable and BSP bits included, as KVM
	// reports apic_base: SetSregs2 writes it back.
	s.APICBase, _ = c.lapic.ReadMSR(msrAPICBase)
	s.CR8 = uint64(c.lapic.Read(0x80) >> 4) // TPR
	return s, nil
}

// SetSregs2 loads the segment and control registers.
func (c *VCPU) SetSregs2(s hv.Sregs2) error {
	if s.APICBase != 0 {
		if err := c.lapic.WriteMSR(msrAPICBase, s.APICBase); err != nil {
			return err
		}
	}
	return c.cpu.SetSregs2(s)
}

// GetCPUID2 returns the CPUID table.
func (c *VCPU) GetCPUID2() ([]hv.CPUIDEntry2, error) { return c.cpu.GetCPUID(), nil }

// SetCPUID2 sets the CPUID table; leaves the CPU does not implement are
// refused, as KVM refuses what it cannot support.
func (c *VCPU) SetCPUID2(ents []hv.CPUIDEntry2) error {
	if err := checkCPUID(ents); err != nil {
		return err
	}
	c.cpu.SetCPUID(ents)
	return nil
}

// GetMSRs reads the MSRs in order, stopping at the first unknown.
func (c *VCPU) GetMSRs(idx []uint32) ([]hv.MSREntry, error) {
	var out []hv.MSREntry
	for _, i := range idx {
		v, ok := (*platform)(c).ReadMSR(i)
		if !ok {
			got := c.cpu.GetMSRs([]uint32{i})
			if len(got) != 1 {
				return out, nil
			}
			v = got[0].Data
		}
		out = append(out, hv.MSREntry{Index: i, Data: v})
	}
	return out, nil
}

// SetMSRs writes the MSRs in order; an unknown one is an error.
func (c *VCPU) SetMSRs(ents []hv.MSREntry) error {
	for _, e := range ents {
		if !(*platform)(c).WriteMSR(e.Index, e.Data) {
			if c.cpu.SetMSRs([]hv.MSREntry{e}) != 1 {
				return fmt.Errorf("emu: vcpu %d: cannot set MSR %#x to %#x", c.id, e.Index, e.Data)
			}
		}
	}
	return nil
}

// GetLAPIC returns the LAPIC register page.
func (c *VCPU) GetLAPIC() (hv.LAPICState, error) { return c.lapic.Save(), nil }

// SetLAPIC loads the LAPIC register page.
func (c *VCPU) SetLAPIC(s hv.LAPICState) error { return c.lapic.Restore(&s) }

// GetMPState returns the vCPU's run state.
func (c *VCPU) GetMPState() (uint32, error) {
	c.runnable() // accept pending INIT/SIPI first, as KVM does
	return c.mp, nil
}

// SetMPState sets the vCPU's run state.
func (c *VCPU) SetMPState(s uint32) error {
	if s > hv.MPStateSIPIReceived {
		return fmt.Errorf("emu: vcpu %d: MP state %d unknown", c.id, s)
	}
	c.mp = s
	return nil
}

// GetXSAVE returns the x87, MMX and SSE state as a standard-format XSAVE
// area (KVM_GET_XSAVE's layout), zero-padded to size (at least XSAVESize).
func (c *VCPU) GetXSAVE(size int) ([]byte, error) {
	b := make([]byte, max(size, XSAVESize))
	copy(b, c.cpu.XSAVE())
	return b, nil
}

// SetXSAVE loads a standard-format XSAVE area; it refuses state the
// software CPU lacks (components beyond x87 and SSE, compaction).
func (c *VCPU) SetXSAVE(b []byte) error {
	if err := c.cpu.SetXSAVE(b); err != nil {
		return fmt.Errorf("emu: vcpu %d: %w", c.id, err)
	}
	return nil
}

// GetXCRs returns XCR0 (struct kvm_xcrs).
func (c *VCPU) GetXCRs() (hv.XCRs, error) {
	var x hv.XCRs
	binary.LittleEndian.PutUint32(x[0:], 1) // nr_xcrs
	binary.LittleEndian.PutUint64(x[16:], c.cpu.XCR0())
	return x, nil
}

// SetXCRs sets XCR0, which may enable x87 and SSE only.
func (c *VCPU) SetXCRs(x hv.XCRs) error {
	n := binary.LittleEndian.Uint32(x[0:])
	for i := range min(n, 16) {
		xcr := binary.LittleEndian.Uint32(x[8+16*i:])
		val := binary.LittleEndian.Uint64(x[16+16*i:])
		if xcr != 0 {
			return fmt.Errorf("emu: vcpu %d: XCR%d does not exist", c.id, xcr)
		}
		if err := c.cpu.SetXCR0(val); err != nil {
			return fmt.Errorf("emu: vcpu %d: %w", c.id, err)
		}
	}
	return nil
}

// GetDebugRegs returns the debug registers (struct kvm_debugregs).
func (c *VCPU) GetDebugRegs() (hv.DebugRegs, error) { return c.cpu.GetDebugRegs(), nil }

// SetDebugRegs loads them.
func (c *VCPU) SetDebugRegs(d hv.DebugRegs) error { c.cpu.SetDebugRegs(d); return nil }

// GetVCPUEvents returns pending events (struct kvm_vcpu_events).
func (c *VCPU) GetVCPUEvents() (hv.VCPUEvents, error) { return c.cpu.GetEvents(), nil }

// SetVCPUEvents loads them.
func (c *VCPU) SetVCPUEvents(e hv.VCPUEvents) error { c.cpu.SetEvents(e); return nil }

// TSCKHz is the fixed TSC frequency.
func (c *VCPU) TSCKHz() (uint32, error) { return TSCKHz, nil }

// TSCOffset is the vCPU's TSC minus the host's, in TSC ticks.
func (c *VCPU) TSCOffset() (uint64, error) { return c.offset.Load(), nil }

// SetTSCOffset sets it.
func (c *VCPU) SetTSCOffset(off uint64) error { c.offset.Store(off); return nil }

// ClockCtrl: no paravirtual clock.
func (c *VCPU) ClockCtrl() error { return nil }

// Close releases the vCPU.
func (c *VCPU) Close() error { return nil }

// platform is the VCPU as the CPU's Platform: ports, MMIO, interrupts and
// MSRs that the chipset serves, the rest to the VMM.
type platform VCPU

func (p *platform) In(port uint16, size int) (uint32, bool) {
	return p.vm.chips.PortIn(port, size)
}

func (p *platform) Out(port uint16, size int, val uint32) bool {
	return !p.vm.chips.PortOut(port, size, val)
}

func (p *platform) MMIORead(gpa uint64, size int) (uint64, bool) {
	if isChipset(gpa) {
		return p.vm.chips.MMIORead(p.id, gpa, size)
	}
	return 0, false
}

func (p *platform) MMIOWrite(gpa uint64, size int, val uint64) bool {
	if isChipset(gpa) {
		p.vm.chips.MMIOWrite(p.id, gpa, size, val)
		return false
	}
	return true
}

func isChipset(gpa uint64) bool {
	return gpa-lapicBase < pageSize || gpa-ioapicBase < pageSize
}

func (p *platform) PendingInterrupt() (uint8, bool) { return p.vm.chips.PendingInterrupt(p.id) }

func (p *platform) ReadMSR(idx uint32) (uint64, bool) {
	c := (*VCPU)(p)
	switch idx {
	case msrTSC:
		return c.tsc(), true
	case msrAPICBase, msrTSCDeadline:
		return c.lapic.ReadMSR(idx)
	}
	return 0, false
}

func (p *platform) WriteMSR(idx uint32, val uint64) bool {
	c := (*VCPU)(p)
	switch idx {
	case msrTSC:
		c.offset.Store(val - hostTSC())
		return true
	case msrAPICBase, msrTSCDeadline:
		return c.lapic.WriteMSR(idx, val) == nil
	}
	return false
}

func (p *platform) TSC() uint64 { return (*VCPU)(p).tsc() }
