package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Credential is what a holder of a pool certificate uses to connect: the
// certificate and key in a credential directory (CertFile, KeyFile), the
// pool CA (CAFile) and the revoked serials (CRLFile, or SetCRL).
//
// It follows its directory: at most once a second, when a handshake asks
// for it, it reloads cert.pem and key.pem if either changed (so a renewed
// certificate written with Bundle.Write is used without a restart), and
// crl.pem likewise. A new pair that fails to load, or names another
// identity, is ignored and the old one kept.
type Credential struct {
	dir   string
	ca    *x509.Certificate
	roots *x509.CertPool

	pair    atomic.Pointer[keyPair]
	revoked atomic.Pointer[revokedSet]
	crlMu   sync.Mutex // serialises changes of revoked

	mu       sync.Mutex // guards the fields below
	recheck  time.Duration
	checked  time.Time
	pairSeen [2]fileStamp // cert.pem, key.pem as last loaded
	crlSeen  fileStamp
}

// keyPair is a loaded certificate and key, with the identity it gives.
type keyPair struct {
	cert tls.Certificate
	peer Peer
}

// revokedSet is the content of one CRL: its number and revoked serials.
type revokedSet struct {
	number  *big.Int // nil: no CRL
	serials map[string]bool
}

// fileStamp tells whether a file changed; zero if it could not be read.
type fileStamp struct {
	mod  int64 // Unix nanoseconds
	size int64
}

// stampOf returns path's modification time and size.
func stampOf(path string) fileStamp {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: st.ModTime().UnixNano(), size: st.Size()}
}

// LoadCredential loads the credential directory dir. It refuses a key.pem
// open to others, a certificate that is expired or not yet valid, not
// signed by ca.pem, not a pool identity, or revoked by crl.pem.
func LoadCredential(dir string) (*Credential, error) {
	caPath := filepath.Join(dir, CAFile)
	ca, _, err := readCert(caPath)
	if err != nil {
		return nil, err
	}
	if err := checkCACert(ca, caPath); err != nil {
		return nil, err
	}
	c := &Credential{dir: dir, ca: ca, roots: x509.NewCertPool(), recheck: time.Second, checked: time.Now()}
	c.roots.AddCert(ca)
	c.revoked.Store(&revokedSet{})
	if err := c.loadCRLFile(); err != nil {
		return nil, err
	}
	pair, seen, err := c.loadPair(time.Now())
	if err != nil {
		return nil, err
	}
	if c.Revoked(pair.peer.Serial) {
		return nil, fmt.Errorf("pki: certificate %s (serial %s) is revoked in %s", c.path(CertFile), pair.peer.Serial, c.path(CRLFile))
	}
	c.pair.Store(pair)
	c.pairSeen = seen
	return c, nil
}

// path returns the path of the file name in the credential directory.
func (c *Credential) path(name string) string { return filepath.Join(c.dir, name) }

// loadCRLFile loads crl.pem, if there is one.
func (c *Credential) loadCRLFile() error {
	path := c.path(CRLFile)
	seen := stampOf(path)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := c.SetCRL(data); err != nil {
		return fmt.Errorf("pki: %s: %s", path, strings.TrimPrefix(err.Error(), "pki: "))
	}
	c.crlSeen = seen
	return nil
}

// loadPair loads cert.pem and key.pem and checks the certificate at now.
// It returns the files' stamps from before it read them.
func (c *Credential) loadPair(now time.Time) (*keyPair, [2]fileStamp, error) {
	certPath, keyPath := c.path(CertFile), c.path(KeyFile)
	seen := [2]fileStamp{stampOf(certPath), stampOf(keyPath)}
	keyPEM, err := readPrivate(keyPath)
	if err != nil {
		return nil, seen, err
	}
	leaf, certPEM, err := readCert(certPath)
	if err != nil {
		return nil, seen, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, seen, fmt.Errorf("pki: %s does not go with %s: %v", keyPath, certPath, err)
	}
	pair.Leaf = leaf
	peer, err := c.checkLeaf(leaf, certPath, now)
	if err != nil {
		return nil, seen, err
	}
	return &keyPair{cert: pair, peer: peer}, seen, nil
}

