package vmmcmd

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// planRun parses args as `run`'s flags and plans the VM.
func planRun(t *testing.T, args ...string) (*runPlan, error) {
	t.Helper()
	f := &runFlags{}
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f.plan(io.Discard)
}

func TestRunInitrdFlag(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "bzImage"), filepath.Join(dir, "initrd.cpio")
	for _, p := range []string{kernel, initrd} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, err := planRun(t, "--name", "vm1", "--kernel", kernel, "--initrd", initrd, "--console", "none")
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.Initrd != initrd || p.cfg.Kernel != kernel {
		t.Errorf("config kernel %q initrd %q", p.cfg.Kernel, p.cfg.Initrd)
	}
	_, err = planRun(t, "--name", "vm1", "--incoming", "tcp:127.0.0.1:4444", "--initrd", initrd, "--console", "none")
	if err == nil || !strings.Contains(err.Error(), "--initrd") {
		t.Errorf("--initrd with --incoming: %v, want a refusal naming --initrd", err)
	}
	_, err = planRun(t, "--name", "vm1", "--kernel", kernel, "--initrd", initrd+".missing", "--console", "none")
	if err == nil || !strings.Contains(err.Error(), "initrd "+initrd+".missing") {
		t.Errorf("missing --initrd file: %v", err)
	}
	if fl := Command("godwit-vmm", io.Discard).Flags().Lookup("initrd"); fl == nil || !strings.Contains(fl.Usage, "Linux --kernel") {
		t.Error("run has no --initrd flag saying it is for a Linux kernel")
	}
}
