/*
 * exchange.c: one request's life, from the HTTP/3 stream to a backend and
 * back.
 *
 * Backpressure is decided here and only here:
 *  - client -> backend: request body bytes are credited back to the QUIC
 *    stream (h3_consumed) only once written to the backend socket, or
 *    held for a backend's request_buffer_size, so the stream window bounds
 *    what is buffered beyond that;
 *  - backend -> client: the backend socket is read only while the response
 *    buffer is under response_buffer_size, and all response buffers together
 *    under response_buffer_total; bytes leave it when acknowledged. When
 *    the total is reached, backends wait for memory (mem_waiters), and
 *    streams of the connections slowest to take what they hold are reset
 *    to make room (ex_mem_evict).
 *  - request heads (as received, and as written for a backend) and bodies
 *    held for backends count against request_buffer_total; past it, the
 *    connection holding the most loses its largest stream (ex_req_evict).
 *
 * Nothing reaches a backend before the request head was validated, and a
 * request whose body fits in half of stream_window (or in its backend's
 * request_buffer_size) is held until it is complete, so such a body that
 * contradicts its Content-Length never reaches one either.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

#include "bufq.h"
#include "bucket.h"
#include "bytes.h"
#include "clients.h"
#include "clock.h"
#include "compress.h"
#include "config.h"
#include "conn.h"
#include "exchange.h"
#include "freelist.h"
#include "http1.h"
#include "log.h"
#include "request.h"
#include "rng.h"
#include "route.h"
#include "stats.h"
#include "upstream.h"
#include "websocket.h"

#define EX_READ_CHUNK	16384
#define EX_OWN_MIN	1024	/* an exchange's own read buffer, at least */
/*
 * Chunks a body read fills at most: 1 MiB. A read takes what the room
 * (ex_room) allows, at the default response_buffer_size all of it: each
 * read of a socket costs its own wakeup of the backend's sending (the
 * window update), so fewer, larger reads cost less per byte.
 */
#define EX_READ_IOV	64
/*
 * Backend bytes one call of ex_read takes at most, a turn of the loop:
 * the room in the response buffer bounds a read of a body, but not what
 * fills none of it (informational heads past EX_MAX_INFO, dropped; a
 * chunked body's framing). A backend sending those faster than they are
 * parsed kept ex_read reading until it stopped, every other connection,
 * and the timers (the request's read_timeout too), waiting meanwhile.
 * As much as one read of a body at the most.
 */
#define EX_READ_BUDGET	(EX_READ_IOV * BUFQ_CHUNK_SIZE)
/*
 * The same for a body that is compressed, whose bytes cost far more to
 * take than to read: one read, about 0.15 ms of deflate at level 5, so
 * that a hundred such streams at once keep a turn of the loop (and every
 * other connection's wait) to some 15 ms.
 */
#define EX_GZIP_BUDGET	EX_READ_CHUNK
/*
 * Informational (1xx) heads passed on per request, at most, and at most
 * max_header_size bytes of them in all. Each waits in nghttp3 until the
 * client takes it, and they do not count against the response buffer: a
 * backend sending them without end would grow qproxy as long as the
 * client did not read; 16 of the largest a head may be, 1 MiB a stream.
 * Later ones are read and dropped, which HTTP allows (RFC 9110 15.2: a
 * client may ignore them).
 */
#define EX_MAX_INFO	16
#define EX_CHUNK_MIN	1024	/* smaller body pieces wait to be one chunk */
/*
 * With response_buffer_total reached and other connections' backends
 * waiting for memory, a connection whose client has not taken, for this
 * long, as many response bytes as its streams held loses streams to make
 * room: a client that takes less than a full response_buffer_size (256
 * KiB) per stream in that time, about 51 KB/s a stream.
 */
#define EX_EVICT_AGE	5.0

/* A request's ID (request_id_header): 32 hexadecimal digits. */
#define EX_ID_LEN	32
#define EX_AGENT_MAX	256	/* combined log: Referer, User-Agent bytes */

enum ex_state {
	EX_HEADERS,	/* receiving the request head */
	EX_HOLD,	/* valid; holding the body until it is complete */
	EX_CONNECTING,	/* backend connect in progress */
	EX_FORWARD,	/* talking to the backend */
	EX_DONE,	/* answered or reset; waiting for the stream to close */
};

/* What exchange_trailer found wrong in a trailer section, to act on. */
enum ex_trailers {
	EX_TRAILERS_OK,
	EX_TRAILERS_MALFORMED,	/* H3_MESSAGE_ERROR (req.why) */
	EX_TRAILERS_TOO_LARGE,	/* past max_header_size: 431 */
	EX_TRAILERS_NO_ROOM,	/* request_buffer_total: given up */
	EX_TRAILERS_NO_MEMORY,	/* H3_INTERNAL_ERROR */
};

struct exchange {
	struct qconn		*qc;
	struct generation	*gen;		/* held: routes, backends */
	int64_t			 stream_id;
	LIST_ENTRY(exchange)	 entry;
	enum ex_state		 state;
	struct request		 req;
	double			 started;	/* mono_now, for durations */
	double			 wall_start;	/* for the access log */
	bool			 head_seen;	/* worth an access log line */
	uint64_t		 fields_seen;	/* exchange_field */
	size_t			 done_held;	/* ex_count_done; 0: not */
	bool			 head_refused;	/* no room for it: see
						   exchange_field */
	bool			 head_trimmed;	/* to what the log shows */
	bool			 early;		/* begun in 0-RTT */
	char			 id[EX_ID_LEN + 1];	/* request_id_header's,
							   or "" */
	const struct config_route *route;	/* of ex->gen; NULL until
						   the head is routed */
	int			 status;	/* final status sent, or 0 */
	uint64_t		 resp_bytes;	/* body bytes from the backend,
						   or of qproxy's own answer */
	double			 forwarded;	/* backend connection ready:
						   mono_now */
	double			 backend_time;	/* to its response head; or
						   -1 */
	const char		*user;		/* auth_basic_file's, in the
						   configuration; or NULL */

	/* client -> backend */
	struct bufq		 hold;		/* raw body, before forwarding */
	struct bufq		 out;		/* bytes for the backend */
	struct bufq		 stage;		/* chunked: small body pieces,
						   one chunk; by length: the
						   last byte, until the FIN */
	bool			 write_queued;	/* on the flush list */
	TAILQ_ENTRY(exchange)	 write_entry;
	uint64_t		 body_received;
	uint64_t		 body_limit;	/* its route's max_body_size; 0:
						   none */
	uint64_t		 body_queued;	/* to out or stage */
	uint64_t		 uncredited;	/* body bytes not yet credited */
	bool			 hold_filled;	/* went on with the hold just
						   full: streamed if more come */
	bool			 req_fin;	/* the client's request ended */
	bool			 req_written;	/* all of it reached the backend */
	enum request_framing	 framing;
	struct bufq		 trailers;	/* trailer lines for a chunked
						   body's end */
	size_t			 trailers_size;	/* as RFC 9114 4.2.2 counts */
	enum ex_trailers	 trailers_fault;	/* exchange_trailer */

	/* the backend */
	size_t			 backend;
	struct upstream_server	*server;
	size_t			 attempt;
	uint64_t		 tried;		/* attempts taken: UPSTREAM_TRIED */
	bool			 saw_full;	/* a server taken had no room */
	size_t			 first_server;	/* of attempt 0 */
	uint64_t		 client_hash;	/* client_hash's, at attempt 0 */
	struct upstream_server	*counted;	/* in its requests already, and
						   not failed there since */
	struct upstream_server	*given;		/* the last one given it, for
						   the access log; or NULL */
	struct upstream_conn	*uc;		/* or NULL */
	struct upstream_waiter	 waiter;	/* for room: max_connections */
	bool			 ready;		/* on ready_queue */
	bool			 woken;		/* first in line, trying again */
	bool			 waited;	/* has been in line */
	bool			 no_fd;		/* 503: no descriptor for uc */
	TAILQ_ENTRY(exchange)	 ready_entry;
	bool			 reused;	/* uc came from the pool */
	bool			 retried;	/* once, on a new connection */
	size_t			 next_hops;	/* retry_on's, to other servers */
	bool			 resp_any;	/* uc gave a response byte */
	ev_timer		 timer;
	bool			 client_clock;	/* timer: the client's idle_timeout */
	uint8_t			*rbuf;		/* backend bytes not yet parsed */
	size_t			 rlen, rcap;
	size_t			 rseen;		/* of a head cut short: no end
						   of line in rbuf before */
	struct http1_body	 body;
	bool			 head_done;
	bool			 reusable;	/* keep-alive after this response */
	bool			 info_close;	/* a 1xx head said the connection
						   closes */
	bool			 read_full;	/* the last read took all it asked */
	/*
	 * compress: the client takes gzip and the route gives it; the
	 * response could be given it (Vary: Accept-Encoding goes with it);
	 * and the stream, while it is, or NULL
	 */
	bool			 gzip_ok;
	bool			 vary_ae;
	struct compressor	*gz;
	bool			 gz_fed;	/* bytes given it since a flush */
	bool			 gz_given;	/* its head went out so */
	uint64_t		 gz_bytes;	/* gzip's bytes, for the log */

	/* backend -> client */
	struct bufq		 resp_body;
	struct bufq		 resp_trailers;	/* a chunked body's trailer
						   lines, until its end */
	bool			 trailers_sent;	/* submitted: the body ends
						   without the FIN */
	char			*resp_conn;	/* a chunked response's
						   Connection names, for its
						   trailers, or NULL */
	bool			 resp_submitted;
	bool			 resp_eof;	/* every body byte is queued */
	bool			 continue_sent;	/* 100 Continue went out */
	bool			 req_dropped;	/* writing failed: no more body */
	bool			 uc_reset;	/* a write found uc reset */
	bool			 flow_blocked;	/* the client's stream window is full */
	bool			 cancel_charged;	/* on max_stream_resets */
	bool			 resp_dropped;	/* reset: no more response bytes */
	bool			 cut_short;	/* the stream ended before it */
	bool			 trailers_lost;	/* counted: no chunked body for
						   them */

	/*
	 * A WebSocket (RFC 9220): the request goes as a GET with an
	 * Upgrade; once the backend's 101 came, the stream and the
	 * connection are a tunnel, bytes both ways as they come. What the
	 * client sends before is held in hold, for a backend that upgrades.
	 */
	bool			 ws;		/* REQ_F_WEBSOCKET */
	bool			 ws_upgrade;	/* a good 101: the client's 200
						   goes out */
	bool			 ws_open;	/* the tunnel is open */
	bool			 ws_counted;	/* in stats.ws_current */
	char			 ws_key[WS_KEY_LEN + 1];	/* or "" */
	/* access_log_format = combined's, kept past the head's trim */
	char			*referer, *user_agent;
	unsigned int		 ninfo;		/* 1xx heads passed on */
	size_t			 info_bytes;	/* and their bytes */

	/*
	 * qproxy's own answer's body: not in resp_body, to take no chunk.
	 * own_body points to own, or to the text of a route's return.
	 */
	char			 own[48];
	const char		*own_body;
	size_t			 own_len;
	bool			 own_given;	/* to nghttp3 */
	uint64_t		 own_acked;

	/* request_buffer_total: hold, out and stage's chunks, and req's heap */
	size_t			 req_counted;	/* bytes, in qc->req_bytes */
	size_t			 head_counted;	/* of them, req's heap */
	TAILQ_ENTRY(exchange)	 req_entry;	/* on req_holders */
	bool			 req_held;

	/* response_buffer_total */
	size_t			 mem_counted;	/* chunks in qc->mem_chunks */
	size_t			 mem_len;	/* bytes in qc->mem_bytes */
	TAILQ_ENTRY(exchange)	 memwait_entry;	/* on mem_waiters */
	bool			 mem_waiting;
};

/*
 * Exchanges with request body bytes for their backend: written once per
 * loop iteration (exchange_flush), so the body of a whole batch of
 * datagrams goes out in one writev rather than one per QUIC packet.
 */
static TAILQ_HEAD(, exchange) write_queue = TAILQ_HEAD_INITIALIZER(write_queue);

/*
 * Exchanges that waited for room at their backend and may go on: tried
 * again once per loop iteration too (exchange_flush), out of the call that
 * freed the room.
 */
static TAILQ_HEAD(, exchange) ready_queue = TAILQ_HEAD_INITIALIZER(ready_queue);

/*
 * Response memory, all streams together: mem_chunks counts the chunks of
 * every resp_body and resp_trailers (bufq_count). mem_holders lists the
 * connections whose streams hold any, the one whose last turnover ended
 * longest ago first (a turnover: its client took as many response bytes
 * as its streams held at the start of it): the first to lose streams when
 * memory runs out.
 * A client reading slowly on purpose takes ever longer over each; one
 * that takes its data as it comes is as quick as its link, whichever of
 * its streams it is sent first. mem_waiters lists, first come first, the
 * exchanges that stopped reading their backend for want of memory;
 * exchange_flush wakes them.
 */
static size_t mem_chunks;
static size_t mem_nwaiting;
static TAILQ_HEAD(, qconn) mem_holders = TAILQ_HEAD_INITIALIZER(mem_holders);
static TAILQ_HEAD(, exchange) mem_waiters = TAILQ_HEAD_INITIALIZER(mem_waiters);

/*
 * A request whose work is done keeps its exchange (and the head as its
 * access log line shows it) until its stream closes, which a client that
 * neither ends its request nor heeds STOP_SENDING puts off for as long as
 * it keeps the connection: counted per connection and in all, they count
 * toward quic_buffer_total (quic.c) with what ngtcp2 and nghttp3 hold.
 */
static size_t done_bytes;

static void
ex_count_done(struct exchange *ex, bool on)
{
	if ((ex->done_held != 0) == on)
		return;
	if (on) {
		ex->done_held = sizeof(*ex) + request_heap(&ex->req) +
		    (ex->referer != NULL ? strlen(ex->referer) + 1 : 0) +
		    (ex->user_agent != NULL ? strlen(ex->user_agent) + 1 : 0);
		done_bytes += ex->done_held;
		ex->qc->done_bytes += ex->done_held;
	} else {
		done_bytes -= ex->done_held;
		ex->qc->done_bytes -= ex->done_held;
		ex->done_held = 0;
	}
}

size_t
exchange_done_bytes(void)
{
	return done_bytes;
}

/*
 * Request memory, all streams together: req_chunks counts the chunks of
 * every exchange's hold, out, stage and trailers (what waits for a
 * backend: the request head as written for it, body bytes the client sent
 * within its credit, and trailer lines); req_head_bytes, the heap of the
 * heads as received, kept until the exchange is done (QPACK lets a few
 * bytes on the wire name a field of a thousand). req_holders lists the
 * exchanges holding any, in the order they began to. Flow control cannot
 * take back credit a client was given, so past request_buffer_total
 * streams are given up (ex_req_evict).
 */
static size_t req_chunks;
static size_t req_head_bytes;
static size_t req_conns;		/* connections holding any */
static TAILQ_HEAD(, exchange) req_holders = TAILQ_HEAD_INITIALIZER(req_holders);

static void	ex_start(struct exchange *);
static void	ex_resend(struct exchange *, const char *);
static bool	ex_may_try_next(const struct exchange *, bool);
static void	ex_try_next(struct exchange *, const char *);
static void	ex_mem_flush(void);
static bool	ex_req_evict(void);
static void	ex_req_give_up(struct exchange *);
static bool	ex_client_stalled(const struct exchange *);

/* Where backend bytes are read (ex_read_buffered); grows to the largest read. */
static uint8_t	*ex_shared;
static size_t	 ex_shared_cap;

static void	ex_try_server(struct exchange *);
static void	ex_woken(struct upstream_waiter *);
static void	ex_write(struct exchange *);
static void	ex_read(struct exchange *);
static void	ex_upstream_close(struct exchange *, bool reuse);
static void	ex_arm_timer(struct exchange *, double);
static void	ex_after_body(struct exchange *);

static struct config *
ex_cfg(const struct exchange *ex)
{
	return ex->gen->cfg;
}

static struct upstream_pool *
ex_pools(const struct exchange *ex)
{
	return ex->gen->upstreams;
}

static struct ev_loop *
ex_loop(const struct exchange *ex)
{
	return ex->qc->srv->loop;
}

/* Frees the exchange's own read buffer (ex_keep_rest), if it has one. */
static void
ex_own_free(struct exchange *ex)
{
	if (ex->rbuf != NULL && ex->rbuf != ex_shared) {
		free(ex->rbuf);
		stats.unparsed_bytes -= ex->rcap;
	}
	ex->rbuf = NULL;
}

static const char *
status_text(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 410: return "Gone";
	case 413: return "Content Too Large";
	case 421: return "Misdirected Request";
	case 425: return "Too Early";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Error";
	}
}

static void
count_response(int status)
{
	if (status >= 100 && status < 600)
		stats.responses[status / 100]++;
}

/* Credits request body bytes that no longer sit in qproxy's buffers. */
static void
ex_credit(struct exchange *ex, size_t queued)
{
	uint64_t n;

	if (ex->uncredited <= queued)
		return;
	n = ex->uncredited - queued;
	ex->uncredited -= n;
	h3_consumed(ex->qc, ex->stream_id, (size_t)n);
}

/* Out of the line for room at the backend, wherever it stands in it. */
static void
ex_unqueue(struct exchange *ex)
{
	upstream_unwait(ex_pools(ex), ex->backend, &ex->waiter);
	if (ex->ready) {
		TAILQ_REMOVE(&ready_queue, ex, ready_entry);
		ex->ready = false;
		/* the room it was woken for is the next one's */
		upstream_wake(ex_pools(ex), ex->backend);
	}
}

/*
 * The connection is kept alive (PINGs) while some exchange waits on
 * qproxy or its backend: not for one that waits only on the client, as a
 * client ignoring STOP_SENDING would hold the connection for good.
 */
static void
ex_set_done(struct exchange *ex)
{
	if (ex->state == EX_DONE)
		return;
	ex->state = EX_DONE;
	if (--ex->qc->nworking == 0)
		qconn_keep_alive(ex->qc, false);
}

/* response_buffer_total in chunks: the current generation's, for all */
static size_t
mem_limit(const struct exchange *ex)
{
	return ex->qc->srv->gen->cfg->response_buffer_total / BUFQ_CHUNK_SIZE;
}

/* A turnover of qc begins now: to the back of mem_holders. */
static void
qc_mem_turn(struct qconn *qc)
{
	if (qc->mem_held)
		TAILQ_REMOVE(&mem_holders, qc, mem_entry);
	TAILQ_INSERT_TAIL(&mem_holders, qc, mem_entry);
	qc->mem_held = true;
	qc->mem_mark = mono_now();
	qc->mem_taken = 0;
	qc->mem_target = qc->mem_bytes;
}

/*
 * After resp_body gained or lost chunks, or the client's credit for the
 * stream ran out or came back: what its connection holds, and the
 * connection's place on mem_holders. What a stream holds counts in bytes,
 * or in its chunks' size while the client gives it no room to send: a
 * few bytes it does not take must not hold a chunk each for nothing. A
 * reset stream's chunks are its connection's no more.
 */
