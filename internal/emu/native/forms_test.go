package native

import (
	"math/rand"
	"sort"
	"testing"
)

func TestFormsUnique(t *testing.T) {
	seen := map[string]bool{}
	byClass := map[string]int{}
	for _, f := range Forms() {
		if seen[f.Name] {
			t.Errorf("duplicate form name %q", f.Name)
		}
		seen[f.Name] = true
		byClass[f.Class]++
	}
	var cs []string
	for c := range byClass {
		cs = append(cs, c)
	}
	sort.Strings(cs)
	for _, c := range cs {
		t.Logf("%-8s %d", c, byClass[c])
	}
	t.Logf("total    %d", len(Forms()))
}

// TestCasesWellFormed checks the generated inputs: instructions are at most
// 15 bytes (chains: plus their two neighbours) and RSP is never an addressing register.
func TestCasesWellFormed(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, f := range Forms() {
		for i := 0; i < 5; i++ {
			c := f.Case(rng)
			max := 15
			switch {
			case f.t.sem == sIndirect:
				max = 7 + 3*15 + 2 + 3 + 1 + 9 + 6
			case f.Class == "chain" || f.Class == "stack":
				max = 15 + 4 + 5
			}
			if len(c.Code) == 0 || len(c.Code) > max {
				t.Fatalf("%s: code length %d: % x", f.Name, len(c.Code), c.Code)
			}
			if c.Focus < 0 || c.Focus >= len(c.Code) {
				t.Fatalf("%s: focus %d outside the code % x", f.Name, c.Focus, c.Code)
			}
			for _, r := range c.Relocs {
				if r.Off < 0 || r.Off+r.Size > len(c.Code) || r.Size != 4 && r.Size != 8 || r.RIP && (r.End < r.Off+r.Size || r.End > len(c.Code)) {
					t.Fatalf("%s: bad relocation %+v in % x", f.Name, r, c.Code)
				}
			}
			if c.AddrRegs&(1<<RSP) != 0 && f.Class != "stack" {
				t.Fatalf("%s: RSP used", f.Name)
			}
		}
	}
}

// TestNativeAllForms runs every form natively: nothing faults, and the same
// input gives the same output twice.
func TestNativeAllForms(t *testing.T) {
	if !Supported() {
		t.Skip("native execution not supported")
	}
	n := 4
	if testing.Short() || raceEnabled {
		n = 1
	}
	rng := rand.New(rand.NewSource(2))
	base := MemBase()
	if base+MemSize > 1<<32 {
		t.Logf("Mem at %#x: skipping the 32-bit addressing forms", base)
	}
	for _, f := range Forms() {
		if f.Addr32 && base+MemSize > 1<<32 {
			continue
		}
		for i := 0; i < n; i++ {
			c := f.Case(rng)
			a, b := c.Input(base), c.Input(base)
			code := c.Link(CodeAddr(), base)
			if err := Run(code, &a); err != nil {
				t.Fatal(err)
			}
			if err := Run(code, &b); err != nil {
				t.Fatal(err)
			}
			c.Normalize(&a, base)
			c.Normalize(&b, base)
			if d := c.Diff(&a, &b); len(d) != 0 {
				t.Errorf("%s: not deterministic: %v", c.String(), d)
			}
		}
	}
}
