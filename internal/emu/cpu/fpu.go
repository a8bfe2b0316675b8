package cpu

import (
	"encoding/binary"
	"fmt"
)

// The x87, MMX and SSE register state, its save areas (FXSAVE, XSAVE) and
// the checks every x87, MMX and SSE instruction makes before it runs. The
// instructions themselves are in x87.go and sse.go.

// f80 is one x87 data register: the 64-bit significand with its explicit
// integer bit, and the sign (bit 15) above the 15-bit biased exponent.
// MMX register i is the significand of physical register i.
type f80 struct {
	mant uint64
	se   uint16
}

// fpuState is the x87, MMX and SSE state of a vCPU.
type fpuState struct {
	st  [8]f80 // physical registers R0-R7; ST(i) is st[(top+i)&7]
	fcw uint16
	fsw uint16 // TOP in bits 11-13
	ftw uint8  // abridged tag word: bit i set = R(i) is not empty
	fop uint16 // last non-control x87 opcode (11 bits)
	fip uint64 // its offset, and the offset of its memory operand
	fdp uint64
	fcs uint16
	fds uint16

	xmm   [16][2]uint64 // low quadword, high quadword
	mxcsr uint32
	xcr0  uint64
}

// Architectural constants of the state.
const (
	fcwInit   = 0x037f
	mxcsrInit = 0x1f80
	// mxcsrMask is the MXCSR bits a guest may set: every defined bit,
	// DAZ included (FXSAVE reports it at byte 28).
	mxcsrMask = 0xffff

	xfeatureX87 = 1 << 0
	xfeatureSSE = 1 << 1
	// xfeaturesSupported are the XCR0 bits the CPU implements.
	xfeaturesSupported = xfeatureX87 | xfeatureSSE

	xsaveHeader = 512 // XSTATE_BV, then XCOMP_BV
	// xsaveSize is the standard-format XSAVE area for x87 and SSE.
	xsaveSize = 576

	cr4OSFXSR     = 1 << 9
	cr4OSXMMEXCPT = 1 << 10
	cr4OSXSAVE    = 1 << 18

	vecXM = 19
)

// reset puts the state in its power-on configuration: FNINIT's x87 state,
// MXCSR 0x1f80, XCR0 = x87, every register zero.
func (f *fpuState) reset() {
	*f = fpuState{fcw: fcwInit, mxcsr: mxcsrInit, xcr0: xfeatureX87}
}

// top returns the x87 stack top (FSW bits 11-13).
func (f *fpuState) top() int { return int(f.fsw>>11) & 7 }

// x87Init reports whether the x87 state is in its initial configuration
// (what XINUSE[0] tracks): as FNINIT leaves it, all registers zero.
func (f *fpuState) x87Init() bool {
	if f.fcw != fcwInit || f.fsw != 0 || f.ftw != 0 || f.fop != 0 || f.fip != 0 || f.fdp != 0 || f.fcs != 0 || f.fds != 0 {
		return false
	}
	for _, r := range f.st {
		if r != (f80{}) {
			return false
		}
	}
	return true
}

// sseInit reports whether every XMM register is zero (XINUSE[1] clear).
func (f *fpuState) sseInit() bool {
	for _, x := range f.xmm {
		if x != [2]uint64{} {
			return false
		}
	}
	return true
}

// fxImage writes the FXSAVE image of the state into b (512 bytes): the
// 64-bit layout (FIP and FDP as 64-bit offsets) if wide, else the 32-bit
// one with FCS and FDS; nxmm XMM registers. Bytes 416-511 are untouched.
func (f *fpuState) fxImage(b []byte, wide bool, nxmm int) {
	le := binary.LittleEndian
	le.PutUint16(b[0:], f.fcw)
	le.PutUint16(b[2:], f.fsw)
	b[4], b[5] = f.ftw, 0
	le.PutUint16(b[6:], f.fop)
	if wide {
		le.PutUint64(b[8:], f.fip)
		le.PutUint64(b[16:], f.fdp)
	} else {
		le.PutUint32(b[8:], uint32(f.fip))
		le.PutUint32(b[12:], uint32(f.fcs))
		le.PutUint32(b[16:], uint32(f.fdp))
		le.PutUint32(b[20:], uint32(f.fds))
	}
	le.PutUint32(b[24:], f.mxcsr)
	le.PutUint32(b[28:], mxcsrMask)
	for i := range 8 {
		r := f.st[(f.top()+i)&7]
		o := 32 + 16*i
		le.PutUint64(b[o:], r.mant)
		le.PutUint16(b[o+8:], r.se)
		clear(b[o+10 : o+16])
	}
	for i := range nxmm {
		le.PutUint64(b[160+16*i:], f.xmm[i][0])
		le.PutUint64(b[168+16*i:], f.xmm[i][1])
	}
}

