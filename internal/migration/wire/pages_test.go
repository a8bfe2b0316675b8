package wire

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// fakeRAM is a PageSink of two regions of 32 pages, at 0 and at 1 MiB, with
// a hole between them. The regions sit in one buffer between guard bytes
// so that a test can tell if anything was written outside them.
type fakeRAM struct {
	mem     []byte
	regions []fakeRegion
	zeroed  uint64
}

type fakeRegion struct {
	gpa uint64
	off int // in mem
	len int
}

const (
	fakeGuard = PageSize
	fakePages = 32
	fakeHigh  = 1 << 20
	guardByte = 0xee
)

// fakeTemplate is a fresh fakeRAM's memory: guards, zero regions, guard.
var fakeTemplate = func() []byte {
	n := fakePages * PageSize
	b := make([]byte, 3*fakeGuard+2*n)
	copy(b, guardPage)
	copy(b[fakeGuard+n:], guardPage)
	copy(b[2*fakeGuard+2*n:], guardPage)
	return b
}()

var guardPage = bytes.Repeat([]byte{guardByte}, fakeGuard)

func newFakeRAM() *fakeRAM {
	n := fakePages * PageSize
	return &fakeRAM{
		mem:     bytes.Clone(fakeTemplate),
		regions: []fakeRegion{{0, fakeGuard, n}, {fakeHigh, 2*fakeGuard + n, n}},
	}
}

func (f *fakeRAM) find(gpa uint64, npages uint32) ([]byte, error) {
	size := uint64(npages) * PageSize
	for _, r := range f.regions {
		if gpa >= r.gpa && gpa-r.gpa < uint64(r.len) && size <= uint64(r.len)-(gpa-r.gpa) {
			lo := r.off + int(gpa-r.gpa)
			hi := lo + int(size)
			return f.mem[lo:hi:hi], nil
		}
	}
	return nil, fmt.Errorf("fake RAM: %d pages at %#x are not RAM", npages, gpa)
}

func (f *fakeRAM) PageSlice(gpa uint64, npages uint32) ([]byte, error) { return f.find(gpa, npages) }

func (f *fakeRAM) ZeroPages(gpa uint64, npages uint32) error {
	b, err := f.find(gpa, npages)
	if err == nil {
		clear(b)
		f.zeroed += uint64(npages)
	}
	return err
}

// guardsIntact reports whether every byte outside the regions still holds
// the guard pattern.
func (f *fakeRAM) guardsIntact() bool {
	n := fakePages * PageSize
	return bytes.Equal(f.mem[:fakeGuard], guardPage) &&
		bytes.Equal(f.mem[fakeGuard+n:2*fakeGuard+n], guardPage) &&
		bytes.Equal(f.mem[2*fakeGuard+2*n:], guardPage)
}

func (f *fakeRAM) at(gpa uint64) []byte {
	b, err := f.find(gpa, 1)
	if err != nil {
		panic(err)
	}
	return b
}

func pattern(npages int, seed byte) []byte {
	b := make([]byte, npages*PageSize)
	for i := range b {
		b[i] = seed + byte(i/PageSize) + byte(i*7)
	}
	return b
}

