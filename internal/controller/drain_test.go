package controller

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	"github.com/godwit-vmm/godwit/internal/testenv"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fakeAgents plays the source agents of migrations: a requested record is
// committed at once (HandOver to the destination's lease), or failed for
// the VMs in fail (once per entry), or, for the VMs in stall (once per
// entry), marked running with its last progress now on clock and then
// failed only when a cancel is asked for.
type fakeAgents struct {
	st     *store.Store
	clock  clockwork.Clock // for stall; nil: the real clock
	leases map[string]clientv3.LeaseID
	mu     sync.Mutex
	fail   map[string]int // VM -> failures left
	stall  map[string]int // VM -> stalls left
	seen   []string       // "vm src->dst phase"
}

// stallOrCancel handles the stalled migrations of f.stall; it reports
// whether m was one.
func (f *fakeAgents) stallOrCancel(ctx context.Context, v store.VM) bool {
	m := v.Migration
	if m.Phase == store.MigrationRunning {
		if m.Cancel == "" {
			return true
		}
		rec, rev, err := f.st.GetMigration(ctx, v.Name)
		if err != nil || rec.ID != m.ID {
			return true
		}
		rec.Phase, rec.Error = store.MigrationFailed, "cancelled ("+rec.Cancel+")"
		if _, err := f.st.PutMigration(ctx, rec, rev, store.Guard{}); err == nil {
			f.mu.Lock()
			f.seen = append(f.seen, v.Name+" "+m.Src+"->"+m.Dst+" cancelled")
			f.mu.Unlock()
		}
		return true
	}
	f.mu.Lock()
	stall := f.stall[v.Name] > 0
	if stall {
		f.stall[v.Name]--
	}
	f.mu.Unlock()
	if !stall {
		return false
	}
	rec, rev, err := f.st.GetMigration(ctx, v.Name)
	if err != nil || rec.ID != m.ID {
		return true
	}
	now := time.Now().UTC()
	if f.clock != nil {
		now = f.clock.Now().UTC()
	}
	rec.Phase, rec.Updated = store.MigrationRunning, now
	f.st.PutMigration(ctx, rec, rev, store.Guard{})
	return true
}

func (f *fakeAgents) run(t *testing.T, ctx context.Context) {
	go func() {
		for ctx.Err() == nil {
			time.Sleep(30 * time.Millisecond)
			vms, _, err := f.st.ListVMs(ctx)
			if err != nil {
				continue
			}
			for _, v := range vms {
				m := v.Migration
				if m == nil || m.Phase.Terminal() || f.stallOrCancel(ctx, v) || m.Phase != store.MigrationRequested {
					continue
				}
				f.mu.Lock()
				fail := f.fail[v.Name] > 0
				if fail {
					f.fail[v.Name]--
				}
				f.mu.Unlock()
				rec, rev, err := f.st.GetMigration(ctx, v.Name)
				if err != nil || rec.ID != m.ID {
					continue
				}
				if fail {
					rec.Phase, rec.Error = store.MigrationFailed, "injected failure"
					f.st.PutMigration(ctx, rec, rev, store.Guard{})
				} else if _, err := f.st.HandOver(ctx, v.Name, m.ExpectOwnerRev, m.Dst, f.leases[m.Dst], rec); err != nil {
					t.Logf("hand over %s: %v", v.Name, err)
					continue
				}
				f.mu.Lock()
				f.seen = append(f.seen, v.Name+" "+m.Src+"->"+m.Dst+" "+map[bool]string{true: "failed", false: "committed"}[fail])
				f.mu.Unlock()
			}
		}
	}()
}

