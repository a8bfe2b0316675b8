//go:build linux && amd64

package kvm

import (
	"fmt"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// The KVM backend of the hypervisor seam: Hypervisor, and the VM and vCPU
// it creates, present the ioctl wrappers of this package as hv.Hypervisor,
// hv.VM and hv.VCPU.

// Addresses KVM needs on Intel hosts for real-mode emulation, placed in the
// MMIO hole below the IOAPIC (as Firecracker does).
const (
	tssAddr         = 0xfffbd000
	identityMapAddr = 0xfffbc000
)

// kickSignal interrupts a vCPU thread blocked in KVM_RUN. The Go runtime
// must handle it (signal.Notify), or the default action would kill the
// process.
const kickSignal = unix.SIGUSR1

var installKick sync.Once

func installKickHandler() {
	installKick.Do(func() {
		// The channel is never read: the runtime drops signals once it
		// is full, which is all a kick needs.
		signal.Notify(make(chan os.Signal, 1), kickSignal)
	})
}

// Hypervisor is /dev/kvm as an hv.Hypervisor.
type Hypervisor struct{ sys *System }

var _ hv.Hypervisor = (*Hypervisor)(nil)

// OpenHypervisor opens /dev/kvm; the error wraps ErrNoKVM when it is
// missing or cannot be opened.
func OpenHypervisor() (*Hypervisor, error) {
	sys, err := Open()
	if err != nil {
		return nil, err
	}
	installKickHandler()
	return &Hypervisor{sys: sys}, nil
}

// Name is "kvm".
func (h *Hypervisor) Name() string { return "kvm" }

// System is the underlying /dev/kvm handle.
func (h *Hypervisor) System() *System { return h.sys }

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID.
func (h *Hypervisor) SupportedCPUID() ([]hv.CPUIDEntry2, error) { return h.sys.SupportedCPUID() }

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST.
func (h *Hypervisor) MSRIndexList() ([]uint32, error) { return h.sys.MSRIndexList() }

// Close closes /dev/kvm.
func (h *Hypervisor) Close() error { return h.sys.Close() }

// CreateVM creates a VM with the in-kernel irqchip and PIT (KVM learns
// the vCPUs as they are created).
func (h *Hypervisor) CreateVM(vcpus int) (hv.VM, error) {
	vm, err := h.sys.CreateVM()
	if err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return vm.SetTSSAddr(tssAddr) },
		func() error { return vm.SetIdentityMapAddr(identityMapAddr) },
		vm.CreateIRQChip,
		vm.CreatePIT2,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			vm.Close()
			return nil, err
		}
	}
	return &backendVM{VM: vm, regions: map[uint32]region{}}, nil
}

type region struct {
	gpa  uint64
	host []byte
}

// backendVM is a KVM VM as an hv.VM.
type backendVM struct {
	*VM
	mu      sync.Mutex // guards regions
	regions map[uint32]region
}

func (v *backendVM) SetMemoryRegion(slot uint32, gpa uint64, host []byte) error {
	if err := v.SetUserMemoryRegion(slot, gpa, host, 0); err != nil {
		return err
	}
	v.mu.Lock()
	v.regions[slot] = region{gpa, host}
	v.mu.Unlock()
	return nil
}

func (v *backendVM) CreateVCPU(id int) (hv.VCPU, error) {
	c, err := v.VM.CreateVCPU(id)
	if err != nil {
		return nil, err
	}
	return &backendVCPU{VCPU: c, tid: unix.Gettid()}, nil
}

func (v *backendVM) IRQ(gsi uint32) (hv.IRQ, error) { return newIRQFD(v.VM, gsi) }

func (v *backendVM) XSAVESize() int { return max(v.CheckExtension(KVM_CAP_XSAVE2), 4096) }

// dirtyLogProtect is KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2's value: the caller
// re-protects pages with KVM_CLEAR_DIRTY_LOG (so a chunk is cleared right
// before it is read), and the log starts with every page set.
const dirtyLogProtect = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET

func (v *backendVM) StartDirtyLog() error {
	if v.CheckExtension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) == 0 {
		return fmt.Errorf("kvm: KVM lacks MANUAL_DIRTY_LOG_PROTECT2, needed for live migration")
	}
	if err := v.EnableCap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, dirtyLogProtect); err != nil {
		return fmt.Errorf("kvm: enable manual dirty log protection: %w", err)
	}
	return v.setLogFlags(KVM_MEM_LOG_DIRTY_PAGES)
}

