package cpu

import (
	"math/bits"
	"sync/atomic"
)

var fenceWord atomic.Uint64

// exec0F executes two-byte opcodes.
func (c *CPU) exec0F() {
	in := c.cur
	b := uint8(in.op)
	osz := in.osz
	switch {
	case b >= 0x40 && b <= 0x4f: // cmovcc
		v := c.readRM(osz)
		if c.cond(b & 0xf) {
			c.setReg(in.reg, osz, v)
		} else if osz == 4 {
			c.setReg(in.reg, 4, c.getReg(in.reg, 4))
		}
		return
	case b >= 0x80 && b <= 0x8f:
		if c.cond(b & 0xf) {
			c.jump(c.rip+in.imm, osz)
		}
		return
	case b >= 0x90 && b <= 0x9f:
		c.writeRM(1, boolU(c.cond(b&0xf)))
		return
	case isSSEOp(b):
		c.execSSE()
		return
	case b >= 0xc8 && b <= 0xcf:
		r := b&7 | (in.rex&1)<<3
		switch osz {
		case 8:
			c.regs[r] = bits.ReverseBytes64(c.regs[r])
		case 4:
			c.regs[r] = uint64(bits.ReverseBytes32(uint32(c.regs[r])))
		default:
			c.setReg(r, 2, 0)
		}
		return
	case b >= 0x18 && b <= 0x1f: // hint nops, prefetch, endbr
		return
	case b == 0x0d: // prefetch, prefetchw: a register operand is #UD
		if in.mod == 3 {
			panic(ud())
		}
		return
	}
	switch b {
	case 0x00:
		c.group6()
	case 0x01:
		c.group7()
	case 0x02, 0x03:
		c.larLsl(b == 0x02)
	case 0x34:
		c.sysenter()
	case 0x35:
		c.sysexit()
	case 0x05:
		c.syscall()
	case 0x06: // clts
		c.requireCPL0()
		c.cr0 &^= cr0TS
	case 0x07:
		c.sysret()
	case 0x08, 0x09: // invd, wbinvd
		c.requireCPL0()
	case 0x0b: // ud2
		panic(ud())
	case 0x77:
		c.emms()
	case 0x20, 0x22:
		c.movCR(b == 0x22)
	case 0x21, 0x23:
		c.movDR(b == 0x23)
	case 0x30:
		c.requireCPL0()
		c.wrmsr(uint32(c.regs[rCX]), c.regs[rDX]<<32|c.regs[rAX]&0xffffffff)
	case 0x31:
		if c.cr4&(1<<2) != 0 && c.cpl() != 0 && c.cr0&cr0PE != 0 {
			panic(gp(0))
		}
		t := c.tsc()
		c.regs[rAX], c.regs[rDX] = t&0xffffffff, t>>32
	case 0x32:
		c.requireCPL0()
		v := c.rdmsr(uint32(c.regs[rCX]))
		c.regs[rAX], c.regs[rDX] = v&0xffffffff, v>>32
	case 0xa0, 0xa8: // push fs/gs
		c.push(uint64(c.seg[segFS+int(b>>3&1)].Selector), int(osz))
	case 0xa1, 0xa9: // pop fs/gs
		v := c.peek(0, int(osz))
		c.loadSeg(segFS+int(b>>3&1), uint16(v))
		c.pop(int(osz))
	case 0xa2:
		c.doCPUID()
	case 0xa3, 0xab, 0xb3, 0xbb:
		c.bitOp(b>>3&3, c.getReg(in.reg, osz), true) // a3 bt, ab bts, b3 btr, bb btc
	case 0xba:
		if in.reg&7 < 4 {
			panic(ud())
		}
		c.bitOp(in.reg&7-4, in.imm&0xff, false)
	case 0xa4, 0xa5, 0xac, 0xad:
		cnt := in.imm
		if b&1 != 0 {
			cnt = c.regs[rCX]
		}
		src := c.getReg(in.reg, osz)
		left := b < 0xa8
		c.rmwRM(osz, func(d uint64) uint64 { return c.shiftDouble(d, src, cnt, osz, left) })
	case 0xae:
		c.group15()
	case 0xaf:
		c.setReg(in.reg, osz, c.imul2(c.getReg(in.reg, osz), c.readRM(osz), osz))
	case 0xb0, 0xb1: // cmpxchg
		size := opSize(uint16(b), osz)
		acc := c.getReg(rAX, size)
		src := c.getReg(in.reg, size)
		var old uint64
		if in.mod == 3 {
			old = c.getReg(in.rm, size)
			c.alu(7, acc, old, size)
			if old == acc {
				c.setReg(in.rm, size, src)
			} else {
				c.setReg(rAX, size, old)
			}
			return
		}
		c.rmwLin(c.linear(int(in.seg), c.ea(), int(size), true), int(size), in.lock, func(o uint64) uint64 {
			old = o
			if o == acc {
				return src
			}
			return o
		})
		c.alu(7, acc, old, size)
		if old != acc {
			c.setReg(rAX, size, old)
		}
	case 0xb2, 0xb4, 0xb5: // lss lfs lgs
		if in.mod == 3 {
			panic(ud())
		}
		s := segSS
		if b != 0xb2 {
			s = segFS + int(b-0xb4)
		}
		c.loadFarPtr(s)
	case 0xb6, 0xb7, 0xbe, 0xbf: // movzx, movsx
		var v uint64
		if b&1 == 0 {
			v = c.readRM(1)
			if b&8 != 0 {
				v = uint64(int64(int8(v)))
			}
		} else {
			v = c.readRM(2)
			if b&8 != 0 {
				v = uint64(int64(int16(v)))
			}
		}
		c.setReg(in.reg, osz, v)
	case 0xb8: // popcnt
		if in.rep != 0xf3 {
			panic(ud())
		}
		v := c.readRM(osz) & sizeMask(osz)
		c.setReg(in.reg, osz, uint64(bits.OnesCount64(v)))
		c.setArith(flagIf(v == 0, flagZF))
	case 0xbd:
		if in.rep == 0xf3 { // lzcnt
			v := c.readRM(osz) & sizeMask(osz)
			r := uint64(bits.LeadingZeros64(v)) - (64 - uint64(osz)*8)
			c.setReg(in.reg, osz, r)
			c.setArith(flagIf(v == 0, flagCF) | flagIf(r == 0, flagZF))
			return
		}
		fallthrough
	case 0xbc: // bsf, bsr (and tzcnt, which CPUs without BMI1 run as bsf)
		v := c.readRM(osz) & sizeMask(osz)
		f := c.getFlags() &^ flagsArith
		if v == 0 {
			c.flags = f | flagZF
			return
		}
		var r int
		if b == 0xbc {
			r = bits.TrailingZeros64(v)
		} else {
			r = 63 - bits.LeadingZeros64(v)
		}
		c.setReg(in.reg, osz, uint64(r))
		c.flags = f
	case 0xc0, 0xc1: // xadd
		size := opSize(uint16(b), osz)
		src := c.getReg(in.reg, size)
		if in.mod == 3 {
			d := c.getReg(in.rm, size)
			r := c.alu(0, d, src, size)
			c.setReg(in.reg, size, d)
			c.setReg(in.rm, size, r)
			return
		}
		var old uint64
		c.rmwLin(c.linear(int(in.seg), c.ea(), int(size), true), int(size), in.lock, func(o uint64) uint64 {
			old = o
			return c.alu(0, o, src, size)
		})
		c.setReg(in.reg, size, old)
	case 0xc7:
		c.group9()
	default:
		panic(ud())
	}
}

