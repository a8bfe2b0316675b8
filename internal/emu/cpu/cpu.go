package cpu

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// Segment register numbers, in the encoding order of the instruction set.
const (
	segES = iota
	segCS
	segSS
	segDS
	segFS
	segGS
	segNone = 7
)

// General register numbers.
const (
	rAX = iota
	rCX
	rDX
	rBX
	rSP
	rBP
	rSI
	rDI
)

// RFLAGS bits.
const (
	flagCF   = 1 << 0
	flagPF   = 1 << 2
	flagAF   = 1 << 4
	flagZF   = 1 << 6
	flagSF   = 1 << 7
	flagTF   = 1 << 8
	flagIF   = 1 << 9
	flagDF   = 1 << 10
	flagOF   = 1 << 11
	flagIOPL = 3 << 12
	flagNT   = 1 << 14
	flagRF   = 1 << 16
	flagVM   = 1 << 17
	flagAC   = 1 << 18
	flagVIF  = 1 << 19
	flagVIP  = 1 << 20
	flagID   = 1 << 21

	flagsArith = flagCF | flagPF | flagAF | flagZF | flagSF | flagOF
)

// Control register and EFER bits.
const (
	cr0PE = 1 << 0
	cr0MP = 1 << 1
	cr0EM = 1 << 2
	cr0TS = 1 << 3
	cr0ET = 1 << 4
	cr0NE = 1 << 5
	cr0WP = 1 << 16
	cr0AM = 1 << 18
	cr0NW = 1 << 29
	cr0CD = 1 << 30
	cr0PG = 1 << 31

	cr4PSE = 1 << 4
	cr4PAE = 1 << 5
	cr4PGE = 1 << 7

	eferSCE = 1 << 0
	eferLME = 1 << 8
	eferLMA = 1 << 10
	eferNXE = 1 << 11
)

// ExitKind says why Step or Run returned.
type ExitKind int

// Exit kinds.
const (
	ExitNone          ExitKind = iota // Step: the instruction ran
	ExitBudget                        // Run: maxInsns instructions ran
	ExitKicked                        // Run: Kick was called
	ExitIO                            // a port access the VMM must handle
	ExitMMIO                          // an MMIO access the VMM must handle
	ExitHLT                           // hlt executed; RIP is after it (see Platform)
	ExitShutdown                      // triple fault
	ExitInternalError                 // the emulator cannot go on (Reason, RIP, Insn)
	ExitException                     // TrapExceptions: an exception was raised
)

var exitNames = [...]string{"none", "budget", "kicked", "io", "mmio", "hlt", "shutdown", "internal-error", "exception"}

func (k ExitKind) String() string {
	if int(k) < len(exitNames) {
		return exitNames[k]
	}
	return fmt.Sprintf("exit(%d)", int(k))
}

// Exit describes why Step or Run returned.
type Exit struct {
	Kind      ExitKind
	Port      uint16 // ExitIO
	Size      int    // ExitIO, ExitMMIO: access size in bytes
	Write     bool   // ExitIO, ExitMMIO
	Addr      uint64 // ExitMMIO: guest-physical address
	Data      uint64 // written value (Write=true)
	Vector    int    // ExitException
	ErrorCode uint32 // ExitException
	RIP       uint64 // where the CPU stopped; ExitException, ExitInternalError, ExitShutdown: the instruction at fault
	Insn      []byte // ExitInternalError: instruction bytes
	Reason    string // ExitInternalError
}

