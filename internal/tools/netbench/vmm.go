package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/netlab"
	"github.com/godwit-vmm/godwit/internal/tools/qemu"
	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// instance is one VMM process holding the guest (a source) or waiting for
// it (a destination), in one host namespace.
type instance struct {
	p    *toolkit.Proc
	host *netlab.Host
	sock string   // Godwit API socket or QEMU QMP socket
	q    *qemu.VM // QEMU only
}

// migResult is what the VMM itself reports about one migration.
type migResult struct {
	Status     string             `json:"status"` // completed, failed, cancelled(timeout), …
	TotalMs    float64            `json:"total_ms"`
	DowntimeMs float64            `json:"downtime_ms"`
	SetupMs    float64            `json:"setup_ms"`
	MiB        float64            `json:"mib_sent"`
	Switchover map[string]float64 `json:"switchover_ms,omitempty"` // Godwit: downtime by step
	Raw        json.RawMessage    `json:"raw,omitempty"`           // the VMM's whole report
}

// vmm drives one VMM in the lab. Godwit and QEMU implement it.
type vmm interface {
	// name is the column label ("Godwit", "QEMU").
	name() string
	// boot starts the guest on h and waits for READY.
	boot(h *netlab.Host) (*instance, error)
	// incoming starts a destination on h listening on addr.
	incoming(h *netlab.Host, addr netip.AddrPort) (*instance, error)
	// console types a line on the guest's serial console.
	console(in *instance, text string) error
	// migrate moves the guest from src to dst (listening on addr) and
	// returns once the VMM says it is done.
	migrate(src, dst *instance, addr netip.AddrPort, v variant) (migResult, error)
	// running says whether in runs the guest.
	running(in *instance) bool
	// retire ends a former source after a completed migration.
	retire(src *instance)
	// stop ends an instance.
	stop(in *instance)
}

// variant is a migration setting of a VMM: QEMU with and without its
// bandwidth cap; Godwit has one (its defaults, no cap).
type variant struct {
	VMM   string `json:"vmm"`
	Label string `json:"label"` // column label
	// QEMU max-bandwidth in bytes/s; 0 = QEMU's own default.
	QEMUBandwidth int64 `json:"qemu_max_bandwidth,omitempty"`
}

// ---- Godwit ------------------------------------------------------------

// godwitVMM runs bin/godwit.
type godwitVMM struct {
	bin, elf string
	linux    string // the Linux guest's directory, or "" for the test guest
	mac      string
	ip       netip.Addr
	dir      string // sockets
	logDir   string
	n        int    // instances started, for names
	accel    string // --accel
}

func (g *godwitVMM) name() string { return "Godwit" }

// linuxArgs boots the Linux guest of dir with address ip:
// --kernel K --initrd I --cmdline C (QEMU takes the same three).
func linuxArgs(dir string, ip netip.Addr) []string {
	return []string{"--kernel", filepath.Join(dir, "vmlinux"), "--initrd", filepath.Join(dir, "initramfs.cpio.gz"),
		"--cmdline", "console=ttyS0 nokaslr godwit.ip=" + ip.String()}
}

// bootWait is how long a guest may take to boot: minutes for Linux on the
// software CPU.
func bootWait(linux string, testGuest time.Duration) time.Duration {
	if linux != "" {
		return 10 * time.Minute
	}
	return testGuest
}

func (g *godwitVMM) start(h *netlab.Host, args ...string) (*instance, error) {
	g.n++
	sock := filepath.Join(g.dir, fmt.Sprintf("godwit%d.sock", g.n))
	argv := append([]string{"ip", "netns", "exec", h.Name, g.bin, "run", "--name", "vm", "--api-socket", sock,
		"--log-level", "info", "--accel", g.accel, "--tap", "gwn0", "--bridge", h.Bridge}, args...)
	p, err := toolkit.Start(fmt.Sprintf("godwit%d-%s", g.n, h.Name), argv, toolkit.Options{LogDir: g.logDir, OmitUnfinished: true})
	if err != nil {
		return nil, err
	}
	return &instance{p: p, host: h, sock: sock}, nil
}

