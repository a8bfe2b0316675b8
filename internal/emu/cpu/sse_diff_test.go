//go:build linux && amd64

// Differential tests of the MMX, SSE and SSE2 instructions: every form
// (opcode, mandatory prefix, register or memory operand) runs natively
// and in the emulator from the same random state, FXSAVE image included,
// and the XMM and MMX registers, MXCSR, the x87 status and tags, general
// registers, flags and Mem must agree bit for bit.
// Deeper runs: EMUSSE_N=2000 EMUSSE_SEED=7 go test -run SSEDifferential.

package cpu_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"sort"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/emu/cpu"
	"github.com/godwit-vmm/godwit/internal/emu/native"
	"github.com/godwit-vmm/godwit/internal/hv"
)

// Operand kinds of an SSE form's ModRM.reg and ModRM.rm register operands.
const (
	kX = iota + 1 // XMM register 0-15
	kM            // MMX register (REX bits ignored)
	kG            // general register
)

// sseForm is one instruction form: its mandatory prefix, opcode (0F op,
// with digit the ModRM.reg of the 0F 71-73 groups), operand kinds and
// memory operand, if any.
type sseForm struct {
	name    string
	pfx     byte // 0, 0x66, 0xf3, 0xf2
	op      byte
	digit   int // -1 unless a group
	reg, rm int // operand kinds; rm is for the register form
	memSize int // bytes of the memory form, 0 if register only
	aligned bool
	mem     bool // the memory form (else register)
	imm     bool
	rexW    bool // REX.W set (general register operands of 64 bits)
	approx  bool // rcp, rsqrt: results within tolerance
	noModRM bool // emms
}

func (f *sseForm) String() string {
	m := "reg"
	if f.mem {
		m = fmt.Sprintf("m%d", f.memSize*8)
	}
	w := ""
	if f.rexW {
		w = " rex.w"
	}
	return fmt.Sprintf("%s (%s)%s", f.name, m, w)
}

// regOnly is sseSpec.mem of an instruction without a memory form.
const regOnly = -1

// sseSpec is one instruction of sseSpecs; sseForms makes its register and
// memory forms.
type sseSpec struct {
	name    string
	pfx     byte
	op      byte
	digit   int  // ModRM.reg of the 0F 71-73 groups; 0 (made -1) for the rest
	reg, rm int  // operand kinds
	mem     int  // memory operand size, regOnly for none
	memOnly bool // no register form
	aligned bool // the memory operand must be 16-byte aligned
	imm     bool // takes an imm8 (random)
	rexW    bool // with REX.W (64-bit general register operand)
	approx  bool // rcp, rsqrt
}

