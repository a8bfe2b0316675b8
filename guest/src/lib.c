/*
 * lib.c - freestanding C helpers (see lib.h).
 *
 * Bulk copies and fills use "rep movsq/stosq" where possible: one emulated
 * instruction moves many words, which is far cheaper under the KVM
 * instruction emulator than a loop of plain moves.
 */
#include "lib.h"

void *memset(void *dst, int c, size_t n)
{
	void *d = dst;

	if ((((uintptr_t)d | n) & 7) == 0) {
		u64 v = (u8)c * 0x0101010101010101UL;
		size_t words = n / 8;
		__asm__ __volatile__("rep stosq" : "+D"(d), "+c"(words) : "a"(v) : "memory");
	} else {
		__asm__ __volatile__("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	}
	return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	void *d = dst;
	const void *s = src;

	if ((((uintptr_t)d | (uintptr_t)s | n) & 7) == 0) {
		size_t words = n / 8;
		__asm__ __volatile__("rep movsq" : "+D"(d), "+S"(s), "+c"(words) : : "memory");
	} else {
		__asm__ __volatile__("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	}
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	u8 *d = dst;
	const u8 *s = src;

	if (d <= s || d >= s + n)
		return memcpy(dst, src, n);
	while (n--)
		d[n] = s[n];
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;

	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (u8)*a - (u8)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (u8)*a - (u8)*b;
		if (!*a)
			return 0;
	}
	return 0;
}

static char to_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

int strcasecmp(const char *a, const char *b)
{
	while (*a && to_lower(*a) == to_lower(*b))
		a++, b++;
	return (u8)to_lower(*a) - (u8)to_lower(*b);
}

/* ---- formatting --------------------------------------------------------- */

struct outbuf {
	char *buf;
	size_t size, len;
};

static void out_char(struct outbuf *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void out_number(struct outbuf *o, u64 v, unsigned base, bool upper,
		       bool neg, int width, bool zero, bool left)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	if (neg)
		tmp[n++] = '-';
	if (zero && neg) {
		/* sign goes before the zero padding */
		out_char(o, '-');
		n--;
		width--;
	}
	if (!left)
		for (int i = n; i < width; i++)
			out_char(o, zero ? '0' : ' ');
	while (n)
		out_char(o, tmp[--n]);
	/* left alignment ('-') is padded by the caller */
}

/* Supports %% %c %s %d %i %u %x %X %p, flags '-' and '0', a width, and the
 * length modifiers l, ll, z, h (h is accepted and ignored). */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct outbuf o = { buf, size, 0 };

	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			out_char(&o, *fmt);
			continue;
		}
		fmt++;
		bool left = false, zero = false;
		int width = 0, lng = 0;
		for (;; fmt++) {
			if (*fmt == '-')
				left = true;
			else if (*fmt == '0')
				zero = true;
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z' || *fmt == 'h') {
			if (*fmt != 'h')
				lng++;
			fmt++;
		}
		size_t start = o.len;
		switch (*fmt) {
		case 'c':
			out_char(&o, (char)va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			size_t n = strlen(s);
			if (!left)
				for (size_t i = n; i < (size_t)width; i++)
					out_char(&o, ' ');
			while (*s)
				out_char(&o, *s++);
			break;
		}
		case 'd':
		case 'i': {
			s64 v = lng ? va_arg(ap, s64) : va_arg(ap, int);
			out_number(&o, v < 0 ? -(u64)v : (u64)v, 10, false, v < 0, width, zero, left);
			break;
		}
		case 'u':
		case 'x':
		case 'X': {
			u64 v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned int);
			out_number(&o, v, *fmt == 'u' ? 10 : 16, *fmt == 'X', false, width, zero, left);
			break;
		}
		case 'p':
			out_char(&o, '0');
			out_char(&o, 'x');
			out_number(&o, (u64)va_arg(ap, void *), 16, false, false, width, zero, left);
			break;
		case '%':
			out_char(&o, '%');
			break;
		case '\0':
			fmt--;
			break;
		default:
			out_char(&o, '%');
			out_char(&o, *fmt);
			break;
		}
		if (left)
			while (o.len - start < (size_t)width)
				out_char(&o, ' ');
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = '\0';
	return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

/* ---- parsing ------------------------------------------------------------ */

bool parse_u64(const char **p, u64 *out)
{
	const char *s = *p;
	u64 v = 0;
	int digits = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		s += 2;
		for (;; s++, digits++) {
			char c = *s;
			if (c >= '0' && c <= '9')
				v = v * 16 + (u64)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v = v * 16 + (u64)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v = v * 16 + (u64)(c - 'A' + 10);
			else
				break;
		}
	} else {
		for (; *s >= '0' && *s <= '9'; s++, digits++)
			v = v * 10 + (u64)(*s - '0');
	}
	if (!digits || (*s && *s != ' ' && *s != '\t'))
		return false;
	*p = s;
	*out = v;
	return true;
}

bool parse_ipv4(const char *s, u32 *out)
{
	u32 ip = 0;

	for (int i = 0; i < 4; i++) {
		u32 part = 0;
		int digits = 0;
		while (*s >= '0' && *s <= '9' && digits < 4) {
			part = part * 10 + (u32)(*s++ - '0');
			digits++;
		}
		if (!digits || part > 255)
			return false;
		ip = (ip << 8) | part;
		if (i < 3 && *s++ != '.')
			return false;
	}
	if (*s && *s != ' ')
		return false;
	*out = ip;
	return true;
}

void format_ipv4(char *buf, u32 ip)
{
	snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

/* ---- CRC-32 ------------------------------------------------------------- */

/* Slice-by-4: four table lookups per 32-bit word instead of one per byte
 * (guest code is emulated instruction by instruction, so this matters). */
static u32 crc_table[4][256];

typedef u32 u32_unaligned __attribute__((aligned(1), may_alias));

void crc32_init(void)
{
	for (u32 i = 0; i < 256; i++) {
		u32 c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
		crc_table[0][i] = c;
	}
	for (u32 i = 0; i < 256; i++)
		for (int t = 1; t < 4; t++)
			crc_table[t][i] = crc_table[0][crc_table[t - 1][i] & 0xFF] ^ (crc_table[t - 1][i] >> 8);
}

u32 crc32_update(u32 crc, const void *data, size_t len)
{
	const u8 *p = data;

	crc = ~crc;
	for (; len >= 4; p += 4, len -= 4) {
		crc ^= *(const u32_unaligned *)p;	/* little endian */
		crc = crc_table[3][crc & 0xFF] ^ crc_table[2][(crc >> 8) & 0xFF] ^
		      crc_table[1][(crc >> 16) & 0xFF] ^ crc_table[0][crc >> 24];
	}
	while (len--)
		crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
	return ~crc;
}
