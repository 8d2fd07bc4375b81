/*
 * h3.c: HTTP/3 on a QUIC connection: nghttp3 set up once the 1-RTT keys
 * exist, stream data fed in, and its callbacks handed to the exchanges.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/param.h>

#include "clock.h"
#include "conn.h"
#include "exchange.h"
#include "freelist.h"
#include "log.h"
#include "request.h"
#include "stats.h"

/*
 * nghttp3's allocator. nghttp3 makes about eight small allocations per
 * request and frees them when the stream ends; a burst of concurrent
 * streams overflows glibc's per-thread cache (seven blocks of a size), so
 * most of them took malloc's slower paths. Blocks of up to H3MEM_MAX bytes
 * are kept here by size, in classes 16 bytes apart, H3MEM_KEEP_BYTES in
 * all at most. A block from malloc(n) is asked for as the next multiple
 * of 16, so that its usable size puts it back in the class it came from.
 */
#define H3MEM_SHIFT		4
#define H3MEM_MAX		1024
#define H3MEM_CLASSES		(H3MEM_MAX >> H3MEM_SHIFT)
#define H3MEM_KEEP_BYTES	(256 * 1024)

/* Indexed by class, 1 to H3MEM_CLASSES; the byte bound is their limit. */
static struct freelist	h3mem_class[H3MEM_CLASSES + 1] = {
	[0 ... H3MEM_CLASSES] = FREELIST_INIT(SIZE_MAX)
};
static size_t		h3mem_bytes;	/* kept now */
static size_t		h3mem_live;	/* in nghttp3's hands now */

/*
 * What a block counts in h3mem_live, from its usable size: its class's
 * size, or all of it. The same at its malloc and its free.
 */
static size_t
h3mem_weight(size_t usable)
{
	size_t c = usable >> H3MEM_SHIFT;

	return c == 0 || c > H3MEM_CLASSES ? usable : c << H3MEM_SHIFT;
}

/* A block's weight, counted for all and, given one, its connection. */
static void
h3mem_count(void *user_data, size_t add, size_t sub)
{
	struct qconn *qc = user_data;

	h3mem_live = h3mem_live + add - sub;
	if (qc != NULL)
		qc->h3mem_bytes = qc->h3mem_bytes + add - sub;
}

static void *
h3mem_malloc(size_t size, void *user_data)
{
	size_t c = (size + (1 << H3MEM_SHIFT) - 1) >> H3MEM_SHIFT;
	void *p;

	if (c > 0 && c <= H3MEM_CLASSES) {
		if ((p = freelist_get(&h3mem_class[c],
		    c << H3MEM_SHIFT)) != NULL) {
			/* kept in class c: its usable size is of class c */
			h3mem_bytes -= c << H3MEM_SHIFT;
			h3mem_count(user_data, c << H3MEM_SHIFT, 0);
			return p;
		}
		size = c << H3MEM_SHIFT;
	}
	/*
	 * A new block may be larger than asked for (malloc hands out a whole
	 * free chunk up to 16 bytes over), so of a higher class: weighed by
	 * what it is, as its free will.
	 */
	if ((p = malloc(size)) != NULL)
		h3mem_count(user_data, h3mem_weight(malloc_usable_size(p)), 0);
	return p;
}

static void
h3mem_free(void *p, void *user_data)
{
	size_t c, usable;

	if (p == NULL)
		return;
	usable = malloc_usable_size(p);
	h3mem_count(user_data, 0, h3mem_weight(usable));
	/* a class whose every request fits in the block */
	c = usable >> H3MEM_SHIFT;
	if (c == 0 || c > H3MEM_CLASSES ||
	    h3mem_bytes + (c << H3MEM_SHIFT) > H3MEM_KEEP_BYTES) {
		free(p);
		return;
	}
	freelist_put(&h3mem_class[c], p, c << H3MEM_SHIFT);
	h3mem_bytes += c << H3MEM_SHIFT;
}

static void *
h3mem_calloc(size_t nmemb, size_t size, void *user_data)
{
	void *p;

	if (size != 0 && nmemb > SIZE_MAX / size)
		return NULL;
	if ((p = h3mem_malloc(nmemb * size, user_data)) != NULL)
		memset(p, 0, nmemb * size);
	return p;
}