// checkLeaf checks this holder's own certificate, read from path, at now.
func (c *Credential) checkLeaf(leaf *x509.Certificate, path string, now time.Time) (Peer, error) {
	if now.Before(leaf.NotBefore) {
		return Peer{}, fmt.Errorf("pki: certificate %s is not valid until %s", path, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return Peer{}, fmt.Errorf("pki: certificate %s expired at %s", path, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	opts := x509.VerifyOptions{Roots: c.roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := leaf.Verify(opts); err != nil {
		return Peer{}, fmt.Errorf("pki: %s is not signed by the pool CA in %s", path, c.path(CAFile))
	}
	peer, err := parsePeer(leaf)
	if err != nil {
		return Peer{}, fmt.Errorf("pki: %s: %v", path, err)
	}
	if pool := poolOf(leaf); pool != c.Pool() {
		return Peer{}, fmt.Errorf("pki: %s is from pool %s, not %s", path, pool, c.Pool())
	}
	return peer, nil
}

// refresh reloads the key pair and the CRL from the directory if they
// changed, at most once per c.recheck.
func (c *Credential) refresh() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if now.Sub(c.checked) < c.recheck {
		return
	}
	c.checked = now
	c.reloadPair(now)
	c.reloadCRL()
}

// reloadPair loads cert.pem and key.pem if either changed since last
// loaded, and uses them if they are good and name the same identity.
func (c *Credential) reloadPair(now time.Time) {
	stamps := [2]fileStamp{stampOf(c.path(CertFile)), stampOf(c.path(KeyFile))}
	if stamps == c.pairSeen {
		return
	}
	pair, seen, err := c.loadPair(now)
	if err != nil || pair.peer.String() != c.Peer().String() || c.Revoked(pair.peer.Serial) {
		return // keep the old pair; try again next time
	}
	c.pair.Store(pair)
	c.pairSeen = seen
}

// reloadCRL loads crl.pem if it changed. A crl.pem that went away leaves
// the revoked set as it is: revocation is not undone by a missing file.
func (c *Credential) reloadCRL() {
	path := c.path(CRLFile)
	st := stampOf(path)
	if st == (fileStamp{}) || st == c.crlSeen {
		return
	}
	data, err := os.ReadFile(path)
	if err == nil && c.SetCRL(data) == nil {
		c.crlSeen = st
	}
}

// current returns the key pair to present in a handshake.
func (c *Credential) current() *tls.Certificate {
	c.refresh()
	return &c.pair.Load().cert
}

// Peer returns this holder's identity, from the certificate in use.
func (c *Credential) Peer() Peer { return c.pair.Load().peer }

// Pool returns the pool's name, from the CA certificate's Organization.
func (c *Credential) Pool() string { return poolOf(c.ca) }

// Roots returns a pool holding just the pool CA.
func (c *Credential) Roots() *x509.CertPool { return c.roots }

// SetCRL replaces the revoked serials that every config made from c
// refuses with those in the PEM CRL pemBytes, after checking that the
// pool CA signed it and that it is not older (by Number) than the CRL in
// use. Empty or nil pemBytes clears the set. On error nothing changes.
func (c *Credential) SetCRL(pemBytes []byte) error {
	set := &revokedSet{}
	if len(bytes.TrimSpace(pemBytes)) != 0 {
		var err error
		if set, err = c.parseCRL(pemBytes); err != nil {
			return err
		}
	}
	c.crlMu.Lock()
	defer c.crlMu.Unlock()
	cur := c.revoked.Load()
	if set.number != nil && cur.number != nil && set.number.Cmp(cur.number) < 0 {
		return fmt.Errorf("pki: CRL number %s is older than the one in use (%s)", set.number, cur.number)
	}
	c.revoked.Store(set)
	return nil
}

// parseCRL parses a PEM CRL and checks that the pool CA signed it.
func (c *Credential) parseCRL(pemBytes []byte) (*revokedSet, error) {
	b, _ := pem.Decode(pemBytes)
	if b == nil || b.Type != pemCRL {
		return nil, fmt.Errorf("pki: CRL data holds no %s PEM block", pemCRL)
	}
	crl, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: CRL: %v", err)
	}
	if err := crl.CheckSignatureFrom(c.ca); err != nil {
		return nil, errors.New("pki: CRL is not signed by the pool CA")
	}
	set := &revokedSet{number: crl.Number, serials: make(map[string]bool)}
	if set.number == nil {
		set.number = new(big.Int)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil {
			set.serials[e.SerialNumber.String()] = true
		}
	}
	return set, nil
}

// Revoked reports whether the CRL in use lists serial.
func (c *Credential) Revoked(serial *big.Int) bool {
	return serial != nil && c.revoked.Load().serials[serial.String()]
}
