// Package blk is a virtio-blk device (legacy virtio-pci) on a raw image
// file.
//
// Requests: IN (read), OUT (write), FLUSH (fdatasync) and GET_ID; anything
// else is answered UNSUPP. Reads go from the file straight into guest
// memory (pread into the guest pages, then MarkDirty), writes straight from
// it. Features offered: SEG_MAX, FLUSH, and RO for a read-only disk.
//
// Who may import: the vm layer (to create the device and put it on the PCI
// bus) and migration (Pause, which also syncs the image, Save, Restore,
// Resume).
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/devices"
	"github.com/godwit-vmm/godwit/internal/devices/pci"
	"github.com/godwit-vmm/godwit/internal/devices/virtio"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// SectorSize is the virtio-blk sector.
const SectorSize = 512

// Feature bits.
const (
	FeatureSegMax = 2
	FeatureRO     = 5
	FeatureFlush  = 9
)

// Request types and status values.
const (
	reqIn    = 0
	reqOut   = 1
	reqFlush = 4
	reqGetID = 8

	statusOK     = 0
	statusIOErr  = 1
	statusUnsupp = 2

	reqHeaderSize = 16
	idLen         = 20 // VIRTIO_BLK_ID_BYTES
)

// segMax is the most data segments a request may have: a chain is at most
// QueueSize descriptors, two of which hold the header and the status.
const segMax = virtio.QueueSize - 2

// Options configure a disk.
type Options struct {
	ReadOnly bool   // open read-only and offer VIRTIO_BLK_F_RO
	Lock     bool   // take an exclusive (shared if ReadOnly) flock on the image
	Serial   string // GET_ID answer (at most 20 bytes); default from the file name
	Log      *slog.Logger
}

// Stats counts requests.
type Stats struct {
	Reads, Writes, Flushes uint64
	ReadBytes, WriteBytes  uint64
	IOErrors, Unsupported  uint64
	BadChains              uint64
}

// Device is a virtio-blk device. It implements pci.Device.
type Device struct {
	t        *virtio.Transport
	mem      *memory.Guest
	f        *os.File
	path     string
	readOnly bool
	capacity uint64 // in sectors
	serial   [idLen]byte

	reads, writes, flushes atomic.Uint64
	readBytes, writeBytes  atomic.Uint64
	ioErrors, unsupported  atomic.Uint64
	badChains              atomic.Uint64
}

// New opens the raw image at path (O_RDWR, or O_RDONLY when read-only)
// and returns the device, raising irq.
func New(mem *memory.Guest, path string, opts Options, irq devices.Interrupt) (*Device, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("virtio-blk: open disk image: %w", err)
	}
	fail := func(err error) (*Device, error) {
		f.Close()
		return nil, err
	}
	if opts.Lock {
		if err := lockImage(f, path, opts.ReadOnly); err != nil {
			return fail(err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("virtio-blk: disk %s: %w", path, err))
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		return fail(fmt.Errorf("virtio-blk: disk %s is not a regular file (raw images only)", path))
	}
	if size%SectorSize != 0 {
		return fail(fmt.Errorf("virtio-blk: disk %s is %d bytes, not a multiple of %d; pad it (truncate -s %%%d)", path, size, SectorSize, SectorSize))
	}
	if len(opts.Serial) > idLen {
		return fail(fmt.Errorf("virtio-blk: disk %s: serial %q longer than %d bytes", path, opts.Serial, idLen))
	}
	d := &Device{mem: mem, f: f, path: path, readOnly: opts.ReadOnly, capacity: uint64(size) / SectorSize}
	serial := opts.Serial
	if serial == "" {
		serial = filepath.Base(path)
	}
	copy(d.serial[:], serial)
	d.t = virtio.NewTransport(mem, d, irq, opts.Log)
	return d, nil
}

// Transport returns the device's virtio transport.
func (d *Device) Transport() *virtio.Transport { return d.t }

// Config implements pci.Device.
func (d *Device) Config() *pci.ConfigSpace { return d.t.Config() }

// BARRead implements pci.Device.
func (d *Device) BARRead(bar int, off uint64, data []byte) { d.t.BARRead(bar, off, data) }

