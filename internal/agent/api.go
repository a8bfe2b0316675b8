package agent

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
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/godwit-vmm/godwit/internal/promreg"
)

// IncomingRequest is the body of POST /v1/incoming: the source agent asks
// for a VMM that waits for VM by migration MigrationID, guarded by the owner
// key's revision OwnerRev.
type IncomingRequest struct {
	VM          string       `json:"vm"`
	Spec        store.VMSpec `json:"spec"`
	OwnerRev    int64        `json:"owner_rev"`
	MigrationID string       `json:"migration_id"`
	Src         string       `json:"src"`
}

// IncomingReply is the answer: the address the incoming VMM listens on.
type IncomingReply struct {
	Addr string `json:"addr"`
}

// LocalVM is one VMM of this host, as GET /v1/vms lists it.
type LocalVM struct {
	Name        string    `json:"name"`
	PID         int       `json:"pid"`
	Incoming    bool      `json:"incoming,omitempty"`
	MigrationID string    `json:"migration_id,omitempty"`
	Addr        string    `json:"addr,omitempty"`
	Phase       string    `json:"phase,omitempty"` // as last reported to the pool
	Migrating   string    `json:"migrating,omitempty"`
	Started     time.Time `json:"started"`
	APISocket   string    `json:"api_socket"`
	ConsoleLog  string    `json:"console_log"`
	TAP         string    `json:"tap,omitempty"`
	MemBytes    uint64    `json:"mem_bytes"`
	VCPUs       int       `json:"vcpus"`
}

