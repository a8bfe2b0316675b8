// Package poolapi is the controller's HTTP/JSON API: the wire types and a
// client. The godwit CLI (host, vm, cluster commands) uses this client, as
// should any other program.
//
// The API is HTTPS with client certificates only: a client presents a
// certificate of the pool's CA (role user or controller; package pki), and
// the controller refuses any other at the TLS handshake. Errors come back
// as an Error object with an HTTP status:
//
//	400 bad_request    the request is malformed; the message says which field
//	404 not_found      unknown host, VM or migration
//	409 conflict       refused: no host fits (Reasons per host), the VM is in
//	                   the wrong state, the spec changed under the request
//	503 not_leader     this controller follows; Leader and LeaderURL name the
//	                   leader (the Client retries there once by itself)
//	503 unavailable    etcd did not answer, or a write's outcome is unknown
//
// Endpoints:
//
//	GET    /v1/hosts                 []Host
//	GET    /v1/hosts/{h}             Host (with its VMs)
//	POST   /v1/vms                   CreateVMRequest -> VM (201)
//	GET    /v1/vms                   []VM
//	GET    /v1/vms/{v}               VM
//	POST   /v1/vms/{v}/start         VM (desired running; placed if it has no host)
//	POST   /v1/vms/{v}/stop          VM (desired stopped; the agent stops it)
//	DELETE /v1/vms/{v}               204, only when stopped and released
//	POST   /v1/vms/{v}/migrate       MigrateRequest -> Migration (202)
//	GET    /v1/migrations/{v}        Migration
//	PATCH  /v1/migrations/{v}        MigrationLimits -> Migration (202; new limits for its source)
//	DELETE /v1/migrations/{v}        Migration (202; its cancel asked for)
//	GET    /v1/cluster               Cluster
//	(host maintenance and HA: see drain.go)
//	GET    /metrics                  Prometheus text format
//
// Who may import it: the CLI, the controller, tests and other clients. It
// imports only package store (for the stored value types).
package poolapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

// Error codes.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeNotLeader    = "not_leader"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
)

// Error is every error the API returns.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"error"`
	// Leader and LeaderURL: with CodeNotLeader, who leads now ("" if nobody).
	Leader    string `json:"leader,omitempty"`
	LeaderURL string `json:"leader_url,omitempty"`
	// Reasons: with a refused placement or migration, why each host failed.
	Reasons map[string][]string `json:"reasons,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Host is one host as the API shows it.
type Host struct {
	Name        string   `json:"name"`
	State       string   `json:"state"` // active | draining | maintenance | failed
	StateReason string   `json:"state_reason,omitempty"`
	Alive       bool     `json:"alive"` // holds its lease
	Addr        string   `json:"addr,omitempty"`
	Accel       string   `json:"accel,omitempty"` // kvm or emu
	CPUIDHash   string   `json:"cpuid_hash,omitempty"`
	TSCKHz      uint64   `json:"tsc_khz,omitempty"`
	CPUs        int      `json:"cpus"`
	MemBytes    uint64   `json:"mem_bytes"`
	StorageIDs  []string `json:"storage_ids,omitempty"`
	Networks    []string `json:"networks,omitempty"`
	KVMCaps     []string `json:"kvm_caps,omitempty"`
	Agent       string   `json:"agent,omitempty"`
	// AllocVCPUs and AllocMemBytes are what placement counts against the
	// host: owned VMs, incoming migrations (memory includes the per-VM
	// overhead).
	AllocVCPUs    int              `json:"alloc_vcpus"`
	AllocMemBytes uint64           `json:"alloc_mem_bytes"`
	VMs           []string         `json:"vms,omitempty"`
	Usage         *store.HostUsage `json:"usage,omitempty"`
}

// VM phases the API adds to the agent's (store.VMPhase).
const (
	PhasePending   = "pending"   // desired running, no host owns it (placing, or its host was lost)
	PhaseScheduled = "scheduled" // owned by a host whose agent has not reported yet
	PhaseStopped   = "stopped"   // desired stopped and released
	PhaseStopping  = "stopping"  // desired stopped, still owned
)

// VM is one VM as the API shows it.
type VM struct {
	Name     string       `json:"name"`
	Spec     store.VMSpec `json:"spec"`
	SpecRev  int64        `json:"spec_rev"`
	Host     string       `json:"host,omitempty"`      // owner; "" when none
	OwnerRev int64        `json:"owner_rev,omitempty"` // fencing epoch
	Lease    int64        `json:"lease,omitempty"`
	// Phase: the agent's report if it is the owner's, else one of the
	// Phase* constants above.
	Phase     string           `json:"phase"`
	Status    *store.VMStatus  `json:"status,omitempty"`
	Migration *store.Migration `json:"migration,omitempty"`
}

// CreateVMRequest is the body of POST /v1/vms. Spec.Desired defaults to
// running; Host, if set, names the host instead of letting placement choose
// (it is checked the same way).
type CreateVMRequest struct {
	Name string       `json:"name"`
	Spec store.VMSpec `json:"spec"`
	Host string       `json:"host,omitempty"`
}

// MigrateRequest is the body of POST /v1/vms/{v}/migrate. To empty lets
// placement choose.
type MigrateRequest struct {
	To         string  `json:"to,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	Bandwidth  uint64  `json:"bandwidth,omitempty"`   // bytes/s; 0: no cap
	DowntimeMs float64 `json:"downtime_ms,omitempty"` // downtime target; 0: the VMM's default
}

