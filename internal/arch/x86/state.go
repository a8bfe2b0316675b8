package x86

import (
	"errors"
	"fmt"
	"slices"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// MSR numbers the VMM treats specially.
const (
	MSR_IA32_TSC               = 0x10
	MSR_IA32_ARCH_CAPABILITIES = 0x10a
	MSR_IA32_TSC_DEADLINE      = 0x6e0
	MSR_TSC_AUX                = 0xc0000103
	MSR_MTRRcap                = 0xfe
	MSR_MTRRdefType            = 0x2ff
)

// extraMSRs are MSRs that KVM's index list omits but that hold guest state:
// the variable and fixed MTRRs and TSC_AUX.
func extraMSRs() []uint32 {
	m := []uint32{MSR_MTRRdefType, 0x250, 0x258, 0x259, MSR_TSC_AUX}
	for i := uint32(0x200); i <= 0x20f; i++ {
		m = append(m, i)
	}
	for i := uint32(0x268); i <= 0x26f; i++ {
		m = append(m, i)
	}
	return m
}

// ProbeMSRs returns the MSRs to save for this VM: the backend's index list
// (list) plus the extras, minus those the backend cannot read one by one (and minus
// IA32_ARCH_CAPABILITIES, which some KVMs cannot set), ordered so that
// IA32_TSC comes before TSC_DEADLINE and TSC_DEADLINE comes last.
func ProbeMSRs(list []uint32, cpu hv.VCPU) ([]uint32, error) {
	cand := append(slices.Clone(list), extraMSRs()...)
	slices.Sort(cand)
	cand = slices.Compact(cand)
	var ok []uint32
	hasDeadline := false
	for _, idx := range cand {
		if idx == MSR_IA32_ARCH_CAPABILITIES {
			continue
		}
		got, err := cpu.GetMSRs([]uint32{idx})
		if err != nil || len(got) != 1 {
			continue
		}
		if idx == MSR_IA32_TSC_DEADLINE {
			hasDeadline = true
			continue
		}
		ok = append(ok, idx)
	}
	if hasDeadline {
		ok = append(ok, MSR_IA32_TSC_DEADLINE)
	}
	return ok, nil
}

// VCPUStateVersion is the version of VCPUState's encoding.
const VCPUStateVersion = 1

// VCPUState is everything KVM holds for one vCPU, in the order it is saved
// and sent. Kernel structs are kept as the kernel lays them out; source and
// destination run the same KVM ABI.
type VCPUState struct {
	Version   int
	ID        int
	MPState   uint32
	Regs      hv.Regs
	Sregs     hv.Sregs2
	XSAVE     []byte
	XCRs      hv.XCRs
	DebugRegs hv.DebugRegs
	LAPIC     hv.LAPICState
	TSCKHz    uint32
	TSCOffset uint64
	CPUID     []hv.CPUIDEntry2
	MSRs      []hv.MSREntry
	Events    hv.VCPUEvents
}

// SaveVCPU reads the state of a vCPU that is out of KVM_RUN (and, if its
// last exit was I/O, has been run once more with immediate_exit so the
// instruction completed). xsaveSize is KVM_CAP_XSAVE2's answer; msrs is the
// list from ProbeMSRs.
func SaveVCPU(cpu hv.VCPU, xsaveSize int, msrs []uint32) (*VCPUState, error) {
	s := &VCPUState{Version: VCPUStateVersion, ID: cpu.ID()}
	var err error
	// MP state first: reading it runs kvm_apic_accept_events, which can
	// change the rest.
	if s.MPState, err = cpu.GetMPState(); err != nil {
		return nil, err
	}
	if s.Regs, err = cpu.GetRegs(); err != nil {
		return nil, err
	}
	if s.Sregs, err = cpu.GetSregs2(); err != nil {
		return nil, err
	}
	if s.XSAVE, err = cpu.GetXSAVE(xsaveSize); err != nil {
		return nil, err
	}
	if s.XCRs, err = cpu.GetXCRs(); err != nil {
		return nil, err
	}
	if s.DebugRegs, err = cpu.GetDebugRegs(); err != nil {
		return nil, err
	}
	if s.LAPIC, err = cpu.GetLAPIC(); err != nil {
		return nil, err
	}
	if s.TSCKHz, err = cpu.TSCKHz(); err != nil {
		return nil, err
	}
	if s.TSCOffset, err = cpu.TSCOffset(); err != nil {
		return nil, err
	}
	if s.CPUID, err = cpu.GetCPUID2(); err != nil {
		return nil, err
	}
	if s.MSRs, err = cpu.GetMSRs(msrs); err != nil {
		return nil, err
	}
	if len(s.MSRs) != len(msrs) {
		return nil, fmt.Errorf("x86: vcpu %d: KVM read %d of %d MSRs, stopping at %#x", cpu.ID(), len(s.MSRs), len(msrs), msrs[len(s.MSRs)])
	}
	// Events last: the reads above do not change them, and they carry
	// what is pending at this very point.
	if s.Events, err = cpu.GetVCPUEvents(); err != nil {
		return nil, err
	}
	return s, nil
}

// RestoreVCPU loads s into a freshly created vCPU, in the order KVM needs:
// CPUID before anything that depends on it, SREGS before the LAPIC, the
// LAPIC before the MSRs (TSC_DEADLINE is relative to the LAPIC timer mode),
// events last. The TSC offset is set separately (see SetTSCOffsets), since
// it must be adjusted for the time the VM was paused.
func RestoreVCPU(cpu hv.VCPU, s *VCPUState) error {
	if s.Version != VCPUStateVersion {
		return fmt.Errorf("x86: vcpu %d state version %d, this VMM reads %d", s.ID, s.Version, VCPUStateVersion)
	}
	if s.ID != cpu.ID() {
		return fmt.Errorf("x86: state of vcpu %d offered to vcpu %d", s.ID, cpu.ID())
	}
	steps := []struct {
		what string
		fn   func() error
	}{
		{"cpuid", func() error { return cpu.SetCPUID2(s.CPUID) }},
		{"mp state", func() error { return cpu.SetMPState(s.MPState) }},
		{"regs", func() error { return cpu.SetRegs(s.Regs) }},
		{"sregs", func() error { return cpu.SetSregs2(s.Sregs) }},
		{"xsave", func() error { return cpu.SetXSAVE(s.XSAVE) }},
		{"xcrs", func() error { return cpu.SetXCRs(s.XCRs) }},
		{"debug regs", func() error { return cpu.SetDebugRegs(s.DebugRegs) }},
		{"lapic", func() error { return cpu.SetLAPIC(s.LAPIC) }},
		{"msrs", func() error { return cpu.SetMSRs(s.MSRs) }},
		{"events", func() error { return cpu.SetVCPUEvents(s.Events) }},
	}
	for _, st := range steps {
		if err := st.fn(); err != nil {
			return fmt.Errorf("x86: restore vcpu %d %s: %w", s.ID, st.what, err)
		}
	}
	return nil
}

// VMStateVersion is the version of VMState's encoding.
const VMStateVersion = 1

// VMState is the VM-wide KVM state: PIT, PICs, IOAPIC and kvmclock.
type VMState struct {
	Version int
	PIT     hv.PITState2
	PICs    [2]hv.IRQChip
	IOAPIC  hv.IRQChip
	Clock   hv.ClockData
}

// SaveVM reads the VM-wide state after every vCPU is saved.
func SaveVM(vm hv.VM) (*VMState, error) {
	s := &VMState{Version: VMStateVersion}
	var err error
	if s.PIT, err = vm.GetPIT2(); err != nil {
		return nil, err
	}
	for i := range s.PICs {
		if s.PICs[i], err = vm.GetIRQChip(uint32(hv.IRQChipPICMaster + i)); err != nil {
			return nil, err
		}
	}
	if s.IOAPIC, err = vm.GetIRQChip(hv.IRQChipIOAPIC); err != nil {
		return nil, err
	}
	if s.Clock, err = vm.GetClock(); err != nil {
		return nil, err
	}
	return s, nil
}

// RestoreVM loads PIT and interrupt controllers (the clock is restored with
// the TSC offsets, see RestoreClock).
func RestoreVM(vm hv.VM, s *VMState) error {
	if s.Version != VMStateVersion {
		return fmt.Errorf("x86: vm state version %d, this VMM reads %d", s.Version, VMStateVersion)
	}
	if err := vm.SetPIT2(s.PIT); err != nil {
		return err
	}
	for _, c := range append(s.PICs[:], s.IOAPIC) {
		if err := vm.SetIRQChip(c); err != nil {
			return err
		}
	}
	return nil
}

// RestoreClock restores kvmclock and the vCPUs' TSC offsets after a pause
// of the guest, following the procedure of the kernel's
// Documentation/virt/kvm/devices/vcpu.rst (KVM_VCPU_TSC_OFFSET): set the
// source's kvmclock with its realtime stamp so KVM advances it by the time
// that passed, read the destination clock, and move every TSC offset by the
// same amount. When the source clock lacks the realtime and host-TSC stamps
// (KVM's master clock was not in use), the clock is advanced by elapsedNs,
// the pause measured by the VMM, and the TSC offset likewise.
func RestoreClock(vm hv.VM, cpus []hv.VCPU, src hv.ClockData, offsets []uint64, tscKHz uint32, elapsedNs uint64) error {
	if len(offsets) != len(cpus) {
		return errors.New("x86: restore clock: one TSC offset per vCPU needed")
	}
	exact := src.Flags&hv.ClockRealtime != 0 && src.Flags&hv.ClockHostTSC != 0
	set := hv.ClockData{Clock: src.Clock}
	if exact {
		set.Flags = hv.ClockRealtime
		set.Realtime = src.Realtime
	} else {
		set.Clock += elapsedNs
	}
	if err := vm.SetClock(set); err != nil {
		return err
	}
	dst, err := vm.GetClock()
	if err != nil {
		return err
	}
	// ofs_dst = ofs_src - (guest_src - guest_dst) * freq + (tsc_src - tsc_dst)
	// KVM advanced guest time by guest_dst - guest_src; the guest TSC must
	// advance by the same, whatever the hosts' own TSCs did.
	var delta int64
	if exact && dst.Flags&hv.ClockHostTSC != 0 {
		guestNs := int64(dst.Clock - src.Clock)
		delta = guestNs*int64(tscKHz)/1e6 + int64(src.HostTSC-dst.HostTSC)
	} else {
		delta = int64(elapsedNs) * int64(tscKHz) / 1e6
	}
	for i, c := range cpus {
		if err := c.SetTSCOffset(uint64(int64(offsets[i]) + delta)); err != nil {
			return err
		}
	}
	return nil
}
