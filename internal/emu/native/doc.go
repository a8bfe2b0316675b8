// Package native is the reference side of the software CPU's differential
// tests (internal/emu/cpu/diff_test.go).
//
// Run executes a short x86-64 instruction sequence natively on the host CPU
// (linux/amd64): an assembly stub loads every general register and the
// arithmetic flags and DF from a State, calls the code on an executable
// page, and stores them back; Mem is copied to an off-heap buffer at
// MemBase for the call. With a non-zero State RSP the code runs on that
// stack (inside Mem) and RSP is stored back too.
//
// Forms lists the integer instruction forms a 64-bit decoder must accept:
// every opcode of the group-1 ALU, test, inc/dec, neg/not/mul/imul/div/
// idiv, shifts and rotates (including rcl/rcr and the /6 SAL alias),
// shld/shrd, bt/bts/btr/btc, bsf/bsr, popcnt, lzcnt, mov/movzx/movsx/
// movsxd/movbe, mov with moffs, xchg, xadd, cmpxchg/cmpxchg8b/cmpxchg16b,
// cmovcc, setcc, lea, bswap, cbw/cwd families, flag instructions, string
// instructions with and without rep/repe/repne, hint NOPs, prefetches,
// fences, clflush and fwait, in each operand size (8-bit with and without
// REX, 16, 32, 64), with a register operand or one of the memory
// addressing modes ([base], [base+disp8], [base+disp32],
// [base+index*scale+disp] with and without R8-R15 as base and index,
// RIP-relative, absolute [disp32], [index*scale+disp32]; and with 32-bit
// addressing, 67), with and without lock; plus redundant and ignored
// prefixes, branches that stay inside the code (jcc, jmp, loop, jrcxz,
// indirect jmp and call through a register or memory), xlat, stack
// instructions with RSP pinned into Mem, and "chains" (a flag-setting
// instruction, a form, then a flag reader) for lazy flag evaluation.
// Form.Case makes a random Case of a form: code bytes, input registers
// (edge values favoured), flags and Mem, which registers are Mem offsets
// (AddrRegs), and what the architecture leaves undefined on AMD
// (UndefFlags, Exempt registers). Case.Input, Normalize and Diff turn it
// into states and compare outputs. Absolute and RIP-relative operands hold
// Mem offsets in Code (Case.Relocs): Case.Link makes the code for given
// code and Mem addresses (natively CodeAddr and MemBase).
//
// FaultCases lists encodings that must raise #UD, #DE or #GP.
//
// Register numbers are x86 encodings: 0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP,
// 5 RBP, 6 RSI, 7 RDI, 8..15 R8..R15. RSP is never used by generated code.
package native
