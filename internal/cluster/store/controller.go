package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file holds the controller's compound writes: a placement (spec and
// owner in one Txn), a migration request guarded by the owner's epoch, and
// the controllers' own registration keys.

// ControllersPrefix holds one key per running controller, bound to its
// election session's lease: controllers/<id> = ControllerInfo. Followers
// use it to tell clients where the leader's API is.
const ControllersPrefix = Prefix + "controllers/"

// ControllerKey is controllers/<id>.
func ControllerKey(id string) string { return ControllersPrefix + id }

// ControllerInfo is controllers/<id>: how to reach one controller.
type ControllerInfo struct {
	Versioned
	ID    string    `json:"id"`
	URL   string    `json:"url"` // its HTTP API, e.g. http://10.0.0.1:7700
	Pool  string    `json:"pool"`
	Since time.Time `json:"since"`
}

// PutController writes controllers/<id> bound to lease (the controller's
// election session), so it disappears with the controller.
func (s *Store) PutController(ctx context.Context, info ControllerInfo, lease clientv3.LeaseID) (int64, error) {
	if err := ValidName("controller", info.ID); err != nil {
		return 0, err
	}
	if info.Since.IsZero() {
		info.Since = time.Now().UTC()
	}
	return s.putCAS(ctx, ControllerKey(info.ID), &info, AnyRev, Guard{}, clientv3.WithLease(lease))
}

