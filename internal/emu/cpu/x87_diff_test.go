//go:build linux && amd64

// Differential tests of the x87: every x87 instruction form (each memory
// form of D8-DF by ModRM.reg, each register form by ModRM byte, the
// 16-bit environment layouts and the waiting forms) runs natively on this
// machine and in the emulator from the same random x87 state. The x87
// state (FCW, FSW, tags, registers, and FOP/FIP/FDP when an exception is
// pending), the general registers, the flags and memory must agree bit
// for bit, but for the transcendental instructions (f2xm1, fyl2x,
// fyl2xp1, fptan, fpatan, fsin, fcos, fsincos): their results may differ
// by one unit in the last place, and their C1 (rounded up) is not
// compared but after a stack fault, since the emulator rounds a more
// precise value once and the host's microcode does not always. Their C2
// (operand out of range) is.
//
// Deeper runs: EMUX87_N=300 EMUX87_SEED=7 go test -run X87Differential;
// EMUX87_FORM=D8 runs only the forms whose names start with D8.

package cpu_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/emu/cpu"
	"github.com/godwit-vmm/godwit/internal/emu/native"
)

// xf80 is an 80-bit extended value: significand (explicit integer bit),
// sign and exponent.
type xf80 struct {
	mant uint64
	se   uint16
}

func (x xf80) String() string { return fmt.Sprintf("%04x_%016x", x.se, x.mant) }

// x87Mem is the kind of a form's memory operand.
type x87Mem int

const (
	xmNone x87Mem = iota
	xmF32
	xmF64
	xmF80
	xmI16
	xmI32
	xmI64
	xmBCD
	xmCW   // fldcw's source
	xmEnv  // fldenv's source, 14 or 28 bytes
	xmSave // frstor's source, 94 or 108 bytes
	xmOut  // written only: fst, fist, fbstp, fnstcw, fnstsw, fnstenv, fnsave
)

// x87Form is one instruction form.
type x87Form struct {
	name  string
	pre   []byte // whole instructions before it (fwait)
	pfx   []byte // prefixes of the instruction (66 for the 16-bit layouts)
	op    byte   // D8-DF
	modrm byte   // register forms: the ModRM byte; memory forms: the digit in bits 3-5
	mem   x87Mem
	size  int  // memory operand size
	env   bool // the memory operand is an fnstenv/fnsave image
	trans bool // transcendental: results within one ulp
	// domain adjusts the input (ST(0), ST(1)) to the instruction's domain
	// in most cases.
	domain func(g *x87Gen, st *[8]xf80)
}

func (f *x87Form) isMem() bool { return f.mem != xmNone }

// x87UD lists the D8-DF encodings the emulator must reject with #UD: the
// ones this host (AMD EPYC, family 26) rejects, and fisttp (DB /1, DD /1,
// DF /1), which is SSE3 and not advertised. Memory forms are "op /d",
// register forms "op modrm".
var x87UD = func() map[string]bool {
	m := map[string]bool{"D9 /1": true, "DB /1": true, "DB /4": true, "DB /6": true, "DD /1": true, "DD /5": true, "DF /1": true}
	add := func(op byte, lo, hi int) {
		for b := lo; b <= hi; b++ {
			m[fmt.Sprintf("%02X %02X", op, b)] = true
		}
	}
	add(0xd9, 0xd1, 0xd7)
	add(0xd9, 0xe2, 0xe3)
	add(0xd9, 0xe6, 0xe7)
	add(0xd9, 0xef, 0xef)
	add(0xda, 0xe0, 0xe8)
	add(0xda, 0xea, 0xff)
	add(0xdb, 0xe5, 0xe7)
	add(0xdb, 0xf8, 0xff)
	add(0xdd, 0xf0, 0xff)
	add(0xde, 0xd8, 0xd8)
	add(0xde, 0xda, 0xdf)
	add(0xdf, 0xe1, 0xe7)
	add(0xdf, 0xf8, 0xff)
	return m
}()

// memKinds gives each memory form's operand kind and size ("op /d").
var memKinds = func() map[string][2]int {
	m := map[string][2]int{}
	for d := 0; d < 8; d++ {
		m[fmt.Sprintf("D8 /%d", d)] = [2]int{int(xmF32), 4}
		m[fmt.Sprintf("DC /%d", d)] = [2]int{int(xmF64), 8}
		m[fmt.Sprintf("DA /%d", d)] = [2]int{int(xmI32), 4}
		m[fmt.Sprintf("DE /%d", d)] = [2]int{int(xmI16), 2}
	}
	for k, v := range map[string][2]int{
		"D9 /0": {int(xmF32), 4}, "D9 /2": {int(xmOut), 4}, "D9 /3": {int(xmOut), 4}, "D9 /4": {int(xmEnv), 28},
		"D9 /5": {int(xmCW), 2}, "D9 /6": {int(xmOut), 28}, "D9 /7": {int(xmOut), 2},
		"DB /0": {int(xmI32), 4}, "DB /2": {int(xmOut), 4}, "DB /3": {int(xmOut), 4}, "DB /5": {int(xmF80), 10}, "DB /7": {int(xmOut), 10},
		"DD /0": {int(xmF64), 8}, "DD /2": {int(xmOut), 8}, "DD /3": {int(xmOut), 8}, "DD /4": {int(xmSave), 108},
		"DD /6": {int(xmOut), 108}, "DD /7": {int(xmOut), 2},
		"DF /0": {int(xmI16), 2}, "DF /2": {int(xmOut), 2}, "DF /3": {int(xmOut), 2}, "DF /4": {int(xmBCD), 10},
		"DF /5": {int(xmI64), 8}, "DF /6": {int(xmOut), 10}, "DF /7": {int(xmOut), 8},
	} {
		m[k] = v
	}
	return m
}()

