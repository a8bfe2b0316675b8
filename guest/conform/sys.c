/*
 * sys.c - the machine under the cases: serial output, descriptor tables and
 * TSSs, the C side of interrupt entry with trap recovery, the local APIC and
 * the 8259s, TSC timing, AP start-up and work dispatch.
 */
#include "conform.h"
#include "../src/spinlock.h"

/* ---- serial (COM1) ----------------------------------------------------------- */

#define COM1 0x3F8
static spinlock_t say_lock;

void serial_init(void)
{
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x80);
	outb(COM1 + 0, 0x01);		/* 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);		/* 8N1 */
	outb(COM1 + 2, 0x07);
	outb(COM1 + 4, 0x03);
}

void say(const char *fmt, ...)
{
	char buf[320];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	u64 flags = spin_lock_irqsave(&say_lock);
	for (int i = 0; i < n; i++) {
		while (!(inb(COM1 + 5) & 0x20))
			cpu_relax();
		outb(COM1, (u8)buf[i]);
	}
	spin_unlock_irqrestore(&say_lock, flags);
}

/* ---- per-CPU state, stacks ---------------------------------------------------- */

struct percpu percpu[MAX_CPUS];
static u8 stacks[MAX_CPUS][STK_COUNT][STACK_SIZE] __aligned(16) __noinit;
extern u8 bsp_stack[];

u64 stack_top(u32 cpu, int which)
{
	if (cpu == 0 && which == STK_KERNEL)
		return (u64)bsp_stack + STACK_SIZE;
	return (u64)&stacks[cpu][which][STACK_SIZE];
}

/* Which CPU uses TSS slot i: slot i is CPU i's, but a case may lend a
 * spare slot to the BSP (exc-ts-ist-beyond-tss-limit). */
u8 tss_slot_cpu[MAX_CPUS] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };

struct percpu *this_cpu(void)
{
	u16 tr;

	__asm__ __volatile__("str %0" : "=r"(tr));
	if (tr < SEL_TSS0)
		return &percpu[0];		/* before ltr: the BSP */
	return &percpu[tss_slot_cpu[(tr - SEL_TSS0) / 16]];
}

/* ---- IDT and TSS ------------------------------------------------------------- */

struct idt_gate {
	u16 off_lo, selector;
	u8 ist, type;
	u16 off_mid;
	u32 off_hi, reserved;
} __packed;

struct desc_ptr {
	u16 limit;
	u64 base;
} __packed;

static struct idt_gate idt[256] __aligned(16);
static irq_fn irq_handlers[256];

u64 idt_handler(u32 vec) { return (u64)(isr_stubs + 16 * vec); }

void idt_set(u32 vec, u64 handler, u32 dpl, u32 ist, bool present)
{
	struct idt_gate *g = &idt[vec];

	g->off_lo = (u16)handler;
	g->selector = SEL_KCODE64;
	g->ist = (u8)ist;
	g->type = (u8)((present ? 0x80 : 0) | dpl << 5 | 0x0E);	/* 64-bit interrupt gate */
	g->off_mid = (u16)(handler >> 16);
	g->off_hi = (u32)(handler >> 32);
	g->reserved = 0;
}

void idt_build(void)
{
	for (u32 v = 0; v < 256; v++)
		idt_set(v, idt_handler(v), 0, 0, true);
	idt_set(8, idt_handler(8), 0, 2, true);		/* #DF on IST2 */
	idt_set(VEC_INT80, idt_handler(VEC_INT80), 3, 0, true);
	idt_set(VEC_USER_EXIT, idt_handler(VEC_USER_EXIT), 3, 0, true);
	idt_set(VEC_IST, idt_handler(VEC_IST), 0, 1, true);
	idt_set(VEC_NOTPRESENT, idt_handler(VEC_NOTPRESENT), 0, 0, false);
}

static void idt_load(void)
{
	struct desc_ptr p = { sizeof(idt) - 1, (u64)idt };
	__asm__ __volatile__("lidt %0" : : "m"(p));
}

static void gdt_load(void)
{
	struct desc_ptr p = { GDT_BYTES - 1, (u64)gdt };
	__asm__ __volatile__("lgdt %0" : : "m"(p));
}

