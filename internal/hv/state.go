package hv

// The state of a vCPU and of the VM-level devices, in the layouts of
// <linux/kvm.h> and <asm/kvm.h> for x86-64. Every backend speaks them, so
// one migration stream serves KVM and the software CPU alike.

// Regs is struct kvm_regs.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable.
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs.
type Sregs struct {
	CS, DS, ES, FS, GS, SS  Segment
	TR, LDT                 Segment
	GDT, IDT                DTable
	CR0, CR2, CR3, CR4, CR8 uint64
	EFER                    uint64
	APICBase                uint64
	InterruptBitmap         [4]uint64
}

// Sregs2 is struct kvm_sregs2: kvm_sregs without the interrupt bitmap but
// with the PAE page-directory pointers, which plain SREGS loses.
type Sregs2 struct {
	CS, DS, ES, FS, GS, SS  Segment
	TR, LDT                 Segment
	GDT, IDT                DTable
	CR0, CR2, CR3, CR4, CR8 uint64
	EFER                    uint64
	APICBase                uint64
	Flags                   uint64
	PDPTRs                  [4]uint64
}

// ClockData is struct kvm_clock_data.
type ClockData struct {
	Clock    uint64
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}

// PITState2 is struct kvm_pit_state2, kept opaque.
type PITState2 [112]byte

// IRQChip is struct kvm_irqchip: the chip id then 512 bytes of chip state.
type IRQChip struct {
	ChipID uint32
	_      uint32
	Chip   [512]byte
}

// LAPICState is struct kvm_lapic_state: the APIC register page.
type LAPICState [1024]byte

// XCRs is struct kvm_xcrs, kept opaque.
type XCRs [392]byte

// DebugRegs is struct kvm_debugregs, kept opaque.
type DebugRegs [128]byte

// VCPUEvents is struct kvm_vcpu_events, kept opaque.
type VCPUEvents [64]byte

// MSREntry is struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// CPUIDEntry2 is struct kvm_cpuid_entry2.
type CPUIDEntry2 struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// Multiprocessor states (struct kvm_mp_state).
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSIPIReceived  = 4
)

// Interrupt-controller chip ids of IRQChip.ChipID (KVM_IRQCHIP_*).
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// ClockData.Flags bits (KVM_CLOCK_*).
const (
	ClockTSCStable = 1 << 1
	ClockRealtime  = 1 << 2
	ClockHostTSC   = 1 << 3
)
