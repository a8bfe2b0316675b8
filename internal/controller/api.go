package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// apiError is an error with its HTTP status, sent as a poolapi.Error.
type apiError struct {
	status    int
	code      string
	msg       string
	reasons   map[string][]string
	leader    string
	leaderURL string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(msg string) error {
	return &apiError{status: 400, code: poolapi.CodeBadRequest, msg: msg}
}
func notFound(msg string) error { return &apiError{status: 404, code: poolapi.CodeNotFound, msg: msg} }
func conflict(msg string, reasons map[string][]string) error {
	return &apiError{status: 409, code: poolapi.CodeConflict, msg: msg, reasons: reasons}
}
func unavailable(err error) error {
	return &apiError{status: 503, code: poolapi.CodeUnavailable, msg: fmt.Sprintf("etcd: %v (retry when etcd has quorum)", err)}
}

// notLeader names the leader, if there is one.
func (c *Controller) notLeader(ctx context.Context) error {
	id, url := c.Leader(ctx)
	e := &apiError{status: 503, code: poolapi.CodeNotLeader, leader: id, leaderURL: url}
	switch {
	case id == "":
		e.msg = fmt.Sprintf("controller %s is not the leader and no leader is elected yet; retry in a few seconds", c.cfg.ID)
	case url != "":
		e.msg = fmt.Sprintf("controller %s is not the leader; leader is %s at %s (send writes there)", c.cfg.ID, id, url)
	default:
		e.msg = fmt.Sprintf("controller %s is not the leader; leader is %s", c.cfg.ID, id)
	}
	return e
}

// writeFailed maps a store write error to an API error.
func (c *Controller) writeFailed(ctx context.Context, what string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotLeader):
		c.log.Warn("guarded write refused: deposed", "what", what)
		return c.notLeader(ctx)
	case errors.Is(err, store.ErrOutcomeUnknown):
		return &apiError{status: 503, code: poolapi.CodeUnavailable, msg: fmt.Sprintf("%s: etcd did not answer, the write may or may not have landed; check with godwit vm show before retrying: %v", what, err)}
	case errors.Is(err, store.ErrLeaseNotFound):
		return conflict(fmt.Sprintf("%s: the host's lease expired meanwhile (host lost); retry to place elsewhere", what), nil)
	case errors.Is(err, store.ErrSpecChanged), errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrOwnerChanged), errors.Is(err, store.ErrOwned):
		return conflict(fmt.Sprintf("%s: the VM changed meanwhile (%v); look again and retry", what, err), nil)
	}
	return &apiError{status: 500, code: poolapi.CodeInternal, msg: fmt.Sprintf("%s: %v", what, err)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var e *apiError
	if !errors.As(err, &e) {
		e = &apiError{status: 500, code: poolapi.CodeInternal, msg: err.Error()}
	}
	writeJSON(w, e.status, poolapi.Error{Code: e.code, Message: e.msg, Leader: e.leader, LeaderURL: e.leaderURL, Reasons: e.reasons})
}

