/* test_request.c: request validation (RFC 9114 4.1.2-4.3) and HTTP/1.1 out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "request.h"
#include "unit.h"
#include "websocket.h"

/*
 * Linked with -Wl,--wrap=malloc (Makefile): every malloc of the test and
 * of the modules comes here, and fails while malloc_fails is set.
 */
void	*__real_malloc(size_t);
void	*__wrap_malloc(size_t);
static bool malloc_fails;

void *
__wrap_malloc(size_t n)
{
	return malloc_fails ? NULL : __real_malloc(n);
}

/* Fields as "name: value" strings; the first ": " splits. */
static struct request *
build(const char *const *fields, bool fin, int *rv)
{
	static struct request r;

	request_free(&r);
	request_init(&r, 65536);
	for (; *fields != NULL; fields++) {
		const char *sep = strstr(*fields + 1, ": ");
		size_t nlen = (size_t)(sep - *fields);

		(void)request_add(&r, (const uint8_t *)*fields, nlen,
		    (const uint8_t *)sep + 2, strlen(sep + 2));
	}
	*rv = request_finish(&r, fin);
	return &r;
}

#define BASE ":method: GET", ":scheme: https", ":authority: example.com", \
	":path: /"

static enum request_error
verdict(const char *const *fields, bool fin)
{
	int rv;
	struct request *r = build(fields, fin, &rv);

	return rv == 0 ? REQ_OK : r->error;
}

static void
test_valid(void)
{
	const char *ok[] = { BASE, "accept: */*", "te: trailers", NULL };
	const char *host_only[] = { ":method: GET", ":scheme: https",
	    ":path: /x", "host: example.com", NULL };
	const char *both[] = { BASE, "host: EXAMPLE.com", NULL };
	const char *options[] = { ":method: OPTIONS", ":scheme: https",
	    ":authority: a", ":path: *", NULL };
	const char *cl0[] = { BASE, "content-length: 0", NULL };
	/* authorities of RFC 3986 3.2, an empty port among them */
	const char *authorities[] = { "[::1]:443", "[::1]", "a:", "a:443",
	    "a.", "[v1.x]", "1.2.3.4:0", NULL };
	const char *auth[] = { ":method: GET", ":scheme: https", NULL,
	    ":path: /", NULL };
	char abuf[64];
	/* one-byte values: visible, and obs-text (RFC 9110 5.5) */
	const char *one[] = { BASE, "x: a", "y: ~", "z: \x80", "w: \xff",
	    NULL };

	CHECK_EQ_INT(verdict(ok, true), REQ_OK);
	CHECK_EQ_INT(verdict(one, true), REQ_OK);
	CHECK_EQ_INT(verdict(host_only, true), REQ_OK);
	CHECK_EQ_INT(verdict(both, true), REQ_OK);
	CHECK_EQ_INT(verdict(options, true), REQ_OK);
	CHECK_EQ_INT(verdict(cl0, true), REQ_OK);
	for (size_t i = 0; authorities[i] != NULL; i++) {
		snprintf(abuf, sizeof(abuf), ":authority: %s", authorities[i]);
		auth[2] = abuf;
		if (verdict(auth, true) != REQ_OK)
			fprintf(stderr, "authority %s refused\n", authorities[i]);
		CHECK_EQ_INT(verdict(auth, true), REQ_OK);
	}
}

/* Which methods may be sent twice (RFC 9110 9.2.2), and which need a length. */
static void
test_method_flags(void)
{
	static const struct {
		const char	*method;
		unsigned	 flags;
	} cases[] = {
		{ "GET", REQ_F_IDEMPOTENT },
		{ "HEAD", REQ_F_IDEMPOTENT | REQ_F_HEAD },
		{ "OPTIONS", REQ_F_IDEMPOTENT },
		{ "TRACE", REQ_F_IDEMPOTENT },
		{ "DELETE", REQ_F_IDEMPOTENT },
		{ "PUT", REQ_F_IDEMPOTENT | REQ_F_BODY_METHOD },
		{ "POST", REQ_F_BODY_METHOD },
		{ "PATCH", REQ_F_BODY_METHOD },
		{ "get", 0 },		/* methods are case-sensitive */
		{ "GETS", 0 },
		{ "PROPFIND", 0 },
	};
	const unsigned mask = REQ_F_IDEMPOTENT | REQ_F_HEAD |
	    REQ_F_BODY_METHOD | REQ_F_CONNECT;
	char method[32];
	const char *fields[] = { method, ":scheme: https",
	    ":authority: a", ":path: /", NULL };
	struct request *r;
	int rv;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(method, sizeof(method), ":method: %s",
		    cases[i].method);
		r = build(fields, true, &rv);
		CHECK_EQ_INT(rv, 0);
		CHECK_EQ_INT((int)(r->flags & mask), (int)cases[i].flags);
	}
	/*
	 * a method-override field (spelt with "_" too) names what an
	 * application may do instead: not sent twice
	 */
	{
		const char *over[] = { BASE, "x-http-method-override: GET",
		    NULL };
		const char *under[] = { BASE, "x_http_method: GET", NULL };
		const char *other[] = { BASE, "x-http-methods: GET", NULL };

		r = build(over, true, &rv);
		CHECK_EQ_INT((int)(r->flags & mask), 0);
		r = build(under, true, &rv);
		CHECK_EQ_INT((int)(r->flags & mask), 0);
		r = build(other, true, &rv);
		CHECK_EQ_INT((int)(r->flags & mask), REQ_F_IDEMPOTENT);
	}
}

