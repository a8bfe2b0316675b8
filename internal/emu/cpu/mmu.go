package cpu

const (
	tlbSize = 16384

	tlbValid  = 1 << 0
	tlbUser   = 1 << 1 // user accesses allowed at every level
	tlbWrite  = 1 << 2 // writes allowed at every level
	tlbDirty  = 1 << 3 // the leaf's D bit is set (or paging is off)
	tlbNX     = 1 << 4 // no execute
	tlbGlobal = 1 << 5
	tlbFast   = 1 << 6 // stores may skip the dirty/code slow path
	tlbListed = 1 << 7 // the entry's index is in CPU.tlbUsed (kept when invalidated)

	accRead  = 0
	accWrite = 1
	accExec  = 2

	pfP    = 1 << 0
	pfW    = 1 << 1
	pfU    = 1 << 2
	pfRSVD = 1 << 3
	pfI    = 1 << 4

	physAddrBits = 40
	physMask     = (1<<physAddrBits - 1) &^ 0xfff
	pteRsvdHigh  = (1<<52 - 1) &^ (1<<physAddrBits - 1)
)

// tlbEntry caches one 4 KiB linear page.
type tlbEntry struct {
	vpn   uint64
	host  hostPtr // host address of the page; nil: MMIO
	gpa   uint64  // guest-physical page address
	s     *slot
	pg    uint64 // page index within s
	flags uint8
}

// codePage caches the translation of the page instructions come from, so
// that sequential instructions skip the TLB lookup; any TLB flush drops it.
type codePage struct {
	valid bool
	user  bool
	vpn   uint64
	e     tlbEntry
}

// flushTLB drops every cached translation, or every one but the global
// pages' unless global is set.
func (c *CPU) flushTLB(global bool) {
	c.code.valid = false
	kept := c.tlbUsed[:0]
	for _, i := range c.tlbUsed {
		e := &c.tlb[i]
		if !global && e.flags&(tlbGlobal|tlbValid) == tlbGlobal|tlbValid {
			kept = append(kept, i)
			continue
		}
		e.flags = 0
	}
	c.tlbUsed = kept
}

func (c *CPU) flushPage(lin uint64) {
	c.code.valid = false
	e := &c.tlb[(lin>>12)%tlbSize]
	if e.vpn == lin>>12 {
		e.flags &= tlbListed
	}
}

// dropFast makes the next store to every cached page take the slow path.
func (c *CPU) dropFast() {
	for _, i := range c.tlbUsed {
		c.tlb[i].flags &^= tlbFast
	}
}

// syncGen runs at instruction boundaries: it acknowledges a new Memory
// generation after dropping the cached fast-store flags.
func (c *CPU) syncGen() {
	if g := c.mem.gen.Load(); g != c.seenGen {
		c.dropFast()
		c.seenGen = g
		c.ackGen.Store(g)
	}
}

func (c *CPU) pagingOn() bool { return c.cr0&cr0PG != 0 }

// translate returns the TLB entry for linear address lin, walking the page
// tables (and raising #PF) on a miss or insufficient cached permissions.
func (c *CPU) translate(lin uint64, acc int, user bool) *tlbEntry {
	e := &c.tlb[(lin>>12)%tlbSize]
	if e.flags&tlbValid != 0 && e.vpn == lin>>12 {
		ok := true
		if user && e.flags&tlbUser == 0 {
			ok = false
		}
		switch acc {
		case accWrite:
			if e.flags&tlbDirty == 0 || (e.flags&tlbWrite == 0 && (user || c.cr0&cr0WP != 0)) {
				ok = false
			}
		case accExec:
			if e.flags&tlbNX != 0 && c.efer&eferNXE != 0 {
				ok = false
			}
		}
		if ok {
			return e
		}
	}
	gpa, fl := c.walk(lin, acc, user)
	if e.flags&tlbListed == 0 {
		c.tlbUsed = append(c.tlbUsed, uint16((lin>>12)%tlbSize))
	}
	e.vpn = lin >> 12
	e.gpa = gpa
	e.flags = fl | tlbValid | tlbListed
	e.host, e.s = c.mem.hostAt(gpa)
	if e.s != nil {
		e.pg = (gpa - e.s.gpa) / pageSize
	}
	return e
}

