package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// caValidity is how long a new CA is valid.
const caValidity = 10 * 365 * 24 * time.Hour

// defaultValidity is how long a certificate is valid if IssueOptions
// does not say.
const defaultValidity = 365 * 24 * time.Hour

// CA is the pool's certificate authority, in its directory: ca.pem,
// ca-key.pem (mode 0600), crl.pem and index.json (every certificate
// issued). One CA value serialises its own writes; two processes must not
// issue or revoke in one directory at the same time.
type CA struct {
	dir     string
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
	mu      sync.Mutex // guards index.json and crl.pem
}

// Issued is a certificate as recorded in the CA's index.
type Issued struct {
	Serial    string    `json:"serial"` // decimal
	Role      Role      `json:"role"`
	Name      string    `json:"name"`
	NotAfter  time.Time `json:"not_after"`
	Revoked   bool      `json:"revoked"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// IssueOptions are the optional parts of a new certificate.
type IssueOptions struct {
	IPs      []net.IP
	DNSNames []string
	// Validity is how long the certificate is valid; zero means
	// 365 days.
	Validity time.Duration
	// NotBefore is when it becomes valid; zero means a minute ago (to
	// allow for clocks a little behind).
	NotBefore time.Time
}

// Init makes a new CA for pool in dir: it creates dir (mode 0700), a CA
// key and certificate valid 10 years, an empty CRL and an empty index. It
// refuses a dir that already holds a CA.
func Init(dir, pool string) (*CA, error) {
	if err := validName("pool", pool); err != nil {
		return nil, err
	}
	if err := refuseCA(dir); err != nil {
		return nil, err
	}
	if err := makePrivateDir(dir); err != nil {
		return nil, err
	}
	ca, err := newCA(dir, pool)
	if err != nil {
		return nil, err
	}
	if err := ca.writeFiles(); err != nil {
		return nil, err
	}
	return ca, nil
}

// refuseCA fails if dir holds a CA certificate or key: Init never
// overwrites a CA's key.
func refuseCA(dir string) error {
	for _, name := range []string{CAFile, caKeyFile} {
		_, err := os.Lstat(filepath.Join(dir, name))
		if err == nil {
			return fmt.Errorf("pki: %s already holds a CA", dir)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pki: %w", err)
		}
	}
	return nil
}

// makePrivateDir creates dir if need be and makes it its owner's alone.
func makePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// newCA makes a CA key and self-signed certificate, in memory.
func newCA(dir, pool string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "godwit pool " + pool + " CA", Organization: []string{pool}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return &CA{dir: dir, cert: cert, certPEM: encodePEM(pemCert, der), key: key}, nil
}

// writeFiles writes a new CA's files, ca.pem last.
func (ca *CA) writeFiles() error {
	keyPEM, err := marshalKey(ca.key)
	if err != nil {
		return err
	}
	if err := writeAtomic(ca.path(caKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	if err := ca.writeIndex(nil); err != nil {
		return err
	}
	if err := ca.writeCRL(nil, big.NewInt(1)); err != nil {
		return err
	}
	return writeAtomic(ca.path(CAFile), ca.certPEM, 0o644)
}

// OpenCA loads the CA in dir. It refuses a ca-key.pem that its group or
// others may read or write.
func OpenCA(dir string) (*CA, error) {
	keyPath := filepath.Join(dir, caKeyFile)
	keyPEM, err := readPrivate(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(keyPEM, keyPath)
	if err != nil {
		return nil, err
	}
	certPath := filepath.Join(dir, CAFile)
	cert, certPEM, err := readCert(certPath)
	if err != nil {
		return nil, err
	}
	if err := checkCACert(cert, certPath); err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki: %s does not match %s", keyPath, certPath)
	}
	return &CA{dir: dir, cert: cert, certPEM: certPEM, key: key}, nil
}

// checkCACert refuses a certificate that is not a pool's CA.
func checkCACert(cert *x509.Certificate, path string) error {
	if !cert.IsCA || poolOf(cert) == "" {
		return fmt.Errorf("pki: %s is not a pool CA certificate", path)
	}
	return nil
}

// Pool returns the pool's name, from the CA certificate's Organization.
func (ca *CA) Pool() string { return poolOf(ca.cert) }

// Dir returns the CA's directory.
func (ca *CA) Dir() string { return ca.dir }

// CertPEM returns the CA certificate, PEM encoded.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// path returns the path of the CA file name.
func (ca *CA) path(name string) string { return filepath.Join(ca.dir, name) }

// newSerial returns a random serial number of up to 128 bits, never 0.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// Issue makes a certificate and key for role:name, valid for both server
// and client authentication, and records it in the index.
func (ca *CA) Issue(role Role, name string, o IssueOptions) (*Bundle, error) {
	tmpl, err := ca.leafTemplate(role, name, o)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := marshalKey(key)
	if err != nil {
		return nil, err
	}
	rec := Issued{Serial: cert.SerialNumber.String(), Role: role, Name: name, NotAfter: cert.NotAfter.UTC()}
	if err := ca.record(rec); err != nil {
		return nil, err
	}
	return &Bundle{CAPEM: ca.certPEM, CertPEM: encodePEM(pemCert, der), KeyPEM: keyPEM}, nil
}

// leafTemplate checks Issue's arguments and makes the certificate's template.
func (ca *CA) leafTemplate(role Role, name string, o IssueOptions) (*x509.Certificate, error) {
	if err := checkRole(role); err != nil {
		return nil, err
	}
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if o.Validity < 0 {
		return nil, fmt.Errorf("pki: validity %v is negative", o.Validity)
	}
	if o.Validity == 0 {
		o.Validity = defaultValidity
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Minute)
	}
	notAfter := o.NotBefore.Add(o.Validity)
	if notAfter.After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("pki: certificate would outlive the CA, which expires at %s", ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         string(role) + ":" + name,
			Organization:       []string{ca.Pool()},
			OrganizationalUnit: []string{string(role)},
		},
		NotBefore:             o.NotBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IPAddresses:           o.IPs,
		DNSNames:              o.DNSNames,
	}, nil
}

// record appends rec to the index.
func (ca *CA) record(rec Issued) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	index, err := ca.readIndex()
	if err != nil {
		return err
	}
	return ca.writeIndex(append(index, rec))
}

// Revoke revokes every certificate of role:name not yet revoked: it marks
// them in the index and rewrites crl.pem with a higher Number. It returns
// their serial numbers.
func (ca *CA) Revoke(role Role, name string) ([]*big.Int, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	index, err := ca.readIndex()
	if err != nil {
		return nil, err
	}
	serials, err := markRevoked(index, role, name, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	crl, err := ca.readCRL()
	if err != nil {
		return nil, err
	}
	// crl.pem first: if the index write then fails, the certificates are
	// revoked and a second Revoke writes the index.
	if err := ca.writeCRL(index, new(big.Int).Add(crl.Number, big.NewInt(1))); err != nil {
		return nil, err
	}
	if err := ca.writeIndex(index); err != nil {
		return nil, err
	}
	return serials, nil
}

// markRevoked marks role:name's unrevoked entries in index revoked at
// now and returns their serials.
func markRevoked(index []Issued, role Role, name string, now time.Time) ([]*big.Int, error) {
	var serials []*big.Int
	for i := range index {
		e := &index[i]
		if e.Role != role || e.Name != name || e.Revoked {
			continue
		}
		n, err := parseSerial(e.Serial)
		if err != nil {
			return nil, err
		}
		e.Revoked, e.RevokedAt = true, now
		serials = append(serials, n)
	}
	if len(serials) == 0 {
		return nil, fmt.Errorf("pki: no certificate of %s to revoke", Peer{Role: role, Name: name})
	}
	return serials, nil
}

// parseSerial parses a decimal serial number from the index.
func parseSerial(s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return nil, fmt.Errorf("pki: %s: bad serial number %q", indexFile, s)
	}
	return n, nil
}

// CRLPEM returns the current crl.pem.
func (ca *CA) CRLPEM() ([]byte, error) {
	b, err := os.ReadFile(ca.path(CRLFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return b, nil
}

// readCRL reads and parses crl.pem.
func (ca *CA) readCRL() (*x509.RevocationList, error) {
	data, err := ca.CRLPEM()
	if err != nil {
		return nil, err
	}
	path := ca.path(CRLFile)
	der, err := pemBlock(data, pemCRL, path)
	if err != nil {
		return nil, err
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return crl, nil
}

// writeCRL signs a CRL numbered number that lists the revoked entries of
// index and writes it to crl.pem. It stays current until the CA expires:
// it changes only when a certificate is revoked.
func (ca *CA) writeCRL(index []Issued, number *big.Int) error {
	var revoked []x509.RevocationListEntry
	for _, e := range index {
		if !e.Revoked {
			continue
		}
		n, err := parseSerial(e.Serial)
		if err != nil {
			return err
		}
		revoked = append(revoked, x509.RevocationListEntry{SerialNumber: n, RevocationTime: e.RevokedAt})
	}
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                time.Now(),
		NextUpdate:                ca.cert.NotAfter,
		RevokedCertificateEntries: revoked,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return writeAtomic(ca.path(CRLFile), encodePEM(pemCRL, der), 0o644)
}

// Issued returns the index: every certificate the CA has issued, oldest
// first.
func (ca *CA) Issued() ([]Issued, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.readIndex()
}

// readIndex reads index.json.
func (ca *CA) readIndex() ([]Issued, error) {
	path := ca.path(indexFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	var index []Issued
	if err := json.Unmarshal(b, &index); err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return index, nil
}

// writeIndex replaces index.json.
func (ca *CA) writeIndex(index []Issued) error {
	if index == nil {
		index = []Issued{}
	}
	b, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return writeAtomic(ca.path(indexFile), append(b, '\n'), 0o600)
}
