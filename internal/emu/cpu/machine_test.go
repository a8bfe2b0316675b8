package cpu

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/hv"
)

func TestMMIOExits(t *testing.T) {
	v := newVM(t, 32, progMMIO)
	v.p.mmio = true
	ex := v.c.Run(100)
	if ex.Kind != ExitMMIO || ex.Write || ex.Addr != 0xfee00030 || ex.Size != 4 {
		t.Fatalf("read exit %+v", ex)
	}
	v.c.CompleteMMIORead(0x50014)
	ex = v.c.Run(100)
	if ex.Kind != ExitMMIO || !ex.Write || ex.Addr != 0xfee000b0 || ex.Data != 0x12345678 || ex.Size != 4 {
		t.Fatalf("write exit %+v", ex)
	}
	r := v.run()
	if r.RBX != 0x50014 {
		t.Fatalf("ebx %#x", r.RBX)
	}
}

func TestNMIBlocking(t *testing.T) {
	v := newVM(t, 64, progNMI)
	v.setGate64(2, 0x1100, 0, 0, false)
	v.c.InjectNMI()
	step := func(wantRIP uint64) {
		t.Helper()
		if ex := v.c.Step(); ex.Kind != ExitNone {
			t.Fatalf("exit %+v", ex)
		}
		if rip := v.c.GetRegs().RIP; rip != wantRIP {
			t.Fatalf("rip %#x, want %#x", rip, wantRIP)
		}
	}
	step(0x1100) // NMI delivered
	v.c.InjectNMI()
	step(0x1103) // inc %r8: the second NMI is blocked
	step(0x1104) // nop
	step(0x1000) // iretq unblocks
	step(0x1100) // the second NMI
	if v.c.GetRegs().R8 != 1 {
		t.Fatalf("r8 %d", v.c.GetRegs().R8)
	}
}

func TestMovSSShadow(t *testing.T) {
	v := newVM(t, 64, progMovSS)
	v.setGate64(0x20, 0x1100, 0, 0, false)
	r := v.c.GetRegs()
	r.RFLAGS |= flagIF
	v.c.SetRegs(r)
	v.c.Step() // mov %ss, %eax
	v.c.Step() // mov %eax, %ss
	v.p.irqs = []uint8{0x20}
	v.c.Kick()
	v.c.Step() // mov $1, %ebx: in the shadow
	if rip := v.c.GetRegs().RIP; rip != 0x1009 {
		t.Fatalf("rip %#x after the shadowed instruction", rip)
	}
	v.c.Step() // the interrupt
	if rip := v.c.GetRegs().RIP; rip != 0x1100 {
		t.Fatalf("interrupt not delivered after the shadow: rip %#x", rip)
	}
}

func TestFarReturnToRing3(t *testing.T) {
	v := newVM(t, 32, progRetfRing3)
	v.w32(tTSS+8, selData)
	v.setGate32(0x80, 0x1100, 3)
	r := v.run()
	if r.RAX != 0x23 || r.RBX != 0x2b || r.RCX != 0 {
		t.Fatalf("cs %#x ss %#x ds %#x (ds must be nulled)", r.RAX, r.RBX, r.RCX)
	}
}

func TestMisc32(t *testing.T) {
	v := newVM(t, 32, progMisc)
	r := v.run()
	if v.r64(0x20000) != 0x4400000033 {
		t.Errorf("cmpxchg8b memory %#x", v.r64(0x20000))
	}
	want := map[string][2]uint64{
		"ebx": {r.RBX, 0x133}, "ecx": {r.RCX, 0x1}, "eax": {r.RAX, 0x3456789a},
		"ebp": {r.RBP, 13}, "edx": {r.RDX, 13}, "edi": {r.RDI, 0x80},
	}
	for k, w := range want {
		if w[0] != w[1] {
			t.Errorf("%s = %#x, want %#x", k, w[0], w[1])
		}
	}
}