/* GDT slot `slot`: an available 64-bit TSS, DPL 0, present. */
void set_tss_desc(u32 slot, u64 base, u64 limit)
{
	u64 *d = (u64 *)(gdt + SEL_TSS0 + 16 * slot);

	d[0] = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | 0x89UL << 40 |
	       ((limit >> 16) & 0xF) << 48 | ((base >> 24) & 0xFF) << 56;
	d[1] = base >> 32;
}

void cpu_setup(u32 cpu)
{
	struct percpu *c = &percpu[cpu];
	struct tss64 *t = &c->tss;
	u64 base = (u64)t, limit = sizeof(*t) - 1;

	c->cpu = cpu;
	t->rsp[0] = stack_top(cpu, STK_RSP0);
	t->ist[0] = stack_top(cpu, STK_IST1);
	t->ist[1] = stack_top(cpu, STK_IST2);
	t->iomap_base = sizeof(*t);		/* no I/O bitmap */
	set_tss_desc(cpu, base, limit);
	gdt_load();
	load_segments();
	__asm__ __volatile__("ltr %w0" : : "r"(SEL_TSS0 + 16 * cpu));
	idt_load();
	wrmsr(MSR_SYSENTER_ESP, stack_top(cpu, STK_SYSENTER));
}

irq_fn set_irq_handler(u32 vec, irq_fn fn)
{
	irq_fn old = irq_handlers[vec];

	irq_handlers[vec] = fn;
	return old;
}

/* ---- traps ------------------------------------------------------------------ */

struct jmpbuf {
	u64 rbx, rbp, r12, r13, r14, r15, rsp, rip, rflags;
};

struct catcher {
	struct jmpbuf jb;
	struct trap trap;
	struct catcher *prev;
};

static const char *const exc_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
	"#DF", "#CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23",
	"#24", "#25", "#26", "#27", "#28", "#29", "#30", "#31",
};

const char *vector_name(u64 v)
{
	if (v < 32)
		return exc_names[v];
	if (v == VEC_USER_EXIT)
		return "user-exit";
	return "interrupt";
}

void trap(struct frame *f)
{
	struct percpu *c = this_cpu();
	u64 v = f->vector;

	if (irq_handlers[v]) {
		irq_handlers[v](f);
		return;
	}
	if (c->hook && c->hook(f))
		return;
	struct catcher *k = c->catcher;
	if (!k) {
		say("PANIC cpu%u %s (vector %lu) err=0x%lx rip=0x%lx cs=0x%lx rsp=0x%lx cr2=0x%lx",
		    c->cpu, vector_name(v), v, f->error, f->rip, f->cs, f->rsp, read_cr2());
		halt_forever();
	}
	k->trap = (struct trap){ v, f->error, f->rip, f->cs, f->rflags, f->rsp, f->ss, read_cr2(), (u64)f };
	c->catcher = k->prev;
	if (v >= 32 && lapic_isr(v))
		lapic_eoi();		/* an unexpected interrupt: do not leave it in service */
	catch_longjmp(&k->jb, 1);
}

static long guarded(void (*fn)(void *), void *arg, bool user, u64 rflags, struct trap *t)
{
	struct percpu *volatile c = this_cpu();	/* volatile: kept across the longjmp */
	struct catcher k;

	memset(&k.trap, 0, sizeof(k.trap));
	k.prev = c->catcher;
	c->catcher = &k;
	if (catch_setjmp(&k.jb) == 0) {
		if (user)
			enter_user(fn, arg, stack_top(c->cpu, STK_USER), 0x2 | rflags);
		fn(arg);
		c->catcher = k.prev;
		if (t)
			memset(t, 0, sizeof(*t));
		return NO_TRAP;
	}
	/* thrown to by trap(), which already popped k */
	if (t)
		*t = k.trap;
	if (user && k.trap.vector == VEC_USER_EXIT)
		return NO_TRAP;
	return (long)k.trap.vector;
}

long run_guarded(void (*fn)(void *), void *arg, struct trap *t)
{
	return guarded(fn, arg, false, 0, t);
}

long run_user(void (*fn)(void *), void *arg, u64 rflags, struct trap *t)
{
	return guarded(fn, arg, true, rflags, t);
}

