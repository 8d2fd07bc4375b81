/*
 * request.c: HTTP/3 request heads, checked and turned into HTTP/1.1.
 *
 * nghttp3 already enforces much of RFC 9114 on what it hands us; these
 * checks are the proxy's own contract, kept independent of the library so
 * that nothing malformed can reach a backend whatever nghttp3 lets through.
 */
#include <ctype.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "request.h"

/* RFC 9110 tchar, lowercase only (RFC 9114 4.2 forbids uppercase). */
static int
is_name_char(unsigned char c)
{
	if (c >= 'a' && c <= 'z')
		return 1;
	if (c >= '0' && c <= '9')
		return 1;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int
fail(struct request *r, enum request_error e, const char *why)
{
	if (r->error == REQ_OK) {
		r->error = e;
		r->why = why;
	}
	return -1;
}

void
request_init(struct request *r, size_t max_size)
{
	memset(r, 0, offsetof(struct request, inline_buf));
	r->buf = r->inline_buf;
	r->bufcap = sizeof(r->inline_buf);
	r->fields = r->inline_fields;
	r->fieldcap = REQUEST_INLINE_FIELDS;
	r->max_size = max_size;
	r->method = r->scheme = r->authority = r->path = r->host = -1;
	r->content_length = -1;
}

void
request_free(struct request *r)
{
	if (r->buf != r->inline_buf)
		free(r->buf);
	if (r->fields != r->inline_fields)
		free(r->fields);
	r->buf = r->inline_buf;
	r->bufcap = sizeof(r->inline_buf);
	r->fields = r->inline_fields;
	r->fieldcap = REQUEST_INLINE_FIELDS;
}

static const char *
fname(const struct request *r, int i)
{
	return r->buf + r->fields[i].name;
}

static const char *
fvalue(const struct request *r, int i)
{
	return r->buf + r->fields[i].value;
}

/* What request_write_http1 does with a field, decided once per field. */
enum field_kind {
	FK_PLAIN,	/* copied as it is */
	FK_SKIP,	/* pseudo-headers and what qproxy writes or never sends */
	FK_COOKIE,	/* joined, then the rest after qproxy's own values */
	FK_XFF,
	FK_VIA,
	FK_FORWARDED,
};

static uint32_t
field_kind(const uint8_t *name, size_t len)
{
	static const struct {
		const char	*name;
		size_t		 len;
		uint32_t	 kind;
	} kinds[] = {
#define K(s, k)	{ s, sizeof(s) - 1, k }
		K("host", FK_SKIP), K("content-length", FK_SKIP),
		K("te", FK_SKIP), K("expect", FK_SKIP),
		K("x-forwarded-proto", FK_SKIP), K("http2-settings", FK_SKIP),
		K("early-data", FK_SKIP), K("cookie", FK_COOKIE),
		K("x-forwarded-for", FK_XFF), K("via", FK_VIA),
		K("forwarded", FK_FORWARDED),
#undef K
	};

	if (name[0] == ':')
		return FK_SKIP;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].len == len && memcmp(kinds[i].name, name, len) == 0)
			return kinds[i].kind;
	return FK_PLAIN;
}

static int
store(struct request *r, const uint8_t *p, size_t len, uint32_t *off)
{
	size_t need = r->buflen + len + 1, cap;
	char *nb;

	if (need > r->bufcap) {
		cap = r->bufcap * 2;
		while (cap < need)
			cap *= 2;
		if (r->buf == r->inline_buf) {
			if ((nb = malloc(cap)) == NULL)
				return -1;
			memcpy(nb, r->buf, r->buflen);
		} else if ((nb = realloc(r->buf, cap)) == NULL)
			return -1;
		r->buf = nb;
		r->bufcap = cap;
	}
	memcpy(r->buf + r->buflen, p, len);
	r->buf[r->buflen + len] = '\0';
	*off = (uint32_t)r->buflen;
	r->buflen = need;
	return 0;
}

