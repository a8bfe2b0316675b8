//go:build linux && amd64

package kvm

import "github.com/godwit-vmm/godwit/internal/hv"

// ABI of /dev/kvm for x86-64, named as in <linux/kvm.h> and
// <asm/kvm.h>. golang.org/x/sys/unix carries none of it. abi_test.go checks
// every ioctl number against the _IOC encoding and every struct size against
// the kernel's.

// System ioctls.
const (
	KVM_GET_API_VERSION       = 0xAE00
	KVM_CREATE_VM             = 0xAE01
	KVM_GET_MSR_INDEX_LIST    = 0xC004AE02
	KVM_CHECK_EXTENSION       = 0xAE03
	KVM_GET_VCPU_MMAP_SIZE    = 0xAE04
	KVM_GET_SUPPORTED_CPUID   = 0xC008AE05
	KVM_GET_MSR_FEATURE_INDEX = 0xC004AE0A
)

// VM ioctls.
const (
	KVM_CREATE_VCPU            = 0xAE41
	KVM_GET_DIRTY_LOG          = 0x4010AE42
	KVM_SET_USER_MEMORY_REGION = 0x4020AE46
	KVM_SET_TSS_ADDR           = 0xAE47
	KVM_SET_IDENTITY_MAP_ADDR  = 0x4008AE48
	KVM_CREATE_IRQCHIP         = 0xAE60
	KVM_IRQ_LINE               = 0x4008AE61
	KVM_GET_IRQCHIP            = 0xC208AE62
	KVM_SET_IRQCHIP            = 0x8208AE63 // _IOR for historical reasons
	KVM_IRQFD                  = 0x4020AE76
	KVM_CREATE_PIT2            = 0x4040AE77
	KVM_IOEVENTFD              = 0x4040AE79
	KVM_SET_CLOCK              = 0x4030AE7B
	KVM_GET_CLOCK              = 0x8030AE7C
	KVM_GET_PIT2               = 0x8070AE9F
	KVM_SET_PIT2               = 0x4070AEA0
	KVM_ENABLE_CAP             = 0x4068AEA3
	KVM_CLEAR_DIRTY_LOG        = 0xC018AEC0
)

// vCPU ioctls.
const (
	KVM_RUN             = 0xAE80
	KVM_GET_REGS        = 0x8090AE81
	KVM_SET_REGS        = 0x4090AE82
	KVM_GET_SREGS       = 0x8138AE83
	KVM_SET_SREGS       = 0x4138AE84
	KVM_GET_MSRS        = 0xC008AE88
	KVM_SET_MSRS        = 0x4008AE89
	KVM_SET_CPUID2      = 0x4008AE90
	KVM_GET_CPUID2      = 0xC008AE91
	KVM_GET_LAPIC       = 0x8400AE8E
	KVM_SET_LAPIC       = 0x4400AE8F
	KVM_GET_MP_STATE    = 0x8004AE98
	KVM_SET_MP_STATE    = 0x4004AE99
	KVM_GET_VCPU_EVENTS = 0x8040AE9F
	KVM_SET_VCPU_EVENTS = 0x4040AEA0
	KVM_GET_DEBUGREGS   = 0x8080AEA1
	KVM_SET_DEBUGREGS   = 0x4080AEA2
	KVM_GET_TSC_KHZ     = 0xAEA3
	KVM_SET_XSAVE       = 0x5000AEA5
	KVM_GET_XCRS        = 0x8188AEA6
	KVM_SET_XCRS        = 0x4188AEA7
	KVM_KVMCLOCK_CTRL   = 0xAEAD
	KVM_GET_SREGS2      = 0x8140AECC
	KVM_SET_SREGS2      = 0x4140AECD
	KVM_GET_XSAVE2      = 0x9000AECF
	KVM_SET_DEVICE_ATTR = 0x4018AEE1
	KVM_GET_DEVICE_ATTR = 0x4018AEE2
	KVM_HAS_DEVICE_ATTR = 0x4018AEE3
)

