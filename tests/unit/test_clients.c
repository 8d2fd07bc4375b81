/* test_clients.c: connections counted by client: IPv4 address, IPv6 /64. */
#include <arpa/inet.h>
#include <stdlib.h>

#include "clients.h"
#include "unit.h"

static struct addr
ip(const char *text, unsigned port)
{
	struct addr a;

	memset(&a, 0, sizeof(a));
	if (inet_pton(AF_INET, text, &a.u.in.sin_addr) == 1) {
		a.u.in.sin_family = AF_INET;
		a.u.in.sin_port = htons(port);
		a.len = sizeof(a.u.in);
	} else if (inet_pton(AF_INET6, text, &a.u.in6.sin6_addr) == 1) {
		a.u.in6.sin6_family = AF_INET6;
		a.u.in6.sin6_port = htons(port);
		a.len = sizeof(a.u.in6);
	} else {
		fprintf(stderr, "bad address %s\n", text);
		exit(1);
	}
	return a;
}

static bool
same_client(const char *x, const char *y)
{
	uint8_t kx[CLIENT_KEYLEN], ky[CLIENT_KEYLEN];
	struct addr ax = ip(x, 1000), ay = ip(y, 2000);

	return client_key(&ax, kx) && client_key(&ay, ky) &&
	    memcmp(kx, ky, CLIENT_KEYLEN) == 0;
}

static void
test_keys(void)
{
	struct addr un;
	uint8_t k[CLIENT_KEYLEN];

	/* the port never counts */
	CHECK(same_client("192.0.2.1", "192.0.2.1"));
	CHECK(!same_client("192.0.2.1", "192.0.2.2"));
	/* an IPv6 /64 is one client, the next /64 another */
	CHECK(same_client("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ff"));
	CHECK(!same_client("2001:db8:1:2::1", "2001:db8:1:3::1"));
	CHECK(!same_client("2001:db8:1:2::1", "2001:db9:1:2::1"));
	/* a mapped IPv4 address is that address, not all of ::ffff:0:0/96 */
	CHECK(same_client("::ffff:192.0.2.1", "192.0.2.1"));
	CHECK(!same_client("::ffff:192.0.2.1", "::ffff:192.0.2.2"));
	/* and so is one by NAT64's well-known prefix */
	CHECK(same_client("64:ff9b::192.0.2.1", "192.0.2.1"));
	CHECK(!same_client("64:ff9b::192.0.2.1", "64:ff9b::192.0.2.2"));
	CHECK(same_client("64:ff9b:1::1", "64:ff9b:1::2"));	/* a /64 */
	/* IPv4 0.0.0.1 is not IPv6 ::1, nor ::/64 */
	CHECK(!same_client("0.0.0.1", "::1"));
	CHECK(!same_client("0.0.0.0", "::"));
	memset(&un, 0, sizeof(un));
	un.u.un.sun_family = AF_UNIX;
	CHECK(!client_key(&un, k));
}

static void
test_counts(void)
{
	struct clients *t = clients_new();
	struct addr a1 = ip("192.0.2.1", 1), a2 = ip("192.0.2.1", 2);
	struct addr b = ip("2001:db8::1", 3), b2 = ip("2001:db8::2", 4);
	struct client *c1, *c2, *c3, *c4;

	CHECK(t != NULL);
	CHECK(clients_find(t, &a1) == NULL);
	c1 = clients_add(t, &a1);
	c2 = clients_add(t, &a2);
	CHECK(c1 != NULL && c1 == c2);
	CHECK_EQ_INT(c1->conns, 2);
	CHECK(clients_find(t, &a2) == c1);
	c3 = clients_add(t, &b);
	c4 = clients_add(t, &b2);
	CHECK(c3 != NULL && c3 == c4 && c3 != c1);
	CHECK_EQ_INT((int)clients_count(t), 2);
	clients_release(t, c1);
	CHECK(clients_find(t, &a1) == c1);
	CHECK_EQ_INT(c1->conns, 1);
	clients_release(t, c1);
	/* forgotten with its last connection */
	CHECK(clients_find(t, &a1) == NULL);
	CHECK_EQ_INT((int)clients_count(t), 1);
	clients_release(t, c3);
	clients_release(t, c3);
	CHECK_EQ_INT((int)clients_count(t), 0);
	CHECK(clients_find(t, &b) == NULL);

	/*
	 * but for its request allowance: a client that comes back takes up
	 * the one it left, once; one that took no request leaves none
	 */
	c1 = clients_add(t, &a1);
	CHECK(c1->req_at == 0);
	c1->req_budget = 0.25;
	c1->req_at = 1000;
	clients_release(t, c1);
	c3 = clients_add(t, &b);
	clients_release(t, c3);
	c1 = clients_add(t, &a2);		/* the same client */
	CHECK(c1->req_budget == 0.25 && c1->req_at == 1000);
	c3 = clients_add(t, &b2);
	CHECK(c3->req_at == 0 && c3->req_budget == 0);
	clients_release(t, c3);
	c1->req_budget = 0;
	c1->req_at = 0;
	clients_release(t, c1);
	c1 = clients_add(t, &a1);
	CHECK(c1->req_at == 0);
	clients_release(t, c1);
	clients_free(t);
}

