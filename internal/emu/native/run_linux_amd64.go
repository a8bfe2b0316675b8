package native

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// One mapping of two pages: the code page (executable) and right after it
// the context page the assembly stub and the RSP prologue/epilogue use.
const (
	ctxRegs  = 0    // [16]uint64, by register number; [RSP] only when pinned
	ctxFlags = 128  // uint64
	ctxGoRSP = 136  // uint64: Go's RSP while the code runs on a pinned RSP
	ctxMem   = 512  // [MemSize]byte, the buffer MemBase returns
	ctxFX    = 1024 // [512]byte: the test's FXSAVE64 image
	ctxGoFX  = 1536 // [512]byte: Go's, while the code runs
	maxCode  = 2048
)

// callNative loads the registers (but RSP) and flags from ctx, calls entry,
// and stores them back. Implemented in run_linux_amd64.s.
//
//go:noescape
func callNative(ctx uintptr, entry uintptr)

var (
	mu       sync.Mutex
	initErr  error
	initOnce sync.Once
	codePage []byte // executable: the code under test then RET
	ctxPage  []byte // read-write: registers, flags, Go's RSP, Mem
	rwx      bool   // codePage is mapped writable and executable at once
)

func setup() {
	ps := unix.Getpagesize()
	// Below 2 GiB if possible, so that forms with 32-bit addressing (67
	// prefix) can reach Mem.
	m, err := unix.Mmap(-1, 0, 2*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_32BIT)
	if err != nil {
		m, err = unix.Mmap(-1, 0, 2*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	}
	if err != nil {
		initErr = fmt.Errorf("native: mmap: %w", err)
		return
	}
	codePage, ctxPage = m[:ps:ps], m[ps:]
	rwx = unix.Mprotect(codePage, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC) == nil
}

// Supported reports whether Run can execute code on this platform.
func Supported() bool {
	initOnce.Do(setup)
	return initErr == nil
}

// MemBase returns the host address of the buffer Run copies State.Mem into
// for the duration of the code: a register that should point at Mem[i] must
// hold MemBase()+i. The buffer is outside the Go heap, so the address is
// stable; it is 4 KiB-page-offset 512, hence 64-byte aligned. It is below
// 2 GiB when the kernel grants MAP_32BIT (see Form.Addr32).
func MemBase() uint64 {
	initOnce.Do(setup)
	if initErr != nil {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&ctxPage[ctxMem])))
}

// codeOff is where Run places the code in the code page: after the
// prologue that pins RSP (two 7-byte RIP-relative movs), or a jmp over it.
const codeOff = 14

// CodeAddr returns the address at which Run places the code (see
// Case.Link); like MemBase it never changes.
func CodeAddr() uint64 {
	initOnce.Do(setup)
	if initErr != nil {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&codePage[codeOff])))
}

// ripRel appends the 7-byte "mov [rip+x], rsp" (store) or "mov rsp, [rip+x]"
// for code placed at codePage[len(b)], addressing ctxPage[off].
func ripRel(b []byte, store bool, off int) []byte {
	op := byte(0x8b)
	if store {
		op = 0x89
	}
	b = append(b, 0x48, op, 0x25)
	next := uintptr(unsafe.Pointer(&codePage[0])) + uintptr(len(b)+4)
	target := uintptr(unsafe.Pointer(&ctxPage[off]))
	return binary.LittleEndian.AppendUint32(b, uint32(int32(int64(target)-int64(next))))
}

// Run executes code natively, at CodeAddr, with the registers and flags of
// st and writes the resulting registers, flags and Mem back into st (a
// Case with Relocs runs as Case.Link(CodeAddr(), MemBase())). The code
// must fall through its end (it may jump within itself) and must not
// fault: a fault in it kills the process. Only the StateFlags of
// st.RFLAGS are loaded (TF, AC and the rest are never set; IF reads 1 as
// always in user mode); DF is cleared again before control returns to Go.
// Calls are serialised.
//
// If st.Regs[RSP] is 0, RSP is left alone: the code runs on Go's stack and
// must not use it, and st.Regs[RSP] stays 0. Otherwise the code runs with
// that RSP, which must point into Mem with room for whatever the code
// pushes, and the final RSP is stored back.
func Run(code []byte, st *State) error {
	if !Supported() {
		return initErr
	}
	if len(code) == 0 || len(code) > maxCode {
		return errors.New("native: code length out of range")
	}
	mu.Lock()
	defer mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	if !rwx {
		if err := unix.Mprotect(codePage, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return fmt.Errorf("native: mprotect rw: %w", err)
		}
	}
	pinned := st.Regs[RSP] != 0
	b := codePage[:0]
	if pinned {
		b = ripRel(b, true, ctxGoRSP)       // mov [goRSP], rsp
		b = ripRel(b, false, ctxRegs+8*RSP) // mov rsp, [regs.RSP]
	} else {
		// jmp over the unused prologue: the code starts at CodeAddr either way
		b = append(b, 0xeb, codeOff-2)
		for len(b) < codeOff {
			b = append(b, 0xcc)
		}
	}
	if len(b) != codeOff {
		panic("native: prologue length")
	}
	b = append(b, code...)
	if pinned {
		b = ripRel(b, true, ctxRegs+8*RSP) // mov [regs.RSP], rsp
		b = ripRel(b, false, ctxGoRSP)     // mov rsp, [goRSP]
	}
	b = append(b, 0xc3) // RET
	if &b[0] != &codePage[0] {
		return errors.New("native: code does not fit the code page")
	}
	if !rwx {
		if err := unix.Mprotect(codePage, unix.PROT_READ|unix.PROT_EXEC); err != nil {
			return fmt.Errorf("native: mprotect rx: %w", err)
		}
	}
	regs := (*[16]uint64)(unsafe.Pointer(&ctxPage[ctxRegs]))
	*regs = st.Regs
	*(*uint64)(unsafe.Pointer(&ctxPage[ctxFlags])) = st.RFLAGS&StateFlags | 2
	copy(ctxPage[ctxMem:ctxMem+MemSize], st.Mem[:])
	if st.FPU != nil {
		copy(ctxPage[ctxFX:ctxFX+512], st.FPU[:])
	} else {
		copy(ctxPage[ctxFX:ctxFX+512], DefaultFPU()[:])
	}

	callNative(uintptr(unsafe.Pointer(&ctxPage[0])), uintptr(unsafe.Pointer(&codePage[0])))

	st.Regs = *regs
	st.RFLAGS = *(*uint64)(unsafe.Pointer(&ctxPage[ctxFlags])) & StateFlags
	copy(st.Mem[:], ctxPage[ctxMem:ctxMem+MemSize])
	if st.FPU != nil {
		copy(st.FPU[:], ctxPage[ctxFX:ctxFX+512])
	}
	return nil
}
