/* http1.h: the HTTP/1.1 response parser (head and body framing). */
#ifndef QPROXY_HTTP1_H
#define QPROXY_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP1_MAX_HEADERS	128
#define HTTP1_STATUS_MIN	12	/* "HTTP/1.1 200", the shortest status
					   line */

struct http1_header {
	const char	*name;		/* points into the parsed buffer */
	size_t		 namelen;
	const char	*value;		/* surrounding whitespace removed */
	size_t		 valuelen;
};

enum http1_framing {
	HTTP1_BODY_NONE,	/* no body: HEAD, 1xx, 204, 304, or length 0 */
	HTTP1_BODY_LENGTH,	/* Content-Length bytes */
	HTTP1_BODY_CHUNKED,	/* chunked transfer coding */
	HTTP1_BODY_CLOSE,	/* until the connection closes */
};

struct http1_response {
	int			status;		/* 100..599 */
	int			minor_version;	/* HTTP/1.x */
	struct http1_header	headers[HTTP1_MAX_HEADERS];
	size_t			nheaders;
	enum http1_framing	framing;
	/* its value, whether it frames the body or not (HEAD, 304) */
	bool			has_content_length;
	uint64_t		content_length;
	bool			keep_alive;	/* reusable after this response */
};

/*
 * Parses a response head at the start of buf. head_request: the request was
 * HEAD (no body whatever the headers say). Returns the length of the head
 * including its final empty line, 0 when buf does not hold a whole head yet,
 * or -1 when it is malformed, or its first HTTP1_STATUS_MIN bytes cannot
 * begin a status line (its end not come yet). Header pointers point into
 * buf.
 */
long	http1_parse_response(const uint8_t *buf, size_t len, bool head_request,
	    struct http1_response *);
/*
 * The next option of the response head's Connection fields into opt, len
 * (*i and *p start at 0 and NULL; false after the last), and the same
 * over one list [*p, end): split at commas and whitespace.
 */
bool	http1_connection_next(const struct http1_response *, size_t *i,
	    const char **p, const char **opt, size_t *len);
/* Whether a field's name is name, in any case. */
bool	http1_name_is(const struct http1_header *, const char *name);
/* Whether the Connection fields name this option, in any case. */
bool	http1_connection_has(const struct http1_response *, const char *option);
/* Whether the fields of that name (Upgrade) list this option, in any case. */
bool	http1_field_has(const struct http1_response *, const char *name,
	    const char *option);
bool	http1_options_next(const char **p, const char *end, const char **opt,
	    size_t *len);
/* A status line's code (its CRLF left out), as the above takes it; -1. */
int	http1_status(const uint8_t *line, size_t len);

struct http1_body {
	enum http1_framing	framing;
	uint64_t		remaining;	/* of the length or chunk */
	int			state;		/* private to http1.c */
	size_t			linelen;	/* private to http1.c */
	/*
	 * Of a chunked body, the trailer section's bytes that the last call
	 * took: whole or partial field lines, CRLFs included, its final
	 * empty line not; a span of that call's input, or NULL. Kept by the
	 * caller, all of them in order, for http1_trailers.
	 */
	const uint8_t		*trailer;
	size_t			 trailerlen;
};

enum http1_body_status {
	HTTP1_BODY_AGAIN,	/* more input wanted */
	HTTP1_BODY_DONE,	/* the body ended; *consumed bytes belong to it */
	HTTP1_BODY_ERROR,	/* bad framing */
};

void	http1_body_init(struct http1_body *, const struct http1_response *);
/*
 * Decodes body bytes from in[0..len). Sets *consumed to the input bytes used
 * and *data, *datalen to at most one span of payload (inside in). Call again
 * with the rest while it returns HTTP1_BODY_AGAIN and consumed < len.
 */
enum http1_body_status http1_body_parse(struct http1_body *,
	    const uint8_t *in, size_t len, size_t *consumed,
	    const uint8_t **data, size_t *datalen);
/* The connection reached EOF: DONE for close-delimited bodies, else ERROR. */
enum http1_body_status http1_body_eof(struct http1_body *);
/*
 * The fields of a trailer section that http1_body_parse took whole (its
 * trailer spans, end to end), at most max of them into h; returns how
 * many. A field whose name or value is too long to pass on is left out.
 * The pointers point into buf.
 */
size_t	http1_trailers(const uint8_t *buf, size_t len, struct http1_header *h,
	    size_t max);

#endif