void expect_trap(const char *what, long got, const struct trap *t, long vec, long err, u64 rip)
{
	if (got != vec) {
		char seen[96];
		snprintf(seen, sizeof(seen), "%s (vector %ld) err=0x%lx rip=0x%lx", vector_name(got), got,
			 t->error, t->rip);
		if (got == 14)
			snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), " cr2=0x%lx", t->cr2);
		if (vec == NO_TRAP)
			failf("%s: want no exception, got %s", what, seen);
		else if (got == NO_TRAP)
			failf("%s: want %s, got no exception", what, vector_name(vec));
		else
			failf("%s: want %s, got %s", what, vector_name(vec), seen);
		return;
	}
	if (err >= 0 && t->error != (u64)err)
		failf("%s: %s error code want 0x%lx, got 0x%lx", what, vector_name(vec), err, t->error);
	if (rip && t->rip != rip)
		failf("%s: %s RIP want 0x%lx, got 0x%lx", what, vector_name(vec), rip, t->rip);
}

/* ---- local APIC, 8259 --------------------------------------------------------- */

u32 lapic_id(void) { return lapic_read(APIC_ID) >> 24; }

bool lapic_irr(u32 vec) { return lapic_read(APIC_IRR + 0x10 * (vec / 32)) & (1u << (vec % 32)); }
bool lapic_isr(u32 vec) { return lapic_read(APIC_ISR + 0x10 * (vec / 32)) & (1u << (vec % 32)); }

