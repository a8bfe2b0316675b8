package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// InNamespace runs fn on an OS thread that has joined network namespace ns;
// sockets fn opens belong to ns for their whole life. The thread is thrown
// away afterwards, so no other goroutine ever runs in ns by accident.
func InNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- fmt.Errorf("netlab: namespace %s: %w", ns, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netlab: join namespace %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// ProbeResult summarises a stream of probes (ICMP echo or UDP echo) sent at
// a fixed interval.
type ProbeResult struct {
	Sent       int           `json:"sent"`
	Received   int           `json:"received"`
	Lost       int           `json:"lost"`
	Duplicates int           `json:"duplicates"`
	LongestGap time.Duration `json:"longest_gap_ns"` // longest run without replies, from send times
	LostRun    int           `json:"longest_lost_run"`
	RTTMedian  time.Duration `json:"rtt_median_ns"`
}

func (r ProbeResult) String() string {
	return fmt.Sprintf("sent %d, received %d, lost %d (longest run %d, gap %v), duplicates %d, median rtt %v",
		r.Sent, r.Received, r.Lost, r.LostRun, r.LongestGap.Round(time.Millisecond), r.Duplicates, r.RTTMedian.Round(10*time.Microsecond))
}

// probeLog records sends and replies by sequence number.
type probeLog struct {
	mu      sync.Mutex
	sentAt  []time.Time
	replies []int
	rtts    []time.Duration
}

func (p *probeLog) sent(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sentAt = append(p.sentAt, t)
	p.replies = append(p.replies, 0)
	return len(p.sentAt) - 1
}

func (p *probeLog) reply(seq int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq < 0 || seq >= len(p.sentAt) {
		return
	}
	p.replies[seq]++
	if p.replies[seq] == 1 {
		p.rtts = append(p.rtts, at.Sub(p.sentAt[seq]))
	}
}

func (p *probeLog) result(interval time.Duration) ProbeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := ProbeResult{Sent: len(p.sentAt)}
	run := 0
	for _, n := range p.replies {
		switch {
		case n == 0:
			r.Lost++
			run++
			r.LostRun = max(r.LostRun, run)
		default:
			r.Received++
			r.Duplicates += n - 1
			run = 0
		}
	}
	r.LongestGap = time.Duration(r.LostRun+1) * interval
	if len(p.rtts) > 0 {
		sort.Slice(p.rtts, func(i, j int) bool { return p.rtts[i] < p.rtts[j] })
		r.RTTMedian = p.rtts[len(p.rtts)/2]
	}
	return r
}

// probe sends count probes from namespace ns, one every interval, on the
// socket open returns, and waits up to wait after the last one for
// stragglers. parse returns the sequence number a reply answers (ok false
// for a packet that is not a reply of ours).
func probe(ns string, count int, interval, wait time.Duration,
	open func() (net.PacketConn, error),
	send func(c net.PacketConn, seq int) error,
	parse func(b []byte, from net.Addr) (seq int, ok bool)) (ProbeResult, error) {
	var res ProbeResult
	err := InNamespace(ns, func() error {
		c, err := open()
		if err != nil {
			return err
		}
		defer c.Close()
		log := &probeLog{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 1500)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				if seq, ok := parse(buf[:n], from); ok {
					log.reply(seq, time.Now())
				}
			}
		}()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; i < count; i++ {
			err := send(c, log.sent(time.Now()))
			// Unreachable for a moment is what a migration looks like.
			if err != nil && !errors.Is(err, unix.EHOSTUNREACH) && !errors.Is(err, unix.ECONNREFUSED) {
				return fmt.Errorf("netlab: send probe: %w", err)
			}
			<-tick.C
		}
		time.Sleep(wait)
		c.Close()
		<-done
		res = log.result(interval)
		return nil
	})
	return res, err
}

// Ping sends count ICMP echo requests to dst from namespace ns, one every
// interval, and waits up to wait after the last one for stragglers.
func Ping(ns string, dst netip.Addr, count int, interval, wait time.Duration) (ProbeResult, error) {
	id := uint16(os.Getpid())
	to := &net.IPAddr{IP: dst.AsSlice()}
	return probe(ns, count, interval, wait,
		func() (net.PacketConn, error) {
			c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
			if err != nil {
				return nil, fmt.Errorf("netlab: icmp socket: %w", err)
			}
			return c, nil
		},
		func(c net.PacketConn, seq int) error {
			_, err := c.WriteTo(ICMPEcho(id, uint16(seq), []byte("godwit-netlab-probe")), to)
			return err
		},
		func(b []byte, from net.Addr) (int, bool) {
			ok := from.(*net.IPAddr).IP.Equal(to.IP) && len(b) >= 8 && b[0] == 0 && binary.BigEndian.Uint16(b[4:]) == id
			if !ok {
				return 0, false // not an echo reply of ours
			}
			return int(binary.BigEndian.Uint16(b[6:])), true
		})
}

// ICMPEcho builds an ICMP echo request (type 8) with identifier id,
// sequence number seq and payload, checksum filled in.
func ICMPEcho(id, seq uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], payload)
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// UDPEcho sends count datagrams carrying a sequence number to dst's echo
// port from namespace ns, one every interval, and counts the echoes.
func UDPEcho(ns string, dst netip.AddrPort, count int, interval, wait time.Duration) (ProbeResult, error) {
	const magic = "gwseq000"
	to := net.UDPAddrFromAddrPort(dst)
	return probe(ns, count, interval, wait,
		func() (net.PacketConn, error) {
			c, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return nil, fmt.Errorf("netlab: udp socket: %w", err)
			}
			return c, nil
		},
		func(c net.PacketConn, seq int) error {
			msg := make([]byte, 64)
			copy(msg, magic)
			binary.BigEndian.PutUint32(msg[8:], uint32(seq))
			_, err := c.WriteTo(msg, to)
			return err
		},
		func(b []byte, from net.Addr) (int, bool) {
			u, ok := from.(*net.UDPAddr)
			if !ok || u.AddrPort() != dst || len(b) < 12 || string(b[:8]) != magic {
				return 0, false
			}
			return int(binary.BigEndian.Uint32(b[8:])), true
		})
}
