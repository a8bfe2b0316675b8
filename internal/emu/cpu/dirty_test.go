package cpu

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestDirtyLogBasics(t *testing.T) {
	mem := NewMemory()
	slot := mem.AddRAM(0, newRAM(t, 1<<20))
	dst := make([]uint64, 4)
	mem.DirtyLog(slot, dst)
	if dst[0] != 0 {
		t.Fatalf("bits before StartDirtyLog: %#x", dst[0])
	}
	mem.StartDirtyLog()
	mem.DirtyLog(slot, dst)
	if dst[0] != ^uint64(0) || dst[3] != ^uint64(0) {
		t.Fatalf("not initially set: %#x", dst)
	}
	mem.ClearDirtyLog(slot, 0, []uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)})
	mem.DirtyLog(slot, dst)
	if dst[0]|dst[1]|dst[2]|dst[3] != 0 {
		t.Fatalf("not cleared: %#x", dst)
	}
	mem.MarkDirty(0x5000, 0x1001) // pages 5 and 6
	mem.DirtyLog(slot, dst)
	if dst[0] != 0x60 {
		t.Fatalf("MarkDirty bits %#x, want 0x60", dst[0])
	}
	mem.ClearDirtyLog(slot, 4, []uint64{0x2}) // page 5
	mem.DirtyLog(slot, dst)
	if dst[0] != 0x40 {
		t.Fatalf("after partial clear %#x, want 0x40", dst[0])
	}
}

// TestDirtyLogNoLostStore runs a vCPU that stores an increasing counter
// into one page as fast as it can, while this goroutine clears the page's
// dirty bit, reads the page, and later checks: if the page changed since
// the read, its bit must be set again (a migration would otherwise send a
// stale page and never resend it).
func TestDirtyLogNoLostStore(t *testing.T) {
	v := newVM(t, 64, progDirty)
	const page = 0x40000 >> 12
	v.mem.StartDirtyLog()
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if ex := v.c.Run(10000); ex.Kind != ExitBudget && ex.Kind != ExitKicked {
				t.Errorf("exit %+v", ex)
				return
			}
		}
	}()
	rounds := 300
	if raceEnabled || testing.Short() {
		rounds = 50
	}
	bits := make([]uint64, 64)
	changed := 0
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < rounds || (changed == 0 && time.Now().Before(deadline)); i++ {
		v.mem.ClearDirtyLog(0, page, []uint64{1})
		before := v.r64(0x40000)
		time.Sleep(50 * time.Microsecond)
		after := v.r64(0x40000)
		v.mem.DirtyLog(0, bits)
		dirty := bits[page/64]>>(page%64)&1 != 0
		if after != before {
			changed++
			if !dirty {
				t.Fatalf("round %d: page changed %d -> %d after ClearDirtyLog but is not dirty", i, before, after)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if changed == 0 {
		t.Fatalf("the vCPU never stored during the test")
	}
}
