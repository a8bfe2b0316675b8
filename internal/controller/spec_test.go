package controller

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// TestSpecAsTheVMMSees: the controller refuses exactly the shapes the VMM
// refuses, with the same reason, so the pool stores no VM that cannot run.
func TestSpecAsTheVMMSees(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "guest.elf")
	if err := os.WriteFile(kernel, []byte("\x7fELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, vmName string
		spec         store.VMSpec
		want         string // "" = accepted by both
	}{
		{"ok", "vm1", store.VMSpec{VCPUs: 2, MemBytes: 512 << 20}, ""},
		{"smallest", "vm1", store.VMSpec{VCPUs: 1, MemBytes: 32 << 20}, ""},
		{"largest", "vm1", store.VMSpec{VCPUs: 16, MemBytes: 1 << 40}, ""},
		{"3 MiB", "vm1", store.VMSpec{VCPUs: 1, MemBytes: 3 << 20}, "memory 3M is too little: give at least 32M (--mem)"},
		{"odd MiB", "vm1", store.VMSpec{VCPUs: 1, MemBytes: 33 << 20}, "memory 33M is not a multiple of 2M (--mem)"},
		{"2 TiB", "vm1", store.VMSpec{VCPUs: 1, MemBytes: 2 << 40}, "memory 2T is too much: at most 1T (--mem)"},
		{"0 vCPUs", "vm1", store.VMSpec{VCPUs: 0, MemBytes: 64 << 20}, "0 vCPUs: want 1 to 16 (--cpus)"},
		{"17 vCPUs", "vm1", store.VMSpec{VCPUs: 17, MemBytes: 64 << 20}, "17 vCPUs: want 1 to 16 (--cpus)"},
		{"long cmdline", "vm1", store.VMSpec{VCPUs: 1, MemBytes: 64 << 20, Cmdline: strings.Repeat("x", 4096)}, "the command line is 4096 bytes: at most 4095 (--cmdline)"},
		{"multicast MAC", "vm1", store.VMSpec{VCPUs: 1, MemBytes: 64 << 20, NICs: []store.NICSpec{{Network: "br0", MAC: "01:00:5e:00:00:01"}}}, "MAC 01:00:5e:00:00:01: want a 6-byte unicast address (--mac)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := c.spec
			spec.Kernel = kernel
			ctlErr := validateSpec(c.vmName, &spec)
			cfg := vm.Config{Name: c.vmName, MemBytes: c.spec.MemBytes, VCPUs: c.spec.VCPUs, Kernel: kernel, Cmdline: c.spec.Cmdline}
			if s := c.spec.Shape(c.vmName); s.MAC != nil {
				cfg.Net = &vm.NetConfig{TAP: "tap0", MAC: s.MAC}
			}
			vmmErr := cfg.Validate()
			if c.want == "" {
				if ctlErr != nil || vmmErr != nil {
					t.Fatalf("refused: controller %v, VMM %v", ctlErr, vmmErr)
				}
				return
			}
			if ctlErr == nil || !strings.Contains(ctlErr.Error(), c.want) {
				t.Errorf("controller: %v, want %q", ctlErr, c.want)
			}
			if vmmErr == nil || !strings.Contains(vmmErr.Error(), c.want) {
				t.Errorf("VMM: %v, want %q", vmmErr, c.want)
			}
		})
	}
}
