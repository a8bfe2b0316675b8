package cpu

import "github.com/godwit-vmm/godwit/internal/hv"

func (c *CPU) realMode() bool { return c.cr0&cr0PE == 0 }
func (c *CPU) longMode() bool { return c.efer&eferLMA != 0 }
func (c *CPU) code64() bool   { return c.efer&eferLMA != 0 && c.seg[segCS].L != 0 }

func (c *CPU) cpl() int {
	if c.cr0&cr0PE == 0 {
		return 0
	}
	if c.flags&flagVM != 0 {
		return 3
	}
	return int(c.seg[segCS].DPL)
}

func canonical(a uint64) bool { return uint64(int64(a<<16)>>16) == a }

// linear computes the linear address of seg:off for an access of size
// bytes, applying the segment's base and (outside 64-bit mode) limit.
func (c *CPU) linear(seg int, off uint64, size int, write bool) uint64 {
	s := &c.seg[seg]
	if c.code64() {
		a := off
		if seg >= segFS {
			a += s.Base
		}
		if !canonical(a) || !canonical(a+uint64(size)-1) {
			if seg == segSS {
				panic(fault{vec: vecSS, hasErr: true})
			}
			panic(fault{vec: vecGP, hasErr: true})
		}
		return a
	}
	if c.cr0&cr0PE != 0 && c.flags&flagVM == 0 {
		vec := vecGP
		if seg == segSS {
			vec = vecSS
		}
		if s.Unusable != 0 || s.Present == 0 {
			panic(fault{vec: vec, hasErr: true})
		}
		if write && (s.Type&8 != 0 || s.Type&2 == 0) {
			panic(fault{vec: vec, hasErr: true})
		}
		end := off + uint64(size) - 1
		if s.Type&0xc == 4 { // expand-down data
			max := uint64(0xffff)
			if s.DB != 0 {
				max = 0xffffffff
			}
			if off <= uint64(s.Limit) || end > max {
				panic(fault{vec: vec, hasErr: true})
			}
		} else if end > uint64(s.Limit) && s.Limit != 0xffffffff {
			panic(fault{vec: vec, hasErr: true})
		}
	}
	return (s.Base + off) & 0xffffffff
}

// descriptor reads the 8-byte descriptor for sel from the GDT or LDT;
// ok=false if the selector is beyond the table limit.
func (c *CPU) descriptor(sel uint16) (uint64, uint64, bool) {
	var base, limit uint64
	if sel&4 != 0 {
		if c.ldt.Unusable != 0 || c.ldt.Present == 0 {
			return 0, 0, false
		}
		base, limit = c.ldt.Base, uint64(c.ldt.Limit)
	} else {
		base, limit = c.gdt.Base, uint64(c.gdt.Limit)
	}
	off := uint64(sel &^ 7)
	if off+7 > limit {
		return 0, 0, false
	}
	addr := base + off
	return c.readLin(addr, 8, false), addr, true
}

// segFromDesc builds a segment cache from a descriptor.
func segFromDesc(sel uint16, d uint64) hv.Segment {
	limit := uint32(d&0xffff | d>>32&0xf0000)
	g := uint8(d >> 55 & 1)
	if g != 0 {
		limit = limit<<12 | 0xfff
	}
	return hv.Segment{
		Base:     d>>16&0xffffff | d>>32&0xff000000,
		Limit:    limit,
		Selector: sel,
		Type:     uint8(d >> 40 & 0xf),
		S:        uint8(d >> 44 & 1),
		DPL:      uint8(d >> 45 & 3),
		Present:  uint8(d >> 47 & 1),
		AVL:      uint8(d >> 52 & 1),
		L:        uint8(d >> 53 & 1),
		DB:       uint8(d >> 54 & 1),
		G:        g,
	}
}

// setAccessed sets the accessed bit of the descriptor at addr.
func (c *CPU) setAccessed(d, addr uint64) {
	if d&(1<<40) == 0 {
		c.writeLin(addr+5, 1, d>>40|1, false)
	}
}

func segFault(vec int, sel uint16) fault {
	return fault{vec: vec, err: uint32(sel &^ 3), hasErr: true}
}