// loadX87 loads the x87 part of an FXSAVE image.
func (f *fpuState) loadX87(b []byte, wide bool) {
	le := binary.LittleEndian
	f.fsw = le.Uint16(b[2:])
	// FCW's reserved bits read as the hardware has them, and ES and B
	// follow the flags and masks loaded (setFCW, x87.go).
	f.setFCW(le.Uint16(b[0:]))
	f.ftw = b[4]
	f.fop = le.Uint16(b[6:]) & 0x7ff
	if wide {
		f.fip, f.fdp, f.fcs, f.fds = le.Uint64(b[8:]), le.Uint64(b[16:]), 0, 0
	} else {
		f.fip, f.fcs = uint64(le.Uint32(b[8:])), le.Uint16(b[12:])
		f.fdp, f.fds = uint64(le.Uint32(b[16:])), le.Uint16(b[20:])
	}
	for i := range 8 {
		o := 32 + 16*i
		f.st[(f.top()+i)&7] = f80{mant: le.Uint64(b[o:]), se: le.Uint16(b[o+8:])}
	}
}

// loadXMM loads nxmm XMM registers of an FXSAVE image.
func (f *fpuState) loadXMM(b []byte, nxmm int) {
	le := binary.LittleEndian
	for i := range nxmm {
		f.xmm[i] = [2]uint64{le.Uint64(b[160+16*i:]), le.Uint64(b[168+16*i:])}
	}
}

// initX87 is what XRSTOR loads for an x87 component in its init state.
func (f *fpuState) initX87() {
	f.fcw, f.fsw, f.ftw, f.fop, f.fip, f.fdp, f.fcs, f.fds = fcwInit, 0, 0, 0, 0, 0, 0, 0
	f.st = [8]f80{}
}

// Availability checks, in the order the architecture makes them.

// x87Avail raises #NM for an x87 instruction while CR0.EM or CR0.TS is set.
func (c *CPU) x87Avail() {
	if c.cr0&(cr0EM|cr0TS) != 0 {
		panic(fault{vec: vecNM})
	}
}

// sseAvail raises #UD for an SSE instruction while CR0.EM is set or
// CR4.OSFXSR is clear, then #NM while CR0.TS is set.
func (c *CPU) sseAvail() {
	if c.cr0&cr0EM != 0 || c.cr4&cr4OSFXSR == 0 {
		panic(ud())
	}
	if c.cr0&cr0TS != 0 {
		panic(fault{vec: vecNM})
	}
}

// mmxAvail raises #UD for an MMX instruction while CR0.EM is set, #NM
// while CR0.TS is set, and #MF while an unmasked x87 exception is pending.
func (c *CPU) mmxAvail() {
	if c.cr0&cr0EM != 0 {
		panic(ud())
	}
	if c.cr0&cr0TS != 0 {
		panic(fault{vec: vecNM})
	}
	c.x87Pending()
}

// x87Pending raises #MF if an unmasked x87 exception is pending (FSW.ES).
func (c *CPU) x87Pending() {
	if c.fpu.fsw&0x80 != 0 {
		panic(fault{vec: vecMF})
	}
}

// simdFault raises the exception for an unmasked SSE floating-point
// exception: #XM if CR4.OSXMMEXCPT is set, else #UD.
func (c *CPU) simdFault() {
	if c.cr4&cr4OSXMMEXCPT != 0 {
		panic(fault{vec: vecXM})
	}
	panic(ud())
}

