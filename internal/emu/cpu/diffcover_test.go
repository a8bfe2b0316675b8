package cpu

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/emu/native"
	"github.com/godwit-vmm/godwit/internal/hv"
)

// opKey names one instruction as the decoder sees it: an opcode, the
// ModRM.reg digit for group opcodes, and a mandatory F3 prefix where it
// selects a different instruction (pause, popcnt, tzcnt, lzcnt).
type opKey struct {
	pfx   byte   // 0 or 0xf3
	op    uint16 // insn.op: 0x00-0xff, 0x100|b for 0F b, 0x200|b for 0F 38 b, 0x300|b for 0F 3A b
	digit int8   // ModRM.reg for group opcodes, -1 otherwise
}

func (k opKey) String() string {
	var b strings.Builder
	if k.pfx != 0 {
		fmt.Fprintf(&b, "%02X ", k.pfx)
	}
	switch k.op >> 8 {
	case 1:
		b.WriteString("0F ")
	case 2:
		b.WriteString("0F 38 ")
	case 3:
		b.WriteString("0F 3A ")
	}
	fmt.Fprintf(&b, "%02X", k.op&0xff)
	if k.digit >= 0 {
		fmt.Fprintf(&b, " /%d", k.digit)
	}
	return b.String()
}

func (k opKey) bytes() []byte {
	var b []byte
	if k.pfx != 0 {
		b = append(b, k.pfx)
	}
	switch k.op >> 8 {
	case 1:
		b = append(b, 0x0f)
	case 2:
		b = append(b, 0x0f, 0x38)
	case 3:
		b = append(b, 0x0f, 0x3a)
	}
	return append(b, byte(k.op))
}

// groupOps are the opcodes whose instruction depends on ModRM.reg.
var groupOps = map[uint16]bool{
	0x80: true, 0x81: true, 0x82: true, 0x83: true, 0x8c: true, 0x8e: true, 0x8f: true,
	0xc0: true, 0xc1: true, 0xc6: true, 0xc7: true, 0xd0: true, 0xd1: true, 0xd2: true, 0xd3: true,
	0xd8: true, 0xd9: true, 0xda: true, 0xdb: true, 0xdc: true, 0xdd: true, 0xde: true, 0xdf: true,
	0xf6: true, 0xf7: true, 0xfe: true, 0xff: true,
	0x100: true, 0x101: true, 0x10d: true, 0x118: true, 0x1ae: true, 0x1ba: true, 0x1c7: true,
}

// mandatoryF3 are the opcodes an F3 prefix turns into another instruction.
var mandatoryF3 = map[uint16]bool{0x90: true, 0x1b8: true, 0x1bc: true, 0x1bd: true}

func isLegacyPrefix(b byte) bool {
	switch b {
	case 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3:
		return true
	}
	return b&0xf0 == 0x40 // REX in 64-bit mode
}

func hasModRMOp(op uint16) bool {
	switch op >> 8 {
	case 0:
		return oneByteModRM[op]
	case 1:
		return twoByteModRM(uint8(op))
	}
	return true
}

// candidateKeys lists every opcode (and /digit, and mandatory prefix) of
// the one-, two- and three-byte maps.
func candidateKeys() []opKey {
	var ks []opKey
	add := func(op uint16) {
		digits := []int8{-1}
		if groupOps[op] {
			digits = []int8{0, 1, 2, 3, 4, 5, 6, 7}
		}
		pfxs := []byte{0}
		if mandatoryF3[op] {
			pfxs = append(pfxs, 0xf3)
		}
		for _, p := range pfxs {
			for _, d := range digits {
				ks = append(ks, opKey{pfx: p, op: op, digit: d})
			}
		}
	}
	for b := 0; b < 256; b++ {
		if b != 0x0f && !isLegacyPrefix(byte(b)) {
			add(uint16(b))
		}
	}
	for b := 0; b < 256; b++ {
		if b != 0x38 && b != 0x3a {
			add(0x100 | uint16(b))
		}
	}
	for b := 0; b < 256; b++ {
		add(0x200 | uint16(b))
	}
	for b := 0; b < 256; b++ {
		add(0x300 | uint16(b))
	}
	return ks
}

// coverVM decodes and probes instructions in a 64-bit machine (CPL 0).
type coverVM struct {
	*testVM
	sregs hv.Sregs2
}

