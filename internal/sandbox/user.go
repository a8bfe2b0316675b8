package sandbox

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
)

// LookupUser resolves a user for Options.UID and GID: a name (from
// /etc/passwd, which needs no cgo) or "UID:GID". Root is refused: switching
// to it would drop nothing.
func LookupUser(s string) (uid, gid int, err error) {
	if a, b, ok := strings.Cut(s, ":"); ok {
		uid, err1 := strconv.Atoi(a)
		gid, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil || uid <= 0 || gid <= 0 {
			return 0, 0, fmt.Errorf("sandbox: user %q: want a user name or UID:GID, neither 0", s)
		}
		return uid, gid, nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, 0, fmt.Errorf("sandbox: %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("sandbox: user %s: uid %q, gid %q are not numbers", s, u.Uid, u.Gid)
	}
	if uid == 0 || gid == 0 {
		return 0, 0, fmt.Errorf("sandbox: user %s is root (uid %d, gid %d)", s, uid, gid)
	}
	return uid, gid, nil
}
