// Command netbench is Godwit's network blackout benchmark: how much a
// client on the network notices a live migration, Godwit against QEMU, on
// the same topology, the same guest ELF and in the same run.
//
//	go run ./internal/tools/netbench [--runs 5] [--godwit bin/godwit] [--guest guest/build/guest.elf]
//
// It builds a netlab (two host namespaces with their own bridges uplinked
// to a shared bridge, a client namespace, a migration network; see
// docs/NETWORK.md), boots one guest per VMM on host A and migrates it
// ping-pong A→B, B→A, … with a fresh destination process each time. Around
// every migration the client pings the guest and streams UDP to its echo
// port every 10 ms, from 0.5 s before the migration until 1.5 s after it
// returned; packet sockets on the shared bridge's host ports record when
// the guest's frames (the VMM's RARP, gratuitous ARPs, replies) first
// arrive through the destination host. Per run it records ICMP and UDP
// loss, duplicates and longest gap, the VMM-reported total time and
// downtime, the guest-visible pause from heartbeats (host arrival of the
// first destination HB minus the last source one, as the bench tool
// measures it) and whether the shared bridge's FDB points the guest's MAC
// at the destination host's port right after the migration returns.
// Before each scenario's migrations, the same probes run for as long
// without a migration (control windows), to show what a client notices of
// the VMM and host anyway. A run during which the host was so loaded that
// the probe sender itself stalled is measured again (--redo-disturbed).
//
// QEMU is driven through internal/tools/qemu.
//
// Results (JSON, markdown, every console and stderr) go to
// $BENCH_OUT/godwit-netbench-<time>/ (default BENCH_OUT=/tmp/godwit-bench).
// Every process is stopped by pid and the lab removed on exit, also on
// Ctrl-C.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/godwit-vmm/godwit/internal/netlab"
	"github.com/godwit-vmm/godwit/internal/tools/qemu"
	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// Timing of one measurement window.
const (
	probeInterval = 10 * time.Millisecond
	leadIn        = 500 * time.Millisecond  // probes before the migration starts
	tail          = 1500 * time.Millisecond // probes after it returned
	straggle      = 300 * time.Millisecond  // wait for late replies
	settle        = time.Second             // between runs
)

// scenario is a guest workload during the migrations.
type scenario struct {
	Name     string `json:"name"`
	Workload string `json:"workload"` // W command, "" = idle
}

