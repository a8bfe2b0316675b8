package vm

import (
	"fmt"
	"math/bits"

	"github.com/godwit-vmm/godwit/internal/memory"
)

// Memory returns the VM's RAM.
func (v *VM) Memory() *memory.Guest { return v.mem }

// StartDirtyLog turns on the backend's dirty logging for every RAM slot.
// Until StopDirtyLog, DirtyLog reports pages written by vCPUs or by devices
// (the VMM bitmap) since they were last cleared. Right after this call every
// page counts as dirty.
func (v *VM) StartDirtyLog() error {
	for _, r := range v.mem.Regions() {
		// Drop device marks older than the log: every page is dirty now.
		r.TakeDirty(make([]uint64, (r.Pages()+63)/64))
	}
	if err := v.hvm.StartDirtyLog(); err != nil {
		v.hvm.StopDirtyLog()
		return fmt.Errorf("vm %s: start dirty logging: %w", v.cfg.Name, err)
	}
	return nil
}

// StopDirtyLog turns dirty logging off again.
func (v *VM) StopDirtyLog() error {
	if err := v.hvm.StopDirtyLog(); err != nil {
		return fmt.Errorf("vm %s: stop dirty logging: %w", v.cfg.Name, err)
	}
	return nil
}

// DirtyLog ORs into bitmaps[i] (one bit per page of region i) the pages
// written since they were last cleared: KVM's log for vCPU writes, the VMM
// bitmap for device writes. KVM's bits stay set (and the pages writable)
// until ClearDirtyLog; the VMM bits are taken here. The caller must call
// ClearDirtyLog for a range before it reads the pages of that range.
func (v *VM) DirtyLog(bitmaps [][]uint64) (pages int, err error) {
	for i, r := range v.mem.Regions() {
		kvmBits := make([]uint64, len(bitmaps[i]))
		if err := v.hvm.GetDirtyLog(r.Slot, kvmBits); err != nil {
			return 0, fmt.Errorf("vm %s: %w", v.cfg.Name, err)
		}
		for j, w := range kvmBits {
			bitmaps[i][j] |= w
		}
		r.TakeDirty(bitmaps[i])
		for _, w := range bitmaps[i] {
			pages += bits.OnesCount64(w)
		}
	}
	return pages, nil
}

// ClearDirtyLog write-protects again, in KVM, the pages of region i whose
// bits are set in mask; mask covers 64*len(bits) pages from firstPage, which
// must be a multiple of 64.
func (v *VM) ClearDirtyLog(region int, firstPage uint64, mask []uint64) error {
	r := v.mem.Regions()[region]
	n := uint64(len(mask)) * 64
	if firstPage+n > r.Pages() {
		n = r.Pages() - firstPage
	}
	if n == 0 {
		return nil
	}
	return v.hvm.ClearDirtyLog(r.Slot, firstPage, uint32(n), mask)
}
