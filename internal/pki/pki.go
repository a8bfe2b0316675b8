// Package pki is the pool's public key infrastructure: one certificate
// authority made when the pool is created, a certificate per controller,
// host and user, revocation by a CRL, and TLS configs that make every
// connection mutual TLS.
//
// The CA lives in a directory on the controller's host (type CA), like
// kubeadm's /etc/kubernetes/pki. Every holder of a certificate has a
// credential directory with ca.pem, cert.pem, key.pem and optionally
// crl.pem (type Credential). A certificate names its holder: Organization
// is the pool, OrganizationalUnit the role and CommonName "role:name"
// (etcd takes the CommonName as its user name, so it is unique across
// roles).
//
// Both ends of a connection check the other during the TLS handshake: the
// chain to the pool CA, the identity, revocation, the pool, and then the
// caller's own rule (AllowRoles, AllowPeer). A refused peer never gets to
// send an application byte.
package pki

import (
	"crypto/x509"
	"fmt"
	"github.com/godwit-vmm/godwit/internal/limits"
	"math/big"
	"slices"
	"strings"
	"time"
)

// Role is what a certificate's holder may do in the pool.
type Role string

// The roles in a pool.
const (
	RoleController Role = "controller"
	RoleHost       Role = "host"
	RoleUser       Role = "user"
)

// known reports whether r is one of the pool's roles.
func (r Role) known() bool {
	return r == RoleController || r == RoleHost || r == RoleUser
}

// checkRole refuses a role that is not one of the pool's.
func checkRole(r Role) error {
	if !r.known() {
		return fmt.Errorf("pki: unknown role %q (want controller, host or user)", r)
	}
	return nil
}

// ValidName checks that name is a plain identifier, fit for a certificate:
// 1-63 characters of lower-case letters, digits, '.', '_' and '-',
// starting with a letter or digit.
func ValidName(name string) error {
	return validName("holder", name)
}

// validName is ValidName with the kind of name in its error.
func validName(kind, name string) error {
	if err := limits.CheckName(kind, name); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// Peer is the identity a certificate gives its holder.
type Peer struct {
	Role     Role
	Name     string
	Serial   *big.Int
	NotAfter time.Time
}

// String gives the identity as in the certificate's CommonName: "host:h1".
func (p Peer) String() string {
	return string(p.Role) + ":" + p.Name
}

// PeerOf reads the identity in a leaf certificate, which the caller has
// verified. It refuses a certificate whose CommonName and
// OrganizationalUnit disagree, or whose role is unknown.
func PeerOf(cert *x509.Certificate) (Peer, error) {
	p, err := parsePeer(cert)
	if err != nil {
		return Peer{}, fmt.Errorf("pki: certificate %q: %w", cert.Subject.CommonName, err)
	}
	return p, nil
}

// parsePeer is PeerOf with errors that do not name the certificate.
func parsePeer(cert *x509.Certificate) (Peer, error) {
	ou := cert.Subject.OrganizationalUnit
	if len(ou) != 1 {
		return Peer{}, fmt.Errorf("has %d organizational units, want 1 (the role)", len(ou))
	}
	role := Role(ou[0])
	if !role.known() {
		return Peer{}, fmt.Errorf("unknown role %q", role)
	}
	prefix, name, ok := strings.Cut(cert.Subject.CommonName, ":")
	if !ok || Role(prefix) != role {
		return Peer{}, fmt.Errorf("common name does not start with its role %q", string(role)+":")
	}
	if err := ValidName(name); err != nil {
		return Peer{}, fmt.Errorf("not a pool identity: %s", strings.TrimPrefix(err.Error(), "pki: "))
	}
	return Peer{Role: role, Name: name, Serial: cert.SerialNumber, NotAfter: cert.NotAfter}, nil
}

// AllowRoles returns a rule for ServerConfig and ClientConfig that lets in
// peers of the given roles only.
func AllowRoles(roles ...Role) func(Peer) error {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	need := strings.Join(names, " or ")
	return func(p Peer) error {
		if slices.Contains(roles, p.Role) {
			return nil
		}
		return fmt.Errorf("pki: %s may not do this (needs role %s)", p, need)
	}
}

// AllowPeer returns a rule for ServerConfig and ClientConfig that lets in
// exactly one identity: role:name.
func AllowPeer(role Role, name string) func(Peer) error {
	want := Peer{Role: role, Name: name}
	return func(p Peer) error {
		if p.Role == role && p.Name == name {
			return nil
		}
		return fmt.Errorf("pki: %s may not do this (only %s may)", p, want)
	}
}