void lapic_setup(bool bsp)
{
	wrmsr(0x1B, rdmsr(0x1B) | (1UL << 11));		/* IA32_APIC_BASE: enable */
	lapic_write(APIC_TPR, 0);
	lapic_write(APIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	/* Only the BSP takes the 8259's ExtINT through LINT0. */
	lapic_write(APIC_LVT_LINT0, bsp ? 0x700 : LVT_MASKED);
	lapic_write(APIC_LVT_LINT1, bsp ? 0x400 : LVT_MASKED);	/* NMI */
	lapic_write(APIC_LVT_ERR, LVT_MASKED | 0xFE);
	lapic_write(APIC_SVR, 0x100 | VEC_SPURIOUS);
}

void lapic_icr(u32 dest, u32 low)
{
	lapic_write(APIC_ICR_HI, dest << 24);
	lapic_write(APIC_ICR_LO, low);
	for (int i = 0; i < 1000000 && (lapic_read(APIC_ICR_LO) & (1u << 12)); i++)
		cpu_relax();
}

void pic_setup(u8 mask_master, u8 mask_slave)
{
	outb(0x20, 0x11);		/* ICW1: edge, cascade, ICW4 */
	outb(0xA0, 0x11);
	outb(0x21, VEC_PIC);		/* ICW2: vector base */
	outb(0xA1, VEC_PIC + 8);
	outb(0x21, 0x04);		/* ICW3: slave on IRQ2 */
	outb(0xA1, 0x02);
	outb(0x21, 0x01);		/* ICW4: 8086 mode, normal EOI */
	outb(0xA1, 0x01);
	outb(0x21, mask_master);
	outb(0xA1, mask_slave);
}

static void ioapic_mask_all(void)
{
	volatile u32 *sel = (u32 *)0xFEC00000UL, *win = (u32 *)0xFEC00010UL;

	*sel = 1;
	u32 pins = ((*win >> 16) & 0xFF) + 1;
	for (u32 p = 0; p < pins && p < 24; p++) {
		*sel = 0x10 + 2 * p;
		*win = LVT_MASKED;
		*sel = 0x11 + 2 * p;
		*win = 0;
	}
}

/* ---- timing -------------------------------------------------------------------- */

u64 tsc_per_ms = 2000000;

/* Measure the TSC against 10 ms of the APIC timer, which both KVM's and
 * QEMU's LAPICs clock at 1 GHz (divide by 1). */
static void tsc_calibrate(void)
{
	lapic_write(APIC_TIMER_DCR, 0xB);
	lapic_write(APIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	lapic_write(APIC_TIMER_ICR, 0xFFFFFFFF);
	u32 c0 = lapic_read(APIC_TIMER_CCR);
	u64 t0 = rdtsc();
	while (c0 - lapic_read(APIC_TIMER_CCR) < 10000000) {
		if (rdtsc() - t0 > 100000000000UL) {
			say("WARN APIC timer does not count; assuming a 2 GHz TSC");
			lapic_write(APIC_TIMER_ICR, 0);
			return;
		}
		cpu_relax();
	}
	tsc_per_ms = (rdtsc() - t0) / 10;
	lapic_write(APIC_TIMER_ICR, 0);
}

void delay_ms(u64 ms)
{
	u64 t0 = rdtsc();

	while (rdtsc() - t0 < tsc_per_ms * ms)
		cpu_relax();
}

/* ---- interrupt handlers every case may use ---------------------------------------- */

static void count_irq(struct frame *f)
{
	struct percpu *c = this_cpu();

	c->irq_count[f->vector]++;
	c->last_rip[f->vector] = f->rip;
	if (f->vector >= 32 && f->vector != VEC_SPURIOUS)
		lapic_eoi();
}

static void count_pic_irq(struct frame *f)
{
	struct percpu *c = this_cpu();

	c->irq_count[f->vector]++;
	c->last_rip[f->vector] = f->rip;
	if (f->vector >= VEC_PIC + 8)
		outb(0xA0, 0x20);
	outb(0x20, 0x20);			/* non-specific EOI */
}

static void ping_irq(struct frame *f)
{
	count_irq(f);
	lapic_icr(0, VEC_PONG);			/* fixed IPI back to the BSP */
}

static void install_handlers(void)
{
	static const u8 counted[] = {
		2, VEC_TIMER, VEC_WAKE, VEC_PONG, VEC_SELF, VEC_BCAST, VEC_SHADOW, VEC_SPURIOUS,
	};
	for (u32 i = 0; i < ARRAY_SIZE(counted); i++)
		set_irq_handler(counted[i], count_irq);
	for (u32 v = VEC_PIC; v < VEC_PIC + 16; v++)
		set_irq_handler(v, count_pic_irq);
	set_irq_handler(VEC_PING, ping_irq);
}

/* ---- baseline ------------------------------------------------------------------- */

void restore_baseline(void)
{
	struct percpu *c = this_cpu();

	irq_disable();
	c->hook = NULL;
	write_cr0(0x80010031);			/* PG, WP, NE, ET, PE */
	write_cr4(0x20);			/* PAE */
	wrmsr(MSR_EFER, rdmsr(MSR_EFER) | 0x901);
	paging_reset();
	write_cr3((u64)id_pml4);
	gdt_load();
	load_segments();
	idt_build();
	idt_load();
	lapic_write(APIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	lapic_write(APIC_TIMER_ICR, 0);
	lapic_write(APIC_LVT_LINT0, 0x700);
	for (int i = 0; i < 16; i++) {		/* nothing left in service */
		bool any = false;
		for (u32 r = 0; r < 8; r++)
			any |= lapic_read(APIC_ISR + 0x10 * r) != 0;
		if (!any)
			break;
		lapic_eoi();
	}
	outb(0x21, 0xFF);
	outb(0xA1, 0xFF);
}

/* ---- SMP ------------------------------------------------------------------------- */

u32 ncpus = 1;
volatile u32 ncpus_online = 1;
volatile u32 ap_apic_id[MAX_CPUS];

struct work {
	work_fn fn;
	void *arg;
	volatile u32 seq, done;
};
static struct work work[MAX_CPUS];
static volatile u32 ap_alive;

void ap_main(u32 cpu)
{
	cpu_setup(cpu);
	lapic_setup(false);
	ap_apic_id[cpu] = lapic_id() | 0x100;
	__atomic_store_n(&ap_alive, 1, __ATOMIC_RELEASE);

	/* Idle in hlt; the BSP posts work and sends VEC_WAKE. The STI shadow
	 * keeps the check and the hlt atomic with respect to the wake-up. */
	u32 last = 0;
	for (;;) {
		irq_disable();
		u32 seq = READ_ONCE(work[cpu].seq);
		if (seq != last) {
			last = seq;
			irq_enable();
			work[cpu].fn(cpu, work[cpu].arg);
			__atomic_store_n(&work[cpu].done, seq, __ATOMIC_RELEASE);
			continue;
		}
		safe_halt();
	}
}

void post_work(u32 cpu, work_fn fn, void *arg)
{
	work[cpu].fn = fn;
	work[cpu].arg = arg;
	__atomic_store_n(&work[cpu].seq, work[cpu].seq + 1, __ATOMIC_RELEASE);
	lapic_icr(cpu, VEC_WAKE);
}

bool wait_work(u32 cpu, u64 ms)
{
	return wait_for(__atomic_load_n(&work[cpu].done, __ATOMIC_ACQUIRE) == work[cpu].seq, ms);
}

bool run_on_all(work_fn fn, void *arg, u64 ms)
{
	bool ok = true;

	for (u32 cpu = 1; cpu < ncpus_online; cpu++)
		post_work(cpu, fn, arg);
	fn(0, arg);
	for (u32 cpu = 1; cpu < ncpus_online; cpu++)
		ok &= wait_work(cpu, ms);
	return ok;
}

void smp_start(void)
{
	memcpy((void *)TRAMP_BASE, tramp_start, (size_t)(tramp_end - tramp_start));
	for (u32 cpu = 1; cpu < ncpus; cpu++) {
		ap_boot_stack = stack_top(cpu, STK_KERNEL);
		ap_boot_cpu = cpu;
		ap_alive = 0;
		mb();
		lapic_icr(cpu, 0x4500);				/* INIT */
		delay_ms(10);
		lapic_icr(cpu, 0x4600 | (TRAMP_BASE >> 12));	/* SIPI */
		if (!wait_for(__atomic_load_n(&ap_alive, __ATOMIC_ACQUIRE), 1))
			lapic_icr(cpu, 0x4600 | (TRAMP_BASE >> 12));
		if (!wait_for(__atomic_load_n(&ap_alive, __ATOMIC_ACQUIRE), 2000)) {
			say("WARN cpu%u did not start", cpu);
			break;
		}
		ncpus_online = cpu + 1;
	}
}

/* ---- boot --------------------------------------------------------------------------- */

struct mb_info {
	u32 flags, mem_lower, mem_upper, boot_device, cmdline;
} __packed;

static void parse_cmdline(u32 magic, u32 info)
{
	const struct mb_info *mbi = (const struct mb_info *)(u64)info;

	if (magic != 0x2BADB002 || !(mbi->flags & 4))
		return;
	for (const char *p = (const char *)(u64)mbi->cmdline; *p; p++) {
		if (strncmp(p, "cpus=", 5) == 0 && (p == (const char *)(u64)mbi->cmdline || p[-1] == ' ')) {
			const char *q = p + 5;
			u64 n;
			if (parse_u64(&q, &n) && n >= 1)
				ncpus = n > MAX_CPUS ? MAX_CPUS : (u32)n;
		}
	}
}

extern u32 idt32[32 * 2];
extern u8 pm_stubs[], rm_stubs[], rm_int30[], rm_de[], rm_other[], ivt[];

/* The legacy-mode excursions' tables: a 32-bit IDT for protected-mode
 * faults and the real-mode IVT, both pointing into the low blob. */
static void legacy_tables(void)
{
	for (u32 v = 0; v < 32; v++) {
		u32 off = (u32)(u64)LOW(pm_stubs + 16 * v);
		idt32[2 * v] = (off & 0xFFFF) | SEL_KCODE32 << 16;
		idt32[2 * v + 1] = (off & 0xFFFF0000) | 0x8E00;	/* 32-bit interrupt gate */
	}
	volatile u32 *ivt_low = (volatile u32 *)LOW(ivt);
	for (u32 v = 0; v < 256; v++) {
		u8 *h = v < 32 ? rm_stubs + 8 * v : rm_other;
		if (v == 0)
			h = rm_de;
		if (v == 0x30)
			h = rm_int30;
		ivt_low[v] = (u32)LOW_SEG << 16 | (u32)(h - low_start);
	}
}

void run_cases(void);

void kmain(u32 magic, u32 info)
{
	serial_init();
	parse_cmdline(magic, info);
	memcpy((void *)LOW_BASE, low_start, (size_t)(low_end - low_start));
	legacy_tables();
	idt_build();
	install_handlers();
	cpu_setup(0);
	lapic_setup(true);
	pic_setup(0xFF, 0xFF);
	ioapic_mask_all();
	tsc_calibrate();
	paging_reset();
	wrmsr(MSR_SYSENTER_CS, SEL_KCODE64);
	smp_start();
	say("CONFORM v1 cpus=%u", ncpus);
	run_cases();
	outb(0xF4, 0);
	halt_forever();
}
