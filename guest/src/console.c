/*
 * console.c - 16550 UART at 0x3F8 (COM1).
 *
 * Output polls LSR.THRE. If the UART has a FIFO, up to 16 bytes are written
 * per THRE observation, halving the number of (expensive) port exits.
 * Input is interrupt-driven: the RX handler (IOAPIC pin 4) collects bytes
 * into a line and queues complete lines (terminated by CR or LF) in a
 * single-producer/single-consumer ring drained by the BSP main loop. There
 * is no echo.
 */
#include "console.h"
#include "apic.h"
#include "lib.h"
#include "spinlock.h"

#define COM1		0x3F8
#define UART_RBR	0	/* receive buffer (read) */
#define UART_THR	0	/* transmit holding (write) */
#define UART_IER	1
#define UART_IIR	2	/* interrupt identification (read) */
#define UART_FCR	2	/* FIFO control (write) */
#define UART_LCR	3
#define UART_MCR	4
#define UART_LSR	5
#define LSR_DR		0x01
#define LSR_THRE	0x20
#define COM1_IRQ	4

static spinlock_t tx_lock;
static int tx_burst = 1;

void serial_init(void)
{
	outb(COM1 + UART_IER, 0x00);
	outb(COM1 + UART_LCR, 0x80);		/* DLAB */
	outb(COM1 + 0, 0x01);			/* divisor 1: 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + UART_LCR, 0x03);		/* 8N1 */
	outb(COM1 + UART_FCR, 0x07);		/* FIFO on, clear, RX trigger 1 byte */
	outb(COM1 + UART_MCR, 0x0B);		/* DTR, RTS, OUT2 (IRQ gate) */
	if ((inb(COM1 + UART_IIR) & 0xC0) == 0xC0)
		tx_burst = 16;			/* 16550A FIFO present */
}

static void tx_bytes(const char *s, size_t n)
{
	int room = 0;

	for (size_t i = 0; i < n; i++) {
		if (!room) {
			while (!(inb(COM1 + UART_LSR) & LSR_THRE))
				cpu_relax();
			room = tx_burst;
		}
		outb(COM1 + UART_THR, (u8)s[i]);
		room--;
	}
}

void console_write(const char *s, size_t n)
{
	u64 flags = spin_lock_irqsave(&tx_lock);
	tx_bytes(s, n);
	spin_unlock_irqrestore(&tx_lock, flags);
}

void kprintf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	console_write(buf, (size_t)n);
}

void console_break_lock(void)
{
	spin_unlock(&tx_lock);
}

/* ---- input -------------------------------------------------------------- */

#define RXQ_LEN 16

static char rx_cur[CONSOLE_LINE_MAX];
static u32 rx_cur_len;
static char rx_queue[RXQ_LEN][CONSOLE_LINE_MAX];
static volatile u32 rxq_head, rxq_tail;	/* head: producer (IRQ), tail: consumer */
static u32 rx_overflows;

static void rx_byte(char c)
{
	if (c == '\r' || c == '\n') {
		if (!rx_cur_len)
			return;
		if (rxq_head - rxq_tail < RXQ_LEN) {
			char *dst = rx_queue[rxq_head % RXQ_LEN];
			memcpy(dst, rx_cur, rx_cur_len);
			dst[rx_cur_len] = '\0';
			wmb();
			rxq_head++;
		} else {
			rx_overflows++;
		}
		rx_cur_len = 0;
	} else if (c == 0x08 || c == 0x7F) {
		if (rx_cur_len)
			rx_cur_len--;
	} else if ((u8)c >= 0x20 && rx_cur_len < CONSOLE_LINE_MAX - 1) {
		rx_cur[rx_cur_len++] = c;
	}
}

static void serial_irq(void *arg)
{
	(void)arg;
	while (inb(COM1 + UART_LSR) & LSR_DR)
		rx_byte((char)inb(COM1 + UART_RBR));
}

void console_enable_rx_irq(void)
{
	/* discard anything the firmware left behind */
	while (inb(COM1 + UART_LSR) & LSR_DR)
		(void)inb(COM1 + UART_RBR);
	ioapic_route_irq(COM1_IRQ, serial_irq, NULL);
	outb(COM1 + UART_IER, 0x01);		/* received-data interrupt */
}

bool console_line_pending(void)
{
	return rxq_head != rxq_tail;
}

bool console_get_line(char *buf, size_t size)
{
	if (rxq_head == rxq_tail)
		return false;
	rmb();
	const char *src = rx_queue[rxq_tail % RXQ_LEN];
	size_t i = 0;
	while (src[i] && i + 1 < size) {
		buf[i] = src[i];
		i++;
	}
	buf[i] = '\0';
	barrier();
	rxq_tail++;
	return true;
}
