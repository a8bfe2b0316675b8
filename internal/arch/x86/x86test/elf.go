// Package x86test builds tiny multiboot ELF images for tests of the boot
// path and of how the VMM reports guest failures.
//
// Who may import: tests only.
package x86test

import "encoding/binary"

// Multiboot header magic and load address of the images built here.
const (
	headerMagic = 0x1BADB002
	LoadAddr    = 0x100000
)

// ELF32 returns a minimal ELF32 executable with one PT_LOAD segment holding
// payload at paddr and memsz bytes in memory, entered at entry.
func ELF32(entry, paddr uint32, payload []byte, memsz uint32) []byte {
	const ehsize, phsize = 52, 32
	b := make([]byte, ehsize+phsize+len(payload))
	b[0], b[1], b[2], b[3] = 0x7f, 'E', 'L', 'F'
	b[4], b[5], b[6] = 1, 1, 1 // 32-bit, little-endian, version 1
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2) // ET_EXEC
	le.PutUint16(b[18:], 3) // EM_386
	le.PutUint32(b[20:], 1)
	le.PutUint32(b[24:], entry)
	le.PutUint32(b[28:], ehsize) // phoff
	le.PutUint16(b[40:], ehsize)
	le.PutUint16(b[42:], phsize)
	le.PutUint16(b[44:], 1) // phnum
	ph := b[ehsize:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], ehsize+phsize)
	le.PutUint32(ph[8:], paddr)
	le.PutUint32(ph[12:], paddr)
	le.PutUint32(ph[16:], uint32(len(payload)))
	le.PutUint32(ph[20:], memsz)
	le.PutUint32(ph[24:], 5)
	copy(b[ehsize+phsize:], payload)
	return b
}

// MultibootHeader returns a 12-byte multiboot v1 header with flags.
func MultibootHeader(flags uint32) []byte {
	h := make([]byte, 12)
	binary.LittleEndian.PutUint32(h[0:], headerMagic)
	binary.LittleEndian.PutUint32(h[4:], flags)
	binary.LittleEndian.PutUint32(h[8:], -(headerMagic + flags))
	return h
}

// Kernel returns a multiboot ELF whose entry point runs code (32-bit
// protected mode), placed right after the multiboot header.
func Kernel(code []byte) []byte {
	payload := append(MultibootHeader(0), code...)
	return ELF32(LoadAddr+12, LoadAddr, payload, uint32(len(payload)))
}

// PVHKernel returns an ELF64 kernel with a PVH entry note (a 64-bit
// XEN_ELFNOTE_PHYS32_ENTRY, as Linux's vmlinux has) whose 32-bit entry at
// LoadAddr runs code, with memsz bytes in memory (at least the code).
func PVHKernel(code []byte, memsz uint64) []byte {
	const ehsize, phsize = 64, 56
	note := make([]byte, 12+4+8)
	le := binary.LittleEndian
	le.PutUint32(note[0:], 4)  // namesz: "Xen\0"
	le.PutUint32(note[4:], 8)  // descsz
	le.PutUint32(note[8:], 18) // XEN_ELFNOTE_PHYS32_ENTRY
	copy(note[12:], "Xen\x00")
	le.PutUint64(note[16:], LoadAddr)
	noteOff := uint64(ehsize + 2*phsize)
	codeOff := noteOff + uint64(len(note))
	b := make([]byte, int(codeOff)+len(code))
	b[0], b[1], b[2], b[3] = 0x7f, 'E', 'L', 'F'
	b[4], b[5], b[6] = 2, 1, 1 // 64-bit, little-endian, version 1
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 62)   // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], 0xFFFFFFFF81000000) // e_entry: a virtual address, unused
	le.PutUint64(b[32:], ehsize)             // phoff
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[54:], phsize)
	le.PutUint16(b[56:], 2) // phnum
	ph := b[ehsize:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // R+X
	le.PutUint64(ph[8:], codeOff)
	le.PutUint64(ph[16:], 0xFFFFFFFF81000000) // vaddr
	le.PutUint64(ph[24:], LoadAddr)           // paddr
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], max(memsz, uint64(len(code))))
	le.PutUint64(ph[48:], 0x1000)
	ph = b[ehsize+phsize:]
	le.PutUint32(ph[0:], 4) // PT_NOTE
	le.PutUint32(ph[4:], 4)
	le.PutUint64(ph[8:], noteOff)
	le.PutUint64(ph[32:], uint64(len(note)))
	le.PutUint64(ph[40:], uint64(len(note)))
	le.PutUint64(ph[48:], 4)
	copy(b[noteOff:], note)
	copy(b[codeOff:], code)
	return b
}
