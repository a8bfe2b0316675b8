package virtio_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/devices/virtio"
	"github.com/godwit-vmm/godwit/internal/devices/virtio/blk"
	vnet "github.com/godwit-vmm/godwit/internal/devices/virtio/net"
	"github.com/godwit-vmm/godwit/internal/devices/virtio/virtiotest"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// Fuzz input layout (missing bytes read as zero):
//
//	[0]      mode: bit 0 folds descriptor addresses into RAM (+64 KiB past
//	         its end), bit 1 negotiates indirect descriptors, bit 2 sets
//	         VRING_AVAIL_F_NO_INTERRUPT
//	[1:3]    avail idx
//	[3:515]  avail ring, 256 entries
//	[515:4611] descriptor table, 256 entries
//	[4611:]  data area, copied to guest-physical dataBase (indirect tables,
//	         request headers, packets); its first bytes are also received
//	         as a packet by the net device
const (
	fuzzRAM    = memory.MinSize
	dataBase   = 0x100000
	ringOff    = 3
	descOff    = ringOff + 2*virtio.QueueSize
	dataOff    = descOff + 16*virtio.QueueSize
	maxDataLen = 64 << 10
)

var queueBases = []uint64{0x10000, 0x20000, 0x30000, 0x40000} // blk, net rx, tx, ctrl

type fuzzBackend struct {
	once sync.Once
	in   chan []byte
}

func (b *fuzzBackend) ReadPacket(p []byte) (int, error) {
	pkt, ok := <-b.in
	if !ok {
		return 0, os.ErrClosed
	}
	return copy(p, pkt), nil
}
func (b *fuzzBackend) WritePacket(p []byte) error { return nil }
func (b *fuzzBackend) Close() error               { b.once.Do(func() { close(b.in) }); return nil }

func desc(addr uint64, n uint32, flags, next uint16) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	return b
}

// seed builds an input from a mode, the avail entries, descriptors and data.
func seed(mode byte, heads []uint16, descs [][]byte, data []byte) []byte {
	in := make([]byte, dataOff, dataOff+len(data))
	in[0] = mode
	binary.LittleEndian.PutUint16(in[1:], uint16(len(heads)))
	for i, h := range heads {
		binary.LittleEndian.PutUint16(in[ringOff+2*i:], h)
	}
	for i, d := range descs {
		copy(in[descOff+16*i:], d)
	}
	return append(in, data...)
}

func FuzzDescriptorChain(f *testing.F) {
	const (
		next, write, indirect = virtiotest.DescNext, virtiotest.DescWrite, virtiotest.DescIndirect
	)
	blkRead := make([]byte, 16) // IN, sector 0
	blkWrite := []byte{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}
	// A well-formed blk read / net packet: header, data, status.
	f.Add(seed(0, []uint16{0}, [][]byte{
		desc(dataBase, 16, next, 1), desc(dataBase+0x1000, 512, next|write, 2), desc(dataBase+0x2000, 1, write, 0),
	}, blkRead))
	f.Add(seed(0, []uint16{0}, [][]byte{
		desc(dataBase, 16, next, 1), desc(dataBase+0x1000, 1024, next, 2), desc(dataBase+0x2000, 1, write, 0),
	}, blkWrite))
	// Indirect table in the data area.
	table := append(append(append([]byte{}, desc(dataBase+0x100, 16, next, 1)...), desc(dataBase+0x1000, 512, write|next, 2)...), desc(dataBase+0x2000, 1, write, 0)...)
	data := make([]byte, 0x110)
	copy(data, table)
	f.Add(seed(2, []uint16{5}, [][]byte{5: desc(dataBase, 48, indirect, 0)}, data))
	// Loops, bad indices, huge lengths, out-of-range addresses.
	f.Add(seed(0, []uint16{0, 1}, [][]byte{desc(dataBase, 16, next, 1), desc(dataBase, 16, next, 0)}, nil))
	f.Add(seed(0, []uint16{300}, nil, nil))
	f.Add(seed(0, []uint16{0}, [][]byte{desc(0, 0xFFFFFFFF, write, 0)}, nil))
	f.Add(seed(1, []uint16{0}, [][]byte{desc(fuzzRAM-8, 16, write, 0)}, nil))
	f.Add(seed(2, []uint16{0}, [][]byte{desc(dataBase, 0x10000, indirect, 0)}, nil))
	f.Add(seed(2, []uint16{0}, [][]byte{desc(dataBase, 32, indirect, 0)}, append(desc(dataBase, 32, indirect, 0), desc(0, 1, next, 7)...)))
	f.Add(seed(4, []uint16{0, 0, 0}, [][]byte{desc(dataBase, 20, 0, 0)}, make([]byte, 20)))

	fuzzImage = filepath.Join(f.TempDir(), "fuzz.img")
	if err := os.WriteFile(fuzzImage, make([]byte, 1<<20), 0o600); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, in []byte) { runOne(t, fuzzImage, in) })
}

