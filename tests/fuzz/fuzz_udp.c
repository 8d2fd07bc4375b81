/*
 * fuzz_udp.c: the UDP receive path with real connections behind it.
 *
 * In this process: qproxy's server (server_apply on a generated
 * configuration) with two listeners on 127.0.0.1, one that never asks for
 * Retry and one that always does; a backend on a Unix socket that answers
 * each request head with bytes the input chooses; and an ngtcp2 + wolfSSL
 * client that can complete handshakes, so that input reaches past the
 * Initial packet: HTTP/3 frames on request, control and QPACK streams,
 * resets, migration, key updates, close, and replayed or corrupted
 * packets. Everything travels over real loopback UDP sockets, and the
 * server's event loop runs as in the daemon (ev_run), so datagrams enter
 * through quic_sock_read_cb exactly as in production.
 *
 * The input is a script of operations: an op byte, a length (one byte, or
 * 0xff and two bytes big-endian), and that many bytes of argument. See
 * enum op. Raw datagrams (OP_RAW_*) are what the corpus's captures of
 * real clients replay: the server those clients talked to had other keys,
 * so on replay only a client's first Initial means anything; the built-in
 * client is what reaches the later states. getrandom is this file's own,
 * seeded from the input, so that a run repeats.
 *
 * After each input every connection is freed, and the counters that must
 * then be zero are checked.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

#include "bufq.h"
#include "config.h"
#include "conn.h"
#include "exchange.h"
#include "log.h"
#include "stats.h"
#include "strbuf.h"
#include "tls.h"
#include "fuzz.h"

enum op {
	OP_CONNECT,	/* [flags] new client connection, handshake */
	OP_PUMP,	/* [rounds] let packets flow */
	OP_STREAM,	/* flags, bytes: on a request stream (raw HTTP/3) */
	OP_UNI,		/* flags, bytes: on a client uni stream */
	OP_REQUEST,	/* flags, fields: a HEADERS frame on a request stream */
	OP_RESET,	/* flags, code: RESET_STREAM / STOP_SENDING */
	OP_RAW_A,	/* datagram to the listener without Retry */
	OP_RAW_B,	/* datagram, from another port, to the Retry listener */
	OP_CORRUPT,	/* (index, xor) pairs: alter the next packet */
	OP_BACKEND,	/* flags, bytes: what the backend answers from now on */
	OP_CLOSE,	/* [code] the client closes */
	OP_MIGRATE,	/* [flags] the client moves to its other socket */
	OP_KEY_UPDATE,
	OP_REPLAY,	/* [index] one of the client's last datagrams again */
	OP_SHUTDOWN,	/* the server starts a graceful shutdown */
	NOPS,
};

#define NSTREAMS	4
#define NSAVED		8
#define MAX_OPS		64
#define MAX_CONNECTS	3	/* handshakes are the expensive part */
#define PKT_MAX		1500

/* OP_CONNECT flags */
#define CF_RETRY	0x01	/* to the listener that always sends Retry */
#define CF_VERSION	0x06	/* 0: v1, 1: v2, 2: v1 offering v2 */
#define CF_NO_SNI	0x08
#define CF_NO_H3	0x10	/* no control and QPACK streams */
#define CF_FULL		0x20	/* no resumption: a full handshake */
#define CF_EARLY	0x40	/* resumed, with a GET request in 0-RTT */

/* client stream flags (first argument byte) */
#define SF_INDEX	0x03
#define SF_FIN		0x04

/*
 * A client stream's data: ngtcp2 reads it again for retransmissions until
 * it is acknowledged, so appended pieces never move; all of them are freed
 * with the connection.
 */
#define NSEGS		32

struct cstream {
	int64_t		 id;		/* -1: not open yet */
	uint8_t		*seg[NSEGS];
	size_t		 seglen[NSEGS];
	int		 nseg, cur;	/* cur: the piece being sent */
	size_t		 off;		/* sent of seg[cur] */
	bool		 fin, fin_sent, blocked;
};

struct client {
	ngtcp2_conn		*conn;
	WOLFSSL			*ssl;
	ngtcp2_crypto_conn_ref	 ref;
	int			 sock;		/* which of csock is ours */
	struct sockaddr_in	 remote;
	bool			 dead, handshake_done, confirmed;
	struct cstream		 bidi[NSTREAMS], uni[NSTREAMS];
	uint8_t			 saved[NSAVED][PKT_MAX];
	size_t			 savedlen[NSAVED], nsaved;
	uint32_t		 rng;
};

struct backend_conn {
	int		 fd;
	ev_io		 io;
	uint8_t		 buf[8192];
	size_t		 len;
	uint8_t		 rest[4096];	/* BF_SPLIT: to send later */
	size_t		 restlen;
	unsigned	 rest_turn;	/* of the loop, when cut */
	struct backend_conn *next;
};

