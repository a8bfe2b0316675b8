package etcdserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/etcdserver"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  etcdserver.Config
		want string // substring of the error; "" = valid
	}{
		{"ok", etcdserver.Config{Dir: "/tmp/x"}, ""},
		{"no dir", etcdserver.Config{}, "Dir is required"},
		{"bad host", etcdserver.Config{Dir: "/x", Host: "localhost"}, "not an IP"},
		{"same ports", etcdserver.Config{Dir: "/x", ClientPort: 2379, PeerPort: 2379}, "both 2379"},
		{"slow election", etcdserver.Config{Dir: "/x", TickMs: 100, ElectionMs: 200}, "at least 5 ticks"},
		{"bad compaction", etcdserver.Config{Dir: "/x", CompactionMode: "weekly"}, "compaction mode"},
		{"no compaction", etcdserver.Config{Dir: "/x", CompactionRetention: "0"}, "non-zero"},
		{"bad level", etcdserver.Config{Dir: "/x", LogLevel: "loud"}, "log level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestStartRestart starts a member, writes a key, stops it, starts it again
// on the same data dir and port, and reads the key back.
func TestStartRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	srv, err := etcdserver.Start(ctx, etcdserver.Config{Dir: dir, LogLevel: "off"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first start: ready after %s at %v", srv.ReadyAfter(), srv.Endpoints())
	if !strings.HasPrefix(srv.Endpoints()[0], "http://127.0.0.1:") {
		t.Fatalf("endpoint %q not on loopback", srv.Endpoints()[0])
	}
	put := func(eps []string, k, v string) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := cli.Put(c, k, v); err != nil {
			t.Fatal(err)
		}
	}
	get := func(eps []string, k string) string {
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := cli.Get(c, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	put(srv.Endpoints(), "k", "v1")
	cfg := srv.Config()
	began := time.Now()
	srv.Close()
	closed := time.Since(began)

	srv2, err := etcdserver.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	t.Logf("close took %s, restart ready after %s", closed, srv2.ReadyAfter())
	if srv2.Endpoints()[0] != srv.Endpoints()[0] {
		t.Fatalf("restart moved endpoint %v -> %v", srv.Endpoints(), srv2.Endpoints())
	}
	if got := get(srv2.Endpoints(), "k"); got != "v1" {
		t.Fatalf("after restart k = %q, want v1", got)
	}
}

// TestStartBusyPort: a fixed port that is taken fails with a clear error.
func TestStartBusyPort(t *testing.T) {
	srv, err := etcdserver.Start(context.Background(), etcdserver.Config{Dir: t.TempDir(), LogLevel: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, err = etcdserver.Start(context.Background(), etcdserver.Config{Dir: t.TempDir(), LogLevel: "off", ClientPort: srv.ClientPort()})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("second member on port %d: err = %v, want address already in use", srv.ClientPort(), err)
	}
}
