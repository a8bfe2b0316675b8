package irqchip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// LAPIC register offsets in the xAPIC page.
const (
	regID       = 0x020
	regVersion  = 0x030
	regTPR      = 0x080
	regAPR      = 0x090
	regPPR      = 0x0A0
	regEOI      = 0x0B0
	regRRD      = 0x0C0
	regLDR      = 0x0D0
	regDFR      = 0x0E0
	regSVR      = 0x0F0
	regISR      = 0x100
	regTMR      = 0x180
	regIRR      = 0x200
	regESR      = 0x280
	regICRLow   = 0x300
	regICRHigh  = 0x310
	regLVTTimer = 0x320
	regLVTTherm = 0x330
	regLVTPerf  = 0x340
	regLVTLINT0 = 0x350
	regLVTLINT1 = 0x360
	regLVTError = 0x370
	regTMICT    = 0x380
	regTMCCT    = 0x390
	regTDCR     = 0x3E0
)

// Architectural constants.
const (
	// LAPICBase is the default guest-physical address of the xAPIC page.
	LAPICBase = 0xFEE00000
	// IOAPICBase is the guest-physical address of the IOAPIC.
	IOAPICBase = 0xFEC00000

	// MSRAPICBase is IA32_APIC_BASE.
	MSRAPICBase = 0x1B
	// MSRTSCDeadline is IA32_TSC_DEADLINE.
	MSRTSCDeadline = 0x6E0

	// APIC base MSR bits.
	APICBaseBSP    = 1 << 8
	APICBaseEXTD   = 1 << 10
	APICBaseEnable = 1 << 11

	// lapicVersion is KVM's: version 0x14, max LVT entry 5 (six LVTs).
	lapicVersion = 0x14 | 5<<16

	lvtMasked       = 1 << 16
	lvtTimerPeriod  = 1 << 17
	lvtTimerTSC     = 2 << 17
	lvtTimerModeMsk = 3 << 17
	svrEnable       = 1 << 8

	icrBusy = 1 << 12

	// ESR bits.
	esrSendIllegalVector = 1 << 5
	esrRecvIllegalVector = 1 << 6

	// minPeriodNS is the shortest periodic LAPIC timer period, as KVM's
	// min_timer_period_us (200 us): shorter periods would storm the host.
	minPeriodNS = 200_000
)

// ErrX2APIC is returned for an APIC base MSR write that enables x2APIC mode.
var ErrX2APIC = errors.New("irqchip: x2APIC mode is not supported")

// ExtINTSource is the 8259 pair as seen by a LAPIC's LINT0 in ExtINT mode.
type ExtINTSource interface {
	INTR() bool
	PendingVector() (uint8, bool)
	Ack() uint8
}

// LAPICConfig configures one vCPU's local APIC.
type LAPICConfig struct {
	ID    int       // vCPU index = xAPIC ID; 0 is the BSP
	Sched Scheduler // guest clock for the timer
	// TSC returns the vCPU's TSC; TSCHz is its frequency. Both are needed
	// for the TSC-deadline timer mode only.
	TSC   func() uint64
	TSCHz uint64
	Wake  func()        // called when something becomes deliverable
	Bus   *APICBus      // IPIs; the LAPIC attaches itself. May be nil.
	PIC   ExtINTSource  // ExtINT through LINT0. May be nil.
	EOI   func(v uint8) // EOI broadcast of level-triggered vectors. May be nil.
}

// LAPIC is one vCPU's local APIC in xAPIC mode.
type LAPIC struct {
	id    int
	sched Scheduler
	tsc   func() uint64
	tscHz uint64
	wake  func()
	bus   *APICBus
	pic   ExtINTSource
	eoi   func(uint8)

	// mu guards every field below.
	mu         sync.Mutex
	regs       [1024]byte // the register page in KVM's layout
	base       uint64     // IA32_APIC_BASE
	esrPending uint32     // errors since the last ESR write
	nmi        bool
	init       bool
	sipi       bool
	sipiVector uint8
	signalled  bool // PendingVector reported a LAPIC vector not yet acked

	// The timer (one-shot and periodic): next expiry and the period (the
	// full count in ns). timerArmed is false when stopped or expired.
	timerArmed    bool
	timerDeadline int64
	timerPeriod   int64
	timerStop     func() bool
	timerGen      uint64
	tscDeadline   uint64
}

