package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/migration"
)

// runResult is one migration under probes. Times named …Ms without "_ms"
// duration meaning are relative to the start of the migration command.
type runResult struct {
	VMM      string `json:"vmm"`
	Setting  string `json:"setting"` // Godwit, QEMU uncapped, QEMU default
	Scenario string `json:"scenario"`
	Run      int    `json:"run"`
	From     string `json:"from"`
	To       string `json:"to"`
	Load     string `json:"loadavg"`
	Error    string `json:"error,omitempty"`
	// HandedOver: the migrate command failed, yet the destination runs
	// the guest (the run is counted as failed; the guest carried on).
	HandedOver bool `json:"handed_over_despite_error,omitempty"`
	// Discarded: disturbed by host load and measured again.
	Discarded bool `json:"discarded,omitempty"`

	Mig      migResult `json:"migration"`
	ReturnMs float64   `json:"returned_ms"` // migrate call returned (Godwit: COMMITTED; QEMU: completed seen)

	// Guest-visible pause: first destination heartbeat minus the last
	// source one (host arrival times), and the sequence numbers around it.
	PauseMs      float64 `json:"guest_pause_ms"`
	SrcLastHBMs  float64 `json:"src_last_hb_ms"`
	DstFirstHBMs float64 `json:"dst_first_hb_ms"`
	SrcLastSeq   uint64  `json:"src_last_seq"`
	DstFirstSeq  uint64  `json:"dst_first_seq"`
	SeqOK        bool    `json:"seq_continuous"`
	SplitLine    bool    `json:"hb_line_split_across_hosts,omitempty"` // the source paused mid-line
	// The guest's own announcement (GUEST_ANNOUNCE → its GARP) as its
	// console line arrived, and QEMU's RESUME event on the destination.
	GuestAnnounceMs float64 `json:"guest_announce_line_ms"`
	GuestAnnounce   string  `json:"guest_announce_line,omitempty"`
	DstResumeMs     float64 `json:"dst_resumed_ms"` // QEMU: RESUME event; Godwit: its "announcing" log line (1 ms resolution)

	// The shared bridge right after the migration call returned.
	FDBPort    string  `json:"fdb_port"`
	FDBOK      bool    `json:"fdb_at_destination"`
	FDBCheckMs float64 `json:"fdb_checked_ms"`

	Ping streamResult `json:"icmp"`
	UDP  streamResult `json:"udp"`
	Net  netTimeline  `json:"wire"`
}

func (r *runResult) ok() bool { return r.Error == "" && r.Mig.Status == "completed" }

func (r *runResult) oneLine() string {
	if !r.ok() {
		return "FAILED: " + r.Error
	}
	return fmt.Sprintf("%sping lost %d (gap %.0f ms, silence %.0f ms, max rtt %.0f ms), udp lost %d dup %d (gap %.0f ms); total %.0f ms, downtime %.1f ms, pause %.0f ms; first dst frame %s @%.0f ms (silent %.0f ms); FDB %s%s; load %s",
		disturbedMark(r), r.Ping.Lost, r.Ping.GapMs, r.Ping.SilenceMs, r.Ping.RTTMax, r.UDP.Lost, r.UDP.Duplicates, r.UDP.GapMs, r.Mig.TotalMs, r.Mig.DowntimeMs, r.PauseMs,
		r.Net.FirstFromDst, r.Net.FirstFromDstMs, silentMs(r), r.FDBPort, map[bool]string{true: " ok", false: " WRONG"}[r.FDBOK], r.Load)
}

// disturbedAfter is the longest stall of our own probe sender (its ticker
// is 10 ms) beyond which a run counts as disturbed by host load: the
// benchmark itself did not run, so the VMMs probably did not either.
const disturbedAfter = 50.0 // ms

// disturbed says whether the probe senders stalled during the run.
func (r *runResult) disturbed() bool {
	return max(r.Ping.MaxSendGapMs, r.UDP.MaxSendGapMs) > disturbedAfter
}

func disturbedMark(r *runResult) string {
	if r.disturbed() {
		return fmt.Sprintf("[DISTURBED: probe sender stalled %.0f ms] ", max(r.Ping.MaxSendGapMs, r.UDP.MaxSendGapMs))
	}
	return ""
}

