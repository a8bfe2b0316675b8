package native

import "fmt"

// Exception vectors of FaultCase.
const (
	VecDE = 0  // divide error
	VecUD = 6  // invalid opcode
	VecGP = 13 // general protection
)

// A FaultCase is code whose first instruction must raise exception Vector
// in 64-bit mode, at its first byte, changing no register, flag or memory.
// It must not be given to Run: natively it kills the process (SIGFPE,
// SIGILL, SIGSEGV); package native's tests check that in child processes.
type FaultCase struct {
	Case
	Vector int
}

// FaultCases returns #UD cases (LOCK where it is not allowed, opcodes
// removed in 64-bit mode, reserved ModRM forms), #DE cases (division by
// zero, quotient overflow) and #GP cases (non-canonical addresses,
// misaligned cmpxchg16b). Memory operands address [rsi], and RSI (an
// AddrRegs register) points into Mem unless the case says otherwise.
func FaultCases() []FaultCase {
	var cs []FaultCase
	vec := VecUD
	add := func(name string, code ...byte) *FaultCase {
		c := Case{Name: name, Code: code, AddrRegs: 1 << RSI, RFLAGS: 0, BaseReg: RSI, IndexReg: -1}
		c.Regs[RSI] = 64
		for i := range c.Mem {
			c.Mem[i] = byte(i)
		}
		cs = append(cs, FaultCase{Case: c, Vector: vec})
		return &cs[len(cs)-1]
	}
	// lock on a register destination, or on an instruction that cannot be locked
	add("lock add r32, r32 (reg dest)", 0xf0, 0x01, 0xc0)
	add("lock xadd r32, r32 (reg dest)", 0xf0, 0x0f, 0xc1, 0xc0)
	add("lock not r32 (reg dest)", 0xf0, 0xf7, 0xd0)
	add("lock inc r8 (reg dest)", 0xf0, 0xfe, 0xc0)
	add("lock xchg r32, r32 (reg dest)", 0xf0, 0x87, 0xc1)
	add("lock bts r32, imm8 (reg dest)", 0xf0, 0x0f, 0xba, 0xe8, 0x01)
	add("lock cmp [rsi], eax", 0xf0, 0x39, 0x06)
	add("lock cmp [rsi], imm8", 0xf0, 0x83, 0x3e, 0x01)
	add("lock test [rsi], eax", 0xf0, 0x85, 0x06)
	add("lock mov [rsi], eax", 0xf0, 0x89, 0x06)
	add("lock mov eax, [rsi]", 0xf0, 0x8b, 0x06)
	add("lock add eax, [rsi] (reg dest)", 0xf0, 0x03, 0x06)
	add("lock bt [rsi], eax", 0xf0, 0x0f, 0xa3, 0x06)
	add("lock imul eax, [rsi]", 0xf0, 0x0f, 0xaf, 0x06)
	add("lock nop", 0xf0, 0x90)
	add("lock movzx eax, byte [rsi]", 0xf0, 0x0f, 0xb6, 0x06)
	add("lock lea eax, [rsi]", 0xf0, 0x8d, 0x06)
	// one-byte opcodes invalid in 64-bit mode
	for _, op := range []struct {
		n string
		b []byte
	}{
		{"push es", []byte{0x06}}, {"pop es", []byte{0x07}}, {"push cs", []byte{0x0e}},
		{"push ss", []byte{0x16}}, {"pop ss", []byte{0x17}}, {"push ds", []byte{0x1e}},
		{"pop ds", []byte{0x1f}}, {"daa", []byte{0x27}}, {"das", []byte{0x2f}},
		{"aaa", []byte{0x37}}, {"aas", []byte{0x3f}}, {"pusha", []byte{0x60}},
		{"popa", []byte{0x61}}, {"into", []byte{0xce}}, {"aam", []byte{0xd4, 0x0a}},
		{"aad", []byte{0xd5, 0x0a}}, {"salc (d6)", []byte{0xd6}},
		{"call far ptr16:32", []byte{0x9a, 0, 0, 0, 0, 0, 0}},
		{"jmp far ptr16:32", []byte{0xea, 0, 0, 0, 0, 0, 0}},
		{"82 /0 (group 1 alias)", []byte{0x82, 0xc0, 0x01}},
	} {
		add(op.n+" (invalid in 64-bit mode)", op.b...)
	}
	// reserved ModRM forms
	add("lea eax, eax (register operand)", 0x8d, 0xc0)
	add("cmpxchg8b eax (register operand)", 0x0f, 0xc7, 0xc8)
	add("fe /2 (reserved)", 0xfe, 0xd0)
	add("ff /7 (reserved)", 0xff, 0xf8)
	add("call far reg (ff /3 mod 11)", 0xff, 0xd8)
	add("jmp far reg (ff /5 mod 11)", 0xff, 0xe8)
	add("mov r/m16, sreg 6 (8c /6)", 0x8c, 0xf0)
	add("mov cs, eax (8e /1)", 0x8e, 0xc8)
	add("c6 /1 (reserved)", 0xc6, 0xc8, 0x00)
	add("c7 /1 (reserved)", 0xc7, 0xc8, 0, 0, 0, 0)
	add("prefetch eax (0f 0d /0, register operand)", 0x0f, 0x0d, 0xc0)
	add("prefetchw ecx (0f 0d /1, register operand)", 0x0f, 0x0d, 0xc9)
	add("0f 0d /7, register operand", 0x0f, 0x0d, 0xf8)
	add("rep movbe eax, [rsi] (f3 0f 38 f0)", 0xf3, 0x0f, 0x38, 0xf0, 0x06)
	add("rep movbe [rsi], eax (f3 0f 38 f1)", 0xf3, 0x0f, 0x38, 0xf1, 0x06)
	add("movbe eax, ecx (register operand)", 0x0f, 0x38, 0xf0, 0xc1)
	add("66 lfence", 0x66, 0x0f, 0xae, 0xe8)
	add("66 rex.w mfence", 0x66, 0x48, 0x0f, 0xae, 0xf0)
	add("66 sfence", 0x66, 0x0f, 0xae, 0xf8)
	add("ud2", 0x0f, 0x0b)
	add("ud1 eax, eax", 0x0f, 0xb9, 0xc0)

	// #DE: divisor zero (RCX = 0), quotient overflow
	vec = VecDE
	for _, w := range []struct {
		n   string
		pfx []byte
		op  byte
	}{{"r/m8", nil, 0xf6}, {"r/m16", []byte{0x66}, 0xf7}, {"r/m32", nil, 0xf7}, {"r/m64", []byte{0x48}, 0xf7}} {
		for _, d := range []int{6, 7} {
			n := map[int]string{6: "div", 7: "idiv"}[d]
			code := append(append([]byte(nil), w.pfx...), w.op, byte(0xc1|d<<3)) // div rcx-sized
			c := add(n+" "+w.n+" by zero (reg)", code...)
			c.Regs[RAX], c.Regs[RDX], c.Regs[RCX] = 0x1234, 0, 0xffffffff_00000000 // low half zero
			if w.n == "r/m64" {
				c.Regs[RCX] = 0
			}
			mcode := append(append([]byte(nil), w.pfx...), w.op, byte(0x06|d<<3)) // div [rsi], Mem zero there
			c = add(n+" "+w.n+" by zero (mem)", mcode...)
			for i := 0; i < 8; i++ {
				c.Mem[64+i] = 0
			}
			// overflow: dividend high half >= divisor (div), or MIN / -1 (idiv)
			c = add(n+" "+w.n+" quotient overflow", code...)
			if d == 6 {
				c.Regs[RAX], c.Regs[RDX], c.Regs[RCX] = ^uint64(0), ^uint64(0), 2
				if w.n == "r/m8" {
					c.Regs[RAX] = 0x0300 // AX / 2 = 0x180
				}
			} else {
				c.Regs[RCX] = ^uint64(0) // -1
				switch w.n {
				case "r/m8":
					c.Regs[RAX] = 0xff80 // AX = -128
				case "r/m16":
					c.Regs[RAX], c.Regs[RDX] = 0x8000, 0xffff
				case "r/m32":
					c.Regs[RAX], c.Regs[RDX] = 0x80000000, 0xffffffff
				default:
					c.Regs[RAX], c.Regs[RDX] = 1<<63, ^uint64(0)
				}
			}
		}
	}

	// #GP: non-canonical addresses, misaligned cmpxchg16b
	vec = VecGP
	for _, a := range []uint64{0x0000800000000000, 0xffff7fffffffffff, 0x8000000000000000} {
		for _, f := range []struct {
			n    string
			code []byte
		}{
			{"mov rax, [rsi]", []byte{0x48, 0x8b, 0x06}},
			{"mov [rsi], al", []byte{0x88, 0x06}},
			{"lock add [rsi], eax", []byte{0xf0, 0x01, 0x06}},
			{"xchg [rsi], rax", []byte{0x48, 0x87, 0x06}},
			{"movsb", []byte{0xa4}},
			{"stosq", []byte{0x48, 0xab}},
		} {
			c := add(fmt.Sprintf("%s, rsi/rdi %#x non-canonical", f.n, a), f.code...)
			c.AddrRegs, c.BaseReg = 0, -1
			c.Regs[RSI], c.Regs[RDI] = a, a
			if f.n == "movsb" {
				// the destination is fine; the source faults
				c.AddrRegs, c.Regs[RDI] = 1<<RDI, 32
			}
		}
	}
	// longer than 15 bytes
	long := make([]byte, 14, 16)
	for i := range long {
		long[i] = 0x3e
	}
	add("add eax, ecx with 14 DS prefixes (16 bytes)", append(long, 0x01, 0xc8)...)
	// the access starts canonical and ends beyond the canonical boundary
	c := add("mov rax, [rsi] crossing into non-canonical", 0x48, 0x8b, 0x06)
	c.AddrRegs, c.BaseReg, c.Regs[RSI] = 0, -1, 0x00007ffffffffffc
	add("lock cmpxchg16b [rsi+8] misaligned", 0xf0, 0x48, 0x0f, 0xc7, 0x4e, 0x08)
	add("cmpxchg16b [rsi+8] misaligned", 0x48, 0x0f, 0xc7, 0x4e, 0x08)
	return cs
}
