// Package limits is the one place that says what a VM's configuration may
// be and how its values are written on a command line: sizes, vCPU counts,
// names, durations and bandwidths, each read by one parser, and the checks
// a VM's shape must pass. The VMM, the host agent, the controller and the
// CLI all use it, so the pool never stores a VM its VMM would refuse.
//
// Who may import it: anyone; it imports nothing of Godwit's.
package limits

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// The limits of a VM's shape.
const (
	// MinMemBytes is the least RAM a VM may have: the multiboot
	// structures and the test guest's 16 MiB workload base need it.
	MinMemBytes = 32 << 20
	// MaxMemBytes is the most RAM a VM may have.
	MaxMemBytes = 1 << 40
	// MemAlign is the granule of a VM's RAM (one huge page).
	MemAlign = 2 << 20
	// MaxVCPUs is the most vCPUs a VM may have.
	MaxVCPUs = 16
	// MaxNameLen is the longest name of a VM, host, rule or controller:
	// a DNS label, which also fits a certificate's common name.
	MaxNameLen = 63
	// MaxTAPLen is the longest TAP interface name (IFNAMSIZ - 1).
	MaxTAPLen = 15
	// MaxCmdlineLen is the longest guest command line.
	MaxCmdlineLen = 4095
)

// SizeGrammar is the accepted form of a size, for help texts.
const SizeGrammar = "a whole number with an optional unit B, K, M, G or T (KiB, MiB, GiB and TiB are the same: powers of 1024)"

// units are the size suffixes, upper-cased, with their multipliers.
var units = map[string]uint64{
	"B": 1,
	"K": 1 << 10, "KIB": 1 << 10,
	"M": 1 << 20, "MIB": 1 << 20,
	"G": 1 << 30, "GIB": 1 << 30,
	"T": 1 << 40, "TIB": 1 << 40,
}

// ParseBytes reads a size: digits, then an optional unit (SizeGrammar),
// case-insensitive, with no space or sign. A number without a unit counts
// in bare units (1 for bytes, 1<<20 where a bare number means MiB). It
// refuses what it cannot represent rather than wrap around.
func ParseBytes(s string, bare uint64) (uint64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	digits, unit := s[:i], strings.ToUpper(s[i:])
	if digits == "" {
		return 0, fmt.Errorf("%q is not a size: want %s, e.g. 512M or 2G", s, SizeGrammar)
	}
	mult := bare
	if unit != "" {
		m, ok := units[unit]
		if !ok {
			return 0, fmt.Errorf("%q: unknown unit %q: want B, K, M, G or T (KiB, MiB, GiB, TiB)", s, s[i:])
		}
		mult = m
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || n > math.MaxUint64/mult {
		return 0, fmt.Errorf("%q is too large a size", s)
	}
	return n * mult, nil
}

// FormatBytes prints a size the way ParseBytes reads it back exactly:
// the largest unit that divides it.
func FormatBytes(b uint64) string {
	for _, u := range []struct {
		s string
		m uint64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if b != 0 && b%u.m == 0 {
			return strconv.FormatUint(b/u.m, 10) + u.s
		}
	}
	return strconv.FormatUint(b, 10)
}

// ParseMem reads a VM's RAM (a bare number is MiB, as QEMU's -m) and
// checks it with CheckMem.
func ParseMem(s string) (uint64, error) {
	b, err := ParseBytes(s, 1<<20)
	if err != nil {
		return 0, err
	}
	return b, CheckMem(b)
}

// CheckMem checks a VM's RAM: MinMemBytes to MaxMemBytes in MemAlign steps.
func CheckMem(b uint64) error {
	switch {
	case b < MinMemBytes:
		return fmt.Errorf("memory %s is too little: give at least %s", FormatBytes(b), FormatBytes(MinMemBytes))
	case b > MaxMemBytes:
		return fmt.Errorf("memory %s is too much: at most %s", FormatBytes(b), FormatBytes(MaxMemBytes))
	case b%MemAlign != 0:
		return fmt.Errorf("memory %s is not a multiple of %s", FormatBytes(b), FormatBytes(MemAlign))
	}
	return nil
}

// CheckVCPUs checks a VM's vCPU count: 1 to MaxVCPUs.
func CheckVCPUs(n int) error {
	if n < 1 || n > MaxVCPUs {
		return fmt.Errorf("%d vCPUs: want 1 to %d", n, MaxVCPUs)
	}
	return nil
}

// ParseVCPUs reads a vCPU count and checks it with CheckVCPUs.
func ParseVCPUs(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a vCPU count: want a whole number, 1 to %d", s, MaxVCPUs)
	}
	return n, CheckVCPUs(n)
}

// ParseBandwidth reads a bandwidth in bytes per second: a size (a bare
// number is bytes), optionally followed by "/s"; 0 means unlimited.
func ParseBandwidth(s string) (uint64, error) {
	b, err := ParseBytes(strings.TrimSuffix(s, "/s"), 1)
	if err != nil {
		return 0, fmt.Errorf("bandwidth %w (bytes per second; 0 is unlimited)", err)
	}
	return b, nil
}

// ParseDuration reads a duration in Go's form (300ms, 1.5s, 2m) and checks
// it lies within [lo, hi].
func ParseDuration(s string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: want a number with a unit ms, s, m or h, e.g. 300ms or 2s", s)
	}
	return d, CheckDuration(d, lo, hi)
}

// CheckDuration checks that d lies within [lo, hi].
func CheckDuration(d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("%v: want %v to %v", d, lo, hi)
	}
	return nil
}

// NameGrammar is the accepted form of a name, for help texts.
const NameGrammar = "1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"

// CheckName checks the name of a VM, host, rule, controller or pool (kind
// says which, for the error). A name becomes an etcd key, a file name, a
// socket path and a certificate's common name, so it is a plain DNS-like
// label: NameGrammar.
func CheckName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("a %s name is required", kind)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%s name %q is %d characters: at most %d", kind, name, len(name), MaxNameLen)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || i > 0 && (r == '.' || r == '_' || r == '-')
		if !ok {
			return fmt.Errorf("%s name %q: want %s", kind, name, NameGrammar)
		}
	}
	return nil
}

// VM is the shape of a VM that every layer checks the same way.
type VM struct {
	Name     string
	MemBytes uint64
	VCPUs    int
	Cmdline  string
	TAP      string           // "" when the VM has no NIC
	MAC      net.HardwareAddr // nil picks one
	// Incoming VMs take their RAM and vCPUs from the migration source.
	Incoming bool
}

// Check reports every problem with v, one per line, each naming the flag
// that sets it on `godwit run`.
func (v VM) Check() error {
	var errs []error
	add := func(err error, flag string) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%w (%s)", err, flag))
		}
	}
	add(CheckName("VM", v.Name), "--name")
	if !v.Incoming {
		add(CheckMem(v.MemBytes), "--mem")
		add(CheckVCPUs(v.VCPUs), "--cpus")
	}
	if len(v.Cmdline) > MaxCmdlineLen {
		add(fmt.Errorf("the command line is %d bytes: at most %d", len(v.Cmdline), MaxCmdlineLen), "--cmdline")
	}
	if v.TAP != "" && len(v.TAP) > MaxTAPLen {
		add(fmt.Errorf("TAP name %q is %d characters: at most %d", v.TAP, len(v.TAP), MaxTAPLen), "--tap")
	}
	if v.MAC != nil && (len(v.MAC) != 6 || v.MAC[0]&1 != 0) {
		add(fmt.Errorf("MAC %s: want a 6-byte unicast address", v.MAC), "--mac")
	}
	return errors.Join(errs...)
}
