package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The tests re-execute the test binary with childEnv naming a mode; the
// child runs it from TestMain (runChild) and exits. dirEnv names a
// temporary directory it may use.
const (
	childEnv = "GODWIT_SANDBOX_CHILD"
	dirEnv   = "GODWIT_SANDBOX_DIR"
)

// The syscalls the thread modes add with Extra: listing /proc/self/task
// and os.Getuid.
var threadExtra = []string{"getdents64", "getuid"}

// children are the modes besides forbidden-NAME (forbiddenCalls).
var children = map[string]func(dir string) error{
	"workload":       workloadChild,
	"log":            logChild,
	"cgo":            cgoChild,
	"threads":        threadsChild(Options{Extra: threadExtra}),
	"keepcap":        threadsChild(Options{KeepCaps: []uintptr{unix.CAP_NET_ADMIN}, Extra: threadExtra}),
	"setuid":         threadsChild(Options{UID: 65534, GID: 65534, Extra: threadExtra}),
	"setuid-keepcap": threadsChild(Options{UID: 65534, GID: 65534, KeepCaps: []uintptr{unix.CAP_NET_ADMIN}, Extra: threadExtra}),
	// Restrict first (as an incoming VMM does), then Apply on top.
	"two-stage": threadsChild(Options{UID: 65534, GID: 65534, Extra: threadExtra}, Options{KeepCaps: SetupCaps, Extra: threadExtra}),
	"panic":     panicChild,
}

// forbiddenCalls are system calls off the list (or off its argument
// rules), each harmless should the filter let it through.
var forbiddenCalls = map[string]func() error{
	"execve":       func() error { return syscall.Exec("/bin/true", []string{"true"}, nil) },
	"ptrace":       func() error { return unix.PtraceAttach(0) }, // no process 0: ESRCH
	"mount":        func() error { return unix.Mount("", "", "", 0, "") },
	"kill-other":   func() error { return unix.Kill(1, 0) }, // signal 0 only checks
	"tgkill-other": func() error { return unix.Tgkill(1, 1, 0) },
	"prctl-other":  func() error { _, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); return err },
	"mmap-exec":    func() error { return mmapUnmap(unix.PROT_READ | unix.PROT_EXEC) },
	"mprotect": func() error {
		b, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return err
		}
		defer unix.Munmap(b)
		return unix.Mprotect(b, unix.PROT_READ)
	},
}

// runChild runs mode and returns the exit code.
func runChild(mode string) int {
	f, ok := children[mode]
	if name, found := strings.CutPrefix(mode, "forbidden-"); found && forbiddenCalls[name] != nil {
		f, ok = forbiddenChild(forbiddenCalls[name]), true
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "child: unknown mode %q\n", mode)
		return 2
	}
	if err := f(os.Getenv(dirEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

func printJSON(v any) error { return json.NewEncoder(os.Stdout).Encode(v) }

// workloadChild applies the default options, then does what the VMM does
// at run time, then prints its Status.
func workloadChild(dir string) error {
	if err := Apply(Options{}); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "child: applied") // a marker for strace -f
	work := []struct {
		name string
		f    func(dir string) error
	}{
		{"threads", workThreads}, {"memory", workMemory}, {"api", workAPI},
		{"tcp", workTCP}, {"disk", workDisk}, {"signal", workSignal}, {"timers", workTimers},
	}
	for _, w := range work {
		if err := w.f(dir); err != nil {
			return fmt.Errorf("%s: %w", w.name, err)
		}
	}
	st, err := ReadStatus(os.Getpid())
	if err != nil {
		return err
	}
	return printJSON(st)
}

// workThreads runs goroutines on threads of their own, allocating; half
// end locked, so that their threads exit (as a vCPU thread may).
func workThreads(string) error {
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			runtime.LockOSThread()
			var keep [][]byte
			for range 100 {
				keep = append(keep, make([]byte, 64<<10))
			}
			time.Sleep(10 * time.Millisecond)
			runtime.KeepAlive(keep)
			if i%2 == 0 {
				runtime.UnlockOSThread()
			}
		})
	}
	wg.Wait()
	return nil
}

// workMemory grows and shrinks the heap, maps and names memory as the
// runtime does, and reads random bytes (TLS does).
func workMemory(string) error {
	big := make([]byte, 128<<20)
	for i := 0; i < len(big); i += 4096 {
		big[i] = 1
	}
	runtime.KeepAlive(big) // garbage from here on
	runtime.GC()
	debug.FreeOSMemory()
	if err := mmapUnmap(unix.PROT_READ | unix.PROT_WRITE); err != nil {
		return err
	}
	var b [32]byte
	_, err := rand.Read(b[:])
	return err
}

// mmapUnmap maps a page with prot, names it as the runtime names its
// mappings (the kernel may not support names: EINVAL), and unmaps it.
func mmapUnmap(prot int) error {
	b, err := unix.Mmap(-1, 0, os.Getpagesize(), prot, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	name := []byte(" Go: sandbox test\x00")
	err = unix.Prctl(unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&name[0])))
	if err != nil && err != unix.EINVAL {
		return fmt.Errorf("prctl PR_SET_VMA: %w", err)
	}
	return unix.Munmap(b)
}

// workAPI serves one HTTP request on a unix socket, as the API does, and
// removes the socket.
func workAPI(dir string) error {
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "running")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := c.Get("http://vmm/v1/vm")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "running" {
		return fmt.Errorf("response %q, %v", body, err)
	}
	srv.Close() // not removing the socket: the VMM removes its own
	return os.Remove(sock)
}

