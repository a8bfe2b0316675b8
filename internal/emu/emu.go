// Package emu is the software backend of the hypervisor seam: Godwit's own
// x86-64 CPU (package emu/cpu) and the interrupt controllers and timers a
// KVM VM has in the kernel (package emu/irqchip), presented as hv.Hypervisor,
// hv.VM and hv.VCPU. It is what runs VMs where /dev/kvm is absent, as
// QEMU's TCG does.
//
// It behaves as a userspace KVM with an in-kernel irqchip: port I/O and
// MMIO the VMM serves end Run (an IN or an MMIO read completes on the next
// Run); the PIC, PIT, IOAPIC and LAPIC ports and pages are served here; a
// halted vCPU sleeps until an interrupt, a kick or a timer; the dirty log,
// the TSC, the guest clock and every state structure follow KVM's
// contracts and layouts, so the migration stream is the same on both
// backends.
//
// Who may import: internal/accel.
package emu

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/emu/cpu"
	"github.com/godwit-vmm/godwit/internal/emu/irqchip"
	"github.com/godwit-vmm/godwit/internal/hv"
)

// TSCKHz is the TSC frequency every software vCPU advertises and runs at,
// whatever the host: VMs migrate between any two software-CPU hosts.
const TSCKHz = 2_000_000

// XSAVESize is the XSAVE area in the state: the legacy region and the
// header, as KVM's smallest.
const XSAVESize = 4096

// Platform MSRs the backend serves beside the CPU's own.
const (
	msrTSC         = 0x10
	msrAPICBase    = 0x1b
	msrTSCAdjust   = 0x3b
	msrTSCDeadline = 0x6e0
)

// Hypervisor is the software CPU as an hv.Hypervisor.
type Hypervisor struct{}

var _ hv.Hypervisor = (*Hypervisor)(nil)

// Open returns the software backend. It needs nothing from the host.
func Open() (*Hypervisor, error) { return &Hypervisor{}, nil }

// Name is "emu".
func (*Hypervisor) Name() string { return "emu" }

// SupportedCPUID is exactly what the software CPU implements.
func (*Hypervisor) SupportedCPUID() ([]hv.CPUIDEntry2, error) { return cpu.SupportedCPUID(), nil }

// MSRIndexList is the CPU's MSRs and the platform's.
func (*Hypervisor) MSRIndexList() ([]uint32, error) {
	return append(cpu.SupportedMSRs(), msrTSC, msrAPICBase, msrTSCDeadline), nil
}

// Close does nothing.
func (*Hypervisor) Close() error { return nil }

