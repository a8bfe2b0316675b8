package cpu

import (
	"fmt"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// Exception vectors.
const (
	vecDE  = 0
	vecDB  = 1
	vecNMI = 2
	vecBP  = 3
	vecOF  = 4
	vecBR  = 5
	vecUD  = 6
	vecNM  = 7
	vecDF  = 8
	vecTS  = 10
	vecNP  = 11
	vecSS  = 12
	vecGP  = 13
	vecPF  = 14
	vecMF  = 16
	vecAC  = 17
)

// fault is an architectural exception raised during an instruction; it
// unwinds to Step with panic.
type fault struct {
	vec    int
	err    uint32
	hasErr bool
}

// exitNow unwinds an instruction that cannot complete until the VMM
// answers (c.exit says what); the instruction restarts on the next Run.
type exitNow struct{}

// trapDB unwinds after an instruction that completed with RFLAGS.TF set:
// a single-step #DB trap, delivered with RIP after the instruction.
type trapDB struct{}

// internalError ends Run with ExitInternalError.
type internalError struct{ reason string }

func ud() fault { return fault{vec: vecUD} }
func gp(err uint32) fault {
	return fault{vec: vecGP, err: err, hasErr: true}
}

func contributory(v int) bool { return v == vecDE || (v >= vecTS && v <= vecGP) }

// event kinds for delivery
const (
	evException = iota // fault or trap raised by the CPU
	evSoft             // int n, int3, into: gate DPL checked
	evExternal         // maskable interrupt or NMI
)

// raise delivers exception f (from the instruction at c.startRIP), applying
// the double- and triple-fault rules. It reports false on a triple fault.
func (c *CPU) raise(f fault, kind int, retRIP uint64) bool {
	for {
		nf, ok := c.tryDeliver(f, kind, retRIP)
		if ok {
			return true
		}
		if f.vec == vecDF {
			return false
		}
		if (contributory(f.vec) && contributory(nf.vec)) || (f.vec == vecPF && (nf.vec == vecPF || contributory(nf.vec))) {
			f = fault{vec: vecDF, hasErr: true}
		} else {
			f = nf
		}
		kind, retRIP = evException, c.startRIP
	}
}

func (c *CPU) tryDeliver(f fault, kind int, retRIP uint64) (nf fault, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			if x, isFault := r.(fault); isFault {
				nf, ok = x, false
				return
			}
			panic(r)
		}
	}()
	c.deliver(f, kind, retRIP)
	return fault{}, true
}

