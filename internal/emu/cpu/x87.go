package cpu

// The x87 instructions (D8-DF, and fwait). Arithmetic is in f80.go, the
// D9 F0-FF group in x87_math.go with its transcendental functions in
// x87_trans.go, the environment and state images (fnstenv, fldenv,
// fnsave, frstor) in x87_env.go.
//
// Every instruction but fninit, fnclex, fnstcw, fnstsw, fnstenv, fnsave
// and the 8087/287 leftovers feni, fdisi and fsetpm first raises #MF for
// a pending unmasked exception (this host raises it for fldcw, fldenv and
// frstor too). An unmasked exception an instruction raises only sets ES
// and B: the next waiting instruction raises the #MF. The non-control
// instructions (all but those and fldcw, fldenv, frstor) record their
// opcode and address, and those with a memory operand its address, in
// FOP, FCS:FIP and FDS:FDP once they complete.

// fwait (9B) raises #NM if CR0.MP and CR0.TS are set, then #MF for a
// pending unmasked x87 exception.
func (c *CPU) fwait() {
	if c.cr0&(cr0MP|cr0TS) == cr0MP|cr0TS {
		panic(fault{vec: vecNM})
	}
	c.x87Pending()
}

// execX87 executes an x87 instruction (D8-DF).
func (c *CPU) execX87() {
	c.x87Avail()
	in := c.cur
	grp := int(in.op & 7)
	if in.mod == 3 {
		if c.x87Reg(grp, in.modrm) {
			c.x87Pointers(false)
		}
		return
	}
	if c.x87Mem(grp, int(in.reg&7)) {
		c.x87Pointers(true)
	}
}

// x87Pointers records the current instruction as the last non-control
// one: FOP, FCS:FIP and, for a memory operand, FDS:FDP.
func (c *CPU) x87Pointers(mem bool) {
	f := &c.fpu
	f.fop = uint16(c.cur.op&7)<<8 | uint16(c.cur.modrm)
	f.fip, f.fcs = c.startRIP, c.seg[segCS].Selector
	if mem {
		f.fdp, f.fds = c.ea(), c.seg[c.cur.seg].Selector
	}
}

// The register stack.

func (c *CPU) phys(i int) int     { return (c.fpu.top() + i) & 7 }
func (c *CPU) st(i int) f80       { return c.fpu.st[c.phys(i)] }
func (c *CPU) stEmpty(i int) bool { return c.fpu.ftw&(1<<c.phys(i)) == 0 }

// setST writes ST(i) and tags it valid.
func (c *CPU) setST(i int, v f80) {
	p := c.phys(i)
	c.fpu.st[p] = v
	c.fpu.ftw |= 1 << p
}

func (c *CPU) setTop(t int) { c.fpu.fsw = c.fpu.fsw&^fswTop | uint16(t&7)<<11 }

// fpPush pushes v.
func (c *CPU) fpPush(v f80) {
	c.setTop(c.fpu.top() - 1)
	c.setST(0, v)
}

// fpPop tags ST(0) empty and pops it.
func (c *CPU) fpPop() {
	c.fpu.ftw &^= 1 << c.phys(0)
	c.setTop(c.fpu.top() + 1)
}

// setCC sets the condition codes in mask to those of v.
func (c *CPU) setCC(mask, v uint16) { c.fpu.fsw = c.fpu.fsw&^mask | v&mask }

// setC1 sets C1 (rounded up, or stack overflow).
func (c *CPU) setC1(up bool) {
	c.fpu.fsw &^= fswC1
	if up {
		c.fpu.fsw |= fswC1
	}
}

func (c *CPU) fpOp() fpOp { return fpOp{fcw: c.fpu.fcw} }

// x87Report records o's exceptions in FSW, setting ES and B if one is
// unmasked. It reports whether the operation is cancelled: an unmasked
// invalid-operation, denormal or zero-divide exception leaves the
// destination (and the stack) as they were.
func (c *CPU) x87Report(o *fpOp) bool {
	exc := o.flags()
	cancel := exc&(fswIE|fswDE|fswZE)&^c.fpu.fcw != 0
	if cancel {
		exc &= fswIE | fswDE | fswZE | fswSF
	}
	c.fpu.fsw |= exc
	if exc&fswExc&^c.fpu.fcw != 0 {
		c.fpu.fsw |= fswES | fswB
	}
	return cancel
}

