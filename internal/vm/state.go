package vm

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"time"

	"github.com/godwit-vmm/godwit/internal/arch/x86"
	"github.com/godwit-vmm/godwit/internal/hv"
)

// MachineStateVersion is the version of MachineState's encoding.
const MachineStateVersion = 1

// MachineState is everything of a paused VM except RAM: every vCPU, the
// in-kernel interrupt controllers, PIT and clock, the TSC offsets, and the
// devices. Migration carries it as one blob (Encode/DecodeMachineState).
type MachineState struct {
	Version int
	SavedAt time.Time // host wall clock when the clock was read
	VCPUs   []*x86.VCPUState
	VM      *x86.VMState
	Devices DeviceState
	// ResetPending: the guest asked for a reset that the pause deferred;
	// the destination reboots the VM when it starts. A VMM that predates
	// the field neither sends nor reads it.
	ResetPending bool
}

// Encode serialises the state.
func (s *MachineState) Encode() ([]byte, error) {
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(s); err != nil {
		return nil, fmt.Errorf("vm: encode machine state: %w", err)
	}
	return b.Bytes(), nil
}

// DecodeMachineState parses a blob made by Encode. Peer bytes: errors, never
// panics (encoding/gob guarantees that for malformed input).
func DecodeMachineState(b []byte) (*MachineState, error) {
	var s MachineState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&s); err != nil {
		return nil, fmt.Errorf("vm: decode machine state: %w", err)
	}
	if s.Version != MachineStateVersion {
		return nil, fmt.Errorf("vm: machine state version %d, this VMM reads %d", s.Version, MachineStateVersion)
	}
	if s.VM == nil || len(s.VCPUs) == 0 {
		return nil, errors.New("vm: machine state lacks vCPU or VM state")
	}
	return &s, nil
}

// MigrationInfo is what a destination must match before a VM can move to
// it: measured on this VMM's KVM.
type MigrationInfo struct {
	Accel     string // "kvm" or "emu"
	TSCKHz    uint32
	XSAVESize int
	MSRs      []uint32
	CPUID     []hv.CPUIDEntry2 // as set on vCPU 0
}

// MigrationInfo returns what the VM's state depends on, probed on this
// VMM's KVM when the VM was created.
func (v *VM) MigrationInfo() (MigrationInfo, error) { return v.info, nil }

// probeMigrationInfo runs on vCPU 0's thread at creation.
func probeMigrationInfo(sys hv.Hypervisor, vmfd hv.VM, cpu hv.VCPU) (MigrationInfo, error) {
	info := MigrationInfo{Accel: sys.Name()}
	var err error
	if info.TSCKHz, err = cpu.TSCKHz(); err != nil {
		return info, err
	}
	if info.CPUID, err = cpu.GetCPUID2(); err != nil {
		return info, err
	}
	list, err := sys.MSRIndexList()
	if err != nil {
		return info, err
	}
	if info.MSRs, err = x86.ProbeMSRs(list, cpu); err != nil {
		return info, err
	}
	info.XSAVESize = vmfd.XSAVESize()
	return info, nil
}

// SaveState reads the whole machine state. The VM must be paused (Pause
// has completed any pending I/O instruction on every vCPU and quiesced the
// devices).
func (v *VM) SaveState(info MigrationInfo) (*MachineState, error) {
	v.mu.Lock()
	state := v.state
	v.mu.Unlock()
	if state != StatePaused {
		return nil, fmt.Errorf("vm %s: save state: vm is %s, not paused", v.cfg.Name, state)
	}
	ms := &MachineState{Version: MachineStateVersion, VCPUs: make([]*x86.VCPUState, len(v.vcpus))}
	for i, c := range v.vcpus {
		err := c.send(request{kind: reqDo, fn: func(cpu hv.VCPU) error {
			s, err := x86.SaveVCPU(cpu, info.XSAVESize, info.MSRs)
			ms.VCPUs[i] = s
			return err
		}})
		if err != nil {
			return nil, fmt.Errorf("vm %s: save vcpu %d: %w", v.cfg.Name, i, err)
		}
	}
	var err error
	if ms.VM, err = x86.SaveVM(v.hvm); err != nil {
		return nil, fmt.Errorf("vm %s: %w", v.cfg.Name, err)
	}
	ms.SavedAt = time.Now()
	ms.ResetPending = v.resetPending.Load()
	if ms.Devices, err = v.dev.save(); err != nil {
		return nil, fmt.Errorf("vm %s: save devices: %w", v.cfg.Name, err)
	}
	return ms, nil
}

