package x86

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/godwit-vmm/godwit/internal/memory"
)

// ACPI tables (ACPI 6.0) describing the machine the vm layer builds: the
// vCPUs' local APICs, the IOAPIC, the PM1 register block of package
// legacy's ACPIPM device, the i8042 reset path, the PCI host bridge with
// its interrupt routing, COM1, and the S5 (soft-off) sleep state.
//
// Layout, from ACPIBase in the reserved BIOS area below 1 MiB (E820
// already marks [0x9FC00, 1 MiB) reserved, and Linux also scans
// 0xE0000-0xFFFFF for the RSDP when the boot protocol does not give it):
//
//	+0x000 RSDP (revision 2, 36 bytes) -> XSDT
//	+0x040 FACS (64 bytes, 64-byte aligned)
//	+0x080 XSDT -> FADT, MADT
//	       FADT (revision 6) -> FACS (X_FIRMWARE_CTRL), DSDT (DSDT, X_DSDT)
//	       MADT
//	       DSDT (AML)
//
// every table 16-byte aligned.
//
// Interrupt routing matches what the VMM wires: GSI n is IOAPIC pin n
// (KVM's default routing and the software CPU's chipset both send the PIT,
// GSI 0, to pin 0, so there is no IRQ0 -> GSI 2 override, unlike QEMU's
// tables), and device lines are pulsed (hv.IRQ.Trigger), which a
// level-triggered IOAPIC pin could miss while its remote IRR is set, so
// every PCI interrupt is declared edge-triggered, active-high, through a
// PNP0C0F link device (a _PRT entry naming a GSI directly would make the
// OS program it level, active-low).
const (
	// ACPIBase is where BuildACPI's tables go.
	ACPIBase = 0xE0000
	// ACPIMaxSize bounds the tables: they must end by 1 MiB.
	ACPIMaxSize = highMemStart - ACPIBase

	// ACPIPMBase is the I/O port of the PM1a event block (PM1_STS at +0,
	// PM1_EN at +2, 2 bytes each); the PM1a control block (PM1_CNT, 2
	// bytes) follows at +4.
	ACPIPMBase     = 0x600
	ACPIPMEventLen = 4
	ACPIPMCntLen   = 2
	// ACPIPMLen is the number of ports from ACPIPMBase the device decodes.
	ACPIPMLen = ACPIPMEventLen + ACPIPMCntLen

	// ACPISCI is the SCI's ISA IRQ and GSI: level-triggered, active-high.
	ACPISCI = 9

	// ACPISleepTypeS5 is the SLP_TYP value of \_S5, soft-off.
	ACPISleepTypeS5 = 5

	// IOAPICAddr and LAPICAddr are the interrupt controllers' MMIO bases
	// in the hole below 4 GiB, as KVM and the software CPU place them.
	IOAPICAddr = 0xFEC00000
	LAPICAddr  = 0xFEE00000
	// IOAPICPins is the number of the IOAPIC's inputs: GSIs 0-23.
	IOAPICPins = 24

	resetPort  = 0xCF9 // package legacy's ResetControl
	resetValue = 0x06  // RST_CPU | SYS_RST: a hard reset
	com1Port   = 0x3F8
	com1IRQ    = 4
)

// ACPI table identification.
const (
	acpiOEMID      = "GODWIT"
	acpiOEMTableID = "GODWITVM"
	acpiCreatorID  = "GDWT"
	acpiHeaderLen  = 36
)

// FADT fields (ACPI 6.0 table 5-34).
const (
	fadtLen        = 276
	fadtRevision   = 6
	fadtFlagWBINVD = 1 << 0
	fadtFlagC1     = 1 << 2  // PROC_C1: C1 on every processor
	fadtFlagPwrBtn = 1 << 4  // PWR_BUTTON: no fixed-feature power button
	fadtFlagSlpBtn = 1 << 5  // SLP_BUTTON: no fixed-feature sleep button
	fadtFlagFixRTC = 1 << 6  // FIX_RTC: no RTC wake status in fixed registers
	fadtFlagReset  = 1 << 10 // RESET_REG_SUP
	fadtFlags      = fadtFlagWBINVD | fadtFlagC1 | fadtFlagPwrBtn | fadtFlagSlpBtn | fadtFlagFixRTC | fadtFlagReset

	// IAPC_BOOT_ARCH: legacy ISA devices, an 8042, and no VGA.
	bootArchLegacy = 1 << 0
	bootArch8042   = 1 << 1
	bootArchNoVGA  = 1 << 2

	gasSystemIO   = 1
	gasAccessByte = 1
	gasAccessWord = 2

	// P_LVL2_LAT above 100 and P_LVL3_LAT above 1000 say C2 and C3 are
	// not supported.
	noC2Latency = 101
	noC3Latency = 1001
)

