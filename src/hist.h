/*
 * hist.h: a histogram of durations in fixed buckets, as qproxyctl metrics
 * shows them: Prometheus's histogram type, the same bounds everywhere so
 * that the workers' and the servers' can be added up.
 */
#ifndef QPROXY_HIST_H
#define QPROXY_HIST_H

#include <stdint.h>

#include "strbuf.h"

/* The buckets' upper bounds, in seconds, and one more for +Inf. */
#define HIST_NBOUNDS	14
#define HIST_NBUCKETS	(HIST_NBOUNDS + 1)

struct hist {
	uint64_t	bucket[HIST_NBUCKETS];	/* each its own, not cumulative */
	uint64_t	count;
	double		sum;			/* seconds */
};

/* Counts one duration of seconds (a negative one as 0). */
void	hist_add(struct hist *, double seconds);

/*
 * The samples of name (its _bucket lines, cumulative, then _sum and
 * _count), each with labels ("backend=\"app\"", or "" for none) before
 * "le". The family's TYPE line is the caller's.
 */
void	hist_report(struct strbuf *, const char *name, const char *labels,
	    const struct hist *);

#endif
