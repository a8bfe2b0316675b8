/*
 * idt.c - interrupt descriptor table and the C side of interrupt entry.
 */
#include "apic.h"
#include "console.h"
#include "layout.h"
#include "lib.h"
#include "smp.h"

struct idt_gate {
	u16 off_lo;
	u16 selector;
	u8 ist;
	u8 type;		/* 0x8E: present, DPL 0, 64-bit interrupt gate */
	u16 off_mid;
	u32 off_hi;
	u32 reserved;
} __packed;

struct desc_ptr {
	u16 limit;
	u64 base;
} __packed;

extern u8 isr_stubs[];		/* entry.S: 256 stubs, 16 bytes each */
extern const u8 gdt[];
extern const struct desc_ptr gdt_ptr;

static struct idt_gate idt[256] __aligned(16);

void idt_init(void)
{
	for (int v = 0; v < 256; v++) {
		u64 addr = (u64)(isr_stubs + 16 * v);
		idt[v].off_lo = (u16)addr;
		idt[v].selector = KERNEL_CS;
		idt[v].ist = 0;
		idt[v].type = 0x8E;
		idt[v].off_mid = (u16)(addr >> 16);
		idt[v].off_hi = (u32)(addr >> 32);
		idt[v].reserved = 0;
	}
}

void idt_load(void)
{
	struct desc_ptr p = { sizeof(idt) - 1, (u64)idt };
	__asm__ __volatile__("lidt %0" : : "m"(p));
}

void gdt_load(void)
{
	__asm__ __volatile__("lgdt %0" : : "m"(gdt_ptr));
}

static const char *const exc_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
	"#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "?15",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "?22", "?23",
	"?24", "?25", "?26", "?27", "?28", "?29", "?30", "?31",
};

static __noreturn void exception(struct irq_frame *f)
{
	console_break_lock();
	kprintf("PANIC exception %lu %s err=0x%lx rip=0x%lx rsp=0x%lx cr2=0x%lx cpu=%u\n",
		f->vector, exc_names[f->vector], f->error, f->rip, f->rsp, read_cr2(),
		this_cpu());
	halt_forever();
}

/* IOAPIC pin handlers (shared pins allowed) */
#define HANDLERS_PER_PIN 4
static struct {
	irq_handler_t fn;
	void *arg;
} pin_handlers[IOAPIC_MAX_PINS][HANDLERS_PER_PIN];

bool irq_add_handler(u32 pin, irq_handler_t fn, void *arg)
{
	for (int i = 0; i < HANDLERS_PER_PIN; i++) {
		if (!pin_handlers[pin][i].fn) {
			pin_handlers[pin][i].arg = arg;
			wmb();
			pin_handlers[pin][i].fn = fn;
			return true;
		}
	}
	return false;
}

u64 unexpected_irqs;

void isr_dispatch(struct irq_frame *f)
{
	u64 v = f->vector;

	if (v < 32)
		exception(f);
	if (v == VEC_SPURIOUS)
		return;				/* no EOI for spurious */
	if (v >= VEC_PIC_BASE && v < VEC_PIC_BASE + 16) {
		unexpected_irqs++;		/* PIC is masked; no LAPIC EOI */
		return;
	}
	if (v == VEC_TIMER) {
		timer_interrupt();
	} else if (v >= VEC_IOAPIC_BASE && v < VEC_IOAPIC_BASE + IOAPIC_MAX_PINS) {
		u32 pin = (u32)(v - VEC_IOAPIC_BASE);
		for (int i = 0; i < HANDLERS_PER_PIN && pin_handlers[pin][i].fn; i++)
			pin_handlers[pin][i].fn(pin_handlers[pin][i].arg);
	} else {
		unexpected_irqs++;
	}
	lapic_eoi();
}
