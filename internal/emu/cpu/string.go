package cpu

// String instructions. A rep-prefixed instruction runs at most
// repBatch iterations per Step, leaving RIP on itself so that interrupts,
// kicks and the instruction budget are honoured between batches; the
// registers are always consistent with the completed iterations.

const repBatch = 4096

func (c *CPU) strDelta(size int) uint64 {
	if c.flags&flagDF != 0 {
		return -uint64(size)
	}
	return uint64(size)
}

// stringOp executes movs, cmps, stos, lods, scas.
func (c *CPU) stringOp(op uint8) {
	in := c.cur
	size := int(opSize(uint16(op), in.osz))
	am := c.aszMask()
	d := c.strDelta(size)
	rep := in.rep != 0
	if rep && (op <= 0xa5 || op == 0xaa || op == 0xab) && c.flags&flagDF == 0 && c.flatStrings() {
		if c.repFast(op, size) {
			return
		}
	}
	for n := 0; ; n++ {
		if rep {
			if c.regs[rCX]&am == 0 {
				return
			}
			if n == repBatch {
				c.rip = c.startRIP
				return
			}
		}
		si, di := c.regs[rSI]&am, c.regs[rDI]&am
		stop := false
		switch op {
		case 0xa4, 0xa5: // movs
			v := c.readMem(int(in.seg), si, size)
			c.writeMem(segES, di, size, v)
			c.setRegASZ(rSI, si+d)
			c.setRegASZ(rDI, di+d)
		case 0xa6, 0xa7: // cmps
			a := c.readMem(int(in.seg), si, size)
			b := c.readMem(segES, di, size)
			c.alu(7, a, b, uint8(size))
			c.setRegASZ(rSI, si+d)
			c.setRegASZ(rDI, di+d)
			stop = true
		case 0xaa, 0xab: // stos
			c.writeMem(segES, di, size, c.regs[rAX])
			c.setRegASZ(rDI, di+d)
		case 0xac, 0xad: // lods
			c.setReg(rAX, uint8(size), c.readMem(int(in.seg), si, size))
			c.setRegASZ(rSI, si+d)
		case 0xae, 0xaf: // scas
			b := c.readMem(segES, di, size)
			c.alu(7, c.getReg(rAX, uint8(size)), b, uint8(size))
			c.setRegASZ(rDI, di+d)
			stop = true
		}
		if !rep {
			return
		}
		c.mmioDone() // the next element reads afresh
		c.setRegASZ(rCX, c.regs[rCX]-1)
		if stop {
			z := c.zf()
			if (in.rep == 0xf3 && !z) || (in.rep == 0xf2 && z) {
				return
			}
		}
		if c.exit.Kind != ExitNone {
			if c.regs[rCX]&am != 0 {
				c.rip = c.startRIP
			}
			return
		}
	}
}

// stringIO executes ins and outs: one element per Platform call.
func (c *CPU) stringIO(op uint8) {
	in := c.cur
	size := 1
	if op&1 != 0 {
		size = 4
		if in.osz == 2 {
			size = 2
		}
	}
	port := uint16(c.regs[rDX])
	c.checkIO(port, size)
	am := c.aszMask()
	d := c.strDelta(size)
	rep := in.rep != 0
	for n := 0; ; n++ {
		if rep {
			if c.regs[rCX]&am == 0 {
				return
			}
			if n == repBatch {
				c.rip = c.startRIP
				return
			}
		}
		if op < 0x6e { // ins
			di := c.regs[rDI] & am
			lin := c.linear(segES, di, size, true)
			c.translate(lin, accWrite, c.user()) // fault before the port read
			v := c.portIn(port, size)
			c.writeLin(lin, size, uint64(v), c.user())
			c.setRegASZ(rDI, di+d)
		} else {
			si := c.regs[rSI] & am
			v := c.readMem(int(in.seg), si, size)
			c.portOut(port, size, uint32(v))
			c.setRegASZ(rSI, si+d)
		}
		if !rep {
			return
		}
		c.mmioDone()
		c.setRegASZ(rCX, c.regs[rCX]-1)
		if c.exit.Kind != ExitNone {
			if c.regs[rCX]&am != 0 {
				c.rip = c.startRIP
			}
			return
		}
	}
}

// flatStrings reports whether string addresses need no per-element limit
// checks: 64-bit code, or flat 4 GiB segments with 32-bit addressing.
func (c *CPU) flatStrings() bool {
	if c.code64() {
		return true
	}
	es, ds := &c.seg[segES], &c.seg[c.cur.seg]
	return c.cur.asz == 4 && c.cr0&cr0PE != 0 && es.Limit == 0xffffffff && ds.Limit == 0xffffffff &&
		es.Type&0xc != 4 && ds.Type&0xc != 4
}

// repFast runs forward rep movs/stos a page-chunk at a time directly on
// guest RAM. It reports false (having done nothing more) when an element
// crosses a page or touches MMIO, leaving the rest to the generic loop;
// true when the instruction is done or its batch ends.
func (c *CPU) repFast(op uint8, size int) bool {
	am := c.aszMask()
	user := c.user()
	movs := op <= 0xa5
	for chunks := 0; chunks < repBatch/256; chunks++ {
		cnt := c.regs[rCX] & am
		if cnt == 0 {
			return true
		}
		di := c.regs[rDI] & am
		dlin := c.linear(segES, di, size, true)
		n := (pageSize - dlin&0xfff) / uint64(size)
		var slin uint64
		if movs {
			slin = c.linear(int(c.cur.seg), c.regs[rSI]&am, size, false)
			n = min(n, (pageSize-slin&0xfff)/uint64(size))
		}
		n = min(n, cnt)
		c.alignCheck(dlin, size, user)
		if movs {
			c.alignCheck(slin, size, user)
		}
		if n == 0 || (am != ^uint64(0) && (di+n*uint64(size) > am || (movs && (c.regs[rSI]&am)+n*uint64(size) > am))) {
			return false // crosses a page or wraps the address size
		}
		var src hostPtr
		if movs {
			se := c.translate(slin, accRead, user)
			if se.host == nil {
				return false
			}
			src = at(se.host, slin&0xfff)
		}
		de := c.translate(dlin, accWrite, user)
		if de.host == nil {
			return false
		}
		if de.flags&tlbFast == 0 {
			c.slowStore(de)
		}
		dst := at(de.host, dlin&0xfff)
		v := c.regs[rAX]
		for i := uint64(0); i < n; i++ {
			off := i * uint64(size)
			if movs {
				v = load(at(src, off), size)
			}
			store(at(dst, off), size, v)
		}
		if movs {
			c.setRegASZ(rSI, c.regs[rSI]+n*uint64(size))
		}
		c.setRegASZ(rDI, di+n*uint64(size))
		c.setRegASZ(rCX, cnt-n)
	}
	if c.regs[rCX]&am != 0 {
		c.rip = c.startRIP
	}
	return true
}