// loadSeg loads data or stack segment register seg with sel (mov, pop,
// lds...), with the protected-mode checks.
func (c *CPU) loadSeg(seg int, sel uint16) {
	if c.realMode() || c.flags&flagVM != 0 {
		s := &c.seg[seg]
		s.Selector, s.Base = sel, uint64(sel)<<4
		if c.flags&flagVM != 0 {
			*s = hv.Segment{Selector: sel, Base: uint64(sel) << 4, Limit: 0xffff, Type: 3, S: 1, Present: 1, DPL: 3}
		}
		if seg == segCS {
			s.Type |= 8
		}
		return
	}
	cpl := c.cpl()
	if sel&^3 == 0 {
		if seg == segSS && (!c.code64() || int(sel&3) != cpl || cpl == 3) {
			panic(segFault(vecGP, 0))
		}
		c.seg[seg] = hv.Segment{Selector: sel, Unusable: 1}
		if seg == segSS {
			c.seg[seg].DPL = uint8(cpl)
			c.seg[seg].DB = 1
		}
		return
	}
	d, addr, ok := c.descriptor(sel)
	if !ok {
		panic(segFault(vecGP, sel))
	}
	s := segFromDesc(sel, d)
	rpl := int(sel & 3)
	if seg == segSS {
		if s.S == 0 || s.Type&8 != 0 || s.Type&2 == 0 || rpl != cpl || int(s.DPL) != cpl {
			panic(segFault(vecGP, sel))
		}
		if s.Present == 0 {
			panic(segFault(vecSS, sel))
		}
	} else {
		if s.S == 0 || (s.Type&8 != 0 && s.Type&2 == 0) {
			panic(segFault(vecGP, sel))
		}
		if s.Type&8 == 0 || s.Type&4 == 0 { // data or non-conforming code
			if int(s.DPL) < cpl || int(s.DPL) < rpl {
				panic(segFault(vecGP, sel))
			}
		}
		if s.Present == 0 {
			panic(segFault(vecNP, sel))
		}
	}
	c.setAccessed(d, addr)
	s.Type |= 1
	c.seg[seg] = s
}

// codeDesc reads the code-segment descriptor for sel (far jmp/call/ret,
// iret, interrupts), checking that it is one; privilege rules are the
// caller's.
func (c *CPU) codeDesc(sel uint16) (hv.Segment, uint64, uint64) {
	if sel&^3 == 0 {
		panic(segFault(vecGP, 0))
	}
	d, addr, ok := c.descriptor(sel)
	if !ok {
		panic(segFault(vecGP, sel))
	}
	s := segFromDesc(sel, d)
	if s.S == 0 || s.Type&8 == 0 {
		panic(segFault(vecGP, sel))
	}
	return s, d, addr
}

func (c *CPU) setCS(s hv.Segment, cpl int, d, addr uint64) {
	c.setAccessed(d, addr)
	s.Type |= 1
	s.Selector = s.Selector&^3 | uint16(cpl)
	s.DPL = uint8(cpl) // the CS cache's DPL is the CPL (KVM semantics)
	c.seg[segCS] = s
}

// farTarget loads CS for a far jmp or call to a code segment (no gate).
func (c *CPU) farTarget(sel uint16) {
	if c.realMode() || c.flags&flagVM != 0 {
		c.seg[segCS].Selector = sel
		c.seg[segCS].Base = uint64(sel) << 4
		return
	}
	s, d, addr := c.codeDesc(sel)
	cpl := c.cpl()
	if s.Type&4 != 0 { // conforming
		if int(s.DPL) > cpl {
			panic(segFault(vecGP, sel))
		}
	} else if int(sel&3) > cpl || int(s.DPL) != cpl {
		panic(segFault(vecGP, sel))
	}
	if s.Present == 0 {
		panic(segFault(vecNP, sel))
	}
	c.setCS(s, cpl, d, addr)
}

