/*
 * smp.c - start the application processors with INIT / SIPI / SIPI.
 *
 * No ACPI or MP table is consulted (Godwit provides none yet): the number
 * of CPUs comes from cpus=N and their local APIC IDs are assumed to be
 * 0..N-1. APs are started one at a time; each gets its own stack, loads
 * the kernel GDT and IDT, enables its local APIC, runs its APIC timer in
 * periodic mode at 100 Hz and then idles in hlt, counting ticks.
 */
#include "smp.h"
#include "loops.h"
#include "apic.h"
#include "console.h"
#include "lib.h"

#define ICR_INIT	0x00004500	/* INIT, level assert */
#define ICR_STARTUP	0x00004600	/* start-up IPI */

extern u8 tramp_start[], tramp_end[];

u32 ncpus_wanted = 1;
volatile u32 ncpus_online = 1;
volatile u64 cpu_ticks[MAX_CPUS];

static u8 ap_stacks[MAX_CPUS][AP_STACK_SIZE] __noinit __aligned(16);
static u8 apic_to_cpu[256];		/* local APIC ID -> CPU index */
static u32 cpu_apic_id[MAX_CPUS];

/* Hand-off to the AP being started (read by trampoline.S / ap_main). */
volatile u64 ap_boot_stack;
static volatile u32 ap_alive;

u32 this_cpu(void)
{
	return apic_to_cpu[lapic_id() & 0xFF];
}

void smp_init_bsp(void)
{
	u32 id = lapic_id();

	cpu_apic_id[0] = id;
	apic_to_cpu[id & 0xFF] = 0;
}

void timer_interrupt(void)
{
	u32 cpu = this_cpu();

	cpu_ticks[cpu]++;
	if (cpu == 0)
		heartbeat_tick();
}

void ap_main(void)
{
	gdt_load();
	idt_load();
	lapic_init_cpu(false);
	lapic_timer_start_periodic();
	__atomic_store_n(&ap_alive, 1, __ATOMIC_RELEASE);
	u64 loop_seen = 0;
	for (;;) {
		safe_halt();
		loops_ap_poll(&loop_seen);
	}
}

static bool wait_alive(u64 us)
{
	u64 t0 = rdtsc(), span = tsc_hz / 1000000 * us;

	while (rdtsc() - t0 < span)
		if (__atomic_load_n(&ap_alive, __ATOMIC_ACQUIRE))
			return true;
	return __atomic_load_n(&ap_alive, __ATOMIC_ACQUIRE);
}

u32 smp_start_aps(u32 n)
{
	if (n > MAX_CPUS) {
		kprintf("WARN cpus=%u capped to %u\n", n, MAX_CPUS);
		n = MAX_CPUS;
	}
	memcpy((void *)TRAMP_BASE, tramp_start, (size_t)(tramp_end - tramp_start));

	u32 bsp = cpu_apic_id[0];
	u32 next_id = 0;
	for (u32 cpu = 1; cpu < n; cpu++) {
		if (next_id == bsp)
			next_id++;
		u32 id = next_id++;

		apic_to_cpu[id & 0xFF] = (u8)cpu;
		cpu_apic_id[cpu] = id;
		ap_boot_stack = (u64)&ap_stacks[cpu][AP_STACK_SIZE];
		ap_alive = 0;
		mb();

		u64 t0 = rdtsc();
		lapic_send_ipi(id, ICR_INIT);
		udelay(10000);
		lapic_send_ipi(id, ICR_STARTUP | TRAMP_SIPI_VEC);
		if (!wait_alive(200))
			lapic_send_ipi(id, ICR_STARTUP | TRAMP_SIPI_VEC);
		if (!wait_alive(5000000)) {
			kprintf("SMP cpu%u apic=%u FAILED to start\n", cpu, id);
			break;
		}
		ncpus_online = cpu + 1;
		kprintf("SMP cpu%u apic=%u up in %lu ms\n", cpu, id, tsc_to_ms(rdtsc() - t0));
	}
	return ncpus_online;
}
