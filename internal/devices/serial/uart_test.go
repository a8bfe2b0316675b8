package serial

import (
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/godwit-vmm/godwit/internal/devices"
	"github.com/godwit-vmm/godwit/internal/testenv"
)

type counter struct{ n atomic.Int64 }

func (c *counter) Trigger() error { c.n.Add(1); return nil }

func newTestUART(t *testing.T) (*UART, *counter, *testenv.SyncBuffer) {
	t.Helper()
	irq := &counter{}
	out := &testenv.SyncBuffer{}
	u := New(COM1Base, irq, out)
	t.Cleanup(func() { u.Close() })
	return u, irq, out
}

func rd(u *UART, off uint16) uint8 {
	b := []byte{0}
	u.ReadPort(COM1Base+off, b)
	return b[0]
}

func wr(u *UART, off uint16, v uint8) { u.WritePort(COM1Base+off, []byte{v}) }

func TestRegisters(t *testing.T) {
	tests := []struct {
		name string
		run  func(u *UART) uint8
		want uint8
	}{
		{"LSR idle", func(u *UART) uint8 { return rd(u, regLSR) }, lsrTHRE | lsrTEMT},
		{"IIR idle", func(u *UART) uint8 { return rd(u, regIIR) }, iirNone},
		{"IIR with FIFO", func(u *UART) uint8 { wr(u, regIIR, 0xC7); return rd(u, regIIR) }, iirNone | iirFIFOBits},
		{"DLAB DLL", func(u *UART) uint8 { wr(u, regLCR, 0x83); wr(u, regData, 0x01); return rd(u, regData) }, 0x01},
		{"DLAB DLM", func(u *UART) uint8 { wr(u, regLCR, 0x83); wr(u, regIER, 0x02); return rd(u, regIER) }, 0x02},
		{"DLAB does not touch IER", func(u *UART) uint8 {
			wr(u, regLCR, 0x83)
			wr(u, regIER, 0x0F)
			wr(u, regLCR, 0x03)
			return rd(u, regIER)
		}, 0},
		{"IER keeps 4 bits", func(u *UART) uint8 { wr(u, regIER, 0xFF); return rd(u, regIER) }, 0x0F},
		{"SCR", func(u *UART) uint8 { wr(u, regSCR, 0x5A); return rd(u, regSCR) }, 0x5A},
		{"MSR idle", func(u *UART) uint8 { return rd(u, regMSR) }, msrIdle},
		{"loopback MSR", func(u *UART) uint8 {
			wr(u, regMCR, mcrLoop|mcrOUT2|mcrRTS)
			return rd(u, regMSR) & 0xF0
		}, msrDCD | msrCTS},
		{"loopback echo", func(u *UART) uint8 {
			wr(u, regMCR, mcrLoop)
			wr(u, regData, 'x')
			return rd(u, regData)
		}, 'x'},
		{"LSR after input", func(u *UART) uint8 { u.Input([]byte("a")); return rd(u, regLSR) }, lsrDR | lsrTHRE | lsrTEMT},
		{"LSR after input read", func(u *UART) uint8 { u.Input([]byte("a")); rd(u, regData); return rd(u, regLSR) }, lsrTHRE | lsrTEMT},
		{"THRE on ETBEI enable", func(u *UART) uint8 { wr(u, regIER, ierTHRE); return rd(u, regIIR) }, iirTHRE},
		{"IIR read clears THRE", func(u *UART) uint8 { wr(u, regIER, ierTHRE); rd(u, regIIR); return rd(u, regIIR) }, iirNone},
		{"THR write re-arms THRE", func(u *UART) uint8 {
			wr(u, regIER, ierTHRE)
			rd(u, regIIR)
			wr(u, regData, 'a')
			return rd(u, regIIR)
		}, iirTHRE},
		{"IIR priority RDA over THRE", func(u *UART) uint8 {
			wr(u, regIER, ierTHRE|ierRDA)
			u.Input([]byte("z"))
			return rd(u, regIIR)
		}, iirRDA},
		{"THRE still pending after RDA served", func(u *UART) uint8 {
			wr(u, regIER, ierTHRE|ierRDA)
			u.Input([]byte("z"))
			rd(u, regIIR) // RDA: must not clear THRE
			rd(u, regData)
			return rd(u, regIIR)
		}, iirTHRE},
		{"RLS over RDA", func(u *UART) uint8 {
			wr(u, regIER, ierRLS|ierRDA)
			u.Input(make([]byte, RXFIFOCap+1))
			return rd(u, regIIR)
		}, iirRLS},
		{"overrun in LSR", func(u *UART) uint8 { u.Input(make([]byte, RXFIFOCap+1)); return rd(u, regLSR) & lsrOE }, lsrOE},
		{"FCR clears RX", func(u *UART) uint8 {
			u.Input([]byte("abc"))
			wr(u, regIIR, fcrEnable|fcrClearRX)
			return rd(u, regLSR) & lsrDR
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, _, _ := newTestUART(t)
			if got := tc.run(u); got != tc.want {
				t.Errorf("got %#02x, want %#02x", got, tc.want)
			}
		})
	}
}

