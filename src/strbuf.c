/* strbuf.c: bounded growable text. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "strbuf.h"

void
strbuf_init(struct strbuf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void
strbuf_free(struct strbuf *b)
{
	free(b->s);
	strbuf_init(b, b->max);
}

void
strbuf_clear(struct strbuf *b)
{
	b->len = 0;
	b->truncated = false;
	b->nomem = false;
	if (b->s != NULL)
		b->s[0] = '\0';
}

static bool
strbuf_reserve(struct strbuf *b, size_t n)
{
	size_t cap;
	char *s;

	if (b->len + n + 1 <= b->cap)
		return true;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + n + 1)
		cap *= 2;
	if (cap > b->max + 1)
		cap = b->max + 1;
	if ((s = realloc(b->s, cap)) == NULL)
		return false;
	b->s = s;
	b->cap = cap;
	return true;
}

/*
 * Room for n more bytes after the text, or what of them fits the limit
 * (truncated): how many may be written there, 0 when none fit or there
 * is no memory for them (nomem).
 */
static size_t
strbuf_room(struct strbuf *b, size_t n)
{
	if (b->len + n > b->max) {
		b->truncated = true;
		n = b->max - b->len;
	}
	if (n == 0)
		return 0;
	if (!strbuf_reserve(b, n)) {
		b->nomem = true;
		return 0;
	}
	return n;
}

void
strbuf_append(struct strbuf *b, const char *p, size_t n)
{
	if ((n = strbuf_room(b, n)) == 0)
		return;
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
}

/* Formatted in place when longer than the stack's buffer: no copy. */
void
strbuf_printf(struct strbuf *b, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	size_t want;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		/* short of a bad format, glibc's work space not had */
		b->nomem = true;
		return;
	}
	if ((size_t)n < sizeof(small)) {
		strbuf_append(b, small, (size_t)n);
		return;
	}
	if ((want = strbuf_room(b, (size_t)n)) == 0)
		return;
	/* what fits of it, cut where the limit is */
	va_start(ap, fmt);
	n = vsnprintf(b->s + b->len, want + 1, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->s[b->len] = '\0';
		b->nomem = true;
		return;
	}
	b->len += want;
}

/*
 * s as a JSON string: '"' and '\\' escaped, controls and bytes that are not
 * valid UTF-8 as \u00XX, so that any input gives text a JSON parser takes;
 * the C1 controls, U+2028 and U+2029 as \uXXXX (bytes_json_escaped).
 */
/*
 * s between double quotes, '"' and '\\' escaped with a backslash, UTF-8
 * characters kept. For JSON (json) the other characters JSON escapes
 * become \\uXXXX; for a Prometheus label value, which has no such escape,
 * a control or a byte of no UTF-8 character becomes '?'.
 */
static void
strbuf_quoted(struct strbuf *b, const char *s, bool json)
{
	const unsigned char *p;
	size_t len;
	uint32_t cp;

	strbuf_append(b, "\"", 1);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\') {
			char esc[2] = { '\\', (char)*p };

			strbuf_append(b, esc, 2);
		} else if (*p >= 0x80 && (len = bytes_utf8_len(p)) != 0) {
			cp = bytes_utf8_cp(p, len);
			if (json && bytes_json_escaped(cp))
				strbuf_printf(b, "\\u%04x", (unsigned)cp);
			else
				strbuf_append(b, (const char *)p, len);
			p += len - 1;
		} else if (*p < 0x20 || *p >= 0x7f) {
			if (json)
				strbuf_printf(b, "\\u%04x", *p);
			else
				strbuf_append(b, "?", 1);
		} else
			strbuf_append(b, (const char *)p, 1);
	}
	strbuf_append(b, "\"", 1);
}

void
strbuf_json_string(struct strbuf *b, const char *s)
{
	strbuf_quoted(b, s, true);
}

void
strbuf_metric_label(struct strbuf *b, const char *s)
{
	strbuf_quoted(b, s, false);
}

const char *
strbuf_str(const struct strbuf *b)
{
	return b->s != NULL ? b->s : "";
}