// NewLAPIC returns a LAPIC in its power-on state: enabled in IA32_APIC_BASE,
// software-disabled in SVR, LVTs masked except LINT0 on the BSP, which is
// ExtINT as KVM sets it (virtual-wire mode).
func NewLAPIC(cfg LAPICConfig) *LAPIC {
	a := &LAPIC{
		id: cfg.ID, sched: cfg.Sched, tsc: cfg.TSC, tscHz: cfg.TSCHz,
		wake: cfg.Wake, bus: cfg.Bus, pic: cfg.PIC, eoi: cfg.EOI,
	}
	if a.wake == nil {
		a.wake = func() {}
	}
	a.base = LAPICBase | APICBaseEnable
	if cfg.ID == 0 {
		a.base |= APICBaseBSP
	}
	a.resetLocked()
	if cfg.Bus != nil {
		cfg.Bus.Attach(a)
	}
	return a
}

func (a *LAPIC) reg(off uint32) uint32 { return binary.LittleEndian.Uint32(a.regs[off:]) }
func (a *LAPIC) setReg(off, v uint32)  { binary.LittleEndian.PutUint32(a.regs[off:], v) }

func (a *LAPIC) bit(base uint32, v uint8) bool {
	return a.reg(base+uint32(v>>5)*0x10)&(1<<(v&31)) != 0
}

func (a *LAPIC) setBit(base uint32, v uint8, on bool) {
	off := base + uint32(v>>5)*0x10
	if on {
		a.setReg(off, a.reg(off)|1<<(v&31))
	} else {
		a.setReg(off, a.reg(off)&^(1<<(v&31)))
	}
}

// highest returns the highest vector set in the 256-bit register at base.
func (a *LAPIC) highest(base uint32) (uint8, bool) {
	for i := 7; i >= 0; i-- {
		if r := a.reg(base + uint32(i)*0x10); r != 0 {
			return uint8(i*32 + 31 - bits.LeadingZeros32(r)), true
		}
	}
	return 0, false
}

func (a *LAPIC) resetLocked() {
	a.stopTimerLocked()
	a.regs = [1024]byte{}
	a.setReg(regID, uint32(a.id)<<24)
	a.setReg(regVersion, lapicVersion)
	a.setReg(regDFR, 0xFFFFFFFF)
	a.setReg(regSVR, 0xFF)
	for off := uint32(regLVTTimer); off <= regLVTError; off += 0x10 {
		a.setReg(off, lvtMasked)
	}
	if a.id == 0 {
		a.setReg(regLVTLINT0, uint32(ModeExtINT)<<8)
	}
	a.esrPending = 0
	a.signalled = false
	a.tscDeadline = 0
}

// Reset puts the registers in their INIT state, as KVM's kvm_lapic_reset:
// the ID back to the vCPU index, LVTs masked (LINT0 ExtINT on the BSP),
// timer stopped. The APIC base MSR and the latched events are kept; the
// backend calls it when the vCPU takes INIT.
func (a *LAPIC) Reset() {
	a.mu.Lock()
	a.resetLocked()
	a.mu.Unlock()
}

func (a *LAPIC) hwEnabled() bool { return a.base&APICBaseEnable != 0 }
func (a *LAPIC) swEnabled() bool { return a.reg(regSVR)&svrEnable != 0 }

// Enabled reports whether the APIC is enabled in IA32_APIC_BASE; a disabled
// APIC's page is not decoded.
func (a *LAPIC) Enabled() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hwEnabled()
}

// Base returns the guest-physical address of the APIC page.
func (a *LAPIC) Base() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.base &^ 0xFFF
}

func (a *LAPIC) pprLocked() uint32 {
	tpr := a.reg(regTPR) & 0xFF
	isrv, _ := a.highest(regISR)
	if tpr&0xF0 >= uint32(isrv)&0xF0 {
		return tpr
	}
	return uint32(isrv) & 0xF0
}

