#include "textflag.h"

// func callNative(ctx uintptr, entry uintptr)
//
// The x87/SSE state of the test is ctx+1024 (FXSAVE64 image); Go's own
// is saved at ctx+1536 for the call and restored after.
//
// RSP is not loaded here: when the test pins it, the code page starts with
// a prologue that saves Go's RSP and loads the test's (see Run).
//
// Frame (hardware SP offsets while no test register is live):
//   0(SP) ctx, 8(SP) entry, 16(SP) R14 (g), 24(SP) R15, 32(SP) BP.
// While the test registers are live the stub addresses only its own stack
// slots through SP, which the code under test leaves alone.
TEXT ·callNative(SB), NOSPLIT, $48-16
	MOVQ ctx+0(FP), AX
	MOVQ entry+8(FP), CX
	MOVQ AX, 0(SP)
	MOVQ CX, 8(SP)
	MOVQ R14, 16(SP)
	MOVQ R15, 24(SP)
	MOVQ BP, 32(SP)

	// Go's x87 and SSE state (MXCSR, X15 and the rest) is kept aside
	// while the test's runs.
	FXSAVE64 1536(AX)
	FXRSTOR64 1024(AX)

	PUSHQ 128(AX)
	POPFQ
	MOVQ 8(AX), CX
	MOVQ 16(AX), DX
	MOVQ 24(AX), BX
	MOVQ 40(AX), BP
	MOVQ 48(AX), SI
	MOVQ 56(AX), DI
	MOVQ 64(AX), R8
	MOVQ 72(AX), R9
	MOVQ 80(AX), R10
	MOVQ 88(AX), R11
	MOVQ 96(AX), R12
	MOVQ 104(AX), R13
	MOVQ 112(AX), R14
	MOVQ 120(AX), R15
	MOVQ 0(AX), AX

	CALL 8(SP)

	// RAX goes to the stack first; then AX can hold ctx (now at 8(SP)).
	PUSHQ AX
	MOVQ 8(SP), AX
	POPQ 0(AX)
	PUSHFQ
	POPQ 128(AX)
	CLD
	MOVQ CX, 8(AX)
	MOVQ DX, 16(AX)
	MOVQ BX, 24(AX)
	MOVQ BP, 40(AX)
	MOVQ SI, 48(AX)
	MOVQ DI, 56(AX)
	MOVQ R8, 64(AX)
	MOVQ R9, 72(AX)
	MOVQ R10, 80(AX)
	MOVQ R11, 88(AX)
	MOVQ R12, 96(AX)
	MOVQ R13, 104(AX)
	MOVQ R14, 112(AX)
	MOVQ R15, 120(AX)
	FXSAVE64 1024(AX)
	FXRSTOR64 1536(AX)

	MOVQ 16(SP), R14
	MOVQ 24(SP), R15
	MOVQ 32(SP), BP
	RET
