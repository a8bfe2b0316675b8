package native

import (
	"encoding/binary"
	"math/big"
	"math/rand"
)

// gen builds one Case of a Form.
type gen struct {
	t   *tmpl
	rng *rand.Rand
	c   Case

	limit int    // registers usable: 8 for forms that must not carry a REX prefix
	addr  uint16 // registers used for addressing Mem (not usable as data)

	regR  int // ModRM.reg register operand or +r register, -1 if none
	rmR   int // r/m register operand, -1 if memory or none
	base  int
	index int
	scale uint
	mod   int // ModRM.mod for the memory operand
	disp  int64
	off   int // Mem offset of the memory operand
	imm   uint64
}

type loc struct {
	mem bool
	off int
	reg int
	hi  bool // AH..BH
}

func mask(w int) uint64 {
	if w >= 64 {
		return ^uint64(0)
	}
	return 1<<w - 1
}

// under maps register operand number r of width w to the 64-bit register it
// lives in (AH..BH live in RAX..RBX when the form has no REX prefix).
func (g *gen) under(r, w int) int {
	if w == 8 && g.t.rex < 0 && r >= 4 {
		return r - 4
	}
	return r
}

func (g *gen) regLoc(r, w int) loc {
	u := g.under(r, w)
	return loc{reg: u, hi: u != r}
}

func (g *gen) rmLoc() loc {
	if g.t.mode == mReg {
		return g.regLoc(g.rmR, g.t.wRM)
	}
	return loc{mem: true, off: g.off}
}

func (g *gen) get(l loc, w int) uint64 {
	switch {
	case l.mem:
		var b [8]byte
		copy(b[:], g.c.Mem[l.off:l.off+w/8])
		return binary.LittleEndian.Uint64(b[:]) & mask(w)
	case l.hi:
		return g.c.Regs[l.reg] >> 8 & 0xff
	}
	return g.c.Regs[l.reg] & mask(w)
}

func (g *gen) set(l loc, w int, v uint64) {
	v &= mask(w)
	switch {
	case l.mem:
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], v)
		copy(g.c.Mem[l.off:l.off+w/8], b[:w/8])
	case l.hi:
		g.c.Regs[l.reg] = g.c.Regs[l.reg]&^0xff00 | v<<8
	default:
		g.c.Regs[l.reg] = g.c.Regs[l.reg]&^mask(w) | v
	}
}

// val returns a random 64-bit value whose low w bits are often an edge
// value (0, 1, -1, sign bit, 0x7f..ff boundaries) and upper bits random,
// zero or all ones.
func (g *gen) val(w int) uint64 {
	r := g.rng
	v := r.Uint64()
	if r.Intn(4) == 0 {
		return v
	}
	m := mask(w)
	sb := uint64(1) << (w - 1)
	edges := [...]uint64{0, 1, 2, m, m - 1, sb, sb - 1, sb + 1, 0x7f, 0x80, 0xff, 0x100,
		0x7fff, 0x8000, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff, 0x8000000000000000, 0x7fffffffffffffff}
	e := edges[r.Intn(len(edges))]
	switch r.Intn(3) {
	case 0:
		v = 0
	case 1:
		v = ^uint64(0)
	}
	return v&^m | e&m
}

func (g *gen) anyWidth() int { return [...]int{8, 16, 32, 64}[g.rng.Intn(4)] }

// pickReg picks a register operand of width w whose containing register is
// not RSP, not used for addressing and not in avoid.
func (g *gen) pickReg(w int, avoid uint16) int {
	var cand [16]int
	n := 0
	for r := 0; r < g.limit; r++ {
		u := g.under(r, w)
		if u == RSP || (g.addr|avoid)&(1<<u) != 0 {
			continue
		}
		cand[n] = r
		n++
	}
	return cand[g.rng.Intn(n)]
}

// pickAddrReg picks a base or index register: low (RAX..RDI) or extended.
func (g *gen) pickAddrReg(ext bool, avoid uint16) int {
	var cand [16]int
	n := 0
	lo, hi := 0, 8
	if ext {
		lo, hi = 8, 16
	}
	for r := lo; r < hi; r++ {
		if r == RSP || avoid&(1<<r) != 0 {
			continue
		}
		cand[n] = r
		n++
	}
	return cand[g.rng.Intn(n)]
}