func (c *CPU) pageFault(lin uint64, code uint32) {
	c.cr2 = lin
	panic(fault{vec: vecPF, err: code, hasErr: true})
}

// walk translates lin through the guest's page tables, setting accessed and
// dirty bits atomically, and returns the 4 KiB guest-physical page and the
// tlb permission flags.
func (c *CPU) walk(lin uint64, acc int, user bool) (uint64, uint8) {
	if !c.pagingOn() {
		return lin &^ 0xfff & 0xffffffff, tlbUser | tlbWrite | tlbDirty
	}
	code := uint32(0)
	if acc == accWrite {
		code |= pfW
	}
	if user {
		code |= pfU
	}
	nxe := c.efer&eferNXE != 0
	if acc == accExec && nxe {
		code |= pfI
	}
	if c.cr4&cr4PAE == 0 {
		return c.walk32(lin, acc, user, code)
	}
	type level struct {
		p   hostPtr
		s   *slot
		gpa uint64
		v   uint64
	}
	var lv [4]level
	n := 0
	rsvd := uint64(pteRsvdHigh)
	if !nxe {
		rsvd |= 1 << 63
	}
	var table uint64
	var shift uint
	var levels int
	if c.efer&eferLMA != 0 {
		table, shift, levels = c.cr3&physMask, 39, 4
	} else {
		// PAE: the PDPTE selects the page directory.
		pa := c.cr3&0xffffffe0 + (lin>>30&3)*8
		v, _ := c.physRead64(pa)
		if v&1 == 0 {
			c.pageFault(lin, code)
		}
		if v&(pteRsvdHigh|0x1e6) != 0 {
			c.pageFault(lin, code|pfP|pfRSVD)
		}
		table, shift, levels = v&physMask, 21, 2
	}
	uAll, wAll, nx := true, true, false
	var leaf uint64
	var pageMask uint64 = 0xfff
	for l := 0; l < levels; l++ {
		pa := table + (lin>>shift&511)*8
		p, s := c.mem.hostAt(pa)
		var v uint64
		if p != nil {
			v = loadAtomic64(p)
		} else {
			v = c.mmioRead(pa, 8)
		}
		if v&1 == 0 {
			c.pageFault(lin, code)
		}
		r := rsvd
		isLeaf := false
		if v&0x80 != 0 {
			switch {
			case shift == 39:
				r |= 0x80 // PS in a PML4E is reserved
			case shift == 30 || shift == 21:
				isLeaf = true
				r |= (1<<shift - 1) &^ 0x1fff // page-frame low bits above PAT
			}
		}
		if v&r != 0 {
			c.pageFault(lin, code|pfP|pfRSVD)
		}
		lv[n] = level{p, s, pa, v}
		n++
		uAll = uAll && v&4 != 0
		wAll = wAll && v&2 != 0
		nx = nx || v&(1<<63) != 0
		if isLeaf || shift == 12 {
			leaf = v
			pageMask = 1<<shift - 1
			break
		}
		table = v & physMask
		shift -= 9
	}
	c.checkPerm(lin, acc, user, code, uAll, wAll, nx && nxe)
	for i := 0; i < n; i++ {
		c.setAD(lv[i].p, lv[i].s, lv[i].gpa, lv[i].v, i == n-1 && acc == accWrite, true)
	}
	dirty := leaf&0x40 != 0 || acc == accWrite
	gpa := (leaf&physMask&^pageMask | lin&pageMask) &^ 0xfff
	return gpa, c.permFlags(uAll, wAll, dirty, nx, leaf&0x100 != 0)
}

func (c *CPU) permFlags(u, w, d, nx, g bool) uint8 {
	var f uint8
	if u {
		f |= tlbUser
	}
	if w {
		f |= tlbWrite
	}
	if d {
		f |= tlbDirty
	}
	if nx {
		f |= tlbNX
	}
	if g && c.cr4&cr4PGE != 0 {
		f |= tlbGlobal
	}
	return f
}

