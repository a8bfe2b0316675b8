/*
 * snippets.S - small functions whose exact instructions matter: each has a
 * global label on the instruction that should fault or trap (x_insn) or on
 * the instruction after it (x_after), so the C cases can check RIP exactly.
 * They take their argument in RDI, as run_guarded/run_user pass it.
 */
#include "defs.h"

#define SNIP(x) .globl x; x:
#define AT(x) .globl x; x:

	.text
	.code64

/* ---- memory accesses ---- */
SNIP(snip_read)
AT(snip_read_insn)
	movq	(%rdi), %rax
	ret

SNIP(snip_write)
AT(snip_write_insn)
	movq	$0x5a5a, (%rdi)
	ret

SNIP(snip_read_unaligned)		/* RDI + 1 */
AT(snip_read_unaligned_insn)
	movl	1(%rdi), %eax
	ret

/* ---- #DE ---- */
SNIP(snip_div0)
	xorl	%ecx, %ecx
	movl	$1, %eax
	xorl	%edx, %edx
AT(snip_div0_insn)
	divl	%ecx
	ret

SNIP(snip_div_overflow)			/* 2^64 / 1 does not fit in 64 bits */
	movl	$1, %edx
	xorl	%eax, %eax
	movl	$1, %ecx
AT(snip_div_overflow_insn)
	divq	%rcx
	ret

SNIP(snip_idiv_overflow)		/* INT64_MIN / -1 */
	movabsq	$0x8000000000000000, %rax
	cqto
	movq	$-1, %rcx
AT(snip_idiv_overflow_insn)
	idivq	%rcx
	ret

/* ---- #BP, #UD ---- */
SNIP(snip_int3)
	int3
AT(snip_int3_after)
	ret

SNIP(snip_int3_long)			/* CD 03 */
	.byte	0xcd, 0x03
AT(snip_int3_long_after)
	ret

SNIP(snip_ud2)
AT(snip_ud2_insn)
	ud2
	ret

SNIP(snip_push_es)			/* 06: invalid in 64-bit mode */
AT(snip_push_es_insn)
	.byte	0x06
	ret

SNIP(snip_into64)			/* CE: invalid in 64-bit mode */
AT(snip_into64_insn)
	.byte	0xce
	ret

SNIP(snip_lock_nop)			/* LOCK on an instruction that cannot take it */
AT(snip_lock_nop_insn)
	.byte	0xf0, 0x90
	ret

/* ---- segments: RDI = selector ---- */
SNIP(snip_load_ds)
AT(snip_load_ds_insn)
	movw	%di, %ds
	movw	$SEL_KDATA, %ax
	movw	%ax, %ds
	ret

SNIP(snip_load_ss)
AT(snip_load_ss_insn)
	movw	%di, %ss
	movw	$SEL_KDATA, %ax
	movw	%ax, %ss
	ret

SNIP(snip_ss_noncanonical)		/* RBP-based: an SS reference */
	pushq	%rbp
	movabsq	$0x8000000000000000, %rbp
AT(snip_ss_noncanonical_insn)
	movq	(%rbp), %rax
	popq	%rbp
	ret

SNIP(snip_gp_noncanonical)
	movabsq	$0x8000000000000000, %rax
AT(snip_gp_noncanonical_insn)
	movq	(%rax), %rax
	ret

/* ---- privileged instructions (run at CPL 3) ---- */
SNIP(snip_cli)
AT(snip_cli_insn)
	cli
	ret
SNIP(snip_hlt)
AT(snip_hlt_insn)
	hlt
	ret
SNIP(snip_mov_cr3)
AT(snip_mov_cr3_insn)
	movq	%cr3, %rax
	ret
SNIP(snip_wrmsr)
	movl	$0x10, %ecx
	xorl	%eax, %eax
	xorl	%edx, %edx
AT(snip_wrmsr_insn)
	wrmsr
	ret
SNIP(snip_inb)
AT(snip_inb_insn)
	inb	$0x80, %al
	ret
SNIP(snip_lgdt)
	subq	$16, %rsp
AT(snip_lgdt_insn)
	lgdt	(%rsp)
	addq	$16, %rsp
	ret

/* ---- int n ---- */
SNIP(snip_int_dpl0)
AT(snip_int_dpl0_insn)
	int	$VEC_DPL0
	ret

SNIP(snip_int_notpresent)
AT(snip_int_notpresent_insn)
	int	$VEC_NOTPRESENT
	ret

