package cpu

import (
	"math/big"
	"math/bits"
	"sync"
)

// The x87 transcendental instructions: f2xm1, fyl2x, fyl2xp1, fpatan,
// fsin, fcos, fsincos, fptan. Their special cases follow the SDM's
// tables; finite results are computed with math/big to transPrec bits
// and rounded once to 64 bits by the rounding control (precision control
// does not apply). The host's results may differ in the last bit.

// transPrec is the working precision of the series: far more than the 64
// bits of the result, so that rounding it once is all but always correct.
const transPrec = 200

// bigConsts are π and ln 2 to a precision that reduces any operand of
// fsin, fcos and fptan (below 2^63) exactly enough.
var bigConsts = sync.OnceValues(func() (pi, ln2 *big.Float) {
	const prec = transPrec + 128
	// π = 16 atan(1/5) − 4 atan(1/239); ln 2 = 2 atanh(1/3)
	a := atanInv(5, prec+8)
	b := atanInv(239, prec+8)
	pi = newF(prec+8).Mul(a, big.NewFloat(16))
	pi.Sub(pi, newF(prec+8).Mul(b, big.NewFloat(4)))
	third := newF(prec+8).Quo(big.NewFloat(1), big.NewFloat(3))
	ln2 = atanhSeries(third, prec+8)
	ln2.Mul(ln2, big.NewFloat(2))
	return pi.SetPrec(prec), ln2.SetPrec(prec)
})

func newF(prec uint) *big.Float { return new(big.Float).SetPrec(prec) }

// atanInv returns atan(1/n) by its series.
func atanInv(n int64, prec uint) *big.Float {
	x := newF(prec).Quo(big.NewFloat(1), big.NewFloat(float64(n)))
	a, _ := atanSeries(x, prec)
	return a
}

// atanSeries sums x − x³/3 + x⁵/5 − … for |x| < 1 (quickly for small x).
// dir is the sign of the first term left out: of the error.
func atanSeries(x *big.Float, prec uint) (sum *big.Float, dir int) {
	sum = newF(prec).Set(x)
	x2 := newF(prec).Mul(x, x)
	p := newF(prec).Set(x)
	t := newF(prec)
	for k := int64(3); ; k += 2 {
		p.Mul(p, x2)
		p.Neg(p)
		t.Quo(p, newF(prec).SetInt64(k))
		if negligible(t, sum, prec) {
			return sum, t.Sign()
		}
		sum.Add(sum, t)
	}
}

// atanhSeries sums x + x³/3 + x⁵/5 + … for |x| < 1.
func atanhSeries(x *big.Float, prec uint) *big.Float {
	sum := newF(prec).Set(x)
	x2 := newF(prec).Mul(x, x)
	p := newF(prec).Set(x)
	t := newF(prec)
	for k := int64(3); ; k += 2 {
		p.Mul(p, x2)
		t.Quo(p, newF(prec).SetInt64(k))
		if negligible(t, sum, prec) {
			return sum
		}
		sum.Add(sum, t)
	}
}

// negligible reports whether term t no longer changes sum at prec bits.
func negligible(t, sum *big.Float, prec uint) bool {
	return t.Sign() == 0 || sum.Sign() != 0 && t.MantExp(nil) < sum.MantExp(nil)-int(prec)-2
}

// expm1 returns e^t − 1 for |t| <= 1 by its series.
func expm1(t *big.Float, prec uint) *big.Float {
	sum := newF(prec).Set(t)
	p := newF(prec).Set(t)
	for k := int64(2); ; k++ {
		p.Mul(p, t)
		p.Quo(p, newF(prec).SetInt64(k))
		if negligible(p, sum, prec) {
			return sum
		}
		sum.Add(sum, p)
	}
}

// sinCosSeries returns sin r and cos r for |r| <= π/4, and the signs of
// the first terms left out (of their errors).
func sinCosSeries(r *big.Float, prec uint) (s, c *big.Float, ds, dc int) {
	s, c = newF(prec).Set(r), newF(prec).SetInt64(1)
	r2 := newF(prec).Mul(r, r)
	ps, pc := newF(prec).Set(r), newF(prec).SetInt64(1)
	for k := int64(1); ds == 0 || dc == 0; k++ {
		pc.Mul(pc, r2)
		pc.Quo(pc, newF(prec).SetInt64((2*k-1)*(2*k)))
		pc.Neg(pc)
		ps.Mul(ps, r2)
		ps.Quo(ps, newF(prec).SetInt64((2*k)*(2*k+1)))
		ps.Neg(ps)
		if dc == 0 && negligible(pc, c, prec) {
			dc = pc.Sign()
		}
		if ds == 0 && negligible(ps, s, prec) {
			ds = ps.Sign()
		}
		if dc == 0 {
			c.Add(c, pc)
		}
		if ds == 0 {
			s.Add(s, ps)
		}
	}
	return s, c, ds, dc
}

