package emu

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/emu/cpu"
	"github.com/godwit-vmm/godwit/internal/hv"
)

func newVM(t *testing.T, vcpus int, mib int) (*VM, []byte) {
	t.Helper()
	h, _ := Open()
	hvm, err := h.CreateVM(vcpus)
	if err != nil {
		t.Fatal(err)
	}
	v := hvm.(*VM)
	t.Cleanup(func() { v.Close() })
	ram, err := unix.Mmap(-1, 0, mib<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(ram) })
	if err := v.SetMemoryRegion(0, 0, ram); err != nil {
		t.Fatal(err)
	}
	return v, ram
}

// TestDirtyLogContract: KVM's manual-protect contract with INITIALLY_SET.
func TestDirtyLogContract(t *testing.T) {
	v, _ := newVM(t, 1, 4)
	pages := 4 << 20 >> 12
	bits := make([]uint64, pages/64)
	if err := v.StartDirtyLog(); err != nil {
		t.Fatal(err)
	}
	v.GetDirtyLog(0, bits)
	for i, w := range bits {
		if w != ^uint64(0) {
			t.Fatalf("after start, word %d = %#x: every page must be dirty", i, w)
		}
	}
	v.GetDirtyLog(0, bits) // reading does not clear
	if bits[3] != ^uint64(0) {
		t.Fatal("reading the log cleared it")
	}
	if err := v.ClearDirtyLog(0, 64, 64, []uint64{0b101}); err != nil {
		t.Fatal(err)
	}
	clear(bits)
	v.GetDirtyLog(0, bits)
	if bits[1] != ^uint64(0b101) || bits[0] != ^uint64(0) {
		t.Fatalf("clear of pages 64 and 66: words %#x %#x", bits[0], bits[1])
	}
	if err := v.ClearDirtyLog(0, 3, 64, bits); err == nil {
		t.Error("a first page not a multiple of 64 was accepted")
	}
	if err := v.GetDirtyLog(7, bits); err == nil {
		t.Error("an unknown slot was accepted")
	}
}

// TestClock: the guest clock advances with the realtime that passed, as
// KVM_SET_CLOCK with KVM_CLOCK_REALTIME does, and the flags say so.
func TestClock(t *testing.T) {
	v, _ := newVM(t, 1, 2)
	c, _ := v.GetClock()
	if c.Flags&hv.ClockRealtime == 0 || c.Flags&hv.ClockHostTSC == 0 {
		t.Fatalf("flags %#x lack REALTIME|HOST_TSC", c.Flags)
	}
	src := hv.ClockData{Clock: 5e9, Flags: hv.ClockRealtime, Realtime: uint64(time.Now().Add(-time.Second).UnixNano())}
	if err := v.SetClock(src); err != nil {
		t.Fatal(err)
	}
	got, _ := v.GetClock()
	if d := int64(got.Clock) - 6e9; d < 0 || d > int64(500*time.Millisecond) {
		t.Errorf("clock %d ns after a set of 5 s one second ago, want ~6 s", got.Clock)
	}
}

// TestVCPUState: the state an incoming migration sets must fit the
// software CPU or be refused, and round-trip when it fits.
func TestVCPUState(t *testing.T) {
	v, _ := newVM(t, 2, 2)
	c0, err := v.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := v.CreateVCPU(1)
	if s, _ := c0.GetMPState(); s != hv.MPStateRunnable {
		t.Errorf("BSP MP state %d, want runnable", s)
	}
	if s, _ := c1.GetMPState(); s != hv.MPStateUninitialized {
		t.Errorf("AP MP state %d, want uninitialized (waiting for INIT/SIPI)", s)
	}
	if _, err := v.CreateVCPU(2); err == nil {
		t.Error("a third vCPU of a two-vCPU VM was created")
	}

	ids := cpu.SupportedCPUID()
	bad := append([]hv.CPUIDEntry2(nil), ids...)
	for i := range bad {
		if bad[i].Function == 1 {
			bad[i].ECX |= 1 << 28 // AVX
		}
	}
	if err := c0.SetCPUID2(bad); err == nil || !strings.Contains(err.Error(), "does not implement") {
		t.Errorf("CPUID advertising AVX: %v, want a refusal", err)
	}
	if err := c0.SetCPUID2(ids); err != nil {
		t.Errorf("its own CPUID refused: %v", err)
	}

	var x hv.XCRs
	x[0] = 1
	x[16] = 7 // XCR0 = x87|SSE|AVX
	if err := c0.SetXCRs(x); err == nil {
		t.Error("XCR0 with SSE and AVX accepted")
	}
	good, _ := c0.GetXCRs()
	if err := c0.SetXCRs(good); err != nil {
		t.Error(err)
	}

	if err := c0.SetTSCOffset(1 << 40); err != nil {
		t.Fatal(err)
	}
	m, _ := c0.GetMSRs([]uint32{msrTSC})
	if len(m) != 1 || m[0].Data < 1<<40 {
		t.Errorf("TSC after an offset of 2^40: %v", m)
	}
	if err := c0.SetMSRs([]hv.MSREntry{{Index: 0xdeadbeef, Data: 1}}); err == nil {
		t.Error("an unknown MSR was set")
	}
	lapic, _ := c0.GetLAPIC()
	if err := c0.SetLAPIC(lapic); err != nil {
		t.Error(err)
	}
	if khz, _ := c0.TSCKHz(); khz != TSCKHz {
		t.Errorf("TSC %d kHz, want %d", khz, TSCKHz)
	}
}

