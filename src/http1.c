/*
 * http1.c: the HTTP/1.1 response parser for bytes from backend servers.
 *
 * Strict on purpose (RFC 9112): CRLF line endings only, no obs-fold, no
 * whitespace before a colon, one unambiguous body length. Anything that two
 * parsers could read differently is an error, never a guess.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "bytes.h"
#include "http1.h"

#define HTTP1_MAX_SIZE		((uint64_t)1 << 62)	/* a body or chunk */
#define HTTP1_MAX_CHUNK_LINE	4096	/* a chunk-size line, CRLF included */
#define HTTP1_MAX_TRAILERS	65536	/* all trailer lines, final CRLF too */
/*
 * The longest name and value passed on. QPACK decoders set limits of their
 * own, and nghttp3's (256 and 65536 bytes, encoded) close the connection of
 * a client that gets more: all of its requests would fail for one field.
 */
#define HTTP1_MAX_NAME		256
#define HTTP1_MAX_VALUE		65536

/* struct http1_body state */
enum {
	BODY_ACTIVE,		/* NONE, LENGTH and CLOSE bodies */
	BODY_SIZE_FIRST,	/* first hex digit of a chunk size */
	BODY_SIZE,		/* further hex digits */
	BODY_SIZE_WS,		/* whitespace after the size, before ';' */
	BODY_EXT,		/* chunk extensions, ignored */
	BODY_SIZE_LF,		/* LF ending the chunk-size line */
	BODY_DATA,		/* chunk data */
	BODY_DATA_CR,		/* CRLF after the chunk data */
	BODY_DATA_LF,
	BODY_TRAILER,		/* a trailer line or the final CRLF */
	BODY_TR_NAME,		/* trailer field name */
	BODY_TR_VALUE,		/* trailer field value */
	BODY_TR_LF,		/* LF ending a trailer line */
	BODY_END_LF,		/* LF ending the chunked body */
	BODY_DONE,
	BODY_ERROR,
};

static bool
http1_isows(uint8_t c)
{
	return c == ' ' || c == '\t';
}

bool
http1_name_is(const struct http1_header *h, const char *name)
{
	size_t n = strlen(name);

	return h->namelen == n && strncasecmp(h->name, name, n) == 0;
}

/* A walk over the elements of a comma-separated field value. */
struct http1_list {
	const char	*p, *end;	/* p: NULL after the last element */
};

/*
 * The next element, with its surrounding whitespace removed. Empty
 * elements are returned too.
 */
static bool
http1_list_next(struct http1_list *l, const char **elem, size_t *elemlen)
{
	const char *s, *e;

	if (l->p == NULL)
		return false;
	s = l->p;
	e = memchr(s, ',', (size_t)(l->end - s));
	if (e == NULL) {
		e = l->end;
		l->p = NULL;
	} else
		l->p = e + 1;
	while (s < e && http1_isows((uint8_t)*s))
		s++;
	while (e > s && http1_isows((uint8_t)e[-1]))
		e--;
	*elem = s;
	*elemlen = (size_t)(e - s);
	return true;
}

static void
http1_list_init(struct http1_list *l, const struct http1_header *h)
{
	l->p = h->value;
	l->end = h->value + h->valuelen;
}

static bool
http1_token_is(const char *s, size_t len, const char *token)
{
	size_t n = strlen(token);

	return len == n && strncasecmp(s, token, n) == 0;
}

/*
 * The status line, without its CRLF:
 * "HTTP/1." DIGIT SP 3DIGIT [ SP reason-phrase ].
 * A minor version past 1 is read as 1.1, the highest of HTTP/1 that qproxy
 * implements (RFC 9112 2.3). A missing SP before an empty reason is
 * tolerated. The code is 100 to 599 (RFC 9110 15: other values are
 * invalid).
 */
