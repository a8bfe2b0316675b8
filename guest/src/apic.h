/*
 * apic.h - interrupt plumbing: IDT, local APIC (timer, IPIs, EOI), IOAPIC,
 * legacy PIC masking, TSC/APIC-timer calibration and delays.
 */
#ifndef GUEST_APIC_H
#define GUEST_APIC_H

#include "arch.h"

/* Interrupt vectors */
#define VEC_TIMER	0x20	/* local APIC timer, every CPU */
#define VEC_IOAPIC_BASE	0x30	/* IOAPIC pin n -> vector 0x30 + n */
#define VEC_PIC_BASE	0xE0	/* legacy PIC, remapped then masked */
#define VEC_APIC_ERROR	0xFE
#define VEC_SPURIOUS	0xFF

#define IOAPIC_MAX_PINS	24

struct irq_frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8;
	u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vector, error;
	u64 rip, cs, rflags, rsp, ss;	/* pushed by the CPU */
};

typedef void (*irq_handler_t)(void *arg);

void idt_init(void);		/* build the IDT (once, BSP) */
void idt_load(void);		/* lidt (every CPU) */
void gdt_load(void);		/* lgdt of the kernel GDT (APs) */

void pic_disable(void);
void lapic_init_cpu(bool bsp);
u32 lapic_id(void);
void lapic_eoi(void);
void lapic_send_ipi(u32 apic_id, u32 icr_low);

void ioapic_init(void);
/* Program IOAPIC pin (= ISA IRQ / PCI InterruptLine) edge-triggered,
 * active high, fixed delivery to the BSP, and add a handler. Several
 * handlers may share a pin. Returns false if the pin does not exist. */
bool ioapic_route_irq(u32 pin, irq_handler_t fn, void *arg);
/* Add a handler for IOAPIC pin (idt.c's dispatch table only). */
bool irq_add_handler(u32 pin, irq_handler_t fn, void *arg);

/* Calibrate TSC and APIC timer against PIT channel 2 (fallback: the KVM
 * APIC timer's fixed 1 GHz bus clock). */
void timer_calibrate(void);
void lapic_timer_start_periodic(void);	/* 100 Hz, VEC_TIMER */
extern u64 tsc_hz;
extern u32 apic_timer_hz;		/* after the divide-by-16 */
extern const char *calib_source;
u64 tsc_to_ms(u64 ticks);
u64 tsc_to_us(u64 ticks);
void udelay(u64 us);

/* Called from the timer vector on every CPU (smp.c). */
void timer_interrupt(void);

#endif
