package cpu

import (
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// loadELF copies the PT_LOAD segments of an ELF file into mem at their
// physical addresses and returns the entry point.
func loadELF(t *testing.T, mem *Memory, path string) uint64 {
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
func writeMultibootInfo(mem *Memory, ramSize uint64) uint32 {
	le := binary.LittleEndian
	mem.WritePhys(0x7000, []byte("console=ttyS0\x00"))
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
func bootGuest(t *testing.T) (*CPU, *testPlatform) {
	path := filepath.Join("..", "..", "..", "guest", "build", "guest.elf")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s missing (run make -C guest)", path)
	}
	const ramSize = 256 << 20
	mem := NewMemory()
	mem.AddRAM(0, newRAM(t, ramSize))
	entry := loadELF(t, mem, path)
	info := writeMultibootInfo(mem, ramSize)
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
	runGuestUntil(t, c, p, "READY\n", 50_000_000)
	out := p.output()
	for _, w := range []string{"GODWIT-GUEST v1", "MEM ram 0x100000-", "CLOCK ", "READY"} {
		if !strings.Contains(out, w) {
			t.Fatalf("%q not printed; output:\n%s", w, out)
		}
	}
	return c, p
}

// runGuestUntil runs the guest until its output contains want; a hlt with
// nothing pending ends the wait.
func runGuestUntil(t *testing.T, c *CPU, p *testPlatform, want string, budget int) {
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
