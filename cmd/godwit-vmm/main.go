// Command godwit-vmm is the VMM alone: `godwit-vmm run ...` takes the same
// flags as `godwit run` and runs one VM in this process.
//
// It is what a host agent starts for each VM (godwit agent --godwit). It
// links no etcd server, no controller or agent, no Prometheus: only the VM,
// its devices, the migration engine and an etcd client for the VM's owner
// key. Built without cgo, it can apply its seccomp filter and drop its
// capabilities on every thread once the VM runs (package sandbox).
package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/godwit-vmm/godwit/internal/cli"
	"github.com/godwit-vmm/godwit/internal/vmmcmd"
)

func main() {
	os.Exit(cli.Execute(newRoot(os.Stdout, os.Stderr), os.Args[1:], os.Stdout, os.Stderr))
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "godwit-vmm",
		Short: "One Godwit VM in this process (the VMM host agents start)",
		Example: `  godwit-vmm run --name vm1 --kernel guest.elf --mem 1G
  godwit-vmm run --name vm1 --incoming tcp:10.0.0.2:4400`,
	}
	return cli.Group(root, vmmcmd.Command("godwit-vmm", stderr), vmmcmd.FeaturesCommand(stdout), cli.VersionCommand("godwit-vmm", stdout))
}
