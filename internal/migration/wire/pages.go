package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// PageSize is the size of a guest page as the stream counts it.
const PageSize = 4096

// runSize is the size of one entry of a PAGES run table.
const runSize = 16

// Kind says how a run's pages travel.
type Kind uint8

// Run kinds.
const (
	KindData Kind = 0 // npages×4096 bytes follow
	KindZero Kind = 1 // the pages are all zero; nothing follows
)

func (k Kind) String() string {
	switch k {
	case KindData:
		return "DATA"
	case KindZero:
		return "ZERO"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Run is a range of guest pages in a PAGES frame.
type Run struct {
	GPA    uint64
	NPages uint32
	Kind   Kind
	// Data holds the page bytes of a DATA run when encoding, normally a
	// slice of guest RAM: exactly NPages×4096 bytes. Nil for ZERO runs.
	Data []byte
}

// check validates a run's own fields; i is its index for errors.
func (r *Run) check(i int) error {
	switch {
	case r.Kind != KindData && r.Kind != KindZero:
		return fmt.Errorf("wire: PAGES run %d: unknown kind %d", i, uint8(r.Kind))
	case r.NPages == 0:
		return fmt.Errorf("wire: PAGES run %d: no pages", i)
	case r.GPA%PageSize != 0:
		return fmt.Errorf("wire: PAGES run %d: gpa %#x not page aligned", i, r.GPA)
	case r.GPA+uint64(r.NPages)*PageSize < r.GPA:
		return fmt.Errorf("wire: PAGES run %d: gpa %#x + %d pages overflows", i, r.GPA, r.NPages)
	}
	return nil
}

// StreamFor returns the data stream that carries the page at gpa when the
// session has n streams: (gpa >> 21) mod n. All pages of a 2 MiB chunk use
// the same stream, so a newer copy never overtakes an older one.
func StreamFor(gpa uint64, n int) int {
	if n <= 1 {
		return 0
	}
	return int((gpa >> 21) % uint64(n))
}

// PagesPayloadLen returns the payload length of a PAGES frame holding runs
// (whose fields must be valid).
func PagesPayloadLen(runs []Run) uint64 {
	n := uint64(4 + runSize*len(runs))
	for i := range runs {
		if runs[i].Kind == KindData {
			n += uint64(runs[i].NPages) * PageSize
		}
	}
	return n
}

// AppendPagesHeader validates runs and appends the frame header and the run
// table of their PAGES frame to b. The caller then writes the Data of every
// DATA run, in order.
func AppendPagesHeader(b []byte, iter uint32, runs []Run) ([]byte, error) {
	if len(runs) > MaxRuns {
		return b, fmt.Errorf("wire: PAGES: %d runs exceed %d", len(runs), MaxRuns)
	}
	var data uint64
	for i := range runs {
		r := &runs[i]
		if err := r.check(i); err != nil {
			return b, err
		}
		want := 0
		if r.Kind == KindData {
			data += uint64(r.NPages)
			want = int(r.NPages) * PageSize
		}
		if data > MaxDataPages {
			return b, fmt.Errorf("wire: PAGES: more than %d DATA pages", MaxDataPages)
		}
		if len(r.Data) != want {
			return b, fmt.Errorf("wire: PAGES run %d: %v run of %d pages with %d data bytes", i, r.Kind, r.NPages, len(r.Data))
		}
	}
	b = AppendHeader(b, Header{Type: TypePages, Iteration: iter, Length: PagesPayloadLen(runs)})
	b = binary.LittleEndian.AppendUint32(b, uint32(len(runs)))
	for i := range runs {
		b = binary.LittleEndian.AppendUint64(b, runs[i].GPA)
		b = binary.LittleEndian.AppendUint32(b, runs[i].NPages)
		b = append(b, byte(runs[i].Kind), 0, 0, 0)
	}
	return b, nil
}

// WritePages writes one PAGES frame for runs to w and returns the bytes
// written. Page bytes go from each run's Data to w without a copy: the
// header and run table, then every Data slice, are handed to w as
// net.Buffers, which a *net.TCPConn sends with writev.
func WritePages(w io.Writer, iter uint32, runs []Run) (int64, error) {
	head, err := AppendPagesHeader(make([]byte, 0, HeaderSize+4+runSize*len(runs)), iter, runs)
	if err != nil {
		return 0, err
	}
	bufs := make(net.Buffers, 1, 1+len(runs))
	bufs[0] = head
	for i := range runs {
		if runs[i].Kind == KindData {
			bufs = append(bufs, runs[i].Data)
		}
	}
	n, err := bufs.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("wire: write PAGES: %w", err)
	}
	return n, nil
}

// PageSink is where ReadPages puts pages: guest RAM on the destination.
type PageSink interface {
	// PageSlice returns the bytes of guest RAM backing npages pages at gpa,
	// exactly npages×4096 long, or an error if any of them is not RAM.
	PageSlice(gpa uint64, npages uint32) ([]byte, error)
	// ZeroPages makes npages pages at gpa all zero, or returns an error if
	// any of them is not RAM.
	ZeroPages(gpa uint64, npages uint32) error
}

// Stats counts what one PAGES frame carried.
type Stats struct {
	Runs      int
	DataPages uint64
	ZeroPages uint64
	Bytes     uint64 // payload bytes read
}

// ReadPages reads the payload of the PAGES frame whose header is hdr from r
// into dst. It reads at most hdr.Length bytes. Before storing anything it
// checks the whole run table: kinds, alignment, overflow, the bounds
// MaxRuns and MaxDataPages, that the payload length is exactly the table
// plus the DATA bytes, and that dst returns a slice of the right length for
// every DATA run. Page bytes are then read with io.ReadFull straight into
// the slices dst returned, and ZERO runs are passed to dst.ZeroPages, in
// table order. ReadPages writes nowhere but those slices. If it fails after
// storing began, some pages may have been stored; the session is broken
// anyway.
func ReadPages(r io.Reader, hdr Header, dst PageSink) (Stats, error) {
	var st Stats
	if hdr.Type != TypePages {
		return st, fmt.Errorf("wire: ReadPages called for a %v frame", hdr.Type)
	}
	if err := hdr.Check(); err != nil {
		return st, err
	}
	if hdr.Length < 4 {
		return st, fmt.Errorf("wire: PAGES: payload %d bytes, too short for the run count", hdr.Length)
	}
	lr := &io.LimitedReader{R: r, N: int64(hdr.Length)}
	var cnt [4]byte
	if _, err := io.ReadFull(lr, cnt[:]); err != nil {
		return st, fmt.Errorf("wire: read PAGES run count: %w", err)
	}
	nruns := binary.LittleEndian.Uint32(cnt[:])
	if nruns > MaxRuns {
		return st, fmt.Errorf("wire: PAGES: %d runs exceed %d", nruns, MaxRuns)
	}
	tableEnd := 4 + uint64(nruns)*runSize
	if tableEnd > hdr.Length {
		return st, fmt.Errorf("wire: PAGES: %d runs need %d bytes, payload has %d", nruns, tableEnd, hdr.Length)
	}
	table := make([]byte, nruns*runSize)
	if _, err := io.ReadFull(lr, table); err != nil {
		return st, fmt.Errorf("wire: read PAGES run table: %w", err)
	}
	runs := make([]Run, nruns)
	var data uint64
	for i := range runs {
		e := table[i*runSize:]
		run := &runs[i]
		run.GPA = binary.LittleEndian.Uint64(e)
		run.NPages = binary.LittleEndian.Uint32(e[8:])
		run.Kind = Kind(e[12])
		if e[13]|e[14]|e[15] != 0 {
			return st, fmt.Errorf("wire: PAGES run %d: padding not zero", i)
		}
		if err := run.check(i); err != nil {
			return st, err
		}
		if run.Kind == KindData {
			data += uint64(run.NPages)
			if data > MaxDataPages {
				return st, fmt.Errorf("wire: PAGES run %d: more than %d DATA pages in the frame", i, MaxDataPages)
			}
		}
	}
	if want := tableEnd + data*PageSize; hdr.Length != want {
		return st, fmt.Errorf("wire: PAGES: payload %d bytes, run table says %d", hdr.Length, want)
	}
	for i := range runs {
		run := &runs[i]
		if run.Kind != KindData {
			continue
		}
		b, err := dst.PageSlice(run.GPA, run.NPages)
		if err != nil {
			return st, fmt.Errorf("wire: PAGES run %d: %w", i, err)
		}
		if uint64(len(b)) != uint64(run.NPages)*PageSize {
			return st, fmt.Errorf("wire: PAGES run %d: sink returned %d bytes for %d pages", i, len(b), run.NPages)
		}
		run.Data = b
	}
	st.Runs = len(runs)
	st.Bytes = tableEnd
	for i := range runs {
		run := &runs[i]
		if run.Kind == KindZero {
			if err := dst.ZeroPages(run.GPA, run.NPages); err != nil {
				return st, fmt.Errorf("wire: PAGES run %d: %w", i, err)
			}
			st.ZeroPages += uint64(run.NPages)
			continue
		}
		n, err := io.ReadFull(lr, run.Data)
		st.Bytes += uint64(n)
		if err != nil {
			return st, fmt.Errorf("wire: read PAGES run %d (%d pages at %#x): %w", i, run.NPages, run.GPA, err)
		}
		st.DataPages += uint64(run.NPages)
	}
	return st, nil
}
