/* test_http1.c: unit tests for the HTTP/1.1 response parser. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "unit.h"

#define PARSE(lit, head, r)						\
	parse_head((lit), sizeof(lit) - 1, (head), (r))

static struct http1_response resp;

static long
parse_head(const char *s, size_t len, bool head_request,
    struct http1_response *r)
{
	return http1_parse_response((const uint8_t *)s, len, head_request, r);
}

/* The i-th header's name and value as C strings (separate buffers). */
static const char *
hname(const struct http1_response *r, size_t i)
{
	static char buf[256];

	if (i >= r->nheaders || r->headers[i].namelen >= sizeof(buf))
		return NULL;
	memcpy(buf, r->headers[i].name, r->headers[i].namelen);
	buf[r->headers[i].namelen] = '\0';
	return buf;
}

static const char *
hvalue(const struct http1_response *r, size_t i)
{
	static char buf[256];

	if (i >= r->nheaders || r->headers[i].valuelen >= sizeof(buf))
		return NULL;
	memcpy(buf, r->headers[i].value, r->headers[i].valuelen);
	buf[r->headers[i].valuelen] = '\0';
	return buf;
}

/* Deterministic pseudo-random numbers (xorshift32). */
static uint32_t rng_state;

static uint32_t
rng(void)
{
	uint32_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	rng_state = x;
	return x;
}

/*
 * Feeds a body to the decoder the way the proxy does: the caller keeps the
 * bytes not consumed yet and appends what arrives. step: bytes per arrival,
 * 0 for everything at once, -1 for random sizes from rng().
 */
struct feed {
	struct http1_body	 body;
	enum http1_body_status	 st;
	uint8_t			 payload[128 * 1024];
	size_t			 paylen;
	uint8_t			 trailer[70000];	/* the trailer spans */
	size_t			 trlen;
	size_t			 used;	/* input bytes taken by the body */
	bool			 sane;	/* spans inside input, progress */
};

static struct feed fd;

static enum http1_body_status
feed_body(enum http1_framing framing, uint64_t content_length,
    const void *input, size_t len, int step)
{
	struct http1_response r;
	const uint8_t *in = input, *data;
	size_t start = 0, end = 0, consumed, datalen, n;

	memset(&r, 0, sizeof(r));
	r.framing = framing;
	r.content_length = content_length;
	http1_body_init(&fd.body, &r);
	fd.paylen = 0;
	fd.trlen = 0;
	fd.sane = true;
	if (step == 0)
		end = len;
	for (;;) {
		fd.st = http1_body_parse(&fd.body, in + start, end - start,
		    &consumed, &data, &datalen);
		if (consumed > end - start)
			fd.sane = false;
		if (datalen > 0 && (data < in + start ||
		    data + datalen > in + start + consumed))
			fd.sane = false;
		if ((fd.body.trailer == NULL) != (fd.body.trailerlen == 0) ||
		    (fd.body.trailerlen > 0 && (fd.body.trailer < in + start ||
		    fd.body.trailer + fd.body.trailerlen > in + start +
		    consumed || fd.trlen + fd.body.trailerlen >
		    sizeof(fd.trailer))))
			fd.sane = false;
		if (!fd.sane)
			break;
		if (fd.body.trailerlen > 0)
			memcpy(fd.trailer + fd.trlen, fd.body.trailer,
			    fd.body.trailerlen);
		fd.trlen += fd.body.trailerlen;
		if (fd.paylen + datalen > sizeof(fd.payload)) {
			fd.sane = false;
			break;
		}
		if (datalen > 0)
			memcpy(fd.payload + fd.paylen, data, datalen);
		fd.paylen += datalen;
		start += consumed;
		if (fd.st != HTTP1_BODY_AGAIN)
			break;
		if (start < end) {
			if (consumed == 0) {
				fd.sane = false;	/* no progress */
				break;
			}
			continue;
		}
		if (end == len)
			break;
		if (step > 0)
			n = (size_t)step;
		else
			n = 1 + rng() % 23;
		end = len - end < n ? len : end + n;
	}
	fd.used = start;
	return fd.st;
}

static bool
payload_is(const void *want, size_t wantlen)
{
	return fd.paylen == wantlen && memcmp(fd.payload, want, wantlen) == 0;
}