func TestMarkDirtyInvalidatesCode(t *testing.T) {
	// mov $1, %eax; hlt
	v := newVM(t, 64, []byte{0xb8, 0x01, 0x00, 0x00, 0x00, 0xf4})
	if r := v.run(); r.RAX != 1 {
		t.Fatalf("rax %d", r.RAX)
	}
	v.mem.WritePhys(tCode+1, []byte{2}) // a device writes the code page
	r := v.c.GetRegs()
	r.RIP = tCode
	v.c.SetRegs(r)
	if r := v.run(); r.RAX != 2 {
		t.Fatalf("stale decoded code: rax %d", r.RAX)
	}
}

func TestCrossCPUCodeModification(t *testing.T) {
	// A: mov $1, %eax; hlt. B stores a new immediate, then A runs again.
	v := newVM(t, 64, []byte{0xb8, 0x01, 0x00, 0x00, 0x00, 0xf4})
	v.run()
	b := New(1, v.mem, newTestPlatform())
	b.SetSregs2(v.c.GetSregs2())
	// movb $7, 0x1001; hlt
	v.mem.WritePhys(0x5000, []byte{0xc6, 0x04, 0x25, 0x01, 0x10, 0x00, 0x00, 0x07, 0xf4})
	b.SetRegs(hvRegs(0x5000, 0x9000))
	if ex := b.Run(10); ex.Kind != ExitHLT {
		t.Fatal(ex)
	}
	v.c.SetRegs(hvRegs(tCode, tStack))
	if r := v.run(); r.RAX != 7 {
		t.Fatalf("rax %d: code stored by another vCPU not seen", r.RAX)
	}
}

func TestKick(t *testing.T) {
	v := newVM(t, 64, progNMI) // an endless loop
	v.c.Kick()
	if ex := v.c.Run(1000); ex.Kind != ExitKicked {
		t.Fatalf("exit %+v", ex)
	}
	if ex := v.c.Run(1000); ex.Kind != ExitBudget {
		t.Fatalf("exit %+v", ex)
	}
}

func TestHLTAdvancesRIP(t *testing.T) {
	v := newVM(t, 64, []byte{0x90, 0xf4})
	v.run()
	if rip := v.c.GetRegs().RIP; rip != tCode+2 {
		t.Fatalf("rip %#x after hlt", rip)
	}
}

func TestCompatibilityMode(t *testing.T) {
	v := newVM(t, 64, progCompat)
	v.setGate64(0x80, 0x1100, 0, 0, false)
	r := v.run()
	if r.RBX != 0x11 || r.R14 != 0x8000-40 {
		t.Fatalf("rbx %#x r14 %#x", r.RBX, r.R14)
	}
	if s := v.c.GetSregs2(); s.CS.L != 1 || s.CS.Selector != selCode64 {
		t.Fatalf("handler cs %+v", s.CS)
	}
}

func TestDoubleFault(t *testing.T) {
	v := newVM(t, 64, progDF)
	v.setGate64(8, 0x1100, 0, 0, false) // #GP's gate 13 is not present
	r := v.run()
	if r.RIP != 0x1103 || r.R10 != 0 {
		t.Fatalf("rip %#x error code %#x, want the #DF handler", r.RIP, r.R10)
	}
}

func TestIOPermission(t *testing.T) {
	for _, allow := range []bool{false, true} {
		v := newVM(t, 32, progIOUser)
		v.c.TrapExceptions = true
		s := v.c.GetSregs2()
		s.CS.Selector, s.CS.DPL = selCode32U, 3
		s.SS.Selector, s.SS.DPL = selDataU, 3
		if allow {
			s.TR.Limit = 0x68 + 0x20 // bitmap bytes 0..0x1f are zero: ports 0-0xff allowed
		}
		v.c.SetSregs2(s)
		ex := v.c.Run(10)
		if allow {
			if ex.Kind != ExitException || ex.Vector != vecGP || ex.RIP != tCode+2 {
				t.Fatalf("allowed: exit %+v, want #GP on the user hlt", ex)
			}
			continue
		}
		if ex.Kind != ExitException || ex.Vector != vecGP || ex.RIP != tCode {
			t.Fatalf("denied: exit %+v, want #GP on in", ex)
		}
	}
}

