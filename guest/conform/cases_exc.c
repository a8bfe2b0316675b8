/*
 * cases_exc.c - exceptions and their error codes, int n / iret across
 * privilege levels, TSS stacks and IST, syscall/sysret, sysenter/sysexit,
 * and the STI and MOV SS shadows.
 *
 * #TS is raised the one way that needs no task switch (the software CPU
 * implements none) and no CPL 3 code in legacy mode: an IST gate whose
 * IST slot lies beyond the limit of the loaded 64-bit TSS.
 */
#include "conform.h"

SNIP(snip_read_unaligned);
SNIP(snip_div0);
SNIP(snip_div_overflow);
SNIP(snip_idiv_overflow);
SNIP(snip_ud2);
SNIP(snip_push_es);
SNIP(snip_into64);
SNIP(snip_lock_nop);
SNIP(snip_load_ds);
SNIP(snip_load_ss);
SNIP(snip_ss_noncanonical);
SNIP(snip_gp_noncanonical);
SNIP(snip_cli);
SNIP(snip_hlt);
SNIP(snip_mov_cr3);
SNIP(snip_wrmsr);
SNIP(snip_inb);
SNIP(snip_lgdt);
SNIP(snip_int_dpl0);
SNIP(snip_int_notpresent);
extern void snip_int3(void *), snip_int3_long(void *), snip_int80(void *), snip_int_ist(void *);
extern void snip_single_step(void *), snip_movss_step(void *), snip_sti_hlt(void *), snip_sti_nop(void *);
extern void snip_syscall(void *), snip_sysenter(void *);
extern u8 snip_int3_after[], snip_int3_long_after[], snip_int80_after[], snip_int_ist_after[];
extern u8 snip_single_step_b[], snip_movss_step_b[], snip_sti_hlt_after[], snip_sti_nop_b[];
extern u8 snip_syscall_after[], snip_sysenter_after[], syscall_entry[], sysenter_entry[];
extern u8 compat_into[], compat_into_insn[], compat_into_after[], compat_bound[], compat_bound_insn[];
extern volatile u64 sys_seen[6], sysenter_seen[4];

#define FRAME_SS_SLOT(fr) ((fr) + __builtin_offsetof(struct frame, ss))

/* ---- #DE #DB #BP #OF #BR #UD ---- */

static void exc_de_div0(void)
{
	struct trap t;

	expect_trap("div by 0", run_guarded(snip_div0, NULL, &t), &t, 0, -1, IP(snip_div0_insn));
}

static void exc_de_overflow(void)
{
	struct trap t;

	expect_trap("2^64 / 1", run_guarded(snip_div_overflow, NULL, &t), &t, 0, -1, IP(snip_div_overflow_insn));
	expect_trap("INT64_MIN / -1", run_guarded(snip_idiv_overflow, NULL, &t), &t, 0, -1,
		    IP(snip_idiv_overflow_insn));
}

static volatile u64 db_rip, db_dr6;
static volatile u32 db_count;

static bool single_step_hook(struct frame *f)
{
	if (f->vector != 1)
		return false;
	db_count++;
	db_rip = f->rip;
	__asm__ __volatile__("mov %%dr6, %0" : "=r"(db_dr6));
	f->rflags &= ~RFLAGS_TF;
	return true;
}

static void arm_single_step(void)
{
	db_count = 0;
	db_rip = db_dr6 = 0;
	__asm__ __volatile__("mov %0, %%dr6" : : "r"(0xFFFF0FF0UL));
	this_cpu()->hook = single_step_hook;
}

static void exc_db_single_step(void)
{
	arm_single_step();
	expect_eq("no other exception", run_guarded(snip_single_step, NULL, NULL), NO_TRAP);
	expect_eq("#DB count", db_count, 1);
	expect_eq("#DB RIP: after the first instruction run with TF", db_rip, IP(snip_single_step_b));
	expect("DR6.BS set", db_dr6 & (1UL << 14));
}

static void exc_bp_int3(void)
{
	struct trap t;

	expect_trap("int3", run_guarded(snip_int3, NULL, &t), &t, 3, -1, IP(snip_int3_after));
	expect_eq("int3: CS", t.cs, SEL_KCODE64);
	expect_trap("int $3 (CD 03)", run_guarded(snip_int3_long, NULL, &t), &t, 3, -1, IP(snip_int3_long_after));
}

static void run_into(void *a) { compat_call(compat_into, a); }

static void exc_of_into_compat(void)
{
	struct trap t;

	expect_trap("into with OF = 1 in compatibility mode", run_guarded(run_into, NULL, &t), &t, 4, -1,
		    IP(compat_into_after));
	expect_eq("#OF: CS", t.cs, SEL_KCODE32);
}

static s32 bounds[2] = { 10, 20 };
static void run_bound(void *a) { compat_call(compat_bound, a); }

static void exc_br_bound_compat(void)
{
	struct trap t;

	expect_trap("bound 25 in [10, 20] in compatibility mode", run_guarded(run_bound, bounds, &t), &t, 5, -1,
		    IP(compat_bound_insn));
	expect_eq("#BR: CS", t.cs, SEL_KCODE32);
}

static void exc_ud_ud2(void)
{
	struct trap t;

	expect_trap("ud2", run_guarded(snip_ud2, NULL, &t), &t, 6, -1, IP(snip_ud2_insn));
}

static void exc_ud_invalid(void)
{
	struct trap t;

	expect_trap("push es (06) in 64-bit mode", run_guarded(snip_push_es, NULL, &t), &t, 6, -1,
		    IP(snip_push_es_insn));
	expect_trap("into (CE) in 64-bit mode", run_guarded(snip_into64, NULL, &t), &t, 6, -1, IP(snip_into64_insn));
	expect_trap("lock nop", run_guarded(snip_lock_nop, NULL, &t), &t, 6, -1, IP(snip_lock_nop_insn));
}

/* ---- #NP #SS #GP ---- */

static void exc_np_segment(void)
{
	struct trap t;

	expect_trap("mov ds, not-present selector", run_guarded(snip_load_ds, (void *)SEL_NOTPRESENT, &t), &t, 11,
		    SEL_NOTPRESENT, IP(snip_load_ds_insn));
}

static void exc_np_idt_gate(void)
{
	struct trap t;

	expect_trap("int to a not-present gate", run_guarded(snip_int_notpresent, NULL, &t), &t, 11,
		    VEC_NOTPRESENT << 3 | 2, IP(snip_int_notpresent_insn));
}

static void exc_ss_noncanonical(void)
{
	struct trap t;

	expect_trap("non-canonical RBP-based access", run_guarded(snip_ss_noncanonical, NULL, &t), &t, 12, 0,
		    IP(snip_ss_noncanonical_insn));
}

static void exc_ss_not_present(void)
{
	struct trap t;

	expect_trap("mov ss, not-present selector", run_guarded(snip_load_ss, (void *)SEL_NOTPRESENT, &t), &t, 12,
		    SEL_NOTPRESENT, IP(snip_load_ss_insn));
}

static void exc_gp_noncanonical(void)
{
	struct trap t;

	expect_trap("non-canonical access", run_guarded(snip_gp_noncanonical, NULL, &t), &t, 13, 0,
		    IP(snip_gp_noncanonical_insn));
}

static void exc_gp_bad_selector(void)
{
	struct trap t;

	expect_trap("mov ds, selector beyond the GDT limit", run_guarded(snip_load_ds, (void *)0xFFF8, &t), &t, 13,
		    0xFFF8, IP(snip_load_ds_insn));
	expect_trap("mov ds, execute-only code segment", run_guarded(snip_load_ds, (void *)SEL_XONLY, &t), &t, 13,
		    SEL_XONLY, IP(snip_load_ds_insn));
	expect_trap("mov ds, TSS descriptor", run_guarded(snip_load_ds, (void *)SEL_TSS0, &t), &t, 13, SEL_TSS0,
		    IP(snip_load_ds_insn));
	expect_trap("mov ss, DPL 3 data at CPL 0", run_guarded(snip_load_ss, (void *)(SEL_UDATA | 3), &t), &t, 13,
		    SEL_UDATA, IP(snip_load_ss_insn));
}

static void exc_gp_cpl3_privileged(void)
{
	static const struct {
		const char *what;
		void (*fn)(void *);
		u8 *insn;
	} insns[] = {
		{ "cli at CPL 3, IOPL 0", snip_cli, snip_cli_insn },
		{ "hlt at CPL 3", snip_hlt, snip_hlt_insn },
		{ "mov from CR3 at CPL 3", snip_mov_cr3, snip_mov_cr3_insn },
		{ "wrmsr at CPL 3", snip_wrmsr, snip_wrmsr_insn },
		{ "inb at CPL 3, IOPL 0, no I/O bitmap", snip_inb, snip_inb_insn },
		{ "lgdt at CPL 3", snip_lgdt, snip_lgdt_insn },
	};
	struct trap t;

	for (u32 i = 0; i < ARRAY_SIZE(insns); i++)
		expect_trap(insns[i].what, run_user(insns[i].fn, NULL, 0, &t), &t, 13, 0, IP(insns[i].insn));
}

static void exc_gp_int_dpl0_gate(void)
{
	struct trap t;

	expect_trap("int to a DPL 0 gate from CPL 3", run_user(snip_int_dpl0, NULL, 0, &t), &t, 13,
		    VEC_DPL0 << 3 | 2, IP(snip_int_dpl0_insn));
}

static void exc_ac_alignment(void)
{
	static u64 buf[2] __aligned(16);
	struct trap t;

	write_cr0(read_cr0() | CR0_AM);
	expect_eq("misaligned load at CPL 3, EFLAGS.AC = 0", run_user(snip_read_unaligned, buf, 0, &t), NO_TRAP);
	expect_trap("misaligned load at CPL 3, CR0.AM = EFLAGS.AC = 1",
		    run_user(snip_read_unaligned, buf, RFLAGS_AC, &t), &t, 17, 0, IP(snip_read_unaligned_insn));
	write_cr0(read_cr0() & ~CR0_AM);
	expect_eq("misaligned load at CPL 3, EFLAGS.AC = 1, CR0.AM = 0",
		  run_user(snip_read_unaligned, buf, RFLAGS_AC, &t), NO_TRAP);
}

static void exc_df_np_on_gp_gate(void)
{
	struct trap t;

	idt_set(13, idt_handler(13), 0, 0, false);
	long v = run_guarded(snip_load_ds, (void *)0xFFF8, &t);
	idt_set(13, idt_handler(13), 0, 0, true);
	expect_trap("#GP whose gate is not present", v, &t, 8, 0, 0);
	if (v == 8)
		expect_eq("#DF frame on IST2", FRAME_SS_SLOT(t.frame), stack_top(0, STK_IST2) - 8);
}

/* Load a TSS whose limit (0x23) ends before IST1 (offset 0x24) from a
 * spare GDT slot, then int to the IST1 gate at CPL 0: reading IST1 fails
 * with #TS(TSS selector). The #TS gate itself needs no stack switch. */
static void exc_ts_ist_beyond_limit(void)
{
	static struct tss64 small;
	const u32 slot = MAX_CPUS - 1;
	const u16 sel = SEL_TSS0 + 16 * slot;
	u16 own;
	u64 rsp_before = 0;
	struct trap t;

	if (ncpus >= MAX_CPUS) {
		failf("needs a spare TSS slot (cpus < %u)", MAX_CPUS);
		return;
	}
	/* Stacks in every slot all the same: a CPU that ignores the limit
	 * delivers normally instead of crashing. */
	small.rsp[0] = stack_top(0, STK_RSP0);
	small.ist[0] = stack_top(0, STK_IST1);
	small.ist[1] = stack_top(0, STK_IST2);
	__asm__ __volatile__("str %0" : "=r"(own));
	set_tss_desc(slot, (u64)&small, 0x23);
	tss_slot_cpu[slot] = 0;
	__asm__ __volatile__("ltr %w0" : : "r"(sel));
	long v = run_guarded(snip_int_ist, &rsp_before, &t);
	gdt[own + 5] &= ~0x02;			/* our own TSS: busy -> available */
	__asm__ __volatile__("ltr %w0" : : "r"(own));
	tss_slot_cpu[slot] = slot;
	expect_trap("int to an IST1 gate, IST1 beyond the TSS limit", v, &t, 10, sel, IP(snip_int_ist_after) - 2);
}

/* ---- int n / iret, TSS stacks, IST ---- */

static struct {
	u64 frame, rip, cs, ss, rsp, handler_cs;
	u32 count;
} seen;

static void record_int(struct frame *f)
{
	seen.frame = (u64)f;
	seen.rip = f->rip;
	seen.cs = f->cs;
	seen.ss = f->ss;
	seen.rsp = f->rsp;
	seen.handler_cs = read_cs();
	seen.count++;
}

static void int80_cpl3_roundtrip(void)
{
	struct {
		u64 rsp_before, rsp_after;
		u16 cs, ss;
	} r = { 0, 0, 0, 0 };
	struct trap t;

	memset(&seen, 0, sizeof(seen));
	set_irq_handler(VEC_INT80, record_int);
	expect_trap("int 0x80 from CPL 3 and iretq back", run_user(snip_int80, &r, 0, &t), &t, NO_TRAP, -1, 0);
	expect_eq("handler ran once", seen.count, 1);
	expect_eq("handler CS", seen.handler_cs, SEL_KCODE64);
	expect_eq("frame on the TSS RSP0 stack", FRAME_SS_SLOT(seen.frame), stack_top(0, STK_RSP0) - 8);
	expect_eq("pushed CS (RPL 3)", seen.cs, SEL_UCODE64 | 3);
	expect_eq("pushed SS (RPL 3)", seen.ss, SEL_UDATA | 3);
	expect_eq("pushed RSP = user RSP", seen.rsp, r.rsp_before);
	expect_eq("pushed RIP = after int", seen.rip, IP(snip_int80_after));
	expect_eq("CS after iretq", r.cs, SEL_UCODE64 | 3);
	expect_eq("SS after iretq", r.ss, SEL_UDATA | 3);
	expect_eq("RSP after iretq", r.rsp_after, r.rsp_before);
}

static void tss_rsp0_on_fault(void)
{
	struct trap t;

	expect_trap("cli at CPL 3", run_user(snip_cli, NULL, 0, &t), &t, 13, 0, IP(snip_cli_insn));
	expect_eq("#GP frame on the TSS RSP0 stack", FRAME_SS_SLOT(t.frame), stack_top(0, STK_RSP0) - 8);
	expect_eq("pushed CS", t.cs, SEL_UCODE64 | 3);
	expect_eq("pushed SS", t.ss, SEL_UDATA | 3);
	u64 ustack = stack_top(0, STK_USER);
	expect("pushed RSP on the user stack", t.rsp < ustack && t.rsp > ustack - STACK_SIZE);
}

static void ist_at_cpl0(void)
{
	u64 rsp_before = 0;

	memset(&seen, 0, sizeof(seen));
	set_irq_handler(VEC_IST, record_int);
	expect_eq("int 0x83 at CPL 0", run_guarded(snip_int_ist, &rsp_before, NULL), NO_TRAP);
	expect_eq("handler ran once", seen.count, 1);
	expect_eq("frame on the IST1 stack", FRAME_SS_SLOT(seen.frame), stack_top(0, STK_IST1) - 8);
	expect_eq("pushed RSP", seen.rsp, rsp_before);
	expect_eq("pushed CS", seen.cs, SEL_KCODE64);
	expect_eq("pushed RIP", seen.rip, IP(snip_int_ist_after));
}

/* ---- syscall / sysret, sysenter / sysexit ---- */

static void syscall_sysret(void)
{
	struct {
		u16 cs, ss;
		u32 pad;
		u64 rflags;
	} r = { 0, 0, 0, 0 };
	struct trap t;

	wrmsr(MSR_STAR, (u64)SEL_UCODE32 << 48 | (u64)SEL_KCODE64 << 32);
	wrmsr(MSR_LSTAR, (u64)syscall_entry);
	wrmsr(MSR_SFMASK, RFLAGS_TF | RFLAGS_IF | RFLAGS_AC | 0x400);
	memset((void *)sys_seen, 0, sizeof(u64) * 6);
	expect_trap("syscall from CPL 3, sysretq back", run_user(snip_syscall, &r, 0, &t), &t, NO_TRAP, -1, 0);
	expect_eq("syscall handler ran once", sys_seen[5], 1);
	expect_eq("RCX = return RIP", sys_seen[0], IP(snip_syscall_after));
	expect("R11 = user RFLAGS (DF set)", sys_seen[1] & 0x400);
	expect_eq("CS in the handler", sys_seen[2] & 0xFFFF, SEL_KCODE64);
	expect_eq("SS in the handler", (sys_seen[2] >> 16) & 0xFFFF, SEL_KDATA);
	expect_eq("RFLAGS.DF masked by SFMASK", sys_seen[3] & 0x400, 0);
	expect_eq("CS after sysretq", r.cs, SEL_UCODE64 | 3);
	expect_eq("SS after sysretq", r.ss, SEL_UDATA | 3);
	expect("RFLAGS.DF restored from R11", r.rflags & 0x400);
}

static bool vendor_amd(void)
{
	u32 r[4];

	cpuid(0, 0, r);
	return r[1] == 0x68747541 && r[3] == 0x69746E65 && r[2] == 0x444D4163;	/* AuthenticAMD */
}

/* On Intel (and Godwit) sysenter/sysexit work in long mode; AMD CPUs raise
 * #UD for sysenter there, and so does QEMU with an AMD vendor. */
static void sysenter_sysexit(void)
{
	struct {
		u16 cs, ss;
		u32 pad;
		u64 rsp_after, rsp_before;
	} r = { 0, 0, 0, 0, 0 };
	struct trap t;

	wrmsr(MSR_SYSENTER_CS, SEL_KCODE64);
	wrmsr(MSR_SYSENTER_EIP, (u64)sysenter_entry);
	memset((void *)sysenter_seen, 0, sizeof(u64) * 4);
	long v = run_user(snip_sysenter, &r, 0, &t);
	if (vendor_amd()) {
		expect_trap("sysenter in long mode on an AMD vendor", v, &t, 6, -1, IP(snip_sysenter_after) - 2);
		return;
	}
	expect_trap("sysenter from CPL 3, sysexitq back", v, &t, NO_TRAP, -1, 0);
	expect_eq("sysenter handler ran once", sysenter_seen[3], 1);
	expect_eq("CS in the handler", sysenter_seen[0] & 0xFFFF, SEL_KCODE64);
	expect_eq("SS in the handler", (sysenter_seen[0] >> 16) & 0xFFFF, SEL_KDATA);
	expect_eq("RSP = IA32_SYSENTER_ESP", sysenter_seen[1], stack_top(0, STK_SYSENTER));
	expect_eq("IF cleared by sysenter", sysenter_seen[2] & RFLAGS_IF, 0);
	expect_eq("CS after sysexitq", r.cs, SEL_UCODE64 | 3);
	expect_eq("SS after sysexitq", r.ss, SEL_UDATA2 | 3);
	expect_eq("RSP after sysexitq = RCX", r.rsp_after, r.rsp_before);
}

/* ---- shadows ---- */

/* A self-IPI left pending with IF = 0, plus a 50 ms one-shot timer so a
 * lost wake-up cannot hang the guest. */
static void pend_self_ipi(void)
{
	struct percpu *c = this_cpu();

	c->irq_count[VEC_SHADOW] = 0;
	c->last_rip[VEC_SHADOW] = 0;
	lapic_write(APIC_TIMER_DCR, 0xB);
	lapic_write(APIC_LVT_TIMER, VEC_TIMER);
	lapic_write(APIC_TIMER_ICR, 50000000);
	lapic_icr(0, 0x40000 | VEC_SHADOW);		/* shorthand: self */
	if (!wait_for(lapic_irr(VEC_SHADOW), 100))
		failf("self-IPI never became pending in IRR");
}

static void sti_hlt_wakes(void)
{
	struct percpu *c = this_cpu();

	pend_self_ipi();
	run_guarded(snip_sti_hlt, NULL, NULL);
	expect_eq("interrupts taken", c->irq_count[VEC_SHADOW], 1);
	expect_eq("interrupted RIP: after hlt (hlt inside the STI shadow)", c->last_rip[VEC_SHADOW],
		  IP(snip_sti_hlt_after));
}

static void sti_shadow_one_insn(void)
{
	struct percpu *c = this_cpu();

	pend_self_ipi();
	run_guarded(snip_sti_nop, NULL, NULL);
	expect_eq("interrupts taken", c->irq_count[VEC_SHADOW], 1);
	expect_eq("interrupted RIP: after the instruction following sti", c->last_rip[VEC_SHADOW],
		  IP(snip_sti_nop_b));
}

static void movss_shadow_single_step(void)
{
	arm_single_step();
	expect_eq("no other exception", run_guarded(snip_movss_step, NULL, NULL), NO_TRAP);
	expect_eq("#DB count", db_count, 1);
	expect_eq("#DB RIP: held back past the instruction after mov ss", db_rip, IP(snip_movss_step_b));
}

const struct conf_case exc_cases[] = {
	CASE("exc-de-div0", exc_de_div0),
	CASE("exc-de-overflow", exc_de_overflow),
	CASE("exc-db-single-step", exc_db_single_step),
	CASE("exc-bp-int3", exc_bp_int3),
	CASE("exc-of-into-compat", exc_of_into_compat),
	CASE("exc-br-bound-compat", exc_br_bound_compat),
	CASE("exc-ud-ud2", exc_ud_ud2),
	CASE("exc-ud-invalid-opcode", exc_ud_invalid),
	CASE("exc-np-segment", exc_np_segment),
	CASE("exc-np-idt-gate", exc_np_idt_gate),
	CASE("exc-ss-noncanonical", exc_ss_noncanonical),
	CASE("exc-ss-not-present", exc_ss_not_present),
	CASE("exc-gp-noncanonical", exc_gp_noncanonical),
	CASE("exc-gp-bad-selector", exc_gp_bad_selector),
	CASE("exc-gp-cpl3-privileged", exc_gp_cpl3_privileged),
	CASE("exc-gp-int-dpl0-gate", exc_gp_int_dpl0_gate),
	CASE("exc-ac-alignment", exc_ac_alignment),
	CASE("exc-df-np-on-gp-gate", exc_df_np_on_gp_gate),
	CASE("exc-ts-ist-beyond-tss-limit", exc_ts_ist_beyond_limit),
	CASE("int80-cpl3-roundtrip", int80_cpl3_roundtrip),
	CASE("tss-rsp0-on-fault", tss_rsp0_on_fault),
	CASE("ist-at-cpl0", ist_at_cpl0),
	CASE("syscall-sysret", syscall_sysret),
	CASE("sysenter-sysexit", sysenter_sysexit),
	CASE("sti-hlt-wakes", sti_hlt_wakes),
	CASE("sti-shadow-one-insn", sti_shadow_one_insn),
	CASE("movss-shadow-single-step", movss_shadow_single_step),
	{ 0, 0 },
};
