package cpu

import (
	"sync"
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
)

func TestALU64(t *testing.T) {
	v := newVM(t, 64, progALU)
	r := v.run()
	want := map[string][2]uint64{
		"rbx flags after 0x7fffffff+1": {r.RBX & 0xfff, 0x896},
		"r15 flags after -1+1":         {r.R15 & 0xfff, 0x57},
		"r8 bswap":                     {r.R8, 0x40230100},
		"r9 sar":                       {r.R9, 0xffffffff},
		"r10 quotient":                 {r.R10, 14},
		"r11 remainder":                {r.R11, 2},
		"r12 imul":                     {r.R12, uint64(0xfffffffffffffff1)},
		"r13 bsr":                      {r.R13, 16},
		"r14 adc":                      {r.R14, 1},
		"rbp movsx":                    {r.RBP, 0xffffff80},
		"rdi movzx":                    {r.RDI, 0x80},
		"rax idiv":                     {r.RAX, uint64(0xfffffffffffffffd)},
		"rdx idiv":                     {r.RDX, ^uint64(0)},
	}
	for k, w := range want {
		if w[0] != w[1] {
			t.Errorf("%s = %#x, want %#x", k, w[0], w[1])
		}
	}
}

func TestStringOps64(t *testing.T) {
	v := newVM(t, 64, progString)
	r := v.run()
	if v.r64(0x20118) != 0x1122334455667788 {
		t.Errorf("rep movsb copy = %#x", v.r64(0x20118))
	}
	if r.RBX&0xff != 1 || r.R8 != 0x20104 || r.R9 != 28 || r.R10 != 0x20106 || r.RAX != 0x1122334455667711 {
		t.Errorf("regs %+v", r)
	}
}

func TestModeSwitchRealToLong(t *testing.T) {
	v := newVM(t, 16, progModeSwitch)
	r := v.run()
	s := v.c.GetSregs2()
	if r.RBX&0x500 != 0x500 || s.EFER&eferLMA == 0 || s.CS.L != 1 || s.CS.Selector != 0x18 {
		t.Fatalf("not in long mode: rbx %#x efer %#x cs %+v", r.RBX, s.EFER, s.CS)
	}
	if r.RAX != 0x123456789 || r.RDX != 0x123456789 {
		t.Errorf("rax %#x rdx %#x", r.RAX, r.RDX)
	}
	if s.SS.Selector != 0x10 || s.SS.DB != 1 || s.SS.Base != 0 {
		t.Errorf("ss %+v", s.SS)
	}
}

func TestIDTDelivery64(t *testing.T) {
	v := newVM(t, 64, progIDT64)
	v.setGate64(6, 0x1100, 0, 0, false)
	v.setGate64(0, 0x1140, 0, 0, false)
	v.setGate64(13, 0x1180, 0, 0, false)
	v.setGate64(14, 0x11c0, 0, 0, false)
	v.setGate64(3, 0x1200, 3, 0, true)
	v.setGate64(0x80, 0x1240, 3, 0, false)
	v.setGate64(0x81, 0x1280, 3, 1, false)
	v.setGate64(0x82, 0x12c0, 3, 0, false)
	r := v.run()
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"#UD count", r.R8, 1},
		{"#DE count", r.R9, 1},
		{"#GP error code", r.R10, 0x1234},
		{"#PF error code", r.R11, 0},
		{"CR2", r.R12, 0x7fff00000000},
		{"#BP count", r.R13, 1},
		{"RSP in int 0x80 from ring 3 (TSS RSP0)", r.R14, 0x7000 - 40},
		{"CS pushed by int 0x80", r.RSI, 0x33},
		{"RSP in int 0x81 (IST1)", r.R15, 0x6000 - 40},
		{"CS pushed by int 0x82", r.RDI, 0x33},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestIntPrivilege32(t *testing.T) {
	v := newVM(t, 32, progProt32Int)
	v.w32(tTSS+8, selData) // SS0 of the 32-bit TSS
	v.setGate32(0x80, 0x1100, 3)
	r := v.run()
	if r.RBX != 0x7000-20 || r.RCX != 0x23 || r.RDX != 0x2b {
		t.Fatalf("esp %#x cs %#x ss %#x", r.RBX, r.RCX, r.RDX)
	}
	if cpl := v.c.cpl(); cpl != 0 {
		t.Errorf("cpl %d in handler", cpl)
	}
}

