//go:build linux && amd64

package kvm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl issues one ioctl with an integer argument, retrying on EINTR. It
// returns the ioctl's non-negative result or a unix.Errno.
func ioctl(fd int, req uint, arg uintptr) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), arg)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return r, errno
		}
		return r, nil
	}
}

// ioctlPtr issues one ioctl whose argument points at memory the kernel reads
// or writes, retrying on EINTR. arg stays an unsafe.Pointer until the
// syscall expression, so the object it points to is kept alive (and not
// moved, if it is on a stack) for the duration of the call.
func ioctlPtr(fd int, req uint, arg unsafe.Pointer) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return r, errno
		}
		return r, nil
	}
}

// u64sOf returns a []uint64 of at least n bytes, so variable-length kernel
// structs (kvm_msrs, kvm_cpuid2, xsave) are 8-byte aligned.
func u64sOf(n int) []uint64 { return make([]uint64, (n+7)/8) }

// bytesOf views a []uint64 buffer as bytes.
func bytesOf(b []uint64) []byte {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), len(b)*8)
}

// heapUint64 returns a heap-allocated uint64 for an ioctl that takes its
// address inside a struct as an integer: a stack variable could move when
// the stack grows, and the kernel would write to the old place.
//
//go:noinline
func heapUint64() *uint64 { return new(uint64) }
