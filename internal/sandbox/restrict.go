package sandbox

import (
	"errors"

	"golang.org/x/sys/unix"
)

// SetupCaps are the capabilities a VMM may still need while it sets up
// after Restrict: creating its TAP and attaching it to a bridge, opening
// disks of other users, and, for Apply, dropping the rest and changing
// user.
var SetupCaps = []uintptr{
	unix.CAP_NET_ADMIN, unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH,
	unix.CAP_SETPCAP, unix.CAP_SETUID, unix.CAP_SETGID,
}

// setupSyscalls are allowed by Restrict's filter beyond VMMSyscalls: what
// Apply does on every thread (prctl of any kind, capset, the user
// switch) and the filter it then stacks (seccomp).
var setupSyscalls = []string{"prctl", "capget", "capset", "setgroups", "setresgid", "setresuid", "seccomp"}

// Restrict is the first of two stages, for a VMM that reads untrusted
// bytes before its setup is done: an incoming VMM decodes its peer's
// stream and only then creates its VM, TAP and disk. It sets no_new_privs,
// keeps only o.KeepCaps (SetupCaps, typically), and installs a filter that
// allows VMMSyscalls plus what Apply needs; Apply, once the VM runs,
// drops the rest and stacks the strict filter on top (the kernel applies
// the stricter of the two). o.UID and o.GID must be zero: the user
// changes in Apply.
func Restrict(o Options) error {
	if o.UID != 0 || o.GID != 0 {
		return errors.New("sandbox: Restrict keeps the user; Apply changes it")
	}
	o.Extra = append(append([]string(nil), o.Extra...), setupSyscalls...)
	return Apply(o)
}
