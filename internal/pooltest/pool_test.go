package pooltest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	"github.com/godwit-vmm/godwit/internal/guest"
)

// TestPoolMigrateCLI: the CLI places three VMs (two on named hosts, one
// where placement likes), each runs on its host; `godwit vm migrate --to b
// --wait` moves one: its heartbeats continue across the hosts, verify
// passes on the new host, the owner key names b, and host list and cluster
// status show it.
func TestPoolMigrateCLI(t *testing.T) {
	l := newLab(t, 3)
	for _, h := range []string{"a", "b", "c"} {
		l.startAgent(h, agentOpts{})
	}
	var hosts []poolapi.Host
	if err := l.cliJSON(&hosts, "host", "list"); err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 3 {
		t.Fatalf("host list: %d hosts, want 3: %+v", len(hosts), hosts)
	}
	for _, h := range hosts {
		if !h.Alive || h.State != "active" || h.CPUIDHash == "" || h.TSCKHz == 0 || !slices.Contains(h.Networks, "gwbr") || !slices.Contains(h.StorageIDs, l.shared) {
			t.Errorf("host %s: %+v", h.Name, h)
		}
	}

	v1 := l.createVM("vm1", "a", "256M")
	l.createVM("vm2", "b", "128M")
	v3 := l.createVM("vm3", "", "128M")
	if v3.Host == "" {
		t.Fatalf("vm3 was not placed: %+v", v3)
	}
	t.Logf("placement put vm3 on %s", v3.Host)
	pid1 := l.waitRunning("vm1", "a")
	l.waitRunning("vm2", "b")
	l.waitRunning("vm3", v3.Host)
	_, rev0, err := l.owner("vm1")
	if err != nil || rev0 != v1.OwnerRev {
		t.Fatalf("owner of vm1: rev %d (%v), the CLI said %d", rev0, err, v1.OwnerRev)
	}

	src, dst := l.follow("a", "vm1"), l.follow("b", "vm1")
	l.typeLine("a", "vm1", "W 64 16 0", "ACK W", 20*time.Second)
	src.waitHeartbeats(t, 20)

	began := time.Now()
	out, errOut, err := l.cli("vm", "migrate", "vm1", "--to", "b", "--wait", "--json")
	took := time.Since(began)
	if err != nil {
		t.Fatalf("godwit vm migrate vm1 --to b --wait: %v\n%s\n%s", err, out, errOut)
	}
	t.Logf("godwit vm migrate --wait took %s; progress:\n%s", ms(took), strings.TrimSpace(errOut))
	if !strings.Contains(out, `"phase": "committed"`) {
		t.Errorf("migrate --json output does not say committed:\n%s", out)
	}
	o, rev1, err := l.owner("vm1")
	if err != nil || o.Host != "b" || rev1 <= rev0 {
		t.Fatalf("owner of vm1 after the migration: %+v rev %d (%v), want b above rev %d", o, rev1, err, rev0)
	}
	waitFor(t, 10*time.Second, "the source VMM to exit", func() bool { return !vmmAlive(pid1, l.sockPath("a", "vm1")) })
	waitFor(t, 5*time.Second, "agent a to log the committed migration", func() bool {
		return strings.Contains(l.agents["a"].logText(), "migration committed")
	})
	for _, line := range strings.Split(l.agents["a"].logText(), "\n") {
		if strings.Contains(line, "no report from the source VMM") || strings.Contains(line, `"downtime_ms":-1`) {
			t.Errorf("agent a did not get the source VMM's report: %s", line)
		}
	}
	l.waitRunning("vm1", "b")

	verify := l.typeLine("b", "vm1", "V", "VERIFY ", 30*time.Second)
	if !strings.HasPrefix(verify, "VERIFY OK") {
		t.Errorf("verify on b: %s", verify)
	}
	dst.waitMoreHeartbeats(t, 10)
	src.Stop()
	dst.Stop()
	g := twoHostCheck(t, src, dst)
	if len(g.SeqErrors) > 0 {
		t.Errorf("heartbeats across the migration: %v", g.SeqErrors)
	}
	sh, dh := src.Heartbeats(), dst.Heartbeats()
	// twoHostCheck proved one gapless sequence across the consoles; a
	// heartbeat line may be split between them, so b's first whole line
	// can be a's last plus two.
	if len(sh) == 0 || len(dh) == 0 {
		t.Errorf("heartbeats on both hosts expected: %d on a, %d on b", len(sh), len(dh))
	} else {
		t.Logf("heartbeats: a up to %d, b from %d to %d; longest gap %s (after %d); %s",
			sh[len(sh)-1].Seq, dh[0].Seq, dh[len(dh)-1].Seq, ms(g.LongestGap), g.GapAfter, verify)
	}

	// host list, host show, vm show, cluster status.
	if err := l.cliJSON(&hosts, "host", "list"); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.Name == "b" && !slices.Contains(h.VMs, "vm1") || h.Name == "a" && slices.Contains(h.VMs, "vm1") {
			t.Errorf("host list: %s has VMs %v", h.Name, h.VMs)
		}
	}
	var vm poolapi.VM
	if err := l.cliJSON(&vm, "vm", "show", "vm1"); err != nil {
		t.Fatal(err)
	}
	if vm.Host != "b" || vm.OwnerRev != rev1 || vm.Migration == nil || vm.Migration.Phase != store.MigrationCommitted {
		t.Errorf("vm show vm1: host %s owner rev %d migration %+v", vm.Host, vm.OwnerRev, vm.Migration)
	}
	var cs poolapi.Cluster
	if err := l.cliJSON(&cs, "cluster", "status"); err != nil {
		t.Fatal(err)
	}
	if cs.Hosts.Total != 3 || cs.Hosts.Up != 3 || cs.VMs.Total != 3 || cs.Migrations.InFlight != 0 || cs.Migrations.ByPhase["committed"] != 1 || !cs.Leading {
		t.Errorf("cluster status: %+v", cs)
	}
	t.Logf("godwit host list:\n%s", l.mustCLI("host", "list"))
	t.Logf("godwit vm list:\n%s", l.mustCLI("vm", "list"))
	// The CLI also talks to an agent directly.
	agentOut, err := exec.Command("ip", "netns", "exec", l.net.CoreNS(), godwitBin, "agent", "status",
		"--agent", l.hosts["b"].MigAddr.String()+":7480", "--host", "b", "--credential", l.user, "--json").Output()
	if err != nil {
		t.Errorf("godwit agent status on b: %v", err)
	}
	type localVM struct {
		Name string `json:"name"`
	}
	var hr struct {
		Host string    `json:"host"`
		VMs  []localVM `json:"vms"`
	}
	hasVM1 := func(v localVM) bool { return v.Name == "vm1" }
	if err := json.Unmarshal(agentOut, &hr); err != nil || hr.Host != "b" || !slices.ContainsFunc(hr.VMs, hasVM1) {
		t.Errorf("godwit agent status on b: %v %s", err, agentOut)
	}
	t.Logf("godwit cluster status:\n%s", l.mustCLI("cluster", "status"))
}

