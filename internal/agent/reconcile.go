package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

// reconcile makes this host's VMMs match the pool's state: one pass over
// a linearizable read of every VM.
//
// The rule: a VM runs here iff its owner is (this host, this lease) and its
// spec says running. A VMM found here for anything else is killed, except
// an incoming VMM whose migration (to this host, guarded by the owner
// revision it was started with) is still under way. VMMs started after
// the read are left alone until the next pass, which sees what they were
// started for.
func (a *Agent) reconcile(ctx context.Context, lease *store.HostLease) {
	listedAt := time.Now()
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	vms, _, err := a.st.ListVMs(lctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("reconcile: cannot list VMs", "err", err)
		}
		return
	}
	a.mu.Lock()
	procs := maps.Clone(a.procs)
	a.mu.Unlock()
	inPool := map[string]bool{}
	for i := range vms {
		v := &vms[i]
		inPool[v.Name] = true
		a.reconcileVM(ctx, lease, v, procs[v.Name], listedAt)
	}
	for name, p := range procs {
		if !inPool[name] && p.seen.Before(listedAt) {
			a.forget(p, nil)
			if !a.isGone(p) {
				a.kill(p, "the VM is not in the pool", 3*time.Second)
			}
		}
	}
	a.metrics.vmsRunning.Set(float64(a.countRunning()))
}

func (a *Agent) isGone(p *vmmProc) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return p.gone
}

func (a *Agent) countRunning() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, p := range a.procs {
		if !p.gone && !p.meta.Incoming {
			n++
		}
	}
	return n
}

// forget drops a gone VMM from the table; for a VMM of an owned VM that
// exited without being asked to, it records why, so the VM is not started
// again until its spec or owner changes.
func (a *Agent) forget(p *vmmProc, v *store.VM) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !p.gone || a.procs[p.meta.VM] != p {
		return
	}
	delete(a.procs, p.meta.VM)
	if v != nil && !p.stopping && !p.meta.Incoming {
		a.exited[v.Name] = exitMark{v.SpecRev, v.OwnerRev}
		reason := "the VMM exited"
		if p.exitErr != nil {
			reason += ": " + p.exitErr.Error()
		}
		if killedBySeccomp(p.exitErr) {
			reason += " (its seccomp filter killed it: a system call a VMM does not make at run time)"
		}
		if last := lastLine(filepath.Join(a.vmDir(v.Name), "vmm.log")); last != "" {
			reason += ": " + last
		}
		a.startErr[v.Name] = reason
		a.log.Warn("vmm exited by itself", "vm", v.Name, "pid", p.meta.PID, "reason", reason)
	}
}

