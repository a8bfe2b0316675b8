package irqchip

import (
	"encoding/binary"
	"math/bits"
	"sync"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// PIT ports and clock.
const (
	PortPIT         = 0x40 // 0x40-0x42 counters, 0x43 mode/command
	PortPITControl  = 0x43
	PortSystemCtrlB = 0x61 // NMI status and control: gate 2, speaker, OUT2
	PITHz           = 1193182

	// counter byte-access states (struct kvm_pit_channel_state rw_mode,
	// read_state, write_state, count_latched)
	rwLSB   = 1
	rwMSB   = 2
	rwWord0 = 3 // lo/hi, low byte next
	rwWord1 = 4 // lo/hi, high byte next

	pitUnprogrammed = 0xFF // mode of a channel never programmed (KVM's reset value)

	// pitFlagSpeaker is KVM_PIT_FLAGS_SPEAKER_DATA_ON in kvm_pit_state2.flags.
	pitFlagSpeaker = 2

	// pitMinPeriodNS bounds channel 0's periodic interrupt rate, as KVM's
	// min_timer_period_us (200 us).
	pitMinPeriodNS = 200_000
)

// pitChannel is one counter, with the fields of kvm_pit_channel_state.
type pitChannel struct {
	count         uint32 // initial count, 1..0x10000
	latchedCount  uint16
	countLatched  uint8 // rw state of the latched count, 0 if none
	statusLatched bool
	status        uint8
	readState     uint8
	writeState    uint8
	writeLatch    uint8
	rwMode        uint8
	mode          uint8
	bcd           bool // accepted and reported, but counting is always binary
	gate          bool
	loadTime      int64 // guest ns when the count was loaded
}

// PIT is the 8254 programmable interval timer and port 0x61. Counting is
// computed from the guest clock on reads; channel 0's output drives IRQ 0
// through timers: one edge per period in modes 2 and 3 (periods below
// 200 us are stretched to whole periods of at least 200 us, as KVM limits
// them), one edge at terminal count in modes 0, 1 and 4, none in mode 5.
//
// Not modelled: BCD counting (the counter counts in binary whatever the BCD
// bit says); gate-low suspending modes 0 and 4 (as in KVM and QEMU); the
// counter waiting for its count after a control word; KVM's reinjection of
// ticks the guest has not acknowledged. OUT follows the 8254 data sheet
// (KVM and QEMU invert it in modes 1, 2, 4 and 5). A rising gate restarts
// modes 1, 2, 3 and 5.
type PIT struct {
	sched Scheduler
	irq   func() // pulses IRQ 0; called without mu held

	// mu guards the fields below.
	mu      sync.Mutex
	ch      [3]pitChannel
	speaker bool
	flags   uint32 // other kvm_pit_state2 flags, kept for round trips
	stop    func() bool
	gen     uint64
	k       uint64 // periods of channel 0 fired since its count was loaded
}

// NewPIT returns a PIT in KVM's reset state: channels unprogrammed, gates
// of channels 0 and 1 high, channel 2's low.
func NewPIT(sched Scheduler, irq0 func()) *PIT {
	p := &PIT{sched: sched, irq: irq0}
	for i := range p.ch {
		p.ch[i] = pitChannel{mode: pitUnprogrammed, gate: i != 2, count: 0x10000}
	}
	return p
}

// ticksLocked returns the input clock ticks since channel c's count was loaded.
func (p *PIT) ticksLocked(c *pitChannel) uint64 {
	return ticksIn(p.sched.Now() - c.loadTime)
}

func (c *pitChannel) counterAt(d uint64) uint16 {
	n := uint64(max(c.count, 1))
	switch c.mode {
	case 0, 1, 4, 5:
		return uint16((n - d) & 0xFFFF)
	case 3:
		return uint16(n - (2*d)%n)
	default:
		return uint16(n - d%n)
	}
}

func (c *pitChannel) outAt(d uint64) bool {
	n := uint64(max(c.count, 1))
	switch c.mode {
	case 0, 1:
		return d >= n
	case 2:
		return n == 1 || d%n != n-1
	case 3:
		return d%n < (n+1)>>1
	case 4, 5:
		return d != n
	}
	return false
}

// periodNS returns the guest time of k periods of channel 0.
func (c *pitChannel) periodNS(k uint64) int64 {
	hi, lo := bits.Mul64(k*uint64(c.count), 1_000_000_000)
	if hi >= PITHz {
		return 1 << 62
	}
	q, r := bits.Div64(hi, lo, PITHz)
	if r != 0 {
		q++
	}
	return int64(min(q, 1<<62))
}

// armLocked schedules channel 0's next interrupt after its count was
// loaded or its period fired.
func (p *PIT) armLocked() {
	p.gen++
	if p.stop != nil {
		p.stop()
		p.stop = nil
	}
	c := &p.ch[0]
	if c.mode > 4 || !c.gate {
		return // mode 5 waits for a gate trigger that channel 0 never sees
	}
	now := p.sched.Now()
	if c.mode != 2 && c.mode != 3 { // modes 0, 1, 4: one interrupt (as KVM)
		if p.k == 0 {
			p.schedule(c.loadTime+c.periodNS(1)-now, false)
		}
		return
	}
	step := uint64(1)
	if one := c.periodNS(1); one < pitMinPeriodNS {
		step = uint64((pitMinPeriodNS + one - 1) / one)
	}
	p.k += step
	if c.loadTime+c.periodNS(p.k) <= now-1_000_000_000 { // far behind: skip ahead
		p.k = ticksIn(now-c.loadTime)/uint64(c.count) + 1
	}
	p.schedule(c.loadTime+c.periodNS(p.k)-now, true)
}

// ticksIn converts guest ns to PIT input clock ticks (0 for d <= 0).
func ticksIn(d int64) uint64 {
	if d <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(d), PITHz)
	t, _ := bits.Div64(hi, lo, 1_000_000_000) // hi < 1e9 for any int64 d
	return t
}

