/*
 * taken.h: keys taken once, in memory shared by the processes forked
 * after it was made: the session tickets resumed with (tls.c), by every
 * worker of a supervisor (workers.h).
 *
 * A ClientHello replayed, with its early data, may reach another worker
 * than the one that took its ticket: a worker started again in its
 * place, or one the kernel steers to when the first is not running (its
 * sender may also choose a new connection ID for the ClientHello, though
 * not for the 0-RTT packets, which it cannot open). A table each worker
 * kept to itself resumed a ticket once per worker.
 * This one is made before the workers are forked, so that those started
 * again later share it too. It is of a fixed size, in a MAP_SHARED
 * mapping, with no lock: each slot is one 64-bit word, changed by
 * compare-and-swap, so that a worker killed at any point leaves the
 * table whole. A key goes into one window of TAKEN_WINDOW slots, by its
 * hash; a window with no slot free or expired lets its oldest go (an
 * eviction: the caller is told when that one was taken).
 */
#ifndef QPROXY_TAKEN_H
#define QPROXY_TAKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TAKEN_WINDOW	16	/* slots a key may be in: 128 bytes */

struct taken;

/*
 * A table of max keys (rounded up to a power of two), each remembered
 * for lifetime seconds, with a random hash key; now, on the monotonic
 * clock, is its start. A key let go for room that was taken less than
 * span seconds before raises the doubt (below) to then + span before it
 * goes (none when span is 0). NULL when it cannot be mapped.
 */
struct taken	*taken_new(size_t max, double lifetime, double span,
		    double now);
/* Unmaps it (in this process only); NULL is a no-op. */
void		 taken_free(struct taken *);
uint64_t	 taken_key(const struct taken *, const uint8_t *, size_t);
/* Whether the key is remembered at now. */
bool		 taken_seen(const struct taken *, uint64_t key, double now);
/*
 * Takes the key at now: 1 when this call took it; 0 when it was taken
 * already, by this process or another, even one that took it at the same
 * moment in another slot (a race has one winner at most); -1 when the
 * window changed under it too often to try again (not taken).
 * *evicted_at is when the key let go for room had been taken (a second's
 * end: never before it), or 0 when none was.
 */
int		 taken_add(struct taken *, uint64_t key, double now,
		    double *evicted_at);
/* How many keys are remembered at now: a walk of the whole table. */
size_t		 taken_count(const struct taken *, double now);
/*
 * A time, shared as the table is, until which what it does not remember
 * may have been taken all the same (tls.c: tickets_unsure): raised to
 * until, never lowered; 0 until raised.
 */
void		 taken_doubt(struct taken *, double until);
double		 taken_doubt_until(const struct taken *);
/*
 * Another such time, for the caller's own use (tls.c: a process's own
 * tickets resume in it, other unknown ones do not).
 */
void		 taken_fresh(struct taken *, double until);
double		 taken_fresh_until(const struct taken *);

#endif
