package x86

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/memory"
)

var le = binary.LittleEndian

// acpiImage reads tables back out of a built image by guest-physical
// address, checking each one's signature, length and checksum.
type acpiImage struct {
	t   *testing.T
	tab *ACPITables
}

func (img acpiImage) at(addr uint64, n int) []byte {
	img.t.Helper()
	off := int(addr - img.tab.Base)
	if addr < img.tab.Base || off+n > len(img.tab.Data) {
		img.t.Fatalf("address %#x+%d outside the tables [%#x, +%d)", addr, n, img.tab.Base, len(img.tab.Data))
	}
	return img.tab.Data[off : off+n]
}

func (img acpiImage) table(addr uint64, sig string) []byte {
	img.t.Helper()
	if addr%16 != 0 {
		img.t.Errorf("%s at %#x is not 16-byte aligned", sig, addr)
	}
	hdr := img.at(addr, acpiHeaderLen)
	if string(hdr[:4]) != sig {
		img.t.Fatalf("table at %#x is %q, want %q", addr, hdr[:4], sig)
	}
	tab := img.at(addr, int(le.Uint32(hdr[4:])))
	if s := sum(tab); s != 0 {
		img.t.Errorf("%s checksum: bytes sum to %#x", sig, s)
	}
	if string(tab[10:16]) != acpiOEMID {
		img.t.Errorf("%s OEM ID %q", sig, tab[10:16])
	}
	return tab
}

func sum(b []byte) byte {
	var s byte
	for _, v := range b {
		s += v
	}
	return s
}

// parsedACPI is what the tests check, found by following the pointers
// from the RSDP as an OS does.
type parsedACPI struct {
	fadt, madt, dsdt, facs []byte
	facsAddr               uint64
}

func parseACPI(t *testing.T, tab *ACPITables) parsedACPI {
	t.Helper()
	img := acpiImage{t, tab}
	rsdp := img.at(tab.RSDP, 36)
	if string(rsdp[:8]) != "RSD PTR " || tab.RSDP%16 != 0 {
		t.Fatalf("RSDP at %#x: %q", tab.RSDP, rsdp[:8])
	}
	if sum(rsdp[:20]) != 0 || sum(rsdp) != 0 {
		t.Errorf("RSDP checksums: %#x, extended %#x", sum(rsdp[:20]), sum(rsdp))
	}
	if rsdp[15] != 2 || le.Uint32(rsdp[20:]) != 36 {
		t.Errorf("RSDP revision %d length %d, want 2 and 36", rsdp[15], le.Uint32(rsdp[20:]))
	}
	xsdt := img.table(le.Uint64(rsdp[24:]), "XSDT")
	var p parsedACPI
	for off := acpiHeaderLen; off < len(xsdt); off += 8 {
		addr := le.Uint64(xsdt[off:])
		switch sig := string(img.at(addr, 4)); sig {
		case "FACP":
			p.fadt = img.table(addr, "FACP")
		case "APIC":
			p.madt = img.table(addr, "APIC")
		default:
			t.Errorf("XSDT lists an unexpected %q", sig)
		}
	}
	if p.fadt == nil || p.madt == nil {
		t.Fatal("XSDT lacks the FADT or the MADT")
	}
	p.dsdt = img.table(le.Uint64(p.fadt[140:]), "DSDT")
	p.facsAddr = le.Uint64(p.fadt[132:])
	p.facs = img.at(p.facsAddr, 64)
	return p
}

