/*
 * conn.h: the QUIC server and its connections, shared by quic.c (transport),
 * h3.c (HTTP/3 on top) and exchange.c (requests). Everything here belongs to
 * the one event loop; nothing is touched from another thread.
 */
#ifndef QPROXY_CONN_H
#define QPROXY_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <ev.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <nghttp3/nghttp3.h>

#include "addr.h"
#include "config.h"
#include "hist.h"
#include "tls.h"
#include "udp.h"

#define QUIC_SCID_LEN		16
#define QUIC_UNI_STREAMS	3	/* the client's: control, QPACK x 2 */
#define QUIC_UNI_WINDOW		(256u * 1024)	/* bytes per uni stream */
#define QUIC_CID_LIMIT		7	/* active_connection_id_limit */
/* configurations held at once, the running one included (server.c) */
#define SERVER_CONFIGS_MAX	8
#define QUIC_MAX_PKTLEN		1452	/* UDP payload we send at most */
#define QUIC_MAX_CLIENT_HELLO	16384	/* Initial CRYPTO bytes taken */
#define QUIC_GSO_MAX		64	/* datagrams in one sendmsg */
/* and bytes: one UDP send carries at most 65507 (IPv4) */
#define QUIC_GSO_MAX_BYTES	65000
/* full-sized datagrams that always fit in one send */
#define QUIC_TRAIN_PKTS		(QUIC_GSO_MAX_BYTES / QUIC_MAX_PKTLEN < \
				    QUIC_GSO_MAX ? QUIC_GSO_MAX_BYTES / \
				    QUIC_MAX_PKTLEN : QUIC_GSO_MAX)

struct qconn;
struct exchange;
struct upstream_pool;

/*
 * A UDP socket outlives configurations: a reload that keeps its address
 * hands it to the new listener; one that drops it leaves it draining (no
 * new connections) until its last connection is gone.
 */
struct udp_sock {
	struct quic_server	*srv;
	struct listener		*listener;	/* NULL: draining */
	int			 fd;
	struct addr		 local;		/* as bound */
	ev_io			 rev, wev;
	TAILQ_HEAD(, qconn)	 blocked;	/* connections with a packet */
	size_t			 nconns;
	uint64_t		 conns_total;	/* accepted on this address */
	bool			 reading;	/* in its read callback */
	size_t			 rx_largest;	/* message read of late */
	LIST_ENTRY(udp_sock)	 entry;
};

struct listener {
	struct generation	*gen;
	struct config_listener	*cfg;
	WOLFSSL_CTX		*tls;
};

/*
 * One loaded configuration with what was built from it. Connections and
 * requests hold the generation they started under; a reload makes a new
 * one, and the old one goes when its last holder does.
 */
/*
 * A route's requests, for qproxyctl metrics: a reload hands them on to
 * the route of the same name, so that they go on counting.
 */
struct route_stats {
	unsigned		 refs;
	char			*name;
	uint64_t		 requests;
	uint64_t		 responses[6];	/* by status class, 1xx..5xx */
	struct hist		 duration;
	/* max_request_rate's budget (bucket.h); rate_at 0: none taken */
	double			 rate_budget, rate_at;
	uint64_t		 rate_limited;	/* 429s for it */
};

struct generation {
	unsigned		 refs;
	uint64_t		 id;
	TAILQ_ENTRY(generation)	 entry;		/* applied ones, oldest first */
	bool			 listed;
	struct config		*cfg;
	struct upstream_pool	*upstreams;	/* one per config backend */
	struct listener		*listeners;
	size_t			 nlisteners;
	struct route_stats	**routes;	/* one per config route */
	size_t			 nroutes;
};

struct cid_entry;
struct clients;
struct client;
struct cid_lb;

struct quic_server {
	struct ev_loop		*loop;
	struct generation	*gen;		/* the current one */
	LIST_HEAD(, udp_sock)	 socks;
	double			 started;	/* mono_now */