// handle adapts a handler that returns (status, body, error).
func (c *Controller) handle(f func(ctx context.Context, r *http.Request) (int, any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		status, body, err := f(ctx, r)
		if err != nil {
			var e *apiError
			if errors.As(err, &e) && e.status >= 500 {
				c.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeError(w, err)
			return
		}
		if body == nil {
			w.WriteHeader(status)
			return
		}
		writeJSON(w, status, body)
	}
}

func (c *Controller) routes(mux *http.ServeMux) {
	mux.Handle("GET /v1/hosts", c.handle(c.listHosts))
	mux.Handle("GET /v1/hosts/{h}", c.handle(c.showHost))
	mux.Handle("POST /v1/vms", c.handle(c.createVM))
	mux.Handle("GET /v1/vms", c.handle(c.listVMs))
	mux.Handle("GET /v1/vms/{v}", c.handle(c.showVM))
	mux.Handle("POST /v1/vms/{v}/start", c.handle(c.startVM))
	mux.Handle("POST /v1/vms/{v}/stop", c.handle(c.stopVM))
	mux.Handle("DELETE /v1/vms/{v}", c.handle(c.deleteVM))
	mux.Handle("POST /v1/vms/{v}/migrate", c.handle(c.migrateVM))
	mux.Handle("GET /v1/migrations/{v}", c.handle(c.showMigration))
	mux.Handle("DELETE /v1/migrations/{v}", c.handle(c.cancelMigration))
	mux.Handle("PATCH /v1/migrations/{v}", c.handle(c.setMigrationLimits))
	mux.Handle("GET /v1/vms/{v}/console", c.handle(c.consoleRead))   // console.go
	mux.Handle("POST /v1/vms/{v}/console", c.handle(c.consoleWrite)) // console.go
	mux.Handle("GET /v1/cluster", c.handle(c.cluster))
	mux.Handle("GET /metrics", c.metrics.handler())
	c.registerDrainRoutes(mux)   // drain.go: host maintenance and HA restart
	c.registerBalanceRoutes(mux) // balance.go: load balancing
	mux.Handle("/", c.handle(func(_ context.Context, r *http.Request) (int, any, error) {
		return 0, nil, notFound(fmt.Sprintf("no such endpoint %s %s (see package poolapi for the API)", r.Method, r.URL.Path))
	}))
}

// ---- hosts ----

func (c *Controller) hostViews(p poolState) []poolapi.Host {
	alloc := c.placementHosts(p, nil)
	out := make([]poolapi.Host, 0, len(p.hosts))
	for i, h := range p.hosts {
		v := poolapi.Host{Name: h.Name, Alive: h.Alive != nil, Usage: h.Usage,
			AllocVCPUs: alloc[i].AllocVCPUs, AllocMemBytes: alloc[i].AllocMemBytes, VMs: alloc[i].VMs}
		if h.State != nil {
			v.State, v.StateReason = string(h.State.State), h.State.Reason
		}
		if in := h.Info; in != nil {
			v.Addr, v.Accel, v.CPUIDHash, v.TSCKHz, v.CPUs, v.MemBytes = in.Addr, accelOf(in), in.CPUIDHash, in.TSCKHz, in.CPUs, in.MemBytes
			v.StorageIDs, v.Networks, v.KVMCaps, v.Agent = in.StorageIDs, in.Networks, in.KVMCaps, in.Agent
		}
		out = append(out, v)
	}
	return out
}

func (c *Controller) listHosts(ctx context.Context, _ *http.Request) (int, any, error) {
	p, err := c.readPool(ctx)
	if err != nil {
		return 0, nil, err
	}
	return 200, c.hostViews(p), nil
}

func (c *Controller) showHost(ctx context.Context, r *http.Request) (int, any, error) {
	name := r.PathValue("h")
	p, err := c.readPool(ctx)
	if err != nil {
		return 0, nil, err
	}
	for _, h := range c.hostViews(p) {
		if h.Name == name {
			return 200, h, nil
		}
	}
	return 0, nil, notFound(fmt.Sprintf("unknown host %s (godwit host list shows the pool's hosts)", name))
}

// ---- VMs ----

// vmView derives the API's view of a stored VM.
func vmView(v store.VM) poolapi.VM {
	out := poolapi.VM{Name: v.Name, SpecRev: v.SpecRev, OwnerRev: v.OwnerRev, Status: v.Status, Migration: v.Migration}
	if v.Spec != nil {
		out.Spec = *v.Spec
	}
	if v.Owner != nil {
		out.Host, out.Lease = v.Owner.Host, v.Owner.Lease
	}
	switch {
	case v.Owner == nil && out.Spec.Desired == store.DesiredStopped:
		out.Phase = poolapi.PhaseStopped
	case v.Owner == nil:
		out.Phase = poolapi.PhasePending
	case v.Status != nil && v.Status.Host == v.Owner.Host:
		out.Phase = string(v.Status.Phase)
	case out.Spec.Desired == store.DesiredStopped:
		out.Phase = poolapi.PhaseStopping
	default:
		out.Phase = poolapi.PhaseScheduled
	}
	return out
}

func (c *Controller) getVM(ctx context.Context, name string) (store.VM, error) {
	if err := store.ValidName("vm", name); err != nil {
		return store.VM{}, badRequest(err.Error())
	}
	v, err := c.st.GetVM(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return v, notFound(fmt.Sprintf("unknown vm %s (godwit vm list shows the pool's VMs)", name))
	}
	if err != nil {
		return v, unavailable(err)
	}
	return v, nil
}

// guardAndVM returns the leader's write guard and the VM the request's path
// names ({v}), checking leadership first.
func (c *Controller) guardAndVM(ctx context.Context, r *http.Request) (store.Guard, store.VM, error) {
	g, err := c.leaderGuard(ctx)
	if err != nil {
		return store.Guard{}, store.VM{}, err
	}
	v, err := c.getVM(ctx, r.PathValue("v"))
	return g, v, err
}

// vmReply reads the VM name again and answers status with its view.
func (c *Controller) vmReply(ctx context.Context, status int, name string) (int, any, error) {
	v, err := c.getVM(ctx, name)
	if err != nil {
		return 0, nil, err
	}
	return status, vmView(v), nil
}

func (c *Controller) listVMs(ctx context.Context, _ *http.Request) (int, any, error) {
	vms, _, err := c.st.ListVMs(ctx)
	if err != nil {
		return 0, nil, unavailable(err)
	}
	out := make([]poolapi.VM, 0, len(vms))
	for _, v := range vms {
		if v.Spec != nil {
			out = append(out, vmView(v))
		}
	}
	return 200, out, nil
}

func (c *Controller) showVM(ctx context.Context, r *http.Request) (int, any, error) {
	return c.vmReply(ctx, 200, r.PathValue("v"))
}

// validateSpec checks a new VM's spec and fills defaults (desired running,
// MACs derived from the VM name).
func validateSpec(name string, s *store.VMSpec) error {
	if err := store.ValidName("vm", name); err != nil {
		return badRequest(err.Error())
	}
	if err := s.CheckShape(name); err != nil {
		// The checks the VMM makes: the pool stores no VM that cannot run.
		return badRequest(fmt.Sprintf("vm %s: %v", name, err))
	}
	if s.Kernel == "" {
		return badRequest(fmt.Sprintf("vm %s: no kernel: give the guest kernel's path (the same on every host)", name))
	}
	switch s.Desired {
	case "":
		s.Desired = store.DesiredRunning
	case store.DesiredRunning, store.DesiredStopped:
	default:
		return badRequest(fmt.Sprintf("vm %s: desired %q: want running or stopped", name, s.Desired))
	}
	if len(s.Disks) > 1 || len(s.NICs) > 1 {
		return badRequest(fmt.Sprintf("vm %s: %d disks and %d NICs: a Godwit VMM has at most one of each", name, len(s.Disks), len(s.NICs)))
	}
	for i, d := range s.Disks {
		if d.Path == "" || d.StorageID == "" {
			return badRequest(fmt.Sprintf("vm %s: disk %d needs a path and a storage_id (the shared storage hosts report)", name, i))
		}
	}
	for i := range s.NICs {
		n := &s.NICs[i]
		if n.Network == "" {
			return badRequest(fmt.Sprintf("vm %s: nic %d needs a network (a bridge the hosts report)", name, i))
		}
		if n.MAC == "" {
			n.MAC = deriveMAC(name, i)
		} else if _, err := net.ParseMAC(n.MAC); err != nil {
			return badRequest(fmt.Sprintf("vm %s: nic %d: mac %q: %v", name, i, n.MAC, err))
		}
	}
	return nil
}

// deriveMAC gives NIC i of a VM a stable, locally administered MAC in
// QEMU's 52:54:00 range, so that it survives migrations and restarts.
func deriveMAC(vm string, i int) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", vm, i)
	s := h.Sum32()
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(s>>16), byte(s>>8), byte(s))
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return badRequest(fmt.Sprintf("request body: %v", err))
	}
	return nil
}

