/*
 * quic.c: the QUIC server: sockets in, connections found by connection ID,
 * ngtcp2 driven through its callbacks, timers and packets out.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/param.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

#include "bucket.h"
#include "cid.h"
#include "clients.h"
#include "clock.h"
#include "conn.h"
#include "control.h"
#include "exchange.h"
#include "log.h"
#include "replay.h"
#include "rng.h"
#include "siphash.h"
#include "stats.h"
#include "strbuf.h"
#include "udp.h"
#include "upgrade.h"
#include "workers.h"
#include "upstream.h"

/* Preference order: v2 for clients that offer it (RFC 9368), else v1. */
static const uint32_t quic_versions[] = {
	NGTCP2_PROTO_VER_V2,
	NGTCP2_PROTO_VER_V1,
};

#define NVERSIONS	(sizeof(quic_versions) / sizeof(quic_versions[0]))
#define RETRY_TOKEN_TIMEOUT	(10 * NGTCP2_SECONDS)
#define REGULAR_TOKEN_TIMEOUT	(24 * 3600 * NGTCP2_SECONDS)
#define TOKENS_TAKEN_MAX	65536	/* remembered, see replay.h */
#define STATELESS_RESET_RATE	100.	/* per second, burst as much */
#define RESET_WINDOW		10	/* seconds: max_stream_resets per this */

struct cid_entry {
	struct cid_entry	*next;		/* in the hash bucket */
	struct cid_entry	*conn_next;	/* in the connection's list */
	struct qconn		*qc;
	ngtcp2_cid		 cid;
};

static void	qconn_write(struct qconn *);
static void	sock_read(struct udp_sock *);
static void	qconn_arm_timer(struct qconn *, ngtcp2_tstamp);

uint64_t
quic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NGTCP2_SECONDS + (uint64_t)ts.tv_nsec;
}

/*
 * Tokens are stamped with the time of day: they outlive a restart (the
 * secret does) and are shared by servers with one secret, where a time
 * since boot would make a token from a host up longer valid for as long
 * as the difference, and one from a host up less void.
 */
static uint64_t
token_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * NGTCP2_SECONDS + (uint64_t)ts.tv_nsec;
}

static struct cid_entry **
cid_bucket(struct quic_server *srv, const uint8_t *cid, size_t len)
{
	return &srv->buckets[siphash24(srv->hashkey, cid, len) &
	    (srv->nbuckets - 1)];
}

/*
 * A bulk transfer brings datagram after datagram for one connection: the
 * last CID found is tried before the hash.
 */
static struct qconn *
cid_find(struct quic_server *srv, const uint8_t *cid, size_t len)
{
	struct cid_entry *e = srv->last_cid;

	if (e != NULL && e->cid.datalen == len &&
	    memcmp(e->cid.data, cid, len) == 0)
		return e->qc;
	for (e = *cid_bucket(srv, cid, len); e != NULL; e = e->next)
		if (e->cid.datalen == len && memcmp(e->cid.data, cid, len) == 0) {
			srv->last_cid = e;
			return e->qc;
		}
	return NULL;
}

static void
cid_grow(struct quic_server *srv)
{
	struct cid_entry **old = srv->buckets, *e, *next, **b;
	size_t n = srv->nbuckets;

	srv->buckets = calloc(n * 2, sizeof(*srv->buckets));
	if (srv->buckets == NULL) {
		srv->buckets = old;	/* keep working with longer chains */
		return;
	}
	srv->nbuckets = n * 2;
	for (size_t i = 0; i < n; i++) {
		for (e = old[i]; e != NULL; e = next) {
			next = e->next;
			b = cid_bucket(srv, e->cid.data, e->cid.datalen);
			e->next = *b;
			*b = e;
		}
	}
	free(old);
}

static int
cid_add(struct qconn *qc, const ngtcp2_cid *cid)
{
	struct quic_server *srv = qc->srv;
	struct cid_entry *e, **b;

	if (cid_find(srv, cid->data, cid->datalen) != NULL)
		return -1;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return -1;
	e->cid = *cid;
	e->qc = qc;
	b = cid_bucket(srv, cid->data, cid->datalen);
	e->next = *b;
	*b = e;
	e->conn_next = qc->cids;
	qc->cids = e;
	stats.cids_current++;
	if (++srv->ncids > srv->nbuckets)
		cid_grow(srv);
	return 0;
}

static void
cid_unlink(struct quic_server *srv, struct cid_entry *e)
{
	struct cid_entry **p;

	if (srv->last_cid == e)
		srv->last_cid = NULL;
	for (p = cid_bucket(srv, e->cid.data, e->cid.datalen); *p != NULL;
	    p = &(*p)->next) {
		if (*p == e) {
			*p = e->next;
			srv->ncids--;
			stats.cids_current--;
			return;
		}
	}
}

static void
cid_remove(struct qconn *qc, const ngtcp2_cid *cid)
{
	struct cid_entry **p, *e;

	for (p = &qc->cids; (e = *p) != NULL; p = &e->conn_next) {
		if (ngtcp2_cid_eq(&e->cid, cid)) {
			*p = e->conn_next;
			cid_unlink(qc->srv, e);
			free(e);
			return;
		}
	}
}

/* ngtcp2 callbacks: thin wrappers; h3.c does the HTTP/3 part. */

static ngtcp2_conn *
get_conn(ngtcp2_crypto_conn_ref *ref)
{
	return ((struct qconn *)ref->user_data)->conn;
}

/*
 * A connection ID for the table: random, or as QUIC-LB has it, so that a
 * load balancer in front sends its packets here.
 */
static void
cid_new(struct quic_server *srv, ngtcp2_cid *cid)
{
	do {
		cid->datalen = srv->cid_len;
		if (srv->cid_lb == NULL) {
			rng_fill(cid->data, cid->datalen);
			/* the kernel gives its datagrams to this worker */
			cid->data[0] = workers_cid_byte(cid->data[0]);
		} else
			cid_lb_make(srv->cid_lb, cid->data);
	} while (cid_find(srv, cid->data, cid->datalen) != NULL);
	if (srv->cid_lb != NULL && !srv->cid_lb_warned &&
	    cid_lb_exhausted(srv->cid_lb)) {
		srv->cid_lb_warned = true;
		log_warnx("cid_nonce_length: every nonce has been used; new "
		    "connection IDs are unroutable (configuration ID 7) until "
		    "qproxy restarts with another cid_key_file or "
		    "cid_config_id");
	}
}

static void
rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
	rng_fill(dest, len);
}