static int
http1_status_line(const uint8_t *s, size_t len, struct http1_response *resp)
{
	if (len < HTTP1_STATUS_MIN || memcmp(s, "HTTP/1.", 7) != 0)
		return -1;
	if (s[7] < '0' || s[7] > '9')
		return -1;
	resp->minor_version = s[7] == '0' ? 0 : 1;
	if (s[8] != ' ')
		return -1;
	if (s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' ||
	    s[11] < '0' || s[11] > '9')
		return -1;
	resp->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	if (len == 12)
		return 0;
	if (s[12] != ' ' || bytes_has_ctl(s + 13, len - 13))
		return -1;
	return 0;
}

/*
 * Whether s[0, len), a status line's beginning with no end of line yet,
 * may still become one (the same checks as above, up to the code). A
 * backend that is no HTTP/1 server (an HTTP/2 server's SETTINGS frame, a
 * TLS record, a database's greeting) is refused at its first bytes, not
 * when read_timeout ends a wait for an end of line that may never come.
 */
static bool
http1_status_prefix(const uint8_t *s, size_t len)
{
	static const char version[] = "HTTP/1.";
	size_t i;

	for (i = 0; i < len && i < HTTP1_STATUS_MIN; i++) {
		if (i < sizeof(version) - 1 ? s[i] != (uint8_t)version[i] :
		    i == 8 ? s[i] != ' ' :
		    i == 9 ? s[i] < '1' || s[i] > '5' :
		    s[i] < '0' || s[i] > '9')
			return false;
	}
	return true;
}

int
http1_status(const uint8_t *line, size_t len)
{
	struct http1_response resp;

	return http1_status_line(line, len, &resp) == -1 ? -1 : resp.status;
}

/*
 * A field line, without its CRLF: token ":" OWS value OWS, into h. s[len]
 * is the line's CR, which ends the name's scan as any byte that is not a
 * tchar. -1 when it is no field line.
 */
static int
http1_split_field(const uint8_t *s, size_t len, struct http1_header *h)
{
	size_t i, vs, ve;

	for (i = 0; bytes_istchar(s[i]); i++)
		;
	/* a name ends at ':': not at SP, obs-fold or anything else */
	if (i == 0 || i >= len || s[i] != ':')
		return -1;
	if (bytes_has_ctl(s + i + 1, len - i - 1))
		return -1;
	for (vs = i + 1; vs < len && http1_isows(s[vs]); vs++)
		;
	for (ve = len; ve > vs && http1_isows(s[ve - 1]); ve--)
		;
	h->name = (const char *)s;
	h->namelen = i;
	h->value = (const char *)s + vs;
	h->valuelen = ve - vs;
	return 0;
}

/* Whether a field may be passed on: see HTTP1_MAX_NAME. */
static bool
http1_field_fits(const struct http1_header *h)
{
	return h->namelen <= HTTP1_MAX_NAME && h->valuelen <= HTTP1_MAX_VALUE;
}

/* A field line of the head, without its CRLF, as http1_split_field. */
static int
http1_field_line(const uint8_t *s, size_t len, struct http1_response *resp)
{
	struct http1_header *h;

	if (resp->nheaders >= HTTP1_MAX_HEADERS)
		return -1;
	h = &resp->headers[resp->nheaders];
	if (http1_split_field(s, len, h) == -1 || !http1_field_fits(h))
		return -1;
	resp->nheaders++;
	return 0;
}

/* Content-Length: 1*DIGIT, repeated values allowed only when identical. */
static int
http1_content_length(const struct http1_response *resp, bool *found,
    uint64_t *length)
{
	const struct http1_header *h;
	struct http1_list l;
	const char *e;
	uint64_t v, d;
	size_t i, j, elen;

	*found = false;
	*length = 0;
	for (i = 0; i < resp->nheaders; i++) {
		h = &resp->headers[i];
		if (!http1_name_is(h, "Content-Length"))
			continue;
		http1_list_init(&l, h);
		while (http1_list_next(&l, &e, &elen)) {
			if (elen == 0)
				return -1;
			v = 0;
			for (j = 0; j < elen; j++) {
				if (e[j] < '0' || e[j] > '9')
					return -1;
				d = (uint64_t)(e[j] - '0');
				if (v > (HTTP1_MAX_SIZE - d) / 10)
					return -1;
				v = v * 10 + d;
			}
			if (*found && v != *length)
				return -1;
			*found = true;
			*length = v;
		}
	}
	return 0;
}

