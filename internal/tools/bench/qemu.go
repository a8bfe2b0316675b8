package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/tools/qemu"
	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// qemuUncappedBandwidth lifts QEMU's default 128 MiB/s bandwidth cap
// (max-bandwidth, bytes/s): 10 GiB/s is far above this host's loopback.
const qemuUncappedBandwidth = 10 << 30

// qemuVariant is a QEMU migration setting: its own defaults, or the
// bandwidth cap lifted.
type qemuVariant struct {
	Label      string         `json:"label"` // "default" or "uncapped"
	Parameters map[string]any `json:"parameters,omitempty"`
}

var qemuVariants = []qemuVariant{
	{Label: "default"},
	{Label: "uncapped", Parameters: map[string]any{"max-bandwidth": qemuUncappedBandwidth}},
}

// qemuConfig is the QEMU of the benchmarks on the test guest: mem MiB,
// vcpus vCPUs, the accelerator of the same kind as Godwit's.
func (e *env) qemuConfig(mem, vcpus int) qemu.Config {
	return qemu.Config{Kernel: e.guestELF, MemMiB: mem, CPUs: vcpus, Accel: e.qemuAccel()}
}

// qemuRun is one QEMU migration.
type qemuRun struct {
	Run    int     `json:"run"`
	To     string  `json:"to"`
	Status string  `json:"status"` // QEMU's final status, cancelled(timeout), or what went wrong
	Error  string  `json:"error,omitempty"`
	WallMs float64 `json:"wall_ms"` // migrate command to the final status
	// Stats is the final query-migrate reply.
	Stats          *qemu.MigrationStats `json:"query_migrate,omitempty"`
	MaxThrottlePct float64              `json:"max_throttle_pct"`
	DstStatus      string               `json:"dst_status,omitempty"` // query-status on the destination once it printed 50 heartbeats

	// From the consoles (host arrival times), as for Godwit.
	GuestPauseMs  float64  `json:"guest_pause_ms"`
	SrcLastSeq    uint64   `json:"src_last_seq"`
	DstFirstSeq   uint64   `json:"dst_first_seq"`
	SeqContinuous bool     `json:"seq_continuous"`
	SplitLine     bool     `json:"split_line,omitempty"`
	SrcMaxGapMs   float64  `json:"src_max_hb_gap_ms"` // during pre-copy
	DstMaxGapMs   float64  `json:"dst_max_hb_gap_ms"` // first ~2.5 s on the destination
	DstSeqErrors  []string `json:"dst_seq_errors,omitempty"`
}

// qemuScenario is one scenario on QEMU in one variant: its runs and their
// statistics over the completed runs (a cancelled pre-copy has no
// downtime or pause), plus what every run sent.
type qemuScenario struct {
	Scenario   string         `json:"scenario"`
	Variant    string         `json:"variant"`
	Parameters map[string]any `json:"parameters,omitempty"`
	MemMiB     int            `json:"mem_mib"`
	Workload   string         `json:"workload"`
	BootS      float64        `json:"boot_to_ready_s"`
	Runs       []qemuRun      `json:"runs"`
	Verify     string         `json:"verify"`
	VerifyOK   bool           `json:"verify_ok"`
	Error      string         `json:"error,omitempty"`
	LoadBefore string         `json:"loadavg_before"`
	LoadAfter  string         `json:"loadavg_after"`

	Statuses  []string `json:"statuses"`
	Completed int      `json:"completed"`
	SeqOK     int      `json:"seq_continuous_runs"`
	TotalMs   *stat    `json:"total_ms,omitempty"`
	DownMs    *stat    `json:"downtime_ms,omitempty"`
	PauseMs   *stat    `json:"guest_pause_ms,omitempty"`
	SentMiB   *stat    `json:"sent_mib,omitempty"`
	Mbps      *stat    `json:"mbps,omitempty"`
	Syncs     *stat    `json:"dirty_syncs,omitempty"`
	Throttle  *stat    `json:"throttle_pct,omitempty"`
	SrcGapMs  *stat    `json:"src_max_hb_gap_ms,omitempty"`
	DstGapMs  *stat    `json:"dst_max_hb_gap_ms,omitempty"`
	AllSent   *stat    `json:"sent_mib_all_runs,omitempty"` // including cancelled runs
	AllWallS  *stat    `json:"wall_s_all_runs,omitempty"`
	AllMbps   *stat    `json:"mbps_all_runs,omitempty"`
	Cancelled bool     `json:"any_cancelled"`
}