func (g *godwitVMM) boot(h *netlab.Host) (*instance, error) {
	args := []string{"--kernel", g.elf, "--cmdline", "cpus=1 ip=" + g.ip.String()}
	if g.linux != "" {
		args = linuxArgs(g.linux, g.ip)
	}
	in, err := g.start(h, append(args, "--mem", "1G", "--cpus", "1", "--mac", g.mac)...)
	if err != nil {
		return nil, err
	}
	if _, err := waitPrefix(in.p, 0, "READY", bootWait(g.linux, 60*time.Second)); err != nil {
		g.stop(in)
		return nil, err
	}
	return in, nil
}

func (g *godwitVMM) incoming(h *netlab.Host, addr netip.AddrPort) (*instance, error) {
	// Plain TCP as QEMU's side of this comparison, between namespaces
	// this tool made: an off-loopback plaintext incoming must say so.
	in, err := g.start(h, "--incoming", "tcp:"+addr.String(), "--insecure-migration")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := api.NewClient(in.sock).Status(ctx)
		cancel()
		if err == nil {
			return in, nil
		}
		if time.Now().After(deadline) || in.p.Exited() {
			g.stop(in)
			return nil, fmt.Errorf("destination API %s did not come up: %v (stderr: %s)", in.sock, err, shorten(in.p.Stderr(), 400))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *godwitVMM) console(in *instance, text string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return api.NewClient(in.sock).Console(ctx, []byte(text))
}

// migrate runs `godwit migrate --json`, as an operator would.
func (g *godwitVMM) migrate(src, dst *instance, addr netip.AddrPort, _ variant) (migResult, error) {
	out, err := toolkit.Run(3*time.Minute, g.bin, "migrate", "--api-socket", src.sock, "--to", addr.String(), "--json")
	var rep api.MigrateReply
	if jerr := json.Unmarshal(out, &rep); jerr != nil || rep.Report == nil {
		return migResult{Status: "failed"}, errors.Join(err, fmt.Errorf("godwit migrate: no report: %s", shorten(string(out), 300)))
	}
	r := rep.Report
	raw, _ := json.Marshal(r)
	res := migResult{Status: r.Result, TotalMs: r.TotalMs, DowntimeMs: r.DowntimeMs, SetupMs: r.SetupMs,
		MiB: float64(r.Bytes) / (1 << 20), Switchover: r.Switchover, Raw: raw}
	if err == nil && rep.Error != "" {
		err = errors.New(rep.Error)
	}
	return res, err
}

func (g *godwitVMM) running(in *instance) bool {
	if in.p.Exited() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := api.NewClient(in.sock).Status(ctx)
	return err == nil && st.State == "running"
}

// retire waits for the source, which stops by itself after the handover.
func (g *godwitVMM) retire(src *instance) {
	if !src.p.WaitExit(10 * time.Second) {
		progress("  warning: Godwit source %s still running 10 s after the migration; stopping it", src.p.Name)
		src.p.Stop(3 * time.Second)
	}
}

func (g *godwitVMM) stop(in *instance) {
	if in == nil || in.p.Exited() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	api.NewClient(in.sock).Stop(ctx)
	cancel()
	if !in.p.WaitExit(5 * time.Second) {
		in.p.Stop(3 * time.Second)
	}
}

// ---- QEMU --------------------------------------------------------------

// qemuVMM runs qemu-system-x86_64 on the same guest ELF, with a legacy
// virtio-net on a TAP joined to the host's bridge.
type qemuVMM struct {
	elf      string
	linux    string // as godwitVMM's
	mac      string
	ip       netip.Addr
	dir      string
	logDir   string
	n        int
	defaults json.RawMessage // query-migrate-parameters of a fresh QEMU
	defBW    int64           // its max-bandwidth
	accel    string          // kvm or tcg
}

const qemuTAP = "gwq0"

func (q *qemuVMM) name() string { return "QEMU" }

func (q *qemuVMM) start(h *netlab.Host, incoming bool) (*instance, error) {
	q.n++
	sock := filepath.Join(q.dir, fmt.Sprintf("qemu%d.qmp", q.n))
	c := qemu.Config{Kernel: q.elf, MemMiB: 1024, CPUs: 1, Accel: q.accel, Append: "cpus=1 ip=" + q.ip.String(), QMP: sock,
		Net: []string{"-netdev", "tap,id=n0,ifname=" + qemuTAP + ",script=no,downscript=no,vhost=off",
			"-device", "virtio-net-pci,disable-modern=on,netdev=n0,mac=" + q.mac},
		Wrap: []string{"ip", "netns", "exec", h.Name}}
	if q.linux != "" {
		a := linuxArgs(q.linux, q.ip)
		c.Kernel, c.Initrd, c.Append = a[1], a[3], a[5]
	}
	if incoming {
		c.Incoming = "defer"
	}
	vm, err := qemu.Start(fmt.Sprintf("qemu%d-%s", q.n, h.Name), c, toolkit.Options{LogDir: q.logDir, OmitUnfinished: true})
	if err != nil {
		return nil, err
	}
	in := &instance{p: vm.Proc, host: h, sock: sock, q: vm}
	// QEMU creates the TAP but leaves it down and unattached.
	if err := netlab.InNS(h.Name, "link", "set", qemuTAP, "master", h.Bridge, "up"); err != nil {
		q.stop(in)
		return nil, err
	}
	return in, nil
}

func (q *qemuVMM) boot(h *netlab.Host) (*instance, error) {
	in, err := q.start(h, false)
	if err != nil {
		return nil, err
	}
	if _, err := waitPrefix(in.p, 0, "READY", bootWait(q.linux, 120*time.Second)); err != nil {
		q.stop(in)
		return nil, err
	}
	if q.defaults == nil {
		q.defaults, _ = in.q.MigrationParameters()
		var d struct {
			MaxBandwidth int64 `json:"max-bandwidth"`
		}
		json.Unmarshal(q.defaults, &d)
		q.defBW = d.MaxBandwidth
	}
	return in, nil
}

func (q *qemuVMM) incoming(h *netlab.Host, addr netip.AddrPort) (*instance, error) {
	in, err := q.start(h, true)
	if err != nil {
		return nil, err
	}
	if err := in.q.Incoming("tcp:" + addr.String()); err != nil {
		q.stop(in)
		return nil, err
	}
	return in, nil
}

func (q *qemuVMM) console(in *instance, text string) error { return in.p.Send(text) }

// migrate sets the bandwidth on the source (a former destination starts
// with QEMU's defaults, so it is set every time), runs `migrate` and polls
// query-migrate every 10 ms until it completes, fails or times out.
func (q *qemuVMM) migrate(src, dst *instance, addr netip.AddrPort, v variant) (migResult, error) {
	bw := v.QEMUBandwidth
	if bw == 0 {
		bw = q.defBW
	}
	o := qemu.MigrateOptions{URI: "tcp:" + addr.String(), Timeout: migTimeout, Poll: 10 * time.Millisecond}
	if bw > 0 {
		o.Parameters = map[string]any{"max-bandwidth": bw}
	}
	r, err := qemu.Migrate(src.q, dst.q, o)
	st := r.Final
	res := migResult{Status: r.Status, Raw: r.Raw}
	if r.Status == "completed" {
		res.TotalMs, res.DowntimeMs, res.SetupMs = st.TotalMs, st.DowntimeMs, st.SetupMs
		res.MiB = float64(st.RAM.Transferred) / (1 << 20)
	}
	return res, err
}

// migTimeout bounds one QEMU migration (a guest that never converges).
const migTimeout = 45 * time.Second

func (q *qemuVMM) running(in *instance) bool { return in.q != nil && in.q.Running() }

// retire quits the former source (paused in postmigrate), as a manager
// does once the destination runs; its TAP goes with it.
func (q *qemuVMM) retire(src *instance) { q.stop(src) }

func (q *qemuVMM) stop(in *instance) {
	if in == nil {
		return
	}
	if in.q == nil {
		in.p.Stop(3 * time.Second)
		return
	}
	in.q.Stop(5 * time.Second)
}

// waitPrefix waits for a console line of p starting with prefix, from line
// mark; its error quotes p's stderr.
func waitPrefix(p *toolkit.Proc, mark int, prefix string, timeout time.Duration) (guest.Line, error) {
	l, err := p.WaitPrefix(mark, prefix, timeout)
	if err != nil {
		return l, fmt.Errorf("%w (stderr: %s)", err, shorten(p.Stderr(), 400))
	}
	return l, nil
}

// shorten cuts s, without surrounding space, to n bytes.
func shorten(s string, n int) string { return toolkit.Shorten(strings.TrimSpace(s), n) }
