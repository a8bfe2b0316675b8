package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/placement"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// Host maintenance: the API of drains (drain_plan.go plans, drain_loop.go
// runs them) and of HA (ha.go).
//
// POST /v1/hosts/{h}/drain sets the host draining (placement takes only
// active hosts, so nothing new lands there), writes drains/<h> with the
// plan — the host's VMs, shortest predicted migration first, the ones
// that cannot move listed as blocked with the reason — and the leader's
// drain loop migrates the rest within the slots. When no VM is owned by
// the host any more it is in maintenance. DELETE cancels (no new
// migrations; those under way finish; host active again), activate
// returns a host to active from any state.

// registerDrainRoutes adds the host-maintenance (drain/activate) and HA
// endpoints.
func (c *Controller) registerDrainRoutes(mux *http.ServeMux) {
	mux.Handle("POST /v1/hosts/{h}/drain", c.handle(c.startDrain))
	mux.Handle("GET /v1/hosts/{h}/drain", c.handle(c.showDrain))
	mux.Handle("GET /v1/hosts/{h}/drain/plan", c.handle(c.planDrainDry))
	mux.Handle("DELETE /v1/hosts/{h}/drain", c.handle(c.cancelDrain))
	mux.Handle("POST /v1/hosts/{h}/activate", c.handle(c.activateHost))
	mux.Handle("GET /v1/ha", c.handle(func(ctx context.Context, _ *http.Request) (int, any, error) {
		return 200, c.haStatus(ctx), nil
	}))
}

func (c *Controller) getHost(ctx context.Context, name string) (store.Host, error) {
	if err := store.ValidName("host", name); err != nil {
		return store.Host{}, badRequest(err.Error())
	}
	h, err := c.st.GetHost(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return h, notFound(fmt.Sprintf("unknown host %s (godwit host list shows the pool's hosts)", name))
	}
	if err != nil {
		return h, unavailable(err)
	}
	return h, nil
}

// guardAndHost returns the leader's write guard and the host the request's
// path names ({h}), checking leadership first.
func (c *Controller) guardAndHost(ctx context.Context, r *http.Request) (store.Guard, store.Host, error) {
	g, err := c.leaderGuard(ctx)
	if err != nil {
		return store.Guard{}, store.Host{}, err
	}
	h, err := c.getHost(ctx, r.PathValue("h"))
	return g, h, err
}

// drainReply answers status with the drain view of host.
func (c *Controller) drainReply(ctx context.Context, status int, host string) (int, any, error) {
	v, err := c.drainView(ctx, host)
	if err != nil {
		return 0, nil, err
	}
	return status, v, nil
}

func hostStateOf(h store.Host) store.HostStateName {
	if h.State == nil {
		return ""
	}
	return h.State.State
}

// drainDefaults checks a drain request and fills in its defaults.
func drainDefaults(req *poolapi.DrainRequest) error {
	switch req.OnBlocked {
	case "":
		req.OnBlocked = poolapi.OnBlockedWait
	case poolapi.OnBlockedWait, poolapi.OnBlockedShutdown, poolapi.OnBlockedFail:
	default:
		return badRequest(fmt.Sprintf("on_blocked %q: want wait, shutdown or fail", req.OnBlocked))
	}
	if req.Concurrency < 0 || req.Concurrency > 16 {
		return badRequest(fmt.Sprintf("concurrency %d: want 1-16 (0: the default, %d)", req.Concurrency, DefaultSlotsOut))
	}
	if req.Concurrency == 0 {
		req.Concurrency = DefaultSlotsOut
	}
	return nil
}

// drainable refuses to drain a host that is not active (or draining
// already: a new request changes the drain's policy).
func drainable(h store.Host) error {
	switch st := hostStateOf(h); st {
	case store.HostActive, store.HostDraining:
		return nil
	case store.HostMaintenance:
		return conflict(fmt.Sprintf("host %s is already in maintenance (godwit host activate %s returns it)", h.Name, h.Name), nil)
	default:
		return conflict(fmt.Sprintf("host %s is %s: only an active host can be drained", h.Name, dash(string(st))), nil)
	}
}

