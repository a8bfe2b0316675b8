package cpu

import (
	"encoding/binary"
	"math"
	"math/big"
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// What the x87 differential tests cannot show from user mode on this
// host: #NM and #MF, the environment and state layouts of 16- and 32-bit
// code and real mode, the constants against their definitions, and that
// the common instructions do not allocate. Which instructions wait for a
// pending exception was measured on this host (AMD EPYC, family 26) in a
// user process, the #MF arriving as SIGFPE.

// x87VM returns a machine in mode (16, 32 or 64) with code at tCode and
// then hlt, trapping exceptions.
func x87VM(t *testing.T, mode int, code []byte) *testVM {
	t.Helper()
	v := newVM(t, mode, append(append([]byte(nil), code...), 0xf4))
	v.c.TrapExceptions = true
	return v
}

// setCR0 sets CR0 bits.
func (v *testVM) setCR0(bits uint64) {
	v.t.Helper()
	s := v.c.GetSregs2()
	s.CR0 |= bits
	if err := v.c.SetSregs2(s); err != nil {
		v.t.Fatal(err)
	}
}

// TestX87Availability checks the checks every x87 instruction makes
// first: #NM with CR0.EM or CR0.TS (fwait: with CR0.MP and CR0.TS), #UD
// for fisttp (SSE3, not advertised) and lock, and #MF for a pending
// unmasked exception in every instruction but the non-waiting ones.
func TestX87Availability(t *testing.T) {
	fld1 := []byte{0xd9, 0xe8}
	for _, tc := range []struct {
		name    string
		code    []byte
		cr0     uint64
		pending bool
		want    int
	}{
		{"fld1", fld1, 0, false, -1},
		{"fld1 with EM", fld1, cr0EM, false, vecNM},
		{"fld1 with TS", fld1, cr0TS, false, vecNM},
		{"fld1 with MP", fld1, cr0MP, false, -1},
		{"fnstsw ax with TS", []byte{0xdf, 0xe0}, cr0TS, false, vecNM},
		{"fninit with EM", []byte{0xdb, 0xe3}, cr0EM, false, vecNM},
		{"fwait", []byte{0x9b}, 0, false, -1},
		{"fwait with TS", []byte{0x9b}, cr0TS, false, -1},
		{"fwait with EM", []byte{0x9b}, cr0EM, false, -1},
		{"fwait with MP and TS", []byte{0x9b}, cr0MP | cr0TS, false, vecNM},
		{"fisttp m32", []byte{0xdb, 0x0e}, 0, false, vecUD},
		{"fisttp m64", []byte{0xdd, 0x0e}, 0, false, vecUD},
		{"fisttp m16", []byte{0xdf, 0x0e}, 0, false, vecUD},
		{"lock fadd m32", []byte{0xf0, 0xd8, 0x06}, 0, false, vecUD},
		{"D9 D1 (reserved)", []byte{0xd9, 0xd1}, 0, false, vecUD},
		{"DB E5 (fsetpm's neighbour, reserved)", []byte{0xdb, 0xe5}, 0, false, vecUD},

		{"fld1, pending", fld1, 0, true, vecMF},
		{"fwait, pending", []byte{0x9b}, 0, true, vecMF},
		{"fnop, pending", []byte{0xd9, 0xd0}, 0, true, vecMF},
		{"ffree, pending", []byte{0xdd, 0xc1}, 0, true, vecMF},
		{"fldcw, pending", []byte{0xd9, 0x2e}, 0, true, vecMF},
		{"fldenv, pending", []byte{0xd9, 0x26}, 0, true, vecMF},
		{"frstor, pending", []byte{0xdd, 0x26}, 0, true, vecMF},
		{"fnstsw ax, pending", []byte{0xdf, 0xe0}, 0, true, -1},
		{"fnstsw m16, pending", []byte{0xdd, 0x3e}, 0, true, -1},
		{"fnstcw, pending", []byte{0xd9, 0x3e}, 0, true, -1},
		{"fnstenv, pending", []byte{0xd9, 0x36}, 0, true, -1},
		{"fnsave, pending", []byte{0xdd, 0x36}, 0, true, -1},
		{"fnclex, pending", []byte{0xdb, 0xe2}, 0, true, -1},
		{"fninit, pending", []byte{0xdb, 0xe3}, 0, true, -1},
		{"feni, pending", []byte{0xdb, 0xe0}, 0, true, -1},
		{"fdisi, pending", []byte{0xdb, 0xe1}, 0, true, -1},
		{"fsetpm, pending", []byte{0xdb, 0xe4}, 0, true, -1},
	} {
		v := x87VM(t, 64, tc.code)
		v.setCR0(tc.cr0 | cr0NE)
		r := v.c.GetRegs()
		r.RSI = tScratch
		v.c.SetRegs(r)
		v.w32(tScratch, 0x037f) // a control word for fldcw, fldenv, frstor
		if tc.pending {
			v.c.fpu.fcw, v.c.fpu.fsw = 0x037e, fswIE|fswES|fswB
		}
		if vec := v.step(); vec != tc.want {
			t.Errorf("%s: vector %d, want %d", tc.name, vec, tc.want)
		}
	}
}

// TestX87DeferredException checks an unmasked exception: the instruction
// that raises it only sets the flag, ES and B, and leaves its destination
// and the stack alone; the non-waiting instructions after it run; the
// next waiting one raises #MF before doing anything, with FOP and FIP
// still naming the instruction at fault; fnclex clears it.
func TestX87DeferredException(t *testing.T) {
	code := []byte{
		0xd9, 0xe8, // 0: fld1
		0xd9, 0xee, // 2: fldz
		0xde, 0xf9, // 4: fdivp st(1), st: 1/0, ZE unmasked
		0xdf, 0xe0, // 6: fnstsw ax
		0xd9, 0xe8, // 8: fld1: #MF
		0xdb, 0xe2, // 10: fnclex
		0xd9, 0xe8, // 12: fld1
	}
	v := x87VM(t, 64, code)
	v.setCR0(cr0NE)
	v.c.fpu.fcw = fcwInit &^ fswZE
	for i := 0; i < 4; i++ {
		if vec := v.step(); vec != -1 {
			t.Fatalf("instruction %d: vector %d", i, vec)
		}
	}
	f := &v.c.fpu
	if want := uint16(fswB | fswES | fswZE | 6<<11); f.fsw != want || uint16(v.c.GetRegs().RAX) != want {
		t.Errorf("FSW %#04x, fnstsw ax %#04x, want %#04x (ZE, ES, B; nothing popped)", f.fsw, uint16(v.c.GetRegs().RAX), want)
	}
	if v.c.st(0) != (f80{}) || v.c.st(1) != f80One {
		t.Errorf("ST(0) %x, ST(1) %x: the destination changed", v.c.st(0), v.c.st(1))
	}
	if f.fop != 0x6f9 || f.fip != tCode+4 {
		t.Errorf("FOP %#x FIP %#x, want 0x6f9 at %#x", f.fop, f.fip, tCode+4)
	}
	before := *f
	if vec := v.step(); vec != vecMF || v.c.GetRegs().RIP != tCode+8 {
		t.Fatalf("fld1: vector %d at %#x, want #MF at %#x", vec, v.c.GetRegs().RIP, tCode+8)
	}
	if *f != before {
		t.Errorf("the x87 state changed at the #MF")
	}
	r := v.c.GetRegs()
	r.RIP = tCode + 10 // as a handler would: clear, and go on
	v.c.SetRegs(r)
	for i := 0; i < 2; i++ {
		if vec := v.step(); vec != -1 {
			t.Fatalf("after fnclex: vector %d", vec)
		}
	}
	if f.fsw != 5<<11 || v.c.st(0) != f80One {
		t.Errorf("after fnclex; fld1: FSW %#04x ST(0) %x", f.fsw, v.c.st(0))
	}
}

// TestX87EnvironmentLayouts checks fnstenv and fnsave images in 32-bit
// and 16-bit protected mode and in real mode (32- and 16-bit layouts),
// after an fld m32 whose address they record, and that fldenv and frstor
// load them back.
func TestX87EnvironmentLayouts(t *testing.T) {
	one := []byte{0, 0, 0x80, 0x3f} // 1.0f
	for _, tc := range []struct {
		name string
		mode int
		code []byte // fld m32 at the start, then the store to [bx] or [ebx]
		want []byte
	}{
		{"32-bit protected fnstenv", 32, []byte{0xd9, 0x46, 0x04, 0xd9, 0x33}, le32s(
			0xffff037f, 0xffff3800, 0xffff3fff, tCode, 0x08|0x146<<16, tScratch+4, 0xffff0010)},
		{"16-bit protected fnstenv (66)", 32, []byte{0xd9, 0x46, 0x04, 0x66, 0xd9, 0x33}, le16s(
			0x037f, 0x3800, 0x3fff, tCode, 0x08, tScratch+4, 0x10)},
		// real mode: CS 0x1234 (base 0x12340, code at IP 0), DS 0x2345,
		// SI 0x10: FIP is linear 0x12340, FDP 0x23464
		{"16-bit real fnstenv", 16, []byte{0xd9, 0x44, 0x04, 0xd9, 0x37}, le16s(
			0x037f, 0x3800, 0x3fff, 0x2340, 0x1<<12|0x144, 0x3464, 0x2<<12)},
		{"32-bit real fnstenv (66)", 16, []byte{0xd9, 0x44, 0x04, 0x66, 0xd9, 0x37}, le32s(
			0xffff037f, 0xffff3800, 0xffff3fff, 0xffff2340, 0x1<<12|0x144, 0xffff3464, 0x2<<12)},
	} {
		v := x87VM(t, tc.mode, tc.code)
		base := uint64(tScratch)
		if tc.mode == 16 {
			s := v.c.GetSregs2()
			s.CS = hv.Segment{Base: 0x12340, Selector: 0x1234, Limit: 0xffff, Type: 0xb, Present: 1, S: 1}
			s.DS = hv.Segment{Base: 0x23450, Selector: 0x2345, Limit: 0xffff, Type: 0x3, Present: 1, S: 1}
			if err := v.c.SetSregs2(s); err != nil {
				t.Fatal(err)
			}
			v.mem.WritePhys(0x12340, append(append([]byte(nil), tc.code...), 0xf4))
			v.c.SetRegs(hv.Regs{RIP: 0, RSP: 0x8000, RFLAGS: 2, RSI: 0x10, RBX: 0x100})
			base = 0x23450 + 0x10
		} else {
			v.c.SetRegs(hv.Regs{RIP: tCode, RSP: tStack, RFLAGS: 2, RSI: tScratch, RBX: tScratch + 0x100})
		}
		v.mem.WritePhys(base+4, one)
		v.c.fpu.fninit()
		for i := 0; i < 2; i++ {
			if vec := v.step(); vec != -1 {
				t.Fatalf("%s: instruction %d: vector %d", tc.name, i, vec)
			}
		}
		got := make([]byte, len(tc.want))
		imageAt := base - 0x10 + 0x100
		if tc.mode != 16 {
			imageAt = tScratch + 0x100
		}
		v.mem.ReadPhys(imageAt, got)
		if string(got) != string(tc.want) {
			t.Errorf("%s:\n\tgot  % x\n\twant % x", tc.name, got, tc.want)
		}
		if v.c.fpu.fcw != 0x037f|fswExc {
			t.Errorf("%s: FCW %#x after fnstenv, want every exception masked", tc.name, v.c.fpu.fcw)
		}

		// fldenv loads it back (the data registers are not in it)
		saved := v.c.fpu
		v.c.fpu.fninit()
		fldenv := append([]byte(nil), tc.code[3:]...)
		fldenv[len(fldenv)-1] &^= 0x10 // /6 → /4
		r := v.c.GetRegs()
		r.RIP -= uint64(len(fldenv))
		v.c.SetRegs(r)
		lin := uint64(tCode + 3)
		if tc.mode == 16 {
			lin = 0x12343
		}
		v.mem.WritePhys(lin, fldenv)
		if vec := v.step(); vec != -1 {
			t.Fatalf("%s: fldenv: vector %d", tc.name, vec)
		}
		f := v.c.fpu
		if f.fcw != saved.fcw || f.fsw != saved.fsw || f.ftw != saved.ftw {
			t.Errorf("%s: fldenv loaded FCW %#x FSW %#x FTW %#x, want %#x %#x %#x", tc.name, f.fcw, f.fsw, f.ftw, saved.fcw, saved.fsw, saved.ftw)
		}
		wantIP, wantDP := saved.fip, saved.fdp
		if tc.mode == 16 {
			wantIP, wantDP = 0x12340, 0x23464 // linear, CS and DS zero
		}
		if f.fip&0xffff != wantIP&0xffff || f.fdp&0xffff != wantDP&0xffff {
			t.Errorf("%s: fldenv loaded FIP %#x FDP %#x, want %#x %#x", tc.name, f.fip, f.fdp, wantIP, wantDP)
		}
	}
}

func le32s(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func le16s(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, uint16(x))
	}
	return b
}