// silentMs is how long the guest's MAC was silent on the shared bridge:
// from its last frame through the source host to its first through the
// destination.
func silentMs(r *runResult) float64 {
	if r.Net.FirstFromDstMs < 0 || !r.Net.SeenFromSrc {
		return math.NaN()
	}
	return r.Net.FirstFromDstMs - r.Net.LastFromSrcMs
}

// controlResult is one probe window without a migration.
type controlResult struct {
	VMM      string       `json:"vmm"`
	Scenario string       `json:"scenario"`
	Run      int          `json:"run"`
	Load     string       `json:"loadavg"`
	Ping     streamResult `json:"icmp"`
	UDP      streamResult `json:"udp"`
}

// stat is median [min..max] over runs.
type stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

func summarize(v []float64) *stat {
	var x []float64
	for _, f := range v {
		if !math.IsNaN(f) {
			x = append(x, f)
		}
	}
	if len(x) == 0 {
		return nil
	}
	sort.Float64s(x)
	m := x[len(x)/2]
	if len(x)%2 == 0 {
		m = (x[len(x)/2-1] + x[len(x)/2]) / 2
	}
	return &stat{Median: m, Min: x[0], Max: x[len(x)-1], N: len(x)}
}

func (s *stat) String() string {
	if s == nil {
		return "–"
	}
	return fmt.Sprintf("%s [%s..%s]", num(s.Median), num(s.Min), num(s.Max))
}

func num(f float64) string {
	switch {
	case f == math.Trunc(f) || math.Abs(f) >= 100:
		return fmt.Sprintf("%.0f", f)
	case math.Abs(f) >= 10:
		return fmt.Sprintf("%.0f", f)
	default:
		return fmt.Sprintf("%.1f", f)
	}
}

// metric is one row of the summary table.
type metric struct {
	Name    string
	Get     func(*runResult) float64 // NaN = not available
	NoRatio bool                     // the VMMs' values use different references
}

var metrics = []metric{
	{Name: "ICMP lost (of 10 ms pings)", Get: func(r *runResult) float64 { return float64(r.Ping.Lost) }},
	{Name: "ICMP longest gap, ms", Get: func(r *runResult) float64 { return r.Ping.GapMs }},
	{Name: "ICMP longest time without a reply, ms", Get: func(r *runResult) float64 { return r.Ping.SilenceMs }},
	{Name: "ICMP max RTT, ms", Get: func(r *runResult) float64 { return r.Ping.RTTMax }},
	{Name: "UDP lost", Get: func(r *runResult) float64 { return float64(r.UDP.Lost) }},
	{Name: "UDP duplicated", Get: func(r *runResult) float64 { return float64(r.UDP.Duplicates) }},
	{Name: "UDP longest gap, ms", Get: func(r *runResult) float64 { return r.UDP.GapMs }},
	{Name: "UDP longest time without a reply, ms", Get: func(r *runResult) float64 { return r.UDP.SilenceMs }},
	{Name: "migration total, ms (VMM)", Get: func(r *runResult) float64 { return r.Mig.TotalMs }},
	{Name: "downtime, ms (VMM)", Get: func(r *runResult) float64 { return r.Mig.DowntimeMs }},
	{Name: "guest pause, ms (heartbeats)", Get: func(r *runResult) float64 { return nonNeg(r.PauseMs) }},
	{Name: "guest MAC silent on the shared bridge, ms", Get: silentMs},
	{Name: "first guest frame via destination, ms after the destination resumed", Get: func(r *runResult) float64 {
		if r.DstResumeMs < 0 || r.Net.FirstFromDstMs < 0 {
			return math.NaN()
		}
		return r.Net.FirstFromDstMs - r.DstResumeMs
	}, NoRatio: true},
	{Name: "guest's own GARP on the wire, ms after the destination resumed", Get: func(r *runResult) float64 {
		if r.DstResumeMs < 0 || r.Net.GuestGARPMs < 0 {
			return math.NaN()
		}
		return r.Net.GuestGARPMs - r.DstResumeMs
	}, NoRatio: true},
	{Name: "frames for the guest still sent to the old host after that", Get: func(r *runResult) float64 { return float64(r.Net.ToOldAfterLearn) }},
	{Name: "MiB sent", Get: func(r *runResult) float64 { return r.Mig.MiB }},
}

func nonNeg(f float64) float64 {
	if f < 0 {
		return math.NaN()
	}
	return f
}

