// Package accel chooses the accelerator a VM runs on: Linux KVM where
// /dev/kvm exists, Godwit's software x86-64 CPU where it does not (as QEMU
// falls back to TCG), or the one the user names. It is the only package
// that names both backends; the VMM above sees an hv.Hypervisor.
//
// Who may import: internal/vm, the agent (host facts) and the commands.
package accel

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/godwit-vmm/godwit/internal/emu"
	"github.com/godwit-vmm/godwit/internal/hv"
	"github.com/godwit-vmm/godwit/internal/kvm"
)

// Accelerator names.
const (
	Auto = "auto" // KVM when /dev/kvm exists, else the software CPU
	KVM  = "kvm"  // Linux KVM
	Emu  = "emu"  // Godwit's software x86-64 CPU
)

// Names lists the accepted values of --accel.
var Names = []string{Auto, KVM, Emu}

// Parse checks an --accel value; "" means Auto.
func Parse(s string) (string, error) {
	switch s {
	case "":
		return Auto, nil
	case Auto, KVM, Emu:
		return s, nil
	}
	return "", fmt.Errorf("accel: unknown accelerator %q (want auto, kvm or emu)", s)
}

// Resolve says which backend kind name selects on this host, without
// opening it: "auto" becomes "kvm" when /dev/kvm exists and "emu" when it
// does not.
func Resolve(name string) (string, error) {
	name, err := Parse(name)
	if err != nil {
		return "", err
	}
	if name != Auto {
		return name, nil
	}
	if _, err := os.Stat(kvm.DevicePath); errors.Is(err, fs.ErrNotExist) {
		return Emu, nil
	}
	return KVM, nil
}

// Open opens the accelerator name selects. With "auto", a /dev/kvm that
// exists but cannot be opened is an error naming it, so that a
// misconfigured KVM host is not silently slow; log (if not nil) gets one
// line saying which accelerator was chosen and why.
func Open(name string, log *slog.Logger) (hv.Hypervisor, error) {
	kind, err := Resolve(name)
	if err != nil {
		return nil, err
	}
	if log != nil && (name == Auto || name == "") {
		why := kvm.DevicePath + " is present"
		if kind == Emu {
			why = kvm.DevicePath + " does not exist"
		}
		log.Info("accelerator chosen", "accel", kind, "why", why)
	}
	switch kind {
	case KVM:
		return kvm.OpenHypervisor()
	case Emu:
		return emu.Open()
	}
	return nil, fmt.Errorf("accel: unknown accelerator %q", kind)
}