// PendingRX returns the guest-bound packets the paused VM's network
// device received since it paused (virtio-net's PendingRX), oldest first,
// for a migration source to hand over as late as it can. They stay queued
// here too, for a VM that resumes after all. It returns nil for a VM
// without a network device or not paused.
func (v *VM) PendingRX() [][]byte {
	if v.dev.net == nil {
		return nil
	}
	v.mu.Lock()
	paused := v.state == StatePaused
	v.mu.Unlock()
	if !paused {
		return nil
	}
	return v.dev.net.PendingRX()
}

// AddPendingRX puts PendingRX into st, so that the destination delivers
// the packets, and returns how many. A migration source whose destination
// does not take the packets after the state calls it just before sending
// st.
func (v *VM) AddPendingRX(st *MachineState) int {
	if st.Devices.Net == nil {
		return 0
	}
	st.Devices.Net.Pending = v.PendingRX()
	return len(st.Devices.Net.Pending)
}

// QueueRX queues packets a migration source handed over after the state
// for the guest, after those the state carried. Call it on a restored VM
// before Start.
func (v *VM) QueueRX(packets [][]byte) error {
	if v.dev.net == nil {
		return fmt.Errorf("vm %s: %d packets for a VM without a network device", v.cfg.Name, len(packets))
	}
	v.mu.Lock()
	state := v.state
	v.mu.Unlock()
	if state != StateCreated || !v.incoming {
		return fmt.Errorf("vm %s: queue packets: vm is %s, not an incoming VM before Start", v.cfg.Name, state)
	}
	if err := v.dev.net.AddPending(packets); err != nil {
		return fmt.Errorf("vm %s: %w", v.cfg.Name, err)
	}
	return nil
}

// RestoreState loads a machine state into a VM created with NewIncoming,
// which has not run. The VM is left paused; Start runs it.
func (v *VM) RestoreState(ms *MachineState) error {
	if len(ms.VCPUs) != len(v.vcpus) {
		return fmt.Errorf("vm %s: state has %d vCPUs, this VM %d", v.cfg.Name, len(ms.VCPUs), len(v.vcpus))
	}
	cpus := make([]hv.VCPU, len(v.vcpus))
	offsets := make([]uint64, len(v.vcpus))
	for i, c := range v.vcpus {
		s := ms.VCPUs[i]
		offsets[i] = s.TSCOffset
		err := c.send(request{kind: reqDo, fn: func(cpu hv.VCPU) error {
			cpus[i] = cpu
			return x86.RestoreVCPU(cpu, s)
		}})
		if err != nil {
			return fmt.Errorf("vm %s: %w", v.cfg.Name, err)
		}
	}
	if err := x86.RestoreVM(v.hvm, ms.VM); err != nil {
		return fmt.Errorf("vm %s: %w", v.cfg.Name, err)
	}
	elapsed := time.Since(ms.SavedAt)
	if elapsed < 0 {
		elapsed = 0
	}
	if err := x86.RestoreClock(v.hvm, cpus, ms.VM.Clock, offsets, ms.VCPUs[0].TSCKHz, uint64(elapsed)); err != nil {
		return fmt.Errorf("vm %s: restore clock: %w", v.cfg.Name, err)
	}
	if err := v.dev.restore(ms.Devices); err != nil {
		return fmt.Errorf("vm %s: restore devices: %w", v.cfg.Name, err)
	}
	v.resetPending.Store(ms.ResetPending)
	return nil
}
