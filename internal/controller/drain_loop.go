package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The leader's background work: the drain loop (this file) and HA restart
// (ha.go). Both run only while this controller leads, in goroutines whose
// context ends with the leadership; every write they make carries the
// leader guard, so a deposed leader's late write fails in etcd.
//
// A drain's durable state is hosts/<h>/state (draining) and drains/<h>
// (plan order, counts, blocked VMs); the loop acts on every host whose
// state is draining, so a new leader carries an unfinished drain on. What
// lives only in the leader's memory: the drain's concurrency (a new leader
// uses the default) and the attempts per VM (a new leader starts counting
// retries again).

// ops is the leader's drain and HA state.
type ops struct {
	done      chan struct{}
	drainKick chan struct{}
	haKick    chan struct{}

	mu     sync.Mutex
	drains map[string]*drainRun // by host
	ha     haState
}

func newOps() *ops {
	return &ops{done: make(chan struct{}), drainKick: make(chan struct{}, 1), haKick: make(chan struct{}, 1), drains: map[string]*drainRun{},
		ha: haState{starts: map[string]*haStart{}, errors: map[string]string{}, tried: map[string][]string{}, lost: map[string]time.Time{}}}
}

// poke wakes the loops.
func (o *ops) poke() {
	for _, k := range []chan struct{}{o.drainKick, o.haKick} {
		select {
		case k <- struct{}{}:
		default:
		}
	}
}

// drainRun is the leader's memory of one drain.
type drainRun struct {
	concurrency int
	attempts    map[string][]drainAttempt
	exhausted   map[string]string
	warned      map[string]bool // migration IDs reported as timed out
	stopped     map[string]bool // VMs stopped by on_blocked=shutdown
	lastWrite   time.Time
	lastRec     store.Drain
}

// drainAttempt is one migration the drain requested.
type drainAttempt struct {
	id, dst string
	over    bool
	failed  bool
	err     string
}

func (o *ops) run(host string) *drainRun {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.drains[host]
	if r == nil {
		r = &drainRun{concurrency: DefaultSlotsOut, attempts: map[string][]drainAttempt{}, exhausted: map[string]string{},
			warned: map[string]bool{}, stopped: map[string]bool{}}
		o.drains[host] = r
	}
	return r
}

func (o *ops) dropRun(host string) {
	o.mu.Lock()
	delete(o.drains, host)
	o.mu.Unlock()
}

// runOps starts the drain and HA loops whenever this controller leads and
// stops them when it does not, until ctx ends. It follows the election, so
// it polls on real time, not on Config.Clock.
func (c *Controller) runOps(ctx context.Context) {
	defer close(c.ops.done)
	for ctx.Err() == nil {
		if !c.IsLeader() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); c.drainLoop(lctx) }()
		go func() { defer wg.Done(); c.haLoop(lctx) }()
		for ctx.Err() == nil && c.IsLeader() {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		cancel()
		wg.Wait()
	}
}

// drainLoop advances every drain twice a second (and when poked).
func (c *Controller) drainLoop(ctx context.Context) {
	t := c.clock.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	// Migration records change at each phase: react at once (the tick
	// covers a broken watch).
	wch := c.cli.Watch(clientv3.WithRequireLeader(ctx), store.MigrationsPrefix, clientv3.WithPrefix())
	for {
		c.drainPass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		case <-c.ops.drainKick:
		case _, ok := <-wch:
			if !ok {
				wch = nil
			}
		}
	}
}

func (c *Controller) drainPass(ctx context.Context) {
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
		if h.State != nil && h.State.State == store.HostDraining {
			if err := c.drainTick(rctx, g, p, h); err != nil && ctx.Err() == nil {
				c.log.Warn("drain pass", "host", h.Name, "err", err)
			}
		}
	}
}

// slots reads the pool config's migration slots (defaults when unset).
func (c *Controller) slots(ctx context.Context) (cluster, in int) {
	cluster, in = DefaultClusterSlots, DefaultSlotsIn
	if cfg, _, err := c.st.GetConfig(ctx); err == nil {
		if cfg.MigrationSlots > 0 {
			cluster = cfg.MigrationSlots
		}
		if cfg.SlotsPerHost > 0 {
			in = cfg.SlotsPerHost
		}
	}
	return cluster, in
}

