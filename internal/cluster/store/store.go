package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// AnyRev, given as expectRev to a Put method, writes whatever the key's
// current revision. Zero means "the key must be absent".
const AnyRev int64 = -1

// ClientConfig says how to reach etcd: the embedded member's Endpoints or an
// external cluster's.
type ClientConfig struct {
	Endpoints []string
	// DialTimeout bounds Connect's first round trip; default 5 s.
	DialTimeout time.Duration
	// ReconnectMax caps gRPC's reconnect backoff; default 500 ms. gRPC's own
	// default starts at 1 s and grows to 120 s, which after an etcd restart
	// could keep an agent away longer than its lease margin.
	ReconnectMax time.Duration
	// Logger receives the client's warnings; nil discards them.
	Logger *slog.Logger
	// TLS, if set, is the client side of mutual TLS (package pki): etcd
	// takes the certificate's common name as the user.
	TLS *tls.Config
}

// Validate reports the first problem with c.
func (c ClientConfig) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("store: no etcd endpoints (start the embedded member or pass --etcd-endpoints)")
	}
	return nil
}

// Connect dials etcd and proves the connection with one linearizable read,
// so a wrong endpoint or a cluster without quorum fails here, clearly.
// ctx bounds only that first read; the client lives until the caller closes
// it. Its reconnect backoff is capped (ReconnectMax) so that an agent is
// back within its lease margin after an etcd restart.
func Connect(ctx context.Context, c ClientConfig) (*clientv3.Client, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = 500 * time.Millisecond
	}
	bc := backoff.DefaultConfig
	bc.BaseDelay = 50 * time.Millisecond
	bc.MaxDelay = c.ReconnectMax
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: c.DialTimeout}),
		},
		Logger: zap.NewNop(),
		TLS:    c.TLS,
	})
	if err != nil {
		return nil, fmt.Errorf("store: connect to etcd %v: %w", c.Endpoints, err)
	}
	pctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, ConfigKey); err != nil {
		cli.Close()
		return nil, fmt.Errorf("store: etcd %v did not answer a read within %s (is it running, and does it have quorum?): %w", c.Endpoints, c.DialTimeout, err)
	}
	return cli, nil
}

// Store is the pool's state over one etcd client. It holds no state of its
// own and is safe for concurrent use.
type Store struct {
	cli *clientv3.Client
}

// New returns a Store over cli. The caller keeps ownership of cli.
func New(cli *clientv3.Client) *Store { return &Store{cli: cli} }

// Client returns the underlying etcd client (for leases and elections).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Guard makes a controller write conditional on still being the leader:
// If(CreateRevision(Key) == Rev). The zero Guard guards nothing (agent writes).
type Guard struct {
	Key string // the leader's election key
	Rev int64  // its CreateRevision when leadership was won
}

// LeaderGuard builds the guard for a leader key and its create revision, as
// reported by election.Candidate's Key and Rev.
func LeaderGuard(key string, rev int64) Guard { return Guard{Key: key, Rev: rev} }

// IsZero reports whether g guards nothing.
func (g Guard) IsZero() bool { return g.Key == "" }

func (g Guard) cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(g.Key), "=", g.Rev)
}

// txnResult is the (inner) outcome of a guarded Txn.
type txnResult struct {
	succeeded bool
	responses []*pb.ResponseOp
	rev       int64 // store revision after the Txn; the ModRevision of its puts
}

// txn commits If(cmps) Then(then) Else(els), nested inside If(guard) when g
// is set, so a failed guard (ErrNotLeader) is told apart from a failed cmp.
func (s *Store) txn(ctx context.Context, g Guard, cmps []clientv3.Cmp, then, els []clientv3.Op) (txnResult, error) {
	if g.IsZero() {
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
		if err != nil {
			return txnResult{}, err
		}
		return txnResult{resp.Succeeded, resp.Responses, resp.Header.Revision}, nil
	}
	resp, err := s.cli.Txn(ctx).If(g.cmp()).Then(clientv3.OpTxn(cmps, then, els)).Commit()
	if err != nil {
		return txnResult{}, err
	}
	if !resp.Succeeded {
		return txnResult{}, ErrNotLeader
	}
	inner := resp.Responses[0].GetResponseTxn()
	return txnResult{inner.Succeeded, inner.Responses, resp.Header.Revision}, nil
}

// putCAS writes v at key if ModRevision(key) == expectRev (0: absent;
// AnyRev: unconditionally) and returns the new revision.
func (s *Store) putCAS(ctx context.Context, key string, v value, expectRev int64, g Guard, opts ...clientv3.OpOption) (int64, error) {
	val, err := encode(key, v)
	if err != nil {
		return 0, err
	}
	var cmps []clientv3.Cmp
	if expectRev != AnyRev {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", expectRev))
	}
	r, err := s.txn(ctx, g, cmps, []clientv3.Op{clientv3.OpPut(key, val, opts...)}, []clientv3.Op{clientv3.OpGet(key, clientv3.WithKeysOnly())})
	if errors.Is(err, ErrNotLeader) {
		return 0, fmt.Errorf("store: put %s: %w", key, err)
	}
	if err != nil {
		return 0, writeError("store: put "+key, err)
	}
	if !r.succeeded {
		return 0, &ConflictError{Key: key, ExpectRev: expectRev, ActualRev: modRevOf(r.responses[0])}
	}
	return r.rev, nil
}

// deleteCAS deletes key if ModRevision(key) == expectRev (AnyRev: always).
func (s *Store) deleteCAS(ctx context.Context, key string, expectRev int64, g Guard) error {
	var cmps []clientv3.Cmp
	if expectRev != AnyRev {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", expectRev))
	}
	r, err := s.txn(ctx, g, cmps, []clientv3.Op{clientv3.OpDelete(key)}, []clientv3.Op{clientv3.OpGet(key, clientv3.WithKeysOnly())})
	if errors.Is(err, ErrNotLeader) {
		return fmt.Errorf("store: delete %s: %w", key, err)
	}
	if err != nil {
		return writeError("store: delete "+key, err)
	}
	if !r.succeeded {
		return &ConflictError{Key: key, ExpectRev: expectRev, ActualRev: modRevOf(r.responses[0])}
	}
	return nil
}

func modRevOf(op *pb.ResponseOp) int64 {
	if rr := op.GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
		return rr.Kvs[0].ModRevision
	}
	return 0
}

// get reads key linearizably into v and returns its ModRevision.
func (s *Store) get(ctx context.Context, key string, v value) (int64, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("store: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	kv := resp.Kvs[0]
	if err := decode(key, kv.Value, v); err != nil {
		return 0, err
	}
	return kv.ModRevision, nil
}

// list reads every key under prefix whose remainder parses, calling each for
// every key, and returns the store revision of the read.
func (s *Store) list(ctx context.Context, prefix string, each func(key string, kv []byte, modRev int64) error) (int64, error) {
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("store: list %s: %w", prefix, err)
	}
	for _, kv := range resp.Kvs {
		if err := each(string(kv.Key), kv.Value, kv.ModRevision); err != nil {
			return 0, err
		}
	}
	return resp.Header.Revision, nil
}

// Revision returns the store's current revision (a linearizable read), the
// point from which a Watch started after a List sees every later change.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, ConfigKey, clientv3.WithKeysOnly())
	if err != nil {
		return 0, fmt.Errorf("store: read revision: %w", err)
	}
	return resp.Header.Revision, nil
}
