package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LeaseConfig tunes a HostLease. Production: TTL 10 s, margin 2 s, renew
// every 2 s. Tests on one machine: TTL 3 s, margin 0.6 s, renew 0.6 s.
type LeaseConfig struct {
	// TTL is the lease's time to live, a whole number of seconds ≥ 2.
	TTL time.Duration
	// Margin is how long before the earliest possible server-side expiry the
	// local deadline falls. It must cover the time the VMMs need to stop
	// (kick vCPUs out of KVM_RUN, refuse disk writes) and the difference in
	// rate between this host's monotonic clock and the etcd leader's.
	Margin time.Duration
	// RenewEvery is the renewal period; default TTL/5.
	RenewEvery time.Duration
	// RequestTimeout bounds one renewal; default RenewEvery.
	RequestTimeout time.Duration
	// OnRenew, if set, is called (outside any lock, from the renewal
	// goroutine) with each new deadline, e.g. to publish it to the VMMs.
	OnRenew func(deadline time.Time)
	// Logger, if set, receives renewal failures and the expiry.
	Logger *slog.Logger
	// Clock, if set, is what the deadline, the renewal period and the
	// expiry are measured on: tests advance a fake one. Default: the real
	// clock, whose readings carry the monotonic clock the deadline must be
	// in. The request timeout is always real time.
	Clock clockwork.Clock
}

// Lease defaults.
const (
	DefaultLeaseTTL    = 10 * time.Second
	DefaultLeaseMargin = 2 * time.Second
)

func (c LeaseConfig) withDefaults() LeaseConfig {
	if c.TTL == 0 {
		c.TTL = DefaultLeaseTTL
	}
	if c.Margin == 0 {
		c.Margin = DefaultLeaseMargin
	}
	if c.RenewEvery == 0 {
		c.RenewEvery = c.TTL / 5
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = c.RenewEvery
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c
}

// Validate reports the first problem with c after defaults are applied.
func (c LeaseConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.TTL < 2*time.Second || c.TTL%time.Second != 0:
		return fmt.Errorf("store: lease TTL %s: want a whole number of seconds, at least 2 s", c.TTL)
	case c.Margin <= 0 || c.RenewEvery <= 0 || c.RequestTimeout <= 0:
		return errors.New("store: lease margin, renewal period and request timeout must be positive")
	case c.TTL-c.Margin < 2*c.RenewEvery:
		// One lost renewal must not fence a healthy host.
		return fmt.Errorf("store: lease TTL %s − margin %s leaves room for fewer than two renewals every %s", c.TTL, c.Margin, c.RenewEvery)
	}
	return nil
}

// ErrLeaseExpired is reported by HostLease.Err once the local deadline has
// passed without a renewal (or etcd said the lease is gone). The host has
// fenced itself: its VMs must be stopped, and it needs a new lease.
var ErrLeaseExpired = errors.New("store: host lease deadline passed")

// HostLease is the agent's lease: it keeps one etcd lease alive with its own
// KeepAliveOnce loop and maintains a local Deadline that is always earlier
// than etcd's expiry of the lease.
//
// Why the deadline is safe: before each renewal the agent reads its
// monotonic clock (t_send). etcd's leader, on receiving the renewal, sets
// the lease's expiry to its own now + TTL; that now is at or after t_send, so
// expiry ≥ t_send + TTL. etcd never moves an expiry earlier — on a leader
// change (or an etcd restart) the new leader extends every lease by at least
// the election timeout plus the full TTL ("Promote"). Hence
//
//	deadline = t_send(last acknowledged renewal) + TTL − Margin
//
// is at least Margin before the earliest moment etcd can delete the keys
// bound to the lease (the owner keys), i.e. before anyone else may start
// this host's VMs. Using the receive time of the answer instead would be
// wrong: the answer can arrive long after etcd set the expiry.
//
// The expiry is terminal: once Expired fires the HostLease stops renewing
// (so etcd's view and ours agree that the lease is over) and the agent must
// stop its VMs and start again with a new lease.
type HostLease struct {
	cli *clientv3.Client
	id  clientv3.LeaseID
	cfg LeaseConfig

	stop     chan struct{} // closed by Close/Revoke
	loopDone chan struct{} // closed when the renewal loop returns
	expired  chan struct{} // closed when the deadline passes
	timer    clockwork.Timer

	// mu guards the fields below.
	mu        sync.Mutex
	deadline  time.Time // monotonic; valid while !isExpired
	lastSend  time.Time // send time of the last acknowledged renewal
	isExpired bool
	closed    bool
	err       error // why it expired
	renewals  int
	failures  int // consecutive failed renewals
	lastErr   error
	ttl       time.Duration // the TTL etcd reports for the lease
}

