package controller

import (
	"reflect"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/testenv"
	"github.com/jonboulle/clockwork"
)

func TestLostHosts(t *testing.T) {
	host := func(name string, alive bool, st store.HostStateName) store.Host {
		h := store.Host{Name: name, State: &store.HostState{State: st}}
		if alive {
			h.Alive = &store.HostAlive{}
		}
		return h
	}
	hosts := []store.Host{host("up", true, store.HostActive), host("active", false, store.HostActive), host("draining", false, store.HostDraining),
		host("maint", false, store.HostMaintenance), host("failed", false, store.HostFailed), {Name: "new"}}
	var got []string
	for _, h := range lostHosts(hosts) {
		got = append(got, h.Name)
	}
	if want := []string{"active", "draining"}; !reflect.DeepEqual(got, want) {
		t.Errorf("lost hosts %v, want %v", got, want)
	}
}

func TestPlanHA(t *testing.T) {
	haVM := func(name string, prio int, owner string, ownerRev int64, phase store.VMPhase) store.VM {
		v := store.VM{Name: name, Spec: &store.VMSpec{Desired: store.DesiredRunning, HA: store.HASpec{Restart: true, Priority: prio}}}
		if owner != "" {
			v.Owner, v.OwnerRev = &store.Owner{Host: owner}, ownerRev
		}
		if phase != "" {
			v.Status = &store.VMStatus{Host: owner, Phase: phase, Reason: "no kernel"}
		}
		return v
	}
	start := func(host string, rev int64) *haStart { return &haStart{host: host, rev: rev, attempt: 1} }
	type outcome struct {
		vm   string
		kind haOutcomeKind
	}
	for _, tc := range []struct {
		name       string
		vms        []store.VM
		starts     map[string]*haStart
		tried      map[string][]string
		errs       map[string]string
		want       []outcome
		wantCands  []string
		wantTried  map[string][]string
		wantTarget map[string]int
	}{
		{name: "candidates by priority then name; owned, non-HA, stopped and given-up VMs stay",
			vms: []store.VM{haVM("b", 1, "", 0, ""), haVM("a", 1, "", 0, ""), haVM("top", 9, "", 0, ""), haVM("owned", 5, "h1", 4, store.VMRunning),
				{Name: "plain", Spec: &store.VMSpec{Desired: store.DesiredRunning}},
				{Name: "stopped", Spec: &store.VMSpec{Desired: store.DesiredStopped, HA: store.HASpec{Restart: true}}},
				haVM("hopeless", 9, "", 0, "")},
			errs:      map[string]string{"hopeless": "failed twice"},
			wantCands: []string{"top", "a", "b"}, wantTried: map[string][]string{}, wantTarget: map[string]int{}},
		{name: "restarted: tried forgotten",
			vms:    []store.VM{haVM("v", 1, "h2", 10, store.VMRunning)},
			starts: map[string]*haStart{"v": start("h2", 10)}, tried: map[string][]string{"v": {"h1"}},
			want: []outcome{{"v", haRestarted}}, wantTried: map[string][]string{}, wantTarget: map[string]int{}},
		{name: "still starting: counts on its target, not a candidate",
			vms:       []store.VM{haVM("v", 1, "h2", 10, ""), haVM("w", 1, "h2", 11, store.VMStarting)},
			starts:    map[string]*haStart{"v": start("h2", 10), "w": start("h2", 11)},
			wantTried: map[string][]string{}, wantTarget: map[string]int{"h2": 2}},
		{name: "first failure: retry elsewhere once the owner is released",
			vms:    []store.VM{haVM("v", 1, "h2", 10, store.VMFailed)},
			starts: map[string]*haStart{"v": start("h2", 10)},
			want:   []outcome{{"v", haRetry}}, wantTried: map[string][]string{"v": {"h2"}}, wantTarget: map[string]int{}},
		{name: "second failure: give up",
			vms:    []store.VM{haVM("v", 1, "h3", 12, store.VMFailed)},
			starts: map[string]*haStart{"v": start("h3", 12)}, tried: map[string][]string{"v": {"h2"}},
			want: []outcome{{"v", haGaveUp}}, wantTried: map[string][]string{"v": {"h2", "h3"}}, wantTarget: map[string]int{}},
		{name: "target lost too: placed again at once",
			vms:    []store.VM{haVM("v", 1, "", 0, "")},
			starts: map[string]*haStart{"v": start("h2", 10)},
			want:   []outcome{{"v", haGone}}, wantCands: []string{"v"}, wantTried: map[string][]string{}, wantTarget: map[string]int{}},
		{name: "placed by someone else",
			vms:    []store.VM{haVM("v", 1, "h4", 20, store.VMRunning)},
			starts: map[string]*haStart{"v": start("h2", 10)},
			want:   []outcome{{"v", haGone}}, wantTried: map[string][]string{}, wantTarget: map[string]int{}},
		{name: "HA turned off",
			vms:    []store.VM{{Name: "v", Spec: &store.VMSpec{Desired: store.DesiredRunning}}},
			starts: map[string]*haStart{"v": start("h2", 10)},
			want:   []outcome{{"v", haGone}}, wantTried: map[string][]string{}, wantTarget: map[string]int{}},
		{name: "deleted",
			starts: map[string]*haStart{"v": start("h2", 10)},
			want:   []outcome{{"v", haGone}}, wantTried: map[string][]string{}, wantTarget: map[string]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.starts == nil {
				tc.starts = map[string]*haStart{}
			}
			if tc.tried == nil {
				tc.tried = map[string][]string{}
			}
			startsBefore, triedBefore := len(tc.starts), cloneTried(tc.tried)
			pl := planHA(tc.starts, tc.tried, tc.errs, tc.vms)
			var got []outcome
			for _, o := range pl.outcomes {
				got = append(got, outcome{o.vm, o.kind})
				if o.start != *tc.starts[o.vm] {
					t.Errorf("outcome of %s carries start %+v, want %+v", o.vm, o.start, *tc.starts[o.vm])
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("outcomes %v, want %v", got, tc.want)
			}
			if !reflect.DeepEqual(pl.cands, tc.wantCands) {
				t.Errorf("candidates %v, want %v", pl.cands, tc.wantCands)
			}
			if !reflect.DeepEqual(pl.tried, tc.wantTried) {
				t.Errorf("tried %v, want %v", pl.tried, tc.wantTried)
			}
			if !reflect.DeepEqual(pl.perTarget, tc.wantTarget) {
				t.Errorf("pending per target %v, want %v", pl.perTarget, tc.wantTarget)
			}
			if len(tc.starts) != startsBefore || !reflect.DeepEqual(tc.tried, triedBefore) {
				t.Error("planHA changed its arguments")
			}
		})
	}
}

