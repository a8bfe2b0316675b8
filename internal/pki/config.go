package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerConfig returns a TLS 1.3 config for a server that requires a
// client certificate from the pool CA. During the handshake it refuses a
// client whose certificate is not a pool identity, is revoked or is from
// another pool, and then one that allow (if not nil) refuses.
func (c *Credential) ServerConfig(allow func(Peer) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.current(), nil
		},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        c.roots,
		VerifyConnection: c.verifier(x509.ExtKeyUsageClientAuth, allow),
	}
}

// ClientConfig returns a TLS 1.3 config for a client that presents its
// certificate and checks the server's as ServerConfig checks a client's,
// plus its host name against serverName.
//
// With serverName empty the host name is not checked, but the rest is.
// crypto/tls checks the chain and the name together, and will not
// handshake without a name unless InsecureSkipVerify is set; so then it
// is set, which turns off only that check: the handshake still proves
// that the server holds the key of the certificate it sent, and
// VerifyConnection verifies the chain against Roots itself (it always
// does), so the pool identity, which allow may check, stands in for the
// name.
func (c *Credential) ClientConfig(serverName string, allow func(Peer) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.current(), nil
		},
		RootCAs:            c.roots,
		ServerName:         serverName,
		InsecureSkipVerify: serverName == "",
		VerifyConnection:   c.verifier(x509.ExtKeyUsageServerAuth, allow),
	}
}

// verifier returns the VerifyConnection callback of both configs: it
// checks the peer's certificate for usage, then applies allow.
func (c *Credential) verifier(usage x509.ExtKeyUsage, allow func(Peer) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		c.refresh() // pick up a new crl.pem
		p, err := c.checkPeer(cs.PeerCertificates, usage)
		if err != nil {
			return err
		}
		if allow != nil {
			return allow(p)
		}
		return nil
	}
}

// checkPeer checks the certificate a peer sent: signed by the pool CA for
// usage, a pool identity, not revoked, of this pool.
func (c *Credential) checkPeer(certs []*x509.Certificate, usage x509.ExtKeyUsage) (Peer, error) {
	if len(certs) == 0 {
		return Peer{}, errors.New("pki: the peer sent no certificate")
	}
	leaf := certs[0]
	opts := x509.VerifyOptions{Roots: c.roots, KeyUsages: []x509.ExtKeyUsage{usage}}
	if _, err := leaf.Verify(opts); err != nil {
		return Peer{}, fmt.Errorf("pki: peer certificate %q does not verify: %v", leaf.Subject.CommonName, err)
	}
	p, err := PeerOf(leaf)
	if err != nil {
		return Peer{}, err
	}
	if c.Revoked(p.Serial) {
		return Peer{}, fmt.Errorf("pki: certificate of %s (serial %s) is revoked", p, p.Serial)
	}
	if pool := poolOf(leaf); pool != c.Pool() {
		return Peer{}, fmt.Errorf("pki: certificate of %s is from pool %s, not %s", p, pool, c.Pool())
	}
	return p, nil
}
