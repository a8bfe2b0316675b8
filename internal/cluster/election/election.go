// Package election elects one leader among the pool's controllers with
// etcd's concurrency.Election.
//
// Several controllers may run; one leads. Leadership is a key under Prefix
// bound to the candidate's session lease (TTL 10 s by default, not etcd's
// 60 s), so a leader that dies or is cut off loses it when the lease
// expires. A leader cannot know the instant it is deposed, so every write a
// leader makes must carry store.LeaderGuard(c.LeaderKey()): etcd then
// refuses the write once the leader key is gone or re-created.
//
// Who may import it: the controller. It depends only on the etcd client.
package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Prefix is where the controllers' candidate keys live.
const Prefix = "/godwit/v1/controller/leader/"

// DefaultSessionTTL is the session lease TTL: how long a dead leader holds
// the pool without a successor.
const DefaultSessionTTL = 10 * time.Second

// ErrNotLeader is returned by Resign and Leader when the candidate does not lead.
var ErrNotLeader = errors.New("election: not the leader")

// Config describes one candidate.
type Config struct {
	// ID names the candidate (the controller's host name); it is the value
	// of its key, and what Leader reports.
	ID string
	// SessionTTL: default DefaultSessionTTL; whole seconds, at least 2 s.
	SessionTTL time.Duration
	// Prefix: default Prefix. Tests may use their own.
	Prefix string
}

// Validate reports the first problem with c after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.ID == "" {
		return errors.New("election: Config.ID is required")
	}
	if c.SessionTTL < 2*time.Second || c.SessionTTL%time.Second != 0 {
		return fmt.Errorf("election: session TTL %s: want whole seconds, at least 2 s", c.SessionTTL)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.SessionTTL == 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.Prefix == "" {
		c.Prefix = Prefix
	}
	return c
}

// Candidate is one controller's participation in the election, over one
// session. When the session ends (Done), the candidate is finished: make a
// new one to campaign again.
type Candidate struct {
	cfg     Config
	session *concurrency.Session
	el      *concurrency.Election

	// mu guards the fields below.
	mu      sync.Mutex
	leading bool
	key     string
	rev     int64
}

// New creates a session (a lease with keep-alives) for a candidate. The
// session lives until Close, its lease expires, or ctx ends.
func New(ctx context.Context, cli *clientv3.Client, cfg Config) (*Candidate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(int(cfg.SessionTTL/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("election: candidate %s: new session: %w", cfg.ID, err)
	}
	return &Candidate{cfg: cfg, session: s, el: concurrency.NewElection(s, cfg.Prefix)}, nil
}

// Campaign blocks until the candidate leads, ctx ends, or the session ends.
func (c *Candidate) Campaign(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.session.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := c.el.Campaign(ctx, c.cfg.ID); err != nil {
		select {
		case <-c.session.Done():
			return fmt.Errorf("election: candidate %s: session ended while campaigning: %w", c.cfg.ID, err)
		default:
		}
		return fmt.Errorf("election: candidate %s: campaign: %w", c.cfg.ID, err)
	}
	c.mu.Lock()
	c.leading, c.key, c.rev = true, c.el.Key(), c.el.Rev()
	c.mu.Unlock()
	return nil
}

// IsLeader reports whether this candidate won and has neither resigned nor
// lost its session. It is a local belief, true up to a session TTL after
// etcd has moved on; guard every leader write (see package doc).
func (c *Candidate) IsLeader() bool {
	select {
	case <-c.session.Done():
		return false
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading
}

// LeaderKey returns the leader key and its create revision, the two halves of
// store.LeaderGuard. The values stay those of the last won term after the
// candidate is deposed, so writes guarded by them fail, as they must.
func (c *Candidate) LeaderKey() (key string, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.key, c.rev
}

// Rev is the leader key's create revision (0 before the first win).
func (c *Candidate) Rev() int64 {
	_, rev := c.LeaderKey()
	return rev
}

// Leader returns the ID of the current leader, whoever it is.
func (c *Candidate) Leader(ctx context.Context) (string, error) {
	resp, err := c.el.Leader(ctx)
	if errors.Is(err, concurrency.ErrElectionNoLeader) {
		return "", ErrNotLeader
	}
	if err != nil {
		return "", fmt.Errorf("election: read leader: %w", err)
	}
	return string(resp.Kvs[0].Value), nil
}

// Done is closed when the candidate's session ends (its lease expired or
// was revoked, or Close was called): it no longer leads.
func (c *Candidate) Done() <-chan struct{} { return c.session.Done() }

// Lease is the session's lease, for tests and diagnostics.
func (c *Candidate) Lease() clientv3.LeaseID { return c.session.Lease() }

// Resign gives up leadership (deletes the leader key) so another candidate
// takes over at once; the session stays open and may Campaign again.
func (c *Candidate) Resign(ctx context.Context) error {
	c.mu.Lock()
	leading := c.leading
	c.leading = false
	c.mu.Unlock()
	if !leading {
		return ErrNotLeader
	}
	if err := c.el.Resign(ctx); err != nil {
		return fmt.Errorf("election: candidate %s: resign: %w", c.cfg.ID, err)
	}
	return nil
}

// Close resigns if leading and revokes the session.
func (c *Candidate) Close() error {
	c.mu.Lock()
	c.leading = false
	c.mu.Unlock()
	if err := c.session.Close(); err != nil {
		return fmt.Errorf("election: candidate %s: close session: %w", c.cfg.ID, err)
	}
	return nil
}
