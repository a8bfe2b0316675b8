package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
	"github.com/godwit-vmm/godwit/internal/limits"
	"github.com/godwit-vmm/godwit/internal/pki"
)

// The pool commands talk to the controller's API (package poolapi).

const poolUsage = `godwit host|vm|cluster: the pool, through its controller

Usage:
  godwit host list                           hosts, their state and what is placed on them
  godwit host show HOST
  godwit host drain HOST [--concurrency N] [--on-blocked wait|shutdown|fail] [--watch]
  godwit host drain HOST --status | --cancel | --dry-run
  godwit host activate HOST
  godwit vm create NAME --kernel FILE [--cmdline S] [--mem 512M] [--cpus 1]
        [--disk PATH[,storage=ID][,ro]]... [--nic BRIDGE[,mac=MAC]]... [--host HOST]
        [--ha] [--ha-priority N] [--stopped]
  godwit vm list
  godwit vm show|start|stop|delete NAME
  godwit vm migrate NAME [--to HOST] [--bandwidth 100M] [--downtime 50ms] [--wait]
  godwit vm migrate NAME --set [--bandwidth B] [--downtime D]   change the limits under way
  godwit vm migrate NAME --cancel [--wait]
  godwit vm console NAME [--tail BYTES] [--follow]   the guest's serial console, on any host
  godwit vm console NAME --send TEXT                 type TEXT and a newline on it
  godwit cluster status
  godwit balance [--dry-run] [--moves N] [--apply N] [--level L]

Every command takes --controller URL (default $GODWIT_CONTROLLER or
https://127.0.0.1:7700), --credential DIR (default $GODWIT_CREDENTIAL: a user's
credential from godwit pki issue --role user), --json and --timeout.
`

// poolFlags are the flags every pool command takes.
type poolFlags struct {
	controller string
	credential string
	asJSON     bool
	timeout    time.Duration
}

func newPoolFlags(name string, stderr io.Writer) (*flag.FlagSet, *poolFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, poolUsage) }
	f := &poolFlags{}
	def := os.Getenv("GODWIT_CONTROLLER")
	if def == "" {
		def = "https://127.0.0.1:7700"
	}
	fs.StringVar(&f.controller, "controller", def, "controller API URL")
	fs.StringVar(&f.credential, "credential", os.Getenv("GODWIT_CREDENTIAL"), "your credential directory (ca.pem, cert.pem, key.pem)")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON for scripts")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
	return fs, f
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

// usageError prints the pool usage and returns msg as the error.
func usageError(stderr io.Writer, msg string) error {
	fmt.Fprint(stderr, poolUsage)
	return errors.New(msg)
}

func printJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

