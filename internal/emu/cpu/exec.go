package cpu

import "math/bits"

// exec executes the decoded instruction c.cur; c.rip already points past it.
func (c *CPU) exec() {
	in := c.cur
	op := in.op
	osz := in.osz
	c64 := c.code64()
	if in.lock {
		c.checkLock()
	}
	if op < 0x40 && op&7 < 6 {
		c.aluOp(uint8(op>>3), uint8(op&7))
		return
	}
	switch op {
	case 0x06, 0x0e, 0x16, 0x1e: // push es/cs/ss/ds
		if c64 {
			panic(ud())
		}
		c.push(uint64(c.seg[op>>3].Selector), int(osz))
	case 0x07, 0x17, 0x1f: // pop es/ss/ds
		if c64 {
			panic(ud())
		}
		v := c.peek(0, int(osz))
		c.loadSeg(int(op>>3), uint16(v))
		c.pop(int(osz))
		if op == 0x17 {
			c.shadow = shadowKindMovSS
		}
	case 0x27, 0x2f, 0x37, 0x3f: // daa das aaa aas
		if c64 {
			panic(ud())
		}
		c.bcd(uint8(op))
	case 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47: // inc r
		r := uint8(op & 7)
		d := c.getReg(r, osz)
		c.setReg(r, osz, d+1)
		c.setLazy(lfInc, osz, d, 1, d+1, 0)
	case 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f: // dec r
		r := uint8(op & 7)
		d := c.getReg(r, osz)
		c.setReg(r, osz, d-1)
		c.setLazy(lfDec, osz, d, 1, d-1, 0)
	case 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57:
		r := uint8(op&7) | (in.rex&1)<<3
		c.push(c.getReg(r, osz), int(osz))
	case 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f:
		r := uint8(op&7) | (in.rex&1)<<3
		v := c.pop(int(osz))
		c.setReg(r, osz, v)
	case 0x60: // pusha
		if c64 {
			panic(ud())
		}
		sp := c.getReg(rSP, osz)
		for r := uint8(0); r < 8; r++ {
			v := c.getReg(r, osz)
			if r == rSP {
				v = sp
			}
			c.push(v, int(osz))
		}
	case 0x61: // popa
		if c64 {
			panic(ud())
		}
		for r := 7; r >= 0; r-- {
			v := c.pop(int(osz))
			if r != rSP {
				c.setReg(uint8(r), osz, v)
			}
		}
	case 0x62: // bound: #BR unless lower <= index <= upper, signed
		off := c.ea()
		lo := c.readMem(int(in.seg), off, int(osz))
		hi := c.readMem(int(in.seg), (off+uint64(osz))&c.aszMask(), int(osz))
		idx := signExtend(c.getReg(in.reg, osz), osz)
		if idx < signExtend(lo, osz) || idx > signExtend(hi, osz) {
			panic(fault{vec: vecBR})
		}
	case 0x63:
		if !c64 {
			panic(ud()) // arpl
		}
		v := c.readRM(4)
		c.setReg(in.reg, osz, uint64(int64(int32(v))))
	case 0x68, 0x6a:
		c.push(in.imm, int(osz))
	case 0x69, 0x6b:
		c.setReg(in.reg, osz, c.imul2(c.readRM(osz), in.imm, osz))
	case 0x6c, 0x6d, 0x6e, 0x6f:
		c.stringIO(uint8(op))
	case 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x7f:
		if c.cond(uint8(op & 0xf)) {
			c.jump(c.rip+in.imm, osz)
		}
	case 0x80, 0x81, 0x82, 0x83:
		if op == 0x82 && c64 {
			panic(ud())
		}
		size := osz
		if op&1 == 0 {
			size = 1
		}
		aop := in.reg & 7
		src := in.imm & sizeMask(size)
		if aop == 7 {
			c.alu(7, c.readRM(size), src, size)
			return
		}
		c.rmwRM(size, func(d uint64) uint64 { return c.alu(aop, d, src, size) })
	case 0x84, 0x85:
		size := opSize(op, osz)
		c.alu(4, c.readRM(size), c.getReg(in.reg, size), size)
	case 0x86, 0x87: // xchg
		size := opSize(op, osz)
		r := c.getReg(in.reg, size)
		if in.mod == 3 {
			c.setReg(in.reg, size, c.getReg(in.rm, size))
			c.setReg(in.rm, size, r)
			return
		}
		var old uint64
		c.rmwLin(c.linear(int(in.seg), c.ea(), int(size), true), int(size), true, func(o uint64) uint64 { old = o; return r })
		c.setReg(in.reg, size, old)
	case 0x88, 0x89:
		size := opSize(op, osz)
		c.writeRM(size, c.getReg(in.reg, size))
	case 0x8a, 0x8b:
		size := opSize(op, osz)
		c.setReg(in.reg, size, c.readRM(size))
	case 0x8c: // mov r/m, sreg
		if in.reg&7 > 5 {
			panic(ud())
		}
		v := uint64(c.seg[in.reg&7].Selector)
		if in.mod == 3 {
			c.setReg(in.rm, osz, v)
		} else {
			c.writeRM(2, v)
		}
	case 0x8d: // lea
		if in.mod == 3 {
			panic(ud())
		}
		c.setReg(in.reg, osz, c.ea())
	case 0x8e: // mov sreg, r/m
		s := int(in.reg & 7)
		if s == segCS || s > 5 {
			panic(ud())
		}
		c.loadSeg(s, uint16(c.readRM(2)))
		if s == segSS {
			c.shadow = shadowKindMovSS
		}
	case 0x8f: // pop r/m
		if in.reg&7 != 0 {
			panic(ud())
		}
		v := c.peek(0, int(osz))
		old := c.regs[rSP]
		c.pop(int(osz))
		func() {
			defer func() {
				if r := recover(); r != nil {
					c.regs[rSP] = old
					panic(r)
				}
			}()
			c.writeRM(osz, v)
		}()
	case 0x90: // nop and pause; with REX.B, xchg %r8, %rax
		if in.rex&1 != 0 {
			r := c.getReg(8, osz)
			c.setReg(8, osz, c.getReg(rAX, osz))
			c.setReg(rAX, osz, r)
		}
	case 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97:
		r := uint8(op&7) | (in.rex&1)<<3
		v := c.getReg(r, osz)
		c.setReg(r, osz, c.getReg(rAX, osz))
		c.setReg(rAX, osz, v)
	case 0x98: // cbw cwde cdqe
		switch osz {
		case 2:
			c.setReg(rAX, 2, uint64(int64(int8(c.regs[rAX]))))
		case 4:
			c.setReg(rAX, 4, uint64(int64(int16(c.regs[rAX]))))
		default:
			c.regs[rAX] = uint64(int64(int32(c.regs[rAX])))
		}
	case 0x99: // cwd cdq cqo
		sign := c.getReg(rAX, osz)&signBit(osz) != 0
		v := uint64(0)
		if sign {
			v = ^uint64(0)
		}
		c.setReg(rDX, osz, v)
	case 0x9a: // call far ptr
		c.callFar(uint16(in.imm2), in.imm, osz)
	case 0x9b:
		c.fwait()
	case 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf:
		c.execX87()
	case 0x9c: // pushf
		if c.flags&flagVM != 0 && c.flags&flagIOPL != flagIOPL {
			panic(gp(0))
		}
		c.push(c.getFlags()&^(flagVM|flagRF), int(osz))
	case 0x9d: // popf
		if c.flags&flagVM != 0 && c.flags&flagIOPL != flagIOPL {
			panic(gp(0))
		}
		v := c.pop(int(osz))
		c.writeFlagsPriv(v, int(osz))
	case 0x9e: // sahf
		f := c.getFlags()
		c.flags = f&^0xd5 | c.regs[rAX]>>8&0xd5 | 2
	case 0x9f: // lahf
		f := c.getFlags()
		c.regs[rAX] = c.regs[rAX]&^0xff00 | (f&0xd5|2)<<8
	case 0xa0, 0xa1: // mov al/eax, moffs
		size := opSize(op, osz)
		c.setReg(rAX, size, c.readMem(int(in.seg), in.imm, int(size)))
	case 0xa2, 0xa3:
		size := opSize(op, osz)
		c.writeMem(int(in.seg), in.imm, int(size), c.getReg(rAX, size))
	case 0xa4, 0xa5, 0xa6, 0xa7, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf:
		c.stringOp(uint8(op))
	case 0xa8, 0xa9:
		size := opSize(op, osz)
		c.alu(4, c.getReg(rAX, size), in.imm&sizeMask(size), size)
	case 0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7:
		c.setReg(uint8(op&7)|(in.rex&1)<<3, 1, in.imm)
	case 0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf:
		c.setReg(uint8(op&7)|(in.rex&1)<<3, osz, in.imm)
	case 0xc0, 0xc1, 0xd0, 0xd1, 0xd2, 0xd3:
		size := opSize(op, osz)
		var cnt uint64
		switch op {
		case 0xc0, 0xc1:
			cnt = in.imm
		case 0xd0, 0xd1:
			cnt = 1
		default:
			cnt = c.regs[rCX]
		}
		sop := in.reg & 7
		c.rmwRM(size, func(d uint64) uint64 { return c.shift(sop, d, cnt, size) })
	case 0xc2, 0xc3: // ret near
		t := c.peek(0, int(osz))
		c.jump(t, osz)
		c.setSP(c.regs[rSP] + uint64(osz) + in.imm&0xffff*boolU(op == 0xc2))
	case 0xc4, 0xc5: // les, lds
		if c64 || in.mod == 3 {
			panic(ud())
		}
		s := segES
		if op == 0xc5 {
			s = segDS
		}
		c.loadFarPtr(s)
	case 0xc6, 0xc7:
		if in.reg&7 != 0 {
			panic(ud())
		}
		size := opSize(op, osz)
		c.writeRM(size, in.imm)
	case 0xc8: // enter
		c.enter(in.imm, uint64(in.imm2&31), osz)
	case 0xc9: // leave
		c.setSP(c.regs[rBP])
		c.setReg(rBP, osz, c.pop(int(osz)))
	case 0xca, 0xcb:
		c.retFar(osz, in.imm&0xffff*boolU(op == 0xca))
	case 0xcc:
		panic(softInt{vecBP})
	case 0xcd:
		panic(softInt{int(uint8(in.imm))})
	case 0xce:
		if c64 {
			panic(ud())
		}
		if c.getFlags()&flagOF != 0 {
			panic(softInt{vecOF})
		}
	case 0xcf:
		c.iret(int(osz))
	case 0xd4, 0xd5: // aam, aad
		if c64 {
			panic(ud())
		}
		c.aam(op == 0xd4, uint8(in.imm))
	case 0xd7: // xlat
		off := (c.regs[rBX] + c.regs[rAX]&0xff) & c.aszMask()
		c.setReg(rAX, 1, c.readMem(int(in.seg), off, 1))
	case 0xe0, 0xe1, 0xe2: // loopnz loopz loop
		cnt := (c.regs[rCX] - 1) & c.aszMask()
		c.setRegASZ(rCX, cnt)
		take := cnt != 0
		if op == 0xe0 {
			take = take && !c.zf()
		} else if op == 0xe1 {
			take = take && c.zf()
		}
		if take {
			c.jump(c.rip+in.imm, osz)
		}
	case 0xe3: // jcxz
		if c.regs[rCX]&c.aszMask() == 0 {
			c.jump(c.rip+in.imm, osz)
		}
	case 0xe4, 0xe5, 0xec, 0xed: // in
		size := ioSize(op, osz)
		port := uint16(in.imm & 0xff)
		if op >= 0xec {
			port = uint16(c.regs[rDX])
		}
		c.checkIO(port, size)
		c.setReg(rAX, uint8(size), uint64(c.portIn(port, size)))
	case 0xe6, 0xe7, 0xee, 0xef: // out
		size := ioSize(op, osz)
		port := uint16(in.imm & 0xff)
		if op >= 0xee {
			port = uint16(c.regs[rDX])
		}
		c.checkIO(port, size)
		c.portOut(port, size, uint32(c.getReg(rAX, uint8(size))))
	case 0xe8: // call rel
		t := c.rip + in.imm
		ret := c.rip
		c.jump(t, osz)
		func() {
			defer func() {
				if r := recover(); r != nil {
					c.rip = ret
					panic(r)
				}
			}()
			c.push(ret, int(osz))
		}()
	case 0xe9, 0xeb:
		c.jump(c.rip+in.imm, osz)
	case 0xea:
		c.jmpFar(uint16(in.imm2), in.imm, osz)
	case 0xf1: // int1 (icebp): a #DB trap
		panic(trapDB{})
	case 0xf4: // hlt
		if c.cpl() != 0 {
			panic(gp(0))
		}
		c.exit = Exit{Kind: ExitHLT}
	case 0xf5:
		c.setArith(c.getFlags() ^ flagCF)
	case 0xf6, 0xf7:
		c.group3(opSize(op, osz))
	case 0xf8:
		c.setArith(c.getFlags() &^ flagCF)
	case 0xf9:
		c.setArith(c.getFlags() | flagCF)
	case 0xfa: // cli
		c.checkIOPL()
		c.flags = c.getFlags() &^ flagIF
	case 0xfb: // sti
		c.checkIOPL()
		f := c.getFlags()
		if f&flagIF == 0 {
			c.shadow = shadowKindSTI
			c.irqCheck = true
		}
		c.flags = f | flagIF
	case 0xfc:
		c.flags &^= flagDF
	case 0xfd:
		c.flags |= flagDF
	case 0xfe:
		switch in.reg & 7 {
		case 0:
			c.rmwRM(1, func(d uint64) uint64 { c.setLazy(lfInc, 1, d, 1, d+1, 0); return d + 1 })
		case 1:
			c.rmwRM(1, func(d uint64) uint64 { c.setLazy(lfDec, 1, d, 1, d-1, 0); return d - 1 })
		default:
			panic(ud())
		}
	case 0xff:
		c.group5()
	default:
		if op >= 0x200 {
			c.movbe(op == 0x2f1)
			return
		}
		if op >= 0x100 {
			c.exec0F()
			return
		}
		panic(ud())
	}
}