static int
parse_length(const uint8_t *v, size_t len, int64_t *out)
{
	uint64_t n = 0;

	if (len == 0 || len > 18)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	*out = (int64_t)n;
	return 0;
}

static int
name_is(const uint8_t *name, size_t len, const char *s)
{
	return strlen(s) == len && memcmp(name, s, len) == 0;
}

/*
 * An authority (RFC 3986 3.2) as :authority or Host may carry it: no
 * controls, spaces or characters outside its grammar. What passes is safe
 * inside the quoted-string of the Forwarded field sent to backends.
 */
static bool
authority_ok(const uint8_t *value, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (value[i] <= ' ' || value[i] >= 0x7f)
			return false;
		switch (value[i]) {
		case '"': case '\\': case '/': case '?': case '#': case '<':
		case '>': case '{': case '}': case '|': case '^': case '`':
			return false;
		}
	}
	return true;
}

static int
pseudo_set(struct request *r, int *slot, int idx)
{
	if (*slot != -1)
		return fail(r, REQ_MALFORMED, "repeated pseudo-header");
	*slot = idx;
	return 0;
}

int
request_add(struct request *r, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen)
{
	struct request_field f;
	int idx;

	if (r->error != REQ_OK)
		return -1;
	/* RFC 9114 4.2.2: the size counts 32 bytes of overhead per field. */
	if (r->buflen + namelen + valuelen + 32 * (r->nfields + 1) >
	    r->max_size)
		return fail(r, REQ_TOO_LARGE, "header section too large");
	if (namelen == 0)
		return fail(r, REQ_MALFORMED, "empty field name");
	for (size_t i = name[0] == ':' ? 1 : 0; i < namelen; i++) {
		if (!is_name_char(name[i]))
			return fail(r, REQ_MALFORMED,
			    isupper(name[i]) ? "uppercase field name" :
			    "invalid character in field name");
	}
	for (size_t i = 0; i < valuelen; i++) {
		if (value[i] == '\0' || value[i] == '\r' || value[i] == '\n')
			return fail(r, REQ_MALFORMED,
			    "CR, LF or NUL in field value");
	}

	if (r->nfields == r->fieldcap) {
		size_t cap = r->fieldcap * 2;
		struct request_field *nf;

		if (r->fields == r->inline_fields) {
			if ((nf = reallocarray(NULL, cap, sizeof(*nf))) == NULL)
				return fail(r, REQ_TOO_LARGE, "out of memory");
			memcpy(nf, r->fields, r->nfields * sizeof(*nf));
		} else if ((nf = reallocarray(r->fields, cap,
		    sizeof(*nf))) == NULL)
			return fail(r, REQ_TOO_LARGE, "out of memory");
		r->fields = nf;
		r->fieldcap = cap;
	}
	f.namelen = (uint32_t)namelen;
	f.valuelen = (uint32_t)valuelen;
	f.kind = field_kind(name, namelen);
	if (store(r, name, namelen, &f.name) == -1 ||
	    store(r, value, valuelen, &f.value) == -1)
		return fail(r, REQ_TOO_LARGE, "out of memory");
	idx = (int)r->nfields;
	r->fields[r->nfields++] = f;

	if (name[0] == ':') {
		if (r->flags & REQ_F_REGULAR_SEEN)
			return fail(r, REQ_MALFORMED,
			    "pseudo-header after a regular field");
		if (name_is(name, namelen, ":method")) {
			if (valuelen == 0)
				return fail(r, REQ_MALFORMED, "empty :method");
			for (size_t i = 0; i < valuelen; i++)
				if (!is_name_char(tolower(value[i])))
					return fail(r, REQ_MALFORMED,
					    "invalid :method");
			if (name_is(value, valuelen, "GET"))
				r->flags |= REQ_F_IDEMPOTENT;
			else if (name_is(value, valuelen, "HEAD"))
				r->flags |= REQ_F_HEAD | REQ_F_IDEMPOTENT;
			else if (name_is(value, valuelen, "CONNECT"))
				r->flags |= REQ_F_CONNECT;
			else if (name_is(value, valuelen, "POST") ||
			    name_is(value, valuelen, "PATCH"))
				r->flags |= REQ_F_BODY_METHOD;
			else if (name_is(value, valuelen, "PUT"))
				r->flags |= REQ_F_BODY_METHOD |
				    REQ_F_IDEMPOTENT;
			else if (name_is(value, valuelen, "OPTIONS") ||
			    name_is(value, valuelen, "DELETE") ||
			    name_is(value, valuelen, "TRACE"))
				r->flags |= REQ_F_IDEMPOTENT;
			return pseudo_set(r, &r->method, idx);
		}
		if (name_is(name, namelen, ":scheme"))
			return pseudo_set(r, &r->scheme, idx);
		if (name_is(name, namelen, ":path")) {
			if (valuelen == 0)
				return fail(r, REQ_MALFORMED, "empty :path");
			for (size_t i = 0; i < valuelen; i++)
				if (value[i] <= ' ' || value[i] == 0x7f)
					return fail(r, REQ_MALFORMED,
					    "invalid character in :path");
			return pseudo_set(r, &r->path, idx);
		}
		if (name_is(name, namelen, ":authority")) {
			if (memchr(value, '@', valuelen) != NULL)
				return fail(r, REQ_MALFORMED,
				    "userinfo in :authority");
			if (!authority_ok(value, valuelen))
				return fail(r, REQ_MALFORMED,
				    "invalid :authority");
			return pseudo_set(r, &r->authority, idx);
		}
		return fail(r, REQ_MALFORMED, "unknown pseudo-header");
	}

	r->flags |= REQ_F_REGULAR_SEEN;
	switch (namelen) {
	case 2:
		if (name_is(name, namelen, "te") &&
		    !(valuelen == 8 && strncasecmp((const char *)value,
		    "trailers", 8) == 0))
			return fail(r, REQ_MALFORMED, "te other than trailers");
		break;
	case 4:
		if (name_is(name, namelen, "host")) {
			if (r->host != -1)
				return fail(r, REQ_MALFORMED, "repeated host");
			if (memchr(value, '@', valuelen) != NULL)
				return fail(r, REQ_MALFORMED,
				    "userinfo in host");
			if (!authority_ok(value, valuelen))
				return fail(r, REQ_MALFORMED, "invalid host");
			r->host = idx;
		}
		break;
	case 6:
		if (name_is(name, namelen, "expect") && valuelen == 12 &&
		    strncasecmp((const char *)value, "100-continue", 12) == 0)
			r->flags |= REQ_F_EXPECT_CONTINUE;
		break;
	case 7:
		if (name_is(name, namelen, "upgrade"))
			return fail(r, REQ_MALFORMED, "upgrade field");
		break;
	case 10:
		if (name_is(name, namelen, "connection") ||
		    name_is(name, namelen, "keep-alive"))
			return fail(r, REQ_MALFORMED,
			    "connection-specific field");
		break;
	case 14:
		if (name_is(name, namelen, "content-length")) {
			if (r->content_length != -1)
				return fail(r, REQ_MALFORMED,
				    "repeated content-length");
			if (parse_length(value, valuelen,
			    &r->content_length) == -1)
				return fail(r, REQ_MALFORMED,
				    "invalid content-length");
		}
		break;
	case 16:
		if (name_is(name, namelen, "proxy-connection"))
			return fail(r, REQ_MALFORMED,
			    "connection-specific field");
		break;
	case 17:
		if (name_is(name, namelen, "transfer-encoding"))
			return fail(r, REQ_MALFORMED,
			    "transfer-encoding field");
		break;
	}
	return 0;
}