func (a *LAPIC) aprLocked() uint32 {
	tpr := a.reg(regTPR) & 0xFF
	isrv, _ := a.highest(regISR)
	irrv, _ := a.highest(regIRR)
	if tpr&0xF0 >= uint32(isrv)&0xF0 && tpr&0xF0 >= uint32(irrv)&0xF0 {
		return tpr
	}
	return max(tpr&0xF0, uint32(isrv)&0xF0, uint32(irrv)&0xF0)
}

// pendingLocked returns the highest IRR vector whose priority class is
// above the PPR's, when the APIC is enabled.
func (a *LAPIC) pendingLocked() (uint8, bool) {
	if !a.hwEnabled() || !a.swEnabled() {
		return 0, false
	}
	v, ok := a.highest(regIRR)
	if !ok || uint32(v)&0xF0 <= a.pprLocked()&0xF0 {
		return 0, false
	}
	return v, true
}

// acceptsPICLocked: the PIC's INTR reaches this CPU when the APIC is
// globally disabled or LINT0 is unmasked in ExtINT mode (KVM's rule).
func (a *LAPIC) acceptsPICLocked() bool {
	if !a.hwEnabled() {
		return true
	}
	lvt := a.reg(regLVTLINT0)
	return lvt&lvtMasked == 0 && DeliveryMode(lvt>>8&7) == ModeExtINT
}

// AcceptsPIC reports whether the PIC's INTR output reaches this vCPU.
func (a *LAPIC) AcceptsPIC() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acceptsPICLocked()
}

// Deliverable reports whether an interrupt (ExtINT from the PIC or an IRR
// vector above the PPR) is waiting for this vCPU. It has no side effect:
// use it to decide whether a halted vCPU wakes.
func (a *LAPIC) Deliverable() bool {
	a.mu.Lock()
	ext := a.pic != nil && a.acceptsPICLocked()
	_, ok := a.pendingLocked()
	a.mu.Unlock()
	return ok || ext && a.pic.INTR()
}

// PendingVector returns the interrupt this vCPU would take at the next
// instruction boundary with IF=1, without acknowledging it: ExtINT from the
// PIC first (as KVM), then the highest IRR vector above the PPR. It models
// the APIC raising INTR: if the interrupt is masked (TPR raised, APIC
// disabled) before the following Ack, that Ack returns the spurious vector.
// Call it only where the CPU is about to take the interrupt; use
// Deliverable for other checks.
func (a *LAPIC) PendingVector() (uint8, bool) {
	a.mu.Lock()
	ext := a.pic != nil && a.acceptsPICLocked()
	a.mu.Unlock()
	if ext {
		if v, ok := a.pic.PendingVector(); ok {
			return v, true
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.pendingLocked()
	a.signalled = ok
	return v, ok
}

// Ack is the CPU's interrupt acknowledge: ExtINT from the PIC first, else
// the highest deliverable IRR vector moves to the ISR. If PendingVector
// reported a LAPIC interrupt that has since been masked (TPR raised, APIC
// disabled), Ack returns the spurious vector, as the hardware does; the
// spurious vector sets no ISR bit and needs no EOI.
func (a *LAPIC) Ack() (uint8, bool) {
	a.mu.Lock()
	ext := a.pic != nil && a.acceptsPICLocked()
	a.mu.Unlock()
	if ext && a.pic.INTR() {
		return a.pic.Ack(), true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	signalled := a.signalled
	a.signalled = false
	if v, ok := a.pendingLocked(); ok {
		a.setBit(regIRR, v, false)
		a.setBit(regISR, v, true)
		return v, true
	}
	if signalled {
		return uint8(a.reg(regSVR)), true
	}
	return 0, false
}

// TakeNMI returns and clears the latched NMI.
func (a *LAPIC) TakeNMI() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.nmi
	a.nmi = false
	return n
}

// TakeINIT returns and clears the latched INIT.
func (a *LAPIC) TakeINIT() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.init
	a.init = false
	return n
}

// TakeSIPI returns and clears the latched start-up IPI and its vector.
func (a *LAPIC) TakeSIPI() (vector uint8, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ok, vector = a.sipi, a.sipiVector
	a.sipi = false
	return vector, ok
}

// HasEvents reports whether an NMI, INIT or SIPI is latched.
func (a *LAPIC) HasEvents() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nmi || a.init || a.sipi
}