// workTCP makes a loopback TCP round trip, as a migration stream does.
func workTCP(string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err == nil {
			c.Write(buf)
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("page")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "page" {
		return fmt.Errorf("echo %q, %v", buf, err)
	}
	return nil
}

// workDisk does to a file what virtio-blk does to its image.
func workDisk(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "disk.img"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return err
	}
	sector := bytes.Repeat([]byte{0xa5}, 512)
	if _, err := f.WriteAt(sector, 4096); err != nil {
		return err
	}
	got := make([]byte, 512)
	if _, err := f.ReadAt(got, 4096); err != nil || !bytes.Equal(got, sector) {
		return fmt.Errorf("read back: %v", err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := unix.Fdatasync(fd); err != nil {
		return err
	}
	if _, err := os.Stat(f.Name()); err != nil {
		return err
	}
	if err := unix.Flock(fd, unix.LOCK_UN); err != nil {
		return err
	}
	return f.Close()
}

// workSignal signals the process itself and catches the signal.
func workSignal(string) error {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	defer signal.Stop(c)
	if err := unix.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		return err
	}
	select {
	case <-c:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("SIGUSR1 did not arrive")
	}
}

// workTimers sleeps on timers past a second, so that sysmon updates
// GOMAXPROCS meanwhile.
func workTimers(string) error {
	fired := make(chan struct{})
	time.AfterFunc(50*time.Millisecond, func() { close(fired) })
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for range 11 {
		<-t.C
	}
	<-fired
	return nil
}

// logChild applies Options{Log: true}, makes the forbidden calls (but
// execve), which must merely be logged, and prints its Status.
func logChild(string) error {
	if err := Apply(Options{Log: true}); err != nil {
		return err
	}
	for name, f := range forbiddenCalls {
		if name != "execve" {
			fmt.Fprintf(os.Stderr, "child: %s: %v\n", name, f())
		}
	}
	st, err := ReadStatus(os.Getpid())
	if err != nil {
		return err
	}
	return printJSON(st)
}

// panicChild applies the default options and panics: the runtime's crash
// path must work under the filter.
func panicChild(string) error {
	if err := Apply(Options{}); err != nil {
		return err
	}
	panic("sandbox test panic")
}

// forbiddenChild applies the default options, says so on stdout, and makes
// the forbidden call, which must kill it.
func forbiddenChild(call func() error) func(string) error {
	return func(string) error {
		if err := Apply(Options{}); err != nil {
			return err
		}
		fmt.Println("applied")
		err := call()
		fmt.Printf("survived: %v\n", err)
		return nil
	}
}

// cgoReport is what cgoChild prints.
type cgoReport struct {
	Err    string
	Status Status
}

// cgoChild, run in a binary that links cgo, prints Apply's error and its
// Status, which must be untouched.
func cgoChild(string) error {
	err := Apply(Options{})
	if err == nil {
		return errors.New("Apply succeeded in a binary that links cgo")
	}
	st, serr := ReadStatus(os.Getpid())
	if serr != nil {
		return serr
	}
	return printJSON(cgoReport{Err: err.Error(), Status: st})
}

// task is one thread's status.
type task struct {
	TID        int
	Status     Status
	UIDs, GIDs string // the Uid and Gid lines: real, effective, saved, fs
	Groups     string // supplementary groups
}

// threadsReport is what threadsChild prints.
type threadsReport struct {
	Before, After []task // the locked threads, before and after Apply
	All           []task // every thread after Apply
	Getuid        int
}

// threadsChild returns a mode that locks 8 goroutines to threads, applies
// o, and reports on the threads. Before a user switch it joins groups 0
// and 1, which the switch must leave.
func threadsChild(o Options, restrict ...Options) func(string) error {
	return func(string) error {
		if o.UID != 0 {
			if err := syscall.Setgroups([]int{0, 1}); err != nil {
				return err
			}
		}
		for _, r := range restrict {
			if err := Restrict(r); err != nil {
				return err
			}
		}
		const n = 8
		before, after := make(chan task, n), make(chan task, n)
		applied, listed := make(chan struct{}), make(chan struct{})
		errs := make(chan error, 2*n)
		defer close(listed)
		for range n {
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				t, err := readTask(unix.Gettid())
				before <- t
				errs <- err
				<-applied
				t, err = readTask(unix.Gettid())
				after <- t
				errs <- err
				<-listed // the thread stays until allTasks has seen it
			}()
		}
		var r threadsReport
		r.Before = collect(before, n)
		if err := Apply(o); err != nil {
			return err
		}
		close(applied)
		r.After = collect(after, n)
		for range 2 * n {
			if err := <-errs; err != nil {
				return err
			}
		}
		var err error
		if r.All, err = allTasks(); err != nil {
			return err
		}
		r.Getuid = os.Getuid()
		return printJSON(r)
	}
}

func collect(c <-chan task, n int) []task {
	var ts []task
	for range n {
		ts = append(ts, <-c)
	}
	return ts
}

// allTasks reads the status of every thread of the process.
func allTasks() ([]task, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	var ts []task
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			return nil, err
		}
		t, err := readTask(tid)
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread has exited
		}
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// readTask reads /proc/self/task/TID/status.
func readTask(tid int) (task, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
	if err != nil {
		return task{}, err
	}
	st, err := parseStatus(string(b))
	t := task{TID: tid, Status: st}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			t.UIDs = strings.Join(strings.Fields(v), " ")
		}
		if v, ok := strings.CutPrefix(line, "Gid:"); ok {
			t.GIDs = strings.Join(strings.Fields(v), " ")
		}
		if v, ok := strings.CutPrefix(line, "Groups:"); ok {
			t.Groups = strings.Join(strings.Fields(v), " ")
		}
	}
	return t, err
}