// Capabilities (KVM_CHECK_EXTENSION arguments).
const (
	KVM_CAP_IRQCHIP                   = 0
	KVM_CAP_USER_MEMORY               = 3
	KVM_CAP_NR_MEMSLOTS               = 10
	KVM_CAP_PIT2                      = 33
	KVM_CAP_IRQFD                     = 32
	KVM_CAP_IOEVENTFD                 = 36
	KVM_CAP_ADJUST_CLOCK              = 39
	KVM_CAP_XSAVE                     = 55
	KVM_CAP_XCRS                      = 56
	KVM_CAP_TSC_CONTROL               = 60
	KVM_CAP_GET_TSC_KHZ               = 61
	KVM_CAP_KVMCLOCK_CTRL             = 76
	KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
	KVM_CAP_EXIT_ON_EMULATION_FAILURE = 204
	KVM_CAP_XSAVE2                    = 208
	KVM_CAP_SREGS2                    = 200
	KVM_CAP_VCPU_ATTRIBUTES           = 202
)

// KVM_RUN exit reasons.
const (
	KVM_EXIT_UNKNOWN         = 0
	KVM_EXIT_EXCEPTION       = 1
	KVM_EXIT_IO              = 2
	KVM_EXIT_HYPERCALL       = 3
	KVM_EXIT_DEBUG           = 4
	KVM_EXIT_HLT             = 5
	KVM_EXIT_MMIO            = 6
	KVM_EXIT_IRQ_WINDOW_OPEN = 7
	KVM_EXIT_SHUTDOWN        = 8
	KVM_EXIT_FAIL_ENTRY      = 9
	KVM_EXIT_INTR            = 10
	KVM_EXIT_SET_TPR         = 11
	KVM_EXIT_TPR_ACCESS      = 12
	KVM_EXIT_NMI             = 16
	KVM_EXIT_INTERNAL_ERROR  = 17
	KVM_EXIT_SYSTEM_EVENT    = 24
)

// Exit details.
const (
	KVM_EXIT_IO_IN  = 0
	KVM_EXIT_IO_OUT = 1

	KVM_INTERNAL_ERROR_EMULATION                        = 1
	KVM_INTERNAL_ERROR_SIMUL_EX                         = 2
	KVM_INTERNAL_ERROR_DELIVERY_EV                      = 3
	KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1

	KVM_SYSTEM_EVENT_SHUTDOWN = 1
	KVM_SYSTEM_EVENT_RESET    = 2
	KVM_SYSTEM_EVENT_CRASH    = 3
)

// Flags and constants for VM objects.
const (
	KVM_MEM_LOG_DIRTY_PAGES = 1 << 0

	KVM_PIT_SPEAKER_DUMMY = 1

	KVM_IRQCHIP_PIC_MASTER = 0
	KVM_IRQCHIP_PIC_SLAVE  = 1
	KVM_IRQCHIP_IOAPIC     = 2

	KVM_IRQFD_FLAG_DEASSIGN = 1 << 0

	KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
	KVM_IOEVENTFD_FLAG_PIO       = 1 << 1
	KVM_IOEVENTFD_FLAG_DEASSIGN  = 1 << 2

	KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0
	KVM_DIRTY_LOG_INITIALLY_SET         = 1 << 1

	KVM_CLOCK_TSC_STABLE = 2
	KVM_CLOCK_REALTIME   = 1 << 2
	KVM_CLOCK_HOST_TSC   = 1 << 3

	KVM_VCPU_TSC_CTRL   = 0 // device attribute group
	KVM_VCPU_TSC_OFFSET = 0 // attribute in KVM_VCPU_TSC_CTRL

	KVM_MP_STATE_RUNNABLE      = 0
	KVM_MP_STATE_UNINITIALIZED = 1
	KVM_MP_STATE_INIT_RECEIVED = 2
	KVM_MP_STATE_HALTED        = 3
	KVM_MP_STATE_SIPI_RECEIVED = 4
)