func newCoverVM(t *testing.T) *coverVM {
	v := newVM(t, 64, nil)
	v.c.TrapExceptions = true
	return &coverVM{testVM: v, sregs: v.c.GetSregs2()}
}

// decodeAt decodes the instruction at tCode+off of code written at tCode;
// ok=false if the decoder raised an exception.
func (v *coverVM) decodeAt(off int) (in insn, ok bool) {
	c := v.c
	defer func() {
		if r := recover(); r != nil {
			ok = false
		}
	}()
	c.fetch.n = 0
	c.fetch.lin = tCode + uint64(off)
	c.fetch.page = ^uint64(0)
	c.decode()
	return c.in, true
}

func (v *coverVM) decode(code []byte) (insn, bool) {
	v.mem.WritePhys(tCode, append(append([]byte(nil), code...), make([]byte, 16)...))
	return v.decodeAt(0)
}

// probeUD executes code once from a fixed state and reports whether it
// raised #UD.
func (v *coverVM) probeUD(code []byte) (ud bool, ex Exit) {
	v.c.SetSregs2(v.sregs)
	v.mem.WritePhys(tCode, append(append([]byte(nil), code...), make([]byte, 16)...))
	v.mem.WritePhys(tScratch, make([]byte, 512))
	v.c.SetRegs(hv.Regs{RIP: tCode, RSP: tStack, RFLAGS: 2, RSI: tScratch, RDI: tScratch + 256, RBX: tScratch, RBP: tScratch, RCX: 1})
	ex = v.c.Step()
	return ex.Kind == ExitException && ex.Vector == vecUD, ex
}

// keyOf returns the key of a decoded instruction.
func keyOf(in *insn) opKey {
	k := opKey{op: in.op, digit: -1}
	if groupOps[in.op] {
		k.digit = int8(in.reg & 7)
	}
	if mandatoryF3[in.op] && in.rep == 0xf3 {
		k.pfx = 0xf3
	}
	return k
}

// byteOp reports whether the instruction's operand is a byte.
func byteOp(op uint16) bool {
	switch {
	case op < 0x40:
		return op&7 == 0 || op&7 == 2 || op&7 == 4
	case op >= 0xb0 && op <= 0xb7, op >= 0x190 && op <= 0x19f:
		return true
	}
	switch op {
	case 0x6c, 0x6e, 0x80, 0x82, 0x84, 0x86, 0x88, 0x8a, 0xa0, 0xa2, 0xa4, 0xa6, 0xa8, 0xaa, 0xac, 0xae,
		0xc0, 0xc6, 0xd0, 0xd2, 0xd7, 0xe4, 0xe6, 0xec, 0xee, 0xf6, 0xfe, 0x1b0, 0x1c0:
		return true
	}
	return false
}

func sizeClass(in *insn) string {
	if byteOp(in.op) {
		if in.rex != 0 {
			return "8 (rex)"
		}
		return "8"
	}
	return fmt.Sprint(int(in.osz) * 8)
}

func modeClass(in *insn) string {
	if !hasModRMOp(in.op) {
		if in.op >= 0xa0 && in.op <= 0xa3 {
			return "absolute/moffs"
		}
		return "no ModRM"
	}
	switch {
	case in.mod == 3:
		return "register"
	case in.base == 16:
		return "RIP-relative"
	case in.base < 0 && in.index < 0:
		return "absolute/moffs"
	case in.base < 0:
		return "[index*scale+disp32]"
	case in.index >= 0:
		return "[base+index*scale]"
	}
	return [...]string{"[base]", "[base+disp8]", "[base+disp32]"}[in.mod]
}

// Why an accepted instruction is not among the differential test's forms.
const (
	exIO       = "port I/O: #GP at user level natively (IOPL 0); the emulator asks the platform"
	exSelector = "reads a segment selector: the host's user-mode selectors differ from the test machine's"
	exSegLoad  = "segment register load: needs the test machine's descriptor tables (the host's differ; a null or bad selector faults)"
	exSystem   = "privileged or system instruction: #GP at CPL 3 natively, or its result depends on descriptor tables, control or debug registers or MSRs the harness does not control"
	exMachine  = "result depends on the machine (TSC, CPUID leaves), not on the inputs"
	exInt      = "raises or returns from an interrupt: control leaves the code"
	exFar      = "far transfer: loads CS from the descriptor tables"
	exSysCall  = "system call or return: changes CS, SS and privilege (sysenter and sysexit are #UD in long mode on AMD, valid on Intel)"
	exTzcnt    = "CPUID-dependent: this host has BMI1 and runs tzcnt; the emulator reports no BMI1 and runs F3 0F BC as bsf, as CPUs without BMI1 do"
)

