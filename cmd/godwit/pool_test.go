package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/etcdserver"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/godwit-vmm/godwit/internal/testenv"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// poolLab is a controller with an embedded etcd and two fake hosts.
type poolLab struct {
	c      *controller.Controller
	st     *store.Store
	user   string // a pool user's credential directory
	pki    *testenv.PoolPKI
	leases map[string]clientv3.LeaseID
}

func newPoolLab(t *testing.T) *poolLab {
	t.Helper()
	dir := t.TempDir()
	pk := testenv.NewPoolPKI(t, controller.DefaultPool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, err := controller.Start(ctx, controller.Config{ID: "c1", Listen: "127.0.0.1:0", PKIDir: pk.Dir(), SessionTTL: 2 * time.Second,
		Etcd: etcdserver.Config{Dir: filepath.Join(dir, "etcd"), LogLevel: "off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for !c.IsLeader() {
		if ctx.Err() != nil {
			t.Fatal("controller does not lead")
		}
		time.Sleep(10 * time.Millisecond)
	}
	lab := &poolLab{c: c, st: c.Store(), pki: pk, user: pk.Issue(t, pki.RoleUser, "alice"), leases: map[string]clientv3.LeaseID{}}
	for _, h := range []string{"h1", "h2"} {
		resp, err := lab.st.Client().Grant(ctx, 30)
		if err != nil {
			t.Fatal(err)
		}
		info := store.HostInfo{Host: h, Addr: h + ":7000", CPUIDHash: "cpu-a", TSCKHz: 2_000_000, CPUs: 2, MemBytes: 8 << 30,
			StorageIDs: []string{"/nfs"}, Networks: []string{"br0"}, Agent: "test"}
		if _, err := lab.st.RegisterHost(ctx, info, resp.ID); err != nil {
			t.Fatal(err)
		}
		lab.leases[h] = resp.ID
	}
	return lab
}

// run runs one pool command in-process against the lab's controller.
func (l *poolLab) run(t *testing.T, cmd func([]string, *bytes.Buffer, *bytes.Buffer) error, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	args = append(args, "--controller", l.c.URL(), "--credential", l.user)
	err := cmd(args, &out, &errb)
	return out.String(), err
}

func hostC(a []string, o, e *bytes.Buffer) error { return runErr(append([]string{"host"}, a...), o, e) }
func vmC(a []string, o, e *bytes.Buffer) error   { return runErr(append([]string{"vm"}, a...), o, e) }
func clusterC(a []string, o, e *bytes.Buffer) error {
	return runErr(append([]string{"cluster"}, a...), o, e)
}

func mustRun(t *testing.T, l *poolLab, cmd func([]string, *bytes.Buffer, *bytes.Buffer) error, args ...string) string {
	t.Helper()
	out, err := l.run(t, cmd, args...)
	if err != nil {
		t.Fatalf("godwit %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// aligned checks that a table's columns start at the same offsets on
// every line (tabwriter's doing) by looking at where the header's second
// column starts.
func aligned(t *testing.T, table string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("table has no rows:\n%s", table)
	}
	col := regexp.MustCompile(`^\S+\s+`).FindStringIndex(lines[0])
	for _, ln := range lines[1:] {
		if len(ln) <= col[1] || ln[col[1]-1] != ' ' || ln[col[1]] == ' ' {
			t.Fatalf("column 2 not aligned at %d:\n%s", col[1], table)
		}
	}
}

func TestPoolCLI(t *testing.T) {
	l := newPoolLab(t)

	out := mustRun(t, l, vmC, "create", "web1", "--kernel", "/guest.elf", "--cmdline", "cpus=2", "--mem", "1G", "--cpus", "2",
		"--disk", "/nfs/web1.img", "--nic", "br0,mac=52:54:00:00:00:01", "--host", "h1")
	for _, want := range []string{"vm         web1", "host       h1", "disk 0     /nfs/web1.img (storage /nfs)", "nic 0      br0 52:54:00:00:00:01"} {
		if !strings.Contains(out, want) {
			t.Errorf("vm create output lacks %q:\n%s", want, out)
		}
	}
	mustRun(t, l, vmC, "create", "db1", "--kernel", "/guest.elf", "--stopped")

	out = mustRun(t, l, vmC, "list")
	t.Logf("godwit vm list\n%s", out)
	aligned(t, out)
	if !regexp.MustCompile(`(?m)^web1\s+scheduled\s+running\s+h1\s+2\s+1.00 GiB\s+-$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^db1\s+stopped\s+stopped\s+-`).MatchString(out) {
		t.Errorf("vm list:\n%s", out)
	}
	var vms []poolapi.VM
	if err := json.Unmarshal([]byte(mustRun(t, l, vmC, "list", "--json")), &vms); err != nil || len(vms) != 2 || vms[1].Spec.Kernel != "/guest.elf" {
		t.Fatalf("vm list --json: %+v, %v", vms, err)
	}

	out = mustRun(t, l, hostC, "list")
	t.Logf("godwit host list\n%s", out)
	aligned(t, out)
	if !regexp.MustCompile(`(?m)^h1\s+active\s+yes\s+kvm\s+2\s+2\s+8.00 GiB\s+1.25 GiB\s+1\s+h1:7000$`).MatchString(out) {
		t.Errorf("host list:\n%s", out)
	}
	out = mustRun(t, l, hostC, "show", "h1", "--json")
	var h poolapi.Host
	if err := json.Unmarshal([]byte(out), &h); err != nil || h.Name != "h1" || h.VMs[0] != "web1" {
		t.Fatalf("host show --json: %+v, %v", h, err)
	}
	if out = mustRun(t, l, hostC, "show", "h2"); !strings.Contains(out, "storage   /nfs") {
		t.Errorf("host show:\n%s", out)
	}

	// Errors: one line, non-nil.
	for _, c := range []struct {
		cmd  func([]string, *bytes.Buffer, *bytes.Buffer) error
		args []string
		want string
	}{
		{vmC, []string{"show", "nope"}, "unknown vm nope"},
		{hostC, []string{"show", "nope"}, "unknown host nope"},
		{vmC, []string{"create", "x1", "--kernel", "/k", "--disk", "/san/x.img"}, "h1: storage /san missing"},
		{vmC, []string{"create", "x1", "--kernel", "/k", "--nic", "br7", "--host", "h2"}, "cannot place vm x1 on host h2: network br7 missing"},
		{vmC, []string{"create", "x1"}, "--kernel is required"},
		{vmC, []string{"delete", "web1"}, "not stopped"},
		{vmC, []string{"migrate", "web1", "--to", "h9"}, "unknown host h9"},
		{vmC, []string{"frobnicate"}, "unknown subcommand"},
	} {
		_, err := l.run(t, c.cmd, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line with %q", c.args, err, c.want)
		}
	}
	// No credential, one whose key others may read, one revoked, one of a
	// host: each refused with one line.
	t.Setenv("GODWIT_CREDENTIAL", "")
	var o, e bytes.Buffer
	if err := runErr([]string{"vm", "list", "--controller", l.c.URL()}, &o, &e); err == nil || !strings.Contains(err.Error(), "no credential") {
		t.Errorf("no credential: %v", err)
	}
	open := l.pki.Issue(t, pki.RoleUser, "bob")
	os.Chmod(filepath.Join(open, pki.KeyFile), 0o644)
	if err := runErr([]string{"vm", "list", "--controller", l.c.URL(), "--credential", open}, &o, &e); err == nil || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), "\n") {
		t.Errorf("key file open to others: %v", err)
	}
	carol := l.pki.Issue(t, pki.RoleUser, "carol")
	l.pki.CA.Revoke(pki.RoleUser, "carol")
	waitRefused := func(what, cred string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := runErr([]string{"vm", "list", "--controller", l.c.URL(), "--credential", cred}, &o, &e)
			if err != nil && !strings.Contains(err.Error(), "\n") {
				t.Logf("%s: %v", what, err)
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %v, want one line refusing it", what, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitRefused("a revoked user", carol)
	expired, err := l.pki.CA.Issue(pki.RoleUser, "dave", pki.IssueOptions{NotBefore: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	expiredDir := filepath.Join(t.TempDir(), "dave")
	if err := expired.Write(expiredDir); err != nil {
		t.Fatal(err)
	}
	if err := runErr([]string{"vm", "list", "--controller", l.c.URL(), "--credential", expiredDir}, &o, &e); err == nil || !strings.Contains(err.Error(), "expired") || strings.Contains(err.Error(), "\n") {
		t.Errorf("an expired certificate: %v, want one line saying so", err)
	}
	waitRefused("another CA's user", testenv.NewPoolPKI(t, controller.DefaultPool).Issue(t, pki.RoleUser, "alice"))
	waitRefused("a host's credential", l.pki.Issue(t, pki.RoleHost, "h1"))
	if err := runErr([]string{"vm", "list", "--controller", strings.Replace(l.c.URL(), "https:", "http:", 1), "--credential", l.user}, &o, &e); err == nil || !strings.Contains(err.Error(), "HTTPS only") {
		t.Errorf("plaintext controller URL: %v", err)
	}

	// Migrate with --wait: a fake source agent commits the handover once
	// the CLI has shown the request, so every phase is seen however the
	// two are scheduled.
	progress := &watchWriter{want: "requested", seen: make(chan struct{})}
	go fakeHandOver(t, l, "web1", progress.seen)
	var errb bytes.Buffer
	if err := runErr([]string{"vm", "migrate", "web1", "--wait", "--controller", l.c.URL(), "--credential", l.user}, progress, &errb); err != nil {
		t.Fatalf("godwit vm migrate web1 --wait: %v", err)
	}
	out = progress.String()
	t.Logf("godwit vm migrate web1 --wait\n%s", out)
	if !strings.Contains(out, "web1 h1 → h2") || !strings.Contains(out, "requested") || !strings.Contains(out, "committed") ||
		!strings.Contains(out, "vm web1 now runs on h2") {
		t.Errorf("vm migrate --wait:\n%s", out)
	}
	if out = mustRun(t, l, vmC, "show", "web1"); !regexp.MustCompile(`(?m)^host\s+h2$`).MatchString(out) {
		t.Errorf("after migration:\n%s", out)
	}

	out = mustRun(t, l, vmC, "stop", "web1")
	if !strings.Contains(out, "vm web1: desired stopped, phase stopping, host h2") {
		t.Errorf("vm stop: %s", out)
	}
	mustRun(t, l, vmC, "delete", "db1")

	out = mustRun(t, l, clusterC, "status")
	t.Logf("godwit cluster status\n%s", out)
	for _, want := range []string{"pool         godwit", "leader       c1 at " + l.c.URL(), "answered by  c1 (leader)",
		"hosts        2: 2 up, 0 lost; active 2", "vms          1: stopping 1", "migrations   0 in flight; committed 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster status lacks %q:\n%s", want, out)
		}
	}
	var cs poolapi.Cluster
	if err := json.Unmarshal([]byte(mustRun(t, l, clusterC, "status", "--json")), &cs); err != nil || cs.Leader != "c1" || !cs.Embedded {
		t.Fatalf("cluster status --json: %+v, %v", cs, err)
	}
}

// watchWriter collects a command's output and closes seen once the output
// holds want.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	done bool
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.want) {
		w.done = true
		close(w.seen)
	}
	return n, err
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// fakeHandOver plays the agents: it waits for the VM's migration request
// and for shown (the CLI has printed it), reports progress, and commits the
// switchover as the destination would.
func fakeHandOver(t *testing.T, l *poolLab, vm string, shown <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	select {
	case <-shown:
	case <-ctx.Done():
		t.Errorf("the CLI never showed the migration request")
		return
	}
	for ctx.Err() == nil {
		m, _, err := l.st.GetMigration(ctx, vm)
		if err != nil || m.Phase != store.MigrationRequested {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		m.Phase, m.Round, m.RemainingBytes = store.MigrationRunning, 2, 64<<20
		if _, err := l.st.PutMigration(ctx, m, store.AnyRev, store.Guard{}); err != nil {
			t.Errorf("progress: %v", err)
			return
		}
		time.Sleep(300 * time.Millisecond)
		res, err := l.st.HandOver(ctx, vm, m.ExpectOwnerRev, m.Dst, l.leases[m.Dst], m)
		if err != nil || !res.Won {
			t.Errorf("handover: %v %v", res, err)
		}
		return
	}
}

func TestControllerCmdErrors(t *testing.T) {
	var o, e bytes.Buffer
	if err := runErr([]string{"controller", "--id", "c1"}, &o, &e); err == nil || !strings.Contains(err.Error(), "--pki is required") {
		t.Errorf("no --pki: %v", err)
	}
	dir := t.TempDir()
	// A CA whose key others may read is refused.
	beta := testenv.NewPoolPKI(t, "beta")
	os.Chmod(filepath.Join(beta.Dir(), "ca-key.pem"), 0o644)
	if err := runErr([]string{"controller", "--id", "c1", "--pool", "beta", "--pki", beta.Dir()}, &o, &e); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("CA key open to others: %v", err)
	}
	os.Chmod(filepath.Join(beta.Dir(), "ca-key.pem"), 0o600)
	srv, err := etcdserver.Start(context.Background(), etcdserver.Config{Dir: filepath.Join(dir, "etcd"), LogLevel: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := store.Connect(context.Background(), store.ClientConfig{Endpoints: srv.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := store.New(cli).PutConfig(context.Background(), store.Config{Pool: "alpha"}, 0, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	err = runErr([]string{"controller", "--id", "c2", "--pki", beta.Dir(), "--listen", "127.0.0.1:0", "--pool", "beta",
		"--etcd-endpoints", strings.Join(srv.Endpoints(), ","), "--log-level", "error"}, &o, &e)
	if err == nil || !strings.Contains(err.Error(), `holds pool "alpha"`) {
		t.Errorf("other pool: %v", err)
	}
}

// TestControllerCmdRuns runs `godwit controller` with an embedded etcd,
// asks it for the cluster status through the CLI, and stops it with
// SIGTERM. It runs the binary, so that the signal goes to the controller
// and not to the test.
func TestControllerCmdRuns(t *testing.T) {
	dir := t.TempDir()
	pk := testenv.NewPoolPKI(t, "godwit")
	user := pk.Issue(t, pki.RoleUser, "alice")
	cmd := exec.Command(godwitBin, "controller", "--id", "c1", "--pki", pk.Dir(), "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "etcd"),
		"--etcd-client-port", "0", "--etcd-peer-port", "0", "--log-level", "error")
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			<-done
		}
	}()
	lines := bufio.NewReader(stdout)
	line, err := lines.ReadString('\n')
	go func() {
		io.Copy(io.Discard, lines)
		done <- cmd.Wait()
	}()
	if err != nil {
		t.Fatalf("no start line (%v); stderr %s", err, stderr.String())
	}
	m := regexp.MustCompile(`API (https://\S+),`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("start line %q", line)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, errOut, code := godwit(t, "cluster", "status", "--json", "--controller", m[1], "--credential", user)
		var cs poolapi.Cluster
		if code == 0 && json.Unmarshal([]byte(out), &cs) == nil && cs.Leading {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller never leads: exit %d, %s %s", code, out, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Fatalf("controller exit: %v; stderr %s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("controller did not stop on SIGTERM")
	}
}
