package cpu

import (
	"math"
	"math/bits"
)

// IEEE single and double precision arithmetic as SSE does it: every
// result rounded once under MXCSR.RC, the six exception flags, DAZ and
// FTZ, x86's NaN rules (the first source's NaN wins, SNaNs are quieted,
// invalid operations give the default QNaN) and tininess detected after
// rounding. Values travel as raw bits in a uint64 (a single in the low
// 32 bits); finite nonzero values are unpacked into a 64-bit significand
// m and an exponent e with value m * 2^e, rounded by round.

// MXCSR fields.
const (
	mxIE  = 1 << 0 // invalid operation
	mxDE  = 1 << 1 // denormal operand
	mxZE  = 1 << 2 // divide by zero
	mxOE  = 1 << 3 // overflow
	mxUE  = 1 << 4 // underflow
	mxPE  = 1 << 5 // precision (inexact)
	mxDAZ = 1 << 6
	mxOM  = 1 << 10 // overflow mask
	mxUM  = 1 << 11 // underflow mask
	mxFTZ = 1 << 15

	mxRCShift = 13

	// mxPre are the exceptions detected before the computation.
	mxPre = mxIE | mxDE | mxZE
)

// Rounding modes (MXCSR.RC).
const (
	mxrcNearest = iota
	mxrcDown
	mxrcUp
	mxrcZero
)

// ieeeFormat describes an IEEE binary format.
type ieeeFormat struct {
	frac uint   // fraction bits: 23 or 52
	exp  uint   // exponent bits: 8 or 11
	bias int    // exponent bias
	emax uint64 // the all-ones biased exponent (inf and NaN)
}

var (
	ieeeS = ieeeFormat{frac: 23, exp: 8, bias: 127, emax: 0xff}
	ieeeD = ieeeFormat{frac: 52, exp: 11, bias: 1023, emax: 0x7ff}
)

func (f ieeeFormat) signBit() uint64  { return 1 << (f.frac + f.exp) }
func (f ieeeFormat) fracMask() uint64 { return 1<<f.frac - 1 }
func (f ieeeFormat) quietBit() uint64 { return 1 << (f.frac - 1) }
func (f ieeeFormat) expOf(x uint64) uint64 {
	return x >> f.frac & f.emax
}

// defaultNaN is the QNaN indefinite: sign set, quiet bit set.
func (f ieeeFormat) defaultNaN() uint64 { return f.signBit() | f.emax<<f.frac | f.quietBit() }

// maxFinite returns the largest finite magnitude, with sign s (0 or the
// sign bit).
func (f ieeeFormat) maxFinite(s uint64) uint64 { return s | (f.emax-1)<<f.frac | f.fracMask() }

func (f ieeeFormat) inf(s uint64) uint64 { return s | f.emax<<f.frac }

// Classification.

func (f ieeeFormat) isNaN(x uint64) bool  { return f.expOf(x) == f.emax && x&f.fracMask() != 0 }
func (f ieeeFormat) isSNaN(x uint64) bool { return f.isNaN(x) && x&f.quietBit() == 0 }
func (f ieeeFormat) isInf(x uint64) bool  { return f.expOf(x) == f.emax && x&f.fracMask() == 0 }
func (f ieeeFormat) isZero(x uint64) bool { return x&^f.signBit() == 0 }

// isDenormal reports a nonzero value with a zero exponent.
func (f ieeeFormat) isDenormal(x uint64) bool { return f.expOf(x) == 0 && x&f.fracMask() != 0 }

// daz applies MXCSR.DAZ to an operand: a denormal becomes a zero of its
// sign. It also reports whether x was a denormal that DAZ left alone (a
// denormal operand exception).
func (f ieeeFormat) daz(x uint64, mx uint32) (uint64, bool) {
	if !f.isDenormal(x) {
		return x, false
	}
	if mx&mxDAZ != 0 {
		return x & f.signBit(), false
	}
	return x, true
}

// unpack returns the significand and exponent of a finite nonzero value
// (value = m * 2^e) with the significand's top bit at bit 62.
func (f ieeeFormat) unpack(x uint64) (m uint64, e int) {
	m = x & f.fracMask()
	be := f.expOf(x)
	if be == 0 {
		e = 1 - f.bias - int(f.frac)
	} else {
		m |= 1 << f.frac
		e = int(be) - f.bias - int(f.frac)
	}
	sh := bits.LeadingZeros64(m) - 1
	return m << sh, e - sh
}

