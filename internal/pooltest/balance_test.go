package pooltest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// TestPoolBalance: three hosts, every VM pinned on a. `godwit balance
// --dry-run` proposes moves from a to b and c with positive gain; --apply 1
// moves one VM live (heartbeats continue, verify passes); a second dry run
// shows a lower imbalance and never moves that VM back.
func TestPoolBalance(t *testing.T) {
	l := newLab(t, 3)
	vms := l.allOnA()

	var p1 poolapi.BalancePlan
	if err := l.cliJSON(&p1, "balance", "--dry-run"); err != nil {
		t.Fatal(err)
	}
	t.Logf("godwit balance --dry-run:\n%s", l.mustCLI("balance", "--dry-run"))
	if p1.Hosts != 3 || p1.Imbalance < 0.99 || len(p1.Moves) == 0 {
		t.Fatalf("dry run: %+v", p1)
	}
	for _, m := range p1.Moves {
		if m.From != "a" || (m.To != "b" && m.To != "c") || m.Gain <= 0 || m.After >= m.Before || m.Migration != "" {
			t.Errorf("dry run move %+v", m)
		}
	}
	first := p1.Moves[0]
	// The dry run moved nothing.
	for _, v := range vms {
		if o, _, err := l.owner(v); err != nil || o.Host != "a" {
			t.Fatalf("after the dry run vm %s is owned by %+v (%v)", v, o, err)
		}
	}

	src, dst := l.follow("a", first.VM), l.follow(first.To, first.VM)
	l.typeLine("a", first.VM, "W 64 16 0", "ACK W", 20*time.Second)
	src.waitHeartbeats(t, 20)

	var ap poolapi.BalancePlan
	if err := l.cliJSON(&ap, "balance", "--apply", "1"); err != nil {
		t.Fatal(err)
	}
	if ap.Applied != 1 || len(ap.Moves) != 1 || ap.Moves[0].Migration == "" || ap.Moves[0].VM != first.VM || ap.Moves[0].To != first.To {
		t.Fatalf("balance --apply 1: %+v (the dry run proposed %+v)", ap, first)
	}
	mv := ap.Moves[0]
	var rec store.Migration
	waitFor(t, 60*time.Second, "the balancing migration to commit", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		rec, _, err = l.st.GetMigration(ctx, mv.VM)
		if err == nil && rec.Phase.Terminal() && rec.Phase != store.MigrationCommitted {
			t.Fatalf("migration %+v", rec)
		}
		return err == nil && rec.ID == mv.Migration && rec.Phase == store.MigrationCommitted
	})
	if rec.Reason != "balance" || rec.Src != "a" || rec.Dst != mv.To {
		t.Errorf("migration record %+v", rec)
	}
	if o, _, err := l.owner(mv.VM); err != nil || o.Host != mv.To {
		t.Fatalf("owner of %s after the move: %+v (%v)", mv.VM, o, err)
	}
	l.waitRunning(mv.VM, mv.To)
	verify := l.typeLine(mv.To, mv.VM, "V", "VERIFY ", 30*time.Second)
	if !strings.HasPrefix(verify, "VERIFY OK") {
		t.Errorf("verify on %s: %s", mv.To, verify)
	}
	dst.waitMoreHeartbeats(t, 10)
	src.Stop()
	dst.Stop()
	g := twoHostCheck(t, src, dst)
	if len(g.SeqErrors) > 0 {
		t.Errorf("heartbeats across the balancing migration: %v", g.SeqErrors)
	}
	sh, dh := src.Heartbeats(), dst.Heartbeats()
	// twoHostCheck already proved the two consoles form one gapless
	// sequence (a line the vCPU left half-printed on a is joined with its
	// end on the destination); here both hosts must have printed some.
	if len(sh) == 0 || len(dh) == 0 {
		t.Errorf("heartbeats on both hosts expected: %d on a, %d on %s", len(sh), len(dh), mv.To)
	} else {
		t.Logf("moved %s a → %s: longest heartbeat gap %s; %s", mv.VM, mv.To, ms(g.LongestGap), verify)
	}

	var p2 poolapi.BalancePlan
	if err := l.cliJSON(&p2, "balance", "--dry-run"); err != nil {
		t.Fatal(err)
	}
	t.Logf("second godwit balance --dry-run:\n%s", l.mustCLI("balance", "--dry-run"))
	if p2.Imbalance >= p1.Imbalance-0.1 {
		t.Errorf("imbalance %.3f after the move, %.3f before", p2.Imbalance, p1.Imbalance)
	}
	if p2.Imbalance < p1.Moves[0].After-1e-6 || p2.Imbalance > p1.Moves[0].After+1e-6 {
		t.Errorf("imbalance %.3f after the move, the plan expected %.3f", p2.Imbalance, p1.Moves[0].After)
	}
	for _, m := range p2.Moves {
		if m.VM == mv.VM || m.To == "a" {
			t.Errorf("second plan moves back: %+v", m)
		}
	}
}

