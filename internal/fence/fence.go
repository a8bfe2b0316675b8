// Package fence lets a host agent hand its VMM processes a deadline after
// which they must stop running their VMs: the local side of lease-based
// fencing (PLATFORM.md, "Ownership and fencing protocol"). The agent renews
// its host lease in etcd and publishes, after every acknowledged renewal, a
// deadline that falls before etcd can expire the lease; each VMM watches the
// deadline and stops its VM once it passes. A dead or frozen agent stops
// renewing, so its VMs stop on time, before anyone may restart them
// elsewhere.
//
// The deadline travels in a small file (the agent's state directory, one
// per host) holding a CLOCK_MONOTONIC time in nanoseconds: both processes
// run on one kernel, so the clock is shared, immune to wall-clock steps,
// and keeps counting while a process is stopped (SIGSTOP) — exactly what a
// frozen host must not escape. The file is replaced atomically (rename), so
// a reader never sees a torn value.
//
// Who may import: the host agent (Publisher) and the VMM (Watch).
package fence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/sys/unix"
)

// fileSize is the file's length: magic, deadline.
const fileSize = 16

var magic = [8]byte{'G', 'W', 'F', 'E', 'N', 'C', 'E', '1'}

// Now returns CLOCK_MONOTONIC in nanoseconds, the clock deadlines are in.
func Now() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// clock is what Follow reads the time from and waits on: CLOCK_MONOTONIC
// and the runtime's timers (which run on the same clock) in production, a
// fake that the tests advance.
type clock interface {
	// Mono is the time in the deadlines' clock, in nanoseconds.
	Mono() int64
	NewTimer(d time.Duration) clockwork.Timer
}

// monotonic is the real clock.
type monotonic struct{}

func (monotonic) Mono() int64 { return Now() }

func (monotonic) NewTimer(d time.Duration) clockwork.Timer {
	return clockwork.NewRealClock().NewTimer(d)
}

// Publisher writes deadlines to a fence file.
type Publisher struct{ path string }

// NewPublisher returns a publisher for the fence file at path.
func NewPublisher(path string) *Publisher { return &Publisher{path: path} }

// Publish sets the deadline to d from now (monotonic).
func (p *Publisher) Publish(d time.Duration) error {
	return p.PublishAt(Now() + int64(d))
}

// PublishAt sets the deadline to the CLOCK_MONOTONIC time mono (ns).
func (p *Publisher) PublishAt(mono int64) error {
	var b [fileSize]byte
	copy(b[:8], magic[:])
	binary.LittleEndian.PutUint64(b[8:], uint64(mono))
	tmp := p.path + ".tmp"
	if err := os.WriteFile(tmp, b[:], 0o644); err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	// Readable by VMMs that dropped to another user, whatever the umask.
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	if err := os.Rename(tmp, p.path); err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	return nil
}

// Path returns the fence file's path.
func (p *Publisher) Path() string { return p.path }

// Read returns the deadline in a fence file (CLOCK_MONOTONIC ns).
func Read(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("fence: %w", err)
	}
	if len(b) != fileSize || [8]byte(b[:8]) != magic {
		return 0, errors.New("fence: " + filepath.Base(path) + " is not a fence file")
	}
	return int64(binary.LittleEndian.Uint64(b[8:])), nil
}

// Watch calls expired once the deadline in the fence file has passed (or
// the file cannot be read: a fence that cannot be checked must fail
// closed), checking every interval and at the deadline itself. It returns
// a stop function.
func Watch(path string, interval time.Duration, expired func(reason string)) (stop func()) {
	return Follow(path, interval, nil, expired)
}

// Follow is Watch that also hands every deadline it reads to update, so
// that the VMM can check the deadline itself where it matters most: at
// every exit of a vCPU, before any I/O of the guest takes effect. That
// closes the window after a frozen VMM is thawed (SIGCONT), when its vCPUs
// run on before this goroutine gets to call expired.
func Follow(path string, interval time.Duration, update func(deadline int64), expired func(reason string)) (stop func()) {
	return follow(monotonic{}, path, interval, update, expired)
}

// follow is Follow on the clock c.
func follow(c clock, path string, interval time.Duration, update func(deadline int64), expired func(reason string)) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := c.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.Chan():
			}
			deadline, err := Read(path)
			if err != nil {
				if update != nil {
					update(1) // long past: fail closed at once
				}
				expired(fmt.Sprintf("fence: cannot read the deadline: %v", err))
				return
			}
			if update != nil {
				update(deadline)
			}
			left := time.Duration(deadline - c.Mono())
			if left <= 0 {
				expired(fmt.Sprintf("fence: the host lease deadline passed %v ago (agent gone or cut off)", -left))
				return
			}
			t.Reset(min(left, interval))
		}
	}()
	return func() { close(done) }
}

// CheckReadable checks, from permission bits, that a VMM running as
// uid:gid can follow the fence at path: search permission on every
// directory above it and, if the file exists yet, read permission on it.
// A fence that cannot be read fails closed, so a VMM that is to drop to
// another user checks first.
func CheckReadable(path string, uid, gid int) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		if err := permits(dir, uid, gid, 1, "search"); err != nil {
			return err
		}
		if dir == "/" {
			break
		}
	}
	if err := permits(abs, uid, gid, 4, "read"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// permits checks one permission bit (1 search, 4 read) of p for uid:gid.
func permits(p string, uid, gid int, bit uint32, what string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return &os.PathError{Op: "stat", Path: p, Err: err}
	}
	m := st.Mode & 0o777
	if int(st.Uid) == uid && m&(bit<<6) != 0 || int(st.Gid) == gid && m&(bit<<3) != 0 || m&bit != 0 {
		return nil
	}
	return fmt.Errorf("fence: uid %d cannot %s %s (mode %#o, owner %d:%d): make it reachable (chmod o+x on the directories, o+r on the file)", uid, what, p, m, st.Uid, st.Gid)
}
