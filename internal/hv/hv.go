package hv

import "errors"

// Hypervisor is an accelerator on this host: KVM or the software CPU. It
// creates VMs and says what their vCPUs can offer a guest.
type Hypervisor interface {
	// Name is "kvm" or "emu".
	Name() string
	// SupportedCPUID is every CPUID leaf a vCPU of this backend can
	// present, before per-vCPU patching (APIC IDs).
	SupportedCPUID() ([]CPUIDEntry2, error)
	// MSRIndexList is the MSRs the backend saves and restores.
	MSRIndexList() ([]uint32, error)
	// CreateVM makes a VM for vcpus vCPUs with its interrupt
	// controllers and PIT, as KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2 do,
	// and no memory.
	CreateVM(vcpus int) (VM, error)
	// Close releases the hypervisor handle; VMs it made stay valid.
	Close() error
}

// VM is one virtual machine of a backend.
type VM interface {
	// SetMemoryRegion maps host (page-aligned, outside the Go heap) at
	// guest-physical gpa as RAM slot slot.
	SetMemoryRegion(slot uint32, gpa uint64, host []byte) error
	// CreateVCPU creates vCPU id. It must be called on the OS thread
	// that will run the vCPU, locked for the vCPU's life.
	CreateVCPU(id int) (VCPU, error)
	// IRQ returns an edge-triggered line for GSI gsi that devices may
	// trigger from any goroutine.
	IRQ(gsi uint32) (IRQ, error)
	// XSAVESize is the size of a vCPU's XSAVE area in the state.
	XSAVESize() int

	GetPIT2() (PITState2, error)
	SetPIT2(PITState2) error
	GetIRQChip(chip uint32) (IRQChip, error)
	SetIRQChip(IRQChip) error
	GetClock() (ClockData, error)
	SetClock(ClockData) error

	// StartDirtyLog turns on dirty logging for every slot, with every
	// page marked dirty (KVM's MANUAL_DIRTY_LOG_PROTECT2 with
	// INITIALLY_SET).
	StartDirtyLog() error
	StopDirtyLog() error
	// GetDirtyLog copies slot's dirty bits into bitmap (one bit a 4 KiB
	// page). Reading does not clear.
	GetDirtyLog(slot uint32, bitmap []uint64) error
	// ClearDirtyLog clears the bits set in bitmap for the numPages pages
	// from firstPage (a multiple of 64). Once it returns, a guest write to
	// any of those pages marks it again: the caller may read them.
	ClearDirtyLog(slot uint32, firstPage uint64, numPages uint32, bitmap []uint64) error

	// Close releases the VM once its vCPUs are closed.
	Close() error
}

// IRQ is an edge-triggered interrupt line.
type IRQ interface {
	Trigger() error
	Close() error
}

// Exit is why VCPU.Run returned to the VMM.
type Exit int

// Exit reasons, as KVM's exits to userspace.
const (
	ExitUnknown       Exit = iota
	ExitIO                 // port I/O for the VMM: VCPU.IO; an IN completes on the next Run
	ExitMMIO               // MMIO for the VMM: VCPU.MMIO; a read completes on the next Run
	ExitHLT                // the vCPU halted with no interrupt controller to wait on
	ExitIntr               // a signal or a kick interrupted the run
	ExitIRQWindow          // an interrupt window opened
	ExitShutdown           // triple fault
	ExitSystemEvent        // VCPU.SystemEvent: power-off or reset
	ExitInternalError      // VCPU.InternalError: the backend could not run the instruction
	ExitFailEntry          // the backend could not enter the guest
)

// System events of ExitSystemEvent (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
)

// ErrInterrupted is returned by VCPU.Run when a kick (or a signal) ended
// the run before any exit: the VMM checks its requests and runs again.
var ErrInterrupted = errors.New("hv: vcpu run interrupted")

// IO describes an ExitIO: Data holds count × Size bytes, to be filled for
// an IN (before the next Run) or read for an OUT.
type IO struct {
	Out  bool
	Size int
	Port uint16
	Data []byte
}

// MMIO describes an ExitMMIO: Data (1–8 bytes) is to be filled for a read
// or read for a write.
type MMIO struct {
	Addr  uint64
	Write bool
	Data  []byte
}

// InternalError describes an ExitInternalError.
type InternalError struct {
	Suberror uint32 // KVM_INTERNAL_ERROR_* (1: emulation failed)
	Insn     []byte // the instruction's bytes, when known
	Data     []uint64
	Reason   string // the backend's own words, when it has them
}

// Internal-error suberrors (KVM_INTERNAL_ERROR_*).
const (
	InternalErrorEmulation  = 1
	InternalErrorSimulEx    = 2
	InternalErrorDeliveryEv = 3
)

// VCPU is one virtual CPU. Every method but Kick must be called on the OS
// thread that created it.
type VCPU interface {
	ID() int
	// Run runs the guest until an exit for the VMM. A kick makes it
	// return ErrInterrupted (after completing a pending I/O instruction).
	Run() (Exit, error)
	// SetImmediateExit makes Run return ErrInterrupted at once, after
	// completing any pending I/O instruction, while on. Any thread.
	SetImmediateExit(on bool)
	// Kick makes a running Run return soon (ErrInterrupted); with
	// SetImmediateExit(true) first, the next Run too. Any thread.
	Kick()
	IO() IO
	MMIO() MMIO
	InternalError() InternalError
	SystemEvent() uint32

	GetRegs() (Regs, error)
	SetRegs(Regs) error
	GetSregs2() (Sregs2, error)
	SetSregs2(Sregs2) error
	GetCPUID2() ([]CPUIDEntry2, error)
	SetCPUID2([]CPUIDEntry2) error
	// GetMSRs reads the MSRs in order, stopping at the first it cannot.
	GetMSRs(indices []uint32) ([]MSREntry, error)
	SetMSRs([]MSREntry) error
	GetLAPIC() (LAPICState, error)
	SetLAPIC(LAPICState) error
	GetMPState() (uint32, error)
	SetMPState(uint32) error
	GetXSAVE(size int) ([]byte, error)
	SetXSAVE([]byte) error
	GetXCRs() (XCRs, error)
	SetXCRs(XCRs) error
	GetDebugRegs() (DebugRegs, error)
	SetDebugRegs(DebugRegs) error
	GetVCPUEvents() (VCPUEvents, error)
	SetVCPUEvents(VCPUEvents) error
	TSCKHz() (uint32, error)
	TSCOffset() (uint64, error)
	SetTSCOffset(uint64) error
	// ClockCtrl tells the guest's paravirtual clock that the vCPU was
	// paused (KVM_KVMCLOCK_CTRL); backends without one do nothing.
	ClockCtrl() error

	Close() error
}