// deliver transfers control through the IVT or IDT.
func (c *CPU) deliver(f fault, kind int, retRIP uint64) {
	vec := f.vec
	flags := c.getFlags()
	if c.realMode() {
		if uint64(vec)*4+3 > uint64(c.idt.Limit) {
			panic(gp(0))
		}
		ent := c.readLin(c.idt.Base+uint64(vec)*4, 4, false)
		sp := c.regs[rSP]
		push := func(v uint64) {
			sp = (sp - 2) & 0xffff
			c.writeLin((c.seg[segSS].Base+sp)&0xffffffff, 2, v, false)
		}
		push(flags)
		push(uint64(c.seg[segCS].Selector))
		push(retRIP)
		c.regs[rSP] = c.regs[rSP]&^0xffff | sp
		c.flags = flags &^ (flagIF | flagTF | flagAC | flagRF)
		c.seg[segCS].Selector = uint16(ent >> 16)
		c.seg[segCS].Base = ent >> 16 << 4
		c.rip = ent & 0xffff
		return
	}
	if flags&flagVM != 0 {
		panic(internalError{"interrupt in virtual-8086 mode is not supported"})
	}
	ext := uint32(0)
	if kind != evSoft {
		ext = 1
	}
	idtErr := uint32(vec)<<3 | 2 | ext
	cpl := c.cpl()
	long := c.longMode()
	entSize := uint64(8)
	if long {
		entSize = 16
	}
	if uint64(vec)*entSize+entSize-1 > uint64(c.idt.Limit) {
		panic(gp(idtErr))
	}
	lo := c.readLin(c.idt.Base+uint64(vec)*entSize, 8, false)
	var hi uint64
	if long {
		hi = c.readLin(c.idt.Base+uint64(vec)*entSize+8, 8, false)
	}
	typ := lo >> 40 & 0x1f // includes the S bit
	dpl := int(lo >> 45 & 3)
	gsz := 4
	switch typ {
	case 0xe, 0xf:
	case 0x6, 0x7:
		if long {
			panic(gp(idtErr))
		}
		gsz = 2
	case 0x5:
		if long {
			panic(gp(idtErr))
		}
		panic(internalError{fmt.Sprintf("task gate in IDT vector %d is not supported", vec)})
	default:
		panic(gp(idtErr))
	}
	if kind == evSoft && dpl < cpl {
		panic(gp(idtErr))
	}
	if lo>>47&1 == 0 {
		panic(fault{vec: vecNP, err: idtErr, hasErr: true})
	}
	sel := uint16(lo >> 16)
	off := lo&0xffff | lo>>48<<16
	if long {
		off |= hi << 32
	} else if gsz == 2 {
		off &= 0xffff
	}
	cs, d, addr := c.codeDesc(sel)
	if int(cs.DPL) > cpl {
		panic(segFault(vecGP, sel))
	}
	if cs.Present == 0 {
		panic(segFault(vecNP, sel))
	}
	newCPL := int(cs.DPL)
	if cs.Type&4 != 0 {
		newCPL = cpl
	}
	oldSS, oldSP := c.seg[segSS], c.regs[rSP]
	if long {
		if cs.L == 0 || cs.DB != 0 {
			panic(segFault(vecGP, sel))
		}
		ist := lo >> 32 & 7
		sp := oldSP
		if ist != 0 {
			sp = c.readTSS(0x24+(ist-1)*8, 8)
		} else if newCPL < cpl {
			sp = c.readTSS(4+uint64(newCPL)*8, 8)
		}
		if !canonical(sp) {
			panic(fault{vec: vecSS, hasErr: true})
		}
		sp &^= 15
		user := newCPL == 3
		vals := [6]uint64{uint64(oldSS.Selector), oldSP, flags, uint64(c.seg[segCS].Selector), retRIP, uint64(f.err)}
		n := 5
		if f.hasErr {
			n = 6
		}
		for i := 0; i < n; i++ {
			sp -= 8
			c.writeLin(sp, 8, vals[i], user)
		}
		c.setCS(cs, newCPL, d, addr)
		if newCPL < cpl {
			c.seg[segSS] = hv.Segment{Selector: uint16(newCPL), Unusable: 1, DPL: uint8(newCPL), DB: 1}
		}
		c.regs[rSP] = sp
		c.rip = off
	} else {
		sp := oldSP
		var newSS hv.Segment
		switched := newCPL < cpl
		if switched {
			sp, newSS = c.innerStack(newCPL)
		} else {
			newSS = oldSS
		}
		spMask := uint64(0xffff)
		if newSS.DB != 0 {
			spMask = 0xffffffff
		}
		user := newCPL == 3
		push := func(v uint64) {
			sp = (sp - uint64(gsz)) & spMask
			c.writeLin((newSS.Base+sp)&0xffffffff, gsz, v, user)
		}
		if switched {
			push(uint64(oldSS.Selector))
			push(oldSP)
		}
		push(flags)
		push(uint64(c.seg[segCS].Selector))
		push(retRIP)
		if f.hasErr {
			push(uint64(f.err))
		}
		c.setCS(cs, newCPL, d, addr)
		if switched {
			newSS.Type |= 1
			c.seg[segSS] = newSS
		}
		c.regs[rSP] = c.regs[rSP]&^spMask | sp
		c.rip = off
	}
	nf := flags &^ (flagTF | flagNT | flagVM | flagRF)
	if typ&1 == 0 {
		nf &^= flagIF
	}
	c.flags = nf
}

