package net

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/devices/virtio"
	"github.com/godwit-vmm/godwit/internal/devices/virtio/virtiotest"
	"github.com/godwit-vmm/godwit/internal/memory"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

// fileBackend is a Backend over one end of a SOCK_SEQPACKET socketpair.
type fileBackend struct{ f *os.File }

func (b fileBackend) ReadPacket(p []byte) (int, error) { return b.f.Read(p) }
func (b fileBackend) WritePacket(p []byte) error       { _, err := b.f.Write(p); return err }
func (b fileBackend) Close() error                     { return b.f.Close() }

func socketPair(t *testing.T) (dev fileBackend, host *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	host = os.NewFile(uintptr(fds[1]), "host")
	t.Cleanup(func() { host.Close() })
	return fileBackend{os.NewFile(uintptr(fds[0]), "device")}, host
}

type irqCounter struct{ n atomic.Int64 }

func (c *irqCounter) Trigger() error { c.n.Add(1); return nil }

var testMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

const (
	rxBase   = 0x10000
	txBase   = 0x20000
	ctrlBase = 0x30000
	bufBase  = 0x100000
)

func setup(t *testing.T, features uint32) (*memory.Guest, *Device, *irqCounter, *virtiotest.Driver, *os.File) {
	t.Helper()
	mem, err := memory.New(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	be, host := socketPair(t)
	irq := &irqCounter{}
	d := New(mem, be, testMAC, irq, nil)
	t.Cleanup(func() { d.Close() })
	drv := virtiotest.NewDriver(t, mem, d)
	drv.Init(features, rxBase, txBase, ctrlBase)
	return mem, d, irq, drv, host
}

const allFeatures = 1<<FeatureMAC | 1<<FeatureStatus | 1<<FeatureCtrlVQ | 1<<FeatureGuestAnnounce | 1<<virtio.FeatureRingIndirect

func arpFrame(ip [4]byte) []byte {
	f := make([]byte, HeaderSize+14+28)
	e := f[HeaderSize:]
	copy(e[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(e[6:12], testMAC[:])
	binary.BigEndian.PutUint16(e[12:], 0x0806)
	a := e[14:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], 0x0800)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:14], testMAC[:])
	copy(a[14:18], ip[:])
	copy(a[24:28], ip[:])
	return f
}

func TestConfig(t *testing.T) {
	_, _, _, drv, _ := setup(t, allFeatures)
	var mac [6]byte
	for i := range mac {
		mac[i] = byte(drv.Read(virtiotest.RegConfig+uint64(i), 1))
	}
	if mac != testMAC {
		t.Errorf("config MAC %x", mac)
	}
	if st := drv.Read(virtiotest.RegConfig+6, 2); st != StatusLinkUp {
		t.Errorf("status %#x", st)
	}
	if f := drv.Read(virtiotest.RegDeviceFeatures, 4); f&0xFFFFFF != 1<<FeatureMAC|1<<FeatureStatus|1<<FeatureCtrlVQ|1<<FeatureGuestAnnounce {
		t.Errorf("features %#x", f)
	}
}

func TestTransmit(t *testing.T) {
	mem, d, irq, drv, host := setup(t, allFeatures)
	tx := drv.Queues[queueTX]
	pkt := arpFrame([4]byte{10, 0, 0, 7})
	// Header and frame in separate buffers, frame split in two.
	mem.WriteAt(pkt, bufBase)
	tx.Add(virtiotest.Buf{Addr: bufBase, Len: HeaderSize}, virtiotest.Buf{Addr: bufBase + HeaderSize, Len: 20},
		virtiotest.Buf{Addr: bufBase + HeaderSize + 20, Len: uint32(len(pkt) - HeaderSize - 20)})
	drv.Notify(queueTX)
	got := make([]byte, MaxPacket)
	host.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := host.Read(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:n], pkt) {
		t.Errorf("host got %x\nwant %x", got[:n], pkt)
	}
	if u := tx.WaitUsed(t, 1); u[0].Len != 0 {
		t.Errorf("tx used %+v", u)
	}
	waitFor(t, func() bool { return irq.n.Load() > 0 })
	if ip, ok := d.GuestIPv4(); !ok || ip.String() != "10.0.0.7" {
		t.Errorf("guest IPv4 %v %v", ip, ok)
	}
	if s := d.Stats(); s.TXPackets != 1 || s.TXBytes != uint64(len(pkt)-HeaderSize) {
		t.Errorf("stats %+v", s)
	}
	// A too-short chain is dropped but completed.
	tx.Add(virtiotest.Buf{Addr: bufBase, Len: 4})
	drv.Notify(queueTX)
	tx.WaitUsed(t, 1)
	if s := d.Stats(); s.TXDropped != 1 {
		t.Errorf("stats after short packet %+v", s)
	}
}