func (g *gen) count(w int) uint64 {
	cs := [...]uint64{0, 1, 1, 2, 3, uint64(w - 1), uint64(w), uint64(w + 1), 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 0xff}
	if g.rng.Intn(4) == 0 {
		return uint64(g.rng.Intn(256))
	}
	return cs[g.rng.Intn(len(cs))]
}

// Case returns a random test of the form.
func (f Form) Case(rng *rand.Rand) Case {
	t := &f.t
	g := &gen{t: t, rng: rng, regR: -1, rmR: -1, base: -1, index: -1}
	c := &g.c
	c.Name = f.Name
	g.limit = 16
	if t.rex < 0 {
		g.limit = 8
	}
	for r := 0; r < 16; r++ {
		if r != RSP {
			c.Regs[r] = g.val(g.anyWidth())
		}
	}
	c.RFLAGS = rng.Uint64() & StateFlags
	switch rng.Intn(8) {
	case 0:
		c.RFLAGS = 0
	case 1:
		c.RFLAGS = StateFlags &^ FlagDF
	}
	rng.Read(c.Mem[:])

	switch t.sem {
	case sBranch:
		g.branch()
		c.BaseReg, c.IndexReg = -1, -1
		return g.c
	case sXlat:
		g.xlat()
		return g.c
	}
	if t.stack {
		// RSP points into Mem, usually 8-byte aligned, with room either side
		sp := uint64(96 + g.rng.Intn(65))
		if g.rng.Intn(4) != 0 {
			sp &^= 7
		}
		c.Regs[RSP] = sp
		c.AddrRegs |= 1 << RSP
	}
	mem := t.mode != mReg && (t.modrm || t.mode == mMoffs)
	if mem {
		g.pickMem()
	}
	if t.digit < 0 && t.modrm || t.plusR {
		g.regR = g.pickReg(t.wReg, 0)
	}
	if t.modrm && t.mode == mReg {
		var avoid uint16
		if t.sem == sDiv {
			avoid = bRAX | bRDX
		}
		g.rmR = g.pickReg(t.wRM, avoid)
	}
	if mem && (t.sem != sLea || absMode(t.mode)) {
		g.placeMem()
	}
	if t.imm > 0 {
		g.imm = g.val(8*t.imm) & mask(8*t.imm)
	}
	g.fix()
	if c.Code == nil {
		c.Code, c.Relocs = g.encode()
	}
	if t.sem == sLea && absMode(t.mode) {
		// the result is the address of a Mem byte, as on the other side
		c.OutAddrRegs = c.AddrRegs | 1<<g.regR
	}
	if t.sem == sIndirect {
		g.indirect()
	}
	c.BaseReg, c.IndexReg = -1, -1
	if mem && t.sem != sLea {
		c.BaseReg, c.IndexReg = g.base, g.index
	}
	if c.OutAddrRegs == 0 {
		c.OutAddrRegs = c.AddrRegs
	}
	if t.chain {
		g.chainUp()
	}
	return g.c
}

