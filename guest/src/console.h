/*
 * console.h - COM1 serial console: line output under a spinlock (safe from
 * interrupt handlers and any CPU), interrupt-driven line input.
 */
#ifndef GUEST_CONSOLE_H
#define GUEST_CONSOLE_H

#include "arch.h"

#define CONSOLE_LINE_MAX 160

void serial_init(void);
/* Route COM1's IRQ 4 through the IOAPIC and enable the RX interrupt. */
void console_enable_rx_irq(void);

/* Write bytes atomically with respect to other console writers. */
void console_write(const char *s, size_t n);
/* printf to the console; one call = one atomic write (keep it one line). */
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Completed input lines, queued by the RX interrupt handler. */
bool console_line_pending(void);
bool console_get_line(char *buf, size_t size);

/* Panic path: forget a lock holder that will never release it. */
void console_break_lock(void);

#endif