func (c *Controller) startDrain(ctx context.Context, r *http.Request) (int, any, error) {
	var req poolapi.DrainRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	if err := drainDefaults(&req); err != nil {
		return 0, nil, err
	}
	g, h, err := c.guardAndHost(ctx, r)
	if err != nil {
		return 0, nil, err
	}
	if err := drainable(h); err != nil {
		return 0, nil, err
	}
	// The plan: order and blocked VMs as of now.
	p, err := c.readPool(ctx)
	if err != nil {
		return 0, nil, err
	}
	// HA admission, as vSphere checks maintenance mode: a drain that
	// would leave some host's HA VMs without room to restart is refused
	// unless forced. A drain under way may be changed (policy) freely.
	if hostStateOf(h) != store.HostDraining && !req.Force {
		if risk := c.dryRun(p, h, req.Concurrency).HAAtRisk; len(risk) > 0 {
			return 0, nil, conflict(fmt.Sprintf("draining host %s would leave HA without failover room: %s (godwit host drain %s --force drains anyway)",
				h.Name, strings.Join(risk, "; "), h.Name), nil)
		}
	}
	d, drev, err := c.newDrainRecord(ctx, p, h, req)
	if err != nil {
		return 0, nil, err
	}
	if hostStateOf(h) != store.HostDraining {
		if _, err := c.st.SetHostState(ctx, h.Name, store.HostState{State: store.HostDraining, Reason: "drain requested"}, h.StateRev, g); err != nil {
			return 0, nil, c.writeFailed(ctx, "set host "+h.Name+" draining", err)
		}
	}
	if _, err := c.st.PutDrain(ctx, d, drev, g); err != nil {
		return 0, nil, c.writeFailed(ctx, "write drain plan of host "+h.Name, err)
	}
	c.log.Info("drain started", "host", h.Name, "vms", d.Total, "order", d.Queue, "blocked", d.Blocked,
		"concurrency", req.Concurrency, "on_blocked", req.OnBlocked)
	c.ops.poke()
	return c.drainReply(ctx, http.StatusAccepted, h.Name)
}

// newDrainRecord sets the drain's concurrency and returns the record that
// starts it, with its plan as of p, and the revision to write it at; for a
// host already draining, the record as it is with the new policy.
func (c *Controller) newDrainRecord(ctx context.Context, p poolState, h store.Host, req poolapi.DrainRequest) (store.Drain, int64, error) {
	run := c.ops.run(h.Name)
	c.ops.mu.Lock()
	run.concurrency = req.Concurrency
	c.ops.mu.Unlock()
	old, drev, err := c.st.GetDrain(ctx, h.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		drev = 0
	case err != nil:
		return store.Drain{}, 0, unavailable(err)
	}
	if hostStateOf(h) == store.HostDraining && drev != 0 {
		// Already draining: this request changes the policy only.
		old.OnBlocked = req.OnBlocked
		return old, drev, nil
	}
	clusterSlots, slotsIn := c.slots(ctx)
	c.placeMu.Lock()
	plan := planDrain(c.drainInputs(p, h.Name, run, clusterSlots, slotsIn))
	c.placeMu.Unlock()
	return store.Drain{Host: h.Name, OnBlocked: req.OnBlocked, Queue: plan.order, Total: len(plan.order),
		InFlight: plan.inFlight, Blocked: blockedList(plan.blocked), Started: c.clock.Now().UTC()}, drev, nil
}

// planDrainDry is the drain's dry run: the planner with every slot free,
// so that each movable VM gets the destination it would get in order
// (each placed VM's memory counted on its destination for the next).
// It writes nothing.
func (c *Controller) planDrainDry(ctx context.Context, r *http.Request) (int, any, error) {
	h, err := c.getHost(ctx, r.PathValue("h"))
	if err != nil {
		return 0, nil, err
	}
	conc := DefaultSlotsOut
	if q := r.URL.Query().Get("concurrency"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > 16 {
			return 0, nil, badRequest(fmt.Sprintf("concurrency %q: want 1-16", q))
		}
		conc = n
	}
	p, err := c.readPool(ctx)
	if err != nil {
		return 0, nil, err
	}
	return 200, c.dryRun(p, h, conc), nil
}

