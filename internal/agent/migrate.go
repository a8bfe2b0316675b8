package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

// pending reports whether a migration record waits for its source agent.
func pending(p store.MigrationPhase) bool {
	return p == store.MigrationRequested || p == store.MigrationPlanned
}

// maybeMigrate starts driving v's migration if the record asks this host
// (the owner, running the VM) to be its source.
func (a *Agent) maybeMigrate(ctx context.Context, lease *store.HostLease, v *store.VM, p *vmmProc) {
	m := v.Migration
	if m == nil || m.Src != a.cfg.Host || m.Phase.Terminal() {
		return
	}
	a.mu.Lock()
	_, driving := a.migrating[v.Name]
	a.mu.Unlock()
	if driving {
		return
	}
	log := a.log.With("vm", v.Name, "migration", m.ID)
	if m.Phase == store.MigrationRunning {
		// Running, but not driven by this process: an earlier run of the
		// agent started it. If the VMM no longer migrates, the attempt is
		// over without a switchover (the owner is still here).
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := api.NewClient(p.sock).MigrationProgress(pctx)
		cancel()
		if err != nil && v.OwnerRev == m.ExpectOwnerRev {
			log.Warn("migration was running when the agent restarted and is over; marking it failed")
			a.failRecord(ctx, v.Name, m.ID, "the source agent restarted during the migration")
		}
		return
	}
	if !pending(m.Phase) {
		return
	}
	if v.OwnerRev != m.ExpectOwnerRev {
		a.failRecord(ctx, v.Name, m.ID, fmt.Sprintf("the owner key changed (revision %d, the migration expects %d): re-plan it", v.OwnerRev, m.ExpectOwnerRev))
		return
	}
	a.mu.Lock()
	a.migrating[v.Name] = m.ID
	a.mu.Unlock()
	go func() {
		defer func() {
			a.mu.Lock()
			delete(a.migrating, v.Name)
			a.mu.Unlock()
			a.kick()
		}()
		a.runMigration(ctx, lease, *m, *v.Spec, p, log)
	}()
}

