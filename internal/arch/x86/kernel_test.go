package x86

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit-vmm/godwit/internal/arch/x86/x86test"
)

func TestParseKernelImageDetectsFormat(t *testing.T) {
	img, err := ParseKernelImage("bz", defaultBz().image())
	if err != nil || img.Linux == nil || img.Multiboot != nil {
		t.Fatalf("bzImage parsed as %+v, %v", img, err)
	}
	img, err = ParseKernelImage("elf", elf32(0x100000, 0x100000, multibootPayload(0), 0x1000))
	if err != nil || img.Multiboot == nil || img.Linux != nil {
		t.Fatalf("multiboot ELF parsed as %+v, %v", img, err)
	}
}

func TestParseKernelImageRefuses(t *testing.T) {
	const neither = `x86: guest.bin is neither a multiboot v1 ELF nor a Linux kernel (no "HdrS" boot header at 0x202, no ELF with a PVH note): build the test guest with ` + "`make guest`" + ` or give a bzImage or a vmlinux`
	noHdrS := defaultBz().image()
	copy(noHdrS[hdrMagic:], "XXXX")
	oldBz := defaultBz()
	oldBz.version = 0x0206
	tests := []struct {
		name string
		img  []byte
		want string
	}{
		{"empty", nil, neither},
		{"text", []byte("#!/bin/sh\necho not a kernel\n"), neither},
		{"boot sector without HdrS", noHdrS, neither},
		{"old bzImage", oldBz.image(), "kernel boot protocol 2.06 is too old: need 2.10 or later"},
		{"ELF without multiboot header", elf32(0x100000, 0x100000, make([]byte, 64), 0x1000), "neither a multiboot header nor a PVH entry note"},
	}
	for _, tt := range tests {
		_, err := ParseKernelImage("guest.bin", tt.img)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one with %q", tt.name, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tt.name, err)
		}
	}
	if _, err := ParseKernelImage("guest.bin", nil); err == nil || err.Error() != neither {
		t.Errorf("unknown format: %v, want exactly %q", err, neither)
	}
}

func TestReadKernelImage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(p, defaultBz().image(), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := ReadKernelImage(p)
	if err != nil || img.Linux == nil || img.Linux.Path != p {
		t.Fatalf("ReadKernelImage = %+v, %v", img, err)
	}
	if _, err := ReadKernelImage(p + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

func FuzzParseKernelImage(f *testing.F) {
	f.Add(defaultBz().image()[:0x800])
	f.Add(elf32(0x100000, 0x100000, multibootPayload(0), 0x1000))
	f.Add(x86test.PVHKernel(pvhCode, 0x2000))
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := ParseKernelImage("fuzz", data)
		if err != nil {
			return
		}
		n := 0
		for _, set := range []bool{img.Linux != nil, img.Multiboot != nil, img.PVH != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("parsed as %+v: want exactly one format", img)
		}
	})
}