func (c *Controller) createVM(ctx context.Context, r *http.Request) (int, any, error) {
	var req poolapi.CreateVMRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	if err := validateSpec(req.Name, &req.Spec); err != nil {
		return 0, nil, err
	}
	g, err := c.leaderGuard(ctx)
	if err != nil {
		return 0, nil, err
	}
	if _, err := c.st.GetVM(ctx, req.Name); err == nil {
		return 0, nil, conflict(fmt.Sprintf("vm %s exists (delete it first, or pick another name)", req.Name), nil)
	} else if !errors.Is(err, store.ErrNotFound) {
		return 0, nil, unavailable(err)
	}
	log := c.log.With("vm", req.Name)
	if req.Spec.Desired == store.DesiredStopped {
		if req.Host != "" {
			return 0, nil, badRequest(fmt.Sprintf("vm %s: a host is chosen when the VM starts; drop --host for a stopped VM", req.Name))
		}
		if _, err := c.st.PutVMSpec(ctx, req.Name, req.Spec, 0, g); err != nil {
			return 0, nil, c.writeFailed(ctx, "create vm "+req.Name, err)
		}
		log.Info("vm created (stopped)")
	} else if err := c.place(ctx, req.Name, req.Spec, 0, req.Host); err != nil {
		return 0, nil, err
	}
	return c.vmReply(ctx, http.StatusCreated, req.Name)
}

