// Package virtiotest is a minimal legacy virtio driver for tests: it lays
// out split queues in a memory.Guest by hand and drives a device's BAR0
// registers the way a guest driver would.
//
// Who may import: tests of the virtio packages only.
package virtiotest

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/devices"
	"github.com/godwit-vmm/godwit/internal/devices/pci"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// QueueSize matches virtio.QueueSize (not imported, to keep this package
// usable from the virtio package's own tests).
const QueueSize = 256

// RingBytes is the size of a legacy ring of QueueSize entries.
const RingBytes = (16*QueueSize+6+2*QueueSize+4095)&^4095 + 6 + 8*QueueSize

// Register offsets, as in the virtio package.
const (
	RegDeviceFeatures = 0x00
	RegDriverFeatures = 0x04
	RegQueuePFN       = 0x08
	RegQueueSize      = 0x0C
	RegQueueSelect    = 0x0E
	RegQueueNotify    = 0x10
	RegStatus         = 0x12
	RegISR            = 0x13
	RegConfig         = 0x14
)

// Descriptor and avail flags.
const (
	DescNext         = 1
	DescWrite        = 2
	DescIndirect     = 4
	AvailNoInterrupt = 1
)

// Buf is one buffer of a chain the test driver submits.
type Buf struct {
	Addr  uint64
	Len   uint32
	Write bool // device writes it
}

// Used is one used-ring element.
type Used struct {
	ID  uint32
	Len uint32
}

// Queue is the driver side of one queue.
type Queue struct {
	mem      *memory.Guest
	Desc     uint64
	Avail    uint64
	UsedRing uint64
	nextDesc uint16
	availIdx uint16
	lastUsed uint16
}

// Driver drives one device.
type Driver struct {
	tb     testing.TB
	Mem    *memory.Guest
	Dev    pci.Device
	Queues []*Queue
}

// NewDriver returns a driver for dev.
func NewDriver(tb testing.TB, mem *memory.Guest, dev pci.Device) *Driver {
	return &Driver{tb: tb, Mem: mem, Dev: dev}
}

// Read reads an n-byte register.
func (d *Driver) Read(off uint64, n int) uint32 {
	b := make([]byte, n)
	d.Dev.BARRead(0, off, b)
	return uint32(devices.LoadLE(b))
}

// Write writes an n-byte register.
func (d *Driver) Write(off uint64, n int, v uint32) {
	b := make([]byte, n)
	devices.StoreLE(b, uint64(v))
	d.Dev.BARWrite(0, off, b)
}

// Init resets the device and brings it up like Linux's legacy driver:
// ACKNOWLEDGE, DRIVER, features, one queue per base address (each 4096-
// aligned, with room for the ring), DRIVER_OK.
func (d *Driver) Init(features uint32, bases ...uint64) {
	d.Write(RegStatus, 1, 0)
	d.Write(RegStatus, 1, 1)
	d.Write(RegStatus, 1, 1|2)
	offered := d.Read(RegDeviceFeatures, 4)
	d.Write(RegDriverFeatures, 4, features&offered)
	d.Queues = nil
	for i, base := range bases {
		d.Write(RegQueueSelect, 2, uint32(i))
		if n := d.Read(RegQueueSize, 2); n != QueueSize {
			d.tb.Fatalf("queue %d size %d, want %d", i, n, QueueSize)
		}
		d.Mem.WriteAt(make([]byte, RingBytes), base) // a fresh ring, as a driver allocates it
		d.Write(RegQueuePFN, 4, uint32(base>>12))
		d.Queues = append(d.Queues, NewQueue(d.Mem, base))
	}
	d.Write(RegStatus, 1, 1|2|4)
}

// NewQueue returns the driver view of a legacy queue at base.
func NewQueue(mem *memory.Guest, base uint64) *Queue {
	avail := base + 16*QueueSize
	used := (avail + 6 + 2*QueueSize + 4095) &^ 4095
	return &Queue{mem: mem, Desc: base, Avail: avail, UsedRing: used}
}

// Notify kicks queue i.
func (d *Driver) Notify(i int) { d.Write(RegQueueNotify, 2, uint32(i)) }

// ISR reads (and so clears) the ISR.
func (d *Driver) ISR() uint8 { return uint8(d.Read(RegISR, 1)) }

// Add writes bufs as a descriptor chain and publishes it; it returns the
// head index.
func (q *Queue) Add(bufs ...Buf) uint16 {
	head := q.nextDesc
	for i, b := range bufs {
		idx := q.nextDesc
		q.nextDesc = (q.nextDesc + 1) % QueueSize
		var flags uint16
		if b.Write {
			flags |= DescWrite
		}
		if i < len(bufs)-1 {
			flags |= DescNext
		}
		q.WriteDesc(idx, b.Addr, b.Len, flags, q.nextDesc)
	}
	q.Publish(head)
	return head
}

// WriteDesc writes descriptor idx of the queue's table.
func (q *Queue) WriteDesc(idx uint16, addr uint64, n uint32, flags, next uint16) {
	WriteDescAt(q.mem, q.Desc+16*uint64(idx), addr, n, flags, next)
}

// WriteDescAt writes a descriptor at gpa (for indirect tables).
func WriteDescAt(mem *memory.Guest, gpa uint64, addr uint64, n uint32, flags, next uint16) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	mem.WriteAt(b[:], gpa)
}

// Publish puts head in the avail ring and bumps the avail idx.
func (q *Queue) Publish(head uint16) {
	q.mem.StoreUint16(q.Avail+4+2*uint64(q.availIdx%QueueSize), head)
	q.availIdx++
	q.mem.StoreUint16(q.Avail+2, q.availIdx)
}

// SetAvailFlags sets the avail ring flags.
func (q *Queue) SetAvailFlags(f uint16) { q.mem.StoreUint16(q.Avail, f) }

// UsedIdx returns the device's used idx.
func (q *Queue) UsedIdx() uint16 {
	v, _ := q.mem.LoadUint16(q.UsedRing + 2)
	return v
}

// TakeUsed returns the used elements added since the last call.
func (q *Queue) TakeUsed() []Used {
	var out []Used
	for idx := q.UsedIdx(); q.lastUsed != idx; q.lastUsed++ {
		var b [8]byte
		q.mem.ReadAt(b[:], q.UsedRing+4+8*uint64(q.lastUsed%QueueSize))
		out = append(out, Used{binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint32(b[4:])})
	}
	return out
}

// WaitUsed waits up to 5 s until n more used elements appear and returns
// them.
func (q *Queue) WaitUsed(tb testing.TB, n int) []Used {
	tb.Helper()
	var out []Used
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n {
		out = append(out, q.TakeUsed()...)
		if len(out) >= n {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("waited 5s for %d used elements, got %d", n, len(out))
		}
		time.Sleep(time.Millisecond)
	}
	return out
}
