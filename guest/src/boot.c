/*
 * boot.c - read the multiboot v1 information structure (memory map, command
 * line) and extend the identity mapping to RAM above 4 GiB.
 */
#include "boot.h"
#include "layout.h"
#include "lib.h"
#include "console.h"

struct mb_info {
	u32 flags;
	u32 mem_lower, mem_upper;	/* KiB, flag bit 0 */
	u32 boot_device;
	u32 cmdline;			/* flag bit 2 */
	u32 mods_count, mods_addr;
	u32 syms[4];
	u32 mmap_length, mmap_addr;	/* flag bit 6 */
} __packed;

struct mb_mmap_entry {
	u32 size;			/* size of the rest of the entry */
	u64 base, len;
	u32 type;			/* 1 = available RAM */
} __packed;

#define MB_INFO_MEM	(1u << 0)
#define MB_INFO_CMDLINE	(1u << 2)
#define MB_INFO_MMAP	(1u << 6)

#define PDE_2M		0x83UL		/* present, writable, 2 MiB page */

struct boot_params boot;
extern u64 boot_pd[BOOT_NPD * 512];

static void add_ram(u64 base, u64 len)
{
	if (!len || boot.nram >= MAX_RAM_REGIONS)
		return;
	boot.ram[boot.nram].base = base;
	boot.ram[boot.nram].len = len;
	boot.nram++;
	boot.ram_bytes += len;
}

/* The entry stub mapped 0-4 GiB; map the 2 MiB pages of RAM above that. */
static void map_high_ram(void)
{
	const u64 limit = (u64)BOOT_NPD * GiB;

	boot.mapped_top = limit;
	for (int i = 0; i < boot.nram; i++) {
		u64 start = MAX(boot.ram[i].base, 4 * GiB) & ~(2 * MiB - 1);
		u64 end = MIN(boot.ram[i].base + boot.ram[i].len, limit);
		for (u64 a = start; a < end; a += 2 * MiB)
			boot_pd[a >> 21] = a | PDE_2M;
	}
	write_cr3(read_cr3());	/* flush the TLB */
}

void boot_parse(u32 magic, u32 info_addr)
{
	const struct mb_info *mbi = (const struct mb_info *)(uintptr_t)info_addr;

	if (magic != MB_BOOT_MAGIC || !info_addr) {
		kprintf("WARN bad multiboot magic 0x%x, assuming 64 MiB and no command line\n", magic);
		add_ram(0, 0x9F000);
		add_ram(1 * MiB, 63 * MiB);
		map_high_ram();
		return;
	}

	if ((mbi->flags & MB_INFO_CMDLINE) && mbi->cmdline) {
		const char *s = (const char *)(uintptr_t)mbi->cmdline;
		size_t i = 0;
		while (s[i] && i < sizeof(boot.cmdline) - 1) {
			boot.cmdline[i] = s[i];
			i++;
		}
		boot.cmdline[i] = '\0';
	}

	if (mbi->flags & MB_INFO_MMAP) {
		u64 p = mbi->mmap_addr, end = p + mbi->mmap_length;
		boot.have_mmap = true;
		while (p + sizeof(struct mb_mmap_entry) <= end) {
			const struct mb_mmap_entry *e = (const struct mb_mmap_entry *)p;
			if (e->type == 1)
				add_ram(e->base, e->len);
			p += e->size + 4;
		}
	} else if (mbi->flags & MB_INFO_MEM) {
		add_ram(0, (u64)mbi->mem_lower * KiB);
		add_ram(1 * MiB, (u64)mbi->mem_upper * KiB);
	}
	map_high_ram();
}

bool cmdline_get(const char *key, char *buf, size_t size)
{
	size_t klen = strlen(key);
	const char *p = boot.cmdline;

	buf[0] = '\0';
	while (*p) {
		while (*p == ' ')
			p++;
		if (!strncmp(p, key, klen) && p[klen] == '=') {
			p += klen + 1;
			size_t i = 0;
			while (*p && *p != ' ' && i + 1 < size)
				buf[i++] = *p++;
			buf[i] = '\0';
			return true;
		}
		while (*p && *p != ' ')
			p++;
	}
	return false;
}
