package cpu

// MMX, SSE and SSE2 instructions of the 0F map. The mandatory prefix
// selects the form: none for MMX registers or packed singles, 66 for XMM
// integers or packed doubles, F3 for scalar singles, F2 for scalar
// doubles (the last F2/F3 wins, and 66 is then ignored). Forms the
// architecture does not define, SSE3 and later included, raise #UD.
// Packed integer operations are in sse_int.go, floating point in
// sse_float.go.

// isSSEOp says whether two-byte opcode 0F b is an MMX, SSE or SSE2
// instruction (executed by execSSE).
func isSSEOp(b uint8) bool {
	return b >= 0x10 && b <= 0x17 || b >= 0x28 && b <= 0x2f || b >= 0x50 && b <= 0x7f && b != 0x77 ||
		b >= 0xc2 && b <= 0xc6 || b >= 0xd0
}

// Mandatory prefix forms.
const (
	pNone = iota
	p66
	pF3
	pF2
)

// ssePrefix returns the form the prefixes of the current instruction select.
func (c *CPU) ssePrefix() int {
	switch c.cur.rep {
	case 0xf3:
		return pF3
	case 0xf2:
		return pF2
	}
	if c.cur.pfx66 {
		return p66
	}
	return pNone
}

// emms (0F 77) empties the x87 tag word after MMX code; like the MMX
// instructions it also sets TOP to 0 (as AMD CPUs do). With a 66, F3 or
// F2 prefix it is undefined.
func (c *CPU) emms() {
	if c.ssePrefix() != pNone {
		panic(ud())
	}
	c.mmxAvail()
	c.fpu.fsw &^= 0x3800
	c.fpu.ftw = 0
}

// MMX registers.

// mmxEnter puts the x87 unit in MMX state, as every instruction that
// names an MMX register does: TOP 0, every register valid.
func (c *CPU) mmxEnter() {
	c.fpu.fsw &^= 0x3800
	c.fpu.ftw = 0xff
}

// mm reads MMX register r (REX bits ignored).
func (c *CPU) mm(r uint8) uint64 { return c.fpu.st[r&7].mant }

// setMM writes MMX register r; the exponent and sign bits of the x87
// register become all ones.
func (c *CPU) setMM(r uint8, v uint64) { c.fpu.st[r&7] = f80{mant: v, se: 0xffff} }

// mmSrc reads the mm/m64 operand.
func (c *CPU) mmSrc() uint64 {
	if c.cur.mod == 3 {
		return c.mm(c.cur.rm)
	}
	return c.readMem(int(c.cur.seg), c.ea(), 8)
}

// XMM operands.

// xmmSrc reads the xmm/m128 operand; aligned as for readM128.
func (c *CPU) xmmSrc(aligned bool) [2]uint64 {
	if c.cur.mod == 3 {
		return c.fpu.xmm[c.cur.rm]
	}
	return c.readM128(aligned)
}

// xmmSrc64 reads the xmm/m64 operand (the low quadword of a register).
func (c *CPU) xmmSrc64() uint64 {
	if c.cur.mod == 3 {
		return c.fpu.xmm[c.cur.rm][0]
	}
	return c.readMem(int(c.cur.seg), c.ea(), 8)
}

// xmmSrc32 reads the xmm/m32 operand (the low doubleword of a register).
func (c *CPU) xmmSrc32() uint64 {
	if c.cur.mod == 3 {
		return c.fpu.xmm[c.cur.rm][0] & 0xffffffff
	}
	return c.readMem(int(c.cur.seg), c.ea(), 4)
}

// storeM64 writes the m64 operand.
func (c *CPU) storeM64(v uint64) { c.writeMem(int(c.cur.seg), c.ea(), 8, v) }

// gprSize is the general register operand size of movd/movq, cvtsi2ss
// and the like: 8 with REX.W, else 4 (a 66 prefix is mandatory there, not
// an operand size).
func (c *CPU) gprSize() uint8 {
	if c.cur.rex&8 != 0 {
		return 8
	}
	return 4
}

// needReg raises #UD for a memory operand (register-only forms).
func (c *CPU) needReg() {
	if c.cur.mod != 3 {
		panic(ud())
	}
}

// needMem raises #UD for a register operand (memory-only forms).
func (c *CPU) needMem() {
	if c.cur.mod == 3 {
		panic(ud())
	}
}