// TestDeviceWriteInvalidatesCode: code a device overwrites (DMA, here a
// write straight into guest RAM reported with DeviceWrote) runs in its new
// form, not as the instructions decoded before.
func TestDeviceWriteInvalidatesCode(t *testing.T) {
	v, ram := newVM(t, 1, 2)
	copy(ram[0x1000:], []byte{0xb0, 0x01, 0xe6, 0x10, 0xf4}) // mov al, 1; out 0x10, al; hlt
	c, err := v.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := c.GetSregs2()
	s.CS.Base, s.CS.Selector = 0, 0
	if err := c.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	out := func() byte {
		t.Helper()
		c.SetRegs(hv.Regs{RIP: 0x1000, RFLAGS: 2})
		ex, err := c.Run()
		if err != nil || ex != hv.ExitIO || !c.IO().Out {
			t.Fatalf("run: exit %d %+v, %v", ex, c.IO(), err)
		}
		return c.IO().Data[0]
	}
	if got := out(); got != 1 {
		t.Fatalf("first run wrote %d, want 1", got)
	}
	ram[0x1001] = 2 // the device's write
	v.DeviceWrote(0x1001, 1)
	if got := out(); got != 2 {
		t.Errorf("after the device rewrote the code the guest wrote %d, want 2 (stale decoded instruction)", got)
	}
}

// TestKickEndsEndlessLoop: a guest spinning with interrupts off (cli; jmp
// $) still leaves Run within milliseconds of a kick, so pause and stop
// answer whatever the guest does; a halted guest with interrupts off too.
func TestKickEndsEndlessLoop(t *testing.T) {
	for name, code := range map[string][]byte{
		"spin": {0xfa, 0xeb, 0xfe},       // cli; jmp $
		"halt": {0xfa, 0xf4, 0xeb, 0xfd}, // cli; hlt; jmp back to the hlt
	} {
		t.Run(name, func(t *testing.T) {
			v, ram := newVM(t, 1, 2)
			copy(ram[0x1000:], code)
			errc := make(chan error, 1)
			started := make(chan hv.VCPU, 1)
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				c, err := v.CreateVCPU(0)
				if err != nil {
					errc <- err
					return
				}
				s, _ := c.GetSregs2()
				s.CS.Base, s.CS.Selector = 0, 0
				c.SetSregs2(s)
				c.SetRegs(hv.Regs{RIP: 0x1000, RFLAGS: 2})
				started <- c
				_, err = c.Run()
				errc <- err
			}()
			c := <-started
			time.Sleep(50 * time.Millisecond)
			kicked := time.Now()
			c.Kick()
			select {
			case err := <-errc:
				if !errors.Is(err, hv.ErrInterrupted) {
					t.Errorf("run ended with %v, want ErrInterrupted", err)
				}
				t.Logf("run returned %v after the kick", time.Since(kicked))
			case <-time.After(5 * time.Second):
				t.Fatal("run did not return within 5 s of a kick")
			}
		})
	}
}

// TestSregsKeepAPICEnabled: GetSregs2 then SetSregs2 (what a VMM does to
// set a boot state) leaves the LAPIC enabled at its base, as KVM's
// apic_base round trip does; a guest that never writes IA32_APIC_BASE
// (Linux on x86-64) then finds its APIC.
func TestSregsKeepAPICEnabled(t *testing.T) {
	v, _ := newVM(t, 1, 4)
	c0, err := v.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := c0.GetSregs2()
	if s.APICBase&(1<<11) == 0 || s.APICBase&^0xfff != 0xfee00000 {
		t.Fatalf("apic_base %#x: want 0xfee00000 with the enable bit", s.APICBase)
	}
	if err := c0.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	if got, _ := c0.GetSregs2(); got.APICBase != s.APICBase {
		t.Fatalf("apic_base %#x after the round trip, want %#x", got.APICBase, s.APICBase)
	}
	if v, ok := v.chips.MMIORead(0, 0xfee00030, 4); !ok || v&0xff == 0 {
		t.Fatalf("LAPIC version register: %#x %v: the APIC does not answer", v, ok)
	}
}
