// Package vm runs one virtual machine: guest RAM, the KVM VM with its
// in-kernel interrupt controllers and PIT, one locked OS thread per vCPU, the
// I/O-port bus and the emulated devices, and the boot paths: a multiboot v1
// ELF (the test guest), or Linux with an initrd, as a bzImage by the 32-bit
// boot protocol or as a vmlinux by its PVH entry; all with the machine's
// ACPI tables. A guest reboot resets the machine in place (reset.go).
//
// vCPU threads are controlled by requests (pause, resume, run-on-thread,
// exit), never by flags poked from outside; see vcpu.go.
//
// Who may import: the API server, the CLI's run command, and migration.
package vm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/accel"
	"github.com/godwit-vmm/godwit/internal/arch/x86"
	"github.com/godwit-vmm/godwit/internal/hv"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// State is a VM's run state.
type State string

// VM states.
const (
	StateCreated State = "created"
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateStopped State = "stopped"
)

// VM is one running virtual machine.
type VM struct {
	cfg   Config
	log   *slog.Logger
	hvm   hv.VM
	accel string // the accelerator's name: "kvm" or "emu"
	mem   *memory.Guest
	ports *PortBus
	vcpus []*vcpu
	dev   *deviceSet
	irqs  []hv.IRQ

	started  time.Time
	info     MigrationInfo // probed at creation
	incoming bool          // created by NewIncoming: state comes by migration
	// announceGuest: Announce ran before Start, which asks the guest
	// for its own announcement once its devices run.
	announceGuest bool

	// mu guards state and the throttle fields. Pause, Resume and a
	// reboot hold it while they wait for the vCPUs, so a vCPU thread
	// never takes it.
	mu           sync.Mutex
	state        State
	throttlePct  int
	throttleStop chan struct{}

	// endMu guards stopErr and stopReason; vCPU threads take it (to say
	// why the VM ends), and it is never held while waiting.
	endMu      sync.Mutex
	stopErr    error
	stopReason string

	// reset is the machine as created, which a guest reboot restores;
	// rebooting is set while one runs, and reboots counts them.
	reset     *resetState
	rebooting atomic.Bool
	reboots   atomic.Int64
	// resetPending: a guest reset came while the VM was paused; the
	// reboot runs when it runs again, here or on a migration's
	// destination.
	resetPending atomic.Bool

	stopOnce sync.Once
	stopped  chan struct{} // closed when the VM has stopped for good

	mmioOnce sync.Map // guest-physical addresses of unclaimed MMIO already logged

	// deadline is the CLOCK_MONOTONIC time (ns) after which the guest
	// must not run: a pool host's lease fence (SetDeadline); 0: none.
	deadline  atomic.Int64
	fenceOnce sync.Once
}

// SetDeadline sets the CLOCK_MONOTONIC time (ns) after which the guest may
// not run (0: none). Every vCPU exit checks it before the exit is handled,
// so no port I/O, device notification or console output of the guest
// takes effect after it, however late the VMM's own watcher runs (a VMM
// frozen and thawed runs its vCPUs before anything else). A passed
// deadline stops the VM.
func (v *VM) SetDeadline(mono int64) { v.deadline.Store(mono) }

