/*
 * conform.h - the conformance guest's C interfaces: the case runner, the
 * per-CPU state and trap recovery, the local APIC, the page tables of the
 * test region, and the assembly entry points.
 */
#ifndef CONFORM_H
#define CONFORM_H

#include "../src/arch.h"
#include "../src/lib.h"
#include "defs.h"

/* ---- output and the case runner (main.c) ---- */

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Record why the current case fails (the first reason wins). */
void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool case_failed(void);

#define expect(what, cond) \
	do { if (!(cond)) failf("%s", what); } while (0)
#define expect_eq(what, got, want) \
	do { u64 g_ = (u64)(got), w_ = (u64)(want); \
	     if (g_ != w_) failf("%s: want 0x%lx, got 0x%lx", what, w_, g_); } while (0)

/* ---- traps (sys.c) ---- */

struct frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8;
	u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vector, error;
	u64 rip, cs, rflags, rsp, ss;		/* pushed by the CPU */
};

/* What an exception caught by run_guarded/run_user looked like. */
struct trap {
	u64 vector, error, rip, cs, rflags, rsp, ss, cr2;
	u64 frame;				/* where the CPU put its frame */
};

#define NO_TRAP (-1L)
/* Run fn(arg) at CPL 0; return NO_TRAP if it returned, else the vector of
 * the exception that ended it (details in *t). */
long run_guarded(void (*fn)(void *), void *arg, struct trap *t);
/* The same at CPL 3 in 64-bit mode (user stack, RFLAGS = 0x2 | rflags). */
long run_user(void (*fn)(void *), void *arg, u64 rflags, struct trap *t);
/* Check a caught trap: vector, error code (err < 0: none checked), RIP
 * (rip 0: not checked). */
void expect_trap(const char *what, long got, const struct trap *t, long vec, long err, u64 rip);
const char *vector_name(u64 v);

typedef void (*irq_fn)(struct frame *);
/* Handle interrupt vector vec with fn (NULL: treat it as a trap); returns the old one. */
irq_fn set_irq_handler(u32 vec, irq_fn fn);

struct tss64 {
	u32 reserved0;
	u64 rsp[3];
	u64 reserved1;
	u64 ist[7];
	u64 reserved2;
	u16 reserved3;
	u16 iomap_base;
} __packed;

struct catcher;

struct percpu {
	u32 cpu;
	struct catcher *catcher;
	/* An exception hook: returns true when it handled the exception (the
	 * handler then returns with iretq). */
	bool (*hook)(struct frame *f);
	struct tss64 tss;
	volatile u32 irq_count[256];
	volatile u64 last_rip[256];
};

extern struct percpu percpu[MAX_CPUS];
extern u32 ncpus;			/* from cpus=N */
extern volatile u32 ncpus_online;
extern volatile u32 ap_apic_id[MAX_CPUS];	/* LAPIC ID each AP reported, | 0x100 */

struct percpu *this_cpu(void);
u64 stack_top(u32 cpu, int which);	/* which: STK_* */
enum { STK_KERNEL, STK_RSP0, STK_IST1, STK_IST2, STK_USER, STK_SYSENTER, STK_COUNT };

void idt_build(void);
void idt_set(u32 vec, u64 handler, u32 dpl, u32 ist, bool present);
u64 idt_handler(u32 vec);		/* the stub of vector vec */
void cpu_setup(u32 cpu);		/* GDT TSS slot, ltr, lidt: every CPU */
void set_tss_desc(u32 slot, u64 base, u64 limit);
extern u8 tss_slot_cpu[MAX_CPUS];
void restore_baseline(void);

/* ---- local APIC, PIC, timing (sys.c) ---- */

#define LAPIC_BASE	0xFEE00000UL
#define APIC_ID		0x020
#define APIC_TPR	0x080
#define APIC_EOI	0x0B0
#define APIC_SVR	0x0F0
#define APIC_ISR	0x100
#define APIC_IRR	0x200
#define APIC_ESR	0x280
#define APIC_ICR_LO	0x300
#define APIC_ICR_HI	0x310
#define APIC_LVT_TIMER	0x320
#define APIC_LVT_LINT0	0x350
#define APIC_LVT_LINT1	0x360
#define APIC_LVT_ERR	0x370
#define APIC_TIMER_ICR	0x380
#define APIC_TIMER_CCR	0x390
#define APIC_TIMER_DCR	0x3E0
#define LVT_MASKED	(1u << 16)
#define LVT_PERIODIC	(1u << 17)

