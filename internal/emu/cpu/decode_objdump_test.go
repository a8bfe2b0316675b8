package cpu

import (
	"bufio"
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDecodeLengthsAgainstObjdump decodes random byte streams with GNU
// objdump and with the emulator's decoder, in 16-, 32- and 64-bit mode,
// and compares instruction lengths wherever both decode. It needs objdump
// (binutils) and skips without it.
func TestDecodeLengthsAgainstObjdump(t *testing.T) {
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		t.Skip("objdump not installed")
	}
	seed := int64(1)
	if s, err := strconv.ParseInt(os.Getenv("GODWIT_DECODE_SEED"), 10, 64); err == nil {
		seed = s
	}
	rng := rand.New(rand.NewSource(seed))
	n := 20000
	if testing.Short() || raceEnabled {
		n = 500
	}
	line := regexp.MustCompile(`^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(.*)$`)
	for _, mode := range []struct {
		bits    int
		machine string
	}{{16, "i8086"}, {32, "i386"}, {64, "x86-64"}} {
		// Half random bytes; half instruction-shaped: prefixes, REX, the
		// 0F map, then random opcode, ModRM and tail bytes.
		buf := make([]byte, 0, n+32)
		for len(buf) < n/2 {
			buf = append(buf, byte(rng.Intn(256)))
		}
		prefixes := []byte{0x66, 0x67, 0xf2, 0xf3, 0xf0, 0x2e, 0x64, 0x65}
		for len(buf) < n {
			for k := rng.Intn(3); k > 0; k-- {
				buf = append(buf, prefixes[rng.Intn(len(prefixes))])
			}
			if mode.bits == 64 && rng.Intn(2) == 0 {
				buf = append(buf, 0x40|byte(rng.Intn(16)))
			}
			if rng.Intn(3) == 0 {
				buf = append(buf, 0x0f)
			}
			for k := 0; k < 6; k++ {
				buf = append(buf, byte(rng.Intn(256)))
			}
		}
		buf = buf[:n]
		path := filepath.Join(t.TempDir(), "code.bin")
		os.WriteFile(path, buf, 0o644)
		m := "i386"
		if mode.bits == 64 {
			m = "i386:x86-64"
		}
		opt := map[int]string{16: "i8086", 32: "i386", 64: "x86-64"}[mode.bits]
		out, err := exec.Command(objdump, "-D", "-b", "binary", "-m", m, "-M", opt, "-w", path).Output()
		if err != nil {
			t.Fatalf("objdump: %v", err)
		}
		v := newVM(t, mode.bits, nil)
		v.c.TrapExceptions = true
		compared, differ := 0, 0
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			mm := line.FindStringSubmatch(sc.Text())
			if mm == nil {
				continue
			}
			off, _ := strconv.ParseUint(mm[1], 16, 64)
			ln := len(strings.Fields(mm[2]))
			asm := mm[3]
			// objdump prints a REX before another prefix, and fwait
			// before an x87 opcode, as separate pseudo-instructions.
			if strings.Contains(asm, "(bad)") || strings.HasPrefix(asm, "(") || strings.Contains(asm, "rex") ||
				buf[off] == 0x9b || int(off)+16 > n {
				continue
			}
			code := buf[off : off+16]
			// A 66-prefixed near branch in 64-bit mode: this decoder
			// follows Intel (the prefix is ignored), objdump AMD.
			if mode.bits == 64 && bytes.Contains(code[:ln], []byte{0x66}) && isNearBranch(asm) {
				continue
			}
			v.mem.WritePhys(tCode, code)
			got, ok := v.decodeLength()
			if !ok {
				continue // #UD or another exception: not implemented (x87, SSE...)
			}
			compared++
			if got != ln {
				differ++
				if differ <= 15 {
					t.Errorf("%d-bit % x: decoder length %d, objdump %d (%s)", mode.bits, code[:max(got, ln)], got, ln, asm)
				}
			}
		}
		t.Logf("%d-bit: %d instructions compared, %d differ", mode.bits, compared, differ)
	}
}

// decodeLength decodes the instruction at tCode; ok=false if decoding
// raised an exception.
func (v *testVM) decodeLength() (n int, ok bool) {
	c := v.c
	defer func() {
		if r := recover(); r != nil {
			n, ok = 0, false
		}
	}()
	c.fetch.n = 0
	c.fetch.lin = tCode
	c.fetch.page = ^uint64(0)
	c.decode()
	return int(c.in.length), true
}

// isNearBranch reports whether objdump's text is a relative jmp/jcc/call/
// loop, after any prefixes.
func isNearBranch(asm string) bool {
	for _, f := range strings.Fields(asm) {
		switch f {
		case "fs", "gs", "cs", "ds", "es", "ss", "data16", "addr32", "bnd", "notrack", "lock", "rep", "repz", "repnz":
			continue
		}
		return strings.HasPrefix(f, "j") || strings.HasPrefix(f, "call") || strings.HasPrefix(f, "loop")
	}
	return false
}
