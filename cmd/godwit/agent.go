package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/godwit-vmm/godwit/internal/agent"
)

// agentCmd is `godwit agent`: the host agent of a pool (internal/agent).
// It runs until SIGTERM or SIGINT; the VMMs it started keep running, and a
// restarted agent adopts them if it is back before the lease deadline.
func agentCmd(args []string, stdout, stderr io.Writer) error {
	cfg, err := agent.ParseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := agent.New(*cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return a.Run(ctx)
}
