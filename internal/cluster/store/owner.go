package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ChangeKind names an owner change.
type ChangeKind string

// Owner changes.
const (
	ChangeCreate   ChangeKind = "create owner"    // placement: only if no owner
	ChangeHandOver ChangeKind = "hand over"       // destination takes the VM
	ChangeAbort    ChangeKind = "abort hand over" // source keeps the VM
	ChangeRelease  ChangeKind = "release owner"   // VM stopped: owner deleted
)

// OwnerChange is one attempted owner write, as sent. It is what Resolve
// needs to tell whether the write landed.
type OwnerChange struct {
	Kind ChangeKind
	VM   string
	// ExpectRev is the fencing epoch the change is guarded by: the owner
	// key's ModRevision (0 for ChangeCreate, which requires no owner).
	ExpectRev int64
	// To is the owner value written (unused for ChangeRelease).
	To Owner
	// Migration is the record written in the same Txn (HandOver: phase
	// committed; AbortHandOver: phase aborted), nil otherwise.
	Migration *Migration
}

// OwnerResult is the outcome of an owner change or of Resolve. A lost
// change is a normal result (Won false), not an error: errors are kept for
// "nothing is known" (ErrOutcomeUnknown) and for refusals (ErrNotLeader,
// ErrLeaseNotFound).
type OwnerResult struct {
	// Won: the change is in effect — this call's write landed, or an
	// earlier attempt of the very same change did (a retry after an
	// unknown outcome).
	Won bool
	// Pending (Resolve only): neither this change nor a competing one is
	// visible yet; the original write may still land. Re-issue the same
	// change to decide: its guard lets at most one write through.
	Pending bool
	// Owner is the owner value now (nil: no owner), Rev its ModRevision,
	// the fencing epoch (0: no owner).
	Owner *Owner
	Rev   int64
	// Migration is the VM's migration record now, nil if none.
	Migration *Migration
}

func (r OwnerResult) String() string {
	owner := "none"
	if r.Owner != nil {
		owner = fmt.Sprintf("%s (lease %x)", r.Owner.Host, r.Owner.Lease)
	}
	return fmt.Sprintf("won=%v pending=%v owner=%s rev=%d", r.Won, r.Pending, owner, r.Rev)
}

// GetOwner reads vms/<v>/owner and its ModRevision (the fencing epoch).
// It returns ErrNotFound when the VM has no owner.
func (s *Store) GetOwner(ctx context.Context, vm string) (Owner, int64, error) {
	var o Owner
	rev, err := s.get(ctx, OwnerKey(vm), &o)
	return o, rev, err
}

// CreateOwner makes host the VM's owner, bound to lease, only if the VM has
// no owner (If(CreateRevision(owner) == 0)). The controller places with it
// (pass the leader Guard); Result.Rev is the new fencing epoch.
func (s *Store) CreateOwner(ctx context.Context, vm, host string, lease clientv3.LeaseID, g Guard) (OwnerResult, error) {
	if err := ValidName("host", host); err != nil {
		return OwnerResult{}, err
	}
	return s.changeOwner(ctx, OwnerChange{
		Kind: ChangeCreate, VM: vm,
		To: Owner{Host: host, Lease: int64(lease), Since: time.Now().UTC()},
	}, g)
}

// HandOver is the destination's switchover: If(ModRevision(owner) ==
// expectRev) Then(owner = toHost bound to toLease; migration record =
// rec with phase committed). The destination resumes the VM only if
// Result.Won. rec.ID must be set; VM, ExpectOwnerRev, Dst and Phase are
// filled in.
func (s *Store) HandOver(ctx context.Context, vm string, expectRev int64, toHost string, toLease clientv3.LeaseID, rec Migration) (OwnerResult, error) {
	return s.swap(ctx, ChangeHandOver, vm, expectRev, toHost, toLease, rec)
}

// AbortHandOver is the source's mirror image of HandOver: the same guard
// If(ModRevision(owner) == expectRev), then owner = srcHost bound to
// srcLease and the record's phase aborted. The source resumes the paused VM
// only if Result.Won; exactly one of HandOver and AbortHandOver with the
// same expectRev can win.
func (s *Store) AbortHandOver(ctx context.Context, vm string, expectRev int64, srcHost string, srcLease clientv3.LeaseID, rec Migration) (OwnerResult, error) {
	return s.swap(ctx, ChangeAbort, vm, expectRev, srcHost, srcLease, rec)
}

func (s *Store) swap(ctx context.Context, kind ChangeKind, vm string, expectRev int64, host string, lease clientv3.LeaseID, rec Migration) (OwnerResult, error) {
	if err := ValidName("host", host); err != nil {
		return OwnerResult{}, err
	}
	if rec.ID == "" {
		return OwnerResult{}, fmt.Errorf("store: %s vm %s: migration record needs an ID", kind, vm)
	}
	if expectRev <= 0 {
		return OwnerResult{}, fmt.Errorf("store: %s vm %s: expected owner revision %d: must be the owner key's ModRevision (> 0)", kind, vm, expectRev)
	}
	now := time.Now().UTC()
	rec.VM, rec.ExpectOwnerRev, rec.Updated = vm, expectRev, now
	if kind == ChangeHandOver {
		rec.Phase, rec.Dst = MigrationCommitted, host
	} else {
		rec.Phase, rec.Src = MigrationAborted, host
	}
	return s.changeOwner(ctx, OwnerChange{
		Kind: kind, VM: vm, ExpectRev: expectRev,
		To:        Owner{Host: host, Lease: int64(lease), Migration: rec.ID, Since: now},
		Migration: &rec,
	}, Guard{})
}