// pastDeadline reports whether the deadline (if any) has passed.
func (v *VM) pastDeadline() bool {
	d := v.deadline.Load()
	if d == 0 {
		return false
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() >= d
}

// fenced stops the VM once, from a vCPU thread that saw the deadline pass.
func (v *VM) fenced(vcpu int) {
	v.fenceOnce.Do(func() {
		v.log.Error("fenced: the deadline passed; vCPU exits are no longer handled", "vcpu", vcpu)
		go v.Stop("fence: the host lease deadline passed (seen at a vCPU exit)")
	})
}

// New creates a VM from cfg: RAM, KVM objects, devices, vCPUs (parked), and
// the guest kernel loaded. Nothing runs until Start. On error everything
// created so far is released.
func New(cfg Config, log *slog.Logger) (*VM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	boot, err := readBootFiles(cfg)
	if err != nil {
		return nil, err
	}
	return create(cfg, log, boot)
}

// bootFiles is what New loads into a fresh VM: the kernel and, for
// Linux, its initrd.
type bootFiles struct {
	kernel *x86.KernelImage
	initrd []byte
}

// readBootFiles reads the kernel and the initrd and checks that they fit
// the VM's memory and command line, before anything is created.
func readBootFiles(cfg Config) (*bootFiles, error) {
	img, err := x86.ReadKernelImage(cfg.Kernel)
	if err != nil {
		return nil, err
	}
	b := &bootFiles{kernel: img}
	if !img.TakesInitrd() {
		if cfg.Initrd != "" {
			return nil, fmt.Errorf("vm: %s is a multiboot kernel: --initrd needs a Linux kernel (a bzImage or a vmlinux)", cfg.Kernel)
		}
		return b, nil
	}
	var size uint64
	if cfg.Initrd != "" {
		st, err := os.Stat(cfg.Initrd)
		if err != nil {
			return nil, fmt.Errorf("vm: initrd: %w", err)
		}
		size = uint64(st.Size())
	}
	// Refuse an initrd too large for the VM before reading it.
	if img.Linux != nil {
		_, err = img.Linux.Layout(cfg.MemBytes, len(cfg.Cmdline), size)
	} else {
		_, err = img.PVH.Layout(cfg.MemBytes, len(cfg.Cmdline), size)
	}
	if err != nil {
		return nil, err
	}
	if cfg.Initrd != "" {
		if b.initrd, err = os.ReadFile(cfg.Initrd); err != nil {
			return nil, fmt.Errorf("vm: read initrd: %w", err)
		}
	}
	return b, nil
}

// NewIncoming creates a VM of cfg's shape whose state will come from a
// migration (RestoreState) instead of a kernel: RAM, devices and parked
// vCPUs, nothing loaded. cfg.Kernel is not needed.
func NewIncoming(cfg Config, log *slog.Logger) (*VM, error) {
	if err := cfg.validate(false, true); err != nil {
		return nil, err
	}
	return create(cfg, log, nil)
}

// create builds the VM; boot is nil for one that arrives by migration.
func create(cfg Config, log *slog.Logger, boot *bootFiles) (_ *VM, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("vm", cfg.Name)
	sys, err := accel.Open(cfg.Accel, log)
	if err != nil {
		return nil, err
	}
	defer sys.Close()

	v := &VM{cfg: cfg, log: log, accel: sys.Name(), state: StateCreated, stopped: make(chan struct{}), incoming: boot == nil}
	defer func() {
		if err != nil {
			v.release()
		}
	}()
	if v.hvm, err = sys.CreateVM(cfg.VCPUs); err != nil {
		return nil, err
	}
	if v.mem, err = memory.New(cfg.MemBytes); err != nil {
		return nil, err
	}
	for _, r := range v.mem.Regions() {
		if err = v.hvm.SetMemoryRegion(r.Slot, r.GPA, r.Host); err != nil {
			return nil, err
		}
	}
	if o, ok := v.hvm.(deviceWriteObserver); ok {
		v.mem.ObserveWrites(o.DeviceWrote)
	}
	v.ports = NewPortBus(log)
	if v.dev, err = v.createDevices(); err != nil {
		return nil, err
	}
	var entry bootEntry
	if boot != nil {
		if entry, err = v.loadGuest(boot); err != nil {
			return nil, err
		}
	}
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	for i := 0; i < cfg.VCPUs; i++ {
		v.vcpus = append(v.vcpus, &vcpu{id: i, vm: v, reqs: make(chan request, 4), gone: make(chan struct{})})
	}
	for _, c := range v.vcpus {
		setup := func(cpu hv.VCPU) error {
			ids := x86.PatchCPUID(cpuid, cpu.ID(), cfg.VCPUs)
			var err error
			if boot == nil {
				err = cpu.SetCPUID2(ids) // the rest comes with the state
			} else {
				err = setupVCPU(cpu, ids, entry)
			}
			if err == nil && cpu.ID() == 0 {
				v.info, err = probeMigrationInfo(sys, v.hvm, cpu)
			}
			return err
		}
		if err = c.start(setup); err != nil {
			return nil, fmt.Errorf("vm: set up vcpu %d: %w", c.id, err)
		}
	}
	if err = v.saveResetState(); err != nil {
		return nil, err
	}
	log.Info("vm created", "accel", v.accel, "mem_mib", cfg.MemBytes>>20, "vcpus", cfg.VCPUs, "kernel", cfg.Kernel, "incoming", boot == nil)
	return v, nil
}

// bootEntry is the BSP's state at the kernel's entry point.
type bootEntry struct {
	regs  hv.Regs
	sregs func(hv.Sregs2) hv.Sregs2 // from the vCPU's reset sregs
}

// loadGuest writes the ACPI tables, the boot GDT and the kernel (with its
// boot information) into guest RAM and returns the BSP's entry state.
func (v *VM) loadGuest(b *bootFiles) (bootEntry, error) {
	tables, err := x86.BuildACPI(v.cfg.VCPUs, v.dev.pciIRQs)
	if err != nil {
		return bootEntry{}, err
	}
	if err := v.mem.WriteAt(tables.Data, tables.Base); err != nil {
		return bootEntry{}, fmt.Errorf("vm: write ACPI tables: %w", err)
	}
	if err := x86.WriteBootGDT(v.mem); err != nil {
		return bootEntry{}, err
	}
	if k := b.kernel.Linux; k != nil {
		l, err := k.Load(v.mem, v.cfg.Cmdline, b.initrd, tables.RSDP)
		if err != nil {
			return bootEntry{}, err
		}
		v.log.Info("linux kernel loaded", "protocol", fmt.Sprintf("%d.%02d", k.Protocol>>8, k.Protocol&0xff),
			"load", fmt.Sprintf("%#x", l.LoadAddr), "initrd", fmt.Sprintf("%#x+%#x", l.InitrdAddr, l.InitrdSize))
		return bootEntry{x86.LinuxRegs(uint32(l.LoadAddr), x86.ZeroPageAddr), x86.LinuxSregs}, nil
	}
	if k := b.kernel.PVH; k != nil {
		l, err := k.Load(v.mem, v.cfg.Cmdline, b.initrd, tables.RSDP)
		if err != nil {
			return bootEntry{}, err
		}
		v.log.Info("linux kernel loaded by PVH", "entry", fmt.Sprintf("%#x", k.Entry),
			"kernel", fmt.Sprintf("%#x-%#x", l.LoadAddr, l.KernelEnd), "initrd", fmt.Sprintf("%#x+%#x", l.InitrdAddr, l.InitrdSize))
		return bootEntry{x86.PVHRegs(k.Entry), x86.PVHSregs}, nil
	}
	k := b.kernel.Multiboot
	info, err := k.Load(v.mem, v.cfg.Cmdline)
	if err != nil {
		return bootEntry{}, err
	}
	return bootEntry{x86.MultibootRegs(k.Entry, info), x86.MultibootSregs}, nil
}

// setupVCPU sets the reset state of one vCPU: CPUID, LAPIC LINT pins, and
// for the BSP the kernel's entry state. APs stay in wait-for-SIPI, as KVM
// creates them with an in-kernel irqchip.
func setupVCPU(cpu hv.VCPU, cpuid []hv.CPUIDEntry2, entry bootEntry) error {
	if err := cpu.SetCPUID2(cpuid); err != nil {
		return err
	}
	lapic, err := cpu.GetLAPIC()
	if err != nil {
		return err
	}
	x86.SetLINTs(&lapic)
	if err := cpu.SetLAPIC(lapic); err != nil {
		return err
	}
	if cpu.ID() != 0 {
		return nil
	}
	sregs, err := cpu.GetSregs2()
	if err != nil {
		return err
	}
	if err := cpu.SetSregs2(entry.sregs(sregs)); err != nil {
		return err
	}
	return cpu.SetRegs(entry.regs)
}

// Start runs the vCPUs.
func (v *VM) Start() error {
	v.mu.Lock()
	if v.state != StateCreated {
		v.mu.Unlock()
		return fmt.Errorf("vm %s: start: vm is %s", v.cfg.Name, v.state)
	}
	v.state = StateRunning
	v.started = time.Now()
	announce := v.announceGuest
	if v.resetPending.Swap(false) {
		// The guest asked for a reset right before it left its source:
		// it boots afresh here.
		boot, err := v.bootFilesAgain()
		if err == nil {
			err = v.resetMachine(boot)
		}
		v.mu.Unlock()
		if err != nil {
			return fmt.Errorf("vm %s: start: the reboot the guest asked for: %w", v.cfg.Name, err)
		}
		v.log.Info("guest rebooted", "how", "deferred from the migration source", "reboots", v.reboots.Add(1))
		return nil
	}
	v.mu.Unlock()
	v.startDevices()
	if announce {
		v.log.Info("asking the guest to announce itself", "guest_announce", v.dev.net.Announce())
	}
	return v.eachVCPU(request{kind: reqResume})
}

// Pause stops every vCPU between instructions. It returns once all are
// parked.
func (v *VM) Pause() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch v.state {
	case StatePaused:
		return nil
	case StateRunning:
	default:
		return fmt.Errorf("vm %s: pause: vm is %s", v.cfg.Name, v.state)
	}
	if err := v.eachVCPU(request{kind: reqPause}); err != nil {
		return fmt.Errorf("vm %s: pause: %w", v.cfg.Name, err)
	}
	// Devices stop touching guest RAM and the disk is synced, so that
	// RAM, device state and the image agree from here on.
	if err := v.dev.pause(); err != nil {
		v.dev.resume()
		v.eachVCPU(request{kind: reqResume})
		return fmt.Errorf("vm %s: pause devices: %w", v.cfg.Name, err)
	}
	v.state = StatePaused
	v.log.Info("vm paused")
	return nil
}

