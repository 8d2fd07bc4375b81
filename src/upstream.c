/* upstream.c: backend server pools. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <search.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/param.h>
#include <sys/socket.h>

#include "clock.h"
#include "health.h"
#include "log.h"
#include "siphash.h"
#include "stats.h"
#include "strbuf.h"
#include "upstream.h"

struct upstream_pool {
	struct ev_loop			*loop;
	const struct config_backend	*cfg;
	struct upstream_server		*servers;
	size_t				 nservers;
	size_t				 rr;		/* next server */
	size_t				 npools;	/* in the array's first */
	bool				 retired;	/* a reload replaced it */
	struct upstream_line		*line;		/* max_connections */
	int				 notsent;	/* stream_window */
	ev_timer			 sweep;		/* idle_timeout: while
							   any are idle */
};

/*
 * The requests waiting for room at a backend, first come first served.
 * Generations of pools whose backend has the same servers and limit share
 * one line (upstream_pools_inherit); other lines of a server are woken
 * through its load (upstream_load.lines) when one of its connections
 * closes, as its open connections are counted across them.
 */
struct upstream_line {
	unsigned			 refs;
	unsigned			 npools;	/* of the refs */
	TAILQ_HEAD(, upstream_waiter)	 waiters;	/* by seq */
	uint64_t			 round;		/* server_wake's last */
};

/* The waiters' places, across lines: the order they came in. */
static uint64_t waiter_seq;
/* server_wake's calls: a line woken by this one has its number */
static uint64_t wake_rounds;

static void
idle_unlink(struct upstream_conn *c)
{
	struct upstream_server *s = c->server;

	ev_io_stop(s->pool->loop, &c->rio);
	if (c->next != NULL)
		c->next->prevp = c->prevp;
	*c->prevp = c->next;
	s->nidle--;
}

/* An idle connection is watched so that a close by the server is seen. */
static void
idle_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct upstream_conn *c = w->data;

	/* EOF or unasked-for bytes: either way the connection is done. */
	idle_unlink(c);
	upstream_close(c);
}

/* Closes c and the idle connections after it: they have waited longer. */
static void
idle_close_from(struct upstream_conn *c)
{
	struct upstream_conn *next;

	for (; c != NULL; c = next) {
		next = c->next;
		idle_unlink(c);
		upstream_close(c);
	}
}

/*
 * Whether an idle connection has waited idle_timeout: the server may be
 * about to close it (its own keep-alive timeout), and a request sent as it
 * does would be lost. Taken connections are checked; the sweep closes the
 * rest, so that the server does not hold them.
 */
static bool
idle_stale(const struct upstream_pool *p, const struct upstream_conn *c)
{
	return p->cfg->idle_timeout > 0 &&
	    mono_now() - c->idle_since >= p->cfg->idle_timeout;
}

static void
sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct upstream_pool *p = w->data;
	struct upstream_conn *c;
	size_t left = 0;

	for (size_t i = 0; i < p->nservers; i++) {
		for (c = p->servers[i].idle; c != NULL && !idle_stale(p, c);
		    c = c->next)
			;
		idle_close_from(c);
		left += p->servers[i].nidle;
	}
	if (left == 0)
		ev_timer_stop(loop, w);
}

static void
conn_give(struct upstream_conn *c, upstream_cb *cb, void *data)
{
	ev_set_cb(&c->rio, cb);
	ev_set_cb(&c->wio, cb);
	c->rio.data = c->wio.data = data;
}

static void
line_release(struct upstream_line *line)
{
	if (line != NULL && --line->refs == 0)
		free(line);
}

static void
counters_release(struct upstream_counters *ctr)
{
	if (ctr != NULL && --ctr->refs == 0)
		free(ctr);
}

unsigned long upstream_lines_looked, upstream_places_looked;

/* The servers' loads, one an address, of every pool alive: a tree. */
static void *loads;

static int
load_cmp(const void *a, const void *b)
{
	return addr_cmp(&((const struct upstream_load *)a)->addr,
	    &((const struct upstream_load *)b)->addr);
}

static struct upstream_load *
load_get(const struct addr *a)
{
	struct upstream_load key, *ld, **found;

	key.addr = *a;
	if ((found = tfind(&key, &loads, load_cmp)) != NULL) {
		(*found)->refs++;
		return *found;
	}
	if ((ld = calloc(1, sizeof(*ld))) == NULL)
		return NULL;
	ld->addr = *a;
	ld->refs = 1;
	if (tsearch(ld, &loads, load_cmp) == NULL) {
		free(ld);
		return NULL;
	}
	return ld;
}

/* A line's place in a load's lines, found by the line. */
struct load_place {
	struct upstream_line	*line;
	size_t			 i;
};

static int
place_cmp(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)((const struct load_place *)a)->line;
	uintptr_t y = (uintptr_t)((const struct load_place *)b)->line;

	upstream_places_looked++;
	return x < y ? -1 : x > y;
}

static struct load_place *
place_find(struct upstream_load *ld, struct upstream_line *l)
{
	struct load_place key, **found;

	key.line = l;
	found = tfind(&key, &ld->places, place_cmp);
	return found != NULL ? *found : NULL;
}

/* Takes l's place out of ld's tree, if it has one. */
static void
place_forget(struct upstream_load *ld, struct upstream_line *l)
{
	struct load_place *pl;

	if ((pl = place_find(ld, l)) != NULL) {
		tdelete(pl, &ld->places, place_cmp);
		free(pl);
	}
}

