package virtio

import (
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/devices/pci"
	"github.com/godwit-vmm/godwit/internal/devices/virtio/virtiotest"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// echo is a one-queue test device that copies each chain's readable bytes
// into its writable buffers.
type echo struct {
	config [4]byte
	resets int
	errs   atomic.Int64
}

func (e *echo) DeviceType() uint16            { return TypeNet }
func (e *echo) Features() uint32              { return 1 << 5 }
func (e *echo) NumQueues() int                { return 1 }
func (e *echo) ConfigSize() int               { return len(e.config) }
func (e *echo) ReadConfig(off int, d []byte)  { copy(d, e.config[off:]) }
func (e *echo) WriteConfig(off int, d []byte) { copy(e.config[off:], d) }
func (e *echo) Reset()                        { e.resets++ }
func (e *echo) Process(q *Queue) error {
	for {
		c, err := q.Pop()
		if c == nil {
			return err
		}
		if err != nil {
			e.errs.Add(1)
			if err := q.Push(c.Head, 0); err != nil {
				return err
			}
			continue
		}
		buf := make([]byte, c.ReadLen)
		c.ReadAt(buf, 0)
		n, _ := c.WriteAt(buf, 0)
		if err := q.Push(c.Head, uint32(n)); err != nil {
			return err
		}
	}
}

type irqCounter struct{ n atomic.Int64 }

func (c *irqCounter) Trigger() error { c.n.Add(1); return nil }

const (
	queueBase = 0x10000
	dataBase  = 0x100000
)

func newEcho(t *testing.T) (*memory.Guest, *Transport, *echo, *irqCounter, *virtiotest.Driver) {
	t.Helper()
	mem, err := memory.New(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	h := &echo{}
	irq := &irqCounter{}
	tr := NewTransport(mem, h, irq, nil)
	t.Cleanup(tr.Close)
	return mem, tr, h, irq, virtiotest.NewDriver(t, mem, tr)
}

func TestPCIIdentity(t *testing.T) {
	_, tr, _, _, _ := newEcho(t)
	var b [64]byte
	tr.Config().Read(0, b[:])
	want := map[int]uint32{
		pci.OffVendorID: 0x1af4, pci.OffDeviceID: 0x1000, pci.OffSubsysVendor: 0x1af4, pci.OffSubsysID: 1,
	}
	for off, v := range want {
		if got := uint32(b[off]) | uint32(b[off+1])<<8; got != v {
			t.Errorf("config %#x = %#x, want %#x", off, got, v)
		}
	}
	if b[pci.OffRevision] != 0 || b[pci.OffClass+2] != 0x02 || b[pci.OffInterruptPin] != 1 {
		t.Errorf("revision %d class %#x pin %d", b[pci.OffRevision], b[pci.OffClass+2], b[pci.OffInterruptPin])
	}
	if kind, _, size := tr.Config().BAR(0); kind != pci.BARIO || size != 32 {
		t.Errorf("BAR0 kind %d size %d", kind, size)
	}
}

func TestRegisters(t *testing.T) {
	_, tr, h, _, d := newEcho(t)
	if f := d.Read(virtiotest.RegDeviceFeatures, 4); f != 1<<5|1<<FeatureAnyLayout|1<<FeatureRingIndirect {
		t.Errorf("device features %#x", f)
	}
	d.Write(virtiotest.RegDriverFeatures, 4, 0xFFFFFFFF)
	if f := d.Read(virtiotest.RegDriverFeatures, 4); f != tr.DeviceFeatures() {
		t.Errorf("driver features %#x: not masked to the offer", f)
	}
	d.Write(virtiotest.RegQueueSelect, 2, 5)
	if n := d.Read(virtiotest.RegQueueSize, 2); n != 0 {
		t.Errorf("absent queue size %d", n)
	}
	d.Write(virtiotest.RegQueueSelect, 2, 0)
	d.Write(virtiotest.RegQueueSize, 2, 16) // read-only
	if n := d.Read(virtiotest.RegQueueSize, 2); n != QueueSize {
		t.Errorf("queue size %d", n)
	}
	d.Write(virtiotest.RegQueuePFN, 4, queueBase>>12)
	if v := d.Read(virtiotest.RegQueuePFN, 4); v != queueBase>>12 {
		t.Errorf("PFN %#x", v)
	}
	d.Write(virtiotest.RegStatus, 1, 3)
	if v := d.Read(virtiotest.RegStatus, 1); v != 3 {
		t.Errorf("status %d", v)
	}
	d.Write(virtiotest.RegConfig+1, 1, 0xAB)
	if v := d.Read(virtiotest.RegConfig, 4); v != 0xAB00 {
		t.Errorf("config %#x", v)
	}
	if v := d.Read(virtiotest.RegConfig+4, 1); v != 0xFF {
		t.Errorf("config beyond its size reads %#x", v)
	}
	d.Write(virtiotest.RegStatus, 1, 0)
	if d.Read(virtiotest.RegStatus, 1) != 0 || d.Read(virtiotest.RegQueuePFN, 4) != 0 || d.Read(virtiotest.RegDriverFeatures, 4) != 0 || h.resets != 1 {
		t.Error("reset left state behind")
	}
}

func TestEcho(t *testing.T) {
	mem, _, _, irq, d := newEcho(t)
	d.Init(1<<FeatureRingIndirect, queueBase)
	q := d.Queues[0]
	mem.WriteAt([]byte("hello, world"), dataBase)
	head := q.Add(virtiotest.Buf{Addr: dataBase, Len: 5}, virtiotest.Buf{Addr: dataBase + 5, Len: 7},
		virtiotest.Buf{Addr: dataBase + 0x1000, Len: 8, Write: true}, virtiotest.Buf{Addr: dataBase + 0x2000, Len: 8, Write: true})
	d.Notify(0)
	used := q.WaitUsed(t, 1)
	if used[0] != (virtiotest.Used{ID: uint32(head), Len: 12}) {
		t.Errorf("used %+v", used)
	}
	got := make([]byte, 12)
	mem.ReadAt(got[:8], dataBase+0x1000)
	mem.ReadAt(got[8:], dataBase+0x2000)
	if string(got) != "hello, world" {
		t.Errorf("echoed %q", got)
	}
	waitFor(t, func() bool { return irq.n.Load() >= 1 })
	if isr := d.ISR(); isr != ISRQueue {
		t.Errorf("ISR %#x", isr)
	}
	if isr := d.ISR(); isr != 0 {
		t.Errorf("ISR not cleared by read: %#x", isr)
	}

	// Indirect chain.
	table := uint64(dataBase + 0x3000)
	virtiotest.WriteDescAt(mem, table, dataBase, 5, virtiotest.DescNext, 1)
	virtiotest.WriteDescAt(mem, table+16, dataBase+0x4000, 5, virtiotest.DescWrite, 0)
	q.WriteDesc(100, table, 32, virtiotest.DescIndirect, 0)
	q.Publish(100)
	d.Notify(0)
	used = q.WaitUsed(t, 1)
	mem.ReadAt(got[:5], dataBase+0x4000)
	if used[0] != (virtiotest.Used{ID: 100, Len: 5}) || string(got[:5]) != "hello" {
		t.Errorf("indirect: used %+v, data %q", used, got[:5])
	}

	// NO_INTERRUPT suppresses the interrupt, not the work.
	q.SetAvailFlags(virtiotest.AvailNoInterrupt)
	d.ISR()
	before := irq.n.Load()
	q.Add(virtiotest.Buf{Addr: dataBase, Len: 1}, virtiotest.Buf{Addr: dataBase + 0x1000, Len: 1, Write: true})
	d.Notify(0)
	q.WaitUsed(t, 1)
	time.Sleep(10 * time.Millisecond)
	if irq.n.Load() != before || d.ISR() != 0 {
		t.Error("interrupt despite VRING_AVAIL_F_NO_INTERRUPT")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBadChains(t *testing.T) {
	mem, tr, h, _, d := newEcho(t)
	d.Init(0, queueBase)
	q := d.Queues[0]
	cases := []struct {
		name string
		add  func() uint16
	}{
		{"loop", func() uint16 {
			q.WriteDesc(10, dataBase, 4, virtiotest.DescNext, 11)
			q.WriteDesc(11, dataBase, 4, virtiotest.DescNext, 10)
			q.Publish(10)
			return 10
		}},
		{"next out of range", func() uint16 {
			q.WriteDesc(12, dataBase, 4, virtiotest.DescNext, 999)
			q.Publish(12)
			return 12
		}},
		{"buffer outside RAM", func() uint16 {
			q.WriteDesc(13, 1<<40, 4, virtiotest.DescWrite, 0)
			q.Publish(13)
			return 13
		}},
		{"buffer straddling the end of RAM", func() uint16 {
			q.WriteDesc(14, mem.Size()-2, 4, virtiotest.DescWrite, 0)
			q.Publish(14)
			return 14
		}},
		{"huge length", func() uint16 {
			q.WriteDesc(15, 0, 0xFFFFFFFF, virtiotest.DescWrite, 0)
			q.Publish(15)
			return 15
		}},
		{"indirect not negotiated", func() uint16 {
			q.WriteDesc(16, dataBase, 32, virtiotest.DescIndirect, 0)
			q.Publish(16)
			return 16
		}},
		{"readable after writable", func() uint16 {
			q.WriteDesc(17, dataBase, 4, virtiotest.DescWrite|virtiotest.DescNext, 18)
			q.WriteDesc(18, dataBase, 4, 0, 0)
			q.Publish(17)
			return 17
		}},
	}
	for i, tc := range cases {
		head := tc.add()
		d.Notify(0)
		used := q.WaitUsed(t, 1)
		if used[0] != (virtiotest.Used{ID: uint32(head), Len: 0}) {
			t.Errorf("%s: used %+v", tc.name, used)
		}
		if h.errs.Load() != int64(i+1) {
			t.Errorf("%s: %d chain errors, want %d", tc.name, h.errs.Load(), i+1)
		}
	}
	if tr.Status()&StatusNeedsReset != 0 {
		t.Fatal("bad chains broke the queue")
	}
	// A head index beyond the queue size breaks the queue.
	q.Publish(QueueSize + 3)
	d.Notify(0)
	waitFor(t, func() bool { return tr.Status()&StatusNeedsReset != 0 })
	// The driver resets and starts over.
	d.Init(0, queueBase)
	if tr.Status()&StatusNeedsReset != 0 {
		t.Fatal("reset did not clear NEEDS_RESET")
	}
	q = d.Queues[0]
	q.Add(virtiotest.Buf{Addr: dataBase, Len: 1}, virtiotest.Buf{Addr: dataBase + 0x1000, Len: 1, Write: true})
	d.Notify(0)
	if used := q.WaitUsed(t, 1); used[0].Len != 1 {
		t.Errorf("after reset: used %+v", used)
	}
	// avail idx jumping more than a queue ahead breaks it too.
	mem.StoreUint16(q.Avail+2, 1000)
	d.Notify(0)
	waitFor(t, func() bool { return tr.Status()&StatusNeedsReset != 0 })
}

func TestDirtyTracking(t *testing.T) {
	mem, _, _, _, d := newEcho(t)
	d.Init(0, queueBase)
	q := d.Queues[0]
	out := uint64(dataBase + 0x5000)
	// Forget what the test driver wrote so far. Before the chain is added:
	// the device's first pass after DRIVER_OK may take the chain at once
	// (it writes only descriptors and the avail ring, pages not checked).
	for _, r := range mem.Regions() {
		r.TakeDirty(make([]uint64, (r.Pages()+63)/64))
	}
	q.Add(virtiotest.Buf{Addr: dataBase, Len: 8}, virtiotest.Buf{Addr: out, Len: 8, Write: true})
	d.Notify(0)
	q.WaitUsed(t, 1)
	r := mem.Regions()[0]
	bm := make([]uint64, (r.Pages()+63)/64)
	r.TakeDirty(bm)
	dirty := func(gpa uint64) bool { p := gpa / memory.PageSize; return bm[p/64]&(1<<(p%64)) != 0 }
	if !dirty(out) {
		t.Error("buffer written by the device is not dirty")
	}
	if !dirty(q.UsedRing) {
		t.Error("used ring page is not dirty")
	}
	if dirty(dataBase) {
		t.Error("buffer only read by the device is dirty")
	}
}

func TestPauseSaveRestore(t *testing.T) {
	mem, tr, _, _, d := newEcho(t)
	d.Init(1<<FeatureRingIndirect, queueBase)
	q := d.Queues[0]
	q.Add(virtiotest.Buf{Addr: dataBase, Len: 1}, virtiotest.Buf{Addr: dataBase + 0x1000, Len: 1, Write: true})
	d.Notify(0)
	q.WaitUsed(t, 1)

	tr.Pause()
	q.Add(virtiotest.Buf{Addr: dataBase, Len: 1}, virtiotest.Buf{Addr: dataBase + 0x1000, Len: 1, Write: true})
	d.Notify(0)
	time.Sleep(20 * time.Millisecond)
	if n := len(q.TakeUsed()); n != 0 {
		t.Fatalf("paused device completed %d chains", n)
	}
	s := tr.Save()
	want := State{Version: StateVersion, Status: 7, DeviceFeatures: tr.DeviceFeatures(), DriverFeatures: 1 << FeatureRingIndirect,
		Queues: []QueueState{{Size: QueueSize, PFN: queueBase >> 12, NextAvail: 1, NextUsed: 1}}, ISR: 1}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("saved %+v\nwant  %+v", s, want)
	}

	// A second device on the same memory takes over, as a migration
	// destination would.
	h2 := &echo{}
	irq2 := &irqCounter{}
	tr2 := NewTransport(mem, h2, irq2, nil)
	defer tr2.Close()
	if err := tr2.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := tr2.Save(); !reflect.DeepEqual(got, s) {
		t.Errorf("round trip %+v, want %+v", got, s)
	}
	time.Sleep(10 * time.Millisecond)
	if irq2.n.Load() != 0 || len(q.TakeUsed()) != 0 {
		t.Fatal("restored device ran before Resume")
	}
	tr2.Resume()
	used := q.WaitUsed(t, 1)
	if used[0].Len != 1 {
		t.Errorf("used after resume %+v", used)
	}
	waitFor(t, func() bool { return irq2.n.Load() >= 1 })

	bad := s
	bad.Version = 9
	if err := tr2.Restore(bad); err == nil {
		t.Error("restore accepted version 9")
	}
	bad = s
	bad.DriverFeatures |= 1 << 30
	if err := tr2.Restore(bad); err == nil {
		t.Error("restore accepted features the device does not offer")
	}
	bad = s
	bad.Queues = nil
	if err := tr2.Restore(bad); err == nil {
		t.Error("restore accepted a wrong queue count")
	}
}

func TestSegments(t *testing.T) {
	bufs := []Buffer{{0x1000, 4}, {0x2000, 4}, {0x3000, 4}}
	got := segments(bufs, 2, 7)
	want := []Segment{{0x1002, 2}, {0x2000, 4}, {0x3000, 1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("segments %+v, want %+v", got, want)
	}
	if s := segments(bufs, 20, 4); len(s) != 0 {
		t.Errorf("past the end: %+v", s)
	}
}
