package pooltest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/guest"
)

// TestPoolMigrateCancel: a migration capped with --bandwidth is still
// running after two seconds (uncapped, the same one takes well under
// one); `godwit vm migrate --cancel --wait` stops it. The VM stays on a,
// its owner key untouched, the same VMM running with continuous
// heartbeats and its memory verified; b keeps no VMM. A migration
// afterwards, capped at 1 MiB/s, commits once `vm migrate --set
// --bandwidth 0` lifts the cap.
func TestPoolMigrateCancel(t *testing.T) {
	l := newLab(t, 2)
	for _, h := range []string{"a", "b"} {
		l.startAgent(h, agentOpts{})
	}
	l.createVM("vm1", "a", "256M")
	pid := l.waitRunning("vm1", "a")
	o0, rev0, err := l.owner("vm1")
	if err != nil {
		t.Fatal(err)
	}
	src := l.follow("a", "vm1")
	// 96 MiB stamped, 8 MiB of it rewritten at 2000 pages/s.
	l.typeLine("a", "vm1", "W 96 8 2000", "ACK W", 30*time.Second)

	began := time.Now()
	out := l.mustCLI("vm", "migrate", "vm1", "--to", "b", "--bandwidth", "4M")
	t.Logf("godwit vm migrate vm1 --to b --bandwidth 4M: %s", strings.TrimSpace(out))
	var rec store.Migration
	waitFor(t, 20*time.Second, "the migration to report progress", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rec, _, err = l.st.GetMigration(ctx, "vm1")
		if err == nil && rec.Phase.Terminal() {
			t.Fatalf("the capped migration ended before the cancel: %+v", rec)
		}
		return err == nil && rec.Phase == store.MigrationRunning && rec.SentBytes > 0
	})
	if rec.Bandwidth != 4<<20 {
		t.Errorf("record bandwidth %d, want %d", rec.Bandwidth, 4<<20)
	}
	// The sleep proves the cap: uncapped, the migration would have ended
	// by now (the cancel below fails if it has).
	time.Sleep(time.Until(began.Add(2 * time.Second)))

	stdout, stderr, err := l.cli("vm", "migrate", "vm1", "--cancel", "--wait")
	t.Logf("godwit vm migrate vm1 --cancel --wait (%s after the start):\n%s%s", ms(time.Since(began)), stdout, stderr)
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if !strings.Contains(stdout, "cancelled; vm vm1 stays on a") {
		t.Errorf("cancel output does not say the VM stays on a: %q", stdout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	final, _, err := l.st.GetMigration(ctx, "vm1")
	if err != nil || final.ID != rec.ID || final.Phase != store.MigrationFailed || !strings.Contains(final.Error, "cancelled") {
		t.Fatalf("record after the cancel: %+v (%v)", final, err)
	}
	if o, rev, err := l.owner("vm1"); err != nil || o.Host != "a" || rev != rev0 || o.Lease != o0.Lease {
		t.Fatalf("owner after the cancel: %+v rev %d (%v), want a at rev %d", o, rev, err, rev0)
	}
	if l.vmmPID("a", "vm1") != pid {
		t.Fatalf("the VMM on a is no longer pid %d", pid)
	}
	waitFor(t, 10*time.Second, "b to remove its incoming VMM", func() bool { return len(l.vmmPIDs("b")) == 0 })

	l.typeLine("a", "vm1", "WPAUSE", "WPAUSE OK", 10*time.Second)
	verify := l.typeLine("a", "vm1", "V", "VERIFY ", 30*time.Second)
	if f := strings.Fields(verify); len(f) != 3 || f[1] != "OK" || f[2] == "0" {
		t.Errorf("verify on a after the cancel: %q, want VERIFY OK and the pages checked", verify)
	}
	src.Stop()
	g := guest.CheckHeartbeats(src.Heartbeats())
	if len(g.SeqErrors) > 0 || g.Count < 50 {
		t.Errorf("heartbeats on a across the cancelled migration: %d, errors %v", g.Count, g.SeqErrors)
	}
	t.Logf("a kept running: %d heartbeats, longest gap %s; %s", g.Count, ms(g.LongestGap), verify)

	// Again, capped at 1 MiB/s (minutes of work); lifting the cap while
	// it runs lets it complete.
	l.typeLine("a", "vm1", "WRESUME", "WRESUME OK", 10*time.Second)
	l.mustCLI("vm", "migrate", "vm1", "--to", "b", "--bandwidth", "1M")
	waitFor(t, 20*time.Second, "the capped migration to send", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rec, _, err = l.st.GetMigration(ctx, "vm1")
		return err == nil && rec.Phase == store.MigrationRunning && rec.SentBytes > 0
	})
	show := l.mustCLI("vm", "show", "vm1")
	t.Logf("godwit vm show vm1, mid-migration:\n%s", show)
	if !strings.Contains(show, "bandwidth 1.0 MiB/s") || !strings.Contains(show, " sent") {
		t.Errorf("vm show does not give the running migration's cap and bytes sent")
	}
	out = l.mustCLI("vm", "migrate", "vm1", "--set", "--bandwidth", "0", "--downtime", "100ms")
	lifted := time.Now()
	t.Logf("godwit vm migrate vm1 --set --bandwidth 0 --downtime 100ms: %s", strings.TrimSpace(out))
	waitFor(t, 20*time.Second, "the migration to commit once its cap is lifted", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rec, _, err = l.st.GetMigration(ctx, "vm1")
		if err == nil && rec.Phase.Terminal() && rec.Phase != store.MigrationCommitted {
			t.Fatalf("migration after the new limits: %+v", rec)
		}
		return err == nil && rec.Phase == store.MigrationCommitted
	})
	t.Logf("committed %s after the cap was lifted (bandwidth %d, downtime target %g ms in the record)", ms(time.Since(lifted)), rec.Bandwidth, rec.DowntimeMs)
	if rec.Bandwidth != 0 || rec.DowntimeMs != 100 {
		t.Errorf("record limits %d B/s, %g ms; want 0 and 100", rec.Bandwidth, rec.DowntimeMs)
	}
	if !strings.Contains(l.agents["a"].logText(), "migration limits passed to the source VMM") {
		t.Error("agent a did not pass the new limits to its VMM")
	}
	// The agents verify RAM checksums on every migration; the guest runs
	// on b and its own verify passes.
	l.waitRunning("vm1", "b")
	l.typeLine("b", "vm1", "WPAUSE", "WPAUSE OK", 10*time.Second)
	if v := l.typeLine("b", "vm1", "V", "VERIFY ", 30*time.Second); !strings.HasPrefix(v, "VERIFY OK") {
		t.Errorf("verify on b after the migration: %q", v)
	}
}