func TestDebugRegsRoundTrip(t *testing.T) {
	c := New(0, NewMemory(), &NullPlatform{})
	d := c.GetDebugRegs()
	d[0] = 0x34 // DR0 low byte
	c.SetDebugRegs(d)
	if got := c.GetDebugRegs(); got != d || c.dr[7] != 0x400 || c.dr[0] != 0x34 {
		t.Fatalf("round trip %v", got[:48])
	}
}

func TestSingleStep(t *testing.T) {
	v := newVM(t, 64, progTF)
	v.setGate64(1, 0x1100, 0, 0, false)
	r := v.run()
	if r.R8 != 2 {
		t.Fatalf("%d #DB traps, want 2 (one after each nop)", r.R8)
	}
	if e := v.c.GetEvents(); e[evExcInjected] != 1 || e[evExcNr] != vecDB {
		t.Fatalf("the trap after hlt is not pending: %v", e[:8])
	}
}

func TestSysenterSysexit(t *testing.T) {
	v := newVM(t, 32, progSysenter)
	r := v.run()
	// sysexit: CS = SYSENTER_CS+16 | 3 (0x1b); sysenter back: CS 0x08, ESP 0x7000.
	if r.RSI != 0x1b || r.RDI != 0x9000 || r.RBX != 0x08 || r.RBP != 0x7000 {
		t.Fatalf("user cs %#x esp %#x, kernel cs %#x esp %#x", r.RSI, r.RDI, r.RBX, r.RBP)
	}
}

func TestCPUID(t *testing.T) {
	// cpuid; hlt
	v := newVM(t, 64, []byte{0x0f, 0xa2, 0xf4})
	query := func(leaf uint32) hv.Regs {
		v.c.SetRegs(hv.Regs{RAX: uint64(leaf), RIP: tCode, RSP: tStack, RFLAGS: 2})
		return v.run()
	}
	str := func(regs ...uint64) string {
		var b []byte
		for _, r := range regs {
			b = append(b, byte(r), byte(r>>8), byte(r>>16), byte(r>>24))
		}
		return string(b)
	}
	r := query(0)
	if s := str(r.RBX, r.RDX, r.RCX); s != "GodwitVirtCP" {
		t.Errorf("vendor %q", s)
	}
	r = query(0x40000000)
	if s := str(r.RBX, r.RCX, r.RDX); s != "GodwitGodwit" {
		t.Errorf("hypervisor signature %q", s)
	}
	r = query(1)
	// FPU, MMX, FXSR, SSE, SSE2 and XSAVE, with the hypervisor bit; no
	// SSE3 (ecx 0), no AVX (ecx 28); OSXSAVE (ecx 27) mirrors CR4.
	const fpuSSE = 1<<0 | 1<<23 | 1<<24 | 1<<25 | 1<<26
	if r.RDX&fpuSSE != fpuSSE || r.RCX&(1<<31|1<<26) != 1<<31|1<<26 || r.RCX&(1<<0|1<<28|1<<27) != 0 {
		t.Errorf("leaf 1 edx %#x ecx %#x: want FPU MMX FXSR SSE SSE2 XSAVE hypervisor, no SSE3, AVX or OSXSAVE", r.RDX, r.RCX)
	}
	s := v.c.GetSregs2()
	s.CR4 |= 1 << 18
	if err := v.c.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	if r = query(1); r.RCX&(1<<27) == 0 {
		t.Errorf("leaf 1 ecx %#x with CR4.OSXSAVE: want OSXSAVE", r.RCX)
	}
	v.c.SetRegs(hv.Regs{RAX: 0xd, RCX: 0, RIP: tCode, RSP: tStack, RFLAGS: 2})
	if r = v.run(); r.RAX != 3 || r.RBX != 576 || r.RCX != 576 || r.RDX != 0 {
		t.Errorf("leaf 0xd.0: eax %#x ebx %d ecx %d edx %#x, want x87|SSE and a 576-byte area", r.RAX, r.RBX, r.RCX, r.RDX)
	}
	r = query(0x80000001)
	if r.RDX&(1<<29) == 0 || r.RDX&(1<<20) == 0 {
		t.Errorf("leaf 0x80000001 edx %#x: want LM and NX", r.RDX)
	}
	v.c.SetCPUID([]hv.CPUIDEntry2{{Function: 0, EAX: 1, EBX: 42}})
	if r = query(0); r.RBX != 42 || len(v.c.GetCPUID()) != 1 {
		t.Errorf("SetCPUID not used: ebx %d", r.RBX)
	}
}

