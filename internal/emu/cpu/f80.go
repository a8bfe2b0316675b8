package cpu

import (
	"math/big"
	"math/bits"
)

// Soft-float arithmetic on the x87's 80-bit extended format, bit-exact
// with the hardware: rounding to the precision and with the rounding
// control of the control word, denormal results, tininess detected after
// rounding, and the exception flags and C1 ("rounded up") the x87 reports.
//
// Finite values are worked on unpacked: a sign, an unbiased exponent e and
// a 128-bit significand hi:lo with the integer bit at bit 63 of hi, so the
// magnitude is hi:lo × 2^(e−127). Bit 0 of lo is sticky: it is set when
// any bit below lo was.

// Status word bits.
const (
	fswIE  = 1 << 0
	fswDE  = 1 << 1
	fswZE  = 1 << 2
	fswOE  = 1 << 3
	fswUE  = 1 << 4
	fswPE  = 1 << 5
	fswSF  = 1 << 6
	fswES  = 1 << 7
	fswC0  = 1 << 8
	fswC1  = 1 << 9
	fswC2  = 1 << 10
	fswTop = 7 << 11
	fswC3  = 1 << 14
	fswB   = 1 << 15
	fswCC  = fswC0 | fswC1 | fswC2 | fswC3
	fswExc = 0x3f // the six exception flags, also their masks in FCW
)

// Rounding control (FCW bits 10-11).
const (
	rcNearest = 0
	rcDown    = 1
	rcUp      = 2
	rcZero    = 3
)

// Special values.
var (
	f80Indefinite = f80{mant: 0xc000000000000000, se: 0xffff} // the QNaN the x87 returns for invalid operations
	f80One        = f80{mant: 1 << 63, se: 0x3fff}
)

const (
	f80Bias    = 16383
	f80MaxExp  = 0x7fff
	f80Emin    = 1 - f80Bias // exponent of the smallest normal
	f80Emax    = 0x7ffe - f80Bias
	wrapBias   = 0x6000 // 24576: the exponent adjustment of unmasked overflow and underflow
	qnanBit    = 1 << 62
	integerBit = 1 << 63
)

// fpFormat is a destination format: its precision in bits and its
// exponent range. wrap says whether an unmasked overflow or underflow
// delivers the result with its exponent adjusted by wrapBias (register
// destinations); memory destinations receive nothing then.
type fpFormat struct {
	prec       uint
	emin, emax int32
	wrap       bool
}

var (
	fmtSingle = fpFormat{prec: 24, emin: -126, emax: 127}
	fmtDouble = fpFormat{prec: 53, emin: -1022, emax: 1023}
	fmtExt    = fpFormat{prec: 64, emin: f80Emin, emax: f80Emax, wrap: true}
)

// fpOp is one x87 operation's environment: the control word it runs
// under, and the exceptions it raised and whether its result was rounded
// up in magnitude (C1).
type fpOp struct {
	fcw uint16
	exc uint16 // FSW bits 0-6 (SF accompanies IE for stack faults)
	up  bool
	// denormalSrc says that the memory operand was a denormal in its
	// own format (it is normal once extended): it raises DE as a
	// denormal register operand does.
	denormalSrc bool
	// denormal says that an operand is a denormal: DE, unless the
	// operation raises IE or ZE, which take precedence (see flags).
	denormal bool
}

// flags returns the exceptions raised, DE included where due.
func (o *fpOp) flags() uint16 {
	if o.denormal && o.exc&(fswIE|fswZE) == 0 {
		return o.exc | fswDE
	}
	return o.exc
}

func (o *fpOp) rc() uint16 { return o.fcw >> 10 & 3 }

// masked reports whether every exception in e is masked.
func (o *fpOp) masked(e uint16) bool { return o.fcw&e == e }

// unmaskedExc returns the raised exceptions that are unmasked.
func (o *fpOp) unmaskedExc() uint16 { return o.flags() & fswExc &^ o.fcw }

// regFormat is the format of register results under precision control
// (FCW.PC: 0 single, 2 double, 3 and the reserved 1 extended).
func (o *fpOp) regFormat() fpFormat {
	f := fmtExt
	switch o.fcw >> 8 & 3 {
	case 0:
		f.prec = 24
	case 2:
		f.prec = 53
	}
	return f
}