// bitOp executes bt (0), bts (1), btr (2), btc (3).
func (c *CPU) bitOp(kind uint8, off uint64, regOff bool) {
	in := c.cur
	osz := in.osz
	bitsN := uint64(osz) * 8
	f := func(d uint64) uint64 {
		bit := off & (bitsN - 1)
		cf := d>>bit&1 != 0
		c.setArith(c.getFlags()&^flagCF | flagIf(cf, flagCF))
		switch kind {
		case 1:
			d |= 1 << bit
		case 2:
			d &^= 1 << bit
		case 3:
			d ^= 1 << bit
		}
		return d
	}
	if in.mod == 3 {
		v := f(c.getReg(in.rm, osz))
		if kind != 0 {
			c.setReg(in.rm, osz, v)
		}
		return
	}
	ea := c.ea()
	if regOff {
		// The offset is signed and may address outside the operand.
		so := int64(off<<(64-bitsN)) >> (64 - bitsN)
		ea += uint64(so>>bits.TrailingZeros64(bitsN)) * uint64(osz)
		ea &= c.aszMask()
	}
	if kind == 0 {
		f(c.readMem(int(in.seg), ea, int(osz)))
		return
	}
	c.rmwLin(c.linear(int(in.seg), ea, int(osz), true), int(osz), in.lock, f)
}