int
request_finish(struct request *r, bool fin)
{
	if (r->error != REQ_OK)
		return -1;
	if (r->method == -1)
		return fail(r, REQ_MALFORMED, "no :method");
	if (r->flags & REQ_F_CONNECT) {
		if (r->scheme != -1 || r->path != -1 || r->authority == -1)
			return fail(r, REQ_MALFORMED, "malformed CONNECT");
		return fail(r, REQ_NOT_IMPLEMENTED, "CONNECT");
	}
	if (r->scheme == -1)
		return fail(r, REQ_MALFORMED, "no :scheme");
	if (r->path == -1)
		return fail(r, REQ_MALFORMED, "no :path");
	if (fvalue(r, r->path)[0] != '/' &&
	    !(strcmp(fvalue(r, r->path), "*") == 0 &&
	    strcmp(fvalue(r, r->method), "OPTIONS") == 0))
		return fail(r, REQ_MALFORMED, "invalid :path");
	if (r->authority == -1 && r->host == -1)
		return fail(r, REQ_MALFORMED, "no :authority or host");
	if (r->authority != -1 && r->host != -1 &&
	    strcasecmp(fvalue(r, r->authority), fvalue(r, r->host)) != 0)
		return fail(r, REQ_MALFORMED, "host differs from :authority");
	if (fin && r->content_length > 0)
		return fail(r, REQ_MALFORMED,
		    "content-length without a body");
	if (strcasecmp(fvalue(r, r->scheme), "https") != 0 &&
	    strcasecmp(fvalue(r, r->scheme), "http") != 0)
		return fail(r, REQ_BAD, "unsupported :scheme");
	return 0;
}

