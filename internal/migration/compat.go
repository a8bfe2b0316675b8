package migration

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/godwit-vmm/godwit/internal/limits"
	"github.com/godwit-vmm/godwit/internal/memory"
	"github.com/godwit-vmm/godwit/internal/migration/wire"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// Device kinds in CONFIG.
const (
	devNet = "virtio-net"
	devBlk = "virtio-blk"
)

// maxTSCSkewPPM is how far the destination's TSC frequency may differ: KVM
// here cannot scale the guest TSC (TSC_CONTROL = 0), so the guest keeps
// counting at the destination host's rate.
const maxTSCSkewPPM = 250

// diskIdentity names a disk image so that the destination can tell whether
// it sees the very same file (shared storage), not a copy.
type diskIdentity struct {
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// BootID and Dev/Ino identify the file exactly when both VMMs run on
	// one kernel (hosts as network namespaces of one machine).
	BootID string `json:"boot_id"`
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	// CRC is a CRC32C of the first and last MiB, for hosts on different
	// kernels (and as a check that the content is the same).
	CRC uint32 `json:"crc"`
}

// identifyDisk describes the image at path as this host sees it.
func identifyDisk(path string, ro bool) (diskIdentity, error) {
	f, err := os.Open(path)
	if err != nil {
		return diskIdentity{Path: path, ReadOnly: ro, BootID: bootID()}, fmt.Errorf("migration: disk image: %w", err)
	}
	defer f.Close()
	return identifyFile(f, path, ro)
}

// identifyFile describes the open image f, known by path.
func identifyFile(f *os.File, path string, ro bool) (diskIdentity, error) {
	id := diskIdentity{Path: path, ReadOnly: ro, BootID: bootID()}
	st, err := f.Stat()
	if err != nil {
		return id, err
	}
	id.Size = st.Size()
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.Dev, id.Ino = uint64(sys.Dev), sys.Ino
	}
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	const span = 1 << 20
	io.Copy(h, io.NewSectionReader(f, 0, min(span, id.Size)))
	if id.Size > span {
		io.Copy(h, io.NewSectionReader(f, max(span, id.Size-span), span))
	}
	id.CRC = h.Sum32()
	return id, nil
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// wireConfig describes the source VM for CONFIG.
func (s *Source) wireConfig(info vm.MigrationInfo) wire.Config {
	c := s.vm.Config()
	cfg := wire.Config{
		Accel:     info.Accel,
		VCPUs:     c.VCPUs,
		TSCKHz:    info.TSCKHz,
		XSAVESize: uint32(info.XSAVESize),
		MSRs:      info.MSRs,
		Streams:   s.opts.Streams,
		Verify:    s.opts.Verify,
		Features:  []string{wire.FeatureLateRX},
	}
	for _, r := range s.vm.Memory().Regions() {
		cfg.RAM = append(cfg.RAM, wire.Region{GPA: r.GPA, Size: r.Size()})
	}
	for _, e := range info.CPUID {
		cfg.CPUID = append(cfg.CPUID, wire.CPUIDEntry{Function: e.Function, Index: e.Index, Flags: e.Flags,
			EAX: e.EAX, EBX: e.EBX, ECX: e.ECX, EDX: e.EDX})
	}
	if c.Net != nil {
		cfg.Devices = append(cfg.Devices, wire.Device{Kind: devNet, ID: s.vm.MAC().String()})
	}
	if c.Disk != nil {
		// The file the guest writes, not whatever the path names now: an
		// image replaced under the running VM must not pass for it.
		id, err := identifyFile(s.vm.DiskImage(), c.Disk.Path, c.Disk.ReadOnly)
		if err != nil {
			s.log.Warn("cannot identify the disk image", "err", err)
		}
		b, _ := json.Marshal(id)
		cfg.Devices = append(cfg.Devices, wire.Device{Kind: devBlk, ID: string(b)})
	}
	return cfg
}