static struct ev_loop		*loop;
static struct quic_server	*srv;
static WOLFSSL_CTX		*client_ctx;
static char			 dir[] = "/tmp/fuzz_udp.XXXXXX";
static struct sockaddr_in	 listen_a, listen_b;
static int			 csock[2] = { -1, -1 };
static struct sockaddr_in	 caddr[2];
static int			 backend_fd = -1;
static ev_io			 backend_io;
static struct backend_conn	*backends;
static uint8_t			 backend_resp[4096];
static size_t			 backend_resplen;
static uint8_t			 backend_flags;	/* BF_* */
static struct client		 client;
static int			 connects;

/* a session ticket and transport parameters, for resumption and 0-RTT */
static WOLFSSL_SESSION		*session;
static uint8_t			 tparams[256];
static ngtcp2_ssize		 tparamslen;

/* what an input reached; printed when QPROXY_FUZZ_DEBUG is set */
static struct {
	unsigned	 handshakes, backend_requests, backend_conns;
	uint64_t	 response_bytes;
} seen;
static bool		 debug;

#define BF_CLOSE	0x01	/* close after answering */
#define BF_EARLY	0x02	/* answer at once, before the request */
#define BF_SILENT	0x04	/* never answer */
/*
 * Answer in two pieces, cut at (flags >> 4) + 1 seventeenths; the second
 * goes two turns of the loop later, once qproxy has read the first: so
 * heads, chunk-size lines and bodies arrive cut at any place.
 */
#define BF_SPLIT	0x08
static unsigned		 loop_turns;	/* ev_run calls of pump() */

static const char default_response[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n"
    "\r\nhello";

/*
 * All of the server's randomness (CIDs, tokens' nonces, and wolfSSL's,
 * through src/rng.c) and the client's TLS come from getrandom. This one,
 * which takes the C library's place in this program, makes it a function
 * of the input (reseeded at the start of each), so that a run can be
 * repeated: libFuzzer needs that, and so does a crash's reproduction.
 */
static uint64_t	rng_state;

ssize_t	getrandom(void *, size_t, unsigned int);

ssize_t
getrandom(void *buf, size_t len, unsigned int flags)
{
	uint8_t *p = buf;
	uint64_t z;

	for (size_t i = 0; i < len; i++) {
		if (i % 8 == 0) {
			/* splitmix64 */
			z = (rng_state += 0x9e3779b97f4a7c15ULL);
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
			z ^= z >> 31;
		}
		p[i] = (uint8_t)(z >> (8 * (i % 8)));
	}
	return (ssize_t)(len > SSIZE_MAX ? SSIZE_MAX : len);
}

static ngtcp2_tstamp
now_ts(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NGTCP2_SECONDS + (uint64_t)ts.tv_nsec;
}

static uint32_t
crand(void)
{
	uint32_t x = client.rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return client.rng = x ? x : 0x9e3779b9;
}

static void
crand_fill(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)crand();
}

/* ---- the backend: answers each request head ---- */

static void
backend_close(struct backend_conn *b)
{
	struct backend_conn **p;

	for (p = &backends; *p != NULL; p = &(*p)->next)
		if (*p == b) {
			*p = b->next;
			break;
		}
	ev_io_stop(loop, &b->io);
	close(b->fd);
	free(b);
}

/* Sends the second pieces that qproxy has had a turn to read before. */
static void
backend_send_rests(void)
{
	struct backend_conn *b, *next;
	ssize_t n;

	for (b = backends; b != NULL; b = next) {
		next = b->next;
		if (b->restlen == 0 || b->rest_turn >= loop_turns)
			continue;
		n = send(b->fd, b->rest, b->restlen,
		    MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)n;
		b->restlen = 0;
		if (backend_flags & BF_CLOSE)
			backend_close(b);
	}
}

/* Returns whether the connection is to be closed now. */
static bool
backend_answer(struct backend_conn *b)
{
	size_t cut = backend_resplen;
	ssize_t n;

	if (backend_flags & BF_SILENT)
		return false;
	if ((backend_flags & BF_SPLIT) && b->restlen == 0)
		cut = backend_resplen * (size_t)((backend_flags >> 4) + 1) / 17;
	/* best effort: whatever does not fit is not sent */
	n = send(b->fd, backend_resp, cut, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)n;
	if (cut == backend_resplen)
		return (backend_flags & BF_CLOSE) != 0;
	b->restlen = backend_resplen - cut;
	b->rest_turn = loop_turns;
	memcpy(b->rest, backend_resp + cut, b->restlen);
	return false;	/* closed after the rest */
}

static void
backend_read_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct backend_conn *b = w->data;
	uint8_t *end;
	ssize_t n;

	for (;;) {
		if (b->len == sizeof(b->buf))
			b->len = 0;	/* a body: not looked at */
		n = recv(b->fd, b->buf + b->len, sizeof(b->buf) - b->len,
		    MSG_DONTWAIT);
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
			backend_close(b);
			return;
		}
		if (n == -1)
			return;
		b->len += (size_t)n;
		end = memmem(b->buf, b->len, "\r\n\r\n", 4);
		if (end == NULL)
			continue;
		seen.backend_requests++;
		if (backend_answer(b)) {
			backend_close(b);
			return;
		}
		b->len -= (size_t)(end + 4 - b->buf);
		memmove(b->buf, end + 4, b->len);
	}
}