	struct cid_entry	**buckets;	/* CID -> connection */
	size_t			 nbuckets, ncids;
	struct cid_entry	*last_cid;	/* the last one found */
	uint64_t		 hashkey[2];
	struct replay		*tokens_taken;	/* NEW_TOKEN tokens, once */
	struct clients		*clients;	/* connections by client */
	struct cid_lb		*cid_lb;	/* QUIC-LB, or NULL: random */
	size_t			 cid_len;	/* of the CIDs it issues */
	bool			 cid_lb_warned;	/* its nonces ran out */

	LIST_HEAD(, qconn)	 conns;		/* newest first */
	LIST_HEAD(, conns_cursor) cursors;	/* on conns: conns replies */
	TAILQ_HEAD(, qconn)	 want_write;
	ev_prepare		 flush;		/* writes, once per iteration */
	ev_timer		 sweep;		/* send_timeout, each second */
	bool			 trim_due;	/* malloc_trim once idle */
	ev_idle			 kick;		/* keeps the loop from sleeping */
	ev_check		 batch;		/* batch_delay, when busy */
	ev_tstamp		 batch_mark;	/* ev_now at the window's start */
	double			 batch_start;	/* CLOCK_MONOTONIC then */
	double			 batch_cpu;	/* the thread's CPU time then */
	bool			 batching;	/* waiting batch_delay now */
	uint64_t		 batch_turns;	/* of the loop in the window */
	uint64_t		 batch_datagrams; /* datagrams_received then */

	uint8_t			 secret[32];	/* from secret_file */
	double			 reset_budget;	/* stateless resets, refilled */
	ev_tstamp		 reset_refill;
	bool			 shutting_down;
	/*
	 * shutting down, GOAWAY's notice sent (every stream ID still
	 * taken): a connection's final GOAWAY once its client acknowledges
	 * the notice, or at shutdown_timer
	 */
	bool			 shutdown_notice;
	ev_timer		 shutdown_timer;
	ev_periodic		 cert_timer;	/* certificates' dates */
	bool			 no_gso;	/* the kernel refused it */
	struct udp_rx		 rx[UDP_RX_BATCH];	/* 64 KiB buffers */
	uint8_t			 txbuf[QUIC_GSO_MAX_BYTES + QUIC_MAX_PKTLEN];
};

enum qconn_state {
	QC_ACTIVE,
	QC_CLOSING,	/* CONNECTION_CLOSE sent; resent on input */
	QC_DRAINING,	/* peer closed; silent until the timer */
};

/*
 * The client's control stream, followed frame by frame (h3_ctrl_feed).
 * What it may keep back: a PRIORITY_UPDATE's element ID's last byte and
 * the first 8 bytes of its value (nghttp3 1.8.0's value buffer's size),
 * and the ninth while it joins them for one call.
 */
#define H3_PRI_FIELDBUF		8
#define H3_CTRL_HOLD		(1 + H3_PRI_FIELDBUF + 1)
struct h3_ctrl {
	int64_t			 stream;	/* its ID, or -1 */
	/* each client stream's type, a varint, as it comes */
	uint8_t			 tleft[QUIC_UNI_STREAMS];	/* bytes */
	bool			 typed[QUIC_UNI_STREAMS];
	bool			 tzero[QUIC_UNI_STREAMS];	/* so far */
	uint8_t			 st;		/* H3_CTRL_TYPE and on */
	uint8_t			 vleft;		/* varint bytes to come */
	uint8_t			 nheld;
	uint8_t			 held[H3_CTRL_HOLD];	/* bytes kept back */
	uint64_t		 v;		/* the varint so far */
	uint64_t		 type;		/* the frame's */
	uint64_t		 left;		/* its payload bytes to come */
	uint64_t		 vlen;		/* a PRIORITY_UPDATE's value's */
};

/* A client's TLS messages at one level, followed as they come (tls_feed). */
struct tls_in {
	uint8_t			 hdr[4];	/* a message header held */
	uint8_t			 hdrlen;
	uint32_t		 left;		/* body bytes still to come */
	uint32_t		 msgs;		/* messages begun */
	bool			 finished;	/* the client's Finished begun */
};

/*
 * A train the socket refused, with where it goes: allocated with its bytes,
 * so that a connection holds none of it while its sends go through.
 */