/* Growing goes through the classes too: nghttp3 grows a block per request. */
static void *
h3mem_realloc(void *p, size_t size, void *user_data)
{
	size_t have;
	void *np;

	if (p == NULL)
		return h3mem_malloc(size, user_data);
	if (size == 0) {
		h3mem_free(p, user_data);
		return NULL;
	}
	if (size <= (have = malloc_usable_size(p)))
		return p;
	if ((np = h3mem_malloc(size, user_data)) == NULL)
		return NULL;
	memcpy(np, p, have);
	h3mem_free(p, user_data);
	return np;
}

static const nghttp3_mem h3mem = {
	.malloc = h3mem_malloc,
	.free = h3mem_free,
	.calloc = h3mem_calloc,
	.realloc = h3mem_realloc,
};

/* Bytes of nghttp3's freed blocks kept for reuse. */
size_t
h3_mem_kept(void)
{
	return h3mem_bytes;
}

/* Bytes nghttp3 holds now, in all its connections, by block size. */
size_t
h3_mem_live(void)
{
	return h3mem_live;
}

const nghttp3_mem *
h3_mem(void)
{
	return &h3mem;
}

/* Frees the kept blocks (at exit: LeakSanitizer cannot follow them). */
void
h3_mem_drain(void)
{
	for (size_t c = 1; c <= H3MEM_CLASSES; c++)
		freelist_drain(&h3mem_class[c], c << H3MEM_SHIFT);
	h3mem_bytes = 0;
}

void
h3_consumed(struct qconn *qc, int64_t stream_id, size_t n)
{
	if (n == 0)
		return;
	ngtcp2_conn_extend_max_stream_offset(qc->conn, stream_id, n);
	ngtcp2_conn_extend_max_offset(qc->conn, n);
	qconn_want_write(qc);
}

int
h3_reset_stream(struct qconn *qc, int64_t stream_id, uint64_t code)
{
	int rv;

	rv = ngtcp2_conn_shutdown_stream(qc->conn, 0, stream_id, code);
	if (qc->h3 != NULL) {
		nghttp3_conn_shutdown_stream_write(qc->h3, stream_id);
		(void)nghttp3_conn_shutdown_stream_read(qc->h3, stream_id);
	}
	qconn_want_write(qc);
	return rv == 0 ? 0 : -1;
}

void
h3_stop_reading(struct qconn *qc, int64_t stream_id)
{
	ngtcp2_conn_shutdown_stream_read(qc->conn, 0, stream_id,
	    NGHTTP3_H3_NO_ERROR);
	if (qc->h3 != NULL)
		(void)nghttp3_conn_shutdown_stream_read(qc->h3, stream_id);
	qconn_want_write(qc);
}

static const nghttp3_data_reader *
body_reader(void);

/*
 * While the client gives qproxy's QPACK encoder stream no credit, fields
 * go as literals: nghttp3 would go on adding their values to the dynamic
 * table, and the instructions that say so would wait, unsent, for as long
 * as the client liked, one more batch at each response (RFC 9204 2.1.3:
 * an encoder SHOULD NOT write instructions the peer's credit cannot take).
 */
static void
h3_fields_literal(struct qconn *qc, nghttp3_nv *nva, size_t n)
{
	if (!qc->qenc_blocked)
		return;
	for (size_t i = 0; i < n; i++)
		nva[i].flags |= NGHTTP3_NV_FLAG_NEVER_INDEX;
}

bool
h3_fields_fit(const struct qconn *qc, const nghttp3_nv *nva, size_t n,
    uint64_t *size)
{
	uint64_t total = 0;

	for (size_t i = 0; i < n; i++)
		total += field_line_size(nva[i].namelen, nva[i].valuelen);
	*size = total;
	return total <= qc->peer_fields_max;
}

int
h3_submit_response(struct qconn *qc, int64_t stream_id, nghttp3_nv *nva,
    size_t n, bool with_body)
{
	int rv;

	h3_fields_literal(qc, nva, n);
	rv = nghttp3_conn_submit_response(qc->h3, stream_id, nva, n,
	    with_body ? body_reader() : NULL);
	if (rv != 0) {
		log_warnx("%s: nghttp3_conn_submit_response: %s", qc->peer,
		    nghttp3_strerror(rv));
		return -1;
	}
	qconn_want_write(qc);
	return 0;
}