static void
test_status_lines(void)
{
	static const struct {
		const char	*s;
		size_t		 len;
	} bad[] = {
#define B(lit)	{ lit, sizeof(lit) - 1 }
		B("HTTP/1.a 200 OK\r\n\r\n"),
		B("HTTP/2.0 200 OK\r\n\r\n"),
		B("HTTP/1 200 OK\r\n\r\n"),
		B("HTTP/1.10 200 OK\r\n\r\n"),
		B("http/1.1 200 OK\r\n\r\n"),
		B("HTTPS/1.1 200 OK\r\n\r\n"),
		B(" HTTP/1.1 200 OK\r\n\r\n"),
		B("\r\nHTTP/1.1 200 OK\r\n\r\n"),
		B("HTTP/1.1  200 OK\r\n\r\n"),
		B("HTTP/1.1\t200 OK\r\n\r\n"),
		B("HTTP/1.1 099 Low\r\n\r\n"),
		B("HTTP/1.1 600 High\r\n\r\n"),
		B("HTTP/1.1 999 Custom\r\n\r\n"),
		B("HTTP/1.1 000 Zero\r\n\r\n"),
		B("HTTP/1.1 20 OK\r\n\r\n"),
		B("HTTP/1.1 2000 OK\r\n\r\n"),
		B("HTTP/1.1 2a0 OK\r\n\r\n"),
		B("HTTP/1.1 -20 OK\r\n\r\n"),
		B("HTTP/1.1 +20 OK\r\n\r\n"),
		B("HTTP/1.1 200OK\r\n\r\n"),
		B("HTTP/1.1 200\tOK\r\n\r\n"),
		B("HTTP/1.1\r\n\r\n"),
		B("HTTP/1.1 \r\n\r\n"),
		B("HTTP/1.1 200 OK\n\r\n"),
		B("HTTP/1.1 200 OK\r\r\n\r\n"),
		B("HTTP/1.1 200 O\rK\r\n\r\n"),
		B("HTTP/1.1 200 O\0K\r\n\r\n"),
		B("HTTP/1.1 200 O\x01K\r\n\r\n"),
		B("HTTP/1.1 200 O\x7fK\r\n\r\n"),
		B("HTTP/1.1 200 OK\r\n\n"),
		B("HTTP/1.1 200 OK\n\n"),
		B("\n"),
		B("\r\n"),
#undef B
	};
	size_t i;

	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\n\r\n", false, &resp), 19);
	CHECK_EQ_INT(resp.status, 200);
	CHECK_EQ_INT(resp.minor_version, 1);
	CHECK_EQ_INT(resp.nheaders, 0);

	CHECK_EQ_INT(PARSE("HTTP/1.0 404 Not Found\r\n\r\n", false, &resp),
	    26);
	CHECK_EQ_INT(resp.status, 404);
	CHECK_EQ_INT(resp.minor_version, 0);

	/* a later minor version is read as 1.1 (RFC 9112 2.3) */
	CHECK_EQ_INT(PARSE("HTTP/1.2 200 OK\r\n\r\n", false, &resp), 19);
	CHECK_EQ_INT(resp.minor_version, 1);
	CHECK_EQ_INT(PARSE("HTTP/1.9 204 No Content\r\n\r\n", false,
	    &resp), 27);
	CHECK_EQ_INT(resp.minor_version, 1);

	/* empty reason, with and without its SP */
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 \r\n\r\n", false, &resp), 17);
	CHECK_EQ_INT(resp.status, 200);
	CHECK_EQ_INT(PARSE("HTTP/1.1 503\r\n\r\n", false, &resp), 16);
	CHECK_EQ_INT(resp.status, 503);

	CHECK(PARSE("HTTP/1.1 599 Custom\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.status, 599);
	CHECK(PARSE("HTTP/1.1 100 Continue\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.status, 100);
	/* reason: SP, HT, VCHAR and obs-text allowed */
	CHECK(PARSE("HTTP/1.1 200 Very\tGood  \xc3\xa9t\xe9 !\r\n\r\n",
	    false, &resp) > 0);
	CHECK_EQ_INT(resp.status, 200);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long rc = parse_head(bad[i].s, bad[i].len, false, &resp);

		if (rc != -1)
			fprintf(stderr, "bad status line %zu accepted\n", i);
		CHECK_EQ_INT(rc, -1);
	}
}

static void
test_incomplete(void)
{
	static const char head[] =
	    "HTTP/1.1 200 OK\r\n"
	    "Content-Type: text/plain\r\n"
	    "Content-Length: 5\r\n"
	    "Empty:\r\n"
	    "X-Spaced:   a b   \r\n"
	    "\r\n";
	static const char head100[] =
	    "HTTP/1.1 100 Continue\r\n\r\n";
	char buf[sizeof(head) + 16];
	size_t len = sizeof(head) - 1, i;
	int zeros = 0;

	for (i = 0; i < len; i++)
		if (parse_head(head, i, false, &resp) == 0)
			zeros++;
	CHECK_EQ_INT(zeros, (int)len);
	zeros = 0;
	for (i = 0; i < len; i++)
		if (parse_head(head, i, true, &resp) == 0)
			zeros++;
	CHECK_EQ_INT(zeros, (int)len);
	zeros = 0;
	for (i = 0; i < sizeof(head100) - 1; i++)
		if (parse_head(head100, i, false, &resp) == 0)
			zeros++;
	CHECK_EQ_INT(zeros, (int)sizeof(head100) - 1);

	CHECK_EQ_INT(parse_head(head, len, false, &resp), (long)len);
	CHECK_EQ_INT(resp.nheaders, 4);

	/* body bytes after the head are not part of it */
	memcpy(buf, head, len);
	memcpy(buf + len, "helloHTTP/1.1", 13);
	CHECK_EQ_INT(parse_head(buf, len + 13, false, &resp), (long)len);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_LENGTH);
	CHECK_EQ_INT(resp.content_length, 5);

	CHECK_EQ_INT(parse_head("", 0, false, &resp), 0);
	CHECK_EQ_INT(PARSE("H", false, &resp), 0);
	CHECK_EQ_INT(PARSE("HTTP/1.0 5", false, &resp), 0);
	CHECK_EQ_INT(PARSE("HTTP/1.1 599", false, &resp), 0);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 \x01", false, &resp), 0);
	/* what cannot begin a status line fails before its end of line */
	CHECK_EQ_INT(PARSE("\x00\x00\x12\x04\x00", false, &resp), -1);
	CHECK_EQ_INT(PARSE("\x16\x03\x03", false, &resp), -1);
	CHECK_EQ_INT(PARSE("PRI * HTTP/2.0", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/2", false, &resp), -1);
	CHECK_EQ_INT(PARSE("http/1.1", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.2", false, &resp), 0);
	CHECK_EQ_INT(PARSE("HTTP/1.x", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1  200", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 600", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 2x", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 20x", false, &resp), -1);
	/* a later line's beginning is its own: only its end tells */
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\n\x01", false, &resp), 0);
	/* a CR at the very end might still become CRLF */
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nA: b\r", false, &resp), 0);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nA: b\r\n\r", false, &resp), 0);
}

/*
 * Every byte value at every place of a 19-byte field value and reason
 * phrase (the parser looks at eight bytes at a time, then the rest): only
 * controls other than HT are refused (CR and LF end the line earlier).
 */
static void
test_value_bytes(void)
{
	char buf[128];
	const char *val = "abcdefghijklmnopqrs";
	size_t n, vlen = strlen(val);
	bool bad;
	long rc;

	for (size_t pos = 0; pos < vlen; pos++) {
		for (int c = 0; c < 256; c++) {
			if (c == '\r' || c == '\n')
				continue;
			bad = (c < 0x20 && c != '\t') || c == 0x7f;
			n = (size_t)snprintf(buf, sizeof(buf),
			    "HTTP/1.1 200 OK\r\nX: a%s\r\n\r\n", val);
			buf[17 + 4 + pos] = (char)c;
			rc = parse_head(buf, n, false, &resp);
			CHECK_EQ_INT(rc == -1, bad);
			n = (size_t)snprintf(buf, sizeof(buf),
			    "HTTP/1.1 200 %s\r\n\r\n", val);
			buf[13 + pos] = (char)c;
			rc = parse_head(buf, n, false, &resp);
			CHECK_EQ_INT(rc == -1, bad);
		}
	}
}

static void
test_headers(void)
{
	static const struct {
		const char	*s;
		size_t		 len;
	} bad[] = {
#define B(lit)	{ "HTTP/1.1 200 OK\r\n" lit "\r\n", sizeof(lit) + 18 }
		B("X : y\r\n"),			/* SP before colon */
		B("X\t: y\r\n"),		/* HT before colon */
		B(": y\r\n"),			/* empty name */
		B(" X: y\r\n"),			/* SP before the first field */
		B("\tX: y\r\n"),
		B("X: y\r\n folded\r\n"),	/* obs-fold */
		B("X: y\r\n\tfolded\r\n"),
		B("X: y\r\n \r\n"),
		B("X@: y\r\n"),			/* non-token name characters */
		B("X(: y\r\n"),
		B("X\"y: z\r\n"),
		B("X/y: z\r\n"),
		B("\xc3\xa9: y\r\n"),
		B("X\x7f: y\r\n"),
		B("X\0: y\r\n"),
		B("NoColon\r\n"),
		B("X: a\x01b\r\n"),		/* controls in values */
		B("X: a\x1f\r\n"),
		B("X: a\x7f\r\n"),
		B("X: a\0b\r\n"),
		B("X: a\rb\r\n"),		/* bare CR */
		B("X: a\r\r\n"),
		B("X: a\nY: b\r\n"),		/* bare LF */
		B("X: a\r\n\n"),
		B("\n"),
#undef B
	};
	char buf[128 * 16 + 64];
	size_t i, off;
	long rc;

	CHECK(PARSE("HTTP/1.1 200 OK\r\n"
	    "Server:  qproxy-test \t\r\n"
	    "X-Empty:\r\n"
	    "X-Blank: \t \r\n"
	    "!#$%&'*+-.^_`|~09azAZ:value:with:colons\r\n"
	    "X-Obs: \x80\xff caf\xc3\xa9\r\n"
	    "X-Tab: a\tb\r\n"
	    "Content-Length: 0\r\n"
	    "\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.nheaders, 7);
	CHECK_EQ_STR(hname(&resp, 0), "Server");
	CHECK_EQ_STR(hvalue(&resp, 0), "qproxy-test");
	CHECK_EQ_STR(hname(&resp, 1), "X-Empty");
	CHECK_EQ_STR(hvalue(&resp, 1), "");
	CHECK_EQ_INT(resp.headers[1].valuelen, 0);
	CHECK_EQ_STR(hvalue(&resp, 2), "");
	CHECK_EQ_STR(hname(&resp, 3), "!#$%&'*+-.^_`|~09azAZ");
	CHECK_EQ_STR(hvalue(&resp, 3), "value:with:colons");
	CHECK_EQ_STR(hvalue(&resp, 4), "\x80\xff caf\xc3\xa9");
	CHECK_EQ_STR(hvalue(&resp, 5), "a\tb");
	CHECK_EQ_STR(hname(&resp, 6), "Content-Length");

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rc = parse_head(bad[i].s, bad[i].len, false, &resp);
		if (rc != -1)
			fprintf(stderr, "bad header %zu accepted\n", i);
		CHECK_EQ_INT(rc, -1);
	}

	/* header pointers point into the buffer */
	memcpy(buf, "HTTP/1.1 200 OK\r\nAb: cd\r\n\r\n", 27);
	CHECK_EQ_INT(parse_head(buf, 27, false, &resp), 27);
	CHECK(resp.headers[0].name == buf + 17);
	CHECK(resp.headers[0].value == buf + 21);

	/* HTTP1_MAX_HEADERS fields are fine, one more is not */
	off = (size_t)snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\n");
	for (i = 0; i < HTTP1_MAX_HEADERS; i++)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off,
		    "H%zu: %zu\r\n", i, i);
	memcpy(buf + off, "\r\n", 2);
	CHECK_EQ_INT(parse_head(buf, off + 2, false, &resp), (long)off + 2);
	CHECK_EQ_INT(resp.nheaders, HTTP1_MAX_HEADERS);
	CHECK_EQ_STR(hname(&resp, HTTP1_MAX_HEADERS - 1), "H127");
	CHECK_EQ_STR(hvalue(&resp, HTTP1_MAX_HEADERS - 1), "127");
	off += (size_t)snprintf(buf + off, sizeof(buf) - off, "One: more\r\n");
	memcpy(buf + off, "\r\n", 2);
	CHECK_EQ_INT(parse_head(buf, off + 2, false, &resp), -1);

	/* names up to 256 bytes and values up to 65536 pass; no more */
	{
		static const struct {
			const char	*before, *after;
			char		 fill;
			size_t		 max;
		} field[] = {
			{ "", ": v", 'n', 256 },		/* the name */
			{ "v: ", "", 'v', 65536 },		/* the value */
		};
		static char big[65536 + 512];
		size_t f, n;

		for (f = 0; f < sizeof(field) / sizeof(field[0]); f++) {
			for (n = field[f].max; n <= field[f].max + 1; n++) {
				off = (size_t)snprintf(big, sizeof(big),
				    "HTTP/1.1 200 OK\r\n%s", field[f].before);
				memset(big + off, field[f].fill, n);
				off += n;
				off += (size_t)snprintf(big + off,
				    sizeof(big) - off, "%s\r\n\r\n",
				    field[f].after);
				CHECK_EQ_INT(parse_head(big, off, false,
				    &resp), n == field[f].max ? (long)off : -1);
			}
		}
	}
}

static void
test_content_length(void)
{
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", false,
	    &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_LENGTH);
	CHECK_EQ_INT(resp.content_length, 42);
	CHECK(resp.keep_alive);

	CHECK(PARSE("HTTP/1.1 200 OK\r\ncontent-length:   7  \r\n\r\n", false,
	    &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_LENGTH);
	CHECK_EQ_INT(resp.content_length, 7);

	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false,
	    &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(resp.keep_alive);

	/* identical repeats, in several fields or in a list */
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
	    "Content-Length: 5\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_LENGTH);
	CHECK_EQ_INT(resp.content_length, 5);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 5,5 , 5\r\n"
	    "CONTENT-LENGTH: 5\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.content_length, 5);

	/* conflicts and bad syntax */
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
	    "Content-Length: 6\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: ,5\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 5a\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 5.0\r\n\r\n",
	    false, &resp), -1);
	/* overflow: the bound is 2^62 */
	CHECK(PARSE("HTTP/1.1 200 OK\r\n"
	    "Content-Length: 4611686018427387904\r\n\r\n", false, &resp) > 0);
	CHECK(resp.content_length == (uint64_t)1 << 62);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\n"
	    "Content-Length: 4611686018427387905\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\n"
	    "Content-Length: 18446744073709551616\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\n"
	    "Content-Length: 99999999999999999999999999\r\n\r\n", false, &resp),
	    -1);
	/* leading zeros are still a number */
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 0005\r\n"
	    "Content-Length: 5\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.content_length, 5);

	/* the value is kept where it does not frame the body */
	CHECK(PARSE("HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n"
	    "\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(resp.has_content_length);
	CHECK_EQ_INT(resp.content_length, 12);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", true,
	    &resp) > 0);
	CHECK(resp.has_content_length);
	CHECK_EQ_INT(resp.content_length, 5);
	CHECK(PARSE("HTTP/1.1 200 OK\r\n\r\n", false, &resp) > 0);
	CHECK(!resp.has_content_length);

	/* a bad Content-Length is an error even where it does not frame */
	CHECK_EQ_INT(PARSE("HTTP/1.1 304 Not Modified\r\nContent-Length: 1\r\n"
	    "Content-Length: 2\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
	    true, &resp), -1);

	/* neither: close-delimited */
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
	    false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_CLOSE);
	CHECK(!resp.keep_alive);
}

