// Package migration moves a running VM between two VMM processes over TCP:
// pre-copy of guest RAM with KVM dirty logging (plus the VMM's own bitmap
// for device writes), then a short pause in which the last dirty pages and
// the vCPU, interrupt-controller, clock and device state travel, and a
// commit after which only the destination runs.
//
// The byte format is package wire; the decisions of the pre-copy loop
// (when to switch over, throttle or give up) are package policy. This
// package is the engine between them and the VM: Send runs on the source,
// Receive on the destination.
//
// Guarantees: before COMMIT is sent, any failure (refusal, a closed or
// corrupt stream, a timeout, a cancel) aborts, stops dirty logging and
// resumes the source; the destination discards its VM on ABORT or a lost
// connection and never runs without COMMIT. After COMMIT the source never
// resumes unless the destination confirms (QUERY) that it did not commit.
//
// Who may import: the VMM's API server and commands. It imports vm, wire
// and policy.
package migration

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/godwit-vmm/godwit/internal/migration/policy"
	"github.com/godwit-vmm/godwit/internal/migration/wire"
)

// Options configure a migration on the source.
type Options struct {
	// Streams is the number of TCP data connections (1..16).
	Streams int
	// Verify makes the destination check a CRC32C of every 2 MiB of RAM
	// against the paused source before it may commit.
	Verify bool
	// Policy holds the convergence limits; zero fields take policy.Defaults.
	Policy policy.Config
	// DialTimeout bounds connecting to the destination.
	DialTimeout time.Duration
	// TLS, if set (see LoadTLS), wraps every connection to the
	// destination in TLS; the destination must listen with TLSListener.
	TLS *tls.Config
	// ReplyTimeout bounds every wait for the destination (ACK, ITER_DONE,
	// STATE_OK, COMMITTED).
	ReplyTimeout time.Duration
	// ResumeGate, if set, is asked before the source resumes after its
	// pause (a failed switchover, or a COMMIT the destination says it did
	// not take): true lets it resume; false means another host owns the
	// VM now, so the source stops; an error means no one can tell, so the
	// source stays paused. A pool sets it to the abort transaction on the
	// owner key, the mirror of the destination's CommitGate.
	ResumeGate func(ctx context.Context) (bool, error)
	// Session, if set, is the session ID to use (in a pool SessionFor of
	// the migration's ID, which the destination expects); nil: random.
	Session *wire.SessionID
}

// DefaultStreams is the default number of data connections, chosen by
// measurement (docs/BENCHMARKS.md, "Data streams"): on a 2-core host, 1 GiB
// guest dirtying 512 MiB flat out, 6 migrations each, median total time
// was 790 ms with one stream, 646 ms with two and 623 ms with four, and
// median downtime 8.8, 3.9 and 3.5 ms. Two streams let the destination
// receive on both cores; more add little where there are no more cores.
const DefaultStreams = 2

// withDefaults fills zero fields.
func (o Options) withDefaults() Options {
	if o.Streams == 0 {
		o.Streams = DefaultStreams
	}
	d := policy.Defaults()
	p := &o.Policy
	if p.DowntimeTarget == 0 {
		p.DowntimeTarget = d.DowntimeTarget
	}
	if p.MaxDowntime == 0 {
		p.MaxDowntime = max(d.MaxDowntime, p.DowntimeTarget)
	}
	if p.MaxIterations == 0 {
		p.MaxIterations = d.MaxIterations
	}
	if p.MaxTotal == 0 {
		p.MaxTotal = d.MaxTotal
	}
	if p.ThrottleInitial == 0 {
		p.ThrottleInitial, p.ThrottleStep, p.ThrottleMax = d.ThrottleInitial, d.ThrottleStep, d.ThrottleMax
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.ReplyTimeout == 0 {
		o.ReplyTimeout = 30 * time.Second
	}
	return o
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.Streams < 1 || o.Streams > wire.MaxStreams {
		return fmt.Errorf("migration: streams must be 1 to %d, not %d", wire.MaxStreams, o.Streams)
	}
	return o.Policy.Validate()
}

// Round is one pre-copy round as the source saw it.
type Round struct {
	Iteration    int     `json:"iteration"`
	DataPages    uint64  `json:"data_pages"`
	ZeroPages    uint64  `json:"zero_pages"`
	SkippedPages uint64  `json:"skipped_pages"`
	Bytes        uint64  `json:"bytes"`
	DurationMs   float64 `json:"duration_ms"`
	MBps         float64 `json:"throughput_mib_s"`
	DirtyPages   uint64  `json:"dirty_pages_after"`
	DirtyRate    float64 `json:"dirty_rate_pages_s"`
	Throttle     int     `json:"throttle_pct"`
}

// Report is the outcome of a migration, as the source measured it.
type Report struct {
	ID           string  `json:"id"`
	Destination  string  `json:"destination"`
	Result       string  `json:"result"` // "completed", "aborted", "failed", "unknown"
	Error        string  `json:"error,omitempty"`
	TotalMs      float64 `json:"total_ms"`
	DowntimeMs   float64 `json:"downtime_ms"` // source pause → destination running
	SetupMs      float64 `json:"setup_ms"`
	Bytes        uint64  `json:"bytes"`
	DataPages    uint64  `json:"data_pages"`
	ZeroPages    uint64  `json:"zero_pages"`
	SkippedPages uint64  `json:"skipped_pages"`
	StateBytes   int     `json:"state_bytes"`
	// RXHandedOver counts guest-bound packets that reached the source
	// while it was paused and went to the destination with the state.
	RXHandedOver int  `json:"rx_handed_over"`
	Streams      int  `json:"streams"`
	Verified     bool `json:"verified"`
	MaxThrottle  int  `json:"max_throttle_pct"`
	Forced       bool `json:"forced_switchover,omitempty"`
	// Switchover is the downtime broken down by step, in ms, keyed by
	// the names of SwitchoverSteps.
	Switchover map[string]float64 `json:"switchover_ms,omitempty"`
	Rounds     []Round            `json:"rounds"`
}

// SwitchoverSteps names the steps of Report.Switchover in the order they
// happen; verify and rx are there only when the migration had them.
var SwitchoverSteps = []string{"pause", "save_state", "last_pages", "state_restored", "verify", "rx", "commit"}

// newSessionID returns a random session id.
func newSessionID() wire.SessionID {
	var id wire.SessionID
	rand.Read(id[:])
	return id
}
