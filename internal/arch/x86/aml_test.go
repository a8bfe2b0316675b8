package x86

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// Encodings checked by hand against the ACPI 6.0 specification's grammar
// (section 20.2) and resource descriptor layouts (section 6.4).
func TestAMLEncodings(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"pkglength 0", amlPkgLength(0), []byte{0x01}},
		{"pkglength 62 (one byte, 63)", amlPkgLength(62), []byte{0x3F}},
		{"pkglength 63 (two bytes, 65)", amlPkgLength(63), []byte{0x41, 0x04}},
		{"pkglength 4093 (two bytes, 4095)", amlPkgLength(4093), []byte{0x4F, 0xFF}},
		{"pkglength 4094 (three bytes, 4097)", amlPkgLength(4094), []byte{0x81, 0x00, 0x01}},
		{"pkglength 1048572 (three bytes, 0xFFFFF)", amlPkgLength(1<<20 - 4), []byte{0x8F, 0xFF, 0xFF}},
		{"pkglength 1048573 (four bytes, 0x100001)", amlPkgLength(1<<20 - 3), []byte{0xC1, 0x00, 0x00, 0x01}},
		{"zero", amlInteger(0), []byte{0x00}},
		{"one", amlInteger(1), []byte{0x01}},
		{"byte", amlInteger(5), []byte{0x0A, 0x05}},
		{"word", amlInteger(0x1234), []byte{0x0B, 0x34, 0x12}},
		{"dword", amlInteger(0x0001FFFF), []byte{0x0C, 0xFF, 0xFF, 0x01, 0x00}},
		{"qword", amlInteger(1 << 32), []byte{0x0E, 0, 0, 0, 0, 1, 0, 0, 0}},
		{"name seg", amlNameString("_HID"), []byte("_HID")},
		{"padded name seg", amlNameString("_SB"), []byte("_SB_")},
		{"root path", amlNameString(`\_SB.PCI0`), []byte("\\\x2e_SB_PCI0")},
		{"multi-segment path", amlNameString(`\_SB.PCI0.LN0A`), []byte("\\\x2f\x03_SB_PCI0LN0A")},
		{"EISA ID PNP0A03", amlEISAID("PNP0A03"), []byte{0x0C, 0x41, 0xD0, 0x0A, 0x03}},
		{"EISA ID PNP0501", amlEISAID("PNP0501"), []byte{0x0C, 0x41, 0xD0, 0x05, 0x01}},
		{"EISA ID PNP0C0F", amlEISAID("PNP0C0F"), []byte{0x0C, 0x41, 0xD0, 0x0C, 0x0F}},
		{"Name(\\_S5, Package(){5, 5, 0, 0})",
			amlName(`\_S5`, amlPackage(amlInteger(5), amlInteger(5), amlInteger(0), amlInteger(0))),
			[]byte{0x08, '\\', '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00}},
		{"Method(_SRS, 1) {}", amlMethod("_SRS", 1), []byte{0x14, 0x06, '_', 'S', 'R', 'S', 0x01}},
		{"Device(COM1) { Name(_UID, One) }", amlDevice("COM1", amlName("_UID", amlInteger(1))),
			[]byte{0x5B, 0x82, 0x0B, 'C', 'O', 'M', '1', 0x08, '_', 'U', 'I', 'D', 0x01}},
		{"Buffer() {1, 2}", amlBuffer([]byte{1, 2}), []byte{0x11, 0x05, 0x0A, 0x02, 1, 2}},
		{"IO(Decode16, 0x3F8, 0x3F8, 1, 8)", resIOPort(0x3F8, 8), []byte{0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08}},
		{"IRQNoFlags() {4}", resIRQ(4), []byte{0x22, 0x10, 0x00}},
		{"WordBusNumber 0-255", resWordWindow(resTypeBus, 0, 0, 0xFF),
			[]byte{0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0, 0, 0x00, 0x00, 0xFF, 0x00, 0, 0, 0x00, 0x01}},
		{"WordIO 0xD00-0xFFFF", resWordWindow(resTypeIO, resIORangeAll, 0xD00, 0xFFFF),
			[]byte{0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0, 0, 0x00, 0x0D, 0xFF, 0xFF, 0, 0, 0x00, 0xF3}},
		{"DWordMemory 0xC0000000-0xFEBFFFFF", resDWordMemWindow(0xC0000000, 0xFEBFFFFF),
			[]byte{0x87, 0x17, 0x00, 0x00, 0x0C, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF, 0xBF, 0xFE, 0, 0, 0, 0, 0, 0, 0xC0, 0x3E}},
		{"Interrupt(Consumer, Edge, ActiveHigh, Exclusive) {10}", resInterrupt(10, false),
			[]byte{0x89, 0x06, 0x00, 0x03, 0x01, 0x0A, 0, 0, 0}},
		{"Interrupt(Consumer, Edge, ActiveHigh, Shared) {16}", resInterrupt(16, true),
			[]byte{0x89, 0x06, 0x00, 0x0B, 0x01, 0x10, 0, 0, 0}},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s = % x, want % x", tt.name, tt.got, tt.want)
		}
	}
}

