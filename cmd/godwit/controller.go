package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit-vmm/godwit/internal/cluster/etcdserver"
	"github.com/godwit-vmm/godwit/internal/controller"
)

// controllerFlags are the flags of `godwit controller`.
type controllerFlags struct {
	id, pool, listen, advertise, pkiDir, endpoints string
	dataDir, etcdHost, logLevel                    string
	clientPort, peerPort, balanceLevel             int
	sessionTTL, balanceEvery                       time.Duration
	haForce                                        bool
}

// controllerCommand is `godwit controller`: it runs until SIGINT or
// SIGTERM.
func controllerCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &controllerFlags{}
	c := &cobra.Command{
		Use:   "controller --pki DIR [flags]",
		Short: "Run the pool's controller (placement, desired state, migrations)",
		Long: `Run the pool's controller: placement, desired state, migrations, drains,
load balancing and HA restarts. By default it starts an embedded
single-member etcd with its data in --data-dir; --etcd-endpoints uses an
external etcd cluster instead. Several controllers may run against one
etcd: one leads, the others serve reads and name the leader. --pki is the
pool's CA directory (godwit pki init): the controller takes its own
certificate from it and serves its API and etcd over mutual TLS only.`,
		Example: `  godwit controller --id c1 --pki /etc/godwit/pki --listen 10.0.0.1:7700 --etcd-host 10.0.0.1
  godwit controller --id c2 --pki /etc/godwit/pki --etcd-endpoints https://10.0.0.1:2379`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return f.run(stdout, stderr) },
	}
	host, _ := os.Hostname()
	fs := c.Flags()
	fs.StringVar(&f.id, "id", strings.ToLower(host), "this controller's name among its peers")
	fs.StringVar(&f.pool, "pool", controller.DefaultPool, "the pool's name; an etcd that holds another pool is refused")
	fs.StringVar(&f.listen, "listen", controller.DefaultListen, "address of the HTTPS API")
	fs.StringVar(&f.advertise, "advertise-url", "", "URL peers and clients use for this API (default https://LISTEN)")
	fs.StringVar(&f.pkiDir, "pki", "", "the pool's CA directory, made by godwit pki init (required)")
	fs.StringVar(&f.endpoints, "etcd-endpoints", "", "external etcd cluster, comma-separated; empty: embedded etcd")
	fs.StringVar(&f.dataDir, "data-dir", "/var/lib/godwit/etcd", "embedded etcd: data directory")
	fs.StringVar(&f.etcdHost, "etcd-host", "127.0.0.1", "embedded etcd: address its client and peer listeners bind")
	fs.IntVar(&f.clientPort, "etcd-client-port", 2379, "embedded etcd: client port (agents connect here)")
	fs.IntVar(&f.peerPort, "etcd-peer-port", 2380, "embedded etcd: peer port")
	fs.DurationVar(&f.sessionTTL, "session-ttl", 10*time.Second, "leader session TTL: how long a dead leader holds the pool")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.IntVar(&f.balanceLevel, "balance-level", 0, "automatic load balancing: 0 off (default), 1 only mandatory moves, 2-5 thresholds 0.4/0.3/0.2/0.1")
	fs.DurationVar(&f.balanceEvery, "balance-every", controller.DefaultBalanceEvery, "period of the automatic balancing rounds")
	fs.BoolVar(&f.haForce, "ha-force", false, "turn HA restart on with fewer than 3 etcd members (tests; losing the member stops every HA VM)")
	return c
}

func (f *controllerFlags) run(stdout, stderr io.Writer) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg := controller.Config{
		ID: f.id, Pool: f.pool, Listen: f.listen, AdvertiseURL: f.advertise, PKIDir: f.pkiDir,
		SessionTTL: f.sessionTTL, Logger: log, BalanceLevel: f.balanceLevel, BalanceEvery: f.balanceEvery, HAForce: f.haForce,
		Etcd: etcdserver.Config{Dir: f.dataDir, Host: f.etcdHost, ClientPort: f.clientPort, PeerPort: f.peerPort},
	}
	if f.endpoints != "" {
		for _, e := range strings.Split(f.endpoints, ",") {
			if e = strings.TrimSpace(e); e != "" {
				cfg.Endpoints = append(cfg.Endpoints, e)
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := controller.Start(startCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "controller %s of pool %s: API %s, etcd %s\n", f.id, f.pool, c.URL(), strings.Join(c.Endpoints(), ","))
	select {
	case <-ctx.Done():
	case err = <-c.EtcdErr():
		err = fmt.Errorf("controller: embedded etcd failed: %w", err)
	}
	c.Close()
	return err
}
