package cpu

import (
	"testing"
)

// What the differential tests cannot show from user mode: unmasked SIMD
// exceptions, the CR0/CR4 checks, alignment faults and the MMX state
// switch. The expected MXCSR values of TestSSEUnmaskedExceptions were
// taken from this host (AMD) with the exception delivered as SIGFPE.

// sseVM returns a 64-bit machine with SSE enabled (CR4.OSFXSR and, if
// xmexcpt, OSXMMEXCPT) that traps exceptions, with code at tCode and RSI
// pointing at tScratch.
func sseVM(t *testing.T, xmexcpt bool, code []byte) *testVM {
	t.Helper()
	v := newVM(t, 64, append(append([]byte(nil), code...), 0xf4))
	v.c.TrapExceptions = true
	s := v.c.GetSregs2()
	s.CR4 |= cr4OSFXSR
	if xmexcpt {
		s.CR4 |= cr4OSXMMEXCPT
	}
	if err := v.c.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	r := v.c.GetRegs()
	r.RSI, r.RDI = tScratch, tScratch
	v.c.SetRegs(r)
	return v
}

// step executes one instruction and returns the exception vector, or -1.
func (v *testVM) step() int {
	v.t.Helper()
	ex := v.c.Step()
	switch ex.Kind {
	case ExitNone:
		return -1
	case ExitException:
		return ex.Vector
	}
	v.t.Fatalf("exit %v (%+v)", ex.Kind, ex)
	return 0
}

func ps4(a, b, c, d uint32) [2]uint64 {
	return [2]uint64{uint64(a) | uint64(b)<<32, uint64(c) | uint64(d)<<32}
}

