/*
 * modes.S - excursions out of 64-bit mode.
 *
 * compat_call runs a 32-bit function in compatibility mode (a 32-bit code
 * segment under long mode) and comes back.
 *
 * legacy_trip leaves long mode altogether: compatibility mode, paging off,
 * EFER.LME off (32-bit protected mode), then, as the command asks, 16-bit
 * protected mode and real mode, or 32-bit paging (PSE or PAE); then all the
 * way back up to 64-bit mode. Each stage computes something and stores it
 * in the blob's result words for the C side to check. The 16-bit and real
 * mode code must lie below 1 MiB: the blob [low_start, low_end) is copied
 * to LOW_BASE (segment LOW_SEG) at boot, so its addresses are computed with
 * L() (linear) and O() (offset from LOW_BASE).
 *
 * A fault in the 32- or 16-bit protected-mode stages goes through a 32-bit
 * IDT (idt32) and one in real mode through the blob's IVT; both record the
 * vector, error code and EIP/IP and climb back to long mode with a non-zero
 * status, so the case fails instead of the machine resetting.
 */
#include "defs.h"

#define L(x) ((x) - low_start + LOW_BASE)
#define O(x) ((x) - low_start)

/* ---- compatibility mode --------------------------------------------------- */
	.text
	.code64
	.globl compat_call
compat_call:				/* rdi = 32-bit function, rsi = its argument */
	pushq	%rbx
	pushq	%rbp
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	movq	%rsp, compat_rsp
	movl	%edi, %eax
	movl	%esi, %edi
	pushq	$SEL_KCODE32
	pushq	$compat_tramp
	lretq
	.code32
compat_tramp:
	call	*%eax
	ljmp	$SEL_KCODE64, $compat_back
	.code64
compat_back:
	movq	compat_rsp, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbp
	popq	%rbx
	ret

/* Functions run by compat_call; EDI = argument. */
	.code32
	.globl compat_compute
compat_compute:				/* EDI = u32 out[4] */
	movl	%cs, %eax
	movl	%eax, 0(%edi)
	movl	$0x7ffffffe, %eax
	.byte	0x40, 0x40		/* inc %eax twice: REX prefixes in 64-bit mode */
	movl	%eax, 4(%edi)
	movl	%esp, %ecx
	pushl	%eax
	subl	%esp, %ecx
	popl	%eax
	movl	%ecx, 8(%edi)
	movl	$0xC0000080, %ecx
	rdmsr
	movl	%eax, 12(%edi)
	ret

	.globl compat_into, compat_into_insn, compat_into_after
compat_into:
	xorl	%eax, %eax		/* OF = 0: into does nothing */
	into
	movl	$0x7fffffff, %eax
	addl	$1, %eax		/* OF = 1 */
compat_into_insn:
	into
compat_into_after:
	ret

	.globl compat_bound, compat_bound_insn
compat_bound:				/* EDI = s32 bounds[2] = {10, 20} */
	movl	$15, %eax
	bound	%eax, (%edi)		/* in range: no trap */
	movl	$25, %eax
compat_bound_insn:
	bound	%eax, (%edi)
	ret

/* ---- legacy modes ----------------------------------------------------------- */
	.code64
	.globl legacy_trip
legacy_trip:				/* edi = LEG_* command, esi = argument */
	pushq	%rbx
	pushq	%rbp
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	movq	%rsp, L(leg_rsp)
	movl	%edi, L(leg_cmd)
	movl	%esi, L(leg_arg)
	movl	$0, L(leg_status)
	movq	%cr3, %rax
	movl	%eax, L(leg_cr3)
	movq	%cr4, %rax
	movl	%eax, L(leg_cr4)
	sidt	L(leg_idt64)
	pushq	$SEL_KCODE32
	pushq	$L(pm32_down)
	lretq

legacy_back:				/* from pm32_up, in 64-bit mode */
	movq	L(leg_rsp), %rsp	/* the upper halves are undefined after legacy mode */
	lidt	L(leg_idt64)
	call	load_segments
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbp
	popq	%rbx
	movl	L(leg_status), %eax
	ret

	.section .lowblob, "awx"
	.globl low_start, low_end, idt32, pm_stubs, rm_stubs, rm_int30, rm_de, rm_other
low_start:

	.code32
