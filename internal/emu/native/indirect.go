package native

import "encoding/binary"

// Indirect near jmp and call (FF /4, FF /2) to a target inside the code.
// The code computes the target position-independently (lea t, [rip+d]),
// stores it into the memory operand for the memory forms, and clears every
// copy of the code address afterwards, so that nothing compared depends on
// where the code runs:
//
//	jmp:  lea t, [rip+L]; [mov [m], t]; jmp t/[m]; inc x; L: mov t32, 0; [mov qword [m], 0]
//	call: lea t, [rip+F]; [mov [m], t]; call t/[m]; jmp E; F: inc x; ret
//	      E: mov qword [rsp-8], 0; mov t32, 0; [mov qword [m], 0]
//
// jmp skips the inc, call runs it once (call runs with RSP in Mem). The 66
// forms are left out: in 64-bit mode AMD jumps to the 16-bit operand
// (truncating RIP), Intel ignores the prefix.

func indirectForms(b *builder) {
	for _, w := range []int{32, 64} {
		tag := ""
		if w == 64 {
			tag = " (rex.w)"
		}
		j := tmpl{sem: sIndirect, sub: 4, osize: w, modrm: true, digit: 4, wRM: 64, op: []byte{0xff}}
		b.modes("branch", "jmp r/m64"+tag, j, false, false, false)
		c := tmpl{sem: sIndirect, sub: 2, stack: true, osize: w, modrm: true, digit: 2, wRM: 64, op: []byte{0xff}}
		b.modes("stack", "call r/m64"+tag, c, false, false, false)
	}
}

// asm concatenates instructions and their relocations.
type asm struct {
	code   []byte
	relocs []Reloc
}

func (a *asm) add(b []byte, rs []Reloc) {
	for _, r := range rs {
		r.Off += len(a.code)
		r.End += len(a.code)
		a.relocs = append(a.relocs, r)
	}
	a.code = append(a.code, b...)
}

// movZero32 is "mov r32, 0" (B8+r), which leaves the flags alone.
func movZero32(r int) []byte {
	var b []byte
	if r >= 8 {
		b = append(b, 0x41)
	}
	return append(b, 0xb8+byte(r&7), 0, 0, 0, 0)
}

// indirect wraps the encoded FF /2 or FF /4 instruction (c.Code) as the
// comment at the top describes.
func (g *gen) indirect() {
	t := g.t
	c := &g.c
	mem := t.mode != mReg
	avoid := g.addr | c.AddrRegs | 1<<RSP
	tr := g.rmR // the register holding the target
	if mem {
		tr = g.pickFree(avoid)
	}
	x := g.pickFree(avoid | 1<<tr)
	var store, clear []byte
	var storeRel, clearRel []Reloc
	if mem {
		mv := *t
		mv.sem, mv.op, mv.digit, mv.osize, mv.rex, mv.stack = sNone, []byte{0x89}, -1, 64, 1, false
		store, storeRel = g.encodeT(&mv, tr, 0)
		z := mv
		z.op, z.digit, z.imm = []byte{0xc7}, 0, 4
		clear, clearRel = g.encodeT(&z, 0, 0)
	}
	inc := []byte{rexB(true, 0, x), 0xff, modrmRR(0, x)}
	a := &asm{}
	a.add([]byte{rexB(true, tr, 0), 0x8d, byte(tr&7)<<3 | 5, 0, 0, 0, 0}, nil) // lea tr, [rip+target]
	a.add(store, storeRel)
	focus := len(a.code)
	a.add(c.Code, c.Relocs)
	var target int
	if t.sub == 4 {
		a.add(inc, nil)
		target = len(a.code)
	} else {
		fn := append(inc, 0xc3)
		a.add([]byte{0xeb, byte(len(fn))}, nil)
		target = len(a.code)
		a.add(fn, nil)
		a.add([]byte{0x48, 0xc7, 0x44, 0x24, 0xf8, 0, 0, 0, 0}, nil) // mov qword [rsp-8], 0
	}
	a.add(movZero32(tr), nil)
	a.add(clear, clearRel)
	binary.LittleEndian.PutUint32(a.code[3:], uint32(target-7))
	c.Code, c.Relocs, c.Focus = a.code, a.relocs, focus
}