// softInt is raised by int n, int3 and into: a trap delivered with the
// gate's DPL checked and RIP after the instruction.
type softInt struct{ vec int }

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func opSize(op uint16, osz uint8) uint8 {
	if op&1 == 0 {
		return 1
	}
	return osz
}

func ioSize(op uint16, osz uint8) int {
	if op&1 == 0 {
		return 1
	}
	if osz == 2 {
		return 2
	}
	return 4
}

// checkLock raises #UD for a lock prefix on an instruction that cannot
// take one.
func (c *CPU) checkLock() {
	in := c.cur
	if in.mod == 3 && in.op != 0x90 {
		panic(ud())
	}
	op := in.op
	r := in.reg & 7
	ok := false
	switch {
	case op < 0x40 && op&7 < 2 && op>>3 != 7:
		ok = true
	case op >= 0x80 && op <= 0x83 && r != 7:
		ok = true
	case op == 0x86 || op == 0x87:
		ok = true
	case (op == 0xf6 || op == 0xf7) && (r == 2 || r == 3):
		ok = true
	case (op == 0xfe || op == 0xff) && r < 2:
		ok = true
	case op == 0x1ab || op == 0x1b3 || op == 0x1bb || (op == 0x1ba && r >= 5):
		ok = true
	case op == 0x1b0 || op == 0x1b1 || op == 0x1c0 || op == 0x1c1 || (op == 0x1c7 && r == 1):
		ok = true
	}
	if !ok || !in.hasMem() {
		panic(ud())
	}
}

