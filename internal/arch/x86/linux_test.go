package x86

import (
	"bytes"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// bzOpts describes a synthetic bzImage: a boot sector with a setup header
// and a protected-mode payload, enough for the loader (no real code).
type bzOpts struct {
	version       uint16
	setupSects    byte // 0 means 4, as in a real header
	loadFlags     byte
	headerEnd     int // 0: 0x26C, protocol 2.15's
	relocatable   bool
	alignment     uint32
	prefAddress   uint64
	initSize      uint32
	initrdAddrMax uint32
	cmdlineSize   uint32
	payload       []byte
}

// defaultBz is a relocatable protocol 2.15 kernel that wants to run at
// 16 MiB with 8 MiB of init_size, like a small Debian kernel.
func defaultBz() bzOpts {
	payload := make([]byte, 64<<10)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	return bzOpts{
		version: 0x020F, setupSects: 0x1B, loadFlags: loadFlagHigh, relocatable: true, alignment: 0x200000,
		prefAddress: 0x1000000, initSize: 8 << 20, initrdAddrMax: 0x7FFFFFFF, cmdlineSize: 2047, payload: payload,
	}
}

func (o bzOpts) image() []byte {
	sects := int(o.setupSects)
	if sects == 0 {
		sects = 4
	}
	img := make([]byte, (sects+1)*512)
	img[hdrSetupSects] = o.setupSects
	le.PutUint16(img[hdrBootFlag:], 0xAA55)
	end := o.headerEnd
	if end == 0 {
		end = 0x26C
	}
	img[hdrJump], img[hdrJump+1] = 0xEB, byte(end-hdrMagic)
	copy(img[hdrMagic:], "HdrS")
	le.PutUint16(img[hdrVersion:], o.version)
	img[hdrLoadFlags] = o.loadFlags
	le.PutUint32(img[hdrCode32Start:], 0x100000)
	le.PutUint32(img[hdrInitrdAddrMax:], o.initrdAddrMax)
	le.PutUint32(img[hdrKernelAlignment:], o.alignment)
	if o.relocatable {
		img[hdrRelocatable] = 1
	}
	le.PutUint16(img[0x236:], 0x7F) // xloadflags
	le.PutUint32(img[hdrCmdlineSize:], o.cmdlineSize)
	le.PutUint64(img[hdrPrefAddress:], o.prefAddress)
	le.PutUint32(img[hdrInitSize:], o.initSize)
	return append(img, o.payload...)
}

func TestParseLinux(t *testing.T) {
	for _, sects := range []byte{0, 0x1B} {
		o := defaultBz()
		o.setupSects = sects
		k, err := ParseLinux("bz", o.image())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k.payload, o.payload) {
			n := int(sects)
			if n == 0 {
				n = 4
			}
			t.Errorf("setup_sects %d: payload not taken from offset %d", sects, (n+1)*512)
		}
		if k.Protocol != 0x020F || !k.relocatable || k.prefAddress != 0x1000000 || k.initSize != 8<<20 ||
			k.kernelAlignment != 0x200000 || k.cmdlineSize != 2047 || k.initrdAddrMax != 0x7FFFFFFF {
			t.Errorf("parsed %+v", k)
		}
		if len(k.header) != 0x26C-hdrSetupSects {
			t.Errorf("setup header of %d bytes, want up to 0x26C", len(k.header))
		}
	}
}

func TestParseLinuxRejects(t *testing.T) {
	mod := func(f func(*bzOpts)) []byte {
		o := defaultBz()
		f(&o)
		return o.image()
	}
	good := defaultBz().image()
	tests := []struct {
		name string
		img  []byte
		want string
	}{
		{"protocol 2.09", mod(func(o *bzOpts) { o.version = 0x0209 }), "kernel boot protocol 2.09 is too old: need 2.10 or later"},
		{"zImage", mod(func(o *bzOpts) { o.loadFlags = 0 }), "zImage (LOADED_HIGH clear)"},
		{"header ends early", mod(func(o *bzOpts) { o.headerEnd = 0x240 }), "setup header ends at 0x240"},
		{"no payload", good[:(0x1B+1)*512], "is truncated"},
		{"header past the file", good[:0x220], "setup header ends at 0x26c"},
		{"bad alignment", mod(func(o *bzOpts) { o.alignment = 0x180000 }), "kernel_alignment 0x180000 is not a power of two"},
		{"no HdrS", append(append([]byte{}, good[:hdrMagic]...), make([]byte, 4096)...), "not a Linux bzImage"},
	}
	for _, tt := range tests {
		_, err := ParseLinux("bz", tt.img)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one with %q", tt.name, err, tt.want)
		}
	}
}