static void
test_transfer_encoding(void)
{
	CHECK(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	    false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_CHUNKED);
	CHECK(resp.keep_alive);

	CHECK(PARSE("HTTP/1.1 200 OK\r\ntransfer-encoding:  ChUnKeD \r\n\r\n",
	    false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_CHUNKED);

	/*
	 * Any other coding, before chunked or instead of it, in one field
	 * or several: the body could be passed on only still coded, and is
	 * refused (RFC 9112 would read one not ending in chunked until
	 * close).
	 */
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, "
	    "chunked\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
	    "X: y\r\nTransfer-Encoding: chunked\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	    "Transfer-Encoding: gzip\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
	    "\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, "
	    "gzip\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, "
	    "identity\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunkedx\r\n"
	    "\r\n", false, &resp), -1);
	/* where there is no body, the field frames nothing */
	CHECK(PARSE("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip\r\n"
	    "\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	    true, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);

	/* TE with CL: TE wins, and the connection is not reused */
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_CHUNKED);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	    "Content-Length: 10\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_CHUNKED);
	CHECK(!resp.keep_alive);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
	    "Content-Length: 10\r\n\r\n", false, &resp), -1);
	/* where there is no body, the length is not passed on either */
	CHECK(PARSE("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked"
	    "\r\nContent-Length: 7\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(!resp.has_content_length);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	    "Content-Length: 7\r\n\r\n", true, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(!resp.has_content_length);
	CHECK(!resp.keep_alive);

	/* TE in HTTP/1.0 is faulty framing: decode it, then close */
	CHECK(PARSE("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n"
	    "Connection: keep-alive\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_CHUNKED);
	CHECK(!resp.keep_alive);

	/* ambiguous codings are errors */
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, "
	    "chunked\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
	    false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n"
	    "\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: ,chunked\r\n"
	    "\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;a=b"
	    "\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip "
	    "chunked\r\n\r\n", false, &resp), -1);
	CHECK_EQ_INT(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: \"chunked\""
	    "\r\n\r\n", false, &resp), -1);
}

