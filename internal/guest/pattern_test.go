package guest

import (
	"fmt"
	"hash/crc32"
	"testing"
)

// TestSectorMatchesProtocol pins the pattern to a CRC computed from the
// protocol document's Python reference.
func TestSectorMatchesProtocol(t *testing.T) {
	var all []byte
	for s := uint64(0); s < 4; s++ {
		all = append(all, Sector(7, 100+s)...)
	}
	got := fmt.Sprintf("%08x", crc32.ChecksumIEEE(all))
	const want = "2cf250e3"
	if got != want {
		t.Errorf("crc of BLKW 100 4 7 = %s, want %s", got, want)
	}
}
