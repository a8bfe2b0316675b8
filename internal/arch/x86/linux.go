package x86

import (
	"encoding/binary"
	"fmt"

	"github.com/godwit-vmm/godwit/internal/hv"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// Linux boot protocol (the kernel's Documentation/arch/x86/boot.rst),
// 32-bit entry: the VMM skips the kernel's real-mode setup code, loads the
// protected-mode kernel of a bzImage, builds boot_params (the "zero page")
// itself, and starts the BSP in flat 32-bit protected mode at the loaded
// kernel with ESI pointing at boot_params. The kernel's decompressor then
// enters long mode on its own page tables, as it does behind GRUB or
// QEMU. This entry needs nothing beyond the boot GDT the multiboot path
// already writes (selectors 0x10 and 0x18, as boot.rst requires).
//
// Guest-physical layout of a Linux boot:
//
//	0x000500  boot GDT (GDTAddr)
//	0x001000  boot_params (ZeroPageAddr), 4 KiB
//	0x007000  command line (CmdlineAddr), at most CmdlineMax bytes
//	0x0E0000  ACPI tables (ACPIBase), reserved in E820
//	LoadAddr  protected-mode kernel: 1 MiB, or pref_address for a
//	          relocatable kernel; it needs init_size bytes from where it
//	          runs before it reads the memory map
//	initrd    page-aligned, as high as possible below 3 GiB and
//	          initrd_addr_max, above the kernel
const (
	ZeroPageAddr = 0x1000
	ZeroPageSize = 0x1000
)

// Setup header fields: offsets in the bzImage file and in boot_params,
// which starts with a copy of the file's first sector.
const (
	hdrSetupSects      = 0x1F1
	hdrBootFlag        = 0x1FE
	hdrJump            = 0x200 // a short jump whose displacement ends the header
	hdrMagic           = 0x202
	hdrVersion         = 0x206
	hdrTypeOfLoader    = 0x210
	hdrLoadFlags       = 0x211
	hdrCode32Start     = 0x214
	hdrRamdiskImage    = 0x218
	hdrRamdiskSize     = 0x21C
	hdrCmdLinePtr      = 0x228
	hdrInitrdAddrMax   = 0x22C
	hdrKernelAlignment = 0x230
	hdrRelocatable     = 0x234
	hdrCmdlineSize     = 0x238
	hdrSetupData       = 0x250
	hdrPrefAddress     = 0x258
	hdrInitSize        = 0x260
	hdrMinEnd          = hdrInitSize + 4 // protocol 2.10 ends after init_size
	hdrMaxEnd          = 0x290           // boot_params has room up to here

	bpACPIRSDP        = 0x070
	bpExtRamdiskImage = 0x0C0
	bpExtRamdiskSize  = 0x0C4
	bpExtCmdLinePtr   = 0x0C8
	bpE820Entries     = 0x1E8
	bpE820Table       = 0x2D0
	bpE820Max         = 128
	bpE820EntrySize   = 20

	bootFlag         = 0xAA55
	hdrSignature     = "HdrS"
	loaderUndefined  = 0xFF
	loadFlagHigh     = 1 << 0 // LOADED_HIGH: the protected-mode kernel goes at 1 MiB or above
	minProtocol      = 0x020A // 2.10: pref_address, init_size, relocation
	rsdpProtocol     = 0x020E // 2.14: acpi_rsdp_addr
	setupSectsLegacy = 4      // what setup_sects 0 means
	sectorSize       = 512
)

// Linux is a parsed bzImage: its setup header and protected-mode kernel.
type Linux struct {
	Path string
	// Protocol is the boot protocol version, e.g. 0x020F for 2.15.
	Protocol uint16

	header          []byte // the file's setup header, from hdrSetupSects
	payload         []byte // the protected-mode kernel
	relocatable     bool
	kernelAlignment uint64
	prefAddress     uint64
	initSize        uint64
	initrdAddrMax   uint64
	cmdlineSize     uint64
}

// isBzImage reports whether data starts like a Linux boot sector with a
// setup header: the 0xAA55 boot flag and the "HdrS" signature.
func isBzImage(data []byte) bool {
	return len(data) >= hdrMagic+4 &&
		binary.LittleEndian.Uint16(data[hdrBootFlag:]) == bootFlag &&
		string(data[hdrMagic:hdrMagic+4]) == hdrSignature
}

// ParseLinux parses a bzImage held in memory. It refuses boot protocols
// before 2.10 and zImages (not loaded high). It never panics on
// malformed input.
func ParseLinux(path string, data []byte) (*Linux, error) {
	if !isBzImage(data) {
		return nil, fmt.Errorf("x86: %s is not a Linux bzImage: no 0xAA55 boot flag and \"HdrS\" header", path)
	}
	if len(data) < hdrVersion+2 {
		return nil, fmt.Errorf("x86: %s is truncated in its setup header (%d bytes)", path, len(data))
	}
	le := binary.LittleEndian
	k := &Linux{Path: path, Protocol: le.Uint16(data[hdrVersion:])}
	if k.Protocol < minProtocol {
		return nil, fmt.Errorf("x86: %s: kernel boot protocol %d.%02d is too old: need 2.10 or later", path, k.Protocol>>8, k.Protocol&0xFF)
	}
	end := hdrMagic + int(data[hdrJump+1])
	if end < hdrMinEnd || end > len(data) {
		return nil, fmt.Errorf("x86: %s: setup header ends at %#x: protocol %d.%02d needs it to reach %#x within the file", path, end, k.Protocol>>8, k.Protocol&0xFF, hdrMinEnd)
	}
	end = min(end, hdrMaxEnd)
	k.header = data[hdrSetupSects:end]
	if data[hdrLoadFlags]&loadFlagHigh == 0 {
		return nil, fmt.Errorf("x86: %s is a zImage (LOADED_HIGH clear): only bzImages, loaded at 1 MiB, are supported", path)
	}
	sects := int(data[hdrSetupSects])
	if sects == 0 {
		sects = setupSectsLegacy
	}
	off := (sects + 1) * sectorSize
	if off >= len(data) {
		return nil, fmt.Errorf("x86: %s is truncated: %d bytes, the setup code alone takes %d", path, len(data), off)
	}
	k.payload = data[off:]
	k.relocatable = data[hdrRelocatable] != 0
	k.kernelAlignment = uint64(le.Uint32(data[hdrKernelAlignment:]))
	k.prefAddress = le.Uint64(data[hdrPrefAddress:])
	k.initSize = uint64(le.Uint32(data[hdrInitSize:]))
	k.initrdAddrMax = uint64(le.Uint32(data[hdrInitrdAddrMax:]))
	k.cmdlineSize = uint64(le.Uint32(data[hdrCmdlineSize:]))
	if k.relocatable && (k.kernelAlignment == 0 || k.kernelAlignment&(k.kernelAlignment-1) != 0) {
		return nil, fmt.Errorf("x86: %s: kernel_alignment %#x is not a power of two", path, k.kernelAlignment)
	}
	return k, nil
}

// LinuxLayout is where a bzImage and its initrd go in guest memory.
type LinuxLayout struct {
	// LoadAddr is where the protected-mode kernel is loaded, and its
	// 32-bit entry point (code32_start).
	LoadAddr uint64
	// KernelEnd is the end of the memory the kernel uses before it reads
	// the memory map: its image, and init_size bytes from where it runs.
	KernelEnd uint64
	// InitrdAddr and InitrdSize place the initrd; both 0 without one.
	InitrdAddr, InitrdSize uint64
}

// Layout plans a boot in ramSize bytes of guest RAM with a command line
// of cmdlineLen bytes and an initrd of initrdSize bytes (0: none). It
// checks that everything fits and touches no memory, so a VMM can refuse
// a bad configuration before it creates anything.
func (k *Linux) Layout(ramSize uint64, cmdlineLen int, initrdSize uint64) (LinuxLayout, error) {
	if maxLen := min(CmdlineMax-1, k.cmdlineSize); uint64(cmdlineLen) > maxLen {
		return LinuxLayout{}, fmt.Errorf("x86: command line is %d bytes; this kernel takes at most %d", cmdlineLen, maxLen)
	}
	lowTop := min(ramSize, memory.HoleStart)
	// A relocatable kernel runs where it is loaded if that is at or above
	// pref_address, aligned: load it right there. Any other runs at
	// pref_address, loaded at 1 MiB.
	load, run := uint64(highMemStart), max(k.prefAddress, highMemStart)
	if run >= lowTop {
		return LinuxLayout{}, fmt.Errorf("x86: kernel wants to run at %#x, the VM has %s below 3 GiB: give it more memory (--mem)", run, mib(lowTop))
	}
	if k.relocatable {
		load = alignUp(run, k.kernelAlignment)
		run = load
	}
	l := LinuxLayout{LoadAddr: load, KernelEnd: max(load+uint64(len(k.payload)), run+k.initSize)}
	if l.KernelEnd > lowTop {
		return LinuxLayout{}, fmt.Errorf("x86: kernel needs guest memory up to %s, the VM has %s below 3 GiB: give it more memory (--mem)", mib(l.KernelEnd), mib(lowTop))
	}
	if initrdSize == 0 {
		return l, nil
	}
	top := min(lowTop, k.initrdAddrMax+1)
	addr, room, ok := placeInitrd(l.KernelEnd, top, initrdSize)
	if !ok {
		return LinuxLayout{}, fmt.Errorf("x86: initrd of %s does not fit in %s of guest memory between the kernel and %#x: give the VM more memory (--mem)", mib(initrdSize), mib(room), top)
	}
	l.InitrdAddr, l.InitrdSize = addr, initrdSize
	return l, nil
}

// placeInitrd puts an initrd of size bytes on the highest page boundary
// that keeps it below top and above kernelEnd, as boot loaders do. When
// it does not fit, room is the space there is.
func placeInitrd(kernelEnd, top, size uint64) (addr, room uint64, ok bool) {
	floor := alignUp(kernelEnd, memory.PageSize)
	if top > floor {
		room = top - floor
	}
	if top < floor || size > top || alignDown(top-size, memory.PageSize) < floor {
		return 0, room, false
	}
	return alignDown(top-size, memory.PageSize), room, true
}

// Load copies the kernel, the initrd (nil: none) and the command line into
// guest RAM and writes boot_params at ZeroPageAddr, with the memory map
// and, for protocol 2.14 and later, rsdp as the ACPI RSDP's address (0:
// none). It returns the layout; the entry point is LoadAddr.
func (k *Linux) Load(mem *memory.Guest, cmdline string, initrd []byte, rsdp uint64) (LinuxLayout, error) {
	l, err := k.Layout(mem.Size(), len(cmdline), uint64(len(initrd)))
	if err != nil {
		return l, err
	}
	if err := mem.WriteAt(k.payload, l.LoadAddr); err != nil {
		return l, fmt.Errorf("x86: load kernel at %#x: %w", l.LoadAddr, err)
	}
	if len(initrd) > 0 {
		if err := mem.WriteAt(initrd, l.InitrdAddr); err != nil {
			return l, fmt.Errorf("x86: load initrd at %#x: %w", l.InitrdAddr, err)
		}
	}
	if err := mem.WriteAt(append([]byte(cmdline), 0), CmdlineAddr); err != nil {
		return l, fmt.Errorf("x86: write command line: %w", err)
	}
	if err := mem.WriteAt(k.bootParams(l, E820(mem.Size()), rsdp), ZeroPageAddr); err != nil {
		return l, fmt.Errorf("x86: write boot_params: %w", err)
	}
	return l, nil
}

// bootParams returns the zero page for layout l: the file's setup header
// with the loader's fields filled in, and the memory map.
func (k *Linux) bootParams(l LinuxLayout, e820 []E820Entry, rsdp uint64) []byte {
	bp := make([]byte, ZeroPageSize)
	le := binary.LittleEndian
	copy(bp[hdrSetupSects:], k.header)
	bp[hdrTypeOfLoader] = loaderUndefined
	// LOADED_HIGH only: no heap (the real-mode setup code does not run),
	// segments reloaded, messages not quieted.
	bp[hdrLoadFlags] = loadFlagHigh
	le.PutUint32(bp[hdrCode32Start:], uint32(l.LoadAddr))
	le.PutUint64(bp[hdrSetupData:], 0)
	// The ext_ fields hold the high halves of the addresses and sizes.
	le.PutUint32(bp[hdrCmdLinePtr:], CmdlineAddr)
	le.PutUint32(bp[bpExtCmdLinePtr:], 0)
	le.PutUint32(bp[hdrRamdiskImage:], uint32(l.InitrdAddr))
	le.PutUint32(bp[hdrRamdiskSize:], uint32(l.InitrdSize))
	le.PutUint32(bp[bpExtRamdiskImage:], uint32(l.InitrdAddr>>32))
	le.PutUint32(bp[bpExtRamdiskSize:], uint32(l.InitrdSize>>32))
	if k.Protocol >= rsdpProtocol {
		le.PutUint64(bp[bpACPIRSDP:], rsdp)
	}
	n := min(len(e820), bpE820Max)
	bp[bpE820Entries] = byte(n)
	for i, e := range e820[:n] {
		off := bpE820Table + i*bpE820EntrySize
		le.PutUint64(bp[off:], e.Addr)
		le.PutUint64(bp[off+8:], e.Size)
		le.PutUint32(bp[off+16:], e.Type)
	}
	return bp
}

// LinuxRegs returns the general registers of the 32-bit boot protocol:
// ESI = boot_params, EIP = the protected-mode kernel, EBP = EDI = EBX = 0,
// interrupts off.
func LinuxRegs(entry, bootParams uint32) hv.Regs {
	return hv.Regs{
		RSI:    uint64(bootParams),
		RIP:    uint64(entry),
		RFLAGS: rflagsReserved,
	}
}

// LinuxSregs returns the segment and control registers of the 32-bit boot
// protocol: flat 4 GiB code (0x10) and data (0x18) segments from the boot
// GDT, protected mode, paging off. They are the multiboot entry's.
func LinuxSregs(s hv.Sregs2) hv.Sregs2 { return MultibootSregs(s) }

func alignUp(v, a uint64) uint64   { return (v + a - 1) &^ (a - 1) }
func alignDown(v, a uint64) uint64 { return v &^ (a - 1) }

// mib formats a byte count in MiB, with one decimal when not whole.
func mib(n uint64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
