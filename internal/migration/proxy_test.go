package migration_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/godwit-vmm/godwit/internal/migration/wire"
)

// faultProxy is a loopback TCP proxy for fault injection: the source dials
// it instead of the Destination, and it forwards every connection to the
// Destination's listener while parsing the HELLO and the frame headers of
// both directions, so that a test can cut, stall or corrupt the session at
// an exact point of the protocol.
//
// Set the hooks before the source dials. Hook calls are serialised (one at
// a time over all connections), so closures may keep plain state.
type faultProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	// OnHello is called with the HELLO of each new connection (source to
	// destination) and may rewrite it in place; the proxy keeps parsing
	// with the original role.
	OnHello func(c *proxyConn, hello []byte)
	// OnFrame is called for every frame header, in both directions, before
	// any of the frame is forwarded, and says what to do with it.
	OnFrame func(f frameInfo) proxyAction
	// Mutate may change a frame's payload in flight: b holds the payload
	// bytes from offset off. The first call of a frame covers at least the
	// first 128 KiB of the payload (a whole PAGES run table).
	Mutate func(f frameInfo, off uint64, b []byte)
	// CutAfterData resets every connection once this many bytes (headers
	// included) have passed towards the destination on data connections;
	// 0 never does.
	CutAfterData int64

	dataBytes atomic.Int64 // towards the destination on data connections
	hookMu    sync.Mutex

	mu      sync.Mutex // guards conns, nconns, cuts
	conns   []*proxyConn
	nconns  int
	cuts    int
	closing bool
	wg      sync.WaitGroup
}

// proxyConn is one proxied connection.
type proxyConn struct {
	ID       int       // order of arrival, from 0
	Role     wire.Role // from the HELLO
	Stream   int       // data stream index
	src, dst *net.TCPConn
	done     atomic.Int32 // pumps finished
}

// frameInfo is a frame header seen by the proxy.
type frameInfo struct {
	Conn   *proxyConn
	ToDest bool // source → destination
	Type   wire.Type
	Iter   uint32
	Length uint64
}

// proxyAction is what the proxy does with a frame.
type proxyAction int

const (
	// forward passes the frame on.
	forward proxyAction = iota
	// cutAll resets every open connection on both sides (RST, as a killed
	// process or a broken link would), without forwarding the frame.
	cutAll
	// cutSource resets the source's side of every open connection without
	// forwarding the frame; the destination's sides see the reset a moment
	// later, after whatever they already wrote.
	cutSource
	// blackhole swallows this frame and everything after it in this
	// direction, leaving the connection open: a peer that stopped answering.
	blackhole
)

// newFaultProxy starts a proxy to target on a loopback port.
func newFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, ln: ln, target: target}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

// Addr is where the source should dial.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// DataBytes returns the bytes passed towards the destination on data
// connections.
func (p *faultProxy) DataBytes() int64 { return p.dataBytes.Load() }

// Conns returns the number of connections accepted so far.
func (p *faultProxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nconns
}

// Cuts returns how many times the proxy cut connections.
func (p *faultProxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

// Refuse closes the listener: new connections are refused from now on.
func (p *faultProxy) Refuse() { p.ln.Close() }

// Cut resets every open connection on both sides. New connections are
// still forwarded (unless Refuse was called).
func (p *faultProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cuts++
	for _, c := range p.conns {
		reset(c.src)
		reset(c.dst)
	}
}

// CutSource resets the source's side of every open connection.
func (p *faultProxy) CutSource() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cuts++
	for _, c := range p.conns {
		reset(c.src)
	}
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// reset closes c with SO_LINGER 0, which makes the kernel send RST.
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func (p *faultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.handle(nc.(*net.TCPConn))
	}
}