func (v *backendVM) StopDirtyLog() error { return v.setLogFlags(0) }

func (v *backendVM) setLogFlags(flags uint32) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for slot, r := range v.regions {
		if err := v.SetUserMemoryRegion(slot, r.gpa, r.host, flags); err != nil {
			return fmt.Errorf("kvm: set dirty logging %#x: %w", flags, err)
		}
	}
	return nil
}

// irqFD is an edge-triggered line backed by an eventfd that KVM injects on
// its GSI (KVM_IRQFD). Writing the eventfd is safe from any goroutine and
// never blocks for long.
type irqFD struct {
	gsi uint32
	fd  int
}

func newIRQFD(v *VM, gsi uint32) (*irqFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("kvm: eventfd for irq %d: %w", gsi, err)
	}
	if err := v.IRQFD(fd, gsi); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &irqFD{gsi: gsi, fd: fd}, nil
}

// Trigger raises one edge on the line.
func (l *irqFD) Trigger() error {
	one := [8]byte{1} // little-endian 1
	_, err := unix.Write(l.fd, one[:])
	if err == unix.EAGAIN {
		return nil // the counter is saturated: an interrupt is pending anyway
	}
	if err != nil {
		return fmt.Errorf("kvm: trigger irq %d: %w", l.gsi, err)
	}
	return nil
}

func (l *irqFD) Close() error { return unix.Close(l.fd) }

// backendVCPU is a KVM vCPU as an hv.VCPU.
type backendVCPU struct {
	*VCPU
	tid int // the thread that created it, for kicks
}

func (c *backendVCPU) ID() int { return c.VCPU.ID }

var exits = map[uint32]hv.Exit{
	KVM_EXIT_IO:              hv.ExitIO,
	KVM_EXIT_MMIO:            hv.ExitMMIO,
	KVM_EXIT_HLT:             hv.ExitHLT,
	KVM_EXIT_INTR:            hv.ExitIntr,
	KVM_EXIT_IRQ_WINDOW_OPEN: hv.ExitIRQWindow,
	KVM_EXIT_SHUTDOWN:        hv.ExitShutdown,
	KVM_EXIT_SYSTEM_EVENT:    hv.ExitSystemEvent,
	KVM_EXIT_INTERNAL_ERROR:  hv.ExitInternalError,
	KVM_EXIT_FAIL_ENTRY:      hv.ExitFailEntry,
}

func (c *backendVCPU) Run() (hv.Exit, error) {
	r, err := c.VCPU.Run()
	if err == ErrInterrupted {
		return hv.ExitIntr, hv.ErrInterrupted
	}
	if err != nil {
		return hv.ExitUnknown, err
	}
	if e, ok := exits[r]; ok {
		return e, nil
	}
	return hv.ExitUnknown, fmt.Errorf("kvm: vcpu %d: unhandled KVM exit reason %d", c.VCPU.ID, r)
}

// Kick sets immediate_exit and signals the vCPU's thread out of KVM_RUN.
func (c *backendVCPU) Kick() {
	c.SetImmediateExit(true)
	// ESRCH: the thread is gone, nothing to kick.
	unix.Tgkill(os.Getpid(), c.tid, kickSignal)
}

func (c *backendVCPU) IO() hv.IO {
	io := c.VCPU.IO()
	return hv.IO{Out: io.Out, Size: io.Size, Port: io.Port, Data: io.Data}
}

func (c *backendVCPU) MMIO() hv.MMIO {
	m := c.VCPU.MMIO()
	return hv.MMIO{Addr: m.Addr, Write: m.Write, Data: m.Data}
}

func (c *backendVCPU) InternalError() hv.InternalError {
	ie := c.VCPU.InternalError()
	return hv.InternalError{Suberror: ie.Suberror, Insn: ie.Insn, Data: ie.Data}
}

// SystemEvent is KVM's event type: hv's numbers are KVM's.
func (c *backendVCPU) SystemEvent() uint32 { return c.SystemEventType() }

func (c *backendVCPU) GetXSAVE(size int) ([]byte, error) { return c.GetXSAVE2(size) }
func (c *backendVCPU) ClockCtrl() error                  { return c.KVMClockCtrl() }

var (
	_ hv.VM   = (*backendVM)(nil)
	_ hv.VCPU = (*backendVCPU)(nil)
)
