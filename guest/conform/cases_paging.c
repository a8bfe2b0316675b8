/*
 * cases_paging.c - paging: page sizes in every paging mode, permissions and
 * the #PF error code and CR2, accessed/dirty bits, TLB invalidation.
 *
 * The test region is PML4[1] (TEST_VA, 512 GiB up): tpdpt[0] -> tpd,
 * tpd[0] -> tpt (4 KiB slots), tpd[1] a 2 MiB page, tpdpt[1] a 1 GiB page.
 * Its upper levels allow everything (RW, US); each case sets the leaf.
 * Targets are scratch pages at SCRATCH (32 MiB), identity-mapped as well,
 * so a case can look at the same bytes both ways.
 */
#include "conform.h"

static u64 tpdpt[512] __aligned(4096);
static u64 tpd[512] __aligned(4096);
static u64 tpt[512] __aligned(4096);
u32 pd32[1024] __aligned(4096);
u64 pae_pdpt[4] __aligned(32);
u64 pae_pd[512] __aligned(4096);

#define SPAGE(n) (SCRATCH + (u64)(n) * 4096)	/* 4 KiB scratch pages 0..255 */
#define SCRATCH_2M (SCRATCH + 2 * MiB)		/* long-mode 2 MiB page */
#define SCRATCH_4M (SCRATCH + 4 * MiB)		/* 32-bit 4 MiB page */
#define SCRATCH_PAE (SCRATCH + 8 * MiB)		/* PAE 2 MiB page */
#define VA(slot) (TEST_VA + (u64)(slot) * 4096)
#define VA_2M (TEST_VA + 2 * MiB)
#define VA_1G (TEST_VA + 1 * GiB)

#define PF_P	0x1
#define PF_W	0x2
#define PF_U	0x4
#define PF_RSVD	0x8
#define PF_ID	0x10

SNIP(snip_read);
SNIP(snip_write);
extern volatile u32 r_paged_read;	/* modes.S: what the paged 32-bit code read back */

void paging_reset(void)
{
	memset(tpdpt, 0, sizeof(tpdpt));
	memset(tpd, 0, sizeof(tpd));
	memset(tpt, 0, sizeof(tpt));
	tpdpt[0] = (u64)tpd | PTE_P | PTE_RW | PTE_US;
	tpd[0] = (u64)tpt | PTE_P | PTE_RW | PTE_US;
	id_pml4[1] = (u64)tpdpt | PTE_P | PTE_RW | PTE_US;
	write_cr3(read_cr3());
}

void map4k(u32 slot, u64 phys, u64 flags)
{
	tpt[slot] = phys | flags;
	invlpg(VA(slot));
}

/* Accesses through the test mappings; the barriers make the compiler
 * re-read page-table entries the CPU may have updated. */
static u64 peek(u64 a)
{
	barrier();
	u64 v = *(volatile u64 *)a;
	barrier();
	return v;
}

static void poke(u64 a, u64 v)
{
	barrier();
	*(volatile u64 *)a = v;
	barrier();
}

/* ---- page sizes ---- */

static void paging_4k(void)
{
	poke(SPAGE(0), 0x1111);
	poke(SPAGE(0) + 4088, 0x1112);
	map4k(0, SPAGE(0), PTE_P | PTE_RW);
	map4k(1, SPAGE(0), PTE_P | PTE_RW);	/* an alias */
	expect_eq("read through the 4 KiB page", peek(VA(0)), 0x1111);
	expect_eq("read at the end of the 4 KiB page", peek(VA(0) + 4088), 0x1112);
	poke(VA(0) + 8, 0x2222);
	expect_eq("write through it, read physical", peek(SPAGE(0) + 8), 0x2222);
	expect_eq("read through the alias", peek(VA(1) + 8), 0x2222);
}

static void paging_2m(void)
{
	poke(SCRATCH_2M + 0x1ABCD8, 0x3333);
	tpd[1] = SCRATCH_2M | PTE_P | PTE_RW | PTE_PS;
	invlpg(VA_2M);
	expect_eq("read through the 2 MiB page", peek(VA_2M + 0x1ABCD8), 0x3333);
	poke(VA_2M + 0x10, 0x4444);
	expect_eq("write through it, read physical", peek(SCRATCH_2M + 0x10), 0x4444);
}

static u64 one_gig_target = 0x5555;

