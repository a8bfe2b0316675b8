package vmmcmd

import (
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/fence"
	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/sandbox"
)

// enterSandbox hardens the VMM once its VM runs and everything it needs
// is open (guest RAM, the accelerator, TAP, disk, API socket, migration
// listener): no new privileges, every capability dropped, optionally an
// unprivileged user (runAs), and the seccomp allow-list on every thread,
// so that a bug in a device model or a decoder of guest or peer bytes
// cannot make the process do anything a VMM at run time does not. A
// forbidden system call kills the process with SIGSYS; the host agent
// reports it.
//
// As another user the VMM still has every file it opened; by path it only
// reads the fence file (checked here first, as the fence fails closed).
// Its credential files stay root's: a rotated certificate reaches it at
// its next start.
func enterSandbox(runAs user, fenceFile string, selftest time.Duration, log *slog.Logger) error {
	o := sandbox.Options{UID: runAs.uid, GID: runAs.gid}
	if runAs.uid != 0 && fenceFile != "" {
		if err := fence.CheckReadable(fenceFile, runAs.uid, runAs.gid); err != nil {
			return fmt.Errorf("--run-as %s: %w", runAs.name, err)
		}
	}
	// Migrations read /proc/self/pagemap, which a process that changed its
	// user may no longer open.
	if err := migration.OpenPagemap(); err != nil {
		return err
	}
	if err := sandbox.Apply(o); err != nil {
		return err
	}
	log.Info("sandbox on: seccomp allow-list on every thread, no capabilities, no new privileges", "run_as", runAs.name)
	if selftest > 0 {
		go func() {
			time.Sleep(selftest)
			log.Warn("seccomp self-test: making a forbidden system call (mount)")
			unix.Syscall6(unix.SYS_MOUNT, 0, 0, 0, 0, 0, 0)
			log.Error("seccomp self-test: the forbidden system call returned: the filter is not on")
		}()
	}
	return nil
}

// user is --run-as, resolved at start: looking a name up later, under
// the incoming VMM's first filter, would ask for the current user.
type user struct {
	name     string
	uid, gid int // 0: keep root
}

func lookupRunAs(name string) (user, error) {
	if name == "" {
		return user{}, nil
	}
	uid, gid, err := sandbox.LookupUser(name)
	if err != nil {
		return user{}, fmt.Errorf("--run-as: %w", err)
	}
	return user{name: name, uid: uid, gid: gid}, nil
}