func cloneTried(m map[string][]string) map[string][]string {
	out := map[string][]string{}
	for k, v := range m {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// TestApplyHAOutcomes: the leader's HA state after a plan's outcomes,
// with the restart's age measured on the controller's clock.
func TestApplyHAOutcomes(t *testing.T) {
	c := &Controller{ops: newOps(), log: testenv.Logger(t), clock: clockwork.NewFakeClock()}
	ha := &c.ops.ha
	ha.starts["r"], ha.starts["f"], ha.starts["g"] = &haStart{host: "h1"}, &haStart{host: "h1"}, &haStart{host: "h2"}
	ha.tried["r"], ha.tried["g"] = []string{"h0"}, []string{"h0"}
	c.applyHAOutcomes([]haOutcome{
		{vm: "r", start: haStart{host: "h1"}, kind: haRestarted},
		{vm: "f", start: haStart{host: "h1"}, kind: haRetry, reason: "bad"},
		{vm: "g", start: haStart{host: "h2"}, kind: haGaveUp, reason: "worse"},
	}, time.Time{})
	if len(ha.starts) != 0 {
		t.Errorf("starts %v, want none", ha.starts)
	}
	if want := map[string][]string{"f": {"h1"}, "g": {"h0", "h2"}}; !reflect.DeepEqual(ha.tried, want) {
		t.Errorf("tried %v, want %v", ha.tried, want)
	}
	if want := map[string]string{"g": "failed to start on [h0 h2]: last: worse"}; !reflect.DeepEqual(ha.errors, want) {
		t.Errorf("errors %v, want %v", ha.errors, want)
	}
}
