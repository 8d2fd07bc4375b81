/*
 * health.c: active health checks of backend servers (health.h).
 *
 * One check at a time per server: a timer that starts it, the same timer
 * as its deadline, and one I/O watcher that follows the connect, the send
 * and the read of the status line. The next check is due health_interval
 * after the last one ended.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "health.h"
#include "http1.h"
#include "log.h"
#include "stats.h"
#include "upstream.h"

/* Enough for "HTTP/1.1 200 " and more: only the status line is read. */
#define HEALTH_READ_MAX	256

struct health {
	struct ev_loop		*loop;
	struct upstream_server	*server;
	ev_timer		 timer;	/* the next check, or the deadline */
	ev_io			 io;
	int			 fd;	/* -1 between checks */
	bool			 sent;
	char			 req[1024];
	size_t			 reqlen;
	char			 buf[HEALTH_READ_MAX];
	size_t			 len;
};

static const struct config_backend *
health_cfg(const struct health *h)
{
	return upstream_server_backend(h->server);
}

static void
health_close(struct health *h)
{
	if (h->fd == -1)
		return;
	ev_io_stop(h->loop, &h->io);
	close(h->fd);
	h->fd = -1;
}

/* The check ended: passed, or failed for why; the next one is due. */
static void
health_done(struct health *h, const char *why)
{
	const struct config_backend *b = health_cfg(h);
	struct upstream_counters *k = h->server->ctr;

	health_close(h);
	stats.health_checks++;
	if (why == NULL) {
		k->health_fails = 0;
		if (k->unhealthy && ++k->health_passes >= b->health_passes) {
			k->unhealthy = false;
			log_info("backend %s: server %s passes its health "
			    "check again", b->name, h->server->cfg->text);
		}
	} else {
		stats.health_checks_failed++;
		k->health_passes = 0;
		if (!k->unhealthy && ++k->health_fails >= b->health_fails) {
			k->unhealthy = true;
			log_warnx("backend %s: server %s fails its health "
			    "check (%s); new requests pass it over", b->name,
			    h->server->cfg->text, why);
		} else
			log_debug("backend %s: server %s: health check "
			    "failed: %s", b->name, h->server->cfg->text, why);
	}
	ev_timer_stop(h->loop, &h->timer);
	ev_timer_set(&h->timer, b->health_interval, 0.);
	ev_timer_start(h->loop, &h->timer);
}

/* What came so far, if it is a whole status line: NULL when it passes. */
static const char *
health_verdict(struct health *h, bool eof, bool *decided)
{
	static char why[64];
	const char *line = h->buf, *lf;
	int status;

	*decided = true;
	if ((lf = memchr(line, '\n', h->len)) != NULL) {
		/* the status line whole, read as the proxy reads it */
		if (lf == line || lf[-1] != '\r' || (status = http1_status(
		    (const uint8_t *)line, (size_t)(lf - line) - 1)) == -1)
			return "not an HTTP/1.1 response";
		/* a 1xx fails too: a health path has no business with one */
		if (status >= 200 && status < 400)
			return NULL;
		snprintf(why, sizeof(why), "status %d", status);
		return why;
	}
	if (h->len == sizeof(h->buf) || (h->len > 0 && memcmp(line,
	    "HTTP/1.", h->len < 7 ? h->len : 7) != 0))
		return "not an HTTP/1.1 response";
	if (eof)
		return h->len == 0 ? "closed without a response" :
		    "closed within the status line";
	*decided = false;
	return NULL;
}