// drainInputs builds the planner's snapshot for host h (caller holds
// placeMu, since hosts include the reservations).
func (c *Controller) drainInputs(p poolState, h string, run *drainRun, clusterSlots, slotsIn int) drainInput {
	hosts := c.placementHosts(p, c.resv)
	in := drainInput{host: h, hosts: hosts, rules: placementRules(p.rules), policy: c.cfg.Policy,
		clusterSlots: clusterSlots, slotsIn: slotsIn, tried: map[string][]string{}, exhausted: map[string]string{}}
	for _, ph := range hosts {
		if ph.Name == h {
			in.from = ph
		}
	}
	// The drain loop updates run while the API plans: copy under ops.mu.
	c.ops.mu.Lock()
	in.slotsOut = run.concurrency
	maps.Copy(in.exhausted, run.exhausted)
	for vm, atts := range run.attempts {
		for _, a := range atts {
			if a.failed {
				in.tried[vm] = append(in.tried[vm], a.dst)
			}
		}
	}
	c.ops.mu.Unlock()
	in.vms = drainVMs(p)
	return in
}

// drainVMs is the planner's view of every VM: owner, migration under way,
// migratability, and the predicted migration time.
func drainVMs(p poolState) []drainVM {
	dirty, used := map[string]float64{}, map[string]uint64{}
	for _, h := range p.hosts {
		if h.Usage != nil {
			dirty[h.Name] = h.Usage.DirtyRate
		}
	}
	for _, v := range p.vms {
		if v.Spec != nil && v.Owner != nil {
			used[v.Owner.Host] += v.Spec.MemBytes
		}
	}
	var out []drainVM
	for _, v := range p.vms {
		if v.Spec == nil {
			continue
		}
		d := drainVM{name: v.Name, spec: placementVM(v.Name, *v.Spec)}
		var rate float64
		if v.Owner != nil {
			d.owner = v.Owner.Host
			if u := used[d.owner]; u > 0 {
				rate = dirty[d.owner] * float64(v.Spec.MemBytes) / float64(u)
			}
		}
		d.predicted = predictMigration(v.Spec.MemBytes, rate, AssumedBandwidth)
		if m := v.Migration; m != nil && !m.Phase.Terminal() {
			d.migrating, d.dst = true, m.Dst
		}
		switch {
		case v.Spec.Desired != store.DesiredRunning:
			d.stopping = true
		case v.Owner != nil && v.Status != nil && v.Status.Host == v.Owner.Host && !v.Status.Migratable && v.Status.Reason != "":
			d.notMigratable = v.Status.Reason
		}
		out = append(out, d)
	}
	return out
}

// drainTick advances host h's drain by one step: it notes the attempts
// that ended, cancels migrations past their timeout, requests the
// migrations the planner chose, then ends the drain or records its state.
func (c *Controller) drainTick(ctx context.Context, g store.Guard, p poolState, h store.Host) error {
	now := c.clock.Now()
	d, drev, err := c.st.GetDrain(ctx, h.Name)
	if errors.Is(err, store.ErrNotFound) {
		d, drev = store.Drain{Host: h.Name, OnBlocked: "wait", Started: now.UTC()}, 0
	} else if err != nil {
		return err
	}
	run := c.ops.run(h.Name)
	byName := map[string]store.VM{}
	for _, v := range p.vms {
		byName[v.Name] = v
	}
	c.ops.mu.Lock()
	c.noteEnded(h.Name, run, endedAttempts(run.attempts, byName))
	c.ops.mu.Unlock()
	c.cancelOverdue(ctx, drainTimeouts(now, h.Name, p.vms, run.warned), run)

	plan, starts := c.reserveDrainStarts(ctx, p, h.Name, run, byName, now)
	requested, err := c.requestDrainStarts(ctx, g, h, run, starts)
	plan.inFlight = append(plan.inFlight, requested...)
	if err != nil {
		return err
	}
	fin := planDrainFinish(d, drev, plan, run.stopped, byName, run.lastRec, run.lastWrite, now)
	return c.finishDrain(ctx, g, h, run, fin, now)
}

