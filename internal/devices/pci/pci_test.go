package pci

import (
	"encoding/binary"
	"testing"
)

// testDevice is a function with one I/O BAR that records accesses.
type testDevice struct {
	cfg    *ConfigSpace
	reads  []uint64
	writes []uint64
}

func newTestDevice(t *testing.T, size uint32) *testDevice {
	t.Helper()
	d := &testDevice{cfg: NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1000, Class: 0x020000, InterruptPin: 1, SubsystemVendorID: 0x1af4, SubsystemID: 1})}
	if err := d.cfg.AddBAR(0, BARIO, size); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *testDevice) Config() *ConfigSpace { return d.cfg }
func (d *testDevice) BARRead(bar int, off uint64, data []byte) {
	d.reads = append(d.reads, off)
	for i := range data {
		data[i] = byte(off) + byte(i)
	}
}
func (d *testDevice) BARWrite(bar int, off uint64, data []byte) { d.writes = append(d.writes, off) }

func cfgAddr(slot, reg int) uint32 { return 0x80000000 | uint32(slot)<<11 | uint32(reg&0xFC) }

func setAddr(b *Bus, a uint32) {
	var buf [4]byte
	binary.LittleEndian.PutUint32(buf[:], a)
	b.WritePort(PortConfigAddress, buf[:])
}

func readConfig(b *Bus, slot, off, n int) uint32 {
	setAddr(b, cfgAddr(slot, off))
	buf := make([]byte, n)
	b.ReadPort(PortConfigData+uint16(off&3), buf)
	var v uint32
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint32(buf[i])
	}
	return v
}

func writeConfig(b *Bus, slot, off, n int, v uint32) {
	setAddr(b, cfgAddr(slot, off))
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = byte(v >> (8 * i))
	}
	b.WritePort(PortConfigData+uint16(off&3), buf)
}

func TestConfigAddressReadback(t *testing.T) {
	b := NewBus()
	for _, v := range []uint32{0x80000000, 0x8000F8FC, 0x12345678, 0} {
		setAddr(b, v)
		buf := make([]byte, 4)
		b.ReadPort(PortConfigAddress, buf)
		if got := binary.LittleEndian.Uint32(buf); got != v {
			t.Errorf("CONFIG_ADDRESS wrote %#x, read %#x", v, got)
		}
	}
	// A byte access at 0xCF8 is not the address register.
	setAddr(b, 0x80000000)
	b.WritePort(PortConfigAddress, []byte{0x12})
	buf := make([]byte, 4)
	b.ReadPort(PortConfigAddress, buf)
	if got := binary.LittleEndian.Uint32(buf); got != 0x80000000 {
		t.Errorf("byte write changed CONFIG_ADDRESS to %#x", got)
	}
	if b.Owns(0xCF9) {
		t.Error("bus claims 0xCF9 (reset control)")
	}
}

func TestHostBridge(t *testing.T) {
	b := NewBus()
	if got := readConfig(b, 0, OffVendorID, 2); got != HostBridgeVendor {
		t.Errorf("vendor %#x", got)
	}
	if got := readConfig(b, 0, OffDeviceID, 2); got != HostBridgeDevice {
		t.Errorf("device %#x", got)
	}
	if got := readConfig(b, 0, 0x08, 4) >> 8; got != HostBridgeClass {
		t.Errorf("class %#x", got)
	}
	if got := readConfig(b, 0, OffHeaderType, 1); got != 0 {
		t.Errorf("header type %#x", got)
	}
}

func TestConfigAccessWidths(t *testing.T) {
	b := NewBus()
	d := newTestDevice(t, 32)
	slot, err := b.Add(d)
	if err != nil || slot != 1 {
		t.Fatalf("Add: slot %d, %v", slot, err)
	}
	var ref [ConfigSize]byte
	d.cfg.Read(0, ref[:])
	for off := 0; off < ConfigSize; off++ {
		for _, n := range []int{1, 2, 4} {
			if off%n != 0 {
				continue
			}
			var want uint32
			for i := n - 1; i >= 0; i-- {
				want = want<<8 | uint32(ref[off+i])
			}
			if got := readConfig(b, slot, off, n); got != want {
				t.Fatalf("offset %#x width %d: %#x, want %#x", off, n, got, want)
			}
		}
	}
	// Absent slot, other function, other bus, disabled address: all-ones.
	if got := readConfig(b, 7, 0, 4); got != 0xFFFFFFFF {
		t.Errorf("absent slot reads %#x", got)
	}
	setAddr(b, cfgAddr(1, 0)|1<<8)
	buf := make([]byte, 4)
	b.ReadPort(PortConfigData, buf)
	if binary.LittleEndian.Uint32(buf) != 0xFFFFFFFF {
		t.Errorf("function 1 reads %x", buf)
	}
	setAddr(b, cfgAddr(1, 0)|1<<16)
	b.ReadPort(PortConfigData, buf)
	if binary.LittleEndian.Uint32(buf) != 0xFFFFFFFF {
		t.Errorf("bus 1 reads %x", buf)
	}
	setAddr(b, cfgAddr(1, 0)&^0x80000000)
	b.ReadPort(PortConfigData, buf)
	if binary.LittleEndian.Uint32(buf) != 0xFFFFFFFF {
		t.Errorf("disabled address reads %x", buf)
	}
	// Read-only identity, writable interrupt line, read-only pin.
	writeConfig(b, slot, OffVendorID, 4, 0)
	if got := readConfig(b, slot, OffVendorID, 2); got != 0x1af4 {
		t.Errorf("vendor written: %#x", got)
	}
	writeConfig(b, slot, OffInterruptLine, 2, 0x000B)
	if got := readConfig(b, slot, OffInterruptLine, 1); got != 0x0B {
		t.Errorf("interrupt line %#x", got)
	}
	if got := readConfig(b, slot, OffInterruptPin, 1); got != 1 {
		t.Errorf("interrupt pin %#x", got)
	}
}

