package x86

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// A small encoder for the subset of ACPI Machine Language (ACPI 6.0,
// chapter 20) the DSDT needs: scopes, devices, named data objects,
// methods with empty bodies, packages, buffers, integers, and the resource
// descriptors of chapter 6.4 that go in _CRS and _PRS buffers. Every
// helper returns the encoded bytes of one term; callers concatenate them.

// AML opcodes and prefixes.
const (
	amlZeroOp      = 0x00
	amlOneOp       = 0x01
	amlNameOp      = 0x08
	amlBytePrefix  = 0x0A
	amlWordPrefix  = 0x0B
	amlDWordPrefix = 0x0C
	amlQWordPrefix = 0x0E
	amlScopeOp     = 0x10
	amlBufferOp    = 0x11
	amlPackageOp   = 0x12
	amlMethodOp    = 0x14
	amlDualName    = 0x2E
	amlMultiName   = 0x2F
	amlRootChar    = '\\'
	amlExtOpPrefix = 0x5B
	amlDeviceExtOp = 0x82
)

// amlPkgLength encodes a PkgLength for n bytes of contents that follow it.
// The encoded value counts the PkgLength bytes themselves: one byte holds
// up to 63, longer forms put the count of extra bytes in bits 7-6 of the
// lead byte, the low nibble in bits 3-0 and the rest in the extra bytes.
func amlPkgLength(n int) []byte {
	if n+1 <= 0x3F {
		return []byte{byte(n + 1)}
	}
	for extra := 1; extra <= 3; extra++ {
		total := n + 1 + extra
		if total < 1<<(4+8*extra) {
			b := []byte{byte(extra<<6 | total&0x0F)}
			for i := 0; i < extra; i++ {
				b = append(b, byte(total>>(4+8*i)))
			}
			return b
		}
	}
	panic(fmt.Sprintf("aml: package of %d bytes exceeds the PkgLength limit", n))
}

// amlNameSeg returns a four-character name segment, padding a shorter name
// with underscores as ASL does ("_SB" is "_SB_").
func amlNameSeg(s string) []byte {
	if len(s) == 0 || len(s) > 4 {
		panic(fmt.Sprintf("aml: bad name segment %q", s))
	}
	for i, c := range s {
		if !(c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			panic(fmt.Sprintf("aml: bad name segment %q", s))
		}
	}
	return []byte(s + strings.Repeat("_", 4-len(s)))
}

