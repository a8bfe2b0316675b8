// Package devices holds the small interfaces shared by Godwit's emulated
// devices and the VMM core that wires them up: an interrupt line and a device
// on the I/O-port bus. The device models themselves live in the
// sub-packages (serial, legacy, pci, virtio, virtio/net, virtio/blk).
//
// Who may import: the vm layer, the device packages below this one, and
// migration. It imports nothing from Godwit.
package devices

// Interrupt is an edge-triggered interrupt line. The VMM backs it with an
// eventfd registered with KVM_IRQFD; tests use [InterruptFunc]. Trigger must
// not block for long: devices call it from vCPU threads and device workers.
type Interrupt interface {
	Trigger() error
}

// PortIO is a device on the I/O-port bus. port is the absolute port number
// of the access, len(data) is 1, 2 or 4, and data is little-endian. A read
// fills data; a write consumes it. Neither may block for long: they run on
// vCPU threads.
type PortIO interface {
	ReadPort(port uint16, data []byte)
	WritePort(port uint16, data []byte)
}

// InterruptFunc adapts a function to the Interrupt interface.
type InterruptFunc func() error

// Trigger calls f.
func (f InterruptFunc) Trigger() error { return f() }

// NoInterrupt is an Interrupt line that is not connected.
var NoInterrupt Interrupt = InterruptFunc(func() error { return nil })

// LoadLE returns the little-endian value of data (1 to 8 bytes).
func LoadLE(data []byte) uint64 {
	var v uint64
	for i := len(data) - 1; i >= 0; i-- {
		v = v<<8 | uint64(data[i])
	}
	return v
}

// StoreLE fills data with the little-endian bytes of v, truncating to len(data).
func StoreLE(data []byte, v uint64) {
	for i := range data {
		data[i] = byte(v)
		v >>= 8
	}
}
