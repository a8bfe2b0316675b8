package legacy

import (
	"testing"

	"github.com/godwit-vmm/godwit/internal/devices"
)

var _ devices.PortIO = (*ACPIPM)(nil)

const pmBase = 0x600

func in16(d devices.PortIO, port uint16) uint16 {
	b := make([]byte, 2)
	d.ReadPort(port, b)
	return uint16(devices.LoadLE(b))
}

func out16(d devices.PortIO, port, v uint16) {
	b := make([]byte, 2)
	devices.StoreLE(b, uint64(v))
	d.WritePort(port, b)
}

func TestACPIPMRegisters(t *testing.T) {
	p := NewACPIPM(pmBase, nil)
	if sts, en, cnt := in16(p, pmBase), in16(p, pmBase+2), in16(p, pmBase+4); sts != 0 || en != 0 || cnt != pm1CntSCIEn {
		t.Fatalf("reset: PM1_STS %#x PM1_EN %#x PM1_CNT %#x, want 0, 0, SCI_EN", sts, en, cnt)
	}
	out16(p, pmBase+2, 0x0121)
	if en := in16(p, pmBase+2); en != 0x0121 {
		t.Errorf("PM1_EN = %#x after writing 0x0121", en)
	}
	out8(p, pmBase+3, 0x04)
	if en := in16(p, pmBase+2); en != 0x0421 {
		t.Errorf("PM1_EN = %#x after a byte write of its high half", en)
	}

	// SCI_EN stays set (the machine is always in ACPI mode), SLP_EN
	// reads as zero, BM_RLD and SLP_TYP read back.
	out16(p, pmBase+4, 0)
	if cnt := in16(p, pmBase+4); cnt != pm1CntSCIEn {
		t.Errorf("PM1_CNT = %#x after writing 0: SCI_EN must stay set", cnt)
	}
	out16(p, pmBase+4, 3<<10|pm1CntSlpEn|pm1CntBMRld)
	if cnt := in16(p, pmBase+4); cnt != 3<<10|pm1CntBMRld|pm1CntSCIEn {
		t.Errorf("PM1_CNT = %#x, want SLP_TYP 3, BM_RLD, SCI_EN and no SLP_EN", cnt)
	}

	// PM1_STS bits clear when written with 1, others stay.
	if err := p.Restore(ACPIPMState{Version: ACPIPMStateVersion, Status: 0x8101}); err != nil {
		t.Fatal(err)
	}
	out16(p, pmBase, 0x0001)
	if sts := in16(p, pmBase); sts != 0x8100 {
		t.Errorf("PM1_STS = %#x after clearing bit 0 of 0x8101", sts)
	}
	// A dword access spans PM1_STS and PM1_EN.
	p.WritePort(pmBase, []byte{0x00, 0x81, 0x55, 0x00})
	if sts, en := in16(p, pmBase), in16(p, pmBase+2); sts != 0 || en != 0x0055 {
		t.Errorf("after a dword write: PM1_STS %#x PM1_EN %#x, want 0 and 0x55", sts, en)
	}
	// Bytes past the block read as all-ones.
	b := make([]byte, 4)
	p.ReadPort(pmBase+4, b)
	if b[0] != pm1CntSCIEn || b[2] != 0xFF || b[3] != 0xFF {
		t.Errorf("dword read at PM1_CNT = % x", b)
	}
}

func TestACPIPMSleep(t *testing.T) {
	tests := []struct {
		name   string
		writes []uint16
		off    bool
	}{
		{"S5 with SLP_EN", []uint16{SleepTypeS5 << 10, SleepTypeS5<<10 | pm1CntSlpEn}, true},
		{"S5 without SLP_EN", []uint16{SleepTypeS5 << 10}, false},
		{"S3 (not offered)", []uint16{3<<10 | pm1CntSlpEn}, false},
		{"S1 (not offered)", []uint16{1<<10 | pm1CntSlpEn}, false},
		{"SLP_EN alone", []uint16{pm1CntSlpEn}, false},
	}
	for _, tt := range tests {
		offs := 0
		p := NewACPIPM(pmBase, func() { offs++ })
		for _, w := range tt.writes {
			out16(p, pmBase+4, w)
		}
		if want := map[bool]int{true: 1}[tt.off]; offs != want {
			t.Errorf("%s: %d power-offs, want %d", tt.name, offs, want)
		}
	}
	// Byte-wise: the high byte carries SLP_EN and SLP_TYP.
	offs := 0
	p := NewACPIPM(pmBase, func() { offs++ })
	out8(p, pmBase+4, 0)
	out8(p, pmBase+5, byte((SleepTypeS5<<10|pm1CntSlpEn)>>8))
	if offs != 1 {
		t.Errorf("byte write of S5|SLP_EN: %d power-offs, want 1", offs)
	}
}

func TestACPIPMSaveRestore(t *testing.T) {
	p := NewACPIPM(pmBase, nil)
	out16(p, pmBase+2, 0x0120)
	out16(p, pmBase+4, 2<<10|pm1CntBMRld)
	s := p.Save()
	q := NewACPIPM(pmBase, nil)
	if err := q.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := q.Save(); got != s {
		t.Errorf("round trip %+v, want %+v", got, s)
	}
	if en, cnt := in16(q, pmBase+2), in16(q, pmBase+4); en != 0x0120 || cnt != 2<<10|pm1CntBMRld|pm1CntSCIEn {
		t.Errorf("restored PM1_EN %#x PM1_CNT %#x", en, cnt)
	}
	s.Version = 99
	if err := q.Restore(s); err == nil {
		t.Error("restored a state of an unknown version")
	}
}
