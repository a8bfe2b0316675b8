package x86

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/godwit-vmm/godwit/internal/arch/x86/x86test"
	"github.com/godwit-vmm/godwit/internal/memory"
)

var elf32 = x86test.ELF32

func multibootPayload(flags uint32) []byte {
	p := append(x86test.MultibootHeader(flags), make([]byte, 52)...)
	for i := 12; i < len(p); i++ {
		p[i] = byte(i)
	}
	return p
}

func TestParseKernel(t *testing.T) {
	img := elf32(0x100000, 0x100000, multibootPayload(0), 0x3000)
	k, err := ParseKernel("k", img)
	if err != nil {
		t.Fatal(err)
	}
	if k.Entry != 0x100000 || len(k.Segments) != 1 || k.Segments[0].MemSize != 0x3000 {
		t.Fatalf("kernel = %+v", k)
	}
	if k.MemEnd() != 0x103000 {
		t.Errorf("MemEnd = %#x, want 0x103000", k.MemEnd())
	}
}

func TestParseKernelRejects(t *testing.T) {
	good := elf32(0x100000, 0x100000, multibootPayload(0), 0x1000)
	badSum := elf32(0x100000, 0x100000, multibootPayload(0), 0x1000)
	binary.LittleEndian.PutUint32(badSum[84+8:], 0)
	tests := []struct {
		name string
		img  []byte
	}{
		{"empty", nil},
		{"text file", []byte("hello, this is not a kernel\n")},
		{"elf without multiboot header", elf32(0x100000, 0x100000, make([]byte, 64), 0x1000)},
		{"bad checksum", badSum},
		{"truncated", good[:90]},
		{"segment below 1 MiB", elf32(0x1000, 0x1000, multibootPayload(0), 0x1000)},
		{"segment in the MMIO hole", elf32(0xc0000000, 0xc0000000, multibootPayload(0), 0x1000)},
		{"filesz above memsz", elf32(0x100000, 0x100000, multibootPayload(0), 8)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseKernel(tt.name, tt.img); err == nil {
				t.Fatal("accepted a bad kernel")
			}
		})
	}
	if _, err := ParseKernel("text", []byte("not a kernel")); !errors.Is(err, ErrNotMultiboot) {
		t.Errorf("error %v does not wrap ErrNotMultiboot", err)
	}
}

func FuzzParseKernel(f *testing.F) {
	f.Add(elf32(0x100000, 0x100000, multibootPayload(0), 0x3000))
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, img []byte) {
		k, err := ParseKernel("fuzz", img)
		if err != nil {
			return
		}
		for _, s := range k.Segments {
			if s.Addr < highMemStart || s.End() > memory.HoleStart || uint64(len(s.Data)) > s.MemSize {
				t.Fatalf("accepted bad segment %+v", s)
			}
		}
	})
}

func TestLoadWritesMultibootInfo(t *testing.T) {
	mem, err := memory.New(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	payload := multibootPayload(0)
	k, err := ParseKernel("k", elf32(0x100000, 0x100000, payload, 0x2000))
	if err != nil {
		t.Fatal(err)
	}
	info, err := k.Load(mem, "cpus=2 ip=10.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(payload))
	mem.ReadAt(got, 0x100000)
	if string(got) != string(payload) {
		t.Error("segment not loaded at its physical address")
	}
	hdr := make([]byte, 88)
	mem.ReadAt(hdr, uint64(info))
	le := binary.LittleEndian
	if flags := le.Uint32(hdr); flags&(mbInfoMem|mbInfoCmdline|mbInfoMmap) != mbInfoMem|mbInfoCmdline|mbInfoMmap {
		t.Errorf("flags %#x lack mem/cmdline/mmap", flags)
	}
	if upper := le.Uint32(hdr[8:]); upper != (64<<20-highMemStart)/1024 {
		t.Errorf("mem_upper = %d KiB", upper)
	}
	cl := make([]byte, 19)
	mem.ReadAt(cl, uint64(le.Uint32(hdr[16:])))
	if string(cl) != "cpus=2 ip=10.0.0.2\x00" {
		t.Errorf("cmdline = %q", cl)
	}
	if n := le.Uint32(hdr[44:]); n != 3*24 {
		t.Errorf("mmap length %d, want 3 entries of 24 bytes", n)
	}
}

func TestLoadRefusesTooLittleMemory(t *testing.T) {
	mem, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	k, err := ParseKernel("k", elf32(0x100000, 0x100000, multibootPayload(0), 32<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Load(mem, ""); err == nil {
		t.Fatal("loaded a kernel larger than RAM")
	}
}

func TestE820(t *testing.T) {
	tests := []struct {
		ram  uint64
		want []E820Entry
	}{
		{256 << 20, []E820Entry{{0, lowRAMEnd, E820RAM}, {lowRAMEnd, highMemStart - lowRAMEnd, E820Reserved}, {highMemStart, 255 << 20, E820RAM}}},
		{8 << 30, []E820Entry{{0, lowRAMEnd, E820RAM}, {lowRAMEnd, highMemStart - lowRAMEnd, E820Reserved}, {highMemStart, 3<<30 - highMemStart, E820RAM}, {4 << 30, 5 << 30, E820RAM}}},
	}
	for _, tt := range tests {
		got := E820(tt.ram)
		if len(got) != len(tt.want) {
			t.Fatalf("E820(%d MiB) = %v", tt.ram>>20, got)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("E820(%d MiB)[%d] = %+v, want %+v", tt.ram>>20, i, got[i], tt.want[i])
			}
		}
	}
}

func TestGDTEntry(t *testing.T) {
	// The flat 4 GiB code segment every x86 boot loader writes.
	if got := gdtEntry(0xc09b, 0, 0xfffff); got != 0x00cf9b000000ffff {
		t.Errorf("code descriptor = %#x", got)
	}
	if got := gdtEntry(0x008b, 0, 0x67); got != 0x00008b0000000067 {
		t.Errorf("tss descriptor = %#x", got)
	}
}
