/*
 * entry.S - the conformance guest's start: multiboot v1 header, 32-bit entry
 * stub and the switch to long mode, the GDT, the interrupt entry stubs, the
 * catch/throw pair that recovers from exceptions, the way into CPL 3, and
 * the AP start-up trampoline.
 */
#include "defs.h"

#define MB_MAGIC	0x1BADB002
#define MB_FLAGS	0x00000003

	.section .multiboot, "a"
	.align 4
	.long	MB_MAGIC
	.long	MB_FLAGS
	.long	-(MB_MAGIC + MB_FLAGS)

/* ---- 32-bit entry: EAX = multiboot magic, EBX = info, paging off ------- */
	.section .text.boot32, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	movl	%eax, boot_magic
	movl	%ebx, boot_info
	movl	$bsp_stack + STACK_SIZE, %esp	/* multiboot leaves ESP undefined */

	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$2, %ecx
	xorl	%eax, %eax
	rep stosl

	/* PML4[0] -> PDPT, PDPT[0..3] -> PD 0..3: identity map of 4 GiB in
	 * 2 MiB pages, user-accessible (the cases run kernel functions at
	 * CPL 3), 3-4 GiB uncached (IOAPIC, LAPIC). */
	movl	$id_pdpt + 7, id_pml4
	movl	$id_pd + 7, %eax
	xorl	%ecx, %ecx
1:	movl	%eax, id_pdpt(,%ecx,8)
	addl	$4096, %eax
	incl	%ecx
	cmpl	$4, %ecx
	jb	1b
	xorl	%ecx, %ecx
2:	movl	%ecx, %eax
	shll	$21, %eax
	orl	$0x87, %eax			/* P, RW, US, PS */
	cmpl	$1536, %ecx
	jb	3f
	orl	$0x18, %eax			/* PWT, PCD */
3:	movl	%eax, id_pd(,%ecx,8)
	incl	%ecx
	cmpl	$2048, %ecx
	jb	2b

	lgdt	gdt_ptr
	call	enter_long_mode32
	ljmp	$SEL_KCODE64, $long_entry

/* CR4.PAE, CR3, EFER (LME, NXE, SCE), CR0 (PG, WP, PE): the BSP's stub and
 * the AP trampoline share it. Returns in compatibility mode. */
	.globl enter_long_mode32
enter_long_mode32:
	movl	$0x20, %eax
	movl	%eax, %cr4
	movl	$id_pml4, %eax
	movl	%eax, %cr3
	movl	$0xC0000080, %ecx
	rdmsr
	orl	$0x901, %eax
	wrmsr
	movl	$0x80010031, %eax		/* PG, WP, NE, ET, PE */
	movl	%eax, %cr0
	ret

	.text
	.code64
long_entry:
	call	load_segments
	movq	$bsp_stack + STACK_SIZE, %rsp
	movl	boot_magic, %edi
	movl	boot_info, %esi
	call	kmain
4:	cli
	hlt
	jmp	4b

/* Reload DS, ES, SS with kernel data and FS, GS with null. */
	.globl load_segments
load_segments:
	movw	$SEL_KDATA, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	xorl	%eax, %eax
	movw	%ax, %fs
	movw	%ax, %gs
	ret

/* ---- interrupt entry ------------------------------------------------------
 * 256 stubs, 16 bytes apart. Each pushes a dummy error code where the CPU
 * pushes none, then the vector, and joins trap_common, which saves the
 * general registers and calls trap(struct frame *). */
	.align 16
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.rept 256
	.align 16
	.if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq	$0
	.endif
	pushq	$vec
	jmp	trap_common
	.set vec, vec + 1
	.endr

trap_common:
	pushq	%rax
	pushq	%rbx
	pushq	%rcx
	pushq	%rdx
	pushq	%rsi
	pushq	%rdi
	pushq	%rbp
	pushq	%r8
	pushq	%r9
	pushq	%r10
	pushq	%r11
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	cld
	movq	%rsp, %rdi
	call	trap
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%r11
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rbp
	popq	%rdi
	popq	%rsi
	popq	%rdx
	popq	%rcx
	popq	%rbx
	popq	%rax
	addq	$16, %rsp
	iretq

/* ---- catch / throw ---------------------------------------------------------
 * struct jmpbuf { rbx, rbp, r12, r13, r14, r15, rsp, rip, rflags }.
 * catch_setjmp returns 0; catch_longjmp(b, v) makes it return v again, at
 * CPL 0 in 64-bit mode with the kernel's data segments and the saved RFLAGS
 * (so IF, TF, AC are as they were). Used by the exception handler. */
	.globl catch_setjmp, catch_longjmp
