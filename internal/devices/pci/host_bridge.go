package pci

// HostBridge is the host bridge at 00:00.0. Linux's pci_sanity_check
// requires a host bridge or VGA class function from Intel or Compaq in
// slot 0 before it trusts configuration mechanism #1; this one claims to be
// an i440FX (8086:1237), as QEMU's does.
type HostBridge struct {
	cfg *ConfigSpace
}

// Host bridge identity.
const (
	HostBridgeVendor = 0x8086
	HostBridgeDevice = 0x1237
	HostBridgeClass  = 0x060000
)

// NewHostBridge returns the host bridge function.
func NewHostBridge() *HostBridge {
	return &HostBridge{cfg: NewConfigSpace(Header{
		VendorID: HostBridgeVendor,
		DeviceID: HostBridgeDevice,
		Revision: 0x02,
		Class:    HostBridgeClass,
	})}
}

// Config implements Device.
func (h *HostBridge) Config() *ConfigSpace { return h.cfg }

// BARRead implements Device; the bridge has no BARs.
func (h *HostBridge) BARRead(bar int, off uint64, data []byte) { fill(data, 0xFF) }

// BARWrite implements Device; the bridge has no BARs.
func (h *HostBridge) BARWrite(bar int, off uint64, data []byte) {}
