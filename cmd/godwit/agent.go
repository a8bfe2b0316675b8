package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit-vmm/godwit/internal/agent"
	"github.com/godwit-vmm/godwit/internal/pki"
)

// agentCommand is `godwit agent`: the host agent of a pool
// (internal/agent). It runs until SIGTERM or SIGINT; the VMMs it started
// keep running, and a restarted agent adopts them if it is back before the
// lease deadline.
func agentCommand(stdout, stderr io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "agent --host NAME --etcd ENDPOINTS --credential DIR [flags]",
		Short: "Run a host's agent, or ask one for its state",
		Long: `Run this host's agent: it holds the host's lease in the pool's etcd, starts
and stops the VMMs placed here, drives their migrations, and fences them if
it loses the lease.`,
		Example: `  godwit agent --host a --etcd https://10.0.0.1:2379 --credential /etc/godwit/hosts/a \
      --migrate-ip 10.0.1.1 --bridge br0 --storage-id pool=/srv/pool
  godwit agent status --agent 10.0.1.1:7480 --credential ~/.godwit/alice`,
		Args: cobra.NoArgs,
	}
	f := agent.RegisterFlags(c.Flags())
	c.RunE = func(*cobra.Command, []string) error {
		cfg, err := f.Config()
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
	c.AddCommand(agentStatusCommand(stdout))
	return c
}

// agentStatusCommand is `godwit agent status`: what one host's agent says
// about itself — lease, time left before its fence, and the VMMs it runs.
func agentStatusCommand(stdout io.Writer) *cobra.Command {
	var addr, credential, host string
	var asJSON bool
	c := &cobra.Command{
		Use:     "status [--agent ADDR] [--credential DIR]",
		Short:   "Ask a host's agent for its lease, fence and VMMs",
		Example: "  godwit agent status --agent 10.0.1.1:7480 --credential ~/.godwit/alice --host a",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return agentStatus(addr, credential, host, asJSON, stdout)
		},
	}
	fs := c.Flags()
	fs.StringVar(&addr, "agent", "127.0.0.1:7480", "the agent's API address (its --listen)")
	fs.StringVar(&credential, "credential", os.Getenv("GODWIT_CREDENTIAL"), "your credential directory (a user's, or this host's)")
	fs.StringVar(&host, "host", "", "the host's name in the pool: its agent must present that host's certificate (default: any host)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func agentStatus(addr, credential, host string, asJSON bool, stdout io.Writer) error {
	if credential == "" {
		return errors.New("no credential: pass --credential DIR or set $GODWIT_CREDENTIAL")
	}
	cred, err := pki.LoadCredential(credential)
	if err != nil {
		return err
	}
	rule := pki.AllowRoles(pki.RoleHost)
	if host != "" {
		rule = pki.AllowPeer(pki.RoleHost, host)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := agent.NewClient(addr, cred.ClientConfig("", rule)).Host(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(stdout, h)
	}
	fmt.Fprintf(stdout, "host:      %s\nlease:     %s (%d renewals, fence in %.0f ms)\nfence:     %s\nTSC:       %d kHz, CPUID %s\n",
		h.Host, h.Lease, h.Renewals, h.DeadlineLeftMs, h.FenceFile, h.Info.TSCKHz, h.Info.CPUIDHash)
	fmt.Fprintf(stdout, "%-16s %8s %-10s %s\n", "VM", "PID", "PHASE", "CONSOLE")
	for _, v := range h.VMs {
		fmt.Fprintf(stdout, "%-16s %8d %-10s %s\n", v.Name, v.PID, v.Phase, v.ConsoleLog)
	}
	return nil
}
