/*
 * fuzz_request.c: HTTP/3 request validation and the HTTP/1.1 request head
 * written from it. Any list of fields goes in; when request.c accepts it,
 * the bytes for the backend are checked for everything a backend could
 * read differently from what qproxy validated: CR, LF or NUL out of place,
 * a second request line, a field line that is not "name: value", two
 * lengths or a length with chunked, connection-specific fields, and a
 * request line or Host other than what was checked. A WebSocket's head
 * (an extended CONNECT) has its Upgrade, Connection and key once each,
 * the key qproxy's, and no body framing.
 *
 * Input: byte 0 holds flags:
 *   bit 0	the stream ended with the header section (fin)
 *   bit 1	the request came in 0-RTT (Early-Data: 1)
 *   bit 2	the client's address is IPv6
 *   bit 3	max_header_size is 1k (else 64k)
 *   bit 4	the body was all received before forwarding began
 *   bits 5-7	how much body arrived: 0, 1, content-length - 1, exactly
 *		content-length, content-length + 1, 17, 70000, 1 << 40
 * then fields, each a name and a value, each a length and the bytes: the
 * length is one byte, or 0xff and two bytes big-endian.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bufq.h"
#include "compress.h"
#include "request.h"
#include "fuzz.h"

static bool
is_tchar(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') ||
	    (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool
name_eq(const uint8_t *n, size_t len, const char *s)
{
	return strlen(s) == len && strncasecmp((const char *)n, s, len) == 0;
}

static bool
value_eq(const uint8_t *v, size_t len, const char *s, size_t slen)
{
	return len == slen && memcmp(v, s, len) == 0;
}

/*
 * compress.c's reading of the Accept-Encoding values (ex_accepts_gzip's),
 * and again with an empty element before each, which changes nothing
 * (RFC 9110 5.6.1); "gzip" after them all takes it, "gzip;q=0" after
 * them all refuses it unless an earlier one took it.
 */
static void
check_accept(const struct request *r)
{
	int g1 = -1, s1 = -1, g2 = -1, s2 = -1, g3, s3;
	const char *v;
	size_t i = 0, len;
	char *copy;

	while ((v = request_field_next(r, "accept-encoding", &i)) != NULL) {
		compress_accept_value(v, &g1, &s1);
		len = strlen(v);
		if ((copy = malloc(len + 3)) == NULL)
			return;
		memcpy(copy, " ,", 2);
		memcpy(copy + 2, v, len + 1);
		compress_accept_value(copy, &g2, &s2);
		free(copy);
	}
	FUZZ_CHECK(g1 == g2 && s1 == s2);
	FUZZ_CHECK(g1 >= -1 && g1 <= 1 && s1 >= -1 && s1 <= 1);
	g3 = g1;
	s3 = s1;
	compress_accept_value("gzip", &g3, &s3);
	FUZZ_CHECK(compress_accept_result(g3, s3));
	g3 = g1;
	s3 = s1;
	compress_accept_value("gzip;q=0", &g3, &s3);
	FUZZ_CHECK(compress_accept_result(g3, s3) == (g1 == 1));
}