func (p *PIT) schedule(d int64, periodic bool) {
	gen := p.gen
	p.stop = p.sched.AfterFunc(d, func() { p.fire(gen, periodic) })
}

func (p *PIT) fire(gen uint64, periodic bool) {
	p.mu.Lock()
	if gen != p.gen {
		p.mu.Unlock()
		return
	}
	p.stop = nil
	if periodic {
		p.armLocked()
	} else {
		p.k = 1
	}
	p.mu.Unlock()
	if p.irq != nil {
		p.irq()
	}
}

func (p *PIT) loadCountLocked(i int, val uint32) {
	if val == 0 {
		val = 0x10000
	}
	c := &p.ch[i]
	c.count = val
	c.loadTime = p.sched.Now()
	if i == 0 {
		p.k = 0
		p.armLocked()
	}
}

func (p *PIT) latchCountLocked(c *pitChannel) {
	if c.countLatched == 0 {
		c.latchedCount = c.counterAt(p.ticksLocked(c))
		c.countLatched = c.rwMode
	}
}

func (p *PIT) setGate2Locked(gate bool) {
	c := &p.ch[2]
	if gate && !c.gate {
		switch c.mode {
		case 1, 2, 3, 5:
			c.loadTime = p.sched.Now()
		}
	}
	c.gate = gate
}

// In reads a PIT port (0x40-0x43) or port 0x61.
func (p *PIT) In(port uint16) (uint8, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case port == PortSystemCtrlB:
		c := &p.ch[2]
		v := b2u(c.gate) | b2u(p.speaker)<<1
		v |= uint8(p.sched.Now()>>14&1) << 4 // refresh toggle, as KVM's
		v |= b2u(c.mode <= 5 && c.outAt(p.ticksLocked(c))) << 5
		return v, true
	case port == PortPITControl:
		return 0xFF, true
	case port >= PortPIT && port < PortPITControl:
	default:
		return 0, false
	}
	c := &p.ch[port-PortPIT]
	if c.statusLatched {
		c.statusLatched = false
		return c.status, true
	}
	if c.countLatched != 0 {
		switch c.countLatched {
		case rwMSB:
			c.countLatched = 0
			return uint8(c.latchedCount >> 8), true
		case rwWord0:
			c.countLatched = rwMSB
			return uint8(c.latchedCount), true
		default: // rwLSB
			c.countLatched = 0
			return uint8(c.latchedCount), true
		}
	}
	n := c.counterAt(p.ticksLocked(c))
	switch c.readState {
	case rwMSB:
		return uint8(n >> 8), true
	case rwWord0:
		c.readState = rwWord1
		return uint8(n), true
	case rwWord1:
		c.readState = rwWord0
		return uint8(n >> 8), true
	default:
		return uint8(n), true
	}
}

// Out writes a PIT port (0x40-0x43) or port 0x61.
func (p *PIT) Out(port uint16, val uint8) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case port == PortSystemCtrlB:
		p.setGate2Locked(val&1 != 0)
		p.speaker = val&2 != 0
		return true
	case port == PortPITControl:
		p.controlLocked(val)
		return true
	case port >= PortPIT && port < PortPITControl:
	default:
		return false
	}
	i := int(port - PortPIT)
	c := &p.ch[i]
	switch c.writeState {
	case rwMSB:
		p.loadCountLocked(i, uint32(val)<<8)
	case rwWord0:
		c.writeLatch = val
		c.writeState = rwWord1
	case rwWord1:
		c.writeState = rwWord0
		p.loadCountLocked(i, uint32(c.writeLatch)|uint32(val)<<8)
	default:
		p.loadCountLocked(i, uint32(val))
	}
	return true
}

