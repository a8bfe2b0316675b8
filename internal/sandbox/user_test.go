package sandbox

import (
	"strings"
	"testing"
)

func TestLookupUser(t *testing.T) {
	if uid, gid, err := LookupUser("1000:1001"); err != nil || uid != 1000 || gid != 1001 {
		t.Errorf("1000:1001: %d %d %v", uid, gid, err)
	}
	if uid, _, err := LookupUser("nobody"); err != nil || uid == 0 {
		t.Errorf("nobody: uid %d, %v", uid, err)
	}
	for _, bad := range []string{"root", "0:0", "5:0", "x:1", "no-such-user-here", ""} {
		if _, _, err := LookupUser(bad); err == nil || !strings.HasPrefix(err.Error(), "sandbox: ") {
			t.Errorf("LookupUser(%q): %v, want an error", bad, err)
		}
	}
}