// CPU is one software x86-64 vCPU. Its methods must be called from one
// goroutine at a time (the vCPU thread), except Kick.
type CPU struct {
	id   int
	mem  *Memory
	plat Platform

	// TrapExceptions is a test knob: any exception ends Step/Run with
	// ExitException instead of being delivered through the IDT.
	TrapExceptions bool

	regs  [16]uint64
	rip   uint64
	flags uint64 // RFLAGS; the arithmetic bits are stale while lf.op != lfNone
	lf    lazyFlags

	seg      [6]hv.Segment
	tr, ldt  hv.Segment
	gdt, idt hv.DTable

	cr0, cr2, cr3, cr4, cr8 uint64
	efer, apicBase          uint64
	dr                      [8]uint64

	star, lstar, cstar, sfmask uint64
	kernelGSBase, tscAux       uint64
	sysenterCS, sysenterESP    uint64
	sysenterEIP, pat           uint64
	mtrrDefType, miscEnable    uint64
	mtrrVar                    [16]uint64
	mtrrFix                    [11]uint64

	cpuid []hv.CPUIDEntry2

	fpu fpuState // x87, MMX, SSE (fpu.go)

	tlb [tlbSize]tlbEntry
	// tlbUsed lists the indexes of tlb entries filled since they were
	// last flushed, each once (tlbListed), so flushes touch only them.
	tlbUsed []uint16
	code    codePage

	// Interrupt state.
	shadow      uint8 // 1: STI shadow, 2: MOV SS shadow, for one instruction
	savedShadow uint8 // shadow before the current instruction
	nmiPending  bool
	nmiMasked   bool
	irqCheck    bool // ask the platform for an interrupt at the next boundary
	sinceCheck  int

	// Completion of accesses the VMM answered.
	haveIn   bool
	inVal    uint32
	haveMMIO bool // a CompleteMMIORead answer waits for its instruction
	// mmioReplay holds the MMIO values the current instruction has read
	// (or the VMM supplied), so that an instruction restarted after an
	// ExitMMIO sees the same values without reading the devices again.
	mmioReplay     [4]uint64
	mmioN, mmioPos uint8

	// exit is set during an instruction that must end Run after it
	// completes (Out/MMIOWrite with exit=true, hlt).
	exit Exit

	// Dirty-log handshake with Memory.ClearDirtyLog.
	inRun   atomic.Int32
	ackGen  atomic.Uint64
	seenGen uint64
	kick    atomic.Bool
	poke    atomic.Bool

	// Decode state of the current instruction.
	startRIP uint64
	in       insn  // decode target
	cur      *insn // the instruction executing: &in or a decode-cache entry
	fetch    fetchState
	dcache   decodeCache

	// Exception delivery bookkeeping for the double-fault rules.
	delivering int // vector being delivered, -1 if none

	// Events set by SetEvents, delivered before the next instruction.
	pendingExc *fault
	pendingIRQ *int
}

// New returns a vCPU in the INIT state, sharing mem with the VM's other
// vCPUs and reaching devices through p.
func New(id int, mem *Memory, p Platform) *CPU {
	c := &CPU{id: id, mem: mem, plat: p, delivering: -1}
	c.cur = &c.in
	c.tlbUsed = make([]uint16, 0, tlbSize) // each index at most once: never grows
	c.cpuid = SupportedCPUID()
	c.fpu.reset() // power-on only: INIT leaves the x87 and SSE state alone
	c.Reset()
	mem.register(c)
	return c
}

// ID returns the vCPU index given to New.
func (c *CPU) ID() int { return c.id }

// Reset puts the CPU in the architectural INIT state: real mode, CS=0xF000
// with base 0xFFFF0000, IP=0xFFF0.
func (c *CPU) Reset() {
	c.regs = [16]uint64{}
	c.regs[rDX] = uint64(cpuSignature)
	c.rip = 0xfff0
	c.flags = 2
	c.lf = lazyFlags{}
	data := hv.Segment{Limit: 0xffff, Type: 3, Present: 1, S: 1}
	for i := range c.seg {
		c.seg[i] = data
	}
	c.seg[segCS] = hv.Segment{Selector: 0xf000, Base: 0xffff0000, Limit: 0xffff, Type: 0xb, Present: 1, S: 1}
	c.gdt = hv.DTable{Limit: 0xffff}
	c.idt = hv.DTable{Limit: 0xffff}
	c.ldt = hv.Segment{Limit: 0xffff, Type: 2, Present: 1}
	c.tr = hv.Segment{Limit: 0xffff, Type: 0xb, Present: 1}
	c.cr0 = cr0ET | cr0NW | cr0CD
	c.cr2, c.cr3, c.cr4, c.cr8, c.efer = 0, 0, 0, 0, 0
	c.dr = [8]uint64{}
	c.dr[6] = 0xffff0ff0
	c.dr[7] = 0x400
	c.pat = 0x0007040600070406
	c.miscEnable = 1
	c.shadow = 0
	c.nmiPending, c.nmiMasked = false, false
	c.haveIn, c.haveMMIO = false, false
	c.mmioN, c.mmioPos = 0, 0
	c.flushTLB(true)
}

// StartupIPI starts the CPU at vector<<12 in real mode, as a SIPI does.
func (c *CPU) StartupIPI(vector uint8) {
	c.seg[segCS].Selector = uint16(vector) << 8
	c.seg[segCS].Base = uint64(vector) << 12
	c.rip = 0
}

// Kick makes Run return ExitKicked at the next instruction boundary and
// makes the CPU ask the Platform for interrupts again. Safe from any
// goroutine.
func (c *CPU) Kick() { c.kick.Store(true) }

