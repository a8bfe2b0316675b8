package guest

import "encoding/binary"

// SectorSize is the virtio-blk sector size.
const SectorSize = 512

// Mix64 is the guest's 64-bit mixer (splitmix64's finaliser), from which
// its page stamps and block patterns are made (guest/PROTOCOL.md §5, §6).
func Mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// Sector returns the content the guest's `BLKW <lba> <count> <seed>` writes
// to sector s (guest/PROTOCOL.md §6), so the host can check the image.
func Sector(seed, s uint64) []byte {
	b := make([]byte, SectorSize)
	h := Mix64(Mix64(seed) ^ (s + 0x9E3779B97F4A7C15))
	for i := uint64(0); i < SectorSize/8; i++ {
		binary.LittleEndian.PutUint64(b[i*8:], h+i*0xD6E8FEB86659FD93)
	}
	return b
}
