package cpu

import (
	"sync/atomic"
	"unsafe"
)

// Guest RAM lives outside the Go heap (mmap'd by the VMM), so pointers into
// it are plain addresses that the garbage collector ignores; a slot keeps
// its host slice for as long as the Memory lives.

// hostPtr is an address in guest RAM on the host. The other files of the
// package hold and pass these but do arithmetic on them only through at,
// so that all pointer arithmetic lives in this file.
type hostPtr = unsafe.Pointer

// at returns p+off.
func at(p hostPtr, off uint64) hostPtr { return unsafe.Add(p, off) }

// newSlot describes host memory (a slice the VMM mapped outside the Go
// heap) as a RAM slot at gpa.
func newSlot(gpa uint64, host []byte) *slot {
	pages := uint64(len(host)) / pageSize
	return &slot{
		gpa: gpa, size: uint64(len(host)), host: unsafe.Pointer(&host[0]), hostMem: host,
		dirty: make([]uint64, (pages+63)/64),
		code:  make([]uint64, (pages+63)/64),
	}
}

// hostAt returns the host address of gpa and its slot, or nil for MMIO.
func (m *Memory) hostAt(gpa uint64) (unsafe.Pointer, *slot) {
	s := m.find(gpa)
	if s == nil {
		return nil, nil
	}
	return unsafe.Add(s.host, gpa-s.gpa), s
}

// load reads size bytes (1, 2, 4 or 8) at p: one MOV, so aligned accesses
// are single-copy atomic as on x86.
func load(p unsafe.Pointer, size int) uint64 {
	switch size {
	case 1:
		return uint64(*(*uint8)(p))
	case 2:
		return uint64(*(*uint16)(p))
	case 4:
		return uint64(*(*uint32)(p))
	default:
		return *(*uint64)(p)
	}
}

func store(p unsafe.Pointer, size int, v uint64) {
	switch size {
	case 1:
		*(*uint8)(p) = uint8(v)
	case 2:
		*(*uint16)(p) = uint16(v)
	case 4:
		*(*uint32)(p) = uint32(v)
	default:
		*(*uint64)(p) = v
	}
}

// casSized atomically replaces the size-byte value at p (within one page)
// with nv if it equals old. Values that fit in their containing aligned
// 8-byte word use a CAS on that word; others take splitMu (see callers).
func casSized(p unsafe.Pointer, size int, old, nv uint64) bool {
	a := uintptr(p)
	if size == 8 && a&7 == 0 {
		return atomic.CompareAndSwapUint64((*uint64)(p), old, nv)
	}
	if size == 4 && a&3 == 0 {
		return atomic.CompareAndSwapUint32((*uint32)(p), uint32(old), uint32(nv))
	}
	// Within an aligned 4- or 8-byte word: CAS the containing word.
	if a&3+uintptr(size) <= 4 {
		w := (*uint32)(unsafe.Add(p, -int(a&3)))
		sh := (a & 3) * 8
		m := uint32(sizeMask(uint8(size))) << sh
		for {
			cur := atomic.LoadUint32(w)
			if uint64((cur&m)>>sh) != old&sizeMask(uint8(size)) {
				return false
			}
			if atomic.CompareAndSwapUint32(w, cur, cur&^m|uint32(nv)<<sh&m) {
				return true
			}
		}
	}
	w := (*uint64)(unsafe.Add(p, -int(a&7)))
	sh := (a & 7) * 8
	m := sizeMask(uint8(size)) << sh
	for {
		cur := atomic.LoadUint64(w)
		if (cur&m)>>sh != old&sizeMask(uint8(size)) {
			return false
		}
		if atomic.CompareAndSwapUint64(w, cur, cur&^m|nv<<sh&m) {
			return true
		}
	}
}

// fitsWord reports whether a size-byte access at p lies within one aligned
// 8-byte word, so casSized can do it atomically.
func fitsWord(p unsafe.Pointer, size int) bool {
	return uintptr(p)&7+uintptr(size) <= 8
}

func casPTE64(p unsafe.Pointer, old, nv uint64) bool {
	return atomic.CompareAndSwapUint64((*uint64)(p), old, nv)
}

func casPTE32(p unsafe.Pointer, old, nv uint32) bool {
	return atomic.CompareAndSwapUint32((*uint32)(p), old, nv)
}

func loadAtomic64(p unsafe.Pointer) uint64 { return atomic.LoadUint64((*uint64)(p)) }
func loadAtomic32(p unsafe.Pointer) uint32 { return atomic.LoadUint32((*uint32)(p)) }

// pageByte returns the byte at p+off (for instruction fetch).
func pageByte(p unsafe.Pointer, off uint64) byte { return *(*byte)(unsafe.Add(p, off)) }

// ReadPhys copies guest-physical RAM at gpa into b (tests and tools).
// It reports false if part of the range is not RAM.
func (m *Memory) ReadPhys(gpa uint64, b []byte) bool {
	for i := range b {
		p, _ := m.hostAt(gpa + uint64(i))
		if p == nil {
			return false
		}
		b[i] = *(*byte)(p)
	}
	return true
}

// WritePhys copies b into guest-physical RAM at gpa, marking the pages dirty
// and invalidating decoded code there.
func (m *Memory) WritePhys(gpa uint64, b []byte) bool {
	for i := range b {
		p, _ := m.hostAt(gpa + uint64(i))
		if p == nil {
			return false
		}
		*(*byte)(p) = b[i]
	}
	m.MarkDirty(gpa, uint64(len(b)))
	return true
}
