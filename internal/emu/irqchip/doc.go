// Package irqchip is the platform of Godwit's software x86-64 vCPU backend:
// the local APICs, the IOAPIC, the two 8259 PICs and the 8254 PIT, wired as
// KVM's in-kernel irqchip wires them after KVM_CREATE_IRQCHIP with the
// default GSI routes (GSI n<16 to PIC pin n and IOAPIC pin n, GSI 16..23 to
// the IOAPIC only).
//
// The package knows nothing about the CPU interpreter. The backend glues
// the two: it routes port I/O and MMIO accesses here (Chipset.PortIn,
// PortOut, MMIORead, MMIOWrite), asks for an interrupt at an instruction
// boundary when RFLAGS.IF=1 (Chipset.PendingInterrupt), takes latched NMI,
// INIT and SIPI events from the vCPU's LAPIC (TakeNMI, TakeINIT, TakeSIPI),
// and gives each vCPU a wake callback that is called whenever something
// becomes deliverable to it. A halted vCPU resumes when LAPIC.Deliverable
// (with IF=1) or LAPIC.HasEvents reports true; on INIT the backend calls
// LAPIC.Reset. The APIC base and TSC-deadline MSRs go through
// LAPIC.ReadMSR and WriteMSR (x2APIC is not supported).
//
// # Time
//
// Every timer runs against a guest clock (Clock) that stands still while
// the VM is paused, and is scheduled through a Scheduler. RealClock is the
// production implementation (host CLOCK_MONOTONIC minus paused time);
// FakeClock fires timers deterministically for tests. The LAPIC timer runs
// on KVM's 1 GHz APIC bus: a count of n with divide-by-d lasts n*d ns.
//
// # State
//
// Each device saves and restores its state in KVM's layouts (hv.LAPICState,
// hv.IRQChip with struct kvm_pic_state or struct kvm_ioapic_state,
// hv.PITState2), so one migration format serves both backends:
//
//	kvm_pic_state (16 bytes at IRQChip.Chip[0:16]):
//	  last_irr irr imr isr priority_add irq_base read_reg_select poll
//	  special_mask init_state auto_eoi rotate_on_auto_eoi
//	  special_fully_nested_mode init4 elcr elcr_mask          (u8 each)
//	kvm_ioapic_state (216 bytes at IRQChip.Chip[0:216]):
//	  base_address u64 | ioregsel u32 | id u32 | irr u32 | pad u32 |
//	  redirtbl[24] u64
//	kvm_pit_state2 (112 bytes):
//	  channels[3] of 24 bytes: count u32 | latched_count u16 |
//	    count_latched u8 | status_latched u8 | status u8 | read_state u8 |
//	    write_state u8 | write_latch u8 | rw_mode u8 | mode u8 | bcd u8 |
//	    gate u8 | count_load_time s64
//	  flags u32 | reserved[9] u32
//
// All integers are little-endian. Two differences from KVM: the PIT's
// count_load_time is in guest-clock ns (KVM stores host ktime), so the
// guest clock must travel with the VM (RealClock.Set); and the LAPIC page
// carries the current count in TMCCT (as KVM writes it at KVM_GET_LAPIC),
// from which Restore restarts the timer, so a migration does not delay the
// guest's next tick. Decoders clamp out-of-range values and never panic.
//
// # Concurrency and lock order
//
// Everything is safe for concurrent use: each vCPU calls its LAPIC from its
// own goroutine, devices raise lines from theirs, timers fire from the
// clock's. Each device has one mutex; when two are held, the IOAPIC's is
// taken before a LAPIC's (delivery), and the clock's innermost. A LAPIC
// calls out (IPIs, the EOI broadcast to the IOAPIC, the PIC for ExtINT,
// wake callbacks) only after releasing its own lock; the PIT and the PIC
// call their IRQ and INTR callbacks without their locks. Wake callbacks
// may run with the IOAPIC's lock held, so they must only kick the vCPU.
//
// Who may import: the software backend (internal/emu and below). The
// package imports only the standard library and internal/hv.
package irqchip