catch_setjmp:
	movq	%rbx, 0(%rdi)
	movq	%rbp, 8(%rdi)
	movq	%r12, 16(%rdi)
	movq	%r13, 24(%rdi)
	movq	%r14, 32(%rdi)
	movq	%r15, 40(%rdi)
	leaq	8(%rsp), %rax
	movq	%rax, 48(%rdi)
	movq	(%rsp), %rax
	movq	%rax, 56(%rdi)
	pushfq
	popq	64(%rdi)
	xorl	%eax, %eax
	ret

catch_longjmp:
	call	load_segments
	movq	0(%rdi), %rbx
	movq	8(%rdi), %rbp
	movq	16(%rdi), %r12
	movq	24(%rdi), %r13
	movq	32(%rdi), %r14
	movq	40(%rdi), %r15
	movq	48(%rdi), %rsp
	pushq	64(%rdi)
	popfq
	movl	%esi, %eax
	jmpq	*56(%rdi)

/* ---- CPL 3 -----------------------------------------------------------------
 * enter_user(fn, arg, user_rsp, rflags): iretq to fn(arg) at CPL 3 in 64-bit
 * mode; when fn returns, int VEC_USER_EXIT hands control back (the handler
 * throws to the caller's catch point). */
	.globl enter_user
enter_user:
	pushq	$(SEL_UDATA | 3)
	pushq	%rdx
	pushq	%rcx
	pushq	$(SEL_UCODE64 | 3)
	pushq	$user_start
	movq	%rdi, %rax
	movq	%rsi, %rdi
	iretq
user_start:
	call	*%rax
	int	$VEC_USER_EXIT
	ud2

/* ---- AP start-up trampoline --------------------------------------------------
 * Copied to TRAMP_BASE; an AP starts at CS = 0x0800, IP = 0 in real mode.
 * It loads the kernel GDT (its 32-bit base is reachable from real mode with
 * lgdtl), enters long mode like the BSP and calls ap_entry64 with the
 * stack the BSP left in ap_boot_stack. */
#define T(x) ((x) - tramp_start + TRAMP_BASE)
	.section .tramp, "ax"
	.globl tramp_start, tramp_end
	.code16
tramp_start:
	cli
	cld
	xorw	%ax, %ax
	movw	%ax, %ds
	lgdtl	T(tramp_gdt_ptr)
	movl	%cr0, %eax
	orl	$1, %eax
	movl	%eax, %cr0
	ljmpl	$SEL_KCODE32, $T(tramp32)
	.code32
tramp32:
	movw	$SEL_KDATA, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movl	$T(tramp_stack_top), %esp
	movl	$enter_long_mode32, %eax	/* absolute: this code runs from a copy */
	call	*%eax
	ljmp	$SEL_KCODE64, $ap_entry64
	.align 8
tramp_gdt_ptr:
	.word	GDT_BYTES - 1
	.long	gdt
	.align 16
	.space	64
tramp_stack_top:
tramp_end:

	.text
	.code64
ap_entry64:
	call	load_segments
	movq	ap_boot_stack, %rsp
	movl	ap_boot_cpu, %edi
	call	ap_main
5:	cli
	hlt
	jmp	5b

/* ---- data ------------------------------------------------------------------ */
	.data
	.align 16
	.globl gdt, gdt_ptr
gdt:
	.quad	0
	.quad	0x00AF9B000000FFFF	/* 0x08 kernel code, 64-bit */
	.quad	0x00CF93000000FFFF	/* 0x10 kernel data */
	.quad	0x00CFFB000000FFFF	/* 0x18 user code, 32-bit */
	.quad	0x00CFF3000000FFFF	/* 0x20 user data */
	.quad	0x00AFFB000000FFFF	/* 0x28 user code, 64-bit */
	.quad	0x00CFF3000000FFFF	/* 0x30 user data (sysexit) */
	.quad	0x00CF9B000000FFFF	/* 0x38 kernel code, 32-bit */
	.quad	0x00009B010000FFFF	/* 0x40 kernel code, 16-bit, base 0x10000 */
	.quad	0x000093010000FFFF	/* 0x48 kernel data, 16-bit, base 0x10000 */
	.quad	0x00CF13000000FFFF	/* 0x50 data, not present */
	.quad	0x00AF99000000FFFF	/* 0x58 execute-only code, 64-bit */
	.space	16 * MAX_CPUS		/* 0x60 TSS descriptors, filled by C */
	.align 8
gdt_ptr:
	.word	GDT_BYTES - 1
	.quad	gdt

	.globl boot_magic, boot_info, ap_boot_stack, ap_boot_cpu
	.align 8
boot_magic:	.long 0
boot_info:	.long 0
ap_boot_stack:	.quad 0
ap_boot_cpu:	.long 0

	.section .bss, "aw", @nobits
	.align 4096
	.globl id_pml4, id_pdpt, id_pd
id_pml4:	.space 4096
id_pdpt:	.space 4096
id_pd:		.space 4 * 4096

	.section .bss.noinit, "aw", @nobits
	.align 16
	.globl bsp_stack
bsp_stack:	.space STACK_SIZE