int
h3_submit_info(struct qconn *qc, int64_t stream_id, nghttp3_nv *nva,
    size_t n)
{
	h3_fields_literal(qc, nva, n);
	if (nghttp3_conn_submit_info(qc->h3, stream_id, nva, n) != 0)
		return -1;
	qconn_want_write(qc);
	return 0;
}

int
h3_submit_trailers(struct qconn *qc, int64_t stream_id, nghttp3_nv *nva,
    size_t n)
{
	int rv;

	h3_fields_literal(qc, nva, n);
	if ((rv = nghttp3_conn_submit_trailers(qc->h3, stream_id, nva,
	    n)) != 0) {
		log_warnx("%s: nghttp3_conn_submit_trailers: %s", qc->peer,
		    nghttp3_strerror(rv));
		return -1;
	}
	qconn_want_write(qc);
	return 0;
}

void
h3_resume(struct qconn *qc, int64_t stream_id)
{
	(void)nghttp3_conn_resume_stream(qc->h3, stream_id);
	qconn_want_write(qc);
}

/*
 * nghttp3 1.8.0 can lose the FIN of a response whose end comes after all
 * its bytes were handed out: a body delimited by the backend's close, or
 * a chunked one whose last chunk comes alone. read_data's bare EOF puts
 * an empty buffer on the stream's queue to carry the FIN. When ngtcp2
 * does not take the FIN as it is offered (the packet is full, lost
 * packets go again first, the congestion window is full) and the ACK of
 * the stream's last bytes comes before it does, nghttp3 drops that empty
 * buffer with the bytes ACKed (fixed in 1.9.0): the FIN is offered once
 * more, and taken off the schedule as it is. Not taken that time either,
 * it is never offered again: the stream stays open, its response whole
 * but for its end, until the client gives up on it.
 * So a FIN offered alone that ngtcp2 did not take is owed: offered again
 * from here, before anything of nghttp3's, until ngtcp2 takes it (or the
 * stream is gone); nghttp3 then hears that it went (add_write_offset of
 * 0 bytes), as of any FIN it offered itself.
 */
nghttp3_ssize
h3_writev(nghttp3_conn *h3, int64_t *owed, bool credit, int64_t *pstream_id,
    int *pfin, nghttp3_vec *vec, size_t veccnt)
{
	*pstream_id = -1;
	*pfin = 0;
	if (*owed >= 0) {
		*pstream_id = *owed;
		*pfin = 1;
		return 0;
	}
	if (h3 == NULL || !credit)
		return 0;
	return nghttp3_conn_writev_stream(h3, pstream_id, pfin, vec, veccnt);
}

void
h3_fin_offered(int64_t *owed, int64_t stream_id, bool taken)
{
	*owed = taken ? -1 : stream_id;
}

void
h3_goaway(struct qconn *qc)
{
	if (qc->h3 == NULL || qc->goaway_sent)
		return;
	/* The last stream we saw will be served; later ones are refused. */
	if (nghttp3_conn_shutdown(qc->h3) == 0) {
		qc->goaway_sent = true;
		qc->goaway_at = mono_now();
	}
}

void
h3_goaway_notice(struct qconn *qc)
{
	if (qc->h3 == NULL || qc->goaway_sent)
		return;
	if (nghttp3_conn_submit_shutdown_notice(qc->h3) == 0) {
		qc->notice_sent = true;
		qc->notice_offset = qc->ctrl_written;
	}
}

void
h3_goaway_shutdown(struct qconn *qc)
{
	if (qc->srv->shutdown_notice)
		h3_goaway_notice(qc);
	else
		h3_goaway(qc);
}

/*
 * The client's control stream is followed frame by frame for two faults
 * of nghttp3 1.8.0's in reading a PRIORITY_UPDATE, both at where a call
 * to it ends:
 * - a call that ends just after the frame's element ID, its Priority
 *   Field Value still to come, aborts the process (an assertion; nghttp3
 *   1.10.0 returns instead). Chromium sends a PRIORITY_UPDATE for about
 *   every request, and a packet may end anywhere.
 * - a value longer than its 8-byte buffer is ignored, but if a call ended
 *   within the first 8 bytes, those stay in the buffer (fixed in 1.11.0):
 *   the connection's next PRIORITY_UPDATE is read after them, and is
 *   refused (the connection closed) or gets a priority the client did not
 *   ask for.
 * So a call is never made to end there: the ID's last byte and the
 * value's first bytes are kept back until the value's first 9 bytes (or
 * the whole of a shorter one) can go in one call. The walk reads frames as
 * nghttp3 1.8.0 does: GOAWAY and MAX_PUSH_ID as their ID alone, whatever
 * length they claim; frame types it refuses end the walk (and the
 * connection).
 */
