#!/bin/sh
# check-insns.sh GUEST64_ELF [GUEST32_ELF]
#
# Fail if the guest contains an instruction KVM's instruction emulator
# (which runs all guest supervisor code on kvm_pvm hosts) cannot execute:
# software interrupts, int3, x87/fwait, MMX/SSE/AVX, popcnt/lzcnt/tzcnt,
# cmpxchg16b, xsave/xrstor, clac/stac, 32-bit iret, ud2, ... Each code
# range is disassembled in the CPU mode it runs in: the 32-bit entry stub,
# the 16/32/64-bit pieces of the AP trampoline, and the 64-bit kernel.
# Also checks the multiboot header position in the ELF32 file.
set -eu
ELF=$1
ELF32=${2:-}

sym() {
	v=$(nm "$ELF" | awk -v s="$1" '$3 == s { print "0x" $1 }')
	[ -n "$v" ] || { echo "check-insns: symbol $1 not found" >&2; exit 1; }
	echo "$v"
}

# dis MODE START STOP [SECTION...]: mnemonics (with prefixes) of a range
dis() {
	mode=$1 start=$2 stop=$3
	objdump -d -w --no-show-raw-insn -M "$mode" --start-address="$start" \
		--stop-address="$stop" "$ELF" |
		awk -F'\t' 'NF >= 2 && $1 ~ /^ *[0-9a-f]+:$/ { print $1 "\t" $2 }'
}

TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT

text_start=$(sym isr_stubs)
dis i386   "$(sym _start)"        "$(sym long_entry)"     > "$TMP"
dis i8086  "$(sym tramp_start)"   "$(sym tramp_code32)"  >> "$TMP"
dis i386   "$(sym tramp_code32)"  "$(sym tramp_code64)"  >> "$TMP"
dis x86-64 "$(sym tramp_code64)"  "$(sym tramp_data)"    >> "$TMP"
# the whole 64-bit .text
set -- $(objdump -h "$ELF" | awk '$2 == ".text" { print "0x" $4, $3 }')
text_end=$(printf '0x%x' $(( $1 + 0x$2 )))
dis x86-64 "$1" "$text_end" >> "$TMP"

lines=$(wc -l < "$TMP")
[ "$lines" -gt 1000 ] || { echo "check-insns: disassembly suspiciously short ($lines lines)" >&2; exit 1; }

# Strip prefixes, keep the mnemonic and the operands.
BAD=$(awk -F'\t' '
{
	n = split($2, w, /[ ]+/)
	i = 1
	while (i < n && w[i] ~ /^(lock|rep|repz|repnz|repe|repne|data16|data32|addr32|addr16|cs|ds|es|ss|fs|gs|notrack|bnd|rex(\.[WRXB]+)?)$/)
		i++
	m = w[i]
	bad = 0
	if (m ~ /^(int|int1|int3|into|icebp|ud0|ud1|ud2|iret|iretw|iretl|iretd|popcnt|lzcnt|tzcnt|cmpxchg16b|clac|stac|fwait|wait|emms|femms|ldmxcsr|stmxcsr|movnti|crc32|movbe|rdrand|rdseed|rdpid|rdtscp|sysenter|sysexit|syscall|sysret|vzeroupper|vzeroall|(\(bad\)))$/) bad = 1
	if (m ~ /^(xsave|xrstor|fxsave|fxrstor|xgetbv|xsetbv)/) bad = 1
	if (m ~ /^f/) bad = 1                         # x87
	if ($2 ~ /%[xyz]mm[0-9]|%mm[0-7]|%k[0-7]|%st/) bad = 1   # MMX/SSE/AVX/x87 operands
	if (bad) print $1 "\t" $2
}' "$TMP")

if [ -n "$BAD" ]; then
	echo "check-insns: FORBIDDEN instructions (KVM emulator cannot run them):" >&2
	echo "$BAD" >&2
	exit 1
fi

if [ -n "$ELF32" ]; then
	# multiboot v1: header (magic 0x1BADB002) 4-aligned in the first 8 KiB
	off=$(od -A d -t x4 -v -N 8192 "$ELF32" | awk '{ for (i = 2; i <= NF; i++) if ($i == "1badb002") { print $1 + (i - 2) * 4; exit } }')
	[ -n "$off" ] || { echo "check-insns: multiboot header not in the first 8 KiB of $ELF32" >&2; exit 1; }
	readelf -h "$ELF32" | grep -q 'ELF32' || { echo "check-insns: $ELF32 is not ELF32" >&2; exit 1; }
fi
echo "check-insns: OK ($lines instructions checked)"
