/*
 * hostexec: runs single x86-64 instructions natively, for the golden table
 * of TestALUGolden (testdata/alu_golden.txt). Each input line is
 *
 *     INSNHEX MASK RAX RBX RCX RDX RFLAGS      (hex numbers)
 *
 * and is echoed with the registers and RFLAGS after the instruction:
 *
 *     INSNHEX MASK RAX RBX RCX RDX RFLAGS -> RAX RBX RCX RDX RFLAGS
 *
 * Regenerate (on an x86-64 Linux host):
 *
 *     GODWIT_ALU_CASES=/tmp/cases.txt go test -run TestALUGolden ./internal/emu/cpu/
 *     gcc -O2 -o /tmp/hostexec internal/emu/cpu/testdata/hostexec.c
 *     /tmp/hostexec < /tmp/cases.txt > internal/emu/cpu/testdata/alu_golden.txt
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

struct st { uint64_t rax, rbx, rcx, rdx, flags; };

static const unsigned char pre[] = {
	0x53,                   /* push %rbx */
	0x49, 0x89, 0xf8,       /* mov %rdi,%r8 */
	0x48, 0x8b, 0x07,       /* mov (%rdi),%rax */
	0x48, 0x8b, 0x5f, 0x08, /* mov 0x8(%rdi),%rbx */
	0x48, 0x8b, 0x4f, 0x10, /* mov 0x10(%rdi),%rcx */
	0x48, 0x8b, 0x57, 0x18, /* mov 0x18(%rdi),%rdx */
	0xff, 0x77, 0x20,       /* push 0x20(%rdi) */
	0x9d,                   /* popf */
};
static const unsigned char post[] = {
	0x9c,                   /* pushf */
	0x41, 0x8f, 0x40, 0x20, /* pop 0x20(%r8) */
	0x49, 0x89, 0x00,       /* mov %rax,(%r8) */
	0x49, 0x89, 0x58, 0x08, /* mov %rbx,0x8(%r8) */
	0x49, 0x89, 0x48, 0x10, /* mov %rcx,0x10(%r8) */
	0x49, 0x89, 0x50, 0x18, /* mov %rdx,0x18(%r8) */
	0x5b,                   /* pop %rbx */
	0xc3,                   /* ret */
};

int main(void)
{
	unsigned char *page = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char hex[64], mask[32];
	unsigned long long a, b, c, d, f;
	if (page == MAP_FAILED)
		return 1;
	while (scanf("%63s %31s %llx %llx %llx %llx %llx", hex, mask, &a, &b, &c, &d, &f) == 7) {
		size_t n = 0, len = strlen(hex);
		memcpy(page, pre, sizeof(pre));
		n = sizeof(pre);
		for (size_t i = 0; i + 1 < len; i += 2) {
			unsigned int byte;
			sscanf(hex + i, "%2x", &byte);
			page[n++] = (unsigned char)byte;
		}
		memcpy(page + n, post, sizeof(post));
		__builtin___clear_cache((char *)page, (char *)page + 4096);
		struct st s = { a, b, c, d, f };
		((void (*)(struct st *))page)(&s);
		printf("%s %s %llx %llx %llx %llx %llx -> %llx %llx %llx %llx %llx\n", hex, mask, a, b, c, d, f,
		       (unsigned long long)s.rax, (unsigned long long)s.rbx, (unsigned long long)s.rcx,
		       (unsigned long long)s.rdx, (unsigned long long)s.flags);
	}
	return 0;
}