#define H3_FRAME_SETTINGS		0x04
#define H3_FRAME_GOAWAY			0x07
#define H3_FRAME_MAX_PUSH_ID		0x0d
#define H3_FRAME_PRIORITY_UPDATE	0xf0700	/* RFC 9218 7.1 */
enum {
	H3_CTRL_TYPE, H3_CTRL_LEN,
	H3_CTRL_ID,		/* GOAWAY's or MAX_PUSH_ID's, and no more */
	H3_CTRL_ELEM,		/* PRIORITY_UPDATE's element ID */
	H3_CTRL_BODY,
	H3_CTRL_OFF		/* a frame nghttp3 refuses: not followed */
};

/* Reads a varint a byte at a time: whether it is whole with b. */
static bool
h3_ctrl_varint(struct h3_ctrl *c, uint8_t b)
{
	if (c->vleft == 0) {
		c->vleft = (uint8_t)(1 << (b >> 6));
		c->v = b & 0x3f;
	} else
		c->v = c->v << 8 | b;
	return --c->vleft == 0;
}

/* Follows the control stream through len more bytes. */
static void
h3_ctrl_walk(struct h3_ctrl *c, const uint8_t *p, size_t len)
{
	uint64_t take;

	while (len > 0) {
		switch (c->st) {
		case H3_CTRL_TYPE:
			if (h3_ctrl_varint(c, *p)) {
				c->type = c->v;
				c->st = H3_CTRL_LEN;
			}
			break;
		case H3_CTRL_LEN:
			if (!h3_ctrl_varint(c, *p))
				break;
			c->left = c->v;
			if (c->type == H3_FRAME_GOAWAY ||
			    c->type == H3_FRAME_MAX_PUSH_ID)
				c->st = c->left > 0 ? H3_CTRL_ID : H3_CTRL_OFF;
			else if (c->type == H3_FRAME_PRIORITY_UPDATE)
				c->st = c->left > 0 ? H3_CTRL_ELEM :
				    H3_CTRL_OFF;
			else if (c->type == H3_FRAME_PRIORITY_UPDATE + 1 ||
			    (c->type <= 0x09 && c->type != H3_FRAME_SETTINGS))
				/*
				 * a push's PRIORITY_UPDATE; DATA, HEADERS,
				 * CANCEL_PUSH, PUSH_PROMISE, and HTTP/2's
				 * PRIORITY, PING, WINDOW_UPDATE, CONTINUATION:
				 * refused (GOAWAY, 0x07, is taken above)
				 */
				c->st = H3_CTRL_OFF;
			else
				c->st = c->left > 0 ? H3_CTRL_BODY :
				    H3_CTRL_TYPE;
			break;
		case H3_CTRL_ID:
		case H3_CTRL_ELEM:
			c->left--;
			if (h3_ctrl_varint(c, *p)) {
				if (c->st == H3_CTRL_ID || c->left == 0)
					c->st = H3_CTRL_TYPE;
				else {
					c->st = H3_CTRL_BODY;
					c->vlen = c->left;
				}
			} else if (c->left == 0)
				c->st = H3_CTRL_OFF;	/* refused */
			break;
		case H3_CTRL_BODY:
			take = len < c->left ? len : c->left;
			c->left -= take;
			if (c->left == 0)
				c->st = H3_CTRL_TYPE;
			p += take;
			len -= take;
			continue;
		default:
			return;
		}
		p++;
		len--;
	}
}

/*
 * Whether a call to nghttp3 may end here: not within a PRIORITY_UPDATE's
 * value before its first byte, or before its ninth if it has more than 8.
 */