// results is everything one invocation measured.
type results struct {
	Started      time.Time        `json:"started"`
	Finished     time.Time        `json:"finished"`
	Host         string           `json:"host"`
	Kernel       string           `json:"kernel"`
	CPUs         int              `json:"cpus"`
	LoadBefore   string           `json:"loadavg_before"`
	LoadAfter    string           `json:"loadavg_after"`
	Runs         int              `json:"runs_per_setting"`
	Redo         int              `json:"redo_disturbed"`
	OutDir       string           `json:"out_dir"`
	Lab          string           `json:"lab_prefix"`
	Godwit       string           `json:"godwit"`
	Guest        string           `json:"guest"`
	QEMUVersion  string           `json:"qemu_version"`
	GodwitAccel  string           `json:"godwit_accel,omitempty"` // kvm or emu
	QEMUAccel    string           `json:"qemu_accel,omitempty"`   // kvm or tcg
	QEMUDefaults json.RawMessage  `json:"qemu_migrate_parameters_default,omitempty"`
	Scenarios    []scenario       `json:"scenarios"`
	Results      []*runResult     `json:"runs"`
	Controls     []*controlResult `json:"controls"` // probe windows without a migration
	Summary      []summaryRow     `json:"summary"`
	Errors       []string         `json:"errors,omitempty"`
}

// summaryRow is one setting and scenario summarised.
type summaryRow struct {
	Setting   string           `json:"setting"`
	Scenario  string           `json:"scenario"`
	Completed int              `json:"completed"`
	Failed    int              `json:"failed"`
	Stats     map[string]*stat `json:"stats"`
	FDBOK     int              `json:"fdb_at_destination_runs"`
	AtMostOne int              `json:"runs_with_at_most_one_lost_ping"`
	SeqOK     int              `json:"heartbeat_seq_continuous_runs"`
	Disturbed int              `json:"disturbed_runs"` // probe sender stalled > disturbedAfter, kept
	Discarded int              `json:"discarded_runs"` // disturbed and measured again
	FirstKind map[string]int   `json:"first_frame_via_destination"`
}

func (res *results) add(r *runResult) { res.Results = append(res.Results, r) }

// settings returns the settings in the order measured.
func (res *results) settings() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range res.Results {
		if !seen[r.Setting] {
			seen[r.Setting] = true
			out = append(out, r.Setting)
		}
	}
	return out
}

func (res *results) summarize() {
	res.Summary = nil
	for _, sc := range res.Scenarios {
		for _, set := range res.settings() {
			row := summaryRow{Setting: set, Scenario: sc.Name, Stats: map[string]*stat{}, FirstKind: map[string]int{}}
			vals := make([][]float64, len(metrics))
			for _, r := range res.Results {
				if r.Setting != set || r.Scenario != sc.Name {
					continue
				}
				if r.Discarded {
					row.Discarded++
					continue
				}
				if !r.ok() {
					row.Failed++
					continue
				}
				row.Completed++
				for i, m := range metrics {
					vals[i] = append(vals[i], m.Get(r))
				}
				if r.FDBOK {
					row.FDBOK++
				}
				if r.Ping.Lost <= 1 {
					row.AtMostOne++
				}
				if r.SeqOK {
					row.SeqOK++
				}
				if r.disturbed() {
					row.Disturbed++
				}
				row.FirstKind[r.Net.FirstFromDst]++
			}
			if row.Completed+row.Failed == 0 {
				continue
			}
			for i, m := range metrics {
				row.Stats[m.Name] = summarize(vals[i])
			}
			res.Summary = append(res.Summary, row)
		}
	}
}

func (res *results) row(set, scen string) *summaryRow {
	for i := range res.Summary {
		if res.Summary[i].Setting == set && res.Summary[i].Scenario == scen {
			return &res.Summary[i]
		}
	}
	return nil
}

