package wire

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// connReadBuffer is the read buffer of a Conn. Reads of page bytes larger
// than it bypass it and land directly in guest RAM.
const connReadBuffer = 64 << 10

// Conn is one migration connection: a net.Conn with a buffered reader for
// frame headers and small payloads. One goroutine may read while others
// write; writes of whole frames are serialized. After any read error the
// stream position is unknown: close the connection.
type Conn struct {
	nc net.Conn
	r  *bufio.Reader // used by the single reader only

	// wmu serializes writers so that frames never interleave.
	wmu  sync.Mutex
	head [HeaderSize]byte // header scratch of WriteFrame, guarded by wmu
}

// NewConn wraps nc.
func NewConn(nc net.Conn) *Conn {
	return &Conn{nc: nc, r: bufio.NewReaderSize(nc, connReadBuffer)}
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// SetDeadline, SetReadDeadline and SetWriteDeadline set deadlines on the
// underlying connection.
func (c *Conn) SetDeadline(t time.Time) error      { return c.nc.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.nc.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// WriteHello writes h.
func (c *Conn) WriteHello(h Hello) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return WriteHello(c.nc, h)
}

// ReadHello reads and validates the peer's HELLO.
func (c *Conn) ReadHello() (Hello, error) { return ReadHello(c.r) }

// WriteFrame writes one frame; header and payload leave in one writev.
func (c *Conn) WriteFrame(t Type, flags uint16, iter uint32, payload []byte) error {
	h := Header{Type: t, Flags: flags, Iteration: iter, Length: uint64(len(payload))}
	if err := h.Check(); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	bufs := net.Buffers{AppendHeader(c.head[:0], h)}
	if len(payload) > 0 {
		bufs = append(bufs, payload)
	}
	if _, err := bufs.WriteTo(c.nc); err != nil {
		return fmt.Errorf("wire: write %v frame: %w", t, err)
	}
	return nil
}

// WritePages writes one PAGES frame (see the package function WritePages).
func (c *Conn) WritePages(iter uint32, runs []Run) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return WritePages(c.nc, iter, runs)
}

// ReadHeader reads and validates the next frame header.
func (c *Conn) ReadHeader() (Header, error) { return ReadHeader(c.r) }

// ReadFrame reads the next frame whole. It refuses a payload longer than
// maxLen or the type's own limit before reading it; use it for control
// frames and ReadHeader plus ReadPages for PAGES.
func (c *Conn) ReadFrame(maxLen uint64) (Header, []byte, error) {
	h, err := c.ReadHeader()
	if err != nil {
		return h, nil, err
	}
	p, err := ReadPayload(c.r, h, maxLen)
	return h, p, err
}

// ReadPages reads the payload of a PAGES frame whose header was just read
// into dst (see the package function ReadPages).
func (c *Conn) ReadPages(h Header, dst PageSink) (Stats, error) {
	return ReadPages(c.r, h, dst)
}

// Discard skips the payload of a frame whose header was just read.
func (c *Conn) Discard(h Header) error {
	if _, err := io.CopyN(io.Discard, c.r, int64(h.Length)); err != nil {
		return fmt.Errorf("wire: skip %v payload: %w", h.Type, err)
	}
	return nil
}
