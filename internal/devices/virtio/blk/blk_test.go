package blk

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/godwit-vmm/godwit/internal/devices/virtio"
	"github.com/godwit-vmm/godwit/internal/devices/virtio/virtiotest"
	"github.com/godwit-vmm/godwit/internal/memory"
)

type irqCounter struct{ n atomic.Int64 }

func (c *irqCounter) Trigger() error { c.n.Add(1); return nil }

const (
	queueBase = 0x10000
	hdrAddr   = 0x100000
	dataAddr  = 0x200000
	statAddr  = 0x300000
	diskSize  = 1 << 20
)

func newImage(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func setup(t *testing.T, opts Options) (*memory.Guest, *Device, *virtiotest.Driver, string) {
	t.Helper()
	mem, err := memory.New(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	path := newImage(t, diskSize)
	d, err := New(mem, path, opts, &irqCounter{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	drv := virtiotest.NewDriver(t, mem, d)
	drv.Init(1<<FeatureFlush|1<<FeatureSegMax|1<<virtio.FeatureRingIndirect, queueBase)
	return mem, d, drv, path
}

// request submits a request with data buffers of dataLen bytes (in or
// out) and returns the used length and the status byte.
func request(t *testing.T, mem *memory.Guest, drv *virtiotest.Driver, typ uint32, sector uint64, dataLen uint32, out bool) (uint32, byte) {
	t.Helper()
	var hdr [16]byte
	binary.LittleEndian.PutUint32(hdr[0:], typ)
	binary.LittleEndian.PutUint64(hdr[8:], sector)
	mem.WriteAt(hdr[:], hdrAddr)
	mem.WriteAt([]byte{0xEE}, statAddr)
	bufs := []virtiotest.Buf{{Addr: hdrAddr, Len: 16}}
	if dataLen > 0 {
		// Two segments, to exercise the walk over buffers.
		half := dataLen / 2
		bufs = append(bufs, virtiotest.Buf{Addr: dataAddr, Len: half, Write: !out},
			virtiotest.Buf{Addr: dataAddr + 0x10000, Len: dataLen - half, Write: !out})
	}
	bufs = append(bufs, virtiotest.Buf{Addr: statAddr, Len: 1, Write: true})
	q := drv.Queues[0]
	q.Add(bufs...)
	drv.Notify(0)
	u := q.WaitUsed(t, 1)
	st := []byte{0}
	mem.ReadAt(st, statAddr)
	return u[0].Len, st[0]
}

func TestConfig(t *testing.T) {
	_, d, drv, _ := setup(t, Options{})
	if c := uint64(drv.Read(virtiotest.RegConfig, 4)) | uint64(drv.Read(virtiotest.RegConfig+4, 4))<<32; c != diskSize/512 {
		t.Errorf("capacity %d", c)
	}
	if sm := drv.Read(virtiotest.RegConfig+12, 4); sm != segMax {
		t.Errorf("seg_max %d", sm)
	}
	if f := drv.Read(virtiotest.RegDeviceFeatures, 4); f&(1<<FeatureRO) != 0 || f&(1<<FeatureFlush) == 0 {
		t.Errorf("features %#x", f)
	}
	if d.Capacity() != diskSize/512 {
		t.Errorf("Capacity %d", d.Capacity())
	}
}

func TestReadWrite(t *testing.T) {
	mem, d, drv, path := setup(t, Options{Serial: "godwit-test-disk"})
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096/16*2)
	mem.WriteAt(data[:4096], dataAddr)
	mem.WriteAt(data[4096:], dataAddr+0x10000)
	if n, st := request(t, mem, drv, reqOut, 8, 8192, true); st != statusOK || n != 1 {
		t.Fatalf("write: used %d status %d", n, st)
	}
	if n, st := request(t, mem, drv, reqFlush, 0, 0, false); st != statusOK || n != 1 {
		t.Fatalf("flush: used %d status %d", n, st)
	}
	file, _ := os.ReadFile(path)
	if !bytes.Equal(file[8*512:8*512+8192], data) {
		t.Error("file contents differ from what the guest wrote")
	}
	// Clear guest memory and read back.
	mem.WriteAt(make([]byte, 8192), dataAddr)
	mem.WriteAt(make([]byte, 8192), dataAddr+0x10000)
	for _, r := range mem.Regions() {
		r.TakeDirty(make([]uint64, (r.Pages()+63)/64))
	}
	if n, st := request(t, mem, drv, reqIn, 8, 8192, false); st != statusOK || n != 8193 {
		t.Fatalf("read: used %d status %d", n, st)
	}
	got := make([]byte, 8192)
	mem.ReadAt(got[:4096], dataAddr)
	mem.ReadAt(got[4096:], dataAddr+0x10000)
	if !bytes.Equal(got, data) {
		t.Error("read back differs")
	}
	// Dirty tracking of the pread-into-guest path.
	r := mem.Regions()[0]
	bm := make([]uint64, (r.Pages()+63)/64)
	r.TakeDirty(bm)
	for _, gpa := range []uint64{dataAddr, dataAddr + 0x10000, statAddr} {
		p := gpa / memory.PageSize
		if bm[p/64]&(1<<(p%64)) == 0 {
			t.Errorf("page of %#x not dirty after a disk read", gpa)
		}
	}
	// Out of range and misaligned.
	for _, tc := range []struct {
		name   string
		typ    uint32
		sector uint64
		n      uint32
		out    bool
	}{
		{"read past end", reqIn, diskSize/512 - 1, 1024, false},
		{"write past end", reqOut, diskSize / 512, 512, true},
		{"huge sector", reqIn, 1 << 62, 512, false},
		{"partial sector", reqIn, 0, 100, false},
	} {
		if _, st := request(t, mem, drv, tc.typ, tc.sector, tc.n, tc.out); st != statusIOErr {
			t.Errorf("%s: status %d, want IOERR", tc.name, st)
		}
	}
	// GET_ID and an unknown request.
	n, st := request(t, mem, drv, reqGetID, 0, 20, false)
	id := make([]byte, 20)
	mem.ReadAt(id[:10], dataAddr)
	mem.ReadAt(id[10:], dataAddr+0x10000)
	if st != statusOK || n != 21 || strings.TrimRight(string(id), "\x00") != "godwit-test-disk" {
		t.Errorf("GET_ID: used %d status %d id %q", n, st, id)
	}
	if _, st := request(t, mem, drv, 99, 0, 0, false); st != statusUnsupp {
		t.Errorf("unknown type: status %d", st)
	}
	if s := d.Stats(); s.Reads != 1 || s.Writes != 1 || s.Flushes != 1 || s.IOErrors != 4 || s.Unsupported != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestReadOnly(t *testing.T) {
	mem, _, drv, _ := setup(t, Options{ReadOnly: true})
	if f := drv.Read(virtiotest.RegDeviceFeatures, 4); f&(1<<FeatureRO) == 0 {
		t.Errorf("features %#x lack RO", f)
	}
	if _, st := request(t, mem, drv, reqOut, 0, 512, true); st != statusIOErr {
		t.Errorf("write to read-only disk: status %d", st)
	}
}

func TestOpenErrors(t *testing.T) {
	mem, err := memory.New(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	odd := newImage(t, 1000)
	if _, err := New(mem, odd, Options{}, nil); err == nil || !strings.Contains(err.Error(), "multiple of 512") {
		t.Errorf("odd size: %v", err)
	}
	img := newImage(t, 4096)
	d, err := New(mem, img, Options{Lock: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(mem, img, Options{Lock: true}, nil); err == nil || !strings.Contains(err.Error(), "in use by another VM") {
		t.Errorf("second locked open: %v", err)
	}
	d.Close()
	d2, err := New(mem, img, Options{Lock: true}, nil)
	if err != nil {
		t.Errorf("open after the lock holder closed: %v", err)
	} else {
		d2.Close()
	}
}

func TestSaveRestore(t *testing.T) {
	mem, d, drv, path := setup(t, Options{})
	request(t, mem, drv, reqFlush, 0, 0, false)
	if err := d.Pause(); err != nil {
		t.Fatal(err)
	}
	s := d.Save()
	if s.Capacity != diskSize/512 || s.Transport.Queues[0].NextUsed != 1 {
		t.Errorf("saved %+v", s)
	}
	d2, err := New(mem, path, Options{}, &irqCounter{})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if err := d2.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := d2.Save(); !reflect.DeepEqual(got, s) {
		t.Errorf("round trip %+v, want %+v", got, s)
	}
	d2.Resume()
	drv.Dev = d2
	if _, st := request(t, mem, drv, reqFlush, 0, 0, false); st != statusOK {
		t.Errorf("flush on restored device: %d", st)
	}
	small, err := New(mem, newImage(t, 4096), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if err := small.Restore(s); err == nil {
		t.Error("restore onto an image of another size succeeded")
	}
}
