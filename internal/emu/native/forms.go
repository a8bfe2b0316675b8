package native

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// A Form is one encoding shape of one instruction: opcode, operand size,
// 8-bit register naming (with or without REX), operand class (register or
// one memory addressing mode) and lock/rep prefix. Form.Case fills in
// random registers and operands.
type Form struct {
	Name  string // e.g. "add r/m32, r32 [base+disp8] lock"
	Class string // instruction group, e.g. "alu", "shift", "string"
	// Addr32: the form uses 32-bit addressing (67 prefix) or a 32-bit
	// absolute address, so Mem must lie below 4 GiB on both sides
	// (natively: MemBase()+MemSize <= 1<<32; Run maps it below 2 GiB when
	// it can, which sign-extended 32-bit displacements need).
	Addr32 bool
	t      tmpl
}

// A Case is one concrete test: code bytes and the input state.
//
// Registers in AddrRegs hold offsets into Mem rather than addresses: before
// running, the harness adds the address of its copy of Mem (native: MemBase,
// emulator: the guest address of Mem), and subtracts it again from the
// outputs before comparing (string instructions advance RSI/RDI, so the
// same subtraction keeps them comparable). Every other register holds the
// same value on both sides.
type Case struct {
	Name   string
	Code   []byte
	Regs   [16]uint64 // Regs[RSP] unused
	RFLAGS uint64     // StateFlags only
	Mem    [MemSize]byte

	AddrRegs uint16 // registers holding Mem offsets on input (bit r for register r)
	// OutAddrRegs: registers holding Mem offsets on output (usually
	// AddrRegs; enter makes RBP one, leave turns RBP into data; zero means
	// AddrRegs). RSP is compared only if it is one of them (stack forms pin
	// RSP into Mem).
	OutAddrRegs uint16
	Exempt      uint16 // registers whose result is architecturally undefined
	UndefFlags  uint64 // flags whose result is undefined (AMD)
	Rep         bool   // a rep-prefixed string instruction: may take several steps
	// BaseReg and IndexReg are the memory operand's base and index
	// registers, -1 if none. The base is in AddrRegs; the index holds a
	// plain value (possibly negative or huge: the base compensates).
	BaseReg, IndexReg int
	// Relocs are the fields of Code that hold Mem offsets standing for
	// addresses (absolute and RIP-relative operands, moffs): run Link's
	// result, not Code, where Relocs is not empty.
	Relocs []Reloc
	// Focus is the offset in Code of the instruction the form tests (the
	// rest sets up or checks its result: chains, branches, call/jmp).
	Focus int
}

// A Reloc is a little-endian field of Case.Code holding a Mem offset that
// Link turns into an address.
type Reloc struct {
	Off  int  // position in Code
	Size int  // 4 or 8 bytes
	RIP  bool // RIP-relative: relative to the code address of End
	End  int  // RIP: the offset in Code of the next instruction
	// Zext: a 32-bit absolute address that is zero-extended (32-bit
	// addressing) rather than sign-extended.
	Zext bool
}

// Link returns Code for code placed at codeAddr and Mem at memBase: each
// Reloc's Mem offset becomes the address (or RIP-relative displacement)
// of that Mem byte. It panics if an address does not fit its field (Mem
// or the code too far away).
func (c *Case) Link(codeAddr, memBase uint64) []byte {
	if len(c.Relocs) == 0 {
		return c.Code
	}
	code := append([]byte(nil), c.Code...)
	for _, r := range c.Relocs {
		var b [8]byte
		copy(b[:r.Size], code[r.Off:r.Off+r.Size])
		v := binary.LittleEndian.Uint64(b[:])
		if r.Size == 4 {
			v = uint64(int64(int32(v)))
		}
		v += memBase
		if r.RIP {
			v -= codeAddr + uint64(r.End)
		}
		if r.Size == 4 {
			ok := int64(v) == int64(int32(v))
			if r.Zext && !r.RIP {
				ok = v>>32 == 0
			}
			if !ok {
				panic(fmt.Sprintf("native: %s: address %#x does not fit a 32-bit field (code at %#x, Mem at %#x)",
					c.Name, v, codeAddr, memBase))
			}
		}
		binary.LittleEndian.PutUint64(b[:], v)
		copy(code[r.Off:r.Off+r.Size], b[:r.Size])
	}
	return code
}

func (c *Case) outAddr() uint16 {
	if c.OutAddrRegs != 0 {
		return c.OutAddrRegs
	}
	return c.AddrRegs
}

// Input returns the state to run the case with, Mem placed at memBase.
func (c *Case) Input(memBase uint64) State {
	st := State{Regs: c.Regs, RFLAGS: c.RFLAGS, Mem: c.Mem}
	for r := 0; r < 16; r++ {
		if c.AddrRegs&(1<<r) != 0 {
			st.Regs[r] += memBase
		}
	}
	return st
}