// roundRight returns x >> n rounded under rc for a value of sign neg, and
// whether bits were lost. The result may carry into bit 64-n.
func roundRight(x uint64, n uint, neg bool, rc uint32) (uint64, bool) {
	var q, rem, half uint64
	switch {
	case n == 0:
		return x, false
	case n < 64:
		q, rem, half = x>>n, x&(1<<n-1), 1<<(n-1)
	case n == 64:
		q, rem, half = 0, x, 1<<63
	default:
		// Below half of the last place: only the sticky bits are left.
		q, rem, half = 0, 1, 2
		if x == 0 {
			rem = 0
		}
	}
	if rem == 0 {
		return q, false
	}
	switch rc {
	case mxrcNearest:
		if rem > half || rem == half && q&1 != 0 {
			q++
		}
	case mxrcDown:
		if neg {
			q++
		}
	case mxrcUp:
		if !neg {
			q++
		}
	}
	return q, true
}

// round rounds the nonzero value m * 2^e of sign s (0 or the sign bit) to
// format f under mx, returning the result and the overflow, underflow
// and precision flags. Tininess is detected after rounding; with the
// underflow exception masked, FTZ flushes a tiny result to zero. An
// unmasked overflow or underflow reports only itself (the instruction
// then writes no result).
func (f ieeeFormat) round(s uint64, m uint64, e int, mx uint32) (uint64, uint32) {
	rc := mx >> mxRCShift & 3
	neg := s != 0
	lz := bits.LeadingZeros64(m)
	m <<= lz
	e -= lz
	p := f.frac + 1
	exp := e + 63 // unbiased exponent of the leading bit
	emin := 1 - f.bias
	drop := 64 - p
	q, inexact := roundRight(m, drop, neg, rc)
	rexp := exp
	if q == 1<<p {
		q >>= 1
		rexp++
	}
	if rexp >= emin {
		if rexp > f.bias {
			if mx&mxOM == 0 {
				return s, mxOE // unmasked: no result, no precision exception
			}
			return f.overflow(s, rc), mxOE | mxPE
		}
		r := s | uint64(rexp+f.bias)<<f.frac | q&f.fracMask()
		if inexact {
			return r, mxPE
		}
		return r, 0
	}
	// Tiny: the result is a denormal (or rounds up to the smallest normal).
	masked := mx&mxUM != 0
	if masked && mx&mxFTZ != 0 {
		return s, mxUE | mxPE
	}
	if !masked {
		return s, mxUE // tiny, exact or not; no result, no precision exception
	}
	q, inexact = roundRight(m, drop+uint(emin-exp), neg, rc)
	if inexact {
		return s | q, mxUE | mxPE
	}
	return s | q, 0
}

// overflow returns the result of an overflow under rc: infinity, or the
// largest finite value when rounding toward zero or away from the sign.
func (f ieeeFormat) overflow(s uint64, rc uint32) uint64 {
	switch {
	case rc == mxrcZero, rc == mxrcDown && s == 0, rc == mxrcUp && s != 0:
		return f.maxFinite(s)
	}
	return f.inf(s)
}

// nanResult returns the NaN result of a two-operand operation with a NaN
// operand: the first operand's if it is a NaN, else the second's, quieted;
// and IE if either is an SNaN.
func (f ieeeFormat) nanResult(a, b uint64) (uint64, uint32) {
	var fl uint32
	if f.isSNaN(a) || f.isSNaN(b) {
		fl = mxIE
	}
	if f.isNaN(a) {
		return a | f.quietBit(), fl
	}
	return b | f.quietBit(), fl
}

// Operations of ieeeFormat.arith.
const (
	fpAdd = iota
	fpSub
	fpMul
	fpDiv
	fpSqrt // of b
	fpMin
	fpMax
)

