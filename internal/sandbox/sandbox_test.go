package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/testenv"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	code := m.Run()
	if childBin.dir != "" {
		os.RemoveAll(childBin.dir)
	}
	os.Exit(code)
}

// childBin is a cgo-free build of this test binary, made when this one
// links cgo (then Apply refuses to run in it).
var childBin struct {
	once      sync.Once
	dir, path string
	err       error
}

// childBinary returns the test binary the children run: this one, or a
// cgo-free build of it when this one links cgo.
func childBinary(t *testing.T) string {
	t.Helper()
	if allThreadsSupported() {
		p, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	childBin.once.Do(func() {
		if childBin.dir, childBin.err = os.MkdirTemp("", "godwit-sandbox-test"); childBin.err != nil {
			return
		}
		path := filepath.Join(childBin.dir, "sandbox.test")
		build := exec.Command("go", "test", "-c", "-o", path, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			childBin.err = fmt.Errorf("%v\n%s", err, out)
			return
		}
		childBin.path = path
	})
	if childBin.err != nil {
		t.Fatalf("this test binary links cgo; building a cgo-free one (CGO_ENABLED=0 go test -c) failed: %v", childBin.err)
	}
	return childBin.path
}

// requireRoot skips t unless this process may drop capabilities and change
// user, and returns its status.
func requireRoot(t *testing.T) Status {
	t.Helper()
	testenv.RequireRoot(t)
	st, err := ReadStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	const need = 1<<unix.CAP_SETPCAP | 1<<unix.CAP_SETUID | 1<<unix.CAP_SETGID
	if st.CapEff&need != need {
		t.Fatalf("sandbox: root without CAP_SETPCAP, CAP_SETUID and CAP_SETGID (CapEff %#x): cannot test dropping them", st.CapEff)
	}
	return st
}

// runMode runs bin as a child in mode, in a temporary directory, with env
// added to its environment, and returns its stdout and the error of its
// run. Should t fail, its stderr is logged.
func runMode(t *testing.T, bin, mode string, env ...string) ([]byte, error) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append(env, childEnv+"="+mode, dirEnv+"="+dir)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Cleanup(func() {
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("child %s stderr:\n%s", mode, stderr.Bytes())
		}
	})
	return stdout.Bytes(), err
}

// checkSignaled fails t unless err says the child was killed by sig.
func checkSignaled(t *testing.T, err error, sig syscall.Signal) {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() && ws.Signal() == sig {
			return
		}
	}
	t.Fatalf("child: %v, want killed by %v", err, sig)
}

// runOK runs mode, which must exit 0, and decodes its JSON report into v.
func runOK(t *testing.T, mode string, v any) {
	t.Helper()
	out, err := runMode(t, childBinary(t), mode)
	if err != nil {
		t.Fatalf("child %s: %v (stdout %q)", mode, err, out)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("child %s: report %q: %v", mode, out, err)
	}
}

// checkSandboxed fails t unless st is a thread under the filter, with
// no_new_privs and exactly caps in its effective, permitted and bounding
// sets.
func checkSandboxed(t *testing.T, who string, st Status, caps uint64) {
	t.Helper()
	if st.Seccomp != 2 || !st.NoNewPrivs || st.CapEff != caps || st.CapPrm != caps || st.CapBnd != caps {
		t.Errorf("%s: %+v, want Seccomp 2, NoNewPrivs and CapEff, CapPrm, CapBnd %#x", who, st, caps)
	}
}

func TestApplyWorkload(t *testing.T) {
	parent := requireRoot(t)
	if parent.CapEff == 0 {
		t.Fatal("this process has no effective capabilities: dropping them would prove nothing")
	}
	var st Status
	runOK(t, "workload", &st)
	checkSandboxed(t, "workload child", st, 0)
}

func TestApplyForbidden(t *testing.T) {
	requireRoot(t)
	bin := childBinary(t)
	for name := range forbiddenCalls {
		t.Run(name, func(t *testing.T) {
			out, err := runMode(t, bin, "forbidden-"+name)
			if string(out) != "applied\n" {
				t.Errorf("stdout %q, want %q: the child must die at the forbidden call", out, "applied\n")
			}
			checkSignaled(t, err, syscall.SIGSYS)
		})
	}
}

