package memory

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Virtqueue indices live in guest RAM and are written by the guest while the
// VMM reads them (and the reverse), so they are accessed with atomics. The
// pointers below point into the mmap'd guest RAM, which never moves while
// the Guest is open; alignment is checked before the cast.

func (g *Guest) aligned(gpa, n uint64) (*Region, uint64, error) {
	if gpa%n != 0 {
		return nil, 0, fmt.Errorf("memory: unaligned %d-byte atomic access at %#x", n, gpa)
	}
	return g.find(gpa, n)
}

// LoadUint16 atomically reads a little-endian uint16 at gpa (x86 is
// little-endian, so the native load is the guest's value).
func (g *Guest) LoadUint16(gpa uint64) (uint16, error) {
	r, off, err := g.aligned(gpa, 2)
	if err != nil {
		return 0, err
	}
	// The uint16 sits inside the mapping; 2-byte aligned because gpa is and
	// the mapping is page-aligned.
	return atomicLoad16((*uint16)(unsafe.Pointer(&r.Host[off]))), nil
}

// StoreUint16 atomically writes v at gpa and marks the page dirty.
func (g *Guest) StoreUint16(gpa uint64, v uint16) error {
	r, off, err := g.aligned(gpa, 2)
	if err != nil {
		return err
	}
	atomicStore16((*uint16)(unsafe.Pointer(&r.Host[off])), v)
	r.markDirty(off, 2)
	return nil
}

// LoadUint32 atomically reads a uint32 at gpa.
func (g *Guest) LoadUint32(gpa uint64) (uint32, error) {
	r, off, err := g.aligned(gpa, 4)
	if err != nil {
		return 0, err
	}
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.Host[off]))), nil
}

// StoreUint32 atomically writes v at gpa and marks the page dirty.
func (g *Guest) StoreUint32(gpa uint64, v uint32) error {
	r, off, err := g.aligned(gpa, 4)
	if err != nil {
		return err
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&r.Host[off])), v)
	r.markDirty(off, 4)
	return nil
}

// Uint64 reads a little-endian uint64 at gpa (not atomically).
func (g *Guest) Uint64(gpa uint64) (uint64, error) {
	b, err := g.Slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// atomicLoad16 and atomicStore16 use the 32-bit atomics on the aligned word
// that contains the uint16: sync/atomic has no 16-bit operations. On x86 an
// aligned 16-bit load or store is atomic by itself, and Go's compiler emits a
// plain MOV for these with a compiler barrier from the surrounding atomics.
func atomicLoad16(p *uint16) uint16 {
	w := (*uint32)(unsafe.Pointer(uintptr(unsafe.Pointer(p)) &^ 3))
	v := atomic.LoadUint32(w)
	if uintptr(unsafe.Pointer(p))&2 != 0 {
		return uint16(v >> 16)
	}
	return uint16(v)
}

func atomicStore16(p *uint16, v uint16) {
	w := (*uint32)(unsafe.Pointer(uintptr(unsafe.Pointer(p)) &^ 3))
	shift := (uintptr(unsafe.Pointer(p)) & 2) * 8
	mask := uint32(0xffff) << shift
	for {
		old := atomic.LoadUint32(w)
		if atomic.CompareAndSwapUint32(w, old, old&^mask|uint32(v)<<shift) {
			return
		}
	}
}
