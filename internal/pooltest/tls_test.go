package pooltest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/netlab"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/godwit-vmm/godwit/internal/testenv"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// TestPoolAttacker: host c sits on the pool network with no agent and
// tries what an attacker there would. With no certificate, or another
// CA's, it reaches neither etcd, the controller nor an agent; with a valid
// user certificate etcd's access control refuses it; with a valid
// certificate of host c it cannot write vm1's owner key, migration record
// or spec, nor get b to receive vm1 for it. Then, while the VM
// migrates from a to b, it holds connections open on every migration
// port of b (a stall) and offers each a valid certificate of host c (a
// hijack): every handshake is refused, and the real migration commits
// with the guest's memory verified on b. Last, b's certificate is rotated
// in place: its agent presents the new one, and the VM migrates back to a.
func TestPoolAttacker(t *testing.T) {
	l := newLab(t, 3)
	for _, h := range []string{"a", "b"} {
		l.startAgent(h, agentOpts{})
	}
	l.createVM("vm1", "a", "128M")
	l.waitRunning("vm1", "a")
	l.typeLine("a", "vm1", "W 32 8 1000", "ACK W", 20*time.Second)

	attacker := l.hosts["c"].Name
	hostC := l.pki.Credential(t, pki.RoleHost, "c", l.hosts["c"].MigAddr.String())
	user := l.pki.Credential(t, pki.RoleUser, "mallory")
	// Another CA's certificate, offered without checking the server, so
	// that the refusal is the server's.
	fdir := testenv.NewPoolPKI(t, "godwit").Issue(t, pki.RoleController, "c1")
	fkp, err := tls.LoadX509KeyPair(fdir+"/"+pki.CertFile, fdir+"/"+pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	foreign := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{fkp}}
	bAddr := l.hosts["b"].MigAddr.String()
	ctl := l.ctlIP + ":7700"

	// dial opens a TCP connection from the attacker's namespace.
	dial := func(addr string) (net.Conn, error) {
		var c net.Conn
		err := netlab.InNamespace(attacker, func() error {
			var err error
			c, err = net.DialTimeout("tcp", addr, time.Second)
			return err
		})
		return c, err
	}
	handshake := func(addr string, cfg *tls.Config) error {
		c, err := dial(addr)
		if err != nil {
			return fmt.Errorf("no TCP connection: %w", err)
		}
		defer c.Close()
		tc := tls.Client(c, cfg)
		tc.SetDeadline(time.Now().Add(3 * time.Second))
		if err := tc.Handshake(); err != nil {
			return err
		}
		// TLS 1.3: a refused client certificate shows on the first read.
		_, err = tc.Write([]byte("GET /v1/hosts HTTP/1.1\r\nHost: x\r\n\r\n"))
		if err == nil {
			var b [64]byte
			var n int
			n, err = tc.Read(b[:])
			if err == nil && n > 0 {
				return fmt.Errorf("answered: %q", b[:n])
			}
		}
		return err
	}
	for _, c := range []struct {
		what, addr string
		cfg        *tls.Config
	}{
		{"etcd without a certificate", l.ctlIP + ":2379", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}},
		{"etcd with another CA's certificate", l.ctlIP + ":2379", foreign},
		{"the controller without a certificate", ctl, &tls.Config{InsecureSkipVerify: true}},
		{"the controller with another CA's certificate", ctl, foreign},
		{"the controller with a host's certificate", ctl, hostC.ClientConfig("", nil)},
		{"agent b without a certificate", bAddr + ":7480", &tls.Config{InsecureSkipVerify: true}},
		{"agent b with another CA's certificate", bAddr + ":7480", foreign},
	} {
		err := handshake(c.addr, c.cfg)
		if err == nil || strings.Contains(err.Error(), "no TCP connection") {
			t.Errorf("%s: %v, want refused at the TLS handshake", c.what, err)
		} else {
			t.Logf("%s: refused (%v)", c.what, err)
		}
	}
	// Plaintext to the controller: no answer that serves the API.
	if c, err := dial(ctl); err == nil {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(c, "GET /v1/hosts HTTP/1.0\r\n\r\n")
		b, _ := io.ReadAll(c)
		c.Close()
		if strings.Contains(string(b), "200 OK") {
			t.Errorf("the controller answered plaintext: %q", b)
		}
	}
	// A valid user certificate passes TLS, and etcd's access control
	// refuses it: users have no etcd role.
	read := func(cli *clientv3.Client, ctx context.Context) error {
		_, err := cli.Get(ctx, store.Prefix)
		return err
	}
	if err := attackerEtcd(attacker, l.etcdURL(), user.ClientConfig("", nil), read); err == nil {
		t.Error("a user's certificate read etcd")
	} else {
		t.Logf("etcd with a user's certificate: %v", err)
	}
	// A valid certificate of another host (c) cannot take vm1 over: etcd
	// refuses its writes to vm1's owner key and migration record, and
	// b's agent refuses to receive vm1 for it.
	waitFor(t, 10*time.Second, "host c's etcd user", func() bool {
		_, err := l.st.Client().UserGet(context.Background(), store.HostRole("c"))
		return err == nil
	})
	for _, key := range []string{store.OwnerKey("vm1"), store.MigrationKey("vm1"), store.VMSpecKey("vm1")} {
		put := func(cli *clientv3.Client, ctx context.Context) error {
			_, err := cli.Put(ctx, key, `{"host":"c"}`)
			return err
		}
		if err := attackerEtcd(attacker, l.etcdURL(), hostC.ClientConfig("", nil), put); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("host c writes %s: %v, want permission denied", key, err)
		}
	}
	if err := attackerEtcd(attacker, l.etcdURL(), hostC.ClientConfig("", nil), read); err != nil {
		t.Errorf("host c cannot even read the pool (the refusals above prove nothing): %v", err)
	}
	body := `{"vm":"vm1","src":"c","migration_id":"m-fake","owner_rev":1}`
	if c, err := dial(bAddr + ":7480"); err == nil {
		tc := tls.Client(c, hostC.ClientConfig("", pki.AllowPeer(pki.RoleHost, "b")))
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(tc, "POST /v1/incoming HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		reply, _ := io.ReadAll(tc)
		tc.Close()
		if first, _, _ := strings.Cut(string(reply), "\r\n"); !strings.Contains(first, " 409 ") && !strings.Contains(first, " 403 ") {
			t.Errorf("b's agent, asked by host c for an incoming vm1: %q, want 409 or 403", first)
		} else {
			t.Logf("b's agent to host c asking for vm1: %s", first)
		}
	}

	// The migration, under a stall and a hijack attempt on every port.
	var (
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		held      []net.Conn
		reached   atomic.Int64 // TLS handshakes that reached a listener
		hijacked  atomic.Int64 // ... and were accepted
		firstErrs sync.Map
	)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for port := 4400; port <= 4440; port++ {
				c, err := dial(fmt.Sprintf("%s:%d", bAddr, port))
				if err != nil {
					continue
				}
				held = append(held, c) // say nothing: a stall
				wg.Go(func() {
					c2, err := dial(fmt.Sprintf("%s:%d", bAddr, port))
					if err != nil {
						return
					}
					defer c2.Close()
					reached.Add(1)
					tc := tls.Client(c2, hostC.ClientConfig("", nil))
					tc.SetDeadline(time.Now().Add(3 * time.Second))
					err = tc.Handshake()
					if err == nil {
						// A refused client certificate shows on the first read.
						_, err = tc.Read(make([]byte, 1))
						if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
							err = nil
						}
					}
					if err == nil {
						hijacked.Add(1)
					} else {
						firstErrs.LoadOrStore(port, err.Error())
					}
				})
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	out := l.mustCLI("vm", "migrate", "vm1", "--to", "b", "--wait")
	close(stop)
	wg.Wait()
	for _, c := range held {
		c.Close()
	}
	if !strings.Contains(out, "now runs on b") {
		t.Fatalf("the real migration under attack: %s", out)
	}
	l.waitRunning("vm1", "b")
	verify := l.typeLine("b", "vm1", "V", "VERIFY ", 30*time.Second)
	if f := strings.Fields(verify); len(f) != 3 || f[1] != "OK" || f[2] == "0" {
		t.Errorf("verify on b after the migration under attack: %q", verify)
	}
	firstErrs.Range(func(k, v any) bool {
		t.Logf("port %v refused host c: %v", k, v)
		return false
	})
	t.Logf("attacker: %d connections held silent, %d TLS attempts with host c's certificate reached a listener, %d accepted; guest %s",
		len(held), reached.Load(), hijacked.Load(), verify)
	if reached.Load() == 0 {
		t.Error("the attacker never reached the incoming VMM's port: the test proves nothing")
	}
	if hijacked.Load() != 0 {
		t.Errorf("%d handshakes with another host's certificate were accepted by the incoming VMM", hijacked.Load())
	}
	if o, _, err := l.owner("vm1"); err != nil || o.Host != "b" {
		t.Errorf("owner after the migration: %+v %v", o, err)
	}

	// Rotation without stopping anything: b's certificate is issued
	// again into its credential directory; b's agent presents the new
	// one from its next handshake, and vm1 migrates back to a.
	serial := func() string {
		c, err := dial(bAddr + ":7480")
		if err != nil {
			return "no connection: " + err.Error()
		}
		defer c.Close()
		tc := tls.Client(c, user.ClientConfig("", pki.AllowPeer(pki.RoleHost, "b")))
		tc.SetDeadline(time.Now().Add(3 * time.Second))
		if err := tc.Handshake(); err != nil {
			return "handshake: " + err.Error()
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	nb, err := l.pki.CA.Issue(pki.RoleHost, "b", pki.IssueOptions{IPs: []net.IP{net.ParseIP(bAddr)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := nb.Write(l.creds["b"]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "b's agent to present its new certificate", func() bool {
		s := serial()
		return s != before && !strings.Contains(s, " ")
	})
	out = l.mustCLI("vm", "migrate", "vm1", "--to", "a", "--wait")
	if !strings.Contains(out, "now runs on a") {
		t.Fatalf("migration back to a after b's rotation: %s", out)
	}
	l.waitRunning("vm1", "a")
	if v := l.typeLine("a", "vm1", "V", "VERIFY ", 30*time.Second); !strings.HasPrefix(v, "VERIFY OK") {
		t.Errorf("verify on a after the rotation: %q", v)
	}
	t.Logf("b rotated (serial %s -> %s) with vm1 running; vm1 migrated back to a", before, serial())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// attackerEtcd runs op on an etcd client dialling from namespace ns.
func attackerEtcd(ns, endpoint string, cfg *tls.Config, op func(*clientv3.Client, context.Context) error) error {
	dial := nsDialer(ns)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: cfg, DialTimeout: 3 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)}, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return op(cli, ctx)
}
