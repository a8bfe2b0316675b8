package vmmcmd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/godwit-vmm/godwit/internal/accel"
	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/cli"
	"github.com/godwit-vmm/godwit/internal/limits"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// runFlags are the command line of `godwit run`.
type runFlags struct {
	name, kernel, cmdline, mem    string
	initrd, onReboot              string
	cpus                          string
	tap, mac, bridge              string
	announceRounds                int
	announceInitial, announceStep time.Duration
	disk                          string
	diskRO                        bool
	sock, console, logLevel       string
	etcd, ownerHost               string
	ownerLease, ownerRev          int64
	migrationID, fenceFile        string
	tlsDir, credential, peer      string
	runAs                         string
	noSandbox, insecure           bool
	selftest                      time.Duration
	accel, incoming               string
}

// internalFlags are set by the host agent, not by people: hidden from
// the help, still accepted.
var internalFlags = []string{"etcd", "owner-host", "owner-lease", "owner-rev", "migration-id", "fence-file",
	"credential", "migration-peer", "seccomp-selftest"}

// Features are what this VMM supports of the host agent's protocol, one
// per line of `godwit-vmm features`: the agent checks them before it
// starts VMMs of this binary.
var Features = []string{"fence-file", "owner-handover"}

func (f *runFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "VM name ("+limits.NameGrammar+"); names the API socket /run/godwit/NAME.sock")
	fs.StringVar(&f.kernel, "kernel", "", "guest kernel: a multiboot v1 ELF (the test guest), a Linux bzImage, or a Linux vmlinux with a PVH entry (boots faster: no decompressor)")
	fs.StringVar(&f.cmdline, "cmdline", "", "guest kernel command line")
	fs.StringVar(&f.initrd, "initrd", "", "initial ramdisk (e.g. a cpio archive) for a Linux --kernel")
	fs.StringVar(&f.onReboot, "on-reboot", vm.RebootRestart, "what a guest reboot does: restart (reset the machine and boot --kernel again) or stop (end the VM)")
	fs.StringVar(&f.mem, "mem", "256M", "guest RAM, "+limits.FormatBytes(limits.MinMemBytes)+" to "+limits.FormatBytes(limits.MaxMemBytes)+
		" in 2M steps: "+limits.SizeGrammar+"; a bare number is MiB")
	fs.StringVar(&f.cpus, "cpus", "1", fmt.Sprintf("number of vCPUs, 1 to %d", limits.MaxVCPUs))
	fs.StringVar(&f.tap, "tap", "", "add a virtio-net device on this TAP interface (created by the VMM)")
	fs.StringVar(&f.mac, "mac", "", "guest MAC address for --tap (default: derived from --name)")
	fs.StringVar(&f.bridge, "bridge", "", "attach the --tap interface to this existing Linux bridge")
	fs.IntVar(&f.announceRounds, "announce-rounds", vm.DefaultAnnounce.Rounds, "with --incoming: RARP/GARP announcements after the VM arrives")
	fs.DurationVar(&f.announceInitial, "announce-initial", vm.DefaultAnnounce.Initial, "with --incoming: gap before the second announcement")
	fs.DurationVar(&f.announceStep, "announce-step", vm.DefaultAnnounce.Step, "with --incoming: growth of the gap per announcement")
	fs.StringVar(&f.disk, "disk", "", "add a virtio-blk device on this raw image file")
	fs.BoolVar(&f.diskRO, "disk-readonly", false, "attach --disk read-only")
	fs.StringVar(&f.sock, "api-socket", "", "API socket path (default /run/godwit/NAME.sock)")
	fs.StringVar(&f.console, "console", "stdio", "serial console: stdio (terminal both ways; Ctrl-A x quits) or none")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.tlsDir, "migration-tls-dir", "", "migrate over TLS, in and out: DIR holds ca.pem, cert.pem and key.pem (peers need certificates of that CA)")
	fs.StringVar(&f.runAs, "run-as", "", "once the VM runs, switch to this unprivileged user: a name (nobody) or UID:GID")
	fs.BoolVar(&f.noSandbox, "no-sandbox", false, "do not install the seccomp filter nor drop capabilities once the VM runs (debugging only)")
	fs.BoolVar(&f.insecure, "insecure-migration", false, "allow --incoming without TLS on an address other than loopback: anyone who reaches the port can supply the VM")
	fs.StringVar(&f.accel, "accel", accel.Auto, "accelerator: auto (KVM when /dev/kvm exists, else the software CPU), kvm or emu")
	fs.StringVar(&f.incoming, "incoming", "", "wait for the VM to arrive by live migration on tcp:HOST:PORT (its shape comes from the source; a VM with a disk needs --disk, this host's path to its image)")
	// Set by the host agent.
	fs.StringVar(&f.etcd, "etcd", "", "pool member: etcd endpoints for the VM's owner key")
	fs.StringVar(&f.ownerHost, "owner-host", "", "pool member: this host's name (with --etcd)")
	fs.Int64Var(&f.ownerLease, "owner-lease", 0, "pool member: this host's lease ID (with --etcd)")
	fs.Int64Var(&f.ownerRev, "owner-rev", 0, "with --incoming in a pool: the owner key's revision when the migration started")
	fs.StringVar(&f.migrationID, "migration-id", "", "with --incoming in a pool: the migration's ID")
	fs.StringVar(&f.fenceFile, "fence-file", "", "the host agent's lease deadline file: stop the VM once the deadline passes")
	fs.StringVar(&f.credential, "credential", "", "pool member: the host's credential directory; etcd and migrations use it")
	fs.StringVar(&f.peer, "migration-peer", "", "with --incoming and --credential: the only host whose certificate may send the VM")
	fs.DurationVar(&f.selftest, "seccomp-selftest", 0, "test aid: this long after the sandbox is on, make a forbidden system call")
	for _, n := range internalFlags {
		if err := fs.MarkHidden(n); err != nil {
			panic(err)
		}
	}
}