static void
load_release(struct upstream_load *ld)
{
	if (ld == NULL || --ld->refs > 0)
		return;
	for (size_t i = 0; i < ld->nlines; i++) {
		place_forget(ld, ld->lines[i]);
		line_release(ld->lines[i]);
	}
	free(ld->lines);
	tdelete(ld, &loads, load_cmp);
	free(ld);
}

/*
 * Notes that the waiters of l may use ld's server. Without memory, they
 * are woken by their own pools' connections only. A line's place is
 * found in a tree: a walk of the lines for each took a reload of 20,000
 * backends of one server 0.47 s.
 */
static void
load_add_line(struct upstream_load *ld, struct upstream_line *l)
{
	struct upstream_line **nl;
	struct load_place *pl;

	if (place_find(ld, l) != NULL)
		return;
	if ((nl = reallocarray(ld->lines, ld->nlines + 1,
	    sizeof(*nl))) == NULL)
		return;
	ld->lines = nl;
	if ((pl = malloc(sizeof(*pl))) == NULL)
		return;
	pl->line = l;
	pl->i = ld->nlines;
	if (tsearch(pl, &ld->places, place_cmp) == NULL) {
		free(pl);
		return;
	}
	ld->lines[ld->nlines++] = l;
	l->refs++;
}

static void
load_drop_line(struct upstream_load *ld, struct upstream_line *l)
{
	struct load_place *pl, *moved;
	size_t i;

	if ((pl = place_find(ld, l)) == NULL)
		return;
	i = pl->i;
	tdelete(pl, &ld->places, place_cmp);
	free(pl);
	/* the last line takes its place */
	if (i != --ld->nlines) {
		ld->lines[i] = ld->lines[ld->nlines];
		if ((moved = place_find(ld, ld->lines[i])) != NULL)
			moved->i = i;
	}
	line_release(l);
}

struct upstream_pool *
upstream_pools_new(struct ev_loop *loop, struct config *cfg)
{
	struct upstream_pool *pools;

	if ((pools = calloc(cfg->nbackends + 1, sizeof(*pools))) == NULL)
		return NULL;
	pools[0].npools = cfg->nbackends;
	for (size_t b = 0; b < cfg->nbackends; b++) {
		struct upstream_pool *p = &pools[b];

		p->loop = loop;
		p->cfg = &cfg->backends[b];
		p->notsent = (int)cfg->stream_window;
		/* every quarter of it: none waits much past it */
		ev_timer_init(&p->sweep, sweep_cb, MIN(1.,
		    p->cfg->idle_timeout / 4), MIN(1.,
		    p->cfg->idle_timeout / 4));
		p->sweep.data = p;
		if ((p->line = calloc(1, sizeof(*p->line))) == NULL) {
			upstream_pools_free(pools);
			return NULL;
		}
		p->line->refs = p->line->npools = 1;
		TAILQ_INIT(&p->line->waiters);
		p->nservers = p->cfg->nservers;
		p->servers = calloc(p->nservers, sizeof(*p->servers));
		if (p->servers == NULL) {
			upstream_pools_free(pools);
			return NULL;
		}
		for (size_t s = 0; s < p->nservers; s++) {
			p->servers[s].pool = p;
			p->servers[s].cfg = &p->cfg->servers[s];
			/* by what it is, not where it stands in the list */
			p->servers[s].hash = upstream_client_hash(
			    (const uint8_t *)p->servers[s].cfg->text,
			    strlen(p->servers[s].cfg->text));
			if ((p->servers[s].ctr = calloc(1,
			    sizeof(*p->servers[s].ctr))) != NULL)
				p->servers[s].ctr->refs = 1;
			if (p->servers[s].ctr == NULL ||
			    (p->servers[s].load = load_get(
			    &p->servers[s].cfg->addr)) == NULL) {
				upstream_pools_free(pools);
				return NULL;
			}
			p->servers[s].ctr->disabled = upstream_disabled(
			    p->cfg->name, p->servers[s].cfg->text);
			load_add_line(p->servers[s].load, p->line);
		}
	}
	return pools;
}

int
upstream_pools_checks(struct upstream_pool *pools)
{
	for (size_t b = 0; b < pools[0].npools; b++) {
		struct upstream_pool *p = &pools[b];

		if (p->cfg->health_check == NULL)
			continue;
		for (size_t s = 0; s < p->nservers; s++)
			if (p->servers[s].health == NULL &&
			    (p->servers[s].health = health_new(p->loop,
			    &p->servers[s])) == NULL)
				return -1;
	}
	return 0;
}

void
upstream_pools_activate(struct upstream_pool *pools)
{
	for (size_t b = 0; b < pools[0].npools; b++)
		for (size_t s = 0; s < pools[b].nservers; s++) {
			struct upstream_server *u = &pools[b].servers[s];

			if (u->health != NULL) {
				health_run(u->health);
				continue;
			}
			/* no longer checked: no check would ever lift it */
			u->ctr->unhealthy = false;
			u->ctr->health_fails = u->ctr->health_passes = 0;
		}
}

const struct config_backend *
upstream_server_backend(const struct upstream_server *s)
{
	return s->pool->cfg;
}

/* Stops the pools' health checks. */
static void
pools_stop_checks(struct upstream_pool *pools)
{
	for (size_t b = 0; b < pools[0].npools; b++) {
		if (pools[b].loop != NULL)
			ev_timer_stop(pools[b].loop, &pools[b].sweep);
		for (size_t s = 0; pools[b].servers != NULL &&
		    s < pools[b].nservers; s++) {
			health_stop(pools[b].servers[s].health);
			pools[b].servers[s].health = NULL;
		}
	}
}