static void
ex_mem_update(struct exchange *ex)
{
	struct qconn *qc = ex->qc;
	size_t n = ex->resp_dropped ? 0 : ex->resp_body.nchunks +
	    ex->resp_trailers.nchunks;
	size_t len = ex->resp_dropped ? 0 : ex->flow_blocked ?
	    n * BUFQ_CHUNK_SIZE : ex->resp_body.len + ex->resp_trailers.len;

	if (mem_chunks > stats.response_peak_chunks)
		stats.response_peak_chunks = mem_chunks;
	qc->mem_chunks = qc->mem_chunks - ex->mem_counted + n;
	ex->mem_counted = n;
	qc->mem_bytes = qc->mem_bytes - ex->mem_len + len;
	ex->mem_len = len;
	if (qc->mem_held && qc->mem_chunks == 0) {
		TAILQ_REMOVE(&mem_holders, qc, mem_entry);
		qc->mem_held = false;
	} else if (!qc->mem_held && qc->mem_chunks > 0)
		qc_mem_turn(qc);
}

/* Request memory, all streams together, in bytes. */
static size_t
req_total(void)
{
	return req_chunks * BUFQ_CHUNK_SIZE + req_head_bytes;
}

/*
 * After hold, out, stage or trailers gained or lost chunks, or the head
 * grew: what
 * the exchange and its connection hold for backends, and its place on
 * req_holders. A finished exchange's head, cut to what the access log
 * shows (ex_finish), is not counted: such a stream cannot be given up.
 */
static void
ex_req_update(struct exchange *ex)
{
	size_t head = ex->state == EX_DONE ? 0 : request_heap(&ex->req);
	size_t n = (ex->hold.nchunks + ex->out.nchunks + ex->stage.nchunks +
	    ex->trailers.nchunks) * BUFQ_CHUNK_SIZE + head, was;

	req_head_bytes = req_head_bytes - ex->head_counted + head;
	ex->head_counted = head;
	if (req_total() > stats.request_peak_bytes)
		stats.request_peak_bytes = req_total();
	was = ex->qc->req_bytes;
	ex->qc->req_bytes = was - ex->req_counted + n;
	ex->req_counted = n;
	if (was == 0 && ex->qc->req_bytes > 0)
		req_conns++;
	else if (was > 0 && ex->qc->req_bytes == 0)
		req_conns--;
	if (ex->req_held && n == 0) {
		TAILQ_REMOVE(&req_holders, ex, req_entry);
		ex->req_held = false;
	} else if (!ex->req_held && n > 0) {
		TAILQ_INSERT_TAIL(&req_holders, ex, req_entry);
		ex->req_held = true;
	}
}

/*
 * Only an exchange reading its backend waits: ex_upstream_close, on every
 * way out of that (ex_finish and ex_free included), takes it off the list.
 */
static void
ex_mem_wait(struct exchange *ex)
{
	if (ex->mem_waiting)
		return;
	TAILQ_INSERT_TAIL(&mem_waiters, ex, memwait_entry);
	ex->mem_waiting = true;
	mem_nwaiting++;
	ex->qc->mem_nwaiting++;
	stats.response_memory_waits++;
}

static void
ex_mem_unwait(struct exchange *ex)
{
	if (!ex->mem_waiting)
		return;
	TAILQ_REMOVE(&mem_waiters, ex, memwait_entry);
	ex->mem_waiting = false;
	mem_nwaiting--;
	ex->qc->mem_nwaiting--;
}

/* Response bytes the backend may be read for now; 0: none. */
static size_t
ex_room(const struct exchange *ex)
{
	size_t limit = ex_cfg(ex)->response_buffer_size, total = mem_limit(ex);
	size_t room;

	if (ex->resp_body.len >= limit || mem_chunks >= total)
		return 0;
	room = limit - ex->resp_body.len;
	if ((total - mem_chunks) * BUFQ_CHUNK_SIZE < room)
		room = (total - mem_chunks) * BUFQ_CHUNK_SIZE;
	return room;
}

/*
 * Once the head will not be written again (ex_retry), it keeps only what
 * the access log shows: the rest would be held, and counted, for as long
 * as the response takes.
 */
static void
ex_trim_head(struct exchange *ex)
{
	if (!ex->head_trimmed) {
		ex->head_trimmed = true;
		request_compact(&ex->req, ACCESS_METHOD_MAX,
		    ACCESS_AUTHORITY_MAX, ACCESS_LINE_MAX);
	}
	ex_req_update(ex);
}

/* In the WebSockets open now (stats.ws_current), or out of them. */
static void
ex_ws_count(struct exchange *ex, bool on)
{
	if (ex->ws_counted == on)
		return;
	ex->ws_counted = on;
	if (on) {
		stats.ws_opened++;
		stats.ws_current++;
	} else
		stats.ws_current--;
}

/* Ends the exchange's work; the stream itself closes later. */
static void
ex_finish(struct exchange *ex)
{
	ex_set_done(ex);
	ex_ws_count(ex, false);
	ex_unqueue(ex);
	ev_timer_stop(ex_loop(ex), &ex->timer);
	bufq_free(&ex->hold);
	bufq_free(&ex->out);
	bufq_free(&ex->stage);
	bufq_free(&ex->trailers);
	bufq_free(&ex->resp_trailers);
	free(ex->resp_conn);
	ex->resp_conn = NULL;
	ex_mem_update(ex);
	ex_trim_head(ex);
	ex_count_done(ex, true);
	/* whatever the client still sends is read and dropped */
	ex_credit(ex, 0);
	/*
	 * An unfinished request will not be read: the client is asked to
	 * stop sending, with H3_NO_ERROR (RFC 9114 4.1), so that the stream
	 * ends once the response is taken. A client that just stopped would
	 * otherwise hold it, and its connection (kept alive while streams
	 * are open), for good.
	 */
	if (!ex->req_fin)
		h3_stop_reading(ex->qc, ex->stream_id);
}

static void
ex_reset(struct exchange *ex, uint64_t code)
{
	ex_upstream_close(ex, false);
	/*
	 * The buffer goes at once, what was sent too: ngtcp2 retransmits no
	 * data of a reset stream (it skips the lost frames before reading
	 * them), and refuses what nghttp3 would still offer for it before
	 * reading that either. Its acknowledgements are ignored. Not when
	 * ngtcp2 could not reset it: then it goes with the stream.
	 */
	ex->resp_dropped = true;
	if (h3_reset_stream(ex->qc, ex->stream_id, code) == 0)
		bufq_free(&ex->resp_body);
	compress_free(ex->gz);
	ex->gz = NULL;
	ex_mem_update(ex);
	ex_finish(ex);
}

/*
 * A request qproxy has no memory for: cut short, and counted in requests
 * reset as the other resets of a request are.
 */
static void
ex_reset_nomem(struct exchange *ex)
{
	if (ex->head_seen)
		stats.requests_reset++;
	ex_reset(ex, NGHTTP3_H3_INTERNAL_ERROR);
}

/*
 * A new request ID: this process's 64 random bits, then its count of
 * requests, added to 64 more and mixed by a bijection (the finalizer of
 * splitmix64), so that no two of a process are alike and none tells how
 * many came before it.
 */
static void
ex_new_id(char id[EX_ID_LEN + 1])
{
	static uint64_t prefix, key, count;
	static bool drawn;
	uint64_t x;

	/* each worker draws its own: the supervisor, which forks them,
	   takes no requests */
	if (!drawn) {
		uint64_t r[2];

		rng_fill(r, sizeof(r));
		prefix = r[0];
		key = r[1];
		drawn = true;
	}
	x = key + count++;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	x ^= x >> 31;
	snprintf(id, EX_ID_LEN + 1, "%016llx%016llx",
	    (unsigned long long)prefix, (unsigned long long)x);
}

/*
 * The end of a final response head, qproxy's or a backend's: the route's
 * set_response_header fields that have a value (set may be NULL), then the
 * request's ID. nva has room for them; the new count is returned.
 */
static size_t
ex_nva_finish(const struct exchange *ex, const struct config_headers *set,
    nghttp3_nv *nva, size_t n)
{
	const char *idh = ex_cfg(ex)->request_id_header;

	for (size_t i = 0; set != NULL && i < set->n; i++)
		if (set->v[i].valuelen > 0)
			nva[n++] = (nghttp3_nv){ (uint8_t *)set->v[i].name,
			    (uint8_t *)set->v[i].value, set->v[i].namelen,
			    set->v[i].valuelen, NGHTTP3_NV_FLAG_NONE };
	if (idh != NULL && ex->id[0] != '\0')
		nva[n++] = (nghttp3_nv){ (uint8_t *)(uintptr_t)idh,
		    (uint8_t *)(uintptr_t)ex->id, strlen(idh), EX_ID_LEN,
		    NGHTTP3_NV_FLAG_NONE };
	return n;
}

/*
 * The Date of a response (RFC 9110 6.6.1): qproxy's own carry one, and so
 * do a backend's that came without. An IMF-fixdate of the loop's wall
 * clock, made once a second; "" if the clock cannot be read as a date.
 */
static const char *
ex_date(const struct exchange *ex)
{
	static const char days[] = "SunMonTueWedThuFriSat";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	static char date[64];
	static time_t made;
	time_t now = (time_t)ev_now(ex_loop(ex));
	struct tm tm;

	if (now == made)
		return date;
	made = now;
	date[0] = '\0';
	if (gmtime_r(&now, &tm) != NULL && tm.tm_year + 1900 <= 9999)
		snprintf(date, sizeof(date), "%.3s, %02d %.3s %04d "
		    "%02d:%02d:%02d GMT", days + 3 * tm.tm_wday, tm.tm_mday,
		    months + 3 * tm.tm_mon, tm.tm_year + 1900, tm.tm_hour,
		    tm.tm_min, tm.tm_sec);
	return date;
}

/* Whether a final response head gets ex_date: not if the route sets
   the field, or removes it. */
static bool
ex_dated(const struct config_headers *set)
{
	return set == NULL || !header_is_set(set, "date", 4);
}

/* An answer from qproxy itself, not from a backend. */
struct answer {
	int		 status;
	unsigned int	 retry_after;	/* seconds; 0: no Retry-After */
	const char	*body;		/* NULL: "404 Not Found\n" and the like
					   for an error, none otherwise */
	size_t		 bodylen;
	const char	*location;	/* or NULL */
	size_t		 locationlen;
	const char	*challenge;	/* WWW-Authenticate, or NULL */
	const struct config_headers *set;	/* a route's, or NULL */
};

static void
ex_answer(struct exchange *ex, const struct answer *a)
{
	const char *body = a->body, *type = "text/plain; charset=utf-8";
	const struct config_headers *set = a->set != NULL && a->set->n > 0 ?
	    a->set : NULL;
	const struct config_page_file *page;
	char clen[24], st[4], after[16];
	const char *date = ex_dated(set) ? ex_date(ex) : "";
	nghttp3_nv nva_small[9], *nva = nva_small;
	size_t nnv = 0, blen = a->bodylen;
	int n;

	if (ex->resp_submitted) {
		/* too late for a status: the client must see a failure */
		stats.requests_reset++;
		ex_reset(ex, NGHTTP3_H3_INTERNAL_ERROR);
		return;
	}
	ex_upstream_close(ex, false);
	if (body == NULL && a->status >= 400 && (page = config_error_page(
	    ex_cfg(ex), ex->route, a->status)) != NULL) {
		/* error_page: the configuration, and so the page, lasts as
		   long as the exchange */
		body = page->body;
		blen = page->len;
		type = page->type;
	} else if (body == NULL && a->status >= 400) {
		n = snprintf(ex->own, sizeof(ex->own), "%d %s\n", a->status,
		    status_text(a->status));
		body = ex->own;
		blen = MIN((size_t)n, sizeof(ex->own) - 1);
		type = "text/plain";
	} else if (body == NULL)
		blen = 0;
	/*
	 * :status, date, content-type, -length, location, www-authenticate,
	 * retry-after, the ID
	 */
	if (set != NULL && (nva = calloc(8 + set->n, sizeof(*nva))) == NULL) {
		ex_reset_nomem(ex);
		return;
	}
	snprintf(st, sizeof(st), "%d", a->status);
	nva[nnv++] = (nghttp3_nv){ (uint8_t *)":status", (uint8_t *)st, 7, 3,
	    NGHTTP3_NV_FLAG_NONE };
	if (date[0] != '\0')
		nva[nnv++] = (nghttp3_nv){ (uint8_t *)"date",
		    (uint8_t *)(uintptr_t)date, 4, strlen(date),
		    NGHTTP3_NV_FLAG_NONE };
	if (blen > 0 && (set == NULL || !header_is_set(set, "content-type",
	    12)))
		nva[nnv++] = (nghttp3_nv){ (uint8_t *)"content-type",
		    (uint8_t *)(uintptr_t)type, 12, strlen(type),
		    NGHTTP3_NV_FLAG_NONE };
	/* none on a 204 (RFC 9110 8.6), nor a 304 of no representation */
	if (a->status != 204 && a->status != 304) {
		snprintf(clen, sizeof(clen), "%zu", blen);
		nva[nnv++] = (nghttp3_nv){ (uint8_t *)"content-length",
		    (uint8_t *)clen, 14, strlen(clen), NGHTTP3_NV_FLAG_NONE };
	}
	if (a->location != NULL)
		nva[nnv++] = (nghttp3_nv){ (uint8_t *)"location",
		    (uint8_t *)(uintptr_t)a->location, 8, a->locationlen,
		    NGHTTP3_NV_FLAG_NONE };
	if (a->challenge != NULL)
		nva[nnv++] = (nghttp3_nv){ (uint8_t *)"www-authenticate",
		    (uint8_t *)(uintptr_t)a->challenge, 16, strlen(a->challenge),
		    NGHTTP3_NV_FLAG_NONE };
	if (a->retry_after > 0) {
		snprintf(after, sizeof(after), "%u", a->retry_after);
		nva[nnv++] = (nghttp3_nv){ (uint8_t *)"retry-after",
		    (uint8_t *)after, 11, strlen(after),
		    NGHTTP3_NV_FLAG_NONE };
	}
	nnv = ex_nva_finish(ex, set, nva, nnv);
	bufq_free(&ex->resp_body);
	ex_mem_update(ex);
	if (!(ex->req.flags & REQ_F_HEAD) && blen > 0) {
		ex->own_body = body;
		ex->own_len = blen;
		ex->resp_bytes = blen;	/* for the access log */
	}
	ex->resp_eof = true;
	ex->resp_submitted = true;
	ex->status = a->status;
	count_response(a->status);
	n = h3_submit_response(ex->qc, ex->stream_id, nva, nnv,
	    ex->own_len > 0);
	if (nva != nva_small)
		free(nva);
	if (n == -1) {
		/* nghttp3 took no head (no memory): cut short, as any reset */
		stats.requests_reset++;
		ex_reset(ex, NGHTTP3_H3_INTERNAL_ERROR);
		return;
	}
	ex_finish(ex);
}

/* 404, 502, 504 and the like, with a Retry-After of that many seconds
   unless 0 */
static void
ex_respond_after(struct exchange *ex, int status, unsigned int retry_after)
{
	struct answer a = { .status = status, .retry_after = retry_after };

	ex_answer(ex, &a);
}

static void
ex_respond(struct exchange *ex, int status)
{
	ex_respond_after(ex, status, 0);
}

/*
 * A response of ex->server's failed: timed out, broken off or not HTTP/1.1.
 * At the backend's max_fails in a row, new requests pass the server over
 * for fail_timeout, as after a failed connection.
 */
static void
ex_server_failed(struct exchange *ex)
{
	static struct log_limit lim;
	struct upstream_counters *k = ex->server->ctr;
	const struct config_backend *b = upstream_backend(ex_pools(ex),
	    ex->backend);

	k->failures++;
	ex->counted = NULL;
	if (++k->fails_in_row < b->max_fails || b->max_fails == 0)
		return;
	if (k->state != UPSTREAM_DOWN) {
		log_limited(&lim, LOG_LEVEL_WARN, "backend %s: %s: %llu "
		    "responses failed in a row: passed over for %.3g s",
		    b->name, ex->server->cfg->text,
		    (unsigned long long)k->fails_in_row, b->fail_timeout);
		stats.upstream_servers_failed++;
	}
	k->state = UPSTREAM_DOWN;
	k->down_since = mono_now();
}

/*
 * A response the backend got wrong before its head was whole: 502, a
 * failure of the server's; or, with retry_on's error, the next server.
 */
static void
ex_bad_response(struct exchange *ex, struct log_limit *lim, const char *what)
{
	if (ex_may_try_next(ex, upstream_backend(ex_pools(ex),
	    ex->backend)->retry_error)) {
		ex_try_next(ex, what);
		return;
	}
	log_limited(lim, LOG_LEVEL_WARN, "backend %s: %s",
	    ex->server->cfg->text, what);
	ex_server_failed(ex);
	ex_respond(ex, 502);
}

/*
 * A request body past its route's max_body_size: 413 (RFC 9110 15.5.14),
 * and the rest of it is not read (ex_finish); a backend that had its
 * beginning loses the connection, so it takes no part of it for a whole
 * request. Once the response has begun, the stream is reset.
 */
static void
ex_body_too_large(struct exchange *ex)
{
	stats.requests_body_too_large++;
	if (ex->resp_submitted) {
		stats.requests_reset++;
		ex_reset(ex, NGHTTP3_H3_REQUEST_CANCELLED);
		return;
	}
	ex_respond(ex, 413);
}

static void
ex_malformed(struct exchange *ex)
{
	log_debug("%s: stream %lld: malformed request: %s", ex->qc->peer,
	    (long long)ex->stream_id, ex->req.why ? ex->req.why : "?");
	stats.requests_malformed++;
	ex_reset(ex, NGHTTP3_H3_MESSAGE_ERROR);
}

/*
 * Freed exchanges kept for the next streams: an exchange is too large for
 * glibc's per-thread cache, and taking one from the main heap and giving it
 * back cost about 2 % of a small request's instructions.
 */
static struct freelist ex_cache = FREELIST_INIT(64);

void
exchange_cache_free(void)
{
	freelist_drain(&ex_cache, sizeof(struct exchange));
}

size_t
exchange_cached(void)
{
	return ex_cache.n;
}

size_t
exchange_response_chunks(void)
{
	return mem_chunks;
}

size_t
exchange_request_bytes(void)
{
	return req_total();
}

struct exchange *
exchange_new(struct qconn *qc, int64_t stream_id)
{
	struct exchange *ex;

	if ((ex = freelist_get(&ex_cache, sizeof(*ex))) != NULL)
		memset(ex, 0, sizeof(*ex));
	else if ((ex = calloc(1, sizeof(*ex))) == NULL)
		return NULL;
	ex->qc = qc;
	ex->gen = generation_ref(qc->srv->gen);
	ex->stream_id = stream_id;
	ex->waiter.wake = ex_woken;
	ex->backend_time = -1;
	ex->started = mono_now();
	ex->wall_start = ev_time();
	ex->early = qc->rx_0rtt;
	qc->streams_total++;
	request_init(&ex->req, ex_cfg(ex)->max_header_size);
	bufq_init(&ex->hold);
	bufq_init(&ex->out);
	bufq_init(&ex->stage);
	bufq_init(&ex->trailers);
	bufq_init(&ex->resp_body);
	bufq_init(&ex->resp_trailers);
	bufq_count(&ex->resp_body, &mem_chunks);
	bufq_count(&ex->resp_trailers, &mem_chunks);
	bufq_count(&ex->hold, &req_chunks);
	bufq_count(&ex->out, &req_chunks);
	bufq_count(&ex->stage, &req_chunks);
	bufq_count(&ex->trailers, &req_chunks);
	/*
	 * The client has idle_timeout to send the rest of the head, and as
	 * long between parts of a body held here (EX_HOLD): the connection
	 * is kept alive while requests are open (qconn_keep_alive), so
	 * nothing else would end a request the client stopped sending.
	 */
	ex_arm_timer(ex, ex_cfg(ex)->idle_timeout);
	LIST_INSERT_HEAD(&qc->exchanges, ex, entry);
	qc->nexchanges++;
	if (qc->nworking++ == 0)
		qconn_keep_alive(qc, true);
	stats.streams_current++;
	stats.streams_total++;
	return ex;
}

