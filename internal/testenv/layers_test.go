package testenv

import (
	"strings"
	"testing"
)

// TestLayers keeps the VMM's layers pointing one way : the seam
// (hv) → the accelerators (kvm, the software CPU) → arch → vm/devices →
// migration → agent/controller; a lower layer never imports a higher one,
// and nothing above accel names a backend.
func TestLayers(t *testing.T) {
	const mod = "github.com/godwit-vmm/godwit/internal/"
	only := func(allowed ...string) func(string) bool {
		return func(p string) bool {
			if !strings.HasPrefix(p, mod) {
				return false
			}
			for _, a := range allowed {
				if p == mod+a || strings.HasPrefix(p, mod+a+"/") {
					return false
				}
			}
			return true
		}
	}
	CheckImports(t, map[string]func(string) bool{
		"../hv":                 only(),
		"../kvm":                only("hv"),
		"../emu":                only("hv", "emu"),
		"../emu/cpu":            only("hv"),
		"../emu/irqchip":        only("hv"),
		"../emu/native":         only(),
		"../accel":              only("hv", "kvm", "emu"),
		"../memory":             only(),
		"../arch/x86":           only("hv", "memory"),
		"../devices":            only(),
		"../devices/serial":     only("devices"),
		"../devices/pci":        only("devices"),
		"../devices/virtio":     only("devices", "memory"),
		"../devices/virtio/net": only("devices", "memory"),
		"../devices/virtio/blk": only("devices", "memory"),
		"../vm":                 only("hv", "accel", "memory", "arch", "devices", "limits"),
		"../migration":          only("hv", "memory", "arch", "devices", "vm", "migration", "limits"),
		"../migration/wire":     only(),
		"../migration/policy":   only(),
		"../fence":              only(),
		"../pki":                only("limits"),
		"../limits":             only(),
		"../promreg":            only(),
		"../sandbox":            only(),
		"../api":                only("vm", "migration"),
		"../conformance":        only(),
	})
}