// markdown renders the summary: per scenario, the settings side by side
// with Godwit's ratio to each QEMU setting, then every run.
func (res *results) markdown() string {
	res.summarize()
	var b strings.Builder
	fmt.Fprintf(&b, "## Network blackout during live migration (%s)\n\n", res.Started.Format("2006-01-02 15:04"))
	fmt.Fprintf(&b, "%d migrations per setting, ping-pong between two host namespaces; 1 GiB, 1 vCPU guest; ICMP echo and UDP echo every 10 ms from a client namespace, 0.5 s before to 1.5 s after each migration. Median [min..max] over completed runs; a run during which the benchmark's own probe sender stalled > 50 ms (host overloaded) is measured again, up to %d times per setting, and left out. Host %s, %d CPUs, load %s → %s. %s.\n\n",
		res.Runs, res.Redo, res.Host, res.CPUs, res.LoadBefore, res.LoadAfter, res.QEMUVersion)
	if res.GodwitAccel != "" {
		fmt.Fprintf(&b, "Accelerators: Godwit %s, QEMU %s.\n\n", res.GodwitAccel, res.QEMUAccel)
	}
	for _, sc := range res.Scenarios {
		sets := res.settings()
		var have []string
		for _, s := range sets {
			if res.row(s, sc.Name) != nil {
				have = append(have, s)
			}
		}
		if len(have) == 0 {
			continue
		}
		wl := "idle guest (heartbeats only)"
		if sc.Workload != "" {
			wl = "`" + sc.Workload + "` (64 MiB dirtied flat out)"
		}
		fmt.Fprintf(&b, "### %s: %s\n\n", sc.Name, wl)
		g := res.row("Godwit", sc.Name)
		hdr := []string{"metric"}
		for _, s := range have {
			hdr = append(hdr, s)
			if s != "Godwit" && g != nil {
				hdr = append(hdr, "Godwit ÷ "+s)
			}
		}
		fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(hdr, " | "), strings.Repeat("---|", len(hdr)))
		line := func(name string, cell func(*summaryRow) string, ratio func(g, q *summaryRow) string) {
			cells := []string{name}
			for _, s := range have {
				r := res.row(s, sc.Name)
				cells = append(cells, cell(r))
				if s != "Godwit" && g != nil {
					cells = append(cells, ratio(g, r))
				}
			}
			fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
		}
		line("completed", func(r *summaryRow) string { return fmt.Sprintf("%d/%d", r.Completed, r.Completed+r.Failed) },
			func(_, _ *summaryRow) string { return "" })
		for _, m := range metrics {
			line(m.Name, func(r *summaryRow) string { return r.Stats[m.Name].String() }, func(g, q *summaryRow) string {
				a, c := g.Stats[m.Name], q.Stats[m.Name]
				if m.NoRatio || a == nil || c == nil || c.Median == 0 {
					return "–"
				}
				return fmt.Sprintf("%.2f×", a.Median/c.Median)
			})
		}
		for _, cm := range controlMetrics {
			line("no migration: "+cm.name, func(r *summaryRow) string { return res.control(r.Setting, sc.Name, cm.get).String() },
				func(g, q *summaryRow) string {
					a, c := res.control(g.Setting, sc.Name, cm.get), res.control(q.Setting, sc.Name, cm.get)
					if a == nil || c == nil || c.Median == 0 {
						return "–"
					}
					return fmt.Sprintf("%.2f×", a.Median/c.Median)
				})
		}
		line("runs with ≤ 1 lost ping", func(r *summaryRow) string { return fmt.Sprintf("%d/%d", r.AtMostOne, r.Completed) },
			func(_, _ *summaryRow) string { return "" })
		line("FDB at destination when migrate returned", func(r *summaryRow) string { return fmt.Sprintf("%d/%d", r.FDBOK, r.Completed) },
			func(_, _ *summaryRow) string { return "" })
		line("first guest frame via destination", func(r *summaryRow) string { return kinds(r.FirstKind) },
			func(_, _ *summaryRow) string { return "" })
		line("runs disturbed by host load (probe sender stalled > 50 ms): kept, redone", func(r *summaryRow) string {
			return fmt.Sprintf("%d/%d, %d", r.Disturbed, r.Completed, r.Discarded)
		},
			func(_, _ *summaryRow) string { return "" })
		line("heartbeat sequence continuous", func(r *summaryRow) string { return fmt.Sprintf("%d/%d", r.SeqOK, r.Completed) },
			func(_, _ *summaryRow) string { return "" })
		b.WriteString("\n")
	}
	b.WriteString("### Every run (times in ms from the start of the migrate command; ⚠ = disturbed by host load)\n\n")
	b.WriteString("| setting | scen. | # | move | ping lost / gap / silence / max RTT | udp lost / dup / gap | total | downtime | src last HB | dst resumed | dst first HB | pause | returned | first dst frame | RARP / GARP | guest GARP wire / line | FDB | Godwit switchover steps | load |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range res.Results {
		if !r.ok() {
			fmt.Fprintf(&b, "| %s | %s | %d | %s→%s | FAILED: %s ||||||||||||||| %s |\n", r.Setting, r.Scenario, r.Run, last(r.From), last(r.To),
				strings.ReplaceAll(shorten(r.Error, 200), "|", "/"), r.Load)
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s→%s | %d / %.0f / %.0f / %.0f | %d / %d / %.0f | %.0f | %.1f | %.0f | %s | %.0f | %.0f | %.0f | %s @%.0f | %d / %d | %s | %s | %s | %s |\n",
			r.Setting+map[bool]string{true: " ⚠", false: ""}[r.disturbed()]+map[bool]string{true: " (discarded)", false: ""}[r.Discarded], r.Scenario, r.Run, last(r.From), last(r.To), r.Ping.Lost, r.Ping.GapMs, r.Ping.SilenceMs, r.Ping.RTTMax, r.UDP.Lost, r.UDP.Duplicates, r.UDP.GapMs,
			r.Mig.TotalMs, r.Mig.DowntimeMs, r.SrcLastHBMs, msOrDash(r.DstResumeMs), r.DstFirstHBMs, r.PauseMs, r.ReturnMs, r.Net.FirstFromDst, r.Net.FirstFromDstMs,
			r.Net.RARPs, r.Net.GARPs, msOrDash(r.Net.GuestGARPMs)+" / "+msOrDash(r.GuestAnnounceMs), okMark(r.FDBOK), steps(r.Mig.Switchover), r.Load)
	}
	if len(res.Errors) > 0 {
		b.WriteString("\nErrors:\n\n")
		for _, e := range res.Errors {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	return b.String()
}

// controlMetrics are the rows shown for the windows without migration.
var controlMetrics = []struct {
	name string
	get  func(*controlResult) float64
}{
	{"ICMP lost", func(c *controlResult) float64 { return float64(c.Ping.Lost) }},
	{"ICMP longest time without a reply, ms", func(c *controlResult) float64 { return c.Ping.SilenceMs }},
	{"ICMP max RTT, ms", func(c *controlResult) float64 { return c.Ping.RTTMax }},
}

// control summarises the control windows of the VMM of setting set,
// leaving out those during which the probe sender stalled (host load).
func (res *results) control(set, scen string, get func(*controlResult) float64) *stat {
	vmm := strings.Fields(set)[0]
	var v []float64
	for _, c := range res.Controls {
		if c.VMM == vmm && c.Scenario == scen && max(c.Ping.MaxSendGapMs, c.UDP.MaxSendGapMs) <= disturbedAfter {
			v = append(v, get(c))
		}
	}
	return summarize(v)
}

func kinds(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var out []string
	for _, k := range ks {
		name := k
		if name == "" {
			name = "none"
		}
		out = append(out, fmt.Sprintf("%s ×%d", name, m[k]))
	}
	return strings.Join(out, ", ")
}

func steps(m map[string]float64) string {
	if len(m) == 0 {
		return ""
	}
	order := migration.SwitchoverSteps
	var out []string
	for _, k := range order {
		if v, ok := m[k]; ok {
			out = append(out, fmt.Sprintf("%s %.1f", k, v))
		}
	}
	for k, v := range m {
		if !contains(order, k) {
			out = append(out, fmt.Sprintf("%s %.1f", k, v))
		}
	}
	return strings.Join(out, ", ")
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func last(ns string) string { return ns[len(ns)-1:] }

func msOrDash(f float64) string {
	if f < 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", f)
}

func okMark(b bool) string {
	if b {
		return "dest"
	}
	return "**stale**"
}

// write saves dir/base.json and dir/base.md (md: res.markdown()).
func (res *results) write(md, dir, base string) error {
	return writeAs(res, md, dir, base)
}

// writeCompact saves dir/base.json and dir/base.md (md: res.markdown())
// without the per-probe send and reply times: the form kept in the
// repository. The control windows carry none (controlWindow drops them).
func (res *results) writeCompact(md, dir, base string) error {
	c := *res
	c.Results = nil
	for _, r := range res.Results {
		r2 := *r
		r2.Ping.Probes, r2.UDP.Probes = nil, nil
		c.Results = append(c.Results, &r2)
	}
	return writeAs(&c, md, dir, base)
}

// writeAs saves v as dir/base.json and md as dir/base.md.
func writeAs(v *results, md, dir, base string) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, base+".json"), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, base+".md"), []byte(md), 0o644)
}