func (in *insn) hasMem() bool { return in.mod != 3 && (in.op >= 0x100 || oneByteModRM[in.op&0xff]) }

// aluOp executes the 0x00-0x3f ALU forms.
func (c *CPU) aluOp(aop, form uint8) {
	in := c.cur
	osz := in.osz
	switch form {
	case 0, 1: // r/m, reg
		size := osz
		if form == 0 {
			size = 1
		}
		src := c.getReg(in.reg, size)
		if aop == 7 {
			c.alu(7, c.readRM(size), src, size)
			return
		}
		if in.mod == 3 {
			c.setReg(in.rm, size, c.alu(aop, c.getReg(in.rm, size), src, size))
			return
		}
		c.rmwRM(size, func(d uint64) uint64 { return c.alu(aop, d, src, size) })
	case 2, 3: // reg, r/m
		size := osz
		if form == 2 {
			size = 1
		}
		res := c.alu(aop, c.getReg(in.reg, size), c.readRM(size), size)
		if aop != 7 {
			c.setReg(in.reg, size, res)
		}
	case 4, 5: // al/eax, imm
		size := osz
		if form == 4 {
			size = 1
		}
		res := c.alu(aop, c.getReg(rAX, size), in.imm&sizeMask(size), size)
		if aop != 7 {
			c.setReg(rAX, size, res)
		}
	}
}