func TestPagesRoundTrip(t *testing.T) {
	src := newFakeRAM()
	copy(src.mem[src.regions[0].off:], pattern(fakePages, 1))
	copy(src.mem[src.regions[1].off:], pattern(fakePages, 100))
	runs := []Run{
		{GPA: 0, NPages: 3, Kind: KindData},
		{GPA: 3 * PageSize, NPages: 5, Kind: KindZero},
		{GPA: fakeHigh + 4*PageSize, NPages: 28, Kind: KindData},
		{GPA: 31 * PageSize, NPages: 1, Kind: KindData},
	}
	for i := range runs {
		if runs[i].Kind == KindData {
			runs[i].Data, _ = src.find(runs[i].GPA, runs[i].NPages)
		}
	}
	var buf bytes.Buffer
	n, err := WritePages(&buf, 7, runs)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(HeaderSize + PagesPayloadLen(runs)); n != want || int64(buf.Len()) != want {
		t.Fatalf("wrote %d bytes (buffer %d), want %d", n, buf.Len(), want)
	}
	dst := newFakeRAM()
	for i := range dst.mem[dst.regions[0].off : dst.regions[0].off+dst.regions[0].len] {
		dst.mem[dst.regions[0].off+i] = 0x55 // so that ZERO runs show
	}
	h, err := ReadHeader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if h.Type != TypePages || h.Iteration != 7 {
		t.Fatalf("header %v", h)
	}
	st, err := ReadPages(&buf, h, dst)
	if err != nil {
		t.Fatal(err)
	}
	if st != (Stats{Runs: 4, DataPages: 32, ZeroPages: 5, Bytes: h.Length}) {
		t.Errorf("stats %+v", st)
	}
	if buf.Len() != 0 {
		t.Errorf("%d bytes left unread", buf.Len())
	}
	for _, r := range runs {
		got, _ := dst.find(r.GPA, r.NPages)
		want := r.Data
		if r.Kind == KindZero {
			want = make([]byte, len(got))
		}
		if !bytes.Equal(got, want) {
			t.Errorf("run at %#x differs after transfer", r.GPA)
		}
	}
	if !bytes.Equal(dst.at(8*PageSize), bytes.Repeat([]byte{0x55}, PageSize)) {
		t.Error("a page not in any run changed")
	}
	if !dst.guardsIntact() {
		t.Error("guard bytes changed")
	}
}

func TestWritePagesRejects(t *testing.T) {
	page := make([]byte, PageSize)
	for _, tc := range []struct {
		name string
		runs []Run
		want string
	}{
		{"unaligned", []Run{{GPA: 12, NPages: 1, Data: page}}, "run 0: gpa 0xc not page aligned"},
		{"empty run", []Run{{GPA: 0, NPages: 0}}, "run 0: no pages"},
		{"kind", []Run{{NPages: 1, Kind: 5}}, "unknown kind 5"},
		{"short data", []Run{{NPages: 2, Data: page}}, "DATA run of 2 pages with 4096 data bytes"},
		{"zero with data", []Run{{NPages: 1, Kind: KindZero, Data: page}}, "ZERO run of 1 pages with 4096 data bytes"},
		{"overflow", []Run{{GPA: 1<<64 - PageSize, NPages: 2, Kind: KindZero}}, "overflows"},
		{"too many runs", make([]Run, MaxRuns+1), "runs exceed"},
		{"too many pages", []Run{{NPages: MaxDataPages + 1, Data: make([]byte, (MaxDataPages+1)*PageSize)}}, "more than 4096 DATA pages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, err := WritePages(&buf, 0, tc.runs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

// rawPages builds a PAGES payload by hand: runs as given (with pad bytes),
// then extra bytes.
func rawPages(count uint32, runs [][4]uint64, extra int) []byte {
	b := le32(nil, count)
	for _, r := range runs { // gpa, npages, kind, pad
		b = le64(b, r[0])
		b = le32(b, uint32(r[1]))
		b = append(b, byte(r[2]), byte(r[3]), 0, 0)
	}
	return append(b, make([]byte, extra)...)
}

func le32(b []byte, v uint32) []byte { return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24)) }
func le64(b []byte, v uint64) []byte { return le32(le32(b, uint32(v)), uint32(v>>32)) }

func TestReadPagesMalformed(t *testing.T) {
	const P = PageSize
	for _, tc := range []struct {
		name    string
		payload []byte
		length  int // header length if not len(payload); -1 for len
		want    string
	}{
		{"empty", nil, -1, "too short for the run count"},
		{"too many runs", rawPages(MaxRuns+1, nil, 0), -1, "4097 runs exceed 4096"},
		{"table beyond payload", rawPages(3, nil, 16), -1, "3 runs need 52 bytes, payload has 20"},
		{"unaligned", rawPages(2, [][4]uint64{{0, 1, 0, 0}, {fakeHigh + 1, 1, 1, 0}}, P), -1, "PAGES run 1: gpa 0x100001 not page aligned"},
		{"no pages", rawPages(1, [][4]uint64{{0, 0, 1, 0}}, 0), -1, "run 0: no pages"},
		{"kind", rawPages(1, [][4]uint64{{0, 1, 2, 0}}, 0), -1, "run 0: unknown kind 2"},
		{"padding", rawPages(1, [][4]uint64{{0, 1, 1, 9}}, 0), -1, "run 0: padding not zero"},
		{"overflow", rawPages(1, [][4]uint64{{1<<64 - P, 2, 1, 0}}, 0), -1, "overflows"},
		{"data pages bound", rawPages(2, [][4]uint64{{0, 4000, 0, 0}, {0, 100, 0, 0}}, 0), -1, "run 1: more than 4096 DATA pages"},
		{"short payload", rawPages(1, [][4]uint64{{0, 2, 0, 0}}, P), -1, "payload 4116 bytes, run table says 8212"},
		{"long payload", rawPages(1, [][4]uint64{{0, 1, 0, 0}}, P+1), -1, "payload 4117 bytes, run table says 4116"},
		{"hole", rawPages(1, [][4]uint64{{64 * P, 1, 0, 0}}, P), -1, "run 0: fake RAM: 1 pages at 0x40000 are not RAM"},
		{"across region end", rawPages(1, [][4]uint64{{30 * P, 3, 0, 0}}, 3*P), -1, "not RAM"},
		{"zero in hole", rawPages(1, [][4]uint64{{1 << 30, 1, 1, 0}}, 0), -1, "not RAM"},
		{"truncated data", rawPages(1, [][4]uint64{{0, 2, 0, 0}}, P), 4 + 16 + 2*P, "read PAGES run 0 (2 pages at 0x0): unexpected EOF"},
		{"truncated table", rawPages(2, [][4]uint64{{0, 1, 1, 0}}, 0), 36, "read PAGES run table: unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.length
			if n < 0 {
				n = len(tc.payload)
			}
			dst := newFakeRAM()
			_, err := ReadPages(bytes.NewReader(tc.payload), Header{Type: TypePages, Length: uint64(n)}, dst)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if !dst.guardsIntact() {
				t.Error("guard bytes changed")
			}
		})
	}
	if _, err := ReadPages(bytes.NewReader(nil), Header{Type: TypeState}, newFakeRAM()); err == nil {
		t.Error("ReadPages accepted a STATE header")
	}
	if _, err := ReadPages(bytes.NewReader(nil), Header{Type: TypePages, Length: MaxPagesPayload + 1}, newFakeRAM()); err == nil {
		t.Error("ReadPages accepted an oversized frame")
	}
}

