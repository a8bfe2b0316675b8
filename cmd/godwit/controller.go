package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/etcdserver"
	"github.com/godwit-vmm/godwit/internal/controller"
)

const controllerUsage = `godwit controller: run the pool's controller (placement, desired state, migrations)

Usage:
  godwit controller --id ID --pki DIR [--listen 127.0.0.1:7700] [--pool godwit]
        [--data-dir DIR --etcd-client-port 2379 --etcd-peer-port 2380 --etcd-host 127.0.0.1]
        [--etcd-endpoints https://E1:2379,https://E2:2379]
        [--balance-level 0-5 --balance-every 60s] [--ha-force]

By default it starts an embedded single-member etcd with its data in --data-dir;
--etcd-endpoints uses an external etcd cluster instead. Several controllers may run
against one etcd: one leads, the others serve reads and name the leader.

--pki is the pool's CA directory (godwit pki init): the controller takes its own
certificate from it and serves its API and etcd over mutual TLS only.

`

// controllerCmd runs `godwit controller` until SIGINT/SIGTERM.
func controllerCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, controllerUsage); fs.PrintDefaults() }
	host, _ := os.Hostname()
	id := fs.String("id", strings.ToLower(host), "this controller's name among its peers")
	pool := fs.String("pool", controller.DefaultPool, "the pool's name; an etcd that holds another pool is refused")
	listen := fs.String("listen", controller.DefaultListen, "address of the HTTP API")
	advertise := fs.String("advertise-url", "", "URL peers and clients use for this API (default http://LISTEN)")
	pkiDir := fs.String("pki", "", "the pool's CA directory, made by godwit pki init (required)")
	endpoints := fs.String("etcd-endpoints", "", "external etcd cluster, comma-separated; empty: embedded etcd")
	dataDir := fs.String("data-dir", "/var/lib/godwit/etcd", "embedded etcd: data directory")
	etcdHost := fs.String("etcd-host", "127.0.0.1", "embedded etcd: address its client and peer listeners bind")
	clientPort := fs.Int("etcd-client-port", 2379, "embedded etcd: client port (agents connect here)")
	peerPort := fs.Int("etcd-peer-port", 2380, "embedded etcd: peer port")
	sessionTTL := fs.Duration("session-ttl", 10*time.Second, "leader session TTL: how long a dead leader holds the pool")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	balanceLevel := fs.Int("balance-level", 0, "automatic load balancing: 0 off (default), 1 only mandatory moves, 2-5 thresholds 0.4/0.3/0.2/0.1")
	balanceEvery := fs.Duration("balance-every", controller.DefaultBalanceEvery, "period of the automatic balancing rounds")
	haForce := fs.Bool("ha-force", false, "turn HA restart on with fewer than 3 etcd members (tests; losing the member stops every HA VM)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("controller: unexpected argument %q", fs.Arg(0))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("controller: --log-level %q: want debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg := controller.Config{
		ID: *id, Pool: *pool, Listen: *listen, AdvertiseURL: *advertise, PKIDir: *pkiDir,
		SessionTTL: *sessionTTL, Logger: log, BalanceLevel: *balanceLevel, BalanceEvery: *balanceEvery, HAForce: *haForce,
		Etcd: etcdserver.Config{Dir: *dataDir, Host: *etcdHost, ClientPort: *clientPort, PeerPort: *peerPort},
	}
	if *endpoints != "" {
		for _, e := range strings.Split(*endpoints, ",") {
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
	fmt.Fprintf(stdout, "controller %s of pool %s: API %s, etcd %s\n", *id, *pool, c.URL(), strings.Join(c.Endpoints(), ","))
	select {
	case <-ctx.Done():
	case err = <-c.EtcdErr():
		err = fmt.Errorf("controller: embedded etcd failed: %w", err)
	}
	c.Close()
	return err
}