// ListControllers reads every registered controller, sorted by ID.
func (s *Store) ListControllers(ctx context.Context) ([]ControllerInfo, error) {
	var out []ControllerInfo
	_, err := s.list(ctx, ControllersPrefix, func(key string, val []byte, _ int64) error {
		var c ControllerInfo
		if err := decode(key, val, &c); err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	slices.SortFunc(out, func(a, b ControllerInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, err
}

// ErrSpecChanged: PlaceVM found the spec at another revision than expected
// (for a create: the VM already exists). Nothing was written.
var ErrSpecChanged = errors.New("store: vm spec changed (or exists)")

// PlaceVM is the controller's placement write, one Txn guarded by g:
// If(ModRevision(spec) == specRev && CreateRevision(owner) == 0)
// Then(spec = spec; owner = host bound to lease). specRev 0 creates the VM;
// a start passes the spec's current revision. It returns the revision of
// the write, which is the owner's ModRevision (the new fencing epoch).
// A failed compare is ErrSpecChanged or ErrOwned; a lease that is gone is
// ErrLeaseNotFound; a failed guard ErrNotLeader.
func (s *Store) PlaceVM(ctx context.Context, vm string, spec VMSpec, specRev int64, host string, lease clientv3.LeaseID, g Guard) (int64, error) {
	if err := ValidName("vm", vm); err != nil {
		return 0, err
	}
	if err := ValidName("host", host); err != nil {
		return 0, err
	}
	if spec.VCPUs <= 0 || spec.MemBytes == 0 {
		return 0, fmt.Errorf("store: vm %s: spec needs vcpus > 0 and mem_bytes > 0", vm)
	}
	sk, ok := VMSpecKey(vm), OwnerKey(vm)
	specVal, err := encode(sk, &spec)
	if err != nil {
		return 0, err
	}
	owner := Owner{Host: host, Lease: int64(lease), Since: time.Now().UTC()}
	ownerVal, err := encode(ok, &owner)
	if err != nil {
		return 0, err
	}
	r, err := s.txn(ctx, g,
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(sk), "=", specRev),
			clientv3.Compare(clientv3.CreateRevision(ok), "=", 0),
		},
		[]clientv3.Op{clientv3.OpPut(sk, specVal), clientv3.OpPut(ok, ownerVal, clientv3.WithLease(lease))},
		[]clientv3.Op{clientv3.OpGet(sk, clientv3.WithKeysOnly()), clientv3.OpGet(ok, clientv3.WithKeysOnly())})
	what := fmt.Sprintf("store: place vm %s on host %s", vm, host)
	if errors.Is(err, ErrNotLeader) {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if err != nil {
		return 0, writeError(what, err)
	}
	if !r.succeeded {
		if got := modRevOf(r.responses[0]); got != specRev {
			return 0, fmt.Errorf("%s: %w (expected revision %d, found %d)", what, ErrSpecChanged, specRev, got)
		}
		return 0, fmt.Errorf("%s: %w", what, ErrOwned)
	}
	return r.rev, nil
}

// ErrOwnerChanged: RequestMigration found the owner key at another revision
// than the record's ExpectOwnerRev (the VM moved, stopped or its host was
// lost). Nothing was written.
var ErrOwnerChanged = errors.New("store: vm owner changed")

// RequestMigration writes migrations/<v> = m (normally phase requested),
// guarded by g, only if the owner key's ModRevision is still
// m.ExpectOwnerRev and the record's ModRevision is recRev (0: no record).
// Failed compares are ErrOwnerChanged or a *ConflictError on the record.
func (s *Store) RequestMigration(ctx context.Context, m Migration, recRev int64, g Guard) (int64, error) {
	return s.RequestMigrationIf(ctx, m, recRev, g, "", 0)
}

// RequestMigrationIf is RequestMigration that also requires key's
// ModRevision to be keyRev (0: absent): a drain requests its migrations
// only while the host's state is the one it read, so that a cancel
// written in between stops them. A failed condition is a ConflictError on key.
func (s *Store) RequestMigrationIf(ctx context.Context, m Migration, recRev int64, g Guard, key string, keyRev int64) (int64, error) {
	if err := ValidName("vm", m.VM); err != nil {
		return 0, err
	}
	if m.ID == "" || m.ExpectOwnerRev <= 0 {
		return 0, fmt.Errorf("store: request migration of vm %s: needs an ID and the owner's revision", m.VM)
	}
	if m.Phase == MigrationCommitted || m.Phase == MigrationAborted {
		return 0, fmt.Errorf("store: request migration of vm %s: phase %s is written only by HandOver/AbortHandOver", m.VM, m.Phase)
	}
	if m.Updated.IsZero() {
		m.Updated = time.Now().UTC()
	}
	mk, ok := MigrationKey(m.VM), OwnerKey(m.VM)
	val, err := encode(mk, &m)
	if err != nil {
		return 0, err
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(ok), "=", m.ExpectOwnerRev),
		clientv3.Compare(clientv3.ModRevision(mk), "=", recRev),
	}
	els := []clientv3.Op{clientv3.OpGet(ok, clientv3.WithKeysOnly()), clientv3.OpGet(mk, clientv3.WithKeysOnly())}
	if key != "" {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", keyRev))
		els = append(els, clientv3.OpGet(key, clientv3.WithKeysOnly()))
	}
	r, err := s.txn(ctx, g, cmps, []clientv3.Op{clientv3.OpPut(mk, val)}, els)
	what := fmt.Sprintf("store: request migration %s of vm %s", m.ID, m.VM)
	if errors.Is(err, ErrNotLeader) {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if err != nil {
		return 0, writeError(what, err)
	}
	if !r.succeeded {
		if got := modRevOf(r.responses[0]); got != m.ExpectOwnerRev {
			return 0, fmt.Errorf("%s: %w (expected owner revision %d, found %d)", what, ErrOwnerChanged, m.ExpectOwnerRev, got)
		}
		if got := modRevOf(r.responses[1]); got != recRev {
			return 0, &ConflictError{Key: mk, ExpectRev: recRev, ActualRev: got}
		}
		return 0, &ConflictError{Key: key, ExpectRev: keyRev, ActualRev: modRevOf(r.responses[2])}
	}
	return r.rev, nil
}

// GetVM reads one VM's keys (spec, owner, status) and its migration record
// in one linearizable Txn. It returns ErrNotFound when the VM has no spec.
func (s *Store) GetVM(ctx context.Context, vm string) (VM, error) {
	if err := ValidName("vm", vm); err != nil {
		return VM{}, err
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(Prefix+"vms/"+vm+"/", clientv3.WithPrefix()),
		clientv3.OpGet(MigrationKey(vm)),
	).Commit()
	if err != nil {
		return VM{}, fmt.Errorf("store: get vm %s: %w", vm, err)
	}
	v := VM{Name: vm}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		key := string(kv.Key)
		_, leaf, ok := splitKey(VMsPrefix, key)
		if !ok {
			continue
		}
		if err := v.decodeKey(leaf, key, kv.Value, kv.ModRevision); err != nil {
			return VM{}, err
		}
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		if err := v.decodeMigration(MigrationKey(vm), kvs[0].Value); err != nil {
			return VM{}, err
		}
	}
	if v.Spec == nil {
		return VM{}, fmt.Errorf("vm %s: %w", vm, ErrNotFound)
	}
	return v, nil
}
