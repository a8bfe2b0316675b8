package irqchip

import "sync"

// DeliveryMode is an interrupt message's delivery mode (ICR bits 8-10,
// IOAPIC redirection entry bits 8-10).
type DeliveryMode uint8

// Delivery modes.
const (
	ModeFixed          DeliveryMode = 0
	ModeLowestPriority DeliveryMode = 1
	ModeSMI            DeliveryMode = 2
	ModeNMI            DeliveryMode = 4
	ModeINIT           DeliveryMode = 5
	ModeStartup        DeliveryMode = 6
	ModeExtINT         DeliveryMode = 7
)

// Destination shorthands (ICR bits 18-19).
const (
	ShorthandNone       = 0
	ShorthandSelf       = 1
	ShorthandAll        = 2
	ShorthandAllButSelf = 3
)

// Message is an interrupt message on the APIC bus: an IPI from a LAPIC's
// ICR or an IOAPIC redirection.
type Message struct {
	Vector    uint8
	Mode      DeliveryMode
	Logical   bool  // destination mode: logical (true) or physical
	Dest      uint8 // xAPIC destination field
	Level     bool  // trigger mode: level (true) or edge
	Assert    bool  // level bit (ICR bit 14); INIT with Level && !Assert is a de-assert
	Shorthand uint8 // ShorthandNone...; only IPIs use it
}

// APICBus connects the LAPICs of a VM: IPIs and IOAPIC messages go through
// it to every LAPIC whose destination matches.
type APICBus struct {
	// mu guards lapics.
	mu     sync.RWMutex
	lapics []*LAPIC
}

// Attach adds a LAPIC to the bus; NewLAPIC does it for the bus in its
// config.
func (b *APICBus) Attach(a *LAPIC) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lapics = append(b.lapics, a)
}

// Deliver sends m from src (nil for the IOAPIC) and reports how many LAPICs
// accepted it. Lowest-priority messages go to the first matching LAPIC (the
// lowest-numbered vCPU), as if every candidate had the same priority.
func (b *APICBus) Deliver(src *LAPIC, m Message) int {
	b.mu.RLock()
	lapics := b.lapics
	b.mu.RUnlock()
	n := 0
	for _, a := range lapics {
		var match bool
		switch m.Shorthand {
		case ShorthandSelf:
			match = a == src
		case ShorthandAll:
			match = true
		case ShorthandAllButSelf:
			match = a != src
		default:
			match = a.matchDest(m.Dest, m.Logical)
		}
		if !match {
			continue
		}
		if a.accept(m) {
			n++
			if m.Mode == ModeLowestPriority && m.Shorthand == ShorthandNone {
				break
			}
		}
	}
	return n
}
