package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/fence"
	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/pki"
)

// Agent is one host's agent. New builds it; Run runs it until its context
// ends.
type Agent struct {
	cfg     Config
	cred    *pki.Credential // this host's (security.go)
	log     *slog.Logger
	st      *store.Store
	pub     *fence.Publisher
	metrics *metrics
	kickCh  chan struct{}
	cpu     cpuFacts
	addr    string // the API's actual address
	// vmmHandover: the VMM binary takes the ownership handover flags.
	vmmHandover bool

	spawnMu sync.Mutex // serialises VMM starts (one VM directory, one port)

	// mu guards the fields below and the mutable fields of each vmmProc.
	mu        sync.Mutex
	procs     map[string]*vmmProc // VMMs of this host by VM name
	lease     *store.HostLease    // the lease held now; nil between leases
	armed     bool                // deadlines of lease may be published
	info      store.HostInfo
	status    map[string]store.VMStatus // last status written, by VM
	migrating map[string]string         // VM -> ID of the migration driven from here
	exited    map[string]exitMark       // VMs whose VMM exited by itself
	startErr  map[string]string         // why a VM could not start
}

// exitMark remembers the spec and owner revisions under which a VM's VMM
// exited by itself (guest power-off, crash, bad configuration), so that it
// is not restarted in a loop; a new spec or owner revision starts it again.
type exitMark struct{ specRev, ownerRev int64 }

// New checks cfg and returns an agent; nothing is started.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	if cfg.UsageEvery <= 0 {
		cfg.UsageEvery = DefaultUsageEvery
	}
	if cfg.SyncEvery <= 0 {
		cfg.SyncEvery = DefaultSyncEvery
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	if cfg.Bridges == nil {
		cfg.Bridges = map[string]string{}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cred, err := loadCredential(cfg)
	if err != nil {
		return nil, err
	}
	handover, err := probeVMM(cfg.Godwit)
	if err != nil {
		return nil, err
	}
	if !handover {
		log.Warn("the VMM binary has no ownership handover flags (--etcd, --owner-*): VMs run, but migrations are refused", "godwit", cfg.Godwit)
	}
	a := &Agent{
		cfg: cfg, cred: cred, log: log.With("host", cfg.Host),
		pub:         fence.NewPublisher(filepath.Join(cfg.StateDir, "fence")),
		kickCh:      make(chan struct{}, 1),
		procs:       map[string]*vmmProc{},
		status:      map[string]store.VMStatus{},
		migrating:   map[string]string{},
		exited:      map[string]exitMark{},
		startErr:    map[string]string{},
		vmmHandover: handover,
	}
	a.metrics = newMetrics(a)
	return a, nil
}

// kick asks the reconcile loop for a pass.
func (a *Agent) kick() {
	select {
	case a.kickCh <- struct{}{}:
	default:
	}
}

// Run connects to etcd, serves the API and keeps the host in the pool
// until ctx ends. On return the lease is left to run out (not revoked) and
// the VMMs keep running, so that a restarted agent adopts both; if it does
// not come back in time, the VMMs stop themselves at the fence deadline.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(a.cfg.StateDir, "vms"), 0o750); err != nil {
		return fmt.Errorf("agent: state dir: %w", err)
	}
	if err := a.checkVMMUser(); err != nil {
		return err
	}
	cli, err := store.Connect(ctx, store.ClientConfig{Endpoints: a.cfg.Etcd, Logger: a.log, TLS: a.etcdTLS()})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer cli.Close()
	a.st = store.New(cli)
	crlCtx, stopCRL := context.WithCancel(ctx)
	defer stopCRL()
	go a.followCRL(crlCtx, cli)

	// VMMs an earlier run left behind; whether they stay depends on the lease.
	a.procs = a.scanStateDir()
	for vm, p := range a.procs {
		a.log.Info("found running vmm", "vm", vm, "pid", p.meta.PID, "incoming", p.meta.Incoming)
	}

	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("agent: --listen: %w", err)
	}
	a.addr = ln.Addr().String()
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second, TLSConfig: a.apiTLS(),
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	for {
		lease, err := a.acquireLease(ctx, cli)
		if err != nil {
			return err // ctx ended
		}
		if a.cpu.CPUIDHash == "" {
			// After the lease: a restarted agent must renew before its
			// deadline, and probing KVM takes a moment.
			if a.cpu, err = probeCPU(a.cfg.Accel); err != nil {
				a.log.Warn("cannot probe the CPU; host facts lack CPUID and TSC", "err", err)
			}
		}
		err = a.session(ctx, lease)
		if ctx.Err() != nil {
			lease.Close()
			a.log.Info("agent stopping; lease left to run out, VMMs keep running until the deadline", "lease", leaseHex(lease.ID()))
			return nil
		}
		a.log.Error("host lease lost: stopping every VM", "lease", leaseHex(lease.ID()), "err", err)
		a.metrics.leaseLost.Inc()
		a.mu.Lock()
		a.lease, a.armed = nil, false // no incoming VMM may start under it now
		a.mu.Unlock()
		a.killAll("host lease lost")
		// Start over with a new lease: the old one's expiry is final even
		// if etcd has not deleted it yet. Its VMs are dead, so revoking it
		// (best effort) only lets the pool act sooner.
		os.Remove(a.leasePath())
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		lease.Revoke(rctx)
		cancel()
		a.mu.Lock()
		a.lease, a.armed = nil, false
		clear(a.status)
		clear(a.exited)
		a.mu.Unlock()
	}
}