var scenarios = map[string]scenario{
	"idle": {"idle", ""},
	"w64":  {"w64", "W 64 64 0"},
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[netbench %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func main() {
	runs := flag.Int("runs", 5, "migrations per VMM setting and scenario (ping-pong A→B, B→A, …)")
	godwitBin := flag.String("godwit", "bin/godwit", "godwit binary")
	guestELF := flag.String("guest", "guest/build/guest.elf", "test guest ELF (booted by both VMMs)")
	linuxDir := flag.String("linux", "", "boot the Linux guest of this directory in both VMMs instead (vmlinux and initramfs.cpio.gz, make linux-guest)")
	scen := flag.String("scenarios", "idle,w64", "comma-separated scenarios: idle (heartbeats only), w64 (W 64 64 0: 64 MiB dirtied flat out)")
	qemuDefault := flag.Bool("qemu-default", true, "also measure QEMU with its default bandwidth cap (idle scenario only: a dirtying guest does not converge under the cap)")
	noQEMU := flag.Bool("no-qemu", false, "measure Godwit only")
	redo := flag.Int("redo-disturbed", 3, "per setting, repeat up to this many runs during which the host was so loaded that the probe sender itself stalled > 50 ms (they stay in the JSON, marked discarded)")
	accelName := flag.String("accel", "auto", "accelerator: auto (KVM when /dev/kvm exists, else the software CPU), kvm or emu; QEMU runs the same kind (KVM or TCG)")
	render := flag.String("render", "", "only print the markdown tables of an earlier results.json")
	save := flag.String("save", "", "also write the results as DIR/<date>-bench-net[-linux].json and .md (e.g. docs/results); with --render, write that run's")
	flag.Parse()
	if *render != "" {
		if err := renderFile(*render, *save); err != nil {
			progress("error: %v", err)
			os.Exit(1)
		}
		return
	}
	accel, err := resolveAccel(*accelName)
	if err != nil {
		progress("error: %v", err)
		os.Exit(2)
	}
	if err := run(*runs, *redo, *godwitBin, *guestELF, *linuxDir, *scen, *qemuDefault, !*noQEMU, accel, *save); err != nil {
		progress("error: %v", err)
		os.Exit(1)
	}
}

// renderFile prints the markdown of a results.json written earlier and,
// with save, writes it there as a run would have.
func renderFile(path, save string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	md := res.markdown()
	if save != "" {
		if err := res.writeCompact(md, save, res.saveName()); err != nil {
			return err
		}
	}
	fmt.Print(md)
	return nil
}

// linuxGuestNote ends results.Guest for a run of the Linux guest.
const linuxGuestNote = " (the Linux guest)"

// saveName names the files of --save: the run's date, and which guest,
// so that the test guest's and Linux's results of a day do not overwrite
// each other.
func (r *results) saveName() string {
	name := r.Started.Format("2006-01-02") + "-bench-net"
	if strings.HasSuffix(r.Guest, linuxGuestNote) {
		name += "-linux"
	}
	return name
}

// cleanup stops every child and removes the lab, once.
var cleanup = struct {
	once sync.Once
	lab  *netlab.Lab
	mu   sync.Mutex
}{}

func doCleanup() {
	cleanup.once.Do(func() {
		toolkit.StopAll(3 * time.Second)
		cleanup.mu.Lock()
		defer cleanup.mu.Unlock()
		if cleanup.lab != nil {
			if err := cleanup.lab.Close(); err != nil {
				progress("removing the lab: %v", err)
			}
		}
	})
}

func run(runs, redo int, godwitBin, guestELF, linuxDir, scenList string, qemuDefault, withQEMU bool, accel, save string) error {
	if runs < 1 {
		return fmt.Errorf("--runs %d: at least 1", runs)
	}
	var err error
	if godwitBin, err = filepath.Abs(godwitBin); err != nil {
		return err
	}
	if guestELF, err = filepath.Abs(guestELF); err != nil {
		return err
	}
	for _, f := range []string{godwitBin, guestELF} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%v (run `make build guest`)", err)
		}
	}
	var scens []scenario
	for _, s := range strings.Split(scenList, ",") {
		sc, ok := scenarios[strings.TrimSpace(s)]
		if !ok {
			return fmt.Errorf("unknown scenario %q (idle, w64)", s)
		}
		scens = append(scens, sc)
	}
	if withQEMU {
		if err := qemu.Check(); err != nil {
			return fmt.Errorf("%v; or pass --no-qemu", err)
		}
	}
	out := os.Getenv("BENCH_OUT")
	if out == "" {
		out = "/tmp/godwit-bench"
	}
	outDir := filepath.Join(out, "godwit-netbench-"+time.Now().Format("20060102-150405"))
	logDir := filepath.Join(outDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	sockDir, err := os.MkdirTemp("", "gwnb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(sockDir)

	toolkit.OnSignal(func(s os.Signal) {
		progress("%v: stopping every VMM and removing the lab", s)
		doCleanup()
	})
	defer doCleanup()

	lab, err := netlab.New("", 2)
	if err != nil {
		return err
	}
	cleanup.mu.Lock()
	cleanup.lab = lab
	cleanup.mu.Unlock()
	progress("lab %s: hosts %s (%s) and %s (%s), client %s", lab.Prefix, lab.Hosts()[0].Name, lab.Hosts()[0].MigAddr,
		lab.Hosts()[1].Name, lab.Hosts()[1].MigAddr, lab.Client.Addr)

	res := &results{Started: time.Now(), Runs: runs, Redo: redo, OutDir: outDir, Lab: lab.Prefix, CPUs: runtime.NumCPU(),
		LoadBefore: loadavg(), Godwit: godwitBin, Guest: guestELF, Scenarios: scens}
	if linuxDir != "" {
		res.Guest = linuxDir + linuxGuestNote
	}
	res.Host, _ = os.Hostname()
	res.Kernel = strings.TrimSpace(string(must(exec.Command("uname", "-r").Output())))
	res.QEMUVersion = qemu.Version()

	res.GodwitAccel, res.QEMUAccel = accel, qemu.AccelFor(accel)
	progress("accelerators: Godwit %s, QEMU %s", res.GodwitAccel, res.QEMUAccel)
	if linuxDir != "" {
		if linuxDir, err = filepath.Abs(linuxDir); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(linuxDir, "initramfs.cpio.gz")); err != nil {
			return fmt.Errorf("%w (run make linux-guest)", err)
		}
	}
	g := &godwitVMM{bin: godwitBin, elf: guestELF, linux: linuxDir, mac: "52:54:00:6e:62:01", ip: lab.GuestAddr(0), dir: sockDir, logDir: logDir, accel: accel}
	type plan struct {
		v        vmm
		mac, ip  string
		variants func(scenario) []variant
	}
	plans := []plan{{g, g.mac, g.ip.String(), func(scenario) []variant { return []variant{{VMM: "Godwit", Label: "Godwit"}} }}}
	if withQEMU {
		q := &qemuVMM{elf: guestELF, linux: linuxDir, mac: "52:54:00:6e:62:02", ip: lab.GuestAddr(1), dir: sockDir, logDir: logDir, accel: qemu.AccelFor(accel)}
		plans = append(plans, plan{q, q.mac, q.ip.String(), func(s scenario) []variant {
			vs := []variant{{VMM: "QEMU", Label: "QEMU uncapped", QEMUBandwidth: 10 << 30}}
			if qemuDefault && s.Workload == "" {
				vs = append(vs, variant{VMM: "QEMU", Label: "QEMU default"})
			}
			return vs
		}})
	}
	for _, pl := range plans {
		err := measureVMM(lab, pl.v, pl.mac, netip.MustParseAddr(pl.ip), scens, pl.variants, runs, redo, res)
		if qv, ok := pl.v.(*qemuVMM); ok {
			res.QEMUDefaults = qv.defaults
		}
		if err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", pl.v.name(), err))
			progress("%s: %v", pl.v.name(), err)
		}
	}
	res.LoadAfter = loadavg()
	res.Finished = time.Now()
	md := res.markdown()
	if err := res.write(md, res.OutDir, "results"); err != nil {
		return err
	}
	if save != "" {
		if err := res.writeCompact(md, save, res.saveName()); err != nil {
			return err
		}
		progress("results saved in %s", save)
	}
	fmt.Print(md)
	progress("results in %s", outDir)
	return nil
}

