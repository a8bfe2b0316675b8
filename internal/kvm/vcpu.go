//go:build linux && amd64

package kvm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VCPU is a vCPU fd and its mapped kvm_run area. Run must be called from the
// OS thread that created the vCPU (KVM binds a vCPU to the task that runs
// it; switching threads costs a reload and breaks kicks by thread id).
type VCPU struct {
	ID  int
	fd  int
	run []byte
	vm  *VM
}

// ErrInterrupted is returned by Run when KVM_RUN returned EINTR: a signal
// kicked the vCPU out, or immediate_exit was set. The exit reason is
// meaningless then.
var ErrInterrupted = errors.New("kvm: vcpu run interrupted")

// Close unmaps kvm_run and closes the vCPU fd.
func (c *VCPU) Close() error {
	err := unix.Munmap(c.run)
	if e := unix.Close(c.fd); err == nil {
		err = e
	}
	return err
}

func (c *VCPU) header() *runHeader {
	// kvm_run is a page-aligned shared mapping that lives as long as c.
	return (*runHeader)(unsafe.Pointer(&c.run[0]))
}

// Run enters the guest until the next exit to userspace and returns the
// exit reason. EINTR is returned as ErrInterrupted, not retried.
func (c *VCPU) Run() (uint32, error) {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), KVM_RUN, 0)
	switch errno {
	case 0:
		return c.header().ExitReason, nil
	case unix.EINTR, unix.EAGAIN:
		return 0, ErrInterrupted
	}
	return 0, fmt.Errorf("kvm: vcpu %d run: %w", c.ID, errno)
}

// SetImmediateExit sets kvm_run.immediate_exit: while it is 1, KVM_RUN
// returns EINTR at once, after completing any pending I/O instruction. It may
// be called from any thread.
func (c *VCPU) SetImmediateExit(on bool) {
	var v uint32
	if on {
		v = 1
	}
	// immediate_exit is byte 1 of the first word; byte 0
	// (request_interrupt_window) is only written by this VMM, as zero.
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&c.run[0])), v<<8)
}

// IO describes a KVM_EXIT_IO: Data holds Count*Size bytes inside kvm_run,
// to be filled for an IN, or read for an OUT.
type IO struct {
	Out  bool
	Size int
	Port uint16
	Data []byte
}

// IO returns the current KVM_EXIT_IO.
func (c *VCPU) IO() IO {
	io := (*runIO)(unsafe.Pointer(&c.run[runUnionOffset]))
	n := int(io.Size) * int(io.Count)
	off := int(io.DataOffset)
	if off < 0 || off+n > len(c.run) {
		n = 0 // a corrupt offset: expose nothing rather than fault
	}
	return IO{Out: io.Direction == KVM_EXIT_IO_OUT, Size: int(io.Size), Port: io.Port, Data: c.run[off : off+n]}
}

// MMIO describes a KVM_EXIT_MMIO: Data (1–8 bytes, inside kvm_run) is to be
// filled for a read, or read for a write.
type MMIO struct {
	Addr  uint64
	Write bool
	Data  []byte
}

// MMIO returns the current KVM_EXIT_MMIO.
func (c *VCPU) MMIO() MMIO {
	m := (*runMMIO)(unsafe.Pointer(&c.run[runUnionOffset]))
	n := min(int(m.Len), 8)
	return MMIO{Addr: m.PhysAddr, Write: m.IsWrite != 0, Data: m.Data[:n]}
}

// InternalError describes a KVM_EXIT_INTERNAL_ERROR.
type InternalError struct {
	Suberror uint32
	Insn     []byte // the failing instruction's bytes, when KVM gave them
	Data     []uint64
}

// InternalError returns the current KVM_EXIT_INTERNAL_ERROR.
func (c *VCPU) InternalError() InternalError {
	ie := (*runInternal)(unsafe.Pointer(&c.run[runUnionOffset]))
	e := InternalError{Suberror: ie.Suberror}
	nd := min(int(ie.NData), 16)
	data := unsafe.Slice((*uint64)(unsafe.Pointer(&c.run[runUnionOffset+8])), 16)
	e.Data = append([]uint64(nil), data[:nd]...)
	if ie.Suberror == KVM_INTERNAL_ERROR_EMULATION && ie.Flags&KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES != 0 {
		e.Insn = append([]byte(nil), ie.Insn[:min(int(ie.InsnSize), 15)]...)
	}
	return e
}

