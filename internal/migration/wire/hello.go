package wire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Magic opens every migration connection.
const Magic = "GODWITMG"

// ProtocolVersion is the version of the format this package speaks.
const ProtocolVersion = 1

// HelloSize is the size of a HELLO in bytes.
const HelloSize = 32

// MaxStreams is the most data streams a session may have.
const MaxStreams = 16

// Role says what a connection carries.
type Role uint8

// Connection roles.
const (
	RoleControl Role = 0
	RoleData    Role = 1
)

func (r Role) String() string {
	switch r {
	case RoleControl:
		return "control"
	case RoleData:
		return "data"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// SessionID names one migration; every connection of a session carries it.
type SessionID [16]byte

func (s SessionID) String() string { return fmt.Sprintf("%x", s[:]) }

// Hello opens a connection.
type Hello struct {
	Version uint32 // set by DecodeHello; AppendHello always writes ProtocolVersion
	Session SessionID
	Role    Role
	Stream  uint8 // data stream index, 0..Streams-1; 0 for control
	Streams uint8 // number of data streams, 1..MaxStreams
}

// Check validates the fields of h other than the version.
func (h Hello) Check() error {
	if h.Streams < 1 || h.Streams > MaxStreams {
		return fmt.Errorf("wire: HELLO: %d data streams, want 1..%d", h.Streams, MaxStreams)
	}
	switch h.Role {
	case RoleControl:
		if h.Stream != 0 {
			return fmt.Errorf("wire: HELLO: control connection with stream index %d, want 0", h.Stream)
		}
	case RoleData:
		if h.Stream >= h.Streams {
			return fmt.Errorf("wire: HELLO: data stream index %d out of range for %d streams", h.Stream, h.Streams)
		}
	default:
		return fmt.Errorf("wire: HELLO: unknown role %d", uint8(h.Role))
	}
	return nil
}

// AppendHello validates h and appends its 32-byte encoding to b, with
// version ProtocolVersion whatever h.Version says.
func AppendHello(b []byte, h Hello) ([]byte, error) {
	if err := h.Check(); err != nil {
		return b, err
	}
	b = append(b, Magic...)
	b = binary.LittleEndian.AppendUint32(b, ProtocolVersion)
	b = append(b, h.Session[:]...)
	return append(b, byte(h.Role), h.Stream, h.Streams, 0), nil
}

// DecodeHello decodes and validates a HELLO. A wrong magic, a protocol
// version other than ProtocolVersion, a non-zero reserved byte or an
// inconsistent role, index and count are errors.
func DecodeHello(b []byte) (Hello, error) {
	if len(b) < HelloSize {
		return Hello{}, fmt.Errorf("wire: HELLO: %d bytes, want %d", len(b), HelloSize)
	}
	if string(b[:8]) != Magic {
		return Hello{}, fmt.Errorf("wire: not a Godwit migration stream (starts with %q)", b[:8])
	}
	h := Hello{Version: binary.LittleEndian.Uint32(b[8:])}
	if h.Version != ProtocolVersion {
		return Hello{}, fmt.Errorf("wire: unsupported protocol version %d (this side speaks %d)", h.Version, ProtocolVersion)
	}
	copy(h.Session[:], b[12:28])
	h.Role, h.Stream, h.Streams = Role(b[28]), b[29], b[30]
	if b[31] != 0 {
		return Hello{}, fmt.Errorf("wire: HELLO: reserved byte is %#x, want 0", b[31])
	}
	if err := h.Check(); err != nil {
		return Hello{}, err
	}
	return h, nil
}

// ReadHello reads and validates a HELLO from r.
func ReadHello(r io.Reader) (Hello, error) {
	var b [HelloSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Hello{}, fmt.Errorf("wire: read HELLO: %w", err)
	}
	return DecodeHello(b[:])
}

// WriteHello writes h to w.
func WriteHello(w io.Writer, h Hello) error {
	b, err := AppendHello(make([]byte, 0, HelloSize), h)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("wire: write HELLO: %w", err)
	}
	return nil
}
