package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/etcdserver"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/godwit-vmm/godwit/internal/testenv"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testPKIs holds each test's pool CA: controllers of one test share it.
var testPKIs sync.Map // *testing.T -> *testenv.PoolPKI

func testPKI(t *testing.T) *testenv.PoolPKI {
	if p, ok := testPKIs.Load(t); ok {
		return p.(*testenv.PoolPKI)
	}
	p := testenv.NewPoolPKI(t, DefaultPool)
	testPKIs.Store(t, p)
	t.Cleanup(func() { testPKIs.Delete(t) })
	return p
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startEtcd starts an embedded member on loopback for one test.
func startEtcd(t *testing.T) []string {
	t.Helper()
	srv, err := etcdserver.Start(context.Background(), etcdserver.Config{Dir: t.TempDir(), LogLevel: "off"})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv.Endpoints()
}

// startController starts a controller on endpoints (nil: embedded etcd).
func startController(t *testing.T, id string, endpoints []string, mod ...func(*Config)) *Controller {
	t.Helper()
	cfg := Config{ID: id, Listen: "127.0.0.1:0", PKIDir: testPKI(t).Dir(), Endpoints: endpoints, SessionTTL: 2 * time.Second,
		Etcd: etcdserver.Config{Dir: t.TempDir(), LogLevel: "off"}}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := Start(ctxT(t, 20*time.Second), cfg)
	if err != nil {
		t.Fatalf("start controller %s: %v", id, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitLeader(t *testing.T, cs ...*Controller) *Controller {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range cs {
			if c.IsLeader() {
				return c
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no controller leads after 10 s")
	return nil
}

// testHost is a fake agent: a lease and a registration.
type testHost struct {
	name  string
	lease clientv3.LeaseID
}

func hostInfo(name string) store.HostInfo {
	return store.HostInfo{Host: name, Addr: name + ":7000", CPUIDHash: "cpu-a", TSCKHz: 2_000_000, CPUs: 2,
		MemBytes: 4 << 30, StorageIDs: []string{"nfs1"}, Networks: []string{"br0"}, Agent: "test"}
}

func register(t *testing.T, st *store.Store, info store.HostInfo) testHost {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	resp, err := st.Client().Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RegisterHost(ctx, info, resp.ID); err != nil {
		t.Fatal(err)
	}
	return testHost{name: info.Host, lease: resp.ID}
}

// client is a pool user's API client of c.
func client(c *Controller) *poolapi.Client { return poolapi.NewClient(c.URL(), userTLS(c)) }

var userMu sync.Mutex

// userDir is the credential of pool user "alice" of c's CA, issued once.
func (c *Controller) userDir() string {
	userMu.Lock()
	defer userMu.Unlock()
	dir := filepath.Join(filepath.Dir(c.cfg.PKIDir), "user-alice")
	if _, err := os.Stat(dir); err != nil {
		b, err := c.ca.Issue(pki.RoleUser, "alice", pki.IssueOptions{})
		if err == nil {
			err = b.Write(dir)
		}
		if err != nil {
			panic(err)
		}
	}
	return dir
}

// userTLS is the TLS of a pool user "alice" towards c.
func userTLS(c *Controller) *tls.Config {
	cred, err := pki.LoadCredential(c.userDir())
	if err != nil {
		panic(err)
	}
	return cred.ClientConfig("", pki.AllowRoles(pki.RoleController))
}

func vmReq(name string) poolapi.CreateVMRequest {
	return poolapi.CreateVMRequest{Name: name, Spec: store.VMSpec{VCPUs: 1, MemBytes: 512 << 20, Kernel: "/guest.elf", Cmdline: "cpus=1",
		Disks: []store.DiskSpec{{Path: "/nfs1/" + name + ".img", StorageID: "nfs1"}},
		NICs:  []store.NICSpec{{Network: "br0"}}}}
}

func apiErr(t *testing.T, err error, status int, substr ...string) *poolapi.Error {
	t.Helper()
	var e *poolapi.Error
	if !errors.As(err, &e) || e.Status != status {
		t.Fatalf("error %v (%T), want HTTP %d", err, err, status)
	}
	for _, s := range substr {
		if !strings.Contains(e.Message, s) {
			t.Fatalf("error %q does not mention %q", e.Message, s)
		}
	}
	return e
}

func TestConfigValidate(t *testing.T) {
	ok := Config{ID: "c1", PKIDir: "/pki", Endpoints: []string{"http://127.0.0.1:2379"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"no id":       func(c *Config) { c.ID = "" },
		"bad id":      func(c *Config) { c.ID = "C/1" },
		"no pki":      func(c *Config) { c.PKIDir = "" },
		"plain etcd":  func(c *Config) { c.Endpoints = []string{"http://10.0.0.1:2379"} },
		"no data dir": func(c *Config) { c.Endpoints = nil },
		"bad ttl":     func(c *Config) { c.SessionTTL = 1500 * time.Millisecond },
		"bad pool":    func(c *Config) { c.Pool = "A B" },
	} {
		c := ok
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestCreateVM: the embedded etcd, one create, and the keys it writes.
func TestCreateVM(t *testing.T) {
	c := startController(t, "c1", nil)
	waitLeader(t, c)
	st := c.Store()
	h1 := register(t, st, hostInfo("h1"))
	big := hostInfo("h2")
	big.MemBytes = 64 << 30
	h2 := register(t, st, big)
	cl := client(c)
	ctx := ctxT(t, 20*time.Second)

	v, err := cl.CreateVM(ctx, vmReq("vm1"))
	if err != nil {
		t.Fatal(err)
	}
	if v.Host != "h2" || v.Phase != poolapi.PhaseScheduled || v.OwnerRev == 0 {
		t.Fatalf("created %+v, want on the emptier h2, scheduled", v)
	}
	spec, _, err := st.GetVMSpec(ctx, "vm1")
	if err != nil || spec.Kernel != "/guest.elf" || spec.Cmdline != "cpus=1" || spec.Desired != store.DesiredRunning ||
		spec.NICs[0].MAC == "" || spec.Disks[0].StorageID != "nfs1" {
		t.Fatalf("spec %+v, %v", spec, err)
	}
	o, rev, err := st.GetOwner(ctx, "vm1")
	if err != nil || o.Host != "h2" || o.Lease != int64(h2.lease) || rev != v.OwnerRev {
		t.Fatalf("owner %+v rev %d (%v), want h2 lease %x rev %d", o, rev, err, h2.lease, v.OwnerRev)
	}
	// The owner key is bound to the host's lease.
	resp, err := st.Client().Get(ctx, store.OwnerKey("vm1"))
	if err != nil || clientv3.LeaseID(resp.Kvs[0].Lease) != h2.lease {
		t.Fatalf("owner key lease %v (%v)", resp.Kvs, err)
	}

	// Explicit host, checked the same way.
	req := vmReq("vm2")
	req.Host = "h1"
	if v, err := cl.CreateVM(ctx, req); err != nil || v.Host != "h1" {
		t.Fatalf("explicit h1: %+v, %v", v, err)
	}
	if o, _, _ := st.GetOwner(ctx, "vm2"); o.Lease != int64(h1.lease) {
		t.Fatalf("vm2 owner %+v", o)
	}
	// Duplicates, unknowns, bad input.
	apiErr(t, func() error { _, err := cl.CreateVM(ctx, vmReq("vm1")); return err }(), 409, "vm vm1 exists")
	apiErr(t, func() error { _, err := cl.VM(ctx, "nope"); return err }(), 404, "unknown vm nope")
	apiErr(t, func() error { _, err := cl.Host(ctx, "nope"); return err }(), 404, "unknown host nope")
	apiErr(t, func() error { _, err := cl.StartVM(ctx, "nope"); return err }(), 404, "unknown vm nope")
	apiErr(t, func() error { _, err := cl.Migration(ctx, "vm1"); return err }(), 404, "no migration record")
	req = vmReq("vm3")
	req.Host = "h9"
	apiErr(t, func() error { _, err := cl.CreateVM(ctx, req); return err }(), 404, "unknown host h9")
	req = vmReq("vm3")
	req.Spec.Kernel = ""
	apiErr(t, func() error { _, err := cl.CreateVM(ctx, req); return err }(), 400, "no kernel")
	req = vmReq("vm3")
	req.Spec.Disks = append(req.Spec.Disks, req.Spec.Disks[0])
	apiErr(t, func() error { _, err := cl.CreateVM(ctx, req); return err }(), 400, "at most one of each")
	req = vmReq("Bad_Name")
	apiErr(t, func() error { _, err := cl.CreateVM(ctx, req); return err }(), 400, "vm name")

	hosts, err := cl.Hosts(ctx)
	if err != nil || len(hosts) != 2 || hosts[1].AllocVCPUs != 1 || hosts[1].AllocMemBytes != 768<<20 || !hosts[0].Alive {
		t.Fatalf("hosts %+v, %v", hosts, err)
	}
	vms, err := cl.VMs(ctx)
	if err != nil || len(vms) != 2 || vms[0].Name != "vm1" {
		t.Fatalf("vms %+v, %v", vms, err)
	}
}

// TestPlacementRefused: a VM whose storage or network no host has is
// refused with each host's reason, and nothing is written.
func TestPlacementRefused(t *testing.T) {
	c := startController(t, "c1", startEtcd(t))
	waitLeader(t, c)
	st := c.Store()
	register(t, st, hostInfo("h1"))
	other := hostInfo("h2")
	other.Networks = []string{"br1"}
	register(t, st, other)
	cl := client(c)
	ctx := ctxT(t, 20*time.Second)

	req := vmReq("vm1")
	req.Spec.Disks[0].StorageID = "san9"
	e := apiErr(t, func() error { _, err := cl.CreateVM(ctx, req); return err }(), 409,
		"no host can take vm vm1", "h1: storage san9 missing", "h2: storage san9 missing")
	if len(e.Reasons["h2"]) != 2 || !strings.Contains(e.Reasons["h2"][1], "network br0 missing") {
		t.Fatalf("reasons %v", e.Reasons)
	}
	req = vmReq("vm1")
	req.Host = "h2"
	apiErr(t, func() error { _, err := cl.CreateVM(ctx, req); return err }(), 409, "cannot place vm vm1 on host h2: network br0 missing")
	if _, err := st.GetVM(ctx, "vm1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused VM left keys: %v", err)
	}
	// A draining host takes nothing.
	if _, err := st.SetHostState(ctx, "h1", store.HostState{State: store.HostDraining}, store.AnyRev, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	apiErr(t, func() error { _, err := cl.CreateVM(ctx, vmReq("vm1")); return err }(), 409, "h1: state draining")
}

// TestMigrate: incompatible destinations are refused naming the reason;
// a compatible one gets a record with the owner's epoch.
func TestMigrate(t *testing.T) {
	c := startController(t, "c1", startEtcd(t))
	waitLeader(t, c)
	st := c.Store()
	register(t, st, hostInfo("h1"))
	register(t, st, hostInfo("h2"))
	cpu := hostInfo("h3")
	cpu.CPUIDHash = "cpu-b"
	register(t, st, cpu)
	tsc := hostInfo("h4")
	tsc.TSCKHz = 2_002_000 // 1000 ppm
	register(t, st, tsc)
	nostore := hostInfo("h5")
	nostore.StorageIDs = nil
	register(t, st, nostore)
	cl := client(c)
	ctx := ctxT(t, 20*time.Second)

	req := vmReq("vm1")
	req.Host = "h1"
	v, err := cl.CreateVM(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for to, want := range map[string]string{
		"h3": "CPU identity differs",
		"h4": "TSC 2002000 kHz is 1000 ppm from h1's 2000000 kHz",
		"h5": "storage nfs1 missing",
		"h1": "is the VM's current host",
	} {
		apiErr(t, func() error { _, err := cl.MigrateVM(ctx, "vm1", poolapi.MigrateRequest{To: to}); return err }(), 409,
			"cannot migrate vm vm1 to host "+to, want)
	}
	apiErr(t, func() error { _, err := cl.MigrateVM(ctx, "vm1", poolapi.MigrateRequest{To: "h9"}); return err }(), 404, "unknown host h9")
	apiErr(t, func() error { _, err := cl.MigrateVM(ctx, "nope", poolapi.MigrateRequest{}); return err }(), 404, "unknown vm nope")
	if _, _, err := st.GetMigration(ctx, "vm1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused migration wrote a record: %v", err)
	}

	m, err := cl.MigrateVM(ctx, "vm1", poolapi.MigrateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Dst != "h2" || m.Src != "h1" || m.Phase != store.MigrationRequested || m.ExpectOwnerRev != v.OwnerRev || m.ID == "" {
		t.Fatalf("migration %+v, want h1→h2 requested at owner rev %d", m, v.OwnerRev)
	}
	rec, _, err := st.GetMigration(ctx, "vm1")
	if err != nil || rec.ID != m.ID || rec.ExpectOwnerRev != v.OwnerRev {
		t.Fatalf("record %+v, %v", rec, err)
	}
	if got, err := cl.Migration(ctx, "vm1"); err != nil || got.ID != m.ID {
		t.Fatalf("GET migration %+v, %v", got, err)
	}
	apiErr(t, func() error { _, err := cl.MigrateVM(ctx, "vm1", poolapi.MigrateRequest{}); return err }(), 409, "already migrating")
	// The in-flight migration counts against h2.
	h, err := cl.Host(ctx, "h2")
	if err != nil || h.AllocMemBytes != 768<<20 {
		t.Fatalf("h2 %+v, %v", h, err)
	}
	// A VM without a host does not migrate.
	stopped := vmReq("vm2")
	stopped.Spec.Desired = store.DesiredStopped
	if _, err := cl.CreateVM(ctx, stopped); err != nil {
		t.Fatal(err)
	}
	apiErr(t, func() error { _, err := cl.MigrateVM(ctx, "vm2", poolapi.MigrateRequest{}); return err }(), 409, "runs on no host")
}

// TestConcurrentCreates: 50 creates at once never overfill a host.
func TestConcurrentCreates(t *testing.T) {
	c := startController(t, "c1", startEtcd(t))
	waitLeader(t, c)
	st := c.Store()
	// 4 GiB − 512 MiB reserve = 3584 MiB; each VM 256 MiB + 256 MiB
	// overhead: 7 per host by memory. h2 has 1 CPU: 4 vCPUs.
	register(t, st, hostInfo("h1"))
	small := hostInfo("h2")
	small.CPUs = 1
	register(t, st, small)
	cl := client(c)
	ctx := ctxT(t, 60*time.Second)

	var wg sync.WaitGroup
	var mu sync.Mutex
	placed, refused := 0, 0
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := vmReq(fmt.Sprintf("vm%02d", i))
			req.Spec.MemBytes = 256 << 20
			_, err := cl.CreateVM(ctx, req)
			mu.Lock()
			defer mu.Unlock()
			var e *poolapi.Error
			switch {
			case err == nil:
				placed++
			case errors.As(err, &e) && e.Status == 409:
				refused++
			default:
				t.Errorf("create: %v", err)
			}
			if err != nil && testing.Verbose() {
				t.Logf("refused: %v", err)
			}
		}()
	}
	wg.Wait()
	if placed != 11 || refused != 39 {
		t.Fatalf("placed %d, refused %d; want 11 (7 on h1 by memory, 4 on h2 by vCPUs) and 39", placed, refused)
	}
	vms, _, err := st.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, v := range vms {
		per[v.Owner.Host]++
	}
	if per["h1"] != 7 || per["h2"] != 4 || len(vms) != 11 {
		t.Fatalf("VMs per host %v (%d VMs)", per, len(vms))
	}
	if r := c.reservations(); len(r) != 0 {
		t.Fatalf("reservations left: %v", r)
	}
}

// TestLifecycle: stop, delete only when released, start places again.
func TestLifecycle(t *testing.T) {
	c := startController(t, "c1", startEtcd(t))
	waitLeader(t, c)
	st := c.Store()
	register(t, st, hostInfo("h1"))
	cl := client(c)
	ctx := ctxT(t, 20*time.Second)
	if _, err := cl.CreateVM(ctx, vmReq("vm1")); err != nil {
		t.Fatal(err)
	}
	apiErr(t, cl.DeleteVM(ctx, "vm1"), 409, "not stopped", "godwit vm stop vm1")
	v, err := cl.StopVM(ctx, "vm1")
	if err != nil || v.Spec.Desired != store.DesiredStopped || v.Phase != poolapi.PhaseStopping {
		t.Fatalf("stop: %+v, %v", v, err)
	}
	apiErr(t, cl.DeleteVM(ctx, "vm1"), 409, "still held by host h1")
	// The agent stops the VM and releases the owner.
	if _, err := st.ReleaseOwner(ctx, "vm1", v.OwnerRev); err != nil {
		t.Fatal(err)
	}
	if v, err = cl.VM(ctx, "vm1"); err != nil || v.Phase != poolapi.PhaseStopped {
		t.Fatalf("after release: %+v, %v", v, err)
	}
	if v, err = cl.StartVM(ctx, "vm1"); err != nil || v.Host != "h1" || v.Spec.Desired != store.DesiredRunning {
		t.Fatalf("start: %+v, %v", v, err)
	}
	if _, err := cl.StopVM(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReleaseOwner(ctx, "vm1", v.OwnerRev); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteVM(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	apiErr(t, func() error { _, err := cl.VM(ctx, "vm1"); return err }(), 404)
}

// TestLeaderElection: two controllers, one etcd. Only the leader writes;
// closing it hands over within about a second; a deposed leader's guarded
// write fails.
func TestLeaderElection(t *testing.T) {
	eps := startEtcd(t)
	c1 := startController(t, "c1", eps)
	leader := waitLeader(t, c1)
	c2 := startController(t, "c2", eps)
	time.Sleep(100 * time.Millisecond)
	if c2.IsLeader() {
		t.Fatal("two leaders")
	}
	st := c1.Store()
	register(t, st, hostInfo("h1"))
	register(t, st, hostInfo("h2"))
	ctx := ctxT(t, 30*time.Second)

	// The follower refuses writes, naming the leader; it serves reads.
	status, body := rawPost(t, c2, "/v1/vms", `{"name":"vm1","spec":{"vcpus":1,"mem_bytes":536870912,"kernel":"/k"}}`)
	if status != 503 || !strings.Contains(body, "leader is c1 at "+c1.URL()) {
		t.Fatalf("follower write: %d %s", status, body)
	}
	if _, err := client(c2).Hosts(ctx); err != nil {
		t.Fatalf("follower read: %v", err)
	}
	// The client follows the leader by itself.
	if _, err := client(c2).CreateVM(ctx, vmReq("vm1")); err != nil {
		t.Fatalf("create through follower: %v", err)
	}
	cs, err := client(c2).Cluster(ctx)
	if err != nil || cs.Leader != "c1" || cs.Leading || len(cs.Members) != 2 || cs.Hosts.Up != 2 || cs.VMs.Total != 1 {
		t.Fatalf("cluster %+v, %v", cs, err)
	}

	// Kill the leader: the other leads within ~1 s and writes.
	oldGuard := leader.guard
	began := time.Now()
	leader.Close()
	waitLeader(t, c2)
	if took := time.Since(began); took > 5*time.Second { // ~1 s unloaded
		t.Fatalf("handover took %s", took)
	}
	if _, err := client(c2).CreateVM(ctx, vmReq("vm2")); err != nil {
		t.Fatalf("create on new leader: %v", err)
	}
	// The deposed leader's guard no longer lets a write through.
	if _, err := c2.Store().PutVMSpec(ctx, "vm3", store.VMSpec{VCPUs: 1, MemBytes: 1 << 20}, 0, oldGuard); err == nil || !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("deposed leader's write: %v, want ErrNotLeader", err)
	}
}

// TestDeposedLeader: the leader's session lease is revoked behind its back
// (as when it is cut off for a TTL); a write it makes with its guard fails,
// the peer leads, and the deposed controller reports the new leader.
func TestDeposedLeader(t *testing.T) {
	eps := startEtcd(t)
	c1 := startController(t, "c1", eps)
	waitLeader(t, c1)
	c2 := startController(t, "c2", eps)
	st := c2.Store()
	register(t, st, hostInfo("h1"))
	ctx := ctxT(t, 30*time.Second)

	c1.mu.Lock()
	g, lease := c1.guard, c1.cand.Lease()
	c1.mu.Unlock()
	if _, err := st.Client().Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PlaceVM(ctx, "vm1", store.VMSpec{VCPUs: 1, MemBytes: 1 << 20}, 0, "h1", 0, g); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("deposed write: %v, want ErrNotLeader", err)
	}
	waitLeader(t, c2)
	deadline := time.Now().Add(5 * time.Second)
	for c1.IsLeader() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	status, body := rawPost(t, c1, "/v1/vms/vm1/stop", "")
	if status != 503 || !strings.Contains(body, "leader is c2") {
		t.Fatalf("deposed controller: %d %s", status, body)
	}
}

// TestOtherPoolRefused: a controller pointed at an etcd whose config names
// another pool refuses to start.
func TestOtherPoolRefused(t *testing.T) {
	eps := startEtcd(t)
	alpha := testenv.NewPoolPKI(t, "alpha").Dir()
	startController(t, "c1", eps, func(c *Config) { c.Pool, c.PKIDir = "alpha", alpha })
	_, err := Start(ctxT(t, 20*time.Second), Config{ID: "c2", Pool: "beta", Listen: "127.0.0.1:0", PKIDir: testenv.NewPoolPKI(t, "beta").Dir(), Endpoints: eps})
	if err == nil || !strings.Contains(err.Error(), `holds pool "alpha"`) || !strings.Contains(err.Error(), "--pool alpha") {
		t.Fatalf("Start on another pool's etcd: %v", err)
	}
	// The same pool joins.
	startController(t, "c3", eps, func(c *Config) { c.Pool, c.PKIDir = "alpha", alpha })
}

func TestAuthAndMetrics(t *testing.T) {
	c := startController(t, "c1", startEtcd(t))
	waitLeader(t, c)
	register(t, c.Store(), hostInfo("h1"))
	ctx := ctxT(t, 20*time.Second)
	if _, err := client(c).CreateVM(ctx, vmReq("vm1")); err != nil {
		t.Fatal(err)
	}
	// Who may call: a user or a controller of the pool. A host's
	// certificate, one of another CA, and no certificate at all are
	// refused at the TLS handshake.
	p := testPKI(t)
	for what, cfg := range map[string]*tls.Config{
		"a host":    p.Credential(t, pki.RoleHost, "h1").ClientConfig("", nil),
		"a foreign": testenv.NewPoolPKI(t, DefaultPool).Credential(t, pki.RoleUser, "alice").ClientConfig("", nil),
		"no":        {InsecureSkipVerify: true},
	} {
		_, err := poolapi.NewClient(c.URL(), cfg).Hosts(ctx)
		if e := (*poolapi.Error)(nil); err == nil || errors.As(err, &e) {
			t.Errorf("%s certificate: %v, want the connection refused (no API answer)", what, err)
		}
	}
	if _, err := poolapi.NewClient(strings.Replace(c.URL(), "https:", "http:", 1), nil).Hosts(ctx); err == nil {
		t.Error("a plaintext client was answered")
	}
	// A revoked user is refused from the next connection on.
	bob := p.Issue(t, pki.RoleUser, "bob")
	bobCred, err := pki.LoadCredential(bob)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := poolapi.NewClient(c.URL(), bobCred.ClientConfig("", nil)).Hosts(ctx); err != nil {
		t.Fatalf("user bob before revocation: %v", err)
	}
	if _, err := p.CA.Revoke(pki.RoleUser, "bob"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := poolapi.NewClient(c.URL(), bobCred.ClientConfig("", nil)).Hosts(ctx)
		if e := (*poolapi.Error)(nil); err != nil && !errors.As(err, &e) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked user bob still served after 5 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: userTLS(c)}}
	resp, err := hc.Get(c.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"godwit_controller_leader 1",
		`godwit_controller_placements_total{result="placed"} 1`,
		`godwit_pool_vms{phase="scheduled"} 1`,
		`godwit_pool_hosts{state="active"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q:\n%s", want, b)
		}
	}
}

func rawPost(t *testing.T, c *Controller, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", c.URL()+path, strings.NewReader(body))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: userTLS(c)}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEtcdAccess: the embedded etcd serves only TLS with a certificate of
// the pool, and each role reaches only its keys: a host reads the pool and
// writes its own record, not another host's, nor the rules; a user has no
// etcd access at all (it goes through the API); a host revoked in the CA
// loses its etcd user within a few seconds.
func TestEtcdAccess(t *testing.T) {
	p := testPKI(t)
	h1 := p.Credential(t, pki.RoleHost, "h1")
	alice := p.Credential(t, pki.RoleUser, "alice")
	c := startController(t, "c1", nil)
	eps := c.Endpoints()
	if !strings.HasPrefix(eps[0], "https://") {
		t.Fatalf("embedded etcd at %v: want https", eps)
	}
	connect := func(cfg *tls.Config) (*clientv3.Client, error) {
		return store.Connect(ctxT(t, 10*time.Second), store.ClientConfig{Endpoints: eps, TLS: cfg, DialTimeout: 2 * time.Second})
	}
	// No certificate, another CA's, plaintext: no connection at all.
	foreign := testenv.NewPoolPKI(t, DefaultPool).Credential(t, pki.RoleHost, "h1")
	for what, cfg := range map[string]*tls.Config{
		"no certificate": {InsecureSkipVerify: true},
		"another CA's":   foreign.ClientConfig("", nil),
	} {
		if cli, err := connect(cfg); err == nil {
			cli.Close()
			t.Errorf("%s: connected to etcd", what)
		}
	}
	if cli, err := store.Connect(ctxT(t, 10*time.Second), store.ClientConfig{Endpoints: []string{strings.Replace(eps[0], "https", "http", 1)}, DialTimeout: 2 * time.Second}); err == nil {
		cli.Close()
		t.Error("plaintext: connected to etcd")
	}
	// A user's certificate: TLS passes, etcd knows no such user.
	if cli, err := connect(alice.ClientConfig("", nil)); err == nil {
		cli.Close()
		t.Error("a user's certificate reads etcd")
	}

	cli, err := connect(h1.ClientConfig("", nil))
	if err != nil {
		t.Fatalf("host h1: %v", err)
	}
	defer cli.Close()
	ctx := ctxT(t, 10*time.Second)
	if _, err := cli.Get(ctx, store.Prefix, clientv3.WithPrefix()); err != nil {
		t.Errorf("h1 reads the pool: %v", err)
	}
	if _, err := cli.Put(ctx, store.HostInfoKey("h1"), "{}"); err != nil {
		t.Errorf("h1 writes its own record: %v", err)
	}
	denied := func(keys ...string) {
		t.Helper()
		for _, key := range keys {
			if _, err := cli.Put(ctx, key, "{}"); err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("h1 writes %s: %v, want permission denied", key, err)
			}
		}
	}
	denied(store.HostInfoKey("h2"), store.HostAliveKey("h2"), store.RuleKey("r1"), store.ConfigKey, store.CRLKey,
		store.OwnerKey("vm1"), store.VMStatusKey("vm1"), store.MigrationKey("vm1"), store.VMSpecKey("vm1"))
	// Running (or receiving) vm1, h1 writes its owner, status and
	// migration keys, never its spec; once it no longer does, not even those.
	if err := c.grantVM(ctx, "h1", "vm1"); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{store.OwnerKey("vm1"), store.VMStatusKey("vm1"), store.MigrationKey("vm1")} {
		if _, err := cli.Put(ctx, key, "{}"); err != nil {
			t.Errorf("h1 writes %s of a VM it runs: %v", key, err)
		}
	}
	denied(store.VMSpecKey("vm1"), store.OwnerKey("vm2"))
	if err := store.SyncVMGrants(ctx, c.cli, map[string]map[string]bool{"h1": {}}); err != nil {
		t.Fatal(err)
	}
	denied(store.OwnerKey("vm1"), store.VMStatusKey("vm1"), store.MigrationKey("vm1"))
	if _, err := p.CA.Revoke(pki.RoleHost, "h1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := cli.Put(ctx, store.HostInfoKey("h1"), "{}")
		if err != nil {
			t.Logf("revoked h1: %v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("h1 still writes etcd 5 s after its revocation")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
