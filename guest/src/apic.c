/*
 * apic.c - local APIC, IOAPIC, legacy PIC, timer calibration.
 *
 * Both APICs are accessed through their MMIO windows in the 3-4 GiB hole,
 * which entry.S maps uncached.
 */
#include "apic.h"
#include "console.h"
#include "lib.h"

#define LAPIC_BASE_DEFAULT 0xFEE00000UL
#define IOAPIC_BASE	0xFEC00000UL

/* local APIC registers */
#define LAPIC_ID	0x020
#define LAPIC_TPR	0x080
#define LAPIC_EOI	0x0B0
#define LAPIC_SVR	0x0F0
#define LAPIC_ESR	0x280
#define LAPIC_ICR_LO	0x300
#define LAPIC_ICR_HI	0x310
#define LAPIC_LVT_TIMER	0x320
#define LAPIC_LVT_THERM	0x330
#define LAPIC_LVT_PERF	0x340
#define LAPIC_LVT_LINT0	0x350
#define LAPIC_LVT_LINT1	0x360
#define LAPIC_LVT_ERR	0x370
#define LAPIC_TIMER_ICR	0x380
#define LAPIC_TIMER_CCR	0x390
#define LAPIC_TIMER_DCR	0x3E0

#define LVT_MASKED	(1u << 16)
#define LVT_PERIODIC	(1u << 17)
#define LVT_NMI		(4u << 8)
#define ICR_BUSY	(1u << 12)
#define TIMER_DIV16	0x3

#define MSR_APIC_BASE	0x1B

#define HZ		100

static u64 lapic_base = LAPIC_BASE_DEFAULT;

u64 tsc_hz;
u32 apic_timer_hz;
const char *calib_source = "none";
static u64 tsc_per_ms;

static u32 lapic_read(u32 reg) { return mmio_read32(lapic_base + reg); }
static void lapic_write(u32 reg, u32 v) { mmio_write32(lapic_base + reg, v); }

u32 lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }
void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }

void lapic_init_cpu(bool bsp)
{
	u64 base = rdmsr(MSR_APIC_BASE);

	wrmsr(MSR_APIC_BASE, base | (1UL << 11));	/* global enable */
	lapic_base = base & 0xFFFFF000UL;
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	lapic_write(LAPIC_LVT_THERM, LVT_MASKED);
	lapic_write(LAPIC_LVT_PERF, LVT_MASKED);
	lapic_write(LAPIC_LVT_LINT0, LVT_MASKED);	/* no ExtINT: PIC unused */
	lapic_write(LAPIC_LVT_LINT1, bsp ? LVT_NMI : LVT_MASKED);
	lapic_write(LAPIC_LVT_ERR, VEC_APIC_ERROR);
	lapic_write(LAPIC_ESR, 0);
	lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);	/* software enable */
}

void lapic_send_ipi(u32 apic_id, u32 icr_low)
{
	lapic_write(LAPIC_ICR_HI, apic_id << 24);
	lapic_write(LAPIC_ICR_LO, icr_low);
	for (int i = 0; i < 100000 && (lapic_read(LAPIC_ICR_LO) & ICR_BUSY); i++)
		cpu_relax();
}

/* ---- legacy PIC --------------------------------------------------------- */

void pic_disable(void)
{
	/* Re-initialise both 8259s to vectors 0xE0-0xEF (well clear of the
	 * exceptions), then mask every line. */
	outb(0x20, 0x11);
	outb(0xA0, 0x11);
	outb(0x21, VEC_PIC_BASE);
	outb(0xA1, VEC_PIC_BASE + 8);
	outb(0x21, 0x04);
	outb(0xA1, 0x02);
	outb(0x21, 0x01);
	outb(0xA1, 0x01);
	outb(0x21, 0xFF);
	outb(0xA1, 0xFF);
}

/* ---- IOAPIC ------------------------------------------------------------- */

static u32 ioapic_pins;
static u32 bsp_apic_id;

static void ioapic_write(u32 reg, u32 v)
{
	mmio_write32(IOAPIC_BASE, reg);
	mmio_write32(IOAPIC_BASE + 0x10, v);
}

static u32 ioapic_read(u32 reg)
{
	mmio_write32(IOAPIC_BASE, reg);
	return mmio_read32(IOAPIC_BASE + 0x10);
}

void ioapic_init(void)
{
	bsp_apic_id = lapic_id();
	ioapic_pins = ((ioapic_read(1) >> 16) & 0xFF) + 1;
	if (ioapic_pins > IOAPIC_MAX_PINS)
		ioapic_pins = IOAPIC_MAX_PINS;
	for (u32 pin = 0; pin < ioapic_pins; pin++) {
		ioapic_write(0x10 + 2 * pin, LVT_MASKED | (VEC_IOAPIC_BASE + pin));
		ioapic_write(0x11 + 2 * pin, 0);
	}
}

