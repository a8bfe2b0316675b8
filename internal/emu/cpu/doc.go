// Package cpu is the core of Godwit's software x86-64 vCPU: instruction
// decode and execution, the MMU with a per-vCPU software TLB, exception and
// interrupt delivery, and the guest-physical memory (with KVM's dirty-log
// contract) that the vCPUs of one VM share.
//
// It is used where /dev/kvm is absent, as QEMU uses TCG. It knows nothing of
// the LAPIC, PIC, PIT or of the VMM: those sit behind Platform. State comes
// and goes in KVM's layouts (package hv), so the backend above it looks like
// a userspace KVM.
//
// Who may import: the software backend (the glue presenting this core and
// the userspace interrupt controllers as a hypervisor backend) and tests.
// It imports only the standard library and internal/hv.
//
// # What is implemented
//
// Exactly what SupportedCPUID advertises: the general-purpose integer
// instruction set in real, 16/32-bit protected, compatibility and 64-bit
// mode; segmentation with descriptor caches, CPL and privilege checks; far
// jmp/call/ret (also through call gates) and iret across privilege levels;
// paging (none, 32-bit with
// PSE, PAE, 4-level; 4 KiB, 2 MiB, 4 MiB and 1 GiB pages; U/S, R/W with
// CR0.WP, NX; atomic A/D updates); IVT/IDT delivery with TSS stack switches
// and IST, the double- and triple-fault rules, NMI blocking, the STI and
// MOV SS shadows, TF single-step, alignment checks (#AC at CPL 3 with
// CR0.AM and RFLAGS.AC); syscall/sysret, sysenter/sysexit; the
// CPU's own MSRs; the x87 FPU (f80.go: a soft-float of the 80-bit format
// with precision and rounding control; x87.go, x87_math.go, x87_env.go,
// x87_trans.go), MMX, SSE and SSE2 (sse.go, sse_float.go: binary32 and
// binary64 soft-float under MXCSR; sse_int.go), FXSAVE/FXRSTOR and
// XSAVE/XRSTOR with XCR0 for the x87 and SSE components (fpu.go, which
// holds that state). SSE3 and later, AVX and XSAVEOPT/XSAVEC/XSAVES raise
// #UD, as CPUID says. Not implemented: task switches (an internal error),
// virtual-8086 mode (an internal error), debug-register breakpoints (DR0-7
// are stored only), SMM.
//
// The CPUID vendor is "GodwitVirtCP" (honest, and 12 bytes as the
// architecture requires); leaf 0x40000000 says "GodwitGodwit".
//
// # How it runs
//
// Instructions are decoded once into a compact record (insn) cached per
// vCPU, direct-mapped by guest-physical address and decode mode (16/32/64);
// dispatch is a switch on the opcode. Flags are lazy (flags.go). An
// architectural exception unwinds the instruction with panic(fault{...});
// Run recovers it (one deferred recover per burst of instructions, not per
// instruction) and delivers it through the IDT. Nothing else panics out of
// the package: a runtime error inside an instruction becomes
// ExitInternalError with a "bug:" reason.
//
// # Memory, dirty log and self-modifying code
//
// Guest RAM is host memory outside the Go heap, accessed through unsafe
// pointers (plain loads and stores keep x86-TSO on amd64); all pointer
// arithmetic is in memory_unsafe.go, and lock cmpxchg16b in
// cas128_amd64.s. Locked
// read-modify-writes use compare-and-swap on the containing aligned word;
// a locked access that crosses an 8-byte boundary takes a Memory-wide
// mutex (as hardware's split locks are slow too).
//
// The TLB caches, per 4 KiB linear page, the host pointer, the permissions
// and tlbFast: "a store here may skip the slow path". The slow path marks
// the page in the dirty bitmap (while logging) and invalidates decoded code
// on it. ClearDirtyLog clears bits, bumps Memory.gen and waits until every
// vCPU inside Run has passed an instruction boundary (or a Platform call)
// after seeing the new gen, where it drops all tlbFast flags; so every
// store that becomes visible after ClearDirtyLog returns marks its page
// again. A page that holds decoded code never gets tlbFast; a store to it,
// from any vCPU or through MarkDirty, bumps Memory.codeEpoch and every vCPU
// flushes its decode cache before its next instruction.
package cpu