// TestX87SaveRestore checks fnsave in both layouts (the environment, then
// ST(0) to ST(7); the x87 initialised after) and that frstor restores the
// state exactly.
func TestX87SaveRestore(t *testing.T) {
	for _, tc := range []struct {
		name string
		pfx  []byte
		env  int
	}{{"108-byte", nil, 28}, {"94-byte (66)", []byte{0x66}, 14}} {
		code := append(append([]byte{0xd9, 0xe8, 0xd9, 0xeb}, tc.pfx...), 0xdd, 0x33) // fld1; fldpi; fnsave [ebx]
		code = append(append(code, tc.pfx...), 0xdd, 0x23)                            // frstor [ebx]
		v := x87VM(t, 32, code)
		v.c.SetRegs(hv.Regs{RIP: tCode, RSP: tStack, RFLAGS: 2, RBX: tScratch})
		v.c.fpu.fcw = 0x0b7f // RC up: fldpi rounds up
		for i := 0; i < 3; i++ {
			if vec := v.step(); vec != -1 {
				t.Fatalf("%s: instruction %d: vector %d", tc.name, i, vec)
			}
		}
		saved := fpuState{}
		saved.fcw, saved.fsw, saved.ftw = 0x0b7f, 6<<11, 0xc0
		img := make([]byte, tc.env+80)
		v.mem.ReadPhys(tScratch, img)
		if got := binary.LittleEndian.Uint16(img[0:]); got != saved.fcw {
			t.Errorf("%s: FCW %#x in the image, want %#x", tc.name, got, saved.fcw)
		}
		pi := loadConst(constPi, rcUp)
		for i, want := range []f80{pi, f80One} {
			o := tc.env + 10*i
			got := f80{binary.LittleEndian.Uint64(img[o:]), binary.LittleEndian.Uint16(img[o+8:])}
			if got != want {
				t.Errorf("%s: ST(%d) %x in the image, want %x", tc.name, i, got, want)
			}
		}
		if f := v.c.fpu; f.fcw != fcwInit || f.fsw != 0 || f.ftw != 0 {
			t.Errorf("%s: after fnsave FCW %#x FSW %#x FTW %#x, want fninit's", tc.name, f.fcw, f.fsw, f.ftw)
		}
		if vec := v.step(); vec != -1 {
			t.Fatalf("%s: frstor: vector %d", tc.name, vec)
		}
		if f := &v.c.fpu; f.fcw != saved.fcw || f.fsw != saved.fsw || f.ftw != saved.ftw || v.c.st(0) != pi || v.c.st(1) != f80One {
			t.Errorf("%s: after frstor FCW %#x FSW %#x FTW %#x ST(0) %x ST(1) %x", tc.name, f.fcw, f.fsw, f.ftw, v.c.st(0), v.c.st(1))
		}
	}
}