// A failing validation must store nothing: a bad run late in the table
// stops the frame before the first run's bytes are read.
func TestReadPagesValidatesFirst(t *testing.T) {
	payload := rawPages(2, [][4]uint64{{0, 1, 0, 0}, {64 * PageSize, 1, 0, 0}}, 2*PageSize)
	for i := 36; i < len(payload); i++ {
		payload[i] = 0x77
	}
	dst := newFakeRAM()
	_, err := ReadPages(bytes.NewReader(payload), Header{Type: TypePages, Length: uint64(len(payload))}, dst)
	if err == nil {
		t.Fatal("no error")
	}
	if dst.at(0)[0] != 0 {
		t.Error("page 0 was written before validation failed")
	}
}

// ReadPages never reads past its frame.
func TestReadPagesStopsAtFrame(t *testing.T) {
	payload := rawPages(1, [][4]uint64{{0, 1, 1, 0}}, 0)
	r := bytes.NewReader(append(payload, "next frame"...))
	if _, err := ReadPages(r, Header{Type: TypePages, Length: uint64(len(payload))}, newFakeRAM()); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "next frame" {
		t.Errorf("left %q", rest)
	}
}

type badSink struct{ fakeRAM }

func (b *badSink) PageSlice(gpa uint64, npages uint32) ([]byte, error) {
	s, err := b.fakeRAM.PageSlice(gpa, npages)
	return s[:len(s)-1], err
}

func TestReadPagesBadSink(t *testing.T) {
	payload := rawPages(1, [][4]uint64{{0, 1, 0, 0}}, PageSize)
	_, err := ReadPages(bytes.NewReader(payload), Header{Type: TypePages, Length: uint64(len(payload))}, &badSink{*newFakeRAM()})
	if err == nil || !strings.Contains(err.Error(), "sink returned 4095 bytes for 1 pages") {
		t.Fatalf("error %v", err)
	}
}
