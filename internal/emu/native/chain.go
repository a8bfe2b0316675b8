package native

import "fmt"

// Chains: a flag-setting instruction (cmp/add/sub/inc on unrelated
// registers), then a producer form in its register variant, then an
// instruction that reads the flags (adc, sbb, setcc, cmovcc, jcc, lahf,
// inc/dec, rcl/rcr, cmc). They exercise lazy flag evaluation across
// instructions, which single instructions started from materialised
// RFLAGS cannot. The reader only reads flags the producer leaves defined.

// chainable reports whether f can be the middle of a chain.
func chainable(f Form) bool {
	t := f.t
	// (branches: the first instruction could zero the loop count; stack
	// forms: the reader could overwrite an output address register)
	if t.lock || t.pfx != 0 || t.junk != jNone || t.a32 || t.sem == sLea || t.sem == sBranch || t.sem == sIndirect || t.stack {
		return false
	}
	return !t.modrm || t.mode == mReg
}

func chainForms(forms []Form) []Form {
	var out []Form
	for _, f := range forms {
		if !chainable(f) {
			continue
		}
		t := f.t
		t.chain = true
		out = append(out, Form{Name: "chain: " + f.Name, Class: "chain", t: t})
	}
	return out
}

// ccFlags are the flags condition cc reads.
func ccFlags(cc int) uint64 {
	switch cc >> 1 {
	case 0:
		return FlagOF
	case 1:
		return FlagCF
	case 2:
		return FlagZF
	case 3:
		return FlagCF | FlagZF
	case 4:
		return FlagSF
	case 5:
		return FlagPF
	case 6:
		return FlagSF | FlagOF
	}
	return FlagZF | FlagSF | FlagOF
}

func rexB(w bool, reg, rm int) byte {
	b := byte(0x40)
	if w {
		b |= 8
	}
	if reg >= 8 {
		b |= 4
	}
	if rm >= 8 {
		b |= 1
	}
	return b
}

var reg8Names = [16]string{"al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil",
	"r8b", "r9b", "r10b", "r11b", "r12b", "r13b", "r14b", "r15b"}

func modrmRR(reg, rm int) byte { return 0xc0 | byte(reg&7)<<3 | byte(rm&7) }

// pickFree picks a register outside avoid (and never RSP).
func (g *gen) pickFree(avoid uint16) int {
	var cand [16]int
	n := 0
	for r := 0; r < 16; r++ {
		if r != RSP && avoid&(1<<r) == 0 {
			cand[n] = r
			n++
		}
	}
	if n == 0 {
		return -1
	}
	return cand[g.rng.Intn(n)]
}

// used returns the registers the producer reads or writes.
func (g *gen) used() uint16 {
	t := g.t
	u := t.implicit | g.c.AddrRegs | g.c.Exempt
	if g.regR >= 0 {
		u |= 1 << g.under(g.regR, t.wReg)
	}
	if g.rmR >= 0 {
		u |= 1 << g.under(g.rmR, t.wRM)
	}
	return u
}