// transOps are the D9 register forms computing transcendental functions,
// with the domain each is tested in mostly (beyond it: what this host
// does, the architecture leaving it undefined for f2xm1 and fyl2xp1).
var transOps = map[byte]func(g *x87Gen, st *[8]xf80){
	0xf0: func(g *x87Gen, st *[8]xf80) { st[0] = g.inRange(0x3fff) },       // f2xm1: |x| <= 1
	0xf1: func(g *x87Gen, st *[8]xf80) { st[0].se &^= sign(!g.chance(8)) }, // fyl2x: x > 0
	0xf2: func(g *x87Gen, st *[8]xf80) { st[0] = g.inRange(0x3fff + 70) },  // fptan
	0xf3: nil,                                                              // fpatan
	0xf9: func(g *x87Gen, st *[8]xf80) { st[0] = g.inRange(0x3ffd) },       // fyl2xp1: |x| < 1 − √2/2
	0xfb: func(g *x87Gen, st *[8]xf80) { st[0] = g.inRange(0x3fff + 70) },  // fsincos
	0xfe: func(g *x87Gen, st *[8]xf80) { st[0] = g.inRange(0x3fff + 70) },  // fsin
	0xff: func(g *x87Gen, st *[8]xf80) { st[0] = g.inRange(0x3fff + 70) },  // fcos
}

// x87Forms lists every form the differential test runs.
func x87Forms() []x87Form {
	var fs []x87Form
	for op := byte(0xd8); op <= 0xdf; op++ {
		for d := 0; d < 8; d++ {
			key := fmt.Sprintf("%02X /%d", op, d)
			if x87UD[key] {
				continue
			}
			k := memKinds[key]
			fs = append(fs, x87Form{name: key, op: op, modrm: byte(d << 3), mem: x87Mem(k[0]), size: k[1],
				env: key == "D9 /6" || key == "DD /6"})
		}
		for m := 0xc0; m <= 0xff; m++ {
			key := fmt.Sprintf("%02X %02X", op, m)
			if x87UD[key] {
				continue
			}
			f := x87Form{name: key, op: op, modrm: byte(m)}
			if op == 0xd9 {
				if dom, ok := transOps[byte(m)]; ok {
					f.trans, f.domain = true, dom
				}
			}
			fs = append(fs, f)
		}
	}
	// The 16-bit layouts of the environment and state images.
	fs = append(fs,
		x87Form{name: "66 D9 /4 (fldenv m14)", pfx: []byte{0x66}, op: 0xd9, modrm: 4 << 3, mem: xmEnv, size: 14},
		x87Form{name: "66 D9 /6 (fnstenv m14)", pfx: []byte{0x66}, op: 0xd9, modrm: 6 << 3, mem: xmOut, size: 14, env: true},
		x87Form{name: "66 DD /4 (frstor m94)", pfx: []byte{0x66}, op: 0xdd, modrm: 4 << 3, mem: xmSave, size: 94},
		x87Form{name: "66 DD /6 (fnsave m94)", pfx: []byte{0x66}, op: 0xdd, modrm: 6 << 3, mem: xmOut, size: 94, env: true},
	)
	// The waiting forms: fwait alone and before the control instructions.
	fs = append(fs,
		x87Form{name: "9B (fwait)", pfx: nil, op: 0, mem: xmNone},
		x87Form{name: "9B DB E2 (fclex)", pre: []byte{0x9b}, op: 0xdb, modrm: 0xe2},
		x87Form{name: "9B DB E3 (finit)", pre: []byte{0x9b}, op: 0xdb, modrm: 0xe3},
		x87Form{name: "9B DF E0 (fstsw ax)", pre: []byte{0x9b}, op: 0xdf, modrm: 0xe0},
		x87Form{name: "9B D9 /7 (fstcw)", pre: []byte{0x9b}, op: 0xd9, modrm: 7 << 3, mem: xmOut, size: 2},
		x87Form{name: "9B DD /7 (fstsw m16)", pre: []byte{0x9b}, op: 0xdd, modrm: 7 << 3, mem: xmOut, size: 2},
		x87Form{name: "9B D9 /6 (fstenv)", pre: []byte{0x9b}, op: 0xd9, modrm: 6 << 3, mem: xmOut, size: 28, env: true},
		x87Form{name: "9B DD /6 (fsave)", pre: []byte{0x9b}, op: 0xdd, modrm: 6 << 3, mem: xmOut, size: 108, env: true},
	)
	return fs
}

// fswSF is the stack fault flag of FSW.
const fswSF = 0x40

// Layout of Mem: operands below x87EnvOff, the appended fnstenv image at
// it.
const x87EnvOff = native.MemSize - 28

// x87Gen draws random inputs.
type x87Gen struct {
	rng *rand.Rand
}

func (g *x87Gen) n(k int) int       { return g.rng.Intn(k) }
func (g *x87Gen) chance(k int) bool { return g.rng.Intn(k) == 0 }

func sign(neg bool) uint16 {
	if neg {
		return 0x8000
	}
	return 0
}