// vectorOp reports whether k is an x87, MMX or SSE instruction (or saves
// or loads their state): the differential tests of sse_diff_test.go and
// x87_diff_test.go cover those, with their own decoder coverage checks.
func vectorOp(k opKey) bool {
	switch {
	case k.op >= 0xd8 && k.op <= 0xdf, k.op == 0x177:
		return true
	case k.op == 0x1ae:
		return k.digit >= 0 && k.digit <= 4 // /5 is also lfence
	case k.op > 0x100 && k.op < 0x200:
		return isSSEOp(uint8(k.op))
	}
	return false
}

// coverExclusions lists every instruction the decoder accepts in 64-bit
// mode that the differential test does not run, and why. Syntax: an
// optional F3 (mandatory prefix), 0F or 0F 38 / 0F 3A, the opcode or a
// range XX-YY, and for group opcodes /D or /D-E.
var coverExclusions = []struct{ keys, why string }{
	{"6C-6F", exIO}, // ins, outs
	{"E4-E7", exIO}, // in, out imm8
	{"EC-EF", exIO}, // in, out dx
	{"8C /0-5", exSelector},
	{"8E /0", exSegLoad}, // mov es, r/m
	{"8E /2-5", exSegLoad},
	{"0F A0", exSelector}, // push fs
	{"0F A8", exSelector}, // push gs
	{"0F A1", exSegLoad},  // pop fs
	{"0F A9", exSegLoad},  // pop gs
	{"0F B2", exSegLoad},  // lss
	{"0F B4-B5", exSegLoad},
	{"CA-CB", exFar}, // retf
	{"FF /3", exFar}, // call far m16:64
	{"FF /5", exFar}, // jmp far m16:64
	{"CC-CD", exInt}, // int3, int n
	{"CF", exInt},    // iret
	{"F1", exInt},    // int1
	{"F4", exSystem}, // hlt
	{"FA-FB", exSystem},
	{"0F 00 /0-5", exSystem}, // sldt str lldt ltr verr verw
	{"0F 01 /0-4", exSystem}, // sgdt sidt lgdt lidt smsw
	{"0F 01 /6-7", exSystem}, // lmsw; invlpg, swapgs, rdtscp
	{"0F 02-03", exSystem},   // lar, lsl
	{"0F 06", exSystem},      // clts
	{"0F 08-09", exSystem},   // invd, wbinvd
	{"0F 20-23", exSystem},   // mov cr, dr
	{"0F 30", exSystem},      // wrmsr
	{"0F 32", exSystem},      // rdmsr
	{"0F 05", exSysCall},     // syscall
	{"0F 07", exSysCall},     // sysret
	{"0F 34-35", exSysCall},  // sysenter, sysexit
	{"0F 31", exMachine},     // rdtsc
	{"0F A2", exMachine},     // cpuid
	{"F3 0F BC", exTzcnt},
}

// parseKeys expands one coverExclusions entry.
func parseKeys(s string) ([]opKey, error) {
	f := strings.Fields(s)
	var pfx byte
	var mp uint16
	if len(f) > 1 && f[0] == "F3" {
		pfx, f = 0xf3, f[1:]
	}
	if len(f) > 1 && f[0] == "0F" {
		mp, f = 0x100, f[1:]
		if len(f) > 1 && (f[0] == "38" || f[0] == "3A") {
			mp, f = map[string]uint16{"38": 0x200, "3A": 0x300}[f[0]], f[1:]
		}
	}
	rng := func(s string) (lo, hi int, err error) {
		a, b, ok := strings.Cut(s, "-")
		if _, err = fmt.Sscanf(a, "%x", &lo); err != nil {
			return
		}
		hi = lo
		if ok {
			_, err = fmt.Sscanf(b, "%x", &hi)
		}
		return
	}
	if len(f) == 0 || len(f) > 2 {
		return nil, fmt.Errorf("bad key %q", s)
	}
	lo, hi, err := rng(f[0])
	if err != nil || lo > hi || hi > 0xff {
		return nil, fmt.Errorf("bad opcode in %q", s)
	}
	dlo, dhi := -1, -1
	if len(f) == 2 {
		if !strings.HasPrefix(f[1], "/") {
			return nil, fmt.Errorf("bad digit in %q", s)
		}
		if dlo, dhi, err = rng(f[1][1:]); err != nil || dlo > dhi || dhi > 7 {
			return nil, fmt.Errorf("bad digit in %q", s)
		}
	}
	var ks []opKey
	for op := lo; op <= hi; op++ {
		k := opKey{pfx: pfx, op: mp | uint16(op), digit: -1}
		if groupOps[k.op] && dlo < 0 {
			return nil, fmt.Errorf("%q: %v is a group opcode: name its /digits", s, k)
		}
		if !groupOps[k.op] && dlo >= 0 {
			return nil, fmt.Errorf("%q: %v is not a group opcode", s, k)
		}
		for d := dlo; d <= dhi; d++ {
			k.digit = int8(d)
			ks = append(ks, k)
		}
	}
	return ks, nil
}