func (c *CPU) checkPerm(lin uint64, acc int, user bool, code uint32, u, w, nx bool) {
	if user && !u {
		c.pageFault(lin, code|pfP)
	}
	if acc == accWrite && !w && (user || c.cr0&cr0WP != 0) {
		c.pageFault(lin, code|pfP)
	}
	if acc == accExec && nx {
		c.pageFault(lin, code|pfP)
	}
}

// setAD sets the accessed bit (and the dirty bit when dirty) of the entry
// at p, atomically, marking the page-table page dirty.
func (c *CPU) setAD(p hostPtr, s *slot, gpa, v uint64, dirty, wide bool) {
	want := uint64(0x20)
	if dirty {
		want |= 0x40
	}
	if v&want == want || p == nil {
		return
	}
	for {
		var ok bool
		if wide {
			ok = casPTE64(p, v, v|want)
		} else {
			ok = casPTE32(p, uint32(v), uint32(v|want))
		}
		if ok {
			break
		}
		if wide {
			v = loadAtomic64(p)
		} else {
			v = uint64(loadAtomic32(p))
		}
		if v&want == want {
			break
		}
	}
	c.mem.noteWrite(s, (gpa-s.gpa)/pageSize)
}

// walk32 is the two-level 32-bit walk (4 KiB pages, 4 MiB with CR4.PSE).
func (c *CPU) walk32(lin uint64, acc int, user bool, code uint32) (uint64, uint8) {
	lin &= 0xffffffff
	pdeA := c.cr3&0xfffff000 + (lin>>22)*4
	p1, s1 := c.mem.hostAt(pdeA)
	var pde uint64
	if p1 != nil {
		pde = uint64(loadAtomic32(p1))
	} else {
		pde = c.mmioRead(pdeA, 4)
	}
	if pde&1 == 0 {
		c.pageFault(lin, code)
	}
	if pde&0x80 != 0 && c.cr4&cr4PSE != 0 {
		u, w := pde&4 != 0, pde&2 != 0
		c.checkPerm(lin, acc, user, code, u, w, false)
		c.setAD(p1, s1, pdeA, pde, acc == accWrite, false)
		gpa := pde&0xffc00000 | (pde>>13&0xff)<<32 | lin&0x3ff000
		return gpa, c.permFlags(u, w, pde&0x40 != 0 || acc == accWrite, false, pde&0x100 != 0)
	}
	pteA := pde&0xfffff000 + (lin>>12&1023)*4
	p2, s2 := c.mem.hostAt(pteA)
	var pte uint64
	if p2 != nil {
		pte = uint64(loadAtomic32(p2))
	} else {
		pte = c.mmioRead(pteA, 4)
	}
	if pte&1 == 0 {
		c.pageFault(lin, code)
	}
	u, w := pde&pte&4 != 0, pde&pte&2 != 0
	c.checkPerm(lin, acc, user, code, u, w, false)
	c.setAD(p1, s1, pdeA, pde, false, false)
	c.setAD(p2, s2, pteA, pte, acc == accWrite, false)
	return pte & 0xfffff000, c.permFlags(u, w, pte&0x40 != 0 || acc == accWrite, false, pte&0x100 != 0)
}

// physRead64 reads 8 bytes of guest-physical memory (RAM or MMIO).
func (c *CPU) physRead64(gpa uint64) (uint64, bool) {
	p, _ := c.mem.hostAt(gpa)
	if p == nil {
		return c.mmioRead(gpa, 8), false
	}
	return loadAtomic64(p), true
}

// mmioRead reads device memory through the platform. A read the VMM must
// answer ends Run with ExitMMIO before the instruction executes.
func (c *CPU) mmioRead(gpa uint64, size int) uint64 {
	m := sizeMask(uint8(size))
	if c.mmioPos < c.mmioN {
		v := c.mmioReplay[c.mmioPos]
		c.mmioPos++
		return v & m
	}
	c.leavePlatform()
	v, ok := c.plat.MMIORead(gpa, size)
	c.enterPlatform()
	if !ok {
		c.exit = Exit{Kind: ExitMMIO, Addr: gpa, Size: size}
		panic(exitNow{})
	}
	if c.mmioN < uint8(len(c.mmioReplay)) {
		c.mmioReplay[c.mmioN] = v
		c.mmioN++
		c.mmioPos = c.mmioN
	}
	return v & m
}

