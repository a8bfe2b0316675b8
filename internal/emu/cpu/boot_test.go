package cpu

import (
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// loadELF copies the PT_LOAD segments of an ELF file into mem at their
// physical addresses and returns the entry point.
func loadELF(t testing.TB, mem *Memory, path string) uint64 {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Skipf("guest ELF %s not available (run make -C guest): %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		data := make([]byte, p.Memsz)
		if _, err := io.ReadFull(p.Open(), data[:p.Filesz]); err != nil {
			t.Fatal(err)
		}
		if !mem.WritePhys(p.Paddr, data) {
			t.Fatalf("segment at %#x does not fit in RAM", p.Paddr)
		}
	}
	return f.Entry
}

// writeMultibootInfo writes a minimal multiboot v1 info block at 0x6000:
// memory sizes, command line and a memory map.
func writeMultibootInfo(mem *Memory, ramSize uint64, cmdline string) uint32 {
	le := binary.LittleEndian
	mem.WritePhys(0x7000, append([]byte(cmdline), 0))
	var mm []byte
	add := func(addr, size uint64, typ uint32) {
		e := make([]byte, 24)
		le.PutUint32(e[0:], 20)
		le.PutUint64(e[4:], addr)
		le.PutUint64(e[12:], size)
		le.PutUint32(e[20:], typ)
		mm = append(mm, e...)
	}
	add(0, 0x9fc00, 1)
	add(0x100000, ramSize-0x100000, 1)
	mem.WritePhys(0x6100, mm)
	info := make([]byte, 88)
	le.PutUint32(info[0:], 1|4|64)
	le.PutUint32(info[4:], 0x9fc00/1024)
	le.PutUint32(info[8:], uint32((ramSize-0x100000)/1024))
	le.PutUint32(info[16:], 0x7000)
	le.PutUint32(info[44:], uint32(len(mm)))
	le.PutUint32(info[48:], 0x6100)
	mem.WritePhys(0x6000, info)
	return 0x6000
}

// bootGuest boots the project's test guest (guest/build/guest.elf) as a
// multiboot kernel until it prints READY on COM1.
func bootGuest(t testing.TB) (*CPU, *testPlatform) {
	_, c, p := loadGuest(t, "console=ttyS0")
	runGuestUntil(t, c, p, "READY\n", 50_000_000)
	out := p.output()
	for _, w := range []string{"GODWIT-GUEST v1", "MEM ram 0x100000-", "CLOCK ", "READY"} {
		if !strings.Contains(out, w) {
			t.Fatalf("%q not printed; output:\n%s", w, out)
		}
	}
	return c, p
}

// loadGuest loads the test guest and sets up its BSP for multiboot entry.
func loadGuest(t testing.TB, cmdline string) (*Memory, *CPU, *testPlatform) {
	path := filepath.Join("..", "..", "..", "guest", "build", "guest.elf")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s missing (run make -C guest)", path)
	}
	const ramSize = 256 << 20
	mem := NewMemory()
	mem.AddRAM(0, newRAM(t, ramSize))
	entry := loadELF(t, mem, path)
	info := writeMultibootInfo(mem, ramSize, cmdline)
	// Boot GDT at 0x500: null, null, code 0x10, data 0x18.
	gdt := make([]byte, 40)
	binary.LittleEndian.PutUint64(gdt[16:], 0x00cf9b000000ffff)
	binary.LittleEndian.PutUint64(gdt[24:], 0x00cf93000000ffff)
	mem.WritePhys(0x500, gdt)

	p := newTestPlatform()
	c := New(0, mem, p)
	code := flatCode32()
	code.Selector = 0x10
	data := flatData32()
	data.Selector = 0x18
	s := c.GetSregs2()
	s.CS, s.DS, s.ES, s.FS, s.GS, s.SS = code, data, data, data, data, data
	s.TR = hv.Segment{Limit: 0x67, Selector: 0x20, Type: 0xb, Present: 1}
	s.LDT = hv.Segment{Type: 2, Present: 1, Unusable: 1}
	s.GDT = hv.DTable{Base: 0x500, Limit: 39}
	s.IDT = hv.DTable{}
	s.CR0 = cr0PE | cr0ET
	if err := c.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	c.SetRegs(hv.Regs{RAX: 0x2BADB002, RBX: uint64(info), RIP: entry, RFLAGS: 2})
	return mem, c, p
}