// plusR reports whether op encodes a register in its low three bits; the
// generator picks that register at random, so such forms get more cases.
func plusR(op uint16) bool {
	switch op &^ 7 {
	case 0x50, 0x58, 0x90, 0xb0, 0xb8, 0x1c8:
		return true
	}
	return false
}

// coverWidths are the operand sizes (sizeClass names) a covered
// instruction must be tested in where that is not the default: {8,
// 8 (rex)} for byte operations (AH..BH and SPL..DIL, R8B.. naming),
// {16, 32, 64} for the rest.
var coverWidths = func() map[opKey][]string {
	m := map[opKey][]string{}
	set := func(w []string, keys ...string) {
		for _, s := range keys {
			ks, err := parseKeys(s)
			if err != nil {
				panic(err)
			}
			for _, k := range ks {
				m[k] = w
			}
		}
	}
	// Operand size irrelevant: flags, hints, fences, xlat, nop/pause.
	// (The decoded operand-size attribute is still reported.)
	set([]string{}, "90", "F3 90", "9B", "9E-9F", "F5", "F8-F9", "FC-FD", "D7", "0F 0D /0-7", "0F 18 /0-7",
		"0F 19-1F", "0F AE /5-7")
	// Near branches: 64-bit whatever the prefixes, but a 66 prefix, which
	// makes AMD truncate RIP to 16 bits (Intel ignores it): the harness
	// cannot follow that.
	set([]string{}, "70-7F", "E0-E3", "E8-E9", "EB", "0F 80-8F", "C2-C3")
	set([]string{"32", "64"}, "FF /2", "FF /4") // 32: no REX.W, still a 64-bit target
	// Stack operations: 64-bit by default, 16-bit with 66.
	set([]string{"16", "64"}, "50-5F", "68", "6A", "8F /0", "9C-9D", "C8-C9")
	set([]string{"16", "32", "64"}, "FF /6") // 32: no REX.W, still a 64-bit push
	set([]string{"32", "64"}, "0F C7 /1")    // cmpxchg8b, cmpxchg16b
	set([]string{"32", "64"}, "0F C8-CF")    // bswap r16 is undefined
	// Byte operations without a register operand to name: AL, imm8 and
	// the string instructions.
	set([]string{"8"}, "04", "0C", "14", "1C", "24", "2C", "34", "3C", "A8", "A4", "A6", "AA", "AC", "AE")
	return m
}()

func widthsWanted(k opKey) []string {
	if w, ok := coverWidths[k]; ok {
		return w
	}
	if byteOp(k.op) {
		return []string{"8", "8 (rex)"}
	}
	return []string{"16", "32", "64"}
}

var memClasses = []string{"[base]", "[base+disp8]", "[base+disp32]", "[base+index*scale]", "[index*scale+disp32]",
	"RIP-relative", "absolute/moffs"}

// stringOps take rep prefixes: each is tested without, with F3 and with F2.
func stringOp(op uint16) bool { return op >= 0xa4 && op <= 0xaf && op != 0xa8 && op != 0xa9 }

type tally map[string]int

func (t tally) String() string {
	var ks []string
	for k := range t {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, " %s: %d;", k, t[k])
	}
	return strings.TrimSuffix(b.String(), ";")
}