// incomingConfig builds the destination VM's config from the source's
// shape and this host's settings, refusing what this host cannot provide.
func incomingConfig(base vm.Config, cfg wire.Config) (vm.Config, error) {
	c := base
	c.VCPUs = cfg.VCPUs
	var size uint64
	for _, r := range cfg.RAM {
		size += r.Size
	}
	// The layout must be the one this VMM builds for that size.
	c.MemBytes = size
	if err := limits.CheckMem(size); err != nil {
		return c, fmt.Errorf("migration: the source's VM cannot run here: %w", err)
	}
	if err := limits.CheckVCPUs(c.VCPUs); err != nil {
		return c, fmt.Errorf("migration: the source's VM cannot run here: %w", err)
	}
	want := vmLayout(c.MemBytes)
	if len(want) != len(cfg.RAM) {
		return c, fmt.Errorf("migration: source RAM layout %v is not one this VMM builds", cfg.RAM)
	}
	for i, r := range cfg.RAM {
		if want[i] != r {
			return c, fmt.Errorf("migration: source RAM layout %v is not one this VMM builds", cfg.RAM)
		}
	}
	var hasNet, hasBlk bool
	for _, d := range cfg.Devices {
		switch d.Kind {
		case devNet:
			hasNet = true
			mac, err := net.ParseMAC(d.ID)
			if err != nil {
				return c, fmt.Errorf("migration: source NIC MAC %q: %w", d.ID, err)
			}
			if base.Net == nil || base.Net.TAP == "" {
				return c, fmt.Errorf("migration: the VM has a network card (MAC %s) but this destination was started without --tap", mac)
			}
			n := *base.Net
			n.MAC = mac
			c.Net = &n
		case devBlk:
			hasBlk = true
			var id diskIdentity
			if err := json.Unmarshal([]byte(d.ID), &id); err != nil {
				return c, fmt.Errorf("migration: source disk description: %w", err)
			}
			// The destination opens the disk it was given, never a path
			// its peer names; the source's path is only for messages.
			if base.Disk == nil || base.Disk.Path == "" {
				return c, fmt.Errorf("migration: the VM has a disk (%s on the source) but this destination was started without --disk", id.Path)
			}
			if base.Disk.ReadOnly != id.ReadOnly {
				return c, fmt.Errorf("migration: the VM's disk is %s on the source and %s here", rwText(id.ReadOnly), rwText(base.Disk.ReadOnly))
			}
			if err := checkSameDisk(base.Disk.Path, id); err != nil {
				return c, err
			}
			c.Disk = &vm.DiskConfig{Path: base.Disk.Path, ReadOnly: base.Disk.ReadOnly}
		default:
			return c, fmt.Errorf("migration: source has a %q device this VMM does not know", d.Kind)
		}
	}
	if !hasNet {
		c.Net = nil
	}
	if !hasBlk {
		c.Disk = nil
	}
	return c, nil
}

func vmLayout(size uint64) []wire.Region {
	var out []wire.Region
	for _, l := range memory.Layout(size) {
		out = append(out, wire.Region{GPA: l[0], Size: l[1]})
	}
	return out
}

func rwText(ro bool) string {
	if ro {
		return "read-only"
	}
	return "read-write"
}

// checkSameDisk refuses a destination whose disk (path, given to this
// VMM) is not the source's image as the same file: shared storage is
// required, a copy would fork the disk.
func checkSameDisk(path string, src diskIdentity) error {
	here, err := identifyDisk(path, src.ReadOnly)
	if err != nil {
		return fmt.Errorf("migration: the VM's disk (%s on the source) is not reachable here as %s (shared storage is required): %w", src.Path, path, err)
	}
	if here.Size != src.Size {
		return fmt.Errorf("migration: disk %s is %d bytes here and %d on the source: not the same image", path, here.Size, src.Size)
	}
	oneKernel := src.BootID != "" && src.BootID == here.BootID
	if oneKernel && (src.Dev != here.Dev || src.Ino != here.Ino) {
		return fmt.Errorf("migration: disk %s here is another file than the source's %s (a copy, not shared storage)", path, src.Path)
	}
	// On one kernel the file's identity settles it. The CRC is read while
	// the source guest runs and may write there, so it is compared only
	// where nothing better is known (and may then refuse the right file).
	if !oneKernel && here.CRC != src.CRC {
		return fmt.Errorf("migration: disk %s differs in content from the source's %s: not the same image", path, src.Path)
	}
	return nil
}

// checkHost refuses a destination without the memory for the guest.
func checkHost(cfg wire.Config) error {
	var size uint64
	for _, r := range cfg.RAM {
		size += r.Size
	}
	avail, err := MemAvailable()
	if err == nil && avail < size {
		return fmt.Errorf("migration: the VM has %d MiB of RAM and this host has %d MiB available", size>>20, avail>>20)
	}
	return nil
}

// MemAvailable is the host's available memory in bytes (MemAvailable in
// /proc/meminfo).
func MemAvailable() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("migration: %w: mount /proc", err)
	}
	defer f.Close()
	return ParseMemAvailable(f)
}