// Normalize turns an output state produced with Mem at memBase back into
// the case's address-independent form (OutAddrRegs as Mem offsets).
func (c *Case) Normalize(st *State, memBase uint64) {
	out := c.outAddr()
	for r := 0; r < 16; r++ {
		if out&(1<<r) != 0 {
			st.Regs[r] -= memBase
		}
	}
}

// Diff compares two normalized output states of the case: every register but
// RSP and the Exempt ones, the StateFlags except UndefFlags, and Mem. It
// returns one line per difference (empty when they agree); a is labelled
// "native" and b "emu".
func (c *Case) Diff(a, b *State) []string {
	var d []string
	for r := 0; r < 16; r++ {
		if r == RSP && c.outAddr()&(1<<RSP) == 0 || c.Exempt&(1<<r) != 0 {
			continue
		}
		if a.Regs[r] != b.Regs[r] {
			d = append(d, fmt.Sprintf("%s: native %#x emu %#x", regNames[r], a.Regs[r], b.Regs[r]))
		}
	}
	mask := uint64(StateFlags) &^ c.UndefFlags
	if fa, fb := a.RFLAGS&mask, b.RFLAGS&mask; fa != fb {
		d = append(d, fmt.Sprintf("flags (compared %s): native %s emu %s", FlagString(mask), FlagString(fa), FlagString(fb)))
	}
	for i := 0; i < MemSize; i++ {
		if a.Mem[i] != b.Mem[i] {
			j := i
			for j < MemSize && j < i+16 && a.Mem[j] != b.Mem[j] {
				j++
			}
			d = append(d, fmt.Sprintf("mem[%d:%d]: native % x emu % x", i, j, a.Mem[i:j], b.Mem[i:j]))
			i = j
		}
	}
	return d
}

// String describes the case's inputs.
func (c *Case) String() string {
	st := State{Regs: c.Regs, RFLAGS: c.RFLAGS}
	s := fmt.Sprintf("%s: code % x; in: %s", c.Name, c.Code, st.String())
	if c.AddrRegs != 0 {
		s += "; mem-offset regs:"
		for r := 0; r < 16; r++ {
			if c.AddrRegs&(1<<r) != 0 {
				s += " " + regNames[r]
			}
		}
	}
	if c.Exempt != 0 {
		s += "; exempt:"
		for r := 0; r < 16; r++ {
			if c.Exempt&(1<<r) != 0 {
				s += " " + regNames[r]
			}
		}
	}
	if c.UndefFlags != 0 {
		s += "; undefined flags: " + FlagString(c.UndefFlags)
	}
	return s
}

// ---------------------------------------------------------------------------
// Templates.

type amode uint8

const (
	mReg    amode = iota
	mBase         // [base]
	mDisp8        // [base+disp8]
	mDisp32       // [base+disp32]
	mSIB          // [base+index*scale+disp], disp none/8/32 chosen per case
	mRSP          // [rsp+disp8] (stack forms only)
	mRIP          // [rip+disp32]: Mem reached RIP-relatively (Case.Relocs)
	mAbs          // [disp32]: SIB without base and index, an absolute address (Relocs)
	mIdx          // [index*scale+disp32]: SIB without base (Relocs)
	mMoffs        // moffs (A0-A3, no ModRM): a 64-bit (or with 67, 32-bit) absolute address
)

var amodeNames = [...]string{"reg", "[base]", "[base+disp8]", "[base+disp32]", "[base+index*scale+disp]", "[rsp+disp8]",
	"[rip+disp32]", "[disp32]", "[index*scale+disp32]", "moffs"}

// absMode reports whether m addresses Mem through a relocated displacement
// (Case.Relocs) rather than a base register.
func absMode(m amode) bool { return m >= mRIP }

type sem uint8

const (
	sNone      sem = iota // no flags, no constraints (mov, cmov, setcc, ...)
	sALU                  // sub = 0..7: add or adc sbb and sub xor cmp
	sLogic                // test: AF undefined
	sIncDec               // inc/dec
	sUnary                // neg/not
	sMul                  // mul, imul (all forms): SF ZF AF PF undefined
	sDiv                  // sub 6: div, 7: idiv
	sShift                // sub = ModRM digit; cnt = count source
	sShd                  // shld/shrd
	sBt                   // sub 4..7 bt bts btr btc
	sBsf                  // bsf/bsr
	sCmpxchg              // cmpxchg
	sCmpxchg8b            // cmpxchg8b/16b
	sString               // movs cmps stos lods scas
	sLea                  // lea: addressing registers are plain values
	sFlagsOnly            // lahf sahf clc stc cmc cld std
	sBranch               // branches inside the code (branch.go)
	sXlat                 // xlat
	sStack                // push, pop, pushf, popf, enter, leave, call/ret with RSP in Mem
	sLzcnt                // lzcnt: OF SF AF PF undefined
	sIndirect             // sub 2: call r/m64, 4: jmp r/m64, to a target inside the code (indirect.go)
)

