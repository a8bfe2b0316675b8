package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/cli"
	"github.com/godwit-vmm/godwit/internal/limits"
	"github.com/godwit-vmm/godwit/internal/migration"
)

// migrateFlags are the flags of `godwit migrate`.
type migrateFlags struct {
	vmmFlags
	to, peer, bandwidth string
	streams, maxRounds  int
	verify, noThrottle  bool
	downtime, maxDown   time.Duration
	maxTime             time.Duration
	cancel, set         bool
}

// migrateCommand is `godwit migrate NAME --to HOST:PORT`: it asks the
// VM's VMM to migrate, shows progress while it runs and prints the report.
func migrateCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &migrateFlags{}
	c := &cobra.Command{
		Use:   "migrate NAME --to HOST:PORT [flags]",
		Short: "Live-migrate a VM to a VMM waiting with godwit run --incoming",
		Long: `Live-migrate a VM to a VMM started with godwit run --incoming tcp:HOST:PORT,
showing progress, then print the report. Ctrl-C cancels the migration (the
VM keeps running here). --set changes the limits of the migration under
way; --cancel cancels it from another shell.`,
		Example: `  godwit migrate vm1 --to 10.0.0.2:4400 --verify
  godwit migrate vm1 --to 10.0.0.2:4400 --bandwidth 100M --downtime 30ms --json
  godwit migrate vm1 --set --bandwidth 0
  godwit migrate vm1 --cancel`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return f.run(c, args, stdout, stderr) },
	}
	f.vmmFlags.register(c)
	fs := c.Flags()
	fs.StringVar(&f.to, "to", "", "destination HOST:PORT (a godwit run --incoming tcp:HOST:PORT)")
	fs.IntVar(&f.streams, "streams", 0, "TCP data connections (default 2)")
	fs.StringVar(&f.peer, "peer", "", "for a VMM run with --credential: the destination's host name; only its certificate is accepted")
	fs.BoolVar(&f.verify, "verify", false, "check a CRC32C of all guest RAM on the destination before commit")
	fs.DurationVar(&f.downtime, "downtime", 0, "downtime target (default 50ms)")
	fs.DurationVar(&f.maxDown, "max-downtime", 0, "longest downtime accepted when the guest does not converge (default 200ms)")
	fs.StringVar(&f.bandwidth, "bandwidth", "0", "bandwidth limit in bytes/s: "+limits.SizeGrammar+" (0: unlimited)")
	fs.IntVar(&f.maxRounds, "max-rounds", 0, "give up after this many pre-copy rounds (default 30)")
	fs.DurationVar(&f.maxTime, "max-time", 0, "give up after this long (default 60s)")
	fs.BoolVar(&f.noThrottle, "no-auto-converge", false, "never throttle the vCPUs")
	fs.BoolVar(&f.cancel, "cancel", false, "cancel the VM's outgoing migration under way (the VM keeps running here)")
	fs.BoolVar(&f.set, "set", false, "change the --downtime, --max-downtime and --bandwidth of the migration under way")
	c.MarkFlagsMutuallyExclusive("set", "cancel", "to")
	return c
}

func (f *migrateFlags) run(cmd *cobra.Command, args []string, stdout, stderr io.Writer) error {
	c, _, err := f.client(cmd, args)
	if err != nil {
		return err
	}
	bw, err := limits.ParseBandwidth(f.bandwidth)
	if err != nil {
		return cli.Usagef(cmd, "--bandwidth: %v", err)
	}
	fs := cmd.Flags()
	switch {
	case f.set:
		var l api.MigrationLimits
		if fs.Changed("downtime") {
			v := ms(f.downtime)
			l.DowntimeMs = &v
		}
		if fs.Changed("max-downtime") {
			v := ms(f.maxDown)
			l.MaxDowntimeMs = &v
		}
		if fs.Changed("bandwidth") {
			l.Bandwidth = &bw
		}
		if l.DowntimeMs == nil && l.MaxDowntimeMs == nil && l.Bandwidth == nil {
			return cli.Usagef(cmd, "--set: give one or more of --downtime, --max-downtime, --bandwidth")
		}
		now, err := c.SetMigrationLimits(context.Background(), l)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "migration limits now: downtime target %.0f ms, max downtime %.0f ms, bandwidth %s\n",
			*now.DowntimeMs, *now.MaxDowntimeMs, bandwidthText(*now.Bandwidth))
		return nil
	case f.cancel:
		if err := c.CancelMigration(context.Background()); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "migration cancel sent; the VM stays here unless the migration was already past its commit")
		return nil
	case f.to == "":
		return cli.Usagef(cmd, "--to HOST:PORT is required")
	}
	req := api.MigrateRequest{To: f.to, Peer: f.peer, Streams: f.streams, Verify: f.verify, Bandwidth: bw, MaxRounds: f.maxRounds,
		DowntimeMs: ms(f.downtime), MaxDownMs: ms(f.maxDown), MaxSeconds: f.maxTime.Seconds(), NoThrottle: f.noThrottle}
	return f.migrate(c, req, stdout, stderr)
}