func (c *CPU) shiftDouble(d, src, cnt uint64, size uint8, left bool) uint64 {
	bitsN := uint64(size) * 8
	m := sizeMask(size)
	if size == 8 {
		cnt &= 63
	} else {
		cnt &= 31
	}
	if cnt == 0 {
		return d
	}
	d &= m
	src &= m
	var r uint64
	var cf bool
	if left {
		wide := d<<bitsN | src // valid for size <= 4
		if size == 8 {
			r = d<<cnt | src>>(64-cnt)
			cf = d>>(64-cnt)&1 != 0
		} else {
			r = (wide << cnt >> bitsN) & m
			cf = cnt <= bitsN && d>>(bitsN-cnt)&1 != 0
		}
	} else {
		if size == 8 {
			r = d>>cnt | src<<(64-cnt)
			cf = d>>(cnt-1)&1 != 0
		} else {
			wide := src<<bitsN | d
			r = (wide >> cnt) & m
			cf = wide>>(cnt-1)&1 != 0
		}
	}
	of := (r^d)&signBit(size) != 0
	c.setArith(szp(r, size) | flagIf(cf, flagCF) | flagIf(of, flagOF))
	return r
}

func (c *CPU) requireCPL0() {
	if c.cpl() != 0 {
		panic(gp(0))
	}
}

// group6 executes sldt, str, lldt, ltr, verr, verw.
func (c *CPU) group6() {
	in := c.cur
	if c.realMode() || c.flags&flagVM != 0 {
		panic(ud())
	}
	switch in.reg & 7 {
	case 0:
		c.storeSel(c.ldt.Selector)
	case 1:
		c.storeSel(c.tr.Selector)
	case 2:
		c.requireCPL0()
		c.lldt(uint16(c.readRM(2)))
	case 3:
		c.requireCPL0()
		c.ltr(uint16(c.readRM(2)))
	case 4, 5:
		sel := uint16(c.readRM(2))
		ok := false
		if sel&^3 != 0 {
			if d, _, found := c.descriptor(sel); found {
				s := segFromDesc(sel, d)
				if s.S != 0 {
					priv := s.Type&0xc == 0xc || (int(s.DPL) >= c.cpl() && int(s.DPL) >= int(sel&3))
					if in.reg&7 == 4 {
						ok = priv && (s.Type&8 == 0 || s.Type&2 != 0)
					} else {
						ok = priv && s.Type&8 == 0 && s.Type&2 != 0
					}
				}
			}
		}
		f := c.getFlags() &^ flagZF
		c.flags = f | flagIf(ok, flagZF)
	default:
		panic(ud())
	}
}

func (c *CPU) storeSel(sel uint16) {
	if c.cur.mod == 3 {
		c.setReg(c.cur.rm, c.cur.osz, uint64(sel))
	} else {
		c.writeRM(2, uint64(sel))
	}
}