/*
 * One field line of the head. Eviction waits for the end of the loop
 * iteration (ex_req_evict), but QPACK lets a datagram name fields of
 * kilobytes in a byte each, for as many streams as it holds frames: a
 * turn's datagrams could take request memory far past its limit. So a
 * head that grows while the total is past request_buffer_total, on a
 * connection holding its share of it or more (the limit divided among
 * the connections holding any), is refused there and then: it keeps
 * nothing, takes no more fields, and its stream is reset with
 * H3_REQUEST_REJECTED on the next iteration (ex_timer_cb), out of
 * nghttp3's call. Connections below their share may still reach it: all
 * of them together, about the limit once more, and a head's buffer each.
 *
 * Every field of the stream's field sections, trailers too
 * (exchange_trailer), counts as SETTINGS_MAX_FIELD_SECTION_SIZE does: a
 * byte of QPACK can name a field of kilobytes again, and nghttp3 checks
 * each field it decodes, so a client could make the loop check gigabytes
 * for a megabyte sent. Past twice max_header_size (a head and trailers
 * each at the limit) the answer is false: the connection is to be closed.
 */
static bool
ex_field_seen(struct exchange *ex, size_t namelen, size_t valuelen)
{
	ex->fields_seen += field_line_size(namelen, valuelen);
	return ex->fields_seen <= 2 * (uint64_t)ex_cfg(ex)->max_header_size;
}

/*
 * Whether request memory is past request_buffer_total with the
 * exchange's connection holding its share of it or more (the limit
 * divided among the connections holding any).
 */
static bool
ex_req_over_share(const struct exchange *ex)
{
	size_t limit = ex->qc->srv->gen->cfg->request_buffer_total;

	return req_total() > limit && ex->qc->req_bytes * req_conns >= limit;
}

bool
exchange_field(struct exchange *ex, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen)
{
	if (!ex_field_seen(ex, namelen, valuelen))
		return false;
	if (ex->state != EX_HEADERS || ex->head_refused)
		return true;
	(void)request_add(&ex->req, name, namelen, value, valuelen);
	if (request_heap(&ex->req) == ex->head_counted)
		return true;
	ex_req_update(ex);
	if (!ex_req_over_share(ex))
		return true;
	ex->head_refused = true;
	ex->head_trimmed = true;	/* to nothing: no log line shows it */
	request_compact(&ex->req, 0, 0, 0);
	ex_req_update(ex);
	ex_arm_timer(ex, 0.);
	return true;
}

/* Whole seconds until a budget of rate a second has a unit (Retry-After). */
static unsigned int
rate_wait(double budget, double rate)
{
	double wait = (1. - budget) / rate;

	return wait < 1 ? 1 : wait > 86400 ? 86400 :
	    (unsigned int)wait + (wait > (unsigned int)wait);
}

/*
 * One request from a budget of rate a second, up to burst (0: a second's
 * worth), full at its first (*at 0). If there is none, *after is how many
 * whole seconds to wait for the next.
 */
static bool
rate_take(double *budget, double *at, double now, double rate,
    uint64_t burst_cfg, unsigned int *after)
{
	double burst = burst_cfg > 0 ? (double)burst_cfg : rate > 1 ? rate : 1;

	if (*at == 0) {
		*budget = burst;
		*at = now;
	}
	if (bucket_take(budget, at, now, rate, burst))
		return true;
	*after = rate_wait(*budget, rate);
	return false;
}

/*
 * max_request_rate_per_client: whether the connection's client may make
 * one more request now; *after as rate_take's.
 */
static bool
client_may_request(const struct exchange *ex, unsigned int *after)
{
	const struct config *cfg = ex_cfg(ex);
	struct client *c = ex->qc->client;

	if (cfg->request_rate <= 0 || c == NULL)
		return true;
	return rate_take(&c->req_budget, &c->req_at, ev_now(ex_loop(ex)),
	    cfg->request_rate, cfg->request_burst, after);
}

/* A route's max_request_rate: whether it takes one more request now. */
static bool
route_may_request(const struct exchange *ex, unsigned int *after)
{
	const struct config_route *r = ex->route;
	struct route_stats *rs;

	if (r->request_rate <= 0)
		return true;
	rs = ex->gen->routes[r - ex_cfg(ex)->routes];
	if (rate_take(&rs->rate_budget, &rs->rate_at, ev_now(ex_loop(ex)),
	    r->request_rate, r->request_burst, after))
		return true;
	rs->rate_limited++;
	return false;
}

/* The route's read_timeout, or its backend's. */
static double
ex_read_timeout(const struct exchange *ex)
{
	return ex->route->read_timeout > 0 ? ex->route->read_timeout :
	    upstream_backend(ex_pools(ex), ex->backend)->read_timeout;
}

/* The route's tunnel_timeout, or its backend's. */
static double
ex_tunnel_timeout(const struct exchange *ex)
{
	return ex->route->tunnel_timeout > 0 ? ex->route->tunnel_timeout :
	    upstream_backend(ex_pools(ex), ex->backend)->tunnel_timeout;
}

/* balance = client_hash: the client's (its address, or its /64) */
static uint64_t
ex_client_hash(const struct exchange *ex)
{
	uint8_t key[CLIENT_KEYLEN];

	if (upstream_backend(ex_pools(ex), ex->backend)->balance !=
	    CONFIG_BALANCE_CLIENT_HASH)
		return 0;
	if (!client_key(&ex->qc->proven, key))
		return 0;
	return upstream_client_hash(key, sizeof(key));
}

/*
 * For the combined access log: the request's Referer and User-Agent, the
 * first of each, cut to EX_AGENT_MAX bytes.
 */
static void
ex_keep_agent(struct exchange *ex)
{
	const char *v;

	if ((v = request_field(&ex->req, "referer")) != NULL)
		ex->referer = strndup(v, EX_AGENT_MAX);
	if ((v = request_field(&ex->req, "user-agent")) != NULL)
		ex->user_agent = strndup(v, EX_AGENT_MAX);
}

/* What strip_prefix takes off the request's path: 0 without it. */
static size_t
ex_strip_len(const struct exchange *ex)
{
	const struct config_route *r = ex->route;
	const char *path;
	size_t len;
	ssize_t n;

	if (!r->strip_prefix)
		return 0;
	path = request_path(&ex->req, &len);
	n = route_prefix_span(r->path_prefix, path, len);
	return n > 0 ? (size_t)n : 0;
}

/*
 * A route's return or redirect: qproxy answers, its set_response_header
 * on the answer, and the request goes no further.
 */
static void
ex_route_answer(struct exchange *ex, const char *host, size_t hostlen)
{
	const struct config_route *r = ex->route;
	struct answer a = { .status = r->answer, .set = &r->set_response };
	const char *uri;
	char *loc = NULL;
	size_t urilen;
	bool slash;

	stats.requests_answered++;
	if (r->redirect) {
		uri = request_sent_path(&ex->req, ex_strip_len(ex), &urilen,
		    &slash);
		if ((loc = route_location(r, host, hostlen, slash, uri, urilen,
		    &a.locationlen)) == NULL) {
			stats.requests_reset++;
			ex_reset(ex, NGHTTP3_H3_INTERNAL_ERROR);
			return;
		}
		a.location = loc;
		a.body = "";
	} else if (r->answer_text != NULL) {
		a.body = r->answer_text;
		a.bodylen = strlen(r->answer_text);
	}
	ex_answer(ex, &a);
	free(loc);
}

struct auth_ask {
	struct exchange	*ex;
	bool		 client_spent;	/* its client's budget had none */
	unsigned int	 after;		/* then, seconds until it has */
};

/*
 * auth_check's budget: the process's password checks, one at a time: the
 * loop's time stands still within a turn, so a turn makes one check at
 * most, and the clients' other work goes on between two. Of those, each
 * client's own (auth_check_rate_per_client), so that one client sending
 * passwords does not take every check and keep the others' users out.
 */
static bool
auth_may_check(void *arg)
{
	static double budget, at;
	struct auth_ask *ask = arg;
	const struct config *cfg = ex_cfg(ask->ex);
	struct client *c = ask->ex->qc->client;
	double now = ev_now(ex_loop(ask->ex));

	if (c != NULL && !bucket_fill(&c->auth_budget, &c->auth_at, now,
	    cfg->auth_check_rate_client, 1)) {
		ask->client_spent = true;
		ask->after = rate_wait(c->auth_budget,
		    cfg->auth_check_rate_client);
		return false;
	}
	if (!bucket_fill(&budget, &at, now, cfg->auth_check_rate, 1))
		return false;
	budget -= 1.;
	if (c != NULL)
		c->auth_budget -= 1.;
	return true;
}

/*
 * A route's auth_basic_file: whether the request may go on. If not, it
 * has its answer: 401 with the route's realm, or, when its password could
 * not be checked now, 429 if its client's checks were spent, else 503.
 */
static bool
ex_authorized(struct exchange *ex)
{
	const struct config_route *r = ex->route;
	struct answer a = { .status = 401 };
	struct auth_ask ask = { .ex = ex };
	char challenge[200];
	bool checked = false;
	enum auth_result res = AUTH_FAIL;

	/* two would leave the backend to choose which one it believes */
	if (request_field_count(&ex->req, "authorization") <= 1)
		res = auth_check(r->auth, request_field(&ex->req,
		    "authorization"), auth_may_check, &ask, &checked,
		    &ex->user);
	switch (res) {
	case AUTH_PASS:
		stats.auth_passed++;
		stats.auth_checks += checked;
		return true;
	case AUTH_BUSY:
		if (ask.client_spent) {
			stats.auth_client_throttled++;
			ex_respond_after(ex, 429, ask.after);
		} else {
			stats.auth_throttled++;
			ex_respond_after(ex, 503, 1);
		}
		return false;
	default:
		stats.auth_failed++;
		stats.auth_checks += checked;
		snprintf(challenge, sizeof(challenge),
		    "Basic realm=\"%s\", charset=\"UTF-8\"", r->auth_realm);
		a.challenge = challenge;
		ex_answer(ex, &a);
		return false;
	}
}

/* Whether the request's Accept-Encoding fields take gzip (compress.h). */
static bool
ex_accepts_gzip(const struct exchange *ex)
{
	const char *v;
	size_t i = 0;
	int gzip = -1, star = -1;

	while ((v = request_field_next(&ex->req, "accept-encoding", &i)) !=
	    NULL)
		compress_accept_value(v, &gzip, &star);
	return compress_accept_result(gzip, star);
}

/* The request's listener; NULL when a reload took its address away. */
static const struct config_listener *
ex_listener(const struct exchange *ex)
{
	return ex->qc->sock->listener != NULL ? ex->qc->sock->listener->cfg :
	    NULL;
}

/* Whether this request's method may be served from early data. */
static bool
early_method_allowed(const struct exchange *ex)
{
	const struct config_listener *lc = ex_listener(ex);
	const char *allowed = lc != NULL && lc->early_data_methods != NULL ?
	    lc->early_data_methods : " GET HEAD OPTIONS ";

	return request_methods_in(&ex->req, allowed);
}

/*
 * client_cert_header: the field its backend is told the client's
 * certificate in, which no client may send. A listener a reload took away
 * has none: the first listener's of the configuration stands in (they
 * name one field).
 */
static const char *
ex_cert_header(const struct exchange *ex)
{
	const struct config_listener *lc = ex_listener(ex);
	const struct config *cfg = ex_cfg(ex);

	if (lc != NULL)
		return lc->client_cert_header;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].client_cert_header != NULL)
			return cfg->listeners[i].client_cert_header;
	return NULL;
}

/*
 * A connection made before a reload gave its listener client_ca (with
 * client_verify = require) showed no certificate: it is sent to make a
 * new one, which will (RFC 9110 15.5.20).
 */
static bool
ex_client_cert_missing(const struct exchange *ex)
{
	const struct config_listener *lc = ex_listener(ex);

	return lc != NULL && lc->client_ca != NULL &&
	    lc->client_verify == CONFIG_CLIENT_REQUIRE &&
	    ex->qc->tls.peer == NULL;
}

/*
 * A certificate verified against client_ca and client_crl that a reload
 * has changed since (a CA no longer trusted, a certificate revoked), or on
 * a listener a reload took away: the connection is sent to make a new one,
 * verified against what is in force now, rather than its backend told of
 * one that may no longer pass (or, in another listener's field, under CAs
 * that never issued it).
 */
static bool
ex_client_cert_stale(const struct exchange *ex)
{
	const struct listener *l = ex->qc->sock->listener;

	return ex->qc->tls.peer != NULL && (l == NULL ||
	    !tls_ctx_same_client_ca(ex->qc->tls.ctx, l->tls));
}

void
exchange_headers_end(struct exchange *ex, bool fin)
{
	const struct config_route *route;
	const char *authority, *path, *host;
	char hbuf[INET6_ADDRSTRLEN];
	size_t alen, plen, hostlen;
	unsigned int after;

	if (ex->state != EX_HEADERS || ex->head_refused)
		return;	/* a head refused (exchange_field) */
	stats.requests_total++;
	ex->head_seen = true;
	if (ex_cfg(ex)->request_id_header != NULL)
		ex_new_id(ex->id);
	ex->req_fin = fin;
	if (access_log_combined())
		ex_keep_agent(ex);
	if (request_finish(&ex->req, fin) == -1) {
		switch (ex->req.error) {
		case REQ_TOO_LARGE:
			stats.headers_too_large++;
			ex_respond(ex, 431);
			break;
		case REQ_BAD:
			ex_respond(ex, 400);
			break;
		case REQ_NOT_IMPLEMENTED:
			ex_respond(ex, 501);
			break;
		default:
			ex_malformed(ex);
			break;
		}
		return;
	}
	ex->ws = (ex->req.flags & REQ_F_WEBSOCKET) != 0;
	/*
	 * The client's allowance is its address's: in 0-RTT from an address
	 * no token proved, anyone may have written it, and spent another's
	 * allowance with requests it never hears answered. The client asks
	 * again once it has proven it (RFC 8470).
	 */
	if (ex_cfg(ex)->request_rate > 0 && ex->qc->unvalidated) {
		stats.early_data_refused++;
		ex_respond(ex, 425);
		return;
	}
	if (!client_may_request(ex, &after)) {
		stats.requests_rate_limited++;
		ex_respond_after(ex, 429, after);
		return;
	}
	authority = request_authority(&ex->req, &alen);
	path = request_path(&ex->req, &plen);
	route_host(authority, alen, hbuf, sizeof(hbuf),
	    &host, &hostlen);
	if (!tls_conn_may_serve(&ex->qc->tls, host, hostlen) ||
	    ex_client_cert_missing(ex) || ex_client_cert_stale(ex)) {
		stats.requests_misdirected++;
		ex_respond(ex, 421);
		return;
	}
	if ((route = route_match_host(ex_cfg(ex), host, hostlen, path,
	    plen, &ex->req)) == NULL) {
		ex_respond(ex, 404);
		return;
	}
	ex->route = route;	/* its counts have the answers below too */
	if ((route->nacl > 0 &&
	    !route_allows(route, &ex->qc->proven.u.sa)) ||
	    (route->require_client_cert && ex->qc->tls.peer == NULL)) {
		stats.requests_forbidden++;
		ex_respond(ex, 403);
		return;
	}
	/*
	 * Before the handshake (0-RTT), an address no token proved is what
	 * the packets say, which anyone may write: the client asks again
	 * once it has proven it (RFC 8470). Password checks are counted by
	 * it too (auth_check_rate_per_client).
	 */
	if ((route->nacl > 0 || route->auth != NULL) && ex->qc->unvalidated) {
		stats.early_data_refused++;
		ex_respond(ex, 425);
		return;
	}
	/*
	 * an answer of the route's own is no request that may be replayed;
	 * a WebSocket's first bytes, in 0-RTT too, may be
	 */
	if (ex->early && route->answer == 0 && (ex->ws ||
	    !early_method_allowed(ex))) {
		/* RFC 8470 5.2: replayable; the client retries after the
		 * handshake */
		stats.early_data_refused++;
		ex_respond(ex, 425);
		return;
	}
	if (!route_may_request(ex, &after)) {
		stats.requests_rate_limited++;
		ex_respond_after(ex, 429, after);
		return;
	}
	if (route->auth != NULL && !ex_authorized(ex))
		return;
	if (route->answer != 0) {
		/* a 2xx would tell the client its tunnel is open */
		if (ex->ws && route->answer >= 200 && route->answer < 300)
			ex_respond(ex, 501);
		else
			ex_route_answer(ex, host, hostlen);
		return;
	}
	/*
	 * RFC 9110 7.6.2: an OPTIONS or TRACE with no hop left is answered
	 * here, as its final recipient: OPTIONS with 200, TRACE (whose answer
	 * would echo the request, cookies and all) with 501.
	 */
	if ((ex->req.flags & REQ_F_MAX_FORWARDS) && ex->req.max_forwards == 0) {
		ex_respond(ex, strcmp(request_method(&ex->req), "OPTIONS") == 0 ?
		    200 : 501);
		return;
	}
	/* a declared length too large goes nowhere, not even to a 100 */
	ex->body_limit = ex->ws ? 0 : route->max_body_size;
	if (ex->body_limit > 0 && ex->req.content_length > 0 &&
	    (uint64_t)ex->req.content_length > ex->body_limit) {
		ex_body_too_large(ex);
		return;
	}
	if (ex->early)
		stats.early_data_requests++;
	ex->backend = route->backend;
	ex->gzip_ok = route->compress == CONFIG_COMPRESS_GZIP && !ex->ws &&
	    ex_accepts_gzip(ex);
	ex->state = EX_HOLD;
	if (ex->req.flags & REQ_F_EXPECT_CONTINUE && !fin && !ex->ws) {
		nghttp3_nv nv = { (uint8_t *)":status", (uint8_t *)"100", 7, 3,
		    NGHTTP3_NV_FLAG_NONE };

		/* qproxy buffers the body itself: invite it at once */
		if (h3_submit_info(ex->qc, ex->stream_id, &nv, 1) == 0) {
			ex->continue_sent = true;
			count_response(100);
		}
	}
	/* a WebSocket's bytes wait for its 101, not the other way round */
	if (fin || ex->ws)
		ex_start(ex);
}

/* Appends one chunk to out: its size line, the bytes, CRLF. */
static int
ex_put_chunk(struct exchange *ex, const uint8_t *data, size_t len,
    struct bufq *from)
{
	static const char hex[] = "0123456789abcdef";
	char line[2 * sizeof(size_t) + 2], *p = line + sizeof(line);
	size_t v = len;

