package cpu

import "fmt"

// irqPollInterval is how many instructions may pass between two questions
// to Platform.PendingInterrupt while interrupts are enabled, beyond the
// checks at Run start, after Kick and when IF becomes 1.
const irqPollInterval = 256

// Run executes until an exit, a Kick, or maxInsns instructions.
func (c *CPU) Run(maxInsns int) Exit {
	c.inRun.Store(1)
	defer c.inRun.Store(0)
	c.irqCheck = true
	n := 0
	for !c.runLoop(&n, maxInsns) {
	}
	return c.finishExit()
}

// finishExit fills in RIP for exits that do not carry their own.
func (c *CPU) finishExit() Exit {
	switch c.exit.Kind {
	case ExitException, ExitInternalError, ExitShutdown:
	default:
		c.exit.RIP = c.rip
	}
	return c.exit
}

// runLoop executes instructions until an exit (it returns true) or an
// exception unwinds an instruction (it returns false once the exception is
// delivered, and Run calls it again): one deferred recover serves many
// instructions.
func (c *CPU) runLoop(n *int, maxInsns int) (done bool) {
	defer func() {
		if r := recover(); r != nil {
			c.exit = c.onPanic(r, c.savedShadow)
			*n++
			done = c.exit.Kind != ExitNone
		}
	}()
	for {
		if c.kick.Load() {
			c.kick.Store(false)
			c.irqCheck = true
			c.exit = Exit{Kind: ExitKicked}
			return true
		}
		c.syncGen()
		if c.poke.Load() {
			c.poke.Store(false)
			c.irqCheck = true
		}
		if *n >= maxInsns {
			c.exit = Exit{Kind: ExitBudget}
			return true
		}
		// A burst of instructions between the Kick and dirty-log checks.
		i := *n // a register copy; *n is exact whenever an instruction panics
		for end := min(i+burstLen, maxInsns); i < end; *n = i {
			need := c.pendingExc != nil || c.nmiPending || c.pendingIRQ != nil
			if !need && c.flags&flagIF != 0 && c.shadow == 0 {
				// Interrupts are open: poll the platform only when due.
				if c.irqCheck || c.sinceCheck >= irqPollInterval {
					need = true
				} else {
					c.sinceCheck++
				}
			}
			c.exit.Kind = ExitNone
			if need && c.events() {
				i++
				if c.exit.Kind != ExitNone {
					*n = i
					return true
				}
				continue
			}
			c.execOne()
			i++
			if c.exit.Kind != ExitNone {
				*n = i
				return true
			}
		}
	}
}

// burstLen is how many instructions run between two checks for Kick and
// for a new dirty-log generation.
const burstLen = 32

// Step executes exactly one instruction, or delivers one pending exception
// or interrupt.
func (c *CPU) Step() Exit {
	c.inRun.Store(1)
	defer c.inRun.Store(0)
	c.syncGen()
	if c.kick.Load() {
		c.kick.Store(false)
		c.irqCheck = true
	}
	c.stepOne()
	return c.finishExit()
}

// events delivers a pending exception, NMI or interrupt at an instruction
// boundary; it reports whether it did (c.exit says if delivery failed).
func (c *CPU) events() bool {
	if c.haveIn || c.haveMMIO {
		// The instruction that exited for the VMM completes first, with
		// its answer, as KVM completes it before injecting anything.
		return false
	}
	if c.pendingExc == nil && c.pendingIRQ == nil && !c.nmiPending && (c.flags&flagIF == 0 || c.shadow != 0) {
		return false
	}
	if f := c.pendingExc; f != nil {
		c.pendingExc = nil
		c.startRIP = c.rip
		c.exit = c.deliverEvent(*f, evException, c.rip)
		return true
	}
	if c.nmiPending && !c.nmiMasked && c.shadow != shadowKindMovSS {
		c.nmiPending = false
		c.nmiMasked = true
		c.startRIP = c.rip
		c.exit = c.deliverEvent(fault{vec: vecNMI}, evExternal, c.rip)
		return true
	}
	if v := c.pendingIRQ; v != nil {
		// Injected (acknowledged) before a save: delivered regardless of
		// IF, as KVM re-injects it.
		c.pendingIRQ = nil
		c.startRIP = c.rip
		c.exit = c.deliverEvent(fault{vec: *v}, evExternal, c.rip)
		return true
	}
	if c.flags&flagIF == 0 || c.shadow != 0 {
		return false
	}
	if !c.irqCheck && c.sinceCheck < irqPollInterval {
		c.sinceCheck++
		return false
	}
	c.irqCheck, c.sinceCheck = false, 0
	c.leavePlatform()
	vec, ok := c.plat.PendingInterrupt()
	c.enterPlatform()
	if !ok {
		return false
	}
	c.startRIP = c.rip
	c.exit = c.deliverEvent(fault{vec: int(vec)}, evExternal, c.rip)
	return true
}

