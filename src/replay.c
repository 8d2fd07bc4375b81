/*
 * replay.c: NEW_TOKEN tokens taken once. The tokens remembered are a ring
 * in the order they were taken, which is also the order they expire in
 * (each is kept for the same lifetime), with hash chains through it for
 * the lookup. The ring grows by doubling up to max, so an idle server
 * holds little.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "replay.h"
#include "siphash.h"

#define REPLAY_MIN	256

struct replay_entry {
	uint64_t	 hash;
	double		 expires;
	uint32_t	 next;		/* ring index + 1 in the chain; 0: end */
};

struct replay {
	uint64_t		 key[2];
	struct replay_entry	*ring;
	uint32_t		*chains;	/* as many as the ring's size */
	size_t			 size, max;	/* powers of two */
	size_t			 head, n;
	double			 lifetime;
	uint64_t		 evicted;
	double			 evicted_at;	/* the last's time added */
};

struct replay *
replay_new(size_t max, double lifetime)
{
	struct replay *r;
	size_t m = REPLAY_MIN;

	while (m < max)
		m *= 2;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	if (getrandom(r->key, sizeof(r->key), 0) != sizeof(r->key)) {
		free(r);
		return NULL;
	}
	r->max = m;
	r->lifetime = lifetime;
	return r;
}

void
replay_free(struct replay *r)
{
	if (r == NULL)
		return;
	free(r->ring);
	free(r->chains);
	free(r);
}

static uint32_t *
chain_of(struct replay *r, uint64_t hash)
{
	return &r->chains[hash & (r->size - 1)];
}

/* Forgets the oldest entry. */
static void
replay_drop(struct replay *r)
{
	struct replay_entry *e = &r->ring[r->head];
	uint32_t *p = chain_of(r, e->hash);

	while (*p != r->head + 1)
		p = &r->ring[*p - 1].next;
	*p = e->next;
	r->head = (r->head + 1) & (r->size - 1);
	r->n--;
}

/* Twice the room, the entries in order from index 0. */
static bool
replay_grow(struct replay *r)
{
	size_t size = r->size ? r->size * 2 : REPLAY_MIN, i;
	struct replay_entry *ring;
	uint32_t *chains;

	ring = calloc(size, sizeof(*ring));
	chains = calloc(size, sizeof(*chains));
	if (ring == NULL || chains == NULL) {
		free(ring);
		free(chains);
		return false;
	}
	for (i = 0; i < r->n; i++)
		ring[i] = r->ring[(r->head + i) & (r->size - 1)];
	free(r->ring);
	free(r->chains);
	r->ring = ring;
	r->chains = chains;
	r->size = size;
	r->head = 0;
	for (i = 0; i < r->n; i++) {
		uint32_t *c = chain_of(r, ring[i].hash);

		ring[i].next = *c;
		*c = (uint32_t)i + 1;
	}
	return true;
}

uint64_t
replay_key(const struct replay *r, const uint8_t *token, size_t len)
{
	return siphash24(r->key, token, len);
}

/* Forgets those expired. */
static void
replay_expire(struct replay *r, double now)
{
	while (r->n > 0 && r->ring[r->head].expires <= now)
		replay_drop(r);
}

bool
replay_seen(struct replay *r, uint64_t hash, double now)
{
	const struct replay_entry *e;

	replay_expire(r, now);
	if (r->size == 0)
		return false;
	for (uint32_t i = *chain_of(r, hash); i != 0; i = e->next) {
		e = &r->ring[i - 1];
		if (e->hash == hash)
			return true;
	}
	return false;
}

bool
replay_add(struct replay *r, uint64_t hash, double now)
{
	struct replay_entry *e;
	size_t at;

	if (replay_seen(r, hash, now))
		return false;
	if (r->n == r->size && (r->size == r->max || !replay_grow(r))) {
		if (r->size == 0)
			return false;	/* no memory at all */
		r->evicted_at = r->ring[r->head].expires - r->lifetime;
		replay_drop(r);
		r->evicted++;
	}
	at = (r->head + r->n) & (r->size - 1);
	e = &r->ring[at];
	e->hash = hash;
	e->expires = now + r->lifetime;
	e->next = *chain_of(r, hash);
	*chain_of(r, hash) = (uint32_t)at + 1;
	r->n++;
	return true;
}

size_t
replay_count(struct replay *r, double now)
{
	replay_expire(r, now);
	return r->n;
}

uint64_t
replay_evicted(const struct replay *r)
{
	return r->evicted;
}

double
replay_evicted_at(const struct replay *r)
{
	return r->evicted_at;
}
