package memory

import (
	"errors"
	"testing"
)

func TestLayout(t *testing.T) {
	if l := Layout(1 << 30); len(l) != 1 || l[0] != [2]uint64{0, 1 << 30} {
		t.Errorf("Layout(1 GiB) = %v", l)
	}
	if l := Layout(8 << 30); len(l) != 2 || l[0] != [2]uint64{0, 3 << 30} || l[1] != [2]uint64{4 << 30, 5 << 30} {
		t.Errorf("Layout(8 GiB) = %v", l)
	}
}

func TestNewRejects(t *testing.T) {
	for _, size := range []uint64{0, 1 << 20, 33<<20 + 4096} {
		if g, err := New(size); err == nil {
			g.Close()
			t.Errorf("New(%d) succeeded", size)
		}
	}
}

func TestBoundsChecks(t *testing.T) {
	g, err := New(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, c := range []struct{ gpa, n uint64 }{
		{64 << 20, 1},
		{64<<20 - 1, 2},
		{1 << 63, 8},
		{0, 1 << 63},
		{^uint64(0), 2},
	} {
		if _, err := g.Slice(c.gpa, c.n); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("Slice(%#x, %#x) err = %v, want ErrOutOfRange", c.gpa, c.n, err)
		}
	}
	if _, err := g.Slice(64<<20-8, 8); err != nil {
		t.Errorf("last 8 bytes: %v", err)
	}
}

func TestHighRegion(t *testing.T) {
	g, err := New(4<<30 + 2<<20) // 3 GiB low, 1 GiB + 2 MiB high
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.Slice(3<<30, 1); err == nil {
		t.Error("the MMIO hole is addressable")
	}
	if err := g.WriteAt([]byte{1, 2, 3}, 4<<30+5); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	if err := g.ReadAt(b, 4<<30+5); err != nil || b[2] != 3 {
		t.Errorf("high RAM read back %v, %v", b, err)
	}
}

// TestDirtyTracking checks that every write helper marks exactly the pages
// it touched, and that TakeDirty hands them over once.
func TestDirtyTracking(t *testing.T) {
	g, err := New(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	r := g.Regions()[0]
	bm := make([]uint64, (r.Pages()+63)/64)
	if n := r.TakeDirty(bm); n != 0 {
		t.Fatalf("fresh memory has %d dirty pages", n)
	}
	g.WriteAt(make([]byte, 2), 3*PageSize-1) // straddles pages 2 and 3
	g.StoreUint16(100*PageSize, 7)
	g.StoreUint32(200*PageSize+4, 7)
	g.Write(300*PageSize, 1, func(b []byte) { b[0] = 1 })
	g.MarkDirty(400*PageSize, PageSize)
	if n := r.TakeDirty(bm); n != 6 {
		t.Errorf("TakeDirty = %d pages, want 6", n)
	}
	for _, p := range []int{2, 3, 100, 200, 300, 400} {
		if bm[p/64]&(1<<(p%64)) == 0 {
			t.Errorf("page %d not marked dirty", p)
		}
	}
	clear(bm)
	if n := r.TakeDirty(bm); n != 0 {
		t.Errorf("second TakeDirty = %d, want 0", n)
	}
	// Reads do not dirty.
	g.Slice(0, PageSize)
	g.LoadUint16(100 * PageSize)
	if n := r.TakeDirty(bm); n != 0 {
		t.Errorf("reads marked %d pages dirty", n)
	}
}

func TestAtomics(t *testing.T) {
	g, err := New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.StoreUint16(0x1002, 0xbeef)
	g.StoreUint16(0x1000, 0x1234)
	if v, _ := g.LoadUint16(0x1002); v != 0xbeef {
		t.Errorf("LoadUint16(0x1002) = %#x", v)
	}
	if v, _ := g.LoadUint32(0x1000); v != 0xbeef1234 {
		t.Errorf("LoadUint32 = %#x", v)
	}
	if _, err := g.LoadUint16(0x1001); err == nil {
		t.Error("unaligned atomic accepted")
	}
}

// TestObserveWrites: every VMM write is reported after its bytes are in
// place, so the software CPU can drop code decoded from the page.
func TestObserveWrites(t *testing.T) {
	g, err := New(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var seen [][2]uint64
	g.ObserveWrites(func(gpa, n uint64) {
		b, _ := g.Slice(gpa, 1)
		if b[0] != 0xab {
			t.Errorf("observed %#x before its bytes were written", gpa)
		}
		seen = append(seen, [2]uint64{gpa, n})
	})
	if err := g.WriteAt([]byte{0xab, 0xab}, 0x5000); err != nil {
		t.Fatal(err)
	}
	b, _ := g.Slice(0x9000, 1)
	b[0] = 0xab
	if err := g.MarkDirty(0x9000, 4096); err != nil {
		t.Fatal(err)
	}
	if want := [][2]uint64{{0x5000, 2}, {0x9000, 4096}}; len(seen) != 2 || seen[0] != want[0] || seen[1] != want[1] {
		t.Errorf("observed %v, want %v", seen, want)
	}
}

// TestZero: Zero makes written RAM read as zeros in every region, and
// counts every page written (dirty and observed), for a migration in
// progress and the software CPU's decoded code.
func TestZero(t *testing.T) {
	g, err := New(5 << 30) // two regions, around the PCI hole
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, gpa := range []uint64{0x1000, 4<<30 + 0x2000} {
		if err := g.WriteAt([]byte{1, 2, 3}, gpa); err != nil {
			t.Fatal(err)
		}
	}
	var observed uint64
	g.ObserveWrites(func(_, n uint64) { observed += n })
	for _, r := range g.Regions() {
		r.TakeDirty(make([]uint64, (r.Pages()+63)/64))
	}
	if err := g.Zero(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	for _, gpa := range []uint64{0x1000, 4<<30 + 0x2000} {
		if err := g.ReadAt(b, gpa); err != nil || b[0]|b[1]|b[2] != 0 {
			t.Errorf("at %#x after Zero: %v, %v", gpa, b, err)
		}
	}
	var total uint64
	for _, r := range g.Regions() {
		total += r.Size()
		if n := r.TakeDirty(make([]uint64, (r.Pages()+63)/64)); uint64(n) != r.Pages() {
			t.Errorf("region at %#x: %d of %d pages dirty after Zero", r.GPA, n, r.Pages())
		}
	}
	if observed != total {
		t.Errorf("observed %d bytes written, want all %d", observed, total)
	}
}