func leaseHex(id clientv3.LeaseID) string { return strconv.FormatInt(int64(id), 16) }

func (a *Agent) leaseConfig() store.LeaseConfig {
	return store.LeaseConfig{
		TTL: a.cfg.LeaseTTL, Margin: a.cfg.Margin, RenewEvery: a.cfg.RenewEvery,
		OnRenew: a.onRenew, Logger: a.log,
	}
}

// onRenew publishes each new deadline to the VMMs (when armed) and counts it.
func (a *Agent) onRenew(deadline time.Time) {
	left := time.Until(deadline)
	a.metrics.renewals.Inc()
	// deadline = send time + TTL − margin: the renewal's round trip is
	// what has passed since it was sent.
	if rtt := a.cfg.LeaseTTL - a.cfg.Margin - left; rtt >= 0 {
		a.metrics.renewLatency.Observe(rtt.Seconds())
	}
	a.mu.Lock()
	armed := a.armed
	a.mu.Unlock()
	if armed {
		if err := a.pub.PublishAt(fence.Now() + int64(left)); err != nil {
			a.log.Error("cannot publish the fence deadline", "err", err)
		}
	}
}

// acquireLease adopts the lease of an earlier run if etcd still has it;
// otherwise it grants a new one and kills every VMM left over (they ran
// under the lost lease, and their VMs may already run elsewhere) before
// publishing the new deadline.
func (a *Agent) acquireLease(ctx context.Context, cli *clientv3.Client) (*store.HostLease, error) {
	cfg := a.leaseConfig()
	backoff := 200 * time.Millisecond
	for {
		if b, err := os.ReadFile(a.leasePath()); err == nil {
			id, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 16, 64)
			if perr == nil {
				a.mu.Lock()
				a.armed = true
				a.mu.Unlock()
				actx, cancel := context.WithTimeout(ctx, 2*time.Second)
				lease, err := store.AdoptHostLease(actx, cli, clientv3.LeaseID(id), cfg)
				cancel()
				if err == nil {
					a.log.Info("adopted the host lease of the previous run", "lease", leaseHex(lease.ID()), "deadline_in", time.Until(lease.Deadline()).Round(time.Millisecond))
					a.setLease(lease)
					return lease, nil
				}
				if !errors.Is(err, store.ErrLeaseNotFound) {
					a.log.Warn("cannot adopt the host lease yet", "lease", leaseHex(clientv3.LeaseID(id)), "err", err)
					if !sleep(ctx, backoff) {
						return nil, ctx.Err()
					}
					backoff = min(2*backoff, 2*time.Second)
					continue
				}
				a.log.Warn("the previous host lease is gone: its VMs may run elsewhere", "lease", leaseHex(clientv3.LeaseID(id)))
			}
		}
		a.mu.Lock()
		a.armed = false
		a.mu.Unlock()
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		lease, err := store.GrantHostLease(gctx, cli, cfg)
		cancel()
		if err != nil {
			a.log.Warn("cannot grant a host lease", "err", err)
			if !sleep(ctx, backoff) {
				return nil, ctx.Err()
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		a.killAll("the VMM ran under a host lease that is gone")
		if err := os.WriteFile(a.leasePath(), []byte(leaseHex(lease.ID())+"\n"), 0o640); err != nil {
			a.log.Error("cannot save the lease ID; a restart will not adopt it", "err", err)
		}
		a.mu.Lock()
		a.armed = true
		a.mu.Unlock()
		if err := a.pub.PublishAt(fence.Now() + int64(time.Until(lease.Deadline()))); err != nil {
			a.log.Error("cannot publish the fence deadline", "err", err)
		}
		a.log.Info("granted a host lease", "lease", leaseHex(lease.ID()))
		a.setLease(lease)
		return lease, nil
	}
}

func (a *Agent) setLease(l *store.HostLease) {
	a.mu.Lock()
	a.lease = l
	a.mu.Unlock()
}

func (a *Agent) currentLease() *store.HostLease {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lease
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// killAll kills every VMM of this host at once and waits for them.
func (a *Agent) killAll(why string) {
	a.mu.Lock()
	var ps []*vmmProc
	for _, p := range a.procs {
		ps = append(ps, p)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.kill(p, why, 5*time.Second)
		}()
	}
	wg.Wait()
	a.mu.Lock()
	for vm, p := range a.procs {
		if p.gone {
			delete(a.procs, vm)
		}
	}
	a.mu.Unlock()
}

// session keeps the host registered and its VMs reconciled while lease is
// held. It returns the lease's error when it expires, nil when ctx ends.
func (a *Agent) session(ctx context.Context, lease *store.HostLease) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the lease's end ends everything of the session at once
		select {
		case <-lease.Expired():
			cancel()
		case <-sctx.Done():
		}
	}()
	if err := a.register(sctx, lease); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	go a.usageLoop(sctx, lease)
	go a.watchLoop(sctx)
	t := time.NewTicker(a.cfg.SyncEvery)
	defer t.Stop()
	a.kick()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lease.Expired():
			return lease.Err()
		case <-a.kickCh:
		case <-t.C:
		}
		a.reconcile(sctx, lease)
		a.metrics.reconciles.Inc()
	}
}

