package vm_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/arch/x86/x86test"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/testenv"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// bootTimeout allows for the emulating KVM of CI machines.
const bootTimeout = 60 * time.Second

// startGuest boots the test guest in-process and waits for READY.
// vmName turns a test's name into a valid VM name (package limits).
func vmName(test string) string {
	b := []byte(strings.ToLower(test))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b[:min(len(b), 63)])
}

func startGuest(t *testing.T, cfg vm.Config) (*vm.VM, *guest.Console) {
	t.Helper()
	testenv.RequireVM(t)
	cfg.Kernel = testenv.GuestELF(t)
	if cfg.Name == "" {
		cfg.Name = vmName(t.Name())
	}
	if cfg.MemBytes == 0 {
		cfg.MemBytes = 128 << 20
	}
	if cfg.VCPUs == 0 {
		cfg.VCPUs = 1
	}
	cfg.Cmdline = strings.TrimSpace(fmt.Sprintf("cpus=%d %s", cfg.VCPUs, cfg.Cmdline))
	con := guest.NewConsole(nil)
	cfg.Console = con
	v, err := vm.New(cfg, testenv.Logger(t))
	if err != nil {
		t.Fatalf("vm.New: %v", err)
	}
	t.Cleanup(func() {
		v.Stop("test over")
		if t.Failed() {
			lines := con.Lines()
			for _, l := range lines[max(0, len(lines)-30):] {
				t.Logf("console: %s", l.Text)
			}
		}
	})
	if err := v.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if _, err := con.WaitPrefix(ctx, 0, "READY"); err != nil {
		t.Fatalf("guest did not get READY: %v", err)
	}
	return v, con
}

// waitCleanStop waits up to d for v to stop after what (the guest's
// doing) and fails the test unless it stopped without an error; it
// returns the status then.
func waitCleanStop(t *testing.T, v *vm.VM, d time.Duration, what string) vm.Status {
	t.Helper()
	select {
	case <-v.Done():
	case <-time.After(d):
		t.Fatalf("the VM still runs %v after %s", d, what)
	}
	if err := v.Wait(); err != nil {
		t.Errorf("the VM stopped after %s with an error: %v", what, err)
	}
	return v.Status()
}

// command types cmd on the guest console and waits for a line starting with
// reply.
func command(t *testing.T, v *vm.VM, con *guest.Console, cmd, reply string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	mark := con.Mark()
	v.ConsoleInput([]byte(cmd + "\n"))
	line, err := con.WaitPrefix(ctx, mark, reply)
	if err != nil {
		t.Fatalf("%q: no %q reply: %v", cmd, reply, err)
	}
	return line
}

// cpuCounts parses `CPU <seq> <ticks0> <ticks1> ...`.
func cpuCounts(t *testing.T, line string) []uint64 {
	t.Helper()
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "CPU" {
		t.Fatalf("bad CPU line %q", line)
	}
	var n []uint64
	for _, s := range f[2:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("bad CPU line %q", line)
		}
		n = append(n, v)
	}
	return n
}

func TestBootHeartbeatsEveryVCPU(t *testing.T) {
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("vcpus=%d", n), func(t *testing.T) {
			v, con := startGuest(t, vm.Config{VCPUs: n})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			first, err := con.WaitPrefix(ctx, 0, "CPU ")
			if err != nil {
				t.Fatal(err)
			}
			start := len(con.Heartbeats())
			if err := con.WaitHeartbeats(ctx, start+100); err != nil {
				t.Fatal(err)
			}
			last, _ := con.WaitPrefix(ctx, con.Mark()-1, "CPU ")
			a, b := cpuCounts(t, first), cpuCounts(t, last)
			if len(a) != n || len(b) != n {
				t.Fatalf("CPU lines list %d/%d vCPUs, want %d", len(a), len(b), n)
			}
			for i := range n {
				if b[i] <= a[i] {
					t.Errorf("vcpu %d timer ticks did not advance: %d then %d", i, a[i], b[i])
				}
			}
			hbs := con.Heartbeats()
			g := guest.CheckHeartbeats(hbs)
			if len(g.SeqErrors) > 0 {
				t.Errorf("heartbeat sequence broken: %v", g.SeqErrors)
			}
			// 100 heartbeats at 10 ms: the guest's timer runs at 100 Hz,
			// never faster. A starved vCPU (a loaded machine, the
			// interpreter under -race) loses ticks, so only a timer
			// many times too slow is an error here.
			span := hbs[len(hbs)-1].At.Sub(hbs[start].At)
			t.Logf("100 heartbeats took %v", span)
			if span < 700*time.Millisecond || span > 8*time.Second {
				t.Errorf("100 heartbeats took %v, want about 1 s", span)
			}
			if s := v.Status(); s.State != vm.StateRunning || s.VCPUs != n {
				t.Errorf("status = %+v", s)
			}
		})
	}
}