// pickMem chooses the base and index registers and the addressing details.
func (g *gen) pickMem() {
	t := g.t
	avoid := t.implicit
	if t.sem == sLea {
		avoid = 0
	}
	bExt, xExt := t.ext, false
	if t.mode == mSIB && t.ext {
		switch g.rng.Intn(3) {
		case 0:
			bExt, xExt = true, false
		case 1:
			bExt, xExt = false, true
		default:
			bExt, xExt = true, true
		}
	}
	if t.mode == mRSP {
		g.base, g.mod = RSP, 1
		g.addr = 1 << RSP
		return
	}
	if absMode(t.mode) {
		g.mod = 0
		if t.mode == mIdx {
			g.index = g.pickAddrReg(t.ext, avoid)
			g.scale = uint(g.rng.Intn(4))
			if t.sem != sLea {
				g.addr = 1 << g.index
			}
		}
		return
	}
	switch t.mode {
	case mBase:
		g.mod = 0
	case mDisp8:
		g.mod = 1
	case mDisp32:
		g.mod = 2
	case mSIB:
		g.mod = g.rng.Intn(3)
	}
	for {
		g.base = g.pickAddrReg(bExt, avoid)
		// mod 00 with base 101 means disp32 without base (or RIP-relative).
		if !(g.mod == 0 && g.base&7 == 5) {
			break
		}
	}
	if t.mode == mSIB {
		g.index = g.pickAddrReg(xExt, avoid|1<<g.base)
		g.scale = uint(g.rng.Intn(4))
	}
	switch g.mod {
	case 1:
		d := [...]int64{0, 1, -1, 127, -128, 8, -8}
		if g.rng.Intn(2) == 0 {
			g.disp = int64(int8(g.rng.Uint32()))
		} else {
			g.disp = d[g.rng.Intn(len(d))]
		}
	case 2:
		d := [...]int64{0, 1, -1, 0x7fffffff, -0x80000000, 0x1000, -0x1000}
		if g.rng.Intn(2) == 0 {
			g.disp = int64(int32(g.rng.Uint32()))
		} else {
			g.disp = d[g.rng.Intn(len(d))]
		}
	}
	if t.sem != sLea {
		g.addr = 1 << g.base
		if g.index >= 0 {
			g.addr |= 1 << g.index
		}
	}
}

func (g *gen) locked() bool {
	t := g.t
	return t.lock || len(t.op) == 1 && (t.op[0] == 0x86 || t.op[0] == 0x87)
}

// placeMem chooses where in Mem the operand lives and sets the base (and
// index) register so the effective address lands there.
func (g *gen) placeMem() {
	t := g.t
	size := t.wRM / 8
	lo, hi := 0, MemSize-size
	if t.sem == sBt && t.digit < 0 {
		// bit-string addressing reaches up to 32 bytes either side.
		lo, hi = 64, MemSize-64-size
	}
	off := lo + g.rng.Intn(hi-lo+1)
	if g.locked() || t.sem == sCmpxchg8b {
		// natural alignment: no split locks; cmpxchg16b requires it.
		off &^= size - 1
		if off < lo {
			off += size
		}
	}
	if t.mode == mRSP {
		// [rsp+disp8]; pop computes the address with the incremented RSP
		sp := int(g.c.Regs[RSP])
		if t.sem == sStack && t.sub == stPop {
			sp += t.wRM / 8
		}
		d := off - sp
		for d < -128 || d > 127 {
			off = sp - 64 + g.rng.Intn(128)
			d = off - sp
		}
		if off < 0 || off > MemSize-size {
			off, d = sp, 0
		}
		g.off, g.disp = off, int64(d)
		g.set(loc{mem: true, off: off}, t.wRM, g.val(t.wRM))
		return
	}
	g.off = off
	if absMode(t.mode) {
		// the displacement (Link makes it an address) reaches Mem[off];
		// an index register holds a small value, any upper half with 67
		var idx uint64
		if g.index >= 0 {
			idx = uint64(g.rng.Intn(33) - 16)
			g.c.Regs[g.index] = idx
			if t.a32 {
				g.c.Regs[g.index] += uint64(g.rng.Uint32()) << 32
			}
		}
		g.disp = int64(off) - int64(idx<<g.scale)
		if t.sem != sLea && size > 0 && size <= 8 {
			g.set(loc{mem: true, off: off}, t.wRM, g.val(t.wRM))
		}
		return
	}
	var idx uint64
	if g.index >= 0 {
		if g.rng.Intn(2) == 0 {
			idx = uint64(g.rng.Intn(33) - 16)
		} else {
			idx = g.val(64)
		}
		g.c.Regs[g.index] = idx
	}
	g.c.Regs[g.base] = uint64(off) - idx<<g.scale - uint64(g.disp)
	if t.a32 {
		// 32-bit addressing ignores the upper halves
		g.c.Regs[g.base] += uint64(g.rng.Uint32()) << 32
	}
	g.c.AddrRegs |= 1 << g.base
	if size > 0 && size <= 8 {
		w := t.wRM
		g.set(loc{mem: true, off: off}, w, g.val(w))
	}
}

