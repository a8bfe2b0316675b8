// Package virtio implements the legacy virtio-pci transport (virtio 0.9.5,
// the "legacy interface" of virtio 1.x) and split virtqueues in the legacy
// layout, for the device types in the net and blk sub-packages.
//
// A device is a [Transport], which is the PCI function and owns the queues
// and the worker goroutine, plus a [Handler], which implements one device
// type (its configuration bytes and what it does with the buffers it is
// given). Register map of BAR0 (I/O space), without MSI-X:
//
//	0x00  u32  device features (read-only)
//	0x04  u32  driver (guest) features
//	0x08  u32  queue PFN: guest-physical address of the queue >> 12; 0 disables
//	0x0C  u16  queue size (read-only, QueueSize)
//	0x0E  u16  queue select
//	0x10  u16  queue notify (write the queue index)
//	0x12  u8   device status; writing 0 resets the device
//	0x13  u8   ISR: bit 0 used buffers, bit 1 configuration change; reading clears it
//	0x14  ...  device-specific configuration
//
// Queue layout at PFN<<12 (legacy): QueueSize 16-byte descriptors, then the
// available ring (flags, idx, ring[QueueSize], used_event), then, at the
// next 4096-byte boundary, the used ring (flags, idx, ring[QueueSize] of
// {id u32, len u32}, avail_event).
//
// Guest memory is only touched through *memory.Guest, so every write by the
// device is recorded in the VMM dirty bitmap, and every guest-supplied
// address, index and length is checked: a malformed queue gets a failed
// request or a broken queue, never a panic, a hang or an access outside RAM.
//
// Who may import: the virtio device packages (net, blk), the vm layer (to
// put the devices on the PCI bus) and migration (Pause, Save, Restore,
// Resume). It depends on devices, pci and memory.
package virtio

// Device status bits.
const (
	StatusAcknowledge = 0x01
	StatusDriver      = 0x02
	StatusDriverOK    = 0x04
	StatusFeaturesOK  = 0x08
	StatusNeedsReset  = 0x40
	StatusFailed      = 0x80
)

// Transport feature bits (offered by every device).
const (
	FeatureAnyLayout      = 27 // VIRTIO_F_ANY_LAYOUT
	FeatureRingIndirect   = 28 // VIRTIO_RING_F_INDIRECT_DESC
	transportFeatureFlags = 1<<FeatureAnyLayout | 1<<FeatureRingIndirect
)

// ISR bits.
const (
	ISRQueue  = 0x01
	ISRConfig = 0x02
)

// Device types (virtio spec "Device Types").
const (
	TypeNet   = 1
	TypeBlock = 2
)

// PCI identity of legacy (transitional) virtio functions.
const (
	PCIVendor          = 0x1af4
	pciLegacyDeviceID0 = 0x1000 // + type - 1
)

// Legacy register offsets in BAR0.
const (
	regDeviceFeatures = 0x00
	regDriverFeatures = 0x04
	regQueuePFN       = 0x08
	regQueueSize      = 0x0C
	regQueueSelect    = 0x0E
	regQueueNotify    = 0x10
	regStatus         = 0x12
	regISR            = 0x13
	regConfig         = 0x14
)
