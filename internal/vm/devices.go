package vm

import (
	"time"

	"fmt"

	"github.com/godwit-vmm/godwit/internal/devices/legacy"
	"github.com/godwit-vmm/godwit/internal/devices/serial"
)

// ISA interrupt lines of the fixed devices.
const (
	irqCOM1 = 4
	com1    = 0x3f8
)

// deviceSet is every emulated device of a VM.
type deviceSet struct {
	uart  *serial.UART
	i8042 *legacy.I8042
	cmos  *legacy.CMOS
}

// irq returns a new interrupt line on gsi, owned by v.
func (v *VM) irq(gsi uint32) (*irqLine, error) {
	l, err := newIRQLine(v.kvm, gsi)
	if err != nil {
		return nil, err
	}
	v.irqs = append(v.irqs, l)
	return l, nil
}

// createDevices builds the PC devices and puts them on the port bus.
func (v *VM) createDevices() (*deviceSet, error) {
	d := &deviceSet{}
	console := v.cfg.Console
	if console == nil {
		console = consoleWriter
	}
	comIRQ, err := v.irq(irqCOM1)
	if err != nil {
		return nil, err
	}
	d.uart = serial.New(com1, comIRQ, console)
	reset := func() { v.guestStop("guest reset (i8042/0xcf9)") }
	d.i8042 = legacy.NewI8042(reset)
	d.cmos = legacy.NewCMOS(time.Now)
	add := []struct {
		base, n uint16
		dev     interface {
			ReadPort(uint16, []byte)
			WritePort(uint16, []byte)
		}
	}{
		{com1, 8, d.uart},
		{0x60, 1, d.i8042},
		{0x64, 1, d.i8042},
		{0x70, 2, d.cmos},
		{0x80, 1, legacy.POST{}},
		{0xcf9, 1, legacy.NewResetControl(reset)},
		{0xf4, 1, legacy.NewDebugExit(func(val uint32) { v.guestStop(fmt.Sprintf("guest powered off (code %d)", val)) })},
	}
	for _, a := range add {
		if err := v.ports.Add(a.base, a.n, a.dev); err != nil {
			d.close()
			return nil, err
		}
	}
	return d, nil
}

// startDevices starts device workers that run only while the guest runs.
func (v *VM) startDevices() {}

func (d *deviceSet) close() {
	if d.uart != nil {
		d.uart.Close()
	}
}

func (d *deviceSet) status() []DeviceStatus {
	return []DeviceStatus{{Kind: "serial", Detail: fmt.Sprintf("COM1 %#x irq %d", com1, irqCOM1)}}
}