// TestPoolAgentKilled: kill -9 of an agent. Left dead, its VM fences itself
// (console stops, VMM exits) before etcd deletes the owner key; restarted
// at once, the agent re-adopts its lease and the same VMM, with no gap in
// the heartbeats.
func TestPoolAgentKilled(t *testing.T) {
	t.Run("fenced", func(t *testing.T) {
		l := newLab(t, 2)
		a := l.startAgent("a", agentOpts{})
		l.startAgent("b", agentOpts{})
		l.createVM("vm1", "a", "128M")
		l.createVM("vm2", "b", "128M")
		pid := l.waitRunning("vm1", "a")
		pid2 := l.waitRunning("vm2", "b")
		con := l.follow("a", "vm1")
		w := l.watchDeletes()
		con.waitHeartbeats(t, 20)

		killed := time.Now()
		a.kill9()
		var vmmGone time.Time
		waitFor(t, 10*time.Second, "the VMM to exit and the owner key to go", func() bool {
			if vmmGone.IsZero() && !vmmAlive(pid, l.sockPath("a", "vm1")) {
				vmmGone = time.Now()
			}
			return !vmmGone.IsZero() && !w.at("owner/vm1").IsZero() && !w.at("alive/a").IsZero()
		})
		con.Stop()
		last, ownerDel, aliveDel := con.LastGrowth(), w.at("owner/vm1"), w.at("alive/a")
		t.Logf("after kill -9 of agent a: last console output %s, VMM exited %s, owner key deleted %s, alive key deleted %s",
			ms(last.Sub(killed)), ms(vmmGone.Sub(killed)), ms(ownerDel.Sub(killed)), ms(aliveDel.Sub(killed)))
		if !last.Before(ownerDel) {
			t.Errorf("vm1 ran until its owner key was deleted: the fence is late")
		}
		// The guest stopping is the guarantee; the VMM's exit follows it.
		if !vmmGone.Before(ownerDel) {
			t.Errorf("vm1's VMM exited only %s after its owner key was deleted", ms(vmmGone.Sub(ownerDel)))
		}
		if last.Sub(killed) < leaseTTL-leaseMargin-2*leaseTTL/5-100*time.Millisecond {
			t.Errorf("vm1 stopped %s after the agent died, before its deadline could have passed", ms(last.Sub(killed)))
		}
		if b, _ := os.ReadFile(l.vmDir("a", "vm1") + "/vmm.log"); !strings.Contains(string(b), "fenced") {
			t.Errorf("vm1's VMM log does not say it was fenced")
		}
		// The other host is untouched.
		if !vmmAlive(pid2, l.sockPath("b", "vm2")) {
			t.Errorf("vm2 on b stopped")
		}
		if o, _, err := l.owner("vm2"); err != nil || o.Host != "b" {
			t.Errorf("owner of vm2: %+v %v", o, err)
		}
	})

	t.Run("re-adopted", func(t *testing.T) {
		l := newLab(t, 2)
		a := l.startAgent("a", agentOpts{})
		l.createVM("vm1", "a", "128M")
		pid := l.waitRunning("vm1", "a")
		h0 := l.waitHostAlive("a", 0)
		_, rev0, _ := l.owner("vm1")
		con := l.follow("a", "vm1")
		con.waitHeartbeats(t, 20)

		killed := time.Now()
		a.kill9()
		a.start(t)
		waitFor(t, 10*time.Second, "agent a to log that it adopted its lease", func() bool {
			s := a.logText()
			return strings.Contains(s[strings.LastIndex(s, "=== agent a start"):], "adopted the host lease")
		})
		back := time.Since(killed)
		// Well past the old deadline and the TTL: the sleep proves the VMM
		// is not stopped meanwhile.
		time.Sleep(leaseTTL + time.Second)
		con.Stop()
		if !vmmAlive(pid, l.sockPath("a", "vm1")) {
			t.Fatal("vm1's VMM is gone after the agent restart")
		}
		if st, _, err := l.st.GetVMStatus(context.Background(), "vm1"); err != nil || st.PID != pid || st.Phase != store.VMRunning {
			t.Errorf("status after the restart: %+v %v, want running pid %d", st, err, pid)
		}
		h1 := l.waitHostAlive("a", 0)
		if h1.Alive.Lease != h0.Alive.Lease {
			t.Errorf("lease %x after the restart, want the adopted %x", h1.Alive.Lease, h0.Alive.Lease)
		}
		if o, rev, err := l.owner("vm1"); err != nil || o.Host != "a" || rev != rev0 {
			t.Errorf("owner %+v rev %d (%v), want a at rev %d", o, rev, err, rev0)
		}
		g := guest.CheckHeartbeats(con.Heartbeats())
		t.Logf("agent back (lease adopted) %s after kill -9; same VMM pid %d; %d heartbeats over %s, longest gap %s",
			ms(back), pid, g.Count, ms(time.Since(killed)), ms(g.LongestGap))
		// Gaps matter (500 ms: room for a loaded machine's scheduling); the
		// count only proves it ran.
		if len(g.SeqErrors) > 0 || g.LongestGap > 500*time.Millisecond || g.Count < 150 {
			t.Errorf("heartbeats across the agent restart: %+v", g)
		}
	})
}

