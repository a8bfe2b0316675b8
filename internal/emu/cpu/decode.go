package cpu

// insn is one decoded instruction.
type insn struct {
	op     uint16 // opcode: 0x00-0xff, 0x100|b for 0F b, 0x200|b for 0F 38 b
	length uint8
	osz    uint8 // operand size in bytes: 2, 4, 8
	asz    uint8 // address size in bytes: 2, 4, 8
	rep    uint8 // 0, 0xf3 or 0xf2
	lock   bool
	pfx66  bool  // an operand-size prefix, even if REX.W overrides it
	rex    uint8 // the REX byte, 0 if none
	seg    uint8 // segment of the memory operand (override or default)
	segOvr bool
	modrm  uint8
	mod    uint8
	reg    uint8 // ModRM.reg with REX.R
	rm     uint8 // ModRM.rm with REX.B (register operand when mod == 3)
	base   int8  // memory operand base register, -1 none, 16 RIP
	index  int8  // -1 none
	scale  uint8
	imm2   uint16 // far pointer selector; enter's nesting level
	disp   int32
	imm    uint64
}

// fetchState tracks the page instruction bytes come from.
type fetchState struct {
	lin  uint64 // linear address of the instruction
	ptr  hostPtr
	page uint64 // linear page of ptr
	n    int
	buf  [16]byte
}

// fetchByte returns byte i of the current instruction.
func (c *CPU) fetchByte(i int) byte {
	if i < c.fetch.n {
		return c.fetch.buf[i]
	}
	if i >= 15 {
		panic(gp(0))
	}
	for c.fetch.n <= i {
		lin := c.fetch.lin + uint64(c.fetch.n)
		if !c.code64() {
			lin &= 0xffffffff
		}
		if lin>>12 != c.fetch.page || c.fetch.ptr == nil {
			e := c.translate(lin, accExec, c.cpl() == 3)
			c.fetch.page = lin >> 12
			c.fetch.ptr = e.host
			if e.host == nil {
				c.fetch.buf[c.fetch.n] = byte(c.mmioRead(e.gpa|lin&0xfff, 1))
				c.fetch.n++
				c.fetch.page = ^uint64(0)
				continue
			}
		}
		c.fetch.buf[c.fetch.n] = pageByte(c.fetch.ptr, lin&0xfff)
		c.fetch.n++
	}
	return c.fetch.buf[i]
}

// Immediate kinds.
const (
	immNone = iota
	immB    // 8-bit
	immW    // 16-bit
	immZ    // 16 or 32 (sign-extended to 64 with REX.W)
	immV    // 16, 32 or 64 (mov r, imm)
	immWB   // enter: 16 then 8
	immP    // far pointer: 16/32 offset then 16 selector
	immM    // moffs: address-size
)

// oneByteModRM says which one-byte opcodes have a ModRM byte.
var oneByteModRM = func() (t [256]bool) {
	for _, r := range [][2]int{{0x00, 0x03}, {0x08, 0x0b}, {0x10, 0x13}, {0x18, 0x1b}, {0x20, 0x23}, {0x28, 0x2b},
		{0x30, 0x33}, {0x38, 0x3b}, {0x62, 0x63}, {0x69, 0x69}, {0x6b, 0x6b}, {0x80, 0x8f}, {0xc0, 0xc1},
		{0xc4, 0xc7}, {0xd0, 0xd3}, {0xd8, 0xdf}, {0xf6, 0xf7}, {0xfe, 0xff}} {
		for i := r[0]; i <= r[1]; i++ {
			t[i] = true
		}
	}
	return
}()

func oneByteImm(op uint8) int {
	switch {
	case op < 0x40 && op&7 == 4, op >= 0x70 && op <= 0x7f, op == 0x6a, op == 0x6b, op == 0x80, op == 0x82, op == 0x83,
		op == 0xa8, op >= 0xb0 && op <= 0xb7, op == 0xc0, op == 0xc1, op == 0xc6, op == 0xcd, op == 0xd4, op == 0xd5,
		op >= 0xe0 && op <= 0xe7, op == 0xeb:
		return immB
	case op < 0x40 && op&7 == 5, op == 0x68, op == 0x69, op == 0x81, op == 0xa9, op == 0xc7, op == 0xe8, op == 0xe9:
		return immZ
	case op >= 0xb8 && op <= 0xbf:
		return immV
	case op == 0xc2, op == 0xca:
		return immW
	case op == 0xc8:
		return immWB
	case op == 0x9a, op == 0xea:
		return immP
	case op >= 0xa0 && op <= 0xa3:
		return immM
	}
	return immNone
}

func twoByteModRM(op uint8) bool {
	switch {
	case op <= 0x03, op == 0x0d, op >= 0x10 && op <= 0x17, op >= 0x18 && op <= 0x1f, op >= 0x20 && op <= 0x23,
		op >= 0x28 && op <= 0x2f, op >= 0x40 && op <= 0x7f && op != 0x77, op >= 0x90 && op <= 0x9f, op >= 0xa3 && op <= 0xa5,
		op >= 0xab && op <= 0xaf, op >= 0xb0 && op <= 0xb7, op >= 0xb8 && op <= 0xbf, op >= 0xc0 && op <= 0xc7,
		op >= 0xd0:
		return true
	}
	return false
}

