package vmmcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/fence"
	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/migration/policy"
	"github.com/godwit-vmm/godwit/internal/sandbox"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// run carries out the plan: it claims the API socket, boots the VM or
// receives it, sandboxes the process, and waits until the VM stops.
func (p *runPlan) run() error {
	f, log := p.f, p.log
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	own, err := newOwnership(f.etcd, f.name, f.ownerHost, f.ownerLease, p.sec.etcdTLS(), log)
	if err != nil {
		return fmt.Errorf("%w", err)
	}
	defer own.Close()
	// An incoming VMM listens before its API answers: whoever waits for
	// the API (the host agent) may then send the source to the port.
	var inLn net.Listener
	if p.listenAddr != "" {
		if inLn, err = net.Listen("tcp", p.listenAddr); err != nil {
			return fmt.Errorf("--incoming: %w", err)
		}
		defer inLn.Close()
	}
	// Claim the socket before creating anything else, so a second VMM on
	// the same path fails without touching TAPs or disks.
	ctl := &vmm{log: log, own: own, sec: p.sec}
	srv, err := api.Serve(f.sock, ctl, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	v, err := p.bring(ctl, own, inLn, sigs)
	if err != nil {
		return err
	}
	if !f.noSandbox {
		if err := enterSandbox(p.runAs, f.fenceFile, f.selftest, log); err != nil {
			v.Stop(err.Error())
			v.Wait()
			return fmt.Errorf("%w (or pass --no-sandbox)", err)
		}
	}
	log.Info("vm running", "api_socket", f.sock)
	return p.wait(v, ctl, sigs)
}

// bring boots the VM, or receives it on inLn when the VMM is incoming.
func (p *runPlan) bring(ctl *vmm, own *ownership, inLn net.Listener, sigs <-chan os.Signal) (*vm.VM, error) {
	f := p.f
	if p.listenAddr == "" {
		return startVM(p.cfg, ctl, p.log)
	}
	ann := vm.AnnounceConfig{Rounds: f.announceRounds, Initial: f.announceInitial, Step: f.announceStep,
		Max: max(vm.DefaultAnnounce.Max, f.announceInitial)}
	var gate func(context.Context) error
	if own != nil {
		gate = own.commitGate(f.ownerRev, f.migrationID)
	}
	// The peer's stream is decoded before the VM exists: restrict the
	// process now, and finish the sandbox once the VM runs.
	if !f.noSandbox {
		if err := sandbox.Restrict(sandbox.Options{KeepCaps: sandbox.SetupCaps}); err != nil {
			return nil, fmt.Errorf("%w (or pass --no-sandbox)", err)
		}
		p.log.Debug("sandbox restricted for the incoming migration")
	}
	return receiveVM(p.cfg, inLn, ann, gate, f.migrationID, ctl, sigs, p.log)
}

// wait serves the running VM (fence, signals, console) until it stops.
func (p *runPlan) wait(v *vm.VM, ctl *vmm, sigs <-chan os.Signal) error {
	if p.f.fenceFile != "" {
		stop := fence.Follow(p.f.fenceFile, 100*time.Millisecond, v.SetDeadline, func(reason string) {
			// Stop at once: the lease may expire soon after, and the
			// pool may then start the VM elsewhere.
			p.log.Error("fenced: stopping the VM", "reason", reason)
			v.Stop(reason)
		})
		defer stop()
	}
	go func() {
		select {
		case s := <-sigs:
			v.Stop("signal " + s.String())
		case <-v.Done():
		}
	}()
	if p.f.console == "stdio" {
		restore := consoleInput(v, p.log)
		defer restore()
	}
	err := v.Wait()
	// A VM that migrated away stops inside the migrate call; let it
	// finish (closing the streams) so the API answers with the report
	// before srv.Close.
	ctl.waitMigrations(10 * time.Second)
	fmt.Fprintf(p.stderr, "godwit: vm %s stopped: %s\n", p.cfg.Name, v.Status().Stopped)
	if err != nil {
		return fmt.Errorf("vm %s: %w", p.cfg.Name, err)
	}
	return nil
}

// startVM creates and starts the VM; on error nothing is left behind.
func startVM(cfg vm.Config, ctl *vmm, log *slog.Logger) (*vm.VM, error) {
	v, err := vm.New(cfg, log)
	if err != nil {
		return nil, err
	}
	ctl.p.Store(v)
	if err := v.Start(); err != nil {
		v.Stop("start failed")
		return nil, err
	}
	return v, nil
}

// receiveVM waits on ln until a VM arrives by live migration and runs.
// A signal gives up waiting.
func receiveVM(cfg vm.Config, ln net.Listener, ann vm.AnnounceConfig, gate func(context.Context) error, migrationID string, ctl *vmm, sigs <-chan os.Signal, log *slog.Logger) (*vm.VM, error) {
	if t := ctl.sec.serverTLS(); t != nil {
		ln = migration.TLSListener(ln, t)
	}
	// ctx ends the wait on a signal; after the commit it keeps the
	// listener answering QUERY (from a source whose COMMITTED reply was
	// lost) until the VM stops or two minutes pass.
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-waiting:
		}
	}()
	ctl.incoming.Store(true)
	log.Info("waiting for an incoming migration", "listen", ln.Addr().String())
	d := migration.NewDestination(ln, cfg, log)
	d.Announce = ann
	d.CommitGate = gate
	if migrationID != "" {
		id := migration.SessionFor(migrationID)
		d.Session = &id
	}
	v, err := d.Receive(ctx)
	close(waiting)
	ctl.incoming.Store(false)
	if err != nil {
		cancel()
		ln.Close()
		return nil, err
	}
	go func() {
		select {
		case <-v.Done():
		case <-time.After(2 * time.Minute):
		}
		cancel()
	}()
	ctl.p.Store(v)
	return v, nil
}