// measureVMM boots one guest on host A and runs every scenario and variant
// on it, migrating ping-pong.
func measureVMM(lab *netlab.Lab, v vmm, macStr string, ip netip.Addr, scens []scenario,
	variants func(scenario) []variant, runs, redo int, res *results) error {
	hosts := lab.Hosts()
	mac, _ := net.ParseMAC(macStr)
	progress("%s: booting the guest on %s (1 GiB, 1 vCPU, ip %s)", v.name(), hosts[0].Name, ip)
	t := time.Now()
	cur, err := v.boot(hosts[0])
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	progress("%s: READY after %.1f s", v.name(), time.Since(t).Seconds())
	defer func() { v.stop(cur) }()
	// Teach the client and the bridges where the guest is.
	if r, err := netlab.Ping(lab.Client.Name, ip, 20, 20*time.Millisecond, 300*time.Millisecond); err != nil || r.Received == 0 {
		return fmt.Errorf("guest unreachable before migrating: %v %v", r, err)
	}
	port := 47000
	if v.name() == "QEMU" {
		port = 48000
	}
	for _, sc := range scens {
		if sc.Workload != "" {
			mark := cur.p.Con.Mark()
			if err := v.console(cur, sc.Workload+"\n"); err != nil {
				return err
			}
			if _, err := waitPrefix(cur.p, mark, "ACK W", 120*time.Second); err != nil {
				return err
			}
			time.Sleep(2 * time.Second) // let the sweep reach its rate
		}
		// The same probes without a migration: what the client notices
		// of this VMM and host anyway.
		for i := 1; i <= runs; i++ {
			c, err := controlWindow(lab, ip)
			if err != nil {
				return err
			}
			c.VMM, c.Scenario, c.Run = v.name(), sc.Name, i
			res.Controls = append(res.Controls, c)
		}
		progress("%s %s: %d control windows without migration done", v.name(), sc.Name, runs)
		for _, va := range variants(sc) {
			failures, redone := 0, 0
			for i := 1; i <= runs; i++ {
				port++
				src := cur
				dstHost := hosts[0]
				if src.host == hosts[0] {
					dstHost = hosts[1]
				}
				r, next := oneRun(lab, v, src, dstHost, netip.AddrPortFrom(dstHost.MigAddr, uint16(port)), mac, ip, va)
				r.Scenario, r.Run = sc.Name, i
				res.add(r)
				cur = next
				progress("%s %s #%d %s→%s: %s", va.Label, sc.Name, i, r.From, r.To, r.oneLine())
				if r.ok() && r.disturbed() && redone < redo {
					// Our own probe sender did not run on time: the
					// host was overloaded, so the VMMs were starved too.
					// Keep the run in the JSON, leave it out of the
					// statistics and measure once more.
					r.Discarded = true
					redone++
					progress("  (disturbed by host load: discarded, measuring again)")
					i--
					time.Sleep(settle)
					continue
				}
				if r.Error != "" {
					failures++
					if cur == nil || cur.p.Exited() {
						return fmt.Errorf("guest lost: %s", r.Error)
					}
					if failures >= 2 {
						progress("%s %s: two failed migrations, skipping the rest of this setting", va.Label, sc.Name)
						break
					}
				}
				time.Sleep(settle)
			}
		}
	}
	return nil
}