// sseSpecs returns every MMX, SSE and SSE2 instruction of the 0F map.
func sseSpecs() []sseSpec {
	var s []sseSpec
	add := func(sp sseSpec) {
		if sp.digit == 0 {
			sp.digit = -1
		}
		s = append(s, sp)
	}
	// Packed floating point, and packed integers in their MMX and XMM forms.
	ps := func(name string, op byte, mem int, aligned bool) {
		add(sseSpec{name: name, op: op, reg: kX, rm: kX, mem: mem, aligned: aligned})
	}
	pd := func(name string, op byte, mem int, aligned bool) {
		add(sseSpec{name: name, pfx: 0x66, op: op, reg: kX, rm: kX, mem: mem, aligned: aligned})
	}
	ss := func(name string, op byte) { add(sseSpec{name: name, pfx: 0xf3, op: op, reg: kX, rm: kX, mem: 4}) }
	sd := func(name string, op byte) { add(sseSpec{name: name, pfx: 0xf2, op: op, reg: kX, rm: kX, mem: 8}) }

	ps("movups", 0x10, 16, false)
	pd("movupd", 0x10, 16, false)
	ss("movss", 0x10)
	sd("movsd", 0x10)
	ps("movups store", 0x11, 16, false)
	pd("movupd store", 0x11, 16, false)
	ss("movss store", 0x11)
	sd("movsd store", 0x11)
	ps("movlps/movhlps", 0x12, 8, false)
	add(sseSpec{name: "movlpd", pfx: 0x66, op: 0x12, reg: kX, mem: 8, memOnly: true})
	add(sseSpec{name: "movlps store", op: 0x13, reg: kX, mem: 8, memOnly: true})
	add(sseSpec{name: "movlpd store", pfx: 0x66, op: 0x13, reg: kX, mem: 8, memOnly: true})
	ps("unpcklps", 0x14, 16, true)
	pd("unpcklpd", 0x14, 16, true)
	ps("unpckhps", 0x15, 16, true)
	pd("unpckhpd", 0x15, 16, true)
	ps("movhps/movlhps", 0x16, 8, false)
	add(sseSpec{name: "movhpd", pfx: 0x66, op: 0x16, reg: kX, mem: 8, memOnly: true})
	add(sseSpec{name: "movhps store", op: 0x17, reg: kX, mem: 8, memOnly: true})
	add(sseSpec{name: "movhpd store", pfx: 0x66, op: 0x17, reg: kX, mem: 8, memOnly: true})
	ps("movaps", 0x28, 16, true)
	pd("movapd", 0x28, 16, true)
	ps("movaps store", 0x29, 16, true)
	pd("movapd store", 0x29, 16, true)
	add(sseSpec{name: "cvtpi2ps", op: 0x2a, reg: kX, rm: kM, mem: 8})
	add(sseSpec{name: "cvtpi2pd", pfx: 0x66, op: 0x2a, reg: kX, rm: kM, mem: 8})
	for _, w := range []bool{false, true} {
		m := 4
		if w {
			m = 8
		}
		add(sseSpec{name: "cvtsi2ss", pfx: 0xf3, op: 0x2a, reg: kX, rm: kG, mem: m, rexW: w})
		add(sseSpec{name: "cvtsi2sd", pfx: 0xf2, op: 0x2a, reg: kX, rm: kG, mem: m, rexW: w})
		for _, op := range []byte{0x2c, 0x2d} {
			t := map[byte]string{0x2c: "cvtt", 0x2d: "cvt"}[op]
			add(sseSpec{name: t + "ss2si", pfx: 0xf3, op: op, reg: kG, rm: kX, mem: 4, rexW: w})
			add(sseSpec{name: t + "sd2si", pfx: 0xf2, op: op, reg: kG, rm: kX, mem: 8, rexW: w})
		}
		add(sseSpec{name: "movd/movq mm, r/m", op: 0x6e, reg: kM, rm: kG, mem: m, rexW: w})
		add(sseSpec{name: "movd/movq xmm, r/m", pfx: 0x66, op: 0x6e, reg: kX, rm: kG, mem: m, rexW: w})
		add(sseSpec{name: "movd/movq r/m, mm", op: 0x7e, reg: kM, rm: kG, mem: m, rexW: w})
		add(sseSpec{name: "movd/movq r/m, xmm", pfx: 0x66, op: 0x7e, reg: kX, rm: kG, mem: m, rexW: w})
		add(sseSpec{name: "movnti", op: 0xc3, reg: kG, mem: m, memOnly: true, rexW: w})
	}
	add(sseSpec{name: "movntps", op: 0x2b, reg: kX, mem: 16, aligned: true, memOnly: true})
	add(sseSpec{name: "movntpd", pfx: 0x66, op: 0x2b, reg: kX, mem: 16, aligned: true, memOnly: true})
	for _, op := range []byte{0x2c, 0x2d} {
		t := map[byte]string{0x2c: "cvtt", 0x2d: "cvt"}[op]
		add(sseSpec{name: t + "ps2pi", op: op, reg: kM, rm: kX, mem: 8})
		add(sseSpec{name: t + "pd2pi", pfx: 0x66, op: op, reg: kM, rm: kX, mem: 16, aligned: true})
	}
	ps("ucomiss", 0x2e, 4, false)
	pd("ucomisd", 0x2e, 8, false)
	ps("comiss", 0x2f, 4, false)
	pd("comisd", 0x2f, 8, false)
	add(sseSpec{name: "movmskps", op: 0x50, reg: kG, rm: kX, mem: regOnly})
	add(sseSpec{name: "movmskpd", pfx: 0x66, op: 0x50, reg: kG, rm: kX, mem: regOnly})
	for _, a := range []struct {
		n  string
		op byte
	}{{"sqrt", 0x51}, {"add", 0x58}, {"mul", 0x59}, {"sub", 0x5c}, {"min", 0x5d}, {"div", 0x5e}, {"max", 0x5f}} {
		ps(a.n+"ps", a.op, 16, true)
		pd(a.n+"pd", a.op, 16, true)
		ss(a.n+"ss", a.op)
		sd(a.n+"sd", a.op)
	}
	add(sseSpec{name: "rsqrtps", op: 0x52, reg: kX, rm: kX, mem: 16, aligned: true, approx: true})
	add(sseSpec{name: "rsqrtss", pfx: 0xf3, op: 0x52, reg: kX, rm: kX, mem: 4, approx: true})
	add(sseSpec{name: "rcpps", op: 0x53, reg: kX, rm: kX, mem: 16, aligned: true, approx: true})
	add(sseSpec{name: "rcpss", pfx: 0xf3, op: 0x53, reg: kX, rm: kX, mem: 4, approx: true})
	for i, n := range []string{"and", "andn", "or", "xor"} {
		ps(n+"ps", 0x54+byte(i), 16, true)
		pd(n+"pd", 0x54+byte(i), 16, true)
	}
	ps("cvtps2pd", 0x5a, 8, false)
	pd("cvtpd2ps", 0x5a, 16, true)
	ss("cvtss2sd", 0x5a)
	sd("cvtsd2ss", 0x5a)
	ps("cvtdq2ps", 0x5b, 16, true)
	pd("cvtps2dq", 0x5b, 16, true)
	add(sseSpec{name: "cvttps2dq", pfx: 0xf3, op: 0x5b, reg: kX, rm: kX, mem: 16, aligned: true})
	pd("cvttpd2dq", 0xe6, 16, true)
	add(sseSpec{name: "cvtdq2pd", pfx: 0xf3, op: 0xe6, reg: kX, rm: kX, mem: 8})
	add(sseSpec{name: "cvtpd2dq", pfx: 0xf2, op: 0xe6, reg: kX, rm: kX, mem: 16, aligned: true})

	for op := 0x60; op <= 0xfe; op++ {
		if !packedIntOp(byte(op)) {
			continue
		}
		n := fmt.Sprintf("0F %02X", op)
		add(sseSpec{name: n + " mm", op: byte(op), reg: kM, rm: kM, mem: 8})
		pd(n+" xmm", byte(op), 16, true)
	}
	pd("punpcklqdq", 0x6c, 16, true)
	pd("punpckhqdq", 0x6d, 16, true)
	add(sseSpec{name: "movq mm, mm/m64", op: 0x6f, reg: kM, rm: kM, mem: 8})
	pd("movdqa", 0x6f, 16, true)
	add(sseSpec{name: "movdqu", pfx: 0xf3, op: 0x6f, reg: kX, rm: kX, mem: 16})
	add(sseSpec{name: "movq mm/m64, mm", op: 0x7f, reg: kM, rm: kM, mem: 8})
	pd("movdqa store", 0x7f, 16, true)
	add(sseSpec{name: "movdqu store", pfx: 0xf3, op: 0x7f, reg: kX, rm: kX, mem: 16})
	add(sseSpec{name: "movq xmm, xmm/m64", pfx: 0xf3, op: 0x7e, reg: kX, rm: kX, mem: 8})
	add(sseSpec{name: "pshufw", op: 0x70, reg: kM, rm: kM, mem: 8, imm: true})
	add(sseSpec{name: "pshufd", pfx: 0x66, op: 0x70, reg: kX, rm: kX, mem: 16, aligned: true, imm: true})
	add(sseSpec{name: "pshufhw", pfx: 0xf3, op: 0x70, reg: kX, rm: kX, mem: 16, aligned: true, imm: true})
	add(sseSpec{name: "pshuflw", pfx: 0xf2, op: 0x70, reg: kX, rm: kX, mem: 16, aligned: true, imm: true})
	for _, g := range []struct {
		op     byte
		digits []int
		xmm    []int // 66 only
	}{{0x71, []int{2, 4, 6}, nil}, {0x72, []int{2, 4, 6}, nil}, {0x73, []int{2, 6}, []int{3, 7}}} {
		for _, d := range g.digits {
			n := fmt.Sprintf("0F %02X /%d", g.op, d)
			add(sseSpec{name: n + " mm", op: g.op, digit: d, rm: kM, mem: regOnly, imm: true})
			add(sseSpec{name: n + " xmm", pfx: 0x66, op: g.op, digit: d, rm: kX, mem: regOnly, imm: true})
		}
		for _, d := range g.xmm {
			add(sseSpec{name: fmt.Sprintf("0F %02X /%d xmm", g.op, d), pfx: 0x66, op: g.op, digit: d, rm: kX, mem: regOnly, imm: true})
		}
	}
	for _, p := range []byte{0, 0x66, 0xf3, 0xf2} {
		add(sseSpec{name: "cmp" + map[byte]string{0: "ps", 0x66: "pd", 0xf3: "ss", 0xf2: "sd"}[p], pfx: p, op: 0xc2,
			reg: kX, rm: kX, mem: map[byte]int{0: 16, 0x66: 16, 0xf3: 4, 0xf2: 8}[p], aligned: p == 0 || p == 0x66, imm: true})
	}
	add(sseSpec{name: "pinsrw mm", op: 0xc4, reg: kM, rm: kG, mem: 2, imm: true})
	add(sseSpec{name: "pinsrw xmm", pfx: 0x66, op: 0xc4, reg: kX, rm: kG, mem: 2, imm: true})
	add(sseSpec{name: "pextrw mm", op: 0xc5, reg: kG, rm: kM, mem: regOnly, imm: true})
	add(sseSpec{name: "pextrw xmm", pfx: 0x66, op: 0xc5, reg: kG, rm: kX, mem: regOnly, imm: true})
	add(sseSpec{name: "shufps", op: 0xc6, reg: kX, rm: kX, mem: 16, aligned: true, imm: true})
	add(sseSpec{name: "shufpd", pfx: 0x66, op: 0xc6, reg: kX, rm: kX, mem: 16, aligned: true, imm: true})
	add(sseSpec{name: "movq xmm/m64, xmm", pfx: 0x66, op: 0xd6, reg: kX, rm: kX, mem: 8})
	add(sseSpec{name: "movq2dq", pfx: 0xf3, op: 0xd6, reg: kX, rm: kM, mem: regOnly})
	add(sseSpec{name: "movdq2q", pfx: 0xf2, op: 0xd6, reg: kM, rm: kX, mem: regOnly})
	add(sseSpec{name: "pmovmskb mm", op: 0xd7, reg: kG, rm: kM, mem: regOnly})
	add(sseSpec{name: "pmovmskb xmm", pfx: 0x66, op: 0xd7, reg: kG, rm: kX, mem: regOnly})
	add(sseSpec{name: "movntq", op: 0xe7, reg: kM, mem: 8, memOnly: true})
	add(sseSpec{name: "movntdq", pfx: 0x66, op: 0xe7, reg: kX, mem: 16, aligned: true, memOnly: true})
	add(sseSpec{name: "maskmovq", op: 0xf7, reg: kM, rm: kM, mem: regOnly})
	add(sseSpec{name: "maskmovdqu", pfx: 0x66, op: 0xf7, reg: kX, rm: kX, mem: regOnly})
	return s
}

