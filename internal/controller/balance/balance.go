// Package balance is the pool's load balancer (PLATFORM.md §3, §6): pure
// functions and a small stateful round keeper over an in-memory view of the
// pool, no I/O; time is passed in, so tests and the scale simulation run it
// on a fake clock.
//
// Load and imbalance. A host's load is L = max(cpu, mem) with
//
//	cpu = Σ VM CPU demand / host CPUs     (demand: measured, else vCPUs / VCPURatio)
//	mem = Σ (VM memory + overhead) / (host memory × RAMRatio − reserve)
//
// over the hosts that may take VMs (alive and active), and the pool's
// imbalance is Proxmox CRS's I = (σ(L)/μ(L)) / sqrt(N−1) ∈ [0,1] (population
// σ; 0 is perfectly even, 1 is everything on one host).
//
// Moves. Every (VM, host) pair that passes placement's filters
// (placement.Policy.Check: liveness, state, CPU identity and TSC, memory,
// vCPUs, storage, networks, must rules) is evaluated in O(1) by updating
// ΣL and ΣL²; only moves that lower I are candidates, and the best has the
// highest
//
//	gain  = I − I′ − ShouldPenalty × Δ(broken should rules)
//	score = gain × (1 − CostWeight × t/MaxMigration)
//
// where t is the VM's predicted migration time (with CostWeight 0.2 a 60 s
// move must gain 25 % more than an instant one): pre-copy sends its
// memory M at bandwidth B while the guest dirties D bytes/s, a geometric
// series t = M / (B − D); a VM with D ≥ B never converges and is not moved.
// A move is committed only if its relative gain (I − I′ − penalty)/I is at
// least MinGain (10 %) and t ≤ MaxMigration (60 s).
//
// Safety. A VM moved less than CoolDown (10 min) ago does not move; a move
// back to the host a VM left less than UndoWindow (30 min) ago is refused,
// so a VM never goes back and forth. The Balancer acts only after Rounds (3)
// consecutive rounds above the level's threshold, keeps at most MaxInFlight
// (1) balancing migration in flight, and does nothing while the caller says
// a drain or HA action runs.
//
// Levels, like DRS: 1 applies only mandatory moves (a VM on a host that
// breaks one of its must rules); 2–5 also balance, above the thresholds
// 0.4, 0.3 (the default, level 3), 0.2 and 0.1.
//
// Scale. With MaxSources/MaxTargets set, only the VMs of the most loaded
// hosts and the least loaded destinations are evaluated (the best move is
// almost always among them); with BatchGain the MinGain test applies to a
// whole plan instead of each move, since in a pool of N hosts one move
// changes I by about 1/N (see docs/SCALE.md).
//
// Who may import it: the controller and internal/tools/poolsim. It imports
// only package placement, and package poolapi for the types it shares with
// the API (Move, HostLoad).
package balance

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/controller/placement"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// Defaults (PLATFORM.md §6).
const (
	DefaultLevel         = 3
	DefaultRounds        = 3
	DefaultMinGain       = 0.10
	DefaultMaxMigration  = 60 * time.Second
	DefaultCoolDown      = 10 * time.Minute
	DefaultUndoWindow    = 30 * time.Minute
	DefaultBandwidth     = 1.25e9 // bytes/s: a 10 Gbit/s link
	DefaultMaxInFlight   = 1
	DefaultShouldPenalty = 0.05
	DefaultCostWeight    = 0.2
)

// Thresholds maps a level (2–5) to its imbalance threshold; level 1 has
// none (only mandatory moves).
var Thresholds = map[int]float64{2: 0.4, 3: 0.3, 4: 0.2, 5: 0.1}

