package virtio

import (
	"errors"
	"fmt"

	"github.com/godwit-vmm/godwit/internal/memory"
)

// Limits on one descriptor chain.
const (
	// MaxIndirect bounds an indirect table (the spec bounds a chain by the
	// queue size).
	MaxIndirect = QueueSize
	// MaxChainBytes bounds the total length of a chain's buffers.
	MaxChainBytes = 128 << 20
)

// Buffer is one guest buffer of a chain, checked to lie inside RAM.
type Buffer struct {
	Addr uint64
	Len  uint32
}

// Chain is a descriptor chain: buffers the device reads (driver to device)
// followed by buffers it writes (device to driver). Viewed as two byte
// streams, which is how devices that accept any layout should read them.
type Chain struct {
	mem      *memory.Guest
	Head     uint16
	Readable []Buffer
	Writable []Buffer
	ReadLen  uint64 // total bytes in Readable
	WriteLen uint64 // total bytes in Writable
}

func (c *Chain) add(d desc) error {
	if d.len == 0 {
		return nil
	}
	if _, err := c.mem.Slice(d.addr, uint64(d.len)); err != nil {
		return err
	}
	if c.ReadLen+c.WriteLen+uint64(d.len) > MaxChainBytes {
		return fmt.Errorf("chain longer than %d bytes", MaxChainBytes)
	}
	b := Buffer{Addr: d.addr, Len: d.len}
	if d.flags&descFWrite != 0 {
		c.Writable = append(c.Writable, b)
		c.WriteLen += uint64(d.len)
		return nil
	}
	if len(c.Writable) > 0 {
		return errors.New("readable buffer after a writable one")
	}
	c.Readable = append(c.Readable, b)
	c.ReadLen += uint64(d.len)
	return nil
}

// Segment is a part of a guest buffer: [Addr, Addr+Len).
type Segment struct {
	Addr uint64
	Len  uint64
}

// segments returns the parts of bufs covering stream bytes [off, off+n).
func segments(bufs []Buffer, off, n uint64) []Segment {
	var out []Segment
	for _, b := range bufs {
		if n == 0 {
			break
		}
		l := uint64(b.Len)
		if off >= l {
			off -= l
			continue
		}
		take := min(l-off, n)
		out = append(out, Segment{b.Addr + off, take})
		n -= take
		off = 0
	}
	return out
}

// ReadSegments returns the guest memory holding readable-stream bytes
// [off, off+n), clipped to the stream.
func (c *Chain) ReadSegments(off, n uint64) []Segment { return segments(c.Readable, off, n) }

// WriteSegments returns the guest memory holding writable-stream bytes
// [off, off+n), clipped to the stream.
func (c *Chain) WriteSegments(off, n uint64) []Segment { return segments(c.Writable, off, n) }

// ReadAt copies readable-stream bytes from off into p and returns how many
// it copied (fewer than len(p) at the end of the stream).
func (c *Chain) ReadAt(p []byte, off uint64) (int, error) {
	done := 0
	for _, s := range c.ReadSegments(off, uint64(len(p))) {
		if err := c.mem.ReadAt(p[done:done+int(s.Len)], s.Addr); err != nil {
			return done, err
		}
		done += int(s.Len)
	}
	return done, nil
}

// WriteAt copies p into the writable stream at off, through the dirty-
// tracked write path, and returns how many bytes it wrote.
func (c *Chain) WriteAt(p []byte, off uint64) (int, error) {
	done := 0
	for _, s := range c.WriteSegments(off, uint64(len(p))) {
		if err := c.mem.WriteAt(p[done:done+int(s.Len)], s.Addr); err != nil {
			return done, err
		}
		done += int(s.Len)
	}
	return done, nil
}
