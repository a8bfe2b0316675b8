// Package placement decides which host may run a VM and which host should:
// pure functions over an in-memory view of the pool, no I/O, no clock.
//
// Filters (PLATFORM.md §4, §6), each giving a reason when a host fails it:
//
//   - the host is alive (holds its lease) and its state is active;
//   - for a migration, the same CPUID hash as the VM's current host and a
//     TSC frequency within TSCTolerancePPM (250 ppm) of it — kvm_pvm can
//     neither mask CPUID nor scale the TSC; a new VM may go anywhere;
//   - free memory: allocated + VM + VMOverheadBytes (256 MiB) ≤
//     MemBytes × RAMRatio (1.0) − HostReserveBytes (512 MiB);
//   - vCPUs: allocated + VM ≤ CPUs × VCPURatio (4.0);
//   - every storage ID of the VM's disks and every network of its NICs is
//     among the host's;
//   - rules with Must: vm-host (host listed), vm-affinity (with the rule's
//     other VMs already placed), vm-anti-affinity (none of them there).
//
// Score: TOPSIS (as Proxmox's static CRS does) over two cost criteria for
// "the VM as if it ran on host n": memory use (allocated + VM) / capacity,
// weight WeightMem (5), and vCPU load (allocated + VM vCPUs) / CPUs, weight
// WeightCPU (1). Columns are normalised by their L2 norm and weighted; the
// score is d⁻/(d⁺+d⁻) ∈ [0,1], higher is better; each broken *should* rule
// subtracts ShouldPenalty (1.0), and hosts are ordered by the number of
// broken should rules first, so one that keeps them all always wins. Ties go to the host name that sorts first.
//
// "Allocated" is what the caller counts against a host: the VMs it owns,
// migrations heading to it, and the caller's in-flight reservations.
//
// Who may import it: the controller (and its tests). It imports nothing of
// Godwit's.
package placement

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// MiB is 2²⁰ bytes.
const MiB = 1 << 20

// Defaults (PLATFORM.md §6).
const (
	DefaultVMOverheadBytes  = 256 * MiB
	DefaultHostReserveBytes = 512 * MiB
	DefaultRAMRatio         = 1.0
	DefaultVCPURatio        = 4.0
	DefaultTSCTolerancePPM  = 250.0
	DefaultWeightMem        = 5.0
	DefaultWeightCPU        = 1.0
	DefaultShouldPenalty    = 1.0
)

// Policy holds the tunables. The zero value means the defaults.
type Policy struct {
	VMOverheadBytes  uint64
	HostReserveBytes uint64
	RAMRatio         float64
	VCPURatio        float64
	TSCTolerancePPM  float64
	WeightMem        float64
	WeightCPU        float64
	ShouldPenalty    float64
}

// WithDefaults fills zero fields with the defaults.
func (p Policy) WithDefaults() Policy {
	if p.VMOverheadBytes == 0 {
		p.VMOverheadBytes = DefaultVMOverheadBytes
	}
	if p.HostReserveBytes == 0 {
		p.HostReserveBytes = DefaultHostReserveBytes
	}
	if p.RAMRatio == 0 {
		p.RAMRatio = DefaultRAMRatio
	}
	if p.VCPURatio == 0 {
		p.VCPURatio = DefaultVCPURatio
	}
	if p.TSCTolerancePPM == 0 {
		p.TSCTolerancePPM = DefaultTSCTolerancePPM
	}
	if p.WeightMem == 0 {
		p.WeightMem = DefaultWeightMem
	}
	if p.WeightCPU == 0 {
		p.WeightCPU = DefaultWeightCPU
	}
	if p.ShouldPenalty == 0 {
		p.ShouldPenalty = DefaultShouldPenalty
	}
	return p
}

// Validate reports the first problem with p after defaults are applied.
func (p Policy) Validate() error {
	p = p.WithDefaults()
	switch {
	case p.RAMRatio < 0 || p.VCPURatio < 0 || p.TSCTolerancePPM < 0:
		return fmt.Errorf("placement: ratios and tolerances must be positive (ram %g, vcpu %g, tsc %g ppm)", p.RAMRatio, p.VCPURatio, p.TSCTolerancePPM)
	case p.WeightMem < 0 || p.WeightCPU < 0 || p.ShouldPenalty < 0:
		return fmt.Errorf("placement: weights must be positive")
	}
	return nil
}

