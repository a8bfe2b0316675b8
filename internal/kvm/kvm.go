//go:build linux && amd64

// Package kvm wraps the Linux KVM API for x86-64: owning types for the
// /dev/kvm system fd ([System]), a VM fd ([VM]) and vCPU fds ([VCPU]), with
// one method per ioctl the VMM uses. Every ioctl goes through one helper that
// retries EINTR (except KVM_RUN, where EINTR is how a vCPU is kicked out) and
// returns unix.Errno. Constants and structs carry their kernel header names
// (abi.go); pointer casts live in *_unsafe.go files.
//
// Who may import: the arch, vm and migration layers. It imports nothing of
// Godwit's.
package kvm

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DevicePath is the KVM device node.
const DevicePath = "/dev/kvm"

// ErrNoKVM says /dev/kvm is missing or not usable; callers can test for it
// with errors.Is to print a hint or skip a test.
var ErrNoKVM = errors.New("kvm: /dev/kvm is not available")

// System is an open /dev/kvm.
type System struct {
	fd       int
	runSize  int
	msrIndex []uint32
}

// Open opens /dev/kvm and checks the API version.
func Open() (*System, error) {
	fd, err := unix.Open(DevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("%w: %s does not exist (load kvm_intel/kvm_amd or run on a host with virtualization)", ErrNoKVM, DevicePath)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("%w: no permission to open %s (run as root or join the kvm group)", ErrNoKVM, DevicePath)
		}
		return nil, fmt.Errorf("%w: open %s: %v", ErrNoKVM, DevicePath, err)
	}
	s := &System{fd: fd}
	v, err := ioctl(fd, KVM_GET_API_VERSION, 0)
	if err != nil || v != 12 {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: unexpected KVM API version %d (%v)", ErrNoKVM, v, err)
	}
	n, err := ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kvm: get vcpu mmap size: %w", err)
	}
	s.runSize = int(n)
	return s, nil
}

// Available reports whether /dev/kvm can be opened, with the reason if not.
func Available() error {
	s, err := Open()
	if err != nil {
		return err
	}
	return s.Close()
}

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error { return unix.Close(s.fd) }

// CheckExtension returns KVM_CHECK_EXTENSION for cap on the system fd.
func (s *System) CheckExtension(cap int) int {
	r, err := ioctl(s.fd, KVM_CHECK_EXTENSION, uintptr(cap))
	if err != nil {
		return 0
	}
	return int(r)
}

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID, growing the buffer on E2BIG.
func (s *System) SupportedCPUID() ([]CPUIDEntry2, error) {
	for n := 64; n <= 4096; n *= 2 {
		ents, err := getCPUID(s.fd, KVM_GET_SUPPORTED_CPUID, n)
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: get supported cpuid: %w", err)
		}
		return ents, nil
	}
	return nil, errors.New("kvm: get supported cpuid: more than 4096 entries")
}

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves/restores.
func (s *System) MSRIndexList() ([]uint32, error) {
	if s.msrIndex != nil {
		return s.msrIndex, nil
	}
	for n := 256; n <= 16384; n *= 2 {
		buf := make([]uint32, 1+n)
		buf[0] = uint32(n)
		_, err := ioctlPtr(s.fd, KVM_GET_MSR_INDEX_LIST, unsafe.Pointer(&buf[0]))
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: get msr index list: %w", err)
		}
		s.msrIndex = append([]uint32(nil), buf[1:1+buf[0]]...)
		return s.msrIndex, nil
	}
	return nil, errors.New("kvm: get msr index list: too many MSRs")
}

// CreateVM creates a VM.
func (s *System) CreateVM() (*VM, error) {
	fd, err := ioctl(s.fd, KVM_CREATE_VM, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: create vm: %w", err)
	}
	unix.CloseOnExec(int(fd))
	return &VM{fd: int(fd), sys: s}, nil
}

// VM is a KVM virtual machine fd.
type VM struct {
	fd  int
	sys *System
}

// Close closes the VM fd. The kernel frees the VM once its vCPU fds are
// closed too.
func (vm *VM) Close() error { return unix.Close(vm.fd) }

// System returns the /dev/kvm the VM was created from.
func (vm *VM) System() *System { return vm.sys }

// CheckExtension returns KVM_CHECK_EXTENSION for cap on the VM fd, which can
// differ from the system answer.
func (vm *VM) CheckExtension(cap int) int {
	r, err := ioctl(vm.fd, KVM_CHECK_EXTENSION, uintptr(cap))
	if err != nil {
		return 0
	}
	return int(r)
}

// SetTSSAddr sets the 3-page TSS area KVM needs on Intel hosts.
func (vm *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctl(vm.fd, KVM_SET_TSS_ADDR, uintptr(addr)); err != nil {
		return fmt.Errorf("kvm: set tss addr: %w", err)
	}
	return nil
}

// SetIdentityMapAddr sets the one-page EPT identity map area.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	if _, err := ioctlPtr(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, unsafe.Pointer(&addr)); err != nil {
		return fmt.Errorf("kvm: set identity map addr: %w", err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and LAPICs. It must come
// before any vCPU.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0); err != nil {
		return fmt.Errorf("kvm: create irqchip: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 PIT with a dummy speaker port.
func (vm *VM) CreatePIT2() error {
	cfg := PITConfig{Flags: KVM_PIT_SPEAKER_DUMMY}
	if _, err := ioctlPtr(vm.fd, KVM_CREATE_PIT2, unsafe.Pointer(&cfg)); err != nil {
		return fmt.Errorf("kvm: create pit2: %w", err)
	}
	return nil
}

// SetUserMemoryRegion maps host memory at guest-physical gpa in slot.
// host must stay mapped for as long as the slot exists.
func (vm *VM) SetUserMemoryRegion(slot uint32, gpa uint64, host []byte, flags uint32) error {
	r := UserspaceMemoryRegion{
		Slot:          slot,
		Flags:         flags,
		GuestPhysAddr: gpa,
		MemorySize:    uint64(len(host)),
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(host)))),
	}
	if _, err := ioctlPtr(vm.fd, KVM_SET_USER_MEMORY_REGION, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("kvm: set memory region slot %d at %#x (%d MiB): %w", slot, gpa, len(host)>>20, err)
	}
	return nil
}

