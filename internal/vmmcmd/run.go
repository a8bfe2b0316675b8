package vmmcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/godwit-vmm/godwit/internal/accel"
	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/fence"
	"github.com/godwit-vmm/godwit/internal/limits"
	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/migration/policy"
	"github.com/godwit-vmm/godwit/internal/sandbox"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// Run is `godwit run` (and `godwit-vmm run`): one VM in this process
// until it stops.
func Run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "VM name (logs, default API socket /run/godwit/NAME.sock)")
	kernel := fs.String("kernel", "", "multiboot v1 ELF guest kernel")
	cmdline := fs.String("cmdline", "", "guest kernel command line")
	mem := fs.String("mem", "256M", "guest RAM, "+limits.FormatBytes(limits.MinMemBytes)+" to "+limits.FormatBytes(limits.MaxMemBytes)+" in 2M steps: "+limits.SizeGrammar+"; a bare number is MiB")
	cpus := fs.Int("cpus", 1, "number of vCPUs")
	tap := fs.String("tap", "", "add a virtio-net device on this TAP interface (created by the VMM)")
	mac := fs.String("mac", "", "guest MAC address for --tap (default: derived from --name)")
	bridge := fs.String("bridge", "", "attach the --tap interface to this existing Linux bridge")
	announceRounds := fs.Int("announce-rounds", vm.DefaultAnnounce.Rounds, "with --incoming: RARP/GARP announcements after the VM arrives")
	announceInitial := fs.Duration("announce-initial", vm.DefaultAnnounce.Initial, "with --incoming: gap before the second announcement")
	announceStep := fs.Duration("announce-step", vm.DefaultAnnounce.Step, "with --incoming: growth of the gap per announcement")
	disk := fs.String("disk", "", "add a virtio-blk device on this raw image file")
	diskRO := fs.Bool("disk-readonly", false, "attach --disk read-only")
	sock := fs.String("api-socket", "", "API socket path (default /run/godwit/NAME.sock)")
	console := fs.String("console", "stdio", "serial console: stdio (terminal both ways; Ctrl-A x quits) or none")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	etcd := fs.String("etcd", "", "pool member: etcd endpoints for the VM's owner key (set by the host agent)")
	ownerHost := fs.String("owner-host", "", "pool member: this host's name (with --etcd)")
	ownerLease := fs.Int64("owner-lease", 0, "pool member: this host's lease ID (with --etcd)")
	ownerRev := fs.Int64("owner-rev", 0, "with --incoming in a pool: the owner key's revision when the migration started")
	migrationID := fs.String("migration-id", "", "with --incoming in a pool: the migration's ID")
	fenceFile := fs.String("fence-file", "", "host agent's lease deadline file: stop the VM once the deadline passes (see internal/fence)")
	tlsDir := fs.String("migration-tls-dir", "", "migrate over TLS, in and out: DIR holds ca.pem, cert.pem and key.pem (peers need certificates of that CA)")
	credential := fs.String("credential", "", "pool member: the host's credential directory (godwit pki); etcd and migrations use it, and each migration accepts only its peer host")
	migrationPeer := fs.String("migration-peer", "", "with --incoming and --credential: the only host whose certificate may send the VM")
	runAs := fs.String("run-as", "", "once the VM runs, switch to this unprivileged user: a name (nobody) or UID:GID; it must be able to read --fence-file")
	noSandbox := fs.Bool("no-sandbox", false, "do not install the seccomp filter nor drop capabilities once the VM runs (debugging only)")
	selftest := fs.Duration("seccomp-selftest", 0, "test aid: this long after the sandbox is on, make a forbidden system call (the VMM must die by SIGSYS)")
	insecure := fs.Bool("insecure-migration", false, "allow --incoming without TLS on an address other than loopback: anyone who reaches the port can supply the VM")
	accelName := fs.String("accel", accel.Auto, "accelerator: auto (KVM when /dev/kvm exists, else the software CPU), kvm or emu")
	incoming := fs.String("incoming", "", "wait for the VM to arrive by live migration on tcp:HOST:PORT (its shape comes from the source; --kernel, --mem and --cpus are not used; a VM with a disk needs --disk, this host's path to its image)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("run: --log-level %q: use debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *name != "" {
		if err := limits.CheckName("VM", *name); err != nil {
			return fmt.Errorf("run: --name: %w", err)
		}
	}
	memBytes, err := limits.ParseBytes(*mem, 1<<20)
	if err != nil {
		return fmt.Errorf("run: --mem: %w", err)
	}
	if _, err := accel.Parse(*accelName); err != nil {
		return fmt.Errorf("run: --accel: %w", err)
	}
	cfg := vm.Config{Name: *name, MemBytes: memBytes, VCPUs: *cpus, Kernel: *kernel, Cmdline: *cmdline, Accel: *accelName}
	if *tap != "" {
		cfg.Net = &vm.NetConfig{TAP: *tap, Bridge: *bridge}
		if *mac != "" {
			hw, err := net.ParseMAC(*mac)
			if err != nil {
				return fmt.Errorf("run: --mac %q: %w", *mac, err)
			}
			cfg.Net.MAC = hw
		}
	} else if *mac != "" || *bridge != "" {
		return errors.New("run: --mac and --bridge need --tap")
	}
	if *disk != "" {
		cfg.Disk = &vm.DiskConfig{Path: *disk, ReadOnly: *diskRO}
	}
	switch *console {
	case "stdio":
		cfg.Console = os.Stdout
	case "none":
	default:
		return fmt.Errorf("run: --console %q: use stdio or none", *console)
	}
	sec, err := loadMigrationSecurity(*tlsDir, *credential, *migrationPeer)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	runAsUser, err := lookupRunAs(*runAs)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	var listenAddr string
	if *incoming != "" {
		addr, ok := strings.CutPrefix(*incoming, "tcp:")
		if !ok {
			return fmt.Errorf("run: --incoming %q: use tcp:HOST:PORT", *incoming)
		}
		listenAddr = addr
		if err := checkPlainIncoming(addr, sec, *insecure, stderr); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		if err := cfg.ValidateIncoming(); err != nil {
			return fmt.Errorf("run: %w", err)
		}
	} else if err := cfg.Validate(); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if *sock == "" {
		*sock = api.SocketPath(*name)
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	own, err := newOwnership(*etcd, *name, *ownerHost, *ownerLease, sec.etcdTLS(), log)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer own.Close()
	if own != nil && listenAddr != "" && (*ownerRev == 0 || *migrationID == "") {
		return errors.New("run: an incoming VMM in a pool needs --owner-rev and --migration-id")
	}

	// An incoming VMM listens before its API answers: whoever waits for
	// the API (the host agent) may then send the source to the port.
	var inLn net.Listener
	if listenAddr != "" {
		if inLn, err = net.Listen("tcp", listenAddr); err != nil {
			return fmt.Errorf("run: --incoming: %w", err)
		}
		defer inLn.Close()
	}
	// Claim the socket before creating anything else, so a second VMM on
	// the same path fails without touching TAPs or disks.
	ctl := &vmm{log: log, own: own, sec: sec}
	srv, err := api.Serve(*sock, ctl, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	var v *vm.VM
	if listenAddr != "" {
		ann := vm.AnnounceConfig{Rounds: *announceRounds, Initial: *announceInitial, Step: *announceStep,
			Max: max(vm.DefaultAnnounce.Max, *announceInitial)}
		var gate func(context.Context) error
		if own != nil {
			gate = own.commitGate(*ownerRev, *migrationID)
		}
		// The peer's stream is decoded before the VM exists: restrict
		// the process now, and finish the sandbox once the VM runs.
		if !*noSandbox {
			if err := sandbox.Restrict(sandbox.Options{KeepCaps: sandbox.SetupCaps}); err != nil {
				return fmt.Errorf("run: %w (or pass --no-sandbox)", err)
			}
			log.Debug("sandbox restricted for the incoming migration")
		}
		v, err = receiveVM(cfg, inLn, ann, gate, *migrationID, ctl, sigs, log)
	} else {
		v, err = startVM(cfg, ctl, log)
	}
	if err != nil {
		return err
	}
	if !*noSandbox {
		if err := enterSandbox(runAsUser, *fenceFile, *selftest, log); err != nil {
			v.Stop(err.Error())
			v.Wait()
			return fmt.Errorf("run: %w (or pass --no-sandbox)", err)
		}
	}
	log.Info("vm running", "api_socket", *sock)
	if *fenceFile != "" {
		stop := fence.Follow(*fenceFile, 100*time.Millisecond, v.SetDeadline, func(reason string) {
			// Stop at once: the lease may expire soon after, and the
			// pool may then start the VM elsewhere.
			log.Error("fenced: stopping the VM", "reason", reason)
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
	if *console == "stdio" {
		restore := consoleInput(v, log)
		defer restore()
	}
	err = v.Wait()
	// A VM that migrated away stops inside the migrate call; let it
	// finish (closing the streams) so the API answers with the report
	// before srv.Close.
	ctl.waitMigrations(10 * time.Second)
	fmt.Fprintf(stderr, "godwit: vm %s stopped: %s\n", cfg.Name, v.Status().Stopped)
	if err != nil {
		return fmt.Errorf("vm %s: %w", cfg.Name, err)
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
