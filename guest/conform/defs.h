/*
 * defs.h - constants shared by the conformance guest's assembly and C:
 * selectors, vectors, fixed addresses.
 */
#ifndef CONFORM_DEFS_H
#define CONFORM_DEFS_H

/*
 * GDT. The order is dictated by the fast system calls:
 *   syscall: CS = STAR[47:32] = 0x08, SS = 0x10
 *   sysret:  CS = STAR[63:48] + 16 = 0x28 (64-bit) or + 0 = 0x18 (32-bit),
 *            SS = STAR[63:48] + 8 = 0x20
 *   sysenter: CS = SYSENTER_CS = 0x08, SS = 0x10
 *   sysexit (64-bit): CS = SYSENTER_CS + 32 = 0x28, SS = + 40 = 0x30
 */
#define SEL_KCODE64	0x08	/* 64-bit code, DPL 0 */
#define SEL_KDATA	0x10	/* flat data, DPL 0 (also used in legacy modes) */
#define SEL_UCODE32	0x18	/* 32-bit code, DPL 3 */
#define SEL_UDATA	0x20	/* flat data, DPL 3 (sysret's SS) */
#define SEL_UCODE64	0x28	/* 64-bit code, DPL 3 */
#define SEL_UDATA2	0x30	/* flat data, DPL 3 (sysexit's SS) */
#define SEL_KCODE32	0x38	/* flat 32-bit code, DPL 0: compatibility and legacy modes */
#define SEL_KCODE16	0x40	/* 16-bit code, base LOW_BASE, limit 64 KiB */
#define SEL_KDATA16	0x48	/* 16-bit data, base LOW_BASE, limit 64 KiB */
#define SEL_NOTPRESENT	0x50	/* writable data, DPL 0, P = 0 */
#define SEL_XONLY	0x58	/* execute-only 64-bit code, DPL 0 */
#define SEL_TSS0	0x60	/* 16-byte TSS descriptors, one per CPU */
#define MAX_CPUS	16
#define GDT_BYTES	(SEL_TSS0 + 16 * MAX_CPUS)

/* Interrupt vectors (0-31 are the exceptions) */
#define VEC_PIC		0x20	/* 8259 master 0x20-0x27, slave 0x28-0x2F */
#define VEC_TIMER	0x40	/* LAPIC timer */
#define VEC_WAKE	0x41	/* wake an AP for work */
#define VEC_PING	0x42	/* BSP -> AP fixed IPI */
#define VEC_PONG	0x43	/* AP -> BSP reply */
#define VEC_SELF	0x44	/* self-IPI */
#define VEC_BCAST	0x45	/* broadcast IPI */
#define VEC_SHADOW	0x46	/* self-IPI for the STI shadow cases */
#define VEC_INT80	0x80	/* DPL 3 gate: int 0x80 from CPL 3 */
#define VEC_USER_EXIT	0x81	/* DPL 3 gate: user code is done */
#define VEC_DPL0	0x82	/* DPL 0 gate: int from CPL 3 must #GP */
#define VEC_IST		0x83	/* DPL 0 gate on IST1 */
#define VEC_NOTPRESENT	0x84	/* gate with P = 0 */
#define VEC_SPURIOUS	0xFF

/* Low memory: the AP trampoline (SIPI vector 0x08) and the blob that runs
 * in 16-bit protected mode and real mode (segment 0x1000). The loader's
 * command line (0x7000 under Godwit) is copied before either is written. */
#define TRAMP_BASE	0x8000
#define LOW_BASE	0x10000
#define LOW_SEG		(LOW_BASE >> 4)

/* Physical scratch RAM for the paging cases (needs >= 48 MiB of RAM). */
#define SCRATCH		0x2000000

/* Commands of the legacy-mode excursion (modes.S) */
#define LEG_PM32	1	/* 32-bit protected mode, paging off */
#define LEG_PM16	2	/* ... then 16-bit protected mode */
#define LEG_REAL	3	/* ... then real mode */
#define LEG_PSE		4	/* 32-bit paging with a 4 MiB page */
#define LEG_PAE		5	/* PAE paging with a 2 MiB page */

#define STACK_SIZE	0x4000

#endif
