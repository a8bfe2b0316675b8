package pooltest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/netlab"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

// godwitBin is bin/godwit built by TestMain; agents, controller, VMMs and
// the CLI all run it.
var godwitBin string

func TestMain(m *testing.M) {
	// Built without the race detector even under -race: these scenarios
	// time fences and switchovers, and the race detector slows the VMMs
	// several-fold. The agent, VMM and controller code is raced in their
	// own packages' tests.
	os.Exit(testenv.RunWithGodwit(m, &godwitBin))
}

// Tunables of every agent (PLATFORM.md §7).
const (
	leaseTTL    = 3 * time.Second
	leaseMargin = 600 * time.Millisecond
)

// proc is one process the test started (controller or agent), run inside
// a namespace with `ip netns exec` (which execs, so the pid is the
// godwit process itself).
type proc struct {
	name string
	ns   string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s start %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", p.ns, godwitBin}, p.args...)...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.done)
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 kills the process and waits for it.
func (p *proc) kill9() {
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// lab is a pool on one machine: the namespace network, a controller with
// its embedded etcd in the core namespace, one agent per host.
type lab struct {
	t       *testing.T
	net     *netlab.Lab
	hosts   map[string]*netlab.Host // pool host name (a, b, c) -> namespace
	ctlIP   string                  // controller and etcd, on the migration bridge
	dir     string
	shared  string // the shared storage directory
	pki     *testenv.PoolPKI
	creds   map[string]string // host -> its agent's credential directory
	user    string            // a pool user's credential directory, for the CLI
	etcdDir string
	ctl     *proc
	agents  map[string]*proc
	st      *store.Store
	elf     string
	nextIP  int
	extraNS []string // namespaces made by extraHost
}

func (l *lab) ctlURL() string  { return "https://" + l.ctlIP + ":7700" }
func (l *lab) etcdURL() string { return "https://" + l.ctlIP + ":2379" }

// newLab makes a network with nhosts hosts and a controller; agents are
// started by startAgent.
func newLab(t *testing.T, nhosts int) *lab {
	t.Helper()
	testenv.RequireVM(t)
	testenv.RequireRoot(t)
	testenv.RequireNetns(t)
	elf := testenv.GuestELF(t)
	// A short base directory: VM API socket paths must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "gwp")
	if err != nil {
		t.Fatal(err)
	}
	// The agents' VMMs drop to nobody and must still reach their fence
	// files in the state directories under dir.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, dir: dir, hosts: map[string]*netlab.Host{}, agents: map[string]*proc{}, elf: elf, creds: map[string]string{}}
	t.Cleanup(l.close)
	// netlab names its client namespace and veth <p>-c and <p>c, the
	// names of its third host: it can make two hosts at most here, so the
	// third is made by extraHost in the same shape.
	nl, err := netlab.New("", min(nhosts, 2))
	if err != nil {
		t.Fatal(err)
	}
	l.net = nl
	for i, h := range nl.Hosts() {
		l.hosts[string(rune('a'+i))] = h
	}
	mig := nl.Hosts()[0].MigAddr.As4()
	l.ctlIP = fmt.Sprintf("%d.%d.%d.254", mig[0], mig[1], mig[2])
	for i := 2; i < nhosts; i++ {
		l.extraHost(i)
	}
	if err := netlab.InNS(nl.CoreNS(), "addr", "add", l.ctlIP+"/24", "dev", "mig0"); err != nil {
		t.Fatal(err)
	}
	l.shared = filepath.Join(dir, "shared")
	l.etcdDir = filepath.Join(dir, "etcd")
	for _, d := range []string{l.shared} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l.pki = testenv.NewPoolPKI(t, "godwit")
	l.user = l.pki.Issue(t, pki.RoleUser, "admin")
	l.ctl = &proc{name: "controller", ns: nl.CoreNS(), log: filepath.Join(dir, "controller.log"), args: []string{
		"controller", "--id", "c1", "--pki", l.pki.Dir(), "--listen", l.ctlIP + ":7700",
		"--data-dir", l.etcdDir, "--etcd-host", l.ctlIP, "--etcd-client-port", "2379", "--etcd-peer-port", "2380",
		"--session-ttl", "2s",
	}}
	l.ctl.start(t)
	// The test reads and writes etcd as the controller does.
	waitFor(t, 20*time.Second, "the controller's credential", func() bool {
		_, err := pki.LoadCredential(filepath.Join(l.pki.Dir(), "controllers", "c1"))
		return err == nil
	})
	l.st = l.connectStore()
	l.waitEtcd(20 * time.Second)
	waitFor(t, 20*time.Second, "the controller to lead", func() bool {
		var cs poolapi.Cluster
		return l.cliJSON(&cs, "cluster", "status") == nil && cs.Leading
	})
	return l
}

// extraHost makes host number i (0-based; pool name 'a'+i) like netlab
// does: namespace <p>-h<i>, a veth "uplink" on the core bridge br0 joined to
// its own bridge gwbr, and a veth "mig" on mig0 with 10.<n>.1.<i+1>.
func (l *lab) extraHost(i int) {
	l.t.Helper()
	p, core := l.net.Prefix, l.net.CoreNS()
	name := fmt.Sprintf("%s-h%d", p, i)
	mig := l.net.Hosts()[0].MigAddr.As4()
	h := &netlab.Host{Name: name, Bridge: "gwbr", MigAddr: netip.AddrFrom4([4]byte{mig[0], mig[1], mig[2], byte(i + 1)})}
	run := func(args ...string) {
		l.t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", name)
	l.extraNS = append(l.extraNS, name)
	in := func(ns string, args ...string) {
		l.t.Helper()
		run(append([]string{"netns", "exec", ns, "ip"}, args...)...)
	}
	in(name, "link", "set", "lo", "up")
	for _, v := range [][3]string{{fmt.Sprintf("%sx%d", p, i), "uplink", "br0"}, {fmt.Sprintf("%sy%d", p, i), "mig", "mig0"}} {
		out, inName, br := v[0], v[1], v[2]
		run("link", "add", out, "type", "veth", "peer", "name", out+"i")
		run("link", "set", out+"i", "netns", name)
		run("link", "set", out, "netns", core)
		in(name, "link", "set", out+"i", "name", inName)
		in(name, "link", "set", inName, "up")
		in(core, "link", "set", out, "master", br)
		in(core, "link", "set", out, "up")
	}
	in(name, "link", "add", "gwbr", "type", "bridge")
	in(name, "link", "set", "uplink", "master", "gwbr")
	in(name, "link", "set", "gwbr", "up")
	in(name, "addr", "add", h.MigAddr.String()+"/24", "dev", "mig")
	l.hosts[string(rune('a'+i))] = h
}

// nsDialer dials gRPC addresses (scheme://host:port or host:port) from
// network namespace ns.
func nsDialer(ns string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		if i := strings.Index(addr, "://"); i >= 0 {
			addr = addr[i+3:]
		}
		var c net.Conn
		err := netlab.InNamespace(ns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
}

// connectStore opens an etcd client whose sockets live in the core
// namespace.
func (l *lab) connectStore() *store.Store {
	l.t.Helper()
	dial := nsDialer(l.net.CoreNS())
	bc := backoff.DefaultConfig
	bc.BaseDelay, bc.MaxDelay = 50*time.Millisecond, 300*time.Millisecond
	cred, err := pki.LoadCredential(filepath.Join(l.pki.Dir(), "controllers", "c1"))
	if err != nil {
		l.t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{
		TLS:         cred.ClientConfig("", nil),
		Endpoints:   []string{l.etcdURL()},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial), grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 2 * time.Second})},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { cli.Close() })
	return store.New(cli)
}

// waitEtcd waits until etcd answers a linearizable read; it returns how
// long that took.
func (l *lab) waitEtcd(timeout time.Duration) time.Duration {
	l.t.Helper()
	began := time.Now()
	waitFor(l.t, timeout, "etcd to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := l.st.Revision(ctx)
		return err == nil
	})
	return time.Since(began)
}

