package emu

import (
	"fmt"

	"github.com/godwit-vmm/godwit/internal/emu/cpu"
	"github.com/godwit-vmm/godwit/internal/hv"
)

// featureLeaves are the CPUID registers that advertise instructions and
// architectural features: a table may clear bits of them, never set one the
// software CPU lacks (a guest would then use it and fault).
var featureLeaves = []struct {
	fn, index uint32
	reg       string
}{
	{1, 0, "ecx"}, {1, 0, "edx"},
	{7, 0, "ebx"}, {7, 0, "ecx"}, {7, 0, "edx"},
	{0xd, 0, "eax"},
	{0x80000001, 0, "ecx"}, {0x80000001, 0, "edx"},
}

func reg(e hv.CPUIDEntry2, r string) uint32 {
	switch r {
	case "eax":
		return e.EAX
	case "ebx":
		return e.EBX
	case "ecx":
		return e.ECX
	}
	return e.EDX
}

// checkCPUID refuses a CPUID table that advertises a feature the software
// CPU does not implement, naming the leaf, register and bits.
func checkCPUID(ents []hv.CPUIDEntry2) error {
	supported := map[[2]uint32]hv.CPUIDEntry2{}
	for _, e := range cpu.SupportedCPUID() {
		supported[[2]uint32{e.Function, e.Index}] = e
	}
	for _, e := range ents {
		for _, f := range featureLeaves {
			if e.Function != f.fn || e.Index != f.index {
				continue
			}
			have := reg(supported[[2]uint32{f.fn, f.index}], f.reg)
			if f.fn == 1 && f.reg == "edx" {
				have |= 1 << 28 // HTT: the logical-processor count is valid (x86.PatchCPUID)
			}
			if extra := reg(e, f.reg) &^ have; extra != 0 {
				return fmt.Errorf("emu: CPUID leaf %#x.%d %s advertises bits %#x the software CPU does not implement", f.fn, f.index, f.reg, extra)
			}
		}
	}
	return nil
}
