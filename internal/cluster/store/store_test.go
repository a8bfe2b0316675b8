package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/internal/clustertest"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newStore starts etcd and returns a Store over a direct client.
func newStore(t *testing.T) (*store.Store, []string) {
	srv := clustertest.StartEtcd(t, "")
	return store.New(clustertest.Connect(t, srv.Endpoints())), srv.Endpoints()
}

func grant(t *testing.T, cli *clientv3.Client, ttl int64) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Grant(ctxT(t, 5*time.Second), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.ID
}

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{
		"h1": true, "host-1.example": true, "0a": true, "a_b": true,
		"": false, "-a": false, "A": false, "a/b": false, "a b": false, strings.Repeat("a", 64): false,
	} {
		if err := store.ValidName("host", name); (err == nil) != ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

// TestKeysRoundTrip writes every kind of value and reads it back, checking
// the key layout of PLATFORM.md §6 and the version field.
func TestKeysRoundTrip(t *testing.T) {
	st, _ := newStore(t)
	cli := st.Client()
	ctx := ctxT(t, 20*time.Second)
	lease := grant(t, cli, 30)

	info := store.HostInfo{Host: "h1", Addr: "10.0.0.1:7000", CPUIDHash: "abc", TSCKHz: 2_000_000,
		KVMCaps: []string{"dirty-ring"}, CPUs: 2, MemBytes: 4 << 30, StorageIDs: []string{"nfs1"}, Networks: []string{"br0"}, Agent: "test"}
	if _, err := st.RegisterHost(ctx, info, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutHostUsage(ctx, "h1", store.HostUsage{CPU: 0.5, MemUsedBytes: 1 << 30, VMs: 1, At: time.Now().UTC()}, lease); err != nil {
		t.Fatal(err)
	}
	h, err := st.GetHost(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	info.Version = store.SchemaVersion
	if !reflect.DeepEqual(*h.Info, info) {
		t.Errorf("info = %+v, want %+v", *h.Info, info)
	}
	if h.Alive == nil || h.Alive.Lease != int64(lease) || h.Usage == nil || h.Usage.CPU != 0.5 {
		t.Errorf("alive/usage = %+v / %+v", h.Alive, h.Usage)
	}
	if h.State == nil || h.State.State != store.HostActive {
		t.Fatalf("state after register = %+v, want active", h.State)
	}
	// A host the controller marked draining stays draining when it re-registers.
	if _, err := st.SetHostState(ctx, "h1", store.HostState{State: store.HostDraining}, h.StateRev, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RegisterHost(ctx, info, lease); err != nil {
		t.Fatal(err)
	}
	if h, _ = st.GetHost(ctx, "h1"); h.State.State != store.HostDraining {
		t.Errorf("state after re-register = %s, want draining", h.State.State)
	}
	if _, err := st.SetHostState(ctx, "h1", store.HostState{State: "bogus"}, store.AnyRev, store.Guard{}); err == nil {
		t.Error("bogus host state accepted")
	}
	if _, err := st.GetHost(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetHost(nope) = %v, want ErrNotFound", err)
	}

	spec := store.VMSpec{VCPUs: 1, MemBytes: 256 << 20, Disks: []store.DiskSpec{{Path: "/s/vm1.img", StorageID: "nfs1"}},
		NICs: []store.NICSpec{{Network: "br0", MAC: "52:54:00:00:00:01"}}, HA: store.HASpec{Restart: true, Priority: 5}, Desired: store.DesiredRunning}
	rev, err := st.PutVMSpec(ctx, "vm1", spec, 0, store.Guard{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutVMSpec(ctx, "vm1", spec, 0, store.Guard{}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second create of vm1 = %v, want ErrConflict", err)
	}
	got, gotRev, err := st.GetVMSpec(ctx, "vm1")
	spec.Version = store.SchemaVersion
	if err != nil || gotRev != rev || !reflect.DeepEqual(got, spec) {
		t.Errorf("GetVMSpec = %+v rev %d %v, want %+v rev %d", got, gotRev, err, spec, rev)
	}
	if _, err := st.PutVMStatus(ctx, "vm1", store.VMStatus{Host: "h1", Phase: store.VMRunning, PID: 42, Migratable: true}, lease); err != nil {
		t.Fatal(err)
	}
	if s, _, err := st.GetVMStatus(ctx, "vm1"); err != nil || s.PID != 42 {
		t.Errorf("GetVMStatus = %+v, %v", s, err)
	}
	mig := store.Migration{ID: "m1", VM: "vm1", Src: "h1", Dst: "h2", Reason: "user", Phase: store.MigrationRunning, Started: time.Now().UTC()}
	if _, err := st.PutMigration(ctx, mig, 0, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	mig.Phase = store.MigrationCommitted
	if _, err := st.PutMigration(ctx, mig, store.AnyRev, store.Guard{}); err == nil {
		t.Error("PutMigration wrote phase committed; only HandOver may")
	}
	if m, _, err := st.GetMigration(ctx, "vm1"); err != nil || m.ID != "m1" || m.Phase != store.MigrationRunning {
		t.Errorf("GetMigration = %+v, %v", m, err)
	}
	if _, err := st.PutDrain(ctx, store.Drain{Host: "h1", OnBlocked: "wait", Total: 3}, 0, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	if d, drev, err := st.GetDrain(ctx, "h1"); err != nil || d.Total != 3 {
		t.Errorf("GetDrain = %+v, %v", d, err)
	} else if err := st.DeleteDrain(ctx, "h1", drev, store.Guard{}); err != nil {
		t.Error(err)
	}
	for _, r := range []string{"r2", "r1"} {
		if _, err := st.PutRule(ctx, store.Rule{Name: r, Kind: "vm-anti-affinity", Must: true, VMs: []string{"vm1", "vm2"}}, 0, store.Guard{}); err != nil {
			t.Fatal(err)
		}
	}
	if rules, _, err := st.ListRules(ctx); err != nil || len(rules) != 2 || rules[0].Name != "r1" {
		t.Errorf("ListRules = %+v, %v", rules, err)
	}
	if _, _, err := st.GetConfig(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetConfig before write = %v, want ErrNotFound", err)
	}
	if _, err := st.PutConfig(ctx, store.Config{HostLeaseTTLSeconds: 10, BalanceLevel: 3}, 0, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	if c, _, err := st.GetConfig(ctx); err != nil || c.BalanceLevel != 3 {
		t.Errorf("GetConfig = %+v, %v", c, err)
	}

	// The raw keys are where PLATFORM.md says, each a JSON object with "version":1.
	resp, err := cli.Get(ctx, store.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, strings.TrimPrefix(string(kv.Key), store.Prefix))
		if !strings.Contains(string(kv.Value), `"version":1`) {
			t.Errorf("%s = %s: no version field", kv.Key, kv.Value)
		}
	}
	want := []string{"config", "hosts/h1/alive", "hosts/h1/info", "hosts/h1/state", "hosts/h1/usage",
		"migrations/vm1", "rules/r1", "rules/r2", "vms/vm1/spec", "vms/vm1/status"}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("keys = %q\nwant %q", keys, want)
	}

	// A value from a newer Godwit is refused, not half read.
	if _, err := cli.Put(ctx, store.VMSpecKey("vm9"), `{"version":2,"vcpus":1}`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.GetVMSpec(ctx, "vm9"); !errors.Is(err, store.ErrSchema) {
		t.Errorf("GetVMSpec(version 2) = %v, want ErrSchema", err)
	}
	if _, err := cli.Delete(ctx, store.VMSpecKey("vm9")); err != nil {
		t.Fatal(err)
	}

	// Owned VMs cannot be deleted; ListVMs joins spec, owner, status, migration.
	res, err := st.CreateOwner(ctx, "vm1", "h1", lease, store.Guard{})
	if err != nil || !res.Won {
		t.Fatalf("CreateOwner = %v, %v", res, err)
	}
	vms, _, err := st.ListVMs(ctx)
	if err != nil || len(vms) != 1 || vms[0].Owner == nil || vms[0].OwnerRev != res.Rev || vms[0].Status == nil || vms[0].Migration == nil {
		t.Fatalf("ListVMs = %+v, %v", vms, err)
	}
	if err := st.DeleteVM(ctx, "vm1", store.Guard{}); !errors.Is(err, store.ErrOwned) {
		t.Errorf("DeleteVM(owned) = %v, want ErrOwned", err)
	}
	if r, err := st.ReleaseOwner(ctx, "vm1", res.Rev); err != nil || !r.Won {
		t.Fatalf("ReleaseOwner = %v, %v", r, err)
	}
	if err := st.DeleteVM(ctx, "vm1", store.Guard{}); err != nil {
		t.Errorf("DeleteVM = %v", err)
	}
	if err := st.DeleteVM(ctx, "vm1", store.Guard{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteVM twice = %v, want ErrNotFound", err)
	}
}

// TestGuard: a write guarded by a leader key that does not match fails with
// ErrNotLeader and changes nothing; a matching guard lets it through.
func TestGuard(t *testing.T) {
	st, _ := newStore(t)
	cli := st.Client()
	ctx := ctxT(t, 10*time.Second)
	resp, err := cli.Put(ctx, "/test/leader", "me")
	if err != nil {
		t.Fatal(err)
	}
	good := store.LeaderGuard("/test/leader", resp.Header.Revision)
	bad := store.LeaderGuard("/test/leader", resp.Header.Revision+100)
	if _, err := st.PutConfig(ctx, store.Config{BalanceLevel: 1}, store.AnyRev, bad); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("PutConfig with stale guard = %v, want ErrNotLeader", err)
	}
	if _, _, err := st.GetConfig(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("stale guarded write landed: %v", err)
	}
	if _, err := st.PutConfig(ctx, store.Config{BalanceLevel: 1}, 0, good); err != nil {
		t.Fatal(err)
	}
	// The guard and the CAS are told apart.
	if _, err := st.PutConfig(ctx, store.Config{BalanceLevel: 2}, 0, good); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("guarded CAS on existing key = %v, want ErrConflict", err)
	}
	if _, err := st.CreateOwner(ctx, "vm1", "h1", grant(t, cli, 30), bad); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("CreateOwner with stale guard = %v, want ErrNotLeader", err)
	}
}

func TestCreateOwnerTwice(t *testing.T) {
	st, _ := newStore(t)
	cli := st.Client()
	ctx := ctxT(t, 10*time.Second)
	l1, l2 := grant(t, cli, 30), grant(t, cli, 30)
	r1, err := st.CreateOwner(ctx, "vm1", "h1", l1, store.Guard{})
	if err != nil || !r1.Won || r1.Rev == 0 {
		t.Fatalf("first CreateOwner = %v, %v", r1, err)
	}
	r2, err := st.CreateOwner(ctx, "vm1", "h2", l2, store.Guard{})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Won || r2.Owner == nil || r2.Owner.Host != "h1" || r2.Rev != r1.Rev {
		t.Fatalf("second CreateOwner = %v, want lost to h1 at rev %d", r2, r1.Rev)
	}
	o, rev, err := st.GetOwner(ctx, "vm1")
	if err != nil || o.Host != "h1" || o.Lease != int64(l1) || rev != r1.Rev {
		t.Fatalf("GetOwner = %+v rev %d %v", o, rev, err)
	}
	if _, err := st.CreateOwner(ctx, "vm2", "h1", clientv3.LeaseID(12345), store.Guard{}); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("CreateOwner with unknown lease = %v, want ErrLeaseNotFound", err)
	}
	if _, _, err := st.GetOwner(ctx, "vm2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("owner written despite unknown lease: %v", err)
	}
}

// TestHandOverAbortRace runs the destination's HandOver and the source's
// AbortHandOver concurrently with the same expected revision, 100 times:
// exactly one wins each time, the loser sees the winner, and the owner key
// holds the winner.
func TestHandOverAbortRace(t *testing.T) {
	st, _ := newStore(t)
	cli := st.Client()
	ctx := ctxT(t, 60*time.Second)
	srcLease, dstLease := grant(t, cli, 60), grant(t, cli, 60)
	first, err := st.CreateOwner(ctx, "vm1", "src", srcLease, store.Guard{})
	if err != nil || !first.Won {
		t.Fatal(first, err)
	}
	rev := first.Rev
	owner := "src"
	wins := map[string]int{}
	for i := 0; i < 100; i++ {
		// Whoever owns it now is the migration's source.
		src, srcL, dst, dstL := "src", srcLease, "dst", dstLease
		if owner == "dst" {
			src, srcL, dst, dstL = dst, dstL, src, srcL
		}
		rec := store.Migration{ID: fmt.Sprintf("m%d", i), Src: src, Dst: dst, Reason: "test", Phase: store.MigrationRunning}
		var wg sync.WaitGroup
		start := make(chan struct{})
		var hand, abort store.OwnerResult
		var herr, aerr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			hand, herr = st.HandOver(ctx, "vm1", rev, dst, dstL, rec)
		}()
		go func() {
			defer wg.Done()
			<-start
			abort, aerr = st.AbortHandOver(ctx, "vm1", rev, src, srcL, rec)
		}()
		close(start)
		wg.Wait()
		if herr != nil || aerr != nil {
			t.Fatalf("round %d: errors %v / %v", i, herr, aerr)
		}
		if hand.Won == abort.Won {
			t.Fatalf("round %d: hand over won=%v, abort won=%v: want exactly one", i, hand.Won, abort.Won)
		}
		win, lose, winner := hand, abort, dst
		if abort.Won {
			win, lose, winner = abort, hand, src
			wins["abort"]++
		} else {
			wins["hand over"]++
		}
		if lose.Owner == nil || lose.Owner.Host != winner || lose.Rev != win.Rev {
			t.Fatalf("round %d: loser sees %v, winner %s at rev %d", i, lose, winner, win.Rev)
		}
		o, orev, err := st.GetOwner(ctx, "vm1")
		if err != nil || o.Host != winner || orev != win.Rev || o.Migration != rec.ID {
			t.Fatalf("round %d: owner %+v rev %d (%v), want %s rev %d", i, o, orev, err, winner, win.Rev)
		}
		m, _, err := st.GetMigration(ctx, "vm1")
		wantPhase := store.MigrationCommitted
		if abort.Won {
			wantPhase = store.MigrationAborted
		}
		if err != nil || m.Phase != wantPhase || m.ExpectOwnerRev != rev {
			t.Fatalf("round %d: migration %+v (%v), want phase %s", i, m, err, wantPhase)
		}
		rev, owner = win.Rev, winner
	}
	t.Logf("100 races: %v", wins)
}

// TestRetryAndResolve: an owner change whose answer was lost is resolved by
// a linearizable read, and re-issuing it is safe.
func TestRetryAndResolve(t *testing.T) {
	st, _ := newStore(t)
	cli := st.Client()
	ctx := ctxT(t, 20*time.Second)
	srcLease, dstLease := grant(t, cli, 60), grant(t, cli, 60)
	first, err := st.CreateOwner(ctx, "vm1", "src", srcLease, store.Guard{})
	if err != nil {
		t.Fatal(err)
	}
	rec := store.Migration{ID: "m1", Src: "src", Dst: "dst", Phase: store.MigrationRunning}

	// A HandOver that never reached etcd reports ErrOutcomeUnknown...
	dead, cancel := context.WithCancel(ctx)
	cancel()
	_, err = st.HandOver(dead, "vm1", first.Rev, "dst", dstLease, rec)
	var unknown *store.OutcomeUnknownError
	if !errors.As(err, &unknown) || !errors.Is(err, store.ErrOutcomeUnknown) {
		t.Fatalf("HandOver with dead context = %v, want OutcomeUnknownError", err)
	}
	// ...and Resolve finds nothing landed yet: pending.
	res, err := st.Resolve(ctx, unknown.Change)
	if err != nil || res.Won || !res.Pending || res.Rev != first.Rev {
		t.Fatalf("Resolve before landing = %v, %v; want pending at rev %d", res, err, first.Rev)
	}
	// The destination re-issues; it lands.
	won, err := st.HandOver(ctx, "vm1", first.Rev, "dst", dstLease, rec)
	if err != nil || !won.Won {
		t.Fatalf("HandOver = %v, %v", won, err)
	}
	// Resolve now says won; re-issuing again is idempotent (recognised by
	// the migration record), and the source's abort loses for good.
	if res, err := st.Resolve(ctx, unknown.Change); err != nil || !res.Won || res.Pending || res.Rev != won.Rev {
		t.Fatalf("Resolve after landing = %v, %v", res, err)
	}
	if res, err := st.HandOver(ctx, "vm1", first.Rev, "dst", dstLease, rec); err != nil || !res.Won || res.Rev != won.Rev {
		t.Fatalf("re-issued HandOver = %v, %v; want won at rev %d", res, err, won.Rev)
	}
	ab, err := st.AbortHandOver(ctx, "vm1", first.Rev, "src", srcLease, rec)
	if err != nil || ab.Won || ab.Owner.Host != "dst" {
		t.Fatalf("AbortHandOver after commit = %v, %v", ab, err)
	}
	abortChange := store.OwnerChange{Kind: store.ChangeAbort, VM: "vm1", ExpectRev: first.Rev,
		To: store.Owner{Host: "src", Lease: int64(srcLease), Migration: "m1"}, Migration: &store.Migration{ID: "m1", Phase: store.MigrationAborted}}
	if res, err := st.Resolve(ctx, abortChange); err != nil || res.Won || res.Pending {
		t.Fatalf("Resolve of losing abort = %v, %v; want lost, decided", res, err)
	}
	// A hand over to a dead lease is refused, definitely.
	if _, err := st.HandOver(ctx, "vm1", won.Rev, "src", clientv3.LeaseID(777), store.Migration{ID: "m2"}); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("HandOver to unknown lease = %v, want ErrLeaseNotFound", err)
	}
}

// TestOwnerVanishesWithLease: revoking a host lease, or letting it expire,
// deletes the owner and alive keys, and the watches report it.
func TestOwnerVanishesWithLease(t *testing.T) {
	st, _ := newStore(t)
	cli := st.Client()
	ctx := ctxT(t, 30*time.Second)
	rev0, err := st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hosts := st.WatchHosts(ctx, rev0+1)
	owners := st.WatchOwners(ctx, rev0+1)

	for _, how := range []string{"revoke", "expire"} {
		host := "h-" + how
		hl, err := store.GrantHostLease(ctx, cli, store.LeaseConfig{TTL: 2 * time.Second, Margin: 400 * time.Millisecond, RenewEvery: 400 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.RegisterHost(ctx, store.HostInfo{Host: host}, hl.ID()); err != nil {
			t.Fatal(err)
		}
		vm := "vm-" + how
		if r, err := st.CreateOwner(ctx, vm, host, hl.ID(), store.Guard{}); err != nil || !r.Won {
			t.Fatal(r, err)
		}
		began := time.Now()
		if how == "revoke" {
			if err := hl.Revoke(ctx); err != nil {
				t.Fatal(err)
			}
		} else {
			hl.Close() // stop renewing, as a dead agent would
		}
		var sawOwnerGone, sawHostLost bool
		for !sawOwnerGone || !sawHostLost {
			select {
			case e := <-owners:
				if e.Err != nil {
					t.Fatal(e.Err)
				}
				if e.VM == vm && e.Owner == nil {
					if e.Prev == nil || e.Prev.Host != host {
						t.Errorf("owner delete event without previous owner: %+v", e)
					}
					sawOwnerGone = true
				}
			case e := <-hosts:
				if e.Err != nil {
					t.Fatal(e.Err)
				}
				if e.Host == host && e.Kind == store.HostLost {
					if e.Alive == nil || e.Alive.Lease != int64(hl.ID()) {
						t.Errorf("host lost event without the lease: %+v", e)
					}
					sawHostLost = true
				}
			case <-ctx.Done():
				t.Fatalf("%s: owner gone %v, host lost %v before timeout", how, sawOwnerGone, sawHostLost)
			}
		}
		t.Logf("%s: owner and alive keys deleted %s after the last renewal stopped", how, time.Since(began).Round(time.Millisecond))
		if _, _, err := st.GetOwner(ctx, vm); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: owner still there: %v", how, err)
		}
		h, err := st.GetHost(ctx, host)
		if err != nil || h.Alive != nil || h.Info == nil {
			t.Errorf("%s: host after lease loss = %+v, %v; want info without alive", how, h, err)
		}
	}
}