static void
health_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct health *h = w->data;
	const char *why;
	bool decided;
	ssize_t n;
	int err = 0;
	socklen_t len = sizeof(err);

	(void)loop;
	(void)revents;
	if (!h->sent) {
		if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err != 0) {
			char msg[128];

			snprintf(msg, sizeof(msg), "connect: %s",
			    strerror(err));
			health_done(h, msg);
			return;
		}
		n = send(h->fd, h->req, h->reqlen, MSG_NOSIGNAL);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n != (ssize_t)h->reqlen) {
			health_done(h, "the request could not be sent");
			return;
		}
		h->sent = true;
		ev_io_stop(h->loop, &h->io);
		ev_io_set(&h->io, h->fd, EV_READ);
		ev_io_start(h->loop, &h->io);
		return;
	}
	n = recv(h->fd, h->buf + h->len, sizeof(h->buf) - h->len, 0);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n == -1) {
		char msg[128];

		snprintf(msg, sizeof(msg), "read: %s", strerror(errno));
		health_done(h, msg);
		return;
	}
	h->len += (size_t)n;
	why = health_verdict(h, n == 0, &decided);
	if (decided)
		health_done(h, why);
}

/* Starts a check, or (a check under way) its deadline passed. */
static void
health_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct health *h = w->data;
	const struct config_server *s = h->server->cfg;
	char msg[128];
	int fd, one = 1;

	(void)loop;
	(void)revents;
	if (h->fd != -1) {
		health_done(h, h->sent ? "no status line within "
		    "health_timeout" : "connect timed out");
		return;
	}
	h->sent = false;
	h->len = 0;
	fd = socket(s->addr.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(msg, sizeof(msg), "socket: %s", strerror(errno));
		health_done(h, msg);
		return;
	}
	if (s->addr.u.sa.sa_family != AF_UNIX)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
	h->fd = fd;
	if (connect(fd, &s->addr.u.sa, s->addr.len) == -1 &&
	    errno != EINPROGRESS) {
		snprintf(msg, sizeof(msg), "connect: %s", strerror(errno));
		health_done(h, msg);
		return;
	}
	ev_io_init(&h->io, health_io, fd, EV_WRITE);
	h->io.data = h;
	ev_io_start(h->loop, &h->io);
	ev_timer_set(&h->timer, health_cfg(h)->health_timeout, 0.);
	ev_timer_start(h->loop, &h->timer);
}

struct health *
health_new(struct ev_loop *loop, struct upstream_server *s)
{
	const struct config_backend *b = upstream_server_backend(s);
	struct health *h;
	int n;

	if ((h = calloc(1, sizeof(*h))) == NULL)
		return NULL;
	h->loop = loop;
	h->server = s;
	h->fd = -1;
	/* a Unix socket's server has no name of its own */
	n = snprintf(h->req, sizeof(h->req), "GET %s HTTP/1.1\r\n"
	    "Host: %s\r\nUser-Agent: qproxy-health-check\r\n"
	    "Connection: close\r\n\r\n", b->health_check,
	    b->health_host != NULL ? b->health_host :
	    s->cfg->addr.u.sa.sa_family == AF_UNIX ? "localhost" :
	    s->cfg->text);
	if (n < 0 || (size_t)n >= sizeof(h->req)) {
		free(h);
		return NULL;
	}
	h->reqlen = (size_t)n;
	ev_timer_init(&h->timer, health_timer, 0., 0.);
	h->timer.data = h;
	return h;
}

void
health_run(struct health *h)
{
	/* a carried one's timer runs: its next check, or its deadline */
	if (!ev_is_active(&h->timer))
		ev_timer_start(h->loop, &h->timer);
}

struct health *
health_carry(struct health *fresh, struct health *old)
{
	const struct config_backend *a = health_cfg(fresh);
	const struct config_backend *b = health_cfg(old);

	if (fresh->reqlen != old->reqlen ||
	    memcmp(fresh->req, old->req, fresh->reqlen) != 0 ||
	    a->health_interval != b->health_interval ||
	    a->health_timeout != b->health_timeout)
		return NULL;
	old->server = fresh->server;
	health_stop(fresh);
	return old;
}

void
health_stop(struct health *h)
{
	if (h == NULL)
		return;
	health_close(h);
	ev_timer_stop(h->loop, &h->timer);
	free(h);
}