// Operand classes.
const (
	clsZero = iota
	clsNormal
	clsDenormal // exponent 0, significand not zero (pseudo-denormals too)
	clsInf
	clsQNaN
	clsSNaN
	clsUnsupported // unnormals, pseudo-NaNs, pseudo-infinities
)

func (x f80) exp() int32 { return int32(x.se & f80MaxExp) }
func (x f80) neg() bool  { return x.se&0x8000 != 0 }

// class classifies x.
func (x f80) class() int {
	switch e := x.exp(); {
	case e == 0 && x.mant == 0:
		return clsZero
	case e == 0:
		return clsDenormal
	case x.mant&integerBit == 0:
		return clsUnsupported
	case e < f80MaxExp:
		return clsNormal
	case x.mant<<1 == 0:
		return clsInf
	case x.mant&qnanBit != 0:
		return clsQNaN
	}
	return clsSNaN
}

func isNaN(cls int) bool { return cls == clsQNaN || cls == clsSNaN }

// unpack returns the exponent and normalised significand of a finite
// nonzero x (normal, denormal or pseudo-denormal).
func (x f80) unpack() (e int32, m uint64) {
	e, m = x.exp(), x.mant
	if e == 0 {
		e = 1
	}
	n := bits.LeadingZeros64(m)
	return e - f80Bias - int32(n), m << n
}

// withSign returns x with the sign neg.
func (x f80) withSign(neg bool) f80 {
	x.se &= f80MaxExp
	if neg {
		x.se |= 0x8000
	}
	return x
}

func f80Inf(neg bool) f80  { return f80{mant: integerBit, se: f80MaxExp}.withSign(neg) }
func f80Zero(neg bool) f80 { return f80{}.withSign(neg) }

// quiet returns the QNaN of NaN x.
func (x f80) quiet() f80 { x.mant |= qnanBit; return x }

// packExt packs a rounded result into f80.
func packExt(neg bool, m uint64, e int32) f80 {
	var se uint16
	if m&integerBit != 0 {
		se = uint16(e + f80Bias)
	}
	if neg {
		se |= 0x8000
	}
	return f80{mant: m, se: se}
}

// shr128 shifts hi:lo right by n, keeping a sticky bit.
func shr128(hi, lo uint64, n uint) (uint64, uint64) {
	switch {
	case n == 0:
		return hi, lo
	case n < 64:
		sticky := lo<<(64-n) != 0
		lo = hi<<(64-n) | lo>>n
		hi >>= n
		if sticky {
			lo |= 1
		}
	case n < 128:
		sticky := lo != 0 || hi<<(128-n) != 0
		lo = hi >> (n - 64)
		hi = 0
		if sticky {
			lo |= 1
		}
	default:
		sticky := hi|lo != 0
		hi, lo = 0, 0
		if sticky {
			lo = 1
		}
	}
	return hi, lo
}

// shl128 shifts hi:lo left by n < 128.
func shl128(hi, lo uint64, n uint) (uint64, uint64) {
	switch {
	case n == 0:
		return hi, lo
	case n < 64:
		return hi<<n | lo>>(64-n), lo << n
	}
	return lo << (n - 64), 0
}

// roundBits rounds hi:lo to its top prec bits (of hi) by rounding control
// rc for a value of sign neg. It returns the kept bits, whether rounding
// carried out of bit 63 (the result is then 2^64, returned as 1<<63),
// whether bits were lost, and whether the magnitude was incremented.
func roundBits(hi, lo uint64, prec uint, rc uint16, neg bool) (m uint64, carry, inexact, inc bool) {
	shift := 64 - prec
	var rem, half uint64 // the discarded bits, and half an ulp
	if shift == 0 {
		m, rem, half = hi, lo, 1<<63
		lo = 0
	} else {
		rem, half = hi&(1<<shift-1), 1<<(shift-1)
		m = hi - rem
	}
	if rem == 0 && lo == 0 {
		return m, false, false, false
	}
	switch rc {
	case rcNearest:
		inc = rem > half || rem == half && (lo != 0 || m>>shift&1 != 0)
	case rcDown:
		inc = neg
	case rcUp:
		inc = !neg
	}
	if inc {
		var c uint64
		m, c = bits.Add64(m, 1<<shift, 0)
		if c != 0 {
			return 1 << 63, true, true, true
		}
	}
	return m, false, true, inc
}

