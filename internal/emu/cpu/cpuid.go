package cpu

import "github.com/godwit-vmm/godwit/internal/hv"

// cpuSignature is CPUID.1:EAX: family 6, model 1, stepping 0 (and the EDX
// value after reset).
const cpuSignature = 0x00000610

func str4(s string) uint32 {
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// SupportedCPUID returns exactly what the emulator implements. The vendor
// is "GodwitVirtCP"; leaf 0x40000000 carries the hypervisor signature
// "GodwitGodwit" with no paravirtual features.
func SupportedCPUID() []hv.CPUIDEntry2 {
	const (
		edxFPU     = 1 << 0
		edxPSE     = 1 << 3
		edxTSC     = 1 << 4
		edxMSR     = 1 << 5
		edxPAE     = 1 << 6
		edxCX8     = 1 << 8
		edxAPIC    = 1 << 9
		edxSEP     = 1 << 11
		edxMTRR    = 1 << 12
		edxPGE     = 1 << 13
		edxCMOV    = 1 << 15
		edxPAT     = 1 << 16
		edxCLFLUSH = 1 << 19
		edxMMX     = 1 << 23
		edxFXSR    = 1 << 24
		edxSSE     = 1 << 25
		edxSSE2    = 1 << 26
		ecxXSAVE   = 1 << 26

		ecxCX16       = 1 << 13
		ecxMOVBE      = 1 << 22
		ecxPOPCNT     = 1 << 23
		ecxHypervisor = 1 << 31
		extABM        = 1 << 5 // lzcnt

		extSYSCALL = 1 << 11
		extNX      = 1 << 20
		extPDPE1GB = 1 << 26
		extRDTSCP  = 1 << 27
		extLM      = 1 << 29
		extLAHF    = 1 << 0
	)
	ecx1 := uint32(ecxMOVBE | ecxPOPCNT | ecxXSAVE | ecxHypervisor)
	if haveCAS128 {
		ecx1 |= ecxCX16 // cmpxchg16b is atomic only with the host's
	}
	vendor := "GodwitVirtCP"
	brand := "Godwit software x86-64 CPU\x00\x00\x00\x00\x00\x00" // padded below
	for len(brand) < 48 {
		brand += "\x00"
	}
	ents := []hv.CPUIDEntry2{
		{Function: 0, EAX: 0xd, EBX: str4(vendor[0:]), EDX: str4(vendor[4:]), ECX: str4(vendor[8:])},
		{Function: 1, EAX: cpuSignature, EBX: 8 << 8, ECX: ecx1,
			EDX: edxFPU | edxPSE | edxTSC | edxMSR | edxPAE | edxCX8 | edxAPIC | edxSEP | edxMTRR | edxPGE | edxCMOV | edxPAT |
				edxCLFLUSH | edxMMX | edxFXSR | edxSSE | edxSSE2},
		{Function: 7, Flags: 1},
		// XSAVE: x87 and SSE state, the standard format only (no
		// xsaveopt, xsavec, xgetbv with ECX=1, xsaves).
		{Function: 0xd, Index: 0, Flags: 1, EAX: xfeaturesSupported, EBX: xsaveSize, ECX: xsaveSize},
		{Function: 0xd, Index: 1, Flags: 1},
		{Function: 0x40000000, EAX: 0x40000000, EBX: str4("Godw"), ECX: str4("itGo"), EDX: str4("dwit")},
		{Function: 0x80000000, EAX: 0x80000008},
		{Function: 0x80000001, ECX: extLAHF | extABM, EDX: extSYSCALL | extNX | extPDPE1GB | extRDTSCP | extLM},
	}
	for i := 0; i < 3; i++ {
		b := brand[16*i:]
		ents = append(ents, hv.CPUIDEntry2{Function: 0x80000002 + uint32(i),
			EAX: str4(b[0:]), EBX: str4(b[4:]), ECX: str4(b[8:]), EDX: str4(b[12:])})
	}
	ents = append(ents,
		hv.CPUIDEntry2{Function: 0x80000007, EDX: 1 << 8}, // invariant TSC
		hv.CPUIDEntry2{Function: 0x80000008, EAX: 48<<8 | physAddrBits},
	)
	return ents
}

// SetCPUID sets the table CPUID answers from.
func (c *CPU) SetCPUID(ents []hv.CPUIDEntry2) {
	c.cpuid = append([]hv.CPUIDEntry2(nil), ents...)
}

// GetCPUID returns the table CPUID answers from.
func (c *CPU) GetCPUID() []hv.CPUIDEntry2 {
	return append([]hv.CPUIDEntry2(nil), c.cpuid...)
}

const cpuidFlagSignificantIndex = 1 // KVM_CPUID_FLAG_SIGNIFCANT_INDEX

func (c *CPU) doCPUID() {
	fn, idx := uint32(c.regs[rAX]), uint32(c.regs[rCX])
	var e hv.CPUIDEntry2
	for _, x := range c.cpuid {
		if x.Function == fn && (x.Flags&cpuidFlagSignificantIndex == 0 || x.Index == idx) {
			e = x
			break
		}
	}
	switch {
	case fn == 1 && c.cr4&cr4OSXSAVE != 0:
		e.ECX |= 1 << 27 // OSXSAVE mirrors CR4
	case fn == 0xd && idx == 0:
		e.EBX = xsaveSize // the area for the components XCR0 enables
	}
	c.regs[rAX], c.regs[rBX] = uint64(e.EAX), uint64(e.EBX)
	c.regs[rCX], c.regs[rDX] = uint64(e.ECX), uint64(e.EDX)
}