// agentOpts changes one agent's flags.
type agentOpts struct {
	storage    []string // --storage-id; default the shared directory
	bridges    []string // --bridge; default gwbr
	credential string   // --credential; default a certificate of host h from the pool's CA
}

// startAgent starts the agent of host h (a, b, c) in its namespace and
// waits until it is registered and alive.
func (l *lab) startAgent(h string, o agentOpts) *proc {
	l.t.Helper()
	host := l.hosts[h]
	ip := host.MigAddr.String()
	state := filepath.Join(l.dir, h)
	if o.storage == nil {
		o.storage = []string{l.shared}
	}
	if o.bridges == nil {
		o.bridges = []string{host.Bridge}
	}
	if o.credential == "" {
		o.credential = l.hostCredential(h)
	}
	l.creds[h] = o.credential
	args := []string{"agent", "--host", h, "--listen", ip + ":7480", "--migrate-ip", ip, "--migrate-ports", "4400-4440",
		"--etcd", l.etcdURL(), "--state-dir", state, "--credential", o.credential,
		"--lease-ttl", leaseTTL.String(), "--lease-margin", leaseMargin.String(),
		"--usage-every", "1s", "--sync-every", "1s", "--vmm-log-level", "debug",
		"--verify-migrations"} // every migration also checks all guest RAM by CRC32C
	for _, s := range o.storage {
		args = append(args, "--storage-id", s)
	}
	for _, b := range o.bridges {
		args = append(args, "--bridge", b)
	}
	p := &proc{name: "agent " + h, ns: host.Name, args: args, log: filepath.Join(l.dir, "agent-"+h+".log")}
	l.agents[h] = p
	p.start(l.t)
	l.waitHostAlive(h, 0)
	return p
}