// controlWindow runs the probes for as long as a migration window lasts
// (lead-in + tail + 100 ms), without migrating.
func controlWindow(lab *netlab.Lab, ip netip.Addr) (*controlResult, error) {
	ping, err := startPing(lab.Client.Name, ip, probeInterval)
	if err != nil {
		return nil, err
	}
	udp, err := startUDP(lab.Client.Name, netip.AddrPortFrom(ip, 7), probeInterval)
	if err != nil {
		finishAll(0, ping)
		return nil, err
	}
	t0 := time.Now()
	c := &controlResult{Load: loadavg()}
	time.Sleep(leadIn + tail + 100*time.Millisecond)
	finishAll(straggle, ping, udp)
	c.Ping, c.UDP = ping.result(t0), udp.result(t0)
	c.Ping.Probes, c.UDP.Probes = nil, nil
	time.Sleep(settle)
	return c, nil
}

// oneRun migrates the guest from src to dstHost once under probes and
// returns the measurements and the instance now holding the guest.
func oneRun(lab *netlab.Lab, v vmm, src *instance, dstHost *netlab.Host, addr netip.AddrPort,
	mac net.HardwareAddr, ip netip.Addr, va variant) (*runResult, *instance) {
	r := &runResult{VMM: va.VMM, Setting: va.Label, From: src.host.Name, To: dstHost.Name, Load: loadavg()}
	srcPort := lab.Prefix + src.host.Name[len(src.host.Name)-1:]
	dstPort := lab.Prefix + dstHost.Name[len(dstHost.Name)-1:]
	fail := func(err error) (*runResult, *instance) {
		r.Error = err.Error()
		return r, src
	}
	dst, err := v.incoming(dstHost, addr)
	if err != nil {
		return fail(fmt.Errorf("destination: %w", err))
	}
	sn, err := startSniffer(lab.CoreNS(), []string{srcPort, dstPort}, mac)
	if err != nil {
		v.stop(dst)
		return fail(err)
	}
	ping, err := startPing(lab.Client.Name, ip, probeInterval)
	if err != nil {
		sn.finish()
		v.stop(dst)
		return fail(err)
	}
	udp, err := startUDP(lab.Client.Name, netip.AddrPortFrom(ip, 7), probeInterval)
	if err != nil {
		finishAll(0, ping)
		sn.finish()
		v.stop(dst)
		return fail(err)
	}
	time.Sleep(leadIn)

	t0 := time.Now()
	mr, merr := v.migrate(src, dst, addr, va)
	tRet := time.Now()
	// Where does the shared bridge send the guest's MAC now?
	r.FDBPort = fdbPort(lab.CoreNS(), mac.String())
	r.FDBCheckMs = msSince(t0, time.Now())
	r.FDBOK = r.FDBPort == dstPort
	r.Mig, r.ReturnMs = mr, msSince(t0, tRet)

	next := src
	if merr == nil && mr.Status == "completed" {
		v.retire(src)
		next = dst
	} else {
		r.Error = fmt.Sprintf("migration %s: %v", mr.Status, merr)
		if v.running(dst) {
			// The command failed but the guest runs on the destination
			// (e.g. the source died after the handover): carry on there.
			r.Error += " — but the destination runs the guest: handed over"
			r.HandedOver = true
			v.retire(src)
			next = dst
		}
	}
	time.Sleep(time.Until(tRet.Add(tail)))
	finishAll(straggle, ping, udp)
	frames := sn.finish()
	r.Ping, r.UDP = ping.result(t0), udp.result(t0)
	r.Net = timeline(frames, t0, srcPort, dstPort)
	r.Net.findGuestGARP(va.VMM == "Godwit")
	if next == src {
		v.stop(dst)
		return r, src
	}

	// The guest-visible pause, from the heartbeats' host arrival times.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dst.p.Con.WaitHeartbeats(ctx, 3)
	cancel()
	// A heartbeat line the source began and the destination finished
	// counts as the destination's first, arriving with its newline.
	sw, err := toolkit.Handover(src.p, dst.p)
	r.SplitLine = sw.Split
	r.PauseMs, r.SrcLastHBMs, r.DstFirstHBMs = -1, -1, -1
	if err == nil {
		last, first := sw.SrcLast, sw.DstFirst
		r.PauseMs = ms(sw.Pause)
		r.SrcLastHBMs, r.DstFirstHBMs = msSince(t0, last.At), msSince(t0, first.At)
		r.SrcLastSeq, r.DstFirstSeq = last.Seq, first.Seq
		r.SeqOK = sw.SeqContinuous
	}
	r.GuestAnnounceMs = -1
	for _, l := range dst.p.Con.Lines() {
		if strings.HasPrefix(l.Text, "NET announce") {
			r.GuestAnnounceMs = msSince(t0, l.At)
			r.GuestAnnounce = l.Text
			break
		}
	}
	// When the destination's vCPUs started: QEMU's RESUME event; Godwit
	// logs "announcing the guest" right after starting them (ms precision).
	r.DstResumeMs = -1
	if dst.q != nil {
		if ev := dst.q.QMP.Events("RESUME"); len(ev) > 0 {
			r.DstResumeMs = msSince(t0, ev[0].Arrived)
		}
	} else if at, ok := logTime(dst.p.Stderr(), "announcing the guest on the network"); ok {
		r.DstResumeMs = msSince(t0, at)
	}
	return r, dst
}

