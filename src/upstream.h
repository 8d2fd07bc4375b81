/*
 * upstream.h: backend servers: round robin, connecting, and a bounded pool
 * of idle keep-alive connections per server.
 */
#ifndef QPROXY_UPSTREAM_H
#define QPROXY_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/queue.h>

#include <ev.h>

#include "config.h"
#include "hist.h"

struct upstream_pool;

enum upstream_state {
	UPSTREAM_UNKNOWN,	/* not tried yet */
	UPSTREAM_UP,		/* the last attempt worked */
	UPSTREAM_DOWN,		/* the last connect failed */
};

/*
 * What qproxyctl shows of a server. A reload's new pools share it with the
 * old ones for the servers both have (same backend name, same address), so
 * that requests under way across a reload count where they are shown.
 */
struct upstream_counters {
	unsigned			 refs;
	enum upstream_state		 state;
	double				 down_since;	/* last failed connect,
							   or a try since:
							   mono_now */
	uint64_t			 requests, failures, active;
	uint64_t			 fails_in_row;	/* responses: max_fails */
	struct hist			 ttfb;		/* to the response head */
	/* qproxyctl disable: new requests pass it over, whatever else */
	bool				 disabled;
	/* health_check (health.h): failing now, and the current streak */
	bool				 unhealthy;
	unsigned			 health_fails, health_passes;
};

/*
 * A server as its address, whatever backend names it: the connections
 * that requests hold there, in every backend and every configuration
 * still alive, which max_connections counts, so that a reload that
 * renames a backend, or gives the server to another, passes no limit;
 * and the lines of the pools that have the server, each of which a
 * connection that closes makes room for (a reference each).
 */
struct upstream_load {
	struct addr			 addr;
	unsigned			 refs;
	uint64_t			 held;
	struct upstream_line		**lines;
	size_t				 nlines;
	void				*places;	/* the lines' places
							   in lines: a tree */
};

struct upstream_server {
	struct upstream_pool		*pool;
	const struct config_server	*cfg;
	size_t				 nidle;
	struct upstream_conn		*idle;		/* most recent first */
	struct upstream_counters	*ctr;
	struct upstream_load		*load;
	struct health			*health;	/* its checks, if any */
	long				 cw;		/* current weight */
	uint64_t			 hash;		/* of its address, for
							   client_hash */
};

/*
 * A connection to a backend server, owned by an exchange or idle in its
 * server's pool. Its watchers live as long as its descriptor: libev
 * registers a descriptor with epoll again whenever a watcher is set up
 * afresh on it, so handing the connection between the pool and an
 * exchange with the same watchers costs no system call.
 */
typedef void upstream_cb(struct ev_loop *, ev_io *, int);

struct upstream_conn {
	struct upstream_conn		*next, **prevp;	/* when idle */
	double				 idle_since;	/* mono_now */
	struct upstream_server		*server;
	int				 fd;
	ev_io				 rio, wio;
};

/*
 * A request waiting for room at its backend: every server has
 * max_connections open. wake is called when a server of that backend has
 * room (a connection closed, or one went back to the pool), from the middle
 * of whatever freed it: it should only note that the waiter may go on.
 */
struct upstream_waiter {
	TAILQ_ENTRY(upstream_waiter)	 entry;
	void				(*wake)(struct upstream_waiter *);
	uint64_t			 seq;	/* its place: order of coming */
	bool				 queued;
};

/* The lines a closed or pooled connection's server woke, counted (for
   tests). */
extern unsigned long upstream_lines_looked;
/* The lines' places compared, adding and dropping lines (for tests). */
extern unsigned long upstream_places_looked;

/* One pool per configured backend, in config order. */
struct upstream_pool	*upstream_pools_new(struct ev_loop *, struct config *);
void			 upstream_pools_free(struct upstream_pool *);
/*
 * A reload replaced these pools: their idle connections are closed, and
 * those their requests still hold close when released, not pooled (new
 * requests take the new pools only).
 */
void			 upstream_pools_retire(struct upstream_pool *);
/*
 * The health checks of the pools' backends made ready, not begun (all of
 * a reload that can fail comes before it is applied): -1 when out of
 * memory.
 */
int			 upstream_pools_checks(struct upstream_pool *);
/*
 * The pools are the current ones (after upstream_pools_inherit): the
 * health checks made ready begin, and a server no longer checked loses
 * its unhealthy mark.
 */
void			 upstream_pools_activate(struct upstream_pool *);
/* The backend of a server. */
const struct config_backend *upstream_server_backend(
			    const struct upstream_server *);
/*
 * The server for a request's attempt-th try: attempt 0 advances the round
 * robin and notes in *first where it stands; later attempts walk on from
 * there (failover), whatever other requests did to the round robin since.
 */
struct upstream_server	*upstream_pick(struct upstream_pool *, size_t backend,
			    size_t *first, size_t attempt, size_t *nservers,
			    uint64_t client);
/*
 * balance = client_hash: a client's hash for upstream_pick, from its key
 * (clients.h), the same in every process and after a restart.
 */
uint64_t		 upstream_client_hash(const uint8_t *key, size_t len);
const struct config_backend *upstream_backend(struct upstream_pool *,
			    size_t backend);
size_t			 upstream_nservers(struct upstream_pool *,
			    size_t backend);