// LocalNMI asserts LINT1 (the NMI pin): an NMI when LVT LINT1 is unmasked
// in NMI mode, a fixed interrupt in fixed mode.
func (a *LAPIC) LocalNMI() {
	a.mu.Lock()
	w := a.localLocked(regLVTLINT1)
	a.mu.Unlock()
	if w {
		a.wake()
	}
}

// localLocked delivers a local interrupt through the LVT at off and
// reports whether the vCPU needs a wake-up.
func (a *LAPIC) localLocked(off uint32) bool {
	lvt := a.reg(off)
	if lvt&lvtMasked != 0 || !a.hwEnabled() {
		return false
	}
	mode := DeliveryMode(lvt >> 8 & 7)
	if off == regLVTTimer || off == regLVTError {
		mode = ModeFixed
	}
	switch mode {
	case ModeFixed:
		return a.setIRRLocked(uint8(lvt), false)
	case ModeNMI:
		a.nmi = true
		return true
	case ModeExtINT:
		return true // the PIC path; wake so the vCPU looks
	}
	return false
}

// setIRRLocked accepts a fixed interrupt.
func (a *LAPIC) setIRRLocked(v uint8, level bool) bool {
	if v < 16 {
		return a.errorLocked(esrRecvIllegalVector)
	}
	a.setBit(regIRR, v, true)
	a.setBit(regTMR, v, level)
	return true
}

// errorLocked records an APIC error for the next ESR write and raises the
// error LVT's interrupt; it reports whether the vCPU needs a wake-up.
func (a *LAPIC) errorLocked(bits uint32) bool {
	a.esrPending |= bits
	lvt := a.reg(regLVTError)
	if lvt&lvtMasked == 0 && uint8(lvt) >= 16 {
		a.setBit(regIRR, uint8(lvt), true)
		a.setBit(regTMR, uint8(lvt), false)
		return true
	}
	return false
}

// matchDest reports whether this APIC is addressed by an xAPIC destination.
func (a *LAPIC) matchDest(dest uint8, logical bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.hwEnabled() {
		return false
	}
	if !logical {
		return dest == 0xFF || uint8(a.reg(regID)>>24) == dest
	}
	if dest == 0xFF {
		return true
	}
	ldr := uint8(a.reg(regLDR) >> 24)
	if a.reg(regDFR)>>28 == 0xF { // flat
		return ldr&dest != 0
	}
	// cluster: high nibble is the cluster, low nibble a bitmap within it
	return ldr>>4 == dest>>4 && ldr&dest&0xF != 0
}

// accept takes a message from the APIC bus.
func (a *LAPIC) accept(m Message) bool {
	a.mu.Lock()
	if !a.hwEnabled() {
		a.mu.Unlock()
		return false
	}
	w := false
	switch m.Mode {
	case ModeFixed, ModeLowestPriority:
		if a.swEnabled() {
			w = a.setIRRLocked(m.Vector, m.Level)
		}
	case ModeNMI:
		a.nmi, w = true, true
	case ModeINIT:
		if m.Level && !m.Assert {
			break // INIT level de-assert: ignored, as on every APIC since the P4
		}
		a.init, w = true, true
	case ModeStartup:
		a.sipi, a.sipiVector, w = true, m.Vector, true
	case ModeExtINT:
		w = true // the vCPU pulls the vector from the PIC
	}
	a.mu.Unlock()
	if w {
		a.wake()
	}
	return w
}

// Inject sets a fixed vector in the IRR as if a message had been
// received (edge-triggered unless level).
func (a *LAPIC) Inject(vector uint8, level bool) bool {
	return a.accept(Message{Vector: vector, Mode: ModeFixed, Level: level})
}

// ---- timer ----------------------------------------------------------------