func TestReceive(t *testing.T) {
	mem, d, irq, drv, host := setup(t, allFeatures)
	rx := drv.Queues[queueRX]
	pkt := arpFrame([4]byte{192, 168, 1, 1})
	// A packet that arrives before any buffer waits for one.
	if _, err := host.Write(pkt); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(d.rxq) == 0 }) // the worker holds it
	for _, r := range mem.Regions() {
		r.TakeDirty(make([]uint64, (r.Pages()+63)/64))
	}
	rx.Add(virtiotest.Buf{Addr: bufBase, Len: HeaderSize, Write: true}, virtiotest.Buf{Addr: bufBase + 0x1000, Len: 1514, Write: true})
	drv.Notify(queueRX)
	u := rx.WaitUsed(t, 1)
	if u[0].Len != uint32(len(pkt)) {
		t.Errorf("rx used %+v, want len %d", u, len(pkt))
	}
	got := make([]byte, len(pkt))
	mem.ReadAt(got[:HeaderSize], bufBase)
	mem.ReadAt(got[HeaderSize:], bufBase+0x1000)
	if !bytes.Equal(got, pkt) {
		t.Errorf("guest got %x", got)
	}
	waitFor(t, func() bool { return irq.n.Load() > 0 })
	// Dirty tracking: the receive buffer and the used ring pages.
	r := mem.Regions()[0]
	bm := make([]uint64, (r.Pages()+63)/64)
	r.TakeDirty(bm)
	for _, gpa := range []uint64{bufBase, bufBase + 0x1000, rx.UsedRing} {
		p := gpa / memory.PageSize
		if bm[p/64]&(1<<(p%64)) == 0 {
			t.Errorf("page of %#x not dirty after receive", gpa)
		}
	}
	// A buffer too small for the packet: the packet is dropped, the
	// buffer stays available for the next one.
	rx.Add(virtiotest.Buf{Addr: bufBase, Len: 20, Write: true})
	drv.Notify(queueRX)
	host.Write(pkt)
	waitFor(t, func() bool { return d.Stats().RXDropped == 1 })
	if n := len(rx.TakeUsed()); n != 0 {
		t.Errorf("small buffer used %d times", n)
	}
	if s := d.Stats(); s.RXPackets != 1 {
		t.Errorf("stats %+v", s)
	}
}

func ctrlCommand(t *testing.T, mem *memory.Guest, drv *virtiotest.Driver, class, cmd byte) byte {
	t.Helper()
	q := drv.Queues[queueCtrl]
	mem.WriteAt([]byte{class, cmd, 0xFF}, bufBase+0x8000)
	q.Add(virtiotest.Buf{Addr: bufBase + 0x8000, Len: 2}, virtiotest.Buf{Addr: bufBase + 0x8002, Len: 1, Write: true})
	drv.Notify(queueCtrl)
	if u := q.WaitUsed(t, 1); u[0].Len != 1 {
		t.Fatalf("ctrl used %+v", u)
	}
	ack := []byte{0}
	mem.ReadAt(ack, bufBase+0x8002)
	return ack[0]
}