// MigrationLimits is the body of PATCH /v1/migrations/{v}: new limits for
// the migration under way (nil: unchanged).
type MigrationLimits struct {
	Bandwidth  *uint64  `json:"bandwidth,omitempty"`
	DowntimeMs *float64 `json:"downtime_ms,omitempty"`
}

// SetMigrationLimits changes the limits of vm's migration under way; the
// source agent passes them to its VMM within about a second.
func (c *Client) SetMigrationLimits(ctx context.Context, vm string, l MigrationLimits) (store.Migration, error) {
	var out store.Migration
	return out, c.do(ctx, http.MethodPatch, "/v1/migrations/"+url.PathEscape(vm), l, &out)
}

// Member is one controller.
type Member struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Leader bool   `json:"leader"`
}

// Cluster is GET /v1/cluster.
type Cluster struct {
	Pool      string   `json:"pool"`
	This      string   `json:"this"` // the controller that answered
	Leading   bool     `json:"leading"`
	Leader    string   `json:"leader"`
	LeaderURL string   `json:"leader_url,omitempty"`
	Members   []Member `json:"members"`
	Etcd      []string `json:"etcd"`
	Embedded  bool     `json:"etcd_embedded"`
	Hosts     struct {
		Total   int            `json:"total"`
		Up      int            `json:"up"`
		Lost    int            `json:"lost"`
		ByState map[string]int `json:"by_state"`
	} `json:"hosts"`
	VMs struct {
		Total   int            `json:"total"`
		ByPhase map[string]int `json:"by_phase"`
	} `json:"vms"`
	Migrations struct {
		InFlight int            `json:"in_flight"`
		ByPhase  map[string]int `json:"by_phase"`
	} `json:"migrations"`
	// HA says whether HA restart is active and why (see drain.go).
	HA *HAStatus `json:"ha,omitempty"`
}

// Client talks to a controller. It is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client for the controller at base (https://host:port)
// that proves itself with tlsCfg (a pki.Credential's ClientConfig).
func NewClient(base string, tlsCfg *tls.Config) *Client {
	return &Client{base: strings.TrimRight(base, "/"),
		hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}}}
}

// Hosts lists every host.
func (c *Client) Hosts(ctx context.Context) ([]Host, error) {
	var out []Host
	return out, c.do(ctx, http.MethodGet, "/v1/hosts", nil, &out)
}

// Host shows one host.
func (c *Client) Host(ctx context.Context, name string) (Host, error) {
	var out Host
	return out, c.do(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(name), nil, &out)
}

