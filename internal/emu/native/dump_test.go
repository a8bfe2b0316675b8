package native

import (
	"fmt"
	"math/rand"
	"os"
	"testing"
)

// TestDumpForms writes one case per form (NATIVE_DUMP=file) for checking
// encodings with a disassembler.
func TestDumpForms(t *testing.T) {
	p := os.Getenv("NATIVE_DUMP")
	if p == "" {
		t.Skip("NATIVE_DUMP not set")
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewSource(3))
	for _, fm := range Forms() {
		for i := 0; i < 2; i++ {
			c := fm.Case(rng)
			fmt.Fprintf(f, "%s\t% x\n", fm.Name, c.Code)
		}
	}
}