// printRows prints name/value rows as two aligned columns.
func printRows(w io.Writer, rows [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// parsePool parses flags around positional arguments and checks their count.
func parsePool(fs *flag.FlagSet, args []string, want int, what string) ([]string, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != want {
		return nil, fmt.Errorf("%s: want %s", fs.Name(), what)
	}
	return pos, nil
}

// hostCmd runs `godwit host list|show`.
func hostCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError(stderr, "host: give a subcommand: list or show")
	}
	sub, args := args[0], args[1:]
	fs, f := newPoolFlags("host "+sub, stderr)
	var pos []string
	var err error
	switch sub {
	case "list":
		pos, err = parsePool(fs, args, 0, "no arguments")
	case "show":
		pos, err = parsePool(fs, args, 1, "a host name")
	case "drain":
		return hostDrainCmd(fs, f, args, stdout, stderr)
	case "activate":
		return hostActivateCmd(fs, f, args, stdout)
	default:
		return fmt.Errorf("host: unknown subcommand %q (list, show, drain, activate)", sub)
	}
	if err != nil {
		return err
	}
	c, ctx, cancel, err := f.connect(f.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	if sub == "list" {
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
	h, err := c.Host(ctx, pos[0])
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

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

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

// vmCmd runs `godwit vm ...`.
func vmCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError(stderr, "vm: give a subcommand: create, list, show, start, stop, delete, migrate or console")
	}
	sub, args := args[0], args[1:]
	fs, f := newPoolFlags("vm "+sub, stderr)
	if sub == "console" {
		return vmConsoleCmd(fs, f, args, stdout, stderr)
	}
	var (
		kernel, cmdline, mem, onHost, to string
		cpus, haPriority                 int
		disks, nics                      listFlag
		ha, stopped, wait, cancelMig     bool
		setMig                           bool
		downtime                         time.Duration
		bandwidth                        string
		pos                              []string
		err                              error
	)
	switch sub {
	case "create":
		fs.StringVar(&kernel, "kernel", "", "guest kernel (the same path on every host)")
		fs.StringVar(&cmdline, "cmdline", "", "guest command line")
		fs.StringVar(&mem, "mem", "512M", "guest memory")
		fs.IntVar(&cpus, "cpus", 1, "vCPUs")
		fs.Var(&disks, "disk", "PATH[,storage=ID][,ro]; repeatable")
		fs.Var(&nics, "nic", "BRIDGE[,mac=MAC]; repeatable")
		fs.StringVar(&onHost, "host", "", "place on this host (checked like any placement)")
		fs.BoolVar(&ha, "ha", false, "restart elsewhere if its host is lost")
		fs.IntVar(&haPriority, "ha-priority", 0, "HA restart order: higher restarts first (implies --ha)")
		fs.BoolVar(&stopped, "stopped", false, "create without starting")
		pos, err = parsePool(fs, args, 1, "a VM name")
	case "list":
		pos, err = parsePool(fs, args, 0, "no arguments")
	case "show", "start", "stop", "delete":
		pos, err = parsePool(fs, args, 1, "a VM name")
	case "migrate":
		fs.StringVar(&to, "to", "", "destination host (default: placement picks one)")
		fs.BoolVar(&wait, "wait", false, "wait until the migration ends, showing its progress")
		fs.StringVar(&bandwidth, "bandwidth", "0", "bandwidth cap in bytes/s, with K/M/G suffix (0: none)")
		fs.BoolVar(&cancelMig, "cancel", false, "cancel the VM's migration under way (the VM stays where it runs)")
		fs.DurationVar(&downtime, "downtime", 0, "downtime target (default: the VMM's, 50ms)")
		fs.BoolVar(&setMig, "set", false, "change the --bandwidth and --downtime of the migration under way")
		pos, err = parsePool(fs, args, 1, "a VM name")
	default:
		return fmt.Errorf("vm: unknown subcommand %q (create, list, show, start, stop, delete, migrate, console)", sub)
	}
	if err != nil {
		return err
	}
	timeout := f.timeout
	if wait && !flagSet(fs, "timeout") {
		timeout = 10 * time.Minute
	}
	c, ctx, cancel, err := f.connect(timeout)
	if err != nil {
		return err
	}
	defer cancel()

	switch sub {
	case "create":
		if kernel == "" {
			return errors.New("vm create: --kernel is required")
		}
		memBytes, err := limits.ParseMem(mem)
		if err != nil {
			return fmt.Errorf("vm create: --mem: %w", err)
		}
		if haPriority < 0 {
			return fmt.Errorf("vm create: --ha-priority %d: want 0 or more", haPriority)
		}
		ha = ha || flagSet(fs, "ha-priority")
		spec := store.VMSpec{VCPUs: cpus, MemBytes: memBytes, Kernel: kernel, Cmdline: cmdline,
			HA: store.HASpec{Restart: ha, Priority: haPriority}}
		if stopped {
			spec.Desired = store.DesiredStopped
		}
		for _, s := range disks {
			d, err := parseDisk(s)
			if err != nil {
				return err
			}
			spec.Disks = append(spec.Disks, d)
		}
		for _, s := range nics {
			n, err := parseNIC(s)
			if err != nil {
				return err
			}
			spec.NICs = append(spec.NICs, n)
		}
		v, err := c.CreateVM(ctx, poolapi.CreateVMRequest{Name: pos[0], Spec: spec, Host: onHost})
		if err != nil {
			return err
		}
		return printVM(stdout, v, f.asJSON)
	case "list":
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
	case "show":
		v, err := c.VM(ctx, pos[0])
		if err != nil {
			return err
		}
		return printVM(stdout, v, f.asJSON)
	case "start", "stop":
		call := c.StartVM
		if sub == "stop" {
			call = c.StopVM
		}
		v, err := call(ctx, pos[0])
		if err != nil {
			return err
		}
		if f.asJSON {
			return printJSON(stdout, v)
		}
		fmt.Fprintf(stdout, "vm %s: desired %s, phase %s, host %s\n", v.Name, v.Spec.Desired, v.Phase, dash(v.Host))
		return nil
	case "delete":
		if err := c.DeleteVM(ctx, pos[0]); err != nil {
			return err
		}
		if f.asJSON {
			return printJSON(stdout, map[string]string{"deleted": pos[0]})
		}
		fmt.Fprintf(stdout, "vm %s deleted\n", pos[0])
		return nil
	case "migrate":
		var m store.Migration
		bw, err := limits.ParseBandwidth(bandwidth)
		if err != nil {
			return fmt.Errorf("vm migrate: --bandwidth: %w", err)
		}
		if flagSet(fs, "downtime") && (downtime < time.Millisecond || downtime > time.Minute) {
			return fmt.Errorf("vm migrate: --downtime %v: want 1ms to 1m", downtime)
		}
		downMs := float64(downtime) / float64(time.Millisecond)
		if setMig {
			var l poolapi.MigrationLimits
			if flagSet(fs, "bandwidth") {
				l.Bandwidth = &bw
			}
			if flagSet(fs, "downtime") {
				l.DowntimeMs = &downMs
			}
			if to != "" || cancelMig || wait || (l.Bandwidth == nil && l.DowntimeMs == nil) {
				return errors.New("vm migrate --set: give --bandwidth and/or --downtime (and nothing else)")
			}
			m, err := c.SetMigrationLimits(ctx, pos[0], l)
			if err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(stdout, m)
			}
			fmt.Fprintf(stdout, "migration %s of vm %s: bandwidth %s, downtime target %s; its source takes them within a second\n",
				m.ID, m.VM, bandwidthText(m.Bandwidth), downtimeText(m.DowntimeMs))
			return nil
		}
		if cancelMig {
			if to != "" || flagSet(fs, "bandwidth") || flagSet(fs, "downtime") {
				return errors.New("vm migrate --cancel: takes no --to, --bandwidth or --downtime")
			}
			if m, err = c.CancelMigration(ctx, pos[0]); err != nil {
				return err
			}
			if !wait {
				if f.asJSON {
					return printJSON(stdout, m)
				}
				fmt.Fprintf(stdout, "migration %s of vm %s (%s → %s): cancel asked for; --wait shows the end\n", m.ID, m.VM, m.Src, m.Dst)
				return nil
			}
		} else if m, err = c.MigrateVM(ctx, pos[0], poolapi.MigrateRequest{To: to, Bandwidth: bw, DowntimeMs: downMs}); err != nil {
			return err
		}
		if !wait {
			if f.asJSON {
				return printJSON(stdout, m)
			}
			fmt.Fprintf(stdout, "migration %s: vm %s %s → %s %s (owner revision %d)\n", m.ID, m.VM, m.Src, m.Dst, m.Phase, m.ExpectOwnerRev)
			return nil
		}
		progress := stdout
		if f.asJSON {
			progress = stderr
		}
		fmt.Fprintf(progress, "migration %s: vm %s %s → %s\n", m.ID, m.VM, m.Src, m.Dst)
		final, err := waitMigration(ctx, c, m, progress)
		if err != nil {
			return err
		}
		if f.asJSON {
			if err := printJSON(stdout, final); err != nil {
				return err
			}
		}
		if cancelMig && final.Phase != store.MigrationCommitted {
			if !f.asJSON {
				fmt.Fprintf(stdout, "migration %s cancelled; vm %s stays on %s\n", final.ID, final.VM, final.Src)
			}
			return nil
		}
		if final.Phase != store.MigrationCommitted {
			why := final.Error
			if why == "" {
				why = "no reason given"
			}
			return fmt.Errorf("migration %s of vm %s %s: %s (the VM stays on %s)", final.ID, final.VM, final.Phase, why, final.Src)
		}
		if !f.asJSON {
			fmt.Fprintf(stdout, "vm %s now runs on %s\n", final.VM, final.Dst)
		}
		return nil
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
		{"kernel", v.Spec.Kernel}, {"cmdline", dash(v.Spec.Cmdline)},
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

// clusterCmd runs `godwit cluster status`.
func clusterCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "status" {
		return usageError(stderr, "cluster: give a subcommand: status")
	}
	fs, f := newPoolFlags("cluster status", stderr)
	if _, err := parsePool(fs, args[1:], 0, "no arguments"); err != nil {
		return err
	}
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

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
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
