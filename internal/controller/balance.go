package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/balance"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// Load balancing (package balance does the arithmetic). The controller
// feeds it a fresh linearizable read of the pool:
//
//   - hosts as placement sees them (owned VMs, migrations heading to them,
//     in-flight reservations);
//   - every owned VM: CPU demand by entitlement (vCPUs / VCPURatio; the
//     agents report only host-wide CPU, which on namespace hosts is the
//     whole machine's), its dirty rate as its memory's share of the host's
//     reported dirty rate, and its last migration (a committed record's
//     Src, Dst and time) for the cool-down and the no-undo rule;
//   - VMs that are migrating, stopping, not running or not migratable stay
//     where they are.
//
// Balancing is suspended while any host is draining or an HA VM waits for
// a restart (no owner, desired running, ha.restart), as PLATFORM.md asks.
//
// A move is requested like `godwit vm migrate --to`: placement checks the
// destination again with a reservation held, and the record (reason
// "balance", phase requested) is written guarded by the leader key and by
// the VM's owner revision, so a VM that moved meanwhile is not touched.
//
// Automatic mode (--balance-level 1-5, default off; --balance-every,
// default 60 s) runs a round per period in the leader: package balance's
// Balancer (3 rounds above the threshold, at most one balancing migration
// in flight, 10 min cool-down).

// DefaultBalanceEvery is the automatic balancer's default period.
const DefaultBalanceEvery = 60 * time.Second

// defaultPlanMoves is how many moves a dry run simulates by default.
const defaultPlanMoves = 10

// balancerState is the controller's balancer: the automatic mode's round
// keeper and what its last round did.
type balancerState struct {
	done chan struct{}

	mu    sync.Mutex // serialises rounds and applies
	b     *balance.Balancer
	level int // automatic level, 0: off
	every time.Duration
	last  string
	above int
}

func newBalancerState(cfg Config) *balancerState {
	every := cfg.BalanceEvery
	if every == 0 {
		every = DefaultBalanceEvery
	}
	lvl := cfg.BalanceLevel
	if lvl == 0 {
		lvl = balance.DefaultLevel
	}
	return &balancerState{done: make(chan struct{}), level: cfg.BalanceLevel, every: every,
		b: balance.New(balance.Config{Level: lvl, Policy: cfg.Policy})}
}

func (c *Controller) registerBalanceRoutes(mux *http.ServeMux) {
	mux.Handle("GET /v1/balance", c.handle(c.balancePlan))
	mux.Handle("POST /v1/balance", c.handle(c.balanceApply))
}

// balanceInput builds the balancer's view of p, and says why balancing is
// suspended ("" when it is not).
func (c *Controller) balanceInput(p poolState) (balance.Pool, string) {
	c.placeMu.Lock()
	hosts := c.placementHosts(p, c.resv)
	c.placeMu.Unlock()
	var in balance.Pool
	in.Hosts, in.Rules = hosts, placementRules(p.rules)
	suspended := ""
	dirty, memOn := map[string]float64{}, map[string]float64{}
	for _, h := range p.hosts {
		if h.State != nil && h.State.State == store.HostDraining && suspended == "" {
			suspended = "host " + h.Name + " is draining"
		}
		if h.Usage != nil {
			dirty[h.Name] = h.Usage.DirtyRate
		}
	}
	for _, v := range p.vms {
		if v.Spec != nil && v.Owner != nil {
			memOn[v.Owner.Host] += float64(v.Spec.MemBytes)
		}
	}
	for _, v := range p.vms {
		if v.Spec == nil {
			continue
		}
		if m := v.Migration; m != nil && !m.Phase.Terminal() && m.Reason == "balance" {
			in.InFlight++
		}
		if v.Owner == nil {
			if v.Spec.Desired == store.DesiredRunning && v.Spec.HA.Restart && suspended == "" {
				suspended = "HA vm " + v.Name + " waits for a restart"
			}
			continue
		}
		bv := balance.VM{VM: placementVM(v.Name, *v.Spec), Host: v.Owner.Host}
		if d := dirty[v.Owner.Host]; d > 0 && memOn[v.Owner.Host] > 0 {
			bv.DirtyRate = d * float64(v.Spec.MemBytes) / memOn[v.Owner.Host]
		}
		switch m := v.Migration; {
		case m != nil && !m.Phase.Terminal():
			bv.Fixed = "migrating (" + m.Src + " → " + m.Dst + ")"
		case v.Spec.Desired != store.DesiredRunning:
			bv.Fixed = "being stopped"
		case v.Status == nil || v.Status.Host != v.Owner.Host:
			bv.Fixed = "not reported running by its host yet"
		case v.Status.Phase != store.VMRunning:
			bv.Fixed = "phase " + string(v.Status.Phase)
		case !v.Status.Migratable && v.Status.Reason != "":
			bv.Fixed = "not migratable: " + v.Status.Reason
		}
		if m := v.Migration; m != nil && m.Phase == store.MigrationCommitted {
			bv.LastMove = &balance.Move{VM: v.Name, From: m.Src, To: m.Dst, At: m.Updated}
		}
		in.VMs = append(in.VMs, bv)
	}
	return in, suspended
}

