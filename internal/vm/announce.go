package vm

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"
)

// AnnounceConfig sets how a VM announces its MAC after it moved: Rounds
// announcements, the first at once, then after Initial, Initial+Step, …
// capped at Max (QEMU's announce-initial/-step/-max/-rounds, with its
// defaults).
type AnnounceConfig struct {
	Rounds  int
	Initial time.Duration
	Step    time.Duration
	Max     time.Duration
}

// DefaultAnnounce is QEMU's default schedule: 5 rounds, 50 ms, +100 ms.
var DefaultAnnounce = AnnounceConfig{Rounds: 5, Initial: 50 * time.Millisecond, Step: 100 * time.Millisecond, Max: 550 * time.Millisecond}

// Announce tells the network where the guest's MAC now lives, after a
// migration: each round sends a RARP broadcast for the MAC (what switches
// learn from, as QEMU's announce does) and, if the VMM has seen the guest's
// IPv4 address, a gratuitous ARP for it; and it asks the guest to announce
// itself through VIRTIO_NET_F_GUEST_ANNOUNCE if its driver took the feature.
// The first round is sent before it returns; the others run in the
// background until done or the VM stops. A migration destination calls
// it after COMMIT but before Start, so that the switches learn the new
// port before the vCPUs compete for the host's CPUs; the guest is then
// asked by Start, once its devices run.
func (v *VM) Announce(cfg AnnounceConfig) {
	d := v.dev
	if d.net == nil {
		return
	}
	mac := v.MAC()
	v.mu.Lock()
	started := v.state != StateCreated
	v.announceGuest = !started
	v.mu.Unlock()
	guestAsked := started && d.net.Announce()
	v.log.Info("announcing the guest on the network", "mac", mac.String(), "rounds", cfg.Rounds, "guest_announce", guestAsked)
	send := func() bool {
		frames := [][]byte{rarpFrame(mac)}
		if ip, ok := d.net.GuestIPv4(); ok {
			frames = append(frames, garpFrame(mac, ip))
		}
		for _, f := range frames {
			// The TAP expects the virtio-net header first; all zero:
			// no offloads.
			if err := d.tap.WritePacket(append(make([]byte, 10), f...)); err != nil {
				v.log.Warn("announce: write to the TAP", "err", err)
				return false
			}
		}
		return true
	}
	// The first round goes out now, before the caller confirms the
	// switchover: every millisecond the switches still point at the old
	// port is lost traffic. The rest follow on QEMU's schedule.
	if cfg.Rounds < 1 || !send() {
		return
	}
	go func() {
		delay := cfg.Initial
		for i := 1; i < cfg.Rounds; i++ {
			select {
			case <-time.After(delay):
			case <-v.stopped:
				return
			}
			delay = min(delay+cfg.Step, cfg.Max)
			if !send() {
				return
			}
		}
	}()
}

// rarpFrame builds the 60-byte RARP reverse request QEMU broadcasts for a
// MAC: switches learn the port from the source address.
func rarpFrame(mac net.HardwareAddr) []byte {
	f := make([]byte, 60)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:], 0x8035) // ETH_P_RARP
	arpHeader(f[14:], 3)                       // ARPOP_RREQUEST
	copy(f[22:28], mac)                        // sender MAC; sender IP 0
	copy(f[32:38], mac)                        // target MAC; target IP 0
	return f
}

// garpFrame builds a gratuitous ARP request for ip at mac.
func garpFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	f := make([]byte, 60)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:], 0x0806) // ETH_P_ARP
	arpHeader(f[14:], 1)                       // ARPOP_REQUEST
	a := ip.As4()
	copy(f[22:28], mac)
	copy(f[28:32], a[:])
	copy(f[38:42], a[:])
	return f
}

func arpHeader(b []byte, op uint16) {
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
}
