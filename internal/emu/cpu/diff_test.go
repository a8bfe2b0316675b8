//go:build linux && amd64

// Differential tests: every instruction form of package native's generator
// runs natively on this machine and in the emulator from the same inputs;
// registers, the flags the architecture defines, and memory must agree.
// Deeper runs: EMUDIFF_N=300 EMUDIFF_SEED=7 go test -run Differential.

package cpu_test

import (
	"fmt"
	"math/rand"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/emu/cpu"
	"github.com/godwit-vmm/godwit/internal/emu/native"
	"github.com/godwit-vmm/godwit/internal/hv"
)

// Layout of the differential test machine. The first 2 MiB are mapped
// with 4 KiB pages, identity except that virtual page 0x3000 maps to
// physical 0x5000: Mem straddles the virtual page boundary at 0x3000, so
// accesses that cross it must be split between non-adjacent physical pages.
// The rest of the first GiB is identity-mapped with 2 MiB pages.
const (
	diffRAM   = 4 << 20
	diffCode  = 0x1000 // the code under test, then hlt
	diffMem   = 0x3000 - native.MemSize/2
	diffSplit = 0x5000 // physical page behind virtual 0x3000
	diffTSS   = 0x4000
	diffPML4  = 0x10000
	diffPDPT  = 0x11000
	diffPD    = 0x12000
	diffPT    = 0x13000
	diffRSP   = 0x8000
)

// memSpans are the physical ranges behind Mem: (gpa, Mem offset, length).
var memSpans = [2][3]uint64{
	{diffMem, 0, native.MemSize / 2},
	{diffSplit, native.MemSize / 2, native.MemSize / 2},
}

type diffVM struct {
	mem      *cpu.Memory
	c        *cpu.CPU
	lastExit cpu.Exit
}

func newDiffVM(t *testing.T) *diffVM {
	ram, err := unix.Mmap(-1, 0, diffRAM, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(ram) })
	le := func(a, v uint64) {
		for i := 0; i < 8; i++ {
			ram[a+uint64(i)] = byte(v >> (8 * i))
		}
	}
	le(diffPML4, diffPDPT|3)
	le(diffPDPT, diffPD|3)
	for i := uint64(0); i < 512; i++ {
		le(diffPD+8*i, i<<21|0x83) // 2 MiB, present, writable
		le(diffPT+8*i, i<<12|3)
	}
	le(diffPD, diffPT|3)
	le(diffPT+8*3, diffSplit|3)
	mem := cpu.NewMemory()
	mem.AddRAM(0, ram)
	c := cpu.New(0, mem, &cpu.NullPlatform{})
	c.TrapExceptions = true
	s := c.GetSregs2()
	s.CS = hv.Segment{Limit: 0xffffffff, Selector: 0x08, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
	data := hv.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 0x3, Present: 1, S: 1, DB: 1, G: 1}
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = hv.Segment{Base: diffTSS, Limit: 0x67, Selector: 0x18, Type: 0xb, Present: 1}
	s.LDT = hv.Segment{Unusable: 1}
	s.CR0 = 1<<0 | 1<<4 | 1<<31         // PE ET PG
	s.CR4 = 1<<5 | 1<<9 | 1<<10 | 1<<18 // PAE OSFXSR OSXMMEXCPT OSXSAVE
	s.CR3 = diffPML4
	s.EFER = 1<<8 | 1<<10 // LME LMA
	if err := c.SetSregs2(s); err != nil {
		t.Fatal(err)
	}
	return &diffVM{mem: mem, c: c}
}

func (v *diffVM) writeMem(m *[native.MemSize]byte) {
	for _, sp := range memSpans {
		v.mem.WritePhys(sp[0], m[sp[1]:sp[1]+sp[2]])
	}
}