// planLevel is the level of a dry run or apply: asked, else the automatic
// mode's, else 3.
func (c *Controller) planLevel(asked int) (int, error) {
	switch {
	case asked < 0 || asked > 5:
		return 0, badRequest(fmt.Sprintf("level %d: want 1-5", asked))
	case asked > 0:
		return asked, nil
	case c.bal.level > 0:
		return c.bal.level, nil
	}
	return balance.DefaultLevel, nil
}

func (c *Controller) makePlan(ctx context.Context, level, moves int) (poolapi.BalancePlan, balance.Plan, error) {
	p, err := c.readPool(ctx)
	if err != nil {
		return poolapi.BalancePlan{}, balance.Plan{}, err
	}
	in, suspended := c.balanceInput(p)
	pl := balance.MakePlan(balance.Config{Level: level, Policy: c.cfg.Policy}, in, c.clock.Now().UTC(), moves)
	out := poolapi.BalancePlan{Level: pl.Level, Threshold: pl.Threshold, Hosts: pl.Hosts, Imbalance: pl.Imbalance,
		Final: pl.Final, Stop: pl.Stop, Suspended: suspended, Moves: []poolapi.BalanceMove{}}
	out.Moves = append(out.Moves, pl.Moves...)
	out.Loads = pl.Loads
	out.Auto = poolapi.BalanceAuto{Level: c.bal.level, Above: c.bal.above, LastRound: c.bal.last}
	if c.bal.level > 0 {
		out.Auto.Every = c.bal.every.String()
	}
	return out, pl, nil
}

func (c *Controller) balancePlan(ctx context.Context, r *http.Request) (int, any, error) {
	moves := defaultPlanMoves
	if s := r.URL.Query().Get("moves"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return 0, nil, badRequest(fmt.Sprintf("moves %q: want 1-1000", s))
		}
		moves = n
	}
	asked := 0
	if s := r.URL.Query().Get("level"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, nil, badRequest(fmt.Sprintf("level %q: want 1-5", s))
		}
		asked = n
	}
	level, err := c.planLevel(asked)
	if err != nil {
		return 0, nil, err
	}
	c.bal.mu.Lock()
	defer c.bal.mu.Unlock()
	out, _, err := c.makePlan(ctx, level, moves)
	if err != nil {
		return 0, nil, err
	}
	return 200, out, nil
}

func (c *Controller) balanceApply(ctx context.Context, r *http.Request) (int, any, error) {
	var req poolapi.BalanceRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Apply < 1 || req.Apply > 100 {
		return 0, nil, badRequest(fmt.Sprintf("apply %d: want 1-100 moves", req.Apply))
	}
	level, err := c.planLevel(req.Level)
	if err != nil {
		return 0, nil, err
	}
	g, err := c.leaderGuard(ctx)
	if err != nil {
		return 0, nil, err
	}
	c.bal.mu.Lock()
	defer c.bal.mu.Unlock()
	out, pl, err := c.makePlan(ctx, level, req.Apply)
	if err != nil {
		return 0, nil, err
	}
	if out.Suspended != "" {
		return 0, nil, conflict("balancing is suspended while a drain or HA restart runs: "+out.Suspended, nil)
	}
	for i, m := range pl.Moves {
		id, err := c.requestMove(ctx, g, m)
		if err != nil {
			out.Moves[i].Error = err.Error()
			// Later moves were planned assuming this one: stop here.
			out.Moves = out.Moves[:i+1]
			break
		}
		out.Moves[i].Migration = id
		out.Applied++
	}
	return http.StatusAccepted, out, nil
}