// qemuScenarioRun boots one QEMU, starts the workload and migrates it
// ping-pong e.runs times with the variant's parameters, each time to a
// fresh QEMU in incoming mode on a new loopback port, then verifies the
// guest's memory: what godwitScenarioRun does for Godwit.
func qemuScenarioRun(e *env, s scenario, v qemuVariant) *qemuScenario {
	q := &qemuScenario{Scenario: s.Name, Variant: v.Label, Parameters: v.Parameters, MemMiB: s.MemMiB,
		Workload: s.Workload, LoadBefore: loadavg()}
	defer func() { q.LoadAfter = loadavg() }()
	defer q.summarize()
	gen := 1
	name := func() string { return fmt.Sprintf("qemu-%s-%s-vm%d", s.Name, v.Label, gen) }
	cfg := func() qemu.Config {
		c := e.qemuConfig(s.MemMiB, 1)
		if s.Linux {
			c.Kernel, c.Initrd = filepath.Join(e.linuxDir, "vmlinux"), filepath.Join(e.linuxDir, "initramfs.cpio.gz")
			c.Append = linuxCmdline
		}
		c.QMP = e.sock(name())
		return c
	}
	progress("migrate: QEMU %s %s: booting a %d MiB guest", v.Label, s.Name, s.MemMiB)
	src, err := qemu.Start(name(), cfg(), e.procOptions())
	if err != nil {
		q.Error = err.Error()
		return q
	}
	defer func() { src.Stop(5 * time.Second) }()
	if q.BootS, err = waitReady(src.Proc, readyWithin(s)); err != nil {
		q.Error = err.Error()
		return q
	}
	if e.qemuDefaults == nil {
		e.qemuDefaults, _ = src.MigrationParameters()
	}
	if _, err := startWorkload(src.Proc, s.Workload); err != nil {
		q.Error = err.Error()
		return q
	}
	time.Sleep(e.settle)

	for i := 1; i <= e.runs; i++ {
		gen++
		dst, r := qemuMigrateOnce(e, src, name(), cfg(), v, i)
		q.Runs = append(q.Runs, r)
		progress("migrate: QEMU %s %s run %d: %s", v.Label, s.Name, i, qemuRunText(r))
		if dst != nil {
			src = dst
		}
		if src.Exited() {
			q.Error = fmt.Sprintf("run %d: no VM left running (%s)", i, r.Status)
			return q
		}
		time.Sleep(2 * time.Second)
		if dst != nil {
			last := &q.Runs[len(q.Runs)-1]
			last.DstMaxGapMs, last.DstSeqErrors = dstHeartbeats(dst.Proc)
		}
	}

	l, sent, err := verify(src.Proc)
	if !sent {
		q.Error = err.Error()
		return q
	}
	if err != nil {
		q.Error = err.Error()
	} else {
		// A failed verify is QEMU's result, reported beside its times.
		q.Verify, q.VerifyOK = l.Text, strings.HasPrefix(l.Text, "VERIFY OK")
	}
	progress("migrate: QEMU %s %s: %s", v.Label, s.Name, q.Verify)
	return q
}

// qemuMigrateOnce starts a destination QEMU (-incoming defer, then
// migrate-incoming on a free loopback port) and migrates src to it,
// cancelling after --qemu-timeout. It returns the destination (nil if
// the migration did not complete; src then keeps running).
func qemuMigrateOnce(e *env, src *qemu.VM, dstName string, c qemu.Config, v qemuVariant, run int) (*qemu.VM, qemuRun) {
	r := qemuRun{Run: run}
	port, err := freePort()
	if err != nil {
		r.Status, r.Error = "setup failed", err.Error()
		return nil, r
	}
	r.To = fmt.Sprintf("127.0.0.1:%d", port)
	c.Incoming = "defer"
	dst, err := qemu.Start(dstName, c, e.procOptions())
	if err == nil {
		if err = dst.Incoming("tcp:" + r.To); err != nil {
			dst.Stop(5 * time.Second)
		}
	}
	if err != nil {
		r.Status, r.Error = "setup failed", err.Error()
		return nil, r
	}
	res, err := qemu.Migrate(src, dst, qemu.MigrateOptions{
		URI:          "tcp:" + r.To,
		Capabilities: map[string]bool{"auto-converge": false, "postcopy-ram": false},
		Parameters:   v.Parameters,
		Timeout:      time.Duration(e.qemuTimeout) * time.Second,
	})
	r.Status, r.MaxThrottlePct = res.Status, res.MaxThrottlePct
	if !res.Started.IsZero() {
		r.WallMs = ms(res.Ended.Sub(res.Started))
	}
	if res.Samples > 0 {
		st := res.Final
		r.Stats = &st
	}
	if err != nil {
		r.Error = err.Error()
		hbs := src.Con.Heartbeats()
		r.SrcMaxGapMs = ms(toolkit.LongestGap(hbs, res.Started, time.Now()))
		dst.Stop(5 * time.Second)
		return nil, r
	}
	if err := dst.WaitHeartbeats(len(dst.Con.Heartbeats())+50, 30*time.Second); err != nil {
		r.Status, r.Error = "no heartbeats on the destination", err.Error()
		src.Stop(5 * time.Second)
		return dst, r
	}
	if r.DstStatus, err = dst.Status(); err != nil {
		r.Error = err.Error()
	}
	sw, err := toolkit.Handover(src.Proc, dst.Proc)
	src.Stop(5 * time.Second) // paused in postmigrate: quit it, as a manager would
	if err != nil {
		r.Status, r.Error = "no heartbeats", err.Error()
		return dst, r
	}
	r.SrcLastSeq, r.DstFirstSeq, r.SplitLine = sw.SrcLast.Seq, sw.DstFirst.Seq, sw.Split
	r.SeqContinuous, r.GuestPauseMs = sw.SeqContinuous, ms(sw.Pause)
	r.SrcMaxGapMs = ms(toolkit.LongestGap(src.Con.Heartbeats(), res.Started.Add(-20*time.Millisecond), sw.SrcLast.At))
	return dst, r
}

