#include "textflag.h"

// func cas128(p unsafe.Pointer, oldLo, oldHi, newLo, newHi uint64) (ok bool, curLo, curHi uint64)
TEXT ·cas128(SB), NOSPLIT, $0-64
	MOVQ p+0(FP), DI
	MOVQ oldLo+8(FP), AX
	MOVQ oldHi+16(FP), DX
	MOVQ newLo+24(FP), BX
	MOVQ newHi+32(FP), CX
	LOCK
	CMPXCHG16B (DI)
	SETEQ ok+40(FP)
	MOVQ AX, curLo+48(FP)
	MOVQ DX, curHi+56(FP)
	RET
