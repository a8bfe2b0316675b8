package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// scenario is one migration scenario: a guest size and a workload.
type scenario struct {
	Name     string
	MemMiB   int
	Workload string // "alloc wset rate" for the guest's W command
	Linux    bool   // the Linux guest (--linux) instead of the test guest
}

var allScenarios = []scenario{
	{"idle", 1024, "0 0 0", false},
	{"ws64", 1024, "64 64 0", false},
	{"ws512", 1024, "512 512 0", false},
	{"idle4g", 4096, "0 0 0", false},
	{"linux-idle", 1024, "0 0 0", true},
	{"linux-ws64", 1024, "64 64 0", true},
}

// guestArgs are the VMM flags that boot s's guest.
func (e *env) guestArgs(s scenario) []string {
	if s.Linux {
		return []string{"--kernel", filepath.Join(e.linuxDir, "vmlinux"), "--initrd", filepath.Join(e.linuxDir, "initramfs.cpio.gz"),
			"--cmdline", linuxCmdline}
	}
	return []string{"--kernel", e.guestELF}
}

// readyWithin bounds the wait for s's guest to boot.
func readyWithin(s scenario) time.Duration {
	if s.Linux {
		return linuxReady
	}
	return 120 * time.Second
}

func scenarioByName(n string) (scenario, bool) {
	for _, s := range allScenarios {
		if s.Name == n {
			return s, true
		}
	}
	return scenario{}, false
}

// migRun is one Godwit migration.
type migRun struct {
	Run    int               `json:"run"`
	To     string            `json:"to"`
	Status string            `json:"status"` // "completed" or what went wrong
	Error  string            `json:"error,omitempty"`
	WallMs float64           `json:"wall_ms"` // `godwit migrate` command, start to exit
	Report *migration.Report `json:"report,omitempty"`

	// From the consoles (host arrival times).
	GuestPauseMs  float64  `json:"guest_pause_ms"`
	SrcLastSeq    uint64   `json:"src_last_seq"`
	DstFirstSeq   uint64   `json:"dst_first_seq"`
	SeqContinuous bool     `json:"seq_continuous"`       // dst first = src last + 1
	SplitLine     bool     `json:"split_line,omitempty"` // the source left a line unfinished; the destination finished it
	SrcMaxGapMs   float64  `json:"src_max_hb_gap_ms"`    // longest heartbeat gap on the source during pre-copy
	DstMaxGapMs   float64  `json:"dst_max_hb_gap_ms"`    // longest gap on the destination, first ~2.5 s
	DstSeqErrors  []string `json:"dst_seq_errors,omitempty"`
	// Throughput of the first pre-copy round (all of RAM that was ever written).
	FirstRoundMiBs float64 `json:"first_round_mib_s"`
	FirstRoundMiB  float64 `json:"first_round_mib"`
}