// Memory operands wider than 8 bytes.

// blockLin checks an n-byte access at seg:off: segment limits, alignment
// (#GP(0) unless the linear address is a multiple of align, if align > 1)
// and the paging of every page it touches, before any byte moves. It
// returns the linear address.
func (c *CPU) blockLin(seg int, off uint64, n int, align uint64, write bool) uint64 {
	lin := c.linear(seg, off, n, write)
	if align > 1 && lin&(align-1) != 0 {
		panic(gp(0))
	}
	acc := accRead
	if write {
		acc = accWrite
	}
	user := c.user()
	last := lin + uint64(n) - 1
	for p := lin; ; p = (p | 0xfff) + 1 {
		c.translate(p, acc, user)
		if p>>12 == last>>12 {
			break
		}
	}
	return lin
}

// readBlock reads len(b) bytes (a multiple of 8) at linear address lin,
// which blockLin checked.
func (c *CPU) readBlock(lin uint64, b []byte) {
	user := c.user()
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], c.readLin(lin+uint64(i), 8, user))
	}
}

// writeBlock writes b (a multiple of 8 bytes) at linear address lin, which
// blockLin checked for writing.
func (c *CPU) writeBlock(lin uint64, b []byte) {
	user := c.user()
	for i := 0; i < len(b); i += 8 {
		c.writeLin(lin+uint64(i), 8, binary.LittleEndian.Uint64(b[i:]), user)
	}
}

// readM128 reads the 16-byte memory operand of the current instruction;
// if aligned, a linear address that is not 16-byte aligned raises #GP(0).
func (c *CPU) readM128(aligned bool) [2]uint64 {
	seg, off := int(c.cur.seg), c.ea()
	if p := c.fastHost(seg, off, 16, tlbValid); p != nil && (!aligned || off&15 == 0) {
		return [2]uint64{load(p, 8), load(at(p, 8), 8)}
	}
	lin := c.blockLin(seg, off, 16, alignIf(aligned), false)
	user := c.user()
	return [2]uint64{c.readLin(lin, 8, user), c.readLin(lin+8, 8, user)}
}

// writeM128 writes v to the 16-byte memory operand of the current
// instruction (see readM128 for aligned).
func (c *CPU) writeM128(v [2]uint64, aligned bool) {
	seg, off := int(c.cur.seg), c.ea()
	if p := c.fastHost(seg, off, 16, tlbValid|tlbWrite|tlbDirty|tlbFast); p != nil && (!aligned || off&15 == 0) {
		store(p, 8, v[0])
		store(at(p, 8), 8, v[1])
		return
	}
	lin := c.blockLin(seg, off, 16, alignIf(aligned), true)
	user := c.user()
	c.writeLin(lin, 8, v[0], user)
	c.writeLin(lin+8, 8, v[1], user)
}

func alignIf(aligned bool) uint64 {
	if aligned {
		return 16
	}
	return 1
}

// nXMM is the number of XMM registers the current mode can name.
func (c *CPU) nXMM() int {
	if c.code64() {
		return 16
	}
	return 8
}

// fxsave executes fxsave (wide: fxsave64, REX.W) to the memory operand.
func (c *CPU) fxsave(wide bool) {
	c.x87Avail()
	lin := c.blockLin(int(c.cur.seg), c.ea(), 512, 16, true)
	var b [512]byte
	c.readBlock(lin+416, b[416:])
	c.fpu.fxImage(b[:], wide, c.nXMM())
	c.writeBlock(lin, b[:416])
}

// fxrstor executes fxrstor (wide: fxrstor64).
func (c *CPU) fxrstor(wide bool) {
	c.x87Avail()
	lin := c.blockLin(int(c.cur.seg), c.ea(), 512, 16, false)
	var b [512]byte
	c.readBlock(lin, b[:416])
	mx := binary.LittleEndian.Uint32(b[24:])
	if mx&^mxcsrMask != 0 {
		panic(gp(0))
	}
	c.fpu.loadX87(b[:], wide)
	c.fpu.mxcsr = mx
	c.fpu.loadXMM(b[:], c.nXMM())
}

