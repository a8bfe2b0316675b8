package wire

import (
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
	sums := ChecksumRAM([][]byte{a, b, nil})
	tab := crc32.MakeTable(crc32.Castagnoli)
	want := []uint32{
		crc32.Checksum(a[:2<<20], tab),
		crc32.Checksum(a[2<<20:4<<20], tab),
		crc32.Checksum(a[4<<20:], tab),
		crc32.Checksum(b, tab),
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
	got := ChecksumRAM([][]byte{a, b})
	err := CompareChecksums(want, got)
	if err == nil || !strings.Contains(err.Error(), "RAM chunk 3 ") {
		t.Errorf("error %v, want chunk 3", err)
	}
	if err := CompareChecksums(want, got[:2]); err == nil || !strings.Contains(err.Error(), "source has 4 RAM chunks, destination 2") {
		t.Errorf("length mismatch: %v", err)
	}
	if len(ChecksumRAM(nil)) != 0 {
		t.Error("checksums of no RAM")
	}
}

func BenchmarkChecksumRAM(b *testing.B) {
	ram := [][]byte{make([]byte, 256<<20)}
	b.SetBytes(int64(len(ram[0])))
	for b.Loop() {
		ChecksumRAM(ram)
	}
}