func (p *PIT) controlLocked(val uint8) {
	sel := val >> 6
	if sel == 3 { // read-back
		for i := range p.ch {
			if val&(2<<i) == 0 {
				continue
			}
			c := &p.ch[i]
			if val&0x20 == 0 {
				p.latchCountLocked(c)
			}
			if val&0x10 == 0 && !c.statusLatched {
				out := c.mode <= 5 && c.outAt(p.ticksLocked(c))
				c.status = b2u(out)<<7 | c.rwMode<<4 | (c.mode&7)<<1 | b2u(c.bcd)
				c.statusLatched = true
			}
		}
		return
	}
	c := &p.ch[sel]
	access := val >> 4 & 3
	if access == 0 {
		p.latchCountLocked(c)
		return
	}
	c.rwMode = access
	c.readState = access
	c.writeState = access
	c.mode = val >> 1 & 7
	if c.mode > 5 {
		c.mode -= 4 // modes 6 and 7 are 2 and 3
	}
	c.bcd = val&1 != 0
}

// Save returns the state as struct kvm_pit_state2, with count_load_time in
// guest-clock ns.
func (p *PIT) Save() hv.PITState2 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s hv.PITState2
	for i := range p.ch {
		c := &p.ch[i]
		b := s[24*i:]
		binary.LittleEndian.PutUint32(b[0:], c.count)
		binary.LittleEndian.PutUint16(b[4:], c.latchedCount)
		b[6] = c.countLatched
		b[7] = b2u(c.statusLatched)
		b[8] = c.status
		b[9] = c.readState
		b[10] = c.writeState
		b[11] = c.writeLatch
		b[12] = c.rwMode
		b[13] = c.mode
		b[14] = b2u(c.bcd)
		b[15] = b2u(c.gate)
		binary.LittleEndian.PutUint64(b[16:], uint64(c.loadTime))
	}
	flags := p.flags &^ pitFlagSpeaker
	if p.speaker {
		flags |= pitFlagSpeaker
	}
	binary.LittleEndian.PutUint32(s[72:], flags)
	return s
}

// Restore loads struct kvm_pit_state2 (count_load_time in guest-clock ns)
// and re-arms channel 0. Out-of-range fields are clamped.
func (p *PIT) Restore(s *hv.PITState2) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.ch {
		b := s[24*i:]
		c := pitChannel{
			count:         binary.LittleEndian.Uint32(b[0:]),
			latchedCount:  binary.LittleEndian.Uint16(b[4:]),
			countLatched:  b[6],
			statusLatched: b[7] != 0,
			status:        b[8],
			readState:     b[9],
			writeState:    b[10],
			writeLatch:    b[11],
			rwMode:        b[12],
			mode:          b[13],
			bcd:           b[14] != 0,
			gate:          b[15] != 0,
			loadTime:      int64(binary.LittleEndian.Uint64(b[16:])),
		}
		// a load time in the future or over 2^52 ns (52 days) in the past
		// is clamped, keeping the arithmetic below in range
		if now := p.sched.Now(); c.loadTime > now {
			c.loadTime = now
		} else if now-c.loadTime > 1<<52 || now-c.loadTime < 0 {
			c.loadTime = now - 1<<52
		}
		if c.count == 0 || c.count > 0x10000 {
			c.count = 0x10000
		}
		if c.countLatched > rwWord1 {
			c.countLatched = 0
		}
		c.readState = clampRW(c.readState)
		c.writeState = clampRW(c.writeState)
		c.rwMode = clampRW(c.rwMode)
		if c.rwMode == rwWord1 {
			c.rwMode = rwWord0
		}
		if c.mode > 5 && c.mode != pitUnprogrammed {
			if c.mode <= 7 {
				c.mode -= 4
			} else {
				c.mode = pitUnprogrammed
			}
		}
		p.ch[i] = c
	}
	flags := binary.LittleEndian.Uint32(s[72:])
	p.speaker = flags&pitFlagSpeaker != 0
	p.flags = flags &^ pitFlagSpeaker
	// re-arm channel 0: the first period not yet due on the guest clock
	c := &p.ch[0]
	p.k = 0
	now := p.sched.Now()
	switch {
	case c.mode == 2 || c.mode == 3:
		// periods already due were delivered by the source
		p.k = ticksIn(now-c.loadTime) / uint64(c.count)
		for p.k > 0 && c.loadTime+c.periodNS(p.k) > now {
			p.k--
		}
		for c.loadTime+c.periodNS(p.k+1) <= now {
			p.k++
		}
	case c.loadTime+c.periodNS(1) <= now:
		p.k = 1 // the one-shot interrupt is behind us
	}
	p.armLocked()
	return nil
}

func clampRW(v uint8) uint8 {
	if v > rwWord1 {
		return 0
	}
	return v
}
