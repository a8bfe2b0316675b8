package pooltest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

// linuxBoot bounds a Linux guest's boot to READY on the software CPU of a
// loaded 2-core machine (minutes: see README.md).
const linuxBoot = 10 * time.Minute

// waitLinux waits until vm runs on h and its console has printed READY
// since offset from (a restarted VM boots again into the same file).
func (l *lab) waitLinux(vm, h string, from int) {
	l.t.Helper()
	waitFor(l.t, linuxBoot, "vm "+vm+" running on "+h+" with Linux READY", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, _, err := l.st.GetVMStatus(ctx, vm)
		if err != nil || st.Phase != store.VMRunning || st.Host != h {
			return false
		}
		b, _ := os.ReadFile(l.consolePath(h, vm))
		return len(b) > from && strings.Contains(string(b[from:]), "\nREADY\n")
	})
}

// hostOf returns the host the store says vm runs on.
func (l *lab) hostOf(vm string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, _, err := l.st.GetVMStatus(ctx, vm)
	if err != nil || st.Phase != store.VMRunning {
		return ""
	}
	return st.Host
}

// TestPoolLinuxVM: the pool runs a Linux VM (Debian's kernel and the
// project's initramfs) like the test guest. `godwit vm create` with a
// kernel and an initrd boots it on the chosen host; `godwit host drain`
// moves it live while it dirties memory, and its own verify passes on the
// new host; when that host dies, HA restarts it on the last one, where it
// boots again to READY.
func TestPoolLinuxVM(t *testing.T) {
	kernel, initrd := testenv.LinuxGuest(t)
	l := newLab(t, 3)
	l.ctl.kill9()
	l.ctl.args = append(l.ctl.args, "--ha-force")
	l.ctl.start(t)
	l.waitEtcd(20 * time.Second)
	waitFor(t, 20*time.Second, "the controller to lead with HA on", func() bool {
		var cs poolapi.Cluster
		return l.cliJSON(&cs, "cluster", "status") == nil && cs.Leading && cs.HA != nil && cs.HA.Active
	})
	agents := map[string]*proc{}
	for _, h := range []string{"a", "b", "c"} {
		agents[h] = l.startAgent(h, agentOpts{})
	}
	disk := filepath.Join(l.shared, "lx.img")
	if err := os.WriteFile(disk, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	l.nextIP++
	ip := l.net.GuestAddr(l.nextIP)
	var v poolapi.VM
	if err := l.cliJSON(&v, "vm", "create", "lx", "--kernel", kernel, "--initrd", initrd, "--mem", "384M", "--cpus", "1",
		"--cmdline", "console=ttyS0 nokaslr godwit.ip="+ip.String(), "--disk", disk, "--nic", "gwbr", "--ha", "--host", "a"); err != nil {
		t.Fatal(err)
	}
	if out := l.mustCLI("vm", "show", "lx"); !strings.Contains(out, initrd) {
		t.Errorf("vm show does not name the initrd:\n%s", out)
	}
	start := time.Now()
	l.waitLinux("lx", "a", 0)
	t.Logf("Linux READY on a %v after vm create", time.Since(start).Round(time.Second))
	l.typeLine("a", "lx", "W 32 32 0", "ACK W", time.Minute)

	var d poolapi.Drain
	if err := l.cliJSON(&d, "host", "drain", "a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Minute, "the drain to move lx off host a", func() bool {
		d = l.drainStatus("a")
		return d.Done == 1 && len(d.InFlight) == 0
	})
	// The drain counts the VM moved when its owner changes; the new
	// host's status report follows.
	var moved string
	waitFor(t, time.Minute, "lx to report running on b or c after the drain", func() bool {
		moved = l.hostOf("lx")
		return moved == "b" || moved == "c"
	})
	if line := l.typeLine(moved, "lx", "V", "VERIFY ", 2*time.Minute); !strings.HasPrefix(line, "VERIFY OK") {
		t.Fatalf("verify on %s after the drain: %q", moved, line)
	}

	last := map[string]string{"b": "c", "c": "b"}[moved]
	b, _ := os.ReadFile(l.consolePath(last, "lx"))
	agents[moved].kill9()
	killed := time.Now()
	l.waitLinux("lx", last, len(b))
	t.Logf("HA: host %s killed, Linux READY again on %s after %v", moved, last, time.Since(killed).Round(time.Second))
}