// Config holds the tunables; the zero value means the defaults.
type Config struct {
	Level         int           // 1–5 (0: 3)
	Threshold     float64       // overrides the level's threshold when > 0
	Rounds        int           // consecutive rounds above threshold before acting
	MinGain       float64       // relative gain a move (or batch) must reach
	MaxMigration  time.Duration // longest predicted migration allowed
	CoolDown      time.Duration // a VM moved this recently stays
	UndoWindow    time.Duration // no move back to the host a VM left this recently
	Bandwidth     float64       // bytes/s of a migration, for the prediction
	MaxInFlight   int           // balancing migrations in flight at most
	ShouldPenalty float64       // imbalance units per broken should rule
	CostWeight    float64       // a MaxMigration-long move's gain counts 1 − CostWeight
	Policy        placement.Policy
	// MaxSources and MaxTargets bound the search to the VMs of the
	// MaxSources most loaded hosts and the MaxTargets least loaded
	// destinations; 0 evaluates every (VM, host) pair.
	MaxSources, MaxTargets int
	// BatchGain judges MinGain over a whole plan (each move need only
	// lower I) instead of each move.
	BatchGain bool
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Level == 0 {
		c.Level = DefaultLevel
	}
	if c.Rounds == 0 {
		c.Rounds = DefaultRounds
	}
	if c.MinGain == 0 {
		c.MinGain = DefaultMinGain
	}
	if c.MaxMigration == 0 {
		c.MaxMigration = DefaultMaxMigration
	}
	if c.CoolDown == 0 {
		c.CoolDown = DefaultCoolDown
	}
	if c.UndoWindow == 0 {
		c.UndoWindow = max(DefaultUndoWindow, c.CoolDown)
	}
	if c.Bandwidth == 0 {
		c.Bandwidth = DefaultBandwidth
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.ShouldPenalty == 0 {
		c.ShouldPenalty = DefaultShouldPenalty
	}
	if c.CostWeight == 0 {
		c.CostWeight = DefaultCostWeight
	}
	if c.Threshold == 0 {
		c.Threshold = Thresholds[c.Level]
	}
	c.Policy = c.Policy.WithDefaults()
	return c
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if c.Level < 0 || c.Level > 5 {
		return fmt.Errorf("balance: level %d: want 1-5", c.Level)
	}
	c = c.WithDefaults()
	switch {
	case c.Threshold < 0 || c.Threshold > 1:
		return fmt.Errorf("balance: threshold %g: want 0-1", c.Threshold)
	case c.MinGain < 0 || c.MinGain >= 1:
		return fmt.Errorf("balance: min gain %g: want 0-1", c.MinGain)
	case c.Bandwidth < 0 || c.Rounds < 0 || c.MaxInFlight < 0:
		return fmt.Errorf("balance: bandwidth, rounds and in-flight limit must be positive")
	}
	return c.Policy.Validate()
}

// VM is one VM as the balancer sees it.
type VM struct {
	placement.VM
	Host      string  // where it runs
	CPU       float64 // CPU demand in host CPUs; 0: VCPUs / VCPURatio
	DirtyRate float64 // bytes/s the guest dirties
	// Fixed, when set, says why the VM may not move now (migrating, not
	// migratable, stopping...).
	Fixed string
	// LastMove is the VM's last migration (nil: none known).
	LastMove *Move
}

// Pool is the balancer's input. Hosts carry what placement counts against
// them (AllocMemBytes, AllocVCPUs, VMs) as the controller builds it.
type Pool struct {
	Hosts []placement.Host
	VMs   []VM
	Rules []placement.Rule
	// InFlight is the number of balancing migrations not yet finished.
	InFlight int
}

// Move is one migration the balancer proposes (or made); the API's
// type, so that plans are served as they are made.
type Move = poolapi.BalanceMove

// HostLoad is one host's load.
type HostLoad = poolapi.BalanceHostLoad

// Plan is a dry run: the pool's imbalance and the moves that would be made
// one after the other, each simulated before the next is chosen.
type Plan struct {
	Level     int        `json:"level"`
	Threshold float64    `json:"threshold"`
	Hosts     int        `json:"hosts"` // hosts counted (alive and active)
	Imbalance float64    `json:"imbalance"`
	Final     float64    `json:"final"` // imbalance after every move
	Moves     []Move     `json:"moves"`
	Stop      string     `json:"stop"` // why the plan ends
	Loads     []HostLoad `json:"loads,omitempty"`
	Evaluated int        `json:"evaluated"` // (VM, host) pairs scored
}

// Predict is the pre-copy migration time of mem bytes dirtied at dirty
// bytes/s over a link of bw bytes/s: mem/(bw − dirty); ok is false when the
// guest dirties as fast as the link sends (it would never converge).
func Predict(mem uint64, dirty, bw float64) (time.Duration, bool) {
	if bw <= 0 || dirty >= bw {
		return 0, false
	}
	s := float64(mem) / (bw - max(dirty, 0))
	return time.Duration(s * float64(time.Second)), true
}

// Imbalance is (σ/μ)/sqrt(N−1) of loads (0 for fewer than two hosts or no
// load).
func Imbalance(loads []float64) float64 {
	var s1, s2 float64
	for _, l := range loads {
		s1 += l
		s2 += l * l
	}
	return imb(s1, s2, len(loads))
}

func imb(s1, s2 float64, n int) float64 {
	if n < 2 || s1 <= 0 {
		return 0
	}
	mu := s1 / float64(n)
	v := s2/float64(n) - mu*mu
	if v < 0 {
		v = 0
	}
	return math.Sqrt(v) / mu / math.Sqrt(float64(n-1))
}

// state is the pool during planning: loads, sums, and placement's view,
// updated as moves are simulated.
type state struct {
	cfg    Config
	now    time.Time
	hosts  []placement.Host // placement's view, updated by apply
	idx    map[string]int
	ok     []bool    // counted: alive and active with capacity
	cap    []float64 // memory capacity
	cpu    []float64 // CPU demand on the host
	mem    []float64 // memory (with overhead) on the host
	load   []float64
	s1, s2 float64
	n      int
	vms    []VM
	vmHost []int   // host index, -1 if not counted
	onHost [][]int // VM indexes per host
	rules  []placement.Rule
	must   []placement.Rule
	moved  map[int]bool // VMs moved in this plan
	evals  int
}

func newState(cfg Config, p Pool, now time.Time) *state {
	s := &state{cfg: cfg, now: now, idx: map[string]int{}, rules: p.Rules, moved: map[int]bool{}}
	s.hosts = make([]placement.Host, len(p.Hosts))
	for i, h := range p.Hosts {
		h.VMs = slices.Clone(h.VMs)
		s.hosts[i] = h
		s.idx[h.Name] = i
	}
	nh := len(s.hosts)
	s.ok, s.cap, s.cpu, s.mem, s.load = make([]bool, nh), make([]float64, nh), make([]float64, nh), make([]float64, nh), make([]float64, nh)
	s.onHost = make([][]int, nh)
	pol := cfg.Policy
	for i, h := range s.hosts {
		s.cap[i] = float64(h.MemBytes)*pol.RAMRatio - float64(pol.HostReserveBytes)
		s.ok[i] = h.Alive && h.State == "active" && h.CPUs > 0 && s.cap[i] > 0
	}
	s.vms = p.VMs
	s.vmHost = make([]int, len(p.VMs))
	for j, v := range p.VMs {
		i, found := s.idx[v.Host]
		if !found || !s.ok[i] {
			s.vmHost[j] = -1
			continue
		}
		s.vmHost[j] = i
		s.onHost[i] = append(s.onHost[i], j)
		s.cpu[i] += s.vmCPU(j)
		s.mem[i] += float64(pol.Need(v.VM))
	}
	for i := range s.hosts {
		if s.ok[i] {
			s.load[i] = max(s.cpu[i]/float64(s.hosts[i].CPUs), s.mem[i]/s.cap[i])
			s.s1 += s.load[i]
			s.s2 += s.load[i] * s.load[i]
			s.n++
		}
	}
	for _, r := range p.Rules {
		if r.Must {
			s.must = append(s.must, r)
		}
	}
	return s
}

func (s *state) vmCPU(j int) float64 {
	v := s.vms[j]
	if v.CPU > 0 {
		return v.CPU
	}
	return float64(v.VCPUs) / s.cfg.Policy.VCPURatio
}

func (s *state) imbalance() float64 { return imb(s.s1, s.s2, s.n) }

// after is the imbalance if VM j moved to host d.
func (s *state) after(j, d int) float64 {
	src := s.vmHost[j]
	c, m := s.vmCPU(j), float64(s.cfg.Policy.Need(s.vms[j].VM))
	ls := max((s.cpu[src]-c)/float64(s.hosts[src].CPUs), (s.mem[src]-m)/s.cap[src])
	ld := max((s.cpu[d]+c)/float64(s.hosts[d].CPUs), (s.mem[d]+m)/s.cap[d])
	s1 := s.s1 - s.load[src] - s.load[d] + ls + ld
	s2 := s.s2 - s.load[src]*s.load[src] - s.load[d]*s.load[d] + ls*ls + ld*ld
	return imb(s1, s2, s.n)
}

// apply moves VM j to host d in the simulated state.
func (s *state) apply(j, d int) {
	src := s.vmHost[j]
	v := s.vms[j]
	c, m := s.vmCPU(j), float64(s.cfg.Policy.Need(v.VM))
	need := s.cfg.Policy.Need(v.VM)
	s.cpu[src] -= c
	s.mem[src] -= m
	s.cpu[d] += c
	s.mem[d] += m
	for _, i := range []int{src, d} {
		s.s1 -= s.load[i]
		s.s2 -= s.load[i] * s.load[i]
		s.load[i] = max(s.cpu[i]/float64(s.hosts[i].CPUs), s.mem[i]/s.cap[i])
		s.s1 += s.load[i]
		s.s2 += s.load[i] * s.load[i]
	}
	hs, hd := &s.hosts[src], &s.hosts[d]
	hs.AllocMemBytes -= min(need, hs.AllocMemBytes)
	hs.AllocVCPUs -= min(v.VCPUs, hs.AllocVCPUs)
	hs.VMs = slices.DeleteFunc(hs.VMs, func(n string) bool { return n == v.Name })
	hd.AllocMemBytes += need
	hd.AllocVCPUs += v.VCPUs
	hd.VMs = append(hd.VMs, v.Name)
	s.onHost[src] = slices.DeleteFunc(s.onHost[src], func(k int) bool { return k == j })
	s.onHost[d] = append(s.onHost[d], j)
	s.vmHost[j] = d
	s.moved[j] = true
}

// broken lists the rules (of rs) VM j breaks on host h, as placement words
// them; the VM itself is not counted among h's VMs.
func (s *state) broken(rs []placement.Rule, j, h int) []string {
	v := s.vms[j]
	var out []string
	for _, r := range rs {
		if !slices.Contains(r.VMs, v.Name) {
			continue
		}
		strength := "should"
		if r.Must {
			strength = "must"
		}
		switch r.Kind {
		case placement.RuleVMHost:
			if !slices.Contains(r.Hosts, s.hosts[h].Name) {
				out = append(out, fmt.Sprintf("rule %s: vm %s %s run on %s", r.Name, v.Name, strength, strings.Join(r.Hosts, "|")))
			}
		case placement.RuleAffinity:
		aff:
			for o := range s.hosts {
				if o == h {
					continue
				}
				for _, n := range s.hosts[o].VMs {
					if n != v.Name && slices.Contains(r.VMs, n) {
						out = append(out, fmt.Sprintf("rule %s: vm %s %s run with %s (on %s)", r.Name, v.Name, strength, n, s.hosts[o].Name))
						break aff
					}
				}
			}
		case placement.RuleAntiAffinity:
			for _, n := range s.hosts[h].VMs {
				if n != v.Name && slices.Contains(r.VMs, n) {
					out = append(out, fmt.Sprintf("rule %s: vm %s %s not run with %s", r.Name, v.Name, strength, n))
					break
				}
			}
		}
	}
	return out
}

func (s *state) should() []placement.Rule {
	var out []placement.Rule
	for _, r := range s.rules {
		if !r.Must {
			out = append(out, r)
		}
	}
	return out
}

// movable says why VM j may not move at all now ("" if it may).
func (s *state) movable(j int) string {
	v := s.vms[j]
	switch {
	case s.vmHost[j] < 0:
		return "its host is not active"
	case v.Fixed != "":
		return v.Fixed
	case s.moved[j]:
		return "already moved in this plan"
	case v.LastMove != nil && !v.LastMove.At.IsZero() && s.now.Sub(v.LastMove.At) < s.cfg.CoolDown:
		return fmt.Sprintf("cool-down: moved %s ago (%s)", s.now.Sub(v.LastMove.At).Round(time.Second), s.cfg.CoolDown)
	}
	return ""
}

// undoes reports whether moving VM j to host d would undo its last move.
func (s *state) undoes(j, d int) bool {
	lm := s.vms[j].LastMove
	return lm != nil && lm.From == s.hosts[d].Name && s.now.Sub(lm.At) < s.cfg.UndoWindow
}

// check runs placement's filters for VM j onto host d.
func (s *state) check(j, d int) []string {
	src := s.vmHost[j]
	from := s.hosts[src]
	req := placement.Request{VM: s.vms[j].VM, From: &from, Hosts: s.hosts, Rules: s.must}
	return s.cfg.Policy.Check(req, s.hosts[d])
}

// candidate is a scored move.
type candidate struct {
	j, d      int
	after     float64
	net       float64 // after + should penalties
	score     float64 // net + cost
	t         time.Duration
	penalties []string
}

// order returns the counted hosts sorted by load, descending (desc) or
// ascending, at most limit of them (0: all).
func (s *state) order(desc bool, limit int) []int {
	var hs []int
	for i := range s.hosts {
		if s.ok[i] {
			hs = append(hs, i)
		}
	}
	sort.SliceStable(hs, func(a, b int) bool {
		if desc {
			return s.load[hs[a]] > s.load[hs[b]]
		}
		return s.load[hs[a]] < s.load[hs[b]]
	})
	if limit > 0 && len(hs) > limit {
		hs = hs[:limit]
	}
	return hs
}

// best finds the best move of the VMs in js (nil: every VM on the source
// hosts) to any destination host, or ok false. Unless mandatory, VMs whose
// predicted migration exceeds MaxMigration are not candidates.
func (s *state) best(js []int, mandatory bool) (candidate, bool) {
	i0 := s.imbalance()
	should := s.should()
	dsts := s.order(false, s.cfg.MaxTargets)
	if js == nil {
		for _, h := range s.order(true, s.cfg.MaxSources) {
			js = append(js, s.onHost[h]...)
		}
	}
	var b candidate
	found := false
	for _, j := range js {
		if s.movable(j) != "" {
			continue
		}
		v := s.vms[j]
		t, conv := Predict(v.MemBytes, v.DirtyRate, s.cfg.Bandwidth)
		if !conv || !mandatory && t > s.cfg.MaxMigration {
			continue
		}
		// The gain is discounted by the migration's cost: a move taking
		// MaxMigration counts (1 − CostWeight) of its gain.
		f := max(1-s.cfg.CostWeight*t.Seconds()/s.cfg.MaxMigration.Seconds(), 0.05)
		src := s.vmHost[j]
		var pen0 int
		if len(should) > 0 {
			pen0 = len(s.broken(should, j, src))
		}
		for _, d := range dsts {
			if d == src {
				continue
			}
			s.evals++
			after := s.after(j, d)
			if found && i0-(i0-after+float64(pen0)*s.cfg.ShouldPenalty)*f >= b.score {
				continue // cannot win even if it fixed every should rule
			}
			var pens []string
			if len(should) > 0 {
				pens = s.broken(should, j, d)
			}
			dp := float64(len(pens)-pen0) * s.cfg.ShouldPenalty
			g := i0 - after - dp
			if !mandatory && g <= 0 {
				continue // balancing moves must lower the imbalance
			}
			score := i0 - g*f
			if g < 0 {
				score = i0 - g/f
			}
			if found && (score > b.score || score == b.score && t >= b.t) {
				continue
			}
			if s.undoes(j, d) || len(s.check(j, d)) > 0 {
				continue
			}
			b = candidate{j: j, d: d, after: after, net: after + dp, score: score, t: t, penalties: pens}
			found = true
		}
	}
	return b, found
}

// mandatory finds a VM that breaks a must rule where it is, and the best
// host that fixes it.
func (s *state) mandatory() (candidate, string, bool) {
	if len(s.must) == 0 {
		return candidate{}, "", false
	}
	for j := range s.vms {
		if s.vmHost[j] < 0 || s.vms[j].Fixed != "" || s.moved[j] {
			continue
		}
		why := s.broken(s.must, j, s.vmHost[j])
		if len(why) == 0 {
			continue
		}
		if c, ok := s.best([]int{j}, true); ok {
			return c, strings.Join(why, "; "), true
		}
	}
	return candidate{}, "", false
}

func (s *state) move(c candidate, before float64) Move {
	m := Move{VM: s.vms[c.j].Name, From: s.hosts[s.vmHost[c.j]].Name, To: s.hosts[c.d].Name,
		Before: before, After: c.after, PredictedSeconds: c.t.Seconds(), Penalties: c.penalties, At: s.now}
	if before > 0 {
		m.Gain = (before - c.after) / before
	}
	return m
}

// loads reports every counted host's load.
func (s *state) loads() []HostLoad {
	var out []HostLoad
	for i, h := range s.hosts {
		if s.ok[i] {
			out = append(out, HostLoad{Host: h.Name, CPU: s.cpu[i] / float64(h.CPUs), Mem: s.mem[i] / s.cap[i], Load: s.load[i], VMs: len(s.onHost[i])})
		}
	}
	return out
}

// MakePlan simulates up to n moves greedily (mandatory moves first, then
// balancing moves while the imbalance is above the threshold and each move
// gains MinGain), without the round counter or in-flight limit: the dry run.
func MakePlan(cfg Config, p Pool, now time.Time, n int) Plan {
	cfg = cfg.WithDefaults()
	s := newState(cfg, p, now)
	pl := Plan{Level: cfg.Level, Threshold: cfg.Threshold, Hosts: s.n, Imbalance: s.imbalance(), Loads: s.loads()}
	pl.Stop = s.plan(&pl, n)
	pl.Final = s.imbalance()
	pl.Evaluated = s.evals
	if cfg.BatchGain && len(pl.Moves) > 0 && pl.Imbalance > 0 {
		if g := (pl.Imbalance - pl.Final) / pl.Imbalance; g < cfg.MinGain {
			pl.Stop = fmt.Sprintf("the %d moves together gain %.1f %%, below %.0f %% (%s)", len(pl.Moves), 100*g, 100*cfg.MinGain, pl.Stop)
			pl.Moves, pl.Final = nil, pl.Imbalance
		}
	}
	return pl
}

func (s *state) plan(pl *Plan, n int) string {
	cfg := s.cfg
	for len(pl.Moves) < n {
		i := s.imbalance()
		if c, why, ok := s.mandatory(); ok {
			m := s.move(c, i)
			m.Mandatory, m.Why = true, why
			s.apply(c.j, c.d)
			pl.Moves = append(pl.Moves, m)
			continue
		}
		if cfg.Level <= 1 {
			return "level 1: only mandatory moves, and none is needed"
		}
		if i <= cfg.Threshold {
			return fmt.Sprintf("imbalance %.3f is at or below the threshold %.2f", i, cfg.Threshold)
		}
		c, ok := s.best(nil, false)
		if !ok {
			return "no VM can move to a host that takes it (filters, rules, cool-down, migration time)"
		}
		gain := (i - c.net) / i
		if cfg.BatchGain {
			if gain <= 0 {
				return "no move lowers the imbalance"
			}
		} else if gain < cfg.MinGain {
			return fmt.Sprintf("the best move (%s %s → %s) gains %.1f %%, below %.0f %%", s.vms[c.j].Name,
				s.hosts[s.vmHost[c.j]].Name, s.hosts[c.d].Name, 100*gain, 100*cfg.MinGain)
		}
		if c.t > cfg.MaxMigration {
			return fmt.Sprintf("the best move (%s) would take %s, above %s", s.vms[c.j].Name, c.t.Round(time.Second), cfg.MaxMigration)
		}
		pl.Moves = append(pl.Moves, s.move(c, i))
		s.apply(c.j, c.d)
	}
	return fmt.Sprintf("stopped after %d moves (the limit asked)", n)
}

// Balancer keeps the state of automatic balancing between rounds: how many
// consecutive rounds were above the threshold, and the moves it made (for
// the cool-down, besides each VM's LastMove). Not safe for concurrent use.
type Balancer struct {
	cfg     Config
	above   int
	history map[string]Move
}

// New returns a Balancer.
func New(cfg Config) *Balancer {
	return &Balancer{cfg: cfg.WithDefaults(), history: map[string]Move{}}
}

// Config returns the balancer's configuration with defaults.
func (b *Balancer) Config() Config { return b.cfg }

// Round is the outcome of one automatic round.
type Round struct {
	Imbalance float64 `json:"imbalance"`
	Above     int     `json:"above"` // consecutive rounds above the threshold
	Moves     []Move  `json:"moves,omitempty"`
	Skip      string  `json:"skip,omitempty"` // why nothing moves
}

// Round runs one round at now. suspended, when not "", says which drain or
// HA action runs: the round does nothing and the counter restarts. The
// caller requests the returned moves and calls Record for each that it
// wrote.
func (b *Balancer) Round(p Pool, now time.Time, suspended string) Round {
	p.VMs = slices.Clone(p.VMs)
	for i, v := range p.VMs {
		if h, ok := b.history[v.Name]; ok && (v.LastMove == nil || h.At.After(v.LastMove.At)) {
			p.VMs[i].LastMove = &h
		}
	}
	s := newState(b.cfg, p, now)
	r := Round{Imbalance: s.imbalance()}
	if suspended != "" {
		b.above = 0
		r.Skip = "suspended: " + suspended
		return r
	}
	if b.cfg.Level >= 2 && r.Imbalance > b.cfg.Threshold {
		b.above++
	} else {
		b.above = 0
	}
	r.Above = b.above
	if p.InFlight >= b.cfg.MaxInFlight {
		r.Skip = fmt.Sprintf("%d balancing migration(s) in flight (limit %d)", p.InFlight, b.cfg.MaxInFlight)
		return r
	}
	room := b.cfg.MaxInFlight - p.InFlight
	// Mandatory moves do not wait for the rounds.
	var pl Plan
	for len(pl.Moves) < room {
		c, why, ok := s.mandatory()
		if !ok {
			break
		}
		m := s.move(c, s.imbalance())
		m.Mandatory, m.Why = true, why
		s.apply(c.j, c.d)
		pl.Moves = append(pl.Moves, m)
	}
	if len(pl.Moves) > 0 || b.cfg.Level <= 1 {
		r.Moves = pl.Moves
		if len(r.Moves) == 0 {
			r.Skip = "level 1: no mandatory move"
		}
		return r
	}
	if b.above < b.cfg.Rounds {
		if r.Imbalance > b.cfg.Threshold {
			r.Skip = fmt.Sprintf("imbalance %.3f above %.2f for %d of %d rounds", r.Imbalance, b.cfg.Threshold, b.above, b.cfg.Rounds)
		} else {
			r.Skip = fmt.Sprintf("imbalance %.3f at or below %.2f", r.Imbalance, b.cfg.Threshold)
		}
		return r
	}
	r.Skip = s.plan(&pl, room)
	r.Moves = pl.Moves
	if len(r.Moves) > 0 {
		r.Skip = ""
	}
	return r
}

// Record remembers a move that was requested, for the cool-down and the
// no-undo rule.
func (b *Balancer) Record(m Move) { b.history[m.VM] = m }

// Forget drops history older than the longer of the two windows at now.
func (b *Balancer) Forget(now time.Time) {
	w := max(b.cfg.CoolDown, b.cfg.UndoWindow)
	for k, m := range b.history {
		if now.Sub(m.At) > w {
			delete(b.history, k)
		}
	}
}
