package cpu

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// completePlatform sends port 0x11 to the VMM, exits on every OUT, and
// raises interrupt 0x20 once the IN has exited.
type completePlatform struct {
	NullPlatform
	inExited bool
	irqDone  bool
}

func (p *completePlatform) In(port uint16, size int) (uint32, bool) {
	if port == 0x11 {
		p.inExited = true
		return 0, false
	}
	return 0xff, true
}

func (p *completePlatform) Out(port uint16, size int, val uint32) bool { return true }

func (p *completePlatform) PendingInterrupt() (uint8, bool) {
	if p.inExited && !p.irqDone {
		p.irqDone = true
		return 0x20, true
	}
	return 0, false
}

// TestINCompletesBeforeInterrupt: an IN the VMM answers completes with
// that answer before an interrupt that arrived meanwhile is delivered, as
// KVM completes a pending I/O instruction before injecting; the handler's
// own IN does not take it.
func TestINCompletesBeforeInterrupt(t *testing.T) {
	ram, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(ram)
	mem := NewMemory()
	mem.AddRAM(0, ram)
	// IVT entry 0x20 -> 0000:2000
	ram[0x80], ram[0x81], ram[0x82], ram[0x83] = 0x00, 0x20, 0x00, 0x00
	copy(ram[0x1000:], []byte{
		0xe4, 0x11, // in al, 0x11
		0xe6, 0x12, // out 0x12, al
		0xf4, // hlt
	})
	copy(ram[0x2000:], []byte{
		0x50,       // push ax
		0xe4, 0x55, // in al, 0x55 (the platform answers 0xff)
		0xe6, 0x56, // out 0x56, al
		0x58, // pop ax
		0xcf, // iret
	})
	p := &completePlatform{}
	c := New(0, mem, p)
	s := c.GetSregs2()
	s.CS.Base, s.CS.Selector = 0, 0
	if err := c.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	c.SetRegs(hv.Regs{RIP: 0x1000, RSP: 0x8000, RFLAGS: 0x202})
	if ex := c.Run(100); ex.Kind != ExitIO || ex.Write || ex.Port != 0x11 {
		t.Fatalf("first exit %+v, want the IN from 0x11", ex)
	}
	c.CompleteIn(0x77)
	// The interrupt may come before or after out 0x12, as on hardware,
	// but the answer belongs to the IN that exited, not to the handler's.
	var outs []Exit
	for len(outs) < 2 {
		ex := c.Run(100)
		if ex.Kind != ExitIO || !ex.Write {
			t.Fatalf("exit %+v after %d OUTs; want only OUTs (the IN from 0x11 must not exit again)", ex, len(outs))
		}
		outs = append(outs, ex)
	}
	for _, ex := range outs {
		switch {
		case ex.Port == 0x12 && ex.Data != 0x77:
			t.Errorf("the IN completed with %#x, want the VMM's answer 0x77", ex.Data)
		case ex.Port == 0x56 && ex.Data != 0xff:
			t.Errorf("the handler's IN read %#x, want its own 0xff (it took the other IN's answer)", ex.Data)
		case ex.Port != 0x12 && ex.Port != 0x56:
			t.Errorf("unexpected out %+v", ex)
		}
	}
}