var regOrder = [16]func(r *hv.Regs) *uint64{
	func(r *hv.Regs) *uint64 { return &r.RAX }, func(r *hv.Regs) *uint64 { return &r.RCX },
	func(r *hv.Regs) *uint64 { return &r.RDX }, func(r *hv.Regs) *uint64 { return &r.RBX },
	func(r *hv.Regs) *uint64 { return &r.RSP }, func(r *hv.Regs) *uint64 { return &r.RBP },
	func(r *hv.Regs) *uint64 { return &r.RSI }, func(r *hv.Regs) *uint64 { return &r.RDI },
	func(r *hv.Regs) *uint64 { return &r.R8 }, func(r *hv.Regs) *uint64 { return &r.R9 },
	func(r *hv.Regs) *uint64 { return &r.R10 }, func(r *hv.Regs) *uint64 { return &r.R11 },
	func(r *hv.Regs) *uint64 { return &r.R12 }, func(r *hv.Regs) *uint64 { return &r.R13 },
	func(r *hv.Regs) *uint64 { return &r.R14 }, func(r *hv.Regs) *uint64 { return &r.R15 },
}

// run executes the case's code in the emulator: Step until RIP reaches its
// end (rep string instructions and chains take several steps), or with
// useRun, Run until the hlt placed after it. It returns the output state
// (Mem at diffMem) and a description of the failure if it did not get there.
func (v *diffVM) run(c *native.Case, useRun bool) (native.State, string) {
	in := c.Input(diffMem)
	code := append(append([]byte(nil), c.Link(diffCode, diffMem)...), 0xf4)
	v.mem.WritePhys(diffCode, code)
	v.writeMem(&in.Mem)
	var r hv.Regs
	for i := 0; i < 16; i++ {
		*regOrder[i](&r) = in.Regs[i]
	}
	// IF as in user mode natively (pushf images must match; no interrupts
	// come from NullPlatform)
	r.RIP, r.RFLAGS = diffCode, in.RFLAGS|0x202
	if c.AddrRegs&(1<<native.RSP) == 0 {
		r.RSP = diffRSP
	}
	v.c.SetRegs(r)
	end := uint64(diffCode + len(c.Code))
	fail := ""
	if useRun {
		// Run to the hlt after the code: the emulator's run loop, which
		// may decode and dispatch differently from Step.
		ex := v.c.Run(10000)
		v.lastExit = ex
		if rip := v.c.GetRegs().RIP; ex.Kind != cpu.ExitHLT || rip != end+1 {
			fail = fmt.Sprintf("Run: exit %v (%+v), RIP %#x, want hlt at %#x", ex.Kind, ex, rip, end)
		}
	}
	for steps := 0; !useRun; steps++ {
		ex := v.c.Step()
		v.lastExit = ex
		if ex.Kind != cpu.ExitNone {
			fail = fmt.Sprintf("exit %v (%+v)", ex.Kind, ex)
			break
		}
		rip := v.c.GetRegs().RIP
		if rip == end {
			break
		}
		// rep string instructions stay put; chains take a few steps
		if rip < diffCode || rip > end || steps > 1000 {
			fail = fmt.Sprintf("RIP %#x after %d steps, want %#x", rip, steps+1, end)
			break
		}
	}
	r = v.c.GetRegs()
	var out native.State
	for i := 0; i < 16; i++ {
		out.Regs[i] = *regOrder[i](&r)
	}
	out.RFLAGS = r.RFLAGS & native.StateFlags
	for _, sp := range memSpans {
		v.mem.ReadPhys(sp[0], out.Mem[sp[1]:sp[1]+sp[2]])
	}
	if fail == "" && c.AddrRegs&(1<<native.RSP) == 0 && r.RSP != diffRSP {
		fail = fmt.Sprintf("RSP changed to %#x", r.RSP)
	}
	return out, fail
}

