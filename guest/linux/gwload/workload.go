package main

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/godwit-vmm/godwit/internal/guest"
)

// The memory workload of guest/PROTOCOL.md §5, on a buffer of the
// process's own address space: the page at virtual address va takes the
// place of the test guest's guest-physical page.

const pageSize = 4096

// stamp is the first word of page va holding generation gen of run run.
func stamp(run, gen, va uint64) uint64 {
	return guest.Mix64(run<<32+gen) ^ (va>>12)*0x9E3779B97F4A7C15
}

// workload stamps and verifies pages of buf. Commands and the sweep take
// mu, so a command sees the sweep between two batches.
type workload struct {
	mu    sync.Mutex
	buf   []byte // page-aligned
	base  uint64 // virtual address of buf
	run   uint64 // W commands so far
	alloc int    // pages
	wset  int    // pages
	rate  int    // pages per second, 0 flat out
	gen   uint64 // sweep generation being written (from 1)
	pos   int    // next working-set page of the sweep
	pause bool

	dirtied atomic.Uint64 // pages written since the last W

	start    time.Time // rate baseline
	startDir uint64
}

func newWorkload(buf []byte) *workload {
	return &workload{buf: buf, base: uint64(uintptr(unsafe.Pointer(&buf[0])))}
}

// pages is the buffer size in pages.
func (w *workload) pages() int { return len(w.buf) / pageSize }

func (w *workload) write(p int, gen uint64) {
	va := w.base + uint64(p)*pageSize
	s := stamp(w.run, gen, va)
	pg := w.buf[p*pageSize : (p+1)*pageSize]
	binary.LittleEndian.PutUint64(pg[0:], s)
	binary.LittleEndian.PutUint64(pg[pageSize-8:], ^s)
	w.dirtied.Add(1)
}

// set starts run n+1 with alloc and wset MiB at rate pages/s and fills
// the pages beyond the working set; it returns the fill time.
func (w *workload) set(allocMiB, wsetMiB, rate int) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.run++
	w.alloc, w.wset, w.rate = allocMiB*256, min(wsetMiB, allocMiB)*256, rate
	w.gen, w.pos, w.pause = 1, 0, false
	w.dirtied.Store(0)
	t0 := time.Now()
	for p := w.wset; p < w.alloc; p++ {
		w.write(p, 0)
	}
	w.start, w.startDir = time.Now(), w.dirtied.Load()
	return time.Since(t0)
}

// step writes one batch of up to 64 working-set pages if the rate allows;
// it reports whether it wrote any.
func (w *workload) step() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wset == 0 || w.pause {
		return false
	}
	if w.rate > 0 {
		elapsed := time.Since(w.start)
		allowed := uint64(elapsed.Milliseconds()) * uint64(w.rate) / 1000
		done := w.dirtied.Load() - w.startDir
		if done > allowed {
			return false
		}
		if allowed-done > uint64(w.rate/5+64) { // fell behind: no burst
			w.start, w.startDir = time.Now(), w.dirtied.Load()
		}
	}
	for i := 0; i < 64; i++ {
		w.write(w.pos, w.gen)
		if w.pos++; w.pos == w.wset {
			w.pos = 0
			w.gen++
		}
	}
	return true
}

// loop runs the sweep until stop closes.
func (w *workload) loop(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if !w.step() {
			time.Sleep(time.Millisecond)
		}
	}
}

// verifyResult is the outcome of verify.
type verifyResult struct {
	checked, bad int
	first        uint64 // address of the first bad page
	want, got    uint64
}

// verify checks every page written since the last W.
func (w *workload) verify() verifyResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	var r verifyResult
	check := func(p int, gen uint64) {
		va := w.base + uint64(p)*pageSize
		s := stamp(w.run, gen, va)
		pg := w.buf[p*pageSize : (p+1)*pageSize]
		a, b := binary.LittleEndian.Uint64(pg[0:]), binary.LittleEndian.Uint64(pg[pageSize-8:])
		r.checked++
		if a != s || b != ^s {
			if r.bad == 0 {
				r.first, r.want, r.got = va, s, a
				if a == s {
					r.want, r.got = ^s, b
				}
			}
			r.bad++
		}
	}
	if w.run == 0 {
		return r
	}
	for p := 0; p < w.wset; p++ {
		switch {
		case p < w.pos:
			check(p, w.gen)
		case w.gen > 1:
			check(p, w.gen-1)
		}
	}
	for p := w.wset; p < w.alloc; p++ {
		check(p, 0)
	}
	return r
}

// poke flips bit 0 of the first word of the page holding va.
func (w *workload) poke(va uint64) (page, old, new uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if va < w.base || va >= w.base+uint64(len(w.buf)) {
		return 0, 0, 0, fmt.Errorf("address %#x is outside the buffer %#x-%#x", va, w.base, w.base+uint64(len(w.buf))-1)
	}
	page = va &^ (pageSize - 1)
	off := page - w.base
	old = binary.LittleEndian.Uint64(w.buf[off:])
	new = old ^ 1
	binary.LittleEndian.PutUint64(w.buf[off:], new)
	return page, old, new, nil
}

func (w *workload) setPause(p bool) {
	w.mu.Lock()
	w.pause = p
	if !p {
		w.start, w.startDir = time.Now(), w.dirtied.Load()
	}
	w.mu.Unlock()
}

// status returns the effective alloc, wset (MiB) and rate.
func (w *workload) status() (int, int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.alloc / 256, w.wset / 256, w.rate
}