// Host is one host as placement sees it.
type Host struct {
	Name      string
	Alive     bool   // holds its lease
	State     string // active | draining | maintenance | failed ("" = not set)
	Accel     string // accelerator: kvm or emu
	CPUIDHash string
	TSCKHz    uint64
	CPUs      int
	MemBytes  uint64
	Storage   []string
	Networks  []string
	// AllocMemBytes and AllocVCPUs are what is already counted against the
	// host: VM memory plus overhead, and vCPUs.
	AllocMemBytes uint64
	AllocVCPUs    int
	// VMs names the VMs on (or heading to) the host, for affinity rules.
	VMs []string
}

// VM is what placement needs of a VM.
type VM struct {
	Name     string
	VCPUs    int
	MemBytes uint64
	Storage  []string // storage IDs of its disks
	Networks []string // networks of its NICs
}

// Rule kinds.
const (
	RuleVMHost       = "vm-host"
	RuleAffinity     = "vm-affinity"
	RuleAntiAffinity = "vm-anti-affinity"
)

// Rule is an affinity rule: Must rules filter, the others add a penalty.
type Rule struct {
	Name  string
	Kind  string
	Must  bool
	VMs   []string
	Hosts []string
}

// Request asks where VM may go.
type Request struct {
	VM VM
	// From is the VM's current host for a migration: the destination must
	// match its CPU identity and TSC, and may not be From itself. Nil for a
	// new VM (or one being started).
	From  *Host
	Hosts []Host
	Rules []Rule
}

// Candidate is a host that passed every filter.
type Candidate struct {
	Host      string
	Score     float64 // TOPSIS closeness minus rule penalties; higher is better
	MemUse    float64 // memory use with the VM, fraction of capacity
	VCPULoad  float64 // vCPUs with the VM per host CPU
	Penalties []string
}

// Rejection is a host that failed, and why.
type Rejection struct {
	Host    string
	Reasons []string
}

// Result is the ranking: candidates best first, rejections by host name.
type Result struct {
	Candidates []Candidate
	Rejected   []Rejection
}

// Best returns the best candidate's host, or "" when none fits.
func (r Result) Best() string {
	if len(r.Candidates) == 0 {
		return ""
	}
	return r.Candidates[0].Host
}

// NoHostError says that no host can take a VM, with each host's reasons.
type NoHostError struct {
	VM       string
	Rejected []Rejection
}

func (e *NoHostError) Error() string {
	if len(e.Rejected) == 0 {
		return fmt.Sprintf("placement: no host can take vm %s: the pool has no hosts (start an agent)", e.VM)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "placement: no host can take vm %s: ", e.VM)
	for i, r := range e.Rejected {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", r.Host, strings.Join(r.Reasons, ", "))
	}
	return b.String()
}

// Err returns a *NoHostError when no host fits, else nil.
func (r Result) Err(vm string) error {
	if len(r.Candidates) > 0 {
		return nil
	}
	return &NoHostError{VM: vm, Rejected: r.Rejected}
}

// capacity is the memory a host can give to VMs.
func (p Policy) capacity(h Host) float64 {
	return float64(h.MemBytes)*p.RAMRatio - float64(p.HostReserveBytes)
}

// Need is the memory a VM takes from a host: its RAM plus the overhead.
func (p Policy) Need(vm VM) uint64 {
	return vm.MemBytes + p.WithDefaults().VMOverheadBytes
}

// Assign counts vm against h, as a plan that puts it there: its memory
// need, vCPUs and name (h.VMs is copied, never appended to in place, as
// planners share it between copies of a host list).
func (p Policy) Assign(h *Host, vm VM) {
	h.AllocMemBytes += p.Need(vm)
	h.AllocVCPUs += vm.VCPUs
	h.VMs = append(slices.Clone(h.VMs), vm.Name)
}