// TestApplyPanic checks that a crash after Apply is still the runtime's
// own (GOTRACEBACK=crash: SIGABRT), not SIGSYS from a call its crash path
// makes.
func TestApplyPanic(t *testing.T) {
	requireRoot(t)
	_, err := runMode(t, childBinary(t), "panic", "GOTRACEBACK=crash")
	checkSignaled(t, err, syscall.SIGABRT)
}

func TestApplyLog(t *testing.T) {
	requireRoot(t)
	var st Status
	runOK(t, "log", &st)
	if st.Seccomp != 2 {
		t.Errorf("Seccomp %d, want 2", st.Seccomp)
	}
}

// checkThreads runs a threadsChild mode and checks every thread: switched
// to uid (and the same gid) and left with exactly caps.
func checkThreads(t *testing.T, mode string, uid int, caps uint64) {
	t.Helper()
	requireRoot(t)
	var r threadsReport
	runOK(t, mode, &r)
	if len(r.Before) != 8 || len(r.After) != 8 {
		t.Fatalf("%d threads before, %d after, want 8", len(r.Before), len(r.After))
	}
	tids := func(ts []task) []int {
		var ids []int
		for _, t := range ts {
			ids = append(ids, t.TID)
		}
		slices.Sort(ids)
		return ids
	}
	before, after := tids(r.Before), tids(r.After)
	if !slices.Equal(before, after) || len(slices.Compact(slices.Clone(before))) != 8 {
		t.Errorf("locked threads %v before Apply, %v after; want the same 8", before, after)
	}
	for _, b := range r.Before {
		if mode == "two-stage" {
			// Restricted already: a filter, and only the setup capabilities.
			if b.Status.Seccomp != 2 || b.Status.CapEff == 0 || b.Status.CapEff&(1<<unix.CAP_SYS_ADMIN) != 0 {
				t.Errorf("thread %d after Restrict: %+v, want a filter and only SetupCaps", b.TID, b.Status)
			}
			continue
		}
		if b.Status.Seccomp != 0 || b.Status.CapEff == 0 {
			t.Errorf("thread %d before Apply: %+v, want no filter and capabilities", b.TID, b.Status)
		}
		if uid != 0 && b.Groups != "0 1" {
			t.Errorf("thread %d before Apply: groups %q, want the child's \"0 1\"", b.TID, b.Groups)
		}
	}
	for _, a := range r.After {
		checkSandboxed(t, fmt.Sprintf("locked thread %d", a.TID), a.Status, caps)
	}
	if len(r.All) <= 8 {
		t.Errorf("%d threads in /proc/self/task, want more than the 8 locked", len(r.All))
	}
	ids := strings.TrimSpace(strings.Repeat(fmt.Sprint(uid)+" ", 4))
	for _, a := range r.All {
		checkSandboxed(t, fmt.Sprintf("thread %d", a.TID), a.Status, caps)
		if a.UIDs != ids || a.GIDs != ids {
			t.Errorf("thread %d: Uid %q, Gid %q, want %q", a.TID, a.UIDs, a.GIDs, ids)
		}
		if uid != 0 && a.Groups != "" {
			t.Errorf("thread %d: groups %q, want none", a.TID, a.Groups)
		}
	}
	if r.Getuid != uid {
		t.Errorf("os.Getuid() = %d, want %d", r.Getuid, uid)
	}
}

func TestApplyThreads(t *testing.T) { checkThreads(t, "threads", 0, 0) }

func TestApplyKeepCaps(t *testing.T) { checkThreads(t, "keepcap", 0, 1<<unix.CAP_NET_ADMIN) }

func TestApplySetuid(t *testing.T) { checkThreads(t, "setuid", 65534, 0) }

// TestRestrictThenApply: an incoming VMM's two stages end as Apply alone
// does, the user changed too, on every thread.
func TestRestrictThenApply(t *testing.T) { checkThreads(t, "two-stage", 65534, 0) }

func TestApplySetuidKeepCaps(t *testing.T) {
	checkThreads(t, "setuid-keepcap", 65534, 1<<unix.CAP_NET_ADMIN)
}

func TestApplyRefusesCgo(t *testing.T) {
	if allThreadsSupported() {
		t.Skip("sandbox: this test binary does not link cgo (built with CGO_ENABLED=0)")
	}
	parent, err := ReadStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := runMode(t, self, "cgo")
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var r cgoReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("report %q: %v", out, err)
	}
	if r.Err != errCgo.Error() {
		t.Errorf("Apply: %q, want %q", r.Err, errCgo)
	}
	if r.Status != parent {
		t.Errorf("child after the refused Apply: %+v, want it untouched, as this process: %+v", r.Status, parent)
	}
}

