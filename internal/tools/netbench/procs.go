package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/guest"
)

// proc is one VMM process (Godwit or QEMU) whose stdout is the guest's
// serial console, time-stamped line by line on arrival.
type proc struct {
	name     string
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	con      *guest.Console
	tail     *tailWriter // the unfinished last console line
	stderr   syncBuffer
	logPath  string
	launched time.Time
	done     chan struct{} // closed once it has exited and stdout is drained
	waitErr  error
}

// registry holds every child still running so that stopAll (normal exit,
// error or Ctrl-C) can end each by its pid.
var registry = struct {
	sync.Mutex
	procs   map[int]*proc
	stopped bool
}{procs: map[int]*proc{}}

// spawn runs fn on one OS thread that never exits. Children are started
// with Pdeathsig (they die if we are killed without cleaning up), and
// Linux delivers that signal when the *thread* that forked them exits, not
// the process: Go ends threads that a goroutine left locked (netlab's
// namespace helpers do so on purpose), so forking from an arbitrary thread
// could kill a VMM in the middle of a run.
var spawn = func() func(func()) {
	reqs := make(chan func())
	go func() {
		runtime.LockOSThread() // never unlocked: this thread lives as long as we do
		for fn := range reqs {
			fn()
		}
	}()
	return func(fn func()) {
		done := make(chan struct{})
		reqs <- func() { fn(); close(done) }
		<-done
	}
}()

// startProc starts argv with stdout fed to a guest.Console and stdin a
// pipe, and registers it. logDir receives NAME.console.log (host arrival
// time, Unix seconds, per line) and NAME.stderr.log when it exits.
func startProc(name, logDir string, argv ...string) (*proc, error) {
	registry.Lock()
	defer registry.Unlock()
	if registry.stopped {
		return nil, fmt.Errorf("%s: shutting down", name)
	}
	p := &proc{name: name, con: guest.NewConsole(nil), tail: &tailWriter{}, done: make(chan struct{})}
	if logDir != "" {
		p.logPath = filepath.Join(logDir, name)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = io.MultiWriter(p.con, p.tail)
	cmd.Stderr = &p.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	p.cmd, p.stdin = cmd, in
	spawn(func() {
		p.launched = time.Now()
		err = cmd.Start()
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pid := cmd.Process.Pid
	registry.procs[pid] = p
	go func() {
		p.waitErr = cmd.Wait()
		p.con.Close()
		p.writeLogs()
		registry.Lock()
		delete(registry.procs, pid)
		registry.Unlock()
		close(p.done)
	}()
	return p, nil
}

// exited says whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to end.
func (p *proc) waitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop ends the process by its pid: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if !p.waitExit(grace) {
		p.cmd.Process.Kill()
		p.waitExit(5 * time.Second)
	}
}

// send types text on the guest console through the VMM's stdin.
func (p *proc) send(text string) error {
	_, err := io.WriteString(p.stdin, text)
	return err
}

// waitPrefix waits for a console line starting with prefix, from line mark.
func (p *proc) waitPrefix(mark int, prefix string, timeout time.Duration) (guest.Line, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l, _, err := p.con.WaitLine(ctx, mark, func(s string) bool { return strings.HasPrefix(s, prefix) })
	if err != nil {
		return l, fmt.Errorf("%s: waiting for %q: %w (stderr: %s)", p.name, prefix, err, shorten(p.stderr.String(), 400))
	}
	return l, nil
}

// writeLogs saves the console with host arrival times and stderr.
func (p *proc) writeLogs() {
	if p.logPath == "" {
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s launched at %.6f: %s\n", p.name, float64(p.launched.UnixMicro())/1e6, strings.Join(p.cmd.Args, " "))
	for _, l := range p.con.Lines() {
		fmt.Fprintf(&b, "%.6f %s\n", float64(l.At.UnixMicro())/1e6, l.Text)
	}
	os.WriteFile(p.logPath+".console.log", b.Bytes(), 0o644)
	os.WriteFile(p.logPath+".stderr.log", p.stderr.Bytes(), 0o644)
}

// stopAll stops every child still running, in parallel, and refuses new
// ones.
func stopAll() {
	registry.Lock()
	registry.stopped = true
	var ps []*proc
	for _, p := range registry.procs {
		ps = append(ps, p)
	}
	registry.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop(3 * time.Second)
		}()
	}
	wg.Wait()
}

// runShort runs a short command to completion within timeout and returns
// its stdout; stderr is folded into the error.
func runShort(timeout time.Duration, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// tailWriter keeps the bytes after the last newline: the console line a
// migration source leaves unfinished when it is paused mid-line (the
// destination prints the rest).
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		t.buf = append(t.buf[:0], b[i+1:]...)
	} else {
		t.buf = append(t.buf, b...)
	}
	if len(t.buf) > 512 {
		t.buf = t.buf[len(t.buf)-512:]
	}
	return len(b), nil
}

func (t *tailWriter) partial() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimRight(string(t.buf), "\r")
}

// syncBuffer is a bytes.Buffer safe for a copying goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Bytes returns a copy of the contents.
func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

func shorten(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + " …"
}
