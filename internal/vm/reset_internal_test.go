package vm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

// TestRebootDeferredByPause: a guest reset that finds the VM paused (a
// user's pause, or a migration's switchover, between the guest's request
// and the reboot) is not lost: the VM reboots when it resumes, and a
// migration's destination reboots it when it starts.
func TestRebootDeferredByPause(t *testing.T) {
	testenv.RequireVM(t)
	cfg := Config{Name: "deferred", Kernel: testenv.GuestELF(t), MemBytes: 64 << 20, VCPUs: 2, Cmdline: "cpus=2"}
	boot := func(v *VM, con *guest.Console, mark int, what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := con.WaitPrefix(ctx, mark, "READY"); err != nil {
			t.Fatalf("%s: no READY: %v; status %+v", what, err, v.Status())
		}
	}
	con := guest.NewConsole(nil)
	cfg.Console = con
	v, err := New(cfg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop("test over")
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	boot(v, con, 0, "first boot")

	// Here: the reset arrives while the VM is paused, and Resume runs it.
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	v.rebooting.Store(true)
	v.reboot("test")
	if !v.resetPending.Load() || v.reboots.Load() != 0 {
		t.Fatalf("a reset while paused: pending %v, %d reboots; want deferred", v.resetPending.Load(), v.reboots.Load())
	}
	mark := con.Mark()
	if err := v.Resume(); err != nil {
		t.Fatal(err)
	}
	boot(v, con, mark, "reboot deferred to Resume")
	if n := v.Status().Reboots; n != 1 {
		t.Errorf("%d reboots after Resume, want 1", n)
	}

	// Again, but the VM leaves by migration while paused: the state
	// says so, and the destination reboots the VM when it starts.
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	v.rebooting.Store(true)
	v.reboot("test")
	ms, err := v.SaveState(v.info)
	if err != nil {
		t.Fatal(err)
	}
	if !ms.ResetPending {
		t.Fatal("the saved state does not carry the deferred reset")
	}
	enc, err := ms.Encode()
	if err != nil {
		t.Fatal(err)
	}
	v.Stop("migrated")
	got, err := DecodeMachineState(enc)
	if err != nil {
		t.Fatal(err)
	}
	dcon := guest.NewConsole(nil)
	dcfg := cfg
	dcfg.Name, dcfg.Console = "deferred-dst", dcon
	d, err := NewIncoming(dcfg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop("test over")
	// RAM is not copied: the reboot loads the kernel anew.
	if err := d.RestoreState(got); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	boot(d, dcon, 0, "reboot deferred to the destination's Start")
	if n := d.Status().Reboots; n != 1 {
		t.Errorf("%d reboots on the destination, want 1", n)
	}

	// A destination that was not told what the VM boots says so.
	ncfg := dcfg
	ncfg.Name, ncfg.Kernel = "deferred-nokernel", ""
	n, err := NewIncoming(ncfg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop("test over")
	if err := n.RestoreState(got); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err == nil || !strings.Contains(err.Error(), "--kernel") {
		t.Errorf("Start of a VM to reboot without a kernel = %v, want an error naming --kernel", err)
	}
}
