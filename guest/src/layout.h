/*
 * layout.h - fixed addresses and selectors shared by assembly and C.
 */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

#define KERNEL_CS	0x08	/* 64-bit code */
#define KERNEL_DS	0x10	/* flat data */
#define KERNEL_CS32	0x18	/* 32-bit code (AP trampoline only) */

#define MB_MAGIC	0x1BADB002
#define MB_BOOT_MAGIC	0x2BADB002
#define MB_FLAGS	0x00000003	/* page-align modules, want memory info */

/* Boot page tables: one PML4, one PDPT, BOOT_NPD page directories of
 * 2 MiB pages, i.e. BOOT_NPD GiB of identity-mapped physical space. */
#define BOOT_NPD	16

/* AP real-mode trampoline: copied here, entered via SIPI vector 0x08. */
#define TRAMP_BASE	0x8000
#define TRAMP_SIPI_VEC	(TRAMP_BASE >> 12)

#define BOOT_STACK_SIZE	0x8000
#define AP_STACK_SIZE	0x4000
#define MAX_CPUS	16

#endif
