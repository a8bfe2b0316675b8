package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/godwit-vmm/godwit/internal/cluster/etcdserver"
	"github.com/godwit-vmm/godwit/internal/cluster/internal/clustertest"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

// testLease is PLATFORM.md §7's one-machine tuning: TTL 3 s, renew 0.6 s,
// margin 0.6 s.
var testLease = store.LeaseConfig{TTL: 3 * time.Second, Margin: 600 * time.Millisecond, RenewEvery: 600 * time.Millisecond}

func TestLeaseConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  store.LeaseConfig
		want string
	}{
		{store.LeaseConfig{}, ""}, // 10 s, 2 s, 2 s
		{testLease, ""},
		{store.LeaseConfig{TTL: 1500 * time.Millisecond}, "whole number"},
		{store.LeaseConfig{TTL: time.Second}, "at least 2 s"},
		{store.LeaseConfig{TTL: 3 * time.Second, Margin: 2 * time.Second}, "fewer than two renewals"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestLeaseDeadlineBeforeExpiry cuts the agent's connection to etcd (a TCP
// proxy that drops everything, like the host's link going down) and checks
// that the agent's local deadline fires strictly before etcd deletes the
// keys bound to its lease, as seen by an observer on another connection.
func TestLeaseDeadlineBeforeExpiry(t *testing.T) {
	srv := clustertest.StartEtcd(t, "")
	proxy := clustertest.NewProxy(t, strings.TrimPrefix(srv.Endpoints()[0], "http://"))
	agent := clustertest.Connect(t, []string{proxy.Endpoint()})
	observer := store.New(clustertest.Connect(t, srv.Endpoints()))
	ctx := ctxT(t, 30*time.Second)

	hl, err := store.GrantHostLease(ctx, agent, testLease)
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	as := store.New(agent)
	if _, err := as.RegisterHost(ctx, store.HostInfo{Host: "h1"}, hl.ID()); err != nil {
		t.Fatal(err)
	}
	if r, err := as.CreateOwner(ctx, "vm1", "h1", hl.ID(), store.Guard{}); err != nil || !r.Won {
		t.Fatal(r, err)
	}
	// A few renewals happen; the deadline must keep moving.
	d0 := hl.Deadline()
	waitLease(ctx, t, hl, "three renewals", func(st store.LeaseStats) bool { return st.Renewals >= 3 })
	if !hl.Deadline().After(d0) {
		t.Fatalf("renewals not moving the deadline: %+v", hl.Stats())
	}

	rev, err := observer.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	owners := observer.WatchOwners(ctx, rev+1)

	proxy.Cut()
	cut := time.Now()
	lastAck := hl.Stats().LastAckedSend

	var fenced, deleted time.Time
	expired := hl.Expired()
	for fenced.IsZero() || deleted.IsZero() {
		select {
		case <-expired:
			fenced, expired = time.Now(), nil
			if !errors.Is(hl.Err(), store.ErrLeaseExpired) {
				t.Errorf("Err() = %v, want ErrLeaseExpired", hl.Err())
			}
		case e := <-owners:
			if e.Err != nil {
				t.Fatal(e.Err)
			}
			if e.VM == "vm1" && e.Owner == nil {
				deleted = time.Now()
			}
		case <-ctx.Done():
			t.Fatalf("timeout: fenced %v, deleted %v", fenced, deleted)
		}
	}
	t.Logf("TTL %s margin %s: after the cut, local deadline fired at %s, etcd deleted the owner key at %s (last acked renewal sent %s before the cut; gap %s)",
		testLease.TTL, testLease.Margin, fenced.Sub(cut).Round(time.Millisecond), deleted.Sub(cut).Round(time.Millisecond),
		cut.Sub(lastAck).Round(time.Millisecond), deleted.Sub(fenced).Round(time.Millisecond))
	if !fenced.Before(deleted) {
		t.Fatalf("local deadline %s after the cut is not before the key deletion %s", fenced.Sub(cut), deleted.Sub(cut))
	}
	if got := deleted.Sub(lastAck); got < testLease.TTL {
		t.Fatalf("key deleted %s after the last acked send, less than the TTL %s", got, testLease.TTL)
	}
	// The fence is terminal: healing the link does not revive the lease.
	// Sleeping proves that nothing happens in two renewal periods.
	proxy.Heal()
	time.Sleep(2 * testLease.RenewEvery)
	if hl.Err() == nil {
		t.Fatal("lease revived after expiry")
	}
}

// TestAdoptHostLease: an agent that restarts within the TTL adopts its lease
// and keeps its owner keys; a lease that is gone is reported as such.
func TestAdoptHostLease(t *testing.T) {
	srv := clustertest.StartEtcd(t, "")
	ctx := ctxT(t, 30*time.Second)
	first := clustertest.Connect(t, srv.Endpoints())
	hl, err := store.GrantHostLease(ctx, first, testLease)
	if err != nil {
		t.Fatal(err)
	}
	id := hl.ID()
	if r, err := store.New(first).CreateOwner(ctx, "vm1", "h1", id, store.Guard{}); err != nil || !r.Won {
		t.Fatal(r, err)
	}
	// The agent "dies": no revoke, connection gone; it stays dead for a
	// second of the lease's TTL.
	hl.Close()
	first.Close()
	time.Sleep(time.Second)

	second := clustertest.Connect(t, srv.Endpoints())
	before := time.Now()
	adopted, err := store.AdoptHostLease(ctx, second, id, testLease)
	if err != nil {
		t.Fatalf("adopt live lease: %v", err)
	}
	defer adopted.Close()
	// The adoption's renewal is sent after before: the deadline counts
	// from then.
	if d, want := adopted.Deadline(), before.Add(testLease.TTL-testLease.Margin); d.Before(want) {
		t.Errorf("adopted lease deadline %s before the renewal's send time + TTL − margin", want.Sub(d))
	}
	// The sleep proves the owner key outlives the lease's original expiry.
	time.Sleep(testLease.TTL + 500*time.Millisecond)
	if o, _, err := store.New(second).GetOwner(ctx, "vm1"); err != nil || o.Lease != int64(id) {
		t.Fatalf("owner after adoption = %+v, %v", o, err)
	}
	if adopted.Err() != nil {
		t.Fatalf("adopted lease lost: %v", adopted.Err())
	}
	if err := adopted.Revoke(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := store.AdoptHostLease(ctx, second, id, testLease); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("adopt revoked lease = %v, want ErrLeaseNotFound", err)
	}
	if _, _, err := store.New(second).GetOwner(ctx, "vm1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("owner after revoke: %v", err)
	}
}

// TestEtcdRestart stops the embedded member and starts it again on the same
// data dir and port within the lease TTL: the lease survives (the new leader
// extends it), the agent's renewals resume by themselves, and its deadline
// never fires.
func TestEtcdRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t, 30*time.Second)
	srv, err := etcdserver.Start(ctx, etcdserver.Config{Dir: dir, LogLevel: "off"})
	if err != nil {
		t.Fatal(err)
	}
	agent := clustertest.Connect(t, srv.Endpoints())
	hl, err := store.GrantHostLease(ctx, agent, testLease)
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	st := store.New(agent)
	if r, err := st.CreateOwner(ctx, "vm1", "h1", hl.ID(), store.Guard{}); err != nil || !r.Won {
		t.Fatal(r, err)
	}
	waitLease(ctx, t, hl, "a renewal", func(st store.LeaseStats) bool { return st.Renewals >= 2 })

	before := hl.Stats()
	began := time.Now()
	srv.Close()
	stopped := time.Since(began)
	time.Sleep(500 * time.Millisecond) // etcd stays down a while
	srv2, err := etcdserver.Start(ctx, srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	down := time.Since(began)

	// Wait for the first renewal after the restart.
	for hl.Stats().Renewals == before.Renewals {
		select {
		case <-hl.Expired():
			t.Fatalf("deadline fired during an etcd restart of %s: %v", down, hl.Err())
		case <-ctx.Done():
			t.Fatal("renewals did not resume")
		case <-time.After(20 * time.Millisecond):
		}
	}
	resumed := time.Since(began)
	after := hl.Stats()
	t.Logf("etcd down %s (close %s, ready %s); renewals resumed %s after the stop; time left to the deadline then %s (TTL %s, margin %s)",
		down.Round(time.Millisecond), stopped.Round(time.Millisecond), srv2.ReadyAfter().Round(time.Millisecond),
		resumed.Round(time.Millisecond), after.TimeToDeadline.Round(time.Millisecond), testLease.TTL, testLease.Margin)

	// Keep running past the pre-restart expiry: no fence, owner intact.
	// The sleep proves that the lease is not lost meanwhile.
	time.Sleep(testLease.TTL)
	if err := hl.Err(); err != nil {
		t.Fatalf("lease lost after etcd restart: %v", err)
	}
	o, _, err := st.GetOwner(ctx, "vm1")
	if err != nil || o.Lease != int64(hl.ID()) {
		t.Fatalf("owner after restart = %+v, %v", o, err)
	}
	ttl, err := agent.TimeToLive(ctx, hl.ID())
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease TTL after restart = %+v, %v", ttl, err)
	}
}