// SystemEventType returns the type of the current KVM_EXIT_SYSTEM_EVENT.
func (c *VCPU) SystemEventType() uint32 {
	return (*runSystemEvent)(unsafe.Pointer(&c.run[runUnionOffset])).Type
}

// GetRegs returns the general-purpose registers.
func (c *VCPU) GetRegs() (Regs, error) {
	var r Regs
	if _, err := ioctlPtr(c.fd, KVM_GET_REGS, unsafe.Pointer(&r)); err != nil {
		return r, fmt.Errorf("kvm: vcpu %d get regs: %w", c.ID, err)
	}
	return r, nil
}

// SetRegs loads the general-purpose registers.
func (c *VCPU) SetRegs(r Regs) error {
	if _, err := ioctlPtr(c.fd, KVM_SET_REGS, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("kvm: vcpu %d set regs: %w", c.ID, err)
	}
	return nil
}

// GetSregs returns the system registers.
func (c *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	if _, err := ioctlPtr(c.fd, KVM_GET_SREGS, unsafe.Pointer(&s)); err != nil {
		return s, fmt.Errorf("kvm: vcpu %d get sregs: %w", c.ID, err)
	}
	return s, nil
}

// SetSregs loads the system registers.
func (c *VCPU) SetSregs(s Sregs) error {
	if _, err := ioctlPtr(c.fd, KVM_SET_SREGS, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("kvm: vcpu %d set sregs: %w", c.ID, err)
	}
	return nil
}

// GetSregs2 returns the system registers with PDPTRs.
func (c *VCPU) GetSregs2() (Sregs2, error) {
	var s Sregs2
	if _, err := ioctlPtr(c.fd, KVM_GET_SREGS2, unsafe.Pointer(&s)); err != nil {
		return s, fmt.Errorf("kvm: vcpu %d get sregs2: %w", c.ID, err)
	}
	return s, nil
}

// SetSregs2 loads the system registers with PDPTRs.
func (c *VCPU) SetSregs2(s Sregs2) error {
	if _, err := ioctlPtr(c.fd, KVM_SET_SREGS2, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("kvm: vcpu %d set sregs2: %w", c.ID, err)
	}
	return nil
}

// SetCPUID2 sets the CPUID the guest sees.
func (c *VCPU) SetCPUID2(ents []CPUIDEntry2) error {
	buf := u64sOf(8 + len(ents)*int(unsafe.Sizeof(CPUIDEntry2{})))
	b := bytesOf(buf)
	*(*uint32)(unsafe.Pointer(&b[0])) = uint32(len(ents))
	if len(ents) > 0 {
		copy(unsafe.Slice((*CPUIDEntry2)(unsafe.Pointer(&b[8])), len(ents)), ents)
	}
	if _, err := ioctlPtr(c.fd, KVM_SET_CPUID2, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("kvm: vcpu %d set cpuid2 (%d entries): %w", c.ID, len(ents), err)
	}
	return nil
}

// GetCPUID2 returns the CPUID set on the vCPU.
func (c *VCPU) GetCPUID2() ([]CPUIDEntry2, error) {
	for n := 64; n <= 4096; n *= 2 {
		ents, err := getCPUID(c.fd, KVM_GET_CPUID2, n)
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: vcpu %d get cpuid2: %w", c.ID, err)
		}
		return ents, nil
	}
	return nil, fmt.Errorf("kvm: vcpu %d get cpuid2: too many entries", c.ID)
}

func getCPUID(fd int, req uint, n int) ([]CPUIDEntry2, error) {
	buf := u64sOf(8 + n*int(unsafe.Sizeof(CPUIDEntry2{})))
	b := bytesOf(buf)
	*(*uint32)(unsafe.Pointer(&b[0])) = uint32(n)
	if _, err := ioctlPtr(fd, req, unsafe.Pointer(&buf[0])); err != nil {
		return nil, err
	}
	got := int(*(*uint32)(unsafe.Pointer(&b[0])))
	return append([]CPUIDEntry2(nil), unsafe.Slice((*CPUIDEntry2)(unsafe.Pointer(&b[8])), got)...), nil
}

