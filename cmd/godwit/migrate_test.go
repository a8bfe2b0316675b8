package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/netlab"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

// nsVMM is a godwit process inside a host namespace of a netlab.
type nsVMM struct {
	cmd    *exec.Cmd
	sock   string
	stderr *testenv.SyncBuffer
	done   chan error
}

func startNS(t *testing.T, h *netlab.Host, con *guest.Console, sock string, args ...string) *nsVMM {
	t.Helper()
	m := &nsVMM{sock: sock, stderr: &testenv.SyncBuffer{}, done: make(chan error, 1)}
	m.cmd = h.Command(godwitBin, append([]string{"run", "--api-socket", sock, "--log-level", "warn"}, args...)...)
	m.cmd.Stdout, m.cmd.Stderr = con, m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.done <- m.cmd.Wait() }()
	t.Cleanup(func() {
		if m.cmd.ProcessState == nil {
			m.cmd.Process.Kill()
			<-m.done
		}
		if t.Failed() {
			t.Logf("vmm %s stderr: %s", sock, m.stderr.String())
		}
	})
	return m
}

// newLab checks what namespace tests need and builds a lab with n hosts,
// removed when the test ends.
func newLab(t *testing.T, n int) (*netlab.Lab, string) {
	t.Helper()
	testenv.RequireVM(t)
	testenv.RequireNetns(t)
	elf := testenv.GuestELF(t)
	lab, err := netlab.New("", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	return lab, elf
}

// wait waits for the VMM process to exit.
func (m *nsVMM) wait(t *testing.T) {
	t.Helper()
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		t.Fatal("VMM did not exit")
	}
}

