package migration_test

import (
	"net"
	"os"
	"testing"
	"time"

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

// TestDestinationOneSession: a destination told its migration's session
// (as in a pool) refuses a peer that names another session at HELLO, and a
// peer that connects and says nothing delays nobody: the real migration
// commits, guest verified, while that peer still holds its connection.
func TestDestinationOneSession(t *testing.T) {
	want := migration.SessionFor("m-real")
	fp := newFaultPairOn(t, vm.Config{}, vm.Config{}, nil, func(d *migration.Destination) {
		d.Session = &want
		d.HelloTimeout = time.Minute
	})
	fp.workload(64, 32, steadyRate)
	addr := fp.ln.Addr().String()

	staller, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer staller.Close()

	t.Log("a source of another migration")
	opts := converging()
	other := migration.SessionFor("m-other")
	opts.Session = &other
	_, err = fp.send(addr, opts)
	fp.assertSourceSurvived(err, "not the one this destination waits for")
	fp.assertDestNeverRan()

	t.Log("the real source, while a silent peer holds a connection")
	opts.Session = &want
	began := time.Now()
	rep, err := fp.send(addr, opts)
	if err != nil {
		t.Fatalf("the real migration: %v", err)
	}
	r := fp.result(60 * time.Second)
	if r == nil || r.v == nil {
		t.Fatalf("Receive: %+v", r)
	}
	fp.checkGuest(r.v, true)
	staller.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := staller.Read(make([]byte, 1)); !os.IsTimeout(err) {
		t.Errorf("the silent peer's connection ended (%v): the test proves nothing about it", err)
	}
	t.Logf("committed in %.0f ms (downtime %.1f ms) beside a silent peer; took %s", rep.TotalMs, rep.DowntimeMs, time.Since(began).Round(time.Millisecond))
}
