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
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/godwit-vmm/godwit/internal/vmmcmd"
)

const usage = `godwit-vmm: one Godwit VM in this process

Usage:
  godwit-vmm run --name NAME --kernel FILE [flags]   (see godwit-vmm run -h)
  godwit-vmm run --incoming tcp:HOST:PORT --name NAME [flags]
`

func main() {
	args := os.Args[1:]
	switch {
	case len(args) == 0:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(os.Stdout, usage)
		return
	case args[0] != "run":
		fmt.Fprintf(os.Stderr, "godwit-vmm: unknown command %q (only run)\n", args[0])
		os.Exit(2)
	}
	err := vmmcmd.Run(args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "godwit-vmm:", err)
		os.Exit(1)
	}
}