// BARWrite implements pci.Device.
func (d *Device) BARWrite(bar int, off uint64, data []byte) { d.t.BARWrite(bar, off, data) }

// Capacity returns the disk size in sectors.
func (d *Device) Capacity() uint64 { return d.capacity }

// Image returns the open image file, so that a migration can describe the
// very file the guest writes (its path may name another file by then).
// The device owns it: callers read or stat it, never close it.
func (d *Device) Image() *os.File { return d.f }

// DeviceType implements virtio.Handler.
func (d *Device) DeviceType() uint16 { return virtio.TypeBlock }

// Features implements virtio.Handler.
func (d *Device) Features() uint32 {
	f := uint32(1<<FeatureSegMax | 1<<FeatureFlush)
	if d.readOnly {
		f |= 1 << FeatureRO
	}
	return f
}

// NumQueues implements virtio.Handler.
func (d *Device) NumQueues() int { return 1 }

// ConfigSize implements virtio.Handler: capacity u64, size_max u32,
// seg_max u32, geometry (u16, u8, u8), blk_size u32.
func (d *Device) ConfigSize() int { return 24 }

// ReadConfig implements virtio.Handler.
func (d *Device) ReadConfig(off int, data []byte) {
	var cfg [24]byte
	binary.LittleEndian.PutUint64(cfg[0:], d.capacity)
	binary.LittleEndian.PutUint32(cfg[12:], segMax)
	binary.LittleEndian.PutUint32(cfg[20:], SectorSize)
	copy(data, cfg[off:])
}

// WriteConfig implements virtio.Handler; the configuration is read-only.
func (d *Device) WriteConfig(off int, data []byte) {}

// Reset implements virtio.Handler.
func (d *Device) Reset() {}

// Process implements virtio.Handler.
func (d *Device) Process(q *virtio.Queue) error {
	for {
		c, err := q.Pop()
		if c == nil {
			return err
		}
		var n uint32
		if err != nil {
			d.badChains.Add(1)
			d.t.Logger().Debug("bad request chain", "err", err)
			n = d.finish(c, 0, statusIOErr)
		} else {
			n = d.handle(c)
		}
		if err := q.Push(c.Head, n); err != nil {
			return err
		}
	}
}

// finish writes status as the last byte of c's writable stream, if it has
// one, and returns the used length: written data bytes plus the status.
func (d *Device) finish(c *virtio.Chain, written uint64, status byte) uint32 {
	if c.WriteLen == 0 {
		return 0
	}
	if status == statusIOErr {
		d.ioErrors.Add(1)
	}
	if _, err := c.WriteAt([]byte{status}, c.WriteLen-1); err != nil {
		return uint32(written)
	}
	return uint32(written + 1)
}