// dryRun is the drain plan of host h over pool p (see planDrainDry).
func (c *Controller) dryRun(p poolState, h store.Host, conc int) poolapi.DrainPlan {
	const unlimited = 1 << 20
	dry := &drainRun{concurrency: unlimited, attempts: map[string][]drainAttempt{}, exhausted: map[string]string{}}
	c.placeMu.Lock()
	in := c.drainInputs(p, h.Name, dry, unlimited, unlimited)
	c.placeMu.Unlock()
	// A real drain takes the host out of placement first (draining).
	in.hosts = slices.DeleteFunc(in.hosts, func(x placement.Host) bool { return x.Name == h.Name })
	plan := planDrain(in)

	out := poolapi.DrainPlan{Host: h.Name, HostState: string(hostStateOf(h)), Concurrency: conc}
	vms := map[string]drainVM{}
	for _, v := range in.vms {
		vms[v.name] = v
	}
	dst := map[string]string{}
	for _, s := range plan.starts {
		dst[s.vm] = s.dst
	}
	lanes := make([]time.Duration, conc) // list scheduling of the planned moves
	for _, vm := range plan.order {
		row := poolapi.DrainVM{Name: vm, Host: h.Name, PredictedSeconds: vms[vm].predicted.Seconds()}
		switch {
		case plan.blocked[vm] != "":
			row.State, row.Reason = "blocked", plan.blocked[vm]
			out.Blocked++
		case dst[vm] != "":
			row.State, row.Dst = "planned", dst[vm]
			i := slices.Index(lanes, slices.Min(lanes))
			lanes[i] += vms[vm].predicted
		case slices.Contains(plan.inFlight, vm):
			row.State = "migrating"
		case slices.Contains(plan.stopping, vm):
			row.State = "stopping"
		default:
			row.State = "waiting"
		}
		out.VMs = append(out.VMs, row)
	}
	out.PredictedSeconds = slices.Max(lanes).Seconds()

	// HA admission: the pool after the drain, then each host's failure.
	after := slices.Clone(in.hosts)
	at := map[string]int{}
	for i, x := range after {
		at[x.Name] = i
	}
	where := map[string]string{} // VM -> host after the drain
	for _, v := range in.vms {
		where[v.name] = v.owner
	}
	for _, s := range plan.starts {
		where[s.vm] = s.dst
		in.policy.Assign(&after[at[s.dst]], vms[s.vm].spec)
	}
	ha := map[string][]haVM{}
	for _, v := range p.vms {
		if v.Spec == nil || !v.Spec.HA.Restart || v.Spec.Desired != store.DesiredRunning || where[v.Name] == "" {
			continue
		}
		ha[where[v.Name]] = append(ha[where[v.Name]], haVM{spec: placementVM(v.Name, *v.Spec), priority: v.Spec.HA.Priority})
	}
	out.HAAtRisk = haAtRisk(in.policy, in.rules, after, ha)
	return out
}

func (c *Controller) showDrain(ctx context.Context, r *http.Request) (int, any, error) {
	// drainView looks the host up (and answers its errors) itself.
	return c.drainReply(ctx, 200, r.PathValue("h"))
}

func (c *Controller) cancelDrain(ctx context.Context, r *http.Request) (int, any, error) {
	g, h, err := c.guardAndHost(ctx, r)
	if err != nil {
		return 0, nil, err
	}
	if st := hostStateOf(h); st != store.HostDraining {
		return 0, nil, conflict(fmt.Sprintf("host %s is not draining (state %s); nothing to cancel", h.Name, dash(string(st))), nil)
	}
	if _, err := c.st.SetHostState(ctx, h.Name, store.HostState{State: store.HostActive, Reason: "drain cancelled"}, h.StateRev, g); err != nil {
		return 0, nil, c.writeFailed(ctx, "cancel the drain of host "+h.Name, err)
	}
	c.ops.dropRun(h.Name)
	c.log.Info("drain cancelled", "host", h.Name)
	return c.drainReply(ctx, 200, h.Name)
}

func (c *Controller) activateHost(ctx context.Context, r *http.Request) (int, any, error) {
	g, h, err := c.guardAndHost(ctx, r)
	if err != nil {
		return 0, nil, err
	}
	if st := hostStateOf(h); st != store.HostActive {
		reason := "activated"
		if st == store.HostDraining {
			reason = "activated (drain cancelled)"
		}
		if _, err := c.st.SetHostState(ctx, h.Name, store.HostState{State: store.HostActive, Reason: reason}, h.StateRev, g); err != nil {
			return 0, nil, c.writeFailed(ctx, "activate host "+h.Name, err)
		}
		c.ops.dropRun(h.Name)
		c.log.Info("host activated", "host", h.Name, "was", st)
	}
	p, err := c.readPool(ctx)
	if err != nil {
		return 0, nil, err
	}
	for _, v := range c.hostViews(p) {
		if v.Name == h.Name {
			return 200, v, nil
		}
	}
	return 0, nil, notFound("host " + h.Name + " vanished")
}

