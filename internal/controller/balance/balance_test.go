package balance

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/controller/placement"
)

const gib = 1 << 30

var t0 = time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)

// world is a small pool the tests change move by move.
type world struct {
	hosts []string
	at    map[string]string // vm -> host
	mem   map[string]uint64
	dirty map[string]float64
	last  map[string]*Move
	rules []placement.Rule
	state map[string]string
}

func newWorld(hosts []string, vms map[string]string) *world {
	w := &world{hosts: hosts, at: vms, mem: map[string]uint64{}, dirty: map[string]float64{}, last: map[string]*Move{}, state: map[string]string{}}
	return w
}

func (w *world) pool() Pool {
	var p Pool
	pol := placement.Policy{}.WithDefaults()
	names := make([]string, 0, len(w.at))
	for v := range w.at {
		names = append(names, v)
	}
	slices.Sort(names)
	byHost := map[string]*placement.Host{}
	for _, h := range w.hosts {
		st := w.state[h]
		if st == "" {
			st = "active"
		}
		p.Hosts = append(p.Hosts, placement.Host{Name: h, Alive: true, State: st, CPUIDHash: "c", TSCKHz: 2e6,
			CPUs: 8, MemBytes: 16 * gib, Storage: []string{"s"}, Networks: []string{"n"}})
	}
	for i := range p.Hosts {
		byHost[p.Hosts[i].Name] = &p.Hosts[i]
	}
	for _, n := range names {
		m := w.mem[n]
		if m == 0 {
			m = gib
		}
		v := VM{VM: placement.VM{Name: n, VCPUs: 1, MemBytes: m, Storage: []string{"s"}, Networks: []string{"n"}},
			Host: w.at[n], DirtyRate: w.dirty[n], LastMove: w.last[n]}
		h := byHost[v.Host]
		h.AllocMemBytes += pol.Need(v.VM)
		h.AllocVCPUs++
		h.VMs = append(h.VMs, n)
		p.VMs = append(p.VMs, v)
	}
	p.Rules = w.rules
	return p
}

func (w *world) apply(m Move, at time.Time) {
	w.at[m.VM] = m.To
	m.At = at
	w.last[m.VM] = &m
}

func vms(n int, host string) map[string]string {
	out := map[string]string{}
	for i := range n {
		out["vm"+string(rune('a'+i))] = host
	}
	return out
}

func TestImbalance(t *testing.T) {
	for _, tc := range []struct {
		loads []float64
		want  float64
	}{
		{[]float64{1, 0, 0}, 1},
		{[]float64{0.5, 0.5, 0.5}, 0},
		{[]float64{1}, 0},
		{[]float64{0, 0}, 0},
		{[]float64{2, 1, 0}, 0.5773502691896258},
	} {
		if got := Imbalance(tc.loads); got-tc.want > 1e-9 || tc.want-got > 1e-9 {
			t.Errorf("Imbalance(%v) = %v, want %v", tc.loads, got, tc.want)
		}
	}
}

func TestPredict(t *testing.T) {
	if d, ok := Predict(gib, 0, gib); !ok || d != time.Second {
		t.Errorf("1 GiB at 1 GiB/s: %v %v", d, ok)
	}
	if d, ok := Predict(gib, gib/2, gib); !ok || d != 2*time.Second {
		t.Errorf("1 GiB dirtied at half the link: %v %v", d, ok)
	}
	if _, ok := Predict(gib, gib, gib); ok {
		t.Error("dirty rate = bandwidth converges")
	}
}

// TestOneHostCarriesAll: rounds 1 and 2 wait, then one move per round,
// each lowering the imbalance, until the pool is even; no VM moves twice.
func TestOneHostCarriesAll(t *testing.T) {
	w := newWorld([]string{"h0", "h1", "h2"}, vms(6, "h0"))
	b := New(Config{})
	now := t0
	prev := 2.0
	moved := map[string]int{}
	var moves int
	for round := 1; round <= 12; round++ {
		r := b.Round(w.pool(), now, "")
		switch {
		case round < 3 && len(r.Moves) > 0:
			t.Fatalf("round %d moved before 3 rounds above threshold: %+v", round, r)
		case round >= 3 && round <= 5 && len(r.Moves) != 1:
			t.Fatalf("round %d: %d moves, want 1 (%s)", round, len(r.Moves), r.Skip)
		}
		if len(r.Moves) > 1 {
			t.Fatalf("round %d: %d moves at once", round, len(r.Moves))
		}
		for _, m := range r.Moves {
			if m.From != "h0" || m.After >= m.Before || m.Gain < 0.1 {
				t.Errorf("round %d: bad move %+v", round, m)
			}
			moved[m.VM]++
			moves++
			b.Record(m)
			w.apply(m, now)
		}
		if r.Imbalance > prev {
			t.Errorf("round %d: imbalance rose %.3f -> %.3f", round, prev, r.Imbalance)
		}
		prev = r.Imbalance
		now = now.Add(time.Minute)
	}
	if moves != 3 || prev > 0.3 {
		t.Errorf("%d moves, final imbalance %.3f; want 3 moves to below the threshold", moves, prev)
	}
	for v, n := range moved {
		if n > 1 {
			t.Errorf("vm %s moved %d times", v, n)
		}
	}
	count := map[string]int{}
	for _, h := range w.at {
		count[h]++
	}
	if count["h0"] != 3 || count["h1"]+count["h2"] != 3 || count["h1"] == 0 || count["h2"] == 0 {
		t.Errorf("final placement %v", count)
	}
}

