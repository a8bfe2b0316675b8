package blk

import (
	"fmt"

	"github.com/godwit-vmm/godwit/internal/devices/virtio"
)

// StateVersion is the version of State written by this package.
const StateVersion = 1

// State is the device's migratable state. The image itself is shared
// storage: Pause syncs it before the state is saved.
type State struct {
	Version   uint32
	Transport virtio.State
	Capacity  uint64 // sectors, checked against the destination's image
	ReadOnly  bool
}

// Save returns the device's state. Pause first.
func (d *Device) Save() State {
	return State{Version: StateVersion, Transport: d.t.Save(), Capacity: d.capacity, ReadOnly: d.readOnly}
}

// Restore loads s into a device on an image of the same size; the device
// stays paused until Resume.
func (d *Device) Restore(s State) error {
	if s.Version != StateVersion {
		return fmt.Errorf("virtio-blk: restore %s: state version %d, want %d", d.path, s.Version, StateVersion)
	}
	if s.Capacity != d.capacity {
		return fmt.Errorf("virtio-blk: restore %s: image has %d sectors, the guest's disk had %d", d.path, d.capacity, s.Capacity)
	}
	if s.ReadOnly != d.readOnly {
		return fmt.Errorf("virtio-blk: restore %s: read-only is %v here, was %v", d.path, d.readOnly, s.ReadOnly)
	}
	return d.t.Restore(s.Transport)
}