// fpDone reports the exceptions of an operation that delivers a result
// (see x87Report); a cancelled one also clears C1.
func (c *CPU) fpDone(o *fpOp) bool {
	if c.x87Report(o) {
		c.setC1(false)
		return true
	}
	return false
}

// stackFault raises a stack overflow or underflow (IE with SF; C1 says
// which). It reports whether the masked response (the indefinite as the
// result) follows; if not the instruction does nothing more.
func (c *CPU) stackFault(overflow bool) bool {
	o := fpOp{fcw: c.fpu.fcw, exc: fswIE | fswSF}
	masked := !c.x87Report(&o)
	c.setC1(overflow)
	return masked
}

// storeUnderflow handles a store from an empty ST(0): with IE unmasked
// it raises the underflow and reports false (nothing is stored); with IE
// masked it reports true, and the caller stores the indefinite and then
// raises the underflow (after the store, which may fault).
func (c *CPU) storeUnderflow() bool {
	if c.fpu.fcw&fswIE != 0 {
		return true
	}
	c.stackFault(false)
	return false
}

// pushCheck checks that a push has room (ST(7) empty); on overflow it
// pushes the indefinite if IE is masked. It reports whether the push may
// go ahead.
func (c *CPU) pushCheck() bool {
	if c.stEmpty(7) {
		return true
	}
	if c.stackFault(true) {
		c.fpPush(f80Indefinite)
	}
	return false
}

// fpLoad pushes a value converted from memory: an SNaN raises IE (and
// becomes a QNaN), a denormal source DE (which, unmasked, does not stop
// the load).
func (c *CPU) fpLoad(v f80, denormal bool) {
	if !c.pushCheck() {
		return
	}
	o := c.fpOp()
	if v.class() == clsSNaN {
		o.exc |= fswIE
		v = v.quiet()
	}
	if denormal {
		o.exc |= fswDE
	}
	if c.fpDone(&o) && o.exc&fswIE != 0 {
		return
	}
	c.fpPush(v)
	c.setC1(false)
}

// Arithmetic operations by ModRM.reg digit of D8 (and DA, DC, DE).
const (
	opAdd  = 0
	opMul  = 1
	opCom  = 2
	opComp = 3
	opSub  = 4
	opSubR = 5
	opDiv  = 6
	opDivR = 7
)

// arith computes x op y.
func (o *fpOp) arith(op int, x, y f80) f80 {
	switch op {
	case opAdd:
		return o.add(x, y, false)
	case opMul:
		return o.mul(x, y)
	case opSub:
		return o.add(x, y, true)
	case opSubR:
		return o.add(y, x, true)
	case opDiv:
		return o.div(x, y)
	}
	return o.div(y, x)
}

// fpArith sets ST(dst) to x op y (pop: then pops); a denormal memory
// source raises DE.
func (c *CPU) fpArith(op, dst int, x, y f80, denormal, pop bool) {
	o := c.fpOp()
	o.denormalSrc = denormal
	r := o.arith(op, x, y)
	if c.fpDone(&o) {
		return
	}
	c.setST(dst, r)
	c.setC1(o.up)
	if pop {
		c.fpPop()
	}
}

// fpArithReg is ST(dst) = ST(dst) op ST(src).
func (c *CPU) fpArithReg(op, dst, src int, pop bool) {
	if c.stEmpty(dst) || c.stEmpty(src) {
		if c.stackFault(false) {
			c.setST(dst, f80Indefinite)
			if pop {
				c.fpPop()
			}
		}
		return
	}
	c.fpArith(op, dst, c.st(dst), c.st(src), false, pop)
}

