package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/godwit-vmm/godwit/internal/cli"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	"github.com/godwit-vmm/godwit/internal/limits"
	"github.com/godwit-vmm/godwit/internal/pki"
)

// The pool commands talk to the controller's API (package poolapi).

// poolFlags are the flags every pool command takes.
type poolFlags struct {
	controller string
	credential string
	asJSON     bool
	timeout    time.Duration
}

func (f *poolFlags) register(fs *pflag.FlagSet) {
	def := os.Getenv("GODWIT_CONTROLLER")
	if def == "" {
		def = "https://127.0.0.1:7700"
	}
	fs.StringVar(&f.controller, "controller", def, "controller API URL (default $GODWIT_CONTROLLER)")
	fs.StringVar(&f.credential, "credential", os.Getenv("GODWIT_CREDENTIAL"), "your credential directory: ca.pem, cert.pem, key.pem (default $GODWIT_CREDENTIAL)")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON for scripts")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
}

// client builds the API client with the user's credential.
func (f *poolFlags) client() (*poolapi.Client, error) {
	if f.credential == "" {
		return nil, errors.New("no credential: pass --credential DIR or set $GODWIT_CREDENTIAL (godwit pki issue --role user makes one)")
	}
	cred, err := pki.LoadCredential(f.credential)
	if err != nil {
		return nil, err
	}
	if r := cred.Peer().Role; r != pki.RoleUser && r != pki.RoleController {
		return nil, fmt.Errorf("--credential %s is %s's: the controller takes a user's (godwit pki issue --role user)", f.credential, cred.Peer())
	}
	u := strings.TrimRight(f.controller, "/")
	if !strings.Contains(u, "://") {
		u = "https://" + u
	}
	if strings.HasPrefix(u, "http://") {
		return nil, fmt.Errorf("--controller %s: the controller serves HTTPS only", f.controller)
	}
	return poolapi.NewClient(u, cred.ClientConfig("", pki.AllowRoles(pki.RoleController))), nil
}

// connect builds the API client and a context that ends after timeout.
func (f *poolFlags) connect(timeout time.Duration) (*poolapi.Client, context.Context, context.CancelFunc, error) {
	c, err := f.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	return c, ctx, cancel, nil
}