// ext draws an 80-bit value, favouring the special ones.
func (g *x87Gen) ext() xf80 {
	r := g.rng
	s := sign(r.Intn(2) == 0)
	frac := func() uint64 { return r.Uint64() >> uint(r.Intn(64)) }
	switch r.Intn(24) {
	case 0:
		return xf80{0, s}
	case 1: // denormal
		return xf80{frac()>>1 | 1, s}
	case 2: // pseudo-denormal
		return xf80{1<<63 | frac()>>1, s}
	case 3: // unnormal
		return xf80{frac() >> 1, s | uint16(1+r.Intn(0x7ffe))}
	case 4:
		return xf80{1 << 63, s | 0x7fff}
	case 5: // pseudo-infinity, pseudo-NaN
		return xf80{frac() >> 1, s | 0x7fff}
	case 6: // QNaN
		return xf80{3<<62 | frac()>>2, s | 0x7fff}
	case 7: // SNaN
		return xf80{1<<63 | frac()>>2 | 1, s | 0x7fff}
	case 8:
		return xf80{0xc000000000000000, 0xffff}
	case 9: // max and min normal, and neighbours
		m := uint64(1<<63) | uint64(r.Intn(3))
		if r.Intn(2) == 0 {
			return xf80{^uint64(0) - uint64(r.Intn(3)), s | 0x7ffe}
		}
		return xf80{m, s | 1}
	case 10: // small integers
		return fromFloat(float64(r.Intn(2001) - 1000))
	case 11: // near the integer formats' limits and 10^18
		base := []float64{0x8000, 0x80000000, 0x8000000000000000, 1e18}[r.Intn(4)]
		x := fromFloat(base)
		x.mant += uint64(r.Intn(5)) - 2
		return xf80{x.mant, x.se | s}
	case 12: // k + 1/2 and other ties
		e := r.Intn(64)
		m := uint64(1)<<63 | r.Uint64()>>1&^(1<<uint(max(0, 62-e))-1) | 1<<uint(max(0, 62-e))
		return xf80{m, s | uint16(0x3fff+e)}
	case 13, 14: // around 1
		return xf80{1<<63 | r.Uint64(), s | uint16(0x3fff-70+r.Intn(140))}
	case 15: // anywhere
		return xf80{1<<63 | r.Uint64(), s | uint16(1+r.Intn(0x7ffe))}
	case 16: // the single and double thresholds
		c := []int{126, 127, 149, 150, 1022, 1023, 1074, 1075}[r.Intn(8)]
		e := 0x3fff + c - 3 + r.Intn(7)
		if r.Intn(2) == 0 {
			e = 0x3fff - c - 3 + r.Intn(7)
		}
		return xf80{1<<63 | r.Uint64()>>uint(r.Intn(64)), s | uint16(e)}
	case 17: // few significant bits: exact results
		return xf80{1<<63 | uint64(r.Intn(256))<<55, s | uint16(0x3fff-20+r.Intn(40))}
	case 18: // tiny
		return xf80{1<<63 | r.Uint64(), s | uint16(1+r.Intn(80))}
	case 19: // huge
		return xf80{1<<63 | r.Uint64(), s | uint16(0x7ffe-r.Intn(80))}
	case 20: // 24 or 53 significant bits
		return xf80{(1<<63 | r.Uint64()) &^ (1<<uint([]int{40, 11}[r.Intn(2)]) - 1), s | uint16(0x3fff-100+r.Intn(200))}
	}
	return xf80{1<<63 | r.Uint64(), s | uint16(0x3fff-16+r.Intn(32))}
}

// inRange draws a value of magnitude at most 2^(maxExp−16383), now and
// then one out of range or a special one.
func (g *x87Gen) inRange(maxExp int) xf80 {
	if g.chance(6) {
		return g.ext()
	}
	if g.chance(10) {
		// the bound (±1 for f2xm1), or its neighbour below
		if g.chance(2) {
			return xf80{^uint64(0), sign(g.chance(2)) | uint16(maxExp-1)}
		}
		return xf80{1 << 63, sign(g.chance(2)) | uint16(maxExp)}
	}
	e := maxExp - 1 - g.n(70)
	if g.chance(8) {
		e = maxExp - 1 - g.n(maxExp)
	}
	return xf80{1<<63 | g.rng.Uint64(), sign(g.chance(2)) | uint16(max(1, e))}
}

func fromFloat(f float64) xf80 {
	if f == 0 {
		return xf80{0, sign(math.Signbit(f))}
	}
	fr, e := math.Frexp(math.Abs(f))
	return xf80{uint64(fr * (1 << 64)), sign(f < 0) | uint16(0x3fff+e-1)}
}

// single and double draw memory operands, favouring the special ones.
func (g *x87Gen) single() uint32 {
	r := g.rng
	s := uint32(r.Intn(2)) << 31
	switch r.Intn(10) {
	case 0:
		return s
	case 1:
		return s | r.Uint32()>>uint(9+r.Intn(23)) | 1
	case 2:
		return s | 0x7f800000
	case 3:
		return s | 0x7fc00000 | r.Uint32()>>10
	case 4:
		return s | 0x7f800000 | r.Uint32()>>11 | 1
	case 5:
		return s | uint32(1+r.Intn(3))<<23 | r.Uint32()>>9
	case 6:
		return s | 0x7f7fffff - uint32(r.Intn(3))
	case 7:
		return math.Float32bits(float32(r.Intn(201) - 100))
	}
	return s | uint32(127-30+r.Intn(60))<<23 | r.Uint32()>>9
}

