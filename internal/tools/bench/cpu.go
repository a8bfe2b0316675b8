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

// The CPU benchmark: how fast each VMM's CPU runs the test guest's own
// memory workload, Godwit and QEMU on the same kind of accelerator (the
// software CPU against TCG, or KVM against KVM), 1 GiB, 1 vCPU, no
// migration. Per run: boot, `W 64 64 0` (64 MiB rewritten flat out), the
// dirty rate from the heartbeats' page counts over cpuWindow after a
// second of warm-up, then `V` (recompute and check all 16,384 pages) and
// the time the guest reports for it.

const (
	cpuWorkload = "W 64 64 0"
	cpuWarmup   = time.Second
	cpuWindow   = 3 * time.Second
)

type cpuRun struct {
	Run        int     `json:"run"`
	PagesPerS  float64 `json:"dirty_pages_per_s"`
	VerifyMs   float64 `json:"verify_ms"`
	VerifyLine string  `json:"verify_line,omitempty"`
	Error      string  `json:"error,omitempty"`
}

type cpuSide struct {
	Accel     string   `json:"accel"`
	Runs      []cpuRun `json:"runs"`
	PagesPerS *stat    `json:"dirty_pages_per_s,omitempty"`
	VerifyMs  *stat    `json:"verify_ms,omitempty"`
}

func (s *cpuSide) summarize() {
	var pps, vms []float64
	for _, r := range s.Runs {
		if r.Error == "" {
			pps = append(pps, r.PagesPerS)
			vms = append(vms, r.VerifyMs)
		}
	}
	s.PagesPerS, s.VerifyMs = summarize(pps), summarize(vms)
}

type cpuResult struct {
	Workload string   `json:"workload"`
	WindowS  float64  `json:"window_s"`
	Godwit   *cpuSide `json:"godwit"`
	QEMU     *cpuSide `json:"qemu,omitempty"`
}

// benchCPU runs the workload bootRuns times on each VMM.
func benchCPU(e *env) (*cpuResult, error) {
	res := &cpuResult{Workload: cpuWorkload, WindowS: cpuWindow.Seconds(), Godwit: &cpuSide{Accel: e.accel}}
	var errs []string
	for i := 1; i <= e.bootRuns; i++ {
		name := fmt.Sprintf("godwit-cpu%d", i)
		argv := []string{e.godwit, "run", "--name", name, "--kernel", e.guestELF, "--mem", "1G", "--cpus", "1",
			"--api-socket", e.sock(name), "--log-level", "warn", "--accel", e.accel}
		r := cpuOnce(e, name, argv, i)
		res.Godwit.Runs = append(res.Godwit.Runs, r)
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("godwit run %d: %s", i, r.Error))
		}
	}
	res.Godwit.summarize()
	if e.qemuOK {
		res.QEMU = &cpuSide{Accel: e.qemuAccel()}
		for i := 1; i <= e.bootRuns; i++ {
			argv := append(append([]string{"qemu-system-x86_64"}, e.qemuAccelArgs()...), "-m", "1024", "-smp", "1",
				"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot", "-kernel", e.guestELF, "-nic", "none")
			r := cpuOnce(e, fmt.Sprintf("qemu-cpu%d", i), argv, i)
			res.QEMU.Runs = append(res.QEMU.Runs, r)
			if r.Error != "" {
				errs = append(errs, fmt.Sprintf("qemu run %d: %s", i, r.Error))
			}
		}
		res.QEMU.summarize()
	}
	if len(errs) > 0 {
		return res, errors.New(strings.Join(errs, "; "))
	}
	return res, nil
}

var verifyRE = regexp.MustCompile(`^INFO verify checked=(\d+) bad=(\d+) ms=(\d+)`)

// cpuOnce boots argv, runs the workload and the verify, and stops it.
func cpuOnce(e *env, name string, argv []string, run int) cpuRun {
	r := cpuRun{Run: run}
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
	mark := p.Con.Mark()
	if err := p.Send(cpuWorkload + "\n"); err != nil {
		return fail(err)
	}
	if _, err := p.WaitPrefix(mark, "ACK W", 30*time.Second); err != nil {
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
	mark = p.Con.Mark()
	if err := p.Send("V\n"); err != nil {
		return fail(err)
	}
	line, err := p.WaitPrefix(mark, "INFO verify", 120*time.Second)
	if err != nil {
		return fail(err)
	}
	m := verifyRE.FindStringSubmatch(line.Text)
	if m == nil || m[2] != "0" {
		return fail(fmt.Errorf("verify: %q", line.Text))
	}
	r.VerifyMs, _ = strconv.ParseFloat(m[3], 64)
	r.VerifyLine = line.Text
	progress("cpu: %s: %s dirties %.0f pages/s; V over 64 MiB %.0f ms", name, cpuWorkload, r.PagesPerS, r.VerifyMs)
	return r
}

func renderCPU(b *strings.Builder, c *cpuResult) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	q := c.QEMU
	if q == nil {
		q = &cpuSide{}
	}
	w("### The guest's CPU work (1024 MiB, 1 vCPU, no migration; median [min..max] of %d runs)\n\n", len(c.Godwit.Runs))
	w("| | Godwit (%s) | QEMU (%s) | Godwit/QEMU |\n|---|---|---|---|\n", c.Godwit.Accel, orStr(q.Accel, "–"))
	w("| `%s`: pages dirtied per second (over %.0f s after 1 s) | %s | %s | %s |\n", c.Workload, c.WindowS,
		c.Godwit.PagesPerS.mmm(), q.PagesPerS.mmm(), ratio(c.Godwit.PagesPerS, q.PagesPerS))
	w("| `V` over 64 MiB (16,384 pages recomputed and checked), ms as the guest reports | %s | %s | %s |\n\n",
		c.Godwit.VerifyMs.mmm(), q.VerifyMs.mmm(), ratio(c.Godwit.VerifyMs, q.VerifyMs))
}
