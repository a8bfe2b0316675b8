/*
 * main.c - boot sequence, heartbeat, command interpreter, main loop.
 */
#include "apic.h"
#include "blk.h"
#include "boot.h"
#include "console.h"
#include "layout.h"
#include "loops.h"
#include "lib.h"
#include "net.h"
#include "pci.h"
#include "smp.h"
#include "workload.h"

#define GUEST_VERSION "v1"

static u64 tsc_boot;
static volatile u64 hb_seq;	/* heartbeats printed */
static u64 cpu_seq;		/* CPU lines printed */

/* ---- heartbeat (BSP timer interrupt, 100 Hz) ---------------------------- */

void heartbeat_tick(void)
{
	u64 t = (rdtsc() - tsc_boot) >> 16;

	kprintf("HB %lu %lu %lu\n", hb_seq, t, workload_dirtied());
	hb_seq++;
	if (hb_seq % 10 == 0) {
		char line[32 + 21 * MAX_CPUS];
		int n = snprintf(line, sizeof(line), "CPU %lu", cpu_seq++);
		for (u32 c = 0; c < ncpus_wanted && c < MAX_CPUS; c++)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " %lu", cpu_ticks[c]);
		snprintf(line + n, sizeof(line) - (size_t)n, "\n");
		console_write(line, strlen(line));
	}
}

/* ---- commands ----------------------------------------------------------- */

static __noreturn void power_off(void)
{
	kprintf("POWEROFF\n");
	outb(0xF4, 0);		/* isa-debug-exit (QEMU) / Godwit power-off port */
	outb(0x64, 0xFE);	/* keyboard-controller reset */
	halt_forever();
}

static __noreturn void reboot(void)
{
	kprintf("REBOOT\n");
	outb(0x64, 0xFE);	/* keyboard-controller reset line */
	halt_forever();
}

static void cmd_status(void)
{
	char wls[64];

	workload_describe(wls, sizeof(wls));
	kprintf("STATUS cpus=%u mem=%lu hb=%lu wl=%s\n", ncpus_online, boot.ram_bytes / MiB,
		hb_seq, wls);
}

static void cmd_netstat(void)
{
	const struct net_stats *s = net_get_stats();

	kprintf("NETSTAT rx=%lu tx=%lu arp=%lu icmp=%lu udp=%lu\n", s->rx, s->tx, s->arp, s->icmp, s->udp);
}

static void run_command(char *line)
{
	char *p = line, *args;

	while (*p == ' ' || *p == '\t')
		p++;
	if (!*p)
		return;
	args = p;
	while (*args && *args != ' ' && *args != '\t')
		args++;
	if (*args)
		*args++ = '\0';		/* p = command word, args = the rest */

	if (!strcasecmp(p, "W"))
		cmd_w(args);
	else if (!strcasecmp(p, "V") || !strcasecmp(p, "VERIFY"))
		cmd_verify();
	else if (!strcasecmp(p, "STATUS") || !strcasecmp(p, "CPUS"))
		cmd_status();
	else if (!strcasecmp(p, "NETSTAT"))
		cmd_netstat();
	else if (!strcasecmp(p, "BLKW"))
		cmd_blkw(args);
	else if (!strcasecmp(p, "BLKR"))
		cmd_blkr(args);
	else if (!strcasecmp(p, "BLKV"))
		cmd_blkv(args);
	else if (!strcasecmp(p, "WPAUSE")) {
		workload_pause(true);
		kprintf("WPAUSE OK\n");
	} else if (!strcasecmp(p, "WRESUME")) {
		workload_pause(false);
		kprintf("WRESUME OK\n");
	} else if (!strcasecmp(p, "POKE"))
		cmd_poke(args);
	else if (!strcasecmp(p, "LOOP"))
		cmd_loop(args);
	else if (!strcasecmp(p, "ECHO"))
		kprintf("ECHO %s\n", args);
	else if (!strcasecmp(p, "OFF"))
		power_off();
	else if (!strcasecmp(p, "REBOOT"))
		reboot();
	else if (!strcasecmp(p, "HELP"))
		kprintf("HELP W V STATUS CPUS NETSTAT BLKW BLKR BLKV WPAUSE WRESUME POKE LOOP ECHO OFF REBOOT\n");
	else
		kprintf("ERR unknown command %s\n", p);
}

/* ---- boot --------------------------------------------------------------- */

static void probe_devices(void)
{
	struct pci_dev devs[32];
	int n = pci_scan_bus0(devs, (int)ARRAY_SIZE(devs));

	for (int i = 0; i < n; i++) {
		const struct pci_dev *d = &devs[i];
		if (d->vendor != 0x1AF4)
			continue;
		if (d->device == 0x1000)
			net_probe(d);
		else if (d->device == 0x1001)
			blk_probe(d);
		else
			kprintf("PCI %02x:%02x.%x virtio %04x:%04x ignored\n", d->bus, d->dev, d->fn,
				d->vendor, d->device);
	}
	if (!net_present())
		kprintf("NET none\n");
	if (!blk_present())
		kprintf("BLK none\n");
}

static void idle(void)
{
	irq_disable();
	if (!console_line_pending())
		safe_halt();
	else
		irq_enable();
}

void kmain(u32 magic, u32 info)
{
	char buf[32];

	tsc_boot = rdtsc();
	serial_init();
	boot_parse(magic, info);	/* before anything touches low memory */
	if (cmdline_get("cpus", buf, sizeof(buf))) {
		const char *p = buf;
		u64 n;
		if (parse_u64(&p, &n) && n >= 1)
			ncpus_wanted = (u32)MIN(n, (u64)MAX_CPUS);
	}
	kprintf("GODWIT-GUEST %s cpus=%u mem=%lu cmdline=%s\n", GUEST_VERSION, ncpus_wanted,
		boot.ram_bytes / MiB, boot.cmdline);
	for (int i = 0; i < boot.nram; i++)
		kprintf("MEM ram 0x%lx-0x%lx\n", boot.ram[i].base, boot.ram[i].base + boot.ram[i].len - 1);

	idt_init();
	idt_load();
	pic_disable();
	lapic_init_cpu(true);
	ioapic_init();
	smp_init_bsp();
	crc32_init();
	timer_calibrate();
	kprintf("CLOCK tsc_khz=%lu apic_timer_khz=%u source=%s\n", tsc_hz / 1000,
		apic_timer_hz / 1000, calib_source);

	console_enable_rx_irq();
	lapic_timer_start_periodic();
	irq_enable();			/* heartbeats start here */

	smp_start_aps(ncpus_wanted);
	probe_devices();
	workload_init();
	kprintf("INFO boot cpus=%u buffer_mib=%lu boot_ms=%lu\n", ncpus_online,
		workload_buffer_mib(), tsc_to_ms(rdtsc() - tsc_boot));
	kprintf("READY\n");

	for (;;) {
		char line[CONSOLE_LINE_MAX];

		if (console_get_line(line, sizeof(line))) {
			run_command(line);
			continue;
		}
		net_poll();
		blk_poll();
		if (workload_step())
			continue;
		idle();
	}
}