// lnBig returns ln x for x > 0: ln m + e ln 2 with m in [1/√2, √2).
func lnBig(x *big.Float, prec uint) *big.Float {
	m := newF(prec).Set(x)
	e := m.MantExp(m) // m in [1/2, 1)
	if m.Cmp(big.NewFloat(0.70710678118654752)) < 0 {
		m.SetMantExp(m, 1)
		e--
	}
	// ln m = 2 atanh((m−1)/(m+1))
	num := newF(prec).Sub(m, big.NewFloat(1))
	den := newF(prec).Add(m, big.NewFloat(1))
	r := atanhSeries(num.Quo(num, den), prec)
	r.Mul(r, big.NewFloat(2))
	_, ln2 := bigConsts()
	return r.Add(r, newF(prec).Mul(ln2, newF(prec).SetInt64(int64(e))))
}

// bigOf returns the exact value of a finite x.
func bigOf(x f80) *big.Float {
	f := newF(64)
	if x.class() == clsZero {
		return f.SetInt64(0)
	}
	e, m := x.unpack()
	f.SetUint64(m)
	f.SetMantExp(f, int(e)-63)
	if x.neg() {
		f.Neg(f)
	}
	return f
}

// roundBig rounds v, an approximation of an irrational value, to 64
// bits.
func (o *fpOp) roundBig(v *big.Float) f80 { return o.roundApprox(v, 0) }

// roundApprox rounds v, an approximation of a nonzero value y ≠ v, to 64
// bits. dir is the sign of y − v, which decides when v itself has no more
// than 128 significant bits (a series whose terms fell below its
// precision); 0 if unknown, for irrational y: v is then almost surely not
// so short, and y taken as just above v in magnitude.
func (o *fpOp) roundApprox(v *big.Float, dir int) f80 {
	var m big.Float
	e := int32(v.MantExp(&m)) - 1 // |m| in [1/2, 1)
	neg := m.Sign() < 0
	if neg {
		dir = -dir
	}
	m.Abs(&m)
	m.SetMantExp(&m, 128)
	exact := m.IsInt()
	z, _ := m.Int(nil)
	var hi, lo uint64
	if w := z.Bits(); len(w) == 128/bits.UintSize {
		hi, lo = uint64(w[1]), uint64(w[0])
	}
	if exact && dir < 0 {
		// just below v in magnitude
		var b uint64
		lo, b = bits.Sub64(lo, 1, 0)
		hi -= b
		if hi&integerBit == 0 {
			hi, lo = shl128(hi, lo, 1)
			e--
		}
	}
	return o.roundExt64(neg, e, hi, lo|1)
}

// special handles the operand classes every transcendental shares:
// unsupported formats (IE), NaNs and denormals (DE). done says that r is
// the result.
func (o *fpOp) special(x f80, cx int, y f80, cy int) (r f80, done bool) {
	if cx == clsUnsupported || cy == clsUnsupported {
		o.exc |= fswIE
		return f80Indefinite, true
	}
	if isNaN(cx) || isNaN(cy) {
		return o.nanResult(x, cx, y, cy), true
	}
	if cx == clsDenormal || cy == clsDenormal {
		o.denormal = true
	}
	return f80{}, false
}

// f2xm1 is 2^x − 1 for x in [−1, 1]. Outside, the result is undefined:
// this host leaves x as it is, reporting PE.
func (o *fpOp) f2xm1(x f80) f80 {
	cx := x.class()
	if r, done := o.special(x, cx, f80{}, clsZero); done {
		return r
	}
	switch cx {
	case clsZero:
		return x
	case clsInf:
		if x.neg() {
			return f80One.withSign(true)
		}
		return x
	}
	o.exc |= fswPE // even for the exact results at ±1
	switch e, m := x.unpack(); {
	case e > 0 || e == 0 && m > integerBit:
		return x
	case e == 0 && x.neg():
		return packExt(true, integerBit, -1)
	case e == 0:
		return f80One
	}
	_, ln2 := bigConsts()
	t := newF(transPrec).Mul(bigOf(x), ln2)
	return o.roundBig(expm1(t, transPrec))
}

// yl2x is fyl2x: y × log2 x (x = ST(0), y = ST(1)).
func (o *fpOp) yl2x(x, y f80) f80 {
	cx, cy := x.class(), y.class()
	if r, done := o.special(x, cx, y, cy); done {
		return r
	}
	if x.neg() && cx != clsZero {
		o.exc |= fswIE
		return f80Indefinite
	}
	return o.timesLog(y, cy, x, cx, false)
}

