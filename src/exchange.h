/*
 * exchange.h: one request: the bridge between an HTTP/3 request stream and
 * an HTTP/1.1 backend connection, with a bounded buffer each way.
 */
#ifndef QPROXY_EXCHANGE_H
#define QPROXY_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp3/nghttp3.h>

struct qconn;
struct exchange;

/* Called from h3.c as nghttp3 reports the stream's progress. */
struct exchange	*exchange_new(struct qconn *, int64_t stream_id);
/* Bytes of exchanges done whose streams are still open, all together. */
size_t		 exchange_done_bytes(void);
/* false: past twice max_header_size, the connection is to be closed */
bool		 exchange_field(struct exchange *, const uint8_t *name,
		    size_t namelen, const uint8_t *value, size_t valuelen);
void		 exchange_headers_end(struct exchange *, bool fin);
/* The same for the trailer section (false as exchange_field's). */
bool		 exchange_trailer(struct exchange *, const uint8_t *name,
		    size_t namelen, const uint8_t *value, size_t valuelen);
void		 exchange_trailers_end(struct exchange *);
void		 exchange_body(struct exchange *, const uint8_t *, size_t);
void		 exchange_body_end(struct exchange *);
/* nghttp3 found the message malformed (a Content-Length mismatch). */
void		 exchange_malformed(struct exchange *);
/* The client reset its side of the stream. */
void		 exchange_client_reset(struct exchange *);
/*
 * The client stopped reading the stream (STOP_SENDING): true if that cut
 * the exchange short (a tunnel's), to count as a reset.
 */
bool		 exchange_client_stopped(struct exchange *);
nghttp3_ssize	 exchange_read_data(struct exchange *, nghttp3_vec *,
		    size_t veccnt, uint32_t *pflags);
void		 exchange_acked(struct exchange *, uint64_t n);
/* The exchange on a stream, or NULL (a walk: for rare paths only). */
struct exchange	*exchange_find(struct qconn *, int64_t stream_id);
/* The stream is gone: frees the exchange. */
void		 exchange_stream_closed(struct exchange *);
/*
 * Writes the request bodies received in this loop iteration (flush_cb),
 * then gives up streams while request_buffer_total is passed.
 */
void		 exchange_flush(void);
/* Frees the exchanges kept for reuse (at exit). */
void		 exchange_cache_free(void);
/* For the statistics: freed exchanges kept for reuse (at most 64). */
size_t		 exchange_cached(void);
/* For the statistics: chunks of response bytes held (BUFQ_CHUNK_SIZE). */
size_t		 exchange_response_chunks(void);
/* For the statistics: bytes of request heads and bodies held for backends. */
size_t		 exchange_request_bytes(void);
/* Whether response bytes on the connection wait for the client. */
bool		 exchange_conn_sending(const struct qconn *);
/*
 * The stream closes: if the exchange was still at work (true), the client
 * cut it short (STOP_SENDING); it is counted as reset, and freed with the
 * stream. exchange_charge_cancel:
 * whether this is the stream's first cancel to count on max_stream_resets.
 */
bool		 exchange_cut_short(struct exchange *);
bool		 exchange_charge_cancel(struct exchange *);
/* The client's window for the stream is full (true) or was opened again. */
void		 exchange_flow_blocked(struct exchange *, bool);
/* The connection is going away: frees every exchange on it. */
void		 exchange_abort_all(struct qconn *);

#endif