func (g *x87Gen) double() uint64 {
	r := g.rng
	s := uint64(r.Intn(2)) << 63
	switch r.Intn(10) {
	case 0:
		return s
	case 1:
		return s | r.Uint64()>>uint(12+r.Intn(52)) | 1
	case 2:
		return s | 0x7ff0000000000000
	case 3:
		return s | 0x7ff8000000000000 | r.Uint64()>>13
	case 4:
		return s | 0x7ff0000000000000 | r.Uint64()>>14 | 1
	case 5:
		return s | uint64(1+r.Intn(3))<<52 | r.Uint64()>>12
	case 6:
		return s | 0x7fefffffffffffff - uint64(r.Intn(3))
	case 7:
		return math.Float64bits(float64(r.Intn(201) - 100))
	}
	return s | uint64(1023-60+r.Intn(120))<<52 | r.Uint64()>>12
}

// integer draws an n-bit integer operand.
func (g *x87Gen) integer(n uint) uint64 {
	r := g.rng
	switch r.Intn(6) {
	case 0:
		return 0
	case 1:
		return uint64(r.Intn(21) - 10)
	case 2:
		return 1 << (n - 1)
	case 3:
		return 1<<(n-1) - 1
	}
	return r.Uint64() >> uint(r.Intn(int(n)))
}

// bcd draws packed BCD: valid digits, of any length; now and then
// invalid ones (A-F) and other bits in the sign byte.
func (g *x87Gen) bcd() [10]byte {
	var b [10]byte
	nd := g.n(19)
	digit := 10
	if g.chance(4) {
		digit = 16
	}
	for i := 0; i < nd; i++ {
		b[i/2] |= byte(g.n(digit)) << (4 * (i % 2))
	}
	if g.chance(2) {
		b[9] = 0x80
	}
	if g.chance(8) {
		b[9] |= byte(g.n(128))
	}
	return b
}

// avoidWindows keeps a random pointer value clear of the ranges the
// comparison maps from host addresses to emulator addresses.
func avoidWindows(v uint64) uint64 {
	for _, base := range []uint64{native.CodeAddr(), native.MemBase()} {
		if uint32(v)-uint32(base) < 0x200 || uint16(v)-uint16(base) < 0x200 {
			v ^= 0x8000
		}
	}
	return v
}

// cw draws a control word; with unmask, exceptions may be unmasked.
func (g *x87Gen) cw(unmask, reserved bool) uint16 {
	masks := uint16(0x3f)
	if unmask && g.chance(2) {
		masks = uint16(g.n(64))
	}
	pc := []uint16{0, 2, 3, 3, 3, 1}[g.n(6)]
	cw := 0x40 | masks | pc<<8 | uint16(g.n(4))<<10
	if g.chance(8) {
		cw |= 0x1000
	}
	if reserved && g.chance(4) {
		cw |= uint16(g.rng.Uint32()) & 0xe080
	}
	return cw
}

// nonWaiting reports whether f is an instruction that does not wait for
// a pending exception: fnstsw, fnstcw, fnstenv, fnsave, fnclex, fninit,
// feni, fdisi, fsetpm.
func (f *x87Form) nonWaiting() bool {
	if f.pre != nil || f.op == 0 {
		return false
	}
	switch {
	case f.isMem():
		d := f.modrm >> 3 & 7
		return f.op == 0xd9 && d >= 6 || f.op == 0xdd && d >= 6
	case f.op == 0xdf:
		return f.modrm == 0xe0
	case f.op == 0xdb:
		return f.modrm >= 0xe0 && f.modrm <= 0xe4
	}
	return false
}

// state builds the input x87 state as an FXSAVE64 image. Exception flags
// are set only where masked, so nothing is pending, but for the
// non-waiting instructions half the time.
func (g *x87Gen) state(f *x87Form, unmask bool) *[512]byte {
	le := binary.LittleEndian
	b := native.DefaultFPU()
	fcw := g.cw(unmask, false)
	flags := uint16(g.n(64)) & fcw & 0x3f
	if f.nonWaiting() && g.chance(2) {
		e := uint16(1) << g.n(6)
		fcw &^= e
		flags |= e | 0x80 | 0x8000 // pending: ES and B
	}
	if flags&1 != 0 && g.chance(2) {
		flags |= 0x40 // SF
	}
	top := g.n(8)
	cc := uint16(g.n(16))
	fsw := flags | (cc&7)<<8 | (cc>>3)<<14 | uint16(top)<<11
	var tags uint8
	for i := 0; i < 8; i++ {
		p := 2
		switch i {
		case 0, 1:
			p = 8
		case 7:
			p = 1
		}
		if g.n(10) < p+1 {
			tags |= 1 << uint((top+i)&7)
		}
	}
	var st [8]xf80
	for i := range st {
		st[i] = g.ext()
	}
	if g.chance(4) {
		// ST(1) related to ST(0): equal, opposite, one ulp apart, scaled
		switch g.n(4) {
		case 0:
			st[1] = st[0]
		case 1:
			st[1] = xf80{st[0].mant, st[0].se ^ 0x8000}
		case 2:
			st[1] = xf80{st[0].mant + 1, st[0].se ^ sign(g.chance(2))}
		case 3:
			st[1] = xf80{st[0].mant, st[0].se + uint16(g.n(130)) - 65}
		}
		if g.chance(2) {
			st[1], st[0] = st[0], st[1]
		}
		if f.op != 0 && f.modrm >= 0xc0 && f.modrm&7 > 1 {
			st[f.modrm&7] = st[1]
		}
	}
	if f.domain != nil {
		f.domain(g, &st)
	}
	le.PutUint16(b[0:], fcw)
	le.PutUint16(b[2:], fsw)
	b[4] = tags
	le.PutUint16(b[6:], uint16(g.n(0x800)))
	le.PutUint64(b[8:], avoidWindows(g.rng.Uint64()>>uint(17+g.n(47))))
	le.PutUint64(b[16:], avoidWindows(g.rng.Uint64()>>uint(17+g.n(47))))
	for i, x := range st {
		le.PutUint64(b[32+16*i:], x.mant)
		le.PutUint16(b[40+16*i:], x.se)
	}
	return b
}