// TestDifferentialCoversDecoder proves what TestDifferential covers. It
// enumerates every opcode of the one-byte, 0F, 0F 38 and 0F 3A maps (each
// /digit of the group opcodes, and F3 where it selects another
// instruction) and finds which the emulator accepts in 64-bit mode: the
// decoder decodes it and executing it at CPL 0, with a register or a
// memory operand, does not raise #UD (and whether a lock prefix is
// accepted too). Then it decodes every instruction of cases of every form
// of package native, which TestDifferential runs, and fails when an
// accepted instruction is neither run by a form nor in coverExclusions;
// when an exclusion names an instruction that is not accepted, or that the
// forms run; and when a covered instruction is not run in each operand
// size (coverWidths), with each operand class it accepts (register, every
// memory addressing mode), with 64- and 32-bit addressing, with lock if it is
// lockable and, for string instructions, without rep, with F3 and with F2.
// It logs the coverage report.
func TestDifferentialCoversDecoder(t *testing.T) {
	v := newCoverVM(t)

	// What the decoder accepts.
	type probe struct {
		reg, mem, lock bool // a register / memory operand / lock prefix is accepted
		modrm          bool
	}
	probes := map[opKey]*probe{}
	var accepted []opKey
	candidates, decoded := 0, 0
	vector := 0
	for _, k := range candidateKeys() {
		candidates++
		if vectorOp(k) {
			vector++ // x87, MMX, SSE: covered by their own tests
			continue
		}
		op := k.bytes()
		p := &probe{modrm: hasModRMOp(k.op)}
		variants := [][]byte{op}
		if p.modrm {
			d := byte(0)
			if k.digit >= 0 {
				d = byte(k.digit)
			}
			variants = [][]byte{append(append([]byte(nil), op...), 0xc1|d<<3), append(append([]byte(nil), op...), 0x06|d<<3)}
		}
		ok, dec := false, false
		for i, code := range variants {
			if _, ok := v.decode(code); !ok {
				continue
			}
			dec = true
			ud, ex := v.probeUD(code)
			if ex.Kind == ExitInternalError {
				t.Errorf("%v (% x): internal error: %s", k, code, ex.Reason)
			}
			if ud {
				continue
			}
			ok = true
			if p.modrm && i == 0 {
				p.reg = true
			} else if p.modrm {
				p.mem = true
				if ud, _ := v.probeUD(append([]byte{0xf0}, code...)); !ud {
					p.lock = true
				}
			}
		}
		if dec {
			decoded++
		}
		if ok {
			probes[k] = p
			accepted = append(accepted, k)
		}
	}

	// The exclusion table: every key accepted, none twice.
	excluded := map[opKey]string{}
	for _, e := range coverExclusions {
		ks, err := parseKeys(e.keys)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			if probes[k] == nil {
				t.Errorf("exclusion %q: %v is not accepted by the decoder: remove it", e.keys, k)
			}
			if _, dup := excluded[k]; dup {
				t.Errorf("exclusion %q: %v excluded twice", e.keys, k)
			}
			excluded[k] = e.why
		}
	}
	for k := range coverWidths {
		if probes[k] == nil {
			t.Errorf("width rule for %v, which the decoder does not accept", k)
		}
	}

	// What the forms run: every instruction of every case (the set-up and
	// check instructions around the focus too), and per form its focus.
	type variants struct {
		widths, modes map[string]bool
		lock, rep     map[byte]bool // rep: 0, 0xf2, 0xf3
		asz           map[uint8]bool
		forms         int
	}
	cov := map[opKey]*variants{}
	note := func(k opKey, in *insn) {
		vs := cov[k]
		if vs == nil {
			vs = &variants{widths: map[string]bool{}, modes: map[string]bool{}, lock: map[byte]bool{}, rep: map[byte]bool{}, asz: map[uint8]bool{}}
			cov[k] = vs
		}
		vs.widths[sizeClass(in)] = true
		vs.modes[modeClass(in)] = true
		vs.lock[map[bool]byte{true: 1}[in.lock]] = true
		vs.rep[in.rep] = true
		vs.asz[in.asz] = true
	}
	bySize, byMode, byASize, byLock, byRep, byClass := tally{}, tally{}, tally{}, tally{}, tally{}, tally{}
	rng := rand.New(rand.NewSource(1))
	forms := native.Forms()
	cases := 0
	for _, f := range forms {
		n := 4
		for i := 0; i < n; i++ {
			c := f.Case(rng)
			cases++
			v.mem.WritePhys(tCode, append(append([]byte(nil), c.Code...), make([]byte, 16)...))
			focus := false
			for off := 0; off < len(c.Code); {
				in, ok := v.decodeAt(off)
				if !ok {
					t.Fatalf("%s: % x: no instruction at offset %d", f.Name, c.Code, off)
				}
				k := keyOf(&in)
				if probes[k] == nil {
					t.Fatalf("%s: % x: %v at offset %d is not accepted", f.Name, c.Code, k, off)
				}
				note(k, &in)
				if off == c.Focus {
					focus = true
					if i == 0 {
						cov[k].forms++
						bySize[sizeClass(&in)]++
						byMode[modeClass(&in)]++
						byASize[map[uint8]string{4: "32-bit (67)", 8: "64-bit"}[in.asz]]++
						byLock[map[bool]string{true: "lock", false: "no lock"}[in.lock]]++
						byRep[map[uint8]string{0: "no rep", 0xf2: "F2", 0xf3: "F3"}[in.rep]]++
						byClass[f.Class]++
						if plusR(in.op) {
							n = 256 // until every register encoding is seen
						}
					}
				}
				off += int(in.length)
			}
			if !focus {
				t.Fatalf("%s: % x: focus %d is not an instruction boundary", f.Name, c.Code, c.Focus)
			}
		}
	}

	// Every accepted instruction is covered or excluded, not both; each
	// covered one in every width, operand class and lock/rep variant.
	var integer, missing, gaps []string
	byWhy := map[string][]string{}
	for _, k := range accepted {
		p, vs := probes[k], cov[k]
		if why, ok := excluded[k]; ok {
			byWhy[why] = append(byWhy[why], k.String())
			if vs != nil {
				t.Errorf("%v is excluded (%s) but the forms run it: remove the exclusion", k, why)
			}
			continue
		}
		integer = append(integer, k.String())
		if vs == nil {
			missing = append(missing, k.String())
			continue
		}
		var want []string
		if p.reg {
			want = append(want, "register")
		}
		if p.mem {
			want = append(want, memClasses...)
		}
		for _, m := range want {
			if !vs.modes[m] {
				gaps = append(gaps, fmt.Sprintf("%v: no %s operand", k, m))
			}
		}
		if p.mem || stringOp(k.op) || k.op == 0xd7 || k.op >= 0xa0 && k.op <= 0xa3 {
			for _, a := range []uint8{8, 4} {
				if !vs.asz[a] {
					gaps = append(gaps, fmt.Sprintf("%v: no form with %d-bit addressing", k, 8*a))
				}
			}
		}
		if p.lock && !vs.lock[1] {
			gaps = append(gaps, fmt.Sprintf("%v: no lock form", k))
		}
		if stringOp(k.op) && !(vs.rep[0] && vs.rep[0xf2] && vs.rep[0xf3]) {
			gaps = append(gaps, fmt.Sprintf("%v: not with each of no rep, F3, F2", k))
		}
		for _, w := range widthsWanted(k) {
			if !vs.widths[w] {
				gaps = append(gaps, fmt.Sprintf("%v: no %s-bit form", k, w))
			}
		}
	}
	for _, m := range missing {
		t.Errorf("accepted integer instruction %s: no form of the differential test runs it, and it is not in coverExclusions", m)
	}
	for _, g := range gaps {
		t.Errorf("covered instruction %s", g)
	}

	t.Logf("decoder, 64-bit mode: %d opcodes and /digits enumerated (one-byte, 0F, 0F 38, 0F 3A), %d decode, %d accepted (%d decode but raise #UD when executed)",
		candidates, decoded, len(accepted), decoded-len(accepted))
	t.Logf("x87, MMX and SSE opcodes left to their own coverage tests: %d", vector)
	t.Logf("accepted: %d integer instructions, %d covered by the differential forms; %d excluded",
		len(integer), len(integer)-len(missing), len(excluded))
	var whys []string
	for w := range byWhy {
		whys = append(whys, w)
	}
	sort.Strings(whys)
	for _, w := range whys {
		t.Logf("  excluded %2d: %s: %s", len(byWhy[w]), w, strings.Join(byWhy[w], ", "))
	}
	t.Logf("forms: %d (%d cases decoded), by the operand size of the instruction under test:%s", len(forms), cases, bySize)
	t.Logf("  by operand class:%s", byMode)
	t.Logf("  by address size:%s", byASize)
	t.Logf("  lock:%s", byLock)
	t.Logf("  rep:%s", byRep)
	t.Logf("  by class:%s", byClass)
}