func (f *fakeAgents) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func waitCond(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDrain: a drain with fake agents. The host's three VMs move shortest
// first (one at a time), one after an injected failure on another host; a
// VM whose storage only the drained host has is blocked with its reason
// and the drain waits; cancel returns the host to active; after the
// blocked VM is gone a new drain ends in maintenance; activate returns it.
func TestDrain(t *testing.T) {
	c := startController(t, "c1", nil)
	waitLeader(t, c)
	st, cl := c.Store(), client(c)
	ia := hostInfo("a")
	ia.StorageIDs = append(ia.StorageIDs, "local-a")
	f := &fakeAgents{st: st, leases: map[string]clientv3.LeaseID{}, fail: map[string]int{"v2": 1}}
	for _, info := range []store.HostInfo{ia, hostInfo("b"), hostInfo("c")} {
		f.leases[info.Host] = register(t, st, info).lease
	}
	ctx := ctxT(t, 60*time.Second)
	for i, mem := range []uint64{768 << 20, 256 << 20, 512 << 20} {
		req := vmReq([]string{"v1", "v2", "v3"}[i])
		req.Spec.MemBytes, req.Host = mem, "a"
		if _, err := cl.CreateVM(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	local := vmReq("local")
	local.Host, local.Spec.Disks[0].StorageID = "a", "local-a"
	if _, err := cl.CreateVM(ctx, local); err != nil {
		t.Fatal(err)
	}
	// The dry run: the order, destinations and the blocked VM, and
	// nothing written.
	dry, err := cl.PlanDrain(ctx, "a", 2)
	if err != nil {
		t.Fatal(err)
	}
	var names, plans []string
	for _, v := range dry.VMs {
		names = append(names, v.Name)
		plans = append(plans, v.State+":"+v.Dst)
	}
	// Shortest predicted first (local and v3 tie on memory: by name).
	if strings.Join(names, ",") != "v2,local,v3,v1" || dry.Blocked != 1 || dry.Concurrency != 2 || dry.HostState != "active" {
		t.Fatalf("dry run: %+v", dry)
	}
	if r := dry.VMs[1].Reason; dry.VMs[1].State != "blocked" || !strings.Contains(r, "b: storage local-a missing") || strings.Contains(r, "a:") {
		t.Errorf("dry run: local %s %q, want blocked for storage on b and c only", dry.VMs[1].State, r)
	}
	sum := 0.0
	for _, v := range []poolapi.DrainVM{dry.VMs[0], dry.VMs[2], dry.VMs[3]} {
		if v.State != "planned" || (v.Dst != "b" && v.Dst != "c") {
			t.Errorf("dry run: %s %s → %q, want planned to b or c", v.Name, v.State, v.Dst)
		}
		sum += v.PredictedSeconds
	}
	// Two at a time: v2 and v3 start, v1 follows v2, so the drain takes
	// less than the sum and at least the longest (v1 after v2).
	if want := dry.VMs[0].PredictedSeconds + dry.VMs[3].PredictedSeconds; dry.PredictedSeconds != want || want >= sum {
		t.Errorf("predicted drain %.2fs with concurrency 2, want %.2fs (moves sum to %.2fs)", dry.PredictedSeconds, want, sum)
	}
	if h, err := st.GetHost(ctx, "a"); err != nil || hostStateOf(h) != store.HostActive && hostStateOf(h) != "" {
		t.Fatalf("host a after the dry run: %+v %v", h.State, err)
	}
	if _, _, err := st.GetDrain(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the dry run wrote a drain record: %v", err)
	}
	if _, err := cl.PlanDrain(ctx, "a", 99); err == nil {
		t.Error("dry run with concurrency 99 accepted")
	}
	t.Logf("dry run: %v, predicted %.2fs", plans, dry.PredictedSeconds)
	f.run(t, ctx)

	d, err := cl.DrainHost(ctx, "a", poolapi.DrainRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Phase != poolapi.DrainRunning || d.Total != 4 || d.OnBlocked != "wait" || d.Concurrency != 1 {
		t.Fatalf("drain: %+v", d)
	}
	if len(d.Blocked) != 1 || !strings.HasPrefix(d.Blocked[0], "local: no compatible host") || !strings.Contains(d.Blocked[0], "storage local-a missing") {
		t.Fatalf("blocked at once: %v", d.Blocked)
	}
	if _, err := cl.CreateVM(ctx, func() poolapi.CreateVMRequest { r := vmReq("new"); r.Host = "a"; return r }()); err == nil {
		t.Fatal("a VM was placed on a draining host")
	}
	waitCond(t, 20*time.Second, "v1-v3 off host a", func() bool {
		d, err = cl.HostDrain(ctx, "a")
		// The fake agents log a commit right after its HandOver, which
		// the drain may see first.
		return err == nil && d.Done == 3 && len(d.InFlight) == 0 && strings.Count(strings.Join(f.log(), ","), "committed") == 3
	})
	if d.Phase != poolapi.DrainRunning || d.HostState != "draining" {
		t.Fatalf("with a blocked VM the drain waits: %+v", d)
	}
	log := f.log()
	t.Logf("migrations: %v", log)
	var order []string
	for _, l := range log {
		if strings.HasSuffix(l, "committed") {
			order = append(order, strings.Fields(l)[0])
		}
	}
	if strings.Join(order, ",") != "v2,v3,v1" {
		t.Errorf("commit order %v, want shortest first v2,v3,v1", order)
	}
	if !strings.HasPrefix(log[0], "v2 a->") || !strings.HasSuffix(log[0], "failed") || log[1][:5] != "v2 a-" || log[0] == strings.Replace(log[1], "committed", "failed", 1) {
		t.Errorf("v2's retry did not go to another host: %v", log)
	}
	for _, v := range d.VMs {
		want := map[string]string{"v1": "done", "v2": "done", "v3": "done", "local": "blocked"}[v.Name]
		if v.State != want {
			t.Errorf("vm %s: %+v, want %s", v.Name, v, want)
		}
		if v.Name == "v2" && v.Attempts != 2 {
			t.Errorf("v2 attempts %d, want 2", v.Attempts)
		}
	}

	// Cancel: host active again, the blocked VM still there.
	if d, err = cl.CancelDrain(ctx, "a"); err != nil || d.Phase != poolapi.DrainCancelled || d.HostState != "active" {
		t.Fatalf("cancel: %+v %v", d, err)
	}
	if _, err := cl.CancelDrain(ctx, "a"); err == nil {
		t.Fatal("cancel of a host that is not draining accepted")
	}
	// Stop the blocked VM (a fake agent releases it), drain again: maintenance.
	if _, err := cl.StopVM(ctx, "local"); err != nil {
		t.Fatal(err)
	}
	_, rev, err := st.GetOwner(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReleaseOwner(ctx, "local", rev); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.DrainHost(ctx, "a", poolapi.DrainRequest{OnBlocked: "fail", Concurrency: 2}); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 10*time.Second, "host a in maintenance", func() bool {
		d, err = cl.HostDrain(ctx, "a")
		return err == nil && d.Phase == poolapi.DrainDone
	})
	if h, err := cl.ActivateHost(ctx, "a"); err != nil || h.State != "active" {
		t.Fatalf("activate: %+v %v", h, err)
	}
}

// TestDrainTimeoutCancels, on a fake clock: a drain migration that
// reports no progress is left alone for exactly ProgressTimeout and
// cancelled one second later; the cancel counts as a failed attempt and
// the VM moves on the retry, to the other host.
func TestDrainTimeoutCancels(t *testing.T) {
	clk := clockwork.NewFakeClockAt(time.Now())
	c := startController(t, "c1", nil, func(cfg *Config) { cfg.Logger, cfg.Clock = testenv.Logger(t), clk })
	waitLeader(t, c)
	st, cl := c.Store(), client(c)
	f := &fakeAgents{st: st, leases: map[string]clientv3.LeaseID{}, stall: map[string]int{"v1": 1}, clock: clk}
	for _, h := range []string{"a", "b", "c"} {
		f.leases[h] = register(t, st, hostInfo(h)).lease
	}
	ctx := ctxT(t, 30*time.Second)
	req := vmReq("v1")
	req.Host = "a"
	if _, err := cl.CreateVM(ctx, req); err != nil {
		t.Fatal(err)
	}
	f.run(t, ctx)
	if _, err := cl.DrainHost(ctx, "a", poolapi.DrainRequest{}); err != nil {
		t.Fatal(err)
	}
	var stalled store.Migration
	waitCond(t, 10*time.Second, "the drain migration stalled", func() bool {
		m, _, err := st.GetMigration(ctx, "v1")
		stalled = m
		return err == nil && m.Phase == store.MigrationRunning
	})
	if !stalled.Updated.Equal(clk.Now().UTC()) || !stalled.Started.Equal(clk.Now().UTC()) {
		t.Fatalf("migration started %s, updated %s: want both at the fake clock's %s", stalled.Started, stalled.Updated, clk.Now().UTC())
	}

	clk.Advance(ProgressTimeout) // the drain loop's ticker fires: a pass at exactly the timeout
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if m, _, err := st.GetMigration(ctx, "v1"); err != nil || m.ID != stalled.ID || m.Cancel != "" || m.Phase != store.MigrationRunning {
			t.Fatalf("after exactly %s without progress: migration %+v (%v), want it running, not cancelled", ProgressTimeout, m, err)
		}
	}

	clk.Advance(time.Second)
	var d poolapi.Drain
	waitCond(t, 20*time.Second, "host a in maintenance", func() bool {
		var err error
		d, err = cl.HostDrain(ctx, "a")
		return err == nil && d.Phase == poolapi.DrainDone
	})
	log := f.log()
	if len(log) != 2 || !strings.HasSuffix(log[0], " cancelled") || !strings.HasSuffix(log[1], " committed") || log[0][:8] == log[1][:8] {
		t.Fatalf("migrations %v, want the stalled one cancelled, then the retry committed on the other host", log)
	}
	if len(d.VMs) != 1 || d.VMs[0].Attempts != 2 || d.VMs[0].State != "done" {
		t.Errorf("drain VMs %+v, want v1 done after 2 attempts", d.VMs)
	}
	m, _, err := st.GetMigration(ctx, "v1")
	if err != nil || m.Phase != store.MigrationCommitted || !m.Started.Equal(clk.Now().UTC()) {
		t.Errorf("the retry: %+v (%v), want committed, started at the fake clock's %s", m, err, clk.Now().UTC())
	}
}

// TestDrainDryRunHAAdmission: three hosts, one HA VM each (1, 1.5 and
// 1.5 GiB). Draining a leaves b or c holding two of them, so that the
// failure of either could not be absorbed: the dry run says so, naming
// the VMs, and the drain is refused unless forced. Without HA the same
// pool has nothing at risk.
func TestDrainDryRunHAAdmission(t *testing.T) {
	c := startController(t, "c1", nil)
	waitLeader(t, c)
	st, cl := c.Store(), client(c)
	for _, h := range []string{"a", "b", "c"} {
		register(t, st, hostInfo(h))
	}
	ctx := ctxT(t, 30*time.Second)
	for _, v := range []struct {
		name, host string
		mem        uint64
	}{{"va", "a", 1 << 30}, {"vb", "b", 1536 << 20}, {"vc", "c", 1536 << 20}} {
		req := vmReq(v.name)
		req.Host, req.Spec.MemBytes, req.Spec.HA = v.host, v.mem, store.HASpec{Restart: true}
		if _, err := cl.CreateVM(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	dry, err := cl.PlanDrain(ctx, "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("HA at risk after draining a: %q", dry.HAAtRisk)
	if len(dry.HAAtRisk) != 2 || !strings.Contains(strings.Join(dry.HAAtRisk, "\n"), "va") {
		t.Errorf("HA at risk %q, want both remaining hosts, va among the VMs", dry.HAAtRisk)
	}
	// HA admission: the drain itself is refused, and nothing changes,
	// unless forced.
	if _, err := cl.DrainHost(ctx, "a", poolapi.DrainRequest{}); err == nil {
		t.Fatal("a drain that leaves HA without failover room was accepted")
	} else {
		apiErr(t, err, 409, "HA without failover room", "--force")
	}
	if h, err := st.GetHost(ctx, "a"); err != nil || hostStateOf(h) == store.HostDraining {
		t.Fatalf("host a after the refused drain: %+v %v", h.State, err)
	}
	if d, err := cl.DrainHost(ctx, "a", poolapi.DrainRequest{Force: true}); err != nil || d.Phase != poolapi.DrainRunning {
		t.Fatalf("forced drain: %+v %v", d, err)
	}
	if _, err := cl.CancelDrain(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	// The same pool without HA: nothing at risk.
	for _, name := range []string{"va", "vb", "vc"} {
		spec, rev, err := st.GetVMSpec(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		spec.HA = store.HASpec{}
		if _, err := st.PutVMSpec(ctx, name, spec, rev, store.Guard{}); err != nil {
			t.Fatal(err)
		}
	}
	if dry, err = cl.PlanDrain(ctx, "a", 0); err != nil || len(dry.HAAtRisk) != 0 {
		t.Errorf("without HA: at risk %q (%v)", dry.HAAtRisk, err)
	}
}

// TestCancelMigrationAPI: PATCH /v1/migrations/{v} changes the record's
// limits and DELETE sets its Cancel while the migration runs; both are
// refused when none runs.
func TestCancelMigrationAPI(t *testing.T) {
	c := startController(t, "c1", nil)
	waitLeader(t, c)
	st, cl := c.Store(), client(c)
	for _, h := range []string{"a", "b"} {
		register(t, st, hostInfo(h))
	}
	ctx := ctxT(t, 30*time.Second)
	req := vmReq("v1")
	req.Host = "a"
	if _, err := cl.CreateVM(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CancelMigration(ctx, "v1"); err == nil || !strings.Contains(err.Error(), "no migration record") {
		t.Fatalf("cancel with no migration: %v", err)
	}
	m, err := cl.MigrateVM(ctx, "v1", poolapi.MigrateRequest{To: "b", Bandwidth: 50 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if m.Bandwidth != 50<<20 {
		t.Errorf("record bandwidth %d, want %d", m.Bandwidth, 50<<20)
	}
	// New limits while it runs; bad ones refused.
	zero, down := uint64(0), 120.0
	if _, err := cl.SetMigrationLimits(ctx, "v1", poolapi.MigrationLimits{}); err == nil {
		t.Error("empty limits accepted")
	}
	bad := 0.0
	if _, err := cl.SetMigrationLimits(ctx, "v1", poolapi.MigrationLimits{DowntimeMs: &bad}); err == nil {
		t.Error("a zero downtime accepted")
	}
	if l, err := cl.SetMigrationLimits(ctx, "v1", poolapi.MigrationLimits{Bandwidth: &zero, DowntimeMs: &down}); err != nil || l.Bandwidth != 0 || l.DowntimeMs != 120 {
		t.Fatalf("set limits: %+v %v", l, err)
	}
	got, err := cl.CancelMigration(ctx, "v1")
	if err != nil || got.ID != m.ID || got.Cancel != "cancelled by the user" {
		t.Fatalf("cancel: %+v %v", got, err)
	}
	rec, rev, err := st.GetMigration(ctx, "v1")
	if err != nil || rec.Cancel == "" || rec.Phase != store.MigrationRequested {
		t.Fatalf("record after cancel: %+v %v", rec, err)
	}
	// Asking again is accepted and changes nothing.
	if _, err := cl.CancelMigration(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, rev2, _ := st.GetMigration(ctx, "v1"); rev2 != rev {
		t.Errorf("a second cancel rewrote the record (rev %d → %d)", rev, rev2)
	}
	rec.Phase, rec.Error = store.MigrationFailed, "cancelled"
	if _, err := st.PutMigration(ctx, rec, rev, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CancelMigration(ctx, "v1"); err == nil || !strings.Contains(err.Error(), "no migration under way") {
		t.Fatalf("cancel of an ended migration: %v", err)
	}
	if _, err := cl.SetMigrationLimits(ctx, "v1", poolapi.MigrationLimits{Bandwidth: &zero}); err == nil || !strings.Contains(err.Error(), "no migration under way") {
		t.Fatalf("limits of an ended migration: %v", err)
	}
}

// TestDrainOnBlockedFail: with on_blocked=fail a drain whose only VM is
// blocked ends at once, host back to active with the reason.
func TestDrainOnBlockedFail(t *testing.T) {
	c := startController(t, "c1", nil)
	waitLeader(t, c)
	st, cl := c.Store(), client(c)
	ia := hostInfo("a")
	ia.StorageIDs = append(ia.StorageIDs, "local-a")
	register(t, st, ia)
	register(t, st, hostInfo("b"))
	ctx := ctxT(t, 30*time.Second)
	local := vmReq("local")
	local.Host, local.Spec.Disks[0].StorageID = "a", "local-a"
	if _, err := cl.CreateVM(ctx, local); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.DrainHost(ctx, "a", poolapi.DrainRequest{OnBlocked: "bogus"}); err == nil {
		t.Fatal("on_blocked bogus accepted")
	}
	if _, err := cl.DrainHost(ctx, "a", poolapi.DrainRequest{OnBlocked: "fail"}); err != nil {
		t.Fatal(err)
	}
	var d poolapi.Drain
	waitCond(t, 10*time.Second, "the drain to fail", func() bool {
		var err error
		d, err = cl.HostDrain(ctx, "a")
		return err == nil && d.Phase == poolapi.DrainFailed
	})
	if d.HostState != "active" || !strings.Contains(d.StateReason, "storage local-a missing") {
		t.Fatalf("failed drain: %+v", d)
	}
}

// TestHARestart: host c's lease is revoked (lost); with HA forced the
// controller marks it failed and places its two HA VMs on the other hosts
// (owner keys created), the higher priority first; the non-HA VM stays
// unowned. Without --ha-force a one-member etcd leaves HA off.
func TestHARestart(t *testing.T) {
	off := startController(t, "c0", nil)
	waitLeader(t, off)
	if ha, err := client(off).HA(ctxT(t, 5*time.Second)); err != nil || ha.Active || !strings.Contains(ha.Reason, "1 member") {
		t.Fatalf("HA with one etcd member and no force: %+v %v", ha, err)
	}
	off.Close()

	c := startController(t, "c1", nil, func(cfg *Config) { cfg.HAForce = true })
	waitLeader(t, c)
	st, cl := c.Store(), client(c)
	register(t, st, hostInfo("a"))
	register(t, st, hostInfo("b"))
	hc := register(t, st, hostInfo("c"))
	ctx := ctxT(t, 30*time.Second)
	for _, v := range []struct {
		name string
		ha   bool
		prio int
	}{{"low", true, 1}, {"high", true, 5}, {"plain", false, 0}} {
		req := vmReq(v.name)
		req.Host, req.Spec.HA = "c", store.HASpec{Restart: v.ha, Priority: v.prio}
		if _, err := cl.CreateVM(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := cl.Cluster(ctx)
	if err != nil || cs.HA == nil || !cs.HA.Active || !strings.Contains(cs.HA.Reason, "--ha-force") {
		t.Fatalf("cluster status HA: %+v %v", cs.HA, err)
	}
	if _, err := st.Client().Revoke(ctx, hc.lease); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	waitCond(t, 10*time.Second, "HA VMs placed elsewhere", func() bool {
		h, _, e1 := st.GetOwner(ctx, "high")
		l, _, e2 := st.GetOwner(ctx, "low")
		return e1 == nil && e2 == nil && h.Host != "c" && l.Host != "c"
	})
	t.Logf("HA VMs owned again %s after the host was lost", time.Since(lost).Round(time.Millisecond))
	_, hrev, _ := st.GetOwner(ctx, "high")
	_, lrev, _ := st.GetOwner(ctx, "low")
	if hrev >= lrev {
		t.Errorf("high priority placed at rev %d, low at %d: want high first", hrev, lrev)
	}
	if _, _, err := st.GetOwner(ctx, "plain"); err == nil {
		t.Error("the non-HA VM was restarted")
	}
	h, err := cl.Host(ctx, "c")
	if err != nil || h.State != "failed" {
		t.Errorf("host c: %+v %v", h, err)
	}
	v, err := cl.VM(ctx, "plain")
	if err != nil || v.Phase != poolapi.PhasePending {
		t.Errorf("plain: %+v %v", v, err)
	}
}
