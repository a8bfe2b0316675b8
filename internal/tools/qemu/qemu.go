// Package qemu runs QEMU as the benchmarks' baseline: qemu-system-x86_64
// on Godwit's test guest (the multiboot ELF booted with -kernel), on the
// same kind of accelerator as Godwit (KVM against KVM, TCG against the
// software CPU), its serial console read line by line with host arrival
// times (toolkit's guest.Console), driven through a QMP client. It starts
// destinations in incoming mode, migrates with chosen capabilities and
// parameters, and polls query-migrate to the end (cancelling a pre-copy
// that runs past its timeout). The guest-visible pause of a migration
// comes from toolkit.Handover, as for Godwit.
//
// Who may import: the tools under internal/tools (bench, netbench). It
// imports internal/guest and internal/tools/toolkit.
package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/tools/toolkit"
)

// Binary is the QEMU executable looked up in PATH.
const Binary = "qemu-system-x86_64"

// The accelerators QEMU runs the guest on.
const (
	KVM = "kvm"
	TCG = "tcg"
)

// AccelFor is QEMU's accelerator of the same kind as Godwit's: TCG against
// Godwit's software CPU ("emu"), KVM against KVM.
func AccelFor(godwitAccel string) string {
	if godwitAccel == "emu" {
		return TCG
	}
	return KVM
}

// AccelArgs are QEMU's accelerator and CPU arguments for accel: KVM with
// the host's CPU (minus IA32_ARCH_CAPABILITIES, which nested KVMs reject),
// or multi-threaded TCG with every feature it emulates.
func AccelArgs(accel string) []string {
	if accel == TCG {
		return []string{"-accel", "tcg,thread=multi", "-cpu", "max"}
	}
	return []string{"-enable-kvm", "-cpu", "host,-arch-capabilities"}
}

// Check says whether QEMU can run here, with what to do if it cannot.
func Check() error {
	if _, err := exec.LookPath(Binary); err != nil {
		return fmt.Errorf("%s not found: install it (apt-get install qemu-system-x86, or make bench-deps)", Binary)
	}
	return nil
}

// Version is the first line of `qemu-system-x86_64 --version` ("" if it
// does not run).
func Version() string {
	out, err := exec.Command(Binary, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// Config is one QEMU virtual machine.
type Config struct {
	Kernel string // the multiboot guest ELF, a Linux bzImage or a PVH vmlinux
	Initrd string // a Linux kernel's initramfs ("" for none)
	MemMiB int
	CPUs   int    // 0: 1
	Accel  string // KVM or TCG
	Append string // the guest's command line ("" for none)
	// QMP is the path of the QMP socket to create ("" for none).
	QMP string
	// Incoming is "defer" (then Incoming starts listening) or a URI such
	// as tcp:127.0.0.1:4444; "" boots the guest.
	Incoming string
	// Net are the network arguments; nil means -nic none.
	Net []string
	// Wrap runs QEMU under another command (ip netns exec NS).
	Wrap []string
}

// Args is the command line for c: no display, the serial console on
// stdio, no monitor, no reboot.
func (c Config) Args() []string {
	cpus := max(c.CPUs, 1)
	argv := append(append([]string{}, c.Wrap...), Binary)
	argv = append(argv, AccelArgs(c.Accel)...)
	argv = append(argv, "-m", strconv.Itoa(c.MemMiB), "-smp", strconv.Itoa(cpus),
		"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot", "-kernel", c.Kernel)
	if c.Initrd != "" {
		argv = append(argv, "-initrd", c.Initrd)
	}
	if c.Append != "" {
		argv = append(argv, "-append", c.Append)
	}
	if c.QMP != "" {
		argv = append(argv, "-qmp", "unix:"+c.QMP+",server=on,wait=off")
	}
	if c.Net == nil {
		argv = append(argv, "-nic", "none")
	} else {
		argv = append(argv, c.Net...)
	}
	if c.Incoming != "" {
		argv = append(argv, "-incoming", c.Incoming)
	}
	return argv
}

// VM is a running QEMU: its process (whose stdout is the guest console)
// and, if it has a QMP socket, the QMP connection.
type VM struct {
	*toolkit.Proc
	QMP    *QMP
	Config Config
}

// Start launches QEMU as name and, if c has a QMP socket, connects to it.
func Start(name string, c Config, o toolkit.Options) (*VM, error) {
	p, err := toolkit.Start(name, c.Args(), o)
	if err != nil {
		return nil, err
	}
	vm := &VM{Proc: p, Config: c}
	if c.QMP != "" {
		vm.QMP, err = DialQMP(c.QMP, 30*time.Second, func() bool { return !p.Exited() })
		if err != nil {
			p.Stop(3 * time.Second)
			return nil, fmt.Errorf("%s: %v (stderr: %s)", name, err, toolkit.Shorten(strings.TrimSpace(p.Stderr()), 400))
		}
	}
	return vm, nil
}

// qmp is the VM's QMP connection, or an error if it was started without
// a QMP socket.
func (vm *VM) qmp() (*QMP, error) {
	if vm.QMP == nil {
		return nil, errors.New(vm.Name + ": no QMP socket: give Config.QMP a path")
	}
	return vm.QMP, nil
}

// Incoming makes a VM started with Incoming "defer" listen on uri.
func (vm *VM) Incoming(uri string) error {
	q, err := vm.qmp()
	if err != nil {
		return err
	}
	_, err = q.Do("migrate-incoming", map[string]any{"uri": uri})
	return err
}

// Status is query-status: QEMU's run state (running, inmigrate,
// postmigrate, paused, …).
func (vm *VM) Status() (string, error) {
	q, err := vm.qmp()
	if err != nil {
		return "", err
	}
	raw, err := q.Do("query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("query-status: %w", err)
	}
	return st.Status, nil
}

// Running says whether the guest runs (QEMU is up and in state running).
func (vm *VM) Running() bool {
	if vm.Exited() {
		return false
	}
	st, err := vm.Status()
	return err == nil && st == "running"
}

// MigrationParameters is query-migrate-parameters as QEMU returns it.
func (vm *VM) MigrationParameters() (json.RawMessage, error) {
	q, err := vm.qmp()
	if err != nil {
		return nil, err
	}
	return q.Do("query-migrate-parameters", nil)
}

// Stop ends QEMU: quit through QMP, then by its pid after a grace period.
func (vm *VM) Stop(grace time.Duration) {
	if vm == nil {
		return
	}
	if vm.QMP != nil {
		if !vm.Exited() {
			vm.QMP.Do("quit", nil)
		}
		vm.QMP.Close()
	}
	if !vm.WaitExit(grace) {
		vm.Proc.Stop(3 * time.Second)
	}
}
