package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/netlab"
)

const (
	// bootTimeout bounds the wait for the test guest's READY;
	// linuxBootTimeout the Linux guest's, which on the software CPU
	// spends minutes decompressing and initialising its kernel.
	bootTimeout      = 90 * time.Second
	linuxBootTimeout = 10 * time.Minute
	// stepTimeout bounds every other wait for the guest.
	stepTimeout = 60 * time.Second
	// settleBeats is how many heartbeats (10 ms each) a leg waits for
	// after its migration ends, so that its pause includes the gap up to
	// the first heartbeat on the destination.
	settleBeats = 20
)

// demo is the running demo: its network, its VMMs and the guest's console,
// which every VMM's output feeds.
type demo struct {
	plan
	ctx     context.Context
	tmp     string
	lab     *netlab.Lab
	hosts   []*netlab.Host
	guestIP netip.Addr
	tlsDirs map[*netlab.Host]string
	con     *guest.Console

	mu    sync.Mutex // guards procs
	procs []*vmm
}

// vmm is one godwit process in a host namespace.
type vmm struct {
	name string
	cmd  *exec.Cmd
	sock string
	done chan error
}

func (m *vmm) kill() {
	if m != nil && m.cmd.ProcessState == nil {
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
			m.cmd.Process.Kill()
			<-m.done
		}
	}
}

// legResult is what one migration measured.
type legResult struct {
	from, to string
	rep      *api.MigrateReply
	ping     netlab.ProbeResult
	pause    time.Duration // the longest heartbeat gap of this leg
}

// bootTimes are the guest's boot figures, from the VMM's launch.
type bootTimes struct{ ready, firstHB time.Duration }

// ending is the guest's own account at the end.
type ending struct {
	verify, cpus string
	hb           guest.GapCheck
}

func say(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

// setUp builds the network and the hosts' TLS credentials.
func setUp(ctx context.Context, p plan) (*demo, error) {
	d := &demo{plan: p, ctx: ctx, con: guest.NewConsole(nil)}
	var err error
	if d.tmp, err = os.MkdirTemp("", "godwit-demo"); err != nil {
		return nil, err
	}
	say("building the network: hosts A and B and a client, one bridge (network namespaces)")
	if d.lab, err = netlab.New("", p.hosts); err != nil {
		d.tearDown()
		return nil, err
	}
	d.hosts, d.guestIP = d.lab.Hosts(), d.lab.GuestAddr(0)
	// Secure by default, as a pool is: each host holds a certificate of
	// one CA, and every migration is mutual TLS between them.
	if d.tlsDirs, err = demoCredentials(d.tmp, d.hosts); err != nil {
		d.tearDown()
		return nil, err
	}
	say("migrations are mutual TLS 1.3 between host certificates of one CA (in %s)", d.tmp)
	return d, nil
}

// tearDown stops the VMMs and removes the network and the files.
func (d *demo) tearDown() {
	d.mu.Lock()
	for _, p := range d.procs {
		p.kill()
	}
	d.mu.Unlock()
	if d.lab != nil {
		d.lab.Close()
	}
	os.RemoveAll(d.tmp)
}

// wait returns a context for one wait on the guest.
func (d *demo) wait(timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.ctx, timeout)
}

// start runs a VMM named tag on host h with the NIC on h's bridge.
func (d *demo) start(h *netlab.Host, tag string, args ...string) (*vmm, error) {
	m := &vmm{name: tag, sock: filepath.Join(d.tmp, tag+".sock"), done: make(chan error, 1)}
	full := append([]string{"run", "--name", "demo", "--api-socket", m.sock, "--log-level", "warn", "--accel", d.accel,
		"--tap", "gwdemo0", "--bridge", h.Bridge, "--mac", "52:54:00:de:30:01", "--migration-tls-dir", d.tlsDirs[h]}, args...)
	m.cmd = h.Command(d.godwit, full...)
	m.cmd.Stdout = &prefixed{con: d.con, tag: tag}
	m.cmd.Stderr = os.Stderr
	m.cmd.Stdin = nil
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { m.done <- m.cmd.Wait() }()
	d.mu.Lock()
	d.procs = append(d.procs, m)
	d.mu.Unlock()
	return m, nil
}

// send types a line on the guest's console through a VMM's API.
func (d *demo) send(m *vmm, text string) error {
	return api.NewClient(m.sock).Console(d.ctx, []byte(text+"\n"))
}

// boot starts the guest on the first host and waits for its READY and
// first heartbeat.
func (d *demo) boot() (*vmm, bootTimes, error) {
	what, timeout := "the test guest", bootTimeout
	args := []string{"--kernel", d.elf, "--cmdline", fmt.Sprintf("cpus=%d ip=%s", d.cpus, d.guestIP)}
	if d.linux != "" {
		what, timeout = "Linux (Debian's kernel, the project's initramfs)", linuxBootTimeout
		args = []string{"--kernel", filepath.Join(d.linux, "vmlinux"), "--initrd", filepath.Join(d.linux, "initramfs.cpio.gz"),
			"--cmdline", "console=ttyS0 nokaslr godwit.ip=" + d.guestIP.String()}
	}
	say("booting %s on host A: %s RAM, %d vCPUs, virtio-net %s", what, d.mem, d.cpus, d.guestIP)
	t0 := time.Now()
	a, err := d.start(d.hosts[0], "A", append(args, "--mem", d.mem, "--cpus", fmt.Sprint(d.cpus))...)
	if err != nil {
		return nil, bootTimes{}, err
	}
	ctx, cancel := d.wait(timeout)
	defer cancel()
	if _, err := d.con.WaitPrefix(ctx, 0, "READY"); err != nil {
		return nil, bootTimes{}, fmt.Errorf("guest did not boot: %w", err)
	}
	b := bootTimes{ready: time.Since(t0)}
	if err := d.con.WaitHeartbeats(ctx, 1); err != nil {
		return nil, bootTimes{}, err
	}
	b.firstHB = time.Since(t0)
	say("guest READY in %v (first heartbeat %v after launch)", b.ready.Round(time.Millisecond), b.firstHB.Round(time.Millisecond))
	return a, b, nil
}