// GetMSRs reads the given MSRs. KVM stops at the first MSR it cannot read;
// the returned slice holds only the entries read.
func (c *VCPU) GetMSRs(indices []uint32) ([]MSREntry, error) {
	ents := make([]MSREntry, len(indices))
	for i, idx := range indices {
		ents[i].Index = idx
	}
	n, err := c.msrs(KVM_GET_MSRS, ents)
	if err != nil {
		return nil, fmt.Errorf("kvm: vcpu %d get msrs: %w", c.ID, err)
	}
	return ents[:n], nil
}

// SetMSRs writes MSRs in order and fails naming the first one KVM refused.
func (c *VCPU) SetMSRs(ents []MSREntry) error {
	n, err := c.msrs(KVM_SET_MSRS, ents)
	if err != nil {
		return fmt.Errorf("kvm: vcpu %d set msrs: %w", c.ID, err)
	}
	if n != len(ents) {
		return fmt.Errorf("kvm: vcpu %d set msrs: KVM refused MSR %#x (%d of %d written)", c.ID, ents[n].Index, n, len(ents))
	}
	return nil
}

func (c *VCPU) msrs(req uint, ents []MSREntry) (int, error) {
	buf := u64sOf(8 + len(ents)*16)
	b := bytesOf(buf)
	*(*uint32)(unsafe.Pointer(&b[0])) = uint32(len(ents))
	view := unsafe.Slice((*MSREntry)(unsafe.Pointer(&b[8])), len(ents))
	copy(view, ents)
	n, err := ioctlPtr(c.fd, req, unsafe.Pointer(&buf[0]))
	if err != nil {
		return 0, err
	}
	copy(ents, view)
	return int(n), nil
}

// GetLAPIC returns the local APIC register page.
func (c *VCPU) GetLAPIC() (LAPICState, error) {
	var l LAPICState
	if _, err := ioctlPtr(c.fd, KVM_GET_LAPIC, unsafe.Pointer(&l)); err != nil {
		return l, fmt.Errorf("kvm: vcpu %d get lapic: %w", c.ID, err)
	}
	return l, nil
}

// SetLAPIC loads the local APIC register page.
func (c *VCPU) SetLAPIC(l LAPICState) error {
	if _, err := ioctlPtr(c.fd, KVM_SET_LAPIC, unsafe.Pointer(&l)); err != nil {
		return fmt.Errorf("kvm: vcpu %d set lapic: %w", c.ID, err)
	}
	return nil
}

// GetMPState returns the multiprocessing state (KVM_MP_STATE_*).
func (c *VCPU) GetMPState() (uint32, error) {
	var s uint32
	if _, err := ioctlPtr(c.fd, KVM_GET_MP_STATE, unsafe.Pointer(&s)); err != nil {
		return 0, fmt.Errorf("kvm: vcpu %d get mp state: %w", c.ID, err)
	}
	return s, nil
}

// SetMPState sets the multiprocessing state.
func (c *VCPU) SetMPState(s uint32) error {
	if _, err := ioctlPtr(c.fd, KVM_SET_MP_STATE, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("kvm: vcpu %d set mp state: %w", c.ID, err)
	}
	return nil
}

// GetXSAVE2 returns the XSAVE area; size comes from KVM_CAP_XSAVE2 (at
// least 4096 bytes).
func (c *VCPU) GetXSAVE2(size int) ([]byte, error) {
	buf := u64sOf(max(size, 4096))
	if _, err := ioctlPtr(c.fd, KVM_GET_XSAVE2, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("kvm: vcpu %d get xsave2: %w", c.ID, err)
	}
	return bytesOf(buf), nil
}

// SetXSAVE loads an XSAVE area of the size GetXSAVE2 returned.
func (c *VCPU) SetXSAVE(area []byte) error {
	buf := u64sOf(max(len(area), 4096))
	copy(bytesOf(buf), area)
	if _, err := ioctlPtr(c.fd, KVM_SET_XSAVE, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("kvm: vcpu %d set xsave: %w", c.ID, err)
	}
	return nil
}

// GetXCRs returns the extended control registers.
func (c *VCPU) GetXCRs() (XCRs, error) {
	var x XCRs
	if _, err := ioctlPtr(c.fd, KVM_GET_XCRS, unsafe.Pointer(&x)); err != nil {
		return x, fmt.Errorf("kvm: vcpu %d get xcrs: %w", c.ID, err)
	}
	return x, nil
}