	/* the chunk-size line: no printf */
	*--p = '\n';
	*--p = '\r';
	do
		*--p = hex[v & 0xf];
	while ((v >>= 4) != 0);
	if (bufq_append(&ex->out, p, (size_t)(line + sizeof(line) - p)) == -1 ||
	    (from != NULL ? bufq_move(&ex->out, from) :
	    bufq_append(&ex->out, data, len)) == -1 ||
	    bufq_append(&ex->out, "\r\n", 2) == -1)
		return -1;
	return 0;
}

/* The staged pieces go out as one chunk. 0, or -1 when out of memory. */
static int
ex_stage_flush(struct exchange *ex)
{
	if (ex->stage.len == 0 || ex->framing != REQ_BODY_CHUNKED)
		return 0;
	return ex_put_chunk(ex, NULL, ex->stage.len, &ex->stage);
}

/*
 * The end of a chunked body: the staged pieces, the last chunk, and the
 * trailer section (RFC 9112 7.1.2), the client's trailers kept for it.
 * 0, or -1 when out of memory.
 */
static int
ex_chunked_end(struct exchange *ex)
{
	if (ex_stage_flush(ex) == -1 ||
	    bufq_append(&ex->out, "0\r\n", 3) == -1 ||
	    bufq_move(&ex->out, &ex->trailers) == -1 ||
	    bufq_append(&ex->out, "\r\n", 2) == -1)
		return -1;
	return 0;
}

/*
 * Request body bytes for the backend. Chunked, a piece smaller than
 * EX_CHUNK_MIN waits in stage for more, up to the next write: a chunk per
 * DATA frame of one byte cost six bytes in out for each byte of the
 * client's window.
 *
 * By the client's Content-Length, the body's last byte waits in stage for
 * the end of the stream: a body that runs past its length is malformed
 * (RFC 9114 4.1.2), and, had its first Content-Length bytes gone, the
 * backend would have had a whole request that must not reach it.
 */
static int
ex_append_body(struct exchange *ex, const uint8_t *data, size_t len)
{
	uint64_t end = ex->body_queued + len;

	ex->body_queued = end;
	if (ex->framing != REQ_BODY_CHUNKED) {
		if (len > 0 && !ex->req_fin && ex->req.content_length >= 0 &&
		    end == (uint64_t)ex->req.content_length)
			return bufq_append(&ex->out, data, len - 1) == -1 ||
			    bufq_append(&ex->stage, data + len - 1, 1) == -1 ?
			    -1 : 0;
		return bufq_append(&ex->out, data, len);
	}
	if (len < EX_CHUNK_MIN) {
		if (bufq_append(&ex->stage, data, len) == -1)
			return -1;
		return ex->stage.len < EX_CHUNK_MIN ? 0 : ex_stage_flush(ex);
	}
	if (ex_stage_flush(ex) == -1)
		return -1;
	return ex_put_chunk(ex, data, len, NULL);
}

/* Bytes for the backend: written at the end of the loop's turn. */
static void
ex_queue_write(struct exchange *ex)
{
	if (ex->state == EX_FORWARD && !ex->write_queued) {
		ex->write_queued = true;
		TAILQ_INSERT_TAIL(&write_queue, ex, write_entry);
	}
}

static void
ex_body(struct exchange *ex, const uint8_t *data, size_t len)
{
	ex->body_received += len;
	ex->uncredited += len;
	/* the body is longer than what was held when it went on */
	if (ex->hold_filled && len > 0) {
		ex->hold_filled = false;
		stats.requests_bodies_streamed++;
	}
	switch (ex->state) {
	case EX_HEADERS:
	case EX_DONE:
		ex_credit(ex, 0);
		return;
	default:
		break;
	}
	if (request_check_body(&ex->req, ex->body_received, false) == -1) {
		ex_malformed(ex);
		return;
	}
	if (ex->body_limit > 0 && ex->body_received > ex->body_limit) {
		ex_body_too_large(ex);
		return;
	}
	if (ex->state == EX_HOLD) {
		uint64_t window = ex->qc->gen->cfg->stream_window / 2;
		uint64_t hold = upstream_backend(ex_pools(ex),
		    ex->backend)->request_buffer;

		if (bufq_append(&ex->hold, data, len) == -1) {
			ex_reset_nomem(ex);
			return;
		}
		ev_timer_again(ex_loop(ex), &ex->timer);
		/*
		 * Past half the stream window the client may be waiting for
		 * credit (frame headers use the window too, and ngtcp2 grants
		 * credit in steps): forward now, or both sides would wait. The
		 * window is the connection's, of the configuration it began
		 * under, whatever a reload made the exchange's. A backend's
		 * request_buffer_size holds more: the client has credit for
		 * what is held, and is a window ahead at most, so a body of
		 * just that size waits for its end and goes with its length.
		 * A body is counted as streamed once it is known to be longer
		 * than what was held (its last byte and the FIN may come
		 * apart).
		 */
		if (hold > window) {
			ex_credit(ex, 0);
			if (ex->hold.len > hold) {
				stats.requests_bodies_streamed++;
				ex_start(ex);
			}
			return;
		}
		if (ex->hold.len < window)
			return;
		if (ex->hold.len > window)
			stats.requests_bodies_streamed++;
		else
			ex->hold_filled = true;
		ex_start(ex);
		return;
	}
	if (ex->req_dropped) {
		/* the backend's side is shut: the rest is read and dropped */
		ex_credit(ex, 0);
		return;
	}
	/*
	 * A WebSocket's bytes before its 101 wait, uncredited: a backend
	 * that refuses the upgrade would read them as its next request.
	 */
	if (ex->ws && !ex->ws_open) {
		if (bufq_append(&ex->hold, data, len) == -1)
			ex_reset_nomem(ex);
		return;
	}
	if (ex_append_body(ex, data, len) == -1) {
		ex_reset_nomem(ex);
		return;
	}
	/* a tunnel is idle when neither side sends */
	if (ex->ws_open)
		ev_timer_again(ex_loop(ex), &ex->timer);
	ex_queue_write(ex);
}

void
exchange_body(struct exchange *ex, const uint8_t *data, size_t len)
{
	ex_body(ex, data, len);
	ex_req_update(ex);
}

void
exchange_flush(void)
{
	struct exchange *ex;

	ex_mem_flush();
again:
	while ((ex = TAILQ_FIRST(&ready_queue)) != NULL) {
		TAILQ_REMOVE(&ready_queue, ex, ready_entry);
		ex->ready = false;
		ex->woken = true;
		ex->attempt = 0;
		ex_try_server(ex);
		ex->woken = false;
		/*
		 * Answered without taking the room it was woken for (a 502
		 * from a refusing Unix socket, say): the next one gets it;
		 * but not when descriptors ran out, which would answer the
		 * whole line 503 at once. A connection that closes wakes it.
		 */
		if (ex->uc == NULL && !ex->waiter.queued && !ex->no_fd)
			upstream_wake(ex_pools(ex), ex->backend);
	}
	while ((ex = TAILQ_FIRST(&write_queue)) != NULL) {
		TAILQ_REMOVE(&write_queue, ex, write_entry);
		ex->write_queued = false;
		if (ex->state == EX_FORWARD && ex->uc != NULL)
			ex_write(ex);
	}
	/* a stream given up may leave room at its backend for the next */
	if (ex_req_evict() && !TAILQ_EMPTY(&ready_queue))
		goto again;
}

static void
ex_body_end(struct exchange *ex)
{
	if (ex->state == EX_HEADERS || ex->state == EX_DONE) {
		ex->req_fin = true;
		return;
	}
	if (request_check_body(&ex->req, ex->body_received, true) == -1) {
		ex_malformed(ex);
		return;
	}
	ex->req_fin = true;
	if (ex->state == EX_HOLD) {
		ex_start(ex);
		return;
	}
	if (ex->req_dropped)
		return;		/* the backend's side is shut already */
	if (ex->framing == REQ_BODY_CHUNKED ? ex_chunked_end(ex) == -1 :
	    bufq_move(&ex->out, &ex->stage) == -1) {
		ex_reset_nomem(ex);
		return;
	}
	if (ex->state == EX_FORWARD) {
		/*
		 * The request is whole: the backend's read_timeout runs now,
		 * not the client's idle_timeout that ex_write may have set
		 * when the backend had taken all but the FIN.
		 */
		if (!ex->head_done)
			ex_arm_timer(ex, ex_read_timeout(ex));
		ex_write(ex);
	}
}

void
exchange_body_end(struct exchange *ex)
{
	ex_body_end(ex);
	ex_req_update(ex);
}

/* A trailer section found wrong: nothing more of it is kept. */
static void
ex_trailers_fail(struct exchange *ex, enum ex_trailers fault,
    const char *why)
{
	ex->trailers_fault = fault;
	if (why != NULL)
		ex->req.why = why;
	bufq_free(&ex->trailers);
	ex_req_update(ex);
}

/*
 * One field line of the request's trailer section (RFC 9114 4.1). Those
 * request_trailer passes are kept, as trailer lines of HTTP/1.1, for a
 * body that goes to the backend chunked; one sent with the client's
 * Content-Length can carry none, and they are dropped. Every field is
 * checked and counted, whatever becomes of it: the section, as the head,
 * may be at most max_header_size, and what it keeps is request memory,
 * bounded as the head's is (exchange_field). A fault is acted on at the
 * section's end (exchange_trailers_end), out of QPACK's decoding.
 */
bool
exchange_trailer(struct exchange *ex, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen)
{
	const struct config_headers *set;
	const char *why, *idh;

	if (!ex_field_seen(ex, namelen, valuelen))
		return false;
	if (ex->state == EX_HEADERS || ex->state == EX_DONE ||
	    ex->trailers_fault != EX_TRAILERS_OK)
		return true;
	ex->trailers_size += field_line_size(namelen, valuelen);
	if (ex->trailers_size > ex_cfg(ex)->max_header_size) {
		ex_trailers_fail(ex, EX_TRAILERS_TOO_LARGE,
		    "trailer section too large");
		return true;
	}
	switch (request_trailer(name, namelen, value, valuelen, &why)) {
	case REQ_TRAILER_MALFORMED:
		ex_trailers_fail(ex, EX_TRAILERS_MALFORMED, why);
		return true;
	case REQ_TRAILER_DROP:
		return true;
	case REQ_TRAILER_PASS:
		break;
	}
	/* the backend's side is shut */
	if (ex->req_dropped)
		return true;
	/* no chunked body to carry it: counted once a request */
	if (ex->state == EX_HOLD ? ex->req.content_length >= 0 :
	    ex->framing != REQ_BODY_CHUNKED) {
		if (!ex->trailers_lost)
			stats.requests_trailers_dropped++;
		ex->trailers_lost = true;
		return true;
	}
	/* the fields the head takes from qproxy (request_write_http1) */
	set = &ex->route->set_request;
	idh = ex->id[0] != '\0' ? ex_cfg(ex)->request_id_header : NULL;
	if ((set->n > 0 && header_is_set(set, (const char *)name, namelen)) ||
	    (idh != NULL && namelen == strlen(idh) &&
	    memcmp(name, idh, namelen) == 0) ||
	    request_name_is(ex_cert_header(ex), (const char *)name, namelen))
		return true;
	if (bufq_append(&ex->trailers, name, namelen) == -1 ||
	    bufq_append(&ex->trailers, ": ", 2) == -1 ||
	    bufq_append(&ex->trailers, value, valuelen) == -1 ||
	    bufq_append(&ex->trailers, "\r\n", 2) == -1) {
		ex_trailers_fail(ex, EX_TRAILERS_NO_MEMORY, NULL);
		return true;
	}
	ex_req_update(ex);
	if (ex_req_over_share(ex))
		ex_trailers_fail(ex, EX_TRAILERS_NO_ROOM, NULL);
	return true;
}

void
exchange_trailers_end(struct exchange *ex)
{
	if (ex->state == EX_HEADERS || ex->state == EX_DONE)
		return;
	switch (ex->trailers_fault) {
	case EX_TRAILERS_OK:
		return;
	case EX_TRAILERS_MALFORMED:
		ex_malformed(ex);
		break;
	case EX_TRAILERS_TOO_LARGE:
		/* as a head too large; as a body too large once answered */
		stats.headers_too_large++;
		if (ex->resp_submitted) {
			stats.requests_reset++;
			ex_reset(ex, NGHTTP3_H3_REQUEST_CANCELLED);
		} else
			ex_respond(ex, 431);
		break;
	case EX_TRAILERS_NO_ROOM:
		ex_req_give_up(ex);
		break;
	case EX_TRAILERS_NO_MEMORY:
		ex_reset_nomem(ex);
		break;
	}
	ex_req_update(ex);
}

void
exchange_malformed(struct exchange *ex)
{
	if (ex->state == EX_DONE) {
		h3_reset_stream(ex->qc, ex->stream_id,
		    NGHTTP3_H3_MESSAGE_ERROR);
		return;
	}
	ex->req.why = "body does not match content-length";
	ex_malformed(ex);
}

/* Whether the stream ending now would cut the exchange short. */
static bool
ex_unfinished(const struct exchange *ex)
{
	return ex->state != EX_DONE && !(ex->resp_eof &&
	    ex->resp_body.len == 0);
}

bool
exchange_cut_short(struct exchange *ex)
{
	if (!ex_unfinished(ex))
		return false;
	/* counted only: the stream and the exchange go right after */
	if (ex->head_seen)
		stats.requests_reset++;
	ex->cut_short = true;
	return true;
}

bool
exchange_charge_cancel(struct exchange *ex)
{
	if (ex->cancel_charged)
		return false;
	ex->cancel_charged = true;
	return true;
}

void
exchange_client_reset(struct exchange *ex)
{
	/* The request will never be complete: the backend must not wait. */
	if (ex->state != EX_DONE && !ex->req_fin) {
		/* one whose head never came is no request in the counters */
		if (ex->head_seen)
			stats.requests_reset++;
		ex_reset(ex, NGHTTP3_H3_REQUEST_CANCELLED);
	}
}

bool
exchange_client_stopped(struct exchange *ex)
{
	/*
	 * A tunnel's backend bytes have nowhere to go: its connection is
	 * closed (RFC 9114 4.4), and the stream reset as for the client's
	 * reset (RFC 9220 3). Another request's stream closes once its
	 * request is whole (exchange_cut_short).
	 */
	if (!ex->ws_open || ex->state == EX_DONE)
		return false;
	stats.requests_reset++;
	ex_reset(ex, NGHTTP3_H3_REQUEST_CANCELLED);
	return true;
}

/*
 * Whether ex_retry could still send the request again, on a pooled
 * connection that gave no response byte: not with a body, not twice.
 */
static bool
ex_may_retry(const struct exchange *ex)
{
	return !ex->retried && ex->framing == REQ_BODY_NONE &&
	    (ex->req.flags & REQ_F_IDEMPOTENT);
}

/*
 * Builds the backend request head and picks the body's framing. Returns -1
 * when out of memory, with the stream reset.
 */
static int
ex_write_head(struct exchange *ex)
{
	struct request_forward fw;

	fw.client_addr = ex->qc->peer;
	fw.set = &ex->route->set_request;
	fw.id_name = ex->id[0] != '\0' ? ex_cfg(ex)->request_id_header : NULL;
	fw.id = ex->id;
	fw.cert_name = ex_cert_header(ex);
	fw.cert = ex->qc->tls.peer != NULL ? ex->qc->tls.peer->value : NULL;
	fw.path_skip = ex_strip_len(ex);
	/* a trusted proxy's word once its address is proven */
	fw.keep_forwarded = ex_cfg(ex)->ntrusted > 0 && !ex->qc->unvalidated &&
	    route_trusted_proxy(ex_cfg(ex), &ex->qc->proven.u.sa);
	fw.early_data = ex->early;
	fw.ws_key = NULL;
	if (ex->ws) {
		/* the tunnel's bytes follow the 101 as they are */
		if (ex->ws_key[0] == '\0')
			ws_key_new(ex->ws_key);
		fw.ws_key = ex->ws_key;
		fw.body_length = 0;
		fw.framing = REQ_BODY_NONE;
	} else if (ex->req_fin && ex->trailers.len > 0) {
		/*
		 * only a chunked body carries trailers (exchange_trailer kept
		 * them: the client sent no Content-Length)
		 */
		fw.body_length = 0;
		fw.framing = REQ_BODY_CHUNKED;
	} else if (ex->req_fin) {
		/* the whole body is here: its length is known */
		fw.body_length = ex->body_received;
		fw.framing = ex->body_received > 0 ||
		    ex->req.content_length >= 0 ||
		    (ex->req.flags & REQ_F_BODY_METHOD) ?
		    REQ_BODY_LENGTH : REQ_BODY_NONE;
	} else if (ex->req.content_length >= 0) {
		fw.body_length = (uint64_t)ex->req.content_length;
		fw.framing = REQ_BODY_LENGTH;
	} else {
		fw.body_length = 0;
		fw.framing = REQ_BODY_CHUNKED;
	}
	ex->framing = fw.framing;
	if (request_write_http1(&ex->req, &fw, &ex->out) == -1) {
		ex_reset_nomem(ex);
		return -1;
	}
	/* kept whole while it may go again, to this server or the next */
	if (!ex_may_retry(ex) && !(upstream_backend(ex_pools(ex),
	    ex->backend)->retry_any && ex->framing == REQ_BODY_NONE &&
	    (ex->req.flags & REQ_F_IDEMPOTENT)))
		ex_trim_head(ex);
	return 0;
}

/*
 * What was held goes on to out, as bytes of the body; -1 when out of
 * memory, with the stream reset.
 */
static int
ex_release_hold(struct exchange *ex)
{
	struct iovec iov[16];
	size_t n;

	while ((n = bufq_peek_unsent(&ex->hold, iov, 16)) > 0)
		for (size_t i = 0; i < n; i++) {
			if (ex_append_body(ex, iov[i].iov_base,
			    iov[i].iov_len) == -1) {
				ex_reset_nomem(ex);
				return -1;
			}
			bufq_drain(&ex->hold, iov[i].iov_len);
		}
	bufq_free(&ex->hold);
	return 0;
}

static void
ex_start(struct exchange *ex)
{
	if (ex_write_head(ex) == -1 || ex_release_hold(ex) == -1)
		return;
	if (ex->req_fin && ex->framing == REQ_BODY_CHUNKED &&
	    ex_chunked_end(ex) == -1) {
		ex_reset_nomem(ex);
		return;
	}
	ex->attempt = 0;
	ex_try_server(ex);
	ex_req_update(ex);
}

static void ex_io_cb(struct ev_loop *, ev_io *, int);
static void ex_timer_cb(struct ev_loop *, ev_timer *, int);

/*
 * The timer repeats: each read of the body restarts it (ev_timer_again,
 * which stops a timer without a repeat value), so that read_timeout
 * bounds the backend's silence mid-body as well.
 */
static void
ex_arm_timer(struct exchange *ex, double seconds)
{
	ev_timer_stop(ex_loop(ex), &ex->timer);
	ev_timer_init(&ex->timer, ex_timer_cb, seconds, seconds);
	ex->timer.data = ex;
	ex->client_clock = false;
	/* waiting for memory, the backend is not the one late: on resuming */
	if (!ex->mem_waiting)
		ev_timer_start(ex_loop(ex), &ex->timer);
}