// envImage draws an environment or state image for fldenv and frstor.
func (g *x87Gen) envImage(b []byte, size int) {
	le := binary.LittleEndian
	for i := range b {
		b[i] = byte(g.n(256))
	}
	cw := g.cw(true, true)
	sw := uint16(g.rng.Uint32())
	if g.chance(2) {
		sw &^= 0x3f &^ cw // nothing unmasked pending
	}
	tag := uint16(g.rng.Uint32())
	hdr := 28
	if size == 14 || size == 94 {
		hdr = 14
		le.PutUint16(b[0:], cw)
		le.PutUint16(b[2:], sw)
		le.PutUint16(b[4:], tag)
		le.PutUint16(b[6:], uint16(avoidWindows(uint64(g.rng.Uint32()))))
		le.PutUint16(b[10:], uint16(avoidWindows(uint64(g.rng.Uint32()))))
	} else {
		le.PutUint16(b[0:], cw)
		le.PutUint16(b[4:], sw)
		le.PutUint16(b[8:], tag)
		le.PutUint32(b[12:], uint32(avoidWindows(uint64(g.rng.Uint32()))))
		le.PutUint32(b[20:], uint32(avoidWindows(uint64(g.rng.Uint32()))))
	}
	for i := 0; hdr+10*i+10 <= size; i++ {
		x := g.ext()
		le.PutUint64(b[hdr+10*i:], x.mant)
		le.PutUint16(b[hdr+10*i+8:], x.se)
	}
}

// x87Case is one generated case.
type x87Case struct {
	code     []byte
	in       native.State
	addrRegs uint16
	memOff   int // offset of the memory operand, -1 if none
	tail     bool
}

// build generates a case of form f: the input state, the memory operand
// at a random place reached by a random addressing form, and, half the
// time, an fnstenv after the instruction (which shows FOP, FIP, FDP and
// the full tag word whether or not an exception is pending).
func (g *x87Gen) build(f *x87Form) x87Case {
	c := x87Case{memOff: -1}
	c.tail = g.chance(2)
	// Unmasked exceptions only where no waiting instruction follows: the
	// form is the last x87 instruction but the non-waiting fnstenv.
	c.in.FPU = g.state(f, f.pre == nil)
	for i := range c.in.Mem {
		c.in.Mem[i] = byte(g.n(256))
	}
	code := append([]byte(nil), f.pre...)
	if f.op == 0 {
		code = append(code, 0x9b)
	} else if !f.isMem() {
		code = append(append(code, f.pfx...), f.op, f.modrm)
	} else {
		off := g.n(x87EnvOff - f.size + 1)
		c.memOff = off
		g.fillMem(f, c.in.Mem[off:off+f.size])
		code = append(code, g.address(f, off, &c)...)
	}
	if c.tail {
		code = append(code, 0xd9, 0x37) // fnstenv [rdi]
		c.in.Regs[native.RDI] = x87EnvOff
		c.addrRegs |= 1 << native.RDI
	}
	c.code = code
	return c
}

// fillMem writes the memory operand of f.
func (g *x87Gen) fillMem(f *x87Form, b []byte) {
	le := binary.LittleEndian
	switch f.mem {
	case xmF32:
		le.PutUint32(b, g.single())
	case xmF64:
		le.PutUint64(b, g.double())
	case xmF80:
		x := g.ext()
		le.PutUint64(b, x.mant)
		le.PutUint16(b[8:], x.se)
	case xmI16:
		le.PutUint16(b, uint16(g.integer(16)))
	case xmI32:
		le.PutUint32(b, uint32(g.integer(32)))
	case xmI64:
		le.PutUint64(b, g.integer(64))
	case xmBCD:
		v := g.bcd()
		copy(b, v[:])
	case xmCW:
		le.PutUint16(b, g.cw(true, true))
	case xmEnv, xmSave:
		g.envImage(b, f.size)
	}
}

