package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os/exec"
)

// bzImage setup header fields (the kernel's Documentation/arch/x86/boot.rst).
const (
	hdrSetupSects    = 0x1F1
	hdrMagic         = 0x202
	hdrVersion       = 0x206
	hdrPayloadOffset = 0x248 // from the protected-mode code; protocol 2.08+
	hdrPayloadLength = 0x24C
	payloadProtocol  = 0x0208
)

// vmlinux returns the uncompressed ELF kernel a bzImage carries, so that
// the VMM can start it by its PVH entry and skip the decompressor. The
// payload is found by the setup header's payload_offset and
// payload_length and decompressed by its magic: xz (Debian's kernels),
// with the xz tool since the kernel's xz streams use the x86 BCJ filter,
// or gzip.
func vmlinux(bz []byte) ([]byte, error) {
	if len(bz) < hdrPayloadLength+4 || string(bz[hdrMagic:hdrMagic+4]) != "HdrS" {
		return nil, fmt.Errorf("not a bzImage: no \"HdrS\" setup header")
	}
	le := binary.LittleEndian
	if v := le.Uint16(bz[hdrVersion:]); v < payloadProtocol {
		return nil, fmt.Errorf("boot protocol %d.%02d names no payload: need 2.08 or later", v>>8, v&0xFF)
	}
	sects := int(bz[hdrSetupSects])
	if sects == 0 {
		sects = 4
	}
	off := uint64(sects+1)*512 + uint64(le.Uint32(bz[hdrPayloadOffset:]))
	n := uint64(le.Uint32(bz[hdrPayloadLength:]))
	if off+n > uint64(len(bz)) || n < 8 {
		return nil, fmt.Errorf("payload of %d bytes at %#x is outside the %d-byte file", n, off, len(bz))
	}
	payload := bz[off : off+n]
	var out []byte
	var err error
	switch {
	case bytes.HasPrefix(payload, []byte("\xFD7zXZ\x00")):
		// The stream is followed by the 4-byte uncompressed size.
		cmd := exec.Command("xz", "--decompress", "--stdout", "--single-stream")
		cmd.Stdin = bytes.NewReader(payload)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if out, err = cmd.Output(); err != nil {
			return nil, fmt.Errorf("xz: %v: %s (install xz-utils)", err, bytes.TrimSpace(stderr.Bytes()))
		}
	case bytes.HasPrefix(payload, []byte{0x1F, 0x8B}):
		zr, zerr := gzip.NewReader(bytes.NewReader(payload))
		if zerr != nil {
			return nil, fmt.Errorf("gzip payload: %w", zerr)
		}
		zr.Multistream(false)
		if out, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("gzip payload: %w", err)
		}
	default:
		return nil, fmt.Errorf("payload compressed with a method this tool does not know (magic % x): xz and gzip are", payload[:6])
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, fmt.Errorf("the decompressed payload is not an ELF kernel")
	}
	return out, nil
}