// startWorkload starts the guest's memory workload and returns the
// accelerator the VMM reports.
func (d *demo) startWorkload(a *vmm) (string, error) {
	ctx, cancel := d.wait(stepTimeout)
	defer cancel()
	mark := d.con.Mark()
	if err := d.send(a, "W "+d.workload); err != nil {
		return "", err
	}
	ack, err := d.con.WaitPrefix(ctx, mark, "ACK W")
	if err != nil {
		return "", err
	}
	say("workload started: %s (dirtying pages as fast as the emulated guest can)", ack)
	time.Sleep(2 * time.Second)
	st, _ := api.NewClient(a.sock).Status(d.ctx)
	say("VMM status on A: %s on accelerator %s, %d vCPUs, %d MiB, devices %v", st.State, st.Accel, st.VCPUs, st.MemMiB, st.Devices)
	return st.Accel, nil
}

// migrate moves the guest from src along l while the client pings it, and
// returns the leg's figures and the VMM now running the guest.
func (d *demo) migrate(src *vmm, l legPlan) (legResult, *vmm, error) {
	from, to := d.hosts[l.from], d.hosts[l.to]
	addr := netip.AddrPortFrom(to.MigAddr, l.port)
	say("starting an incoming VMM on host %s listening on %s", l.tag[:1], addr)
	dst, err := d.start(to, l.tag, "--incoming", "tcp:"+addr.String())
	if err != nil {
		return legResult{}, nil, err
	}
	if err := waitSocket(dst.sock); err != nil {
		return legResult{}, nil, err
	}
	pings := d.ping()
	time.Sleep(500 * time.Millisecond)
	say("live-migrating host %s -> host %s (RAM checksum verify: %v)", from.Name[len(from.Name)-1:], to.Name[len(to.Name)-1:], l.verify)
	// From the last heartbeat before the leg: the gap after it is the leg's.
	mark := max(0, len(d.con.Heartbeats())-1)
	rep, err := d.runMigrate(src, addr, l.verify)
	if err != nil {
		return legResult{}, nil, err
	}
	pause, err := d.legPause(mark)
	if err != nil {
		return legResult{}, nil, err
	}
	r := legResult{from: from.Name, to: to.Name, rep: rep, ping: <-pings, pause: pause}
	select {
	case <-src.done:
	case <-time.After(10 * time.Second):
		return legResult{}, nil, errors.New("the source VMM did not exit after the migration")
	}
	return r, dst, nil
}

// ping has the client ping the guest every 10 ms for 3 s.
func (d *demo) ping() <-chan netlab.ProbeResult {
	done := make(chan netlab.ProbeResult, 1)
	go func() {
		r, _ := netlab.Ping(d.lab.Client.Name, d.guestIP, 300, 10*time.Millisecond, 300*time.Millisecond)
		done <- r
	}()
	return done
}

// runMigrate runs `godwit migrate` on src to addr.
func (d *demo) runMigrate(src *vmm, addr netip.AddrPort, verify bool) (*api.MigrateReply, error) {
	args := []string{"migrate", "--api-socket", src.sock, "--to", addr.String(), "--json"}
	if verify {
		args = append(args, "--verify")
	}
	out, err := exec.CommandContext(d.ctx, d.godwit, args...).Output()
	var rep api.MigrateReply
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		return nil, fmt.Errorf("migrate: %v (%s)", err, out)
	}
	if rep.Error != "" || err != nil {
		return nil, fmt.Errorf("migrate: %s %v", rep.Error, err)
	}
	return &rep, nil
}

// legPause waits for settleBeats heartbeats after a migration ended and
// returns the longest gap among the heartbeats from index mark on.
func (d *demo) legPause(mark int) (time.Duration, error) {
	ctx, cancel := d.wait(stepTimeout)
	defer cancel()
	if err := d.con.WaitHeartbeats(ctx, len(d.con.Heartbeats())+settleBeats); err != nil {
		return 0, fmt.Errorf("no heartbeats after the migration: %w", err)
	}
	return guest.CheckHeartbeats(d.con.Heartbeats()[mark:]).LongestGap, nil
}

// finish has the guest verify its memory and report its timer ticks, then
// stops it.
func (d *demo) finish(m *vmm) (ending, error) {
	say("asking the guest to verify every page its workload wrote")
	ctx, cancel := d.wait(stepTimeout)
	defer cancel()
	mark := d.con.Mark()
	if err := d.send(m, "V"); err != nil {
		return ending{}, err
	}
	vline, err := d.con.WaitPrefix(ctx, mark, "VERIFY ")
	if err != nil {
		return ending{}, err
	}
	e := ending{verify: vline, hb: guest.CheckHeartbeats(d.con.Heartbeats())}
	mark = d.con.Mark()
	d.send(m, "CPUS")
	e.cpus, _ = d.con.WaitPrefix(ctx, mark, "CPU ")
	api.NewClient(m.sock).Stop(d.ctx)
	<-m.done
	return e, nil
}
