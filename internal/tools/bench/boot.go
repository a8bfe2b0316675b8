package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

const (
	bootMemMiB   = 1024 // guest size of the boot benchmark
	maxMergedKiB = 2048 // see rssInfo.MergedKiB
)

// bootRun is one launch of a VMM.
type bootRun struct {
	Run      int      `json:"run"`
	FirstHBS float64  `json:"launch_to_first_hb_s"`
	ReadyS   float64  `json:"launch_to_ready_s"`
	RSS      *rssInfo `json:"rss,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// rssInfo is a VMM's resident memory, split into guest RAM and the rest.
type rssInfo struct {
	TotalKiB    uint64 `json:"total_kib"`     // sum of Rss over every mapping
	GuestKiB    uint64 `json:"guest_ram_kib"` // Rss of the guest-RAM mapping
	OverheadKiB uint64 `json:"overhead_kib"`  // TotalKiB - GuestKiB
	// AnonOverheadKiB is the anonymous memory beyond guest RAM (Σ
	// Anonymous − the guest mapping's): what each VMM costs on its own.
	// The rest of the overhead is file pages (the binary, libraries):
	// page cache shared by every VMM on the host.
	AnonOverheadKiB uint64 `json:"anon_overhead_kib"`
	// The kernel merges adjacent anonymous mappings of the same kind: the
	// guest-RAM mapping may have grown by a small neighbour, whose Rss
	// (at most this much) then counts as guest RAM.
	MergedKiB uint64 `json:"guest_mapping_extra_kib"`
}

// bootSide is one VMM's boot figures.
type bootSide struct {
	Runs        []bootRun `json:"runs"`
	FirstHB     *stat     `json:"launch_to_first_hb_s,omitempty"`
	Ready       *stat     `json:"launch_to_ready_s,omitempty"`
	OverheadMiB *stat     `json:"rss_overhead_mib,omitempty"`
	AnonMiB     *stat     `json:"anon_overhead_mib,omitempty"`
	TotalMiB    *stat     `json:"rss_total_mib,omitempty"`
	GuestMiB    *stat     `json:"rss_guest_ram_mib,omitempty"`
	Error       string    `json:"error,omitempty"`
}

type bootResult struct {
	MemMiB int       `json:"mem_mib"`
	Kernel string    `json:"kernel,omitempty"` // linux-boot: vmlinux or bzImage
	Godwit *bootSide `json:"godwit"`           // godwit-vmm, sandboxed: what agents start
	// Unhardened is the all-in-one `godwit run --no-sandbox` (etcd
	// server, controller, agent and Prometheus linked in; no seccomp, all
	// capabilities): the VMM before the hardening, for its memory.
	Unhardened *bootSide `json:"godwit_unhardened,omitempty"`
	QEMU       *bootSide `json:"qemu,omitempty"`
}

// benchBoot measures launch -> first heartbeat / READY and the memory
// overhead, for Godwit and (if available) QEMU.
func benchBoot(e *env) (*bootResult, error) {
	res := &bootResult{MemMiB: bootMemMiB, Godwit: &bootSide{}, Unhardened: &bootSide{}}
	var errs []string
	vmm := filepath.Join(filepath.Dir(e.godwit), "godwit-vmm")
	for i := 1; i <= e.bootRuns; i++ {
		for _, side := range []struct {
			what string
			bin  []string
			into *bootSide
		}{
			{"godwit-vmm (sandboxed)", []string{vmm, "run"}, res.Godwit},
			{"godwit run --no-sandbox", []string{e.godwit, "run", "--no-sandbox"}, res.Unhardened},
		} {
			name := fmt.Sprintf("godwit-boot%d", i)
			sock := filepath.Join(e.tmpDir, name+".sock")
			argv := append(side.bin, "--name", name, "--kernel", e.guestELF, "--mem", "1G", "--cpus", "1",
				"--api-socket", sock, "--log-level", "warn", "--accel", e.accel)
			r := bootOnce(e, name, argv, i)
			progress("boot: %s run %d: first heartbeat %.3f s, READY %.3f s, RSS overhead %s%s",
				side.what, i, r.FirstHBS, r.ReadyS, rssText(r.RSS), errText(r.Error))
			if r.Error != "" {
				errs = append(errs, fmt.Sprintf("%s %d: %s", side.what, i, r.Error))
			}
			side.into.Runs = append(side.into.Runs, r)
		}
	}
	res.Godwit.summarize()
	res.Unhardened.summarize()

	if e.qemuOK {
		res.QEMU = qemuBoot(e)
		if res.QEMU.Error != "" {
			errs = append(errs, "qemu: "+res.QEMU.Error)
		}
	}
	if len(errs) > 0 {
		return res, errors.New(strings.Join(errs, "; "))
	}
	return res, nil
}

// bootOnce launches argv, waits for the first heartbeat and READY, measures
// RSS one second after READY and stops the VMM.
func bootOnce(e *env, name string, argv []string, run int) bootRun {
	return bootWithin(e, name, argv, run, 120*time.Second, bootMemMiB)
}

// bootWithin is bootOnce with a limit on the wait for READY and the guest
// size that RSS is measured against.
func bootWithin(e *env, name string, argv []string, run int, ready time.Duration, memMiB int) bootRun {
	r := bootRun{Run: run}
	p, err := toolkit.Start(name, argv, toolkit.Options{LogDir: e.logDir()})
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer p.Stop(5 * time.Second)
	readyLine, err := p.WaitPrefix(0, "READY", ready)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	if err := p.WaitHeartbeats(1, 10*time.Second); err != nil {
		r.Error = err.Error()
		return r
	}
	r.ReadyS = readyLine.At.Sub(p.Launched).Seconds()
	r.FirstHBS = p.Con.Heartbeats()[0].At.Sub(p.Launched).Seconds()
	time.Sleep(time.Second)
	rss, err := measureRSS(p.Pid(), uint64(memMiB)<<20)
	if err != nil {
		r.Error = err.Error()
	}
	r.RSS = rss
	return r
}

// qemuBoot launches QEMU e.bootRuns times on the same guest, memory and
// vCPU count as Godwit, measuring each launch as bootOnce does Godwit's.
func qemuBoot(e *env) *bootSide {
	q := &bootSide{}
	var errs []string
	for i := 1; i <= e.bootRuns; i++ {
		argv := e.qemuConfig(bootMemMiB, 1).Args()
		r := bootOnce(e, fmt.Sprintf("qemu-boot%d", i), argv, i)
		progress("boot: QEMU (%s) run %d: first heartbeat %.3f s, READY %.3f s, RSS overhead %s%s",
			e.qemuAccel(), i, r.FirstHBS, r.ReadyS, rssText(r.RSS), errText(r.Error))
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("run %d: %s", i, r.Error))
		}
		q.Runs = append(q.Runs, r)
	}
	q.Error = strings.Join(errs, "; ")
	q.summarize()
	return q
}

// summarize fills the statistics from the runs without error.
func (b *bootSide) summarize() {
	var hb, ready, over, anon, total, guest []float64
	for _, r := range b.Runs {
		if r.Error != "" && r.RSS == nil {
			continue
		}
		if r.FirstHBS > 0 {
			hb = append(hb, r.FirstHBS)
			ready = append(ready, r.ReadyS)
		}
		if r.RSS != nil {
			over = append(over, float64(r.RSS.OverheadKiB)/1024)
			anon = append(anon, float64(r.RSS.AnonOverheadKiB)/1024)
			total = append(total, float64(r.RSS.TotalKiB)/1024)
			guest = append(guest, float64(r.RSS.GuestKiB)/1024)
		}
	}
	b.FirstHB, b.Ready = summarize(hb), summarize(ready)
	b.OverheadMiB, b.TotalMiB, b.GuestMiB = summarize(over), summarize(total), summarize(guest)
	b.AnonMiB = summarize(anon)
}

// measureRSS reads /proc/PID/smaps: the sum of Rss over all mappings, and
// the Rss of guest RAM: the anonymous mapping of guestBytes (or slightly
// more, when the kernel merged a small neighbouring mapping into it).
func measureRSS(pid int, guestBytes uint64) (*rssInfo, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		r        rssInfo
		anon     bool
		isGuest  bool
		anonKiB  uint64 // Σ Anonymous
		gAnonKiB uint64 // the guest mapping's Anonymous
		sizeKiB  uint64
		found    int
		sc       = bufio.NewScanner(f)
		guestKiB = guestBytes >> 10
	)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			// a mapping header: addr perms offset dev inode [path]
			anon = len(fields) == 5 && fields[4] == "0"
			sizeKiB, isGuest = 0, false
			continue
		}
		switch fields[0] {
		case "Size:":
			sizeKiB, _ = strconv.ParseUint(fields[1], 10, 64)
		case "Rss:":
			kib, _ := strconv.ParseUint(fields[1], 10, 64)
			r.TotalKiB += kib
			if anon && sizeKiB >= guestKiB && sizeKiB-guestKiB <= maxMergedKiB {
				r.GuestKiB += kib
				r.MergedKiB += sizeKiB - guestKiB
				found++
				isGuest = true
			}
		case "Anonymous:":
			kib, _ := strconv.ParseUint(fields[1], 10, 64)
			anonKiB += kib
			if isGuest {
				gAnonKiB += kib
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if found != 1 {
		return &r, fmt.Errorf("smaps of pid %d: %d anonymous mappings of %d KiB (+ up to %d KiB), want exactly one for guest RAM", pid, found, guestKiB, maxMergedKiB)
	}
	r.OverheadKiB = r.TotalKiB - r.GuestKiB
	r.AnonOverheadKiB = anonKiB - gAnonKiB
	return &r, nil
}

func rssText(r *rssInfo) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB, %.1f MiB anonymous (total %.1f, guest RAM %.1f)", float64(r.OverheadKiB)/1024,
		float64(r.AnonOverheadKiB)/1024, float64(r.TotalKiB)/1024, float64(r.GuestKiB)/1024)
}

func errText(s string) string {
	if s == "" {
		return ""
	}
	return " ERROR: " + s
}

func joinErr(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// logDir is where consoles and stderr of the VMMs go.
func (e *env) logDir() string {
	d := filepath.Join(e.outDir, "logs")
	os.MkdirAll(d, 0o755)
	return d
}
