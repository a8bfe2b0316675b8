/*
 * lib.h - freestanding C helpers: memory/string functions, formatting,
 * number parsing, hashing (mix64) and CRC-32.
 */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include <stdarg.h>
#include "arch.h"

void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
int strcasecmp(const char *a, const char *b);

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Parse an unsigned number (decimal, or hex with 0x prefix) at *p, skipping
 * leading blanks. Returns false if there is no number or it is followed by
 * something other than a blank or the end of the string. */
bool parse_u64(const char **p, u64 *out);
/* Parse a dotted IPv4 address into host byte order. */
bool parse_ipv4(const char *s, u32 *out);
/* Format a host-byte-order IPv4 address into buf (at least 16 bytes). */
void format_ipv4(char *buf, u32 ip);

/* 64-bit finaliser of splitmix64 (Steele, Lea, Flood 2014):
 *   x ^= x >> 30; x *= 0xBF58476D1CE4E5B9;
 *   x ^= x >> 27; x *= 0x94D049BB133111EB;
 *   x ^= x >> 31;
 * Used for every recomputable pattern (see PROTOCOL.md). */
static inline u64 mix64(u64 x)
{
	x ^= x >> 30;
	x *= 0xBF58476D1CE4E5B9UL;
	x ^= x >> 27;
	x *= 0x94D049BB133111EBUL;
	x ^= x >> 31;
	return x;
}

/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, init and final XOR
 * 0xFFFFFFFF): the same value as Python's zlib.crc32(). crc32_update()
 * takes and returns the finalised value, so crc = crc32_update(0, ...) and
 * then chained calls compute the CRC of the concatenation. */
void crc32_init(void);
u32 crc32_update(u32 crc, const void *data, size_t len);

#endif