// Check returns why h cannot take the request's VM, nil if it can. Only
// Must rules are checked here; should rules only lower the score.
func (p Policy) Check(req Request, h Host) []string {
	p = p.WithDefaults()
	var why []string
	if !h.Alive {
		why = append(why, "not alive (its agent holds no lease)")
	}
	if h.State != "active" {
		st := h.State
		if st == "" {
			st = "unset"
		}
		why = append(why, "state "+st+" (only active hosts take VMs)")
	}
	if f := req.From; f != nil {
		if h.Name == f.Name {
			why = append(why, "is the VM's current host")
		}
		if h.Accel != f.Accel {
			why = append(why, fmt.Sprintf("accelerator %s differs from the VM's host %s (%s): moving between accelerators is not supported", h.Accel, f.Name, f.Accel))
		}
		if h.CPUIDHash != f.CPUIDHash {
			why = append(why, fmt.Sprintf("CPU identity differs (cpuid %s, the VM's host %s has %s)", short(h.CPUIDHash), f.Name, short(f.CPUIDHash)))
		}
		if ppm := tscPPM(h.TSCKHz, f.TSCKHz); ppm > p.TSCTolerancePPM {
			why = append(why, fmt.Sprintf("TSC %d kHz is %.0f ppm from %s's %d kHz (limit %.0f ppm; this KVM cannot scale the TSC)", h.TSCKHz, ppm, f.Name, f.TSCKHz, p.TSCTolerancePPM))
		}
	}
	need := p.Need(req.VM)
	if capa := p.capacity(h); float64(h.AllocMemBytes)+float64(need) > capa {
		free := capa - float64(h.AllocMemBytes)
		if free < 0 {
			free = 0
		}
		why = append(why, fmt.Sprintf("memory: needs %s (VM + %s overhead), %s free (of %s less %s reserve)",
			mib(float64(need)), mib(float64(p.VMOverheadBytes)), mib(free), mib(float64(h.MemBytes)*p.RAMRatio), mib(float64(p.HostReserveBytes))))
	}
	if maxV := float64(h.CPUs) * p.VCPURatio; float64(h.AllocVCPUs+req.VM.VCPUs) > maxV {
		why = append(why, fmt.Sprintf("vCPUs: %d allocated + %d > %g (%d CPUs × %g)", h.AllocVCPUs, req.VM.VCPUs, maxV, h.CPUs, p.VCPURatio))
	}
	for _, s := range missing(req.VM.Storage, h.Storage) {
		why = append(why, "storage "+s+" missing (the VM's disk is not reachable there)")
	}
	for _, n := range missing(req.VM.Networks, h.Networks) {
		why = append(why, "network "+n+" missing")
	}
	for _, r := range req.Rules {
		if r.Must {
			if v := ruleViolation(r, req, h); v != "" {
				why = append(why, v)
			}
		}
	}
	return why
}

// Rank filters every host and orders the survivors by score.
func (p Policy) Rank(req Request) Result {
	p = p.WithDefaults()
	var res Result
	type row struct {
		c        Candidate
		mem, cpu float64
	}
	var rows []row
	hosts := slices.Clone(req.Hosts)
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	for _, h := range hosts {
		if why := p.Check(req, h); len(why) > 0 {
			res.Rejected = append(res.Rejected, Rejection{Host: h.Name, Reasons: why})
			continue
		}
		mem := (float64(h.AllocMemBytes) + float64(p.Need(req.VM))) / p.capacity(h)
		cpu := float64(h.AllocVCPUs+req.VM.VCPUs) / float64(max(h.CPUs, 1))
		c := Candidate{Host: h.Name, MemUse: mem, VCPULoad: cpu}
		for _, r := range req.Rules {
			if !r.Must {
				if v := ruleViolation(r, req, h); v != "" {
					c.Penalties = append(c.Penalties, v)
				}
			}
		}
		rows = append(rows, row{c, mem, cpu})
	}
	mems := make([]float64, len(rows))
	cpus := make([]float64, len(rows))
	for i, r := range rows {
		mems[i], cpus[i] = r.mem, r.cpu
	}
	scores := TOPSIS([][]float64{mems, cpus}, []float64{p.WeightMem, p.WeightCPU})
	for i := range rows {
		rows[i].c.Score = scores[i] - p.ShouldPenalty*float64(len(rows[i].c.Penalties))
		res.Candidates = append(res.Candidates, rows[i].c)
	}
	sort.SliceStable(res.Candidates, func(i, j int) bool {
		a, b := res.Candidates[i], res.Candidates[j]
		if len(a.Penalties) != len(b.Penalties) {
			return len(a.Penalties) < len(b.Penalties)
		}
		if a.Score != b.Score {
			return a.Score > b.Score
		}
		return a.Host < b.Host
	})
	return res
}

