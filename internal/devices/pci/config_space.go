// Package pci emulates a PCI bus 0 behind configuration mechanism #1
// (ports 0xCF8/0xCFC), with a host bridge at 00:00.0 and I/O BARs that the
// bus decodes and dispatches to the owning function.
//
// A function's configuration space is 256 bytes with a per-byte mask of
// the bits the guest may write; BARs answer the usual all-ones size probe.
// Memory BARs can be declared in a configuration space, but the bus only
// allocates and dispatches I/O BARs: the legacy virtio devices need nothing
// else.
//
// Who may import: the vm layer (to build the bus), device packages that
// implement a PCI function (virtio), and migration (through Save/Restore).
// It depends on package devices only.
package pci

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
)

// ConfigSize is the size of a function's configuration space.
const ConfigSize = 256

// Configuration space offsets (type 0 header).
const (
	OffVendorID      = 0x00
	OffDeviceID      = 0x02
	OffCommand       = 0x04
	OffStatus        = 0x06
	OffRevision      = 0x08
	OffClass         = 0x09 // prog-if, subclass, class: 3 bytes
	OffCacheLine     = 0x0C
	OffLatency       = 0x0D
	OffHeaderType    = 0x0E
	OffBAR0          = 0x10
	OffSubsysVendor  = 0x2C
	OffSubsysID      = 0x2E
	OffInterruptLine = 0x3C
	OffInterruptPin  = 0x3D
)

// Command register bits.
const (
	CommandIO          = 0x0001
	CommandMemory      = 0x0002
	CommandBusMaster   = 0x0004
	CommandINTxDisable = 0x0400
)

// NumBARs is the number of base address registers in a type 0 header.
const NumBARs = 6

// BARKind says what address space a BAR decodes.
type BARKind uint8

const (
	BARNone  BARKind = iota // not implemented: reads 0, ignores writes
	BARIO                   // I/O space (bit 0 set)
	BARMem32                // 32-bit memory space
)

// Header holds the read-only identity of a function.
type Header struct {
	VendorID, DeviceID             uint16
	Revision                       uint8
	Class                          uint32 // class<<16 | subclass<<8 | prog-if
	SubsystemVendorID, SubsystemID uint16
	InterruptPin                   uint8 // 0: none, 1: INTA#
	HeaderType                     uint8
}

type barInfo struct {
	kind BARKind
	size uint32
}

// ConfigSpace is one function's configuration space. It is safe for
// concurrent use.
type ConfigSpace struct {
	// mu guards data, wmask and bars.
	mu    sync.Mutex
	data  [ConfigSize]byte
	wmask [ConfigSize]byte // bits the guest may write
	bars  [NumBARs]barInfo
}

// NewConfigSpace returns a configuration space with identity h. The guest
// may write the command register (I/O, memory, bus master, INTx disable),
// cache line size, latency timer and interrupt line; everything else is
// read-only until AddBAR declares BARs.
func NewConfigSpace(h Header) *ConfigSpace {
	c := &ConfigSpace{}
	le := binary.LittleEndian
	le.PutUint16(c.data[OffVendorID:], h.VendorID)
	le.PutUint16(c.data[OffDeviceID:], h.DeviceID)
	c.data[OffRevision] = h.Revision
	c.data[OffClass] = byte(h.Class)
	c.data[OffClass+1] = byte(h.Class >> 8)
	c.data[OffClass+2] = byte(h.Class >> 16)
	c.data[OffHeaderType] = h.HeaderType
	le.PutUint16(c.data[OffSubsysVendor:], h.SubsystemVendorID)
	le.PutUint16(c.data[OffSubsysID:], h.SubsystemID)
	c.data[OffInterruptPin] = h.InterruptPin

	le.PutUint16(c.wmask[OffCommand:], CommandIO|CommandMemory|CommandBusMaster|CommandINTxDisable)
	c.wmask[OffCacheLine] = 0xFF
	c.wmask[OffLatency] = 0xFF
	c.wmask[OffInterruptLine] = 0xFF
	return c
}

