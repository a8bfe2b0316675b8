// Package controller is the pool's controller (`godwit controller`): it
// places VMs on hosts, records the users' desired states and requests live
// migrations, all as writes to the pool's etcd (package store); the host
// agents do the rest by watching those keys.
//
// Several controllers may run against one etcd; one leads (package
// election). Only the leader writes, and every write it makes is guarded by
// its leader key's create revision (store.LeaderGuard), so a deposed leader's
// write fails in etcd instead of landing. Followers serve reads and answer
// writes with "not the leader; leader is X" (503) naming the leader's URL,
// which each controller registers at controllers/<id>.
//
// By default the controller embeds a single-member etcd (package
// etcdserver); with external endpoints it uses that cluster and nothing else
// changes. At start it checks /godwit/v1/config: an etcd that holds another
// pool is refused.
//
// Placement (package placement) runs on a fresh linearizable read of hosts,
// VMs and rules, plus the leader's in-flight reservations: a placement or
// migration request holds a reservation on its host from the decision until
// its write has landed (or failed), after which the store itself shows it
// (an owner key; a non-terminal migration record counts against its
// destination). Decisions are serialised, so concurrent requests can never
// overfill a host.
//
// The HTTP/JSON API is documented in package poolapi.
//
// Who may import it: cmd/godwit and tests.
package controller

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/election"
	"github.com/godwit-vmm/godwit/internal/cluster/etcdserver"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/placement"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults.
const (
	DefaultPool   = "godwit"
	DefaultListen = "127.0.0.1:7700"
)

// Config describes one controller.
type Config struct {
	// ID names this controller among its peers (a store.ValidName).
	ID string
	// Pool is the pool's name, recorded in /godwit/v1/config by the first
	// controller; a controller for another pool refuses that etcd.
	Pool string
	// Listen is the API's address; "127.0.0.1:0" picks a port.
	Listen string
	// AdvertiseURL is how peers and clients reach this API; default
	// http://<bound listen address>.
	AdvertiseURL string
	// PKIDir is the pool's CA directory (godwit pki init). The controller
	// takes its certificate from it, serves the API and the embedded
	// etcd over mutual TLS only, and mirrors it into etcd (security.go).
	PKIDir string
	// Endpoints names an external etcd cluster. Empty: start the embedded
	// member described by Etcd.
	Endpoints []string
	// Etcd is the embedded member (Dir required when Endpoints is empty).
	Etcd etcdserver.Config
	// SessionTTL is the election session's lease TTL (default 10 s): how
	// long a dead leader holds the pool before another controller leads.
	// A controller that stops cleanly hands over at once.
	SessionTTL time.Duration
	// Policy holds placement's tunables (zero: PLATFORM.md defaults).
	Policy placement.Policy
	// HAForce turns HA restart on with fewer than three etcd members
	// (tests on one machine); see ha.go.
	HAForce bool
	// BalanceLevel turns automatic load balancing on at level 1-5
	// (package balance; 0, the default, leaves it off: GET/POST
	// /v1/balance still work). BalanceEvery is its period (default 60 s).
	BalanceLevel int
	BalanceEvery time.Duration
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Clock drives the controller's timers and timestamps: the drain and
	// HA loops, the CA mirror, the balancer, grant holds, migration
	// timeouts (nil: the real clock). Election and etcd keep real time.
	Clock clockwork.Clock
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if err := store.ValidName("controller", c.ID); err != nil {
		return fmt.Errorf("controller: --id: %w", err)
	}
	if c.Pool != "" {
		if err := store.ValidName("pool", c.Pool); err != nil {
			return fmt.Errorf("controller: --pool: %w", err)
		}
	}
	if c.PKIDir == "" {
		return errNoPKI
	}
	if len(c.Endpoints) > 0 {
		if err := checkEndpoints(c.Endpoints); err != nil {
			return err
		}
	} else {
		if err := c.Etcd.Validate(); err != nil {
			return fmt.Errorf("controller: embedded etcd: %w", err)
		}
	}
	if c.SessionTTL != 0 {
		if err := (election.Config{ID: c.ID, SessionTTL: c.SessionTTL}).Validate(); err != nil {
			return fmt.Errorf("controller: %w", err)
		}
	}
	if c.BalanceLevel < 0 || c.BalanceLevel > 5 || c.BalanceEvery < 0 {
		return fmt.Errorf("controller: --balance-level %d --balance-every %s: want a level 0-5 (0: off) and a positive period", c.BalanceLevel, c.BalanceEvery)
	}
	return c.Policy.Validate()
}