// fpArithMem is ST(0) = ST(0) op v (v from memory), or the comparisons
// fcom and fcomp with v.
func (c *CPU) fpArithMem(op int, v f80, denormal bool) {
	switch op {
	case opCom, opComp:
		c.fpCompare(v, c.stEmpty(0), denormal, false, op-opCom)
	default:
		if c.stEmpty(0) {
			if c.stackFault(false) {
				c.setST(0, f80Indefinite)
			}
			return
		}
		c.fpArith(op, 0, c.st(0), v, denormal, false)
	}
}

// fpCompare compares ST(0) with v (fcom, fucom with quiet, ficom, ftst),
// setting C3 C2 C0 (clearing C1) even when an unmasked exception cancels
// the pops; it pops pops times. empty says that ST(0) or the register
// operand is empty. A denormal memory source raises DE.
func (c *CPU) fpCompare(v f80, empty, denormal, quiet bool, pops int) {
	cc := uint16(fswC3 | fswC2 | fswC0)
	var cancel bool
	if empty {
		cancel = !c.stackFault(false)
	} else {
		o := c.fpOp()
		o.denormalSrc = denormal
		r := o.compare(c.st(0), v, quiet)
		cancel = c.x87Report(&o)
		cc = [...]uint16{fswC0, fswC3, 0, fswC3 | fswC2 | fswC0}[r]
	}
	c.setCC(fswCC, cc)
	if !cancel {
		for range pops {
			c.fpPop()
		}
	}
}

// fpCompareFlags is fcomi, fucomi (quiet) and their popping forms: ST(0)
// compared with ST(i) into ZF, PF and CF, with OF, SF and AF cleared,
// even when an unmasked exception cancels the pop. C1 is left alone but
// for a stack underflow.
func (c *CPU) fpCompareFlags(i int, quiet, pop bool) {
	zpc := uint64(flagZF | flagPF | flagCF)
	var cancel bool
	if c.stEmpty(0) || c.stEmpty(i) {
		cancel = !c.stackFault(false)
	} else {
		o := c.fpOp()
		r := o.compare(c.st(0), c.st(i), quiet)
		cancel = c.x87Report(&o)
		zpc = [...]uint64{flagCF, flagZF, 0, flagZF | flagPF | flagCF}[r]
	}
	c.setFlags(c.getFlags()&^(flagZF|flagPF|flagCF|flagOF|flagSF|flagAF) | zpc)
	if pop && !cancel {
		c.fpPop()
	}
}

// Conversions of fst, fstp, fist and fistp to memory.
const (
	convSingle = iota
	convDouble
	convInt16
	convInt32
	convInt64
)

// convert converts x for a store (kind).
func (o *fpOp) convert(kind int, x f80) uint64 {
	switch kind {
	case convSingle:
		return uint64(o.toSingle(x))
	case convDouble:
		return o.toDouble(x)
	case convInt16:
		return uint64(o.toInt(x, 16))
	case convInt32:
		return uint64(o.toInt(x, 32))
	}
	return uint64(o.toInt(x, 64))
}

// fpStore is fst, fstp, fist and fistp: ST(0) converted (kind, raising
// what the conversion does) and written to the size-byte operand at
// seg:off; an empty ST(0) writes indef.
func (c *CPU) fpStore(pop bool, kind int, indef uint64, seg int, off uint64, size int) {
	if c.stEmpty(0) {
		if !c.storeUnderflow() {
			return
		}
		c.writeMem(seg, off, size, indef)
		c.stackFault(false)
		if pop {
			c.fpPop()
		}
		return
	}
	o := c.fpOp()
	v := o.convert(kind, c.st(0))
	if o.unmaskedExc()&(fswIE|fswDE|fswZE|fswOE|fswUE) != 0 {
		// nothing is stored: the exception handler sees the operand
		c.x87Report(&o)
		c.setC1(false)
		return
	}
	c.writeMem(seg, off, size, v)
	c.x87Report(&o)
	c.setC1(o.up)
	if pop {
		c.fpPop()
	}
}

