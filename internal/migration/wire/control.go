package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// MessageVersion is the version of the JSON control messages.
const MessageVersion = 1

// Limits on CONFIG contents.
const (
	MaxVCPUs        = 1024
	MaxRAMRegions   = 64
	MaxCPUIDEntries = 256 // KVM_MAX_CPUID_ENTRIES
	MaxMSRs         = 4096
	MaxXSAVESize    = 1 << 20
	maxRAM          = 1 << 40 // memory.MaxSize
)

// Config is the CONFIG payload: what the destination must build before
// pages arrive, and what it must check it can run.
type Config struct {
	Version   int          `json:"version"`
	Accel     string       `json:"accel,omitempty"` // the source's accelerator ("kvm" if empty)
	VCPUs     int          `json:"vcpus"`
	RAM       []Region     `json:"ram"`        // guest RAM regions, ascending
	TSCKHz    uint32       `json:"tsc_khz"`    // the source's TSC frequency
	XSAVESize uint32       `json:"xsave_size"` // bytes of one vCPU's XSAVE area
	CPUID     []CPUIDEntry `json:"cpuid"`
	MSRs      []uint32     `json:"msrs"`    // MSR indices whose values STATE carries
	Devices   []Device     `json:"devices"` // in the order STATE holds their state
	Streams   int          `json:"streams"` // data streams, as in HELLO
	Verify    bool         `json:"verify"`  // a VERIFY will follow STATE_OK
	// Features the source can use (FeatureLateRX); the destination's ACK
	// says which it grants. A destination that predates the field
	// ignores it and grants none.
	Features []string `json:"features,omitempty"`
}

// Region is one range of guest RAM.
type Region struct {
	GPA  uint64 `json:"gpa"`
	Size uint64 `json:"size"`
}

// CPUIDEntry is one entry of the vCPUs' CPUID table (kvm_cpuid_entry2).
type CPUIDEntry struct {
	Function uint32 `json:"function"`
	Index    uint32 `json:"index"`
	Flags    uint32 `json:"flags"`
	EAX      uint32 `json:"eax"`
	EBX      uint32 `json:"ebx"`
	ECX      uint32 `json:"ecx"`
	EDX      uint32 `json:"edx"`
}

// Device names one device the destination must create.
type Device struct {
	Kind string `json:"kind"` // e.g. "uart", "virtio-net"
	ID   string `json:"id"`
}

// Check validates c's contents other than the version.
func (c *Config) Check() error {
	if c.VCPUs < 1 || c.VCPUs > MaxVCPUs {
		return fmt.Errorf("wire: CONFIG: %d vCPUs, want 1..%d", c.VCPUs, MaxVCPUs)
	}
	if len(c.RAM) == 0 || len(c.RAM) > MaxRAMRegions {
		return fmt.Errorf("wire: CONFIG: %d RAM regions, want 1..%d", len(c.RAM), MaxRAMRegions)
	}
	var end, total uint64
	for i, r := range c.RAM {
		switch {
		case r.Size == 0 || r.GPA%PageSize != 0 || r.Size%PageSize != 0:
			return fmt.Errorf("wire: CONFIG: RAM region %d [%#x, +%#x) empty or not page aligned", i, r.GPA, r.Size)
		case r.GPA+r.Size < r.GPA:
			return fmt.Errorf("wire: CONFIG: RAM region %d [%#x, +%#x) overflows", i, r.GPA, r.Size)
		case i > 0 && r.GPA < end:
			return fmt.Errorf("wire: CONFIG: RAM region %d at %#x overlaps or precedes region %d", i, r.GPA, i-1)
		}
		end = r.GPA + r.Size
		total += r.Size
		if total > maxRAM {
			return fmt.Errorf("wire: CONFIG: more than %d GiB of RAM", maxRAM>>30)
		}
	}
	if c.TSCKHz == 0 {
		return fmt.Errorf("wire: CONFIG: TSC frequency missing")
	}
	if c.XSAVESize > MaxXSAVESize {
		return fmt.Errorf("wire: CONFIG: XSAVE size %d exceeds %d", c.XSAVESize, MaxXSAVESize)
	}
	if len(c.CPUID) > MaxCPUIDEntries {
		return fmt.Errorf("wire: CONFIG: %d CPUID entries exceed %d", len(c.CPUID), MaxCPUIDEntries)
	}
	if len(c.MSRs) > MaxMSRs {
		return fmt.Errorf("wire: CONFIG: %d MSRs exceed %d", len(c.MSRs), MaxMSRs)
	}
	if c.Streams < 1 || c.Streams > MaxStreams {
		return fmt.Errorf("wire: CONFIG: %d data streams, want 1..%d", c.Streams, MaxStreams)
	}
	return nil
}

// EncodeConfig validates c and returns the CONFIG payload, with Version set
// to MessageVersion.
func EncodeConfig(c Config) ([]byte, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	c.Version = MessageVersion
	return json.Marshal(c)
}

