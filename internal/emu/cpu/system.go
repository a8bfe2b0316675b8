package cpu

import "github.com/godwit-vmm/godwit/internal/hv"

func hvDTable(base, limit uint64) hv.DTable { return hv.DTable{Base: base, Limit: uint16(limit)} }

func (c *CPU) tsc() uint64 {
	c.leavePlatform()
	t := c.plat.TSC()
	c.enterPlatform()
	return t
}

// movCR executes mov to/from CR0, CR2, CR3, CR4, CR8.
func (c *CPU) movCR(to bool) {
	in := c.cur
	c.requireCPL0()
	n := in.reg
	size := uint8(4)
	if c.code64() {
		size = 8
	}
	if !to {
		var v uint64
		switch n {
		case 0:
			v = c.cr0
		case 2:
			v = c.cr2
		case 3:
			v = c.cr3
		case 4:
			v = c.cr4
		case 8:
			v = c.cr8
		default:
			panic(ud())
		}
		c.setReg(in.rm, size, v)
		return
	}
	v := c.getReg(in.rm, size)
	switch n {
	case 0:
		c.setCR0(v)
	case 2:
		c.cr2 = v
	case 3:
		if c.longMode() && v>>52 != 0 {
			panic(gp(0))
		}
		c.cr3 = v
		c.flushTLB(false)
	case 4:
		c.setCR4(v)
	case 8:
		if v>>4 != 0 {
			panic(gp(0))
		}
		c.cr8 = v
	default:
		panic(ud())
	}
}

func (c *CPU) setCR0(v uint64) {
	if v>>32 != 0 || (v&cr0PG != 0 && v&cr0PE == 0) || (v&cr0NW != 0 && v&cr0CD == 0) {
		panic(gp(0))
	}
	v |= cr0ET
	old := c.cr0
	if v&cr0PG != 0 && old&cr0PG == 0 && c.efer&eferLME != 0 {
		if c.cr4&cr4PAE == 0 {
			panic(gp(0))
		}
		c.efer |= eferLMA
	}
	if v&cr0PG == 0 && old&cr0PG != 0 && c.efer&eferLMA != 0 {
		if c.code64() {
			panic(gp(0))
		}
		c.efer &^= eferLMA
	}
	c.cr0 = v
	if (old^v)&(cr0PG|cr0WP|cr0PE) != 0 {
		c.flushTLB(true)
		c.dcache.flush()
	}
}

// cr4Supported are the CR4 bits a guest may set: TSD, DE, PSE, PAE, MCE,
// PGE, PCE, OSFXSR, OSXMMEXCPT, OSXSAVE.
const cr4Supported = 1<<2 | 1<<3 | cr4PSE | cr4PAE | 1<<6 | cr4PGE | 1<<8 | cr4OSFXSR | cr4OSXMMEXCPT | cr4OSXSAVE

func (c *CPU) setCR4(v uint64) {
	if v&^cr4Supported != 0 || (c.longMode() && v&cr4PAE == 0) {
		panic(gp(0))
	}
	c.cr4 = v
	c.flushTLB(true)
}

func (c *CPU) movDR(to bool) {
	in := c.cur
	c.requireCPL0()
	n := in.reg
	if n > 7 {
		panic(ud())
	}
	if n == 4 || n == 5 {
		if c.cr4&(1<<3) != 0 {
			panic(ud())
		}
		n += 2
	}
	size := uint8(4)
	if c.code64() {
		size = 8
	}
	if !to {
		c.setReg(in.rm, size, c.dr[n])
		return
	}
	v := c.getReg(in.rm, size)
	switch n {
	case 6:
		v = v&0xf00f | 0xffff0ff0
	case 7:
		v = v&^0xd800 | 0x400
	}
	c.dr[n] = v
}

// MSR indices owned by the CPU.
const (
	msrSysenterCS   = 0x174
	msrSysenterESP  = 0x175
	msrSysenterEIP  = 0x176
	msrMTRRcap      = 0xfe
	msrMiscEnable   = 0x1a0
	msrPAT          = 0x277
	msrMTRRdefType  = 0x2ff
	msrMTRRphysBase = 0x200
	msrEFER         = 0xc0000080
	msrSTAR         = 0xc0000081
	msrLSTAR        = 0xc0000082
	msrCSTAR        = 0xc0000083
	msrSFMASK       = 0xc0000084
	msrFSBase       = 0xc0000100
	msrGSBase       = 0xc0000101
	msrKernelGSBase = 0xc0000102
	msrTSCAux       = 0xc0000103
)

