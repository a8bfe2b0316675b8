package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/limits"
	"github.com/godwit-vmm/godwit/internal/migration"
)

// migrateCmd is `godwit migrate NAME --to HOST:PORT`: it asks the VM's VMM
// to migrate, shows progress while it runs and prints the report.
func migrateCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("api-socket", "", "API socket of the VM (default /run/godwit/NAME.sock)")
	to := fs.String("to", "", "destination HOST:PORT (a `godwit run --incoming tcp:HOST:PORT`)")
	streams := fs.Int("streams", 0, "TCP data connections (default 2)")
	peer := fs.String("peer", "", "for a VMM run with --credential: the destination's host name; only its certificate is accepted")
	verify := fs.Bool("verify", false, "check a CRC32C of all guest RAM on the destination before commit")
	downtime := fs.Duration("downtime", 0, "downtime target (default 50ms)")
	maxDown := fs.Duration("max-downtime", 0, "longest downtime accepted when the guest does not converge (default 200ms)")
	bandwidth := fs.String("bandwidth", "0", "bandwidth limit in bytes/s, with K/M/G suffix (0 = unlimited)")
	maxRounds := fs.Int("max-rounds", 0, "give up after this many pre-copy rounds (default 30)")
	maxTime := fs.Duration("max-time", 0, "give up after this long (default 60s)")
	noThrottle := fs.Bool("no-auto-converge", false, "never throttle the vCPUs")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cancelMig := fs.Bool("cancel", false, "cancel the VM's outgoing migration under way (the VM keeps running here)")
	set := fs.Bool("set", false, "change the --downtime, --max-downtime and --bandwidth of the migration under way")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *sock == "" {
		if len(pos) == 0 {
			return errors.New("migrate: name the VM or pass --api-socket")
		}
		*sock = api.SocketPath(pos[0])
	}
	if *set {
		var l api.MigrationLimits
		if flagSet(fs, "downtime") {
			v := ms(*downtime)
			l.DowntimeMs = &v
		}
		if flagSet(fs, "max-downtime") {
			v := ms(*maxDown)
			l.MaxDowntimeMs = &v
		}
		if flagSet(fs, "bandwidth") {
			bw, err := limits.ParseBandwidth(*bandwidth)
			if err != nil {
				return fmt.Errorf("migrate --set: --bandwidth: %w", err)
			}
			l.Bandwidth = &bw
		}
		if *to != "" || *cancelMig || (l.DowntimeMs == nil && l.MaxDowntimeMs == nil && l.Bandwidth == nil) {
			return errors.New("migrate --set: give one or more of --downtime, --max-downtime, --bandwidth (and no --to)")
		}
		now, err := api.NewClient(*sock).SetMigrationLimits(context.Background(), l)
		if err != nil {
			return fmt.Errorf("migrate --set: %w", err)
		}
		fmt.Fprintf(stdout, "migration limits now: downtime target %.0f ms, max downtime %.0f ms, bandwidth %s\n",
			*now.DowntimeMs, *now.MaxDowntimeMs, bandwidthText(*now.Bandwidth))
		return nil
	}
	if *cancelMig {
		if *to != "" {
			return errors.New("migrate --cancel: takes no --to")
		}
		if err := api.NewClient(*sock).CancelMigration(context.Background()); err != nil {
			return fmt.Errorf("migrate --cancel: %w", err)
		}
		fmt.Fprintln(stdout, "migration cancel sent; the VM stays here unless the migration was already past its commit")
		return nil
	}
	if *to == "" {
		return errors.New("migrate: --to HOST:PORT is required")
	}
	bw, err := limits.ParseBandwidth(*bandwidth)
	if err != nil {
		return fmt.Errorf("migrate: --bandwidth: %w", err)
	}
	req := api.MigrateRequest{To: *to, Peer: *peer, Streams: *streams, Verify: *verify, Bandwidth: bw, MaxRounds: *maxRounds,
		DowntimeMs: ms(*downtime), MaxDownMs: ms(*maxDown), MaxSeconds: maxTime.Seconds(), NoThrottle: *noThrottle}
	c := api.NewClient(*sock)
	ctx := context.Background()
	done := make(chan struct{})
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !*asJSON {
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
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		e.Encode(reply)
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
