// Package toolkit is the process plumbing the benchmark tools share. It
// starts VMM processes (Godwit, QEMU) and helper commands with their stdout
// fed to a time-stamped guest.Console and their stdin a pipe, keeps every
// child it started in a registry so that StopAll can end each by its pid
// on exit, failure or a signal, writes each one's console (with host
// arrival times) and stderr to a log directory, and waits for lines on a
// console. It also computes the guest-visible pause of a migration from
// the heartbeats of both consoles (Handover).
//
// Who may import: the tools under internal/tools (bench, netbench); not
// the VMM or its libraries. It imports internal/guest.
package toolkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/guest"
)

// ErrTimeout is wrapped by the errors of Run and of the tools' own waits
// when a command did not finish in time.
var ErrTimeout = errors.New("timed out")

// Proc is one child process: a VMM (Godwit or QEMU) whose stdout is the
// guest's serial console, or a short command.
type Proc struct {
	Name     string
	Cmd      *exec.Cmd
	Con      *guest.Console // the guest console (stdout), time-stamped on arrival
	Launched time.Time      // just before fork/exec

	stdin   io.WriteCloser
	tail    *tailWriter // the unfinished last line of stdout
	stderr  syncBuffer  // all of stderr
	logBase string      // LogDir/Name, "" for no logs
	logTail bool

	done    chan struct{} // closed when it has exited and stdout is drained
	waitErr error
}

// Options are the optional parts of Start.
type Options struct {
	Stdout io.Writer // extra copy of stdout (besides the console)
	Stderr io.Writer // extra copy of stderr, if there is no LogDir
	// LogDir receives NAME.stderr.log (written as it comes) and, once the
	// process has exited, NAME.console.log: every console line with its
	// host arrival time (Unix seconds).
	LogDir string
	// OmitUnfinished leaves a console line the process did not finish
	// (see Unfinished) out of NAME.console.log.
	OmitUnfinished bool
}

// registry holds every child still running, so that StopAll can end them.
var registry = struct {
	sync.Mutex
	procs   map[int]*Proc
	stopped bool
}{procs: map[int]*Proc{}}

// spawner runs fn on one OS thread that never exits. Children are started
// with Pdeathsig (they die if we are killed without cleaning up), and
// Linux delivers that signal when the *thread* that forked them exits, not
// the process: Go ends threads that a goroutine left locked (netlab's
// namespace helpers do so on purpose), so forking from an arbitrary thread
// could kill a VMM in the middle of a run.
var spawner = sync.OnceValue(func() func(func()) {
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
})

