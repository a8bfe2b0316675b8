package controller

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/controller/placement"
)

// Drain planning: pure functions of a pool snapshot, so that tests (and a
// simulation) can drive them without etcd.
//
// Predicted migration time. Pre-copy sends the memory once, then what was
// dirtied meanwhile, and so on: with memory M, bandwidth B and dirty rate D
// the rounds form a geometric series, T = M/B · 1/(1−ρ) with ρ = D/B. ρ is
// capped at 0.9 (beyond it the engine's auto-converge throttles the guest,
// so the series is cut off at ten times the first round). B is
// AssumedBandwidth (1 GiB/s: a veth pair on these machines moves about
// that; 10 GbE is 1.2 GB/s). D comes from the host's usage report, which
// gives one dirty rate for all its VMs: each VM is given a share
// proportional to its memory. Without a usage report D is 0.

// AssumedBandwidth is the migration bandwidth the planner assumes, bytes/s.
const AssumedBandwidth = 1 << 30

// Drain slots (PLATFORM.md §2, §6). KubeVirt's defaults are 5 per cluster
// and 2 out of each node; these 2-core machines take 1 in and 1 out per
// host. A drain request's Concurrency sets the out-slots of its host; the
// pool config's MigrationSlots and SlotsPerHost set the others.
const (
	DefaultClusterSlots = 5
	DefaultSlotsOut     = 1
	DefaultSlotsIn      = 1
	// MaxDrainRetries: a VM whose migration fails is retried on the
	// next-best host up to this many times, then it is blocked.
	MaxDrainRetries = 3
)

// KubeVirt's migration timeouts, which the drain applies to its migrations
// (cancelling them, see drainLoop): no progress reported for
// ProgressTimeout, or running longer than CompletionPerGiB per GiB of
// guest memory (at least ProgressTimeout).
const (
	ProgressTimeout  = 150 * time.Second
	CompletionPerGiB = 150 * time.Second
)

// predictMigration is the model above.
func predictMigration(memBytes uint64, dirtyRate, bandwidth float64) time.Duration {
	if bandwidth <= 0 {
		bandwidth = AssumedBandwidth
	}
	rho := math.Min(math.Max(dirtyRate/bandwidth, 0), 0.9)
	sec := float64(memBytes) / bandwidth / (1 - rho)
	return time.Duration(sec * float64(time.Second))
}

// drainVM is one VM of the pool as the planner sees it.
type drainVM struct {
	name      string
	spec      placement.VM
	owner     string // "" when unowned
	predicted time.Duration
	// migrating: a migration of the VM is under way (any reason); dst is
	// its destination.
	migrating bool
	dst       string
	// notMigratable is the agent's reason, "" if migratable.
	notMigratable string
	// stopping: desired stopped; its agent stops it and releases it, so
	// the drain neither moves it nor calls it blocked.
	stopping bool
}

// drainInput is a snapshot for one host's drain.
type drainInput struct {
	host   string
	from   placement.Host // the draining host (for CPU/TSC checks)
	hosts  []placement.Host
	rules  []placement.Rule
	vms    []drainVM
	policy placement.Policy
	// Slots: cluster-wide, out of the draining host, into each host.
	clusterSlots, slotsOut, slotsIn int
	// tried: destinations a VM's failed attempts went to (excluded).
	tried map[string][]string
	// exhausted: VMs that ran out of retries, with the last error.
	exhausted map[string]string
}

// drainStart is a migration to request.
type drainStart struct {
	vm  string
	dst string
}

// drainPlan is what the planner decided.
type drainPlan struct {
	order    []string          // owned VMs, shortest predicted migration first
	inFlight []string          // owned VMs migrating now
	blocked  map[string]string // owned VMs that cannot move, and why
	starts   []drainStart      // migrations to request now, in order
	waiting  []string          // movable, but no slot free yet
	stopping []string          // being stopped by their agent
}

