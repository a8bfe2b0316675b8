package pki

import (
	"fmt"
	"os"
	"path/filepath"
)

// Bundle is a new certificate with its key and the CA's certificate, all
// PEM: what a credential directory holds.
type Bundle struct {
	CAPEM, CertPEM, KeyPEM []byte
}

// Write puts the bundle in dir as a credential directory: ca.pem and
// cert.pem (mode 0644) and key.pem (mode 0600), creating dir (mode 0700)
// if need be. Each file is replaced whole, so a process that re-reads
// them (see Credential) never sees half a file.
func (b *Bundle) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CAFile, b.CAPEM, 0o644},
		{KeyFile, b.KeyPEM, 0o600},
		{CertFile, b.CertPEM, 0o644},
	}
	for _, f := range files {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}