// packedIntOp mirrors the emulator's list of packed integer opcodes with
// an MMX and an XMM form.
func packedIntOp(b byte) bool {
	switch {
	case b >= 0x60 && b <= 0x6b, b >= 0x74 && b <= 0x76, b >= 0xd1 && b <= 0xd5, b >= 0xd8 && b <= 0xe5,
		b >= 0xe8 && b <= 0xef, b >= 0xf1 && b <= 0xf6, b >= 0xf8 && b <= 0xfe:
		return true
	}
	return false
}

// sseForms expands the specs into forms: register and memory operand.
func sseForms() []sseForm {
	var fs []sseForm
	for _, sp := range sseSpecs() {
		f := sseForm{name: sp.name, pfx: sp.pfx, op: sp.op, digit: sp.digit, reg: sp.reg, rm: sp.rm,
			aligned: sp.aligned, imm: sp.imm, rexW: sp.rexW, approx: sp.approx}
		if !sp.memOnly {
			fs = append(fs, f)
		}
		if sp.mem != regOnly {
			f.mem, f.memSize = true, sp.mem
			fs = append(fs, f)
		}
	}
	return append(fs, sseForm{name: "emms", op: 0x77, digit: -1, noModRM: true})
}

// Registers that hold Mem offsets: the memory operand's base (RSI, or R14
// with REX.B) and maskmov's RDI; general register operands avoid them.
const sseAddrRegs = 1<<native.RSI | 1<<native.R14 | 1<<native.RDI