// TestX87Constants checks the 128-bit constants of fldpi, fldl2t, fldl2e,
// fldlg2 and fldln2 against π and the logarithms computed by the series
// of the transcendental instructions.
func TestX87Constants(t *testing.T) {
	pi, ln2 := bigConsts()
	ln10 := lnBig(big.NewFloat(10), transPrec)
	for _, tc := range []struct {
		name string
		k    [3]uint64
		v    *big.Float
	}{
		{"pi", constPi, pi},
		{"log2(10)", constL2T, newF(transPrec).Quo(ln10, ln2)},
		{"log2(e)", constL2E, newF(transPrec).Quo(big.NewFloat(1), ln2)},
		{"log10(2)", constLG2, newF(transPrec).Quo(ln2, ln10)},
		{"ln(2)", constLN2, ln2},
	} {
		var m big.Float
		e := tc.v.MantExp(&m)
		m.SetMantExp(&m, 128)
		z, _ := m.Int(nil)
		want := new(big.Int).Lsh(new(big.Int).SetUint64(tc.k[0]), 64)
		want.Or(want, new(big.Int).SetUint64(tc.k[1]))
		if z.Cmp(want) != 0 || int64(e-1) != int64(tc.k[2]) {
			t.Errorf("%s: %x × 2^%d, table %x × 2^%d", tc.name, z, e-1, want, int64(tc.k[2]))
		}
	}
	// rounding: π rounds up to nearest, l2t (…FE 49…) down
	if got := loadConst(constPi, rcNearest); got.mant != 0xc90fdaa22168c235 {
		t.Errorf("fldpi, round to nearest: %x", got)
	}
	if got := loadConst(constL2T, rcUp); got.mant != 0xd49a784bcd1b8aff {
		t.Errorf("fldl2t, round up: %x", got)
	}
}

