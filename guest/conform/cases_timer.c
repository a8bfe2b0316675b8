/*
 * cases_timer.c - the local APIC timer (one-shot, periodic, divide
 * configuration), the 8254 PIT and the 8259 PIC.
 *
 * Routing of PIT interrupts: the 8259 pair is remapped to vectors
 * 0x20-0x2F and only IRQ 0 is unmasked; the IOAPIC has every pin masked;
 * the BSP's LAPIC takes the PIC's output through LINT0 programmed as
 * ExtINT (APs mask LINT0). That path is the same under KVM's in-kernel
 * irqchip (GSI 0 drives PIC IRQ 0 and IOAPIC pin 0), Godwit's software
 * irqchip (which copies it) and QEMU (GSI 0 -> IOAPIC pin 2), so no IOAPIC
 * pin number enters the test.
 */
#include "conform.h"

#define COUNT(vec) (percpu[0].irq_count[vec])
#define PIT_HZ 1193182

/* ---- LAPIC timer ---- */

static void lapic_timer_oneshot(void)
{
	COUNT(VEC_TIMER) = 0;
	lapic_write(APIC_TIMER_DCR, 0x3);		/* divide by 16 */
	lapic_write(APIC_LVT_TIMER, VEC_TIMER);		/* one-shot */
	lapic_write(APIC_TIMER_ICR, 62500 * 2);		/* 2 ms at 1 GHz / 16 */
	u32 c1 = lapic_read(APIC_TIMER_CCR);
	delay_ms(1);
	u32 c2 = lapic_read(APIC_TIMER_CCR);
	expect("TMCCT at most TMICT", c1 <= 62500 * 2);
	expect("TMCCT counts down", c2 < c1);
	irq_enable();
	bool fired = wait_for(COUNT(VEC_TIMER) >= 1, 1000);
	delay_ms(5);
	irq_disable();
	expect("one-shot fired", fired);
	expect_eq("one-shot interrupts after 5 ms more", COUNT(VEC_TIMER), 1);
	expect_eq("TMCCT after expiry", lapic_read(APIC_TIMER_CCR), 0);
}

