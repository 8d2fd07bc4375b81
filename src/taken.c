/*
 * taken.c: keys taken once, shared across processes. See taken.h.
 *
 * A slot is a key's tag (its hash's upper 32 bits; the lower choose its
 * window) and the second it was taken in, counted from the table's start
 * plus one, so that 0 is a free slot. A key is taken by a look at its
 * window, then a compare-and-swap into the slot of the smallest second
 * (free, expired, or else the oldest): a choice made from the slots'
 * words alone, not the time, so that two processes taking the same key
 * from the same window pick the same slot, and one of them fails and
 * looks again. If the window changed between them, each may have put it
 * in a slot of its own: a look after the swap finds the other's, and the
 * key counts as taken before (neither may win, never both). The
 * processes share the monotonic clock.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "siphash.h"
#include "taken.h"

#if ATOMIC_LONG_LOCK_FREE != 2 || ATOMIC_LLONG_LOCK_FREE != 2
#error "taken.c needs 64-bit atomics without locks, shared across processes"
#endif

#define TAKEN_TRIES	64	/* swaps lost in a row before giving up */

struct taken {
	uint64_t		 key[2];	/* siphash's */
	double			 begun, lifetime, span;
	size_t			 nwindows;	/* a power of two */
	size_t			 maplen;
	_Atomic uint64_t	 doubt;		/* ms after begun, 0: none */
	_Atomic uint64_t	 fresh;		/* the same */
	_Alignas(64) _Atomic uint64_t slots[];	/* nwindows windows */
};

struct taken *
taken_new(size_t max, double lifetime, double span, double now)
{
	struct taken *t;
	size_t n = TAKEN_WINDOW, len, page = (size_t)sysconf(_SC_PAGESIZE);

	while (n < max)
		n *= 2;
	len = sizeof(*t) + n * sizeof(t->slots[0]);
	len = (len + page - 1) / page * page;
	t = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	    -1, 0);
	if (t == MAP_FAILED)
		return NULL;
	if (getrandom(t->key, sizeof(t->key), 0) != sizeof(t->key)) {
		munmap(t, len);
		return NULL;
	}
	t->begun = now;
	t->lifetime = lifetime;
	t->span = span;
	t->nwindows = n / TAKEN_WINDOW;
	t->maplen = len;
	return t;
}

void
taken_free(struct taken *t)
{
	if (t != NULL)
		munmap(t, t->maplen);
}

uint64_t
taken_key(const struct taken *t, const uint8_t *p, size_t len)
{
	return siphash24(t->key, p, len);
}

/* The index of a key's window's first slot. */
static size_t
window_of(const struct taken *t, uint64_t key)
{
	return (size_t)(key & (t->nwindows - 1)) * TAKEN_WINDOW;
}

/* now's slot second: 1 in the table's first second */
static uint32_t
second_of(const struct taken *t, double now)
{
	double d = now - t->begun;

	if (d < 0.)
		d = 0.;
	if (d > (double)(UINT32_MAX - 1))
		d = (double)(UINT32_MAX - 1);
	return (uint32_t)d + 1;
}

/* When a slot's key was taken, at the latest: the end of its second. */
static double
slot_time(const struct taken *t, uint64_t v)
{
	return t->begun + (double)(uint32_t)v;
}

static bool
slot_live(const struct taken *t, uint64_t v, double now)
{
	return v != 0 && now < slot_time(t, v) + t->lifetime;
}

static bool
slot_is(const struct taken *t, uint64_t v, uint64_t key, double now)
{
	return (uint32_t)(v >> 32) == (uint32_t)(key >> 32) &&
	    slot_live(t, v, now);
}

bool
taken_seen(const struct taken *t, uint64_t key, double now)
{
	const _Atomic uint64_t *w = &t->slots[window_of(t, key)];

	for (size_t i = 0; i < TAKEN_WINDOW; i++)
		if (slot_is(t, atomic_load(&w[i]), key, now))
			return true;
	return false;
}

int
taken_add(struct taken *t, uint64_t key, double now, double *evicted_at)
{
	_Atomic uint64_t *w = &t->slots[window_of(t, key)];
	uint64_t mine = (key >> 32) << 32 | second_of(t, now), v, old;
	size_t i, at;

	*evicted_at = 0.;
	for (int tries = 0; tries < TAKEN_TRIES; tries++) {
		at = 0;
		old = 0;
		for (i = 0; i < TAKEN_WINDOW; i++) {
			v = atomic_load(&w[i]);
			if (slot_is(t, v, key, now))
				return 0;
			if (i == 0 || (uint32_t)v < (uint32_t)old) {
				at = i;
				old = v;
			}
		}
		/* doubted before it goes: no moment without either */
		if (slot_live(t, old, now) && slot_time(t, old) + t->span >
		    now)
			taken_doubt(t, slot_time(t, old) + t->span);
		if (!atomic_compare_exchange_strong(&w[at], &old, mine))
			continue;
		if (slot_live(t, old, now))
			*evicted_at = slot_time(t, old);
		/* another's, put in another slot since the look */
		for (i = 0; i < TAKEN_WINDOW; i++)
			if (i != at && slot_is(t, atomic_load(&w[i]), key, now))
				return 0;
		return 1;
	}
	return -1;
}

size_t
taken_count(const struct taken *t, double now)
{
	size_t n = 0;

	for (size_t i = 0; i < t->nwindows * TAKEN_WINDOW; i++)
		n += slot_live(t, atomic_load(&t->slots[i]), now);
	return n;
}

/* Raises a time kept in ms after begun to until, rounded up. */
static void
raise_to(const struct taken *t, _Atomic uint64_t *at, double until)
{
	uint64_t ms, v;

	if (until <= t->begun)
		return;
	ms = (uint64_t)((until - t->begun) * 1000.) + 1;
	v = atomic_load(at);
	while (v < ms && !atomic_compare_exchange_weak(at, &v, ms))
		;
}

static double
time_of(const struct taken *t, const _Atomic uint64_t *at)
{
	uint64_t ms = atomic_load(at);

	return ms != 0 ? t->begun + (double)ms / 1000. : 0.;
}

void
taken_doubt(struct taken *t, double until)
{
	raise_to(t, &t->doubt, until);
}

double
taken_doubt_until(const struct taken *t)
{
	return time_of(t, &t->doubt);
}

void
taken_fresh(struct taken *t, double until)
{
	raise_to(t, &t->fresh, until);
}

double
taken_fresh_until(const struct taken *t)
{
	return time_of(t, &t->fresh);
}