// printRows prints name/value rows as two aligned columns.
func printRows(w io.Writer, rows [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// hostCommand is `godwit host ...`: the pool's hosts and their
// maintenance.
func hostCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &poolFlags{}
	c := &cobra.Command{
		Use:   "host",
		Short: "Hosts of the pool, and their maintenance (drain, activate)",
		Example: `  godwit host list
  godwit host show a
  godwit host drain b --watch`,
	}
	f.register(c.PersistentFlags())
	list := &cobra.Command{
		Use:     "list",
		Short:   "Hosts, their state and what is placed on them",
		Example: "  godwit host list --json",
		Args:    cobra.NoArgs,
		RunE:    func(*cobra.Command, []string) error { return hostList(f, stdout) },
	}
	show := &cobra.Command{
		Use:     "show HOST",
		Short:   "One host's facts, load and VMs",
		Example: "  godwit host show a",
		Args:    cli.Args("HOST"),
		RunE:    func(_ *cobra.Command, args []string) error { return hostShow(f, args[0], stdout) },
	}
	return cli.Group(c, list, show, hostDrainCommand(f, stdout, stderr), hostActivateCommand(f, stdout))
}

func hostList(f *poolFlags, stdout io.Writer) error {
	c, ctx, cancel, err := f.connect(f.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	hosts, err := c.Hosts(ctx)
	if err != nil {
		return err
	}
	if f.asJSON {
		return printJSON(stdout, hosts)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tALIVE\tACCEL\tCPUS\tALLOC-VCPUS\tMEMORY\tALLOC-MEM\tVMS\tADDR")
	for _, h := range hosts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\t%s\n", h.Name, dash(h.State), yesNo(h.Alive), dash(h.Accel), h.CPUs,
			h.AllocVCPUs, humanBytes(h.MemBytes), humanBytes(h.AllocMemBytes), len(h.VMs), dash(h.Addr))
	}
	return tw.Flush()
}

func hostShow(f *poolFlags, name string, stdout io.Writer) error {
	c, ctx, cancel, err := f.connect(f.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	h, err := c.Host(ctx, name)
	if err != nil {
		return err
	}
	if f.asJSON {
		return printJSON(stdout, h)
	}
	state := dash(h.State)
	if h.StateReason != "" {
		state += " (" + h.StateReason + ")"
	}
	rows := [][2]string{
		{"host", h.Name}, {"state", state}, {"alive", yesNo(h.Alive)}, {"addr", dash(h.Addr)},
		{"accel", dash(h.Accel)}, {"cpuid", dash(h.CPUIDHash)}, {"tsc", fmt.Sprintf("%d kHz", h.TSCKHz)},
		{"cpus", fmt.Sprintf("%d (%d vCPUs allocated)", h.CPUs, h.AllocVCPUs)},
		{"memory", fmt.Sprintf("%s (%s allocated, overhead included)", humanBytes(h.MemBytes), humanBytes(h.AllocMemBytes))},
		{"storage", dash(strings.Join(h.StorageIDs, ", "))}, {"networks", dash(strings.Join(h.Networks, ", "))},
		{"agent", dash(h.Agent)}, {"vms", dash(strings.Join(h.VMs, ", "))},
	}
	if u := h.Usage; u != nil {
		rows = append(rows, [2]string{"load", fmt.Sprintf("cpu %.0f%%, %s used by VMs, dirty %s/s, at %s",
			u.CPU*100, humanBytes(u.MemUsedBytes), humanBytes(uint64(u.DirtyRate)), u.At.Format(time.RFC3339))})
	}
	return printRows(stdout, rows)
}

// parseDisk parses PATH[,storage=ID][,ro]. Without storage= the storage ID
// is the image's directory: a shared directory names the storage.
func parseDisk(s string) (store.DiskSpec, error) {
	parts := strings.Split(s, ",")
	d := store.DiskSpec{Path: parts[0]}
	if d.Path == "" {
		return d, fmt.Errorf("--disk %q: give the image path first", s)
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "storage":
			d.StorageID = v
		case "ro":
			d.ReadOnly = true
		default:
			return d, fmt.Errorf("--disk %q: unknown option %q (storage=ID, ro)", s, p)
		}
	}
	if d.StorageID == "" {
		d.StorageID = filepath.Dir(d.Path)
	}
	return d, nil
}

// parseNIC parses BRIDGE[,mac=MAC].
func parseNIC(s string) (store.NICSpec, error) {
	parts := strings.Split(s, ",")
	n := store.NICSpec{Network: parts[0]}
	if n.Network == "" {
		return n, fmt.Errorf("--nic %q: give the bridge (network) first", s)
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		if k != "mac" {
			return n, fmt.Errorf("--nic %q: unknown option %q (mac=MAC)", s, p)
		}
		n.MAC = v
	}
	return n, nil
}

// vmCommand is `godwit vm ...`: the pool's VMs.
func vmCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &poolFlags{}
	c := &cobra.Command{
		Use:   "vm",
		Short: "VMs of the pool: create, list, show, start, stop, delete, migrate, console",
		Example: `  godwit vm create web1 --kernel /srv/guest.elf --mem 1G --cpus 2 --nic br0 --ha
  godwit vm list
  godwit vm migrate web1 --to b --wait`,
	}
	f.register(c.PersistentFlags())
	byName := func(verb, short, example string, run func(*poolapi.Client, context.Context, string) (any, string, error)) *cobra.Command {
		return &cobra.Command{
			Use: verb + " NAME", Short: short, Example: example, Args: cli.Args("NAME"),
			RunE: func(_ *cobra.Command, args []string) error { return vmByName(f, args[0], run, stdout) },
		}
	}
	show := byName("show", "One VM: its spec, placement, status and migration", "  godwit vm show web1 --json",
		func(c *poolapi.Client, ctx context.Context, name string) (any, string, error) {
			v, err := c.VM(ctx, name)
			return v, "", err
		})
	start := byName("start", "Set a VM's desired state to running", "  godwit vm start web1", vmDesired(true))
	stop := byName("stop", "Set a VM's desired state to stopped (its VMM stops)", "  godwit vm stop web1", vmDesired(false))
	del := byName("delete", "Delete a VM (stopping it)", "  godwit vm delete web1",
		func(c *poolapi.Client, ctx context.Context, name string) (any, string, error) {
			return map[string]string{"deleted": name}, fmt.Sprintf("vm %s deleted", name), c.DeleteVM(ctx, name)
		})
	list := &cobra.Command{
		Use: "list", Short: "The pool's VMs, their phase, host and migration", Example: "  godwit vm list --json", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return vmList(f, stdout) },
	}
	return cli.Group(c, vmCreateCommand(f, stdout), list, show, start, stop, del, vmMigrateCommand(f, stdout, stderr), vmConsoleCommand(f, stdout, stderr))
}

