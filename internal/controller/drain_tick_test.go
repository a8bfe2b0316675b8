package controller

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

// migratingVM is VM name (256 MiB, desired running) with migration m.
func migratingVM(name string, m *store.Migration) store.VM {
	return store.VM{Name: name, Spec: &store.VMSpec{MemBytes: 256 << 20, VCPUs: 1, Desired: store.DesiredRunning}, Migration: m}
}

func TestEndedAttempts(t *testing.T) {
	mig := func(id string, ph store.MigrationPhase, err string) *store.Migration {
		return &store.Migration{ID: id, Phase: ph, Error: err}
	}
	failed := func(dst string) drainAttempt { return drainAttempt{id: "old", dst: dst, over: true, failed: true} }
	for _, tc := range []struct {
		name     string
		attempts []drainAttempt
		m        *store.Migration // nil: the VM is gone
		want     []attemptEnd
	}{
		{"committed", []drainAttempt{{id: "m1", dst: "b"}}, mig("m1", store.MigrationCommitted, ""),
			[]attemptEnd{{vm: "v"}}},
		{"first failure", []drainAttempt{{id: "m1", dst: "b"}}, mig("m1", store.MigrationFailed, "boom"),
			[]attemptEnd{{vm: "v", err: "boom", failed: true, failures: 1}}},
		{"failure without error says its phase", []drainAttempt{{id: "m1", dst: "b"}}, mig("m1", store.MigrationAborted, ""),
			[]attemptEnd{{vm: "v", err: "aborted", failed: true, failures: 1}}},
		{"last retry allowed", []drainAttempt{failed("b"), failed("c"), {id: "m1", dst: "d"}}, mig("m1", store.MigrationFailed, "boom"),
			[]attemptEnd{{vm: "v", err: "boom", failed: true, failures: MaxDrainRetries}}},
		{"out of retries", []drainAttempt{failed("b"), failed("c"), failed("d"), {id: "m1", dst: "e"}}, mig("m1", store.MigrationFailed, "boom"),
			[]attemptEnd{{vm: "v", err: "boom", failed: true, failures: MaxDrainRetries + 1, exhausted: "migration failed 4 times (last to e: boom)"}}},
		{"still running", []drainAttempt{{id: "m1", dst: "b"}}, mig("m1", store.MigrationRunning, ""), nil},
		{"another migration", []drainAttempt{{id: "m1", dst: "b"}}, mig("m2", store.MigrationFailed, "x"), nil},
		{"seen already", []drainAttempt{{id: "m1", dst: "b", over: true}}, mig("m1", store.MigrationCommitted, ""), nil},
		{"vm gone", []drainAttempt{{id: "m1", dst: "b"}}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vms := map[string]store.VM{}
			if tc.m != nil {
				vms["v"] = migratingVM("v", tc.m)
			}
			got := endedAttempts(map[string][]drainAttempt{"v": tc.attempts}, vms)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if tc.attempts[len(tc.attempts)-1].over != (tc.name == "seen already") {
				t.Error("endedAttempts changed its input")
			}
		})
	}
}