// ldmxcsr and stmxcsr (0F AE /2 and /3).
func (c *CPU) ldmxcsr() {
	c.sseAvail()
	v := uint32(c.readMem(int(c.cur.seg), c.ea(), 4))
	if v&^mxcsrMask != 0 {
		panic(gp(0))
	}
	c.fpu.mxcsr = v
}

func (c *CPU) stmxcsr() {
	c.sseAvail()
	c.writeMem(int(c.cur.seg), c.ea(), 4, uint64(c.fpu.mxcsr))
}

// xsaveAvail makes the checks of xsave and xrstor: #UD without
// CR4.OSXSAVE, #NM with CR0.TS.
func (c *CPU) xsaveAvail() {
	if c.cr4&cr4OSXSAVE == 0 {
		panic(ud())
	}
	if c.cr0&cr0TS != 0 {
		panic(fault{vec: vecNM})
	}
}

// xsave executes xsave (standard format) of the components in EDX:EAX
// and XCR0. XSTATE_BV gets, for each saved component, whether it is in
// use; nothing else of the header is written.
func (c *CPU) xsave(wide bool) {
	c.xsaveAvail()
	rfbm := (c.regs[rDX]<<32 | c.regs[rAX]&0xffffffff) & c.fpu.xcr0
	lin := c.blockLin(int(c.cur.seg), c.ea(), xsaveSize, 64, true)
	var b [xsaveSize]byte
	c.readBlock(lin, b[:])
	var img [512]byte
	c.fpu.fxImage(img[:], wide, c.nXMM())
	if rfbm&xfeatureX87 != 0 {
		copy(b[0:24], img[0:24])
		copy(b[32:160], img[32:160])
	}
	if rfbm&xfeatureSSE != 0 {
		copy(b[24:32], img[24:32])
		copy(b[160:416], img[160:416])
	}
	bv := binary.LittleEndian.Uint64(b[xsaveHeader:])
	bv &^= rfbm
	if !c.fpu.x87Init() {
		bv |= rfbm & xfeatureX87
	}
	if !c.fpu.sseInit() {
		bv |= rfbm & xfeatureSSE
	}
	binary.LittleEndian.PutUint64(b[xsaveHeader:], bv)
	c.writeBlock(lin, b[:])
}

// xrstor executes xrstor (standard format): each component in EDX:EAX and
// XCR0 is loaded if its XSTATE_BV bit is set, else put in its init state.
func (c *CPU) xrstor(wide bool) {
	c.xsaveAvail()
	rfbm := (c.regs[rDX]<<32 | c.regs[rAX]&0xffffffff) & c.fpu.xcr0
	lin := c.blockLin(int(c.cur.seg), c.ea(), xsaveSize, 64, false)
	var b [xsaveSize]byte
	c.readBlock(lin, b[:])
	if err := checkXSAVEHeader(b[:], c.fpu.xcr0); err != nil {
		panic(gp(0))
	}
	bv := binary.LittleEndian.Uint64(b[xsaveHeader:])
	mx := binary.LittleEndian.Uint32(b[24:])
	if rfbm&xfeatureSSE != 0 && mx&^mxcsrMask != 0 {
		panic(gp(0))
	}
	c.fpu.restore(b[:], rfbm, bv, wide, c.nXMM())
}

// checkXSAVEHeader checks the header of a standard-format XSAVE area
// against XCR0: XSTATE_BV within XCR0, XCOMP_BV zero (no compaction) and
// the reserved bytes zero.
func checkXSAVEHeader(b []byte, xcr0 uint64) error {
	bv := binary.LittleEndian.Uint64(b[xsaveHeader:])
	if bv&^xcr0 != 0 {
		return fmt.Errorf("XSTATE_BV %#x has state outside XCR0 %#x", bv, xcr0)
	}
	for i := xsaveHeader + 8; i < xsaveHeader+24; i++ {
		if b[i] != 0 {
			return fmt.Errorf("XSAVE header byte %d is not zero (compacted or reserved)", i-xsaveHeader)
		}
	}
	return nil
}