pm32_down:				/* compatibility mode, identity-mapped code */
	movl	%cr0, %eax
	andl	$0x7fffffff, %eax	/* paging off: leaves IA-32e mode */
	movl	%eax, %cr0
	movl	$0xC0000080, %ecx
	rdmsr
	andl	$~0x100, %eax		/* EFER.LME off */
	wrmsr
	movw	$SEL_KDATA, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	%ax, %fs
	movw	%ax, %gs
	lidt	L(idt32_ptr)
	movl	L(leg_cmd), %eax
	cmpl	$LEG_PSE, %eax
	je	pse_test
	cmpl	$LEG_PAE, %eax
	je	pae_test

	/* 32-bit protected mode: record CR0 and EFER, compute */
	movl	%cr0, %eax
	movl	%eax, L(r_pm32_cr0)
	movl	$0xC0000080, %ecx
	rdmsr
	movl	%eax, L(r_pm32_efer)
	movl	$0x7ffffffe, %eax
	.byte	0x40, 0x40		/* inc %eax, inc %eax */
	movl	%eax, L(r_pm32_val)
	movl	%esp, %ecx
	pushl	%eax
	subl	%esp, %ecx
	popl	%eax
	movl	%ecx, L(r_pm32_push)
	cmpl	$LEG_PM32, L(leg_cmd)
	je	pm32_up
	ljmp	$SEL_KCODE16, $O(pm16_entry)

pse_test:				/* 32-bit paging, CR4.PSE, a 4 MiB page at 0xC0000000 */
	movl	%cr4, %eax
	andl	$~0x20, %eax
	orl	$0x10, %eax
	movl	%eax, %cr4
	movl	$pd32, %eax
	movl	%eax, %cr3
	movl	%cr0, %eax
	orl	$0x80000000, %eax
	movl	%eax, %cr0
	movl	L(leg_arg), %eax
	movl	%eax, 0xC0001234
	movl	0xC0001234, %ebx
	movl	%ebx, L(r_paged_read)
	movl	%cr0, %eax
	andl	$0x7fffffff, %eax
	movl	%eax, %cr0
	jmp	pm32_up

pae_test:				/* PAE paging (CR4.PAE still set), a 2 MiB page at 0xC0000000 */
	movl	$pae_pdpt, %eax
	movl	%eax, %cr3
	movl	%cr0, %eax
	orl	$0x80000000, %eax
	movl	%eax, %cr0
	movl	L(leg_arg), %eax
	movl	%eax, 0xC0005678
	movl	0xC0005678, %ebx
	movl	%ebx, L(r_paged_read)
	movl	%cr0, %eax
	andl	$0x7fffffff, %eax
	movl	%eax, %cr0
	jmp	pm32_up

	.code16
pm16_entry:				/* 16-bit protected mode, CS = SEL_KCODE16 */
	movw	$SEL_KDATA16, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	$O(low_stack_top), %sp
	movl	%cr0, %eax
	movl	%eax, O(r_pm16_cr0)
	movw	%cs, O(r_pm16_cs)
	movw	$0xffff, %ax
	addw	$1, %ax			/* 16-bit wrap: AX = 0, CF = 1 */
	pushfw
	popw	%bx
	movw	%ax, O(r_pm16_val)
	movw	%bx, O(r_pm16_flags)
	movw	%sp, %cx
	pushw	%ax
	subw	%sp, %cx
	popw	%ax
	movw	%cx, O(r_pm16_push)
	cmpl	$LEG_PM16, O(leg_cmd)
	je	1f
	movl	%cr0, %eax
	andl	$~1, %eax		/* PE off: real mode */
	movl	%eax, %cr0
	ljmp	$LOW_SEG, $O(real_entry)
1:	ljmpl	$SEL_KCODE32, $L(pm32_up)

real_entry:				/* real mode, CS = LOW_SEG */
	movw	$LOW_SEG, %ax
	movw	%ax, %ds
	movw	%ax, %ss
	movw	$O(low_stack_top), %sp
	lidt	O(ivt_ptr)
	movl	%cr0, %eax
	movl	%eax, O(r_real_cr0)
	movw	$LOW_SEG + 1, %ax	/* ES:x-16 is the same byte as DS:x */
	movw	%ax, %es
	movw	%es:O(r_magic) - 16, %ax
	movw	%ax, O(r_real_seg)
	int	$0x30			/* through the IVT, back by iret */
	xorb	%cl, %cl
	movw	$1, %ax
	divb	%cl			/* #DE through the IVT: rm_de skips it */
	movw	%sp, %cx
	pushw	%ax
	subw	%sp, %cx
	popw	%ax
	movw	%cx, O(r_real_push)
	movl	%cr0, %eax
	orl	$1, %eax
	movl	%eax, %cr0
	ljmpl	$SEL_KCODE32, $L(pm32_up)