void
upstream_pools_retire(struct upstream_pool *pools)
{
	pools_stop_checks(pools);
	for (size_t b = 0; b < pools[0].npools; b++) {
		pools[b].retired = true;
		for (size_t s = 0; s < pools[b].nservers; s++)
			idle_close_from(pools[b].servers[s].idle);
	}
}

void
upstream_pools_free(struct upstream_pool *pools)
{
	if (pools == NULL)
		return;
	pools_stop_checks(pools);
	for (size_t b = 0; b < pools[0].npools; b++) {
		struct upstream_line *l = pools[b].line;
		/* no pool waits in it any more: the servers forget it */
		bool last = l != NULL && --l->npools == 0;

		for (size_t s = 0; pools[b].servers != NULL &&
		    s < pools[b].nservers; s++) {
			idle_close_from(pools[b].servers[s].idle);
			if (last && pools[b].servers[s].load != NULL)
				load_drop_line(pools[b].servers[s].load, l);
			counters_release(pools[b].servers[s].ctr);
			load_release(pools[b].servers[s].load);
		}
		free(pools[b].servers);
		line_release(l);
	}
	free(pools);
}

const struct config_backend *
upstream_backend(struct upstream_pool *pools, size_t backend)
{
	return pools[backend].cfg;
}

/*
 * Whether a request may start at the server: it is not shown down, or
 * its fail_timeout since its last failure has passed (then that one
 * request tries it again, and others pass it over for another
 * fail_timeout meanwhile: upstream_pick sets down_since when it takes it).
 */
static bool
server_open(const struct upstream_pool *p, const struct upstream_counters *c)
{
	if (c->unhealthy || c->disabled)
		return false;
	return c->state != UPSTREAM_DOWN ||
	    mono_now() - c->down_since >= p->cfg->fail_timeout;
}

/*
 * Whether server k should take the request rather than server best (none
 * yet: SIZE_MAX), by least_conn: the fewest requests under way for its
 * weight, the first in turn of those tied.
 */
static bool
fewer(const struct upstream_pool *p, size_t k, size_t best)
{
	const struct upstream_server *a = &p->servers[k];
	const struct upstream_server *b;

	if (best == SIZE_MAX)
		return true;
	b = &p->servers[best];
	return a->ctr->active * b->cfg->weight <
	    b->ctr->active * a->cfg->weight;
}

/*
 * SipHash's key for client_hash: fixed, so that every worker, and qproxy
 * after a restart, sends a client where it went before. What it hashes is
 * a client's address, which the client chooses only as far as its
 * network lets it.
 */
static const uint64_t client_hash_key[2] = {
	0x7170726f78792063ULL, 0x6c69656e74206861ULL
};

uint64_t
upstream_client_hash(const uint8_t *key, size_t len)
{
	return siphash24(client_hash_key, key, len);
}

/*
 * client_hash: the server's score for the client, the highest taking it
 * (rendezvous hashing: a server that goes away moves only its own
 * clients, each to the next in its own order). With weights, a score of
 * weight / -ln(u), u uniform in (0, 1), takes a server's share by weight.
 */
static double
client_score(const struct upstream_server *sv, uint64_t client, bool weighted)
{
	uint64_t x = client ^ sv->hash;
	double u;

	/* splitmix64's finalizer: every bit of both counts */
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	x ^= x >> 31;
	if (!weighted)
		return (double)(x >> 11);
	u = ((double)(x >> 11) + 0.5) / 9007199254740992.0;	/* 2^53 */
	return (double)sv->cfg->weight / -log(u);
}

/*
 * client_hash, attempt past the first: the client's next server in its
 * own order (the servers not marked backup first, each group by
 * client_score, ties by place in the list; the first taken left out),
 * so that the clients of a server that fails spread over the others as
 * they would if it were gone, instead of all going to the one after it in
 * the list. The same attempt gives the same server, as a request that
 * waited for room asks again.
 */
struct hash_rank {
	size_t	 k;
	int	 backup;
	double	 score;
};

static int
hash_rank_cmp(const void *a, const void *b)
{
	const struct hash_rank *x = a, *y = b;

	if (x->backup != y->backup)
		return x->backup - y->backup;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->k < y->k ? -1 : x->k > y->k;
}

static size_t
hash_next(const struct upstream_pool *p, size_t first, size_t attempt,
    uint64_t client)
{
	struct hash_rank *r;
	size_t k, n = 0, pick;

	/* attempt < nservers: there is an attempt'th of the others */
	if ((r = calloc(p->nservers, sizeof(*r))) == NULL)
		return (first + attempt) % p->nservers;
	for (k = 0; k < p->nservers; k++) {
		if (k == first)
			continue;
		r[n].k = k;
		r[n].backup = p->servers[k].cfg->backup != 0;
		r[n].score = client_score(&p->servers[k], client,
		    p->cfg->weighted);
		n++;
	}
	qsort(r, n, sizeof(*r), hash_rank_cmp);
	pick = r[attempt - 1].k;
	free(r);
	return pick;
}

/*
 * A request starts at a server that server_open allows, of those not
 * marked backup if one is (the backups only when none is): the next in
 * turn; by weight, smoothly (each server's current weight grows by its
 * weight at each pick, the largest takes the request and loses the sum,
 * so that 3:1 goes a a b a, not a a a b); with balance = least_conn,
 * the one with the fewest requests under way for its weight; with
 * client_hash, the client's by client_score. A down server taken tries
 * again; a connect or a response that works shows it up. With none open,
 * the next in turn. The servers after the first are tried in order (in
 * the client's, for client_hash).
 */
