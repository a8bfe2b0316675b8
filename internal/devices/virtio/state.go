package virtio

import (
	"fmt"
)

// StateVersion is the version of State written by this package.
const StateVersion = 1

// State is a transport's migratable state. The PCI configuration space is
// not in it: the pci.Bus saves every function's. The device-type state
// (MAC, capacity, ...) is saved by the net and blk packages beside it.
type State struct {
	Version        uint32
	Status         uint8
	DeviceFeatures uint32 // what the saving device offered, for checking
	DriverFeatures uint32
	QueueSelect    uint16
	ISR            uint8
	Queues         []QueueState
}

// QueueState is one queue's address and indices.
type QueueState struct {
	Size      uint16
	PFN       uint32
	NextAvail uint16
	NextUsed  uint16
}

// Save returns the transport's state. Pause the device first, or the
// indices may move under the snapshot.
func (t *Transport) Save() State {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := State{
		Version:        StateVersion,
		Status:         t.status,
		DeviceFeatures: t.DeviceFeatures(),
		DriverFeatures: t.driverFeatures,
		QueueSelect:    t.queueSelect,
		ISR:            uint8(t.isr.Load()),
	}
	for _, q := range t.queues {
		s.Queues = append(s.Queues, QueueState{Size: q.size, PFN: q.pfn, NextAvail: q.nextAvail, NextUsed: q.nextUsed})
	}
	return s
}

// Restore loads s into a device that is paused or has not been started by
// a driver. The device stays paused: Resume starts it, processes every
// queue once and raises an interrupt.
func (t *Transport) Restore(s State) error {
	if s.Version != StateVersion {
		return fmt.Errorf("virtio: restore %s: state version %d, want %d", t.name, s.Version, StateVersion)
	}
	if len(s.Queues) != len(t.queues) {
		return fmt.Errorf("virtio: restore %s: state has %d queues, device has %d", t.name, len(s.Queues), len(t.queues))
	}
	if extra := s.DriverFeatures &^ t.DeviceFeatures(); extra != 0 {
		return fmt.Errorf("virtio: restore %s: driver accepted features %#x that this device does not offer", t.name, extra)
	}
	for i, qs := range s.Queues {
		if qs.Size != QueueSize {
			return fmt.Errorf("virtio: restore %s: queue %d size %d, want %d", t.name, i, qs.Size, QueueSize)
		}
	}
	// Stop the worker before touching the queues.
	t.w.pause()
	t.qmu.Lock()
	defer t.qmu.Unlock()
	t.mu.Lock()
	t.status = s.Status
	t.driverFeatures = s.DriverFeatures
	t.queueSelect = s.QueueSelect
	t.brokenLogged = false
	t.mu.Unlock()
	t.isr.Store(uint32(s.ISR))
	indirect := s.DriverFeatures&(1<<FeatureRingIndirect) != 0
	for i, qs := range s.Queues {
		q := t.queues[i]
		q.setPFN(qs.PFN)
		q.nextAvail, q.nextUsed = qs.NextAvail, qs.NextUsed
		q.indirect = indirect
		if q.broken != nil {
			t.log.Warn("restored queue is broken", "queue", i, "err", q.broken)
		}
	}
	t.restored = true
	t.w.setActive(s.Status&StatusDriverOK != 0 && s.Status&StatusFailed == 0, len(t.queues))
	return nil
}