func TestDrainTimeouts(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	drainMig := func(started, updated time.Duration) *store.Migration {
		return &store.Migration{ID: "m1", Src: "a", Dst: "b", Reason: "drain", Phase: store.MigrationRunning, Started: ago(started), Updated: ago(updated)}
	}
	big := func(v store.VM) store.VM { v.Spec.MemBytes = 4 << 30; return v }
	for _, tc := range []struct {
		name   string
		vm     store.VM
		warned bool
		want   string // the reason's start; "" for no cancel
	}{
		{"fresh", migratingVM("v", drainMig(time.Minute, time.Second)), false, ""},
		{"silent exactly the progress timeout", migratingVM("v", drainMig(ProgressTimeout, ProgressTimeout)), false, ""},
		{"silent a second longer", migratingVM("v", drainMig(ProgressTimeout+time.Second, ProgressTimeout+time.Second)), false, "drain: no progress reported for 2m31s"},
		{"small vm past its completion limit", migratingVM("v", drainMig(ProgressTimeout+time.Second, time.Second)), false, "drain: running for 2m31s, over the 2m30s allowed for 256 MiB"},
		{"large vm within its limit", big(migratingVM("v", drainMig(9*time.Minute, time.Second))), false, ""},
		{"large vm past its limit", big(migratingVM("v", drainMig(10*time.Minute+time.Second, time.Second))), false, "drain: running for 10m1s, over the 10m0s allowed for 4096 MiB"},
		{"already cancelled by this drain", migratingVM("v", drainMig(time.Hour, time.Hour)), true, ""},
		{"cancel asked", migratingVM("v", func() *store.Migration { m := drainMig(time.Hour, time.Hour); m.Cancel = "user"; return m }()), false, ""},
		{"not a drain migration", migratingVM("v", func() *store.Migration { m := drainMig(time.Hour, time.Hour); m.Reason = "user"; return m }()), false, ""},
		{"from another host", migratingVM("v", func() *store.Migration { m := drainMig(time.Hour, time.Hour); m.Src = "c"; return m }()), false, ""},
		{"ended", migratingVM("v", func() *store.Migration {
			m := drainMig(time.Hour, time.Hour)
			m.Phase = store.MigrationFailed
			return m
		}()), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := drainTimeouts(now, "a", []store.VM{tc.vm}, map[string]bool{"m1": tc.warned})
			switch {
			case tc.want == "" && len(got) != 0:
				t.Errorf("cancels %+v, want none", got)
			case tc.want != "" && (len(got) != 1 || got[0].vm != "v" || got[0].id != "m1" || !strings.HasPrefix(got[0].why, tc.want)):
				t.Errorf("cancels %+v, want m1 of v: %q", got, tc.want)
			}
		})
	}
}