static int
get_new_connection_id(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token,
    size_t cidlen, void *user_data)
{
	struct qconn *qc = user_data;

	if (cidlen != qc->srv->cid_len)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	cid_new(qc->srv, cid);
	if (ngtcp2_crypto_generate_stateless_reset_token(token,
	    qc->srv->secret, sizeof(qc->srv->secret), cid) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	if (cid_add(qc, cid) == -1)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int
remove_connection_id(ngtcp2_conn *conn, const ngtcp2_cid *cid,
    void *user_data)
{
	cid_remove(user_data, cid);
	return 0;
}

/*
 * A connection of max_connections_per_client's client whose handshake is
 * done: it counts as proven now, unless its client has as many proven
 * connections already. The limit holds here too, not only at the Initial,
 * for handshakes that began while the address was not proven. A reload
 * holds at once: the limit is the running configuration's.
 */
static bool
client_prove(struct qconn *qc)
{
	uint64_t limit = qc->srv->gen->cfg->max_conns_per_client;
	static struct log_limit lim;

	if (qc->client == NULL || qc->client_proven)
		return true;
	if (limit > 0 && qc->client->proven >= limit) {
		log_limited(&lim, LOG_LEVEL_INFO, "%s: %u connections "
		    "from this client, refusing another", qc->peer,
		    qc->client->proven);
		stats.refused_per_client++;
		return false;
	}
	qc->client->proven++;
	qc->client_proven = true;
	return true;
}

/* The connection no longer counts for its client: closing, or freed. */
static void
client_forget(struct qconn *qc)
{
	if (qc->client == NULL)
		return;
	if (qc->client_proven)
		qc->client->proven--;
	clients_release(qc->srv->clients, qc->client);
	qc->client = NULL;
}

static int
handshake_completed(ngtcp2_conn *conn, void *user_data)
{
	struct qconn *qc = user_data;

	uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN];
	const ngtcp2_path *path = ngtcp2_conn_get_path(conn);
	ngtcp2_ssize n;

	if (!client_prove(qc)) {
		ngtcp2_ccerr_set_transport_error(&qc->last_error,
		    NGTCP2_CONNECTION_REFUSED, NULL, 0);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	qc->handshake_done = true;
	stats.handshakes_completed++;
	if (wolfSSL_session_reused(qc->ssl))
		stats.resumed_handshakes++;
	/* here, not in its verify callback: before its CertificateVerify */
	if (qc->tls.peer != NULL)
		stats.client_certs_verified++;
	stats.handshakes_current--;
	if (qc->unvalidated) {
		qc->unvalidated = false;
		stats.handshakes_unvalidated--;
	}
	log_debug("%s: handshake completed", qc->peer);
	/* a token for the next connection from this address (RFC 9000 8.1.3) */
	n = ngtcp2_crypto_generate_regular_token(token, qc->srv->secret,
	    sizeof(qc->srv->secret), path->remote.addr, path->remote.addrlen,
	    token_now());
	if (n > 0 && ngtcp2_conn_submit_new_token(conn, token, (size_t)n) == 0)
		stats.new_tokens_sent++;
	return 0;
}

/*
 * A client's TLS message begins with the header in in->hdr: whether it
 * may. At the Handshake level the client's Finished, a hash long, is the
 * one message it sends (RFC 8446 4.4), unless its listener asks for a
 * certificate (client_ca): then its Certificate comes first, and a
 * CertificateVerify after one that is not empty (wolfSSL checks their
 * order; here, that nothing else comes, nor anything larger).
 */
static bool
tls_msg_begin(struct tls_in *in, ngtcp2_encryption_level level,
    bool client_auth)
{
	bool ok = true;

	in->left = (uint32_t)in->hdr[1] << 16 | (uint32_t)in->hdr[2] << 8 |
	    in->hdr[3];
	if (level == NGTCP2_ENCRYPTION_LEVEL_HANDSHAKE) {
		switch (in->hdr[0]) {
		case TLS_HS_FINISHED:
			ok = in->left > 0 && in->left <= TLS_FINISHED_MAX;
			in->finished = true;
			break;
		case TLS_HS_CERTIFICATE:
			ok = client_auth && in->msgs == 0 &&
			    in->left <= TLS_CLIENT_CHAIN_MAX;
			break;
		case TLS_HS_CERTIFICATE_VERIFY:
			ok = client_auth && in->msgs == 1 && in->left > 0 &&
			    in->left <= TLS_CERT_VERIFY_MAX;
			break;
		default:
			ok = false;
			break;
		}
	}
	in->msgs++;
	return ok;
}

/*
 * The next bytes of the client's CRYPTO stream at an Initial or Handshake
 * level (ngtcp2 delivers them in order), to wolfSSL, with their message
 * headers read on the way. A header that a frame cuts short is held here
 * and handed on whole: wolfSSL 5.7.2 fails the handshake when it gets the
 * first bytes of a header in one call and the rest of it, with nothing
 * after, in later ones (its issue 8156, fixed in 5.8.0), and Chromium cuts
 * its ClientHello into CRYPTO frames at random, a few bytes long at times:
 * about one handshake in forty failed here. Returns 0 or an ngtcp2 error;
 * a message the client may not send (tls_msg_begin), or one that the
 * Handshake keys cut short at the Initial level (RFC 8446 5.1: a message
 * may not span a key change; wolfSSL never saw a header held here), is an
 * unexpected_message.
 */
static int
tls_feed(struct qconn *qc, ngtcp2_conn *conn, ngtcp2_encryption_level level,
    uint64_t offset, const uint8_t *data, size_t len)
{
	struct tls_in *in = &qc->tls_in[level ==
	    NGTCP2_ENCRYPTION_LEVEL_HANDSHAKE];
	size_t n, take;
	int rv;

	if (level == NGTCP2_ENCRYPTION_LEVEL_HANDSHAKE &&
	    (qc->tls_in[0].hdrlen > 0 || qc->tls_in[0].left > 0))
		goto unexpected;
	while (len > 0) {
		if (in->hdrlen > 0) {
			/* the rest of a header an earlier frame began */
			take = sizeof(in->hdr) - in->hdrlen;
			if (take > len)
				take = len;
			memcpy(in->hdr + in->hdrlen, data, take);
			in->hdrlen += (uint8_t)take;
			data += take;
			len -= take;
			offset += take;
			if (in->hdrlen < sizeof(in->hdr))
				return 0;
			in->hdrlen = 0;
			if (!tls_msg_begin(in, level, qc->tls.client_auth))
				goto unexpected;
			rv = ngtcp2_crypto_recv_crypto_data_cb(conn, level,
			    offset - sizeof(in->hdr), in->hdr, sizeof(in->hdr),
			    qc);
			if (rv != 0)
				return rv;
			continue;
		}
		/* n bytes go on as they are: up to a header cut short */
		for (n = 0; n < len; ) {
			if (in->left > 0) {
				take = len - n < in->left ? len - n : in->left;
				in->left -= (uint32_t)take;
				n += take;
				continue;
			}
			if (in->finished)
				goto unexpected;	/* after the Finished */
			if (len - n < sizeof(in->hdr))
				break;
			memcpy(in->hdr, data + n, sizeof(in->hdr));
			if (!tls_msg_begin(in, level, qc->tls.client_auth))
				goto unexpected;
			n += sizeof(in->hdr);
		}
		if (n > 0) {
			rv = ngtcp2_crypto_recv_crypto_data_cb(conn, level,
			    offset, data, n, qc);
			if (rv != 0)
				return rv;
			data += n;
			len -= n;
			offset += n;
		}
		if (len > 0) {
			memcpy(in->hdr, data, len);
			in->hdrlen = (uint8_t)len;
			return 0;
		}
	}
	return 0;
unexpected:
	ngtcp2_conn_set_tls_alert(conn, TLS_ALERT_UNEXPECTED_MESSAGE);
	return NGTCP2_ERR_CRYPTO;
}

/*
 * A ClientHello wolfSSL has taken whole without a ServerHello (whose
 * Handshake keys bring the client's transport parameters to ngtcp2) got a
 * HelloRetryRequest. If it offered early data with a ticket, wolfSSL
 * 5.7.2 had already handed the 0-RTT key over (recv_rx_key), and ngtcp2
 * would read the client's 0-RTT packets with no transport parameters: it
 * aborted the process on an assertion, so any client could stop qproxy by
 * resuming with only a key share it does not take. HelloRetryRequest
 * rejects early data (RFC 8446 4.2.10): the key and anything of early
 * data go. Asked after every Initial-level feed, before ngtcp2 reads any
 * further packet: the first message whole (bytes of a next one may
 * follow it in the same frame), or a 0-RTT key handed over.
 */
static int
tls_after_hello(struct qconn *qc, ngtcp2_conn *conn)
{
	const struct tls_in *in = &qc->tls_in[0];

	if (qc->hello_retried ||
	    ngtcp2_conn_get_remote_transport_params(conn) != NULL ||
	    !(qc->early_key || in->msgs > 1 || (in->msgs == 1 &&
	    in->left == 0)))
		return 0;
	qc->hello_retried = true;
	stats.hello_retries++;
	log_debug("%s: HelloRetryRequest sent", qc->peer);
	return ngtcp2_conn_tls_early_data_rejected(conn);
}

/*
 * TLS messages from the client. It has none to send once its Finished is
 * sent (RFC 9001 6: no KeyUpdate; in QUIC no post-handshake
 * authentication, and tickets go only to it), so anything after the
 * Finished, in the same CRYPTO frame or in a 1-RTT packet, is refused as
 * TLS refuses an unexpected message (RFC 9001 4.8: CRYPTO_ERROR 0x10a).
 * Given to wolfSSL, a KeyUpdate or a ticket from the client made it derive
 * keys anew, and ngtcp2 aborted the process on an assertion. After the
 * handshake the TLS session is gone anyway (qconn_shed_tls).
 */
static int
recv_crypto_data(ngtcp2_conn *conn, ngtcp2_encryption_level level,
    uint64_t offset, const uint8_t *data, size_t datalen, void *user_data)
{
	struct qconn *qc = user_data;
	int rv;

	/*
	 * wolfSSL would gather a ClientHello of any declared length up to
	 * 1 MiB, for as long as the handshake may last: times max_handshakes,
	 * a GiB. Real ones take a few KiB, post-quantum key shares included.
	 * (An error of the first Initial's must be fatal to ngtcp2, or it
	 * drops the connection without a word: hence CALLBACK_FAILURE with
	 * the error to send, here and below.)
	 */
	if (level == NGTCP2_ENCRYPTION_LEVEL_INITIAL &&
	    offset + datalen > QUIC_MAX_CLIENT_HELLO) {
		ngtcp2_ccerr_set_transport_error(&qc->last_error,
		    NGTCP2_CRYPTO_BUFFER_EXCEEDED, NULL, 0);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	/*
	 * RFC 9001 8.4: a QUIC client has no use for TLS's middlebox
	 * compatibility mode, and a ClientHello with a legacy_session_id
	 * (its length after the message header, version and random) is a
	 * PROTOCOL_VIOLATION.
	 */
	if (level == NGTCP2_ENCRYPTION_LEVEL_INITIAL &&
	    offset <= TLS_CH_SESSION_ID_OFF &&
	    offset + datalen > TLS_CH_SESSION_ID_OFF &&
	    data[TLS_CH_SESSION_ID_OFF - offset] != 0) {
		ngtcp2_ccerr_set_transport_error(&qc->last_error,
		    NGTCP2_PROTOCOL_VIOLATION, NULL, 0);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	if (level == NGTCP2_ENCRYPTION_LEVEL_1RTT || qc->ssl == NULL ||
	    ngtcp2_conn_get_handshake_completed(conn)) {
		ngtcp2_conn_set_tls_alert(conn, TLS_ALERT_UNEXPECTED_MESSAGE);
		return NGTCP2_ERR_CRYPTO;
	}
	rv = tls_feed(qc, conn, level, offset, data, datalen);
	if (rv == 0 && level == NGTCP2_ENCRYPTION_LEVEL_INITIAL)
		rv = tls_after_hello(qc, conn);
	if (rv == NGTCP2_ERR_REQUIRED_TRANSPORT_PARAM ||
	    rv == NGTCP2_ERR_MALFORMED_TRANSPORT_PARAM) {
		const uint8_t *tp;
		size_t tplen = 0;

		/* RFC 9001 8.2: without the extension at all, missing_extension */
		wolfSSL_get_peer_quic_transport_params(qc->ssl, &tp, &tplen);
		if (tplen == 0) {
			ngtcp2_conn_set_tls_alert(conn,
			    TLS_ALERT_MISSING_EXTENSION);
			return NGTCP2_ERR_CRYPTO;
		}
	}
	return rv;
}

/*
 * After the handshake, packet protection and key updates need only the
 * keys ngtcp2 holds: the TLS session (about 7 KiB with its record-layer
 * keys, which QUIC never uses) is freed. Not from within ngtcp2's
 * handshake callback: the packet that finished it is still being read.
 */
static void
qconn_shed_tls(struct qconn *qc)
{
	ngtcp2_conn_set_tls_native_handle(qc->conn, NULL);
	tls_session_free(qc->ssl);
	qc->ssl = NULL;
}

/* A client's new path (migration, NAT rebinding) was checked. */
static int
path_validation(ngtcp2_conn *conn, uint32_t flags, const ngtcp2_path *path,
    const ngtcp2_path *old_path, ngtcp2_path_validation_result res,
    void *user_data)
{
	struct qconn *qc = user_data;
	uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN];
	ngtcp2_ssize n;

	if (res != NGTCP2_PATH_VALIDATION_RESULT_SUCCESS) {
		stats.path_validations_failed++;
		return 0;
	}
	stats.path_validations_ok++;
	if (old_path != NULL)
		stats.migrations++;
	addr_set(&qc->proven, (const struct sockaddr *)path->remote.addr,
	    path->remote.addrlen);
	addr_format_host(&qc->proven, qc->peer, sizeof(qc->peer));
	log_debug("%s: path validated", qc->peer);
	if (flags & NGTCP2_PATH_VALIDATION_FLAG_NEW_TOKEN) {
		n = ngtcp2_crypto_generate_regular_token(token, qc->srv->secret,
		    sizeof(qc->srv->secret), path->remote.addr,
		    path->remote.addrlen, token_now());
		if (n > 0 && ngtcp2_conn_submit_new_token(conn, token,
		    (size_t)n) == 0)
			stats.new_tokens_sent++;
	}
	return 0;
}

/* The 0-RTT key is in ngtcp2's hands: tls_after_hello. */
static int
recv_rx_key(ngtcp2_conn *conn, ngtcp2_encryption_level level,
    void *user_data)
{
	struct qconn *qc = user_data;

	(void)conn;
	if (level == NGTCP2_ENCRYPTION_LEVEL_0RTT)
		qc->early_key = true;
	return 0;
}

/*
 * The client's Hello is processed: HTTP/3 starts, if it was agreed. A
 * client that offered no ALPN at all got through wolfSSL (which refuses
 * only a mismatch) and is refused here, as RFC 9001 8.1 requires.
 */
static int
recv_tx_key(ngtcp2_conn *conn, ngtcp2_encryption_level level,
    void *user_data)
{
	struct qconn *qc = user_data;

	if (level != NGTCP2_ENCRYPTION_LEVEL_1RTT)
		return 0;
	if (!tls_alpn_is_h3(qc->ssl)) {
		log_debug("%s: no ALPN from the client", qc->peer);
		ngtcp2_ccerr_set_tls_alert(&qc->last_error,
		    TLS_ALERT_NO_APPLICATION_PROTOCOL, NULL, 0);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	return h3_conn_setup(qc) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int
recv_stream_data(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
    uint64_t offset, const uint8_t *data, size_t len, void *user_data,
    void *stream_user_data)
{
	struct qconn *qc = user_data;
	int rv;

	/* exchange_new looks: a request begun in 0-RTT is early data */
	qc->rx_0rtt = (flags & NGTCP2_STREAM_DATA_FLAG_0RTT) != 0;
	rv = h3_recv_stream_data(qc, stream_id, data, len,
	    (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
	qc->rx_0rtt = false;
	return rv == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

/*
 * ngtcp2 reports ACKed stream data once per packet: for a download, some
 * 40 calls per ACK frame for the same stream. Each call into nghttp3 looks
 * the stream up and walks its buffers, so the bytes are summed here and
 * passed on once: when another stream's bytes come, when the stream
 * closes, and after each datagram (acked_flush in handle_datagram).
 */
static int
acked_flush(struct qconn *qc)
{
	uint64_t len = qc->acked_len;
	int rv;

	if (len == 0 || qc->h3 == NULL)
		return 0;
	qc->acked_len = 0;
	if ((rv = nghttp3_conn_add_ack_offset(qc->h3, qc->acked_stream,
	    len)) != 0) {
		log_warnx("%s: nghttp3_conn_add_ack_offset: %s", qc->peer,
		    nghttp3_strerror(rv));
		return -1;
	}
	return 0;
}

static int
acked_stream_data_offset(ngtcp2_conn *conn, int64_t stream_id,
    uint64_t offset, uint64_t len, void *user_data, void *stream_user_data)
{
	struct qconn *qc = user_data;

	if (qc->h3 == NULL || len == 0)
		return 0;
	/*
	 * ngtcp2 reports the acknowledged start of a stream: one that ends
	 * past what went before the notice (the SETTINGS, acknowledged late)
	 * has some of it.
	 */
	if (stream_id == qc->ctrl_stream && qc->notice_sent &&
	    offset + len > qc->notice_offset)
		qc->notice_acked = true;	/* see qconn_write */
	if (qc->acked_len != 0 && qc->acked_stream != stream_id &&
	    acked_flush(qc) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	qc->acked_stream = stream_id;
	qc->acked_len += len;
	return 0;
}

/*
 * What ngtcp2 holds, by connection. A client decides much of it: stream
 * data that comes out of order waits there, up to connection_window a
 * connection, in 8 KiB chunks however few bytes are in them (a thousand
 * bytes sent can hold megabytes), and none of it reaches qproxy's request
 * buffers until what comes before it does. quic_buffer_total bounds it
 * all (quic_mem_enforce).
 */
static size_t quic_mem_bytes, quic_mem_peak;

static void
quic_mem_count(struct qconn *qc, size_t add, size_t sub)
{
	qc->ngmem_bytes = qc->ngmem_bytes + add - sub;
	quic_mem_bytes = quic_mem_bytes + add - sub;
	if (quic_mem_bytes > quic_mem_peak)
		quic_mem_peak = quic_mem_bytes;
}

static void *
quic_mem_malloc(size_t size, void *user_data)
{
	void *p;

	if ((p = malloc(size)) != NULL)
		quic_mem_count(user_data, malloc_usable_size(p), 0);
	return p;
}

static void
quic_mem_free(void *p, void *user_data)
{
	if (p == NULL)
		return;
	quic_mem_count(user_data, 0, malloc_usable_size(p));
	free(p);
}

static void *
quic_mem_calloc(size_t nmemb, size_t size, void *user_data)
{
	void *p;

	if ((p = calloc(nmemb, size)) != NULL)
		quic_mem_count(user_data, malloc_usable_size(p), 0);
	return p;
}

static void *
quic_mem_realloc(void *p, size_t size, void *user_data)
{
	size_t old = p != NULL ? malloc_usable_size(p) : 0;
	void *np;

	if ((np = realloc(p, size)) != NULL)
		quic_mem_count(user_data, malloc_usable_size(np), old);
	else if (size == 0)
		quic_mem_count(user_data, 0, old);	/* freed */
	return np;
}

/*
 * quic_buffer_total: while ngtcp2 and nghttp3 hold more than that for all
 * connections, the connection they hold the most for is closed
 * (H3_EXCESSIVE_LOAD) and freed at once, without the closing period that
 * would keep what it holds. Once per turn of the loop, after the reads
 * that made it grow. nghttp3 holds what a client decides too: the data of
 * a stream blocked on QPACK, up to connection_window, and 128 KiB a
 * stream for a field it announced and did not send; and so do the
 * requests done whose streams it keeps open (exchange_done_bytes).
 */
static size_t
conn_held(const struct qconn *qc)
{
	return qc->ngmem_bytes + qc->h3mem_bytes + qc->done_bytes;
}

static void
quic_mem_enforce(struct quic_server *srv)
{
	static struct log_limit lim;
	size_t limit = server_config(srv)->quic_buffer_total;
	struct qconn *qc, *victim;

	while (quic_mem_bytes + h3_mem_live() + exchange_done_bytes() > limit) {
		victim = NULL;
		LIST_FOREACH(qc, &srv->conns, entry)
			if (victim == NULL || conn_held(qc) > conn_held(victim))
				victim = qc;
		if (victim == NULL)
			return;
		log_limited(&lim, LOG_LEVEL_WARN, "%s: quic_buffer_total "
		    "reached: closing the connection holding the most (%zu "
		    "bytes)", victim->peer, conn_held(victim));
		stats.closed_quic_memory++;
		if (victim->state == QC_ACTIVE) {
			ngtcp2_ccerr_set_application_error(&victim->last_error,
			    NGHTTP3_H3_EXCESSIVE_LOAD, NULL, 0);
			if (!qconn_close(victim))
				continue;	/* freed already */
		}
		qconn_free(victim);
	}
}

size_t
quic_mem_current(void)
{
	return quic_mem_bytes;
}

size_t
quic_mem_highest(void)
{
	return quic_mem_peak;
}

/*
 * A client that resets streams faster than max_stream_resets per
 * RESET_WINDOW ("rapid reset") makes work for nothing: it is closed with
 * H3_EXCESSIVE_LOAD. The budget refills continuously.
 */
static bool
reset_over_budget(struct qconn *qc)
{
	double limit = (double)qc->gen->cfg->max_stream_resets;

	return !bucket_take(&qc->reset_budget, &qc->reset_refill,
	    ev_now(qc->srv->loop), limit / RESET_WINDOW, limit);
}

/* A request stream the client cancelled: once per stream, on the budget. */
static int
charge_cancel(struct qconn *qc, struct exchange *ex)
{
	static struct log_limit lim;

	if (ex != NULL && !exchange_charge_cancel(ex))
		return 0;
	if (!reset_over_budget(qc))
		return 0;
	log_limited(&lim, LOG_LEVEL_INFO, "%s: more than %llu stream resets "
	    "in %ds, closing", qc->peer,
	    (unsigned long long)qc->gen->cfg->max_stream_resets, RESET_WINDOW);
	stats.closed_stream_resets++;
	ngtcp2_ccerr_set_application_error(&qc->last_error,
	    NGHTTP3_H3_EXCESSIVE_LOAD, NULL, 0);
	return NGTCP2_ERR_CALLBACK_FAILURE;
}

static int
stream_close(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
    uint64_t app_error_code, void *user_data, void *stream_user_data)
{
	struct qconn *qc = user_data;
	int rv;

	if (qc->h3 == NULL)
		return 0;
	if (acked_flush(qc) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	/*
	 * A request stream that ends with its exchange still at work: the
	 * client's STOP_SENDING made ngtcp2 reset it (no callback says so).
	 * It counts as a reset, on the same budget: a request then
	 * STOP_SENDING at once, again and again, cost a backend request
	 * and connection each.
	 */
	if (stream_user_data != NULL &&
	    exchange_cut_short(stream_user_data) &&
	    charge_cancel(qc, stream_user_data) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
		app_error_code = NGHTTP3_H3_NO_ERROR;
	rv = nghttp3_conn_close_stream(qc->h3, stream_id, app_error_code);
	switch (rv) {
	case 0:
		break;
	case NGHTTP3_ERR_STREAM_NOT_FOUND:
		if (ngtcp2_is_bidi_stream(stream_id))
			ngtcp2_conn_extend_max_streams_bidi(conn, 1);
		break;
	default:
		ngtcp2_ccerr_set_application_error(&qc->last_error,
		    nghttp3_err_infer_quic_app_error_code(rv), NULL, 0);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

static int
stream_shut_read(ngtcp2_conn *conn, int64_t stream_id, struct qconn *qc)
{
	if (qc->h3 != NULL &&
	    nghttp3_conn_shutdown_stream_read(qc->h3, stream_id) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int
stream_reset(ngtcp2_conn *conn, int64_t stream_id, uint64_t final_size,
    uint64_t app_error_code, void *user_data, void *stream_user_data)
{
	struct qconn *qc = user_data;

	if (stream_user_data != NULL)
		exchange_client_reset(stream_user_data);
	else if (ngtcp2_is_bidi_stream(stream_id) &&
	    !ngtcp2_conn_is_local_stream(conn, stream_id))
		/*
		 * No request began (none of its bytes came, or part of a
		 * frame): nothing will answer it, so its sending side is
		 * reset too. Else ngtcp2 kept the stream open for good, and
		 * its credit (max_streams_bidi) never came back.
		 */
		(void)ngtcp2_conn_shutdown_stream_write(conn, 0, stream_id,
		    NGHTTP3_H3_REQUEST_CANCELLED);
	if (ngtcp2_is_bidi_stream(stream_id) &&
	    charge_cancel(qc, stream_user_data) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return stream_shut_read(conn, stream_id, user_data);
}

static int
stream_stop_sending(ngtcp2_conn *conn, int64_t stream_id,
    uint64_t app_error_code, void *user_data, void *stream_user_data)
{
	return stream_shut_read(conn, stream_id, user_data);
}

static int
extend_max_stream_data(ngtcp2_conn *conn, int64_t stream_id,
    uint64_t max_data, void *user_data, void *stream_user_data)
{
	struct qconn *qc = user_data;

	if (qc->h3 != NULL &&
	    nghttp3_conn_unblock_stream(qc->h3, stream_id) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	if (stream_id == qc->qenc_stream)
		qc->qenc_blocked = false;
	if (stream_id == qc->qdec_stream)
		qc->qdec_blocked = false;
	/* not progress for send_timeout: stream credit alone moves no byte */
	if (stream_user_data != NULL)
		exchange_flow_blocked(stream_user_data, false);
	return 0;
}

static int
extend_max_remote_streams_bidi(ngtcp2_conn *conn, uint64_t max_streams,
    void *user_data)
{
	struct qconn *qc = user_data;

	if (qc->h3 != NULL)
		nghttp3_conn_set_max_client_streams_bidi(qc->h3, max_streams);
	return 0;
}

static const ngtcp2_callbacks quic_callbacks = {
	.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
	.recv_crypto_data = recv_crypto_data,
	.handshake_completed = handshake_completed,
	.encrypt = tls_aead_encrypt,
	.decrypt = tls_aead_decrypt,
	.hp_mask = tls_hp_mask,
	.recv_stream_data = recv_stream_data,
	.acked_stream_data_offset = acked_stream_data_offset,
	.stream_close = stream_close,
	.rand = rand_cb,
	.get_new_connection_id = get_new_connection_id,
	.remove_connection_id = remove_connection_id,
	.update_key = ngtcp2_crypto_update_key_cb,
	.path_validation = path_validation,
	.stream_reset = stream_reset,
	.extend_max_remote_streams_bidi = extend_max_remote_streams_bidi,
	.extend_max_stream_data = extend_max_stream_data,
	.delete_crypto_aead_ctx = tls_aead_ctx_delete,
	.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
	.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
	.stream_stop_sending = stream_stop_sending,
	.version_negotiation = ngtcp2_crypto_version_negotiation_cb,
	.recv_tx_key = recv_tx_key,
	.recv_rx_key = recv_rx_key,
};

static void
qlog_write(void *user_data, uint32_t flags, const void *data, size_t len)
{
	struct qconn *qc = user_data;
	static struct log_limit lim;

	if (qc->qlog == NULL)
		return;
	if (len > 0 && fwrite(data, 1, len, qc->qlog) != len) {
		/* once a second at most: a full disk fails every connection */
		log_limited(&lim, LOG_LEVEL_WARN, "%s: qlog: %s", qc->peer,
		    strerror(errno));
		fclose(qc->qlog);
		qc->qlog = NULL;
		return;
	}
	if (flags & NGTCP2_QLOG_WRITE_FLAG_FIN) {
		fclose(qc->qlog);
		qc->qlog = NULL;
	}
}

#define CID_HEXLEN	(2 * NGTCP2_MAX_CIDLEN + 1)

static char *
cid_hex(const ngtcp2_cid *cid, char *hex)
{
	for (size_t i = 0; i < cid->datalen; i++)
		snprintf(hex + 2 * i, 3, "%02x", cid->data[i]);
	hex[2 * cid->datalen] = '\0';
	return hex;
}

/*
 * qlog_dir/DCID-SCID.sqlog, private to the service: it reveals traffic.
 * DCID is the connection's first Initial's (after a Retry, the Retry's
 * SCID: ngtcp2's group_id in the file). The client chooses it; qproxy's
 * own SCID makes the name one no client can choose, so that no Initial
 * truncates or removes another's file.
 */
static FILE *
qlog_open(const char *dir, const ngtcp2_cid *dcid, const ngtcp2_cid *scid,
    char **pathp)
{
	char path[PATH_MAX], hex[CID_HEXLEN], shex[CID_HEXLEN];
	FILE *f;
	int fd;

	cid_hex(dcid, hex);
	cid_hex(scid, shex);
	snprintf(path, sizeof(path), "%s/%s-%s.sqlog", dir, hex, shex);
	if ((*pathp = strdup(path)) == NULL)
		return NULL;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
	    0600);
	if (fd == -1 || (f = fdopen(fd, "w")) == NULL) {
		static struct log_limit lim;

		/* once a second at most: each new connection comes here */
		log_limited(&lim, LOG_LEVEL_WARN, "qlog %s: %s", path,
		    strerror(errno));
		if (fd != -1)
			close(fd);
		free(*pathp);
		*pathp = NULL;
		return NULL;
	}
	return f;
}

/* The qlog of a connection that never was: closed and removed. */
static void
qlog_discard(struct qconn *qc)
{
	if (qc->qlog == NULL)
		return;
	fclose(qc->qlog);
	qc->qlog = NULL;
	if (qc->qlog_path != NULL && unlink(qc->qlog_path) == -1)
		log_warn("qlog %s", qc->qlog_path);
	free(qc->qlog_path);
	qc->qlog_path = NULL;
}

static void
debug_printf(void *user_data, const char *fmt, ...)
{
	/* ngtcp2's own trace is too verbose even for debug; keep it off. */
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct qconn *qc = w->data;
	int rv;

	if (qc->state != QC_ACTIVE) {
		/* the closing or draining period is over */
		qconn_free(qc);
		return;
	}
	rv = ngtcp2_conn_handle_expiry(qc->conn, quic_now());
	if (rv != 0) {
		if (rv == NGTCP2_ERR_IDLE_CLOSE) {
			log_debug("%s: idle timeout", qc->peer);
			qconn_free(qc);
			return;
		}
		ngtcp2_ccerr_set_liberr(&qc->last_error, rv, NULL, 0);
		qconn_close(qc);
		return;
	}
	qconn_write(qc);
}

/*
 * The limits a client remembers from a connection and keeps to when it
 * sends 0-RTT on the next one: transport parameters (RFC 9000 7.4.1) and
 * HTTP/3 settings (RFC 9114 7.2.4.2, h3.c). The server may not lower them
 * for that data; after a reload that changes one, a ticket issued before
 * must resume nothing, so tickets are bound to this text (tls_ctx_new).
 */
size_t
quic_0rtt_context(const struct config *cfg, char *buf, size_t len)
{
	int n;

	n = snprintf(buf, len, "max_data %zu stream_data_bidi_remote %zu "
	    "stream_data_uni %u streams_bidi %llu streams_uni %u cid_limit %u "
	    "field_section %zu qpack_table %zu qpack_blocked %zu",
	    cfg->connection_window, cfg->stream_window, QUIC_UNI_WINDOW,
	    (unsigned long long)cfg->max_streams_bidi, QUIC_UNI_STREAMS,
	    QUIC_CID_LIMIT, cfg->max_header_size, cfg->qpack_table_size,
	    cfg->qpack_blocked_streams);
	return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

/*
 * A new connection for a client Initial. odcid: the original DCID when the
 * client came back with a Retry token; validated: its address is proven
 * (a Retry or NEW_TOKEN token checked out).
 */
static struct qconn *
qconn_new(struct udp_sock *sock, const ngtcp2_pkt_hd *hd,
    const struct addr *remote, const struct addr *local,
    const ngtcp2_cid *odcid, bool validated, uint64_t ts)
{
	struct quic_server *srv = sock->srv;
	struct config *cfg = sock->listener->gen->cfg;
	ngtcp2_settings settings;
	ngtcp2_transport_params params;
	ngtcp2_path path;
	ngtcp2_cid scid;
	struct qconn *qc;
	uint64_t window;
	int rv;

	if ((qc = calloc(1, sizeof(*qc))) == NULL)
		return NULL;
	qc->srv = srv;
	qc->sock = sock;
	LIST_INIT(&qc->exchanges);
	ngtcp2_ccerr_default(&qc->last_error);
	qc->proven = *remote;
	addr_format_host(remote, qc->peer, sizeof(qc->peer));

	cid_new(srv, &scid);

	ngtcp2_settings_default(&settings);
	settings.initial_ts = ts;	/* ngtcp2 wants no earlier time after */
	/*
	 * A handshake has idle_timeout from its start: traffic restarts the
	 * idle timer, and a client sending a packet now and then would hold
	 * one of max_handshakes for good.
	 */
	if (cfg->idle_timeout > 0)
		settings.handshake_timeout = (ngtcp2_duration)(cfg->idle_timeout *
		    NGTCP2_SECONDS);
	/*
	 * Until the client's first ACK gives an RTT: a first PTO of three
	 * times this, doubling, for the handshake's flights.
	 */
	settings.initial_rtt = (ngtcp2_duration)(cfg->initial_rtt *
	    NGTCP2_SECONDS);
	switch (cfg->congestion_control) {
	case CONFIG_CC_BBR:
		settings.cc_algo = NGTCP2_CC_ALGO_BBR;
		break;
	case CONFIG_CC_RENO:
		settings.cc_algo = NGTCP2_CC_ALGO_RENO;
		break;
	default:
		settings.cc_algo = NGTCP2_CC_ALGO_CUBIC;
		break;
	}
	settings.preferred_versions = quic_versions;
	settings.preferred_versionslen = NVERSIONS;
	settings.available_versions = quic_versions;
	settings.available_versionslen = NVERSIONS;
	if (validated) {
		/* ngtcp2 lifts the anti-amplification limit for this path */
		settings.token = hd->token;
		settings.tokenlen = hd->tokenlen;
		settings.token_type = odcid != NULL ? NGTCP2_TOKEN_TYPE_RETRY :
		    NGTCP2_TOKEN_TYPE_NEW_TOKEN;
	}
	settings.max_tx_udp_payload_size = QUIC_MAX_PKTLEN;
	if (log_debug_enabled())
		settings.log_printf = debug_printf;
	if (cfg->qlog_dir != NULL &&
	    (qc->qlog = qlog_open(cfg->qlog_dir, &hd->dcid, &scid,
	    &qc->qlog_path)) != NULL) {
		settings.qlog_write = qlog_write;
	}
	/*
	 * A stream's receive window is its request buffer: credit returns only
	 * when the backend took the bytes, so the buffer cannot overflow.
	 */
	window = (uint64_t)cfg->stream_window;
	/*
	 * ngtcp2 widens a busy window (autotuning) up to four times; what
	 * qproxy holds stays bounded by it, as credit follows the backend.
	 */
	settings.max_stream_window = 4 * window;
	settings.max_window = 4 * (uint64_t)cfg->connection_window;

	/* what a client may remember for 0-RTT: see quic_0rtt_context */
	ngtcp2_transport_params_default(&params);
	params.initial_max_stream_data_bidi_remote = window;
	params.initial_max_stream_data_uni = QUIC_UNI_WINDOW;
	params.initial_max_data = cfg->connection_window;
	params.initial_max_streams_bidi = cfg->max_streams_bidi;
	params.initial_max_streams_uni = QUIC_UNI_STREAMS;
	params.max_idle_timeout = (ngtcp2_duration)(cfg->idle_timeout *
	    NGTCP2_SECONDS);
	params.active_connection_id_limit = QUIC_CID_LIMIT;
	if (odcid != NULL) {
		params.original_dcid = *odcid;
		params.retry_scid = hd->dcid;
		params.retry_scid_present = 1;
	} else
		params.original_dcid = hd->dcid;
	params.original_dcid_present = 1;
	params.stateless_reset_token_present = 1;
	if (ngtcp2_crypto_generate_stateless_reset_token(
	    params.stateless_reset_token, srv->secret,
	    sizeof(srv->secret), &scid) != 0)
		goto fail;

	path.local.addr = (ngtcp2_sockaddr *)(uintptr_t)&local->u.sa;
	path.local.addrlen = local->len;
	path.remote.addr = (ngtcp2_sockaddr *)(uintptr_t)&remote->u.sa;
	path.remote.addrlen = remote->len;
	path.user_data = NULL;

	qc->ngmem.user_data = qc;
	qc->ngmem.malloc = quic_mem_malloc;
	qc->ngmem.free = quic_mem_free;
	qc->ngmem.calloc = quic_mem_calloc;
	qc->ngmem.realloc = quic_mem_realloc;
	rv = ngtcp2_conn_server_new(&qc->conn, &hd->scid, &scid, &path,
	    hd->version, &quic_callbacks, &settings, &params, &qc->ngmem, qc);
	if (rv != 0) {
		qc->conn = NULL;	/* freed, or never made: not NULLed */
		log_warnx("%s: ngtcp2_conn_server_new: %s", qc->peer,
		    ngtcp2_strerror(rv));
		goto fail;
	}
	qc->tls.ref.get_conn = get_conn;
	qc->tls.ref.user_data = qc;
	if ((qc->ssl = tls_session_new(sock->listener->tls, &qc->tls,
	    sock->listener->cfg->early_data)) == NULL)
		goto fail;
	ngtcp2_conn_set_tls_native_handle(qc->conn, qc->ssl);

	if (cid_add(qc, &scid) == -1 || cid_add(qc, &hd->dcid) == -1 ||
	    (qc->client = clients_add(srv->clients, remote)) == NULL)
		goto fail;
	if (validated) {
		/* room checked by client_over */
		qc->client->proven++;
		qc->client_proven = true;
	}
	ev_timer_init(&qc->timer, timer_cb, 0., 0.);
	qc->timer.data = qc;
	qc->gen = generation_ref(sock->listener->gen);
	qc->created = qc->last_rx = (double)ts / NGTCP2_SECONDS;
	qc->reset_budget = (double)sock->listener->gen->cfg->max_stream_resets;
	qc->rd_stream = -1;
	qc->qenc_stream = -1;
	qc->qdec_stream = -1;
	qc->fin_owed = -1;
	qc->ctrl_in.stream = -1;
	qc->reset_refill = ev_now(srv->loop);	/* bucket.h's clock */
	sock->nconns++;
	if (!validated) {
		qc->unvalidated = true;
		stats.handshakes_unvalidated++;
	}
	LIST_INSERT_HEAD(&srv->conns, qc, entry);
	stats.handshakes_current++;
	stats.conns_current++;
	if (log_debug_enabled()) {
		char from[ADDR_STRLEN], dcid[CID_HEXLEN];

		log_debug("%s: new connection from %s for dcid %s", qc->peer,
		    addr_format(remote, from, sizeof(from)),
		    cid_hex(&hd->dcid, dcid));
	}
	return qc;
fail:
	while (qc->cids != NULL)
		cid_remove(qc, &qc->cids->cid);
	qlog_discard(qc);
	tls_session_free(qc->ssl);
	tls_conn_clear(&qc->tls);
	ngtcp2_conn_del(qc->conn);
	free(qc);
	return NULL;
}

/* The train a socket refused, sent or given up: buffers send_pending_bytes */
static void
pending_drop(struct qconn *qc)
{
	if (qc->pending == NULL)
		return;
	stats.send_pending_bytes -= qc->pending->len;
	free(qc->pending);
	qc->pending = NULL;
}

/*
 * A conns reply under way, at a connection: the next row's, NULL at the
 * end. Connections are added at the list's head, behind every cursor.
 */
struct conns_cursor {
	LIST_ENTRY(conns_cursor) entry;
	struct qconn		*next;
	bool			 json;
	bool			 begun;		/* the heading is out */
	bool			 first;		/* no row yet */
	int			 wpeer, wlocal, wsni;	/* text columns */
};

/* qc is about to go: a cursor at it moves on to the one after. */
static void
conns_cursors_pass(struct quic_server *srv, struct qconn *qc)
{
	struct conns_cursor *cur;

	LIST_FOREACH(cur, &srv->cursors, entry)
		if (cur->next == qc)
			cur->next = LIST_NEXT(qc, entry);
}

void
qconn_free(struct qconn *qc)
{
	struct quic_server *srv = qc->srv;

	/* Exchanges first: they may still talk to nghttp3. */
	exchange_abort_all(qc);
	while (qc->cids != NULL)
		cid_remove(qc, &qc->cids->cid);
	if (qc->write_queued)
		TAILQ_REMOVE(&srv->want_write, qc, write_entry);
	if (qc->blocked)
		TAILQ_REMOVE(&qc->sock->blocked, qc, blocked_entry);
	ev_timer_stop(srv->loop, &qc->timer);
	conns_cursors_pass(srv, qc);
	LIST_REMOVE(qc, entry);
	client_forget(qc);
	if (!qc->accepted) {
		/* a first packet ngtcp2 dropped: no connection, nor its trace */
		if (!qc->retry_sent)
			stats.dropped_invalid++;
		stats.handshakes_current--;
		qlog_discard(qc);
	} else if (!qc->handshake_done) {
		log_debug("%s: connection freed before its handshake completed",
		    qc->peer);
		stats.handshakes_failed++;
		stats.handshakes_current--;
	}
	if (qc->unvalidated)
		stats.handshakes_unvalidated--;
	stats.conns_current--;
	if (qc->state != QC_ACTIVE)
		stats.conns_closing--;
	nghttp3_conn_del(qc->h3);
	ngtcp2_conn_del(qc->conn);
	tls_session_free(qc->ssl);
	tls_conn_clear(&qc->tls);
	qc->sock->nconns--;
	server_sock_release(qc->sock);
	generation_unref(qc->gen);
	free(qc->close_pkt);
	pending_drop(qc);
	if (qc->qlog != NULL)
		fclose(qc->qlog);
	free(qc->qlog_path);
	free(qc);
	if (srv->shutting_down && LIST_EMPTY(&srv->conns))
		ev_break(srv->loop, EVBREAK_ALL);
}

/*
 * While a request waits on its backend, nothing may cross the connection
 * for longer than the idle timeout (read_timeout is 60s by default, the
 * idle timeout 30s), and most clients send no PING of their own: with on,
 * ngtcp2 sends one once the connection has been quiet for half the idle
 * timeout both ends agreed on.
 */
void
qconn_keep_alive(struct qconn *qc, bool on)
{
	const ngtcp2_transport_params *rp;
	ngtcp2_duration idle;

	if (!on) {
		ngtcp2_conn_set_keep_alive_timeout(qc->conn, UINT64_MAX);
		return;
	}
	idle = (ngtcp2_duration)(qc->gen->cfg->idle_timeout * NGTCP2_SECONDS);
	rp = ngtcp2_conn_get_remote_transport_params(qc->conn);
	if (rp != NULL && rp->max_idle_timeout != 0 &&
	    (idle == 0 || rp->max_idle_timeout < idle))
		idle = rp->max_idle_timeout;
	if (idle != 0)
		ngtcp2_conn_set_keep_alive_timeout(qc->conn, idle / 2);
}

void
qconn_want_write(struct qconn *qc)
{
	if (qc->write_queued || qc->state != QC_ACTIVE)
		return;
	qc->write_queued = true;
	TAILQ_INSERT_TAIL(&qc->srv->want_write, qc, write_entry);
}

/*
 * A train's send failed (errno): whether the error is GSO's, which is then
 * off for good. It may be: the train's first datagram is sent alone, and
 * only if that goes is GSO to blame. A path that refuses every datagram
 * (EINVAL from a bad source address, say) must not cost every other
 * connection its GSO. false, with errno set, when the datagram did not go.
 */
static bool
gso_refused(struct quic_server *srv, struct udp_sock *sock,
    const uint8_t *buf, size_t seg, const struct addr *remote,
    const struct addr *local, uint8_t ecn)
{
	int gso_errno = errno;

	if (gso_errno != EIO && gso_errno != EINVAL &&
	    gso_errno != ENOPROTOOPT && gso_errno != EOPNOTSUPP)
		return false;
	if (udp_send(sock->fd, buf, seg, remote, local, ecn) == -1)
		return false;
	log_info("UDP GSO refused (%s); sending datagrams one by one",
	    strerror(gso_errno));
	srv->no_gso = true;
	return true;
}

/*
 * Sends len bytes, datagrams of seg bytes, in one sendmsg (UDP_SEGMENT for
 * more than one), and counts a train that went as a GSO batch: as it is
 * sent, whether first or from the socket's write callback.
 */
static int
send_gso(int fd, const uint8_t *buf, size_t len, size_t seg,
    const struct addr *remote, const struct addr *local, uint8_t ecn)
{
	if (udp_send_gso(fd, buf, len, seg, remote, local, ecn) == -1)
		return -1;
	if (len > seg) {
		stats.gso_batches++;
		stats.gso_datagrams += (len + seg - 1) / seg;
	}
	return 0;
}

/*
 * Sends a train of datagrams of seg bytes (the last may be shorter) on one
 * path, with GSO when the kernel has it. A train the socket refuses is
 * kept whole and sent when the socket is writable; returns -1 then.
 */
static int
send_train(struct qconn *qc, const uint8_t *buf, size_t len, size_t seg,
    const ngtcp2_path *path, uint8_t ecn)
{
	struct quic_server *srv = qc->srv;
	struct udp_sock *sock = qc->sock;
	struct addr remote, local;
	size_t off, first = 0, n = (len + seg - 1) / seg;
	int rv;

	addr_set(&remote, (const struct sockaddr *)path->remote.addr,
	    path->remote.addrlen);
	addr_set(&local, (const struct sockaddr *)path->local.addr,
	    path->local.addrlen);
	if (n > 1 && !srv->no_gso) {
		rv = send_gso(sock->fd, buf, len, seg, &remote, &local, ecn);
		if (rv == 0) {
			off = len;
			goto sent;
		}
		if (!gso_refused(srv, sock, buf, seg, &remote, &local, ecn)) {
			off = 0;
			goto failed;
		}
		first = seg;	/* the rest one by one */
	}
	for (off = first; off < len; off += seg) {
		size_t k = len - off < seg ? len - off : seg;

		if (udp_send(sock->fd, buf + off, k, &remote, &local, ecn) == -1)
			goto failed;
	}
sent:
	stats.datagrams_sent += n;
	stats.bytes_sent += len;
	qc->bytes_out += len;
	return 0;
failed:
	/* the datagrams that went one by one before the error */
	stats.datagrams_sent += off / seg;
	stats.bytes_sent += off;
	qc->bytes_out += off;
	if (errno != EAGAIN && errno != EWOULDBLOCK) {
		/* ICMP errors and the like: the packets count as lost */
		stats.send_errors++;
		log_debug("%s: sendmsg: %s", qc->peer, strerror(errno));
		return 0;
	}
	stats.send_blocked++;
	if ((qc->pending = malloc(sizeof(*qc->pending) + len - off)) == NULL)
		return 0;	/* lost; ngtcp2 will retransmit */
	memcpy(qc->pending->data, buf + off, len - off);
	qc->pending->len = len - off;
	stats.send_pending_bytes += qc->pending->len;
	qc->pending->off = 0;
	qc->pending->seg = seg;
	qc->pending->remote = remote;
	qc->pending->local = local;
	qc->pending->ecn = ecn;
	qc->blocked = true;
	TAILQ_INSERT_TAIL(&sock->blocked, qc, blocked_entry);
	ev_io_start(srv->loop, &sock->wev);
	return -1;
}

/* Drops n bytes from the front of cnt vectors; returns how many remain. */
static nghttp3_ssize
vec_advance(nghttp3_vec **vp, nghttp3_ssize cnt, size_t n)
{
	nghttp3_vec *v = *vp;

	while (cnt > 0 && n >= v->len) {
		n -= v->len;
		v++;
		cnt--;
	}
	if (cnt > 0) {
		v->base += n;
		v->len -= n;
	}
	*vp = v;
	return cnt;
}

/*
 * Tells nghttp3 how much of a stream ngtcp2 took. Once per set of vectors
 * rather than once per packet: nghttp3 runs nothing in between, and each
 * call looks the stream up and may reschedule it.
 */
static int
h3_written(struct qconn *qc, int64_t stream_id, size_t *written, bool *wrote)
{
	size_t n = *written;

	if (!*wrote)
		return 0;
	*written = 0;
	*wrote = false;
	if (stream_id == qc->ctrl_stream)
		qc->ctrl_written += n;	/* see acked_stream_data_offset */
	return nghttp3_conn_add_write_offset(qc->h3, stream_id, n);
}

bool
qconn_finished(const struct qconn *qc)
{
	return qc->nexchanges == 0 && !qc->upgrade_grace && (qc->retired ||
	    (qc->srv->shutting_down && (qc->goaway_sent ||
	    !qc->srv->shutdown_notice)));
}

/*
 * A finished connection (qconn_finished) is closed once its client has
 * acknowledged all that was sent to it, the final GOAWAY among it (at the
 * end of qconn_write), or else at its first write a second after that
 * GOAWAY (a loss timer's, or the sweep's for one that has none, at the
 * anti-amplification limit say): a request the client sent before the
 * GOAWAY reached it is refused with H3_REQUEST_REJECTED, which a client
 * may send again on a new connection, not lost in a close (libcurl fails
 * it). The same for a retired one (generations_bound).
 */
#define GOAWAY_LINGER		1.	/* seconds */

static bool
qconn_lingers(const struct qconn *qc, double now)
{
	return qc->goaway_sent && now - qc->goaway_at < GOAWAY_LINGER;
}

static void
qconn_write(struct qconn *qc)
{
	struct quic_server *srv = qc->srv;
	ngtcp2_path_storage ps, train_ps;
	ngtcp2_pkt_info pi;
	nghttp3_vec vecbuf[16], *vec = vecbuf;
	ngtcp2_ssize nwrite, ndatalen;
	uint64_t ts = quic_now();
	int64_t stream_id = -1;
	nghttp3_ssize sveccnt = 0;
	uint32_t flags;
	int fin = 0, rv;
	size_t npkts = 0, max_pkts, off = 0, seg = 0;
	uint64_t data_left;
	ngtcp2_tstamp expiry;
	uint8_t train_ecn = 0;
	bool drained = false, wrote = false, fin_alone = false, owed = false;
	size_t written = 0;
	struct exchange *ex;

	if (qc->state != QC_ACTIVE)
		return;
	if (qc->blocked) {
		/*
		 * Nothing goes out until the socket takes the held packets
		 * (quic_sock_write_cb, which asks for a write then): a timer
		 * due now would fire on every loop iteration meanwhile.
		 */
		ev_timer_stop(srv->loop, &qc->timer);
		return;
	}
	/*
	 * The client has a shutdown's notice: no request it sends from now
	 * on crosses the final GOAWAY (server_shutdown).
	 */
	if (qc->notice_acked && srv->shutdown_notice && !qc->goaway_sent)
		h3_goaway(qc);
	if (qconn_finished(qc) && !qconn_lingers(qc, mono_now())) {
		/* graceful shutdown, or an old configuration: its last
		   request is done */
		if (qc->retired && qc->last_error.error_code == 0)
			ngtcp2_ccerr_set_application_error(&qc->last_error,
			    NGHTTP3_H3_NO_ERROR, NULL, 0);
		qconn_close(qc);
		return;
	}
	ngtcp2_path_storage_zero(&ps);
	ngtcp2_path_storage_zero(&train_ps);
	/* Bounded per call; the rest waits for the next loop iteration. */
	max_pkts = ngtcp2_conn_get_send_quantum(qc->conn) / QUIC_MAX_PKTLEN + 1;
	/*
	 * No more than one train holds: a 64 KiB quantum is 46 packets of
	 * 1444 bytes, of which a train takes 45, and the 46th went out in
	 * a sendmsg of its own (on a download, every other one).
	 */
	if (max_pkts > QUIC_TRAIN_PKTS)
		max_pkts = QUIC_TRAIN_PKTS;

	for (;;) {
		/*
		 * What nghttp3 handed out last time (up to 16 vectors: on a
		 * download, about 30 packets' worth) is still there, past
		 * what ngtcp2 took: packets go on from it without asking
		 * nghttp3 again, which would walk its control and QPACK
		 * streams each time.
		 */
		data_left = ngtcp2_conn_get_max_data_left(qc->conn);
		if (sveccnt == 0 || data_left == 0) {
			rv = h3_written(qc, stream_id, &written, &wrote);
			if (rv != 0)
				goto h3_error;
			vec = vecbuf;
			/* a FIN owed first: see h3_writev */
			owed = qc->fin_owed >= 0;
			sveccnt = h3_writev(qc->h3, &qc->fin_owed,
			    data_left > 0, &stream_id, &fin, vec,
			    sizeof(vecbuf) / sizeof(vecbuf[0]));
			fin_alone = stream_id >= 0 && fin && sveccnt == 0;
			if (sveccnt < 0) {
				ngtcp2_ccerr_set_application_error(
				    &qc->last_error,
				    nghttp3_err_infer_quic_app_error_code(
				    (int)sveccnt), NULL, 0);
				qconn_close(qc);
				return;
			}
		}
		flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
		if (fin)
			flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
		nwrite = ngtcp2_conn_writev_stream(qc->conn, &ps.path, &pi,
		    srv->txbuf + off, QUIC_MAX_PKTLEN, &ndatalen, flags,
		    stream_id, (const ngtcp2_vec *)vec, (size_t)sveccnt, ts);
		/* a FIN alone: taken, or else owed unless the stream is gone
		   (errors below; WRITE_MORE took it) */
		if (fin_alone)
			h3_fin_offered(&qc->fin_owed, stream_id,
			    ndatalen >= 0 || nwrite < 0);
		if (nwrite < 0) {
			switch (nwrite) {
			case NGTCP2_ERR_STREAM_NOT_FOUND:
				/* an owed FIN's stream, closed since */
				if (!owed)
					break;
				sveccnt = 0;
				continue;
			case NGTCP2_ERR_STREAM_DATA_BLOCKED:
				rv = h3_written(qc, stream_id, &written,
				    &wrote);
				if (rv != 0)
					goto h3_error;
				nghttp3_conn_block_stream(qc->h3, stream_id);
				if (stream_id == qc->qenc_stream)
					qc->qenc_blocked = true;
				if (stream_id == qc->qdec_stream)
					qc->qdec_blocked = true;
				if ((ex = exchange_find(qc, stream_id)) != NULL)
					exchange_flow_blocked(ex, true);
				sveccnt = 0;
				continue;
			case NGTCP2_ERR_STREAM_SHUT_WR:
				rv = h3_written(qc, stream_id, &written,
				    &wrote);
				if (rv != 0)
					goto h3_error;
				nghttp3_conn_shutdown_stream_write(qc->h3,
				    stream_id);
				/*
				 * the client's STOP_SENDING: ngtcp2 reset it,
				 * a tunnel's end, on the budget of resets
				 */
				if ((ex = exchange_find(qc, stream_id)) != NULL &&
				    exchange_client_stopped(ex) &&
				    charge_cancel(qc, ex) != 0) {
					qconn_close(qc);
					return;
				}
				sveccnt = 0;
				continue;
			case NGTCP2_ERR_WRITE_MORE:
				written += (size_t)ndatalen;
				wrote = true;
				sveccnt = 0;	/* all of it went */
				continue;
			}
			ngtcp2_ccerr_set_liberr(&qc->last_error, (int)nwrite,
			    NULL, 0);
			qconn_close(qc);
			return;
		}
		if (ndatalen >= 0) {
			written += (size_t)ndatalen;
			wrote = true;
			sveccnt = vec_advance(&vec, sveccnt, (size_t)ndatalen);
		}
		if (nwrite == 0) {
			drained = npkts > 0;
			break;
		}
		npkts++;
		/*
		 * A train carries datagrams of one size on one path with one
		 * ECN marking; a shorter one ends it. One that does not fit is
		 * sent after the train, as the start of the next.
		 */
		if (off > 0 && ((size_t)nwrite > seg ||
		    !ngtcp2_path_eq(&train_ps.path, &ps.path) ||
		    pi.ecn != train_ecn)) {
			if (send_train(qc, srv->txbuf, off, seg, &train_ps.path,
			    train_ecn) == -1)
				goto out;	/* the new packet counts as lost */
			memmove(srv->txbuf, srv->txbuf + off, (size_t)nwrite);
			off = 0;
		}
		if (off == 0) {
			seg = (size_t)nwrite;
			ngtcp2_path_copy(&train_ps.path, &ps.path);
			train_ecn = pi.ecn;
		}
		off += (size_t)nwrite;
		if ((size_t)nwrite < seg || npkts >= max_pkts ||
		    off + seg > QUIC_GSO_MAX_BYTES) {
			rv = send_train(qc, srv->txbuf, off, seg,
			    &train_ps.path, train_ecn);
			off = 0;
			if (rv == -1)
				goto out;
			if (npkts >= max_pkts) {
				/* more may be ready: after other work */
				qconn_want_write(qc);
				goto out;
			}
		}
	}
	if (off > 0)
		(void)send_train(qc, srv->txbuf, off, seg, &train_ps.path,
		    train_ecn);
out:
	if ((rv = h3_written(qc, stream_id, &written, &wrote)) != 0)
		goto h3_error;
	if (qconn_finished(qc)) {
		ngtcp2_conn_info ci;

		ngtcp2_conn_get_conn_info(qc->conn, &ci);
		if (ci.bytes_in_flight == 0) {
			qconn_close(qc);	/* see qconn_lingers */
			return;
		}
	}
	/*
	 * Pacing: the bytes just sent hold the next packet back for a
	 * while (ngtcp2 sets that time only here, so it held back none of
	 * this call's packets). When this call sent packets and stopped
	 * for want of anything more to send, nothing is waiting for that
	 * time, and a timer for it would only wake the loop to find
	 * nothing to do (about once per request under load): the timer is
	 * armed for ngtcp2's other deadlines, read before the pacing one
	 * is set. Data that comes before the pacing time gets no packet
	 * from ngtcp2; that call sends none and arms the timer for it.
	 */
	if (drained)
		expiry = ngtcp2_conn_get_expiry(qc->conn);
	ngtcp2_conn_update_pkt_tx_time(qc->conn, ts);
	if (!drained)
		expiry = ngtcp2_conn_get_expiry(qc->conn);
	qconn_arm_timer(qc, expiry);
	return;
h3_error:
	ngtcp2_ccerr_set_application_error(&qc->last_error,
	    nghttp3_err_infer_quic_app_error_code(rv), NULL, 0);
	qconn_close(qc);
}

static void
qconn_arm_timer(struct qconn *qc, ngtcp2_tstamp expiry)
{
	uint64_t now = quic_now();
	double t;

	t = expiry <= now ? 1e-9 : (double)(expiry - now) / NGTCP2_SECONDS;
	qc->timer.repeat = t;
	ev_timer_again(qc->srv->loop, &qc->timer);
}

void
qconn_end_period(struct qconn *qc)
{
	if (qc->state == QC_ACTIVE ||
	    (qc->state == QC_CLOSING && qc->handshake_done))
		return;
	qc->timer.repeat = 1e-9;	/* timer_cb frees it */
	ev_timer_again(qc->srv->loop, &qc->timer);
}

static void
start_period(struct qconn *qc, enum qconn_state state)
{
	qc->state = state;
	client_forget(qc);
	if (qc->write_queued) {
		TAILQ_REMOVE(&qc->srv->want_write, qc, write_entry);
		qc->write_queued = false;
	}
	/* RFC 9000 10.2: three times the PTO. */
	qc->timer.repeat = 3.0 * (double)ngtcp2_conn_get_pto(qc->conn) /
	    NGTCP2_SECONDS;
	ev_timer_again(qc->srv->loop, &qc->timer);
	if (qc->srv->shutting_down)
		qconn_end_period(qc);
	exchange_abort_all(qc);
	/*
	 * What is left is to answer with the close, or to wait: the HTTP/3
	 * state (QPACK tables, streams; 180 KB for some) goes now, not
	 * after three PTOs that a slow path makes minutes.
	 */
	nghttp3_conn_del(qc->h3);
	qc->h3 = NULL;
	stats.conns_closing++;
}

bool
qconn_close(struct qconn *qc)
{
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	ngtcp2_ssize n;

	if (qc->state != QC_ACTIVE)
		return true;
	if (ngtcp2_conn_in_closing_period(qc->conn) ||
	    ngtcp2_conn_in_draining_period(qc->conn)) {
		start_period(qc, QC_DRAINING);
		return true;
	}
	ngtcp2_path_storage_zero(&ps);
	if ((qc->close_pkt = malloc(QUIC_MAX_PKTLEN)) == NULL) {
		qconn_free(qc);
		return false;
	}
	/* none, with no room left under the anti-amplification limit */
	n = ngtcp2_conn_write_connection_close(qc->conn, &ps.path, &pi,
	    qc->close_pkt, QUIC_MAX_PKTLEN, &qc->last_error, quic_now());
	if (n <= 0) {
		qconn_free(qc);
		return false;
	}
	qc->close_pktlen = (size_t)n;
	log_debug("%s: closing with error 0x%llx", qc->peer,
	    (unsigned long long)qc->last_error.error_code);
	start_period(qc, QC_CLOSING);
	if (!qc->blocked)
		(void)send_train(qc, qc->close_pkt, qc->close_pktlen,
		    qc->close_pktlen, &ps.path, pi.ecn);
	return true;
}

/* A datagram outside any connection's flow (VN, Retry, resets): counted. */
static int
send_connless(struct udp_sock *sock, const uint8_t *buf, size_t len,
    const struct addr *remote, const struct addr *local)
{
	if (udp_send(sock->fd, buf, len, remote, local, 0) == -1)
		return -1;
	stats.datagrams_sent++;
	stats.bytes_sent += len;
	return 0;
}

static void
send_version_negotiation(struct udp_sock *sock, const ngtcp2_version_cid *vc,
    const struct addr *remote, const struct addr *local)
{
	struct quic_server *srv = sock->srv;
	uint8_t unused;
	ngtcp2_ssize n;

	rng_fill(&unused, 1);
	n = ngtcp2_pkt_write_version_negotiation(srv->txbuf,
	    sizeof(srv->txbuf), unused, vc->scid, vc->scidlen, vc->dcid,
	    vc->dcidlen, quic_versions, NVERSIONS);
	if (n <= 0)
		return;
	stats.version_negotiations++;
	(void)send_connless(sock, srv->txbuf, (size_t)n, remote, local);
}

/* RFC 9000 10.3: for a short-header packet of an unknown connection. */
static void
send_stateless_reset(struct udp_sock *sock, size_t len, const uint8_t *dcid,
    size_t dcidlen, const struct addr *remote, const struct addr *local)
{
	struct quic_server *srv = sock->srv;
	uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN], rnd[64];
	ngtcp2_cid cid;
	ngtcp2_ssize n;
	size_t size;
	ev_tstamp now = ev_now(srv->loop);

	/* smaller than what triggered it, so two endpoints cannot loop */
	if (dcidlen != srv->cid_len || len <= 1 +
	    NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN)
		return;
	/*
	 * Servers behind one load balancer share the secret: the token of an
	 * ID of another's is that server's client's, and would end its
	 * connection (RFC 9000 21.11). Only an ID of this server's is reset.
	 * Before the rate, so that another's IDs spend none of this server's
	 * resets: the decryption is one block or four, its key made once.
	 */
	if (srv->cid_lb != NULL && !cid_lb_names_us(srv->cid_lb, dcid,
	    dcidlen))
		return;
	if (!bucket_take(&srv->reset_budget, &srv->reset_refill, now,
	    STATELESS_RESET_RATE, STATELESS_RESET_RATE)) {
		stats.stateless_resets_limited++;
		return;
	}
	size = len - 1 < 43 ? len - 1 : 43;
	ngtcp2_cid_init(&cid, dcid, dcidlen);
	if (ngtcp2_crypto_generate_stateless_reset_token(token, srv->secret,
	    sizeof(srv->secret), &cid) != 0)
		return;
	rng_fill(rnd, sizeof(rnd));
	n = ngtcp2_pkt_write_stateless_reset(srv->txbuf, size, token, rnd,
	    size - NGTCP2_STATELESS_RESET_TOKENLEN);
	if (n <= 0)
		return;
	if (send_connless(sock, srv->txbuf, (size_t)n, remote, local) != 0)
		return;
	stats.stateless_resets_sent++;
	if (log_debug_enabled()) {
		char to[ADDR_STRLEN], hex[CID_HEXLEN];

		log_debug("stateless reset to %s for dcid %s", addr_format(remote,
		    to, sizeof(to)), cid_hex(&cid, hex));
	}
}

/* Returns whether the Retry went out. */
static bool
send_retry(struct udp_sock *sock, const ngtcp2_pkt_hd *hd,
    const struct addr *remote, const struct addr *local)
{
	struct quic_server *srv = sock->srv;
	uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN2];
	ngtcp2_cid scid;
	ngtcp2_ssize tokenlen, n;

	cid_new(srv, &scid);
	tokenlen = ngtcp2_crypto_generate_retry_token2(token, srv->secret,
	    sizeof(srv->secret), hd->version, &remote->u.sa, remote->len,
	    &scid, &hd->dcid, token_now());
	if (tokenlen < 0)
		return false;
	n = ngtcp2_crypto_write_retry(srv->txbuf, sizeof(srv->txbuf),
	    hd->version, &hd->scid, &scid, &hd->dcid, token,
	    (size_t)tokenlen);
	if (n <= 0 ||
	    send_connless(sock, srv->txbuf, (size_t)n, remote, local) == -1)
		return false;
	stats.retries_sent++;
	return true;
}

/*
 * An Initial answered with CONNECTION_CLOSE and no state kept: INVALID_TOKEN
 * for a bad Retry token (RFC 9000 8.1.2), CONNECTION_REFUSED over a limit.
 * A client refused again and again is left unanswered for a while (see
 * clients_may_refuse).
 */
static void
send_stateless_close(struct udp_sock *sock, const ngtcp2_pkt_hd *hd,
    const struct addr *remote, const struct addr *local, uint64_t code)
{
	struct quic_server *srv = sock->srv;
	ngtcp2_ssize n;

	if (!clients_may_refuse(srv->clients, remote, ev_now(srv->loop))) {
		stats.refusals_unanswered++;
		return;
	}
	n = ngtcp2_crypto_write_connection_close(srv->txbuf,
	    sizeof(srv->txbuf), hd->version, &hd->scid, &hd->dcid, code,
	    NULL, 0);
	if (n > 0)
		(void)send_connless(sock, srv->txbuf, (size_t)n, remote, local);
}

/*
 * max_connections_per_client, at a client's Initial: whether it was turned
 * away (with Retry, or refused). Connections count once their client's
 * address is proven (a valid token, or the handshake done), so that
 * Initials forged with a client's address cannot take its share; while a
 * client has the limit's number of connections in all, one not proven yet
 * is sent a Retry to prove it, unless the listener never sends Retry.
 */
static bool
client_over(struct udp_sock *sock, const ngtcp2_pkt_hd *hd,
    const struct addr *remote, const struct addr *local, bool validated)
{
	const struct config_listener *lc = sock->listener->cfg;
	uint64_t limit = sock->listener->gen->cfg->max_conns_per_client;
	struct client *c;

	if (limit == 0 ||
	    (c = clients_find(sock->srv->clients, remote)) == NULL)
		return false;
	if (!validated && c->conns >= limit &&
	    lc->retry != CONFIG_RETRY_NEVER) {
		(void)send_retry(sock, hd, remote, local);
		return true;
	}
	if (c->proven < limit)
		return false;
	stats.refused_per_client++;
	send_stateless_close(sock, hd, remote, local,
	    NGTCP2_CONNECTION_REFUSED);
	return true;
}

/*
 * A client Initial for no known connection: check its token, answer with
 * Retry when the listener wants the address proven first, or start a
 * connection.
 */
static struct qconn *
accept_initial(struct udp_sock *sock, const ngtcp2_pkt_hd *hd,
    const uint8_t *data, size_t len, const struct addr *remote,
    const struct addr *local, uint8_t ecn, uint64_t ts)
{
	struct quic_server *srv = sock->srv;
	const struct config_listener *lc = sock->listener->cfg;
	const struct config *cfg = sock->listener->gen->cfg;
	ngtcp2_cid odcid;
	bool validated = false, retried = false, token_taken = false;
	uint64_t token_key = 0;
	struct qconn *qc;

	/*
	 * RFC 9000 7.2: a client's first DCID has at least 8 bytes, and after
	 * a Retry it is the SCID qproxy chose. A shorter one would go into
	 * the connection ID table as it came.
	 */
	if (hd->dcid.datalen < NGTCP2_MIN_INITIAL_DCIDLEN) {
		stats.dropped_invalid++;
		return NULL;
	}
	if (hd->tokenlen > 0) {
		switch (hd->token[0]) {
		case NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2:
			if (ngtcp2_crypto_verify_retry_token2(&odcid, hd->token,
			    hd->tokenlen, srv->secret, sizeof(srv->secret),
			    hd->version, &remote->u.sa, remote->len, &hd->dcid,
			    RETRY_TOKEN_TIMEOUT, token_now()) != 0) {
				/*
				 * After its Retry, a client's Initials carry
				 * the token to the connection ID the server
				 * chose, which the token was not made for:
				 * one of the process taken over from, which
				 * has the connection (or refuses it).
				 */
				if (upgrade_forward(sock, data, len, remote,
				    local, ecn)) {
					char peer[INET6_ADDRSTRLEN];

					log_debug("%s: a Retry token for another "
					    "connection ID passed to the process "
					    "before", addr_format_host(remote,
					    peer, sizeof(peer)));
					return NULL;
				}
				stats.tokens_invalid++;
				send_stateless_close(sock, hd, remote, local,
				    NGTCP2_INVALID_TOKEN);
				return NULL;
			}
			validated = retried = true;
			break;
		case NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR:
			/*
			 * A stale NEW_TOKEN token is no reason to refuse, nor
			 * one taken before (RFC 9000 8.1.3): the client is
			 * then only not proven.
			 */
			token_key = replay_key(srv->tokens_taken, hd->token,
			    hd->tokenlen);
			if (ngtcp2_crypto_verify_regular_token(hd->token,
			    hd->tokenlen, srv->secret, sizeof(srv->secret),
			    &remote->u.sa, remote->len, REGULAR_TOKEN_TIMEOUT,
			    token_now()) != 0)
				stats.tokens_invalid++;
			else if (replay_seen(srv->tokens_taken, token_key,
			    ev_now(srv->loop)))
				stats.tokens_reused++;
			else
				validated = token_taken = true;
			break;
		}
	}
	if (!validated && (lc->retry == CONFIG_RETRY_ALWAYS ||
	    (lc->retry == CONFIG_RETRY_AUTO &&
	    stats.handshakes_unvalidated >= cfg->retry_threshold))) {
		(void)send_retry(sock, hd, remote, local);
		return NULL;
	}
	if (client_over(sock, hd, remote, local, validated))
		return NULL;
	/* Past Retry, what no client may push beyond: refused, no state. */
	if (stats.conns_current >= cfg->max_connections ||
	    (lc->max_connections > 0 && sock->nconns >= lc->max_connections)) {
		stats.refused_max_connections++;
		send_stateless_close(sock, hd, remote, local,
		    NGTCP2_CONNECTION_REFUSED);
		return NULL;
	}
	if (stats.handshakes_current >= cfg->max_handshakes) {
		stats.refused_max_handshakes++;
		send_stateless_close(sock, hd, remote, local,
		    NGTCP2_CONNECTION_REFUSED);
		return NULL;
	}
	if ((qc = qconn_new(sock, hd, remote, local, retried ? &odcid : NULL,
	    validated, ts)) == NULL)
		stats.dropped_refused++;
	else if (token_taken) {
		/* taken once ngtcp2 takes the packet (qconn_read) */
		qc->token_key = token_key;
		qc->token_pending = true;
	}
	return qc;
}

static void
handle_datagram(struct udp_sock *sock, const uint8_t *data, size_t len,
    const struct addr *remote, const struct addr *local, uint8_t ecn,
    uint64_t ts)
{
	struct quic_server *srv = sock->srv;
	ngtcp2_version_cid vc;
	ngtcp2_pkt_hd hd;
	ngtcp2_path path;
	ngtcp2_pkt_info pi = { .ecn = ecn };
	struct qconn *qc;
	bool fresh = false;
	uint8_t alert;
	int rv;

	rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, srv->cid_len);
	if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
		send_version_negotiation(sock, &vc, remote, local);
		return;
	}
	if (rv != 0) {
		stats.dropped_invalid++;
		return;
	}
	if ((qc = cid_find(srv, vc.dcid, vc.dcidlen)) == NULL) {
		if (ngtcp2_accept(&hd, data, len) != 0) {
			/* the process taken over from may have it */
			if (upgrade_forward(sock, data, len, remote, local,
			    ecn))
				return;
			stats.dropped_unknown++;
			/* a 1-RTT packet for a connection we no longer have */
			if (!(data[0] & 0x80))
				send_stateless_reset(sock, len, vc.dcid,
				    vc.dcidlen, remote, local);
			return;
		}
		/*
		 * Shutting down, or a draining socket (its listener removed):
		 * no new connection, and the client is told at once rather
		 * than left to time out.
		 */
		if (srv->shutting_down || sock->listener == NULL) {
			stats.dropped_refused++;
			send_stateless_close(sock, &hd, remote, local,
			    NGTCP2_CONNECTION_REFUSED);
			return;
		}
		qc = accept_initial(sock, &hd, data, len, remote, local, ecn,
		    ts);
		if (qc == NULL)
			return;
		fresh = true;
	} else if (qc->sock != sock) {
		/*
		 * A connection's packets come to the socket it began on: its
		 * answers leave from that one (a client cannot move to another
		 * address of ours).
		 */
		stats.dropped_unknown++;
		return;
	}
	if (qc->state == QC_CLOSING) {
		/* RFC 9000 10.2.1: answer with the close again, less often */
		qc->close_resends++;
		if (!qc->blocked &&
		    (qc->close_resends & (qc->close_resends - 1)) == 0)
			(void)send_connless(sock, qc->close_pkt,
			    qc->close_pktlen, remote, local);
		return;
	}
	if (qc->state == QC_DRAINING)
		return;
	qc->bytes_in += len;
	qc->last_rx = (double)ts / NGTCP2_SECONDS;

	path.local.addr = (ngtcp2_sockaddr *)(uintptr_t)&local->u.sa;
	path.local.addrlen = local->len;
	path.remote.addr = (ngtcp2_sockaddr *)(uintptr_t)&remote->u.sa;
	path.remote.addrlen = remote->len;
	path.user_data = NULL;
	rv = ngtcp2_conn_read_pkt(qc->conn, &path, &pi, data, len, ts);
	/*
	 * The first datagram of a connection closed it (a CONNECTION_CLOSE
	 * in the client's Initial): it began nothing to keep. Drained for
	 * three PTOs, it held a handshake's place (max_handshakes, and
	 * retry = auto's count of those unvalidated) for any source address,
	 * at the price of one datagram. Dropped as an Initial that opens
	 * nothing is, below.
	 */
	if (fresh && rv == NGTCP2_ERR_DRAINING)
		rv = NGTCP2_ERR_DROP_CONN;
	if (!qc->accepted && rv != NGTCP2_ERR_DROP_CONN &&
	    rv != NGTCP2_ERR_RETRY) {
		qc->accepted = true;	/* counted from its first packet */
		if (qc->token_pending)
			(void)replay_add(srv->tokens_taken, qc->token_key,
			    ev_now(srv->loop));
		qc->sock->conns_total++;
		stats.conns_total++;
	}
	if (rv == 0 && acked_flush(qc) != 0)
		rv = NGTCP2_ERR_CALLBACK_FAILURE;
	if (rv != 0) {
		switch (rv) {
		case NGTCP2_ERR_DRAINING:
			start_period(qc, QC_DRAINING);
			return;
		case NGTCP2_ERR_DROP_CONN:
			/*
			 * An Initial that opened nothing (no CRYPTO frame it
			 * could read with the keys of its connection ID, or a
			 * close): a client's later Initial, ACKs and Finished,
			 * or its close, to the ID of a process taken over
			 * from, which has it.
			 */
			if (fresh && upgrade_forward(sock, data, len, remote,
			    local, ecn))
				log_debug("%s: an Initial that begins nothing "
				    "passed to the process before", qc->peer);
			qconn_free(qc);
			return;
		case NGTCP2_ERR_RETRY:
			/*
			 * The first Initial came without the start of the
			 * ClientHello (a ClientHello of two packets, the
			 * second first): ngtcp2 asks for a Retry, after which
			 * the client sends it all again at once, rather than
			 * when its retransmission timer runs out.
			 */
			if (!qc->accepted &&
			    ngtcp2_accept(&hd, data, len) == 0)
				qc->retry_sent = send_retry(sock, &hd, remote,
				    local);
			qconn_free(qc);
			return;
		case NGTCP2_ERR_CRYPTO:
			alert = ngtcp2_conn_get_tls_alert(qc->conn);
			/* client_ca's, client_verify = require */
			if (alert == TLS_ALERT_CERTIFICATE_REQUIRED)
				stats.client_certs_missing++;
			if (qc->last_error.error_code == 0)
				ngtcp2_ccerr_set_tls_alert(&qc->last_error,
				    alert, NULL, 0);
			break;
		default:
			if (qc->last_error.error_code == 0)
				ngtcp2_ccerr_set_liberr(&qc->last_error, rv,
				    NULL, 0);
			break;
		}
		log_debug("%s: ngtcp2_conn_read_pkt: %s", qc->peer,
		    ngtcp2_strerror(rv));
		qconn_close(qc);
		return;
	}
	if (qc->handshake_done && qc->ssl != NULL)
		qconn_shed_tls(qc);
	if (qc->upgrade_grace && qc->streams_total > 0) {
		/* its first requests, all that this datagram brought, served */
		qc->upgrade_grace = false;
		h3_goaway_shutdown(qc);
	}
	qconn_want_write(qc);
}

void
quic_feed(struct udp_sock *sock, const uint8_t *data, size_t len,
    const struct addr *remote, const struct addr *local, uint8_t ecn)
{
	stats.datagrams_received++;
	stats.bytes_received += len;
	sock->reading = true;
	handle_datagram(sock, data, len, remote, local, ecn, quic_now());
	sock->reading = false;
	server_sock_release(sock);
}

void
quic_sock_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct udp_sock *sock = w->data;

	/*
	 * A draining socket (its listener removed by a reload) is freed
	 * with its last connection, which a datagram may end: not while
	 * the rest of the batch still reads from it.
	 */
	sock->reading = true;
	sock_read(sock);
	sock->reading = false;
	server_sock_release(sock);
}

/*
 * Bytes one read of a socket takes before the loop goes on to what they
 * brought: the backend writes, ACKs and credit of exchange_flush and
 * qconn_write. A client that got ahead (the loop was off the CPU, or
 * credit came in a lump) leaves megabytes waiting, and with GRO 16
 * messages hold up to 1 MiB: read at once, decrypted, copied into the
 * request buffers and only then written to the backends, they had left
 * the CPU's caches before their last copy (post10m in bench/RESULTS.md).
 * The socket stays readable: the next poll returns at once for the rest.
 */
#define RECV_BUDGET	(256 * 1024)

static void
sock_read(struct udp_sock *sock)
{
	struct quic_server *srv = sock->srv;
	struct udp_rx *rx;
	size_t off, len, got = 0, want, largest;
	uint64_t ts;
	int n;

	/* Bounded, so that one busy socket cannot starve the rest. */
	for (int round = 0; round < 4; round++) {
		/*
		 * As many messages as the budget's rest holds if each is as
		 * large as the largest of late: 16 single datagrams, 4 GRO
		 * trains of 64 KiB. The guess halves at each read of smaller
		 * ones, so an ACK read between two trains does not let the
		 * next read take 16.
		 */
		if (got >= RECV_BUDGET)
			return;
		want = UDP_RX_BATCH;
		if (sock->rx_largest > 0 &&
		    (RECV_BUDGET - got) / sock->rx_largest < want)
			want = (RECV_BUDGET - got) / sock->rx_largest;
		if (want == 0)
			return;
		n = udp_recv_batch(sock->fd, srv->rx, want, &sock->local);
		if (n == -1) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_warn("%s: recvmmsg", __func__);
			return;
		}
		stats.recv_batches++;
		largest = sock->rx_largest / 2;
		for (int i = 0; i < n; i++) {
			got += srv->rx[i].len;
			if (srv->rx[i].len > largest)
				largest = srv->rx[i].len;
		}
		sock->rx_largest = largest;
		/*
		 * One time for all that one call returned: every datagram
		 * in it had arrived by then, so it is as good an arrival
		 * time as any, and up to thousands of clock reads fewer
		 * (with GRO, one entry holds up to 64 datagrams).
		 */
		ts = quic_now();
		for (int i = 0; i < n; i++) {
			rx = &srv->rx[i];
			if (rx->not_unicast) {
				stats.datagrams_received++;
				stats.bytes_received += rx->len;
				stats.dropped_not_unicast++;
				continue;
			}
			if (rx->seg < rx->len)
				stats.gro_datagrams += (rx->len + rx->seg - 1) /
				    rx->seg;
			/* GRO: datagrams of seg bytes, back to back */
			for (off = 0; off < rx->len; off += len) {
				len = rx->len - off < rx->seg ?
				    rx->len - off : rx->seg;
				stats.datagrams_received++;
				stats.bytes_received += len;
				handle_datagram(sock, rx->buf + off, len,
				    &rx->remote, &rx->local, rx->ecn, ts);
			}
		}
		if ((size_t)n < want)
			return;
	}
}

void
quic_sock_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct udp_sock *sock = w->data;
	struct qconn *qc;
	struct qpending *p;
	size_t len, seg;

	while ((qc = TAILQ_FIRST(&sock->blocked)) != NULL) {
		p = qc->pending;
		seg = p->seg;
		while (p->off < p->len) {
			len = p->len - p->off;
			if (qc->srv->no_gso && len > seg)
				len = seg;
			if (send_gso(sock->fd, p->data + p->off, len, seg,
			    &p->remote, &p->local, p->ecn) == -1) {
				if (len > seg && gso_refused(qc->srv, sock,
				    p->data + p->off, seg, &p->remote,
				    &p->local, p->ecn))
					len = seg;	/* that one went */
				else if (errno == EAGAIN ||
				    errno == EWOULDBLOCK)
					return;
				else {
					stats.send_errors++;
					break;	/* the rest counts as lost */
				}
			}
			stats.datagrams_sent += (len + seg - 1) / seg;
			stats.bytes_sent += len;
			qc->bytes_out += len;
			p->off += len;
		}
		pending_drop(qc);
		TAILQ_REMOVE(&sock->blocked, qc, blocked_entry);
		qc->blocked = false;
		qconn_want_write(qc);
	}
	ev_io_stop(loop, w);
}

/*
 * Batching under load. A busy loop polls again as soon as it has handled
 * what the last poll returned and finds only a datagram or two there: a
 * system call, a wake-up and a small send for little work. When the loop
 * has been on the CPU for batch_busy percent of the last window or more,
 * it lets batch_delay pass between two polls (libev's I/O collect
 * interval: libev sleeps what is left of it since the last poll), so that
 * each poll returns more; below that it polls at once, and an idle or
 * lightly loaded server adds no latency. Waiting lowers the share it
 * measures (the waits are off the CPU, and the work gets cheaper), so
 * once waiting it goes on until the share falls BATCH_HYSTERESIS points
 * below batch_busy.
 *
 * A loop that takes in a client's upload, datagrams by the dozen a poll,
 * wakes for every few of them without being that busy: waiting lets
 * more of them come, and costs the upload nothing (its client goes on
 * sending meanwhile). A window whose polls brought BATCH_BULK datagrams
 * or more on average (each turn of the loop counts as one) counts as busy
 * too. A client sending one small request at a time, which waiting would
 * only hold up, never brings that many.
 */
#define BATCH_WINDOW		0.01	/* seconds */
#define BATCH_HYSTERESIS	20	/* percentage points */
#define BATCH_BULK		8	/* datagrams a poll */

static void
batch_cb(struct ev_loop *loop, ev_check *w, int revents)
{
	struct quic_server *srv = w->data;
	const struct config *cfg = server_config(srv);
	double now, cpu, span, busy, delay = 0, since;
	uint64_t datagrams;
	bool bulk;

	(void)revents;
	srv->batch_turns++;
	/*
	 * ev_now, already read, says whether a window may have passed; not
	 * after a step back of the wall clock, which it follows (no window
	 * would pass for as long as the step): the monotonic clock decides.
	 */
	since = ev_now(loop) - srv->batch_mark;
	if (since >= 0 && since < BATCH_WINDOW)
		return;
	now = mono_now();
	cpu = clock_seconds(CLOCK_THREAD_CPUTIME_ID);
	span = now - srv->batch_start;
	if (span < BATCH_WINDOW)
		return;
	datagrams = stats.datagrams_received - srv->batch_datagrams;
	bulk = datagrams >= BATCH_BULK * srv->batch_turns;
	if (bulk)
		stats.loop_bulk_windows++;
	busy = cfg->batch_busy;
	if (srv->batching)
		busy = busy > BATCH_HYSTERESIS ? busy - BATCH_HYSTERESIS : 0;
	if ((cpu - srv->batch_cpu) * 100 >= busy * span || bulk) {
		stats.loop_busy_windows++;
		if ((delay = cfg->batch_delay) > 0)
			stats.loop_batched_windows++;
	}
	srv->batching = delay > 0;
	ev_set_io_collect_interval(loop, delay);
	srv->batch_mark = ev_now(loop);
	srv->batch_start = now;
	srv->batch_cpu = cpu;
	srv->batch_turns = 0;
	srv->batch_datagrams = stats.datagrams_received;
}

static void
flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct quic_server *srv = w->data;
	TAILQ_HEAD(, qconn) now;
	struct qconn *qc;

	quic_mem_enforce(srv);
	/* request bodies first: the backend taking them frees client credit */
	exchange_flush();
	/* Connections queued while writing go to the next iteration. */
	TAILQ_INIT(&now);
	TAILQ_CONCAT(&now, &srv->want_write, write_entry);
	while ((qc = TAILQ_FIRST(&now)) != NULL) {
		TAILQ_REMOVE(&now, qc, write_entry);
		qc->write_queued = false;
		qconn_write(qc);
	}
	/* More to write: poll without sleeping, then come back here. */
	if (!TAILQ_EMPTY(&srv->want_write))
		ev_idle_start(loop, &srv->kick);
}

static void
kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	ev_idle_stop(loop, w);
}

/*
 * Once a second: connections whose response data has waited send_timeout
 * for the client to take any of it are closed (a client that reads nothing
 * must not hold buffers and backend connections for ever).
 */
static void
sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	static struct log_limit send_timeout_lim;
	struct quic_server *srv = w->data;
	struct qconn *qc, *next;
	double now = mono_now();

	/* idle after traffic: give what the allocator kept back to the system */
	if (LIST_EMPTY(&srv->conns)) {
		if (srv->trim_due) {
			srv->trim_due = false;
			(void)malloc_trim(0);
		}
		return;
	}
	srv->trim_due = true;

	for (qc = LIST_FIRST(&srv->conns); qc != NULL; qc = next) {
		next = LIST_NEXT(qc, entry);
		/*
		 * An upgrade's grace lasts until a first request, or a second
		 * or two past the handshake (a client that connected ahead
		 * and sends nothing): then the shutdown's GOAWAY and close.
		 */
		if (qc->upgrade_grace && qc->handshake_done &&
		    qc->state == QC_ACTIVE) {
			if (qc->grace_mark == 0)
				qc->grace_mark = now;
			else if (now - qc->grace_mark >= 1.) {
				qc->upgrade_grace = false;
				h3_goaway_shutdown(qc);
				qconn_want_write(qc);
			}
		}
		/* finished, and its linger over: see qconn_lingers */
		if (qc->state == QC_ACTIVE && qconn_finished(qc) &&
		    !qconn_lingers(qc, now))
			qconn_want_write(qc);
		/* no credit left for the connection: nothing can move */
		if (qc->state != QC_ACTIVE || (!exchange_conn_sending(qc) &&
		    !(qc->nexchanges > 0 &&
		    ngtcp2_conn_get_max_data_left(qc->conn) == 0))) {
			qc->send_mark = 0;
			continue;
		}
		if (qc->send_mark == 0) {
			qc->send_mark = now;
			continue;
		}
		if (now - qc->send_mark < qc->gen->cfg->send_timeout)
			continue;
		log_limited(&send_timeout_lim, LOG_LEVEL_INFO, "%s: no "
		    "progress sending for %.0fs, closing", qc->peer,
		    now - qc->send_mark);
		stats.closed_send_timeout++;
		ngtcp2_ccerr_set_application_error(&qc->last_error,
		    NGHTTP3_H3_EXCESSIVE_LOAD, NULL, 0);
		qconn_close(qc);
	}
}

void
quic_init(struct quic_server *srv)
{
	LIST_INIT(&srv->conns);
	TAILQ_INIT(&srv->want_write);
	srv->nbuckets = 256;
	if ((srv->buckets = calloc(srv->nbuckets,
	    sizeof(*srv->buckets))) == NULL)
		fatal("%s: calloc", __func__);
	for (size_t i = 0; i < UDP_RX_BATCH; i++) {
		srv->rx[i].cap = 65536;
		if ((srv->rx[i].buf = malloc(srv->rx[i].cap)) == NULL)
			fatal("%s: malloc", __func__);
	}
	rng_fill(srv->hashkey, sizeof(srv->hashkey));
	srv->cid_len = QUIC_SCID_LEN;
	if ((srv->clients = clients_new()) == NULL)
		fatal("%s: clients_new", __func__);
	if ((srv->tokens_taken = replay_new(TOKENS_TAKEN_MAX,
	    (double)REGULAR_TOKEN_TIMEOUT / NGTCP2_SECONDS)) == NULL)
		fatal("%s: replay_new", __func__);
	/* until server_set_secret: a random one, good for this run only */
	rng_fill(srv->secret, sizeof(srv->secret));
	srv->reset_budget = STATELESS_RESET_RATE;
	srv->reset_refill = ev_now(srv->loop);
	ev_prepare_init(&srv->flush, flush_cb);
	srv->flush.data = srv;
	ev_prepare_start(srv->loop, &srv->flush);
	ev_idle_init(&srv->kick, kick_cb);
	ev_check_init(&srv->batch, batch_cb);
	srv->batch.data = srv;
	srv->batch_mark = ev_now(srv->loop);
	srv->batch_start = mono_now();
	srv->batch_cpu = clock_seconds(CLOCK_THREAD_CPUTIME_ID);
	srv->batch_datagrams = stats.datagrams_received;
	ev_check_start(srv->loop, &srv->batch);
	ev_unref(srv->loop);	/* nor does this check */
	ev_timer_init(&srv->sweep, sweep_cb, 1., 1.);
	srv->sweep.data = srv;
	ev_timer_start(srv->loop, &srv->sweep);
	ev_unref(srv->loop);	/* the sweep alone keeps no loop running */
}

void
quic_table_stats(struct quic_server *srv)
{
	stats.tokens_remembered = replay_count(srv->tokens_taken,
	    ev_now(srv->loop));
	stats.tokens_forgotten = replay_evicted(srv->tokens_taken);
	stats.tickets_remembered = tls_tickets_remembered();
	stats.tickets_forgotten = tls_tickets_forgotten();
	stats.clients_current = clients_count(srv->clients);
}

void
quic_fini(struct quic_server *srv)
{
	struct qconn *qc;

	srv->shutting_down = false;	/* no ev_break from qconn_free */
	while ((qc = LIST_FIRST(&srv->conns)) != NULL)
		qconn_free(qc);
	ev_prepare_stop(srv->loop, &srv->flush);
	ev_idle_stop(srv->loop, &srv->kick);
	ev_ref(srv->loop);
	ev_timer_stop(srv->loop, &srv->sweep);
	ev_ref(srv->loop);
	ev_check_stop(srv->loop, &srv->batch);
	ev_set_io_collect_interval(srv->loop, 0.);
	for (size_t i = 0; i < UDP_RX_BATCH; i++)
		free(srv->rx[i].buf);
	free(srv->buckets);
	replay_free(srv->tokens_taken);
	clients_free(srv->clients);
	cid_lb_free(srv->cid_lb);
	srv->cid_lb = NULL;
	explicit_bzero(srv->secret, sizeof(srv->secret));
}

/*
 * The clients with the most connections open (QUIC_PEERS_SHOWN of them),
 * beside max_connections_per_client: who is near it, or holds most.
 */
void
quic_report_peers(struct quic_server *srv, struct strbuf *out, bool json)
{
	const struct client *top[QUIC_PEERS_SHOWN];
	struct peer_row rows[QUIC_PEERS_SHOWN];
	ssize_t n;

	n = clients_top(srv->clients, top, QUIC_PEERS_SHOWN);
	if (n < 0) {
		strbuf_printf(out, json ? "{\"error\":\"out of memory\"}\n" :
		    "out of memory\n");
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		client_format(top[i], rows[i].client, sizeof(rows[i].client));
		rows[i].conns = top[i]->conns;
		rows[i].proven = top[i]->proven;
	}
	quic_render_peers(out, json, clients_count(srv->clients),
	    srv->gen->cfg->max_conns_per_client, rows, (size_t)n);
}

void
quic_render_peers(struct strbuf *out, bool json, size_t clients,
    uint64_t limit, const struct peer_row *rows, size_t n)
{
	if (json)
		strbuf_printf(out, "{\"clients\":%zu,\"limit\":%llu,"
		    "\"top\":[", clients, (unsigned long long)limit);
	else {
		strbuf_printf(out, "%zu client(s) with a connection open; "
		    "max_connections_per_client: ", clients);
		if (limit > 0)
			strbuf_printf(out, "%llu\n", (unsigned long long)limit);
		else
			strbuf_printf(out, "none\n");
		strbuf_printf(out, "%-44s %11s %7s\n", "CLIENT", "CONNECTIONS",
		    "PROVEN");
	}
	for (size_t i = 0; i < n; i++) {
		if (json) {
			strbuf_printf(out, "%s{\"client\":", i > 0 ? "," : "");
			strbuf_json_string(out, rows[i].client);
			strbuf_printf(out, ",\"connections\":%u,\"proven\":%u}",
			    rows[i].conns, rows[i].proven);
		} else
			strbuf_printf(out, "%-44s %11u %7u\n", rows[i].client,
			    rows[i].conns, rows[i].proven);
	}
	if (json)
		strbuf_printf(out, "]}\n");
}

/*
 * The connection's local address and its client's, the proven one (that
 * of the logs, and of allow and deny; not a new path's before it is
 * validated), as text, ADDR_STRLEN each.
 */
static void
conn_addrs(struct qconn *qc, char *lbuf, char *rbuf)
{
	const ngtcp2_path *path = ngtcp2_conn_get_path(qc->conn);
	struct addr local;

	addr_set(&local, (const struct sockaddr *)path->local.addr,
	    path->local.addrlen);
	addr_format(&local, lbuf, ADDR_STRLEN);
	addr_format(&qc->proven, rbuf, ADDR_STRLEN);
}

struct conns_cursor *
quic_conns_begin(struct quic_server *srv, bool json)
{
	struct conns_cursor *cur;
	struct qconn *qc;
	char lbuf[ADDR_STRLEN], rbuf[ADDR_STRLEN];

	if ((cur = calloc(1, sizeof(*cur))) == NULL)
		return NULL;
	cur->next = LIST_FIRST(&srv->conns);
	cur->json = json;
	cur->first = true;
	cur->wpeer = 22;
	cur->wlocal = 22;
	cur->wsni = 20;
	/* the columns as wide as their longest value now: a first pass */
	if (!json)
		LIST_FOREACH(qc, &srv->conns, entry) {
			conn_addrs(qc, lbuf, rbuf);
			cur->wpeer = MAX(cur->wpeer, (int)strlen(rbuf));
			cur->wlocal = MAX(cur->wlocal, (int)strlen(lbuf));
			if (qc->tls.sni != NULL)
				cur->wsni = MAX(cur->wsni,
				    (int)strlen(qc->tls.sni));
		}
	LIST_INSERT_HEAD(&srv->cursors, cur, entry);
	return cur;
}

/* A connection's row. */
static void
conn_row(struct conns_cursor *cur, struct qconn *qc, double now,
    struct strbuf *out)
{
	ngtcp2_conn_info info;
	char lbuf[ADDR_STRLEN], rbuf[ADDR_STRLEN];
	const char *sni;

	conn_addrs(qc, lbuf, rbuf);
	ngtcp2_conn_get_conn_info(qc->conn, &info);
	sni = qc->tls.sni != NULL ? qc->tls.sni : "";
	if (cur->json) {
		strbuf_printf(out, "%s{\"peer\":", cur->first ? "" : ",");
		strbuf_json_string(out, rbuf);
		strbuf_printf(out, ",\"local\":");
		strbuf_json_string(out, lbuf);
		strbuf_printf(out, ",\"sni\":");
		strbuf_json_string(out, sni);
		strbuf_printf(out, ",\"client_cert\":");
		if (qc->tls.peer != NULL)
			strbuf_json_string(out, qc->tls.peer->value);
		else
			strbuf_printf(out, "null");
		strbuf_printf(out, ",\"age\":%.3f,\"idle\":%.3f,"
		    "\"quic_version\":\"0x%x\",\"state\":\"%s\","
		    "\"streams_open\":%zu,\"streams_total\":%llu,"
		    "\"smoothed_rtt_ms\":%.3f,\"cwnd\":%llu,"
		    "\"bytes_in\":%llu,\"bytes_out\":%llu}",
		    now - qc->created, now - qc->last_rx,
		    ngtcp2_conn_get_negotiated_version(qc->conn),
		    qc->state == QC_ACTIVE ? (qc->handshake_done ?
		    "open" : "handshake") : qc->state == QC_CLOSING ?
		    "closing" : "draining", qc->nexchanges,
		    (unsigned long long)qc->streams_total,
		    (double)info.smoothed_rtt / NGTCP2_MILLISECONDS,
		    (unsigned long long)info.cwnd,
		    (unsigned long long)qc->bytes_in,
		    (unsigned long long)qc->bytes_out);
	} else
		strbuf_printf(out, "%-*s %-*s %7.1f %6.1f %-*s "
		    "0x%-8x %5zu %7llu %8.2f %9llu %12llu %12llu\n",
		    cur->wpeer, rbuf, cur->wlocal, lbuf, now - qc->created,
		    now - qc->last_rx, cur->wsni, sni[0] ? sni : "-",
		    ngtcp2_conn_get_negotiated_version(qc->conn),
		    qc->nexchanges,
		    (unsigned long long)qc->streams_total,
		    (double)info.smoothed_rtt / NGTCP2_MILLISECONDS,
		    (unsigned long long)info.cwnd,
		    (unsigned long long)qc->bytes_in,
		    (unsigned long long)qc->bytes_out);
	cur->first = false;
}

int
quic_conns_next(struct conns_cursor *cur, struct strbuf *out)
{
	double now = mono_now();	/* (quic_now's clock) */

	if (!cur->begun) {
		if (cur->json)
			strbuf_printf(out, "{\"connections\":[");
		else
			strbuf_printf(out, "%-*s %-*s %7s %6s %-*s %-10s %5s "
			    "%7s %8s %9s %12s %12s\n", cur->wpeer, "PEER",
			    cur->wlocal, "LOCAL", "AGE", "IDLE", cur->wsni,
			    "SNI", "VERSION", "OPEN", "STREAMS", "RTT_MS",
			    "CWND", "BYTES_IN", "BYTES_OUT");
		cur->begun = true;
	}
	while (cur->next != NULL && out->len < CONTROL_CHUNK) {
		conn_row(cur, cur->next, now, out);
		cur->next = LIST_NEXT(cur->next, entry);
	}
	if (cur->next != NULL)
		return 1;
	if (cur->json)
		strbuf_printf(out, "]}\n");
	return 0;
}

void
quic_conns_end(struct conns_cursor *cur)
{
	if (cur == NULL)
		return;
	LIST_REMOVE(cur, entry);
	free(cur);
}
