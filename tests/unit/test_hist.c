/*
 * test_hist.c: durations counted in their buckets (hist.c), bounds
 * included in the bucket they close, the buckets shown cumulative as
 * Prometheus reads them, and two workers' histograms added up by
 * merge.c into the histogram of all their durations.
 */
#include <stdio.h>
#include <string.h>

#include "hist.h"
#include "merge.h"
#include "unit.h"

/* The value of the sample line that begins with prefix, or -1. */
static double
sample(const char *text, const char *prefix)
{
	const char *p = text;
	double v;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, prefix, strlen(prefix)) == 0 &&
		    sscanf(p + strlen(prefix), " %lf", &v) == 1)
			return v;
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	}
	return -1;
}

static void
report(const struct hist *h, const char *labels, struct strbuf *out)
{
	strbuf_init(out, 65536);
	hist_report(out, "t", labels, h);
}

int
main(void)
{
	struct hist a, b, all;
	struct strbuf ta, tb, tall, merged;
	const char *texts[2];
	const double durations[] = { 0.0004, 0.001, 0.0011, 0.3, 1, 61, -1 };

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&all, 0, sizeof(all));
	for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
		hist_add(i % 2 ? &a : &b, durations[i]);
		hist_add(&all, durations[i]);
	}
	CHECK_EQ_INT(all.count, 7);
	CHECK(all.sum > 62.30 && all.sum < 62.31);	/* -1 counted as 0 */

	report(&all, "", &tall);
	/* 0.001 is in the bucket it bounds; -1 is 0 */
	CHECK_EQ_INT(sample(strbuf_str(&tall), "t_bucket{le=\"0.001\"}"), 3);
	CHECK_EQ_INT(sample(strbuf_str(&tall), "t_bucket{le=\"0.005\"}"), 4);
	CHECK_EQ_INT(sample(strbuf_str(&tall), "t_bucket{le=\"0.25\"}"), 4);
	CHECK_EQ_INT(sample(strbuf_str(&tall), "t_bucket{le=\"0.5\"}"), 5);
	CHECK_EQ_INT(sample(strbuf_str(&tall), "t_bucket{le=\"1\"}"), 6);
	CHECK_EQ_INT(sample(strbuf_str(&tall), "t_bucket{le=\"60\"}"), 6);
	CHECK_EQ_INT(sample(strbuf_str(&tall), "t_bucket{le=\"+Inf\"}"), 7);
	CHECK_EQ_INT(sample(strbuf_str(&tall), "t_count"), 7);
	CHECK(strstr(strbuf_str(&tall), "t_sum 62.302500\n") != NULL);

	/* labels come first, and the sum and count have them too */
	report(&a, "backend=\"app\"", &ta);
	CHECK(strncmp(strbuf_str(&ta),
	    "t_bucket{backend=\"app\",le=\"0.001\"} 1\n", 37) == 0);
	CHECK(strstr(strbuf_str(&ta), "\nt_sum{backend=\"app\"} ") != NULL);
	CHECK(strstr(strbuf_str(&ta), "\nt_count{backend=\"app\"} 3\n") !=
	    NULL);
	strbuf_free(&ta);

	/* two workers' texts merged are the text of all their durations */
	report(&a, "", &ta);
	report(&b, "", &tb);
	texts[0] = strbuf_str(&ta);
	texts[1] = strbuf_str(&tb);
	strbuf_init(&merged, 65536);
	CHECK_EQ_INT(merge_replies(texts, 2, &merged), 0);
	CHECK_EQ_STR(strbuf_str(&merged), strbuf_str(&tall));

	strbuf_free(&ta);
	strbuf_free(&tb);
	strbuf_free(&tall);
	strbuf_free(&merged);
	printf("%s: %d passed, %d failed\n", __FILE__, unit_passed,
	    unit_failed);
	return unit_failed != 0;
}