// TOPSIS scores alternatives over cost criteria (lower is better).
// columns[k][i] is criterion k of alternative i; weights[k] its weight.
// Each column is divided by its L2 norm and multiplied by its weight; the
// ideal point takes each column's minimum, the anti-ideal its maximum; the
// score is d⁻/(d⁺+d⁻). When every alternative is the same, all score 1.
func TOPSIS(columns [][]float64, weights []float64) []float64 {
	if len(columns) == 0 {
		return nil
	}
	n := len(columns[0])
	norm := make([][]float64, len(columns))
	for k, col := range columns {
		var ss float64
		for _, v := range col {
			ss += v * v
		}
		l2 := math.Sqrt(ss)
		norm[k] = make([]float64, n)
		for i, v := range col {
			if l2 > 0 {
				norm[k][i] = v / l2 * weights[k]
			}
		}
	}
	scores := make([]float64, n)
	for i := 0; i < n; i++ {
		var dPlus, dMinus float64
		for k := range norm {
			lo, hi := slices.Min(norm[k]), slices.Max(norm[k])
			dPlus += (norm[k][i] - lo) * (norm[k][i] - lo)
			dMinus += (norm[k][i] - hi) * (norm[k][i] - hi)
		}
		dPlus, dMinus = math.Sqrt(dPlus), math.Sqrt(dMinus)
		if dPlus+dMinus == 0 {
			scores[i] = 1
		} else {
			scores[i] = dMinus / (dPlus + dMinus)
		}
	}
	return scores
}

// ruleViolation says how placing req.VM on h would break r, "" if it does not.
func ruleViolation(r Rule, req Request, h Host) string {
	if !slices.Contains(r.VMs, req.VM.Name) {
		return ""
	}
	strength := "should"
	if r.Must {
		strength = "must"
	}
	switch r.Kind {
	case RuleVMHost:
		if !slices.Contains(r.Hosts, h.Name) {
			return fmt.Sprintf("rule %s: vm %s %s run on %s", r.Name, req.VM.Name, strength, strings.Join(r.Hosts, "|"))
		}
	case RuleAffinity:
		for _, o := range req.Hosts {
			if o.Name == h.Name {
				continue
			}
			for _, v := range o.VMs {
				if v != req.VM.Name && slices.Contains(r.VMs, v) {
					return fmt.Sprintf("rule %s: vm %s %s run with %s (on %s)", r.Name, req.VM.Name, strength, v, o.Name)
				}
			}
		}
	case RuleAntiAffinity:
		for _, v := range h.VMs {
			if v != req.VM.Name && slices.Contains(r.VMs, v) {
				return fmt.Sprintf("rule %s: vm %s %s not run with %s", r.Name, req.VM.Name, strength, v)
			}
		}
	}
	return ""
}

// missing returns the members of want absent from have, each once.
func missing(want, have []string) []string {
	var out []string
	for _, w := range want {
		if w != "" && !slices.Contains(have, w) && !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out
}

// tscPPM is the relative difference of two TSC frequencies in ppm; an
// unknown (zero) frequency on either side counts as incompatible.
func tscPPM(a, b uint64) float64 {
	if a == 0 || b == 0 {
		return math.Inf(1)
	}
	return math.Abs(float64(a)-float64(b)) / float64(b) * 1e6
}

func short(h string) string {
	if h == "" {
		return "unknown"
	}
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func mib(b float64) string { return fmt.Sprintf("%.0f MiB", b/MiB) }
