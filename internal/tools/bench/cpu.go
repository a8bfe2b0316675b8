package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// The CPU benchmark: how fast each VMM's CPU runs the test guest, Godwit
// and QEMU on the same kind of accelerator (the software CPU against TCG,
// or KVM against KVM), 1 GiB, no migration. Per run and per vCPU count
// (1, then 2):
//
//   - `W 64 64 0` (64 MiB rewritten flat out by the BSP): the dirty rate
//     from the heartbeats' page counts over cpuWindow after a second of
//     warm-up;
//   - with 1 vCPU, `V` (recompute and check all 16,384 pages) and the time
//     the guest reports for it;
//   - `LOOP <kind> <iterations>` for each fixed instruction loop (integer,
//     memory, branches: 16 instructions an iteration, guest/src/loops.c),
//     run on every vCPU at once: guest instructions retired per second of
//     each vCPU's own TSC time, per vCPU and summed.

const (
	cpuWorkload = "W 64 64 0"
	cpuWarmup   = time.Second
	cpuWindow   = 3 * time.Second
	// cpuLoopIters keeps each loop near 2 s on the software CPU; TCG and
	// KVM run it in a fraction of that, which the microsecond TSC
	// figures still resolve.
	cpuLoopIters = 5_000_000
)

var (
	cpuVCPUs  = []int{1, 2}
	loopKinds = []string{"int", "mem", "br"}
)

// loopRun is one LOOP reply: per-vCPU instructions and microseconds.
type loopRun struct {
	Kind   string    `json:"kind"`
	Insns  uint64    `json:"insns_per_vcpu"`
	PerCPU []float64 `json:"per_vcpu_us"`
}

// mips is the summed and the mean per-vCPU rate in millions of guest
// instructions per second.
func (l loopRun) mips() (sum, per float64) {
	for _, us := range l.PerCPU {
		if us > 0 {
			sum += float64(l.Insns) / us
		}
	}
	return sum, sum / float64(len(l.PerCPU))
}