static void
test_keep_alive(void)
{
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", false,
	    &resp) > 0);
	CHECK(resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
	    "Connection: close\r\n\r\n", false, &resp) > 0);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
	    "Connection: Keep-Alive, CLOSE\r\n\r\n", false, &resp) > 0);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
	    "Connection: upgrade\r\nConnection: x ,\tclose \r\n\r\n", false,
	    &resp) > 0);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
	    "Connection: closed, xclose\r\n\r\n", false, &resp) > 0);
	CHECK(resp.keep_alive);
	/* not a list of tokens: read at its whitespace too, as exchange.c
	   reads the fields it names */
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
	    "Connection: keep-alive close\r\n\r\n", false, &resp) > 0);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
	    "Connection: x-a\tclose,y\r\n\r\n", false, &resp) > 0);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
	    "X-Connection: close\r\n\r\n", false, &resp) > 0);
	CHECK(resp.keep_alive);

	CHECK(PARSE("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false,
	    &resp) > 0);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n"
	    "Connection: keep-alive\r\n\r\n", false, &resp) > 0);
	CHECK(resp.keep_alive);
	CHECK(PARSE("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n"
	    "connection: foo , KEEP-ALIVE\r\n\r\n", false, &resp) > 0);
	CHECK(resp.keep_alive);
	CHECK(PARSE("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n"
	    "Connection: keep-alive, close\r\n\r\n", false, &resp) > 0);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n"
	    "Connection: keep-alives\r\n\r\n", false, &resp) > 0);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.0 204 No Content\r\n"
	    "Connection: keep-alive\r\n\r\n", false, &resp) > 0);
	CHECK(resp.keep_alive);

	/* never for close-delimited bodies */
	CHECK(PARSE("HTTP/1.1 200 OK\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_CLOSE);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
	    false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_CLOSE);
	CHECK(!resp.keep_alive);

	/* another field's list the same way: a WebSocket's Upgrade */
	CHECK(PARSE("HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: h2c , WebSocket\r\nConnection: upgrade\r\n\r\n", false,
	    &resp) > 0);
	CHECK(http1_field_has(&resp, "Upgrade", "websocket"));
	CHECK(http1_field_has(&resp, "connection", "UPGRADE"));
	CHECK(!http1_field_has(&resp, "Upgrade", "websockets"));
	CHECK(!http1_field_has(&resp, "X-Upgrade", "websocket"));
	CHECK(PARSE("HTTP/1.1 101 Switching Protocols\r\n"
	    "X-Upgrade: websocket\r\nUpgrade: websockets\r\n\r\n", false,
	    &resp) > 0);
	CHECK(!http1_field_has(&resp, "Upgrade", "websocket"));
}