// MADT entries (ACPI 6.0 section 5.2.12).
const (
	madtRevision     = 3
	madtPCATCompat   = 1 << 0 // dual 8259s present: the OS masks them
	madtLocalAPIC    = 0
	madtIOAPIC       = 1
	madtOverride     = 2
	madtLocalAPICNMI = 4
	madtEnabled      = 1 << 0
	// MPS INTI flags: polarity in bits 1-0, trigger mode in bits 3-2.
	intiActiveHigh = 1
	intiLevel      = 3 << 2
	allProcessors  = 0xFF
)

// PCIInterrupt says which GSI a PCI device on bus 0 interrupts on: the
// DSDT routes INTA#-INTD# of Slot there.
type PCIInterrupt struct {
	Slot int    // device number on bus 0, 1-31
	GSI  uint32 // IOAPIC input, 0-23, not the SCI's
}

// ACPITables is a built set of tables: Data goes at guest-physical Base,
// with the RSDP at RSDP.
type ACPITables struct {
	Base uint64
	Data []byte
	RSDP uint64
}

// BuildACPI returns the tables for a machine with vcpus vCPUs (APIC IDs
// 0..vcpus-1, vCPU 0 the bootstrap processor) and PCI devices
// interrupting as pci says. It is a pure function; the caller writes
// Data into guest RAM at Base.
func BuildACPI(vcpus int, pci []PCIInterrupt) (*ACPITables, error) {
	if vcpus < 1 || vcpus > 255 {
		return nil, fmt.Errorf("x86: acpi: %d vCPUs: need 1 to 255", vcpus)
	}
	pci = slices.Clone(pci)
	slices.SortFunc(pci, func(a, b PCIInterrupt) int { return a.Slot - b.Slot })
	for i, p := range pci {
		if p.Slot < 1 || p.Slot > 31 {
			return nil, fmt.Errorf("x86: acpi: PCI slot %d: need 1 to 31", p.Slot)
		}
		if i > 0 && pci[i-1].Slot == p.Slot {
			return nil, fmt.Errorf("x86: acpi: PCI slot %d routed twice", p.Slot)
		}
		if p.GSI >= IOAPICPins || p.GSI == ACPISCI {
			return nil, fmt.Errorf("x86: acpi: PCI slot %d on GSI %d: need 0 to %d, not the SCI (%d)", p.Slot, p.GSI, IOAPICPins-1, ACPISCI)
		}
	}

	madt := madtTable(vcpus)
	dsdt := dsdtTable(pci)
	const (
		rsdpOff = 0x000
		facsOff = 0x040
		xsdtOff = 0x080
		xsdtLen = acpiHeaderLen + 2*8
	)
	fadtOff := align16(xsdtOff + xsdtLen)
	madtOff := align16(fadtOff + fadtLen)
	dsdtOff := align16(madtOff + len(madt))
	size := dsdtOff + len(dsdt)
	if size > ACPIMaxSize {
		return nil, fmt.Errorf("x86: acpi: tables of %d bytes exceed the %d bytes below 1 MiB", size, ACPIMaxSize)
	}
	at := func(off int) uint64 { return ACPIBase + uint64(off) }

	data := make([]byte, size)
	copy(data[rsdpOff:], rsdp(at(xsdtOff)))
	copy(data[facsOff:], facsTable())
	copy(data[xsdtOff:], xsdtTable(at(fadtOff), at(madtOff)))
	copy(data[fadtOff:], fadtTable(at(facsOff), at(dsdtOff)))
	copy(data[madtOff:], madt)
	copy(data[dsdtOff:], dsdt)
	return &ACPITables{Base: ACPIBase, Data: data, RSDP: at(rsdpOff)}, nil
}

func align16(n int) int { return (n + 15) &^ 15 }

// acpiChecksum returns the byte that makes b sum to zero.
func acpiChecksum(b []byte) byte {
	var s byte
	for _, v := range b {
		s += v
	}
	return -s
}

// acpiTable wraps body in a system description table header and sets its
// checksum.
func acpiTable(sig string, rev byte, body []byte) []byte {
	t := make([]byte, acpiHeaderLen, acpiHeaderLen+len(body))
	le := binary.LittleEndian
	copy(t[0:4], sig)
	le.PutUint32(t[4:], uint32(acpiHeaderLen+len(body)))
	t[8] = rev
	copy(t[10:16], acpiOEMID)
	copy(t[16:24], acpiOEMTableID)
	le.PutUint32(t[24:], 1) // OEM revision
	copy(t[28:32], acpiCreatorID)
	le.PutUint32(t[32:], 1) // creator revision
	t = append(t, body...)
	t[9] = acpiChecksum(t)
	return t
}

