package main

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/netlab"
)

// TestNetworkPingAndUDPEcho boots a guest on a TAP in a host namespace,
// bridged to a client namespace, and talks to it with ICMP echo and UDP.
func TestNetworkPingAndUDPEcho(t *testing.T) {
	lab, elf := newLab(t, 1)
	host := lab.Hosts()[0]
	ip := lab.GuestAddr(0)
	sock := filepath.Join(t.TempDir(), "api.sock")
	con := guest.NewConsole(nil)
	m := startNS(t, host, con, sock, "--name", "net1", "--kernel", elf, "--mem", "128M",
		"--tap", "gwtap0", "--mac", "52:54:00:aa:00:01", "--cmdline", "cpus=1 ip="+ip.String())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := con.WaitPrefix(ctx, 0, "READY"); err != nil {
		t.Fatal(err)
	}
	if line, err := con.WaitPrefix(ctx, 0, "NET "); err != nil || !strings.Contains(line, "52:54:00:aa:00:01") {
		t.Fatalf("guest NIC: %q %v", line, err)
	}
	if err := host.AttachTAP("gwtap0"); err != nil {
		t.Fatal(err)
	}
	ping, err := netlab.Ping(lab.Client.Name, ip, 100, 10*time.Millisecond, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ping: %v", ping)
	// The first request may wait for ARP; everything after must arrive.
	if ping.Received < ping.Sent-2 || ping.Duplicates > 0 {
		t.Errorf("ping: %v", ping)
	}
	udp, err := netlab.UDPEcho(lab.Client.Name, netip.AddrPortFrom(ip, 7), 100, 10*time.Millisecond, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("udp echo: %v", udp)
	if udp.Received < udp.Sent-1 || udp.Duplicates > 0 {
		t.Errorf("udp echo: %v", udp)
	}
	mark := con.Mark()
	if _, errOut, code := godwit(t, "console", "--api-socket", sock, "NETSTAT"); code != 0 {
		t.Fatal(errOut)
	}
	if line, err := con.WaitPrefix(ctx, mark, "NETSTAT"); err != nil || !strings.Contains(line, "icmp=") {
		t.Errorf("NETSTAT: %q %v", line, err)
	}
	out, _, _ := godwit(t, "status", "--api-socket", sock)
	if !strings.Contains(out, "guest-ip "+ip.String()) {
		t.Errorf("status does not show the guest IP learned from its ARP traffic:\n%s", out)
	}
	godwit(t, "stop", "--api-socket", sock)
	m.wait(t)
	// The TAP went away with the VMM.
	if err := exec.Command("ip", "netns", "exec", host.Name, "ip", "link", "show", "gwtap0").Run(); err == nil {
		t.Error("TAP gwtap0 left behind")
	}
}

// TestTAPNameInUse: a TAP name taken by another kind of interface is a
// clear error, and nothing is left behind.
func TestTAPNameInUse(t *testing.T) {
	lab, elf := newLab(t, 1)
	host := lab.Hosts()[0]
	sock := filepath.Join(t.TempDir(), "api.sock")
	out, err := host.Command(godwitBin, "run", "--name", "tapbusy", "--kernel", elf, "--tap", "uplink",
		"--api-socket", sock).CombinedOutput()
	if err == nil {
		t.Fatal("VMM started on an interface that is not a TAP")
	}
	if !strings.Contains(string(out), "uplink") {
		t.Errorf("error does not name the TAP: %s", out)
	}
}