struct upstream_server *
upstream_pick(struct upstream_pool *pools, size_t backend, size_t *first,
    size_t attempt, size_t *nservers, uint64_t client)
{
	struct upstream_pool *p = &pools[backend];
	bool least = p->cfg->balance == CONFIG_BALANCE_LEAST_CONN;
	bool hash = p->cfg->balance == CONFIG_BALANCE_CLIENT_HASH;
	bool plain = !least && !hash && !p->cfg->weighted;
	struct upstream_counters *ctr;
	size_t i, k, best = SIZE_MAX;
	double score, best_score = 0;
	long total = 0;

	*nservers = p->nservers;
	if (attempt > 0 && hash && attempt < p->nservers)
		return &p->servers[hash_next(p, *first, attempt, client)];
	if (attempt > 0 || p->nservers == 1)
		return &p->servers[(*first + attempt) % p->nservers];
	p->rr = (p->rr + 1) % p->nservers;
	*first = p->rr;
	for (int backup = 0; backup <= 1 && best == SIZE_MAX; backup++) {
		for (i = 0; i < p->nservers; i++) {
			struct upstream_server *sv;

			k = (p->rr + i) % p->nservers;
			sv = &p->servers[k];
			if (sv->cfg->backup != backup ||
			    !server_open(p, sv->ctr))
				continue;
			if (plain) {
				best = k;
				break;
			}
			if (least) {
				if (fewer(p, k, best))
					best = k;
				continue;
			}
			if (hash) {
				score = client_score(sv, client,
				    p->cfg->weighted);
				if (best == SIZE_MAX || score > best_score) {
					best = k;
					best_score = score;
				}
				continue;
			}
			sv->cw += sv->cfg->weight;
			total += sv->cfg->weight;
			if (best == SIZE_MAX || sv->cw > p->servers[best].cw)
				best = k;
		}
		if (!p->cfg->has_backup)
			break;
	}
	if (best != SIZE_MAX) {
		if (!plain && !least && !hash)
			p->servers[best].cw -= total;
		ctr = p->servers[best].ctr;
		if (ctr->state == UPSTREAM_DOWN)
			ctr->down_since = mono_now();
		*first = p->rr = best;
	}
	return &p->servers[*first];
}

size_t
upstream_next_attempt(struct upstream_pool *pools, size_t backend,
    size_t first, size_t from, uint64_t tried, uint64_t client, int flags)
{
	struct upstream_pool *p = &pools[backend];
	struct upstream_server *sv;
	size_t a, n = p->nservers, later = n, dummy;

	if (n > UPSTREAM_TRIED_MAX) {
		for (a = from; a < n; a++)
			if (!upstream_pick(pools, backend, &first, a, &dummy,
			    client)->ctr->disabled)
				return a;
		return n;
	}
	for (a = 1; a < n; a++) {
		if (tried & UPSTREAM_TRIED(a))
			continue;
		sv = upstream_pick(pools, backend, &first, a, &dummy, client);
		if (sv->ctr->disabled)
			continue;
		if (!server_open(p, sv->ctr)) {
			if (later == n && !(flags & UPSTREAM_NEXT_OPEN))
				later = a;
			continue;
		}
		/* a down server's trial, as upstream_pick takes one */
		if ((flags & UPSTREAM_NEXT_TAKE) &&
		    sv->ctr->state == UPSTREAM_DOWN)
			sv->ctr->down_since = mono_now();
		return a;
	}
	return later;
}

size_t
upstream_nservers(struct upstream_pool *pools, size_t backend)
{
	return pools[backend].nservers;
}

bool
upstream_all_disabled(struct upstream_pool *pools, size_t backend)
{
	const struct upstream_pool *p = &pools[backend];

	for (size_t i = 0; i < p->nservers; i++)
		if (!p->servers[i].ctr->disabled)
			return false;
	return true;
}

bool
upstream_full(const struct upstream_server *s)
{
	size_t max = s->pool->cfg->max_conns;

	/*
	 * the open ones: those requests hold (in any backend and generation),
	 * and idle in this pool
	 */
	return max > 0 && s->load->held + s->nidle >= max;
}

void
upstream_wait(struct upstream_pool *pools, size_t backend,
    struct upstream_waiter *w, bool again)
{
	struct upstream_line *l = pools[backend].line;
	struct upstream_waiter *x;

	if (again) {
		/*
		 * Back to its place: before those who came after it (woken
		 * together, they come back in the order they were woken).
		 */
		TAILQ_FOREACH(x, &l->waiters, entry)
			if (x->seq > w->seq)
				break;
		if (x != NULL)
			TAILQ_INSERT_BEFORE(x, w, entry);
		else
			TAILQ_INSERT_TAIL(&l->waiters, w, entry);
	} else {
		w->seq = ++waiter_seq;
		TAILQ_INSERT_TAIL(&l->waiters, w, entry);
	}
	w->queued = true;
	stats.upstream_queued++;
}

void
upstream_unwait(struct upstream_pool *pools, size_t backend,
    struct upstream_waiter *w)
{
	if (!w->queued)
		return;
	TAILQ_REMOVE(&pools[backend].line->waiters, w, entry);
	w->queued = false;
	stats.upstream_queued--;
}


/* A server of the line's has room, or an idle connection: its first goes on. */
static void
line_wake(struct upstream_line *l)
{
	struct upstream_waiter *w;

	if ((w = TAILQ_FIRST(&l->waiters)) == NULL)
		return;
	TAILQ_REMOVE(&l->waiters, w, entry);
	w->queued = false;
	stats.upstream_queued--;
	w->wake(w);
}