// attemptEnd is an attempt whose migration ended since the last pass.
type attemptEnd struct {
	vm, err  string
	failed   bool
	failures int // the VM's failed attempts, this one included
	// exhausted is why the VM is blocked when this failure was its last
	// retry ("" while it may retry).
	exhausted string
}

// endedAttempts finds the VMs whose last attempt's migration has ended: a
// failure counts against the VM, which retries on the next-best host
// until it runs out of retries (MaxDrainRetries). Sorted by VM.
func endedAttempts(attempts map[string][]drainAttempt, vms map[string]store.VM) []attemptEnd {
	var out []attemptEnd
	for vm, atts := range attempts {
		a := atts[len(atts)-1]
		v, ok := vms[vm]
		if a.over || !ok || v.Migration == nil || v.Migration.ID != a.id || !v.Migration.Phase.Terminal() {
			continue
		}
		e := attemptEnd{vm: vm}
		if v.Migration.Phase != store.MigrationCommitted {
			e.failed, e.err = true, cmp.Or(v.Migration.Error, string(v.Migration.Phase))
			failures := 1
			for _, x := range atts[:len(atts)-1] {
				if x.failed {
					failures++
				}
			}
			e.failures = failures
			if failures > MaxDrainRetries {
				e.exhausted = fmt.Sprintf("migration failed %d times (last to %s: %s)", failures, a.dst, e.err)
			}
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b attemptEnd) int { return strings.Compare(a.vm, b.vm) })
	return out
}

// noteEnded records ends in run (caller holds ops.mu: the API's drain
// view reads the attempts).
func (c *Controller) noteEnded(host string, run *drainRun, ends []attemptEnd) {
	for _, e := range ends {
		atts := run.attempts[e.vm]
		a := &atts[len(atts)-1]
		a.over, a.failed, a.err = true, e.failed, e.err
		if !e.failed {
			continue
		}
		c.log.Warn("drain: migration failed", "host", host, "vm", e.vm, "dst", a.dst, "migration", a.id, "err", a.err, "failures", e.failures)
		if e.exhausted != "" {
			run.exhausted[e.vm] = e.exhausted
		}
	}
}

// drainCancel is a drain migration to cancel, and why.
type drainCancel struct {
	vm, id, why string
}

// drainTimeouts applies KubeVirt's timeouts to the drain migrations out of
// host at now: one with no progress reported for ProgressTimeout, or
// running longer than CompletionPerGiB per GiB of memory (at least
// ProgressTimeout), is cancelled (the source agent stops it; one past its
// COMMIT completes anyway), which counts as a failed attempt like any
// other. Migrations in warned were handled already.
func drainTimeouts(now time.Time, host string, vms []store.VM, warned map[string]bool) []drainCancel {
	var out []drainCancel
	for _, v := range vms {
		m := v.Migration
		if m == nil || m.Phase.Terminal() || m.Src != host || m.Reason != "drain" || warned[m.ID] || v.Spec == nil || m.Cancel != "" {
			continue
		}
		limit := max(ProgressTimeout, time.Duration(float64(CompletionPerGiB)*float64(v.Spec.MemBytes)/(1<<30)))
		var why string
		switch {
		case now.Sub(m.Updated) > ProgressTimeout:
			why = fmt.Sprintf("drain: no progress reported for %s", now.Sub(m.Updated).Round(time.Second))
		case now.Sub(m.Started) > limit:
			why = fmt.Sprintf("drain: running for %s, over the %s allowed for %d MiB of memory", now.Sub(m.Started).Round(time.Second), limit, v.Spec.MemBytes>>20)
		default:
			continue
		}
		out = append(out, drainCancel{vm: v.Name, id: m.ID, why: why})
	}
	return out
}

// cancelOverdue asks the source agents to cancel the overdue migrations.
func (c *Controller) cancelOverdue(ctx context.Context, cancels []drainCancel, run *drainRun) {
	for _, x := range cancels {
		run.warned[x.id] = true
		c.log.Warn("drain: migration exceeds its timeout; cancelling it", "vm", x.vm, "migration", x.id, "why", x.why)
		if _, _, err := c.requestCancel(ctx, x.vm, x.id, x.why); err != nil {
			c.log.Warn("drain: cannot cancel the migration", "vm", x.vm, "migration", x.id, "err", err)
		}
	}
}