// godwitScenario is one scenario on Godwit.
type godwitScenario struct {
	Scenario string   `json:"scenario"`
	MemMiB   int      `json:"mem_mib"`
	Workload string   `json:"workload"`
	BootS    float64  `json:"boot_to_ready_s"`
	Ack      string   `json:"ack"`
	Runs     []migRun `json:"runs"`
	Verify   string   `json:"verify"`
	VerifyOK bool     `json:"verify_ok"`
	Error    string   `json:"error,omitempty"`
	// /proc/loadavg at the start and end: other work on the host shows here.
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`

	Completed int   `json:"completed"`
	SeqOK     int   `json:"seq_continuous_runs"`
	TotalMs   *stat `json:"total_ms,omitempty"`
	DownMs    *stat `json:"downtime_ms,omitempty"`
	PauseMs   *stat `json:"guest_pause_ms,omitempty"`
	SentMiB   *stat `json:"sent_mib,omitempty"`
	SetupMs   *stat `json:"setup_ms,omitempty"`
	Rounds    *stat `json:"rounds,omitempty"`
	Throttle  *stat `json:"max_throttle_pct,omitempty"`
	FirstMiBs *stat `json:"first_round_mib_s,omitempty"`
	SrcGapMs  *stat `json:"src_max_hb_gap_ms,omitempty"`
	DstGapMs  *stat `json:"dst_max_hb_gap_ms,omitempty"`
	WallMs    *stat `json:"wall_ms,omitempty"`
	AvgMiBs   *stat `json:"avg_mib_s,omitempty"` // bytes / total time
}

type migrateResult struct {
	Godwit []*godwitScenario `json:"godwit"`
	QEMU   []*qemuScenario   `json:"qemu,omitempty"`
}

// benchMigrate runs each scenario on Godwit, then on QEMU with its
// defaults and uncapped.
func benchMigrate(e *env) (*migrateResult, error) {
	res := &migrateResult{}
	var errs []string
	for _, n := range e.scenarios {
		s, _ := scenarioByName(n)
		g := godwitScenarioRun(e, s)
		res.Godwit = append(res.Godwit, g)
		if g.Error != "" {
			errs = append(errs, fmt.Sprintf("godwit %s: %s", n, g.Error))
		}
		if !e.qemuOK {
			continue
		}
		for _, v := range qemuVariants {
			q := qemuScenarioRun(e, s, v)
			res.QEMU = append(res.QEMU, q)
			if q.Error != "" {
				errs = append(errs, fmt.Sprintf("qemu %s %s: %s", v.Label, n, q.Error))
			}
		}
	}
	if len(errs) > 0 {
		return res, errors.New(strings.Join(errs, "; "))
	}
	return res, nil
}

// godwitScenarioRun boots one guest, starts the workload and migrates it
// ping-pong e.runs times, then verifies the guest's memory.
func godwitScenarioRun(e *env, s scenario) *godwitScenario {
	g := &godwitScenario{Scenario: s.Name, MemMiB: s.MemMiB, Workload: s.Workload, LoadBefore: loadavg()}
	defer func() { g.LoadAfter = loadavg() }()
	gen := 1
	name := func() string { return fmt.Sprintf("godwit-%s-vm%d", s.Name, gen) }
	progress("migrate: Godwit %s: booting a %d MiB guest", s.Name, s.MemMiB)
	argv := append([]string{e.godwit, "run", "--name", name()}, e.guestArgs(s)...)
	argv = append(argv, "--mem", fmt.Sprintf("%dM", s.MemMiB), "--cpus", "1", "--api-socket", e.sock(name()),
		"--log-level", "warn", "--accel", e.accel)
	src, err := toolkit.Start(name(), append(argv, e.tlsArgs()...),
		toolkit.Options{LogDir: e.logDir()})
	if err != nil {
		g.Error = err.Error()
		return g
	}
	defer func() { src.Stop(5 * time.Second) }()
	if g.BootS, err = waitReady(src, readyWithin(s)); err != nil {
		g.Error = err.Error()
		return g
	}
	ack, err := startWorkload(src, s.Workload)
	if err != nil {
		g.Error = err.Error()
		return g
	}
	g.Ack = ack.Text
	progress("migrate: Godwit %s: %s; settling %v", s.Name, ack.Text, e.settle)
	time.Sleep(e.settle)

	for i := 1; i <= e.runs; i++ {
		gen++
		dst, r := migrateOnce(e, src, name(), i)
		g.Runs = append(g.Runs, r)
		progress("migrate: Godwit %s run %d: %s", s.Name, i, runText(r))
		if dst != nil {
			src = dst
		}
		if src.Exited() {
			g.Error = fmt.Sprintf("run %d: no VM left running (%s)", i, r.Status)
			return g
		}
		time.Sleep(2 * time.Second) // the destination's first ~2.5 s, for its longest heartbeat gap
		if dst != nil {
			last := &g.Runs[len(g.Runs)-1]
			last.DstMaxGapMs, last.DstSeqErrors = dstHeartbeats(dst)
		}
	}

	v, sent, err := verify(src)
	if !sent {
		g.Error = err.Error()
		return g
	}
	if err != nil {
		g.Error = err.Error()
	} else {
		g.Verify = v.Text
		g.VerifyOK = strings.HasPrefix(v.Text, "VERIFY OK")
		if !g.VerifyOK {
			g.Error = "guest memory verify failed: " + v.Text
		}
	}
	progress("migrate: Godwit %s: %s", s.Name, g.Verify)
	g.summarize()
	if g.Error == "" && g.Completed < len(g.Runs) {
		g.Error = fmt.Sprintf("%d of %d migrations did not complete", len(g.Runs)-g.Completed, len(g.Runs))
	}
	if g.Error == "" && g.SeqOK < g.Completed {
		g.Error = fmt.Sprintf("heartbeat sequence broken in %d of %d migrations", g.Completed-g.SeqOK, g.Completed)
	}
	return g
}

// waitReady waits for the guest's READY on p and returns the seconds
// since p was launched.
func waitReady(p *toolkit.Proc, within time.Duration) (float64, error) {
	ready, err := p.WaitPrefix(0, "READY", within)
	if err != nil {
		return 0, err
	}
	return ready.At.Sub(p.Launched).Seconds(), nil
}

// startWorkload types `W workload` on p's console and waits for the
// guest's ACK line.
func startWorkload(p *toolkit.Proc, workload string) (guest.Line, error) {
	mark := p.Con.Mark()
	if err := p.Send("W " + workload + "\n"); err != nil {
		return guest.Line{}, err
	}
	return p.WaitPrefix(mark, "ACK W "+workload, 300*time.Second)
}

// dstHeartbeats checks the heartbeats a migration destination printed
// since it resumed: the longest gap (ms) and the sequence errors.
func dstHeartbeats(dst *toolkit.Proc) (gapMs float64, seqErrors []string) {
	c := guest.CheckHeartbeats(dst.Con.Heartbeats())
	return ms(c.LongestGap), c.SeqErrors
}

// verify types V on p's console and waits for the guest's VERIFY line
// (sent is false if typing failed).
func verify(p *toolkit.Proc) (l guest.Line, sent bool, err error) {
	mark := p.Con.Mark()
	if err := p.Send("V\n"); err != nil {
		return l, false, err
	}
	l, err = p.WaitPrefix(mark, "VERIFY ", 600*time.Second)
	return l, true, err
}

// migrateOnce starts a fresh destination on a free loopback port and
// migrates src to it. It returns the destination (nil if the migration did
// not complete; src then keeps running).
func migrateOnce(e *env, src *toolkit.Proc, dstName string, run int) (*toolkit.Proc, migRun) {
	r := migRun{Run: run}
	port, err := freePort()
	if err != nil {
		r.Status, r.Error = "setup failed", err.Error()
		return nil, r
	}
	r.To = fmt.Sprintf("127.0.0.1:%d", port)
	dstSock := e.sock(dstName)
	dst, err := toolkit.Start(dstName, append([]string{e.godwit, "run", "--incoming", "tcp:" + r.To, "--name", dstName,
		"--api-socket", dstSock, "--log-level", "warn", "--accel", e.accel}, e.tlsArgs()...), toolkit.Options{LogDir: e.logDir()})
	if err != nil {
		r.Status, r.Error = "setup failed", err.Error()
		return nil, r
	}
	if err := waitIncoming(e, dst, dstSock, 30*time.Second); err != nil {
		dst.Stop(5 * time.Second)
		r.Status, r.Error = "setup failed", err.Error()
		return nil, r
	}

	t0 := time.Now()
	out, err := toolkit.Run(5*time.Minute, e.godwit, "migrate", "--api-socket", e.sock(src.Name), "--to", r.To, "--json")
	r.WallMs = ms(time.Since(t0))
	var reply api.MigrateReply
	if jerr := json.Unmarshal(out, &reply); jerr == nil {
		r.Report = reply.Report
	}
	switch {
	case err != nil:
		r.Status, r.Error = "failed", err.Error()
	case reply.Error != "":
		r.Status, r.Error = "failed", reply.Error
	case r.Report == nil:
		r.Status, r.Error = "failed", "no report in: "+toolkit.Shorten(string(out), 200)
	case r.Report.Result != "completed":
		r.Status, r.Error = r.Report.Result, r.Report.Error
	default:
		r.Status = "completed"
	}
	if r.Status != "completed" {
		dst.Stop(5 * time.Second)
		return nil, r
	}
	if rep := r.Report; len(rep.Rounds) > 0 && rep.Rounds[0].DurationMs > 0 {
		r.FirstRoundMiB = float64(rep.Rounds[0].Bytes) / (1 << 20)
		r.FirstRoundMiBs = r.FirstRoundMiB / (rep.Rounds[0].DurationMs / 1000)
	}

	// The source exits after a successful migration; then its console is
	// complete.
	if !src.WaitExit(30 * time.Second) {
		r.Error = "source still running 30 s after the migration completed; stopped"
		src.Stop(5 * time.Second)
	}
	if err := dst.WaitHeartbeats(len(dst.Con.Heartbeats())+50, 30*time.Second); err != nil {
		r.Status, r.Error = "no heartbeats on the destination", err.Error()
		return dst, r
	}
	sw, err := toolkit.Handover(src, dst)
	if err != nil {
		r.Status, r.Error = "no heartbeats", err.Error()
		return dst, r
	}
	r.SrcLastSeq, r.DstFirstSeq, r.SplitLine = sw.SrcLast.Seq, sw.DstFirst.Seq, sw.Split
	r.SeqContinuous, r.GuestPauseMs = sw.SeqContinuous, ms(sw.Pause)
	var during []guest.Heartbeat
	for _, h := range src.Con.Heartbeats() {
		if !h.At.Before(t0.Add(-20 * time.Millisecond)) {
			during = append(during, h)
		}
	}
	r.SrcMaxGapMs = ms(guest.CheckHeartbeats(during).LongestGap)
	return dst, r
}

// waitIncoming waits until the destination VMM listens for the VM (its API
// reports state "incoming").
func waitIncoming(e *env, p *toolkit.Proc, sock string, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		if p.Exited() {
			return fmt.Errorf("%s exited before listening: %v (see logs/%s.stderr.log)", p.Name, p.Err(), p.Name)
		}
		out, err := toolkit.Run(10*time.Second, e.godwit, "status", "--api-socket", sock, "--json")
		if err == nil {
			var st struct {
				State string `json:"state"`
			}
			if json.Unmarshal(out, &st) == nil && st.State == "incoming" {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: not listening after %v", p.Name, timeout)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// sock is a unique API socket path for a VMM name.
func (e *env) sock(name string) string { return filepath.Join(e.tmpDir, name+".sock") }

// summarize fills the statistics over the completed runs.
func (g *godwitScenario) summarize() {
	var total, down, pause, sent, setup, rounds, thr, first, sgap, dgap, wall, avg []float64
	for _, r := range g.Runs {
		if r.Status != "completed" || r.Report == nil {
			continue
		}
		g.Completed++
		if r.SeqContinuous {
			g.SeqOK++
		}
		rep := r.Report
		total = append(total, rep.TotalMs)
		down = append(down, rep.DowntimeMs)
		pause = append(pause, r.GuestPauseMs)
		sent = append(sent, float64(rep.Bytes)/(1<<20))
		setup = append(setup, rep.SetupMs)
		rounds = append(rounds, float64(len(rep.Rounds)))
		thr = append(thr, float64(rep.MaxThrottle))
		if r.FirstRoundMiBs > 0 {
			first = append(first, r.FirstRoundMiBs)
		}
		sgap = append(sgap, r.SrcMaxGapMs)
		dgap = append(dgap, r.DstMaxGapMs)
		wall = append(wall, r.WallMs)
		if rep.TotalMs > 0 {
			avg = append(avg, float64(rep.Bytes)/(1<<20)/(rep.TotalMs/1000))
		}
	}
	g.TotalMs, g.DownMs, g.PauseMs, g.SentMiB = summarize(total), summarize(down), summarize(pause), summarize(sent)
	g.SetupMs, g.Rounds, g.Throttle, g.FirstMiBs = summarize(setup), summarize(rounds), summarize(thr), summarize(first)
	g.SrcGapMs, g.DstGapMs, g.WallMs, g.AvgMiBs = summarize(sgap), summarize(dgap), summarize(wall), summarize(avg)
}

func runText(r migRun) string {
	if r.Status != "completed" || r.Report == nil {
		return fmt.Sprintf("%s: %s", r.Status, r.Error)
	}
	rep := r.Report
	s := fmt.Sprintf("total %.1f ms, downtime %.1f ms, guest pause %.1f ms, %.1f MiB, %d rounds, throttle %d%%, seq %d->%d",
		rep.TotalMs, rep.DowntimeMs, r.GuestPauseMs, float64(rep.Bytes)/(1<<20), len(rep.Rounds), rep.MaxThrottle,
		r.SrcLastSeq, r.DstFirstSeq)
	if r.FirstRoundMiBs > 0 {
		s += fmt.Sprintf(", first round %.0f MiB at %.0f MiB/s", r.FirstRoundMiB, r.FirstRoundMiBs)
	}
	if r.Error != "" {
		s += " (" + r.Error + ")"
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// tlsArgs are the Godwit VMMs' TLS flags (--tls-dir), if any.
func (e *env) tlsArgs() []string {
	if e.tlsDir == "" {
		return nil
	}
	return []string{"--migration-tls-dir", e.tlsDir}
}