// mmioDone forgets the MMIO values of a completed instruction (or string
// element).
func (c *CPU) mmioDone() {
	c.mmioN, c.mmioPos, c.haveMMIO = 0, 0, false
}

func (c *CPU) mmioWrite(gpa uint64, size int, v uint64) {
	c.leavePlatform()
	ex := c.plat.MMIOWrite(gpa, size, v&sizeMask(uint8(size)))
	c.enterPlatform()
	if ex {
		c.exit = Exit{Kind: ExitMMIO, Addr: gpa, Size: size, Write: true, Data: v & sizeMask(uint8(size))}
	}
}

// leavePlatform and enterPlatform bracket Platform calls: while in one, the
// vCPU counts as past any dirty-log boundary, so ClearDirtyLog cannot wait
// on a vCPU blocked in the VMM.
func (c *CPU) leavePlatform() {
	if c.inRun.Load() != 0 {
		c.inRun.Store(2)
	}
}

func (c *CPU) enterPlatform() {
	if c.inRun.Load() == 2 {
		c.inRun.Store(1)
		c.syncGen()
	}
}

// alignCheck raises #AC for a misaligned data access at CPL 3 while
// CR0.AM and RFLAGS.AC are both set (2-, 4-, 8- and 16-byte operands must
// be aligned to their size).
func (c *CPU) alignCheck(lin uint64, size int, user bool) {
	if user && size&(size-1) == 0 && lin&uint64(size-1) != 0 && c.cr0&cr0AM != 0 && c.flags&flagAC != 0 {
		panic(fault{vec: vecAC, hasErr: true})
	}
}

// readLin reads size bytes at linear address lin.
func (c *CPU) readLin(lin uint64, size int, user bool) uint64 {
	c.alignCheck(lin, size, user)
	if lin&0xfff+uint64(size) > pageSize {
		var v uint64
		for i := 0; i < size; i++ {
			v |= c.readLin(lin+uint64(i), 1, user) << (8 * i)
		}
		return v
	}
	e := c.translate(lin, accRead, user)
	if e.host == nil {
		return c.mmioRead(e.gpa|lin&0xfff, size)
	}
	return load(at(e.host, lin&0xfff), size)
}

// writeLin writes size bytes at linear address lin.
func (c *CPU) writeLin(lin uint64, size int, v uint64, user bool) {
	c.alignCheck(lin, size, user)
	if lin&0xfff+uint64(size) > pageSize {
		// Translate both pages before writing anything.
		c.translate(lin, accWrite, user)
		c.translate(lin+uint64(size)-1, accWrite, user)
		for i := 0; i < size; i++ {
			c.writeLin(lin+uint64(i), 1, v>>(8*i), user)
		}
		return
	}
	e := c.translate(lin, accWrite, user)
	if e.host == nil {
		c.mmioWrite(e.gpa|lin&0xfff, size, v)
		return
	}
	if e.flags&tlbFast == 0 {
		c.slowStore(e)
	}
	store(at(e.host, lin&0xfff), size, v)
}

// slowStore marks the page of e dirty and invalidates code decoded from it;
// later stores through e may skip this until the next dirty-log clear.
func (c *CPU) slowStore(e *tlbEntry) {
	c.mem.noteWrite(e.s, e.pg)
	if !c.mem.isCode(e.s, e.pg) {
		e.flags |= tlbFast
	}
}

// hostForRMW translates a locked read-modify-write target and returns its
// host pointer (nil: MMIO or a page-crossing access).
func (c *CPU) hostForRMW(lin uint64, size int, user bool) (hostPtr, uint64) {
	c.alignCheck(lin, size, user)
	if lin&0xfff+uint64(size) > pageSize {
		c.translate(lin, accWrite, user)
		c.translate(lin+uint64(size)-1, accWrite, user)
		return nil, 0
	}
	e := c.translate(lin, accWrite, user)
	if e.host == nil {
		return nil, e.gpa | lin&0xfff
	}
	if e.flags&tlbFast == 0 {
		c.slowStore(e)
	}
	return at(e.host, lin&0xfff), 0
}
