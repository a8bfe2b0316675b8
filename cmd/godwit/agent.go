package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/agent"
	"github.com/godwit-vmm/godwit/internal/pki"
)

// agentCmd is `godwit agent`: the host agent of a pool (internal/agent).
// It runs until SIGTERM or SIGINT; the VMMs it started keep running, and a
// restarted agent adopts them if it is back before the lease deadline.
func agentCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "status" {
		return agentStatus(args[1:], stdout, stderr)
	}
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

// agentStatus is `godwit agent status`: what one host's agent says about
// itself — lease, time left before its fence, and the VMMs it runs.
func agentStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("agent", "127.0.0.1:7480", "the agent's API address (its --listen)")
	credential := fs.String("credential", os.Getenv("GODWIT_CREDENTIAL"), "your credential directory (a user's, or this host's)")
	host := fs.String("host", "", "the host's name in the pool: its agent must present that host's certificate (default: any host)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *credential == "" {
		return errors.New("agent status: no credential: pass --credential DIR or set $GODWIT_CREDENTIAL")
	}
	cred, err := pki.LoadCredential(*credential)
	if err != nil {
		return fmt.Errorf("agent status: %w", err)
	}
	rule := pki.AllowRoles(pki.RoleHost)
	if *host != "" {
		rule = pki.AllowPeer(pki.RoleHost, *host)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := agent.NewClient(*addr, cred.ClientConfig("", rule)).Host(ctx)
	if err != nil {
		return fmt.Errorf("agent status: %w", err)
	}
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		return e.Encode(h)
	}
	fmt.Fprintf(stdout, "host:      %s\nlease:     %s (%d renewals, fence in %.0f ms)\nfence:     %s\nTSC:       %d kHz, CPUID %s\n",
		h.Host, h.Lease, h.Renewals, h.DeadlineLeftMs, h.FenceFile, h.Info.TSCKHz, h.Info.CPUIDHash)
	fmt.Fprintf(stdout, "%-16s %8s %-10s %s\n", "VM", "PID", "PHASE", "CONSOLE")
	for _, v := range h.VMs {
		fmt.Fprintf(stdout, "%-16s %8d %-10s %s\n", v.Name, v.PID, v.Phase, v.ConsoleLog)
	}
	return nil
}
