package pci

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/godwit-vmm/godwit/internal/devices"
)

// Ports of configuration mechanism #1. Only a 4-byte access at 0xCF8 is
// the address register: the byte port 0xCF9 is the reset control register
// (package legacy), which the port bus must route elsewhere.
const (
	PortConfigAddress = 0xCF8
	PortConfigData    = 0xCFC // through 0xCFF
)

// IOBase is where the bus starts allocating I/O BARs.
const IOBase = 0xC000

// NumSlots is the number of device slots on a bus.
const NumSlots = 32

// Device is a single-function PCI device on the bus.
type Device interface {
	// Config returns the function's configuration space; the bus reads
	// and writes it for the guest and decodes its BARs.
	Config() *ConfigSpace
	// BARRead and BARWrite handle an access at offset off into BAR bar.
	// They run on vCPU threads and must not block for long.
	BARRead(bar int, off uint64, data []byte)
	BARWrite(bar int, off uint64, data []byte)
}

// Bus is PCI bus 0 with configuration mechanism #1. It implements
// devices.PortIO for 0xCF8 (dword), 0xCFC–0xCFF and the I/O BARs of its
// devices, wherever the guest has moved them. It is safe for concurrent use.
type Bus struct {
	// mu guards the fields below. Device callbacks run without it.
	mu     sync.Mutex
	addr   uint32 // CONFIG_ADDRESS as last written
	slots  [NumSlots]Device
	nextIO uint32 // next free I/O address for BAR allocation
}

// NewBus returns a bus with the host bridge at 00:00.0.
func NewBus() *Bus {
	b := &Bus{nextIO: IOBase}
	b.slots[0] = NewHostBridge()
	return b
}

// Add puts d in the next free slot (1, 2, ...), assigns its I/O BARs from
// IOBase upwards (each aligned to its size) and enables I/O decoding, as
// firmware would. It returns the slot number.
func (b *Bus) Add(d Device) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	slot := -1
	for i := 1; i < NumSlots; i++ {
		if b.slots[i] == nil {
			slot = i
			break
		}
	}
	if slot < 0 {
		return 0, fmt.Errorf("pci: add device: all %d slots of bus 0 are in use", NumSlots-1)
	}
	cfg := d.Config()
	next := b.nextIO
	type assign struct {
		bar  int
		base uint32
	}
	var as []assign
	for i := 0; i < NumBARs; i++ {
		kind, _, size := cfg.BAR(i)
		switch kind {
		case BARNone:
			continue
		case BARIO:
		default:
			return 0, fmt.Errorf("pci: add device to slot %d: BAR %d is a memory BAR, which this bus does not allocate", slot, i)
		}
		base := (uint64(next) + size - 1) &^ (size - 1)
		if base+size > 1<<16 {
			return 0, fmt.Errorf("pci: add device to slot %d: BAR %d (%d bytes) does not fit in I/O space", slot, i, size)
		}
		as = append(as, assign{i, uint32(base)})
		next = uint32(base + size)
	}
	for _, a := range as {
		cfg.SetBAR(a.bar, a.base)
	}
	cfg.SetCommand(cfg.Command() | CommandIO)
	b.nextIO = next
	b.slots[slot] = d
	return slot, nil
}

