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

#include "bytes.h"
#include "config.h"
#include "request.h"
#include "route.h"

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
	r->max_forwards = -1;
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

static size_t
min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

size_t
request_heap(const struct request *r)
{
	size_t n = 0;

	if (r->buf != r->inline_buf)
		n += r->bufcap;
	if (r->fields != r->inline_fields)
		n += r->fieldcap * sizeof(*r->fields);
	return n;
}

void
request_compact(struct request *r, size_t method_max, size_t authority_max,
    size_t path_max)
{
	struct {
		int	*idx;
		size_t	 max;
	} keep[] = {
		{ &r->method, method_max },
		{ r->authority != -1 ? &r->authority : &r->host, authority_max },
		{ &r->path, path_max },
	};
	const size_t nkeep = sizeof(keep) / sizeof(keep[0]);
	struct request_field kept[sizeof(keep) / sizeof(keep[0])], *f;
	size_t n = 0, need = 0, names = 0, len;
	char *nb;

	if (request_heap(r) == 0)
		return;
	for (size_t k = 0; k < nkeep; k++)
		if (*keep[k].idx != -1) {
			f = &r->fields[*keep[k].idx];
			names += f->namelen + 2;	/* and two NULs */
			need += min_size(f->valuelen, keep[k].max);
		}
	need += names;
	/* a head that had its buffer inline keeps it: it is no larger */
	if (r->buf == r->inline_buf)
		nb = r->buf;
	else if (need <= sizeof(r->inline_buf))
		nb = r->inline_buf;
	else if ((nb = malloc(need)) == NULL) {
		/* out of memory: what fits inline, each value cut alike */
		for (size_t k = 0; k < nkeep; k++)
			keep[k].max = min_size(keep[k].max,
			    (sizeof(r->inline_buf) - names) / nkeep);
		nb = r->inline_buf;
	}
	len = 0;
	for (size_t k = 0; k < nkeep; k++) {
		if (*keep[k].idx == -1)
			continue;
		kept[n] = r->fields[*keep[k].idx];
		kept[n].valuelen = (uint32_t)min_size(kept[n].valuelen, keep[k].max);
		if (nb != r->buf) {
			memcpy(nb + len, r->buf + kept[n].name, kept[n].namelen + 1);
			kept[n].name = (uint32_t)len;
			len += kept[n].namelen + 1;
			memcpy(nb + len, r->buf + kept[n].value, kept[n].valuelen);
			nb[len + kept[n].valuelen] = '\0';
			kept[n].value = (uint32_t)len;
			len += kept[n].valuelen + 1;
		} else
			r->buf[kept[n].value + kept[n].valuelen] = '\0';
		*keep[k].idx = (int)n++;
	}
	if (nb != r->buf) {
		free(r->buf);
		r->buf = nb;
		r->bufcap = nb == r->inline_buf ? sizeof(r->inline_buf) : need;
		r->buflen = len;
	}
	if (r->fields != r->inline_fields) {
		free(r->fields);
		r->fields = r->inline_fields;
		r->fieldcap = REQUEST_INLINE_FIELDS;
	}
	memcpy(r->fields, kept, n * sizeof(kept[0]));
	r->nfields = n;
	r->scheme = -1;
	if (r->authority == -1)
		r->authority = r->host;		/* the one kept, or none */
	r->host = -1;
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
	FK_EARLY,	/* kept (RFC 8470 5.1), once with qproxy's own */
	FK_MAX_FORWARDS,	/* less one, for OPTIONS and TRACE */
	FK_TE,		/* "trailers" alone (field_connection), said again */
	FK_PROXY,	/* what a proxy says of the client: trusted_proxies' */
	FK_METHOD,	/* a method in place of the request's: copied as it is */
};