// TestPoolHostCut: host a's link to the pool goes down (the agent loses
// etcd): a fences itself — console stops, VMMs exit — before etcd deletes
// its alive key and its VMs' owner keys. Host b is untouched; when the link
// returns, a joins with a new lease and does not restart the VMs it lost.
func TestPoolHostCut(t *testing.T) {
	l := newLab(t, 2)
	l.startAgent("a", agentOpts{})
	l.startAgent("b", agentOpts{})
	l.createVM("vm1", "a", "128M")
	l.createVM("vm2", "a", "128M")
	l.createVM("vm3", "b", "128M")
	pids := map[string]int{"vm1": l.waitRunning("vm1", "a"), "vm2": l.waitRunning("vm2", "a")}
	pid3 := l.waitRunning("vm3", "b")
	h0 := l.waitHostAlive("a", 0)
	cons := map[string]*consoleTail{"vm1": l.follow("a", "vm1"), "vm2": l.follow("a", "vm2")}
	w := l.watchDeletes()
	for _, c := range cons {
		c.waitHeartbeats(t, 20)
	}

	cut := time.Now()
	l.ns("a", "ip", "link", "set", "mig", "down")
	gone := map[string]time.Time{}
	waitFor(t, 10*time.Second, "a's VMMs to exit and its keys to go", func() bool {
		for vm, pid := range pids {
			if gone[vm].IsZero() && !vmmAlive(pid, l.sockPath("a", vm)) {
				gone[vm] = time.Now()
			}
		}
		return len(gone) == 2 && !w.at("alive/a").IsZero() && !w.at("owner/vm1").IsZero() && !w.at("owner/vm2").IsZero()
	})
	aliveDel := w.at("alive/a")
	t.Logf("cut at 0: alive key of a deleted at %s", ms(aliveDel.Sub(cut)))
	for _, vm := range []string{"vm1", "vm2"} {
		cons[vm].Stop()
		last, ownerDel := cons[vm].LastGrowth(), w.at("owner/"+vm)
		t.Logf("  %s: last console output %s, VMM exited %s, owner key deleted %s", vm, ms(last.Sub(cut)), ms(gone[vm].Sub(cut)), ms(ownerDel.Sub(cut)))
		if !last.Before(ownerDel) || !gone[vm].Before(ownerDel) || !gone[vm].Before(aliveDel) {
			t.Errorf("%s: the host did not fence itself before etcd deleted its keys", vm)
		}
	}
	if !vmmAlive(pid3, l.sockPath("b", "vm3")) {
		t.Error("vm3 on b stopped")
	}

	l.ns("a", "ip", "link", "set", "mig", "up")
	h1 := l.waitHostAlive("a", h0.Alive.Lease)
	t.Logf("link back: a joined again with lease %x (was %x) %s after the cut", h1.Alive.Lease, h0.Alive.Lease, ms(time.Since(cut)))
	// The sleep proves that a's reconcile passes start none of its old VMs
	// again: nothing counts them for the test to wait on.
	time.Sleep(2 * time.Second)
	if p := l.vmmPIDs("a"); len(p) != 0 {
		t.Errorf("VMMs on a after it lost its lease: %v", p)
	}
	var vm poolapi.VM
	if err := l.cliJSON(&vm, "vm", "show", "vm1"); err != nil {
		t.Fatal(err)
	}
	if vm.Host != "" || vm.Phase != poolapi.PhasePending {
		t.Errorf("vm1 after a was cut: host %q phase %s, want no host, pending", vm.Host, vm.Phase)
	}
	if b := l.agents["a"].logText(); !strings.Contains(b, "host lease lost") {
		t.Error("agent a does not log the lost lease")
	}
}

