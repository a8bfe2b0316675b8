package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/godwit-vmm/godwit/internal/accel"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

// maxSockPath bounds a Unix socket path (sockaddr_un.sun_path).
const maxSockPath = 108

// Version is reported in hosts/<h>/info.
const Version = "godwit-agent/0.1"

// Config is one agent's configuration. ParseFlags builds it from the
// command line; tests may fill it in directly.
type Config struct {
	Host      string   // host name in the pool
	Listen    string   // agent API address, host:port
	MigrateIP string   // address incoming VMMs listen on
	PortLo    int      // first migration port
	PortHi    int      // last migration port
	Etcd      []string // etcd endpoints
	StateDir  string
	// Credential is this host's credential directory (package pki:
	// ca.pem, cert.pem, key.pem of role host, named Host). The agent's
	// API, its etcd connection and its VMMs' migrations all use it.
	Credential string
	Bridges    map[string]string // network name -> local bridge
	StorageIDs []string
	// Storage maps each storage ID to where it is mounted here; a VM's
	// disk must resolve (symlinks followed) to a file under its root.
	Storage    map[string]Storage
	LeaseTTL   time.Duration
	Margin     time.Duration
	RenewEvery time.Duration // 0: TTL/5
	UsageEvery time.Duration // host usage report period
	SyncEvery  time.Duration // periodic full reconcile
	Godwit     string        // binary started as the VMM
	LogLevel   string        // VMMs' --log-level
	// VerifyMigrations makes every migration this agent drives check a
	// CRC32C of all guest RAM on the destination before it commits.
	VerifyMigrations bool
	// VMMUser is the unprivileged user the VMMs switch to once their VM
	// runs (their --run-as); "" keeps root (without capabilities).
	VMMUser string
	// Accel is the accelerator this host's VMs run on: "auto" (or ""),
	// "kvm" or "emu" (package accel); the VMMs get it as --accel.
	Accel string
}

// Defaults.
const (
	DefaultListen     = "127.0.0.1:7480"
	DefaultPorts      = "4400-4499"
	DefaultUsageEvery = 10 * time.Second
	DefaultSyncEvery  = 5 * time.Second
)

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if err := store.ValidName("host", c.Host); err != nil {
		return fmt.Errorf("agent: --host: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("agent: --listen %q: want host:port", c.Listen)
	}
	if net.ParseIP(c.MigrateIP) == nil {
		return fmt.Errorf("agent: --migrate-ip %q is not an IP address", c.MigrateIP)
	}
	if c.PortLo <= 0 || c.PortHi > 65535 || c.PortLo > c.PortHi {
		return fmt.Errorf("agent: migration ports %d-%d: want a range within 1-65535", c.PortLo, c.PortHi)
	}
	if len(c.Etcd) == 0 {
		return errors.New("agent: --etcd: give the pool's etcd endpoints")
	}
	if c.StateDir == "" {
		return errors.New("agent: --state-dir is required")
	}
	if c.Credential == "" {
		return errors.New("agent: --credential is required (this host's directory from godwit pki issue --role host)")
	}
	if c.Godwit == "" {
		return errors.New("agent: --godwit: no VMM binary")
	}
	lc := store.LeaseConfig{TTL: c.LeaseTTL, Margin: c.Margin, RenewEvery: c.RenewEvery}
	if err := lc.Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	// VM API socket paths must fit sockaddr_un (108 bytes); leave room
	// for VM names of 32 characters at least (longer ones are checked
	// when their VMM starts).
	if p := filepath.Join(c.StateDir, "vms", strings.Repeat("x", 32), "api.sock"); len(p) >= maxSockPath {
		return fmt.Errorf("agent: --state-dir %q is too long for VM API sockets (paths must stay under %d bytes): choose a shorter one", c.StateDir, maxSockPath)
	}
	return nil
}

// Flags are the agent's command line, registered on a flag set by
// RegisterFlags; Config checks them and builds the Config.
type Flags struct {
	host, listen, migrateIP, ports, etcd, state, credential string
	bridges, storage, blockStorage                          []string
	ttl, margin, renew, usageEvery, syncEvery               time.Duration
	godwit, logLevel, vmmUser, accel                        string
	verify                                                  bool
}

// RegisterFlags defines the agent's flags on fs.
func RegisterFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.host, "host", "", "this host's name in the pool (default: the hostname)")
	fs.StringVar(&f.listen, "listen", DefaultListen, "agent API address (TCP host:port)")
	fs.StringVar(&f.migrateIP, "migrate-ip", "127.0.0.1", "address incoming VMMs listen on for migrations")
	fs.StringVar(&f.ports, "migrate-ports", DefaultPorts, "port range of incoming VMMs")
	fs.StringVar(&f.etcd, "etcd", "", "etcd endpoints, comma-separated (https://10.0.0.1:2379,...)")
	fs.StringVar(&f.state, "state-dir", "/var/lib/godwit/agent", "state directory (lease ID, fence file, one directory per VM)")
	fs.StringVar(&f.credential, "credential", "/etc/godwit/credential", "this host's credential directory (godwit pki issue --role host --name HOST)")
	fs.StringArrayVar(&f.bridges, "bridge", nil, "L2 network present here: BRIDGE, or NETWORK=BRIDGE (repeatable)")
	fs.StringArrayVar(&f.storage, "storage-id", nil, "shared storage reachable from here, ID=DIR or an absolute DIR that is its own ID; disks must lie under DIR (repeatable)")
	fs.StringArrayVar(&f.blockStorage, "block-storage", nil, "storage of block devices, ID=DIR (e.g. san=/dev/disk/by-id): device nodes under DIR may be disks (repeatable)")
	fs.DurationVar(&f.ttl, "lease-ttl", store.DefaultLeaseTTL, "host lease TTL (whole seconds)")
	fs.DurationVar(&f.margin, "lease-margin", store.DefaultLeaseMargin, "local deadline this long before the lease can expire")
	fs.DurationVar(&f.renew, "lease-renew", 0, "renewal period (default TTL/5)")
	fs.DurationVar(&f.usageEvery, "usage-every", DefaultUsageEvery, "host usage report period")
	fs.DurationVar(&f.syncEvery, "sync-every", DefaultSyncEvery, "full reconcile period")
	fs.StringVar(&f.godwit, "godwit", "", "binary started as VMM with \"run\" (default: godwit-vmm beside this executable, else this executable)")
	fs.StringVar(&f.logLevel, "vmm-log-level", "info", "--log-level of the VMMs")
	fs.BoolVar(&f.verify, "verify-migrations", false, "have the destination check a CRC32C of all guest RAM before each migration commits")
	fs.StringVar(&f.vmmUser, "vmm-user", "nobody", "user the VMMs switch to once their VM runs (name or UID:GID; \"\" keeps root without capabilities)")
	fs.StringVar(&f.accel, "accel", accel.Auto, "accelerator of this host's VMs: auto (KVM when /dev/kvm exists, else the software CPU), kvm or emu")
	return f
}

