package store

import (
	"fmt"
	"github.com/godwit-vmm/godwit/internal/limits"
	"strings"
)

// Prefix is the root of every key the pool writes. The "v1" is the key
// layout's version; values carry their own SchemaVersion.
const Prefix = "/godwit/v1/"

// Key builders. Names are validated by ValidName before they reach a key;
// these functions only join.

// HostInfoKey is hosts/<h>/info.
func HostInfoKey(host string) string { return Prefix + "hosts/" + host + "/info" }

// HostAliveKey is hosts/<h>/alive, bound to the host lease.
func HostAliveKey(host string) string { return Prefix + "hosts/" + host + "/alive" }

// HostUsageKey is hosts/<h>/usage, bound to the host lease.
func HostUsageKey(host string) string { return Prefix + "hosts/" + host + "/usage" }

// HostStateKey is hosts/<h>/state.
func HostStateKey(host string) string { return Prefix + "hosts/" + host + "/state" }

// VMSpecKey is vms/<v>/spec.
func VMSpecKey(vm string) string { return Prefix + "vms/" + vm + "/spec" }

// OwnerKey is vms/<v>/owner, bound to the owner's host lease.
func OwnerKey(vm string) string { return Prefix + "vms/" + vm + "/owner" }

// VMStatusKey is vms/<v>/status, bound to the reporting host's lease.
func VMStatusKey(vm string) string { return Prefix + "vms/" + vm + "/status" }

// MigrationKey is migrations/<v>: the current (or last) migration of VM v.
func MigrationKey(vm string) string { return Prefix + "migrations/" + vm }

// DrainKey is drains/<h>.
func DrainKey(host string) string { return Prefix + "drains/" + host }

// RuleKey is rules/<r>.
func RuleKey(rule string) string { return Prefix + "rules/" + rule }

// CRLKey holds the pool's certificate revocation list (PEM), published by
// the controller from its CA directory; every agent follows it.
const CRLKey = Prefix + "pki/crl"

// ConfigKey is the pool's tunables.
const ConfigKey = Prefix + "config"

// Prefixes for listing and watching.
const (
	HostsPrefix      = Prefix + "hosts/"
	VMsPrefix        = Prefix + "vms/"
	MigrationsPrefix = Prefix + "migrations/"
	DrainsPrefix     = Prefix + "drains/"
	RulesPrefix      = Prefix + "rules/"
)

// ValidName checks a host, VM, or rule name (limits.CheckName: 1-63
// characters of [a-z0-9._-], starting with a letter or digit). Names
// become key segments, so '/' and anything that would need escaping are
// refused.
func ValidName(kind, name string) error {
	if err := limits.CheckName(kind, name); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// splitKey parses "<prefix><name>/<leaf>" into name and leaf.
func splitKey(prefix, key string) (name, leaf string, ok bool) {
	rest, found := strings.CutPrefix(key, prefix)
	if !found {
		return "", "", false
	}
	name, leaf, ok = strings.Cut(rest, "/")
	return name, leaf, ok && name != "" && !strings.Contains(leaf, "/")
}