// DecodeConfig decodes and validates a CONFIG payload.
func DecodeConfig(p []byte) (Config, error) {
	var c Config
	if err := decodeJSON(TypeConfig, p, &c, &c.Version); err != nil {
		return Config{}, err
	}
	if err := c.Check(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// reason is the payload of ERROR and ABORT.
type reason struct {
	Version int    `json:"version"`
	Reason  string `json:"reason"`
}

// EncodeReason returns the payload of an ERROR or ABORT saying why. The
// reason is cut to fit MaxMessagePayload.
func EncodeReason(why string) []byte {
	if why == "" {
		why = "unspecified"
	}
	const room = MaxMessagePayload / 8 // JSON escaping can grow a byte to 6
	if len(why) > room {
		why = why[:room] + "…"
	}
	b, _ := json.Marshal(reason{Version: MessageVersion, Reason: why}) // cannot fail
	return b
}

// DecodeReason decodes the payload of an ERROR or ABORT frame of type t.
func DecodeReason(t Type, p []byte) (string, error) {
	var r reason
	if err := decodeJSON(t, p, &r, &r.Version); err != nil {
		return "", err
	}
	if r.Reason == "" {
		return "", fmt.Errorf("wire: %v: empty reason", t)
	}
	return r.Reason, nil
}

// Progress is the PROGRESS payload: the source's view of the migration, for
// the destination's logs and status.
type Progress struct {
	Version          int           `json:"version"`
	Iteration        uint32        `json:"iteration"`
	TransferredBytes uint64        `json:"transferred_bytes"`
	RemainingBytes   uint64        `json:"remaining_bytes"`
	Bandwidth        float64       `json:"bandwidth"`  // bytes/s
	DirtyRate        float64       `json:"dirty_rate"` // bytes/s
	Downtime         time.Duration `json:"downtime_ns"`
	ThrottlePercent  int           `json:"throttle_percent"`
}

// EncodeProgress returns the PROGRESS payload for p.
func EncodeProgress(p Progress) []byte {
	p.Version = MessageVersion
	b, err := json.Marshal(p)
	if err != nil { // only NaN or ±Inf rates
		p.Bandwidth, p.DirtyRate = 0, 0
		b, _ = json.Marshal(p)
	}
	return b
}

// DecodeProgress decodes a PROGRESS payload.
func DecodeProgress(p []byte) (Progress, error) {
	var pr Progress
	if err := decodeJSON(TypeProgress, p, &pr, &pr.Version); err != nil {
		return Progress{}, err
	}
	return pr, nil
}

// CommitState is a destination's answer to QUERY.
type CommitState string

// Answers to QUERY.
const (
	// Committed: the destination received COMMIT and started the VM. The
	// source must not resume; it may release the VM.
	Committed CommitState = "committed"
	// NotCommitted: the destination never received COMMIT, has discarded
	// the VM and will never start it. The source may resume.
	NotCommitted CommitState = "not_committed"
	// UnknownSession: the destination knows no such session. The source
	// must stay paused and report: it cannot tell what happened.
	UnknownSession CommitState = "unknown_session"
)

// QueryReply is the QUERY_REPLY payload.
type QueryReply struct {
	Version int         `json:"version"`
	State   CommitState `json:"state"`
	Detail  string      `json:"detail,omitempty"`
}

func (s CommitState) valid() bool {
	return s == Committed || s == NotCommitted || s == UnknownSession
}

// EncodeQueryReply returns the QUERY_REPLY payload for r.
func EncodeQueryReply(r QueryReply) ([]byte, error) {
	if !r.State.valid() {
		return nil, fmt.Errorf("wire: QUERY_REPLY: unknown state %q", r.State)
	}
	r.Version = MessageVersion
	return json.Marshal(r)
}

// DecodeQueryReply decodes a QUERY_REPLY payload; an unknown state is an
// error (the source then stays paused).
func DecodeQueryReply(p []byte) (QueryReply, error) {
	var r QueryReply
	if err := decodeJSON(TypeQueryReply, p, &r, &r.Version); err != nil {
		return QueryReply{}, err
	}
	if !r.State.valid() {
		return QueryReply{}, fmt.Errorf("wire: QUERY_REPLY: unknown state %q", r.State)
	}
	return r, nil
}

// decodeJSON unmarshals p into v (unknown fields are ignored) and checks
// that *version, filled by the unmarshal, is MessageVersion.
func decodeJSON(t Type, p []byte, v any, version *int) error {
	if uint64(len(p)) > t.MaxPayload() {
		return fmt.Errorf("wire: %v: payload %d bytes exceeds limit %d", t, len(p), t.MaxPayload())
	}
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("wire: %v: %w", t, err)
	}
	switch *version {
	case MessageVersion:
		return nil
	case 0:
		return fmt.Errorf("wire: %v: version field missing", t)
	default:
		return fmt.Errorf("wire: %v: unsupported message version %d (this side speaks %d)", t, *version, MessageVersion)
	}
}

// EncodeVerify returns the VERIFY payload for a CRC32C table.
func EncodeVerify(sums []uint32) ([]byte, error) {
	if len(sums) > MaxVerifyChunks {
		return nil, fmt.Errorf("wire: VERIFY: %d checksums exceed %d", len(sums), MaxVerifyChunks)
	}
	b := make([]byte, 4, 4+4*len(sums))
	binary.LittleEndian.PutUint32(b, uint32(len(sums)))
	for _, s := range sums {
		b = binary.LittleEndian.AppendUint32(b, s)
	}
	return b, nil
}

// DecodeVerify decodes a VERIFY payload.
func DecodeVerify(p []byte) ([]uint32, error) {
	if len(p) < 4 {
		return nil, fmt.Errorf("wire: VERIFY: payload %d bytes, too short for the count", len(p))
	}
	n := binary.LittleEndian.Uint32(p)
	if n > MaxVerifyChunks {
		return nil, fmt.Errorf("wire: VERIFY: %d checksums exceed %d", n, MaxVerifyChunks)
	}
	if uint64(len(p)) != 4+4*uint64(n) {
		return nil, fmt.Errorf("wire: VERIFY: payload %d bytes, want %d for %d checksums", len(p), 4+4*uint64(n), n)
	}
	sums := make([]uint32, n)
	for i := range sums {
		sums[i] = binary.LittleEndian.Uint32(p[4+4*i:])
	}
	return sums, nil
}

// Features a source may ask for in [Config.Features] and a destination
// grants in the ACK that answers CONFIG ([Accept]). A source uses only
// what was granted, so either side may be older than the other.
const (
	// FeatureLateRX: the source sends the guest-bound packets that reached
	// it while paused in an RX frame right before COMMIT, instead of in
	// STATE, so that they cover the whole switchover, verify included.
	FeatureLateRX = "late-rx"
)

// Accept is the payload of the ACK that answers a CONFIG which asked for
// features: the ones the destination grants. The ACK of a CONFIG that asked
// for none, and of VERIFY, is empty.
type Accept struct {
	Version  int      `json:"version"`
	Features []string `json:"features"`
}

// EncodeAccept returns the ACK payload granting features.
func EncodeAccept(features []string) []byte {
	b, _ := json.Marshal(Accept{Version: MessageVersion, Features: features}) // cannot fail
	return b
}

// DecodeAccept decodes the ACK that answers CONFIG. An empty payload (a
// destination that predates features) grants none.
func DecodeAccept(p []byte) (Accept, error) {
	if len(p) == 0 {
		return Accept{Version: MessageVersion}, nil
	}
	var a Accept
	if err := decodeJSON(TypeAck, p, &a, &a.Version); err != nil {
		return Accept{}, err
	}
	return a, nil
}

// Grants reports whether a grants feature f.
func (a Accept) Grants(f string) bool { return slices.Contains(a.Features, f) }

// EncodeRX returns the RX payload for packets: count u32, then per packet
// its length u32 and its bytes. Empty packets, more than [MaxRXPackets]
// or more than [MaxRXBytes] of packet bytes are errors.
func EncodeRX(packets [][]byte) ([]byte, error) {
	if len(packets) > MaxRXPackets {
		return nil, fmt.Errorf("wire: RX: %d packets exceed %d", len(packets), MaxRXPackets)
	}
	total := 0
	for _, pk := range packets {
		if len(pk) == 0 {
			return nil, errors.New("wire: RX: empty packet")
		}
		total += len(pk)
	}
	if total > MaxRXBytes {
		return nil, fmt.Errorf("wire: RX: %d bytes of packets exceed %d", total, MaxRXBytes)
	}
	b := make([]byte, 0, 4+4*len(packets)+total)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(packets)))
	for _, pk := range packets {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(pk)))
		b = append(b, pk...)
	}
	return b, nil
}

// DecodeRX decodes an RX payload. The packets alias p.
func DecodeRX(p []byte) ([][]byte, error) {
	if len(p) < 4 {
		return nil, fmt.Errorf("wire: RX: payload %d bytes, too short for the count", len(p))
	}
	n := binary.LittleEndian.Uint32(p)
	if n > MaxRXPackets {
		return nil, fmt.Errorf("wire: RX: %d packets exceed %d", n, MaxRXPackets)
	}
	p = p[4:]
	if uint64(len(p)) > 4*uint64(n)+MaxRXBytes {
		return nil, fmt.Errorf("wire: RX: more than %d bytes of packets", MaxRXBytes)
	}
	packets := make([][]byte, 0, n)
	for i := range n {
		if len(p) < 4 {
			return nil, fmt.Errorf("wire: RX: packet %d: length cut short", i)
		}
		l := binary.LittleEndian.Uint32(p)
		p = p[4:]
		if l == 0 || uint64(l) > uint64(len(p)) {
			return nil, fmt.Errorf("wire: RX: packet %d: length %d, %d bytes left", i, l, len(p))
		}
		packets = append(packets, p[:l:l])
		p = p[l:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("wire: RX: %d bytes after the last packet", len(p))
	}
	return packets, nil
}