// amlNameString encodes a name path: an optional leading backslash (the
// root) and dot-separated segments, e.g. `\_SB.PCI0` or `_HID`.
func amlNameString(path string) []byte {
	var b []byte
	if rest, ok := strings.CutPrefix(path, `\`); ok {
		b = append(b, amlRootChar)
		path = rest
	}
	segs := strings.Split(path, ".")
	switch len(segs) {
	case 1:
	case 2:
		b = append(b, amlDualName)
	default:
		b = append(b, amlMultiName, byte(len(segs)))
	}
	for _, s := range segs {
		b = append(b, amlNameSeg(s)...)
	}
	return b
}

// amlInteger encodes v in the shortest form: ZeroOp, OneOp, or a byte,
// word, dword or qword constant.
func amlInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZeroOp}
	case v == 1:
		return []byte{amlOneOp}
	case v <= 0xFF:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xFFFF:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xFFFFFFFF:
		return binary.LittleEndian.AppendUint32([]byte{amlDWordPrefix}, uint32(v))
	}
	return binary.LittleEndian.AppendUint64([]byte{amlQWordPrefix}, v)
}

// amlEISAID encodes a PNP identifier such as "PNP0A03" as the compressed
// EISA ID dword ASL's EisaId() produces: three letters of five bits each
// ('A' is 1), then four hex digits, stored big-endian nibble by nibble.
func amlEISAID(id string) []byte {
	if len(id) != 7 {
		panic(fmt.Sprintf("aml: bad EISA ID %q", id))
	}
	var v uint32
	for _, c := range id[:3] {
		if c < 'A' || c > 'Z' {
			panic(fmt.Sprintf("aml: bad EISA ID %q", id))
		}
		v = v<<5 | uint32(c-'@')
	}
	for _, c := range id[3:] {
		var d uint32
		switch {
		case c >= '0' && c <= '9':
			d = uint32(c - '0')
		case c >= 'A' && c <= 'F':
			d = uint32(c-'A') + 10
		default:
			panic(fmt.Sprintf("aml: bad EISA ID %q", id))
		}
		v = v<<4 | d
	}
	// v holds the 32-bit ID most significant byte first; AML stores it
	// as a little-endian dword of those bytes in that order.
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return append([]byte{amlDWordPrefix}, b[:]...)
}

// amlWithLength returns op, a PkgLength for the rest, and the rest.
func amlWithLength(op []byte, rest ...[]byte) []byte {
	body := concat(rest...)
	b := append([]byte(nil), op...)
	b = append(b, amlPkgLength(len(body))...)
	return append(b, body...)
}

// amlName encodes Name(name, value).
func amlName(name string, value []byte) []byte {
	return concat([]byte{amlNameOp}, amlNameString(name), value)
}

// amlScope encodes Scope(path) { terms }.
func amlScope(path string, terms ...[]byte) []byte {
	return amlWithLength([]byte{amlScopeOp}, amlNameString(path), concat(terms...))
}

// amlDevice encodes Device(name) { terms }.
func amlDevice(name string, terms ...[]byte) []byte {
	return amlWithLength([]byte{amlExtOpPrefix, amlDeviceExtOp}, amlNameString(name), concat(terms...))
}

// amlMethod encodes a NotSerialized Method(name, args) { terms }.
func amlMethod(name string, args int, terms ...[]byte) []byte {
	return amlWithLength([]byte{amlMethodOp}, amlNameString(name), []byte{byte(args & 7)}, concat(terms...))
}

// amlPackage encodes Package() { elements }, each element an integer,
// a name reference or a nested package.
func amlPackage(elems ...[]byte) []byte {
	return amlWithLength([]byte{amlPackageOp}, []byte{byte(len(elems))}, concat(elems...))
}

// amlBuffer encodes Buffer() { data }.
func amlBuffer(data []byte) []byte {
	return amlWithLength([]byte{amlBufferOp}, amlInteger(uint64(len(data))), data)
}

// Resource descriptors (ACPI 6.0 section 6.4).
const (
	resIRQNoFlags   = 0x22 // small IRQ descriptor, 2 bytes: edge, active-high
	resIO           = 0x47 // small I/O port descriptor, 7 bytes
	resEndTag       = 0x79 // small end tag, 1 byte
	resDWordAddress = 0x87 // large DWord address space descriptor
	resWordAddress  = 0x88 // large Word address space descriptor
	resExtInterrupt = 0x89 // large extended interrupt descriptor

	resTypeMemory = 0
	resTypeIO     = 1
	resTypeBus    = 2

	// General flags of an address space descriptor for a bridge window:
	// produced by the bridge, positive decode, fixed minimum and maximum.
	resWindowFlags = 1<<2 | 1<<3
	resIORangeAll  = 3 // I/O type flags: ISA and non-ISA ranges
	resMemRW       = 1 // memory type flags: read/write, non-cacheable

	// Extended interrupt descriptor flags.
	resIntConsumer = 1 << 0
	resIntEdge     = 1 << 1
	resIntShared   = 1 << 3
)

// amlResourceTemplate encodes ResourceTemplate() { descs }: the
// descriptors and an end tag in a buffer. A zero checksum in the end tag
// tells the OS not to check one.
func amlResourceTemplate(descs ...[]byte) []byte {
	return amlBuffer(append(concat(descs...), resEndTag, 0))
}

// resIOPort is IO(Decode16, base, base, 1, n): n fixed ports at base.
func resIOPort(base uint16, n uint8) []byte {
	b := []byte{resIO, 1}
	b = binary.LittleEndian.AppendUint16(b, base)
	b = binary.LittleEndian.AppendUint16(b, base)
	return append(b, 1, n)
}

// resIRQ is IRQNoFlags() { irq }: an ISA interrupt, edge-triggered,
// active-high.
func resIRQ(irq uint8) []byte {
	return binary.LittleEndian.AppendUint16([]byte{resIRQNoFlags}, 1<<irq)
}

// resWordWindow is a WordBusNumber or WordIO bridge window [lo, hi].
func resWordWindow(kind, typeFlags byte, lo, hi uint16) []byte {
	b := binary.LittleEndian.AppendUint16([]byte{resWordAddress}, 13)
	b = append(b, kind, resWindowFlags, typeFlags)
	for _, v := range []uint16{0, lo, hi, 0, hi - lo + 1} { // granularity, min, max, translation, length
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// resDWordMemWindow is a DWordMemory bridge window [lo, hi].
func resDWordMemWindow(lo, hi uint32) []byte {
	b := binary.LittleEndian.AppendUint16([]byte{resDWordAddress}, 23)
	b = append(b, resTypeMemory, resWindowFlags, resMemRW)
	for _, v := range []uint32{0, lo, hi, 0, hi - lo + 1} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// resInterrupt is Interrupt(ResourceConsumer, Edge, ActiveHigh,
// Exclusive or Shared) { gsi }.
func resInterrupt(gsi uint32, shared bool) []byte {
	flags := byte(resIntConsumer | resIntEdge)
	if shared {
		flags |= resIntShared
	}
	b := binary.LittleEndian.AppendUint16([]byte{resExtInterrupt}, 6)
	b = append(b, flags, 1)
	return binary.LittleEndian.AppendUint32(b, gsi)
}

// concat joins byte slices.
func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}