func (p *faultProxy) handle(src *net.TCPConn) {
	defer p.wg.Done()
	dc, err := net.Dial("tcp", p.target)
	if err != nil {
		reset(src)
		return
	}
	dst := dc.(*net.TCPConn)
	src.SetNoDelay(true)
	dst.SetNoDelay(true)
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		reset(src)
		reset(dst)
		return
	}
	c := &proxyConn{ID: p.nconns, src: src, dst: dst}
	p.nconns++
	p.conns = append(p.conns, c)
	p.mu.Unlock()

	var hello [wire.HelloSize]byte
	if _, err := io.ReadFull(src, hello[:]); err != nil {
		p.finish(c, dst, err)
		p.finish(c, src, err)
		return
	}
	c.Role, c.Stream = wire.Role(hello[28]), int(hello[29])
	if p.OnHello != nil {
		p.hookMu.Lock()
		p.OnHello(c, hello[:])
		p.hookMu.Unlock()
	}
	if _, err := dst.Write(hello[:]); err != nil {
		p.finish(c, dst, err)
		p.finish(c, src, err)
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.pump(c, dst, src, false)
	}()
	p.pump(c, src, dst, true)
}

// pump forwards frames from → to until either side fails, then passes the
// end on to `to`.
func (p *faultProxy) pump(c *proxyConn, from, to *net.TCPConn, toDest bool) {
	p.finish(c, to, p.forward(c, from, to, toDest))
}

// errCut ends a pump that cut the connections.
var errCut = errors.New("proxy: cut")

// forward copies frames, applying the hooks, and returns why it stopped. A
// failed write drains `from` until it ends: what the other direction still
// carries (an ERROR or ABORT before a reset) must reach its reader first,
// as it would without a proxy.
func (p *faultProxy) forward(c *proxyConn, from, to *net.TCPConn, toDest bool) error {
	buf := make([]byte, 128<<10)
	var hb [wire.HeaderSize]byte
	drain := func(err error) error {
		io.Copy(io.Discard, from)
		return err
	}
	for {
		if _, err := io.ReadFull(from, hb[:]); err != nil {
			return err
		}
		f := frameInfo{Conn: c, ToDest: toDest, Type: wire.Type(binary.LittleEndian.Uint16(hb[0:])),
			Iter: binary.LittleEndian.Uint32(hb[4:]), Length: binary.LittleEndian.Uint64(hb[8:])}
		act := forward
		if p.OnFrame != nil {
			p.hookMu.Lock()
			act = p.OnFrame(f)
			p.hookMu.Unlock()
		}
		switch act {
		case cutAll:
			p.Cut()
			return errCut
		case cutSource:
			p.CutSource()
			return errCut
		case blackhole:
			return drain(io.ErrUnexpectedEOF)
		}
		if err := p.write(c, to, hb[:]); err != nil {
			return drain(err)
		}
		for off := uint64(0); off < f.Length; {
			n := min(f.Length-off, uint64(len(buf)))
			if _, err := io.ReadFull(from, buf[:n]); err != nil {
				return err
			}
			if p.Mutate != nil {
				p.hookMu.Lock()
				p.Mutate(f, off, buf[:n])
				p.hookMu.Unlock()
			}
			if err := p.write(c, to, buf[:n]); err != nil {
				return drain(err)
			}
			off += n
		}
	}
}

// write forwards b and counts and cuts data bytes.
func (p *faultProxy) write(c *proxyConn, to *net.TCPConn, b []byte) error {
	if _, err := to.Write(b); err != nil {
		return err
	}
	if c.Role == wire.RoleData && to == c.dst {
		if n := p.dataBytes.Add(int64(len(b))); p.CutAfterData > 0 && n >= p.CutAfterData && n-int64(len(b)) < p.CutAfterData {
			p.Cut()
			return errCut
		}
	}
	return nil
}

// finish passes the end of one direction on: a clean EOF as a FIN, anything
// else as a reset. Once both directions are done, both sides are closed.
func (p *faultProxy) finish(c *proxyConn, to *net.TCPConn, err error) {
	if errors.Is(err, io.EOF) {
		to.CloseWrite()
	} else {
		reset(to)
	}
	if c.done.Add(1) == 2 {
		c.src.Close()
		c.dst.Close()
	}
}