// deliverEvent delivers an event outside an instruction.
func (c *CPU) deliverEvent(f fault, kind int, ret uint64) (ex Exit) {
	defer func() {
		if r := recover(); r != nil {
			ex = c.internalExit(r)
		}
	}()
	if c.TrapExceptions && kind == evException {
		return Exit{Kind: ExitException, Vector: f.vec, ErrorCode: f.err, RIP: c.rip}
	}
	if !c.raise(f, kind, ret) {
		return Exit{Kind: ExitShutdown, RIP: c.startRIP}
	}
	return Exit{}
}

func (c *CPU) internalExit(r any) Exit {
	reason := ""
	switch x := r.(type) {
	case internalError:
		reason = x.reason
	case exitNow:
		return c.exit
	default:
		reason = fmt.Sprintf("bug: %v", r)
	}
	insn := append([]byte(nil), c.fetch.buf[:c.fetch.n]...)
	if len(insn) == 0 {
		insn = c.insnBytes()
	}
	return Exit{Kind: ExitInternalError, RIP: c.startRIP, Insn: insn, Reason: reason}
}

// insnBytes reads the bytes of the instruction at startRIP (decoded from
// the cache, so not in fetch.buf), stopping at the first fault.
func (c *CPU) insnBytes() (b []byte) {
	defer func() { _ = recover() }()
	lin := c.startRIP
	if !c.code64() {
		lin = (c.seg[segCS].Base + c.startRIP) & 0xffffffff
	}
	for i := 0; i < int(c.cur.length) && i < 15; i++ {
		b = append(b, byte(c.readLin(lin+uint64(i), 1, false)))
	}
	return b
}

// stepOne runs one instruction boundary: events, then one instruction.
// It returns c.exit.Kind; c.exit describes the exit.
func (c *CPU) stepOne() (kind ExitKind) {
	c.exit.Kind = ExitNone
	if c.events() {
		return c.exit.Kind
	}
	defer func() {
		if r := recover(); r != nil {
			c.exit = c.onPanic(r, c.savedShadow)
			kind = c.exit.Kind
		}
	}()
	c.execOne()
	return c.exit.Kind
}

// execOne fetches, decodes and executes one instruction. Exceptions unwind
// it with panic; the caller's deferred recover delivers them.
func (c *CPU) execOne() {
	c.startRIP = c.rip
	c.savedShadow = c.shadow
	c.shadow = 0
	c.fetch.n = 0
	c.fetch.lin = c.rip
	c64 := c.code64()
	if !c64 {
		c.fetch.lin = (c.seg[segCS].Base + c.rip) & 0xffffffff
		if c.cr0&cr0PE != 0 && c.rip > uint64(c.seg[segCS].Limit) {
			panic(gp(0))
		}
	}
	c.fetch.page = ^uint64(0)
	c.decodeCached(c64)
	c.rip += uint64(c.cur.length)
	if !c64 && c.seg[segCS].DB == 0 {
		c.rip &= 0xffff
	}
	tf := c.flags&flagTF != 0
	c.mmioPos = 0
	c.exec()
	if c.mmioN != 0 {
		c.mmioDone()
	}
	if tf && c.shadow != shadowKindMovSS {
		// Single-step trap after the instruction (TF was set before it).
		// After MOV SS or POP SS it waits for the next instruction, whose
		// own trap reports both (SDM 6.8.3).
		c.dr[6] |= 1 << 14 // BS
		panic(trapDB{})
	}
}

