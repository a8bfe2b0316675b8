package vm_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/vm"
)

// TestGuestReboot: a guest that resets the machine boots again in the same
// VM: every vCPU comes back (the APs by SIPI, so they were reset to
// wait-for-SIPI), RAM the old guest wrote reads as zeros, the disk keeps
// what was written, and the VM counts the reboot. Twice, so a reset VM
// resets too.
func TestGuestReboot(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	v, con := startGuest(t, vm.Config{VCPUs: 2, MemBytes: 64 << 20, Disk: &vm.DiskConfig{Path: img}})
	if line := command(t, v, con, "BLKW 8 16 5", "BLKW ", time.Minute); !strings.HasPrefix(line, "BLKW OK") {
		t.Fatalf("guest write: %s", line)
	}
	// The workload stamps pages of its buffer, from 16 MiB up.
	command(t, v, con, "W 8 8 0", "ACK W", time.Minute)
	const probe = 16<<20 + 4096
	page := make([]byte, 4096)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if err := v.Memory().ReadAt(page, probe); err != nil {
			t.Fatal(err)
		}
		if !isZero(page) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the workload left the page at %#x zero: nothing to prove", probe)
		}
	}
	for round := 1; round <= 2; round++ {
		mark := con.Mark()
		v.ConsoleInput([]byte("REBOOT\n"))
		ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
		if _, err := con.WaitPrefix(ctx, mark, "REBOOT"); err != nil {
			t.Fatalf("no REBOOT line: %v", err)
		}
		banner, err := con.WaitPrefix(ctx, mark, "GODWIT-GUEST v1 ")
		if err != nil {
			t.Fatalf("reboot %d: the guest did not boot again: %v", round, err)
		}
		if _, err := con.WaitPrefix(ctx, mark, "READY"); err != nil {
			t.Fatalf("reboot %d: no READY: %v", round, err)
		}
		cancel()
		st := v.Status()
		t.Logf("reboot %d: %s; status %s, %d reboots", round, banner, st.State, st.Reboots)
		if st.State != vm.StateRunning || st.Reboots != int64(round) {
			t.Errorf("after reboot %d: state %s, %d reboots", round, st.State, st.Reboots)
		}
		if line := command(t, v, con, "STATUS", "STATUS ", 30*time.Second); !strings.HasPrefix(line, "STATUS cpus=2 ") {
			t.Errorf("after reboot %d: %s, want both CPUs online", round, line)
		}
		if err := v.Memory().ReadAt(page, probe); err != nil {
			t.Fatal(err)
		}
		if !isZero(page) {
			t.Errorf("after reboot %d the old workload's page at %#x still holds data", round, probe)
		}
		if line := command(t, v, con, "BLKV 8 16 5", "BLKV ", time.Minute); !strings.HasPrefix(line, "BLKV OK") {
			t.Errorf("after reboot %d the disk lost what was written: %s", round, line)
		}
		command(t, v, con, "W 8 8 0", "ACK W", time.Minute)
		if line := command(t, v, con, "V", "VERIFY ", time.Minute); !strings.HasPrefix(line, "VERIFY OK") {
			t.Errorf("after reboot %d: %s", round, line)
		}
	}
	// The test guest's OFF writes the power-off port, then resets in
	// case that port is missing: the reset must not turn the power-off
	// into a reboot, nor into an error.
	v.ConsoleInput([]byte("OFF\n"))
	if st := waitCleanStop(t, v, 30*time.Second, "the guest powered off"); !strings.Contains(st.Stopped, "powered off") || st.Reboots != 2 {
		t.Errorf("status after power-off: %+v", st)
	}
}

// TestGuestRebootStops: with OnReboot "stop" a guest reset ends the VM
// cleanly, as QEMU's -no-reboot does.
func TestGuestRebootStops(t *testing.T) {
	v, con := startGuest(t, vm.Config{OnReboot: vm.RebootStop})
	v.ConsoleInput([]byte("REBOOT\n"))
	if st := waitCleanStop(t, v, 30*time.Second, "the guest reset it"); !strings.Contains(st.Stopped, "guest reset") || st.Reboots != 0 {
		t.Errorf("status %+v, want stopped by the guest reset", st)
	}
	time.Sleep(200 * time.Millisecond)
	ready := 0
	for _, l := range con.Lines() {
		if strings.HasPrefix(l.Text, "READY") {
			ready++
		}
	}
	if ready != 1 {
		t.Errorf("%d READY lines: the guest booted again", ready)
	}
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