// TestSSEUnmaskedExceptions checks unmasked SIMD exceptions: #XM with
// CR4.OSXMMEXCPT, else #UD; MXCSR gets the flags hardware sets (only the
// pre-computation ones when one of those is unmasked; no PE beside an
// unmasked overflow or underflow); the destination is unchanged. With the
// exception masked the instruction completes.
func TestSSEUnmaskedExceptions(t *testing.T) {
	const all = 0x1f80
	one := uint32(0x3f800000)
	for _, tc := range []struct {
		name   string
		code   []byte
		mxcsr  uint32
		x0, x1 [2]uint64
		want   uint32 // MXCSR after
	}{
		{"addps overflow, OM unmasked", []byte{0x0f, 0x58, 0xc1}, all &^ 0x400,
			ps4(0x7f7fffff, one, one, one), ps4(0x7f7fffff, one, one, one), 0x1b88},
		{"mulps exact overflow, OM unmasked", []byte{0x0f, 0x59, 0xc1}, all &^ 0x400,
			ps4(0x7f000000, one, one, one), ps4(0x40000000, one, one, one), 0x1b88},
		{"mulps inexact underflow, UM unmasked", []byte{0x0f, 0x59, 0xc1}, all &^ 0x800,
			ps4(0x00c00001, one, one, one), ps4(0x3f000000, one, one, one), 0x1790},
		{"mulps exact tiny (denormal*1), UM unmasked", []byte{0x0f, 0x59, 0xc1}, all &^ 0x800,
			ps4(0x00400000, one, one, one), ps4(one, one, one, one), 0x1792},
		{"mulps tiny, UM unmasked, FTZ", []byte{0x0f, 0x59, 0xc1}, all&^0x800 | 0x8000,
			ps4(0x00c00001, one, one, one), ps4(0x3f000000, one, one, one), 0x9790},
		{"addps IE unmasked in lane 0, masked overflow in lane 1", []byte{0x0f, 0x58, 0xc1}, all &^ 0x80,
			ps4(0x7f800000, 0x7f7fffff, one, one), ps4(0xff800000, 0x7f7fffff, one, one), 0x1f01},
		{"addps OE unmasked in lane 1, masked IE in lane 0", []byte{0x0f, 0x58, 0xc1}, all &^ 0x400,
			ps4(0x7f800000, 0x7f7fffff, one, one), ps4(0xff800000, 0x7f7fffff, one, one), 0x1b89},
		{"divps 1/0, ZM unmasked", []byte{0x0f, 0x5e, 0xc1}, all &^ 0x200,
			ps4(one, one, one, one), ps4(0, one, one, one), 0x1d84},
		{"addps denormal operand, DM unmasked", []byte{0x0f, 0x58, 0xc1}, all &^ 0x100,
			ps4(1, one, one, one), ps4(one, one, one, one), 0x1e82},
		{"divps 1/3, PM unmasked", []byte{0x0f, 0x5e, 0xc1}, all &^ 0x1000,
			ps4(one, one, one, one), ps4(0x40400000, one, one, one), 0x0fa0},
		{"divps 1/3 in lane 1 (PM unmasked), masked denormal in lane 0", []byte{0x0f, 0x5e, 0xc1}, all &^ 0x1000,
			ps4(1, one, one, one), ps4(one, 0x40400000, one, one), 0x0fa2},
		{"divps DM unmasked in lane 0, masked inexact in lane 1", []byte{0x0f, 0x5e, 0xc1}, all &^ 0x100,
			ps4(1, one, one, one), ps4(one, 0x40400000, one, one), 0x1e82},
		{"divps masked ZE in lane 0, OE unmasked in lane 1", []byte{0x0f, 0x5e, 0xc1}, all &^ 0x400,
			ps4(one, 0x7f7fffff, one, one), ps4(0, 0x3e800000, one, one), 0x1b8c},
		{"comiss QNaN, IM unmasked", []byte{0x0f, 0x2f, 0xc1}, all &^ 0x80,
			ps4(0x7fc00000, 0, 0, 0), ps4(one, 0, 0, 0), 0x1f01},
		{"ucomisd SNaN, IM unmasked", []byte{0x66, 0x0f, 0x2e, 0xc1}, all &^ 0x80,
			[2]uint64{0x7ff0000000000001}, [2]uint64{0}, 0x1f01},
		{"sqrtsd -1, IM unmasked", []byte{0xf2, 0x0f, 0x51, 0xc1}, all &^ 0x80,
			[2]uint64{5, 6}, [2]uint64{0xbff0000000000000}, 0x1f01},
		{"cvtsd2ss overflow, OM unmasked", []byte{0xf2, 0x0f, 0x5a, 0xc1}, all &^ 0x400,
			[2]uint64{5, 6}, [2]uint64{0x47f0000000000000}, 0x1b88},
		{"cvtss2sd SNaN, IM unmasked", []byte{0xf3, 0x0f, 0x5a, 0xc1}, all &^ 0x80,
			[2]uint64{5, 6}, [2]uint64{0x7f800001}, 0x1f01},
		{"cvtps2dq NaN, IM unmasked", []byte{0x66, 0x0f, 0x5b, 0xc1}, all &^ 0x80,
			[2]uint64{5, 6}, ps4(one, 0x7fc00000, one, one), 0x1f01},
		{"cvtsi2ss inexact, PM unmasked", []byte{0xf3, 0x48, 0x0f, 0x2a, 0xc1}, all &^ 0x1000,
			[2]uint64{5, 6}, [2]uint64{}, 0x0fa0},
	} {
		for _, xm := range []bool{true, false} {
			v := sseVM(t, xm, tc.code)
			v.c.fpu.mxcsr = tc.mxcsr
			v.c.fpu.xmm[0], v.c.fpu.xmm[1] = tc.x0, tc.x1
			r := v.c.GetRegs()
			r.RCX, r.RAX = 0x7fffffffffffffff, 0x1234 // cvtsi2ss source; cvt destinations
			v.c.SetRegs(r)
			flags := v.c.getFlags()
			wantVec := vecXM
			if !xm {
				wantVec = vecUD
			}
			if vec := v.step(); vec != wantVec {
				t.Errorf("%s (OSXMMEXCPT=%v): vector %d, want %d", tc.name, xm, vec, wantVec)
				continue
			}
			if v.c.fpu.mxcsr != tc.want {
				t.Errorf("%s: MXCSR %#x, want %#x", tc.name, v.c.fpu.mxcsr, tc.want)
			}
			if v.c.fpu.xmm[0] != tc.x0 || v.c.GetRegs().RAX != 0x1234 {
				t.Errorf("%s: destination written: xmm0 %x, rax %#x", tc.name, v.c.fpu.xmm[0], v.c.GetRegs().RAX)
			}
			if v.c.getFlags() != flags || v.c.GetRegs().RIP != tCode {
				t.Errorf("%s: RFLAGS or RIP changed", tc.name)
			}
		}
	}
}