struct qpending {
	size_t			 len, off, seg;
	struct addr		 remote, local;
	uint8_t			 ecn;
	uint8_t			 data[];
};

struct qconn {
	struct quic_server	*srv;
	struct generation	*gen;		/* held */
	struct udp_sock		*sock;
	ngtcp2_conn		*conn;
	ngtcp2_mem		 ngmem;		/* ngtcp2's, counted */
	size_t			 ngmem_bytes;	/* what ngtcp2 holds for it */
	nghttp3_conn		*h3;
	nghttp3_mem		 h3mem;		/* nghttp3's, counted */
	size_t			 h3mem_bytes;	/* what nghttp3 holds for it */
	bool			 fields_flood;	/* exchange_field said no */
	size_t			 done_bytes;	/* its exchanges done, still open */
	WOLFSSL			*ssl;
	struct tls_conn		 tls;		/* starts with ngtcp2's ref */
	ngtcp2_ccerr		 last_error;
	enum qconn_state	 state;
	ev_timer		 timer;
	struct cid_entry	*cids;		/* this connection's CIDs */
	char			 peer[INET6_ADDRSTRLEN];
	/* counted under this client while open (not closing) */
	struct client		*client;
	bool			 client_proven;	/* counted in its proven */

	uint8_t			*close_pkt;	/* closing period */
	size_t			 close_pktlen;
	uint64_t		 close_resends;

	/* Datagrams the socket refused (EAGAIN), sent when it is writable. */
	struct qpending		*pending;
	bool			 blocked;
	TAILQ_ENTRY(qconn)	 blocked_entry;

	bool			 write_queued;
	TAILQ_ENTRY(qconn)	 write_entry;
	LIST_ENTRY(qconn)	 entry;

	LIST_HEAD(, exchange)	 exchanges;
	size_t			 nexchanges;
	size_t			 nworking;	/* of those: not yet EX_DONE */
	uint64_t		 streams_total;
	uint64_t		 bytes_in, bytes_out;
	double			 created, last_rx;	/* mono_now */
	bool			 handshake_done;
	bool			 unvalidated;	/* counted in stats */
	/*
	 * The client's address as far as it is proven: its first packet's
	 * (proven once the handshake completes, unvalidated until then),
	 * then each new path's once validated. ngtcp2 takes a packet from a
	 * new address for the path at once, before it is validated: what the
	 * packets say, which anyone may write. allow, deny, trusted_proxies
	 * and client_hash go by this one.
	 */
	struct addr		 proven;
	bool			 rx_0rtt;	/* stream data being read is 0-RTT */
	FILE			*qlog;		/* qlog_dir's file, or NULL */
	char			*qlog_path;	/* removed if the first packet is */
	bool			 accepted;	/* ngtcp2 took its first packet */
	bool			 retry_sent;	/* its first packet got a Retry */
	/* its NEW_TOKEN token, taken once its first packet is */
	bool			 token_pending;
	uint64_t		 token_key;
	bool			 goaway_sent;
	double			 goaway_at;	/* mono_now, when queued */
	/*
	 * A shutdown's GOAWAY notice, queued, and acknowledged (an ACK of
	 * control stream data past notice_offset): then its final GOAWAY
	 */
	bool			 notice_sent, notice_acked;
	int64_t			 ctrl_stream;	/* qproxy's control stream */
	uint64_t		 ctrl_written;	/* its bytes ngtcp2 took */
	uint64_t		 notice_offset;	/* ctrl_written at the notice */
	/*
	 * Its configuration is among the oldest held past SERVER_CONFIGS_MAX:
	 * GOAWAY sent then, closed once its requests are done, or by a
	 * reload shutdown_timeout after
	 */
	bool			 retired;
	/*
	 * in its handshake when an upgrade handed its sockets over: its
	 * first requests are served before its GOAWAY (server_handover)
	 */
	bool			 upgrade_grace;
	double			 grace_mark;	/* its handshake seen done, mono */
	double			 retired_at;	/* mono_now */
	/* max_stream_resets: a budget refilled over RESET_WINDOW seconds */
	double			 reset_budget;
	ev_tstamp		 reset_refill;
	/* send_timeout: since when response data waits without progress */
	double			 send_mark;	/* mono_now; 0: nothing waits */
	/* at the Initial and Handshake levels */
	struct tls_in		 tls_in[2];
	bool			 hello_retried;	/* HelloRetryRequest sent */
	bool			 early_key;	/* a 0-RTT key was installed */
	/*
	 * qproxy's QPACK encoder stream, and whether the client's credit
	 * stopped it (h3_submit_response)
	 */
	int64_t			 qenc_stream;
	bool			 qenc_blocked;
	/* its QPACK decoder stream, and whether the client's credit stops it */
	int64_t			 qdec_stream;
	bool			 qdec_blocked;
	/* the client's SETTINGS_MAX_FIELD_SECTION_SIZE (h3_fields_fit) */
	uint64_t		 peer_fields_max;
	/* a response's FIN nghttp3 offered alone, not yet taken (h3_writev) */
	int64_t			 fin_owed;
	struct h3_ctrl		 ctrl_in;
	/* the request stream being read, and its body bytes handed on */
	int64_t			 rd_stream;
	uint64_t		 rd_delivered;
	/* bytes ngtcp2 saw ACKed, not yet passed to nghttp3 in one call */
	int64_t			 acked_stream;
	uint64_t		 acked_len;
	/*
	 * response_buffer_total (exchange.c): the response chunks its
	 * streams hold, and since when the client has been taking as many
	 * bytes as they held then (a turnover)
	 */
	TAILQ_ENTRY(qconn)	 mem_entry;	/* on mem_holders */
	bool			 mem_held;
	size_t			 mem_chunks;
	size_t			 mem_bytes;	/* held in them; a flow-blocked
					   stream's: its chunks' size */
	size_t			 mem_nwaiting;	/* its streams on mem_waiters */
	double			 mem_mark;	/* this turnover's start: mono_now */
	uint64_t		 mem_taken;	/* bytes taken since */
	uint64_t		 mem_target;	/* held then */
	/* request_buffer_total: the bytes its streams hold for backends */
	size_t			 req_bytes;
};