static void paging_1g(void)
{
	u32 r[4];

	cpuid(0x80000001, 0, r);
	if (!(r[3] & (1u << 26))) {
		failf("CPUID.80000001h:EDX[26] (1 GiB pages) not advertised");
		return;
	}
	tpdpt[1] = 0 | PTE_P | PTE_RW | PTE_PS;
	invlpg(VA_1G);
	u64 va = VA_1G + (u64)&one_gig_target;
	expect_eq("read through the 1 GiB page", peek(va), 0x5555);
	poke(va, 0x6666);
	expect_eq("write through it, read the variable", one_gig_target, 0x6666);
	expect("1 GiB PDPTE accessed and dirty", (tpdpt[1] & (PTE_A | PTE_D)) == (PTE_A | PTE_D));
}

static void paging_accessed_dirty(void)
{
	map4k(2, SPAGE(2), PTE_P | PTE_RW);
	id_pml4[1] &= ~PTE_A;
	tpdpt[0] &= ~PTE_A;
	tpd[0] &= ~PTE_A;
	write_cr3(read_cr3());
	(void)peek(VA(2));
	expect("PTE accessed after a read", tpt[2] & PTE_A);
	expect("PTE not dirty after a read", !(tpt[2] & PTE_D));
	expect("PDE accessed", tpd[0] & PTE_A);
	expect("PDPTE accessed", tpdpt[0] & PTE_A);
	expect("PML4E accessed", id_pml4[1] & PTE_A);
	poke(VA(2), 1);
	expect("PTE dirty after a write", tpt[2] & PTE_D);

	tpd[1] = SCRATCH_2M | PTE_P | PTE_RW | PTE_PS;
	invlpg(VA_2M);
	(void)peek(VA_2M);
	expect("2 MiB PDE accessed, not dirty, after a read", (tpd[1] & (PTE_A | PTE_D)) == PTE_A);
	poke(VA_2M, 1);
	expect("2 MiB PDE dirty after a write", tpd[1] & PTE_D);
}

static void paging_pse_4m(void)
{
	for (u32 i = 0; i < 16; i++)		/* identity: 0-64 MiB in 4 MiB pages */
		pd32[i] = i << 22 | 0x83;
	pd32[0x300] = SCRATCH_4M | 0x83;	/* 0xC0000000 */
	poke(SCRATCH_4M + 0x1230, 0);
	u32 st = legacy_trip(LEG_PSE, 0xC0FFEE04);
	if (st) {
		failf("fault in 32-bit paging, status %u", st);
		return;
	}
	expect_eq("read back through the 4 MiB page", *(volatile u32 *)LOW(&r_paged_read), 0xC0FFEE04);
	expect_eq("physical bytes written through the 4 MiB page", *(volatile u32 *)(SCRATCH_4M + 0x1234), 0xC0FFEE04);
	expect("4 MiB PDE accessed and dirty", (pd32[0x300] & 0x60) == 0x60);
}

static void paging_pae_2m(void)
{
	pae_pdpt[0] = (u64)id_pd | PTE_P;	/* 0-1 GiB: the long-mode identity PD */
	pae_pdpt[1] = pae_pdpt[2] = 0;
	pae_pdpt[3] = (u64)pae_pd | PTE_P;
	memset(pae_pd, 0, sizeof(pae_pd));
	pae_pd[0] = SCRATCH_PAE | PTE_P | PTE_RW | PTE_PS;	/* 0xC0000000 */
	u32 st = legacy_trip(LEG_PAE, 0xC0FFEE02);
	if (st) {
		failf("fault in PAE paging, status %u", st);
		return;
	}
	expect_eq("read back through the 2 MiB PAE page", *(volatile u32 *)LOW(&r_paged_read), 0xC0FFEE02);
	expect_eq("physical bytes written through it", *(volatile u32 *)(SCRATCH_PAE + 0x5678), 0xC0FFEE02);
	expect("PAE 2 MiB PDE accessed and dirty", (pae_pd[0] & 0x60) == 0x60);
}

/* ---- #PF ---- */

static void pf_expect(const char *what, long got, struct trap *t, u64 err, u64 va, u64 rip)
{
	expect_trap(what, got, t, 14, (long)err, rip);
	if (got == 14 && t->cr2 != va)
		failf("%s: CR2 want 0x%lx, got 0x%lx", what, va, t->cr2);
}