// fix applies the per-instruction input constraints and computes the
// undefined flags and registers.
func (g *gen) fix() {
	t := g.t
	c := &g.c
	const allArith = ArithFlags
	switch t.sem {
	case sALU:
		if t.sub == 1 || t.sub == 4 || t.sub == 6 {
			c.UndefFlags = FlagAF
		}
	case sLogic:
		c.UndefFlags = FlagAF
	case sMul:
		c.UndefFlags = FlagSF | FlagZF | FlagAF | FlagPF
	case sDiv:
		c.UndefFlags = allArith
		g.fixDiv()
	case sShift:
		g.fixShift()
	case sShd:
		g.fixShd()
	case sBt:
		c.UndefFlags = FlagOF | FlagSF | FlagAF | FlagPF
		if t.digit < 0 && t.mode != mReg {
			w := t.wRM
			n := w / 8
			kmin := -(g.off / n)
			kmax := (MemSize - n - g.off) / n
			if kmin < -32/n {
				kmin = -32 / n
			}
			if kmax > 32/n {
				kmax = 32 / n
			}
			k := kmin + g.rng.Intn(kmax-kmin+1)
			bit := int64(k)*int64(w) + int64(g.rng.Intn(w))
			g.set(g.regLoc(g.regR, w), w, uint64(bit))
		}
		if t.imm > 0 {
			if g.rng.Intn(2) == 0 {
				g.imm = uint64(g.rng.Intn(t.wRM))
			}
		}
	case sLzcnt:
		c.UndefFlags = FlagOF | FlagSF | FlagAF | FlagPF
	case sBsf:
		c.UndefFlags = FlagCF | FlagOF | FlagSF | FlagAF | FlagPF
		l := g.rmLoc()
		if g.rng.Intn(4) == 0 {
			g.set(l, t.wRM, 0)
		}
		if g.get(l, t.wRM) == 0 {
			// AMD leaves the destination unchanged; Intel: undefined.
			c.Exempt |= 1 << g.regR
		}
	case sCmpxchg:
		if g.rng.Intn(2) == 0 {
			g.set(loc{reg: RAX}, t.wRM, g.get(g.rmLoc(), t.wRM))
		}
	case sCmpxchg8b:
		if g.rng.Intn(2) == 0 {
			h := t.wRM / 2
			g.set(loc{reg: RAX}, h, g.get(loc{mem: true, off: g.off}, h))
			g.set(loc{reg: RDX}, h, g.get(loc{mem: true, off: g.off + h/8}, h))
		}
	case sString:
		g.fixString()
	case sStack:
		g.fixStack()
	}
}

func (g *gen) fixDiv() {
	t := g.t
	w := t.wRM
	signed := t.sub == 7
	one := big.NewInt(1)
	lim := new(big.Int).Lsh(one, uint(w)) // 2^w
	half := new(big.Int).Lsh(one, uint(w-1))
	toSigned := func(v uint64) *big.Int {
		b := new(big.Int).SetUint64(v & mask(w))
		if signed && b.Cmp(half) >= 0 {
			b.Sub(b, lim)
		}
		return b
	}
	var d *big.Int
	for {
		d = toSigned(g.val(w))
		if d.Sign() != 0 {
			break
		}
	}
	q := toSigned(g.val(w))
	ad := new(big.Int).Abs(d)
	r := new(big.Int).Rand(g.rng, ad) // [0, |d|)
	switch g.rng.Intn(4) {
	case 0:
		r.SetInt64(0)
	case 1:
		r.Sub(ad, one)
	}
	if signed && new(big.Int).Mul(q, d).Sign() < 0 {
		r.Neg(r)
	} else if signed && q.Sign() == 0 && g.rng.Intn(2) == 0 {
		r.Neg(r)
	}
	n := new(big.Int).Mul(q, d)
	n.Add(n, r)
	// two's complement in 2w bits
	full := new(big.Int).Lsh(one, uint(2*w))
	if n.Sign() < 0 {
		n.Add(n, full)
	}
	lo := new(big.Int).And(n, new(big.Int).Sub(lim, one))
	hi := new(big.Int).Rsh(n, uint(w))
	dv := new(big.Int).Set(d)
	if dv.Sign() < 0 {
		dv.Add(dv, lim)
	}
	g.set(g.rmLoc(), w, dv.Uint64())
	if w == 8 {
		g.set(loc{reg: RAX}, 16, hi.Uint64()<<8|lo.Uint64())
		return
	}
	g.set(loc{reg: RAX}, w, lo.Uint64())
	g.set(loc{reg: RDX}, w, hi.Uint64())
}

