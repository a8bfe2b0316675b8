package x86

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/arch/x86/x86test"
	"github.com/godwit-vmm/godwit/internal/memory"
)

var pvhCode = []byte{0xF4, 0xEB, 0xFD} // hlt; jmp hlt

func TestParseKernelImagePVH(t *testing.T) {
	img, err := ParseKernelImage("vmlinux", x86test.PVHKernel(pvhCode, 0x3000))
	if err != nil || img.PVH == nil || img.Linux != nil || img.Multiboot != nil {
		t.Fatalf("PVH ELF parsed as %+v, %v", img, err)
	}
	k := img.PVH
	if k.Entry != x86test.LoadAddr || len(k.Segments) != 1 || k.Segments[0].Addr != x86test.LoadAddr || k.KernelEnd() != x86test.LoadAddr+0x3000 {
		t.Errorf("parsed %+v (end %#x)", k, k.KernelEnd())
	}
	if !img.TakesInitrd() {
		t.Error("a PVH kernel takes an initrd")
	}
}

func TestFindNote(t *testing.T) {
	le := binary.LittleEndian
	note := func(name string, typ uint32, desc []byte) []byte {
		b := make([]byte, 12)
		le.PutUint32(b[0:], uint32(len(name)+1))
		le.PutUint32(b[4:], uint32(len(desc)))
		le.PutUint32(b[8:], typ)
		b = append(b, name...)
		b = append(b, make([]byte, 4-len(name)%4)...) // NUL and padding
		b = append(b, desc...)
		return append(b, make([]byte, (4-len(desc)%4)%4)...)
	}
	seg := append(note("Linux", 18, []byte{1, 2, 3}), note("Xen", 5, []byte("xen-3.0"))...)
	seg = append(seg, note("Xen", 18, []byte{0, 0, 0, 1})...)
	if d, ok := findNote(seg, le, "Xen", 18); !ok || !bytes.Equal(d, []byte{0, 0, 0, 1}) {
		t.Errorf("findNote = %x, %v; want the Xen note of type 18 past the others", d, ok)
	}
	if _, ok := findNote(seg, le, "Xen", 19); ok {
		t.Error("found a note that is not there")
	}
	if _, ok := findNote(seg[:len(seg)-2], le, "Xen", 18); ok {
		t.Error("found a note cut short")
	}
}