// iret returns from an interrupt with operand size osz.
func (c *CPU) iret(osz int) {
	c.nmiMasked = false
	if c.realMode() {
		ip := c.pop(osz)
		cs := c.pop(osz)
		fl := c.pop(osz)
		c.seg[segCS].Selector = uint16(cs)
		c.seg[segCS].Base = (cs & 0xffff) << 4
		c.rip = ip & 0xffff
		c.writeFlagsPriv(fl, osz)
		return
	}
	flags := c.getFlags()
	if flags&flagVM != 0 {
		panic(internalError{"iret in virtual-8086 mode is not supported"})
	}
	if flags&flagNT != 0 && !c.longMode() {
		panic(internalError{"iret with NT (task return) is not supported"})
	}
	sp := c.regs[rSP]
	c64 := c.code64()
	popv := func() uint64 {
		v := c.readMem(segSS, sp&c.stackMask(), osz)
		sp += uint64(osz)
		return v
	}
	ip := popv()
	csSel := uint16(popv())
	fl := popv()
	cpl := c.cpl()
	if fl&flagVM != 0 && cpl == 0 && !c.longMode() {
		panic(internalError{"iret to virtual-8086 mode is not supported"})
	}
	cs, d, addr := c.codeDesc(csSel)
	rpl := int(csSel & 3)
	if rpl < cpl {
		panic(segFault(vecGP, csSel))
	}
	if cs.Type&4 != 0 {
		if int(cs.DPL) > rpl {
			panic(segFault(vecGP, csSel))
		}
	} else if int(cs.DPL) != rpl {
		panic(segFault(vecGP, csSel))
	}
	if cs.Present == 0 {
		panic(segFault(vecNP, csSel))
	}
	if c.longMode() && cs.L != 0 && cs.DB != 0 {
		panic(segFault(vecGP, csSel))
	}
	if c64 || rpl > cpl {
		newSP := popv()
		ssSel := uint16(popv())
		var ss hv.Segment
		if ssSel&^3 == 0 {
			if !(c.longMode() && cs.L != 0 && rpl != 3) {
				panic(gp(0))
			}
			ss = hv.Segment{Selector: ssSel, Unusable: 1, DPL: uint8(rpl), DB: 1}
		} else {
			sd, saddr, ok := c.descriptor(ssSel)
			if !ok {
				panic(segFault(vecGP, ssSel))
			}
			ss = segFromDesc(ssSel, sd)
			if int(ssSel&3) != rpl || int(ss.DPL) != rpl || ss.S == 0 || ss.Type&8 != 0 || ss.Type&2 == 0 {
				panic(segFault(vecGP, ssSel))
			}
			if ss.Present == 0 {
				panic(segFault(vecSS, ssSel))
			}
			c.setAccessed(sd, saddr)
			ss.Type |= 1
		}
		if cs.L != 0 && c.longMode() && !canonical(ip) {
			panic(gp(0))
		}
		c.writeFlagsPriv(fl, osz)
		c.setCS(cs, rpl, d, addr)
		c.seg[segSS] = ss
		if osz == 2 {
			newSP &= 0xffff
		} else if osz == 4 {
			newSP &= 0xffffffff
		}
		c.regs[rSP] = newSP
		c.rip = ip
		if rpl > cpl {
			c.nullDataSegs(rpl)
		}
		return
	}
	c.writeFlagsPriv(fl, osz)
	c.setCS(cs, rpl, d, addr)
	c.setSP(sp)
	c.rip = ip
	if osz == 2 {
		c.rip &= 0xffff
	}
}

// nullDataSegs clears data segment registers the new, less privileged
// code may not use.
func (c *CPU) nullDataSegs(cpl int) {
	for _, r := range []int{segES, segDS, segFS, segGS} {
		s := &c.seg[r]
		if s.Unusable != 0 {
			continue
		}
		if (s.Type&8 == 0 || s.Type&4 == 0) && int(s.DPL) < cpl {
			*s = hv.Segment{Selector: 0, Unusable: 1}
		}
	}
}

// writeFlagsPriv updates RFLAGS from a popf/iret value with the privilege
// rules: IOPL changes only at CPL 0, IF only when CPL <= IOPL.
func (c *CPU) writeFlagsPriv(v uint64, osz int) {
	old := c.getFlags()
	mask := uint64(flagsArith | flagTF | flagDF | flagOF | flagNT | flagAC | flagID | flagIF | flagIOPL)
	cpl := c.cpl()
	if cpl > 0 {
		mask &^= flagIOPL
		if cpl > int(old>>12&3) {
			mask &^= flagIF
		}
	}
	if osz == 2 {
		mask &= 0xffff
	}
	nv := old&^mask | v&mask
	c.setFlags(nv &^ flagRF)
	if nv&flagIF != 0 && old&flagIF == 0 {
		c.irqCheck = true
	}
}
