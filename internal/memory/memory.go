// Package memory owns guest RAM: the host mappings that back it, its layout in
// guest-physical address space, and the VMM-side dirty bitmap.
//
// KVM's dirty log only sees writes made by the guest's vCPUs. Writes that the
// VMM itself makes into guest RAM (a virtio device filling a receive buffer or
// updating a used ring) are invisible to it, and a live migration that misses
// them silently corrupts the guest. Every write by the VMM into guest RAM must
// therefore go through a method of [Guest] that records the written pages in
// the VMM bitmap after the write: [Guest.WriteAt], [Guest.Write], the Put*
// and Store* helpers. [Guest.Slice] hands out memory for reading only.
//
// Layout (as Firecracker and Cloud Hypervisor do on x86): RAM below 3 GiB
// starts at guest-physical 0 in slot 0; RAM beyond 3 GiB continues at 4 GiB
// in slot 1, leaving the 3–4 GiB hole for MMIO (IOAPIC, LAPIC, PCI).
//
// Who may import: the vm layer, devices and migration. It depends on nothing
// but the standard library and x/sys.
package memory

import (
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// PageSize is the guest page size used for dirty tracking.
const PageSize = 4096

const (
	// HoleStart is where the MMIO hole below 4 GiB begins.
	HoleStart = 3 << 30
	// HighStart is where RAM above the hole continues.
	HighStart = 4 << 30
	// MinSize and MaxSize bound the RAM a VM may have.
	MinSize = 16 << 20
	MaxSize = 1 << 40
)

// ErrOutOfRange is returned for an access that does not lie inside one RAM
// region. Guest-controlled addresses are checked against it, never trusted.
var ErrOutOfRange = errors.New("memory: guest address range outside RAM")

// Region is one contiguous piece of guest RAM backed by one host mapping.
type Region struct {
	Slot uint32 // KVM memory slot number
	GPA  uint64 // guest-physical start
	Host []byte // host mapping; len(Host) is the region size

	// dirty has one bit per page, set by VMM writes; read and cleared with
	// atomic operations so devices and the migration sender need no lock.
	dirty []uint64
}

// Size returns the region's length in bytes.
func (r *Region) Size() uint64 { return uint64(len(r.Host)) }

// Pages returns the region's length in pages.
func (r *Region) Pages() uint64 { return r.Size() / PageSize }

// End returns the first guest-physical address after the region.
func (r *Region) End() uint64 { return r.GPA + r.Size() }

// Guest is a VM's RAM. Its methods are safe for concurrent use; concurrent
// writes to the same bytes race as they would on real hardware.
type Guest struct {
	regions  []*Region
	size     uint64
	observer func(gpa, n uint64) // ObserveWrites; set before any write
}

// Layout returns the regions (slot, guest address, size) that size bytes of
// RAM occupy, without allocating anything.
func Layout(size uint64) [][2]uint64 {
	if size <= HoleStart {
		return [][2]uint64{{0, size}}
	}
	return [][2]uint64{{0, HoleStart}, {HighStart, size - HoleStart}}
}

// New maps size bytes of anonymous, private, lazily allocated host memory as
// guest RAM. size must be a multiple of 2 MiB between MinSize and MaxSize.
func New(size uint64) (*Guest, error) {
	if size < MinSize || size > MaxSize {
		return nil, fmt.Errorf("memory: size %d MiB out of range [%d MiB, %d GiB]", size>>20, MinSize>>20, MaxSize>>30)
	}
	if size%(2<<20) != 0 {
		return nil, fmt.Errorf("memory: size %d bytes is not a multiple of 2 MiB", size)
	}
	g := &Guest{size: size}
	for i, l := range Layout(size) {
		host, err := unix.Mmap(-1, 0, int(l[1]), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("memory: map %d MiB of guest RAM: %w", l[1]>>20, err)
		}
		// Transparent huge pages: a first touch allocates 2 MiB at once.
		// That matters most on a migration destination, which would
		// otherwise take one page fault per 4 KiB it receives (costly on
		// nested hosts); KVM still tracks dirty pages at 4 KiB.
		unix.Madvise(host, unix.MADV_HUGEPAGE)
		pages := l[1] / PageSize
		g.regions = append(g.regions, &Region{
			Slot:  uint32(i),
			GPA:   l[0],
			Host:  host,
			dirty: make([]uint64, (pages+63)/64),
		})
	}
	return g, nil
}

// Close unmaps guest RAM. No access may follow.
func (g *Guest) Close() error {
	var first error
	for _, r := range g.regions {
		if err := unix.Munmap(r.Host); err != nil && first == nil {
			first = err
		}
		r.Host = nil
	}
	g.regions = nil
	return first
}

// Size returns the total RAM in bytes.
func (g *Guest) Size() uint64 { return g.size }

// Regions returns the RAM regions in address order. The slice must not be
// modified.
func (g *Guest) Regions() []*Region { return g.regions }

// find returns the region holding [gpa, gpa+n) and the offset of gpa in it.
func (g *Guest) find(gpa, n uint64) (*Region, uint64, error) {
	for _, r := range g.regions {
		if gpa >= r.GPA && gpa < r.End() {
			off := gpa - r.GPA
			if n > r.Size()-off {
				break
			}
			return r, off, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfRange, gpa, n)
}

// Slice returns the host bytes backing [gpa, gpa+n) for reading. Writing
// through the returned slice bypasses dirty tracking: use Write instead.
func (g *Guest) Slice(gpa, n uint64) ([]byte, error) {
	r, off, err := g.find(gpa, n)
	if err != nil {
		return nil, err
	}
	return r.Host[off : off+n : off+n], nil
}

// ReadAt copies guest RAM at gpa into p.
func (g *Guest) ReadAt(p []byte, gpa uint64) error {
	b, err := g.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, b)
	return nil
}

// WriteAt copies p into guest RAM at gpa and marks the pages dirty.
func (g *Guest) WriteAt(p []byte, gpa uint64) error {
	return g.Write(gpa, uint64(len(p)), func(b []byte) { copy(b, p) })
}

// Write calls fill with the host bytes backing [gpa, gpa+n) and marks those
// pages dirty after fill returns, so that a migration pass that reads the
// pages after clearing the bitmap always sees the mark or the new bytes.
func (g *Guest) Write(gpa, n uint64, fill func([]byte)) error {
	r, off, err := g.find(gpa, n)
	if err != nil {
		return err
	}
	fill(r.Host[off : off+n : off+n])
	r.markDirty(off, n)
	g.observe(gpa, n)
	return nil
}

// ObserveWrites makes every write through Write, WriteAt and MarkDirty
// call f(gpa, n) after the bytes are in place: the software CPU drops
// instructions it decoded from those pages (a device's DMA can overwrite
// code). Call it before anything writes.
func (g *Guest) ObserveWrites(f func(gpa, n uint64)) { g.observer = f }

func (g *Guest) observe(gpa, n uint64) {
	if g.observer != nil {
		g.observer(gpa, n)
	}
}

// MarkDirty records that the VMM wrote [gpa, gpa+n) by some path that the
// Write helpers do not cover (for example a read(2) from a file straight into
// guest RAM). Call it after the write completes.
func (g *Guest) MarkDirty(gpa, n uint64) error {
	r, off, err := g.find(gpa, n)
	if err != nil {
		return err
	}
	r.markDirty(off, n)
	g.observe(gpa, n)
	return nil
}

// Zero makes all guest RAM read as zeros again, as after New, giving the
// host pages back; every page counts as written (dirty and observed), so
// that a migration in progress sends it again. A machine reset calls it
// with the vCPUs stopped.
func (g *Guest) Zero() error {
	for _, r := range g.regions {
		if err := unix.Madvise(r.Host, unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("memory: zero the region at %#x: %w", r.GPA, err)
		}
		r.markDirty(0, r.Size())
		g.observe(r.GPA, r.Size())
	}
	return nil
}

func (r *Region) markDirty(off, n uint64) {
	if n == 0 {
		return
	}
	for p := off / PageSize; p <= (off+n-1)/PageSize; p++ {
		w := &r.dirty[p/64]
		bit := uint64(1) << (p % 64)
		if atomic.LoadUint64(w)&bit == 0 {
			atomic.OrUint64(w, bit)
		}
	}
}

// TakeDirty ORs the region's VMM dirty bitmap into dst (one bit per page,
// len(dst) >= (Pages()+63)/64) and clears it, word by word atomically.
// It returns the number of pages that were dirty.
func (r *Region) TakeDirty(dst []uint64) int {
	n := 0
	for i := range r.dirty {
		w := atomic.SwapUint64(&r.dirty[i], 0)
		dst[i] |= w
		n += bits.OnesCount64(w)
	}
	return n
}

// Incoming returns the host bytes backing [gpa, gpa+n) for an incoming
// migration to fill before the VM first runs. These writes are not tracked:
// nothing needs them to be (a later outgoing migration starts with every
// page dirty), and only the migration receiver may use this.
func (g *Guest) Incoming(gpa, n uint64) ([]byte, error) {
	r, off, err := g.find(gpa, n)
	if err != nil {
		return nil, err
	}
	return r.Host[off : off+n : off+n], nil
}