// watchMigration writes the source VMM's progress into the migration
// record rec (at revision rev) once a second until done closes, and
// passes on to the VMM what the record asks for meanwhile: new limits
// (Bandwidth, DowntimeMs) and a cancel. It returns the cancel's reason, if
// it passed one on.
func (a *Agent) watchMigration(ctx context.Context, rec store.Migration, rev int64, p *vmmProc, done <-chan struct{}, log *slog.Logger) string {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	c := api.NewClient(p.sock)
	cancelled := ""
	// The limits the VMM was given (at the start, see runMigration).
	bandwidth, downtime := rec.Bandwidth, rec.DowntimeMs
	for {
		if cancelled == "" && (rec.Bandwidth != bandwidth || rec.DowntimeMs != downtime) {
			l := api.MigrationLimits{Bandwidth: &rec.Bandwidth}
			if rec.DowntimeMs > 0 {
				l.DowntimeMs = &rec.DowntimeMs
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if _, err := c.SetMigrationLimits(cctx, l); err != nil {
				log.Warn("the source VMM did not take the new limits yet", "err", err)
			} else {
				bandwidth, downtime = rec.Bandwidth, rec.DowntimeMs
				log.Info("migration limits passed to the source VMM", "bandwidth", bandwidth, "downtime_ms", downtime)
			}
			cancel()
		}
		if rec.Cancel != "" && cancelled == "" {
			// Until the VMM has taken it (its migration may not have
			// begun yet): tried again each second.
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := c.CancelMigration(cctx); err != nil {
				log.Warn("the source VMM did not take the cancel yet", "err", err)
			} else {
				cancelled = rec.Cancel
				log.Info("migration cancel passed to the source VMM", "reason", rec.Cancel)
			}
			cancel()
		}
		select {
		case <-done:
			return cancelled
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		pr, err := c.MigrationProgress(qctx)
		cancel()
		if err != nil {
			continue
		}
		rec.Round, rec.RemainingBytes, rec.SentBytes, rec.Updated = pr.Iteration, pr.RemainingPages*4096, pr.TransferredBytes, time.Now().UTC()
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		nrev, err := a.st.PutMigration(wctx, rec, rev, store.Guard{})
		cancel()
		if errors.Is(err, store.ErrConflict) {
			// Someone else wrote the record: a cancel, or the switchover.
			gctx, cancel := context.WithTimeout(ctx, time.Second)
			now, nrev, gerr := a.st.GetMigration(gctx, rec.VM)
			cancel()
			if gerr != nil || now.ID != rec.ID || now.Phase.Terminal() {
				return cancelled
			}
			rec, rev = now, nrev
			continue
		}
		if err != nil {
			continue // etcd is away; try again next second
		}
		rev = nrev
	}
}

// failRecord marks the record failed unless it has moved on (another ID
// or a terminal phase).
func (a *Agent) failRecord(ctx context.Context, vm, id, reason string) {
	for range 3 {
		gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		rec, rev, err := a.st.GetMigration(gctx, vm)
		cancel()
		if err != nil || rec.ID != id || rec.Phase.Terminal() {
			return
		}
		rec.Phase, rec.Error, rec.Updated = store.MigrationFailed, reason, time.Now().UTC()
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = a.st.PutMigration(pctx, rec, rev, store.Guard{})
		cancel()
		if !errors.Is(err, store.ErrConflict) {
			return
		}
	}
}

// runMigration drives one migration whose source is this host: it asks
// the destination agent for an incoming VMM, tells the local VMM to
// migrate to it, and reports progress in the record (at most once a
// second). The switchover itself — owner key and phase committed, or
// aborted — is written by the VMMs, not here.
func (a *Agent) runMigration(ctx context.Context, lease *store.HostLease, m store.Migration, spec store.VMSpec, p *vmmProc, log *slog.Logger) {
	vm := m.VM
	if vm == "" {
		vm = p.meta.VM
	}
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	rec, rev, err := a.st.GetMigration(gctx, vm)
	cancel()
	if err != nil || rec.ID != m.ID || !pending(rec.Phase) {
		return
	}
	if rec.Cancel != "" {
		log.Info("migration cancelled before it started", "reason", rec.Cancel)
		a.metrics.migrations.WithLabelValues("cancelled").Inc()
		a.failRecord(ctx, vm, rec.ID, "cancelled before it started: "+rec.Cancel)
		return
	}
	began := time.Now()
	rec.VM, rec.Phase, rec.Started, rec.Updated = vm, store.MigrationRunning, began.UTC(), began.UTC()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	rev, err = a.st.PutMigration(pctx, rec, rev, store.Guard{})
	cancel()
	if err != nil {
		log.Warn("cannot mark the migration running; leaving it", "err", err)
		return
	}
	log.Info("migration started", "dst", rec.Dst, "owner_rev", rec.ExpectOwnerRev)
	a.kick() // status: migrating

	var dstClient *Client
	fail := func(reason string) {
		log.Error("migration failed", "err", reason)
		a.metrics.migrations.WithLabelValues("failed").Inc()
		a.failRecord(ctx, vm, rec.ID, reason)
		if dstClient != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := dstClient.CancelIncoming(cctx, vm, rec.ID); err != nil {
				log.Warn("cannot remove the destination's incoming VMM (its agent removes it when it sees the record)", "err", err)
			}
			cancel()
		}
	}

	// The destination agent's address.
	hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	dst, err := a.st.GetHost(hctx, rec.Dst)
	cancel()
	switch {
	case err != nil:
		fail(fmt.Sprintf("destination host %s: %v", rec.Dst, err))
		return
	case dst.Alive == nil || dst.Info == nil:
		fail(fmt.Sprintf("destination host %s is not alive in the pool", rec.Dst))
		return
	}
	dstClient = a.agentClient(dst.Info.Addr, rec.Dst)
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	inc, err := dstClient.Incoming(ictx, IncomingRequest{
		VM: vm, Spec: spec, OwnerRev: rec.ExpectOwnerRev, MigrationID: rec.ID, Src: a.cfg.Host,
	})
	cancel()
	if err != nil {
		fail(fmt.Sprintf("destination %s refused the incoming VM: %v", rec.Dst, err))
		return
	}
	log.Info("destination VMM ready", "dst", rec.Dst, "addr", inc.Addr)

	// Progress, at most one write a second; and a cancel asked for in the
	// record (see watchMigration).
	done := make(chan struct{})
	progressDone := make(chan struct{})
	var cancelReason string // read once progressDone is closed
	go func() {
		defer close(progressDone)
		cancelReason = a.watchMigration(ctx, rec, rev, p, done, log)
	}()
	// The VMMs do the handover: the destination's HandOver is guarded by
	// the owner revision and the migration ID passed here.
	reply, err := api.NewClient(p.sock).Migrate(ctx, api.MigrateRequest{
		To: inc.Addr, Peer: rec.Dst, OwnerRev: rec.ExpectOwnerRev, MigrationID: rec.ID, Verify: a.cfg.VerifyMigrations,
		Bandwidth: rec.Bandwidth, DowntimeMs: rec.DowntimeMs,
	})
	close(done)
	<-progressDone
	switch {
	case err != nil:
		// The VMM's answer may be lost while its migration goes on (or
		// the VMM exited right after the handover): wait until it no
		// longer migrates before deciding from the record.
		log.Info("no report from the source VMM; the migration record decides", "err", err)
		a.waitMigrationOver(ctx, p)
	case reply.Error != "":
		err = errors.New(reply.Error)
		if cancelReason != "" {
			err = fmt.Errorf("cancelled (%s): %s", cancelReason, reply.Error)
		}
	}
	// The record tells what happened at the switchover.
	for range 10 {
		gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		now, _, gerr := a.st.GetMigration(gctx, vm)
		cancel()
		if gerr != nil {
			if !sleep(ctx, 300*time.Millisecond) {
				return
			}
			continue
		}
		switch {
		case now.ID == rec.ID && now.Phase == store.MigrationCommitted:
			a.metrics.migrations.WithLabelValues("committed").Inc()
			downtime := -1.0 // unknown: the VMM's report was lost
			if reply != nil && reply.Report != nil {
				downtime = reply.Report.DowntimeMs
				a.metrics.downtime.Observe(downtime / 1000)
			}
			log.Info("migration committed", "dst", rec.Dst, "total", time.Since(began).Round(time.Millisecond), "downtime_ms", downtime)
			return
		case err != nil:
			fail(err.Error())
			return
		default:
			// The VMM says it finished, but the commit is not visible yet.
			if !sleep(ctx, 200*time.Millisecond) {
				return
			}
		}
	}
	fail("the VMM reported success but the record never showed the commit")
}

// waitMigrationOver waits until the VMM answers that no migration is under
// way (or is gone).
func (a *Agent) waitMigrationOver(ctx context.Context, p *vmmProc) {
	c := api.NewClient(p.sock)
	for range 600 {
		select {
		case <-p.exited:
			return
		default:
		}
		qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := c.MigrationProgress(qctx)
		cancel()
		if err != nil && !errors.Is(qctx.Err(), context.DeadlineExceeded) {
			return
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// startIncoming starts (or finds) the incoming VMM of a migration to this
// host and returns the address it listens on once its API answers.
func (a *Agent) startIncoming(ctx context.Context, req IncomingRequest) (string, int, error) {
	lease := a.currentLease()
	if lease == nil {
		return "", http.StatusServiceUnavailable, errors.New("this host holds no lease right now")
	}
	if err := store.ValidName("vm", req.VM); err != nil {
		return "", http.StatusBadRequest, err
	}
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	rec, _, err := a.st.GetMigration(gctx, req.VM)
	cancel()
	switch {
	case err != nil:
		return "", http.StatusConflict, fmt.Errorf("vm %s: no migration record: %v", req.VM, err)
	case rec.ID != req.MigrationID || rec.Dst != a.cfg.Host || rec.Src != req.Src || rec.Phase.Terminal() || rec.ExpectOwnerRev != req.OwnerRev:
		return "", http.StatusConflict, fmt.Errorf("vm %s: the migration record (id %s, %s to %s, phase %s, owner rev %d) does not match this request (id %s from %s, owner rev %d)",
			req.VM, rec.ID, rec.Src, rec.Dst, rec.Phase, rec.ExpectOwnerRev, req.MigrationID, req.Src, req.OwnerRev)
	}
	// The VM's devices come from the pool's spec, not from the request:
	// the source names no path this host opens.
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	spec, _, err := a.st.GetVMSpec(sctx, req.VM)
	cancel()
	if err != nil {
		return "", http.StatusConflict, fmt.Errorf("vm %s: no spec in the pool: %v", req.VM, err)
	}
	req.Spec = spec
	if !a.vmmHandover {
		return "", http.StatusNotImplemented, fmt.Errorf("the VMM %s cannot hand over ownership (no --owner-rev/--migration-id): update godwit on host %s", a.cfg.Godwit, a.cfg.Host)
	}
	if err := checkShape(req.VM, &req.Spec); err != nil {
		return "", http.StatusConflict, err
	}
	dev, tap, err := a.deviceArgs(req.VM, &req.Spec)
	if err != nil {
		return "", http.StatusConflict, err
	}
	a.spawnMu.Lock()
	defer a.spawnMu.Unlock()
	a.mu.Lock()
	old := a.procs[req.VM]
	used := map[string]bool{}
	for _, p := range a.procs {
		if p.meta.Addr != "" && !p.gone {
			used[p.meta.Addr] = true
		}
	}
	a.mu.Unlock()
	if old != nil && !a.isGone(old) {
		if old.meta.Incoming && old.meta.MigrationID == req.MigrationID {
			return old.meta.Addr, http.StatusOK, waitAPI(ctx, old)
		}
		if !old.meta.Incoming {
			return "", http.StatusConflict, fmt.Errorf("vm %s already runs on host %s", req.VM, a.cfg.Host)
		}
		a.kill(old, "replaced by the incoming VMM of migration "+req.MigrationID, 3*time.Second)
	}
	addr, err := a.freeMigratePort(used)
	if err != nil {
		return "", http.StatusServiceUnavailable, err
	}
	args := a.vmmArgs(req.VM, int64(lease.ID()))
	args = append(args, "--incoming", "tcp:"+addr, "--migration-peer", req.Src)
	// What the VM boots, should the guest reboot here.
	args = append(args, bootArgs(req.Spec)...)
	if a.vmmHandover {
		args = append(args, "--owner-rev", strconv.FormatInt(req.OwnerRev, 10), "--migration-id", req.MigrationID)
	}
	args = append(args, dev...)
	meta := vmmMeta{VM: req.VM, Lease: int64(lease.ID()), Incoming: true, MigrationID: req.MigrationID,
		OwnerRev: req.OwnerRev, Addr: addr, TAP: tap, MemBytes: req.Spec.MemBytes, VCPUs: req.Spec.VCPUs}
	p, err := a.spawn(meta, args)
	if err != nil {
		return "", http.StatusInternalServerError, err
	}
	a.mu.Lock()
	a.procs[req.VM] = p
	a.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := waitAPI(wctx, p); err != nil {
		a.kill(p, "incoming VMM did not come up", 3*time.Second)
		return "", http.StatusInternalServerError, fmt.Errorf("%w (see %s/vmm.log)", err, a.vmDir(req.VM))
	}
	a.log.Info("incoming vmm ready", "vm", req.VM, "migration", req.MigrationID, "addr", addr, "pid", p.meta.PID, "src", req.Src)
	return addr, http.StatusOK, nil
}

// cancelIncoming removes the incoming VMM of a migration that failed,
// unless the VM has already arrived (the owner names this host).
func (a *Agent) cancelIncoming(ctx context.Context, vm, id string) (int, error) {
	a.mu.Lock()
	p := a.procs[vm]
	a.mu.Unlock()
	if p == nil || a.isGone(p) || !p.meta.Incoming || (id != "" && p.meta.MigrationID != id) {
		return http.StatusNoContent, nil
	}
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	owner, _, err := a.st.GetOwner(gctx, vm)
	cancel()
	if err == nil && owner.Host == a.cfg.Host && owner.Migration == p.meta.MigrationID {
		return http.StatusConflict, fmt.Errorf("vm %s arrived here by migration %s: it is not incoming any more", vm, p.meta.MigrationID)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return http.StatusServiceUnavailable, fmt.Errorf("vm %s: cannot read the owner: %v", vm, err)
	}
	a.kill(p, "the migration "+p.meta.MigrationID+" failed", 3*time.Second)
	a.forget(p, nil)
	return http.StatusNoContent, nil
}
