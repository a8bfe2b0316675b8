package native

import "fmt"

// miscForms adds the integer instructions the main table leaves out:
// mov with a moffs operand (A0-A3), popcnt and lzcnt, movbe, the hint
// NOPs and prefetches, fences, clflush and fwait.
func miscForms(b *builder) {
	// mov al/ax/eax/rax, moffs and back: 64-bit moffs, or 32-bit with 67
	for _, f := range []struct {
		op   byte
		name string
	}{{0xa0, "mov %[1]s, moffs%[2]d"}, {0xa2, "mov moffs%[2]d, %[1]s"}} {
		widths(true, func(w int, rex int8, tag string) {
			o := f.op
			if w != 8 {
				o++
			}
			t := tmpl{osize: osizeOf(w), op: []byte{o}, wRM: w, rex: rex, mode: mMoffs, implicit: bRAX}
			n := fmt.Sprintf(f.name, accName(w), w) + tag
			b.emit("mov", n, t)
			t.a32 = true
			b.emit("addr32", "addr32 "+n, t)
		})
	}

	// popcnt, lzcnt (F3 0F B8, F3 0F BD)
	widths(false, func(w int, rex int8, tag string) {
		t := tmpl{pfx: 0xf3, osize: w, modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x0f, 0xb8}}
		b.modes("popcnt", fmt.Sprintf("popcnt %s, %s", rr(w), rm(w)), t, false, false, false)
		t.sem, t.op = sLzcnt, []byte{0x0f, 0xbd}
		b.modes("popcnt", fmt.Sprintf("lzcnt %s, %s", rr(w), rm(w)), t, false, false, false)
	})
	// movbe (0F 38 F0, F1): memory operands only
	widths(false, func(w int, rex int8, tag string) {
		t := tmpl{osize: w, modrm: true, digit: -1, wReg: w, wRM: w, rex: rex, op: []byte{0x0f, 0x38, 0xf0}}
		b.modes("mov", fmt.Sprintf("movbe %s, m%d", rr(w), w), t, true, false, false)
		t.op = []byte{0x0f, 0x38, 0xf1}
		b.modes("mov", fmt.Sprintf("movbe m%d, %s", w, rr(w)), t, true, false, false)
	})

	// Hint NOPs: 0F 18 /0-/3 prefetch, the rest and 0F 19-1E reserved
	// NOPs (any operand); 0F 0D /0-/7 prefetch (memory only: a register
	// operand is #UD). None of them changes anything.
	for d := 0; d < 8; d++ {
		t := tmpl{osize: 32, modrm: true, digit: d, wRM: 8, op: []byte{0x0f, 0x18}}
		b.modes("nop", fmt.Sprintf("hint nop 0f 18 /%d", d), t, false, false, false)
		t.op = []byte{0x0f, 0x0d}
		b.modes("nop", fmt.Sprintf("prefetch 0f 0d /%d m8", d), t, true, false, false)
	}
	for op := byte(0x19); op <= 0x1e; op++ {
		t := tmpl{osize: 32, modrm: true, digit: int(op & 7), wRM: 8, op: []byte{0x0f, op}}
		b.modes("nop", fmt.Sprintf("hint nop 0f %02x /%d", op, op&7), t, false, false, false)
	}
	b.emit("nop", "endbr64", tmpl{op: []byte{0xf3, 0x0f, 0x1e, 0xfa}})
	b.emit("nop", "endbr32", tmpl{op: []byte{0xf3, 0x0f, 0x1e, 0xfb}})

	// fences (ModRM.rm ignored), clflush, clflushopt (66), fwait
	for _, f := range []struct {
		n     string
		modrm byte
	}{{"lfence", 0xe8}, {"mfence", 0xf0}, {"sfence", 0xf8}} {
		b.emit("misc", f.n, tmpl{op: []byte{0x0f, 0xae, f.modrm}})
		b.emit("misc", f.n+" (rm 5)", tmpl{op: []byte{0x0f, 0xae, f.modrm | 5}})
	}
	b.modes("misc", "clflush m8", tmpl{osize: 32, modrm: true, digit: 7, wRM: 8, op: []byte{0x0f, 0xae}}, true, false, false)
	b.modes("misc", "clflushopt m8", tmpl{osize: 16, modrm: true, digit: 7, wRM: 8, op: []byte{0x0f, 0xae}}, true, false, false)
	b.emit("misc", "fwait", tmpl{op: []byte{0x9b}})
}