static void
pool_wake(struct upstream_pool *p)
{
	line_wake(p->line);
}

/* Lines by their first waiters' places. */
static int
line_first_cmp(const void *a, const void *b)
{
	uint64_t x = TAILQ_FIRST(&(*(struct upstream_line *const *)a)->
	    waiters)->seq;
	uint64_t y = TAILQ_FIRST(&(*(struct upstream_line *const *)b)->
	    waiters)->seq;

	return x < y ? -1 : x > y;
}

/* The line of ld's lines (and own) that is i-th, own last. */
static struct upstream_line *
load_line(const struct upstream_load *ld, struct upstream_line *own,
    size_t i)
{
	upstream_lines_looked++;
	return i < ld->nlines ? ld->lines[i] : own;
}

/*
 * A connection to s closed, or went back to its pool: room at the server
 * for every line that has it, as the connections requests hold there are
 * counted across backends and generations (across a reload that changed
 * the backend's servers or max_connections, the new requests wait in a
 * line of their own for the room the old ones make, and the reverse).
 * The lines' first waiters are woken in the order they came, which the
 * woken take their turns in: with its own line first, the pool's next
 * request took each room, and a request in another line that came before
 * it waited for as long as that line had one. The lines that have one
 * are sorted by it: picking the first again for each took 1,000 lines
 * a million looks, which is done only without memory to sort.
 */
static void
server_wake(struct upstream_server *s)
{
	struct upstream_load *ld = s->load;
	struct upstream_line *l, *next, *small[16], **v = small;
	uint64_t round;
	size_t nv = 0, n = ld->nlines + 1;	/* its own too, which ld
						   lacks without memory */

	/*
	 * None waits in any line: the lines of a server that many backends
	 * name are not walked (10,000 took each request 20 us more).
	 */
	if (stats.upstream_queued == 0)
		return;
	round = ++wake_rounds;
	if (n > sizeof(small) / sizeof(small[0]) &&
	    (v = reallocarray(NULL, n, sizeof(*v))) == NULL) {
		for (;;) {
			next = NULL;
			for (size_t i = 0; i < n; i++) {
				l = load_line(ld, s->pool->line, i);
				if (l->round != round &&
				    !TAILQ_EMPTY(&l->waiters) &&
				    (next == NULL ||
				    TAILQ_FIRST(&l->waiters)->seq <
				    TAILQ_FIRST(&next->waiters)->seq))
					next = l;
			}
			if (next == NULL)
				return;
			next->round = round;
			line_wake(next);
		}
	}
	for (size_t i = 0; i < n; i++) {
		l = load_line(ld, s->pool->line, i);
		if (l->round != round && !TAILQ_EMPTY(&l->waiters)) {
			l->round = round;
			v[nv++] = l;
		}
	}
	if (nv > 1)
		qsort(v, nv, sizeof(*v), line_first_cmp);
	for (size_t i = 0; i < nv; i++)
		line_wake(v[i]);
	if (v != small)
		free(v);
}

bool
upstream_has_room(struct upstream_pool *pools, size_t backend)
{
	const struct upstream_pool *p = &pools[backend];

	for (size_t i = 0; i < p->nservers; i++)
		if (p->servers[i].nidle > 0 || !upstream_full(&p->servers[i]))
			return true;
	return false;
}

bool
upstream_has_waiters(struct upstream_pool *pools, size_t backend)
{
	return !TAILQ_EMPTY(&pools[backend].line->waiters);
}

void
upstream_wake(struct upstream_pool *pools, size_t backend)
{
	pool_wake(&pools[backend]);
}

/*
 * Whether an idle connection may carry a request: not after a close or
 * unasked-for bytes that the loop's last poll saw (the idle watcher's
 * event, pending until it runs, later in this turn) or, when asked, that
 * its socket holds now: the close may have come after that poll, while
 * this turn's requests were read. A request that may go again (exchange.c
 * retries it once on a new connection, RFC 9110 9.2.2) need not ask,
 * which spares it a system call; what comes later races with the request
 * as it would after any check.
 */
static bool
idle_usable(struct upstream_conn *c, bool ask)
{
	char byte;

	if (ev_is_pending(&c->rio))
		return false;
	return !ask || (recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == -1 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK));
}

struct upstream_conn *
upstream_take_idle(struct upstream_server *s, bool ask, upstream_cb *cb,
    void *data)
{
	struct upstream_conn *c;
	bool usable;

	if (s->idle != NULL && idle_stale(s->pool, s->idle))
		idle_close_from(s->idle);	/* the newest first */
	while ((c = s->idle) != NULL) {
		usable = idle_usable(c, ask);
		idle_unlink(c);
		if (!usable) {
			upstream_close(c);
			continue;
		}
		stats.upstream_reused++;
		conn_give(c, cb, data);
		return c;
	}
	return NULL;
}

struct upstream_conn *
upstream_connect(struct upstream_server *s, upstream_cb *cb, void *data)
{
	const struct addr *a = &s->cfg->addr;
	struct upstream_conn *c;
	int fd, one = 1, saved;

	fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		return NULL;
	/* a connection begun: not one that got no socket (no descriptor) */
	stats.upstream_connects++;
	if (a->u.sa.sa_family != AF_UNIX) {
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
		/*
		 * Request bytes the kernel takes are credited to the client:
		 * unsent, they would wait in a send buffer that grows to
		 * tcp_wmem's maximum (4 MB), outside every bound of qproxy's.
		 */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT,
		    &s->pool->notsent, sizeof(s->pool->notsent));
	}
	if ((connect(fd, &a->u.sa, a->len) == -1 && errno != EINPROGRESS) ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		saved = errno;
		close(fd);
		errno = saved;
		return NULL;
	}
	c->server = s;
	c->fd = fd;
	stats.upstream_conns_current++;
	ev_io_init(&c->rio, cb, fd, EV_READ);
	ev_io_init(&c->wio, cb, fd, EV_WRITE);
	c->rio.data = c->wio.data = data;
	return c;
}