// round rounds ±hi:lo × 2^(e−127) (hi normalised, or hi:lo zero) to format
// f, raising PE, UE and OE as the x87 does. It returns the significand
// (integer bit set for a normal, clear for a denormal or zero) and the
// exponent (f.emin for a denormal; f.emax+1 with significand 1<<63 for an
// infinity).
func (o *fpOp) round(f fpFormat, neg bool, e int32, hi, lo uint64) (uint64, int32) {
	if hi == 0 && lo == 0 {
		return 0, f.emin
	}
	rc := o.rc()
	if e < f.emin {
		// Tininess is detected after rounding: the value is not tiny if
		// rounding it with an unbounded exponent reaches 2^emin.
		tiny := true
		if e == f.emin-1 {
			if _, carry, _, _ := roundBits(hi, lo, f.prec, rc, neg); carry {
				tiny = false
			}
		}
		if tiny && !o.masked(fswUE) {
			o.exc |= fswUE
			if !f.wrap {
				return 0, f.emin // a memory destination receives nothing
			}
			if e+wrapBias >= f.emin {
				return o.roundNormal(f, neg, e+wrapBias, hi, lo)
			}
			// beyond even the adjusted range (fscale): zero
			o.exc |= fswPE
			o.up = false
			return 0, f.emin
		}
		h, l := shr128(hi, lo, uint(f.emin-e))
		m, _, inexact, inc := roundBits(h, l, f.prec, rc, neg)
		o.up = inc
		if inexact {
			o.exc |= fswPE
			if tiny {
				o.exc |= fswUE
			}
		}
		return m, f.emin
	}
	return o.roundNormal(f, neg, e, hi, lo)
}

// roundNormal is round for e >= f.emin.
func (o *fpOp) roundNormal(f fpFormat, neg bool, e int32, hi, lo uint64) (uint64, int32) {
	rc := o.rc()
	m, carry, inexact, inc := roundBits(hi, lo, f.prec, rc, neg)
	if carry {
		e++
	}
	o.up = inc
	if inexact {
		o.exc |= fswPE
	}
	if e <= f.emax {
		return m, e
	}
	o.exc |= fswOE
	if !o.masked(fswOE) {
		if !f.wrap {
			o.exc &^= fswPE // a memory destination receives nothing
			return m, e
		}
		if e-wrapBias <= f.emax {
			return m, e - wrapBias
		}
		// beyond even the adjusted range (fscale): infinity
		o.exc |= fswPE
		o.up = true
		return 1 << 63, f.emax + 1
	}
	o.exc |= fswPE
	toInf := rc == rcNearest || rc == rcUp && !neg || rc == rcDown && neg
	o.up = toInf
	if toInf {
		return 1 << 63, f.emax + 1
	}
	return ^uint64(0) << (64 - f.prec), f.emax
}

// roundExt rounds to a register result under precision control.
func (o *fpOp) roundExt(neg bool, e int32, hi, lo uint64) f80 {
	m, ex := o.round(o.regFormat(), neg, e, hi, lo)
	return packExt(neg, m, ex)
}

// roundValue rounds a finite nonzero x to a register result under
// precision control.
func (o *fpOp) roundValue(x f80) f80 {
	e, m := x.unpack()
	return o.roundExt(x.neg(), e, m, 0)
}

// roundValue64 is a finite nonzero x as a result of 64-bit precision:
// x itself, normalised, unless it is tiny and underflow unmasked.
func (o *fpOp) roundValue64(x f80) f80 {
	e, m := x.unpack()
	return o.roundExt64(x.neg(), e, m, 0)
}

// roundExt64 rounds to a register result with 64-bit precision (the
// operations precision control does not apply to).
func (o *fpOp) roundExt64(neg bool, e int32, hi, lo uint64) f80 {
	m, ex := o.round(fmtExt, neg, e, hi, lo)
	return packExt(neg, m, ex)
}