func TestReal16Misc(t *testing.T) {
	v := newVM(t, 16, progReal16)
	r := v.run()
	if got := v.r64(0x20000); got != 0x0807060504030201 {
		t.Errorf("rep movsb to es:di: %#x", got)
	}
	if got := v.r32(0x100) & 0xffff; got != 0x1234 {
		t.Errorf("(%%bp) is not ss-relative: %#x", got)
	}
	if r.RSI != 3 || r.RDX&0xffff != 0x4212 || r.RDI != 0x5678 || r.RSP != tStack {
		t.Errorf("si %#x dx %#x di %#x sp %#x", r.RSI, r.RDX, r.RDI, r.RSP)
	}
	if es := v.c.GetSregs2().ES; es.Selector != 0x3000 || es.Base != 0x30000 {
		t.Errorf("les: es %+v", es)
	}
}

func TestRepStosAcrossPages(t *testing.T) {
	code := []byte{
		0x48, 0xc7, 0xc7, 0x03, 0x00, 0x03, 0x00, // mov $0x30003, %rdi
		0x48, 0xc7, 0xc1, 0x05, 0x30, 0x00, 0x00, // mov $0x3005, %rcx
		0xb0, 0xab, // mov $0xab, %al
		0xf3, 0xaa, // rep stosb
		0xf4, // hlt
	}
	v := newVM(t, 64, code)
	v.mem.StartDirtyLog()
	v.mem.ClearDirtyLog(0, 0, make([]uint64, 64)) // nothing cleared yet
	mask := []uint64{0xf << (0x30 % 64)}
	v.mem.ClearDirtyLog(0, 0, mask) // pages 0x30-0x33
	r := v.run()
	if r.RCX != 0 || r.RDI != 0x30003+0x3005 {
		t.Fatalf("rcx %#x rdi %#x", r.RCX, r.RDI)
	}
	var b [0x3007]byte
	v.mem.ReadPhys(0x30002, b[:])
	if b[0] != 0 || b[1] != 0xab || b[0x3005] != 0xab || b[0x3006] != 0 {
		t.Fatalf("fill edges % x ... % x", b[:3], b[0x3004:])
	}
	bits := make([]uint64, 64)
	v.mem.DirtyLog(0, bits)
	if got := bits[0] >> 0x30 & 0xf; got != 0xf {
		t.Fatalf("dirty bits of pages 0x30-0x33: %#x", got)
	}
}

func TestMovbe(t *testing.T) {
	v := newVM(t, 64, []byte{
		0x48, 0xc7, 0xc6, 0x00, 0x00, 0x02, 0x00, // mov $0x20000,%rsi
		0xc7, 0x06, 0x44, 0x33, 0x22, 0x11, // movl $0x11223344,(%rsi)
		0x0f, 0x38, 0xf0, 0x06, // movbe (%rsi),%eax
		0x0f, 0x38, 0xf1, 0x46, 0x04, // movbe %eax,0x4(%rsi)
		0x66, 0x0f, 0x38, 0xf0, 0x1e, // movbe (%rsi),%bx
		0xf4, // hlt
	})
	r := v.run()
	if r.RAX != 0x44332211 || v.r32(0x20004) != 0x11223344 || r.RBX&0xffff != 0x4433 {
		t.Fatalf("eax %#x mem %#x bx %#x", r.RAX, v.r32(0x20004), r.RBX&0xffff)
	}
}

func TestSMPCmpxchg16b(t *testing.T) {
	v := newVM(t, 64, progCX16)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		c := v.c
		if i > 0 {
			c = New(i, v.mem, newTestPlatform())
			c.SetSregs2(v.c.GetSregs2())
		}
		c.SetRegs(hvRegs(tCode, uint64(0x80000+i*0x1000)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ex := c.Run(100_000)
				if ex.Kind == ExitHLT {
					return
				}
				if ex.Kind != ExitBudget {
					t.Errorf("exit %+v", ex)
					return
				}
			}
		}()
	}
	wg.Wait()
	if lo, hi := v.r64(0x20040), v.r64(0x20048); lo != 2000 || hi != 2000 {
		t.Fatalf("128-bit counter %d:%d, want 2000:2000", hi, lo)
	}
}

