package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/limits"
)

// SchemaVersion is the version written into every value. Decoding refuses a
// value whose version is newer (written by a newer Godwit) or missing.
const SchemaVersion = 1

// MaxValueBytes bounds one encoded value. The pool's values are small (a
// few hundred bytes, PLATFORM.md §6 budgets < 2 KiB); the bound catches a
// runaway list long before etcd's 1.5 MiB request limit.
const MaxValueBytes = 16 << 10

// Versioned is embedded first in every value type; its field is the
// "version" member of the JSON object.
type Versioned struct {
	Version int `json:"version"`
}

func (v *Versioned) stamp()             { v.Version = SchemaVersion }
func (v *Versioned) schemaVersion() int { return v.Version }

type value interface {
	stamp()
	schemaVersion() int
}

// HostInfo is hosts/<h>/info: the facts placement needs. Written by the agent
// at start and whenever a fact changes.
type HostInfo struct {
	Versioned
	Host       string   `json:"host"`
	Addr       string   `json:"addr"`            // agent API / migration address, host:port
	Accel      string   `json:"accel,omitempty"` // accelerator VMs run on: kvm or emu ("" = kvm)
	CPUIDHash  string   `json:"cpuid_hash"`      // hash of the guest-visible CPUID set
	TSCKHz     uint64   `json:"tsc_khz"`         // invariant TSC frequency
	KVMCaps    []string `json:"kvm_caps"`        // capabilities that matter for migration
	CPUs       int      `json:"cpus"`            // logical CPUs available to VMs
	MemBytes   uint64   `json:"mem_bytes"`       // memory available to VMs
	StorageIDs []string `json:"storage_ids"`     // shared storage the host can reach
	Networks   []string `json:"networks"`        // L2 networks proven by probe frames
	Agent      string   `json:"agent"`           // agent version
}

// HostAlive is hosts/<h>/alive, bound to the host lease: present while the
// host holds its lease. Its deletion is how the pool learns a host is lost.
type HostAlive struct {
	Versioned
	Host  string    `json:"host"`
	Lease int64     `json:"lease"`
	Since time.Time `json:"since"`
}

// HostUsage is hosts/<h>/usage, bound to the host lease.
type HostUsage struct {
	Versioned
	CPU          float64   `json:"cpu"`            // busy fraction of the host's CPUs, 0..1
	MemUsedBytes uint64    `json:"mem_used_bytes"` // memory committed to VMs
	DirtyRate    float64   `json:"dirty_rate"`     // bytes/s dirtied by all VMs, for migration time prediction
	VMs          int       `json:"vms"`
	At           time.Time `json:"at"`
}

// HostStateName is the administrative state of a host.
type HostStateName string

// Host states (PLATFORM.md §6).
const (
	HostActive      HostStateName = "active"
	HostDraining    HostStateName = "draining"
	HostMaintenance HostStateName = "maintenance"
	HostFailed      HostStateName = "failed"
)

// Valid reports whether s is one of the host states.
func (s HostStateName) Valid() bool {
	switch s {
	case HostActive, HostDraining, HostMaintenance, HostFailed:
		return true
	}
	return false
}

// HostState is hosts/<h>/state.
type HostState struct {
	Versioned
	State  HostStateName `json:"state"`
	Reason string        `json:"reason,omitempty"`
	Since  time.Time     `json:"since"`
}

// DiskSpec is one disk image of a VM.
type DiskSpec struct {
	Path      string `json:"path"`
	StorageID string `json:"storage_id"` // must be among the host's StorageIDs
	ReadOnly  bool   `json:"read_only,omitempty"`
}

// NICSpec is one network interface of a VM.
type NICSpec struct {
	Network string `json:"network"` // must be among the host's Networks
	MAC     string `json:"mac"`
}

// HASpec says what happens when the VM's host is lost.
type HASpec struct {
	Restart  bool `json:"restart"`            // fence and restart elsewhere
	Priority int  `json:"priority,omitempty"` // higher restarts first
}

