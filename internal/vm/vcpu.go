package vm

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// requestKind is what a vCPU thread is asked to do.
type requestKind int

const (
	reqPause  requestKind = iota // complete pending I/O and park
	reqResume                    // leave the parked state
	reqDo                        // run fn on the vCPU thread while parked
	reqExit                      // leave the loop for good
)

type request struct {
	kind requestKind
	fn   func(hv.VCPU) error
	done chan error
}

// vcpu is one vCPU and the goroutine, locked to its OS thread, that runs it.
// Other goroutines control it only through requests.
type vcpu struct {
	id  int
	vm  *VM
	cpu hv.VCPU // owned by the vCPU goroutine

	// kickMu guards closed: a kick touches the backend's vCPU (KVM's
	// kvm_run) from other goroutines, so the vCPU goroutine takes it
	// before closing it.
	kickMu sync.Mutex
	closed bool

	reqs chan request
	gone chan struct{} // closed when the loop has returned

	exits atomic.Uint64 // exits to userspace, for status

	// throttle is how long the vCPU must sleep at its next stop outside
	// KVM_RUN, in nanoseconds (auto-converge; see throttle.go).
	throttle atomic.Int64
}

// start creates the vCPU on a new locked OS thread, runs setup there, and
// leaves the vCPU parked. It returns once setup is done.
func (c *vcpu) start(setup func(hv.VCPU) error) error {
	ready := make(chan error, 1)
	go c.loop(setup, ready)
	return <-ready
}

// errVCPUGone answers a request to a vCPU whose loop has ended: the VM
// has stopped.
var errVCPUGone = errors.New("vm: the vcpu has exited (the VM stopped)")

// send queues a request, kicks the vCPU out of its run and waits for the
// answer.
func (c *vcpu) send(r request) error { return c.post(r).wait() }

// answer is the pending answer to a posted request.
type answer struct {
	c    *vcpu
	kind requestKind
	done chan error
}

// wait returns the vCPU's answer. A vCPU that has exited answers nothing:
// then a resume or an exit has nothing left to do, and anything else
// fails with errVCPUGone. (A guest can stop the VM at any moment, so a
// request may race with that stop's exit request.)
func (a answer) wait() error {
	select {
	case err := <-a.done:
		return err
	case <-a.c.gone:
	}
	select {
	case err := <-a.done: // answered just before the loop ended
		return err
	default:
	}
	if a.kind == reqExit || a.kind == reqResume {
		return nil
	}
	return errVCPUGone
}

// post queues a request and kicks the vCPU out of its run without waiting.
// Posting to every vCPU before waiting on any lets them all act at once.
func (c *vcpu) post(r request) answer {
	r.done = make(chan error, 1)
	a := answer{c: c, kind: r.kind, done: r.done}
	select {
	case c.reqs <- r:
	case <-c.gone:
		return a
	}
	c.kick()
	return a
}

func (c *vcpu) kick() {
	c.kickMu.Lock()
	defer c.kickMu.Unlock()
	if c.cpu == nil || c.closed {
		return
	}
	c.cpu.Kick()
}

func (c *vcpu) loop(setup func(hv.VCPU) error, ready chan<- error) {
	// The thread stays locked until the goroutine ends; the runtime then
	// destroys it, with the vCPU closed before.
	runtime.LockOSThread()
	defer close(c.gone)
	cpu, err := c.vm.hvm.CreateVCPU(c.id)
	if err == nil {
		c.cpu = cpu
		err = setup(cpu)
	}
	if err == nil {
		defer func() {
			c.kickMu.Lock()
			c.closed = true
			c.kickMu.Unlock()
			cpu.Close()
		}()
	}
	ready <- err
	if err != nil {
		return
	}

	parked := true // every vCPU starts parked; VM.Start resumes them
	for {
		cpu.SetImmediateExit(false)
		// Drain requests; block on them while parked.
		for done := false; !done; {
			var r request
			if parked {
				r = <-c.reqs
			} else {
				select {
				case r = <-c.reqs:
				default:
					done = true
					continue
				}
			}
			switch r.kind {
			case reqPause:
				if !parked {
					// Let KVM finish an I/O instruction whose
					// exit was just handled, so the saved state
					// is between instructions.
					cpu.SetImmediateExit(true)
					if _, err := cpu.Run(); err != nil && !errors.Is(err, hv.ErrInterrupted) {
						r.done <- err
						continue
					}
					cpu.SetImmediateExit(false)
					parked = true
				}
				r.done <- nil
			case reqResume:
				// Go on draining: a request queued behind the
				// resume must not wait for a kick, which may have
				// come before this loop cleared the immediate exit.
				parked = false
				r.done <- nil
			case reqDo:
				if !parked {
					r.done <- errors.New("vm: vcpu must be paused")
					continue
				}
				r.done <- r.fn(cpu)
			case reqExit:
				r.done <- nil
				return
			}
		}
		if parked {
			continue
		}
		if d := c.throttle.Swap(0); d > 0 {
			c.sleep(time.Duration(d))
			continue // requests may have arrived while asleep
		}
		reason, err := cpu.Run()
		if errors.Is(err, hv.ErrInterrupted) {
			continue
		}
		if err != nil {
			c.vm.fail(fmt.Errorf("vcpu %d: %w", c.id, err))
			parked = true
			continue
		}
		c.exits.Add(1)
		if c.vm.pastDeadline() {
			// Fenced: leave the exit unhandled (no I/O of the guest
			// takes effect) and never enter the guest again.
			c.vm.fenced(c.id)
			parked = true
			continue
		}
		if err := c.handleExit(cpu, reason); err != nil {
			c.vm.fail(fmt.Errorf("vcpu %d: %w", c.id, err))
			parked = true
		}
	}
}