// TestPoolFreeze: host a is frozen (SIGSTOP of its agent and VMM) for 5 s,
// longer than the 3 s lease, then resumed: the VM prints not one heartbeat
// after the resume (its fence sees the passed deadline at once) and its
// owner key is gone.
func TestPoolFreeze(t *testing.T) {
	l := newLab(t, 2)
	a := l.startAgent("a", agentOpts{})
	l.createVM("vm1", "a", "128M")
	pid := l.waitRunning("vm1", "a")
	w := l.watchDeletes()
	path := l.consolePath("a", "vm1")
	waitFor(t, 30*time.Second, "vm1's heartbeats", func() bool { return len(fileHeartbeats(path)) >= 20 })

	frozen := time.Now()
	syscall.Kill(a.pid(), syscall.SIGSTOP)
	syscall.Kill(pid, syscall.SIGSTOP)
	waitFor(t, 5*time.Second, "the agent and the VMM to stop", func() bool { return stopped(a.pid()) && stopped(pid) })
	before, _ := os.ReadFile(path)
	// Frozen for 5 s, longer than the lease: the scenario, not a wait.
	time.Sleep(time.Until(frozen.Add(5 * time.Second)))
	atCont, _ := os.ReadFile(path)
	if len(atCont) != len(before) {
		t.Errorf("the console grew while the VMM was stopped (%d → %d bytes)", len(before), len(atCont))
	}
	ownerGone := w.at("owner/vm1")
	resumed := time.Now()
	syscall.Kill(pid, syscall.SIGCONT)
	syscall.Kill(a.pid(), syscall.SIGCONT)
	waitFor(t, 5*time.Second, "the VMM to exit after the resume", func() bool { return !vmmAlive(pid, l.sockPath("a", "vm1")) })
	exited := time.Now()
	after, _ := os.ReadFile(path) // complete: the VMM has exited
	grown := after[len(atCont):]
	// A line cut by the stop may be completed; anything past it is output
	// of the resumed guest.
	if i := strings.LastIndexByte(string(atCont), '\n'); i != len(atCont)-1 {
		if j := strings.IndexByte(string(grown), '\n'); j >= 0 {
			grown = grown[j+1:]
		}
	}
	var hbAfter []string
	for _, s := range strings.Split(string(grown), "\n") {
		if _, ok := guest.ParseHeartbeat(s); ok {
			hbAfter = append(hbAfter, s)
		}
	}
	if ownerGone.IsZero() {
		ownerGone = w.at("owner/vm1")
	}
	t.Logf("frozen 5 s: owner key deleted %s into the freeze; after SIGCONT the VMM exited in %s; console grew by %d bytes after the resume (%d heartbeat lines)",
		ms(ownerGone.Sub(frozen)), ms(exited.Sub(resumed)), len(after)-len(atCont), len(hbAfter))
	if len(hbAfter) > 0 {
		t.Errorf("%d heartbeats printed after the resume (first %q): the fence let the guest run past its deadline", len(hbAfter), hbAfter[0])
	}
	if ownerGone.IsZero() || ownerGone.After(resumed) {
		t.Errorf("the owner key was not deleted during the freeze (deleted at %v)", ownerGone)
	}
	if _, _, err := l.owner("vm1"); !isNotFound(err) {
		t.Errorf("owner of vm1 after the freeze: %v, want none", err)
	}
}