func TestACPIFADT(t *testing.T) {
	tab, err := BuildACPI(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := parseACPI(t, tab)
	f := p.fadt
	if len(f) != 276 || f[8] != 6 {
		t.Errorf("FADT length %d revision %d, want 276 and 6", len(f), f[8])
	}
	if string(p.facs[:4]) != "FACS" || le.Uint32(p.facs[4:]) != 64 || p.facsAddr%64 != 0 {
		t.Errorf("FACS at %#x: %q length %d", p.facsAddr, p.facs[:4], le.Uint32(p.facs[4:]))
	}
	if le.Uint32(f[36:]) != 0 {
		t.Error("FIRMWARE_CTRL set as well as X_FIRMWARE_CTRL")
	}
	if le.Uint32(f[40:]) != uint32(le.Uint64(f[140:])) {
		t.Errorf("DSDT %#x and X_DSDT %#x differ", le.Uint32(f[40:]), le.Uint64(f[140:]))
	}
	u16 := func(off int) uint32 { return uint32(le.Uint16(f[off:])) }
	u32 := func(off int) uint32 { return le.Uint32(f[off:]) }
	fields := []struct {
		name      string
		got, want uint32
	}{
		{"SCI_INT", u16(46), 9},
		{"SMI_CMD", u32(48), 0},
		{"PM1a_EVT_BLK", u32(56), 0x600},
		{"PM1b_EVT_BLK", u32(60), 0},
		{"PM1a_CNT_BLK", u32(64), 0x604},
		{"PM_TMR_BLK", u32(76), 0},
		{"GPE0_BLK", u32(80), 0},
		{"PM1_EVT_LEN", uint32(f[88]), 4},
		{"PM1_CNT_LEN", uint32(f[89]), 2},
		{"PM_TMR_LEN", uint32(f[91]), 0},
		{"IAPC_BOOT_ARCH legacy+8042", u16(109) & 3, 3},
		{"Flags RESET_REG_SUP", u32(112) >> 10 & 1, 1},
		{"Flags HW_REDUCED_ACPI", u32(112) >> 20 & 1, 0},
		{"RESET_VALUE", uint32(f[128]), 6},
	}
	for _, fl := range fields {
		if fl.got != fl.want {
			t.Errorf("FADT %s = %#x, want %#x", fl.name, fl.got, fl.want)
		}
	}
	gasTests := []struct {
		name string
		off  int
		want string
	}{
		{"RESET_REG", 116, "space 1 width 8 offset 0 addr 0xcf9"},
		{"X_PM1a_EVT_BLK", 148, "space 1 width 32 offset 0 addr 0x600"},
		{"X_PM1a_CNT_BLK", 172, "space 1 width 16 offset 0 addr 0x604"},
		{"X_PM1b_EVT_BLK", 160, "space 0 width 0 offset 0 addr 0x0"},
		{"X_PM_TMR_BLK", 208, "space 0 width 0 offset 0 addr 0x0"},
	}
	for _, g := range gasTests {
		b := f[g.off:]
		if got := fmt.Sprintf("space %d width %d offset %d addr %#x", b[0], b[1], b[2], le.Uint64(b[4:])); got != g.want {
			t.Errorf("FADT %s = %s, want %s", g.name, got, g.want)
		}
	}
}

func TestACPIMADT(t *testing.T) {
	for _, n := range []int{1, 4, 16} {
		tab, err := BuildACPI(n, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := parseACPI(t, tab).madt
		if le.Uint32(m[36:]) != 0xFEE00000 || le.Uint32(m[40:])&1 != 1 {
			t.Errorf("MADT local APIC address %#x flags %#x", le.Uint32(m[36:]), le.Uint32(m[40:]))
		}
		var apicIDs []int
		var ioapics, nmis int
		overrides := map[byte]string{}
		for off := 44; off < len(m); {
			typ, l := m[off], int(m[off+1])
			if l < 2 || off+l > len(m) {
				t.Fatalf("MADT entry at %d: type %d length %d", off, typ, l)
			}
			e := m[off : off+l]
			switch typ {
			case 0:
				if l != 8 || e[2] != e[3] || le.Uint32(e[4:])&1 != 1 {
					t.Errorf("local APIC entry % x", e)
				}
				apicIDs = append(apicIDs, int(e[3]))
			case 1:
				ioapics++
				if l != 12 || e[2] != 0 || le.Uint32(e[4:]) != 0xFEC00000 || le.Uint32(e[8:]) != 0 {
					t.Errorf("IOAPIC entry % x", e)
				}
			case 2:
				if l != 10 || e[2] != 0 {
					t.Fatalf("override entry % x", e)
				}
				overrides[e[3]] = fmt.Sprintf("gsi %d flags %#x", le.Uint32(e[4:]), le.Uint16(e[8:]))
			case 4:
				nmis++
				if l != 6 || e[2] != 0xFF || e[5] != 1 {
					t.Errorf("local APIC NMI entry % x", e)
				}
			default:
				t.Errorf("unexpected MADT entry type %d", typ)
			}
			off += l
		}
		if want := seq(n); !slices.Equal(apicIDs, want) {
			t.Errorf("%d vCPUs: local APIC IDs %v, want %v", n, apicIDs, want)
		}
		if ioapics != 1 || nmis != 1 {
			t.Errorf("%d IOAPICs and %d NMI entries, want 1 each", ioapics, nmis)
		}
		// The SCI is level-triggered active-high; IRQ0 stays on GSI 0,
		// where KVM and the software chipset deliver the PIT.
		if want := map[byte]string{9: "gsi 9 flags 0xd"}; fmt.Sprint(overrides) != fmt.Sprint(want) {
			t.Errorf("interrupt source overrides %v, want %v", overrides, want)
		}
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// resource is a decoded resource descriptor, printed in ASL terms.
func decodeResources(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for len(b) > 0 {
		tag := b[0]
		if tag&0x80 == 0 { // small item: type in bits 6-3, length in 2-0
			n := int(tag & 7)
			if 1+n > len(b) {
				t.Fatalf("small resource % x truncated", b)
			}
			d := b[1 : 1+n]
			switch tag >> 3 {
			case 0x04:
				out = append(out, fmt.Sprintf("IRQ mask %#x", le.Uint16(d)))
			case 0x08:
				out = append(out, fmt.Sprintf("IO decode16=%d %#x-%#x align %d len %d", d[0]&1, le.Uint16(d[1:]), le.Uint16(d[3:]), d[5], d[6]))
			case 0x0F:
				if len(b) != 2 {
					t.Errorf("%d bytes after the end tag", len(b)-2)
				}
				return out
			default:
				t.Fatalf("unexpected small resource %#x", tag)
			}
			b = b[1+n:]
			continue
		}
		n := int(le.Uint16(b[1:]))
		if 3+n > len(b) {
			t.Fatalf("large resource % x truncated", b)
		}
		d := b[3 : 3+n]
		kinds := map[byte]string{0: "Memory", 1: "IO", 2: "Bus"}
		switch tag {
		case 0x87:
			out = append(out, fmt.Sprintf("DWord%s flags %#x/%#x %#x-%#x len %#x", kinds[d[0]], d[1], d[2], le.Uint32(d[7:]), le.Uint32(d[11:]), le.Uint32(d[19:])))
		case 0x88:
			out = append(out, fmt.Sprintf("Word%s flags %#x/%#x %#x-%#x len %#x", kinds[d[0]], d[1], d[2], le.Uint16(d[5:]), le.Uint16(d[7:]), le.Uint16(d[11:])))
		case 0x89:
			var gsis []uint32
			for i := 0; i < int(d[1]); i++ {
				gsis = append(gsis, le.Uint32(d[2+4*i:]))
			}
			out = append(out, fmt.Sprintf("Interrupt flags %#x %v", d[0], gsis))
		default:
			t.Fatalf("unexpected large resource %#x", tag)
		}
		b = b[3+n:]
	}
	t.Error("resource template without an end tag")
	return out
}

func TestACPIDSDT(t *testing.T) {
	pci := []PCIInterrupt{{Slot: 2, GSI: 11}, {Slot: 1, GSI: 10}, {Slot: 3, GSI: 16}, {Slot: 4, GSI: 16}}
	tab, err := BuildACPI(1, pci)
	if err != nil {
		t.Fatal(err)
	}
	dsdt := parseACPI(t, tab).dsdt
	if dsdt[8] != 2 {
		t.Errorf("DSDT revision %d, want 2 (64-bit integers)", dsdt[8])
	}
	ns, err := decodeAML(dsdt[acpiHeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	wantDevices := []string{`\_SB.LN0A`, `\_SB.LN0B`, `\_SB.LN10`, `\_SB.PCI0`, `\_SB.COM1`}
	if !slices.Equal(ns.devices, wantDevices) {
		t.Errorf("devices %v, want %v", ns.devices, wantDevices)
	}
	hid := func(dev string) string {
		v, _ := ns.names[dev+"._HID"].(uint64)
		return eisaIDString(v)
	}
	for dev, want := range map[string]string{`\_SB.PCI0`: "PNP0A03", `\_SB.COM1`: "PNP0501", `\_SB.LN0A`: "PNP0C0F"} {
		if got := hid(dev); got != want {
			t.Errorf("%s._HID = %s, want %s", dev, got, want)
		}
	}
	for _, n := range []string{`\_SB.PCI0._SEG`, `\_SB.PCI0._BBN`, `\_SB.PCI0._UID`} {
		if v, ok := ns.names[n].(uint64); !ok || v != 0 {
			t.Errorf("%s = %v, want 0", n, ns.names[n])
		}
	}
	crs := func(n string) string {
		b, ok := ns.names[n].([]byte)
		if !ok {
			t.Fatalf("%s is %T, want a buffer", n, ns.names[n])
		}
		return strings.Join(decodeResources(t, b), "; ")
	}
	wantPCI := "WordBus flags 0xc/0x0 0x0-0xff len 0x100; " +
		"IO decode16=1 0xcf8-0xcf8 align 1 len 8; " +
		"WordIO flags 0xc/0x3 0x0-0xcf7 len 0xcf8; " +
		"WordIO flags 0xc/0x3 0xd00-0xffff len 0xf300; " +
		"DWordMemory flags 0xc/0x1 0xc0000000-0xfebfffff len 0x3ec00000"
	if got := crs(`\_SB.PCI0._CRS`); got != wantPCI {
		t.Errorf("PCI0._CRS:\n got %s\nwant %s", got, wantPCI)
	}
	if got, want := crs(`\_SB.COM1._CRS`), "IO decode16=1 0x3f8-0x3f8 align 1 len 8; IRQ mask 0x10"; got != want {
		t.Errorf("COM1._CRS = %s, want %s", got, want)
	}

	// Follow _PRT through the link devices to the GSIs, as the OS does:
	// every pin of every slot must reach the GSI the VMM wired, as an
	// edge-triggered active-high interrupt (shared only on a shared GSI).
	prt, ok := ns.names[`\_SB.PCI0._PRT`].([]amlObject)
	if !ok || len(prt) != 4*len(pci) {
		t.Fatalf("_PRT = %v, want %d entries", ns.names[`\_SB.PCI0._PRT`], 4*len(pci))
	}
	routed := map[string]string{}
	for _, e := range prt {
		el, _ := e.([]amlObject)
		if len(el) != 4 {
			t.Fatalf("_PRT entry %v", e)
		}
		addr, _ := el[0].(uint64)
		pin, _ := el[1].(uint64)
		link, _ := el[2].(amlRef)
		if idx, _ := el[3].(uint64); addr&0xFFFF != 0xFFFF || idx != 0 {
			t.Errorf("_PRT entry %v", el)
		}
		if m, ok := ns.names[string(link)+"._SRS"].(amlMethodDef); !ok || m.args != 1 {
			t.Errorf("link %s has no _SRS method of one argument", link)
		}
		if crs(string(link)+"._PRS") != crs(string(link)+"._CRS") {
			t.Errorf("link %s: _PRS and _CRS differ", link)
		}
		routed[fmt.Sprintf("slot %d INT%c", addr>>16, 'A'+pin)] = crs(string(link) + "._CRS")
	}
	for _, p := range pci {
		flags := 0x3 // consumer, edge, active-high, exclusive
		if p.GSI == 16 {
			flags |= 0x8 // shared
		}
		for pin := 'A'; pin <= 'D'; pin++ {
			key := fmt.Sprintf("slot %d INT%c", p.Slot, pin)
			if want := fmt.Sprintf("Interrupt flags %#x [%d]", flags, p.GSI); routed[key] != want {
				t.Errorf("%s routes to %q, want %q", key, routed[key], want)
			}
		}
	}
	s5, _ := ns.names[`\_S5`].([]amlObject)
	if fmt.Sprint(s5) != "[5 5 0 0]" {
		t.Errorf(`\_S5 = %v, want [5 5 0 0]`, ns.names[`\_S5`])
	}
}

func TestACPIWithoutPCIDevices(t *testing.T) {
	tab, err := BuildACPI(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := decodeAML(parseACPI(t, tab).dsdt[acpiHeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	if prt, ok := ns.names[`\_SB.PCI0._PRT`].([]amlObject); !ok || len(prt) != 0 {
		t.Errorf("_PRT = %v, want an empty package", ns.names[`\_SB.PCI0._PRT`])
	}
}

func TestACPIRefuses(t *testing.T) {
	tests := []struct {
		name  string
		vcpus int
		pci   []PCIInterrupt
		want  string
	}{
		{"no vCPUs", 0, nil, "0 vCPUs"},
		{"too many vCPUs", 256, nil, "256 vCPUs"},
		{"slot 0", 1, []PCIInterrupt{{0, 10}}, "slot 0"},
		{"slot 32", 1, []PCIInterrupt{{32, 10}}, "slot 32"},
		{"slot twice", 1, []PCIInterrupt{{1, 10}, {1, 11}}, "slot 1 routed twice"},
		{"GSI of the SCI", 1, []PCIInterrupt{{1, 9}}, "GSI 9"},
		{"GSI past the IOAPIC", 1, []PCIInterrupt{{1, 24}}, "GSI 24"},
	}
	for _, tt := range tests {
		if _, err := BuildACPI(tt.vcpus, tt.pci); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one with %q", tt.name, err, tt.want)
		}
	}
}

// TestACPITablesAreReserved: the tables lie below 1 MiB in memory the
// E820 map reserves, so the OS neither uses nor reclaims them.
func TestACPITablesAreReserved(t *testing.T) {
	tab, err := BuildACPI(16, []PCIInterrupt{{1, 10}, {2, 11}})
	if err != nil {
		t.Fatal(err)
	}
	start, end := tab.Base, tab.Base+uint64(len(tab.Data))
	if end > highMemStart || tab.RSDP < 0xE0000 || tab.RSDP >= 0x100000 {
		t.Fatalf("tables at [%#x, %#x), RSDP %#x: want them in the BIOS area below 1 MiB", start, end, tab.RSDP)
	}
	for _, e := range E820(128 << 20) {
		if start >= e.Addr && end <= e.Addr+e.Size {
			if e.Type != E820Reserved {
				t.Errorf("tables [%#x, %#x) lie in E820 type %d", start, end, e.Type)
			}
			return
		}
	}
	t.Errorf("no E820 entry holds the tables [%#x, %#x)", start, end)
}

// TestACPIWritesToGuest: the image goes into guest RAM as built.
func TestACPIWritesToGuest(t *testing.T) {
	mem, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	tab, err := BuildACPI(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.WriteAt(tab.Data, tab.Base); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8)
	mem.ReadAt(got, tab.RSDP)
	if string(got) != "RSD PTR " {
		t.Errorf("RSDP in guest RAM reads %q", got)
	}
}
