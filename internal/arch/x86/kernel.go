package x86

import (
	"bytes"
	"fmt"
	"os"
)

// KernelImage is a guest kernel file parsed as the format its headers
// name: exactly one of Multiboot, Linux and PVH is set.
type KernelImage struct {
	Multiboot *Kernel // a multiboot v1 ELF (the test guest)
	Linux     *Linux  // a Linux bzImage
	PVH       *PVH    // an ELF with a PVH entry note (Linux's vmlinux)
}

// TakesInitrd reports whether the kernel is Linux, in either format.
func (k *KernelImage) TakesInitrd() bool { return k.Linux != nil || k.PVH != nil }

// ReadKernelImage reads a guest kernel file and parses it as a multiboot
// v1 ELF, a Linux bzImage or a PVH ELF, whichever its headers say it is.
func ReadKernelImage(path string) (*KernelImage, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("x86: read kernel: %w", err)
	}
	return ParseKernelImage(path, data)
}

// ParseKernelImage tells a bzImage (0xAA55 boot flag at 510 and "HdrS" at
// 0x202) from a multiboot kernel (a multiboot header in the first 8 KiB)
// and a PVH kernel (an ELF with a XEN_ELFNOTE_PHYS32_ENTRY note) and
// parses it; anything else is refused with one line saying what was
// expected. It never panics on malformed input.
func ParseKernelImage(path string, data []byte) (*KernelImage, error) {
	switch {
	case isBzImage(data):
		k, err := ParseLinux(path, data)
		if err != nil {
			return nil, err
		}
		return &KernelImage{Linux: k}, nil
	case bytes.HasPrefix(data, []byte("\x7fELF")) && !hasMultibootHeader(data):
		k, err := ParsePVH(path, data)
		if err != nil {
			return nil, err
		}
		return &KernelImage{PVH: k}, nil
	case bytes.HasPrefix(data, []byte("\x7fELF")) || hasMultibootHeader(data):
		k, err := ParseKernel(path, data)
		if err != nil {
			return nil, err
		}
		return &KernelImage{Multiboot: k}, nil
	}
	return nil, fmt.Errorf("x86: %s is neither a multiboot v1 ELF nor a Linux kernel (no \"HdrS\" boot header at 0x202, no ELF with a PVH note): build the test guest with `make guest` or give a bzImage or a vmlinux", path)
}

// hasMultibootHeader reports whether data holds a valid multiboot v1
// header where the specification puts it.
func hasMultibootHeader(data []byte) bool {
	_, err := findMultibootHeader(data)
	return err == nil
}