// alu computes add/or/adc/sbb/and/sub/xor/cmp and records the flags.
func (c *CPU) alu(aop uint8, d, s uint64, size uint8) uint64 {
	m := sizeMask(size)
	d &= m
	s &= m
	var r uint64
	switch aop {
	case 0:
		r = d + s
		c.setLazy(lfAdd, size, d, s, r, 0)
	case 1:
		r = d | s
		c.setLazy(lfLogic, size, 0, 0, r, 0)
	case 2:
		cin := boolU(c.cf())
		r = d + s + cin
		c.setLazy(lfAdd, size, d, s, r, uint8(cin))
	case 3:
		cin := boolU(c.cf())
		r = d - s - cin
		c.setLazy(lfSub, size, d, s, r, uint8(cin))
	case 4:
		r = d & s
		c.setLazy(lfLogic, size, 0, 0, r, 0)
	case 5, 7:
		r = d - s
		c.setLazy(lfSub, size, d, s, r, 0)
	case 6:
		r = d ^ s
		c.setLazy(lfLogic, size, 0, 0, r, 0)
	}
	return r & m
}

// shift executes the group-2 shifts and rotates.
func (c *CPU) shift(sop uint8, d, cnt uint64, size uint8) uint64 {
	bitsN := uint64(size) * 8
	m := sizeMask(size)
	d &= m
	if size == 8 {
		cnt &= 0x3f
	} else {
		cnt &= 0x1f
	}
	if cnt == 0 {
		return d
	}
	sb := signBit(size)
	f := c.getFlags()
	var r uint64
	var cf, of bool
	switch sop {
	case 0: // rol
		n := cnt % bitsN
		r = (d<<n | d>>(bitsN-n)) & m
		cf = r&1 != 0
		of = (r&sb != 0) != cf
		c.flags = f&^(flagCF|flagOF) | flagIf(cf, flagCF) | flagIf(of, flagOF)
		return r
	case 1: // ror
		n := cnt % bitsN
		r = (d>>n | d<<(bitsN-n)) & m
		cf = r&sb != 0
		of = (r&sb != 0) != (r&(sb>>1) != 0)
		c.flags = f&^(flagCF|flagOF) | flagIf(cf, flagCF) | flagIf(of, flagOF)
		return r
	case 2, 3: // rcl, rcr
		n := cnt % (bitsN + 1)
		carry := f&flagCF != 0
		r = d
		for i := uint64(0); i < n; i++ {
			if sop == 2 {
				out := r&sb != 0
				r = (r<<1 | boolU(carry)) & m
				carry = out
			} else {
				out := r&1 != 0
				r = r>>1 | boolU(carry)*sb
				carry = out
			}
		}
		if sop == 2 {
			of = (r&sb != 0) != carry
		} else {
			of = (r&sb != 0) != (r&(sb>>1) != 0)
		}
		c.flags = f&^(flagCF|flagOF) | flagIf(carry, flagCF) | flagIf(of, flagOF)
		return r
	case 4, 6: // shl
		if cnt <= bitsN {
			cf = (d>>(bitsN-cnt))&1 != 0
		}
		if cnt < bitsN {
			r = (d << cnt) & m
		}
		of = (r&sb != 0) != cf
	case 5: // shr
		if cnt <= bitsN {
			cf = (d>>(cnt-1))&1 != 0
		}
		if cnt < bitsN {
			r = d >> cnt
		}
		of = d&sb != 0
	case 7: // sar
		sd := int64(d<<(64-bitsN)) >> (64 - bitsN)
		if cnt >= bitsN {
			cnt = bitsN
		}
		cf = (sd>>(cnt-1))&1 != 0
		r = uint64(sd>>cnt) & m
	}
	c.flags = f&^flagsArith | szp(r, size) | flagIf(cf, flagCF) | flagIf(of, flagOF)
	return r
}