// SetXCRs loads the extended control registers.
func (c *VCPU) SetXCRs(x XCRs) error {
	if _, err := ioctlPtr(c.fd, KVM_SET_XCRS, unsafe.Pointer(&x)); err != nil {
		return fmt.Errorf("kvm: vcpu %d set xcrs: %w", c.ID, err)
	}
	return nil
}

// GetDebugRegs returns the debug registers.
func (c *VCPU) GetDebugRegs() (DebugRegs, error) {
	var d DebugRegs
	if _, err := ioctlPtr(c.fd, KVM_GET_DEBUGREGS, unsafe.Pointer(&d)); err != nil {
		return d, fmt.Errorf("kvm: vcpu %d get debugregs: %w", c.ID, err)
	}
	return d, nil
}

// SetDebugRegs loads the debug registers.
func (c *VCPU) SetDebugRegs(d DebugRegs) error {
	if _, err := ioctlPtr(c.fd, KVM_SET_DEBUGREGS, unsafe.Pointer(&d)); err != nil {
		return fmt.Errorf("kvm: vcpu %d set debugregs: %w", c.ID, err)
	}
	return nil
}

// GetVCPUEvents returns pending exceptions, interrupts, NMIs and SIPIs.
func (c *VCPU) GetVCPUEvents() (VCPUEvents, error) {
	var e VCPUEvents
	if _, err := ioctlPtr(c.fd, KVM_GET_VCPU_EVENTS, unsafe.Pointer(&e)); err != nil {
		return e, fmt.Errorf("kvm: vcpu %d get vcpu events: %w", c.ID, err)
	}
	return e, nil
}

// SetVCPUEvents loads pending events, with the flags GetVCPUEvents returned.
func (c *VCPU) SetVCPUEvents(e VCPUEvents) error {
	if _, err := ioctlPtr(c.fd, KVM_SET_VCPU_EVENTS, unsafe.Pointer(&e)); err != nil {
		return fmt.Errorf("kvm: vcpu %d set vcpu events: %w", c.ID, err)
	}
	return nil
}

// TSCKHz returns the guest TSC frequency in kHz.
func (c *VCPU) TSCKHz() (uint32, error) {
	r, err := ioctl(c.fd, KVM_GET_TSC_KHZ, 0)
	if err != nil {
		return 0, fmt.Errorf("kvm: vcpu %d get tsc khz: %w", c.ID, err)
	}
	return uint32(r), nil
}

// TSCOffset returns the vCPU's TSC offset (KVM_VCPU_TSC_OFFSET attribute).
func (c *VCPU) TSCOffset() (uint64, error) {
	off := heapUint64()
	a := DeviceAttr{Group: KVM_VCPU_TSC_CTRL, Attr: KVM_VCPU_TSC_OFFSET, Addr: uint64(uintptr(unsafe.Pointer(off)))}
	_, err := ioctlPtr(c.fd, KVM_GET_DEVICE_ATTR, unsafe.Pointer(&a))
	runtime.KeepAlive(off)
	if err != nil {
		return 0, fmt.Errorf("kvm: vcpu %d get tsc offset: %w", c.ID, err)
	}
	return *off, nil
}

// SetTSCOffset sets the vCPU's TSC offset.
func (c *VCPU) SetTSCOffset(off uint64) error {
	p := heapUint64()
	*p = off
	a := DeviceAttr{Group: KVM_VCPU_TSC_CTRL, Attr: KVM_VCPU_TSC_OFFSET, Addr: uint64(uintptr(unsafe.Pointer(p)))}
	_, err := ioctlPtr(c.fd, KVM_SET_DEVICE_ATTR, unsafe.Pointer(&a))
	runtime.KeepAlive(p)
	if err != nil {
		return fmt.Errorf("kvm: vcpu %d set tsc offset: %w", c.ID, err)
	}
	return nil
}

// KVMClockCtrl tells the guest's kvmclock that the vCPU was paused, so its
// soft-lockup watchdog does not fire. EINVAL (kvmclock not enabled by the
// guest) is not an error.
func (c *VCPU) KVMClockCtrl() error {
	if _, err := ioctl(c.fd, KVM_KVMCLOCK_CTRL, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("kvm: vcpu %d kvmclock ctrl: %w", c.ID, err)
	}
	return nil
}
