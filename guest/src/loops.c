/*
 * loops.c - fixed instruction loops for measuring a CPU (the LOOP command).
 *
 * Each kind is a hand-written loop whose body retires exactly LOOP_INSNS
 * instructions per iteration, loop control included, so that
 * iterations x LOOP_INSNS / time is the rate at which the (virtual) CPU
 * retires guest instructions:
 *
 *   int  register arithmetic and logic: add, sub, xor, and, or, shl, shr,
 *        imul, lea, inc, test, mov (dependency chains as compilers emit)
 *   mem  loads, stores and read-modify-writes on a 4 KiB buffer of the
 *        CPU's own, which stays in every TLB and cache
 *   br   conditional branches taken and not taken, a call and a ret
 *
 * `LOOP <kind> <iterations>` runs the loop on every online CPU at once (the
 * APs pick the job up at their next timer tick) and replies
 * `LOOP <kind> iters=<n> insns=<per CPU> cpus=<k> us=<longest CPU's time>
 * per_cpu_us=<cpu0>,<cpu1>,...` (microseconds by the TSC). Heartbeats keep
 * coming meanwhile: the loops run with interrupts open.
 */
#include "apic.h"
#include "console.h"
#include "lib.h"
#include "smp.h"
#include "loops.h"

#define LOOP_INSNS 16

static u64 loop_buf[MAX_CPUS][512] __attribute__((aligned(4096)));

static void loop_int(u64 n)
{
	u64 a = 1, b = 2, c = 3;

	/* 14 + dec + jnz = 16 */
	__asm__ __volatile__(
		"1:\n\t"
		"add %[b], %[a]\n\t"
		"xor %[a], %[c]\n\t"
		"sub %[c], %[b]\n\t"
		"shl $3, %[a]\n\t"
		"or %[b], %[a]\n\t"
		"and %[a], %[c]\n\t"
		"imul %[c], %[b]\n\t"
		"shr $1, %[c]\n\t"
		"lea 7(%[a],%[b],2), %[c]\n\t"
		"inc %[b]\n\t"
		"mov %[c], %[a]\n\t"
		"test %[b], %[c]\n\t"
		"add $13, %[a]\n\t"
		"xor %[b], %[b]\n\t"
		"dec %[n]\n\t"
		"jnz 1b\n\t"
		: [a] "+r"(a), [b] "+r"(b), [c] "+r"(c), [n] "+r"(n)
		:
		: "cc");
}

static void loop_mem(u64 n)
{
	u64 *p = loop_buf[this_cpu()];
	u64 t = 0;

	/* 14 + dec + jnz = 16 */
	__asm__ __volatile__(
		"1:\n\t"
		"mov (%[p]), %[t]\n\t"
		"add %[t], 8(%[p])\n\t"
		"mov 16(%[p]), %[t]\n\t"
		"mov %[t], 24(%[p])\n\t"
		"addq $1, 32(%[p])\n\t"
		"mov %[n], 40(%[p])\n\t"
		"xor 48(%[p]), %[t]\n\t"
		"mov %[t], 2048(%[p])\n\t"
		"push %[t]\n\t"
		"pop %[t]\n\t"
		"mov 4088(%[p]), %[t]\n\t"
		"and %[t], 56(%[p])\n\t"
		"movl %k[t], 64(%[p])\n\t"
		"movzbl 72(%[p]), %k[t]\n\t"
		"dec %[n]\n\t"
		"jnz 1b\n\t"
		: [t] "+r"(t), [n] "+r"(n)
		: [p] "r"(p)
		: "cc", "memory");
}

