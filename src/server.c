/*
 * server.c: the server's life: configurations applied (at start and on
 * reload) as generations, the UDP sockets they need, graceful shutdown,
 * and the statistics report.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/param.h>

#include "bufq.h"
#include "cid.h"
#include "clock.h"
#include "compress.h"
#include "conn.h"
#include "exchange.h"
#include "gcm.h"
#include "log.h"
#include "stats.h"
#include "strbuf.h"
#include "udp.h"
#include "upgrade.h"
#include "upstream.h"
#include "workers.h"

/*
 * The running configuration's certificates against the clock, for
 * qproxyctl stats and, with warn, the log; looked at again once a day and
 * when one of them expires, comes within TLS_EXPIRY_WARN_DAYS of it, or
 * becomes valid, so that the log says so while the daemon runs, not only
 * at a start or reload. Those are times of the wall clock: a periodic
 * watcher waits for them, which libev moves with a step of that clock (a
 * timer counts monotonic time: after a step, or a VM's resume, it said so
 * as late as the step, up to a day).
 */
static void
cert_watch(struct quic_server *srv, bool warn)
{
	const struct generation *gen = srv->gen;
	time_t now = time(NULL), next = now + 86400;
	uint64_t expiring = 0, not_valid = 0, crls_expiring = 0, crls_out = 0;

	for (size_t i = 0; i < gen->nlisteners; i++) {
		const struct listener *l = &gen->listeners[i];

		if (warn)
			tls_ctx_warnings(l->tls, gen->cfg, l->cfg, now,
			    log_warnx);
		tls_ctx_expiry(l->tls, now, &expiring, &not_valid,
		    &crls_expiring, &crls_out, &next);
	}
	stats.certs_expiring = expiring;
	stats.certs_not_valid = not_valid;
	stats.crls_expiring = crls_expiring;
	stats.crls_out_of_date = crls_out;
	/* a second late: time() counts whole seconds, ev_now does not */
	ev_periodic_stop(srv->loop, &srv->cert_timer);
	ev_periodic_set(&srv->cert_timer, (double)next + 1., 0., NULL);
	ev_periodic_start(srv->loop, &srv->cert_timer);
}

static void
cert_timer_cb(struct ev_loop *loop, ev_periodic *w, int revents)
{
	(void)loop;
	(void)revents;
	cert_watch(w->data, true);
}

struct quic_server *
server_new(struct ev_loop *loop)
{
	struct quic_server *srv;

	if ((srv = calloc(1, sizeof(*srv))) == NULL)
		return NULL;
	srv->loop = loop;
	srv->started = mono_now();
	tls_tickets_start(srv->started);
	ev_periodic_init(&srv->cert_timer, cert_timer_cb, 0., 0., NULL);
	srv->cert_timer.data = srv;
	LIST_INIT(&srv->socks);
	quic_init(srv);
	return srv;
}

void
server_set_secret(struct quic_server *srv, const uint8_t *secret, size_t len)
{
	if (len > sizeof(srv->secret))
		len = sizeof(srv->secret);
	memcpy(srv->secret, secret, len);
}

int
server_set_cid(struct quic_server *srv, const uint8_t *sid, size_t sidlen,
    size_t nonce_len, unsigned config_id, const uint8_t *key)
{
	if (sidlen == 0)
		return 0;
	if ((srv->cid_lb = cid_lb_new(sid, sidlen, nonce_len, config_id,
	    key)) == NULL)
		return -1;
	cid_lb_set_worker(srv->cid_lb, worker_index, worker_count);
	srv->cid_len = cid_lb_len(srv->cid_lb);
	return 0;
}

const struct config *
server_config(const struct quic_server *srv)
{
	return srv->gen->cfg;
}

/* The generations applied and not yet let go, the oldest first. */
static TAILQ_HEAD(, generation) generations =
    TAILQ_HEAD_INITIALIZER(generations);
static size_t ngenerations;

struct generation *
generation_ref(struct generation *gen)
{
	gen->refs++;
	return gen;
}

static void
route_stats_unref(struct route_stats *rs)
{
	if (rs == NULL || --rs->refs > 0)
		return;
	free(rs->name);
	free(rs);
}

void
generation_unref(struct generation *gen)
{
	if (gen == NULL || --gen->refs > 0)
		return;
	stats.configurations--;
	if (gen->listed) {
		TAILQ_REMOVE(&generations, gen, entry);
		ngenerations--;
	}
	for (size_t i = 0; i < gen->nlisteners; i++)
		tls_ctx_free(gen->listeners[i].tls);
	free(gen->listeners);
	for (size_t i = 0; i < gen->nroutes; i++)
		route_stats_unref(gen->routes[i]);
	free(gen->routes);
	upstream_pools_free(gen->upstreams);
	if (gen->id != 0)
		log_debug("configuration generation %llu released",
		    (unsigned long long)gen->id);
	config_free(gen->cfg);
	free(gen);
}

static struct generation *
generation_new(struct quic_server *srv, struct config *cfg,
    struct strbuf *errs)
{
	struct generation *gen;
	char err[512], zrtt[512], tctx[1024];
	size_t zrttlen;
	int n, bad;

	if ((gen = calloc(1, sizeof(*gen))) == NULL)
		goto oom;
	gen->refs = 1;
	stats.configurations++;
	gen->cfg = cfg;
	if ((gen->upstreams = upstream_pools_new(srv->loop, cfg)) == NULL ||
	    upstream_pools_checks(gen->upstreams) == -1)
		goto oom;
	if ((gen->routes = calloc(cfg->nroutes, sizeof(*gen->routes))) ==
	    NULL && cfg->nroutes > 0)
		goto oom;
	gen->nroutes = cfg->nroutes;
	for (size_t i = 0; i < cfg->nroutes; i++) {
		struct route_stats *rs;

		if ((rs = calloc(1, sizeof(*rs))) == NULL)
			goto oom;
		rs->refs = 1;
		gen->routes[i] = rs;
		if ((rs->name = strdup(cfg->routes[i].name)) == NULL)
			goto oom;
	}
	gen->listeners = calloc(cfg->nlisteners, sizeof(*gen->listeners));
	if (gen->listeners == NULL)
		goto oom;
	gen->nlisteners = cfg->nlisteners;
	zrttlen = quic_0rtt_context(cfg, zrtt, sizeof(zrtt));
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		struct listener *l = &gen->listeners[i];

