package cpu

import (
	"fmt"
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// Access programs (the same bytes in 32- and 64-bit mode).
var (
	progRead  = []byte{0x8b, 0x18, 0xf4} // mov (%eax/%rax),%ebx; hlt
	progWrite = []byte{0x89, 0x18, 0xf4} // mov %ebx,(%eax/%rax); hlt
	progExec  = []byte{0xff, 0xe0}       // jmp *%eax/%rax
)

// pagingVM builds page tables for one paging mode:
//
//	0x000000-: identity (4 KiB pages), user, writable
//	0x400000: rw user -> 0x30000   0x401000: read-only -> 0x31000
//	0x402000: not present          0x403000: supervisor -> 0x33000
//	0x404000: NX (PAE and 4-level) -> 0x34000
//	0x800000: large page (4 MiB PSE or 2 MiB) -> 0xc00000
//	0x40000000: 1 GiB page -> 0 (4-level)
func pagingVM(t *testing.T, mode string, code []byte, user bool) (*testVM, uint64) {
	bits := 32
	if mode == "4level" {
		bits = 64
	}
	v := newVM(t, bits, code)
	v.c.TrapExceptions = true
	s := v.c.GetSregs2()
	s.CR0 |= cr0PG
	v.mem.WritePhys(0x10000, make([]byte, 0x5000)) // drop newVM's tables
	v.w64(0x30000, 0x1111)
	v.w64(0x31000, 0x2222)
	v.w64(0x33000, 0x4444)
	v.w64(0xc00010, 0x5555)
	var pteAddr uint64 // address of the PTE for 0x400000
	switch mode {
	case "32bit":
		s.CR3, s.CR4 = 0x10000, cr4PSE
		v.w32(0x10000, 0x11000|7)
		for i := uint64(0); i < 1024; i++ {
			v.w32(0x11000+i*4, uint32(i<<12|7))
		}
		v.w32(0x10004, 0x12000|7)
		v.w32(0x12000, 0x30000|7)
		v.w32(0x12004, 0x31000|5)
		v.w32(0x1200c, 0x33000|3)
		v.w32(0x10008, 0xc00000|0x87)
		pteAddr = 0x12000
	case "pae", "4level":
		pd := uint64(0x11000)
		if mode == "4level" {
			pd = 0x14000
		}
		if mode == "pae" {
			s.CR3, s.CR4 = 0x10000, cr4PAE
			v.w64(0x10000, 0x11000|1)
			s.EFER = eferNXE
		} else {
			s.CR3 = tPML4
			v.w64(tPML4, tPDPT|7)
			v.w64(tPDPT, pd|7)
			v.w64(tPDPT+8, 0x83|4) // 1 GiB page at 1 GiB -> 0
		}
		v.w64(pd, 0x12000|7)
		for i := uint64(0); i < 512; i++ {
			v.w64(0x12000+i*8, i<<12|7)
		}
		v.w64(pd+16, 0x13000|7)
		v.w64(0x13000, 0x30000|7)
		v.w64(0x13008, 0x31000|5)
		v.w64(0x13018, 0x33000|3)
		v.w64(0x13020, 0x34000|7|1<<63)
		v.w64(pd+32, 0xc00000|0x87)
		pteAddr = 0x13000
	}
	if user {
		s.CS.Selector, s.CS.DPL = s.CS.Selector|3, 3
		s.SS = hv.Segment{Limit: 0xffffffff, Selector: selDataU, Type: 3, Present: 1, DB: 1, S: 1, G: 1, DPL: 3}
	}
	if err := v.c.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	return v, pteAddr
}

func TestPaging(t *testing.T) {
	type tc struct {
		mode    string
		prog    []byte
		addr    uint64
		user    bool
		wp      bool
		wantRBX uint64 // for successful reads
		vec     int    // -1: no fault
		errCode uint32
	}
	var cases []tc
	for _, m := range []string{"32bit", "pae", "4level"} {
		cases = append(cases,
			tc{m, progRead, 0x400000, false, false, 0x1111, -1, 0},
			tc{m, progRead, 0x400000, true, false, 0x1111, -1, 0},
			tc{m, progWrite, 0x401000, false, false, 0, -1, 0},
			tc{m, progWrite, 0x401000, false, true, 0, vecPF, pfP | pfW},
			tc{m, progWrite, 0x401000, true, false, 0, vecPF, pfP | pfW | pfU},
			tc{m, progRead, 0x402000, false, false, 0, vecPF, 0},
			tc{m, progWrite, 0x402000, true, false, 0, vecPF, pfW | pfU},
			tc{m, progRead, 0x403000, false, false, 0x4444, -1, 0},
			tc{m, progRead, 0x403000, true, false, 0, vecPF, pfP | pfU},
			tc{m, progRead, 0x800010, false, false, 0x5555, -1, 0},
		)
		if m != "32bit" {
			cases = append(cases, tc{m, progExec, 0x404000, false, false, 0, vecPF, pfP | pfI})
		}
	}
	cases = append(cases, tc{"4level", progRead, 0x40030000, false, false, 0x1111, -1, 0})
	for _, k := range cases {
		name := fmt.Sprintf("%s/%x/%#x/user=%v/wp=%v", k.mode, k.prog[1], k.addr, k.user, k.wp)
		t.Run(name, func(t *testing.T) {
			v, pte := pagingVM(t, k.mode, k.prog, k.user)
			if k.wp {
				s := v.c.GetSregs2()
				s.CR0 |= cr0WP
				v.c.SetSregs2(s)
			}
			r := v.c.GetRegs()
			r.RAX, r.RBX = k.addr, 0x77
			v.c.SetRegs(r)
			ex := v.c.Run(10)
			if k.vec >= 0 {
				if ex.Kind != ExitException || ex.Vector != k.vec || ex.ErrorCode != k.errCode {
					t.Fatalf("exit %+v, want #%d error %#x", ex, k.vec, k.errCode)
				}
				if cr2 := v.c.GetSregs2().CR2; cr2 != k.addr {
					t.Errorf("CR2 %#x, want %#x", cr2, k.addr)
				}
				return
			}
			// User code ends with #GP on its hlt.
			done := ex.Kind == ExitHLT || (k.user && ex.Kind == ExitException && ex.Vector == vecGP && ex.RIP == tCode+2)
			if !done {
				t.Fatalf("exit %+v", ex)
			}
			if k.prog[0] == 0x8b && v.c.GetRegs().RBX != k.wantRBX {
				t.Errorf("read %#x, want %#x", v.c.GetRegs().RBX, k.wantRBX)
			}
			if k.addr == 0x400000 {
				if v.r64(pte)&0x20 == 0 {
					t.Errorf("accessed bit not set in PTE %#x", v.r64(pte))
				}
			}
			if k.prog[0] == 0x89 {
				idx := (k.addr - 0x400000) >> 12
				sz := uint64(8)
				if k.mode == "32bit" {
					sz = 4
				}
				if e := v.r64(pte + idx*sz); e&0x60 != 0x60 {
					t.Errorf("A/D not set after write: PTE %#x", e)
				}
			}
		})
	}
}

// TestTLBInvalidation checks that a PTE change is seen after invlpg and
// after a CR3 reload, and not before (the TLB caches translations).
func TestTLBInvalidation(t *testing.T) {
	// mov (%rax),%ebx; invlpg (%rax); mov (%rax),%ecx; hlt
	code := []byte{0x8b, 0x18, 0x0f, 0x01, 0x38, 0x8b, 0x08, 0xf4}
	v, pte := pagingVM(t, "4level", code, false)
	r := v.c.GetRegs()
	r.RAX = 0x400000
	v.c.SetRegs(r)
	if ex := v.c.Step(); ex.Kind != ExitNone {
		t.Fatal(ex)
	}
	v.w64(pte, 0x31000|7) // remap behind the TLB's back
	v.c.Step()
	r = v.run()
	if r.RBX != 0x1111 || r.RCX != 0x2222 {
		t.Fatalf("rbx %#x rcx %#x", r.RBX, r.RCX)
	}
}

// TestTLBFlushKeepsGlobalPages checks the TLB's flush bookkeeping: a CR3
// write drops the translation of an ordinary page but keeps a global one
// (CR4.PGE), and a CR4.PGE toggle drops both.
func TestTLBFlushKeepsGlobalPages(t *testing.T) {
	// mov (%rax),%ebx; mov (%rdx),%ebx; mov %rcx,%cr3; mov (%rax),%ebx;
	// mov (%rdx),%esi; hlt
	code := []byte{0x8b, 0x18, 0x8b, 0x1a, 0x0f, 0x22, 0xd9, 0x8b, 0x18, 0x8b, 0x32, 0xf4}
	v, pte := pagingVM(t, "4level", code, false)
	v.w64(pte+8, 0x31000|0x107) // 0x401000 → 0x31000, global
	s := v.c.GetSregs2()
	s.CR4 |= cr4PGE
	if err := v.c.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	r := v.c.GetRegs()
	r.RAX, r.RDX, r.RCX = 0x400000, 0x401000, s.CR3
	v.c.SetRegs(r)
	for range 2 {
		if ex := v.c.Step(); ex.Kind != ExitNone {
			t.Fatal(ex)
		}
	}
	if n := len(v.c.tlbUsed); n < 2 {
		t.Fatalf("%d TLB entries listed after two data pages, want at least 2", n)
	}
	// Remap both pages behind the TLB's back; only the global one's stale
	// translation may survive the CR3 write.
	v.w64(pte, 0x33000|7)
	v.w64(pte+8, 0x33000|0x107)
	r = v.run()
	if r.RBX != 0x4444 || r.RSI != 0x2222 {
		t.Fatalf("after the CR3 write: ordinary page read %#x (want the new 0x4444), global page %#x (want the cached 0x2222)", r.RBX, r.RSI)
	}
	for _, i := range v.c.tlbUsed {
		if v.c.tlb[i].flags&tlbListed == 0 {
			t.Fatalf("entry %d listed in tlbUsed without tlbListed", i)
		}
	}
	v.c.flushTLB(true)
	if len(v.c.tlbUsed) != 0 {
		t.Fatalf("%d entries listed after a full flush", len(v.c.tlbUsed))
	}
	for i := range v.c.tlb {
		if v.c.tlb[i].flags != 0 {
			t.Fatalf("entry %d flags %#x after a full flush", i, v.c.tlb[i].flags)
		}
	}
}