func TestAnnounce(t *testing.T) {
	mem, d, irq, drv, _ := setup(t, allFeatures)
	drv.ISR()
	before := irq.n.Load()
	if !d.Announce() {
		t.Fatal("Announce with GUEST_ANNOUNCE negotiated returned false")
	}
	if irq.n.Load() != before+1 || drv.ISR()&virtio.ISRConfig == 0 {
		t.Error("no configuration interrupt")
	}
	if st := drv.Read(virtiotest.RegConfig+6, 2); st != StatusLinkUp|StatusAnnounce {
		t.Errorf("status after Announce %#x", st)
	}
	if ack := ctrlCommand(t, mem, drv, ctrlClassAnnounce, ctrlAnnounceAck); ack != ctrlOK {
		t.Errorf("announce ack answered %d", ack)
	}
	if st := drv.Read(virtiotest.RegConfig+6, 2); st != StatusLinkUp {
		t.Errorf("status after ack %#x", st)
	}
	if ack := ctrlCommand(t, mem, drv, ctrlClassRX, 0); ack != ctrlOK {
		t.Errorf("rx mode answered %d", ack)
	}
	if ack := ctrlCommand(t, mem, drv, 1, 0); ack != ctrlErr {
		t.Errorf("MAC class answered %d", ack)
	}
	// Without the feature, Announce does nothing.
	_, d2, _, _, _ := setup(t, 1<<FeatureMAC)
	if d2.Announce() {
		t.Error("Announce without GUEST_ANNOUNCE returned true")
	}
}

func TestSaveRestore(t *testing.T) {
	mem, d, _, drv, host := setup(t, allFeatures)
	tx := drv.Queues[queueTX]
	pkt := arpFrame([4]byte{10, 1, 2, 3})
	mem.WriteAt(pkt, bufBase)
	tx.Add(virtiotest.Buf{Addr: bufBase, Len: uint32(len(pkt))})
	drv.Notify(queueTX)
	tx.WaitUsed(t, 1)
	d.Announce()
	d.Pause()
	s := d.Save()
	if s.GuestIPv4 != "10.1.2.3" || s.Status != StatusLinkUp|StatusAnnounce || s.Transport.Queues[queueTX].NextUsed != 1 {
		t.Errorf("saved %+v", s)
	}

	be2, _ := socketPair(t)
	irq2 := &irqCounter{}
	d2 := New(mem, be2, testMAC, irq2, nil)
	defer d2.Close()
	if err := d2.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := d2.Save(); !reflect.DeepEqual(got, s) {
		t.Errorf("round trip\n%+v\nwant\n%+v", got, s)
	}
	d2.Resume()
	waitFor(t, func() bool { return irq2.n.Load() > 0 })
	// The restored device carries on with the same rings.
	drv.Dev = d2
	tx.Add(virtiotest.Buf{Addr: bufBase, Len: uint32(len(pkt))})
	drv.Notify(queueTX)
	tx.WaitUsed(t, 1)

	other := s
	other.MAC[5]++
	d3 := New(mem, fileBackend{mustDevNull(t)}, testMAC, nil, nil)
	defer d3.Close()
	if err := d3.Restore(other); err == nil {
		t.Error("restore with another MAC succeeded")
	}
	_ = host
}

func mustDevNull(t *testing.T) *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	return f
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

