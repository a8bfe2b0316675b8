package native

import "fmt"

// Branches that stay inside the code: each jumps over (or, for loops, back
// to) an "inc r64", so the result shows whether and how often it was taken.

type brKind uint8

const (
	brJcc8 brKind = iota
	brJcc32
	brJmp8
	brJmp32
	brJrcxz
	brLoop // sub: 0 loopne (e0), 1 loope (e1), 2 loop (e2)
	brLoopBack
)

func branchForms(b *builder) {
	for cc := 0; cc < 16; cc++ {
		b.emit("branch", fmt.Sprintf("j%s rel8", ccNames[cc]), tmpl{sem: sBranch, sub: cc, br: brJcc8})
		b.emit("branch", fmt.Sprintf("j%s rel32", ccNames[cc]), tmpl{sem: sBranch, sub: cc, br: brJcc32})
	}
	b.emit("branch", "jmp rel8", tmpl{sem: sBranch, br: brJmp8})
	b.emit("branch", "jmp rel32", tmpl{sem: sBranch, br: brJmp32})
	for _, a32 := range []bool{false, true} {
		p := ""
		if a32 {
			p = "addr32 "
		}
		b.emit("branch", p+"jrcxz rel8", tmpl{sem: sBranch, br: brJrcxz, a32: a32})
		for i, n := range []string{"loopne", "loope", "loop"} {
			b.emit("branch", p+n+" rel8 forward", tmpl{sem: sBranch, sub: i, br: brLoop, a32: a32})
			b.emit("branch", p+n+" rel8 backward", tmpl{sem: sBranch, sub: i, br: brLoopBack, a32: a32})
		}
	}
	b.emit("xlat", "xlat", tmpl{sem: sXlat, implicit: bRAX | bRBX})
	b.emit("xlat", "xlat (rex.w)", tmpl{sem: sXlat, rex: 1, osize: 64, implicit: bRAX | bRBX})
	b.emit("xlat", "addr32 xlat", tmpl{sem: sXlat, a32: true, implicit: bRAX | bRBX})
}

func (g *gen) branch() {
	t := g.t
	c := &g.c
	r := g.pickFree(bRCX)
	inc := []byte{rexB(true, 0, r), 0xff, modrmRR(0, r)}
	var pfx []byte
	if t.a32 {
		pfx = []byte{0x67}
	}
	small := func() uint64 { // a count for RCX (or ECX), upper half garbage with 67
		v := uint64(g.rng.Intn(5))
		if t.a32 {
			v |= uint64(g.rng.Uint32()) << 32
		}
		return v
	}
	switch t.br {
	case brJcc8:
		c.Code = append([]byte{0x70 + byte(t.sub), 3}, inc...)
	case brJcc32:
		c.Code = append([]byte{0x0f, 0x80 + byte(t.sub), 3, 0, 0, 0}, inc...)
	case brJmp8:
		c.Code = append([]byte{0xeb, 3}, inc...)
	case brJmp32:
		c.Code = append([]byte{0xe9, 3, 0, 0, 0}, inc...)
	case brJrcxz:
		c.Regs[RCX] = small()
		c.Code = append(append(pfx, 0xe3, 3), inc...)
	case brLoop:
		c.Regs[RCX] = small()
		c.Code = append(append(pfx, 0xe0+byte(t.sub), 3), inc...)
	case brLoopBack:
		// inc; loop back to inc: RCX (ECX) must not be 0, or it runs 2^64 times
		c.Regs[RCX] = small() + 1
		c.Code = append(append(inc, pfx...), 0xe0+byte(t.sub), byte(0x100-len(inc)-len(pfx)-2))
		c.Focus = len(inc)
	}
}

func (g *gen) xlat() {
	c := &g.c
	al := c.Regs[RAX] & 0xff
	c.Regs[RBX] = uint64(g.rng.Intn(MemSize - int(al)))
	c.AddrRegs = bRBX
	c.BaseReg, c.IndexReg = RBX, -1
	if g.t.a32 {
		c.Regs[RBX] += uint64(g.rng.Uint32()) << 32
	}
	c.Code = nil
	if g.t.a32 {
		c.Code = append(c.Code, 0x67)
	}
	if g.t.rex > 0 {
		c.Code = append(c.Code, 0x48)
	}
	c.Code = append(c.Code, 0xd7)
}