type cntSrc uint8

const (
	cnt1 cntSrc = iota + 1
	cntCL
	cntImm
)

type tmpl struct {
	sem   sem
	sub   int
	cnt   cntSrc
	pfx   byte // 0, 0xf3 or 0xf2
	lock  bool
	osize int // operand size: 16 emits 66, 64 emits REX.W
	op    []byte

	modrm bool
	digit int  // ModRM.reg: -1 for a register operand, else the /digit
	plusR bool // register operand in the opcode's low bits
	wReg  int  // width of the ModRM.reg or +r register operand
	wRM   int  // width of the r/m operand (bits accessed)
	imm   int  // immediate bytes
	rex   int8 // 0: REX as needed, 1: always (8-bit SPL..DIL naming), -1: never (AH..BH)

	mode amode
	ext  bool // memory operand uses R8..R15 base and/or index (REX.B/REX.X)

	implicit uint16 // registers read or written implicitly
	strW     int    // string op element width (bytes)
	junk     junk   // redundant or ignored prefixes
	a32      bool   // 67 prefix: 32-bit addressing
	chain    bool   // wrapped in a flag-setting and a flag-reading instruction
	br       brKind // sBranch: which branch
	stack    bool   // RSP points into Mem
}

// junk selects prefixes a decoder must accept and (mostly) ignore.
type junk uint8

const (
	jNone      junk = iota
	jSeg            // CS/DS/ES/SS overrides: ignored in 64-bit mode
	j66Dup          // 66 66
	j66W            // 66 with REX.W: REX.W wins
	jStaleREX       // REX, then a legacy prefix: the REX is ignored
	jDoubleREX      // two REX prefixes: only the last counts
	jRep            // F3 or F2 on an instruction that ignores them
	jMaxLen         // DS overrides up to the 15-byte limit
)

var junkNames = [...]string{"", "seg-override", "66 66", "66+rex.w", "stale-rex", "double-rex", "ignored-rep", "15 bytes"}

// ---------------------------------------------------------------------------
// The form table.

type builder struct{ forms []Form }

func (b *builder) emit(class, name string, t tmpl) {
	// A 32-bit absolute displacement needs Mem below 2 GiB (Link checks);
	// lea r32 of a RIP-relative address truncates it to 32 bits.
	a32 := t.a32 || t.mode == mAbs || t.mode == mIdx || t.mode == mRIP && t.sem == sLea && t.osize == 32
	b.forms = append(b.forms, Form{Name: name, Class: class, Addr32: a32, t: t})
}

// modes expands t over its operand classes: register (unless memOnly) and
// the memory addressing modes (unless regOnly): [base], [base+disp8],
// [base+disp32] and [base+index*scale+disp], with and without extended
// registers, then RIP-relative, absolute [disp32] and [index*scale+disp32]
// (extended index too); a lock variant of each memory form if lockable;
// and with 32-bit addressing (67): [base+index*scale+disp], EIP-relative
// and absolute.
func (b *builder) modes(class, name string, t tmpl, memOnly, regOnly, lockable bool) {
	if t.rex == 0 && t.osize == 64 {
		t.rex = 1
	}
	if !memOnly {
		u := t
		u.mode = mReg
		b.emit(class, name+" reg", u)
	}
	if regOnly {
		return
	}
	for m := mBase; m <= mSIB; m++ {
		for _, ext := range []bool{false, true} {
			if ext && t.rex < 0 {
				continue
			}
			u := t
			u.mode, u.ext = m, ext
			n := name + " " + amodeNames[m]
			if ext {
				n += " ext"
			}
			b.emit(class, n, u)
			if lockable {
				u.lock = true
				b.emit(class, n+" lock", u)
			}
		}
	}
	if t.sem == sLea && t.osize == 16 {
		return // lea r16 of an absolute address: truncated, not comparable
	}
	for _, m := range []struct {
		mode amode
		ext  bool
	}{{mRIP, false}, {mAbs, false}, {mIdx, false}, {mIdx, true}} {
		if m.ext && t.rex < 0 {
			continue
		}
		u := t
		u.mode, u.ext = m.mode, m.ext
		n := name + " " + amodeNames[m.mode]
		if m.ext {
			n += " ext"
		}
		b.emit(class, n, u)
		if lockable {
			u.lock = true
			b.emit(class, n+" lock", u)
		}
	}
	if t.a32 {
		return
	}
	for _, m := range []amode{mSIB, mRIP, mAbs} {
		u := t
		u.mode, u.ext, u.a32 = m, m == mSIB && t.rex >= 0, true
		n := name + " addr32 " + amodeNames[m]
		if u.ext {
			n += " ext"
		}
		if lockable && m == mSIB {
			u.lock = true
			n += " lock"
		}
		b.emit(class, n, u)
	}
}

