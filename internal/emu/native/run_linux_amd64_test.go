package native

import (
	"encoding/binary"
	"testing"
)

func runOrFail(t *testing.T, code []byte, st *State) {
	t.Helper()
	if !Supported() {
		t.Skip("native execution not supported")
	}
	if err := Run(code, st); err != nil {
		t.Fatal(err)
	}
}

func TestRunAdd(t *testing.T) {
	var st State
	st.Regs[RAX] = 0xffffffffffffffff
	st.Regs[RBX] = 1
	st.Regs[R15] = 0x1234
	runOrFail(t, []byte{0x48, 0x01, 0xd8}, &st) // add rax, rbx
	if st.Regs[RAX] != 0 || st.Regs[RBX] != 1 || st.Regs[R15] != 0x1234 {
		t.Fatalf("add: %v", &st)
	}
	if want := uint64(FlagCF | FlagPF | FlagAF | FlagZF); st.RFLAGS != want {
		t.Fatalf("add flags %s, want %s", FlagString(st.RFLAGS), FlagString(want))
	}
}

func TestRunAdcCarryIn(t *testing.T) {
	var st State
	st.Regs[RCX] = 0x7fffffff
	st.Regs[RDX] = 0
	st.Regs[R9] = 0xdeadbeef00000000
	st.RFLAGS = FlagCF | FlagDF
	runOrFail(t, []byte{0x11, 0xd1}, &st) // adc ecx, edx
	if st.Regs[RCX] != 0x80000000 {
		t.Fatalf("adc: rcx=%#x", st.Regs[RCX])
	}
	// 0x7fffffff+0+1: OF, SF, AF, PF (0x00 low byte: even parity); DF kept.
	if want := uint64(FlagOF | FlagSF | FlagAF | FlagPF | FlagDF); st.RFLAGS != want {
		t.Fatalf("adc flags %s, want %s", FlagString(st.RFLAGS), FlagString(want))
	}
	// r9 with REX: adc r9, r9 with CF=0 doubles it.
	st.RFLAGS = 0
	runOrFail(t, []byte{0x4d, 0x11, 0xc9}, &st)
	if st.Regs[R9] != 0xbd5b7dde00000000 || st.RFLAGS&FlagCF == 0 {
		t.Fatalf("adc r9: %#x %s", st.Regs[R9], FlagString(st.RFLAGS))
	}
}

func TestRunShlCL(t *testing.T) {
	var st State
	st.Regs[RAX] = 0x8000000000000001
	st.Regs[RCX] = 0x41                         // masked to 1
	runOrFail(t, []byte{0x48, 0xd3, 0xe0}, &st) // shl rax, cl
	if st.Regs[RAX] != 2 || st.RFLAGS&(FlagCF|FlagOF) != FlagCF|FlagOF {
		t.Fatalf("shl: %#x %s", st.Regs[RAX], FlagString(st.RFLAGS))
	}
	st.Regs[RAX] = 0x1234
	st.Regs[RCX] = 4
	runOrFail(t, []byte{0x66, 0xd3, 0xe0}, &st) // shl ax, cl
	if st.Regs[RAX] != 0x2340 || st.RFLAGS&FlagCF == 0 {
		t.Fatalf("shl ax: %#x %s", st.Regs[RAX], FlagString(st.RFLAGS))
	}
}

func TestRunImulMem(t *testing.T) {
	var st State
	st.Regs[RSI] = MemBase() + 8
	st.Regs[RDX] = 0xffffffff_fffffffd // -3
	copy(st.Mem[8:], []byte{7, 0, 0, 0, 0, 0, 0, 0})
	runOrFail(t, []byte{0x48, 0x0f, 0xaf, 0x16}, &st) // imul rdx, [rsi]
	if int64(st.Regs[RDX]) != -21 || st.RFLAGS&(FlagCF|FlagOF) != 0 {
		t.Fatalf("imul: %#x %s", st.Regs[RDX], FlagString(st.RFLAGS))
	}
	if st.Regs[RSI] != MemBase()+8 {
		t.Fatalf("rsi changed")
	}
}

