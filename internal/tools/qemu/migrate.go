package qemu

import (
	"encoding/json"
	"fmt"
	"time"
)

// MigrationStats is the part of query-migrate's reply the benchmarks
// report, under QEMU's own names. Times are QEMU's, in ms; absent fields
// stay zero.
type MigrationStats struct {
	Status         string   `json:"status"` // none, setup, active, completed, failed, cancelled, …
	TotalMs        float64  `json:"total-time"`
	DowntimeMs     float64  `json:"downtime"`
	SetupMs        float64  `json:"setup-time"`
	ExpectedDownMs float64  `json:"expected-downtime"`
	ThrottlePct    float64  `json:"cpu-throttle-percentage"`
	ErrorDesc      string   `json:"error-desc,omitempty"`
	RAM            RAMStats `json:"ram"`
}

// RAMStats is query-migrate's "ram" object.
type RAMStats struct {
	Transferred    uint64  `json:"transferred"`
	Total          uint64  `json:"total"`
	Remaining      uint64  `json:"remaining"`
	Normal         uint64  `json:"normal"`    // pages sent with their contents
	Duplicate      uint64  `json:"duplicate"` // zero pages
	Mbps           float64 `json:"mbps"`
	DirtySyncCount uint64  `json:"dirty-sync-count"`
	DirtyPagesRate uint64  `json:"dirty-pages-rate"`
	PrecopyBytes   uint64  `json:"precopy-bytes"`
	DowntimeBytes  uint64  `json:"downtime-bytes"`
	PostcopyBytes  uint64  `json:"postcopy-bytes"`
}

// ParseMigrationStats decodes query-migrate's return value.
func ParseMigrationStats(raw json.RawMessage) (MigrationStats, error) {
	var s MigrationStats
	if err := json.Unmarshal(raw, &s); err != nil {
		return MigrationStats{}, fmt.Errorf("query-migrate: %w", err)
	}
	return s, nil
}

// Finished says whether a migration in this status is over.
func (s MigrationStats) Finished() bool {
	switch s.Status {
	case "completed", "failed", "cancelled":
		return true
	}
	return false
}

// MigrateOptions are how to migrate.
type MigrateOptions struct {
	URI string // tcp:HOST:PORT, where the destination listens
	// Capabilities are set on the source and on the destination (which
	// may be nil), every one explicitly: a former destination keeps what
	// it was given.
	Capabilities map[string]bool
	// Parameters for migrate-set-parameters on the source (max-bandwidth
	// in bytes/s, downtime-limit in ms, …); nil keeps QEMU's defaults.
	Parameters map[string]any
	// Timeout cancels a migration still running after it (0: never).
	Timeout time.Duration
	// Poll is the query-migrate interval (0: 50 ms).
	Poll time.Duration
}

// MigrateResult is one migration as the source QEMU saw it.
type MigrateResult struct {
	// Status is QEMU's final status, or "cancelled(timeout)" when it was
	// cancelled after MigrateOptions.Timeout.
	Status  string
	Started time.Time // just before the migrate command
	Ended   time.Time // when the final status was seen
	Final   MigrationStats
	Raw     json.RawMessage // the final query-migrate reply as QEMU sent it
	Samples int             // query-migrate replies seen
	// MaxThrottlePct is the highest cpu-throttle-percentage seen.
	MaxThrottlePct float64
}

// Migrate migrates src to dst (listening at o.URI, see VM.Incoming; dst
// may be nil when it is not driven from here): it sets the capabilities
// and parameters, runs migrate and polls query-migrate until the migration
// is over or o.Timeout has passed, when it cancels it. The error is nil
// only for a completed migration.
func Migrate(src, dst *VM, o MigrateOptions) (MigrateResult, error) {
	var r MigrateResult
	if _, err := src.qmp(); err != nil {
		return r, err
	}
	if len(o.Capabilities) > 0 {
		var caps []map[string]any
		for c, on := range o.Capabilities {
			caps = append(caps, map[string]any{"capability": c, "state": on})
		}
		for _, vm := range []*VM{src, dst} {
			if vm == nil || vm.QMP == nil {
				continue
			}
			if _, err := vm.QMP.Do("migrate-set-capabilities", map[string]any{"capabilities": caps}); err != nil {
				return r, fmt.Errorf("%s: %w", vm.Name, err)
			}
		}
	}
	if len(o.Parameters) > 0 {
		if _, err := src.QMP.Do("migrate-set-parameters", o.Parameters); err != nil {
			return r, fmt.Errorf("%s: %w", src.Name, err)
		}
	}
	poll := o.Poll
	if poll <= 0 {
		poll = 50 * time.Millisecond
	}
	r.Started = time.Now()
	if _, err := src.QMP.Do("migrate", map[string]any{"uri": o.URI}); err != nil {
		r.Status, r.Ended = "failed", time.Now()
		return r, fmt.Errorf("%s: %w", src.Name, err)
	}
	query := func() error {
		raw, err := src.QMP.Do("query-migrate", nil)
		if err != nil {
			return err
		}
		st, err := ParseMigrationStats(raw)
		if err != nil {
			return err
		}
		r.Raw, r.Final, r.Ended = raw, st, time.Now()
		r.Samples++
		r.MaxThrottlePct = max(r.MaxThrottlePct, st.ThrottlePct)
		return nil
	}
	for {
		if err := query(); err != nil {
			r.Status = "failed"
			return r, fmt.Errorf("%s: %w", src.Name, err)
		}
		if r.Final.Finished() {
			r.Status = r.Final.Status
			if r.Status != "completed" {
				return r, fmt.Errorf("%s: migration %s: %s", src.Name, r.Status, r.Final.ErrorDesc)
			}
			return r, nil
		}
		if o.Timeout > 0 && time.Since(r.Started) > o.Timeout {
			return r, cancel(src, &r, o.Timeout, query)
		}
		time.Sleep(poll)
	}
}

// cancel stops a migration that ran past its timeout and waits (up to 5 s)
// for QEMU to say it is over; one that completed meanwhile counts as
// completed.
func cancel(src *VM, r *MigrateResult, timeout time.Duration, query func() error) error {
	if _, err := src.QMP.Do("migrate_cancel", nil); err != nil {
		r.Status = "failed"
		return fmt.Errorf("%s: %w", src.Name, err)
	}
	for range 100 {
		if query() == nil && r.Final.Finished() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.Final.Status == "completed" {
		r.Status = "completed"
		return nil
	}
	r.Status = "cancelled(timeout)"
	return fmt.Errorf("%s: migration not completed in %v: cancelled", src.Name, timeout)
}