struct strbuf;

/* server.c */
struct quic_server *server_new(struct ev_loop *);
/*
 * Makes cfg the running configuration: TLS contexts, backend pools, the
 * listeners' sockets (kept, opened, or left to drain). On failure nothing
 * changes and the reasons are in errs. The server owns cfg on success.
 */
int		 server_apply(struct quic_server *, struct config *,
		    struct strbuf *errs);
/*
 * server_apply in two steps, for a worker's reload, which waits between
 * them for the other workers' (workers.c): server_stage does all that can
 * fail (TLS contexts, pools, new addresses' sockets opened but not read)
 * and returns it ready, or NULL with the reasons in errs; then
 * server_commit, which cannot fail, applies it and owns cfg, or
 * server_unstage lets it go, cfg the caller's again. Between the two, no
 * other configuration is applied.
 */
struct server_staged;
struct server_staged *server_stage(struct quic_server *, struct config *,
		    struct strbuf *errs);
void		 server_commit(struct quic_server *, struct server_staged *);
void		 server_unstage(struct server_staged *);
const struct config *server_config(const struct quic_server *);
void		 server_set_secret(struct quic_server *, const uint8_t *,
		    size_t);
/*
 * QUIC-LB connection IDs (cid.h; sidlen 0: random ones), with the key
 * (NULL: none); once, at start, as connections keep the length of theirs.
 * -1: out of memory.
 */
int		 server_set_cid(struct quic_server *, const uint8_t *sid,
		    size_t sidlen, size_t nonce_len, unsigned config_id,
		    const uint8_t *key);
struct generation *generation_ref(struct generation *);
void		 generation_unref(struct generation *);
/* A connection on the socket is gone: a draining one may close. */
void		 server_sock_release(struct udp_sock *);
/* Stops accepting, sends GOAWAY, closes idle connections; see main.c. */
void		 server_shutdown(struct quic_server *);
/* server_shutdown once its sockets are another process's (upgrade.c) */
void		 server_handover(struct quic_server *);
/*
 * its sockets not read until server_take_back (a new worker waiting for
 * the one before to stop reading them, upgrade.c)
 */
