/*
 * smp.h - application processor start-up and per-CPU timer tick counts.
 */
#ifndef GUEST_SMP_H
#define GUEST_SMP_H

#include "arch.h"
#include "layout.h"

extern u32 ncpus_wanted;		/* from cpus=N */
extern volatile u32 ncpus_online;	/* BSP + APs that reported in */
extern volatile u64 cpu_ticks[MAX_CPUS];	/* timer interrupts per CPU */

void smp_init_bsp(void);
/* Start CPUs 1..n-1 (APIC IDs assumed 0..n-1); returns CPUs online. */
u32 smp_start_aps(u32 n);
u32 this_cpu(void);

/* BSP timer hook (main.c): heartbeat and CPU lines. */
void heartbeat_tick(void);

#endif
