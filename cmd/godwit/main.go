// Command godwit runs and controls Godwit virtual machines.
//
//	godwit run --name NAME --kernel FILE [--mem 1G] [--cpus 2] [--tap TAP] [--disk IMG] ...
//	godwit status|pause|resume|stop NAME
//	godwit console NAME TEXT
//	godwit migrate NAME --to HOST:PORT
//	godwit run --incoming tcp:HOST:PORT --name NAME [--tap TAP]
//
// Each `godwit run` is one VMM process for one VM. The other subcommands
// talk to it through its API socket (internal/api).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/vm"
	"github.com/godwit-vmm/godwit/internal/vmmcmd"
)

const usage = `godwit: run and control Godwit virtual machines

Usage:
  godwit run --name NAME --kernel FILE [flags]   start a VM in this process (see godwit run -h)
  godwit status  NAME|--api-socket PATH [--json] show a VM's state
  godwit pause   NAME|--api-socket PATH          pause every vCPU
  godwit resume  NAME|--api-socket PATH          resume a paused VM
  godwit stop    NAME|--api-socket PATH          stop a VM (its VMM process exits)
  godwit console NAME|--api-socket PATH TEXT     type TEXT (plus a newline) on the guest console
  godwit migrate NAME|--api-socket PATH --to HOST:PORT [--verify] [--streams N] [--downtime D] [--bandwidth B] [--json]
                                                 live-migrate the VM to a VMM started with
                                                 godwit run --incoming tcp:HOST:PORT
  godwit migrate NAME|--api-socket PATH --set [--downtime D] [--max-downtime D] [--bandwidth B]
                                                 change the limits of the migration under way
  godwit migrate NAME|--api-socket PATH --cancel  cancel it (Ctrl-C on the migrate does too)

NAME finds the socket at /run/godwit/NAME.sock.

A pool of hosts (see README, "A pool of hosts"):
  godwit pki init|issue|revoke|list --dir DIR ...  the pool's CA: credentials for hosts, users, controllers
  godwit controller --pki DIR [--etcd-endpoints E | --data-dir D]      run a pool controller
  godwit agent --host H --etcd E --credential DIR ...                  run a host agent
  godwit agent status [--agent ADDR] [--credential DIR] [--json]       ask a host's agent
  godwit host list|show H                          hosts of the pool
  godwit vm create|list|show|start|stop|delete|migrate NAME ...   VMs of the pool
  godwit cluster status                            leader, members, hosts, VMs
  godwit host drain|activate H ...                 host maintenance (evacuate, return)
  godwit balance [--dry-run] [--apply N] [--json]  load balancing plan / apply moves
  godwit version                                  the version this binary was built from
`

func main() {
	os.Exit(exitCode(run(os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitCode reports err as Unix tools do: nothing and 0 for success or a
// help request (-h prints the flags and is not an error), the message and
// 2 for a command line that cannot be used, the message and 1 for a
// failure.
func exitCode(err error, stderr io.Writer) int {
	var ce cmdLineError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "godwit: %v\nRun 'godwit help' for the commands.\n", ce.error)
		return 2
	default:
		fmt.Fprintln(stderr, "godwit:", err)
		return 1
	}
}

// cmdLineError is a command line godwit cannot use (exit status 2).
type cmdLineError struct{ error }

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cmdLineError{errors.New("no command given")}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionText())
		return nil
	case "run":
		return vmmcmd.Run(rest, stderr)
	case "status", "pause", "resume", "stop", "console":
		return control(cmd, rest, stdout, stderr)
	case "migrate":
		return migrateCmd(rest, stdout, stderr)
	case "controller":
		return controllerCmd(rest, stdout, stderr)
	case "agent":
		return agentCmd(rest, stdout, stderr)
	case "host":
		return hostCmd(rest, stdout, stderr)
	case "vm":
		return vmCmd(rest, stdout, stderr)
	case "cluster":
		return clusterCmd(rest, stdout, stderr)
	case "balance":
		return balanceCmd(rest, stdout, stderr)
	case "pki":
		return pkiCmd(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return cmdLineError{fmt.Errorf("unknown command %q", cmd)}
	}
}

// versionText is the module version and VCS revision the binary was built
// from, as Go records them.
func versionText() string {
	v, rev, dirty := "(devel)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	out := "godwit " + v
	if rev != "" {
		out += " " + rev[:min(12, len(rev))]
		if dirty {
			out += "+dirty"
		}
	}
	return out + " " + runtime.Version()
}

// control runs one of the subcommands that talk to a running VMM.
func control(cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("api-socket", "", "API socket of the VM (default /run/godwit/NAME.sock)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *sock == "" {
		if len(pos) == 0 {
			return fmt.Errorf("%s: name the VM or pass --api-socket", cmd)
		}
		*sock = api.SocketPath(pos[0])
		pos = pos[1:]
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c := api.NewClient(*sock)
	switch cmd {
	case "status":
		s, err := c.Status(ctx)
		if err != nil {
			return err
		}
		return printStatus(stdout, s, *asJSON)
	case "pause":
		s, err := c.Pause(ctx)
		if err != nil {
			return err
		}
		return printStatus(stdout, s, *asJSON)
	case "resume":
		s, err := c.Resume(ctx)
		if err != nil {
			return err
		}
		return printStatus(stdout, s, *asJSON)
	case "stop":
		return c.Stop(ctx)
	case "console":
		if len(pos) == 0 {
			return errors.New("console: give the text to type")
		}
		return c.Console(ctx, []byte(strings.Join(pos, " ")+"\n"))
	}
	return nil
}

// parseInterleaved parses flags that may come before or after positional
// arguments (`godwit status vm1 --json`).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func printStatus(w io.Writer, s vm.Status, asJSON bool) error {
	if asJSON {
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(s)
	}
	fmt.Fprintf(w, "name:    %s\nstate:   %s\naccel:   %s\nvcpus:   %d\nmemory:  %d MiB\nkernel:  %s\nuptime:  %.1f s\nexits:   %d\n",
		s.Name, s.State, s.Accel, s.VCPUs, s.MemMiB, s.Kernel, s.UptimeSec, s.Exits)
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
