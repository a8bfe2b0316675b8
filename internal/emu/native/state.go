package native

import (
	"fmt"
	"strings"
)

// MemSize is the size of the data buffer tested instructions may access.
const MemSize = 256

// Register numbers as x86 encodes them.
const (
	RAX = iota
	RCX
	RDX
	RBX
	RSP
	RBP
	RSI
	RDI
	R8
	R9
	R10
	R11
	R12
	R13
	R14
	R15
)

// RFLAGS bits.
const (
	FlagCF = 1 << 0
	FlagPF = 1 << 2
	FlagAF = 1 << 4
	FlagZF = 1 << 6
	FlagSF = 1 << 7
	FlagDF = 1 << 10
	FlagOF = 1 << 11

	// ArithFlags are the six status flags.
	ArithFlags = FlagCF | FlagPF | FlagAF | FlagZF | FlagSF | FlagOF
	// StateFlags are the flags Run loads and stores (bit 1 always reads 1).
	StateFlags = ArithFlags | FlagDF
)

var regNames = [16]string{"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

// RegName returns the 64-bit name of register number r.
func RegName(r int) string { return regNames[r&15] }

// State is the machine state Run loads before and stores after the code.
// Regs[RSP] is ignored. Only StateFlags of RFLAGS are loaded; on return
// RFLAGS holds the flags the code left (masked to StateFlags).
type State struct {
	Regs   [16]uint64
	RFLAGS uint64
	Mem    [MemSize]byte
	// FPU, if not nil, is the x87/MMX/SSE state as an FXSAVE64 image
	// (512 bytes): Run loads it with FXRSTOR64 before the code and stores
	// it back with FXSAVE64 after. If nil the code runs with DefaultFPU
	// and its x87/SSE results are not kept.
	FPU *[512]byte
}

// DefaultFPU returns the FXSAVE image of the state after FNINIT with the
// SSE default MXCSR (0x1f80: every exception masked, round to nearest)
// and all registers zero.
func DefaultFPU() *[512]byte {
	var b [512]byte
	b[0], b[1] = 0x7f, 0x03   // FCW 0x037f
	b[24], b[25] = 0x80, 0x1f // MXCSR 0x1f80
	return &b
}

// FlagString formats the StateFlags bits of f, e.g. "CF|ZF".
func FlagString(f uint64) string {
	var s []string
	for _, b := range []struct {
		bit  uint64
		name string
	}{{FlagCF, "CF"}, {FlagPF, "PF"}, {FlagAF, "AF"}, {FlagZF, "ZF"}, {FlagSF, "SF"}, {FlagDF, "DF"}, {FlagOF, "OF"}} {
		if f&b.bit != 0 {
			s = append(s, b.name)
		}
	}
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, "|")
}

// String formats the registers and flags (not Mem).
func (s *State) String() string {
	var b strings.Builder
	for r := 0; r < 16; r++ {
		if r == RSP {
			continue
		}
		fmt.Fprintf(&b, "%s=%#x ", regNames[r], s.Regs[r])
	}
	fmt.Fprintf(&b, "flags=%s", FlagString(s.RFLAGS&StateFlags))
	return b.String()
}