// handle runs one well-formed chain and returns the used length.
func (d *Device) handle(c *virtio.Chain) uint32 {
	var hdr [reqHeaderSize]byte
	if n, _ := c.ReadAt(hdr[:], 0); n != reqHeaderSize || c.WriteLen == 0 {
		d.badChains.Add(1)
		return d.finish(c, 0, statusIOErr)
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	switch typ {
	case reqIn:
		n := c.WriteLen - 1
		if !d.inRange(sector, n) {
			return d.finish(c, 0, statusIOErr)
		}
		if err := d.read(c, sector*SectorSize, n); err != nil {
			d.t.Logger().Warn("read disk", "sector", sector, "bytes", n, "err", err)
			return d.finish(c, 0, statusIOErr)
		}
		d.reads.Add(1)
		d.readBytes.Add(n)
		return d.finish(c, n, statusOK)
	case reqOut:
		n := c.ReadLen - reqHeaderSize
		if d.readOnly || !d.inRange(sector, n) {
			return d.finish(c, 0, statusIOErr)
		}
		if err := d.write(c, sector*SectorSize, n); err != nil {
			d.t.Logger().Warn("write disk", "sector", sector, "bytes", n, "err", err)
			return d.finish(c, 0, statusIOErr)
		}
		d.writes.Add(1)
		d.writeBytes.Add(n)
		return d.finish(c, 0, statusOK)
	case reqFlush:
		if err := d.sync(); err != nil {
			d.t.Logger().Warn("flush disk", "err", err)
			return d.finish(c, 0, statusIOErr)
		}
		d.flushes.Add(1)
		return d.finish(c, 0, statusOK)
	case reqGetID:
		n := min(c.WriteLen-1, idLen)
		w, _ := c.WriteAt(d.serial[:n], 0)
		return d.finish(c, uint64(w), statusOK)
	}
	d.unsupported.Add(1)
	return d.finish(c, 0, statusUnsupp)
}

// inRange reports whether n bytes from sector are whole sectors inside the
// disk.
func (d *Device) inRange(sector, n uint64) bool {
	return n%SectorSize == 0 && sector <= d.capacity && n/SectorSize <= d.capacity-sector
}

// read preads the image at off straight into the chain's data buffers.
func (d *Device) read(c *virtio.Chain, off, n uint64) error {
	for _, s := range c.WriteSegments(0, n) {
		b, err := d.mem.Slice(s.Addr, s.Len)
		if err != nil {
			return err
		}
		_, rerr := d.f.ReadAt(b, int64(off))
		// Mark even after a failed read: part of b may have changed.
		if err := d.mem.MarkDirty(s.Addr, s.Len); err != nil {
			return err
		}
		if rerr != nil {
			return rerr
		}
		off += s.Len
	}
	return nil
}

// write pwrites the chain's data buffers to the image at off.
func (d *Device) write(c *virtio.Chain, off, n uint64) error {
	for _, s := range c.ReadSegments(reqHeaderSize, n) {
		b, err := d.mem.Slice(s.Addr, s.Len)
		if err != nil {
			return err
		}
		if _, err := d.f.WriteAt(b, int64(off)); err != nil {
			return err
		}
		off += s.Len
	}
	return nil
}

func (d *Device) sync() error {
	if d.readOnly {
		return nil
	}
	if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
		return fmt.Errorf("virtio-blk: fdatasync %s: %w", d.path, err)
	}
	return nil
}

// Stats returns the request counters.
func (d *Device) Stats() Stats {
	return Stats{
		Reads: d.reads.Load(), Writes: d.writes.Load(), Flushes: d.flushes.Load(),
		ReadBytes: d.readBytes.Load(), WriteBytes: d.writeBytes.Load(),
		IOErrors: d.ioErrors.Load(), Unsupported: d.unsupported.Load(), BadChains: d.badChains.Load(),
	}
}

// Pause finishes the requests in flight, stops taking new ones and syncs
// the image to stable storage, so another host can open it.
func (d *Device) Pause() error {
	d.t.Pause()
	return d.sync()
}

// Resume undoes Pause, or starts a restored device.
func (d *Device) Resume() { d.t.Resume() }

// WaitIdle waits until the device has processed every kick so far.
func (d *Device) WaitIdle() { d.t.WaitIdle() }

// Close stops the device, syncs and closes the image (releasing its lock).
func (d *Device) Close() error {
	d.t.Close()
	err := d.sync()
	if cerr := d.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("virtio-blk: close %s: %w", d.path, cerr)
	}
	return err
}

// lockImage takes an exclusive (shared when read-only) flock on the image,
// without waiting: the fence that keeps two VMs, or two copies of one VM,
// from writing one disk.
func lockImage(f *os.File, path string, readOnly bool) error {
	how := unix.LOCK_EX
	if readOnly {
		how = unix.LOCK_SH
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("virtio-blk: disk %s is in use by another VM", path)
		}
		return fmt.Errorf("virtio-blk: lock disk %s: %w", path, err)
	}
	return nil
}

// Lock takes the image lock (see Options.Lock). A migration destination,
// which opens the image unlocked while the source still runs, takes it
// just before the VM runs.
func (d *Device) Lock() error { return lockImage(d.f, d.path, d.readOnly) }

// Unlock releases the image lock: a paused migration source, its disk
// synced, lets the destination take it.
func (d *Device) Unlock() error {
	if err := unix.Flock(int(d.f.Fd()), unix.LOCK_UN); err != nil {
		return fmt.Errorf("virtio-blk: unlock disk %s: %w", d.path, err)
	}
	return nil
}