// Command is `godwit run` (and `godwit-vmm run`): one VM in this process
// until it stops.
func Command(prog string, stderr io.Writer) *cobra.Command {
	f := &runFlags{}
	c := &cobra.Command{
		Use:   "run --name NAME (--kernel FILE | --incoming tcp:HOST:PORT) [flags]",
		Short: "Run one VM in this process until it stops",
		Long: `Run one VM in this process until it stops. Its API socket (--api-socket,
default /run/godwit/NAME.sock) serves godwit status, pause, resume, stop,
console and migrate. With --incoming the VMM waits for the VM to arrive by
live migration instead of booting one; give it --kernel (and --initrd,
--cmdline) too and a guest that reboots after the move boots them.`,
		Example: strings.ReplaceAll(`  PROG run --name vm1 --kernel guest/build/guest.elf --mem 1G --cpus 2
  PROG run --name vm1 --kernel vmlinuz --initrd initrd.cpio --cmdline "console=ttyS0" --mem 512M
  PROG run --name vm1 --kernel guest.elf --tap tap0 --bridge br0 --disk vm1.img
  PROG run --name vm1 --incoming tcp:127.0.0.1:4444 --console none`, "PROG", prog),
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			p, err := f.plan(stderr)
			if err != nil {
				return &cli.UsageError{Cmd: c, Err: err}
			}
			return p.run()
		},
	}
	f.register(c.Flags())
	return c
}

// FeaturesCommand is `godwit-vmm features`, hidden: what the host agent
// checks of its VMM binary before it starts VMs with it.
func FeaturesCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "features",
		Short:  "Print what this VMM supports of the host agent's protocol",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, strings.Join(Features, "\n"))
			return err
		},
	}
}

// runPlan is what the command line asks for, checked: the VM's
// configuration and how this process hosts it.
type runPlan struct {
	f          *runFlags
	cfg        vm.Config
	log        *slog.Logger
	sec        *migrationSecurity
	runAs      user
	listenAddr string // "" boots the VM; else the address it arrives on
	stderr     io.Writer
}

// plan checks the command line and builds the VM's configuration; it
// creates nothing.
func (f *runFlags) plan(stderr io.Writer) (*runPlan, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", f.logLevel)
	}
	p := &runPlan{f: f, stderr: stderr, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	memBytes, err := limits.ParseBytes(f.mem, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("--mem: %w", err)
	}
	cpus, err := limits.ParseVCPUs(f.cpus)
	if err != nil {
		return nil, fmt.Errorf("--cpus: %w", err)
	}
	if _, err := accel.Parse(f.accel); err != nil {
		return nil, fmt.Errorf("--accel: %w", err)
	}
	p.cfg = vm.Config{Name: f.name, MemBytes: memBytes, VCPUs: cpus, Kernel: f.kernel, Cmdline: f.cmdline, Initrd: f.initrd, Accel: f.accel,
		OnReboot: f.onReboot}
	if err := f.devices(&p.cfg); err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	if p.sec, err = loadMigrationSecurity(f.tlsDir, f.credential, f.peer); err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	if p.runAs, err = lookupRunAs(f.runAs); err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	if f.incoming == "" {
		if err := p.cfg.Validate(); err != nil {
			return nil, fmt.Errorf("%w", err)
		}
	} else {
		addr, ok := strings.CutPrefix(f.incoming, "tcp:")
		if !ok {
			return nil, fmt.Errorf("--incoming %q: use tcp:HOST:PORT", f.incoming)
		}
		p.listenAddr = addr
		if err := checkPlainIncoming(addr, p.sec, f.insecure, stderr); err != nil {
			return nil, fmt.Errorf("%w", err)
		}
		if err := p.cfg.ValidateIncoming(); err != nil {
			return nil, fmt.Errorf("%w", err)
		}
	}
	if f.etcd != "" && p.listenAddr != "" && (f.ownerRev == 0 || f.migrationID == "") {
		return nil, errors.New("an incoming VMM in a pool needs --owner-rev and --migration-id")
	}
	if f.sock == "" {
		f.sock = api.SocketPath(f.name)
	}
	return p, nil
}

// devices adds the NIC, the disk and the console the flags ask for.
func (f *runFlags) devices(cfg *vm.Config) error {
	if f.tap != "" {
		cfg.Net = &vm.NetConfig{TAP: f.tap, Bridge: f.bridge}
		if f.mac != "" {
			hw, err := net.ParseMAC(f.mac)
			if err != nil {
				return fmt.Errorf("--mac %q: %w", f.mac, err)
			}
			cfg.Net.MAC = hw
		}
	} else if f.mac != "" || f.bridge != "" {
		return errors.New("--mac and --bridge need --tap")
	}
	if f.disk != "" {
		cfg.Disk = &vm.DiskConfig{Path: f.disk, ReadOnly: f.diskRO}
	}
	switch f.console {
	case "stdio":
		cfg.Console = os.Stdout
	case "none":
	default:
		return fmt.Errorf("--console %q: use stdio or none", f.console)
	}
	return nil
}