static void
test_malformed(void)
{
	static const char *const cases[][8] = {
		/* exactly one of each pseudo-header */
		{ ":method: GET", ":method: GET", ":scheme: https",
		    ":authority: a", ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":scheme: https",
		    ":authority: a", ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a",
		    ":path: /", ":path: /", NULL },
		{ ":scheme: https", ":authority: a", ":path: /", NULL },
		{ ":method: GET", ":authority: a", ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a",
		    ":path: ", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a",
		    ":path: noslash", NULL },
		/* a URI is ASCII without spaces or controls */
		{ ":method: GET", ":scheme: https", ":authority: a",
		    ":path: /a b", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a",
		    ":path: /a\x7f", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a",
		    ":path: /caf\xc3\xa9", NULL },
		/* pseudo-header after a regular field, unknown pseudo */
		{ ":method: GET", ":scheme: https", "accept: x",
		    ":authority: a", ":path: /", NULL },
		{ BASE, ":foo: bar", NULL },
		/* names */
		{ BASE, "Accept: x", NULL },
		{ BASE, "acc ept: x", NULL },
		{ BASE, "acc\"ept: x", NULL },
		/* values */
		{ BASE, "x: a\rb", NULL },
		{ BASE, "x: a\nb", NULL },
		/* one byte that nghttp3 1.8.0 passes on: a control */
		{ BASE, "x: \x01", NULL },
		{ BASE, "x: \x1f", NULL },
		{ BASE, "x: \x7f", NULL },
		/* connection-specific fields */
		{ BASE, "connection: close", NULL },
		{ BASE, "keep-alive: 5", NULL },
		{ BASE, "proxy-connection: x", NULL },
		{ BASE, "transfer-encoding: chunked", NULL },
		{ BASE, "upgrade: websocket", NULL },
		{ BASE, "te: gzip", NULL },
		/* authority */
		{ ":method: GET", ":scheme: https", ":authority: u@a",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":path: /",
		    "host: u@a", NULL },
		/* found by fuzz_request: it reached Forwarded's host="..." */
		{ ":method: GET", ":scheme: https", ":path: /",
		    "host: a\";for=evil", NULL },
		{ ":method: GET", ":scheme: https", ":path: /",
		    "host: a\\b", NULL },
		{ ":method: GET", ":scheme: https", ":path: /",
		    "host: a b", NULL },
		{ BASE, "host: other.example", NULL },
		/* an authority has a host, and a port of digits alone */
		{ ":method: GET", ":scheme: https", ":authority: :443",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: :",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a:b",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a:1:2",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: [::1",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: []",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: [[::1]",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: [::1]x",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a]",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":authority: a[b",
		    ":path: /", NULL },
		{ ":method: GET", ":scheme: https", ":path: /",
		    "host: :443", NULL },
		{ ":method: GET", ":scheme: https", ":path: /", NULL },
		/* content-length */
		{ BASE, "content-length: 5", "content-length: 5", NULL },
		{ BASE, "content-length: 5x", NULL },
		{ BASE, "content-length: -1", NULL },
		{ BASE, "content-length: ", NULL },
		/* CONNECT with a path */
		{ ":method: CONNECT", ":authority: a:443", ":path: /", NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum request_error e = verdict(cases[i], true);

		if (e != REQ_MALFORMED)
			fprintf(stderr, "case %zu: %d\n", i, e);
		CHECK_EQ_INT(e, REQ_MALFORMED);
	}
}

static void
test_nul_in_value(void)
{
	struct request r;
	static const uint8_t v[] = { 'a', 0, 'b' };

	request_init(&r, 65536);
	CHECK_EQ_INT(request_add(&r, (const uint8_t *)"x", 1, v, 3), -1);
	CHECK_EQ_INT(r.error, REQ_MALFORMED);
	request_free(&r);
}

static void
test_body_length(void)
{
	const char *cl5[] = { BASE, "content-length: 5", NULL };
	struct request *r;
	int rv;

	/* headers with FIN and a non-zero length: malformed */
	CHECK_EQ_INT(verdict(cl5, true), REQ_MALFORMED);

	r = build(cl5, false, &rv);
	CHECK_EQ_INT(rv, 0);
	CHECK_EQ_INT(request_check_body(r, 3, false), 0);
	CHECK_EQ_INT(request_check_body(r, 5, true), 0);

	r = build(cl5, false, &rv);
	CHECK_EQ_INT(request_check_body(r, 0, true), -1);	/* FIN only */
	CHECK_EQ_INT(r->error, REQ_MALFORMED);

	r = build(cl5, false, &rv);
	CHECK_EQ_INT(request_check_body(r, 4, true), -1);
	r = build(cl5, false, &rv);
	CHECK_EQ_INT(request_check_body(r, 6, false), -1);
}

static void
test_other_errors(void)
{
	const char *connect[] = { ":method: CONNECT", ":authority: a:443",
	    NULL };
	const char *ftp[] = { ":method: GET", ":scheme: ftp",
	    ":authority: a", ":path: /", NULL };
	struct request r;
	char big[2000];

	CHECK_EQ_INT(verdict(connect, true), REQ_NOT_IMPLEMENTED);
	CHECK_EQ_INT(verdict(ftp, true), REQ_BAD);

	memset(big, 'a', sizeof(big));
	request_init(&r, 1024);
	CHECK_EQ_INT(request_add(&r, (const uint8_t *)"x", 1,
	    (const uint8_t *)big, sizeof(big)), -1);
	CHECK_EQ_INT(r.error, REQ_TOO_LARGE);
	request_free(&r);

	/* the limit is the size the client was told: name + value + 32 each */
	request_init(&r, 1024);
	CHECK_EQ_INT(request_add(&r, (const uint8_t *)":method", 7,
	    (const uint8_t *)"GET", 3), 0);
	CHECK_EQ_INT(request_add(&r, (const uint8_t *)"x", 1,
	    (const uint8_t *)big, 1024 - 42 - 33), 0);	/* 1024 in all */
	CHECK_EQ_INT(r.error, REQ_OK);
	CHECK_EQ_INT(request_add(&r, (const uint8_t *)"y", 1,
	    (const uint8_t *)"", 0), -1);			/* 1057 */
	CHECK_EQ_INT(r.error, REQ_TOO_LARGE);
	request_free(&r);
}

/* The :path a backend gets, and routes see, for the :path a client sent. */
static void
test_path_normalized(void)
{
	static const struct {
		const char	*in, *out;
	} cases[] = {
		{ "/", "/" },
		{ "/a/b/c", "/a/b/c" },
		{ "/a/./b", "/a/b" },
		{ "/a/../b", "/b" },
		{ "/img/../admin/x", "/admin/x" },
		{ "/a/b/..", "/a/" },
		{ "/a/b/.", "/a/b/" },
		{ "/a/./", "/a/" },
		{ "/..", "/" },
		{ "/.", "/" },
		{ "/../../a", "/a" },
		{ "//..", "/" },
		{ "/a//../b", "/a/b" },
		{ "/a/.../b", "/a/.../b" },
		{ "/a/..b/.c", "/a/..b/.c" },
		{ "/a/%2e%2E/b", "/b" },
		{ "/a/.%2e", "/" },
		{ "/%7euser/%41%2d%5f", "/~user/A-_" },
		{ "/a%2fb/%2F.x/c%5Cd", "/a%2fb/%2F.x/c%5Cd" },	/* kept */
		{ "/a;x=1/b/...;/c/.x;/d;.;", "/a;x=1/b/...;/c/.x;/d;.;" },
		{ "/%25%32%65", "/%252e" },	/* decoded once only */
		{ "/a/../b?x=/../y&z=%2e", "/b?x=/../y&z=%2e" },
		{ "/a/b?", "/a/b?" },
		{ "/x/..?", "/?" },
	};
	const char *ok[] = { ":method: GET", ":scheme: https",
	    ":authority: a", NULL, NULL };
	const char *fragment[] = { ":method: GET", ":scheme: https",
	    ":authority: a", ":path: /a#b", NULL };
	/* "%%32e" must not become a "%2e" for the backend to decode */
	static const char *bad_pct[] = { "/%zz", "/a%4", "/a%", "/%%32e",
	    "/a/./%g1",
	    /* a dot segment that encoded slashes make, for a backend that
	       decodes them to resolve behind the routes' backs */
	    "/a%2fb/%2F..", "/img/..%2Fadmin", "/img/..%5cadmin", "/a/.%2F",
	    "/%2e%2e%2fadmin", "/a%2F.", "/x/%2e%5C",
	    /* or whose parameters Tomcat and Jetty take off first */
	    "/a/..;/b", "/a/.;x/b", "/..;jsessionid=1/admin", "/a/%2e%2e;",
	    "/a/..;x%2Fb" };
	char field[128];
	const char *p;
	size_t len;
	int rv;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct request *r;

		snprintf(field, sizeof(field), ":path: %s", cases[i].in);
		ok[3] = field;
		r = build(ok, true, &rv);
		CHECK_EQ_INT(rv, 0);
		p = request_path(r, &len);
		CHECK_EQ_STR(p, cases[i].out);
		CHECK_EQ_INT(len, strlen(cases[i].out));
	}
	CHECK_EQ_INT(verdict(fragment, true), REQ_BAD);
	for (size_t i = 0; i < sizeof(bad_pct) / sizeof(bad_pct[0]); i++) {
		snprintf(field, sizeof(field), ":path: %s", bad_pct[i]);
		ok[3] = field;
		CHECK_EQ_INT(verdict(ok, true), REQ_BAD);
		/* refused as it came, for the log */
		CHECK_EQ_STR(request_path(build(ok, true, &rv), &len),
		    bad_pct[i]);
	}
	/* a '%' in the query is not the path's */
	ok[3] = ":path: /a/%2e/b?%zz";
	p = request_path(build(ok, true, &rv), &len);
	CHECK_EQ_INT(rv, 0);
	CHECK_EQ_STR(p, "/a/b?%zz");
	/* characters no URI has, that browsers encode in a path: refused */
	for (const char *c = "\\\"<>`{}"; *c != '\0'; c++) {
		snprintf(field, sizeof(field), ":path: /a/x%cy/b", *c);
		ok[3] = field;
		CHECK_EQ_INT(verdict(ok, true), REQ_BAD);
		/* in the query, as browsers send them, and "|" or "^" pass */
		snprintf(field, sizeof(field), ":path: /a?q=%c|^", *c);
		CHECK_EQ_INT(verdict(ok, true), REQ_OK);
	}
	ok[3] = ":path: /a|b^c";
	CHECK_EQ_INT(verdict(ok, true), REQ_OK);
}