// drainView joins drains/<h> with the VMs' keys.
func (c *Controller) drainView(ctx context.Context, host string) (poolapi.Drain, error) {
	h, err := c.getHost(ctx, host)
	if err != nil {
		return poolapi.Drain{}, err
	}
	d, _, err := c.st.GetDrain(ctx, host)
	if errors.Is(err, store.ErrNotFound) {
		return poolapi.Drain{}, notFound(fmt.Sprintf("host %s has no drain (godwit host drain %s starts one)", host, host))
	}
	if err != nil {
		return poolapi.Drain{}, unavailable(err)
	}
	p, err := c.readPool(ctx)
	if err != nil {
		return poolapi.Drain{}, err
	}
	out := poolapi.Drain{Host: host, HostState: string(hostStateOf(h)), OnBlocked: d.OnBlocked, Total: d.Total, Done: d.Done,
		InFlight: d.InFlight, Blocked: d.Blocked, Started: d.Started, Concurrency: DefaultSlotsOut}
	if h.State != nil {
		out.StateReason = h.State.Reason
	}
	switch st := hostStateOf(h); {
	case st == store.HostDraining:
		out.Phase = poolapi.DrainRunning
	case st == store.HostMaintenance:
		out.Phase = poolapi.DrainDone
	case strings.HasPrefix(out.StateReason, "drain failed"):
		out.Phase = poolapi.DrainFailed
	default:
		out.Phase = poolapi.DrainCancelled
	}
	c.ops.mu.Lock()
	run := c.ops.drains[host]
	attempts := map[string]int{}
	lastErr := map[string]string{}
	if run != nil {
		out.Concurrency = run.concurrency
		for vm, atts := range run.attempts {
			attempts[vm] = len(atts)
			if a := atts[len(atts)-1]; a.failed {
				lastErr[vm] = a.err
			}
		}
	}
	c.ops.mu.Unlock()
	blocked := map[string]string{}
	for _, b := range d.Blocked {
		vm, why, _ := strings.Cut(b, ": ")
		blocked[vm] = why
	}
	byName := map[string]store.VM{}
	for _, v := range p.vms {
		byName[v.Name] = v
	}
	for _, vm := range d.Queue {
		row := poolapi.DrainVM{Name: vm, Attempts: attempts[vm], Reason: lastErr[vm]}
		v, ok := byName[vm]
		if ok && v.Spec != nil {
			row.PredictedSeconds = predictMigration(v.Spec.MemBytes, 0, AssumedBandwidth).Seconds()
		}
		if v.Owner != nil {
			row.Host = v.Owner.Host
		}
		if m := v.Migration; m != nil && (m.Src == host || m.Dst == row.Host) {
			row.Migration, row.Phase, row.Dst, row.Round, row.Remaining = m.ID, string(m.Phase), m.Dst, m.Round, m.RemainingBytes
		}
		switch {
		case !ok:
			row.State = "deleted"
		case v.Owner == nil && v.Spec.Desired == store.DesiredStopped:
			row.State = "stopped"
		case v.Owner == nil:
			row.State = "pending"
		case v.Owner.Host != host:
			row.State = "done"
		case v.Migration != nil && !v.Migration.Phase.Terminal():
			row.State = "migrating"
		case v.Spec.Desired == store.DesiredStopped:
			row.State = "stopping"
		case blocked[vm] != "":
			row.State, row.Reason = "blocked", blocked[vm]
		default:
			row.State = "queued"
		}
		out.VMs = append(out.VMs, row)
	}
	// Counts from the VMs' keys: once a drain is over (or cancelled) the
	// record is no longer updated, but migrations under way finish.
	out.Done, out.InFlight = 0, nil
	for _, row := range out.VMs {
		switch row.State {
		case "done":
			out.Done++
		case "migrating":
			out.InFlight = append(out.InFlight, row.Name)
		}
	}
	return out, nil
}

func dash(s string) string {
	if s == "" {
		return "unset"
	}
	return s
}
