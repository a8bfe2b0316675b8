package vm

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/kvm"
)

// kickSignal interrupts a vCPU thread blocked in KVM_RUN. The Go runtime
// must handle it (signal.Notify), or the default action would kill the
// process.
const kickSignal = unix.SIGUSR1

var installKick sync.Once

func installKickHandler() {
	installKick.Do(func() {
		// The channel is never read: the runtime drops signals once it
		// is full, which is all a kick needs.
		signal.Notify(make(chan os.Signal, 1), kickSignal)
	})
}

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
	fn   func(*kvm.VCPU) error
	done chan error
}

// vcpu is one vCPU and the goroutine, locked to its OS thread, that runs it.
// Other goroutines control it only through requests.
type vcpu struct {
	id  int
	vm  *VM
	cpu *kvm.VCPU // owned by the vCPU goroutine
	tid atomic.Int32

	// kickMu guards closed: kick writes into kvm_run from other
	// goroutines, so the vCPU goroutine takes it before unmapping.
	kickMu sync.Mutex
	closed bool

	reqs chan request

	exits atomic.Uint64 // exits to userspace, for status

	// throttle is how long the vCPU must sleep at its next stop outside
	// KVM_RUN, in nanoseconds (auto-converge; see throttle.go).
	throttle atomic.Int64
}

// start creates the vCPU on a new locked OS thread, runs setup there, and
// leaves the vCPU parked. It returns once setup is done.
func (c *vcpu) start(setup func(*kvm.VCPU) error) error {
	ready := make(chan error, 1)
	go c.loop(setup, ready)
	return <-ready
}

// send queues a request, kicks the vCPU out of KVM_RUN and waits for the
// answer.
func (c *vcpu) send(r request) error { return <-c.post(r) }

// post queues a request and kicks the vCPU out of KVM_RUN without waiting;
// the returned channel carries the answer. Posting to every vCPU before
// waiting on any lets them all act at once.
func (c *vcpu) post(r request) <-chan error {
	r.done = make(chan error, 1)
	c.reqs <- r
	c.kick()
	return r.done
}

func (c *vcpu) kick() {
	c.kickMu.Lock()
	defer c.kickMu.Unlock()
	if c.cpu == nil || c.closed {
		return
	}
	c.cpu.SetImmediateExit(true)
	if tid := c.tid.Load(); tid != 0 {
		// ESRCH: the thread is gone, nothing to kick.
		unix.Tgkill(os.Getpid(), int(tid), kickSignal)
	}
}

func (c *vcpu) loop(setup func(*kvm.VCPU) error, ready chan<- error) {
	// The thread stays locked until the goroutine ends; the runtime then
	// destroys it, with the vCPU fd closed before.
	runtime.LockOSThread()
	c.tid.Store(int32(unix.Gettid()))
	cpu, err := c.vm.kvm.CreateVCPU(c.id)
	if err == nil {
		c.cpu = cpu
		err = setup(cpu)
	}
	if cpu != nil {
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
					if _, err := cpu.Run(); err != nil && !errors.Is(err, kvm.ErrInterrupted) {
						r.done <- err
						continue
					}
					cpu.SetImmediateExit(false)
					parked = true
				}
				r.done <- nil
			case reqResume:
				parked = false
				r.done <- nil
				done = true
			case reqDo:
				if !parked {
					r.done <- errors.New("vm: vcpu must be paused")
					continue
				}
				r.done <- r.fn(cpu)
			case reqExit:
				c.tid.Store(0)
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
		if errors.Is(err, kvm.ErrInterrupted) {
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

func (c *vcpu) handleExit(cpu *kvm.VCPU, reason uint32) error {
	switch reason {
	case kvm.KVM_EXIT_IO:
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
	case kvm.KVM_EXIT_MMIO:
		m := cpu.MMIO()
		if !m.Write {
			for i := range m.Data {
				m.Data[i] = 0xff
			}
		}
		c.vm.logMMIOOnce(m.Addr, m.Write)
		return nil
	case kvm.KVM_EXIT_INTR, kvm.KVM_EXIT_HLT, kvm.KVM_EXIT_IRQ_WINDOW_OPEN:
		return nil
	case kvm.KVM_EXIT_SHUTDOWN:
		regs, _ := cpu.GetRegs()
		c.vm.guestStop(fmt.Sprintf("vcpu %d: guest triple fault (shutdown) at rip %#x", c.id, regs.RIP))
		return nil
	case kvm.KVM_EXIT_SYSTEM_EVENT:
		switch t := cpu.SystemEventType(); t {
		case kvm.KVM_SYSTEM_EVENT_SHUTDOWN:
			c.vm.guestStop("guest powered off")
		case kvm.KVM_SYSTEM_EVENT_RESET:
			c.vm.guestStop("guest reset")
		default:
			return fmt.Errorf("guest system event %d", t)
		}
		return nil
	case kvm.KVM_EXIT_INTERNAL_ERROR:
		return c.internalError(cpu)
	case kvm.KVM_EXIT_FAIL_ENTRY:
		regs, _ := cpu.GetRegs()
		return fmt.Errorf("KVM could not enter the guest (fail entry) at rip %#x", regs.RIP)
	}
	regs, _ := cpu.GetRegs()
	return fmt.Errorf("unhandled KVM exit reason %d at rip %#x", reason, regs.RIP)
}

// internalError turns KVM_EXIT_INTERNAL_ERROR into an error naming the
// instruction, since on an emulating KVM this is how an instruction the
// emulator lacks shows up.
func (c *vcpu) internalError(cpu *kvm.VCPU) error {
	ie := cpu.InternalError()
	regs, _ := cpu.GetRegs()
	sregs, _ := cpu.GetSregs()
	insn := ie.Insn
	if len(insn) == 0 {
		// Without paging, or with the identity map test guests use, the
		// linear address of RIP is its physical address.
		if b, err := c.vm.mem.Slice(sregs.CS.Base+regs.RIP, 15); err == nil {
			insn = b
		}
	}
	what := map[uint32]string{
		kvm.KVM_INTERNAL_ERROR_EMULATION:   "instruction emulation failed",
		kvm.KVM_INTERNAL_ERROR_SIMUL_EX:    "exception during exception delivery",
		kvm.KVM_INTERNAL_ERROR_DELIVERY_EV: "event delivery failed",
	}[ie.Suberror]
	if what == "" {
		what = fmt.Sprintf("suberror %d", ie.Suberror)
	}
	return fmt.Errorf("KVM internal error: %s at rip %#x (cs base %#x, cr0 %#x, efer %#x), instruction bytes % x, data %#x",
		what, regs.RIP, sregs.CS.Base, sregs.CR0, sregs.EFER, insn, ie.Data)
}
