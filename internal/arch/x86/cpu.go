package x86

import (
	"encoding/binary"

	"github.com/godwit-vmm/godwit/internal/hv"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// Control register and flag bits used at boot.
const (
	CR0_PE = 1 << 0
	CR0_ET = 1 << 4

	rflagsReserved = 1 << 1
)

// Boot GDT selectors: the table at GDTAddr holds null, null, code, data, TSS,
// as Linux's boot protocol and Firecracker lay it out.
const (
	selCode = 0x10
	selData = 0x18
	selTSS  = 0x20
)

// gdtEntry encodes a segment descriptor.
func gdtEntry(flags uint16, base, limit uint32) uint64 {
	return uint64(base&0xff000000)<<32 | uint64(flags&0xf0ff)<<40 | uint64(limit&0x000f0000)<<32 |
		uint64(base&0x00ffffff)<<16 | uint64(limit&0x0000ffff)
}

// WriteBootGDT writes the flat 32-bit GDT that the initial segment registers
// describe, so a kernel that reloads a selector before its own lgdt still
// finds a sane descriptor.
func WriteBootGDT(mem *memory.Guest) error {
	gdt := []uint64{
		0,
		0,
		gdtEntry(0xc09b, 0, 0xfffff), // code: 32-bit, 4 GiB, execute/read, accessed
		gdtEntry(0xc093, 0, 0xfffff), // data: 32-bit, 4 GiB, read/write, accessed
		gdtEntry(0x008b, 0, 0x67),    // TSS: busy 32-bit
	}
	b := make([]byte, 8*len(gdt))
	for i, e := range gdt {
		binary.LittleEndian.PutUint64(b[8*i:], e)
	}
	return mem.WriteAt(b, GDTAddr)
}

// MultibootRegs returns the general registers a multiboot kernel expects at
// entry: EAX = bootloader magic, EBX = information structure.
func MultibootRegs(entry, info uint32) hv.Regs {
	return hv.Regs{
		RAX:    MultibootBootloaderMagic,
		RBX:    uint64(info),
		RIP:    uint64(entry),
		RFLAGS: rflagsReserved,
	}
}

// MultibootSregs returns sregs with flat 4 GiB 32-bit segments, protected
// mode, paging off, starting from the vCPU's current sregs (which carry the
// APIC base and other reset state).
func MultibootSregs(s hv.Sregs2) hv.Sregs2 {
	code := hv.Segment{Base: 0, Limit: 0xffffffff, Selector: selCode, Type: 0xb, Present: 1, DB: 1, S: 1, G: 1}
	data := hv.Segment{Base: 0, Limit: 0xffffffff, Selector: selData, Type: 0x3, Present: 1, DB: 1, S: 1, G: 1}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = hv.Segment{Base: 0, Limit: 0x67, Selector: selTSS, Type: 0xb, Present: 1}
	s.LDT = hv.Segment{Type: 0x2, Present: 1, Unusable: 1}
	s.GDT = hv.DTable{Base: GDTAddr, Limit: 5*8 - 1}
	s.IDT = hv.DTable{}
	s.CR0 = CR0_PE | CR0_ET
	s.CR3, s.CR4, s.EFER = 0, 0, 0
	return s
}

// LAPIC register offsets and delivery modes used to set LINT0/LINT1 the way
// firmware leaves them: LINT0 = ExtINT (the 8259 PIC), LINT1 = NMI.
const (
	apicLVT0       = 0x350
	apicLVT1       = 0x360
	apicModeExtINT = 0x7
	apicModeNMI    = 0x4
)

// SetLINTs programs LVT0 as ExtINT and LVT1 as NMI in a LAPIC register page.
func SetLINTs(l *hv.LAPICState) {
	set := func(off int, mode uint32) {
		v := binary.LittleEndian.Uint32(l[off:])
		v = v&^0x700 | mode<<8
		binary.LittleEndian.PutUint32(l[off:], v)
	}
	set(apicLVT0, apicModeExtINT)
	set(apicLVT1, apicModeNMI)
}

// PatchCPUID returns the supported CPUID entries adjusted for vCPU id of n:
// the initial APIC ID in leaf 1 and the x2APIC ID in leaves 0xB/0x1F.
func PatchCPUID(ents []hv.CPUIDEntry2, id, n int) []hv.CPUIDEntry2 {
	out := make([]hv.CPUIDEntry2, len(ents))
	copy(out, ents)
	for i := range out {
		e := &out[i]
		switch e.Function {
		case 1:
			e.EBX = e.EBX&0x0000ffff | uint32(n)<<16 | uint32(id)<<24
			if n > 1 {
				e.EDX |= 1 << 28 // HTT: logical processor count in EBX is valid
			}
		case 0xb, 0x1f:
			e.EDX = uint32(id)
		}
	}
	return out
}