void		 server_hold(struct quic_server *);
/* its sockets read (again), the process that took them gone (upgrade.c) */
void		 server_take_back(struct quic_server *);
bool		 server_stopping(const struct quic_server *);
/* Sends CONNECTION_CLOSE on every connection (shutdown_timeout reached). */
void		 server_close_all(struct quic_server *);
void		 server_free(struct quic_server *);
void		 server_report_stats(struct quic_server *, struct strbuf *,
		    bool json);
/*
 * The counters in Prometheus's text format, for qproxyctl metrics, a
 * piece at a time (control.h's stream): next appends the next piece,
 * about limit bytes, to out; 1 while more is to come, else 0. end frees
 * the cursor (NULL: none).
 */
struct metrics_cursor;
struct metrics_cursor *server_metrics_begin(struct quic_server *);
int		 server_metrics_next(struct metrics_cursor *, struct strbuf *out,
		    size_t limit);
void		 server_metrics_end(struct metrics_cursor *);
void		 server_report_tls(struct quic_server *, struct strbuf *, bool);
/*
 * qproxyctl disable (on false) and enable: "BACKEND SERVER". 0 with what
 * was done in out, or -1 with why not.
 */
int		 server_set_server(struct quic_server *, const char *args,
		    bool on, struct strbuf *out);
/* Each route: where it sends requests, how many, their classes, time. */
void		 server_report_routes(struct quic_server *, struct strbuf *,
		    bool json);
void		 server_report_backends(struct quic_server *, struct strbuf *,
		    bool json);

/* quic.c */
/* The limits 0-RTT holds a server to, as text; tickets are bound to it. */
size_t		 quic_0rtt_context(const struct config *, char *, size_t);
void		 quic_init(struct quic_server *);
void		 quic_fini(struct quic_server *);
/* The sizes of its tables (tokens taken, clients), into stats. */
void		 quic_table_stats(struct quic_server *);
void		 quic_sock_read_cb(struct ev_loop *, ev_io *, int);
void		 quic_sock_write_cb(struct ev_loop *, ev_io *, int);
/* A datagram read elsewhere (upgrade.c), as if read from sock. */
void		 quic_feed(struct udp_sock *, const uint8_t *, size_t,
		    const struct addr *remote, const struct addr *local,
		    uint8_t ecn);
/*
 * The conns reply, a piece at a time (control.h's stream): a cursor on
 * the connections open now, or NULL (out of memory); their next rows into
 * out, about CONTROL_CHUNK bytes, 1 while there are more, else 0; the
 * cursor freed. A connection that ends before its row is left out, and
 * one that begins meanwhile is not shown.
 */
struct conns_cursor;
struct conns_cursor *quic_conns_begin(struct quic_server *, bool json);
int		 quic_conns_next(struct conns_cursor *, struct strbuf *out);
void		 quic_conns_end(struct conns_cursor *);
#define QUIC_PEERS_SHOWN	20
void		 quic_report_peers(struct quic_server *, struct strbuf *,
		    bool json);
/* One row of peers: a client (an address or a /64) and its connections. */
struct peer_row {
	char		 client[INET6_ADDRSTRLEN + 4];
	unsigned	 conns, proven;
};
/* The peers reply, of clients in all and the n rows, most first. */
void		 quic_render_peers(struct strbuf *, bool json, size_t clients,
		    uint64_t limit, const struct peer_row *, size_t n);
/* Asks for this connection's output to be written before the loop sleeps. */
void		 qconn_want_write(struct qconn *);
/*
 * No request under way, and none to come: past a shutdown's final GOAWAY,
 * or its configuration retired. Such a connection is closed (qconn_write).
 */
bool		 qconn_finished(const struct qconn *);
/* Keep the connection alive with PINGs while requests wait (on). */
void		 qconn_keep_alive(struct qconn *, bool on);
/*
 * Closes the connection with last_error (or NO_ERROR); false when it
 * freed it at once, as no close could be written.
 */