func TestRepInsbVMMCompletion(t *testing.T) {
	v := newVM(t, 64, []byte{
		0x48, 0xc7, 0xc7, 0x00, 0x00, 0x02, 0x00, // mov $0x20000,%rdi
		0xb9, 0x03, 0x00, 0x00, 0x00, // mov $0x3,%ecx
		0x66, 0xba, 0xe9, 0x00, // mov $0xe9,%dx
		0xf3, 0x6c, // rep insb (%dx),%es:(%rdi)
		0xf4, // hlt
	})
	v.p.inIO = true
	for i, val := range []uint32{0x61, 0x62, 0x63} {
		ex := v.c.Run(100)
		if ex.Kind != ExitIO || ex.Write || ex.Port != 0xe9 || ex.Size != 1 {
			t.Fatalf("element %d: exit %+v", i, ex)
		}
		r := v.c.GetRegs()
		if r.RCX != uint64(3-i) || r.RDI != 0x20000+uint64(i) || r.RIP != 0x1010 {
			t.Fatalf("element %d: rcx %d rdi %#x rip %#x", i, r.RCX, r.RDI, r.RIP)
		}
		v.c.CompleteIn(val)
	}
	v.run()
	var b [4]byte
	v.mem.ReadPhys(0x20000, b[:])
	if string(b[:3]) != "abc" || b[3] != 0 {
		t.Fatalf("memory % x", b)
	}
}

func TestKickFromAnotherGoroutine(t *testing.T) {
	v := newVM(t, 64, progNMI) // an endless loop
	done := make(chan Exit)
	go func() { done <- v.c.Run(1 << 62) }()
	v.c.Kick()
	if ex := <-done; ex.Kind != ExitKicked {
		t.Fatalf("exit %+v", ex)
	}
}

// TestDecodeCacheKeyedByMode runs the same bytes (48 89 c3: mov %rax,%rbx
// in 64-bit code, dec %eax; mov %eax,%ebx in 32-bit code) first in 64-bit
// and then in compatibility mode: the cached 64-bit decoding must not be
// reused.
func TestDecodeCacheKeyedByMode(t *testing.T) {
	v := newVM(t, 64, progModeKey)
	r := v.run()
	if r.R8 != 5 || r.RBX != 6 {
		t.Fatalf("64-bit result %d (want 5), compat result %d (want 6)", r.R8, r.RBX)
	}
}

// callGate installs a call gate at GDT selector 0x40 (DPL 3) to target
// with parameter count params: a 32-bit gate in legacy mode, a 64-bit one
// (16 bytes, so also using the 0x48 slot) in long mode.
func (v *testVM) callGate(target uint64, sel uint16, params uint8, long bool) {
	lo := target&0xffff | uint64(sel)<<16 | uint64(params)<<32 | uint64(0xec)<<40 | (target>>16&0xffff)<<48
	v.w64(tGDT+0x40, lo)
	if long {
		v.w64(tGDT+0x48, target>>32)
		s := v.c.GetSregs2()
		s.GDT.Limit = 0x4f
		v.c.SetSregs2(s)
	}
}

func TestCallGate32(t *testing.T) {
	v := newVM(t, 32, progCallGate32)
	v.w32(tTSS+8, selData) // SS0
	v.callGate(0x1100, selCode32, 1, false)
	v.setGate32(0x80, 0x1140, 3)
	r := v.run()
	if r.RAX != selCode32 || r.RBX != 0x7000-20 || r.RCX != 0x1234 || r.RDI != 0x9000 || r.RSI != selCode32U {
		t.Fatalf("gate cs %#x esp %#x param %#x; back: esp %#x cs %#x", r.RAX, r.RBX, r.RCX, r.RDI, r.RSI)
	}
}