func TestRealMode(t *testing.T) {
	v := newVM(t, 16, progReal)
	r := v.run()
	if r.RBX&0xff != 0x55 || r.RCX&0xff != 1 || r.RDX&0xffff != 0xbeef {
		t.Fatalf("regs %+v", r)
	}
	if v.r32(0x20010)&0xffff != 0xbeef {
		t.Errorf("memory %#x", v.r32(0x20010))
	}
}

func TestSTIShadow(t *testing.T) {
	v := newVM(t, 64, progSTI)
	v.setGate64(0x20, 0x1100, 0, 0, false)
	v.p.irqs = []uint8{0x20}
	r := v.run()
	if r.R9 != 0x1006 || r.RAX != 1 {
		t.Fatalf("interrupt returned to %#x (rax %d), want 0x1006 after the shadowed mov", r.R9, r.RAX)
	}
}

func TestSMPLockedOps(t *testing.T) {
	const ncpu = 4
	v := newVM(t, 64, progLock)
	var wg sync.WaitGroup
	for i := 0; i < ncpu; i++ {
		c := v.c
		if i > 0 {
			c = New(i, v.mem, newTestPlatform())
			c.SetSregs2(v.c.GetSregs2())
		}
		regs := hv.Regs{RIP: tCode, RSP: uint64(0x80000 + i*0x1000), RFLAGS: 2}
		c.SetRegs(regs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ex := c.Run(100_000)
				if ex.Kind == ExitHLT {
					return
				}
				if ex.Kind != ExitBudget {
					t.Errorf("cpu exit %+v", ex)
					return
				}
			}
		}()
	}
	wg.Wait()
	n := uint64(ncpu * 2000)
	if got := v.r64(0x20000); got != n {
		t.Errorf("lock add total %d, want %d", got, n)
	}
	if got := v.r64(0x20008); got != n {
		t.Errorf("lock xadd total %d, want %d", got, n)
	}
	if got := v.r64(0x20010); got != n {
		t.Errorf("lock cmpxchg total %d, want %d", got, n)
	}
	if got := v.r64(0x20018) & 0xff; got != n&0xff {
		t.Errorf("lock incb total %d, want %d", got, n&0xff)
	}
	if got := v.r64(0x20018) >> 24 & 0xffff; got != n {
		t.Errorf("misaligned lock addw total %d, want %d", got, n)
	}
}

func TestSelfModifyingCode(t *testing.T) {
	v := newVM(t, 64, progSMC)
	r := v.run()
	if r.RBX&0xff != 0x20 {
		t.Fatalf("bl = %#x, want 0x20 (patched immediate not seen)", r.RBX&0xff)
	}
}

func TestPortIOExits(t *testing.T) {
	v := newVM(t, 64, progIO)
	v.p.exitIO, v.p.inIO = true, true
	v.mem.WritePhys(0x20000, []byte("abc"))
	ex := v.c.Run(1000)
	if ex.Kind != ExitIO || !ex.Write || ex.Port != 0xe9 || ex.Data != 0x41 || ex.Size != 1 {
		t.Fatalf("out exit %+v", ex)
	}
	ex = v.c.Run(1000)
	if ex.Kind != ExitIO || ex.Write || ex.Port != 0xe9 || ex.Size != 2 {
		t.Fatalf("in exit %+v", ex)
	}
	v.c.CompleteIn(0x1234)
	for i, want := range []byte("abc") {
		ex = v.c.Run(1000)
		if ex.Kind != ExitIO || !ex.Write || ex.Data != uint64(want) {
			t.Fatalf("outsb element %d: exit %+v", i, ex)
		}
		if rcx := v.c.GetRegs().RCX; rcx != uint64(2-i) {
			t.Errorf("rcx after element %d = %d", i, rcx)
		}
	}
	r := v.run()
	if r.RBX != 0x1234 {
		t.Errorf("in value %#x", r.RBX)
	}
}

