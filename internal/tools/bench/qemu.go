package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// runHarness runs one script of the QEMU harness (read-only directory) with
// BENCH_OUT in our output directory and GUEST_ELF = our guest, echoes its
// output to stderr, and returns the directory it printed after
// "results in ". The harness and the QEMUs it starts form their own process
// group, which is killed as a whole on timeout or interrupt.
func runHarness(e *env, tag string, timeout time.Duration, script string, args ...string) (string, error) {
	var (
		mu  sync.Mutex
		dir string
	)
	out := &lineScanner{prefix: "    [" + tag + "]", fn: func(l string) {
		if d, ok := strings.CutPrefix(l, "results in "); ok {
			mu.Lock()
			dir = strings.TrimSpace(d)
			mu.Unlock()
		}
	}}
	argv := append([]string{"python3", filepath.Join(e.harness, script)}, args...)
	env := []string{"BENCH_OUT=" + filepath.Join(e.outDir, "qemu"), "GUEST_ELF=" + e.guestELF, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"}
	if e.qemuAccel() == "tcg" {
		env = append(env, "ACCEL=tcg")
	}
	p, err := toolkit.Start(tag, argv, toolkit.Options{Dir: e.harness, Env: env, Group: true, Stdout: out, LogDir: e.logDir()})
	if err != nil {
		return "", err
	}
	if !p.WaitExit(timeout) {
		p.Stop(5 * time.Second)
		err = fmt.Errorf("%s %s: %w after %v", script, strings.Join(args, " "), toolkit.ErrTimeout, timeout)
	} else if p.Err() != nil {
		err = fmt.Errorf("%s %s: %v (see %s.stderr.log)", script, strings.Join(args, " "), p.Err(), tag)
	}
	mu.Lock()
	defer mu.Unlock()
	if dir == "" {
		// killed before it printed: take the newest result directory
		dir = newestDir(filepath.Join(e.outDir, "qemu", "results"))
	}
	return dir, err
}

func newestDir(parent string) string {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return ""
	}
	var best string
	var bestT time.Time
	for _, d := range ents {
		if i, err := d.Info(); err == nil && d.IsDir() && i.ModTime().After(bestT) {
			best, bestT = filepath.Join(parent, d.Name()), i.ModTime()
		}
	}
	return best
}

// qemuMigrate is one migrate.py invocation.
type qemuMigrate struct {
	Label      string                   `json:"label"` // "default" or "uncapped"
	Args       []string                 `json:"args"`
	MemMiB     int                      `json:"mem_mib"`
	ResultDir  string                   `json:"result_dir"`
	Version    string                   `json:"qemu_version,omitempty"`
	Scenarios  map[string]*qemuScenario `json:"scenarios"`
	Error      string                   `json:"error,omitempty"`
	LoadBefore string                   `json:"loadavg_before"`
	LoadAfter  string                   `json:"loadavg_after"`
}

// qemuScenario is one scenario of migrate.py, summarised over the
// completed runs only (a cancelled pre-copy has no downtime or pause).
type qemuScenario struct {
	Statuses  []string `json:"statuses"`
	Completed int      `json:"completed"`
	TotalMs   *stat    `json:"total_ms,omitempty"`
	DownMs    *stat    `json:"downtime_ms,omitempty"`
	PauseMs   *stat    `json:"guest_pause_ms,omitempty"`
	SentMiB   *stat    `json:"sent_mib,omitempty"`
	Mbps      *stat    `json:"mbps,omitempty"`
	Syncs     *stat    `json:"dirty_syncs,omitempty"`
	Throttle  *stat    `json:"throttle_pct,omitempty"`
	SeqOK     int      `json:"seq_continuous_runs"`
	SrcGapMs  *stat    `json:"src_max_hb_gap_ms,omitempty"` // during pre-copy
	DstGapMs  *stat    `json:"dst_max_hb_gap_ms,omitempty"` // first 10 s on the destination
	AllSent   *stat    `json:"sent_mib_all_runs,omitempty"` // including cancelled runs
	AllWallS  *stat    `json:"wall_s_all_runs,omitempty"`
	AllMbps   *stat    `json:"mbps_all_runs,omitempty"`
	Cancelled bool     `json:"any_cancelled"`
}