func flagIf(b bool, f uint64) uint64 {
	if b {
		return f
	}
	return 0
}

// imul2 is the two- and three-operand signed multiply.
func (c *CPU) imul2(a, b uint64, size uint8) uint64 {
	bitsN := uint(size) * 8
	sa := int64(a<<(64-bitsN)) >> (64 - bitsN)
	sb := int64(b<<(64-bitsN)) >> (64 - bitsN)
	var r uint64
	var ovf bool
	if size == 8 {
		hi, lo := bits.Mul64(uint64(sa), uint64(sb))
		// signed high part
		if sa < 0 {
			hi -= uint64(sb)
		}
		if sb < 0 {
			hi -= uint64(sa)
		}
		r = lo
		ovf = hi != uint64(int64(lo)>>63)
	} else {
		p := sa * sb
		r = uint64(p) & sizeMask(size)
		ovf = int64(r<<(64-bitsN))>>(64-bitsN) != p
	}
	f := szp(r, size) | flagIf(ovf, flagCF|flagOF)
	c.setArith(f)
	return r
}

// group3 executes test, not, neg, mul, imul, div, idiv.
func (c *CPU) group3(size uint8) {
	in := c.cur
	m := sizeMask(size)
	switch in.reg & 7 {
	case 0, 1:
		c.alu(4, c.readRM(size), in.imm&m, size)
	case 2:
		c.rmwRM(size, func(d uint64) uint64 { return ^d & m })
	case 3:
		c.rmwRM(size, func(d uint64) uint64 {
			d &= m
			r := (-d) & m
			c.setLazy(lfSub, size, 0, d, r, 0)
			return r
		})
	case 4, 5:
		src := c.readRM(size)
		signed := in.reg&7 == 5
		a := c.getReg(rAX, size)
		var lo, hi uint64
		var ovf bool
		bitsN := uint(size) * 8
		if size == 8 {
			hi, lo = bits.Mul64(a, src)
			if signed {
				if int64(a) < 0 {
					hi -= src
				}
				if int64(src) < 0 {
					hi -= a
				}
				ovf = hi != uint64(int64(lo)>>63)
			} else {
				ovf = hi != 0
			}
		} else if signed {
			sa := int64(a<<(64-bitsN)) >> (64 - bitsN)
			ss := int64(src<<(64-bitsN)) >> (64 - bitsN)
			p := sa * ss
			lo = uint64(p) & m
			hi = uint64(p>>bitsN) & m
			ovf = int64(lo<<(64-bitsN))>>(64-bitsN) != p
		} else {
			p := a * src
			lo, hi = p&m, p>>bitsN&m
			ovf = hi != 0
		}
		if size == 1 {
			c.setReg(rAX, 2, hi<<8|lo)
		} else {
			c.setReg(rAX, size, lo)
			c.setReg(rDX, size, hi)
		}
		c.setArith(szp(lo, size) | flagIf(ovf, flagCF|flagOF))
	case 6, 7:
		src := c.readRM(size) & m
		if src == 0 {
			panic(fault{vec: vecDE})
		}
		var lo, hi uint64
		if size == 1 {
			v := c.getReg(rAX, 2)
			lo, hi = v&0xff, v>>8
		} else {
			lo, hi = c.getReg(rAX, size), c.getReg(rDX, size)
		}
		q, r := c.divide(hi, lo, src, size, in.reg&7 == 7)
		if size == 1 {
			c.setReg(rAX, 2, r<<8|q)
		} else {
			c.setReg(rAX, size, q)
			c.setReg(rDX, size, r)
		}
	}
}

