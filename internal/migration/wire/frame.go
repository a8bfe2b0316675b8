package wire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// HeaderSize is the size of a frame header in bytes.
const HeaderSize = 16

// Type is a frame type.
type Type uint16

// Frame types. Control types are below 0x100, data types from 0x100.
const (
	TypeConfig     Type = 1
	TypeAck        Type = 2
	TypeError      Type = 3
	TypeIterBegin  Type = 4
	TypeIterEnd    Type = 5
	TypeIterDone   Type = 6
	TypeState      Type = 7
	TypeStateOK    Type = 8
	TypeVerify     Type = 9
	TypeCommit     Type = 10
	TypeCommitted  Type = 11
	TypeAbort      Type = 12
	TypeProgress   Type = 13
	TypeQuery      Type = 14
	TypeQueryReply Type = 15
	TypeRX         Type = 16

	TypePages   Type = 0x100
	TypeDataEnd Type = 0x101
)

// Payload limits. A reader refuses a frame whose length exceeds its type's
// limit before reading the payload, so a peer cannot make it allocate more.
const (
	// MaxControlPayload bounds any control payload; STATE (vCPU XSAVE areas,
	// device queues) is a few MiB at most, so 64 MiB is generous.
	MaxControlPayload = 64 << 20
	// MaxConfigPayload bounds CONFIG (CPUID entries and the MSR list as JSON).
	MaxConfigPayload = 1 << 20
	// MaxMessagePayload bounds the small JSON messages: ERROR, ABORT,
	// PROGRESS, QUERY_REPLY.
	MaxMessagePayload = 64 << 10
	// MaxVerifyChunks is the most CRC32C entries a VERIFY may carry: one per
	// 2 MiB of 1 TiB of RAM (memory.MaxSize).
	MaxVerifyChunks = (1 << 40) / ChecksumChunk
	// MaxRuns and MaxDataPages bound one PAGES frame: at most 4096 runs and
	// 4096 DATA pages (16 MiB of page bytes). ZERO runs cost no payload and
	// are bounded by the sink's address range only.
	MaxRuns      = 4096
	MaxDataPages = 4096
	// MaxRXPackets and MaxRXBytes bound one RX frame: the guest-bound
	// packets a source held while paused (what one virtio-net receive
	// queue holds, and 1 MiB of packet bytes).
	MaxRXPackets = 256
	MaxRXBytes   = 1 << 20
	// MaxRXPayload is the largest RX payload.
	MaxRXPayload = 4 + 4*MaxRXPackets + MaxRXBytes
	// MaxPagesPayload is the largest PAGES payload.
	MaxPagesPayload = 4 + MaxRuns*runSize + MaxDataPages*PageSize
)

var typeInfo = map[Type]struct {
	name string
	max  uint64
}{
	TypeConfig:     {"CONFIG", MaxConfigPayload},
	TypeAck:        {"ACK", MaxMessagePayload},
	TypeError:      {"ERROR", MaxMessagePayload},
	TypeIterBegin:  {"ITER_BEGIN", 0},
	TypeIterEnd:    {"ITER_END", 0},
	TypeIterDone:   {"ITER_DONE", 0},
	TypeState:      {"STATE", MaxControlPayload},
	TypeStateOK:    {"STATE_OK", 0},
	TypeVerify:     {"VERIFY", 4 + 4*MaxVerifyChunks},
	TypeCommit:     {"COMMIT", 0},
	TypeCommitted:  {"COMMITTED", 0},
	TypeAbort:      {"ABORT", MaxMessagePayload},
	TypeProgress:   {"PROGRESS", MaxMessagePayload},
	TypeQuery:      {"QUERY", 0},
	TypeQueryReply: {"QUERY_REPLY", MaxMessagePayload},
	TypeRX:         {"RX", MaxRXPayload},
	TypePages:      {"PAGES", MaxPagesPayload},
	TypeDataEnd:    {"DATA_END", 0},
}

// String returns the type's name as the package doc spells it.
func (t Type) String() string {
	if i, ok := typeInfo[t]; ok {
		return i.name
	}
	return fmt.Sprintf("type(%#x)", uint16(t))
}