// qemuMigrations runs migrate.py for the scenarios of one guest size, with
// QEMU's defaults and with the bandwidth cap lifted.
func qemuMigrations(e *env, names []string, memMiB int) []*qemuMigrate {
	var out []*qemuMigrate
	for _, v := range []struct {
		label string
		extra []string
	}{{"default", nil}, {"uncapped", []string{"--param", "max-bandwidth=10737418240"}}} {
		args := append(append([]string{}, names...), "--runs", strconv.Itoa(e.runs), "--timeout", strconv.Itoa(e.qemuTimeout))
		args = append(args, v.extra...)
		q := &qemuMigrate{Label: v.label, Args: args, MemMiB: memMiB, Scenarios: map[string]*qemuScenario{}, LoadBefore: loadavg()}
		progress("migrate: QEMU %s: migrate.py %s", v.label, strings.Join(args, " "))
		budget := 2*time.Minute + time.Duration(len(names)*e.runs)*(time.Duration(e.qemuTimeout)*time.Second+40*time.Second)
		dir, err := runHarness(e, "qemu-migrate-"+strings.Join(names, "+")+"-"+v.label, budget, "migrate.py", args...)
		q.ResultDir, q.LoadAfter = dir, loadavg()
		if err != nil {
			q.Error = err.Error()
			progress("migrate: QEMU %s: %v", v.label, err)
		}
		if dir != "" {
			if err := q.parse(filepath.Join(dir, "result.json")); err != nil {
				q.Error = joinErr(q.Error, err.Error())
			}
		}
		out = append(out, q)
	}
	return out
}

// parse reads migrate.py's result.json.
func (q *qemuMigrate) parse(path string) error {
	var hr struct {
		Qemu      string `json:"qemu"`
		Scenarios map[string]struct {
			Statuses []string         `json:"statuses"`
			Runs     []map[string]any `json:"runs"`
		} `json:"scenarios"`
	}
	if err := readJSON(path, &hr); err != nil {
		return err
	}
	q.Version = hr.Qemu
	for name, sc := range hr.Scenarios {
		s := &qemuScenario{Statuses: sc.Statuses}
		var total, down, pause, sent, mbps, syncs, thr, sgap, dgap, allSent, allWall, allMbps []float64
		for _, r := range sc.Runs {
			if v, ok := num(r, "transferred_bytes"); ok {
				allSent = append(allSent, v/(1<<20))
			}
			if v, ok := num(r, "wall_s"); ok {
				allWall = append(allWall, v)
			}
			if v, ok := num(r, "mbps"); ok {
				allMbps = append(allMbps, v)
			}
			if r["status"] != "completed" {
				s.Cancelled = true
				continue
			}
			s.Completed++
			if b, _ := r["seq_continuous"].(bool); b {
				s.SeqOK++
			}
			for _, x := range []struct {
				key   string
				dst   *[]float64
				scale float64
			}{{"total_time_ms", &total, 1}, {"downtime_ms", &down, 1}, {"guest_pause_ms", &pause, 1},
				{"transferred_bytes", &sent, 1.0 / (1 << 20)}, {"mbps", &mbps, 1}, {"dirty_sync_count", &syncs, 1},
				{"cpu_throttle_pct_max", &thr, 1}, {"src_max_hb_gap_ms_during_precopy", &sgap, 1},
				{"dst_max_hb_gap_ms_first_10s", &dgap, 1}} {
				if v, ok := num(r, x.key); ok {
					*x.dst = append(*x.dst, v*x.scale)
				}
			}
		}
		s.TotalMs, s.DownMs, s.PauseMs, s.SentMiB = summarize(total), summarize(down), summarize(pause), summarize(sent)
		s.Mbps, s.Syncs, s.Throttle = summarize(mbps), summarize(syncs), summarize(thr)
		s.SrcGapMs, s.DstGapMs = summarize(sgap), summarize(dgap)
		s.AllSent, s.AllWallS, s.AllMbps = summarize(allSent), summarize(allWall), summarize(allMbps)
		q.Scenarios[name] = s
	}
	return nil
}

func num(m map[string]any, k string) (float64, bool) {
	v, ok := m[k].(float64)
	return v, ok
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// lineScanner copies a child's output to stderr line by line with a prefix
// and calls fn for each line (the harness's progress).
type lineScanner struct {
	prefix string
	fn     func(string)
	mu     sync.Mutex
	part   []byte
}

func (s *lineScanner) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.part = append(s.part, b...)
	consumed := 0
	for {
		i := bytes.IndexByte(s.part[consumed:], '\n')
		if i < 0 {
			break
		}
		line := string(s.part[consumed : consumed+i])
		consumed += i + 1
		if s.fn != nil {
			s.fn(line)
		}
		if s.prefix != "" {
			fmt.Fprintf(os.Stderr, "%s %s\n", s.prefix, toolkit.Shorten(line, 300))
		}
	}
	s.part = append(s.part[:0], s.part[consumed:]...)
	return len(b), nil
}