// x87Mem executes the memory forms (ModRM.mod != 3) of opcode D8+grp; it
// reports whether the instruction is a non-control one.
func (c *CPU) x87Mem(grp, digit int) bool {
	seg, off := int(c.cur.seg), c.ea()
	rd := func(n int) uint64 { return c.readMem(seg, off, n) }
	if grp&1 == 0 {
		// D8, DA, DC, DE: arithmetic and comparisons with m32fp, m32int,
		// m64fp, m16int
		c.x87Pending()
		var v f80
		var denormal bool
		switch grp {
		case 0:
			v, denormal = f80FromSingle(uint32(rd(4)))
		case 2:
			v = f80FromInt(int64(int32(rd(4))))
		case 4:
			v, denormal = f80FromDouble(rd(8))
		default:
			v = f80FromInt(int64(int16(rd(2))))
		}
		c.fpArithMem(digit, v, denormal)
		return true
	}
	// the key: the opcode's low three bits and ModRM.reg, as two octal
	// digits (0o15 is D9 /5)
	switch grp<<3 | digit {
	case 0o10: // fld m32
		c.x87Pending()
		v, d := f80FromSingle(uint32(rd(4)))
		c.fpLoad(v, d)
	case 0o50: // fld m64
		c.x87Pending()
		v, d := f80FromDouble(rd(8))
		c.fpLoad(v, d)
	case 0o35: // fld m80
		c.x87Pending()
		v := c.readF80(seg, off)
		if c.pushCheck() {
			c.fpPush(v)
			c.setC1(false)
		}
	case 0o30: // fild m32
		c.x87Pending()
		c.fpLoad(f80FromInt(int64(int32(rd(4)))), false)
	case 0o70: // fild m16
		c.x87Pending()
		c.fpLoad(f80FromInt(int64(int16(rd(2)))), false)
	case 0o75: // fild m64
		c.x87Pending()
		c.fpLoad(f80FromInt(int64(rd(8))), false)
	case 0o74: // fbld m80
		c.x87Pending()
		lin := c.blockLin(seg, off, 10, 1, false)
		var b [10]byte
		lo, hi := c.readLin(lin, 8, c.user()), c.readLin(lin+8, 2, c.user())
		for i := range 8 {
			b[i] = byte(lo >> (8 * i))
		}
		b[8], b[9] = byte(hi), byte(hi>>8)
		c.fpLoad(f80FromBCD(b), false)

	case 0o12, 0o13: // fst, fstp m32
		c.x87Pending()
		c.fpStore(digit == 3, convSingle, 0xffc00000, seg, off, 4)
	case 0o52, 0o53: // fst, fstp m64
		c.x87Pending()
		c.fpStore(digit == 3, convDouble, 0xfff8000000000000, seg, off, 8)
	case 0o37: // fstp m80
		c.x87Pending()
		if !c.stEmpty(0) {
			c.writeF80(seg, off, c.st(0))
			c.setC1(false)
		} else if c.storeUnderflow() {
			c.writeF80(seg, off, f80Indefinite)
			c.stackFault(false)
		} else {
			return true
		}
		c.fpPop()
	case 0o32, 0o33: // fist, fistp m32
		c.x87Pending()
		c.fpStore(digit == 3, convInt32, 0x80000000, seg, off, 4)
	case 0o72, 0o73: // fist, fistp m16
		c.x87Pending()
		c.fpStore(digit == 3, convInt16, 0x8000, seg, off, 2)
	case 0o77: // fistp m64
		c.x87Pending()
		c.fpStore(true, convInt64, 1<<63, seg, off, 8)
	case 0o76: // fbstp m80
		c.x87Pending()
		c.fbstp(seg, off)

	case 0o14: // fldenv
		c.x87Pending()
		c.fldenv(seg, off)
		return false
	case 0o15: // fldcw
		c.x87Pending()
		c.fpu.setFCW(uint16(rd(2)))
		return false
	case 0o16: // fnstenv
		c.fnstenv(seg, off)
		return false
	case 0o17: // fnstcw
		c.writeMem(seg, off, 2, uint64(c.fpu.fcw))
		return false
	case 0o54: // frstor
		c.x87Pending()
		c.frstor(seg, off)
		return false
	case 0o56: // fnsave
		c.fnsave(seg, off)
		return false
	case 0o57: // fnstsw m16
		c.writeMem(seg, off, 2, uint64(c.fpu.fsw))
		return false
	default:
		// D9 /1; fisttp (DB /1, DD /1, DF /1: SSE3, not advertised); DB /4,
		// DB /6, DD /5
		panic(ud())
	}
	return true
}