// sseCase is one generated test: code and input state.
type sseCase struct {
	code []byte
	in   native.State
}

// gen builds a random case of form f.
func (f *sseForm) gen(rng *rand.Rand) sseCase {
	var c sseCase
	st := &c.in
	vals := newValueGen(rng)
	for i := range st.Regs {
		st.Regs[i] = vals.gpr()
	}
	st.RFLAGS = rng.Uint64() & native.StateFlags &^ native.FlagDF
	for i := 0; i < native.MemSize; i += 8 {
		binary.LittleEndian.PutUint64(st.Mem[i:], vals.lane())
	}
	st.FPU = randomFPU(rng, vals)

	var code []byte
	switch f.pfx {
	case 0:
	case 0xf3, 0xf2:
		// 66 is ignored beside F3/F2, and the last of F2/F3 counts.
		switch rng.Intn(6) {
		case 0:
			code = append(code, 0x66)
		case 1:
			code = append(code, f.pfx^0x01) // F2 <-> F3
		}
		code = append(code, f.pfx)
	default:
		code = append(code, f.pfx)
	}
	if f.noModRM {
		c.code = append(code, 0x0f, f.op)
		return c
	}
	pick := func(kind int) int {
		switch kind {
		case kX:
			return rng.Intn(16)
		case kM:
			return rng.Intn(16) // REX.R/REX.B do not change the MMX register
		case kG:
			for {
				r := rng.Intn(16)
				if r != native.RSP && sseAddrRegs&(1<<r) == 0 {
					return r
				}
			}
		}
		return 0
	}
	reg := f.digit
	if reg < 0 {
		reg = pick(f.reg)
	}
	var rm, modrm int
	if f.mem {
		rm = 6 // [rsi], or [r14] with REX.B
		if rng.Intn(2) == 0 {
			rm = 14
		}
		off := rng.Intn(native.MemSize - f.memSize + 1)
		if f.aligned {
			off &^= 15
		}
		st.Regs[native.RSI], st.Regs[native.R14] = uint64(off), uint64(off)
		modrm = 0x00 | (reg&7)<<3 | rm&7
	} else {
		rm = pick(f.rm)
		modrm = 0xc0 | (reg&7)<<3 | rm&7
	}
	st.Regs[native.RDI] = uint64(rng.Intn(native.MemSize - 16 + 1))
	rex := 0x40 | (reg>>3&1)<<2 | rm>>3&1
	if f.rexW {
		rex |= 8
	}
	if f.digit >= 0 {
		rex &^= 4 // the digit is not a register
		if rng.Intn(2) == 0 {
			rex |= 4 // REX.R does not change the digit
		}
	}
	if rex != 0x40 || rng.Intn(4) == 0 {
		code = append(code, byte(rex))
	}
	code = append(code, 0x0f, f.op, byte(modrm))
	if f.imm {
		code = append(code, byte(rng.Intn(256)))
	}
	c.code = code
	return c
}

