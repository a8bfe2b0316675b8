package vmmcmd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/pki"
)

// migrationSecurity is how a VMM's migrations (and, in a pool, its etcd
// client) are protected. In a pool (--credential) both ends hold their
// host's certificate and each accepts only the other host of that one
// migration: the destination the --migration-peer its agent named, the
// source the MigrateRequest's Peer. Standalone, --migration-tls-dir
// accepts any certificate of its CA, as QEMU's tls-creds-x509 does.
// Without either, migrations are plain TCP.
type migrationSecurity struct {
	cred *pki.Credential // pool member
	dir  *tls.Config     // standalone --migration-tls-dir
	peer string          // incoming: the only source host
}

func loadMigrationSecurity(tlsDir, credential, peer string) (*migrationSecurity, error) {
	sec := &migrationSecurity{peer: peer}
	var err error
	switch {
	case tlsDir != "" && credential != "":
		return nil, errors.New("--migration-tls-dir and --credential: give one (a pool member uses its host credential)")
	case credential != "":
		if sec.cred, err = pki.LoadCredential(credential); err != nil {
			return nil, fmt.Errorf("--credential: %w", err)
		}
		if p := sec.cred.Peer(); p.Role != pki.RoleHost {
			return nil, fmt.Errorf("--credential %s holds %s's certificate: a VMM uses its host's", credential, p)
		}
		if peer != "" {
			if err := pki.ValidName(peer); err != nil {
				return nil, fmt.Errorf("--migration-peer: %w", err)
			}
		}
	case tlsDir != "":
		if sec.dir, err = migration.LoadTLS(tlsDir); err != nil {
			return nil, fmt.Errorf("--migration-tls-dir: %w", err)
		}
	}
	if peer != "" && sec.cred == nil {
		return nil, errors.New("--migration-peer needs --credential")
	}
	return sec, nil
}

// serverTLS is the incoming side's TLS; nil for plain TCP.
func (s *migrationSecurity) serverTLS() *tls.Config {
	switch {
	case s.cred != nil && s.peer != "":
		return s.cred.ServerConfig(pki.AllowPeer(pki.RoleHost, s.peer))
	case s.cred != nil:
		return s.cred.ServerConfig(pki.AllowRoles(pki.RoleHost))
	}
	return s.dir
}

// clientTLS is the outgoing side's TLS towards host peer; nil for plain
// TCP. A pool member must be told its peer.
func (s *migrationSecurity) clientTLS(peer string) (*tls.Config, error) {
	if s.cred == nil {
		return s.dir, nil
	}
	if peer == "" {
		return nil, errors.New("this VMM migrates with its host's credential: the request must name the destination host (peer)")
	}
	return s.cred.ClientConfig("", pki.AllowPeer(pki.RoleHost, peer)), nil
}

// etcdTLS is the pool member's etcd client TLS; nil outside a pool.
func (s *migrationSecurity) etcdTLS() *tls.Config {
	if s.cred == nil {
		return nil
	}
	return s.cred.ClientConfig("", pki.AllowRoles(pki.RoleController))
}

// checkPlainIncoming allows an incoming migration without TLS only on a
// loopback address, or with --insecure-migration, which it says aloud.
func checkPlainIncoming(addr string, sec *migrationSecurity, insecure bool, stderr io.Writer) error {
	if sec.serverTLS() != nil {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--incoming tcp:%s: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() || host == "localhost" {
		return nil
	}
	if !insecure {
		return fmt.Errorf("--incoming tcp:%s without TLS: anyone who reaches the port could supply the VM; use --credential or --migration-tls-dir, or --insecure-migration if this network is trusted", addr)
	}
	fmt.Fprintf(stderr, "godwit: WARNING: --insecure-migration: tcp:%s takes a VM from anyone who reaches it, unauthenticated and unencrypted\n", addr)
	return nil
}
