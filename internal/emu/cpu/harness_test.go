package cpu

import (
	"encoding/binary"
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// Test machine layout (guest-physical):
//
//	0x0800 GDT (see the selectors below)    0x2000 IDT
//	0x3000 TSS: RSP0/ESP0 = 0x7000, IST1 = 0x6000
//	0x1000 test code (entry)                0x8000 initial stack top
//	0x10000 PML4, 0x11000 PDPT, 0x12000 PD (2 MiB identity pages, user)
//	0x20000 data scratch area
const (
	tGDT     = 0x800
	tIDT     = 0x2000
	tTSS     = 0x3000
	tCode    = 0x1000
	tStack   = 0x8000
	tPML4    = 0x10000
	tPDPT    = 0x11000
	tPD      = 0x12000
	tScratch = 0x20000

	selCode32  = 0x08
	selData    = 0x10
	selCode64  = 0x18
	selCode32U = 0x23
	selDataU   = 0x2b
	selCode64U = 0x33
	selTSS     = 0x38
)

func desc(base, limit uint32, access uint8, flags uint8) uint64 {
	return uint64(limit&0xffff) | uint64(base&0xffffff)<<16 | uint64(access)<<40 |
		uint64(limit>>16&0xf)<<48 | uint64(flags&0xf)<<52 | uint64(base>>24)<<56
}

type testVM struct {
	t   testing.TB
	mem *Memory
	c   *CPU
	p   *testPlatform
}

func (v *testVM) w32(a uint64, x uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], x)
	v.mem.WritePhys(a, b[:])
}
func (v *testVM) w64(a uint64, x uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], x)
	v.mem.WritePhys(a, b[:])
}
func (v *testVM) r64(a uint64) uint64 {
	var b [8]byte
	v.mem.ReadPhys(a, b[:])
	return binary.LittleEndian.Uint64(b[:])
}
func (v *testVM) r32(a uint64) uint32 { return uint32(v.r64(a)) }

// newVM builds a machine with 16 MiB of RAM and code at tCode, in mode 16
// (real), 32 (flat protected, paging off) or 64 (long mode, identity-mapped
// first GiB with 2 MiB user-accessible pages).
func newVM(t testing.TB, mode int, code []byte) *testVM {
	mem := NewMemory()
	mem.AddRAM(0, newRAM(t, 16<<20))
	p := newTestPlatform()
	v := &testVM{t: t, mem: mem, c: New(0, mem, p), p: p}
	v.w64(tGDT+0x08, desc(0, 0xfffff, 0x9b, 0xc))
	v.w64(tGDT+0x10, desc(0, 0xfffff, 0x93, 0xc))
	v.w64(tGDT+0x18, desc(0, 0xfffff, 0x9b, 0xa))
	v.w64(tGDT+0x20, desc(0, 0xfffff, 0xfb, 0xc))
	v.w64(tGDT+0x28, desc(0, 0xfffff, 0xf3, 0xc))
	v.w64(tGDT+0x30, desc(0, 0xfffff, 0xfb, 0xa))
	v.w64(tGDT+0x38, desc(tTSS, 0x67, 0x89, 0))
	v.w64(tTSS+4, 0x7000)    // RSP0 (64-bit TSS)
	v.w64(tTSS+0x24, 0x6000) // IST1
	v.w32(tTSS+0x66, 0x68)   // I/O bitmap base: beyond the limit
	v.mem.WritePhys(tCode, code)
	v.w64(tPML4, tPDPT|7)
	v.w64(tPDPT, tPD|7)
	for i := uint64(0); i < 512; i++ {
		v.w64(tPD+i*8, i<<21|0x87)
	}
	c := v.c
	switch mode {
	case 16:
		s := c.GetSregs2()
		s.CS = hv.Segment{Limit: 0xffff, Type: 0xb, Present: 1, S: 1}
		c.SetSregs2(s)
		c.SetRegs(hv.Regs{RIP: tCode, RSP: tStack, RFLAGS: 2})
	case 32, 64:
		s := c.GetSregs2()
		data := flatData32()
		s.CS = flatCode32()
		s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
		s.GDT = hv.DTable{Base: tGDT, Limit: 0x47}
		s.IDT = hv.DTable{Base: tIDT, Limit: 0xfff}
		s.TR = hv.Segment{Base: tTSS, Limit: 0x67, Selector: selTSS, Type: 0xb, Present: 1}
		s.LDT = hv.Segment{Unusable: 1}
		s.CR0 = cr0PE | cr0ET
		if mode == 64 {
			s.CS = hv.Segment{Limit: 0xffffffff, Selector: selCode64, Type: 0xb, Present: 1, L: 1, S: 1, G: 1}
			s.CR0 |= cr0PG
			s.CR3 = tPML4
			s.CR4 = cr4PAE
			s.EFER = eferLME | eferLMA | eferNXE | eferSCE
			s.TR.Base = tTSS
		}
		if err := c.SetSregs2(s); err != nil {
			t.Fatal(err)
		}
		c.SetRegs(hv.Regs{RIP: tCode, RSP: tStack, RFLAGS: 2})
	}
	return v
}

// run runs until hlt (or another exit) and fails on anything but hlt.
func (v *testVM) run() hv.Regs {
	v.t.Helper()
	ex := v.c.Run(1_000_000)
	if ex.Kind != ExitHLT {
		v.t.Fatalf("exit %v (%+v), want hlt; regs %+v", ex.Kind, ex, v.c.GetRegs())
	}
	return v.c.GetRegs()
}

// setGate64 installs a 64-bit interrupt (trap=false) or trap gate.
func (v *testVM) setGate64(vec int, target uint64, dpl uint8, ist uint8, trap bool) {
	typ := uint64(0xe)
	if trap {
		typ = 0xf
	}
	lo := target&0xffff | uint64(selCode64)<<16 | uint64(ist)<<32 | (typ|uint64(dpl)<<5|0x80)<<40 | (target>>16&0xffff)<<48
	v.w64(tIDT+uint64(vec)*16, lo)
	v.w64(tIDT+uint64(vec)*16+8, target>>32)
}

// setGate32 installs a 32-bit interrupt gate (IDT of 8-byte entries).
func (v *testVM) setGate32(vec int, target uint32, dpl uint8) {
	lo := uint64(target&0xffff) | uint64(selCode32)<<16 | uint64(0x8e|dpl<<5)<<40 | uint64(target>>16)<<48
	v.w64(tIDT+uint64(vec)*8, lo)
}

func hvRegs(rip, rsp uint64) hv.Regs { return hv.Regs{RIP: rip, RSP: rsp, RFLAGS: 2} }
