package pooltest

import (
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/testenv"
)

// TestPoolMigrateTLS: agents started with --migration-tls-dir (each host a
// certificate of the pool's CA naming its migration address) migrate a VM
// over TLS: it commits and the guest verifies its memory on b. Host c
// holds a certificate of another CA: a migration to it fails on the
// certificate and the VM keeps running on b.
func TestPoolMigrateTLS(t *testing.T) {
	l := newLab(t, 3)
	ca := testenv.NewCA(t)
	for _, h := range []string{"a", "b"} {
		l.startAgent(h, agentOpts{tlsDir: ca.Issue(t, l.hosts[h].MigAddr.String())})
	}
	l.startAgent("c", agentOpts{tlsDir: testenv.NewCA(t).Issue(t, l.hosts["c"].MigAddr.String())})
	l.createVM("vm1", "a", "128M")
	l.waitRunning("vm1", "a")
	l.typeLine("a", "vm1", "W 32 8 1000", "ACK W", 20*time.Second)
	out := l.mustCLI("vm", "migrate", "vm1", "--to", "b", "--wait")
	if !strings.Contains(out, "now runs on b") {
		t.Fatalf("migrate over TLS: %s", out)
	}
	l.waitRunning("vm1", "b")
	verify := l.typeLine("b", "vm1", "V", "VERIFY ", 30*time.Second)
	if f := strings.Fields(verify); len(f) != 3 || f[1] != "OK" || f[2] == "0" {
		t.Errorf("verify on b after the TLS migration: %q", verify)
	}
	t.Logf("over TLS: %s", verify)

	pid := l.waitRunning("vm1", "b")
	out, errOut, err := l.cli("vm", "migrate", "vm1", "--to", "c", "--wait")
	t.Logf("migrate to a host of another CA: %v\n%s%s", err, out, errOut)
	if err == nil || !strings.Contains(out+errOut, "certificate") {
		t.Errorf("a migration to a host with another CA's certificate: %v, want a certificate error", err)
	}
	if o, _, err := l.owner("vm1"); err != nil || o.Host != "b" || l.vmmPID("b", "vm1") != pid {
		t.Fatalf("after the refused migration: owner %+v (%v), want the same VMM on b", o, err)
	}
	verify = l.typeLine("b", "vm1", "V", "VERIFY ", 30*time.Second)
	if !strings.HasPrefix(verify, "VERIFY OK") {
		t.Errorf("verify on b after the refused migration: %q", verify)
	}
}