// NotifyInterrupt makes the CPU ask Platform.PendingInterrupt within a few
// instructions (at most burstLen), without ending Run as Kick does. Safe
// from any goroutine.
func (c *CPU) NotifyInterrupt() { c.poke.Store(true) }

// InjectNMI makes an NMI pending; it is delivered when NMIs are unblocked.
func (c *CPU) InjectNMI() { c.nmiPending = true }

// CompleteIn supplies the value of the port read that ended Run with ExitIO.
func (c *CPU) CompleteIn(val uint32) { c.haveIn, c.inVal = true, val }

// CompleteMMIORead supplies the value of the MMIO read that ended Run with
// ExitMMIO.
func (c *CPU) CompleteMMIORead(val uint64) {
	c.haveMMIO = true
	if c.mmioN < uint8(len(c.mmioReplay)) {
		c.mmioReplay[c.mmioN] = val
		c.mmioN++
	}
}

// GetRegs returns the general registers, RIP and RFLAGS.
func (c *CPU) GetRegs() hv.Regs {
	r := c.regs
	return hv.Regs{
		RAX: r[0], RCX: r[1], RDX: r[2], RBX: r[3], RSP: r[4], RBP: r[5], RSI: r[6], RDI: r[7],
		R8: r[8], R9: r[9], R10: r[10], R11: r[11], R12: r[12], R13: r[13], R14: r[14], R15: r[15],
		RIP: c.rip, RFLAGS: c.getFlags(),
	}
}

// SetRegs sets the general registers, RIP and RFLAGS.
func (c *CPU) SetRegs(r hv.Regs) {
	c.regs = [16]uint64{r.RAX, r.RCX, r.RDX, r.RBX, r.RSP, r.RBP, r.RSI, r.RDI,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15}
	c.rip = r.RIP
	c.setFlags(r.RFLAGS)
	c.irqCheck = true
}

// sregs2FlagPDPTRsValid is KVM_SREGS2_FLAGS_PDPTRS_VALID.
const sregs2FlagPDPTRsValid = 1

// GetSregs2 returns the segment and control registers.
func (c *CPU) GetSregs2() hv.Sregs2 {
	s := hv.Sregs2{
		ES: c.seg[segES], CS: c.seg[segCS], SS: c.seg[segSS], DS: c.seg[segDS], FS: c.seg[segFS], GS: c.seg[segGS],
		TR: c.tr, LDT: c.ldt, GDT: c.gdt, IDT: c.idt,
		CR0: c.cr0, CR2: c.cr2, CR3: c.cr3, CR4: c.cr4, CR8: c.cr8, EFER: c.efer, APICBase: c.apicBase,
	}
	if c.cr0&cr0PG != 0 && c.cr4&cr4PAE != 0 && c.efer&eferLMA == 0 {
		s.Flags = sregs2FlagPDPTRsValid
		for i := range s.PDPTRs {
			if p, _ := c.mem.hostAt(c.cr3&0xffffffe0 + uint64(i)*8); p != nil {
				s.PDPTRs[i] = loadAtomic64(p)
			}
		}
	}
	return s
}

// SetSregs2 loads the segment caches as given (KVM semantics), the control
// registers, EFER and the descriptor tables, and flushes the TLB. As KVM
// does, it rejects EFER.LMA that disagrees with EFER.LME and CR0.PG. PAE
// PDPTEs are re-read from memory on each walk, so s.PDPTRs is ignored.
func (c *CPU) SetSregs2(s hv.Sregs2) error {
	if s.CR0&cr0PG != 0 && s.CR0&cr0PE == 0 {
		return fmt.Errorf("cpu %d: set sregs: CR0.PG without CR0.PE (cr0 %#x)", c.id, s.CR0)
	}
	if s.EFER&eferLMA != 0 && (s.CR0&cr0PG == 0 || s.CR4&cr4PAE == 0) {
		return fmt.Errorf("cpu %d: set sregs: EFER.LMA without paging and PAE", c.id)
	}
	if lma := s.CR0&cr0PG != 0 && s.EFER&eferLME != 0; lma != (s.EFER&eferLMA != 0) {
		return fmt.Errorf("cpu %d: set sregs: EFER.LMA (efer %#x) disagrees with EFER.LME and CR0.PG (cr0 %#x)", c.id, s.EFER, s.CR0)
	}
	c.seg = [6]hv.Segment{s.ES, s.CS, s.SS, s.DS, s.FS, s.GS}
	c.tr, c.ldt, c.gdt, c.idt = s.TR, s.LDT, s.GDT, s.IDT
	c.cr0, c.cr2, c.cr3, c.cr4, c.cr8 = s.CR0, s.CR2, s.CR3, s.CR4, s.CR8
	c.efer, c.apicBase = s.EFER, s.APICBase
	c.flushTLB(true)
	c.dcache.flush()
	return nil
}