// simdFlags merges the exception flags fl of an instruction's elements
// into MXCSR. If one is unmasked it raises the SIMD exception (the
// destination is left alone): with an unmasked exception detected before
// the computation (invalid, denormal, divide by zero) only those flags
// are set.
func (c *CPU) simdFlags(fl uint32) {
	unmasked := fl &^ (c.fpu.mxcsr >> 7 & 0x3f)
	if unmasked&mxPre != 0 {
		c.fpu.mxcsr |= fl & mxPre
		c.simdFault()
	}
	c.fpu.mxcsr |= fl
	if unmasked != 0 {
		c.simdFault()
	}
}

// execSSE executes an MMX, SSE or SSE2 instruction (0F map).
func (c *CPU) execSSE() {
	in := c.cur
	if in.lock {
		panic(ud())
	}
	b := uint8(in.op)
	p := c.ssePrefix()
	if packedIntOp(b) {
		c.packedInt(b, p)
		return
	}
	switch b {
	case 0x10, 0x11, 0x28, 0x29, 0x6f, 0x7f:
		c.moveVector(b, p)
	case 0x12, 0x13, 0x16, 0x17:
		c.moveHalf(b, p)
	case 0x14, 0x15: // unpcklps/pd, unpckhps/pd
		c.ssePacked(p)
		s := c.xmmSrc(true)
		d := &c.fpu.xmm[in.reg]
		hi := int(b & 1)
		if p == p66 {
			*d = [2]uint64{d[hi], s[hi]}
		} else {
			*d = [2]uint64{interleave(32, d[hi], s[hi]), interleave(32, d[hi]>>32, s[hi]>>32)}
		}
	case 0x2b, 0xe7, 0xc3:
		c.moveNT(b, p)
	case 0x2a:
		c.cvtToFloat(p)
	case 0x2c, 0x2d:
		c.cvtToInt(p, b == 0x2c)
	case 0x2e, 0x2f:
		c.comis(p, b == 0x2f)
	case 0x50:
		c.ssePacked(p)
		c.needReg()
		s := c.fpu.xmm[in.rm]
		var m uint64
		if p == p66 {
			m = s[0]>>63 | s[1]>>63<<1
		} else {
			m = s[0]>>31&1 | s[0]>>63<<1 | s[1]>>31&1<<2 | s[1]>>63<<3
		}
		c.setReg(in.reg, 4, m)
	case 0x51, 0x58, 0x59, 0x5c, 0x5d, 0x5e, 0x5f, 0xc2:
		c.sseArith(b, p)
	case 0x52, 0x53:
		c.approx(p, b == 0x52)
	case 0x54, 0x55, 0x56, 0x57: // and, andn, or, xor (ps and pd)
		c.ssePacked(p)
		s := c.xmmSrc(true)
		d := &c.fpu.xmm[in.reg]
		op := [4]uint8{0xdb, 0xdf, 0xeb, 0xef}[b-0x54]
		*d = [2]uint64{laneOp(op, d[0], s[0]), laneOp(op, d[1], s[1])}
	case 0x5a, 0x5b, 0xe6:
		c.cvtFloat(b, p)
	case 0x6c, 0x6d: // punpcklqdq, punpckhqdq
		if p != p66 {
			panic(ud())
		}
		c.packedInt(b, p)
	case 0x6e, 0x7e:
		c.movd(b, p)
	case 0x70:
		c.pshuf(p)
	case 0x71, 0x72, 0x73:
		c.shiftImm(b, p)
	case 0xc4, 0xc5:
		c.pinsrPextr(b == 0xc4, p)
	case 0xc6: // shufps, shufpd
		c.ssePacked(p)
		s := c.xmmSrc(true)
		d := &c.fpu.xmm[in.reg]
		imm := uint8(in.imm)
		if p == p66 {
			*d = [2]uint64{d[imm&1], s[imm>>1&1]}
		} else {
			*d = [2]uint64{lane32(*d, int(imm&3)) | lane32(*d, int(imm>>2&3))<<32,
				lane32(s, int(imm>>4&3)) | lane32(s, int(imm>>6&3))<<32}
		}
	case 0xd6:
		c.movqD6(p)
	case 0xd7:
		c.pmovmskb(p)
	case 0xf7:
		c.maskmov(p)
	default:
		// 0F 78-7D, D0, F0 and FF: SSE3, SSE4a, VMX and ud0.
		panic(ud())
	}
}

