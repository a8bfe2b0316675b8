// Package conformance runs the CPU conformance guest (guest/conform, built
// as guest/build/conform.elf by `make guest`) on Godwit's software CPU and,
// where qemu-system-x86_64 is installed, on QEMU's TCG, and checks every
// case it reports.
//
// The guest is a freestanding multiboot kernel that exercises system
// behaviour rather than the integer instruction set (the differential tests
// in internal/emu/cpu cover that): mode switches between 64-bit,
// compatibility, 32- and 16-bit protected and real mode; paging in every
// mode with each page size, permission faults with their error codes and
// CR2, accessed/dirty bits and TLB invalidation; each exception with its
// error code, #DF and #TS; int n/iret across privilege levels, TSS stacks
// and IST, syscall/sysret and sysenter/sysexit; the STI and MOV SS
// shadows; AP start-up, locked read-modify-writes on every vCPU, self- and
// cross-modifying code; the LAPIC timer and IPIs, the PIT and the 8259s.
//
// # Serial protocol
//
// The guest writes one line per event on COM1 and then powers off through
// port 0xF4 (Godwit's power-off port, QEMU's isa-debug-exit):
//
//	CONFORM v1 cpus=<n>
//	PASS <case>
//	FAIL <case>: <what was expected and what was seen>
//	DONE pass=<p> fail=<f>
//
// Case names are lowercase with dashes and stable; the test holds the
// expected list, so a case that silently disappears fails. A case that
// raises an exception nobody expected is reported as FAIL with the vector,
// error code, RIP and CR2, and the guest goes on with the next case. The
// number of vCPUs comes from the command line (cpus=N); LAPIC IDs are
// 0..N-1. The guest needs 48 MiB of RAM (its paging cases use scratch
// memory at 32 MiB).
//
// QEMU is a reference, not an oracle: a case that passes on QEMU but not on
// Godwit fails the comparison; one that fails on QEMU only is logged (QEMU
// TCG, for instance, raises no #AC and reports IDT-gate error codes as
// vector*16+2).
//
// Who may import: nobody; the package holds only tests.
package conformance