// Regs is hv.Regs (the state types live in the hypervisor seam).
type Regs = hv.Regs

// Segment is hv.Segment (the state types live in the hypervisor seam).
type Segment = hv.Segment

// DTable is hv.DTable (the state types live in the hypervisor seam).
type DTable = hv.DTable

// Sregs is hv.Sregs (the state types live in the hypervisor seam).
type Sregs = hv.Sregs

// Sregs2 is hv.Sregs2 (the state types live in the hypervisor seam).
type Sregs2 = hv.Sregs2

// UserspaceMemoryRegion is struct kvm_userspace_memory_region.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// PITConfig is struct kvm_pit_config.
type PITConfig struct {
	Flags uint32
	_     [15]uint32
}

// IRQFD is struct kvm_irqfd.
type IRQFD struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8
}

// IOEventFD is struct kvm_ioeventfd.
type IOEventFD struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]uint8
}

// IRQLevel is struct kvm_irq_level.
type IRQLevel struct {
	IRQ   uint32
	Level uint32
}

// EnableCap is struct kvm_enable_cap.
type EnableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	_     [64]uint8
}

// DirtyLog is struct kvm_dirty_log.
type DirtyLog struct {
	Slot   uint32
	_      uint32
	Bitmap uint64 // user pointer
}

// ClearDirtyLog is struct kvm_clear_dirty_log.
type ClearDirtyLog struct {
	Slot      uint32
	NumPages  uint32
	FirstPage uint64
	Bitmap    uint64 // user pointer
}

// ClockData is hv.ClockData (the state types live in the hypervisor seam).
type ClockData = hv.ClockData

// PITState2 is hv.PITState2 (the state types live in the hypervisor seam).
type PITState2 = hv.PITState2

// IRQChip is hv.IRQChip (the state types live in the hypervisor seam).
type IRQChip = hv.IRQChip

// LAPICState is hv.LAPICState (the state types live in the hypervisor seam).
type LAPICState = hv.LAPICState

// XCRs is hv.XCRs (the state types live in the hypervisor seam).
type XCRs = hv.XCRs

// DebugRegs is hv.DebugRegs (the state types live in the hypervisor seam).
type DebugRegs = hv.DebugRegs

// VCPUEvents is hv.VCPUEvents (the state types live in the hypervisor seam).
type VCPUEvents = hv.VCPUEvents

// DeviceAttr is struct kvm_device_attr.
type DeviceAttr struct {
	Flags uint32
	Group uint32
	Attr  uint64
	Addr  uint64 // user pointer
}

// MSREntry is hv.MSREntry (the state types live in the hypervisor seam).
type MSREntry = hv.MSREntry

// CPUIDEntry2 is hv.CPUIDEntry2 (the state types live in the hypervisor seam).
type CPUIDEntry2 = hv.CPUIDEntry2

// runHeader is the fixed start of struct kvm_run, up to the exit union at
// offset 32.
type runHeader struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	_                          [6]uint8
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IFFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
}

// runIO is the io member of the kvm_run exit union.
type runIO struct {
	Direction  uint8
	Size       uint8
	Port       uint16
	Count      uint32
	DataOffset uint64
}

// runMMIO is the mmio member of the kvm_run exit union.
type runMMIO struct {
	PhysAddr uint64
	Data     [8]uint8
	Len      uint32
	IsWrite  uint8
}

// runInternal is the internal/emulation_failure member of the exit union.
type runInternal struct {
	Suberror uint32
	NData    uint32
	Flags    uint64 // emulation_failure.flags, data[0]
	InsnSize uint8
	Insn     [15]uint8
}

// runSystemEvent is the system_event member of the exit union.
type runSystemEvent struct {
	Type  uint32
	NData uint32
	Data  [16]uint64
}

// runUnionOffset is where the exit union starts in struct kvm_run.
const runUnionOffset = 32