// systemDesc reads a system descriptor (LDT, TSS) of 8 or 16 bytes.
func (c *CPU) systemDesc(sel uint16) (hv.Segment, uint64) {
	if sel&4 != 0 {
		panic(segFault(vecGP, sel))
	}
	off := uint64(sel &^ 7)
	size := uint64(8)
	if c.longMode() {
		size = 16
	}
	if off+size-1 > uint64(c.gdt.Limit) {
		panic(segFault(vecGP, sel))
	}
	addr := c.gdt.Base + off
	d := c.readLin(addr, 8, false)
	s := segFromDesc(sel, d)
	if c.longMode() {
		s.Base |= c.readLin(addr+8, 4, false) << 32
	}
	return s, addr
}

func (c *CPU) lldt(sel uint16) {
	if sel&^3 == 0 {
		c.ldt = hv.Segment{Selector: sel, Unusable: 1}
		return
	}
	s, _ := c.systemDesc(sel)
	if s.S != 0 || s.Type != 2 {
		panic(segFault(vecGP, sel))
	}
	if s.Present == 0 {
		panic(segFault(vecNP, sel))
	}
	c.ldt = s
}

func (c *CPU) ltr(sel uint16) {
	if sel&^3 == 0 {
		panic(segFault(vecGP, 0))
	}
	s, addr := c.systemDesc(sel)
	if s.S != 0 || (s.Type != 1 && s.Type != 9) || (c.longMode() && s.Type != 9) {
		panic(segFault(vecGP, sel))
	}
	if s.Present == 0 {
		panic(segFault(vecNP, sel))
	}
	c.writeLin(addr+5, 1, c.readLin(addr+5, 1, false)|2, false)
	s.Type |= 2
	c.tr = s
}

// isGate reports whether sel names a system descriptor (a call gate, task
// gate or TSS) for a far jmp or call in protected mode.
func (c *CPU) isGate(sel uint16) bool {
	if c.realMode() || c.flags&flagVM != 0 || sel&^3 == 0 {
		return false
	}
	d, _, ok := c.descriptor(sel)
	return ok && d>>44&1 == 0
}