// DesiredState is what the user asked for.
type DesiredState string

// Desired states.
const (
	DesiredRunning DesiredState = "running"
	DesiredStopped DesiredState = "stopped"
)

// VMSpec is vms/<v>/spec.
type VMSpec struct {
	Versioned
	VCPUs    int          `json:"vcpus"`
	MemBytes uint64       `json:"mem_bytes"`
	Kernel   string       `json:"kernel"`            // guest kernel path, the same on every host
	Initrd   string       `json:"initrd,omitempty"`  // a Linux kernel's initramfs, the same on every host
	Cmdline  string       `json:"cmdline,omitempty"` // guest command line
	Disks    []DiskSpec   `json:"disks,omitempty"`
	NICs     []NICSpec    `json:"nics,omitempty"`
	HA       HASpec       `json:"ha"`
	Desired  DesiredState `json:"desired"`
}

// Owner is vms/<v>/owner: the one host allowed to run the VM, and the lease
// the key is bound to. The key's ModRevision is the fencing epoch.
type Owner struct {
	Versioned
	Host  string `json:"host"`
	Lease int64  `json:"lease"`
	// Migration is the ID of the migration whose HandOver or AbortHandOver
	// wrote this value, empty after a plain placement. It makes every
	// owner write distinguishable, which Resolve relies on.
	Migration string    `json:"migration,omitempty"`
	Since     time.Time `json:"since"`
}

// same reports whether o and p name the same holder (ignoring Since).
func (o Owner) same(p Owner) bool {
	return o.Host == p.Host && o.Lease == p.Lease && o.Migration == p.Migration
}

// VMPhase is what the owning agent reports about a VM.
type VMPhase string

// VM phases.
const (
	VMStarting  VMPhase = "starting"
	VMRunning   VMPhase = "running"
	VMPaused    VMPhase = "paused"
	VMMigrating VMPhase = "migrating"
	VMStopped   VMPhase = "stopped"
	VMFailed    VMPhase = "failed"
	VMUnknown   VMPhase = "unknown"
)

// VMStatus is vms/<v>/status, bound to the reporting host's lease.
type VMStatus struct {
	Versioned
	Host       string    `json:"host"`
	Phase      VMPhase   `json:"phase"`
	PID        int       `json:"pid,omitempty"`
	Migratable bool      `json:"migratable"`
	Reason     string    `json:"reason,omitempty"` // why not migratable, or why failed
	At         time.Time `json:"at"`
}

// MigrationPhase is the life of a migration record.
type MigrationPhase string

// Migration phases. Committed and Aborted are written only by HandOver and
// AbortHandOver, in the same Txn as the owner change.
const (
	// MigrationRequested: the controller wrote the record; the source
	// agent (Src) picks it up and drives the migration.
	MigrationRequested MigrationPhase = "requested"
	MigrationPlanned   MigrationPhase = "planned"
	MigrationRunning   MigrationPhase = "running"
	MigrationCommitted MigrationPhase = "committed"
	MigrationAborted   MigrationPhase = "aborted"
	MigrationFailed    MigrationPhase = "failed"
)

// Terminal reports whether no further phase follows.
func (p MigrationPhase) Terminal() bool {
	return p == MigrationCommitted || p == MigrationAborted || p == MigrationFailed
}

// Migration is migrations/<v>: the current or last migration of a VM.
type Migration struct {
	Versioned
	ID     string `json:"id"`
	VM     string `json:"vm"`
	Src    string `json:"src"`
	Dst    string `json:"dst"`
	Reason string `json:"reason,omitempty"` // user, drain, balance
	// ExpectOwnerRev is the owner key's ModRevision when the migration
	// started: the guard of the switchover.
	ExpectOwnerRev int64          `json:"expect_owner_rev"`
	Phase          MigrationPhase `json:"phase"`
	Round          int            `json:"round,omitempty"`
	RemainingBytes uint64         `json:"remaining_bytes,omitempty"` // dirty after the last round
	SentBytes      uint64         `json:"sent_bytes,omitempty"`
	Error          string         `json:"error,omitempty"`
	// Bandwidth caps the migration's link use, in bytes/s; 0: no cap.
	// DowntimeMs is its downtime target; 0: the VMM's default. Both may
	// change while it runs: the source agent passes changes on.
	Bandwidth  uint64  `json:"bandwidth,omitempty"`
	DowntimeMs float64 `json:"downtime_ms,omitempty"`
	// Cancel, when set, asks the source agent to stop the migration (the
	// reason why); one past its COMMIT completes anyway.
	Cancel  string    `json:"cancel,omitempty"`
	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
}

