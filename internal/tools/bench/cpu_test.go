package main

import (
	"strings"
	"testing"
)

func TestParseLoop(t *testing.T) {
	l, err := parseLoop("LOOP int iters=5000000 insns=80000000 cpus=2 us=2000000 per_cpu_us=1000000,2000000", 2)
	if err != nil {
		t.Fatal(err)
	}
	if sum, per := l.mips(); l.Kind != "int" || l.Insns != 80_000_000 || sum != 120 || per != 60 {
		t.Fatalf("%+v: %v MIPS in all, %v per vCPU; want 120 and 60", l, sum, per)
	}
	for _, c := range []struct{ line, want string }{
		{"LOOP int iters=1 insns=16 cpus=1 us=5 per_cpu_us=5", "1 vCPUs ran it, want 2"},
		{"LOOP int iters=1 insns=16 cpus=2 us=5 per_cpu_us=5,0", "bad time"},
		{"ERR bad arguments LOOP", "LOOP reply"},
	} {
		if _, err := parseLoop(c.line, 2); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.line, err, c.want)
		}
	}
}
