// Command demo is `make demo`: it builds a small network of two hosts and a
// client out of network namespaces, boots the test guest on host A with a
// memory workload and a NIC on A's bridge, live-migrates it to host B and
// back while the client pings it every 10 ms, and prints the figures: boot
// time, migration time, downtime, guest-visible pause, bytes, lost pings,
// and the guest's own verification of its memory.
//
// It needs root (namespaces, TAPs). It runs on KVM where /dev/kvm exists and
// on Godwit's software CPU where it does not (--accel chooses). Everything
// it creates is removed on exit.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/netlab"
	"github.com/godwit-vmm/godwit/internal/pki"
)

func main() {
	godwit := flag.String("godwit", "bin/godwit", "godwit binary")
	elf := flag.String("guest", "guest/build/guest.elf", "test guest ELF")
	mem := flag.String("mem", "1G", "guest RAM")
	cpus := flag.Int("cpus", 2, "guest vCPUs")
	wl := flag.String("workload", "256 64 0", "guest workload: alloc_MiB wset_MiB pages_per_s (0 = flat out)")
	accelName := flag.String("accel", "auto", "accelerator of both VMMs: auto (KVM when /dev/kvm exists, else the software CPU), kvm or emu")
	flag.Parse()
	if err := run(*godwit, *elf, *mem, *cpus, *wl, *accelName); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
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

func say(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(godwit, elf, mem string, cpus int, workload, accelName string) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces and TAP devices)")
	}
	for _, p := range []string{godwit, elf} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w (run `make build guest`)", p, err)
		}
	}
	godwit, _ = filepath.Abs(godwit)
	elf, _ = filepath.Abs(elf)
	tmp, err := os.MkdirTemp("", "godwit-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	say("building the network: hosts A and B and a client, one bridge (network namespaces)")
	lab, err := netlab.New("", 2)
	if err != nil {
		return err
	}
	defer lab.Close()
	hosts := lab.Hosts()
	guestIP := lab.GuestAddr(0)
	// Secure by default, as a pool is: each host holds a certificate of
	// one CA, and every migration is mutual TLS between them.
	tlsDirs, err := demoCredentials(tmp, hosts)
	if err != nil {
		return err
	}
	say("migrations are mutual TLS 1.3 between host certificates of one CA (in %s)", tmp)

	con := guest.NewConsole(nil)
	var mu sync.Mutex
	var procs []*vmm
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range procs {
			p.kill()
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-sigs; cancel() }()

	start := func(h *netlab.Host, tag string, args ...string) (*vmm, error) {
		m := &vmm{name: tag, sock: filepath.Join(tmp, tag+".sock"), done: make(chan error, 1)}
		full := append([]string{"run", "--name", "demo", "--api-socket", m.sock, "--log-level", "warn", "--accel", accelName,
			"--tap", "gwdemo0", "--bridge", h.Bridge, "--mac", "52:54:00:de:30:01", "--migration-tls-dir", tlsDirs[h]}, args...)
		m.cmd = h.Command(godwit, full...)
		m.cmd.Stdout = &prefixed{con: con, tag: tag}
		m.cmd.Stderr = os.Stderr
		m.cmd.Stdin = nil
		if err := m.cmd.Start(); err != nil {
			return nil, err
		}
		go func() { m.done <- m.cmd.Wait() }()
		mu.Lock()
		procs = append(procs, m)
		mu.Unlock()
		return m, nil
	}

	say("booting the test guest on host A: %s RAM, %d vCPUs, virtio-net %s", mem, cpus, guestIP)
	t0 := time.Now()
	a, err := start(hosts[0], "A", "--kernel", elf, "--mem", mem, "--cpus", fmt.Sprint(cpus),
		"--cmdline", fmt.Sprintf("cpus=%d ip=%s", cpus, guestIP))
	if err != nil {
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
	defer wcancel()
	if _, err := con.WaitPrefix(wctx, 0, "READY"); err != nil {
		return fmt.Errorf("guest did not boot: %w", err)
	}
	bootTime := time.Since(t0)
	if err := con.WaitHeartbeats(wctx, 1); err != nil {
		return err
	}
	firstHB := time.Since(t0)
	say("guest READY in %v (first heartbeat %v after launch)", bootTime.Round(time.Millisecond), firstHB.Round(time.Millisecond))

	client := api.NewClient(a.sock)
	send := func(sock, text string) error { return api.NewClient(sock).Console(ctx, []byte(text+"\n")) }
	mark := con.Mark()
	if err := send(a.sock, "W "+workload); err != nil {
		return err
	}
	ack, err := con.WaitPrefix(wctx, mark, "ACK W")
	if err != nil {
		return err
	}
	say("workload started: %s (dirtying pages as fast as the emulated guest can)", ack)
	time.Sleep(2 * time.Second)
	st, _ := client.Status(ctx)
	say("VMM status on A: %s on accelerator %s, %d vCPUs, %d MiB, devices %v", st.State, st.Accel, st.VCPUs, st.MemMiB, st.Devices)
	accelUsed := st.Accel

	type leg struct {
		from, to string
		rep      *api.MigrateReply
		ping     netlab.ProbeResult
		pause    time.Duration
	}
	var legs []leg
	src, srcHost := a, hosts[0]
	for i, dst := range []*netlab.Host{hosts[1], hosts[0]} {
		tag := []string{"B", "A2"}[i]
		addr := netip.AddrPortFrom(dst.MigAddr, 4444+uint16(i))
		say("starting an incoming VMM on host %s listening on %s", tag[:1], addr)
		d, err := start(dst, tag, "--incoming", "tcp:"+addr.String())
		if err != nil {
			return err
		}
		if err := waitSocket(d.sock); err != nil {
			return err
		}
		// The client pings through the whole migration.
		pingDone := make(chan netlab.ProbeResult, 1)
		go func() {
			r, _ := netlab.Ping(lab.Client.Name, guestIP, 300, 10*time.Millisecond, 300*time.Millisecond)
			pingDone <- r
		}()
		time.Sleep(500 * time.Millisecond)
		// The first move runs as in production; the second also has the
		// destination check a CRC32C of all guest RAM before it commits.
		args := []string{"migrate", "--api-socket", src.sock, "--to", addr.String(), "--json"}
		verify := i == 1
		if verify {
			args = append(args, "--verify")
		}
		say("live-migrating host %s -> host %s (RAM checksum verify: %v)", srcHost.Name[len(srcHost.Name)-1:], dst.Name[len(dst.Name)-1:], verify)
		// This leg's pause is the longest gap from the last heartbeat
		// before it on, not since boot (which would be the longer leg's).
		mark := max(0, len(con.Heartbeats())-1)
		out, err := exec.CommandContext(ctx, godwit, args...).Output()
		var rep api.MigrateReply
		if jerr := json.Unmarshal(out, &rep); jerr != nil {
			return fmt.Errorf("migrate: %v (%s)", err, out)
		}
		if rep.Error != "" || err != nil {
			return fmt.Errorf("migrate: %s %v", rep.Error, err)
		}
		p := <-pingDone
		hb := guest.CheckHeartbeats(con.Heartbeats()[mark:])
		legs = append(legs, leg{from: srcHost.Name, to: dst.Name, rep: &rep, ping: p, pause: hb.LongestGap})
		select {
		case <-src.done:
		case <-time.After(10 * time.Second):
			return errors.New("the source VMM did not exit after the migration")
		}
		src, srcHost = d, dst
	}

	say("asking the guest to verify every page its workload wrote")
	mark = con.Mark()
	if err := send(src.sock, "V"); err != nil {
		return err
	}
	vline, err := con.WaitPrefix(wctx, mark, "VERIFY ")
	if err != nil {
		return err
	}
	hb := guest.CheckHeartbeats(con.Heartbeats())
	mark = con.Mark()
	send(src.sock, "CPUS")
	cpuLine, _ := con.WaitPrefix(wctx, mark, "CPU ")
	api.NewClient(src.sock).Stop(ctx)
	<-src.done

	fmt.Println()
	fmt.Println("Godwit demo results")
	fmt.Printf("  accelerator:                %s\n", accelDesc(accelUsed))
	fmt.Printf("  boot to READY:              %v\n", bootTime.Round(time.Millisecond))
	for _, l := range legs {
		r := l.rep.Report
		fmt.Printf("  migration %s -> %s:\n", l.from, l.to)
		fmt.Printf("    total %.0f ms, downtime %.1f ms, guest-visible pause %v, %d rounds, %.1f MiB sent, max throttle %d%%\n",
			r.TotalMs, r.DowntimeMs, l.pause.Round(time.Millisecond), len(r.Rounds), float64(r.Bytes)/(1<<20), r.MaxThrottle)
		fmt.Printf("    downtime by step (ms): %s\n", steps(r.Switchover))
		fmt.Printf("    RAM checksums verified on the destination: %v\n", r.Verified)
		fmt.Printf("    client pings every 10 ms: %s\n", l.ping)
	}
	fmt.Printf("  heartbeats: %d seen, seq %d..%d, sequence errors: %d\n", hb.Count, hb.FirstSeq, hb.LastSeq, len(hb.SeqErrors))
	fmt.Printf("  per-vCPU timer ticks at the end: %s\n", cpuLine)
	fmt.Printf("  guest verify after two migrations: %s\n", vline)
	if !strings.HasPrefix(vline, "VERIFY OK") || len(hb.SeqErrors) > 0 {
		return errors.New("verification FAILED")
	}
	fmt.Println("  result: OK")
	return nil
}

// steps formats the switchover breakdown in the order the steps happen.
func steps(m map[string]float64) string {
	var parts []string
	for _, k := range []string{"pause", "save_state", "last_pages", "state_restored", "verify", "commit"} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", k, v))
		}
	}
	return strings.Join(parts, ", ")
}