func (m *nsVMM) waitAPI(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := api.NewClient(m.sock).Status(ctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("VMM API %s did not come up: %s", m.sock, m.stderr.String())
}

// TestMigrateBetweenNamespaces moves the guest from host A to host B and
// back over real TCP between two network namespaces, with a NIC on each
// host's bridge, while a client namespace pings it and streams UDP to its
// echo port. The guest's heartbeats must continue in sequence, its memory
// must verify, the client must lose at most a handful of 10 ms probes, and
// the shared bridge must point the guest's MAC at the new host at once.
func TestMigrateBetweenNamespaces(t *testing.T) {
	lab, elf := newLab(t, 2)
	hosts := lab.Hosts()
	ip := lab.GuestAddr(0)
	const mac = "52:54:00:ab:cd:01"
	dir := t.TempDir()
	// Mutual TLS, each host a certificate of one CA naming its address.
	ca := testenv.NewPoolPKI(t, "godwit")
	tlsDirs := map[*netlab.Host]string{}
	for i, h := range hosts {
		tlsDirs[h] = ca.Issue(t, pki.RoleHost, fmt.Sprintf("h%d", i), h.MigAddr.String())
	}
	con := guest.NewConsole(nil)
	src := startNS(t, hosts[0], con, filepath.Join(dir, "a.sock"), "--name", "mig", "--kernel", elf,
		"--mem", "512M", "--cpus", "2", "--cmdline", "cpus=2 ip="+ip.String(),
		"--tap", "gwmig0", "--bridge", hosts[0].Bridge, "--mac", mac, "--migration-tls-dir", tlsDirs[hosts[0]])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := con.WaitPrefix(ctx, 0, "READY"); err != nil {
		t.Fatal(err)
	}
	mark := con.Mark()
	api.NewClient(src.sock).Console(ctx, []byte("W 128 32 0\n"))
	if _, err := con.WaitPrefix(ctx, mark, "ACK W"); err != nil {
		t.Fatal(err)
	}
	// Learn the path to the guest before measuring.
	if r, err := netlab.Ping(lab.Client.Name, ip, 5, 10*time.Millisecond, 200*time.Millisecond); err != nil || r.Received == 0 {
		t.Fatalf("guest unreachable before migrating: %v %v", r, err)
	}

	for i, dst := range []*netlab.Host{hosts[1], hosts[0]} {
		addr := netip.AddrPortFrom(dst.MigAddr, uint16(4500+i))
		d := startNS(t, dst, con, filepath.Join(dir, fmt.Sprintf("d%d.sock", i)), "--name", "mig",
			"--incoming", "tcp:"+addr.String(), "--tap", "gwmig0", "--bridge", dst.Bridge, "--migration-tls-dir", tlsDirs[dst])
		d.waitAPI(t)
		// The probes run 5 s, which must cover the whole migration
		// (checked below), switchover included.
		const probes = 500
		pings := make(chan netlab.ProbeResult, 1)
		udps := make(chan netlab.ProbeResult, 1)
		probing := time.Now()
		go func() {
			r, _ := netlab.Ping(lab.Client.Name, ip, probes, 10*time.Millisecond, 300*time.Millisecond)
			pings <- r
		}()
		go func() {
			r, _ := netlab.UDPEcho(lab.Client.Name, netip.AddrPortFrom(ip, 7), probes, 10*time.Millisecond, 300*time.Millisecond)
			udps <- r
		}()
		time.Sleep(300 * time.Millisecond)
		announced := con.Mark()
		out, errOut, code := godwit(t, "migrate", "--api-socket", src.sock, "--to", addr.String(), "--verify", "--json")
		if code != 0 {
			t.Fatalf("migrate %s -> %s: %s %s", src.sock, addr, out, errOut)
		}
		if d := time.Since(probing); d > probes*10*time.Millisecond-500*time.Millisecond {
			t.Errorf("the migration returned %v after the probes began: they ended before the switchover and measured nothing", d)
		}
		// Right after the handover the shared bridge forwards the
		// guest's MAC to the destination host's port.
		fdb, _ := exec.Command("ip", "netns", "exec", lab.CoreNS(), "bridge", "fdb", "show", "br", "br0").CombinedOutput()
		wantPort := lab.Prefix + dst.Name[len(dst.Name)-1:]
		var port string
		for _, l := range strings.Split(string(fdb), "\n") {
			if strings.HasPrefix(l, mac+" dev ") {
				port = strings.Fields(l)[2]
			}
		}
		if port != wantPort {
			t.Errorf("after migrating to %s the bridge sends %s to port %q, want %q", dst.Name, mac, port, wantPort)
		}
		var rep api.MigrateReply
		json.Unmarshal([]byte(out), &rep)
		p, u := <-pings, <-udps
		t.Logf("%s -> %s: total %.0f ms, downtime %.1f ms, %d packets handed over; ping %v; udp %v", src.sock, addr, rep.Report.TotalMs,
			rep.Report.DowntimeMs, rep.Report.RXHandedOver, p, u)
		// The probes that reach the paused source travel with the VM:
		// only those in flight while the switches learn the new port
		// may be lost.
		if p.Lost > 1 || u.Lost > 1 || u.Duplicates > 0 || p.Duplicates > 0 {
			t.Errorf("client lost more than one reply across the migration: ping %v, udp %v", p, u)
		}
		// The guest announced itself from the destination, asked by
		// VIRTIO_NET_F_GUEST_ANNOUNCE.
		actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := con.WaitPrefix(actx, announced, "NET announce "); err != nil {
			t.Errorf("the guest did not announce itself after the move: %v", err)
		}
		acancel()
		src.wait(t)
		src = d
	}
	if g := guest.CheckHeartbeats(con.Heartbeats()); len(g.SeqErrors) > 0 {
		t.Errorf("heartbeats: %v", g.SeqErrors)
	}
	mark = con.Mark()
	api.NewClient(src.sock).Console(ctx, []byte("V\n"))
	if line, err := con.WaitPrefix(ctx, mark, "VERIFY "); err != nil || !strings.HasPrefix(line, "VERIFY OK") {
		t.Errorf("guest verify after two migrations: %q %v", line, err)
	}
}

// TestMigrateRefusedWithoutBridge: a destination on another network (its
// bridge is missing) refuses before anything moves, and the source runs on.
func TestMigrateRefusedWithoutBridge(t *testing.T) {
	lab, elf := newLab(t, 2)
	hosts := lab.Hosts()
	dir := t.TempDir()
	con := guest.NewConsole(nil)
	src := startNS(t, hosts[0], con, filepath.Join(dir, "a.sock"), "--name", "nobr", "--kernel", elf,
		"--mem", "128M", "--tap", "gwnb0", "--bridge", hosts[0].Bridge)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := con.WaitPrefix(ctx, 0, "READY"); err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(hosts[1].MigAddr, 4600)
	dcon := guest.NewConsole(nil)
	// Without TLS an incoming VMM off loopback needs --insecure-migration.
	refused := startNS(t, hosts[1], dcon, filepath.Join(dir, "b0.sock"), "--name", "nobr",
		"--incoming", "tcp:"+addr.String(), "--tap", "gwnb0", "--bridge", "br-missing")
	refused.wait(t)
	if msg := refused.stderr.String(); !strings.Contains(msg, "--insecure-migration") || strings.Count(strings.TrimSpace(msg), "\n") > 1 {
		t.Errorf("plaintext --incoming on %s: %q, want one line naming --insecure-migration and the hint", addr, msg)
	}
	d := startNS(t, hosts[1], dcon, filepath.Join(dir, "b.sock"), "--name", "nobr", "--insecure-migration",
		"--incoming", "tcp:"+addr.String(), "--tap", "gwnb0", "--bridge", "br-missing")
	d.waitAPI(t)
	if !strings.Contains(d.stderr.String(), "WARNING: --insecure-migration") {
		t.Errorf("--insecure-migration said nothing: %q", d.stderr.String())
	}
	_, errOut, code := godwit(t, "migrate", "--api-socket", src.sock, "--to", addr.String())
	if code == 0 || !strings.Contains(errOut, "refused") || !strings.Contains(errOut, "br-missing") {
		t.Fatalf("migration to a host without the bridge: code %d, %s", code, errOut)
	}
	n := len(con.Heartbeats())
	if err := con.WaitHeartbeats(ctx, n+20); err != nil {
		t.Fatalf("source stopped after the refusal: %v", err)
	}
	// A refusal must not pause the guest; 500 ms leaves room for a loaded
	// machine's scheduling, far below a pause and resume.
	if g := guest.CheckHeartbeats(con.Heartbeats()); len(g.SeqErrors) > 0 || g.LongestGap > 500*time.Millisecond {
		t.Errorf("source disturbed by a refused migration: %v, gap %v", g.SeqErrors, g.LongestGap)
	}
	if len(dcon.Lines()) != 0 {
		t.Error("the destination printed guest output: it ran the VM")
	}
}

// TestMissingBridge: a VM asked to join a bridge that does not exist does
// not start, and says which bridge.
func TestMissingBridge(t *testing.T) {
	lab, elf := newLab(t, 1)
	out, err := lab.Hosts()[0].Command(godwitBin, "run", "--name", "mb", "--kernel", elf, "--tap", "gwmb0",
		"--bridge", "nosuchbr", "--api-socket", filepath.Join(t.TempDir(), "s")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bridge nosuchbr does not exist") {
		t.Fatalf("missing bridge: %v %s", err, out)
	}
	if exec.Command("ip", "netns", "exec", lab.Hosts()[0].Name, "ip", "link", "show", "gwmb0").Run() == nil {
		t.Error("TAP left behind")
	}
}

// TestIncomingListensBeforeAPI: the host agent sends the source to an
// incoming VMM's port as soon as the VMM's API answers, so the port must
// accept by then. (Listening after the API came up lost pool migrations to
// "connection refused".)
func TestIncomingListensBeforeAPI(t *testing.T) {
	for i := range 5 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		sock := filepath.Join(t.TempDir(), "in.sock")
		cmd := exec.Command(godwitBin, "run", "--name", fmt.Sprintf("early%d", i), "--api-socket", sock,
			"--log-level", "warn", "--console", "none", "--incoming", "tcp:"+addr)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		for {
			if _, err := api.NewClient(sock).Status(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("the incoming VMM's API never answered")
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Errorf("run %d: the API answers but the migration port does not: %v", i, err)
		} else {
			c.Close()
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
}