static void
backend_accept_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct backend_conn *b;
	int fd;

	while ((fd = accept4(backend_fd, NULL, NULL,
	    SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1) {
		if ((b = calloc(1, sizeof(*b))) == NULL)
			abort();
		seen.backend_conns++;
		b->fd = fd;
		b->next = backends;
		backends = b;
		ev_io_init(&b->io, backend_read_cb, fd, EV_READ);
		b->io.data = b;
		ev_io_start(loop, &b->io);
		if ((backend_flags & BF_EARLY) && backend_answer(b))
			backend_close(b);
	}
}

/* ---- set-up ---- */

static int
udp_socket(struct sockaddr_in *sin)
{
	socklen_t len = sizeof(*sin);
	int fd;

	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1 || bind(fd, (struct sockaddr *)sin, sizeof(*sin)) == -1 ||
	    getsockname(fd, (struct sockaddr *)sin, &len) == -1) {
		perror("udp socket");
		exit(1);
	}
	return fd;
}

/* A free UDP port on 127.0.0.1, for a listener to bind right after. */
static void
free_port(struct sockaddr_in *sin)
{
	close(udp_socket(sin));
}

static void
cleanup(void)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/backend.sock", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/qproxy.conf", dir);
	unlink(path);
	rmdir(dir);
}

static void	teardown(void);
static void	pump(struct client *, int);
static void	client_connect(struct client *, uint8_t);
static void	client_keep_session(void);
static void	client_reset(struct client *, uint32_t);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int groups[] = { WOLFSSL_ECC_X25519 };
	struct sockaddr_un sun;
	struct config *cfg;
	struct strbuf errs;
	char path[512], cert[512], key[512], *bin, *bindir;
	uint8_t secret[32];
	FILE *f;

	debug = getenv("QPROXY_FUZZ_DEBUG") != NULL;
	log_init(debug ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
	signal(SIGPIPE, SIG_IGN);
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	atexit(cleanup);

	/*
	 * the key and certificate the Makefile made beside this program, by
	 * an absolute path: a relative one in the configuration is taken
	 * from the configuration's directory, this one in /tmp
	 */
	if ((bin = realpath((*argv)[0], NULL)) == NULL) {
		perror((*argv)[0]);
		exit(1);
	}
	bindir = dirname(bin);
	snprintf(cert, sizeof(cert), "%s/fuzz_udp.pem", bindir);
	snprintf(key, sizeof(key), "%s/fuzz_udp.key", bindir);
	free(bin);
	if (access(cert, R_OK) == -1 || access(key, R_OK) == -1) {
		fprintf(stderr, "fuzz_udp: %s or %s missing: "
		    "make build-fuzz/fuzz_udp.pem\n", cert, key);
		exit(1);
	}

	/* the backend */
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/backend.sock", dir);
	backend_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (backend_fd == -1 || bind(backend_fd, (struct sockaddr *)&sun,
	    sizeof(sun)) == -1 || listen(backend_fd, 64) == -1) {
		perror("backend socket");
		exit(1);
	}

	free_port(&listen_a);
	free_port(&listen_b);
	snprintf(path, sizeof(path), "%s/qproxy.conf", dir);
	if ((f = fopen(path, "w")) == NULL) {
		perror(path);
		exit(1);
	}
	fprintf(f, "[global]\nlog_level = error\ncontrol_socket = %s/ctl\n"
	    "secret_file = %s/secret\nidle_timeout = 30s\n"
	    "max_header_size = 16k\nqpack_table_size = 4096\n"
	    "qpack_blocked_streams = 10\nmax_streams_bidi = 8\n"
	    "[listener a]\naddress = 127.0.0.1:%d\ncertificate = %s\n"
	    "private_key = %s\nretry = never\nearly_data = on\n"
	    "[listener b]\naddress = 127.0.0.1:%d\ncertificate = %s\n"
	    "private_key = %s\nretry = always\n"
	    "[backend app]\nserver = unix:%s\nconnect_timeout = 1s\n"
	    "read_timeout = 1s\n"
	    "[route app]\nbackend = app\n", dir, dir,
	    ntohs(listen_a.sin_port), cert, key, ntohs(listen_b.sin_port),
	    cert, key, sun.sun_path);
	fclose(f);
	if ((cfg = config_load(path, stderr)) == NULL)
		exit(1);
	unlink(path);

	if (tls_init() == -1) {
		fprintf(stderr, "tls_init failed\n");
		exit(1);
	}
	loop = ev_loop_new(EVBACKEND_EPOLL);
	if ((srv = server_new(loop)) == NULL)
		abort();
	memset(secret, 0x5a, sizeof(secret));
	server_set_secret(srv, secret, sizeof(secret));
	tls_set_ticket_secret(secret, sizeof(secret));
	strbuf_init(&errs, 1 << 16);
	if (server_apply(srv, cfg, &errs) == -1) {
		fprintf(stderr, "%s", strbuf_str(&errs));
		exit(1);
	}
	strbuf_free(&errs);

	ev_io_init(&backend_io, backend_accept_cb, backend_fd, EV_READ);
	ev_io_start(loop, &backend_io);

	csock[0] = udp_socket(&caddr[0]);
	csock[1] = udp_socket(&caddr[1]);

	if ((client_ctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method())) ==
	    NULL || ngtcp2_crypto_wolfssl_configure_client_context(
	    client_ctx) != 0 ||
	    wolfSSL_CTX_set_groups(client_ctx, groups, 1) != WOLFSSL_SUCCESS) {
		fprintf(stderr, "client TLS context failed\n");
		exit(1);
	}
	wolfSSL_CTX_set_verify(client_ctx, WOLFSSL_VERIFY_NONE, NULL);
	client_keep_session();
	return 0;
}