int
request_check_body(struct request *r, uint64_t received, bool fin)
{
	if (r->content_length < 0)
		return 0;
	if (received > (uint64_t)r->content_length)
		return fail(r, REQ_MALFORMED, "body longer than content-length");
	if (fin && received != (uint64_t)r->content_length)
		return fail(r, REQ_MALFORMED,
		    "body shorter than content-length");
	return 0;
}

const char *
request_authority(const struct request *r, size_t *len)
{
	int i = r->authority != -1 ? r->authority : r->host;

	if (i == -1) {
		*len = 0;
		return "";
	}
	*len = r->fields[i].valuelen;
	return fvalue(r, i);
}

const char *
request_path(const struct request *r, size_t *len)
{
	if (r->path == -1) {
		*len = 0;
		return "";
	}
	*len = r->fields[r->path].valuelen;
	return fvalue(r, r->path);
}

const char *
request_method(const struct request *r)
{
	return r->method == -1 ? "" : fvalue(r, r->method);
}

const char *
request_field(const struct request *r, const char *name)
{
	for (size_t i = 0; i < r->nfields; i++)
		if (strcmp(fname(r, (int)i), name) == 0)
			return fvalue(r, (int)i);
	return NULL;
}

/* Writes "name: v1SEPv2..." for every field of this kind, plus extra. */
static int
put_joined(struct bufq *out, const struct request *r, uint32_t kind,
    const char *hname, const char *sep, const char *extra)
{
	int any = 0;

	for (size_t i = 0; i < r->nfields; i++) {
		if (r->fields[i].kind != kind)
			continue;
		if (bufq_append(out, any ? sep : hname,
		    strlen(any ? sep : hname)) == -1 ||
		    bufq_append(out, fvalue(r, (int)i),
		    r->fields[i].valuelen) == -1)
			return -1;
		any = 1;
	}
	if (extra != NULL) {
		if (bufq_append(out, any ? sep : hname,
		    strlen(any ? sep : hname)) == -1 ||
		    bufq_append(out, extra, strlen(extra)) == -1)
			return -1;
		any = 1;
	}
	if (any && bufq_append(out, "\r\n", 2) == -1)
		return -1;
	return 0;
}

/*
 * This hop's Forwarded element, into buf when it fits, else into memory
 * of its own; NULL when there is none. RFC 7239: an IPv6 address is
 * bracketed and quoted. Built by hand: printf cost more than the rest of
 * the request head.
 */
