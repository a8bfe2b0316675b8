package cpu

// The x87 instructions of D9 F0-FF: f2xm1 … fcos, but fdecstp and
// fincstp (x87.go). Their arithmetic is in f80.go and x87_trans.go.

// x87Math executes D9 F0-FF but fdecstp and fincstp (code: the low six
// bits of the ModRM byte).
func (c *CPU) x87Math(code int) {
	switch code {
	case 0x30, 0x3a, 0x3c: // f2xm1, fsqrt, frndint
		c.fpUnary(code)
	case 0x31, 0x33, 0x39: // fyl2x, fpatan, fyl2xp1
		c.fpBinaryPop(code)
	case 0x32: // fptan
		c.fptan()
	case 0x34: // fxtract
		c.fxtract()
	case 0x35, 0x38: // fprem1, fprem
		c.fprem(code == 0x35)
	case 0x3b: // fsincos
		c.fsincos()
	case 0x3d: // fscale
		c.fscale()
	case 0x3e: // fsin
		c.fsinOrCos(false)
	case 0x3f: // fcos
		c.fsinOrCos(true)
	}
}

// fpUnary replaces ST(0) with f2xm1, fsqrt or frndint (code) of it.
func (c *CPU) fpUnary(code int) {
	if c.stEmpty(0) {
		if c.stackFault(false) {
			c.setST(0, f80Indefinite)
		}
		return
	}
	o := c.fpOp()
	var r f80
	switch x := c.st(0); code {
	case 0x30:
		r = o.f2xm1(x)
	case 0x3a:
		r = o.sqrt(x)
	default:
		r = o.roundToIntegral(x)
	}
	if c.fpDone(&o) {
		return
	}
	c.setST(0, r)
	c.setC1(o.up)
}

// fpBinaryPop sets ST(1) to fyl2x, fpatan or fyl2xp1 (code) of ST(0) and
// ST(1), and pops.
func (c *CPU) fpBinaryPop(code int) {
	if c.stEmpty(0) || c.stEmpty(1) {
		if c.stackFault(false) {
			c.setST(1, f80Indefinite)
			c.fpPop()
		}
		return
	}
	o := c.fpOp()
	var r f80
	switch x, y := c.st(0), c.st(1); code {
	case 0x31:
		r = o.yl2x(x, y)
	case 0x33:
		r = o.patan(x, y)
	default:
		r = o.yl2xp1(x, y)
	}
	if c.fpDone(&o) {
		return
	}
	c.setST(1, r)
	c.setC1(o.up)
	c.fpPop()
}

// fscale is ST(0) = ST(0) × 2^trunc(ST(1)).
func (c *CPU) fscale() {
	if c.stEmpty(0) || c.stEmpty(1) {
		if c.stackFault(false) {
			c.setST(0, f80Indefinite)
		}
		return
	}
	o := c.fpOp()
	r := o.scale(c.st(0), c.st(1))
	if c.fpDone(&o) {
		return
	}
	c.setST(0, r)
	c.setC1(o.up)
}

// fprem is fprem and fprem1 (nearest): ST(0) = the partial remainder of
// ST(0) by ST(1); C2 if it is partial, else the low quotient bits in C0
// C3 C1. A NaN result, or a stack fault, clears C1 and C2 only.
func (c *CPU) fprem(nearest bool) {
	if c.stEmpty(0) || c.stEmpty(1) {
		if c.stackFault(false) {
			c.setST(0, f80Indefinite)
		}
		c.setC2(false)
		return
	}
	o := c.fpOp()
	r, q, partial, nan := o.rem(c.st(0), c.st(1), nearest)
	if c.fpDone(&o) {
		c.setC2(false)
		return
	}
	c.setST(0, r)
	switch {
	case nan:
		c.setCC(fswC1|fswC2, 0)
	case partial:
		c.setCC(fswCC, fswC2)
	default:
		c.setCC(fswCC, uint16(q>>2&1)*fswC0|uint16(q>>1&1)*fswC3|uint16(q&1)*fswC1)
	}
}

// fxtract replaces ST(0) with its exponent and pushes its significand.
func (c *CPU) fxtract() {
	if !c.pushTwoCheck() {
		return
	}
	o := c.fpOp()
	e, s := o.extract(c.st(0))
	if c.fpDone(&o) {
		return
	}
	c.setST(0, e)
	c.fpPush(s)
	c.setC1(false)
}

// fsinOrCos is fsin and fcos: an operand of magnitude 2^63 or more is
// left as it is, with C2 set.
func (c *CPU) fsinOrCos(cos bool) {
	c.setC2(false)
	if c.stEmpty(0) {
		if c.stackFault(false) {
			c.setST(0, f80Indefinite)
		}
		return
	}
	o := c.fpOp()
	s, co, ok := o.sinCos(c.st(0), !cos, cos)
	if c.fpDone(&o) {
		return
	}
	if !ok {
		c.setCC(fswC1|fswC2, fswC2)
		return
	}
	if cos {
		s = co
	}
	c.setST(0, s)
	c.setC1(o.up)
}

// pushTwoCheck makes the stack checks of the instructions that replace
// ST(0) and push (fxtract, fptan, fsincos): on an underflow or overflow
// with IE masked both are the indefinite. It reports whether the
// instruction goes on.
func (c *CPU) pushTwoCheck() bool {
	empty, full := c.stEmpty(0), !c.stEmpty(7)
	if !empty && !full {
		return true
	}
	if c.stackFault(full && !empty) {
		c.setST(0, f80Indefinite)
		c.fpPush(f80Indefinite)
	}
	return false
}

// fsincos replaces ST(0) with its sine and pushes its cosine.
func (c *CPU) fsincos() {
	c.setC2(false)
	if !c.pushTwoCheck() {
		return
	}
	o := c.fpOp()
	s, co, ok := o.sinCos(c.st(0), true, true)
	if c.fpDone(&o) {
		return
	}
	if !ok {
		c.setCC(fswC1|fswC2, fswC2)
		return
	}
	c.setST(0, s)
	c.fpPush(co)
	c.setC1(o.up)
}

// fptan replaces ST(0) with its tangent and pushes 1 (a NaN for a NaN).
func (c *CPU) fptan() {
	c.setC2(false)
	if !c.pushTwoCheck() {
		return
	}
	o := c.fpOp()
	t, ok := o.tan(c.st(0))
	if c.fpDone(&o) {
		return
	}
	if !ok {
		c.setCC(fswC1|fswC2, fswC2)
		return
	}
	c.setST(0, t)
	one := f80One
	if t.class() == clsQNaN {
		one = t
	}
	c.fpPush(one)
	c.setC1(o.up)
}

// setC2 sets C2 (operand out of range).
func (c *CPU) setC2(v bool) {
	c.fpu.fsw &^= fswC2
	if v {
		c.fpu.fsw |= fswC2
	}
}