/*
 * Transfer-Encoding: a list of codings, possibly over several fields.
 * Sets *chunked when the final coding is chunked, *other when some coding
 * is not chunked. Empty elements, coding parameters and chunked applied
 * more than once are errors.
 */
static int
http1_transfer_encoding(const struct http1_response *resp, bool *found,
    bool *chunked, bool *other)
{
	const struct http1_header *h;
	struct http1_list l;
	const char *e;
	size_t i, j, elen;
	bool seen_chunked = false;

	*found = false;
	*chunked = false;
	*other = false;
	for (i = 0; i < resp->nheaders; i++) {
		h = &resp->headers[i];
		if (!http1_name_is(h, "Transfer-Encoding"))
			continue;
		*found = true;
		http1_list_init(&l, h);
		while (http1_list_next(&l, &e, &elen)) {
			if (elen == 0)
				return -1;
			for (j = 0; j < elen; j++)
				if (!bytes_istchar((uint8_t)e[j]))
					return -1;
			*chunked = http1_token_is(e, elen, "chunked");
			if (*chunked) {
				if (seen_chunked)
					return -1;
				seen_chunked = true;
			} else
				*other = true;
		}
	}
	return 0;
}

/*
 * Connection's options are tokens in a comma-separated list (RFC 9110
 * 7.6.1); a value that is not one ("keep-alive close") is split at its
 * whitespace too, here and for the fields it names (exchange.c), so that
 * the two read it alike and a "close" in it is heeded.
 */
bool
http1_options_next(const char **p, const char *end, const char **opt,
    size_t *len)
{
	const char *t;

	while (*p < end && (**p == ',' || http1_isows((uint8_t)**p)))
		(*p)++;
	if (*p == end)
		return false;
	for (t = *p; t < end && *t != ',' && !http1_isows((uint8_t)*t); t++)
		;
	*opt = *p;
	*len = (size_t)(t - *p);
	*p = t;
	return true;
}

/* http1_connection_next, over the fields of any name. */
static bool
field_next(const struct http1_response *resp, const char *name, size_t *i,
    const char **p, const char **opt, size_t *len)
{
	for (; *i < resp->nheaders; (*i)++, *p = NULL) {
		const struct http1_header *h = &resp->headers[*i];

		if (!http1_name_is(h, name))
			continue;
		if (*p == NULL)
			*p = h->value;
		if (http1_options_next(p, h->value + h->valuelen, opt, len))
			return true;
	}
	return false;
}

bool
http1_connection_next(const struct http1_response *resp, size_t *i,
    const char **p, const char **opt, size_t *len)
{
	return field_next(resp, "Connection", i, p, opt, len);
}

bool
http1_field_has(const struct http1_response *resp, const char *name,
    const char *option)
{
	const char *p = NULL, *opt;
	size_t i = 0, len;

	while (field_next(resp, name, &i, &p, &opt, &len))
		if (http1_token_is(opt, len, option))
			return true;
	return false;
}

bool
http1_connection_has(const struct http1_response *resp, const char *option)
{
	return http1_field_has(resp, "Connection", option);
}

/*
 * RFC 9112 section 6.3, for a response. One rule is a proxy's own: a body
 * in a transfer coding other than chunked is refused, where RFC 9112 would
 * read it until the connection closes. It could be passed on only still
 * coded, with nothing to say so: HTTP/3 has no transfer codings, and
 * Transfer-Encoding is a hop-by-hop field (nginx answers 502 as well).
 */
