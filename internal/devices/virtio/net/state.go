package net

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/godwit-vmm/godwit/internal/devices/virtio"
)

// StateVersion is the version of State written by this package.
const StateVersion = 1

// State is the device's migratable state. Packets waiting host-side are
// not part of it: the network may drop them.
type State struct {
	Version   uint32
	Transport virtio.State
	MAC       [6]byte
	Status    uint16 // configuration status (link, announce)
	GuestIPv4 string // learned from ARP; empty if none
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
	if err := d.t.Restore(s.Transport); err != nil {
		return err
	}
	d.mu.Lock()
	d.status = s.Status&StatusAnnounce | StatusLinkUp
	d.guestIP = ip
	d.mu.Unlock()
	return nil
}
