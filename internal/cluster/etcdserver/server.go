// Package etcdserver runs the pool's state store as an embedded, single-member
// etcd inside the current process.
//
// It exists for the default deployment of a Godwit pool: the controller starts
// one etcd member with a data directory on disk and fast raft ticks (10 ms tick,
// 100 ms election), and every agent and controller talks to it over the ordinary
// etcd client API on loopback or the pool network. An external etcd cluster
// replaces it without any other change (see package store), so nothing outside
// the process that embeds the server may depend on it being embedded.
//
// Who may import it: the controller (cmd wiring) and tests. The agent must not;
// it only ever sees etcd endpoints.
package etcdserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Defaults used by Config.withDefaults. They follow PLATFORM.md §5–6: a lone
// member still waits one randomised election timeout before it serves, so a
// 100 ms election timeout keeps start-up (and restart) within ~100 ms.
const (
	DefaultName           = "godwit"
	DefaultHost           = "127.0.0.1"
	DefaultTickMs         = 10
	DefaultElectionMs     = 100
	DefaultReadyTimeout   = 10 * time.Second
	DefaultCompactionMode = "periodic"
	// DefaultCompactionRetention keeps one hour of history so that a watcher
	// that fell behind can resume; the pool's keys are few and small.
	DefaultCompactionRetention = "1h"
	DefaultLogLevel            = "warn"
)

// ErrNotReady is returned by Start when the member did not become ready
// (elect itself and serve clients) within Config.ReadyTimeout.
var ErrNotReady = errors.New("etcdserver: member not ready in time")

// Config describes one embedded member. Only Dir is required.
type Config struct {
	// Dir is the data directory (WAL, snapshots, bbolt backend). Restarting
	// on the same Dir keeps every key and every unexpired lease.
	Dir string
	// Name is the member name; it is recorded in Dir on first start.
	Name string
	// Host is the address both listeners bind to; default 127.0.0.1.
	Host string
	// ClientPort and PeerPort: 0 picks a free port. To restart a member at
	// the same endpoint (so that clients reconnect by themselves), pass the
	// ports reported by Server.ClientPort and Server.PeerPort.
	ClientPort int
	PeerPort   int
	// TickMs and ElectionMs are the raft heartbeat and election timeouts.
	TickMs     uint
	ElectionMs uint
	// CompactionMode is "periodic" or "revision"; CompactionRetention its
	// argument ("1h", "1000"). Auto-compaction is always on.
	CompactionMode      string
	CompactionRetention string
	// ReadyTimeout bounds Start.
	ReadyTimeout time.Duration
	// LogLevel is etcd's zap level: debug, info, warn, error; "off" silences
	// etcd completely. Default warn.
	LogLevel string
	// TLSDir, if set, is a credential directory of the pool (ca.pem,
	// cert.pem, key.pem; see package pki): both listeners then serve only
	// TLS and require a client certificate of that CA, whose common name
	// is the etcd user. etcd re-reads the files at each handshake, so a
	// rotated certificate takes effect without a restart.
	TLSDir string
	// CRLFile, with TLSDir, is the pool's revocation list in DER: etcd
	// refuses the certificates it lists.
	CRLFile string
}

// TLS file names in Config.TLSDir.
const (
	tlsCA   = "ca.pem"
	tlsCert = "cert.pem"
	tlsKey  = "key.pem"
)

// Validate reports the first problem with c, after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Dir == "" {
		return errors.New("etcdserver: Config.Dir is required (the member's data directory)")
	}
	if net.ParseIP(c.Host) == nil {
		return fmt.Errorf("etcdserver: Config.Host %q is not an IP address", c.Host)
	}
	for _, p := range []int{c.ClientPort, c.PeerPort} {
		if p < 0 || p > 65535 {
			return fmt.Errorf("etcdserver: port %d out of range", p)
		}
	}
	if c.ClientPort != 0 && c.ClientPort == c.PeerPort {
		return fmt.Errorf("etcdserver: client and peer port are both %d", c.ClientPort)
	}
	if c.ElectionMs < 5*c.TickMs {
		return fmt.Errorf("etcdserver: election timeout %d ms should be at least 5 ticks of %d ms", c.ElectionMs, c.TickMs)
	}
	switch c.CompactionMode {
	case "periodic", "revision":
	default:
		return fmt.Errorf("etcdserver: compaction mode %q: want periodic or revision", c.CompactionMode)
	}
	if c.CompactionRetention == "" || c.CompactionRetention == "0" {
		return errors.New("etcdserver: auto-compaction retention must be non-zero")
	}
	if _, err := zapLevel(c.LogLevel); err != nil {
		return err
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Host == "" {
		c.Host = DefaultHost
	}
	if c.TickMs == 0 {
		c.TickMs = DefaultTickMs
	}
	if c.ElectionMs == 0 {
		c.ElectionMs = DefaultElectionMs
	}
	if c.CompactionMode == "" {
		c.CompactionMode = DefaultCompactionMode
	}
	if c.CompactionRetention == "" {
		c.CompactionRetention = DefaultCompactionRetention
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	return c
}

// Server is a running embedded member. Close it exactly once.
type Server struct {
	etcd       *embed.Etcd
	cfg        Config // resolved: defaults applied, ports chosen
	clientURL  string
	readyAfter time.Duration
}

// Start starts a member and waits until it has elected itself and serves
// clients, or until ctx ends or cfg.ReadyTimeout passes, whichever is first.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdserver: data dir: %w", err)
	}

	// A chosen free port can be taken by someone else between our probe and
	// etcd's bind; retry a few times with fresh ports in that case only.
	const attempts = 3
	var lastErr error
	for i := 0; i < attempts; i++ {
		rc := cfg
		var err error
		if rc.ClientPort == 0 {
			if rc.ClientPort, err = freePort(rc.Host); err != nil {
				return nil, err
			}
		}
		if rc.PeerPort == 0 {
			if rc.PeerPort, err = freePort(rc.Host); err != nil {
				return nil, err
			}
		}
		s, err := start(ctx, rc)
		if err == nil {
			return s, nil
		}
		lastErr = err
		autoPorts := cfg.ClientPort == 0 || cfg.PeerPort == 0
		if !autoPorts || !isAddrInUse(err) {
			break
		}
	}
	return nil, lastErr
}