void
upstream_release(struct upstream_conn *c)
{
	struct upstream_server *s = c->server;

	/* a retired pool's connections would never be taken again */
	if (s->nidle >= s->pool->cfg->max_idle || s->pool->retired) {
		upstream_close(c);
		return;
	}
	/* rio may still be active for the exchange: it only changes hands */
	ev_io_stop(s->pool->loop, &c->wio);
	c->idle_since = mono_now();
	if (s->pool->cfg->idle_timeout > 0 && !ev_is_active(&s->pool->sweep))
		ev_timer_start(s->pool->loop, &s->pool->sweep);
	c->next = s->idle;
	if (c->next != NULL)
		c->next->prevp = &c->next;
	c->prevp = &s->idle;
	s->idle = c;
	s->nidle++;
	conn_give(c, idle_cb, c);
	ev_io_start(s->pool->loop, &c->rio);
	/* the pool's own take it; the others have room for one more */
	server_wake(s);
}

void
upstream_close(struct upstream_conn *c)
{
	struct upstream_server *s = c->server;

	ev_io_stop(s->pool->loop, &c->rio);
	ev_io_stop(s->pool->loop, &c->wio);
	close(c->fd);
	free(c);
	stats.upstream_conns_current--;
	server_wake(s);
}

static const char *
state_name(const struct upstream_counters *k)
{
	if (k->disabled)
		return "disabled";
	if (k->unhealthy)
		return "unhealthy";
	switch (k->state) {
	case UPSTREAM_UP:
		return "up";
	case UPSTREAM_DOWN:
		return "down";
	default:
		return "unknown";
	}
}

void
upstream_report(struct upstream_pool *pools, struct strbuf *out, bool json)
{
	int wname = 16, wserver = 32;

	if (json)
		strbuf_printf(out, "\"backends\":[");
	else {
		/* the columns as wide as their longest value */
		for (size_t b = 0; b < pools[0].npools; b++) {
			wname = MAX(wname, (int)strlen(pools[b].cfg->name));
			for (size_t i = 0; i < pools[b].nservers; i++)
				wserver = MAX(wserver, (int)strlen(
				    pools[b].servers[i].cfg->text));
		}
		/* RESPONSES before TTFB_MS: merge.c weighs the mean by it */
		strbuf_printf(out, "%-*s %-*s %-9s %6s %9s %8s %5s %9s %8s\n",
		    wname, "BACKEND", wserver, "SERVER", "STATE", "ACTIVE",
		    "REQUESTS", "FAILURES", "IDLE", "RESPONSES", "TTFB_MS");
	}
	for (size_t b = 0; b < pools[0].npools; b++) {
		struct upstream_pool *p = &pools[b];

		if (json) {
			strbuf_printf(out, "%s{\"name\":", b ? "," : "");
			strbuf_json_string(out, p->cfg->name);
			strbuf_printf(out, ",\"servers\":[");
		}
		for (size_t i = 0; i < p->nservers; i++) {
			struct upstream_server *s = &p->servers[i];
			const struct upstream_counters *k = s->ctr;
			double ttfb = k->ttfb.count ?
			    1000. * k->ttfb.sum / (double)k->ttfb.count : 0.;

			if (!json) {
				strbuf_printf(out, "%-*s %-*s %-9s %6llu %9llu "
				    "%8llu %5zu %9llu %8.2f\n", wname,
				    p->cfg->name, wserver, s->cfg->text,
				    state_name(k), (unsigned long long)k->active,
				    (unsigned long long)k->requests,
				    (unsigned long long)k->failures, s->nidle,
				    (unsigned long long)k->ttfb.count, ttfb);
				continue;
			}
			strbuf_printf(out, "%s{\"address\":", i ? "," : "");
			strbuf_json_string(out, s->cfg->text);
			strbuf_printf(out, ",\"state\":\"%s\",\"active\":%llu,"
			    "\"requests\":%llu,\"failures\":%llu,\"idle\":%zu,"
			    "\"responses\":%llu,\"ttfb_avg_ms\":%.3f,"
			    "\"weight\":%u,\"backup\":%s}",
			    state_name(k), (unsigned long long)k->active,
			    (unsigned long long)k->requests,
			    (unsigned long long)k->failures, s->nidle,
			    (unsigned long long)k->ttfb.count, ttfb,
			    s->cfg->weight, s->cfg->backup ? "true" : "false");
		}
		if (json)
			strbuf_printf(out, "]}");
	}
	if (json)
		strbuf_printf(out, "]");
}

/* The families of upstream_report_metrics, in their order. */
enum server_metric {
	SM_DOWN, SM_ACTIVE, SM_REQUESTS, SM_FAILURES, SM_IDLE, SM_TTFB, SM_N
};

static const struct {
	const char	*name;
	const char	*type;
} server_metrics[SM_N] = {
	[SM_DOWN] = { "down", "gauge" },
	[SM_ACTIVE] = { "active", "gauge" },
	[SM_REQUESTS] = { "requests_total", "counter" },
	[SM_FAILURES] = { "failures_total", "counter" },
	[SM_IDLE] = { "idle_connections", "gauge" },
	[SM_TTFB] = { "ttfb_seconds", "histogram" },
};

