package cpu

// Platform is what the CPU consumes from the machine around it: port and
// MMIO accesses that are not RAM, interrupt acknowledgement, the MSRs the
// platform owns and the guest TSC. The backend implements it; calls come
// from the vCPU's own goroutine, inside Run or Step. While a call is in
// progress the vCPU counts as past any dirty-log boundary, so a Platform
// method may block (or even call Memory.ClearDirtyLog) without deadlock.
//
// hlt ends Run with ExitHLT (RIP after the hlt); the CPU keeps no halt
// state of its own: the backend waits for an event, and the next Run
// delivers a pending interrupt first (it asks PendingInterrupt at its
// start) and otherwise continues after the hlt.
type Platform interface {
	// In reads a port. ok=false: the VMM must answer; Run ends with ExitIO
	// (Write=false) without executing the instruction; the backend calls
	// CompleteIn and the next Run finishes the instruction with that value.
	In(port uint16, size int) (val uint32, ok bool)
	// Out writes a port; exit=true: the instruction completes, then Run
	// ends with ExitIO (Write=true, Data).
	Out(port uint16, size int, val uint32) (exit bool)
	// MMIORead reads device memory; ok=false: ExitMMIO, completed by
	// CompleteMMIORead as for In.
	MMIORead(gpa uint64, size int) (val uint64, ok bool)
	// MMIOWrite writes device memory; exit=true ends Run with ExitMMIO
	// after the instruction.
	MMIOWrite(gpa uint64, size int, val uint64) (exit bool)
	// PendingInterrupt acknowledges and returns the highest-priority
	// maskable interrupt vector, if any. It is asked at instruction
	// boundaries where RFLAGS.IF=1 and no interrupt shadow is active: at
	// the start of Run, within a few instructions of NotifyInterrupt, when
	// IF becomes 1, and every irqPollInterval instructions.
	PendingInterrupt() (vector uint8, ok bool)
	// ReadMSR and WriteMSR serve the MSRs the CPU does not own
	// (TSC, APIC_BASE, TSC_DEADLINE...); !ok raises #GP.
	ReadMSR(idx uint32) (val uint64, ok bool)
	WriteMSR(idx uint32, val uint64) bool
	// TSC returns the guest's time-stamp counter now.
	TSC() uint64
}

// NullPlatform is a Platform for tests: ports read all-ones, MMIO reads
// all-ones, writes are dropped, no interrupts, no platform MSRs, and a TSC
// that counts calls.
type NullPlatform struct{ tsc uint64 }

// In implements Platform.
func (*NullPlatform) In(port uint16, size int) (uint32, bool) { return 0xffffffff, true }

// Out implements Platform.
func (*NullPlatform) Out(port uint16, size int, val uint32) bool { return false }

// MMIORead implements Platform.
func (*NullPlatform) MMIORead(gpa uint64, size int) (uint64, bool) { return ^uint64(0), true }

// MMIOWrite implements Platform.
func (*NullPlatform) MMIOWrite(gpa uint64, size int, val uint64) bool { return false }

// PendingInterrupt implements Platform.
func (*NullPlatform) PendingInterrupt() (uint8, bool) { return 0, false }

// ReadMSR implements Platform.
func (*NullPlatform) ReadMSR(idx uint32) (uint64, bool) { return 0, false }

// WriteMSR implements Platform.
func (*NullPlatform) WriteMSR(idx uint32, val uint64) bool { return false }

// TSC implements Platform.
func (p *NullPlatform) TSC() uint64 { p.tsc += 1000; return p.tsc }