// CreateVM creates (and, unless Spec.Desired is stopped, places) a VM.
func (c *Client) CreateVM(ctx context.Context, req CreateVMRequest) (VM, error) {
	var out VM
	return out, c.do(ctx, http.MethodPost, "/v1/vms", req, &out)
}

// VMs lists every VM.
func (c *Client) VMs(ctx context.Context) ([]VM, error) {
	var out []VM
	return out, c.do(ctx, http.MethodGet, "/v1/vms", nil, &out)
}

// VM shows one VM.
func (c *Client) VM(ctx context.Context, name string) (VM, error) {
	var out VM
	return out, c.do(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(name), nil, &out)
}

// StartVM sets the VM's desired state to running (placing it if needed).
func (c *Client) StartVM(ctx context.Context, name string) (VM, error) {
	var out VM
	return out, c.do(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(name)+"/start", nil, &out)
}

// StopVM sets the VM's desired state to stopped.
func (c *Client) StopVM(ctx context.Context, name string) (VM, error) {
	var out VM
	return out, c.do(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(name)+"/stop", nil, &out)
}

// DeleteVM deletes a stopped VM.
func (c *Client) DeleteVM(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/vms/"+url.PathEscape(name), nil, nil)
}

// MigrateVM requests a live migration and returns its record.
func (c *Client) MigrateVM(ctx context.Context, name string, req MigrateRequest) (store.Migration, error) {
	var out store.Migration
	return out, c.do(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(name)+"/migrate", req, &out)
}

// Migration reads the VM's current (or last) migration record.
func (c *Client) Migration(ctx context.Context, vm string) (store.Migration, error) {
	var out store.Migration
	return out, c.do(ctx, http.MethodGet, "/v1/migrations/"+url.PathEscape(vm), nil, &out)
}

// CancelMigration asks for the VM's migration under way to be cancelled.
// The source agent stops it within about a second; one past its COMMIT
// completes anyway. The answer is the record with its cancel asked for.
func (c *Client) CancelMigration(ctx context.Context, vm string) (store.Migration, error) {
	var out store.Migration
	return out, c.do(ctx, http.MethodDelete, "/v1/migrations/"+url.PathEscape(vm), nil, &out)
}

// Cluster reads the pool's summary.
func (c *Client) Cluster(ctx context.Context) (Cluster, error) {
	var out Cluster
	return out, c.do(ctx, http.MethodGet, "/v1/cluster", nil, &out)
}

// do sends one request; on "not the leader" with a known leader URL it
// retries once there.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	err := c.send(ctx, c.base, method, path, body, out)
	var e *Error
	if errors.As(err, &e) && e.Code == CodeNotLeader && e.LeaderURL != "" && strings.TrimRight(e.LeaderURL, "/") != c.base {
		return c.send(ctx, strings.TrimRight(e.LeaderURL, "/"), method, path, body, out)
	}
	return err
}

func (c *Client) send(ctx context.Context, base, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return fmt.Errorf("controller %s: %w", base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil && isTLSRefusal(err) {
		return fmt.Errorf("controller %s: the TLS handshake failed (a revoked, expired or foreign certificate on either side, or one whose role may not call it): %w", base, err)
	}
	if err != nil {
		return fmt.Errorf("controller %s unreachable (is godwit controller running? --controller or $GODWIT_CONTROLLER names it): %w", base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("controller %s: read answer: %w", base, err)
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Code, e.Message = CodeInternal, fmt.Sprintf("controller %s: %s: %s", base, resp.Status, strings.TrimSpace(string(data)))
		}
		return e
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("controller %s: decode answer to %s %s: %w", base, method, path, err)
	}
	return nil
}

// isTLSRefusal reports whether err is a refused TLS handshake, by either
// side, rather than a controller that cannot be reached.
func isTLSRefusal(err error) bool {
	var alert tls.AlertError
	var cv *tls.CertificateVerificationError
	return errors.As(err, &alert) || errors.As(err, &cv) || strings.Contains(err.Error(), "pki: ") || strings.Contains(err.Error(), "remote error: tls")
}