static void
ex_attach(struct exchange *ex, struct upstream_conn *uc, bool reused)
{
	ex->uc = uc;
	ex->reused = reused;
	ex->resp_any = false;
	ex->read_full = false;
	ex->server->ctr->active++;
	ex->server->load->held++;
}

static void
ex_connected(struct exchange *ex)
{
	const struct config_backend *b =
	    upstream_backend(ex_pools(ex), ex->backend);

	ex->state = EX_FORWARD;
	/* up, unless its responses failed it: then a response tells */
	if (b->max_fails == 0 || ex->server->ctr->fails_in_row < b->max_fails)
		ex->server->ctr->state = UPSTREAM_UP;
	ex->forwarded = mono_now();
	ex_arm_timer(ex, ex_read_timeout(ex));
	ev_io_start(ex_loop(ex), &ex->uc->rio);
	ex_write(ex);
}

/*
 * The request is given to ex->server: on a pooled connection, or a new one
 * whether or not it connects, so that each of the server's failures is
 * one of its requests. Sent again to the same server (ex_resend), it is
 * still one; after a failure there, going back to it is another.
 */
static void
ex_count_request(struct exchange *ex)
{
	ex->given = ex->server;
	if (ex->counted != ex->server) {
		ex->server->ctr->requests++;
		ex->counted = ex->server;
	}
}

/* A connection to ex->server failed or timed out: closed and counted. */
static void
ex_connect_failed(struct exchange *ex, const char *why)
{
	static struct log_limit lim;

	/* the server is passed over, and its clients may get 502 or 504 */
	log_limited(&lim, LOG_LEVEL_WARN, "backend %s: connect: %s",
	    ex->server->cfg->text, why);
	stats.upstream_connect_failures++;
	ex->server->ctr->failures++;
	ex->counted = NULL;
	ex->server->ctr->state = UPSTREAM_DOWN;
	ex->server->ctr->down_since = mono_now();
	ex_upstream_close(ex, false);
}

/*
 * Sends the request to ex->server, on a pooled connection or a new one.
 * Returns -1 when the server refused the connection and 1 when it has
 * max_connections open (either way the caller tries the next one), else 0:
 * connecting, connected, or answered (502, 503).
 */
static int
ex_use_server(struct exchange *ex)
{
	const struct config_backend *b =
	    upstream_backend(ex_pools(ex), ex->backend);
	struct upstream_conn *uc;
	int err;

	/*
	 * A retry takes a new connection: the pool's may be stale. A request
	 * that may be retried trusts a pooled one more.
	 */
	if (!ex->retried && (uc = upstream_take_idle(ex->server,
	    !ex_may_retry(ex), ex_io_cb, ex)) != NULL) {
		ex_count_request(ex);
		ex_attach(ex, uc, true);
		ex_connected(ex);
		return 0;
	}
	if (upstream_full(ex->server))
		return 1;
	uc = upstream_connect(ex->server, ex_io_cb, ex);
	if (uc != NULL || (errno != EMFILE && errno != ENFILE))
		ex_count_request(ex);
	if (uc == NULL) {
		if (errno == EMFILE || errno == ENFILE) {
			static struct log_limit lim;

			/* qproxy's own limit: no fault of the server's */
			log_limited(&lim, LOG_LEVEL_WARN, "backend %s: no file "
			    "descriptor for a connection",
			    ex->server->cfg->text);
			stats.upstream_no_fd++;
			ex->no_fd = true;
			ex_respond(ex, 503);
			return 0;
		}
		err = errno;
		ex_connect_failed(ex, strerror(err));
		if (upstream_refused(err))
			return -1;
		ex_respond(ex, 502);
		return 0;
	}
	ex_attach(ex, uc, false);
	ex->state = EX_CONNECTING;
	ev_io_start(ex_loop(ex), &uc->wio);
	ex_arm_timer(ex, b->connect_timeout);
	return 0;
}

/*
 * Waits for room at the backend: each server has max_connections open. The
 * request body gathers as for a connect; connect_timeout bounds the wait,
 * from the coming into line. One woken that finds no room goes back to its
 * place (again) under the same deadline.
 */
static void
ex_queue(struct exchange *ex, bool again)
{
	if (!ex->waited) {
		ex->waited = true;
		stats.upstream_queued_total++;
	}
	if (!again)
		ex_arm_timer(ex, upstream_backend(ex_pools(ex),
		    ex->backend)->connect_timeout);
	ex->state = EX_CONNECTING;	/* with no connection: in line */
	upstream_wait(ex_pools(ex), ex->backend, &ex->waiter, again);
}

static void
ex_woken(struct upstream_waiter *w)
{
	struct exchange *ex = (struct exchange *)(void *)
	    ((char *)w - offsetof(struct exchange, waiter));

	ex->ready = true;
	TAILQ_INSERT_TAIL(&ready_queue, ex, ready_entry);
}

/*
 * Failover: a request that found a server full goes on only to servers
 * not passed over; with none left it waits for room at the full one,
 * which is known to answer, rather than try one known not to (and wait
 * out its connect_timeout).
 */
static int
ex_next_flags(const struct exchange *ex)
{
	return ex->saw_full ? UPSTREAM_NEXT_OPEN : 0;
}

/*
 * Connects to the next server, failing over while servers refuse or are
 * full; when none is left and one was full, the request waits in line for
 * room, rather than going to a server passed over (ex_next_flags).
 */
static void
ex_try_server(struct exchange *ex)
{
	size_t nservers;
	int rv;

	/*
	 * New requests go behind those already waiting; room there is now
	 * goes to the first in line (a wake lost on the way cannot leave
	 * the line stuck while requests come).
	 */
	if (ex->attempt == 0 && !ex->woken &&
	    upstream_has_waiters(ex_pools(ex), ex->backend)) {
		ex_queue(ex, false);
		if (upstream_has_room(ex_pools(ex), ex->backend))
			upstream_wake(ex_pools(ex), ex->backend);
		return;
	}
	/* the client's, as it was: its ranking of the servers holds */
	if (ex->attempt == 0) {
		ex->client_hash = ex_client_hash(ex);
		ex->tried = 0;
		ex->saw_full = false;
	}
	for (; ; ex->attempt++) {
		if (ex->attempt > 0)
			ex->attempt = upstream_next_attempt(ex_pools(ex),
			    ex->backend, ex->first_server, ex->attempt,
			    ex->tried, ex->client_hash,
			    ex_next_flags(ex) | UPSTREAM_NEXT_TAKE);
		ex->server = upstream_pick(ex_pools(ex), ex->backend,
		    &ex->first_server, ex->attempt, &nservers,
		    ex->client_hash);
		if (ex->attempt >= nservers) {
			if (ex->saw_full)	/* one woken keeps its place */
				ex_queue(ex, ex->woken);
			else if (upstream_all_disabled(ex_pools(ex),
			    ex->backend))
				ex_respond(ex, 503);	/* by qproxyctl */
			else
				ex_respond(ex, 502);
			return;
		}
		ex->tried |= UPSTREAM_TRIED(ex->attempt);
		if (ex->server->ctr->disabled)
			continue;
		if ((rv = ex_use_server(ex)) == 0)
			return;
		if (rv == 1)
			ex->saw_full = true;
	}
}

static void
ex_upstream_close(struct exchange *ex, bool reuse)
{
	ex_mem_unwait(ex);
	if (ex->uc == NULL)
		return;
	ex->server->ctr->active--;
	ex->server->load->held--;
	/* both stop or hand over the connection's watchers */
	if (reuse)
		upstream_release(ex->uc);
	else
		upstream_close(ex->uc);
	ex->uc = NULL;
	ex_own_free(ex);
	ex->rlen = ex->rcap = ex->rseen = 0;
	ex->uc_reset = false;
	ex->info_close = false;
}

/*
 * A pooled connection the backend closed before it answered: a keep-alive
 * connection may be closed at any moment, and the close can cross the
 * request (RFC 9112 9.3.1). The request goes again, once, on a new
 * connection when doing it twice cannot matter: an idempotent method and
 * no body (RFC 9110 9.2.2). Returns whether it did.
 */
static bool
ex_retry(struct exchange *ex)
{
	if (!ex->reused || ex->resp_any || !ex_may_retry(ex))
		return false;
	ex_resend(ex, "pooled connection closed before a response");
	return true;
}

/*
 * Whether the request has a server left to go on to (failover), or one
 * of those it took had no room: it waits for that (ex_try_server).
 */
static bool
ex_server_left(const struct exchange *ex)
{
	return ex->saw_full || upstream_next_attempt(ex_pools(ex),
	    ex->backend, ex->first_server, ex->attempt + 1, ex->tried,
	    ex->client_hash, ex_next_flags(ex)) <
	    upstream_nservers(ex_pools(ex), ex->backend);
}

/*
 * retry_on: whether a response that failed in a way the backend lists
 * (on) sends the request to the next server rather than an error to the
 * client: a request that may go twice (an idempotent method, no body),
 * nothing given the client yet (no 1xx), and a server left to try.
 */
static bool
ex_may_try_next(const struct exchange *ex, bool on)
{
	size_t n = upstream_nservers(ex_pools(ex), ex->backend);

	/* at most nservers - 1 hops, also across a wait for room (which
	   starts the order afresh) */
	return on && ex->framing == REQ_BODY_NONE &&
	    (ex->req.flags & REQ_F_IDEMPOTENT) && ex->ninfo == 0 &&
	    !ex->head_trimmed && ex->next_hops + 1 < n && ex_server_left(ex);
}

/* The server's response failed (why): the request goes to the next one. */
static void
ex_try_next(struct exchange *ex, const char *why)
{
	static struct log_limit lim;

	log_limited(&lim, LOG_LEVEL_INFO, "backend %s: %s; trying the next "
	    "server (retry_on)", ex->server->cfg->text, why);
	ex_server_failed(ex);
	stats.upstream_next_server++;
	ex_upstream_close(ex, false);
	bufq_free(&ex->out);
	bufq_free(&ex->stage);
	ex->req_written = false;
	ex->req_dropped = false;	/* a new connection takes it whole */
	ex->reusable = false;
	ex->next_hops++;
	ex->attempt++;
	if (ex_write_head(ex) == 0)
		ex_try_server(ex);
	ex_req_update(ex);
}

/* Sends the request again, once, on a new connection to the same server. */
static void
ex_resend(struct exchange *ex, const char *why)
{
	log_debug("backend %s: %s; sending the request again",
	    ex->server->cfg->text, why);
	stats.upstream_retried++;
	ex->retried = true;
	ex_upstream_close(ex, false);
	bufq_free(&ex->out);
	bufq_free(&ex->stage);
	ex->req_written = false;
	ex->req_dropped = false;
	ex->reusable = false;
	/* the same server: its stale connection says nothing of its health */
	if (ex_write_head(ex) == 0 && ex_use_server(ex) != 0) {
		ex->attempt++;
		ex_try_server(ex);
	}
	ex_req_update(ex);
}

/*
 * A tunnel's client ended its side and the backend took every byte of
 * it: the backend's socket gets the FIN (RFC 9220 3: the stream's FIN is
 * the TCP connection's); once the backend's side ended too, the exchange.
 */
static void
ex_ws_sent(struct exchange *ex)
{
	shutdown(ex->uc->fd, SHUT_WR);
	if (ex->resp_eof) {
		ex_upstream_close(ex, false);
		ex_finish(ex);
	}
}

static void
ex_write_out(struct exchange *ex)
{
	struct iovec iov[16];
	size_t cnt;
	ssize_t n;
	int err;

	if (ex->req_dropped)
		return;		/* a write failed: the backend takes no more */
	if (ex_stage_flush(ex) == -1) {
		ex_reset_nomem(ex);
		return;
	}

	while ((cnt = bufq_peek_unsent(&ex->out, iov, 16)) > 0) {
		n = writev(ex->uc->fd, iov, (int)cnt);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/*
				 * More of the body came while the client's
				 * clock ran: the backend's turn begins, with
				 * its read_timeout.
				 */
				if (ex->client_clock)
					ex_arm_timer(ex, ex_read_timeout(ex));
				ev_io_start(ex_loop(ex), &ex->uc->wio);
				return;
			}
			err = errno;
			log_debug("backend %s: write: %s",
			    ex->server->cfg->text, strerror(err));
			if (ex_retry(ex))
				return;
			/*
			 * A backend may answer early (413, 401) and reset the
			 * connection on the body it did not read (RFC 9112
			 * 9.6): its response is still in the socket, and read.
			 * A read that finds none answers 502 (ex_eof).
			 */
			ev_io_stop(ex_loop(ex), &ex->uc->wio);
			ex->reusable = false;
			ex->req_dropped = true;
			/*
			 * ECONNRESET: the reset came before any FIN (after
			 * one, Linux says EPIPE), and the read will find only
			 * the end: a body up to the close is cut (ex_eof).
			 */
			ex->uc_reset = err == ECONNRESET;
			bufq_free(&ex->out);
			bufq_free(&ex->stage);
			shutdown(ex->uc->fd, SHUT_WR);
			if (!ex->head_done)
				ev_io_start(ex_loop(ex), &ex->uc->rio);
			/* a tunnel whose backend had ended its side too */
			if (ex->ws_open && ex->resp_eof) {
				ex_upstream_close(ex, false);
				ex_finish(ex);
			}
			return;
		}
		bufq_drain(&ex->out, (size_t)n);
		ex_credit(ex, ex->out.len + ex->stage.len);
		if (ex->ws_open)
			stats.ws_bytes_to_backend += (uint64_t)n;
		/*
		 * read_timeout counts from the last byte the backend took;
		 * when that was all the client sent of an unfinished body,
		 * the client has idle_timeout to send more (ex_timer_cb).
		 * A WebSocket's backend owes its 101 meanwhile.
		 */
		if (!ex->head_done && !ex->req_fin && ex->out.len == 0 &&
		    !ex->ws) {
			ex_arm_timer(ex, ex_cfg(ex)->idle_timeout);
			ex->client_clock = true;
		} else if (!ex->head_done)
			ex_arm_timer(ex, ex_read_timeout(ex));
	}
	ev_io_stop(ex_loop(ex), &ex->uc->wio);
	if (ex->req_fin) {
		ex->req_written = true;
		if (ex->ws_open)
			ex_ws_sent(ex);
	}
}

static void
ex_write(struct exchange *ex)
{
	ex_write_out(ex);
	ex_req_update(ex);
}

/*
 * Whether a connection whose response ended where the last read did holds
 * nothing more. A read that took all it asked for (a body ending on the
 * read's boundary) may have left bytes in the socket: a second response or
 * garbage, which a request given the connection next (in this loop
 * iteration, before a poll could tell its idle watcher) would take for its
 * own response. A read that took less emptied the socket; ex_read_body's
 * probe asks one byte past the body.
 */