// restore loads the components in rfbm from an XSAVE area: from the area
// where bv says so, else their init state. MXCSR comes from the area
// whenever SSE is in rfbm.
func (f *fpuState) restore(b []byte, rfbm, bv uint64, wide bool, nxmm int) {
	if rfbm&xfeatureX87 != 0 {
		if bv&xfeatureX87 != 0 {
			f.loadX87(b, wide)
		} else {
			f.initX87()
		}
	}
	if rfbm&xfeatureSSE != 0 {
		f.mxcsr = binary.LittleEndian.Uint32(b[24:])
		if bv&xfeatureSSE != 0 {
			f.loadXMM(b, nxmm)
		} else {
			f.xmm = [16][2]uint64{}
		}
	}
}

// xgetbv and xsetbv (0F 01 D0 and D1) read and write XCR0.
func (c *CPU) xgetbv() {
	if c.cr4&cr4OSXSAVE == 0 {
		panic(ud())
	}
	if uint32(c.regs[rCX]) != 0 {
		panic(gp(0))
	}
	c.regs[rAX], c.regs[rDX] = c.fpu.xcr0&0xffffffff, c.fpu.xcr0>>32
}

func (c *CPU) xsetbv() {
	if c.cr4&cr4OSXSAVE == 0 {
		panic(ud())
	}
	c.requireCPL0()
	v := c.regs[rDX]<<32 | c.regs[rAX]&0xffffffff
	if uint32(c.regs[rCX]) != 0 || v&xfeatureX87 == 0 || v&^xfeaturesSupported != 0 {
		panic(gp(0))
	}
	c.fpu.xcr0 = v
}

// XSAVESize is the size of the XSAVE area XSAVE and SetXSAVE use: the
// legacy region, the header, and no extended component.
const XSAVESize = xsaveSize

// XSAVE returns the x87, MMX and SSE state as a standard-format XSAVE area
// (KVM_GET_XSAVE's layout) of XSAVESize bytes, with XSTATE_BV = XCR0
// components in use and 64-bit FIP/FDP.
func (c *CPU) XSAVE() []byte {
	b := make([]byte, xsaveSize)
	c.fpu.fxImage(b, true, 16)
	var bv uint64 = xfeaturesSupported
	if c.fpu.x87Init() {
		bv &^= xfeatureX87
	}
	if c.fpu.sseInit() {
		bv &^= xfeatureSSE
	}
	binary.LittleEndian.PutUint64(b[xsaveHeader:], bv)
	return b
}

// SetXSAVE loads the state from a standard-format XSAVE area (at least
// XSAVESize bytes, KVM_SET_XSAVE's layout); it refuses an area with state
// the CPU lacks, a compacted one, or an MXCSR with reserved bits.
func (c *CPU) SetXSAVE(b []byte) error {
	if len(b) < xsaveSize {
		return fmt.Errorf("XSAVE area of %d bytes, want at least %d", len(b), xsaveSize)
	}
	if err := checkXSAVEHeader(b, xfeaturesSupported); err != nil {
		return err
	}
	if mx := binary.LittleEndian.Uint32(b[24:]); mx&^mxcsrMask != 0 {
		return fmt.Errorf("MXCSR %#x has reserved bits set", mx)
	}
	c.fpu.restore(b, xfeaturesSupported, binary.LittleEndian.Uint64(b[xsaveHeader:]), true, 16)
	return nil
}

// XCR0 returns the extended control register 0.
func (c *CPU) XCR0() uint64 { return c.fpu.xcr0 }

// SetXCR0 sets XCR0, which must enable x87 and nothing the CPU lacks.
func (c *CPU) SetXCR0(v uint64) error {
	if v&xfeatureX87 == 0 || v&^xfeaturesSupported != 0 {
		return fmt.Errorf("XCR0 %#x: must hold x87 and only x87|SSE (%#x)", v, xfeaturesSupported)
	}
	c.fpu.xcr0 = v
	return nil
}