// drainStarted is a planned migration with its reservation held.
type drainStarted struct {
	drainStart
	d decision
	m store.Migration
}

// reserveDrainStarts plans host's drain and holds a reservation for each
// migration it starts (release them with c.release).
func (c *Controller) reserveDrainStarts(ctx context.Context, p poolState, host string, run *drainRun, byName map[string]store.VM, now time.Time) (drainPlan, []drainStarted) {
	clusterSlots, slotsIn := c.slots(ctx)
	c.placeMu.Lock()
	defer c.placeMu.Unlock()
	plan := planDrain(c.drainInputs(p, host, run, clusterSlots, slotsIn))
	var starts []drainStarted
	for _, s := range plan.starts {
		v := byName[s.vm]
		id := newMigrationID()
		dec := decision{host: s.dst, key: "migrate/" + s.vm}
		c.resv[dec.key] = reservation{host: s.dst, vm: s.vm, memBytes: c.cfg.Policy.Need(placementVM(s.vm, *v.Spec)), vcpus: v.Spec.VCPUs, migration: id}
		starts = append(starts, drainStarted{drainStart: s, d: dec, m: store.Migration{ID: id, VM: s.vm, Src: host, Dst: s.dst, Reason: "drain",
			ExpectOwnerRev: v.OwnerRev, Phase: store.MigrationRequested, Started: now.UTC(), Updated: now.UTC()}})
	}
	return plan, starts
}

// requestDrainStarts requests the reserved migrations, each releasing its
// reservation once written, and returns the VMs now migrating. It stops at
// the first ErrNotLeader.
func (c *Controller) requestDrainStarts(ctx context.Context, g store.Guard, h store.Host, run *drainRun, starts []drainStarted) ([]string, error) {
	var requested []string
	for _, s := range starts {
		if err := c.requestDrainStart(ctx, g, h, s); err != nil {
			c.log.Warn("drain: cannot request migration", "vm", s.vm, "dst", s.dst, "err", err)
			c.metrics.migrations.WithLabelValues("failed").Inc()
			if errors.Is(err, store.ErrNotLeader) {
				return requested, err
			}
			continue
		}
		c.metrics.migrations.WithLabelValues("requested").Inc()
		c.ops.mu.Lock()
		run.attempts[s.vm] = append(run.attempts[s.vm], drainAttempt{id: s.m.ID, dst: s.dst})
		attempt := len(run.attempts[s.vm])
		c.ops.mu.Unlock()
		requested = append(requested, s.vm)
		c.log.Info("drain: migration requested", "host", h.Name, "vm", s.vm, "dst", s.dst, "migration", s.m.ID,
			"expect_owner_rev", s.m.ExpectOwnerRev, "attempt", attempt)
	}
	return requested, nil
}