/* Whether qproxyctl disabled every server of the backend. */
bool			 upstream_all_disabled(struct upstream_pool *,
			    size_t backend);
/* Whether a new connection to s would pass its backend's max_connections. */
bool			 upstream_full(const struct upstream_server *s);
/*
 * Queues w at its backend: at the back, or, again, back at the place it had
 * before it was woken; or takes it out.
 */
void			 upstream_wait(struct upstream_pool *, size_t backend,
			    struct upstream_waiter *w, bool again);
void			 upstream_unwait(struct upstream_pool *, size_t backend,
			    struct upstream_waiter *w);
bool			 upstream_has_waiters(struct upstream_pool *,
			    size_t backend);
/* Whether some server of the backend has an idle connection or room. */
bool			 upstream_has_room(struct upstream_pool *,
			    size_t backend);
/* Passes a wake on to the next waiter: the one woken went away. */
void			 upstream_wake(struct upstream_pool *, size_t backend);
/*
 * A pooled idle connection, its watchers (stopped) now calling cb with
 * data, or NULL. ask: its socket is asked whether the server closed it
 * since the last poll (for a request that cannot be sent again).
 */
struct upstream_conn	*upstream_take_idle(struct upstream_server *,
			    bool ask, upstream_cb *cb, void *data);
/*
 * Starts a non-blocking connect, with watchers (stopped) calling cb with
 * data. Returns the connection (connected or in progress), or NULL with
 * errno set.
 */
struct upstream_conn	*upstream_connect(struct upstream_server *,
			    upstream_cb *cb, void *data);
/*
 * Gives a connection whose last response ended cleanly back to its pool,
 * or closes it when the pool is full.
 */
void			 upstream_release(struct upstream_conn *);
void			 upstream_close(struct upstream_conn *);
/* Whether a failed connect may be retried on another server. */
bool			 upstream_refused(int err);

struct strbuf;
/* Text table, or "\"backends\":[...]" to go inside a JSON object. */
void			 upstream_report(struct upstream_pool *,
			    struct strbuf *, bool json);
/*
 * The servers' counters in Prometheus's text format, a piece at a time:
 * from where cur stands (zeroed at first) until out holds limit bytes;
 * true once all of them went.
 */
struct upstream_metrics_cursor {
	int		 m;		/* the family */
	size_t		 b, i;		/* the backend, its server */
};
bool			 upstream_metrics_part(struct upstream_pool *,
			    struct strbuf *, struct upstream_metrics_cursor *,
			    size_t limit);
/*
 * qproxyctl disable and enable: the servers set aside, by backend name
 * and server as written. The list is the process's: it outlives reloads
 * (a server's pools are marked as they are made), and a worker forked
 * later starts with it; at most UPSTREAM_DISABLED_MAX.
 */
#define UPSTREAM_DISABLED_MAX	1024
bool			 upstream_disabled(const char *backend,
			    const char *server);
/* 0, or -1 when the list is full (or out of memory). */
int			 upstream_set_disabled(const char *backend,
			    const char *server, bool disabled);
/*
 * Failover: the attempt (a place in the request's order, as upstream_pick
 * gives them from first, for client) a request goes on to when the
 * server it took failed. tried has the attempts it took (UPSTREAM_TRIED),
 * the first always. Of those it did not take, not disabled: the first
 * whose server is not passed over (down within fail_timeout, or
 * unhealthy), else the first of the others (none with UPSTREAM_NEXT_OPEN:
 * the request would rather wait for room at a full server); so it goes to
 * a server that may answer before one known not to, and still tries each.
 * The backend's number of servers when none is left. Beyond
 * UPSTREAM_TRIED_MAX servers, the next not disabled from attempt from on.
 * UPSTREAM_NEXT_TAKE: the request goes there (a down server's trial is
 * its).
 */
#define UPSTREAM_TRIED_MAX	64
#define UPSTREAM_TRIED(a)	((a) < UPSTREAM_TRIED_MAX ? \
				    (uint64_t)1 << (a) : 0)
#define UPSTREAM_NEXT_TAKE	0x1
#define UPSTREAM_NEXT_OPEN	0x2
size_t			 upstream_next_attempt(struct upstream_pool *,
			    size_t backend, size_t first, size_t from,
			    uint64_t tried, uint64_t client, int flags);
/* The list's ith: its backend and *server; NULL past its end. */
const char		*upstream_disabled_at(size_t i, const char **server);
/*
 * qproxyctl disable (on false) or enable's "BACKEND SERVER", checked
 * against cfg: the backend's name into backend, *server pointing into
 * args; NULL, or why it is refused (in a static buffer). A server set
 * aside before may be enabled whether cfg still has it or not.
 */
const char		*upstream_check_args(const struct config *cfg,
			    const char *args, bool on, char *backend,
			    size_t size, const char **server);
/* Marks the server in the pools, its idle connections closed when set
   aside; a server they do not have is left alone. */
void			 upstream_mark(struct upstream_pool *,
			    const char *backend, const char *server,
			    bool disabled);
/*
 * Carries counters over a reload, for servers of the same name, and their
 * health checks when they ask the same (health_carry): from's then go on
 * in to, and from has none left to stop.
 */
void			 upstream_pools_inherit(struct upstream_pool *to,
			    struct upstream_pool *from);

#endif
