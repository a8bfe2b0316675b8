package conformance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/testenv"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// cases is every case the guest must report, in its order (guest/conform,
// the CASE tables of cases_*.c).
var cases = []string{
	// cases_modes.c
	"mode-compat-roundtrip",
	"mode-protected32-roundtrip",
	"mode-protected16-roundtrip",
	"mode-real-roundtrip",
	"mode-real-repeated",
	// cases_paging.c
	"paging-4k",
	"paging-2m",
	"paging-1g",
	"paging-accessed-dirty",
	"paging-32bit-pse-4m",
	"paging-pae-2m",
	"pf-not-present",
	"pf-write-protect-wp1",
	"pf-write-protect-wp0",
	"pf-user-supervisor",
	"pf-user-readonly",
	"pf-nx-fetch",
	"pf-reserved-bit",
	"tlb-invlpg",
	"tlb-cr3-reload",
	"tlb-global-survives-cr3",
	"tlb-pge-toggle-flushes",
	// cases_exc.c
	"exc-de-div0",
	"exc-de-overflow",
	"exc-db-single-step",
	"exc-bp-int3",
	"exc-of-into-compat",
	"exc-br-bound-compat",
	"exc-ud-ud2",
	"exc-ud-invalid-opcode",
	"exc-np-segment",
	"exc-np-idt-gate",
	"exc-ss-noncanonical",
	"exc-ss-not-present",
	"exc-gp-noncanonical",
	"exc-gp-bad-selector",
	"exc-gp-cpl3-privileged",
	"exc-gp-int-dpl0-gate",
	"exc-ac-alignment",
	"exc-df-np-on-gp-gate",
	"exc-ts-ist-beyond-tss-limit",
	"int80-cpl3-roundtrip",
	"tss-rsp0-on-fault",
	"ist-at-cpl0",
	"syscall-sysret",
	"sysenter-sysexit",
	"sti-hlt-wakes",
	"sti-shadow-one-insn",
	"movss-shadow-single-step",
	// cases_smp.c
	"smp-sipi-all-aps",
	"smp-lock-add",
	"smp-lock-xadd",
	"smp-lock-cmpxchg",
	"smp-lock-narrow-split",
	"smp-xchg-spinlock",
	"smc-same-page",
	"smc-next-instruction",
	"smc-alias",
	"smc-cross-modify",
	"smc-cross-modify-concurrent",
	"ipi-fixed-each-ap",
	"ipi-self",
	"ipi-broadcast",
	"ipi-nmi",
	// cases_timer.c
	"lapic-timer-oneshot",
	"lapic-timer-periodic",
	"lapic-timer-divide",
	"pit-ch0-irq0-via-pic",
	"pit-latch-countdown",
	"pit-ch2-gate-out2",
	"pic-irr-isr-eoi",
	"pic-mask",
}

const (
	vcpus   = 4
	memMiB  = 64
	cmdline = "cpus=4"
	// runTimeout bounds a whole guest run: it takes about a second on the
	// software CPU, CI runs it under -race on two shared cores.
	runTimeout = 2 * time.Minute
	// offTimeout is how long the guest may take to power off after DONE.
	offTimeout = 10 * time.Second
)

// outcome is one case's line.
type outcome struct {
	pass bool
	line string
	took time.Duration // since the previous line: the case's run time
}

// report is what a guest run printed.
type report struct {
	header string // "CONFORM v1 cpus=<n>"
	done   string // "DONE pass=<p> fail=<f>"
	cases  map[string]outcome
	extra  []string // case lines the table does not know, repeats, other output
	total  time.Duration
}

// parse reads the guest's lines. The header may follow firmware output on
// the same line (QEMU's SeaBIOS prints no newline before it).
func parse(lines []guest.Line) *report {
	r := &report{cases: map[string]outcome{}}
	known := map[string]bool{}
	for _, c := range cases {
		known[c] = true
	}
	var prev, start time.Time
	for _, l := range lines {
		text := l.Text
		if i := strings.Index(text, "CONFORM v1 "); i >= 0 && r.header == "" {
			r.header = text[i:]
			prev, start = l.At, l.At
			continue
		}
		if r.header == "" {
			continue // firmware
		}
		var name string
		pass := false
		switch {
		case strings.HasPrefix(text, "PASS "):
			name, pass = strings.TrimSpace(text[len("PASS "):]), true
		case strings.HasPrefix(text, "FAIL "):
			name, _, _ = strings.Cut(text[len("FAIL "):], ":")
		case strings.HasPrefix(text, "DONE ") && r.done == "":
			r.done = text
			r.total = l.At.Sub(start)
			continue
		default:
			r.extra = append(r.extra, text)
			continue
		}
		if _, dup := r.cases[name]; dup || !known[name] {
			r.extra = append(r.extra, text)
			continue
		}
		r.cases[name] = outcome{pass: pass, line: text, took: l.At.Sub(prev)}
		prev = l.At
	}
	return r
}

