package irqchip

import (
	"encoding/binary"
	"math/rand"
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// FuzzRestore feeds peer bytes to every Restore, then runs the machine.
func FuzzRestore(f *testing.F) {
	vm := newTestVM(f, 2)
	s, _ := vm.Save()
	seed := func(s ChipsetState) []byte {
		var b []byte
		b = append(b, s.LAPICs[0][:]...)
		b = append(b, s.PICMaster.Chip[:16]...)
		b = append(b, s.PICSlave.Chip[:16]...)
		b = append(b, s.IOAPIC.Chip[:216]...)
		b = append(b, s.PIT[:]...)
		return b
	}
	f.Add(seed(s))
	vm.enable()
	picInit(vm, 0x20, 0x28, 0x01)
	vm.outb(0x43, 0x34)
	vm.outb(0x40, 0x10)
	vm.outb(0x40, 0x00)
	vm.LAPIC(0).Write(regLVTTimer, lvtTimerPeriod|0x40)
	vm.LAPIC(0).Write(regTMICT, 1000)
	s, _ = vm.Save()
	f.Add(seed(s))
	f.Add([]byte{0xFF, 0xFF, 0xFF})
	f.Fuzz(runFuzzOnce)
}

func runFuzzOnce(t *testing.T, data []byte) {
	{
		next := func(n int) []byte {
			b := make([]byte, n)
			k := copy(b, data)
			data = data[k:]
			return b
		}
		vm := newTestVM(t, 2)
		var st ChipsetState
		copy(st.PICMaster.Chip[:], next(16))
		st.PICSlave.ChipID = hv.IRQChipPICSlave
		copy(st.PICSlave.Chip[:], next(16))
		st.IOAPIC.ChipID = hv.IRQChipIOAPIC
		io := next(216)
		if len(data)%2 == 0 { // mostly accept the IOAPIC
			binary.LittleEndian.PutUint64(io, IOAPICBase)
		}
		copy(st.IOAPIC.Chip[:], io)
		copy(st.PIT[:], next(112))
		st.LAPICs = make([]hv.LAPICState, 2)
		copy(st.LAPICs[0][:], next(1024))
		copy(st.LAPICs[1][:], data)
		_ = vm.Restore(&st)
		// run it: every port, both MMIO pages, interrupts, time
		for port := range uint16(0x4D2) {
			if vm.handles(port) {
				vm.PortIn(port, 1)
			}
		}
		for off := uint64(0); off < 0x400; off += 0x10 {
			vm.MMIORead(0, LAPICBase+off, 4)
			vm.MMIORead(1, IOAPICBase+off%0x20, 4)
		}
		for range 4 {
			vm.clk.Advance(1_000_000)
			for i := range 2 {
				if _, ok := vm.PendingInterrupt(i); ok {
					vm.LAPIC(i).Write(regEOI, 0)
				}
			}
		}
		vm.PulseIRQ(0)
		vm.SetIRQ(20, true)
		if _, err := vm.Save(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRestoreRandomBytes runs the fuzz body over seeded random states.
func TestRestoreRandomBytes(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for range 2000 {
		b := make([]byte, 16+16+216+112+1024+r.Intn(1024))
		r.Read(b)
		runFuzzOnce(t, b)
	}
}