// operands classifies the operands of an arithmetic operation and raises
// what they call for: IE for an unsupported format or an SNaN, DE for a
// denormal. If the result is a NaN (or the indefinite) it returns it with
// done set.
func (o *fpOp) operands(a, b f80) (ca, cb int, r f80, done bool) {
	ca, cb = a.class(), b.class()
	if ca == clsUnsupported || cb == clsUnsupported {
		o.exc |= fswIE
		return ca, cb, f80Indefinite, true
	}
	if isNaN(ca) || isNaN(cb) {
		return ca, cb, o.nanResult(a, ca, b, cb), true
	}
	o.denormal = ca == clsDenormal || cb == clsDenormal || o.denormalSrc
	return ca, cb, f80{}, false
}

// nanResult is the result of an operation with a NaN operand (ca or cb
// is NaN): an SNaN raises IE; the result is the NaN quieted, the QNaN if
// one is an SNaN and the other a QNaN, else the one with the larger
// significand.
func (o *fpOp) nanResult(a f80, ca int, b f80, cb int) f80 {
	if ca == clsSNaN || cb == clsSNaN {
		o.exc |= fswIE
	}
	switch {
	case !isNaN(cb), ca == clsQNaN && cb == clsSNaN:
		return a.quiet()
	case !isNaN(ca), cb == clsQNaN && ca == clsSNaN:
		return b.quiet()
	}
	qa, qb := a.quiet(), b.quiet()
	if qb.mant > qa.mant || qb.mant == qa.mant && !qb.neg() {
		return qb
	}
	return qa
}

// add returns a+b (sub: a−b) rounded to a register result.
func (o *fpOp) add(a, b f80, sub bool) f80 {
	ca, cb, r, done := o.operands(a, b)
	if done {
		return r
	}
	if sub {
		b.se ^= 0x8000
	}
	switch {
	case ca == clsInf && cb == clsInf:
		if a.neg() != b.neg() {
			o.exc |= fswIE
			return f80Indefinite
		}
		return a
	case ca == clsInf:
		return a
	case cb == clsInf:
		return b
	case ca == clsZero && cb == clsZero:
		if a.neg() == b.neg() {
			return a
		}
		return f80Zero(o.rc() == rcDown)
	case ca == clsZero:
		return o.roundValue(b)
	case cb == clsZero:
		return o.roundValue(a)
	}
	return o.addFinite(a, b)
}

// addFinite adds two finite nonzero values.
func (o *fpOp) addFinite(a, b f80) f80 {
	ea, ma := a.unpack()
	eb, mb := b.unpack()
	na, nb := a.neg(), b.neg()
	if eb > ea || eb == ea && mb > ma {
		ea, ma, na, eb, mb, nb = eb, mb, nb, ea, ma, na
	}
	bh, bl := shr128(mb, 0, uint(min(ea-eb, 200)))
	if na == nb {
		lo, c := bits.Add64(0, bl, 0)
		hi, c2 := bits.Add64(ma, bh, c)
		if c2 != 0 {
			hi, lo = shr128(hi, lo, 1)
			hi |= 1 << 63
			ea++
		}
		return o.roundExt(na, ea, hi, lo)
	}
	lo, br := bits.Sub64(0, bl, 0)
	hi, _ := bits.Sub64(ma, bh, br)
	if hi == 0 && lo == 0 {
		return f80Zero(o.rc() == rcDown)
	}
	n := uint(bits.LeadingZeros64(hi))
	if hi == 0 {
		n = 64 + uint(bits.LeadingZeros64(lo))
	}
	hi, lo = shl128(hi, lo, n)
	return o.roundExt(na, ea-int32(n), hi, lo)
}

// mul returns a×b rounded to a register result.
func (o *fpOp) mul(a, b f80) f80 {
	ca, cb, r, done := o.operands(a, b)
	if done {
		return r
	}
	neg := a.neg() != b.neg()
	switch {
	case ca == clsInf || cb == clsInf:
		if ca == clsZero || cb == clsZero {
			o.exc |= fswIE
			return f80Indefinite
		}
		return f80Inf(neg)
	case ca == clsZero || cb == clsZero:
		return f80Zero(neg)
	}
	ea, ma := a.unpack()
	eb, mb := b.unpack()
	hi, lo := bits.Mul64(ma, mb)
	e := ea + eb + 1
	if hi&integerBit == 0 {
		hi, lo = shl128(hi, lo, 1)
		e--
	}
	return o.roundExt(neg, e, hi, lo)
}