// TestPoolEtcdRestart: the controller, with its embedded etcd, is killed
// and restarted on the same data directory and ports within the lease: no
// VM stops, its heartbeats go on without a gap over 1 s, owners and leases
// stay as they were.
func TestPoolEtcdRestart(t *testing.T) {
	l := newLab(t, 2)
	l.startAgent("a", agentOpts{})
	l.startAgent("b", agentOpts{})
	l.createVM("vm1", "a", "128M")
	l.createVM("vm2", "b", "128M")
	pids := map[string]int{"vm1": l.waitRunning("vm1", "a"), "vm2": l.waitRunning("vm2", "b")}
	where := map[string]string{"vm1": "a", "vm2": "b"}
	revs := map[string]int64{}
	for vm := range pids {
		_, revs[vm], _ = l.owner(vm)
	}
	leases := map[string]int64{"a": l.waitHostAlive("a", 0).Alive.Lease, "b": l.waitHostAlive("b", 0).Alive.Lease}
	cons := []*consoleTail{l.follow("a", "vm1"), l.follow("b", "vm2")}
	for _, c := range cons {
		c.waitHeartbeats(t, 20)
	}

	killed := time.Now()
	l.ctl.kill9()
	l.ctl.start(t)
	back := l.waitEtcd(10 * time.Second)
	t.Logf("controller killed and restarted: etcd answers again %s after the kill", ms(time.Since(killed)))
	_ = back
	// The sleep proves that the VMs outlive a lease TTL without the
	// controller.
	time.Sleep(leaseTTL + time.Second)
	for _, c := range cons {
		c.Stop()
	}
	for vm, pid := range pids {
		if !vmmAlive(pid, l.sockPath(where[vm], vm)) {
			t.Errorf("%s's VMM stopped across the etcd restart", vm)
		}
		if o, rev, err := l.owner(vm); err != nil || o.Host != where[vm] || rev != revs[vm] {
			t.Errorf("owner of %s: %+v rev %d (%v), want %s at rev %d", vm, o, rev, err, where[vm], revs[vm])
		}
	}
	for h, lease := range leases {
		if got := l.waitHostAlive(h, 0).Alive.Lease; got != lease {
			t.Errorf("host %s holds lease %x, want %x", h, got, lease)
		}
		if strings.Contains(l.agents[h].logText(), "host lease lost") {
			t.Errorf("agent %s lost its lease", h)
		}
	}
	for _, c := range cons {
		g := guest.CheckHeartbeats(c.Heartbeats())
		t.Logf("%s: %d heartbeats, longest gap %s", c.host, g.Count, ms(g.LongestGap))
		if len(g.SeqErrors) > 0 || g.LongestGap > time.Second || g.Count < 150 { // ~400 expected; fewer only on a loaded host, gaps are what matter
			t.Errorf("heartbeats on %s across the etcd restart: %+v", c.host, g)
		}
	}
	var cs poolapi.Cluster
	waitFor(t, 10*time.Second, "the restarted controller to lead", func() bool {
		return l.cliJSON(&cs, "cluster", "status") == nil && cs.Leading
	})
	if cs.Hosts.Up != 2 || cs.VMs.Total != 2 {
		t.Errorf("cluster status after the restart: %+v", cs)
	}
}