/* int 0x80 from CPL 3; RDI = struct { rsp_before, rsp_after; u16 cs, ss } */
SNIP(snip_int80)
	movq	%rsp, 0(%rdi)
	int	$VEC_INT80
AT(snip_int80_after)
	movq	%rsp, 8(%rdi)
	movw	%cs, 16(%rdi)
	movw	%ss, 18(%rdi)
	ret

/* int 0x83 (IST1) at CPL 0; RDI = u64 *rsp_before */
SNIP(snip_int_ist)
	movq	%rsp, (%rdi)
	int	$VEC_IST
AT(snip_int_ist_after)
	ret

/* ---- single-step and the shadows ---- */
SNIP(snip_single_step)
	pushfq
	orq	$0x100, (%rsp)
	popfq				/* TF = 1 from the next instruction on */
AT(snip_single_step_a)
	nop				/* traps after this one */
AT(snip_single_step_b)
	nop
	ret

SNIP(snip_movss_step)
	movw	%ss, %ax
	pushfq
	orq	$0x100, (%rsp)
	popfq
AT(snip_movss_step_insn)
	movw	%ax, %ss		/* the trap after it is held back... */
AT(snip_movss_step_a)
	nop				/* ...until after this one */
AT(snip_movss_step_b)
	nop
	ret

SNIP(snip_sti_hlt)
	sti
AT(snip_sti_hlt_insn)
	hlt
AT(snip_sti_hlt_after)
	cli
	ret

SNIP(snip_sti_nop)
	sti
AT(snip_sti_nop_a)
	nop
AT(snip_sti_nop_b)
	nop
	cli
	ret

/* ---- syscall / sysret, sysenter / sysexit ---- */

/* At CPL 3, DF set: RDI = struct { u16 cs, ss; u32 pad; u64 rflags } */
SNIP(snip_syscall)
	std
	syscall
AT(snip_syscall_after)
	pushfq
	popq	8(%rdi)
	cld
	movw	%cs, 0(%rdi)
	movw	%ss, 2(%rdi)
	ret

	.globl syscall_entry, sys_seen
syscall_entry:				/* CPL 0, still on the user stack */
	movq	%rcx, sys_seen + 0
	movq	%r11, sys_seen + 8
	movw	%cs, sys_seen + 16
	movw	%ss, sys_seen + 18
	pushfq
	popq	sys_seen + 24
	movq	%rsp, sys_seen + 32
	incq	sys_seen + 40
	sysretq

/* At CPL 3: RDI = struct { u16 cs, ss; u32 pad; u64 rsp_after, rsp_before } */
SNIP(snip_sysenter)
	movq	%rsp, 16(%rdi)
	movq	%rsp, %rcx
	leaq	snip_sysenter_after(%rip), %rdx
	sysenter
AT(snip_sysenter_after)
	movw	%cs, 0(%rdi)
	movw	%ss, 2(%rdi)
	movq	%rsp, 8(%rdi)
	ret

	.globl sysenter_entry, sysenter_seen
sysenter_entry:				/* CPL 0, RSP = IA32_SYSENTER_ESP */
	movw	%cs, sysenter_seen + 0
	movw	%ss, sysenter_seen + 2
	movq	%rsp, sysenter_seen + 8
	pushfq
	popq	sysenter_seen + 16
	incq	sysenter_seen + 24
	.byte	0x48, 0x0f, 0x35	/* sysexitq: RIP = RDX, RSP = RCX */

	.data
	.align 8
sys_seen:	.space 48		/* rcx, r11, cs/ss, rflags, rsp, count */
sysenter_seen:	.space 32		/* cs/ss, rsp, rflags, count */

/* ---- self-modifying code: its own writable page ---- */
	.section .smc, "awx"
	.align 4096
	.globl smc_func, smc_patch_and_call, smc_next_insn, xmc_func
smc_func:
	movl	$1, %eax		/* B8 imm32: the immediate is at smc_func + 1 */
	ret

smc_patch_and_call:			/* EDI = new immediate, stored from this page */
	movl	%edi, smc_func + 1(%rip)
	call	smc_func
	ret

smc_next_insn:				/* EDI = new immediate of the very next instruction */
	movl	%edi, 1f + 1(%rip)
1:	movl	$0, %eax
	ret

	.align 4096
xmc_func:				/* patched by one CPU, run by another */
	movl	$1, %eax
	ret
	.align 4096
	.globl code_buf
code_buf:				/* a page for generated code */
	.space	4096