bool		 qconn_close(struct qconn *);
/*
 * In a shutdown, a connection that has nothing left to protect is freed
 * at the loop's next turn, not three PTOs after its close, which a slow
 * path makes seconds: one draining (its client closed it: nothing more is
 * sent to it), and one closing whose handshake never completed (no
 * request was served on it; a client that missed the close learns of it
 * from its own handshake timeout, as it would have from a process gone).
 */
void		 qconn_end_period(struct qconn *);
void		 qconn_free(struct qconn *);
uint64_t	 quic_now(void);

/* h3.c */
int		 h3_conn_setup(struct qconn *);
/*
 * Stream data to a reader (nghttp3), past the places where nghttp3 1.8.0
 * reads a PRIORITY_UPDATE wrongly (h3.c): the client's control stream is
 * followed in c.
 */
typedef int	(*h3_reader)(void *arg, int64_t stream_id, const uint8_t *,
		    size_t, bool fin);
int		 h3_ctrl_feed(struct h3_ctrl *c, int64_t stream_id,
		    const uint8_t *data, size_t len, bool fin, h3_reader,
		    void *arg);
/* Feeds stream data to nghttp3; <0 means close the connection. */
int		 h3_recv_stream_data(struct qconn *, int64_t stream_id,
		    const uint8_t *data, size_t len, bool fin);
void		 h3_goaway(struct qconn *);
/* GOAWAY's notice of a shutdown: no new stream, please (RFC 9114 5.2) */
void		 h3_goaway_notice(struct qconn *);
/* A shutdown's GOAWAY: the notice while the server gives it, else the final */
void		 h3_goaway_shutdown(struct qconn *);
/* Gives the peer credit for n request body bytes qproxy consumed. */
void		 h3_consumed(struct qconn *, int64_t stream_id, size_t n);
/* Bytes of nghttp3's freed blocks kept for reuse; drain frees them. */
size_t		 h3_mem_kept(void);
/* Bytes nghttp3 holds now (live blocks), counted by block size. */
size_t		 h3_mem_live(void);
/* Bytes ngtcp2 holds for all connections now, and the most it held. */
size_t		 quic_mem_current(void);
size_t		 quic_mem_highest(void);
/* The allocator given to nghttp3 (for the unit tests). */
const nghttp3_mem *h3_mem(void);
void		 h3_mem_drain(void);
/* The client is asked to stop sending on the stream (H3_NO_ERROR). */
void		 h3_stop_reading(struct qconn *, int64_t stream_id);
/*
 * Resets both directions of a stream with an HTTP/3 error code; -1 when
 * ngtcp2 could not (out of memory): it may still send the stream's data.
 */
int		 h3_reset_stream(struct qconn *, int64_t stream_id,
		    uint64_t code);
/*
 * Whether a field section is within the client's
 * SETTINGS_MAX_FIELD_SECTION_SIZE, as the client counts: *size, the sum
 * of its field_line_size.
 */
bool		 h3_fields_fit(const struct qconn *, const nghttp3_nv *,
		    size_t, uint64_t *size);
/* Each may mark the fields as literals: see h3_fields_literal. */
int		 h3_submit_response(struct qconn *, int64_t stream_id,
		    nghttp3_nv *, size_t, bool with_body);
int		 h3_submit_info(struct qconn *, int64_t stream_id,
		    nghttp3_nv *, size_t);
/* Trailers end the stream: the body's reader ends with NO_END_STREAM. */
int		 h3_submit_trailers(struct qconn *, int64_t stream_id,
		    nghttp3_nv *, size_t);
/* More response body is ready for a stream that had none. */
void		 h3_resume(struct qconn *, int64_t stream_id);
/*
 * What qconn_write gives ngtcp2 next: a FIN owed (*owed: its stream, or
 * -1), else, with connection credit left, nghttp3's next stream data (h3
 * may be NULL: nothing). A FIN offered alone (no vectors) is then owed
 * until h3_fin_offered hears that ngtcp2 took it (or that the stream is
 * gone): see h3.c.
 */
nghttp3_ssize	 h3_writev(nghttp3_conn *h3, int64_t *owed, bool credit,
		    int64_t *pstream_id, int *pfin, nghttp3_vec *vec,
		    size_t veccnt);
void		 h3_fin_offered(int64_t *owed, int64_t stream_id, bool taken);

#endif
