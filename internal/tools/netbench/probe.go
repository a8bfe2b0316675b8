package main

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/netlab"
)

// probeStream sends one probe every interval until stopped (unlike
// netlab.Ping/UDPEcho, which send a fixed count: a migration's length is
// not known in advance) and keeps the send time of every probe and the
// arrival times of its replies, so that losses can be placed on the
// migration's timeline.
type probeStream struct {
	kind     string
	interval time.Duration
	send     func(seq int) error
	conn     io.Closer

	mu      sync.Mutex
	sentAt  []time.Time
	replies [][]time.Time

	stop chan struct{}
	done chan struct{}
}

// startPing opens an ICMP socket in the client namespace and pings dst
// every interval.
func startPing(ns string, dst netip.Addr, interval time.Duration) (*probeStream, error) {
	var c *net.IPConn
	err := netlab.InNamespace(ns, func() error {
		pc, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		c = pc.(*net.IPConn)
		return enableTimestamps(c)
	})
	if err != nil {
		return nil, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	var idb [2]byte
	rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	s := newStream("icmp", interval, c)
	to := &net.IPAddr{IP: dst.AsSlice()}
	s.send = func(seq int) error {
		_, err := c.WriteTo(netlab.ICMPEcho(id, uint16(seq), []byte("godwit-netbench")), to)
		return err
	}
	go func() {
		buf, oob := make([]byte, 1500), make([]byte, 128)
		for {
			n, oobn, _, from, err := c.ReadMsgIP(buf, oob)
			if err != nil {
				return
			}
			at := rxTime(oob[:oobn])
			b := buf[:n]
			if len(b) >= 20 && b[0]>>4 == 4 { // IPv4 header included
				b = b[int(b[0]&0xf)*4:]
			}
			if from.IP.String() != dst.String() || len(b) < 8 || b[0] != 0 || binary.BigEndian.Uint16(b[4:]) != id {
				continue // not an echo reply of ours
			}
			s.reply(int(binary.BigEndian.Uint16(b[6:])), at)
		}
	}()
	go s.run()
	return s, nil
}

// startUDP opens a UDP socket in the client namespace and sends a datagram
// with a sequence number to dst (the guest's echo port) every interval.
func startUDP(ns string, dst netip.AddrPort, interval time.Duration) (*probeStream, error) {
	var c *net.UDPConn
	err := netlab.InNamespace(ns, func() (err error) {
		if c, err = net.ListenUDP("udp4", nil); err != nil {
			return err
		}
		return enableTimestamps(c)
	})
	if err != nil {
		return nil, fmt.Errorf("udp socket in %s: %w", ns, err)
	}
	s := newStream("udp", interval, c)
	msg := make([]byte, 64)
	copy(msg, "gwnetb00")
	s.send = func(seq int) error {
		binary.BigEndian.PutUint32(msg[8:], uint32(seq))
		_, err := c.WriteToUDPAddrPort(msg, dst)
		return err
	}
	go func() {
		buf, oob := make([]byte, 1500), make([]byte, 128)
		for {
			n, oobn, _, from, err := c.ReadMsgUDPAddrPort(buf, oob)
			if err != nil {
				return
			}
			at := rxTime(oob[:oobn])
			if from != dst || n < 12 || string(buf[:8]) != "gwnetb00" {
				continue
			}
			s.reply(int(binary.BigEndian.Uint32(buf[8:])), at)
		}
	}()
	go s.run()
	return s, nil
}

func newStream(kind string, interval time.Duration, c io.Closer) *probeStream {
	return &probeStream{kind: kind, interval: interval, conn: c, stop: make(chan struct{}), done: make(chan struct{})}
}

// run sends until stop is closed. Send errors (host unreachable while ARP
// fails, refused) count as lost probes.
func (s *probeStream) run() {
	defer close(s.done)
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		s.mu.Lock()
		seq := len(s.sentAt)
		s.sentAt = append(s.sentAt, time.Now())
		s.replies = append(s.replies, nil)
		s.mu.Unlock()
		s.send(seq)
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
	}
}

func (s *probeStream) reply(seq int, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq >= 0 && seq < len(s.replies) {
		s.replies[seq] = append(s.replies[seq], at)
	}
}

// halt stops sending; replies are still counted until close.
func (s *probeStream) halt() {
	close(s.stop)
	<-s.done
}

// close closes the socket: later replies are lost.
func (s *probeStream) close() { s.conn.Close() }

// finishAll stops every stream, waits wait for late replies and closes
// them.
func finishAll(wait time.Duration, ss ...*probeStream) {
	for _, s := range ss {
		s.halt()
	}
	time.Sleep(wait)
	for _, s := range ss {
		s.close()
	}
}

