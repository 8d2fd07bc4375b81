/*
 * request.h: one HTTP/3 request head: its fields as received, checked
 * against RFC 9114 sections 4.1.2 to 4.3, and written out as HTTP/1.1.
 */
#ifndef QPROXY_REQUEST_H
#define QPROXY_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bufq.h"

enum request_error {
	REQ_OK = 0,
	REQ_MALFORMED,		/* reset the stream with H3_MESSAGE_ERROR */
	REQ_TOO_LARGE,		/* answer 431 */
	REQ_BAD,		/* well-formed but unusable: answer 400 */
	REQ_NOT_IMPLEMENTED,	/* CONNECT, :protocol not websocket: 501 */
};

struct request_field {
	uint32_t	name, namelen;		/* offsets into request.buf */
	uint32_t	value, valuelen;
	uint32_t	kind;			/* how it goes to HTTP/1.1 */
};

/*
 * A field line's share of a field section, as RFC 9114 4.2.2 counts it
 * for SETTINGS_MAX_FIELD_SECTION_SIZE: its name, its value and 32 bytes.
 */
static inline size_t
field_line_size(size_t namelen, size_t valuelen)
{
	return namelen + valuelen + 32;
}

/* Most requests fit in the inline space: no allocation for them. */
#define REQUEST_INLINE_BUF	512
#define REQUEST_INLINE_FIELDS	16

/* Holds pointers into itself: never copied once initialized. */
struct request {
	char			*buf;		/* names and values, NUL-ended */
	size_t			 buflen, bufcap;
	size_t			 max_size;	/* of the whole head */
	size_t			 size;		/* so far: RFC 9114 4.2.2 */
	struct request_field	*fields;
	size_t			 nfields, fieldcap;
	int			 method, scheme, authority, path, host;	/* or -1 */
	int64_t			 content_length;	/* -1: none */
	int64_t			 max_forwards;	/* -1: none; -2: not a number */
	unsigned		 flags;
	enum request_error	 error;
	const char		*why;		/* static text for the log */
	char			 inline_buf[REQUEST_INLINE_BUF];
	struct request_field	 inline_fields[REQUEST_INLINE_FIELDS];
};

#define REQ_F_REGULAR_SEEN	0x01	/* a regular field was received */
#define REQ_F_HEAD		0x02	/* method HEAD */
#define REQ_F_CONNECT		0x04
#define REQ_F_EXPECT_CONTINUE	0x08
#define REQ_F_BODY_METHOD	0x10	/* POST, PUT, PATCH: send a length */
#define REQ_F_IDEMPOTENT	0x20	/* RFC 9110 9.2.2 */
#define REQ_F_MAX_FORWARDS	0x40	/* OPTIONS, TRACE: Max-Forwards counts */
#define REQ_F_PROTOCOL		0x80	/* :protocol: an extended CONNECT */
#define REQ_F_WS_TOKEN		0x100	/* :protocol is websocket */
/*
 * A valid extended CONNECT of :protocol websocket (RFC 9220), set by
 * request_finish: a GET with an Upgrade to the backend
 */
#define REQ_F_WEBSOCKET		0x200

void	request_init(struct request *, size_t max_size);
void	request_free(struct request *);
/* Adds one field line; on error records it (first one wins) and returns -1. */
int	request_add(struct request *, const uint8_t *name, size_t namelen,
	    const uint8_t *value, size_t valuelen);
/*
 * One field line of the request's trailer section (RFC 9114 4.1), checked
 * as request_add checks a head's: MALFORMED, *why set, for what would make
 * a head malformed and for any pseudo-header (RFC 9114 4.1.2); DROP for a
 * field a trailer section cannot carry (RFC 9110 6.5.1: framing, routing,
 * request modifiers, authentication, content control) or that qproxy
 * writes itself; else PASS. The sizes are counted by the caller.
 */
enum request_trailer {
	REQ_TRAILER_PASS,
	REQ_TRAILER_DROP,
	REQ_TRAILER_MALFORMED,
};
enum request_trailer request_trailer(const uint8_t *name, size_t namelen,
	    const uint8_t *value, size_t valuelen, const char **why);
/*
 * Whether a field of this name (lowercase) may not be carried by a trailer
 * section (RFC 9110 6.5.1): a response's when response, else a request's.
 */
