package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

// TestPlaceVM: spec and owner land together, bound to the lease; a second
// create, a stale spec revision, an owned VM, a stale guard and a gone lease
// are each refused with nothing written.
func TestPlaceVM(t *testing.T) {
	st, _ := newStore(t)
	cli := st.Client()
	ctx := ctxT(t, 20*time.Second)
	lease := grant(t, cli, 30)
	spec := store.VMSpec{VCPUs: 1, MemBytes: 1 << 30, Kernel: "/k", Cmdline: "x=1", Desired: store.DesiredRunning}

	rev, err := st.PlaceVM(ctx, "vm1", spec, 0, "h1", lease, store.Guard{})
	if err != nil {
		t.Fatal(err)
	}
	got, specRev, err := st.GetVMSpec(ctx, "vm1")
	if err != nil || specRev != rev || got.Kernel != "/k" || got.Cmdline != "x=1" {
		t.Fatalf("spec = %+v rev %d (%v), want kernel /k at rev %d", got, specRev, err, rev)
	}
	o, ownerRev, err := st.GetOwner(ctx, "vm1")
	if err != nil || ownerRev != rev || o.Host != "h1" || o.Lease != int64(lease) {
		t.Fatalf("owner = %+v rev %d (%v)", o, ownerRev, err)
	}
	if _, err := st.PlaceVM(ctx, "vm1", spec, 0, "h2", lease, store.Guard{}); !errors.Is(err, store.ErrSpecChanged) {
		t.Fatalf("second create = %v, want ErrSpecChanged", err)
	}
	if _, err := st.PlaceVM(ctx, "vm1", spec, specRev, "h2", lease, store.Guard{}); !errors.Is(err, store.ErrOwned) {
		t.Fatalf("place owned vm = %v, want ErrOwned", err)
	}
	bad := store.LeaderGuard("/test/nobody", 7)
	if _, err := st.PlaceVM(ctx, "vm2", spec, 0, "h1", lease, bad); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("stale guard = %v, want ErrNotLeader", err)
	}
	gone := grant(t, cli, 30)
	if _, err := cli.Revoke(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PlaceVM(ctx, "vm2", spec, 0, "h1", gone, store.Guard{}); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Fatalf("revoked lease = %v, want ErrLeaseNotFound", err)
	}
	if _, _, err := st.GetVMSpec(ctx, "vm2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused placement left a spec: %v", err)
	}
}

// TestRequestMigration: the record is written only while the owner's epoch
// is the expected one and the record is at the expected revision.
func TestRequestMigration(t *testing.T) {
	st, _ := newStore(t)
	cli := st.Client()
	ctx := ctxT(t, 20*time.Second)
	lease := grant(t, cli, 30)
	spec := store.VMSpec{VCPUs: 1, MemBytes: 1 << 30, Desired: store.DesiredRunning}
	rev, err := st.PlaceVM(ctx, "vm1", spec, 0, "h1", lease, store.Guard{})
	if err != nil {
		t.Fatal(err)
	}
	m := store.Migration{ID: "m1", VM: "vm1", Src: "h1", Dst: "h2", ExpectOwnerRev: rev, Phase: store.MigrationRequested}
	if _, err := st.RequestMigration(ctx, store.Migration{ID: "m0", VM: "vm1", ExpectOwnerRev: rev + 1, Phase: store.MigrationRequested}, 0, store.Guard{}); !errors.Is(err, store.ErrOwnerChanged) {
		t.Fatalf("stale owner revision = %v, want ErrOwnerChanged", err)
	}
	recRev, err := st.RequestMigration(ctx, m, 0, store.Guard{})
	if err != nil {
		t.Fatal(err)
	}
	got, gotRev, err := st.GetMigration(ctx, "vm1")
	if err != nil || gotRev != recRev || got.ExpectOwnerRev != rev || got.Phase != store.MigrationRequested {
		t.Fatalf("record = %+v rev %d (%v)", got, gotRev, err)
	}
	if _, err := st.RequestMigration(ctx, m, 0, store.Guard{}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second request = %v, want ErrConflict", err)
	}
}

func TestControllers(t *testing.T) {
	st, _ := newStore(t)
	cli := st.Client()
	ctx := ctxT(t, 20*time.Second)
	lease := grant(t, cli, 30)
	for _, id := range []string{"c2", "c1"} {
		if _, err := st.PutController(ctx, store.ControllerInfo{ID: id, URL: "http://" + id, Pool: "p"}, lease); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := st.ListControllers(ctx)
	if err != nil || len(cs) != 2 || cs[0].ID != "c1" || cs[1].URL != "http://c2" {
		t.Fatalf("ListControllers = %+v, %v", cs, err)
	}
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if cs, _ := st.ListControllers(ctx); len(cs) != 0 {
		t.Fatalf("controllers outlived their lease: %+v", cs)
	}
}

func TestGetVM(t *testing.T) {
	st, _ := newStore(t)
	ctx := ctxT(t, 20*time.Second)
	lease := grant(t, st.Client(), 30)
	if _, err := st.GetVM(ctx, "vm1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetVM of nothing = %v", err)
	}
	spec := store.VMSpec{VCPUs: 2, MemBytes: 1 << 30, Desired: store.DesiredRunning}
	rev, err := st.PlaceVM(ctx, "vm1", spec, 0, "h1", lease, store.Guard{})
	if err != nil {
		t.Fatal(err)
	}
	// vm10's keys share the prefix "vms/vm1" and must not leak in.
	if _, err := st.PlaceVM(ctx, "vm10", store.VMSpec{VCPUs: 1, MemBytes: 1}, 0, "h2", lease, store.Guard{}); err != nil {
		t.Fatal(err)
	}
	v, err := st.GetVM(ctx, "vm1")
	if err != nil || v.Spec.VCPUs != 2 || v.Owner.Host != "h1" || v.OwnerRev != rev || v.Migration != nil {
		t.Fatalf("GetVM = %+v, %v", v, err)
	}
}