func twoByteImm(op uint8) int {
	switch {
	case op >= 0x80 && op <= 0x8f:
		return immZ
	case op == 0xa4, op == 0xac, op == 0xba, op == 0xc2, op == 0xc4, op == 0xc5, op == 0xc6, op == 0x70, op == 0x71,
		op == 0x72, op == 0x73:
		return immB
	}
	return immNone
}

// decode decodes the instruction at c.fetch.lin into c.in.
func (c *CPU) decode() {
	in := &c.in
	*in = insn{base: -1, index: -1, seg: segDS}
	c64 := c.code64()
	var defSize uint8 = 2
	if c64 || c.seg[segCS].DB != 0 {
		defSize = 4
	}
	osz, asz := defSize, defSize
	if c64 {
		asz = 8
	}
	i := 0
	var b byte
	opsizePfx := false
prefixes:
	for {
		b = c.fetchByte(i)
		switch b {
		case 0x66:
			opsizePfx = true
		case 0x67:
			if c64 {
				asz = 4
			} else {
				asz = 6 - defSize // 2 <-> 4
			}
		case 0xf0:
			in.lock = true
		case 0xf2, 0xf3:
			in.rep = b
		case 0x26, 0x2e, 0x36, 0x3e:
			if !c64 {
				in.seg, in.segOvr = (b>>3)&3, true
			}
		case 0x64, 0x65:
			in.seg, in.segOvr = b-0x60, true
		default:
			if c64 && b&0xf0 == 0x40 {
				in.rex = b
				i++
				continue
			}
			break prefixes
		}
		in.rex = 0 // a REX is ignored unless it comes right before the opcode
		i++
	}
	if opsizePfx {
		osz = 6 - defSize
		in.pfx66 = true
	}
	if in.rex&8 != 0 {
		osz = 8
	}
	i++
	op := uint16(b)
	hasModRM := false
	imm := immNone
	if b == 0x0f {
		b = c.fetchByte(i)
		i++
		op = 0x100 | uint16(b)
		switch {
		case b == 0x38:
			// Three-byte map: only movbe (0F 38 F0/F1) is implemented;
			// with F2 it is crc32, with F3 reserved (#UD).
			b = c.fetchByte(i)
			i++
			if (b != 0xf0 && b != 0xf1) || in.rep != 0 {
				panic(ud())
			}
			op = 0x200 | uint16(b)
			hasModRM = true
		case b == 0x3a, b == 0x0f, b >= 0x24 && b <= 0x27, b == 0xa6, b == 0xa7:
			panic(ud()) // SSSE3/SSE4, 3DNow!, mov to/from test registers
		case b == 0x77: // emms: no ModRM
		default:
			hasModRM = twoByteModRM(b)
			imm = twoByteImm(b)
		}
	} else {
		hasModRM = oneByteModRM[b]
		imm = oneByteImm(b)
		if (b == 0xf6 || b == 0xf7) && c.fetchByte(i)>>3&7 < 2 {
			if b == 0xf6 {
				imm = immB
			} else {
				imm = immZ
			}
		}
	}
	in.op = op
	in.osz, in.asz = osz, asz
	if c64 {
		// Near branches and stack operations default to 64 bits.
		switch {
		case op >= 0x50 && op <= 0x5f, op == 0x68, op == 0x6a, op == 0x8f, op == 0x9c, op == 0x9d,
			op == 0xc2, op == 0xc3, op == 0xc8, op == 0xc9, op == 0xe8, op == 0xe9, op == 0xeb,
			op >= 0x70 && op <= 0x7f, op >= 0xe0 && op <= 0xe3, op >= 0x180 && op <= 0x18f,
			op == 0x1a0, op == 0x1a1, op == 0x1a8, op == 0x1a9:
			if osz != 2 || op == 0xe8 || op == 0xe9 || op == 0xeb || (op >= 0x70 && op <= 0x7f) || op >= 0x180 && op <= 0x18f {
				in.osz = 8
			}
		}
	}
	switch op {
	case 0x62: // EVEX in 64-bit mode; bound takes a memory operand
		if c64 || c.fetchByte(i)>>6 == 3 {
			panic(ud())
		}
	case 0x8f: // pop r/m; XOP when ModRM.reg != 0
		if c.fetchByte(i)>>3&7 != 0 {
			panic(ud())
		}
	case 0xc4, 0xc5: // VEX in 64-bit mode or with a register ModRM; else les/lds
		if c64 || c.fetchByte(i)>>6 == 3 {
			panic(ud())
		}
	}
	if hasModRM {
		m := c.fetchByte(i)
		i++
		in.modrm = m
		in.mod = m >> 6
		in.reg = m>>3&7 | (in.rex&4)<<1
		in.rm = m&7 | (in.rex&1)<<3
		if op >= 0x120 && op <= 0x123 {
			in.mod = 3 // mov to/from CRn/DRn: always a register operand
		}
		if in.mod != 3 {
			i = c.decodeMem(i, m&7)
		}
	}
	switch imm {
	case immB:
		in.imm = uint64(int64(int8(c.fetchByte(i))))
		i++
	case immW:
		in.imm = uint64(c.fetchByte(i)) | uint64(c.fetchByte(i+1))<<8
		i += 2
	case immZ:
		if in.osz == 2 {
			in.imm = uint64(int64(int16(uint16(c.fetchByte(i)) | uint16(c.fetchByte(i+1))<<8)))
			i += 2
		} else {
			in.imm = uint64(int64(int32(c.le32(i))))
			i += 4
		}
	case immV:
		in.imm = c.leN(i, int(in.osz))
		i += int(in.osz)
	case immWB:
		in.imm = uint64(c.fetchByte(i)) | uint64(c.fetchByte(i+1))<<8
		in.imm2 = uint16(c.fetchByte(i + 2))
		i += 3
	case immP:
		if c64 {
			panic(ud())
		}
		if in.osz == 2 {
			in.imm = uint64(c.fetchByte(i)) | uint64(c.fetchByte(i+1))<<8
			i += 2
		} else {
			in.imm = uint64(c.le32(i))
			i += 4
		}
		in.imm2 = uint16(c.fetchByte(i)) | uint16(c.fetchByte(i+1))<<8
		i += 2
	case immM:
		in.imm = c.leN(i, int(asz))
		i += int(asz)
	}
	if i > 15 {
		panic(gp(0))
	}
	in.length = uint8(i)
}

