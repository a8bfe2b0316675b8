package poolapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Load balancing (package balance; PLATFORM.md §6 "Balancer"):
//
//	GET  /v1/balance[?moves=N&level=L]  BalancePlan: the dry run
//	POST /v1/balance                    BalanceRequest -> BalancePlan with the
//	                                    moves requested (202)
//
// The dry run simulates up to N moves (default 10) greedily: each is the
// best single move once the previous ones are done. POST requests up to
// Apply of them as migrations (reason "balance"), each checked again by
// placement and guarded by the VM's owner revision; it answers 409 while a
// drain or an HA restart runs.

// BalanceMove is one proposed (or requested) migration; package balance
// plans with it too.
type BalanceMove struct {
	VM   string `json:"vm"`
	From string `json:"from"`
	To   string `json:"to"`
	// Mandatory: the VM breaks a must rule where it is (Why says which).
	Mandatory bool   `json:"mandatory,omitempty"`
	Why       string `json:"why,omitempty"`
	// Before and After: the pool's imbalance around the move; Gain is
	// (Before − After)/Before.
	Before float64 `json:"before"`
	After  float64 `json:"after"`
	Gain   float64 `json:"gain"`
	// PredictedSeconds is the predicted migration time.
	PredictedSeconds float64  `json:"predicted_seconds"`
	Penalties        []string `json:"penalties,omitempty"` // should rules it breaks
	// At is when the move was planned or requested (for the balancer's
	// cool-down, a past migration's time).
	At time.Time `json:"at,omitzero"`
	// Migration is the requested migration's ID (POST), Error why the
	// request failed.
	Migration string `json:"migration,omitempty"`
	Error     string `json:"error,omitempty"`
}

// BalanceHostLoad is one host's load: max(CPU, Mem), each a fraction of
// the host's capacity.
type BalanceHostLoad struct {
	Host string  `json:"host"`
	CPU  float64 `json:"cpu"`
	Mem  float64 `json:"mem"`
	Load float64 `json:"load"`
	VMs  int     `json:"vms"`
}

// BalanceAuto is the automatic mode's state.
type BalanceAuto struct {
	Level     int    `json:"level"` // 0: off
	Every     string `json:"every,omitempty"`
	Above     int    `json:"above"`                // consecutive rounds above the threshold
	LastRound string `json:"last_round,omitempty"` // what the last round did
}

// BalancePlan is GET /v1/balance and the answer to POST.
type BalancePlan struct {
	Level     int               `json:"level"`
	Threshold float64           `json:"threshold"`
	Hosts     int               `json:"hosts"` // hosts counted: alive and active
	Imbalance float64           `json:"imbalance"`
	Final     float64           `json:"final"` // after every move of the plan
	Moves     []BalanceMove     `json:"moves"`
	Stop      string            `json:"stop"` // why the plan ends
	Loads     []BalanceHostLoad `json:"loads,omitempty"`
	Suspended string            `json:"suspended,omitempty"` // drain or HA action running
	Applied   int               `json:"applied,omitempty"`   // POST: moves requested
	Auto      BalanceAuto       `json:"auto"`
}

// BalanceRequest is the body of POST /v1/balance.
type BalanceRequest struct {
	Apply int `json:"apply"`           // moves to request now, at least 1
	Level int `json:"level,omitempty"` // 1-5; 0: the controller's (else 3)
}

// BalancePlan runs the dry run: up to moves moves (0: 10) at level (0: the
// controller's).
func (c *Client) BalancePlan(ctx context.Context, moves, level int) (BalancePlan, error) {
	q := url.Values{}
	if moves > 0 {
		q.Set("moves", strconv.Itoa(moves))
	}
	if level > 0 {
		q.Set("level", strconv.Itoa(level))
	}
	path := "/v1/balance"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out BalancePlan
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// Balance requests up to req.Apply balancing moves now.
func (c *Client) Balance(ctx context.Context, req BalanceRequest) (BalancePlan, error) {
	var out BalancePlan
	return out, c.do(ctx, http.MethodPost, "/v1/balance", req, &out)
}
