package cpu

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// BenchmarkGuestLoop runs a tight guest loop (add, store, dec, jnz) and
// reports ns per guest instruction.
func BenchmarkGuestLoop(b *testing.B) { benchLoop(b, false) }

// BenchmarkGuestLoopIF is the same loop with interrupts enabled, so the
// CPU polls the platform for interrupts as it runs.
func BenchmarkGuestLoopIF(b *testing.B) { benchLoop(b, true) }

func benchLoop(b *testing.B, irqs bool) {
	v := newVM(b, 64, progLoop)
	if irqs {
		r := v.c.GetRegs()
		r.RFLAGS |= flagIF
		v.c.SetRegs(r)
	}
	const chunk = 1 << 20
	b.ResetTimer()
	n := 0
	for n < b.N {
		ex := v.c.Run(chunk)
		switch ex.Kind {
		case ExitBudget:
			n += chunk
		case ExitHLT:
			// restart the loop
			r := v.c.GetRegs()
			r.RIP = tCode
			v.c.SetRegs(r)
		default:
			b.Fatalf("exit %+v", ex)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/insn")
}

// BenchmarkGuestDirtyRate runs the test guest's flat-out memory workload
// (W 64 64 0: two stores per 4 KiB page, page after page) with the dirty
// log on, and reports guest pages dirtied per second of host time (the
// guest's own counter, from its heartbeat lines).
func BenchmarkGuestDirtyRate(b *testing.B) {
	c, p := bootGuest(b)
	c.mem.StartDirtyLog()
	p.feed("W 64 64 0\n")
	for !strings.Contains(p.output(), "ACK W") {
		c.Run(1_000_000)
	}
	dirtied := func() uint64 {
		p.irqs = append(p.irqs, 0x20) // a heartbeat line
		c.Run(20_000)
		out := p.output()
		var seq, ts, n uint64
		fmt.Sscanf(out[strings.LastIndex(out, "HB "):], "HB %d %d %d", &seq, &ts, &n)
		return n
	}
	d0 := dirtied()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		c.Run(1_000_000)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(dirtied()-d0)/elapsed.Seconds(), "pages/s")
}

// progMPI is the inner loop of Linux 6.1's mpihelp_submul_1 (Debian's
// build, generic C: 32-bit half products with imul), the multi-precision
// arithmetic that dominates a Linux boot's crypto self-tests on the
// software CPU; followed by hlt. R8 counts up to 0, RBX is the source
// limbs, R11 the destination, R9/R10 the multiplier's halves.
var progMPI = []byte{
	0x49, 0x63, 0xC0, 0x4C, 0x29, 0xE0, 0x48, 0x8B, 0x0C, 0xC3, 0x48, 0x8D, 0x3C, 0xC5, 0x00, 0x00,
	0x00, 0x00, 0x48, 0x89, 0xCA, 0x89, 0xC9, 0x48, 0xC1, 0xEA, 0x20, 0x48, 0x89, 0xC8, 0x49, 0x0F,
	0xAF, 0xC1, 0x49, 0x89, 0xD5, 0x4D, 0x0F, 0xAF, 0xE9, 0x49, 0x0F, 0xAF, 0xCA, 0x49, 0x0F, 0xAF,
	0xD2, 0x49, 0x89, 0xC6, 0x89, 0xC0, 0x49, 0xC1, 0xEE, 0x20, 0x4C, 0x01, 0xE9, 0x4C, 0x01, 0xF1,
	0x49, 0x89, 0xD6, 0x48, 0x01, 0xEA, 0x4C, 0x39, 0xE9, 0x49, 0x89, 0xCD, 0x49, 0x0F, 0x43, 0xD6,
	0x48, 0x01, 0xF0, 0x49, 0xC1, 0xE5, 0x20, 0x4C, 0x01, 0xE8, 0x48, 0x39, 0xF0, 0x40, 0x0F, 0x92,
	0xC6, 0x4C, 0x01, 0xDF, 0x48, 0xC1, 0xE9, 0x20, 0x4C, 0x8B, 0x2F, 0x40, 0x0F, 0xB6, 0xF6, 0x49,
	0x29, 0xC5, 0x48, 0x11, 0xCE, 0x4C, 0x89, 0x2F, 0x48, 0x01, 0xD6, 0x41, 0x83, 0xC0, 0x01, 0x0F,
	0x85, 0x7B, 0xFF, 0xFF, 0xFF,
	0xF4, // hlt
}

// BenchmarkGuestMPI runs progMPI over 4096 limbs per call, in long mode
// with paging, and reports ns per guest instruction (38 per limb).
func BenchmarkGuestMPI(b *testing.B) {
	const limbs = 4096
	v := newVM(b, 64, progMPI)
	for i := uint64(0); i < limbs; i++ {
		v.w64(0x100000+i*8, i*0x9E3779B97F4A7C15)
	}
	b.ResetTimer()
	n := 0
	for n < b.N {
		v.c.SetRegs(hv.Regs{RIP: tCode, RSP: tStack, RFLAGS: 2, R8: -limbs & 0xFFFFFFFF, R12: -limbs & 0xFFFFFFFFFFFFFFFF,
			RBX: 0x100000, R11: 0x200000, R9: 0x89ABCDEF, R10: 0x01234567, RBP: 1 << 32})
		ex := v.c.Run(1 << 30)
		if ex.Kind != ExitHLT {
			b.Fatalf("exit %+v", ex)
		}
		n += limbs * 38
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/insn")
}