func TestLinuxLayout(t *testing.T) {
	nonReloc := defaultBz()
	nonReloc.relocatable = false
	lowPref := defaultBz()
	lowPref.prefAddress = 0x80000 // below 1 MiB: runs at 1 MiB aligned up
	lowMax := defaultBz()
	lowMax.initrdAddrMax = 0x37FFFFFF // 896 MiB - 1
	highMax := defaultBz()
	highMax.initrdAddrMax = 0xFFFFFFFF
	tests := []struct {
		name   string
		o      bzOpts
		ram    uint64
		initrd uint64
		want   LinuxLayout
	}{
		{"relocatable at pref_address", defaultBz(), 64 << 20, 0,
			LinuxLayout{LoadAddr: 16 << 20, KernelEnd: 24 << 20}},
		{"initrd at the top of RAM", defaultBz(), 64 << 20, 1<<20 + 5,
			LinuxLayout{LoadAddr: 16 << 20, KernelEnd: 24 << 20, InitrdAddr: 64<<20 - 1<<20 - 4096, InitrdSize: 1<<20 + 5}},
		{"initrd below 2 GiB (initrd_addr_max) on a large VM", defaultBz(), 8 << 30, 4 << 20,
			LinuxLayout{LoadAddr: 16 << 20, KernelEnd: 24 << 20, InitrdAddr: 2<<30 - 4<<20, InitrdSize: 4 << 20}},
		{"initrd below 3 GiB on a large VM", highMax, 8 << 30, 4 << 20,
			LinuxLayout{LoadAddr: 16 << 20, KernelEnd: 24 << 20, InitrdAddr: 3<<30 - 4<<20, InitrdSize: 4 << 20}},
		{"initrd below initrd_addr_max", lowMax, 2 << 30, 4096,
			LinuxLayout{LoadAddr: 16 << 20, KernelEnd: 24 << 20, InitrdAddr: 0x38000000 - 4096, InitrdSize: 4096}},
		{"initrd just fits", defaultBz(), 64 << 20, 40 << 20,
			LinuxLayout{LoadAddr: 16 << 20, KernelEnd: 24 << 20, InitrdAddr: 24 << 20, InitrdSize: 40 << 20}},
		{"not relocatable: loaded at 1 MiB, runs at pref_address", nonReloc, 64 << 20, 0,
			LinuxLayout{LoadAddr: 1 << 20, KernelEnd: 24 << 20}},
		{"pref_address below 1 MiB", lowPref, 64 << 20, 0,
			LinuxLayout{LoadAddr: 2 << 20, KernelEnd: 10 << 20}},
	}
	for _, tt := range tests {
		k, err := ParseLinux("bz", tt.o.image())
		if err != nil {
			t.Fatal(err)
		}
		got, err := k.Layout(tt.ram, 100, tt.initrd)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s: layout %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestLinuxLayoutRefuses(t *testing.T) {
	bigCmdline := defaultBz()
	bigCmdline.cmdlineSize = 1 << 20
	farPref := defaultBz()
	farPref.prefAddress = 1 << 40
	tests := []struct {
		name       string
		o          bzOpts
		ram        uint64
		cmdlineLen int
		initrd     uint64
		want       string
	}{
		{"command line past cmdline_size", defaultBz(), 64 << 20, 2048, 0, "command line is 2048 bytes; this kernel takes at most 2047"},
		{"command line past CmdlineMax", bigCmdline, 64 << 20, 4096, 0, "command line is 4096 bytes; this kernel takes at most 4095"},
		{"initrd too large", defaultBz(), 64 << 20, 0, 100 << 20, "initrd of 100 MiB does not fit in 40 MiB of guest memory between the kernel and 0x4000000: give the VM more memory"},
		{"initrd one page too large", defaultBz(), 64 << 20, 0, 40<<20 + 1, "initrd of 40.0 MiB does not fit in 40 MiB"},
		{"initrd larger than RAM", defaultBz(), 32 << 20, 0, 1 << 30, "initrd of 1024 MiB does not fit in 8 MiB"},
		{"kernel larger than RAM", defaultBz(), 20 << 20, 0, 0, "kernel needs guest memory up to 24 MiB, the VM has 20 MiB below 3 GiB"},
		{"RAM ends below pref_address", defaultBz(), 16 << 20, 0, 0, "kernel wants to run at 0x1000000, the VM has 16 MiB below 3 GiB"},
		{"no room above the kernel", defaultBz(), 24 << 20, 0, 4096, "does not fit in 0 MiB"},
		{"pref_address beyond RAM", farPref, 64 << 20, 0, 0, "kernel wants to run at 0x10000000000"},
	}
	for _, tt := range tests {
		k, err := ParseLinux("bz", tt.o.image())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Layout(tt.ram, tt.cmdlineLen, tt.initrd); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one with %q", tt.name, err, tt.want)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tt.name, err)
		}
	}
}

func TestLinuxLoad(t *testing.T) {
	for _, protocol := range []uint16{0x020F, 0x020D} {
		mem, err := memory.New(64 << 20)
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		o := defaultBz()
		o.version = protocol
		k, err := ParseLinux("bz", o.image())
		if err != nil {
			t.Fatal(err)
		}
		initrd := bytes.Repeat([]byte("initrd!"), 1000)
		const cmdline = "console=ttyS0 panic=-1"
		l, err := k.Load(mem, cmdline, initrd, 0xE0000)
		if err != nil {
			t.Fatal(err)
		}
		read := guestReader(t, mem)
		if !bytes.Equal(read(l.LoadAddr, len(o.payload)), o.payload) {
			t.Errorf("payload not at %#x", l.LoadAddr)
		}
		if l.InitrdAddr%4096 != 0 || l.InitrdAddr+uint64(len(initrd)) > 64<<20 || !bytes.Equal(read(l.InitrdAddr, len(initrd)), initrd) {
			t.Errorf("initrd not at %#x", l.InitrdAddr)
		}
		if got := read(CmdlineAddr, len(cmdline)+1); string(got) != cmdline+"\x00" {
			t.Errorf("command line %q", got)
		}
		bp := read(ZeroPageAddr, ZeroPageSize)
		checks := []struct {
			name      string
			got, want uint64
		}{
			{"setup_sects", uint64(bp[0x1F1]), 0x1B},
			{"boot_flag", uint64(le.Uint16(bp[0x1FE:])), 0xAA55},
			{"HdrS", uint64(le.Uint32(bp[0x202:])), 0x53726448},
			{"version", uint64(le.Uint16(bp[0x206:])), uint64(protocol)},
			{"type_of_loader", uint64(bp[0x210]), 0xFF},
			{"loadflags", uint64(bp[0x211]), 0x01},
			{"code32_start", uint64(le.Uint32(bp[0x214:])), l.LoadAddr},
			{"ramdisk_image", uint64(le.Uint32(bp[0x218:])), l.InitrdAddr},
			{"ramdisk_size", uint64(le.Uint32(bp[0x21C:])), uint64(len(initrd))},
			{"cmd_line_ptr", uint64(le.Uint32(bp[0x228:])), CmdlineAddr},
			{"pref_address", le.Uint64(bp[0x258:]), 0x1000000},
			{"init_size", uint64(le.Uint32(bp[0x260:])), 8 << 20},
			{"ext_ramdisk_image", uint64(le.Uint32(bp[0x0C0:])), 0},
			{"ext_cmd_line_ptr", uint64(le.Uint32(bp[0x0C8:])), 0},
			{"sentinel", uint64(bp[0x1EF]), 0},
		}
		rsdp := uint64(0xE0000)
		if protocol < 0x020E {
			rsdp = 0 // acpi_rsdp_addr is new in 2.14
		}
		checks = append(checks, struct {
			name      string
			got, want uint64
		}{"acpi_rsdp_addr", le.Uint64(bp[0x070:]), rsdp})
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("protocol %#x: boot_params %s = %#x, want %#x", protocol, c.name, c.got, c.want)
			}
		}
		e820 := E820(64 << 20)
		if int(bp[0x1E8]) != len(e820) {
			t.Fatalf("e820_entries = %d, want %d", bp[0x1E8], len(e820))
		}
		for i, e := range e820 {
			off := 0x2D0 + 20*i
			got := E820Entry{le.Uint64(bp[off:]), le.Uint64(bp[off+8:]), le.Uint32(bp[off+16:])}
			if got != e {
				t.Errorf("e820_table[%d] = %+v, want %+v", i, got, e)
			}
		}
	}
}