// Device returns the device in slot, or nil.
func (b *Bus) Device(slot int) Device {
	if slot < 0 || slot >= NumSlots {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.slots[slot]
}

// configTarget decodes CONFIG_ADDRESS: the addressed function's device
// and register offset, or nil for a disabled address, another bus or an
// absent function. b.mu is held.
func (b *Bus) configTarget() (Device, int) {
	a := b.addr
	if a&0x80000000 == 0 {
		return nil, 0
	}
	bus, slot, fn := (a>>16)&0xFF, (a>>11)&0x1F, (a>>8)&0x7
	if bus != 0 || fn != 0 {
		return nil, 0
	}
	return b.slots[slot], int(a & 0xFC)
}

// ReadPort implements devices.PortIO.
func (b *Bus) ReadPort(port uint16, data []byte) {
	switch {
	case port == PortConfigAddress:
		if len(data) != 4 {
			fill(data, 0xFF)
			return
		}
		b.mu.Lock()
		binary.LittleEndian.PutUint32(data, b.addr)
		b.mu.Unlock()
	case port >= PortConfigData && port <= PortConfigData+3:
		b.mu.Lock()
		d, reg := b.configTarget()
		b.mu.Unlock()
		if d == nil {
			fill(data, 0xFF)
			return
		}
		d.Config().Read(reg+int(port-PortConfigData), data)
	default:
		if d, bar, off, ok := b.barTarget(port); ok {
			d.BARRead(bar, off, data)
			return
		}
		fill(data, 0xFF)
	}
}

// WritePort implements devices.PortIO.
func (b *Bus) WritePort(port uint16, data []byte) {
	switch {
	case port == PortConfigAddress:
		if len(data) != 4 {
			return
		}
		b.mu.Lock()
		b.addr = binary.LittleEndian.Uint32(data)
		b.mu.Unlock()
	case port >= PortConfigData && port <= PortConfigData+3:
		b.mu.Lock()
		d, reg := b.configTarget()
		b.mu.Unlock()
		if d != nil {
			d.Config().Write(reg+int(port-PortConfigData), data)
		}
	default:
		if d, bar, off, ok := b.barTarget(port); ok {
			d.BARWrite(bar, off, data)
		}
	}
}

// Owns reports whether an access starting at port is the bus's: the
// configuration ports or an I/O BAR that is currently decoded.
func (b *Bus) Owns(port uint16) bool {
	if port == PortConfigAddress || (port >= PortConfigData && port <= PortConfigData+3) {
		return true
	}
	_, _, _, ok := b.barTarget(port)
	return ok
}

// barTarget finds the device whose enabled I/O BAR holds port.
func (b *Bus) barTarget(port uint16) (Device, int, uint64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range b.slots {
		if d == nil {
			continue
		}
		cfg := d.Config()
		if cfg.Command()&CommandIO == 0 {
			continue
		}
		for i := 0; i < NumBARs; i++ {
			kind, base, size := cfg.BAR(i)
			if kind == BARIO && base != 0 && uint64(port) >= base && uint64(port) < base+size {
				return d, i, uint64(port) - base, true
			}
		}
	}
	return nil, 0, 0, false
}

// BusStateVersion is the version of BusState written by this package.
const BusStateVersion = 1

// BusState is the bus's migratable state: the address register and every
// function's configuration space, by slot.
type BusState struct {
	Version   uint32
	Address   uint32
	Functions []FunctionState
}

// FunctionState is one slot's configuration space.
type FunctionState struct {
	Slot   int
	Config ConfigState
}

// Save returns the bus state.
func (b *Bus) Save() BusState {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := BusState{Version: BusStateVersion, Address: b.addr}
	for i, d := range b.slots {
		if d != nil {
			s.Functions = append(s.Functions, FunctionState{Slot: i, Config: d.Config().Save()})
		}
	}
	return s
}

// Restore loads s into a bus populated with the same devices in the same
// slots as the one that saved it.
func (b *Bus) Restore(s BusState) error {
	if s.Version != BusStateVersion {
		return fmt.Errorf("pci: restore bus: state version %d, want %d", s.Version, BusStateVersion)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	seen := 0
	for _, f := range s.Functions {
		if f.Slot < 0 || f.Slot >= NumSlots || b.slots[f.Slot] == nil {
			return fmt.Errorf("pci: restore bus: saved slot %d has no device here", f.Slot)
		}
		if err := b.slots[f.Slot].Config().Restore(f.Config); err != nil {
			return fmt.Errorf("pci: restore bus: slot %d: %w", f.Slot, err)
		}
		seen++
	}
	n := 0
	for _, d := range b.slots {
		if d != nil {
			n++
		}
	}
	if seen != n {
		return fmt.Errorf("pci: restore bus: state has %d functions, this bus %d", seen, n)
	}
	b.addr = s.Address
	return nil
}

func fill(data []byte, v byte) {
	for i := range data {
		data[i] = v
	}
}

var _ devices.PortIO = (*Bus)(nil)
