// Command bench measures Godwit against QEMU on this host, with the very
// same test guest (guest/build/guest.elf) in both VMMs, on the same kind of
// accelerator (KVM against KVM, Godwit's software CPU against QEMU's TCG):
//
//	go run ./internal/tools/bench boot     [flags]   boot time and VMM memory overhead
//	go run ./internal/tools/bench cpu      [flags]   the guest's CPU and memory work
//	go run ./internal/tools/bench migrate  [flags]   live migration (and the loopback limit)
//	go run ./internal/tools/bench loopback [flags]   plain loopback TCP throughput only
//	go run ./internal/tools/bench all      [flags]   boot, then migrate
//
// Both VMMs are started and measured here, the same way (QEMU through
// internal/tools/qemu: -kernel on the guest ELF, QMP, the serial console
// on stdio read line by line with host arrival times):
//
//   - boot: wall time from launching the VMM process to the host receiving
//     the guest's first heartbeat line (`HB 0 ...`) and its `READY` line, for a
//     1 GiB, 1 vCPU guest, median of --boot-runs launches per VMM. VMM
//     memory overhead: one second after READY, the process's resident
//     memory (sum of Rss in /proc/PID/smaps) minus the Rss of the guest-RAM
//     mapping (the anonymous mapping whose size equals the guest RAM size),
//     and the anonymous part of it (Σ Anonymous minus the guest mapping's):
//     file pages of the binary and libraries are page cache that every VMM
//     on a host shares, anonymous memory is each VMM's own.
//   - migrate: the scenarios idle, ws64, ws512 (1 GiB) and idle4g (4 GiB).
//     Per VMM setting (Godwit with its defaults; QEMU with its defaults,
//     128 MiB/s bandwidth cap, and with max-bandwidth=10 GiB/s): boot once
//     per scenario, start the workload (`W alloc wset rate`), let it run
//     --settle, then migrate ping-pong --runs times, each time to a fresh
//     destination in incoming mode on a new loopback port (the destination
//     of one run is the source of the next). Per run: the VMM's report
//     (Godwit's migration report; QEMU's query-migrate, polled every 50 ms,
//     the pre-copy cancelled after --qemu-timeout), and from the consoles
//     the guest-visible pause (host arrival time of the destination's first
//     heartbeat minus that of the source's last one) and whether the
//     heartbeat sequence number continues by exactly one. After the last
//     run the guest must answer `V` with VERIFY OK.
//   - loopback: the plain TCP limit of this host: a re-executed copy of this
//     program writes --loopback-gib GiB from a prefaulted mmap'd buffer in
//     4 MiB writes to this process, which reads into another; median GB/s of
//     3. Godwit's migration throughput (bytes / duration of the first, full
//     pre-copy round of ws512 and ws64) is reported as a share of it.
//
// Progress goes to stderr, the markdown report to stdout, and the JSON
// results, the markdown, and every VMM's console (with host arrival times)
// and stderr to $BENCH_OUT/godwit-bench-<time>/ (BENCH_OUT defaults to
// /tmp/godwit-bench); --save DIR also writes the JSON and the markdown as
// DIR/<date>-bench-<mode>.json and .md (docs/results holds those kept).
// Every process started here is stopped by its pid on exit, failure or
// Ctrl-C. The tool installs nothing: without qemu-system-x86_64 it says so
// and reports Godwit alone.
//
// Who may import: nobody; `make bench-boot`, `make bench-cpu` and
// `make bench-migrate` run it.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/tools/qemu"
	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// config is what the flags say.
type config struct {
	godwit      string
	guestELF    string
	linuxDir    string // the Linux guest (make linux-guest)
	linuxKernel string // which of its kernels linux-boot boots: vmlinux or bzImage
	outBase     string
	bootRuns    int
	runs        int
	scenarios   []string
	settle      time.Duration
	qemuTimeout int // s: a QEMU pre-copy still running after it is cancelled
	noQEMU      bool
	loopback    bool
	loopbackGiB int
	tlsDir      string // migrate: Godwit VMMs migrate over TLS with this directory
	accel       string // Godwit's accelerator: kvm or emu (auto resolved)
	save        string // also write the results as SAVE/<date>-bench-<mode>.json and .md
}

