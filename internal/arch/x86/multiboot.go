// Package x86 holds the x86-64 knowledge of the VMM that does not need a
// running VM: loading a multiboot v1 ELF, a Linux bzImage or a PVH vmlinux
// and writing their boot information, the machine's ACPI tables, the CPU
// state a kernel expects at entry, and the CPUID and MSR lists the VMM
// sets and migrates.
//
// Who may import: the vm and migration layers. It imports kvm (for register
// types) and memory, nothing above.
package x86

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/godwit-vmm/godwit/internal/memory"
)

// Multiboot v1 constants (Multiboot Specification 0.6.96).
const (
	MultibootHeaderMagic     = 0x1BADB002
	MultibootBootloaderMagic = 0x2BADB002
	multibootSearch          = 8192 // the header lies in the first 8 KiB

	mbFlagAOutKludge = 1 << 16

	mbInfoMem     = 1 << 0
	mbInfoCmdline = 1 << 2
	mbInfoMmap    = 1 << 6
	mbInfoLoader  = 1 << 9
)

// Fixed guest-physical addresses of the boot structures, all below the
// 0x8000 page that test guests use for their AP trampoline, and below the
// kernel at 1 MiB.
const (
	GDTAddr        = 0x500
	MultibootInfo  = 0x6000
	MultibootMmap  = 0x6100
	LoaderNameAddr = 0x6F00
	CmdlineAddr    = 0x7000
	CmdlineMax     = 0x1000
	lowRAMEnd      = 0x9FC00 // conventional memory ends where the EBDA begins
	highMemStart   = 0x100000
)

// ErrNotMultiboot says the kernel file is not a multiboot v1 ELF.
var ErrNotMultiboot = errors.New("x86: not a multiboot v1 ELF kernel")

// Kernel is a parsed multiboot ELF, ready to load.
type Kernel struct {
	Path     string
	Entry    uint32
	Segments []Segment
}

// Segment is one PT_LOAD segment: Data goes at guest-physical Addr, followed
// by MemSize-len(Data) zero bytes.
type Segment struct {
	Addr    uint64
	Data    []byte
	MemSize uint64
}

// End returns the first address after the segment.
func (s Segment) End() uint64 { return s.Addr + s.MemSize }

// ParseKernel parses a multiboot ELF image held in memory. It never panics on
// malformed input.
func ParseKernel(path string, data []byte) (*Kernel, error) {
	flags, err := findMultibootHeader(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		if flags&mbFlagAOutKludge != 0 {
			return nil, fmt.Errorf("%s: %w: a.out-kludge kernels are not supported, link it as ELF", path, ErrNotMultiboot)
		}
		return nil, fmt.Errorf("%s: %w: %v", path, ErrNotMultiboot, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_386 && f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("%s: %w: ELF machine %v, want x86", path, ErrNotMultiboot, f.Machine)
	}
	if f.Type != elf.ET_EXEC {
		return nil, fmt.Errorf("%s: %w: ELF type %v, want an executable", path, ErrNotMultiboot, f.Type)
	}
	if f.Entry >= 1<<32 {
		return nil, fmt.Errorf("%s: %w: entry point %#x above 4 GiB", path, ErrNotMultiboot, f.Entry)
	}
	segs, err := readSegments(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrNotMultiboot, err)
	}
	k := &Kernel{Path: path, Entry: uint32(f.Entry), Segments: segs}
	return k, nil
}

// readSegments reads an ELF kernel's PT_LOAD segments, placed at their
// physical addresses: between 1 MiB (below are the boot structures) and
// the PCI hole.
func readSegments(f *elf.File) ([]Segment, error) {
	var segs []Segment
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz || p.Paddr+p.Memsz < p.Paddr || p.Paddr+p.Memsz > memory.HoleStart {
			return nil, fmt.Errorf("bad segment at %#x (file %d, memory %d bytes)", p.Paddr, p.Filesz, p.Memsz)
		}
		if p.Paddr < highMemStart {
			return nil, fmt.Errorf("segment at %#x is below 1 MiB, where the boot structures go", p.Paddr)
		}
		seg := Segment{Addr: p.Paddr, MemSize: p.Memsz, Data: make([]byte, p.Filesz)}
		if _, err := io.ReadFull(p.Open(), seg.Data); err != nil {
			return nil, fmt.Errorf("segment at %#x: %v", p.Paddr, err)
		}
		segs = append(segs, seg)
	}
	if len(segs) == 0 {
		return nil, errors.New("no loadable segments")
	}
	return segs, nil
}

