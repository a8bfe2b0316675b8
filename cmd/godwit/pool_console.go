package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// vmConsoleCmd runs `godwit vm console NAME [--tail BYTES] [--follow]`
// and `godwit vm console NAME --send TEXT`: a pool VM's serial console
// through the controller, whichever host the VM runs on.
func vmConsoleCmd(fs *flag.FlagSet, f *poolFlags, args []string, stdout, stderr io.Writer) error {
	tail := fs.Int64("tail", 4096, "print the log's last BYTES first (0: from the start)")
	follow := fs.Bool("follow", false, "keep printing what the guest writes, across migrations, until Ctrl-C")
	fs.BoolVar(follow, "f", false, "short for --follow")
	send := fs.String("send", "", "type TEXT and a newline on the guest's console, then exit")
	pos, err := parsePool(fs, args, 1, "a VM name")
	if err != nil {
		return err
	}
	if *tail < 0 {
		return fmt.Errorf("vm console: --tail %d: want 0 or more bytes", *tail)
	}
	if *send != "" && (*follow || flagSet(fs, "tail")) {
		return errors.New("vm console: --send takes no --tail or --follow")
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	vm := pos[0]
	if *send != "" {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		defer cancel()
		return c.SendConsole(ctx, vm, *send+"\n")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if flagSet(fs, "timeout") || !*follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	off := -*tail
	if *tail == 0 {
		off = 0
	}
	host := ""
	for {
		ch, err := c.Console(ctx, vm, off)
		switch {
		case err != nil && ctx.Err() != nil && *follow:
			return nil // Ctrl-C or --timeout ends a follow
		case err != nil && *follow:
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
		if !*follow {
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