func start(ctx context.Context, cfg Config) (*Server, error) {
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.TickMs = cfg.TickMs
	ec.ElectionMs = cfg.ElectionMs
	ec.AutoCompactionMode = cfg.CompactionMode
	ec.AutoCompactionRetention = cfg.CompactionRetention
	ec.EnableGRPCGateway = false

	scheme := "http"
	if cfg.TLSDir != "" {
		scheme = "https"
		info := transport.TLSInfo{
			CertFile:       filepath.Join(cfg.TLSDir, tlsCert),
			KeyFile:        filepath.Join(cfg.TLSDir, tlsKey),
			TrustedCAFile:  filepath.Join(cfg.TLSDir, tlsCA),
			ClientCertAuth: true,
			CRLFile:        cfg.CRLFile,
			// A client is who its certificate names, from any address.
			SkipClientSANVerify: true,
			MinVersion:          tls.VersionTLS13,
		}
		ec.ClientTLSInfo, ec.PeerTLSInfo = info, info
	}
	clientURL := url.URL{Scheme: scheme, Host: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.ClientPort))}
	peerURL := url.URL{Scheme: scheme, Host: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.PeerPort))}
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.InitialClusterToken = "godwit-" + cfg.Name

	lvl, _ := zapLevel(cfg.LogLevel) // validated
	var lg *zap.Logger
	if cfg.LogLevel == "off" {
		lg = zap.NewNop()
	} else {
		zc := zap.NewProductionConfig()
		zc.Level = zap.NewAtomicLevelAt(lvl)
		zc.OutputPaths = []string{"stderr"}
		zc.ErrorOutputPaths = []string{"stderr"}
		zc.Sampling = nil
		l, err := zc.Build()
		if err != nil {
			return nil, fmt.Errorf("etcdserver: logger: %w", err)
		}
		lg = l.With(zap.String("component", "etcd"))
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)

	began := time.Now()
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcdserver: start member %q in %s: %w", cfg.Name, cfg.Dir, err)
	}
	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcdserver: member %q failed while starting: %w", cfg.Name, err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("%w: %s after start (data dir %s; a member of a larger cluster, or a data dir from another cluster, cannot elect itself)", ErrNotReady, cfg.ReadyTimeout, cfg.Dir)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("etcdserver: start member %q: %w", cfg.Name, ctx.Err())
	}
	return &Server{etcd: e, cfg: cfg, clientURL: clientURL.String(), readyAfter: time.Since(began)}, nil
}

// Endpoints returns the client URLs to give to clientv3 (store.Connect).
func (s *Server) Endpoints() []string { return []string{s.clientURL} }

// ClientPort and PeerPort report the ports the member listens on, so that a
// restart on the same Dir can keep the same endpoint.
func (s *Server) ClientPort() int { return s.cfg.ClientPort }

// PeerPort: see ClientPort.
func (s *Server) PeerPort() int { return s.cfg.PeerPort }

// Config returns the resolved configuration (defaults applied, ports chosen);
// passing it to Start again restarts the same member at the same endpoint.
func (s *Server) Config() Config { return s.cfg }

// ReadyAfter is how long Start waited for the member to become ready.
func (s *Server) ReadyAfter() time.Duration { return s.readyAfter }

// Err delivers a fatal error of the running member (for example its data
// directory became unwritable); the embedding process should Close and exit.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the member: it stops serving, closes its listeners and syncs
// its data directory. Leases are not revoked; after a restart on the same
// Dir the new leader extends every lease by its remaining TTL.
//
// etcd stops its gRPC server gracefully: Close can wait up to its request
// timeout (5 s + 2 election timeouts) for clients' open watch streams to end.
// Cancel local watches first when a quick stop matters.
func (s *Server) Close() {
	s.etcd.Close()
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("etcdserver: pick a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func isAddrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

func zapLevel(s string) (zapcore.Level, error) {
	if s == "off" {
		return zapcore.FatalLevel, nil
	}
	l, err := zapcore.ParseLevel(s)
	if err != nil {
		return 0, fmt.Errorf("etcdserver: log level %q: want debug, info, warn, error or off", s)
	}
	return l, nil
}
