package vmmcmd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

// ownership is a VMM's part in the pool's fencing protocol (PLATFORM.md
// §6, "Migration switchover"): the owner key of its VM in etcd decides
// which side of a migration runs the VM. A destination runs it only after
// its handover transaction wins; a source that failed after its pause
// resumes only after the mirror transaction wins. Both are guarded by the
// owner key's ModRevision when the migration started, so exactly one side
// can win.
type ownership struct {
	st    *store.Store
	cli   *clientv3.Client
	vm    string
	host  string
	lease clientv3.LeaseID
	log   *slog.Logger
}

// newOwnership connects to etcd for the VMM named vm, running on host under
// the host's lease. Nil when endpoints is empty (a VMM outside a pool).
func newOwnership(endpoints, vm, host string, lease int64, tlsCfg *tls.Config, log *slog.Logger) (*ownership, error) {
	if endpoints == "" {
		return nil, nil
	}
	if host == "" || lease == 0 {
		return nil, errors.New("--etcd needs --owner-host and --owner-lease (the host agent passes them)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := store.Connect(ctx, store.ClientConfig{Endpoints: strings.Split(endpoints, ","), TLS: tlsCfg})
	if err != nil {
		return nil, fmt.Errorf("--etcd %s: %w", endpoints, err)
	}
	return &ownership{st: store.New(cli), cli: cli, vm: vm, host: host, lease: clientv3.LeaseID(lease), log: log}, nil
}

func (o *ownership) Close() {
	if o != nil {
		o.cli.Close()
	}
}

// record returns the migration record to write with the owner change.
func (o *ownership) record(ctx context.Context, migrationID string) store.Migration {
	rec, _, err := o.st.GetMigration(ctx, o.vm)
	if err != nil || rec.ID != migrationID {
		rec = store.Migration{ID: migrationID, VM: o.vm}
	}
	return rec
}

// settle turns an owner change whose outcome is unknown into a decision:
// re-issue the very same change (its guard lets at most one write through)
// and read back with Resolve, until etcd answers or ctx ends.
func (o *ownership) settle(ctx context.Context, res store.OwnerResult, err error, again func() (store.OwnerResult, error)) (bool, error) {
	for {
		var unknown *store.OutcomeUnknownError
		if !errors.As(err, &unknown) {
			if err != nil {
				return false, err
			}
			return res.Won, nil
		}
		o.log.Warn("owner change outcome unknown; asking etcd again", "vm", o.vm, "err", err)
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("ownership of %s undecided: %w", o.vm, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
		r, rerr := o.st.Resolve(ctx, unknown.Change)
		if rerr == nil && !r.Pending {
			return r.Won, nil
		}
		res, err = again()
	}
}

// commitGate is the destination's handover: it may run the VM only if it
// now owns it.
func (o *ownership) commitGate(expectRev int64, migrationID string) func(context.Context) error {
	return func(ctx context.Context) error {
		rec := o.record(ctx, migrationID)
		hand := func() (store.OwnerResult, error) {
			return o.st.HandOver(ctx, o.vm, expectRev, o.host, o.lease, rec)
		}
		res, err := hand()
		won, err := o.settle(ctx, res, err, hand)
		if err != nil {
			return err
		}
		if !won {
			return fmt.Errorf("the handover of %s lost: the owner key moved on from revision %d (the source took the VM back)", o.vm, expectRev)
		}
		o.log.Info("took ownership", "vm", o.vm, "host", o.host, "migration", migrationID)
		return nil
	}
}

// resumeGate is the source's abort: it may resume only if it took the VM
// back; if the destination's handover won, it must stop.
func (o *ownership) resumeGate(expectRev int64, migrationID string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		rec := o.record(ctx, migrationID)
		abort := func() (store.OwnerResult, error) {
			return o.st.AbortHandOver(ctx, o.vm, expectRev, o.host, o.lease, rec)
		}
		res, err := abort()
		return o.settle(ctx, res, err, abort)
	}
}