// fninit puts the control, status, tag and pointer registers in their
// initial state; the data registers keep their contents.
func (f *fpuState) fninit() {
	f.fcw, f.fsw, f.ftw, f.fop, f.fip, f.fdp, f.fcs, f.fds = fcwInit, 0, 0, 0, 0, 0, 0, 0
}

// syncES sets ES and B exactly when an exception flag is set whose mask
// is clear: this host keeps them as that summary, whatever FLDENV, FRSTOR
// or FXRSTOR loaded, and clears them when the flag is masked again.
func (f *fpuState) syncES() {
	f.fsw &^= fswES | fswB
	if f.fsw&fswExc&^f.fcw != 0 {
		f.fsw |= fswES | fswB
	}
}

// setFCW loads the control word: bit 6 reads as one, bits 7 and 13-15 as
// zero.
func (f *fpuState) setFCW(v uint16) {
	f.fcw = v&0x1f3f | 0x40
	f.syncES()
}

// readF80 reads a 10-byte operand.
func (c *CPU) readF80(seg int, off uint64) f80 {
	lin := c.blockLin(seg, off, 10, 1, false)
	return f80{mant: c.readLin(lin, 8, c.user()), se: uint16(c.readLin(lin+8, 2, c.user()))}
}

// writeF80 writes a 10-byte operand (nothing if part of it faults).
func (c *CPU) writeF80(seg int, off uint64, v f80) {
	lin := c.blockLin(seg, off, 10, 1, true)
	c.writeLin(lin, 8, v.mant, c.user())
	c.writeLin(lin+8, 2, uint64(v.se), c.user())
}

// fbstp stores ST(0) as packed BCD and pops.
func (c *CPU) fbstp(seg int, off uint64) {
	var b [10]byte
	o := c.fpOp()
	empty := c.stEmpty(0)
	switch {
	case empty && !c.storeUnderflow():
		return
	case empty:
		b = [10]byte{7: 0xc0, 8: 0xff, 9: 0xff}
	default:
		b = o.toBCD(c.st(0))
		if o.unmaskedExc()&fswIE != 0 {
			c.fpDone(&o) // nothing is stored
			return
		}
	}
	var lo uint64
	for i := range 8 {
		lo |= uint64(b[i]) << (8 * i)
	}
	lin := c.blockLin(seg, off, 10, 1, true)
	c.writeLin(lin, 8, lo, c.user())
	c.writeLin(lin+8, 2, uint64(b[8])|uint64(b[9])<<8, c.user())
	if empty {
		c.stackFault(false)
	} else {
		c.x87Report(&o)
		c.setC1(o.up)
	}
	c.fpPop()
}