func (g *gen) chainUp() {
	c := &g.c
	rng := g.rng
	noAddr := c.AddrRegs | 1<<RSP
	// the first instruction: all flags defined afterwards
	var pre []byte
	var preName string
	switch rng.Intn(3) {
	case 0: // cmp r/m, r at a random width
		a, b := g.pickFree(noAddr), g.pickFree(noAddr)
		switch w := [...]int{8, 16, 32, 64}[rng.Intn(4)]; w {
		case 8:
			pre = []byte{rexB(false, b, a), 0x38, modrmRR(b, a)}
		case 16:
			pre = []byte{0x66, rexB(false, b, a), 0x39, modrmRR(b, a)}
		case 32:
			pre = []byte{rexB(false, b, a), 0x39, modrmRR(b, a)}
		default:
			pre = []byte{rexB(true, b, a), 0x39, modrmRR(b, a)}
		}
		preName = fmt.Sprintf("cmp %s, %s", RegName(a), RegName(b))
	case 1: // add or sub into a register the producer does not use
		d, s := g.pickFree(noAddr|g.used()), g.pickFree(noAddr)
		if d < 0 {
			break
		}
		op, n := byte(0x01), "add"
		if rng.Intn(2) == 0 {
			op, n = 0x29, "sub"
		}
		pre = []byte{rexB(true, s, d), op, modrmRR(s, d)}
		preName = fmt.Sprintf("%s %s, %s", n, RegName(d), RegName(s))
	default: // inc/dec: CF comes from the initial RFLAGS
		d := g.pickFree(noAddr | g.used())
		if d < 0 {
			break
		}
		digit, n := 0, "inc"
		if rng.Intn(2) == 0 {
			digit, n = 1, "dec"
		}
		pre = []byte{rexB(true, 0, d), 0xff, modrmRR(digit, d)}
		preName = fmt.Sprintf("%s %s", n, RegName(d))
	}
	if pre == nil {
		pre = []byte{0x90}
		preName = "nop"
	}

	// the reader
	u := c.UndefFlags
	free := noAddr | c.Exempt
	var post []byte
	var postName string
	var writes uint64
	pickCC := func() int {
		var ok []int
		for cc := 0; cc < 16; cc++ {
			if ccFlags(cc)&u == 0 {
				ok = append(ok, cc)
			}
		}
		if len(ok) == 0 {
			return -1
		}
		return ok[rng.Intn(len(ok))]
	}
	for try := 0; try < 20 && post == nil; try++ {
		switch rng.Intn(9) {
		case 0: // setcc r8
			if cc := pickCC(); cc >= 0 {
				r := g.pickFree(free)
				post = []byte{rexB(false, 0, r), 0x0f, 0x90 + byte(cc), modrmRR(0, r)}
				postName = fmt.Sprintf("set%s %s", ccNames[cc], reg8Names[r])
			}
		case 1: // cmovcc r64, r64
			if cc := pickCC(); cc >= 0 {
				d, s := g.pickFree(free), g.pickFree(free)
				post = []byte{rexB(true, d, s), 0x0f, 0x40 + byte(cc), modrmRR(d, s)}
				postName = fmt.Sprintf("cmov%s %s, %s", ccNames[cc], RegName(d), RegName(s))
			}
		case 2: // jcc over inc r64
			if cc := pickCC(); cc >= 0 {
				r := g.pickFree(free)
				post = []byte{0x70 + byte(cc), 3, rexB(true, 0, r), 0xff, modrmRR(0, r)}
				postName = fmt.Sprintf("j%s +3; inc %s", ccNames[cc], RegName(r))
			}
		case 3, 4: // adc/sbb r64, r64
			if u&FlagCF == 0 {
				d, s := g.pickFree(free), g.pickFree(free)
				op, n := byte(0x11), "adc"
				if rng.Intn(2) == 0 {
					op, n = 0x19, "sbb"
				}
				post = []byte{rexB(true, s, d), op, modrmRR(s, d)}
				postName = fmt.Sprintf("%s %s, %s", n, RegName(d), RegName(s))
				writes = ArithFlags
			}
		case 5: // rcl/rcr r64, 1
			if u&FlagCF == 0 {
				r := g.pickFree(free)
				digit, n := 2, "rcl"
				if rng.Intn(2) == 0 {
					digit, n = 3, "rcr"
				}
				post = []byte{rexB(true, 0, r), 0xd1, modrmRR(digit, r)}
				postName = fmt.Sprintf("%s %s, 1", n, RegName(r))
				writes = FlagCF | FlagOF
			}
		case 6: // lahf
			if u&(FlagSF|FlagZF|FlagAF|FlagPF|FlagCF) == 0 && free&(1<<RAX) == 0 {
				post = []byte{0x9f}
				postName = "lahf"
			}
		case 7: // inc/dec r64 keep CF
			r := g.pickFree(free)
			digit, n := 0, "inc"
			if rng.Intn(2) == 0 {
				digit, n = 1, "dec"
			}
			post = []byte{rexB(true, 0, r), 0xff, modrmRR(digit, r)}
			postName = fmt.Sprintf("%s %s", n, RegName(r))
			writes = ArithFlags &^ FlagCF
		case 8: // cmc
			if u&FlagCF == 0 {
				post = []byte{0xf5}
				postName = "cmc"
			}
		}
	}
	if post == nil {
		post = []byte{0x90}
		postName = "nop"
	}
	c.UndefFlags &^= writes
	c.Code = append(append(pre, c.Code...), post...)
	for i := range c.Relocs {
		c.Relocs[i].Off += len(pre)
		c.Relocs[i].End += len(pre)
	}
	c.Focus += len(pre)
	c.Name = fmt.Sprintf("%s [%s; ...; %s]", c.Name, preName, postName)
}
