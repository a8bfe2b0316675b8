// Package sandbox hardens the VMM process once it has set up its VM, as
// Firecracker's jailer and crosvm's minijail do. Apply sets no_new_privs,
// drops capabilities, optionally switches to an unprivileged user, and
// installs a seccomp allow-list (VMMSyscalls) after which any other system
// call kills the whole process with SIGSYS.
//
// Capabilities, user IDs and no_new_privs belong to each thread on Linux,
// and a Go process has many threads. Apply changes them on every thread with
// syscall.AllThreadsSyscall: the runtime stops the world and runs the raw
// system call on each of its threads (locked ones and those blocked in
// system calls included); threads created later are cloned from one that
// has it. The runtime refuses (ENOTSUP) in a binary that links cgo, as it
// cannot reach threads that C code made; Apply then returns an error and
// changes nothing. The standard library links cgo for net and os/user
// whenever CGO_ENABLED=1, so build the VMM with CGO_ENABLED=0 (or with
// -tags netgo,osusergo). The seccomp filter reaches every thread through
// SECCOMP_FILTER_FLAG_TSYNC, with TSYNC_ESRCH so that a failed
// synchronisation is an error (Linux 5.7 or later).
//
// The allow-list is written for linux/amd64 and Go 1.26.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"
)

// Options say what Apply keeps.
type Options struct {
	// KeepCaps are capabilities (unix.CAP_*) that stay in the permitted
	// and effective sets (and the bounding set); all others are dropped
	// from the bounding, ambient, inheritable, permitted and effective
	// sets.
	KeepCaps []uintptr
	// UID, GID: when non-zero, switch to this unprivileged user
	// (setgroups to none, then setresgid, then setresuid) after dropping
	// capabilities from the bounding and ambient sets. Zero keeps the
	// current user. Set both or neither.
	UID, GID int
	// Extra syscalls (by name) allowed on top of VMMSyscalls. A name that
	// VMMSyscalls allows only with certain arguments is then allowed with
	// any.
	Extra []string
	// Log makes a forbidden syscall log (SECCOMP_RET_LOG) instead of
	// killing the process; for finding what the allow-list misses. Never
	// the default.
	Log bool
}

// errCgo is Apply's answer in a binary that links cgo.
var errCgo = errors.New("sandbox: this binary links cgo, so capabilities cannot be changed on every thread (syscall.AllThreadsSyscall: ENOTSUP); build it with CGO_ENABLED=0")

// Apply, called once after the VMM has opened everything it needs, sets
// PR_SET_NO_NEW_PRIVS, drops capabilities, optionally changes user, and
// installs a seccomp allow-list filter on every thread of the process
// (TSYNC). A syscall outside the list kills the whole process
// (SECCOMP_RET_KILL_PROCESS), so the parent sees SIGSYS.
//
// It needs CAP_SETPCAP (and CAP_SETUID and CAP_SETGID to change user).
// Options are checked, and the filter built, before anything changes; an
// error after that leaves the process partly hardened, and the caller
// should exit. A second call is killed: the calls Apply makes are not on
// the list.
func Apply(o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	last, err := lastCap()
	if err != nil {
		return err
	}
	keep, err := capMask(o.KeepCaps, last)
	if err != nil {
		return err
	}
	policy, err := newPolicy(o, os.Getpid())
	if err != nil {
		return err
	}
	if !allThreadsSupported() {
		return errCgo
	}
	// Without CAP_SETPCAP (an unprivileged VMM) the bounding set cannot be
	// changed, and need not be: the permitted set is empty, no_new_privs
	// keeps it so, and execve is not on the list.
	st, err := ReadStatus(os.Getpid())
	if err != nil {
		return err
	}
	bounding := st.CapEff&(1<<unix.CAP_SETPCAP) != 0
	for _, s := range credSteps(o, keep, last, bounding) {
		if _, _, e := syscall.AllThreadsSyscall(s.trap, s.a1, s.a2, s.a3); e != 0 {
			return fmt.Errorf("sandbox: %s: %w", s.what, e)
		}
	}
	if err := setCaps(keep); err != nil {
		return err
	}
	f := seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync | seccomp.FilterFlag(unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH),
		Policy:     policy,
	}
	if err := seccomp.LoadFilter(f); err != nil {
		return fmt.Errorf("sandbox: install the seccomp filter: %w", err)
	}
	return nil
}

func (o Options) check() error {
	if o.UID < 0 || o.GID < 0 || (o.UID == 0) != (o.GID == 0) {
		return fmt.Errorf("sandbox: UID %d, GID %d: set both to a user (non-zero) or neither", o.UID, o.GID)
	}
	return nil
}

// allThreadsSupported reports whether syscall.AllThreadsSyscall works here
// (it does not in a binary that links cgo).
func allThreadsSupported() bool {
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_GETPID, 0, 0, 0)
	return e != syscall.ENOTSUP
}

// lastCap returns the highest capability number the kernel knows.
func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("sandbox: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("sandbox: /proc/sys/kernel/cap_last_cap: %q is not a capability number", b)
	}
	return n, nil
}

// capMask returns caps as a bit mask, refusing any beyond last.
func capMask(caps []uintptr, last int) (uint64, error) {
	var m uint64
	for _, c := range caps {
		if c > uintptr(last) {
			return 0, fmt.Errorf("sandbox: capability %d is beyond the last one this kernel knows (%d)", c, last)
		}
		m |= 1 << c
	}
	return m, nil
}

// step is one system call that Apply runs on every thread.
type step struct {
	what             string
	trap, a1, a2, a3 uintptr
}

// credSteps lists Apply's per-thread changes before the capset: no new
// privileges, the bounding and ambient sets, then the user. Across the
// user switch PR_SET_KEEPCAPS keeps the permitted set, from which setCaps
// then keeps only keep (the kernel would otherwise clear it, kept
// capabilities too).
func credSteps(o Options, keep uint64, last int, bounding bool) []step {
	s := []step{{"set no_new_privs", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0}}
	for c := 0; c <= last && bounding; c++ {
		if keep&(1<<c) == 0 {
			what := fmt.Sprintf("drop capability %d from the bounding set", c)
			s = append(s, step{what, unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0})
		}
	}
	s = append(s, step{"clear the ambient set", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0})
	if o.UID == 0 {
		return s
	}
	u, g := uintptr(o.UID), uintptr(o.GID)
	return append(s,
		step{"set keepcaps", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0},
		step{"setgroups to none", unix.SYS_SETGROUPS, 0, 0, 0},
		step{"setresgid " + strconv.Itoa(o.GID), unix.SYS_SETRESGID, g, g, g},
		step{"setresuid " + strconv.Itoa(o.UID), unix.SYS_SETRESUID, u, u, u},
		step{"clear keepcaps", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0, 0})
}

// setCaps sets the effective and permitted sets of every thread to keep,
// and the inheritable set to none.
func setCaps(keep uint64) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i := range data {
		data[i].Effective = uint32(keep >> (32 * i))
		data[i].Permitted = data[i].Effective
	}
	// AllThreadsSyscall is go:uintptrescapes: hdr and data stay alive
	// for the call.
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if e != 0 {
		return fmt.Errorf("sandbox: capset: %w", e)
	}
	return nil
}
