/*
 * workload.h - the memory-dirtying workload and its verifier.
 */
#ifndef GUEST_WORKLOAD_H
#define GUEST_WORKLOAD_H

#include "arch.h"

void workload_init(void);		/* find the buffer regions (>= 16 MiB) */
u64 workload_buffer_mib(void);		/* RAM available to the buffer */

void cmd_w(const char *args);
void cmd_verify(void);
void cmd_poke(const char *args);
void workload_pause(bool pause);

/* One batch of the sweep (main loop). Returns false if there was nothing
 * to do right now (stopped, paused, or ahead of the rate). */
bool workload_step(void);

u64 workload_dirtied(void);
void workload_describe(char *buf, size_t size);	/* "<alloc>,<wset>,<rate>" */

#endif