static void
test_no_body(void)
{
	static const char two[] =
	    "HTTP/1.1 100 Continue\r\n\r\n"
	    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
	    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	long rc, off;

	/* HEAD: no body whatever the headers say */
	CHECK(PARSE("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true,
	    &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	    true, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 200 OK\r\n\r\n", true, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(resp.keep_alive);

	CHECK(PARSE("HTTP/1.1 204 No Content\r\n\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n"
	    "\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	/* a 204 announcing a body: not reused, as the body may follow */
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
	    false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(!resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
	    false, &resp) > 0);
	CHECK(resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n"
	    "\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK(resp.keep_alive);
	CHECK(PARSE("HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n\r\n",
	    false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);

	/* 1xx heads come back alone; the final head follows */
	rc = parse_head(two, sizeof(two) - 1, false, &resp);
	CHECK_EQ_INT(rc, 25);
	CHECK_EQ_INT(resp.status, 100);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	off = rc;
	rc = parse_head(two + off, sizeof(two) - 1 - (size_t)off, false, &resp);
	CHECK_EQ_INT(rc, 57);
	CHECK_EQ_INT(resp.status, 103);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
	CHECK_EQ_INT(resp.nheaders, 1);
	CHECK_EQ_STR(hvalue(&resp, 0), "</a.css>; rel=preload");
	off += rc;
	rc = parse_head(two + off, sizeof(two) - 1 - (size_t)off, false, &resp);
	CHECK_EQ_INT(rc, 38);
	CHECK_EQ_INT(resp.status, 200);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_LENGTH);
	CHECK_EQ_INT(resp.content_length, 2);
	CHECK_EQ_INT(off + rc + 2, (long)sizeof(two) - 1);
	/* 1xx with a would-be body length is still bodiless */
	CHECK(PARSE("HTTP/1.1 101 Switching Protocols\r\nContent-Length: 9\r\n"
	    "\r\n", false, &resp) > 0);
	CHECK_EQ_INT(resp.framing, HTTP1_BODY_NONE);
}

static const char chunked_body[] =
    "5;ext=1\r\nhello\r\n"
    "6 ; a=\"b c\";x\t;y = z\r\n world\r\n"
    "A\r\n0123456789\r\n"
    "000009\r\n\r\n0\r\n\r\n\r\n\r\n"	/* framing lookalikes as data */
    "1;\r\n!\r\n"
    "0\r\n"
    "Expires: never\r\n"
    "X-T:\r\n"
    "X-U: a\tb \x80\r\n"
    "\r\n";
static const char chunked_payload[] =
    "hello world0123456789\r\n0\r\n\r\n\r\n!";

static void
test_chunked(void)
{
	static const int steps[] = { 0, 1, 2, 3, 5, 7, 11, 64 };
	char buf[sizeof(chunked_body) + 32];
	size_t len = sizeof(chunked_body) - 1, plen = sizeof(chunked_payload) -
	    1, i;
	int ok;

	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, chunked_body, len,
		    steps[i]), HTTP1_BODY_DONE);
		CHECK(fd.sane);
		CHECK(payload_is(chunked_payload, plen));
		CHECK_EQ_INT(fd.used, len);
		CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_DONE);
	}

	/* leftover bytes (the next response) are not consumed */
	memcpy(buf, chunked_body, len);
	memcpy(buf + len, "HTTP/1.1 200 OK\r\n", 17);
	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, len + 17,
		    steps[i]), HTTP1_BODY_DONE);
		CHECK(fd.sane);
		CHECK(payload_is(chunked_payload, plen));
		CHECK_EQ_INT(fd.used, len);
	}

	/* every proper prefix is incomplete, and truncated at EOF */
	ok = 0;
	for (i = 0; i < len; i++)
		if (feed_body(HTTP1_BODY_CHUNKED, 0, chunked_body, i, 0) ==
		    HTTP1_BODY_AGAIN && fd.sane && fd.used == i &&
		    http1_body_eof(&fd.body) == HTTP1_BODY_ERROR)
			ok++;
	CHECK_EQ_INT(ok, (int)len);

	/* upper and lower case hex, leading zeros, an empty body */
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0,
	    "b\r\nhello world\r\n00B\r\nHELLO WORLD\r\n000\r\n\r\n", 41, 0),
	    HTTP1_BODY_DONE);
	CHECK(payload_is("hello worldHELLO WORLD", 22));
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, "0\r\n\r\n", 5, 1),
	    HTTP1_BODY_DONE);
	CHECK_EQ_INT(fd.paylen, 0);
	CHECK_EQ_INT(fd.used, 5);

	/* one data span per call, at most */
	{
		struct http1_response r;
		struct http1_body b;
		const uint8_t *in = (const uint8_t *)"3\r\nabc\r\n2\r\nde\r\n0"
		    "\r\n\r\n", *data;
		size_t inlen = 20, consumed, datalen;

		memset(&r, 0, sizeof(r));
		r.framing = HTTP1_BODY_CHUNKED;
		http1_body_init(&b, &r);
		CHECK_EQ_INT(http1_body_parse(&b, in, inlen, &consumed, &data,
		    &datalen), HTTP1_BODY_AGAIN);
		CHECK_EQ_INT(consumed, 11);
		CHECK(data == in + 3);
		CHECK_EQ_INT(datalen, 3);
		CHECK_EQ_INT(http1_body_parse(&b, in + 11, inlen - 11,
		    &consumed, &data, &datalen), HTTP1_BODY_DONE);
		CHECK_EQ_INT(consumed, 9);
		CHECK(data == in + 11);
		CHECK_EQ_INT(datalen, 2);
		/* done stays done and takes nothing more */
		CHECK_EQ_INT(http1_body_parse(&b, in, inlen, &consumed, &data,
		    &datalen), HTTP1_BODY_DONE);
		CHECK_EQ_INT(consumed, 0);
		CHECK_EQ_INT(datalen, 0);
		CHECK_EQ_INT(http1_body_eof(&b), HTTP1_BODY_DONE);
	}

	/* the largest chunk size is accepted as a size */
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0,
	    "4000000000000000\r\nabc", 21, 0), HTTP1_BODY_AGAIN);
	CHECK(fd.sane);
	CHECK_EQ_INT(fd.used, 21);
	CHECK(payload_is("abc", 3));
	CHECK(fd.body.remaining == ((uint64_t)1 << 62) - 3);
	CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_ERROR);
}

