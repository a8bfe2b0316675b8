package migration

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"github.com/godwit-vmm/godwit/internal/memory"
	"github.com/godwit-vmm/godwit/internal/migration/wire"
)

// pagemap reads /proc/self/pagemap to tell which pages of guest RAM the
// guest (or the VMM) ever touched: an anonymous page neither present nor
// swapped has never been written and reads as zero.
type pagemap struct {
	f   *os.File
	buf []byte
}

func openPagemap() (*pagemap, error) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, fmt.Errorf("migration: %w", err)
	}
	return &pagemap{f: f}, nil
}

const (
	pagemapPresent = 1 << 63
	pagemapSwapped = 1 << 62
)

// lookup sets out[i] for page firstPage+i of host: whether it was touched.
func (pm *pagemap) lookup(host []byte, firstPage uint64, out []bool) error {
	// The address is only used as a number to index pagemap; host stays
	// mapped for the VM's life.
	base := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(host)))) / memory.PageSize
	n := len(out) * 8
	if cap(pm.buf) < n {
		pm.buf = make([]byte, n)
	}
	b := pm.buf[:n]
	if _, err := pm.f.ReadAt(b, int64((base+firstPage)*8)); err != nil {
		return fmt.Errorf("migration: read pagemap: %w", err)
	}
	for i := range out {
		e := binary.LittleEndian.Uint64(b[i*8:])
		out[i] = e&(pagemapPresent|pagemapSwapped) != 0
	}
	return nil
}

func (pm *pagemap) Close() error { return pm.f.Close() }

// untouchedSkipper returns a wire.PageSkipper over the given RAM regions
// that reports pages not present in this process's page tables. Safe for
// concurrent use.
func untouchedSkipper(regions []*memory.Region) (wire.PageSkipper, func(), error) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, nil, fmt.Errorf("migration: %w", err)
	}
	skip := func(region, firstPage int, untouched []bool) {
		pm := &pagemap{f: f}
		present := make([]bool, len(untouched))
		if pm.lookup(regions[region].Host, uint64(firstPage), present) != nil {
			return // read every page: slower, still correct
		}
		for i, p := range present {
			untouched[i] = !p
		}
	}
	return skip, func() { f.Close() }, nil
}
