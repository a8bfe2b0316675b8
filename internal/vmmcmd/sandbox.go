package vmmcmd

import (
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/sandbox"
)

// enterSandbox hardens the VMM once its VM runs and everything it needs
// is open (guest RAM, the accelerator, TAP, disk, API socket, migration
// listener): no new privileges, every capability dropped, and the seccomp
// allow-list on every thread, so that a bug in a device model or a
// decoder of guest or peer bytes cannot make the process do anything a
// VMM at run time does not. A forbidden system call kills the process
// with SIGSYS; the host agent reports it.
func enterSandbox(selftest time.Duration, log *slog.Logger) error {
	if err := sandbox.Apply(sandbox.Options{}); err != nil {
		return err
	}
	log.Info("sandbox on: seccomp allow-list on every thread, no capabilities, no new privileges")
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
