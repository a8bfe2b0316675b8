package legacy

import (
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/devices"
)

var (
	_ devices.PortIO = (*I8042)(nil)
	_ devices.PortIO = (*CMOS)(nil)
	_ devices.PortIO = (*DebugExit)(nil)
	_ devices.PortIO = (*ResetControl)(nil)
	_ devices.PortIO = POST{}
)

func in8(d devices.PortIO, port uint16) uint8 {
	b := []byte{0}
	d.ReadPort(port, b)
	return b[0]
}

func out8(d devices.PortIO, port uint16, v uint8) { d.WritePort(port, []byte{v}) }

func TestI8042(t *testing.T) {
	resets := 0
	k := NewI8042(func() { resets++ })
	if s := in8(k, PortI8042Command); s&statusOBF != 0 || s&statusSystem == 0 {
		t.Errorf("idle status %#x", s)
	}
	out8(k, PortI8042Command, cmdSelfTest)
	if s := in8(k, PortI8042Command); s&statusOBF == 0 {
		t.Fatalf("no data after self-test, status %#x", s)
	}
	if v := in8(k, PortI8042Data); v != 0x55 {
		t.Errorf("self-test answer %#x, want 0x55", v)
	}
	out8(k, PortI8042Command, cmdWriteCTR)
	out8(k, PortI8042Data, 0x47)
	out8(k, PortI8042Command, cmdReadCTR)
	if v := in8(k, PortI8042Data); v != 0x47 {
		t.Errorf("CTR %#x, want 0x47", v)
	}
	s := k.Save()
	k2 := NewI8042(nil)
	if err := k2.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := k2.Save(); got.CTR != 0x47 || got.Status != s.Status {
		t.Errorf("round trip %+v, want %+v", got, s)
	}
	if resets != 0 {
		t.Fatal("reset before 0xFE")
	}
	out8(k, PortI8042Command, cmdPulseReset)
	if resets != 1 {
		t.Errorf("0xFE to 0x64: %d resets, want 1", resets)
	}
	out8(k, PortI8042Command, cmdWriteOutp)
	out8(k, PortI8042Data, 0xFE)
	if resets != 2 {
		t.Errorf("output port bit 0 low: %d resets, want 2", resets)
	}
}

func TestPorts(t *testing.T) {
	var code uint32 = 1234
	d := NewDebugExit(func(v uint32) { code = v })
	d.WritePort(PortDebugExit, []byte{0x31, 0, 0, 0})
	if code != 0x31 {
		t.Errorf("debug exit value %#x, want 0x31", code)
	}
	resets := 0
	r := NewResetControl(func() { resets++ })
	out8(r, PortResetControl, 0x02)
	if resets != 0 {
		t.Error("reset without RST_CPU")
	}
	out8(r, PortResetControl, 0x06)
	if resets != 1 {
		t.Errorf("0x06 to 0xCF9: %d resets, want 1", resets)
	}
	out8(POST{}, PortPOST, 0x12)
}

func TestCMOS(t *testing.T) {
	host := time.Date(2025, 3, 9, 17, 45, 58, 0, time.UTC) // a Sunday
	c := NewCMOS(func() time.Time { return host })
	reg := func(i uint8) uint8 { out8(c, PortCMOSIndex, i); return in8(c, PortCMOSData) }
	tests := []struct {
		idx  uint8
		want uint8
	}{
		{rtcSeconds, 0x58}, {rtcMinutes, 0x45}, {rtcHours, 0x17}, {rtcWeekday, 0x01},
		{rtcMonthDay, 0x09}, {rtcMonth, 0x03}, {rtcYear, 0x25}, {cmosCentury, 0x20},
		{rtcStatusA, statusADflt}, {rtcStatusB, statusBDflt}, {rtcStatusC, 0}, {rtcStatusD, statusDVRT},
	}
	for _, tc := range tests {
		if got := reg(tc.idx); got != tc.want {
			t.Errorf("register %#x = %#x, want %#x", tc.idx, got, tc.want)
		}
	}
	// NMI mask bit does not change the index.
	out8(c, PortCMOSIndex, cmosNMIMask|rtcMinutes)
	if got := in8(c, PortCMOSData); got != 0x45 || !c.NMIDisabled() {
		t.Errorf("minutes with NMI mask %#x, nmi disabled %v", got, c.NMIDisabled())
	}
	// NVRAM.
	out8(c, PortCMOSIndex, 0x40)
	out8(c, PortCMOSData, 0xAB)
	if got := reg(0x40); got != 0xAB {
		t.Errorf("NVRAM %#x", got)
	}
	// Binary 12-hour mode.
	out8(c, PortCMOSIndex, rtcStatusB)
	out8(c, PortCMOSData, statusBDM)
	if got := reg(rtcHours); got != 5|hourPM {
		t.Errorf("binary 12h hour %#x, want %#x", got, 5|hourPM)
	}
	// Guest sets the clock: the offset follows.
	out8(c, PortCMOSIndex, rtcStatusB)
	out8(c, PortCMOSData, statusBDflt)
	out8(c, PortCMOSIndex, rtcYear)
	out8(c, PortCMOSData, 0x30)
	if got := reg(rtcYear); got != 0x30 {
		t.Errorf("year after set %#x", got)
	}
	s := c.Save()
	c2 := NewCMOS(func() time.Time { return host })
	if err := c2.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := c2.Save(); got != s {
		t.Errorf("round trip %+v, want %+v", got, s)
	}
	out8(c2, PortCMOSIndex, rtcYear)
	if got := in8(c2, PortCMOSData); got != 0x30 {
		t.Errorf("restored year %#x", got)
	}
}