static char *
flatten(struct bufq *q)
{
	struct iovec iov[64];
	size_t n = bufq_peek_unsent(q, iov, 64), len = 0;
	char *s = malloc(q->len + 1);

	for (size_t i = 0; i < n; i++) {
		memcpy(s + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	s[len] = '\0';
	return s;
}

/* The HTTP/1.1 head written for a request of these fields, from malloc. */
static char *
written(const char *const *fields, bool fin, const struct request_forward *fw,
    int *rv)
{
	struct request *r = build(fields, fin, rv);
	struct bufq q;
	char *s;

	bufq_init(&q);
	CHECK_EQ_INT(request_write_http1(r, fw, &q), 0);
	s = flatten(&q);
	bufq_free(&q);
	return s;
}

/* A new request with the pseudo-header fields of a GET of "/". */
/* One field line, both parts NUL-ended. */
static void
add(struct request *r, const char *name, const char *value)
{
	(void)request_add(r, (const uint8_t *)name, strlen(name),
	    (const uint8_t *)value, strlen(value));
}

static void
start_get(struct request *r, const char *authority)
{
	request_init(r, 65536);
	add(r, ":method", "GET");
	add(r, ":scheme", "https");
	add(r, ":authority", authority);
	add(r, ":path", "/");
}

/*
 * Every byte value inside :authority: what may stand in the quoted-string
 * of the Forwarded field passes, nothing else (RFC 3986 3.2, RFC 7239 4),
 * and no bracket but those of an IP literal.
 */
static void
test_authority_bytes(void)
{
	struct request r;
	char authority[4] = { 'a', 0, 'b', '\0' };
	bool ok;

	for (int c = 1; c < 256; c++) {
		if (c == ':' || c == '@')
			continue;	/* port and userinfo: checked apart */
		authority[1] = (char)c;
		start_get(&r, authority);
		ok = c > ' ' && c < 0x7f && strchr("\"\\/?#<>{}|^`[]", c) == NULL;
		CHECK_EQ_INT(request_finish(&r, true) == 0, ok);
		request_free(&r);
	}
}

/* Past the inline space (fields and bytes), every field still goes out. */
static void
test_large_request(void)
{
	struct request_forward fw = { "198.51.100.7", REQ_BODY_NONE, 0, false, NULL,
	    NULL, NULL, 0, false, NULL, NULL, NULL };
	struct request r;
	struct bufq q;
	char name[32], value[128], line[200], *s, *at;
	int n = 3 * REQUEST_INLINE_FIELDS;

	start_get(&r, "example.com");
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "x-field-%02d", i);
		memset(value, 'a' + i % 26, 100);
		snprintf(value + 100, sizeof(value) - 100, "%02d", i);
		CHECK_EQ_INT(request_add(&r, (const uint8_t *)name,
		    strlen(name), (const uint8_t *)value, strlen(value)), 0);
	}
	CHECK_EQ_INT(request_finish(&r, true), 0);
	CHECK(r.buf != r.inline_buf && r.fields != r.inline_fields);
	bufq_init(&q);
	CHECK_EQ_INT(request_write_http1(&r, &fw, &q), 0);
	s = flatten(&q);
	at = s;
	for (int i = 0; i < n && at != NULL; i++) {
		memset(value, 'a' + i % 26, 100);
		value[100] = '\0';
		snprintf(line, sizeof(line), "\r\nx-field-%02d: %s%02d\r\n",
		    i, value, i);
		CHECK((at = strstr(at, line)) != NULL);
	}
	free(s);
	bufq_free(&q);
	request_free(&r);
}