// TestSSEMaskedFlushToZero checks the masked response to a tiny exact
// result with FTZ: zero, and UE and PE set (as this host does).
func TestSSEMaskedFlushToZero(t *testing.T) {
	v := sseVM(t, true, []byte{0x0f, 0x59, 0xc1}) // mulps xmm0, xmm1
	v.c.fpu.mxcsr = 0x9f80
	v.c.fpu.xmm[0] = ps4(0x00800000, 0x00800000, 0x00800001, 0x3f800000)
	v.c.fpu.xmm[1] = ps4(0x3f000000, 0x3f800000, 0x3f800000, 0x3f800000)
	if vec := v.step(); vec != -1 {
		t.Fatalf("vector %d", vec)
	}
	if want := ps4(0, 0x00800000, 0x00800001, 0x3f800000); v.c.fpu.xmm[0] != want {
		t.Errorf("xmm0 %x, want %x", v.c.fpu.xmm[0], want)
	}
	if v.c.fpu.mxcsr != 0x9fb0 {
		t.Errorf("MXCSR %#x, want 0x9fb0", v.c.fpu.mxcsr)
	}
}

// TestSSEAvailability checks the checks before an SSE or MMX instruction:
// #UD with CR4.OSFXSR clear (SSE only) or CR0.EM set, #NM with CR0.TS set,
// #MF for an MMX instruction with an x87 exception pending.
func TestSSEAvailability(t *testing.T) {
	addps := []byte{0x0f, 0x58, 0xc1}
	paddb := []byte{0x0f, 0xfc, 0xc1}
	cvtpi2ps := []byte{0x0f, 0x2a, 0xc1}
	for _, tc := range []struct {
		name       string
		code       []byte
		osfxsr     bool
		cr0        uint64
		fswES      bool
		wantVector int
	}{
		{"addps", addps, true, 0, false, -1},
		{"addps without OSFXSR", addps, false, 0, false, vecUD},
		{"addps with EM", addps, true, cr0EM, false, vecUD},
		{"addps with TS", addps, true, cr0TS, false, vecNM},
		{"addps with EM and TS", addps, true, cr0EM | cr0TS, false, vecUD},
		{"addps, x87 exception pending", addps, true, 0, true, -1},
		{"paddb mm without OSFXSR", paddb, false, 0, false, -1},
		{"paddb mm with EM", paddb, true, cr0EM, false, vecUD},
		{"paddb mm with TS", paddb, true, cr0TS, false, vecNM},
		{"paddb mm, x87 exception pending", paddb, true, 0, true, vecMF},
		{"emms, x87 exception pending", []byte{0x0f, 0x77}, true, 0, true, vecMF},
		{"cvtpi2ps xmm, mm without OSFXSR", cvtpi2ps, false, 0, false, vecUD},
		{"cvtpi2ps xmm, mm, x87 exception pending", cvtpi2ps, true, 0, true, vecMF},
		{"lock addps", append([]byte{0xf0}, addps...), true, 0, false, vecUD},
		{"haddps (SSE3)", []byte{0xf2, 0x0f, 0x7c, 0xc1}, true, 0, false, vecUD},
	} {
		v := sseVM(t, true, tc.code)
		s := v.c.GetSregs2()
		if !tc.osfxsr {
			s.CR4 &^= cr4OSFXSR
		}
		s.CR0 |= tc.cr0
		if err := v.c.SetSregs2(s); err != nil {
			t.Fatal(err)
		}
		if tc.fswES {
			v.c.fpu.fsw = 0x81 // IE and ES
		}
		if vec := v.step(); vec != tc.wantVector {
			t.Errorf("%s: vector %d, want %d", tc.name, vec, tc.wantVector)
		}
	}
}