// summarize fills the statistics: over completed runs, and what every
// run sent.
func (q *qemuScenario) summarize() {
	var total, down, pause, sent, mbps, syncs, thr, sgap, dgap, allSent, allWall, allMbps []float64
	q.Statuses, q.Completed, q.SeqOK, q.Cancelled = nil, 0, 0, false
	for _, r := range q.Runs {
		q.Statuses = append(q.Statuses, r.Status)
		if r.Stats != nil {
			allSent = append(allSent, float64(r.Stats.RAM.Transferred)/(1<<20))
			allWall = append(allWall, r.WallMs/1000)
			allMbps = append(allMbps, r.Stats.RAM.Mbps)
		}
		if r.Status == "cancelled(timeout)" {
			q.Cancelled = true
		}
		if r.Status != "completed" || r.Stats == nil {
			continue
		}
		q.Completed++
		if r.SeqContinuous {
			q.SeqOK++
		}
		st := r.Stats
		total = append(total, st.TotalMs)
		down = append(down, st.DowntimeMs)
		pause = append(pause, r.GuestPauseMs)
		sent = append(sent, float64(st.RAM.Transferred)/(1<<20))
		mbps = append(mbps, st.RAM.Mbps)
		syncs = append(syncs, float64(st.RAM.DirtySyncCount))
		thr = append(thr, r.MaxThrottlePct)
		sgap = append(sgap, r.SrcMaxGapMs)
		dgap = append(dgap, r.DstMaxGapMs)
	}
	q.TotalMs, q.DownMs, q.PauseMs, q.SentMiB = summarize(total), summarize(down), summarize(pause), summarize(sent)
	q.Mbps, q.Syncs, q.Throttle = summarize(mbps), summarize(syncs), summarize(thr)
	q.SrcGapMs, q.DstGapMs = summarize(sgap), summarize(dgap)
	q.AllSent, q.AllWallS, q.AllMbps = summarize(allSent), summarize(allWall), summarize(allMbps)
}

func qemuRunText(r qemuRun) string {
	if r.Status != "completed" || r.Stats == nil {
		s := fmt.Sprintf("%s: %s", r.Status, r.Error)
		if r.Stats != nil {
			s += fmt.Sprintf(" (%.1f MiB sent in %.1f s)", float64(r.Stats.RAM.Transferred)/(1<<20), r.WallMs/1000)
		}
		return s
	}
	st := r.Stats
	return fmt.Sprintf("total %.0f ms, downtime %.0f ms, guest pause %.1f ms, %.1f MiB, %d dirty syncs, %.0f Mbit/s, seq %d->%d",
		st.TotalMs, st.DowntimeMs, r.GuestPauseMs, float64(st.RAM.Transferred)/(1<<20), st.RAM.DirtySyncCount, st.RAM.Mbps,
		r.SrcLastSeq, r.DstFirstSeq)
}

// procOptions are how the VMMs started here log: console and stderr in
// the results' logs directory.
func (e *env) procOptions() toolkit.Options { return toolkit.Options{LogDir: e.logDir()} }