		l->gen = gen;
		l->cfg = &cfg->listeners[i];
		/*
		 * Tickets are the listener's: one of another would resume
		 * there without its certificate.
		 */
		n = snprintf(tctx, sizeof(tctx), "%.*s listener %s",
		    (int)zrttlen, zrtt, l->cfg->name);
		if ((l->tls = tls_ctx_new(l->cfg, tctx,
		    n < 0 ? 0 : MIN((size_t)n, sizeof(tctx) - 1),
		    &bad, err, sizeof(err))) == NULL) {
			strbuf_printf(errs, "%s: listener %s: %s\n",
			    config_at(cfg, bad),
			    l->cfg->name,
			    err);
			gen->cfg = NULL;	/* the caller still owns it */
			generation_unref(gen);
			return NULL;
		}
		tls_ctx_warnings(l->tls, cfg, l->cfg, time(NULL), log_warnx);
	}
	return gen;
oom:
	strbuf_printf(errs, "out of memory\n");
	if (gen != NULL) {
		gen->cfg = NULL;
		generation_unref(gen);
	}
	return NULL;
}

/*
 * A connection holds the configuration it began under (its listener's
 * certificates, for 421, and its limits) for as long as it lasts, and its
 * client decides that: one connection kept open across each reload, with
 * a PING now and then, held every configuration since, each with its
 * certificates, error pages and users of auth_basic_file (1.5 MB each
 * with a file of 1 MB), without end. Past SERVER_CONFIGS_MAX held, the
 * connections of the oldest are sent GOAWAY, and closed once their client
 * has it when they have no request under way (qconn_lingers), else once
 * the last is done (ex_free, qconn_write); one a reload finds still open
 * shutdown_timeout after its GOAWAY, its configuration still past the
 * limit, is closed then (what a graceful shutdown gives requests). A
 * request holds the configuration its connection began under or a later
 * one, so it goes with its connection. Connections closing already go
 * when their closing period ends.
 */
static void
generations_bound(struct quic_server *srv)
{
	struct generation *g;
	struct qconn *qc, *next;
	size_t excess = ngenerations > SERVER_CONFIGS_MAX ?
	    ngenerations - SERVER_CONFIGS_MAX : 0;
	uint64_t below = 0;	/* the generations with IDs under it go */
	double now = mono_now();

	TAILQ_FOREACH(g, &generations, entry) {
		if (excess == 0 || g == srv->gen)
			break;
		below = g->id + 1;
		excess--;
	}
	if (below == 0)
		return;
	for (qc = LIST_FIRST(&srv->conns); qc != NULL; qc = next) {
		next = LIST_NEXT(qc, entry);
		if (qc->state != QC_ACTIVE || qc->gen->id >= below)
			continue;
		if (!qc->retired) {
			qc->retired = true;
			qc->retired_at = now;
			stats.goaway_old_configurations++;
			log_debug("%s: its configuration (generation %llu) is "
			    "among the oldest held: GOAWAY", qc->peer,
			    (unsigned long long)qc->gen->id);
			/* closed once done and the client has it */
			if (qc->h3 != NULL) {
				h3_goaway(qc);
				qconn_want_write(qc);
				continue;
			}
		} else if (now - qc->retired_at <
		    srv->gen->cfg->shutdown_timeout)
			continue;
		if (qc->last_error.error_code == 0)
			ngtcp2_ccerr_set_application_error(&qc->last_error,
			    NGHTTP3_H3_NO_ERROR, NULL, 0);
		qconn_close(qc);
	}
}

/*
 * aes_gcm_vaes to gcm.c; which AES-GCM code packets get from then on is
 * logged at the start, and when a reload changes it.
 */
static void
gcm_apply(int setting)
{
	static const enum gcm_path widest[] = {
		[CONFIG_VAES_OFF] = GCM_WOLFSSL,
		[CONFIG_VAES_ON] = GCM_VAES512,
		[CONFIG_VAES_AVX2] = GCM_VAES256,
	};
	static const char *logged;
	const char *what;

	gcm_select(widest[setting]);
	switch (gcm_path()) {
	case GCM_VAES512:
		what = "qproxy's own, VAES on 512-bit registers (AVX-512)";
		break;
	case GCM_VAES256:
		what = "qproxy's own, VAES on 256-bit registers (AVX2)";
		break;
	default:
		what = setting == CONFIG_VAES_OFF ? "wolfSSL's (aes_gcm_vaes "
		    "off)" : "wolfSSL's (this CPU has no VAES and VPCLMULQDQ)";
	}
	if (what != logged)
		log_info("AES-GCM of QUIC packets: %s", what);
	logged = what;
}

static int
route_stats_cmp(const void *a, const void *b)
{
	return strcmp((*(struct route_stats *const *)a)->name,
	    (*(struct route_stats *const *)b)->name);
}

/*
 * The routes' counts go on in the routes of the same name: looked up in
 * the old ones sorted by name (a walk of them for each route took 10,000
 * routes half a second), or walked when there is no memory to sort.
 */
static void
routes_inherit(struct generation *gen, const struct generation *old)
{
	struct route_stats **by_name = NULL, **found, *f, key;
	size_t n = old->nroutes;

	if (n > 0 && (by_name = reallocarray(NULL, n, sizeof(*by_name))) !=
	    NULL) {
		memcpy(by_name, old->routes, n * sizeof(*by_name));
		qsort(by_name, n, sizeof(*by_name), route_stats_cmp);
	}
	for (size_t i = 0; i < gen->nroutes; i++) {
		f = NULL;
		key.name = gen->routes[i]->name;
		if (by_name != NULL) {
			struct route_stats *k = &key;

			found = bsearch(&k, by_name, n, sizeof(*by_name),
			    route_stats_cmp);
			f = found != NULL ? *found : NULL;
		} else
			for (size_t j = 0; j < n && f == NULL; j++)
				if (strcmp(key.name, old->routes[j]->name) == 0)
					f = old->routes[j];
		if (f != NULL) {
			route_stats_unref(gen->routes[i]);
			gen->routes[i] = f;
			f->refs++;
		}
	}
	free(by_name);
}

static void
sock_close(struct udp_sock *s)
{
	char text[ADDR_STRLEN];

	/* handed over, the socket stays open in the new process */
	if (!upgrade_taken(&s->local))
		log_info("closed udp %s", addr_format(&s->local, text,
		    sizeof(text)));
	ev_io_stop(s->srv->loop, &s->rev);
	ev_io_stop(s->srv->loop, &s->wev);
	close(s->fd);
	LIST_REMOVE(s, entry);
	free(s);
}

void
server_sock_release(struct udp_sock *s)
{
	if (s->listener == NULL && s->nconns == 0 && !s->reading)
		sock_close(s);
}