/*
 * One full handshake at start-up, kept as the ticket that later
 * connections resume (no signatures: much faster) and send 0-RTT with.
 */
static void
client_keep_session(void)
{
	client_reset(&client, 1);
	client_connect(&client, CF_FULL);
	for (int r = 0; r < 10 && client.conn != NULL; r++)
		pump(&client, 1);
	if (client.conn != NULL && client.confirmed) {
		session = wolfSSL_get1_session(client.ssl);
		tparamslen = ngtcp2_conn_encode_0rtt_transport_params(
		    client.conn, tparams, sizeof(tparams));
	}
	if (session == NULL || tparamslen <= 0)
		fprintf(stderr, "fuzz_udp: no session ticket: every "
		    "connection makes a full handshake\n");
	teardown();
}

/* ---- the client ---- */

static ngtcp2_conn *
client_get_conn(ngtcp2_crypto_conn_ref *ref)
{
	return ((struct client *)ref->user_data)->conn;
}

static void
c_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
	crand_fill(dest, len);
}

static int
c_new_cid(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t len,
    void *user_data)
{
	crand_fill(cid->data, len);
	cid->datalen = len;
	crand_fill(token, NGTCP2_STATELESS_RESET_TOKENLEN);
	return 0;
}

static int
c_recv_stream_data(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
    uint64_t offset, const uint8_t *data, size_t len, void *user_data,
    void *stream_user_data)
{
	/* responses are read and dropped; the credit goes back at once */
	if (ngtcp2_is_bidi_stream(stream_id))
		seen.response_bytes += len;
	ngtcp2_conn_extend_max_stream_offset(conn, stream_id, len);
	ngtcp2_conn_extend_max_offset(conn, len);
	return 0;
}

static int
c_handshake_completed(ngtcp2_conn *conn, void *user_data)
{
	((struct client *)user_data)->handshake_done = true;
	seen.handshakes++;
	return 0;
}

static int
c_handshake_confirmed(ngtcp2_conn *conn, void *user_data)
{
	((struct client *)user_data)->confirmed = true;
	return 0;
}

static const ngtcp2_callbacks client_callbacks = {
	.client_initial = ngtcp2_crypto_client_initial_cb,
	.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
	.encrypt = ngtcp2_crypto_encrypt_cb,
	.decrypt = ngtcp2_crypto_decrypt_cb,
	.hp_mask = ngtcp2_crypto_hp_mask_cb,
	.recv_retry = ngtcp2_crypto_recv_retry_cb,
	.rand = c_rand,
	.get_new_connection_id = c_new_cid,
	.update_key = ngtcp2_crypto_update_key_cb,
	.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
	.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
	.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
	.version_negotiation = ngtcp2_crypto_version_negotiation_cb,
	.recv_stream_data = c_recv_stream_data,
	.handshake_completed = c_handshake_completed,
	.handshake_confirmed = c_handshake_confirmed,
};

static void
client_free(struct client *c)
{
	ngtcp2_conn_del(c->conn);
	if (c->ssl != NULL)
		wolfSSL_free(c->ssl);
	for (int i = 0; i < 2 * NSTREAMS; i++) {
		struct cstream *s = i < NSTREAMS ? &c->bidi[i] :
		    &c->uni[i - NSTREAMS];

		for (int k = 0; k < s->nseg; k++)
			free(s->seg[k]);
		memset(s, 0, sizeof(*s));
		s->id = -1;
	}
	c->conn = NULL;
	c->ssl = NULL;
	c->dead = true;
}

static void
client_reset(struct client *c, uint32_t seed)
{
	client_free(c);
	memset(c, 0, sizeof(*c));
	c->rng = seed ? seed : 1;
	for (int i = 0; i < NSTREAMS; i++)
		c->bidi[i].id = c->uni[i].id = -1;
}

static void
client_path(struct client *c, int sock, ngtcp2_path *path)
{
	path->local.addr = (ngtcp2_sockaddr *)&caddr[sock];
	path->local.addrlen = sizeof(caddr[sock]);
	path->remote.addr = (ngtcp2_sockaddr *)&c->remote;
	path->remote.addrlen = sizeof(c->remote);
	path->user_data = NULL;
}