// setCount stores the shift count where the form reads it and returns it.
func (g *gen) setCount(cnt uint64) uint64 {
	switch g.t.cnt {
	case cnt1:
		return 1
	case cntCL:
		g.set(loc{reg: RCX}, 8, cnt)
		// the count register may also be the shifted operand
		return g.c.Regs[RCX] & 0xff
	}
	g.imm = cnt & 0xff
	return g.imm
}

func (g *gen) fixShift() {
	t := g.t
	w := t.wRM
	cm := uint64(31)
	if w == 64 {
		cm = 63
	}
	m := g.setCount(g.count(w)) & cm
	if m == 0 {
		return // flags unaffected
	}
	var u uint64
	if m != 1 {
		u |= FlagOF
	}
	switch t.sub {
	case 4, 5, 6, 7: // shl shr sal sar
		u |= FlagAF
		if m >= uint64(w) {
			u |= FlagCF
		}
	}
	g.c.UndefFlags = u
}

func (g *gen) fixShd() {
	t := g.t
	w := t.wRM
	cm := uint64(31)
	if w == 64 {
		cm = 63
	}
	cnt := g.count(w)
	if w == 16 && cnt&cm > 16 {
		// count > operand size: result and flags undefined; keep it legal
		cnt = cnt&^cm | (cnt&cm)%17
	}
	m := g.setCount(cnt) & cm
	if m == 0 {
		return
	}
	u := uint64(FlagAF)
	if m != 1 {
		u |= FlagOF
	}
	g.c.UndefFlags = u
}

func (g *gen) fixString() {
	t := g.t
	c := &g.c
	w := t.strW
	span := 8 * w
	pos := func() uint64 { return uint64(span + g.rng.Intn(MemSize-2*span-w+1)) }
	c.Regs[RSI], c.Regs[RDI] = pos(), pos()
	c.AddrRegs = bRSI | bRDI
	if t.pfx != 0 {
		c.Rep = true
		c.Regs[RCX] = uint64(g.rng.Intn(9))
	}
	if t.a32 {
		// ECX, ESI, EDI only: garbage in the upper halves
		for _, r := range []int{RCX, RSI, RDI} {
			if g.rng.Intn(2) == 0 {
				c.Regs[r] += uint64(g.rng.Uint32()) << 32
			}
		}
	}
	if g.rng.Intn(2) == 0 {
		si, di := int(c.Regs[RSI]), int(c.Regs[RDI])
		switch t.sub {
		case 0xa6: // cmps: make the destination mostly equal to the source
			for i := -span; i < span+w; i++ {
				if si+i >= 0 && si+i < MemSize && di+i >= 0 && di+i < MemSize {
					c.Mem[di+i] = c.Mem[si+i]
				}
			}
		case 0xae: // scas: fill around RDI with the accumulator
			a := c.Regs[RAX]
			for i := -span; i < span+w; i += w {
				for j := 0; j < w; j++ {
					if p := di + i + j; p >= 0 && p < MemSize {
						c.Mem[p] = byte(a >> (8 * j))
					}
				}
			}
		}
		if g.rng.Intn(2) == 0 {
			c.Mem[g.rng.Intn(MemSize)] ^= byte(1 + g.rng.Intn(255))
		}
	}
}

// encode assembles the instruction bytes of the form, with the relocations
// of its Mem address fields.
func (g *gen) encode() ([]byte, []Reloc) { return g.encodeT(g.t, g.regR, g.imm) }