// rsdp returns the revision 2 Root System Description Pointer, with no
// RSDT: an ACPI 2.0+ OS uses the XSDT.
func rsdp(xsdt uint64) []byte {
	b := make([]byte, 36)
	copy(b, "RSD PTR ")
	copy(b[9:15], acpiOEMID)
	b[15] = 2 // revision: ACPI 2.0 and later
	binary.LittleEndian.PutUint32(b[20:], uint32(len(b)))
	binary.LittleEndian.PutUint64(b[24:], xsdt)
	b[8] = acpiChecksum(b[:20])
	b[32] = acpiChecksum(b)
	return b
}

// xsdtTable lists the tables the OS finds from the root: the FADT (which
// leads to the FACS and DSDT) and the MADT.
func xsdtTable(entries ...uint64) []byte {
	var body []byte
	for _, e := range entries {
		body = binary.LittleEndian.AppendUint64(body, e)
	}
	return acpiTable("XSDT", 1, body)
}

// facsTable returns the Firmware ACPI Control Structure: no waking vector
// (there is no S3), the global lock free.
func facsTable() []byte {
	b := make([]byte, 64)
	copy(b, "FACS")
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	b[32] = 2 // version
	return b
}

// gas encodes a Generic Address Structure for an I/O port register.
func gas(port uint16, bits, access byte) []byte {
	b := []byte{gasSystemIO, bits, 0, access}
	return binary.LittleEndian.AppendUint64(b, uint64(port))
}

// fadtTable returns the Fixed ACPI Description Table of a PC-compatible
// (not hardware-reduced) machine: PM1a event and control blocks, no PM
// timer and no GPE blocks, the SCI on ACPISCI, no SMI command port (the
// machine is always in ACPI mode: SCI_EN reads 1), and the 0xCF9 reset
// register.
func fadtTable(facs, dsdt uint64) []byte {
	b := make([]byte, fadtLen-acpiHeaderLen)
	le := binary.LittleEndian
	put16 := func(off int, v uint16) { le.PutUint16(b[off-acpiHeaderLen:], v) }
	put32 := func(off int, v uint32) { le.PutUint32(b[off-acpiHeaderLen:], v) }
	put64 := func(off int, v uint64) { le.PutUint64(b[off-acpiHeaderLen:], v) }
	putGAS := func(off int, g []byte) { copy(b[off-acpiHeaderLen:], g) }

	// FIRMWARE_CTRL (36) stays 0: X_FIRMWARE_CTRL holds the FACS, and
	// the specification wants only one of them set.
	put32(40, uint32(dsdt)) // DSDT
	put16(46, ACPISCI)      // SCI_INT
	put32(56, ACPIPMBase)   // PM1a_EVT_BLK
	put32(64, ACPIPMBase+ACPIPMEventLen)
	b[88-acpiHeaderLen] = ACPIPMEventLen // PM1_EVT_LEN
	b[89-acpiHeaderLen] = ACPIPMCntLen   // PM1_CNT_LEN
	put16(96, noC2Latency)
	put16(98, noC3Latency)
	put16(109, bootArchLegacy|bootArch8042|bootArchNoVGA)
	put32(112, fadtFlags)
	putGAS(116, gas(resetPort, 8, gasAccessByte)) // RESET_REG
	b[128-acpiHeaderLen] = resetValue
	// FADT minor version (131) 0: ACPI 6.0.
	put64(132, facs)                                                           // X_FIRMWARE_CTRL
	put64(140, dsdt)                                                           // X_DSDT
	putGAS(148, gas(ACPIPMBase, 8*ACPIPMEventLen, gasAccessWord))              // X_PM1a_EVT_BLK
	putGAS(172, gas(ACPIPMBase+ACPIPMEventLen, 8*ACPIPMCntLen, gasAccessWord)) // X_PM1a_CNT_BLK
	copy(b[268-acpiHeaderLen:], "GODWIT")                                      // hypervisor vendor identity
	return acpiTable("FACP", fadtRevision, b)
}