func TestPlanDrainFinish(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	running := func(name string) store.VM {
		return store.VM{Name: name, SpecRev: 7, Spec: &store.VMSpec{MemBytes: 256 << 20, Desired: store.DesiredRunning}}
	}
	stoppedVM := running("x")
	stoppedVM.Spec = &store.VMSpec{Desired: store.DesiredStopped}
	vms := map[string]store.VM{"a": running("a"), "b": running("b"), "x": stoppedVM}
	rec := func(onBlocked string, queue ...string) store.Drain {
		return store.Drain{Host: "h", OnBlocked: onBlocked, Queue: queue}
	}
	names := func(vs []store.VM) []string {
		var out []string
		for _, v := range vs {
			out = append(out, v.Name)
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		d         store.Drain
		drev      int64
		plan      drainPlan
		stopped   map[string]bool
		last      store.Drain
		lastWrite time.Time
		wantEnd   drainEnd
		wantStop  []string
		wantWrite bool
		check     func(t *testing.T, r store.Drain)
	}{
		{name: "queue keeps order, joiners appended", d: rec("wait", "a", "b"), drev: 3,
			plan:    drainPlan{order: []string{"b", "c"}, inFlight: []string{"c", "b"}, blocked: map[string]string{}},
			wantEnd: drainGoesOn, wantWrite: true,
			check: func(t *testing.T, r store.Drain) {
				if !reflect.DeepEqual(r.Queue, []string{"a", "b", "c"}) || r.Total != 3 || r.Done != 1 || !reflect.DeepEqual(r.InFlight, []string{"b", "c"}) {
					t.Errorf("record %+v: want queue a b c, 3 total, 1 done, b c in flight", r)
				}
			}},
		{name: "nothing left: maintenance", d: rec("wait", "a", "b"), drev: 3, plan: drainPlan{blocked: map[string]string{}},
			last: rec("wait", "a", "b"), lastWrite: now, wantEnd: drainDone, wantWrite: true,
			check: func(t *testing.T, r store.Drain) {
				if r.Total != 2 || r.Done != 2 {
					t.Errorf("record %+v: want 2 of 2 done", r)
				}
			}},
		{name: "all blocked, fail", d: rec("fail", "a"), drev: 3, plan: drainPlan{order: []string{"a"}, blocked: map[string]string{"a": "no room"}},
			lastWrite: now, wantEnd: drainFailed, wantWrite: true,
			check: func(t *testing.T, r store.Drain) {
				if !reflect.DeepEqual(r.Blocked, []string{"a: no room"}) {
					t.Errorf("blocked %q", r.Blocked)
				}
			}},
		{name: "some blocked, fail waits", d: rec("fail", "a", "b"), drev: 3, lastWrite: now,
			plan: drainPlan{order: []string{"a", "b"}, blocked: map[string]string{"a": "no room"}}, wantEnd: drainGoesOn},
		{name: "all blocked, shutdown stops the running ones not yet stopped", d: rec("shutdown", "a", "b", "x"), drev: 3, lastWrite: now,
			plan:    drainPlan{order: []string{"a", "b", "x"}, blocked: map[string]string{"a": "r", "b": "r", "x": "r"}},
			stopped: map[string]bool{"a": true}, wantEnd: drainGoesOn, wantStop: []string{"b"}},
		{name: "some blocked, shutdown stops nothing", d: rec("shutdown", "a", "b"), drev: 3, lastWrite: now,
			plan: drainPlan{order: []string{"a", "b"}, blocked: map[string]string{"a": "r"}}, wantEnd: drainGoesOn},
		{name: "unchanged: no write", d: rec("wait", "a"), drev: 3, plan: drainPlan{order: []string{"a"}, blocked: map[string]string{}},
			last: store.Drain{Host: "h", OnBlocked: "wait", Queue: []string{"a"}, Total: 1}, lastWrite: now.Add(-time.Hour), wantEnd: drainGoesOn},
		{name: "changed within a second: no write", d: rec("wait", "a"), drev: 3, plan: drainPlan{order: []string{"a"}, inFlight: []string{"a"}, blocked: map[string]string{}},
			last: store.Drain{Host: "h", OnBlocked: "wait", Queue: []string{"a"}, Total: 1}, lastWrite: now.Add(-999 * time.Millisecond), wantEnd: drainGoesOn},
		{name: "changed a second later: write", d: rec("wait", "a"), drev: 3, plan: drainPlan{order: []string{"a"}, inFlight: []string{"a"}, blocked: map[string]string{}},
			last: store.Drain{Host: "h", OnBlocked: "wait", Queue: []string{"a"}, Total: 1}, lastWrite: now.Add(-time.Second), wantEnd: drainGoesOn, wantWrite: true},
		{name: "no record yet: write", d: rec("wait", "a"), plan: drainPlan{order: []string{"a"}, blocked: map[string]string{}},
			last: store.Drain{Host: "h", OnBlocked: "wait", Queue: []string{"a"}, Total: 1}, lastWrite: now, wantEnd: drainGoesOn, wantWrite: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			queue := append([]string(nil), tc.d.Queue...)
			f := planDrainFinish(tc.d, tc.drev, tc.plan, tc.stopped, vms, tc.last, tc.lastWrite, now)
			if f.end != tc.wantEnd || f.write != tc.wantWrite || !reflect.DeepEqual(names(f.stop), tc.wantStop) || f.drev != tc.drev {
				t.Errorf("end %d write %v stop %v drev %d; want end %d write %v stop %v drev %d",
					f.end, f.write, names(f.stop), f.drev, tc.wantEnd, tc.wantWrite, tc.wantStop, tc.drev)
			}
			if !reflect.DeepEqual(tc.d.Queue, queue) {
				t.Errorf("the read record's queue changed to %v", tc.d.Queue)
			}
			if tc.check != nil {
				tc.check(t, f.rec)
			}
		})
	}
}