// HostReply is the answer to GET /v1/host.
type HostReply struct {
	Host           string         `json:"host"`
	Info           store.HostInfo `json:"info"`
	Lease          string         `json:"lease,omitempty"` // hex; empty between leases
	DeadlineLeftMs float64        `json:"deadline_left_ms"`
	Renewals       int            `json:"renewals"`
	FenceFile      string         `json:"fence_file"`
	VMs            []LocalVM      `json:"vms"`
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	anyone := pki.AllowRoles(pki.RoleController, pki.RoleHost, pki.RoleUser)
	controller := pki.AllowRoles(pki.RoleController)
	hosts := pki.AllowRoles(pki.RoleHost, pki.RoleController)
	mux.HandleFunc("GET /v1/host", allow(anyone, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.hostReply())
	}))
	mux.HandleFunc("GET /v1/vms", allow(anyone, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.localVMs())
	}))
	mux.HandleFunc("POST /v1/incoming", allow(pki.AllowRoles(pki.RoleHost), func(w http.ResponseWriter, r *http.Request) {
		var req IncomingRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body: %v", err))
			return
		}
		// Only the migration's source host may ask (startIncoming checks
		// the pool's record names it).
		if p, _ := caller(r); p.Name != req.Src {
			writeError(w, http.StatusForbidden, fmt.Errorf("%s may not ask for an incoming VM from host %s", p, req.Src))
			return
		}
		addr, code, err := a.startIncoming(r.Context(), req)
		if err != nil {
			a.log.Warn("incoming refused", "vm", req.VM, "migration", req.MigrationID, "err", err)
			writeError(w, code, err)
			return
		}
		writeJSON(w, http.StatusOK, IncomingReply{Addr: addr})
	}))
	mux.HandleFunc("DELETE /v1/incoming/{vm}", allow(hosts, func(w http.ResponseWriter, r *http.Request) {
		code, err := a.cancelIncoming(r.Context(), r.PathValue("vm"), r.URL.Query().Get("migration"))
		if err != nil {
			writeError(w, code, err)
			return
		}
		w.WriteHeader(code)
	}))
	mux.HandleFunc("GET /v1/vms/{vm}/console", allow(controller, func(w http.ResponseWriter, r *http.Request) {
		off, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("offset %q: want a byte offset", r.URL.Query().Get("offset")))
			return
		}
		chunk, code, err := a.readConsole(r.PathValue("vm"), off)
		if err != nil {
			writeError(w, code, err)
			return
		}
		writeJSON(w, http.StatusOK, chunk)
	}))
	mux.HandleFunc("POST /v1/vms/{vm}/console", allow(controller, func(w http.ResponseWriter, r *http.Request) {
		var in poolapi.ConsoleInput
		if err := json.NewDecoder(io.LimitReader(r.Body, 80<<10)).Decode(&in); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body: %v", err))
			return
		}
		code, err := a.writeConsole(r.Context(), r.PathValue("vm"), in.Text)
		if err != nil {
			writeError(w, code, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.Handle("GET /metrics", allow(anyone, promreg.Handler(a.metrics.reg).ServeHTTP))
	return mux
}

func (a *Agent) hostReply() HostReply {
	a.mu.Lock()
	info, lease := a.info, a.lease
	a.mu.Unlock()
	r := HostReply{Host: a.cfg.Host, Info: info, FenceFile: a.fencePath(), VMs: a.localVMs()}
	if lease != nil {
		s := lease.Stats()
		r.Lease = leaseHex(lease.ID())
		r.DeadlineLeftMs = float64(s.TimeToDeadline) / float64(time.Millisecond)
		r.Renewals = s.Renewals
	}
	return r
}

func (a *Agent) localVMs() []LocalVM {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []LocalVM{}
	for name, p := range a.procs {
		if p.gone {
			continue
		}
		out = append(out, LocalVM{
			Name: name, PID: p.meta.PID, Incoming: p.meta.Incoming, MigrationID: p.meta.MigrationID,
			Addr: p.meta.Addr, Phase: string(a.status[name].Phase), Migrating: a.migrating[name],
			Started: p.meta.Started, APISocket: p.sock, ConsoleLog: filepath.Join(a.vmDir(name), "console.log"),
			TAP: p.meta.TAP, MemBytes: p.meta.MemBytes, VCPUs: p.meta.VCPUs,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// readConsole reads vm's console log on this host from off (negative:
// the last -off bytes), at most poolapi.MaxConsoleChunk bytes. The log
// outlives the VMM, so a VM that stopped or left can still be read.
func (a *Agent) readConsole(vm string, off int64) (poolapi.ConsoleChunk, int, error) {
	out := poolapi.ConsoleChunk{VM: vm, Host: a.cfg.Host}
	if err := store.ValidName("vm", vm); err != nil {
		return out, http.StatusBadRequest, err
	}
	f, err := os.Open(filepath.Join(a.vmDir(vm), "console.log"))
	if errors.Is(err, os.ErrNotExist) {
		return out, http.StatusNotFound, fmt.Errorf("vm %s has no console log on host %s", vm, a.cfg.Host)
	}
	if err != nil {
		return out, http.StatusInternalServerError, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return out, http.StatusInternalServerError, err
	}
	out.Size = st.Size()
	switch {
	case off < 0:
		off = max(0, out.Size+off)
	case off > out.Size:
		off = out.Size // asked past the end: nothing new yet
	}
	out.Offset = off
	out.Data = make([]byte, min(out.Size-off, poolapi.MaxConsoleChunk))
	n, err := f.ReadAt(out.Data, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return out, http.StatusInternalServerError, err
	}
	out.Data = out.Data[:n]
	out.Next = off + int64(n)
	return out, http.StatusOK, nil
}

// writeConsole types text on the serial port of vm's VMM here.
func (a *Agent) writeConsole(ctx context.Context, vm, text string) (int, error) {
	a.mu.Lock()
	p := a.procs[vm]
	running := p != nil && !p.gone && !p.meta.Incoming
	a.mu.Unlock()
	if !running {
		return http.StatusConflict, fmt.Errorf("vm %s does not run on host %s", vm, a.cfg.Host)
	}
	if err := api.NewClient(p.sock).Console(ctx, []byte(text)); err != nil {
		return http.StatusBadGateway, fmt.Errorf("vm %s: %w", vm, err)
	}
	return http.StatusNoContent, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// Client talks to an agent's API.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client for the agent at addr (host:port, or an
// https URL) that proves itself with tlsCfg (a pki.Credential's
// ClientConfig, which should accept only that agent's host).
func NewClient(addr string, tlsCfg *tls.Config) *Client {
	base := addr
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	return &Client{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}}
}

// Host returns the agent's facts, lease and VMs.
func (c *Client) Host(ctx context.Context) (HostReply, error) {
	var r HostReply
	err := c.do(ctx, http.MethodGet, "/v1/host", nil, &r)
	return r, err
}

// VMs lists the agent's VMMs.
func (c *Client) VMs(ctx context.Context) ([]LocalVM, error) {
	var r []LocalVM
	err := c.do(ctx, http.MethodGet, "/v1/vms", nil, &r)
	return r, err
}

// Incoming asks the agent for an incoming VMM and returns where it listens.
func (c *Client) Incoming(ctx context.Context, req IncomingRequest) (IncomingReply, error) {
	var r IncomingReply
	err := c.do(ctx, http.MethodPost, "/v1/incoming", req, &r)
	return r, err
}

// CancelIncoming removes the incoming VMM of migration id (any, if empty).
func (c *Client) CancelIncoming(ctx context.Context, vm, id string) error {
	path := "/v1/incoming/" + url.PathEscape(vm)
	if id != "" {
		path += "?migration=" + url.QueryEscape(id)
	}
	return c.do(ctx, http.MethodDelete, path, nil, nil)
}

// Metrics returns the agent's metrics in Prometheus text format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	var b bytes.Buffer
	err := c.do(ctx, http.MethodGet, "/metrics", nil, &b)
	return b.String(), err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("agent %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("agent %s %s: read reply: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("agent %s: %s (HTTP %d)", c.base, e.Error, resp.StatusCode)
		}
		return fmt.Errorf("agent %s %s %s: %s", c.base, method, path, resp.Status)
	}
	switch o := out.(type) {
	case nil:
	case *bytes.Buffer:
		o.Write(data)
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("agent %s %s: bad reply: %w", method, path, err)
		}
	}
	return nil
}
