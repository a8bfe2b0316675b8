package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/placement"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// HA restart (PLATFORM.md §6 "HA restart").
//
// A host is lost when its lease expires: etcd deletes hosts/<h>/alive and
// every owner key bound to the lease in one revision. Before that moment
// the host's VMMs have stopped themselves (each VMM stops at the agent's
// published deadline, lastAckedSend + TTL − margin, which is before the
// server-side expiry), so a VM without an owner key cannot be running
// anywhere. The leader then:
//
//  1. marks the host failed (hosts/<h>/state, guarded) — a host that
//     registers again stays failed until `godwit host activate`;
//  2. takes every VM whose spec asks for HA restart, desires running and
//     has no owner, highest HA priority first, and places it with the
//     normal placement filters (at most MaxHAStartsPerHost starts pending
//     on one target), writing the owner only if there is none
//     (store.CreateOwner, If(CreateRevision(owner) == 0), guarded): the
//     target's agent sees the owner and starts the VM;
//  3. if the VM fails to start there (its status says failed), releases
//     that owner (CAS on the epoch it wrote) and tries once more on another
//     host; if that fails too it gives up: the VM stays owned by the last
//     host with status failed, and GET /v1/ha lists it under errors.
//
// VMs without HA restart stay unowned (phase pending) until someone starts
// them.
//
// Restart time ≈ lease TTL (the key's expiry; the VMs stopped TTL − margin
// after the agent's last acknowledged renewal) + the watch event (ms) + the
// target agent's reconcile (its owner watch, or its --sync-every pass) +
// the VMM's start and guest boot. With the tests' 3 s TTL that is ≈ 4–5 s;
// with the production 10 s TTL ≈ 11–12 s, against vSphere HA's ≈ 15 s,
// Proxmox's ≈ 2 min and KubeVirt's ≥ 5 min. After an etcd leader change
// add one election timeout.
//
// HA is off with fewer than three etcd members unless Config.HAForce is
// set: with a single member, losing that member loses every lease, so
// every HA VM would fence itself and could not restart anywhere.

// MaxHAStartsPerHost bounds HA starts pending on one target host
// (Proxmox's max_workers).
const MaxHAStartsPerHost = 4

// haAttempts is how many hosts an HA VM is tried on (the first, one retry).
const haAttempts = 2

// haState is the leader's memory of HA restarts (guarded by ops.mu).
type haState struct {
	starts   map[string]*haStart // VM -> restart waiting for the VM to run
	errors   map[string]string   // VM -> why HA gave up
	tried    map[string][]string // VM -> hosts it failed to start on
	lost     map[string]time.Time
	lastLost time.Time
	members  int
	checked  time.Time
}

// haStart is one HA placement waiting for its VM to run.
type haStart struct {
	host     string
	rev      int64
	priority int
	attempt  int
	since    time.Time
}

// haStatus says whether HA restart is active and why.
func (c *Controller) haStatus(ctx context.Context) poolapi.HAStatus {
	c.ops.mu.Lock()
	members, checked := c.ops.ha.members, c.ops.ha.checked
	c.ops.mu.Unlock()
	if c.clock.Since(checked) > 5*time.Second || members == 0 {
		mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := c.cli.MemberList(mctx)
		cancel()
		if err == nil {
			members = len(resp.Members)
			c.ops.mu.Lock()
			c.ops.ha.members, c.ops.ha.checked = members, c.clock.Now()
			c.ops.mu.Unlock()
		}
	}
	st := poolapi.HAStatus{EtcdMembers: members, Forced: c.cfg.HAForce}
	switch {
	case members >= 3:
		st.Active, st.Reason = true, fmt.Sprintf("on: etcd has %d members (its quorum survives the loss of one)", members)
	case c.cfg.HAForce:
		st.Active, st.Reason = true, fmt.Sprintf("on: forced with --ha-force, although etcd has %d member(s) (losing one would stop every HA VM)", members)
	case members == 0:
		st.Reason = "off: cannot count the etcd members"
	default:
		st.Reason = fmt.Sprintf("off: etcd has %d member(s); HA restart needs 3 or more (losing the only member would stop every HA VM), or --ha-force", members)
	}
	c.ops.mu.Lock()
	for vm, s := range c.ops.ha.starts {
		st.Restarting = append(st.Restarting, poolapi.HARestart{VM: vm, Host: s.host, Priority: s.priority, Attempt: s.attempt, Since: s.since})
	}
	if len(c.ops.ha.errors) > 0 {
		st.Errors = map[string]string{}
		for vm, e := range c.ops.ha.errors {
			st.Errors[vm] = e
		}
	}
	c.ops.mu.Unlock()
	sort.Slice(st.Restarting, func(i, j int) bool { return st.Restarting[i].VM < st.Restarting[j].VM })
	return st
}