type cpuRun struct {
	Run        int       `json:"run"`
	VCPUs      int       `json:"vcpus"`
	PagesPerS  float64   `json:"dirty_pages_per_s"`
	VerifyMs   float64   `json:"verify_ms,omitempty"`
	VerifyLine string    `json:"verify_line,omitempty"`
	Loops      []loopRun `json:"loops,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// cpuStats are the medians over runs of one vCPU count.
type cpuStats struct {
	VCPUs     int              `json:"vcpus"`
	PagesPerS *stat            `json:"dirty_pages_per_s,omitempty"`
	VerifyMs  *stat            `json:"verify_ms,omitempty"`
	MIPS      map[string]*stat `json:"mips_per_vcpu,omitempty"`
	MIPSSum   map[string]*stat `json:"mips_sum,omitempty"`
}

type cpuSide struct {
	Accel string      `json:"accel"`
	Runs  []cpuRun    `json:"runs"`
	Stats []*cpuStats `json:"stats"`
}

func (s *cpuSide) summarize() {
	s.Stats = nil
	for _, n := range cpuVCPUs {
		var pps, vms []float64
		per, sum := map[string][]float64{}, map[string][]float64{}
		for _, r := range s.Runs {
			if r.Error != "" || r.VCPUs != n {
				continue
			}
			pps = append(pps, r.PagesPerS)
			if r.VerifyMs > 0 {
				vms = append(vms, r.VerifyMs)
			}
			for _, l := range r.Loops {
				s, p := l.mips()
				sum[l.Kind], per[l.Kind] = append(sum[l.Kind], s), append(per[l.Kind], p)
			}
		}
		st := &cpuStats{VCPUs: n, PagesPerS: summarize(pps), VerifyMs: summarize(vms),
			MIPS: map[string]*stat{}, MIPSSum: map[string]*stat{}}
		for _, k := range loopKinds {
			st.MIPS[k], st.MIPSSum[k] = summarize(per[k]), summarize(sum[k])
		}
		s.Stats = append(s.Stats, st)
	}
}

func (s *cpuSide) stats(vcpus int) *cpuStats {
	if s != nil {
		for _, st := range s.Stats {
			if st.VCPUs == vcpus {
				return st
			}
		}
	}
	return &cpuStats{VCPUs: vcpus}
}

type cpuResult struct {
	Workload  string   `json:"workload"`
	WindowS   float64  `json:"window_s"`
	LoopIters int      `json:"loop_iterations"`
	Godwit    *cpuSide `json:"godwit"`
	QEMU      *cpuSide `json:"qemu,omitempty"`
}

// benchCPU runs the workloads bootRuns times on each VMM and vCPU count.
func benchCPU(e *env) (*cpuResult, error) {
	res := &cpuResult{Workload: cpuWorkload, WindowS: cpuWindow.Seconds(), LoopIters: cpuLoopIters,
		Godwit: &cpuSide{Accel: e.accel}}
	var errs []string
	side := func(s *cpuSide, vmm string, argv func(name string, vcpus int) []string) {
		for i := 1; i <= e.bootRuns; i++ {
			for _, n := range cpuVCPUs {
				name := fmt.Sprintf("%s-cpu%d-%dv", vmm, i, n)
				r := cpuOnce(e, name, argv(name, n), i, n)
				s.Runs = append(s.Runs, r)
				if r.Error != "" {
					errs = append(errs, fmt.Sprintf("%s run %d (%d vCPUs): %s", vmm, i, n, r.Error))
				}
			}
		}
		s.summarize()
	}
	side(res.Godwit, "godwit", func(name string, n int) []string {
		return []string{e.godwit, "run", "--name", name, "--kernel", e.guestELF, "--mem", "1G",
			"--cpus", strconv.Itoa(n), "--cmdline", fmt.Sprintf("cpus=%d", n),
			"--api-socket", e.sock(name), "--log-level", "warn", "--accel", e.accel}
	})
	if e.qemuOK {
		res.QEMU = &cpuSide{Accel: e.qemuAccel()}
		side(res.QEMU, "qemu", func(name string, n int) []string {
			c := e.qemuConfig(1024, n)
			c.Append = fmt.Sprintf("cpus=%d", n)
			return c.Args()
		})
	}
	if len(errs) > 0 {
		return res, errors.New(strings.Join(errs, "; "))
	}
	return res, nil
}

var (
	verifyRE = regexp.MustCompile(`^INFO verify checked=(\d+) bad=(\d+) ms=(\d+)`)
	loopRE   = regexp.MustCompile(`^LOOP (\w+) iters=\d+ insns=(\d+) cpus=(\d+) us=\d+ per_cpu_us=([\d,]+)`)
)

// cpuOnce boots argv, runs the workloads and stops it.
func cpuOnce(e *env, name string, argv []string, run, vcpus int) cpuRun {
	r := cpuRun{Run: run, VCPUs: vcpus}
	fail := func(err error) cpuRun {
		r.Error = err.Error()
		progress("cpu: %s: %v", name, err)
		return r
	}
	p, err := toolkit.Start(name, argv, toolkit.Options{LogDir: e.logDir()})
	if err != nil {
		return fail(err)
	}
	defer p.Stop(5 * time.Second)
	if _, err := p.WaitPrefix(0, "READY", 120*time.Second); err != nil {
		return fail(err)
	}
	command := func(cmd, reply string, timeout time.Duration) (string, error) {
		mark := p.Con.Mark()
		if err := p.Send(cmd + "\n"); err != nil {
			return "", err
		}
		line, err := p.WaitPrefix(mark, reply, timeout)
		return line.Text, err
	}
	for _, k := range loopKinds {
		line, err := command(fmt.Sprintf("LOOP %s %d", k, cpuLoopIters), "LOOP ", 120*time.Second)
		if err != nil {
			return fail(err)
		}
		l, err := parseLoop(line, vcpus)
		if err != nil {
			return fail(err)
		}
		r.Loops = append(r.Loops, l)
		sum, per := l.mips()
		progress("cpu: %s: LOOP %s: %.0f MIPS per vCPU, %.0f in all", name, k, per, sum)
	}
	if _, err := command(cpuWorkload, "ACK W", 30*time.Second); err != nil {
		return fail(err)
	}
	time.Sleep(cpuWarmup)
	hbs := p.Con.Heartbeats()
	if len(hbs) == 0 {
		return fail(errors.New("no heartbeat"))
	}
	a := hbs[len(hbs)-1]
	time.Sleep(cpuWindow)
	hbs = p.Con.Heartbeats()
	b := hbs[len(hbs)-1]
	if b.Seq == a.Seq || b.Dirtied < a.Dirtied {
		return fail(fmt.Errorf("heartbeats %d→%d, dirtied %d→%d: the workload did not run", a.Seq, b.Seq, a.Dirtied, b.Dirtied))
	}
	r.PagesPerS = float64(b.Dirtied-a.Dirtied) / b.At.Sub(a.At).Seconds()
	progress("cpu: %s: %s dirties %.0f pages/s", name, cpuWorkload, r.PagesPerS)
	if vcpus != 1 {
		return r
	}
	line, err := command("V", "INFO verify", 120*time.Second)
	if err != nil {
		return fail(err)
	}
	m := verifyRE.FindStringSubmatch(line)
	if m == nil || m[2] != "0" {
		return fail(fmt.Errorf("verify: %q", line))
	}
	r.VerifyMs, _ = strconv.ParseFloat(m[3], 64)
	r.VerifyLine = line
	progress("cpu: %s: V over 64 MiB %.0f ms", name, r.VerifyMs)
	return r
}

// parseLoop reads a LOOP reply, which must cover vcpus CPUs.
func parseLoop(line string, vcpus int) (loopRun, error) {
	m := loopRE.FindStringSubmatch(line)
	if m == nil {
		return loopRun{}, fmt.Errorf("LOOP reply %q", line)
	}
	l := loopRun{Kind: m[1]}
	l.Insns, _ = strconv.ParseUint(m[2], 10, 64)
	for _, f := range strings.Split(m[4], ",") {
		us, err := strconv.ParseFloat(f, 64)
		if err != nil || us <= 0 {
			return l, fmt.Errorf("LOOP reply %q: bad time %q", line, f)
		}
		l.PerCPU = append(l.PerCPU, us)
	}
	if n, _ := strconv.Atoi(m[3]); n != vcpus || len(l.PerCPU) != vcpus {
		return l, fmt.Errorf("LOOP reply %q: %d vCPUs ran it, want %d", line, len(l.PerCPU), vcpus)
	}
	return l, nil
}

func renderCPU(b *strings.Builder, c *cpuResult) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	w("### The guest's CPU work (1024 MiB, no migration; median [min..max] of %d runs)\n\n", len(c.Godwit.Runs)/len(cpuVCPUs))
	qa := "–"
	if c.QEMU != nil {
		qa = c.QEMU.Accel
	}
	w("| | vCPUs | Godwit (%s) | QEMU (%s) | Godwit/QEMU |\n|---|---|---|---|---|\n", c.Godwit.Accel, qa)
	for _, n := range cpuVCPUs {
		g, q := c.Godwit.stats(n), c.QEMU.stats(n)
		w("| `%s`: pages dirtied per second by the BSP (over %.0f s after 1 s) | %d | %s | %s | %s |\n", c.Workload, c.WindowS,
			n, g.PagesPerS.mmm(), q.PagesPerS.mmm(), ratio(g.PagesPerS, q.PagesPerS))
	}
	g, q := c.Godwit.stats(1), c.QEMU.stats(1)
	w("| `V` over 64 MiB (16,384 pages recomputed and checked), ms as the guest reports | 1 | %s | %s | %s |\n",
		g.VerifyMs.mmm(), q.VerifyMs.mmm(), ratio(g.VerifyMs, q.VerifyMs))
	for _, k := range loopKinds {
		for _, n := range cpuVCPUs {
			g, q := c.Godwit.stats(n), c.QEMU.stats(n)
			w("| `LOOP %s %d` on every vCPU: million guest instructions per second per vCPU (summed) | %d | %s (%s) | %s (%s) | %s |\n",
				k, c.LoopIters, n, g.MIPS[k].mmm(), g.MIPSSum[k].med(), q.MIPS[k].mmm(), q.MIPSSum[k].med(), ratio(g.MIPS[k], q.MIPS[k]))
		}
	}
	w("\n")
}
