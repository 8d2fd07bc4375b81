/*
 * upstream.h: backend servers: round robin, connecting, and a bounded pool
 * of idle keep-alive connections per server.
 */
#ifndef QPROXY_UPSTREAM_H
#define QPROXY_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "config.h"

struct upstream_pool;

enum upstream_state {
	UPSTREAM_UNKNOWN,	/* not tried yet */
	UPSTREAM_UP,		/* the last attempt worked */
	UPSTREAM_DOWN,		/* the last connect failed */
};

struct upstream_server {
	struct upstream_pool		*pool;
	const struct config_server	*cfg;
	size_t				 nidle;
	struct upstream_idle		*idle;		/* most recent first */
	enum upstream_state		 state;
	uint64_t			 requests, failures, active;
	double				 ttfb_sum;	/* seconds */
	uint64_t			 ttfb_count;
};

/* One pool per configured backend, in config order. */
struct upstream_pool	*upstream_pools_new(struct ev_loop *, struct config *);
void			 upstream_pools_free(struct upstream_pool *);
/*
 * The server for a request's attempt-th try: attempt 0 advances the round
 * robin, later attempts walk on from there (failover).
 */
struct upstream_server	*upstream_pick(struct upstream_pool *, size_t backend,
			    size_t attempt, size_t *nservers);
const struct config_backend *upstream_backend(struct upstream_pool *,
			    size_t backend);
/* A pooled idle connection's descriptor, or -1. */
int			 upstream_take_idle(struct upstream_server *);
/*
 * Starts a non-blocking connect. Returns the descriptor (connected or in
 * progress), or -1 with errno set.
 */
int			 upstream_connect(struct upstream_server *);
/* Gives a connection whose last response ended cleanly back to the pool. */
void			 upstream_release(struct upstream_server *, int fd);
/* Whether a failed connect may be retried on another server. */
bool			 upstream_refused(int err);

struct strbuf;
/* Text table, or "\"backends\":[...]" to go inside a JSON object. */
void			 upstream_report(struct upstream_pool *,
			    struct strbuf *, bool json);
/* Carries counters over a reload, for servers of the same name. */
void			 upstream_pools_inherit(struct upstream_pool *to,
			    const struct upstream_pool *from);

#endif