// Drain is drains/<h>: the evacuation plan of a host and its counts.
type Drain struct {
	Versioned
	Host      string    `json:"host"`
	OnBlocked string    `json:"on_blocked"` // wait | shutdown | fail
	Queue     []string  `json:"queue,omitempty"`
	Total     int       `json:"total"`
	Done      int       `json:"done"`
	InFlight  []string  `json:"in_flight,omitempty"`
	Blocked   []string  `json:"blocked,omitempty"`
	Started   time.Time `json:"started"`
}

// Rule is rules/<r>: an affinity or anti-affinity rule.
type Rule struct {
	Versioned
	Name  string   `json:"name"`
	Kind  string   `json:"kind"` // vm-affinity | vm-anti-affinity | vm-host
	Must  bool     `json:"must"` // must (filter) or should (score penalty)
	VMs   []string `json:"vms"`
	Hosts []string `json:"hosts,omitempty"`
}

// Config is the pool's tunables. Zero fields mean "use the built-in default".
type Config struct {
	Versioned
	// Pool names the pool this etcd holds. The first controller writes it;
	// a controller configured for another pool refuses to start, so two
	// pools never share (or mix up) one etcd.
	Pool                string  `json:"pool,omitempty"`
	HostLeaseTTLSeconds int     `json:"host_lease_ttl_seconds,omitempty"`
	LeaseMarginMillis   int     `json:"lease_margin_millis,omitempty"`
	MigrationSlots      int     `json:"migration_slots,omitempty"`
	SlotsPerHost        int     `json:"slots_per_host,omitempty"`
	VCPURatio           float64 `json:"vcpu_ratio,omitempty"`
	HostReserveBytes    uint64  `json:"host_reserve_bytes,omitempty"`
	BalanceLevel        int     `json:"balance_level,omitempty"`
}

// encode stamps v with SchemaVersion and marshals it.
func encode(key string, v value) (string, error) {
	v.stamp()
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("store: encode %s: %w", key, err)
	}
	if len(b) > MaxValueBytes {
		return "", fmt.Errorf("store: encode %s: value is %d bytes, limit %d", key, len(b), MaxValueBytes)
	}
	return string(b), nil
}

// decode unmarshals data into v and checks its version.
func decode(key string, data []byte, v value) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("store: decode %s: %w", key, err)
	}
	switch ver := v.schemaVersion(); {
	case ver == 0:
		return fmt.Errorf("%w: %s has no version field", ErrSchema, key)
	case ver > SchemaVersion:
		return fmt.Errorf("%w: %s has version %d, this build reads up to %d (upgrade this program)", ErrSchema, key, ver, SchemaVersion)
	}
	return nil
}

// CheckShape is Shape(name).Check() as one line: what the controller and
// the agent refuse a spec with.
func (s VMSpec) CheckShape(name string) error {
	if err := s.Shape(name).Check(); err != nil {
		return errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}

// Shape is the part of the spec that the controller, the agent and the VMM
// check the same way (package limits), so the pool stores no VM its VMM
// would refuse.
func (s VMSpec) Shape(name string) limits.VM {
	v := limits.VM{Name: name, MemBytes: s.MemBytes, VCPUs: s.VCPUs, Cmdline: s.Cmdline}
	if len(s.NICs) > 0 {
		if mac, err := net.ParseMAC(s.NICs[0].MAC); err == nil {
			v.MAC = mac
		}
	}
	return v
}