// haLoop watches host losses and runs an HA pass on each, and every
// 500 ms.
func (c *Controller) haLoop(ctx context.Context) {
	t := c.clock.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var events <-chan store.HostEvent
	var wcancel context.CancelFunc = func() {}
	defer func() { wcancel() }()
	for ctx.Err() == nil {
		if events == nil {
			if rev, err := c.st.Revision(ctx); err == nil {
				events, wcancel = c.watchHostsFrom(ctx, rev+1)
			}
		}
		c.haPass(ctx)
		select {
		case <-ctx.Done():
		case <-t.Chan():
		case <-c.ops.haKick:
		case e, ok := <-events:
			switch {
			case !ok || e.Err != nil:
				wcancel()
				events = nil
			case e.Kind == store.HostLost:
				now := c.clock.Now()
				c.ops.mu.Lock()
				c.ops.ha.lost[e.Host], c.ops.ha.lastLost = now, now
				c.ops.mu.Unlock()
				c.log.Warn("host lost (its lease expired)", "host", e.Host, "rev", e.Rev)
			}
		}
	}
}

// watchHostsFrom starts a host watch that the returned func stops.
func (c *Controller) watchHostsFrom(ctx context.Context, rev int64) (<-chan store.HostEvent, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	return c.st.WatchHosts(wctx, rev), cancel
}

// haPass marks lost hosts failed and restarts HA VMs without an owner.
func (c *Controller) haPass(ctx context.Context) {
	if !c.haStatus(ctx).Active {
		return
	}
	g, err := c.leaderGuard(ctx)
	if err != nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p, err := c.readPool(rctx)
	if err != nil {
		return
	}
	for _, h := range lostHosts(p.hosts) {
		if _, err := c.st.SetHostState(rctx, h.Name, store.HostState{State: store.HostFailed,
			Reason: "lease expired: host lost (its VMs fenced themselves); godwit host activate " + h.Name + " after repair"}, h.StateRev, g); err != nil {
			c.log.Warn("ha: cannot mark host failed", "host", h.Name, "err", err)
		} else {
			c.log.Warn("ha: host marked failed", "host", h.Name)
		}
	}
	c.ops.mu.Lock()
	plan := planHA(c.ops.ha.starts, c.ops.ha.tried, c.ops.ha.errors, p.vms)
	lastLost := c.ops.ha.lastLost
	c.applyHAOutcomes(plan.outcomes, lastLost)
	c.ops.mu.Unlock()
	for _, o := range plan.outcomes {
		if o.kind != haRetry {
			continue
		}
		// The VMM exited (status failed) and the agent will not start it
		// again at this epoch: releasing the exact epoch we wrote is safe.
		if _, err := c.st.ReleaseOwner(rctx, o.vm, o.start.rev); err != nil {
			c.log.Warn("ha: cannot release the owner of a failed vm", "vm", o.vm, "err", err)
		}
	}
	idx := make(map[string]int, len(p.vms))
	for i, v := range p.vms {
		idx[v.Name] = i
	}
	for _, name := range plan.cands {
		c.placeHA(rctx, g, p, &p.vms[idx[name]], plan, lastLost)
	}
}

// lostHosts are the hosts to mark failed: no lease, and active or
// draining.
func lostHosts(hosts []store.Host) []store.Host {
	var out []store.Host
	for _, h := range hosts {
		if h.Alive == nil && h.State != nil && (h.State.State == store.HostActive || h.State.State == store.HostDraining) {
			out = append(out, h)
		}
	}
	return out
}

// haOutcomeKind is what became of a pending HA restart.
type haOutcomeKind int

const (
	haGone      haOutcomeKind = iota // no longer wanted, or placed by someone else: forget it
	haRestarted                      // running on its target
	haRetry                          // failed to start: release its owner, try another host
	haGaveUp                         // failed to start on haAttempts hosts
)

// haOutcome is a pending HA restart that ended.
type haOutcome struct {
	vm     string
	start  haStart
	kind   haOutcomeKind
	reason string // haRetry, haGaveUp: the VM's status reason
}

// haPlan is what an HA pass decided.
type haPlan struct {
	outcomes []haOutcome // by VM
	// cands are the HA VMs to place now (desired running, no owner, no
	// restart pending, not given up), highest priority first, then by
	// name.
	cands []string
	// tried: hosts each VM failed to start on, outcomes included.
	tried map[string][]string
	// perTarget counts the restarts pending on each host.
	perTarget map[string]int
}

// planHA decides, from the pending restarts, the hosts each VM failed on,
// the VMs given up on and the pool's VMs, which restarts ended and which
// VMs to place. It changes none of its arguments.
func planHA(starts map[string]*haStart, tried map[string][]string, errs map[string]string, vms []store.VM) haPlan {
	pl := haPlan{tried: map[string][]string{}, perTarget: map[string]int{}}
	for vm, t := range tried {
		pl.tried[vm] = slices.Clone(t)
	}
	byName := map[string]*store.VM{}
	for i := range vms {
		byName[vms[i].Name] = &vms[i]
	}
	ended := map[string]bool{}
	for _, vm := range slices.Sorted(maps.Keys(starts)) {
		o, ok := haEnded(vm, *starts[vm], byName[vm], pl.tried[vm])
		if !ok {
			pl.perTarget[starts[vm].host]++
			continue
		}
		ended[vm] = true
		switch o.kind {
		case haRestarted:
			delete(pl.tried, vm)
		case haRetry, haGaveUp:
			pl.tried[vm] = append(pl.tried[vm], o.start.host)
		}
		pl.outcomes = append(pl.outcomes, o)
	}
	var cands []*store.VM
	for i := range vms {
		v := &vms[i]
		// A restart that ended here left an owner behind (haEnded), so
		// no VM whose restart just ended is a candidate again.
		if v.Spec != nil && v.Spec.HA.Restart && v.Spec.Desired == store.DesiredRunning && v.Owner == nil &&
			(starts[v.Name] == nil || ended[v.Name]) && errs[v.Name] == "" {
			cands = append(cands, v)
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		if cands[i].Spec.HA.Priority != cands[j].Spec.HA.Priority {
			return cands[i].Spec.HA.Priority > cands[j].Spec.HA.Priority
		}
		return cands[i].Name < cands[j].Name
	})
	for _, v := range cands {
		pl.cands = append(pl.cands, v.Name)
	}
	return pl
}

// haEnded says whether the restart s of vm (now v; nil: gone) has ended,
// and how; tried are the hosts it failed on before.
func haEnded(vm string, s haStart, v *store.VM, tried []string) (haOutcome, bool) {
	o := haOutcome{vm: vm, start: s}
	switch {
	case v == nil || v.Spec == nil || !v.Spec.HA.Restart || v.Spec.Desired != store.DesiredRunning:
		o.kind = haGone
	case v.Owner == nil || v.Owner.Host != s.host || v.OwnerRev != s.rev:
		o.kind = haGone // target lost too, or someone else placed it
	case v.Status != nil && v.Status.Host == s.host && v.Status.Phase == store.VMRunning:
		o.kind = haRestarted
	case v.Status != nil && v.Status.Host == s.host && v.Status.Phase == store.VMFailed:
		o.kind, o.reason = haRetry, v.Status.Reason
		if len(tried)+1 >= haAttempts {
			o.kind = haGaveUp
		}
	default:
		return o, false
	}
	return o, true
}

// applyHAOutcomes records outcomes in the leader's HA state (caller holds
// ops.mu).
func (c *Controller) applyHAOutcomes(outcomes []haOutcome, lastLost time.Time) {
	ha := &c.ops.ha
	for _, o := range outcomes {
		delete(ha.starts, o.vm)
		switch o.kind {
		case haRestarted:
			delete(ha.tried, o.vm)
			args := []any{"vm", o.vm, "host", o.start.host, "attempt", o.start.attempt, "after_placement", c.clock.Since(o.start.since).Round(time.Millisecond)}
			if !lastLost.IsZero() {
				args = append(args, "since_host_lost", c.clock.Since(lastLost).Round(time.Millisecond))
			}
			c.log.Info("ha: vm restarted", args...)
		case haRetry:
			ha.tried[o.vm] = append(ha.tried[o.vm], o.start.host)
			c.log.Warn("ha: vm failed to start; retrying on another host", "vm", o.vm, "host", o.start.host, "reason", o.reason)
		case haGaveUp:
			ha.tried[o.vm] = append(ha.tried[o.vm], o.start.host)
			ha.errors[o.vm] = fmt.Sprintf("failed to start on %v: last: %s", ha.tried[o.vm], o.reason)
			c.log.Error("ha: giving up on vm", "vm", o.vm, "tried", ha.tried[o.vm], "reason", o.reason)
		}
	}
}

// haTarget picks the host for HA VM v, skipping the hosts it failed on
// and those with MaxHAStartsPerHost restarts pending, and holds a
// reservation there (release it with c.release). host is "" when no host
// fits (or none has a lease).
func (c *Controller) haTarget(p poolState, v store.VM, tried []string, perTarget map[string]int) (d decision, lease clientv3.LeaseID, why error) {
	c.placeMu.Lock()
	defer c.placeMu.Unlock()
	var hosts []placement.Host
	for _, h := range c.placementHosts(p, c.resv) {
		if !slices.Contains(tried, h.Name) && perTarget[h.Name] < MaxHAStartsPerHost {
			hosts = append(hosts, h)
		}
	}
	req := placement.Request{VM: placementVM(v.Name, *v.Spec), Hosts: hosts, Rules: placementRules(p.rules)}
	res := c.cfg.Policy.Rank(req)
	best := res.Best()
	for _, h := range p.hosts {
		if h.Name == best && h.Alive != nil {
			lease = clientv3.LeaseID(h.Alive.Lease)
		}
	}
	if best == "" || lease == 0 {
		return decision{}, 0, res.Err(v.Name)
	}
	d = decision{host: best, key: "place/" + v.Name}
	c.resv[d.key] = reservation{host: best, vm: v.Name, memBytes: c.cfg.Policy.Need(req.VM), vcpus: v.Spec.VCPUs}
	return d, lease, nil
}

// placeHA writes HA VM v's owner on its best host (only if it has none),
// for that host's agent to start it. v is an element of p.vms: the next
// VM of the pass sees it there.
func (c *Controller) placeHA(ctx context.Context, g store.Guard, p poolState, v *store.VM, pl haPlan, lastLost time.Time) {
	name := v.Name
	d, lease, why := c.haTarget(p, *v, pl.tried[name], pl.perTarget)
	if d.host == "" {
		c.log.Debug("ha: no host for vm yet", "vm", name, "err", why)
		return
	}
	defer c.release(d)
	if err := c.grantVM(ctx, d.host, name); err != nil {
		c.log.Warn("ha: cannot grant the vm's keys to its new host", "vm", name, "host", d.host, "err", err)
		return
	}
	r, err := c.st.CreateOwner(ctx, name, d.host, lease, g)
	if err != nil || !r.Won {
		c.log.Warn("ha: cannot place vm", "vm", name, "host", d.host, "err", err, "result", r.String())
		return
	}
	v.Owner, v.OwnerRev = r.Owner, r.Rev
	pl.perTarget[d.host]++
	c.ops.mu.Lock()
	c.ops.ha.starts[name] = &haStart{host: d.host, rev: r.Rev, priority: v.Spec.HA.Priority, attempt: len(pl.tried[name]) + 1, since: c.clock.Now()}
	c.ops.mu.Unlock()
	args := []any{"vm", name, "host", d.host, "priority", v.Spec.HA.Priority, "owner_rev", r.Rev}
	if !lastLost.IsZero() {
		args = append(args, "since_host_lost", c.clock.Since(lastLost).Round(time.Millisecond))
	}
	c.log.Info("ha: vm placed for restart", args...)
}