static void
test_chunked_bad(void)
{
	static const struct {
		const char	*s;
		size_t		 len;
	} bad[] = {
#define B(lit)	{ lit, sizeof(lit) - 1 }
		/* chunk sizes */
		B("\r\nhello\r\n0\r\n\r\n"),
		B(";ext\r\n"),
		B("g\r\n"),
		B("5g\r\n"),
		B("-1\r\n"),
		B("+5\r\n"),
		B("0x5\r\n"),
		B(" 5\r\n"),
		B("\t5\r\n"),
		B("5 \r\n"),
		B("5 6\r\n"),
		B("5\n"),
		B("5\r\r\n"),
		B("5\rX"),
		B("4000000000000001\r\n"),
		B("10000000000000000\r\n"),
		B("FFFFFFFFFFFFFFFFF\r\n"),
		B("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\r\n"),
		/* chunk extensions */
		B("5;e\x01\r\nhello\r\n0\r\n\r\n"),
		B("5;e\0x\r\nhello\r\n0\r\n\r\n"),
		B("5;e\nhello\r\n0\r\n\r\n"),
		B("5;e\r\rhello\r\n0\r\n\r\n"),
		/* the CRLF after chunk data */
		B("5\r\nhelloX\r\n0\r\n\r\n"),
		B("5\r\nhello\n0\r\n\r\n"),
		B("5\r\nhello\rX0\r\n\r\n"),
		B("5\r\nhello0\r\n\r\n"),
		B("5\r\nhello\r\r\n0\r\n\r\n"),
		B("3\r\nhello\r\n0\r\n\r\n"),
		/* trailers and the end */
		B("0\r\n x: y\r\n\r\n"),
		B("0\r\n\tx: y\r\n\r\n"),
		B("0\r\nBad Name: x\r\n\r\n"),
		B("0\r\nName : x\r\n\r\n"),
		B("0\r\nNoColon\r\n\r\n"),
		B("0\r\n: empty\r\n\r\n"),
		B("0\r\nX: a\x01\r\n\r\n"),
		B("0\r\nX: a\0\r\n\r\n"),
		B("0\r\nX: a\x7f\r\n\r\n"),
		B("0\r\nX: a\n\r\n"),
		B("0\r\nX: a\rb\r\n\r\n"),
		B("0\r\n\n"),
		B("0\r\n\r\r"),
		B("0\r\n\rX"),
		B("0\n\r\n"),
#undef B
	};
	size_t i;
	int ok;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ok = 0;
		if (feed_body(HTTP1_BODY_CHUNKED, 0, bad[i].s, bad[i].len, 0) ==
		    HTTP1_BODY_ERROR && fd.sane)
			ok++;
		if (feed_body(HTTP1_BODY_CHUNKED, 0, bad[i].s, bad[i].len, 1) ==
		    HTTP1_BODY_ERROR && fd.sane)
			ok++;
		if (ok != 2)
			fprintf(stderr, "bad chunked body %zu accepted\n", i);
		CHECK_EQ_INT(ok, 2);
	}

	/* errors stick */
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, "z", 1, 0),
	    HTTP1_BODY_ERROR);
	{
		const uint8_t *data;
		size_t consumed, datalen;

		CHECK_EQ_INT(http1_body_parse(&fd.body,
		    (const uint8_t *)"0\r\n\r\n", 5, &consumed, &data,
		    &datalen), HTTP1_BODY_ERROR);
		CHECK_EQ_INT(datalen, 0);
	}
	CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_ERROR);
}

static void
test_chunk_line_bound(void)
{
	static char buf[16384];
	size_t n;

	/* "5;" + extension + CRLF: 4096 bytes in all is the limit */
	memcpy(buf, "5;", 2);
	memset(buf + 2, 'e', 4092);
	memcpy(buf + 4094, "\r\nhello\r\n0\r\n\r\n", 15);
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, 4109, 0),
	    HTTP1_BODY_DONE);
	CHECK(payload_is("hello", 5));
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, 4109, 1),
	    HTTP1_BODY_DONE);
	CHECK(payload_is("hello", 5));

	memcpy(buf, "5;", 2);
	memset(buf + 2, 'e', 4093);
	memcpy(buf + 4095, "\r\nhello\r\n0\r\n\r\n", 15);
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, 4110, 0),
	    HTTP1_BODY_ERROR);
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, 4110, 1),
	    HTTP1_BODY_ERROR);
	/* the limit holds without a line end in sight */
	memset(buf + 2, 'e', 8190);
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, 8192, 100),
	    HTTP1_BODY_ERROR);
	CHECK(fd.used <= 4097);

	/* leading zeros count against the limit too */
	memset(buf, '0', 4093);
	memcpy(buf + 4093, "5\r\nhello\r\n0\r\n\r\n", 16);
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, 4109, 0),
	    HTTP1_BODY_DONE);
	CHECK(payload_is("hello", 5));
	memset(buf, '0', 4094);
	memcpy(buf + 4094, "5\r\nhello\r\n0\r\n\r\n", 16);
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, 4110, 0),
	    HTTP1_BODY_ERROR);

	/* the limit is per line, not per body */
	n = 0;
	for (int i = 0; i < 4; i++) {
		memcpy(buf + n, "1;", 2);
		memset(buf + n + 2, 'x', 3000);
		memcpy(buf + n + 3002, "\r\nz\r\n", 5);
		n += 3007;
	}
	memcpy(buf + n, "0\r\n\r\n", 5);
	n += 5;
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, n, 0),
	    HTTP1_BODY_DONE);
	CHECK(payload_is("zzzz", 4));
}

static void
test_trailer_bound(void)
{
	static char buf[70000];
	size_t vlen, n;

	/* trailer lines and final CRLF: 65536 bytes in all is the limit */
	for (vlen = 65529; vlen <= 65530; vlen++) {
		memcpy(buf, "1\r\na\r\n0\r\nX: ", 12);
		memset(buf + 12, 'v', vlen);
		memcpy(buf + 12 + vlen, "\r\n\r\n", 4);
		n = 12 + vlen + 4;
		CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, n, 0),
		    vlen == 65529 ? HTTP1_BODY_DONE : HTTP1_BODY_ERROR);
		CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, n, 1),
		    vlen == 65529 ? HTTP1_BODY_DONE : HTTP1_BODY_ERROR);
	}

	/* many small trailer lines add up */
	memcpy(buf, "0\r\n", 3);
	n = 3;
	while (n < 66000) {
		memcpy(buf + n, "T: x\r\n", 6);
		n += 6;
	}
	memcpy(buf + n, "\r\n", 2);
	n += 2;
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, buf, n, 0),
	    HTTP1_BODY_ERROR);
	CHECK(fd.used <= 3 + 65537);
}

