package cpu

import (
	"strings"
	"testing"
)

// FuzzDecode runs random bytes as code in 16-, 32- and 64-bit mode: every
// sequence must execute or raise an exception; none may panic or hang.
func FuzzDecode(f *testing.F) {
	seeds := [][]byte{
		{0x66},                   // lone prefix
		{0xf0, 0x90},             // lock nop: #UD
		{0xf0, 0x01, 0xc0},       // lock add reg, reg: #UD
		{0x0f, 0x0b},             // ud2
		{0x48, 0x0f, 0xc7, 0x0e}, // cmpxchg16b (%rsi)
		{0xf3, 0x0f, 0x1e, 0xfa}, // endbr64
		{0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x90}, // 15 bytes
		{0xf3, 0x48, 0xab},             // rep stosq
		{0xcd, 0x80},                   // int 0x80
		{0x8e, 0xd0},                   // mov %eax, %ss
		{0xd9, 0xe8},                   // fld1: #UD (no x87)
		{0x0f, 0x28, 0xc1},             // movaps: #UD
		{0x62, 0xf1, 0x7c, 0x48, 0x58}, // EVEX / bound
		{0xc4, 0xe2, 0x79, 0x18, 0x00}, // VEX / les
		{0xf7, 0xf0},                   // div %eax
		{0x0f, 0x01, 0xf8},             // swapgs
		{0xea, 0, 0, 0, 0, 0x08, 0},    // ljmp
	}
	for _, s := range seeds {
		for m := byte(0); m < 3; m++ {
			f.Add(m, s)
		}
	}
	f.Fuzz(func(t *testing.T, mode byte, code []byte) {
		if len(code) > 64 {
			code = code[:64]
		}
		bits := [3]int{16, 32, 64}[mode%3]
		v := newVM(t, bits, code)
		v.c.TrapExceptions = true
		for i := 0; i < 4; i++ {
			ex := v.c.Step()
			switch ex.Kind {
			case ExitInternalError:
				if strings.HasPrefix(ex.Reason, "bug:") {
					t.Fatalf("mode %d code % x: %s", bits, code, ex.Reason)
				}
				return
			case ExitNone, ExitHLT, ExitIO, ExitMMIO:
			default:
				return
			}
		}
	})
}