func TestPauseResumeKeepsHeartbeatSequence(t *testing.T) {
	v, con := startGuest(t, vm.Config{VCPUs: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := con.WaitHeartbeats(ctx, 20); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	pauseTook := time.Since(t0)
	// Pausing kicks the vCPUs out and waits for each to acknowledge; it
	// waits on no timer or guest tick, so it takes milliseconds unloaded.
	// Only a pause stuck until something else happens takes seconds; a
	// loaded machine under -race takes hundreds of milliseconds.
	if pauseTook > 5*time.Second {
		t.Errorf("pause took %v, want milliseconds", pauseTook)
	}
	if s := v.Status(); s.State != vm.StatePaused {
		t.Fatalf("state after pause = %s", s.State)
	}
	before := len(con.Heartbeats())
	time.Sleep(300 * time.Millisecond)
	// A line in flight in the UART's output buffer may still land.
	if after := len(con.Heartbeats()); after > before+1 {
		t.Fatalf("%d heartbeats arrived while paused", after-before)
	}
	if err := v.Resume(); err != nil {
		t.Fatal(err)
	}
	n := len(con.Heartbeats())
	if err := con.WaitHeartbeats(ctx, n+50); err != nil {
		t.Fatal(err)
	}
	g := guest.CheckHeartbeats(con.Heartbeats())
	if len(g.SeqErrors) > 0 {
		t.Errorf("heartbeat sequence broken across pause: %v", g.SeqErrors)
	}
	if g.LongestGap < 250*time.Millisecond {
		t.Errorf("longest heartbeat gap %v: the pause did not stop the guest", g.LongestGap)
	}
	t.Logf("pause took %v; longest heartbeat gap %v", pauseTook, g.LongestGap)
}

func TestWorkloadVerify(t *testing.T) {
	v, con := startGuest(t, vm.Config{VCPUs: 2, MemBytes: 256 << 20})
	command(t, v, con, "W 32 32 0", "ACK W 32 32 0", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Let the workload sweep the working set at least once.
	mark := len(con.Heartbeats())
	if err := con.WaitHeartbeats(ctx, mark+200); err != nil {
		t.Fatal(err)
	}
	hbs := con.Heartbeats()
	if d := hbs[len(hbs)-1].Dirtied; d < 8192 {
		t.Fatalf("workload dirtied only %d pages in 2 s", d)
	}
	line := command(t, v, con, "V", "VERIFY ", 120*time.Second)
	if !strings.HasPrefix(line, "VERIFY OK") {
		t.Fatalf("verify: %s", line)
	}
	t.Logf("%s; %d pages dirtied", line, hbs[len(hbs)-1].Dirtied)
}

// TestLoopCommand runs each fixed instruction loop of the guest's LOOP
// command (the CPU benchmark's yardstick) on both vCPUs: every vCPU must
// report its own time for the same instruction count.
func TestLoopCommand(t *testing.T) {
	v, con := startGuest(t, vm.Config{VCPUs: 2})
	re := regexp.MustCompile(`^LOOP (\w+) iters=20000 insns=320000 cpus=2 us=(\d+) per_cpu_us=(\d+),(\d+)$`)
	for _, kind := range []string{"int", "mem", "br"} {
		line := command(t, v, con, "LOOP "+kind+" 20000", "LOOP ", 60*time.Second)
		m := re.FindStringSubmatch(line)
		if m == nil || m[1] != kind {
			t.Fatalf("LOOP %s: reply %q", kind, line)
		}
		longest, _ := strconv.ParseUint(m[2], 10, 64)
		a, _ := strconv.ParseUint(m[3], 10, 64)
		b, _ := strconv.ParseUint(m[4], 10, 64)
		if a == 0 || b == 0 || longest != max(a, b) {
			t.Errorf("LOOP %s: times %d and %d µs, longest %d", kind, a, b, longest)
		}
		t.Log(line)
	}
	for _, bad := range []string{"LOOP", "LOOP fpu 10", "LOOP int 0", "LOOP int x"} {
		if line := command(t, v, con, bad, "ERR", 10*time.Second); !strings.HasPrefix(line, "ERR bad arguments LOOP") {
			t.Errorf("%q: %q", bad, line)
		}
	}
}

// TestVerifyDetectsCorruption proves the oracle can fail: one page whose
// stamp the guest itself damages must be reported.
func TestVerifyDetectsCorruption(t *testing.T) {
	v, con := startGuest(t, vm.Config{MemBytes: 128 << 20})
	command(t, v, con, "W 8 8 0", "ACK W 8 8 0", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := con.WaitHeartbeats(ctx, len(con.Heartbeats())+100); err != nil {
		t.Fatal(err)
	}
	command(t, v, con, "WPAUSE", "WPAUSE OK", 30*time.Second)
	command(t, v, con, "POKE 0x1003000", "POKE", 30*time.Second)
	line := command(t, v, con, "V", "VERIFY ", 120*time.Second)
	if !strings.HasPrefix(line, "VERIFY FAIL") {
		t.Fatalf("verify after corrupting a page: %s", line)
	}
}

// TestDiskRoundTrip writes blocks from the guest, reads them back in the
// guest, and checks the image file on the host holds exactly the pattern.
func TestDiskRoundTrip(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	v, con := startGuest(t, vm.Config{Disk: &vm.DiskConfig{Path: img}})
	if line := command(t, v, con, "BLKW 100 64 7", "BLKW ", 60*time.Second); !strings.HasPrefix(line, "BLKW OK") {
		t.Fatalf("guest write: %s", line)
	}
	if line := command(t, v, con, "BLKV 100 64 7", "BLKV ", 60*time.Second); !strings.HasPrefix(line, "BLKV OK") {
		t.Fatalf("guest read back: %s", line)
	}
	// Another seed elsewhere must not verify as this one.
	if line := command(t, v, con, "BLKV 100 64 8", "BLKV ", 60*time.Second); !strings.HasPrefix(line, "BLKV FAIL") {
		t.Fatalf("wrong seed verified: %s", line)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, guest.SectorSize)
	for s := uint64(100); s < 164; s++ {
		if _, err := f.ReadAt(buf, int64(s*guest.SectorSize)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, guest.Sector(7, s)) {
			t.Fatalf("image sector %d does not hold what the guest wrote", s)
		}
	}
	// Untouched sectors stay zero.
	f.ReadAt(buf, 99*guest.SectorSize)
	if !bytes.Equal(buf, make([]byte, guest.SectorSize)) {
		t.Error("sector 99 was written")
	}
	if st := v.Status(); !strings.Contains(fmt.Sprint(st.Devices), "virtio-blk") {
		t.Errorf("status lacks the disk: %+v", st.Devices)
	}
	// A second VM on the same image is refused: the image lock.
	_, err = vm.New(vm.Config{Name: "second", Kernel: testenv.GuestELF(t), MemBytes: 64 << 20, VCPUs: 1,
		Disk: &vm.DiskConfig{Path: img}}, testenv.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "in use by another VM") {
		t.Errorf("second VM on a locked disk: %v", err)
	}
}

// TestGuestFaultIsReported: a guest that executes something the VM cannot
// run (int3 with no IDT: a triple fault on hardware KVM; an instruction
// the emulator lacks on an emulating KVM) must stop the VM with an error
// that names where, never hang.
func TestGuestFaultIsReported(t *testing.T) {
	testenv.RequireVM(t)
	k := filepath.Join(t.TempDir(), "int3.elf")
	if err := os.WriteFile(k, x86test.Kernel([]byte{0x90, 0x90, 0xcc, 0xf4}), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := vm.New(vm.Config{Name: "fault", Kernel: k, MemBytes: 32 << 20, VCPUs: 1}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop("test over")
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("VM still running 20 s after a fatal guest fault")
	}
	st := v.Status()
	msg := st.Error + st.Stopped
	t.Logf("stopped: %s", msg)
	if !strings.Contains(msg, "rip 0x10000") {
		t.Errorf("report does not name the guest RIP: %q", msg)
	}
	if strings.Contains(msg, "KVM internal error") && !strings.Contains(msg, "cc") {
		t.Errorf("emulation failure without the instruction bytes: %q", msg)
	}
}

// TestLargeMemory boots a guest with RAM above 4 GiB (a second memory
// slot past the MMIO hole) and checks the guest sees and uses it.
func TestLargeMemory(t *testing.T) {
	v, con := startGuest(t, vm.Config{MemBytes: 8 << 30, VCPUs: 2})
	lines := con.Lines()
	high := false
	for _, l := range lines {
		if strings.HasPrefix(l.Text, "MEM ram 0x100000000-") {
			high = true
		}
	}
	if !high {
		t.Fatalf("guest does not report RAM at 4 GiB: %v", lines[:min(len(lines), 8)])
	}
	// The guest's own check of the page it stamps there.
	command(t, v, con, "W 3100 0 0", "ACK W 3100 0 0", 120*time.Second)
	line := command(t, v, con, "V", "VERIFY ", 120*time.Second)
	if !strings.HasPrefix(line, "VERIFY OK") {
		t.Fatalf("verify over RAM past 4 GiB: %s", line)
	}
	if s := v.Status(); s.MemMiB != 8<<10 {
		t.Errorf("status memory %d MiB", s.MemMiB)
	}
}

// byteCounter counts what the guest prints.
type byteCounter struct{ n atomic.Int64 }

func (b *byteCounter) Write(p []byte) (int, error) { b.n.Add(int64(len(p))); return len(p), nil }

// TestDeadlineFences: once its deadline has passed the VM handles no
// further vCPU exit: the guest, printing a heartbeat every 10 ms, prints
// nothing more (at most the byte each vCPU was emitting), and the VM
// stops with a fence reason.
func TestDeadlineFences(t *testing.T) {
	testenv.RequireVM(t)
	con := guest.NewConsole(nil)
	var printed byteCounter
	cfg := vm.Config{Name: "fence", Kernel: testenv.GuestELF(t), MemBytes: 128 << 20, VCPUs: 2, Cmdline: "cpus=2",
		Console: io.MultiWriter(con, &printed)}
	v, err := vm.New(cfg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Stop("test over") })
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	v.SetDeadline(ts.Nano() + int64(time.Hour)) // far away: no effect
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := con.WaitHeartbeats(ctx, 20); err != nil {
		t.Fatal(err)
	}
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	v.SetDeadline(ts.Nano())
	at := printed.n.Load()
	select {
	case <-v.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the VM still runs 5 s after its deadline")
	}
	time.Sleep(100 * time.Millisecond)
	// The UART hands output to the console on its own goroutine, so what
	// the guest wrote just before the deadline may arrive after it: allow
	// that (a line per vCPU) and one exit per vCPU in flight. The stop
	// above proves the fence; this bounds what leaks past it.
	if extra := printed.n.Load() - at; extra > int64(cfg.VCPUs)*32 {
		t.Errorf("the guest printed %d bytes after its deadline", extra)
	}
	if r := v.Status().Stopped; !strings.Contains(r, "fence") {
		t.Errorf("stop reason %q, want the fence", r)
	}
}