// yl2xp1 is fyl2xp1: y × log2(x + 1) (x = ST(0), y = ST(1)).
func (o *fpOp) yl2xp1(x, y f80) f80 {
	cx, cy := x.class(), y.class()
	if r, done := o.special(x, cx, y, cy); done {
		return r
	}
	if cx == clsZero {
		if cy == clsInf {
			o.exc |= fswIE
			return f80Indefinite
		}
		return f80Zero(x.neg() != y.neg())
	}
	if x.neg() {
		if cx == clsInf {
			o.exc |= fswIE
			return f80Indefinite
		}
		if e, _ := x.unpack(); e >= 0 {
			// x <= −1, out of the domain (|x| < 1 − √2/2) and of
			// log2's: this host returns ±0 for y = 0, ∓∞ for y = ±∞
			// and x itself (with PE) for other y.
			switch cy {
			case clsZero:
				return f80Zero(!y.neg())
			case clsInf:
				return f80Inf(!y.neg())
			}
			o.exc |= fswPE
			return x
		}
	}
	return o.timesLog(y, cy, x, cx, true)
}

// timesLog returns y × log2 x, or y × log2(1+x) with plus1 (x > −1).
func (o *fpOp) timesLog(y f80, cy int, x f80, cx int, plus1 bool) f80 {
	// the sign and kind of log2: −inf, negative, zero, positive, +inf
	var lneg, lzero, linf bool
	switch {
	case cx == clsZero && !plus1:
		lneg, linf = true, true
	case cx == clsInf:
		linf = true
	case plus1:
		lneg = x.neg()
	default:
		e, m := x.unpack()
		lneg, lzero = e < 0, e == 0 && m == integerBit
	}
	neg := lneg != y.neg()
	switch {
	case linf && cy == clsZero, lzero && cy == clsInf:
		o.exc |= fswIE
		return f80Indefinite
	case linf:
		if cx == clsZero && cy != clsInf {
			o.exc |= fswZE
		}
		return f80Inf(neg)
	case cy == clsInf:
		return f80Inf(neg)
	case lzero || cy == clsZero:
		return f80Zero(neg)
	}
	if !plus1 {
		if e, m := x.unpack(); m == integerBit {
			// log2 of a power of two is exact
			p := fpOp{fcw: o.fcw | 3<<8}
			r := p.mul(y, f80FromInt(int64(e)))
			// the host reports the product inexact all the same: PE,
			// and UE for a denormal
			o.exc |= p.exc | fswPE
			if r.class() == clsDenormal {
				o.exc |= fswUE
			}
			o.up = p.up
			return r
		}
	}
	bx := bigOf(x)
	var l *big.Float
	switch {
	case plus1 && bx.MantExp(nil) < 0:
		// |x| < 1/2: ln(1+x) = 2 atanh(x/(2+x)), precise for tiny x
		den := newF(transPrec).Add(bx, big.NewFloat(2))
		l = atanhSeries(den.Quo(bx, den), transPrec)
		l.Mul(l, big.NewFloat(2))
	case plus1:
		l = lnBig(newF(transPrec).Add(bx, big.NewFloat(1)), transPrec)
	default:
		l = lnBig(bx, transPrec)
	}
	_, ln2 := bigConsts()
	l.Quo(l, ln2)
	return o.roundBig(l.Mul(l, bigOf(y)))
}

// patan is fpatan: atan(y/x) in the quadrant of (x, y) (x = ST(0), y =
// ST(1)).
func (o *fpOp) patan(x, y f80) f80 {
	cx, cy := x.class(), y.class()
	if r, done := o.special(x, cx, y, cy); done {
		return r
	}
	pi, _ := bigConsts()
	// angle as a multiple of π/4 for the exact special cases
	quarter := func(k int64) f80 {
		v := newF(transPrec).Mul(pi, big.NewFloat(float64(k)/4))
		if y.neg() {
			v.Neg(v)
		}
		return o.roundBig(v)
	}
	switch {
	case cy == clsZero:
		if x.neg() {
			return quarter(4)
		}
		return y
	case cy == clsInf && cx == clsInf:
		if x.neg() {
			return quarter(3)
		}
		return quarter(1)
	case cy == clsInf || cx == clsZero:
		return quarter(2)
	case cx == clsInf:
		if x.neg() {
			return quarter(4)
		}
		return f80Zero(y.neg())
	}
	ax, ay := bigOf(x), bigOf(y)
	ax.Abs(ax)
	ay.Abs(ay)
	swap := ay.Cmp(ax) > 0
	r := newF(transPrec)
	if swap {
		r.Quo(ax, ay)
	} else {
		r.Quo(ay, ax)
	}
	a, dir := atanBig(r, transPrec)
	if swap || x.neg() {
		dir = 0 // π enters: irrational
	}
	if swap {
		a.Sub(newF(transPrec).Quo(pi, big.NewFloat(2)), a)
	}
	if x.neg() {
		a.Sub(pi, a)
	}
	if y.neg() {
		a.Neg(a)
		dir = -dir
	}
	return o.roundApprox(a, dir)
}