// TestSSEAlignment checks that 16-byte memory operands must be aligned
// but for the unaligned moves, and that 8- and 4-byte ones need not be.
func TestSSEAlignment(t *testing.T) {
	for _, tc := range []struct {
		name string
		code []byte
		gp   bool
	}{
		{"movaps load", []byte{0x0f, 0x28, 0x06}, true},
		{"movaps store", []byte{0x0f, 0x29, 0x06}, true},
		{"movapd load", []byte{0x66, 0x0f, 0x28, 0x06}, true},
		{"movdqa load", []byte{0x66, 0x0f, 0x6f, 0x06}, true},
		{"movdqa store", []byte{0x66, 0x0f, 0x7f, 0x06}, true},
		{"movntps", []byte{0x0f, 0x2b, 0x06}, true},
		{"movntdq", []byte{0x66, 0x0f, 0xe7, 0x06}, true},
		{"addps", []byte{0x0f, 0x58, 0x06}, true},
		{"pcmpeqb xmm", []byte{0x66, 0x0f, 0x74, 0x06}, true},
		{"punpcklbw xmm", []byte{0x66, 0x0f, 0x60, 0x06}, true},
		{"pshufd", []byte{0x66, 0x0f, 0x70, 0x06, 0x1b}, true},
		{"cvtpd2pi", []byte{0x66, 0x0f, 0x2d, 0x06}, true},
		{"movups load", []byte{0x0f, 0x10, 0x06}, false},
		{"movdqu store", []byte{0xf3, 0x0f, 0x7f, 0x06}, false},
		{"addss", []byte{0xf3, 0x0f, 0x58, 0x06}, false},
		{"movlps", []byte{0x0f, 0x12, 0x06}, false},
		{"cvtps2pd", []byte{0x0f, 0x5a, 0x06}, false},
		{"paddb mm", []byte{0x0f, 0xfc, 0x06}, false},
	} {
		for _, off := range []uint64{0, 8, 1} {
			v := sseVM(t, true, tc.code)
			r := v.c.GetRegs()
			r.RSI = tScratch + off
			v.c.SetRegs(r)
			vec := v.step()
			want := -1
			if tc.gp && off != 0 {
				want = vecGP
			}
			if vec != want {
				t.Errorf("%s at offset %d: vector %d, want %d", tc.name, off, vec, want)
			}
		}
	}
}

// TestSSEMMXState checks the x87 state switch of MMX instructions: TOP 0
// and every tag valid, the exponent bits of a written register all ones;
// emms empties the tags; cvtpi2ps from memory does not switch.
func TestSSEMMXState(t *testing.T) {
	for _, tc := range []struct {
		name    string
		code    []byte
		switch_ bool
		written int // MMX register written, -1 none
	}{
		{"paddb mm2, mm1", []byte{0x0f, 0xfc, 0xd1}, true, 2},
		{"movd eax, mm3", []byte{0x0f, 0x7e, 0xd8}, true, -1},
		{"movq [rsi], mm3", []byte{0x0f, 0x7f, 0x1e}, true, -1},
		{"pextrw eax, mm1, 2", []byte{0x0f, 0xc5, 0xc1, 0x02}, true, -1},
		{"cvtpi2ps xmm0, mm1", []byte{0x0f, 0x2a, 0xc1}, true, -1},
		{"cvtpi2ps xmm0, [rsi]", []byte{0x0f, 0x2a, 0x06}, false, -1},
		{"cvtpi2pd xmm0, [rsi]", []byte{0x66, 0x0f, 0x2a, 0x06}, false, -1},
		{"cvtps2pi mm4, [rsi]", []byte{0x0f, 0x2d, 0x26}, true, 4},
		{"movdq2q mm5, xmm1", []byte{0xf2, 0x0f, 0xd6, 0xe9}, true, 5},
		{"movq2dq xmm1, mm5", []byte{0xf3, 0x0f, 0xd6, 0xcd}, true, -1},
		{"paddb xmm2, xmm1", []byte{0x66, 0x0f, 0xfc, 0xd1}, false, -1},
	} {
		v := sseVM(t, true, tc.code)
		v.c.fpu.fsw = 5 << 11
		v.c.fpu.ftw = 0x0f
		for i := range v.c.fpu.st {
			v.c.fpu.st[i] = f80{mant: uint64(i) * 0x0101010101010101, se: 0x4000 + uint16(i)}
		}
		if vec := v.step(); vec != -1 {
			t.Fatalf("%s: vector %d", tc.name, vec)
		}
		top, ftw := v.c.fpu.top(), v.c.fpu.ftw
		if tc.switch_ && (top != 0 || ftw != 0xff) || !tc.switch_ && (top != 5 || ftw != 0x0f) {
			t.Errorf("%s: TOP %d, tags %#x (switch to MMX state: %v)", tc.name, top, ftw, tc.switch_)
		}
		for i, r := range v.c.fpu.st {
			want := uint16(0x4000 + i)
			if i == tc.written {
				want = 0xffff
			}
			if r.se != want {
				t.Errorf("%s: st%d exponent %#x, want %#x", tc.name, i, r.se, want)
			}
		}
	}

	v := sseVM(t, true, []byte{0x0f, 0x77}) // emms
	v.c.fpu.fsw, v.c.fpu.ftw = 3<<11, 0xff
	if vec := v.step(); vec != -1 || v.c.fpu.ftw != 0 || v.c.fpu.top() != 0 {
		t.Errorf("emms: vector %d, tags %#x, TOP %d; want tags 0, TOP 0", vec, v.c.fpu.ftw, v.c.fpu.top())
	}
}

