package main

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// stat is median [min..max] of n values.
type stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

func summarize(v []float64) *stat {
	if len(v) == 0 {
		return nil
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return &stat{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// numf formats a value with precision fitting its size.
func numf(x float64) string {
	a := math.Abs(x)
	switch {
	case x == math.Trunc(x):
		return fmt.Sprintf("%.0f", x)
	case a >= 100:
		return fmt.Sprintf("%.0f", x)
	case a >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

// mmm is "median [min..max]" (just the value for one run, "–" for none).
func (s *stat) mmm() string {
	if s == nil {
		return "–"
	}
	if s.N == 1 || s.Min == s.Max {
		return numf(s.Median)
	}
	return fmt.Sprintf("%s [%s..%s]", numf(s.Median), numf(s.Min), numf(s.Max))
}

func (s *stat) med() string {
	if s == nil {
		return "–"
	}
	return numf(s.Median)
}

// ratio is a/b of two medians, "–" if either is missing.
func ratio(a, b *stat) string {
	if a == nil || b == nil || b.Median == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a.Median/b.Median)
}

// renderMarkdown is the report printed on stdout and saved as report.md.
func renderMarkdown(r *results) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("## Godwit vs QEMU (%s, %s)\n\n", r.Mode, r.Started)
	w("Accelerators: Godwit %v, QEMU %v (the same kind: KVM against KVM, the software CPU against TCG).\n\n", r.Config["godwit_accel"], r.Config["qemu_accel"])
	w("Host: %v, %v CPUs, kernel %v; %v. Load average before: %v; after: %v.\n\n",
		r.Host["cpu"], r.Host["cpus"], r.Host["kernel"], orStr(r.Host["qemu"], "QEMU not installed"), r.Host["loadavg"], r.HostAfter["loadavg"])
	if r.Boot != nil {
		renderBoot(&b, r.Boot)
	}
	if r.LinuxBoot != nil {
		renderLinuxBoot(&b, r.LinuxBoot)
	}
	if r.CPU != nil {
		renderCPU(&b, r.CPU)
	}
	if r.Migrate != nil {
		renderMigrate(&b, r.Migrate, r.Config)
	}
	if r.Loopback != nil {
		renderLoopback(&b, r.Loopback, r.Migrate)
	}
	if len(r.Errors) > 0 {
		w("### Problems\n\n")
		for _, e := range r.Errors {
			w("- %s\n", e)
		}
		w("\n")
	}
	return b.String()
}

func orStr(v any, def string) string {
	if s, ok := v.(string); ok && s != "" {
		return s
	}
	return def
}

func renderBoot(b *strings.Builder, br *bootResult) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	g, q := br.Godwit, br.QEMU
	if q == nil {
		q = &bootSide{}
	}
	w("### Boot and memory overhead (%d MiB guest, 1 vCPU; median [min..max])\n\n", br.MemMiB)
	w("| | Godwit | QEMU | Godwit/QEMU |\n|---|---|---|---|\n")
	w("| launch → first heartbeat, s (runs: Godwit %d, QEMU %d) | %s | %s | %s |\n", len(g.Runs), len(q.Runs), g.FirstHB.mmm(), q.FirstHB.mmm(), ratio(g.FirstHB, q.FirstHB))
	w("| launch → READY, s | %s | %s | %s |\n", g.Ready.mmm(), q.Ready.mmm(), ratio(g.Ready, q.Ready))
	w("| VMM RSS overhead (RSS − guest-RAM Rss), MiB | %s | %s | %s |\n", g.OverheadMiB.mmm(), q.OverheadMiB.mmm(), ratio(g.OverheadMiB, q.OverheadMiB))
	w("| of it anonymous (per-VMM; the rest is file pages shared by every VMM), MiB | %s | %s | %s |\n", g.AnonMiB.mmm(), q.AnonMiB.mmm(), ratio(g.AnonMiB, q.AnonMiB))
	w("| total RSS, MiB | %s | %s | %s |\n", g.TotalMiB.mmm(), q.TotalMiB.mmm(), ratio(g.TotalMiB, q.TotalMiB))
	w("| guest-RAM mapping Rss, MiB | %s | %s | %s |\n\n", g.GuestMiB.mmm(), q.GuestMiB.mmm(), ratio(g.GuestMiB, q.GuestMiB))
	if u := br.Unhardened; u != nil {
		w("The hardened VMM against the VMM before hardening (`godwit-vmm run`, sandboxed and without the pool's servers, against `godwit run --no-sandbox`, everything linked in):\n\n")
		w("| | godwit-vmm | godwit run, unhardened | ratio |\n|---|---|---|---|\n")
		w("| VMM RSS overhead, MiB | %s | %s | %s |\n", g.OverheadMiB.mmm(), u.OverheadMiB.mmm(), ratio(g.OverheadMiB, u.OverheadMiB))
		w("| anonymous beyond guest RAM, MiB | %s | %s | %s |\n", g.AnonMiB.mmm(), u.AnonMiB.mmm(), ratio(g.AnonMiB, u.AnonMiB))
		w("| launch → READY, s | %s | %s | %s |\n\n", g.Ready.mmm(), u.Ready.mmm(), ratio(g.Ready, u.Ready))
	}
	if q.Error != "" || g.Error != "" {
		w("Boot problems: %s\n\n", joinErr(g.Error, q.Error))
	}
}

// qemuCell is one QEMU variant of one scenario for the main table.
func qemuCell(s *qemuScenario, timeout any) string {
	if s == nil {
		return "not run"
	}
	n := len(s.Runs)
	if s.Completed == 0 {
		if n == 0 {
			return "failed: " + toolkit.Shorten(s.Error, 60)
		}
		return fmt.Sprintf("**not converged** 0/%d (cancelled @%v s, %s MiB sent)", n, timeout, s.AllSent.med())
	}
	c := fmt.Sprintf("%s / %s / %s / %s", s.TotalMs.med(), s.DownMs.med(), s.PauseMs.med(), s.SentMiB.med())
	if s.Completed < n {
		c += fmt.Sprintf(" (only %d/%d converged)", s.Completed, n)
	}
	if s.Verify != "" && !s.VerifyOK {
		c += " (**verify failed**)"
	}
	return c
}

func renderMigrate(b *strings.Builder, m *migrateResult, cfg map[string]any) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	qemu := func(label, scen string) *qemuScenario {
		for _, q := range m.QEMU {
			if q.Variant == label && q.Scenario == scen {
				return q
			}
		}
		return nil
	}
	w("### Live migration (localhost, 1 vCPU, %v runs per scenario and VMM, median; ms and MiB)\n\n", cfg["runs"])
	if cfg["godwit_tls"] == true {
		w("**Godwit migrates over TLS** (--tls-dir: mutual TLS 1.3); QEMU in plain TCP.\n\n")
	}
	w("Godwit with its defaults. QEMU cells: total / downtime / guest pause / MiB sent, medians over converged runs; QEMU default = 128 MiB/s cap, 300 ms downtime limit; uncapped = max-bandwidth %d bytes/s; QEMU pre-copy cancelled after %v s. Ratios: Godwit / QEMU uncapped (< 1: Godwit is faster).\n\n", qemuUncappedBandwidth, cfg["qemu_timeout_s"])
	w("| scenario | Godwit total | Godwit downtime | Godwit guest pause | Godwit MiB sent | QEMU default | QEMU uncapped | total ratio | pause ratio |\n")
	w("|---|---|---|---|---|---|---|---|---|\n")
	for _, g := range m.Godwit {
		gt := g.TotalMs.mmm()
		if g.Completed < len(g.Runs) {
			gt += fmt.Sprintf(" (**%d/%d completed**)", g.Completed, len(g.Runs))
		}
		qu := qemu("uncapped", g.Scenario)
		tr, pr := "–", "–"
		if qu != nil && qu.Completed > 0 {
			tr, pr = ratio(g.TotalMs, qu.TotalMs), ratio(g.PauseMs, qu.PauseMs)
		}
		w("| %s (%d MiB, W %s) | %s | %s | %s | %s | %s | %s | %s | %s |\n", g.Scenario, g.MemMiB, g.Workload,
			gt, g.DownMs.mmm(), g.PauseMs.mmm(), g.SentMiB.mmm(),
			qemuCell(qemu("default", g.Scenario), cfg["qemu_timeout_s"]), qemuCell(qu, cfg["qemu_timeout_s"]), tr, pr)
	}
	w("\n")

	w("Godwit details (median [min..max] over completed runs):\n\n")
	w("| scenario | completed | HB seq continuous | verify | rounds | max throttle %% | setup ms | first round MiB/s | average MiB/s | max HB gap on source during pre-copy, ms | max HB gap on destination, ms | load avg before → after |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, g := range m.Godwit {
		w("| %s | %d/%d | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s → %s |\n", g.Scenario, g.Completed, len(g.Runs), g.SeqOK, g.Completed,
			orStr(g.Verify, "–"), g.Rounds.mmm(), g.Throttle.mmm(), g.SetupMs.mmm(), g.FirstMiBs.mmm(), g.AvgMiBs.mmm(), g.SrcGapMs.mmm(), g.DstGapMs.mmm(),
			g.LoadBefore, g.LoadAfter)
	}
	w("\n")
	w("Godwit runs:\n\n| scenario | run | result | total ms | downtime ms | guest pause ms | MiB sent | rounds (MiB per round) | throttle %% | HB seq src→dst |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, g := range m.Godwit {
		for _, r := range g.Runs {
			if r.Report == nil || r.Status != "completed" {
				w("| %s | %d | %s: %s | | | | | | | |\n", g.Scenario, r.Run, r.Status, toolkit.Shorten(r.Error, 120))
				continue
			}
			rep := r.Report
			var rounds []string
			for _, rd := range rep.Rounds {
				rounds = append(rounds, numf(float64(rd.Bytes)/(1<<20)))
			}
			split := ""
			if r.SplitLine {
				split = " (line split)"
			}
			w("| %s | %d | %s | %s | %s | %s | %s | %d (%s) | %d | %d→%d%s |\n", g.Scenario, r.Run, r.Status, numf(rep.TotalMs), numf(rep.DowntimeMs),
				numf(r.GuestPauseMs), numf(float64(rep.Bytes)/(1<<20)), len(rep.Rounds), strings.Join(rounds, ", "), rep.MaxThrottle, r.SrcLastSeq, r.DstFirstSeq, split)
		}
	}
	w("\n")
	if len(m.QEMU) > 0 {
		w("QEMU details (medians over converged runs, \"all\" = every run incl. cancelled):\n\n")
		w("| scenario | variant | statuses | HB seq continuous | verify | total ms | downtime ms | guest pause ms | MiB sent | Mbit/s | dirty syncs | throttle %% | max HB gap on source during pre-copy, ms | max HB gap on destination, ms | MiB sent (all) | wall s (all) | load avg before → after |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range m.QEMU {
			w("| %s | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s → %s |\n", s.Scenario, s.Variant, strings.Join(s.Statuses, ","),
				s.SeqOK, s.Completed, orStr(s.Verify, "–"), s.TotalMs.mmm(), s.DownMs.mmm(), s.PauseMs.mmm(), s.SentMiB.mmm(), s.Mbps.mmm(), s.Syncs.mmm(), s.Throttle.mmm(),
				s.SrcGapMs.mmm(), s.DstGapMs.mmm(), s.AllSent.mmm(), s.AllWallS.mmm(), s.LoadBefore, s.LoadAfter)
			if s.Error != "" {
				w("| %s | %s | error: %s | | | | | | | | | | | | | | |\n", s.Scenario, s.Variant, toolkit.Shorten(s.Error, 150))
			}
		}
		w("\n")
	}
}

func renderLoopback(b *strings.Builder, l *loopbackResult, m *migrateResult) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	w("### Loopback TCP limit\n\n")
	var runs []string
	for _, r := range l.Runs {
		runs = append(runs, fmt.Sprintf("%.2f", r.GBs))
	}
	w("Two processes, %d GiB per run from a prefaulted mmap'd buffer in 4 MiB writes: **%s GB/s** median (runs: %s).\n\n",
		l.GiB, l.GBs.med(), strings.Join(runs, ", "))
	if m == nil || l.GBs == nil {
		return
	}
	w("| migration | throughput | GB/s | share of loopback |\n|---|---|---|---|\n")
	for _, g := range m.Godwit {
		if g.FirstMiBs == nil || (g.Scenario != "ws512" && g.Scenario != "ws64") {
			continue
		}
		gbs := g.FirstMiBs.Median * (1 << 20) / 1e9
		w("| Godwit %s | first (full) pre-copy round, %s MiB/s | %.2f | %.0f%% |\n", g.Scenario, g.FirstMiBs.med(), gbs, 100*gbs/l.GBs.Median)
	}
	for _, s := range m.QEMU {
		if s.Mbps == nil || (s.Scenario != "ws512" && s.Scenario != "ws64") {
			continue
		}
		gbs := s.Mbps.Median / 8000
		w("| QEMU %s %s | average over the migration (QEMU mbps), %s Mbit/s | %.2f | %.0f%% |\n", s.Variant, s.Scenario, s.Mbps.med(), gbs, 100*gbs/l.GBs.Median)
	}
	w("\n")
}
