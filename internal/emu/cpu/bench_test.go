package cpu

import (
	"fmt"
	"strings"
	"testing"
	"time"
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