// randomFPU returns an FXSAVE64 image: x87 control word with every
// exception masked, a random TOP and tag word (no exception pending),
// random MMX/x87 registers, MXCSR with random rounding, FTZ, DAZ and
// sticky flags (every exception masked), random XMM registers.
func randomFPU(rng *rand.Rand, vals *valueGen) *[512]byte {
	var b [512]byte
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0x037f)
	le.PutUint16(b[2:], uint16(rng.Intn(8))<<11)
	b[4] = byte(rng.Intn(256))
	mx := uint32(0x1f80) | uint32(rng.Intn(4))<<13
	if rng.Intn(4) == 0 {
		mx |= 1 << 15 // FTZ
	}
	if rng.Intn(4) == 0 {
		mx |= 1 << 6 // DAZ
	}
	if rng.Intn(2) == 0 {
		mx |= uint32(rng.Intn(64))
	}
	le.PutUint32(b[24:], mx)
	for i := 0; i < 8; i++ {
		le.PutUint64(b[32+16*i:], vals.lane())
		le.PutUint16(b[40+16*i:], uint16(rng.Intn(0x10000)))
	}
	for i := 0; i < 32; i++ {
		le.PutUint64(b[160+8*i:], vals.lane())
	}
	return &b
}

// valueGen draws operand values that favour the special cases: zeros,
// denormals, infinities, NaNs with payloads, extremes, values near the
// integer conversion limits and rounding ties, and values close to one
// another (a per-case pool) so that sums cancel and results land near
// the underflow and overflow thresholds.
type valueGen struct {
	rng  *rand.Rand
	pool [4]uint64 // doubles
}

func newValueGen(rng *rand.Rand) *valueGen {
	v := &valueGen{rng: rng}
	for i := range v.pool {
		v.pool[i] = v.f64()
	}
	return v
}

var specialF32 = []uint32{
	0, 0x80000000, 1, 0x80000001, 0x007fffff, 0x807fffff, 0x00400000, 0x00800000, 0x80800000, 0x00800001,
	0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7fc00001, 0x7f800001, 0xff800001, 0x7fbfffff, 0x7fa5a5a5,
	0x7f7fffff, 0xff7fffff, 0x3f800000, 0xbf800000, 0x3f000000, 0x3fc00000, 0x40200000, 0xbfc00000, 0xbf000000,
	0x4f000000, 0x4effffff, 0xcf000000, 0xcf000001, 0xceffffff, 0x5f000000, 0x5effffff, 0xdf000000, 0xdf000001,
	0x5f800000, 0x1f800000, 0x20000000, 0x1fffffff, 0x3f800001, 0x3f7fffff, 0x0c000000, 0x34000000,
}

var specialF64 = []uint64{
	0, 1 << 63, 1, 1<<63 | 1, 0x000fffffffffffff, 0x800fffffffffffff, 0x0008000000000000, 0x0010000000000000,
	0x8010000000000000, 0x0010000000000001, 0x7ff0000000000000, 0xfff0000000000000, 0x7ff8000000000000,
	0xfff8000000000000, 0x7ff8000000000001, 0x7ff0000000000001, 0xfff0000000000001, 0x7ff7ffffffffffff,
	0x7ff5a5a5a5a5a5a5, 0x7fefffffffffffff, 0xffefffffffffffff, 0x3ff0000000000000, 0xbff0000000000000,
	0x3fe0000000000000, 0x3ff8000000000000, 0x4004000000000000, 0xbff8000000000000, 0x41dfffffffc00000,
	0x41dfffffffe00000, 0x41e0000000000000, 0xc1e0000000000000, 0xc1e0000000100000, 0xc1e0000000200000,
	0x43e0000000000000, 0x43dfffffffffffff, 0xc3e0000000000000, 0xc3e0000000000001, 0x47efffffe0000000,
	0x47effffff0000000, 0x36a0000000000000, 0x369fffffffffffff, 0x3810000000000000, 0x380fffffffffffff,
	0x1ff0000000000000, 0x2000000000000000, 0x5ff0000000000000, 0x3ff0000000000001, 0x3fefffffffffffff,
}

