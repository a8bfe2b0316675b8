/*
 * workload.c - dirty a working set of guest RAM at a given rate, with
 * content the guest can recompute, and verify it.
 *
 * Buffer: guest-physical RAM from 16 MiB upwards, following the memory map
 * (so it skips the 3-4 GiB hole and continues above 4 GiB). Buffer page n
 * (n = 0, 1, ...) is the n-th 4 KiB page of that RAM.
 *
 * "W alloc wset rate": pages [0, wset) are rewritten in sweeps 1, 2, 3...;
 * pages [wset, alloc) are stamped once ("generation 0") before the ACK.
 * A page at guest-physical address gpa holding generation g of run r has
 *     S = mix64((r << 32) + g) ^ ((gpa >> 12) * 0x9E3779B97F4A7C15)
 * in its first 8 bytes and ~S in its last 8 bytes (offset 4088). r counts
 * W commands since boot, so a page left over from an earlier W never
 * matches. An all-zero page never matches (S and ~S cannot both be 0).
 *
 * The sweep position (gen, idx) determines every page's expected
 * generation: pages below idx hold gen, the rest of the working set
 * gen - 1 (0 = not yet written in the first sweep: not checked).
 */
#include "workload.h"
#include "apic.h"
#include "boot.h"
#include "console.h"
#include "lib.h"

#define BUF_START	(16 * MiB)
#define PFN_MUL		0x9E3779B97F4A7C15UL
#define BATCH		64
#define MAX_REGIONS	8

struct region {
	u64 base;		/* physical address */
	u64 first;		/* buffer index of its first page */
	u64 pages;
};

static struct region regions[MAX_REGIONS];
static int nregions;
static u64 buffer_pages;

static struct {
	u64 alloc_mib, wset_mib, rate;	/* effective (clamped) values */
	u64 alloc, wset;		/* pages */
	u64 run;			/* W commands so far */
	u64 gen;			/* current sweep, from 1 */
	u64 idx;			/* next page of the sweep */
	u64 key;			/* mix64((run << 32) + gen) */
	bool active, paused, filled;
	u64 rate_t0, rate_n0;		/* rate-limit baseline (TSC, dirtied) */
} wl;

static volatile u64 dirtied;		/* pages written since the last W */

static u64 gen_key(u64 gen)
{
	return mix64((wl.run << 32) + gen);
}

void workload_init(void)
{
	u64 limit = boot.mapped_top;

	for (int i = 0; i < boot.nram && nregions < MAX_REGIONS; i++) {
		u64 start = ALIGN_UP(MAX(boot.ram[i].base, BUF_START), PAGE_SIZE);
		u64 end = MIN(boot.ram[i].base + boot.ram[i].len, limit) & ~(PAGE_SIZE - 1);
		if (end <= start)
			continue;
		regions[nregions].base = start;
		regions[nregions].first = buffer_pages;
		regions[nregions].pages = (end - start) / PAGE_SIZE;
		buffer_pages += regions[nregions].pages;
		nregions++;
	}
}

u64 workload_buffer_mib(void)
{
	return buffer_pages / 256;
}

u64 workload_dirtied(void)
{
	return dirtied;
}

void workload_describe(char *buf, size_t size)
{
	snprintf(buf, size, "%lu,%lu,%lu", wl.alloc_mib, wl.wset_mib, wl.rate);
}

static const struct region *region_of(u64 idx)
{
	for (int i = nregions - 1; i > 0; i--)
		if (idx >= regions[i].first)
			return &regions[i];
	return &regions[0];
}

/* Stamp pages [idx, idx + n) with key; they must not cross the end of
 * their range but may cross regions. */
static void stamp_pages(u64 idx, u64 n, u64 key)
{
	while (n) {
		const struct region *r = region_of(idx);
		u64 run = MIN(n, r->first + r->pages - idx);
		u64 addr = r->base + (idx - r->first) * PAGE_SIZE;
		u64 m = (addr >> 12) * PFN_MUL;
		for (u64 i = 0; i < run; i++) {
			u64 s = key ^ m;
			*(volatile u64 *)addr = s;
			*(volatile u64 *)(addr + PAGE_SIZE - 8) = ~s;
			addr += PAGE_SIZE;
			m += PFN_MUL;
		}
		idx += run;
		n -= run;
	}
}

struct vresult {
	u64 checked, bad;
	u64 first_gpa, want, got;
};