// migrate runs the migration, cancelling it on Ctrl-C, and prints the
// report.
func (f *migrateFlags) migrate(c *api.Client, req api.MigrateRequest, stdout, stderr io.Writer) error {
	ctx := context.Background()
	done := make(chan struct{})
	if tty, ok := stderr.(*os.File); ok && term.IsTerminal(int(tty.Fd())) && !f.asJSON {
		go showProgress(ctx, c, stderr, done)
	}
	// Ctrl-C (or SIGTERM) cancels the migration, as virsh does with its
	// job, and still prints the report.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			fmt.Fprintln(stderr, "\ngodwit: cancelling the migration")
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := c.CancelMigration(cctx); err != nil {
				fmt.Fprintf(stderr, "godwit: cancel: %v\n", err)
			}
		case <-done:
		}
	}()
	reply, err := c.Migrate(ctx, req)
	close(done)
	if err != nil {
		return err
	}
	if f.asJSON {
		if err := printJSON(stdout, reply); err != nil {
			return err
		}
	} else if reply.Report != nil {
		printReport(stdout, reply.Report)
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// showProgress draws a one-line progress bar until done.
func showProgress(ctx context.Context, c *api.Client, w io.Writer, done <-chan struct{}) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	drawn := false
	for {
		select {
		case <-done:
			if drawn {
				fmt.Fprint(w, "\r\033[K")
			}
			return
		case <-t.C:
		}
		p, err := c.MigrationProgress(ctx)
		if err != nil {
			continue
		}
		frac := 0.0
		if p.TotalPages > 0 && p.Iteration > 0 {
			frac = 1 - float64(p.RemainingPages)/float64(p.TotalPages)
		}
		bar := strings.Repeat("#", int(frac*30)) + strings.Repeat("-", 30-int(frac*30))
		fmt.Fprintf(w, "\r\033[K[%s] %-10s round %d  %s sent  %.0f MiB/s  %d pages dirty  expected downtime %.0f ms  throttle %d%%",
			bar, p.Phase, p.Iteration, humanBytes(p.TransferredBytes), p.BandwidthMiBs, p.RemainingPages, p.ExpectedDownMs, p.Throttle)
		drawn = true
	}
}

func printReport(w io.Writer, r *migration.Report) {
	fmt.Fprintf(w, "migration %s to %s: %s\n", r.ID, r.Destination, r.Result)
	fmt.Fprintf(w, "  total %.1f ms, downtime %.1f ms (setup %.1f ms), %d rounds, %d streams\n",
		r.TotalMs, r.DowntimeMs, r.SetupMs, len(r.Rounds), r.Streams)
	fmt.Fprintf(w, "  sent %s: %d data pages, %d zero pages, %d untouched pages skipped, state %s\n",
		humanBytes(r.Bytes), r.DataPages, r.ZeroPages, r.SkippedPages, humanBytes(uint64(r.StateBytes)))
	if r.RXHandedOver > 0 {
		fmt.Fprintf(w, "  %d packets that reached the source during the switchover delivered on the destination\n", r.RXHandedOver)
	}
	if r.Verified {
		fmt.Fprintln(w, "  RAM verified: CRC32C of every 2 MiB matched on the destination")
	}
	if r.MaxThrottle > 0 {
		fmt.Fprintf(w, "  auto-converge throttled the vCPUs up to %d%%\n", r.MaxThrottle)
	}
	fmt.Fprintln(w, "  round   data    zero  skipped      bytes      ms    MiB/s  dirty-after  dirty/s  throttle")
	for _, rd := range r.Rounds {
		fmt.Fprintf(w, "  %5d %7d %7d %8d %10s %7.1f %8.0f %12d %8.0f %8d%%\n", rd.Iteration, rd.DataPages, rd.ZeroPages,
			rd.SkippedPages, humanBytes(rd.Bytes), rd.DurationMs, rd.MBps, rd.DirtyPages, rd.DirtyRate, rd.Throttle)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
	}
}

func humanBytes(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// bandwidthText prints a bandwidth cap.
func bandwidthText(b uint64) string {
	if b == 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%.1f MiB/s", float64(b)/(1<<20))
}
