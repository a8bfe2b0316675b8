package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/guest"
)

// proc is one long-lived child process: a VMM (Godwit or QEMU) whose stdout
// is the guest console, or the QEMU harness.
type proc struct {
	name     string
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	con      *guest.Console // the guest console (stdout), time-stamped on arrival
	tail     *tailWriter    // the unfinished last line of stdout
	launched time.Time      // just before fork/exec
	group    bool           // signal its whole process group (the harness's QEMUs)
	logPath  string         // console log written when it exits

	done    chan struct{} // closed when it has exited and stdout is drained
	waitErr error
}

// registry holds every child still running, so that stopAll can end them.
var registry = struct {
	sync.Mutex
	procs   map[int]*proc
	stopped bool
}{procs: map[int]*proc{}}

// procOpts are the optional parts of startProc.
type procOpts struct {
	dir    string
	env    []string
	group  bool      // own process group, killed as a whole
	stdout io.Writer // extra copy of stdout (besides the console)
	stderr io.Writer // stderr, if not logged to logDir
	logDir string    // where NAME.console.log and NAME.stderr.log go
}

// startProc starts argv with its stdout fed into a guest.Console and its
// stdin a pipe, and registers it for stopAll.
func startProc(name string, argv []string, o procOpts) (*proc, error) {
	registry.Lock()
	defer registry.Unlock()
	if registry.stopped {
		return nil, fmt.Errorf("%s: shutting down", name)
	}
	p := &proc{name: name, con: guest.NewConsole(nil), tail: &tailWriter{}, group: o.group, done: make(chan struct{})}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = o.dir
	if o.env != nil {
		cmd.Env = append(os.Environ(), o.env...)
	}
	// Children die with us even if we are killed without a chance to
	// clean up (the harness's own QEMUs excepted: see stopAll).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: o.group}
	outs := []io.Writer{p.con, p.tail}
	if o.stdout != nil {
		outs = append(outs, o.stdout)
	}
	cmd.Stdout = io.MultiWriter(outs...)
	stderr := o.stderr
	if stderr == nil {
		stderr = io.Discard
	}
	if o.logDir != "" {
		f, err := os.Create(filepath.Join(o.logDir, name+".stderr.log"))
		if err != nil {
			return nil, err
		}
		stderr = f
		p.logPath = filepath.Join(o.logDir, name+".console.log")
	}
	cmd.Stderr = stderr
	closeLog := func() {
		if f, ok := stderr.(*os.File); ok {
			f.Close()
		}
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		closeLog()
		return nil, err
	}
	p.cmd, p.stdin = cmd, in
	p.launched = time.Now()
	if err := cmd.Start(); err != nil {
		closeLog()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	registry.procs[cmd.Process.Pid] = p
	go func() {
		p.waitErr = cmd.Wait()
		p.con.Close()
		closeLog()
		p.writeConsoleLog()
		registry.Lock()
		delete(registry.procs, cmd.Process.Pid)
		registry.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// send types text on the guest console (the VMM's stdin).
func (p *proc) send(text string) error {
	_, err := io.WriteString(p.stdin, text)
	return err
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

// stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.signal(syscall.SIGTERM)
	if !p.waitExit(grace) {
		p.signal(syscall.SIGKILL)
		p.waitExit(5 * time.Second)
	}
}

func (p *proc) signal(s syscall.Signal) {
	if p.group {
		syscall.Kill(-p.pid(), s) // its own group: the harness and its QEMUs
		return
	}
	p.cmd.Process.Signal(s)
}

// writeConsoleLog writes every console line with its host arrival time
// (Unix seconds), like the harness's *.serial.log.
func (p *proc) writeConsoleLog() {
	if p.logPath == "" {
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s launched at %.6f: %s\n", p.name, float64(p.launched.UnixMicro())/1e6, strings.Join(p.cmd.Args, " "))
	for _, l := range p.con.Lines() {
		fmt.Fprintf(&b, "%.6f %s\n", float64(l.At.UnixMicro())/1e6, l.Text)
	}
	if t := p.tail.partial(); t != "" {
		fmt.Fprintf(&b, "# unfinished last line: %q\n", t)
	}
	os.WriteFile(p.logPath, b.Bytes(), 0o644)
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
			p.stop(5 * time.Second)
		}()
	}
	wg.Wait()
}

// runCmd runs a short command (godwit migrate/status) to completion within
// timeout and returns its stdout. It is registered like the long-lived ones.
func runCmd(timeout time.Duration, argv ...string) ([]byte, error) {
	var out, errb syncBuffer
	p, err := startProc(filepath.Base(argv[0]), argv, procOpts{stdout: &out, stderr: &errb})
	if err != nil {
		return nil, err
	}
	if !p.waitExit(timeout) {
		p.stop(2 * time.Second)
		return out.Bytes(), fmt.Errorf("%s: %w after %v", strings.Join(argv, " "), errTimeout, timeout)
	}
	if p.waitErr != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), p.waitErr, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// waitPrefix waits for a console line starting with prefix, from line mark.
func waitPrefix(p *proc, mark int, prefix string, timeout time.Duration) (guest.Line, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l, _, err := p.con.WaitLine(ctx, mark, func(s string) bool { return strings.HasPrefix(s, prefix) })
	if err != nil {
		return l, fmt.Errorf("%s: waiting for %q: %w", p.name, prefix, err)
	}
	return l, nil
}

// waitHeartbeats waits until p has printed n heartbeats in all.
func waitHeartbeats(p *proc, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.con.WaitHeartbeats(ctx, n); err != nil {
		return fmt.Errorf("%s: waiting for %d heartbeats: %w", p.name, n, err)
	}
	return nil
}

// tailWriter remembers the bytes after the last newline written to it: the
// console line a migration source may leave unfinished (its end then comes
// from the destination).
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

// lineScanner copies a child's output to stderr line by line with a prefix
// and calls fn for each line (the harness's progress).
type lineScanner struct {
	prefix string
	fn     func(string)
	mu     sync.Mutex
	part   []byte
}

func (s *lineScanner) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.part = append(s.part, b...)
	consumed := 0
	for {
		i := bytes.IndexByte(s.part[consumed:], '\n')
		if i < 0 {
			break
		}
		line := string(s.part[consumed : consumed+i])
		consumed += i + 1
		if s.fn != nil {
			s.fn(line)
		}
		if s.prefix != "" {
			fmt.Fprintf(os.Stderr, "%s %s\n", s.prefix, shorten(line, 300))
		}
	}
	s.part = append(s.part[:0], s.part[consumed:]...)
	return len(b), nil
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + " …"
}

// syncBuffer is a bytes.Buffer safe for the copying goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }
