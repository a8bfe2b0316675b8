package legacy

import (
	"fmt"
	"sync"
	"time"
)

// CMOS register indices.
const (
	rtcSeconds  = 0x00
	rtcMinutes  = 0x02
	rtcHours    = 0x04
	rtcWeekday  = 0x06
	rtcMonthDay = 0x07
	rtcMonth    = 0x08
	rtcYear     = 0x09
	rtcStatusA  = 0x0A
	rtcStatusB  = 0x0B
	rtcStatusC  = 0x0C
	rtcStatusD  = 0x0D
	cmosCentury = 0x32
	cmosSize    = 128
	cmosNMIMask = 0x80
	statusAUIP  = 0x80 // update in progress: never set, updates are instant
	statusADflt = 0x26 // 32.768 kHz time base, 1024 Hz periodic rate
	statusBDM   = 0x04 // binary (not BCD) data mode
	statusB24h  = 0x02 // 24-hour mode
	statusBDflt = statusB24h
	statusDVRT  = 0x80 // valid RAM and time
	hourPM      = 0x80 // PM flag in 12-hour mode
)

// CMOS is the MC146818-style RTC and its 128 bytes of NVRAM behind the
// index port 0x70 and the data port 0x71. The time registers show host UTC
// time plus an offset that moves when the guest sets the clock. Alarms and
// periodic/update interrupts are not emulated (status C always reads 0).
type CMOS struct {
	now func() time.Time

	// mu guards the fields below.
	mu     sync.Mutex
	index  uint8
	nmiOff bool // bit 7 of the last index write: NMI disabled
	nvram  [cmosSize]byte
	offset time.Duration // guest time minus host time
}

// NewCMOS returns the RTC/NVRAM. now supplies host time (nil: time.Now).
func NewCMOS(now func() time.Time) *CMOS {
	if now == nil {
		now = time.Now
	}
	c := &CMOS{now: now}
	c.nvram[rtcStatusA] = statusADflt
	c.nvram[rtcStatusB] = statusBDflt
	c.nvram[rtcStatusD] = statusDVRT
	return c
}

// Set stores v at NVRAM index i (for the VMM to seed, e.g., memory sizes
// that firmware reads). Clock registers are not settable this way.
func (c *CMOS) Set(i, v uint8) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < cmosSize && i > rtcStatusD {
		c.nvram[i] = v
	}
}

// NMIDisabled reports whether the guest's last index write masked NMIs.
func (c *CMOS) NMIDisabled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nmiOff
}

// ReadPort implements devices.PortIO.
func (c *CMOS) ReadPort(port uint16, data []byte) {
	fill(data, 0xFF)
	if len(data) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if port == PortCMOSData {
		data[0] = c.read(c.index)
	}
	// The index port is write-only; it reads as all-ones, as on QEMU.
}

// WritePort implements devices.PortIO.
func (c *CMOS) WritePort(port uint16, data []byte) {
	if len(data) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch port {
	case PortCMOSIndex:
		c.index = data[0] &^ cmosNMIMask
		c.nmiOff = data[0]&cmosNMIMask != 0
	case PortCMOSData:
		c.write(c.index, data[0])
	}
}

func (c *CMOS) guestTime() time.Time { return c.now().UTC().Add(c.offset) }

// read returns register i; c.mu is held.
func (c *CMOS) read(i uint8) uint8 {
	t := c.guestTime()
	switch i {
	case rtcSeconds:
		return c.encode(t.Second())
	case rtcMinutes:
		return c.encode(t.Minute())
	case rtcHours:
		return c.encodeHour(t.Hour())
	case rtcWeekday:
		return c.encode(int(t.Weekday()) + 1)
	case rtcMonthDay:
		return c.encode(t.Day())
	case rtcMonth:
		return c.encode(int(t.Month()))
	case rtcYear:
		return c.encode(t.Year() % 100)
	case cmosCentury:
		return c.encode(t.Year() / 100)
	case rtcStatusA:
		return c.nvram[rtcStatusA] &^ statusAUIP
	case rtcStatusC:
		return 0 // no interrupt flags; reading would clear them
	}
	return c.nvram[i%cmosSize]
}