// TestLinuxLoadRefusesBeforeWriting: a load that cannot fit writes nothing.
func TestLinuxLoadRefusesBeforeWriting(t *testing.T) {
	mem, err := memory.New(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	k, err := ParseLinux("bz", defaultBz().image())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Load(mem, "", make([]byte, 16<<20), 0); err == nil {
		t.Fatal("loaded an initrd larger than the room above the kernel")
	}
	if got := make([]byte, 4); mem.ReadAt(got, 16<<20) == nil && !bytes.Equal(got, make([]byte, 4)) {
		t.Errorf("the kernel was written before the refusal: % x", got)
	}
}

func TestLinuxEntryState(t *testing.T) {
	r := LinuxRegs(0x1000000, ZeroPageAddr)
	if r.RIP != 0x1000000 || r.RSI != ZeroPageAddr || r.RBX != 0 || r.RBP != 0 || r.RDI != 0 || r.RFLAGS&(1<<9) != 0 {
		t.Errorf("regs %+v: want RIP = kernel, RSI = boot_params, EBX = EBP = EDI = 0, IF clear", r)
	}
	s := LinuxSregs(hv.Sregs2{})
	if s.CS.Selector != 0x10 || s.DS.Selector != 0x18 || s.ES.Selector != 0x18 || s.SS.Selector != 0x18 ||
		s.CS.Limit != 0xFFFFFFFF || s.CS.DB != 1 || s.CR0&1 != 1 || s.CR0&(1<<31) != 0 || s.GDT.Base != GDTAddr {
		t.Errorf("sregs %+v: want flat 32-bit protected mode, paging off, boot GDT", s)
	}
}

func FuzzParseLinux(f *testing.F) {
	f.Add(defaultBz().image()[:0x1000], uint64(64<<20), uint64(4096))
	f.Add(defaultBz().image()[:hdrVersion], uint64(64<<20), uint64(0)) // ends right after "HdrS"
	f.Fuzz(func(t *testing.T, img []byte, ram, initrd uint64) {
		k, err := ParseLinux("fuzz", img)
		if err != nil {
			return
		}
		ram = max(ram%(8<<30), 16<<20)
		l, err := k.Layout(ram, 10, initrd)
		if err != nil {
			return
		}
		lowTop := min(ram, memory.HoleStart)
		if l.LoadAddr < highMemStart || l.KernelEnd > lowTop {
			t.Fatalf("kernel placed at [%#x, %#x) in %#x of RAM", l.LoadAddr, l.KernelEnd, lowTop)
		}
		if initrd > 0 && (l.InitrdAddr < l.KernelEnd || l.InitrdAddr+l.InitrdSize > lowTop || l.InitrdAddr%4096 != 0) {
			t.Fatalf("initrd at [%#x, +%#x) with the kernel ending at %#x", l.InitrdAddr, l.InitrdSize, l.KernelEnd)
		}
	})
}

// guestReader returns a function reading n bytes of guest RAM at addr.
func guestReader(t *testing.T, mem *memory.Guest) func(addr uint64, n int) []byte {
	return func(addr uint64, n int) []byte {
		t.Helper()
		b := make([]byte, n)
		if err := mem.ReadAt(b, addr); err != nil {
			t.Fatal(err)
		}
		return b
	}
}
