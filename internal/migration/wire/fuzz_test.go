package wire

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// FuzzReadPages feeds arbitrary headers and payloads to ReadPages against a
// fake RAM of 64 pages in two regions with a hole. It must not panic, must
// not read past the declared length, and must not write outside the
// regions. With fixLen the header's length is set to the payload's, which
// gets the fuzzer past the length check more often.
func FuzzReadPages(f *testing.F) {
	ram := newFakeRAM()
	page, _ := ram.find(0, 2)
	seeds := [][]Run{
		{{GPA: 0, NPages: 2, Data: page}},
		{{GPA: 0, NPages: 1, Kind: KindZero}, {GPA: fakeHigh + 31*PageSize, NPages: 1, Data: page[:PageSize]}},
		{{GPA: fakeHigh, NPages: 32, Kind: KindZero}},
	}
	for _, runs := range seeds {
		var buf bytes.Buffer
		if _, err := WritePages(&buf, 1, runs); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes(), false)
		f.Add(buf.Bytes()[HeaderSize:], true)
	}
	f.Add(rawPages(1, [][4]uint64{{30 * PageSize, 3, 0, 0}}, 3*PageSize), true)
	f.Add(rawPages(MaxRuns, nil, 0), true)

	f.Fuzz(func(t *testing.T, in []byte, fixLen bool) {
		var h Header
		var payload []byte
		if fixLen {
			h, payload = Header{Type: TypePages, Length: uint64(len(in))}, in
		} else {
			if len(in) < HeaderSize {
				return
			}
			var err error
			if h, err = DecodeHeader(in); err != nil || h.Type != TypePages {
				return
			}
			payload = in[HeaderSize:]
		}
		dst := newFakeRAM()
		r := bytes.NewReader(payload)
		st, err := ReadPages(r, h, dst)
		consumed := uint64(len(payload) - r.Len())
		if consumed > h.Length {
			t.Fatalf("read %d bytes of a %d-byte frame", consumed, h.Length)
		}
		if !dst.guardsIntact() {
			t.Fatal("wrote outside the sink's regions")
		}
		if err == nil {
			if consumed != h.Length || st.Bytes != h.Length {
				t.Fatalf("success after reading %d (stats %d) of %d bytes", consumed, st.Bytes, h.Length)
			}
			if st.DataPages > MaxDataPages {
				t.Fatalf("%d DATA pages accepted", st.DataPages)
			}
		}
	})
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader and the decoders
// of control payloads. Nothing may panic; a frame that decodes must
// re-encode to the same bytes.
func FuzzReadFrame(f *testing.F) {
	cfg, _ := EncodeConfig(testConfig())
	verify, _ := EncodeVerify([]uint32{7, 8})
	qr, _ := EncodeQueryReply(QueryReply{State: NotCommitted})
	rx, _ := EncodeRX([][]byte{{1, 2}, {3}})
	for _, fr := range []struct {
		t Type
		p []byte
	}{
		{TypeConfig, cfg}, {TypeAck, nil}, {TypeAck, EncodeAccept([]string{FeatureLateRX})}, {TypeRX, rx},
		{TypeAbort, EncodeReason("x")}, {TypeVerify, verify},
		{TypeProgress, EncodeProgress(Progress{Iteration: 2})}, {TypeQueryReply, qr}, {TypeState, []byte{1, 2, 3}},
	} {
		b, _ := EncodeFrame(fr.t, 0, 3, fr.p)
		f.Add(b)
	}
	f.Add(header(TypeState, 0, 0, MaxControlPayload))

	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := ReadHeader(r)
		if err != nil {
			return
		}
		p, err := ReadPayload(r, h, MaxControlPayload)
		if err != nil {
			return
		}
		if uint64(len(p)) != h.Length {
			t.Fatalf("payload %d bytes, header says %d", len(p), h.Length)
		}
		re, err := EncodeFrame(h.Type, h.Flags, h.Iteration, p)
		if err != nil || !bytes.Equal(re, in[:HeaderSize+len(p)]) {
			t.Fatalf("re-encode: %v", err)
		}
		switch h.Type {
		case TypeConfig:
			if c, err := DecodeConfig(p); err == nil {
				if _, err := EncodeConfig(c); err != nil {
					t.Fatalf("decoded CONFIG does not encode: %v", err)
				}
			}
		case TypeError, TypeAbort:
			DecodeReason(h.Type, p)
		case TypeProgress:
			DecodeProgress(p)
		case TypeQueryReply:
			DecodeQueryReply(p)
		case TypeAck:
			DecodeAccept(p)
		case TypeRX:
			if pk, err := DecodeRX(p); err == nil {
				if re, err := EncodeRX(pk); err != nil || !bytes.Equal(re, p) {
					t.Fatalf("RX does not round-trip: %v", err)
				}
			}
		case TypeVerify:
			if s, err := DecodeVerify(p); err == nil {
				if v, _ := EncodeVerify(s); !bytes.Equal(v, p) {
					t.Fatal("VERIFY does not round-trip")
				}
			}
		}
	})
}

// FuzzHello: DecodeHello must not panic, and what it accepts must encode
// back to the same 32 bytes.
func FuzzHello(f *testing.F) {
	b, _ := AppendHello(nil, Hello{Role: RoleData, Stream: 2, Streams: 3})
	f.Add(b)
	f.Add([]byte("GODWITMG"))
	v2 := bytes.Clone(b)
	binary.LittleEndian.PutUint32(v2[8:], 2)
	f.Add(v2)
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ReadHello(io.LimitReader(bytes.NewReader(in), HelloSize))
		if err != nil {
			return
		}
		re, err := AppendHello(nil, h)
		if err != nil || !bytes.Equal(re, in[:HelloSize]) {
			t.Fatalf("accepted HELLO does not round-trip: %v", err)
		}
	})
}