func (a *Agent) reconcileVM(ctx context.Context, lease *store.HostLease, v *store.VM, p *vmmProc, listedAt time.Time) {
	leaseID := int64(lease.ID())
	mine := v.Owner != nil && v.Owner.Host == a.cfg.Host && v.Owner.Lease == leaseID
	if p != nil && a.isGone(p) {
		if mine {
			a.forget(p, v)
		} else {
			a.forget(p, nil)
		}
		p = nil
	}
	if !mine {
		a.mu.Lock()
		delete(a.status, v.Name) // someone else reports it now
		a.mu.Unlock()
	}
	fresh := p != nil && p.seen.After(listedAt)
	running := v.Spec != nil && v.Spec.Desired == store.DesiredRunning
	switch {
	case mine && running && p != nil:
		if p.meta.Incoming {
			// The migration to this host committed (the destination VMM's
			// HandOver made us the owner): the VM is ours now.
			a.mu.Lock()
			p.meta.Incoming, p.meta.Lease = false, leaseID
			meta := p.meta
			a.mu.Unlock()
			if err := a.writeMeta(meta); err != nil {
				a.log.Warn("cannot update vmm.json", "vm", v.Name, "err", err)
			}
			a.log.Info("vm arrived by migration and is owned here now", "vm", v.Name, "migration", meta.MigrationID, "owner_rev", v.OwnerRev, "pid", meta.PID)
		}
		a.reportRunning(ctx, lease, v, p)
		a.maybeMigrate(ctx, lease, v, p)
	case mine && running:
		a.mu.Lock()
		_, driving := a.migrating[v.Name]
		mark, hasMark := a.exited[v.Name]
		reason := a.startErr[v.Name]
		a.mu.Unlock()
		if driving {
			return
		}
		if hasMark && mark == (exitMark{v.SpecRev, v.OwnerRev}) {
			a.putStatus(ctx, lease, v, store.VMStatus{Phase: store.VMFailed, Reason: reason})
			return
		}
		a.startVM(ctx, lease, v)
	case mine:
		// Desired stopped (or the spec is gone): stop it, then give up
		// the ownership so the VM may start anywhere later.
		if p != nil {
			a.mu.Lock()
			stopping := p.stopping
			a.mu.Unlock()
			if !stopping {
				go func() {
					a.stopGracefully(p, "desired state is stopped", 10*time.Second)
					a.kick()
				}()
			}
			a.putStatus(ctx, lease, v, store.VMStatus{Phase: store.VMStopped, PID: p.meta.PID, Reason: "stopping"})
			return
		}
		a.putStatus(ctx, lease, v, store.VMStatus{Phase: store.VMStopped})
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		res, err := a.st.ReleaseOwner(rctx, v.Name, v.OwnerRev)
		cancel()
		if err != nil {
			a.log.Warn("cannot release the owner key of a stopped VM", "vm", v.Name, "err", err)
		} else if res.Won {
			a.log.Info("vm stopped; owner key released", "vm", v.Name, "owner_rev", v.OwnerRev)
		}
	case p != nil && !fresh:
		if p.meta.Incoming && a.incomingWanted(v, p) {
			return
		}
		a.mu.Lock()
		_, driving := a.migrating[v.Name]
		if driving && p.handedOver.IsZero() {
			p.handedOver = time.Now()
		}
		waited := time.Since(p.handedOver)
		a.mu.Unlock()
		if driving && waited < handOverGrace {
			// The owner key moved because this VM's outgoing migration
			// handed it over: the source VMM is paused and stops itself
			// once it has the destination's COMMITTED (its resume gate
			// refuses to run it now). Let it answer the migrate call
			// with its report; the reconcile after the call kills
			// whatever is left, and so does this one after the grace.
			return
		}
		why := "the pool does not assign this VM to this host and lease"
		if v.Owner != nil {
			why = fmt.Sprintf("the VM's owner is host %s lease %x (rev %d), not this host and lease", v.Owner.Host, v.Owner.Lease, v.OwnerRev)
		}
		a.kill(p, why, 3*time.Second)
		a.forget(p, nil)
	}
}

// handOverGrace is how long a source VMM whose VM was handed over may
// take to answer its migrate call before the agent kills it anyway (it is
// paused and cannot run: this only frees its memory).
const handOverGrace = 30 * time.Second

// incomingWanted reports whether the incoming VMM p still waits for a live
// migration: the VM's record names p's migration, this host as
// destination, is not over, and the owner is still at the revision the
// migration is guarded by.
func (a *Agent) incomingWanted(v *store.VM, p *vmmProc) bool {
	m := v.Migration
	return m != nil && m.ID == p.meta.MigrationID && m.Dst == a.cfg.Host &&
		!m.Phase.Terminal() && v.OwnerRev == p.meta.OwnerRev && v.OwnerRev == m.ExpectOwnerRev
}

