/*
 * boot.h - multiboot information: memory map and command line.
 */
#ifndef GUEST_BOOT_H
#define GUEST_BOOT_H

#include "arch.h"

#define MAX_RAM_REGIONS 32

struct mem_region {
	u64 base, len;
};

struct boot_params {
	char cmdline[256];
	struct mem_region ram[MAX_RAM_REGIONS];	/* type-1 (available) ranges */
	int nram;
	u64 ram_bytes;		/* sum of all available ranges */
	u64 mapped_top;		/* RAM above this was not mapped (BOOT_NPD GiB) */
	bool have_mmap;
};

extern struct boot_params boot;

/* Copy what we need out of the loader's multiboot information, then map
 * RAM above 4 GiB. Must run before anything writes low memory. */
void boot_parse(u32 magic, u32 info);

/* Value of "key=value" on the command line, copied into buf ("" if the key
 * is absent; returns false then). */
bool cmdline_get(const char *key, char *buf, size_t size);

#endif
