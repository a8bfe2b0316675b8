package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Status is what /proc/PID/status says about a process's (or a thread's)
// sandbox.
type Status struct {
	Seccomp                int // 0 off, 1 strict, 2 filter
	NoNewPrivs             bool
	CapEff, CapPrm, CapBnd uint64
}

// ReadStatus reads /proc/PID/status. PID may be a thread ID: the status is
// then that thread's.
func ReadStatus(pid int) (Status, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return Status{}, fmt.Errorf("sandbox: %w", err)
	}
	s, err := parseStatus(string(b))
	if err != nil {
		return Status{}, fmt.Errorf("sandbox: %s: %w", path, err)
	}
	return s, nil
}

// parseStatus parses the text of a /proc/PID/status file.
func parseStatus(text string) (Status, error) {
	var s Status
	seen := map[string]bool{}
	for line := range strings.Lines(text) {
		key, val, _ := strings.Cut(line, ":")
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "Seccomp":
			s.Seccomp, err = strconv.Atoi(val)
		case "NoNewPrivs":
			s.NoNewPrivs, err = strconv.ParseBool(val)
		case "CapEff":
			s.CapEff, err = strconv.ParseUint(val, 16, 64)
		case "CapPrm":
			s.CapPrm, err = strconv.ParseUint(val, 16, 64)
		case "CapBnd":
			s.CapBnd, err = strconv.ParseUint(val, 16, 64)
		default:
			continue
		}
		if err != nil {
			return Status{}, fmt.Errorf("bad %s line %q", key, val)
		}
		seen[key] = true
	}
	if len(seen) != 5 {
		return Status{}, fmt.Errorf("want Seccomp, NoNewPrivs, CapEff, CapPrm and CapBnd lines, found %d of them", len(seen))
	}
	return s, nil
}