func (a *LAPIC) divideLocked() int64 {
	d := a.reg(regTDCR)
	v := d&3 | (d&8)>>1
	return 1 << ((v + 1) & 7)
}

func (a *LAPIC) timerModeLocked() uint32 { return a.reg(regLVTTimer) & lvtTimerModeMsk }

func (a *LAPIC) stopTimerLocked() {
	a.timerGen++
	if a.timerStop != nil {
		a.timerStop()
		a.timerStop = nil
	}
	a.timerArmed = false
}

// armLocked schedules the timer's next expiry at the guest time deadline.
func (a *LAPIC) armLocked(deadline, now int64) {
	a.stopTimerLocked()
	a.timerArmed = true
	a.timerDeadline = deadline
	gen := a.timerGen
	if a.sched != nil {
		a.timerStop = a.sched.AfterFunc(deadline-now, func() { a.timerFired(gen) })
	}
}

// startTimerLocked starts one-shot or periodic counting with count ticks
// to the first expiry.
func (a *LAPIC) startTimerLocked(count uint32) {
	a.stopTimerLocked()
	icr := a.reg(regTMICT)
	if count == 0 || icr == 0 || a.sched == nil {
		return
	}
	div := a.divideLocked()
	a.timerPeriod = int64(icr) * div
	if a.timerModeLocked() == lvtTimerPeriod {
		a.timerPeriod = max(a.timerPeriod, minPeriodNS)
	}
	now := a.sched.Now()
	a.armLocked(now+int64(count)*div, now)
}

func (a *LAPIC) timerFired(gen uint64) {
	a.mu.Lock()
	if gen != a.timerGen || !a.timerArmed {
		a.mu.Unlock()
		return
	}
	a.timerStop = nil
	switch a.timerModeLocked() {
	case lvtTimerPeriod:
		now := a.sched.Now()
		a.timerPeriod = max(a.timerPeriod, minPeriodNS)
		next := a.timerDeadline + a.timerPeriod
		if now-next > 1000*a.timerPeriod { // far behind: skip ahead
			next = now + a.timerPeriod
		}
		a.armLocked(next, now)
	case lvtTimerTSC:
		a.timerArmed = false
		a.tscDeadline = 0
	default:
		a.timerArmed = false
	}
	w := a.localLocked(regLVTTimer)
	a.mu.Unlock()
	if w {
		a.wake()
	}
}

// currentCountLocked computes TMCCT from the guest clock.
func (a *LAPIC) currentCountLocked() uint32 {
	if !a.timerArmed || a.timerModeLocked() == lvtTimerTSC || a.sched == nil {
		return 0
	}
	rem := a.timerDeadline - a.sched.Now()
	if rem <= 0 {
		if a.timerModeLocked() != lvtTimerPeriod || a.timerPeriod <= 0 {
			return 0
		}
		rem = a.timerPeriod - (-rem)%a.timerPeriod
	}
	div := a.divideLocked()
	c := (rem + div - 1) / div // ticks not yet counted
	return uint32(min(c, int64(a.reg(regTMICT))))
}

func (a *LAPIC) tscDeadlineLocked(v uint64) bool {
	a.stopTimerLocked()
	a.tscDeadline = v
	if v == 0 || a.sched == nil {
		return false
	}
	var now uint64
	if a.tsc != nil {
		now = a.tsc()
	}
	if v <= now || a.tscHz == 0 {
		a.tscDeadline = 0
		return a.localLocked(regLVTTimer)
	}
	hi, lo := bits.Mul64(v-now, 1_000_000_000)
	var ns uint64
	if hi >= a.tscHz {
		ns = 1 << 62
	} else {
		ns, _ = bits.Div64(hi, lo, a.tscHz)
		ns = min(ns, 1<<62)
	}
	t := a.sched.Now()
	a.armLocked(t+int64(ns), t)
	return false
}

// ---- MSRs -------------------------------------------------------------------

// ReadMSR returns IA32_APIC_BASE or IA32_TSC_DEADLINE; ok is false for
// other MSRs.
func (a *LAPIC) ReadMSR(index uint32) (val uint64, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch index {
	case MSRAPICBase:
		return a.base, true
	case MSRTSCDeadline:
		if !a.hwEnabled() || a.timerModeLocked() != lvtTimerTSC {
			return 0, true
		}
		return a.tscDeadline, true
	}
	return 0, false
}