var mtrrFixed = [11]uint32{0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f}

// SupportedMSRs returns the MSRs the CPU saves and restores (the backend
// adds the platform's).
func SupportedMSRs() []uint32 {
	l := []uint32{msrSysenterCS, msrSysenterESP, msrSysenterEIP, msrMiscEnable, msrPAT, msrMTRRdefType,
		msrEFER, msrSTAR, msrLSTAR, msrCSTAR, msrSFMASK, msrFSBase, msrGSBase, msrKernelGSBase, msrTSCAux}
	for i := uint32(0); i < 16; i++ {
		l = append(l, msrMTRRphysBase+i)
	}
	return append(l, mtrrFixed[:]...)
}

// msr reads an MSR the CPU owns.
func (c *CPU) msr(idx uint32) (uint64, bool) {
	switch idx {
	case msrSysenterCS:
		return c.sysenterCS, true
	case msrSysenterESP:
		return c.sysenterESP, true
	case msrSysenterEIP:
		return c.sysenterEIP, true
	case msrMTRRcap:
		return 0x508, true // 8 variable ranges, fixed ranges, write-combining
	case msrMiscEnable:
		return c.miscEnable, true
	case msrPAT:
		return c.pat, true
	case msrMTRRdefType:
		return c.mtrrDefType, true
	case msrEFER:
		return c.efer, true
	case msrSTAR:
		return c.star, true
	case msrLSTAR:
		return c.lstar, true
	case msrCSTAR:
		return c.cstar, true
	case msrSFMASK:
		return c.sfmask, true
	case msrFSBase:
		return c.seg[segFS].Base, true
	case msrGSBase:
		return c.seg[segGS].Base, true
	case msrKernelGSBase:
		return c.kernelGSBase, true
	case msrTSCAux:
		return c.tscAux, true
	}
	if idx >= msrMTRRphysBase && idx < msrMTRRphysBase+16 {
		return c.mtrrVar[idx-msrMTRRphysBase], true
	}
	for i, f := range mtrrFixed {
		if f == idx {
			return c.mtrrFix[i], true
		}
	}
	return 0, false
}

// setMSR writes an MSR the CPU owns; ok=false: not owned; valid=false: #GP.
func (c *CPU) setMSR(idx uint32, v uint64) (ok, valid bool) {
	switch idx {
	case msrSysenterCS:
		c.sysenterCS = v & 0xffff
	case msrSysenterESP:
		c.sysenterESP = v
	case msrSysenterEIP:
		c.sysenterEIP = v
	case msrMTRRcap:
		return true, false
	case msrMiscEnable:
		c.miscEnable = v
	case msrPAT:
		for i := 0; i < 8; i++ {
			t := v >> (8 * i) & 0xff
			if t == 2 || t == 3 || t > 7 {
				return true, false
			}
		}
		c.pat = v
	case msrMTRRdefType:
		if v&^0xcff != 0 {
			return true, false
		}
		c.mtrrDefType = v
	case msrEFER:
		const allowed = eferSCE | eferLME | eferLMA | eferNXE
		if v&^allowed != 0 {
			return true, false
		}
		if c.cr0&cr0PG != 0 && (v^c.efer)&eferLME != 0 {
			return true, false
		}
		v = v&^eferLMA | c.efer&eferLMA
		if (v^c.efer)&eferNXE != 0 {
			c.flushTLB(true)
		}
		c.efer = v
	case msrSTAR:
		c.star = v
	case msrLSTAR, msrCSTAR, msrFSBase, msrGSBase, msrKernelGSBase:
		if !canonical(v) {
			return true, false
		}
		switch idx {
		case msrLSTAR:
			c.lstar = v
		case msrCSTAR:
			c.cstar = v
		case msrFSBase:
			c.seg[segFS].Base = v
		case msrGSBase:
			c.seg[segGS].Base = v
		default:
			c.kernelGSBase = v
		}
	case msrSFMASK:
		c.sfmask = v & 0xffffffff
	case msrTSCAux:
		if v>>32 != 0 {
			return true, false
		}
		c.tscAux = v
	default:
		if idx >= msrMTRRphysBase && idx < msrMTRRphysBase+16 {
			c.mtrrVar[idx-msrMTRRphysBase] = v
			return true, true
		}
		for i, f := range mtrrFixed {
			if f == idx {
				c.mtrrFix[i] = v
				return true, true
			}
		}
		return false, false
	}
	return true, true
}