// write stores v at register i; c.mu is held.
func (c *CMOS) write(i uint8, v uint8) {
	switch i {
	case rtcSeconds, rtcMinutes, rtcHours, rtcWeekday, rtcMonthDay, rtcMonth, rtcYear, cmosCentury:
		c.setField(i, v)
	case rtcStatusA:
		c.nvram[i] = v &^ statusAUIP
	case rtcStatusB:
		c.nvram[i] = v
	case rtcStatusC, rtcStatusD:
		// read-only
	default:
		c.nvram[i%cmosSize] = v
	}
}

// setField changes one field of the guest's clock by moving the offset;
// c.mu is held.
func (c *CMOS) setField(i uint8, v uint8) {
	t := c.guestTime()
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	switch i {
	case rtcSeconds:
		s = c.decode(v)
	case rtcMinutes:
		mi = c.decode(v)
	case rtcHours:
		h = c.decodeHour(v)
	case rtcWeekday:
		return // derived from the date
	case rtcMonthDay:
		d = c.decode(v)
	case rtcMonth:
		mo = time.Month(c.decode(v))
	case rtcYear:
		y = y/100*100 + c.decode(v)%100
	case cmosCentury:
		y = c.decode(v)*100 + y%100
	}
	nt := time.Date(y, mo, d, h, mi, s, t.Nanosecond(), time.UTC)
	c.offset += nt.Sub(t)
}

func (c *CMOS) binary() bool { return c.nvram[rtcStatusB]&statusBDM != 0 }

func (c *CMOS) encode(v int) uint8 {
	if c.binary() {
		return uint8(v)
	}
	return uint8(v/10%10<<4 | v%10)
}

func (c *CMOS) decode(v uint8) int {
	if c.binary() {
		return int(v)
	}
	return int(v>>4)*10 + int(v&0x0F)
}

func (c *CMOS) encodeHour(h int) uint8 {
	if c.nvram[rtcStatusB]&statusB24h != 0 {
		return c.encode(h)
	}
	pm := h >= 12
	h %= 12
	if h == 0 {
		h = 12
	}
	v := c.encode(h)
	if pm {
		v |= hourPM
	}
	return v
}

func (c *CMOS) decodeHour(v uint8) int {
	if c.nvram[rtcStatusB]&statusB24h != 0 {
		return c.decode(v)
	}
	h := c.decode(v&^hourPM) % 12
	if v&hourPM != 0 {
		h += 12
	}
	return h
}

// CMOSStateVersion is the version of CMOSState written by this package.
const CMOSStateVersion = 1

// CMOSState is the RTC's migratable state. The clock travels as an offset
// from host UTC, so source and destination hosts must agree on the time
// (NTP); the guest's own clock is kvmclock, not this.
type CMOSState struct {
	Version  uint32
	Index    uint8
	NMIOff   bool
	NVRAM    [cmosSize]byte
	OffsetNS int64
}

// Save returns the RTC's state.
func (c *CMOS) Save() CMOSState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CMOSState{Version: CMOSStateVersion, Index: c.index, NMIOff: c.nmiOff, NVRAM: c.nvram, OffsetNS: int64(c.offset)}
}

// Restore loads s.
func (c *CMOS) Restore(s CMOSState) error {
	if s.Version != CMOSStateVersion {
		return fmt.Errorf("legacy: restore CMOS: state version %d, want %d", s.Version, CMOSStateVersion)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index = s.Index % cmosSize
	c.nmiOff = s.NMIOff
	c.nvram = s.NVRAM
	c.offset = time.Duration(s.OffsetNS)
	return nil
}
