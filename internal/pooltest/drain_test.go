package pooltest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// Host maintenance and HA restart end to end: drain a host
// carrying several VMs (some under a memory-writing workload, one that
// cannot move), cancel a drain midway, and kill a host with HA VMs.

// drainStatus reads host h's drain through the CLI.
func (l *lab) drainStatus(h string) poolapi.Drain {
	l.t.Helper()
	var d poolapi.Drain
	if err := l.cliJSON(&d, "host", "drain", h, "--status"); err != nil {
		l.t.Fatal(err)
	}
	return d
}

// createLocalVM creates a VM on host h whose disk lives in storage only h
// has (dir), so it cannot move.
func (l *lab) createLocalVM(name, h, dir string) {
	l.t.Helper()
	disk := filepath.Join(dir, name+".img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Truncate(disk, 8<<20); err != nil {
		l.t.Fatal(err)
	}
	l.nextIP++
	l.mustCLI("vm", "create", name, "--kernel", l.elf, "--mem", "128M", "--cpus", "1",
		"--cmdline", "cpus=1 ip="+l.net.GuestAddr(l.nextIP).String(),
		"--disk", disk+",storage="+dir, "--nic", "gwbr", "--host", h)
}

// TestDrainHost: host a carries several VMs, three of them writing memory
// (20,000 pages/s each: six guests dirtying flat out would hold a 2-core
// machine's CPUs from the agents and etcd on the software CPU), and one
// whose disk is in storage only a has. `godwit host drain a`
// moves every movable VM to b or c, shortest predicted first, one at a
// time; each guest's verify passes on its new host and its heartbeats
// continue without interleaving; the local VM is reported blocked with its
// reason and the drain waits; once it is stopped, `godwit host drain a
// --watch` sees the host reach maintenance.
func TestDrainHost(t *testing.T) {
	l := newLab(t, 3)
	local := filepath.Join(l.dir, "local-a")
	if err := os.MkdirAll(local, 0o755); err != nil {
		t.Fatal(err)
	}
	l.startAgent("a", agentOpts{storage: []string{l.shared, local}})
	l.startAgent("b", agentOpts{})
	l.startAgent("c", agentOpts{})
	const n = 5
	var names []string
	for i := range n {
		name := fmt.Sprintf("d%d", i+1)
		names = append(names, name)
		l.createVM(name, "a", []string{"128M", "96M", "160M", "64M", "112M"}[i])
	}
	l.createLocalVM("pinned", "a", local)
	for _, v := range names {
		l.waitRunning(v, "a")
	}
	l.waitRunning("pinned", "a")
	tails := map[string][]*consoleTail{}
	for i, v := range names {
		tails[v] = []*consoleTail{l.follow("a", v), l.follow("b", v), l.follow("c", v)}
		if i%2 == 0 {
			l.typeLine("a", v, "W 32 8 20000", "ACK W", 20*time.Second)
		}
	}
	for _, v := range names {
		tails[v][0].waitHeartbeats(t, 20)
	}

	// The dry run shows the same plan and leaves the host active.
	var dry poolapi.DrainPlan
	if err := l.cliJSON(&dry, "host", "drain", "a", "--dry-run"); err != nil {
		t.Fatal(err)
	}
	t.Logf("godwit host drain a --dry-run:\n%s", l.mustCLI("host", "drain", "a", "--dry-run"))
	if len(dry.VMs) != n+1 || dry.Blocked != 1 || dry.HostState != "active" {
		t.Fatalf("dry run: %+v", dry)
	}
	for _, v := range dry.VMs {
		if (v.Name == "pinned") != (v.State == "blocked") || (v.State == "planned") == (v.Dst == "") {
			t.Errorf("dry run row %+v", v)
		}
	}

	began := time.Now()
	var d poolapi.Drain
	if err := l.cliJSON(&d, "host", "drain", "a"); err != nil {
		t.Fatal(err)
	}
	t.Logf("plan: %d VMs, blocked %v", d.Total, d.Blocked)
	if d.Total != n+1 || len(d.Blocked) != 1 || !strings.HasPrefix(d.Blocked[0], "pinned: ") || !strings.Contains(d.Blocked[0], "storage "+local+" missing") {
		t.Fatalf("drain plan: %+v", d)
	}
	var hosts []poolapi.Host
	if err := l.cliJSON(&hosts, "host", "list"); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.Name == "a" && h.State != "draining" {
			t.Errorf("host a is %s during the drain", h.State)
		}
	}
	maxInFlight := 0
	waitFor(t, 120*time.Second, "every movable VM off host a", func() bool {
		d = l.drainStatus("a")
		maxInFlight = max(maxInFlight, len(d.InFlight))
		return d.Done == n && len(d.InFlight) == 0
	})
	drainTook := time.Since(began)
	if d.Phase != poolapi.DrainRunning || d.HostState != "draining" {
		t.Errorf("with a blocked VM the drain must wait: %+v", d)
	}
	if maxInFlight > 1 {
		t.Errorf("%d migrations out of a at once, want 1", maxInFlight)
	}
	// Order and single-migration times from the records.
	var sum time.Duration
	type rec struct {
		vm         string
		start, end time.Time
	}
	var recs []rec
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, v := range names {
		m, _, err := l.st.GetMigration(ctx, v)
		if err != nil || m.Phase != store.MigrationCommitted || m.Reason != "drain" || m.Src != "a" {
			t.Fatalf("migration of %s: %+v %v", v, m, err)
		}
		sum += m.Updated.Sub(m.Started)
		recs = append(recs, rec{v, m.Started, m.Updated})
	}
	for i := range recs {
		for j := range recs {
			if i != j && recs[i].start.Before(recs[j].end) && recs[j].start.Before(recs[i].end) {
				t.Errorf("migrations of %s and %s overlap with one out-slot", recs[i].vm, recs[j].vm)
			}
		}
	}
	var order []string
	for _, v := range d.VMs {
		if v.Name != "pinned" {
			order = append(order, v.Name)
		}
	}
	t.Logf("plan order %v", order)
	if strings.Join(order, ",") != "d4,d2,d5,d1,d3" {
		t.Errorf("plan order %v, want shortest (smallest) first", order)
	}
	t.Logf("BENCH drain of %d VMs: %s wall; sum of their single migrations %s (record start→commit); overhead %s per VM",
		n, ms(drainTook), ms(sum), ms((drainTook-sum)/n))

	for _, v := range names {
		o, _, err := l.owner(v)
		if err != nil || o.Host == "a" {
			t.Fatalf("owner of %s: %+v %v", v, o, err)
		}
		l.waitRunning(v, o.Host)
		verify := l.typeLine(o.Host, v, "V", "VERIFY ", 30*time.Second)
		if !strings.HasPrefix(verify, "VERIFY OK") {
			t.Errorf("%s verify on %s: %s", v, o.Host, verify)
		}
		for _, tl := range tails[v] {
			if tl.host == o.Host {
				tl.waitMoreHeartbeats(t, 10)
			}
		}
	}
	for _, v := range names {
		for _, tl := range tails[v] {
			tl.Stop()
		}
		g := twoHostCheck(t, tails[v]...)
		if len(g.SeqErrors) > 0 {
			t.Errorf("%s heartbeats across the drain: %v", v, g.SeqErrors)
		}
		t.Logf("%s: longest heartbeat gap %s", v, ms(g.LongestGap))
	}
	if len(d.Blocked) != 1 || !strings.Contains(d.Blocked[0], "missing") {
		t.Errorf("blocked at the end: %v", d.Blocked)
	}
	out, _, _ := l.cli("host", "drain", "a", "--status")
	t.Logf("godwit host drain a --status:\n%s", out)

	// Stop the blocked VM; the drain ends in maintenance (--watch).
	l.mustCLI("vm", "stop", "pinned")
	out, errOut, err := l.cli("host", "drain", "a", "--watch", "--timeout", "60s")
	if err != nil {
		t.Fatalf("godwit host drain a --watch: %v\n%s\n%s", err, out, errOut)
	}
	t.Logf("godwit host drain a --watch:\n%s", out)
	if d = l.drainStatus("a"); d.Phase != poolapi.DrainDone || d.HostState != "maintenance" {
		t.Fatalf("after the watch: %+v", d)
	}
	if len(l.vmmPIDs("a")) != 0 {
		t.Errorf("VMMs left on a in maintenance: %v", l.vmmPIDs("a"))
	}
	l.mustCLI("host", "activate", "a")
	if err := l.cliJSON(&hosts, "host", "list"); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.State != "active" {
			t.Errorf("host %s is %s after activate", h.Name, h.State)
		}
	}
}