// CreateVM creates a VM for vcpus vCPUs with its chipset and no memory.
func (h *Hypervisor) CreateVM(vcpus int) (hv.VM, error) {
	v := &VM{mem: cpu.NewMemory(), slots: map[uint32]int{}, vcpus: make([]*VCPU, vcpus)}
	v.clock = irqchip.NewRealClock(0)
	var err error
	v.chips, err = irqchip.NewChipset(irqchip.ChipsetConfig{
		VCPUs: vcpus, Sched: v.clock, TSCHz: TSCKHz * 1000,
		TSC: func(i int) uint64 {
			if c := v.vcpu(i); c != nil {
				return c.tsc()
			}
			return 0
		},
		Wake: func(i int) {
			if c := v.vcpu(i); c != nil {
				c.wakeUp()
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("emu: %w", err)
	}
	return v, nil
}

// hostTSC is the host's monotonic time in guest TSC ticks: a vCPU's TSC is
// hostTSC plus its offset, as KVM's is the host TSC plus an offset.
func hostTSC() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	ns := uint64(ts.Nano())
	return ns/1e6*TSCKHz + ns%1e6*TSCKHz/1e6
}

// VM is a software VM: guest memory, the chipset and the vCPUs.
type VM struct {
	mem   *cpu.Memory
	clock *irqchip.RealClock
	chips *irqchip.Chipset

	mu    sync.Mutex // guards slots, vcpus and pit
	slots map[uint32]int
	vcpus []*VCPU // by id; nil until created
	// pit is the PIT state last restored: its times are guest-clock ns,
	// so SetClock loads it again against the clock it belongs to.
	pit *hv.PITState2
}

func (v *VM) vcpu(i int) *VCPU {
	v.mu.Lock()
	defer v.mu.Unlock()
	if i < 0 || i >= len(v.vcpus) {
		return nil
	}
	return v.vcpus[i]
}

var _ hv.VM = (*VM)(nil)

// SetMemoryRegion maps host as RAM at gpa.
func (v *VM) SetMemoryRegion(slot uint32, gpa uint64, host []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.slots[slot]; ok {
		return fmt.Errorf("emu: memory slot %d is already set", slot)
	}
	if len(host) == 0 || len(host)%4096 != 0 || gpa%4096 != 0 {
		return fmt.Errorf("emu: memory slot %d: %d bytes at %#x is not page-aligned", slot, len(host), gpa)
	}
	v.slots[slot] = v.mem.AddRAM(gpa, host)
	return nil
}

func (v *VM) slot(s uint32) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	i, ok := v.slots[s]
	if !ok {
		return 0, fmt.Errorf("emu: no memory slot %d", s)
	}
	return i, nil
}

// CreateVCPU creates vCPU id: the BSP (id 0) runnable, APs waiting for
// INIT and SIPI, as KVM creates them with an in-kernel irqchip.
func (v *VM) CreateVCPU(id int) (hv.VCPU, error) {
	if id < 0 || id >= len(v.vcpus) {
		return nil, fmt.Errorf("emu: vcpu %d: the VM was created for %d", id, len(v.vcpus))
	}
	c := &VCPU{id: id, vm: v, wake: make(chan struct{}, 1), lapic: v.chips.LAPIC(id)}
	c.offset.Store(-hostTSC())
	c.cpu = cpu.New(id, v.mem, (*platform)(c))
	c.cpu.SetCPUID(cpu.SupportedCPUID())
	if id == 0 {
		c.mp = hv.MPStateRunnable
	} else {
		c.mp = hv.MPStateUninitialized
	}
	v.mu.Lock()
	v.vcpus[id] = c
	v.mu.Unlock()
	return c, nil
}

// IRQ returns an edge-triggered line on GSI gsi.
func (v *VM) IRQ(gsi uint32) (hv.IRQ, error) {
	if gsi >= 24 {
		return nil, fmt.Errorf("emu: no GSI %d (0-23)", gsi)
	}
	return irqLine{v.chips, gsi}, nil
}

type irqLine struct {
	chips *irqchip.Chipset
	gsi   uint32
}

func (l irqLine) Trigger() error { l.chips.PulseIRQ(l.gsi); return nil }
func (l irqLine) Close() error   { return nil }

// XSAVESize is the size of the XSAVE area in the state.
func (v *VM) XSAVESize() int { return XSAVESize }

// GetPIT2 returns the PIT in struct kvm_pit_state2.
func (v *VM) GetPIT2() (hv.PITState2, error) { return v.chips.PIT().Save(), nil }

// SetPIT2 loads the PIT.
func (v *VM) SetPIT2(s hv.PITState2) error {
	v.mu.Lock()
	v.pit = &s
	v.mu.Unlock()
	return v.chips.PIT().Restore(&s)
}

// GetIRQChip returns a PIC or the IOAPIC in struct kvm_irqchip.
func (v *VM) GetIRQChip(chip uint32) (hv.IRQChip, error) {
	c := hv.IRQChip{ChipID: chip}
	err := v.chips.GetIRQChip(&c)
	return c, err
}

// SetIRQChip loads a PIC or the IOAPIC.
func (v *VM) SetIRQChip(c hv.IRQChip) error { return v.chips.SetIRQChip(&c) }

// GetClock returns the guest clock as KVM_GET_CLOCK does with a master
// clock: guest ns, the host's realtime and its TSC at the same instant.
func (v *VM) GetClock() (hv.ClockData, error) {
	return hv.ClockData{
		Clock:    uint64(v.clock.Now()),
		Flags:    hv.ClockTSCStable | hv.ClockRealtime | hv.ClockHostTSC,
		Realtime: uint64(time.Now().UnixNano()),
		HostTSC:  hostTSC(),
	}, nil
}

// SetClock sets the guest clock; with ClockRealtime it is advanced by the
// realtime that passed since c.Realtime, as KVM does.
func (v *VM) SetClock(c hv.ClockData) error {
	now := int64(c.Clock)
	if c.Flags&hv.ClockRealtime != 0 {
		if d := time.Now().UnixNano() - int64(c.Realtime); d > 0 {
			now += d
		}
	}
	v.clock.Set(now)
	v.mu.Lock()
	pit := v.pit
	v.mu.Unlock()
	if pit != nil {
		return v.chips.PIT().Restore(pit)
	}
	return nil
}

// StartDirtyLog marks every page dirty and logs every write from here.
func (v *VM) StartDirtyLog() error { v.mem.StartDirtyLog(); return nil }

// StopDirtyLog stops logging.
func (v *VM) StopDirtyLog() error { v.mem.StopDirtyLog(); return nil }

// GetDirtyLog copies slot's dirty bits.
func (v *VM) GetDirtyLog(slot uint32, bitmap []uint64) error {
	i, err := v.slot(slot)
	if err != nil {
		return err
	}
	v.mem.DirtyLog(i, bitmap)
	return nil
}

// ClearDirtyLog clears the bits of bitmap from firstPage; once it
// returns, a vCPU store to those pages marks them again.
func (v *VM) ClearDirtyLog(slot uint32, firstPage uint64, numPages uint32, bitmap []uint64) error {
	i, err := v.slot(slot)
	if err != nil {
		return err
	}
	if firstPage%64 != 0 {
		return errors.New("emu: clear dirty log: first page not a multiple of 64")
	}
	n := (int(numPages) + 63) / 64
	if n > len(bitmap) {
		return errors.New("emu: clear dirty log: bitmap shorter than the range")
	}
	mask := bitmap[:n]
	if r := numPages % 64; r != 0 {
		mask = append([]uint64(nil), mask...)
		mask[n-1] &= 1<<r - 1
	}
	v.mem.ClearDirtyLog(i, firstPage, mask)
	return nil
}

// Close stops the chipset's timers.
func (v *VM) Close() error {
	v.clock.Pause()
	return nil
}

// DeviceWrote tells the CPUs that the VMM wrote [gpa, gpa+n) (a device's
// DMA): instructions decoded from those pages are dropped, as for a store
// by a vCPU.
func (v *VM) DeviceWrote(gpa, n uint64) { v.mem.MarkDirty(gpa, n) }