// f64 returns a double: special, near the pool, or random.
func (v *valueGen) f64() uint64 {
	r := v.rng
	switch r.Intn(8) {
	case 0, 1:
		return specialF64[r.Intn(len(specialF64))]
	case 2, 3:
		x := v.pool[r.Intn(len(v.pool))]
		switch r.Intn(4) {
		case 0:
			return x ^ 1<<63
		case 1:
			return x + uint64(r.Intn(5)) - 2
		case 2:
			return x + uint64(r.Intn(64)-32)<<52 // rescaled
		}
		return x ^ uint64(r.Int63n(1<<20))
	case 4:
		return r.Uint64()
	case 5: // near the single range: exercises cvtsd2ss and friends
		return uint64(r.Intn(2))<<63 | uint64(1023+r.Intn(300)-150)<<52 | r.Uint64()>>12
	case 6: // small integers and halves
		return math.Float64bits(float64(r.Intn(64)-32) / 2)
	}
	return uint64(r.Intn(2))<<63 | uint64(1023+r.Intn(2100)-1050)<<52&0x7ff0000000000000 | r.Uint64()>>12
}

// f32 returns a single, drawn like f64.
func (v *valueGen) f32() uint32 {
	r := v.rng
	switch r.Intn(6) {
	case 0, 1:
		return specialF32[r.Intn(len(specialF32))]
	case 2:
		return r.Uint32()
	case 3:
		return math.Float32bits(float32(r.Intn(64)-32) / 2)
	}
	d := v.f64()
	e := int(d>>52&0x7ff) - 1023
	// Fold the double's exponent into the single range, keeping its top
	// fraction bits and sign.
	e = (e+200)%300 - 150
	if e < -150 {
		e += 300
	}
	be := uint32(max(min(e+127, 255), 0))
	return uint32(d>>63)<<31 | be<<23 | uint32(d>>29)&0x7fffff
}

// lane returns 64 bits of register or memory content: two singles, a
// double, or integer patterns.
func (v *valueGen) lane() uint64 {
	r := v.rng
	switch r.Intn(5) {
	case 0, 1:
		return uint64(v.f32()) | uint64(v.f32())<<32
	case 2:
		return v.f64()
	case 3: // bytes and words at the saturation limits
		var x uint64
		pats := []uint64{0, 0xff, 0x80, 0x7f, 0x01, 0xfe}
		for i := 0; i < 64; i += 8 {
			if r.Intn(2) == 0 {
				x |= pats[r.Intn(len(pats))] << i
			} else {
				x |= uint64(r.Intn(256)) << i
			}
		}
		return x
	}
	return r.Uint64()
}

// gpr returns a general register value: an integer near a limit, a
// double's or single's bits, or random bits.
func (v *valueGen) gpr() uint64 {
	r := v.rng
	switch r.Intn(4) {
	case 0:
		lims := []uint64{0, 1, ^uint64(0), 1 << 31, 1<<31 - 1, 1 << 63, 1<<63 - 1, 1 << 24, 1<<24 + 1, 1 << 53, 1<<53 + 1,
			0xffffffff80000000, 0x00000000ffffffff}
		return lims[r.Intn(len(lims))] + uint64(r.Intn(3)) - 1
	case 1:
		return v.lane()
	}
	return r.Uint64()
}

// sseCompare returns the differences between the native and emulated
// outputs: general registers, flags, Mem, and the FXSAVE images (FCW, FSW,
// tag word, MXCSR, x87/MMX registers, XMM registers; FOP, FIP and FDP,
// which this AMD host saves only while FSW.ES is set, are compared then
// only; MXCSR_MASK differs by design).
func sseCompare(f *sseForm, nat, emu *native.State) []string {
	var d []string
	for r := 0; r < 16; r++ {
		if r != native.RSP && nat.Regs[r] != emu.Regs[r] {
			d = append(d, fmt.Sprintf("%s: native %#x, emulator %#x", native.RegName(r), nat.Regs[r], emu.Regs[r]))
		}
	}
	if nat.RFLAGS != emu.RFLAGS {
		d = append(d, fmt.Sprintf("flags: native %s, emulator %s", native.FlagString(nat.RFLAGS), native.FlagString(emu.RFLAGS)))
	}
	for i := range nat.Mem {
		if nat.Mem[i] != emu.Mem[i] {
			d = append(d, fmt.Sprintf("Mem[%d:%d]: native % x, emulator % x", i&^7, i&^7+8, nat.Mem[i&^7:i&^7+8], emu.Mem[i&^7:i&^7+8]))
			break
		}
	}
	a, b := nat.FPU, emu.FPU
	le := binary.LittleEndian
	field := func(name string, lo, hi int) {
		for i := lo; i < hi; i++ {
			if a[i] != b[i] {
				d = append(d, fmt.Sprintf("%s: native % x, emulator % x", name, a[lo:hi], b[lo:hi]))
				return
			}
		}
	}
	field("FCW", 0, 2)
	field("FSW", 2, 4)
	field("FTW", 4, 6)
	if le.Uint16(a[2:])&0x80 != 0 {
		field("FOP/FIP/FDP", 6, 24)
	}
	field("MXCSR", 24, 28)
	for i := 0; i < 8; i++ {
		field(fmt.Sprintf("ST%d/MM", i), 32+16*i, 42+16*i)
	}
	for i := 0; i < 16; i++ {
		o := 160 + 16*i
		if f.approx {
			for l := 0; l < 4; l++ {
				x, y := le.Uint32(a[o+4*l:]), le.Uint32(b[o+4*l:])
				if !approxEqual(x, y) {
					d = append(d, fmt.Sprintf("XMM%d lane %d: native %#08x, emulator %#08x (beyond tolerance)", i, l, x, y))
				}
			}
			continue
		}
		field(fmt.Sprintf("XMM%d", i), o, o+16)
	}
	return d
}