func TestPVHLoad(t *testing.T) {
	mem, err := memory.New(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	// Dirty the bss first: Load must clear it.
	if err := mem.WriteAt(bytes.Repeat([]byte{0xAA}, 0x2000), x86test.LoadAddr+0x1000); err != nil {
		t.Fatal(err)
	}
	k, err := ParsePVH("vmlinux", x86test.PVHKernel(pvhCode, 0x3000))
	if err != nil {
		t.Fatal(err)
	}
	initrd := bytes.Repeat([]byte("initrd!"), 1000)
	const cmdline = "console=ttyS0 nokaslr"
	l, err := k.Load(mem, cmdline, initrd, 0xE0000)
	if err != nil {
		t.Fatal(err)
	}
	read := guestReader(t, mem)
	if !bytes.Equal(read(x86test.LoadAddr, len(pvhCode)), pvhCode) {
		t.Error("code not loaded at its physical address")
	}
	if !bytes.Equal(read(x86test.LoadAddr+0x1000, 0x2000), make([]byte, 0x2000)) {
		t.Error("bss not cleared")
	}
	if l.InitrdAddr%memory.PageSize != 0 || l.InitrdAddr+uint64(len(initrd)) > 64<<20 || 64<<20-l.InitrdAddr >= uint64(len(initrd))+memory.PageSize ||
		!bytes.Equal(read(l.InitrdAddr, len(initrd)), initrd) {
		t.Errorf("initrd at %#x, want the highest page that holds it", l.InitrdAddr)
	}
	le := binary.LittleEndian
	si := read(PVHStartInfoAddr, pvhStartInfoSize)
	if le.Uint32(si[0:]) != pvhStartMagic || le.Uint32(si[4:]) != 1 || le.Uint32(si[8:]) != 0 {
		t.Errorf("magic %#x version %d flags %#x", le.Uint32(si[0:]), le.Uint32(si[4:]), le.Uint32(si[8:]))
	}
	if n, ml := le.Uint32(si[12:]), le.Uint64(si[16:]); n != 1 || ml != pvhModlistAddr {
		t.Errorf("modules %d at %#x", n, ml)
	}
	mod := read(pvhModlistAddr, pvhModEntrySize)
	if le.Uint64(mod[0:]) != l.InitrdAddr || le.Uint64(mod[8:]) != uint64(len(initrd)) || le.Uint64(mod[16:]) != 0 {
		t.Errorf("module entry %x", mod)
	}
	if c := le.Uint64(si[24:]); c != CmdlineAddr || string(read(c, len(cmdline)+1)) != cmdline+"\x00" {
		t.Errorf("command line at %#x", c)
	}
	if r := le.Uint64(si[32:]); r != 0xE0000 {
		t.Errorf("rsdp %#x", r)
	}
	want := E820(64 << 20)
	if mm, n := le.Uint64(si[40:]), le.Uint32(si[48:]); mm != pvhMemmapAddr || int(n) != len(want) {
		t.Fatalf("memory map of %d entries at %#x, want %d", n, mm, len(want))
	}
	for i, e := range want {
		m := read(pvhMemmapAddr+uint64(i*pvhMemmapEntSize), pvhMemmapEntSize)
		if got := (E820Entry{le.Uint64(m[0:]), le.Uint64(m[8:]), le.Uint32(m[16:])}); got != e {
			t.Errorf("memory map entry %d = %+v, want %+v", i, got, e)
		}
	}
	regs := PVHRegs(k.Entry)
	if regs.RBX != PVHStartInfoAddr || regs.RIP != x86test.LoadAddr || regs.RFLAGS&(1<<9) != 0 {
		t.Errorf("entry registers %+v", regs)
	}
}

func TestPVHWithoutInitrd(t *testing.T) {
	mem, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	k, err := ParsePVH("vmlinux", x86test.PVHKernel(pvhCode, 0))
	if err != nil {
		t.Fatal(err)
	}
	l, err := k.Load(mem, "", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	si := make([]byte, pvhStartInfoSize)
	if err := mem.ReadAt(si, PVHStartInfoAddr); err != nil {
		t.Fatal(err)
	}
	if n := binary.LittleEndian.Uint32(si[12:]); n != 0 || l.InitrdSize != 0 {
		t.Errorf("%d modules without an initrd (layout %+v)", n, l)
	}
}

func TestPVHRefuses(t *testing.T) {
	k, err := ParsePVH("vmlinux", x86test.PVHKernel(pvhCode, 40<<20))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		ram    uint64
		cmd    int
		initrd uint64
		want   string
	}{
		{"kernel larger than RAM", 32 << 20, 0, 0, "kernel needs guest memory up to 41 MiB, the VM has 32 MiB"},
		{"initrd does not fit", 48 << 20, 0, 8 << 20, "initrd of 8 MiB does not fit in 7 MiB of guest memory above the kernel"},
		{"command line too long", 64 << 20, CmdlineMax, 0, "command line is 4096 bytes; at most 4095 fit"},
	}
	for _, tt := range tests {
		_, err := k.Layout(tt.ram, tt.cmd, tt.initrd)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := ParseKernelImage("vmlinux", x86test.ELF32(x86test.LoadAddr, x86test.LoadAddr, pvhCode, 0x1000)); err == nil ||
		!strings.Contains(err.Error(), "neither a multiboot header nor a PVH entry note") {
		t.Errorf("ELF without a PVH note: %v", err)
	}
}
