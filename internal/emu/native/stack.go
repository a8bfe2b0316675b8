package native

import "fmt"

// Stack forms: RSP points into Mem (an address register, compared on
// output), so push, pop, pushf/popf, enter, leave, call/ret and [rsp+disp8]
// operands can be checked. Pushed values are never addresses (push rsp,
// enter with nesting, pop rsp are left out), except call's return address,
// which the code clears again after ret.

const (
	stPush = iota
	stPop
	stPushf
	stPopf
	stEnter
	stLeave
	stCall
	stOther
)

func stackForms(b *builder) {
	for _, w := range []int{64, 16} {
		os := 32 // push/pop default to 64-bit operands
		if w == 16 {
			os = 16
		}
		b.emit("stack", fmt.Sprintf("push r%d (50+r)", w), tmpl{sem: sStack, sub: stPush, stack: true, osize: os, plusR: true, wReg: w, op: []byte{0x50}})
		b.emit("stack", fmt.Sprintf("pop r%d (58+r)", w), tmpl{sem: sStack, sub: stPop, stack: true, osize: os, plusR: true, wReg: w, op: []byte{0x58}})
		p := tmpl{sem: sStack, sub: stPush, stack: true, osize: os, modrm: true, digit: 6, wRM: w, op: []byte{0xff}}
		b.modes("stack", fmt.Sprintf("push r/m%d", w), p, false, false, false)
		p.mode = mRSP
		b.emit("stack", fmt.Sprintf("push r/m%d [rsp+disp8]", w), p)
		q := tmpl{sem: sStack, sub: stPop, stack: true, osize: os, modrm: true, digit: 0, wRM: w, op: []byte{0x8f}}
		b.modes("stack", fmt.Sprintf("pop r/m%d", w), q, false, false, false)
		q.mode = mRSP
		b.emit("stack", fmt.Sprintf("pop r/m%d [rsp+disp8] (address after the pop)", w), q)
		b.emit("stack", fmt.Sprintf("pushf%s", map[int]string{64: "q", 16: "w"}[w]), tmpl{sem: sStack, sub: stPushf, stack: true, osize: os, op: []byte{0x9c}})
		b.emit("stack", fmt.Sprintf("popf%s", map[int]string{64: "q", 16: "w"}[w]), tmpl{sem: sStack, sub: stPopf, stack: true, osize: os, wRM: w, op: []byte{0x9d}})
		b.emit("stack", fmt.Sprintf("leave%s", map[int]string{64: "", 16: " (16-bit)"}[w]), tmpl{sem: sStack, sub: stLeave, stack: true, osize: os, wRM: w, op: []byte{0xc9}})
	}
	b.emit("stack", "push r64 (rex.w 50+r)", tmpl{sem: sStack, sub: stPush, stack: true, osize: 64, rex: 1, plusR: true, wReg: 64, op: []byte{0x50}})
	b.modes("stack", "push r/m64 (rex.w)", tmpl{sem: sStack, sub: stPush, stack: true, osize: 64, modrm: true, digit: 6, wRM: 64, op: []byte{0xff}}, false, false, false)
	b.emit("stack", "push imm8", tmpl{sem: sStack, sub: stPush, stack: true, osize: 32, imm: 1, op: []byte{0x6a}})
	b.emit("stack", "push imm8 (66)", tmpl{sem: sStack, sub: stPush, stack: true, osize: 16, imm: 1, op: []byte{0x6a}})
	b.emit("stack", "push imm32", tmpl{sem: sStack, sub: stPush, stack: true, osize: 32, imm: 4, op: []byte{0x68}})
	b.emit("stack", "push imm16", tmpl{sem: sStack, sub: stPush, stack: true, osize: 16, imm: 2, op: []byte{0x68}})
	b.emit("stack", "enter imm16, 0", tmpl{sem: sStack, sub: stEnter, stack: true, osize: 32, op: []byte{0xc8}})
	b.emit("stack", "enter imm16, 0 (16-bit)", tmpl{sem: sStack, sub: stEnter, stack: true, osize: 16, op: []byte{0xc8}})
	for _, imm := range []int{-1, 0, 8, 16} {
		n := "call rel32; ret"
		if imm >= 0 {
			n = fmt.Sprintf("call rel32; ret %d", imm)
		}
		b.emit("stack", n, tmpl{sem: sStack, sub: stCall, stack: true, imm: imm})
	}
	for _, f := range []struct {
		n  string
		op byte
		w  int
	}{{"mov r64, r/m64 [rsp+disp8]", 0x8b, 64}, {"add r/m32, r32 [rsp+disp8]", 0x01, 32}, {"xchg r/m16, r16 [rsp+disp8]", 0x87, 16}} {
		s := sNone
		if f.op == 0x01 {
			s = sALU
		}
		b.emit("stack", f.n, tmpl{sem: s, sub: stOther, stack: true, osize: f.w, modrm: true, digit: -1, wReg: f.w, wRM: f.w, op: []byte{f.op}, mode: mRSP})
	}
}

func (g *gen) fixStack() {
	t := g.t
	c := &g.c
	sp := int(c.Regs[RSP])
	switch t.sub {
	case stPopf:
		// only the status flags and DF: TF, AC, IF, IOPL... must not change
		v := g.rng.Uint64()&StateFlags | 2
		g.set(loc{mem: true, off: sp}, t.wRM, v)
	case stEnter:
		// enter imm16, 0: push rbp; rbp = rsp; rsp -= imm16. RBP becomes an
		// address; its input is data. With 66, 16 bits each.
		size := uint16(g.rng.Intn(5) * 8)
		if g.rng.Intn(4) == 0 {
			size = uint16(g.rng.Intn(48))
		}
		c.Code = []byte{0xc8, byte(size), byte(size >> 8), 0}
		c.OutAddrRegs = c.AddrRegs | 1<<RBP
		if t.osize == 16 {
			// push bp; bp = sp: only BP changes, to the low 16 bits of an
			// address, so RBP is not comparable (the pushed BP is)
			c.Code = append([]byte{0x66}, c.Code...)
			c.OutAddrRegs = c.AddrRegs
			c.Exempt |= 1 << RBP
		}
	case stLeave:
		// rsp = rbp; pop rbp: RBP points into Mem on input, is data after
		p := 96 + g.rng.Intn(65)
		if g.rng.Intn(4) != 0 {
			p &^= 7
		}
		c.Regs[RBP] = uint64(p)
		c.AddrRegs |= 1 << RBP
		c.OutAddrRegs = c.AddrRegs &^ (1 << RBP)
		if t.wRM == 16 {
			// BP is popped, the upper bits of RBP stay an address: only
			// RSP and flags are comparable
			c.Exempt |= 1 << RBP
		}
	case stCall:
		// call L; jmp End; L: inc r; ret [imm16]; End: mov qword [rsp-8-imm], 0
		r := g.pickFree(c.AddrRegs)
		inc := []byte{rexB(true, 0, r), 0xff, modrmRR(0, r)}
		ret := []byte{0xc3}
		pop := 0
		if t.imm >= 0 {
			pop = t.imm
			ret = []byte{0xc2, byte(pop), byte(pop >> 8)}
		}
		code := []byte{0xe8, 2, 0, 0, 0, 0xeb, byte(len(inc) + len(ret))}
		code = append(append(append(code, inc...), ret...), 0x48, 0xc7, 0x44, 0x24, byte(-8-pop), 0, 0, 0, 0)
		c.Code = code
	}
}