// fuzzImage is the disk image shared by all runs of one fuzz process.
var fuzzImage string

// runOne drives a blk and a net device over the queues that in describes.
func runOne(t *testing.T, img string, in []byte) {
	mem, err := memory.New(fuzzRAM)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()

	bd, err := blk.New(mem, img, blk.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bd.Close()
	be := &fuzzBackend{in: make(chan []byte, 1)}
	nd := vnet.New(mem, be, [6]byte{2, 0, 0, 0, 0, 1}, nil, nil)
	defer nd.Close()

	get := func(off, n int) []byte {
		b := make([]byte, n)
		if off < len(in) {
			copy(b, in[off:])
		}
		return b
	}
	mode := get(0, 1)[0]
	features := uint32(0xFFFFFFFF)
	if mode&2 == 0 {
		features &^= 1 << virtio.FeatureRingIndirect
	}
	blkDrv := virtiotest.NewDriver(t, mem, bd)
	blkDrv.Init(features, queueBases[0])
	netDrv := virtiotest.NewDriver(t, mem, nd)
	netDrv.Init(features, queueBases[1:]...)

	descs := get(descOff, 16*virtio.QueueSize)
	if mode&1 != 0 {
		for i := 0; i < virtio.QueueSize; i++ {
			a := binary.LittleEndian.Uint64(descs[16*i:])
			binary.LittleEndian.PutUint64(descs[16*i:], a%(fuzzRAM+0x10000))
		}
	}
	if len(in) > dataOff {
		d := in[dataOff:]
		if len(d) > maxDataLen {
			d = d[:maxDataLen]
		}
		mem.WriteAt(d, dataBase)
		be.in <- append([]byte(nil), d[:min(len(d), 2000)]...)
	}
	availIdx := binary.LittleEndian.Uint16(get(1, 2))
	for _, base := range queueBases {
		q := virtiotest.NewQueue(mem, base)
		mem.WriteAt(descs, q.Desc)
		mem.WriteAt(get(ringOff, 2*virtio.QueueSize), q.Avail+4)
		if mode&4 != 0 {
			q.SetAvailFlags(virtiotest.AvailNoInterrupt)
		}
		mem.StoreUint16(q.Avail+2, availIdx)
	}
	blkDrv.Notify(0)
	for i := 0; i < 3; i++ {
		netDrv.Notify(i)
	}

	done := make(chan struct{})
	go func() {
		bd.WaitIdle()
		nd.WaitIdle()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("queue processing did not finish in 20 s")
	}

	// The device never completes more chains than were offered.
	for i, base := range queueBases {
		q := virtiotest.NewQueue(mem, base)
		used := q.UsedIdx()
		if availIdx <= virtio.QueueSize && used > availIdx {
			t.Errorf("queue %d: used idx %d beyond avail idx %d", i, used, availIdx)
		}
	}
	if err := bd.Pause(); err != nil && !errors.Is(err, os.ErrClosed) {
		t.Errorf("pause: %v", err)
	}
	nd.Pause()
}
