package vm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/godwit-vmm/godwit/internal/limits"
)

// Config describes a VM. Validate checks it before anything is created.
type Config struct {
	Name     string // used in logs and as the default API socket name
	MemBytes uint64 // guest RAM, a multiple of 2 MiB
	VCPUs    int    // 1..limits.MaxVCPUs
	Kernel   string // multiboot v1 ELF, Linux bzImage or Linux vmlinux (PVH)
	Cmdline  string // kernel command line
	Initrd   string // initial ramdisk for a Linux kernel, or ""
	// Accel names the accelerator: "auto" (or ""), "kvm" or "emu"
	// (package accel).
	Accel string

	// Console receives the guest's serial output. Nil discards it.
	Console io.Writer

	// Net, if TAP is set, adds a virtio-net device on that TAP.
	Net *NetConfig
	// Disk, if set, adds a virtio-blk device on that raw image.
	Disk *DiskConfig

	// OnReboot says what a guest reboot does: RebootRestart (also "")
	// resets the machine and boots Kernel again, RebootStop ends the VM
	// (QEMU's -no-reboot).
	OnReboot string
}

// What a guest reboot does (Config.OnReboot).
const (
	RebootRestart = "restart"
	RebootStop    = "stop"
)

// NetConfig is a virtio-net device.
type NetConfig struct {
	TAP    string           // TAP interface name, created by the VMM
	MAC    net.HardwareAddr // guest MAC; nil picks a locally administered one
	Bridge string           // if set, the VMM attaches the TAP to this Linux bridge
}

// DiskConfig is a virtio-blk device.
type DiskConfig struct {
	Path     string
	ReadOnly bool
}

// Validate checks the configuration and says what to change.
func (c Config) Validate() error { return c.validate(true, true) }

// ValidateIncoming checks a configuration for a VM that arrives by
// migration: no kernel is needed, and RAM and vCPUs come from the source.
func (c Config) ValidateIncoming() error {
	return c.validate(false, false)
}

// validate checks c; needKernel for a VM that boots, shapeKnown once its
// RAM and vCPUs are set (an incoming VM's come from its source).
func (c Config) validate(needKernel, shapeKnown bool) error {
	shape := limits.VM{Name: c.Name, MemBytes: c.MemBytes, VCPUs: c.VCPUs, Cmdline: c.Cmdline, Incoming: !shapeKnown}
	if c.Net != nil {
		shape.TAP, shape.MAC = c.Net.TAP, c.Net.MAC
	}
	var errs []error
	if err := shape.Check(); err != nil {
		errs = append(errs, err)
	}
	if c.Kernel == "" {
		if needKernel {
			errs = append(errs, errors.New("a guest kernel is required (--kernel FILE)"))
		}
	} else if st, err := os.Stat(c.Kernel); err != nil {
		errs = append(errs, fmt.Errorf("guest kernel %s: %w (build it with `make guest` or pass --kernel)", c.Kernel, unwrapPath(err)))
	} else if !st.Mode().IsRegular() {
		errs = append(errs, fmt.Errorf("guest kernel %s is not a regular file", c.Kernel))
	}
	if c.Initrd != "" {
		if c.Kernel == "" {
			errs = append(errs, errors.New("an initrd (--initrd) needs a Linux kernel (--kernel)"))
		} else if st, err := os.Stat(c.Initrd); err != nil {
			errs = append(errs, fmt.Errorf("initrd %s: %w", c.Initrd, unwrapPath(err)))
		} else if !st.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("initrd %s is not a regular file", c.Initrd))
		} else if st.Size() == 0 {
			errs = append(errs, fmt.Errorf("initrd %s is empty", c.Initrd))
		}
	}
	if c.OnReboot != "" && c.OnReboot != RebootRestart && c.OnReboot != RebootStop {
		errs = append(errs, fmt.Errorf("on reboot %q: want %q or %q (--on-reboot)", c.OnReboot, RebootRestart, RebootStop))
	}
	if c.Net != nil && c.Net.TAP == "" {
		errs = append(errs, errors.New("a NIC needs a TAP name (--tap)"))
	}
	if c.Disk != nil {
		if st, err := os.Stat(c.Disk.Path); err != nil {
			errs = append(errs, fmt.Errorf("disk image %s: %w (create it, e.g. `truncate -s 64M %s`)", c.Disk.Path, unwrapPath(err), c.Disk.Path))
		} else if !st.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("disk image %s is not a regular file", c.Disk.Path))
		} else if st.Size()%512 != 0 || st.Size() == 0 {
			errs = append(errs, fmt.Errorf("disk image %s is %d bytes: its size must be a non-zero multiple of 512", c.Disk.Path, st.Size()))
		}
	}
	return errors.Join(errs...)
}

// unwrapPath drops the *PathError wrapper, whose text repeats the path.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