func (c Config) withDefaults() Config {
	if c.Pool == "" {
		c.Pool = DefaultPool
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = election.DefaultSessionTTL
	}
	c.Policy = c.Policy.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c
}

// Controller is one running controller. Close it exactly once.
type Controller struct {
	cfg       Config
	log       *slog.Logger
	clock     clockwork.Clock
	etcd      *etcdserver.Server // nil with external endpoints
	endpoints []string
	cli       *clientv3.Client
	st        *store.Store
	ln        net.Listener
	srv       *http.Server
	url       string
	metrics   *metrics
	ca        *pki.CA
	cred      *pki.Credential // this controller's
	caSeen    string          // the CA's stamp when Start mirrored it

	agentMu      sync.Mutex
	agentClients map[string]*http.Client // by host: agentHTTP

	// grantSync orders per-VM grants against syncVMGrants: a grant made
	// while a sync had already read the pool and its held grants would
	// be revoked by that sync as unexplained.
	grantSync sync.Mutex
	grantMu   sync.Mutex
	hostUsers []string             // hosts with an etcd user
	granted   map[string]time.Time // "host/vm" -> when grantVM granted it

	stop     context.CancelFunc
	loopDone chan struct{}
	srvDone  chan struct{}

	// mu guards the fields below.
	mu      sync.Mutex
	cand    *election.Candidate // the current session's candidate, nil between sessions
	leading bool
	guard   store.Guard // valid while leading
	closed  bool

	// placeMu serialises placement decisions and guards resv.
	placeMu sync.Mutex
	resv    map[string]reservation

	// ops is the leader's drain and HA work (drain_loop.go, ha.go).
	ops *ops
	// bal is the load balancer's state (balance.go).
	bal *balancerState
}

// reservation is capacity promised to an in-flight write.
type reservation struct {
	host     string
	vm       string
	memBytes uint64 // VM memory plus overhead
	vcpus    int
	// migration is the ID of the migration record it waits for; "" for a
	// placement, which waits for the owner key.
	migration string
}

// Start starts the embedded etcd (unless cfg.Endpoints is set), connects,
// checks that the etcd holds cfg.Pool (claiming it if it holds none),
// listens, and starts campaigning for leadership.
func Start(ctx context.Context, cfg Config) (_ *Controller, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Controller{cfg: cfg, log: cfg.Logger.With("controller", cfg.ID), clock: cfg.Clock, resv: map[string]reservation{}, granted: map[string]time.Time{}, agentClients: map[string]*http.Client{},
		loopDone: make(chan struct{}), srvDone: make(chan struct{}), ops: newOps(), bal: newBalancerState(cfg)}
	defer func() {
		if err != nil {
			c.closeConns()
		}
	}()

	if err := c.loadCredential(); err != nil {
		return nil, err
	}
	if err := c.connectEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.checkPool(ctx); err != nil {
		return nil, err
	}

	if c.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("controller: listen on %s (--listen): %w", cfg.Listen, err)
	}
	c.url = cfg.AdvertiseURL
	if c.url == "" {
		c.url = "https://" + c.ln.Addr().String()
	}
	c.metrics = newMetrics(c)
	c.srv = &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second, TLSConfig: c.apiTLS(),
		ErrorLog: slogErrorLog(c.log)}
	go func() {
		defer close(c.srvDone)
		if err := c.srv.ServeTLS(c.ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("api server stopped", "err", err)
		}
	}()

	lctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	go c.electLoop(lctx)
	go c.runOps(lctx)
	go c.balanceLoop(lctx)
	go c.pkiLoop(lctx, c.caSeen)
	c.log.Info("controller started", "pool", cfg.Pool, "api", c.url, "etcd", c.endpoints, "embedded", c.etcd != nil)
	return c, nil
}

