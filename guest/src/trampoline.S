/*
 * trampoline.S - application processor start-up code.
 *
 * smp.c copies [tramp_start, tramp_end) to TRAMP_BASE (0x8000) and sends
 * INIT/SIPI with vector 0x08, so an AP starts here in real mode with
 * CS = 0x0800, IP = 0. The code is position-dependent on TRAMP_BASE: every
 * address inside it is computed with T(). It goes real -> protected ->
 * long mode (sharing the BSP's page tables), loads the stack the BSP left
 * in ap_boot_stack and calls ap_main through a register (a relative call
 * would be wrong in the copy).
 */
#include "layout.h"

#define T(x) ((x) - tramp_start + TRAMP_BASE)

	.section .tramp, "ax"
	.globl tramp_start, tramp_end, tramp_code32, tramp_code64, tramp_data

	.code16
tramp_start:
	cli
	cld
	xorw	%ax, %ax
	movw	%ax, %ds
	lgdtl	T(tramp_gdt_ptr)
	movl	%cr0, %eax
	orl	$1, %eax			/* PE */
	movl	%eax, %cr0
	ljmpl	$KERNEL_CS32, $T(tramp_code32)

	.code32
tramp_code32:
	movw	$KERNEL_DS, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movl	%cr4, %eax
	orl	$0x20, %eax			/* PAE */
	movl	%eax, %cr4
	movl	$boot_pml4, %eax
	movl	%eax, %cr3
	movl	$0xC0000080, %ecx		/* EFER.LME */
	rdmsr
	orl	$0x100, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$0x80000000, %eax		/* PG */
	movl	%eax, %cr0
	ljmp	$KERNEL_CS, $T(tramp_code64)

	.code64
tramp_code64:
	movw	$KERNEL_DS, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	xorl	%eax, %eax
	movw	%ax, %fs
	movw	%ax, %gs
	movq	ap_boot_stack, %rsp		/* absolute address, not RIP-relative */
	movq	$ap_main, %rax
	call	*%rax
1:	cli
	hlt
	jmp	1b

	.align 16
tramp_data:
tramp_gdt:
	.quad	0
	.quad	0x00AF9B000000FFFF	/* 0x08: 64-bit code */
	.quad	0x00CF93000000FFFF	/* 0x10: data */
	.quad	0x00CF9B000000FFFF	/* 0x18: 32-bit code */
tramp_gdt_end:
tramp_gdt_ptr:
	.word	tramp_gdt_end - tramp_gdt - 1
	.long	T(tramp_gdt)
tramp_end:
