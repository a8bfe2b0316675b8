package controller

import (
	"context"
	"fmt"
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
	if time.Since(checked) > 5*time.Second || members == 0 {
		mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := c.cli.MemberList(mctx)
		cancel()
		if err == nil {
			members = len(resp.Members)
			c.ops.mu.Lock()
			c.ops.ha.members, c.ops.ha.checked = members, time.Now()
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
	t := time.NewTicker(500 * time.Millisecond)
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
		case <-t.C:
		case <-c.ops.haKick:
		case e, ok := <-events:
			switch {
			case !ok || e.Err != nil:
				wcancel()
				events = nil
			case e.Kind == store.HostLost:
				now := time.Now()
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
	for _, h := range p.hosts {
		if h.Alive == nil && h.State != nil && (h.State.State == store.HostActive || h.State.State == store.HostDraining) {
			if _, err := c.st.SetHostState(rctx, h.Name, store.HostState{State: store.HostFailed,
				Reason: "lease expired: host lost (its VMs fenced themselves); godwit host activate " + h.Name + " after repair"}, h.StateRev, g); err != nil {
				c.log.Warn("ha: cannot mark host failed", "host", h.Name, "err", err)
			} else {
				c.log.Warn("ha: host marked failed", "host", h.Name)
			}
		}
	}

	byName := map[string]*store.VM{}
	for i := range p.vms {
		byName[p.vms[i].Name] = &p.vms[i]
	}
	c.ops.mu.Lock()
	ha := &c.ops.ha
	lastLost := ha.lastLost
	var release []struct {
		vm  string
		rev int64
	}
	for vm, s := range ha.starts {
		v := byName[vm]
		switch {
		case v == nil || v.Spec == nil || !v.Spec.HA.Restart || v.Spec.Desired != store.DesiredRunning:
			delete(ha.starts, vm)
		case v.Owner == nil || v.Owner.Host != s.host || v.OwnerRev != s.rev:
			delete(ha.starts, vm) // target lost too, or someone else placed it
		case v.Status != nil && v.Status.Host == s.host && v.Status.Phase == store.VMRunning:
			delete(ha.starts, vm)
			delete(ha.tried, vm)
			args := []any{"vm", vm, "host", s.host, "attempt", s.attempt, "after_placement", time.Since(s.since).Round(time.Millisecond)}
			if !lastLost.IsZero() {
				args = append(args, "since_host_lost", time.Since(lastLost).Round(time.Millisecond))
			}
			c.log.Info("ha: vm restarted", args...)
		case v.Status != nil && v.Status.Host == s.host && v.Status.Phase == store.VMFailed:
			ha.tried[vm] = append(ha.tried[vm], s.host)
			delete(ha.starts, vm)
			if len(ha.tried[vm]) >= haAttempts {
				ha.errors[vm] = fmt.Sprintf("failed to start on %v: last: %s", ha.tried[vm], v.Status.Reason)
				c.log.Error("ha: giving up on vm", "vm", vm, "tried", ha.tried[vm], "reason", v.Status.Reason)
				continue
			}
			c.log.Warn("ha: vm failed to start; retrying on another host", "vm", vm, "host", s.host, "reason", v.Status.Reason)
			release = append(release, struct {
				vm  string
				rev int64
			}{vm, s.rev})
		}
	}
	perTarget := map[string]int{}
	for _, s := range ha.starts {
		perTarget[s.host]++
	}
	var cands []*store.VM
	for i := range p.vms {
		v := &p.vms[i]
		if v.Spec != nil && v.Spec.HA.Restart && v.Spec.Desired == store.DesiredRunning && v.Owner == nil &&
			ha.starts[v.Name] == nil && ha.errors[v.Name] == "" {
			cands = append(cands, v)
		}
	}
	tried := map[string][]string{}
	for vm, t := range ha.tried {
		tried[vm] = slices.Clone(t)
	}
	c.ops.mu.Unlock()

	for _, r := range release {
		// The VMM exited (status failed) and the agent will not start it
		// again at this epoch: releasing the exact epoch we wrote is safe.
		if _, err := c.st.ReleaseOwner(rctx, r.vm, r.rev); err != nil {
			c.log.Warn("ha: cannot release the owner of a failed vm", "vm", r.vm, "err", err)
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		if cands[i].Spec.HA.Priority != cands[j].Spec.HA.Priority {
			return cands[i].Spec.HA.Priority > cands[j].Spec.HA.Priority
		}
		return cands[i].Name < cands[j].Name
	})
	for _, v := range cands {
		c.placeMu.Lock()
		var hosts []placement.Host
		for _, h := range c.placementHosts(p, c.resv) {
			if !slices.Contains(tried[v.Name], h.Name) && perTarget[h.Name] < MaxHAStartsPerHost {
				hosts = append(hosts, h)
			}
		}
		req := placement.Request{VM: placementVM(v.Name, *v.Spec), Hosts: hosts, Rules: placementRules(p.rules)}
		res := c.cfg.Policy.Rank(req)
		best := res.Best()
		var lease clientv3.LeaseID
		for _, h := range p.hosts {
			if h.Name == best && h.Alive != nil {
				lease = clientv3.LeaseID(h.Alive.Lease)
			}
		}
		d := decision{host: best, key: "place/" + v.Name}
		if best != "" {
			c.resv[d.key] = reservation{host: best, vm: v.Name, memBytes: c.cfg.Policy.Need(req.VM), vcpus: v.Spec.VCPUs}
		}
		c.placeMu.Unlock()
		if best == "" || lease == 0 {
			c.log.Debug("ha: no host for vm yet", "vm", v.Name, "err", res.Err(v.Name))
			if best != "" {
				c.release(d)
			}
			continue
		}
		if err := c.grantVM(rctx, best, v.Name); err != nil {
			c.release(d)
			c.log.Warn("ha: cannot grant the vm's keys to its new host", "vm", v.Name, "host", best, "err", err)
			continue
		}
		r, err := c.st.CreateOwner(rctx, v.Name, best, lease, g)
		c.release(d)
		if err != nil || !r.Won {
			c.log.Warn("ha: cannot place vm", "vm", v.Name, "host", best, "err", err, "result", r.String())
			continue
		}
		// The next VM of this pass sees this one on best.
		v.Owner, v.OwnerRev = r.Owner, r.Rev
		perTarget[best]++
		c.ops.mu.Lock()
		c.ops.ha.starts[v.Name] = &haStart{host: best, rev: r.Rev, priority: v.Spec.HA.Priority, attempt: len(tried[v.Name]) + 1, since: time.Now()}
		c.ops.mu.Unlock()
		args := []any{"vm", v.Name, "host", best, "priority", v.Spec.HA.Priority, "owner_rev", r.Rev}
		if !lastLost.IsZero() {
			args = append(args, "since_host_lost", time.Since(lastLost).Round(time.Millisecond))
		}
		c.log.Info("ha: vm placed for restart", args...)
	}
}
