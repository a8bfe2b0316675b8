package vm

import (
	"errors"
	"fmt"
	"time"

	"github.com/godwit-vmm/godwit/internal/arch/x86"
	"github.com/godwit-vmm/godwit/internal/hv"
)

// A guest reboot (the keyboard controller's reset line, port 0xcf9, the
// ACPI reset register, or a reset system event from KVM) resets the
// machine in place, as QEMU does: the vCPUs, interrupt controllers, timers
// and devices go back to the state they had when the VM was created, RAM
// reads as zeros, and the kernel, initrd and boot tables are loaded again
// from Config's files, so that a kernel replaced at its path boots. The
// process, its TAP, disk and API socket stay. A triple fault is not a
// reboot: it stops the VM with an error, so a crashing guest cannot loop.

// resetState is the machine as it was created, before its first
// instruction: what a reboot restores.
type resetState struct {
	vcpus []*x86.VCPUState
	vm    *x86.VMState
	dev   DeviceState
}

// saveResetState records the machine as created; create calls it last.
func (v *VM) saveResetState() error {
	rs := &resetState{vcpus: make([]*x86.VCPUState, len(v.vcpus))}
	for i, c := range v.vcpus {
		err := c.send(request{kind: reqDo, fn: func(cpu hv.VCPU) error {
			s, err := x86.SaveVCPU(cpu, v.info.XSAVESize, v.info.MSRs)
			rs.vcpus[i] = s
			return err
		}})
		if err != nil {
			return fmt.Errorf("vm: save the reset state of vcpu %d: %w", c.id, err)
		}
	}
	var err error
	if rs.vm, err = x86.SaveVM(v.hvm); err != nil {
		return fmt.Errorf("vm: save the reset state: %w", err)
	}
	if rs.dev, err = v.dev.save(); err != nil {
		return fmt.Errorf("vm: save the reset state of the devices: %w", err)
	}
	v.reset = rs
	return nil
}

// guestReset is called on a vCPU thread when the guest resets the
// machine: it reboots the VM, or stops it if so configured. The reboot
// runs on another goroutine, since it waits for every vCPU thread.
func (v *VM) guestReset(how string) {
	if v.ending() {
		// Ending already: a guest that powers off and then resets, as
		// the test guest does in case the power-off port is missing.
		return
	}
	if v.cfg.OnReboot == RebootStop {
		v.guestStop("guest reset (" + how + ")")
		return
	}
	if v.rebooting.CompareAndSwap(false, true) {
		go v.reboot(how)
	}
}

// reboot resets the running machine and boots its kernel again. A VM
// paused meanwhile (by a user, or for a migration's switchover) reboots
// when it runs again, here or on the migration's destination; a stopping
// one does not.
//
// rebooting is cleared under v.mu, before the vCPUs run again, so that a
// reset the new guest asks for is never lost, nor one deferred by a pause
// that Resume ends.
func (v *VM) reboot(how string) {
	start := time.Now()
	// The kernel is read before anything stops: if it is gone, the VM
	// stops with nothing of it undone.
	boot, berr := v.bootFilesAgain()
	v.mu.Lock()
	if v.state != StateRunning || v.ending() {
		state := v.state
		if state == StatePaused {
			v.resetPending.Store(true)
		}
		v.rebooting.Store(false)
		v.mu.Unlock()
		v.log.Info("guest reset while the VM is not running", "how", how, "state", state, "deferred", state == StatePaused)
		return
	}
	err := berr
	if err == nil {
		err = v.resetMachine(boot)
	}
	v.rebooting.Store(false)
	v.mu.Unlock()
	if err != nil && v.ending() {
		v.log.Info("guest reboot abandoned: the VM is stopping", "err", err)
		return
	}
	if err != nil {
		v.fail(fmt.Errorf("guest reboot: %w", err))
		return
	}
	n := v.reboots.Add(1)
	v.log.Info("guest rebooted", "how", how, "reboots", n, "ms", time.Since(start).Milliseconds())
}

// bootFilesAgain reads the kernel and initrd for a reboot.
func (v *VM) bootFilesAgain() (*bootFiles, error) {
	if v.cfg.Kernel == "" {
		return nil, errors.New("no kernel to boot again: the VM arrived by migration at a VMM started without --kernel (give it --kernel, --initrd and --cmdline to let a migrated guest reboot)")
	}
	boot, err := readBootFiles(v.cfg)
	if err != nil {
		return nil, fmt.Errorf("read the kernel again: %w", err)
	}
	return boot, nil
}

// resetMachine stops the vCPUs and devices, puts back the state the VM was
// created with, loads boot into RAM and runs the guest. v.mu is held.
func (v *VM) resetMachine(boot *bootFiles) error {
	if v.reset == nil {
		return errors.New("no reset state")
	}
	if err := v.eachVCPU(request{kind: reqPause}); err != nil {
		return fmt.Errorf("stop the vCPUs: %w", err)
	}
	if err := v.dev.pause(); err != nil {
		return fmt.Errorf("stop the devices: %w", err)
	}
	if err := v.mem.Zero(); err != nil {
		return err
	}
	entry, err := v.loadGuest(boot)
	if err != nil {
		return err
	}
	for i, c := range v.vcpus {
		s := v.reset.vcpus[i]
		err := c.send(request{kind: reqDo, fn: func(cpu hv.VCPU) error {
			if err := x86.RestoreVCPU(cpu, s); err != nil {
				return err
			}
			return setupVCPU(cpu, s.CPUID, entry)
		}})
		if err != nil {
			return fmt.Errorf("reset vcpu %d: %w", c.id, err)
		}
	}
	if err := x86.RestoreVM(v.hvm, v.reset.vm); err != nil {
		return fmt.Errorf("reset the interrupt controllers and timer: %w", err)
	}
	if err := v.dev.restore(v.reset.dev); err != nil {
		return fmt.Errorf("reset the devices: %w", err)
	}
	v.dev.resume()
	v.rebooting.Store(false)
	if err := v.eachVCPU(request{kind: reqResume}); err != nil {
		return fmt.Errorf("run the vCPUs: %w", err)
	}
	return nil
}

// runDeferredReset starts the reboot a pause deferred; Resume calls it,
// holding v.mu, once the vCPUs run (Start reboots instead of running the
// vCPUs). A reboot already on its way (waiting for v.mu) does it instead.
func (v *VM) runDeferredReset() {
	if v.resetPending.Swap(false) && v.rebooting.CompareAndSwap(false, true) {
		go v.reboot("deferred by a pause")
	}
}