/* The bytes of a bufq in one piece. */
static uint8_t *
flatten(const struct bufq *q, size_t *len)
{
	struct iovec iov[64];
	uint8_t *out;
	size_t n, off = 0;

	FUZZ_CHECK(q->unsent == q->len);
	if ((out = malloc(q->len + 1)) == NULL)
		abort();
	n = bufq_peek_unsent(q, iov, 64);
	for (size_t i = 0; i < n; i++) {
		memcpy(out + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	FUZZ_CHECK(off == q->len);
	*len = off;
	return out;
}

/*
 * The value qproxy adds to Forwarded comes last: for=...;proto=https;
 * host="authority". The authority must not end the quoted-string early.
 */
static void
check_forwarded(const struct request_forward *fw, const char *authority,
    size_t alen, const uint8_t *v, size_t len)
{
	char want[128];
	int n;

	n = snprintf(want, sizeof(want), strchr(fw->client_addr, ':') ?
	    "for=\"[%s]\";proto=https;host=\"" : "for=%s;proto=https;host=\"",
	    fw->client_addr);
	FUZZ_CHECK(len >= (size_t)n + alen + 1);
	FUZZ_CHECK(v[len - 1] == '"');
	FUZZ_CHECK(memcmp(v + len - 1 - alen, authority, alen) == 0);
	FUZZ_CHECK(memcmp(v + len - 1 - alen - (size_t)n, want,
	    (size_t)n) == 0);
	for (size_t i = 0; i < alen; i++)
		FUZZ_CHECK(authority[i] != '"' && authority[i] != '\\');
}

/*
 * The path routes match and the backend gets: no fragment, and in the part
 * before any query no "." or ".." segment and no percent-encoding of a
 * character that stands for itself (RFC 3986 6.2.2).
 */
static void
check_path(const struct request *r)
{
	const char *p, *q, *seg, *next;
	size_t len, plen, seglen;

	p = request_path(r, &len);
	FUZZ_CHECK(strlen(p) == len && memchr(p, '#', len) == NULL);
	if (len == 1 && p[0] == '*')
		return;
	FUZZ_CHECK(p[0] == '/');
	q = memchr(p, '?', len);
	plen = q != NULL ? (size_t)(q - p) : len;
	for (seg = p + 1; seg <= p + plen; seg = next + 1) {
		next = memchr(seg, '/', plen - (size_t)(seg - p));
		if (next == NULL)
			next = p + plen;
		seglen = (size_t)(next - seg);
		FUZZ_CHECK(!(seglen == 1 && seg[0] == '.'));
		FUZZ_CHECK(!(seglen == 2 && seg[0] == '.' && seg[1] == '.'));
	}
	for (size_t i = 0; i + 2 < plen; i++) {
		char hex[3] = { p[i + 1], p[i + 2], '\0' }, *e;
		long c;

		if (p[i] != '%' || !isxdigit((unsigned char)hex[0]) ||
		    !isxdigit((unsigned char)hex[1]))
			continue;
		c = strtol(hex, &e, 16);
		FUZZ_CHECK(!isalnum((int)c) && (c == 0 || strchr("-._~", (int)c) == NULL));
	}
}

static void
check_head(const struct request *r, const struct request_forward *fw,
    const uint8_t *h, size_t len)
{
	const uint8_t *line, *end = h + len, *lf, *colon, *v, *sp1, *sp2;
	const char *method, *path, *authority;
	size_t linelen, plen, alen, vlen, nhost = 0, ncl = 0, nte = 0;
	size_t ntrailers = 0, nconn = 0, nupgrade = 0, nkey = 0, ncert = 0;
	bool first = true, blank = false;

	method = request_method(r);
	path = request_path(r, &plen);
	authority = request_authority(r, &alen);

	FUZZ_CHECK(len >= 4 && memcmp(end - 4, "\r\n\r\n", 4) == 0);
	FUZZ_CHECK(memchr(h, '\0', len) == NULL);
	for (size_t i = 0; i < len; i++) {
		if (h[i] == '\r')
			FUZZ_CHECK(i + 1 < len && h[i + 1] == '\n');
		if (h[i] == '\n')
			FUZZ_CHECK(i > 0 && h[i - 1] == '\r');
	}
	for (line = h; line < end; line = lf + 1) {
		lf = memchr(line, '\n', (size_t)(end - line));
		FUZZ_CHECK(lf != NULL);
		linelen = (size_t)(lf - line) - 1;	/* without CRLF */
		/* the empty line ends the head, and only there */
		FUZZ_CHECK(!blank);
		if (linelen == 0) {
			FUZZ_CHECK(lf + 1 == end);
			blank = true;
			continue;
		}
		if (first) {
			/* method SP target SP HTTP/1.1 */
			first = false;
			sp1 = memchr(line, ' ', linelen);
			FUZZ_CHECK(sp1 != NULL);
			sp2 = memchr(sp1 + 1, ' ',
			    linelen - (size_t)(sp1 + 1 - line));
			FUZZ_CHECK(sp2 != NULL);
			FUZZ_CHECK(line + linelen - (sp2 + 1) == 8 &&
			    memcmp(sp2 + 1, "HTTP/1.1", 8) == 0);
			FUZZ_CHECK(sp1 > line);
			for (const uint8_t *c = line; c < sp1; c++)
				FUZZ_CHECK(is_tchar(*c));
			FUZZ_CHECK(value_eq(line, (size_t)(sp1 - line),
			    method, strlen(method)));
			FUZZ_CHECK(sp2 > sp1 + 1);
			for (const uint8_t *c = sp1 + 1; c < sp2; c++)
				FUZZ_CHECK(*c > ' ' && *c != 0x7f);
			FUZZ_CHECK(value_eq(sp1 + 1, (size_t)(sp2 - sp1 - 1),
			    path, plen));
			continue;
		}
		/* name ":" OWS value OWS */
		colon = memchr(line, ':', linelen);
		FUZZ_CHECK(colon != NULL && colon > line);
		for (const uint8_t *c = line; c < colon; c++)
			FUZZ_CHECK(is_tchar(*c));
		v = colon + 1;
		vlen = linelen - (size_t)(v - line);
		while (vlen > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			vlen--;
		}
		while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (name_eq(line, (size_t)(colon - line), "host")) {
			nhost++;
			FUZZ_CHECK(value_eq(v, vlen, authority, alen));
		} else if (name_eq(line, (size_t)(colon - line),
		    "content-length")) {
			char want[32];

			ncl++;
			FUZZ_CHECK(fw->framing == REQ_BODY_LENGTH);
			snprintf(want, sizeof(want), "%llu",
			    (unsigned long long)fw->body_length);
			FUZZ_CHECK(value_eq(v, vlen, want, strlen(want)));
		} else if (name_eq(line, (size_t)(colon - line),
		    "transfer-encoding")) {
			nte++;
			FUZZ_CHECK(fw->framing == REQ_BODY_CHUNKED);
			FUZZ_CHECK(value_eq(v, vlen, "chunked", 7));
		} else if (name_eq(line, (size_t)(colon - line),
		    "forwarded"))
			check_forwarded(fw, authority, alen, v, vlen);
		else if (name_eq(line, (size_t)(colon - line), "te")) {
			/* the client's TE: trailers, said once, named below */
			ntrailers++;
			FUZZ_CHECK(value_eq(v, vlen, "trailers", 8));
		} else if (name_eq(line, (size_t)(colon - line),
		    "connection")) {
			nconn++;
			FUZZ_CHECK(value_eq(v, vlen, "te", 2) ||
			    (fw->ws_key != NULL &&
			    value_eq(v, vlen, "upgrade", 7)));
		} else if (name_eq(line, (size_t)(colon - line),
		    "upgrade")) {
			nupgrade++;
			FUZZ_CHECK(value_eq(v, vlen, "websocket", 9));
		} else if (name_eq(line, (size_t)(colon - line),
		    "x-client-cert")) {
			/* client_cert_header: qproxy's alone, the client's
			   dropped */
			ncert++;
			FUZZ_CHECK(fw->cert != NULL && value_eq(v, vlen,
			    fw->cert, strlen(fw->cert)));
		} else if (request_name_is(fw->cert_name,
		    (const char *)line, (size_t)(colon - line))) {
			/* client_cert_header spelt with "_": the client's,
			   never sent */
			FUZZ_CHECK(false);
		} else if (name_eq(line, (size_t)(colon - line),
		    "sec-websocket-key")) {
			nkey++;
			FUZZ_CHECK(fw->ws_key != NULL && value_eq(v, vlen,
			    fw->ws_key, strlen(fw->ws_key)));
		} else
			FUZZ_CHECK(!name_eq(line, (size_t)(colon - line),
			    "keep-alive") &&
			    !name_eq(line, (size_t)(colon - line),
			    "proxy-connection"));
	}
	FUZZ_CHECK(nupgrade == (fw->ws_key != NULL) && nkey == nupgrade);
	FUZZ_CHECK(ncert == (fw->cert != NULL));
	FUZZ_CHECK(ntrailers <= 1 && nconn == ntrailers + nupgrade);
	FUZZ_CHECK(!first && blank);
	FUZZ_CHECK(nhost == 1);
	FUZZ_CHECK(ncl <= 1 && nte <= 1 && ncl + nte <= 1);
	FUZZ_CHECK((ncl == 1) == (fw->framing == REQ_BODY_LENGTH));
	FUZZ_CHECK((nte == 1) == (fw->framing == REQ_BODY_CHUNKED));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t received_choice[] = {
		0, 1, 0, 0, 0, 17, 70000, (uint64_t)1 << 40,
	};
	const uint8_t *p, *end = data + size, *name, *value;
	size_t namelen, valuelen, hlen;
	struct request_forward fw;
	struct request r;
	struct bufq out;
	uint64_t received;
	uint8_t flags, *head;
	bool fin, all_in;

	if (size < 1)
		return 0;
	flags = data[0];
	fin = flags & 0x01;
	all_in = (flags & 0x10) != 0;
	p = data + 1;

	request_init(&r, flags & 0x08 ? 1024 : 65536);
	while (take(&p, end, &name, &namelen) &&
	    take(&p, end, &value, &valuelen))
		(void)request_add(&r, name, namelen, value, valuelen);
	if (request_finish(&r, fin) == -1) {
		FUZZ_CHECK(r.error != REQ_OK && r.why != NULL);
		request_free(&r);
		return 0;
	}
	FUZZ_CHECK(r.error == REQ_OK);
	FUZZ_CHECK(r.method != -1 && r.path != -1);
	check_path(&r);
	check_accept(&r);
	FUZZ_CHECK(r.authority != -1 || r.host != -1);
	FUZZ_CHECK(!fin || r.content_length <= 0);

	/* the body so far, as exchange.c counts it */
	received = received_choice[flags >> 5];
	if (r.content_length >= 0) {
		switch (flags >> 5) {
		case 2:
			received = r.content_length > 0 ?
			    (uint64_t)r.content_length - 1 : 0;
			break;
		case 3:
			received = (uint64_t)r.content_length;
			break;
		case 4:
			received = (uint64_t)r.content_length + 1;
			break;
		}
	}
	if (fin)
		received = 0;
	if (request_check_body(&r, received, fin || all_in) == -1) {
		FUZZ_CHECK(r.content_length >= 0);
		FUZZ_CHECK(received > (uint64_t)r.content_length ||
		    ((fin || all_in) &&
		    received != (uint64_t)r.content_length));
		request_free(&r);
		return 0;
	}
	if (r.content_length >= 0 && (fin || all_in))
		FUZZ_CHECK(received == (uint64_t)r.content_length);

	/* exchange.c's choice of framing (ex_start) */
	memset(&fw, 0, sizeof(fw));
	fw.client_addr = flags & 0x04 ? "2001:db8::1" : "192.0.2.1";
	fw.early_data = (flags & 0x02) != 0;
	/* a listener's client_cert_header, the client's certificate shown
	   or not */
	fw.cert_name = "x-client-cert";
	fw.cert = flags & 0x04 ? "Hash=00;Subject=\"/CN=a\"" : NULL;
	if (r.flags & REQ_F_WEBSOCKET) {
		/* the tunnel's bytes follow the 101 unframed */
		FUZZ_CHECK(r.flags & REQ_F_CONNECT && r.content_length == -1);
		FUZZ_CHECK(strcmp(request_method(&r), "GET") == 0);
		fw.ws_key = "dGhlIHNhbXBsZSBub25jZQ==";
		fw.framing = REQ_BODY_NONE;
	} else if (fin || all_in) {
		fw.body_length = received;
		fw.framing = received > 0 || r.content_length >= 0 ||
		    (r.flags & REQ_F_BODY_METHOD) ? REQ_BODY_LENGTH :
		    REQ_BODY_NONE;
	} else if (r.content_length >= 0) {
		fw.body_length = (uint64_t)r.content_length;
		fw.framing = REQ_BODY_LENGTH;
	} else
		fw.framing = REQ_BODY_CHUNKED;

	bufq_init(&out);
	FUZZ_CHECK(request_write_http1(&r, &fw, &out) == 0);
	head = flatten(&out, &hlen);
	check_head(&r, &fw, head, hlen);
	free(head);
	bufq_free(&out);
	bufq_cache_free();	/* poisoned: LeakSanitizer cannot follow it */
	request_free(&r);
	return 0;
}