// waitLease polls hl's stats until cond holds; the lease expiring first,
// or ctx ending, fails t.
func waitLease(ctx context.Context, t *testing.T, hl *store.HostLease, what string, cond func(store.LeaseStats) bool) {
	t.Helper()
	for !cond(hl.Stats()) {
		select {
		case <-hl.Expired():
			t.Fatalf("lease expired waiting for %s: %v", what, hl.Err())
		case <-ctx.Done():
			t.Fatalf("no %s: %+v", what, hl.Stats())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestLeaseDeadlineOnFakeClock runs the lease's clock by hand against a
// real etcd: each renewal moves the deadline to its send time + TTL −
// margin exactly; once renewals fail, the lease expires at the last
// deadline to the nanosecond, not before, and stays expired.
func TestLeaseDeadlineOnFakeClock(t *testing.T) {
	srv := clustertest.StartEtcd(t, "")
	proxy := clustertest.NewProxy(t, strings.TrimPrefix(srv.Endpoints()[0], "http://"))
	agent := clustertest.Connect(t, []string{proxy.Endpoint()})
	ctx := ctxT(t, 60*time.Second)
	clock := clockwork.NewFakeClock()
	cfg := testLease
	cfg.Clock = clock
	t0 := clock.Now()
	hl, err := store.GrantHostLease(ctx, agent, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	life := cfg.TTL - cfg.Margin
	// Idle, the lease waits on two timers: the renewal ticker and the
	// deadline's.
	idle := func() {
		t.Helper()
		if err := clock.BlockUntilContext(ctx, 2); err != nil {
			t.Fatalf("the lease's timers are not armed: %v", err)
		}
	}
	// tick moves the clock one renewal period and waits for the renewal.
	tick := func(ok bool) {
		t.Helper()
		before := hl.Stats()
		clock.Advance(cfg.RenewEvery)
		if ok {
			waitLease(ctx, t, hl, "renewal", func(st store.LeaseStats) bool { return st.Renewals > before.Renewals })
		} else {
			waitLease(ctx, t, hl, "failed renewal", func(st store.LeaseStats) bool { return st.FailuresInARow > before.FailuresInARow })
		}
		idle()
	}
	idle()
	if d := hl.Deadline(); !d.Equal(t0.Add(life)) {
		t.Fatalf("deadline after the grant %s after it, want %s", d.Sub(t0), life)
	}
	tick(true)
	tick(true)
	last := t0.Add(2 * cfg.RenewEvery) // the last acknowledged send
	if st := hl.Stats(); !st.LastAckedSend.Equal(last) || !st.Deadline.Equal(last.Add(life)) {
		t.Fatalf("after two renewals: last acked send %s, deadline %s after the grant; want %s, %s",
			st.LastAckedSend.Sub(t0), st.Deadline.Sub(t0), last.Sub(t0), last.Add(life).Sub(t0))
	}

	proxy.Cut()
	for clock.Now().Add(cfg.RenewEvery).Before(last.Add(life)) {
		tick(false)
	}
	clock.Advance(clock.Until(last.Add(life)) - time.Nanosecond)
	idle()
	if err := hl.Err(); err != nil {
		t.Fatalf("expired a nanosecond before the deadline: %v", err)
	}
	clock.Advance(time.Nanosecond)
	select {
	case <-hl.Expired():
	case <-ctx.Done():
		t.Fatal("not expired at the deadline")
	}
	if st := hl.Stats(); !errors.Is(hl.Err(), store.ErrLeaseExpired) || !st.DeadlinePassed || !st.Deadline.Equal(last.Add(life)) {
		t.Fatalf("at the deadline: Err %v, stats %+v", hl.Err(), st)
	}

	// Terminal: with the link back, no renewal revives it.
	proxy.Heal()
	renewals := hl.Stats().Renewals
	clock.Advance(3 * cfg.RenewEvery)
	// The sleep proves that no renewal goes out: one would be acknowledged
	// well within it on loopback.
	time.Sleep(200 * time.Millisecond)
	if st := hl.Stats(); st.Renewals != renewals || hl.Err() == nil {
		t.Fatalf("lease revived after expiry: %+v", st)
	}
}
