package cpu

import (
	"bufio"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// goldenCase is one instruction with its inputs and the mask of RFLAGS
// bits the manuals define for it (the rest are compared nowhere).
type goldenCase struct {
	insn       []byte
	mask       uint64
	a, b, c, d uint64
	flags      uint64
}

var goldenVals = []uint64{0, 1, 0x7f, 0x80, 0xff, 0x8000, 0x80000000, 0x8000000000000000, 0xffffffffffffffff, 0x123456789abcdef0}

// goldenCases lists the differential cases: ALU, unary, shifts and
// rotates, double shifts, multiplies, bit scans and bit tests, in every
// operand size, on rax (destination), rbx (source) and cl (count).
func goldenCases() []goldenCase {
	var out []goldenCase
	n := 0
	flagsFor := func() uint64 {
		n++
		if n%2 == 0 {
			return 0x202 | 0x8d5
		}
		return 0x202
	}
	sized := func(size int, op8, op []byte, modrm byte) []byte {
		var b []byte
		switch size {
		case 2:
			b = append(b, 0x66)
		case 8:
			b = append(b, 0x48)
		}
		if size == 1 {
			b = append(b, op8...)
		} else {
			b = append(b, op...)
		}
		return append(b, modrm)
	}
	sizes := []int{1, 2, 4, 8}
	for _, size := range sizes {
		for k := byte(0); k < 8; k++ {
			mask := uint64(0x8d5)
			if k == 1 || k == 4 || k == 6 {
				mask = 0x8c5
			}
			for _, a := range goldenVals {
				for _, b := range goldenVals {
					out = append(out, goldenCase{sized(size, []byte{k * 8}, []byte{k*8 + 1}, 0xd8), mask, a, b, 0, 0, flagsFor()})
				}
			}
		}
		for _, u := range []struct {
			reg  byte
			op8  byte
			op   byte
			mask uint64
		}{{0, 0xfe, 0xff, 0x8d5}, {1, 0xfe, 0xff, 0x8d5}, {3, 0xf6, 0xf7, 0x8d5}, {2, 0xf6, 0xf7, 0x8d5}} {
			for _, a := range goldenVals {
				out = append(out, goldenCase{sized(size, []byte{u.op8}, []byte{u.op}, 0xc0|u.reg<<3), u.mask, a, 0, 0, 0, flagsFor()})
			}
		}
		bits := uint64(size * 8)
		for sop := byte(0); sop < 8; sop++ {
			if sop == 6 {
				continue
			}
			for _, cnt := range []uint64{0, 1, 3, 7, 8, 9, 16, 17, 31, 32, 33, 63} {
				c := cnt & 31
				if size == 8 {
					c = cnt & 63
				}
				mask := uint64(0x8d5)
				if c != 0 {
					switch sop {
					case 0, 1, 2, 3: // rotates: CF, and OF for a count of 1
						mask = 0x8d5 &^ 0x800
						if c == 1 {
							mask |= 0x800
						}
					default:
						mask = 0x8c5 &^ 0x800
						if c == 1 {
							mask |= 0x800
						}
						if c > bits {
							mask &^= 1
						}
					}
				}
				for _, a := range goldenVals {
					out = append(out, goldenCase{sized(size, []byte{0xd2}, []byte{0xd3}, 0xc0|sop<<3), mask, a, 0, cnt, 0, flagsFor()})
				}
			}
		}
		if size == 1 {
			continue
		}
		for _, op := range []byte{0xa5, 0xad} { // shld, shrd by cl
			for _, cnt := range []uint64{0, 1, 4, 8, 15, 16, 31, 33, 63} {
				c := cnt & 31
				if size == 8 {
					c = cnt & 63
				}
				if c > bits {
					continue // undefined result
				}
				mask := uint64(0x8c5 &^ 0x800)
				if c == 0 {
					mask = 0x8d5
				} else if c == 1 {
					mask |= 0x800
				}
				for _, a := range goldenVals {
					for _, b := range goldenVals[:6] {
						out = append(out, goldenCase{sized(size, nil, []byte{0x0f, op}, 0xd8), mask, a, b, cnt, 0, flagsFor()})
					}
				}
			}
		}
		for _, m := range []struct {
			op    []byte
			modrm byte
			mask  uint64
		}{
			{[]byte{0x0f, 0xaf}, 0xc3, 0x801}, // imul %rbx, %rax
			{[]byte{0xf7}, 0xe3, 0x801},       // mul %rbx
			{[]byte{0xf7}, 0xeb, 0x801},       // imul %rbx
			{[]byte{0x0f, 0xbc}, 0xc3, 0x40},  // bsf %rbx, %rax
			{[]byte{0x0f, 0xbd}, 0xc3, 0x40},  // bsr %rbx, %rax
			{[]byte{0x0f, 0xa3}, 0xd8, 0x1},   // bt %rbx, %rax
			{[]byte{0x0f, 0xab}, 0xd8, 0x1},   // bts
			{[]byte{0x0f, 0xb3}, 0xd8, 0x1},   // btr
			{[]byte{0x0f, 0xbb}, 0xd8, 0x1},   // btc
		} {
			for _, a := range goldenVals {
				for _, b := range goldenVals {
					out = append(out, goldenCase{sized(size, nil, m.op, m.modrm), m.mask, a, b, 0, 0, flagsFor()})
				}
			}
		}
	}
	// setcc and cmovcc under every combination of CF, ZF, SF, OF and PF
	// of interest (cmov with a 32-bit destination zero-extends even when
	// the condition is false).
	for fi := 0; fi < 32; fi++ {
		fl := uint64(0x202)
		for bit, f := range []uint64{0x1, 0x40, 0x80, 0x800, 0x4} {
			if fi>>bit&1 != 0 {
				fl |= f
			}
		}
		for cc := byte(0); cc < 16; cc++ {
			out = append(out,
				goldenCase{[]byte{0x0f, 0x90 + cc, 0xc0}, 0x8d5, 0x1234567812345678, 0, 0, 0, fl},
				goldenCase{[]byte{0x48, 0x0f, 0x40 + cc, 0xc3}, 0x8d5, 0x1111111111111111, 0x2222222222222222, 0, 0, fl},
				goldenCase{[]byte{0x0f, 0x40 + cc, 0xc3}, 0x8d5, 0x1111111111111111, 0x2222222222222222, 0, 0, fl})
		}
	}
	// xadd, cmpxchg (register forms, accumulator rax, destination rcx),
	// xchg, movzx/movsx, cbw/cwd families, lahf/sahf, bswap.
	for _, a := range goldenVals {
		for _, b := range goldenVals {
			for _, insn := range [][]byte{
				{0x48, 0x0f, 0xc1, 0xd8}, {0x0f, 0xc1, 0xd8}, {0x66, 0x0f, 0xc1, 0xd8}, {0x0f, 0xc0, 0xd8}, // xadd %rbx/%ebx/%bx/%bl, %rax...
				{0x48, 0x87, 0xd8}, {0x87, 0xd8}, {0x86, 0xfc}, // xchg; xchg %bh, %ah
			} {
				out = append(out, goldenCase{insn, 0x8d5, a, b, 0, 0, flagsFor()})
			}
			for _, c := range []uint64{a, b, 0x7f} {
				for _, insn := range [][]byte{{0x48, 0x0f, 0xb1, 0xd9}, {0x0f, 0xb1, 0xd9}, {0x66, 0x0f, 0xb1, 0xd9}, {0x0f, 0xb0, 0xd9}} {
					out = append(out, goldenCase{insn, 0x8d5, a, b, c, 0, flagsFor()})
				}
			}
		}
		for _, insn := range [][]byte{
			{0x0f, 0xb6, 0xc3}, {0x48, 0x0f, 0xb6, 0xc3}, {0x66, 0x0f, 0xb6, 0xc3}, {0x0f, 0xb7, 0xc3}, {0x48, 0x0f, 0xb7, 0xc3},
			{0x0f, 0xbe, 0xc3}, {0x48, 0x0f, 0xbe, 0xc3}, {0x66, 0x0f, 0xbe, 0xc3}, {0x0f, 0xbf, 0xc3}, {0x48, 0x0f, 0xbf, 0xc3},
			{0x48, 0x63, 0xc3}, {0x0f, 0xbe, 0xc7}, // movsxd; movsx %bh, %eax
			{0x66, 0x98}, {0x98}, {0x48, 0x98}, {0x66, 0x99}, {0x99}, {0x48, 0x99},
			{0x9f}, {0x9e}, {0x0f, 0xc8}, {0x48, 0x0f, 0xc8},
		} {
			out = append(out, goldenCase{insn, 0x8d5, a, a ^ 0x5a5a5a5a5a5a5a5a, 0, 0, flagsFor()})
		}
	}
	// popcnt and lzcnt (F3 must precede REX).
	for _, op := range []byte{0xb8, 0xbd} {
		mask := uint64(0x8d5)
		if op == 0xbd {
			mask = 0x41
		}
		for _, pfx := range [][]byte{{0x66, 0xf3}, {0xf3}, {0xf3, 0x48}} {
			for _, b := range goldenVals {
				insn := append(append([]byte{}, pfx...), 0x0f, op, 0xc3)
				out = append(out, goldenCase{insn, mask, 0x5555, b, 0, 0, flagsFor()})
			}
		}
	}
	// mul/imul of bytes (ax result).
	for _, modrm := range []byte{0xe3, 0xeb} {
		for _, a := range goldenVals {
			for _, b := range goldenVals {
				out = append(out, goldenCase{[]byte{0xf6, modrm}, 0x801, a, b, 0, 0, flagsFor()})
			}
		}
	}
	return out
}

// TestALUGolden replays instructions whose results this host's CPU
// computed (testdata/alu_golden.txt.gz, made by testdata/hostexec.c) and
// compares registers and the defined flags.
func TestALUGolden(t *testing.T) {
	if path := os.Getenv("GODWIT_ALU_CASES"); path != "" {
		var sb strings.Builder
		for _, k := range goldenCases() {
			fmt.Fprintf(&sb, "%x %x %x %x %x %x %x\n", k.insn, k.mask, k.a, k.b, k.c, k.d, k.flags)
		}
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Skipf("wrote %s", path)
	}
	f, err := os.Open("testdata/alu_golden.txt.gz")
	if err != nil {
		t.Skipf("golden table missing: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	v := newVM(t, 64, []byte{0x90})
	v.c.TrapExceptions = true
	sc := bufio.NewScanner(zr)
	lines, failures := 0, 0
	for sc.Scan() {
		var insnHex string
		var mask, a, b, c, d, fl, ra, rb, rc, rd, rf uint64
		if _, err := fmt.Sscanf(sc.Text(), "%s %x %x %x %x %x %x -> %x %x %x %x %x",
			&insnHex, &mask, &a, &b, &c, &d, &fl, &ra, &rb, &rc, &rd, &rf); err != nil {
			t.Fatalf("line %d: %v", lines+1, err)
		}
		lines++
		insn, _ := hex.DecodeString(insnHex)
		v.mem.WritePhys(tCode, insn)
		v.c.SetRegs(hv.Regs{RAX: a, RBX: b, RCX: c, RDX: d, RIP: tCode, RSP: tStack, RFLAGS: fl})
		if ex := v.c.Step(); ex.Kind != ExitNone {
			t.Fatalf("%s: exit %+v", insnHex, ex)
		}
		r := v.c.GetRegs()
		if r.RAX != ra || r.RBX != rb || r.RCX != rc || r.RDX != rd || r.RFLAGS&mask != rf&mask {
			failures++
			if failures <= 20 {
				t.Errorf("% x with rax=%#x rbx=%#x rcx=%#x flags=%#x:\n got  rax=%#x rbx=%#x rcx=%#x rdx=%#x flags=%#x\n want rax=%#x rbx=%#x rcx=%#x rdx=%#x flags=%#x (mask %#x)",
					insn, a, b, c, fl, r.RAX, r.RBX, r.RCX, r.RDX, r.RFLAGS&mask, ra, rb, rc, rd, rf&mask, mask)
			}
		}
	}
	if failures > 0 {
		t.Errorf("%d of %d golden cases differ", failures, lines)
	}
	t.Logf("%d golden cases", lines)
}
