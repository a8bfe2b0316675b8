package net

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/godwit-vmm/godwit/internal/devices/virtio"
)

// StateVersion is the version of State written by this package.
const StateVersion = 1

// State is the device's migratable state.
type State struct {
	Version   uint32
	Transport virtio.State
	MAC       [6]byte
	Status    uint16 // configuration status (link, announce)
	GuestIPv4 string // learned from ARP; empty if none
	// Pending are guest-bound packets (header and frame) that reached
	// the device while the VM was paused, oldest first (PendingRX): the
	// destination delivers them before anything its own backend reads.
	// A VMM that predates the field sends none and ignores them.
	Pending [][]byte
}

// Bounds of State.Pending: what a source hands over and a destination
// accepts.
const (
	maxPendingPackets = rxQueueLen
	maxPendingBytes   = 1 << 20
)

// PendingRX sets aside every guest-bound packet the paused device holds
// (one waiting for a guest buffer, and those read from the backend since
// the pause) and returns them, oldest first, up to 256 packets and 1 MiB.
// A migration source calls it as late as it can before sending the
// state, so that packets the network delivered to this host during the
// switchover reach the guest on the destination instead of being lost.
// They stay queued here too: if the VM resumes on this host after all,
// it receives them. Call only while paused.
func (d *Device) PendingRX() [][]byte {
	if d.held != nil {
		d.backlog = append([][]byte{d.held}, d.backlog...)
		d.held = nil
	}
drain:
	for len(d.backlog) < maxPendingPackets {
		select {
		case p := <-d.rxq:
			d.backlog = append(d.backlog, p)
		default:
			break drain
		}
	}
	var out [][]byte
	total := 0
	for _, p := range d.backlog {
		if len(out) == maxPendingPackets || total+len(p) > maxPendingBytes {
			break
		}
		out = append(out, p)
		total += len(p)
	}
	return out
}

// Save returns the device's state. Pause first.
func (d *Device) Save() State {
	s := State{Version: StateVersion, Transport: d.t.Save(), MAC: d.mac}
	d.mu.Lock()
	s.Status = d.status
	if d.guestIP.IsValid() {
		s.GuestIPv4 = d.guestIP.String()
	}
	d.mu.Unlock()
	return s
}

// Restore loads s into a device created with the same MAC; the device
// stays paused until Resume.
func (d *Device) Restore(s State) error {
	if s.Version != StateVersion {
		return fmt.Errorf("virtio-net: restore: state version %d, want %d", s.Version, StateVersion)
	}
	if s.MAC != d.mac {
		return fmt.Errorf("virtio-net: restore: saved MAC %v differs from this device's %v", net.HardwareAddr(s.MAC[:]), net.HardwareAddr(d.mac[:]))
	}
	var ip netip.Addr
	if s.GuestIPv4 != "" {
		var err error
		if ip, err = netip.ParseAddr(s.GuestIPv4); err != nil || !ip.Is4() {
			return fmt.Errorf("virtio-net: restore: guest IPv4 %q is not an IPv4 address", s.GuestIPv4)
		}
	}
	if err := checkPending(s.Pending); err != nil {
		return fmt.Errorf("virtio-net: restore: %w", err)
	}
	if err := d.t.Restore(s.Transport); err != nil {
		return err
	}
	// The worker only reads the packets; they need no copy.
	d.backlog = append([][]byte(nil), s.Pending...)
	d.mu.Lock()
	d.status = s.Status&StatusAnnounce | StatusLinkUp
	d.guestIP = ip
	d.mu.Unlock()
	return nil
}

// AddPending queues packets (header and frame, oldest first) for the guest
// after those the device already holds, as if they had reached it while
// paused: a migration destination calls it, before Resume, with the
// packets a source handed over after the state. It refuses packets that
// could not have come from PendingRX, and more than it would hand over.
func (d *Device) AddPending(packets [][]byte) error {
	all := append(slices.Clip(d.backlog), packets...)
	if err := checkPending(all); err != nil {
		return fmt.Errorf("virtio-net: %w", err)
	}
	d.backlog = all
	return nil
}

// checkPending validates packets held for the guest against the bounds of
// PendingRX.
func checkPending(packets [][]byte) error {
	if len(packets) > maxPendingPackets {
		return fmt.Errorf("%d pending packets, at most %d", len(packets), maxPendingPackets)
	}
	total := 0
	for _, p := range packets {
		if len(p) < HeaderSize || len(p) > MaxPacket {
			return fmt.Errorf("pending packet of %d bytes", len(p))
		}
		total += len(p)
	}
	if total > maxPendingBytes {
		return fmt.Errorf("%d bytes of pending packets, at most %d", total, maxPendingBytes)
	}
	return nil
}