static int
http1_framing(struct http1_response *resp, bool head_request)
{
	uint64_t length;
	bool has_cl, has_te, chunked, other, keep_alive;

	if (http1_content_length(resp, &has_cl, &length) == -1)
		return -1;
	if (http1_transfer_encoding(resp, &has_te, &chunked, &other) == -1)
		return -1;
	/*
	 * Transfer-Encoding with Content-Length: a message that may be an
	 * attempt at smuggling (RFC 9112 6.3): the length is not passed on,
	 * whatever the status, and the connection is closed after.
	 */
	resp->has_content_length = has_cl && !has_te;
	resp->content_length = resp->has_content_length ? length : 0;

	if (resp->minor_version >= 1)
		keep_alive = !http1_connection_has(resp, "close");
	else
		keep_alive = http1_connection_has(resp, "keep-alive") &&
		    !http1_connection_has(resp, "close");

	if (has_te && has_cl)
		keep_alive = false;
	/*
	 * A 204 ends at its head whatever it says (RFC 9112 6.3), but one
	 * with a Content-Length other than 0 or a Transfer-Encoding, which a
	 * server must not send on it (RFC 9110 8.6, RFC 9112 6.1), may be
	 * followed by the body it announces: the connection is closed after,
	 * rather than the next request take that body for its response.
	 */
	if (resp->status == 204 && (has_te || (has_cl && length > 0)))
		keep_alive = false;
	if (head_request || resp->status < 200 || resp->status == 204 ||
	    resp->status == 304)
		resp->framing = HTTP1_BODY_NONE;
	else if (has_te) {
		if (other || !chunked)
			return -1;
		resp->framing = HTTP1_BODY_CHUNKED;
		/* TE in HTTP/1.0: faulty framing, close after */
		if (resp->minor_version == 0)
			keep_alive = false;
	} else if (has_cl) {
		resp->framing = length == 0 ? HTTP1_BODY_NONE :
		    HTTP1_BODY_LENGTH;
	} else
		resp->framing = HTTP1_BODY_CLOSE;

	if (resp->framing == HTTP1_BODY_CLOSE)
		keep_alive = false;
	resp->keep_alive = keep_alive;
	return 0;
}

long
http1_parse_response(const uint8_t *buf, size_t len, bool head_request,
    struct http1_response *resp)
{
	const uint8_t *line, *lf;
	size_t pos = 0, linelen;

	resp->status = 0;
	resp->minor_version = 0;
	resp->nheaders = 0;
	resp->framing = HTTP1_BODY_CLOSE;
	resp->has_content_length = false;
	resp->content_length = 0;
	resp->keep_alive = false;

	for (;;) {
		line = buf + pos;
		lf = memchr(line, '\n', len - pos);
		if (lf == NULL)
			return line > buf || http1_status_prefix(buf, len) ?
			    0 : -1;
		linelen = (size_t)(lf - line);
		/* CRLF only: no bare LF, no CR anywhere else on the line */
		if (linelen == 0 || line[linelen - 1] != '\r')
			return -1;
		linelen--;
		/*
		 * A CR or NUL elsewhere on the line fails below: the status
		 * line's checks, tchar in names, no controls in values.
		 */
		pos += linelen + 2;

		if (line == buf) {
			if (http1_status_line(line, linelen, resp) == -1)
				return -1;
		} else if (linelen == 0)
			break;
		else if (http1_field_line(line, linelen, resp) == -1)
			return -1;
	}
	if (http1_framing(resp, head_request) == -1)
		return -1;
	return (long)pos;
}

