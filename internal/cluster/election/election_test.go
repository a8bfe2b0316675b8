package election_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/godwit-vmm/godwit/internal/cluster/election"
	"github.com/godwit-vmm/godwit/internal/cluster/internal/clustertest"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

func TestValidate(t *testing.T) {
	if err := (election.Config{}).Validate(); err == nil {
		t.Error("empty ID accepted")
	}
	if err := (election.Config{ID: "c1", SessionTTL: 1500 * time.Millisecond}).Validate(); err == nil {
		t.Error("fractional TTL accepted")
	}
	if err := (election.Config{ID: "c1"}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestTwoCandidates: one of two controllers leads; the other takes over when
// the first resigns, and again when a leader's session dies; every write
// guarded by a deposed leader's key fails.
func TestTwoCandidates(t *testing.T) {
	srv := clustertest.StartEtcd(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cliA := clustertest.Connect(t, srv.Endpoints())
	cliB := clustertest.Connect(t, srv.Endpoints())
	st := store.New(cliA)
	cfg := func(id string) election.Config {
		return election.Config{ID: id, SessionTTL: 2 * time.Second}
	}

	a, err := election.New(ctx, cliA, cfg("ctl-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Campaign(ctx); err != nil {
		t.Fatal(err)
	}
	if !a.IsLeader() {
		t.Fatal("a won but IsLeader is false")
	}
	b, err := election.New(ctx, cliB, cfg("ctl-b"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bLeads := make(chan error, 1)
	go func() { bLeads <- b.Campaign(ctx) }()
	waitCandidates(ctx, t, cliA, 2)
	// b is in line; the wait proves it does not take over meanwhile.
	select {
	case err := <-bLeads:
		t.Fatalf("b leads while a does: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if b.IsLeader() {
		t.Fatal("b believes it leads")
	}
	if id, err := b.Leader(ctx); err != nil || id != "ctl-a" {
		t.Fatalf("Leader() = %q, %v; want ctl-a", id, err)
	}
	guardA := store.LeaderGuard(a.LeaderKey())
	if guardA.Rev == 0 {
		t.Fatal("no leader revision")
	}
	if _, err := st.PutConfig(ctx, store.Config{BalanceLevel: 1}, store.AnyRev, guardA); err != nil {
		t.Fatalf("leader's guarded write: %v", err)
	}

	// a resigns: b takes over at once.
	began := time.Now()
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-bLeads; err != nil {
		t.Fatal(err)
	}
	t.Logf("b leads %s after a resigned", time.Since(began).Round(time.Millisecond))
	if a.IsLeader() || !b.IsLeader() {
		t.Fatalf("after resign: a leads %v, b leads %v", a.IsLeader(), b.IsLeader())
	}
	if _, err := st.PutConfig(ctx, store.Config{BalanceLevel: 2}, store.AnyRev, guardA); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("deposed leader's guarded write = %v, want ErrNotLeader", err)
	}
	guardB := store.LeaderGuard(b.LeaderKey())
	if _, err := st.PutConfig(ctx, store.Config{BalanceLevel: 3}, store.AnyRev, guardB); err != nil {
		t.Fatalf("new leader's guarded write: %v", err)
	}
	if err := a.Resign(ctx); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("Resign by a non-leader = %v, want ErrNotLeader", err)
	}

	// a campaigns again; b's session dies (its lease is revoked, as expiry
	// would do): a takes over, b knows it no longer leads, and b's guarded
	// write fails.
	aLeads := make(chan error, 1)
	go func() { aLeads <- a.Campaign(ctx) }()
	waitCandidates(ctx, t, cliA, 2) // a is in line behind b
	began = time.Now()
	if _, err := cliA.Revoke(ctx, b.Lease()); err != nil {
		t.Fatal(err)
	}
	if err := <-aLeads; err != nil {
		t.Fatal(err)
	}
	t.Logf("a leads %s after b's session lease was revoked", time.Since(began).Round(time.Millisecond))
	select {
	case <-b.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("b's session did not end")
	}
	if b.IsLeader() || !a.IsLeader() {
		t.Fatalf("after b's session died: a leads %v, b leads %v", a.IsLeader(), b.IsLeader())
	}
	if _, err := st.PutConfig(ctx, store.Config{BalanceLevel: 4}, store.AnyRev, guardB); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("dead leader's guarded write = %v, want ErrNotLeader", err)
	}
	c, _, err := st.GetConfig(ctx)
	if err != nil || c.BalanceLevel != 3 {
		t.Fatalf("config = %+v, %v; want the last legitimate write (level 3)", c, err)
	}
}

// waitCandidates polls etcd until n candidates' keys are under the
// election prefix.
func waitCandidates(ctx context.Context, t *testing.T, cli *clientv3.Client, n int64) {
	t.Helper()
	for {
		resp, err := cli.Get(ctx, election.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatalf("waiting for %d candidates: %v", n, err)
		}
		if resp.Count == n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d candidates, want %d", resp.Count, n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