static bool
h3_ctrl_may_end(const struct h3_ctrl *c)
{
	uint64_t seen;

	if (c->st != H3_CTRL_BODY || c->type != H3_FRAME_PRIORITY_UPDATE)
		return true;
	seen = c->vlen - c->left;
	return seen > 0 && (c->vlen <= H3_PRI_FIELDBUF ||
	    seen > H3_PRI_FIELDBUF);
}

int
h3_ctrl_feed(struct h3_ctrl *c, int64_t stream_id, const uint8_t *data,
    size_t len, bool fin, h3_reader read, void *arg)
{
	uint64_t i = (uint64_t)stream_id >> 2;
	size_t skip = 0, keep;
	int rv;

	if (stream_id != c->stream) {
		/*
		 * a client's unidirectional stream whose type is yet unread:
		 * the control stream's is 0 (RFC 9114 6.2.1)
		 */
		if ((stream_id & 3) != 2 || i >= QUIC_UNI_STREAMS ||
		    c->typed[i])
			return read(arg, stream_id, data, len, fin);
		while (skip < len && !c->typed[i]) {
			if (c->tleft[i] == 0) {
				c->tleft[i] = (uint8_t)(1 << (data[skip] >> 6));
				c->tzero[i] = (data[skip] & 0x3f) == 0;
			} else if (data[skip] != 0)
				c->tzero[i] = false;
			c->typed[i] = --c->tleft[i] == 0;
			skip++;
		}
		/* nghttp3 refuses a second control stream itself */
		if (!c->typed[i] || !c->tzero[i] || c->stream >= 0)
			return read(arg, stream_id, data, len, fin);
		c->stream = stream_id;
	}
	if (fin) {	/* nghttp3 refuses a control stream that ends */
		c->nheld = 0;
		return read(arg, stream_id, data, len, fin);
	}
	/* bytes kept back go on with the next until a call may end */
	while (c->nheld > 0 && len > 0) {
		h3_ctrl_walk(c, data, 1);
		c->held[c->nheld++] = *data++;
		len--;
		if (h3_ctrl_may_end(c)) {
			keep = c->nheld;
			c->nheld = 0;
			if ((rv = read(arg, stream_id, c->held, keep,
			    false)) != 0)
				return rv;
		}
	}
	if (len == 0)
		return 0;
	h3_ctrl_walk(c, data + skip, len - skip);
	/* the element ID's last byte and the value's bytes so far */
	keep = h3_ctrl_may_end(c) ? 0 : (size_t)(1 + c->vlen - c->left);
	memcpy(c->held, data + len - keep, keep);
	c->nheld = (uint8_t)keep;
	return len > keep ? read(arg, stream_id, data, len - keep, false) : 0;
}

static int	h3_read(void *, int64_t, const uint8_t *, size_t, bool);

int
h3_recv_stream_data(struct qconn *qc, int64_t stream_id, const uint8_t *data,
    size_t len, bool fin)
{
	return h3_ctrl_feed(&qc->ctrl_in, stream_id, data, len, fin, h3_read,
	    qc);
}