// ssePacked makes the checks of an SSE instruction with only the
// packed single (no prefix) and packed double (66) forms.
func (c *CPU) ssePacked(p int) {
	if p != pNone && p != p66 {
		panic(ud())
	}
	c.sseAvail()
}

// packedInt executes a packed integer operation: MMX without prefix, XMM
// with 66.
func (c *CPU) packedInt(b uint8, p int) {
	in := c.cur
	switch p {
	case pNone:
		c.mmxAvail()
		r := mmxIntOp(b, c.mm(in.reg), c.mmSrc())
		c.setMM(in.reg, r)
		c.mmxEnter()
	case p66:
		c.sseAvail()
		s := c.xmmSrc(true)
		d := &c.fpu.xmm[in.reg]
		*d = xmmIntOp(b, *d, s)
	default:
		panic(ud())
	}
}

// moveVector executes the whole-register moves: movups/movupd/movss/
// movsd (0F 10, 11), movaps/movapd (28, 29), movq mm/movdqa/movdqu (6F, 7F).
func (c *CPU) moveVector(b uint8, p int) {
	in := c.cur
	store := b == 0x11 || b == 0x29 || b == 0x7f
	if b == 0x6f || b == 0x7f {
		switch p {
		case pNone: // movq mm, mm/m64 and back
			c.mmxAvail()
			switch {
			case !store:
				c.setMM(in.reg, c.mmSrc())
			case in.mod == 3:
				c.setMM(in.rm, c.mm(in.reg))
			default:
				c.storeM64(c.mm(in.reg))
			}
			c.mmxEnter()
			return
		case pF2:
			panic(ud())
		}
	} else if (b == 0x28 || b == 0x29) && p != pNone && p != p66 {
		panic(ud())
	}
	c.sseAvail()
	aligned := b == 0x28 || b == 0x29 || b == 0x6f && p == p66 || b == 0x7f && p == p66
	if (b == 0x10 || b == 0x11) && (p == pF3 || p == pF2) {
		c.moveScalar(store, p == pF2)
		return
	}
	switch {
	case !store:
		c.fpu.xmm[in.reg] = c.xmmSrc(aligned)
	case in.mod == 3:
		c.fpu.xmm[in.rm] = c.fpu.xmm[in.reg]
	default:
		c.writeM128(c.fpu.xmm[in.reg], aligned)
	}
}

// moveScalar executes movss (movsd if double): register to register
// moves the low element; a load zeroes the rest of the register.
func (c *CPU) moveScalar(store, double bool) {
	in := c.cur
	mask, size := uint64(0xffffffff), 4
	if double {
		mask, size = ^uint64(0), 8
	}
	switch {
	case in.mod == 3 && store:
		d := &c.fpu.xmm[in.rm]
		d[0] = d[0]&^mask | c.fpu.xmm[in.reg][0]&mask
	case in.mod == 3:
		d := &c.fpu.xmm[in.reg]
		d[0] = d[0]&^mask | c.fpu.xmm[in.rm][0]&mask
	case store:
		c.writeMem(int(in.seg), c.ea(), size, c.fpu.xmm[in.reg][0]&mask)
	default:
		c.fpu.xmm[in.reg] = [2]uint64{c.readMem(int(in.seg), c.ea(), size)}
	}
}

// moveHalf executes movlps/movlpd/movhlps (0F 12, 13) and movhps/movhpd/
// movlhps (16, 17).
func (c *CPU) moveHalf(b uint8, p int) {
	in := c.cur
	c.ssePacked(p)
	hi := b >= 0x16
	half := 0
	if hi {
		half = 1
	}
	switch {
	case b == 0x13 || b == 0x17:
		c.needMem()
		c.storeM64(c.fpu.xmm[in.reg][half])
	case in.mod == 3:
		if p == p66 {
			panic(ud())
		}
		// movhlps: low <- source high; movlhps: high <- source low
		c.fpu.xmm[in.reg][half] = c.fpu.xmm[in.rm][1-half]
	default:
		c.fpu.xmm[in.reg][half] = c.readMem(int(in.seg), c.ea(), 8)
	}
}

