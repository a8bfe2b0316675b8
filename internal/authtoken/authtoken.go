// Package authtoken reads the pool's API bearer tokens from their files,
// refusing what makes a token easy to steal or to guess: a file others
// may read or write, or a token shorter than MinLen.
package authtoken

import (
	"fmt"
	"os"
	"strings"
)

// MinLen is the shortest token accepted: 16 characters, as from
// `head -c 12 /dev/urandom | base64`.
const MinLen = 16

// ReadFile returns the token in the file at path, without surrounding white
// space. The file must be its owner's alone (no group or other
// permission bits) and hold at least MinLen characters.
func ReadFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("token file %s is open to others (mode %#o): chmod 600 it", path, perm)
	}
	b := make([]byte, 4096)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b[:n]))
	if len(tok) < MinLen {
		return "", fmt.Errorf("token file %s holds %d characters: a token needs at least %d", path, len(tok), MinLen)
	}
	return tok, nil
}