func TestParseStatus(t *testing.T) {
	const sample = `Name:	godwit
Umask:	0022
State:	S (sleeping)
Tgid:	4242
Pid:	4242
Uid:	65534	65534	65534	65534
Gid:	65534	65534	65534	65534
CapInh:	0000000000000000
CapPrm:	0000000000001000
CapEff:	0000000000001000
CapBnd:	000001ffffffffff
CapAmb:	0000000000000000
NoNewPrivs:	1
Seccomp:	2
Seccomp_filters:	1
Speculation_Store_Bypass:	thread vulnerable
`
	got, err := parseStatus(sample)
	if err != nil {
		t.Fatal(err)
	}
	want := Status{Seccomp: 2, NoNewPrivs: true, CapEff: 0x1000, CapPrm: 0x1000, CapBnd: 0x1ffffffffff}
	if got != want {
		t.Errorf("parseStatus = %+v, want %+v", got, want)
	}
	for _, drop := range []string{"Seccomp:", "NoNewPrivs:", "CapEff:", "CapPrm:", "CapBnd:"} {
		var kept []string
		for line := range strings.Lines(sample) {
			if !strings.HasPrefix(line, drop) {
				kept = append(kept, line)
			}
		}
		if _, err := parseStatus(strings.Join(kept, "")); err == nil {
			t.Errorf("parseStatus without the %s line: no error", drop)
		}
	}
	if _, err := parseStatus(strings.Replace(sample, "CapEff:\t0000000000001000", "CapEff:\tzz", 1)); err == nil {
		t.Error("parseStatus with a bad CapEff: no error")
	}
}

func TestReadStatus(t *testing.T) {
	if _, err := ReadStatus(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStatus(-1); err == nil || !strings.HasPrefix(err.Error(), "sandbox: ") {
		t.Errorf("ReadStatus(-1): %v, want a sandbox: error", err)
	}
}

func TestPolicy(t *testing.T) {
	for _, bad := range []string{
		"execve", "execveat", "ptrace", "mount", "umount2", "wait4", "mprotect",
		"clone3", "seccomp", "capset", "setuid", "setresuid", "unshare", "setns",
		"init_module", "finit_module", "bpf", "process_vm_writev", "pivot_root", "chroot",
	} {
		if slices.Contains(VMMSyscalls, bad) {
			t.Errorf("VMMSyscalls allows %s", bad)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(VMMSyscalls)))) != len(VMMSyscalls) {
		t.Error("VMMSyscalls has duplicates")
	}
	for name := range argRules(1) {
		if !slices.Contains(VMMSyscalls, name) {
			t.Errorf("argRules narrows %s, which VMMSyscalls does not list", name)
		}
	}
	p, err := newPolicy(Options{Extra: []string{"getppid", "futex", "kill"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	g := p.Syscalls[0]
	if !slices.Contains(g.Names, "getppid") || !slices.Contains(g.Names, "kill") || len(g.NamesWithCondtions) != 3 {
		t.Errorf("Extra getppid, futex and kill: names %v, with conditions %v; want getppid and kill unconditional, 3 narrowed", g.Names, g.NamesWithCondtions)
	}
	if _, err := newPolicy(Options{Extra: []string{"nosuchcall"}}, 1); err == nil || !strings.HasPrefix(err.Error(), "sandbox: ") {
		t.Errorf("unknown Extra syscall: %v, want a sandbox: error", err)
	}
}

func TestOptionsCheck(t *testing.T) {
	for _, o := range []Options{{UID: 1000}, {GID: 1000}, {UID: -1, GID: -1}} {
		if err := o.check(); err == nil || !strings.HasPrefix(err.Error(), "sandbox: ") {
			t.Errorf("%+v: %v, want a sandbox: error", o, err)
		}
	}
	for _, o := range []Options{{}, {UID: 1000, GID: 1000}} {
		if err := o.check(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	if _, err := capMask([]uintptr{64}, 40); err == nil {
		t.Error("capMask accepted capability 64")
	}
	if m, err := capMask([]uintptr{unix.CAP_NET_ADMIN, 0}, 40); err != nil || m != 1<<unix.CAP_NET_ADMIN|1 {
		t.Errorf("capMask = %#x, %v", m, err)
	}
}