// moveNT executes the non-temporal stores movntps/movntpd (0F 2B),
// movntq/movntdq (E7) and movnti (C3).
func (c *CPU) moveNT(b uint8, p int) {
	in := c.cur
	c.needMem()
	switch {
	case b == 0xc3 && p == pNone:
		sz := c.gprSize()
		c.writeMem(int(in.seg), c.ea(), int(sz), c.getReg(in.reg, sz))
	case b == 0xe7 && p == pNone:
		c.mmxAvail()
		c.storeM64(c.mm(in.reg))
		c.mmxEnter()
	case b == 0x2b && (p == pNone || p == p66), b == 0xe7 && p == p66:
		c.sseAvail()
		c.writeM128(c.fpu.xmm[in.reg], true)
	default:
		panic(ud())
	}
}

// movd executes movd/movq between general registers or memory and MMX or
// XMM registers (0F 6E, 7E), and movq xmm, xmm/m64 (F3 0F 7E).
func (c *CPU) movd(b uint8, p int) {
	in := c.cur
	sz := c.gprSize()
	switch p {
	case pNone:
		c.mmxAvail()
		if b == 0x6e {
			c.setMM(in.reg, c.readRM(sz))
		} else {
			c.writeRM(sz, c.mm(in.reg))
		}
		c.mmxEnter()
	case p66:
		c.sseAvail()
		if b == 0x6e {
			c.fpu.xmm[in.reg] = [2]uint64{c.readRM(sz)}
		} else {
			c.writeRM(sz, c.fpu.xmm[in.reg][0])
		}
	case pF3:
		if b != 0x7e {
			panic(ud())
		}
		c.sseAvail()
		c.fpu.xmm[in.reg] = [2]uint64{c.xmmSrc64()}
	default:
		panic(ud())
	}
}

// movqD6 executes 66 0F D6 (movq xmm/m64, xmm), F3 0F D6 (movq2dq) and
// F2 0F D6 (movdq2q).
func (c *CPU) movqD6(p int) {
	in := c.cur
	switch p {
	case p66:
		c.sseAvail()
		v := c.fpu.xmm[in.reg][0]
		if in.mod == 3 {
			c.fpu.xmm[in.rm] = [2]uint64{v}
		} else {
			c.storeM64(v)
		}
	case pF3:
		c.needReg()
		c.sseMMX()
		c.fpu.xmm[in.reg] = [2]uint64{c.mm(in.rm)}
		c.mmxEnter()
	case pF2:
		c.needReg()
		c.sseMMX()
		c.setMM(in.reg, c.fpu.xmm[in.rm][0])
		c.mmxEnter()
	default:
		panic(ud())
	}
}

// sseMMX makes the checks of an SSE instruction that uses an MMX register:
// those of SSE, then a pending x87 exception.
func (c *CPU) sseMMX() {
	c.sseAvail()
	c.x87Pending()
}

// pshuf executes pshufw (no prefix), pshufd (66), pshufhw (F3) and
// pshuflw (F2).
func (c *CPU) pshuf(p int) {
	in := c.cur
	imm := uint8(in.imm)
	if p == pNone {
		c.mmxAvail()
		c.setMM(in.reg, shuffleWords(c.mmSrc(), imm))
		c.mmxEnter()
		return
	}
	c.sseAvail()
	s := c.xmmSrc(true)
	switch p {
	case p66:
		s = shuffleDwords(s, imm)
	case pF3:
		s[1] = shuffleWords(s[1], imm)
	default:
		s[0] = shuffleWords(s[0], imm)
	}
	c.fpu.xmm[in.reg] = s
}

// shiftImm executes the shift groups 0F 71 (words), 72 (doublewords) and
// 73 (quadwords, and 66 /3 psrldq, /7 pslldq) with an imm8 count.
func (c *CPU) shiftImm(b uint8, p int) {
	in := c.cur
	c.needReg()
	digit := in.reg & 7
	count := in.imm & 0xff
	w := uint(16) << (b - 0x71)
	var kind int
	switch {
	case digit == 2:
		kind = shiftRL
	case digit == 4 && b != 0x73:
		kind = shiftRA
	case digit == 6:
		kind = shiftLL
	case (digit == 3 || digit == 7) && b == 0x73 && p == p66:
		c.sseAvail()
		c.fpu.xmm[in.rm] = shiftBytes(c.fpu.xmm[in.rm], count, digit == 7)
		return
	default:
		panic(ud())
	}
	switch p {
	case pNone:
		c.mmxAvail()
		c.setMM(in.rm, shiftLanes(kind, w, c.mm(in.rm), count))
		c.mmxEnter()
	case p66:
		c.sseAvail()
		d := &c.fpu.xmm[in.rm]
		*d = [2]uint64{shiftLanes(kind, w, d[0], count), shiftLanes(kind, w, d[1], count)}
	default:
		panic(ud())
	}
}