// atanBig returns atan r for 0 < r <= 1, halving the angle until the
// series converges fast: atan r = 2 atan(r / (1 + √(1+r²))). dir is the
// sign of the error when no halving was needed (else 0).
func atanBig(r *big.Float, prec uint) (*big.Float, int) {
	r = newF(prec).Set(r)
	k := 0
	for ; r.MantExp(nil) > -8; k++ {
		s := newF(prec).Mul(r, r)
		s.Add(s, big.NewFloat(1))
		s.Sqrt(s)
		s.Add(s, big.NewFloat(1))
		r.Quo(r, s)
	}
	a, dir := atanSeries(r, prec)
	if k > 0 {
		dir = 0
	}
	return a.SetMantExp(a, k), dir
}

// reducePiBits is the precision of the π the x87 reduces the operands
// of fsin, fcos, fsincos and fptan by: π truncated to 66 bits, as this
// host does (and Intel documents). The reduction by it is exact, so
// large operands are reduced by a slightly wrong period, as on hardware.
const reducePiBits = 66

// reduce reduces a finite nonzero x, |x| < 2^63, by π/2 (reducePiBits):
// x = kπ/2 + r with |r| <= π/4. It returns r and k mod 4.
func reduce(x f80) (*big.Float, int) {
	pi, _ := bigConsts()
	prec := pi.Prec()
	bx := bigOf(x).SetPrec(prec)
	halfPi := newF(reducePiBits).SetMode(big.ToZero).Set(pi)
	halfPi.SetPrec(prec).SetMantExp(halfPi, -1)
	q := newF(prec).Quo(bx, halfPi)
	q.Add(q, big.NewFloat(0.5))
	kf, _ := q.Int(nil)
	if q.Sign() < 0 && !q.IsInt() {
		kf.Sub(kf, big.NewInt(1))
	}
	r := newF(prec).Mul(new(big.Float).SetInt(kf), halfPi)
	r.Sub(bx, r)
	return r.SetPrec(transPrec), int(new(big.Int).And(kf, big.NewInt(3)).Int64())
}

// trigSpecial handles the operands of fsin, fcos, fsincos and fptan that
// need no computation. out says the operand is out of range (C2: left
// unchanged).
func (o *fpOp) trigSpecial(x f80) (cls int, r f80, done, out bool) {
	cls = x.class()
	if r, done := o.special(x, cls, f80{}, clsZero); done {
		return cls, r, true, false
	}
	switch cls {
	case clsInf:
		o.exc |= fswIE
		return cls, f80Indefinite, true, false
	case clsZero:
		return cls, x, true, false
	}
	if e, _ := x.unpack(); e >= 63 {
		return cls, x, true, true
	}
	return cls, f80{}, false, false
}

// sinCos computes sin x and cos x (those wanted); ok false means |x| >=
// 2^63 (nothing is computed).
func (o *fpOp) sinCos(x f80, wantSin, wantCos bool) (s, c f80, ok bool) {
	cls, r, done, out := o.trigSpecial(x)
	if out {
		return x, x, false
	}
	if done {
		if cls == clsZero {
			return x, f80One, true
		}
		return r, r, true
	}
	red, k := reduce(x)
	bs, bc, ds, dc := sinCosSeries(red, transPrec)
	for range k {
		// a quarter turn: (sin, cos) → (cos, −sin)
		bs, bc, ds, dc = bc, bs.Neg(bs), dc, -ds
	}
	// sin is rounded first: C1 reports the last rounding (cos for fsincos)
	if wantSin {
		s = o.roundApprox(bs, ds)
	}
	if wantCos {
		c = o.roundApprox(bc, dc)
	}
	return s, c, true
}

// tan computes tan x; ok false means |x| >= 2^63.
func (o *fpOp) tan(x f80) (f80, bool) {
	_, r, done, out := o.trigSpecial(x)
	if out {
		return x, false
	}
	if done {
		return r, true
	}
	red, k := reduce(x)
	bs, bc, _, _ := sinCosSeries(red, transPrec)
	if k&1 != 0 {
		bs, bc = bc, bs.Neg(bs)
	}
	return o.roundBig(bs.Quo(bs, bc)), true
}