// madtTable returns the Multiple APIC Description Table: one enabled
// local APIC per vCPU (ACPI processor UID and APIC ID both the vCPU
// index), the IOAPIC with GSIs from 0, the SCI's override to
// level-triggered active-high, and LINT1 as NMI on every processor.
func madtTable(vcpus int) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, LAPICAddr)
	b = le.AppendUint32(b, madtPCATCompat)
	for i := range vcpus {
		b = append(b, madtLocalAPIC, 8, byte(i), byte(i))
		b = le.AppendUint32(b, madtEnabled)
	}
	b = append(b, madtIOAPIC, 12, 0, 0) // IOAPIC ID 0, as KVM's and ours reset to
	b = le.AppendUint32(b, IOAPICAddr)
	b = le.AppendUint32(b, 0) // GSI base
	b = append(b, madtOverride, 10, 0, ACPISCI)
	b = le.AppendUint32(b, ACPISCI)
	b = le.AppendUint16(b, intiActiveHigh|intiLevel)
	b = append(b, madtLocalAPICNMI, 6, allProcessors)
	b = le.AppendUint16(b, 0) // flags: as the bus defines
	b = append(b, 1)          // LINT1
	return acpiTable("APIC", madtRevision, b)
}

// dsdtTable returns the Differentiated System Description Table:
//
//	Scope (\_SB) {
//	    Device (LNxx) { ... }  // one PCI interrupt link per GSI in pci
//	    Device (PCI0) { _HID PNP0A03, _UID 0, _SEG 0, _BBN 0, _CRS, _PRT }
//	    Device (COM1) { _HID PNP0501, _UID 1, _CRS: 0x3F8-0x3FF, IRQ 4 }
//	}
//	Name (\_S5, Package () { 5, 5, 0, 0 })
func dsdtTable(pci []PCIInterrupt) []byte {
	slotsOn := map[uint32]int{}
	var gsis []uint32
	for _, p := range pci {
		if slotsOn[p.GSI] == 0 {
			gsis = append(gsis, p.GSI)
		}
		slotsOn[p.GSI]++
	}
	slices.Sort(gsis)

	var sb [][]byte
	for _, g := range gsis {
		sb = append(sb, linkDevice(g, slotsOn[g] > 1))
	}
	var prt [][]byte
	for _, p := range pci {
		for pin := range uint64(4) { // INTA# to INTD#
			prt = append(prt, amlPackage(
				amlInteger(uint64(p.Slot)<<16|0xFFFF), // any function of the slot
				amlInteger(pin),
				amlNameString(`\_SB.`+linkName(p.GSI)),
				amlInteger(0),
			))
		}
	}
	sb = append(sb,
		amlDevice("PCI0",
			amlName("_HID", amlEISAID("PNP0A03")),
			amlName("_UID", amlInteger(0)),
			amlName("_SEG", amlInteger(0)),
			amlName("_BBN", amlInteger(0)),
			amlName("_CRS", amlResourceTemplate(
				resWordWindow(resTypeBus, 0, 0, 0xFF),
				resIOPort(0xCF8, 8),
				resWordWindow(resTypeIO, resIORangeAll, 0, 0xCF7),
				resWordWindow(resTypeIO, resIORangeAll, 0xD00, 0xFFFF),
				resDWordMemWindow(memory.HoleStart, IOAPICAddr-1),
			)),
			amlName("_PRT", amlPackage(prt...)),
		),
		amlDevice("COM1",
			amlName("_HID", amlEISAID("PNP0501")),
			amlName("_UID", amlInteger(1)),
			amlName("_CRS", amlResourceTemplate(resIOPort(com1Port, 8), resIRQ(com1IRQ))),
		),
	)
	aml := concat(
		amlScope(`\_SB`, sb...),
		amlName(`\_S5`, amlPackage(amlInteger(ACPISleepTypeS5), amlInteger(ACPISleepTypeS5), amlInteger(0), amlInteger(0))),
	)
	return acpiTable("DSDT", 2, aml) // revision 2: 64-bit AML integers
}

// linkName names the interrupt link device of a GSI: LN and two hex digits.
func linkName(gsi uint32) string { return fmt.Sprintf("LN%02X", gsi) }

// linkDevice is a PCI interrupt link (PNP0C0F) fixed on one GSI,
// edge-triggered and active-high. _SRS accepts the only setting _PRS
// offers, so the OS keeps the routing the VMM wired.
func linkDevice(gsi uint32, shared bool) []byte {
	irq := amlResourceTemplate(resInterrupt(gsi, shared))
	return amlDevice(linkName(gsi),
		amlName("_HID", amlEISAID("PNP0C0F")),
		amlName("_UID", amlInteger(uint64(gsi))),
		amlName("_PRS", irq),
		amlName("_CRS", irq),
		amlMethod("_SRS", 1),
	)
}