// loadSegments copies segs into guest RAM and clears their bss.
func loadSegments(mem *memory.Guest, segs []Segment) error {
	for _, s := range segs {
		if err := mem.WriteAt(s.Data, s.Addr); err != nil {
			return fmt.Errorf("x86: load segment at %#x: %w", s.Addr, err)
		}
		zeros := make([]byte, s.MemSize-uint64(len(s.Data)))
		if err := mem.WriteAt(zeros, s.Addr+uint64(len(s.Data))); err != nil {
			return fmt.Errorf("x86: clear segment bss at %#x: %w", s.Addr, err)
		}
	}
	return nil
}

// findMultibootHeader returns the header's flags.
func findMultibootHeader(data []byte) (uint32, error) {
	n := min(len(data), multibootSearch)
	for off := 0; off+12 <= n; off += 4 {
		if binary.LittleEndian.Uint32(data[off:]) != MultibootHeaderMagic {
			continue
		}
		flags := binary.LittleEndian.Uint32(data[off+4:])
		sum := binary.LittleEndian.Uint32(data[off+8:])
		if MultibootHeaderMagic+flags+sum == 0 {
			return flags, nil
		}
	}
	return 0, fmt.Errorf("%w: no multiboot header in the first 8 KiB", ErrNotMultiboot)
}

// MemEnd returns the highest address a kernel's segments reach.
func (k *Kernel) MemEnd() uint64 {
	var end uint64
	for _, s := range k.Segments {
		end = max(end, s.End())
	}
	return end
}

// Load copies the kernel's segments into guest RAM and writes the multiboot
// information structure (memory map and command line). It returns the
// address of the information structure, for EBX.
func (k *Kernel) Load(mem *memory.Guest, cmdline string) (uint32, error) {
	lowTop := min(mem.Size(), memory.HoleStart)
	if end := k.MemEnd(); end > lowTop {
		return 0, fmt.Errorf("x86: kernel needs RAM up to %#x, the VM has %d MiB: give it more memory", end, mem.Size()>>20)
	}
	if err := loadSegments(mem, k.Segments); err != nil {
		return 0, err
	}
	if len(cmdline)+1 > CmdlineMax {
		return 0, fmt.Errorf("x86: command line is %d bytes, at most %d allowed", len(cmdline), CmdlineMax-1)
	}
	if err := mem.WriteAt(append([]byte(cmdline), 0), CmdlineAddr); err != nil {
		return 0, err
	}
	if err := mem.WriteAt([]byte("godwit\x00"), LoaderNameAddr); err != nil {
		return 0, err
	}
	mmap := E820(mem.Size())
	var mm bytes.Buffer
	for _, e := range mmap {
		binary.Write(&mm, binary.LittleEndian, struct {
			Size      uint32
			Addr, Len uint64
			Type      uint32
		}{20, e.Addr, e.Size, e.Type})
	}
	if err := mem.WriteAt(mm.Bytes(), MultibootMmap); err != nil {
		return 0, err
	}
	info := make([]byte, 88)
	le := binary.LittleEndian
	le.PutUint32(info[0:], mbInfoMem|mbInfoCmdline|mbInfoMmap|mbInfoLoader)
	le.PutUint32(info[4:], lowRAMEnd/1024)                     // mem_lower, KiB
	le.PutUint32(info[8:], uint32((lowTop-highMemStart)/1024)) // mem_upper, KiB above 1 MiB
	le.PutUint32(info[16:], CmdlineAddr)
	le.PutUint32(info[44:], uint32(mm.Len()))
	le.PutUint32(info[48:], MultibootMmap)
	le.PutUint32(info[64:], LoaderNameAddr)
	if err := mem.WriteAt(info, MultibootInfo); err != nil {
		return 0, err
	}
	return MultibootInfo, nil
}

// E820 types.
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry is one range of the guest's physical memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// E820 returns the memory map of a guest with ramSize bytes of RAM laid out
// as package memory does.
func E820(ramSize uint64) []E820Entry {
	lowTop := min(ramSize, memory.HoleStart)
	m := []E820Entry{
		{0, lowRAMEnd, E820RAM},
		{lowRAMEnd, highMemStart - lowRAMEnd, E820Reserved},
		{highMemStart, lowTop - highMemStart, E820RAM},
	}
	if ramSize > memory.HoleStart {
		m = append(m, E820Entry{memory.HighStart, ramSize - memory.HoleStart, E820RAM})
	}
	return m
}