static void check_pages(u64 idx, u64 n, u64 key, struct vresult *v)
{
	while (n) {
		const struct region *r = region_of(idx);
		u64 run = MIN(n, r->first + r->pages - idx);
		u64 addr = r->base + (idx - r->first) * PAGE_SIZE;
		u64 m = (addr >> 12) * PFN_MUL;
		for (u64 i = 0; i < run; i++) {
			u64 s = key ^ m;
			u64 a = *(volatile u64 *)addr;
			u64 b = *(volatile u64 *)(addr + PAGE_SIZE - 8);
			if (a != s || b != ~s) {
				if (!v->bad) {
					v->first_gpa = addr;
					v->want = a != s ? s : ~s;
					v->got = a != s ? a : b;
				}
				v->bad++;
			}
			addr += PAGE_SIZE;
			m += PFN_MUL;
		}
		v->checked += run;
		idx += run;
		n -= run;
	}
}

static void rate_rebase(void)
{
	wl.rate_t0 = rdtsc();
	wl.rate_n0 = dirtied;
}

void cmd_w(const char *args)
{
	u64 a, w, r;

	if (!parse_u64(&args, &a) || !parse_u64(&args, &w) || !parse_u64(&args, &r)) {
		kprintf("ERR bad arguments W\n");
		return;
	}
	u64 t0 = rdtsc();
	u64 avail = workload_buffer_mib();
	u64 alloc = a, wset = MIN(w, a);
	if (alloc > avail) {
		alloc = avail;
		wset = MIN(wset, alloc);
		kprintf("WARN W clamped to alloc=%lu wset=%lu: buffer RAM is %lu MiB\n", alloc, wset, avail);
	}

	wl.active = false;
	wl.run++;
	wl.alloc_mib = alloc;
	wl.wset_mib = wset;
	wl.rate = r;
	wl.alloc = alloc * 256;
	wl.wset = wset * 256;
	wl.gen = 1;
	wl.idx = 0;
	wl.key = gen_key(1);
	wl.paused = false;
	dirtied = 0;

	/* pages beyond the working set: stamped once, generation 0 */
	wl.filled = false;
	if (wl.alloc > wl.wset) {
		stamp_pages(wl.wset, wl.alloc - wl.wset, gen_key(0));
		wl.filled = true;
	}
	wl.active = wl.wset > 0;
	rate_rebase();
	kprintf("ACK W %lu %lu %lu %lu\n", a, w, r, tsc_to_ms(rdtsc() - t0));
}

void workload_pause(bool pause)
{
	wl.paused = pause;
	if (!pause)
		rate_rebase();
}

bool workload_step(void)
{
	if (!wl.active || wl.paused)
		return false;

	u64 n = BATCH;
	if (wl.rate) {
		u64 now = rdtsc();
		u64 allowed = tsc_to_ms(now - wl.rate_t0) * wl.rate / 1000;
		u64 done = dirtied - wl.rate_n0;
		if (done >= allowed)
			return false;
		n = MIN(n, allowed - done);
		/* far behind (verify, a paused VM...): do not burst to catch up */
		if (allowed - done > wl.rate / 5 + BATCH)
			rate_rebase();
	}
	n = MIN(n, wl.wset - wl.idx);
	stamp_pages(wl.idx, n, wl.key);
	wl.idx += n;
	dirtied += n;
	if (wl.idx == wl.wset) {
		wl.idx = 0;
		wl.gen++;
		wl.key = gen_key(wl.gen);
	}
	return true;
}

void cmd_verify(void)
{
	struct vresult v = { 0 };
	u64 t0 = rdtsc();

	/* runs in the main loop, so the workload is paused meanwhile */
	if (wl.wset) {
		check_pages(0, wl.idx, wl.key, &v);		/* current sweep */
		if (wl.gen > 1)					/* previous sweep */
			check_pages(wl.idx, wl.wset - wl.idx, gen_key(wl.gen - 1), &v);
	}
	if (wl.filled)
		check_pages(wl.wset, wl.alloc - wl.wset, gen_key(0), &v);
	rate_rebase();

	kprintf("INFO verify checked=%lu bad=%lu ms=%lu\n", v.checked, v.bad, tsc_to_ms(rdtsc() - t0));
	if (v.bad)
		kprintf("VERIFY FAIL %lu first=0x%lx want=0x%016lx got=0x%016lx\n",
			v.bad, v.first_gpa, v.want, v.got);
	else
		kprintf("VERIFY OK %lu\n", v.checked);
}

void cmd_poke(const char *args)
{
	u64 gpa;

	if (!parse_u64(&args, &gpa)) {
		kprintf("ERR bad arguments POKE\n");
		return;
	}
	gpa &= ~(PAGE_SIZE - 1);
	bool ok = false;
	for (int i = 0; i < nregions; i++)
		if (gpa >= regions[i].base && gpa < regions[i].base + regions[i].pages * PAGE_SIZE)
			ok = true;
	if (!ok) {
		kprintf("ERR POKE 0x%lx outside the workload buffer\n", gpa);
		return;
	}
	volatile u64 *p = (volatile u64 *)gpa;
	u64 old = *p;
	*p = old ^ 1;
	kprintf("POKE 0x%lx old=0x%016lx new=0x%016lx\n", gpa, old, old ^ 1);
}