static struct udp_sock *
sock_open(struct quic_server *srv, const struct addr *a)
{
	struct udp_sock *s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->srv = srv;
	s->local = *a;
	TAILQ_INIT(&s->blocked);
	if (worker_count > 1)
		s->fd = workers_socket(a);
	else if ((s->fd = upgrade_take_udp(a)) == -1)
		s->fd = udp_open(a);
	if (s->fd == -1) {
		free(s);
		return NULL;
	}
	ev_io_init(&s->rev, quic_sock_read_cb, s->fd, EV_READ);
	ev_io_init(&s->wev, quic_sock_write_cb, s->fd, EV_WRITE);
	s->rev.data = s->wev.data = s;
	return s;
}

/* A configuration made ready to apply (conn.h). */
struct server_staged {
	struct generation *gen;
	struct udp_sock	**socks;	/* each listener address's, in order */
	bool		*fresh;		/* socks[k] opened for it */
	size_t		 n;
};

void
server_unstage(struct server_staged *st)
{
	if (st == NULL)
		return;
	/* close the sockets staging opened; the running ones stay */
	for (size_t i = 0; i < st->n; i++) {
		if (st->fresh[i]) {
			close(st->socks[i]->fd);
			free(st->socks[i]);
		}
	}
	free(st->socks);
	free(st->fresh);
	st->gen->cfg = NULL;	/* the caller's */
	generation_unref(st->gen);
	free(st);
}

struct server_staged *
server_stage(struct quic_server *srv, struct config *cfg, struct strbuf *errs)
{
	struct server_staged *st;
	struct generation *gen;
	struct udp_sock *s;
	char text[ADDR_STRLEN];
	size_t n = 0, k = 0;

	if ((gen = generation_new(srv, cfg, errs)) == NULL)
		return NULL;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		n += cfg->listeners[i].naddrs;
	if ((st = calloc(1, sizeof(*st))) == NULL) {
		strbuf_printf(errs, "out of memory\n");
		gen->cfg = NULL;
		generation_unref(gen);
		return NULL;
	}
	st->gen = gen;
	st->socks = calloc(n, sizeof(*st->socks));
	st->fresh = calloc(n, sizeof(*st->fresh));
	if (st->socks == NULL || st->fresh == NULL) {
		strbuf_printf(errs, "out of memory\n");
		goto fail;
	}

	/* Every address: the running socket for it, or a new one. */
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		struct config_listener *lc = &cfg->listeners[i];

		for (size_t j = 0; j < lc->naddrs; j++, k++) {
			LIST_FOREACH(s, &srv->socks, entry)
				if (addr_equal(&s->local, &lc->addrs[j]))
					break;
			/* (an address an earlier reload dropped is new
			   again, even while its socket drains) */
			if (worker_count > 1 &&
			    !workers_have_socket(&lc->addrs[j])) {
				strbuf_printf(errs, "%s: listener %s: udp %s "
				    "is new: with workers, new addresses take "
				    "a restart\n",
				    config_at(cfg, lc->addr_lines[j]),
				    lc->name, addr_format(&lc->addrs[j], text,
				    sizeof(text)));
				goto fail;
			}
			if (s == NULL) {
				if ((s = sock_open(srv, &lc->addrs[j])) ==
				    NULL) {
					strbuf_printf(errs, "%s: listener %s: "
					    "cannot listen on udp %s: %s\n",
					    config_at(cfg, lc->addr_lines[j]),
					    lc->name,
					    addr_format(&lc->addrs[j], text,
					    sizeof(text)), strerror(errno));
					goto fail;
				}
				st->fresh[k] = true;
			}
			st->socks[k] = s;
			st->n = k + 1;
		}
	}
	return st;
fail:
	server_unstage(st);
	return NULL;
}

void
server_commit(struct quic_server *srv, struct server_staged *st)
{
	struct generation *gen = st->gen, *old = srv->gen;
	struct udp_sock *s, *next;
	char text[ADDR_STRLEN];
	size_t k = 0;

	/*
	 * The running sockets staging found are still there: only one
	 * without a listener closes (server_sock_release), and with workers
	 * its address is refused as new, while without them nothing runs
	 * between the two steps.
	 */
	LIST_FOREACH(s, &srv->socks, entry)
		s->listener = NULL;
	for (size_t i = 0; i < gen->nlisteners; i++) {
		struct listener *l = &gen->listeners[i];

		for (size_t j = 0; j < l->cfg->naddrs; j++, k++) {
			s = st->socks[k];
			if (st->fresh[k]) {
				LIST_INSERT_HEAD(&srv->socks, s, entry);
				ev_io_start(srv->loop, &s->rev);
			}
			s->listener = l;
			log_info("listener %s on udp %s", l->cfg->name,
			    addr_format(&s->local, text, sizeof(text)));
		}
	}
	free(st->socks);
	free(st->fresh);
	free(st);
	for (s = LIST_FIRST(&srv->socks); s != NULL; s = next) {
		next = LIST_NEXT(s, entry);
		if (s->listener == NULL) {
			log_info("udp %s: no longer configured; draining %zu "
			    "connection(s)", addr_format(&s->local, text,
			    sizeof(text)), s->nconns);
			if (worker_count > 1)
				workers_forget_socket(&s->local);
			server_sock_release(s);
		}
	}
	if (old != NULL) {
		/* counters go on across reloads, matched by name */
		upstream_pools_inherit(gen->upstreams, old->upstreams);
		upstream_pools_retire(old->upstreams);
		routes_inherit(gen, old);
	}
	upstream_pools_activate(gen->upstreams);
	/* numbered here: a refused reload takes no number */
	gen->id = old != NULL ? old->id + 1 : 1;
	srv->gen = gen;
	TAILQ_INSERT_TAIL(&generations, gen, entry);
	gen->listed = true;
	ngenerations++;
	generation_unref(old);
	generations_bound(srv);
	/* generation_new has warned */
	cert_watch(srv, false);
	gcm_apply(gen->cfg->aes_gcm_vaes);
}

int
server_apply(struct quic_server *srv, struct config *cfg, struct strbuf *errs)
{
	struct server_staged *st;

	if ((st = server_stage(srv, cfg, errs)) == NULL)
		return -1;
	server_commit(srv, st);
	return 0;
}

/*
 * The second step of a graceful shutdown: the final GOAWAY (the streams
 * seen are served, later ones refused) to the connections whose clients
 * did not acknowledge the notice in time; idle connections are closed
 * once their clients have it (qconn_lingers).
 */