static bool	has_kind(const struct request *, uint32_t);

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
		K("te", FK_TE), K("expect", FK_SKIP),
		K("x-forwarded-proto", FK_SKIP), K("http2-settings", FK_SKIP),
		/* a WebSocket's key is qproxy's own (request_write_http1) */
		K("sec-websocket-key", FK_SKIP),
		K("early-data", FK_EARLY), K("cookie", FK_COOKIE),
		K("max-forwards", FK_MAX_FORWARDS),
		K("x-forwarded-for", FK_XFF), K("via", FK_VIA),
		K("forwarded", FK_FORWARDED),
		/*
		 * Who the client is and what it asked for, as a proxy in
		 * front tells it: its address (nginx's X-Real-IP, and those
		 * PHP and Rails applications look for before X-Forwarded-For),
		 * the X-Forwarded- fields applications behind proxies build
		 * their links from, and the path in place of the request's
		 * (IIS, Symfony, Laminas), which would pass a route's allow
		 * or deny by: a client's own word otherwise
		 */
		K("x-real-ip", FK_PROXY), K("client-ip", FK_PROXY),
		K("x-client-ip", FK_PROXY), K("true-client-ip", FK_PROXY),
		K("x-cluster-client-ip", FK_PROXY),
		K("x-forwarded-host", FK_PROXY),
		K("x-forwarded-port", FK_PROXY),
		K("x-forwarded-prefix", FK_PROXY),
		K("x-original-url", FK_PROXY), K("x-rewrite-url", FK_PROXY),
		/* what frameworks take for the method (request_methods_in) */
		K("x-http-method-override", FK_METHOD),
		K("x-http-method", FK_METHOD),
		K("x-method-override", FK_METHOD),
#undef K
	};

	size_t j;

	if (name[0] == ':')
		return FK_SKIP;
	/*
	 * "_" as "-": CGI, WSGI, Rack and PHP give a backend both as the
	 * same variable (HTTP_X_FORWARDED_FOR), so that x_forwarded_for
	 * would pass for qproxy's own field
	 */
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (kinds[i].len != len)
			continue;
		for (j = 0; j < len && (kinds[i].name[j] == name[j] ||
		    (kinds[i].name[j] == '-' && name[j] == '_')); j++)
			;
		if (j == len)
			return kinds[i].kind;
	}
	return FK_PLAIN;
}