/*
 * An authority longer than the buffer the head is gathered in: it goes out
 * whole, in its place, in the Host line and in the Forwarded element.
 */
static void
test_long_authority(void)
{
	struct request_forward fw = { "2001:db8::1", REQ_BODY_NONE, 0, false, NULL,
	    NULL, NULL, 0, false, NULL, NULL, NULL };
	struct request r;
	struct bufq q;
	char host[5001], want[10400], *s;

	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	start_get(&r, host);
	CHECK_EQ_INT(request_finish(&r, true), 0);
	bufq_init(&q);
	CHECK_EQ_INT(request_write_http1(&r, &fw, &q), 0);
	s = flatten(&q);
	snprintf(want, sizeof(want), "GET / HTTP/1.1\r\nhost: %s\r\n"
	    "x-forwarded-for: 2001:db8::1\r\nvia: 3 qproxy\r\n"
	    "forwarded: for=\"[2001:db8::1]\";proto=https;host=\"%s\"\r\n"
	    "x-forwarded-proto: https\r\n\r\n", host, host);
	CHECK_EQ_STR(s, want);
	free(s);
	bufq_free(&q);
	request_free(&r);
}

/* Adds n fields "x-fill-NN" of len bytes each. */
static void
fill(struct request *r, int n, size_t len)
{
	char name[32], value[2048];

	memset(value, 'v', len);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "x-fill-%02d", i);
		CHECK_EQ_INT(request_add(r, (const uint8_t *)name, strlen(name),
		    (const uint8_t *)value, len), 0);
	}
}

/*
 * The heap a head holds, and what is left of it once only the access
 * log's fields are kept: at most the given lengths of each, inline when
 * they fit.
 */