func TestSyscallSysret(t *testing.T) {
	v := newVM(t, 64, progSyscall)
	r := v.run()
	if r.R8 != 0x33 || r.R9 != 0x1043 || r.R10 != 0x202 || r.R12 != 0x08 {
		t.Fatalf("regs %+v", r)
	}
	if f := v.c.GetRegs().RFLAGS; f&flagIF != 0 {
		t.Errorf("SFMASK did not clear IF: %#x", f)
	}
}

func TestTripleFault(t *testing.T) {
	v := newVM(t, 64, []byte{0x0f, 0x0b}) // ud2 with an empty IDT
	s := v.c.GetSregs2()
	s.IDT.Limit = 0
	v.c.SetSregs2(s)
	if ex := v.c.Run(10); ex.Kind != ExitShutdown {
		t.Fatalf("exit %+v, want shutdown", ex)
	}
}

func TestTrapExceptions(t *testing.T) {
	v := newVM(t, 64, []byte{0x90, 0x0f, 0x0b}) // nop; ud2
	v.c.TrapExceptions = true
	ex := v.c.Run(10)
	if ex.Kind != ExitException || ex.Vector != vecUD || ex.RIP != tCode+1 {
		t.Fatalf("exit %+v", ex)
	}
}

func TestEventsRoundTrip(t *testing.T) {
	v := newVM(t, 64, []byte{0xf4})
	var e hv.VCPUEvents
	e[evIntShadow] = shadowIntSTI
	e[evNMIMasked] = 1
	e[evNMIPending] = 1
	e[evFlags] = evValidNMI | evValidShadow
	v.c.SetEvents(e)
	got := v.c.GetEvents()
	if got[evIntShadow] != shadowIntSTI || got[evNMIMasked] != 1 || got[evNMIPending] != 1 {
		t.Fatalf("events %v", got)
	}
}

func TestResetAndSIPI(t *testing.T) {
	c := New(0, NewMemory(), &NullPlatform{})
	s := c.GetSregs2()
	r := c.GetRegs()
	if s.CS.Selector != 0xf000 || s.CS.Base != 0xffff0000 || r.RIP != 0xfff0 || s.CR0&cr0PE != 0 {
		t.Fatalf("reset state cs %+v rip %#x cr0 %#x", s.CS, r.RIP, s.CR0)
	}
	c.StartupIPI(0x08)
	s = c.GetSregs2()
	if s.CS.Selector != 0x0800 || s.CS.Base != 0x8000 || c.GetRegs().RIP != 0 {
		t.Fatalf("sipi cs %+v", s.CS)
	}
}

func TestMSRs(t *testing.T) {
	c := New(0, NewMemory(), &NullPlatform{})
	n := c.SetMSRs([]hv.MSREntry{{Index: msrLSTAR, Data: 0xffffffff81000000}, {Index: msrSTAR, Data: 0x0023001000000000}, {Index: 0xdead}})
	if n != 2 {
		t.Fatalf("SetMSRs = %d, want 2", n)
	}
	got := c.GetMSRs([]uint32{msrLSTAR, msrSTAR, 0xdead, msrPAT})
	if len(got) != 2 || got[0].Data != 0xffffffff81000000 || got[1].Data != 0x0023001000000000 {
		t.Fatalf("GetMSRs = %+v", got)
	}
	all := c.GetMSRs(SupportedMSRs())
	if len(all) != len(SupportedMSRs()) {
		t.Fatalf("GetMSRs(SupportedMSRs()) returned %d of %d", len(all), len(SupportedMSRs()))
	}
}