// requestMove requests the migration of one planned move, as
// POST /v1/vms/{v}/migrate with --to does, and records it for the
// cool-down.
func (c *Controller) requestMove(ctx context.Context, g store.Guard, mv balance.Move) (string, error) {
	v, err := c.getVM(ctx, mv.VM)
	if err != nil {
		return "", err
	}
	switch {
	case v.Owner == nil || v.Owner.Host != mv.From:
		return "", conflict(fmt.Sprintf("vm %s is no longer on %s", mv.VM, mv.From), nil)
	case v.Migration != nil && !v.Migration.Phase.Terminal():
		return "", conflict(fmt.Sprintf("vm %s is already migrating", mv.VM), nil)
	}
	migID := newMigrationID()
	d, err := c.choose(ctx, v.Name, *v.Spec, mv.To, v.Owner.Host, migID)
	if err != nil {
		c.metrics.migrations.WithLabelValues("refused").Inc()
		return "", err
	}
	defer c.release(d)
	now := c.clock.Now().UTC()
	m := store.Migration{ID: migID, VM: v.Name, Src: v.Owner.Host, Dst: d.host, Reason: "balance",
		ExpectOwnerRev: v.OwnerRev, Phase: store.MigrationRequested, Started: now, Updated: now}
	var recRev int64
	if v.Migration != nil {
		if _, recRev, err = c.st.GetMigration(ctx, v.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
			return "", unavailable(err)
		}
	}
	if err := c.grantMigration(ctx, m); err != nil {
		return "", err
	}
	if _, err := c.st.RequestMigration(ctx, m, recRev, g); err != nil {
		c.metrics.migrations.WithLabelValues("failed").Inc()
		return "", c.writeFailed(ctx, fmt.Sprintf("request migration of vm %s", v.Name), err)
	}
	c.metrics.migrations.WithLabelValues("requested").Inc()
	mv.At = now
	c.bal.b.Record(mv)
	c.log.Info("balancing migration requested", "vm", v.Name, "migration", m.ID, "src", m.Src, "dst", m.Dst,
		"gain", fmt.Sprintf("%.3f", mv.Gain), "imbalance_before", fmt.Sprintf("%.3f", mv.Before), "imbalance_after", fmt.Sprintf("%.3f", mv.After))
	return migID, nil
}

// balanceLoop runs automatic rounds in the leader until ctx ends (it
// returns at once when automatic mode is off).
func (c *Controller) balanceLoop(ctx context.Context) {
	defer close(c.bal.done)
	if c.bal.level == 0 {
		return
	}
	c.log.Info("automatic balancing on", "level", c.bal.level, "every", c.bal.every)
	t := c.clock.NewTicker(c.bal.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		if c.IsLeader() {
			c.balanceRound(ctx)
		}
	}
}

// balanceRound is one automatic round.
func (c *Controller) balanceRound(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	g, err := c.leaderGuard(ctx)
	if err != nil {
		return
	}
	p, err := c.readPool(ctx)
	if err != nil {
		c.log.Warn("balance round: read pool", "err", err)
		return
	}
	c.bal.mu.Lock()
	defer c.bal.mu.Unlock()
	in, suspended := c.balanceInput(p)
	now := c.clock.Now().UTC()
	c.bal.b.Forget(now)
	r := c.bal.b.Round(in, now, suspended)
	c.bal.above = r.Above
	var done []string
	for _, m := range r.Moves {
		if _, err := c.requestMove(ctx, g, m); err != nil {
			c.log.Warn("balance round: move refused", "vm", m.VM, "to", m.To, "err", err)
			done = append(done, fmt.Sprintf("%s → %s refused: %v", m.VM, m.To, err))
			continue
		}
		done = append(done, fmt.Sprintf("%s %s → %s (imbalance %.3f → %.3f)", m.VM, m.From, m.To, m.Before, m.After))
	}
	c.bal.last = fmt.Sprintf("%s: imbalance %.3f", now.Format(time.RFC3339), r.Imbalance)
	if r.Skip != "" {
		c.bal.last += "; " + r.Skip
	}
	if len(done) > 0 {
		c.bal.last += "; moved " + fmt.Sprint(slices.Clip(done))
	}
	c.log.Debug("balance round", "imbalance", r.Imbalance, "above", r.Above, "moves", len(r.Moves), "skip", r.Skip)
}
