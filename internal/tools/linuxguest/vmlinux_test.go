package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os/exec"
	"strings"
	"testing"
)

// fakeBz wraps payload in a bzImage's setup header the way the kernel's
// build lays it out: setup sectors, then the decompressor, whose
// payload_offset names where the compressed kernel starts, followed by the
// 4-byte size the kernel's build appends.
func fakeBz(payload []byte) []byte {
	const setupSects, stub = 4, 100
	bz := make([]byte, (setupSects+1)*512+stub)
	le := binary.LittleEndian
	bz[hdrSetupSects] = setupSects
	copy(bz[hdrMagic:], "HdrS")
	le.PutUint16(bz[hdrVersion:], 0x020F)
	le.PutUint32(bz[hdrPayloadOffset:], stub)
	le.PutUint32(bz[hdrPayloadLength:], uint32(len(payload)+4))
	bz = append(bz, payload...)
	return append(bz, 1, 2, 3, 4)
}

var elfKernel = append([]byte("\x7fELF"), bytes.Repeat([]byte("kernel text "), 1000)...)

func TestVmlinuxGzip(t *testing.T) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(elfKernel)
	zw.Close()
	got, err := vmlinux(fakeBz(b.Bytes()))
	if err != nil || !bytes.Equal(got, elfKernel) {
		t.Fatalf("vmlinux = %d bytes, %v; want the %d-byte ELF", len(got), err, len(elfKernel))
	}
}

func TestVmlinuxXZ(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Fatal("xz is not installed: make deps installs xz-utils")
	}
	cmd := exec.Command("xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB", "--stdout")
	cmd.Stdin = bytes.NewReader(elfKernel)
	xz, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	got, err := vmlinux(fakeBz(xz))
	if err != nil || !bytes.Equal(got, elfKernel) {
		t.Fatalf("vmlinux = %d bytes, %v; want the %d-byte ELF", len(got), err, len(elfKernel))
	}
}

func TestVmlinuxRefuses(t *testing.T) {
	old := fakeBz([]byte{0x1F, 0x8B, 0, 0, 0, 0, 0, 0})
	binary.LittleEndian.PutUint16(old[hdrVersion:], 0x0206)
	outside := fakeBz([]byte("\xFD7zXZ\x00"))
	binary.LittleEndian.PutUint32(outside[hdrPayloadLength:], 1<<20)
	var notELF bytes.Buffer
	zw := gzip.NewWriter(&notELF)
	zw.Write([]byte("not a kernel"))
	zw.Close()
	tests := []struct {
		name string
		bz   []byte
		want string
	}{
		{"no header", make([]byte, 1024), "not a bzImage"},
		{"old protocol", old, "boot protocol 2.06 names no payload"},
		{"payload outside", outside, "outside the"},
		{"lz4", fakeBz([]byte{0x02, 0x21, 0x4C, 0x18, 0, 0, 0, 0}), "compressed with a method this tool does not know"},
		{"not an ELF", fakeBz(notELF.Bytes()), "not an ELF kernel"},
	}
	for _, tt := range tests {
		if _, err := vmlinux(tt.bz); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}
