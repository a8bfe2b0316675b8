package wire

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("no loopback TCP: %v", err) // every host has loopback
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestConnSession(t *testing.T) {
	cc, sc := tcpPair(t)
	if err := SetKeepalive(cc); err != nil {
		t.Fatal(err)
	}
	if d, err := userTimeout(cc); err != nil || d != UserTimeout {
		t.Errorf("TCP_USER_TIMEOUT %v, %v", d, err)
	}
	src, dst := NewConn(cc), NewConn(sc)
	for _, c := range []*Conn{src, dst} {
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
	}

	ram := newFakeRAM()
	copy(ram.mem[ram.regions[1].off:], pattern(fakePages, 9))
	data, _ := ram.find(fakeHigh, 4)
	errc := make(chan error, 1)
	go func() {
		errc <- func() error {
			if err := src.WriteHello(Hello{Role: RoleControl, Streams: 1}); err != nil {
				return err
			}
			cfg, _ := EncodeConfig(testConfig())
			if err := src.WriteFrame(TypeConfig, 0, 0, cfg); err != nil {
				return err
			}
			if _, err := src.WritePages(0, []Run{{GPA: fakeHigh, NPages: 4, Data: data}, {GPA: 0, NPages: 2, Kind: KindZero}}); err != nil {
				return err
			}
			return src.WriteFrame(TypeCommit, 0, 0, nil)
		}()
	}()

	h, err := dst.ReadHello()
	if err != nil || h.Role != RoleControl {
		t.Fatalf("HELLO %+v, %v", h, err)
	}
	fh, p, err := dst.ReadFrame(MaxConfigPayload)
	if err != nil || fh.Type != TypeConfig {
		t.Fatalf("CONFIG: %v, %v", fh, err)
	}
	if _, err := DecodeConfig(p); err != nil {
		t.Fatal(err)
	}
	fh, err = dst.ReadHeader()
	if err != nil || fh.Type != TypePages {
		t.Fatalf("PAGES: %v, %v", fh, err)
	}
	out := newFakeRAM()
	if _, err := dst.ReadPages(fh, out); err != nil {
		t.Fatal(err)
	}
	got, _ := out.find(fakeHigh, 4)
	if !bytes.Equal(got, data) {
		t.Error("pages differ")
	}
	fh, _, err = dst.ReadFrame(0)
	if err != nil || fh.Type != TypeCommit {
		t.Fatalf("COMMIT: %v, %v", fh, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// BenchmarkPagesLoopback measures PAGES encode and decode over loopback TCP,
// from one 256 MiB buffer into another, with frames of 1 MiB (16 runs of 16
// pages) and of 16 MiB (64 runs of 64 pages).
func BenchmarkPagesLoopback(b *testing.B) {
	b.Run("frame=1MiB", func(b *testing.B) { benchmarkPages(b, 16, 16) })
	b.Run("frame=16MiB", func(b *testing.B) { benchmarkPages(b, 64, 64) })
}

func benchmarkPages(b *testing.B, runPages, runsPerFrame int) {
	cc, sc := tcpPair(b)
	src, dst := NewConn(cc), NewConn(sc)
	const ramSize = 256 << 20
	from, to := make([]byte, ramSize), make([]byte, ramSize)
	for i := 0; i < ramSize; i += PageSize {
		from[i] = byte(i >> 12)
	}
	sink := sliceSink(to)
	frameBytes := runPages * runsPerFrame * PageSize
	b.SetBytes(int64(frameBytes))

	frames := b.N
	go func() {
		runs := make([]Run, runsPerFrame)
		off := 0
		for range frames {
			for j := range runs {
				runs[j] = Run{GPA: uint64(off), NPages: uint32(runPages), Data: from[off : off+runPages*PageSize]}
				off = (off + runPages*PageSize) % ramSize
			}
			if _, err := src.WritePages(0, runs); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	b.ResetTimer()
	for range frames {
		h, err := dst.ReadHeader()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := dst.ReadPages(h, sink); err != nil {
			b.Fatal(err)
		}
	}
}

// sliceSink is guest RAM at gpa 0 in one slice.
type sliceSink []byte

func (s sliceSink) PageSlice(gpa uint64, npages uint32) ([]byte, error) {
	end := gpa + uint64(npages)*PageSize
	if end > uint64(len(s)) {
		return nil, net.ErrClosed
	}
	return s[gpa:end:end], nil
}

func (s sliceSink) ZeroPages(gpa uint64, npages uint32) error {
	b, err := s.PageSlice(gpa, npages)
	clear(b)
	return err
}
