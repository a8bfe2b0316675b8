package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/api"
	"github.com/godwit-vmm/godwit/internal/cluster/store"
)

// vmmMeta is what a VMM was started for, kept in vmm.json beside it so
// that a restarted agent knows what it finds.
type vmmMeta struct {
	VM      string    `json:"vm"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Lease   int64     `json:"lease"` // the host lease it was started under
	// Incoming: started by POST /v1/incoming to receive the VM by the
	// migration MigrationID, guarded by the owner revision OwnerRev.
	Incoming    bool   `json:"incoming,omitempty"`
	MigrationID string `json:"migration_id,omitempty"`
	OwnerRev    int64  `json:"owner_rev,omitempty"`
	Addr        string `json:"addr,omitempty"` // incoming: where it listens
	TAP         string `json:"tap,omitempty"`
	MemBytes    uint64 `json:"mem_bytes"`
	VCPUs       int    `json:"vcpus"`
}

// vmmProc is one VMM process of this host.
type vmmProc struct {
	meta   vmmMeta
	sock   string
	seen   time.Time     // when this agent started or adopted it
	exited chan struct{} // closed when the process is gone
	// The fields below are guarded by Agent.mu.
	exitErr  error
	stopping bool // the agent asked it to stop or killed it
	gone     bool // exited (mirrors exited, readable under mu)
	// handedOver: when the agent first saw the owner key leave this VMM
	// while driving its outgoing migration (see reconcileVM).
	handedOver time.Time
}

func (a *Agent) vmDir(vm string) string { return filepath.Join(a.cfg.StateDir, "vms", vm) }
func (a *Agent) sockPath(vm string) string {
	return filepath.Join(a.vmDir(vm), "api.sock")
}
func (a *Agent) fencePath() string { return filepath.Join(a.cfg.StateDir, "fence") }
func (a *Agent) leasePath() string { return filepath.Join(a.cfg.StateDir, "lease") }

// tapName derives a TAP name (≤ 15 bytes, IFNAMSIZ) from the host and VM
// names: unique per host, and distinct between hosts that share a network
// namespace (two agents on one machine).
func tapName(host, vm string) string {
	sum := sha256.Sum256([]byte(host + "/" + vm))
	return "gw" + hex.EncodeToString(sum[:])[:12]
}

// bootArgs name what the VM boots: its first boot, and a reboot after it
// arrived by migration.
func bootArgs(spec store.VMSpec) []string {
	args := []string{"--kernel", spec.Kernel}
	if spec.Initrd != "" {
		args = append(args, "--initrd", spec.Initrd)
	}
	if spec.Cmdline != "" {
		args = append(args, "--cmdline", spec.Cmdline)
	}
	return args
}

// vmmArgs are the arguments every VMM of this agent gets.
func (a *Agent) vmmArgs(vm string, lease int64) []string {
	args := []string{"run", "--name", vm,
		"--api-socket", a.sockPath(vm),
		// The serial console goes to stdout, which is console.log; stdin
		// is /dev/null, so nothing is read from it. Input is typed
		// through the API (PUT /v1/vm/console).
		"--console", "stdio",
		"--log-level", a.cfg.LogLevel,
		"--fence-file", a.fencePath(),
	}
	// The host's credential: the VMM's etcd client (the owner key) and its
	// migrations, in and out, use it.
	args = append(args, "--credential", a.cfg.Credential)
	if a.cfg.VMMUser != "" {
		args = append(args, "--run-as", a.cfg.VMMUser)
	}
	if a.cfg.Accel != "" {
		args = append(args, "--accel", a.cfg.Accel)
	}
	if a.vmmHandover {
		args = append(args,
			"--etcd", strings.Join(a.cfg.Etcd, ","),
			"--owner-host", a.cfg.Host,
			"--owner-lease", strconv.FormatInt(lease, 10))
	}
	return args
}

// probeVMM asks the VMM binary what it supports (`godwit-vmm features`):
// fence-file is required (the agent's VMs must stop at the deadline);
// owner-handover (--etcd, --owner-*) is needed for migrations. It returns
// whether the handover is there.
func probeVMM(bin string) (handover bool, err error) {
	out, err := exec.Command(bin, "features").Output()
	if err != nil {
		return false, fmt.Errorf("agent: %s features: %v: use a godwit-vmm of this release (--godwit)", bin, err)
	}
	has := map[string]bool{}
	for _, f := range strings.Fields(string(out)) {
		has[f] = true
	}
	if !has["fence-file"] {
		return false, fmt.Errorf("agent: %s cannot be fenced (no fence-file feature): use a newer godwit-vmm (--godwit)", bin)
	}
	return has["owner-handover"], nil
}

// checkShape refuses a spec the VMM would refuse (package limits), before
// anything is created for it.
func checkShape(vm string, spec *store.VMSpec) error {
	if err := spec.CheckShape(vm); err != nil {
		return fmt.Errorf("vm %s cannot run: %w", vm, err)
	}
	return nil
}

// deviceArgs are the NIC and disk arguments of spec, checked against what
// this host has.
func (a *Agent) deviceArgs(vm string, spec *store.VMSpec) (args []string, tap string, err error) {
	if len(spec.NICs) > 1 {
		return nil, "", fmt.Errorf("vm %s has %d NICs; a Godwit VMM has at most one", vm, len(spec.NICs))
	}
	if len(spec.Disks) > 1 {
		return nil, "", fmt.Errorf("vm %s has %d disks; a Godwit VMM has at most one", vm, len(spec.Disks))
	}
	for _, n := range spec.NICs {
		br, ok := a.cfg.Bridges[n.Network]
		if !ok {
			return nil, "", fmt.Errorf("vm %s: network %q has no bridge on host %s (agent --bridge)", vm, n.Network, a.cfg.Host)
		}
		tap = tapName(a.cfg.Host, vm)
		args = append(args, "--tap", tap, "--bridge", br)
		if n.MAC != "" {
			args = append(args, "--mac", n.MAC)
		}
	}
	for _, d := range spec.Disks {
		path, err := a.resolveDisk(d)
		if err != nil {
			return nil, "", fmt.Errorf("vm %s: %w", vm, err)
		}
		args = append(args, "--disk", path)
		if d.ReadOnly {
			args = append(args, "--disk-readonly")
		}
	}
	return args, tap, nil
}

// resolveDisk confines a disk to its storage: the path, symlinks
// resolved, must lie under the storage's root on this host and be a
// regular file (a block device on a --block-storage). The VMM is given
// the resolved path, so a link swapped later points nowhere new.
func (a *Agent) resolveDisk(d store.DiskSpec) (string, error) {
	st, ok := a.cfg.Storage[d.StorageID]
	if !ok {
		return "", fmt.Errorf("storage %q is not reachable from host %s (agent --storage-id)", d.StorageID, a.cfg.Host)
	}
	if !filepath.IsAbs(d.Path) {
		return "", fmt.Errorf("disk %q: the path must be absolute", d.Path)
	}
	path, err := filepath.EvalSymlinks(d.Path)
	if err != nil {
		return "", fmt.Errorf("disk %q: %w", d.Path, err)
	}
	rel, err := filepath.Rel(st.Root, path)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("disk %q resolves to %s, outside storage %s (%s)", d.Path, path, d.StorageID, st.Root)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("disk %q: %w", d.Path, err)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
	case st.Block && m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
	default:
		return "", fmt.Errorf("disk %q is not a regular file%s (mode %v)", d.Path, map[bool]string{true: " or block device"}[st.Block], m.Type())
	}
	return path, nil
}

// spawn starts a VMM in its own session (so it survives the agent), with
// its console and log in the VM's directory, and records it.
func (a *Agent) spawn(meta vmmMeta, args []string) (*vmmProc, error) {
	dir := a.vmDir(meta.VM)
	if len(a.sockPath(meta.VM)) >= maxSockPath {
		return nil, fmt.Errorf("agent: vm %s: API socket path %s is too long (≥ %d bytes): use a shorter --state-dir or VM name", meta.VM, a.sockPath(meta.VM), maxSockPath)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("agent: vm %s: %w", meta.VM, err)
	}
	console, err := os.OpenFile(filepath.Join(dir, "console.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("agent: vm %s: %w", meta.VM, err)
	}
	defer console.Close()
	logf, err := os.OpenFile(filepath.Join(dir, "vmm.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("agent: vm %s: %w", meta.VM, err)
	}
	defer logf.Close()
	cmd := exec.Command(a.cfg.Godwit, args...)
	cmd.Stdout, cmd.Stderr = console, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("agent: vm %s: start VMM: %w", meta.VM, err)
	}
	meta.PID = cmd.Process.Pid
	meta.Started = time.Now().UTC()
	p := &vmmProc{meta: meta, sock: a.sockPath(meta.VM), seen: time.Now(), exited: make(chan struct{})}
	if err := a.writeMeta(meta); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	go func() {
		err := cmd.Wait()
		a.mu.Lock()
		p.exitErr, p.gone = err, true
		a.mu.Unlock()
		close(p.exited)
		a.kick()
	}()
	a.log.Info("vmm started", "vm", meta.VM, "pid", meta.PID, "incoming", meta.Incoming, "migration", meta.MigrationID, "args", strings.Join(args, " "))
	return p, nil
}

func (a *Agent) writeMeta(meta vmmMeta) error {
	dir := a.vmDir(meta.VM)
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(meta.PID)+"\n"), 0o640); err != nil {
		return fmt.Errorf("agent: vm %s: pid file: %w", meta.VM, err)
	}
	b, _ := json.MarshalIndent(meta, "", "  ")
	tmp := filepath.Join(dir, "vmm.json.tmp")
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return fmt.Errorf("agent: vm %s: %w", meta.VM, err)
	}
	return os.Rename(tmp, filepath.Join(dir, "vmm.json"))
}

// scanStateDir finds the VMMs an earlier run of the agent left running:
// pid file, a live process whose command line names the VM's API socket.
// Directories without a live VMM are left as they are (their console log
// is history).
func (a *Agent) scanStateDir() map[string]*vmmProc {
	found := map[string]*vmmProc{}
	entries, _ := os.ReadDir(filepath.Join(a.cfg.StateDir, "vms"))
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		vm := e.Name()
		var meta vmmMeta
		b, err := os.ReadFile(filepath.Join(a.vmDir(vm), "vmm.json"))
		if err != nil || json.Unmarshal(b, &meta) != nil || meta.VM != vm {
			// Fall back on the pid file alone.
			pb, err := os.ReadFile(filepath.Join(a.vmDir(vm), "pid"))
			if err != nil {
				continue
			}
			meta = vmmMeta{VM: vm}
			meta.PID, _ = strconv.Atoi(strings.TrimSpace(string(pb)))
		}
		if meta.PID <= 0 || !isOurVMM(meta.PID, a.sockPath(vm)) {
			continue
		}
		p := &vmmProc{meta: meta, sock: a.sockPath(vm), seen: time.Now(), exited: make(chan struct{})}
		if err := a.watchExit(p); err != nil {
			a.log.Warn("cannot watch an adopted VMM; treating it as gone", "vm", vm, "pid", meta.PID, "err", err)
			continue
		}
		found[vm] = p
	}
	return found
}

// isOurVMM reports whether pid is a live `godwit run` serving sock: its
// command line names the socket (which protects against a reused pid).
// A zombie has an empty command line and counts as gone.
func isOurVMM(pid int, sock string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return false
	}
	args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	for i, arg := range args {
		if string(arg) == "--api-socket" && i+1 < len(args) && string(args[i+1]) == sock {
			return true
		}
	}
	return false
}

// watchExit closes p.exited when the (non-child) process p exits, using a
// pidfd, which works for processes this agent did not start.
func (a *Agent) watchExit(p *vmmProc) error {
	fd, err := unix.PidfdOpen(p.meta.PID, 0)
	if err != nil {
		return err
	}
	if !isOurVMM(p.meta.PID, p.sock) { // the pid was reused before we opened it
		unix.Close(fd)
		return errors.New("process gone")
	}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		a.mu.Lock()
		p.gone = true
		a.mu.Unlock()
		close(p.exited)
		a.kick()
	}()
	return nil
}

// kill sends SIGKILL to the VMM and waits (up to wait) for it to be gone.
func (a *Agent) kill(p *vmmProc, why string, wait time.Duration) {
	a.mu.Lock()
	p.stopping = true
	gone := p.gone
	a.mu.Unlock()
	if gone {
		return
	}
	a.log.Warn("killing vmm", "vm", p.meta.VM, "pid", p.meta.PID, "migration", p.meta.MigrationID, "why", why)
	// The process was started by us, or its identity checked through
	// /proc and held by a pidfd; a plain kill is safe while it is not gone.
	unix.Kill(p.meta.PID, unix.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(wait):
		a.log.Error("vmm did not exit after SIGKILL", "vm", p.meta.VM, "pid", p.meta.PID)
	}
}

// stopGracefully asks the VMM to stop through its API, then kills it if it
// has not exited within grace.
func (a *Agent) stopGracefully(p *vmmProc, why string, grace time.Duration) {
	a.mu.Lock()
	p.stopping = true
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	a.log.Info("stopping vmm", "vm", p.meta.VM, "pid", p.meta.PID, "why", why)
	if err := api.NewClient(p.sock).Stop(ctx); err != nil {
		a.log.Warn("vmm stop request failed", "vm", p.meta.VM, "err", err)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		a.kill(p, why+" (did not stop within "+grace.String()+")", 5*time.Second)
	}
}

// waitAPI waits until the VMM's API socket answers, or the VMM exits.
func waitAPI(ctx context.Context, p *vmmProc) error {
	c := api.NewClient(p.sock)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Status(sctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("agent: vm %s: VMM exited before its API answered", p.meta.VM)
		case <-ctx.Done():
			return fmt.Errorf("agent: vm %s: VMM API did not answer: %w", p.meta.VM, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freeMigratePort returns a port of the range that nobody listens on at
// the migration address, skipping those of this host's incoming VMMs.
func (a *Agent) freeMigratePort(used map[string]bool) (string, error) {
	for port := a.cfg.PortLo; port <= a.cfg.PortHi; port++ {
		addr := net.JoinHostPort(a.cfg.MigrateIP, strconv.Itoa(port))
		if used[addr] {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr, nil
	}
	return "", fmt.Errorf("agent: no free migration port in %d-%d on %s", a.cfg.PortLo, a.cfg.PortHi, a.cfg.MigrateIP)
}
