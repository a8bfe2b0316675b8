package irqchip

import (
	"sync/atomic"
	"testing"
)

// testVM is a Chipset on a fake clock with per-vCPU wake counters.
type testVM struct {
	*Chipset
	clk   *FakeClock
	wakes []atomic.Int64
}

func newTestVM(t testing.TB, vcpus int) *testVM {
	t.Helper()
	vm := &testVM{clk: NewFakeClock(1_000_000_000), wakes: make([]atomic.Int64, vcpus)}
	c, err := NewChipset(ChipsetConfig{
		VCPUs: vcpus, Sched: vm.clk,
		TSC: func(int) uint64 { return uint64(vm.clk.Now()) * 2 }, TSCHz: 2_000_000_000,
		Wake: func(i int) { vm.wakes[i].Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	vm.Chipset = c
	return vm
}

// enable software-enables every LAPIC with spurious vector 0xFF and the
// given LINT0 (0x10000 masks it).
func (vm *testVM) enable() {
	for _, a := range vm.lapics {
		a.Write(regSVR, 0x1FF)
	}
}

func (vm *testVM) outb(port uint16, v uint8) {
	if !vm.PortOut(port, 1, uint32(v)) {
		panic("port not handled")
	}
}

func (vm *testVM) inb(port uint16) uint8 {
	v, ok := vm.PortIn(port, 1)
	if !ok {
		panic("port not handled")
	}
	return uint8(v)
}

func (vm *testVM) ioapicWrite(reg, val uint32) {
	vm.MMIOWrite(0, IOAPICBase, 4, uint64(reg))
	vm.MMIOWrite(0, IOAPICBase+0x10, 4, uint64(val))
}

func (vm *testVM) ioapicRead(reg uint32) uint32 {
	vm.MMIOWrite(0, IOAPICBase, 4, uint64(reg))
	v, _ := vm.MMIORead(0, IOAPICBase+0x10, 4)
	return uint32(v)
}

// mustVec expects PendingInterrupt(vcpu) to return want.
func mustVec(t *testing.T, c *Chipset, vcpu int, want uint8) {
	t.Helper()
	v, ok := c.PendingInterrupt(vcpu)
	if !ok || v != want {
		t.Fatalf("vcpu %d: interrupt = %#x, %v; want %#x", vcpu, v, ok, want)
	}
}

func mustNone(t *testing.T, c *Chipset, vcpu int) {
	t.Helper()
	if v, ok := c.PendingInterrupt(vcpu); ok {
		t.Fatalf("vcpu %d: unexpected interrupt %#x", vcpu, v)
	}
}

func irr(a *LAPIC, v uint8) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bit(regIRR, v)
}