// TestSSEMaskMoveAddressSize checks that maskmovdqu stores at DS:EDI with
// a 67 prefix and at DS:RDI without, only the selected bytes.
func TestSSEMaskMoveAddressSize(t *testing.T) {
	for _, a32 := range []bool{false, true} {
		code := []byte{0x66, 0x0f, 0xf7, 0xc1} // maskmovdqu xmm0, xmm1
		if a32 {
			code = append([]byte{0x67}, code...)
		}
		v := sseVM(t, true, code)
		r := v.c.GetRegs()
		r.RDI = tScratch + 0x100
		if a32 {
			r.RDI |= 0xdead << 32 // ignored with 32-bit addressing
		}
		v.c.SetRegs(r)
		v.mem.WritePhys(tScratch+0x100, make([]byte, 16))
		v.c.fpu.xmm[0] = [2]uint64{0x0807060504030201, 0x100f0e0d0c0b0a09}
		v.c.fpu.xmm[1] = [2]uint64{0x80000000000000ff, 0x0000000000008000}
		if vec := v.step(); vec != -1 {
			t.Fatalf("67=%v: vector %d", a32, vec)
		}
		if lo, hi := v.r64(tScratch+0x100), v.r64(tScratch+0x108); lo != 0x0800000000000001 || hi != 0x0a00 {
			t.Errorf("67=%v: memory %#x %#x, want 0x0800000000000001 0xa00", a32, lo, hi)
		}
	}
}

// TestSSEHotPathAllocations checks that the instructions of glibc's
// string loops allocate nothing.
func TestSSEHotPathAllocations(t *testing.T) {
	code := []byte{
		0xf3, 0x0f, 0x6f, 0x06, // movdqu xmm0, [rsi]
		0x66, 0x0f, 0x6f, 0x0e, // movdqa xmm1, [rsi]
		0x66, 0x0f, 0x74, 0xc2, // pcmpeqb xmm0, xmm2
		0x66, 0x0f, 0xda, 0xc1, // pminub xmm0, xmm1
		0x66, 0x0f, 0xef, 0xc9, // pxor xmm1, xmm1
		0x66, 0x0f, 0xeb, 0xc1, // por xmm0, xmm1
		0x66, 0x0f, 0xf8, 0xc1, // psubb xmm0, xmm1
		0x66, 0x0f, 0x70, 0xc0, 0x00, // pshufd xmm0, xmm0, 0
		0x66, 0x0f, 0x60, 0xc0, // punpcklbw xmm0, xmm0
		0x66, 0x0f, 0x6e, 0xc0, // movd xmm0, eax
		0x66, 0x0f, 0xd7, 0xc0, // pmovmskb eax, xmm0
		0xf3, 0x0f, 0x7f, 0x07, // movdqu [rdi], xmm0
	}
	v := sseVM(t, true, code)
	allocs := testing.AllocsPerRun(100, func() {
		r := v.c.GetRegs()
		r.RIP = tCode
		v.c.SetRegs(r)
		for range 12 {
			if vec := v.step(); vec != -1 {
				t.Fatalf("vector %d", vec)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run of the loop body", allocs)
	}
}