// ParseFlags parses the agent's command line into a Config.
func ParseFlags(args []string) (*Config, error) {
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("agent: unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	return f.Config()
}

// Config checks the flags and builds the agent's Config.
func (f *Flags) Config() (*Config, error) {
	if _, err := accel.Parse(f.accel); err != nil {
		return nil, fmt.Errorf("agent: --accel: %w", err)
	}
	c := &Config{
		Host: f.host, Listen: f.listen, MigrateIP: f.migrateIP, StateDir: f.state,
		LeaseTTL: f.ttl, Margin: f.margin, RenewEvery: f.renew,
		UsageEvery: f.usageEvery, SyncEvery: f.syncEvery, Godwit: f.godwit, LogLevel: f.logLevel,
		VerifyMigrations: f.verify, Accel: f.accel, Credential: f.credential, VMMUser: f.vmmUser,
		Bridges: map[string]string{},
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("agent: --host not given and no hostname: %w", err)
		}
		c.Host = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	}
	var err error
	if c.PortLo, c.PortHi, err = parsePorts(f.ports); err != nil {
		return nil, err
	}
	for _, e := range strings.Split(f.etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.Etcd = append(c.Etcd, e)
		}
	}
	if c.Storage, c.StorageIDs, err = parseStorage(f.storage, f.blockStorage); err != nil {
		return nil, err
	}
	for _, b := range f.bridges {
		network, br, ok := strings.Cut(b, "=")
		if !ok {
			br = network
		}
		if network == "" || br == "" {
			return nil, fmt.Errorf("agent: --bridge %q: want BRIDGE or NETWORK=BRIDGE", b)
		}
		c.Bridges[network] = br
	}
	if c.Godwit == "" {
		if c.Godwit, err = defaultVMM(); err != nil {
			return nil, err
		}
	}
	if c.StateDir, err = filepath.Abs(c.StateDir); err != nil {
		return nil, err
	}
	if c.Credential != "" {
		if c.Credential, err = filepath.Abs(c.Credential); err != nil {
			return nil, err
		}
	}
	return c, c.Validate()
}

func parsePorts(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || lo <= 0 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("agent: --migrate-ports %q: want LO-HI, e.g. %s", s, DefaultPorts)
	}
	return lo, hi, nil
}

// defaultVMM is godwit-vmm beside this executable (the VMM alone, built
// without cgo so that it can sandbox itself), else this executable.
func defaultVMM() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("agent: --godwit not given and no executable path: %w", err)
	}
	if vmm := filepath.Join(filepath.Dir(exe), "godwit-vmm"); fileExists(vmm) {
		return vmm, nil
	}
	return exe, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Storage is one storage ID's mount on this host.
type Storage struct {
	Root  string // absolute directory, symlinks resolved
	Block bool   // disks are block device nodes, not regular files
}

// parseStorage reads --storage-id and --block-storage values: ID=DIR, or
// an absolute DIR that names itself. Each DIR must exist.
func parseStorage(files, blocks []string) (map[string]Storage, []string, error) {
	m := map[string]Storage{}
	var ids []string
	add := func(flag, v string, block bool) error {
		id, dir, ok := strings.Cut(v, "=")
		if !ok {
			dir = v
		}
		if id == "" || !filepath.IsAbs(dir) {
			return fmt.Errorf("agent: --%s %q: want ID=DIR with an absolute DIR, or an absolute DIR", flag, v)
		}
		if _, dup := m[id]; dup {
			return fmt.Errorf("agent: --%s %q: storage %s given twice", flag, v, id)
		}
		root, err := filepath.EvalSymlinks(dir)
		if err == nil {
			var st os.FileInfo
			if st, err = os.Stat(root); err == nil && !st.IsDir() {
				err = errors.New("not a directory")
			}
		}
		if err != nil {
			return fmt.Errorf("agent: --%s %q: %v", flag, v, err)
		}
		m[id] = Storage{Root: root, Block: block}
		ids = append(ids, id)
		return nil
	}
	for _, v := range files {
		if err := add("storage-id", v, false); err != nil {
			return nil, nil, err
		}
	}
	for _, v := range blocks {
		if err := add("block-storage", v, true); err != nil {
			return nil, nil, err
		}
	}
	return m, ids, nil
}