// Known reports whether t is a frame type of this protocol version.
func (t Type) Known() bool {
	_, ok := typeInfo[t]
	return ok
}

// MaxPayload returns the largest payload a frame of type t may carry (0 for
// unknown types).
func (t Type) MaxPayload() uint64 { return typeInfo[t].max }

// IsData reports whether frames of type t travel on data connections.
func (t Type) IsData() bool { return t >= 0x100 }

// Header is a decoded frame header.
type Header struct {
	Type      Type
	Flags     uint16
	Iteration uint32
	Length    uint64 // payload bytes after the header
}

// String formats h for errors and logs.
func (h Header) String() string {
	return fmt.Sprintf("%v iteration %d length %d", h.Type, h.Iteration, h.Length)
}

// AppendHeader appends the 16-byte encoding of h to b.
func AppendHeader(b []byte, h Header) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(h.Type))
	b = binary.LittleEndian.AppendUint16(b, h.Flags)
	b = binary.LittleEndian.AppendUint32(b, h.Iteration)
	return binary.LittleEndian.AppendUint64(b, h.Length)
}

// DecodeHeader decodes and validates a frame header: the type must be known,
// flags zero, and the length within the type's limit.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("wire: frame header: %d bytes, want %d", len(b), HeaderSize)
	}
	h := Header{
		Type:      Type(binary.LittleEndian.Uint16(b[0:])),
		Flags:     binary.LittleEndian.Uint16(b[2:]),
		Iteration: binary.LittleEndian.Uint32(b[4:]),
		Length:    binary.LittleEndian.Uint64(b[8:]),
	}
	return h, h.Check()
}

// Check validates h as DecodeHeader does.
func (h Header) Check() error {
	if !h.Type.Known() {
		return fmt.Errorf("wire: unknown frame type %#x", uint16(h.Type))
	}
	if h.Flags != 0 {
		return fmt.Errorf("wire: %v frame: unknown flags %#x", h.Type, h.Flags)
	}
	if max := h.Type.MaxPayload(); h.Length > max {
		return fmt.Errorf("wire: %v frame: payload %d bytes exceeds limit %d", h.Type, h.Length, max)
	}
	return nil
}

// ReadHeader reads and validates one frame header from r.
func ReadHeader(r io.Reader) (Header, error) {
	var b [HeaderSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Header{}, fmt.Errorf("wire: read frame header: %w", err)
	}
	return DecodeHeader(b[:])
}

// ReadPayload reads h's payload from r after checking h.Length against
// maxLen (and the type's own limit). It never reads beyond the frame.
func ReadPayload(r io.Reader, h Header, maxLen uint64) ([]byte, error) {
	if err := h.Check(); err != nil {
		return nil, err
	}
	if h.Length > maxLen {
		return nil, fmt.Errorf("wire: %v frame: payload %d bytes exceeds limit %d", h.Type, h.Length, maxLen)
	}
	if h.Length == 0 {
		return nil, nil
	}
	if h.Length <= 1<<20 {
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, fmt.Errorf("wire: read %v payload: %w", h.Type, err)
		}
		return p, nil
	}
	// Large payloads grow as bytes arrive, so that a peer declaring 64 MiB
	// and sending nothing costs no more than what it sent.
	p, err := io.ReadAll(io.LimitReader(r, int64(h.Length)))
	if err == nil && uint64(len(p)) != h.Length {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, fmt.Errorf("wire: read %v payload: %w", h.Type, err)
	}
	return p, nil
}

// EncodeFrame returns header and payload as one byte slice; for large
// payloads prefer [Conn.WriteFrame], which does not copy.
func EncodeFrame(t Type, flags uint16, iter uint32, payload []byte) ([]byte, error) {
	h := Header{Type: t, Flags: flags, Iteration: iter, Length: uint64(len(payload))}
	if err := h.Check(); err != nil {
		return nil, err
	}
	return append(AppendHeader(make([]byte, 0, HeaderSize+len(payload)), h), payload...), nil
}