// Resume continues a paused VM.
func (v *VM) Resume() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch v.state {
	case StateRunning:
		return nil
	case StatePaused:
	default:
		return fmt.Errorf("vm %s: resume: vm is %s", v.cfg.Name, v.state)
	}
	v.dev.resume()
	if err := v.eachVCPU(request{kind: reqResume}); err != nil {
		return fmt.Errorf("vm %s: resume: %w", v.cfg.Name, err)
	}
	v.state = StateRunning
	v.log.Info("vm resumed")
	v.runDeferredReset()
	return nil
}

// eachVCPU asks every vCPU at once and waits for all answers: a pause or
// resume takes as long as the slowest vCPU, not the sum of all.
func (v *VM) eachVCPU(r request) error {
	answers := make([]answer, len(v.vcpus))
	for i, c := range v.vcpus {
		answers[i] = c.post(r)
	}
	var errs []error
	for i, a := range answers {
		if err := a.wait(); err != nil {
			errs = append(errs, fmt.Errorf("vcpu %d: %w", v.vcpus[i].id, err))
		}
	}
	return errors.Join(errs...)
}

// Stop ends the VM: the vCPUs exit and the VM's resources are released.
// reason is recorded for Status. It is safe to call more than once and from
// any goroutine except a vCPU thread (those use guestStop).
func (v *VM) Stop(reason string) {
	v.stopOnce.Do(func() {
		v.setStopReason(reason)
		v.eachVCPU(request{kind: reqExit})
		v.release()
		v.mu.Lock()
		v.state = StateStopped
		v.mu.Unlock()
		v.endMu.Lock()
		v.log.Info("vm stopped", "reason", v.stopReason, "error", v.stopErr)
		v.endMu.Unlock()
		close(v.stopped)
	})
}