// planDrain orders the host's VMs, finds the blocked ones and fills the
// free slots with the shortest movable VMs, each to its best host that
// has an in-slot free (placement's filters and TOPSIS ranking, hosts a
// failed attempt went to excluded).
func planDrain(in drainInput) drainPlan {
	p := drainPlan{blocked: map[string]string{}}
	hosts := slices.Clone(in.hosts)
	idx := map[string]int{}
	for i, h := range hosts {
		idx[h.Name] = i
	}
	// Slot use by every migration under way in the pool.
	cluster, out, into := 0, 0, map[string]int{}
	for _, v := range in.vms {
		if !v.migrating {
			continue
		}
		cluster++
		into[v.dst]++
		if v.owner == in.host {
			out++
		}
	}
	var owned []drainVM
	for _, v := range in.vms {
		if v.owner == in.host {
			owned = append(owned, v)
		}
	}
	sort.SliceStable(owned, func(i, j int) bool {
		if owned[i].predicted != owned[j].predicted {
			return owned[i].predicted < owned[j].predicted
		}
		return owned[i].name < owned[j].name
	})
	for _, v := range owned {
		p.order = append(p.order, v.name)
		switch {
		case v.migrating:
			p.inFlight = append(p.inFlight, v.name)
			continue
		case v.stopping:
			p.stopping = append(p.stopping, v.name)
			continue
		case in.exhausted[v.name] != "":
			p.blocked[v.name] = in.exhausted[v.name]
			continue
		case v.notMigratable != "":
			p.blocked[v.name] = "not migratable: " + v.notMigratable
			continue
		}
		tried := in.tried[v.name]
		var cand []placement.Host
		for _, h := range hosts {
			if !slices.Contains(tried, h.Name) {
				cand = append(cand, h)
			}
		}
		from := in.from
		res := in.policy.Rank(placement.Request{VM: v.spec, From: &from, Hosts: cand, Rules: in.rules})
		if len(res.Candidates) == 0 {
			p.blocked[v.name] = blockedReason(res.Rejected, tried)
			continue
		}
		if cluster >= in.clusterSlots || out >= in.slotsOut {
			p.waiting = append(p.waiting, v.name)
			continue
		}
		dst := ""
		for _, c := range res.Candidates {
			if into[c.Host] < in.slotsIn {
				dst = c.Host
				break
			}
		}
		if dst == "" {
			p.waiting = append(p.waiting, v.name)
			continue
		}
		p.starts = append(p.starts, drainStart{vm: v.name, dst: dst})
		cluster++
		out++
		into[dst]++
		// The next VM sees this one's memory on dst.
		in.policy.Assign(&hosts[idx[dst]], v.spec)
	}
	return p
}

// blockedReason summarises why no host can take a VM: the reasons shared
// by every host first (e.g. "storage s1 missing"), then per host.
func blockedReason(rej []placement.Rejection, tried []string) string {
	var parts []string
	for _, r := range rej {
		if r.Host == "" {
			continue
		}
		var why []string
		for _, w := range r.Reasons {
			// The draining host itself and hosts that are not active are
			// not interesting.
			if w == "is the VM's current host" || strings.HasPrefix(w, "state ") {
				continue
			}
			why = append(why, w)
		}
		if len(why) > 0 {
			parts = append(parts, r.Host+": "+strings.Join(why, ", "))
		}
	}
	msg := "no compatible host with capacity"
	if len(tried) > 0 {
		msg += fmt.Sprintf(" (hosts tried and failed: %s)", strings.Join(tried, ", "))
	}
	if len(parts) > 0 {
		msg += " — " + strings.Join(parts, "; ")
	} else if len(tried) == 0 {
		msg += " — no other active host"
	}
	return msg
}

// haVM is an HA VM as the failover check sees it.
type haVM struct {
	spec     placement.VM
	priority int
}

// haAtRisk is HA admission for a drain: with hosts as the pool would be
// after it (the drained host gone, its VMs on their planned destinations)
// and ha the HA VMs by the host they would be on, it lists each host whose
// HA VMs could not all be restarted on the other hosts if it failed
// (highest priority first, then largest, each placed VM's memory counted
// for the next).
func haAtRisk(policy placement.Policy, rules []placement.Rule, hosts []placement.Host, ha map[string][]haVM) []string {
	var out []string
	for _, failed := range hosts {
		vms := slices.Clone(ha[failed.Name])
		if len(vms) == 0 {
			continue
		}
		// As HA restarts them: priority first; then largest first, the
		// first-fit-decreasing order that packs best.
		sort.SliceStable(vms, func(i, j int) bool {
			if vms[i].priority != vms[j].priority {
				return vms[i].priority > vms[j].priority
			}
			return vms[i].spec.MemBytes > vms[j].spec.MemBytes
		})
		var others []placement.Host
		idx := map[string]int{}
		for _, h := range hosts {
			if h.Name != failed.Name {
				idx[h.Name] = len(others)
				others = append(others, h)
			}
		}
		var lost []string
		for _, v := range vms {
			res := policy.Rank(placement.Request{VM: v.spec, Hosts: others, Rules: rules})
			if len(res.Candidates) == 0 {
				lost = append(lost, v.spec.Name)
				continue
			}
			policy.Assign(&others[idx[res.Candidates[0].Host]], v.spec)
		}
		if len(lost) > 0 {
			out = append(out, fmt.Sprintf("if host %s failed, %d of its %d HA VMs could not restart elsewhere (%s)",
				failed.Name, len(lost), len(vms), strings.Join(lost, ", ")))
		}
	}
	return out
}
