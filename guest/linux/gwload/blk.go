package main

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/guest"
)

// The block commands of guest/PROTOCOL.md §6 on /dev/vda, with O_DIRECT so
// every sector goes to and comes from the virtio-blk device, not the page
// cache.

const sectorSize = guest.SectorSize

// blkDevice is the disk the commands use.
var blkDevice = "/dev/vda"

// alignedBuf returns n bytes of page-aligned memory, as O_DIRECT needs.
func alignedBuf(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, max(n, pageSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
}

// blkCommand runs BLKW lba count seed, BLKR lba count, or BLKV lba count
// seed and returns the reply line.
func blkCommand(word string, v []uint64) string {
	lba, count := v[0], v[1]
	fail := func(format string, a ...any) string {
		return fmt.Sprintf("%s FAIL %d %d %s", word, lba, count, fmt.Sprintf(format, a...))
	}
	flags := os.O_RDONLY
	if word == "BLKW" {
		flags = os.O_RDWR
	}
	f, err := os.OpenFile(blkDevice, flags|syscall.O_DIRECT, 0)
	if err != nil {
		return fmt.Sprintf("ERR no blk device (%v)", err)
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return fail("seek: %v", err)
	}
	if capacity := uint64(size) / sectorSize; count == 0 || lba+count > capacity || lba+count < lba {
		return fail("range capacity=%d", capacity)
	}
	buf, err := alignedBuf(int(count) * sectorSize)
	if err != nil {
		return fail("buffer: %v", err)
	}
	defer unix.Munmap(buf)
	data := buf[:count*sectorSize]
	off := int64(lba * sectorSize)
	if word == "BLKW" {
		for i := uint64(0); i < count; i++ {
			copy(data[i*sectorSize:], guest.Sector(v[2], lba+i))
		}
		if _, err := f.WriteAt(data, off); err != nil {
			return fail("write %v", err)
		}
		if err := f.Sync(); err != nil {
			return fail("flush %v", err)
		}
		crc := crc32.ChecksumIEEE(data)
		clear(data)
		if _, err := f.ReadAt(data, off); err != nil {
			return fail("read %v", err)
		}
		if bad, first := compare(data, v[2], lba); bad > 0 {
			return fail("readback bad=%d first=%d", bad, first)
		}
		return fmt.Sprintf("BLKW OK %d %d %08x", lba, count, crc)
	}
	if _, err := f.ReadAt(data, off); err != nil {
		return fail("read %v", err)
	}
	if word == "BLKR" {
		return fmt.Sprintf("BLKR %d %d %08x", lba, count, crc32.ChecksumIEEE(data))
	}
	if bad, first := compare(data, v[2], lba); bad > 0 {
		return fmt.Sprintf("BLKV FAIL %d %d bad=%d first=%d", lba, count, bad, first)
	}
	return fmt.Sprintf("BLKV OK %d %d", lba, count)
}

// compare counts the sectors of data (from lba) that differ from the
// pattern of seed, and the first of them.
func compare(data []byte, seed, lba uint64) (bad int, first uint64) {
	for i := uint64(0); i < uint64(len(data))/sectorSize; i++ {
		if !bytes.Equal(data[i*sectorSize:(i+1)*sectorSize], guest.Sector(seed, lba+i)) {
			if bad == 0 {
				first = lba + i
			}
			bad++
		}
	}
	return bad, first
}