func TestRunDiv(t *testing.T) {
	var st State
	st.Regs[RDX] = 1
	st.Regs[RAX] = 5
	st.Regs[R11] = 3
	runOrFail(t, []byte{0x49, 0xf7, 0xf3}, &st) // div r11: (2^64+5)/3
	if st.Regs[RAX] != 0x5555555555555557 || st.Regs[RDX] != 0 {
		t.Fatalf("div: %v", &st)
	}
}

func TestRunMemStore(t *testing.T) {
	var st State
	st.Regs[RDI] = MemBase()
	st.Regs[RAX] = 0x11
	st.Regs[RCX] = 4
	st.RFLAGS = FlagDF
	runOrFail(t, []byte{0x48, 0x83, 0xc7, 0x10, 0xf3, 0xaa}, &st) // add rdi,16; rep stosb (down)
	if st.Regs[RDI] != MemBase()+12 || st.Regs[RCX] != 0 || st.Mem[16] != 0x11 || st.Mem[13] != 0x11 || st.Mem[12] != 0 {
		t.Fatalf("rep stosb: %v %x", &st, st.Mem[:20])
	}
	if st.RFLAGS&FlagDF == 0 {
		t.Fatalf("DF lost")
	}
}

func TestRunPinnedRSP(t *testing.T) {
	var st State
	st.Regs[RSP] = MemBase() + 128
	st.Regs[RAX] = 0x1122334455667788
	st.RFLAGS = FlagCF
	// push rax; push 5; pop rcx; pushfq
	runOrFail(t, []byte{0x50, 0x6a, 0x05, 0x59, 0x9c}, &st)
	if st.Regs[RSP] != MemBase()+112 || st.Regs[RCX] != 5 {
		t.Fatalf("rsp %#x (want %#x) rcx %#x", st.Regs[RSP], MemBase()+112, st.Regs[RCX])
	}
	if got := binary.LittleEndian.Uint64(st.Mem[120:]); got != 0x1122334455667788 {
		t.Fatalf("pushed %#x", got)
	}
	// pushfq in user mode: bit 1, IF and the flags we set.
	if got := binary.LittleEndian.Uint64(st.Mem[112:]); got != 0x203 {
		t.Fatalf("pushfq image %#x, want 0x203", got)
	}
}

// TestRunFPU: the SSE and x87 state of a State goes in and comes out
// (FXSAVE64 image), and Go's own (MXCSR) is back after the call.
func TestRunFPU(t *testing.T) {
	st := State{FPU: DefaultFPU()}
	binary.LittleEndian.PutUint64(st.FPU[160:], 40) // XMM0 low
	binary.LittleEndian.PutUint64(st.FPU[176:], 2)  // XMM1 low
	st.FPU[24] = 0x80 | 0x20                        // MXCSR 0x1fa0: PE already set
	// addsd xmm0, xmm1 (40+2, bit patterns of small denormals: exact);
	// fld1; movq rax, xmm0
	runOrFail(t, []byte{0xf2, 0x0f, 0x58, 0xc1, 0xd9, 0xe8, 0x66, 0x48, 0x0f, 0x7e, 0xc0}, &st)
	if st.Regs[RAX] != 42 || binary.LittleEndian.Uint64(st.FPU[160:]) != 42 {
		t.Fatalf("addsd: rax=%d xmm0=%d", st.Regs[RAX], binary.LittleEndian.Uint64(st.FPU[160:]))
	}
	if fsw := binary.LittleEndian.Uint16(st.FPU[2:]); fsw>>11&7 != 7 || st.FPU[4] != 0x80 {
		t.Fatalf("fld1: fsw %#x abridged tag %#x, want TOP 7 and tag of R7", fsw, st.FPU[4])
	}
	if mx := binary.LittleEndian.Uint32(st.FPU[24:]); mx != 0x1fa2 && mx != 0x1fa0 {
		t.Fatalf("mxcsr %#x", mx) // a denormal operand may set DE (bit 1)
	}
	var plain State
	runOrFail(t, []byte{0x90}, &plain)
	if plain.FPU != nil {
		t.Fatal("FPU image appeared")
	}
}
