package accel_test

import (
	"errors"
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/accel"
	"github.com/godwit-vmm/godwit/internal/hv"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]string{"": "auto", "auto": "auto", "kvm": "kvm", "emu": "emu"} {
		if got, err := accel.Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := accel.Parse("tcg"); err == nil {
		t.Error("Parse(tcg) accepted")
	}
}

// program is real-mode code at 0x1000: out 0x10 ← 0x42; in al ← 0x11;
// out 0x12 ← al; then a store to 0x3000 and out 0x13; hlt.
var program = []byte{
	0xb0, 0x42, // mov al, 0x42
	0xe6, 0x10, // out 0x10, al
	0xe4, 0x11, // in al, 0x11
	0xe6, 0x12, // out 0x12, al
	0xc6, 0x06, 0x00, 0x30, 0x99, // mov byte [0x3000], 0x99
	0xe6, 0x13, // out 0x13, al
	0xf4, // hlt
}

// TestBackendContract runs the same program through the hv seam on every
// backend this host has: the exits, the completion of an IN on the next
// run, immediate exit, and the dirty log behave alike.
func TestBackendContract(t *testing.T) {
	for _, name := range []string{accel.KVM, accel.Emu} {
		t.Run(name, func(t *testing.T) {
			if name == accel.KVM {
				testenv.RequireKVM(t)
			}
			runContract(t, name)
		})
	}
}

func runContract(t *testing.T, name string) {
	h, err := accel.Open(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Name() != name {
		t.Fatalf("opened %q, asked for %q", h.Name(), name)
	}
	vm, err := h.CreateVM(1)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	ram, err := unix.Mmap(-1, 0, 2<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(ram)
	copy(ram[0x1000:], program)
	if err := vm.SetMemoryRegion(0, 0, ram); err != nil {
		t.Fatal(err)
	}

	// A vCPU lives on one locked thread.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		errc <- onVCPUThread(t, vm, ram)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// onVCPUThread runs the program on vCPU 0; fatal problems are returned,
// the rest reported with t.Errorf.
func onVCPUThread(t *testing.T, vm hv.VM, ram []byte) error {
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		return err
	}
	defer cpu.Close()
	sregs, err := cpu.GetSregs2()
	if err != nil {
		return err
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	sregs.DS.Base, sregs.DS.Selector = 0, 0
	if err := cpu.SetSregs2(sregs); err != nil {
		return err
	}
	if err := cpu.SetRegs(hv.Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		return err
	}
	expectOut := func(port uint16, val byte) error {
		ex, err := cpu.Run()
		for errors.Is(err, hv.ErrInterrupted) {
			ex, err = cpu.Run()
		}
		if err != nil || ex != hv.ExitIO {
			return fmt.Errorf("run: exit %d, %v; want port I/O", ex, err)
		}
		io := cpu.IO()
		if !io.Out || io.Port != port || io.Size != 1 || len(io.Data) != 1 || io.Data[0] != val {
			return fmt.Errorf("exit %+v, want out %#x <- %#x", io, port, val)
		}
		return nil
	}
	if err := expectOut(0x10, 0x42); err != nil {
		return err
	}
	ex, err := cpu.Run()
	if err != nil || ex != hv.ExitIO || cpu.IO().Out || cpu.IO().Port != 0x11 {
		return fmt.Errorf("want in from 0x11: exit %d %+v, %v", ex, cpu.IO(), err)
	}
	cpu.IO().Data[0] = 0x77 // the VMM's answer, taken by the next run
	if err := expectOut(0x12, 0x77); err != nil {
		return fmt.Errorf("after the IN: %w", err)
	}

	// Immediate exit: the run returns at once, the guest does not move.
	regs, _ := cpu.GetRegs()
	cpu.SetImmediateExit(true)
	if _, err := cpu.Run(); !errors.Is(err, hv.ErrInterrupted) {
		t.Errorf("run with immediate exit: %v, want ErrInterrupted", err)
	}
	cpu.SetImmediateExit(false)
	if r2, _ := cpu.GetRegs(); r2.RIP != regs.RIP {
		t.Errorf("RIP moved from %#x to %#x under immediate exit", regs.RIP, r2.RIP)
	}

	// The dirty log: on, every page dirty; cleared, the guest's store to
	// 0x3000 marks page 3 again.
	if err := vm.StartDirtyLog(); err != nil {
		return err
	}
	defer vm.StopDirtyLog()
	bits := make([]uint64, 512/64)
	if err := vm.GetDirtyLog(0, bits); err != nil {
		return err
	}
	if bits[0] != ^uint64(0) {
		t.Errorf("dirty log right after start: %#x, want every page", bits[0])
	}
	all := make([]uint64, len(bits))
	for i := range all {
		all[i] = ^uint64(0)
	}
	if err := vm.ClearDirtyLog(0, 0, 512, all); err != nil {
		return err
	}
	if err := expectOut(0x13, 0x77); err != nil {
		return err
	}
	clear(bits)
	vm.GetDirtyLog(0, bits)
	if bits[0]&(1<<3) == 0 {
		t.Errorf("the guest's store to page 3 is not in the dirty log: %#x", bits[0])
	}
	if ram[0x3000] != 0x99 {
		t.Errorf("guest store: RAM at 0x3000 = %#x", ram[0x3000])
	}
	return nil
}