// connectEtcd starts the embedded etcd member (without external
// endpoints), connects to it, turns etcd's access control on and mirrors
// the CA into it.
func (c *Controller) connectEtcd(ctx context.Context) (err error) {
	c.endpoints = c.cfg.Endpoints
	if len(c.cfg.Endpoints) == 0 {
		ec := c.cfg.Etcd
		ec.TLSDir, ec.CRLFile = c.credDir(), c.etcdCRL()
		if c.etcd, err = etcdserver.Start(ctx, ec); err != nil {
			return fmt.Errorf("controller: %w", err)
		}
		c.endpoints = c.etcd.Endpoints()
		c.log.Info("embedded etcd ready", "endpoints", c.endpoints, "dir", c.cfg.Etcd.Dir, "after", c.etcd.ReadyAfter())
	}
	if c.cli, err = store.Connect(ctx, store.ClientConfig{Endpoints: c.endpoints, Logger: c.cfg.Logger, TLS: c.etcdTLS()}); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	c.st = store.New(c.cli)
	if !c.etcdIsTLS() {
		c.log.Warn("etcd on loopback without TLS: no access control in etcd (tests only)", "endpoints", c.endpoints)
		return nil
	}
	if err := store.EnableAuth(ctx, c.cli, c.cred.Peer().String()); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	if err := c.syncPKI(ctx); err != nil {
		return fmt.Errorf("controller: mirror the CA into etcd: %w", err)
	}
	return nil
}

// checkPool makes sure the etcd holds this controller's pool. The first
// controller of a pool writes the config (create-only CAS, before any
// leadership exists: it is the pool's birth, not a leader decision).
func (c *Controller) checkPool(ctx context.Context) error {
	for range 3 {
		cfg, rev, err := c.st.GetConfig(ctx)
		switch {
		case errors.Is(err, store.ErrNotFound):
			rev = 0
		case err != nil:
			return fmt.Errorf("controller: read pool config: %w", err)
		case cfg.Pool == c.cfg.Pool:
			return nil
		case cfg.Pool != "":
			return fmt.Errorf("controller: etcd %v holds pool %q (its %s says so), not pool %q: point --etcd-endpoints at pool %s's etcd, or pass --pool %s to join that pool",
				c.endpoints, cfg.Pool, store.ConfigKey, c.cfg.Pool, c.cfg.Pool, cfg.Pool)
		}
		cfg.Pool = c.cfg.Pool
		if _, err := c.st.PutConfig(ctx, cfg, rev, store.Guard{}); err == nil {
			c.log.Info("pool config written", "pool", c.cfg.Pool)
			return nil
		} else if !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("controller: write pool config: %w", err)
		}
	}
	return errors.New("controller: pool config keeps changing under us; is another pool's controller starting on this etcd?")
}