// runBoth runs code natively and in the emulator from the same input
// state, FPU (an FXSAVE64 image) included; in.FPU nil means the default
// state (native.DefaultFPU). The registers in addrRegs hold offsets into
// Mem on input and output (natively they hold native.MemBase()+offset, in
// the emulator diffMem+offset). The code must not fault natively (keep
// every x87 and SSE exception masked). It returns both output states, each
// with its FPU image, and why the emulator failed to reach the code's end.
func runBoth(t *testing.T, v *diffVM, code []byte, in native.State, addrRegs uint16) (nat, emu native.State, fail string) {
	t.Helper()
	if in.FPU == nil {
		in.FPU = native.DefaultFPU()
	}
	nat = in
	fpuIn := *in.FPU
	nat.FPU = &fpuIn
	rebase := func(st *native.State, from, to uint64) {
		for r := 0; r < 16; r++ {
			if addrRegs&(1<<r) != 0 {
				st.Regs[r] = st.Regs[r] - from + to
			}
		}
	}
	rebase(&nat, 0, native.MemBase())
	if err := native.Run(code, &nat); err != nil {
		t.Fatal(err)
	}
	rebase(&nat, native.MemBase(), 0)

	xs := make([]byte, cpu.XSAVESize)
	copy(xs, in.FPU[:])
	xs[512] = 3 // XSTATE_BV: x87 and SSE
	if err := v.c.SetXSAVE(xs); err != nil {
		t.Fatalf("SetXSAVE: %v", err)
	}
	c := &native.Case{Code: code, Regs: in.Regs, RFLAGS: in.RFLAGS, Mem: in.Mem, AddrRegs: addrRegs}
	emu, fail = v.run(c, false)
	rebase(&emu, diffMem, 0)
	var img [512]byte
	copy(img[:], v.c.XSAVE())
	emu.FPU = &img
	return nat, emu, fail
}

// caseCount returns how many random cases a differential test runs per
// form and its seed: 150 and 1, or short under -short and -race; the
// environment's <prefix>_N and <prefix>_SEED override them.
func caseCount(t *testing.T, prefix string, short int) (n int, seed int64) {
	n, seed = 150, 1
	if testing.Short() || raceEnabled() {
		n = short
	}
	if s := os.Getenv(prefix + "_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	if s := os.Getenv(prefix + "_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 0, 64)
	}
	t.Logf("seed %d (%s_SEED), %d cases per form (%s_N)", seed, prefix, n, prefix)
	return n, seed
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// TestDifferentialSplitMapping checks the test machine itself: virtual
// 0x3000 reads physical diffSplit.
func TestDifferentialSplitMapping(t *testing.T) {
	v := newDiffVM(t)
	v.mem.WritePhys(0x3000, []byte{0xcd})
	v.mem.WritePhys(diffSplit, []byte{0xab})
	v.mem.WritePhys(diffCode, []byte{0x8a, 0x06, 0xf4}) // mov al, [rsi]; hlt
	v.c.SetRegs(hv.Regs{RSI: 0x3000, RSP: diffRSP, RIP: diffCode, RFLAGS: 2})
	if ex := v.c.Step(); ex.Kind != cpu.ExitNone {
		t.Fatalf("exit %v (%+v)", ex.Kind, ex)
	}
	if r := v.c.GetRegs(); r.RAX&0xff != 0xab {
		t.Fatalf("mov al, [0x3000] read %#x, want 0xab (physical %#x)", r.RAX&0xff, diffSplit)
	}
}

// TestDifferentialFaults checks that the emulator raises the exception
// the host raises (package native checks the host in child processes) at
// the faulting instruction, leaving registers, flags and memory unchanged.
func TestDifferentialFaults(t *testing.T) {
	v := newDiffVM(t)
	for _, f := range native.FaultCases() {
		c := &f.Case
		in := c.Input(diffMem)
		out, fail := v.run(c, false)
		c.Normalize(&out, diffMem)
		c.Normalize(&in, diffMem)
		want := fmt.Sprintf("exit %v", cpu.ExitException)
		if !strings.HasPrefix(fail, want) {
			t.Errorf("%s (% x): %s, want vector %d", c.Name, c.Code, fail, f.Vector)
			continue
		}
		if v.lastExit.Vector != f.Vector || v.lastExit.RIP != diffCode {
			t.Errorf("%s (% x): vector %d at RIP %#x, want vector %d at %#x",
				c.Name, c.Code, v.lastExit.Vector, v.lastExit.RIP, f.Vector, diffCode)
		}
		if d := c.Diff(&in, &out); len(d) != 0 {
			t.Errorf("%s (% x): state changed by the faulting instruction (\"native\" = input):\n\t%s",
				c.Name, c.Code, strings.Join(d, "\n\t"))
		}
	}
}