// check fails t for what is wrong with the run as a whole: header, DONE
// and its counts, lines the table does not know.
func (r *report) check(t *testing.T, who string) {
	t.Helper()
	if want := fmt.Sprintf("CONFORM v1 cpus=%d", vcpus); r.header != want {
		t.Errorf("%s: header %q, want %q", who, r.header, want)
	}
	pass, fail := 0, 0
	for _, o := range r.cases {
		if o.pass {
			pass++
		} else {
			fail++
		}
	}
	if want := fmt.Sprintf("DONE pass=%d fail=%d", pass, fail); r.done != want {
		t.Errorf("%s: last line %q, want %q (from the case lines)", who, r.done, want)
	}
	for _, l := range r.extra {
		if strings.HasPrefix(l, "PASS ") || strings.HasPrefix(l, "FAIL ") || strings.HasPrefix(l, "PANIC") {
			t.Errorf("%s: unexpected line %q (a case missing from the table, a repeat, or a crash)", who, l)
		} else {
			t.Logf("%s: %s", who, l)
		}
	}
	t.Logf("%s: %d cases passed, %d failed, in %v", who, pass, fail, r.total.Round(time.Millisecond))
}

// ---- Godwit -------------------------------------------------------------

// godwitRun is a Godwit run's outcome.
type godwitRun struct {
	r   *report
	err error  // why the run did not end cleanly (no DONE in time, no power-off, a VM error)
	log string // the VMM's log and the console's tail, for failures
}

// lastGodwit is the latest Godwit run: TestQEMU compares against the run
// TestGodwit just made instead of booting the guest again.
var lastGodwit struct {
	mu  sync.Mutex // guards run
	run *godwitRun
}

// godwit boots the conformance guest on Godwit and returns what it printed,
// or, unless fresh, returns the latest run if there is one.
func godwit(t *testing.T, fresh bool) (*report, error) {
	t.Helper()
	testenv.RequireVM(t)
	elf := testenv.ConformELF(t)
	lastGodwit.mu.Lock()
	defer lastGodwit.mu.Unlock()
	if fresh || lastGodwit.run == nil {
		r, log, err := bootGodwit(elf)
		lastGodwit.run = &godwitRun{r, err, log}
	}
	run := lastGodwit.run
	if run.err != nil {
		t.Logf("godwit log and console tail:\n%s", run.log)
	}
	return run.r, run.err
}

// bootGodwit runs the guest in-process through internal/vm, as
// internal/vm's tests start the test guest.
func bootGodwit(elf string) (*report, string, error) {
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	con := guest.NewConsole(nil)
	v, err := vm.New(vm.Config{
		Name:     "conformance",
		Kernel:   elf,
		MemBytes: memMiB << 20,
		VCPUs:    vcpus,
		Cmdline:  cmdline,
		Console:  con,
	}, log)
	if err != nil {
		return nil, "", fmt.Errorf("vm.New: %w", err)
	}
	defer v.Stop("test over")
	go func() {
		<-v.Done()
		con.Close() // wakes a waiter if the VM dies before DONE
	}()
	if err := v.Start(); err != nil {
		return nil, logs.String(), fmt.Errorf("start: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	_, runErr := con.WaitPrefix(ctx, 0, "DONE ")
	if runErr == nil {
		select {
		case <-v.Done():
			if err := v.Wait(); err != nil {
				runErr = fmt.Errorf("vm stopped with an error after DONE: %w", err)
			}
		case <-time.After(offTimeout):
			runErr = errors.New("guest did not power off after DONE")
		}
	} else if v.Status().Stopped != "" {
		runErr = fmt.Errorf("%w (vm stopped: %s)", runErr, v.Status().Stopped)
	}
	return parse(con.Lines()), logs.String() + consoleTail(con.Lines()), runErr
}

func consoleTail(lines []guest.Line) string {
	var b strings.Builder
	for _, l := range lines[max(0, len(lines)-20):] {
		fmt.Fprintf(&b, "console: %s\n", l.Text)
	}
	return b.String()
}

// TestGodwit runs the conformance guest on Godwit's accelerator (the
// software CPU where /dev/kvm is absent): every case in the table must say
// PASS.
func TestGodwit(t *testing.T) {
	r, err := godwit(t, true)
	if err != nil {
		t.Errorf("godwit run: %v", err)
	}
	if r == nil {
		t.FailNow()
	}
	r.check(t, "godwit")
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			o, ok := r.cases[name]
			switch {
			case !ok:
				t.Errorf("no PASS or FAIL line for %s", name)
			case !o.pass:
				t.Errorf("%s (after %v)", o.line, o.took.Round(time.Microsecond))
			default:
				t.Logf("PASS in %v", o.took.Round(time.Microsecond))
				if ops, ok := smpOps[name]; ok && o.took > 0 {
					// Every vCPU runs ops atomic operations at once.
					t.Logf("%d vCPUs × %d atomic operations each: %.2f million a second per vCPU (%.2f in all)",
						vcpus, ops, float64(ops)/o.took.Seconds()/1e6, float64(ops*vcpus)/o.took.Seconds()/1e6)
				}
			}
		})
	}
}