bool	trailer_name_forbidden(const uint8_t *name, size_t len, bool response);
/* End of the header section; fin: the stream ended with it. 0 or -1. */
int	request_finish(struct request *, bool fin);
/* The body so far: received bytes, and whether the stream ended. 0 or -1. */
int	request_check_body(struct request *, uint64_t received, bool fin);

/* Bytes the head holds on the heap: its field lines past the inline room. */
size_t	request_heap(const struct request *);
/*
 * Keeps of a finished request what is still asked of it (method, target
 * host and path, at most the given lengths of each: what the access log
 * shows) and lets the other fields go. When out of memory, they are cut
 * further, to what fits in the request's inline room.
 */
void	request_compact(struct request *, size_t method_max,
	    size_t authority_max, size_t path_max);

/* The target host for routing: :authority, else Host. */
const char *request_authority(const struct request *, size_t *len);
const char *request_path(const struct request *, size_t *len);
/*
 * Whether p[0, len) begins with "%2F" or "%5C", in either case, which
 * backends may decode and read as "/" (a backslash: IIS, WHATWG URL
 * parsers): routes read it so, and a dot segment touching it is refused.
 */
bool	request_encoded_slash(const char *p, size_t len);
/*
 * The path as a backend is sent it: the first skip bytes (strip_prefix's
 * prefix, when the path is as long) cut, and *slash true when a "/" must
 * go before what is left.
 */
const char *request_sent_path(const struct request *, size_t skip,
    size_t *len, bool *slash);
/* The method; GET for a WebSocket's extended CONNECT, as its backend
   is sent it */
const char *request_method(const struct request *);
/* A field's value by (lowercase) name, the first one; NULL when absent. */
const char *request_field(const struct request *, const char *name);
/* The next such value, from field *i on (0 at first), *i moved past it. */
const char *request_field_next(const struct request *, const char *name,
	    size_t *i);
/* How many fields of that (lowercase) name it has. */
size_t	request_field_count(const struct request *, const char *name);
/*
 * Whether the request's method is in list (" GET HEAD "), and so is each
 * method its X-HTTP-Method-Override, X-HTTP-Method or X-Method-Override
 * fields name, in upper case: applications that take one in place of the
 * method would otherwise make a request a route's methods or
 * early_data_methods keep out.
 */
bool	request_methods_in(const struct request *, const char *list);
/* Whether a field of that (lowercase) name has this value, or any when
   value is NULL. */
bool	request_has_field(const struct request *, const char *name,
	    const char *value);

enum request_framing {
	REQ_BODY_NONE,		/* no body, no length sent (GET) */
	REQ_BODY_LENGTH,	/* Content-Length: body_length */
	REQ_BODY_CHUNKED,	/* Transfer-Encoding: chunked */
};

struct config_headers;

struct request_forward {
	const char		*client_addr;	/* "192.0.2.1" or "2001:db8::1" */
	enum request_framing	 framing;
	uint64_t		 body_length;
	bool			 early_data;	/* RFC 8470: Early-Data: 1 */
	/* the route's set_request_header: these replace the client's
	   fields of their names (none when NULL) */
	const struct config_headers *set;
	/* request_id_header (lowercase) and the request's ID, which
	   replace the client's fields of that name (none when NULL) */
	const char		*id_name;
	const char		*id;
	/* bytes cut from the front of the path (a route's strip_prefix):
	   what is left is sent, after a '/' if it does not start with one */
	size_t			 path_skip;
	/* the client's X-Forwarded-For and Forwarded are passed on, this
	   hop's element after them (trusted_proxies); else they go */
	bool			 keep_forwarded;
	/* a WebSocket's: the Sec-WebSocket-Key sent with the Upgrade */
	const char		*ws_key;
	/* client_cert_header (lowercase): the client's fields of that name
	   are dropped, and cert, the client's certificate, is sent in it
	   (none when NULL) */
	const char		*cert_name;
	const char		*cert;
};

/*
 * Whether a field's name is want (lowercase; NULL: none), "_" and "-" taken
 * for each other as CGI, WSGI, Rack and PHP take them: a backend reads
 * x_client_cert as X-Client-Cert (HTTP_X_CLIENT_CERT).
 */
bool	request_name_is(const char *want, const char *name, size_t len);

/* Appends the HTTP/1.1 request head. 0, or -1 when out of memory. */
int	request_write_http1(const struct request *,
	    const struct request_forward *, struct bufq *);

#endif