static void
send_datagram(int sock, const struct sockaddr_in *to, const uint8_t *buf,
    size_t len)
{
	ssize_t n;

	n = sendto(csock[sock], buf, len, MSG_DONTWAIT,
	    (const struct sockaddr *)to, sizeof(*to));
	(void)n;	/* a full buffer drops it, like the network */
}

static void
client_save(struct client *c, const uint8_t *buf, size_t len)
{
	size_t i = c->nsaved++ % NSAVED;

	memcpy(c->saved[i], buf, len);
	c->savedlen[i] = len;
}

/* Which of our sockets a path's local address is. */
static int
path_sock(const ngtcp2_path *path)
{
	const struct sockaddr_in *sin =
	    (const struct sockaddr_in *)(const void *)path->local.addr;

	if (path->local.addrlen == sizeof(*sin) &&
	    sin->sin_port == caddr[1].sin_port)
		return 1;
	return 0;
}

static struct cstream *
client_next_stream(struct client *c)
{
	struct cstream *s;
	int64_t id;
	int rv;

	for (int i = 0; i < 2 * NSTREAMS; i++) {
		s = i < NSTREAMS ? &c->bidi[i] : &c->uni[i - NSTREAMS];
		if (s->blocked || (s->cur == s->nseg &&
		    (!s->fin || s->fin_sent)))
			continue;
		if (s->id == -1) {
			rv = i < NSTREAMS ?
			    ngtcp2_conn_open_bidi_stream(c->conn, &id, NULL) :
			    ngtcp2_conn_open_uni_stream(c->conn, &id, NULL);
			if (rv != 0) {
				s->blocked = true;
				continue;
			}
			s->id = id;
		}
		return s;
	}
	return NULL;
}

/*
 * Writes what the client has to send; with corrupt, the first packet is
 * altered first by (index, xor) pairs.
 */
static void
client_write(struct client *c, const uint8_t *corrupt, size_t corruptlen)
{
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	ngtcp2_ssize n, ndata;
	struct cstream *s;
	uint8_t buf[PKT_MAX];
	ngtcp2_vec v;
	uint32_t flags;

	if (c->conn == NULL || c->dead)
		return;
	for (int i = 0; i < NSTREAMS; i++)
		c->bidi[i].blocked = c->uni[i].blocked = false;
	for (int pkts = 0; pkts < 64; pkts++) {
		s = client_next_stream(c);
		flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
		v.base = NULL;
		v.len = 0;
		if (s != NULL) {
			if (s->cur < s->nseg) {
				v.base = s->seg[s->cur] + s->off;
				v.len = s->seglen[s->cur] - s->off;
			}
			if (s->fin && s->cur >= s->nseg - 1)
				flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
		}
		ngtcp2_path_storage_zero(&ps);
		ndata = -1;
		n = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, buf,
		    sizeof(buf), &ndata, flags, s != NULL ? s->id : -1,
		    s != NULL && v.len > 0 ? &v : NULL,
		    s != NULL && v.len > 0 ? 1 : 0, now_ts());
		if (n < 0) {
			if (s != NULL && (n == NGTCP2_ERR_STREAM_DATA_BLOCKED ||
			    n == NGTCP2_ERR_STREAM_SHUT_WR ||
			    n == NGTCP2_ERR_STREAM_NOT_FOUND)) {
				s->blocked = true;
				continue;
			}
			c->dead = true;
			return;
		}
		if (s != NULL && ndata >= 0) {
			s->off += (size_t)ndata;
			if (s->cur < s->nseg && s->off == s->seglen[s->cur]) {
				s->cur++;
				s->off = 0;
			}
			if (s->cur == s->nseg &&
			    (flags & NGTCP2_WRITE_STREAM_FLAG_FIN))
				s->fin_sent = true;
		}
		if (n == 0) {
			if (s != NULL && ndata < 0) {
				/* not writable now (handshake, flow control) */
				s->blocked = true;
				continue;
			}
			break;
		}
		if (corrupt != NULL) {
			for (size_t k = 0; k + 1 < corruptlen; k += 2)
				buf[corrupt[k] % (size_t)n] ^= corrupt[k + 1];
			corrupt = NULL;
		}
		client_save(c, buf, (size_t)n);
		send_datagram(path_sock(&ps.path),
		    (const struct sockaddr_in *)(const void *)
		    ps.path.remote.addr, buf, (size_t)n);
	}
}