void
http1_body_init(struct http1_body *b, const struct http1_response *resp)
{
	b->framing = resp->framing;
	b->remaining = 0;
	b->linelen = 0;
	b->trailer = NULL;
	b->trailerlen = 0;
	b->state = BODY_ACTIVE;
	switch (b->framing) {
	case HTTP1_BODY_NONE:
		b->state = BODY_DONE;
		break;
	case HTTP1_BODY_LENGTH:
		b->remaining = resp->content_length;
		if (b->remaining == 0)
			b->state = BODY_DONE;
		break;
	case HTTP1_BODY_CHUNKED:
		b->state = BODY_SIZE_FIRST;
		break;
	case HTTP1_BODY_CLOSE:
		break;
	default:
		b->state = BODY_ERROR;
		break;
	}
}

/* One byte of chunked framing (outside chunk data). False: bad framing. */
static bool
http1_chunked_byte(struct http1_body *b, uint8_t c)
{
	int d;

	switch (b->state) {
	case BODY_SIZE_FIRST:
	case BODY_SIZE:
	case BODY_SIZE_WS:
	case BODY_EXT:
	case BODY_SIZE_LF:
		if (++b->linelen > HTTP1_MAX_CHUNK_LINE)
			return false;
		break;
	case BODY_TRAILER:
	case BODY_TR_NAME:
	case BODY_TR_VALUE:
	case BODY_TR_LF:
	case BODY_END_LF:
		if (++b->linelen > HTTP1_MAX_TRAILERS)
			return false;
		break;
	default:
		break;
	}

	switch (b->state) {
	case BODY_SIZE_FIRST:
	case BODY_SIZE:
		if ((d = bytes_hexval(c)) != -1) {
			if (b->remaining > (HTTP1_MAX_SIZE - (uint64_t)d) / 16)
				return false;
			b->remaining = b->remaining * 16 + (uint64_t)d;
			b->state = BODY_SIZE;
			return true;
		}
		if (b->state == BODY_SIZE_FIRST)
			return false;
		/* FALLTHROUGH */
	case BODY_SIZE_WS:
		if (http1_isows(c))
			b->state = BODY_SIZE_WS;
		else if (c == ';')
			b->state = BODY_EXT;
		else if (c == '\r' && b->state == BODY_SIZE)
			b->state = BODY_SIZE_LF;
		else
			return false;
		return true;
	case BODY_EXT:
		if (c == '\r')
			b->state = BODY_SIZE_LF;
		else if (bytes_isctl(c))
			return false;
		return true;
	case BODY_SIZE_LF:
		if (c != '\n')
			return false;
		b->linelen = 0;
		b->state = b->remaining == 0 ? BODY_TRAILER : BODY_DATA;
		return true;
	case BODY_DATA_CR:
		if (c != '\r')
			return false;
		b->state = BODY_DATA_LF;
		return true;
	case BODY_DATA_LF:
		if (c != '\n')
			return false;
		b->state = BODY_SIZE_FIRST;
		b->remaining = 0;
		b->linelen = 0;
		return true;
	case BODY_TRAILER:
		if (c == '\r')
			b->state = BODY_END_LF;
		else if (bytes_istchar(c))
			b->state = BODY_TR_NAME;
		else
			return false;	/* obs-fold, empty name, ... */
		return true;
	case BODY_TR_NAME:
		if (c == ':')
			b->state = BODY_TR_VALUE;
		else if (!bytes_istchar(c))
			return false;
		return true;
	case BODY_TR_VALUE:
		if (c == '\r')
			b->state = BODY_TR_LF;
		else if (bytes_isctl(c))
			return false;
		return true;
	case BODY_TR_LF:
		if (c != '\n')
			return false;
		b->state = BODY_TRAILER;
		return true;
	case BODY_END_LF:
		if (c != '\n')
			return false;
		b->state = BODY_DONE;
		return true;
	default:
		return false;
	}
}

/*
 * Whether a byte taken in state was, to become now, is one of a trailer
 * field line: not of the chunk-size line before them, nor of the final
 * CRLF.
 */
static bool
http1_trailer_byte(int was, int now)
{
	return was == BODY_TR_NAME || was == BODY_TR_VALUE ||
	    was == BODY_TR_LF || (was == BODY_TRAILER && now == BODY_TR_NAME);
}