// x87Reg executes the register forms (ModRM.mod == 3) of opcode D8+grp;
// it reports whether the instruction is a non-control one.
func (c *CPU) x87Reg(grp int, modrm uint8) bool {
	i := int(modrm & 7)
	digit := int(modrm >> 3 & 7)
	switch grp {
	case 0: // D8: ST(0) = ST(0) op ST(i)
		c.x87Pending()
		switch digit {
		case opCom, opComp:
			c.fpCompare(c.st(i), c.stEmpty(0) || c.stEmpty(i), false, false, digit-opCom)
		default:
			c.fpArithReg(digit, 0, i, false)
		}
	case 4, 6: // DC, DE: ST(i) = ST(i) op ST(0), reversed sub and div
		if grp == 6 && digit == opComp && i != 1 {
			panic(ud())
		}
		c.x87Pending()
		switch digit {
		case opCom, opComp:
			// DC D0+i and D8+i: aliases of fcom and fcomp; DE D0+i: of
			// fcomp; DE D9: fcompp
			pops := digit - opCom
			if grp == 6 {
				pops++
			}
			c.fpCompare(c.st(i), c.stEmpty(0) || c.stEmpty(i), false, false, pops)
		case opSub, opSubR, opDiv, opDivR:
			c.fpArithReg(digit^1, i, 0, grp == 6)
		default:
			c.fpArithReg(digit, i, 0, grp == 6)
		}
	case 1:
		return c.x87RegD9(i, digit)
	case 2: // DA
		switch {
		case digit < 4: // fcmovb, fcmove, fcmovbe, fcmovu
			c.x87Pending()
			c.fcmov(i, [4]uint8{2, 4, 6, 0xa}[digit])
		case modrm == 0xe9: // fucompp
			c.x87Pending()
			c.fpCompare(c.st(1), c.stEmpty(0) || c.stEmpty(1), false, true, 2)
		default:
			panic(ud())
		}
	case 3: // DB
		switch {
		case digit < 4: // fcmovnb, fcmovne, fcmovnbe, fcmovnu
			c.x87Pending()
			c.fcmov(i, [4]uint8{3, 5, 7, 0xb}[digit])
		case modrm == 0xe0, modrm == 0xe1, modrm == 0xe4: // feni, fdisi, fsetpm: no-ops since the 387
			return false
		case modrm == 0xe2: // fnclex
			c.fpu.fsw &^= fswExc | fswSF | fswES | fswB
			return false
		case modrm == 0xe3: // fninit
			c.fpu.fninit()
			return false
		case digit == 5: // fucomi
			c.x87Pending()
			c.fpCompareFlags(i, true, false)
		case digit == 6: // fcomi
			c.x87Pending()
			c.fpCompareFlags(i, false, false)
		default:
			panic(ud())
		}
	case 5: // DD
		switch digit {
		case 0: // ffree
			c.x87Pending()
			c.fpu.ftw &^= 1 << c.phys(i)
			c.setC1(false)
		case 1: // fxch alias
			c.x87Pending()
			c.fxch(i)
		case 2, 3: // fst, fstp ST(i)
			c.x87Pending()
			c.fstReg(i, digit == 3, false)
		case 4, 5: // fucom, fucomp
			c.x87Pending()
			c.fpCompare(c.st(i), c.stEmpty(0) || c.stEmpty(i), false, true, digit-4)
		default:
			panic(ud())
		}
	case 7: // DF
		switch {
		case digit == 0: // ffreep
			c.x87Pending()
			c.fpu.ftw &^= 1 << c.phys(i)
			c.fpPop()
			c.setC1(false)
		case digit == 1: // fxch alias
			c.x87Pending()
			c.fxch(i)
		case digit == 2, digit == 3: // fstp aliases
			c.x87Pending()
			c.fstReg(i, true, false)
		case modrm == 0xe0: // fnstsw ax
			c.regs[rAX] = c.regs[rAX]&^0xffff | uint64(c.fpu.fsw)
			return false
		case digit == 5: // fucomip
			c.x87Pending()
			c.fpCompareFlags(i, true, true)
		case digit == 6: // fcomip
			c.x87Pending()
			c.fpCompareFlags(i, false, true)
		default:
			panic(ud())
		}
	}
	return true
}