// address encodes f with its memory operand at Mem offset off through a
// random addressing form, setting the registers it uses.
func (g *x87Gen) address(f *x87Form, off int, c *x87Case) []byte {
	d := f.modrm & 0x38
	regs := &c.in.Regs
	var p, b []byte
	p = append(p, f.pfx...)
	disp8 := func(lim int) int { return g.n(min(off, lim) + 1) }
	switch g.n(9) {
	case 0: // [rsi]
		regs[native.RSI] = uint64(off)
		c.addrRegs |= 1 << native.RSI
		b = []byte{0x06 | d}
	case 1: // [rsi+rcx*4+disp8]
		k := g.n(off/4 + 1)
		regs[native.RCX] = uint64(k)
		dd := disp8(min(127, off-4*k))
		regs[native.RSI] = uint64(off - 4*k - dd)
		c.addrRegs |= 1 << native.RSI
		b = []byte{0x44 | d, 0x8e, byte(dd)}
	case 2: // [rsi+disp32]
		dd := disp8(1 << 20)
		regs[native.RSI] = uint64(off - dd)
		c.addrRegs |= 1 << native.RSI
		b = binary.LittleEndian.AppendUint32([]byte{0x86 | d}, uint32(dd))
	case 3: // [esi+disp8], 32-bit addressing (the host's Mem is below 4 GiB)
		dd := disp8(127)
		regs[native.RSI] = uint64(off - dd)
		c.addrRegs |= 1 << native.RSI
		p = append(p, 0x67)
		b = []byte{0x46 | d, byte(dd)}
	case 4: // [r14+disp8]
		dd := disp8(127)
		regs[native.R14] = uint64(off - dd)
		c.addrRegs |= 1 << native.R14
		p = append(p, 0x41)
		b = []byte{0x46 | d, byte(dd)}
	case 5: // [rbp+disp8]: SS
		dd := disp8(127)
		regs[native.RBP] = uint64(off - dd)
		c.addrRegs |= 1 << native.RBP
		b = []byte{0x45 | d, byte(dd)}
	case 6: // segment override (not FS: Go's thread base)
		dd := disp8(127)
		regs[native.RSI] = uint64(off - dd)
		c.addrRegs |= 1 << native.RSI
		p = append([]byte{[]byte{0x26, 0x2e, 0x36, 0x3e}[g.n(4)]}, p...)
		b = []byte{0x46 | d, byte(dd)}
	case 7: // REX.W
		dd := disp8(127)
		regs[native.RSI] = uint64(off - dd)
		c.addrRegs |= 1 << native.RSI
		p = append(p, 0x48)
		b = []byte{0x46 | d, byte(dd)}
	default: // [rsi+disp8]
		dd := disp8(127)
		regs[native.RSI] = uint64(off - dd)
		c.addrRegs |= 1 << native.RSI
		b = []byte{0x46 | d, byte(dd)}
	}
	return append(append(p, f.op), b...)
}

// hostSelectors returns the host's CS, DS, ES and SS selectors (FCS and
// FDS record them).
func hostSelectors(t *testing.T) (cs, ds, es, ss uint16) {
	var st native.State
	// mov eax, cs; mov ecx, ds; mov edx, es; mov ebx, ss
	if err := native.Run([]byte{0x8c, 0xc8, 0x8c, 0xd9, 0x8c, 0xc2, 0x8c, 0xd3}, &st); err != nil {
		t.Fatal(err)
	}
	return uint16(st.Regs[native.RAX]), uint16(st.Regs[native.RCX]), uint16(st.Regs[native.RDX]), uint16(st.Regs[native.RBX])
}

// newX87VM builds the differential test machine with the host's segment
// selectors, so that FCS and FDS agree.
func newX87VM(t *testing.T) *diffVM {
	v := newDiffVM(t)
	cs, ds, es, ss := hostSelectors(t)
	s := v.c.GetSregs2()
	s.CS.Selector, s.DS.Selector, s.ES.Selector, s.SS.Selector = cs, ds, es, ss
	if err := v.c.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	return v
}

// key orders finite 80-bit values of one sign: adjacent values differ by 1.
func key(x xf80) uint64 { return uint64(x.se&0x7fff)<<63 | x.mant&^(1<<63) }

// oneULP reports whether a and b are adjacent finite values of one sign.
func oneULP(a, b xf80) bool {
	if a.se&0x8000 != b.se&0x8000 || a.se&0x7fff == 0x7fff || b.se&0x7fff == 0x7fff {
		return false
	}
	ka, kb := key(a), key(b)
	return ka-kb == 1 || kb-ka == 1
}

// hostToEmu maps a pointer value the host stored (FIP, FDP, whole or
// truncated to bits) to the emulator's: host code and Mem addresses
// become the emulator's.
func hostToEmu(v uint64, bits uint) uint64 {
	m := ^uint64(0) >> (64 - bits)
	for _, w := range [][2]uint64{{native.CodeAddr(), diffCode}, {native.MemBase(), diffMem}} {
		if d := (v - w[0]) & m; d < 0x200 {
			return (w[1] + d) & m
		}
	}
	return v
}

// normalizeEnv maps the pointers of the protected-mode environment image
// at b (14 or 28 bytes) from host to emulator addresses.
func normalizeEnv(b []byte, size int) {
	le := binary.LittleEndian
	if size == 14 {
		le.PutUint16(b[6:], uint16(hostToEmu(uint64(le.Uint16(b[6:])), 16)))
		le.PutUint16(b[10:], uint16(hostToEmu(uint64(le.Uint16(b[10:])), 16)))
		return
	}
	le.PutUint32(b[12:], uint32(hostToEmu(uint64(le.Uint32(b[12:])), 32)))
	le.PutUint32(b[20:], uint32(hostToEmu(uint64(le.Uint32(b[20:])), 32)))
}