// qemuAccel is the QEMU accelerator of the same kind as Godwit's.
func (c *config) qemuAccel() string { return qemu.AccelFor(c.accel) }

// env is one invocation: its configuration and where it writes.
type env struct {
	config
	outDir string // $BENCH_OUT/godwit-bench-<time>
	tmpDir string // API sockets
	qemuOK bool   // qemu-system-x86_64 is there and not --no-qemu
	// qemuDefaults is query-migrate-parameters of the first QEMU booted.
	qemuDefaults json.RawMessage
}

const usageText = `usage: go run ./internal/tools/bench <boot|cpu|migrate|loopback|all> [flags]

  boot      launch -> first heartbeat / READY, and VMM memory overhead (Godwit vs QEMU)
  linux-boot  the same with the Linux guest (Debian's bzImage and the project's initramfs)
  cpu       the guest's W 64 64 0 dirty rate, V time and LOOP int|mem|br rates on 1 and 2 vCPUs, each VMM's CPU (--boot-runs runs)
  migrate   live migration scenarios (Godwit vs QEMU default vs QEMU uncapped), then loopback
  loopback  plain loopback TCP throughput
  all       boot, then migrate

flags:
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == loopbackSendCmd {
		// hidden: the sending half of the loopback measurement
		if err := loopbackSend(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench loopback-send:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, usageText)
		fs.PrintDefaults()
	}
	root := repoRoot()
	var c config
	var scen string
	fs.StringVar(&c.godwit, "godwit", filepath.Join(root, "bin", "godwit"), "godwit binary (make build)")
	fs.StringVar(&c.guestELF, "guest", filepath.Join(root, "guest", "build", "guest.elf"), "test guest ELF (make guest)")
	fs.StringVar(&c.outBase, "out", envOr("BENCH_OUT", "/tmp/godwit-bench"), "results go to OUT/godwit-bench-<time>/ (default $BENCH_OUT)")
	fs.StringVar(&c.linuxDir, "linux", filepath.Join(root, "guest", "build", "linux"), "linux-boot: the Linux guest's directory (make linux-guest)")
	fs.StringVar(&c.linuxKernel, "linux-kernel", "vmlinux", "linux-boot: the kernel file of --linux both VMMs boot: vmlinux (PVH entry) or bzImage (through its decompressor)")
	fs.IntVar(&c.bootRuns, "boot-runs", 5, "boot, linux-boot: launches per VMM")
	fs.IntVar(&c.runs, "runs", 3, "migrate: migrations per scenario and VMM")
	fs.StringVar(&scen, "scenarios", "idle,ws64,ws512,idle4g", "migrate: scenarios, comma-separated (linux-idle and linux-ws64 boot the Linux guest of --linux)")
	fs.DurationVar(&c.settle, "settle", 3*time.Second, "migrate: run the workload this long before the first migration")
	fs.IntVar(&c.qemuTimeout, "qemu-timeout", 45, "migrate: seconds after which a QEMU pre-copy is cancelled")
	fs.BoolVar(&c.noQEMU, "no-qemu", false, "measure Godwit only")
	fs.BoolVar(&c.loopback, "loopback", true, "migrate: also measure the loopback TCP limit")
	fs.IntVar(&c.loopbackGiB, "loopback-gib", 2, "loopback: GiB per run")
	fs.StringVar(&c.accel, "accel", "auto", "accelerator: auto (KVM when /dev/kvm exists, else the software CPU), kvm or emu; QEMU runs the same kind (KVM or TCG)")
	fs.StringVar(&c.save, "save", "", "also write the results as DIR/<date>-bench-<mode>.json and .md (e.g. docs/results)")
	fs.StringVar(&c.tlsDir, "tls-dir", "", "migrate: Godwit migrates over TLS with this --migration-tls-dir (ca.pem, cert.pem and key.pem naming 127.0.0.1); QEMU stays plain")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs.Usage()
		return 2
	}
	mode := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	for _, s := range strings.Split(scen, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if _, ok := scenarioByName(s); !ok {
			fmt.Fprintf(os.Stderr, "bench: unknown scenario %q (have idle, ws64, ws512, idle4g, linux-idle, linux-ws64)\n", s)
			return 2
		}
		c.scenarios = append(c.scenarios, s)
	}
	switch mode {
	case "boot", "linux-boot", "cpu", "migrate", "loopback", "all":
	default:
		fs.Usage()
		return 2
	}

	e, err := newEnv(c, mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer os.RemoveAll(e.tmpDir)
	defer toolkit.StopAll(5 * time.Second)

	toolkit.OnSignal(func(s os.Signal) {
		progress("interrupted (%s): stopping every process started here", s)
		toolkit.StopAll(5 * time.Second)
		os.RemoveAll(e.tmpDir)
	})

	res := &results{Mode: mode, Started: time.Now().Format(time.RFC3339), Host: hostInfo(), Config: e.describe()}
	var failed []string
	if mode == "boot" || mode == "all" {
		b, err := benchBoot(e)
		res.Boot = b
		if err != nil {
			failed = append(failed, "boot: "+err.Error())
		}
	}
	if mode == "linux-boot" {
		b, err := benchLinuxBoot(e)
		res.LinuxBoot = b
		if err != nil {
			failed = append(failed, "linux-boot: "+err.Error())
		}
	}
	if mode == "cpu" {
		c, err := benchCPU(e)
		res.CPU = c
		if err != nil {
			failed = append(failed, "cpu: "+err.Error())
		}
	}
	if mode == "migrate" || mode == "all" {
		m, err := benchMigrate(e)
		res.Migrate = m
		if err != nil {
			failed = append(failed, "migrate: "+err.Error())
		}
	}
	if mode == "loopback" || ((mode == "migrate" || mode == "all") && e.loopback) {
		l, err := benchLoopback(e)
		res.Loopback = l
		if err != nil {
			failed = append(failed, "loopback: "+err.Error())
		}
	}
	res.QEMUDefaults = e.qemuDefaults
	res.Finished = time.Now().Format(time.RFC3339)
	res.HostAfter = hostInfo()
	res.Errors = failed

	md := renderMarkdown(res)
	fmt.Print(md)
	if err := writeResults(e, res, md); err != nil {
		progress("writing results: %v", err)
		return 1
	}
	progress("results in %s", e.outDir)
	if len(failed) > 0 {
		for _, f := range failed {
			progress("FAILED: %s", f)
		}
		return 1
	}
	return 0
}

// newEnv checks the inputs and creates the output and socket directories.
func newEnv(c config, mode string) (*env, error) {
	e := &env{config: c}
	if mode != "loopback" {
		for _, p := range []*string{&e.godwit, &e.guestELF} {
			a, err := filepath.Abs(*p)
			if err != nil {
				return nil, err
			}
			*p = a
		}
		if _, err := os.Stat(e.godwit); err != nil {
			return nil, fmt.Errorf("godwit binary: %w (run `make build`)", err)
		}
		if _, err := os.Stat(e.guestELF); err != nil {
			return nil, fmt.Errorf("test guest: %w (run `make guest`)", err)
		}
		if mode == "linux-boot" || strings.Contains(strings.Join(c.scenarios, ","), "linux-") {
			if c.linuxKernel != "vmlinux" && c.linuxKernel != "bzImage" {
				return nil, fmt.Errorf("--linux-kernel %q: want vmlinux or bzImage", c.linuxKernel)
			}
			for _, f := range []string{"initramfs.cpio.gz", "vmlinux", c.linuxKernel} {
				if _, err := os.Stat(filepath.Join(e.linuxDir, f)); err != nil {
					return nil, fmt.Errorf("linux guest: %w (run `make linux-guest`)", err)
				}
			}
		}
		switch e.accel {
		case "auto":
			e.accel = "kvm"
			if _, err := os.Stat("/dev/kvm"); err != nil {
				e.accel = "emu"
			}
		case "kvm":
			if _, err := os.Stat("/dev/kvm"); err != nil {
				return nil, fmt.Errorf("--accel kvm: /dev/kvm: %w", err)
			}
		case "emu":
		default:
			return nil, fmt.Errorf("--accel %q: want auto, kvm or emu", e.accel)
		}
		progress("accelerators: Godwit %s, QEMU %s", e.accel, e.qemuAccel())
		if !e.noQEMU {
			if err := qemu.Check(); err != nil {
				progress("%v: the QEMU baseline is skipped", err)
			} else {
				e.qemuOK = true
			}
		}
	}
	stamp := time.Now().Format("20060102-150405")
	e.outDir = filepath.Join(e.outBase, "godwit-bench-"+stamp)
	if err := os.MkdirAll(e.outDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "godwit-bench-")
	if err != nil {
		return nil, err
	}
	e.tmpDir = tmp
	progress("results will go to %s", e.outDir)
	return e, nil
}

func (e *env) describe() map[string]any {
	return map[string]any{
		"godwit": e.godwit, "guest": e.guestELF, "linux_guest": e.linuxDir, "qemu": e.qemuOK,
		"boot_runs": e.bootRuns, "runs": e.runs, "scenarios": e.scenarios, "settle_s": e.settle.Seconds(),
		"qemu_timeout_s": e.qemuTimeout, "loopback_gib": e.loopbackGiB, "out": e.outDir, "godwit_tls": e.tlsDir != "",
		"godwit_accel": e.accel, "qemu_accel": e.qemuAccel(),
	}
}

// results is everything one invocation measured (result.json).
type results struct {
	Mode      string          `json:"mode"`
	Started   string          `json:"started"`
	Finished  string          `json:"finished"`
	Host      map[string]any  `json:"host"`
	HostAfter map[string]any  `json:"host_after"`
	Config    map[string]any  `json:"config"`
	Boot      *bootResult     `json:"boot,omitempty"`
	LinuxBoot *bootResult     `json:"linux_boot,omitempty"`
	CPU       *cpuResult      `json:"cpu,omitempty"`
	Migrate   *migrateResult  `json:"migrate,omitempty"`
	Loopback  *loopbackResult `json:"loopback,omitempty"`
	// QEMUDefaults is a fresh QEMU's query-migrate-parameters.
	QEMUDefaults json.RawMessage `json:"qemu_migrate_parameters_default,omitempty"`
	Errors       []string        `json:"errors,omitempty"`
}

func writeResults(e *env, res *results, md string) error {
	b, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.outDir, "result.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.outDir, "report.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if e.save == "" {
		return nil
	}
	base := filepath.Join(e.save, time.Now().Format("2006-01-02")+"-bench-"+res.Mode)
	if err := os.WriteFile(base+".json", append(b, '\n'), 0o644); err != nil {
		return err
	}
	progress("results saved as %s.json and .md", base)
	return os.WriteFile(base+".md", []byte(md), 0o644)
}

// hostInfo records what may explain noisy figures: CPUs, load, versions.
func hostInfo() map[string]any {
	h := map[string]any{}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		h["loadavg"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "processor") {
				n++
			}
			if name, ok := strings.CutPrefix(l, "model name"); ok && h["cpu"] == nil {
				h["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
			}
		}
		h["cpus"] = n
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h["kernel"] = strings.TrimSpace(string(b))
	}
	if v := qemu.Version(); v != "" {
		h["qemu"] = v
	}
	return h
}

// repoRoot is the directory holding go.mod, searched upwards from the
// working directory (make runs us from the repository root).
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return wd
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// progress prints a time-stamped progress line on stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}
