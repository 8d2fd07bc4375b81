/*
 * health.h: a backend's health_check: each of its servers asked for one
 * path now and then, apart from the requests, and passed over by new
 * requests while it fails.
 *
 * A check connects, sends "GET path HTTP/1.1" with Connection: close,
 * and passes when a status line of 2xx or 3xx comes back within
 * health_timeout; anything else fails it (a refused or slow connect, a
 * close, another status, no HTTP). After health_fails failures in a row a
 * server is marked unhealthy; after health_passes passes in a row, healthy
 * again. The mark is the server's counters' (upstream_counters), so it
 * holds across a reload; each generation's pools run checks of their own
 * while they are current.
 */
#ifndef QPROXY_HEALTH_H
#define QPROXY_HEALTH_H

#include <ev.h>

struct health;
struct upstream_server;

/*
 * The checks of s, made ready but not begun (a reload's, which may be let
 * go: server_stage); NULL when out of memory.
 */
struct health	*health_new(struct ev_loop *, struct upstream_server *s);
/* Begins them, the first check at once. */
void		 health_run(struct health *);
/* Stops, closing a check under way. NULL is ignored. */
void		 health_stop(struct health *);

#endif