// div returns a÷b rounded to a register result.
func (o *fpOp) div(a, b f80) f80 {
	ca, cb, r, done := o.operands(a, b)
	if done {
		return r
	}
	neg := a.neg() != b.neg()
	switch {
	case ca == clsInf && cb == clsInf, ca == clsZero && cb == clsZero:
		o.exc |= fswIE
		return f80Indefinite
	case ca == clsInf:
		return f80Inf(neg)
	case cb == clsInf:
		return f80Zero(neg)
	case cb == clsZero:
		o.exc |= fswZE
		return f80Inf(neg)
	case ca == clsZero:
		return f80Zero(neg)
	}
	ea, ma := a.unpack()
	eb, mb := b.unpack()
	e, hi, lo := divSig(ea-eb, ma, mb)
	return o.roundExt(neg, e, hi, lo)
}

// divSig divides normalised significands: ma/mb × 2^e as a 128-bit
// significand with sticky bit and its exponent.
func divSig(e int32, ma, mb uint64) (int32, uint64, uint64) {
	var q1, r uint64
	if ma >= mb {
		q1, r = bits.Div64(ma>>1, ma<<63, mb)
	} else {
		q1, r = bits.Div64(ma, 0, mb)
		e--
	}
	q2, r := bits.Div64(r, 0, mb)
	if r != 0 {
		q2 |= 1
	}
	return e, q1, q2
}

// sqrt returns √a rounded to a register result.
func (o *fpOp) sqrt(a f80) f80 {
	ca := a.class()
	switch ca {
	case clsUnsupported:
		o.exc |= fswIE
		return f80Indefinite
	case clsSNaN, clsQNaN:
		return o.nanResult(a, ca, f80{}, clsZero)
	case clsZero:
		return a
	case clsDenormal:
		o.denormal = true
	}
	if a.neg() {
		o.exc |= fswIE
		return f80Indefinite
	}
	if ca == clsInf {
		return a
	}
	e, m := a.unpack()
	// √(m × 2^(e−63)): with X = m × 2^(191 or 192), Q = ⌊√X⌋ has its
	// integer bit at 127.
	shift := uint(191)
	if e&1 != 0 {
		shift = 192
		e--
	}
	var x, q, r big.Int
	x.SetUint64(m)
	x.Lsh(&x, shift)
	q.Sqrt(&x)
	r.Mul(&q, &q)
	sticky := r.Cmp(&x) != 0
	var hi, lo uint64
	if w := q.Bits(); len(w) == 2 {
		hi, lo = uint64(w[1]), uint64(w[0])
	}
	if sticky {
		lo |= 1
	}
	return o.roundExt(false, e/2, hi, lo)
}

// Comparison results.
const (
	cmpLess = iota
	cmpEqual
	cmpGreater
	cmpUnordered
)

// compare compares a with b; a NaN operand makes it unordered and raises
// IE if it is an SNaN, or any NaN when quietOK is false; unsupported
// formats raise IE; denormals DE.
func (o *fpOp) compare(a, b f80, quietOK bool) int {
	ca, cb := a.class(), b.class()
	if ca == clsUnsupported || cb == clsUnsupported {
		o.exc |= fswIE
		return cmpUnordered
	}
	if isNaN(ca) || isNaN(cb) {
		if ca == clsSNaN || cb == clsSNaN || !quietOK {
			o.exc |= fswIE
		}
		return cmpUnordered
	}
	o.denormal = ca == clsDenormal || cb == clsDenormal || o.denormalSrc
	if ca == clsZero && cb == clsZero {
		return cmpEqual
	}
	ka, kb := orderKey(a, ca), orderKey(b, cb)
	na, nb := a.neg() && ca != clsZero, b.neg() && cb != clsZero
	switch {
	case na != nb:
		if na {
			return cmpLess
		}
		return cmpGreater
	case ka == kb:
		return cmpEqual
	case keyLess(ka, kb) != na:
		return cmpLess
	}
	return cmpGreater
}