// TestPoolPartitionAtHandover: a migration of a VM under load from a to b;
// right when the source VMM reports the switchover, b's link drops every
// packet it sends to etcd and to a (blackhole routes) for a while, then comes back. Afterwards at
// most one host runs the VM and it is the owner's; the guest's heartbeats
// never come from both hosts (no sequence number on both, no interleaving).
func TestPoolPartitionAtHandover(t *testing.T) {
	for _, hold := range []time.Duration{1200 * time.Millisecond, 4 * time.Second} {
		t.Run(fmt.Sprintf("cut-%s", hold), func(t *testing.T) {
			partitionAtHandover(t, hold)
		})
	}
}

func partitionAtHandover(t *testing.T, hold time.Duration) {
	l := newLab(t, 2)
	l.startAgent("a", agentOpts{})
	l.startAgent("b", agentOpts{})
	l.createVM("vm1", "a", "256M")
	pid := l.waitRunning("vm1", "a")
	_, rev0, _ := l.owner("vm1")
	src, dst := l.follow("a", "vm1"), l.follow("b", "vm1")
	l.typeLine("a", "vm1", "W 64 32 0", "ACK W", 20*time.Second)
	src.waitHeartbeats(t, 20)

	var m store.Migration
	if err := l.cliJSON(&m, "vm", "migrate", "vm1", "--to", "b"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	// Wait for the switchover phase in the source VMM.
	c := apiClient(l.sockPath("a", "vm1"))
	lastPhase := ""
	for lastPhase != "switchover" && lastPhase != "done" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		p, err := c.MigrationProgress(ctx)
		cancel()
		if err == nil {
			lastPhase = p.Phase
			continue
		}
		// No migration in the VMM (yet, or any more): is it over?
		ctx, cancel = context.WithTimeout(context.Background(), time.Second)
		rec, _, rerr := l.st.GetMigration(ctx, "vm1")
		cancel()
		if rerr == nil && rec.ID == m.ID && rec.Phase.Terminal() {
			t.Fatalf("migration %s %s before the test saw its switchover (last phase %q)", m.ID, rec.Phase, lastPhase)
		}
		if time.Since(began) > 30*time.Second {
			t.Fatalf("no switchover after 30 s (last phase %q)", lastPhase)
		}
		time.Sleep(time.Millisecond)
	}
	// This kernel has no netem (nor prio/matchall): blackhole routes to
	// etcd and to the source drop every packet b sends them, silently,
	// which stalls b's TCP connections as 100 % loss would.
	peers := []string{l.ctlIP + "/32", l.hosts["a"].MigAddr.String() + "/32"}
	cut := time.Now()
	for _, p := range peers {
		l.ns("b", "ip", "route", "add", "blackhole", p)
	}
	t.Logf("migration %s started; b cut %s later, source phase %q", m.ID, ms(cut.Sub(began)), lastPhase)
	time.Sleep(hold)
	for _, p := range peers {
		l.ns("b", "ip", "route", "del", "blackhole", p)
	}
	t.Logf("b's link restored after %s", ms(hold))

	// Let everything settle: the migration ends, leases are renewed or lost.
	var rec store.Migration
	waitFor(t, 30*time.Second, "the migration record to end", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		rec, _, err = l.st.GetMigration(ctx, "vm1")
		return err == nil && rec.Phase.Terminal()
	})
	// Any lease that the cut left to expire has expired after this sleep,
	// and the outcome below is final.
	time.Sleep(leaseTTL + time.Second)
	src.Stop()
	dst.Stop()

	o, rev, oerr := l.owner("vm1")
	running := map[string]int{}
	for _, h := range []string{"a", "b"} {
		if p := l.vmmPID(h, "vm1"); p != 0 {
			running[h] = p
		}
	}
	t.Logf("outcome: migration %s (%s); owner %+v rev %d (was %d) err %v; VMMs of vm1 running: %v; source VMM pid %d alive %v",
		rec.Phase, rec.Error, o, rev, rev0, oerr, running, pid, vmmAlive(pid, l.sockPath("a", "vm1")))
	if len(running) > 1 {
		t.Errorf("vm1 has a VMM on both hosts: %v", running)
	}
	switch {
	case oerr == nil:
		if _, ok := running[o.Host]; !ok || len(running) != 1 {
			t.Errorf("the owner is %s but the VMMs of vm1 run on %v", o.Host, running)
		}
		// The owner's VMM must be running the guest, not paused.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := apiClient(l.sockPath(o.Host, "vm1")).Status(ctx)
		cancel()
		if err != nil {
			t.Errorf("status of vm1 on %s: %v", o.Host, err)
		} else if s.State == "paused" && o.Host == "a" && rev == rev0 && rec.Phase == store.MigrationFailed && strings.Contains(rec.Error, "stays paused") {
			// The COMMIT's answer was lost and the destination could not
			// be asked: the engine's documented fallback keeps the source
			// paused (README, "Live-migrate it"), although the owner key
			// (still a's, at the migration's revision) could decide.
			t.Logf("OUTCOME: the source stays paused (documented fallback after a lost COMMIT answer); owner still a at rev %d, nobody runs vm1", rev)
			if len(dst.Heartbeats()) > 0 {
				t.Errorf("b printed heartbeats although a still owns the VM")
			}
		} else {
			t.Logf("vm1 on %s: state %s", o.Host, s.State)
			n0 := len(fileHeartbeats(l.consolePath(o.Host, "vm1")))
			waitFor(t, 10*time.Second, fmt.Sprintf("vm1 on its owner %s (state %s) to print heartbeats", o.Host, s.State), func() bool {
				return len(fileHeartbeats(l.consolePath(o.Host, "vm1"))) > n0
			})
		}
	case isNotFound(oerr):
		t.Logf("outcome: vm1 has no owner (its owner's lease expired during the cut): the VM is stopped, not running twice")
		if len(running) != 0 {
			t.Errorf("vm1 has no owner but VMMs on %v", running)
		}
	default:
		t.Errorf("owner of vm1: %v", oerr)
	}
	g := twoHostCheck(t, src, dst)
	t.Logf("heartbeats: %d, seq %d..%d, longest gap %s after %d; on a %d, on b %d",
		g.Count, g.FirstSeq, g.LastSeq, ms(g.LongestGap), g.GapAfter, len(src.Heartbeats()), len(dst.Heartbeats()))
	if len(g.SeqErrors) > 0 {
		t.Errorf("heartbeat sequence: %v", g.SeqErrors)
	}
	if oerr == nil && o.Host == "a" && len(dst.Heartbeats()) > 0 {
		t.Errorf("b printed heartbeats although a kept the VM")
	}
}