func TestBARSizing(t *testing.T) {
	b := NewBus()
	d := newTestDevice(t, 64)
	if err := d.cfg.AddBAR(1, BARMem32, 4096); err != nil {
		t.Fatal(err)
	}
	// The bus allocates I/O BARs only.
	if _, err := b.Add(d); err == nil {
		t.Fatal("Add accepted a memory BAR")
	}
	d = newTestDevice(t, 64)
	slot, err := b.Add(d)
	if err != nil {
		t.Fatal(err)
	}
	bar0 := readConfig(b, slot, OffBAR0, 4)
	if bar0 != IOBase|1 {
		t.Errorf("BAR0 %#x, want %#x", bar0, IOBase|1)
	}
	writeConfig(b, slot, OffBAR0, 4, 0xFFFFFFFF)
	if got := readConfig(b, slot, OffBAR0, 4); got != 0xFFFFFFC1 {
		t.Errorf("I/O BAR size probe %#x, want 0xFFFFFFC1", got)
	}
	writeConfig(b, slot, OffBAR0, 4, bar0)
	// Unimplemented BARs read zero even after the probe.
	writeConfig(b, slot, OffBAR0+8, 4, 0xFFFFFFFF)
	if got := readConfig(b, slot, OffBAR0+8, 4); got != 0 {
		t.Errorf("unimplemented BAR %#x", got)
	}
	// Memory BAR sizing on a bare config space.
	c := NewConfigSpace(Header{})
	c.AddBAR(2, BARMem32, 4096)
	c.Write(OffBAR0+8, []byte{0xFF, 0xFF, 0xFF, 0xFF})
	var buf [4]byte
	c.Read(OffBAR0+8, buf[:])
	if got := binary.LittleEndian.Uint32(buf[:]); got != 0xFFFFF000 {
		t.Errorf("memory BAR size probe %#x", got)
	}
	// A second device is placed after the first, aligned to its size.
	d2 := newTestDevice(t, 256)
	slot2, err := b.Add(d2)
	if err != nil || slot2 != slot+1 {
		t.Fatalf("second Add: %d, %v", slot2, err)
	}
	if _, base, _ := d2.cfg.BAR(0); base != 0xC100 {
		t.Errorf("second BAR at %#x, want 0xC100", base)
	}
}

func TestBARDispatch(t *testing.T) {
	b := NewBus()
	d := newTestDevice(t, 32)
	slot, _ := b.Add(d)
	buf := make([]byte, 2)
	b.ReadPort(IOBase+4, buf)
	if buf[0] != 4 || len(d.reads) != 1 || d.reads[0] != 4 {
		t.Errorf("read at BAR offset 4: data %v, reads %v", buf, d.reads)
	}
	b.WritePort(IOBase+0x10, buf)
	if len(d.writes) != 1 || d.writes[0] != 0x10 {
		t.Errorf("writes %v", d.writes)
	}
	if !b.Owns(IOBase) || !b.Owns(IOBase+31) || b.Owns(IOBase+32) {
		t.Error("Owns wrong around the BAR")
	}
	// The guest moves the BAR.
	writeConfig(b, slot, OffBAR0, 4, 0xD000)
	if b.Owns(IOBase) || !b.Owns(0xD000) {
		t.Error("Owns did not follow the BAR")
	}
	b.ReadPort(0xD002, buf)
	if d.reads[len(d.reads)-1] != 2 {
		t.Errorf("read after move: reads %v", d.reads)
	}
	b.ReadPort(IOBase, buf)
	if buf[0] != 0xFF || buf[1] != 0xFF {
		t.Errorf("old BAR address reads %v", buf)
	}
	// I/O decoding off.
	writeConfig(b, slot, OffCommand, 2, 0)
	if b.Owns(0xD000) {
		t.Error("BAR decoded with I/O disabled")
	}
	n := len(d.reads)
	b.ReadPort(0xD000, buf)
	if len(d.reads) != n {
		t.Error("dispatch with I/O disabled")
	}
}

func TestSaveRestore(t *testing.T) {
	b := NewBus()
	d := newTestDevice(t, 32)
	slot, _ := b.Add(d)
	writeConfig(b, slot, OffBAR0, 4, 0xE000)
	writeConfig(b, slot, OffInterruptLine, 1, 10)
	writeConfig(b, slot, OffCommand, 2, CommandIO|CommandBusMaster)
	setAddr(b, cfgAddr(slot, 0x3C))
	s := b.Save()

	b2 := NewBus()
	d2 := newTestDevice(t, 32)
	b2.Add(d2)
	if err := b2.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := b2.Save(); got.Address != s.Address || len(got.Functions) != 2 || got.Functions[1].Config != s.Functions[1].Config {
		t.Errorf("round trip differs:\n%+v\n%+v", got, s)
	}
	if !b2.Owns(0xE000) || d2.cfg.InterruptLine() != 10 {
		t.Error("restored BAR or interrupt line wrong")
	}
	// A different device in the slot is refused.
	b3 := NewBus()
	other := newTestDevice(t, 32)
	other.cfg = NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1001})
	other.cfg.AddBAR(0, BARIO, 32)
	b3.Add(other)
	if err := b3.Restore(s); err == nil {
		t.Error("restore into a different device succeeded")
	}
}