// GetDebugRegs returns DR0-3, DR6 and DR7 as struct kvm_debugregs (db[4],
// dr6, dr7, flags, reserved). They are stored only: no breakpoints fire.
func (c *CPU) GetDebugRegs() hv.DebugRegs {
	var d hv.DebugRegs
	for i, v := range []uint64{c.dr[0], c.dr[1], c.dr[2], c.dr[3], c.dr[6], c.dr[7]} {
		binary.LittleEndian.PutUint64(d[8*i:], v)
	}
	return d
}

// SetDebugRegs loads DR0-3, DR6 and DR7 from struct kvm_debugregs.
func (c *CPU) SetDebugRegs(d hv.DebugRegs) {
	for i, n := range []int{0, 1, 2, 3, 6, 7} {
		c.dr[n] = binary.LittleEndian.Uint64(d[8*i:])
	}
}

// Offsets in struct kvm_vcpu_events.
const (
	evExcInjected   = 0
	evExcNr         = 1
	evExcHasErr     = 2
	evExcPending    = 3
	evExcErr        = 4
	evIntInjected   = 8
	evIntNr         = 9
	evIntSoft       = 10
	evIntShadow     = 11
	evNMIInjected   = 12
	evNMIPending    = 13
	evNMIMasked     = 14
	evSIPIVector    = 16
	evFlags         = 20
	evValidNMI      = 1 // KVM_VCPUEVENT_VALID_NMI_PENDING
	evValidShadow   = 4 // KVM_VCPUEVENT_VALID_SHADOW
	shadowIntMovSS  = 1 // KVM_X86_SHADOW_INT_MOV_SS
	shadowIntSTI    = 2 // KVM_X86_SHADOW_INT_STI
	shadowKindSTI   = 1
	shadowKindMovSS = 2
)

// GetEvents returns the pending-event state as struct kvm_vcpu_events.
// Exceptions are delivered within Step; the only one pending between
// instructions is a single-step #DB after an instruction that exited.
func (c *CPU) GetEvents() hv.VCPUEvents {
	var e hv.VCPUEvents
	switch c.shadow {
	case shadowKindSTI:
		e[evIntShadow] = shadowIntSTI
	case shadowKindMovSS:
		e[evIntShadow] = shadowIntMovSS
	}
	if f := c.pendingExc; f != nil {
		e[evExcInjected] = 1
		e[evExcNr] = uint8(f.vec)
		if f.hasErr {
			e[evExcHasErr] = 1
			binary.LittleEndian.PutUint32(e[evExcErr:], f.err)
		}
	}
	if v := c.pendingIRQ; v != nil {
		e[evIntInjected] = 1
		e[evIntNr] = uint8(*v)
	}
	if c.nmiPending {
		e[evNMIPending] = 1
	}
	if c.nmiMasked {
		e[evNMIMasked] = 1
	}
	e[evFlags] = evValidNMI | evValidShadow
	return e
}

// SetEvents loads the pending-event state from struct kvm_vcpu_events. An
// injected or pending exception is delivered before the next instruction.
func (c *CPU) SetEvents(e hv.VCPUEvents) {
	flags := uint32(e[evFlags]) | uint32(e[evFlags+1])<<8
	if flags&evValidShadow != 0 {
		switch {
		case e[evIntShadow]&shadowIntMovSS != 0:
			c.shadow = shadowKindMovSS
		case e[evIntShadow]&shadowIntSTI != 0:
			c.shadow = shadowKindSTI
		default:
			c.shadow = 0
		}
	}
	if flags&evValidNMI != 0 {
		c.nmiPending = e[evNMIPending] != 0
	}
	c.nmiMasked = e[evNMIMasked] != 0
	if e[evNMIInjected] != 0 {
		c.nmiPending = true
	}
	if e[evExcInjected] != 0 || e[evExcPending] != 0 {
		c.pendingExc = &fault{vec: int(e[evExcNr]), hasErr: e[evExcHasErr] != 0,
			err: uint32(e[evExcErr]) | uint32(e[evExcErr+1])<<8 | uint32(e[evExcErr+2])<<16 | uint32(e[evExcErr+3])<<24}
	}
	if e[evIntInjected] != 0 {
		v := int(e[evIntNr])
		c.pendingIRQ = &v
	}
	c.irqCheck = true
}
