package pooltest

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/testenv"
)

// TestPoolConsole: `godwit vm console` reads a pool VM's serial console
// through the controller and types on it; --follow keeps reading across a
// live migration, switching to the new host's log; bad requests are
// clear errors.
func TestPoolConsole(t *testing.T) {
	l := newLab(t, 2)
	for _, h := range []string{"a", "b"} {
		l.startAgent(h, agentOpts{})
	}
	l.createVM("vm1", "a", "128M")
	l.waitRunning("vm1", "a")

	out := l.mustCLI("vm", "console", "vm1", "--tail", "0")
	if !strings.Contains(out, "READY") || !strings.Contains(out, "\nHB ") {
		t.Fatalf("vm console: no READY and heartbeats in:\n%s", tail(out, 600))
	}
	if tailed := l.mustCLI("vm", "console", "vm1", "--tail", "100"); len(tailed) > 100 || len(tailed) == 0 {
		t.Errorf("--tail 100 printed %d bytes", len(tailed))
	}

	// Follow from now on, across a migration to b.
	full := append([]string{"netns", "exec", l.net.CoreNS(), godwitBin, "vm", "console", "vm1", "--follow", "--tail", "0"},
		"--controller", l.ctlURL(), "--credential", l.user)
	follower := exec.Command("ip", full...)
	var fout, ferr testenv.SyncBuffer
	follower.Stdout, follower.Stderr = &fout, &ferr
	if err := follower.Start(); err != nil {
		t.Fatal(err)
	}
	defer follower.Process.Kill()

	l.mustCLI("vm", "console", "vm1", "--send", "STATUS")
	waitFor(t, 10*time.Second, "the follower to show the STATUS answer", func() bool {
		return strings.Contains(fout.String(), "STATUS cpus=")
	})
	out = l.mustCLI("vm", "migrate", "vm1", "--to", "b", "--wait")
	if !strings.Contains(out, "now runs on b") {
		t.Fatalf("migrate: %s", out)
	}
	l.mustCLI("vm", "console", "vm1", "--send", "V")
	waitFor(t, 30*time.Second, "the follower to show the verify on b", func() bool {
		return strings.Contains(fout.String(), "VERIFY ")
	})
	follower.Process.Signal(syscall.SIGTERM)
	// ip netns exec passes the signal on; the follower ends cleanly.
	done := make(chan error, 1)
	go func() { done <- follower.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("follower: %v\n%s", err, ferr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the follower did not stop on SIGTERM")
	}
	if !strings.Contains(ferr.String(), "now runs on host b") {
		t.Errorf("the follower did not say the VM moved: %q", ferr.String())
	}
	i := strings.Index(fout.String(), "VERIFY ")
	if !strings.HasPrefix(fout.String()[i:], "VERIFY OK") {
		t.Errorf("verify through the console: %q", fout.String()[i:min(len(fout.String()), i+40)])
	}
	t.Logf("follower stderr: %q; stdout ends %q", ferr.String(), tail(fout.String(), 120))

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "console", "nosuch"}, "unknown vm nosuch"},
		{[]string{"vm", "console", "vm1", "--tail", "-5"}, "--tail -5"},
		{[]string{"vm", "console", "vm1", "--send", "x", "--follow"}, "--send takes no"},
	} {
		_, errOut, err := l.cli(c.args...)
		if err == nil || !strings.Contains(errOut, c.want) {
			t.Errorf("godwit %s: %v, %q; want an error naming %q", strings.Join(c.args, " "), err, errOut, c.want)
		}
	}
	l.mustCLI("vm", "stop", "vm1")
	waitFor(t, 20*time.Second, "vm1 to stop", func() bool {
		_, errOut, err := l.cli("vm", "console", "vm1", "--send", "x")
		return err != nil && strings.Contains(errOut, "runs on no host")
	})
}
