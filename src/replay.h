/*
 * replay.h: tokens from NEW_TOKEN frames taken once (RFC 9000 8.1.3).
 *
 * Such a token proves its client's address for 24 hours. Taken again, it
 * proves nothing: one seen on the path can be sent from the client's
 * address, forged, and qproxy would answer it with a whole handshake, far
 * more than the anti-amplification limit allows to an address not proven.
 * Each token taken is remembered until it expires, as a keyed hash, in a
 * table of at most max; when it is full, the oldest are forgotten first.
 * The table is the process's: a restart, or another server sharing the
 * secret, takes a token once more.
 */
#ifndef QPROXY_REPLAY_H
#define QPROXY_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct replay;

struct replay	*replay_new(size_t max, double lifetime);
void		 replay_free(struct replay *);
/*
 * A token is known by its keyed hash. It is looked up when it comes, and
 * added only once its connection is under way: a client refused for load,
 * or whose first packet was dropped, may come back with it.
 */
uint64_t	 replay_key(const struct replay *, const uint8_t *token,
		    size_t len);
/* Whether the token was taken before (and has not expired since). */
bool		 replay_seen(struct replay *, uint64_t key, double now);
/*
 * Remembers it until now + lifetime; false when it was there already, or
 * when there is no memory at all for the table.
 */
bool		 replay_add(struct replay *, uint64_t key, double now);
/* How many are remembered at now (the expired go first), and how many
   were forgotten early. */
size_t		 replay_count(struct replay *, double now);
uint64_t	 replay_evicted(const struct replay *);
/* When the last of those forgotten early was added (0 when none was). */
double		 replay_evicted_at(const struct replay *);

#endif