// pinsrPextr executes pinsrw (0F C4) and pextrw (C5; register source
// only), MMX without prefix, XMM with 66.
func (c *CPU) pinsrPextr(insert bool, p int) {
	in := c.cur
	if p != pNone && p != p66 {
		panic(ud())
	}
	if !insert {
		c.needReg()
	}
	if p == pNone {
		c.mmxAvail()
	} else {
		c.sseAvail()
	}
	sel := uint(in.imm) & 3
	if p == p66 {
		sel = uint(in.imm) & 7
	}
	sh := 16 * (sel & 3)
	if insert {
		v := c.readRM(2) & 0xffff
		if p == pNone {
			c.setMM(in.reg, c.mm(in.reg)&^(0xffff<<sh)|v<<sh)
			c.mmxEnter()
		} else {
			d := &c.fpu.xmm[in.reg][sel>>2]
			*d = *d&^(0xffff<<sh) | v<<sh
		}
		return
	}
	var v uint64
	if p == pNone {
		v = c.mm(in.rm) >> sh & 0xffff
		c.mmxEnter()
	} else {
		v = c.fpu.xmm[in.rm][sel>>2] >> sh & 0xffff
	}
	c.setReg(in.reg, 4, v)
}

// pmovmskb gathers the top bit of each byte of an MMX (no prefix) or XMM
// (66) register into a general register.
func (c *CPU) pmovmskb(p int) {
	in := c.cur
	c.needReg()
	var m uint64
	switch p {
	case pNone:
		c.mmxAvail()
		m = signBits(c.mm(in.rm))
		c.mmxEnter()
	case p66:
		c.sseAvail()
		x := &c.fpu.xmm[in.rm]
		m = signBits(x[0]) | signBits(x[1])<<8
	default:
		panic(ud())
	}
	c.setReg(in.reg, 4, m)
}

// maskmov executes maskmovq (no prefix) and maskmovdqu (66): the bytes of
// the first register whose mask byte (in the second) has its top bit set
// are stored at DS:rDI (the segment may be overridden).
func (c *CPU) maskmov(p int) {
	in := c.cur
	c.needReg()
	var data, mask [2]uint64
	n := 16
	switch p {
	case pNone:
		c.mmxAvail()
		data[0], mask[0], n = c.mm(in.reg), c.mm(in.rm), 8
	case p66:
		c.sseAvail()
		data, mask = c.fpu.xmm[in.reg], c.fpu.xmm[in.rm]
	default:
		panic(ud())
	}
	if signBits(mask[0])|signBits(mask[1]) != 0 {
		lin := c.blockLin(int(in.seg), c.regs[rDI]&c.aszMask(), n, 1, true)
		user := c.user()
		for i := 0; i < n; i++ {
			if mask[i>>3]>>(8*(i&7)+7)&1 != 0 {
				c.writeLin(lin+uint64(i), 1, data[i>>3]>>(8*(i&7))&0xff, user)
			}
		}
	}
	if p == pNone {
		c.mmxEnter()
	}
}

// Floating point.

// simdAcc accumulates the exception flags of an instruction's elements.
type simdAcc uint32

// take adds the flags fl of one element's result v and returns v.
func (a *simdAcc) take(v uint64, fl uint32) uint64 {
	*a |= simdAcc(fl)
	return v
}

// lane32 returns doubleword i (0-3) of x.
func lane32(x [2]uint64, i int) uint64 { return x[i>>1] >> (32 * (i & 1)) & 0xffffffff }

// setLane32 sets doubleword i of x to v.
func setLane32(x *[2]uint64, i int, v uint64) {
	sh := 32 * uint(i&1)
	x[i>>1] = x[i>>1]&^(0xffffffff<<sh) | v<<sh
}

// arithOp maps the arithmetic opcodes 0F 51 and 58-5F to ieeeFormat.arith
// operations.
func arithOp(b uint8) int {
	switch b {
	case 0x51:
		return fpSqrt
	case 0x58:
		return fpAdd
	case 0x59:
		return fpMul
	case 0x5c:
		return fpSub
	case 0x5d:
		return fpMin
	case 0x5e:
		return fpDiv
	}
	return fpMax
}

