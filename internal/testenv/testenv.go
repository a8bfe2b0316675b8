// Package testenv lets tests that need real host facilities (an accelerator
// to run a VM on, /dev/kvm itself, root, network namespaces, a built test
// guest) say so. Each Require function
// either logs "testenv: requires X: available" and returns, or skips the test
// with "testenv: requires X: <why missing>". The test runner's summary
// (internal/tools/testsummary) counts these lines to report how many such
// tests ran and how many skipped.
//
// With GODWIT_TEST_STRICT=1 in the environment (CI sets it) a missing
// facility fails the test instead of skipping it, so that a machine that
// should run everything cannot pass by skipping.
//
// Who may import: tests only.
package testenv

import (
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/accel"
	"github.com/godwit-vmm/godwit/internal/kvm"
)

// RequireKVM is for tests of KVM itself (its ioctls, its dirty log): it
// skips t unless /dev/kvm can be opened. A host without /dev/kvm is
// expected (VM tests run on the software CPU there), so even strict mode
// only skips; a /dev/kvm that exists but cannot be opened is a missing
// facility.
func RequireKVM(t testing.TB) {
	t.Helper()
	if err := kvm.Available(); err != nil {
		if _, serr := os.Stat(kvm.DevicePath); errors.Is(serr, fs.ErrNotExist) {
			t.Skipf("testenv: requires kvm: %s does not exist on this host (expected: VM tests use the software CPU)", kvm.DevicePath)
		}
		skipf(t, "testenv: requires kvm: %v", err)
	}
	t.Log("testenv: requires kvm: available")
}

// RequireVM is for tests that run a VM: it returns the accelerator they run
// on ("kvm" where /dev/kvm exists, else "emu", the software CPU, which every
// host has), logging "testenv: requires vm: available (accel X)". A
// /dev/kvm that exists but cannot be opened is a missing facility (fails
// under strict mode): auto would not fall back from it either.
func RequireVM(t testing.TB) string {
	t.Helper()
	kind, err := accel.Resolve(accel.Auto)
	if err != nil {
		skipf(t, "testenv: requires vm: %v", err)
	}
	if kind == accel.KVM {
		if err := kvm.Available(); err != nil {
			skipf(t, "testenv: requires vm: %v", err)
		}
	}
	t.Logf("testenv: requires vm: available (accel %s)", kind)
	return kind
}

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipf(t, "testenv: requires root: not running as root (run `sudo make test`)")
	}
	t.Log("testenv: requires root: available")
}

// RequireNetns skips t unless network namespaces, veths and bridges can be
// made: root and the ip(8) command.
func RequireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipf(t, "testenv: requires netns: not running as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipf(t, "testenv: requires netns: ip(8) not found (apt-get install iproute2)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		skipf(t, "testenv: requires netns: /dev/net/tun: %v", err)
	}
	t.Log("testenv: requires netns: available")
}

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	return repoRoot()
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildGodwit builds the godwit and godwit-vmm binaries (./cmd/godwit,
// ./cmd/godwit-vmm) into dir and returns godwit's path. They are built as
// `make build` does: no race detector, even under go test -race, and
// without cgo, so that the VMM can sandbox itself (package sandbox). A
// failed build is an error holding go build's output.
func BuildGodwit(dir string) (string, error) {
	for _, cmd := range []string{"godwit", "godwit-vmm"} {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "./cmd/"+cmd)
		build.Dir = repoRoot()
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %v\n%s", cmd, err, out)
		}
	}
	return filepath.Join(dir, "godwit"), nil
}

// RunWithGodwit is the body of a TestMain whose tests run the godwit
// binary: it builds it into a new temporary directory (readable by all, as a
// test may run it as another user), sets *bin to its path, runs the tests,
// removes the directory and returns the exit code for os.Exit.
func RunWithGodwit(m *testing.M, bin *string) int {
	dir, err := os.MkdirTemp("", "godwit-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *bin, err = BuildGodwit(dir); err != nil {
		fmt.Fprint(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// GuestELF returns the path of the built test guest, or skips t naming the
// build command when it is missing. GODWIT_GUEST overrides the path.
func GuestELF(t testing.TB) string {
	t.Helper()
	p := os.Getenv("GODWIT_GUEST")
	if p == "" {
		p = filepath.Join(RepoRoot(t), "guest", "build", "guest.elf")
	}
	if _, err := os.Stat(p); err != nil {
		skipf(t, "testenv: requires guest: %s missing (run `make guest`)", p)
	}
	t.Log("testenv: requires guest: available")
	return p
}

// LinuxGuest returns the kernel (the vmlinux, booted by its PVH entry)
// and initramfs of the Linux guest (make linux-guest: guest/build/linux,
// or the directory GODWIT_LINUX_GUEST names), or skips t naming the build
// command when they are missing.
func LinuxGuest(t testing.TB) (kernel, initrd string) {
	t.Helper()
	dir := os.Getenv("GODWIT_LINUX_GUEST")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "guest", "build", "linux")
	}
	kernel, initrd = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initramfs.cpio.gz")
	for _, p := range []string{kernel, initrd} {
		if _, err := os.Stat(p); err != nil {
			skipf(t, "testenv: requires linux guest: %s missing (run `make linux-guest`)", p)
		}
	}
	t.Log("testenv: requires linux guest: available")
	return kernel, initrd
}

// ConformELF returns the path of the built CPU conformance guest,
// conform.elf beside the test guest (the directory of GODWIT_GUEST, else
// guest/build), or skips t naming the build command when it is missing.
func ConformELF(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(RepoRoot(t), "guest", "build")
	if g := os.Getenv("GODWIT_GUEST"); g != "" {
		dir = filepath.Dir(g)
	}
	p := filepath.Join(dir, "conform.elf")
	if _, err := os.Stat(p); err != nil {
		skipf(t, "testenv: requires conformance guest: %s missing (run `make guest`)", p)
	}
	t.Log("testenv: requires conformance guest: available")
	return p
}

// RequireQEMU is for tests that compare Godwit with QEMU, the reference
// (scripts/deps.sh installs it): it returns the path of
// qemu-system-x86_64, or skips t (fails it under strict mode) naming the
// package to install.
func RequireQEMU(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		skipf(t, "testenv: requires qemu: qemu-system-x86_64 not found on PATH (apt-get install qemu-system-x86, or make deps)")
	}
	t.Logf("testenv: requires qemu: available (%s)", bin)
	return bin
}

// skipf skips t, or fails it under GODWIT_TEST_STRICT.
func skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("GODWIT_TEST_STRICT") != "" {
		t.Fatalf(format+" (GODWIT_TEST_STRICT is set: this machine must run it)", args...)
	}
	t.Skipf(format, args...)
}

// Logger returns a logger that writes through t.Log: warnings and errors by
// default, everything at the level GODWIT_TEST_LOG names (e.g. debug).
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if s := os.Getenv("GODWIT_TEST_LOG"); s != "" {
		level.UnmarshalText([]byte(s))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// CheckImports fails t for every import of a non-test Go file in the given
// package directories that its rule forbids, so that layers keep pointing
// one way. Directories are relative to the calling test's package.
func CheckImports(t testing.TB, rules map[string]func(importPath string) bool) {
	t.Helper()
	for dir, forbidden := range rules {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if forbidden(p) {
					t.Errorf("%s imports %s", f, p)
				}
			}
		}
	}
}

// VMAvailable reports, without skipping anything, whether RequireVM would
// let a test run a VM here.
func VMAvailable() bool {
	kind, err := accel.Resolve(accel.Auto)
	if err != nil {
		return false
	}
	return kind != accel.KVM || kvm.Available() == nil
}
