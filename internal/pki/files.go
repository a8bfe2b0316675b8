package pki

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// The files of a credential directory. The CA directory holds CAFile and
// CRLFile too.
const (
	CAFile   = "ca.pem"
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
	CRLFile  = "crl.pem"
)

// Files only the CA directory holds.
const (
	caKeyFile = "ca-key.pem"
	indexFile = "index.json"
)

// PEM block types.
const (
	pemCert = "CERTIFICATE"
	pemKey  = "PRIVATE KEY"
	pemCRL  = "X509 CRL"
)

// writeAtomic replaces the file at path with data and the given mode: it
// writes a temporary file in the same directory and renames it over path,
// so a reader sees the old file or the new one, never half of one.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := f.Name()
	err = writeAndClose(f, data, mode)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// writeAndClose sets f's mode, writes data, syncs and closes f.
func writeAndClose(f *os.File, data []byte, mode os.FileMode) error {
	err := f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readPrivate reads a key file, refusing one that its group or others
// may read or write.
func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("pki: key file %s is open to others (mode %#o): chmod 600 it", path, perm)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return b, nil
}

// pemBlock returns the DER bytes of the first PEM block in data, which
// must be of type typ; path names the data's file in the error.
func pemBlock(data []byte, typ, path string) ([]byte, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != typ {
		return nil, fmt.Errorf("pki: %s holds no %s PEM block", path, typ)
	}
	return b.Bytes, nil
}

// encodePEM wraps der in one PEM block of type typ.
func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseCertPEM parses the certificate in data, read from path.
func parseCertPEM(data []byte, path string) (*x509.Certificate, error) {
	der, err := pemBlock(data, pemCert, path)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return cert, nil
}

// readCert reads and parses the certificate file at path.
func readCert(path string) (*x509.Certificate, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := parseCertPEM(data, path)
	return cert, data, err
}

// parseKeyPEM parses the PKCS#8 ECDSA key in data, read from path.
func parseKeyPEM(data []byte, path string) (*ecdsa.PrivateKey, error) {
	der, err := pemBlock(data, pemKey, path)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("pki: %s holds a %T, not an ECDSA key", path, k)
	}
	return key, nil
}

// marshalKey encodes key as a PKCS#8 PEM block.
func marshalKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return encodePEM(pemKey, der), nil
}

// poolOf returns the pool a certificate names in its Organization, or ""
// if it names none or several.
func poolOf(cert *x509.Certificate) string {
	if len(cert.Subject.Organization) != 1 {
		return ""
	}
	return cert.Subject.Organization[0]
}
