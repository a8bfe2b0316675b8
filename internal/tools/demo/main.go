// Command demo is `make demo`: it builds a small network of two hosts and a
// client out of network namespaces, boots the test guest on host A with a
// memory workload and a NIC on A's bridge, live-migrates it to host B and
// back while the client pings it every 10 ms, and prints the figures: boot
// time, and for each migration its time, downtime, guest-visible pause (the
// longest heartbeat gap from the migration's start to shortly after its
// end), bytes and lost pings; then the guest's own verification of its
// memory.
//
// It needs root (namespaces, TAPs). It runs on KVM where /dev/kvm exists and
// on Godwit's software CPU where it does not (--accel chooses). Everything
// it creates is removed on exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/netlab"
	"github.com/godwit-vmm/godwit/internal/pki"
)

func main() {
	var o options
	flag.StringVar(&o.godwit, "godwit", "bin/godwit", "godwit binary")
	flag.StringVar(&o.elf, "guest", "guest/build/guest.elf", "test guest ELF")
	flag.StringVar(&o.linux, "linux", "", "boot the Linux guest of this directory instead (vmlinux and initramfs.cpio.gz, from make linux-guest)")
	flag.StringVar(&o.mem, "mem", "1G", "guest RAM")
	flag.IntVar(&o.cpus, "cpus", 2, "guest vCPUs")
	flag.StringVar(&o.workload, "workload", "256 64 0", "guest workload: alloc_MiB wset_MiB pages_per_s (0 = flat out)")
	flag.StringVar(&o.accel, "accel", "auto", "accelerator of both VMMs: auto (KVM when /dev/kvm exists, else the software CPU), kvm or emu")
	flag.Parse()
	p, err := makePlan(o)
	if err == nil {
		err = run(p)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// options are the command line's choices.
type options struct {
	godwit, elf, mem string
	linux            string // the Linux guest's directory, or "" for the test guest
	cpus             int
	workload, accel  string
}

// plan is what the demo will do, decided before it starts anything.
type plan struct {
	options
	hosts int // host namespaces; the legs name them by index
	legs  []legPlan
}

// legPlan is one live migration.
type legPlan struct {
	from, to int    // host indices
	tag      string // the incoming VMM's name in the output
	port     uint16 // its migration port on the destination host
	verify   bool   // the destination checks a CRC32C of all guest RAM
}

// makePlan checks what the demo needs and decides its legs: A to B as in
// production, then back to A with the RAM checksum verified as well.
func makePlan(o options) (plan, error) {
	if os.Geteuid() != 0 {
		return plan{}, errors.New("needs root (network namespaces and TAP devices)")
	}
	files := []*string{&o.godwit, &o.elf}
	if o.linux != "" {
		files = []*string{&o.godwit, &o.linux}
	}
	for _, p := range files {
		if _, err := os.Stat(*p); err != nil {
			return plan{}, fmt.Errorf("%s: %w (run `make build guest`, or `make linux-guest` for --linux)", *p, err)
		}
		*p, _ = filepath.Abs(*p)
	}
	return plan{options: o, hosts: 2, legs: []legPlan{
		{from: 0, to: 1, tag: "B", port: 4444},
		{from: 1, to: 0, tag: "A2", port: 4445, verify: true},
	}}, nil
}

// run carries out p and prints its results.
func run(p plan) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := setUp(ctx, p)
	if err != nil {
		return err
	}
	defer d.tearDown()
	src, boot, err := d.boot()
	if err != nil {
		return err
	}
	accel, err := d.startWorkload(src)
	if err != nil {
		return err
	}
	var legs []legResult
	for _, l := range p.legs {
		r, dst, err := d.migrate(src, l)
		if err != nil {
			return err
		}
		legs = append(legs, r)
		src = dst
	}
	end, err := d.finish(src)
	if err != nil {
		return err
	}
	return report(accel, boot, legs, end)
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