// x87RegD9 executes D9 C0-FF.
func (c *CPU) x87RegD9(i, digit int) bool {
	switch {
	case digit == 0: // fld ST(i)
		c.x87Pending()
		if c.stEmpty(i) {
			// the underflow is reported, not an overflow as well
			if c.stackFault(false) {
				c.fpPush(f80Indefinite)
			}
			return true
		}
		v := c.st(i)
		if c.pushCheck() {
			c.fpPush(v)
			c.setC1(false)
		}
	case digit == 1: // fxch
		c.x87Pending()
		c.fxch(i)
	case digit == 2 && i == 0: // fnop
		c.x87Pending()
	case digit == 3: // fstp alias
		c.x87Pending()
		c.fstReg(i, true, true)
	case digit == 4 && i <= 1: // fchs, fabs
		c.x87Pending()
		if c.stEmpty(0) {
			if c.stackFault(false) {
				c.setST(0, f80Indefinite)
			}
			return true
		}
		v := c.st(0)
		if i == 0 {
			v.se ^= 0x8000
		} else {
			v.se &^= 0x8000
		}
		c.setST(0, v)
		c.setC1(false)
	case digit == 4 && i == 4: // ftst
		c.x87Pending()
		c.fpCompare(f80{}, c.stEmpty(0), false, false, 0)
	case digit == 4 && i == 5: // fxam
		c.x87Pending()
		c.fxam()
	case digit == 5 && i < 7: // fld1, fldl2t, fldl2e, fldpi, fldlg2, fldln2, fldz
		c.x87Pending()
		if !c.pushCheck() {
			return true
		}
		c.fpPush(c.fpConst(i))
		c.setC1(false)
	case digit == 6 && i == 6: // fdecstp
		c.x87Pending()
		c.setTop(c.fpu.top() - 1)
		c.setC1(false)
	case digit == 6 && i == 7: // fincstp
		c.x87Pending()
		c.setTop(c.fpu.top() + 1)
		c.setC1(false)
	case digit >= 6:
		c.x87Pending()
		c.x87Math(digit<<3 | i)
	default:
		panic(ud())
	}
	return true
}

// fpConst returns the constant of D9 E8+i (fld1 ... fldz), rounded by
// the rounding control.
func (c *CPU) fpConst(i int) f80 {
	rc := c.fpu.fcw >> 10 & 3
	switch i {
	case 0:
		return f80One
	case 1:
		return loadConst(constL2T, rc)
	case 2:
		return loadConst(constL2E, rc)
	case 3:
		return loadConst(constPi, rc)
	case 4:
		return loadConst(constLG2, rc)
	case 5:
		return loadConst(constLN2, rc)
	}
	return f80{}
}

// fxch exchanges ST(0) and ST(i); empty ones become the indefinite first
// if the stack underflow is masked.
func (c *CPU) fxch(i int) {
	if c.stEmpty(0) || c.stEmpty(i) {
		if !c.stackFault(false) {
			return
		}
		if c.stEmpty(0) {
			c.setST(0, f80Indefinite)
		}
		if c.stEmpty(i) {
			c.setST(i, f80Indefinite)
		}
	}
	a, b := c.st(0), c.st(i)
	c.setST(0, b)
	c.setST(i, a)
	c.setC1(false)
}

// fstReg is fst and fstp ST(i). An empty ST(0) is a stack underflow,
// but for the undocumented aliases (silent): this host copies nothing
// then and raises nothing, fstp only pops.
func (c *CPU) fstReg(i int, pop, silent bool) {
	switch {
	case !c.stEmpty(0):
		c.setST(i, c.st(0))
	case silent:
	case c.stackFault(false):
		c.setST(i, f80Indefinite)
	default:
		return
	}
	c.setC1(false)
	if pop {
		c.fpPop()
	}
}

// fcmov copies ST(i) to ST(0) if condition cc (of jcc) holds; C1 is
// left alone.
func (c *CPU) fcmov(i int, cc uint8) {
	if c.stEmpty(0) || c.stEmpty(i) {
		if c.stackFault(false) {
			c.setST(0, f80Indefinite)
		}
		return
	}
	if c.cond(cc) {
		c.setST(0, c.st(i))
	}
}

// fxam classifies ST(0) into C3 C2 C0, with its sign in C1.
func (c *CPU) fxam() {
	v := c.st(0)
	cc := uint16(0)
	if v.neg() {
		cc = fswC1
	}
	if c.stEmpty(0) {
		cc |= fswC3 | fswC0
	} else {
		switch v.class() {
		case clsQNaN, clsSNaN:
			cc |= fswC0
		case clsNormal:
			cc |= fswC2
		case clsInf:
			cc |= fswC2 | fswC0
		case clsZero:
			cc |= fswC3
		case clsDenormal:
			cc |= fswC3 | fswC2
		}
	}
	c.setCC(fswCC, cc)
}