static uint64_t
server_metric(enum server_metric m, const struct upstream_server *s)
{
	const struct upstream_counters *k = s->ctr;

	switch (m) {
	case SM_DOWN:
		return k->state == UPSTREAM_DOWN || k->unhealthy ||
		    k->disabled;
	case SM_ACTIVE:
		return k->active;
	case SM_REQUESTS:
		return k->requests;
	case SM_FAILURES:
		return k->failures;
	case SM_IDLE:
	default:
		return s->nidle;
	}
}

/*
 * Whether each server is down (1) or not, its requests under way, its
 * requests and failures so far, its idle connections, and its times to
 * the response head as a histogram; each family under its TYPE line,
 * with a sample (or a histogram's samples) for every server. A piece
 * ends after the sample that took out to limit, never on a TYPE line.
 */
bool
upstream_metrics_part(struct upstream_pool *pools, struct strbuf *out,
    struct upstream_metrics_cursor *cur, size_t limit)
{
	struct strbuf labels;
	bool all = true;

	strbuf_init(&labels, 4096);
	for (; cur->m < SM_N; cur->m++, cur->b = cur->i = 0) {
		const char *name = server_metrics[cur->m].name;
		char fam[64];

		snprintf(fam, sizeof(fam), "qproxy_backend_server_%s", name);
		if (cur->b == 0 && cur->i == 0) {
			if (out->len >= limit) {
				all = false;
				break;
			}
			strbuf_printf(out, "# TYPE %s %s\n", fam,
			    server_metrics[cur->m].type);
		}
		for (; cur->b < pools[0].npools; cur->b++, cur->i = 0) {
			struct upstream_pool *p = &pools[cur->b];

			for (; cur->i < p->nservers; cur->i++) {
				struct upstream_server *s = &p->servers[cur->i];

				if (out->len >= limit && (cur->b > 0 ||
				    cur->i > 0)) {
					all = false;
					goto done;
				}
				strbuf_clear(&labels);
				strbuf_printf(&labels, "backend=");
				strbuf_metric_label(&labels, p->cfg->name);
				strbuf_printf(&labels, ",server=");
				strbuf_metric_label(&labels, s->cfg->text);
				/* (labels cut short) */
				out->nomem |= labels.nomem;
				if (cur->m == SM_TTFB)
					hist_report(out, fam,
					    strbuf_str(&labels), &s->ctr->ttfb);
				else
					strbuf_printf(out, "%s{%s} %llu\n",
					    fam, strbuf_str(&labels),
					    (unsigned long long)
					    server_metric(cur->m, s));
			}
		}
	}
done:
	strbuf_free(&labels);
	return all;
}

static struct {
	char	*backend, *server;
} disabled[UPSTREAM_DISABLED_MAX];
static size_t ndisabled;

static ssize_t
disabled_find(const char *backend, const char *server)
{
	for (size_t i = 0; i < ndisabled; i++)
		if (strcmp(disabled[i].backend, backend) == 0 &&
		    strcmp(disabled[i].server, server) == 0)
			return (ssize_t)i;
	return -1;
}

bool
upstream_disabled(const char *backend, const char *server)
{
	return ndisabled > 0 && disabled_find(backend, server) != -1;
}

int
upstream_set_disabled(const char *backend, const char *server, bool on)
{
	ssize_t i = disabled_find(backend, server);

	if (!on) {
		if (i != -1) {
			free(disabled[i].backend);
			free(disabled[i].server);
			disabled[i] = disabled[--ndisabled];
		}
		return 0;
	}
	if (i != -1)
		return 0;
	if (ndisabled == UPSTREAM_DISABLED_MAX)
		return -1;
	if ((disabled[ndisabled].backend = strdup(backend)) == NULL ||
	    (disabled[ndisabled].server = strdup(server)) == NULL) {
		free(disabled[ndisabled].backend);
		return -1;
	}
	ndisabled++;
	return 0;
}

const char *
upstream_disabled_at(size_t i, const char **server)
{
	if (i >= ndisabled)
		return NULL;
	*server = disabled[i].server;
	return disabled[i].backend;
}

const char *
upstream_check_args(const struct config *cfg, const char *args, bool on,
    char *backend, size_t size, const char **server)
{
	static char why[256];
	size_t n = strcspn(args, " "), b, i;

	if (args[n] != ' ' || n == 0 || n >= size || args[n + 1] == '\0')
		return "expected BACKEND SERVER";
	memcpy(backend, args, n);
	backend[n] = '\0';
	*server = args + n + 1;
	if (on && upstream_disabled(backend, *server))
		return NULL;
	for (b = 0; b < cfg->nbackends; b++)
		if (strcmp(cfg->backends[b].name, backend) == 0)
			break;
	if (b == cfg->nbackends) {
		snprintf(why, sizeof(why), "no backend %.64s", backend);
		return why;
	}
	for (i = 0; i < cfg->backends[b].nservers; i++)
		if (strcmp(cfg->backends[b].servers[i].text, *server) == 0)
			break;
	if (i == cfg->backends[b].nservers) {
		snprintf(why, sizeof(why), "no server %.128s in backend %.64s",
		    *server, backend);
		return why;
	}
	if (!on && !upstream_disabled(backend, *server) &&
	    ndisabled == UPSTREAM_DISABLED_MAX) {
		snprintf(why, sizeof(why), "more than %d servers disabled",
		    UPSTREAM_DISABLED_MAX);
		return why;
	}
	return NULL;
}

