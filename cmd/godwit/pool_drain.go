package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// Host maintenance commands:
//
//	godwit host drain HOST [--concurrency N] [--on-blocked wait|shutdown|fail] [--force] [--watch]
//	godwit host drain HOST --dry-run [--concurrency N]
//	godwit host drain HOST --cancel
//	godwit host activate HOST
const drainUsage = `godwit host drain|activate: host maintenance

Usage:
  godwit host drain HOST [--concurrency N] [--on-blocked wait|shutdown|fail] [--force] [--watch]
        mark HOST draining (no new VMs) and live-migrate its VMs away, shortest
        predicted migration first; with --watch, show each VM's progress until
        the host is in maintenance (VMs that cannot move are listed with why);
        refused if afterwards some host's HA VMs could not all restart
        elsewhere (see --dry-run), unless --force
  godwit host drain HOST --dry-run [--concurrency N]
        show where each VM would go, in order, which cannot move and why, and
        the predicted drain time; changes nothing
  godwit host drain HOST --cancel
        stop starting migrations (those under way finish); HOST active again
  godwit host drain HOST --status
        show the drain's plan and progress
  godwit host activate HOST
        return HOST to active (from maintenance, failed or draining)
`

// hostDrainCmd runs `godwit host drain`.
func hostDrainCmd(fs *flag.FlagSet, f *poolFlags, args []string, stdout, stderr io.Writer) error {
	fs.Usage = func() { fmt.Fprint(stderr, drainUsage) }
	concurrency := fs.Int("concurrency", 0, "migrations out of the host at once (default 1)")
	onBlocked := fs.String("on-blocked", "wait", "when only blocked VMs are left: wait, shutdown (stop them) or fail (end the drain)")
	watch := fs.Bool("watch", false, "show progress until the host is in maintenance")
	cancelDrain := fs.Bool("cancel", false, "cancel the host's drain")
	status := fs.Bool("status", false, "show the drain without changing it")
	dryRun := fs.Bool("dry-run", false, "show what a drain would do now, changing nothing")
	force := fs.Bool("force", false, "drain even if afterwards some host's HA VMs could not all restart elsewhere")
	pos, err := parsePool(fs, args, 1, "a host name")
	if err != nil {
		return err
	}
	if *dryRun && (*cancelDrain || *status || *watch || *force || flagSet(fs, "on-blocked")) {
		return errors.New("host drain: --dry-run takes only --concurrency")
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	timeout := f.timeout
	if *watch && !flagSet(fs, "timeout") {
		timeout = 2 * time.Hour
	}
	ctx, stop := context.WithTimeout(context.Background(), timeout)
	defer stop()
	if *dryRun {
		p, err := c.PlanDrain(ctx, pos[0], *concurrency)
		if err != nil {
			return err
		}
		if f.asJSON {
			return printJSON(stdout, p)
		}
		return printDrainPlan(stdout, p)
	}
	var d poolapi.Drain
	switch {
	case *cancelDrain && *status:
		return errors.New("host drain: --cancel and --status exclude each other")
	case *cancelDrain:
		d, err = c.CancelDrain(ctx, pos[0])
	case *status:
		d, err = c.HostDrain(ctx, pos[0])
	default:
		d, err = c.DrainHost(ctx, pos[0], poolapi.DrainRequest{Concurrency: *concurrency, OnBlocked: *onBlocked, Force: *force})
		if err != nil && *watch {
			// The drain to watch may have ended between the caller's
			// last look and this request: a host it left in
			// maintenance is refused a new drain, and the watch is over.
			if cur, serr := c.HostDrain(ctx, pos[0]); serr == nil && cur.Phase == poolapi.DrainDone && cur.HostState == "maintenance" {
				d, err = cur, nil
			}
		}
	}
	if err != nil {
		return err
	}
	if !*watch || *cancelDrain {
		if f.asJSON {
			return printJSON(stdout, d)
		}
		return printDrain(stdout, d)
	}
	progress := stdout
	if f.asJSON {
		progress = stderr
	}
	final, err := watchDrain(ctx, c, d, progress)
	if f.asJSON {
		if perr := printJSON(stdout, final); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// watchDrain polls the drain, printing a line per VM change, until the
// host leaves draining.
func watchDrain(ctx context.Context, c *poolapi.Client, d poolapi.Drain, w io.Writer) (poolapi.Drain, error) {
	began := time.Now()
	fmt.Fprintf(w, "drain of %s: %d VMs, concurrency %d, on blocked: %s\n", d.Host, d.Total, d.Concurrency, d.OnBlocked)
	last := map[string]string{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, v := range d.VMs {
			line := vmDrainLine(v)
			if last[v.Name] != line {
				fmt.Fprintf(w, "  %s  %-12s %s\n", time.Now().Format("15:04:05.000"), v.Name, line)
				last[v.Name] = line
			}
		}
		if d.Phase != poolapi.DrainRunning {
			fmt.Fprintf(w, "host %s: %s after %s (%d of %d VMs moved)\n", d.Host, d.Phase, time.Since(began).Round(time.Millisecond), d.Done, d.Total)
			if len(d.Blocked) > 0 {
				fmt.Fprintf(w, "blocked:\n  %s\n", strings.Join(d.Blocked, "\n  "))
			}
			if d.Phase != poolapi.DrainDone {
				why := d.StateReason
				if why == "" {
					why = "no reason given"
				}
				return d, fmt.Errorf("drain of host %s ended %s: %s", d.Host, d.Phase, why)
			}
			return d, nil
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("host %s still draining after the --timeout (%d of %d moved, blocked: %s); the drain goes on (godwit host drain %s --status)",
				d.Host, d.Done, d.Total, dash(strings.Join(d.Blocked, "; ")), d.Host)
		case <-tick.C:
		}
		nd, err := c.HostDrain(ctx, d.Host)
		if err != nil {
			return d, err
		}
		d = nd
	}
}

func vmDrainLine(v poolapi.DrainVM) string {
	s := v.State
	switch v.State {
	case "migrating":
		s += fmt.Sprintf(" → %s (%s", v.Dst, v.Phase)
		if v.Round > 0 {
			s += fmt.Sprintf(", round %d, %s to go", v.Round, humanBytes(v.Remaining))
		}
		s += ")"
	case "done":
		s += " → now on " + v.Host
	case "blocked":
		s += ": " + v.Reason
	}
	if v.Attempts > 1 {
		s += fmt.Sprintf(" [attempt %d]", v.Attempts)
	}
	return s
}

func printDrain(w io.Writer, d poolapi.Drain) error {
	state := d.HostState
	if d.StateReason != "" {
		state += " (" + d.StateReason + ")"
	}
	fmt.Fprintf(w, "host %s: drain %s, host %s; %d of %d VMs moved, %d in flight, %d blocked; concurrency %d, on blocked %s\n",
		d.Host, d.Phase, state, d.Done, d.Total, len(d.InFlight), len(d.Blocked), d.Concurrency, d.OnBlocked)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tPREDICTED\tSTATE")
	for _, v := range d.VMs {
		fmt.Fprintf(tw, "%s\t%.2fs\t%s\n", v.Name, v.PredictedSeconds, vmDrainLine(v))
	}
	return tw.Flush()
}

// printDrainPlan prints a drain's dry run.
func printDrainPlan(w io.Writer, p poolapi.DrainPlan) error {
	planned := 0
	for _, v := range p.VMs {
		if v.State == "planned" {
			planned++
		}
	}
	fmt.Fprintf(w, "dry run: draining host %s (%s) would move %d of %d VMs, %d blocked; predicted %.1fs at concurrency %d\n",
		p.Host, dash(p.HostState), planned, len(p.VMs), p.Blocked, p.PredictedSeconds, p.Concurrency)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tPREDICTED\tPLAN")
	for _, v := range p.VMs {
		plan := v.State
		switch v.State {
		case "planned":
			plan = "→ " + v.Dst
		case "blocked":
			plan = "blocked: " + v.Reason
		}
		fmt.Fprintf(tw, "%s\t%.2fs\t%s\n", v.Name, v.PredictedSeconds, plan)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range p.HAAtRisk {
		fmt.Fprintf(w, "HA at risk after this drain: %s\n", r)
	}
	return nil
}

// hostActivateCmd runs `godwit host activate HOST`.
func hostActivateCmd(fs *flag.FlagSet, f *poolFlags, args []string, stdout io.Writer) error {
	pos, err := parsePool(fs, args, 1, "a host name")
	if err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	h, err := c.ActivateHost(ctx, pos[0])
	if err != nil {
		return err
	}
	if f.asJSON {
		return printJSON(stdout, h)
	}
	fmt.Fprintf(stdout, "host %s: %s (%s)\n", h.Name, h.State, dash(h.StateReason))
	return nil
}

// haSummary is the cluster status line about HA restart.
func haSummary(ha *poolapi.HAStatus) string {
	if ha == nil {
		return "unknown (controller too old)"
	}
	s := ha.Reason
	if n := len(ha.Restarting); n > 0 {
		s += fmt.Sprintf("; %d restarting", n)
	}
	if n := len(ha.Errors); n > 0 {
		s += fmt.Sprintf("; %d given up", n)
	}
	return s
}
