/*
 * bytes.h: byte scans of header names and values, eight bytes at a time.
 *
 * Every request and response head goes through these, byte by byte
 * otherwise. The word tricks are the usual ones: for a 64-bit word w,
 * (w - 0x01..01 * n) & ~w & 0x80..80 is non-zero exactly when some byte of
 * w is below n (n <= 0x80); which bytes it marks is not exact, so a word
 * found to hold one is looked at again byte by byte where that matters.
 * Words are loaded with memcpy: no alignment or aliasing assumptions.
 */
#ifndef QPROXY_BYTES_H
#define QPROXY_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BYTES_ONES	0x0101010101010101ULL
#define BYTES_HIGH	0x8080808080808080ULL

extern const bool bytes_tchar[256];

/* RFC 9110 5.6.2 tchar: may be in a field name (uppercase included). */
static inline bool
bytes_istchar(uint8_t c)
{
	return bytes_tchar[c];
}

/* A name byte HTTP/2 and HTTP/3 allow: tchar, but not uppercase. */
static inline bool
bytes_islowtchar(uint8_t c)
{
	return bytes_tchar[c] && !(c >= 'A' && c <= 'Z');
}

static inline uint64_t
bytes_load(const uint8_t *s)
{
	uint64_t w;

	memcpy(&w, s, sizeof(w));
	return w;
}

/* Non-zero when some byte of w is below n (n at most 0x80). */
static inline uint64_t
bytes_below(uint64_t w, uint8_t n)
{
	return (w - BYTES_ONES * n) & ~w & BYTES_HIGH;
}

/* Non-zero when some byte of w equals c. */
static inline uint64_t
bytes_has(uint64_t w, uint8_t c)
{
	return bytes_below(w ^ (BYTES_ONES * c), 1);
}

/*
 * The scans below walk s[0, len), len >= 8, in words at 0, 8, 16, ...;
 * the last word ends at len and may overlap the one before it, so that no
 * byte tail is left. This gives the offset after i, or len when i's word
 * was the last.
 */
static inline size_t
bytes_next(size_t i, size_t len)
{
	if (i + 8 == len)
		return len;
	return i + 16 > len ? len - 8 : i + 8;
}

/* The value of a hexadecimal digit, or -1. */
static inline int
bytes_hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * The len bytes written as the 2 * len hexadecimal digits of hex, into
 * out; false, with out partly written, where one is not a digit.
 */
static inline bool
bytes_from_hex(const char *hex, size_t len, uint8_t *out)
{
	int hi, lo;

	for (size_t i = 0; i < len; i++) {
		if ((hi = bytes_hexval((uint8_t)hex[2 * i])) == -1 ||
		    (lo = bytes_hexval((uint8_t)hex[2 * i + 1])) == -1)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

/* A control character other than HT, or DEL (RFC 9110 5.5 field-value). */
static inline bool
bytes_isctl(uint8_t c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* Whether s[0, len) holds a control character other than HT, or DEL. */
static inline bool
bytes_has_ctl(const uint8_t *s, size_t len)
{
	uint64_t w;
	size_t i;

	if (len < 8) {
		for (i = 0; i < len; i++)
			if (bytes_isctl(s[i]))
				return true;
		return false;
	}
	for (i = 0; i < len; i = bytes_next(i, len)) {
		w = bytes_load(s + i);
		/* HT is below 0x20 too: such words are looked at again */
		if (bytes_below(w, 0x20) | bytes_has(w, 0x7f)) {
			for (size_t j = i; j < i + 8; j++)
				if (bytes_isctl(s[j]))
					return true;
		}
	}
	return false;
}

/* Whether s[0, len) holds NUL, CR or LF (RFC 9114 4.2: malformed). */
static inline bool
bytes_has_nul_cr_lf(const uint8_t *s, size_t len)
{
	uint64_t w;
	size_t i;

	if (len < 8) {
		for (i = 0; i < len; i++)
			if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n')
				return true;
		return false;
	}
	for (i = 0; i < len; i = bytes_next(i, len)) {
		w = bytes_load(s + i);
		if (bytes_has(w, 0) | bytes_has(w, '\r') | bytes_has(w, '\n'))
			return true;
	}
	return false;
}

/* w with A-Z made a-z; other bytes, non-ASCII ones too, unchanged. */
static inline uint64_t
bytes_lower_word(uint64_t w)
{
	uint64_t low7 = w & ~BYTES_HIGH;
	/* per byte, the high bit: above 'Z', and at least 'A' */
	uint64_t above_z = low7 + BYTES_ONES * (0x7f - 'Z');
	uint64_t from_a = low7 + BYTES_ONES * (0x80 - 'A');
	uint64_t upper = (from_a ^ above_z) & ~w & BYTES_HIGH;

	return w | (upper >> 2);
}

/* Copies len bytes of src to dst, A-Z as a-z. dst and src do not overlap. */
static inline void
bytes_lower(uint8_t *dst, const uint8_t *src, size_t len)
{
	size_t i;
	uint64_t w;

	if (len < 8) {
		for (i = 0; i < len; i++)
			dst[i] = (uint8_t)(src[i] >= 'A' && src[i] <= 'Z' ?
			    src[i] + 32 : src[i]);
		return;
	}
	for (i = 0; i < len; i = bytes_next(i, len)) {
		w = bytes_lower_word(bytes_load(src + i));
		memcpy(dst + i, &w, sizeof(w));
	}
}

/* The length of the valid UTF-8 sequence at p (2 to 4), or 0. */
static inline size_t
bytes_utf8_len(const unsigned char *p)
{
	unsigned char	c = p[0], lo = 0x80, hi = 0xbf;
	size_t		len;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;		/* no overlong forms */
		else if (c == 0xed)
			hi = 0x9f;		/* no surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;		/* no overlong forms */
		else if (c == 0xf4)
			hi = 0x8f;		/* nothing above U+10FFFF */
	} else
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/* The code point of the valid UTF-8 sequence of len bytes at p. */
static inline uint32_t
bytes_utf8_cp(const unsigned char *p, size_t len)
{
	uint32_t cp = p[0] & (0xffu >> (len + 1));

	for (size_t i = 1; i < len; i++)
		cp = cp << 6 | (p[i] & 0x3fu);
	return cp;
}

/*
 * Whether a JSON string gets cp, a code point above DEL, as \uXXXX although
 * JSON allows it as it is: the C1 controls, which end a line to some
 * readers (U+0085) or start a terminal's escape sequence (U+009B), and
 * U+2028 and U+2029, which end a line in JavaScript and in many editors.
 */
static inline bool
bytes_json_escaped(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029;
}

#endif