// TestPoolAutoBalance: a controller with automatic balancing (level 3,
// a round every 3 s, so that the three rounds above the threshold it waits
// for leave time to start the guests' workloads before the first move) and
// three VMs started on host a. The balancer
// spreads them by itself: never more than one balancing migration in
// flight, never a VM moved twice (cool-down, no undo), the pool ends
// below the level's threshold, and every moved guest verifies its memory.
func TestPoolAutoBalance(t *testing.T) {
	l := newLab(t, 3)
	l.ctl.kill9()
	const round = 3 * time.Second
	l.ctl.args = append(l.ctl.args, "--balance-level", "3", "--balance-every", round.String())
	l.ctl.start(t)
	l.waitEtcd(20 * time.Second)
	waitFor(t, 20*time.Second, "the controller to lead with automatic balancing", func() bool {
		var cs poolapi.Cluster
		var p poolapi.BalancePlan
		return l.cliJSON(&cs, "cluster", "status") == nil && cs.Leading &&
			l.cliJSON(&p, "balance", "--dry-run") == nil && p.Auto.Level == 3
	})
	vms := l.allOnA()
	for _, v := range vms {
		l.typeLine("a", v, "W 32 4 500", "ACK W", 20*time.Second)
	}

	// Watch the migration records until nothing has moved for four
	// rounds (a move needs three rounds above the threshold).
	moves := map[string][]string{} // VM -> migration IDs seen committed
	lastMove := time.Now()
	deadline := time.Now().Add(30 * round)
	for time.Since(lastMove) < 4*round {
		if time.Now().After(deadline) {
			t.Fatalf("the balancer still moves VMs after %v: %v", 30*round, moves)
		}
		inFlight := 0
		for _, v := range vms {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			m, _, err := l.st.GetMigration(ctx, v)
			cancel()
			if err != nil {
				continue
			}
			if m.Reason != "balance" {
				t.Fatalf("migration of %s with reason %q: only the balancer moves VMs here", v, m.Reason)
			}
			switch {
			case !m.Phase.Terminal():
				inFlight++
			case m.Phase == store.MigrationCommitted && !slices.Contains(moves[v], m.ID):
				moves[v] = append(moves[v], m.ID)
				lastMove = time.Now()
				t.Logf("balancer moved %s %s → %s", v, m.Src, m.Dst)
			case m.Phase != store.MigrationCommitted && !slices.Contains(moves[v], m.ID):
				t.Fatalf("balancing migration of %s ended %s: %s", v, m.Phase, m.Error)
			}
		}
		if inFlight > 1 {
			t.Errorf("%d balancing migrations in flight at once, want at most 1", inFlight)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(moves) == 0 {
		t.Fatal("the balancer moved nothing off a pool where one host carries everything")
	}
	for v, ids := range moves {
		if len(ids) > 1 {
			t.Errorf("vm %s moved %d times: %v", v, len(ids), ids)
		}
	}

	var p poolapi.BalancePlan
	if err := l.cliJSON(&p, "balance", "--dry-run"); err != nil {
		t.Fatal(err)
	}
	t.Logf("after the automatic rounds:\n%s", l.mustCLI("balance", "--dry-run"))
	if p.Imbalance > p.Threshold || p.Auto.Level != 3 {
		t.Errorf("imbalance %.3f, threshold %.3f, auto %+v: want the pool balanced at level 3", p.Imbalance, p.Threshold, p.Auto)
	}
	for v := range moves {
		o, _, err := l.owner(v)
		if err != nil || o.Host == "a" {
			t.Fatalf("owner of moved vm %s: %+v (%v)", v, o, err)
		}
		l.waitRunning(v, o.Host)
		verify := l.typeLine(o.Host, v, "V", "VERIFY ", 30*time.Second)
		if f := strings.Fields(verify); len(f) != 3 || f[1] != "OK" || f[2] == "0" {
			t.Errorf("verify of %s on %s: %q", v, o.Host, verify)
		}
	}
}

// allOnA starts the agents of hosts a, b and c and three 128 MiB VMs on a,
// running; it returns their names.
func (l *lab) allOnA() []string {
	l.t.Helper()
	for _, h := range []string{"a", "b", "c"} {
		l.startAgent(h, agentOpts{})
	}
	vms := []string{"vm1", "vm2", "vm3"}
	for _, v := range vms {
		l.createVM(v, "a", "128M")
	}
	for _, v := range vms {
		l.waitRunning(v, "a")
	}
	return vms
}
