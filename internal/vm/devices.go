package vm

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/godwit-vmm/godwit/internal/arch/x86"
	"github.com/godwit-vmm/godwit/internal/devices"
	"github.com/godwit-vmm/godwit/internal/devices/legacy"
	"github.com/godwit-vmm/godwit/internal/devices/pci"
	"github.com/godwit-vmm/godwit/internal/devices/serial"
	"github.com/godwit-vmm/godwit/internal/devices/virtio/blk"
	virtionet "github.com/godwit-vmm/godwit/internal/devices/virtio/net"
	"github.com/godwit-vmm/godwit/internal/hv"
)

// Fixed ISA resources of the PC devices, and the interrupt lines given to
// the virtio functions (edge-triggered through the IOAPIC, written into
// each function's InterruptLine as firmware would).
const (
	com1    = 0x3f8
	irqCOM1 = 4
	irqNet  = 10
	irqBlk  = 11
)

// deviceSet is every emulated device of a VM.
type deviceSet struct {
	uart   *serial.UART
	i8042  *legacy.I8042
	cmos   *legacy.CMOS
	acpiPM *legacy.ACPIPM
	pci    *pci.Bus
	net    *virtionet.Device
	tap    *virtionet.TAP
	blk    *blk.Device
	// blkPath is the disk image's path, for status.
	blkPath string
	// pciIRQs says which GSI each PCI slot interrupts on, for the DSDT.
	pciIRQs []x86.PCIInterrupt
}

// DeviceState is the migratable state of every device.
type DeviceState struct {
	UART  serial.State
	I8042 legacy.I8042State
	CMOS  legacy.CMOSState
	PCI   pci.BusState
	Net   *virtionet.State
	Blk   *blk.State
	// ACPIPM is nil in the state of a VMM that predates the device: the
	// device then keeps its reset state.
	ACPIPM *legacy.ACPIPMState
}

// irq returns a new interrupt line on gsi, owned by v.
func (v *VM) irq(gsi uint32) (hv.IRQ, error) {
	l, err := v.hvm.IRQ(gsi)
	if err != nil {
		return nil, err
	}
	v.irqs = append(v.irqs, l)
	return l, nil
}

