package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testPool = "pool1"

// testCA makes a CA for pool in a fresh directory.
func testCA(t testing.TB, pool string) *CA {
	t.Helper()
	ca, err := Init(filepath.Join(t.TempDir(), "ca"), pool)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue issues role:name and writes it to a fresh credential directory.
func issue(t testing.TB, ca *CA, role Role, name string, o IssueOptions) (string, *Bundle) {
	t.Helper()
	b, err := ca.Issue(role, name, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cred")
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	return dir, b
}

// credential issues role:name and loads it.
func credential(t testing.TB, ca *CA, role Role, name string) *Credential {
	t.Helper()
	dir, _ := issue(t, ca, role, name, IssueOptions{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	c, err := LoadCredential(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serialOf returns the serial number of the certificate in b.
func serialOf(t testing.TB, b *Bundle) *big.Int {
	t.Helper()
	cert, err := parseCertPEM(b.CertPEM, "bundle")
	if err != nil {
		t.Fatal(err)
	}
	return cert.SerialNumber
}

// craft makes a certificate with subject subj signed by ca, bypassing
// Issue's checks.
func craft(t testing.TB, ca *CA, subj pkix.Name) *Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subj,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := marshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Bundle{CAPEM: ca.CertPEM(), CertPEM: encodePEM(pemCert, der), KeyPEM: keyPEM}
}

// wantErr checks that err is one line, starts with "pki: " and holds want.
func wantErr(t testing.TB, what string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one with %q", what, want)
		return
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "pki: ") || !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
		t.Errorf("%s: error %q, want one line starting \"pki: \" with %q", what, msg, want)
	}
}

// wantMode checks the permission bits of path.
func wantMode(t testing.TB, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}

func TestInitOpenCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := Init(dir, testPool)
	if err != nil {
		t.Fatal(err)
	}
	wantMode(t, dir, 0o700)
	wantMode(t, filepath.Join(dir, caKeyFile), 0o600)
	for _, name := range []string{CAFile, CRLFile, indexFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}

	again, err := OpenCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Pool() != testPool || again.Dir() != dir || !bytes.Equal(again.CertPEM(), ca.CertPEM()) {
		t.Errorf("OpenCA: pool %q dir %q, want %q %q and the same certificate", again.Pool(), again.Dir(), testPool, dir)
	}
	if !again.key.Equal(ca.key) {
		t.Error("OpenCA loaded another key")
	}
	if issued, err := again.Issued(); err != nil || len(issued) != 0 {
		t.Errorf("new CA's index: %v, %v; want empty", issued, err)
	}
	crl, err := again.readCRL()
	if err != nil {
		t.Fatal(err)
	}
	if crl.Number.Cmp(big.NewInt(1)) != 0 || len(crl.RevokedCertificateEntries) != 0 {
		t.Errorf("new CRL: number %v, %d entries; want 1, 0", crl.Number, len(crl.RevokedCertificateEntries))
	}
	if err := crl.CheckSignatureFrom(ca.cert); err != nil {
		t.Errorf("new CRL: %v", err)
	}

	_, err = Init(dir, testPool)
	wantErr(t, "Init over a CA", err, dir+" already holds a CA")
	half := t.TempDir()
	if err := os.WriteFile(filepath.Join(half, caKeyFile), []byte("a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Init(half, testPool)
	wantErr(t, "Init over a CA key", err, half+" already holds a CA")
	if b, err := os.ReadFile(filepath.Join(half, caKeyFile)); err != nil || string(b) != "a key" {
		t.Errorf("Init changed an existing ca-key.pem: %q, %v", b, err)
	}

	_, err = Init(filepath.Join(t.TempDir(), "x"), "Pool One")
	wantErr(t, "Init with a bad pool name", err, "pool name")

	keyPath := filepath.Join(dir, caKeyFile)
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = OpenCA(dir)
	wantErr(t, "OpenCA with ca-key.pem 0644", err, "key file "+keyPath+" is open to others (mode 0644): chmod 600 it")
}

func TestIssueAndLoad(t *testing.T) {
	ca := testCA(t, testPool)
	ip := net.IPv4(10, 0, 0, 7)
	dir, b := issue(t, ca, RoleHost, "h1", IssueOptions{IPs: []net.IP{ip}, DNSNames: []string{"h1.example"}})
	wantMode(t, dir, 0o700)
	wantMode(t, filepath.Join(dir, KeyFile), 0o600)
	wantMode(t, filepath.Join(dir, CertFile), 0o644)
	wantMode(t, filepath.Join(dir, CAFile), 0o644)

	c, err := LoadCredential(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Peer()
	if p.Role != RoleHost || p.Name != "h1" || p.String() != "host:h1" || p.Serial.Cmp(serialOf(t, b)) != 0 {
		t.Errorf("Peer: %+v, want host:h1 with the bundle's serial", p)
	}
	if c.Pool() != testPool {
		t.Errorf("Pool: %q, want %q", c.Pool(), testPool)
	}
	leaf := c.pair.Load().cert.Leaf
	if got := leaf.Subject; got.CommonName != "host:h1" || len(got.Organization) != 1 || got.Organization[0] != testPool ||
		len(got.OrganizationalUnit) != 1 || got.OrganizationalUnit[0] != "host" {
		t.Errorf("subject %v, want CN=host:h1, O=%s, OU=host", got, testPool)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.KeyUsage != x509.KeyUsageDigitalSignature || leaf.IsCA {
		t.Errorf("usage %v, %v, CA %v; want server+client auth, digital signature, not a CA", leaf.ExtKeyUsage, leaf.KeyUsage, leaf.IsCA)
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(ip) || len(leaf.DNSNames) != 1 {
		t.Errorf("SANs %v %v, want %v h1.example", leaf.IPAddresses, leaf.DNSNames, ip)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d != defaultValidity {
		t.Errorf("validity %v, want %v", d, defaultValidity)
	}
	if !c.Roots().Equal(poolOfCert(ca.cert)) {
		t.Error("Roots is not just the pool CA")
	}

	issued, err := ca.Issued()
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) != 1 || issued[0].Serial != p.Serial.String() || issued[0].Role != RoleHost || issued[0].Name != "h1" ||
		!issued[0].NotAfter.Equal(leaf.NotAfter) || issued[0].Revoked {
		t.Errorf("index %+v, want the one certificate %v", issued, p)
	}
}

// poolOfCert returns a cert pool holding cert.
func poolOfCert(cert *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(cert)
	return p
}

func TestIssueRefuses(t *testing.T) {
	ca := testCA(t, testPool)
	for _, c := range []struct {
		role Role
		name string
		o    IssueOptions
		want string
	}{
		{"admin", "a1", IssueOptions{}, `unknown role "admin"`},
		{RoleHost, "", IssueOptions{}, "a holder name is required"},
		{RoleHost, "H1", IssueOptions{}, "lower-case letters"},
		{RoleHost, "h1", IssueOptions{Validity: -time.Hour}, "negative"},
		{RoleHost, "h1", IssueOptions{Validity: 20 * 365 * 24 * time.Hour}, "outlive the CA"},
	} {
		_, err := ca.Issue(c.role, c.name, c.o)
		wantErr(t, string(c.role)+":"+c.name, err, c.want)
	}
	if issued, err := ca.Issued(); err != nil || len(issued) != 0 {
		t.Errorf("refused certificates in the index: %v, %v", issued, err)
	}
}

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{
		"h1": true, "0": true, "a.b_c-d": true, strings.Repeat("a", 63): true,
		"": false, strings.Repeat("a", 64): false, "-h": false, ".h": false, "H1": false,
		"h 1": false, "h:1": false, "h/1": false, "hé": false,
	} {
		err := ValidName(name)
		if (err == nil) != ok {
			t.Errorf("ValidName(%q) = %v, want ok %v", name, err, ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "pki: ") {
			t.Errorf("ValidName(%q): %q does not start with \"pki: \"", name, err)
		}
	}
}

func TestPeerOf(t *testing.T) {
	cert := func(cn string, ou ...string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ou}}
	}
	p, err := PeerOf(cert("controller:c1", "controller"))
	if err != nil || p.Role != RoleController || p.Name != "c1" || p.Serial.Int64() != 7 {
		t.Errorf("PeerOf controller:c1 = %+v, %v", p, err)
	}
	for _, c := range []struct {
		cert *x509.Certificate
		want string
	}{
		{cert("host:h1", "user"), "does not start with its role"},
		{cert("host:h1"), "0 organizational units"},
		{cert("host:h1", "host", "user"), "2 organizational units"},
		{cert("admin:a1", "admin"), `unknown role "admin"`},
		{cert("h1", "host"), "does not start with its role"},
		{cert("host:", "host"), "not a pool identity"},
		{cert("host:H1", "host"), "not a pool identity"},
	} {
		_, err := PeerOf(c.cert)
		wantErr(t, c.cert.Subject.String(), err, c.want)
	}
}

func TestLoadCredentialRefuses(t *testing.T) {
	ca := testCA(t, testPool)

	dir, _ := issue(t, ca, RoleHost, "h1", IssueOptions{})
	keyPath := filepath.Join(dir, KeyFile)
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadCredential(dir)
	wantErr(t, "key.pem 0644", err, "key file "+keyPath+" is open to others (mode 0644): chmod 600 it")
	if err := os.Chmod(keyPath, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCredential(dir)
	wantErr(t, "key.pem 0640", err, "(mode 0640): chmod 600 it")

	dir, _ = issue(t, ca, RoleHost, "h1", IssueOptions{NotBefore: time.Now().AddDate(-2, 0, 0), Validity: 24 * time.Hour})
	_, err = LoadCredential(dir)
	wantErr(t, "expired", err, "certificate "+filepath.Join(dir, CertFile)+" expired at ")

	dir, _ = issue(t, ca, RoleHost, "h1", IssueOptions{NotBefore: time.Now().Add(time.Hour)})
	_, err = LoadCredential(dir)
	wantErr(t, "not yet valid", err, "is not valid until")

	other := testCA(t, "pool2")
	b, err := other.Issue(RoleHost, "h1", IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.CAPEM = ca.CertPEM()
	dir = filepath.Join(t.TempDir(), "foreign")
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCredential(dir)
	wantErr(t, "foreign CA", err, filepath.Join(dir, CertFile)+" is not signed by the pool CA in "+filepath.Join(dir, CAFile))

	dir = filepath.Join(t.TempDir(), "crafted")
	if err := craft(t, ca, pkix.Name{CommonName: "admin:a1", OrganizationalUnit: []string{"admin"}, Organization: []string{testPool}}).Write(dir); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCredential(dir)
	wantErr(t, "not a pool identity", err, `unknown role "admin"`)

	dir, _ = issue(t, ca, RoleHost, "h2", IssueOptions{})
	if _, err := ca.Revoke(RoleHost, "h2"); err != nil {
		t.Fatal(err)
	}
	crl, err := ca.CRLPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CRLFile), crl, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCredential(dir)
	wantErr(t, "revoked", err, "is revoked in "+filepath.Join(dir, CRLFile))

	if err := os.WriteFile(filepath.Join(dir, CRLFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCredential(dir)
	wantErr(t, "junk crl.pem", err, filepath.Join(dir, CRLFile))
}

func TestRevoke(t *testing.T) {
	ca := testCA(t, testPool)
	_, b1 := issue(t, ca, RoleHost, "h1", IssueOptions{})
	_, b2 := issue(t, ca, RoleHost, "h1", IssueOptions{})
	_, b3 := issue(t, ca, RoleHost, "h2", IssueOptions{})
	serials, err := ca.Revoke(RoleHost, "h1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{serialOf(t, b1).String(): true, serialOf(t, b2).String(): true}
	if len(serials) != 2 || !want[serials[0].String()] || !want[serials[1].String()] {
		t.Errorf("Revoke returned %v, want %v", serials, want)
	}

	issued, err := ca.Issued()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range issued {
		if e.Revoked != want[e.Serial] || e.Revoked == e.RevokedAt.IsZero() {
			t.Errorf("index entry %+v: revoked should be %v, with a time", e, want[e.Serial])
		}
	}

	crl, err := ca.readCRL()
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.cert); err != nil {
		t.Error(err)
	}
	if crl.Number.Int64() != 2 || len(crl.RevokedCertificateEntries) != 2 {
		t.Errorf("CRL number %v with %d entries, want 2 and 2", crl.Number, len(crl.RevokedCertificateEntries))
	}
	for _, e := range crl.RevokedCertificateEntries {
		if !want[e.SerialNumber.String()] {
			t.Errorf("CRL lists %v", e.SerialNumber)
		}
	}

	_, err = ca.Revoke(RoleHost, "h1")
	wantErr(t, "second revoke", err, "no certificate of host:h1 to revoke")
	_, err = ca.Revoke(RoleHost, "h9")
	wantErr(t, "unknown name", err, "no certificate of host:h9 to revoke")

	again, err := OpenCA(ca.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if serials, err := again.Revoke(RoleHost, "h2"); err != nil || len(serials) != 1 || serials[0].Cmp(serialOf(t, b3)) != 0 {
		t.Errorf("Revoke h2 after OpenCA: %v, %v", serials, err)
	}
	if crl, err := again.readCRL(); err != nil || crl.Number.Int64() != 3 || len(crl.RevokedCertificateEntries) != 3 {
		t.Errorf("CRL after the second revoke: %v", err)
	}
}

// side is one end's view of a handshake: the peer it saw, or its error.
type side struct {
	peer Peer
	err  error
}

// handshake connects a client using cli to a server using srv over
// loopback TCP. After a good handshake the server writes "ok" and the
// client reads it, so a refusal by either end shows at both.
func handshake(t testing.TB, srv, cli *tls.Config) (server, client side) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan side, 1)
	go func() { done <- serveOnce(ln, srv) }()
	client = dialOnce(ln.Addr().String(), cli)
	return <-done, client
}

// serveOnce accepts one connection on ln and handshakes as a server.
func serveOnce(ln net.Listener, cfg *tls.Config) side {
	nc, err := ln.Accept()
	if err != nil {
		return side{err: err}
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Server(nc, cfg)
	if err := tc.Handshake(); err != nil {
		return side{err: err}
	}
	p, err := PeerOf(tc.ConnectionState().PeerCertificates[0])
	if err == nil {
		_, err = tc.Write([]byte("ok"))
	}
	return side{peer: p, err: err}
}

// dialOnce connects to addr and handshakes as a client.
func dialOnce(addr string, cfg *tls.Config) side {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return side{err: err}
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(nc, cfg)
	if err := tc.Handshake(); err != nil {
		return side{err: err}
	}
	if _, err := io.ReadFull(tc, make([]byte, 2)); err != nil {
		return side{err: err}
	}
	p, err := PeerOf(tc.ConnectionState().PeerCertificates[0])
	return side{peer: p, err: err}
}

// wantOK checks that both ends of a handshake succeeded and saw the
// expected peers.
func wantOK(t testing.TB, what string, server, client side, clientID, serverID string) {
	t.Helper()
	if server.err != nil || client.err != nil {
		t.Errorf("%s: server %v, client %v; want success", what, server.err, client.err)
		return
	}
	if server.peer.String() != clientID || client.peer.String() != serverID {
		t.Errorf("%s: server saw %v, client saw %v; want %s and %s", what, server.peer, client.peer, clientID, serverID)
	}
}

// wantRefused checks that a handshake failed at both ends, with want in
// the refusing end's error.
func wantRefused(t testing.TB, what string, refuser, other side, want string) {
	t.Helper()
	if refuser.err == nil || other.err == nil {
		t.Errorf("%s: refuser %v, other end %v; want both to fail", what, refuser.err, other.err)
		return
	}
	if !strings.Contains(refuser.err.Error(), want) {
		t.Errorf("%s: %q, want %q", what, refuser.err, want)
	}
}

func TestHandshake(t *testing.T) {
	ca := testCA(t, testPool)
	ctl := credential(t, ca, RoleController, "c1")
	host := credential(t, ca, RoleHost, "h1")

	s, c := handshake(t, ctl.ServerConfig(AllowRoles(RoleHost)), host.ClientConfig("", AllowPeer(RoleController, "c1")))
	wantOK(t, "host to controller", s, c, "host:h1", "controller:c1")
	if s.peer.Serial.Cmp(host.Peer().Serial) != 0 || c.peer.Serial.Cmp(ctl.Peer().Serial) != 0 {
		t.Error("peers' serials differ from the credentials'")
	}

	s, c = handshake(t, host.ServerConfig(nil), ctl.ClientConfig("127.0.0.1", nil))
	wantOK(t, "controller to host by address", s, c, "controller:c1", "host:h1")

	s, c = handshake(t, host.ServerConfig(nil), ctl.ClientConfig("h1.example", nil))
	wantRefused(t, "wrong server name", c, s, "h1.example")
}

func TestHandshakeRefusals(t *testing.T) {
	ca := testCA(t, testPool)
	ctl := credential(t, ca, RoleController, "c1")
	h1 := credential(t, ca, RoleHost, "h1")
	h2 := credential(t, ca, RoleHost, "h2")
	user := credential(t, ca, RoleUser, "alice")
	foreignCA := testCA(t, "pool2")
	foreign := credential(t, foreignCA, RoleHost, "h1")

	// A client that trusts the pool's CA but holds a certificate of another.
	b, err := foreignCA.Issue(RoleHost, "h1", IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, c := handshake(t, ctl.ServerConfig(nil), rawClient(t, b, ctl.Roots()))
	wantRefused(t, "client from a foreign CA", s, c, "certificate signed by unknown authority")

	s, c = handshake(t, foreign.ServerConfig(nil), h1.ClientConfig("", nil))
	wantRefused(t, "server from a foreign CA, no server name", c, s, `peer certificate "host:h1" does not verify`)

	s, c = handshake(t, ctl.ServerConfig(AllowRoles(RoleController)), user.ClientConfig("", nil))
	wantRefused(t, "user where controllers only", s, c, "pki: user:alice may not do this (needs role controller)")

	s, c = handshake(t, ctl.ServerConfig(AllowRoles(RoleController, RoleHost)), h1.ClientConfig("", nil))
	wantOK(t, "host where controllers or hosts", s, c, "host:h1", "controller:c1")

	s, c = handshake(t, h2.ServerConfig(nil), ctl.ClientConfig("", AllowPeer(RoleHost, "h1")))
	wantRefused(t, "host h2 answering for h1", c, s, "pki: host:h2 may not do this (only host:h1 may)")

	// A certificate of the pool's CA that names another pool.
	b = craft(t, ca, pkix.Name{CommonName: "host:h3", OrganizationalUnit: []string{"host"}, Organization: []string{"pool9"}})
	s, c = handshake(t, ctl.ServerConfig(nil), rawClient(t, b, ctl.Roots()))
	wantRefused(t, "certificate of another pool", s, c, "pki: certificate of host:h3 is from pool pool9, not pool1")
}

// rawClient returns a plain TLS client config that presents b's
// certificate and trusts roots: a client that does not use this package.
func rawClient(t testing.TB, b *Bundle, roots *x509.CertPool) *tls.Config {
	t.Helper()
	pair, err := tls.X509KeyPair(b.CertPEM, b.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &pair, nil // whatever CAs the server asks for
		},
		RootCAs:    roots,
		ServerName: "127.0.0.1",
	}
}

func TestRevokeAtHandshake(t *testing.T) {
	ca := testCA(t, testPool)
	ctl := credential(t, ca, RoleController, "c1")
	h1 := credential(t, ca, RoleHost, "h1")
	h2 := credential(t, ca, RoleHost, "h2")
	srv := ctl.ServerConfig(nil)

	s, c := handshake(t, srv, h1.ClientConfig("", nil))
	wantOK(t, "h1 before revocation", s, c, "host:h1", "controller:c1")

	serials, _ := revokeInto(t, ca, ctl, RoleHost, "h1")
	if !ctl.Revoked(h1.Peer().Serial) || ctl.Revoked(h2.Peer().Serial) || serials[0].Cmp(h1.Peer().Serial) != 0 {
		t.Fatal("Revoked disagrees with the CRL")
	}

	s, c = handshake(t, srv, h1.ClientConfig("", nil))
	wantRefused(t, "revoked h1", s, c, "pki: certificate of host:h1 (serial "+serials[0].String()+") is revoked")

	s, c = handshake(t, srv, h2.ClientConfig("", nil))
	wantOK(t, "h2 after h1's revocation", s, c, "host:h2", "controller:c1")

	if err := ctl.SetCRL(nil); err != nil {
		t.Fatal(err)
	}
	s, c = handshake(t, srv, h1.ClientConfig("", nil))
	wantOK(t, "h1 after SetCRL(nil)", s, c, "host:h1", "controller:c1")
}

func TestPlaintextClient(t *testing.T) {
	ca := testCA(t, testPool)
	ctl := credential(t, ca, RoleController, "c1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		handshake, read error
		n               int
	}
	done := make(chan result, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			done <- result{handshake: err}
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(nc, ctl.ServerConfig(nil))
		var r result
		r.handshake = tc.Handshake()
		r.n, r.read = tc.Read(make([]byte, 64))
		done <- r
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	reply, _ := io.ReadAll(nc)
	r := <-done
	if r.handshake == nil || r.read == nil || r.n != 0 {
		t.Errorf("plaintext client: handshake %v, read %d bytes (%v); want a failed handshake and nothing read", r.handshake, r.n, r.read)
	}
	if bytes.Contains(reply, []byte("ok")) || bytes.Contains(reply, []byte("HTTP")) {
		t.Errorf("plaintext client got %q", reply)
	}
}

// setRecheck sets how often c looks at its directory.
func setRecheck(c *Credential, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recheck = d
}

func TestRotation(t *testing.T) {
	ca := testCA(t, testPool)
	ctl := credential(t, ca, RoleController, "c1")
	dir, b1 := issue(t, ca, RoleHost, "h1", IssueOptions{})
	host, err := LoadCredential(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := host.ServerConfig(nil), ctl.ClientConfig("", nil)
	serial := func() *big.Int {
		t.Helper()
		s, c := handshake(t, srv, cli)
		wantOK(t, "handshake", s, c, "controller:c1", "host:h1")
		return c.peer.Serial
	}
	if got := serial(); got.Cmp(serialOf(t, b1)) != 0 {
		t.Fatalf("first handshake: serial %v, want %v", got, serialOf(t, b1))
	}

	// A renewed certificate shows within a few seconds, at the default
	// pace of one look a second.
	b2, err := ca.Issue(RoleHost, "h1", IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Write(dir); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for serial().Cmp(serialOf(t, b2)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate is not presented after 5s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if host.Peer().Serial.Cmp(serialOf(t, b2)) != 0 {
		t.Errorf("Peer serial %v after rotation, want %v", host.Peer().Serial, serialOf(t, b2))
	}

	// Between looks, a change is not seen.
	setRecheck(host, time.Hour)
	b3, err := ca.Issue(RoleHost, "h1", IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b3.Write(dir); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got.Cmp(serialOf(t, b2)) != 0 {
		t.Errorf("serial %v before the next look, want still %v", got, serialOf(t, b2))
	}
	setRecheck(host, 0)
	if got := serial(); got.Cmp(serialOf(t, b3)) != 0 {
		t.Errorf("serial %v after the next look, want %v", got, serialOf(t, b3))
	}

	// Bad new files leave the pair in use as it is.
	b4, err := ca.Issue(RoleHost, "h1", IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue(RoleHost, "h2", IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		what string
		b    *Bundle
	}{
		{"a cert without its key", &Bundle{CAPEM: b4.CAPEM, CertPEM: b4.CertPEM, KeyPEM: b3.KeyPEM}},
		{"another identity", other},
		{"junk", &Bundle{CAPEM: b4.CAPEM, CertPEM: []byte("junk"), KeyPEM: b4.KeyPEM}},
	} {
		if err := bad.b.Write(dir); err != nil {
			t.Fatal(err)
		}
		if got := serial(); got.Cmp(serialOf(t, b3)) != 0 {
			t.Errorf("after writing %s: serial %v, want still %v", bad.what, got, serialOf(t, b3))
		}
	}
}

func TestCRLFileReload(t *testing.T) {
	ca := testCA(t, testPool)
	dir, _ := issue(t, ca, RoleController, "c1", IssueOptions{})
	ctl, err := LoadCredential(dir)
	if err != nil {
		t.Fatal(err)
	}
	setRecheck(ctl, 0)
	h1 := credential(t, ca, RoleHost, "h1")
	srv := ctl.ServerConfig(nil)

	s, c := handshake(t, srv, h1.ClientConfig("", nil))
	wantOK(t, "before crl.pem", s, c, "host:h1", "controller:c1")

	if _, err := ca.Revoke(RoleHost, "h1"); err != nil {
		t.Fatal(err)
	}
	crl, err := ca.CRLPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(filepath.Join(dir, CRLFile), crl, 0o644); err != nil {
		t.Fatal(err)
	}
	s, c = handshake(t, srv, h1.ClientConfig("", nil))
	wantRefused(t, "after crl.pem names h1", s, c, "is revoked")
}

func TestSetCRL(t *testing.T) {
	ca := testCA(t, testPool)
	c := credential(t, ca, RoleController, "c1")
	old, err := ca.CRLPEM()
	if err != nil {
		t.Fatal(err)
	}
	issue(t, ca, RoleHost, "h1", IssueOptions{})
	serials, err := ca.Revoke(RoleHost, "h1")
	if err != nil {
		t.Fatal(err)
	}
	crl, err := ca.CRLPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCRL(crl); err != nil || !c.Revoked(serials[0]) {
		t.Fatalf("SetCRL: %v; revoked %v", err, c.Revoked(serials[0]))
	}

	other := testCA(t, "pool2")
	foreign, err := other.CRLPEM()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		what string
		data []byte
		want string
	}{
		{"a foreign CA's CRL", foreign, "CRL is not signed by the pool CA"},
		{"an older CRL", old, "CRL number 1 is older than the one in use (2)"},
		{"a certificate", ca.CertPEM(), "no X509 CRL PEM block"},
		{"a bad CRL", encodePEM(pemCRL, []byte{0x30, 0x03, 1, 2, 3}), "pki: CRL: "},
	} {
		wantErr(t, bad.what, c.SetCRL(bad.data), bad.want)
		if !c.Revoked(serials[0]) {
			t.Errorf("%s changed the revoked set", bad.what)
		}
	}
	if c.Revoked(nil) || c.Revoked(big.NewInt(1)) {
		t.Error("Revoked reports a serial the CRL does not list")
	}
}

// revokeInto revokes role:name in ca and gives the new CRL to c; it
// returns the serials revoked and the CRL.
func revokeInto(t testing.TB, ca *CA, c *Credential, role Role, name string) ([]*big.Int, []byte) {
	t.Helper()
	serials, err := ca.Revoke(role, name)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := ca.CRLPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCRL(crl); err != nil {
		t.Fatal(err)
	}
	return serials, crl
}

func FuzzSetCRL(f *testing.F) {
	ca := testCA(f, testPool)
	c := credential(f, ca, RoleController, "c1")
	issue(f, ca, RoleHost, "h1", IssueOptions{})
	serials, crl := revokeInto(f, ca, c, RoleHost, "h1")
	start := c.revoked.Load()
	f.Add(crl)
	f.Add([]byte{})
	f.Add([]byte("-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"))
	f.Add(ca.CertPEM())
	f.Add(crl[:len(crl)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		c.revoked.Store(start)
		err := c.SetCRL(data)
		now := c.revoked.Load()
		if err != nil {
			if now != start || !c.Revoked(serials[0]) {
				t.Fatalf("SetCRL(%q) failed (%v) but changed the revoked set", data, err)
			}
			if !strings.HasPrefix(err.Error(), "pki: ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("SetCRL(%q): error %q", data, err)
			}
			return
		}
		if len(bytes.TrimSpace(data)) != 0 && !bytes.Contains(data, []byte("X509 CRL")) {
			t.Fatalf("SetCRL(%q) accepted data with no CRL block", data)
		}
	})
}