// runGuestUntil runs the guest until its output contains want; a hlt with
// nothing pending ends the wait.
func runGuestUntil(t testing.TB, c *CPU, p *testPlatform, want string, budget int) {
	t.Helper()
	for n := 0; n < budget; n += 1_000_000 {
		ex := c.Run(1_000_000)
		if strings.Contains(p.output(), want) {
			return
		}
		switch ex.Kind {
		case ExitBudget, ExitKicked:
			continue
		case ExitHLT:
			if len(p.irqs) > 0 {
				continue
			}
			t.Fatalf("guest halted before printing %q; rip %#x; output:\n%s", want, c.GetRegs().RIP, p.output())
		default:
			t.Fatalf("exit %v at rip %#x: %+v\noutput so far:\n%s", ex.Kind, c.GetRegs().RIP, ex, p.output())
		}
	}
	t.Fatalf("%q not printed within %d instructions; output:\n%s", want, budget, p.output())
}

// TestBootGuest boots the test guest and checks its boot banner on COM1.
func TestBootGuest(t *testing.T) {
	_, p := bootGuest(t)
	t.Logf("guest output:\n%s", p.output())
}

// TestGuestWorkloadVerify drives the guest's memory workload over its
// serial console (W, then V) and checks the guest verifies every page it
// stamped: hashing, string compares and page-table walks, end to end.
func TestGuestWorkloadVerify(t *testing.T) {
	c, p := bootGuest(t)
	p.feed("W 4 2 0\n")
	runGuestUntil(t, c, p, "ACK W", 200_000_000)
	c.Run(2_000_000) // some sweeps over the working set
	p.feed("V\n")
	runGuestUntil(t, c, p, "VERIFY ", 200_000_000)
	out := p.output()
	if !strings.Contains(out, "VERIFY OK") {
		t.Fatalf("verify failed:\n%s", out)
	}
	t.Logf("%s", out[strings.Index(out, "READY"):])
}

// TestGuestSMPBoot boots the guest with cpus=2: the BSP starts the AP with
// INIT and start-up IPIs (modelled here by the ICR write only), the AP runs
// the real-mode trampoline at 0x8000 into long mode and reports alive.
func TestGuestSMPBoot(t *testing.T) {
	mem, c, p := loadGuest(t, "console=ttyS0 cpus=2")
	var stop atomic.Bool
	var wg sync.WaitGroup
	var once sync.Once
	apPlat := newTestPlatform()
	apPlat.apicID = 1
	apPlat.onSIPI = func(uint8) {}
	ap := New(1, mem, apPlat)
	p.onSIPI = func(vec uint8) {
		once.Do(func() {
			ap.StartupIPI(vec)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					ex := ap.Run(100_000)
					switch ex.Kind {
					case ExitBudget, ExitKicked:
					case ExitHLT:
						time.Sleep(100 * time.Microsecond)
					default:
						t.Errorf("AP exit %+v", ex)
						return
					}
				}
			}()
		})
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	runGuestUntil(t, c, p, "CLOCK ", 100_000_000)
	// The BSP waits for the AP by TSC: give it real time (seconds, not
	// milliseconds) so that a loaded host does not fail the test.
	p.setTSCScale(1)
	runGuestUntil(t, c, p, "READY\n", 500_000_000)
	out := p.output()
	if !strings.Contains(out, "SMP cpu1 apic=1 up") || !strings.Contains(out, "INFO boot cpus=2") {
		t.Fatalf("AP did not come up:\n%s", out)
	}
}

// TestGuestHeartbeats delivers timer interrupts (vector 0x20) whenever the
// guest idles in hlt, and while it runs, and checks its heartbeat lines.
func TestGuestHeartbeats(t *testing.T) {
	c, p := bootGuest(t)
	for i := 0; i < 200 && strings.Count(p.output(), "HB ") < 12; i++ {
		p.irqs = append(p.irqs, 0x20) // Run asks the platform at its start
		if ex := c.Run(200_000); ex.Kind != ExitHLT && ex.Kind != ExitBudget && ex.Kind != ExitKicked {
			t.Fatalf("exit %+v", ex)
		}
	}
	out := p.output()
	if n := strings.Count(out, "HB "); n < 12 || !strings.Contains(out, "CPU 0 ") {
		t.Fatalf("%d heartbeats; output:\n%s", n, out)
	}
}