// throughGate executes a far jmp or call through a call gate: to the same
// privilege, or (call only) to a more privileged non-conforming code
// segment on the stack the TSS gives, copying the gate's parameters.
func (c *CPU) throughGate(sel uint16, call bool) {
	lo, addr, _ := c.descriptor(sel)
	typ := lo >> 40 & 0xf
	long := c.longMode()
	switch {
	case typ == 0xc:
	case typ == 4 && !long:
	case typ == 5 || typ&^2 == 1 || typ&^2 == 9:
		panic(internalError{"far jmp/call to a task gate or TSS (task switch) is not supported"})
	default:
		panic(segFault(vecGP, sel))
	}
	var hi uint64
	if long {
		if uint64(sel&^7)+15 > c.tableLimit(sel) {
			panic(segFault(vecGP, sel))
		}
		hi = c.readLin(addr+8, 8, false)
		if hi>>40&0x1f != 0 {
			panic(segFault(vecGP, sel))
		}
	}
	cpl := c.cpl()
	if gdpl := int(lo >> 45 & 3); gdpl < cpl || gdpl < int(sel&3) {
		panic(segFault(vecGP, sel))
	}
	if lo>>47&1 == 0 {
		panic(segFault(vecNP, sel))
	}
	tsel := uint16(lo >> 16)
	off := lo&0xffff | lo>>48<<16
	gsz := 4
	switch {
	case long:
		off |= hi << 32
		gsz = 8
	case typ == 4:
		off &= 0xffff
		gsz = 2
	}
	cs, d, daddr := c.codeDesc(tsel)
	if long && (cs.L == 0 || cs.DB != 0) {
		panic(segFault(vecGP, tsel))
	}
	conforming := cs.Type&4 != 0
	if int(cs.DPL) > cpl || (!call && !conforming && int(cs.DPL) != cpl) {
		panic(segFault(vecGP, tsel))
	}
	if cs.Present == 0 {
		panic(segFault(vecNP, tsel))
	}
	if !call {
		c.setCS(cs, cpl, d, daddr)
		c.rip = off
		return
	}
	retCS, retIP := uint64(c.seg[segCS].Selector), c.rip
	if conforming || int(cs.DPL) == cpl {
		mask := c.stackMask()
		sp := c.regs[rSP]
		c.writeMem(segSS, (sp-uint64(gsz))&mask, gsz, retCS)
		c.writeMem(segSS, (sp-2*uint64(gsz))&mask, gsz, retIP)
		c.setCS(cs, cpl, d, daddr)
		c.setSP(sp - 2*uint64(gsz))
		c.rip = off
		return
	}
	// To an inner privilege level: the new stack from the TSS.
	ncpl := int(cs.DPL)
	oldSS, oldSP := c.seg[segSS], c.regs[rSP]
	if long {
		sp := c.readTSS(4+uint64(ncpl)*8, 8)
		for _, v := range []uint64{uint64(oldSS.Selector), oldSP, retCS, retIP} {
			sp -= 8
			c.writeLin(sp, 8, v, false)
		}
		c.setCS(cs, ncpl, d, daddr)
		c.seg[segSS] = hv.Segment{Selector: uint16(ncpl), Unusable: 1, DPL: uint8(ncpl), DB: 1}
		c.regs[rSP] = sp
		c.rip = off
		return
	}
	sp, ss := c.innerStack(ncpl)
	spMask := uint64(0xffff)
	if ss.DB != 0 {
		spMask = 0xffffffff
	}
	push := func(v uint64) {
		sp = (sp - uint64(gsz)) & spMask
		c.writeLin((ss.Base+sp)&0xffffffff, gsz, v, false)
	}
	push(uint64(oldSS.Selector))
	push(oldSP)
	oldMask := uint64(0xffff)
	if oldSS.DB != 0 {
		oldMask = 0xffffffff
	}
	for i := int(lo>>32&0x1f) - 1; i >= 0; i-- {
		push(c.readLin((oldSS.Base+(oldSP+uint64(i*gsz))&oldMask)&0xffffffff, gsz, cpl == 3))
	}
	push(retCS)
	push(retIP)
	c.setCS(cs, ncpl, d, daddr)
	ss.Type |= 1
	c.seg[segSS] = ss
	c.regs[rSP] = c.regs[rSP]&^spMask | sp
	c.rip = off
}

// tableLimit is the limit of the descriptor table sel indexes.
func (c *CPU) tableLimit(sel uint16) uint64 {
	if sel&4 != 0 {
		return uint64(c.ldt.Limit)
	}
	return uint64(c.gdt.Limit)
}

// readTSS reads size bytes at offset off of the current TSS, raising #TS
// with the TSS's selector when they lie beyond its limit, as a stack
// switch or an IST lookup does.
func (c *CPU) readTSS(off uint64, size int) uint64 {
	if off+uint64(size)-1 > uint64(c.tr.Limit) {
		panic(segFault(vecTS, c.tr.Selector))
	}
	return c.readLin(c.tr.Base+off, size, false)
}

// innerStack reads and checks the stack for privilege level cpl from the
// (16- or 32-bit) TSS, as a call through a gate to that level loads it.
func (c *CPU) innerStack(cpl int) (uint64, hv.Segment) {
	var sp uint64
	var sel uint16
	if c.tr.Type&8 != 0 {
		sp = c.readTSS(4+uint64(cpl)*8, 4)
		sel = uint16(c.readTSS(8+uint64(cpl)*8, 2))
	} else {
		sp = c.readTSS(2+uint64(cpl)*4, 2)
		sel = uint16(c.readTSS(4+uint64(cpl)*4, 2))
	}
	if sel&^3 == 0 {
		panic(segFault(vecTS, sel))
	}
	d, _, ok := c.descriptor(sel)
	if !ok {
		panic(segFault(vecTS, sel))
	}
	ss := segFromDesc(sel, d)
	if int(sel&3) != cpl || int(ss.DPL) != cpl || ss.S == 0 || ss.Type&8 != 0 || ss.Type&2 == 0 {
		panic(segFault(vecTS, sel))
	}
	if ss.Present == 0 {
		panic(segFault(vecSS, sel))
	}
	return sp, ss
}
