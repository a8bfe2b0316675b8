package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"runtime"
	"sync"
)

// ChecksumChunk is the span of guest RAM one verify checksum covers.
const ChecksumChunk = 2 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksumWorkers bounds the goroutines ChecksumRAM uses; the VM is paused
// while it runs, and two cores already saturate memory bandwidth on most
// hosts (CRC32C runs at several GB/s per core with SSE4.2).
const checksumWorkers = 2

// PageSkipper tells ChecksumRAM which pages were never touched and so read
// as zero (region index, page index within it). It lets both sides skip
// reading them: faulting in a never-touched page costs far more than
// hashing it.
type PageSkipper func(region int, firstPage int, untouched []bool)

// ChecksumRAM returns one checksum per 2 MiB chunk of each region, regions
// in the order given, the last chunk of a region possibly shorter. A chunk's
// checksum is the CRC32C (Castagnoli) of the little-endian CRC32Cs of its
// 4 KiB pages in order; a page skip reports as untouched counts as a zero
// page without being read. Both sides of a migration must pass their RAM
// regions in the same (address) order. skip may be nil.
func ChecksumRAM(regions [][]byte, skip PageSkipper) []uint32 {
	type chunk struct{ region, off int }
	var chunks []chunk
	for i, r := range regions {
		for off := 0; off < len(r); off += ChecksumChunk {
			chunks = append(chunks, chunk{i, off})
		}
	}
	zeroCRC := crc32.Checksum(make([]byte, PageSize), castagnoli)
	sums := make([]uint32, len(chunks))
	sum := func(i int, pageSums []byte, untouched []bool) {
		c := chunks[i]
		r := regions[c.region][c.off:]
		r = r[:min(len(r), ChecksumChunk)]
		n := (len(r) + PageSize - 1) / PageSize
		u := untouched[:n]
		clear(u)
		if skip != nil {
			skip(c.region, c.off/PageSize, u)
		}
		for p := 0; p < n; p++ {
			v := zeroCRC
			if !u[p] {
				v = crc32.Checksum(r[p*PageSize:min(len(r), (p+1)*PageSize)], castagnoli)
			}
			binary.LittleEndian.PutUint32(pageSums[4*p:], v)
		}
		sums[i] = crc32.Checksum(pageSums[:4*n], castagnoli)
	}
	workers := max(1, min(checksumWorkers, runtime.GOMAXPROCS(0), len(chunks)))
	// Worker w takes a contiguous share of the chunks: no shared counter,
	// and each worker streams through memory in order.
	var wg sync.WaitGroup
	per := (len(chunks) + workers - 1) / workers
	for w := 0; w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, len(chunks))
		wg.Go(func() {
			pageSums := make([]byte, 4*ChecksumChunk/PageSize)
			untouched := make([]bool, ChecksumChunk/PageSize)
			for i := lo; i < hi; i++ {
				sum(i, pageSums, untouched)
			}
		})
	}
	wg.Wait()
	return sums
}

// CompareChecksums compares the destination's table got with the source's
// table want and names the first chunk that differs.
func CompareChecksums(want, got []uint32) error {
	if len(want) != len(got) {
		return fmt.Errorf("wire: verify: source has %d RAM chunks, destination %d", len(want), len(got))
	}
	for i := range want {
		if want[i] != got[i] {
			return fmt.Errorf("wire: verify: RAM chunk %d (2 MiB chunk of the RAM regions in order) differs: source crc32c %#08x, destination %#08x", i, want[i], got[i])
		}
	}
	return nil
}