// TestX87NoAllocs checks that the common instructions (fld, fild, fadd,
// fmul, fcomi, fdivrp, fistp, fstp) compute what they should without
// allocating.
func TestX87NoAllocs(t *testing.T) {
	code := []byte{
		0xdd, 0x06, // fld qword [rsi]: π
		0xdb, 0x46, 0x08, // fild dword [rsi+8]: 7
		0xdc, 0x06, // fadd qword [rsi]: 7+π
		0xd8, 0xc9, // fmul st, st(1): (7+π)π
		0xdb, 0xf1, // fcomi st, st(1): above
		0xde, 0xf1, // fdivrp st(1), st: 7+π
		0xd9, 0xc0, // fld st(0)
		0xdf, 0x5e, 0x10, // fistp word [rsi+16]: 10
		0xdd, 0x5e, 0x18, // fstp qword [rsi+24]
	}
	v := x87VM(t, 64, code)
	v.w64(tScratch, math.Float64bits(math.Pi))
	v.w32(tScratch+8, 7)
	run := func() {
		v.c.SetRegs(hv.Regs{RIP: tCode, RSP: tStack, RFLAGS: 2, RSI: tScratch})
		if ex := v.c.Run(100); ex.Kind != ExitHLT {
			t.Fatalf("exit %+v", ex)
		}
	}
	run()
	f := math.Float64frombits(v.r64(tScratch + 24))
	if w := uint16(v.r64(tScratch + 16)); w != 10 || math.Abs(f-(7+math.Pi)) > 1e-14 || v.c.fpu.ftw != 0 {
		t.Fatalf("fistp %d, fstp %v, tags %#x: want 10, 7+π, empty", w, f, v.c.fpu.ftw)
	}
	if fl := v.c.getFlags(); fl&(flagZF|flagPF|flagCF) != 0 {
		t.Errorf("fcomi: flags %#x, want above", fl)
	}
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("%v allocations a run", n)
	}
}