rm_int30:
	incw	%cs:O(r_real_int30)
	iret
rm_de:
	incw	%cs:O(r_real_de)
	pushw	%bp
	movw	%sp, %bp
	addw	$2, 2(%bp)		/* return past the 2-byte div */
	popw	%bp
	iret

	/* unexpected real-mode exceptions: IVT[v] -> rm_stubs + 8 * v */
	.align 8
rm_stubs:
	.set vec, 0
	.rept 32
	.align 8
	pushw	$vec
	jmp	rm_fault
	.set vec, vec + 1
	.endr
rm_other:
	pushw	$0xff
rm_fault:
	popw	%ax
	movw	%ax, %cs:O(leg_fault_vec)
	popw	%ax
	movw	%ax, %cs:O(leg_fault_eip)
	movw	$3, %cs:O(leg_status)
	movl	%cr0, %eax
	orl	$1, %eax
	movl	%eax, %cr0
	ljmpl	$SEL_KCODE32, $L(pm32_up)

	.code32
	/* unexpected protected-mode exceptions: idt32[v] -> pm_stubs + 16 * v */
	.align 16
pm_stubs:
	.set vec, 0
	.rept 32
	.align 16
	.if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17)
	.else
	pushl	$0
	.endif
	pushl	$vec
	jmp	pm_fault
	.set vec, vec + 1
	.endr
pm_fault:
	movw	$SEL_KDATA, %ax
	movw	%ax, %ds
	popl	%eax
	movl	%eax, L(leg_fault_vec)
	popl	%eax
	movl	%eax, L(leg_fault_err)
	popl	%eax
	movl	%eax, L(leg_fault_eip)
	movl	$1, L(leg_status)
	/* fall through */

pm32_up:				/* 32-bit protected mode, paging off -> 64-bit mode */
	movw	$SEL_KDATA, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	%ax, %fs
	movw	%ax, %gs
	movl	L(leg_rsp), %esp
	movl	L(leg_cr4), %eax
	movl	%eax, %cr4
	movl	L(leg_cr3), %eax
	movl	%eax, %cr3
	movl	$0xC0000080, %ecx
	rdmsr
	orl	$0x100, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$0x80000001, %eax
	movl	%eax, %cr0
	ljmp	$SEL_KCODE64, $legacy_back

/* ---- blob data ---- */
	.align 16
	.globl leg_status, leg_fault_vec, leg_fault_err, leg_fault_eip
	.globl r_pm32_cr0, r_pm32_efer, r_pm32_val, r_pm32_push
	.globl r_pm16_cr0, r_pm16_cs, r_pm16_val, r_pm16_flags, r_pm16_push
	.globl r_real_cr0, r_real_seg, r_real_int30, r_real_de, r_real_push, r_magic
	.globl r_paged_read, ivt
leg_rsp:	.quad 0
leg_idt64:	.space 16
leg_cmd:	.long 0
leg_arg:	.long 0
leg_cr3:	.long 0
leg_cr4:	.long 0
leg_status:	.long 0
leg_fault_vec:	.long 0
leg_fault_err:	.long 0
leg_fault_eip:	.long 0
r_pm32_cr0:	.long 0
r_pm32_efer:	.long 0
r_pm32_val:	.long 0
r_pm32_push:	.long 0
r_pm16_cr0:	.long 0
r_pm16_cs:	.word 0
r_pm16_val:	.word 0
r_pm16_flags:	.word 0
r_pm16_push:	.word 0
r_real_cr0:	.long 0
r_real_seg:	.word 0
r_real_int30:	.word 0
r_real_de:	.word 0
r_real_push:	.word 0
r_magic:	.word 0x5a17
r_paged_read:	.long 0
	.align 8
idt32_ptr:
	.word	32 * 8 - 1
	.long	idt32
ivt_ptr:
	.word	256 * 4 - 1
	.long	L(ivt)
	.align 16
ivt:		.space	256 * 4
low_stack:	.space	512
low_stack_top:
low_end:

	.data
	.align 8
compat_rsp:	.quad 0
idt32:		.space 32 * 8