// createDevices builds the PC devices and puts them on the port bus.
func (v *VM) createDevices() (_ *deviceSet, err error) {
	d := &deviceSet{}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	console := v.cfg.Console
	if console == nil {
		console = consoleWriter
	}
	console = newPanicWatch(console, v.fail)
	comIRQ, err := v.irq(irqCOM1)
	if err != nil {
		return nil, err
	}
	d.uart = serial.New(com1, comIRQ, console)
	reset := func() { v.guestReset("i8042/0xcf9") }
	d.i8042 = legacy.NewI8042(reset)
	d.cmos = legacy.NewCMOS(time.Now)
	d.acpiPM = legacy.NewACPIPM(x86.ACPIPMBase, func() { v.guestStop("guest powered off (ACPI S5)") })
	d.pci = pci.NewBus()
	fixed := []struct {
		base, n uint16
		dev     devices.PortIO
	}{
		{com1, 8, d.uart},
		{0x60, 1, d.i8042},
		{0x64, 1, d.i8042},
		{0x70, 2, d.cmos},
		{0x80, 1, legacy.POST{}},
		{x86.ACPIPMBase, legacy.ACPIPMLen, d.acpiPM},
		{0xcf8, 8, d.pci},
		{0xcf9, 1, legacy.NewResetControl(reset)},
		{0xf4, 1, legacy.NewDebugExit(func(val uint32) { v.guestStop(fmt.Sprintf("guest powered off (code %d)", val)) })},
	}
	for _, f := range fixed {
		// 0xcf9 lies inside 0xcf8..0xcff: the PCI bus forwards nothing
		// there, so register the reset port first by splitting.
		if f.base == 0xcf8 {
			if err := v.ports.Add(0xcf8, 1, d.pci); err != nil {
				return nil, err
			}
			if err := v.ports.Add(0xcfc, 4, d.pci); err != nil {
				return nil, err
			}
			continue
		}
		if err := v.ports.Add(f.base, f.n, f.dev); err != nil {
			return nil, err
		}
	}
	v.ports.AddDynamic(d.pci)

	if n := v.cfg.Net; n != nil {
		if d.tap, err = virtionet.OpenTAP(n.TAP); err != nil {
			return nil, err
		}
		if n.Bridge != "" {
			if err := attachToBridge(n.TAP, n.Bridge); err != nil {
				return nil, err
			}
		}
		line, err := v.irq(irqNet)
		if err != nil {
			return nil, err
		}
		d.net = virtionet.New(v.mem, d.tap, [6]byte(v.MAC()), line, v.log)
		if err := d.addPCI(d.net, irqNet); err != nil {
			return nil, err
		}
	}
	if c := v.cfg.Disk; c != nil {
		line, err := v.irq(irqBlk)
		if err != nil {
			return nil, err
		}
		// An incoming VM opens the image unlocked (the source still holds
		// the lock) and takes the lock just before it runs (LockDisks).
		opts := blk.Options{ReadOnly: c.ReadOnly, Lock: !v.incoming, Log: v.log}
		if d.blk, err = blk.New(v.mem, c.Path, opts, line); err != nil {
			return nil, err
		}
		d.blkPath = c.Path
		if err := d.addPCI(d.blk, irqBlk); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// addPCI puts dev on the PCI bus with its interrupt line set to irq (a
// GSI below 16, which is also its ISA IRQ) and records the slot's
// routing for the DSDT.
func (d *deviceSet) addPCI(dev pci.Device, irq uint8) error {
	dev.Config().SetInterruptLine(irq)
	slot, err := d.pci.Add(dev)
	if err != nil {
		return err
	}
	d.pciIRQs = append(d.pciIRQs, x86.PCIInterrupt{Slot: slot, GSI: uint32(irq)})
	return nil
}

// MAC returns the guest NIC's MAC address: the configured one, or a locally
// administered address derived from the VM name, stable across restarts and
// migrations.
func (v *VM) MAC() net.HardwareAddr {
	if v.cfg.Net != nil && v.cfg.Net.MAC != nil {
		return v.cfg.Net.MAC
	}
	h := sha256.Sum256([]byte(v.cfg.Name))
	return net.HardwareAddr{0x52, 0x54, 0x00, h[0], h[1], h[2]}
}

// startDevices is called when the VM first runs: restored virtio devices
// start processing (they stay paused after Restore).
func (v *VM) startDevices() { v.dev.resume() }

func (d *deviceSet) pause() error {
	if d.net != nil {
		d.net.Pause()
	}
	if d.blk != nil {
		if err := d.blk.Pause(); err != nil {
			return err
		}
	}
	d.uart.Flush()
	return nil
}

func (d *deviceSet) resume() {
	if d.net != nil {
		d.net.Resume()
	}
	if d.blk != nil {
		d.blk.Resume()
	}
}

func (d *deviceSet) save() (DeviceState, error) {
	pm := d.acpiPM.Save()
	s := DeviceState{UART: d.uart.Save(), I8042: d.i8042.Save(), CMOS: d.cmos.Save(), PCI: d.pci.Save(), ACPIPM: &pm}
	if d.net != nil {
		ns := d.net.Save()
		s.Net = &ns
	}
	if d.blk != nil {
		bs := d.blk.Save()
		s.Blk = &bs
	}
	return s, nil
}

func (d *deviceSet) restore(s DeviceState) error {
	if (s.Net != nil) != (d.net != nil) || (s.Blk != nil) != (d.blk != nil) {
		return errors.New("the source and this VM have different devices")
	}
	errs := []error{d.uart.Restore(s.UART), d.i8042.Restore(s.I8042), d.cmos.Restore(s.CMOS), d.pci.Restore(s.PCI)}
	if s.ACPIPM != nil {
		errs = append(errs, d.acpiPM.Restore(*s.ACPIPM))
	}
	if d.net != nil {
		errs = append(errs, d.net.Restore(*s.Net))
	}
	if d.blk != nil {
		errs = append(errs, d.blk.Restore(*s.Blk))
	}
	return errors.Join(errs...)
}

func (d *deviceSet) close() {
	if d.net != nil {
		d.net.Close() // closes the TAP too
	} else if d.tap != nil {
		d.tap.Close()
	}
	if d.blk != nil {
		d.blk.Close()
	}
	if d.uart != nil {
		d.uart.Close()
	}
}

func (d *deviceSet) status() []DeviceStatus {
	st := []DeviceStatus{{Kind: "serial", Detail: fmt.Sprintf("COM1 %#x irq %d", com1, irqCOM1)}}
	if d.net != nil {
		s := d.net.Stats()
		mac := d.net.MAC()
		detail := fmt.Sprintf("tap %s mac %s irq %d rx %d tx %d", d.tap.Name(), net.HardwareAddr(mac[:]), irqNet, s.RXPackets, s.TXPackets)
		if ip, ok := d.net.GuestIPv4(); ok {
			detail += " guest-ip " + ip.String()
		}
		st = append(st, DeviceStatus{Kind: "virtio-net", Detail: detail})
	}
	if d.blk != nil {
		s := d.blk.Stats()
		st = append(st, DeviceStatus{Kind: "virtio-blk", Detail: fmt.Sprintf("%s %d sectors irq %d reads %d writes %d",
			d.blkPath, d.blk.Capacity(), irqBlk, s.Reads, s.Writes)})
	}
	return st
}

// LockDisks takes the VM's disk-image locks: a migration destination does
// it right before the VM runs, a source before it resumes after a failed
// switchover. An error means another VM holds an image: do not run.
func (v *VM) LockDisks() error {
	if v.dev.blk == nil {
		return nil
	}
	return v.dev.blk.Lock()
}

// DiskImage returns the disk image file the VM has open (nil without a
// disk); the VM owns it and closes it when it stops.
func (v *VM) DiskImage() *os.File {
	if v.dev.blk == nil {
		return nil
	}
	return v.dev.blk.Image()
}

// UnlockDisks releases the disk-image locks of a paused VM whose disk is
// synced, so that a migration destination can take them.
func (v *VM) UnlockDisks() error {
	if v.dev.blk == nil {
		return nil
	}
	return v.dev.blk.Unlock()
}
