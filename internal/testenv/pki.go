package testenv

import (
	"net"
	"path/filepath"
	"testing"

	"github.com/godwit-vmm/godwit/internal/pki"
)

// PoolPKI is a pool's CA in a test's temporary directory.
type PoolPKI struct {
	CA *pki.CA
}

// NewPoolPKI makes the CA of pool for t.
func NewPoolPKI(t testing.TB, pool string) *PoolPKI {
	t.Helper()
	ca, err := pki.Init(filepath.Join(t.TempDir(), "pki"), pool)
	if err != nil {
		t.Fatal(err)
	}
	return &PoolPKI{CA: ca}
}

// Dir is the CA directory (a controller's --pki).
func (p *PoolPKI) Dir() string { return p.CA.Dir() }

// Issue writes a credential directory for role:name serving on ips and
// returns its path.
func (p *PoolPKI) Issue(t testing.TB, role pki.Role, name string, ips ...string) string {
	t.Helper()
	var o pki.IssueOptions
	for _, ip := range ips {
		o.IPs = append(o.IPs, net.ParseIP(ip))
	}
	b, err := p.CA.Issue(role, name, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), string(role)+"-"+name)
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Credential is Issue, loaded.
func (p *PoolPKI) Credential(t testing.TB, role pki.Role, name string, ips ...string) *pki.Credential {
	t.Helper()
	c, err := pki.LoadCredential(p.Issue(t, role, name, ips...))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
