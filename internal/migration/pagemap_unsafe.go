package migration

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
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

// selfPagemap is /proc/self/pagemap, opened once for the process's life:
// its permission is checked at open, and a VMM that later drops to another
// user (and so stops being dumpable) could not open it again.
var selfPagemap struct {
	once sync.Once
	f    *os.File
	err  error
}

// OpenPagemap opens /proc/self/pagemap for the migrations to come; a VMM
// calls it before it drops its privileges. Later calls return the first
// result.
func OpenPagemap() error {
	selfPagemap.once.Do(func() {
		selfPagemap.f, selfPagemap.err = os.Open("/proc/self/pagemap")
		if selfPagemap.err != nil {
			selfPagemap.err = fmt.Errorf("migration: %w", selfPagemap.err)
		}
	})
	return selfPagemap.err
}

func openPagemap() (*pagemap, error) {
	if err := OpenPagemap(); err != nil {
		return nil, err
	}
	return &pagemap{f: selfPagemap.f}, nil
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

// Close releases pm; the file stays open for the next migration.
func (pm *pagemap) Close() error { return nil }

// untouchedSkipper returns a wire.PageSkipper over the given RAM regions
// that reports pages not present in this process's page tables. Safe for
// concurrent use.
func untouchedSkipper(regions []*memory.Region) (wire.PageSkipper, func(), error) {
	if err := OpenPagemap(); err != nil {
		return nil, nil, err
	}
	f := selfPagemap.f
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
	return skip, func() {}, nil
}