// place chooses a host (or checks explicit), then writes the spec (CAS on
// specRev) and the owner bound to the host's lease in one guarded Txn.
func (c *Controller) place(ctx context.Context, name string, spec store.VMSpec, specRev int64, explicit string) error {
	g, err := c.leaderGuard(ctx)
	if err != nil {
		return err
	}
	d, err := c.choose(ctx, name, spec, explicit, "", "")
	if err != nil {
		c.metrics.placements.WithLabelValues("refused").Inc()
		c.log.Info("placement refused", "vm", name, "err", err)
		return err
	}
	defer c.release(d)
	if err := c.grantVM(ctx, d.host, name); err != nil {
		return err
	}
	rev, err := c.st.PlaceVM(ctx, name, spec, specRev, d.host, d.lease, g)
	if err != nil {
		c.metrics.placements.WithLabelValues("failed").Inc()
		return c.writeFailed(ctx, fmt.Sprintf("place vm %s on %s", name, d.host), err)
	}
	c.metrics.placements.WithLabelValues("placed").Inc()
	c.log.Info("vm placed", "vm", name, "host", d.host, "owner_rev", rev)
	return nil
}

func (c *Controller) startVM(ctx context.Context, r *http.Request) (int, any, error) {
	g, v, err := c.guardAndVM(ctx, r)
	if err != nil {
		return 0, nil, err
	}
	spec := *v.Spec
	spec.Desired = store.DesiredRunning
	switch {
	case v.Owner == nil:
		if err := c.place(ctx, v.Name, spec, v.SpecRev, ""); err != nil {
			return 0, nil, err
		}
	case v.Spec.Desired != store.DesiredRunning:
		if _, err := c.st.PutVMSpec(ctx, v.Name, spec, v.SpecRev, g); err != nil {
			return 0, nil, c.writeFailed(ctx, "start vm "+v.Name, err)
		}
		c.log.Info("vm desired running", "vm", v.Name, "host", v.Owner.Host)
	}
	return c.vmReply(ctx, 200, v.Name)
}

