package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit-vmm/godwit/internal/cli"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// vmConsoleCommand is `godwit vm console NAME [--tail BYTES] [--follow]`
// and `godwit vm console NAME --send TEXT`: a pool VM's serial console
// through the controller, whichever host the VM runs on.
func vmConsoleCommand(f *poolFlags, stdout, stderr io.Writer) *cobra.Command {
	var tail int64
	var follow bool
	var send string
	c := &cobra.Command{
		Use:   "console NAME [--tail BYTES] [--follow] | console NAME --send TEXT",
		Short: "A VM's serial console, on whichever host it runs",
		Example: `  godwit vm console web1 --tail 0
  godwit vm console web1 -f
  godwit vm console web1 --send 'W 64 64 0'`,
		Args: cli.Args("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail < 0 {
				return cli.Usagef(cmd, "--tail %d: want 0 or more bytes", tail)
			}
			if send != "" && (follow || cmd.Flags().Changed("tail")) {
				return cli.Usagef(cmd, "--send takes no --tail or --follow")
			}
			return vmConsole(f, args[0], tail, follow, send, cmd.Flags().Changed("timeout"), stdout, stderr)
		},
	}
	c.Flags().Int64Var(&tail, "tail", 4096, "print the log's last BYTES first (0: from the start)")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what the guest writes, across migrations, until Ctrl-C")
	c.Flags().StringVar(&send, "send", "", "type TEXT and a newline on the guest's console, then exit")
	return c
}

func vmConsole(f *poolFlags, vm string, tail int64, follow bool, send string, timeoutSet bool, stdout, stderr io.Writer) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	if send != "" {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		defer cancel()
		return c.SendConsole(ctx, vm, send+"\n")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if timeoutSet || !follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	off := -tail
	if tail == 0 {
		off = 0
	}
	host := ""
	for {
		ch, err := c.Console(ctx, vm, off)
		switch {
		case err != nil && ctx.Err() != nil && follow:
			return nil // Ctrl-C or --timeout ends a follow
		case err != nil && follow:
			// The VM may be between hosts: say so and keep trying.
			fmt.Fprintf(stderr, "godwit: %v (retrying)\n", err)
			if !sleepCtx(ctx, time.Second) {
				return nil
			}
			continue
		case err != nil:
			return err
		}
		if host != "" && ch.Host != host {
			// A new host has a new log: read it from its start.
			fmt.Fprintf(stderr, "\n--- vm %s now runs on host %s ---\n", vm, ch.Host)
			host, off = ch.Host, 0
			continue
		}
		host = ch.Host
		stdout.Write(ch.Data)
		off = ch.Next
		if len(ch.Data) == poolapi.MaxConsoleChunk {
			continue // more is there already
		}
		if !follow {
			return nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return nil
		}
	}
}

// sleepCtx sleeps d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