// vmByName runs one request about the VM name and prints its answer: as
// JSON, as the text line it returns, or as a VM.
func vmByName(f *poolFlags, name string, run func(*poolapi.Client, context.Context, string) (any, string, error), stdout io.Writer) error {
	c, ctx, cancel, err := f.connect(f.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	v, line, err := run(c, ctx, name)
	switch {
	case err != nil:
		return err
	case f.asJSON:
		return printJSON(stdout, v)
	case line != "":
		_, err := fmt.Fprintln(stdout, line)
		return err
	}
	return printVM(stdout, v.(poolapi.VM), false)
}

// vmDesired is vm start (running) or vm stop.
func vmDesired(running bool) func(*poolapi.Client, context.Context, string) (any, string, error) {
	return func(c *poolapi.Client, ctx context.Context, name string) (any, string, error) {
		call := c.StopVM
		if running {
			call = c.StartVM
		}
		v, err := call(ctx, name)
		return v, fmt.Sprintf("vm %s: desired %s, phase %s, host %s", v.Name, v.Spec.Desired, v.Phase, dash(v.Host)), err
	}
}

func vmList(f *poolFlags, stdout io.Writer) error {
	c, ctx, cancel, err := f.connect(f.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	vms, err := c.VMs(ctx)
	if err != nil {
		return err
	}
	if f.asJSON {
		return printJSON(stdout, vms)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tPHASE\tDESIRED\tHOST\tVCPUS\tMEMORY\tMIGRATION")
	for _, v := range vms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", v.Name, v.Phase, v.Spec.Desired, dash(v.Host),
			v.Spec.VCPUs, humanBytes(v.Spec.MemBytes), migrationSummary(v.Migration))
	}
	return tw.Flush()
}

// vmCreateFlags are the flags of `godwit vm create`.
type vmCreateFlags struct {
	kernel, initrd, cmdline, mem, onHost, cpus string
	haPriority                                 int
	disks, nics                                []string
	ha, stopped                                bool
}

// vmCreateCommand is `godwit vm create NAME --kernel FILE ...`.
func vmCreateCommand(pf *poolFlags, stdout io.Writer) *cobra.Command {
	f := &vmCreateFlags{}
	c := &cobra.Command{
		Use:   "create NAME --kernel FILE [flags]",
		Short: "Create a VM in the pool; the controller places and starts it",
		Example: `  godwit vm create web1 --kernel /srv/guest.elf --mem 1G --cpus 2
  godwit vm create db1 --kernel /srv/guest.elf --disk /srv/pool/db1.img,storage=pool --nic br0 --ha --ha-priority 10
  godwit vm create lx1 --kernel /srv/vmlinux --initrd /srv/initramfs.cpio.gz --cmdline "console=ttyS0 nokaslr" --mem 512M`,
		Args: cli.Args("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.request(cmd, args[0])
			if err != nil {
				return err
			}
			c, ctx, cancel, err := pf.connect(pf.timeout)
			if err != nil {
				return err
			}
			defer cancel()
			v, err := c.CreateVM(ctx, req)
			if err != nil {
				return err
			}
			return printVM(stdout, v, pf.asJSON)
		},
	}
	fs := c.Flags()
	fs.StringVar(&f.kernel, "kernel", "", "guest kernel: a multiboot ELF, a Linux bzImage or a Linux vmlinux (the same path on every host)")
	fs.StringVar(&f.initrd, "initrd", "", "initramfs of a Linux kernel (the same path on every host)")
	fs.StringVar(&f.cmdline, "cmdline", "", "guest command line")
	fs.StringVar(&f.mem, "mem", "512M", "guest memory, "+limits.FormatBytes(limits.MinMemBytes)+" to "+limits.FormatBytes(limits.MaxMemBytes)+" in 2M steps: "+limits.SizeGrammar+"; a bare number is MiB")
	fs.StringVar(&f.cpus, "cpus", "1", fmt.Sprintf("vCPUs, 1 to %d", limits.MaxVCPUs))
	fs.StringArrayVar(&f.disks, "disk", nil, "PATH[,storage=ID][,ro]; repeatable")
	fs.StringArrayVar(&f.nics, "nic", nil, "BRIDGE[,mac=MAC]; repeatable")
	fs.StringVar(&f.onHost, "host", "", "place on this host (checked like any placement)")
	fs.BoolVar(&f.ha, "ha", false, "restart elsewhere if its host is lost")
	fs.IntVar(&f.haPriority, "ha-priority", 0, "HA restart order: higher restarts first (implies --ha)")
	fs.BoolVar(&f.stopped, "stopped", false, "create without starting")
	return c
}

// request checks the flags and builds the create request; the shape is
// checked here as the controller and the VMM check it.
func (f *vmCreateFlags) request(cmd *cobra.Command, name string) (poolapi.CreateVMRequest, error) {
	var req poolapi.CreateVMRequest
	if f.kernel == "" {
		return req, cli.Usagef(cmd, "--kernel is required")
	}
	memBytes, err := limits.ParseMem(f.mem)
	if err != nil {
		return req, cli.Usagef(cmd, "--mem: %v", err)
	}
	cpus, err := limits.ParseVCPUs(f.cpus)
	if err != nil {
		return req, cli.Usagef(cmd, "--cpus: %v", err)
	}
	if f.haPriority < 0 {
		return req, cli.Usagef(cmd, "--ha-priority %d: want 0 or more", f.haPriority)
	}
	spec := store.VMSpec{VCPUs: cpus, MemBytes: memBytes, Kernel: f.kernel, Initrd: f.initrd, Cmdline: f.cmdline,
		HA: store.HASpec{Restart: f.ha || cmd.Flags().Changed("ha-priority"), Priority: f.haPriority}}
	if f.stopped {
		spec.Desired = store.DesiredStopped
	}
	for _, s := range f.disks {
		d, err := parseDisk(s)
		if err != nil {
			return req, cli.Usagef(cmd, "%v", err)
		}
		spec.Disks = append(spec.Disks, d)
	}
	for _, s := range f.nics {
		n, err := parseNIC(s)
		if err != nil {
			return req, cli.Usagef(cmd, "%v", err)
		}
		spec.NICs = append(spec.NICs, n)
	}
	if err := limits.CheckName("VM", name); err != nil {
		return req, cli.Usagef(cmd, "%v", err)
	}
	if err := spec.Shape(name).Check(); err != nil {
		return req, cli.Usagef(cmd, "%v", err)
	}
	return poolapi.CreateVMRequest{Name: name, Spec: spec, Host: f.onHost}, nil
}

// vmMigrateFlags are the flags of `godwit vm migrate`.
type vmMigrateFlags struct {
	to, bandwidth     string
	wait, cancel, set bool
	downtime          time.Duration
}

// vmMigrateCommand is `godwit vm migrate NAME [--to HOST] ...`.
func vmMigrateCommand(pf *poolFlags, stdout, stderr io.Writer) *cobra.Command {
	f := &vmMigrateFlags{}
	c := &cobra.Command{
		Use:   "migrate NAME [--to HOST] [--bandwidth B] [--downtime D] [--wait] | --set ... | --cancel",
		Short: "Live-migrate a VM to another host of the pool (placement picks one without --to)",
		Example: `  godwit vm migrate web1 --to b --wait
  godwit vm migrate web1 --bandwidth 100M --downtime 30ms
  godwit vm migrate web1 --set --bandwidth 0
  godwit vm migrate web1 --cancel --wait`,
		Args: cli.Args("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error { return f.run(cmd, pf, args[0], stdout, stderr) },
	}
	fs := c.Flags()
	fs.StringVar(&f.to, "to", "", "destination host (default: placement picks one)")
	fs.BoolVar(&f.wait, "wait", false, "wait until the migration ends, showing its progress")
	fs.StringVar(&f.bandwidth, "bandwidth", "0", "bandwidth cap in bytes/s: "+limits.SizeGrammar+" (0: none)")
	fs.BoolVar(&f.cancel, "cancel", false, "cancel the VM's migration under way (the VM stays where it runs)")
	fs.DurationVar(&f.downtime, "downtime", 0, "downtime target, 1ms to 1m (default: the VMM's, 50ms)")
	fs.BoolVar(&f.set, "set", false, "change the --bandwidth and --downtime of the migration under way")
	c.MarkFlagsMutuallyExclusive("set", "cancel")
	c.MarkFlagsMutuallyExclusive("set", "to")
	c.MarkFlagsMutuallyExclusive("set", "wait")
	c.MarkFlagsMutuallyExclusive("cancel", "to")
	c.MarkFlagsMutuallyExclusive("cancel", "bandwidth")
	c.MarkFlagsMutuallyExclusive("cancel", "downtime")
	return c
}

func (f *vmMigrateFlags) run(cmd *cobra.Command, pf *poolFlags, name string, stdout, stderr io.Writer) error {
	fs := cmd.Flags()
	bw, err := limits.ParseBandwidth(f.bandwidth)
	if err != nil {
		return cli.Usagef(cmd, "--bandwidth: %v", err)
	}
	if fs.Changed("downtime") {
		if err := limits.CheckDuration(f.downtime, time.Millisecond, time.Minute); err != nil {
			return cli.Usagef(cmd, "--downtime %v", err)
		}
	}
	downMs := float64(f.downtime) / float64(time.Millisecond)
	if f.set && !fs.Changed("bandwidth") && !fs.Changed("downtime") {
		return cli.Usagef(cmd, "--set: give --bandwidth and/or --downtime")
	}
	timeout := pf.timeout
	if f.wait && !fs.Changed("timeout") {
		timeout = 10 * time.Minute
	}
	c, ctx, cancel, err := pf.connect(timeout)
	if err != nil {
		return err
	}
	defer cancel()
	var m store.Migration
	switch {
	case f.set:
		var l poolapi.MigrationLimits
		if fs.Changed("bandwidth") {
			l.Bandwidth = &bw
		}
		if fs.Changed("downtime") {
			l.DowntimeMs = &downMs
		}
		m, err := c.SetMigrationLimits(ctx, name, l)
		if err != nil {
			return err
		}
		if pf.asJSON {
			return printJSON(stdout, m)
		}
		fmt.Fprintf(stdout, "migration %s of vm %s: bandwidth %s, downtime target %s; its source takes them within a second\n",
			m.ID, m.VM, bandwidthText(m.Bandwidth), downtimeText(m.DowntimeMs))
		return nil
	case f.cancel:
		m, err = c.CancelMigration(ctx, name)
	default:
		m, err = c.MigrateVM(ctx, name, poolapi.MigrateRequest{To: f.to, Bandwidth: bw, DowntimeMs: downMs})
	}
	if err != nil {
		return err
	}
	if !f.wait {
		if pf.asJSON {
			return printJSON(stdout, m)
		}
		if f.cancel {
			fmt.Fprintf(stdout, "migration %s of vm %s (%s → %s): cancel asked for; --wait shows the end\n", m.ID, m.VM, m.Src, m.Dst)
		} else {
			fmt.Fprintf(stdout, "migration %s: vm %s %s → %s %s (owner revision %d)\n", m.ID, m.VM, m.Src, m.Dst, m.Phase, m.ExpectOwnerRev)
		}
		return nil
	}
	return f.waitEnd(ctx, c, m, pf.asJSON, stdout, stderr)
}

// waitEnd follows the migration m to its end and reports it.
func (f *vmMigrateFlags) waitEnd(ctx context.Context, c *poolapi.Client, m store.Migration, asJSON bool, stdout, stderr io.Writer) error {
	progress := stdout
	if asJSON {
		progress = stderr
	}
	fmt.Fprintf(progress, "migration %s: vm %s %s → %s\n", m.ID, m.VM, m.Src, m.Dst)
	final, err := waitMigration(ctx, c, m, progress)
	if err != nil {
		return err
	}
	if asJSON {
		if err := printJSON(stdout, final); err != nil {
			return err
		}
	}
	switch {
	case f.cancel && final.Phase != store.MigrationCommitted:
		if !asJSON {
			fmt.Fprintf(stdout, "migration %s cancelled; vm %s stays on %s\n", final.ID, final.VM, final.Src)
		}
		return nil
	case final.Phase != store.MigrationCommitted:
		return fmt.Errorf("migration %s of vm %s %s: %s (the VM stays on %s)", final.ID, final.VM, final.Phase, cmp.Or(final.Error, "no reason given"), final.Src)
	case !asJSON:
		fmt.Fprintf(stdout, "vm %s now runs on %s\n", final.VM, final.Dst)
	}
	return nil
}

// waitMigration polls the record of m until it ends, printing each change.
func waitMigration(ctx context.Context, c *poolapi.Client, m store.Migration, w io.Writer) (store.Migration, error) {
	last := ""
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		cur, err := c.Migration(ctx, m.VM)
		if err != nil {
			return m, err
		}
		if cur.ID != m.ID {
			return cur, fmt.Errorf("migration %s of vm %s was replaced by migration %s", m.ID, m.VM, cur.ID)
		}
		line := string(cur.Phase)
		switch {
		case cur.Phase.Terminal():
		case cur.Round > 0:
			line += fmt.Sprintf("  round %d, %s sent, %s to go", cur.Round, humanBytes(cur.SentBytes), humanBytes(cur.RemainingBytes))
		case cur.SentBytes > 0:
			line += fmt.Sprintf("  first round, %s sent", humanBytes(cur.SentBytes))
		}
		if cur.Cancel != "" && !cur.Phase.Terminal() {
			line += "  (cancel asked for: " + cur.Cancel + ")"
		}
		if line != last {
			fmt.Fprintf(w, "  %s  %s\n", time.Now().Format("15:04:05.000"), line)
			last = line
		}
		if cur.Phase.Terminal() {
			return cur, nil
		}
		select {
		case <-ctx.Done():
			return cur, fmt.Errorf("migration %s of vm %s still %s after the --timeout; it goes on (godwit vm show %s)", m.ID, m.VM, cur.Phase, m.VM)
		case <-tick.C:
		}
	}
}

func migrationSummary(m *store.Migration) string {
	if m == nil {
		return "-"
	}
	return fmt.Sprintf("%s→%s %s", m.Src, m.Dst, m.Phase)
}

func printVM(w io.Writer, v poolapi.VM, asJSON bool) error {
	if asJSON {
		return printJSON(w, v)
	}
	rows := [][2]string{
		{"vm", v.Name}, {"phase", v.Phase}, {"desired", string(v.Spec.Desired)},
		{"host", dash(v.Host)},
		{"vcpus", strconv.Itoa(v.Spec.VCPUs)}, {"memory", humanBytes(v.Spec.MemBytes)},
		{"kernel", v.Spec.Kernel}, {"initrd", dash(v.Spec.Initrd)}, {"cmdline", dash(v.Spec.Cmdline)},
	}
	if v.Host != "" {
		rows = append(rows, [2]string{"owner rev", strconv.FormatInt(v.OwnerRev, 10)})
	}
	for i, d := range v.Spec.Disks {
		s := d.Path + " (storage " + d.StorageID
		if d.ReadOnly {
			s += ", read-only"
		}
		rows = append(rows, [2]string{fmt.Sprintf("disk %d", i), s + ")"})
	}
	for i, n := range v.Spec.NICs {
		rows = append(rows, [2]string{fmt.Sprintf("nic %d", i), n.Network + " " + n.MAC})
	}
	if v.Spec.HA.Restart {
		rows = append(rows, [2]string{"ha", fmt.Sprintf("restart, priority %d", v.Spec.HA.Priority)})
	}
	if s := v.Status; s != nil {
		st := fmt.Sprintf("%s on %s", s.Phase, s.Host)
		if s.PID != 0 {
			st += fmt.Sprintf(", pid %d", s.PID)
		}
		if s.Reason != "" {
			st += ", " + s.Reason
		}
		rows = append(rows, [2]string{"status", st})
	}
	if m := v.Migration; m != nil {
		s := fmt.Sprintf("%s %s → %s %s (%s)", m.ID, m.Src, m.Dst, m.Phase, dash(m.Reason))
		if !m.Phase.Terminal() {
			s += fmt.Sprintf(", %s sent", humanBytes(m.SentBytes))
			if m.Round > 0 {
				s += fmt.Sprintf(", round %d, %s to go", m.Round, humanBytes(m.RemainingBytes))
			}
			s += fmt.Sprintf("; bandwidth %s, downtime target %s", bandwidthText(m.Bandwidth), downtimeText(m.DowntimeMs))
		}
		if m.Cancel != "" {
			s += "; cancel asked for: " + m.Cancel
		}
		if m.Error != "" {
			s += ": " + m.Error
		}
		rows = append(rows, [2]string{"migration", s})
	}
	return printRows(w, rows)
}

// clusterCommand is `godwit cluster status`.
func clusterCommand(stdout io.Writer) *cobra.Command {
	f := &poolFlags{}
	c := &cobra.Command{
		Use:     "cluster",
		Short:   "The pool as a whole: leader, members, hosts, VMs",
		Example: "  godwit cluster status",
	}
	f.register(c.PersistentFlags())
	status := &cobra.Command{
		Use:     "status",
		Short:   "Leader, controllers, etcd, hosts, VMs, migrations and HA",
		Example: "  godwit cluster status --json",
		Args:    cobra.NoArgs,
		RunE:    func(*cobra.Command, []string) error { return clusterStatus(f, stdout) },
	}
	return cli.Group(c, status)
}

func clusterStatus(f *poolFlags, stdout io.Writer) error {
	c, ctx, cancel, err := f.connect(f.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	cs, err := c.Cluster(ctx)
	if err != nil {
		return err
	}
	if f.asJSON {
		return printJSON(stdout, cs)
	}
	leader := "none elected"
	if cs.Leader != "" {
		leader = cs.Leader
		if cs.LeaderURL != "" {
			leader += " at " + cs.LeaderURL
		}
	}
	role := "follower"
	if cs.Leading {
		role = "leader"
	}
	var members []string
	for _, m := range cs.Members {
		members = append(members, m.ID)
	}
	etcd := strings.Join(cs.Etcd, ",")
	if cs.Embedded {
		etcd += " (embedded in " + cs.This + ")"
	}
	return printRows(stdout, [][2]string{
		{"pool", cs.Pool},
		{"leader", leader},
		{"answered by", cs.This + " (" + role + ")"},
		{"controllers", dash(strings.Join(members, ", "))},
		{"etcd", etcd},
		{"hosts", fmt.Sprintf("%d: %d up, %d lost; %s", cs.Hosts.Total, cs.Hosts.Up, cs.Hosts.Lost, counts(cs.Hosts.ByState))},
		{"vms", fmt.Sprintf("%d: %s", cs.VMs.Total, counts(cs.VMs.ByPhase))},
		{"migrations", fmt.Sprintf("%d in flight; %s", cs.Migrations.InFlight, counts(cs.Migrations.ByPhase))},
		{"ha restart", haSummary(cs.HA)},
	})
}

// counts prints a map as "a 1, b 2" in key order.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// downtimeText prints a downtime target in ms (0: the VMM's default).
func downtimeText(ms float64) string {
	if ms == 0 {
		return "default"
	}
	return fmt.Sprintf("%g ms", ms)
}