static void
test_compact(void)
{
	struct request r;
	char *path, *host;
	const char *p;
	size_t len, heap;

	/* all inline: nothing on the heap, nothing done */
	start_get(&r, "example.com");
	CHECK_EQ_INT(request_finish(&r, true), 0);
	CHECK_EQ_INT(request_heap(&r), 0);
	request_compact(&r, 256, 4096, 16384);
	CHECK_EQ_INT(r.nfields, 4);
	request_free(&r);

	/* fields past the inline room, bytes within it */
	start_get(&r, "example.com");
	fill(&r, 2 * REQUEST_INLINE_FIELDS, 1);
	CHECK(r.buf == r.inline_buf && r.fields != r.inline_fields);
	CHECK_EQ_INT(request_heap(&r), r.fieldcap * sizeof(*r.fields));
	request_compact(&r, 256, 4096, 16384);
	CHECK_EQ_INT(request_heap(&r), 0);
	CHECK_EQ_INT(r.nfields, 3);
	CHECK_EQ_STR(request_method(&r), "GET");
	p = request_authority(&r, &len);
	CHECK_EQ_INT(len, 11);
	CHECK_EQ_STR(p, "example.com");
	p = request_path(&r, &len);
	CHECK_EQ_INT(len, 1);
	CHECK_EQ_STR(request_field(&r, ":path"), "/");
	CHECK(request_field(&r, "x-fill-00") == NULL);
	request_free(&r);

	/* both on the heap; what is kept fits inline */
	start_get(&r, "example.com");
	fill(&r, 40, 1000);
	CHECK(r.buf != r.inline_buf && r.fields != r.inline_fields);
	heap = request_heap(&r);
	CHECK_EQ_INT(heap, r.bufcap + r.fieldcap * sizeof(*r.fields));
	CHECK(heap >= 40 * 1000);
	request_compact(&r, 256, 4096, 16384);
	CHECK_EQ_INT(request_heap(&r), 0);
	CHECK(r.buf == r.inline_buf);
	CHECK_EQ_STR(request_method(&r), "GET");
	CHECK_EQ_STR(request_authority(&r, &len), "example.com");
	p = request_path(&r, &len);
	CHECK_EQ_INT(len, 1);
	CHECK_EQ_STR(p, "/");
	CHECK_EQ_INT(r.scheme, -1);
	CHECK_EQ_INT(r.host, -1);
	request_free(&r);

	/* bytes inline, fields not: a long value is cut where it lies */
	path = malloc(201);
	CHECK(path != NULL);
	memset(path, 'q', 200);
	path[0] = '/';
	path[200] = '\0';
	request_init(&r, 65536);
	add(&r, ":method", "GET");
	add(&r, ":path", path);
	add(&r, ":authority", "example.com");
	add(&r, "host", "other.example");
	fill(&r, REQUEST_INLINE_FIELDS, 1);
	CHECK(r.buf == r.inline_buf && r.fields != r.inline_fields);
	request_compact(&r, 256, 4096, 100);
	CHECK_EQ_INT(request_heap(&r), 0);
	CHECK(r.buf == r.inline_buf);
	CHECK_EQ_INT(r.nfields, 3);
	p = request_path(&r, &len);
	CHECK_EQ_INT(len, 100);
	CHECK(strlen(p) == 100 && memcmp(p, path, 100) == 0);
	/* :authority is the one kept, not Host */
	CHECK_EQ_STR(request_authority(&r, &len), "example.com");
	CHECK_EQ_INT(r.host, -1);
	CHECK_EQ_INT(r.scheme, -1);
	CHECK(request_field(&r, "host") == NULL);
	request_free(&r);
	free(path);

	/* long values are cut to the lengths given; Host stands in */
	path = malloc(20001);
	host = malloc(5001);
	CHECK(path != NULL && host != NULL);
	memset(path, 'p', 20000);
	path[0] = '/';
	path[20000] = '\0';
	memset(host, 'h', 5000);
	host[5000] = '\0';
	request_init(&r, 1 << 20);
	add(&r, ":method", "GET");
	add(&r, ":scheme", "https");
	add(&r, ":path", path);
	add(&r, "host", host);
	fill(&r, 20, 1000);
	CHECK_EQ_INT(request_finish(&r, true), 0);
	request_compact(&r, 2, 4096, 16384);
	CHECK_EQ_INT(request_heap(&r),
	    (8 + 3) + (6 + 16385) + (5 + 4097));	/* names, NULs */
	CHECK_EQ_STR(request_method(&r), "GE");
	p = request_authority(&r, &len);
	CHECK_EQ_INT(len, 4096);
	CHECK(strlen(p) == 4096 && memcmp(p, host, 4096) == 0);
	p = request_path(&r, &len);
	CHECK_EQ_INT(len, 16384);
	CHECK(strlen(p) == 16384 && memcmp(p, path, 16384) == 0);
	request_free(&r);

	/* no memory for the copy: each value cut to what fits inline */
	request_init(&r, 1 << 20);
	add(&r, ":method", "GET");
	add(&r, ":path", path);
	add(&r, "host", host);
	CHECK(r.buf != r.inline_buf);
	malloc_fails = true;
	request_compact(&r, 256, 4096, 16384);
	malloc_fails = false;
	CHECK_EQ_INT(request_heap(&r), 0);
	CHECK(r.buf == r.inline_buf);
	CHECK_EQ_STR(request_method(&r), "GET");
	/* the names, with two NULs each: ":method", "host", ":path" */
	len = (REQUEST_INLINE_BUF - (9 + 6 + 7)) / 3;
	p = request_authority(&r, &heap);
	CHECK_EQ_INT(heap, len);
	CHECK(strlen(p) == len && memcmp(p, host, len) == 0);
	p = request_path(&r, &heap);
	CHECK_EQ_INT(heap, len);
	CHECK(strlen(p) == len && memcmp(p, path, len) == 0);
	request_free(&r);
	free(path);
	free(host);
}