func TestPlan(t *testing.T) {
	yes := func(Move) bool { return true }
	for _, tc := range []struct {
		name  string
		w     func() *world
		cfg   Config
		n     int
		want  int               // moves
		check func(m Move) bool // every move
		stop  string            // substring of Plan.Stop
		extra func(*testing.T, Plan)
	}{
		{name: "one host carries all", w: func() *world { return newWorld([]string{"h0", "h1", "h2"}, vms(6, "h0")) },
			n: 10, want: 3, check: func(m Move) bool { return m.From == "h0" && m.Gain >= 0.1 }, stop: "below the threshold",
			extra: func(t *testing.T, p Plan) {
				if p.Imbalance != 1 || p.Final > 0.3 {
					t.Errorf("imbalance %.3f -> %.3f", p.Imbalance, p.Final)
				}
				for i := 1; i < len(p.Moves); i++ {
					if p.Moves[i].Before != p.Moves[i-1].After {
						t.Errorf("move %d does not start where %d ended", i, i-1)
					}
				}
			}},
		{name: "balanced", w: func() *world {
			return newWorld([]string{"h0", "h1", "h2"}, map[string]string{"a": "h0", "b": "h1", "c": "h2", "d": "h0"})
		}, n: 10, want: 0, stop: "below the threshold"},
		{name: "limit n", w: func() *world { return newWorld([]string{"h0", "h1", "h2"}, vms(6, "h0")) },
			n: 1, want: 1, check: yes, stop: "limit"},
		{name: "must vm-host keeps a VM, anti-affinity keeps one off a host",
			w: func() *world {
				w := newWorld([]string{"h0", "h1", "h2"}, map[string]string{"a": "h0", "b": "h0", "c": "h0", "d": "h0", "x": "h1"})
				w.rules = []placement.Rule{
					{Name: "pin", Kind: placement.RuleVMHost, Must: true, VMs: []string{"a"}, Hosts: []string{"h0"}},
					{Name: "apart", Kind: placement.RuleAntiAffinity, Must: true, VMs: []string{"b", "c", "d", "x"}},
				}
				return w
			}, n: 10, want: 1, check: func(m Move) bool { return m.VM != "a" && m.To == "h2" }},
		{name: "should rule is a penalty", w: func() *world {
			w := newWorld([]string{"h0", "h1", "h2"}, map[string]string{"a": "h0", "b": "h0", "c": "h0", "d": "h0", "x": "h1", "y": "h2"})
			w.rules = []placement.Rule{{Name: "apart", Kind: placement.RuleAntiAffinity, VMs: []string{"a", "b", "c", "d", "x"}}}
			return w
		}, n: 1, want: 1, check: func(m Move) bool { return m.To == "h2" && len(m.Penalties) == 0 }},
		{name: "level 1 only mandatory", cfg: Config{Level: 1}, w: func() *world {
			w := newWorld([]string{"h0", "h1", "h2"}, vms(6, "h0"))
			w.rules = []placement.Rule{{Name: "pin", Kind: placement.RuleVMHost, Must: true, VMs: []string{"vmc"}, Hosts: []string{"h2"}}}
			return w
		}, n: 10, want: 1, check: func(m Move) bool {
			return m.Mandatory && m.VM == "vmc" && m.To == "h2" && strings.Contains(m.Why, "pin")
		}, stop: "level 1"},
		{name: "level 1 nothing mandatory", cfg: Config{Level: 1}, w: func() *world { return newWorld([]string{"h0", "h1", "h2"}, vms(6, "h0")) },
			n: 10, want: 0, stop: "level 1"},
		{name: "level 2 threshold 0.4", cfg: Config{Level: 2}, w: func() *world {
			return newWorld([]string{"h0", "h1", "h2"}, map[string]string{"a": "h0", "b": "h0", "c": "h0", "d": "h1", "e": "h1", "f": "h2"})
		}, n: 10, want: 0, stop: "threshold 0.40"},
		{name: "level 5 threshold 0.1", cfg: Config{Level: 5}, w: func() *world {
			return newWorld([]string{"h0", "h1", "h2"}, map[string]string{"a": "h0", "b": "h0", "c": "h0", "d": "h1", "e": "h1", "f": "h2"})
		}, n: 10, want: 1, check: func(m Move) bool { return m.From == "h0" && m.To == "h2" }},
		{name: "cool-down", w: func() *world {
			w := newWorld([]string{"h0", "h1", "h2"}, vms(2, "h0"))
			for v := range w.at {
				w.last[v] = &Move{VM: v, From: "h1", To: "h0", At: t0.Add(-5 * time.Minute)}
			}
			return w
		}, n: 10, want: 0, stop: "no VM can move"},
		{name: "no undo within the window", w: func() *world {
			w := newWorld([]string{"h0", "h1"}, vms(2, "h0"))
			for v := range w.at {
				w.last[v] = &Move{VM: v, From: "h1", To: "h0", At: t0.Add(-20 * time.Minute)}
			}
			return w
		}, n: 10, want: 0, stop: "no VM can move"},
		{name: "undo allowed after the window", w: func() *world {
			w := newWorld([]string{"h0", "h1"}, vms(2, "h0"))
			for v := range w.at {
				w.last[v] = &Move{VM: v, From: "h1", To: "h0", At: t0.Add(-31 * time.Minute)}
			}
			return w
		}, n: 10, want: 1, check: yes},
		{name: "dirty rate too high or too slow", w: func() *world {
			w := newWorld([]string{"h0", "h1"}, vms(2, "h0"))
			w.dirty["vma"] = 2e9
			w.mem["vmb"] = 8 * gib
			w.dirty["vmb"] = 1.2e9
			return w
		}, n: 10, want: 0, stop: "no VM can move"},
		{name: "cheaper VM preferred at equal gain", w: func() *world {
			w := newWorld([]string{"h0", "h1"}, vms(2, "h0"))
			w.dirty["vma"] = 6e8
			return w
		}, n: 1, want: 1, check: func(m Move) bool { return m.VM == "vmb" }},
		{name: "draining host is not a target and not counted", w: func() *world {
			w := newWorld([]string{"h0", "h1", "h2"}, vms(4, "h0"))
			w.state["h2"] = "draining"
			return w
		}, n: 10, want: 2, check: func(m Move) bool { return m.To == "h1" }, extra: func(t *testing.T, p Plan) {
			if p.Hosts != 2 {
				t.Errorf("hosts counted %d, want 2", p.Hosts)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := MakePlan(tc.cfg, tc.w().pool(), t0, tc.n)
			if len(p.Moves) != tc.want {
				t.Fatalf("%d moves, want %d: %+v (stop: %s)", len(p.Moves), tc.want, p.Moves, p.Stop)
			}
			for _, m := range p.Moves {
				if tc.check != nil && !tc.check(m) {
					t.Errorf("unexpected move %+v", m)
				}
			}
			if tc.stop != "" && !strings.Contains(p.Stop, tc.stop) {
				t.Errorf("stop %q, want it to mention %q", p.Stop, tc.stop)
			}
			if tc.extra != nil {
				tc.extra(t, p)
			}
		})
	}
}

func TestRoundGates(t *testing.T) {
	w := newWorld([]string{"h0", "h1", "h2"}, vms(6, "h0"))
	b := New(Config{})
	for i := 0; i < 3; i++ {
		if r := b.Round(w.pool(), t0, "drain of h2"); len(r.Moves) > 0 || !strings.Contains(r.Skip, "suspended") {
			t.Fatalf("suspended round: %+v", r)
		}
	}
	for i := 0; i < 2; i++ {
		if r := b.Round(w.pool(), t0, ""); len(r.Moves) > 0 {
			t.Fatalf("round %d after suspension moved: %+v", i+1, r)
		}
	}
	p := w.pool()
	p.InFlight = 1
	if r := b.Round(p, t0, ""); len(r.Moves) > 0 || !strings.Contains(r.Skip, "in flight") {
		t.Fatalf("round with a balancing migration in flight: %+v", r)
	}
	r := b.Round(w.pool(), t0, "")
	if len(r.Moves) != 1 {
		t.Fatalf("4th round above threshold: %+v", r)
	}
	// The Balancer's own history also keeps the VM from moving back.
	m := r.Moves[0]
	b.Record(m)
	w.at[m.VM] = m.To
	w.at["vmb"], w.at["vmc"], w.at["vmd"], w.at["vme"], w.at["vmf"] = "h1", "h1", "h1", "h1", "h1"
	r = b.Round(w.pool(), t0.Add(time.Minute), "")
	for _, x := range r.Moves {
		if x.VM == m.VM {
			t.Errorf("vm %s moved again within its cool-down: %+v", m.VM, x)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := (Config{Level: 6}).Validate(); err == nil {
		t.Error("level 6 accepted")
	}
	if err := (Config{Level: 1}).Validate(); err != nil {
		t.Error(err)
	}
	if c := (Config{Level: 4}).WithDefaults(); c.Threshold != 0.2 {
		t.Errorf("level 4 threshold %v", c.Threshold)
	}
}