func TestCallGate64(t *testing.T) {
	v := newVM(t, 64, progCallGate64)
	v.callGate(0x1100, selCode64, 0, true)
	v.setGate64(0x80, 0x1140, 3, 0, false)
	r := v.run()
	if r.RAX != selCode64 || r.RBX != 0x7000-32 || r.RCX != 0x9000 || r.RDI != 0x9000 || r.RSI != selCode64U {
		t.Fatalf("gate cs %#x rsp %#x old rsp %#x; back: rsp %#x cs %#x", r.RAX, r.RBX, r.RCX, r.RDI, r.RSI)
	}
}

// TestTwoMMIOReadsOneInstruction: cmpsb between two device addresses that
// the VMM answers: each read exits once, and the restarted instruction
// replays the first answer instead of asking again.
func TestTwoMMIOReadsOneInstruction(t *testing.T) {
	v := newVM(t, 32, []byte{
		0xbe, 0x00, 0x00, 0xe0, 0xfe, // mov $0xfee00000,%esi
		0xbf, 0x00, 0x00, 0xc0, 0xfe, // mov $0xfec00000,%edi
		0xa6,             // cmpsb %es:(%edi),%ds:(%esi)
		0x0f, 0x94, 0xc0, // sete %al
		0xf4, // hlt
	})
	v.p.mmio = true
	for _, addr := range []uint64{0xfee00000, 0xfec00000} {
		ex := v.c.Run(100)
		if ex.Kind != ExitMMIO || ex.Addr != addr || ex.Write {
			t.Fatalf("exit %+v, want a read of %#x", ex, addr)
		}
		v.c.CompleteMMIORead(0x41)
	}
	if r := v.run(); r.RAX&0xff != 1 || r.RSI != 0xfee00001 || r.RDI != 0xfec00001 {
		t.Fatalf("al %d esi %#x edi %#x", r.RAX&0xff, r.RSI, r.RDI)
	}
}

// notifyPlatform raises vector 0x20 once pending is set (from any
// goroutine).
type notifyPlatform struct {
	NullPlatform
	pending atomic.Bool
}

func (p *notifyPlatform) PendingInterrupt() (uint8, bool) {
	if p.pending.Swap(false) {
		return 0x20, true
	}
	return 0, false
}

// TestNotifyInterrupt raises an interrupt from another goroutine while the
// vCPU spins in Run; the handler halts.
func TestNotifyInterrupt(t *testing.T) {
	v := newVM(t, 64, []byte{0xfb, 0xeb, 0xfe}) // sti; jmp .
	v.mem.WritePhys(0x1100, []byte{0xf4})       // handler: hlt
	v.setGate64(0x20, 0x1100, 0, 0, false)
	p := &notifyPlatform{}
	c := New(1, v.mem, p)
	c.SetSregs2(v.c.GetSregs2())
	c.SetRegs(hvRegs(tCode, tStack))
	done := make(chan Exit)
	go func() { done <- c.Run(1 << 40) }()
	time.Sleep(time.Millisecond)
	p.pending.Store(true)
	c.NotifyInterrupt()
	select {
	case ex := <-done:
		if ex.Kind != ExitHLT || ex.RIP != 0x1101 {
			t.Fatalf("exit %+v, want hlt in the handler", ex)
		}
	case <-time.After(10 * time.Second):
		c.Kick()
		t.Fatalf("interrupt not taken: exit %+v", <-done)
	}
}

func TestEventsInjectedInterruptRoundTrip(t *testing.T) {
	v := newVM(t, 64, []byte{0xf4}) // hlt
	v.setGate64(0x41, 0x1100, 0, 0, false)
	v.mem.WritePhys(0x1100, []byte{0xf4})
	var e hv.VCPUEvents
	e[evIntInjected], e[evIntNr] = 1, 0x41
	v.c.SetEvents(e)
	if got := v.c.GetEvents(); got[evIntInjected] != 1 || got[evIntNr] != 0x41 {
		t.Fatalf("injected interrupt not reported: %v", got[:16])
	}
	// Delivered even with IF=0: it was acknowledged before the save.
	if ex := v.c.Run(10); ex.Kind != ExitHLT || ex.RIP != 0x1101 {
		t.Fatalf("exit %+v, want the injected interrupt's handler", ex)
	}
}
