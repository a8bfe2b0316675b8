package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit-vmm/godwit/internal/cli"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// drainFlags are the flags of `godwit host drain`.
type drainFlags struct {
	concurrency                          int
	onBlocked                            string
	watch, cancel, status, dryRun, force bool
}

// hostDrainCommand is `godwit host drain HOST`.
func hostDrainCommand(pf *poolFlags, stdout, stderr io.Writer) *cobra.Command {
	f := &drainFlags{}
	c := &cobra.Command{
		Use:   "drain HOST [--concurrency N] [--on-blocked wait|shutdown|fail] [--force] [--watch]",
		Short: "Evacuate a host for maintenance: live-migrate its VMs away",
		Long: `Mark HOST draining (no new VMs) and live-migrate its VMs away, shortest
predicted migration first; with --watch, show each VM's progress until the
host is in maintenance (VMs that cannot move are listed with why). Refused
if afterwards some host's HA VMs could not all restart elsewhere (see
--dry-run), unless --force. --dry-run shows where each VM would go, in order,
which cannot move and why, and the predicted drain time, changing nothing.
--cancel stops starting migrations (those under way finish) and makes HOST
active again; --status shows the drain's plan and progress.`,
		Example: `  godwit host drain b --watch
  godwit host drain b --dry-run --concurrency 2
  godwit host drain b --cancel`,
		Args: cli.Args("HOST"),
		RunE: func(c *cobra.Command, args []string) error { return f.run(c, pf, args[0], stdout, stderr) },
	}
	fs := c.Flags()
	fs.IntVar(&f.concurrency, "concurrency", 0, "migrations out of the host at once (default 1)")
	fs.StringVar(&f.onBlocked, "on-blocked", "wait", "when only blocked VMs are left: wait, shutdown (stop them) or fail (end the drain)")
	fs.BoolVar(&f.watch, "watch", false, "show progress until the host is in maintenance")
	fs.BoolVar(&f.cancel, "cancel", false, "cancel the host's drain")
	fs.BoolVar(&f.status, "status", false, "show the drain without changing it")
	fs.BoolVar(&f.dryRun, "dry-run", false, "show what a drain would do now, changing nothing")
	fs.BoolVar(&f.force, "force", false, "drain even if afterwards some host's HA VMs could not all restart elsewhere")
	c.MarkFlagsMutuallyExclusive("cancel", "status", "dry-run")
	return c
}

func (f *drainFlags) run(cmd *cobra.Command, pf *poolFlags, host string, stdout, stderr io.Writer) error {
	if f.dryRun && (f.watch || f.force || cmd.Flags().Changed("on-blocked")) {
		return cli.Usagef(cmd, "--dry-run takes only --concurrency")
	}
	c, err := pf.client()
	if err != nil {
		return err
	}
	timeout := pf.timeout
	if f.watch && !cmd.Flags().Changed("timeout") {
		timeout = 2 * time.Hour
	}
	ctx, stop := context.WithTimeout(context.Background(), timeout)
	defer stop()
	if f.dryRun {
		p, err := c.PlanDrain(ctx, host, f.concurrency)
		if err != nil {
			return err
		}
		if pf.asJSON {
			return printJSON(stdout, p)
		}
		return printDrainPlan(stdout, p)
	}
	d, err := f.request(ctx, c, host)
	if err != nil {
		return err
	}
	if !f.watch || f.cancel {
		if pf.asJSON {
			return printJSON(stdout, d)
		}
		return printDrain(stdout, d)
	}
	progress := stdout
	if pf.asJSON {
		progress = stderr
	}
	final, err := watchDrain(ctx, c, d, progress)
	if pf.asJSON {
		if perr := printJSON(stdout, final); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// request asks the controller to drain, cancel or show the drain.
func (f *drainFlags) request(ctx context.Context, c *poolapi.Client, host string) (poolapi.Drain, error) {
	switch {
	case f.cancel:
		return c.CancelDrain(ctx, host)
	case f.status:
		return c.HostDrain(ctx, host)
	}
	d, err := c.DrainHost(ctx, host, poolapi.DrainRequest{Concurrency: f.concurrency, OnBlocked: f.onBlocked, Force: f.force})
	if err != nil && f.watch {
		// The drain to watch may have ended between the caller's last
		// look and this request: a host it left in maintenance is
		// refused a new drain, and the watch is over.
		if cur, serr := c.HostDrain(ctx, host); serr == nil && cur.Phase == poolapi.DrainDone && cur.HostState == "maintenance" {
			return cur, nil
		}
	}
	return d, err
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

// hostActivateCommand is `godwit host activate HOST`.
func hostActivateCommand(f *poolFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:     "activate HOST",
		Short:   "Return a host to active (from maintenance, failed or draining)",
		Example: "  godwit host activate b",
		Args:    cli.Args("HOST"),
		RunE: func(_ *cobra.Command, args []string) error {
			c, ctx, cancel, err := f.connect(f.timeout)
			if err != nil {
				return err
			}
			defer cancel()
			h, err := c.ActivateHost(ctx, args[0])
			if err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(stdout, h)
			}
			fmt.Fprintf(stdout, "host %s: %s (%s)\n", h.Name, h.State, dash(h.StateReason))
			return nil
		},
	}
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