/* feed_body on a string literal, its NUL left out */
#define FEED_LIT(framing, lit, step)					\
	feed_body((framing), 0, (lit), sizeof(lit) - 1, (step))

/* The i-th trailer field of the last feed, as "name=value" (its own buffer). */
static const char *
trailer_field(size_t i)
{
	static struct http1_header h[8];
	static char buf[512];
	size_t n;

	n = http1_trailers(fd.trailer, fd.trlen, h, 8);
	if (i >= n || h[i].namelen + h[i].valuelen + 2 > sizeof(buf))
		return NULL;
	snprintf(buf, sizeof(buf), "%.*s=%.*s", (int)h[i].namelen, h[i].name,
	    (int)h[i].valuelen, h[i].value);
	return buf;
}

/* The trailer section's fields reach the caller; none, when it has none. */
static void
test_trailers(void)
{
	static const char body[] = "5\r\nhello\r\n0;last\r\n"
	    "X-Checksum: abc\r\nServer-Timing:  db;dur=53 \t\r\n"
	    "x-empty:\r\n\r\nHTTP/1.1 200 OK\r\n";
	static const char lines[] = "X-Checksum: abc\r\n"
	    "Server-Timing:  db;dur=53 \t\r\nx-empty:\r\n";
	static const int steps[] = { 0, 1, 2, 3, 7, -1 };
	static char big[1200];
	struct http1_header h[2];
	size_t len = sizeof(body) - 1 - 17, i, n;

	rng_state = 0x2545f491u;
	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, body, len + 17,
		    steps[i]), HTTP1_BODY_DONE);
		CHECK(fd.sane);
		CHECK(payload_is("hello", 5));
		CHECK_EQ_INT(fd.used, len);
		/* the lines as received, neither the size line nor the end */
		CHECK_EQ_INT(fd.trlen, sizeof(lines) - 1);
		CHECK(fd.trlen == sizeof(lines) - 1 &&
		    memcmp(fd.trailer, lines, fd.trlen) == 0);
		CHECK_EQ_STR(trailer_field(0), "X-Checksum=abc");
		CHECK_EQ_STR(trailer_field(1), "Server-Timing=db;dur=53");
		CHECK_EQ_STR(trailer_field(2), "x-empty=");
		CHECK(trailer_field(3) == NULL);
	}

	/* none */
	CHECK_EQ_INT(FEED_LIT(HTTP1_BODY_CHUNKED, "5\r\nhello\r\n0\r\n\r\n", 1),
	    HTTP1_BODY_DONE);
	CHECK(fd.sane);
	CHECK_EQ_INT(fd.trlen, 0);
	CHECK(trailer_field(0) == NULL);

	/* no trailer span from a body of another framing */
	CHECK_EQ_INT(FEED_LIT(HTTP1_BODY_CLOSE, "0\r\nX: y\r\n\r\n", 0),
	    HTTP1_BODY_AGAIN);
	CHECK(fd.sane);
	CHECK_EQ_INT(fd.trlen, 0);

	/* a bad trailer line: an error, and no span of that call */
	CHECK_EQ_INT(FEED_LIT(HTTP1_BODY_CHUNKED, "0\r\nA: 1\r\nB : 2\r\n\r\n",
	    0), HTTP1_BODY_ERROR);
	CHECK(fd.sane);
	CHECK_EQ_INT(fd.trlen, 0);

	/* a name longer than may be passed on is left out, the rest kept */
	n = (size_t)snprintf(big, sizeof(big), "0\r\nA: 1\r\n%0257d: x\r\n"
	    "B: 2\r\n\r\n", 0);
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, big, n, 0),
	    HTTP1_BODY_DONE);
	CHECK_EQ_STR(trailer_field(0), "A=1");
	CHECK_EQ_STR(trailer_field(1), "B=2");
	CHECK(trailer_field(2) == NULL);
	/* one of 256 bytes is not */
	n = (size_t)snprintf(big, sizeof(big), "0\r\n%0256d: x\r\n\r\n", 0);
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CHUNKED, 0, big, n, 0),
	    HTTP1_BODY_DONE);
	CHECK_EQ_INT(http1_trailers(fd.trailer, fd.trlen, h, 2), 1);

	/* at most max fields */
	CHECK_EQ_INT(FEED_LIT(HTTP1_BODY_CHUNKED, "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n"
	    "\r\n", 0), HTTP1_BODY_DONE);
	CHECK_EQ_INT(http1_trailers(fd.trailer, fd.trlen, h, 2), 2);
	CHECK(h[1].namelen == 1 && h[1].name[0] == 'B');
}

static void
test_length_body(void)
{
	static const int steps[] = { 0, 1, 2, 3, 4, 100 };
	size_t i;

	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		CHECK_EQ_INT(feed_body(HTTP1_BODY_LENGTH, 5, "helloEXTRA", 10,
		    steps[i]), HTTP1_BODY_DONE);
		CHECK(fd.sane);
		CHECK(payload_is("hello", 5));
		CHECK_EQ_INT(fd.used, 5);
		CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_DONE);

		CHECK_EQ_INT(feed_body(HTTP1_BODY_LENGTH, 5, "hello", 5,
		    steps[i]), HTTP1_BODY_DONE);
		CHECK_EQ_INT(fd.used, 5);
		CHECK(payload_is("hello", 5));

		/* truncated */
		CHECK_EQ_INT(feed_body(HTTP1_BODY_LENGTH, 5, "hell", 4,
		    steps[i]), HTTP1_BODY_AGAIN);
		CHECK(payload_is("hell", 4));
		CHECK_EQ_INT(fd.used, 4);
		CHECK_EQ_INT(fd.body.remaining, 1);
		CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_ERROR);
	}
	CHECK_EQ_INT(feed_body(HTTP1_BODY_LENGTH, 5, "", 0, 0),
	    HTTP1_BODY_AGAIN);
	CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_ERROR);

	/* the whole path: head, then body, then the next head */
	{
		static const char two[] =
		    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
		    "HTTP/1.1 204 No Content\r\n\r\n";
		long rc;

		rc = parse_head(two, sizeof(two) - 1, false, &resp);
		CHECK_EQ_INT(rc, 38);
		CHECK_EQ_INT(feed_body(resp.framing, resp.content_length,
		    two + rc, sizeof(two) - 1 - (size_t)rc, 0),
		    HTTP1_BODY_DONE);
		CHECK(payload_is("abc", 3));
		rc += (long)fd.used;
		CHECK_EQ_INT(parse_head(two + rc, sizeof(two) - 1 - (size_t)rc,
		    false, &resp), 27);
		CHECK_EQ_INT(resp.status, 204);
	}
}