// divide divides hi:lo by d (size-byte halves), raising #DE on overflow.
func (c *CPU) divide(hi, lo, d uint64, size uint8, signed bool) (uint64, uint64) {
	m := sizeMask(size)
	bitsN := uint(size) * 8
	if !signed {
		if size == 8 {
			if hi >= d {
				panic(fault{vec: vecDE})
			}
			q, r := bits.Div64(hi, lo, d)
			return q, r
		}
		n := hi<<bitsN | lo
		q := n / d
		if q > m {
			panic(fault{vec: vecDE})
		}
		return q, n % d
	}
	if size == 8 {
		neg := int64(hi) < 0
		ahi, alo := hi, lo
		if neg {
			alo = -lo
			ahi = ^hi + boolU(lo == 0)
		}
		dn := int64(d) < 0
		ad := d
		if dn {
			ad = -d
		}
		if ahi >= ad {
			panic(fault{vec: vecDE})
		}
		q, r := bits.Div64(ahi, alo, ad)
		qneg := neg != dn
		if qneg {
			if q > 1<<63 {
				panic(fault{vec: vecDE})
			}
			q = -q
		} else if q >= 1<<63 {
			panic(fault{vec: vecDE})
		}
		if neg {
			r = -r
		}
		return q, r
	}
	n := int64(hi<<bitsN|lo) << (64 - 2*bitsN) >> (64 - 2*bitsN)
	sd := int64(d<<(64-bitsN)) >> (64 - bitsN)
	if sd == -1 && n == -1<<63 {
		panic(fault{vec: vecDE})
	}
	q := n / sd
	r := n % sd
	if q > int64(m>>1) || q < -int64(m>>1)-1 {
		panic(fault{vec: vecDE})
	}
	return uint64(q) & m, uint64(r) & m
}