// widths calls fn for the operand sizes 8 (legacy AH..BH naming, no REX),
// 8 (REX: SPL..DIL, R8B..R15B), 16, 32 and 64, with a name suffix for the
// 8-bit variants.
func widths(with8 bool, fn func(w int, rex int8, tag string)) {
	if with8 {
		fn(8, -1, "")
		fn(8, 1, " (rex)")
	}
	fn(16, 0, "")
	fn(32, 0, "")
	fn(64, 1, "")
}

func osizeOf(w int) int {
	if w == 8 {
		return 32
	}
	return w
}

func immOf(w int) int {
	switch w {
	case 8:
		return 1
	case 16:
		return 2
	}
	return 4
}

func rr(w int) string { return fmt.Sprintf("r%d", w) }
func rm(w int) string { return fmt.Sprintf("r/m%d", w) }
func ii(n int) string { return fmt.Sprintf("imm%d", n*8) }

var aluNames = [8]string{"add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"}
var shiftNames = [8]string{"rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar"}
var ccNames = [16]string{"o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"}

func accName(w int) string {
	return map[int]string{8: "al", 16: "ax", 32: "eax", 64: "rax"}[w]
}

const (
	bRAX = 1 << RAX
	bRCX = 1 << RCX
	bRDX = 1 << RDX
	bRBX = 1 << RBX
	bRSI = 1 << RSI
	bRDI = 1 << RDI
)

var (
	allForms  []Form
	formsOnce sync.Once
)

// Forms returns every generated instruction form (the same slice on every
// call: do not modify it).
func Forms() []Form {
	formsOnce.Do(func() { allForms = buildForms() })
	return allForms
}