// TestDifferential runs every form of package native's generator natively
// and in the emulator and compares registers, defined flags and memory.
func TestDifferential(t *testing.T) {
	if !native.Supported() {
		t.Skip("native execution not supported here")
	}
	n := 20
	if testing.Short() {
		n = 5
	}
	if raceEnabled() {
		n = 5
	}
	seed := int64(1)
	if s := os.Getenv("EMUDIFF_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 0, 64)
	}
	if s := os.Getenv("EMUDIFF_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d (EMUDIFF_SEED), %d cases per form (EMUDIFF_N)", seed, n)
	v := newDiffVM(t)
	rng := rand.New(rand.NewSource(seed))
	base := native.MemBase()
	type bad struct {
		fails, cases int
		first        string
	}
	bads := map[string]*bad{}
	forms := native.Forms()
	cases := 0
	skipped, undefOnly := 0, 0
	undefBy := map[string]int{}
	for _, f := range forms {
		if f.Addr32 && base+native.MemSize > 1<<32 {
			skipped++
			continue
		}
		for i := 0; i < n; i++ {
			c := f.Case(rng)
			cases++
			nat := c.Input(base)
			if err := native.Run(c.Link(native.CodeAddr(), base), &nat); err != nil {
				t.Fatal(err)
			}
			c.Normalize(&nat, base)
			emu, fail := v.run(&c, i%2 == 1)
			c.Normalize(&emu, diffMem)
			var diffs []string
			if fail != "" {
				diffs = []string{fail}
			} else {
				diffs = c.Diff(&nat, &emu)
			}
			if len(diffs) == 0 {
				if x := (nat.RFLAGS ^ emu.RFLAGS) & c.UndefFlags; fail == "" && x != 0 {
					undefOnly++
					undefBy[f.Class+"/"+native.FlagString(x)]++
				}
				continue
			}
			b := bads[f.Name]
			if b == nil {
				b = &bad{}
				bads[f.Name] = b
				b.first = fmt.Sprintf("%s\n\tnative out: %s\n\temu out:    %s\n\t%s",
					c.String(), nat.String(), emu.String(), strings.Join(diffs, "\n\t"))
			}
			b.fails++
		}
		if b := bads[f.Name]; b != nil {
			b.cases = n
		}
	}
	t.Logf("differential: %d forms (%d skipped: native Mem above 4 GiB), %d cases, %d forms with mismatches",
		len(forms)-skipped, skipped, cases, len(bads))
	t.Logf("  (%d passing cases differ from this host only in flags the architecture leaves undefined)", undefOnly)
	var ub []string
	for k, n := range undefBy {
		ub = append(ub, fmt.Sprintf("%s:%d", k, n))
	}
	sort.Strings(ub)
	t.Logf("  (by class and flags: %s)", strings.Join(ub, " "))
	classForms, classBad := map[string]int{}, map[string]int{}
	for _, f := range forms {
		classForms[f.Class]++
		if bads[f.Name] != nil {
			classBad[f.Class]++
		}
	}
	var classes []string
	for cl := range classForms {
		classes = append(classes, cl)
	}
	sort.Strings(classes)
	for _, cl := range classes {
		t.Logf("  %-8s %4d forms, %4d with mismatches", cl, classForms[cl], classBad[cl])
	}
	names := make([]string, 0, len(bads))
	for name := range bads {
		names = append(names, name)
	}
	sort.Strings(names)
	const detailed = 40
	for i, name := range names {
		if i == detailed {
			t.Errorf("%d more forms differ: %s", len(names)-detailed, strings.Join(names[detailed:], "; "))
			break
		}
		b := bads[name]
		t.Errorf("%s: %d/%d cases differ; first:\n%s", name, b.fails, b.cases, b.first)
	}
}
