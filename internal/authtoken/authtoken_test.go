package authtoken

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if tok, err := ReadFile(write("good", "  0123456789abcdef\n", 0o600)); err != nil || tok != "0123456789abcdef" {
		t.Errorf("good token: %q, %v", tok, err)
	}
	for _, c := range []struct {
		path, want string
	}{
		{write("short", "t0k\n", 0o600), "needs at least 16"},
		{write("empty", "", 0o600), "token file"},
		{write("open", "0123456789abcdef\n", 0o644), "chmod 600"},
		{write("group", "0123456789abcdef\n", 0o640), "open to others"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		if _, err := ReadFile(c.path); err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line with %q", filepath.Base(c.path), err, c.want)
		}
	}
}