// Start starts argv with its stdout fed into a guest.Console and its stdin
// a pipe, and registers it for StopAll.
func Start(name string, argv []string, o Options) (*Proc, error) {
	registry.Lock()
	defer registry.Unlock()
	if registry.stopped {
		return nil, fmt.Errorf("%s: shutting down", name)
	}
	p := &Proc{Name: name, Con: guest.NewConsole(nil), tail: &tailWriter{},
		logTail: !o.OmitUnfinished, done: make(chan struct{})}
	cmd := exec.Command(argv[0], argv[1:]...)
	// Children die with us even if we are killed without a chance to
	// clean up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	outs := []io.Writer{p.Con, p.tail}
	if o.Stdout != nil {
		outs = append(outs, o.Stdout)
	}
	cmd.Stdout = io.MultiWriter(outs...)
	errs := []io.Writer{&p.stderr}
	var logFile *os.File
	if o.LogDir != "" {
		f, err := os.Create(filepath.Join(o.LogDir, name+".stderr.log"))
		if err != nil {
			return nil, err
		}
		logFile = f
		errs = append(errs, f)
		p.logBase = filepath.Join(o.LogDir, name)
	} else if o.Stderr != nil {
		errs = append(errs, o.Stderr)
	}
	cmd.Stderr = io.MultiWriter(errs...)
	closeLog := func() {
		if logFile != nil {
			logFile.Close()
		}
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		closeLog()
		return nil, err
	}
	p.Cmd, p.stdin = cmd, in
	spawner()(func() {
		p.Launched = time.Now()
		err = cmd.Start()
	})
	if err != nil {
		closeLog()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pid := cmd.Process.Pid
	registry.procs[pid] = p
	go func() {
		p.waitErr = cmd.Wait()
		p.Con.Close()
		closeLog()
		p.writeConsoleLog()
		registry.Lock()
		delete(registry.procs, pid)
		registry.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Send types text on the guest console (the VMM's stdin).
func (p *Proc) Send(text string) error {
	_, err := io.WriteString(p.stdin, text)
	return err
}

// Exited says whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitExit waits up to d for the process to end.
func (p *Proc) WaitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Err is what waiting for the process returned (nil for exit status 0);
// valid once Exited or WaitExit says it has ended.
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.waitErr
	default:
		return nil
	}
}

// Stderr is what the process has written on stderr so far.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Unfinished is the console output after the last newline: the line a
// migration source may leave unfinished when it is paused (the
// destination prints the rest).
func (p *Proc) Unfinished() string { return p.tail.partial() }

// Stop ends the process by its pid: SIGTERM, then SIGKILL
// after grace.
func (p *Proc) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	p.signal(syscall.SIGTERM)
	if !p.WaitExit(grace) {
		p.signal(syscall.SIGKILL)
		p.WaitExit(5 * time.Second)
	}
}

func (p *Proc) signal(s syscall.Signal) {
	p.Cmd.Process.Signal(s)
}

// writeConsoleLog writes every console line with its host arrival time
// (Unix seconds).
func (p *Proc) writeConsoleLog() {
	if p.logBase == "" {
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s launched at %.6f: %s\n", p.Name, float64(p.Launched.UnixMicro())/1e6, strings.Join(p.Cmd.Args, " "))
	for _, l := range p.Con.Lines() {
		fmt.Fprintf(&b, "%.6f %s\n", float64(l.At.UnixMicro())/1e6, l.Text)
	}
	if t := p.tail.partial(); t != "" && p.logTail {
		fmt.Fprintf(&b, "# unfinished last line: %q\n", t)
	}
	os.WriteFile(p.logBase+".console.log", b.Bytes(), 0o644)
}

// StopAll stops every child still running, in parallel (each with Stop
// and grace), and refuses new ones.
func StopAll(grace time.Duration) {
	registry.Lock()
	registry.stopped = true
	var ps []*Proc
	for _, p := range registry.procs {
		ps = append(ps, p)
	}
	registry.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Stop(grace)
		}()
	}
	wg.Wait()
}

// OnSignal calls fn once SIGINT, SIGTERM or SIGHUP arrives (fn stops what
// the tool started, StopAll at least), then exits with status 130.
func OnSignal(fn func(os.Signal)) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		fn(<-sigs)
		os.Exit(130)
	}()
}

// Run runs a short command (godwit migrate/status) to completion within
// timeout and returns its stdout; stderr is folded into the error. It is
// registered like the long-lived ones, so StopAll ends it too.
func Run(timeout time.Duration, argv ...string) ([]byte, error) {
	var out syncBuffer
	p, err := Start(filepath.Base(argv[0]), argv, Options{Stdout: &out})
	if err != nil {
		return nil, err
	}
	if !p.WaitExit(timeout) {
		p.Stop(2 * time.Second)
		return out.Bytes(), fmt.Errorf("%s: %w after %v", strings.Join(argv, " "), ErrTimeout, timeout)
	}
	if p.waitErr != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), p.waitErr, strings.TrimSpace(p.Stderr()))
	}
	return out.Bytes(), nil
}

// WaitPrefix waits for a console line starting with prefix, from line mark.
func (p *Proc) WaitPrefix(mark int, prefix string, timeout time.Duration) (guest.Line, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l, _, err := p.Con.WaitLine(ctx, mark, func(s string) bool { return strings.HasPrefix(s, prefix) })
	if err != nil {
		return l, fmt.Errorf("%s: waiting for %q: %w", p.Name, prefix, err)
	}
	return l, nil
}

// WaitHeartbeats waits until p has printed n heartbeats in all.
func (p *Proc) WaitHeartbeats(n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.Con.WaitHeartbeats(ctx, n); err != nil {
		return fmt.Errorf("%s: waiting for %d heartbeats: %w", p.Name, n, err)
	}
	return nil
}

// Shorten cuts s to n bytes, marking the cut.
func Shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + " …"
}

// tailWriter remembers the bytes after the last newline written to it.
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