static void loop_br(u64 n)
{
	u64 x = 0;

	/* 14 + dec + jnz = 16: per iteration 7 conditional branches (jz taken
	 * every other time, jnz twice taken, je, jl and jb never), a jmp, a
	 * call and its ret. */
	__asm__ __volatile__(
		"jmp 1f\n"
		"9:\n\t"
		"inc %[x]\n\t"
		"ret\n"
		"1:\n\t"
		"test $1, %[x]\n\t"
		"jz 2f\n\t"		/* taken or not by turns (x changes by 1) */
		"2:\n\t"
		"cmp %[x], %[n]\n\t"
		"je 3f\n\t"		/* not taken */
		"3:\n\t"
		"call 9b\n\t"		/* call, inc, ret */
		"test %[x], %[x]\n\t"
		"jnz 4f\n\t"		/* taken */
		"4:\n\t"
		"jmp 5f\n"		/* taken */
		"5:\n\t"
		"cmp $0, %[n]\n\t"
		"jl 6f\n\t"		/* not taken */
		"6:\n\t"
		"jb 7f\n\t"		/* not taken (CF clear) */
		"7:\n\t"
		"nop\n\t"
		"dec %[n]\n\t"
		"jnz 1b\n\t"
		: [x] "+r"(x), [n] "+r"(n)
		:
		: "cc", "memory");
}

static const struct {
	const char *name;
	void (*fn)(u64);
} kinds[] = {
	{ "int", loop_int },
	{ "mem", loop_mem },
	{ "br", loop_br },
};

/* The job the BSP posts; APs run it from their idle loop. */
static struct {
	volatile u64 gen;	/* bumped for each job */
	volatile int kind;
	volatile u64 iters;
	volatile u64 us[MAX_CPUS];
	volatile u32 done;	/* CPUs finished with the current gen */
} job;

static void run_kind(u32 cpu)
{
	u64 t0 = rdtsc();
	kinds[job.kind].fn(job.iters);
	job.us[cpu] = tsc_to_us(rdtsc() - t0);
	__atomic_add_fetch(&job.done, 1, __ATOMIC_RELEASE);
}

void loops_ap_poll(u64 *seen)
{
	u64 gen = __atomic_load_n(&job.gen, __ATOMIC_ACQUIRE);

	if (gen == *seen)
		return;
	*seen = gen;
	run_kind(this_cpu());
}

/* parse_word copies the next blank-separated word of *p into buf. */
static bool parse_word(const char **p, char *buf, u64 size)
{
	const char *s = *p;
	u64 n = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	while (*s && *s != ' ' && *s != '\t') {
		if (n + 1 >= size)
			return false;
		buf[n++] = *s++;
	}
	buf[n] = '\0';
	*p = s;
	return n > 0;
}

void cmd_loop(const char *args)
{
	char name[8];
	u64 iters;
	int k = -1;

	if (!parse_word(&args, name, sizeof(name)) || !parse_u64(&args, &iters) || iters == 0) {
		kprintf("ERR bad arguments LOOP\n");
		return;
	}
	for (u32 i = 0; i < ARRAY_SIZE(kinds); i++)
		if (!strcasecmp(name, kinds[i].name))
			k = (int)i;
	if (k < 0) {
		kprintf("ERR bad arguments LOOP: kinds are int, mem, br\n");
		return;
	}
	u32 ncpu = ncpus_online;
	job.kind = k;
	job.iters = iters;
	job.done = 0;
	__atomic_add_fetch(&job.gen, 1, __ATOMIC_RELEASE);
	run_kind(0);
	while (__atomic_load_n(&job.done, __ATOMIC_ACQUIRE) < ncpu)
		safe_halt();	/* woken by the heartbeat tick */

	u64 max = 0;
	for (u32 i = 0; i < ncpu; i++)
		max = MAX(max, job.us[i]);
	/* One kprintf, so that no heartbeat lands inside the line. */
	char per[MAX_CPUS * 21];
	int n = 0;
	for (u32 i = 0; i < ncpu; i++)
		n += snprintf(per + n, sizeof(per) - (size_t)n, i ? ",%lu" : "%lu", job.us[i]);
	kprintf("LOOP %s iters=%lu insns=%lu cpus=%u us=%lu per_cpu_us=%s\n", kinds[k].name, iters,
		iters * LOOP_INSNS, ncpu, max, per);
}