static void
test_close_body(void)
{
	static const char data[] = "any\r\nbytes\0at all\r\n0\r\n\r\n";
	size_t len = sizeof(data) - 1;

	CHECK_EQ_INT(feed_body(HTTP1_BODY_CLOSE, 0, data, len, 0),
	    HTTP1_BODY_AGAIN);
	CHECK(fd.sane);
	CHECK(payload_is(data, len));
	CHECK_EQ_INT(fd.used, len);
	CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_DONE);
	CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_DONE);

	CHECK_EQ_INT(feed_body(HTTP1_BODY_CLOSE, 0, data, len, 1),
	    HTTP1_BODY_AGAIN);
	CHECK(payload_is(data, len));
	CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_DONE);

	/* an empty close-delimited body */
	CHECK_EQ_INT(feed_body(HTTP1_BODY_CLOSE, 0, "", 0, 0),
	    HTTP1_BODY_AGAIN);
	CHECK_EQ_INT(fd.paylen, 0);
	CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_DONE);
}

static void
test_none_body(void)
{
	CHECK_EQ_INT(feed_body(HTTP1_BODY_NONE, 0, "HTTP/1.1 200", 12, 0),
	    HTTP1_BODY_DONE);
	CHECK_EQ_INT(fd.used, 0);
	CHECK_EQ_INT(fd.paylen, 0);
	CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_DONE);
	CHECK_EQ_INT(feed_body(HTTP1_BODY_NONE, 0, "", 0, 0),
	    HTTP1_BODY_DONE);
	CHECK_EQ_INT(fd.used, 0);

	/* LENGTH with a zero length, should a caller build one */
	CHECK_EQ_INT(feed_body(HTTP1_BODY_LENGTH, 0, "x", 1, 0),
	    HTTP1_BODY_DONE);
	CHECK_EQ_INT(fd.used, 0);
	CHECK_EQ_INT(http1_body_eof(&fd.body), HTTP1_BODY_DONE);
}

/* Random chunked bodies fed in random splits, against the payload. */
static void
test_random_splits(void)
{
	static uint8_t body[16384], payload[8192];
	static const char *const exts[] = { "", ";a", ";a=b", " ;n=\"q v\"",
	    "\t; x ; y=1" };
	size_t blen, plen, n, i, j;
	int iter, nchunks, c, ok = 0, whole_ok = 0;
	const int iters = 500;

	rng_state = 0x9e3779b9u;
	for (iter = 0; iter < iters; iter++) {
		blen = plen = 0;
		nchunks = (int)(rng() % 9);
		for (c = 0; c < nchunks; c++) {
			n = 1 + rng() % 300;
			blen += (size_t)snprintf((char *)body + blen,
			    sizeof(body) - blen, rng() % 2 ? "%0*zx%s\r\n" :
			    "%0*zX%s\r\n", (int)(rng() % 4), n,
			    exts[rng() % 5]);
			for (i = 0; i < n; i++) {
				/* plenty of CR, LF and digits in the data */
				j = rng() % 8;
				payload[plen] = j == 0 ? '\r' : j == 1 ? '\n' :
				    j == 2 ? '0' : (uint8_t)rng();
				body[blen++] = payload[plen++];
			}
			memcpy(body + blen, "\r\n", 2);
			blen += 2;
		}
		blen += (size_t)snprintf((char *)body + blen,
		    sizeof(body) - blen, "%.*s%s\r\n", (int)(1 + rng() % 3),
		    "000", exts[rng() % 5]);
		for (c = (int)(rng() % 4); c > 0; c--)
			blen += (size_t)snprintf((char *)body + blen,
			    sizeof(body) - blen, "T-%d:%s v%u \r\n", c,
			    rng() % 2 ? " " : "", (unsigned)rng() % 1000);
		memcpy(body + blen, "\r\nNEXT", 6);

		if (feed_body(HTTP1_BODY_CHUNKED, 0, body, blen + 6, -1) ==
		    HTTP1_BODY_DONE && fd.sane && fd.used == blen + 2 &&
		    payload_is(payload, plen))
			ok++;
		if (feed_body(HTTP1_BODY_CHUNKED, 0, body, blen + 6, 0) ==
		    HTTP1_BODY_DONE && fd.sane && fd.used == blen + 2 &&
		    payload_is(payload, plen))
			whole_ok++;
	}
	CHECK_EQ_INT(ok, iters);
	CHECK_EQ_INT(whole_ok, iters);
}

/* http1_status: the status line of a health check, read as a response's. */
static void
test_status_alone(void)
{
#define ST(s)	http1_status((const uint8_t *)(s), sizeof(s) - 1)
	CHECK_EQ_INT(ST("HTTP/1.1 200 OK"), 200);
	CHECK_EQ_INT(ST("HTTP/1.0 503 Service Unavailable"), 503);
	CHECK_EQ_INT(ST("HTTP/1.1 204"), 204);
	CHECK_EQ_INT(ST("HTTP/1.1 200 "), 200);
	CHECK_EQ_INT(ST("HTTP/1.X 200 OK"), -1);
	CHECK_EQ_INT(ST("HTTP/1.1 2000 OK"), -1);
	CHECK_EQ_INT(ST("HTTP/1.1 200 O\x01K"), -1);
	CHECK_EQ_INT(ST("HTTP/1.1 099 Low"), -1);
	CHECK_EQ_INT(ST("HTTP/1.1 600 High"), -1);
	CHECK_EQ_INT(ST("HTTP/1.1 20"), -1);
	CHECK_EQ_INT(ST("HTTP/2.0 200 OK"), -1);
#undef ST
}

int
main(void)
{
	test_status_lines();
	test_incomplete();
	test_status_alone();
	test_headers();
	test_value_bytes();
	test_content_length();
	test_transfer_encoding();
	test_keep_alive();
	test_no_body();
	test_chunked();
	test_chunked_bad();
	test_chunk_line_bound();
	test_trailer_bound();
	test_trailers();
	test_length_body();
	test_close_body();
	test_none_body();
	test_random_splits();
	UNIT_DONE();
}