// waitSocket waits for a VMM's API socket to answer.
func waitSocket(path string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := api.NewClient(path).Status(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("VMM API %s did not come up", path)
}

// prefixed feeds a VMM's console output to the shared console and echoes
// the lines worth seeing with the host's tag.
type prefixed struct {
	con     *guest.Console
	tag     string
	partial []byte
	lastHB  time.Time
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.con.Write(b)
	p.partial = append(p.partial, b...)
	for {
		i := strings.IndexByte(string(p.partial), '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(p.partial[:i]), "\r")
		p.partial = p.partial[i+1:]
		show := !strings.HasPrefix(line, "HB ") && !strings.HasPrefix(line, "CPU ")
		if strings.HasPrefix(line, "HB ") && time.Since(p.lastHB) > 2*time.Second {
			show, p.lastHB = true, time.Now()
		}
		if show {
			fmt.Fprintf(os.Stdout, "    [guest on %s] %s\n", p.tag, line)
		}
	}
	return len(b), nil
}

var _ io.Writer = (*prefixed)(nil)

// accelDesc names an accelerator for the report.
func accelDesc(a string) string {
	switch a {
	case "kvm":
		return "kvm (Linux KVM)"
	case "emu":
		return "emu (Godwit's software x86-64 CPU; no /dev/kvm here)"
	}
	return a
}

// demoCredentials makes a CA in tmp/pki and a host credential per host,
// naming its migration address; it returns each host's directory.
func demoCredentials(tmp string, hosts []*netlab.Host) (map[*netlab.Host]string, error) {
	ca, err := pki.Init(filepath.Join(tmp, "pki"), "demo")
	if err != nil {
		return nil, err
	}
	dirs := map[*netlab.Host]string{}
	for i, h := range hosts {
		name := string(rune('a' + i))
		b, err := ca.Issue(pki.RoleHost, name, pki.IssueOptions{IPs: []net.IP{net.IP(h.MigAddr.AsSlice())}})
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(tmp, "hosts", name)
		if err := b.Write(dir); err != nil {
			return nil, err
		}
		dirs[h] = dir
	}
	return dirs, nil
}