// electLoop campaigns, leads until the session ends, and campaigns again,
// until ctx ends. Each round has its own session; the session's context is
// not ctx, so that Close can still revoke it (and hand over at once).
func (c *Controller) electLoop(ctx context.Context) {
	defer close(c.loopDone)
	for ctx.Err() == nil {
		sctx, scancel := context.WithCancel(context.Background())
		cand, err := election.New(sctx, c.cli, election.Config{ID: c.cfg.ID, SessionTTL: c.cfg.SessionTTL})
		if err != nil {
			scancel()
			c.log.Warn("election session failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		c.mu.Lock()
		c.cand = cand
		c.mu.Unlock()
		if _, err := c.st.PutController(ctx, store.ControllerInfo{ID: c.cfg.ID, URL: c.url, Pool: c.cfg.Pool}, cand.Lease()); err != nil {
			c.log.Warn("register controller", "err", err)
		}
		if err := cand.Campaign(ctx); err == nil {
			key, rev := cand.LeaderKey()
			c.mu.Lock()
			c.leading, c.guard = true, store.LeaderGuard(key, rev)
			c.mu.Unlock()
			c.metrics.leader.Set(1)
			c.log.Info("leading", "leader_key", key, "rev", rev)
			select {
			case <-cand.Done():
				c.log.Warn("leadership lost (session ended)")
			case <-ctx.Done():
			}
			c.mu.Lock()
			c.leading, c.guard = false, store.Guard{}
			c.mu.Unlock()
			c.metrics.leader.Set(0)
		} else if ctx.Err() == nil {
			c.log.Warn("campaign ended", "err", err)
		}
		c.mu.Lock()
		c.cand = nil
		c.mu.Unlock()
		if err := cand.Close(); err != nil && ctx.Err() == nil {
			c.log.Warn("close election session", "err", err)
		}
		scancel()
	}
}

// leaderGuard returns the guard for a write, or the not-the-leader error.
func (c *Controller) leaderGuard(ctx context.Context) (store.Guard, error) {
	c.mu.Lock()
	leading, g, cand := c.leading, c.guard, c.cand
	c.mu.Unlock()
	if leading && cand != nil && cand.IsLeader() {
		return g, nil
	}
	return store.Guard{}, c.notLeader(ctx)
}

// IsLeader reports whether this controller believes it leads.
func (c *Controller) IsLeader() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading && c.cand != nil && c.cand.IsLeader()
}

// Leader returns the current leader's ID and URL ("" when none).
func (c *Controller) Leader(ctx context.Context) (id, url string) {
	resp, err := c.cli.Get(ctx, election.Prefix, clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return "", ""
	}
	id = string(resp.Kvs[0].Value)
	if cs, err := c.st.ListControllers(ctx); err == nil {
		for _, m := range cs {
			if m.ID == id {
				url = m.URL
			}
		}
	}
	return id, url
}

// URL is the API's address as advertised.
func (c *Controller) URL() string { return c.url }

// Store is the controller's store (for tests and tools).
func (c *Controller) Store() *store.Store { return c.st }

// Endpoints are the etcd endpoints in use (the embedded member's, or the
// external cluster's).
func (c *Controller) Endpoints() []string { return c.endpoints }

// Close stops campaigning (resigning if leading, so a peer leads at once),
// stops the API and, if embedded, the etcd member.
func (c *Controller) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	if c.stop != nil {
		c.stop()
		<-c.loopDone
		<-c.ops.done
		<-c.bal.done
	}
	if c.srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c.srv.Shutdown(sctx)
		cancel()
		<-c.srvDone
	}
	c.closeConns()
	c.log.Info("controller stopped")
	return nil
}

func (c *Controller) closeConns() {
	if c.ln != nil && c.srv == nil {
		c.ln.Close()
	}
	if c.cli != nil {
		c.cli.Close()
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
}

// Handler is the API. Who may call it is settled at the TLS handshake
// (apiTLS): a user's or a controller's certificate of the pool.
func (c *Controller) Handler() http.Handler {
	mux := http.NewServeMux()
	c.routes(mux)
	return mux
}

// slogErrorLog sends net/http's own errors (refused TLS handshakes among
// them) to the structured log.
func slogErrorLog(log *slog.Logger) *stdlog.Logger {
	return slog.NewLogLogger(log.Handler(), slog.LevelWarn)
}

// EtcdErr delivers a fatal error of the embedded etcd member; nil channel
// (never ready) with an external cluster.
func (c *Controller) EtcdErr() <-chan error {
	if c.etcd == nil {
		return nil
	}
	return c.etcd.Err()
}