// group5 executes inc, dec, call, callf, jmp, jmpf, push.
func (c *CPU) group5() {
	in := c.cur
	osz := in.osz
	r := in.reg & 7
	if c.code64() && (r == 2 || r == 4 || r == 6) && osz != 2 {
		osz = 8
	}
	switch r {
	case 0, 1:
		delta, kind := uint64(1), uint8(lfInc)
		if r == 1 {
			delta, kind = ^uint64(0), lfDec
		}
		if in.mod == 3 {
			d := c.getReg(in.rm, osz)
			c.setLazy(kind, osz, d, 1, d+delta, 0)
			c.setReg(in.rm, osz, d+delta)
			return
		}
		c.rmwRM(osz, func(d uint64) uint64 { c.setLazy(kind, osz, d, 1, d+delta, 0); return d + delta })
	case 2:
		t := c.readRM(osz)
		ret := c.rip
		c.jump(t, osz)
		func() {
			defer func() {
				if x := recover(); x != nil {
					c.rip = ret
					panic(x)
				}
			}()
			c.push(ret, int(osz))
		}()
	case 3, 5:
		if in.mod == 3 {
			panic(ud())
		}
		off := c.ea()
		o := c.readMem(int(in.seg), off, int(osz))
		sel := c.readMem(int(in.seg), (off+uint64(osz))&c.aszMask(), 2)
		if r == 3 {
			c.callFar(uint16(sel), o, osz)
		} else {
			c.jmpFar(uint16(sel), o, osz)
		}
	case 4:
		c.jump(c.readRM(osz), osz)
	case 6:
		c.push(c.readRM(osz), int(osz))
	default:
		panic(ud())
	}
}

func (c *CPU) checkIOPL() {
	if c.cr0&cr0PE != 0 && c.cpl() > int(c.flags>>12&3) {
		panic(gp(0))
	}
}

func (c *CPU) loadFarPtr(s int) {
	in := c.cur
	off := c.ea()
	v := c.readMem(int(in.seg), off, int(in.osz))
	sel := c.readMem(int(in.seg), (off+uint64(in.osz))&c.aszMask(), 2)
	c.loadSeg(s, uint16(sel))
	c.setReg(in.reg, in.osz, v)
	if s == segSS {
		c.shadow = shadowKindMovSS
	}
}

func (c *CPU) enter(size, level uint64, osz uint8) {
	bp := c.regs[rBP]
	c.push(c.getReg(rBP, osz), int(osz))
	frame := c.regs[rSP] & c.stackMask()
	for i := uint64(1); i < level; i++ {
		bp -= uint64(osz)
		c.push(c.readMem(segSS, bp&c.stackMask(), int(osz)), int(osz))
	}
	if level > 0 {
		c.push(frame, int(osz))
	}
	c.setReg(rBP, osz, frame)
	c.setSP(c.regs[rSP] - size)
}

func (c *CPU) jmpFar(sel uint16, off uint64, osz uint8) {
	if c.isGate(sel) {
		c.throughGate(sel, false)
		return
	}
	c.farTarget(sel)
	c.jump(off, osz)
}

func (c *CPU) callFar(sel uint16, off uint64, osz uint8) {
	if c.isGate(sel) {
		c.throughGate(sel, true)
		return
	}
	mask := c.stackMask()
	sp := c.regs[rSP]
	s1 := (sp - uint64(osz)) & mask
	s2 := (sp - 2*uint64(osz)) & mask
	c.writeMem(segSS, s1, int(osz), uint64(c.seg[segCS].Selector))
	c.writeMem(segSS, s2, int(osz), c.rip)
	oldCS := c.seg[segCS]
	c.farTarget(sel)
	func() {
		defer func() {
			if x := recover(); x != nil {
				c.seg[segCS] = oldCS
				panic(x)
			}
		}()
		c.jump(off, osz)
	}()
	c.setSP(s2)
}