// compareX87 lists the differences between the host's and the
// emulator's results of case c of form f, and reports whether a register
// differed by one ulp (allowed for the transcendentals).
func compareX87(f *x87Form, c *x87Case, nat, emu *native.State) (d []string, ulp bool) {
	le := binary.LittleEndian
	nf, ef := nat.FPU, emu.FPU
	for i := 0; i < 8; i++ {
		a := xf80{le.Uint64(nf[32+16*i:]), le.Uint16(nf[40+16*i:])}
		b := xf80{le.Uint64(ef[32+16*i:]), le.Uint16(ef[40+16*i:])}
		if a == b {
			continue
		}
		if f.trans && oneULP(a, b) {
			ulp = true
			continue
		}
		d = append(d, fmt.Sprintf("ST(%d): host %v, emu %v", i, a, b))
	}
	// Nor is their C1 compared, even for equal results (the host rounds
	// a different intermediate value), but after a stack fault.
	newSF := le.Uint16(nf[2:])&fswSF != 0 && le.Uint16(c.in.FPU[2:])&fswSF == 0
	c1Free := f.trans && !newSF
	swMask := uint16(0xffff)
	if c1Free {
		swMask &^= 0x200
	}
	if a, b := le.Uint16(nf[0:]), le.Uint16(ef[0:]); a != b {
		d = append(d, fmt.Sprintf("FCW: host %#04x, emu %#04x", a, b))
	}
	if a, b := le.Uint16(nf[2:]), le.Uint16(ef[2:]); a&swMask != b&swMask {
		d = append(d, fmt.Sprintf("FSW: host %#04x, emu %#04x", a, b))
	}
	if nf[4] != ef[4] {
		d = append(d, fmt.Sprintf("FTW: host %#02x, emu %#02x", nf[4], ef[4]))
	}
	if le.Uint16(nf[2:])&0x80 != 0 {
		// this host stores FOP, FIP and FDP only with an exception pending
		if a, b := le.Uint16(nf[6:]), le.Uint16(ef[6:]); a != b {
			d = append(d, fmt.Sprintf("FOP: host %#03x, emu %#03x", a, b))
		}
		if a, b := hostToEmu(le.Uint64(nf[8:]), 64), le.Uint64(ef[8:]); a != b {
			d = append(d, fmt.Sprintf("FIP: host %#x (as emu), emu %#x", a, b))
		}
		if a, b := hostToEmu(le.Uint64(nf[16:]), 64), le.Uint64(ef[16:]); a != b {
			d = append(d, fmt.Sprintf("FDP: host %#x (as emu), emu %#x", a, b))
		}
	}
	if a, b := le.Uint32(nf[24:]), le.Uint32(ef[24:]); a != b {
		d = append(d, fmt.Sprintf("MXCSR: host %#x, emu %#x", a, b))
	}
	for r := 0; r < 16; r++ {
		if r != native.RSP && nat.Regs[r] != emu.Regs[r] {
			d = append(d, fmt.Sprintf("%s: host %#x, emu %#x", native.RegName(r), nat.Regs[r], emu.Regs[r]))
		}
	}
	if a, b := nat.RFLAGS&native.StateFlags, emu.RFLAGS&native.StateFlags; a != b {
		d = append(d, fmt.Sprintf("flags: host %s, emu %s", native.FlagString(a), native.FlagString(b)))
	}
	nm := nat.Mem
	if f.env {
		size := 28
		if f.size == 14 || f.size == 94 {
			size = 14
		}
		normalizeEnv(nm[c.memOff:], size)
	}
	if c.tail {
		normalizeEnv(nm[x87EnvOff:], 28)
		if c1Free {
			nm[x87EnvOff+5] = nm[x87EnvOff+5]&^2 | emu.Mem[x87EnvOff+5]&2
		}
	}
	for i := range nm {
		if nm[i] != emu.Mem[i] {
			j := i
			for j < len(nm) && nm[j] != emu.Mem[j] {
				j++
			}
			d = append(d, fmt.Sprintf("Mem[%#x:%#x]: host % x, emu % x", i, j, nm[i:j], emu.Mem[i:j]))
			if c.tail && i >= x87EnvOff {
				d = append(d, fmt.Sprintf("fnstenv image: host % x\n\t               emu  % x", nm[x87EnvOff:], emu.Mem[x87EnvOff:]))
			}
			break
		}
	}
	return d, ulp
}

// describe formats a case's input.
func describe(c *x87Case, f *x87Form) string {
	le := binary.LittleEndian
	b := c.in.FPU
	var s strings.Builder
	fmt.Fprintf(&s, "code % x; FCW %#04x FSW %#04x FTW %#02x\n\t  in:", c.code, le.Uint16(b[0:]), le.Uint16(b[2:]), b[4])
	for i := 0; i < 8; i++ {
		fmt.Fprintf(&s, " ST%d=%v", i, xf80{le.Uint64(b[32+16*i:]), le.Uint16(b[40+16*i:])})
	}
	if c.memOff >= 0 {
		fmt.Fprintf(&s, "\n\t  mem operand at %#x: % x", c.memOff, c.in.Mem[c.memOff:c.memOff+f.size])
	}
	fmt.Fprintf(&s, "\n\t  rflags %s", native.FlagString(c.in.RFLAGS))
	return s.String()
}

// TestX87Differential runs every x87 form natively and in the emulator
// from random states and compares the results.
func TestX87Differential(t *testing.T) {
	if !native.Supported() {
		t.Skip("native execution not supported here")
	}
	n, seed := caseCount(t, "EMUX87", 3)
	t.Logf("seed %d (EMUX87_SEED), %d cases per form (EMUX87_N)", seed, n)
	v := newX87VM(t)
	g := &x87Gen{rng: rand.New(rand.NewSource(seed))}
	var forms []x87Form
	for _, f := range x87Forms() {
		if strings.HasPrefix(f.name, os.Getenv("EMUX87_FORM")) {
			forms = append(forms, f)
		}
	}
	type bad struct {
		fails int
		first string
	}
	bads := map[string]*bad{}
	cases, ulps, retried := 0, 0, 0
	for fi := range forms {
		f := &forms[fi]
		for i := 0; i < n; i++ {
			c := g.build(f)
			c.in.RFLAGS = uint64(g.rng.Intn(1<<12)) & native.ArithFlags
			cases++
			var nat, emu native.State
			var diffs []string
			for try := 0; try < 3; try++ {
				// A signal during the native run makes the kernel save and
				// restore the x87 state, and this host's XSAVE drops FOP,
				// FIP and FDP when no exception is pending: a mismatch is
				// retried before it counts.
				var fail string
				var ulp bool
				nat, emu, fail = runBoth(t, v, c.code, c.in, c.addrRegs)
				if fail != "" {
					diffs = []string{fail}
				} else {
					diffs, ulp = compareX87(f, &c, &nat, &emu)
				}
				if len(diffs) == 0 {
					if try > 0 {
						retried++
					}
					if ulp {
						ulps++
					}
					break
				}
			}
			if len(diffs) == 0 {
				continue
			}
			b := bads[f.name]
			if b == nil {
				b = &bad{first: fmt.Sprintf("%s\n\t%s", describe(&c, f), strings.Join(diffs, "\n\t"))}
				bads[f.name] = b
			}
			b.fails++
		}
	}
	t.Logf("x87: %d forms, %d cases, %d forms with mismatches; %d transcendental cases within one ulp of the host; %d cases agreed only when run again",
		len(forms), cases, len(bads), ulps, retried)
	names := make([]string, 0, len(bads))
	for k := range bads {
		names = append(names, k)
	}
	sort.Strings(names)
	for i, name := range names {
		if i == 40 {
			t.Errorf("%d more forms differ: %s", len(names)-40, strings.Join(names[40:], "; "))
			break
		}
		t.Errorf("%s: %d/%d cases differ; first:\n\t%s", name, bads[name].fails, n, bads[name].first)
	}
}

