/*
 * loops.h - the LOOP command: fixed instruction loops on every CPU.
 */
#ifndef GUEST_LOOPS_H
#define GUEST_LOOPS_H

#include "arch.h"

/* `LOOP <kind> <iterations>` (main.c's command table). */
void cmd_loop(const char *args);
/* Called by each AP when it wakes: runs a LOOP job it has not run yet;
 * *seen holds the last job generation this CPU ran. */
void loops_ap_poll(u64 *seen);

#endif