func (c *CPU) onPanic(r any, shadow uint8) Exit {
	if _, restart := r.(exitNow); !restart {
		c.mmioDone()
	}
	switch x := r.(type) {
	case fault:
		c.rip = c.startRIP
		if c.TrapExceptions {
			return Exit{Kind: ExitException, Vector: x.vec, ErrorCode: x.err, RIP: c.startRIP}
		}
		return c.deliverEvent(x, evException, c.startRIP)
	case softInt:
		if c.TrapExceptions {
			c.rip = c.startRIP
			return Exit{Kind: ExitException, Vector: x.vec, RIP: c.startRIP}
		}
		return c.deliverEvent(fault{vec: x.vec}, evSoft, c.rip)
	case exitNow:
		c.rip = c.startRIP
		c.shadow = shadow
		return c.exit
	case trapDB:
		if c.exit.Kind != ExitNone {
			// Deliver the trap when the VMM resumes the vCPU.
			ex := c.exit
			c.pendingExc = &fault{vec: vecDB}
			return ex
		}
		if c.TrapExceptions {
			return Exit{Kind: ExitException, Vector: vecDB, RIP: c.rip}
		}
		return c.deliverEvent(fault{vec: vecDB}, evExternal, c.rip)
	default:
		c.rip = c.startRIP
		return c.internalExit(r)
	}
}

// decodeCache holds pre-decoded instructions, direct-mapped by the
// guest-physical address of their first byte and the decode mode (16-,
// 32- or 64-bit code). Only instructions lying within one RAM page are
// cached; their page is marked as holding code in Memory, so that a store
// to it (from any vCPU, or MarkDirty) bumps Memory.codeEpoch, which makes
// every vCPU flush its cache before its next instruction.
type decodeCache struct {
	epoch uint64
	ents  [dcacheSize]dcacheEntry
}

const dcacheSize = 4096

type dcacheEntry struct {
	key uint64 // gpa<<2 | mode, +1 so that 0 is empty
	in  insn
}

func (d *decodeCache) flush() {
	for i := range d.ents {
		d.ents[i].key = 0
	}
}

// decodeCached points c.cur at the decoded instruction at c.fetch.lin, from the
// decode cache when possible.
func (c *CPU) decodeCached(c64 bool) {
	user := c.cpl() == 3
	e := &c.code.e
	if !c.code.valid || c.code.vpn != c.fetch.lin>>12 || c.code.user != user {
		e = c.translate(c.fetch.lin, accExec, user)
		c.code = codePage{valid: true, user: user, vpn: c.fetch.lin >> 12, e: *e}
	}
	if e.host == nil {
		c.decode()
		c.cur = &c.in
		return
	}
	if ep := c.mem.codeEpoch.Load(); ep != c.dcache.epoch {
		c.dcache.flush()
		c.dcache.epoch = ep
	}
	mode := uint64(0)
	if c64 {
		mode = 2
	} else if c.seg[segCS].DB != 0 {
		mode = 1
	}
	gpa := e.gpa | c.fetch.lin&0xfff
	key := (gpa<<2 | mode) + 1
	// Consecutive instructions get neighbouring entries (the prefetcher
	// likes that); pages are spread by an odd multiple of their number.
	d := &c.dcache.ents[(gpa+gpa>>12*0x41)%dcacheSize]
	if d.key == key {
		c.cur = &d.in
		return
	}
	// Mark the page as code before reading its bytes, so that a store
	// landing after the read invalidates what is decoded here.
	c.mem.noteCode(c, e.s, e.pg)
	c.decode()
	c.cur = &c.in
	if c.fetch.lin&0xfff+uint64(c.in.length) <= pageSize {
		d.key = key
		d.in = c.in
		c.cur = &d.in
	}
}