// group7 executes sgdt, sidt, lgdt, lidt, smsw, lmsw, invlpg, swapgs, rdtscp.
func (c *CPU) group7() {
	in := c.cur
	r := in.reg & 7
	if in.mod == 3 {
		switch {
		case r == 7 && in.modrm&7 == 0: // swapgs
			if !c.code64() {
				panic(ud())
			}
			c.requireCPL0()
			c.seg[segGS].Base, c.kernelGSBase = c.kernelGSBase, c.seg[segGS].Base
			return
		case r == 7 && in.modrm&7 == 1: // rdtscp
			if c.cr4&(1<<2) != 0 && c.cpl() != 0 {
				panic(gp(0))
			}
			t := c.tsc()
			c.regs[rAX], c.regs[rDX] = t&0xffffffff, t>>32
			c.regs[rCX] = c.tscAux & 0xffffffff
			return
		case r == 2 && in.modrm&7 == 0 && in.rep == 0 && !in.pfx66: // xgetbv
			c.xgetbv()
			return
		case r == 2 && in.modrm&7 == 1 && in.rep == 0 && !in.pfx66: // xsetbv
			c.xsetbv()
			return
		case r == 4:
		case r == 6:
		default:
			panic(ud())
		}
	}
	switch r {
	case 0, 1: // sgdt, sidt
		t := c.gdt
		if r == 1 {
			t = c.idt
		}
		off := c.ea()
		c.writeMem(int(in.seg), off, 2, uint64(t.Limit))
		if c.code64() {
			c.writeMem(int(in.seg), (off+2)&c.aszMask(), 8, t.Base)
		} else {
			c.writeMem(int(in.seg), (off+2)&c.aszMask(), 4, t.Base&0xffffffff)
		}
	case 2, 3: // lgdt, lidt
		c.requireCPL0()
		off := c.ea()
		limit := c.readMem(int(in.seg), off, 2)
		var base uint64
		if c.code64() {
			base = c.readMem(int(in.seg), (off+2)&c.aszMask(), 8)
			if !canonical(base) {
				panic(gp(0))
			}
		} else {
			base = c.readMem(int(in.seg), (off+2)&c.aszMask(), 4)
			if in.osz == 2 {
				base &= 0xffffff
			}
		}
		if r == 2 {
			c.gdt = hvDTable(base, limit)
		} else {
			c.idt = hvDTable(base, limit)
		}
	case 4: // smsw
		if in.mod == 3 {
			c.setReg(in.rm, in.osz, c.cr0)
		} else {
			c.writeRM(2, c.cr0&0xffff)
		}
	case 6: // lmsw
		c.requireCPL0()
		v := c.readRM(2) & 0xf
		nv := c.cr0&^0xe | v
		if c.cr0&cr0PE != 0 {
			nv |= cr0PE
		}
		c.setCR0(nv)
	case 7: // invlpg
		c.requireCPL0()
		c.flushPage(c.linear(int(in.seg), c.ea(), 1, false))
	default:
		panic(ud())
	}
}

// group9 executes cmpxchg8b, cmpxchg16b.
func (c *CPU) group9() {
	in := c.cur
	if in.mod == 3 || in.reg&7 != 1 {
		panic(ud())
	}
	off := c.ea()
	if in.rex&8 != 0 {
		lin := c.linear(int(in.seg), off, 16, true)
		if lin&15 != 0 {
			panic(gp(0))
		}
		if haveCAS128 {
			if p, _ := c.hostForRMW(lin, 16, c.user()); p != nil {
				ok, lo, hi := cas128(p, c.regs[rAX], c.regs[rDX], c.regs[rBX], c.regs[rCX])
				if ok {
					c.setArith(c.getFlags() | flagZF)
				} else {
					c.regs[rAX], c.regs[rDX] = lo, hi
					c.setArith(c.getFlags() &^ flagZF)
				}
				return
			}
		}
		c.mem.splitMu.Lock()
		defer c.mem.splitMu.Unlock()
		user := c.user()
		c.translate(lin, accWrite, user)
		lo := c.readLin(lin, 8, user)
		hi := c.readLin(lin+8, 8, user)
		if lo == c.regs[rAX] && hi == c.regs[rDX] {
			c.writeLin(lin, 8, c.regs[rBX], user)
			c.writeLin(lin+8, 8, c.regs[rCX], user)
			c.setArith(c.getFlags() | flagZF)
		} else {
			c.writeLin(lin, 8, lo, user)
			c.writeLin(lin+8, 8, hi, user)
			c.regs[rAX], c.regs[rDX] = lo, hi
			c.setArith(c.getFlags() &^ flagZF)
		}
		return
	}
	cmp := c.regs[rDX]<<32 | c.regs[rAX]&0xffffffff
	nv := c.regs[rCX]<<32 | c.regs[rBX]&0xffffffff
	var old uint64
	c.rmwLin(c.linear(int(in.seg), off, 8, true), 8, in.lock, func(o uint64) uint64 {
		old = o
		if o == cmp {
			return nv
		}
		return o
	})
	if old == cmp {
		c.setArith(c.getFlags() | flagZF)
	} else {
		c.regs[rAX], c.regs[rDX] = old&0xffffffff, old>>32
		c.setArith(c.getFlags() &^ flagZF)
	}
}