static bool
ex_nothing_after(struct exchange *ex)
{
	uint8_t next;
	ssize_t n;

	if (!ex->read_full || ex->uc == NULL)
		return true;
	n = recv(ex->uc->fd, &next, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0)
		ex_after_body(ex);
	return n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* The response is complete on the backend side. */
static void
ex_response_done(struct exchange *ex, bool clean)
{
	ex->server->ctr->fails_in_row = 0;
	ex->server->ctr->state = UPSTREAM_UP;
	ex->resp_eof = true;
	h3_resume(ex->qc, ex->stream_id);
	/*
	 * A tunnel whose backend ended its side first: the client's bytes
	 * still go to it, within tunnel_timeout, until the client's FIN
	 * (ex_ws_sent).
	 */
	if (ex->ws_open && !ex->req_written && !ex->req_dropped) {
		ev_io_stop(ex_loop(ex), &ex->uc->rio);
		return;
	}
	ev_timer_stop(ex_loop(ex), &ex->timer);
	/* A connection is reused only after a clean, complete exchange. */
	ex_upstream_close(ex, clean && ex->reusable && ex->req_written &&
	    ex->rlen == 0 && ex_nothing_after(ex));
	/* the rest of an upload the backend did not wait for is dropped */
	ex_finish(ex);
}

/* What the Connection fields of a response name, gathered once per head. */
#define EX_CONN_TOKENS	16

struct conn_tokens {
	size_t		 n;
	bool		 overflow;	/* more than fit: scan the fields */
	struct {
		const char	*p;
		size_t		 len;
	}		 t[EX_CONN_TOKENS];
};

static void
conn_tokens_collect(const struct http1_response *r, struct conn_tokens *ct)
{
	const char *p = NULL, *tok;
	size_t i = 0, len;

	ct->n = 0;
	ct->overflow = false;
	while (http1_connection_next(r, &i, &p, &tok, &len)) {
		if (ct->n == EX_CONN_TOKENS) {
			ct->overflow = true;
			return;
		}
		ct->t[ct->n].p = tok;
		ct->t[ct->n].len = len;
		ct->n++;
	}
}

/* RFC 9110 7.6.1 and 11.7.1: fields that end at this hop, by length. */
static bool
hop_by_hop_name(const char *name, size_t len)
{
	switch (len) {
	case 2:
		return strncasecmp(name, "te", 2) == 0;
	case 7:
		return strncasecmp(name, "upgrade", 7) == 0 ||
		    strncasecmp(name, "trailer", 7) == 0;
	case 10:
		return strncasecmp(name, "connection", 10) == 0 ||
		    strncasecmp(name, "keep-alive", 10) == 0;
	case 16:
		return strncasecmp(name, "proxy-connection", 16) == 0;
	case 17:
		return strncasecmp(name, "transfer-encoding", 17) == 0;
	case 18:
		return strncasecmp(name, "proxy-authenticate", 18) == 0;
	default:
		return false;
	}
}

static bool
hop_by_hop(const struct http1_response *r, const struct conn_tokens *ct,
    const char *name, size_t len)
{
	const char *p = NULL, *tok;
	size_t i = 0, toklen;

	if (hop_by_hop_name(name, len))
		return true;
	/* RFC 9110 7.6.1: and whatever Connection names */
	if (!ct->overflow) {
		for (i = 0; i < ct->n; i++)
			if (ct->t[i].len == len &&
			    strncasecmp(ct->t[i].p, name, len) == 0)
				return true;
		return false;
	}
	while (http1_connection_next(r, &i, &p, &tok, &toklen))
		if (toklen == len && strncasecmp(tok, name, len) == 0)
			return true;
	return false;
}

/*
 * The names a chunked response's Connection fields give, but those
 * hop_by_hop_name drops anyway, kept for its trailer section
 * (ex_submit_trailers): the head's fields are gone by then. A list "a,b"
 * into ex->resp_conn, NULL when there are none; at most the head's size.
 * -1 when out of memory.
 */
static int
ex_keep_conn_names(struct exchange *ex, const struct http1_response *r)
{
	const char *p, *tok;
	size_t i, len, total = 0, w = 0;

	free(ex->resp_conn);
	ex->resp_conn = NULL;
	if (r->framing != HTTP1_BODY_CHUNKED)
		return 0;
	for (int pass = 0; pass < 2; pass++) {
		for (i = 0, p = NULL; http1_connection_next(r, &i, &p, &tok, &len);) {
			if (hop_by_hop_name(tok, len) || (len == 5 &&
			    strncasecmp(tok, "close", 5) == 0))
				continue;
			if (pass == 0)
				total += len + 1;
			else {
				memcpy(ex->resp_conn + w, tok, len);
				w += len;
				ex->resp_conn[w++] = ',';
			}
		}
		if (total == 0)
			return 0;
		if (pass == 0 && (ex->resp_conn = malloc(total)) == NULL)
			return -1;
	}
	ex->resp_conn[w - 1] = '\0';
	return 0;
}

/* Whether the response head's Connection named this field (ex->resp_conn). */
static bool
ex_conn_named(const struct exchange *ex, const char *name, size_t len)
{
	const char *p = ex->resp_conn, *end, *tok;
	size_t toklen;

	if (p == NULL)
		return false;
	end = p + strlen(p);
	while (http1_options_next(&p, end, &tok, &toklen))
		if (toklen == len && strncasecmp(tok, name, len) == 0)
			return true;
	return false;
}

/* v in decimal at buf, without a NUL; its length (at most 20). */
static size_t
u64_decimal(char buf[20], uint64_t v)
{
	char tmp[20];
	size_t n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

/*
 * A field section over the client's SETTINGS_MAX_FIELD_SECTION_SIZE, not
 * sent: the client would likely refuse it (RFC 9114 4.2.2).
 */
static void
ex_over_client_limit(struct exchange *ex, const char *what, uint64_t size)
{
	static struct log_limit lim;

	log_limited(&lim, LOG_LEVEL_INFO, "%s: stream %lld: %s of %llu "
	    "bytes over the client's limit of %llu (its "
	    "SETTINGS_MAX_FIELD_SECTION_SIZE): not sent", ex->qc->peer,
	    (long long)ex->stream_id, what, (unsigned long long)size,
	    (unsigned long long)ex->qc->peer_fields_max);
}

/* Whether a Vary value lists Accept-Encoding or "*", in any case. */
static bool
ex_vary_lists_ae(const char *v, size_t len)
{
	const char *end = v + len, *opt;
	size_t n;

	while (http1_options_next(&v, end, &opt, &n))
		if ((n == 15 && strncasecmp(opt, "accept-encoding", 15) == 0) ||
		    (n == 1 && *opt == '*'))
			return true;
	return false;
}

/*
 * Whether the Vary the client gets lists Accept-Encoding (or "*"): the
 * route's set_response_header Vary when it sets one, which takes the
 * backend's place (an empty one removes it), else the backend's.
 */
static bool
ex_vary_listed(const struct http1_response *r,
    const struct config_headers *set)
{
	for (size_t i = 0; set != NULL && i < set->n; i++)
		if (set->v[i].namelen == 4 &&
		    memcmp(set->v[i].name, "vary", 4) == 0)
			return ex_vary_lists_ae(set->v[i].value,
			    set->v[i].valuelen);
	return http1_field_has(r, "vary", "accept-encoding") ||
	    http1_field_has(r, "vary", "*");
}

/*
 * Sends the response head (or an informational one) to the client; -2,
 * with nothing sent, when it is over the client's field section limit.
 */
static int
ex_submit_head(struct exchange *ex, const struct http1_response *r,
    bool informational)
{
	/* most heads fit on the stack; larger ones get the heap */
	nghttp3_nv nva_small[32], *nva = nva_small;
	char names_small[1024], *names = names_small, *np;
	char st[3], cl[20];
	/* the route's set_response_header, on the final response */
	const struct config_headers *set = !informational &&
	    ex->route->set_response.n > 0 ? &ex->route->set_response : NULL;
	/* and the request's ID, in place of the backend's field */
	const char *idh = !informational && ex->id[0] != '\0' ?
	    ex_cfg(ex)->request_id_header : NULL;
	size_t idlen = idh != NULL ? strlen(idh) : 0;
	struct conn_tokens ct;
	size_t n = 0, total = 0, max;
	uint64_t size;
	bool dated = informational || !ex_dated(set);
	/* gzip's (ex_compress_begin): of the final head only */
	bool gz = !informational && ex->gz != NULL;
	bool vary = !informational && ex->vary_ae &&
	    !ex_vary_listed(r, set);
	char etag_small[128], *etag = NULL;
	const char *date;
	int rv;

	for (size_t i = 0; i < r->nheaders; i++)
		total += r->headers[i].namelen;
	/*
	 * :status, the fields, at most one content-length, the set, the ID,
	 * a date, gzip's Content-Encoding and Vary
	 */
	max = r->nheaders + 6 + (set != NULL ? set->n : 0);
	if (max > sizeof(nva_small) / sizeof(nva_small[0]))
		nva = calloc(max, sizeof(*nva));
	if (total > sizeof(names_small))
		names = malloc(total);
	if (nva == NULL || names == NULL) {
		rv = -1;
		goto done;
	}
	/* 100 to 599: http1.c took three digits */
	st[0] = (char)('0' + r->status / 100);
	st[1] = (char)('0' + r->status / 10 % 10);
	st[2] = (char)('0' + r->status % 10);
	nva[n++] = (nghttp3_nv){ (uint8_t *)":status", (uint8_t *)st, 7, 3,
	    NGHTTP3_NV_FLAG_NONE };
	np = names;
	conn_tokens_collect(r, &ct);
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct http1_header *h = &r->headers[i];

		if (hop_by_hop(r, &ct, h->name, h->namelen))
			continue;
		/* passed on once, below, as one plain number */
		if (h->namelen == 14 &&
		    strncasecmp(h->name, "content-length", 14) == 0)
			continue;
		bytes_lower((uint8_t *)np, (const uint8_t *)h->name,
		    h->namelen);
		if (set != NULL && header_is_set(set, np, h->namelen))
			continue;
		if (idlen > 0 && h->namelen == idlen &&
		    memcmp(np, idh, idlen) == 0)
			continue;
		/* the 101's, for qproxy's key: the client sent none */
		if (ex->ws_upgrade && h->namelen == 20 &&
		    memcmp(np, "sec-websocket-accept", 20) == 0)
			continue;
		if (h->namelen == 4 && memcmp(np, "date", 4) == 0)
			dated = true;
		nva[n] = (nghttp3_nv){ (uint8_t *)np, (uint8_t *)(uintptr_t)
		    h->value, h->namelen, h->valuelen, NGHTTP3_NV_FLAG_NONE };
		np += h->namelen;
		/*
		 * gzip's body is another representation: its ranges are not
		 * the backend's, and a strong validator would say it is the
		 * same bytes (RFC 9110 8.8.1); a weak one says it means the
		 * same.
		 */
		if (gz && h->namelen == 13 &&
		    memcmp(nva[n].name, "accept-ranges", 13) == 0)
			continue;
		if (gz && etag == NULL && h->namelen == 4 &&
		    memcmp(nva[n].name, "etag", 4) == 0 && h->valuelen > 0 &&
		    h->value[0] == '"') {
			etag = h->valuelen + 2 <= sizeof(etag_small) ?
			    etag_small : malloc(h->valuelen + 2);
			if (etag == NULL) {
				rv = -1;
				goto done;
			}
			memcpy(etag, "W/", 2);
			memcpy(etag + 2, h->value, h->valuelen);
			nva[n].value = (uint8_t *)etag;
			nva[n].valuelen = h->valuelen + 2;
		}
		n++;
	}
	if (gz)
		nva[n++] = (nghttp3_nv){ (uint8_t *)"content-encoding",
		    (uint8_t *)"gzip", 16, 4, NGHTTP3_NV_FLAG_NONE };
	if (vary)
		nva[n++] = (nghttp3_nv){ (uint8_t *)"vary",
		    (uint8_t *)"accept-encoding", 4, 15, NGHTTP3_NV_FLAG_NONE };
	/* a recipient adds the Date a response came without (RFC 9110 6.6.1) */
	if (!dated && *(date = ex_date(ex)) != '\0')
		nva[n++] = (nghttp3_nv){ (uint8_t *)"date",
		    (uint8_t *)(uintptr_t)date, 4, strlen(date),
		    NGHTTP3_NV_FLAG_NONE };
	if (!informational)
		n = ex_nva_finish(ex, set, nva, n);
	/*
	 * Content-Length, repeats and lists ("5, 5") made one value (RFC 9110
	 * 8.6); none with chunked framing, where it is not to be trusted, nor
	 * on a 1xx or 204, which may not have one, nor for a body given
	 * gzip, whose length is not known before its end.
	 */
	if (r->has_content_length && r->framing != HTTP1_BODY_CHUNKED &&
	    r->status >= 200 && r->status != 204 && !gz) {
		nva[n++] = (nghttp3_nv){ (uint8_t *)"content-length",
		    (uint8_t *)cl, 14, u64_decimal(cl, r->content_length),
		    NGHTTP3_NV_FLAG_NONE };
	}
	if (!h3_fields_fit(ex->qc, nva, n, &size)) {
		ex_over_client_limit(ex, informational ? "a 1xx head" :
		    "the response head", size);
		rv = -2;
	} else if (informational)
		rv = h3_submit_info(ex->qc, ex->stream_id, nva, n);
	else if ((rv = ex_keep_conn_names(ex, r)) == 0)
		rv = h3_submit_response(ex->qc, ex->stream_id, nva, n,
		    r->framing != HTTP1_BODY_NONE);
done:
	if (nva != nva_small)
		free(nva);
	if (names != names_small)
		free(names);
	if (etag != etag_small)
		free(etag);
	return rv;
}

/*
 * The trailer section of a chunked response, whole, to the client as its
 * trailing HEADERS frame: the fields but those of the connection (the
 * head's Connection names too: ex_keep_conn_names), those a trailer
 * section cannot carry (trailer_name_forbidden: the framing, Set-Cookie,
 * Content-Type and the like), and those the head takes from qproxy (the
 * route's set_response_header, the request's ID). With none left nothing is
 * sent, and the body ends as one without trailers. -1 when out of memory.
 */
static int
ex_submit_trailers(struct exchange *ex)
{
	struct http1_header h[HTTP1_MAX_HEADERS];
	nghttp3_nv nva[HTTP1_MAX_HEADERS];
	struct iovec iov[8];
	char names_small[1024], *names = names_small, *np;
	const struct config_headers *set = ex->route->set_response.n > 0 ?
	    &ex->route->set_response : NULL;
	const char *idh = ex->id[0] != '\0' ? ex_cfg(ex)->request_id_header :
	    NULL;
	size_t idlen = idh != NULL ? strlen(idh) : 0;
	size_t len = ex->resp_trailers.len, niov, nh, n = 0, total = 0, off = 0;
	uint64_t size;
	uint8_t *buf;
	int rv = 0;

	if (len == 0 || ex->resp_dropped)
		return 0;
	/* at most HTTP1_MAX_TRAILERS bytes: a few chunks */
	niov = bufq_peek_unsent(&ex->resp_trailers, iov, 8);
	if (niov == 1)
		buf = iov[0].iov_base;
	else if ((buf = malloc(len)) == NULL)
		return -1;
	else
		for (size_t i = 0; i < niov; i++) {
			memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
			off += iov[i].iov_len;
		}
	nh = http1_trailers(buf, niov == 1 ? iov[0].iov_len : off, h,
	    HTTP1_MAX_HEADERS);
	for (size_t i = 0; i < nh; i++)
		total += h[i].namelen;
	if (total > sizeof(names_small) && (names = malloc(total)) == NULL) {
		rv = -1;
		goto done;
	}
	np = names;
	for (size_t i = 0; i < nh; i++) {
		if (hop_by_hop_name(h[i].name, h[i].namelen) ||
		    ex_conn_named(ex, h[i].name, h[i].namelen))
			continue;
		/* HTTP/3 field names are lowercase (RFC 9114 4.2) */
		bytes_lower((uint8_t *)np, (const uint8_t *)h[i].name,
		    h[i].namelen);
		if (trailer_name_forbidden((const uint8_t *)np, h[i].namelen,
		    true) ||
		    (set != NULL && header_is_set(set, np, h[i].namelen)))
			continue;
		if (idlen > 0 && h[i].namelen == idlen &&
		    memcmp(np, idh, idlen) == 0)
			continue;
		nva[n++] = (nghttp3_nv){ (uint8_t *)np, (uint8_t *)(uintptr_t)
		    h[i].value, h[i].namelen, h[i].valuelen,
		    NGHTTP3_NV_FLAG_NONE };
		np += h[i].namelen;
	}
	/* over the client's limit: the body ends without them */
	if (n > 0 && !h3_fields_fit(ex->qc, nva, n, &size)) {
		ex_over_client_limit(ex, "the trailer section", size);
		stats.fields_over_client_limit++;
		n = 0;
	}
	/* nghttp3 copies the fields */
	if (n > 0 && (rv = h3_submit_trailers(ex->qc, ex->stream_id, nva,
	    n)) == 0)
		ex->trailers_sent = true;
done:
	if (names != names_small)
		free(names);
	if (niov != 1)
		free(buf);
	bufq_free(&ex->resp_trailers);
	ex_mem_update(ex);
	return rv;
}

/* The backend sent bytes after its response: a second one, or garbage. */
static void
ex_after_body(struct exchange *ex)
{
	static struct log_limit lim;

	log_limited(&lim, LOG_LEVEL_WARN, "backend %s: bytes after the "
	    "response body; connection not reused", ex->server->cfg->text);
	stats.upstream_bytes_after_body++;
	ex->reusable = false;
}

/* An informational head from the backend: passed on, or dropped. */
static int
ex_info(struct exchange *ex, const struct http1_response *r, size_t len)
{
	/* 100 was sent already if the client asked for it */
	if (r->status == 100 && ex->continue_sent)
		return 0;
	if (ex->ninfo >= EX_MAX_INFO ||
	    len > ex_cfg(ex)->max_header_size - ex->info_bytes) {
		stats.informational_dropped++;
		return 0;
	}
	ex->ninfo++;
	ex->info_bytes += len;
	switch (ex_submit_head(ex, r, true)) {
	case -1:
		return -1;
	case -2:
		stats.informational_dropped++;
		return 0;
	}
	count_response(r->status);
	return 0;
}

/*
 * A WebSocket's response head (RFC 6455 4.2.2, RFC 8441 5). A 101 that
 * upgrades to websocket with the accept of the key sent opens the tunnel:
 * the client is told with a 200 (RFC 9220 3) of its fields, and what
 * follows the head is the tunnel's. A 101 otherwise, or a 2xx (the
 * backend did not upgrade: its body is no tunnel's), gets the client a
 * 502; the backend answered a request it may not know as a WebSocket's,
 * which is no failure of the server's, so any client could not fail it.
 * A 1xx goes as for any request; another status, as it is, on a
 * connection not used again. Returns -1 when answered.
 */
static int
ex_ws_head(struct exchange *ex, struct http1_response *r)
{
	static struct log_limit lim;
	const struct http1_header *accept = NULL;
	const char *why = NULL;

	if (r->status < 200 && r->status != 101)
		return 0;
	r->keep_alive = false;
	if (r->status >= 300)
		return 0;	/* counted refused as it goes (ex_parse_rbuf) */
	for (size_t i = 0; i < r->nheaders; i++)
		if (r->headers[i].namelen == 20 && strncasecmp(
		    r->headers[i].name, "sec-websocket-accept", 20) == 0)
			accept = &r->headers[i];
	if (r->status != 101)
		why = "answered a WebSocket without upgrading";
	else if (!http1_field_has(r, "Upgrade", "websocket"))
		why = "answered a WebSocket with a 101 to another protocol";
	else if (accept == NULL || !ws_accept_ok(ex->ws_key, accept->value,
	    accept->valuelen))
		why = "answered a WebSocket without its Sec-WebSocket-Accept";
	if (why != NULL) {
		log_limited(&lim, LOG_LEVEL_WARN, "backend %s: %s",
		    ex->server->cfg->text, why);
		stats.ws_refused++;
		ex_respond(ex, 502);
		return -1;
	}
	r->status = 200;
	r->framing = HTTP1_BODY_CLOSE;
	r->has_content_length = false;
	ex->ws_upgrade = true;
	return 0;
}

/*
 * The client has its 200: the tunnel opens. What it sent meanwhile goes
 * first; tunnel_timeout bounds the time neither side sends. -1 when out
 * of memory, with the stream reset.
 */
static int
ex_ws_open(struct exchange *ex)
{
	ex->ws_open = true;
	ex_ws_count(ex, true);
	ex_arm_timer(ex, ex_tunnel_timeout(ex));
	if (ex_release_hold(ex) == -1)
		return -1;
	/* a FIN that came before is the backend's once all that is written */
	ex->req_written = false;
	if (ex->out.len > 0 || ex->req_fin)
		ex_queue_write(ex);
	return 0;
}

/*
 * Whether a field is a digest of the body's bytes as they are (RFC 9530
 * Content-Digest and Repr-Digest, RFC 3230 Digest, Content-MD5): gzip's
 * bytes would not match it, and a signature may cover it.
 */
static bool
ex_digest_field(const struct http1_header *h)
{
	return http1_name_is(h, "content-digest") ||
	    http1_name_is(h, "repr-digest") || http1_name_is(h, "digest") ||
	    http1_name_is(h, "content-md5");
}

/*
 * Whether the final response may be given gzip (RFC 9110 8.4): a body of
 * a media type compress_types names, compress_min_length long at least
 * when its length is told, not encoded already, no range of one (206),
 * and not one that its server says no one may transform (RFC 9111
 * 5.2.2.6). Those get Vary: Accept-Encoding, whether this client takes
 * gzip or not, for the caches between; and the stream begins here, for a
 * client that takes it, unless compress_memory_total has no room for it:
 * then the body goes as it is.
 */
static void
ex_compress_begin(struct exchange *ex, const struct http1_response *r)
{
	const struct config *cfg = ex_cfg(ex);
	const struct http1_header *ct = NULL;
	/* a HEAD's too, which gets the Vary its GET would */
	bool told = r->has_content_length && r->framing != HTTP1_BODY_CHUNKED;

	if (ex->route->compress == CONFIG_COMPRESS_OFF || ex->ws ||
	    r->status == 204 || r->status == 206 || r->status == 304 ||
	    (told && (r->content_length == 0 ||
	    r->content_length < cfg->compress_min_length)) ||
	    header_is_set(&ex->route->set_response, "content-encoding", 16))
		return;
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct http1_header *h = &r->headers[i];

		if (http1_name_is(h, "content-type"))
			ct = h;
		else if (http1_name_is(h, "content-encoding") ||
		    http1_name_is(h, "content-range") || ex_digest_field(h))
			return;
	}
	if (ct == NULL || !compress_type_listed(cfg->compress_types,
	    ct->value, ct->valuelen) ||
	    http1_field_has(r, "cache-control", "no-transform"))
		return;
	ex->vary_ae = true;
	if (!ex->gzip_ok || (ex->req.flags & REQ_F_HEAD) ||
	    r->framing == HTTP1_BODY_NONE)
		return;
	/* (counted in compress.responses once its head is sent) */
	if ((ex->gz = compress_new((int)cfg->compress_level,
	    told ? r->content_length : 0,
	    cfg->compress_memory_total)) == NULL)
		stats.compress_skipped_memory++;
}