// sseArith executes sqrt, add, mul, sub, min, div, max (0F 51, 58-5F) and
// cmp (C2) in their ps, pd, ss and sd forms.
func (c *CPU) sseArith(b uint8, p int) {
	in := c.cur
	c.sseAvail()
	f, n, single := ieeeS, 4, true
	var s [2]uint64
	switch p {
	case pNone:
		s = c.xmmSrc(true)
	case p66:
		s = c.xmmSrc(true)
		f, n, single = ieeeD, 2, false
	case pF3:
		s[0] = c.xmmSrc32()
		n = 1
	default:
		s[0] = c.xmmSrc64()
		f, n, single = ieeeD, 1, false
	}
	d := c.fpu.xmm[in.reg]
	mx := c.fpu.mxcsr
	var fl uint32
	for i := 0; i < n; i++ {
		var a, x uint64
		if single {
			a, x = lane32(d, i), lane32(s, i)
		} else {
			a, x = d[i], s[i]
		}
		var r uint64
		var rf uint32
		if b == 0xc2 {
			r, rf = f.cmpPredicate(uint8(in.imm), a, x, mx)
		} else {
			r, rf = f.arith(arithOp(b), a, x, mx)
		}
		fl |= rf
		if single {
			setLane32(&d, i, r)
		} else {
			d[i] = r
		}
	}
	c.simdFlags(fl)
	c.fpu.xmm[in.reg] = d
}

// approx executes rsqrtps/rsqrtss (0F 52) and rcpps/rcpss (53).
func (c *CPU) approx(p int, rsqrt bool) {
	in := c.cur
	if p != pNone && p != pF3 {
		panic(ud())
	}
	c.sseAvail()
	var s [2]uint64
	n := 4
	if p == pNone {
		s = c.xmmSrc(true)
	} else {
		s[0], n = c.xmmSrc32(), 1
	}
	d := c.fpu.xmm[in.reg]
	for i := 0; i < n; i++ {
		x := uint32(lane32(s, i))
		if rsqrt {
			setLane32(&d, i, uint64(rsqrtApprox(x)))
		} else {
			setLane32(&d, i, uint64(rcpApprox(x)))
		}
	}
	c.fpu.xmm[in.reg] = d
}

// comis executes ucomiss/ucomisd (0F 2E) and comiss/comisd (2F; signaling).
func (c *CPU) comis(p int, signaling bool) {
	c.ssePacked(p)
	var a, b uint64
	f := ieeeS
	if p == p66 {
		f, a, b = ieeeD, c.fpu.xmm[c.cur.reg][0], c.xmmSrc64()
	} else {
		a, b = c.fpu.xmm[c.cur.reg][0]&0xffffffff, c.xmmSrc32()
	}
	flags, fl := f.comiFlags(a, b, c.fpu.mxcsr, signaling)
	c.simdFlags(fl)
	c.setArith(flags)
}

// cvtToFloat executes 0F 2A: cvtpi2ps, cvtpi2pd (from mm/m64; only an MMX
// register source switches to MMX state), cvtsi2ss, cvtsi2sd.
func (c *CPU) cvtToFloat(p int) {
	in := c.cur
	mx := c.fpu.mxcsr
	d := c.fpu.xmm[in.reg]
	var fl uint32
	switch p {
	case pNone, p66:
		if in.mod == 3 {
			c.sseMMX()
		} else {
			c.sseAvail()
		}
		s := c.mmSrc()
		for i := 0; i < 2; i++ {
			v := int64(int32(s >> (32 * i)))
			if p == pNone {
				r, rf := ieeeS.fromInt(v, mx)
				setLane32(&d, i, r)
				fl |= rf
			} else {
				d[i], _ = ieeeD.fromInt(v, mx) // exact
			}
		}
		c.simdFlags(fl)
		c.fpu.xmm[in.reg] = d
		if in.mod == 3 {
			c.mmxEnter()
		}
		return
	}
	c.sseAvail()
	sz := c.gprSize()
	v := c.readRM(sz)
	iv := int64(v)
	if sz == 4 {
		iv = int64(int32(v))
	}
	if p == pF3 {
		r, rf := ieeeS.fromInt(iv, mx)
		setLane32(&d, 0, r)
		fl = rf
	} else {
		d[0], fl = ieeeD.fromInt(iv, mx)
	}
	c.simdFlags(fl)
	c.fpu.xmm[in.reg] = d
}