// startVM starts a VMM for an owned VM that should run.
func (a *Agent) startVM(ctx context.Context, lease *store.HostLease, v *store.VM) {
	fail := func(err error) {
		a.mu.Lock()
		a.exited[v.Name] = exitMark{v.SpecRev, v.OwnerRev}
		a.startErr[v.Name] = err.Error()
		a.mu.Unlock()
		a.log.Error("cannot start vm", "vm", v.Name, "err", err)
		a.putStatus(ctx, lease, v, store.VMStatus{Phase: store.VMFailed, Reason: err.Error()})
	}
	// The list may be stale: a migration may have handed the VM over
	// since (its source VMM then exits by itself). Start only on a fresh
	// read that still names this host at the listed fencing epoch.
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	owner, rev, err := a.st.GetOwner(gctx, v.Name)
	cancel()
	if err != nil {
		return // the next pass tries again
	}
	if rev != v.OwnerRev || owner.Host != a.cfg.Host || owner.Lease != int64(lease.ID()) {
		a.kick() // the next pass sees the change
		return
	}
	spec := v.Spec
	if spec.Kernel == "" {
		fail(fmt.Errorf("vm %s: the spec names no kernel", v.Name))
		return
	}
	if err := checkShape(v.Name, spec); err != nil {
		fail(err)
		return
	}
	dev, tap, err := a.deviceArgs(v.Name, spec)
	if err != nil {
		fail(err)
		return
	}
	args := a.vmmArgs(v.Name, int64(lease.ID()))
	args = append(args, "--mem", strconv.FormatUint(spec.MemBytes>>20, 10)+"M", "--cpus", strconv.Itoa(max(spec.VCPUs, 1)))
	args = append(append(args, bootArgs(*spec)...), dev...)
	meta := vmmMeta{VM: v.Name, Lease: int64(lease.ID()), TAP: tap, MemBytes: spec.MemBytes, VCPUs: spec.VCPUs}
	a.spawnMu.Lock()
	defer a.spawnMu.Unlock()
	a.mu.Lock()
	busy := a.procs[v.Name] != nil
	a.mu.Unlock()
	if busy {
		return
	}
	p, err := a.spawn(meta, args)
	if err != nil {
		fail(err)
		return
	}
	a.mu.Lock()
	a.procs[v.Name] = p
	delete(a.exited, v.Name)
	delete(a.startErr, v.Name)
	a.mu.Unlock()
	a.log.Info("vm started", "vm", v.Name, "owner_rev", v.OwnerRev, "pid", p.meta.PID)
	a.putStatus(ctx, lease, v, store.VMStatus{Phase: store.VMStarting, PID: p.meta.PID})
	go func() { // report running as soon as the API answers
		wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if waitAPI(wctx, p) == nil {
			a.kick()
		}
	}()
}

// reportRunning writes the status of an owned VM whose VMM is alive.
func (a *Agent) reportRunning(ctx context.Context, lease *store.HostLease, v *store.VM, p *vmmProc) {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	s, err := api.NewClient(p.sock).Status(sctx)
	cancel()
	a.mu.Lock()
	_, migrating := a.migrating[v.Name]
	a.mu.Unlock()
	st := store.VMStatus{PID: p.meta.PID}
	switch {
	case err != nil:
		st.Phase, st.Reason = store.VMStarting, "VMM API not answering yet"
	case migrating:
		st.Phase, st.Reason = store.VMMigrating, "migration under way"
	case s.State == "running":
		st.Phase, st.Migratable = store.VMRunning, true
	case s.State == "paused":
		st.Phase, st.Migratable = store.VMPaused, true
	default:
		st.Phase, st.Reason = store.VMStarting, "VMM state "+string(s.State)
	}
	a.putStatus(ctx, lease, v, st)
}

// putStatus writes vms/<v>/status (bound to the host lease) unless both
// the stored value (as listed) and this agent's last write already say st.
// Comparing with the stored value repairs a status that another writer
// overwrote, e.g. a source host's late report after a migration.
func (a *Agent) putStatus(ctx context.Context, lease *store.HostLease, v *store.VM, st store.VMStatus) {
	st.Host = a.cfg.Host
	same := func(o store.VMStatus) bool {
		return o.Host == st.Host && o.Phase == st.Phase && o.PID == st.PID && o.Migratable == st.Migratable && o.Reason == st.Reason
	}
	a.mu.Lock()
	last, ok := a.status[v.Name]
	a.mu.Unlock()
	if ok && same(last) && v.Status != nil && same(*v.Status) {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := a.st.PutVMStatus(pctx, v.Name, st, lease.ID()); err != nil {
		if ctx.Err() == nil && !errors.Is(err, store.ErrLeaseNotFound) {
			a.log.Warn("cannot write vm status", "vm", v.Name, "err", err)
		}
		return
	}
	a.mu.Lock()
	a.status[v.Name] = st
	a.mu.Unlock()
	v.Status = &st
	if !ok || !same(last) {
		a.log.Info("vm status", "vm", v.Name, "phase", st.Phase, "pid", st.PID, "reason", st.Reason)
	}
}

// lastLine returns the last non-empty line of a (small) log file.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return string(b)
}

// killedBySeccomp reports whether a VMM's exit was SIGSYS, the signal of
// its seccomp filter (package sandbox).
func killedBySeccomp(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGSYS
}