static void
client_read(struct client *c)
{
	struct sockaddr_in from;
	socklen_t fromlen;
	ngtcp2_path path;
	ngtcp2_pkt_info pi = { 0 };
	uint8_t buf[65536];
	ssize_t n;
	int rv;

	for (int sock = 0; sock < 2; sock++) {
		for (;;) {
			fromlen = sizeof(from);
			n = recvfrom(csock[sock], buf, sizeof(buf),
			    MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
			if (n < 0)
				break;
			if (c->conn == NULL || c->dead)
				continue;
			client_path(c, sock, &path);
			path.remote.addr = (ngtcp2_sockaddr *)&from;
			path.remote.addrlen = fromlen;
			rv = ngtcp2_conn_read_pkt(c->conn, &path, &pi, buf,
			    (size_t)n, now_ts());
			if (rv != 0)
				c->dead = true;
		}
	}
}

/* Lets the server's loop and the client each take a few turns. */
static void
pump(struct client *c, int rounds)
{
	for (int r = 0; r < rounds; r++) {
		if (c->conn != NULL && !c->dead &&
		    ngtcp2_conn_get_expiry(c->conn) <= now_ts() &&
		    ngtcp2_conn_handle_expiry(c->conn, now_ts()) != 0)
			c->dead = true;
		client_write(c, NULL, 0);
		for (int k = 0; k < 2; k++) {
			backend_send_rests();
			loop_turns++;
			ev_run(loop, EVRUN_NOWAIT);
		}
		client_read(c);
	}
}

static void
stream_append(struct cstream *s, const uint8_t *data, size_t len, bool fin)
{
	if (s->fin)
		return;		/* nothing after FIN */
	if (len > 0 && s->nseg < NSEGS) {
		if ((s->seg[s->nseg] = malloc(len)) == NULL)
			abort();
		memcpy(s->seg[s->nseg], data, len);
		s->seglen[s->nseg++] = len;
	}
	s->fin = fin;
}

/* HTTP/3 variable-length integer */
static size_t
put_varint(uint8_t *p, uint64_t v)
{
	if (v < 64) {
		p[0] = (uint8_t)v;
		return 1;
	}
	if (v < 16384) {
		p[0] = (uint8_t)(0x40 | v >> 8);
		p[1] = (uint8_t)v;
		return 2;
	}
	p[0] = (uint8_t)(0x80 | v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return 4;
}

/* QPACK prefixed integer (RFC 9204 4.1.1), first byte's flags in first */
static size_t
put_qint(uint8_t *p, uint8_t first, int prefix, uint64_t v)
{
	uint64_t max = (1u << prefix) - 1;
	size_t n = 1;

	if (v < max) {
		p[0] = (uint8_t)(first | v);
		return 1;
	}
	p[0] = (uint8_t)(first | max);
	v -= max;
	while (v >= 128) {
		p[n++] = (uint8_t)(0x80 | (v & 0x7f));
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/*
 * A HEADERS frame from length-prefixed names and values (fuzz_request's
 * format), each a literal field line with a literal name.
 */
static void
client_request(struct client *c, const uint8_t *arg, size_t len)
{
	const uint8_t *p = arg + 1, *end = arg + len, *name, *value;
	size_t namelen, valuelen, blen = 2, flen;
	uint8_t *block, hdr[16];
	struct cstream *s;

	if (len < 1)
		return;
	s = &c->bidi[arg[0] & SF_INDEX];
	if ((block = malloc(2 + 2 * len + 16)) == NULL)
		abort();
	block[0] = 0;	/* required insert count */
	block[1] = 0;	/* delta base */
	while (take(&p, end, &name, &namelen) &&
	    take(&p, end, &value, &valuelen)) {
		blen += put_qint(block + blen, 0x20, 3, namelen);
		memcpy(block + blen, name, namelen);
		blen += namelen;
		blen += put_qint(block + blen, 0x00, 7, valuelen);
		memcpy(block + blen, value, valuelen);
		blen += valuelen;
	}
	flen = put_varint(hdr, 0x01);
	flen += put_varint(hdr + flen, blen);
	stream_append(s, hdr, flen, false);
	stream_append(s, block, blen, (arg[0] & SF_FIN) != 0);
	free(block);
}

/* The control stream with SETTINGS, and the QPACK streams. */
static void
client_h3_streams(struct client *c)
{
	static const uint8_t control[] = { 0x00, 0x04, 0x00 };
	static const uint8_t encoder[] = { 0x02 };
	static const uint8_t decoder[] = { 0x03 };

	stream_append(&c->uni[0], control, sizeof(control), false);
	stream_append(&c->uni[1], encoder, sizeof(encoder), false);
	stream_append(&c->uni[2], decoder, sizeof(decoder), false);
}

/* flags (index 0, FIN), then GET https://localhost/ as OP_REQUEST fields */
static const uint8_t early_get[] =
    "\x04" "\x07:method\x03GET" "\x07:scheme\x05https"
    "\x0a:authority\x09localhost" "\x05:path\x01/";

static void
client_connect(struct client *c, uint8_t flags)
{
	static const uint32_t versions[] = {
		NGTCP2_PROTO_VER_V1, NGTCP2_PROTO_VER_V2,
	};
	ngtcp2_settings settings;
	ngtcp2_transport_params params;
	ngtcp2_cid dcid, scid;
	ngtcp2_path path;
	uint32_t version;

	client_reset(c, c->rng);
	c->remote = flags & CF_RETRY ? listen_b : listen_a;
	c->sock = 0;
	dcid.datalen = 8 + crand() % 11;
	crand_fill(dcid.data, dcid.datalen);
	scid.datalen = crand() % 2 ? 8 : 0;
	crand_fill(scid.data, scid.datalen);

	ngtcp2_settings_default(&settings);
	settings.initial_ts = now_ts();
	switch ((flags & CF_VERSION) >> 1) {
	case 1:
		version = NGTCP2_PROTO_VER_V2;
		break;
	case 2:
		/* v1 first, v2 offered: compatible version negotiation */
		version = NGTCP2_PROTO_VER_V1;
		settings.preferred_versions = versions;
		settings.preferred_versionslen = 2;
		settings.available_versions = versions;
		settings.available_versionslen = 2;
		break;
	default:
		version = NGTCP2_PROTO_VER_V1;
		break;
	}
	ngtcp2_transport_params_default(&params);
	params.initial_max_stream_data_bidi_local = 1 << 20;
	params.initial_max_stream_data_uni = 1 << 20;
	params.initial_max_data = 1 << 24;
	params.initial_max_streams_uni = 16;
	params.max_idle_timeout = 30 * NGTCP2_SECONDS;
	params.active_connection_id_limit = 8;

	client_path(c, 0, &path);
	if (ngtcp2_conn_client_new(&c->conn, &dcid, &scid, &path, version,
	    &client_callbacks, &settings, &params, NULL, c) != 0) {
		c->conn = NULL;
		c->dead = true;
		return;
	}
	if ((c->ssl = wolfSSL_new(client_ctx)) == NULL)
		abort();
	c->ref.get_conn = client_get_conn;
	c->ref.user_data = c;
	wolfSSL_set_app_data(c->ssl, &c->ref);
	wolfSSL_set_connect_state(c->ssl);
	wolfSSL_set_alpn_protos(c->ssl, (const unsigned char *)"\x02h3", 3);
	if (!(flags & CF_NO_SNI))
		wolfSSL_UseSNI(c->ssl, WOLFSSL_SNI_HOST_NAME, "localhost", 9);
	if (session != NULL && !(flags & CF_FULL)) {
		wolfSSL_set_session(c->ssl, session);
		if ((flags & CF_EARLY) && tparamslen > 0 &&
		    ngtcp2_conn_decode_and_set_0rtt_transport_params(c->conn,
		    tparams, (size_t)tparamslen) == 0)
			wolfSSL_set_quic_early_data_enabled(c->ssl, 1);
		else
			flags &= (uint8_t)~CF_EARLY;
	} else
		flags &= (uint8_t)~CF_EARLY;
	ngtcp2_conn_set_tls_native_handle(c->conn, c->ssl);
	if (!(flags & CF_NO_H3))
		client_h3_streams(c);
	if (flags & CF_EARLY)
		client_request(c, early_get, sizeof(early_get) - 1);
	for (int r = 0; r < 12 && !c->confirmed && !c->dead; r++)
		pump(c, 1);
}

static void
client_close(struct client *c, uint64_t code)
{
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	ngtcp2_ccerr ccerr;
	uint8_t buf[PKT_MAX];
	ngtcp2_ssize n;

	if (c->conn == NULL || c->dead)
		return;
	ngtcp2_ccerr_default(&ccerr);
	ngtcp2_ccerr_set_application_error(&ccerr, code, NULL, 0);
	ngtcp2_path_storage_zero(&ps);
	n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, buf,
	    sizeof(buf), &ccerr, now_ts());
	if (n > 0)
		send_datagram(path_sock(&ps.path), &c->remote, buf, (size_t)n);
	c->dead = true;
}

static void
client_migrate(struct client *c, uint8_t flags)
{
	ngtcp2_path path;

	if (c->conn == NULL || c->dead)
		return;
	c->sock = !c->sock;
	client_path(c, c->sock, &path);
	if (flags & 1)
		(void)ngtcp2_conn_initiate_migration(c->conn, &path, now_ts());
	else
		(void)ngtcp2_conn_initiate_immediate_migration(c->conn, &path,
		    now_ts());
}

static void
client_reset_stream(struct client *c, const uint8_t *arg, size_t len)
{
	struct cstream *s;
	uint64_t code = 0x10c;	/* H3_REQUEST_CANCELLED */

	if (len < 1 || c->conn == NULL || c->dead)
		return;
	s = arg[0] & 0x04 ? &c->uni[arg[0] & SF_INDEX] :
	    &c->bidi[arg[0] & SF_INDEX];
	if (s->id == -1)
		return;
	if (len >= 3)
		code = (uint64_t)arg[1] << 8 | arg[2];
	switch ((arg[0] >> 3) & 3) {
	case 1:
		(void)ngtcp2_conn_shutdown_stream_write(c->conn, 0, s->id,
		    code);
		break;
	case 2:
		(void)ngtcp2_conn_shutdown_stream_read(c->conn, 0, s->id,
		    code);
		break;
	default:
		(void)ngtcp2_conn_shutdown_stream(c->conn, 0, s->id, code);
		break;
	}
	s->cur = s->nseg;	/* nothing more to send on it */
	s->off = 0;
	s->fin = s->fin_sent = true;
}

/* ---- one input ---- */

static void
teardown(void)
{
	struct qconn *qc;

	/* what is still in flight reaches the server first */
	ev_run(loop, EVRUN_NOWAIT);
	ev_run(loop, EVRUN_NOWAIT);
	client_free(&client);
	while ((qc = LIST_FIRST(&srv->conns)) != NULL)
		qconn_free(qc);
	/* the next input's OP_SHUTDOWN starts it again (server_shutdown) */
	srv->shutting_down = false;
	srv->shutdown_notice = false;
	ev_timer_stop(loop, &srv->shutdown_timer);
	while (backends != NULL)
		backend_close(backends);
	/* pooled backend connections see the close and go */
	ev_run(loop, EVRUN_NOWAIT);
	ev_run(loop, EVRUN_NOWAIT);
	client_read(&client);

	if (debug)
		fprintf(stderr, "fuzz_udp: %u handshakes, %u backend "
		    "connections, %u requests, %llu response bytes; "
		    "%llu early requests so far\n",
		    seen.handshakes, seen.backend_conns, seen.backend_requests,
		    (unsigned long long)seen.response_bytes,
		    (unsigned long long)stats.early_data_requests);
	memset(&seen, 0, sizeof(seen));

	FUZZ_CHECK(stats.conns_current == 0);
	FUZZ_CHECK(stats.handshakes_unvalidated == 0);
	FUZZ_CHECK(stats.streams_current == 0);
	FUZZ_CHECK(bufq_chunks_in_use() == 0);
	/*
	 * libev's own check of its watchers (it asserts): a watcher started
	 * twice, or set again while active, leaves its heap broken, and that
	 * shows only once its time has come, inputs later.
	 */
	ev_verify(loop);
	/*
	 * The free lists poison what they keep, so LeakSanitizer cannot follow
	 * them: each input leaves them empty.
	 */
	exchange_cache_free();
	bufq_cache_free();
	h3_mem_drain();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size, *arg;
	uint32_t seed = 2166136261u;
	size_t len;
	int ops = 0;
	uint8_t op;

	if (size > 1 << 16)
		return 0;
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 16777619u;
	rng_state = seed;
	client_reset(&client, seed);
	client.dead = true;	/* until OP_CONNECT */
	connects = 0;
	memcpy(backend_resp, default_response, sizeof(default_response) - 1);
	backend_resplen = sizeof(default_response) - 1;
	backend_flags = 0;

	while (p < end && ops++ < MAX_OPS) {
		op = *p++ % NOPS;
		if (!take(&p, end, &arg, &len))
			break;
		switch ((enum op)op) {
		case OP_CONNECT:
			if (connects++ < MAX_CONNECTS)
				client_connect(&client, len > 0 ? arg[0] : 0);
			break;
		case OP_PUMP:
			pump(&client, len > 0 ? 1 + arg[0] % 8 : 1);
			break;
		case OP_STREAM:
		case OP_UNI:
			if (len < 1)
				break;
			stream_append(op == OP_STREAM ?
			    &client.bidi[arg[0] & SF_INDEX] :
			    &client.uni[arg[0] & SF_INDEX], arg + 1, len - 1,
			    (arg[0] & SF_FIN) != 0);
			pump(&client, 2);
			break;
		case OP_REQUEST:
			client_request(&client, arg, len);
			pump(&client, 3);
			break;
		case OP_RESET:
			client_reset_stream(&client, arg, len);
			pump(&client, 2);
			break;
		case OP_RAW_A:
			send_datagram(0, &listen_a, arg, len);
			pump(&client, 1);
			break;
		case OP_RAW_B:
			send_datagram(1, &listen_b, arg, len);
			pump(&client, 1);
			break;
		case OP_CORRUPT:
			client_write(&client, arg, len);
			pump(&client, 1);
			break;
		case OP_BACKEND:
			if (len < 1)
				break;
			backend_flags = arg[0];
			backend_resplen = len - 1 < sizeof(backend_resp) ?
			    len - 1 : sizeof(backend_resp);
			memcpy(backend_resp, arg + 1, backend_resplen);
			break;
		case OP_CLOSE:
			client_close(&client, len > 0 ? arg[0] : 0);
			pump(&client, 2);
			break;
		case OP_MIGRATE:
			client_migrate(&client, len > 0 ? arg[0] : 0);
			pump(&client, 3);
			break;
		case OP_KEY_UPDATE:
			/* ngtcp2 asserts a confirmed handshake */
			if (client.conn != NULL && !client.dead &&
			    client.confirmed)
				(void)ngtcp2_conn_initiate_key_update(
				    client.conn, now_ts());
			pump(&client, 2);
			break;
		case OP_REPLAY:
			if (client.nsaved > 0) {
				size_t i = (len > 0 ? arg[0] : 0) %
				    (client.nsaved < NSAVED ? client.nsaved :
				    NSAVED);

				send_datagram(client.sock, &client.remote,
				    client.saved[i], client.savedlen[i]);
			}
			pump(&client, 1);
			break;
		case OP_SHUTDOWN:
			server_shutdown(srv);
			pump(&client, 2);
			break;
		case NOPS:
			break;
		}
	}
	pump(&client, 2);
	teardown();
	return 0;
}