void
upstream_mark(struct upstream_pool *pools, const char *backend,
    const char *server, bool on)
{
	for (size_t b = 0; b < pools[0].npools; b++) {
		struct upstream_pool *p = &pools[b];

		if (strcmp(p->cfg->name, backend) != 0)
			continue;
		for (size_t i = 0; i < p->nservers; i++) {
			struct upstream_server *s = &p->servers[i];

			if (strcmp(s->cfg->text, server) != 0)
				continue;
			s->ctr->disabled = on;
			if (on)
				idle_close_from(s->idle);
		}
	}
}

/* The same servers, in the same order, under the same max_connections. */
static bool
same_shape(const struct config_backend *a, const struct config_backend *b)
{
	if (a->nservers != b->nservers || a->max_conns != b->max_conns)
		return false;
	for (size_t i = 0; i < a->nservers; i++)
		if (!addr_equal(&a->servers[i].addr, &b->servers[i].addr))
			return false;
	return true;
}

#define POOL_WALK	8	/* servers or fewer: walked, not sorted */

static int
server_cmp(const void *a, const void *b)
{
	return strcmp((*(struct upstream_server *const *)a)->cfg->text,
	    (*(struct upstream_server *const *)b)->cfg->text);
}

/*
 * The server of from written as t's (a backend names a server once), or
 * NULL: looked up in by_text, from's servers sorted by it, else walked.
 */
static struct upstream_server *
server_find(struct upstream_pool *from, struct upstream_server **by_text,
    struct upstream_server *t)
{
	struct upstream_server **found;

	if (by_text != NULL) {
		found = bsearch(&t, by_text, from->nservers, sizeof(*by_text),
		    server_cmp);
		return found != NULL ? *found : NULL;
	}
	for (size_t j = 0; j < from->nservers; j++)
		if (strcmp(t->cfg->text, from->servers[j].cfg->text) == 0)
			return &from->servers[j];
	return NULL;
}

/*
 * A backend's counters, line and health go on in to, of the same name.
 * The servers of a large backend are looked up by their text (a walk of
 * them for each took 10,000 servers 0.2 s), a few walked, or all without
 * memory to sort them.
 */
static void
pool_inherit(struct upstream_pool *to, struct upstream_pool *from)
{
	struct upstream_server **by_text = NULL, *f;
	struct health *h;

	/*
	 * One line only for the same servers and limit: a waiter tries its
	 * own configuration's servers, and one woken for room it cannot
	 * take would go back to the front, ahead of those who could.
	 */
	if (same_shape(to->cfg, from->cfg)) {
		struct upstream_line *old = to->line;

		to->line = from->line;
		to->line->refs++;
		to->line->npools++;
		old->npools--;
		for (size_t i = 0; i < to->nservers; i++) {
			load_drop_line(to->servers[i].load, old);
			load_add_line(to->servers[i].load, to->line);
		}
		line_release(old);
	}
	if (from->nservers > POOL_WALK && (by_text = reallocarray(NULL,
	    from->nservers, sizeof(*by_text))) != NULL) {
		for (size_t j = 0; j < from->nservers; j++)
			by_text[j] = &from->servers[j];
		qsort(by_text, from->nservers, sizeof(*by_text), server_cmp);
	}
	for (size_t i = 0; i < to->nservers; i++) {
		struct upstream_server *t = &to->servers[i];

		if ((f = server_find(from, by_text, t)) == NULL)
			continue;
		counters_release(t->ctr);
		t->ctr = f->ctr;
		t->ctr->refs++;
		if (t->health != NULL && f->health != NULL &&
		    (h = health_carry(t->health, f->health)) != NULL) {
			t->health = h;
			f->health = NULL;
		}
	}
	free(by_text);
}

static int
pool_cmp(const void *a, const void *b)
{
	return strcmp((*(struct upstream_pool *const *)a)->cfg->name,
	    (*(struct upstream_pool *const *)b)->cfg->name);
}

/*
 * Each backend is looked up among the old ones sorted by name (a walk of
 * them for each took 10,000 backends half a second), or walked when there
 * is no memory to sort.
 */
void
upstream_pools_inherit(struct upstream_pool *to, struct upstream_pool *from)
{
	size_t n = from[0].npools;
	struct upstream_pool **by_name = NULL, **found, *f;

	if (n > 0 && (by_name = reallocarray(NULL, n, sizeof(*by_name))) !=
	    NULL) {
		for (size_t c = 0; c < n; c++)
			by_name[c] = &from[c];
		qsort(by_name, n, sizeof(*by_name), pool_cmp);
	}
	for (size_t b = 0; b < to[0].npools; b++) {
		f = NULL;
		if (by_name != NULL) {
			struct upstream_pool *k = &to[b];

			found = bsearch(&k, by_name, n, sizeof(*by_name),
			    pool_cmp);
			f = found != NULL ? *found : NULL;
		} else
			for (size_t c = 0; c < n && f == NULL; c++)
				if (strcmp(to[b].cfg->name,
				    from[c].cfg->name) == 0)
					f = &from[c];
		if (f != NULL)
			pool_inherit(&to[b], f);
	}
	free(by_name);
}

bool
upstream_refused(int err)
{
	switch (err) {
	case ECONNREFUSED:
	case ENOENT:		/* a Unix socket that is not there */
	case EAGAIN:		/* one whose listen queue is full */
	case ECONNRESET:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EADDRNOTAVAIL:
		return true;
	default:
		return false;
	}
}
