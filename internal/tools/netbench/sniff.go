package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/netlab"
)

// sniffer watches the shared bridge's ports towards the two hosts (the
// veths <p>a and <p>b in the core namespace) with AF_PACKET sockets and
// records every frame from the guest's MAC entering the core bridge (what
// the bridge learns from: RARP and GARP announcements, the guest's own
// GARP, its replies) and every frame to the guest's MAC leaving it (where
// the bridge sends the client's probes). That places the moment the
// network learned the new location on the same clock as the probes and
// heartbeats.
type sniffer struct {
	mac  net.HardwareAddr
	fds  []int
	port []string // port name per fd

	mu     sync.Mutex
	frames []frame
	stop   chan struct{}
	wg     sync.WaitGroup
}

// frame is one captured frame.
type frame struct {
	At   time.Time
	Port string // veth name in the core namespace
	In   bool   // entering the core bridge from the host (else leaving towards it)
	Kind string // rarp, garp, arp-request, arp-reply, ipv4, other
}

const ethPAll = 0x0003

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// startSniffer opens one packet socket per port in namespace ns.
func startSniffer(ns string, ports []string, mac net.HardwareAddr) (*sniffer, error) {
	s := &sniffer{mac: mac, stop: make(chan struct{})}
	for _, name := range ports {
		var fd int
		err := netlab.InNamespace(ns, func() error {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return err
			}
			fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(ethPAll)))
			if err != nil {
				return err
			}
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: ifi.Index}); err != nil {
				unix.Close(fd)
				return err
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
				return err
			}
			tv := unix.Timeval{Usec: 100000} // wake up to notice stop
			return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		})
		if err != nil {
			s.close()
			return nil, fmt.Errorf("packet socket on %s/%s: %w", ns, name, err)
		}
		s.fds = append(s.fds, fd)
		s.port = append(s.port, name)
	}
	for i := range s.fds {
		s.wg.Add(1)
		go s.read(s.fds[i], s.port[i])
	}
	return s, nil
}

func (s *sniffer) read(fd int, port string) {
	defer s.wg.Done()
	buf := make([]byte, 128) // headers are enough; the rest is truncated
	oob := make([]byte, 128)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil {
			continue // timeout (EAGAIN) or EINTR
		}
		now := rxTime(oob[:oobn]) // kernel time of arrival
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || n < 14 {
			continue
		}
		in := ll.Pkttype != unix.PACKET_OUTGOING
		dst, src := buf[0:6], buf[6:12]
		if in && !bytes.Equal(src, s.mac) || !in && !bytes.Equal(dst, s.mac) {
			continue
		}
		s.mu.Lock()
		s.frames = append(s.frames, frame{At: now, Port: port, In: in, Kind: frameKind(buf[:min(n, len(buf))])})
		s.mu.Unlock()
	}
}

// frameKind classifies an Ethernet frame.
func frameKind(f []byte) string {
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x8035:
		return "rarp"
	case 0x0800:
		return "ipv4"
	case 0x0806:
		if len(f) < 42 {
			return "arp"
		}
		op := binary.BigEndian.Uint16(f[20:])
		if bytes.Equal(f[28:32], f[38:42]) {
			return "garp"
		}
		if op == 2 {
			return "arp-reply"
		}
		return "arp-request"
	}
	return "other"
}

// finish stops capturing and returns the frames.
func (s *sniffer) finish() []frame {
	close(s.stop)
	s.wg.Wait()
	s.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frames
}

func (s *sniffer) close() {
	for _, fd := range s.fds {
		unix.Close(fd)
	}
	s.fds = nil
}

