// Package clustertest holds test helpers for the cluster packages: a real
// embedded etcd on loopback and a TCP proxy that can cut a client off, the
// way a host's link going down would.
//
// Who may import it: tests under internal/cluster only.
package clustertest

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/etcdserver"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// StartEtcd starts an embedded member in dir (t.TempDir() if empty), fast
// ticks, logs off, closed at the end of the test.
func StartEtcd(t testing.TB, dir string) *etcdserver.Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	srv, err := etcdserver.Start(context.Background(), etcdserver.Config{Dir: dir, LogLevel: "off"})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// Connect returns a client for endpoints, closed at the end of the test.
func Connect(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := store.Connect(context.Background(), store.ClientConfig{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Proxy forwards TCP connections from a loopback port to a target. Cut drops
// every connection and refuses new ones (a partition); Heal lets them in.
type Proxy struct {
	ln     net.Listener
	target string

	// mu guards the fields below.
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

// NewProxy listens on 127.0.0.1:0 and forwards to target ("host:port").
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p
}

// Endpoint is the proxy's address as an etcd endpoint URL.
func (p *Proxy) Endpoint() string { return "http://" + p.ln.Addr().String() }

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *Proxy) forward(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	c.Close()
	u.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

// Cut closes every forwarded connection and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Heal accepts connections again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}