// hostCredential issues host h's credential, naming its migration and
// API address, and waits until the controller has given it its etcd user
// (it mirrors the CA's index within a second).
func (l *lab) hostCredential(h string) string {
	l.t.Helper()
	dir := l.pki.Issue(l.t, pki.RoleHost, h, l.hosts[h].MigAddr.String())
	waitFor(l.t, 10*time.Second, "etcd user of host "+h, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := l.st.Client().UserGet(ctx, store.HostRole(h))
		return err == nil
	})
	return dir
}

// waitHostAlive waits until host h is registered with a lease other than
// notLease; it returns the host.
func (l *lab) waitHostAlive(h string, notLease int64) store.Host {
	l.t.Helper()
	var host store.Host
	waitFor(l.t, 20*time.Second, "host "+h+" to be alive", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		host, err = l.st.GetHost(ctx, h)
		return err == nil && host.Alive != nil && host.Info != nil && host.Alive.Lease != notLease
	})
	return host
}

func (l *lab) stateDir(h string) string        { return filepath.Join(l.dir, h) }
func (l *lab) vmDir(h, vm string) string       { return filepath.Join(l.dir, h, "vms", vm) }
func (l *lab) consolePath(h, vm string) string { return filepath.Join(l.vmDir(h, vm), "console.log") }
func (l *lab) sockPath(h, vm string) string    { return filepath.Join(l.vmDir(h, vm), "api.sock") }

// vmmPID returns the pid of the live VMM of vm on host h, or 0.
func (l *lab) vmmPID(h, vm string) int {
	b, err := os.ReadFile(filepath.Join(l.vmDir(h, vm), "pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid > 0 && vmmAlive(pid, l.sockPath(h, vm)) {
		return pid
	}
	return 0
}

// vmmAlive reports whether pid is a live (not zombie) VMM serving sock.
func vmmAlive(pid int, sock string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(b, []byte(sock)) {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) && st[i+2] == 'Z' {
		return false
	}
	return true
}

// stopped reports whether every thread of pid is stopped (SIGSTOP has
// taken effect, not merely been sent).
func stopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, p := range tasks {
		st, err := os.ReadFile(p)
		i := bytes.LastIndexByte(st, ')')
		if err != nil || i < 0 || i+2 >= len(st) || st[i+2] != 'T' {
			return false
		}
	}
	return true
}