// AddBAR declares BAR i of the given kind and size (a power of two; at
// least 4 bytes for I/O, 16 for memory; at most 64 KiB for I/O).
func (c *ConfigSpace) AddBAR(i int, kind BARKind, size uint32) error {
	if i < 0 || i >= NumBARs {
		return fmt.Errorf("pci: BAR %d: index out of range [0, %d)", i, NumBARs)
	}
	if bits.OnesCount32(size) != 1 {
		return fmt.Errorf("pci: BAR %d: size %#x is not a power of two", i, size)
	}
	var flags, low uint32
	switch kind {
	case BARIO:
		flags, low = 0x1, 0x3
		if size < 4 || size > 1<<16 {
			return fmt.Errorf("pci: BAR %d: I/O size %#x outside [4, 64 KiB]", i, size)
		}
	case BARMem32:
		flags, low = 0x0, 0xF
		if size < 16 {
			return fmt.Errorf("pci: BAR %d: memory size %#x below 16", i, size)
		}
	default:
		return fmt.Errorf("pci: BAR %d: unknown kind %d", i, kind)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bars[i] = barInfo{kind: kind, size: size}
	off := OffBAR0 + 4*i
	binary.LittleEndian.PutUint32(c.data[off:], flags)
	binary.LittleEndian.PutUint32(c.wmask[off:], ^(size-1)&^low)
	return nil
}

// Read fills data from offset off. Bytes beyond the space read as all-ones.
func (c *ConfigSpace) Read(off int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		if o := off + i; o >= 0 && o < ConfigSize {
			data[i] = c.data[o]
		} else {
			data[i] = 0xFF
		}
	}
}

// Write stores data at offset off, through the writable-bits mask.
func (c *ConfigSpace) Write(off int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, v := range data {
		if o := off + i; o >= 0 && o < ConfigSize {
			c.data[o] = c.data[o]&^c.wmask[o] | v&c.wmask[o]
		}
	}
}

// Command returns the command register.
func (c *ConfigSpace) Command() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return binary.LittleEndian.Uint16(c.data[OffCommand:])
}

// SetCommand sets the command register (for the VMM, as firmware would).
func (c *ConfigSpace) SetCommand(v uint16) { c.Write(OffCommand, []byte{byte(v), byte(v >> 8)}) }

// InterruptLine returns the interrupt line register.
func (c *ConfigSpace) InterruptLine() uint8 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.data[OffInterruptLine]
}

// SetInterruptLine sets the interrupt line register: the VMM writes the
// ISA IRQ it wired the function to, as firmware would.
func (c *ConfigSpace) SetInterruptLine(irq uint8) { c.Write(OffInterruptLine, []byte{irq}) }

// BAR returns BAR i's kind, current base address and size. kind is BARNone
// for an unimplemented BAR.
func (c *ConfigSpace) BAR(i int) (kind BARKind, base uint64, size uint64) {
	if i < 0 || i >= NumBARs {
		return BARNone, 0, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.bars[i]
	v := binary.LittleEndian.Uint32(c.data[OffBAR0+4*i:])
	switch b.kind {
	case BARIO:
		return b.kind, uint64(v &^ 0x3), uint64(b.size)
	case BARMem32:
		return b.kind, uint64(v &^ 0xF), uint64(b.size)
	}
	return BARNone, 0, 0
}

// SetBAR programs BAR i's base address (for the VMM, as firmware would).
func (c *ConfigSpace) SetBAR(i int, base uint32) {
	if i < 0 || i >= NumBARs {
		return
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], base)
	c.Write(OffBAR0+4*i, b[:])
}

// ConfigState is a function's configuration space as saved for migration.
type ConfigState struct {
	Data [ConfigSize]byte
}

// Save returns the configuration space.
func (c *ConfigSpace) Save() ConfigState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ConfigState{Data: c.data}
}

// Restore loads the guest-writable bits of s (BARs, command, interrupt
// line, ...) after checking that s belongs to a function with the same
// identity (vendor, device, revision, class, subsystem).
func (c *ConfigSpace) Restore(s ConfigState) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range [][2]int{{OffVendorID, OffCommand}, {OffRevision, OffCacheLine}, {OffSubsysVendor, OffSubsysID + 2}} {
		for o := r[0]; o < r[1]; o++ {
			if s.Data[o] != c.data[o] {
				le := binary.LittleEndian
				return fmt.Errorf("pci: restore config space: saved function %04x:%04x is not this %04x:%04x (byte %#x differs)",
					le.Uint16(s.Data[OffVendorID:]), le.Uint16(s.Data[OffDeviceID:]),
					le.Uint16(c.data[OffVendorID:]), le.Uint16(c.data[OffDeviceID:]), o)
			}
		}
	}
	for o := range c.data {
		c.data[o] = c.data[o]&^c.wmask[o] | s.Data[o]&c.wmask[o]
	}
	return nil
}