static void pf_not_present(void)
{
	struct trap t;
	u64 va = VA(3) + 0x18;

	map4k(3, 0, 0);
	pf_expect("read", run_guarded(snip_read, (void *)va, &t), &t, 0, va, IP(snip_read_insn));
	pf_expect("write", run_guarded(snip_write, (void *)va, &t), &t, PF_W, va, IP(snip_write_insn));
	pf_expect("user read", run_user(snip_read, (void *)va, 0, &t), &t, PF_U, va, IP(snip_read_insn));
	pf_expect("user write", run_user(snip_write, (void *)va, 0, &t), &t, PF_U | PF_W, va, IP(snip_write_insn));
	/* present at the PDE level only: not present at the PTE */
	tpd[2] = 0;
	pf_expect("read, PDE not present", run_guarded(snip_read, (void *)(TEST_VA + 4 * MiB), &t), &t,
		  0, TEST_VA + 4 * MiB, IP(snip_read_insn));
}

static void pf_write_protect_wp1(void)
{
	struct trap t;
	u64 va = VA(4) + 0x20;

	write_cr0(read_cr0() | CR0_WP);
	map4k(4, SPAGE(4), PTE_P);
	expect_eq("read of a read-only page", run_guarded(snip_read, (void *)va, &t), NO_TRAP);
	pf_expect("CPL 0 write, CR0.WP = 1", run_guarded(snip_write, (void *)va, &t), &t, PF_P | PF_W, va,
		  IP(snip_write_insn));
}

static void pf_write_protect_wp0(void)
{
	struct trap t;
	u64 va = VA(4) + 0x28;

	poke(SPAGE(4) + 0x28, 0);
	write_cr0(read_cr0() & ~CR0_WP);
	map4k(4, SPAGE(4), PTE_P);
	long v = run_guarded(snip_write, (void *)va, &t);
	write_cr0(read_cr0() | CR0_WP);
	expect_trap("CPL 0 write, CR0.WP = 0", v, &t, NO_TRAP, -1, 0);
	expect_eq("the write landed", peek(SPAGE(4) + 0x28), 0x5a5a);
	expect("and set the dirty bit", tpt[4] & PTE_D);
}

static void pf_user_supervisor(void)
{
	struct trap t;
	u64 va = VA(5) + 0x30;

	map4k(5, SPAGE(5), PTE_P | PTE_RW);
	expect_eq("CPL 0 read of a supervisor page", run_guarded(snip_read, (void *)va, &t), NO_TRAP);
	pf_expect("user read", run_user(snip_read, (void *)va, 0, &t), &t, PF_P | PF_U, va, IP(snip_read_insn));
	pf_expect("user write", run_user(snip_write, (void *)va, 0, &t), &t, PF_P | PF_U | PF_W, va,
		  IP(snip_write_insn));
}

static void pf_user_readonly(void)
{
	struct trap t;
	u64 va = VA(6) + 0x38;

	map4k(6, SPAGE(6), PTE_P | PTE_US);
	expect_eq("user read of a read-only user page", run_user(snip_read, (void *)va, 0, &t), NO_TRAP);
	pf_expect("user write", run_user(snip_write, (void *)va, 0, &t), &t, PF_P | PF_U | PF_W, va,
		  IP(snip_write_insn));
}

static void pf_nx_fetch(void)
{
	struct trap t;
	u64 va = VA(7) + 0x40;

	expect("EFER.NXE set", rdmsr(MSR_EFER) & (1UL << 11));
	*(volatile u8 *)(SPAGE(7) + 0x40) = 0xC3;	/* ret */
	map4k(7, SPAGE(7), PTE_P | PTE_RW);
	expect_eq("fetch from an executable page", run_guarded((void (*)(void *))va, NULL, &t), NO_TRAP);
	map4k(7, SPAGE(7), PTE_P | PTE_RW | PTE_NX);
	pf_expect("fetch from an NX page", run_guarded((void (*)(void *))va, NULL, &t), &t, PF_P | PF_ID, va, va);
	expect_eq("read of the NX page", run_guarded(snip_read, (void *)va, &t), NO_TRAP);
	map4k(7, 0, 0);
	pf_expect("fetch from a not-present page", run_guarded((void (*)(void *))va, NULL, &t), &t, PF_ID, va, va);
}