// enableTimestamps asks the kernel to stamp every received packet
// (SO_TIMESTAMPNS), so that a late-scheduled reader goroutine does not
// shift reply times.
func enableTimestamps(c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return err
	}
	return serr
}

// rxTime returns the kernel receive time from a control message, or now
// if there is none.
func rxTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
				sec := int64(binary.NativeEndian.Uint64(m.Data[0:]))
				nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
				return time.Unix(sec, nsec)
			}
		}
	}
	return time.Now()
}

// streamResult summarises one stream around one migration. Times are ms
// relative to the start of the migration command.
type streamResult struct {
	Sent       int     `json:"sent"`
	Received   int     `json:"received"`
	Lost       int     `json:"lost"`
	Duplicates int     `json:"duplicates"`
	LostRun    int     `json:"longest_lost_run"`
	GapMs      float64 `json:"longest_gap_ms"` // (run+1)·interval: time between two answered probes
	// The longest outage: send time of the last probe answered before it
	// and of the first answered after it (relative to migration start).
	OutageFromMs float64 `json:"outage_from_ms"`
	OutageToMs   float64 `json:"outage_to_ms"`
	// LostAtMs are the send times of every lost probe.
	LostAtMs  []float64 `json:"lost_at_ms,omitempty"`
	RTTMedian float64   `json:"rtt_median_ms"`
	RTTMax    float64   `json:"rtt_max_ms"`
	// Silence is the longest time between two reply arrivals: what a
	// client waiting for answers notices, lost or merely delayed (a
	// stalled guest answers queued requests late, losing none).
	SilenceMs     float64 `json:"longest_silence_ms"`
	SilenceFromMs float64 `json:"silence_from_ms"`
	// MaxSendGapMs is the longest time between two sends (10 ms unless
	// this process was starved of CPU).
	MaxSendGapMs float64 `json:"max_send_gap_ms"`
	// Probes lists every probe: send time and first reply time (-1:
	// none), ms from migration start, rounded to 10 µs.
	Probes [][2]float64 `json:"probes,omitempty"`
}

// result computes the summary relative to t0.
func (s *probeStream) result(t0 time.Time) streamResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := streamResult{Sent: len(s.sentAt)}
	run, lastOK := 0, -1
	var rtts []float64
	for i, reps := range s.replies {
		if len(reps) == 0 {
			r.Lost++
			run++
			r.LostAtMs = append(r.LostAtMs, msSince(t0, s.sentAt[i]))
			continue
		}
		r.Received++
		r.Duplicates += len(reps) - 1
		rtts = append(rtts, ms(reps[0].Sub(s.sentAt[i])))
		if run > r.LostRun && lastOK >= 0 {
			r.LostRun = run
			r.OutageFromMs, r.OutageToMs = msSince(t0, s.sentAt[lastOK]), msSince(t0, s.sentAt[i])
		} else if run > r.LostRun {
			r.LostRun = run
		}
		run, lastOK = 0, i
	}
	if run > r.LostRun { // lost to the end
		r.LostRun = run
		if lastOK >= 0 {
			r.OutageFromMs, r.OutageToMs = msSince(t0, s.sentAt[lastOK]), -1
		}
	}
	r.GapMs = float64(r.LostRun+1) * ms(s.interval)
	if len(rtts) > 0 {
		sort.Float64s(rtts)
		r.RTTMedian, r.RTTMax = rtts[len(rtts)/2], rtts[len(rtts)-1]
	}
	round := func(f float64) float64 { return math.Round(f*100) / 100 }
	for i, at := range s.sentAt {
		p := [2]float64{round(msSince(t0, at)), -1}
		if len(s.replies[i]) > 0 {
			p[1] = round(msSince(t0, s.replies[i][0]))
		}
		r.Probes = append(r.Probes, p)
	}
	for i := 1; i < len(s.sentAt); i++ {
		r.MaxSendGapMs = max(r.MaxSendGapMs, ms(s.sentAt[i].Sub(s.sentAt[i-1])))
	}
	var arrivals []time.Time
	for _, reps := range s.replies {
		arrivals = append(arrivals, reps...)
	}
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
	for i := 1; i < len(arrivals); i++ {
		if d := ms(arrivals[i].Sub(arrivals[i-1])); d > r.SilenceMs {
			r.SilenceMs, r.SilenceFromMs = d, msSince(t0, arrivals[i-1])
		}
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func msSince(t0, t time.Time) float64 { return ms(t.Sub(t0)) }