// smpOps is how many atomic operations each vCPU performs in the SMP
// cases of cases_smp.c (ITERS, NARROW_ITERS × 3, SPIN_ITERS × 2): their
// times, taken from the host's arrival of the PASS lines, give the
// throughput per vCPU.
var smpOps = map[string]int{
	"smp-lock-add":          200000,
	"smp-lock-xadd":         200000,
	"smp-lock-cmpxchg":      200000,
	"smp-lock-narrow-split": 300000,
	"smp-xchg-spinlock":     200000,
}

// ---- QEMU ---------------------------------------------------------------

// bootQEMU runs the guest under QEMU's TCG; the process is killed when the
// test ends.
func bootQEMU(t *testing.T, bin, elf string) (*report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	cmd := exec.CommandContext(ctx, bin,
		"-accel", "tcg", "-cpu", "max", "-smp", fmt.Sprint(vcpus), "-m", fmt.Sprint(memMiB),
		"-nographic", "-no-reboot", "-kernel", elf, "-append", cmdline,
		"-device", "isa-debug-exit,iobase=0xf4,iosize=1",
		"-serial", "stdio", "-display", "none", "-monitor", "none")
	con := guest.NewConsole(nil)
	var stderr testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = con, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() {
		exited <- cmd.Wait()
		con.Close()
	}()
	t.Cleanup(func() {
		cancel() // kills QEMU if it is still running
		<-exited
	})
	_, err := con.WaitPrefix(ctx, 0, "DONE ")
	if err == nil {
		select {
		case werr := <-exited:
			exited <- werr
			// isa-debug-exit: status (0 << 1) | 1 for the guest's outb(0xF4, 0)
			var ee *exec.ExitError
			if !errors.As(werr, &ee) || ee.ExitCode() != 1 {
				err = fmt.Errorf("qemu exited with %v after DONE, want exit status 1 (isa-debug-exit)", werr)
			}
		case <-time.After(offTimeout):
			err = errors.New("guest did not power off QEMU after DONE")
		}
	}
	if err != nil {
		t.Logf("qemu stderr:\n%s%s", stderr.String(), consoleTail(con.Lines()))
	}
	return parse(con.Lines()), err
}

// TestQEMU runs the same guest under QEMU TCG and compares: a case that
// passes on QEMU but not on Godwit fails; one that fails on QEMU only is
// logged, QEMU not being a perfect oracle.
func TestQEMU(t *testing.T) {
	bin := testenv.RequireQEMU(t)
	g, gerr := godwit(t, false)
	if gerr != nil {
		t.Errorf("godwit run: %v", gerr)
	}
	if g == nil {
		t.FailNow()
	}
	q, qerr := bootQEMU(t, bin, testenv.ConformELF(t))
	if qerr != nil {
		t.Errorf("qemu run: %v", qerr)
	}
	q.check(t, "qemu")
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			qo, qok := q.cases[name]
			gout, gok := g.cases[name]
			gline := gout.line
			if !gok {
				gline = "no line from Godwit"
			}
			switch {
			case !qok:
				t.Logf("QEMU reported nothing; Godwit: %s", gline)
			case qo.pass && !gout.pass:
				t.Errorf("passes on QEMU TCG, not on Godwit: %s", gline)
			case !qo.pass && gout.pass:
				t.Logf("fails on QEMU TCG only (logged, not a failure): %s", qo.line)
			case !qo.pass:
				t.Logf("fails on both; QEMU: %s; Godwit: %s", qo.line, gline)
			default:
				t.Logf("passes on both (QEMU %v, Godwit %v)", qo.took.Round(time.Microsecond), gout.took.Round(time.Microsecond))
			}
		})
	}
}
