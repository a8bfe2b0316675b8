package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestHelloRoundTrip(t *testing.T) {
	for _, h := range []Hello{
		{Session: SessionID{1, 2, 3}, Role: RoleControl, Streams: 4},
		{Session: SessionID{15: 0xff}, Role: RoleData, Stream: 3, Streams: 4},
		{Role: RoleData, Stream: 15, Streams: 16},
	} {
		var buf bytes.Buffer
		if err := WriteHello(&buf, h); err != nil {
			t.Fatal(err)
		}
		if buf.Len() != HelloSize {
			t.Fatalf("HELLO is %d bytes", buf.Len())
		}
		got, err := ReadHello(&buf)
		if err != nil {
			t.Fatal(err)
		}
		h.Version = ProtocolVersion
		if got != h {
			t.Errorf("got %+v, want %+v", got, h)
		}
	}
}

func TestHelloMalformed(t *testing.T) {
	good, err := AppendHello(nil, Hello{Role: RoleData, Stream: 1, Streams: 2})
	if err != nil {
		t.Fatal(err)
	}
	patch := func(off int, v ...byte) []byte {
		b := bytes.Clone(good)
		copy(b[off:], v)
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"short", good[:31], "HELLO: 31 bytes"},
		{"magic", patch(0, 'H', 'T', 'T', 'P'), "not a Godwit migration stream"},
		{"version", patch(8, 2), "unsupported protocol version 2 (this side speaks 1)"},
		{"role", patch(28, 2), "unknown role 2"},
		{"index", patch(29, 2), "data stream index 2 out of range for 2 streams"},
		{"no streams", patch(30, 0), "0 data streams"},
		{"too many streams", patch(29, 0, 17), "17 data streams"},
		{"control index", patch(28, 0, 1), "control connection with stream index 1"},
		{"reserved", patch(31, 1), "reserved byte"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeHello(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := ReadHello(bytes.NewReader(good[:10])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated HELLO: %v", err)
	}
	if _, err := AppendHello(nil, Hello{Role: RoleData, Stream: 2, Streams: 2}); err == nil {
		t.Error("AppendHello accepted a bad index")
	}
}

func TestFrameRoundTrip(t *testing.T) {
	state := bytes.Repeat([]byte{0xab}, 3<<20)
	verify, _ := EncodeVerify([]uint32{1, 2, 3})
	cfg, err := EncodeConfig(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	qr, _ := EncodeQueryReply(QueryReply{State: Committed})
	rx, _ := EncodeRX([][]byte{{1, 2, 3}})
	frames := []struct {
		t Type
		p []byte
	}{
		{TypeConfig, cfg}, {TypeAck, nil}, {TypeError, EncodeReason("no")},
		{TypeIterBegin, nil}, {TypeIterEnd, nil}, {TypeIterDone, nil},
		{TypeState, state}, {TypeStateOK, nil}, {TypeVerify, verify},
		{TypeCommit, nil}, {TypeCommitted, nil}, {TypeAbort, EncodeReason("cancelled")},
		{TypeProgress, EncodeProgress(Progress{Iteration: 3})}, {TypeQuery, nil},
		{TypeQueryReply, qr}, {TypeDataEnd, nil}, {TypeRX, rx}, {TypeAck, EncodeAccept([]string{FeatureLateRX})},
	}
	if len(frames) != len(typeInfo) { // PAGES has its own tests; ACK comes twice
		t.Fatalf("test covers %d types of %d", len(frames), len(typeInfo)-1)
	}
	var buf bytes.Buffer
	for i, f := range frames {
		b, err := EncodeFrame(f.t, 0, uint32(i), f.p)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	for i, f := range frames {
		h, err := ReadHeader(&buf)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ReadPayload(&buf, h, MaxControlPayload)
		if err != nil {
			t.Fatal(err)
		}
		if h.Type != f.t || h.Iteration != uint32(i) || !bytes.Equal(p, f.p) {
			t.Errorf("frame %d: got %v (%d bytes), want %v (%d bytes)", i, h, len(p), f.t, len(f.p))
		}
	}
}

func header(t Type, flags uint16, iter uint32, n uint64) []byte {
	return AppendHeader(nil, Header{t, flags, iter, n})
}

func TestFrameMalformed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     []byte
		maxLen uint64
		want   string
	}{
		{"unknown type", header(99, 0, 0, 0), MaxControlPayload, "unknown frame type 0x63"},
		{"flags", header(TypeAck, 4, 0, 0), MaxControlPayload, "ACK frame: unknown flags 0x4"},
		{"COMMIT with payload", header(TypeCommit, 0, 0, 1), MaxControlPayload, "COMMIT frame: payload 1 bytes exceeds limit 0"},
		{"huge RX", header(TypeRX, 0, 0, MaxRXPayload+1), MaxControlPayload, "RX frame: payload 1049605 bytes exceeds limit 1049604"},
		{"huge STATE", header(TypeState, 0, 0, 1<<40), MaxControlPayload, "exceeds limit"},
		{"caller limit", header(TypeState, 0, 0, 100), 10, "payload 100 bytes exceeds limit 10"},
		{"truncated header", header(TypeAck, 0, 0, 0)[:9], MaxControlPayload, "unexpected EOF"},
		{"truncated payload", append(header(TypeError, 0, 0, 10), "abc"...), MaxControlPayload, "unexpected EOF"},
		{"truncated big payload", append(header(TypeState, 0, 0, 5<<20), "abc"...), MaxControlPayload, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(tc.in)
			h, err := ReadHeader(r)
			if err == nil {
				_, err = ReadPayload(r, h, tc.maxLen)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func testConfig() Config {
	return Config{
		VCPUs:     2,
		RAM:       []Region{{0, 3 << 30}, {4 << 30, 1 << 30}},
		TSCKHz:    2_450_000,
		XSAVESize: 4096,
		CPUID:     []CPUIDEntry{{Function: 1, EAX: 0x00a00f11}},
		MSRs:      []uint32{0x10, 0xc0000080},
		Devices:   []Device{{Kind: "uart", ID: "com1"}},
		Streams:   2,
		Verify:    true,
	}
}

func TestControlMessages(t *testing.T) {
	cfg := testConfig()
	p, err := EncodeConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version = MessageVersion
	if !reflect.DeepEqual(got, cfg) {
		t.Errorf("CONFIG: got %+v, want %+v", got, cfg)
	}

	why, err := DecodeReason(TypeAbort, EncodeReason("destination CPU lacks avx512f"))
	if err != nil || why != "destination CPU lacks avx512f" {
		t.Errorf("ABORT: %q, %v", why, err)
	}
	long, err := DecodeReason(TypeError, EncodeReason(strings.Repeat("\x01", 1<<20)))
	if err != nil || len(long) > MaxMessagePayload {
		t.Errorf("long reason: %d bytes, %v", len(long), err)
	}

	pr := Progress{Iteration: 4, TransferredBytes: 1 << 30, RemainingBytes: 5 << 20, Bandwidth: 1.1e9, DirtyRate: 2e8, Downtime: 40e6, ThrottlePercent: 30}
	gotp, err := DecodeProgress(EncodeProgress(pr))
	pr.Version = MessageVersion
	if err != nil || gotp != pr {
		t.Errorf("PROGRESS: %+v, %v", gotp, err)
	}

	for _, s := range []CommitState{Committed, NotCommitted, UnknownSession} {
		p, err := EncodeQueryReply(QueryReply{State: s, Detail: "x"})
		if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeQueryReply(p)
		if err != nil || r.State != s || r.Detail != "x" {
			t.Errorf("QUERY_REPLY %s: %+v, %v", s, r, err)
		}
	}
	if _, err := EncodeQueryReply(QueryReply{State: "maybe"}); err == nil {
		t.Error("EncodeQueryReply accepted an unknown state")
	}

	sums := []uint32{0, 1, 0xffffffff}
	vp, _ := EncodeVerify(sums)
	gots, err := DecodeVerify(vp)
	if err != nil || !reflect.DeepEqual(gots, sums) {
		t.Errorf("VERIFY: %v, %v", gots, err)
	}

	acc, err := DecodeAccept(EncodeAccept([]string{FeatureLateRX}))
	if err != nil || !acc.Grants(FeatureLateRX) || acc.Grants("other") {
		t.Errorf("ACK granting late-rx: %+v, %v", acc, err)
	}
	if acc, err := DecodeAccept(nil); err != nil || acc.Grants(FeatureLateRX) {
		t.Errorf("empty ACK (an older destination): %+v, %v; want no features granted", acc, err)
	}

	packets := [][]byte{{1}, bytes.Repeat([]byte{2}, 1514), {3, 4}}
	rp, err := EncodeRX(packets)
	if err != nil {
		t.Fatal(err)
	}
	if len(rp) != 4+3*4+1+1514+2 {
		t.Errorf("RX payload is %d bytes", len(rp))
	}
	gotpk, err := DecodeRX(rp)
	if err != nil || !reflect.DeepEqual(gotpk, packets) {
		t.Errorf("RX: %d packets, %v", len(gotpk), err)
	}
	for name, bad := range map[string][][]byte{
		"empty packet": {{1}, {}},
		"too many":     slices.Repeat([][]byte{{1}}, MaxRXPackets+1),
		"too large":    {make([]byte, MaxRXBytes), {1}},
	} {
		if _, err := EncodeRX(bad); err == nil {
			t.Errorf("EncodeRX %s: no error", name)
		}
	}
}

func TestControlMalformed(t *testing.T) {
	cfg := func(f func(*Config)) []byte {
		c := testConfig()
		f(&c)
		c.Version = MessageVersion
		b, _ := json.Marshal(c)
		return b
	}
	verify := func(n uint32, extra int) []byte {
		b := binary.LittleEndian.AppendUint32(nil, n)
		return append(b, make([]byte, extra)...)
	}
	for _, tc := range []struct {
		name   string
		decode func([]byte) error
		in     []byte
		want   string
	}{
		{"config not json", decodeConfig, []byte("{"), "CONFIG: unexpected end"},
		{"config null", decodeConfig, []byte("null"), "CONFIG: version field missing"},
		{"config no version", decodeConfig, []byte(`{"vcpus":1}`), "CONFIG: version field missing"},
		{"config new version", decodeConfig, []byte(`{"version":2}`), "unsupported message version 2 (this side speaks 1)"},
		{"config unknown field ok", decodeConfig, bytes.Replace(cfg(func(*Config) {}), []byte(`{`), []byte(`{"future":[1,2],`), 1), ""},
		{"config vcpus", decodeConfig, cfg(func(c *Config) { c.VCPUs = 0 }), "0 vCPUs"},
		{"config ram unaligned", decodeConfig, cfg(func(c *Config) { c.RAM[1].GPA++ }), "RAM region 1"},
		{"config ram overlap", decodeConfig, cfg(func(c *Config) { c.RAM[1].GPA = 1 << 30 }), "overlaps"},
		{"config ram overflow", decodeConfig, cfg(func(c *Config) { c.RAM[1] = Region{1 << 63, 1 << 63} }), "overflows"},
		{"config ram too big", decodeConfig, cfg(func(c *Config) { c.RAM[1].Size = 2 << 40 }), "more than 1024 GiB"},
		{"config tsc", decodeConfig, cfg(func(c *Config) { c.TSCKHz = 0 }), "TSC frequency missing"},
		{"config streams", decodeConfig, cfg(func(c *Config) { c.Streams = 17 }), "17 data streams"},
		{"config wrong type", decodeConfig, []byte(`{"version":1,"vcpus":"two"}`), "cannot unmarshal"},
		{"reason empty", decodeAbort, []byte(`{"version":1}`), "ABORT: empty reason"},
		{"reason no version", decodeAbort, []byte(`{"reason":"x"}`), "version field missing"},
		{"query reply state", decodeQueryReply, []byte(`{"version":1,"state":"perhaps"}`), `unknown state "perhaps"`},
		{"verify short", decodeVerify, []byte{1, 0}, "too short"},
		{"verify count", decodeVerify, verify(3, 8), "want 16 for 3 checksums"},
		{"verify extra", decodeVerify, verify(1, 8), "want 8 for 1 checksums"},
		{"verify huge", decodeVerify, verify(1<<30, 0), "exceed"},
		{"ack not json", decodeAccept, []byte("["), "ACK: "},
		{"ack no version", decodeAccept, []byte(`{"features":["late-rx"]}`), "ACK: version field missing"},
		{"rx short", decodeRX, []byte{1, 0}, "too short"},
		{"rx count", decodeRX, verify(MaxRXPackets+1, 0), "257 packets exceed 256"},
		{"rx cut length", decodeRX, verify(1, 2), "packet 0: length cut short"},
		{"rx zero length", decodeRX, append(verify(1, 0), 0, 0, 0, 0), "packet 0: length 0"},
		{"rx beyond payload", decodeRX, append(verify(1, 0), 9, 0, 0, 0, 1), "packet 0: length 9, 1 bytes left"},
		{"rx trailing", decodeRX, append(verify(1, 0), 1, 0, 0, 0, 7, 8), "1 bytes after the last packet"},
		{"rx too large", decodeRX, verify(1, 4+MaxRXBytes+1), "more than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode(tc.in)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func decodeConfig(p []byte) error     { _, err := DecodeConfig(p); return err }
func decodeAbort(p []byte) error      { _, err := DecodeReason(TypeAbort, p); return err }
func decodeQueryReply(p []byte) error { _, err := DecodeQueryReply(p); return err }
func decodeVerify(p []byte) error     { _, err := DecodeVerify(p); return err }
func decodeAccept(p []byte) error     { _, err := DecodeAccept(p); return err }
func decodeRX(p []byte) error         { _, err := DecodeRX(p); return err }

func TestStreamFor(t *testing.T) {
	for _, tc := range []struct {
		gpa  uint64
		n    int
		want int
	}{
		{0, 1, 0}, {0x1fffff, 4, 0}, {0x200000, 4, 1}, {0x7ff000, 4, 3}, {0x800000, 4, 0},
		{4 << 30, 3, (4 << 30 >> 21) % 3}, {123 << 21, 16, 123 % 16}, {5 << 21, 0, 0},
	} {
		if got := StreamFor(tc.gpa, tc.n); got != tc.want {
			t.Errorf("StreamFor(%#x, %d) = %d, want %d", tc.gpa, tc.n, got, tc.want)
		}
	}
}