// orderKey maps the magnitude of a non-NaN x to an integer that orders
// as the magnitudes do (denormals and pseudo-denormals normalised).
func orderKey(x f80, cls int) [2]uint64 {
	switch cls {
	case clsZero:
		return [2]uint64{}
	case clsInf:
		return [2]uint64{1 << 20}
	}
	e, m := x.unpack()
	return [2]uint64{uint64(e + 100000), m}
}

func keyLess(a, b [2]uint64) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }

// Conversions from memory formats; all are exact.

// f80FromIEEE converts the IEEE binary value v with fracBits fraction
// bits and the exponent bias (single: 23, 127; double: 52, 1023). It
// reports whether v is a denormal.
func f80FromIEEE(v uint64, fracBits uint, bias int32) (f80, bool) {
	neg := v>>(fracBits+uint(bits.Len32(uint32(2*bias+1)))) != 0
	frac := v & (1<<fracBits - 1)
	be := int32(v>>fracBits) & (2*bias + 1)
	switch {
	case be == 0 && frac == 0:
		return f80Zero(neg), false
	case be == 0:
		n := bits.LeadingZeros64(frac)
		e := 1 - bias - int32(fracBits) + 63 - int32(n)
		return packExt(neg, frac<<n, e), true
	case be == 2*bias+1:
		return f80{mant: integerBit | frac<<(63-fracBits), se: f80MaxExp}.withSign(neg), false
	}
	return packExt(neg, integerBit|frac<<(63-fracBits), be-bias), false
}

func f80FromSingle(v uint32) (f80, bool) { return f80FromIEEE(uint64(v), 23, 127) }
func f80FromDouble(v uint64) (f80, bool) { return f80FromIEEE(v, 52, 1023) }

// f80FromInt converts an integer.
func f80FromInt(v int64) f80 {
	if v == 0 {
		return f80{}
	}
	neg := v < 0
	m := uint64(v)
	if neg {
		m = -m
	}
	n := bits.LeadingZeros64(m)
	return packExt(neg, m<<n, 63-int32(n))
}

// toIEEE rounds x to single or double (f, with fracBits fraction bits and
// the exponent bias), raising IE for an SNaN or an unsupported format,
// and PE, UE, OE. The invalid result is the format's indefinite.
func (o *fpOp) toIEEE(x f80, f fpFormat, fracBits uint, bias int32) uint64 {
	expShift := fracBits
	signBit := uint64(1) << (fracBits + uint(bits.Len32(uint32(2*bias+1))))
	expAll := uint64(2*bias+1) << expShift
	var sign uint64
	if x.neg() {
		sign = signBit
	}
	switch x.class() {
	case clsUnsupported:
		o.exc |= fswIE
		return signBit | expAll | 1<<(fracBits-1)
	case clsSNaN:
		o.exc |= fswIE
		fallthrough
	case clsQNaN:
		return sign | expAll | (x.mant|qnanBit)<<1>>(64-fracBits)
	case clsInf:
		return sign | expAll
	case clsZero:
		return sign
	}
	e, m := x.unpack()
	r, ex := o.round(f, x.neg(), e, m, 0)
	v := r >> (64 - f.prec)
	if r&integerBit != 0 {
		v = v&(1<<fracBits-1) | uint64(ex+bias)<<expShift
	}
	return sign | v
}

func (o *fpOp) toSingle(x f80) uint32 { return uint32(o.toIEEE(x, fmtSingle, 23, 127)) }
func (o *fpOp) toDouble(x f80) uint64 { return o.toIEEE(x, fmtDouble, 52, 1023) }

// roundInt rounds a finite x to an integer by the rounding control,
// setting PE and o.up as the rounding goes. It returns the magnitude, or
// ok false if it does not fit in 64 bits.
func (o *fpOp) roundInt(x f80) (mag uint64, ok bool) {
	if x.class() == clsZero {
		return 0, true
	}
	e, m := x.unpack()
	if e > 63 {
		return 0, false
	}
	var hi, lo uint64
	if e < 0 {
		hi, lo = shr128(0, m, uint(-e-1))
	} else {
		hi, lo = shr128(m, 0, uint(63-e))
	}
	r, carry, inexact, inc := roundBits(hi, lo, 64, o.rc(), x.neg())
	if carry {
		return 0, false
	}
	o.up = inc
	if inexact {
		o.exc |= fswPE
	}
	return r, true
}