// vmmPIDs lists every live VMM of host h.
func (l *lab) vmmPIDs(h string) map[string]int {
	out := map[string]int{}
	entries, _ := os.ReadDir(filepath.Join(l.stateDir(h), "vms"))
	for _, e := range entries {
		if pid := l.vmmPID(h, e.Name()); pid != 0 {
			out[e.Name()] = pid
		}
	}
	return out
}

// cli runs `godwit ARGS` in the core namespace against the controller.
func (l *lab) cli(args ...string) (stdout, stderr string, err error) {
	full := append([]string{"netns", "exec", l.net.CoreNS(), godwitBin}, args...)
	full = append(full, "--controller", l.ctlURL(), "--credential", l.user)
	cmd := exec.Command("ip", full...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// cliJSON runs a CLI command with --json and decodes its output into v.
func (l *lab) cliJSON(v any, args ...string) error {
	out, errOut, err := l.cli(append(args, "--json")...)
	if err != nil {
		return fmt.Errorf("godwit %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut))
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("godwit %s: bad JSON: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// mustCLI runs a CLI command that must succeed and returns its stdout.
func (l *lab) mustCLI(args ...string) string {
	l.t.Helper()
	out, errOut, err := l.cli(args...)
	if err != nil {
		l.t.Fatalf("godwit %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// createVM creates (and starts) a VM with the CLI: 1 vCPU, a NIC on gwbr
// and a disk in the shared directory; on "" lets placement choose.
func (l *lab) createVM(name, on string, mem string, extra ...string) poolapi.VM {
	l.t.Helper()
	disk := filepath.Join(l.shared, name+".img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Truncate(disk, 8<<20); err != nil {
		l.t.Fatal(err)
	}
	l.nextIP++
	args := []string{"vm", "create", name, "--kernel", l.elf, "--mem", mem, "--cpus", "1",
		"--cmdline", "cpus=1 ip=" + l.net.GuestAddr(l.nextIP).String(),
		"--disk", disk, "--nic", "gwbr"}
	if on != "" {
		args = append(args, "--host", on)
	}
	args = append(args, extra...)
	var v poolapi.VM
	if err := l.cliJSON(&v, args...); err != nil {
		l.t.Fatal(err)
	}
	if on != "" && v.Host != on {
		l.t.Fatalf("vm %s placed on %q, want %s", name, v.Host, on)
	}
	return v
}

// waitRunning waits until vm's status says running on host h and its
// console shows heartbeats; it returns the VMM's pid.
func (l *lab) waitRunning(vm, h string) int {
	l.t.Helper()
	var st store.VMStatus
	waitFor(l.t, 20*time.Second, "vm "+vm+" running on "+h, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		st, _, err = l.st.GetVMStatus(ctx, vm)
		return err == nil && st.Phase == store.VMRunning && st.Host == h && l.vmmPID(h, vm) == st.PID
	})
	waitFor(l.t, 15*time.Second, "heartbeats of "+vm+" on "+h, func() bool {
		return len(fileHeartbeats(l.consolePath(h, vm))) >= 5
	})
	return st.PID
}

func (l *lab) owner(vm string) (store.Owner, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return l.st.GetOwner(ctx, vm)
}

// typeLine types a line on vm's console (VMM on host h) and waits for a
// console line starting with prefix written after it; it returns the line.
func (l *lab) typeLine(h, vm, line, prefix string, timeout time.Duration) string {
	l.t.Helper()
	path := l.consolePath(h, vm)
	b, _ := os.ReadFile(path)
	from := len(b)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := apiClient(l.sockPath(h, vm)).Console(ctx, []byte(line+"\n")); err != nil {
		l.t.Fatalf("type %q on %s/%s: %v", line, h, vm, err)
	}
	for {
		b, _ := os.ReadFile(path)
		if len(b) > from {
			for _, s := range strings.Split(string(b[from:]), "\n") {
				if strings.HasPrefix(s, prefix) {
					return s
				}
			}
		}
		if ctx.Err() != nil {
			l.t.Fatalf("no %q line on %s/%s after typing %q", prefix, h, vm, line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ns runs a command in host h's namespace.
func (l *lab) ns(h string, name string, args ...string) {
	l.t.Helper()
	if out, err := l.hosts[h].Command(name, args...).CombinedOutput(); err != nil {
		l.t.Fatalf("%s %s in %s: %v: %s", name, strings.Join(args, " "), h, err, out)
	}
}

// close kills every process the test started (VMMs by their pid files,
// agents, controller) and removes the network; on failure it logs the
// tails of the logs.
func (l *lab) close() {
	t := l.t
	for h := range l.hosts {
		for _, pid := range l.vmmPIDs(h) {
			syscall.Kill(pid, syscall.SIGCONT)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	names := make([]string, 0, len(l.agents))
	for h := range l.agents {
		names = append(names, h)
	}
	sort.Strings(names)
	for _, h := range names {
		p := l.agents[h]
		if p.running() {
			syscall.Kill(p.pid(), syscall.SIGCONT)
		}
		p.kill9()
	}
	// VMMs an agent started while being killed.
	for h := range l.hosts {
		for _, pid := range l.vmmPIDs(h) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if l.ctl != nil {
		l.ctl.kill9()
	}
	var logs []string
	if l.ctl != nil {
		logs = append(logs, l.ctl.log)
	}
	for _, h := range names {
		logs = append(logs, l.agents[h].log)
		vmm, _ := filepath.Glob(filepath.Join(l.stateDir(h), "vms", "*", "vmm.log"))
		logs = append(logs, vmm...)
	}
	for _, f := range logs {
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte("DATA RACE")) {
			i := bytes.Index(b, []byte("DATA RACE"))
			t.Errorf("the race detector reported a data race in %s:\n%s", f, tail(string(b[max(0, i-100):]), 4000))
		}
	}
	if t.Failed() {
		if l.ctl != nil {
			t.Logf("controller log:\n%s", tail(l.ctl.logText(), 3000))
		}
		for _, h := range names {
			t.Logf("agent %s log:\n%s", h, tail(l.agents[h].logText(), 6000))
			logs, _ := filepath.Glob(filepath.Join(l.stateDir(h), "vms", "*", "vmm.log"))
			for _, f := range logs {
				b, _ := os.ReadFile(f)
				t.Logf("%s:\n%s", f, tail(string(b), 3000))
			}
		}
	}
	for _, ns := range l.extraNS {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	}
	if l.net != nil {
		if err := l.net.Close(); err != nil {
			t.Errorf("netlab close: %v", err)
		}
	}
	// A killed VMM takes a moment to exit (its guest RAM is torn down),
	// longer on a loaded machine; give it a few seconds.
	for h := range l.hosts {
		deadline := time.Now().Add(5 * time.Second)
		pids := l.vmmPIDs(h)
		for len(pids) > 0 && time.Now().Before(deadline) {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(50 * time.Millisecond)
			pids = l.vmmPIDs(h)
		}
		if len(pids) > 0 {
			t.Errorf("VMMs left on %s 5 s after cleanup: %v", h, pids)
		}
	}
	if os.Getenv("GODWIT_POOLTEST_KEEP") == "" {
		os.RemoveAll(l.dir)
	} else {
		t.Logf("kept %s", l.dir)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

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

// fileHeartbeats parses the heartbeats of a console log (no times).
func fileHeartbeats(path string) []guest.Heartbeat {
	b, _ := os.ReadFile(path)
	c := guest.NewConsole(nil)
	c.Write(b)
	return c.Heartbeats()
}

// consoleTail follows a console log, stamping each line with the time the
// test read it (every 3 ms).
type consoleTail struct {
	host string
	path string
	con  *guest.Console
	stop chan struct{}
	done chan struct{}

	mu         sync.Mutex
	size       int64
	lastGrowth time.Time
}

// follow starts tailing vm's console on host h from its current end.
func (l *lab) follow(h, vm string) *consoleTail {
	c := &consoleTail{host: h, path: l.consolePath(h, vm), con: guest.NewConsole(nil), stop: make(chan struct{}), done: make(chan struct{})}
	if fi, err := os.Stat(c.path); err == nil {
		c.size = fi.Size()
	}
	// Start at a line boundary: drop the partial line at the end.
	if b, err := os.ReadFile(c.path); err == nil && int64(len(b)) >= c.size {
		if i := bytes.LastIndexByte(b[:c.size], '\n'); i >= 0 {
			c.size = int64(i + 1)
		} else {
			c.size = 0
		}
	}
	go c.loop()
	l.t.Cleanup(c.Stop)
	return c
}

func (c *consoleTail) loop() {
	defer close(c.done)
	t := time.NewTicker(3 * time.Millisecond)
	defer t.Stop()
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-c.stop:
			c.poll(buf)
			return
		case <-t.C:
		}
		c.poll(buf)
	}
}

func (c *consoleTail) poll(buf []byte) {
	f, err := os.Open(c.path)
	if err != nil {
		return
	}
	defer f.Close()
	c.mu.Lock()
	off := c.size
	c.mu.Unlock()
	for {
		n, err := f.ReadAt(buf, off)
		if n > 0 {
			c.con.Write(buf[:n])
			off += int64(n)
			c.mu.Lock()
			c.size, c.lastGrowth = off, time.Now()
			c.mu.Unlock()
		}
		if err != nil || n == 0 {
			return
		}
	}
}

// Stop ends the tail after a last read.
func (c *consoleTail) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

func (c *consoleTail) LastGrowth() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastGrowth
}

func (c *consoleTail) Heartbeats() []guest.Heartbeat { return c.con.Heartbeats() }

// waitHeartbeats waits until the tail has read n heartbeats.
func (c *consoleTail) waitHeartbeats(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d heartbeats on %s's console", n, c.host), func() bool { return len(c.Heartbeats()) >= n })
}

// waitMoreHeartbeats waits until the tail has read n heartbeats more than
// it has now.
func (c *consoleTail) waitMoreHeartbeats(t *testing.T, n int) {
	t.Helper()
	c.waitHeartbeats(t, len(c.Heartbeats())+n)
}

// hostBeat is a heartbeat and the host whose console printed it.
type hostBeat struct {
	guest.Heartbeat
	Host string
}

// merge orders the heartbeats of several consoles by sequence number
// (then by the time they were read).
func merge(tails ...*consoleTail) []hostBeat {
	var all []hostBeat
	for _, c := range tails {
		for _, hb := range c.Heartbeats() {
			all = append(all, hostBeat{hb, c.host})
		}
	}
	// In the guest's own order: the tails poll their files every few
	// milliseconds each, so when a switchover takes about as long, the
	// times the lines were read can invert across consoles.
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].Seq != all[j].Seq {
			return all[i].Seq < all[j].Seq
		}
		return all[i].At.Before(all[j].At)
	})
	return all
}

// twoHostCheck checks the heartbeats of one guest printed by two consoles:
// no sequence number printed by both, and the printing host changes at most
// once (never back and forth: the guest never ran on two hosts at once).
// It returns the merged sequence's gap check.
func twoHostCheck(t *testing.T, tails ...*consoleTail) guest.GapCheck {
	t.Helper()
	all := merge(tails...)
	seen := map[uint64]string{}
	for _, hb := range all {
		if h, ok := seen[hb.Seq]; ok && h != hb.Host {
			t.Errorf("heartbeat %d printed by both %s and %s: the guest ran on two hosts", hb.Seq, h, hb.Host)
		}
		seen[hb.Seq] = hb.Host
	}
	switches := 0
	for i := 1; i < len(all); i++ {
		if all[i].Host != all[i-1].Host {
			switches++
			t.Logf("heartbeats move from %s (seq %d, read %s) to %s (seq %d, read %s)", all[i-1].Host, all[i-1].Seq,
				all[i-1].At.Format("15:04:05.000"), all[i].Host, all[i].Seq, all[i].At.Format("15:04:05.000"))
		}
	}
	if switches > 1 {
		t.Errorf("the heartbeats switch hosts %d times: they interleave", switches)
	}
	var hbs []guest.Heartbeat
	for i, hb := range all {
		if i > 0 && all[i-1].Host != hb.Host && hb.Seq == all[i-1].Seq+2 {
			if split, ok := splitBeat(tails, all[i-1].Host, hb.Host); ok && split.Seq == hb.Seq-1 {
				// The vCPU stopped in the middle of a heartbeat line and
				// finished it on the other host.
				t.Logf("heartbeat %d was split across the hosts: %q", split.Seq, split.text)
				hbs = append(hbs, guest.Heartbeat{At: hb.At, Seq: split.Seq})
			}
		}
		hbs = append(hbs, hb.Heartbeat)
	}
	return guest.CheckHeartbeats(hbs)
}

type splitHB struct {
	guest.Heartbeat
	text string
}

// splitBeat joins the unfinished last line of host from's console with the
// first line host to's console printed, and parses it as a heartbeat.
func splitBeat(tails []*consoleTail, from, to string) (splitHB, bool) {
	var src, dst *consoleTail
	for _, c := range tails {
		switch c.host {
		case from:
			src = c
		case to:
			dst = c
		}
	}
	if src == nil || dst == nil {
		return splitHB{}, false
	}
	b, err := os.ReadFile(src.path)
	if err != nil || len(b) == 0 || b[len(b)-1] == '\n' {
		return splitHB{}, false
	}
	head := b[bytes.LastIndexByte(b, '\n')+1:]
	lines := dst.con.Lines()
	if len(lines) == 0 {
		return splitHB{}, false
	}
	text := string(head) + lines[0].Text
	hb, ok := guest.ParseHeartbeat(text)
	return splitHB{hb, text}, ok
}

// watchKeys records when owner keys and alive keys are deleted.
type keyWatch struct {
	mu      sync.Mutex
	deleted map[string]time.Time // "owner/<vm>" or "alive/<host>"
	cancel  context.CancelFunc
}

func (l *lab) watchDeletes() *keyWatch {
	l.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &keyWatch{deleted: map[string]time.Time{}, cancel: cancel}
	l.t.Cleanup(cancel)
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
	rev, err := l.st.Revision(rctx)
	rcancel()
	if err != nil {
		l.t.Fatal(err)
	}
	owners := l.st.WatchOwners(ctx, rev+1)
	hosts := l.st.WatchHosts(ctx, rev+1)
	go func() {
		for e := range owners {
			if e.Err == nil && e.Owner == nil {
				w.mark("owner/" + e.VM)
			}
		}
	}()
	go func() {
		for e := range hosts {
			if e.Err == nil && e.Kind == store.HostLost {
				w.mark("alive/" + e.Host)
			}
		}
	}()
	return w
}

func (w *keyWatch) mark(k string) {
	now := time.Now()
	w.mu.Lock()
	if _, ok := w.deleted[k]; !ok {
		w.deleted[k] = now
	}
	w.mu.Unlock()
}

// at returns when key k was deleted (zero: not yet).
func (w *keyWatch) at(k string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.deleted[k]
}

var errNotFound = store.ErrNotFound

func isNotFound(err error) bool { return errors.Is(err, errNotFound) }

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func apiClient(sock string) *api.Client { return api.NewClient(sock) }

func clientOpts() []clientv3.OpOption { return []clientv3.OpOption{clientv3.WithPrefix()} }