/* gzip's bytes since the body held before, counted. */
static void
ex_gz_count(struct exchange *ex, size_t before)
{
	stats.compress_bytes_out += ex->resp_body.len - before;
	ex->gz_bytes += ex->resp_body.len - before;
}

/* Response body bytes for the client: as they came, or gzip's. 0 or -1. */
static int
ex_body_out(struct exchange *ex, const uint8_t *data, size_t len)
{
	size_t before = ex->resp_body.len;

	if (ex->gz == NULL)
		return bufq_append(&ex->resp_body, data, len);
	if (compress_put(ex->gz, data, len, false, &ex->resp_body) == -1)
		return -1;
	ex->gz_fed = true;
	stats.compress_bytes_in += len;
	ex_gz_count(ex, before);
	return 0;
}

/*
 * What gzip holds back of what it was given since the last flush, out for
 * the client; the stream reset when there is no memory for it.
 */
static void
ex_compress_flush(struct exchange *ex)
{
	size_t before = ex->resp_body.len;

	if (!ex->gz_fed)
		return;
	ex->gz_fed = false;
	if (compress_put(ex->gz, NULL, 0, true, &ex->resp_body) == -1) {
		ex_reset_nomem(ex);
		return;
	}
	ex_gz_count(ex, before);
	if (ex->resp_body.len > before) {
		ex_mem_update(ex);
		h3_resume(ex->qc, ex->stream_id);
	}
}

/* The body's end, for gzip: its last bytes, and its memory let go. */
static int
ex_compress_end(struct exchange *ex)
{
	size_t before = ex->resp_body.len;
	int rv;

	if (ex->gz == NULL)
		return 0;
	rv = compress_end(ex->gz, &ex->resp_body);
	ex_gz_count(ex, before);
	compress_free(ex->gz);
	ex->gz = NULL;
	ex->gz_fed = false;
	ex_mem_update(ex);
	h3_resume(ex->qc, ex->stream_id);
	return rv;
}

/* Parses what the backend sent so far (ex_parse). */
static void
ex_parse_rbuf(struct exchange *ex)
{
	static struct log_limit bad_framing;
	const uint8_t *data;
	size_t consumed, datalen, off;
	enum http1_body_status st;
	bool got = false;
	/* the head's fields point into rbuf: used at once, never kept */
	struct http1_response resp;
	long n;

	while (!ex->head_done) {
		/*
		 * A head is parsed again from its start only once a line of
		 * it has ended since: one that came a few bytes a read cost
		 * a parse of all of it each time (about 100 times as much
		 * CPU for a head of 57 KB in 10-byte pieces). A head has
		 * 129 lines at most. Its first bytes are looked at as they
		 * come, up to HTTP1_STATUS_MIN, whether a line ended or not.
		 */
		if (ex->rseen >= HTTP1_STATUS_MIN && ex->rseen <= ex->rlen &&
		    memchr(ex->rbuf + ex->rseen, '\n', ex->rlen - ex->rseen) ==
		    NULL) {
			ex->rseen = ex->rlen;
			return;
		}
		n = http1_parse_response(ex->rbuf, ex->rlen,
		    (ex->req.flags & REQ_F_HEAD) != 0, &resp);
		if (n == 0) {
			ex->rseen = ex->rlen;
			return;
		}
		ex->rseen = 0;
		if (n > 0 && ex->ws && ex_ws_head(ex, &resp) == -1)
			return;
		if (n < 0 || resp.status == 101) {
			static struct log_limit lim;

			ex_bad_response(ex, &lim, "malformed response head");
			return;
		}
		if (resp.status < 200) {
			/*
			 * This head and the whole 1xx heads right after it,
			 * then what follows moved to the front once: a move
			 * for each made a read of small heads cost the square
			 * of its length (4,096 heads of 16 bytes in 64 KiB:
			 * 134 MB moved). The head after them is parsed again
			 * from the front.
			 */
			size_t skip = 0;

			do {
				/*
				 * a close it announces is the connection's,
				 * whatever the final head says (RFC 9112 9.6)
				 */
				if (http1_connection_has(&resp, "close"))
					ex->info_close = true;
				if (ex_info(ex, &resp, (size_t)n) == -1) {
					stats.requests_reset++;
					ex_reset(ex, NGHTTP3_H3_INTERNAL_ERROR);
					return;
				}
				skip += (size_t)n;
				n = http1_parse_response(ex->rbuf + skip,
				    ex->rlen - skip, (ex->req.flags & REQ_F_HEAD) !=
				    0, &resp);
			} while (n > 0 && resp.status < 200 &&
			    resp.status != 101);
			memmove(ex->rbuf, ex->rbuf + skip, ex->rlen - skip);
			ex->rlen -= skip;
			continue;
		}
		/*
		 * 408 on a pooled connection: the server timed it out as the
		 * request came (RFC 9110 15.5.9: the client may repeat the
		 * request), or had said so before closing it while idle, and
		 * the words were still unread. A request that may go again
		 * does, if nothing of a response went to the client yet.
		 */
		if (resp.status == 408 && ex->reused && ex->ninfo == 0 &&
		    ex_may_retry(ex)) {
			ex_resend(ex, "408 on a pooled connection");
			return;
		}
		if (resp.status >= 500 && resp.status <= 599 &&
		    ex_may_try_next(ex, upstream_backend(ex_pools(ex),
		    ex->backend)->retry_status[resp.status - 500])) {
			char why[32];

			/* a response all the same: its head came */
			hist_add(&ex->server->ctr->ttfb,
			    mono_now() - ex->forwarded);
			snprintf(why, sizeof(why), "answered %d", resp.status);
			ex_try_next(ex, why);
			return;
		}
		ex->head_done = true;
		ex_trim_head(ex);
		/*
		 * a connection whose request was cut short, or that a 1xx
		 * said closes, is never pooled
		 */
		ex->reusable = resp.keep_alive && !ex->req_dropped &&
		    !ex->info_close;
		ex->status = resp.status;
		ex->backend_time = mono_now() - ex->forwarded;
		hist_add(&ex->server->ctr->ttfb, ex->backend_time);
		ex_compress_begin(ex, &resp);
		switch (ex_submit_head(ex, &resp, false)) {
		case -1:
			/* no memory for the head: a reset request */
			count_response(resp.status);
			stats.requests_reset++;
			ex_reset(ex, NGHTTP3_H3_INTERNAL_ERROR);
			return;
		case -2:
			/* a fault of neither the backend nor the client */
			stats.fields_over_client_limit++;
			compress_free(ex->gz);
			ex->gz = NULL;
			ex_respond(ex, 502);
			return;
		}
		if (ex->gz != NULL) {
			stats.compress_responses++;
			ex->gz_given = true;
		}
		count_response(resp.status);
		if (ex->ws && !ex->ws_upgrade)
			stats.ws_refused++;
		ex->resp_submitted = true;
		http1_body_init(&ex->body, &resp);
		memmove(ex->rbuf, ex->rbuf + n, ex->rlen - (size_t)n);
		ex->rlen -= (size_t)n;
		/* from now on read_timeout bounds silence mid-body */
		ex_arm_timer(ex, ex_read_timeout(ex));
		if (ex->ws_upgrade && ex_ws_open(ex) == -1)
			return;
	}

	/*
	 * A call of http1_body_parse gives one span of data: one chunk. The
	 * bytes it took are dropped from rbuf once, after all of them, and
	 * the stream resumed once: a body of 1-byte chunks moved the rest of
	 * rbuf, and woke nghttp3, for every one.
	 */
	consumed = 0;
	off = 0;
	st = HTTP1_BODY_AGAIN;
	while (off < ex->rlen) {
		st = http1_body_parse(&ex->body, ex->rbuf + off, ex->rlen - off,
		    &consumed, &data, &datalen);
		if (datalen > 0) {
			ex->resp_bytes += datalen;
			if (ex->ws_open)
				stats.ws_bytes_to_client += datalen;
			if (ex_body_out(ex, data, datalen) == -1) {
				ex_reset_nomem(ex);
				return;
			}
			got = true;
		}
		/* kept until the section ends: HTTP1_MAX_TRAILERS at most */
		if (ex->body.trailerlen > 0) {
			if (bufq_append(&ex->resp_trailers, ex->body.trailer,
			    ex->body.trailerlen) == -1) {
				ex_reset_nomem(ex);
				return;
			}
			ex_mem_update(ex);
		}
		off += consumed;
		if (st != HTTP1_BODY_AGAIN || consumed == 0)
			break;
	}
	if (off > 0) {
		memmove(ex->rbuf, ex->rbuf + off, ex->rlen - off);
		ex->rlen -= off;
	}
	if (got) {
		ex_mem_update(ex);
		h3_resume(ex->qc, ex->stream_id);
	}
	if (st == HTTP1_BODY_AGAIN && ex->rlen == 0 &&
	    ex->body.framing == HTTP1_BODY_NONE)
		st = http1_body_parse(&ex->body, ex->rbuf, 0, &consumed,
		    &data, &datalen);
	switch (st) {
	case HTTP1_BODY_DONE:
		if (ex->rlen > 0)
			ex_after_body(ex);
		/* before the body's end is told: nghttp3 then sends them */
		if (ex_compress_end(ex) == -1 || ex_submit_trailers(ex) == -1) {
			ex_reset_nomem(ex);
			break;
		}
		ex_response_done(ex, true);
		break;
	case HTTP1_BODY_ERROR:
		log_limited(&bad_framing, LOG_LEVEL_WARN, "backend %s: bad "
		    "response body framing", ex->server->cfg->text);
		ex_server_failed(ex);
		stats.requests_reset++;
		ex_reset(ex, NGHTTP3_H3_INTERNAL_ERROR);
		break;
	case HTTP1_BODY_AGAIN:
		break;
	}
}

/*
 * Parses what the backend sent so far. An own buffer that this empties
 * goes at once, not when the response ends (a body read past it, by
 * ex_read_body, never uses it): an exchange holds one only while it holds
 * bytes not yet parsed.
 */
static void
ex_parse(struct exchange *ex)
{
	ex_parse_rbuf(ex);
	if (ex->rlen == 0 && ex->rbuf != ex_shared) {
		ex_own_free(ex);
		ex->rcap = 0;
	}
}

/*
 * The backend's connection ended: with a clean close (FIN), or with an
 * error (a reset) when failed is set. A body delimited by the close is
 * complete only after a clean one (RFC 9112 8), which the end a read
 * finds after a write took the reset's error (uc_reset) is not.
 */
static void
ex_eof(struct exchange *ex, bool failed)
{
	static struct log_limit closed_mid_body;

	failed = failed || ex->uc_reset;

	if (!ex->head_done) {
		static struct log_limit lim;

		if (ex_retry(ex))
			return;
		ex_bad_response(ex, &lim,
		    "closed before a complete response head");
		return;
	}
	if (!failed && http1_body_eof(&ex->body) == HTTP1_BODY_DONE) {
		ex->reusable = false;
		if (ex_compress_end(ex) == -1) {
			ex_reset_nomem(ex);
			return;
		}
		ex_response_done(ex, false);
		return;
	}
	/* RFC 9220 3: a tunnel's reset is H3_REQUEST_CANCELLED, and says
	   nothing of the server's health */
	if (ex->ws_open) {
		stats.requests_reset++;
		ex_reset(ex, NGHTTP3_H3_REQUEST_CANCELLED);
		return;
	}
	/* never a truncated body that looks complete */
	log_limited(&closed_mid_body, LOG_LEVEL_WARN, "backend %s: closed in "
	    "the middle of a response body", ex->server->cfg->text);
	ex_server_failed(ex);
	stats.requests_reset++;
	ex_reset(ex, NGHTTP3_H3_INTERNAL_ERROR);
}

/*
 * The size of an exchange's own read buffer for len bytes: a power of two
 * from EX_OWN_MIN, at most max (which len does not pass).
 */
static size_t
ex_own_cap(size_t len, size_t max)
{
	size_t cap = EX_OWN_MIN;

	while (cap < len)
		cap *= 2;
	return cap < max ? cap : max;
}

/*
 * Gives back the shared read buffer, copying what is left in it into a
 * buffer of the exchange's own, as small as it may be (a head cut short
 * held max_header_size, 64 KiB, whatever its length). Returns -1 when out
 * of memory, with the stream reset.
 */
static int
ex_keep_rest(struct exchange *ex)
{
	uint8_t *own;
	size_t cap;

	ex->rbuf = NULL;
	if (ex->rlen == 0) {
		ex->rcap = 0;
		return 0;
	}
	cap = ex_own_cap(ex->rlen, ex->rcap);
	if ((own = malloc(cap)) == NULL) {
		ex->rlen = ex->rcap = 0;
		ex_reset_nomem(ex);
		return -1;
	}
	memcpy(own, ex_shared, ex->rlen);
	ex->rbuf = own;
	ex->rcap = cap;
	stats.unparsed_bytes += cap;
	return 0;
}

/*
 * Reads what the backend sent next into rbuf and parses it. Returns as
 * read(2), or -2 when the exchange was answered already.
 *
 * A read with nothing left over from the last one goes into a buffer that
 * all exchanges share (the loop runs one at a time); an exchange copies
 * into a buffer of its own only what it could not parse yet, such as a
 * head cut short, and reads after it there, the buffer doubling when full
 * up to what the shared one would take. So an exchange waiting for its
 * backend holds no buffer, and a response that comes in one read is
 * parsed without an allocation.
 */
static ssize_t
ex_read_buffered(struct exchange *ex)
{
	size_t want = ex->head_done ? EX_READ_CHUNK :
	    ex_cfg(ex)->max_header_size;
	bool shared = ex->rlen == 0;
	uint8_t *nb;
	size_t cap;
	ssize_t n;

	if (shared) {
		if (ex_shared_cap < want) {
			if ((nb = realloc(ex_shared, want)) == NULL) {
				ex_reset_nomem(ex);
				return -2;
			}
			ex_shared = nb;
			ex_shared_cap = want;
		}
		ex->rbuf = ex_shared;	/* none of its own: ex_parse */
		ex->rcap = want;
	} else if (ex->rlen == ex->rcap && ex->rcap < want) {
		cap = ex_own_cap(ex->rcap + 1, want);
		if ((nb = realloc(ex->rbuf, cap)) == NULL) {
			ex_reset_nomem(ex);
			return -2;
		}
		stats.unparsed_bytes += cap - ex->rcap;
		ex->rbuf = nb;
		ex->rcap = cap;
	}
	if (ex->rlen == ex->rcap) {
		static struct log_limit lim;

		ex_bad_response(ex, &lim,
		    "response head larger than max_header_size");
		return -2;
	}
	n = read(ex->uc->fd, ex->rbuf + ex->rlen, ex->rcap - ex->rlen);
	if (n > 0) {
		ex->read_full = (size_t)n == ex->rcap - ex->rlen;
		ex->resp_any = true;
		ex->rlen += (size_t)n;
		if (ex->head_done)
			ev_timer_again(ex_loop(ex), &ex->timer);
		ex_parse(ex);
	}
	/* (ex_upstream_close, in ex_parse, may have let go of it already) */
	if (ex->rbuf == ex_shared && ex_keep_rest(ex) == -1)
		return -2;
	return n;
}

/*
 * Past the head, a body of known length or one that ends at EOF needs no
 * parsing: it is read straight into the response queue (no copy on the way
 * to nghttp3), at most what the length leaves, so nothing after it is ever
 * read. Returns as read(2), or -2 when the exchange was reset.
 */
static ssize_t
ex_read_body(struct exchange *ex, size_t room)
{
	struct iovec iov[EX_READ_IOV + 1];
	enum http1_body_status st = HTTP1_BODY_AGAIN;
	const uint8_t *data;
	size_t cnt, max, total = 0, consumed, datalen;
	uint8_t after;
	bool probe;
	ssize_t n;

	max = room < BUFQ_CHUNK_SIZE ? BUFQ_CHUNK_SIZE : room;
	if (ex->body.framing == HTTP1_BODY_LENGTH && ex->body.remaining < max)
		max = (size_t)ex->body.remaining;
	/* chunks enough for max after the tail's room (a spare one or two
	   go back in bufq_commit), not all EX_READ_IOV of them */
	cnt = max / BUFQ_CHUNK_SIZE + 2;
	if ((cnt = bufq_reserve(&ex->resp_body, iov, MIN(cnt,
	    EX_READ_IOV))) == 0) {
		ex_reset_nomem(ex);
		return -2;
	}
	for (size_t i = 0; i < cnt; i++) {
		if (iov[i].iov_len >= max - total) {
			iov[i].iov_len = max - total;
			cnt = i + 1;
		}
		total += iov[i].iov_len;
	}
	/*
	 * A read that can end the body asks for one byte more: a backend
	 * that sends anything after its body (a second response, garbage)
	 * is found here, before its connection could go back to the pool.
	 */
	probe = ex->body.framing == HTTP1_BODY_LENGTH &&
	    total == ex->body.remaining;
	if (probe) {
		iov[cnt].iov_base = &after;
		iov[cnt++].iov_len = 1;
	}
	n = readv(ex->uc->fd, iov, (int)cnt);
	if (probe && n > (ssize_t)total) {
		ex_after_body(ex);
		n = (ssize_t)total;
	}
	bufq_commit(&ex->resp_body, n > 0 ? (size_t)n : 0);
	if (n <= 0)
		return n;
	ex->read_full = !probe && (size_t)n == total;
	ex_mem_update(ex);
	/* the framing's count, over the bytes already in place */
	for (size_t i = 0, left = (size_t)n; left > 0; i++) {
		total = iov[i].iov_len < left ? iov[i].iov_len : left;
		st = http1_body_parse(&ex->body, iov[i].iov_base, total,
		    &consumed, &data, &datalen);
		left -= total;
	}
	ex->resp_bytes += (size_t)n;
	if (ex->ws_open)
		stats.ws_bytes_to_client += (uint64_t)n;
	ev_timer_again(ex_loop(ex), &ex->timer);
	h3_resume(ex->qc, ex->stream_id);
	if (st == HTTP1_BODY_DONE)
		ex_response_done(ex, true);
	return n;
}