// probeX87 executes one encoding in the emulator from the initial x87
// state and reports whether it raised #UD.
func probeX87(t *testing.T, v *diffVM, code []byte) bool {
	t.Helper()
	xs := make([]byte, cpu.XSAVESize)
	copy(xs, native.DefaultFPU()[:])
	xs[512] = 3 // XSTATE_BV: x87 and SSE
	if err := v.c.SetXSAVE(xs); err != nil {
		t.Fatal(err)
	}
	c := &native.Case{Code: code, Regs: [16]uint64{native.RSI: 0x40}, AddrRegs: 1 << native.RSI}
	_, fail := v.run(c, false)
	return fail != "" && v.lastExit.Kind == cpu.ExitException && v.lastExit.Vector == 6
}

// TestX87DifferentialCoversDecoder enumerates every D8-DF encoding (each
// ModRM.reg digit with a memory operand, each register ModRM byte C0-FF)
// and checks that the emulator accepts exactly those not in x87UD and
// that TestX87Differential runs each accepted one.
func TestX87DifferentialCoversDecoder(t *testing.T) {
	v := newX87VM(t)
	covered := map[string]bool{}
	for _, f := range x87Forms() {
		if f.op == 0 {
			continue
		}
		if f.isMem() {
			covered[fmt.Sprintf("%02X /%d", f.op, f.modrm>>3&7)] = true
		} else {
			covered[fmt.Sprintf("%02X %02X", f.op, f.modrm)] = true
		}
	}
	accepted, ud := 0, 0
	for op := byte(0xd8); op <= 0xdf; op++ {
		var keys []string
		var codes [][]byte
		for d := 0; d < 8; d++ {
			keys = append(keys, fmt.Sprintf("%02X /%d", op, d))
			codes = append(codes, []byte{op, byte(0x06 | d<<3)})
		}
		for m := 0xc0; m <= 0xff; m++ {
			keys = append(keys, fmt.Sprintf("%02X %02X", op, m))
			codes = append(codes, []byte{op, byte(m)})
		}
		for i, k := range keys {
			isUD := probeX87(t, v, codes[i])
			switch {
			case isUD && !x87UD[k]:
				t.Errorf("%s (% x): #UD in the emulator, but this host executes it", k, codes[i])
			case !isUD && x87UD[k]:
				t.Errorf("%s (% x): accepted by the emulator, but must raise #UD", k, codes[i])
			case !isUD && !covered[k]:
				t.Errorf("%s (% x): accepted, but no form of TestX87Differential runs it", k, codes[i])
			}
			if isUD {
				ud++
			} else {
				accepted++
			}
		}
	}
	t.Logf("D8-DF: %d encodings (64 memory /digit forms, 512 register forms): %d accepted and run by the differential forms, %d #UD",
		8*8+8*64, accepted, ud)
}

// TestX87NativeUD confirms x87UD on this host: each encoding but fisttp
// (which this SSE3 host executes) must raise SIGILL natively, in a child
// process (this test again, with EMUX87_UD_CHILD naming the bytes to
// run), one process per encoding.
func TestX87NativeUD(t *testing.T) {
	if code := os.Getenv("EMUX87_UD_CHILD"); code != "" {
		var b []byte
		for _, s := range strings.Fields(code) {
			x, _ := strconv.ParseUint(s, 16, 8)
			b = append(b, byte(x))
		}
		st := native.State{Regs: [16]uint64{native.RSI: native.MemBase()}}
		native.Run(b, &st)
		fmt.Println("NO-FAULT") // the parent looks for SIGILL
		return
	}
	if !native.Supported() {
		t.Fatal("native execution is not supported on this linux/amd64 host")
	}
	for k := range x87UD {
		op, rest, _ := strings.Cut(k, " ")
		code := op + " " + rest
		if strings.HasPrefix(rest, "/") {
			d, _ := strconv.Atoi(rest[1:])
			if d == 1 && op != "D9" {
				continue // fisttp
			}
			code = fmt.Sprintf("%s %02x", op, 0x06|d<<3)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestX87NativeUD$")
		cmd.Env = append(os.Environ(), "EMUX87_UD_CHILD="+code, "GOTRACEBACK=single")
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), "SIGILL") {
			t.Errorf("%s: no SIGILL natively: %.200s", k, out)
		}
	}
}
