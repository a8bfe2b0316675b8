package vm

import (
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/godwit-vmm/godwit/internal/devices"
)

// portRange is a device on the I/O-port bus at [base, base+n).
type portRange struct {
	base, n uint16
	dev     devices.PortIO
}

// dynamicPorts is a device that claims ports that can move at run time
// (PCI BARs the guest may rewrite).
type dynamicPorts interface {
	devices.PortIO
	Owns(port uint16) bool
}

// PortBus dispatches I/O-port accesses from vCPUs. Unknown ports read as
// all-ones and ignore writes, as on a PC with nothing decoding them; each
// unknown port is logged once. Ranges are registered before the vCPUs start
// and never change, so lookups need no lock.
type PortBus struct {
	ranges  []portRange
	dynamic []dynamicPorts
	log     *slog.Logger

	// mu guards unknown, the set of unclaimed ports already logged.
	mu      sync.Mutex
	unknown map[uint16]bool
}

// NewPortBus returns an empty bus that logs to log.
func NewPortBus(log *slog.Logger) *PortBus {
	return &PortBus{log: log, unknown: map[uint16]bool{}}
}

// Add registers dev for ports [base, base+n). Overlaps are a programming
// error and are reported.
func (b *PortBus) Add(base, n uint16, dev devices.PortIO) error {
	for _, r := range b.ranges {
		if base < r.base+r.n && r.base < base+n {
			return fmt.Errorf("vm: ports [%#x,+%d) overlap [%#x,+%d)", base, n, r.base, r.n)
		}
	}
	b.ranges = append(b.ranges, portRange{base, n, dev})
	sort.Slice(b.ranges, func(i, j int) bool { return b.ranges[i].base < b.ranges[j].base })
	return nil
}

// AddDynamic registers a device that decides per access whether it owns a
// port; it is asked after the fixed ranges.
func (b *PortBus) AddDynamic(dev dynamicPorts) { b.dynamic = append(b.dynamic, dev) }

func (b *PortBus) find(port uint16) devices.PortIO {
	i := sort.Search(len(b.ranges), func(i int) bool { return b.ranges[i].base+b.ranges[i].n > port })
	if i < len(b.ranges) && b.ranges[i].base <= port {
		return b.ranges[i].dev
	}
	for _, d := range b.dynamic {
		if d.Owns(port) {
			return d
		}
	}
	return nil
}

// In handles a read of len(data) bytes from port.
func (b *PortBus) In(port uint16, data []byte) {
	if d := b.find(port); d != nil {
		d.ReadPort(port, data)
		return
	}
	for i := range data {
		data[i] = 0xff
	}
	b.logUnknown(port, "read")
}

// Out handles a write of data to port.
func (b *PortBus) Out(port uint16, data []byte) {
	if d := b.find(port); d != nil {
		d.WritePort(port, data)
		return
	}
	b.logUnknown(port, "write")
}

func (b *PortBus) logUnknown(port uint16, op string) {
	b.mu.Lock()
	seen := b.unknown[port]
	b.unknown[port] = true
	b.mu.Unlock()
	if !seen {
		b.log.Debug("guest accessed an unclaimed I/O port", "port", fmt.Sprintf("%#x", port), "op", op)
	}
}