// IRQFD routes an eventfd to guest interrupt line gsi: each write to the
// eventfd is an edge on that line.
func (vm *VM) IRQFD(eventfd int, gsi uint32) error {
	r := IRQFD{FD: uint32(eventfd), GSI: gsi}
	if _, err := ioctlPtr(vm.fd, KVM_IRQFD, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("kvm: irqfd gsi %d: %w", gsi, err)
	}
	return nil
}

// IRQLine sets the level of interrupt line irq.
func (vm *VM) IRQLine(irq uint32, level bool) error {
	l := IRQLevel{IRQ: irq}
	if level {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd, KVM_IRQ_LINE, unsafe.Pointer(&l)); err != nil {
		return fmt.Errorf("kvm: irq line %d: %w", irq, err)
	}
	return nil
}

// EnableCap enables a VM capability with arguments.
func (vm *VM) EnableCap(cap uint32, args ...uint64) error {
	c := EnableCap{Cap: cap}
	copy(c.Args[:], args)
	if _, err := ioctlPtr(vm.fd, KVM_ENABLE_CAP, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("kvm: enable cap %d: %w", cap, err)
	}
	return nil
}

// GetClock returns KVM_GET_CLOCK (kvmclock).
func (vm *VM) GetClock() (ClockData, error) {
	var c ClockData
	if _, err := ioctlPtr(vm.fd, KVM_GET_CLOCK, unsafe.Pointer(&c)); err != nil {
		return c, fmt.Errorf("kvm: get clock: %w", err)
	}
	return c, nil
}

// SetClock sets kvmclock.
func (vm *VM) SetClock(c ClockData) error {
	if _, err := ioctlPtr(vm.fd, KVM_SET_CLOCK, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("kvm: set clock: %w", err)
	}
	return nil
}

// GetPIT2 returns the in-kernel PIT state.
func (vm *VM) GetPIT2() (PITState2, error) {
	var p PITState2
	if _, err := ioctlPtr(vm.fd, KVM_GET_PIT2, unsafe.Pointer(&p)); err != nil {
		return p, fmt.Errorf("kvm: get pit2: %w", err)
	}
	return p, nil
}

// SetPIT2 loads the in-kernel PIT state.
func (vm *VM) SetPIT2(p PITState2) error {
	if _, err := ioctlPtr(vm.fd, KVM_SET_PIT2, unsafe.Pointer(&p)); err != nil {
		return fmt.Errorf("kvm: set pit2: %w", err)
	}
	return nil
}

// GetIRQChip returns the state of chip (KVM_IRQCHIP_*).
func (vm *VM) GetIRQChip(chip uint32) (IRQChip, error) {
	c := IRQChip{ChipID: chip}
	if _, err := ioctlPtr(vm.fd, KVM_GET_IRQCHIP, unsafe.Pointer(&c)); err != nil {
		return c, fmt.Errorf("kvm: get irqchip %d: %w", chip, err)
	}
	return c, nil
}

// SetIRQChip loads the state of c.ChipID.
func (vm *VM) SetIRQChip(c IRQChip) error {
	if _, err := ioctlPtr(vm.fd, KVM_SET_IRQCHIP, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("kvm: set irqchip %d: %w", c.ChipID, err)
	}
	return nil
}

// GetDirtyLog fills bitmap (one bit per page of the slot) with the pages
// written since the last clear.
func (vm *VM) GetDirtyLog(slot uint32, bitmap []uint64) error {
	d := DirtyLog{Slot: slot, Bitmap: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(bitmap))))}
	_, err := ioctlPtr(vm.fd, KVM_GET_DIRTY_LOG, unsafe.Pointer(&d))
	runtime.KeepAlive(bitmap) // its address is inside d
	if err != nil {
		return fmt.Errorf("kvm: get dirty log slot %d: %w", slot, err)
	}
	return nil
}

// ClearDirtyLog re-protects the pages set in bitmap, which covers numPages
// pages starting at firstPage (a multiple of 64).
func (vm *VM) ClearDirtyLog(slot uint32, firstPage uint64, numPages uint32, bitmap []uint64) error {
	d := ClearDirtyLog{Slot: slot, NumPages: numPages, FirstPage: firstPage,
		Bitmap: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(bitmap))))}
	_, err := ioctlPtr(vm.fd, KVM_CLEAR_DIRTY_LOG, unsafe.Pointer(&d))
	runtime.KeepAlive(bitmap) // its address is inside d
	if err != nil {
		return fmt.Errorf("kvm: clear dirty log slot %d pages [%d,+%d): %w", slot, firstPage, numPages, err)
	}
	return nil
}

// CreateVCPU creates vCPU id and maps its kvm_run area. Call it on the OS
// thread that will run the vCPU.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(vm.fd, KVM_CREATE_VCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("kvm: create vcpu %d: %w", id, err)
	}
	unix.CloseOnExec(int(fd))
	run, err := unix.Mmap(int(fd), 0, vm.sys.runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("kvm: map kvm_run of vcpu %d: %w", id, err)
	}
	return &VCPU{ID: id, fd: int(fd), run: run, vm: vm}, nil
}