bool ioapic_route_irq(u32 pin, irq_handler_t fn, void *arg)
{
	if (pin >= ioapic_pins || !irq_add_handler(pin, fn, arg))
		return false;
	/* edge-triggered (bit 15 = 0), active high (bit 13 = 0), fixed,
	 * physical destination = BSP, unmasked */
	ioapic_write(0x11 + 2 * pin, bsp_apic_id << 24);
	ioapic_write(0x10 + 2 * pin, VEC_IOAPIC_BASE + pin);
	return true;
}

/* ---- calibration -------------------------------------------------------- */

#define PIT_HZ		1193182UL
#define PIT_CAL_COUNT	59659		/* 50 ms */

/* Count PIT_CAL_COUNT PIT ticks on channel 2 (mode 0, gate via port 0x61)
 * and measure TSC and APIC timer over that interval. */
static bool calibrate_pit(void)
{
	u8 p61 = inb(0x61);

	outb(0x61, (p61 & ~0x03) | 0x01);	/* gate high, speaker off */
	outb(0x43, 0xB0);			/* ch2, lo/hi byte, mode 0, binary */
	lapic_write(LAPIC_TIMER_ICR, 0xFFFFFFFF);
	outb(0x42, PIT_CAL_COUNT & 0xFF);
	outb(0x42, PIT_CAL_COUNT >> 8);		/* counting starts now */
	u64 t0 = rdtsc();
	u32 a0 = lapic_read(LAPIC_TIMER_CCR);
	u64 t1;
	u32 a1;
	for (u64 n = 0;; n++) {
		if (inb(0x61) & 0x20) {		/* OUT2 went high */
			t1 = rdtsc();
			a1 = lapic_read(LAPIC_TIMER_CCR);
			break;
		}
		/* 50 ms expected; give up after ~0.25-0.5 s of TSC (any
		 * plausible TSC rate) or a million polls */
		if (n > 1000000 || rdtsc() - t0 > 1000000000UL)
			return false;
	}
	if (t1 - t0 < 1000000)			/* OUT2 stuck high: no PIT */
		return false;
	tsc_hz = (t1 - t0) * PIT_HZ / PIT_CAL_COUNT;
	apic_timer_hz = (u32)((u64)(a0 - a1) * PIT_HZ / PIT_CAL_COUNT);
	return apic_timer_hz > 1000;
}

/* KVM's APIC timer runs at a fixed 1 GHz bus clock: 62.5 MHz after /16.
 * Measure the TSC against it over 50 ms. */
static void calibrate_apic(void)
{
	const u32 span = 62500000 / 20;

	apic_timer_hz = 62500000;
	lapic_write(LAPIC_TIMER_ICR, 0xFFFFFFFF);
	u32 a0 = lapic_read(LAPIC_TIMER_CCR);
	u64 t0 = rdtsc();
	while (a0 - lapic_read(LAPIC_TIMER_CCR) < span) {
		if (rdtsc() - t0 > 50000000000UL) {	/* timer not counting */
			kprintf("WARN APIC timer does not count; assuming TSC 2 GHz\n");
			tsc_hz = 2000000000UL;
			return;
		}
		cpu_relax();
	}
	tsc_hz = (rdtsc() - t0) * 20;
}

void timer_calibrate(void)
{
	lapic_write(LAPIC_TIMER_DCR, TIMER_DIV16);
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);	/* one-shot, masked */
	if (calibrate_pit()) {
		calib_source = "pit";
	} else {
		calibrate_apic();
		calib_source = "apic-1ghz";
	}
	lapic_write(LAPIC_TIMER_ICR, 0);
	tsc_per_ms = tsc_hz / 1000;
	if (!tsc_per_ms)
		tsc_per_ms = 1;
}

void lapic_timer_start_periodic(void)
{
	lapic_write(LAPIC_TIMER_DCR, TIMER_DIV16);
	lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | VEC_TIMER);
	lapic_write(LAPIC_TIMER_ICR, apic_timer_hz / HZ);
}

u64 tsc_to_ms(u64 ticks)
{
	return ticks / tsc_per_ms;
}

u64 tsc_to_us(u64 ticks)
{
	return ticks * 1000 / tsc_per_ms;
}

void udelay(u64 us)
{
	u64 t0 = rdtsc(), span = tsc_per_ms * us / 1000;

	while (rdtsc() - t0 < span)
		cpu_relax();
}