// ReleaseOwner deletes the owner key if its ModRevision is expectRev: the
// owning agent does this after it has stopped the VM for good.
func (s *Store) ReleaseOwner(ctx context.Context, vm string, expectRev int64) (OwnerResult, error) {
	if expectRev <= 0 {
		return OwnerResult{}, fmt.Errorf("store: release owner of vm %s: expected owner revision %d must be > 0", vm, expectRev)
	}
	return s.changeOwner(ctx, OwnerChange{Kind: ChangeRelease, VM: vm, ExpectRev: expectRev}, Guard{})
}

// changeOwner sends c as one Txn. On a lost compare it reads the owner and
// the migration record in the same Txn (Else), so the result is exact.
func (s *Store) changeOwner(ctx context.Context, c OwnerChange, g Guard) (OwnerResult, error) {
	if err := ValidName("vm", c.VM); err != nil {
		return OwnerResult{}, err
	}
	ok := OwnerKey(c.VM)
	mk := MigrationKey(c.VM)
	var cmp clientv3.Cmp
	var then []clientv3.Op
	switch c.Kind {
	case ChangeCreate:
		cmp = clientv3.Compare(clientv3.CreateRevision(ok), "=", 0)
	default:
		cmp = clientv3.Compare(clientv3.ModRevision(ok), "=", c.ExpectRev)
	}
	if c.Kind == ChangeRelease {
		then = append(then, clientv3.OpDelete(ok))
	} else {
		val, err := encode(ok, &c.To)
		if err != nil {
			return OwnerResult{}, err
		}
		then = append(then, clientv3.OpPut(ok, val, clientv3.WithLease(clientv3.LeaseID(c.To.Lease))))
	}
	if c.Migration != nil {
		val, err := encode(mk, c.Migration)
		if err != nil {
			return OwnerResult{}, err
		}
		then = append(then, clientv3.OpPut(mk, val))
	}
	els := []clientv3.Op{clientv3.OpGet(ok), clientv3.OpGet(mk)}

	r, err := s.txn(ctx, g, []clientv3.Cmp{cmp}, then, els)
	switch {
	case errors.Is(err, ErrNotLeader):
		return OwnerResult{}, fmt.Errorf("store: %s vm %s: %w", c.Kind, c.VM, err)
	case isUnknownOutcome(err):
		return OwnerResult{}, &OutcomeUnknownError{Change: c, Err: err}
	case err != nil:
		return OwnerResult{}, writeError(fmt.Sprintf("store: %s vm %s", c.Kind, c.VM), err)
	}
	if r.succeeded {
		res := OwnerResult{Won: true, Migration: c.Migration}
		if c.Kind != ChangeRelease {
			to := c.To
			res.Owner, res.Rev = &to, r.rev
		}
		return res, nil
	}
	res, err := s.classify(c, r.responses[0], r.responses[1])
	res.Pending = false // the compare failed, so this change can no longer land
	return res, err
}

// Resolve tells, with one linearizable read of the owner key and the
// migration record, whether an owner change whose outcome was unknown
// landed. Result.Won: it did. Result.Pending: no write for this epoch is
// visible yet, and the original may still land — re-issue the same change
// (same expectRev; for HandOver/AbortHandOver the same migration ID) to
// decide. Otherwise the competing change won.
func (s *Store) Resolve(ctx context.Context, c OwnerChange) (OwnerResult, error) {
	if err := ValidName("vm", c.VM); err != nil {
		return OwnerResult{}, err
	}
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(OwnerKey(c.VM)), clientv3.OpGet(MigrationKey(c.VM))).Commit()
	if err != nil {
		return OwnerResult{}, fmt.Errorf("store: resolve %s vm %s: %w", c.Kind, c.VM, err)
	}
	return s.classify(c, resp.Responses[0], resp.Responses[1])
}

// classify decides from the current owner and migration record whether c
// is in effect. Owner changes of a migration are recognised by the record
// (same ID, same expected epoch, our phase), which was written in the same
// Txn as the owner; others by the owner value itself.
func (s *Store) classify(c OwnerChange, ownerOp, migOp *pb.ResponseOp) (OwnerResult, error) {
	var res OwnerResult
	if kvs := ownerOp.GetResponseRange().Kvs; len(kvs) > 0 {
		res.Owner, res.Rev = new(Owner), kvs[0].ModRevision
		if err := decode(OwnerKey(c.VM), kvs[0].Value, res.Owner); err != nil {
			return OwnerResult{}, err
		}
	}
	if kvs := migOp.GetResponseRange().Kvs; len(kvs) > 0 {
		res.Migration = new(Migration)
		if err := decode(MigrationKey(c.VM), kvs[0].Value, res.Migration); err != nil {
			return OwnerResult{}, err
		}
	}
	switch c.Kind {
	case ChangeCreate:
		res.Won = res.Owner != nil && res.Owner.same(c.To)
		res.Pending = res.Owner == nil
	case ChangeRelease:
		res.Won = res.Owner == nil
		res.Pending = res.Owner != nil && res.Rev == c.ExpectRev
	default: // hand over, abort
		m := res.Migration
		switch {
		case m != nil && c.Migration != nil && m.ID == c.Migration.ID && m.ExpectOwnerRev == c.ExpectRev &&
			(m.Phase == MigrationCommitted || m.Phase == MigrationAborted):
			res.Won = m.Phase == c.Migration.Phase
		case res.Owner != nil && res.Owner.same(c.To) && res.Rev > c.ExpectRev:
			res.Won = true
		case res.Owner != nil && res.Rev == c.ExpectRev:
			res.Pending = true
		}
	}
	return res, nil
}
