package wire

import (
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

// ChecksumRAM returns the CRC32C (Castagnoli) of every 2 MiB chunk of each
// region, regions in the order given, the last chunk of a region possibly
// shorter. Both sides of a migration must pass their RAM regions in the
// same (address) order.
func ChecksumRAM(regions [][]byte) []uint32 {
	type chunk struct{ region, off int }
	var chunks []chunk
	for i, r := range regions {
		for off := 0; off < len(r); off += ChecksumChunk {
			chunks = append(chunks, chunk{i, off})
		}
	}
	sums := make([]uint32, len(chunks))
	sum := func(i int) {
		r := regions[chunks[i].region][chunks[i].off:]
		sums[i] = crc32.Checksum(r[:min(len(r), ChecksumChunk)], castagnoli)
	}
	workers := min(checksumWorkers, runtime.GOMAXPROCS(0), len(chunks))
	if workers <= 1 {
		for i := range chunks {
			sum(i)
		}
		return sums
	}
	// Worker w takes a contiguous share of the chunks: no shared counter,
	// and each worker streams through memory in order.
	var wg sync.WaitGroup
	per := (len(chunks) + workers - 1) / workers
	for w := 0; w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, len(chunks))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				sum(i)
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