// group15 executes fences, clflush, fxsave/fxrstor, ldmxcsr/stmxcsr and
// xsave/xrstor; the rest (xsaveopt, clwb, the FS/GS base instructions...)
// is #UD as CPUID says.
func (c *CPU) group15() {
	in := c.cur
	r := in.reg & 7
	if in.rep != 0 {
		panic(ud())
	}
	if in.mod != 3 && !in.pfx66 {
		wide := in.rex&8 != 0
		switch r {
		case 0:
			c.fxsave(wide)
			return
		case 1:
			c.fxrstor(wide)
			return
		case 2:
			c.ldmxcsr()
			return
		case 3:
			c.stmxcsr()
			return
		case 4:
			c.xsave(wide)
			return
		case 5:
			c.xrstor(wide)
			return
		}
	}
	if in.mod == 3 {
		switch r {
		case 5, 6, 7: // lfence, mfence, sfence (with 66: other instructions)
			if in.pfx66 {
				panic(ud())
			}
			fenceWord.Add(1) // a locked instruction: a full barrier on the host
			return
		}
		panic(ud())
	}
	if r == 7 { // clflush
		c.readMem(int(in.seg), c.ea(), 1)
		return
	}
	panic(ud())
}

// larLsl executes lar (access rights) and lsl (segment limit): ZF=1 and
// the destination written when the descriptor is valid and visible.
func (c *CPU) larLsl(lar bool) {
	in := c.cur
	if c.realMode() || c.flags&flagVM != 0 {
		panic(ud())
	}
	sel := uint16(c.readRM(2))
	ok := false
	var d uint64
	if sel&^3 != 0 {
		var found bool
		d, _, found = c.descriptor(sel)
		if found {
			s := segFromDesc(sel, d)
			if s.S != 0 {
				ok = s.Type&0xc == 0xc || (int(s.DPL) >= c.cpl() && int(s.DPL) >= int(sel&3))
			} else {
				var valid bool
				switch s.Type {
				case 2, 9, 0xb:
					valid = true
				case 1, 3:
					valid = !c.longMode()
				case 4, 5, 0xc:
					valid = lar && (s.Type == 0xc || !c.longMode())
				}
				ok = valid && int(s.DPL) >= c.cpl() && int(s.DPL) >= int(sel&3)
			}
			if ok {
				if lar {
					c.setReg(in.reg, in.osz, d>>32&0x00f0ff00)
				} else {
					c.setReg(in.reg, in.osz, uint64(s.Limit))
				}
			}
		}
	}
	f := c.getFlags() &^ flagZF
	c.flags = f | flagIf(ok, flagZF)
}

// movbe loads (0F 38 F0) or stores (0F 38 F1) with the bytes reversed.
func (c *CPU) movbe(toMem bool) {
	in := c.cur
	if in.mod == 3 {
		panic(ud())
	}
	swap := func(v uint64) uint64 {
		switch in.osz {
		case 2:
			return uint64(bits.ReverseBytes16(uint16(v)))
		case 4:
			return uint64(bits.ReverseBytes32(uint32(v)))
		}
		return bits.ReverseBytes64(v)
	}
	if toMem {
		c.writeRM(in.osz, swap(c.getReg(in.reg, in.osz)))
		return
	}
	c.setReg(in.reg, in.osz, swap(c.readRM(in.osz)))
}
