package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
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

// linuxBoot is how long the Linux guest may take to reach READY on the
// software CPU of a loaded 2-core machine.
const linuxBoot = 10 * time.Minute

// send writes a command line to the guest's console through the VMM's API.
func send(t *testing.T, sock, line string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := api.NewClient(sock).Console(ctx, []byte(line+"\n")); err != nil {
		t.Fatalf("console %q: %v", line, err)
	}
}

// expect sends a command and waits for the reply line starting with
// prefix; it fails t unless that line starts with ok.
func expect(t *testing.T, con *guest.Console, sock, line, prefix, ok string, wait time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	mark := con.Mark()
	send(t, sock, line)
	got, err := con.WaitPrefix(ctx, mark, prefix)
	if err != nil {
		t.Fatalf("%q: no %q reply: %v", line, prefix, err)
	}
	if !strings.HasPrefix(got, ok) {
		t.Fatalf("%q: got %q, want %q", line, got, ok)
	}
	return got
}

// TestLinuxGuestMigrates boots Debian's kernel with the project's
// initramfs on 2 vCPUs, with virtio-net on each host's bridge and a
// virtio-blk disk both hosts share, and live-migrates it A→B while it
// dirties memory and a client pings it every 10 ms. The workload's
// heartbeats must continue in sequence, its memory must verify in the
// guest, the blocks written before the move must read back after it, the
// client may lose at most one reply, the guest must reboot on its new
// host, and poweroff must end the VM.
func TestLinuxGuestMigrates(t *testing.T) {
	lab, _ := newLab(t, 2)
	kernel, initrd := testenv.LinuxGuest(t)
	hosts := lab.Hosts()
	ip := lab.GuestAddr(0)
	const mac = "52:54:00:ab:cd:11"
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := testenv.NewPoolPKI(t, "godwit")
	tlsDirs := map[*netlab.Host]string{}
	for i, h := range hosts {
		tlsDirs[h] = ca.Issue(t, pki.RoleHost, fmt.Sprintf("h%d", i), h.MigAddr.String())
	}
	cmdline := "console=ttyS0 nokaslr godwit.ip=" + ip.String()
	con := guest.NewConsole(nil)
	start := time.Now()
	src := startNS(t, hosts[0], con, filepath.Join(dir, "a.sock"), "--name", "linux", "--kernel", kernel, "--initrd", initrd,
		"--mem", "512M", "--cpus", "2", "--cmdline", cmdline,
		"--tap", "gwlin0", "--bridge", hosts[0].Bridge, "--mac", mac, "--disk", disk, "--migration-tls-dir", tlsDirs[hosts[0]])
	ctx, cancel := context.WithTimeout(context.Background(), linuxBoot)
	defer cancel()
	if _, err := con.WaitPrefix(ctx, 0, "READY"); err != nil {
		t.Fatalf("Linux did not reach READY in %v: %v\nconsole:\n%s", linuxBoot, err, tail(con, 40))
	}
	t.Logf("Linux reached READY in %v", time.Since(start).Round(time.Millisecond))
	for _, want := range []string{"GODWIT-GUEST v1 cpus=2 ", "NET mac=" + mac, "BLK capacity=32768"} {
		if !hasLine(con, want) {
			t.Errorf("no boot line starting %q:\n%s", want, tail(con, 40))
		}
	}
	expect(t, con, src.sock, "BLKW 8 64 42", "BLKW ", "BLKW OK 8 64 ", time.Minute)
	expect(t, con, src.sock, "W 64 64 0", "ACK W", "ACK W 64 64 0", time.Minute)
	if r, err := netlab.Ping(lab.Client.Name, ip, 5, 10*time.Millisecond, time.Second); err != nil || r.Received == 0 {
		t.Fatalf("guest unreachable before migrating: %v %v", r, err)
	}

	dst := hosts[1]
	addr := netip.AddrPortFrom(dst.MigAddr, 4600)
	// The destination knows what the VM boots, should the guest reboot
	// there.
	d := startNS(t, dst, con, filepath.Join(dir, "b.sock"), "--name", "linux",
		"--incoming", "tcp:"+addr.String(), "--tap", "gwlin0", "--bridge", dst.Bridge, "--disk", disk,
		"--migration-tls-dir", tlsDirs[dst], "--kernel", kernel, "--initrd", initrd, "--cmdline", cmdline)
	d.waitAPI(t)
	const probes = 600 // 6 s: the whole migration, checked below
	pings := make(chan netlab.ProbeResult, 1)
	probing := time.Now()
	go func() {
		r, _ := netlab.Ping(lab.Client.Name, ip, probes, 10*time.Millisecond, time.Second)
		pings <- r
	}()
	time.Sleep(500 * time.Millisecond)
	out, errOut, code := godwit(t, "migrate", "--api-socket", src.sock, "--to", addr.String(), "--verify", "--json")
	if code != 0 {
		t.Fatalf("migrate: %s %s", out, errOut)
	}
	if d := time.Since(probing); d > probes*10*time.Millisecond-500*time.Millisecond {
		t.Errorf("the migration returned %v after the pings began: they ended before the switchover and measured nothing", d)
	}
	src.wait(t)
	var rep api.MigrateReply
	json.Unmarshal([]byte(out), &rep)
	p := <-pings
	t.Logf("A -> B: total %.0f ms, downtime %.1f ms, %d bytes, %d packets handed over; ping %v", rep.Report.TotalMs, rep.Report.DowntimeMs,
		rep.Report.Bytes, rep.Report.RXHandedOver, p)
	t.Logf("switchover steps, ms: %v", rep.Report.Switchover)
	if p.Lost > 1 || p.Duplicates > 0 {
		t.Errorf("ping lost %d replies (%d duplicates) across a %.1f ms pause; at most 1 allowed", p.Lost, p.Duplicates,
			rep.Report.DowntimeMs)
	}
	if g := guest.CheckHeartbeats(con.Heartbeats()); len(g.SeqErrors) > 0 || g.Count == 0 {
		t.Errorf("heartbeats: %d, errors %v", g.Count, g.SeqErrors)
	}
	expect(t, con, d.sock, "V", "VERIFY ", "VERIFY OK", 2*time.Minute)
	expect(t, con, d.sock, "BLKV 8 64 42", "BLKV ", "BLKV OK 8 64", time.Minute)

	// The migrated guest reboots on its new host: the machine resets,
	// Linux boots again from the destination's --kernel and finds its
	// disk as it left it.
	mark := con.Mark()
	rebooting := time.Now()
	api.NewClient(d.sock).Console(context.Background(), []byte("REBOOT\n"))
	rctx, rcancel := context.WithTimeout(context.Background(), linuxBoot)
	defer rcancel()
	if _, err := con.WaitPrefix(rctx, mark, "READY"); err != nil {
		t.Fatalf("Linux did not boot again after REBOOT: %v\n%s", err, tail(con, 40))
	}
	t.Logf("Linux rebooted to READY in %v", time.Since(rebooting).Round(time.Millisecond))
	st, err := api.NewClient(d.sock).Status(context.Background())
	if err != nil || st.State != "running" || st.Reboots != 1 {
		t.Errorf("status after the reboot: %+v, %v; want running after 1 reboot", st, err)
	}
	expect(t, con, d.sock, "BLKV 8 64 42", "BLKV ", "BLKV OK 8 64", time.Minute)
	// Its network card was reset with the machine and works again.
	if r, err := netlab.Ping(lab.Client.Name, ip, 5, 10*time.Millisecond, time.Second); err != nil || r.Received == 0 {
		t.Errorf("the rebooted guest does not answer ping: %v %v", r, err)
	}
	expect(t, con, d.sock, "OFF", "POWEROFF", "POWEROFF", time.Minute)
	d.wait(t)
	if !d.cmd.ProcessState.Success() {
		t.Errorf("VMM after the guest's poweroff: %v", d.cmd.ProcessState)
	}
}

func hasLine(con *guest.Console, prefix string) bool {
	for _, l := range con.Lines() {
		if strings.HasPrefix(l.Text, prefix) {
			return true
		}
	}
	return false
}

// tail returns the last n console lines, heartbeats left out.
func tail(con *guest.Console, n int) string {
	var ls []string
	for _, l := range con.Lines() {
		if _, hb := guest.ParseHeartbeat(l.Text); !hb && !strings.HasPrefix(l.Text, "CPU ") {
			ls = append(ls, l.Text)
		}
	}
	return strings.Join(ls[max(0, len(ls)-n):], "\n") + fmt.Sprintf("\n(%d lines)", len(ls))
}