static inline u32 lapic_read(u32 reg) { return mmio_read32(LAPIC_BASE + reg); }
static inline void lapic_write(u32 reg, u32 v) { mmio_write32(LAPIC_BASE + reg, v); }
static inline void lapic_eoi(void) { lapic_write(APIC_EOI, 0); }
u32 lapic_id(void);
void lapic_setup(bool bsp);
void lapic_icr(u32 dest, u32 low);	/* send an IPI and wait until sent */
bool lapic_irr(u32 vec);
bool lapic_isr(u32 vec);
void pic_setup(u8 mask_master, u8 mask_slave);

extern u64 tsc_per_ms;
void delay_ms(u64 ms);
/* Spin (pause) until cond is true or ms milliseconds passed; its value. */
#define wait_for(cond, ms) ({ \
	u64 t0_ = rdtsc(), span_ = tsc_per_ms * (ms); bool ok_; \
	while (!(ok_ = (cond)) && rdtsc() - t0_ < span_) cpu_relax(); \
	ok_; })

/* ---- SMP (sys.c) ---- */

void smp_start(void);
/* Run fn(cpu, arg) on CPU cpu (an AP), and wait. */
typedef void (*work_fn)(u32 cpu, void *arg);
void post_work(u32 cpu, work_fn fn, void *arg);
bool wait_work(u32 cpu, u64 ms);
/* Run fn on every online CPU including the BSP; false if an AP timed out. */
bool run_on_all(work_fn fn, void *arg, u64 ms);

/* ---- paging (cases_paging.c) ---- */

#define PTE_P	0x1UL
#define PTE_RW	0x2UL
#define PTE_US	0x4UL
#define PTE_A	0x20UL
#define PTE_D	0x40UL
#define PTE_PS	0x80UL
#define PTE_G	0x100UL
#define PTE_NX	(1UL << 63)
#define TEST_VA	0x8000000000UL		/* PML4[1]: the test region */

extern u64 id_pml4[512], id_pdpt[512], id_pd[4 * 512];
extern u32 pd32[1024];		/* 32-bit paging directory (PSE) */
extern u64 pae_pdpt[4], pae_pd[512];
void paging_reset(void);
void map4k(u32 slot, u64 phys, u64 flags);	/* TEST_VA + slot * 4 KiB */
static inline void invlpg(u64 va) { __asm__ __volatile__("invlpg (%0)" : : "r"(va) : "memory"); }
static inline u64 read_cr0(void) { u64 v; __asm__ __volatile__("mov %%cr0, %0" : "=r"(v)); return v; }
static inline void write_cr0(u64 v) { __asm__ __volatile__("mov %0, %%cr0" : : "r"(v) : "memory"); }
static inline u64 read_cr4(void) { u64 v; __asm__ __volatile__("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void write_cr4(u64 v) { __asm__ __volatile__("mov %0, %%cr4" : : "r"(v) : "memory"); }
static inline void cpuid(u32 leaf, u32 sub, u32 r[4])
{
	__asm__ __volatile__("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
static inline u16 read_cs(void) { u16 v; __asm__ __volatile__("mov %%cs, %0" : "=r"(v)); return v; }

#define CR0_WP	(1UL << 16)
#define CR0_AM	(1UL << 18)
#define CR4_PGE	(1UL << 7)
#define RFLAGS_TF (1UL << 8)
#define RFLAGS_IF (1UL << 9)
#define RFLAGS_AC (1UL << 18)
#define MSR_EFER	0xC0000080
#define MSR_STAR	0xC0000081
#define MSR_LSTAR	0xC0000082
#define MSR_SFMASK	0xC0000084
#define MSR_SYSENTER_CS	0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176

/* ---- assembly (entry.S, modes.S, snippets.S) ---- */

int catch_setjmp(void *jb) __attribute__((returns_twice));
__noreturn void catch_longjmp(void *jb, int v);
__noreturn void enter_user(void (*fn)(void *), void *arg, u64 rsp, u64 rflags);
void load_segments(void);
extern u8 isr_stubs[], tramp_start[], tramp_end[], low_start[], low_end[];
extern u8 gdt[];
extern u64 ap_boot_stack;
extern u32 ap_boot_cpu;

u32 compat_call(void *fn32, void *arg);
u32 legacy_trip(u32 cmd, u32 arg);
/* Address of a blob symbol in its low-memory copy. */
#define LOW(sym) ((volatile void *)((u64)(sym) - (u64)low_start + LOW_BASE))

/* A snippet is an assembly function with a label on its interesting
 * instruction; SNIP(x) declares x and x_insn. */
#define SNIP(x) extern void x(void *); extern u8 x##_insn[]
#define IP(x) ((u64)(x))

/* The case table (cases_*.c) */
struct conf_case {
	const char *name;
	void (*fn)(void);
};
#define CASE(n, f) { n, f }
#endif