/* Many clients, through the table's growth, in and out in any order. */
static void
test_many(void)
{
	enum { N = 5000 };
	struct clients *t = clients_new();
	static struct client *held[N];
	char text[32];
	size_t left = N;
	int lost = 0;

	for (unsigned i = 0; i < N; i++) {
		struct addr a;

		snprintf(text, sizeof(text), "10.%u.%u.%u", i >> 16,
		    (i >> 8) & 255, i & 255);
		a = ip(text, i);
		held[i] = clients_add(t, &a);
		CHECK_EQ_INT(held[i] != NULL && held[i]->conns == 1, 1);
	}
	CHECK_EQ_INT((int)clients_count(t), N);
	for (unsigned i = 0; i < N; i++) {
		struct addr a;

		snprintf(text, sizeof(text), "10.%u.%u.%u", i >> 16,
		    (i >> 8) & 255, i & 255);
		a = ip(text, 9);
		lost += clients_find(t, &a) != held[i];
	}
	CHECK_EQ_INT(lost, 0);
	while (left > 0) {
		size_t i = unit_rand() % N;

		if (held[i] == NULL)
			continue;
		clients_release(t, held[i]);
		held[i] = NULL;
		left--;
		CHECK_EQ_INT(clients_count(t), left);
	}
	clients_free(t);
}

/* Four refusals at once, then one a second, for each client alone. */
static void
test_refusals(void)
{
	struct clients *t = clients_new();
	struct addr a = ip("192.0.2.1", 1), a2 = ip("192.0.2.1", 2);
	struct addr b = ip("2001:db8::1", 3), b2 = ip("2001:db8::ff", 4);
	struct addr other = ip("192.0.2.2", 1);
	int n = 0;

	for (int i = 0; i < 10; i++)
		n += clients_may_refuse(t, i & 1 ? &a : &a2, 100.);
	CHECK_EQ_INT(n, CLIENTS_REFUSALS_BURST);
	CHECK(!clients_may_refuse(t, &a, 100.5));
	CHECK(clients_may_refuse(t, &a, 101.));
	CHECK(!clients_may_refuse(t, &a, 101.));
	/* the tries refused meanwhile do not push it back */
	for (int i = 0; i < 100; i++)
		(void)clients_may_refuse(t, &a, 101. + i * 0.0099);
	CHECK(clients_may_refuse(t, &a, 102.));
	/* a long pause gives a burst again, no more */
	n = 0;
	for (int i = 0; i < 10; i++)
		n += clients_may_refuse(t, &a, 200.);
	CHECK_EQ_INT(n, CLIENTS_REFUSALS_BURST);
	/* an IPv6 /64 is one client */
	n = 0;
	for (int i = 0; i < 10; i++)
		n += clients_may_refuse(t, i & 1 ? &b : &b2, 100.);
	CHECK_EQ_INT(n, CLIENTS_REFUSALS_BURST);
	/*
	 * another client has its own (checked last: under the table's random
	 * key it may take a's slot, which gives a a new burst)
	 */
	CHECK(clients_may_refuse(t, &other, 200.));
	clients_free(t);
}

/* The clients with the most connections, most first, and their names. */
static void
test_top(void)
{
	struct clients *t = clients_new();
	struct addr a = ip("192.0.2.9", 1), b = ip("2001:db8:1:2::5", 2);
	struct addr c = ip("10.0.0.1", 3);
	const struct client *top[2];
	char text[64];

	CHECK_EQ_INT(clients_top(t, top, 2), 0);
	(void)clients_add(t, &a);
	for (int i = 0; i < 3; i++)
		(void)clients_add(t, &b);
	(void)clients_add(t, &c);
	(void)clients_add(t, &c);
	CHECK_EQ_INT(clients_top(t, top, 2), 2);
	CHECK_EQ_STR(client_format(top[0], text, sizeof(text)),
	    "2001:db8:1:2::/64");
	CHECK_EQ_INT(top[0]->conns, 3);
	CHECK_EQ_STR(client_format(top[1], text, sizeof(text)), "10.0.0.1");
	CHECK_EQ_INT(clients_top(t, top, 1), 1);
	clients_free(t);
}

int
main(void)
{
	test_keys();
	test_counts();
	test_many();
	test_refusals();
	test_top();
	UNIT_DONE();
}