// TestX87FaultsLeaveState checks that an x87 store whose memory operand
// runs into an unmapped page raises #PF having written nothing and
// changed nothing of the x87 state, its pointers included.
func TestX87FaultsLeaveState(t *testing.T) {
	const edge = 0x200000 // 0x200000-0x3fffff is unmapped below
	for _, tc := range []struct {
		name string
		code []byte
	}{
		{"fnsave", []byte{0xdd, 0x36}},
		{"fnstenv", []byte{0xd9, 0x36}},
		{"fstp m80", []byte{0xdb, 0x3e}},
		{"fbstp", []byte{0xdf, 0x36}},
		{"fstp m64", []byte{0xdd, 0x1e}},
		{"fistp m64", []byte{0xdf, 0x3e}},
		{"fst m32", []byte{0xd9, 0x16}},
	} {
		for _, empty := range []bool{false, true} {
			v := x87VM(t, 64, tc.code)
			v.w64(tPD+8, 0) // the 2 MiB page at edge: not present
			pattern := make([]byte, 16)
			for i := range pattern {
				pattern[i] = byte(0xa0 + i)
			}
			v.mem.WritePhys(edge-16, pattern)
			v.c.SetRegs(hv.Regs{RIP: tCode, RSP: tStack, RFLAGS: 2, RSI: edge - 3})
			f := &v.c.fpu
			f.fninit()
			if !empty { // else a (masked) stack underflow stores the indefinite
				v.c.fpPush(f80One)
			}
			f.fop, f.fip, f.fdp = 0x123, 0x4567, 0x89ab
			before := *f
			if vec := v.step(); vec != vecPF {
				t.Errorf("%s (empty %v): vector %d, want #PF", tc.name, empty, vec)
				continue
			}
			if *f != before {
				t.Errorf("%s (empty %v): x87 state changed by the faulting store", tc.name, empty)
			}
			got := make([]byte, 16)
			v.mem.ReadPhys(edge-16, got)
			if string(got) != string(pattern) {
				t.Errorf("%s (empty %v): memory written before the fault: % x", tc.name, empty, got)
			}
		}
	}
}