// arith computes a op b (for fpSqrt, the square root of b) in format f
// under mx, and the exception flags it raises.
func (f ieeeFormat) arith(op int, a, b uint64, mx uint32) (uint64, uint32) {
	if op == fpSqrt {
		return f.sqrt(b, mx)
	}
	if op == fpMin || op == fpMax {
		return f.minMax(op == fpMax, a, b, mx)
	}
	a, da := f.daz(a, mx)
	b, db := f.daz(b, mx)
	if f.isNaN(a) || f.isNaN(b) {
		return f.nanResult(a, b)
	}
	var fl uint32
	if da || db {
		fl = mxDE
	}
	sb := f.signBit()
	if op == fpSub {
		b ^= sb
	}
	sa, sbb := a&sb, b&sb
	switch op {
	case fpAdd, fpSub:
		switch {
		case f.isInf(a) && f.isInf(b):
			if sa != sbb {
				return f.defaultNaN(), mxIE
			}
			return a, fl
		case f.isInf(a):
			return a, fl
		case f.isInf(b):
			return b, fl
		case f.isZero(a) && f.isZero(b):
			if sa == sbb {
				return a, fl
			}
			return f.zeroSum(mx), fl
		case f.isZero(a):
			r, rf := f.exact(b, mx)
			return r, fl | rf
		case f.isZero(b):
			r, rf := f.exact(a, mx)
			return r, fl | rf
		}
		r, rf := f.add(a, b, mx)
		return r, fl | rf
	case fpMul:
		s := sa ^ sbb
		switch {
		case f.isInf(a) && f.isZero(b), f.isZero(a) && f.isInf(b):
			return f.defaultNaN(), mxIE
		case f.isInf(a) || f.isInf(b):
			return f.inf(s), fl
		case f.isZero(a) || f.isZero(b):
			return s, fl
		}
		ma, ea := f.unpack(a)
		mb, eb := f.unpack(b)
		hi, lo := bits.Mul64(ma, mb)
		m := hi<<1 | lo>>63
		if lo<<1 != 0 {
			m |= 1
		}
		r, rf := f.round(s, m, ea+eb+63, mx)
		return r, fl | rf
	default: // fpDiv
		s := sa ^ sbb
		switch {
		case f.isInf(a) && f.isInf(b), f.isZero(a) && f.isZero(b):
			return f.defaultNaN(), mxIE
		case f.isInf(a):
			return f.inf(s), fl
		case f.isInf(b):
			return s, fl
		case f.isZero(b):
			return f.inf(s), mxZE // before the denormal operand exception
		case f.isZero(a):
			return s, fl
		}
		ma, ea := f.unpack(a)
		mb, eb := f.unpack(b)
		q, rem := bits.Div64(ma>>1, ma<<63, mb)
		if rem != 0 {
			q |= 1
		}
		r, rf := f.round(s, q, ea-eb-63, mx)
		return r, fl | rf
	}
}

// exact returns the exact result x: a denormal is rounded like any
// result, for FTZ and the underflow exception.
func (f ieeeFormat) exact(x uint64, mx uint32) (uint64, uint32) {
	if !f.isDenormal(x) {
		return x, 0
	}
	m, e := f.unpack(x)
	return f.round(x&f.signBit(), m, e, mx)
}

// zeroSum is the sign of an exact zero sum of opposite operands: +0, or
// -0 when rounding down.
func (f ieeeFormat) zeroSum(mx uint32) uint64 {
	if mx>>mxRCShift&3 == mxrcDown {
		return f.signBit()
	}
	return 0
}

// add adds two finite nonzero values.
func (f ieeeFormat) add(a, b uint64, mx uint32) (uint64, uint32) {
	sb := f.signBit()
	ma, ea := f.unpack(a)
	mb, eb := f.unpack(b)
	ma, mb = ma>>1, mb>>1 // room for the carry; the low bits are zero
	sa, sbb := a&sb, b&sb
	if ea < eb || ea == eb && ma < mb {
		ma, mb, ea, eb, sa, sbb = mb, ma, eb, ea, sbb, sa
	}
	mb = shiftRightJam(mb, uint(ea-eb))
	var m uint64
	if sa == sbb {
		m = ma + mb
	} else {
		m = ma - mb
		if m == 0 {
			return f.zeroSum(mx), 0
		}
	}
	return f.round(sa, m, ea+1, mx)
}

// shiftRightJam shifts x right by n, ORing the lost bits into bit 0.
func shiftRightJam(x uint64, n uint) uint64 {
	switch {
	case n == 0:
		return x
	case n >= 64:
		if x != 0 {
			return 1
		}
		return 0
	}
	r := x >> n
	if x<<(64-n) != 0 {
		r |= 1
	}
	return r
}

// sqrt computes the square root of x.
func (f ieeeFormat) sqrt(x uint64, mx uint32) (uint64, uint32) {
	x, dx := f.daz(x, mx)
	if f.isNaN(x) {
		return f.nanResult(x, x)
	}
	var fl uint32
	if dx {
		fl = mxDE
	}
	switch {
	case f.isZero(x):
		return x, fl
	case x&f.signBit() != 0:
		return f.defaultNaN(), mxIE
	case f.isInf(x):
		return x, fl
	}
	m, e := f.unpack(x)
	// n = m * 2^k with e-k even and n < 2^127: its integer root has 63
	// or 64 bits.
	k := uint(64)
	if e&1 != 0 {
		k = 63
	}
	hi, lo := m>>(64-k), m<<k
	r := isqrt128(hi, lo)
	if rh, rl := bits.Mul64(r, r); rh != hi || rl != lo {
		r |= 1 // sticky: the root is not exact
	}
	res, rf := f.round(0, r, (e-int(k))/2, mx)
	return res, fl | rf
}

