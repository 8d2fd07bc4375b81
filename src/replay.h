/*
 * replay.h: tokens from NEW_TOKEN frames taken once (RFC 9000 8.1.3).
 *
 * Such a token proves its client's address for 24 hours. Taken again, it
 * proves nothing: one seen on the path can be sent from the client's
 * address, forged, and qproxy would answer it with a whole handshake, far
 * more than the anti-amplification limit allows to an address not proven.
 * Each token taken is remembered until it expires, as a keyed hash, in a
 * table of at most max; when it is full, the oldest are forgotten first.
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
 * Whether the token is seen for the first time (now on, remembered until
 * now + lifetime); false for one seen before, or when memory ran out.
 */
bool		 replay_first(struct replay *, const uint8_t *token,
		    size_t len, double now);
/* How many are remembered now, and how many were forgotten early. */
size_t		 replay_count(const struct replay *);
uint64_t	 replay_evicted(const struct replay *);

#endif