func (c *Controller) stopVM(ctx context.Context, r *http.Request) (int, any, error) {
	g, v, err := c.guardAndVM(ctx, r)
	if err != nil {
		return 0, nil, err
	}
	if v.Spec.Desired != store.DesiredStopped {
		spec := *v.Spec
		spec.Desired = store.DesiredStopped
		if _, err := c.st.PutVMSpec(ctx, v.Name, spec, v.SpecRev, g); err != nil {
			return 0, nil, c.writeFailed(ctx, "stop vm "+v.Name, err)
		}
		c.log.Info("vm desired stopped", "vm", v.Name)
	}
	return c.vmReply(ctx, 200, v.Name)
}

func (c *Controller) deleteVM(ctx context.Context, r *http.Request) (int, any, error) {
	g, v, err := c.guardAndVM(ctx, r)
	if err != nil {
		return 0, nil, err
	}
	switch {
	case v.Spec.Desired != store.DesiredStopped:
		return 0, nil, conflict(fmt.Sprintf("vm %s is not stopped (desired %s): run godwit vm stop %s first", v.Name, v.Spec.Desired, v.Name), nil)
	case v.Owner != nil:
		return 0, nil, conflict(fmt.Sprintf("vm %s is still held by host %s (it is stopping): wait until godwit vm show %s says stopped", v.Name, v.Owner.Host, v.Name), nil)
	}
	if err := c.st.DeleteVM(ctx, v.Name, g); err != nil {
		if errors.Is(err, store.ErrOwned) {
			return 0, nil, conflict(fmt.Sprintf("vm %s was placed again meanwhile; stop it first", v.Name), nil)
		}
		if errors.Is(err, store.ErrNotFound) {
			return 0, nil, notFound(fmt.Sprintf("unknown vm %s", v.Name))
		}
		return 0, nil, c.writeFailed(ctx, "delete vm "+v.Name, err)
	}
	c.log.Info("vm deleted", "vm", v.Name)
	return http.StatusNoContent, nil, nil
}

// ---- migrations ----

func newMigrationID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (c *Controller) migrateVM(ctx context.Context, r *http.Request) (int, any, error) {
	var req poolapi.MigrateRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	g, v, err := c.guardAndVM(ctx, r)
	if err != nil {
		return 0, nil, err
	}
	refuse := func(err error) (int, any, error) {
		c.metrics.migrations.WithLabelValues("refused").Inc()
		c.log.Info("migration refused", "vm", v.Name, "err", err)
		return 0, nil, err
	}
	switch {
	case v.Owner == nil:
		return refuse(conflict(fmt.Sprintf("vm %s runs on no host (phase %s): start it first", v.Name, vmView(v).Phase), nil))
	case v.Spec.Desired != store.DesiredRunning:
		return refuse(conflict(fmt.Sprintf("vm %s is being stopped: only a running VM migrates", v.Name), nil))
	case v.Migration != nil && !v.Migration.Phase.Terminal():
		m := v.Migration
		return refuse(conflict(fmt.Sprintf("vm %s is already migrating (%s → %s, migration %s, phase %s): wait for it (godwit vm migrate %s --wait shows it)", v.Name, m.Src, m.Dst, m.ID, m.Phase, v.Name), nil))
	case v.Status != nil && v.Status.Host == v.Owner.Host && !v.Status.Migratable && v.Status.Reason != "":
		return refuse(conflict(fmt.Sprintf("vm %s cannot migrate: %s", v.Name, v.Status.Reason), nil))
	}
	if req.To != "" {
		if err := store.ValidName("host", req.To); err != nil {
			return refuse(badRequest(err.Error()))
		}
	}
	migID := newMigrationID()
	d, err := c.choose(ctx, v.Name, *v.Spec, req.To, v.Owner.Host, migID)
	if err != nil {
		return refuse(err)
	}
	defer c.release(d)
	reason := req.Reason
	if reason == "" {
		reason = "user"
	}
	now := c.clock.Now().UTC()
	m := store.Migration{ID: migID, VM: v.Name, Src: v.Owner.Host, Dst: d.host, Reason: reason,
		ExpectOwnerRev: v.OwnerRev, Phase: store.MigrationRequested, Bandwidth: req.Bandwidth, DowntimeMs: req.DowntimeMs,
		Started: now, Updated: now}
	var recRev int64
	if v.Migration != nil {
		if _, recRev, err = c.st.GetMigration(ctx, v.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, nil, unavailable(err)
		}
	}
	if err := c.grantMigration(ctx, m); err != nil {
		return 0, nil, err
	}
	if _, err := c.st.RequestMigration(ctx, m, recRev, g); err != nil {
		c.metrics.migrations.WithLabelValues("failed").Inc()
		return 0, nil, c.writeFailed(ctx, fmt.Sprintf("request migration of vm %s", v.Name), err)
	}
	c.metrics.migrations.WithLabelValues("requested").Inc()
	c.log.Info("migration requested", "vm", v.Name, "migration", m.ID, "src", m.Src, "dst", m.Dst, "expect_owner_rev", m.ExpectOwnerRev)
	return http.StatusAccepted, m, nil
}

