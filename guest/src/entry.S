/*
 * entry.S - multiboot v1 header, 32-bit entry stub, switch to long mode,
 * GDT, and the interrupt entry stubs.
 *
 * The loader (QEMU -kernel or Godwit) enters _start in 32-bit protected
 * mode: flat segments, paging off, interrupts off, EAX = 0x2BADB002,
 * EBX = physical address of the multiboot information structure.
 */
#include "layout.h"

/* ---------------------------------------------------------------------- */
	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

/* ---------------------------------------------------------------------- */
	.section .text.boot32, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	/* .data, not .bss: they must survive the .bss clear below */
	movl	%eax, boot_magic
	movl	%ebx, boot_info

	/* Zero .bss (small on purpose; big buffers live in .bss.noinit). */
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$2, %ecx
	xorl	%eax, %eax
	rep stosl

	/* PML4[0] -> PDPT */
	movl	$boot_pdpt, %eax
	orl	$0x3, %eax			/* present, writable */
	movl	%eax, boot_pml4

	/* PDPT[i] -> PD[i], i < BOOT_NPD */
	movl	$boot_pd, %eax
	orl	$0x3, %eax
	xorl	%ecx, %ecx
1:	movl	%eax, boot_pdpt(,%ecx,8)
	addl	$4096, %eax
	incl	%ecx
	cmpl	$BOOT_NPD, %ecx
	jb	1b

	/*
	 * Identity-map the first 4 GiB with 2 MiB pages. The 3-4 GiB hole
	 * (PCI, IOAPIC 0xFEC00000, LAPIC 0xFEE00000) is mapped uncached
	 * (PCD|PWT). RAM above 4 GiB is mapped later from C, following the
	 * multiboot memory map (boot.c).
	 */
	xorl	%ecx, %ecx
2:	movl	%ecx, %eax
	shll	$21, %eax
	orl	$0x83, %eax			/* present, writable, 2 MiB */
	cmpl	$1536, %ecx			/* >= 3 GiB ? */
	jb	3f
	orl	$0x18, %eax			/* PWT | PCD */
3:	movl	%eax, boot_pd(,%ecx,8)		/* high dword is 0 (.bss) */
	incl	%ecx
	cmpl	$2048, %ecx
	jb	2b

	/* CR4.PAE, CR3, EFER.LME, then CR0.PG: IA-32e compatibility mode */
	movl	%cr4, %eax
	orl	$0x20, %eax
	movl	%eax, %cr4
	movl	$boot_pml4, %eax
	movl	%eax, %cr3
	movl	$0xC0000080, %ecx
	rdmsr
	orl	$0x100, %eax
	wrmsr
	lgdt	gdt_ptr				/* 32-bit lgdt reads limit + low 4 bytes of base */
	movl	%cr0, %eax
	orl	$0x80000001, %eax
	movl	%eax, %cr0
	/* far jump into the 64-bit code segment */
	ljmp	$KERNEL_CS, $long_entry

/* ---------------------------------------------------------------------- */
	.text
	.code64
long_entry:
	movw	$KERNEL_DS, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	xorl	%eax, %eax
	movw	%ax, %fs
	movw	%ax, %gs
	movq	$boot_stack + BOOT_STACK_SIZE, %rsp
	movl	boot_magic, %edi
	movl	boot_info, %esi
	call	kmain
4:	cli
	hlt
	jmp	4b

/*
 * Interrupt entry: 256 stubs, 16 bytes apart (isr_stubs + 16 * vector).
 * Each pushes a dummy error code where the CPU pushes none, then the vector
 * number, and joins isr_common, which saves the general registers and calls
 * isr_dispatch(struct irq_frame *). No FPU/SSE state exists to save: the C
 * code is built with -mgeneral-regs-only. Returns with iretq (a 32-bit iret
 * is not supported by the KVM emulator).
 */
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
	jmp	isr_common
	.set vec, vec + 1
	.endr

isr_common:
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
	movq	%rsp, %rdi		/* 16-byte aligned: 5 + 2 + 15 quadwords */
	call	isr_dispatch
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
	addq	$16, %rsp		/* vector, error code */
	iretq

/* ---------------------------------------------------------------------- */
	.section .rodata
	.align 16
	.globl gdt, gdt_ptr
gdt:
	.quad	0
	.quad	0x00AF9B000000FFFF	/* 0x08: 64-bit code, accessed */
	.quad	0x00CF93000000FFFF	/* 0x10: flat data, accessed */
	.quad	0x00CF9B000000FFFF	/* 0x18: 32-bit code, accessed */
gdt_end:
	.align 8
gdt_ptr:
	.word	gdt_end - gdt - 1
	.quad	gdt

	.data
	.align 8
	.globl boot_magic, boot_info
boot_magic:	.long 0
boot_info:	.long 0

	.section .bss, "aw", @nobits
	.align 4096
	.globl boot_pml4, boot_pdpt, boot_pd
boot_pml4:	.space 4096
boot_pdpt:	.space 4096
boot_pd:	.space 4096 * BOOT_NPD

	.section .bss.noinit, "aw", @nobits
	.align 16
	.globl boot_stack
boot_stack:	.space BOOT_STACK_SIZE