func (c *CPU) retFar(osz uint8, imm uint64) {
	ip := c.peek(0, int(osz))
	sel := uint16(c.peek(uint64(osz), int(osz)))
	if c.realMode() || c.flags&flagVM != 0 {
		c.seg[segCS].Selector = sel
		c.seg[segCS].Base = uint64(sel) << 4
		c.rip = ip & sizeMask(osz)
		c.setSP(c.regs[rSP] + 2*uint64(osz) + imm)
		return
	}
	cpl := c.cpl()
	cs, d, addr := c.codeDesc(sel)
	rpl := int(sel & 3)
	if rpl < cpl {
		panic(segFault(vecGP, sel))
	}
	if cs.Type&4 != 0 {
		if int(cs.DPL) > rpl {
			panic(segFault(vecGP, sel))
		}
	} else if int(cs.DPL) != rpl {
		panic(segFault(vecGP, sel))
	}
	if cs.Present == 0 {
		panic(segFault(vecNP, sel))
	}
	if rpl > cpl {
		nsp := c.peek(2*uint64(osz)+imm, int(osz))
		ssSel := uint16(c.peek(3*uint64(osz)+imm, int(osz)))
		oldCS := c.seg[segCS]
		c.setCS(cs, rpl, d, addr)
		func() {
			defer func() {
				if x := recover(); x != nil {
					c.seg[segCS] = oldCS
					panic(x)
				}
			}()
			c.loadSeg(segSS, ssSel)
		}()
		c.rip = ip & sizeMask(osz)
		c.regs[rSP] = 0
		c.setSP(nsp + imm)
		if osz == 8 {
			c.regs[rSP] = nsp + imm
		}
		c.nullDataSegs(rpl)
		return
	}
	c.setCS(cs, rpl, d, addr)
	c.rip = ip & sizeMask(osz)
	c.setSP(c.regs[rSP] + 2*uint64(osz) + imm)
}

// bcd implements daa, das, aaa, aas.
func (c *CPU) bcd(op uint8) {
	f := c.getFlags()
	al := c.regs[rAX] & 0xff
	cf, af := f&flagCF != 0, f&flagAF != 0
	switch op {
	case 0x27, 0x2f:
		oldAL, oldCF := al, cf
		cf = false
		if al&0xf > 9 || af {
			if op == 0x27 {
				al += 6
			} else {
				al -= 6
			}
			cf = oldCF || al > 0xff
			al &= 0xff
			af = true
		} else {
			af = false
		}
		if oldAL > 0x99 || oldCF {
			if op == 0x27 {
				al += 0x60
			} else {
				al -= 0x60
			}
			al &= 0xff
			cf = true
		}
		c.setReg(rAX, 1, al)
		c.flags = f&^flagsArith | szp(al, 1) | flagIf(cf, flagCF) | flagIf(af, flagAF)
	case 0x37, 0x3f:
		ax := c.regs[rAX] & 0xffff
		if al&0xf > 9 || af {
			if op == 0x37 {
				ax += 0x106
			} else {
				ax = (ax - 6) & 0xffff
				ax = (ax - 0x100) & 0xffff
			}
			af, cf = true, true
		} else {
			af, cf = false, false
		}
		ax = ax&0xff00 | ax&0xf
		c.setReg(rAX, 2, ax)
		c.flags = f&^flagsArith | szp(ax&0xff, 1) | flagIf(cf, flagCF) | flagIf(af, flagAF)
	}
}

func (c *CPU) aam(isAAM bool, base uint8) {
	al := uint8(c.regs[rAX])
	ah := uint8(c.regs[rAX] >> 8)
	if isAAM {
		if base == 0 {
			panic(fault{vec: vecDE})
		}
		ah, al = al/base, al%base
	} else {
		al, ah = al+ah*base, 0
	}
	c.setReg(rAX, 2, uint64(ah)<<8|uint64(al))
	c.setArith(szp(uint64(al), 1))
}

// signExtend reads the low osz bytes of v as a signed number.
func signExtend(v uint64, osz uint8) int64 {
	shift := 64 - 8*uint(osz)
	return int64(v<<shift) >> shift
}