func (c *Controller) showMigration(ctx context.Context, r *http.Request) (int, any, error) {
	name := r.PathValue("v")
	if err := store.ValidName("vm", name); err != nil {
		return 0, nil, badRequest(err.Error())
	}
	m, _, err := c.st.GetMigration(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil, notFound(fmt.Sprintf("vm %s has no migration record (unknown vm, or never migrated)", name))
	}
	if err != nil {
		return 0, nil, unavailable(err)
	}
	return 200, m, nil
}

// cancelMigration asks the source agent to stop the VM's migration: it
// sets the record's Cancel, guarded by the record's revision and the
// leader key. The agent, which owns the migration, does the stopping.
func (c *Controller) cancelMigration(ctx context.Context, r *http.Request) (int, any, error) {
	name := r.PathValue("v")
	if err := store.ValidName("vm", name); err != nil {
		return 0, nil, badRequest(err.Error())
	}
	return c.requestCancel(ctx, name, "", "cancelled by the user")
}

// setMigrationLimits changes the bandwidth cap or downtime target of the
// VM's migration under way, in its record; the source agent passes them
// to its VMM.
func (c *Controller) setMigrationLimits(ctx context.Context, r *http.Request) (int, any, error) {
	name := r.PathValue("v")
	if err := store.ValidName("vm", name); err != nil {
		return 0, nil, badRequest(err.Error())
	}
	var l poolapi.MigrationLimits
	if err := decodeBody(r, &l); err != nil {
		return 0, nil, err
	}
	switch {
	case l.Bandwidth == nil && l.DowntimeMs == nil:
		return 0, nil, badRequest("migration limits: give bandwidth or downtime_ms")
	case l.DowntimeMs != nil && (*l.DowntimeMs < 1 || *l.DowntimeMs > 60000):
		return 0, nil, badRequest(fmt.Sprintf("downtime_ms %g: want 1 to 60000", *l.DowntimeMs))
	}
	return c.updateMigration(ctx, name, "", "change the limits of vm "+name+"'s migration", func(m *store.Migration) bool {
		if l.Bandwidth != nil {
			m.Bandwidth = *l.Bandwidth
		}
		if l.DowntimeMs != nil {
			m.DowntimeMs = *l.DowntimeMs
		}
		return true
	}, func(m store.Migration) {
		c.log.Info("migration limits changed", "vm", name, "migration", m.ID, "bandwidth", m.Bandwidth, "downtime_ms", m.DowntimeMs)
	})
}