// WriteMSR writes IA32_APIC_BASE or IA32_TSC_DEADLINE. It returns
// ErrX2APIC for the EXTD bit and an error for reserved bits (the backend
// injects #GP) or an unknown MSR.
func (a *LAPIC) WriteMSR(index uint32, val uint64) error {
	a.mu.Lock()
	w := false
	var err error
	switch index {
	case MSRAPICBase:
		switch {
		case val&APICBaseEXTD != 0:
			err = ErrX2APIC
		case val&^(0xFFFFFF_FFFFF000|APICBaseBSP|APICBaseEnable) != 0:
			err = fmt.Errorf("irqchip: APIC base %#x sets reserved bits", val)
		default:
			was := a.hwEnabled()
			a.base = val
			if was && !a.hwEnabled() {
				id := a.reg(regID)
				a.resetLocked() // global disable loses the APIC's state
				a.setReg(regID, id)
			}
			w = !was && a.hwEnabled() && a.nmi
		}
	case MSRTSCDeadline:
		if a.hwEnabled() && a.timerModeLocked() == lvtTimerTSC {
			w = a.tscDeadlineLocked(val)
		}
	default:
		err = fmt.Errorf("irqchip: LAPIC has no MSR %#x", index)
	}
	a.mu.Unlock()
	if w {
		a.wake()
	}
	return err
}

// ---- MMIO -------------------------------------------------------------------