static int
h3_read(void *arg, int64_t stream_id, const uint8_t *data, size_t len,
    bool fin)
{
	struct qconn *qc = arg;
	struct exchange *ex;
	nghttp3_ssize n;

	if (qc->h3 == NULL)
		return -1;
	qc->rd_stream = stream_id;
	qc->rd_delivered = 0;
	n = nghttp3_conn_read_stream(qc->h3, stream_id, data, len, fin);
	qc->rd_stream = -1;
	if (n == NGHTTP3_ERR_MALFORMED_HTTP_MESSAGING &&
	    ngtcp2_is_bidi_stream(stream_id)) {
		/*
		 * A body that disagrees with its Content-Length, or a HEADERS
		 * frame with no field section at all. nghttp3 calls it a
		 * connection error; RFC 9114 4.1.2 lets it be a stream
		 * error, which spares the connection's other requests. Not so
		 * when it comes from reading the QPACK encoder stream: the
		 * request was blocked on it, and its fault is not the encoder
		 * stream's, which must never be stopped (RFC 9204 4.2). The
		 * connection is closed then, with H3_MESSAGE_ERROR.
		 */
		if ((ex = exchange_find(qc, stream_id)) != NULL)
			exchange_malformed(ex);
		else {
			/* the empty HEADERS: no request began */
			stats.requests_malformed++;
			h3_reset_stream(qc, stream_id, NGHTTP3_H3_MESSAGE_ERROR);
		}
		/*
		 * The body bytes handed on before the error are credited by
		 * whoever took them (the exchange, as it ends): the rest of
		 * the datagram's bytes here, once.
		 */
		h3_consumed(qc, stream_id, len - MIN(len, qc->rd_delivered));
		return 0;
	}
	if (n < 0 && qc->fields_flood) {
		static struct log_limit lim;

		log_limited(&lim, LOG_LEVEL_INFO, "%s: stream %lld: field "
		    "sections past twice max_header_size, closing", qc->peer,
		    (long long)stream_id);
		stats.closed_field_floods++;
		ngtcp2_ccerr_set_application_error(&qc->last_error,
		    NGHTTP3_H3_EXCESSIVE_LOAD, NULL, 0);
		return -1;
	}
	if (n == NGHTTP3_ERR_QPACK_FATAL && qc->qdec_blocked) {
		static struct log_limit lim;

		/*
		 * The decoder's instructions waited, unsent for want of the
		 * client's credit on qproxy's decoder stream, past nghttp3's
		 * bound (set at h3_conn_setup): nothing the client sent is
		 * wrong, but what it makes qproxy hold would grow without end.
		 */
		log_limited(&lim, LOG_LEVEL_INFO, "%s: QPACK decoder stream "
		    "held by the client's credit, closing", qc->peer);
		stats.closed_qpack_decoder_held++;
		ngtcp2_ccerr_set_application_error(&qc->last_error,
		    NGHTTP3_H3_EXCESSIVE_LOAD, NULL, 0);
		return -1;
	}
	if (n < 0) {
		/* QPACK abuse lands here too: a table or blocked-stream limit */
		if (n != NGHTTP3_ERR_NOMEM && n != NGHTTP3_ERR_CALLBACK_FAILURE)
			stats.closed_protocol_errors++;
		log_debug("%s: nghttp3_conn_read_stream: %s", qc->peer,
		    nghttp3_strerror((int)n));
		/*
		 * A field past nghttp3's bounds (a name over 256 bytes or a
		 * value over 64 KiB, as encoded) leaves its QPACK decoder
		 * unable to go on: the connection ends, but it is the client's
		 * load, not a fault of qproxy's (H3_INTERNAL_ERROR).
		 */
		ngtcp2_ccerr_set_application_error(&qc->last_error,
		    n == NGHTTP3_ERR_QPACK_HEADER_TOO_LARGE ?
		    NGHTTP3_H3_EXCESSIVE_LOAD :
		    nghttp3_err_infer_quic_app_error_code((int)n), NULL, 0);
		return -1;
	}
	h3_consumed(qc, stream_id, (size_t)n);
	return 0;
}

/* nghttp3 callbacks */

static int
acked_stream_data(nghttp3_conn *h3, int64_t stream_id, uint64_t len,
    void *user_data, void *stream_user_data)
{
	struct qconn *qc = user_data;

	/* the client is reading: send_timeout counts from here */
	if (qc->send_mark != 0)
		qc->send_mark = mono_now();
	if (stream_user_data != NULL)
		exchange_acked(stream_user_data, len);
	return 0;
}

static int
stream_close(nghttp3_conn *h3, int64_t stream_id, uint64_t app_error_code,
    void *user_data, void *stream_user_data)
{
	struct qconn *qc = user_data;

	if (stream_user_data != NULL)
		exchange_stream_closed(stream_user_data);
	if (ngtcp2_is_bidi_stream(stream_id) &&
	    !ngtcp2_conn_is_local_stream(qc->conn, stream_id))
		ngtcp2_conn_extend_max_streams_bidi(qc->conn, 1);
	return 0;
}

static int
recv_data(nghttp3_conn *h3, int64_t stream_id, const uint8_t *data,
    size_t len, void *user_data, void *stream_user_data)
{
	struct qconn *qc = user_data;

	if (stream_id == qc->rd_stream)
		qc->rd_delivered += len;
	if (stream_user_data != NULL)
		exchange_body(stream_user_data, data, len);
	else
		h3_consumed(qc, stream_id, len);
	return 0;
}

static int
deferred_consume(nghttp3_conn *h3, int64_t stream_id, size_t consumed,
    void *user_data, void *stream_user_data)
{
	h3_consumed(user_data, stream_id, consumed);
	return 0;
}