// approxEqual compares rcp/rsqrt results: equal bits, or both normal
// singles of one sign within a relative 2^-11. Each vendor's table gives
// its own bits (the architecture bounds the error by 1.5*2^-12 of the
// exact value; two conforming results are within 3*2^-12 < 2^-11).
func approxEqual(x, y uint32) bool {
	if x == y {
		return true
	}
	ex, ey := x>>23&0xff, y>>23&0xff
	if x>>31 != y>>31 || ex == 0 || ey == 0 || ex == 0xff || ey == 0xff {
		return false
	}
	fx, fy := float64(math.Float32frombits(x)), float64(math.Float32frombits(y))
	return math.Abs(fx-fy) <= math.Abs(fx)*0x1p-11
}

// TestSSEDifferential runs every MMX, SSE and SSE2 form natively and in
// the emulator and compares the results.
func TestSSEDifferential(t *testing.T) {
	if !native.Supported() {
		t.Skip("native execution not supported here")
	}
	n, seed := caseCount(t, "EMUSSE", 10)
	v := newDiffVM(t)
	rng := rand.New(rand.NewSource(seed))
	forms := sseForms()
	bad := map[string]int{}
	first := map[string]string{}
	for i := range forms {
		f := &forms[i]
		for k := 0; k < n; k++ {
			c := f.gen(rng)
			nat, emu, fail := runBoth(t, v, c.code, c.in, sseAddrRegs)
			var diffs []string
			if fail != "" {
				diffs = []string{fail}
			} else {
				diffs = sseCompare(f, &nat, &emu)
			}
			if len(diffs) == 0 {
				continue
			}
			name := f.String()
			bad[name]++
			if _, ok := first[name]; !ok {
				first[name] = fmt.Sprintf("% x: %s\n\tinput: %s", c.code, strings.Join(diffs, "\n\t"), describeInput(&c))
			}
		}
	}
	t.Logf("%d forms, %d cases each", len(forms), n)
	names := make([]string, 0, len(bad))
	for k := range bad {
		names = append(names, k)
	}
	sort.Strings(names)
	for i, k := range names {
		if i == 60 {
			t.Errorf("%d more forms differ", len(names)-60)
			break
		}
		t.Errorf("%s: %d/%d cases differ; first: %s", k, bad[k], n, first[k])
	}
}

// describeInput formats the input state an SSE case depends on.
func describeInput(c *sseCase) string {
	var b strings.Builder
	le := binary.LittleEndian
	img := c.in.FPU
	fmt.Fprintf(&b, "MXCSR=%#x FSW=%#x FTW=%#x", le.Uint32(img[24:]), le.Uint16(img[2:]), img[4])
	for i := 0; i < 16; i++ {
		fmt.Fprintf(&b, "\n\t  xmm%d=%016x_%016x", i, le.Uint64(img[168+16*i:]), le.Uint64(img[160+16*i:]))
	}
	for i := 0; i < 8; i++ {
		fmt.Fprintf(&b, "\n\t  st%d=%04x_%016x", i, le.Uint16(img[40+16*i:]), le.Uint64(img[32+16*i:]))
	}
	fmt.Fprintf(&b, "\n\t  regs: %s", c.in.String())
	if off := c.in.Regs[native.RSI]; off <= native.MemSize-16 {
		fmt.Fprintf(&b, "\n\t  Mem[rsi]=% x", c.in.Mem[off:off+16])
	}
	return b.String()
}

// mustUD are the encodings this host accepts that the emulator must
// reject: SSE3 (movsldup, movddup, movshdup, haddpd/ps, hsubpd/ps,
// addsubpd/ps, lddqu) and SSE4a (extrq, insertq, movntss, movntsd), as
// its CPUID advertises neither. Each is "prefix opcode", with "r" or "m"
// for the operand forms concerned.
var mustUD = []string{
	"f3 12 rm", "f2 12 rm", "f3 16 rm",
	"66 7c rm", "f2 7c rm", "66 7d rm", "f2 7d rm", "66 d0 rm", "f2 d0 rm", "f2 f0 m",
	"66 78 r", "f2 78 r", "66 79 r", "f2 79 r", "f3 2b m", "f2 2b m",
}

