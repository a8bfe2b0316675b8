package cpu

import (
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// newRAM maps size bytes of anonymous memory outside the Go heap.
func newRAM(t testing.TB, size int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatalf("mmap %d bytes: %v", size, err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

// testPlatform captures COM1 output and answers everything else like
// NullPlatform, with a TSC on the host clock at 1 GHz.
type testPlatform struct {
	NullPlatform
	mu                sync.Mutex
	out               strings.Builder
	lcr               uint32
	start             time.Time // TSC = tscBase + (now - start) * tscScale
	tscBase, tscScale uint64
	outs              []uint32 // values written to port 0x80
	irqs              []uint8  // interrupts to deliver, in order
	exitIO            bool     // Out to port 0xe9 ends Run
	inIO              bool     // In from port 0xe9 must go to the VMM
	mmio              bool     // MMIO reads go to the VMM, writes end Run
	rx                []byte   // serial input
	apicID            uint32
	onSIPI            func(vector uint8) // a start-up IPI was sent (nil: no LAPIC model)
}

// LAPIC registers the SMP boot test models: the ID, and the ICR to start
// an AP with a start-up IPI.
const (
	lapicID    = 0xfee00020
	lapicICRLo = 0xfee00300
)

func (p *testPlatform) MMIORead(gpa uint64, size int) (uint64, bool) {
	if p.mmio {
		return 0, false
	}
	if p.onSIPI != nil {
		switch gpa {
		case lapicID:
			return uint64(p.apicID) << 24, true
		case lapicICRLo:
			return 0, true // never busy
		}
	}
	return ^uint64(0), true
}

func (p *testPlatform) MMIOWrite(gpa uint64, size int, val uint64) bool {
	if gpa == lapicICRLo && val&0x700 == 0x600 && p.onSIPI != nil {
		p.onSIPI(uint8(val))
	}
	return p.mmio
}

func newTestPlatform() *testPlatform { return &testPlatform{start: time.Now(), tscScale: 1000} }

func (p *testPlatform) In(port uint16, size int) (uint32, bool) {
	switch port {
	case 0x3fd:
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.rx) > 0 {
			return 0x61, true
		}
		return 0x60, true
	case 0x3f8:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.lcr&0x80 == 0 && len(p.rx) > 0 {
			b := p.rx[0]
			p.rx = p.rx[1:]
			return uint32(b), true
		}
		return 0, true
	case 0x3fb:
		return p.lcr, true
	case 0xe9:
		return 0, !p.inIO
	}
	return 0xffffffff, true
}

func (p *testPlatform) Out(port uint16, size int, val uint32) bool {
	switch port {
	case 0x3fb:
		p.lcr = val
	case 0x3f8:
		if p.lcr&0x80 == 0 {
			p.mu.Lock()
			p.out.WriteByte(byte(val))
			p.mu.Unlock()
		}
	case 0x80:
		p.outs = append(p.outs, val)
	case 0xe9:
		return p.exitIO
	}
	return false
}

// feed queues serial input and raises the guest's COM1 interrupt (IOAPIC
// pin 4, vector 0x34 in the test guest).
func (p *testPlatform) feed(s string) {
	p.mu.Lock()
	p.rx = append(p.rx, s...)
	p.mu.Unlock()
	p.irqs = append(p.irqs, 0x34)
}

func (p *testPlatform) PendingInterrupt() (uint8, bool) {
	if len(p.irqs) == 0 {
		return 0, false
	}
	v := p.irqs[0]
	p.irqs = p.irqs[1:]
	return v, true
}

// TSC runs by default 1000 times faster than the host clock so that the
// guest's calibration timeouts (50 s of TSC with a dead APIC timer) pass
// quickly; setTSCScale changes the rate, keeping the TSC monotonic.
func (p *testPlatform) TSC() uint64 {
	return p.tscBase + uint64(time.Since(p.start).Nanoseconds())*p.tscScale
}

func (p *testPlatform) setTSCScale(scale uint64) {
	p.tscBase, p.start, p.tscScale = p.TSC(), time.Now(), scale
}

func (p *testPlatform) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Flat segments.
func flatCode32() hv.Segment {
	return hv.Segment{Limit: 0xffffffff, Selector: 0x08, Type: 0xb, Present: 1, DB: 1, S: 1, G: 1}
}
func flatData32() hv.Segment {
	return hv.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 0x3, Present: 1, DB: 1, S: 1, G: 1}
}

func (p *testPlatform) ReadMSR(idx uint32) (uint64, bool) {
	switch idx {
	case 0x1b:
		return 0xfee00900, true
	case 0x10:
		return p.TSC(), true
	}
	return 0, false
}

func (p *testPlatform) WriteMSR(idx uint32, val uint64) bool { return idx == 0x1b || idx == 0x10 }
