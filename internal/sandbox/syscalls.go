package sandbox

import (
	"fmt"
	"slices"
	"strings"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/sys/unix"
)

// VMMSyscalls is the allow-list for the Godwit VMM after setup (the Go
// runtime + what the VMM does at run time). kill, tgkill, prctl and mmap
// are allowed only with certain arguments (see argRules).
//
// Left out on purpose: execve and execveat, ptrace, mount, wait4, mprotect
// (nothing at run time needs it; with mmap unable to map executable memory
// no page can become executable), clone3, rseq and set_robust_list (glibc
// thread start-up: cgo only), mincore and prlimit64 (the runtime uses them
// at start-up only), timerfd_* (Go's timers live in the netpoller's
// epoll_pwait timeout) and clock_nanosleep (the runtime sleeps with
// nanosleep).
var VMMSyscalls = []string{
	// The Go runtime: locks, sleeps, time (when the vDSO falls back to
	// the kernel), memory, signals (preemption is a signal to a thread;
	// restart_syscall resumes a sleep it interrupted), threads, and
	// sysmon's GOMAXPROCS update each second (sched_getaffinity, pread64
	// of the cgroup's cpu.max). prctl names mappings (Go 1.25+).
	"futex", "sched_yield", "nanosleep", "clock_gettime", "restart_syscall",
	"mmap", "munmap", "madvise",
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
	"clone", "exit", "exit_group", "getpid", "gettid", "tgkill", "kill",
	"sched_getaffinity", "prctl", "getrandom", "uname",

	// The netpoller (epoll_create1 and eventfd2 on first use; eventfd2
	// is also KVM's irqfd and ioeventfd).
	"epoll_create1", "epoll_ctl", "epoll_pwait", "eventfd2",

	// Files: the disk image (pread64/pwrite64, fdatasync, flock which a
	// migration hands over), /proc (pagemap, meminfo, boot_id), the fence
	// file, logs, and removing the API socket at exit.
	"openat", "close", "read", "write", "readv", "writev",
	"pread64", "pwrite64", "preadv", "pwritev", "lseek",
	"fstat", "newfstatat", "statx", "fcntl", "flock",
	"fsync", "fdatasync", "fallocate", "ftruncate", "unlinkat",

	// KVM_RUN and the other KVM ioctls, the TAP device, the terminal.
	// Any ioctl is allowed: narrowing it by request number is a later
	// step.
	"ioctl",

	// The API unix socket, migration over TCP/TLS, the etcd client.
	"socket", "connect", "bind", "listen", "accept4", "shutdown",
	"setsockopt", "getsockopt", "getsockname", "getpeername",
	"sendto", "recvfrom", "sendmsg", "recvmsg",
}

// argRules narrows some of VMMSyscalls to certain arguments: signals only
// to this process (pid), prctl only to name a memory mapping
// (PR_SET_VMA), mmap never executable.
func argRules(pid int) map[string]seccomp.ArgumentConditions {
	self := seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.Equal, Value: uint64(pid)}}
	return map[string]seccomp.ArgumentConditions{
		"kill":   self,
		"tgkill": self,
		"prctl":  {{Argument: 0, Operation: seccomp.Equal, Value: unix.PR_SET_VMA}},
		"mmap":   {{Argument: 2, Operation: seccomp.BitsNotSet, Value: unix.PROT_EXEC}},
	}
}

// newPolicy builds the seccomp policy for o in process pid: VMMSyscalls and
// o.Extra allowed (argRules applying unless o.Extra names the call), all
// else killing the process, or logged under o.Log.
func newPolicy(o Options, pid int) (seccomp.Policy, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return seccomp.Policy{}, fmt.Errorf("sandbox: %w", err)
	}
	rules := argRules(pid)
	group := seccomp.SyscallGroup{Action: seccomp.ActionAllow}
	seen := map[string]bool{}
	for _, name := range slices.Concat(VMMSyscalls, o.Extra) {
		if _, ok := info.SyscallNames[name]; !ok {
			return seccomp.Policy{}, fmt.Errorf("sandbox: unknown syscall %q on %s", name, info.Name)
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		if r, ok := rules[name]; ok && !slices.Contains(o.Extra, name) {
			group.NamesWithCondtions = append(group.NamesWithCondtions, seccomp.NameWithConditions{Name: name, Conditions: r})
		} else {
			group.Names = append(group.Names, name)
		}
	}
	p := seccomp.Policy{DefaultAction: seccomp.ActionKillProcess, Syscalls: []seccomp.SyscallGroup{group}}
	if o.Log {
		p.DefaultAction = seccomp.ActionLog
	}
	if _, err := p.Assemble(); err != nil {
		return seccomp.Policy{}, fmt.Errorf("sandbox: seccomp policy: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return p, nil
}