static void
shutdown_final(struct quic_server *srv)
{
	struct qconn *qc, *next;

	srv->shutdown_notice = false;
	for (qc = LIST_FIRST(&srv->conns); qc != NULL; qc = next) {
		next = LIST_NEXT(qc, entry);
		if (qc->state != QC_ACTIVE || qc->upgrade_grace)
			continue;
		h3_goaway(qc);
		qconn_want_write(qc);
	}
}

static void
shutdown_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	shutdown_final(w->data);
}

void
server_shutdown(struct quic_server *srv)
{
	struct qconn *qc, *next;
	ngtcp2_conn_info ci;
	ngtcp2_duration rtt = 0;
	double wait;

	/*
	 * New connections are refused from now on (handle_datagram); the
	 * sockets keep reading for the established ones. A client told of
	 * the shutdown only by the final GOAWAY may have a request on its
	 * way, which the GOAWAY refuses: first a notice (RFC 9114 5.2), and
	 * a connection's final GOAWAY once its client has acknowledged the
	 * notice (qconn_write), so that any request it sent before it had
	 * the notice has come; for the others, three of the slowest
	 * client's round trips later (at least a second, at most three).
	 * Once: a worker draining after a SIGTERM may be handed over by its
	 * supervisor's upgrade too, and its timer is libev's until it fires.
	 */
	if (srv->shutting_down)
		return;
	srv->shutting_down = true;
	ev_periodic_stop(srv->loop, &srv->cert_timer);
	for (qc = LIST_FIRST(&srv->conns); qc != NULL; qc = next) {
		next = LIST_NEXT(qc, entry);
		qconn_end_period(qc);
		if (qc->state != QC_ACTIVE || qc->upgrade_grace)
			continue;
		if (qc->h3 == NULL) {
			/* with no handshake done, freed at once (start_period) */
			qconn_close(qc);
			continue;
		}
		h3_goaway_notice(qc);
		qconn_want_write(qc);
		ngtcp2_conn_get_conn_info(qc->conn, &ci);
		if (ci.smoothed_rtt > rtt)
			rtt = ci.smoothed_rtt;
	}
	if (LIST_EMPTY(&srv->conns)) {
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	wait = 3. * (double)rtt / NGTCP2_SECONDS;
	wait = wait < 1. ? 1. : wait > 3. ? 3. : wait;
	srv->shutdown_notice = true;
	ev_timer_init(&srv->shutdown_timer, shutdown_timer_cb, wait, 0.);
	srv->shutdown_timer.data = srv;
	ev_timer_start(srv->loop, &srv->shutdown_timer);
}

void
server_handover(struct quic_server *srv)
{
	struct udp_sock *s;
	struct qconn *qc;

	/* the new process reads them, and passes this one its datagrams */
	LIST_FOREACH(s, &srv->socks, entry)
		if (upgrade_taken(&s->local))
			ev_io_stop(srv->loop, &s->rev);
	/*
	 * A client in its handshake chose this process before the new one
	 * read anything: it is served as one whose requests were under way.
	 */
	LIST_FOREACH(qc, &srv->conns, entry)
		if (qc->state == QC_ACTIVE && !qc->handshake_done)
			qc->upgrade_grace = true;
	server_shutdown(srv);
}

void
server_hold(struct quic_server *srv)
{
	struct udp_sock *s;

	LIST_FOREACH(s, &srv->socks, entry)
		ev_io_stop(srv->loop, &s->rev);
}

void
server_take_back(struct quic_server *srv)
{
	struct udp_sock *s;

	LIST_FOREACH(s, &srv->socks, entry)
		ev_io_start(srv->loop, &s->rev);
}

bool
server_stopping(const struct quic_server *srv)
{
	return srv->shutting_down;
}

void
server_close_all(struct quic_server *srv)
{
	struct qconn *qc, *next;

	for (qc = LIST_FIRST(&srv->conns); qc != NULL; qc = next) {
		next = LIST_NEXT(qc, entry);
		if (qc->state != QC_ACTIVE)
			continue;
		if (qc->last_error.error_code == 0)
			ngtcp2_ccerr_set_application_error(&qc->last_error,
			    NGHTTP3_H3_NO_ERROR, NULL, 0);
		qconn_close(qc);
	}
}

void
server_free(struct quic_server *srv)
{
	struct udp_sock *s;

	if (srv == NULL)
		return;
	quic_fini(srv);
	ev_periodic_stop(srv->loop, &srv->cert_timer);
	ev_timer_stop(srv->loop, &srv->shutdown_timer);
	while ((s = LIST_FIRST(&srv->socks)) != NULL)
		sock_close(s);
	generation_unref(srv->gen);
	free(srv);
	exchange_cache_free();
	bufq_cache_free();
	h3_mem_drain();
}

/*
 * Each listener's certificates, the first its default: the file, when it
 * expires and the host names it serves.
 */
void
server_report_tls(struct quic_server *srv, struct strbuf *out, bool json)
{
	const struct generation *gen = srv->gen;
	struct tls_cert_info ci;
	char when[32];
	time_t now = time(NULL);
	bool first = true;
	int wname = 8, wfile = 11;

	if (json)
		strbuf_printf(out, "{\"certificates\":[");
	else {
		for (size_t i = 0; i < gen->nlisteners; i++) {
			const struct listener *l = &gen->listeners[i];

			wname = MAX(wname, (int)strlen(l->cfg->name));
			for (size_t j = 0; tls_ctx_cert(l->tls, j, &ci); j++)
				wfile = MAX(wfile, (int)strlen(ci.file));
		}
		strbuf_printf(out, "%-*s %-20s %5s %-*s %s\n", wname, "LISTENER",
		    "NOT_AFTER", "DAYS", wfile, "CERTIFICATE", "NAMES");
	}
	for (size_t i = 0; i < gen->nlisteners; i++) {
		const struct listener *l = &gen->listeners[i];

		for (size_t j = 0; tls_ctx_cert(l->tls, j, &ci); j++) {
			long long days = ci.not_after == 0 ? 0 :
			    tls_days_left(ci.not_after, now);

			tls_format_time(ci.not_after, when, sizeof(when));
			if (json) {
				strbuf_printf(out, "%s{\"listener\":",
				    first ? "" : ",");
				strbuf_json_string(out, l->cfg->name);
				strbuf_printf(out, ",\"file\":");
				strbuf_json_string(out, ci.file);
				strbuf_printf(out, ",\"default\":%s,\"names\":[",
				    j == 0 ? "true" : "false");
				for (size_t k = 0; k < ci.nnames; k++) {
					if (k > 0)
						strbuf_printf(out, ",");
					strbuf_json_string(out, ci.names[k]);
				}
				strbuf_printf(out, "],\"not_before\":");
				tls_format_time(ci.not_before, when,
				    sizeof(when));
				strbuf_json_string(out, when);
				strbuf_printf(out, ",\"not_after\":");
				tls_format_time(ci.not_after, when,
				    sizeof(when));
				strbuf_json_string(out, when);
				strbuf_printf(out, ",\"days_left\":%lld}", days);
			} else {
				strbuf_printf(out, "%-*s %-20s %5lld %-*s",
				    wname, l->cfg->name, when, days, wfile,
				    ci.file);
				for (size_t k = 0; k < ci.nnames; k++)
					strbuf_printf(out, " %s", ci.names[k]);
				strbuf_printf(out, "%s\n",
				    ci.nnames == 0 ? " -" : "");
			}
			first = false;
		}
	}
	if (json)
		strbuf_printf(out, "]}\n");
}

int
server_set_server(struct quic_server *srv, const char *args, bool on,
    struct strbuf *out)
{
	char backend[128];
	const char *server, *why;

	if ((why = upstream_check_args(srv->gen->cfg, args, on, backend,
	    sizeof(backend), &server)) != NULL) {
		strbuf_printf(out, "%s", why);
		return -1;
	}
	if (upstream_set_disabled(backend, server, !on) == -1) {
		strbuf_printf(out, "out of memory");
		return -1;
	}
	upstream_mark(srv->gen->upstreams, backend, server, !on);
	log_info("backend %s: server %s %s by qproxyctl", backend, server,
	    on ? "enabled" : "disabled");
	strbuf_printf(out, "backend %s: server %s %s\n", backend, server,
	    on ? "enabled" : "disabled");
	return 0;
}

/* Where a route sends its requests, as one word ("return-503"). */
static void
route_to(const struct config *cfg, const struct config_route *r, char *buf,
    size_t len)
{
	if (r->answer != 0)
		snprintf(buf, len, "%s-%d", r->redirect ? "redirect" : "return",
		    r->answer);
	else
		snprintf(buf, len, "%s", cfg->backends[r->backend].name);
}

void
server_report_routes(struct quic_server *srv, struct strbuf *out, bool json)
{
	const struct generation *gen = srv->gen;
	const struct config *cfg = gen->cfg;
	char to[80];
	int wname = 16, wto = 16;

	if (json)
		strbuf_printf(out, "\"routes\":[");
	else {
		for (size_t i = 0; i < gen->nroutes; i++) {
			route_to(cfg, &cfg->routes[i], to, sizeof(to));
			wname = MAX(wname, (int)strlen(cfg->routes[i].name));
			wto = MAX(wto, (int)strlen(to));
		}
		strbuf_printf(out, "%-*s %-*s %9s %8s %8s %8s %8s %8s %8s "
		    "%8s\n", wname, "ROUTE", wto, "TO", "REQUESTS", "1XX",
		    "2XX", "3XX", "4XX", "5XX", "LIMITED", "MEAN_MS");
	}
	for (size_t i = 0; i < gen->nroutes; i++) {
		const struct route_stats *rs = gen->routes[i];
		double mean = rs->duration.count > 0 ? 1000. *
		    rs->duration.sum / (double)rs->duration.count : 0.;

		route_to(cfg, &cfg->routes[i], to, sizeof(to));
		if (!json) {
			strbuf_printf(out, "%-*s %-*s %9llu", wname, rs->name,
			    wto, to, (unsigned long long)rs->requests);
			for (int c = 1; c <= 5; c++)
				strbuf_printf(out, " %8llu",
				    (unsigned long long)rs->responses[c]);
			strbuf_printf(out, " %8llu %8.2f\n",
			    (unsigned long long)rs->rate_limited, mean);
			continue;
		}
		strbuf_printf(out, "%s{\"name\":", i > 0 ? "," : "");
		strbuf_json_string(out, rs->name);
		strbuf_printf(out, ",\"to\":");
		strbuf_json_string(out, to);
		strbuf_printf(out, ",\"requests\":%llu,\"responses\":{",
		    (unsigned long long)rs->requests);
		for (int c = 1; c <= 5; c++)
			strbuf_printf(out, "%s\"%dxx\":%llu", c > 1 ? "," : "", c,
			    (unsigned long long)rs->responses[c]);
		strbuf_printf(out, "},\"rate_limited\":%llu,"
		    "\"duration_avg_ms\":%.3f}",
		    (unsigned long long)rs->rate_limited, mean);
	}
	if (json)
		strbuf_printf(out, "]");
}

void
server_report_backends(struct quic_server *srv, struct strbuf *out,
    bool json)
{
	upstream_report(srv->gen->upstreams, out, json);
}

/* Every counter of struct stats, by group, for both report formats. */
/*
 * A count that only grows, or (GAUGE) a present value: "now". As a metric
 * a gauge may need a name of its own (GAUGE_AS): Prometheus takes
 * "x_total" for a count of x.
 */
#define ROW(g, n, f)	{ g, n, offsetof(struct stats, f), false, NULL }
#define GAUGE(g, n, f)	{ g, n, offsetof(struct stats, f), true, NULL }
#define GAUGE_AS(g, n, f, m) { g, n, offsetof(struct stats, f), true, m }
static const struct stats_row {
	const char	*group;
	const char	*name;
	size_t		 off;
	bool		 gauge;
	const char	*metric;	/* its name there, if not the row's */
} stats_rows[] = {
	GAUGE("connections", "current", conns_current),
	ROW("connections", "total", conns_total),
	GAUGE("connections", "closing", conns_closing),
	ROW("connections", "handshakes_completed", handshakes_completed),
	ROW("connections", "handshakes_failed", handshakes_failed),
	GAUGE("connections", "handshakes_current", handshakes_current),
	ROW("connections", "client_certs_verified", client_certs_verified),
	ROW("connections", "client_certs_refused", client_certs_refused),
	ROW("connections", "client_certs_missing", client_certs_missing),
	GAUGE("connections", "clients", clients_current),
	GAUGE("streams", "current", streams_current),
	ROW("streams", "total", streams_total),
	ROW("requests", "total", requests_total),
	ROW("requests", "1xx", responses[1]),
	ROW("requests", "2xx", responses[2]),
	ROW("requests", "3xx", responses[3]),
	ROW("requests", "4xx", responses[4]),
	ROW("requests", "5xx", responses[5]),
	ROW("requests", "malformed", requests_malformed),
	ROW("requests", "misdirected", requests_misdirected),
	ROW("requests", "rate_limited", requests_rate_limited),
	ROW("requests", "forbidden", requests_forbidden),
	ROW("requests", "answered", requests_answered),
	ROW("requests", "body_too_large", requests_body_too_large),
	ROW("requests", "reset", requests_reset),
	ROW("requests", "client_timeout", requests_client_timeout),
	ROW("requests", "trailers_dropped", requests_trailers_dropped),
	ROW("requests", "bodies_streamed", requests_bodies_streamed),
	ROW("auth", "passed", auth_passed),
	ROW("auth", "failed", auth_failed),
	ROW("auth", "checks", auth_checks),
	ROW("auth", "throttled", auth_throttled),
	ROW("auth", "client_throttled", auth_client_throttled),
	ROW("udp", "datagrams_received", datagrams_received),
	ROW("udp", "bytes_received", bytes_received),
	ROW("udp", "datagrams_sent", datagrams_sent),
	ROW("udp", "bytes_sent", bytes_sent),
	ROW("udp", "send_blocked", send_blocked),
	ROW("udp", "send_errors", send_errors),
	ROW("udp", "version_negotiations", version_negotiations),
	ROW("udp", "gso_batches", gso_batches),
	ROW("udp", "gso_datagrams", gso_datagrams),
	ROW("udp", "recv_batches", recv_batches),
	ROW("udp", "gro_datagrams", gro_datagrams),
	ROW("udp_dropped", "invalid", dropped_invalid),
	ROW("udp_dropped", "no_connection", dropped_unknown),
	ROW("udp_dropped", "refused", dropped_refused),
	ROW("udp_dropped", "not_unicast", dropped_not_unicast),
	ROW("quic", "retries_sent", retries_sent),
	ROW("quic", "tokens_invalid", tokens_invalid),
	ROW("quic", "tokens_reused", tokens_reused),
	GAUGE("quic", "tokens_remembered", tokens_remembered),
	ROW("quic", "tokens_forgotten", tokens_forgotten),
	ROW("quic", "resumed_handshakes", resumed_handshakes),
	ROW("quic", "tickets_reused", tickets_reused),
	GAUGE("quic", "tickets_remembered", tickets_remembered),
	ROW("quic", "tickets_forgotten", tickets_forgotten),
	ROW("quic", "tickets_unsure", tickets_unsure),
	ROW("quic", "hello_retries", hello_retries),
	ROW("quic", "new_tokens_sent", new_tokens_sent),
	ROW("quic", "stateless_resets_sent", stateless_resets_sent),
	ROW("quic", "stateless_resets_limited", stateless_resets_limited),
	ROW("quic", "upgrade_forwarded", upgrade_forwarded),
	ROW("quic", "upgrade_forward_dropped", upgrade_forward_dropped),
	ROW("quic", "refusals_unanswered", refusals_unanswered),
	GAUGE("quic", "unvalidated_handshakes", handshakes_unvalidated),
	ROW("quic", "path_validations_ok", path_validations_ok),
	ROW("quic", "path_validations_failed", path_validations_failed),
	ROW("quic", "migrations", migrations),
	ROW("quic", "early_data_requests", early_data_requests),
	ROW("quic", "early_data_refused", early_data_refused),
	GAUGE("quic", "cids_current", cids_current),
	ROW("quic", "vaes_packets", vaes_packets),
	ROW("limits", "refused_max_connections", refused_max_connections),
	ROW("limits", "refused_max_handshakes", refused_max_handshakes),
	ROW("limits", "refused_per_client", refused_per_client),
	ROW("limits", "goaway_max_requests", goaway_max_requests),
	ROW("limits", "closed_stream_resets", closed_stream_resets),
	ROW("limits", "closed_send_timeout", closed_send_timeout),
	ROW("limits", "headers_too_large", headers_too_large),
	ROW("limits", "fields_over_client_limit", fields_over_client_limit),
	ROW("limits", "closed_protocol_errors", closed_protocol_errors),
	ROW("limits", "response_memory_waits", response_memory_waits),
	ROW("limits", "reset_response_memory", streams_reset_memory),
	ROW("limits", "reset_request_memory", streams_reset_req_memory),
	ROW("limits", "closed_quic_memory", closed_quic_memory),
	ROW("limits", "closed_field_floods", closed_field_floods),
	ROW("limits", "closed_qpack_decoder_held", closed_qpack_decoder_held),
	ROW("limits", "goaway_old_configurations", goaway_old_configurations),
	ROW("upstream", "connects", upstream_connects),
	ROW("upstream", "connect_failures", upstream_connect_failures),
	ROW("upstream", "servers_failed", upstream_servers_failed),
	GAUGE("upstream", "connections_current", upstream_conns_current),
	ROW("upstream", "reused", upstream_reused),
	ROW("upstream", "retried", upstream_retried),
	ROW("upstream", "next_server", upstream_next_server),
	ROW("upstream", "informational_dropped", informational_dropped),
	ROW("upstream", "bytes_after_body", upstream_bytes_after_body),
	GAUGE_AS("upstream", "queued", upstream_queued,
	    "queued_current"),
	ROW("upstream", "queued_total", upstream_queued_total),
	ROW("upstream", "queue_timeouts", upstream_queue_timeouts),
	ROW("upstream", "out_of_descriptors", upstream_no_fd),
	ROW("upstream", "health_checks", health_checks),
	ROW("upstream", "health_checks_failed", health_checks_failed),
	ROW("websockets", "opened", ws_opened),
	GAUGE("websockets", "current", ws_current),
	ROW("websockets", "refused", ws_refused),
	ROW("websockets", "timeouts", ws_timeouts),
	ROW("websockets", "bytes_to_backend", ws_bytes_to_backend),
	ROW("websockets", "bytes_to_client", ws_bytes_to_client),
	ROW("compress", "responses", compress_responses),
	ROW("compress", "bytes_in", compress_bytes_in),
	ROW("compress", "bytes_out", compress_bytes_out),
	ROW("compress", "skipped_memory", compress_skipped_memory),
	GAUGE("compress", "memory_bytes", compress_memory),
	GAUGE("buffers", "chunks", buffer_chunks),
	GAUGE("buffers", "chunks_free", buffer_chunks_free),
	GAUGE("buffers", "exchanges_free", exchanges_free),
	GAUGE("buffers", "response_bytes", response_bytes),
	GAUGE("buffers", "response_peak_bytes", response_peak_bytes),
	GAUGE("buffers", "request_bytes", request_bytes),
	GAUGE("buffers", "request_peak_bytes", request_peak_bytes),
	GAUGE("buffers", "unparsed_bytes", unparsed_bytes),
	GAUGE("buffers", "h3_bytes", h3_bytes),
	GAUGE("buffers", "h3_free_bytes", h3_free_bytes),
	GAUGE("buffers", "quic_bytes", quic_bytes),
	GAUGE("buffers", "quic_peak_bytes", quic_peak_bytes),
	GAUGE("buffers", "done_stream_bytes", done_stream_bytes),
	GAUGE("buffers", "send_pending_bytes", send_pending_bytes),
	GAUGE("buffers", "configurations", configurations),
	ROW("loop", "busy_windows", loop_busy_windows),
	ROW("loop", "bulk_windows", loop_bulk_windows),
	ROW("loop", "batched_windows", loop_batched_windows),
	GAUGE("tls", "certificates_expiring", certs_expiring),
	GAUGE("tls", "certificates_not_valid", certs_not_valid),
	GAUGE("tls", "crls_expiring", crls_expiring),
	GAUGE("tls", "crls_out_of_date", crls_out_of_date),
};
#undef ROW
#undef GAUGE
#undef GAUGE_AS

/* The present values that are read, not kept, brought into stats. */
static void
stats_refresh(struct quic_server *srv)
{
	stats.buffer_chunks = bufq_chunks_in_use();
	stats.buffer_chunks_free = bufq_chunks_free();
	stats.exchanges_free = exchange_cached();
	stats.response_bytes = exchange_response_chunks() * BUFQ_CHUNK_SIZE;
	stats.response_peak_bytes = stats.response_peak_chunks *
	    BUFQ_CHUNK_SIZE;
	stats.request_bytes = exchange_request_bytes();
	stats.h3_bytes = h3_mem_live();
	stats.h3_free_bytes = h3_mem_kept();
	stats.quic_bytes = quic_mem_current();
	stats.quic_peak_bytes = quic_mem_highest();
	stats.done_stream_bytes = exchange_done_bytes();
	stats.compress_memory = compress_memory();
	quic_table_stats(srv);
}

void
server_report_stats(struct quic_server *srv, struct strbuf *out, bool json)
{
	struct generation *gen = srv->gen;
	double uptime = mono_now() - srv->started;
	const size_t nrows = sizeof(stats_rows) / sizeof(stats_rows[0]);
	char text[ADDR_STRLEN];
	struct udp_sock *s;
	int wname = 20, waddr = 24, wtotal = 11;

	stats_refresh(srv);
	if (json)
		strbuf_printf(out, "{\"version\":\"%s\",\"uptime\":%.3f,"
		    "\"generation\":%llu", QPROXY_VERSION, uptime,
		    (unsigned long long)gen->id);
	else
		strbuf_printf(out, "%-12s %.0f s (configuration generation "
		    "%llu)\n", "uptime", uptime, (unsigned long long)gen->id);
	for (size_t i = 0; i < nrows; i++) {
		const struct stats_row *r = &stats_rows[i];
		bool first = i == 0 ||
		    strcmp(stats_rows[i - 1].group, r->group) != 0;
		bool last = i + 1 == nrows ||
		    strcmp(stats_rows[i + 1].group, r->group) != 0;
		uint64_t v;

		memcpy(&v, (const char *)&stats + r->off, sizeof(v));
		if (json) {
			if (first)
				strbuf_printf(out, ",\"%s\":{", r->group);
			strbuf_printf(out, "%s\"%s\":%llu%s", first ? "" : ",",
			    r->name, (unsigned long long)v, last ? "}" : "");
		} else {
			if (first)
				strbuf_printf(out, "%-12s ", r->group);
			strbuf_printf(out, "%s%s %llu%s", first ? "" : ", ",
			    r->name, (unsigned long long)v, last ? "\n" : "");
		}
	}
	if (!json) {
		LIST_FOREACH(s, &srv->socks, entry) {
			wname = MAX(wname, (int)strlen(s->listener ?
			    s->listener->cfg->name : "(draining)"));
			waddr = MAX(waddr, (int)strlen(addr_format(&s->local,
			    text, sizeof(text))));
			wtotal = MAX(wtotal, snprintf(NULL, 0, "%llu",
			    (unsigned long long)s->conns_total));
		}
		/* OPEN last: the columns before it stay where scripts read them */
		strbuf_printf(out, "\n%-*s %-*s %-*s %s\n", wname, "LISTENER",
		    waddr, "ADDRESS", wtotal, "CONNECTIONS", "OPEN");
		LIST_FOREACH(s, &srv->socks, entry)
			strbuf_printf(out, "%-*s %-*s %-*llu %zu\n", wname,
			    s->listener ? s->listener->cfg->name : "(draining)",
			    waddr, addr_format(&s->local, text, sizeof(text)),
			    wtotal, (unsigned long long)s->conns_total,
			    s->nconns);
		strbuf_printf(out, "\n");
		upstream_report(gen->upstreams, out, false);
		return;
	}
	strbuf_printf(out, ",\"listeners\":[");
	LIST_FOREACH(s, &srv->socks, entry) {
		strbuf_printf(out, "%s{\"name\":", s == LIST_FIRST(&srv->socks)
		    ? "" : ",");
		strbuf_json_string(out, s->listener ? s->listener->cfg->name :
		    "");
		strbuf_printf(out, ",\"address\":");
		strbuf_json_string(out, addr_format(&s->local, text,
		    sizeof(text)));
		strbuf_printf(out, ",\"draining\":%s,\"connections_current\":%zu,"
		    "\"connections_total\":%llu}", s->listener ? "false" :
		    "true", s->nconns, (unsigned long long)s->conns_total);
	}
	strbuf_printf(out, "],");
	upstream_report(gen->upstreams, out, true);
	strbuf_printf(out, "}\n");
}

/* The families of routes_metrics_part, in their order. */
enum route_metric { RM_REQUESTS, RM_RATE_LIMITED, RM_RESPONSES, RM_DURATION,
	RM_N };

/*
 * Each route's requests and those refused for its max_request_rate, its
 * responses by status class, and how long its requests took, labelled by
 * its name; from where cur stands (*fam, *i) until out holds limit bytes,
 * a piece ending after a route's samples, never on a TYPE line. True once
 * all went.
 */
static bool
routes_metrics_part(const struct generation *gen, struct strbuf *out,
    size_t *fam, size_t *i, size_t limit)
{
	static const char *const type[RM_N] = {
		[RM_REQUESTS] = "qproxy_route_requests_total counter",
		[RM_RATE_LIMITED] = "qproxy_route_rate_limited_total counter",
		[RM_RESPONSES] = "qproxy_route_responses_total counter",
		[RM_DURATION] = ("qproxy_route_request_duration_seconds "
		    "histogram"),
	};
	const size_t n = gen->nroutes;
	struct strbuf label;
	bool all = true;

	strbuf_init(&label, 1024);
	for (; *fam < RM_N; (*fam)++, *i = 0) {
		if (*i == 0) {
			if (out->len >= limit) {
				all = false;
				break;
			}
			strbuf_printf(out, "# TYPE %s\n", type[*fam]);
		}
		for (; *i < n; (*i)++) {
			const struct route_stats *rs = gen->routes[*i];

			if (out->len >= limit && *i > 0) {
				all = false;
				goto done;
			}
			strbuf_clear(&label);
			strbuf_printf(&label, "route=");
			strbuf_metric_label(&label, rs->name);
			out->nomem |= label.nomem;	/* (a label cut short) */
			switch (*fam) {
			case RM_REQUESTS:
			case RM_RATE_LIMITED:
				strbuf_printf(out, "qproxy_route_%s_total{%s} "
				    "%llu\n", *fam == RM_REQUESTS ? "requests" :
				    "rate_limited", strbuf_str(&label),
				    (unsigned long long)(*fam == RM_REQUESTS ?
				    rs->requests : rs->rate_limited));
				break;
			case RM_RESPONSES:
				for (int c = 1; c <= 5; c++)
					strbuf_printf(out,
					    "qproxy_route_responses_total{%s,"
					    "code=\"%dxx\"} %llu\n",
					    strbuf_str(&label), c,
					    (unsigned long long)rs->responses[c]);
				break;
			default:
				hist_report(out,
				    "qproxy_route_request_duration_seconds",
				    strbuf_str(&label), &rs->duration);
				break;
			}
		}
	}
done:
	strbuf_free(&label);
	return all;
}

/*
 * qproxyctl metrics, made a piece at a time as the client takes it
 * (control.h's stream): 10,000 routes and backends make 35 MB of it,
 * which built whole held the loop for a tenth of a second or more, every
 * other connection waiting, and the whole text for as long as the client
 * took to read it. The generation is held: a reload between two pieces
 * leaves the rest of the reply the counters it began with.
 */
enum { MP_HEAD, MP_ROUTES, MP_BACKENDS, MP_END };

struct metrics_cursor {
	struct quic_server		*srv;
	struct generation		*gen;
	int				 part;
	size_t				 fam, i;	/* routes' */
	struct upstream_metrics_cursor	 up;
};

struct metrics_cursor *
server_metrics_begin(struct quic_server *srv)
{
	struct metrics_cursor *cur;

	if ((cur = calloc(1, sizeof(*cur))) == NULL)
		return NULL;
	cur->srv = srv;
	cur->gen = generation_ref(srv->gen);
	return cur;
}

void
server_metrics_end(struct metrics_cursor *cur)
{
	if (cur == NULL)
		return;
	generation_unref(cur->gen);
	free(cur);
}

/*
 * The counters in Prometheus's text format (0.0.4): qproxy_GROUP_NAME for
 * each row, "_total" at the end of a count's name; then the listeners';
 * how long requests took, from their heads to their ends, as a histogram;
 * then the routes' and the backends' (upstream_metrics_part). A family's
 * samples are together, under its TYPE line.
 */
static void
metrics_head(struct quic_server *srv, struct strbuf *out)
{
	const size_t nrows = sizeof(stats_rows) / sizeof(stats_rows[0]);
	char text[ADDR_STRLEN];
	struct udp_sock *s;
	size_t len;

	stats_refresh(srv);
	strbuf_printf(out, "# TYPE qproxy_uptime_seconds gauge\n"
	    "qproxy_uptime_seconds %.0f\n"
	    "# TYPE qproxy_configuration_generation gauge\n"
	    "qproxy_configuration_generation %llu\n",
	    mono_now() - srv->started,
	    (unsigned long long)srv->gen->id);
	for (size_t i = 0; i < nrows; i++) {
		const struct stats_row *r = &stats_rows[i];
		const char *name = r->metric ? r->metric : r->name;
		const char *suffix = "";
		uint64_t v;

		len = strlen(name);
		if (!r->gauge && (len < 5 ||
		    strcmp(name + len - 5, "total") != 0))
			suffix = "_total";
		memcpy(&v, (const char *)&stats + r->off, sizeof(v));
		strbuf_printf(out, "# TYPE qproxy_%s_%s%s %s\n"
		    "qproxy_%s_%s%s %llu\n", r->group, name, suffix,
		    r->gauge ? "gauge" : "counter", r->group, name, suffix,
		    (unsigned long long)v);
	}
	/* each address's connections in all, then those open */
	for (int open = 0; open <= 1; open++) {
		const char *name = open ? "qproxy_listener_connections_open" :
		    "qproxy_listener_connections_total";

		strbuf_printf(out, "# TYPE %s %s\n", name,
		    open ? "gauge" : "counter");
		LIST_FOREACH(s, &srv->socks, entry) {
			strbuf_printf(out, "%s{listener=", name);
			strbuf_metric_label(out, s->listener ?
			    s->listener->cfg->name : "(draining)");
			strbuf_printf(out, ",address=\"%s\"} %llu\n",
			    addr_format(&s->local, text, sizeof(text)),
			    open ? (unsigned long long)s->nconns :
			    (unsigned long long)s->conns_total);
		}
	}
	strbuf_printf(out, "# TYPE qproxy_request_duration_seconds "
	    "histogram\n");
	hist_report(out, "qproxy_request_duration_seconds", "",
	    &stats.request_duration);
}

int
server_metrics_next(struct metrics_cursor *cur, struct strbuf *out,
    size_t limit)
{
	switch (cur->part) {
	case MP_HEAD:
		metrics_head(cur->srv, out);
		cur->part = MP_ROUTES;
		break;
	case MP_ROUTES:
		if (routes_metrics_part(cur->gen, out, &cur->fam, &cur->i,
		    limit))
			cur->part = MP_BACKENDS;
		break;
	case MP_BACKENDS:
		if (upstream_metrics_part(cur->gen->upstreams, out, &cur->up,
		    limit))
			cur->part = MP_END;
		break;
	}
	return cur->part != MP_END;
}