bool
request_name_is(const char *want, const char *name, size_t len)
{
	size_t j;

	if (want == NULL || strlen(want) != len)
		return false;
	for (j = 0; j < len && (want[j] == name[j] ||
	    ((want[j] == '-' || want[j] == '_') &&
	    (name[j] == '-' || name[j] == '_'))); j++)
		;
	return j == len;
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
 * inside the quoted-string of the Forwarded field sent to backends. Its
 * host is not empty (RFC 9110 4.2.2: an https URI with an empty host is
 * invalid), an IP literal is whole in its brackets, and a port is digits
 * alone: ":443", "[::1" or "a:b" went to backends as the Host they route
 * by. (Userinfo is refused before, with a reason of its own.)
 */
static bool
authority_ok(const uint8_t *value, size_t len)
{
	const uint8_t *end;
	size_t hostlen, i;

	for (i = 0; i < len; i++) {
		if (value[i] <= ' ' || value[i] >= 0x7f)
			return false;
		switch (value[i]) {
		case '"': case '\\': case '/': case '?': case '#': case '<':
		case '>': case '{': case '}': case '|': case '^': case '`':
			return false;
		}
	}
	if (len > 0 && value[0] == '[') {
		if ((end = memchr(value, ']', len)) == NULL || end == value + 1)
			return false;
		hostlen = (size_t)(end - value) + 1;
		if (memchr(value + 1, '[', hostlen - 1) != NULL)
			return false;
	} else {
		end = memchr(value, ':', len);
		hostlen = end != NULL ? (size_t)(end - value) : len;
		if (hostlen == 0 || memchr(value, '[', hostlen) != NULL ||
		    memchr(value, ']', hostlen) != NULL)
			return false;
	}
	if (hostlen == len)
		return true;
	if (value[hostlen] != ':')
		return false;
	for (i = hostlen + 1; i < len; i++)
		if (value[i] < '0' || value[i] > '9')
			return false;
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

/*
 * What makes a field line malformed wherever it is (RFC 9114 4.2, 10.3):
 * its reason, or NULL. A pseudo-header's name is checked past its ':'.
 */
static const char *
field_malformed(const uint8_t *name, size_t namelen, const uint8_t *value,
    size_t valuelen)
{
	if (namelen == 0)
		return "empty field name";
	for (size_t i = name[0] == ':' ? 1 : 0; i < namelen; i++) {
		if (!bytes_islowtchar(name[i]))
			return isupper(name[i]) ? "uppercase field name" :
			    "invalid character in field name";
	}
	if (bytes_has_nul_cr_lf(value, valuelen))
		return "CR, LF or NUL in field value";
	/*
	 * RFC 9114 10.3: other control characters are malformed too.
	 * nghttp3 removes longer values holding one before they get here,
	 * but 1.8.0 lets a value of one such byte through (fixed in 1.9.0).
	 */
	if (valuelen == 1 && bytes_isctl(value[0]))
		return "control character in field value";
	return NULL;
}

/*
 * The connection-specific fields, which HTTP/3 forbids (RFC 9114 4.2),
 * and TE but for "trailers": a regular field's reason to be malformed, or
 * NULL.
 */
static const char *
field_connection(const uint8_t *name, size_t namelen, const uint8_t *value,
    size_t valuelen)
{
	switch (namelen) {
	case 2:
		if (name_is(name, namelen, "te") &&
		    !(valuelen == 8 && strncasecmp((const char *)value,
		    "trailers", 8) == 0))
			return "te other than trailers";
		break;
	case 7:
		if (name_is(name, namelen, "upgrade"))
			return "upgrade field";
		break;
	case 10:
		if (name_is(name, namelen, "connection") ||
		    name_is(name, namelen, "keep-alive"))
			return "connection-specific field";
		break;
	case 16:
		if (name_is(name, namelen, "proxy-connection"))
			return "connection-specific field";
		break;
	case 17:
		if (name_is(name, namelen, "transfer-encoding"))
			return "transfer-encoding field";
		break;
	}
	return NULL;
}

int
request_add(struct request *r, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen)
{
	struct request_field f;
	const char *why;
	int idx;

	if (r->error != REQ_OK)
		return -1;
	/* as SETTINGS_MAX_FIELD_SECTION_SIZE tells the client */
	r->size += field_line_size(namelen, valuelen);
	if (r->size > r->max_size)
		return fail(r, REQ_TOO_LARGE, "header section too large");
	if ((why = field_malformed(name, namelen, value, valuelen)) != NULL)
		return fail(r, REQ_MALFORMED, why);

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
	/* the method an application may take instead may not go twice */
	if (f.kind == FK_METHOD)
		r->flags &= ~REQ_F_IDEMPOTENT;
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
				if (!bytes_istchar(value[i]))
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
			    name_is(value, valuelen, "TRACE"))
				r->flags |= REQ_F_IDEMPOTENT |
				    REQ_F_MAX_FORWARDS;
			else if (name_is(value, valuelen, "DELETE"))
				r->flags |= REQ_F_IDEMPOTENT;
			return pseudo_set(r, &r->method, idx);
		}
		if (name_is(name, namelen, ":scheme"))
			return pseudo_set(r, &r->scheme, idx);
		if (name_is(name, namelen, ":path")) {
			if (valuelen == 0)
				return fail(r, REQ_MALFORMED, "empty :path");
			/* kept when refused too: the access log shows it */
			if (pseudo_set(r, &r->path, idx) == -1)
				return -1;
			/*
			 * An invalid pseudo-header value makes the request
			 * malformed (RFC 9114 4.1.2), and a URI is ASCII
			 * without spaces or controls (RFC 3986 2).
			 */
			for (size_t i = 0; i < valuelen; i++)
				if (value[i] <= ' ' || value[i] >= 0x7f)
					return fail(r, REQ_MALFORMED,
					    "invalid character in :path");
			return 0;
		}
		if (name_is(name, namelen, ":protocol")) {
			/* RFC 8441 4, RFC 9220 3: an extended CONNECT's */
			if (r->flags & REQ_F_PROTOCOL)
				return fail(r, REQ_MALFORMED,
				    "repeated pseudo-header");
			if (valuelen == 0)
				return fail(r, REQ_MALFORMED, "empty :protocol");
			r->flags |= REQ_F_PROTOCOL;
			/* an Upgrade token: case does not matter */
			if (valuelen == 9 && strncasecmp((const char *)value,
			    "websocket", 9) == 0)
				r->flags |= REQ_F_WS_TOKEN;
			return 0;
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
	if ((why = field_connection(name, namelen, value, valuelen)) != NULL)
		return fail(r, REQ_MALFORMED, why);
	switch (namelen) {
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
	case 12:
		/* RFC 9110 7.6.2: the first, when it is a number */
		if (name_is(name, namelen, "max-forwards") &&
		    r->max_forwards == -1 &&
		    parse_length(value, valuelen, &r->max_forwards) == -1)
			r->max_forwards = -2;	/* looked at; none */
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
	}
	return 0;
}

/*
 * Fields a trailer section cannot carry (RFC 9110 6.5.1), as their
 * meaning is needed before the content: framing, routing, authentication
 * and cookies, request modifiers (conditionals, ranges, cache directives)
 * and content control; in a response (response: true), its own controls
 * (caching, redirection), challenges and cookies too, which say nothing
 * of a request's content and pass in its trailers as any other field
 * does. name: lowercase.
 */
bool
trailer_name_forbidden(const uint8_t *name, size_t len, bool response)
{
	static const char *const names[] = {
		"authorization", "cache-control", "content-encoding",
		"content-length", "content-range", "content-type", "cookie",
		"expect", "host", "if-match", "if-modified-since",
		"if-none-match", "if-range", "if-unmodified-since",
		"max-forwards", "pragma", "proxy-authorization", "range", "te",
		"trailer", "transfer-encoding",
	};
	static const char *const response_names[] = {
		"age", "expires", "location", "proxy-authenticate",
		"retry-after", "set-cookie", "vary", "www-authenticate",
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (name_is(name, len, names[i]))
			return true;
	if (response)
		for (size_t i = 0; i < sizeof(response_names) /
		    sizeof(response_names[0]); i++)
			if (name_is(name, len, response_names[i]))
				return true;
	return false;
}

/* A request's, with those request_write_http1 writes or drops itself. */
static bool
trailer_forbidden(const uint8_t *name, size_t len)
{
	return field_kind(name, len) != FK_PLAIN ||
	    trailer_name_forbidden(name, len, false);
}

enum request_trailer
request_trailer(const uint8_t *name, size_t namelen, const uint8_t *value,
    size_t valuelen, const char **why)
{
	if ((*why = field_malformed(name, namelen, value, valuelen)) != NULL)
		return REQ_TRAILER_MALFORMED;
	if (name[0] == ':') {
		*why = "pseudo-header in trailers";
		return REQ_TRAILER_MALFORMED;
	}
	if ((*why = field_connection(name, namelen, value, valuelen)) != NULL)
		return REQ_TRAILER_MALFORMED;
	return trailer_forbidden(name, namelen) ? REQ_TRAILER_DROP :
	    REQ_TRAILER_PASS;
}

/* RFC 3986 2.3: what a percent-encoding may stand for and mean the same. */
static bool
path_unreserved(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	    c == '~';
}

bool
request_encoded_slash(const char *p, size_t len)
{
	return len >= 3 && p[0] == '%' && ((p[1] == '2' &&
	    (p[2] == 'F' || p[2] == 'f')) || (p[1] == '5' &&
	    (p[2] == 'C' || p[2] == 'c')));
}

/* How many "." p[0, len) holds, spelled "." or "%2E": 1, 2, or 0 (not
   a dot segment). */
static int
path_dots(const char *p, size_t len)
{
	int n = 0;

	for (size_t i = 0; i < len; i++, n++)
		if (p[i] == '%' && i + 2 < len && p[i + 1] == '2' &&
		    (p[i + 2] == 'e' || p[i + 2] == 'E'))
			i += 2;
		else if (p[i] != '.')
			return 0;
	return n <= 2 ? n : 0;
}

/*
 * Whether a "." or ".." segment touches "%2F" or "%5C", which some
 * backends decode and read as "/": "/img/..%2Fadmin" is "/admin" to such a
 * backend, and to routes (route.c) it would be "/img/../admin", which no
 * route for "/admin/" takes. Those between plain "/" are resolved
 * (path_normalize). So is one with parameters (RFC 3986 3.3), "..;x",
 * which Tomcat and Jetty take off before they resolve it: "/img/..;/admin"
 * is "/admin" to them.
 */
static bool
path_hidden_dots(const char *p, size_t len)
{
	size_t i = 0, start, n;
	bool encoded_before = false, encoded_after;
	const char *semi;

	while (i < len) {
		start = i;
		while (i < len && p[i] != '/' && !request_encoded_slash(p + i,
		    len - i))
			i++;
		encoded_after = i < len && p[i] != '/';
		if ((encoded_before || encoded_after) &&
		    path_dots(p + start, i - start) > 0)
			return true;
		if ((semi = memchr(p + start, ';', i - start)) != NULL &&
		    path_dots(p + start, (size_t)(semi - (p + start))) > 0)
			return true;
		n = encoded_after ? 3 : 1;
		encoded_before = encoded_after;
		i += n;
	}
	return false;
}

/*
 * Normalizes p[0, len), an absolute path without its query, in place and
 * gives its new length: percent-encoded unreserved characters decoded
 * (RFC 3986 6.2.2.2), then "." and ".." segments removed (5.2.4). Routes
 * match, and backends receive, this path: "/img/../admin" is "/admin" to
 * both, whatever either would have made of it. A '%' without two hex
 * digits is refused (-1): decoding around it could make a new encoding,
 * "%%32e" a "%2e" that the backend would decode again. So is a path with a
 * dot segment that only some backends see (-2, path_hidden_dots).
 */
static int
path_normalize(char *p, size_t len, size_t *outlen)
{
	size_t i, j, w, seglen;
	int c;

	/* checked before any byte moves: a refused path is logged as sent */
	for (i = 0; i < len; i++)
		if (p[i] == '%' && (i + 2 >= len ||
		    bytes_hexval((uint8_t)p[i + 1]) == -1 ||
		    bytes_hexval((uint8_t)p[i + 2]) == -1))
			return -1;
	if (path_hidden_dots(p, len))
		return -2;
	for (i = w = 0; i < len; i++, w++) {
		c = p[i] != '%' ? -1 : bytes_hexval((uint8_t)p[i + 1]) << 4 |
		    bytes_hexval((uint8_t)p[i + 2]);
		if (c != -1 && path_unreserved(c)) {
			p[w] = (char)c;
			i += 2;
		} else
			p[w] = p[i];
	}
	len = w;

	/* Segment by segment, each one starting at its '/'. */
	for (i = w = 0; i < len; i = j) {
		for (j = i + 1; j < len && p[j] != '/'; j++)
			;
		seglen = j - i - 1;
		if (seglen == 2 && p[i + 1] == '.' && p[i + 2] == '.') {
			while (w > 0 && p[--w] != '/')
				;
		} else if (!(seglen == 1 && p[i + 1] == '.')) {
			memmove(p + w, p + i, j - i);
			w += j - i;
			continue;
		}
		/* a last "." or ".." leaves the directory: "/a/.." is "/" */
		if (j == len)
			p[w++] = '/';
	}
	*outlen = w;
	return 0;
}

/*
 * Whether the path before any query holds none of the characters that
 * RFC 3986 allows nowhere in a URI and browsers always percent-encode
 * there (a backslash they send as "/"): " < > ` { } and the backslash,
 * which a backend such as IIS or a WHATWG URL parser reads as "/", so
 * that it would see another path than the one routed. ("|" and "^",
 * which browsers send as they are, and the query, pass.)
 */
static bool
path_chars_ok(const char *p, size_t len)
{
	for (size_t i = 0; i < len && p[i] != '?'; i++)
		if (memchr("\\\"<>`{}", p[i], 7) != NULL)
			return false;
	return true;
}

/*
 * The :path normalized in place, its query kept as it came. 0, or
 * path_normalize's -1 or -2.
 */
static int
request_normalize_path(struct request *r)
{
	struct request_field *f = &r->fields[r->path];
	char *p = r->buf + f->value;
	size_t len = f->valuelen, plen, n;
	const char *q;
	int rv;

	q = memchr(p, '?', len);
	plen = q != NULL ? (size_t)(q - p) : len;
	if (memchr(p, '.', plen) == NULL && memchr(p, '%', plen) == NULL)
		return 0;
	if ((rv = path_normalize(p, plen, &n)) != 0)
		return rv;
	memmove(p + n, p + plen, len - plen);
	f->valuelen = (uint32_t)(n + len - plen);
	p[f->valuelen] = '\0';
	return 0;
}

int
request_finish(struct request *r, bool fin)
{
	if (r->error != REQ_OK)
		return -1;
	if (r->method == -1)
		return fail(r, REQ_MALFORMED, "no :method");
	if (r->flags & REQ_F_PROTOCOL) {
		/*
		 * RFC 8441 4 (RFC 9220 3): an extended CONNECT has :scheme,
		 * :path and :authority; its DATA are the tunnel's, no
		 * content of a length
		 */
		if (!(r->flags & REQ_F_CONNECT))
			return fail(r, REQ_MALFORMED, ":protocol without CONNECT");
		if (r->scheme == -1 || r->path == -1 || r->authority == -1)
			return fail(r, REQ_MALFORMED,
			    "malformed extended CONNECT");
		if (r->content_length != -1)
			return fail(r, REQ_MALFORMED,
			    "content-length in an extended CONNECT");
		/* RFC 9220 3: a protocol not supported gets 501 */
		if (!(r->flags & REQ_F_WS_TOKEN))
			return fail(r, REQ_NOT_IMPLEMENTED, ":protocol");
		r->flags |= REQ_F_WEBSOCKET;
		/*
		 * a GET for the backend: nothing of the tunnel goes before
		 * its 101, so it may go again as a GET would, unless a field
		 * names another method (request_add)
		 */
		if (!has_kind(r, FK_METHOD))
			r->flags |= REQ_F_IDEMPOTENT;
	} else if (r->flags & REQ_F_CONNECT) {
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
	/* RFC 9110 7.1: a fragment is never part of a request's target */
	if (memchr(fvalue(r, r->path), '#', r->fields[r->path].valuelen))
		return fail(r, REQ_BAD, "fragment in :path");
	if (fvalue(r, r->path)[0] != '/')
		return 0;	/* OPTIONS * */
	if (!path_chars_ok(fvalue(r, r->path), r->fields[r->path].valuelen))
		return fail(r, REQ_BAD, "character not allowed in :path");
	switch (request_normalize_path(r)) {
	case -1:
		return fail(r, REQ_BAD, "invalid percent-encoding in :path");
	case -2:
		return fail(r, REQ_BAD, "dot segment hidden by an encoded "
		    "slash or a parameter in :path");
	}
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
request_sent_path(const struct request *r, size_t skip, size_t *len,
    bool *slash)
{
	const char *path = request_path(r, len);

	*slash = false;
	if (skip > 0 && skip <= *len) {
		path += skip;
		*len -= skip;
		*slash = *len == 0 || path[0] != '/';
	}
	return path;
}

const char *
request_method(const struct request *r)
{
	if (r->flags & REQ_F_WEBSOCKET)
		return "GET";
	return r->method == -1 ? "" : fvalue(r, r->method);
}

const char *
request_field(const struct request *r, const char *name)
{
	size_t i = 0;

	return request_field_next(r, name, &i);
}

const char *
request_field_next(const struct request *r, const char *name, size_t *i)
{
	for (; *i < r->nfields; (*i)++)
		if (strcmp(fname(r, (int)*i), name) == 0)
			return fvalue(r, (int)(*i)++);
	return NULL;
}

size_t
request_field_count(const struct request *r, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < r->nfields; i++)
		n += strcmp(fname(r, (int)i), name) == 0;
	return n;
}

bool
request_methods_in(const struct request *r, const char *list)
{
	const char *v, *e, *end;
	char m[32];
	size_t n;

	if (!route_method_in(list, request_method(r)))
		return false;
	for (size_t i = 0; i < r->nfields; i++) {
		if (r->fields[i].kind != FK_METHOD)
			continue;
		/* each element, in upper case: a framework may take any */
		for (v = fvalue(r, (int)i); ; v = e + 1) {
			end = strchr(v, ',');
			e = end != NULL ? end : v + strlen(v);
			for (; v < e && (*v == ' ' || *v == '\t'); v++)
				;
			for (n = 0; v + n < e; n++) {
				if (n == sizeof(m) - 1)
					return false;
				m[n] = (char)toupper((unsigned char)v[n]);
			}
			for (; n > 0 && (m[n - 1] == ' ' || m[n - 1] == '\t'); n--)
				;
			m[n] = '\0';
			if (n > 0 && (strpbrk(m, " \t") != NULL ||
			    !route_method_in(list, m)))
				return false;
			if (end == NULL)
				break;
		}
	}
	return true;
}

bool
request_has_field(const struct request *r, const char *name,
    const char *value)
{
	for (size_t i = 0; i < r->nfields; i++)
		if (strcmp(fname(r, (int)i), name) == 0 &&
		    (value == NULL || strcmp(fvalue(r, (int)i), value) == 0))
			return true;
	return false;
}

/*
 * The HTTP/1.1 head is gathered here and handed to the queue in a few
 * large appends: one per field would cost more than the fields' bytes.
 */
struct head_out {
	struct bufq	*q;
	size_t		 len;
	bool		 failed;
	char		 buf[2048];
};

/* After a failed append nothing more goes out: no head with a gap. */
static void
ho_flush(struct head_out *o)
{
	if (!o->failed && o->len > 0 &&
	    bufq_append(o->q, o->buf, o->len) == -1)
		o->failed = true;
	o->len = 0;
}

/* What does not fit: flush first, and a piece larger than buf goes whole. */
static void
ho_put_full(struct head_out *o, const void *p, size_t n)
{
	ho_flush(o);
	if (o->failed)
		return;
	if (n > sizeof(o->buf)) {
		if (bufq_append(o->q, p, n) == -1)
			o->failed = true;
		return;
	}
	memcpy(o->buf, p, n);
	o->len = n;
}

/* Inline, so that a literal's copy is a few moves: 22 calls per request. */
static inline void
ho_put(struct head_out *o, const void *p, size_t n)
{
	if (o->failed)
		return;
	if (n > sizeof(o->buf) - o->len) {
		ho_put_full(o, p, n);
		return;
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

static void
ho_str(struct head_out *o, const char *s)
{
	ho_put(o, s, strlen(s));
}

#define HO_LIT(o, s)	ho_put((o), (s), sizeof(s) - 1)

/* Writes "name: v1SEPv2..." for the fields of this kind; false if none. */
static bool
put_values(struct head_out *o, const struct request *r, uint32_t kind,
    const char *hname, const char *sep)
{
	bool any = false;

	for (size_t i = 0; i < r->nfields; i++) {
		if (r->fields[i].kind != kind)
			continue;
		ho_str(o, any ? sep : hname);
		ho_put(o, fvalue(r, (int)i), r->fields[i].valuelen);
		any = true;
	}
	return any;
}

/* Whether the request has a field of this kind. */
static bool
has_kind(const struct request *r, uint32_t kind)
{
	for (size_t i = 0; i < r->nfields; i++)
		if (r->fields[i].kind == kind)
			return true;
	return false;
}

/* The received fields of this kind, ready for the element this hop adds. */
static void
open_list(struct head_out *o, const struct request *r, uint32_t kind,
    const char *hname, const char *sep)
{
	ho_str(o, put_values(o, r, kind, hname, sep) ? sep : hname);
}

/*
 * This hop's Forwarded element. RFC 7239: an IPv6 address is bracketed
 * and quoted. Built by hand: printf cost more than the rest of the head.
 */
static void
put_forwarded(struct head_out *o, const char *addr, const char *authority,
    size_t alen)
{
	bool v6 = strchr(addr, ':') != NULL;

	HO_LIT(o, "for=");
	if (v6)
		HO_LIT(o, "\"[");
	ho_str(o, addr);
	if (v6)
		HO_LIT(o, "]\"");
	HO_LIT(o, ";proto=https;host=\"");
	ho_put(o, authority, alen);
	HO_LIT(o, "\"");
}

int
request_write_http1(const struct request *r, const struct request_forward *fw,
    struct bufq *out)
{
	const struct config_headers *set = fw->set != NULL &&
	    fw->set->n > 0 ? fw->set : NULL;
	struct head_out o;
	char tmp[64];
	const char *authority, *path;
	size_t alen, plen, idlen = fw->id_name != NULL ? strlen(fw->id_name) :
	    0, certlen = fw->cert_name != NULL ? strlen(fw->cert_name) : 0;
	bool slash;

	o.q = out;
	o.len = 0;
	o.failed = false;
	authority = request_authority(r, &alen);
	path = request_sent_path(r, fw->path_skip, &plen, &slash);
	ho_str(&o, request_method(r));
	HO_LIT(&o, " ");
	if (slash)
		HO_LIT(&o, "/");
	ho_put(&o, path, plen);
	HO_LIT(&o, " HTTP/1.1\r\nhost: ");
	ho_put(&o, authority, alen);
	HO_LIT(&o, "\r\n");

	for (size_t i = 0; i < r->nfields; i++) {
		if (r->fields[i].kind != FK_PLAIN &&
		    r->fields[i].kind != FK_METHOD &&
		    (r->fields[i].kind != FK_PROXY || !fw->keep_forwarded))
			continue;
		if (set != NULL && header_is_set(set, fname(r, (int)i),
		    r->fields[i].namelen))
			continue;
		if (idlen > 0 && r->fields[i].namelen == idlen &&
		    memcmp(fname(r, (int)i), fw->id_name, idlen) == 0)
			continue;
		if (certlen > 0 && request_name_is(fw->cert_name,
		    fname(r, (int)i), r->fields[i].namelen))
			continue;
		ho_put(&o, fname(r, (int)i), r->fields[i].namelen);
		HO_LIT(&o, ": ");
		ho_put(&o, fvalue(r, (int)i), r->fields[i].valuelen);
		HO_LIT(&o, "\r\n");
	}

	for (size_t i = 0; set != NULL && i < set->n; i++) {
		if (set->v[i].valuelen == 0)
			continue;
		ho_put(&o, set->v[i].name, set->v[i].namelen);
		HO_LIT(&o, ": ");
		ho_put(&o, set->v[i].value, set->v[i].valuelen);
		HO_LIT(&o, "\r\n");
	}

	if (idlen > 0) {
		ho_put(&o, fw->id_name, idlen);
		HO_LIT(&o, ": ");
		ho_str(&o, fw->id);
		HO_LIT(&o, "\r\n");
	}
	if (certlen > 0 && fw->cert != NULL) {
		ho_put(&o, fw->cert_name, certlen);
		HO_LIT(&o, ": ");
		ho_str(&o, fw->cert);
		HO_LIT(&o, "\r\n");
	}

	/* RFC 9114 4.2.1: cookie fields are joined with "; " for HTTP/1.1. */
	if (put_values(&o, r, FK_COOKIE, "cookie: ", "; "))
		HO_LIT(&o, "\r\n");
	if (fw->keep_forwarded)
		open_list(&o, r, FK_XFF, "x-forwarded-for: ", ", ");
	else
		HO_LIT(&o, "x-forwarded-for: ");
	ho_str(&o, fw->client_addr);
	HO_LIT(&o, "\r\n");
	open_list(&o, r, FK_VIA, "via: ", ", ");
	HO_LIT(&o, "3 qproxy\r\n");
	if (fw->keep_forwarded)
		open_list(&o, r, FK_FORWARDED, "forwarded: ", ", ");
	else
		HO_LIT(&o, "forwarded: ");
	put_forwarded(&o, fw->client_addr, authority, alen);
	HO_LIT(&o, "\r\nx-forwarded-proto: https\r\n");
	if (fw->early_data)
		HO_LIT(&o, "early-data: 1\r\n");
	else if (put_values(&o, r, FK_EARLY, "early-data: ", ", "))
		HO_LIT(&o, "\r\n");
	/*
	 * RFC 9110 7.6.2: one hop less (a 0 is answered, never sent), unless
	 * the route sets the field (written above, or removed)
	 */
	if (set == NULL || !header_is_set(set, "max-forwards", 12)) {
		if ((r->flags & REQ_F_MAX_FORWARDS) && r->max_forwards > 0)
			ho_put(&o, tmp, (size_t)snprintf(tmp, sizeof(tmp),
			    "max-forwards: %lld\r\n",
			    (long long)r->max_forwards - 1));
		else if (put_values(&o, r, FK_MAX_FORWARDS, "max-forwards: ",
		    ", "))
			HO_LIT(&o, "\r\n");
	}

	/*
	 * RFC 9110 10.1.4: the client takes trailers, which a backend may
	 * send only when asked; TE is the hop's, so Connection names it
	 * (7.6.1). (set_request_header may not name TE.)
	 */
	if (has_kind(r, FK_TE))
		HO_LIT(&o, "te: trailers\r\nconnection: te\r\n");
	/* RFC 6455 4.1, RFC 8441 5: the Upgrade an HTTP/1.1 backend needs */
	if (fw->ws_key != NULL) {
		HO_LIT(&o, "upgrade: websocket\r\nconnection: upgrade\r\n"
		    "sec-websocket-key: ");
		ho_str(&o, fw->ws_key);
		HO_LIT(&o, "\r\n");
	}

	switch (fw->framing) {
	case REQ_BODY_NONE:
		break;
	case REQ_BODY_LENGTH:
		ho_put(&o, tmp, (size_t)snprintf(tmp, sizeof(tmp),
		    "content-length: %llu\r\n",
		    (unsigned long long)fw->body_length));
		break;
	case REQ_BODY_CHUNKED:
		HO_LIT(&o, "transfer-encoding: chunked\r\n");
		break;
	}
	HO_LIT(&o, "\r\n");
	ho_flush(&o);
	return o.failed ? -1 : 0;
}
