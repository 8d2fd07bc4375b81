/*
 * test_merge.c: the workers' replies merged into one (merge.c): counts
 * added up, times averaged by requests (or the decimals that are not 0),
 * the largest of the values alike in every worker, differing states
 * joined, ports, addresses and names left alone, columns kept, and texts
 * of other shapes refused.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "merge.h"
#include "unit.h"

/* The merge of the n texts, or "(refused)"; in a static buffer. */
static const char *
merged(size_t n, ...)
{
	static char buf[4096];
	const char *texts[8];
	struct strbuf out;
	va_list ap;

	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		texts[i] = va_arg(ap, const char *);
	va_end(ap);
	strbuf_init(&out, sizeof(buf));
	if (merge_replies(texts, n, &out) == -1)
		snprintf(buf, sizeof(buf), "(refused)");
	else
		snprintf(buf, sizeof(buf), "%s", strbuf_str(&out));
	strbuf_free(&out);
	return buf;
}

#define CHECK_MERGED(want, ...) do {					\
	const char *got_ = merged(__VA_ARGS__);				\
	if (strcmp(got_, want) == 0)					\
		unit_passed++;						\
	else {								\
		unit_failed++;						\
		fprintf(stderr, "%s:%d: merged\n%s\nexpected\n%s\n",	\
		    __FILE__, __LINE__, got_, want);			\
	}								\
} while (0)

