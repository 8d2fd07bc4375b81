/*
 * clock.h: the clock that durations are measured on.
 *
 * ev_now is not it: libev keeps it with the wall clock (for its periodic
 * watchers), so the difference of two ev_now spans whatever step the
 * wall clock made between them, an NTP correction or a VM's resume: an
 * hour forward made every timeout measured so run out at once, an hour
 * back made them wait an hour more. libev's timers are on the monotonic
 * clock already; what qproxy measures by subtraction must be too.
 */
#ifndef QPROXY_CLOCK_H
#define QPROXY_CLOCK_H

#include <time.h>

/* Seconds on clock id (0 if it cannot be read). */
static inline double
clock_seconds(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) == -1)
		return 0;
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds on CLOCK_MONOTONIC: only differences mean anything. */
static inline double
mono_now(void)
{
	return clock_seconds(CLOCK_MONOTONIC);
}

#endif
