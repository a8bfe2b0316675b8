package controller

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/controller/placement"
)

func planHost(name string) placement.Host {
	return placement.Host{Name: name, Alive: true, State: "active", CPUIDHash: "cpu", TSCKHz: 2_000_000, CPUs: 8,
		MemBytes: 8 << 30, Storage: []string{"nfs"}, Networks: []string{"br0"}}
}

func planVM(name string, mem uint64, owner string) drainVM {
	return drainVM{name: name, owner: owner, predicted: predictMigration(mem, 0, AssumedBandwidth),
		spec: placement.VM{Name: name, VCPUs: 1, MemBytes: mem, Storage: []string{"nfs"}, Networks: []string{"br0"}}}
}

func planInput(vms ...drainVM) drainInput {
	a := planHost("a")
	a.State = "draining"
	return drainInput{host: "a", from: a, hosts: []placement.Host{a, planHost("b"), planHost("c")}, vms: vms,
		policy: placement.Policy{}.WithDefaults(), clusterSlots: 5, slotsOut: 1, slotsIn: 1,
		tried: map[string][]string{}, exhausted: map[string]string{}}
}

func TestPredictMigration(t *testing.T) {
	for _, c := range []struct {
		mem   uint64
		dirty float64
		want  time.Duration
	}{
		{1 << 30, 0, time.Second},
		{1 << 30, 1 << 29, 2 * time.Second},    // ρ = 0.5
		{1 << 30, 1 << 31, 10 * time.Second},   // ρ capped at 0.9
		{256 << 20, 0, 250 * time.Millisecond}, //
	} {
		if got := predictMigration(c.mem, c.dirty, AssumedBandwidth); (got - c.want).Abs() > time.Millisecond {
			t.Errorf("predict(%d, %g) = %s, want %s", c.mem, c.dirty, got, c.want)
		}
	}
}

// TestPlanOrderAndSlots: shortest predicted first; the out-slot limits the
// starts; with two out-slots and one in-slot per host the two starts go to
// different hosts; VMs of other hosts are not touched.
func TestPlanOrderAndSlots(t *testing.T) {
	in := planInput(planVM("big", 512<<20, "a"), planVM("small", 128<<20, "a"), planVM("mid", 256<<20, "a"), planVM("other", 64<<20, "b"))
	p := planDrain(in)
	if want := []string{"small", "mid", "big"}; !slices.Equal(p.order, want) {
		t.Fatalf("order %v, want %v", p.order, want)
	}
	if len(p.starts) != 1 || p.starts[0].vm != "small" || len(p.waiting) != 2 || len(p.blocked) != 0 {
		t.Fatalf("one out-slot: starts %+v waiting %v blocked %v", p.starts, p.waiting, p.blocked)
	}
	in.slotsOut = 2
	p = planDrain(in)
	if len(p.starts) != 2 || p.starts[0].vm != "small" || p.starts[1].vm != "mid" || p.starts[0].dst == p.starts[1].dst {
		t.Fatalf("two out-slots, one in-slot per host: starts %+v", p.starts)
	}
	in.slotsOut = 3
	p = planDrain(in)
	if len(p.starts) != 2 || !slices.Equal(p.waiting, []string{"big"}) {
		t.Fatalf("in-slots of b and c taken: starts %+v waiting %v", p.starts, p.waiting)
	}
	// A migration already under way uses its slots.
	mig := planVM("small", 128<<20, "a")
	mig.migrating, mig.dst = true, "b"
	in = planInput(planVM("big", 512<<20, "a"), mig, planVM("mid", 256<<20, "a"))
	in.slotsOut = 2
	p = planDrain(in)
	if !slices.Equal(p.inFlight, []string{"small"}) || len(p.starts) != 1 || p.starts[0] != (drainStart{"mid", "c"}) {
		t.Fatalf("with small migrating to b: in flight %v starts %+v", p.inFlight, p.starts)
	}
	// The cluster-wide limit.
	in.clusterSlots = 1
	if p = planDrain(in); len(p.starts) != 0 {
		t.Fatalf("cluster slots full: starts %+v", p.starts)
	}
}

// TestPlanBlocked: a VM whose storage exists only on the drained host, a
// VM the agent says cannot migrate, and a VM too big for any other host are
// blocked at once, with reasons; the others still move.
func TestPlanBlocked(t *testing.T) {
	local := planVM("local", 128<<20, "a")
	local.spec.Storage = []string{"local-a"}
	pinned := planVM("pinned", 128<<20, "a")
	pinned.notMigratable = "vfio device attached"
	huge := planVM("huge", 16<<30, "a")
	in := planInput(local, pinned, huge, planVM("ok", 256<<20, "a"))
	in.hosts[0].Storage = append(in.hosts[0].Storage, "local-a")
	p := planDrain(in)
	if len(p.starts) != 1 || p.starts[0].vm != "ok" {
		t.Fatalf("starts %+v, want ok only", p.starts)
	}
	for vm, want := range map[string]string{"local": "storage local-a missing", "pinned": "not migratable: vfio", "huge": "memory: needs"} {
		if !strings.Contains(p.blocked[vm], want) {
			t.Errorf("blocked[%s] = %q, want it to mention %q", vm, p.blocked[vm], want)
		}
	}
	if r := p.blocked["local"]; !strings.HasPrefix(r, "no compatible host with capacity") || strings.Contains(r, "current host") {
		t.Errorf("blocked reason of local: %q", r)
	}
	if got := blockedList(p.blocked); len(got) != 3 || !strings.HasPrefix(got[0], "huge: ") {
		t.Errorf("blocked list %v", got)
	}
}

// TestPlanRetries: a failed attempt's host is excluded (the next-best host
// is taken); when every host failed, or the VM ran out of retries, it is
// blocked.
func TestPlanRetries(t *testing.T) {
	in := planInput(planVM("v", 128<<20, "a"))
	first := planDrain(in).starts[0].dst
	in.tried["v"] = []string{first}
	p := planDrain(in)
	if len(p.starts) != 1 || p.starts[0].dst == first {
		t.Fatalf("retry after a failure on %s: starts %+v", first, p.starts)
	}
	in.tried["v"] = []string{"b", "c"}
	if p = planDrain(in); !strings.Contains(p.blocked["v"], "hosts tried and failed: b, c") {
		t.Fatalf("every host tried: blocked %v starts %+v", p.blocked, p.starts)
	}
	in.tried["v"] = nil
	in.exhausted["v"] = "migration failed 4 times"
	if p = planDrain(in); p.blocked["v"] != "migration failed 4 times" || len(p.starts) != 0 {
		t.Fatalf("exhausted: blocked %v starts %+v", p.blocked, p.starts)
	}
}
