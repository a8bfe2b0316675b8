/*
 * cases_smp.c - several vCPUs: start-up by INIT/SIPI, atomicity of locked
 * read-modify-writes, self- and cross-modifying code, and IPIs.
 */
#include "conform.h"

#define ITERS 200000
#define SPIN_ITERS 100000
#define NARROW_ITERS 100000

static bool need_aps(void)
{
	if (ncpus_online < 2) {
		failf("needs at least 2 vCPUs online, have %u (cpus=%u)", ncpus_online, ncpus);
		return false;
	}
	return true;
}

static void smp_sipi_all_aps(void)
{
	expect_eq("BSP LAPIC ID", lapic_id(), 0);
	for (u32 cpu = 1; cpu < ncpus; cpu++)
		if (ap_apic_id[cpu] != (0x100 | cpu))
			failf("cpu%u: want LAPIC ID %u reported, got %s%u", cpu, cpu,
			      ap_apic_id[cpu] & 0x100 ? "" : "none, ", ap_apic_id[cpu] & 0xFF);
	expect_eq("vCPUs online", ncpus_online, ncpus);
	need_aps();
}

/* ---- atomics ---- */

static struct {
	volatile u64 c64;
	u8 pad0[56];
	volatile u8 bytes[8];		/* one per CPU, neighbours in one word */
	volatile u16 c16;
	u8 pad1[54];
	volatile u32 lock;
	volatile u64 plain;
} ctr __aligned(64);
static u8 split_area[128] __aligned(64);

/* A 32-bit counter at offset 62 of a cache line: it crosses into the next. */
static volatile u32 *split_counter(void)
{
	return (volatile u32 *)(split_area + 62);
}

static void run_all(work_fn fn)
{
	if (!run_on_all(fn, NULL, 60000))
		failf("an AP did not finish within 60 s");
}

static void w_lock_add(u32 cpu, void *a)
{
	for (u32 i = 0; i < ITERS; i++)
		__asm__ __volatile__("lock addq $1, %0" : "+m"(ctr.c64));
}

static void w_lock_xadd(u32 cpu, void *a)
{
	for (u32 i = 0; i < ITERS; i++) {
		u64 v = 1;
		__asm__ __volatile__("lock xaddq %0, %1" : "+r"(v), "+m"(ctr.c64));
	}
}

static void w_lock_cmpxchg(u32 cpu, void *a)
{
	for (u32 i = 0; i < ITERS; i++) {
		u64 old = ctr.c64;
		bool ok;
		do {
			__asm__ __volatile__("lock cmpxchgq %3, %1"
					     : "+a"(old), "+m"(ctr.c64), "=@ccz"(ok)
					     : "r"(old + 1));
		} while (!ok);
	}
}

static void w_lock_narrow(u32 cpu, void *a)
{
	volatile u32 *split = split_counter();

	for (u32 i = 0; i < NARROW_ITERS; i++) {
		__asm__ __volatile__("lock incb %0" : "+m"(ctr.bytes[cpu & 7]));
		__asm__ __volatile__("lock addw $1, %0" : "+m"(ctr.c16));
		__asm__ __volatile__("lock addl $1, %0" : "+m"(*split));
	}
}

static void w_xchg_spinlock(u32 cpu, void *a)
{
	for (u32 i = 0; i < SPIN_ITERS; i++) {
		u32 v;
		for (;;) {
			v = 1;
			__asm__ __volatile__("xchgl %0, %1" : "+r"(v), "+m"(ctr.lock) : : "memory");
			if (!v)
				break;
			while (ctr.lock)
				cpu_relax();
		}
		u64 x = ctr.plain;		/* a plain, unlocked increment */
		ctr.plain = x + 1;
		__atomic_store_n(&ctr.lock, 0, __ATOMIC_RELEASE);
	}
}

static void smp_counter(work_fn fn, const char *what, u64 per_cpu)
{
	if (!need_aps())
		return;
	ctr.c64 = 0;
	run_all(fn);
	expect_eq(what, ctr.c64, per_cpu * ncpus_online);
}

static void smp_lock_add(void) { smp_counter(w_lock_add, "total of lock add", ITERS); }
static void smp_lock_xadd(void) { smp_counter(w_lock_xadd, "total of lock xadd", ITERS); }
static void smp_lock_cmpxchg(void) { smp_counter(w_lock_cmpxchg, "total of lock cmpxchg loops", ITERS); }

static void smp_lock_narrow_split(void)
{
	if (!need_aps())
		return;
	memset((void *)ctr.bytes, 0, sizeof(ctr.bytes));
	ctr.c16 = 0;
	*split_counter() = 0;
	run_all(w_lock_narrow);
	for (u32 cpu = 0; cpu < ncpus_online && cpu < 8; cpu++)
		if (ctr.bytes[cpu] != (u8)NARROW_ITERS)
			failf("lock incb on cpu%u's byte: want 0x%x, got 0x%x", cpu, (u8)NARROW_ITERS, ctr.bytes[cpu]);
	expect_eq("lock addw total (mod 2^16)", ctr.c16, (u16)(NARROW_ITERS * ncpus_online));
	expect_eq("lock addl across a cache line", *split_counter(), NARROW_ITERS * ncpus_online);
}

static void smp_xchg_spinlock(void)
{
	if (!need_aps())
		return;
	ctr.lock = 0;
	ctr.plain = 0;
	run_all(w_xchg_spinlock);
	expect_eq("plain increments under an xchg spinlock", ctr.plain, (u64)SPIN_ITERS * ncpus_online);
}

/* ---- self- and cross-modifying code ---- */

extern u32 smc_func(void), smc_patch_and_call(u32), smc_next_insn(u32), xmc_func(void);
extern u8 code_buf[];

static void set_imm(void *fn, u32 v)
{
	*(volatile u32 *)((u8 *)fn + 1) = v;	/* B8 imm32: mov $imm, %eax */
}

static void smc_same_page(void)
{
	set_imm(smc_func, 1);
	expect_eq("before patching", smc_func(), 1);
	for (u32 i = 2; i < 40 && !case_failed(); i++) {
		expect_eq("patched from its own page, then called", smc_patch_and_call(i), i);
		expect_eq("called again", smc_func(), i);
	}
	set_imm(smc_func, 0x1234);
	expect_eq("patched from another page", smc_func(), 0x1234);
}

static void smc_next_instruction(void)
{
	for (u32 i = 1; i < 40 && !case_failed(); i++)
		expect_eq("immediate of the next instruction patched by the one before", smc_next_insn(i * 7), i * 7);
}

static u32 call_at(u64 va) { return ((u32 (*)(void))va)(); }

static void smc_alias(void)
{
	u64 alias = TEST_VA + 20 * 4096;
	static const u8 code[] = { 0xB8, 0x11, 0, 0, 0, 0xC3 };	/* mov $0x11, %eax; ret */

	memcpy(code_buf, code, sizeof(code));
	map4k(20, (u64)code_buf, PTE_P | PTE_RW);
	expect_eq("generated code", call_at((u64)code_buf), 0x11);
	set_imm((void *)alias, 0x22);
	expect_eq("written through the alias, run at the identity address", call_at((u64)code_buf), 0x22);
	expect_eq("run at the alias", call_at(alias), 0x22);
	set_imm(code_buf, 0x33);
	expect_eq("written at the identity address, run at the alias", call_at(alias), 0x33);
	set_imm((void *)alias, 0x44);
	expect_eq("written through the alias, run at the alias", call_at(alias), 0x44);
	expect_eq("and at the identity address", call_at((u64)code_buf), 0x44);
}

static volatile u32 xmc_stage, xmc_before, xmc_after;

static void xmc_ap(u32 cpu, void *a)
{
	u32 r[4];

	xmc_before = xmc_func();		/* decoded (and cached) now */
	__atomic_store_n(&xmc_stage, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&xmc_stage, __ATOMIC_ACQUIRE) != 2)
		cpu_relax();
	cpuid(0, 0, r);				/* serialize before running the new code */
	xmc_after = xmc_func();
}

/* SDM 8.1.3's protocol for cross-modifying code, 20 rounds per AP: the
 * AP runs the function (so its decoded form is cached), the BSP patches
 * it and raises a flag, the AP sees the flag, serializes and runs it. */
#define XMC_ROUNDS 200

static void smc_cross_modify(void)
{
	if (!need_aps())
		return;
	for (u32 round = 0; round < XMC_ROUNDS && !case_failed(); round++) {
		for (u32 cpu = 1; cpu < ncpus_online && !case_failed(); cpu++) {
			u32 v = 0xC0DE0000 + (round << 8 | cpu);
			set_imm(xmc_func, 1);
			xmc_stage = 0;
			xmc_before = xmc_after = 0;
			post_work(cpu, xmc_ap, NULL);
			if (!wait_for(xmc_stage == 1, 5000)) {
				failf("cpu%u did not run xmc_func", cpu);
				break;
			}
			set_imm(xmc_func, v);
			mb();
			__atomic_store_n(&xmc_stage, 2, __ATOMIC_RELEASE);
			if (!wait_work(cpu, 5000)) {
				failf("cpu%u did not finish", cpu);
				break;
			}
			expect_eq("value before the patch", xmc_before, 1);
			if (xmc_after != v)
				failf("round %u: cpu%u ran the old code after the BSP patched it: want 0x%x, got 0x%x",
				      round, cpu, v, xmc_after);
		}
	}
}

/* The same end state while the AP keeps running the function as the BSP
 * rewrites it 1000 times: whatever the AP saw meanwhile, once it sees the
 * flag and serializes it must run the last version (instruction fetch is
 * coherent with stores on x86). QEMU 7.2's multi-threaded TCG fails this
 * too (a translation can outlive a store that raced with it); with
 * -accel tcg,thread=single it passes. */
static volatile u32 xmc_calls;

static void xmc_spin_ap(u32 cpu, void *a)
{
	u32 r[4];

	__atomic_store_n(&xmc_stage, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&xmc_stage, __ATOMIC_ACQUIRE) != 2) {
		(void)xmc_func();
		xmc_calls++;
	}
	cpuid(0, 0, r);
	xmc_after = xmc_func();
}

static void smc_cross_modify_concurrent(void)
{
	if (!need_aps())
		return;
	for (u32 round = 0; round < XMC_ROUNDS / 10 && !case_failed(); round++) {
		for (u32 cpu = 1; cpu < ncpus_online && !case_failed(); cpu++) {
			set_imm(xmc_func, 1);
			xmc_stage = 0;
			xmc_after = xmc_calls = 0;
			post_work(cpu, xmc_spin_ap, NULL);
			if (!wait_for(xmc_stage == 1 && xmc_calls > 0, 5000)) {
				failf("cpu%u did not run xmc_func", cpu);
				break;
			}
			u32 v = 0;
			for (u32 i = 0; i < 1000; i++) {
				v = 0xD00D0000 + (round << 12) + i;
				set_imm(xmc_func, v);
			}
			mb();
			__atomic_store_n(&xmc_stage, 2, __ATOMIC_RELEASE);
			if (!wait_work(cpu, 5000)) {
				failf("cpu%u did not finish", cpu);
				break;
			}
			if (xmc_after != v)
				failf("round %u: cpu%u ran an old version after the last patch: want 0x%x, got 0x%x",
				      round, cpu, v, xmc_after);
		}
	}
}

/* ---- IPIs ---- */

#define COUNT(cpu, vec) (percpu[cpu].irq_count[vec])

static void ipi_fixed_each_ap(void)
{
	if (!need_aps())
		return;
	irq_enable();
	for (u32 cpu = 1; cpu < ncpus_online; cpu++) {
		u32 ping = COUNT(cpu, VEC_PING), pong = COUNT(0, VEC_PONG);
		lapic_icr(cpu, VEC_PING);
		if (!wait_for(COUNT(0, VEC_PONG) == pong + 1, 2000))
			failf("no reply IPI from cpu%u (it took %u pings)", cpu, COUNT(cpu, VEC_PING) - ping);
		expect_eq("pings taken by the AP", COUNT(cpu, VEC_PING), ping + 1);
	}
	irq_disable();
}

static void ipi_self(void)
{
	u32 n = COUNT(0, VEC_SELF);

	irq_enable();
	lapic_icr(0, 0x40000 | VEC_SELF);			/* shorthand: self */
	expect("self-IPI by shorthand taken", wait_for(COUNT(0, VEC_SELF) == n + 1, 1000));
	lapic_icr(lapic_id(), VEC_SELF);			/* to our own ID */
	expect("IPI to our own APIC ID taken", wait_for(COUNT(0, VEC_SELF) == n + 2, 1000));
	irq_disable();
	expect_eq("self-IPIs taken", COUNT(0, VEC_SELF), n + 2);
}

static void ipi_broadcast(void)
{
	u32 before[MAX_CPUS];

	if (!need_aps())
		return;
	for (u32 cpu = 0; cpu < ncpus_online; cpu++)
		before[cpu] = COUNT(cpu, VEC_BCAST);
	irq_enable();
	lapic_icr(0, 0xC0000 | VEC_BCAST);			/* all excluding self */
	for (u32 cpu = 1; cpu < ncpus_online; cpu++)
		if (!wait_for(COUNT(cpu, VEC_BCAST) == before[cpu] + 1, 2000))
			failf("all-excluding-self: cpu%u took %u", cpu, COUNT(cpu, VEC_BCAST) - before[cpu]);
	delay_ms(5);
	expect_eq("all-excluding-self reached the sender", COUNT(0, VEC_BCAST), before[0]);
	lapic_icr(0, 0x80000 | VEC_BCAST);			/* all including self */
	for (u32 cpu = 0; cpu < ncpus_online; cpu++)
		if (!wait_for(COUNT(cpu, VEC_BCAST) == before[cpu] + 1 + (cpu != 0), 2000))
			failf("all-including-self: cpu%u took %u", cpu, COUNT(cpu, VEC_BCAST) - before[cpu]);
	irq_disable();
}

static void ipi_nmi(void)
{
	if (!need_aps())
		return;
	for (u32 cpu = 1; cpu < ncpus_online; cpu++) {
		u32 n = COUNT(cpu, 2);
		lapic_icr(cpu, 0x400);				/* delivery mode NMI */
		if (!wait_for(COUNT(cpu, 2) == n + 1, 2000))
			failf("NMI IPI: cpu%u took %u NMIs", cpu, COUNT(cpu, 2) - n);
	}
}

const struct conf_case smp_cases[] = {
	CASE("smp-sipi-all-aps", smp_sipi_all_aps),
	CASE("smp-lock-add", smp_lock_add),
	CASE("smp-lock-xadd", smp_lock_xadd),
	CASE("smp-lock-cmpxchg", smp_lock_cmpxchg),
	CASE("smp-lock-narrow-split", smp_lock_narrow_split),
	CASE("smp-xchg-spinlock", smp_xchg_spinlock),
	CASE("smc-same-page", smc_same_page),
	CASE("smc-next-instruction", smc_next_instruction),
	CASE("smc-alias", smc_alias),
	CASE("smc-cross-modify", smc_cross_modify),
	CASE("smc-cross-modify-concurrent", smc_cross_modify_concurrent),
	CASE("ipi-fixed-each-ap", ipi_fixed_each_ap),
	CASE("ipi-self", ipi_self),
	CASE("ipi-broadcast", ipi_broadcast),
	CASE("ipi-nmi", ipi_nmi),
	{ 0, 0 },
};
