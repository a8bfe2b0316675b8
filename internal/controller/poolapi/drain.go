package poolapi

// Host maintenance (drain, activate) and HA restart: wire types and client
// calls.
//
// Endpoints:
//
//	POST   /v1/hosts/{h}/drain       DrainRequest -> Drain (202): host draining, plan written
//	GET    /v1/hosts/{h}/drain       Drain (the plan, counts and each VM's progress)
//	GET    /v1/hosts/{h}/drain/plan  DrainPlan: what a drain would do now (?concurrency=N); changes nothing
//	DELETE /v1/hosts/{h}/drain       Drain: stop starting migrations, host back to active
//	POST   /v1/hosts/{h}/activate    Host: back to active (cancels an unfinished drain)
//	GET    /v1/ha                    HAStatus

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// On-blocked policies of a drain: what happens when every VM left on the
// host is blocked (cannot move).
const (
	OnBlockedWait     = "wait"     // keep the host draining until an operator acts (default)
	OnBlockedShutdown = "shutdown" // stop the blocked VMs (desired stopped), then maintenance
	OnBlockedFail     = "fail"     // end the drain: host back to active, reason recorded
)

// DrainRequest is the body of POST /v1/hosts/{h}/drain.
type DrainRequest struct {
	// Concurrency is the number of migrations out of this host at once
	// (default 1 on these 2-core machines; PLATFORM.md's general default
	// is 2). Destinations take one incoming migration each and the pool
	// five in total unless the pool config says otherwise.
	Concurrency int `json:"concurrency,omitempty"`
	// OnBlocked is wait (default), shutdown or fail.
	OnBlocked string `json:"on_blocked,omitempty"`
	// Force drains even when HA admission fails: after the drain some
	// host's HA VMs could not all restart elsewhere (DrainPlan.HAAtRisk).
	Force bool `json:"force,omitempty"`
}

// Drain phases (Drain.Phase), derived from the host's state.
const (
	DrainRunning   = "draining"    // migrations are being started
	DrainDone      = "maintenance" // no VM is owned by the host any more
	DrainCancelled = "cancelled"   // cancelled or activated before the end
	DrainFailed    = "failed"      // on_blocked=fail ended it
)

// DrainVM is one VM of a drain plan.
type DrainVM struct {
	Name string `json:"name"`
	// State: queued, migrating, done, blocked or stopped.
	State string `json:"state"`
	// Host is where the VM is now (its owner), "" if none.
	Host string `json:"host,omitempty"`
	// PredictedSeconds is the model's migration time: memory / bandwidth,
	// stretched by the dirty rate (see package controller).
	PredictedSeconds float64 `json:"predicted_seconds"`
	// Migration is the VM's current or last migration record.
	Migration string `json:"migration,omitempty"`
	Phase     string `json:"phase,omitempty"`
	Dst       string `json:"dst,omitempty"`
	Round     int    `json:"round,omitempty"`
	Remaining uint64 `json:"remaining_bytes,omitempty"`
	Attempts  int    `json:"attempts,omitempty"`
	// Reason says why a VM is blocked (or why its last attempt failed).
	Reason string `json:"reason,omitempty"`
}

// Drain is a host's evacuation: the stored record's counts plus every VM.
type Drain struct {
	Host        string    `json:"host"`
	Phase       string    `json:"phase"`
	HostState   string    `json:"host_state"`
	StateReason string    `json:"state_reason,omitempty"`
	OnBlocked   string    `json:"on_blocked"`
	Concurrency int       `json:"concurrency"`
	Total       int       `json:"total"`
	Done        int       `json:"done"`
	InFlight    []string  `json:"in_flight,omitempty"`
	Blocked     []string  `json:"blocked,omitempty"` // "vm: reason"
	Started     time.Time `json:"started"`
	VMs         []DrainVM `json:"vms"`
}

// HARestart is one HA restart under way.
type HARestart struct {
	VM       string    `json:"vm"`
	Host     string    `json:"host"`
	Priority int       `json:"priority"`
	Attempt  int       `json:"attempt"`
	Since    time.Time `json:"since"`
}

// HAStatus is GET /v1/ha: whether HA restart is active, why, and what it
// is doing.
type HAStatus struct {
	Active bool `json:"active"`
	// Reason explains Active: the etcd member count, or --ha-force.
	Reason      string `json:"reason"`
	EtcdMembers int    `json:"etcd_members"`
	Forced      bool   `json:"forced"`
	// Restarting lists placements waiting for their VM to run.
	Restarting []HARestart `json:"restarting,omitempty"`
	// Errors: VMs HA gave up on (both attempts failed), with the reason.
	Errors map[string]string `json:"errors,omitempty"`
}

// DrainHost starts draining host h.
func (c *Client) DrainHost(ctx context.Context, h string, req DrainRequest) (Drain, error) {
	var out Drain
	return out, c.do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(h)+"/drain", req, &out)
}

// HostDrain reads host h's drain.
func (c *Client) HostDrain(ctx context.Context, h string) (Drain, error) {
	var out Drain
	return out, c.do(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(h)+"/drain", nil, &out)
}

// DrainPlan is a drain's dry run: where each of the host's VMs would go
// now, in the order the drain would move them, and which cannot move and
// why. Nothing is reserved: the pool may change before a real drain.
type DrainPlan struct {
	Host        string `json:"host"`
	HostState   string `json:"host_state"`
	Concurrency int    `json:"concurrency"`
	// VMs: State "planned" (Dst set), "blocked" (Reason set),
	// "migrating" (already under way) or "stopping".
	VMs []DrainVM `json:"vms"`
	// PredictedSeconds is the model's drain time: the planned VMs'
	// predicted migrations run in this order, Concurrency at a time.
	PredictedSeconds float64 `json:"predicted_seconds"`
	Blocked          int     `json:"blocked"`
	// HAAtRisk: HA admission, as vSphere checks it before maintenance.
	// With the pool as it would be after the drain, each host whose HA
	// VMs could not all restart on the others if it failed.
	HAAtRisk []string `json:"ha_at_risk,omitempty"`
}

// PlanDrain runs host h's drain as a dry run (concurrency 0: the default).
func (c *Client) PlanDrain(ctx context.Context, h string, concurrency int) (DrainPlan, error) {
	var out DrainPlan
	path := "/v1/hosts/" + url.PathEscape(h) + "/drain/plan"
	if concurrency > 0 {
		path += "?concurrency=" + strconv.Itoa(concurrency)
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// CancelDrain cancels host h's drain: no new migrations, host active.
func (c *Client) CancelDrain(ctx context.Context, h string) (Drain, error) {
	var out Drain
	return out, c.do(ctx, http.MethodDelete, "/v1/hosts/"+url.PathEscape(h)+"/drain", nil, &out)
}

// ActivateHost returns host h to active.
func (c *Client) ActivateHost(ctx context.Context, h string) (Host, error) {
	var out Host
	return out, c.do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(h)+"/activate", nil, &out)
}

// HA reads the HA restart status.
func (c *Client) HA(ctx context.Context) (HAStatus, error) {
	var out HAStatus
	return out, c.do(ctx, http.MethodGet, "/v1/ha", nil, &out)
}