// sseKey names one probed encoding.
type sseKey struct {
	pfx   byte
	op    byte
	digit int
	mem   bool
}

func (k sseKey) String() string {
	s := fmt.Sprintf("%02x 0F %02X", k.pfx, k.op)
	if k.digit >= 0 {
		s += fmt.Sprintf(" /%d", k.digit)
	}
	if k.mem {
		return s + " (memory)"
	}
	return s + " (register)"
}

// TestSSEDifferentialCoversDecoder enumerates every opcode of the 0F map
// that execSSE owns (and 0F 77), with each mandatory prefix and a
// register and a memory ModRM (each /digit of 0F 71-73), and probes
// which the emulator accepts (runs without #UD) with SSE enabled. Every
// accepted encoding must be a form of TestSSEDifferential, every form must
// be accepted, and the reviewed mustUD encodings, which this host runs,
// must be rejected; so must the whole 0F 38 and 0F 3A maps but movbe.
func TestSSEDifferentialCoversDecoder(t *testing.T) {
	v := newDiffVM(t)
	probe := func(code []byte) bool {
		v.mem.WritePhys(diffCode, append(append([]byte(nil), code...), make([]byte, 16)...))
		v.c.SetRegs(hv.Regs{RIP: diffCode, RSP: diffRSP, RFLAGS: 2, RSI: diffMem, RDI: diffMem, R14: diffMem})
		ex := v.c.Step()
		if ex.Kind == cpu.ExitInternalError {
			t.Errorf("% x: internal error: %s", code, ex.Reason)
		}
		return !(ex.Kind == cpu.ExitException && ex.Vector == 6)
	}
	forms := map[sseKey]bool{}
	for _, f := range sseForms() {
		forms[sseKey{f.pfx, f.op, f.digit, f.mem}] = true
	}
	accepted := map[sseKey]bool{}
	tried := 0
	for op := 0x10; op <= 0xff; op++ {
		if !sseOwned(byte(op)) {
			continue
		}
		digits := []int{-1}
		if op >= 0x71 && op <= 0x73 {
			digits = []int{0, 1, 2, 3, 4, 5, 6, 7}
		}
		for _, p := range []byte{0, 0x66, 0xf3, 0xf2} {
			for _, d := range digits {
				for _, mem := range []bool{false, true} {
					k := sseKey{p, byte(op), d, mem}
					if op == 0x77 && mem {
						continue
					}
					code := []byte{}
					if p != 0 {
						code = append(code, p)
					}
					code = append(code, 0x0f, byte(op))
					if op != 0x77 {
						modrm := byte(0xc1)
						if mem {
							modrm = 0x06
						}
						if d >= 0 {
							modrm |= byte(d) << 3
						}
						code = append(code, modrm, 0x01)
					}
					tried++
					if probe(code) {
						accepted[k] = true
					}
				}
			}
		}
	}
	for k := range accepted {
		if !forms[k] {
			t.Errorf("%v: accepted by the emulator but not a differential form", k)
		}
	}
	for k := range forms {
		if !accepted[k] {
			t.Errorf("%v: a differential form the emulator rejects", k)
		}
	}
	for _, s := range mustUD {
		var p, op byte
		var which string
		fmt.Sscanf(s, "%x %x %s", &p, &op, &which)
		for _, mem := range []bool{false, true} {
			if strings.Contains(which, map[bool]string{false: "r", true: "m"}[mem]) && accepted[sseKey{p, op, -1, mem}] {
				t.Errorf("%s: accepted, but it is SSE3 or SSE4a and must raise #UD", s)
			}
		}
	}
	for _, m := range []byte{0x38, 0x3a} {
		for op := 0; op < 256; op++ {
			if m == 0x38 && (op == 0xf0 || op == 0xf1) {
				continue // movbe
			}
			for _, p := range []byte{0, 0x66, 0xf3, 0xf2} {
				code := []byte{0x0f, m, byte(op), 0xc1, 0x01, 0x01}
				if p != 0 {
					code = append([]byte{p}, code...)
				}
				if probe(code) {
					t.Errorf("% x: accepted; the 0F %02X map (SSSE3, SSE4) must raise #UD", code, m)
				}
			}
		}
	}
	t.Logf("probed %d encodings of the 0F map: %d accepted, %d forms in the differential test", tried, len(accepted), len(forms))
}

// sseOwned reports the 0F opcodes of the MMX/SSE space: those execSSE
// executes (isSSEOp) and emms.
func sseOwned(b byte) bool {
	return b >= 0x10 && b <= 0x17 || b >= 0x28 && b <= 0x2f || b >= 0x50 && b <= 0x7f || b >= 0xc2 && b <= 0xc6 || b >= 0xd0
}