// TestDrainCancel: a drain of five VMs is cancelled while it runs: no
// migration starts after the cancel (those done or under way when it
// arrived are all that move), host a is active again, and every VM runs
// (somewhere). Idle VMs migrate in about a tenth of a second on the
// software CPU, so the drain has five to get through.
func TestDrainCancel(t *testing.T) {
	l := newLab(t, 2)
	l.startAgent("a", agentOpts{})
	l.startAgent("b", agentOpts{})
	names := []string{"k1", "k2", "k3", "k4", "k5"}
	for _, v := range names {
		l.createVM(v, "a", "128M")
	}
	for _, v := range names {
		l.waitRunning(v, "a")
	}
	l.mustCLI("host", "drain", "a")
	waitFor(t, 20*time.Second, "the first drain migration", func() bool {
		d := l.drainStatus("a")
		return len(d.InFlight) > 0 || d.Done > 0
	})
	var d poolapi.Drain
	if err := l.cliJSON(&d, "host", "drain", "a", "--cancel"); err != nil {
		t.Fatal(err)
	}
	cancelledAt := time.Now()
	if d.Phase != poolapi.DrainCancelled || d.HostState != "active" {
		t.Fatalf("cancel: %+v", d)
	}
	started := d.Done + len(d.InFlight)
	t.Logf("at the cancel: %d of %d done, %d in flight", d.Done, d.Total, len(d.InFlight))
	waitFor(t, 30*time.Second, "no migration in flight", func() bool {
		d = l.drainStatus("a")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		vms, _, err := l.st.ListVMs(ctx)
		if err != nil {
			return false
		}
		for _, v := range vms {
			if v.Migration != nil && !v.Migration.Phase.Terminal() {
				return false
			}
		}
		return true
	})
	time.Sleep(1500 * time.Millisecond) // a drain loop would have started another by now
	d = l.drainStatus("a")
	t.Logf("after cancel: %d of %d moved (%d started by the status the cancel returned)", d.Done, d.Total, started)
	// The drain's status lags its requests by a moment, so the check is
	// on the migration records: none was requested after the cancel.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	vms, _, err := l.st.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		if m := v.Migration; m != nil && m.Reason == "drain" && m.Started.After(cancelledAt) {
			t.Errorf("vm %s: drain migration %s requested at %s, after the cancel at %s", v.Name, m.ID, m.Started.Format(time.RFC3339Nano), cancelledAt.Format(time.RFC3339Nano))
		}
	}
	if d.Done >= d.Total {
		t.Errorf("the cancelled drain moved every VM (%d of %d): the cancel stopped nothing", d.Done, d.Total)
	}
	for _, v := range names {
		o, _, err := l.owner(v)
		if err != nil {
			t.Fatalf("vm %s has no owner after the cancel: %v", v, err)
		}
		l.waitRunning(v, o.Host)
	}
}