// setStopReason records why the VM ends, unless a reason is already known.
func (v *VM) setStopReason(reason string) {
	if reason == "" {
		reason = "stopped"
	}
	v.endMu.Lock()
	if v.stopReason == "" {
		v.stopReason = reason
	}
	v.endMu.Unlock()
}

// ending reports whether the VM was asked to stop (it has a stop reason):
// from then on a guest reset is ignored.
func (v *VM) ending() bool {
	v.endMu.Lock()
	defer v.endMu.Unlock()
	return v.stopReason != ""
}

// guestStop is called on a vCPU thread when the guest powers off or resets:
// the stop itself runs on another goroutine, since it waits for every vCPU
// thread including the caller.
func (v *VM) guestStop(reason string) {
	v.setStopReason(reason)
	go v.Stop(reason)
}

// fail records a fatal error from a vCPU and stops the VM.
func (v *VM) fail(err error) {
	v.endMu.Lock()
	if v.stopErr == nil {
		v.stopErr = err
	}
	v.endMu.Unlock()
	v.log.Error("vm failed", "err", err)
	v.guestStop("error: " + err.Error())
}

// Wait blocks until the VM has stopped and returns the error that stopped it,
// or nil for a clean power-off or Stop.
func (v *VM) Wait() error {
	<-v.stopped
	v.endMu.Lock()
	defer v.endMu.Unlock()
	return v.stopErr
}