static int
begin_headers(nghttp3_conn *h3, int64_t stream_id, void *user_data,
    void *stream_user_data)
{
	struct qconn *qc = user_data;
	struct exchange *ex;

	if ((ex = exchange_new(qc, stream_id)) == NULL) {
		h3_reset_stream(qc, stream_id, NGHTTP3_H3_INTERNAL_ERROR);
		return 0;
	}
	nghttp3_conn_set_stream_user_data(h3, stream_id, ex);
	ngtcp2_conn_set_stream_user_data(qc->conn, stream_id, ex);
	/* this one is served; GOAWAY sends the client elsewhere for more */
	if (qc->streams_total >= qc->gen->cfg->max_requests_per_conn &&
	    !qc->goaway_sent) {
		h3_goaway(qc);
		stats.goaway_max_requests++;
	}
	return 0;
}

/* A field of the head (trailer false) or of the trailer section. */
static int
recv_field(struct qconn *qc, void *stream_user_data, nghttp3_rcbuf *name,
    nghttp3_rcbuf *value, bool trailer)
{
	nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
	nghttp3_vec v = nghttp3_rcbuf_get_buf(value);

	if (stream_user_data == NULL || (trailer ?
	    exchange_trailer(stream_user_data, n.base, n.len, v.base, v.len) :
	    exchange_field(stream_user_data, n.base, n.len, v.base, v.len)))
		return 0;
	/* no more of it is decoded: h3_read closes the connection */
	qc->fields_flood = true;
	return NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int
recv_header(nghttp3_conn *h3, int64_t stream_id, int32_t token,
    nghttp3_rcbuf *name, nghttp3_rcbuf *value, uint8_t flags,
    void *user_data, void *stream_user_data)
{
	return recv_field(user_data, stream_user_data, name, value, false);
}

static int
recv_trailer(nghttp3_conn *h3, int64_t stream_id, int32_t token,
    nghttp3_rcbuf *name, nghttp3_rcbuf *value, uint8_t flags,
    void *user_data, void *stream_user_data)
{
	return recv_field(user_data, stream_user_data, name, value, true);
}

static int
end_headers(nghttp3_conn *h3, int64_t stream_id, int fin, void *user_data,
    void *stream_user_data)
{
	if (stream_user_data != NULL)
		exchange_headers_end(stream_user_data, fin != 0);
	return 0;
}

static int
end_trailers(nghttp3_conn *h3, int64_t stream_id, int fin, void *user_data,
    void *stream_user_data)
{
	if (stream_user_data != NULL)
		exchange_trailers_end(stream_user_data);
	return 0;
}

static int
end_stream(nghttp3_conn *h3, int64_t stream_id, void *user_data,
    void *stream_user_data)
{
	if (stream_user_data != NULL)
		exchange_body_end(stream_user_data);
	return 0;
}

static int
stop_sending(nghttp3_conn *h3, int64_t stream_id, uint64_t code,
    void *user_data, void *stream_user_data)
{
	struct qconn *qc = user_data;

	if (code == NGHTTP3_H3_MESSAGE_ERROR)
		stats.requests_malformed++;	/* found by nghttp3 itself */
	ngtcp2_conn_shutdown_stream_read(qc->conn, 0, stream_id, code);
	return 0;
}

static int
reset_stream(nghttp3_conn *h3, int64_t stream_id, uint64_t code,
    void *user_data, void *stream_user_data)
{
	struct qconn *qc = user_data;

	ngtcp2_conn_shutdown_stream_write(qc->conn, 0, stream_id, code);
	return 0;
}

static nghttp3_ssize
read_data(nghttp3_conn *h3, int64_t stream_id, nghttp3_vec *vec,
    size_t veccnt, uint32_t *pflags, void *user_data, void *stream_user_data)
{
	if (stream_user_data == NULL) {
		*pflags |= NGHTTP3_DATA_FLAG_EOF;
		return 0;
	}
	return exchange_read_data(stream_user_data, vec, veccnt, pflags);
}

static const nghttp3_data_reader reader = { read_data };

static const nghttp3_data_reader *
body_reader(void)
{
	return &reader;
}

/*
 * The client's SETTINGS. Of them qproxy keeps the largest field section
 * it will take: a section over it SHOULD NOT be sent (RFC 9114 4.2.2),
 * the client would likely refuse it, and perhaps the connection with it.
 */
static int
recv_settings(nghttp3_conn *conn, const nghttp3_settings *settings,
    void *conn_user_data)
{
	struct qconn *qc = conn_user_data;

	(void)conn;
	qc->peer_fields_max = settings->max_field_section_size;
	return 0;
}

static const nghttp3_callbacks h3_callbacks = {
	.acked_stream_data = acked_stream_data,
	.stream_close = stream_close,
	.recv_data = recv_data,
	.deferred_consume = deferred_consume,
	.begin_headers = begin_headers,
	.recv_header = recv_header,
	.recv_trailer = recv_trailer,
	.end_headers = end_headers,
	.end_trailers = end_trailers,
	.stop_sending = stop_sending,
	.end_stream = end_stream,
	.reset_stream = reset_stream,
	.recv_settings = recv_settings,
};

int
h3_conn_setup(struct qconn *qc)
{
	const struct config *cfg = qc->gen->cfg;
	nghttp3_settings settings;
	uint64_t max_streams;
	int64_t ctrl, qenc, qdec;
	int rv;

	if (qc->h3 != NULL)
		return 0;
	if (ngtcp2_conn_get_streams_uni_left(qc->conn) < 3) {
		log_debug("%s: peer allows fewer than 3 uni streams", qc->peer);
		return -1;
	}
	nghttp3_settings_default(&settings);
	settings.max_field_section_size = cfg->max_header_size;
	/* RFC 9220: WebSockets by extended CONNECT (exchange.c) */
	settings.enable_connect_protocol = 1;
	settings.qpack_max_dtable_capacity = cfg->qpack_table_size;
	settings.qpack_encoder_max_dtable_capacity = cfg->qpack_table_size;
	settings.qpack_blocked_streams = cfg->qpack_blocked_streams;
	/* none until the client's SETTINGS say otherwise */
	qc->peer_fields_max = UINT64_MAX;
	/* the same allocator, counting for this connection too */
	qc->h3mem = h3mem;
	qc->h3mem.user_data = qc;
	rv = nghttp3_conn_server_new(&qc->h3, &h3_callbacks, &settings,
	    &qc->h3mem, qc);
	if (rv != 0) {
		log_warnx("%s: nghttp3_conn_server_new: %s", qc->peer,
		    nghttp3_strerror(rv));
		return -1;
	}
	max_streams = ngtcp2_conn_get_local_transport_params(qc->conn)->
	    initial_max_streams_bidi;
	nghttp3_conn_set_max_client_streams_bidi(qc->h3, max_streams);
	/*
	 * The QPACK decoder's instructions (a Section Acknowledgment for
	 * each request that names the dynamic table, a Stream Cancellation
	 * for each reset) wait in nghttp3 until the next write; past 20
	 * bytes for each stream the client may have open (100 unless told)
	 * nghttp3 takes the client for one that withholds the decoder
	 * stream's credit and fails the connection (ERR_QPACK_FATAL; h3_read
	 * closes it with H3_EXCESSIVE_LOAD when that stream is blocked).
	 * Some 670 requests (3 bytes each) read between two writes went
	 * past the 2,000 bytes of 100 streams.
	 */
	nghttp3_conn_set_max_concurrent_streams(qc->h3, (size_t)max_streams);
	if (ngtcp2_conn_open_uni_stream(qc->conn, &ctrl, NULL) != 0 ||
	    nghttp3_conn_bind_control_stream(qc->h3, ctrl) != 0 ||
	    ngtcp2_conn_open_uni_stream(qc->conn, &qenc, NULL) != 0 ||
	    ngtcp2_conn_open_uni_stream(qc->conn, &qdec, NULL) != 0 ||
	    nghttp3_conn_bind_qpack_streams(qc->h3, qenc, qdec) != 0) {
		log_warnx("%s: cannot open HTTP/3 streams", qc->peer);
		return -1;
	}
	qc->qenc_stream = qenc;
	qc->qdec_stream = qdec;
	qc->ctrl_stream = ctrl;
	if (qc->srv->shutting_down && !qc->upgrade_grace)
		h3_goaway_shutdown(qc);
	return 0;
}