func (c *CPU) rdmsr(idx uint32) uint64 {
	if v, ok := c.msr(idx); ok {
		return v
	}
	c.leavePlatform()
	v, ok := c.plat.ReadMSR(idx)
	c.enterPlatform()
	if !ok {
		panic(gp(0))
	}
	return v
}

func (c *CPU) wrmsr(idx uint32, v uint64) {
	if owned, valid := c.setMSR(idx, v); owned {
		if !valid {
			panic(gp(0))
		}
		return
	}
	c.leavePlatform()
	ok := c.plat.WriteMSR(idx, v)
	c.enterPlatform()
	if !ok {
		panic(gp(0))
	}
}

// GetMSRs reads the MSRs idx, stopping at the first unknown one (KVM
// semantics): the CPU's own, then the platform's.
func (c *CPU) GetMSRs(idx []uint32) []hv.MSREntry {
	out := make([]hv.MSREntry, 0, len(idx))
	for _, i := range idx {
		v, ok := c.msr(i)
		if !ok {
			v, ok = c.plat.ReadMSR(i)
		}
		if !ok {
			break
		}
		out = append(out, hv.MSREntry{Index: i, Data: v})
	}
	return out
}

// SetMSRs writes MSRs and returns how many were set; it stops at the first
// failure. EFER is loaded as given (LMA included), as KVM does.
func (c *CPU) SetMSRs(ents []hv.MSREntry) int {
	for n, e := range ents {
		if e.Index == msrEFER {
			if e.Data&^uint64(eferSCE|eferLME|eferLMA|eferNXE) != 0 {
				return n
			}
			c.efer = e.Data
			c.flushTLB(true)
			continue
		}
		owned, valid := c.setMSR(e.Index, e.Data)
		if owned && !valid {
			return n
		}
		if !owned && !c.plat.WriteMSR(e.Index, e.Data) {
			return n
		}
	}
	return len(ents)
}

// syscall executes the 64-bit fast system call (EFER.SCE), from 64-bit or
// compatibility mode.
func (c *CPU) syscall() {
	if !c.longMode() || c.efer&eferSCE == 0 {
		panic(ud())
	}
	c64 := c.code64()
	c.regs[rCX] = c.rip
	f := c.getFlags()
	c.regs[11] = f &^ flagRF
	sel := uint16(c.star >> 32 & 0xfffc)
	c.seg[segCS] = hv.Segment{Selector: sel, Limit: 0xffffffff, Type: 0xb, S: 1, Present: 1, L: 1, G: 1}
	c.seg[segSS] = hv.Segment{Selector: sel + 8, Limit: 0xffffffff, Type: 3, S: 1, Present: 1, DB: 1, G: 1}
	if c64 {
		c.rip = c.lstar
	} else {
		c.rip = c.cstar
	}
	c.setFlags(f &^ (c.sfmask | flagRF))
}

// sysret returns to CPL 3 after syscall.
func (c *CPU) sysret() {
	if !c.longMode() || c.efer&eferSCE == 0 {
		panic(ud())
	}
	if !c.code64() || c.cpl() != 0 {
		panic(gp(0))
	}
	base := uint16(c.star >> 48)
	if c.cur.rex&8 != 0 {
		if !canonical(c.regs[rCX]) {
			panic(gp(0))
		}
		c.seg[segCS] = hv.Segment{Selector: (base + 16) | 3, Limit: 0xffffffff, Type: 0xb, S: 1, Present: 1, L: 1, G: 1, DPL: 3}
		c.rip = c.regs[rCX]
	} else {
		c.seg[segCS] = hv.Segment{Selector: base | 3, Limit: 0xffffffff, Type: 0xb, S: 1, Present: 1, DB: 1, G: 1, DPL: 3}
		c.rip = c.regs[rCX] & 0xffffffff
	}
	c.seg[segSS] = hv.Segment{Selector: (base + 8) | 3, Limit: 0xffffffff, Type: 3, S: 1, Present: 1, DB: 1, G: 1, DPL: 3}
	c.setFlags(c.regs[11]&^(flagRF|flagVM) | 2)
	c.irqCheck = true
}