// GrantHostLease grants a new lease and starts renewing it.
func GrantHostLease(ctx context.Context, cli *clientv3.Client, cfg LeaseConfig) (*HostLease, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	sent := cfg.Clock.Now()
	resp, err := cli.Grant(ctx, int64(cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("store: grant host lease: %w", err)
	}
	return startHostLease(cli, resp.ID, cfg, sent, time.Duration(resp.TTL)*time.Second), nil
}

// AdoptHostLease takes over a lease granted by an earlier run of this agent
// (its ID kept in a local file) if etcd still has it: it renews it at once
// and starts the loop. ErrLeaseNotFound means the lease is gone: the keys it
// held (this host's owner keys) are deleted, the VMs may be running
// elsewhere, and the agent must kill its VMMs and grant a new lease.
func AdoptHostLease(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID, cfg LeaseConfig) (*HostLease, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ttl, err := cli.TimeToLive(ctx, id)
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return nil, fmt.Errorf("store: adopt lease %x: %w", int64(id), ErrLeaseNotFound)
		}
		return nil, fmt.Errorf("store: adopt lease %x: %w", int64(id), err)
	}
	if ttl.TTL <= 0 {
		return nil, fmt.Errorf("store: adopt lease %x: %w", int64(id), ErrLeaseNotFound)
	}
	sent := cfg.Clock.Now()
	ka, err := cli.KeepAliveOnce(ctx, id)
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return nil, fmt.Errorf("store: adopt lease %x: %w", int64(id), ErrLeaseNotFound)
		}
		return nil, fmt.Errorf("store: adopt lease %x: renew: %w", int64(id), err)
	}
	return startHostLease(cli, id, cfg, sent, time.Duration(ka.TTL)*time.Second), nil
}

func startHostLease(cli *clientv3.Client, id clientv3.LeaseID, cfg LeaseConfig, sent time.Time, ttl time.Duration) *HostLease {
	h := &HostLease{
		cli: cli, id: id, cfg: cfg,
		stop: make(chan struct{}), loopDone: make(chan struct{}), expired: make(chan struct{}),
		lastSend: sent, ttl: ttl, renewals: 1,
	}
	h.deadline = sent.Add(ttl - cfg.Margin)
	h.mu.Lock() // checkDeadline may run before AfterFunc returns
	h.timer = cfg.Clock.AfterFunc(cfg.Clock.Until(h.deadline), h.checkDeadline)
	h.mu.Unlock()
	if cfg.OnRenew != nil {
		cfg.OnRenew(h.deadline)
	}
	go h.loop()
	return h
}

// ID is the etcd lease ID; bind owner, alive and status keys to it.
func (h *HostLease) ID() clientv3.LeaseID { return h.id }

// Deadline is the local deadline (monotonic clock reading): the VMs must be
// stopped by then unless a renewal moves it. After expiry it stays at the
// deadline that passed.
func (h *HostLease) Deadline() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.deadline
}

// Expired is closed when the deadline passes without a renewal, or when etcd
// reports the lease gone. It is not closed by Close or Revoke.
func (h *HostLease) Expired() <-chan struct{} { return h.expired }

// Err is nil while the lease is held, else why it was lost (ErrLeaseExpired).
func (h *HostLease) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// LeaseStats are counters for metrics and logs.
type LeaseStats struct {
	Renewals       int           // acknowledged renewals, the grant included
	FailuresInARow int           // failed renewals since the last success
	LastError      error         // the last renewal error
	LastAckedSend  time.Time     // send time of the last acknowledged renewal
	TTL            time.Duration // as etcd reports it
	Deadline       time.Time
	DeadlinePassed bool
	TimeToDeadline time.Duration
}