// Read returns the 32-bit register at offset (a 16-byte-aligned register
// offset in the APIC page; other offsets read 0).
func (a *LAPIC) Read(offset uint32) uint32 {
	if offset >= 0x400 || offset&0xF != 0 {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch offset {
	case regAPR:
		return a.aprLocked()
	case regPPR:
		return a.pprLocked()
	case regEOI, regRRD:
		return 0
	case regTMCCT:
		return a.currentCountLocked()
	case regICRLow:
		return a.reg(regICRLow) &^ icrBusy // delivery is synchronous: always idle
	}
	return a.reg(offset)
}

// Write writes the 32-bit register at offset.
func (a *LAPIC) Write(offset uint32, val uint32) {
	if offset >= 0x400 || offset&0xF != 0 {
		return
	}
	a.mu.Lock()
	var (
		w      bool
		ipi    *Message
		eoiVec = -1
	)
	switch offset {
	case regID:
		a.setReg(regID, val&0xFF000000)
	case regTPR:
		a.setReg(regTPR, val&0xFF)
		_, w = a.pendingLocked()
	case regEOI:
		if v, ok := a.highest(regISR); ok {
			a.setBit(regISR, v, false)
			if a.bit(regTMR, v) {
				eoiVec = int(v)
			}
			_, w = a.pendingLocked()
		}
	case regLDR:
		a.setReg(regLDR, val&0xFF000000)
	case regDFR:
		a.setReg(regDFR, val|0x0FFFFFFF)
	case regSVR:
		a.setReg(regSVR, val&0x3FF)
		if val&svrEnable == 0 {
			for off := uint32(regLVTTimer); off <= regLVTError; off += 0x10 {
				a.setReg(off, a.reg(off)|lvtMasked)
			}
		}
		_, w = a.pendingLocked()
	case regESR:
		a.setReg(regESR, a.esrPending)
		a.esrPending = 0
	case regICRLow:
		a.setReg(regICRLow, val&^icrBusy)
		m := Message{
			Vector:    uint8(val),
			Mode:      DeliveryMode(val >> 8 & 7),
			Logical:   val&(1<<11) != 0,
			Assert:    val&(1<<14) != 0,
			Level:     val&(1<<15) != 0,
			Shorthand: uint8(val >> 18 & 3),
			Dest:      uint8(a.reg(regICRHigh) >> 24),
		}
		switch {
		case m.Mode == ModeSMI, m.Mode == 3, m.Mode == ModeExtINT:
			// SMI ignored; reserved and ExtINT IPIs are not sent
		case m.Mode == ModeFixed || m.Mode == ModeLowestPriority:
			if m.Vector < 16 {
				w = a.errorLocked(esrSendIllegalVector)
				break
			}
			m.Level = false // the IPI is edge: TMR stays clear
			ipi = &m
		default:
			ipi = &m
		}
	case regICRHigh:
		a.setReg(regICRHigh, val&0xFF000000)
	case regLVTTimer:
		old := a.timerModeLocked()
		v := val & (0xFF | lvtMasked | lvtTimerModeMsk)
		if !a.swEnabled() {
			v |= lvtMasked
		}
		a.setReg(regLVTTimer, v)
		// as KVM: entering or leaving TSC-deadline mode stops the timer;
		// one-shot <-> periodic takes effect at the next expiry
		if (a.timerModeLocked() == lvtTimerTSC) != (old == lvtTimerTSC) {
			a.stopTimerLocked()
			a.setReg(regTMICT, 0)
			a.tscDeadline = 0
		}
	case regLVTTherm, regLVTPerf:
		a.setLVTLocked(offset, val, 0x107FF)
	case regLVTLINT0, regLVTLINT1:
		a.setLVTLocked(offset, val, 0x1A7FF|1<<14)
	case regLVTError:
		a.setLVTLocked(offset, val, 0x100FF)
	case regTMICT:
		if a.timerModeLocked() != lvtTimerTSC {
			a.setReg(regTMICT, val)
			a.startTimerLocked(val)
		}
	case regTDCR:
		count := a.currentCountLocked()
		armed := a.timerArmed && a.timerModeLocked() != lvtTimerTSC
		a.setReg(regTDCR, val&0xB)
		if armed {
			a.startTimerLocked(count)
		}
	}
	a.mu.Unlock()
	if ipi != nil && a.bus != nil {
		a.bus.Deliver(a, *ipi)
	}
	if eoiVec >= 0 && a.eoi != nil {
		a.eoi(uint8(eoiVec))
	}
	if w {
		a.wake()
	}
}

func (a *LAPIC) setLVTLocked(off, val, mask uint32) {
	ro := a.reg(off) & (1 << 14) // remote IRR of LINT0/1 is read-only
	v := val&mask&^(1<<14) | ro&mask
	if !a.swEnabled() {
		v |= lvtMasked
	}
	a.setReg(off, v)
}

// ---- state --------------------------------------------------------------------

// Save returns the register page in KVM's kvm_lapic_state layout, with
// TMCCT, PPR and APR holding their current values.
func (a *LAPIC) Save() hv.LAPICState {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s hv.LAPICState
	a.setReg(regTMCCT, a.currentCountLocked())
	a.setReg(regPPR, a.pprLocked())
	a.setReg(regAPR, a.aprLocked())
	s = a.regs
	return s
}

// Restore loads a register page saved by Save or by KVM_GET_LAPIC. The
// one-shot or periodic timer restarts from the saved TMCCT; a TSC-deadline
// timer restarts when the backend restores IA32_TSC_DEADLINE. The APIC base
// MSR is not part of the page (restore it with WriteMSR).
func (a *LAPIC) Restore(s *hv.LAPICState) error {
	a.mu.Lock()
	a.stopTimerLocked()
	a.regs = *s
	a.setReg(regVersion, lapicVersion)
	a.setReg(regICRLow, a.reg(regICRLow)&^icrBusy)
	a.setReg(regTDCR, a.reg(regTDCR)&0xB)
	a.signalled = false
	a.tscDeadline = 0
	mode := a.timerModeLocked()
	if mode == lvtTimerPeriod || mode == 0 {
		count := a.reg(regTMCCT)
		icr := a.reg(regTMICT)
		if count > icr {
			count = icr
		}
		if count == 0 && mode == lvtTimerPeriod {
			count = icr
		}
		a.startTimerLocked(count)
	}
	_, w := a.pendingLocked()
	w = w || a.acceptsPICLocked()
	a.mu.Unlock()
	if w {
		a.wake()
	}
	return nil
}
