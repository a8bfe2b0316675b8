package wire

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
)

func TestChecksumRAM(t *testing.T) {
	a := make([]byte, 5<<20) // 2 MiB, 2 MiB, 1 MiB
	b := make([]byte, 2<<20)
	for i := range a {
		a[i] = byte(i * 31)
	}
	sums := ChecksumRAM([][]byte{a, b, nil}, nil)
	tab := crc32.MakeTable(crc32.Castagnoli)
	chunkSum := func(c []byte) uint32 {
		var pages []byte
		for p := 0; p < len(c); p += PageSize {
			pages = binary.LittleEndian.AppendUint32(pages, crc32.Checksum(c[p:p+PageSize], tab))
		}
		return crc32.Checksum(pages, tab)
	}
	want := []uint32{
		chunkSum(a[:2<<20]),
		chunkSum(a[2<<20 : 4<<20]),
		chunkSum(a[4<<20:]),
		chunkSum(b),
	}
	if len(sums) != len(want) {
		t.Fatalf("%d checksums, want %d", len(sums), len(want))
	}
	if err := CompareChecksums(want, sums); err != nil {
		t.Fatal(err)
	}
	if crc32.Checksum([]byte("123456789"), tab) != 0xe3069283 { // the CRC-32C check value
		t.Fatal("table is not Castagnoli")
	}

	b[100] = 1 // a missed dirty page in chunk 3
	got := ChecksumRAM([][]byte{a, b}, nil)
	err := CompareChecksums(want, got)
	if err == nil || !strings.Contains(err.Error(), "RAM chunk 3 ") {
		t.Errorf("error %v, want chunk 3", err)
	}
	if err := CompareChecksums(want, got[:2]); err == nil || !strings.Contains(err.Error(), "source has 4 RAM chunks, destination 2") {
		t.Errorf("length mismatch: %v", err)
	}
	if len(ChecksumRAM(nil, nil)) != 0 {
		t.Error("checksums of no RAM")
	}
	// Pages reported untouched count as zero without being read: the
	// same sums as reading zero pages, and a lie is caught.
	z := make([]byte, 2<<20)
	skipAll := func(region, first int, u []bool) {
		for i := range u {
			u[i] = true
		}
	}
	if CompareChecksums(ChecksumRAM([][]byte{z}, nil), ChecksumRAM([][]byte{z}, skipAll)) != nil {
		t.Error("skipping untouched zero pages changes the checksum")
	}
	z[5] = 1
	if CompareChecksums(ChecksumRAM([][]byte{z}, nil), ChecksumRAM([][]byte{z}, skipAll)) == nil {
		t.Error("a written page reported untouched went unnoticed")
	}
}

func BenchmarkChecksumRAM(b *testing.B) {
	ram := [][]byte{make([]byte, 256<<20)}
	b.SetBytes(int64(len(ram[0])))
	for b.Loop() {
		ChecksumRAM(ram, nil)
	}
}