// Stats returns the lease's counters.
func (h *HostLease) Stats() LeaseStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return LeaseStats{
		Renewals: h.renewals, FailuresInARow: h.failures, LastError: h.lastErr,
		LastAckedSend: h.lastSend, TTL: h.ttl, Deadline: h.deadline,
		DeadlinePassed: h.isExpired, TimeToDeadline: h.cfg.Clock.Until(h.deadline),
	}
}

func (h *HostLease) loop() {
	defer close(h.loopDone)
	t := h.cfg.Clock.NewTicker(h.cfg.RenewEvery)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-h.expired:
			return
		case <-t.Chan():
		}
		if !h.renew() {
			return
		}
	}
}

// renew sends one renewal; it returns false when the loop must end.
func (h *HostLease) renew() bool {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.RequestTimeout)
	defer cancel()
	go func() { // Close must not wait for a renewal to time out.
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	sent := h.cfg.Clock.Now()
	resp, err := h.cli.KeepAliveOnce(ctx, h.id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		h.expire(fmt.Errorf("%w: etcd reports lease %x gone", ErrLeaseExpired, int64(h.id)))
		return false
	}
	h.mu.Lock()
	if err != nil {
		h.failures++
		h.lastErr = err
		n := h.failures
		h.mu.Unlock()
		h.cfg.Logger.Warn("host lease renewal failed", "lease", fmt.Sprintf("%x", int64(h.id)), "failures_in_a_row", n, "err", err)
		return true
	}
	if h.isExpired || h.closed || !h.cfg.Clock.Now().Before(h.deadline) {
		// The deadline passed while this renewal was in flight: the VMMs may
		// already have stopped on it, so the expiry stands.
		h.mu.Unlock()
		h.checkDeadline()
		return false
	}
	ttl := time.Duration(resp.TTL) * time.Second
	h.ttl = ttl
	h.lastSend = sent
	h.renewals++
	h.failures = 0
	if d := sent.Add(ttl - h.cfg.Margin); d.After(h.deadline) {
		h.deadline = d
	}
	d := h.deadline
	h.mu.Unlock()
	if h.cfg.OnRenew != nil {
		h.cfg.OnRenew(d)
	}
	return true
}

// checkDeadline runs when the timer fires: it expires the lease if the
// deadline has passed, else re-arms the timer for the (moved) deadline.
func (h *HostLease) checkDeadline() {
	h.mu.Lock()
	if h.isExpired || h.closed {
		h.mu.Unlock()
		return
	}
	if left := h.cfg.Clock.Until(h.deadline); left > 0 {
		h.timer.Reset(left)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	h.expire(fmt.Errorf("%w: no renewal acknowledged since %s", ErrLeaseExpired, h.Stats().LastAckedSend.Format(time.RFC3339Nano)))
}

func (h *HostLease) expire(err error) {
	h.mu.Lock()
	if h.isExpired || h.closed {
		h.mu.Unlock()
		return
	}
	h.isExpired = true
	h.err = err
	if now := h.cfg.Clock.Now(); now.Before(h.deadline) {
		h.deadline = now // etcd said it is gone: the deadline is now
	}
	h.timer.Stop()
	h.mu.Unlock()
	close(h.expired)
	h.cfg.Logger.Error("host lease lost: stop every VM now", "lease", fmt.Sprintf("%x", int64(h.id)), "err", err)
}

// Close stops renewing without revoking: the lease lives until its TTL runs
// out, so a restarted agent can adopt it (AdoptHostLease). Expired does not
// fire after Close.
func (h *HostLease) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	h.timer.Stop()
	h.mu.Unlock()
	close(h.stop)
	<-h.loopDone
}

// Revoke stops renewing and revokes the lease, which deletes every key bound
// to it at once — this host's alive key, and its owner keys. Only for a
// clean leave, after the host's VMs are stopped or migrated away.
func (h *HostLease) Revoke(ctx context.Context) error {
	h.Close()
	if _, err := h.cli.Revoke(ctx, h.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("store: revoke lease %x: %w", int64(h.id), err)
	}
	return nil
}
