/*
 * cases_modes.c - mode switches: compatibility mode under long mode, and
 * long mode -> 32-bit protected mode -> 16-bit protected mode -> real mode
 * and back (modes.S). Each stage computes something that only comes out
 * right in that mode (0x40 is INC EAX outside 64-bit mode, the push width,
 * 16-bit wrap-around, real-mode segment arithmetic, IVT delivery).
 */
#include "conform.h"

extern u8 compat_compute[];
extern volatile u32 leg_fault_vec, leg_fault_err, leg_fault_eip;
extern volatile u32 r_pm32_cr0, r_pm32_efer, r_pm32_val, r_pm32_push;
extern volatile u32 r_pm16_cr0, r_real_cr0, r_paged_read;
extern volatile u16 r_pm16_cs, r_pm16_val, r_pm16_flags, r_pm16_push;
extern volatile u16 r_real_seg, r_real_int30, r_real_de, r_real_push, r_magic;

#define LOW32(sym) (*(volatile u32 *)LOW(&(sym)))
#define LOW16(sym) (*(volatile u16 *)LOW(&(sym)))

static void check_long_mode_again(void)
{
	expect_eq("CS back in 64-bit mode", read_cs(), SEL_KCODE64);
	expect("EFER.LMA set again", rdmsr(MSR_EFER) & (1UL << 10));
	expect("CR0.PG set again", read_cr0() & (1UL << 31));
}

static void mode_compat_roundtrip(void)
{
	u32 out[4] = { 0, 0, 0, 0 };

	compat_call(compat_compute, out);
	expect_eq("CS in compatibility mode", out[0] & 0xFFFF, SEL_KCODE32);
	expect_eq("0x7ffffffe after two 0x40 bytes (INC EAX)", out[1], 0x80000000);
	expect_eq("push width in compatibility mode", out[2], 4);
	expect("EFER.LMA set in compatibility mode", out[3] & (1u << 10));
	check_long_mode_again();
}

/* Run a legacy excursion with fresh result words; false if it faulted. */
static bool legacy(u32 cmd, u32 arg)
{
	volatile u8 *p = LOW(&r_pm32_cr0), *end = LOW(&r_magic);

	while (p < end)
		*p++ = 0xEE;
	LOW16(r_real_int30) = 0;
	LOW16(r_real_de) = 0;
	LOW32(r_paged_read) = 0;
	u32 st = legacy_trip(cmd, arg);
	if (st) {
		failf("exception in %s: vector %u (%s) err=0x%x eip=0x%x",
		      st == 3 ? "real mode" : "protected mode", LOW32(leg_fault_vec),
		      vector_name(LOW32(leg_fault_vec)), LOW32(leg_fault_err), LOW32(leg_fault_eip));
		return false;
	}
	check_long_mode_again();
	return true;
}

static void check_pm32(void)
{
	expect_eq("CR0.PE|PG in 32-bit protected mode", LOW32(r_pm32_cr0) & 0x80000001, 1);
	expect_eq("EFER.LME|LMA in 32-bit protected mode", LOW32(r_pm32_efer) & 0x500, 0);
	expect_eq("0x7ffffffe after two 0x40 bytes (INC EAX)", LOW32(r_pm32_val), 0x80000000);
	expect_eq("push width in 32-bit mode", LOW32(r_pm32_push), 4);
}

static void check_pm16(void)
{
	expect_eq("CR0.PE in 16-bit protected mode", LOW32(r_pm16_cr0) & 0x80000001, 1);
	expect_eq("CS in 16-bit protected mode", LOW16(r_pm16_cs), SEL_KCODE16);
	expect_eq("0xffff + 1 in 16 bits", LOW16(r_pm16_val), 0);
	expect_eq("CF and ZF after the 16-bit wrap", LOW16(r_pm16_flags) & 0x41, 0x41);
	expect_eq("push width in 16-bit mode", LOW16(r_pm16_push), 2);
}

static void mode_protected32(void)
{
	if (legacy(LEG_PM32, 0))
		check_pm32();
}

static void mode_protected16(void)
{
	if (legacy(LEG_PM16, 0)) {
		check_pm32();
		check_pm16();
	}
}

static void mode_real(void)
{
	if (!legacy(LEG_REAL, 0))
		return;
	check_pm32();
	check_pm16();
	expect_eq("CR0.PE in real mode", LOW32(r_real_cr0) & 1, 0);
	expect_eq("(LOW_SEG+1):(x-16) reads LOW_SEG:x", LOW16(r_real_seg), 0x5a17);
	expect_eq("int 0x30 through the IVT ran its handler", LOW16(r_real_int30), 1);
	expect_eq("#DE through the IVT ran its handler", LOW16(r_real_de), 1);
	expect_eq("push width in real mode", LOW16(r_real_push), 2);
}

/* Twenty full round trips: state must survive every switch. */
static void mode_real_repeated(void)
{
	for (int i = 0; i < 20 && !case_failed(); i++) {
		if (!legacy(LEG_REAL, 0))
			return;
		expect_eq("int 0x30 through the IVT", LOW16(r_real_int30), 1);
	}
}

const struct conf_case mode_cases[] = {
	CASE("mode-compat-roundtrip", mode_compat_roundtrip),
	CASE("mode-protected32-roundtrip", mode_protected32),
	CASE("mode-protected16-roundtrip", mode_protected16),
	CASE("mode-real-roundtrip", mode_real),
	CASE("mode-real-repeated", mode_real_repeated),
	{ 0, 0 },
};