// TestAMLPkgLengthRoundTrip decodes every PkgLength form back.
func TestAMLPkgLengthRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 61, 62, 63, 64, 100, 4092, 4093, 4094, 5000, 1<<20 - 5, 1<<20 - 4, 1 << 24} {
		enc := amlPkgLength(n)
		d := &amlDecoder{b: append(enc, make([]byte, n)...)}
		end := d.pkgEnd()
		if d.err != nil || end != len(enc)+n || d.pos != len(enc) {
			t.Errorf("PkgLength(%d) = % x decodes to end %d at %d (%v)", n, enc, end, d.pos, d.err)
		}
	}
}

// amlObject is a decoded AML data object: uint64, a buffer ([]byte), a
// package ([]amlObject), a name reference (amlRef) or a method (amlMethodDef).
type amlObject any

type amlRef string

type amlMethodDef struct {
	args int
	body []byte
}

// amlDecoder decodes the AML subset the DSDT uses into a flat namespace:
// absolute paths ("\_SB_.PCI0._HID") to objects, scopes and devices to nil
// entries listed in devices. It is written from the specification's
// grammar, separately from the encoder it checks.
type amlDecoder struct {
	b       []byte
	pos     int
	err     error
	names   map[string]amlObject
	devices []string
}

func decodeAML(b []byte) (*amlDecoder, error) {
	d := &amlDecoder{b: b, names: map[string]amlObject{}}
	d.termList(`\`, len(b))
	return d, d.err
}

func (d *amlDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("aml at %#x: %s", d.pos, fmt.Sprintf(format, args...))
	}
	d.pos = len(d.b)
}

func (d *amlDecoder) byte() byte {
	if d.pos >= len(d.b) {
		d.fail("truncated")
		return 0
	}
	c := d.b[d.pos]
	d.pos++
	return c
}

func (d *amlDecoder) bytes(n int) []byte {
	if n < 0 || d.pos+n > len(d.b) {
		d.fail("truncated: %d bytes wanted", n)
		return nil
	}
	s := d.b[d.pos : d.pos+n]
	d.pos += n
	return s
}

// pkgEnd reads a PkgLength and returns the end offset of its package.
func (d *amlDecoder) pkgEnd() int {
	start := d.pos
	lead := d.byte()
	extra := int(lead >> 6)
	if extra == 0 {
		return start + int(lead&0x3F)
	}
	n := int(lead & 0x0F)
	for i := 0; i < extra; i++ {
		n |= int(d.byte()) << (4 + 8*i)
	}
	if start+n > len(d.b) {
		d.fail("package of %d bytes overruns the table", n)
	}
	return start + n
}

func (d *amlDecoder) nameSeg() string {
	s := string(d.bytes(4))
	return strings.TrimRight(s, "_")
}

// nameString reads a NameString and returns it as a path relative to
// scope, or absolute.
func (d *amlDecoder) nameString(scope string) string {
	abs := false
	if d.pos < len(d.b) && d.b[d.pos] == '\\' {
		abs = true
		d.pos++
	}
	var segs []string
	switch c := d.b[d.pos]; c {
	case 0x2E:
		d.pos++
		segs = []string{d.nameSeg(), d.nameSeg()}
	case 0x2F:
		d.pos++
		for n := int(d.byte()); n > 0; n-- {
			segs = append(segs, d.nameSeg())
		}
	default:
		segs = []string{d.nameSeg()}
	}
	p := strings.Join(segs, ".")
	if abs {
		return `\` + p
	}
	if scope == `\` {
		return `\` + p
	}
	return scope + "." + p
}

func (d *amlDecoder) termList(scope string, end int) {
	for d.err == nil && d.pos < end {
		switch op := d.byte(); op {
		case 0x10: // ScopeOp
			e := d.pkgEnd()
			name := d.nameString(scope)
			d.termList(name, e)
		case 0x5B:
			if d.byte() != 0x82 {
				d.fail("extended opcode %#x", d.b[d.pos-1])
				return
			}
			e := d.pkgEnd()
			name := d.nameString(scope)
			d.devices = append(d.devices, name)
			d.names[name] = nil
			d.termList(name, e)
		case 0x08: // NameOp
			name := d.nameString(scope)
			d.names[name] = d.dataObject(scope)
		case 0x14: // MethodOp
			e := d.pkgEnd()
			name := d.nameString(scope)
			flags := d.byte()
			d.names[name] = amlMethodDef{args: int(flags & 7), body: d.bytes(e - d.pos)}
		default:
			d.fail("unexpected opcode %#x", op)
		}
	}
	if d.pos != end && d.err == nil {
		d.fail("term list ends at %#x, package at %#x", d.pos, end)
	}
}

func (d *amlDecoder) dataObject(scope string) amlObject {
	le := binary.LittleEndian
	switch op := d.b[d.pos]; op {
	case 0x00, 0x01:
		d.pos++
		return uint64(op)
	case 0x0A:
		d.pos++
		return uint64(d.byte())
	case 0x0B:
		d.pos++
		return uint64(le.Uint16(d.bytes(2)))
	case 0x0C:
		d.pos++
		return uint64(le.Uint32(d.bytes(4)))
	case 0x0E:
		d.pos++
		return le.Uint64(d.bytes(8))
	case 0x11: // BufferOp
		d.pos++
		e := d.pkgEnd()
		size, ok := d.dataObject(scope).(uint64)
		if !ok || int(size) != e-d.pos {
			d.fail("buffer size %v, %d bytes follow", size, e-d.pos)
			return nil
		}
		return append([]byte(nil), d.bytes(e-d.pos)...)
	case 0x12: // PackageOp
		d.pos++
		e := d.pkgEnd()
		n := int(d.byte())
		var elems []amlObject
		for d.pos < e && d.err == nil {
			elems = append(elems, d.dataObject(scope))
		}
		if len(elems) != n {
			d.fail("package says %d elements, holds %d", n, len(elems))
		}
		return elems
	case '\\', 0x2E, 0x2F:
		return amlRef(d.nameString(`\`))
	default:
		if op >= 'A' && op <= 'Z' || op == '_' {
			return amlRef(d.nameString(`\`))
		}
		d.fail("unexpected data opcode %#x", op)
		return nil
	}
}

// eisaIDString is the inverse of EisaId(): five-bit letters, hex digits.
func eisaIDString(v uint64) string {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(v))
	x := binary.BigEndian.Uint32(b[:])
	return fmt.Sprintf("%c%c%c%04X", '@'+byte(x>>26&31), '@'+byte(x>>21&31), '@'+byte(x>>16&31), x&0xFFFF)
}
