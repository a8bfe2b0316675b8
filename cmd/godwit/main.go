// Command godwit runs and controls Godwit virtual machines, and the pool
// of hosts they live on.
//
//	godwit run --name NAME --kernel FILE [--mem 1G] [--cpus 2] [--tap TAP] [--disk IMG] ...
//	godwit status|pause|resume|stop NAME
//	godwit console NAME TEXT
//	godwit migrate NAME --to HOST:PORT
//	godwit run --incoming tcp:HOST:PORT --name NAME [--tap TAP]
//	godwit controller|agent|host|vm|cluster|balance|pki ...
//
// Each `godwit run` is one VMM process for one VM. The other VM
// subcommands talk to it through its API socket (internal/api); the pool
// subcommands talk to the controller. `godwit help` lists them all.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/cli"
	"github.com/godwit-vmm/godwit/internal/vm"
	"github.com/godwit-vmm/godwit/internal/vmmcmd"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the godwit command line args and returns its exit status,
// having reported any error on stderr.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	cmd, err := execute(root, args, stdout, stderr)
	return cli.Report(root, cmd, err, stderr)
}

// execute runs args on the command tree root and returns the command that
// ran and its error, not yet reported.
func execute(root *cobra.Command, args []string, stdout, stderr io.Writer) (*cobra.Command, error) {
	cli.Prepare(root, stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteC()
}

// Command groups in the help.
const (
	groupVM   = "vm"
	groupPool = "pool"
)

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "godwit",
		Short: "Run and live-migrate Godwit virtual machines, alone or in a pool of hosts",
		Long: `godwit runs virtual machines (one VMM process each, driven through its API
socket) and live-migrates them between hosts; a pool of hosts adds a
controller, host agents and a CA.`,
		Example: `  godwit run --name vm1 --kernel guest/build/guest.elf --mem 1G
  godwit status vm1
  godwit migrate vm1 --to 10.0.0.2:4400 --verify
  godwit vm create web1 --kernel /srv/guest.elf --mem 1G --cpus 2`,
	}
	root.AddGroup(&cobra.Group{ID: groupVM, Title: "One VM on this host:"}, &cobra.Group{ID: groupPool, Title: "A pool of hosts:"})
	vmCmds := []*cobra.Command{vmmcmd.Command("godwit", stderr), migrateCommand(stdout, stderr), consoleCommand()}
	for _, verb := range []string{"status", "pause", "resume", "stop"} {
		vmCmds = append(vmCmds, controlCommand(verb, stdout))
	}
	for _, c := range vmCmds {
		c.GroupID = groupVM
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{controllerCommand(stdout, stderr), agentCommand(stdout, stderr), hostCommand(stdout, stderr),
		vmCommand(stdout, stderr), clusterCommand(stdout), balanceCommand(stdout), pkiCommand(stdout)} {
		c.GroupID = groupPool
		root.AddCommand(c)
	}
	root.AddCommand(cli.VersionCommand("godwit", stdout), vmmcmd.FeaturesCommand(stdout))
	return cli.Group(root)
}

// vmmFlags are the flags of the commands that talk to one VMM.
type vmmFlags struct {
	sock    string
	asJSON  bool
	timeout time.Duration
}

func (f *vmmFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.sock, "api-socket", "", "API socket of the VM (default /run/godwit/NAME.sock)")
	c.Flags().BoolVar(&f.asJSON, "json", false, "print JSON")
	c.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
}

// client finds the VM's socket from --api-socket or the first argument,
// and returns the arguments after it.
func (f *vmmFlags) client(c *cobra.Command, args []string) (*api.Client, []string, error) {
	if f.sock == "" {
		if len(args) == 0 {
			return nil, nil, cli.Usagef(c, "name the VM or pass --api-socket")
		}
		f.sock, args = api.SocketPath(args[0]), args[1:]
	}
	return api.NewClient(f.sock), args, nil
}

var controlHelp = map[string]string{
	"status": "Show a VM's state",
	"pause":  "Pause every vCPU of a VM",
	"resume": "Resume a paused VM",
	"stop":   "Stop a VM (its VMM process exits)",
}

// controlCommand is `godwit status|pause|resume|stop NAME`.
func controlCommand(verb string, stdout io.Writer) *cobra.Command {
	f := &vmmFlags{}
	c := &cobra.Command{
		Use:     verb + " NAME",
		Short:   controlHelp[verb],
		Example: fmt.Sprintf("  godwit %s vm1\n  godwit %s --api-socket /run/godwit/vm1.sock --json", verb, verb),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, _, err := f.client(c, args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			defer cancel()
			call := map[string]func(context.Context) (vm.Status, error){"status": cl.Status, "pause": cl.Pause, "resume": cl.Resume}[verb]
			if call == nil {
				return cl.Stop(ctx)
			}
			s, err := call(ctx)
			if err != nil {
				return err
			}
			return printStatus(stdout, s, f.asJSON)
		},
	}
	f.register(c)
	return c
}

// consoleCommand is `godwit console NAME TEXT`.
func consoleCommand() *cobra.Command {
	f := &vmmFlags{}
	c := &cobra.Command{
		Use:     "console NAME TEXT...",
		Short:   "Type TEXT and a newline on a VM's serial console",
		Example: "  godwit console vm1 'W 64 64 0'\n  godwit console --api-socket /tmp/vm1.sock V",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, rest, err := f.client(c, args)
			if err != nil {
				return err
			}
			if len(rest) == 0 {
				return cli.Usagef(c, "give the text to type")
			}
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			defer cancel()
			return cl.Console(ctx, []byte(strings.Join(rest, " ")+"\n"))
		},
	}
	f.register(c)
	return c
}

func printJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func printStatus(w io.Writer, s vm.Status, asJSON bool) error {
	if asJSON {
		return printJSON(w, s)
	}
	fmt.Fprintf(w, "name:    %s\nstate:   %s\naccel:   %s\nvcpus:   %d\nmemory:  %d MiB\nkernel:  %s\nuptime:  %.1f s\nexits:   %d\n",
		s.Name, s.State, s.Accel, s.VCPUs, s.MemMiB, s.Kernel, s.UptimeSec, s.Exits)
	if s.Reboots > 0 {
		fmt.Fprintf(w, "reboots: %d\n", s.Reboots)
	}
	for _, d := range s.Devices {
		fmt.Fprintf(w, "device:  %-8s %s\n", d.Kind, d.Detail)
	}
	if s.Stopped != "" {
		fmt.Fprintf(w, "stopped: %s\n", s.Stopped)
	}
	if s.Error != "" {
		fmt.Fprintf(w, "error:   %s\n", s.Error)
	}
	return nil
}