// leN reads an n-byte (2, 4 or 8) little-endian immediate at offset i.
func (c *CPU) leN(i, n int) uint64 {
	switch n {
	case 2:
		return uint64(c.fetchByte(i)) | uint64(c.fetchByte(i+1))<<8
	case 4:
		return uint64(c.le32(i))
	}
	return uint64(c.le32(i)) | uint64(c.le32(i+4))<<32
}

func (c *CPU) le32(i int) uint32 {
	return uint32(c.fetchByte(i)) | uint32(c.fetchByte(i+1))<<8 | uint32(c.fetchByte(i+2))<<16 | uint32(c.fetchByte(i+3))<<24
}

// decodeMem decodes the memory form of ModRM (SIB, displacement).
func (c *CPU) decodeMem(i int, rm uint8) int {
	in := &c.in
	if in.asz == 2 {
		bases := [8][2]int8{{rBX, rSI}, {rBX, rDI}, {rBP, rSI}, {rBP, rDI}, {rSI, -1}, {rDI, -1}, {rBP, -1}, {rBX, -1}}
		in.base, in.index = bases[rm][0], bases[rm][1]
		in.scale = 1
		if in.mod == 0 && rm == 6 {
			in.base = -1
			in.disp = int32(int16(uint16(c.fetchByte(i)) | uint16(c.fetchByte(i+1))<<8))
			return i + 2
		}
		if !in.segOvr && in.base == rBP {
			in.seg = segSS
		}
		switch in.mod {
		case 1:
			in.disp = int32(int8(c.fetchByte(i)))
			i++
		case 2:
			in.disp = int32(int16(uint16(c.fetchByte(i)) | uint16(c.fetchByte(i+1))<<8))
			i += 2
		}
		return i
	}
	rexB := (in.rex & 1) << 3
	if rm == 4 {
		sib := c.fetchByte(i)
		i++
		in.scale = 1 << (sib >> 6)
		idx := sib>>3&7 | (in.rex&2)<<2
		if idx != 4 {
			in.index = int8(idx)
		}
		b := sib & 7
		if b == 5 && in.mod == 0 {
			in.base = -1
			in.disp = int32(c.le32(i))
			return i + 4
		}
		in.base = int8(b | rexB)
	} else if rm == 5 && in.mod == 0 {
		if c.code64() {
			in.base = 16
		}
		in.disp = int32(c.le32(i))
		return i + 4
	} else {
		in.base = int8(rm | rexB)
	}
	if !in.segOvr && (in.base == rSP || in.base == rBP) {
		in.seg = segSS
	}
	switch in.mod {
	case 1:
		in.disp = int32(int8(c.fetchByte(i)))
		i++
	case 2:
		in.disp = int32(c.le32(i))
		i += 4
	}
	return i
}

// ea computes the effective address (offset within the segment).
func (c *CPU) ea() uint64 {
	in := c.cur
	a := uint64(int64(in.disp))
	if in.base == 16 {
		a += c.rip // RIP of the next instruction
	} else if in.base >= 0 {
		a += c.regs[in.base]
	}
	if in.index >= 0 {
		a += c.regs[in.index] * uint64(in.scale)
	}
	switch in.asz {
	case 2:
		a &= 0xffff
	case 4:
		a &= 0xffffffff
	}
	return a
}