// I/O.

// checkIO applies the IOPL and TSS I/O-permission-bitmap checks.
func (c *CPU) checkIO(port uint16, size int) {
	if c.cr0&cr0PE == 0 {
		return
	}
	if c.flags&flagVM == 0 && c.cpl() <= int(c.flags>>12&3) {
		return
	}
	if c.tr.Type&8 == 0 || c.tr.Limit < 0x67 {
		panic(gp(0))
	}
	base := c.readLin(c.tr.Base+0x66, 2, false)
	off := base + uint64(port)/8
	if off+1 > uint64(c.tr.Limit) {
		panic(gp(0))
	}
	bm := c.readLin(c.tr.Base+off, 2, false)
	if bm>>(port%8)&(1<<size-1) != 0 {
		panic(gp(0))
	}
}

func (c *CPU) portIn(port uint16, size int) uint32 {
	m := uint32(sizeMask(uint8(size)))
	if c.haveIn {
		c.haveIn = false
		return c.inVal & m
	}
	c.leavePlatform()
	v, ok := c.plat.In(port, size)
	c.enterPlatform()
	if !ok {
		c.exit = Exit{Kind: ExitIO, Port: port, Size: size}
		panic(exitNow{})
	}
	return v & m
}

func (c *CPU) portOut(port uint16, size int, v uint32) {
	v &= uint32(sizeMask(uint8(size)))
	c.leavePlatform()
	ex := c.plat.Out(port, size, v)
	c.enterPlatform()
	if ex {
		c.exit = Exit{Kind: ExitIO, Port: port, Size: size, Write: true, Data: uint64(v)}
	}
}

// sysenter enters CPL 0 at SYSENTER_EIP with flat segments from
// SYSENTER_CS (Intel semantics, also in long mode).
func (c *CPU) sysenter() {
	sel := uint16(c.sysenterCS) &^ 3
	if c.realMode() || sel == 0 {
		panic(gp(0))
	}
	f := c.getFlags()
	c.setFlags(f &^ (flagVM | flagIF | flagRF))
	if c.longMode() {
		c.seg[segCS] = hv.Segment{Selector: sel, Limit: 0xffffffff, Type: 0xb, S: 1, Present: 1, L: 1, G: 1}
		c.rip, c.regs[rSP] = c.sysenterEIP, c.sysenterESP
	} else {
		c.seg[segCS] = hv.Segment{Selector: sel, Limit: 0xffffffff, Type: 0xb, S: 1, Present: 1, DB: 1, G: 1}
		c.rip, c.regs[rSP] = c.sysenterEIP&0xffffffff, c.sysenterESP&0xffffffff
	}
	c.seg[segSS] = hv.Segment{Selector: sel + 8, Limit: 0xffffffff, Type: 3, S: 1, Present: 1, DB: 1, G: 1}
}

// sysexit returns to CPL 3 at RDX with stack RCX.
func (c *CPU) sysexit() {
	sel := uint16(c.sysenterCS) &^ 3
	if c.realMode() || sel == 0 || c.cpl() != 0 {
		panic(gp(0))
	}
	if c.cur.rex&8 != 0 {
		if !canonical(c.regs[rDX]) || !canonical(c.regs[rCX]) {
			panic(gp(0))
		}
		c.seg[segCS] = hv.Segment{Selector: (sel + 32) | 3, Limit: 0xffffffff, Type: 0xb, S: 1, Present: 1, L: 1, G: 1, DPL: 3}
		c.seg[segSS] = hv.Segment{Selector: (sel + 40) | 3, Limit: 0xffffffff, Type: 3, S: 1, Present: 1, DB: 1, G: 1, DPL: 3}
		c.rip, c.regs[rSP] = c.regs[rDX], c.regs[rCX]
		return
	}
	c.seg[segCS] = hv.Segment{Selector: (sel + 16) | 3, Limit: 0xffffffff, Type: 0xb, S: 1, Present: 1, DB: 1, G: 1, DPL: 3}
	c.seg[segSS] = hv.Segment{Selector: (sel + 24) | 3, Limit: 0xffffffff, Type: 3, S: 1, Present: 1, DB: 1, G: 1, DPL: 3}
	c.rip, c.regs[rSP] = c.regs[rDX]&0xffffffff, c.regs[rCX]&0xffffffff
}