func (c *vcpu) handleExit(cpu hv.VCPU, reason hv.Exit) error {
	switch reason {
	case hv.ExitIO:
		io := cpu.IO()
		for off := 0; off+io.Size <= len(io.Data); off += io.Size {
			d := io.Data[off : off+io.Size]
			if io.Out {
				c.vm.ports.Out(io.Port, d)
			} else {
				c.vm.ports.In(io.Port, d)
			}
		}
		return nil
	case hv.ExitMMIO:
		m := cpu.MMIO()
		if !m.Write {
			for i := range m.Data {
				m.Data[i] = 0xff
			}
		}
		c.vm.logMMIOOnce(m.Addr, m.Write)
		return nil
	case hv.ExitIntr, hv.ExitHLT, hv.ExitIRQWindow:
		return nil
	case hv.ExitShutdown:
		regs, _ := cpu.GetRegs()
		c.vm.guestStop(fmt.Sprintf("vcpu %d: guest triple fault (shutdown) at rip %#x", c.id, regs.RIP))
		return nil
	case hv.ExitSystemEvent:
		switch t := cpu.SystemEvent(); t {
		case hv.SystemEventShutdown:
			c.vm.guestStop("guest powered off")
		case hv.SystemEventReset:
			c.vm.guestReset("system event")
		default:
			return fmt.Errorf("guest system event %d", t)
		}
		return nil
	case hv.ExitInternalError:
		return c.internalError(cpu)
	case hv.ExitFailEntry:
		regs, _ := cpu.GetRegs()
		return fmt.Errorf("%s could not enter the guest (fail entry) at rip %#x", c.vm.accel, regs.RIP)
	}
	regs, _ := cpu.GetRegs()
	return fmt.Errorf("unhandled %s exit %d at rip %#x", c.vm.accel, reason, regs.RIP)
}

// internalError turns an internal-error exit into an error naming the
// instruction, since on an emulating KVM (or the software CPU) this is how
// an instruction the emulator cannot run shows up.
func (c *vcpu) internalError(cpu hv.VCPU) error {
	ie := cpu.InternalError()
	regs, _ := cpu.GetRegs()
	sregs, _ := cpu.GetSregs2()
	insn := ie.Insn
	if len(insn) == 0 {
		// Without paging, or with the identity map test guests use, the
		// linear address of RIP is its physical address.
		if b, err := c.vm.mem.Slice(sregs.CS.Base+regs.RIP, 15); err == nil {
			insn = b
		}
	}
	what := map[uint32]string{
		hv.InternalErrorEmulation:  "instruction emulation failed",
		hv.InternalErrorSimulEx:    "exception during exception delivery",
		hv.InternalErrorDeliveryEv: "event delivery failed",
	}[ie.Suberror]
	if what == "" {
		what = fmt.Sprintf("suberror %d", ie.Suberror)
	}
	if ie.Reason != "" {
		what += ": " + ie.Reason
	}
	return fmt.Errorf("%s internal error: %s at rip %#x (cs base %#x, cr0 %#x, efer %#x), instruction bytes % x, data %#x",
		c.vm.accel, what, regs.RIP, sregs.CS.Base, sregs.CR0, sregs.EFER, insn, ie.Data)
}