/* Whether the backend's socket holds nothing to read now. */
static bool
ex_backend_quiet(const struct exchange *ex)
{
	uint8_t next;

	return recv(ex->uc->fd, &next, 1, MSG_PEEK | MSG_DONTWAIT) == -1 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void
ex_read(struct exchange *ex)
{
	size_t room, taken = 0;
	ssize_t n;

	while (ex->state == EX_FORWARD && (room = ex_room(ex)) > 0) {
		/*
		 * the watcher stays on: the next turn reads on, if there is
		 * more to read; if not, no event comes, and what gzip holds
		 * goes out now (below)
		 */
		if (taken >= (ex->gz != NULL ? EX_GZIP_BUDGET : EX_READ_BUDGET)) {
			if (ex->gz_fed && ex_backend_quiet(ex))
				ex_compress_flush(ex);
			return;
		}
		/* (a body compressed is taken in rbuf, a read at a time) */
		if (ex->head_done && ex->rlen == 0 && ex->gz == NULL &&
		    ((ex->body.framing == HTTP1_BODY_LENGTH &&
		    ex->body.remaining > 0) ||
		    ex->body.framing == HTTP1_BODY_CLOSE))
			n = ex_read_body(ex, room);
		else
			n = ex_read_buffered(ex);
		if (n == -2)
			return;
		if (n == -1) {
			if (errno == EINTR)
				continue;
			/*
			 * the backend has sent nothing more for now: what gzip
			 * holds of what it sent goes out, so that a client
			 * waits for no byte that came
			 */
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* (errno is the allocation's after a failure) */
				if (ex->gz != NULL)
					ex_compress_flush(ex);
				return;
			}
			log_debug("backend %s: read: %s", ex->server->cfg->text,
			    strerror(errno));
			ex_eof(ex, true);
			return;
		}
		if (n == 0) {
			ex_eof(ex, false);
			return;
		}
		taken += (size_t)n;
	}
	/*
	 * The client is slower than the backend, or response memory ran out:
	 * stop reading for now, and stop the clock on the backend, which is
	 * not the one waiting.
	 */
	if (ex->state == EX_FORWARD) {
		ev_io_stop(ex_loop(ex), &ex->uc->rio);
		if (ex->resp_body.len < ex_cfg(ex)->response_buffer_size)
			ex_mem_wait(ex);
		if (ex->head_done || ex->mem_waiting)
			ev_timer_stop(ex_loop(ex), &ex->timer);
	}
}

/* Reads the backend again, after a stop for the client or for memory. */
static void
ex_read_resume(struct exchange *ex)
{
	ev_io_start(ex_loop(ex), &ex->uc->rio);
	ev_timer_again(ex_loop(ex), &ex->timer);
	/* bytes may already wait in rbuf: parse them now */
	if (ex->head_done && ex->rlen > 0)
		ex_parse(ex);
	/*
	 * a stop for room may have come after a read that emptied the
	 * socket: the watcher then never fires while the backend pauses, and
	 * what gzip holds goes out only after a read that finds EAGAIN
	 */
	if (ex->state == EX_FORWARD && ex->uc != NULL && ex->gz != NULL &&
	    ex->gz_fed)
		ev_feed_event(ex_loop(ex), &ex->uc->rio, EV_READ);
}

/*
 * The stream of qc to reset for memory: of those holding some, the one
 * holding the most, the last opened of those (what a client is sent last).
 */
static struct exchange *
qc_mem_victim(struct qconn *qc)
{
	struct exchange *ex, *victim = NULL;

	LIST_FOREACH(ex, &qc->exchanges, entry)
		if (ex->mem_counted > 0 && (victim == NULL ||
		    ex->mem_counted > victim->mem_counted ||
		    (ex->mem_counted == victim->mem_counted &&
		    ex->stream_id > victim->stream_id)))
			victim = ex;
	return victim;
}

/* Whether qc's turnover has lasted EX_EVICT_AGE: it may lose streams. */
static bool
qc_mem_slow(const struct qconn *qc, ev_tstamp now)
{
	return qc->mem_held && now - qc->mem_mark >= EX_EVICT_AGE;
}

/*
 * Response memory is full and backends wait for some: the connections
 * whose turnover has lasted EX_EVICT_AGE, the longest first, lose streams
 * (reset with H3_EXCESSIVE_LOAD, their buffers freed) until it is not;
 * not for their own streams' sake, which would only trade one of its
 * streams for another.
 */
static void
ex_mem_evict(size_t limit)
{
	static struct log_limit lim;
	struct exchange *ex;
	struct qconn *qc;
	double now = mono_now();

	while (mem_chunks >= limit &&
	    (qc = TAILQ_FIRST(&mem_holders)) != NULL && qc_mem_slow(qc, now) &&
	    mem_nwaiting > qc->mem_nwaiting &&
	    (ex = qc_mem_victim(qc)) != NULL) {
		log_limited(&lim, LOG_LEVEL_INFO, "%s: response_buffer_total "
		    "reached: stream %lld reset, its client took %llu of "
		    "%llu bytes held in %.0fs", qc->peer,
		    (long long)ex->stream_id,
		    (unsigned long long)qc->mem_taken,
		    (unsigned long long)qc->mem_target, now - qc->mem_mark);
		stats.streams_reset_memory++;
		stats.requests_reset++;
		ex_reset(ex, NGHTTP3_H3_EXCESSIVE_LOAD);
	}
}

/*
 * Once per loop iteration: evictions, and backends to read again: as many
 * as there are chunks free (each reads one at least), while there are
 * (bytes a resumed one had read already are queued at once). Those of
 * connections that may lose streams come last: the room made by their
 * resets is not theirs to take back.
 */
static void
ex_mem_flush(void)
{
	struct exchange *ex = TAILQ_FIRST(&mem_waiters), *next;
	size_t limit, n;
	double now;

	if (ex == NULL)
		return;
	limit = mem_limit(ex);
	now = mono_now();
	ex_mem_evict(limit);
	n = mem_chunks < limit ? limit - mem_chunks : 0;
	for (int pass = 0; pass < 2; pass++)
		for (ex = TAILQ_FIRST(&mem_waiters); ex != NULL && n > 0 &&
		    mem_chunks < limit; ex = next) {
			next = TAILQ_NEXT(ex, memwait_entry);
			if (pass == 0 && qc_mem_slow(ex->qc, now))
				continue;
			ex_mem_unwait(ex);
			ex_read_resume(ex);
			n--;
		}
}

/*
 * The stream to give up for request memory: of the connection holding
 * the most, the stream holding the most (the oldest, of equals). A client
 * cannot make others' streams pay for many streams of its own; an upload
 * that its backend takes as it comes holds little here.
 */
static struct exchange *
ex_req_victim(void)
{
	struct exchange *ex, *victim = NULL;
	struct qconn *qc = NULL;

	TAILQ_FOREACH(ex, &req_holders, req_entry)
		if (qc == NULL || ex->qc->req_bytes > qc->req_bytes)
			qc = ex->qc;
	if (qc == NULL)
		return NULL;
	LIST_FOREACH(ex, &qc->exchanges, entry)
		if (ex->req_held && (victim == NULL ||
		    ex->req_counted > victim->req_counted ||
		    (ex->req_counted == victim->req_counted &&
		    ex->started <= victim->started)))
			victim = ex;
	return victim;
}

/*
 * A stream given up for request memory. One whose head is not all here
 * yet is no request: it is reset with H3_REQUEST_REJECTED, which tells
 * the client that nothing of it was processed (RFC 9114 8.1). One with no
 * response yet is answered 503 (a backend that saw part of it has its
 * connection closed); else it is reset with H3_EXCESSIVE_LOAD.
 */
static void
ex_req_give_up(struct exchange *ex)
{
	static struct log_limit lim;

	log_limited(&lim, LOG_LEVEL_INFO, "%s: request_buffer_total "
	    "reached: stream %lld given up, %zu of the connection's %zu KiB "
	    "held%s", ex->qc->peer, (long long)ex->stream_id,
	    ex->req_counted / 1024, ex->qc->req_bytes / 1024,
	    ex_client_stalled(ex) && !ex->head_refused ?
	    ", waiting on its client" : "");
	stats.streams_reset_req_memory++;
	if (ex->state == EX_HEADERS)
		ex_reset(ex, NGHTTP3_H3_REQUEST_REJECTED);
	else if (ex->resp_submitted) {
		stats.requests_reset++;
		ex_reset(ex, NGHTTP3_H3_EXCESSIVE_LOAD);
	} else
		ex_respond(ex, 503);
	/* all end in ex_finish, which took it off req_holders */
}

/*
 * Once per loop iteration, after the writes to backends (what a backend
 * takes at once is not held): while request memory is past
 * request_buffer_total, streams are given up (ex_req_victim). Within an
 * iteration the total may pass the limit by body bytes the client had
 * credit for, and by heads that grow on connections below their share
 * (exchange_field refuses the others' at once).
 * Returns whether it gave any up.
 */
static bool
ex_req_evict(void)
{
	struct exchange *ex;
	size_t limit;
	bool any = false;

	if ((ex = TAILQ_FIRST(&req_holders)) == NULL)
		return false;
	limit = ex->qc->srv->gen->cfg->request_buffer_total;
	while (req_total() > limit && (ex = ex_req_victim()) != NULL) {
		any = true;
		ex_req_give_up(ex);
		if (ex->req_held)
			break;		/* cannot happen; never spin */
	}
	return any;
}

static void
ex_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct exchange *ex = w->data;
	int err = 0;
	socklen_t len = sizeof(err);

	if (ex->state == EX_CONNECTING) {
		if (getsockopt(ex->uc->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err != 0) {
			ex_connect_failed(ex, strerror(err));
			if (!upstream_refused(err)) {
				ex_respond(ex, 502);
				return;
			}
			ex->attempt++;
			ex_try_server(ex);
			return;
		}
		ev_io_stop(loop, &ex->uc->wio);
		ex_connected(ex);
		return;
	}
	if (w == &ex->uc->wio)
		ex_write(ex);
	else
		ex_read(ex);
}

/*
 * Whether the request waits on the client: its head or body is incomplete,
 * and whatever came of it is with the backend already.
 */
static bool
ex_client_stalled(const struct exchange *ex)
{
	switch (ex->state) {
	case EX_HEADERS:
	case EX_HOLD:
		return true;
	case EX_FORWARD:
		/* all sent but what waits for more: a length's last byte */
		return !ex->req_fin && !ex->head_done && !ex->ws &&
		    ex->out.len + (ex->framing == REQ_BODY_CHUNKED ?
		    ex->stage.len : 0) == 0;
	default:
		return false;
	}
}

static void
ex_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	static struct log_limit lim[5];
	struct exchange *ex = w->data;

	if (ex->head_refused) {
		ex_req_give_up(ex);	/* armed by exchange_field */
		return;
	}
	if (ex->ws_open) {
		log_limited(&lim[4], LOG_LEVEL_INFO, "%s: stream %lld: "
		    "WebSocket idle for tunnel_timeout", ex->qc->peer,
		    (long long)ex->stream_id);
		stats.ws_timeouts++;
		stats.requests_reset++;
		ex_reset(ex, NGHTTP3_H3_REQUEST_CANCELLED);
		return;
	}
	if (ex_client_stalled(ex)) {
		log_limited(&lim[0], LOG_LEVEL_INFO, "%s: stream %lld: the "
		    "client stopped sending its request", ex->qc->peer,
		    (long long)ex->stream_id);
		stats.requests_client_timeout++;
		/* no head yet, no response: the stream ends incomplete */
		if (ex->state == EX_HEADERS)
			ex_reset(ex, NGHTTP3_H3_REQUEST_INCOMPLETE);
		else
			ex_respond(ex, 408);
		return;
	}
	if (ex->state == EX_CONNECTING && ex->uc == NULL) {
		log_limited(&lim[1], LOG_LEVEL_INFO, "backend %s: no room "
		    "within connect_timeout (each server has max_connections "
		    "open)", upstream_backend(ex_pools(ex), ex->backend)->name);
		ex_unqueue(ex);
		stats.upstream_queue_timeouts++;
		ex_respond(ex, 503);
		return;
	}
	if (ex->state == EX_CONNECTING) {
		ex_connect_failed(ex, "timed out");
		/* nothing was sent: the next server may take it (as a refusal) */
		if (ex_server_left(ex)) {
			ex->attempt++;
			ex_try_server(ex);
		} else
			ex_respond(ex, 504);
		return;
	}
	if (!ex->head_done) {
		if (ex_may_try_next(ex, upstream_backend(ex_pools(ex),
		    ex->backend)->retry_timeout)) {
			ex_try_next(ex, "response timed out");
			return;
		}
		log_limited(&lim[2], LOG_LEVEL_INFO, "backend %s: response "
		    "timed out", ex->server->cfg->text);
		ex_server_failed(ex);
		ex_respond(ex, 504);
		return;
	}
	log_limited(&lim[3], LOG_LEVEL_INFO, "backend %s: response body "
	    "stalled", ex->server->cfg->text);
	ex_server_failed(ex);
	stats.requests_reset++;
	ex_reset(ex, NGHTTP3_H3_INTERNAL_ERROR);
}

nghttp3_ssize
exchange_read_data(struct exchange *ex, nghttp3_vec *vec, size_t veccnt,
    uint32_t *pflags)
{
	struct iovec iov[16];
	size_t n, total = 0;

	if (ex->own_len > 0) {
		*pflags |= NGHTTP3_DATA_FLAG_EOF;
		if (ex->own_given || veccnt == 0)
			return 0;
		ex->own_given = true;
		vec[0].base = (uint8_t *)(uintptr_t)ex->own_body;
		vec[0].len = ex->own_len;
		return 1;
	}
	if (ex->resp_dropped)
		return NGHTTP3_ERR_WOULDBLOCK;
	if (veccnt > 16)
		veccnt = 16;
	n = bufq_peek_unsent(&ex->resp_body, iov, veccnt);
	for (size_t i = 0; i < n; i++) {
		vec[i].base = iov[i].iov_base;
		vec[i].len = iov[i].iov_len;
		total += iov[i].iov_len;
	}
	bufq_mark_sent(&ex->resp_body, total);
	/* with trailers, their HEADERS frame carries the FIN */
	if (ex->resp_eof && ex->resp_body.unsent == 0)
		*pflags |= NGHTTP3_DATA_FLAG_EOF | (ex->trailers_sent ?
		    NGHTTP3_DATA_FLAG_NO_END_STREAM : 0);
	else if (n == 0)
		return NGHTTP3_ERR_WOULDBLOCK;
	return (nghttp3_ssize)n;
}

void
exchange_acked(struct exchange *ex, uint64_t n)
{
	struct qconn *qc = ex->qc;

	if (ex->own_len > 0) {
		ex->own_acked += n;
		return;
	}
	if (ex->resp_dropped)
		return;
	bufq_consume(&ex->resp_body, (size_t)n);
	ex_mem_update(ex);
	if (qc->mem_held && (qc->mem_taken += n) >= qc->mem_target)
		qc_mem_turn(qc);
	/* (a tunnel whose backend's side ended keeps uc for the client's) */
	if (ex->state == EX_FORWARD && ex->uc != NULL && ex->head_done &&
	    !ex->resp_eof && !ev_is_active(&ex->uc->rio) && !ex->mem_waiting &&
	    ex->resp_body.len < ex_cfg(ex)->response_buffer_size) {
		if (ex_room(ex) == 0)
			ex_mem_wait(ex);	/* room in its own, not in all */
		else
			ex_read_resume(ex);
	}
}

static void
ex_log(struct exchange *ex)
{
	struct access_entry e;
	size_t len;
	char *authority = NULL, *path = NULL;
	const char *a, *p;

	if (!access_log_enabled())
		return;
	/* errors: 400 or more, no status, or a response cut off */
	if (ex->route != NULL && (ex->route->access_log ==
	    CONFIG_ROUTE_LOG_OFF || (ex->route->access_log ==
	    CONFIG_ROUTE_LOG_ERRORS && ex->status >= 100 && ex->status < 400 &&
	    !ex->resp_dropped && !ex->cut_short)))
		return;
	a = request_authority(&ex->req, &len);
	authority = strndup(a, len);
	p = request_path(&ex->req, &len);
	path = strndup(p, len);
	e.time = ex->wall_start;
	e.client = ex->qc->peer;
	e.authority = authority != NULL ? authority : "";
	e.method = request_method(&ex->req);
	e.path = path != NULL ? path : "";
	e.status = ex->status;
	e.req_bytes = ex->body_received;
	e.resp_bytes = ex->resp_bytes;
	e.gzip = ex->gz_given;
	e.gzip_bytes = ex->gz_bytes;
	e.duration = mono_now() - ex->started;
	/* not ex->server: one passed over (disabled, full) when none took it */
	e.backend = ex->given != NULL ? ex->given->cfg->text : "-";
	e.quic_version = ngtcp2_conn_get_negotiated_version(ex->qc->conn);
	e.request_id = ex->id[0] != '\0' ? ex->id : NULL;
	e.route = ex->route != NULL ? ex->route->name : NULL;
	/* only for a request let in: the name is a user's of the file */
	e.user = ex->user;
	e.client_cert = ex->qc->tls.peer != NULL ? ex->qc->tls.peer->value :
	    NULL;
	e.backend_time = ex->backend_time;
	e.referer = ex->referer;
	e.user_agent = ex->user_agent;
	access_log_write(&e);
	free(authority);
	free(path);
}

static void
ex_free(struct exchange *ex)
{
	struct qconn *qc = ex->qc;

	if (ex->head_seen) {
		double took = mono_now() - ex->started;

		hist_add(&stats.request_duration, took);
		if (ex->route != NULL) {
			struct route_stats *rs = ex->gen->routes[ex->route -
			    ex->gen->cfg->routes];

			rs->requests++;
			if (ex->status >= 100 && ex->status < 600)
				rs->responses[ex->status / 100]++;
			hist_add(&rs->duration, took);
		}
		ex_log(ex);
	}
	ex_count_done(ex, false);
	ex_ws_count(ex, false);
	ex_upstream_close(ex, false);
	ev_timer_stop(ex_loop(ex), &ex->timer);
	if (ex->write_queued)
		TAILQ_REMOVE(&write_queue, ex, write_entry);
	ex_unqueue(ex);
	request_free(&ex->req);
	free(ex->referer);
	free(ex->user_agent);
	free(ex->resp_conn);
	bufq_free(&ex->hold);
	bufq_free(&ex->out);
	bufq_free(&ex->stage);
	bufq_free(&ex->trailers);
	bufq_free(&ex->resp_body);
	bufq_free(&ex->resp_trailers);
	compress_free(ex->gz);
	ex_mem_update(ex);
	ex_req_update(ex);
	ex_set_done(ex);
	LIST_REMOVE(ex, entry);
	qc->nexchanges--;
	stats.streams_current--;
	generation_unref(ex->gen);
	freelist_put(&ex_cache, ex, sizeof(*ex));
	if (qconn_finished(qc))
		qconn_want_write(qc);	/* qconn_write will close it */
}

struct exchange *
exchange_find(struct qconn *qc, int64_t stream_id)
{
	struct exchange *ex;

	LIST_FOREACH(ex, &qc->exchanges, entry)
		if (ex->stream_id == stream_id)
			return ex;
	return NULL;
}

void
exchange_stream_closed(struct exchange *ex)
{
	ngtcp2_conn_set_stream_user_data(ex->qc->conn, ex->stream_id, NULL);
	ex_free(ex);
}

bool
exchange_conn_sending(const struct qconn *qc)
{
	const struct exchange *ex;

	/* a head waits in nghttp3, outside resp_body, when flow-blocked */
	LIST_FOREACH(ex, &qc->exchanges, entry)
		if (ex->resp_body.len > 0 || ex->flow_blocked ||
		    ex->own_acked < ex->own_len)
			return true;
	return false;
}

void
exchange_flow_blocked(struct exchange *ex, bool blocked)
{
	ex->flow_blocked = blocked;
	ex_mem_update(ex);
}

void
exchange_abort_all(struct qconn *qc)
{
	struct exchange *ex;

	while ((ex = LIST_FIRST(&qc->exchanges)) != NULL) {
		if (qc->h3 != NULL)
			nghttp3_conn_set_stream_user_data(qc->h3,
			    ex->stream_id, NULL);
		ngtcp2_conn_set_stream_user_data(qc->conn, ex->stream_id,
		    NULL);
		/* for the log, and counted as a stream's end would be */
		if (!ex->cut_short)
			(void)exchange_cut_short(ex);
		ex_free(ex);
	}
}