int
main(void)
{
	/*
	 * qproxyctl metrics: counts and a histogram's sums added up (the
	 * averaged decimal is a stats table's), uptime and generation the
	 * largest, label values left alone
	 */
	CHECK_MERGED(
	    "# TYPE qproxy_uptime_seconds gauge\n"
	    "qproxy_uptime_seconds 12\n"
	    "qproxy_configuration_generation 3\n"
	    "qproxy_requests_2xx_total 30\n"
	    "qproxy_listener_connections_total{listener=\"443\","
	    "address=\"[::1]:443\"} 9\n"
	    "qproxy_backend_server_ttfb_seconds_sum{backend=\"b\","
	    "server=\"127.0.0.1:8080\"} 0.750000\n"
	    "qproxy_backend_server_ttfb_seconds_count{backend=\"b\","
	    "server=\"127.0.0.1:8080\"} 5\n",
	    2,
	    "# TYPE qproxy_uptime_seconds gauge\n"
	    "qproxy_uptime_seconds 12\n"
	    "qproxy_configuration_generation 3\n"
	    "qproxy_requests_2xx_total 10\n"
	    "qproxy_listener_connections_total{listener=\"443\","
	    "address=\"[::1]:443\"} 4\n"
	    "qproxy_backend_server_ttfb_seconds_sum{backend=\"b\","
	    "server=\"127.0.0.1:8080\"} 0.500000\n"
	    "qproxy_backend_server_ttfb_seconds_count{backend=\"b\","
	    "server=\"127.0.0.1:8080\"} 2\n",
	    "# TYPE qproxy_uptime_seconds gauge\n"
	    "qproxy_uptime_seconds 11\n"
	    "qproxy_configuration_generation 3\n"
	    "qproxy_requests_2xx_total 20\n"
	    "qproxy_listener_connections_total{listener=\"443\","
	    "address=\"[::1]:443\"} 5\n"
	    "qproxy_backend_server_ttfb_seconds_sum{backend=\"b\","
	    "server=\"127.0.0.1:8080\"} 0.250000\n"
	    "qproxy_backend_server_ttfb_seconds_count{backend=\"b\","
	    "server=\"127.0.0.1:8080\"} 3\n");

	/* the stats text: sums, and the alike values' largest */
	CHECK_MERGED(
	    "uptime       9 s (configuration generation 2)\n"
	    "connections  current 7, total 1100, clients 3\n"
	    "tls          certificates_expiring 1, certificates_not_valid 0\n",
	    3,
	    "uptime       9 s (configuration generation 2)\n"
	    "connections  current 3, total 600, clients 1\n"
	    "tls          certificates_expiring 1, certificates_not_valid 0\n",
	    "uptime       8 s (configuration generation 2)\n"
	    "connections  current 4, total 500, clients 2\n"
	    "tls          certificates_expiring 1, certificates_not_valid 0\n",
	    "uptime       9 s (configuration generation 1)\n"
	    "connections  current 0, total 0, clients 0\n"
	    "tls          certificates_expiring 1, certificates_not_valid 0\n");
	/* the tickets taken: one table, which each worker counts */
	CHECK_MERGED(
	    "quic         tickets_reused 5, tickets_remembered 7\n", 2,
	    "quic         tickets_reused 2, tickets_remembered 7\n",
	    "quic         tickets_reused 3, tickets_remembered 6\n");
	CHECK_MERGED(
	    "qproxy_quic_tickets_remembered 7\n", 2,
	    "qproxy_quic_tickets_remembered 7\n",
	    "qproxy_quic_tickets_remembered 7\n");
	/* JSON alike */
	CHECK_MERGED(
	    "{\"version\":\"0.1.0\",\"uptime\":2.500,\"generation\":1,"
	    "\"requests\":{\"total\":30,\"2xx\":29,\"4xx\":1}}\n", 2,
	    "{\"version\":\"0.1.0\",\"uptime\":2.500,\"generation\":1,"
	    "\"requests\":{\"total\":10,\"2xx\":10,\"4xx\":0}}\n",
	    "{\"version\":\"0.1.0\",\"uptime\":2.499,\"generation\":1,"
	    "\"requests\":{\"total\":20,\"2xx\":19,\"4xx\":1}}\n");
	/* a table: ports and addresses stay, columns stay where they can */
	CHECK_MERGED(
	    "LISTENER  ADDRESS          CONNECTIONS OPEN\n"
	    "main      127.0.0.1:4433   10000       2\n"
	    "main      [::1]:4433       0           0\n", 2,
	    "LISTENER  ADDRESS          CONNECTIONS OPEN\n"
	    "main      127.0.0.1:4433   9999        1\n"
	    "main      [::1]:4433       0           0\n",
	    "LISTENER  ADDRESS          CONNECTIONS OPEN\n"
	    "main      127.0.0.1:4433   1           1\n"
	    "main      [::1]:4433       0           0\n");
	/* states that differ are all shown; decimals: the mean of those
	 * that are not 0 */
	CHECK_MERGED(
	    "app  127.0.0.1:8080  up/down 3  5.00\n"
	    "app  unix:/run/a.sock up  0  0.00\n", 3,
	    "app  127.0.0.1:8080  up  1  4.00\n"
	    "app  unix:/run/a.sock up  0  0.00\n",
	    "app  127.0.0.1:8080  down  2  6.00\n"
	    "app  unix:/run/a.sock up  0  0.00\n",
	    "app  127.0.0.1:8080  up  0  0.00\n"
	    "app  unix:/run/a.sock up  0  0.00\n");
	/* a backends table: the mean time to first byte weighted by each
	 * worker's requests to the server, in the REQUESTS column */
	CHECK_MERGED(
	    "BACKEND  SERVER            STATE  ACTIVE  REQUESTS  TTFB_MS\n"
	    "app      127.0.0.1:8080    up     1       40        2.50\n"
	    "app      [2001:db8::1:2]:8 up     0       0         0.00\n", 2,
	    "BACKEND  SERVER            STATE  ACTIVE  REQUESTS  TTFB_MS\n"
	    "app      127.0.0.1:8080    up     1       10        4.00\n"
	    "app      [2001:db8::1:2]:8 up     0       0         0.00\n",
	    "BACKEND  SERVER            STATE  ACTIVE  REQUESTS  TTFB_MS\n"
	    "app      127.0.0.1:8080    up     0       30        2.00\n"
	    "app      [2001:db8::1:2]:8 up     0       0         0.00\n");
	/* a server's responses rather than its requests, where it has
	 * them: 20 refused by the second worker count no time */
	CHECK_MERGED(
	    "BACKEND  SERVER          REQUESTS  IDLE  RESPONSES  TTFB_MS\n"
	    "app      127.0.0.1:8080  30        1     10         4.00\n", 2,
	    "BACKEND  SERVER          REQUESTS  IDLE  RESPONSES  TTFB_MS\n"
	    "app      127.0.0.1:8080  5         1     5          5.00\n",
	    "BACKEND  SERVER          REQUESTS  IDLE  RESPONSES  TTFB_MS\n"
	    "app      127.0.0.1:8080  25        0     5          3.00\n");
	CHECK_MERGED(
	    "{\"requests\":30,\"idle\":1,\"responses\":10,\"ttfb_avg_ms\":4.000}", 2,
	    "{\"requests\":5,\"idle\":1,\"responses\":5,\"ttfb_avg_ms\":5.000}",
	    "{\"requests\":25,\"idle\":0,\"responses\":5,\"ttfb_avg_ms\":3.000}");
	/* and after the key "requests"; a listener named 443 stays 443, in
	 * a JSON string or a table's first column */
	CHECK_MERGED(
	    "{\"name\":\"443\",\"requests\":4,\"ttfb_avg_ms\":1.75}", 2,
	    "{\"name\":\"443\",\"requests\":1,\"ttfb_avg_ms\":4.00}",
	    "{\"name\":\"443\",\"requests\":3,\"ttfb_avg_ms\":1.00}");
	CHECK_MERGED("443  [::1]:4433  3\n", 2,
	    "443  [::1]:4433  1\n", "443  [::1]:4433  2\n");
	/* a server's weight is every worker's, not their sum */
	CHECK_MERGED("{\"requests\":7,\"weight\":3,\"backup\":false}", 2,
	    "{\"requests\":2,\"weight\":3,\"backup\":false}",
	    "{\"requests\":5,\"weight\":3,\"backup\":false}");
	/* JSON strings that differ */
	CHECK_MERGED("[{\"state\":\"up/unknown\",\"active\":1}]", 2,
	    "[{\"state\":\"up\",\"active\":1}]",
	    "[{\"state\":\"unknown\",\"active\":0}]");
	/* one text alone is itself */
	CHECK_MERGED("a 1, b 2.50\n", 1, "a 1, b 2.50\n");
	/* other shapes: refused */
	CHECK_MERGED("(refused)", 2, "a 1\n", "a 1\nb 2\n");
	CHECK_MERGED("(refused)", 2, "a 1\nb 2\n", "a 1\n");
	CHECK_MERGED("(refused)", 2, "main 127.0.0.1:4433 1\n",
	    "main 127.0.0.1:4434 1\n");
	CHECK_MERGED("(refused)", 2, "{\"a\":1}", "{\"a\":1,\"b\":2}");
	CHECK_MERGED("(refused)", 2, "a 1\n", "a x\n");
	UNIT_DONE();
}
