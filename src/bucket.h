/*
 * bucket.h: a budget that refills at a steady rate up to a burst, and
 * gives one unit at a time (stateless resets, a client's stream resets,
 * the refusals a client is sent).
 */
#ifndef QPROXY_BUCKET_H
#define QPROXY_BUCKET_H

#include <stdbool.h>

/*
 * Refills *budget for the time since *at (rate per second, up to burst):
 * whether a unit is there to take. A clock that went back refills
 * nothing, rather than taking the budget below zero.
 */
static inline bool
bucket_fill(double *budget, double *at, double now, double rate,
    double burst)
{
	if (now > *at)
		*budget += (now - *at) * rate;
	if (*budget > burst)
		*budget = burst;
	*at = now;
	return *budget >= 1.;
}

/* bucket_fill, then takes the unit: false when less than one was left. */
static inline bool
bucket_take(double *budget, double *at, double now, double rate,
    double burst)
{
	if (!bucket_fill(budget, at, now, rate, burst))
		return false;
	*budget -= 1.;
	return true;
}

#endif