static void pf_reserved_bit(void)
{
	struct trap t;
	u32 r[4];
	u64 va = VA(8) + 0x48;

	cpuid(0x80000008, 0, r);
	u32 bits = r[0] & 0xFF;
	if (bits >= 52) {
		failf("MAXPHYADDR %u leaves no reserved address bit", bits);
		return;
	}
	char rd[48], wr[48];
	snprintf(rd, sizeof(rd), "read, PTE bit %u (MAXPHYADDR) set", bits);
	snprintf(wr, sizeof(wr), "write, PTE bit %u (MAXPHYADDR) set", bits);
	map4k(8, SPAGE(8) | 1UL << bits, PTE_P | PTE_RW);
	pf_expect(rd, run_guarded(snip_read, (void *)va, &t), &t, PF_P | PF_RSVD, va, IP(snip_read_insn));
	pf_expect(wr, run_guarded(snip_write, (void *)va, &t), &t, PF_P | PF_RSVD | PF_W, va, IP(snip_write_insn));
}

/* ---- TLB ---- */

static void tlb_setup(u32 slot)
{
	poke(SPAGE(10), 0xAAAA);
	poke(SPAGE(11), 0xBBBB);
	map4k(slot, SPAGE(10), PTE_P | PTE_RW);
	(void)peek(VA(slot));			/* now in the TLB */
	tpt[slot] = SPAGE(11) | PTE_P | PTE_RW;	/* not yet invalidated */
}

static void tlb_invlpg(void)
{
	tlb_setup(9);
	invlpg(VA(9));
	expect_eq("read after invlpg sees the new mapping", peek(VA(9)), 0xBBBB);
}

static void tlb_cr3_reload(void)
{
	tlb_setup(9);
	write_cr3(read_cr3());
	expect_eq("read after a CR3 write sees the new mapping", peek(VA(9)), 0xBBBB);
}

static void tlb_global_survives_cr3(void)
{
	write_cr4(read_cr4() | CR4_PGE);
	poke(SPAGE(10), 0xAAAA);
	poke(SPAGE(11), 0xBBBB);
	map4k(9, SPAGE(10), PTE_P | PTE_RW | PTE_G);
	(void)peek(VA(9));
	tpt[9] = SPAGE(11) | PTE_P | PTE_RW | PTE_G;
	write_cr3(read_cr3());
	/* Architecturally a TLB may drop any entry at any time; Godwit's
	 * software TLB keeps global entries across CR3 writes (internal/emu/cpu),
	 * which is what this checks. */
	expect_eq("global entry kept across a CR3 write", peek(VA(9)), 0xAAAA);
	write_cr4(read_cr4() & ~CR4_PGE);
	write_cr4(read_cr4() | CR4_PGE);
	expect_eq("global entry dropped by toggling CR4.PGE", peek(VA(9)), 0xBBBB);
}

static void tlb_pge_toggle(void)
{
	write_cr4(read_cr4() | CR4_PGE);
	poke(SPAGE(10), 0xAAAA);
	poke(SPAGE(11), 0xBBBB);
	map4k(9, SPAGE(10), PTE_P | PTE_RW | PTE_G);
	(void)peek(VA(9));
	tpt[9] = SPAGE(11) | PTE_P | PTE_RW | PTE_G;
	write_cr4(read_cr4() & ~CR4_PGE);
	expect_eq("global entry dropped by clearing CR4.PGE", peek(VA(9)), 0xBBBB);
	tpt[9] = SPAGE(10) | PTE_P | PTE_RW | PTE_G;
	invlpg(VA(9));
	expect_eq("global entry dropped by invlpg", peek(VA(9)), 0xAAAA);
}

const struct conf_case paging_cases[] = {
	CASE("paging-4k", paging_4k),
	CASE("paging-2m", paging_2m),
	CASE("paging-1g", paging_1g),
	CASE("paging-accessed-dirty", paging_accessed_dirty),
	CASE("paging-32bit-pse-4m", paging_pse_4m),
	CASE("paging-pae-2m", paging_pae_2m),
	CASE("pf-not-present", pf_not_present),
	CASE("pf-write-protect-wp1", pf_write_protect_wp1),
	CASE("pf-write-protect-wp0", pf_write_protect_wp0),
	CASE("pf-user-supervisor", pf_user_supervisor),
	CASE("pf-user-readonly", pf_user_readonly),
	CASE("pf-nx-fetch", pf_nx_fetch),
	CASE("pf-reserved-bit", pf_reserved_bit),
	CASE("tlb-invlpg", tlb_invlpg),
	CASE("tlb-cr3-reload", tlb_cr3_reload),
	CASE("tlb-global-survives-cr3", tlb_global_survives_cr3),
	CASE("tlb-pge-toggle-flushes", tlb_pge_toggle),
	{ 0, 0 },
};