func TestTAP(t *testing.T) {
	testenv.RequireNetns(t) // root (CAP_NET_ADMIN) and /dev/net/tun
	name := fmt.Sprintf("gdwt%d", os.Getpid()%100000)
	tap, err := OpenTAP(name)
	if err != nil {
		t.Fatal(err)
	}
	if tap.Name() != name {
		t.Errorf("name %q, want %q", tap.Name(), name)
	}
	flags, err := os.ReadFile("/sys/class/net/" + name + "/flags")
	if err != nil {
		t.Fatalf("TAP not visible: %v", err)
	}
	var v uint32
	fmt.Sscanf(string(flags), "0x%x", &v)
	if v&unix.IFF_UP == 0 {
		t.Errorf("TAP not up: flags %s", flags)
	}
	if _, err := OpenTAP(name); err == nil || !bytes.Contains([]byte(err.Error()), []byte("device busy")) {
		t.Errorf("second open: %v", err)
	}
	// A blocked read is released by Close.
	done := make(chan error, 1)
	go func() { _, err := tap.ReadPacket(make([]byte, MaxPacket)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ReadPacket still blocked after Close")
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := os.Stat("/sys/class/net/" + name); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("TAP still exists after Close")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := OpenTAP("this-name-is-too-long"); err == nil {
		t.Error("accepted a 21-character name")
	}
}

// TestPendingRXHandedOver: packets that reach a paused device go, with
// its state, to the device that takes over, which delivers them first
// and in order; the source keeps them too, for a migration that fails.
func TestPendingRXHandedOver(t *testing.T) {
	mem, d, _, drv, host := setup(t, allFeatures)
	d.Pause()
	var sent [][]byte
	for i := range 3 {
		pkt := arpFrame([4]byte{10, 0, 0, byte(i + 1)})
		if _, err := host.Write(pkt); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, pkt)
	}
	waitFor(t, func() bool { return len(d.rxq) == 3 })
	pending := d.PendingRX()
	if !reflect.DeepEqual(pending, sent) {
		t.Fatalf("PendingRX = %d packets, want the 3 sent in order", len(pending))
	}
	if again := d.PendingRX(); !reflect.DeepEqual(again, sent) {
		t.Errorf("a second PendingRX = %d packets: the packets must stay queued", len(again))
	}
	// Two packets travel in the state, the third after it (a source
	// with late-rx sends what arrived while the state travelled).
	s := d.Save()
	s.Pending = pending[:2]

	be2, host2 := socketPair(t)
	d2 := New(mem, be2, testMAC, &irqCounter{}, nil)
	defer d2.Close()
	if err := d2.Restore(s); err != nil {
		t.Fatal(err)
	}
	if err := d2.AddPending(pending[2:]); err != nil {
		t.Fatal(err)
	}
	// One more than the bound, counting those already held, is refused
	// and leaves the held ones alone.
	small := make([][]byte, maxPendingPackets-2)
	for i := range small {
		small[i] = make([]byte, HeaderSize+60)
	}
	if err := d2.AddPending(small); err == nil || !strings.Contains(err.Error(), "257 pending") || len(d2.backlog) != 3 {
		t.Errorf("AddPending beyond %d packets = %v, %d held; want a refusal and 3 held", maxPendingPackets, err, len(d2.backlog))
	}
	// A packet the destination's own backend reads comes after them.
	later := arpFrame([4]byte{10, 0, 0, 9})
	if _, err := host2.Write(later); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(d2.rxq) == 1 })
	drv.Dev = d2
	rx := drv.Queues[queueRX]
	for i := range 4 {
		base := uint64(bufBase + i*0x2000)
		rx.Add(virtiotest.Buf{Addr: base, Len: HeaderSize, Write: true}, virtiotest.Buf{Addr: base + 0x1000, Len: 1514, Write: true})
	}
	d2.Resume()
	used := rx.WaitUsed(t, 4)
	for i, want := range append(sent, later) {
		base := uint64(bufBase + i*0x2000)
		got := make([]byte, len(want))
		mem.ReadAt(got[:HeaderSize], base)
		mem.ReadAt(got[HeaderSize:], base+0x1000)
		if used[i].Len != uint32(len(want)) || !bytes.Equal(got, want) {
			t.Errorf("packet %d on the destination: used %+v, got %x, want %x", i, used[i], got, want)
		}
	}

	// Bad pending lists from a peer are refused.
	d3 := New(mem, fileBackend{mustDevNull(t)}, testMAC, nil, nil)
	defer d3.Close()
	for name, p := range map[string][][]byte{
		"too many":  make([][]byte, maxPendingPackets+1),
		"too short": {make([]byte, HeaderSize-1)},
		"too long":  {make([]byte, MaxPacket+1)},
		"too large": func() [][]byte {
			var l [][]byte
			for range 20 {
				l = append(l, make([]byte, 60000))
			}
			return l
		}(),
	} {
		bad := s
		bad.Pending = p
		if err := d3.Restore(bad); err == nil || !strings.Contains(err.Error(), "pending") {
			t.Errorf("%s: restore = %v, want a refusal naming the pending packets", name, err)
		}
		if err := d3.AddPending(p); err == nil || !strings.Contains(err.Error(), "pending") || len(d3.backlog) != 0 {
			t.Errorf("%s: AddPending = %v (%d held), want a refusal naming the pending packets", name, err, len(d3.backlog))
		}
	}
}