// toInt converts x to a signed integer of n bits, rounding by the
// rounding control. NaNs, infinities, unsupported formats and values out
// of range raise IE and give the integer indefinite (the most negative
// integer).
func (o *fpOp) toInt(x f80, n uint) int64 {
	indef := int64(-1) << (n - 1)
	switch x.class() {
	case clsUnsupported, clsQNaN, clsSNaN, clsInf:
		o.exc |= fswIE
		return indef
	}
	save := *o
	mag, ok := o.roundInt(x)
	limit := uint64(1) << (n - 1)
	if !ok || mag > limit || mag == limit && !x.neg() {
		*o = save
		o.exc |= fswIE
		return indef
	}
	if x.neg() {
		return -int64(mag)
	}
	return int64(mag)
}

// roundToIntegral is frndint: x rounded to an integral value by the
// rounding control.
func (o *fpOp) roundToIntegral(x f80) f80 {
	switch cls := x.class(); cls {
	case clsUnsupported:
		o.exc |= fswIE
		return f80Indefinite
	case clsSNaN, clsQNaN:
		return o.nanResult(x, cls, f80{}, clsZero)
	case clsZero, clsInf:
		return x
	case clsDenormal:
		o.denormal = true
	}
	if e, _ := x.unpack(); e >= 63 {
		return x
	}
	mag, _ := o.roundInt(x)
	if mag == 0 {
		return f80Zero(x.neg())
	}
	n := bits.LeadingZeros64(mag)
	return packExt(x.neg(), mag<<n, 63-int32(n))
}

// Packed BCD: 18 digits, two a byte from the least significant, and the
// sign in bit 7 of byte 9.

// f80FromBCD converts packed BCD (digits above 9 are weighted as if
// valid).
func f80FromBCD(b [10]byte) f80 {
	var v uint64
	for i := 8; i >= 0; i-- {
		v = v*100 + uint64(b[i]>>4)*10 + uint64(b[i]&15)
	}
	neg := b[9]&0x80 != 0
	if v == 0 {
		return f80Zero(neg)
	}
	n := bits.LeadingZeros64(v)
	return packExt(neg, v<<n, 63-int32(n))
}

// toBCD converts x to packed BCD, rounding by the rounding control; NaNs,
// infinities, unsupported formats and magnitudes of 10^18 or more raise
// IE and give the BCD indefinite.
func (o *fpOp) toBCD(x f80) [10]byte {
	indef := [10]byte{7: 0xc0, 8: 0xff, 9: 0xff}
	switch x.class() {
	case clsUnsupported, clsQNaN, clsSNaN, clsInf:
		o.exc |= fswIE
		return indef
	}
	save := *o
	mag, ok := o.roundInt(x)
	if !ok || mag >= 1e18 {
		*o = save
		o.exc |= fswIE
		return indef
	}
	var b [10]byte
	for i := 0; i < 9; i++ {
		b[i] = byte(mag%10) | byte(mag/10%10)<<4
		mag /= 100
	}
	if x.neg() {
		b[9] = 0x80
	}
	return b
}

