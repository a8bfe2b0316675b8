package agent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/godwit-vmm/godwit/internal/agent"
	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/cluster/etcdserver"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/fence"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

// godwitBin is the VMM binary the agents start, built by TestMain.
var godwitBin string

const childEnv = "GODWIT_AGENT_TEST_CHILD"

// TestMain builds bin/godwit for the VMMs. Run with childEnv set, the test
// binary is an agent process instead (so a test can kill -9 it).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(agentChild(os.Args[1:]))
	}
	os.Exit(testenv.RunWithGodwit(m, &godwitBin))
}

func agentChild(args []string) int {
	cfg, err := agent.ParseFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := agent.New(*cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 1
	}
	return 0
}

// pool is an etcd member with access control on, as a controller runs it,
// and a store client with the controller's certificate, for one test.
type pool struct {
	etcd  *etcdserver.Server
	st    *store.Store
	elf   string
	pki   *testenv.PoolPKI
	hosts []string        // with an etcd user
	admin *pki.Credential // a controller's: the agents' API serves it
}

func newPool(t *testing.T) *pool {
	t.Helper()
	testenv.RequireVM(t)
	testenv.RequireRoot(t)
	elf := testenv.GuestELF(t)
	ctx := context.Background()
	pk := testenv.NewPoolPKI(t, "godwit")
	ctlDir := pk.Issue(t, pki.RoleController, "c1", "127.0.0.1")
	srv, err := etcdserver.Start(ctx, etcdserver.Config{Dir: t.TempDir(), LogLevel: "off", TLSDir: ctlDir})
	if err != nil {
		t.Fatal(err)
	}
	p := &pool{etcd: srv, elf: elf, pki: pk}
	t.Cleanup(func() {
		if p.etcd != nil {
			p.etcd.Close()
		}
	})
	if p.admin, err = pki.LoadCredential(ctlDir); err != nil {
		t.Fatal(err)
	}
	cli, err := store.Connect(ctx, store.ClientConfig{Endpoints: srv.Endpoints(), TLS: p.admin.ClientConfig("", nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	if err := store.EnableAuth(ctx, cli, p.admin.Peer().String()); err != nil {
		t.Fatal(err)
	}
	p.st = store.New(cli)
	return p
}

// credential issues host's credential and gives it its etcd user, as
// `godwit pki issue` and the controller do.
func (p *pool) credential(t *testing.T, host string) string {
	t.Helper()
	dir := p.pki.Issue(t, pki.RoleHost, host, "127.0.0.1")
	p.hosts = append(p.hosts, host)
	if err := store.SyncHosts(context.Background(), p.st.Client(), p.hosts); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testAgent is one `godwit agent` process (the test binary in agent mode).
type testAgent struct {
	t      *testing.T
	host   string
	dir    string // state dir
	listen string
	args   []string
	cmd    *exec.Cmd
	done   chan struct{}
	log    string
	admin  *pki.Credential
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (p *pool) startAgent(t *testing.T, host string, ports string) *testAgent {
	t.Helper()
	return p.startAgentWith(t, host, ports)
}

// startAgentWith is startAgent with extra agent flags (later ones win).
func (p *pool) startAgentWith(t *testing.T, host string, ports string, extra ...string) *testAgent {
	t.Helper()
	dir := t.TempDir()
	// The VMMs drop to nobody and must still reach the fence file.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	a := &testAgent{t: t, host: host, dir: dir, listen: fmt.Sprintf("127.0.0.1:%d", freePort(t)), log: filepath.Join(dir, "agent.log"), admin: p.admin}
	a.args = []string{
		"--host", host, "--listen", a.listen, "--migrate-ip", "127.0.0.1", "--migrate-ports", ports,
		"--etcd", strings.Join(p.etcd.Endpoints(), ","), "--state-dir", dir, "--credential", p.credential(t, host),
		"--lease-ttl", "3s", "--lease-margin", "600ms", "--lease-renew", "600ms",
		"--usage-every", "1s", "--sync-every", "1s", "--godwit", godwitBin, "--vmm-log-level", "debug", "--verify-migrations",
	}
	a.args = append(a.args, extra...)
	t.Cleanup(func() {
		a.kill9()
		killVMMs(dir)
		if b, _ := os.ReadFile(a.log); strings.Contains(string(b), "DATA RACE") {
			t.Errorf("agent %s: the race detector reported a data race (see its log)", host)
		}
		if t.Failed() {
			b, _ := os.ReadFile(a.log)
			t.Logf("agent %s log:\n%s", host, tail(string(b), 12000))
			logs, _ := filepath.Glob(filepath.Join(dir, "vms", "*", "vmm.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", l, tail(string(b), 4000))
			}
		}
	})
	a.start()
	return a
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (a *testAgent) start() {
	a.t.Helper()
	logf, err := os.OpenFile(a.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== agent start %s\n", time.Now().Format(time.RFC3339Nano))
	a.cmd = exec.Command(os.Args[0], a.args...)
	a.cmd.Env = append(os.Environ(), childEnv+"=1")
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.done = make(chan struct{})
	go func() { a.cmd.Wait(); close(a.done) }()
}

func (a *testAgent) kill9() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Kill()
	<-a.done
	a.cmd = nil
}

// killVMMs kills every VMM a test agent left in its state dir.
func killVMMs(dir string) {
	pids, _ := filepath.Glob(filepath.Join(dir, "vms", "*", "pid"))
	for _, f := range pids {
		b, _ := os.ReadFile(f)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && vmmAlive(pid, filepath.Join(filepath.Dir(f), "api.sock")) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// vmmAlive reports whether pid is a live VMM serving sock.
func vmmAlive(pid int, sock string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), sock)
}

// client is the controller's client of the agent.
func (a *testAgent) client() *agent.Client {
	return agent.NewClient(a.listen, a.admin.ClientConfig("", pki.AllowPeer(pki.RoleHost, a.host)))
}

func (a *testAgent) vmDir(vm string) string { return filepath.Join(a.dir, "vms", vm) }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitHost waits until host is registered and alive; it returns its lease.
func (p *pool) waitHost(t *testing.T, host string) store.Host {
	t.Helper()
	var h store.Host
	waitFor(t, 10*time.Second, "host "+host+" to register", func() bool {
		var err error
		h, err = p.st.GetHost(context.Background(), host)
		return err == nil && h.Alive != nil && h.Info != nil
	})
	return h
}

// placeVM writes a running spec and makes host (lease) its owner, as the
// controller would.
func (p *pool) placeVM(t *testing.T, vm string, h store.Host, cmdline string) int64 {
	t.Helper()
	ctx := context.Background()
	spec := store.VMSpec{VCPUs: 1, MemBytes: 128 << 20, Kernel: p.elf, Cmdline: cmdline, Desired: store.DesiredRunning}
	if _, err := p.st.PutVMSpec(ctx, vm, spec, 0, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	// As the controller does: the host may write the VM's keys.
	if err := store.GrantVM(ctx, p.st.Client(), h.Name, vm); err != nil {
		t.Fatal(err)
	}
	res, err := p.st.CreateOwner(ctx, vm, h.Name, clientv3.LeaseID(h.Alive.Lease), store.Guard{})
	if err != nil || !res.Won {
		t.Fatalf("create owner: %v %v", res, err)
	}
	return res.Rev
}

// heartbeats parses a console log.
func heartbeats(path string) []guest.Heartbeat {
	b, _ := os.ReadFile(path)
	c := guest.NewConsole(nil)
	c.Write(b)
	return c.Heartbeats()
}

func (p *pool) waitStatus(t *testing.T, vm string, phase store.VMPhase) store.VMStatus {
	t.Helper()
	var st store.VMStatus
	waitFor(t, 15*time.Second, fmt.Sprintf("vm %s status %s", vm, phase), func() bool {
		var err error
		st, _, err = p.st.GetVMStatus(context.Background(), vm)
		return err == nil && st.Phase == phase
	})
	return st
}

// TestAgentRunsVM: the agent registers its host with facts, renews its
// lease and publishes the fence; a VM placed on it starts (heartbeats in
// its console log), its status appears, the API and metrics answer; desired
// stopped stops it and releases its owner key.
func TestAgentRunsVM(t *testing.T) {
	p := newPool(t)
	ctx := context.Background()
	a := p.startAgent(t, "h1", "4400-4419")
	h := p.waitHost(t, "h1")
	if h.Info.TSCKHz == 0 || !strings.HasPrefix(h.Info.CPUIDHash, "sha256:") || h.Info.CPUs == 0 || h.Info.MemBytes == 0 || h.Info.Addr != a.listen {
		t.Errorf("host facts incomplete: %+v", *h.Info)
	}
	t.Logf("host info: %+v", *h.Info)
	if h.State == nil || h.State.State != store.HostActive {
		t.Errorf("host state %+v, want active", h.State)
	}

	// The fence deadline moves forward with each renewal.
	fenceFile := filepath.Join(a.dir, "fence")
	d1, err := fence.Read(fenceFile)
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Duration(d1 - fence.Now()); left <= 0 || left > 3*time.Second {
		t.Errorf("fence deadline %v from now, want within (0, 3s]", left)
	}
	waitFor(t, 3*time.Second, "a renewal to move the fence deadline", func() bool {
		d2, err := fence.Read(fenceFile)
		return err == nil && d2 > d1
	})
	waitFor(t, 5*time.Second, "host usage", func() bool {
		h, err := p.st.GetHost(ctx, "h1")
		return err == nil && h.Usage != nil
	})

	ownerRev := p.placeVM(t, "vm1", h, "cpus=1")
	st := p.waitStatus(t, "vm1", store.VMRunning)
	if st.Host != "h1" || st.PID == 0 || !st.Migratable {
		t.Errorf("status %+v", st)
	}
	console := filepath.Join(a.vmDir("vm1"), "console.log")
	waitFor(t, 10*time.Second, "heartbeats in the console log", func() bool { return len(heartbeats(console)) > 20 })

	// API: HTTPS with a pool certificate only; the VM is listed.
	if resp, err := http.Get("http://" + a.listen + "/v1/host"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("GET /v1/host in plaintext: %s", resp.Status)
		}
	}
	hr, err := a.client().Host(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hr.VMs) != 1 || hr.VMs[0].Name != "vm1" || hr.VMs[0].PID != st.PID || hr.Lease == "" || hr.DeadlineLeftMs <= 0 {
		t.Errorf("GET /v1/host: %+v", hr)
	}
	waitFor(t, 5*time.Second, "metrics", func() bool {
		m, err := a.client().Metrics(ctx)
		return err == nil && strings.Contains(m, "godwit_agent_vms_running 1") && strings.Contains(m, "godwit_agent_lease_renewals_total")
	})

	// Desired stopped: the VMM stops, the owner key is released.
	spec, specRev, err := p.st.GetVMSpec(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	spec.Desired = store.DesiredStopped
	if _, err := p.st.PutVMSpec(ctx, "vm1", spec, specRev, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the VMM to stop", func() bool { return !vmmAlive(st.PID, filepath.Join(a.vmDir("vm1"), "api.sock")) })
	waitFor(t, 10*time.Second, "the owner key to be released", func() bool {
		_, _, err := p.st.GetOwner(ctx, "vm1")
		return errors.Is(err, store.ErrNotFound)
	})
	p.waitStatus(t, "vm1", store.VMStopped)
	t.Logf("owner rev was %d; VM stopped and released", ownerRev)
}

// TestAgentKilledVMFencesItself: after kill -9 of the agent, its VMM keeps
// running until the fence deadline and then stops itself, before etcd
// deletes the owner key.
func TestAgentKilledVMFencesItself(t *testing.T) {
	p := newPool(t)
	ctx := context.Background()
	a := p.startAgent(t, "h1", "4420-4439")
	h := p.waitHost(t, "h1")
	p.placeVM(t, "vm1", h, "cpus=1")
	st := p.waitStatus(t, "vm1", store.VMRunning)
	console := filepath.Join(a.vmDir("vm1"), "console.log")
	sock := filepath.Join(a.vmDir("vm1"), "api.sock")
	waitFor(t, 10*time.Second, "heartbeats", func() bool { return len(heartbeats(console)) > 10 })

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rev, err := p.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	owners := p.st.WatchOwners(wctx, rev+1)

	killed := time.Now()
	a.kill9()
	var lastGrowth, vmmGone, ownerDeleted time.Time
	size := int64(-1)
	for ownerDeleted.IsZero() || vmmGone.IsZero() {
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("after 10 s: vmm gone %v, owner deleted %v", !vmmGone.IsZero(), !ownerDeleted.IsZero())
		}
		select {
		case e := <-owners:
			if e.Err != nil {
				t.Fatal(e.Err)
			}
			if e.VM == "vm1" && e.Owner == nil {
				ownerDeleted = time.Now()
			}
		case <-time.After(5 * time.Millisecond):
		}
		if fi, err := os.Stat(console); err == nil && fi.Size() != size {
			size, lastGrowth = fi.Size(), time.Now()
		}
		if vmmGone.IsZero() && !vmmAlive(st.PID, sock) {
			vmmGone = time.Now()
		}
	}
	t.Logf("after kill -9 of the agent: last console output %v, VMM exited %v, owner key deleted %v",
		lastGrowth.Sub(killed).Round(time.Millisecond), vmmGone.Sub(killed).Round(time.Millisecond), ownerDeleted.Sub(killed).Round(time.Millisecond))
	if !lastGrowth.Before(ownerDeleted) || !vmmGone.Before(ownerDeleted) {
		t.Errorf("the VM ran until the owner key was deleted: fence is late")
	}
	if lastGrowth.Sub(killed) < 1200*time.Millisecond {
		t.Errorf("the VM stopped %v after the agent died; it should run until the deadline (≥ 1.8 s after the last renewal)", lastGrowth.Sub(killed))
	}
	b, _ := os.ReadFile(filepath.Join(a.vmDir("vm1"), "vmm.log"))
	if !strings.Contains(string(b), "fence") {
		t.Errorf("the VMM log does not say it was fenced:\n%s", tail(string(b), 2000))
	}
}

// TestAgentRestartAdoptsLeaseAndVMM: an agent killed and restarted within
// the margin adopts its lease and its running VMM (same pid, no restart).
func TestAgentRestartAdoptsLeaseAndVMM(t *testing.T) {
	p := newPool(t)
	ctx := context.Background()
	a := p.startAgent(t, "h1", "4440-4459")
	h := p.waitHost(t, "h1")
	ownerRev := p.placeVM(t, "vm1", h, "cpus=1")
	st := p.waitStatus(t, "vm1", store.VMRunning)
	console := filepath.Join(a.vmDir("vm1"), "console.log")
	sock := filepath.Join(a.vmDir("vm1"), "api.sock")
	waitFor(t, 10*time.Second, "heartbeats", func() bool { return len(heartbeats(console)) > 10 })

	killed := time.Now()
	a.kill9()
	a.start()
	waitFor(t, 5*time.Second, "the restarted agent to list the VM", func() bool {
		vms, err := a.client().VMs(ctx)
		return err == nil && len(vms) == 1 && vms[0].PID == st.PID
	})
	t.Logf("agent back and serving after %v", time.Since(killed).Round(time.Millisecond))
	// The API serves the adopted VMMs while the lease is still being
	// adopted; the host record is rewritten after that.
	waitFor(t, 5*time.Second, "the agent log to say it adopted the lease", func() bool {
		b, _ := os.ReadFile(a.log)
		return strings.Contains(string(b), "adopted the host lease")
	})
	h2 := p.waitHost(t, "h1")
	if h2.Alive.Lease != h.Alive.Lease {
		t.Errorf("lease %x after restart, want the adopted %x", h2.Alive.Lease, h.Alive.Lease)
	}
	// Well past the old deadline and the TTL: still the same VMM, running.
	n0 := len(heartbeats(console))
	time.Sleep(4 * time.Second)
	if !vmmAlive(st.PID, sock) {
		t.Fatal("the VMM is gone after the agent restart")
	}
	hbs := heartbeats(console)
	if len(hbs) < n0+200 {
		t.Errorf("%d heartbeats in 4 s after the restart, want ≥ 200", len(hbs)-n0)
	}
	if g := guest.CheckHeartbeats(hbs); len(g.SeqErrors) > 0 {
		t.Errorf("heartbeats: %v", g.SeqErrors)
	}
	o, rev, err := p.st.GetOwner(ctx, "vm1")
	if err != nil || o.Host != "h1" || rev != ownerRev {
		t.Errorf("owner %+v rev %d (%v), want h1 at rev %d", o, rev, err, ownerRev)
	}
	if s, _, err := p.st.GetVMStatus(ctx, "vm1"); err != nil || s.PID != st.PID || s.Phase != store.VMRunning {
		t.Errorf("status %+v %v", s, err)
	}
}

// TestAgentMigration: two agents (two hosts on one machine); a migration
// record moves a running VM from h1 to h2. The owner key ends on h2 with a
// higher revision, the guest's heartbeats continue and its verify passes.
func TestAgentMigration(t *testing.T) {
	p := newPool(t)
	ctx := context.Background()
	a1 := p.startAgent(t, "h1", "4460-4479")
	a2 := p.startAgent(t, "h2", "4480-4499")
	h1 := p.waitHost(t, "h1")
	p.waitHost(t, "h2")
	ownerRev := p.placeVM(t, "vm1", h1, "cpus=1")
	st := p.waitStatus(t, "vm1", store.VMRunning)
	srcConsole := filepath.Join(a1.vmDir("vm1"), "console.log")
	waitFor(t, 10*time.Second, "heartbeats", func() bool { return len(heartbeats(srcConsole)) > 10 })
	src := api.NewClient(filepath.Join(a1.vmDir("vm1"), "api.sock"))
	if err := src.Console(ctx, []byte("W 32 8 2000\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)

	began := time.Now()
	rec := store.Migration{ID: "m-test-1", VM: "vm1", Src: "h1", Dst: "h2", Reason: "user",
		ExpectOwnerRev: ownerRev, Phase: store.MigrationRequested, Started: began.UTC()}
	for _, h := range []string{rec.Src, rec.Dst} {
		if err := store.GrantVM(ctx, p.st.Client(), h, rec.VM); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.st.PutMigration(ctx, rec, 0, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	var m store.Migration
	waitFor(t, 20*time.Second, "the migration to end", func() bool {
		var err error
		m, _, err = p.st.GetMigration(ctx, "vm1")
		return err == nil && m.Phase.Terminal()
	})
	t.Logf("migration %s after %v: %+v", m.Phase, time.Since(began).Round(time.Millisecond), m)
	if m.Phase != store.MigrationCommitted {
		t.Fatalf("migration ended %s: %s", m.Phase, m.Error)
	}
	o, rev, err := p.st.GetOwner(ctx, "vm1")
	if err != nil || o.Host != "h2" || rev <= ownerRev || o.Migration != "m-test-1" {
		t.Fatalf("owner %+v rev %d (%v), want h2 above rev %d", o, rev, err, ownerRev)
	}
	// The source VMM exits; the destination agent adopts the VM.
	waitFor(t, 10*time.Second, "the source VMM to exit", func() bool {
		return !vmmAlive(st.PID, filepath.Join(a1.vmDir("vm1"), "api.sock"))
	})
	dst := p.waitStatus(t, "vm1", store.VMRunning)
	if dst.Host != "h2" {
		t.Errorf("status after migration: %+v", dst)
	}
	vms, err := a2.client().VMs(ctx)
	if err != nil || len(vms) != 1 || vms[0].Incoming {
		t.Errorf("h2 VMs: %+v %v", vms, err)
	}

	dstConsole := filepath.Join(a2.vmDir("vm1"), "console.log")
	dstAPI := api.NewClient(filepath.Join(a2.vmDir("vm1"), "api.sock"))
	if err := dstAPI.Console(ctx, []byte("V\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "VERIFY on the destination", func() bool {
		b, _ := os.ReadFile(dstConsole)
		return strings.Contains(string(b), "VERIFY ")
	})
	b, _ := os.ReadFile(dstConsole)
	if !strings.Contains(string(b), "VERIFY OK") {
		t.Errorf("verify on the destination failed: %s", tail(string(b), 500))
	}
	// Heartbeats: source then destination, one sequence without gaps.
	all := guest.NewConsole(nil)
	sb, _ := os.ReadFile(srcConsole)
	all.Write(sb)
	all.Write(b)
	g := guest.CheckHeartbeats(all.Heartbeats())
	if len(g.SeqErrors) > 0 {
		t.Errorf("heartbeats across the migration: %v", g.SeqErrors)
	}
	srcH, dstH := heartbeats(srcConsole), heartbeats(dstConsole)
	// The joined consoles form one gapless sequence (checked above; a line
	// the vCPU left half-printed on the source ends on the destination).
	if len(dstH) == 0 || len(srcH) == 0 {
		t.Errorf("heartbeats on both hosts expected: %d on the source, %d on the destination", len(srcH), len(dstH))
	} else {
		t.Logf("source heartbeats up to %d, destination from %d to %d", srcH[len(srcH)-1].Seq, dstH[0].Seq, dstH[len(dstH)-1].Seq)
	}
	waitFor(t, 5*time.Second, "the source agent to count the committed migration", func() bool {
		mt, _ := a1.client().Metrics(ctx)
		return strings.Contains(mt, `godwit_agent_migrations_total{result="committed"} 1`)
	})
	b, _ = os.ReadFile(a1.log)
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(l, "no report from the source VMM"):
			// The source VMM exits after the handover; it must answer
			// the migrate call first.
			t.Errorf("the source agent lost the VMM's report: %s", l)
		case strings.Contains(l, "migration committed"):
			t.Log(l)
		}
	}
}

// TestAgentLeaseLost: etcd goes away for longer than the lease: the VMM
// stops itself at the deadline, the agent kills what is left, and once
// etcd is back it joins with a new lease; the VM's owner key went with the
// old lease, so the VM is not started again here.
func TestAgentLeaseLost(t *testing.T) {
	p := newPool(t)
	ctx := context.Background()
	a := p.startAgent(t, "h1", "4400-4419")
	h := p.waitHost(t, "h1")
	p.placeVM(t, "vm1", h, "cpus=1")
	st := p.waitStatus(t, "vm1", store.VMRunning)
	sock := filepath.Join(a.vmDir("vm1"), "api.sock")
	console := filepath.Join(a.vmDir("vm1"), "console.log")
	waitFor(t, 10*time.Second, "heartbeats", func() bool { return len(heartbeats(console)) > 10 })

	cfg := p.etcd.Config()
	stopped := time.Now()
	closed := make(chan struct{})
	go func() { p.etcd.Close(); close(closed) }()
	waitFor(t, 5*time.Second, "the VMM to stop at the deadline", func() bool { return !vmmAlive(st.PID, sock) })
	t.Logf("etcd stopped; VMM gone after %v", time.Since(stopped).Round(time.Millisecond))
	<-closed
	srv, err := etcdserver.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.etcd = srv
	var h2 store.Host
	waitFor(t, 15*time.Second, "the agent to join with a new lease", func() bool {
		var err error
		h2, err = p.st.GetHost(ctx, "h1")
		return err == nil && h2.Alive != nil && h2.Alive.Lease != h.Alive.Lease
	})
	t.Logf("etcd back after %v; agent joined with lease %x (was %x)", time.Since(stopped).Round(time.Millisecond), h2.Alive.Lease, h.Alive.Lease)
	waitFor(t, 5*time.Second, "the old lease's owner key to go", func() bool {
		_, _, err := p.st.GetOwner(ctx, "vm1")
		return errors.Is(err, store.ErrNotFound)
	})
	// Two reconcile passes after the owner key went: none may start vm1
	// here again.
	passes := reconcilePasses(t, a)
	waitFor(t, 30*time.Second, "two more reconcile passes", func() bool { return reconcilePasses(t, a) >= passes+2 })
	if vms, err := a.client().VMs(ctx); err != nil || len(vms) != 0 {
		t.Errorf("VMs on h1 after the lease was lost: %+v %v", vms, err)
	}
	if b, _ := os.ReadFile(a.log); !strings.Contains(string(b), "host lease lost") {
		t.Error("the agent log does not report the lost lease")
	}
}

// reconcilePasses reads the agent's count of reconcile passes from its
// metrics.
func reconcilePasses(t *testing.T, a *testAgent) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := a.client().Metrics(ctx)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, line := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(line, "godwit_agent_reconcile_passes_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metrics: %q", line)
			}
			return int(n)
		}
	}
	t.Fatal("metrics: no godwit_agent_reconcile_passes_total")
	return 0
}

// TestAgentSandboxedVMM: the agent's VMM runs under its seccomp filter
// and without capabilities (/proc/PID/status), its guest working and
// pausing and resuming through the pool's stop/start; a VMM that makes a
// forbidden system call (the --seccomp-selftest aid, through a wrapper
// around the VMM binary) dies by SIGSYS and the agent reports why.
func TestAgentSandboxedVMM(t *testing.T) {
	p := newPool(t)
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "vmm-selftest")
	script := "#!/bin/sh\ncase \"$*\" in *--name\\ bad*) exec " + godwitBin + " \"$@\" --seccomp-selftest 3s;; esac\nexec " + godwitBin + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	a := p.startAgentWith(t, "h1", "4400-4419", "--godwit", wrapper)
	h := p.waitHost(t, "h1")
	p.placeVM(t, "good", h, "cpus=1")
	st := p.waitStatus(t, "good", store.VMRunning)
	// The VMM answers its API (and so is reported running) a moment
	// before its VM runs and it enters the sandbox.
	var status string
	waitFor(t, 10*time.Second, "the VMM to enter its sandbox", func() bool {
		status, _ = sandboxStatus(st.PID)
		return strings.Contains(status, "Seccomp:\t2")
	})
	if !strings.Contains(status, "Seccomp:\t2") || !strings.Contains(status, "NoNewPrivs:\t1") || !strings.Contains(status, "CapEff:\t0000000000000000") ||
		!strings.Contains(status, "Uid:\t65534\t65534\t65534\t65534") {
		t.Errorf("the VMM is not sandboxed:\n%s", status)
	}
	console := filepath.Join(a.vmDir("good"), "console.log")
	waitFor(t, 10*time.Second, "heartbeats", func() bool { return len(heartbeats(console)) > 10 })
	sock := filepath.Join(a.vmDir("good"), "api.sock")
	ctx := context.Background()
	c := api.NewClient(sock)
	if _, err := c.Pause(ctx); err != nil {
		t.Fatalf("pause under the sandbox: %v", err)
	}
	if _, err := c.Resume(ctx); err != nil {
		t.Fatalf("resume under the sandbox: %v", err)
	}
	n := len(heartbeats(console))
	waitFor(t, 10*time.Second, "heartbeats after resume", func() bool { return len(heartbeats(console)) > n+5 })

	p.placeVM(t, "bad", h, "cpus=1")
	p.waitStatus(t, "bad", store.VMRunning)
	var failed store.VMStatus
	waitFor(t, 20*time.Second, "the VMM that made a forbidden call to be reported", func() bool {
		var err error
		failed, _, err = p.st.GetVMStatus(ctx, "bad")
		return err == nil && failed.Phase == store.VMFailed
	})
	t.Logf("reported: %s", failed.Reason)
	if !strings.Contains(failed.Reason, "bad system call") || !strings.Contains(failed.Reason, "seccomp") {
		t.Errorf("status of the VM whose VMM made a forbidden call: %+v", failed)
	}
	if s, _, err := p.st.GetVMStatus(ctx, "good"); err != nil || s.Phase != store.VMRunning {
		t.Errorf("the other VM: %+v %v", s, err)
	}
}

func sandboxStatus(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	return string(b), err
}