// TestHARestart: with --ha-force, host c runs two HA VMs (priorities 5 and
// 1) and a plain one. kill -9 of c's agent: its VMMs fence themselves at
// the deadline, etcd expires the lease, the controller marks c failed and
// restarts the HA VMs on a and b; the old VMM has printed its last line
// before the new one prints its first; the plain VM stays pending.
func TestHARestart(t *testing.T) {
	l := newLab(t, 3)
	// The lab's controller runs without --ha-force: restart it with it
	// (before any agent, so no lease is at stake).
	l.ctl.kill9()
	l.ctl.args = append(l.ctl.args, "--ha-force")
	l.ctl.start(t)
	l.waitEtcd(20 * time.Second)
	waitFor(t, 20*time.Second, "the controller to lead with HA on", func() bool {
		var cs poolapi.Cluster
		return l.cliJSON(&cs, "cluster", "status") == nil && cs.Leading && cs.HA != nil && cs.HA.Active
	})
	l.startAgent("a", agentOpts{})
	l.startAgent("b", agentOpts{})
	c := l.startAgent("c", agentOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, v := range []struct {
		name  string
		flags []string
		want  store.HASpec
	}{
		{"ha-low", []string{"--ha"}, store.HASpec{Restart: true}},
		{"ha-high", []string{"--ha-priority", "5"}, store.HASpec{Restart: true, Priority: 5}},
		{"plain", nil, store.HASpec{}},
	} {
		l.createVM(v.name, "c", "128M", v.flags...)
		spec, _, err := l.st.GetVMSpec(ctx, v.name)
		if err != nil {
			t.Fatal(err)
		}
		if spec.HA != v.want {
			t.Fatalf("vm create %s %v: HA %+v, want %+v", v.name, v.flags, spec.HA, v.want)
		}
	}
	pids := map[string]int{}
	for _, v := range []string{"ha-low", "ha-high", "plain"} {
		pids[v] = l.waitRunning(v, "c")
	}
	out := l.mustCLI("cluster", "status")
	t.Logf("godwit cluster status:\n%s", out)
	if !strings.Contains(out, "ha restart") || !strings.Contains(out, "--ha-force") {
		t.Errorf("cluster status does not explain HA")
	}
	old := map[string]*consoleTail{}
	nw := map[string][]*consoleTail{}
	for _, v := range []string{"ha-low", "ha-high"} {
		old[v] = l.follow("c", v)
		nw[v] = []*consoleTail{l.follow("a", v), l.follow("b", v)}
	}
	w := l.watchDeletes()
	for _, tl := range old {
		tl.waitHeartbeats(t, 20)
	}

	killed := time.Now()
	c.kill9()
	gone := map[string]time.Time{}
	newHost := map[string]string{}
	waitFor(t, 30*time.Second, "the HA VMs running on other hosts", func() bool {
		for v, pid := range pids {
			if _, ok := gone[v]; !ok && !vmmAlive(pid, l.sockPath("c", v)) {
				gone[v] = time.Now()
			}
		}
		for _, v := range []string{"ha-low", "ha-high"} {
			if newHost[v] != "" {
				continue
			}
			for i, h := range []string{"a", "b"} {
				if len(nw[v][i].Heartbeats()) > 0 {
					newHost[v] = h
				}
			}
		}
		return newHost["ha-low"] != "" && newHost["ha-high"] != ""
	})
	aliveDel := w.at("alive/c")
	for _, v := range []string{"ha-low", "ha-high"} {
		old[v].Stop()
		var tl *consoleTail
		for i, h := range []string{"a", "b"} {
			if h == newHost[v] {
				tl = nw[v][i]
			}
		}
		lines := tl.con.Lines()
		first := lines[0].At
		last := old[v].LastGrowth()
		t.Logf("BENCH ha %s: host killed → old VMM's last line %s, VMM exited %s, alive key deleted %s, first line on %s %s, first heartbeat %s",
			v, ms(last.Sub(killed)), ms(gone[v].Sub(killed)), ms(aliveDel.Sub(killed)), newHost[v], ms(first.Sub(killed)),
			ms(tl.Heartbeats()[0].At.Sub(killed)))
		if !last.Before(first) {
			t.Errorf("%s: the old VMM printed until %s, the new one from %s: two copies", v, last.Format("15:04:05.000"), first.Format("15:04:05.000"))
		}
		if g, ok := gone[v]; !ok || !g.Before(first) {
			t.Errorf("%s: the old VMM was not gone (%v) before the new one printed", v, g)
		}
		// Documented: lease TTL + the controller's reaction + start; 3 s
		// TTL here, so well under 10 s.
		if d := first.Sub(killed); d > 10*time.Second {
			t.Errorf("%s restarted %s after the host died, want < 10 s", v, ms(d))
		}
		l.waitRunning(v, newHost[v])
	}
	ownerRev := func(v string) int64 {
		_, rev, _ := l.owner(v)
		return rev
	}
	if ownerRev("ha-high") >= ownerRev("ha-low") {
		t.Errorf("ha-high placed at rev %d, ha-low at %d: want the higher priority first", ownerRev("ha-high"), ownerRev("ha-low"))
	}
	var v poolapi.VM
	if err := l.cliJSON(&v, "vm", "show", "plain"); err != nil {
		t.Fatal(err)
	}
	if v.Phase != poolapi.PhasePending || v.Host != "" {
		t.Errorf("the non-HA VM: phase %s host %q, want pending", v.Phase, v.Host)
	}
	var h poolapi.Host
	if err := l.cliJSON(&h, "host", "show", "c"); err != nil {
		t.Fatal(err)
	}
	if h.State != "failed" {
		t.Errorf("host c is %s, want failed", h.State)
	}
}