// requestCancel sets the Cancel of vm's migration (of ID id, any when
// empty) unless it is over or already cancelled.
func (c *Controller) requestCancel(ctx context.Context, vm, id, reason string) (int, any, error) {
	return c.updateMigration(ctx, vm, id, "cancel the migration of vm "+vm, func(m *store.Migration) bool {
		if m.Cancel != "" {
			return false // asked for already
		}
		m.Cancel = reason
		return true
	}, func(m store.Migration) {
		c.metrics.migrations.WithLabelValues("cancel_requested").Inc()
		c.log.Info("migration cancel requested", "vm", vm, "migration", m.ID, "phase", m.Phase, "reason", reason)
	})
}

// updateMigration changes vm's migration under way (of ID id, any when
// empty) with change, guarded by the record's revision and the leader key,
// retrying when progress or the switchover wrote the record meanwhile. A
// change that returns false leaves the record as it is; done runs after a
// write. The answer is the record (202 Accepted).
func (c *Controller) updateMigration(ctx context.Context, vm, id, what string, change func(*store.Migration) bool, done func(store.Migration)) (int, any, error) {
	g, err := c.leaderGuard(ctx)
	if err != nil {
		return 0, nil, err
	}
	for range 5 {
		m, rev, err := c.st.GetMigration(ctx, vm)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return 0, nil, notFound(fmt.Sprintf("vm %s has no migration record (unknown vm, or never migrated)", vm))
		case err != nil:
			return 0, nil, unavailable(err)
		case id != "" && m.ID != id:
			return 0, nil, conflict(fmt.Sprintf("vm %s's migration is now %s, not %s", vm, m.ID, id), nil)
		case m.Phase.Terminal():
			return 0, nil, conflict(fmt.Sprintf("vm %s has no migration under way (migration %s ended %s)", vm, m.ID, m.Phase), nil)
		}
		if !change(&m) {
			return http.StatusAccepted, m, nil
		}
		m.Updated = c.clock.Now().UTC()
		if _, err := c.st.PutMigration(ctx, m, rev, g); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return 0, nil, c.writeFailed(ctx, what, err)
		}
		done(m)
		return http.StatusAccepted, m, nil
	}
	return 0, nil, unavailable(fmt.Errorf("the migration record of vm %s keeps changing; try again", vm))
}

// ---- cluster ----

func (c *Controller) cluster(ctx context.Context, _ *http.Request) (int, any, error) {
	p, err := c.readPool(ctx)
	if err != nil {
		return 0, nil, err
	}
	members, err := c.st.ListControllers(ctx)
	if err != nil {
		return 0, nil, unavailable(err)
	}
	var out poolapi.Cluster
	out.Pool, out.This, out.Leading, out.Etcd, out.Embedded = c.cfg.Pool, c.cfg.ID, c.IsLeader(), c.endpoints, c.etcd != nil
	out.Leader, out.LeaderURL = c.Leader(ctx)
	ha := c.haStatus(ctx)
	out.HA = &ha
	for _, m := range members {
		out.Members = append(out.Members, poolapi.Member{ID: m.ID, URL: m.URL, Leader: m.ID == out.Leader})
	}
	out.Hosts.ByState = map[string]int{}
	for _, h := range p.hosts {
		out.Hosts.Total++
		if h.Alive != nil {
			out.Hosts.Up++
		} else {
			out.Hosts.Lost++
		}
		st := "unset"
		if h.State != nil {
			st = string(h.State.State)
		}
		out.Hosts.ByState[st]++
	}
	out.VMs.ByPhase = map[string]int{}
	out.Migrations.ByPhase = map[string]int{}
	for _, v := range p.vms {
		if v.Spec == nil {
			continue
		}
		out.VMs.Total++
		out.VMs.ByPhase[vmView(v).Phase]++
		if m := v.Migration; m != nil {
			out.Migrations.ByPhase[string(m.Phase)]++
			if !m.Phase.Terminal() {
				out.Migrations.InFlight++
			}
		}
	}
	slices.SortFunc(out.Members, func(a, b poolapi.Member) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return 200, out, nil
}