// ParseMemAvailable reads MemAvailable, in bytes, from text in the format
// of /proc/meminfo ("MemAvailable:   1234 kB").
func ParseMemAvailable(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "MemAvailable:" {
			continue
		}
		if len(f) < 2 || len(f) > 3 || len(f) == 3 && f[2] != "kB" {
			return 0, fmt.Errorf("migration: meminfo line %q: want \"MemAvailable: N kB\" (Linux 3.14 or later)", sc.Text())
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || kb > math.MaxUint64>>10 {
			return 0, fmt.Errorf("migration: meminfo line %q: want \"MemAvailable: N kB\" with N a count of KiB", sc.Text())
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("migration: read meminfo: %w", err)
	}
	return 0, fmt.Errorf("migration: meminfo has no MemAvailable line: needs Linux 3.14 or later")
}

// Feature registers compared between source and destination: a feature the
// guest may use on the source must exist on the destination.
var featureRegs = []struct {
	fn, idx uint32
	reg     string
}{
	{1, 0, "ecx"}, {1, 0, "edx"},
	{7, 0, "ebx"}, {7, 0, "ecx"}, {7, 0, "edx"},
	{0xd, 1, "eax"},
	{0x80000001, 0, "ecx"}, {0x80000001, 0, "edx"},
}

// Names of some feature bits, keyed by leaf, register (0 eax … 3 edx) and
// bit, for refusals people can act on.
var featureNames = map[[3]uint32]string{
	{1, 2, 0}: "sse3", {1, 2, 9}: "ssse3", {1, 2, 19}: "sse4.1", {1, 2, 20}: "sse4.2", {1, 2, 23}: "popcnt",
	{1, 2, 25}: "aes", {1, 2, 26}: "xsave", {1, 2, 28}: "avx", {1, 2, 30}: "rdrand",
	{7, 1, 3}: "bmi1", {7, 1, 5}: "avx2", {7, 1, 8}: "bmi2", {7, 1, 16}: "avx512f", {7, 1, 18}: "rdseed",
	{7, 1, 29}: "sha",
}

func regCode(reg string) uint32 {
	return map[string]uint32{"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}[reg]
}

func regOf(e wire.CPUIDEntry, reg string) uint32 {
	switch reg {
	case "eax":
		return e.EAX
	case "ebx":
		return e.EBX
	case "ecx":
		return e.ECX
	}
	return e.EDX
}

// checkCompatible compares the source's CONFIG with this VMM's accelerator.
func checkCompatible(cfg wire.Config, local vm.MigrationInfo) error {
	// The state format is one for both backends, but a move between them
	// is refused until a host with both can test it.
	if src := cmp.Or(cfg.Accel, "kvm"); src != local.Accel {
		return fmt.Errorf("migration: the VM runs on accelerator %s on the source and this destination runs %s: moving between accelerators is not supported", src, local.Accel)
	}
	skew := math.Abs(float64(cfg.TSCKHz)-float64(local.TSCKHz)) / float64(cfg.TSCKHz) * 1e6
	if skew > maxTSCSkewPPM {
		return fmt.Errorf("migration: TSC frequency %d kHz here vs %d kHz on the source (%.0f ppm apart, at most %d): this KVM cannot scale the guest TSC",
			local.TSCKHz, cfg.TSCKHz, skew, maxTSCSkewPPM)
	}
	if int(cfg.XSAVESize) > local.XSAVESize {
		return fmt.Errorf("migration: source XSAVE area is %d bytes, this KVM's %d", cfg.XSAVESize, local.XSAVESize)
	}
	for _, m := range cfg.MSRs {
		if !slices.Contains(local.MSRs, m) {
			return fmt.Errorf("migration: this KVM cannot restore MSR %#x that the source saves", m)
		}
	}
	// Compare with what a vCPU here reports once given this KVM's
	// supported CPUID: on KVMs that virtualise CPUID that is what the
	// guest could be given; on this host's kvm_pvm, which ignores
	// KVM_SET_CPUID2, it is the host CPUID that guests really see.
	var here []wire.CPUIDEntry
	for _, e := range local.CPUID {
		here = append(here, wire.CPUIDEntry{Function: e.Function, Index: e.Index, Flags: e.Flags, EAX: e.EAX, EBX: e.EBX, ECX: e.ECX, EDX: e.EDX})
	}
	find := func(ents []wire.CPUIDEntry, fn, idx uint32) (wire.CPUIDEntry, bool) {
		for _, e := range ents {
			if e.Function == fn && (e.Index == idx || e.Flags&1 == 0) {
				return e, true
			}
		}
		return wire.CPUIDEntry{}, false
	}
	var missing []string
	for _, r := range featureRegs {
		src, ok := find(cfg.CPUID, r.fn, r.idx)
		if !ok {
			continue
		}
		dst, _ := find(here, r.fn, r.idx)
		lack := regOf(src, r.reg) &^ regOf(dst, r.reg)
		if r.fn == 1 && r.reg == "ecx" {
			lack &^= 1 << 27 // OSXSAVE mirrors the guest's CR4, not the host
		}
		for bit := uint32(0); bit < 32; bit++ {
			if lack&(1<<bit) == 0 {
				continue
			}
			name := featureNames[[3]uint32{r.fn, regCode(r.reg), bit}]
			if name == "" {
				name = fmt.Sprintf("cpuid %#x.%d %s bit %d", r.fn, r.idx, r.reg, bit)
			}
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("migration: this host's CPU lacks features the guest may use: %s", strings.Join(missing, ", "))
	}
	return nil
}