// vmm is the API controller of this VMM process. It serves the API before
// the VM exists (the socket is claimed first), and runs migrations.
type vmm struct {
	p        atomic.Pointer[vm.VM]
	incoming atomic.Bool
	log      *slog.Logger
	own      *ownership         // nil outside a pool
	sec      *migrationSecurity // TLS of migrations (and of etcd in a pool)

	mu     sync.Mutex // guards mig and cancel
	mig    *migration.Source
	cancel context.CancelFunc
}

// waitMigrations waits, at most d, for the migration under way to end: a
// migrated VM stops before its Migrate call returns, and the process must
// not exit before the caller has its report.
func (c *vmm) waitMigrations(d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		busy := c.mig != nil
		c.mu.Unlock()
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			c.log.Warn("exiting with a migration call still under way", "waited", d)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errNoVM = errors.New("the VM is not running here yet")

func (c *vmm) Status() vm.Status {
	if v := c.p.Load(); v != nil {
		return v.Status()
	}
	if c.incoming.Load() {
		return vm.Status{State: "incoming"}
	}
	return vm.Status{State: "starting"}
}

func (c *vmm) Pause() error {
	if v := c.p.Load(); v != nil {
		return v.Pause()
	}
	return errNoVM
}

func (c *vmm) Resume() error {
	if v := c.p.Load(); v != nil {
		return v.Resume()
	}
	return errNoVM
}

func (c *vmm) Stop(reason string) {
	if v := c.p.Load(); v != nil {
		v.Stop(reason)
	}
}

func (c *vmm) ConsoleInput(b []byte) {
	if v := c.p.Load(); v != nil {
		v.ConsoleInput(b)
	}
}

// Migrate runs one outgoing migration. It is not tied to the API request:
// a client that goes away does not cancel it (DELETE /v1/vm/migration
// does).
func (c *vmm) Migrate(_ context.Context, req api.MigrateRequest) (*migration.Report, error) {
	v := c.p.Load()
	if v == nil {
		return nil, errNoVM
	}
	tlsCfg, err := c.sec.clientTLS(req.Peer)
	if err != nil {
		return nil, err
	}
	opts := migration.Options{Streams: req.Streams, Verify: req.Verify, TLS: tlsCfg}
	if req.MigrationID != "" {
		id := migration.SessionFor(req.MigrationID)
		opts.Session = &id
	}
	def := policy.Defaults()
	opts.Policy = def
	if req.DowntimeMs > 0 {
		opts.Policy.DowntimeTarget = time.Duration(req.DowntimeMs * float64(time.Millisecond))
		opts.Policy.MaxDowntime = max(def.MaxDowntime, 4*opts.Policy.DowntimeTarget)
	}
	if req.MaxDownMs > 0 {
		opts.Policy.MaxDowntime = time.Duration(req.MaxDownMs * float64(time.Millisecond))
	}
	opts.Policy.BandwidthLimit = req.Bandwidth
	if req.MaxRounds > 0 {
		opts.Policy.MaxIterations = req.MaxRounds
	}
	if req.MaxSeconds > 0 {
		opts.Policy.MaxTotal = time.Duration(req.MaxSeconds * float64(time.Second))
	}
	opts.Policy.AutoConverge = !req.NoThrottle
	if c.own != nil {
		if req.OwnerRev == 0 || req.MigrationID == "" {
			return nil, errors.New("this VM belongs to a pool: migrate it through the pool (godwit vm migrate), which supplies the owner revision")
		}
		opts.ResumeGate = c.own.resumeGate(req.OwnerRev, req.MigrationID)
	}
	s, err := migration.NewSource(v, req.To, opts, c.log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.mu.Lock()
	if c.mig != nil {
		c.mu.Unlock()
		return nil, errors.New("a migration is already under way")
	}
	c.mig, c.cancel = s, cancel
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.mig, c.cancel = nil, nil
		c.mu.Unlock()
	}()
	return s.Run(ctx)
}

func (c *vmm) MigrationProgress() (migration.Progress, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mig == nil {
		return migration.Progress{}, false
	}
	return c.mig.Progress(), true
}

func (c *vmm) SetMigrationLimits(l api.MigrationLimits) (api.MigrationLimits, error) {
	c.mu.Lock()
	s := c.mig
	c.mu.Unlock()
	if s == nil {
		return l, api.ErrNoMigration
	}
	cur := s.Limits()
	if l.DowntimeMs != nil {
		cur.DowntimeTarget = time.Duration(*l.DowntimeMs * float64(time.Millisecond))
		// As at the start: the longest downtime accepted follows at 4×
		// the target unless it is given too.
		cur.MaxDowntime = max(cur.MaxDowntime, 4*cur.DowntimeTarget)
	}
	if l.MaxDowntimeMs != nil {
		cur.MaxDowntime = time.Duration(*l.MaxDowntimeMs * float64(time.Millisecond))
	}
	if l.Bandwidth != nil {
		cur.BandwidthLimit = *l.Bandwidth
	}
	if err := s.SetLimits(cur); err != nil {
		return l, err
	}
	down, maxDown := ms(cur.DowntimeTarget), ms(cur.MaxDowntime)
	return api.MigrationLimits{DowntimeMs: &down, MaxDowntimeMs: &maxDown, Bandwidth: &cur.BandwidthLimit}, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (c *vmm) CancelMigration() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel == nil {
		return false
	}
	c.cancel()
	return true
}

// consoleInput forwards stdin to the guest's serial port. On a terminal it
// switches to raw mode (restored by the returned function) and treats
// Ctrl-A x as "quit", as QEMU does.
func consoleInput(v *vm.VM, log *slog.Logger) (restore func()) {
	fd := int(os.Stdin.Fd())
	restore = func() {}
	tty := term.IsTerminal(fd)
	if tty {
		old, err := term.MakeRaw(fd)
		if err != nil {
			log.Warn("console: cannot switch the terminal to raw mode", "err", err)
		} else {
			restore = func() { term.Restore(fd, old) }
		}
	}
	go func() {
		buf := make([]byte, 4096)
		escape := false
		for {
			n, err := os.Stdin.Read(buf)
			if n > 0 {
				b := buf[:n]
				if tty {
					var quit bool
					b, escape, quit = filterEscape(b, escape)
					if quit {
						v.Stop("quit from the console (Ctrl-A x)")
						return
					}
				}
				v.ConsoleInput(b)
			}
			if err != nil {
				return
			}
		}
	}()
	return restore
}

// filterEscape handles the Ctrl-A prefix: Ctrl-A x quits, Ctrl-A Ctrl-A
// sends one Ctrl-A.
func filterEscape(in []byte, escape bool) (out []byte, stillEscape, quit bool) {
	out = in[:0:0]
	for _, c := range in {
		switch {
		case escape && c == 'x':
			return out, false, true
		case escape:
			escape = false
			out = append(out, c)
		case c == 0x01:
			escape = true
		default:
			out = append(out, c)
		}
	}
	return out, escape, false
}
