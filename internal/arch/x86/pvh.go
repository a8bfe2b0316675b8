package x86

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/godwit-vmm/godwit/internal/hv"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// PVH boot (Xen's "HVM direct boot ABI", which Linux, QEMU, Firecracker
// and Cloud Hypervisor use outside Xen too): an uncompressed ELF kernel
// (vmlinux) names its 32-bit entry point in a XEN_ELFNOTE_PHYS32_ENTRY
// note. The VMM loads the ELF's segments where their physical addresses
// say, writes an hvm_start_info (version 1, with the memory map) and
// starts the BSP at that entry in flat 32-bit protected mode, paging off,
// with EBX pointing at the start info. The kernel skips its decompressor
// and real-mode setup entirely, which on the software CPU halves a Linux
// boot: the decompressor is tens of seconds of interpreted XZ.
//
// Guest-physical layout of a PVH boot:
//
//	0x000500  boot GDT (GDTAddr)
//	0x001000  hvm_start_info (PVHStartInfoAddr), then the module list
//	          and the memory map
//	0x007000  command line (CmdlineAddr)
//	0x0E0000  ACPI tables (ACPIBase)
//	segments  the ELF's PT_LOAD segments at their physical addresses
//	initrd    page-aligned, as high as possible below 3 GiB, above the
//	          kernel
const (
	PVHStartInfoAddr = 0x1000

	pvhStartMagic    = 0x336EC578 // XEN_HVM_START_MAGIC_VALUE
	pvhStartVersion  = 1          // with memmap_paddr and memmap_entries
	pvhStartInfoSize = 56
	pvhModlistAddr   = PVHStartInfoAddr + 0x40
	pvhModEntrySize  = 32
	pvhMemmapAddr    = PVHStartInfoAddr + 0x80
	pvhMemmapEntSize = 24
	pvhMemmapMax     = (0x1000 - 0x80) / pvhMemmapEntSize

	xenNoteName        = "Xen"
	xenNotePhys32Entry = 18 // XEN_ELFNOTE_PHYS32_ENTRY
)

// PVH is an ELF kernel with a PVH entry point: Linux's vmlinux.
type PVH struct {
	Path     string
	Entry    uint32 // the 32-bit entry point, a physical address
	Segments []Segment
}

// pvhEntry returns the XEN_ELFNOTE_PHYS32_ENTRY of an ELF's notes, if it
// has one. The note's value is 4 bytes, or 8 where the kernel writes it
// as a pointer; only a value below 4 GiB can be a 32-bit entry.
func pvhEntry(f *elf.File) (uint32, bool) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(io.LimitReader(p.Open(), 1<<20))
		if err != nil {
			continue
		}
		if e, ok := findNote(notes, f.ByteOrder, xenNoteName, xenNotePhys32Entry); ok {
			switch len(e) {
			case 4:
				return f.ByteOrder.Uint32(e), true
			case 8:
				if v := f.ByteOrder.Uint64(e); v < 1<<32 {
					return uint32(v), true
				}
			}
		}
	}
	return 0, false
}

// findNote returns the descriptor of the first note in an ELF note
// segment with the given name and type.
func findNote(b []byte, bo binary.ByteOrder, name string, typ uint32) ([]byte, bool) {
	align := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		nameSz, descSz, t := uint64(bo.Uint32(b)), uint64(bo.Uint32(b[4:])), bo.Uint32(b[8:])
		b = b[12:]
		if align(nameSz) > uint64(len(b)) {
			return nil, false
		}
		n := bytes.TrimRight(b[:nameSz], "\x00")
		b = b[align(nameSz):]
		if align(descSz) > uint64(len(b)) {
			return nil, false
		}
		desc := b[:descSz]
		b = b[align(descSz):]
		if t == typ && string(n) == name {
			return desc, true
		}
	}
	return nil, false
}

// ParsePVH parses an ELF kernel held in memory that has a PVH entry note.
// It never panics on malformed input.
func ParsePVH(path string, data []byte) (*PVH, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("x86: %s: not an ELF kernel: %v", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 && f.Machine != elf.EM_386 {
		return nil, fmt.Errorf("x86: %s: ELF machine %v, want x86", path, f.Machine)
	}
	entry, ok := pvhEntry(f)
	if !ok {
		return nil, fmt.Errorf("x86: %s: an ELF kernel with neither a multiboot header nor a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): a vmlinux needs CONFIG_PVH", path)
	}
	segs, err := readSegments(f)
	if err != nil {
		return nil, fmt.Errorf("x86: %s: %w", path, err)
	}
	return &PVH{Path: path, Entry: entry, Segments: segs}, nil
}

// KernelEnd is the end of the highest segment, bss included.
func (k *PVH) KernelEnd() uint64 {
	var end uint64
	for _, s := range k.Segments {
		end = max(end, s.End())
	}
	return end
}

// Layout plans a PVH boot in ramSize bytes of guest RAM, as Linux.Layout
// does for a bzImage: it checks that the command line, the kernel and an
// initrd of initrdSize bytes (0: none) fit and touches no memory. The
// kernel's entry is Entry; LoadAddr is its lowest segment.
func (k *PVH) Layout(ramSize uint64, cmdlineLen int, initrdSize uint64) (LinuxLayout, error) {
	if cmdlineLen > CmdlineMax-1 {
		return LinuxLayout{}, fmt.Errorf("x86: command line is %d bytes; at most %d fit", cmdlineLen, CmdlineMax-1)
	}
	lowTop := min(ramSize, memory.HoleStart)
	l := LinuxLayout{LoadAddr: k.Segments[0].Addr, KernelEnd: k.KernelEnd()}
	for _, s := range k.Segments {
		l.LoadAddr = min(l.LoadAddr, s.Addr)
	}
	if l.KernelEnd > lowTop {
		return LinuxLayout{}, fmt.Errorf("x86: kernel needs guest memory up to %s, the VM has %s below 3 GiB: give it more memory (--mem)", mib(l.KernelEnd), mib(lowTop))
	}
	if initrdSize == 0 {
		return l, nil
	}
	addr, room, ok := placeInitrd(l.KernelEnd, lowTop, initrdSize)
	if !ok {
		return LinuxLayout{}, fmt.Errorf("x86: initrd of %s does not fit in %s of guest memory above the kernel: give the VM more memory (--mem)", mib(initrdSize), mib(room))
	}
	l.InitrdAddr, l.InitrdSize = addr, initrdSize
	return l, nil
}

// Load copies the kernel's segments, the initrd (nil: none) and the
// command line into guest RAM and writes the hvm_start_info at
// PVHStartInfoAddr with the memory map, the initrd as the first module
// and rsdp as the ACPI RSDP's address (0: none).
func (k *PVH) Load(mem *memory.Guest, cmdline string, initrd []byte, rsdp uint64) (LinuxLayout, error) {
	l, err := k.Layout(mem.Size(), len(cmdline), uint64(len(initrd)))
	if err != nil {
		return l, err
	}
	if err := loadSegments(mem, k.Segments); err != nil {
		return l, err
	}
	if len(initrd) > 0 {
		if err := mem.WriteAt(initrd, l.InitrdAddr); err != nil {
			return l, fmt.Errorf("x86: load initrd at %#x: %w", l.InitrdAddr, err)
		}
	}
	if err := mem.WriteAt(append([]byte(cmdline), 0), CmdlineAddr); err != nil {
		return l, fmt.Errorf("x86: write command line: %w", err)
	}
	if err := mem.WriteAt(pvhStartInfo(l, E820(mem.Size()), rsdp), PVHStartInfoAddr); err != nil {
		return l, fmt.Errorf("x86: write the PVH start info: %w", err)
	}
	return l, nil
}

// pvhStartInfo returns the page at PVHStartInfoAddr: hvm_start_info, the
// module list (the initrd, if any) and the memory map.
func pvhStartInfo(l LinuxLayout, e820 []E820Entry, rsdp uint64) []byte {
	b := make([]byte, 0x1000)
	le := binary.LittleEndian
	le.PutUint32(b[0:], pvhStartMagic)
	le.PutUint32(b[4:], pvhStartVersion)
	if l.InitrdSize > 0 {
		le.PutUint32(b[12:], 1) // nr_modules
		le.PutUint64(b[16:], pvhModlistAddr)
		m := b[pvhModlistAddr-PVHStartInfoAddr:]
		le.PutUint64(m[0:], l.InitrdAddr)
		le.PutUint64(m[8:], l.InitrdSize)
	}
	le.PutUint64(b[24:], CmdlineAddr)
	le.PutUint64(b[32:], rsdp)
	n := min(len(e820), pvhMemmapMax)
	le.PutUint64(b[40:], pvhMemmapAddr)
	le.PutUint32(b[48:], uint32(n))
	for i, e := range e820[:n] {
		m := b[pvhMemmapAddr-PVHStartInfoAddr+i*pvhMemmapEntSize:]
		le.PutUint64(m[0:], e.Addr)
		le.PutUint64(m[8:], e.Size)
		le.PutUint32(m[16:], e.Type)
	}
	return b
}

// PVHRegs returns the general registers at a PVH entry: EBX = the start
// info, EIP = the entry, interrupts off.
func PVHRegs(entry uint32) hv.Regs {
	return hv.Regs{RBX: PVHStartInfoAddr, RIP: uint64(entry), RFLAGS: rflagsReserved}
}

// PVHSregs returns the segment and control registers at a PVH entry: flat
// 4 GiB 32-bit code and data segments, a 32-bit TSS in TR, protected mode,
// paging off; the multiboot entry's.
func PVHSregs(s hv.Sregs2) hv.Sregs2 { return MultibootSregs(s) }