static void lapic_timer_periodic(void)
{
	COUNT(VEC_TIMER) = 0;
	lapic_write(APIC_TIMER_DCR, 0x3);
	lapic_write(APIC_LVT_TIMER, LVT_PERIODIC | VEC_TIMER);
	lapic_write(APIC_TIMER_ICR, 62500);		/* 1 ms */
	irq_enable();
	delay_ms(30);
	irq_disable();
	u32 ccr = lapic_read(APIC_TIMER_CCR);
	u32 n = COUNT(VEC_TIMER);
	lapic_write(APIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	lapic_write(APIC_TIMER_ICR, 0);
	if (n < 5 || n > 35)
		failf("periodic 1 ms timer over 30 ms: want 5..35 interrupts, got %u", n);
	expect("TMCCT reloaded and running", ccr > 0 && ccr <= 62500);
}

/* Timer ticks per millisecond (by the TSC) at divide configuration dcr. */
static u64 timer_rate(u32 dcr)
{
	lapic_write(APIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	lapic_write(APIC_TIMER_DCR, dcr);
	lapic_write(APIC_TIMER_ICR, 0xFFFFFFFF);
	u64 t0 = rdtsc();
	u32 c0 = lapic_read(APIC_TIMER_CCR);
	delay_ms(4);
	u32 c1 = lapic_read(APIC_TIMER_CCR);
	u64 t1 = rdtsc();
	lapic_write(APIC_TIMER_ICR, 0);
	return (u64)(c0 - c1) * tsc_per_ms / (t1 - t0 + 1);
}

static void lapic_timer_divide(void)
{
	static const struct {
		u32 dcr, div;
	} divs[] = { { 0xB, 1 }, { 0x0, 2 }, { 0x3, 16 }, { 0xA, 128 } };
	u64 base = timer_rate(0xB);

	if (base == 0) {
		failf("timer does not count at divide by 1");
		return;
	}
	for (u32 i = 1; i < ARRAY_SIZE(divs); i++) {
		u64 r = timer_rate(divs[i].dcr);
		/* r * div / base should be 1: accept 0.75 .. 1.33 */
		u64 x100 = r * divs[i].div * 100 / base;
		if (x100 < 75 || x100 > 133)
			failf("divide by %u: %lu ticks/ms against %lu at divide by 1 (ratio x100 = %lu)",
			      divs[i].div, r, base, x100);
	}
}

/* ---- PIT and PIC ---- */

static void pit_ch0(u32 mode, u32 count)
{
	outb(0x43, 0x30 | mode << 1);			/* channel 0, lo/hi byte */
	outb(0x40, count & 0xFF);
	outb(0x40, count >> 8);
}

static u32 pit_latch(u32 ch)
{
	outb(0x43, ch << 6);				/* counter latch */
	u32 lo = inb(0x40 + ch);
	return lo | (u32)inb(0x40 + ch) << 8;
}

static void pit_ch0_irq0(void)
{
	pic_setup(0xFE, 0xFF);
	COUNT(VEC_PIC) = 0;
	pit_ch0(2, PIT_HZ / 1000);			/* rate generator, 1 kHz */
	irq_enable();
	delay_ms(30);
	irq_disable();
	u32 n = COUNT(VEC_PIC);
	outb(0x21, 0xFF);
	if (n < 5 || n > 35)
		failf("PIT 1 kHz over 30 ms via PIC IRQ 0 (vector 0x%x): want 5..35 interrupts, got %u", VEC_PIC, n);
}

static void pit_latch_countdown(void)
{
	pit_ch0(2, 0xFFFF);
	u32 a = 0, b = 0;
	for (int i = 0; i < 3; i++) {
		a = pit_latch(0);
		delay_ms(1);
		b = pit_latch(0);
		if (b < a)
			break;				/* else it reloaded in between: again */
	}
	expect("latched count within 1..0xFFFF", a >= 1 && a <= 0xFFFF);
	if (!(b < a))
		failf("latched counts do not count down: 0x%x then 0x%x", a, b);
	else if (a - b < 300)
		failf("1 ms of counting: want about 1193 ticks, got %u", a - b);
}

static void pit_ch2_gate(void)
{
	u8 p61 = inb(0x61) & ~0x03;

	/* mode 0 with the gate high: OUT2 low until terminal count */
	outb(0x61, p61 | 0x01);
	expect_eq("port 0x61 bit 0 reads the gate", inb(0x61) & 1, 1);
	outb(0x43, 0xB0);				/* channel 2, lo/hi, mode 0 */
	outb(0x42, (PIT_HZ / 200) & 0xFF);		/* 5 ms */
	outb(0x42, (PIT_HZ / 200) >> 8);
	u64 t0 = rdtsc();
	expect_eq("OUT2 right after the count is written", inb(0x61) & 0x20, 0);
	bool out = wait_for(inb(0x61) & 0x20, 200);
	u64 ms10 = (rdtsc() - t0) * 10 / tsc_per_ms;
	expect("OUT2 rose at terminal count", out);
	if (out && ms10 < 35)
		failf("OUT2 rose after %lu.%lu ms, want about 5", ms10 / 10, ms10 % 10);

	/* mode 2: a rising gate restarts the count */
	outb(0x43, 0xB4);				/* channel 2, lo/hi, mode 2 */
	outb(0x42, 0xFF);
	outb(0x42, 0xFF);
	delay_ms(20);
	u32 before = pit_latch(2);
	outb(0x61, p61);				/* gate low... */
	outb(0x61, p61 | 0x01);				/* ...and high again */
	u32 after = pit_latch(2);
	outb(0x61, p61);
	if (!(after > before + 10000))
		failf("rising gate did not reload channel 2: 0x%x before, 0x%x after", before, after);
}

static volatile u8 isr_in_handler, isr_after_eoi;

static void pic_probe_irq(struct frame *f)
{
	percpu[0].irq_count[f->vector]++;
	outb(0x20, 0x0B);				/* OCW3: read ISR */
	isr_in_handler = inb(0x20);
	outb(0x20, 0x20);				/* non-specific EOI */
	outb(0x20, 0x0B);
	isr_after_eoi = inb(0x20);
}

static void pic_irr_isr_eoi(void)
{
	pic_setup(0xFE, 0xFF);
	COUNT(VEC_PIC) = 0;
	pit_ch0(2, PIT_HZ / 1000);
	outb(0x20, 0x0A);				/* OCW3: read IRR */
	bool pending = wait_for(inb(0x20) & 1, 100);
	outb(0x20, 0x0B);
	u8 isr_before = inb(0x20);
	expect("IRR bit 0 set with IF = 0", pending);
	expect_eq("ISR before the interrupt", isr_before & 1, 0);
	irq_fn old = set_irq_handler(VEC_PIC, pic_probe_irq);
	irq_enable();
	bool taken = wait_for(COUNT(VEC_PIC) >= 1, 100);
	irq_disable();
	outb(0x21, 0xFF);
	set_irq_handler(VEC_PIC, old);
	expect("IRQ 0 taken after sti", taken);
	expect_eq("ISR bit 0 in the handler", isr_in_handler & 1, 1);
	expect_eq("ISR bit 0 after EOI", isr_after_eoi & 1, 0);
}

static void pic_mask(void)
{
	pic_setup(0xFE, 0xFF);
	expect_eq("IMR reads back", inb(0x21), 0xFE);
	COUNT(VEC_PIC) = 0;
	pit_ch0(2, PIT_HZ / 1000);
	irq_enable();
	expect("unmasked IRQ 0 arrives", wait_for(COUNT(VEC_PIC) >= 2, 200));
	outb(0x21, 0xFF);
	expect_eq("IMR reads back", inb(0x21), 0xFF);
	delay_ms(2);
	u32 n1 = COUNT(VEC_PIC);
	delay_ms(20);
	u32 n2 = COUNT(VEC_PIC);
	expect_eq("interrupts while IRQ 0 is masked", n2, n1);
	outb(0x21, 0xFE);
	expect("IRQ 0 arrives again when unmasked", wait_for(COUNT(VEC_PIC) > n2, 200));
	irq_disable();
	outb(0x21, 0xFF);
}

const struct conf_case timer_cases[] = {
	CASE("lapic-timer-oneshot", lapic_timer_oneshot),
	CASE("lapic-timer-periodic", lapic_timer_periodic),
	CASE("lapic-timer-divide", lapic_timer_divide),
	CASE("pit-ch0-irq0-via-pic", pit_ch0_irq0),
	CASE("pit-latch-countdown", pit_latch_countdown),
	CASE("pit-ch2-gate-out2", pit_ch2_gate),
	CASE("pic-irr-isr-eoi", pic_irr_isr_eoi),
	CASE("pic-mask", pic_mask),
	{ 0, 0 },
};