func (c *Controller) requestDrainStart(ctx context.Context, g store.Guard, h store.Host, s drainStarted) error {
	defer c.release(s.d)
	var recRev int64
	if _, r, err := c.st.GetMigration(ctx, s.vm); err == nil {
		recRev = r
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := c.grantMigration(ctx, s.m); err != nil {
		return err
	}
	// Only while the host is still draining as this pass read it: a cancel
	// (or activate) written since changes its state key and stops the
	// migrations not yet requested.
	_, err := c.st.RequestMigrationIf(ctx, s.m, recRev, g, store.HostStateKey(h.Name), h.StateRev)
	return err
}

// drainEnd is how a drain pass ends.
type drainEnd int

const (
	drainGoesOn drainEnd = iota
	drainDone            // every VM is gone: the host enters maintenance
	drainFailed          // every VM left is blocked and on_blocked is fail
)

// drainFinish is what a drain pass writes at its end.
type drainFinish struct {
	rec   store.Drain
	drev  int64 // the record's revision as read (0: none yet)
	end   drainEnd
	stop  []store.VM        // blocked VMs to stop (on_blocked=shutdown), by name
	why   map[string]string // why each VM is blocked
	write bool              // write rec (else it is unchanged, or was written less than a second ago)
}

// planDrainFinish builds the drain record from d (plan order, with the VMs
// that joined the host appended; counts, in flight, blocked with reasons)
// and decides how the pass ends. stopped are the VMs the drain stopped
// already; last and lastWrite the record it wrote last, and when.
func planDrainFinish(d store.Drain, drev int64, plan drainPlan, stopped map[string]bool, vms map[string]store.VM, last store.Drain, lastWrite, now time.Time) drainFinish {
	rec := d
	rec.Queue = slices.Clone(d.Queue)
	owned := map[string]bool{}
	for _, vm := range plan.order {
		owned[vm] = true
		if !slices.Contains(rec.Queue, vm) {
			rec.Queue = append(rec.Queue, vm)
		}
	}
	rec.Total, rec.Done = len(rec.Queue), 0
	for _, vm := range rec.Queue {
		if !owned[vm] {
			rec.Done++
		}
	}
	rec.InFlight = slices.Sorted(slices.Values(plan.inFlight))
	rec.Blocked = blockedList(plan.blocked)
	f := drainFinish{rec: rec, drev: drev, why: plan.blocked}
	switch {
	case len(plan.order) == 0:
		f.end = drainDone
	case len(plan.blocked) > 0 && len(plan.blocked) == len(plan.order) && rec.OnBlocked == "fail":
		f.end = drainFailed
	case len(plan.blocked) > 0 && len(plan.blocked) == len(plan.order) && rec.OnBlocked == "shutdown":
		for _, vm := range slices.Sorted(maps.Keys(plan.blocked)) {
			if v := vms[vm]; !stopped[vm] && v.Spec != nil && v.Spec.Desired == store.DesiredRunning {
				f.stop = append(f.stop, v)
			}
		}
	}
	f.write = drev == 0 || f.end != drainGoesOn || !drainEqual(rec, last) && now.Sub(lastWrite) >= time.Second
	return f
}

// finishDrain carries out f: the host's new state, the VMs to stop, the
// drain record.
func (c *Controller) finishDrain(ctx context.Context, g store.Guard, h store.Host, run *drainRun, f drainFinish, now time.Time) error {
	switch f.end {
	case drainDone:
		if _, err := c.st.SetHostState(ctx, h.Name, store.HostState{State: store.HostMaintenance,
			Reason: fmt.Sprintf("drained: %d VMs moved", f.rec.Done)}, h.StateRev, g); err != nil {
			return fmt.Errorf("set maintenance: %w", err)
		}
		c.log.Info("drain: host in maintenance", "host", h.Name, "vms", f.rec.Total, "took", now.Sub(f.rec.Started).Round(time.Millisecond))
	case drainFailed:
		if _, err := c.st.SetHostState(ctx, h.Name, store.HostState{State: store.HostActive,
			Reason: "drain failed: " + strings.Join(f.rec.Blocked, "; ")}, h.StateRev, g); err != nil {
			return fmt.Errorf("end failed drain: %w", err)
		}
		c.log.Warn("drain failed: every VM left is blocked", "host", h.Name, "blocked", f.rec.Blocked)
		c.ops.dropRun(h.Name)
	}
	for _, v := range f.stop {
		spec := *v.Spec
		spec.Desired = store.DesiredStopped
		if _, err := c.st.PutVMSpec(ctx, v.Name, spec, v.SpecRev, g); err != nil {
			c.log.Warn("drain: cannot stop blocked vm", "vm", v.Name, "err", err)
			continue
		}
		run.stopped[v.Name] = true
		c.log.Info("drain: blocked vm stopped (on_blocked=shutdown)", "host", h.Name, "vm", v.Name, "why", f.why[v.Name])
	}
	if !f.write {
		return nil
	}
	if _, err := c.st.PutDrain(ctx, f.rec, f.drev, g); err != nil {
		return fmt.Errorf("write drain record: %w", err)
	}
	run.lastWrite, run.lastRec = now, f.rec
	return nil
}
func blockedList(b map[string]string) []string {
	out := make([]string, 0, len(b))
	for vm, why := range b {
		out = append(out, vm+": "+why)
	}
	sort.Strings(out)
	return out
}

func drainEqual(a, b store.Drain) bool {
	return a.Total == b.Total && a.Done == b.Done && slices.Equal(a.InFlight, b.InFlight) &&
		slices.Equal(a.Blocked, b.Blocked) && slices.Equal(a.Queue, b.Queue) && a.OnBlocked == b.OnBlocked
}