// rem is fprem (nearest false: the quotient truncated) and fprem1
// (nearest: the quotient rounded to nearest even) of a by b. It returns
// the remainder, the low three bits of the quotient, and partial if the
// exponents were too far apart to finish (C2): a partial step reduces a
// by a multiple of b × 2^(d−n), d the exponent difference and n = 32 + d
// mod 32 (AMD's choice; the quotient is truncated then for fprem1 too).
// nan says the result is a NaN or the indefinite (no quotient).
func (o *fpOp) rem(a, b f80, nearest bool) (r f80, q uint64, partial, nan bool) {
	ca, cb, r, done := o.operands(a, b)
	if done {
		return r, 0, false, true
	}
	switch {
	case ca == clsInf, cb == clsZero:
		o.exc |= fswIE
		return f80Indefinite, 0, false, true
	case ca == clsZero:
		return a, 0, false, false
	case cb == clsInf:
		return o.roundValue64(a), 0, false, false
	}
	ea, ma := a.unpack()
	eb, mb := b.unpack()
	neg := a.neg()
	d := ea - eb
	if d >= 64 {
		n := 32 + d%32
		d, eb, partial = n, ea-n, true
	}
	var m uint64
	switch {
	case d < -1 || d == -1 && !nearest:
		return o.roundValue64(a), 0, false, false
	case d == -1:
		// |a/b| is in [1/2, 1): the quotient rounds to 1 above one half,
		// leaving |b| − |a| = (2mb − ma) × 2^(ea−63) of the other sign.
		if ma <= mb {
			return o.roundValue64(a), 0, false, false
		}
		q, m, neg, eb = 1, mb-(ma-mb), !neg, ea
	default:
		var hi, lo uint64
		if d > 0 {
			hi, lo = ma>>(64-uint(d)), ma<<uint(d)
		} else {
			lo = ma
		}
		q, m = bits.Div64(hi, lo, mb)
		if nearest && !partial && (m > mb-m || m == mb-m && q&1 != 0) {
			q++
			m = mb - m
			neg = !neg
		}
	}
	if m == 0 {
		return f80Zero(a.neg()), q, partial, false
	}
	n := bits.LeadingZeros64(m)
	return o.roundExt64(neg, eb-int32(n), m<<n, 0), q, partial, false
}

// scale is fscale: a × 2^n with n = b truncated to an integer.
func (o *fpOp) scale(a, b f80) f80 {
	ca, cb, r, done := o.operands(a, b)
	if done {
		return r
	}
	switch {
	case cb == clsInf && !b.neg():
		if ca == clsZero {
			o.exc |= fswIE
			return f80Indefinite
		}
		return f80Inf(a.neg())
	case cb == clsInf:
		if ca == clsInf {
			o.exc |= fswIE
			return f80Indefinite
		}
		return f80Zero(a.neg())
	case ca == clsZero || ca == clsInf:
		return a
	}
	var n int32
	if cb != clsZero {
		eb, mb := b.unpack()
		switch {
		case eb > 30:
			n = 1 << 30
		case eb >= 0:
			n = int32(mb >> (63 - eb))
		}
		if b.neg() {
			n = -n
		}
	}
	ea, ma := a.unpack()
	return o.roundExt64(a.neg(), ea+n, ma, 0)
}

// extract is fxtract: the exponent of a as a value, and its significand
// (a with exponent 0).
func (o *fpOp) extract(a f80) (exp, sig f80) {
	switch cls := a.class(); cls {
	case clsUnsupported:
		o.exc |= fswIE
		return f80Indefinite, f80Indefinite
	case clsSNaN, clsQNaN:
		q := o.nanResult(a, cls, f80{}, clsZero)
		return q, q
	case clsZero:
		o.exc |= fswZE
		return f80Inf(true), a
	case clsInf:
		return f80Inf(false), a
	case clsDenormal:
		o.denormal = true
	}
	e, m := a.unpack()
	return f80FromInt(int64(e)), packExt(a.neg(), m, 0)
}

// x87 constants to 128 bits (all irrational: their sticky bit is set),
// with their exponents.
var (
	constPi  = [3]uint64{0xc90fdaa22168c234, 0xc4c6628b80dc1cd1, 1}
	constL2T = [3]uint64{0xd49a784bcd1b8afe, 0x492bf6ff4dafdb4c, 1}
	constL2E = [3]uint64{0xb8aa3b295c17f0bb, 0xbe87fed0691d3e88, 0}
	constLG2 = [3]uint64{0x9a209a84fbcff798, 0x8f8959ac0b7c9178, ^uint64(1)} // exponent −2
	constLN2 = [3]uint64{0xb17217f7d1cf79ab, 0xc9e3b39803f2f6af, ^uint64(0)} // exponent −1
)

// loadConst rounds constant k to 64 bits by rounding control rc.
func loadConst(k [3]uint64, rc uint16) f80 {
	o := fpOp{fcw: rc<<10 | fswExc}
	return o.roundExt64(false, int32(int64(k[2])), k[0], k[1]|1)
}
