package migration

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/godwit-vmm/godwit/internal/migration/wire"
)

// Migration over TLS. Both VMMs hold a certificate signed by the pool's CA
// (a directory with ca.pem, cert.pem and key.pem, like QEMU's
// tls-creds-x509 dir): the source checks that the destination's
// certificate names the address it dials, the destination requires a
// certificate from the source, and each checks the other's against the
// CA. Guest memory and state then cross the network encrypted, as
// vMotion's encrypted mode and QEMU's tls-creds do. The byte stream inside
// is the same.

// TLSFiles are the names in a TLS directory.
const (
	TLSCAFile   = "ca.pem"
	TLSCertFile = "cert.pem"
	TLSKeyFile  = "key.pem"
)

// LoadTLS reads dir (TLSCAFile, TLSCertFile, TLSKeyFile) into a config
// that serves as both ends of a migration: ServerConfig and ClientConfig
// derive from it.
func LoadTLS(dir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, TLSCertFile), filepath.Join(dir, TLSKeyFile))
	if err != nil {
		return nil, fmt.Errorf("migration TLS: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, TLSCAFile))
	if err != nil {
		return nil, fmt.Errorf("migration TLS: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("migration TLS: no certificate in %s", filepath.Join(dir, TLSCAFile))
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool, // the source checks the destination
		ClientCAs:    pool, // the destination checks the source
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// TLSListener makes ln accept only TLS connections with cfg (from LoadTLS),
// with TCP keepalive set on each as on a plain one.
func TLSListener(ln net.Listener, cfg *tls.Config) net.Listener {
	return &tlsListener{Listener: ln, cfg: cfg}
}

type tlsListener struct {
	net.Listener
	cfg *tls.Config
}

func (l *tlsListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		wire.SetKeepalive(tc)
		tc.SetNoDelay(true)
	}
	return tls.Server(nc, l.cfg), nil
}

// SetDeadline bounds Accept, as on the TCP listener underneath.
func (l *tlsListener) SetDeadline(t time.Time) error {
	if dl, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
		return dl.SetDeadline(t)
	}
	return errors.New("migration: listener has no deadline")
}