static void
test_http1(void)
{
	const char *f[] = { ":method: POST", ":scheme: https",
	    ":authority: example.com:4433", ":path: /up?x=1",
	    "cookie: a=1", "accept: */*", "cookie: b=2",
	    "x-forwarded-for: 192.0.2.9", "via: 1.1 edge", "te: trailers",
	    "content-length: 3", NULL };
	struct request_forward fw = { "198.51.100.7", REQ_BODY_LENGTH, 3, false,
	    NULL, NULL, NULL, 0, true, NULL, NULL, NULL };
	char *s;
	int rv;

	s = written(f, false, &fw, &rv);
	CHECK_EQ_INT(rv, 0);
	CHECK_EQ_STR(s,
	    "POST /up?x=1 HTTP/1.1\r\n"
	    "host: example.com:4433\r\n"
	    "accept: */*\r\n"
	    "cookie: a=1; b=2\r\n"
	    "x-forwarded-for: 192.0.2.9, 198.51.100.7\r\n"
	    "via: 1.1 edge, 3 qproxy\r\n"
	    "forwarded: for=198.51.100.7;proto=https;host=\"example.com:4433\"\r\n"
	    "x-forwarded-proto: https\r\n"
	    "te: trailers\r\n"
	    "connection: te\r\n"
	    "content-length: 3\r\n"
	    "\r\n");
	free(s);

	/* a client not among trusted_proxies: its X-Forwarded-For and
	   Forwarded go, this hop's element alone is sent; Via stays */
	{
		const char *g[] = { BASE, "x-forwarded-for: 10.9.9.9",
		    "forwarded: for=10.9.9.9", "via: 1.1 edge", NULL };
		struct request_forward fwu = { "198.51.100.7", REQ_BODY_NONE,
		    0, false, NULL, NULL, NULL, 0, false, NULL, NULL, NULL };

		s = written(g, true, &fwu, &rv);
		CHECK_EQ_STR(s,
		    "GET / HTTP/1.1\r\n"
		    "host: example.com\r\n"
		    "x-forwarded-for: 198.51.100.7\r\n"
		    "via: 1.1 edge, 3 qproxy\r\n"
		    "forwarded: for=198.51.100.7;proto=https;"
		    "host=\"example.com\"\r\n"
		    "x-forwarded-proto: https\r\n"
		    "\r\n");
		free(s);
	}

	/* IPv6 clients are quoted in Forwarded; chunked framing */
	{
		const char *g[] = { BASE, NULL };
		struct request_forward fw6 = { "2001:db8::1",
		    REQ_BODY_CHUNKED, 0, true, NULL, NULL, NULL, 0, false, NULL, NULL, NULL };

		s = written(g, false, &fw6, &rv);
		CHECK(strstr(s, "forwarded: for=\"[2001:db8::1]\";proto=https;"
		    "host=\"example.com\"\r\n") != NULL);
		CHECK(strstr(s, "transfer-encoding: chunked\r\n\r\n") != NULL);
		CHECK(strstr(s, "early-data: 1\r\n") != NULL);
		CHECK(strstr(s, "content-length") == NULL);
		free(s);
	}

	/*
	 * Max-Forwards (RFC 9110 7.6.2): one less for OPTIONS and TRACE, the
	 * first field's, written once; for other methods, or not a number,
	 * as it came
	 */
	{
		static const struct {
			const char *method, *fields[3], *want;
		} mf[] = {
			{ "OPTIONS", { "max-forwards: 5" }, "max-forwards: 4\r\n" },
			{ "TRACE", { "max-forwards: 1" }, "max-forwards: 0\r\n" },
			{ "OPTIONS", { "max-forwards: 3", "max-forwards: 9" },
			    "max-forwards: 2\r\n" },
			{ "GET", { "max-forwards: 5" }, "max-forwards: 5\r\n" },
			{ "OPTIONS", { "max-forwards: x1" },
			    "max-forwards: x1\r\n" },
		};

		for (size_t i = 0; i < sizeof(mf) / sizeof(mf[0]); i++) {
			char m[32];
			const char *g[] = { m, ":scheme: https",
			    ":authority: example.com", ":path: /",
			    mf[i].fields[0], mf[i].fields[1], NULL };
			struct request_forward fwm = { "192.0.2.1",
			    REQ_BODY_NONE, 0, false, NULL, NULL, NULL, 0, false, NULL, NULL, NULL };
			const char *e;

			snprintf(m, sizeof(m), ":method: %s", mf[i].method);
			s = written(g, true, &fwm, &rv);
			CHECK_EQ_INT(rv, 0);
			CHECK((e = strstr(s, mf[i].want)) != NULL);
			CHECK(e == NULL || strstr(e + 1, "max-forwards") == NULL);
			free(s);
		}
	}

	/*
	 * A client's Early-Data stays (RFC 8470 5.1): once, whether or not
	 * the request came in qproxy's own 0-RTT too
	 */
	for (int early = 0; early < 2; early++) {
		const char *g[] = { BASE, "early-data: 1", NULL };
		struct request_forward fwe = { "192.0.2.1", REQ_BODY_NONE, 0,
		    early == 1, NULL, NULL, NULL, 0, false, NULL, NULL, NULL };
		const char *e;

		s = written(g, true, &fwe, &rv);
		CHECK((e = strstr(s, "early-data: 1\r\n")) != NULL);
		CHECK(e == NULL || strstr(e + 1, "early-data") == NULL);
		free(s);
	}

	/*
	 * set_request_header: the client's fields of those names go, the
	 * route's come after the client's other fields; an empty value only
	 * removes
	 */
	{
		const char *g[] = { BASE, "x-user: mallory", "accept: */*",
		    "x-user: eve", "x-debug: 1", NULL };
		struct config_header h[] = {
			{ "x-user", "alice", 6, 5 },
			{ "x-debug", "", 7, 0 },
			{ "x-env", "prod", 5, 4 },
		};
		struct config_headers set = { h, 3 };
		struct request_forward fws = { "192.0.2.1", REQ_BODY_NONE, 0,
		    false, &set, NULL, NULL, 0, false, NULL, NULL, NULL };

		s = written(g, true, &fws, &rv);
		CHECK_EQ_STR(s,
		    "GET / HTTP/1.1\r\n"
		    "host: example.com\r\n"
		    "accept: */*\r\n"
		    "x-user: alice\r\n"
		    "x-env: prod\r\n"
		    "x-forwarded-for: 192.0.2.1\r\n"
		    "via: 3 qproxy\r\n"
		    "forwarded: for=192.0.2.1;proto=https;host=\"example.com\"\r\n"
		    "x-forwarded-proto: https\r\n"
		    "\r\n");
		free(s);
		CHECK(header_is_set(&set, "x-env", 5));
		CHECK(!header_is_set(&set, "x-en", 4));
		CHECK(!header_is_set(&set, "x-envy", 6));

		/*
		 * request_id_header: the client's fields of its name go, in
		 * any case, and the request's ID comes after the route's
		 */
		const char *gi[] = { BASE, "x-request-id: forged",
		    "x-request-idx: kept", "x-request-id: again", NULL };
		fws.id_name = "x-request-id";
		fws.id = "0123456789abcdef0123456789abcdef";
		s = written(gi, true, &fws, &rv);
		CHECK_EQ_STR(s,
		    "GET / HTTP/1.1\r\n"
		    "host: example.com\r\n"
		    "x-request-idx: kept\r\n"
		    "x-user: alice\r\n"
		    "x-env: prod\r\n"
		    "x-request-id: 0123456789abcdef0123456789abcdef\r\n"
		    "x-forwarded-for: 192.0.2.1\r\n"
		    "via: 3 qproxy\r\n"
		    "forwarded: for=192.0.2.1;proto=https;host=\"example.com\"\r\n"
		    "x-forwarded-proto: https\r\n"
		    "\r\n");
		free(s);
	}

	/*
	 * strip_prefix: the route's path_prefix cut off, what is left sent
	 * after a '/' if it has none
	 */
	{
		static const struct {
			const char	*path;
			size_t		 skip;
			const char	*line;
		} cut[] = {
			{ ":path: /api/users?x=1", 5, "GET /users?x=1 HTTP/1.1" },
			{ ":path: /api/", 5, "GET / HTTP/1.1" },
			{ ":path: /api?x=1", 4, "GET /?x=1 HTTP/1.1" },
			{ ":path: /apiary", 4, "GET /ary HTTP/1.1" },
			{ ":path: /api/v1", 4, "GET /v1 HTTP/1.1" },
			{ ":path: /", 0, "GET / HTTP/1.1" },
			/* nothing to strip: as it came */
			{ ":path: *", 0, "GET * HTTP/1.1" },
		};

		for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
			const char *g[] = { ":method: GET", ":scheme: https",
			    ":authority: example.com", cut[i].path, NULL };
			struct request_forward fwc = { "192.0.2.1",
			    REQ_BODY_NONE, 0, false, NULL, NULL, NULL,
			    cut[i].skip, false, NULL, NULL, NULL };

			s = written(g, true, &fwc, &rv);
			CHECK(strncmp(s, cut[i].line, strlen(cut[i].line)) ==
			    0 && strncmp(s + strlen(cut[i].line), "\r\n", 2) ==
			    0);
			free(s);
		}
	}
}