// isqrt128 returns floor(sqrt(hi:lo)) for hi:lo < 2^127 and at least 2^124.
func isqrt128(hi, lo uint64) uint64 {
	v := math.Sqrt(float64(hi)*0x1p64 + float64(lo))
	r := uint64(v)
	if v >= 0x1p64 {
		r = math.MaxUint64
	}
	// One Newton step from the float estimate, then exact correction.
	if r != 0 && hi < r {
		q, _ := bits.Div64(hi, lo, r)
		s, c := bits.Add64(r, q, 0)
		r = s>>1 | c<<63
	}
	for {
		h, l := bits.Mul64(r, r)
		if h > hi || h == hi && l > lo {
			r--
			continue
		}
		break
	}
	for {
		n := r + 1
		h, l := bits.Mul64(n, n)
		if n == 0 || h > hi || h == hi && l > lo {
			return r
		}
		r = n
	}
}

// minMax returns the minimum or maximum of a and b as minps and maxps
// do: the second operand when either is a NaN (IE for any NaN) or when
// they are equal (both zeros, of either sign).
func (f ieeeFormat) minMax(max bool, a, b uint64, mx uint32) (uint64, uint32) {
	a, da := f.daz(a, mx)
	b, db := f.daz(b, mx)
	if f.isNaN(a) || f.isNaN(b) {
		return b, mxIE
	}
	var fl uint32
	if da || db {
		fl = mxDE
	}
	c := f.compare(a, b)
	if max && c > 0 || !max && c < 0 {
		return a, fl
	}
	return b, fl
}

// compare orders two non-NaN values: -1, 0 or 1.
func (f ieeeFormat) compare(a, b uint64) int {
	ka, kb := f.orderKey(a), f.orderKey(b)
	switch {
	case ka < kb:
		return -1
	case ka > kb:
		return 1
	}
	return 0
}

// orderKey maps a non-NaN value to an integer of the same order (both
// zeros to 0).
func (f ieeeFormat) orderKey(x uint64) int64 {
	mag := int64(x &^ f.signBit())
	if x&f.signBit() != 0 {
		return -mag
	}
	return mag
}

// cmpPredicate evaluates cmpps predicate imm (0-7) on a and b; the result
// is all ones or zero in the format's width.
func (f ieeeFormat) cmpPredicate(imm uint8, a, b uint64, mx uint32) (uint64, uint32) {
	a, da := f.daz(a, mx)
	b, db := f.daz(b, mx)
	var fl uint32
	unord := f.isNaN(a) || f.isNaN(b)
	signaling := imm&3 == 1 || imm&3 == 2 // lt, le, nlt, nle
	switch {
	case f.isSNaN(a) || f.isSNaN(b):
		fl = mxIE
	case unord && signaling:
		fl = mxIE
	case !unord && (da || db):
		fl = mxDE
	}
	var r bool
	if unord {
		r = imm&7 == 3 || imm&7 == 4 || imm&7 == 5 || imm&7 == 6 // unord, neq, nlt, nle
	} else {
		c := f.compare(a, b)
		switch imm & 7 {
		case 0:
			r = c == 0
		case 1:
			r = c < 0
		case 2:
			r = c <= 0
		case 3:
			r = false
		case 4:
			r = c != 0
		case 5:
			r = c >= 0
		case 6:
			r = c > 0
		case 7:
			r = true
		}
	}
	if r {
		return f.signBit()<<1 - 1, fl
	}
	return 0, fl
}

// comiFlags compares a and b for comis/ucomis: the ZF PF CF setting and
// the exception flags (IE for an SNaN, or any NaN if signaling).
func (f ieeeFormat) comiFlags(a, b uint64, mx uint32, signaling bool) (uint64, uint32) {
	a, da := f.daz(a, mx)
	b, db := f.daz(b, mx)
	if f.isNaN(a) || f.isNaN(b) {
		var fl uint32
		if signaling || f.isSNaN(a) || f.isSNaN(b) {
			fl = mxIE
		}
		return flagZF | flagPF | flagCF, fl
	}
	var fl uint32
	if da || db {
		fl = mxDE
	}
	switch f.compare(a, b) {
	case -1:
		return flagCF, fl
	case 0:
		return flagZF, fl
	}
	return 0, fl
}

