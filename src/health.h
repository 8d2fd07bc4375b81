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
 * holds across a reload; the current generation's pools run the checks,
 * a server's going on from the last generation's when they ask the same
 * (health_carry).
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
/* Begins them, the first check at once; carried ones go on as they were. */
void		 health_run(struct health *);
/*
 * A reload's checks of a server (fresh, of its new pools) and the running
 * ones of the same server (old): old goes on in fresh's place, fresh
 * stopped, when both send the same request as often with as long to
 * answer, so that a check under way is not begun again (reloads more often
 * than health_timeout would end every check before its verdict). Returns
 * old then, else NULL and both are left as they were.
 */
struct health	*health_carry(struct health *fresh, struct health *old);
/* Stops, closing a check under way. NULL is ignored. */
void		 health_stop(struct health *);

#endif