// encodeT assembles instruction t with the case's operands: ModRM.reg (or
// +r) register regR, the case's r/m register or memory operand, and
// immediate imm.
func (g *gen) encodeT(t *tmpl, regR int, imm uint64) ([]byte, []Reloc) {
	var b []byte
	switch t.junk {
	case jSeg:
		segs := [...]byte{0x2e, 0x3e, 0x26, 0x36}
		for i := 0; i <= g.rng.Intn(2); i++ {
			b = append(b, segs[g.rng.Intn(4)])
		}
	case jStaleREX:
		b = append(b, 0x40|byte(g.rng.Intn(16)), [...]byte{0x2e, 0x3e, 0x26, 0x36}[g.rng.Intn(4)])
	case jRep:
		b = append(b, [...]byte{0xf2, 0xf3}[g.rng.Intn(2)])
	case j66Dup, j66W:
		b = append(b, 0x66)
	}
	if t.lock {
		b = append(b, 0xf0)
	}
	if t.pfx != 0 {
		b = append(b, t.pfx)
	}
	if t.osize == 16 {
		b = append(b, 0x66)
	}
	if t.a32 {
		b = append(b, 0x67)
	}
	rex := byte(0x40)
	if t.osize == 64 {
		rex |= 8
	}
	if t.plusR && regR >= 8 {
		rex |= 1
	}
	var modrm byte
	var sib []byte
	var disp []byte
	var rel *Reloc // the relocation of the displacement or moffs
	if t.modrm {
		reg := t.digit
		if reg < 0 {
			reg = regR
		}
		if reg >= 8 {
			rex |= 4
		}
		modrm = byte(reg&7) << 3
		if t.mode == mReg {
			modrm |= 0xc0 | byte(g.rmR&7)
			if g.rmR >= 8 {
				rex |= 1
			}
		} else if absMode(t.mode) {
			// mod 00: rm 101 is RIP-relative; SIB base 101 is no base
			switch t.mode {
			case mRIP:
				modrm |= 5
			case mAbs:
				modrm |= 4
				sib = []byte{0x25}
			default:
				modrm |= 4
				sib = []byte{byte(g.scale)<<6 | byte(g.index&7)<<3 | 5}
				if g.index >= 8 {
					rex |= 2
				}
			}
			disp = binary.LittleEndian.AppendUint32(nil, uint32(g.disp))
			rel = &Reloc{Size: 4, RIP: t.mode == mRIP, Zext: t.a32}
		} else {
			modrm |= byte(g.mod) << 6
			if g.base >= 8 {
				rex |= 1
			}
			if g.index >= 8 {
				rex |= 2
			}
			switch {
			case g.index >= 0:
				modrm |= 4
				sib = []byte{byte(g.scale)<<6 | byte(g.index&7)<<3 | byte(g.base&7)}
			case g.base&7 == 4:
				modrm |= 4
				sib = []byte{0x24}
			default:
				modrm |= byte(g.base & 7)
			}
			switch g.mod {
			case 1:
				disp = []byte{byte(g.disp)}
			case 2:
				disp = binary.LittleEndian.AppendUint32(nil, uint32(g.disp))
			}
		}
	}
	if t.junk == jDoubleREX {
		b = append(b, 0x40|byte(g.rng.Intn(16)))
		rex |= 0x40
		b = append(b, rex)
	} else if rex != 0x40 || t.rex > 0 {
		if t.rex < 0 {
			panic("native: REX prefix in a form without REX")
		}
		b = append(b, rex)
	}
	op := append([]byte(nil), t.op...)
	if t.plusR {
		op[len(op)-1] += byte(regR & 7)
	}
	b = append(b, op...)
	if t.modrm {
		b = append(b, modrm)
		b = append(b, sib...)
		if rel != nil {
			rel.Off = len(b)
		}
		b = append(b, disp...)
	}
	if t.mode == mMoffs {
		n := 8
		if t.a32 {
			n = 4
		}
		rel = &Reloc{Off: len(b), Size: n, Zext: t.a32}
		for i := 0; i < n; i++ {
			b = append(b, byte(g.disp>>(8*i)))
		}
	}
	for i := 0; i < t.imm; i++ {
		b = append(b, byte(imm>>(8*i)))
	}
	var pad []byte
	if t.junk == jMaxLen {
		pad = make([]byte, 15-len(b))
		for i := range pad {
			pad[i] = 0x3e
		}
		b = append(pad, b...)
	}
	if rel == nil {
		return b, nil
	}
	rel.Off += len(pad)
	rel.End = len(b)
	return b, []Reloc{*rel}
}