// convert converts x from format f to format t (single <-> double).
func (f ieeeFormat) convert(t ieeeFormat, x uint64, mx uint32) (uint64, uint32) {
	x, dx := f.daz(x, mx)
	s := x & f.signBit()
	ts := uint64(0)
	if s != 0 {
		ts = t.signBit()
	}
	var fl uint32
	switch {
	case f.isNaN(x):
		if f.isSNaN(x) {
			fl = mxIE
		}
		frac := x & f.fracMask()
		if t.frac > f.frac {
			frac <<= t.frac - f.frac
		} else {
			frac >>= f.frac - t.frac
		}
		return ts | t.emax<<t.frac | frac | t.quietBit(), fl
	case f.isInf(x):
		return t.inf(ts), 0
	case f.isZero(x):
		return ts, 0
	}
	if dx {
		fl = mxDE
	}
	m, e := f.unpack(x)
	r, rf := t.round(ts, m, e, mx)
	return r, fl | rf
}

// fromInt converts the signed integer v to format f, rounding under mx.
func (f ieeeFormat) fromInt(v int64, mx uint32) (uint64, uint32) {
	if v == 0 {
		return 0, 0
	}
	var s uint64
	m := uint64(v)
	if v < 0 {
		s, m = f.signBit(), -m
	}
	return f.round(s, m, 0, mx)
}

// toInt converts x to a signed integer of width bits (32 or 64), rounding
// under mx or, if truncate, toward zero. NaNs and values out of range
// give the integer indefinite (the most negative value) and IE.
func (f ieeeFormat) toInt(x uint64, width uint, truncate bool, mx uint32) (uint64, uint32) {
	x, _ = f.daz(x, mx)
	indefinite := uint64(1) << (width - 1)
	if f.expOf(x) == f.emax {
		return indefinite, mxIE
	}
	if f.isZero(x) {
		return 0, 0
	}
	rc := mx >> mxRCShift & 3
	if truncate {
		rc = mxrcZero
	}
	neg := x&f.signBit() != 0
	m, e := f.unpack(x)
	var q uint64
	var inexact bool
	if e >= 0 {
		if e > 1 { // at least 2^64
			return indefinite, mxIE
		}
		q = m << e
	} else {
		q, inexact = roundRight(m, uint(-e), neg, rc)
	}
	if !neg && q > indefinite-1 || neg && q > indefinite {
		return indefinite, mxIE
	}
	if neg {
		q = -q
	}
	q &= 1<<width - 1
	if inexact {
		return q, mxPE
	}
	return q, 0
}

// Approximations (rcpps, rsqrtps): the exact reciprocal or reciprocal
// square root rounded to 12 fraction bits. Hardware tables differ between
// vendors and from this; the relative error is below 2^-12, within the
// architectural bound of 1.5 * 2^-12. Denormal inputs count as zeros and
// tiny results are flushed to zero, as hardware does; no flags are raised.

// approxBits is the number of fraction bits the approximations keep.
const approxBits = 12

// rcpApprox returns the approximate reciprocal of the single x.
func rcpApprox(x uint32) uint32 {
	f := ieeeS
	v := uint64(x)
	s := v & f.signBit()
	switch {
	case f.isNaN(v):
		return x | uint32(f.quietBit())
	case f.isInf(v):
		return uint32(s)
	case f.expOf(v) == 0:
		return uint32(f.inf(s))
	}
	r := 1 / float64(math.Float32frombits(x&0x7fffffff))
	return uint32(s) | approxRound(r)
}

// rsqrtApprox returns the approximate reciprocal square root of x.
func rsqrtApprox(x uint32) uint32 {
	f := ieeeS
	v := uint64(x)
	s := v & f.signBit()
	switch {
	case f.isNaN(v):
		return x | uint32(f.quietBit())
	case f.expOf(v) == 0:
		return uint32(f.inf(s))
	case s != 0:
		return uint32(f.defaultNaN())
	case f.isInf(v):
		return 0
	}
	return approxRound(1 / math.Sqrt(float64(math.Float32frombits(x))))
}

// approxRound rounds the positive r to a single with approxBits fraction
// bits. Hardware tables give a reciprocal of 2^126 or more a significand
// below one, a denormal, which they flush to zero; so does this.
func approxRound(r float64) uint32 {
	if r <= 0x1p-126 {
		return 0
	}
	b := math.Float64bits(r)
	const drop = 52 - approxBits
	b = (b + 1<<(drop-1)) &^ (1<<drop - 1)
	return math.Float32bits(float32(math.Float64frombits(b)))
}