static char *
forwarded_element(char *buf, size_t size, const char *addr,
    const char *authority, size_t alen)
{
	static const char mid[] = ";proto=https;host=\"";
	size_t addrlen = strlen(addr), need;
	bool v6 = strchr(addr, ':') != NULL;
	char *out, *p;

	need = 4 + (v6 ? 4 : 0) + addrlen + sizeof(mid) - 1 + alen + 2;
	if ((out = need <= size ? buf : malloc(need)) == NULL)
		return NULL;
	p = out;
	memcpy(p, "for=", 4);
	p += 4;
	if (v6) {
		memcpy(p, "\"[", 2);
		p += 2;
	}
	memcpy(p, addr, addrlen);
	p += addrlen;
	if (v6) {
		memcpy(p, "]\"", 2);
		p += 2;
	}
	memcpy(p, mid, sizeof(mid) - 1);
	p += sizeof(mid) - 1;
	memcpy(p, authority, alen);
	p += alen;
	*p++ = '"';
	*p = '\0';
	return out;
}

int
request_write_http1(const struct request *r, const struct request_forward *fw,
    struct bufq *out)
{
	char tmp[512], fwdbuf[512];
	const char *authority;
	char *fwd;
	size_t alen;
	int n;

	authority = request_authority(r, &alen);
	if (bufq_append(out, request_method(r), strlen(request_method(r)))
	    == -1 ||
	    bufq_append(out, " ", 1) == -1 ||
	    bufq_append(out, fvalue(r, r->path), r->fields[r->path].valuelen)
	    == -1 ||
	    bufq_append(out, " HTTP/1.1\r\nhost: ", 17) == -1 ||
	    bufq_append(out, authority, alen) == -1 ||
	    bufq_append(out, "\r\n", 2) == -1)
		return -1;

	for (size_t i = 0; i < r->nfields; i++) {
		if (r->fields[i].kind != FK_PLAIN)
			continue;
		if (bufq_append(out, fname(r, (int)i),
		    r->fields[i].namelen) == -1 ||
		    bufq_append(out, ": ", 2) == -1 ||
		    bufq_append(out, fvalue(r, (int)i),
		    r->fields[i].valuelen) == -1 ||
		    bufq_append(out, "\r\n", 2) == -1)
			return -1;
	}

	/* RFC 9114 4.2.1: cookie fields are joined with "; " for HTTP/1.1. */
	if (put_joined(out, r, FK_COOKIE, "cookie: ", "; ", NULL) == -1 ||
	    put_joined(out, r, FK_XFF, "x-forwarded-for: ", ", ",
	    fw->client_addr) == -1 ||
	    put_joined(out, r, FK_VIA, "via: ", ", ", "3 qproxy") == -1)
		return -1;
	if ((fwd = forwarded_element(fwdbuf, sizeof(fwdbuf), fw->client_addr,
	    authority, alen)) == NULL)
		return -1;
	n = put_joined(out, r, FK_FORWARDED, "forwarded: ", ", ", fwd);
	if (fwd != fwdbuf)
		free(fwd);
	if (n == -1 ||
	    bufq_append(out, "x-forwarded-proto: https\r\n", 26) == -1)
		return -1;
	if (fw->early_data && bufq_append(out, "early-data: 1\r\n", 15) == -1)
		return -1;

	switch (fw->framing) {
	case REQ_BODY_NONE:
		n = 0;
		break;
	case REQ_BODY_LENGTH:
		n = snprintf(tmp, sizeof(tmp), "content-length: %llu\r\n",
		    (unsigned long long)fw->body_length);
		break;
	case REQ_BODY_CHUNKED:
		n = snprintf(tmp, sizeof(tmp),
		    "transfer-encoding: chunked\r\n");
		break;
	}
	if (bufq_append(out, tmp, (size_t)n) == -1 ||
	    bufq_append(out, "\r\n", 2) == -1)
		return -1;
	return 0;
}