func TestOutput(t *testing.T) {
	u, _, out := newTestUART(t)
	for _, c := range []byte("hello\n") {
		wr(u, regData, c)
	}
	u.Flush()
	if got := out.String(); got != "hello\n" {
		t.Errorf("output %q, want %q", got, "hello\n")
	}
}

func TestInterrupts(t *testing.T) {
	u, irq, _ := newTestUART(t)
	u.Input([]byte("a"))
	if n := irq.n.Load(); n != 0 {
		t.Fatalf("interrupt with RX disabled: %d", n)
	}
	wr(u, regIER, ierRDA)
	if n := irq.n.Load(); n != 1 {
		t.Fatalf("enabling RX with data pending: %d interrupts, want 1", n)
	}
	rd(u, regData)
	u.Input([]byte("bc"))
	if n := irq.n.Load(); n != 2 {
		t.Fatalf("input with RX enabled: %d interrupts, want 2", n)
	}
	if got := rd(u, regIIR); got != iirRDA {
		t.Fatalf("IIR %#x, want RDA", got)
	}
	wr(u, regIER, ierRDA|ierTHRE)
	if n := irq.n.Load(); n != 3 {
		t.Fatalf("enabling ETBEI: %d interrupts, want 3", n)
	}
	rd(u, regIIR) // RDA
	rd(u, regData)
	rd(u, regData)
	if got := rd(u, regIIR); got != iirTHRE {
		t.Fatalf("IIR %#x, want THRE", got)
	}
	wr(u, regData, 'x')
	if n := irq.n.Load(); n != 4 {
		t.Fatalf("THR write with ETBEI: %d interrupts, want 4", n)
	}
}

func TestSaveRestore(t *testing.T) {
	u, _, _ := newTestUART(t)
	wr(u, regLCR, 0x83)
	wr(u, regData, 0x01)
	wr(u, regLCR, 0x03)
	wr(u, regIER, ierRDA|ierTHRE)
	wr(u, regSCR, 0x42)
	wr(u, regIIR, 0xC1)
	u.Input([]byte("pending"))
	s := u.Save()

	v, irq, _ := newTestUART(t)
	if err := v.Restore(s); err != nil {
		t.Fatal(err)
	}
	if irq.n.Load() != 1 {
		t.Errorf("restore with pending interrupt raised %d interrupts, want 1", irq.n.Load())
	}
	if got := v.Save(); !equalState(got, s) {
		t.Errorf("round trip: got %+v, want %+v", got, s)
	}
	var got []byte
	for rd(v, regLSR)&lsrDR != 0 {
		got = append(got, rd(v, regData))
	}
	if string(got) != "pending" {
		t.Errorf("restored input %q", got)
	}
	s.Version = 99
	if err := v.Restore(s); err == nil {
		t.Error("restore accepted version 99")
	}
}

func equalState(a, b State) bool {
	return reflect.DeepEqual(a, b)
}

func TestConcurrent(t *testing.T) {
	u, _, _ := newTestUART(t)
	wr(u, regIER, ierRDA|ierTHRE)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			u.Input([]byte{byte(i)})
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			rd(u, regIIR)
			rd(u, regData)
			wr(u, regData, 'x')
		}
	}()
	wg.Wait()
	var _ devices.PortIO = u
}