// TestPoolBadInput: unknown hosts and VMs, a VM whose disk or network no
// host has, a migration to a host without the VM's storage and network, a
// second controller of another pool on the same etcd: each is a clear
// error and nothing changes.
func TestPoolBadInput(t *testing.T) {
	l := newLab(t, 3)
	l.startAgent("a", agentOpts{})
	l.startAgent("b", agentOpts{})
	other := l.dir + "/other"
	os.MkdirAll(other, 0o755)
	// Host c reaches other storage and has no bridge for gwbr.
	l.startAgent("c", agentOpts{storage: []string{other}, bridges: []string{"lan=gwbr"}})
	l.createVM("vm1", "a", "128M")
	pid := l.waitRunning("vm1", "a")

	snapshot := func() string {
		var vms []poolapi.VM
		if err := l.cliJSON(&vms, "vm", "list"); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, v := range vms {
			fmt.Fprintf(&b, "%s host=%s rev=%d spec=%d mig=%v;", v.Name, v.Host, v.OwnerRev, v.SpecRev, v.Migration)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := l.st.Client().Get(ctx, store.Prefix, clientOpts()...)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			if strings.HasSuffix(k, "/usage") || strings.HasSuffix(k, "/status") || strings.Contains(k, "/controllers/") || strings.Contains(k, "/election") {
				continue // load reports and leader bookkeeping change by themselves
			}
			fmt.Fprintf(&b, "%s@%d;", k, kv.ModRevision)
		}
		return b.String()
	}
	before := snapshot()
	disk := l.shared + "/bad.img"
	os.WriteFile(disk, make([]byte, 1<<20), 0o644)
	otherDisk := other + "/x.img"
	os.WriteFile(otherDisk, make([]byte, 1<<20), 0o644)
	base := []string{"--kernel", l.elf, "--mem", "128M"}
	cases := []struct {
		name string
		args []string
		want string // in the error output
	}{
		{"unknown host show", []string{"host", "show", "zz"}, "zz"},
		{"unknown vm show", []string{"vm", "show", "nosuch"}, "nosuch"},
		{"unknown vm migrate", []string{"vm", "migrate", "nosuch", "--to", "b"}, "nosuch"},
		{"unknown vm stop", []string{"vm", "stop", "nosuch"}, "nosuch"},
		{"unknown vm delete", []string{"vm", "delete", "nosuch"}, "nosuch"},
		{"migrate to unknown host", []string{"vm", "migrate", "vm1", "--to", "zz"}, "zz"},
		{"create on unknown host", append([]string{"vm", "create", "bad1", "--host", "zz"}, base...), "zz"},
		{"disk nowhere", append([]string{"vm", "create", "bad2", "--disk", "/nonexistent/pool/x.img"}, base...), "storage"},
		{"disk not on host", append([]string{"vm", "create", "bad3", "--host", "a", "--disk", otherDisk}, base...), "storage"},
		{"network nowhere", append([]string{"vm", "create", "bad4", "--nic", "nosuchnet"}, base...), "nosuchnet"},
		{"network not on host", append([]string{"vm", "create", "bad5", "--host", "c", "--nic", "gwbr", "--disk", otherDisk}, base...), "gwbr"},
		{"migrate to incompatible host", []string{"vm", "migrate", "vm1", "--to", "c"}, "c"},
		{"migrate to own host", []string{"vm", "migrate", "vm1", "--to", "a"}, "a"},
		{"negative HA priority", append([]string{"vm", "create", "bad6", "--ha-priority", "-1"}, base...), "--ha-priority -1"},
	}
	for _, c := range cases {
		out, errOut, err := l.cli(c.args...)
		msg := strings.TrimSpace(errOut)
		if err == nil {
			t.Errorf("%s: godwit %s succeeded: %s", c.name, strings.Join(c.args, " "), out)
			continue
		}
		t.Logf("%s: %s", c.name, msg)
		if !strings.Contains(msg, c.want) || strings.Count(msg, "\n") > 8 {
			t.Errorf("%s: error does not name %q clearly: %s", c.name, c.want, msg)
		}
	}

	// A second controller of another pool on this etcd is refused.
	c2 := &proc{name: "controller c2", ns: l.net.CoreNS(), log: l.dir + "/controller2.log", args: []string{
		"controller", "--id", "c2", "--pool", "other", "--pki", l.pki.Dir(), "--listen", l.ctlIP + ":7701",
		"--etcd-endpoints", l.etcdURL()}}
	c2.start(t)
	select {
	case <-c2.done:
	case <-time.After(20 * time.Second):
		c2.kill9()
		t.Fatal("a controller of another pool kept running against this etcd")
	}
	msg := strings.TrimSpace(c2.logText())
	t.Logf("second controller (pool other): exit %v: %s", c2.cmd.ProcessState, tail(msg, 400))
	if c2.cmd.ProcessState.Success() || !strings.Contains(msg, "pool") {
		t.Errorf("the second controller did not refuse the other pool's etcd clearly")
	}

	// The sleep proves that the refused controller left nothing behind
	// that changes the pool a moment later.
	time.Sleep(500 * time.Millisecond)
	if after := snapshot(); after != before {
		t.Errorf("the pool changed:\nbefore %s\nafter  %s", before, after)
	}
	for _, bad := range []string{"bad1", "bad2", "bad3", "bad4", "bad5"} {
		if _, _, err := l.cli("vm", "show", bad); err == nil {
			t.Errorf("vm %s exists after a refused create", bad)
		}
	}
	var cs poolapi.Cluster
	if err := l.cliJSON(&cs, "cluster", "status"); err != nil {
		t.Fatal(err)
	}
	if len(cs.Members) != 1 || cs.Leader != "c1" || cs.Pool != "godwit" {
		t.Errorf("cluster status after the bad input: %+v", cs)
	}
	if !vmmAlive(pid, l.sockPath("a", "vm1")) {
		t.Error("vm1 stopped")
	}
	if p := l.vmmPIDs("c"); len(p) != 0 {
		t.Errorf("VMMs on c: %v", p)
	}
}