// cvtToInt executes 0F 2C (truncating) and 2D: cvtps2pi, cvtpd2pi (to an
// MMX register), cvtss2si, cvtsd2si.
func (c *CPU) cvtToInt(p int, truncate bool) {
	in := c.cur
	mx := c.fpu.mxcsr
	var fl uint32
	switch p {
	case pNone, p66:
		c.sseMMX()
		var s [2]uint64
		f := ieeeD
		if p == pNone {
			x := c.xmmSrc64()
			s, f = [2]uint64{x & 0xffffffff, x >> 32}, ieeeS
		} else {
			s = c.xmmSrc(true)
		}
		var r uint64
		for i := 0; i < 2; i++ {
			v, rf := f.toInt(s[i], 32, truncate, mx)
			r |= v << (32 * i)
			fl |= rf
		}
		c.simdFlags(fl)
		c.setMM(in.reg, r)
		c.mmxEnter()
		return
	}
	c.sseAvail()
	sz := c.gprSize()
	var r uint64
	if p == pF3 {
		r, fl = ieeeS.toInt(c.xmmSrc32(), uint(sz)*8, truncate, mx)
	} else {
		r, fl = ieeeD.toInt(c.xmmSrc64(), uint(sz)*8, truncate, mx)
	}
	c.simdFlags(fl)
	c.setReg(in.reg, sz, r)
}

// cvtFloat executes the conversions between XMM formats: 0F 5A (cvtps2pd,
// cvtpd2ps, cvtss2sd, cvtsd2ss), 5B (cvtdq2ps, cvtps2dq, cvttps2dq) and
// E6 (cvttpd2dq, cvtdq2pd, cvtpd2dq).
func (c *CPU) cvtFloat(b uint8, p int) {
	in := c.cur
	if b == 0x5b && p == pF2 || b == 0xe6 && p == pNone {
		panic(ud())
	}
	c.sseAvail()
	mx := c.fpu.mxcsr
	d := c.fpu.xmm[in.reg]
	var r [2]uint64
	var fl simdAcc
	switch {
	case b == 0x5a && p == pNone: // cvtps2pd
		s := c.xmmSrc64()
		r = [2]uint64{fl.take(ieeeS.convert(ieeeD, s&0xffffffff, mx)), fl.take(ieeeS.convert(ieeeD, s>>32, mx))}
	case b == 0x5a && p == p66: // cvtpd2ps
		s := c.xmmSrc(true)
		r[0] = fl.take(ieeeD.convert(ieeeS, s[0], mx)) | fl.take(ieeeD.convert(ieeeS, s[1], mx))<<32
	case b == 0x5a && p == pF3: // cvtss2sd
		r = d
		r[0] = fl.take(ieeeS.convert(ieeeD, c.xmmSrc32(), mx))
	case b == 0x5a: // cvtsd2ss
		r = d
		setLane32(&r, 0, fl.take(ieeeD.convert(ieeeS, c.xmmSrc64(), mx)))
	case b == 0x5b && p == pNone: // cvtdq2ps
		s := c.xmmSrc(true)
		for i := 0; i < 4; i++ {
			setLane32(&r, i, fl.take(ieeeS.fromInt(int64(int32(lane32(s, i))), mx)))
		}
	case b == 0x5b: // cvtps2dq, cvttps2dq
		s := c.xmmSrc(true)
		for i := 0; i < 4; i++ {
			setLane32(&r, i, fl.take(ieeeS.toInt(lane32(s, i), 32, p == pF3, mx)))
		}
	case p == pF3: // cvtdq2pd
		s := c.xmmSrc64()
		r[0], _ = ieeeD.fromInt(int64(int32(s)), mx)
		r[1], _ = ieeeD.fromInt(int64(int32(s>>32)), mx)
	default: // cvttpd2dq (66), cvtpd2dq (F2)
		s := c.xmmSrc(true)
		r[0] = fl.take(ieeeD.toInt(s[0], 32, p == p66, mx)) | fl.take(ieeeD.toInt(s[1], 32, p == p66, mx))<<32
	}
	c.simdFlags(uint32(fl))
	c.fpu.xmm[in.reg] = r
}
