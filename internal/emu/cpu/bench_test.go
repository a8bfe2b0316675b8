package cpu

import "testing"

// BenchmarkGuestLoop runs a tight guest loop (add, store, dec, jnz) and
// reports ns per guest instruction.
func BenchmarkGuestLoop(b *testing.B) {
	v := newVM(b, 64, progLoop)
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
