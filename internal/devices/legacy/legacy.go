// Package legacy emulates the small ISA devices a PC guest pokes at during
// boot and shutdown: an i8042 keyboard-controller stub (the guest's reset
// path), the QEMU-compatible debug-exit port 0xF4 (power-off), the POST
// diagnostic port 0x80, the reset control register 0xCF9, the CMOS
// RTC/NVRAM at 0x70/0x71, and the ACPI PM1 register block (S5 power-off).
//
// Each device implements devices.PortIO; the stateful ones (I8042, CMOS, ACPIPM)
// have Save/Restore with a versioned state struct.
//
// Who may import: the vm layer (to put the devices on the port bus) and
// migration (through Save/Restore). It depends on package devices only.
package legacy

import "github.com/godwit-vmm/godwit/internal/devices"

// Conventional port numbers.
const (
	PortI8042Data    = 0x60
	PortI8042Command = 0x64
	PortCMOSIndex    = 0x70
	PortCMOSData     = 0x71
	PortPOST         = 0x80
	PortDebugExit    = 0xF4
	PortResetControl = 0xCF9
)

// DebugExit is QEMU's isa-debug-exit: any write powers the VM off. QEMU
// exits with status (value<<1)|1; the callback gets the raw value and
// decides.
type DebugExit struct {
	poweroff func(value uint32)
}

// NewDebugExit returns the power-off port; poweroff is called from the
// vCPU thread with the written value and must not block.
func NewDebugExit(poweroff func(value uint32)) *DebugExit {
	return &DebugExit{poweroff: poweroff}
}

// ReadPort implements devices.PortIO: reads return all-ones, as on QEMU.
func (d *DebugExit) ReadPort(port uint16, data []byte) { fill(data, 0xFF) }

// WritePort implements devices.PortIO.
func (d *DebugExit) WritePort(port uint16, data []byte) {
	if d.poweroff != nil {
		d.poweroff(uint32(devices.LoadLE(data)))
	}
}

// POST is the port-0x80 sink: firmware and Linux write progress codes or
// use it as an I/O delay. Writes are dropped; reads return zero.
type POST struct{}

// ReadPort implements devices.PortIO.
func (POST) ReadPort(port uint16, data []byte) { fill(data, 0) }

// WritePort implements devices.PortIO.
func (POST) WritePort(port uint16, data []byte) {}

// ResetControl is the PIIX/ICH reset control register at 0xCF9: a write
// with bit 2 (RST_CPU) set resets the machine. It is a byte register; the
// PCI configuration address register at 0xCF8 is a separate dword register,
// so the port bus must route a 1-byte access at 0xCF9 here.
type ResetControl struct {
	reset func()
}

const resetCPU = 0x04

// NewResetControl returns the reset control register; reset is called from
// the vCPU thread and must not block.
func NewResetControl(reset func()) *ResetControl { return &ResetControl{reset: reset} }

// ReadPort implements devices.PortIO. The register reads as zero.
func (r *ResetControl) ReadPort(port uint16, data []byte) { fill(data, 0) }

// WritePort implements devices.PortIO.
func (r *ResetControl) WritePort(port uint16, data []byte) {
	if len(data) > 0 && data[0]&resetCPU != 0 && r.reset != nil {
		r.reset()
	}
}

func fill(data []byte, v byte) {
	for i := range data {
		data[i] = v
	}
}
