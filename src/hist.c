/*
 * hist.c: fixed-bucket histograms of durations (hist.h). The bounds run
 * from a millisecond, a backend on the same host, to a minute, a long
 * download; a bucket is found by a walk of at most HIST_NBOUNDS
 * comparisons, so counting costs no more than the line of an access log.
 */
#include "hist.h"

static const struct {
	double		 seconds;
	const char	*text;		/* as "le" shows it */
} hist_bounds[HIST_NBOUNDS] = {
	{ 0.001, "0.001" }, { 0.005, "0.005" }, { 0.01, "0.01" },
	{ 0.025, "0.025" }, { 0.05, "0.05" }, { 0.1, "0.1" },
	{ 0.25, "0.25" }, { 0.5, "0.5" }, { 1, "1" }, { 2.5, "2.5" },
	{ 5, "5" }, { 10, "10" }, { 30, "30" }, { 60, "60" },
};

void
hist_add(struct hist *h, double seconds)
{
	size_t i = 0;

	if (!(seconds >= 0))		/* a clock that stepped back, or NaN */
		seconds = 0;
	while (i < HIST_NBOUNDS && seconds > hist_bounds[i].seconds)
		i++;
	h->bucket[i]++;
	h->count++;
	h->sum += seconds;
}

void
hist_report(struct strbuf *out, const char *name, const char *labels,
    const struct hist *h)
{
	const char *comma = labels[0] != '\0' ? "," : "";
	const char *open = labels[0] != '\0' ? "{" : "";
	const char *close = labels[0] != '\0' ? "}" : "";
	uint64_t below = 0;

	for (size_t i = 0; i < HIST_NBUCKETS; i++) {
		below += h->bucket[i];
		strbuf_printf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", name,
		    labels, comma, i < HIST_NBOUNDS ? hist_bounds[i].text :
		    "+Inf", (unsigned long long)below);
	}
	strbuf_printf(out, "%s_sum%s%s%s %.6f\n", name, open, labels, close,
	    h->sum);
	strbuf_printf(out, "%s_count%s%s%s %llu\n", name, open, labels, close,
	    (unsigned long long)h->count);
}