/* request_trailer on a "name: value" string (the first ": " splits). */
static enum request_trailer
trailer(const char *field, const char **why)
{
	const char *sep = strstr(field + 1, ": ");

	return request_trailer((const uint8_t *)field,
	    (size_t)(sep - field), (const uint8_t *)sep + 2, strlen(sep + 2),
	    why);
}

/*
 * client_cert_header: the client's fields of its name go, "_" taken for
 * "-" (HTTP_X_CLIENT_CERT to a CGI backend); the verified value alone is
 * sent.
 */
static void
test_client_cert(void)
{
	const char *g[] = { BASE, "x-client-cert: forged", "x_client_cert: 1",
	    "x-client_cert: 2", "x-client-certs: 5", "x-clientcert: 6", NULL };
	struct request_forward fw = { "192.0.2.1", REQ_BODY_NONE, 0, false,
	    NULL, NULL, NULL, 0, false, NULL, "x-client-cert",
	    "Hash=00;Subject=\"/CN=a\"" };
	char *s;
	int rv;

	s = written(g, true, &fw, &rv);
	CHECK_EQ_INT(rv, 0);
	CHECK_EQ_STR(s,
	    "GET / HTTP/1.1\r\n"
	    "host: example.com\r\n"
	    "x-client-certs: 5\r\n"
	    "x-clientcert: 6\r\n"
	    "x-client-cert: Hash=00;Subject=\"/CN=a\"\r\n"
	    "x-forwarded-for: 192.0.2.1\r\n"
	    "via: 3 qproxy\r\n"
	    "forwarded: for=192.0.2.1;proto=https;host=\"example.com\"\r\n"
	    "x-forwarded-proto: https\r\n"
	    "\r\n");
	free(s);
	CHECK(request_name_is("x-peer", "x_peer", 6));
	CHECK(!request_name_is("x-peer", "x-pee", 5));
	CHECK(!request_name_is("x-peer", "x-peer_", 7));
	CHECK(request_name_is("x_peer", "x-peer", 6));
	CHECK(!request_name_is("x_peer", "x.peer", 6));
	CHECK(!request_name_is(NULL, "x-peer", 6));
}

/* A trailer section's fields: passed on, dropped, or malformed. */
static void
test_trailers(void)
{
	/* a response's fields too: nothing before a request's content */
	static const char *const pass[] = { "x-checksum: abc",
	    "server-timing: db;dur=53", "content-digest: sha-256=:x=:",
	    "x-empty: ", "x-obs-text: \x80\xff", "x-tab: a\tb",
	    "set-cookie: a=1", "www-authenticate: Basic",
	    "proxy-authenticate: Basic", "location: /x", "vary: *",
	    "age: 5", "expires: 0", "retry-after: 5", NULL };
	/* framing, routing, modifiers, authentication, content control,
	   and what qproxy writes itself */
	static const char *const drop[] = { "content-length: 5",
	    "host: example.com", "te: trailers", "expect: 100-continue",
	    "max-forwards: 3", "authorization: Basic eDp5",
	    "proxy-authorization: Basic eDp5", "cookie: a=1",
	    "cache-control: no-cache", "pragma: no-cache", "range: bytes=0-1",
	    "if-match: \"x\"", "if-none-match: *",
	    "if-modified-since: Sun, 06 Nov 1994 08:49:37 GMT",
	    "if-unmodified-since: Sun, 06 Nov 1994 08:49:37 GMT",
	    "if-range: \"x\"", "content-type: text/plain",
	    "content-encoding: gzip", "content-range: bytes 0-1/2",
	    "trailer: x-checksum", "x-forwarded-for: 192.0.2.1",
	    "x-forwarded-proto: http", "forwarded: for=192.0.2.1",
	    "via: 1.1 edge", "early-data: 1", "http2-settings: AAA", NULL };
	static const char *const bad[] = { ":path: /other", ":method: GET",
	    ":authority: example.com", ":status: 200", "X-Upper: 1",
	    "x bad: 1", "x-cr: a\rb", "x-lf: a\nb",
	    "x-ctl: \x01", "x-del: \x7f", "connection: close",
	    "keep-alive: 5", "proxy-connection: close", "upgrade: h2c",
	    "transfer-encoding: chunked", "te: gzip", NULL };
	const char *why;

	for (size_t i = 0; pass[i] != NULL; i++) {
		why = "unset";
		CHECK_EQ_INT(trailer(pass[i], &why), REQ_TRAILER_PASS);
		CHECK(why == NULL);
	}
	for (size_t i = 0; drop[i] != NULL; i++)
		if (trailer(drop[i], &why) != REQ_TRAILER_DROP) {
			fprintf(stderr, "trailer %s not dropped\n", drop[i]);
			CHECK(0);
		}
	for (size_t i = 0; bad[i] != NULL; i++) {
		why = NULL;
		if (trailer(bad[i], &why) != REQ_TRAILER_MALFORMED) {
			fprintf(stderr, "trailer %s not malformed\n", bad[i]);
			CHECK(0);
		}
		CHECK(why != NULL);
	}
	why = NULL;
	CHECK_EQ_INT(trailer(":path: /x", &why), REQ_TRAILER_MALFORMED);
	CHECK_EQ_STR(why, "pseudo-header in trailers");
	CHECK_EQ_INT(request_trailer((const uint8_t *)"", 0,
	    (const uint8_t *)"v", 1, &why), REQ_TRAILER_MALFORMED);
	CHECK_EQ_INT(request_trailer((const uint8_t *)"x-nul", 5,
	    (const uint8_t *)"a\0b", 3, &why), REQ_TRAILER_MALFORMED);
}