// netTimeline is what the captured frames say about one migration (ms
// relative to the start of the migration command; -1 = not seen).
type netTimeline struct {
	LastFromSrcMs   float64   `json:"last_frame_from_src_ms"`  // last guest frame entering via the source host (valid if SeenFromSrc)
	SeenFromSrc     bool      `json:"seen_from_src"`           // any guest frame via the source host in the window
	FirstFromDstMs  float64   `json:"first_frame_from_dst_ms"` // first guest frame via the destination host: the bridge learns here
	FirstFromDst    string    `json:"first_frame_from_dst"`    // its kind (rarp = VMM announce, garp, ipv4 = a reply, …)
	FirstRARPMs     float64   `json:"first_rarp_ms"`           // first RARP (VMM announce) via the destination
	FirstGARPMs     float64   `json:"first_garp_ms"`           // first gratuitous ARP via the destination (VMM's or guest's)
	FirstReplyMs    float64   `json:"first_ipv4_from_dst_ms"`  // first IPv4 frame (a probe reply) via the destination
	RARPs           int       `json:"rarps_from_dst"`          // RARPs seen in the window
	GARPs           int       `json:"garps_from_dst"`          // gratuitous ARPs seen in the window
	ToOldAfterLearn int       `json:"to_src_after_learn"`      // frames for the guest still sent to the source host after FirstFromDstMs
	LastToSrcMs     float64   `json:"last_frame_to_src_ms"`    // last frame for the guest sent towards the source host (valid if frames went there)
	FirstToDstMs    float64   `json:"first_frame_to_dst_ms"`   // first frame for the guest sent towards the destination
	Frames          int       `json:"frames_captured"`         // total captured
	RARPAtMs        []float64 `json:"rarp_at_ms"`              // every RARP via the destination
	GARPAtMs        []float64 `json:"garp_at_ms"`              // every gratuitous ARP via the destination
	// GuestGARPMs is the first gratuitous ARP the guest itself sent (ms;
	// -1 none). A VMM that sends its own GARP (Godwit) writes it right
	// after its RARP, within garpPair; QEMU sends RARPs only, so every
	// GARP is the guest's.
	GuestGARPMs float64 `json:"guest_garp_ms"`
}

// timeline reduces frames to a netTimeline for a move from port srcPort to
// dstPort, relative to t0.
func timeline(frames []frame, t0 time.Time, srcPort, dstPort string) netTimeline {
	tl := netTimeline{LastFromSrcMs: -1, FirstFromDstMs: -1, FirstRARPMs: -1, FirstGARPMs: -1, FirstReplyMs: -1,
		LastToSrcMs: -1, FirstToDstMs: -1, Frames: len(frames)}
	var learn time.Time
	for _, f := range frames {
		t := msSince(t0, f.At)
		switch {
		case f.In && f.Port == srcPort:
			tl.LastFromSrcMs, tl.SeenFromSrc = t, true
		case f.In && f.Port == dstPort && t >= 0:
			if tl.FirstFromDstMs < 0 {
				tl.FirstFromDstMs, tl.FirstFromDst, learn = t, f.Kind, f.At
			}
			switch f.Kind {
			case "rarp":
				tl.RARPAtMs = append(tl.RARPAtMs, t)
				tl.RARPs++
				if tl.FirstRARPMs < 0 {
					tl.FirstRARPMs = t
				}
			case "garp":
				tl.GARPAtMs = append(tl.GARPAtMs, t)
				tl.GARPs++
				if tl.FirstGARPMs < 0 {
					tl.FirstGARPMs = t
				}
			case "ipv4":
				if tl.FirstReplyMs < 0 {
					tl.FirstReplyMs = t
				}
			}
		case !f.In && f.Port == srcPort:
			tl.LastToSrcMs = t
			if !learn.IsZero() && f.At.After(learn) {
				tl.ToOldAfterLearn++
			}
		case !f.In && f.Port == dstPort && t >= 0:
			if tl.FirstToDstMs < 0 {
				tl.FirstToDstMs = t
			}
		}
	}
	return tl
}

// garpPair is how soon after its RARP a VMM's own GARP follows.
const garpPair = 2.0 // ms

// findGuestGARP sets GuestGARPMs: the first GARP not paired with a RARP
// just before it when vmmSendsGARP, else the first GARP.
func (tl *netTimeline) findGuestGARP(vmmSendsGARP bool) {
	tl.GuestGARPMs = -1
	used := make([]bool, len(tl.RARPAtMs))
	for _, g := range tl.GARPAtMs {
		paired := false
		if vmmSendsGARP {
			for i, r := range tl.RARPAtMs {
				if !used[i] && g >= r && g-r < garpPair {
					used[i], paired = true, true
					break
				}
			}
		}
		if !paired {
			tl.GuestGARPMs = g
			return
		}
	}
}