// Done is closed when the VM has stopped.
func (v *VM) Done() <-chan struct{} { return v.stopped }

// release frees devices, IRQ lines, RAM and the backend's VM.
func (v *VM) release() {
	if v.dev != nil {
		v.dev.close()
	}
	for _, l := range v.irqs {
		l.Close()
	}
	v.irqs = nil
	if v.hvm != nil {
		v.hvm.Close()
		v.hvm = nil
	}
	if v.mem != nil {
		v.mem.Close()
		v.mem = nil
	}
}

func (v *VM) logMMIOOnce(addr uint64, write bool) {
	if _, seen := v.mmioOnce.LoadOrStore(addr&^0xfff, true); !seen {
		v.log.Debug("guest accessed unclaimed MMIO", "addr", fmt.Sprintf("%#x", addr), "write", write)
	}
}

// ConsoleInput sends bytes to the guest's serial port as if typed.
func (v *VM) ConsoleInput(b []byte) { v.dev.uart.Input(b) }

// Status is a snapshot of the VM for the API.
type Status struct {
	Name      string         `json:"name"`
	State     State          `json:"state"`
	Accel     string         `json:"accel"`
	VCPUs     int            `json:"vcpus"`
	MemMiB    uint64         `json:"mem_mib"`
	Kernel    string         `json:"kernel"`
	UptimeSec float64        `json:"uptime_s"`
	Exits     uint64         `json:"exits"`
	Reboots   int64          `json:"reboots,omitempty"` // guest reboots this VMM restarted it from
	Stopped   string         `json:"stopped_reason,omitempty"`
	Error     string         `json:"error,omitempty"`
	Devices   []DeviceStatus `json:"devices,omitempty"`
}

// DeviceStatus describes one device for the API.
type DeviceStatus struct {
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// Status returns a snapshot of the VM.
func (v *VM) Status() Status {
	v.mu.Lock()
	s := Status{
		Name:    v.cfg.Name,
		State:   v.state,
		Accel:   v.accel,
		VCPUs:   v.cfg.VCPUs,
		MemMiB:  v.cfg.MemBytes >> 20,
		Kernel:  v.cfg.Kernel,
		Reboots: v.reboots.Load(),
	}
	if !v.started.IsZero() {
		s.UptimeSec = time.Since(v.started).Seconds()
	}
	v.mu.Unlock()
	v.endMu.Lock()
	s.Stopped = v.stopReason
	if v.stopErr != nil {
		s.Error = v.stopErr.Error()
	}
	v.endMu.Unlock()
	for _, c := range v.vcpus {
		s.Exits += c.exits.Load()
	}
	s.Devices = v.dev.status()
	return s
}

// Config returns the VM's configuration.
func (v *VM) Config() Config { return v.cfg }

// consoleWriter is where guest serial output goes when Config.Console is nil.
var consoleWriter io.Writer = io.Discard

// deviceWriteObserver is a backend that must hear of the VMM's writes into
// guest RAM: the software CPU drops instructions it decoded from pages a
// device overwrote.
type deviceWriteObserver interface {
	DeviceWrote(gpa, n uint64)
}
