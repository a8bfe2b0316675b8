package migration_test

import (
	"net"
	"testing"

	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/testenv"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// TestMigrateTLS: a destination listening with TLS refuses a plaintext
// source and a source whose certificate another CA signed (each time the
// source keeps running, its memory verified, and the destination never
// runs the VM), then takes the VM from a source with a certificate of its
// CA: heartbeats continue and memory verifies on the destination.
func TestMigrateTLS(t *testing.T) {
	ca := testenv.NewCA(t)
	dstTLS, err := migration.LoadTLS(ca.Issue(t, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	srcTLS, err := migration.LoadTLS(ca.Issue(t, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	strangerTLS, err := migration.LoadTLS(testenv.NewCA(t).Issue(t, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	fp := newFaultPairOn(t, vm.Config{}, vm.Config{}, func(ln net.Listener) net.Listener { return migration.TLSListener(ln, dstTLS) })
	fp.workload(64, 32, steadyRate)
	addr := fp.ln.Addr().String()

	t.Log("a plaintext source")
	_, err = fp.send(addr, converging())
	fp.assertSourceSurvived(err, "does it require TLS?")
	fp.assertDestNeverRan()

	t.Log("a source with a certificate of another CA")
	opts := converging()
	opts.TLS = strangerTLS
	_, err = fp.send(addr, opts)
	fp.assertSourceSurvived(err, "certificate")
	fp.assertDestNeverRan()

	t.Log("a source with a certificate of the pool's CA")
	opts.TLS = srcTLS
	rep, err := fp.send(addr, opts)
	if err != nil {
		t.Fatalf("migration over TLS: %v", err)
	}
	r := fp.result(60e9)
	if r == nil || r.v == nil {
		t.Fatalf("Receive after the TLS migration: %+v", r)
	}
	fp.checkGuest(r.v, true)
	t.Logf("over TLS: %d rounds, %.1f MiB, total %.0f ms, downtime %.1f ms", len(rep.Rounds), float64(rep.Bytes)/(1<<20), rep.TotalMs, rep.DowntimeMs)
}
