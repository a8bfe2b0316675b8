package cpu

import (
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const pageSize = 4096

// Memory is the guest-physical address space shared by the vCPUs of one VM:
// RAM slots backed by host memory outside the Go heap, everything else MMIO.
//
// Dirty log: while logging, every store by a vCPU, every A/D update by a
// page walk and every MarkDirty sets the page's bit. A vCPU's TLB caches
// "this page is already dirty" so later stores skip the bitmap; ClearDirtyLog
// bumps gen and waits until every vCPU inside Run has seen the new gen at an
// instruction boundary (where it drops those cached flags), so any store that
// becomes visible after ClearDirtyLog returns marks its page again.
type Memory struct {
	slots atomic.Pointer[[]*slot]

	logging atomic.Bool
	// gen is bumped whenever vCPUs must drop their cached fast-store
	// permissions (dirty bits cleared, code decoded on a new page).
	gen atomic.Uint64
	// codeEpoch is bumped when decoded code is invalidated; vCPUs flush
	// their decode caches when they see it change.
	codeEpoch atomic.Uint64

	// mu guards cpus and serialises AddRAM.
	mu   sync.Mutex
	cpus []*CPU

	// splitMu serialises locked accesses that cross an 8-byte boundary.
	splitMu sync.Mutex
}

type slot struct {
	gpa, size uint64
	host      hostPtr  // first byte of the slot's host memory
	hostMem   []byte   // keeps the slice header alive
	dirty     []uint64 // one bit per page, atomically updated
	code      []uint64 // one bit per page: decoded code may exist
}

// NewMemory returns an empty guest-physical address space.
func NewMemory() *Memory {
	m := &Memory{}
	s := []*slot{}
	m.slots.Store(&s)
	return m
}

// AddRAM maps host (page-aligned, outside the Go heap, a multiple of 4096
// bytes long) at guest-physical gpa and returns the slot index.
func (m *Memory) AddRAM(gpa uint64, host []byte) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(host) == 0 || len(host)%pageSize != 0 || gpa%pageSize != 0 {
		panic("cpu: AddRAM: gpa and length must be page multiples")
	}
	s := newSlot(gpa, host)
	if m.logging.Load() {
		setAllBits(s.dirty, s.size/pageSize)
	}
	old := *m.slots.Load()
	n := make([]*slot, len(old), len(old)+1)
	copy(n, old)
	n = append(n, s)
	m.slots.Store(&n)
	return len(n) - 1
}

func setAllBits(b []uint64, n uint64) {
	for i := range b {
		v := ^uint64(0)
		if uint64(i+1)*64 > n {
			v = (1 << (n % 64)) - 1
		}
		atomic.StoreUint64(&b[i], v)
	}
}

// find returns the slot containing gpa, or nil for MMIO.
func (m *Memory) find(gpa uint64) *slot {
	for _, s := range *m.slots.Load() {
		if gpa-s.gpa < s.size {
			return s
		}
	}
	return nil
}

// StartDirtyLog starts logging; every page of every slot counts as dirty.
func (m *Memory) StartDirtyLog() {
	for _, s := range *m.slots.Load() {
		setAllBits(s.dirty, s.size/pageSize)
	}
	m.logging.Store(true)
	m.gen.Add(1)
}

// StopDirtyLog stops logging.
func (m *Memory) StopDirtyLog() { m.logging.Store(false) }

// DirtyLog copies the dirty bits of slot into dst (one bit per 4 KiB page).
// Reading does not clear.
func (m *Memory) DirtyLog(slotIdx int, dst []uint64) {
	s := (*m.slots.Load())[slotIdx]
	for i := range dst {
		if i < len(s.dirty) {
			dst[i] = atomic.LoadUint64(&s.dirty[i])
		} else {
			dst[i] = 0
		}
	}
}

// ClearDirtyLog clears the bits set in mask (bit i = page firstPage+i) of
// slot. When it returns, every vCPU will mark a cleared page again on its
// next store to it.
func (m *Memory) ClearDirtyLog(slotIdx int, firstPage uint64, mask []uint64) {
	s := (*m.slots.Load())[slotIdx]
	pages := s.size / pageSize
	for i, w := range mask {
		for w != 0 {
			b := uint64(bits.TrailingZeros64(w))
			w &= w - 1
			p := firstPage + uint64(i)*64 + b
			if p < pages {
				atomic.AndUint64(&s.dirty[p/64], ^(1 << (p % 64)))
			}
		}
	}
	m.syncCPUs(nil)
}

// syncCPUs bumps gen and waits until every vCPU inside Run has passed an
// instruction boundary (or is in a Platform call) after seeing it. A vCPU
// calling it (self, else nil) acknowledges the new generation itself and
// keeps acknowledging later ones while it waits, so that two vCPUs waiting
// on each other both go on.
func (m *Memory) syncCPUs(self *CPU) {
	g := m.gen.Add(1)
	m.mu.Lock()
	cpus := append([]*CPU(nil), m.cpus...)
	m.mu.Unlock()
	for _, c := range cpus {
		if c == self {
			continue
		}
		for spins := 0; ; spins++ {
			if self != nil {
				self.syncGen()
			}
			if c.inRun.Load() != 1 || c.ackGen.Load() >= g {
				break
			}
			if spins < 100 {
				runtime.Gosched()
			} else {
				time.Sleep(10 * time.Microsecond)
			}
		}
	}
	if self != nil {
		self.syncGen()
	}
}

// MarkDirty marks guest-physical pages written by someone other than a vCPU
// (device DMA) and invalidates decoded code on them.
func (m *Memory) MarkDirty(gpa, length uint64) {
	if length == 0 {
		return
	}
	for p := gpa &^ (pageSize - 1); p < gpa+length; p += pageSize {
		s := m.find(p)
		if s == nil {
			continue
		}
		m.noteWrite(s, (p-s.gpa)/pageSize)
	}
}

// noteWrite marks page pg of s dirty (when logging) and invalidates code
// decoded from it. It reports whether later stores may skip this path.
func (m *Memory) noteWrite(s *slot, pg uint64) bool {
	w, bit := pg/64, uint64(1)<<(pg%64)
	if atomic.LoadUint64(&s.code[w])&bit != 0 {
		atomic.AndUint64(&s.code[w], ^bit)
		m.codeEpoch.Add(1)
	}
	if m.logging.Load() && atomic.LoadUint64(&s.dirty[w])&bit == 0 {
		atomic.OrUint64(&s.dirty[w], bit)
	}
	return true
}

// noteCode records that vCPU c decodes code from page pg of s. When the
// page is newly marked it waits, as ClearDirtyLog does, until every vCPU
// in Run (c included) has dropped its fast-store flags: from then on any
// store to the page, from any vCPU, takes the slow path and invalidates the
// decoded code. Without the wait another vCPU could patch the page through
// a flag it had not dropped yet, and c would run the old instruction after
// the patch (cross-modifying code with a serializing handshake, SDM 8.1.3).
func (m *Memory) noteCode(c *CPU, s *slot, pg uint64) {
	w, bit := pg/64, uint64(1)<<(pg%64)
	if atomic.LoadUint64(&s.code[w])&bit == 0 {
		atomic.OrUint64(&s.code[w], bit)
		m.syncCPUs(c)
	}
}

func (m *Memory) isCode(s *slot, pg uint64) bool {
	return atomic.LoadUint64(&s.code[pg/64])&(1<<(pg%64)) != 0
}

func (m *Memory) register(c *CPU) {
	m.mu.Lock()
	m.cpus = append(m.cpus, c)
	m.mu.Unlock()
}