// register writes the host's facts and its alive key (bound to lease),
// retrying until it lands or the lease ends.
func (a *Agent) register(ctx context.Context, lease *store.HostLease) error {
	for {
		info := a.hostInfo()
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := a.st.RegisterHost(rctx, info, lease.ID())
		cancel()
		if err == nil {
			a.mu.Lock()
			a.info = info
			a.mu.Unlock()
			a.log.Info("host registered", "lease", leaseHex(lease.ID()), "addr", info.Addr, "tsc_khz", info.TSCKHz, "cpuid", info.CPUIDHash, "networks", info.Networks, "storage", info.StorageIDs)
			return nil
		}
		a.log.Warn("cannot register the host", "err", err)
		select {
		case <-ctx.Done():
			return lease.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (a *Agent) hostInfo() store.HostInfo {
	mem, err := migration.MemAvailable()
	if err != nil {
		a.log.Warn("cannot read available memory", "err", err)
	}
	addr := a.addr
	if host, port, err := net.SplitHostPort(addr); err == nil && (host == "0.0.0.0" || host == "::") {
		// Listening on every address: advertise the migration address.
		addr = net.JoinHostPort(a.cfg.MigrateIP, port)
	}
	return store.HostInfo{
		Host: a.cfg.Host, Addr: addr,
		Accel: a.cpu.Accel, CPUIDHash: a.cpu.CPUIDHash, TSCKHz: a.cpu.TSCKHz, KVMCaps: a.cpu.Caps,
		CPUs: numCPU(), MemBytes: mem,
		StorageIDs: append([]string(nil), a.cfg.StorageIDs...),
		Networks:   presentNetworks(a.cfg.Bridges),
		Agent:      Version,
	}
}

// usageLoop reports the host's load every UsageEvery.
func (a *Agent) usageLoop(ctx context.Context, lease *store.HostLease) {
	busy0, total0, _ := cpuTimes()
	t := time.NewTicker(a.cfg.UsageEvery)
	defer t.Stop()
	report := func() {
		busy, total, err := cpuTimes()
		var load float64
		if err == nil && total > total0 {
			load = float64(busy-busy0) / float64(total-total0)
		}
		busy0, total0 = busy, total
		var mem uint64
		n := 0
		a.mu.Lock()
		for _, p := range a.procs {
			if !p.gone && !p.meta.Incoming {
				mem += p.meta.MemBytes
				n++
			}
		}
		a.mu.Unlock()
		a.metrics.hostLoad.Set(load)
		a.metrics.memUsed.Set(float64(mem))
		u := store.HostUsage{CPU: load, MemUsedBytes: mem, VMs: n, At: time.Now().UTC()}
		uctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := a.st.PutHostUsage(uctx, a.cfg.Host, u, lease.ID()); err != nil && ctx.Err() == nil {
			a.log.Warn("cannot report host usage", "err", err)
		}
	}
	report()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			report()
		}
	}
}

// watchLoop turns every change of a VM's keys or of a migration record
// into a reconcile pass; the pass itself reads the whole state, so missed
// or coalesced events cost nothing but latency (the periodic pass catches
// up).
func (a *Agent) watchLoop(ctx context.Context) {
	cli := a.st.Client()
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		vms := cli.Watch(wctx, store.VMsPrefix, clientv3.WithPrefix())
		migs := cli.Watch(wctx, store.MigrationsPrefix, clientv3.WithPrefix())
		for open := true; open; {
			select {
			case wr, ok := <-vms:
				open = ok && wr.Err() == nil
				for _, ev := range wr.Events {
					// Status writes (ours and other hosts') need no pass.
					if k := string(ev.Kv.Key); strings.HasSuffix(k, "/owner") || strings.HasSuffix(k, "/spec") {
						a.kick()
						break
					}
				}
				if !open {
					a.kick()
				}
			case wr, ok := <-migs:
				open = ok && wr.Err() == nil
				a.kick()
			}
		}
		cancel()
		sleep(ctx, 500*time.Millisecond)
	}
}
