package accel

import (
	"github.com/godwit-vmm/godwit/internal/emu"
	"github.com/godwit-vmm/godwit/internal/hv"
)

func init() {
	openEmu = func() (hv.Hypervisor, error) { return emu.Open() }
}
