package cpu

// Register and memory operands of the current instruction.

func (c *CPU) getReg(r uint8, size uint8) uint64 {
	switch size {
	case 1:
		if c.cur.rex == 0 && r >= 4 && r < 8 {
			return c.regs[r-4] >> 8 & 0xff
		}
		return c.regs[r] & 0xff
	case 2:
		return c.regs[r] & 0xffff
	case 4:
		return c.regs[r] & 0xffffffff
	}
	return c.regs[r]
}

func (c *CPU) setReg(r uint8, size uint8, v uint64) {
	switch size {
	case 1:
		if c.cur.rex == 0 && r >= 4 && r < 8 {
			c.regs[r-4] = c.regs[r-4]&^0xff00 | (v&0xff)<<8
			return
		}
		c.regs[r] = c.regs[r]&^0xff | v&0xff
	case 2:
		c.regs[r] = c.regs[r]&^0xffff | v&0xffff
	case 4:
		c.regs[r] = v & 0xffffffff
	default:
		c.regs[r] = v
	}
}

func (c *CPU) user() bool { return c.cpl() == 3 }

func (c *CPU) readMem(seg int, off uint64, size int) uint64 {
	if p := c.fastHost(seg, off, size, tlbValid); p != nil {
		return load(p, size)
	}
	return c.readLin(c.linear(seg, off, size, false), size, c.user())
}

func (c *CPU) writeMem(seg int, off uint64, size int, v uint64) {
	if p := c.fastHost(seg, off, size, tlbValid|tlbWrite|tlbDirty|tlbFast); p != nil {
		store(p, size, v)
		return
	}
	c.writeLin(c.linear(seg, off, size, true), size, v, c.user())
}

// fastHost is the common case of a data access, or nil for the full path
// (linear, then readLin or writeLin): 64-bit code, a segment without a base
// (not FS or GS), a canonical address, the access within one page, and a
// TLB entry that holds RAM and has every flag in need. At CPL 3 the entry
// must allow user access and RFLAGS.AC must be clear (no alignment check
// to make). Nothing here faults; the full path raises what is due.
func (c *CPU) fastHost(seg int, off uint64, size int, need uint8) hostPtr {
	if seg >= segFS || off&0xfff+uint64(size) > pageSize || !canonical(off) || !c.code64() {
		return nil
	}
	e := &c.tlb[(off>>12)%tlbSize]
	if e.vpn != off>>12 || e.flags&need != need || e.host == nil {
		return nil
	}
	if c.seg[segCS].DPL == 3 && (e.flags&tlbUser == 0 || c.flags&flagAC != 0) {
		return nil
	}
	return at(e.host, off&0xfff)
}

func (c *CPU) readRM(size uint8) uint64 {
	if c.cur.mod == 3 {
		return c.getReg(c.cur.rm, size)
	}
	return c.readMem(int(c.cur.seg), c.ea(), int(size))
}

func (c *CPU) writeRM(size uint8, v uint64) {
	if c.cur.mod == 3 {
		c.setReg(c.cur.rm, size, v)
		return
	}
	c.writeMem(int(c.cur.seg), c.ea(), int(size), v)
}

// rmwRM applies f to the r/m operand: atomically under a lock prefix
// (retrying f until the compare-and-swap succeeds), else as a plain
// read-modify-write.
func (c *CPU) rmwRM(size uint8, f func(old uint64) uint64) {
	if c.cur.mod == 3 {
		c.setReg(c.cur.rm, size, f(c.getReg(c.cur.rm, size)))
		return
	}
	c.rmwLin(c.linear(int(c.cur.seg), c.ea(), int(size), true), int(size), c.cur.lock, f)
}

func (c *CPU) rmwLin(lin uint64, size int, locked bool, f func(old uint64) uint64) {
	user := c.user()
	if !locked {
		if lin&0xfff+uint64(size) <= pageSize {
			c.translate(lin, accWrite, user)
		}
		old := c.readLin(lin, size, user)
		c.writeLin(lin, size, f(old), user)
		return
	}
	p, mmio := c.hostForRMW(lin, size, user)
	switch {
	case p != nil && fitsWord(p, size):
		for {
			old := load(p, size)
			if casSized(p, size, old, f(old)) {
				return
			}
		}
	case p == nil && mmio != 0:
		old := c.mmioRead(mmio, size)
		c.mmioWrite(mmio, size, f(old))
	default:
		// Split locked access: serialise on the Memory-wide lock.
		c.mem.splitMu.Lock()
		defer c.mem.splitMu.Unlock()
		old := c.readLin(lin, size, user)
		c.writeLin(lin, size, f(old), user)
	}
}

// Stack.

func (c *CPU) stackMask() uint64 {
	if c.code64() {
		return ^uint64(0)
	}
	if c.seg[segSS].DB != 0 {
		return 0xffffffff
	}
	return 0xffff
}

func (c *CPU) setSP(v uint64) {
	m := c.stackMask()
	c.regs[rSP] = c.regs[rSP]&^m | v&m
}

func (c *CPU) push(v uint64, size int) {
	sp := (c.regs[rSP] - uint64(size)) & c.stackMask()
	c.writeMem(segSS, sp, size, v)
	c.setSP(sp)
}

func (c *CPU) pop(size int) uint64 {
	sp := c.regs[rSP] & c.stackMask()
	v := c.readMem(segSS, sp, size)
	c.setSP(sp + uint64(size))
	return v
}

// peek reads the stack at RSP+off without popping.
func (c *CPU) peek(off uint64, size int) uint64 {
	return c.readMem(segSS, (c.regs[rSP]+off)&c.stackMask(), size)
}

// Address-size masked register helpers for string ops, loop, jcxz.

func (c *CPU) aszMask() uint64 { return sizeMask(c.cur.asz) }

func (c *CPU) setRegASZ(r uint8, v uint64) {
	switch c.cur.asz {
	case 2:
		c.regs[r] = c.regs[r]&^0xffff | v&0xffff
	case 4:
		c.regs[r] = v & 0xffffffff
	default:
		c.regs[r] = v
	}
}

// jump sets RIP to target, truncated to the operand size.
func (c *CPU) jump(target uint64, osz uint8) {
	switch osz {
	case 2:
		target &= 0xffff
	case 4:
		target &= 0xffffffff
	}
	if c.code64() && !canonical(target) {
		panic(gp(0))
	}
	if !c.code64() && c.cr0&cr0PE != 0 && target > uint64(c.seg[segCS].Limit) {
		panic(gp(0))
	}
	c.rip = target
}