/*
 * RFC 9220 3 (RFC 8441 4): an extended CONNECT of :protocol websocket is
 * a WebSocket, a GET for routes and the backend; the backend's head has
 * the Upgrade and qproxy's key, never the client's.
 */
static void
test_websocket(void)
{
#define WS ":method: CONNECT", ":protocol: websocket", ":scheme: https", \
	":authority: example.com", ":path: /chat?room=1"
	const char *ok[] = { WS, "sec-websocket-version: 13",
	    "sec-websocket-key: Y2xpZW50J3Mgb3duIGtleQ==",
	    "sec-websocket-protocol: chat", NULL };
	const char *upper[] = { ":method: CONNECT", ":protocol: WebSocket",
	    ":scheme: https", ":authority: a", ":path: /", NULL };
	const char *on_get[] = { BASE, ":protocol: websocket", NULL };
	const char *other[] = { ":method: CONNECT", ":protocol: connect-udp",
	    ":scheme: https", ":authority: a", ":path: /", NULL };
	const char *no_path[] = { ":method: CONNECT", ":protocol: websocket",
	    ":scheme: https", ":authority: a", NULL };
	const char *no_scheme[] = { ":method: CONNECT", ":protocol: websocket",
	    ":authority: a", ":path: /", NULL };
	const char *no_authority[] = { ":method: CONNECT",
	    ":protocol: websocket", ":scheme: https", "host: a", ":path: /",
	    NULL };
	const char *empty[] = { ":method: CONNECT", ":protocol: ",
	    ":scheme: https", ":authority: a", ":path: /", NULL };
	const char *twice[] = { WS, ":protocol: websocket", NULL };
	const char *length[] = { WS, "content-length: 0", NULL };
	const char *override[] = { WS, "x-http-method-override: POST", NULL };
	struct request_forward fw = { "192.0.2.1", REQ_BODY_NONE, 0, false,
	    NULL, NULL, NULL, 0, false, "a2V5IG9mIHFwcm94eSBvd24=", NULL, NULL };
	struct request *r;
	char *s;
	int rv;

	r = build(ok, false, &rv);
	CHECK_EQ_INT(rv, 0);
	CHECK((r->flags & (REQ_F_WEBSOCKET | REQ_F_IDEMPOTENT)) ==
	    (REQ_F_WEBSOCKET | REQ_F_IDEMPOTENT));
	CHECK_EQ_STR(request_method(r), "GET");
	CHECK(request_methods_in(r, " GET HEAD "));
	CHECK(!request_methods_in(r, " CONNECT "));
	CHECK_EQ_INT(verdict(upper, false), REQ_OK);
	CHECK_EQ_INT(verdict(on_get, true), REQ_MALFORMED);
	CHECK_EQ_INT(verdict(other, false), REQ_NOT_IMPLEMENTED);
	CHECK_EQ_INT(verdict(no_path, false), REQ_MALFORMED);
	CHECK_EQ_INT(verdict(no_scheme, false), REQ_MALFORMED);
	CHECK_EQ_INT(verdict(no_authority, false), REQ_MALFORMED);
	CHECK_EQ_INT(verdict(empty, false), REQ_MALFORMED);
	CHECK_EQ_INT(verdict(twice, false), REQ_MALFORMED);
	CHECK_EQ_INT(verdict(length, false), REQ_MALFORMED);
	/* another method named: not one that may go twice */
	r = build(override, false, &rv);
	CHECK_EQ_INT(rv, 0);
	CHECK(!(r->flags & REQ_F_IDEMPOTENT));

	s = written(ok, false, &fw, &rv);
	CHECK_EQ_INT(rv, 0);
	CHECK_EQ_STR(s,
	    "GET /chat?room=1 HTTP/1.1\r\n"
	    "host: example.com\r\n"
	    "sec-websocket-version: 13\r\n"
	    "sec-websocket-protocol: chat\r\n"
	    "x-forwarded-for: 192.0.2.1\r\n"
	    "via: 3 qproxy\r\n"
	    "forwarded: for=192.0.2.1;proto=https;host=\"example.com\"\r\n"
	    "x-forwarded-proto: https\r\n"
	    "upgrade: websocket\r\n"
	    "connection: upgrade\r\n"
	    "sec-websocket-key: a2V5IG9mIHFwcm94eSBvd24=\r\n"
	    "\r\n");
	free(s);

	/* RFC 6455 1.3's example; a key of 16 random bytes, new each time */
	{
		static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
		static const char accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
		char k1[WS_KEY_LEN + 1], k2[WS_KEY_LEN + 1], bad[29];

		CHECK(ws_accept_ok(key, accept, strlen(accept)));
		memcpy(bad, accept, sizeof(bad));
		bad[5] ^= 1;
		CHECK(!ws_accept_ok(key, bad, strlen(bad)));
		CHECK(!ws_accept_ok(key, accept, strlen(accept) - 1));
		CHECK(!ws_accept_ok("dGhlIHNhbXBsZSBub25jZR==", accept,
		    strlen(accept)));
		ws_key_new(k1);
		ws_key_new(k2);
		CHECK_EQ_INT((int)strlen(k1), WS_KEY_LEN);
		CHECK(strcmp(k1, k2) != 0);
		CHECK(strcmp(k1 + 22, "==") == 0);
		CHECK(strspn(k1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"
		    "rstuvwxyz0123456789+/") == 22);
	}
#undef WS
}

int
main(void)
{
	int rv;
	const char *end[] = { NULL };

	test_valid();
	test_method_flags();
	test_malformed();
	test_nul_in_value();
	test_body_length();
	test_other_errors();
	test_http1();
	test_large_request();
	test_authority_bytes();
	test_long_authority();
	test_compact();
	test_path_normalized();
	test_trailers();
	test_client_cert();
	test_websocket();
	request_free(build(end, true, &rv));	/* the static one */
	UNIT_DONE();
}
