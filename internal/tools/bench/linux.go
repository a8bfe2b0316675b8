package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/tools/qemu"
)

// The Linux guest's boot: launch -> the workload's READY, Godwit against
// QEMU on the same kernel file (the vmlinux by its PVH entry, or the
// bzImage), initramfs, command line, memory and vCPUs.

const (
	linuxMemMiB = 512
	// linuxReady bounds one boot: minutes on the software CPU.
	linuxReady = 10 * time.Minute
	// linuxCmdline is the Linux guest's command line in both VMMs.
	linuxCmdline = "console=ttyS0 nokaslr"
)

// benchLinuxBoot boots the Linux guest e.bootRuns times in each VMM.
func benchLinuxBoot(e *env) (*bootResult, error) {
	kernel, initrd := filepath.Join(e.linuxDir, e.linuxKernel), filepath.Join(e.linuxDir, "initramfs.cpio.gz")
	res := &bootResult{MemMiB: linuxMemMiB, Kernel: e.linuxKernel, Godwit: &bootSide{}}
	var errs []string
	vmm := filepath.Join(filepath.Dir(e.godwit), "godwit-vmm")
	for i := 1; i <= e.bootRuns; i++ {
		name := fmt.Sprintf("godwit-linux%d", i)
		argv := []string{vmm, "run", "--name", name, "--kernel", kernel, "--initrd", initrd, "--cmdline", linuxCmdline,
			"--mem", fmt.Sprintf("%dM", linuxMemMiB), "--cpus", "1", "--api-socket", filepath.Join(e.tmpDir, name+".sock"),
			"--log-level", "warn", "--accel", e.accel}
		r := bootWithin(e, name, argv, i, linuxReady, linuxMemMiB)
		progress("linux-boot: godwit-vmm run %d: READY %.1f s%s", i, r.ReadyS, errText(r.Error))
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("godwit %d: %s", i, r.Error))
		}
		res.Godwit.Runs = append(res.Godwit.Runs, r)
	}
	res.Godwit.summarize()
	if e.qemuOK {
		q := &bootSide{}
		for i := 1; i <= e.bootRuns; i++ {
			c := qemu.Config{Kernel: kernel, Initrd: initrd, Append: linuxCmdline, MemMiB: linuxMemMiB, CPUs: 1, Accel: e.qemuAccel()}
			r := bootWithin(e, fmt.Sprintf("qemu-linux%d", i), c.Args(), i, linuxReady, linuxMemMiB)
			progress("linux-boot: QEMU (%s) run %d: READY %.1f s%s", e.qemuAccel(), i, r.ReadyS, errText(r.Error))
			if r.Error != "" {
				errs = append(errs, fmt.Sprintf("qemu %d: %s", i, r.Error))
			}
			q.Runs = append(q.Runs, r)
		}
		q.summarize()
		res.QEMU = q
	}
	if len(errs) > 0 {
		return res, errors.New(strings.Join(errs, "; "))
	}
	return res, nil
}

func renderLinuxBoot(b *strings.Builder, br *bootResult) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	g, q := br.Godwit, br.QEMU
	if q == nil {
		q = &bootSide{}
	}
	how := map[string]string{"vmlinux": "Debian's kernel as a vmlinux, by its PVH entry", "bzImage": "Debian's bzImage, through its decompressor"}[br.Kernel]
	if how == "" {
		how = "Debian's kernel"
	}
	w("### Linux guest boot (%s, and the project's initramfs, %d MiB, 1 vCPU, `%s`; median [min..max])\n\n", how, br.MemMiB, linuxCmdline)
	w("| | Godwit | QEMU | Godwit/QEMU |\n|---|---|---|---|\n")
	w("| launch → READY of gwload, s (runs: Godwit %d, QEMU %d) | %s | %s | %s |\n", len(g.Runs), len(q.Runs), g.Ready.mmm(), q.Ready.mmm(), ratio(g.Ready, q.Ready))
	w("| VMM RSS overhead (RSS − guest-RAM Rss), MiB | %s | %s | %s |\n\n", g.OverheadMiB.mmm(), q.OverheadMiB.mmm(), ratio(g.OverheadMiB, q.OverheadMiB))
}