static enum http1_body_status
http1_chunked_parse(struct http1_body *b, const uint8_t *in, size_t len,
    size_t *consumed, const uint8_t **data, size_t *datalen)
{
	size_t i = 0, n;
	int was;

	while (i < len && b->state != BODY_DONE) {
		if (b->state == BODY_DATA) {
			if (*datalen > 0)
				break;		/* one span per call */
			n = len - i;
			if (n > b->remaining)
				n = (size_t)b->remaining;
			*data = in + i;
			*datalen = n;
			i += n;
			b->remaining -= n;
			if (b->remaining == 0)
				b->state = BODY_DATA_CR;
			continue;
		}
		was = b->state;
		if (!http1_chunked_byte(b, in[i++])) {
			b->state = BODY_ERROR;
			*consumed = i;
			*data = NULL;
			*datalen = 0;
			b->trailer = NULL;
			b->trailerlen = 0;
			return HTTP1_BODY_ERROR;
		}
		/* the trailer lines are the body's last bytes: one span */
		if (http1_trailer_byte(was, b->state)) {
			if (b->trailer == NULL)
				b->trailer = in + i - 1;
			b->trailerlen = (size_t)(in + i - b->trailer);
		}
	}
	*consumed = i;
	return b->state == BODY_DONE ? HTTP1_BODY_DONE : HTTP1_BODY_AGAIN;
}

enum http1_body_status
http1_body_parse(struct http1_body *b, const uint8_t *in, size_t len,
    size_t *consumed, const uint8_t **data, size_t *datalen)
{
	size_t n;

	*consumed = 0;
	*data = NULL;
	*datalen = 0;
	b->trailer = NULL;
	b->trailerlen = 0;
	if (b->state == BODY_ERROR)
		return HTTP1_BODY_ERROR;
	if (b->state == BODY_DONE)
		return HTTP1_BODY_DONE;

	switch (b->framing) {
	case HTTP1_BODY_LENGTH:
		n = len;
		if (n > b->remaining)
			n = (size_t)b->remaining;
		if (n > 0) {
			*data = in;
			*datalen = n;
		}
		*consumed = n;
		b->remaining -= n;
		if (b->remaining > 0)
			return HTTP1_BODY_AGAIN;
		b->state = BODY_DONE;
		return HTTP1_BODY_DONE;
	case HTTP1_BODY_CHUNKED:
		return http1_chunked_parse(b, in, len, consumed, data, datalen);
	case HTTP1_BODY_CLOSE:
		if (len > 0) {
			*data = in;
			*datalen = len;
		}
		*consumed = len;
		return HTTP1_BODY_AGAIN;
	default:
		b->state = BODY_ERROR;
		return HTTP1_BODY_ERROR;
	}
}

enum http1_body_status
http1_body_eof(struct http1_body *b)
{
	if (b->state == BODY_DONE)
		return HTTP1_BODY_DONE;
	if (b->state != BODY_ERROR && b->framing == HTTP1_BODY_CLOSE) {
		b->state = BODY_DONE;
		return HTTP1_BODY_DONE;
	}
	b->state = BODY_ERROR;
	return HTTP1_BODY_ERROR;
}

size_t
http1_trailers(const uint8_t *buf, size_t len, struct http1_header *h,
    size_t max)
{
	const uint8_t *line, *lf;
	size_t pos = 0, linelen, n = 0;

	while (n < max && pos < len &&
	    (lf = memchr(buf + pos, '\n', len - pos)) != NULL) {
		line = buf + pos;
		linelen = (size_t)(lf - line);
		pos += linelen + 1;
		/* the body's parse took CRLF-ended field lines only */
		if (linelen == 0 || line[linelen - 1] != '\r' ||
		    http1_split_field(line, linelen - 1, &h[n]) == -1)
			continue;
		if (http1_field_fits(&h[n]))
			n++;
	}
	return n;
}
