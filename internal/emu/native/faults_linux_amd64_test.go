package native

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestMain doubles as the child process of TestFaultsNative: with
// NATIVE_FAULT_CASE set it executes that invalid encoding natively, which
// must kill the process with the fault's signal.
func TestMain(m *testing.M) {
	if h := os.Getenv("NATIVE_FAULT_CASE"); h != "" {
		i, _ := strconv.Atoi(h)
		c := FaultCases()[i]
		st := c.Input(MemBase())
		Run(c.Code, &st)
		os.Stdout.WriteString("NO-FAULT\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestFaultsNative checks that every FaultCases case faults on this
// machine with the signal its vector maps to, in a child process.
func TestFaultsNative(t *testing.T) {
	if !Supported() {
		t.Skip("native execution not supported")
	}
	if testing.Short() {
		t.Skip("spawns a process per encoding")
	}
	sig := map[int]string{VecDE: "SIGFPE", VecUD: "SIGILL", VecGP: "SIGSEGV: segmentation violation code=0x80"} // SI_KERNEL: #GP, not #PF
	for i, c := range FaultCases() {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "NATIVE_FAULT_CASE="+strconv.Itoa(i), "GOTRACEBACK=single")
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), sig[c.Vector]) {
			t.Errorf("%s (% x): no %s natively: %.300s", c.Name, c.Code, sig[c.Vector], out)
		}
	}
}