func buildForms() []Form {
	b := &builder{}

	// Group 1 arithmetic: 00-3D, 80, 81, 83.
	for op := 0; op < 8; op++ {
		n := aluNames[op]
		s := sALU
		lockable := op != 7
		widths(true, func(w int, rex int8, tag string) {
			o8 := 0
			if w != 8 {
				o8 = 1
			}
			t := tmpl{sem: s, sub: op, osize: osizeOf(w), modrm: true, digit: -1, wReg: w, wRM: w, rex: rex}
			t.op = []byte{byte(op*8 + o8)}
			b.modes("alu", fmt.Sprintf("%s %s, %s%s", n, rm(w), rr(w), tag), t, false, false, lockable)
			t.op = []byte{byte(op*8 + 2 + o8)}
			b.modes("alu", fmt.Sprintf("%s %s, %s%s", n, rr(w), rm(w), tag), t, false, false, false)
			// group 1 with immediate
			g := tmpl{sem: s, sub: op, osize: osizeOf(w), modrm: true, digit: op, wRM: w, rex: rex, imm: immOf(w)}
			if w == 8 {
				g.op = []byte{0x80}
			} else {
				g.op = []byte{0x81}
			}
			b.modes("alu", fmt.Sprintf("%s %s, %s%s", n, rm(w), ii(g.imm), tag), g, false, false, lockable)
			if w != 8 {
				g.op, g.imm = []byte{0x83}, 1
				b.modes("alu", fmt.Sprintf("%s %s, imm8 (83)", n, rm(w)), g, false, false, lockable)
			}
			// accumulator, immediate
			if rex <= 0 {
				a := tmpl{sem: s, sub: op, osize: osizeOf(w), op: []byte{byte(op*8 + 4 + o8)}, imm: immOf(w), implicit: bRAX, wRM: w}
				if w == 64 {
					a.rex = 1
				}
				b.emit("alu", fmt.Sprintf("%s %s, %s", n, accName(w), ii(a.imm)), a)
			}
		})
	}
	// 64-bit accumulator form (widths passes rex=1 for 64).
	for op := 0; op < 8; op++ {
		a := tmpl{sem: sALU, sub: op, osize: 64, rex: 1, op: []byte{byte(op*8 + 5)}, imm: 4, implicit: bRAX, wRM: 64}
		b.emit("alu", fmt.Sprintf("%s rax, imm32", aluNames[op]), a)
	}

	// test
	widths(true, func(w int, rex int8, tag string) {
		o8 := 0
		if w != 8 {
			o8 = 1
		}
		t := tmpl{sem: sLogic, osize: osizeOf(w), modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{byte(0x84 + o8)}}
		b.modes("test", fmt.Sprintf("test %s, %s%s", rm(w), rr(w), tag), t, false, false, false)
		g := tmpl{sem: sLogic, osize: osizeOf(w), modrm: true, digit: 0, wRM: w, rex: rex, op: []byte{byte(0xf6 + o8)}, imm: immOf(w)}
		b.modes("test", fmt.Sprintf("test %s, %s%s", rm(w), ii(g.imm), tag), g, false, false, false)
		if rex <= 0 || w == 64 {
			a := tmpl{sem: sLogic, osize: osizeOf(w), op: []byte{byte(0xa8 + o8)}, imm: immOf(w), implicit: bRAX, wRM: w}
			if w == 64 {
				a.rex = 1
			}
			b.emit("test", fmt.Sprintf("test %s, %s", accName(w), ii(a.imm)), a)
		}
	})

	// inc/dec, neg/not, mul/imul/div/idiv
	widths(true, func(w int, rex int8, tag string) {
		o8 := byte(0)
		if w != 8 {
			o8 = 1
		}
		for d, n := range []string{"inc", "dec"} {
			t := tmpl{sem: sIncDec, sub: d, osize: osizeOf(w), modrm: true, digit: d, wRM: w, rex: rex, op: []byte{0xfe + o8}}
			b.modes("incdec", fmt.Sprintf("%s %s%s", n, rm(w), tag), t, false, false, true)
		}
		for d := 2; d <= 7; d++ {
			n := [8]string{2: "not", 3: "neg", 4: "mul", 5: "imul", 6: "div", 7: "idiv"}[d]
			t := tmpl{sub: d, osize: osizeOf(w), modrm: true, digit: d, wRM: w, rex: rex, op: []byte{0xf6 + o8}}
			class := "unary"
			switch d {
			case 2, 3:
				t.sem = sUnary
			case 4, 5:
				t.sem, class = sMul, "muldiv"
				t.implicit = bRAX | bRDX
			default:
				t.sem, class = sDiv, "muldiv"
				t.implicit = bRAX | bRDX
			}
			b.modes(class, fmt.Sprintf("%s %s%s", n, rm(w), tag), t, false, false, d <= 3)
		}
	})
	// imul r, r/m (0F AF), imul r, r/m, imm (69, 6B)
	widths(false, func(w int, rex int8, tag string) {
		t := tmpl{sem: sMul, osize: w, modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x0f, 0xaf}}
		b.modes("muldiv", fmt.Sprintf("imul %s, %s", rr(w), rm(w)), t, false, false, false)
		t.op, t.imm = []byte{0x69}, immOf(w)
		b.modes("muldiv", fmt.Sprintf("imul %s, %s, %s", rr(w), rm(w), ii(t.imm)), t, false, false, false)
		t.op, t.imm = []byte{0x6b}, 1
		b.modes("muldiv", fmt.Sprintf("imul %s, %s, imm8", rr(w), rm(w)), t, false, false, false)
	})

	// shifts and rotates
	widths(true, func(w int, rex int8, tag string) {
		o8 := byte(0)
		if w != 8 {
			o8 = 1
		}
		for d := 0; d < 8; d++ {
			for _, c := range []struct {
				op   byte
				cnt  cntSrc
				text string
			}{{0xd0, cnt1, "1"}, {0xd2, cntCL, "cl"}, {0xc0, cntImm, "imm8"}} {
				t := tmpl{sem: sShift, sub: d, cnt: c.cnt, osize: osizeOf(w), modrm: true, digit: d, wRM: w, rex: rex, op: []byte{c.op + o8}}
				if c.cnt == cntImm {
					t.imm = 1
				}
				if c.cnt == cntCL {
					t.implicit = bRCX
				}
				n := shiftNames[d]
				if d == 6 {
					n = "sal(/6)"
				}
				b.modes("shift", fmt.Sprintf("%s %s, %s%s", n, rm(w), c.text, tag), t, false, false, false)
			}
		}
	})
	// shld/shrd
	widths(false, func(w int, rex int8, tag string) {
		for i, n := range []string{"shld", "shrd"} {
			base := byte(0xa4 + 8*i)
			t := tmpl{sem: sShd, sub: i, cnt: cntImm, osize: w, modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x0f, base}, imm: 1}
			b.modes("shld", fmt.Sprintf("%s %s, %s, imm8", n, rm(w), rr(w)), t, false, false, false)
			t.op, t.imm, t.cnt, t.implicit = []byte{0x0f, base + 1}, 0, cntCL, bRCX
			b.modes("shld", fmt.Sprintf("%s %s, %s, cl", n, rm(w), rr(w)), t, false, false, false)
		}
	})
	// bt family
	widths(false, func(w int, rex int8, tag string) {
		for d, n := range []string{"bt", "bts", "btr", "btc"} {
			t := tmpl{sem: sBt, sub: d + 4, osize: w, modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x0f, byte(0xa3 + 8*d)}}
			b.modes("bt", fmt.Sprintf("%s %s, %s", n, rm(w), rr(w)), t, false, false, d > 0)
			t = tmpl{sem: sBt, sub: d + 4, osize: w, modrm: true, digit: d + 4, wRM: w, rex: rex, op: []byte{0x0f, 0xba}, imm: 1}
			b.modes("bt", fmt.Sprintf("%s %s, imm8", n, rm(w)), t, false, false, d > 0)
		}
		for i, n := range []string{"bsf", "bsr"} {
			t := tmpl{sem: sBsf, sub: i, osize: w, modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x0f, byte(0xbc + i)}}
			b.modes("bsf", fmt.Sprintf("%s %s, %s", n, rr(w), rm(w)), t, false, false, false)
		}
	})

	// mov
	widths(true, func(w int, rex int8, tag string) {
		o8 := byte(0)
		if w != 8 {
			o8 = 1
		}
		t := tmpl{osize: osizeOf(w), modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x88 + o8}}
		b.modes("mov", fmt.Sprintf("mov %s, %s%s", rm(w), rr(w), tag), t, false, false, false)
		t.op = []byte{0x8a + o8}
		b.modes("mov", fmt.Sprintf("mov %s, %s%s", rr(w), rm(w), tag), t, false, false, false)
		g := tmpl{osize: osizeOf(w), modrm: true, digit: 0, wRM: w, rex: rex, op: []byte{0xc6 + o8}, imm: immOf(w)}
		b.modes("mov", fmt.Sprintf("mov %s, %s%s", rm(w), ii(g.imm), tag), g, false, false, false)
		p := tmpl{osize: osizeOf(w), plusR: true, wReg: w, rex: rex, imm: immOf(w), op: []byte{0xb0}}
		if w != 8 {
			p.op[0] = 0xb8
		}
		if w == 64 {
			p.imm = 8
		}
		b.modes("mov", fmt.Sprintf("mov %s, %s (+r)%s", rr(w), ii(p.imm), tag), p, false, true, false)
		// xchg
		x := tmpl{osize: osizeOf(w), modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x86 + o8}}
		b.modes("xchg", fmt.Sprintf("xchg %s, %s%s", rm(w), rr(w), tag), x, false, false, true)
		if w != 8 {
			x := tmpl{osize: w, plusR: true, wReg: w, rex: rex, op: []byte{0x90}, implicit: bRAX}
			b.modes("xchg", fmt.Sprintf("xchg %s, %s (90+r)", rr(w), accName(w)), x, false, true, false)
		}
		// xadd, cmpxchg
		t = tmpl{sem: sALU, osize: osizeOf(w), modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x0f, 0xc0 + o8}}
		b.modes("xadd", fmt.Sprintf("xadd %s, %s%s", rm(w), rr(w), tag), t, false, false, true)
		t = tmpl{sem: sCmpxchg, osize: osizeOf(w), modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x0f, 0xb0 + o8}, implicit: bRAX}
		b.modes("cmpxchg", fmt.Sprintf("cmpxchg %s, %s%s", rm(w), rr(w), tag), t, false, false, true)
	})
	b.emit("xchg", "nop (90)", tmpl{op: []byte{0x90}})
	b.emit("xchg", "pause (f3 90)", tmpl{op: []byte{0xf3, 0x90}})
	b.modes("cmpxchg", "cmpxchg8b m64", tmpl{sem: sCmpxchg8b, osize: 32, modrm: true, digit: 1, wRM: 64, op: []byte{0x0f, 0xc7}, implicit: bRAX | bRBX | bRCX | bRDX}, true, false, true)
	b.modes("cmpxchg", "cmpxchg16b m128", tmpl{sem: sCmpxchg8b, osize: 64, modrm: true, digit: 1, wRM: 128, op: []byte{0x0f, 0xc7}, implicit: bRAX | bRBX | bRCX | bRDX}, true, false, true)

	// movzx/movsx, movsxd
	for _, dst := range []int{16, 32, 64} {
		for i, n := range []string{"movzx", "movsx"} {
			for _, src := range []int{8, 16} {
				op := []byte{0x0f, byte(0xb6 + 8*i + src/16)}
				if src == 8 && dst != 64 {
					for _, rex := range []int8{-1, 1} {
						tag := ""
						if rex > 0 {
							tag = " (rex)"
						}
						t := tmpl{osize: dst, modrm: true, digit: -1, wReg: dst, wRM: 8, rex: rex, op: op}
						b.modes("movx", fmt.Sprintf("%s %s, %s%s", n, rr(dst), rm(8), tag), t, false, false, false)
					}
					continue
				}
				t := tmpl{osize: dst, modrm: true, digit: -1, wReg: dst, wRM: src, op: op}
				b.modes("movx", fmt.Sprintf("%s %s, %s", n, rr(dst), rm(src)), t, false, false, false)
			}
		}
		src := dst
		if dst == 64 {
			src = 32
		}
		t := tmpl{osize: dst, modrm: true, digit: -1, wReg: dst, wRM: src, op: []byte{0x63}}
		b.modes("movx", fmt.Sprintf("movsxd %s, %s", rr(dst), rm(src)), t, false, false, false)
	}

	// cmovcc, setcc
	for cc := 0; cc < 16; cc++ {
		widths(false, func(w int, rex int8, tag string) {
			t := tmpl{osize: w, modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x0f, byte(0x40 + cc)}}
			b.modes("cmov", fmt.Sprintf("cmov%s %s, %s", ccNames[cc], rr(w), rm(w)), t, false, false, false)
		})
		for _, rex := range []int8{-1, 1} {
			tag := ""
			if rex > 0 {
				tag = " (rex)"
			}
			t := tmpl{osize: 32, modrm: true, digit: 0, wRM: 8, rex: rex, op: []byte{0x0f, byte(0x90 + cc)}}
			b.modes("setcc", fmt.Sprintf("set%s %s%s", ccNames[cc], rm(8), tag), t, false, false, false)
		}
	}

	// test F6/F7 /1: an undocumented alias of /0 (on AMD and Intel)
	widths(true, func(w int, rex int8, tag string) {
		o8 := byte(0)
		if w != 8 {
			o8 = 1
		}
		g := tmpl{sem: sLogic, osize: osizeOf(w), modrm: true, digit: 1, wRM: w, rex: rex, op: []byte{0xf6 + o8}, imm: immOf(w)}
		b.modes("test", fmt.Sprintf("test %s, %s (/1 alias)%s", rm(w), ii(g.imm), tag), g, false, false, false)
	})
	// multi-byte nop 0F 1F /0 (no memory access)
	widths(false, func(w int, rex int8, tag string) {
		t := tmpl{osize: w, modrm: true, digit: 0, wRM: w, rex: rex, op: []byte{0x0f, 0x1f}}
		b.modes("nop", fmt.Sprintf("nop %s (0f 1f)", rm(w)), t, false, false, false)
	})
	// prefixes a decoder must accept: redundant, ignored, overridden
	for j := jSeg; j <= jMaxLen; j++ {
		widths(true, func(w int, rex int8, tag string) {
			switch {
			case j == j66Dup && w != 16, j == j66W && w != 64, j == jDoubleREX && rex < 0:
				return
			}
			o8 := byte(0)
			if w != 8 {
				o8 = 1
			}
			for _, f := range []struct {
				n   string
				op  byte
				sem sem
			}{{"add %s, %s", 0x00, sALU}, {"mov %[2]s, %[1]s", 0x8a, sNone}} {
				t := tmpl{sem: f.sem, osize: osizeOf(w), modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{f.op + o8}, junk: j}
				n := fmt.Sprintf(f.n, rm(w), rr(w)) + tag + " [" + junkNames[j] + "]"
				t.mode = mReg
				b.emit("prefix", n+" reg", t)
				t.mode = mDisp8
				b.emit("prefix", n+" "+amodeNames[mDisp8], t)
				if rex >= 0 {
					t.mode, t.ext = mSIB, true
					b.emit("prefix", n+" "+amodeNames[mSIB]+" ext", t)
				}
			}
		})
	}

	// string instructions with ignored segment overrides (the source's DS
	// may be overridden; in 64-bit mode CS/DS/ES/SS overrides do nothing)
	for _, s := range []struct {
		n   string
		op  byte
		w   int
		pfx byte
	}{{"movsb", 0xa4, 8, 0}, {"rep movsq", 0xa5, 64, 0xf3}, {"repe cmpsd", 0xa7, 32, 0xf3},
		{"lodsw", 0xad, 16, 0}, {"rep stosb", 0xaa, 8, 0xf3}, {"repne scasq", 0xaf, 64, 0xf2}} {
		t := tmpl{sem: sString, sub: int(s.op &^ 1), pfx: s.pfx, osize: osizeOf(s.w), op: []byte{s.op}, strW: s.w / 8,
			implicit: bRAX | bRCX | bRSI | bRDI, junk: jSeg}
		if s.w == 64 {
			t.rex = 1
		}
		b.emit("prefix", s.n+" [seg-override]", t)
	}

	// 32-bit addressing (67 prefix)
	for _, f := range []struct {
		n     string
		op    byte
		w     int
		rex   int8
		sem   sem
		digit int
		lock  bool
	}{
		{"add r/m32, r32", 0x01, 32, 0, sALU, -1, false},
		{"add r/m32, r32", 0x01, 32, 0, sALU, -1, true},
		{"mov r64, r/m64", 0x8b, 64, 1, sNone, -1, false},
		{"mov r/m8, r8 (rex)", 0x88, 8, 1, sNone, -1, false},
		{"inc r/m16", 0xff, 16, 0, sIncDec, 0, false},
	} {
		t := tmpl{sem: f.sem, osize: osizeOf(f.w), modrm: true, digit: f.digit, wReg: f.w, wRM: f.w, rex: f.rex, op: []byte{f.op}, a32: true, lock: f.lock}
		if f.digit >= 0 {
			t.wReg = 0
		}
		n := "addr32 " + f.n
		for m := mBase; m <= mSIB; m++ {
			for _, ext := range []bool{false, true} {
				t.mode, t.ext = m, ext
				x := ""
				if ext {
					x = " ext"
				}
				if f.lock {
					x += " lock"
				}
				b.emit("addr32", n+" "+amodeNames[m]+x, t)
			}
		}
	}
	for _, w := range []int{32, 64} {
		t := tmpl{sem: sLea, osize: w, modrm: true, digit: -1, wReg: w, op: []byte{0x8d}, a32: true}
		b.modes("addr32", fmt.Sprintf("addr32 lea %s, m", rr(w)), t, true, false, false)
	}
	for _, s := range []struct {
		n   string
		op  byte
		w   int
		pfx byte
	}{{"rep movsb", 0xa4, 8, 0xf3}, {"rep stosd", 0xab, 32, 0xf3}, {"repe cmpsb", 0xa6, 8, 0xf3},
		{"repne scasw", 0xaf, 16, 0xf2}, {"lodsq", 0xad, 64, 0}, {"movsd", 0xa5, 32, 0},
		{"stosb", 0xaa, 8, 0}, {"rep lodsb", 0xac, 8, 0xf3}, {"repne cmpsq", 0xa7, 64, 0xf2}, {"repe scasb", 0xae, 8, 0xf3}} {
		t := tmpl{sem: sString, sub: int(s.op &^ 1), pfx: s.pfx, osize: osizeOf(s.w), op: []byte{s.op}, strW: s.w / 8,
			implicit: bRAX | bRCX | bRSI | bRDI, a32: true}
		if s.w == 64 {
			t.rex = 1
		}
		b.emit("addr32", "addr32 "+s.n, t)
	}

	// lea, bswap, cbw/cwd families
	widths(false, func(w int, rex int8, tag string) {
		t := tmpl{sem: sLea, osize: w, modrm: true, digit: -1, wReg: w, rex: rex, op: []byte{0x8d}}
		b.modes("lea", fmt.Sprintf("lea %s, m", rr(w)), t, true, false, false)
		if w != 16 {
			p := tmpl{osize: w, plusR: true, wReg: w, rex: rex, op: []byte{0x0f, 0xc8}}
			b.modes("bswap", fmt.Sprintf("bswap %s", rr(w)), p, false, true, false)
		}
		n98 := map[int]string{16: "cbw", 32: "cwde", 64: "cdqe"}[w]
		n99 := map[int]string{16: "cwd", 32: "cdq", 64: "cqo"}[w]
		b.emit("cbw", n98, tmpl{osize: w, rex: rex, op: []byte{0x98}, implicit: bRAX})
		b.emit("cbw", n99, tmpl{osize: w, rex: rex, op: []byte{0x99}, implicit: bRAX | bRDX})
	})
	for _, f := range []struct {
		n  string
		op byte
	}{{"lahf", 0x9f}, {"sahf", 0x9e}, {"clc", 0xf8}, {"stc", 0xf9}, {"cmc", 0xf5}, {"cld", 0xfc}, {"std", 0xfd}} {
		b.emit("flags", f.n, tmpl{sem: sFlagsOnly, op: []byte{f.op}, implicit: bRAX})
	}

	// string instructions
	for _, s := range []struct {
		n   string
		op  byte
		cmp bool
	}{{"movs", 0xa4, false}, {"cmps", 0xa6, true}, {"stos", 0xaa, false}, {"lods", 0xac, false}, {"scas", 0xae, true}} {
		for _, w := range []int{8, 16, 32, 64} {
			o := s.op
			if w != 8 {
				o++
			}
			suffix := map[int]string{8: "b", 16: "w", 32: "d", 64: "q"}[w]
			for _, p := range []struct {
				pfx byte
				n   string
			}{{0, ""}, {0xf3, "rep "}, {0xf2, "repne "}} {
				n := p.n + s.n + suffix
				if s.cmp && p.pfx == 0xf3 {
					n = "repe " + s.n + suffix
				}
				if !s.cmp && p.pfx == 0xf2 {
					n = "f2 " + s.n + suffix + " (as rep)"
				}
				t := tmpl{sem: sString, sub: int(s.op), pfx: p.pfx, osize: osizeOf(w), op: []byte{o}, strW: w / 8,
					implicit: bRAX | bRCX | bRSI | bRDI}
				if w == 64 {
					t.rex = 1
				}
				b.emit("string", n, t)
			}
		}
	}
	miscForms(b)
	branchForms(b)
	indirectForms(b)
	stackForms(b)
	return append(b.forms, chainForms(b.forms)...)
}
