package api

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSocketOwnerOnly: whoever connects controls the VM, so the socket is
// created 0600 and a directory made for it 0700, whatever the umask.
func TestSocketOwnerOnly(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "new")
	path := filepath.Join(dir, "vm.sock")
	l, err := listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %#o, want %#o", p, got, want)
		}
	}
}