// logTime finds the first slog text line whose message is msg and returns
// its time= field.
func logTime(log, msg string) (time.Time, bool) {
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `msg="`+msg+`"`) {
			continue
		}
		f := strings.Fields(l)
		if len(f) > 0 && strings.HasPrefix(f[0], "time=") {
			t, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time="))
			return t, err == nil
		}
	}
	return time.Time{}, false
}

// fdbPort returns the port the core bridge br0 forwards mac to ("" if it
// has no entry).
func fdbPort(ns, mac string) string {
	out, err := exec.Command("ip", "netns", "exec", ns, "bridge", "fdb", "show", "br", "br0").Output()
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && strings.EqualFold(f[0], mac) && f[1] == "dev" {
			return f[2]
		}
	}
	return ""
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func must(b []byte, _ error) []byte { return b }

// resolveAccel turns --accel into Godwit's accelerator: auto is KVM where
// /dev/kvm exists and the software CPU where it does not.
func resolveAccel(name string) (string, error) {
	_, err := os.Stat("/dev/kvm")
	switch name {
	case "auto":
		if err != nil {
			return "emu", nil
		}
		return "kvm", nil
	case "kvm":
		if err != nil {
			return "", fmt.Errorf("--accel kvm: /dev/kvm: %w", err)
		}
		return "kvm", nil
	case "emu":
		return "emu", nil
	}
	return "", fmt.Errorf("--accel %q: want auto, kvm or emu", name)
}
