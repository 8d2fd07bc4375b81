/*
 * clients.c: connections counted by client address. A chained hash table
 * keyed with SipHash under a random key, so that clients cannot choose
 * addresses that share a chain; it doubles as clients come and never
 * shrinks, so its size follows the most clients seen at once. Beside it,
 * direct-mapped by the same hash, the clients refused lately and the
 * request and password check allowances of those gone.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bucket.h"
#include "clients.h"
#include "siphash.h"

#define CLIENTS_MIN	64	/* buckets at first; a power of two */

struct refusal {
	uint8_t		 key[CLIENT_KEYLEN];
	double		 budget;	/* refusals it may be sent */
	double		 at;		/* when the budget was counted */
};

/* A client gone with requests or password checks taken: its allowances,
   as it left them. */
struct gone {
	uint8_t		 key[CLIENT_KEYLEN];	/* all 0: free */
	double		 req_budget, req_at;
	double		 auth_budget, auth_at;
};

struct clients {
	uint64_t	  hashkey[2];
	struct client	**buckets;
	size_t		  nbuckets, n;
	struct refusal	  refusals[CLIENTS_REFUSAL_SLOTS];
	struct gone	  gone[CLIENTS_GONE_SLOTS];
};

struct clients *
clients_new(void)
{
	struct clients *t;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	if (getrandom(t->hashkey, sizeof(t->hashkey), 0) !=
	    sizeof(t->hashkey) ||
	    (t->buckets = calloc(CLIENTS_MIN, sizeof(*t->buckets))) == NULL) {
		free(t);
		return NULL;
	}
	t->nbuckets = CLIENTS_MIN;
	return t;
}

void
clients_free(struct clients *t)
{
	struct client *c, *next;

	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nbuckets; i++)
		for (c = t->buckets[i]; c != NULL; c = next) {
			next = c->next;
			free(c);
		}
	free(t->buckets);
	free(t);
}

bool
client_key(const struct addr *a, uint8_t key[CLIENT_KEYLEN])
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	static const uint8_t nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
	const uint8_t *v6;

	memset(key, 0, CLIENT_KEYLEN);
	switch (a->u.sa.sa_family) {
	case AF_INET:
		key[0] = 4;
		memcpy(key + 1, &a->u.in.sin_addr, 4);
		return true;
	case AF_INET6:
		v6 = a->u.in6.sin6_addr.s6_addr;
		if (memcmp(v6, mapped, sizeof(mapped)) == 0 ||
		    memcmp(v6, nat64, sizeof(nat64)) == 0) {
			key[0] = 4;
			memcpy(key + 1, v6 + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, v6, 8);
		}
		return true;
	default:
		return false;
	}
}

static struct client **
bucket(struct clients *t, const uint8_t key[CLIENT_KEYLEN])
{
	return &t->buckets[siphash24(t->hashkey, key, CLIENT_KEYLEN) &
	    (t->nbuckets - 1)];
}

static struct client *
lookup(struct clients *t, const uint8_t key[CLIENT_KEYLEN])
{
	struct client *c;

	for (c = *bucket(t, key); c != NULL; c = c->next)
		if (memcmp(c->key, key, CLIENT_KEYLEN) == 0)
			return c;
	return NULL;
}

struct client *
clients_find(struct clients *t, const struct addr *a)
{
	uint8_t key[CLIENT_KEYLEN];

	return client_key(a, key) ? lookup(t, key) : NULL;
}

/* Twice the buckets; on no memory the chains only grow longer. */
static void
grow(struct clients *t)
{
	struct client **old = t->buckets, *c, *next, **b;
	size_t n = t->nbuckets;

	if ((t->buckets = calloc(n * 2, sizeof(*t->buckets))) == NULL) {
		t->buckets = old;
		return;
	}
	t->nbuckets = n * 2;
	for (size_t i = 0; i < n; i++)
		for (c = old[i]; c != NULL; c = next) {
			next = c->next;
			b = bucket(t, c->key);
			c->next = *b;
			*b = c;
		}
	free(old);
}

static struct gone *
gone_slot(struct clients *t, const uint8_t key[CLIENT_KEYLEN])
{
	return &t->gone[siphash24(t->hashkey, key, CLIENT_KEYLEN) &
	    (CLIENTS_GONE_SLOTS - 1)];
}

struct client *
clients_add(struct clients *t, const struct addr *a)
{
	uint8_t key[CLIENT_KEYLEN];
	struct client *c, **b;
	struct gone *g;

	if (!client_key(a, key))
		return NULL;
	if ((c = lookup(t, key)) == NULL) {
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return NULL;
		memcpy(c->key, key, CLIENT_KEYLEN);
		g = gone_slot(t, key);
		if (memcmp(g->key, key, CLIENT_KEYLEN) == 0) {
			c->req_budget = g->req_budget;
			c->req_at = g->req_at;
			c->auth_budget = g->auth_budget;
			c->auth_at = g->auth_at;
			memset(g, 0, sizeof(*g));
		}
		b = bucket(t, key);
		c->next = *b;
		*b = c;
		if (++t->n > t->nbuckets)
			grow(t);
	}
	c->conns++;
	return c;
}

void
clients_release(struct clients *t, struct client *c)
{
	struct client **p;
	struct gone *g;

	if (--c->conns > 0)
		return;
	if (c->req_at != 0 || c->auth_at != 0) {
		g = gone_slot(t, c->key);
		memcpy(g->key, c->key, CLIENT_KEYLEN);
		g->req_budget = c->req_budget;
		g->req_at = c->req_at;
		g->auth_budget = c->auth_budget;
		g->auth_at = c->auth_at;
	}
	for (p = bucket(t, c->key); *p != c; p = &(*p)->next)
		;
	*p = c->next;
	t->n--;
	free(c);
}

size_t
clients_count(const struct clients *t)
{
	return t->n;
}

static int
client_cmp(const void *a, const void *b)
{
	const struct client *x = *(const struct client *const *)a;
	const struct client *y = *(const struct client *const *)b;

	if (x->conns != y->conns)
		return x->conns > y->conns ? -1 : 1;
	return memcmp(x->key, y->key, CLIENT_KEYLEN);
}

ssize_t
clients_top(const struct clients *t, const struct client **top, size_t n)
{
	const struct client **all, *c;
	size_t k = 0;

	if (t->n == 0 || n == 0)
		return 0;
	if ((all = calloc(t->n, sizeof(*all))) == NULL)
		return -1;
	for (size_t i = 0; i < t->nbuckets; i++)
		for (c = t->buckets[i]; c != NULL; c = c->next)
			all[k++] = c;
	qsort(all, k, sizeof(*all), client_cmp);
	if (n > k)
		n = k;
	memcpy(top, all, n * sizeof(*top));
	free(all);
	return (ssize_t)n;
}

char *
client_format(const struct client *c, char *buf, size_t len)
{
	uint8_t v6[16] = { 0 };
	char text[INET6_ADDRSTRLEN];

	if (c->key[0] == 4) {
		if (inet_ntop(AF_INET, c->key + 1, buf, (socklen_t)len) == NULL)
			snprintf(buf, len, "?");
		return buf;
	}
	memcpy(v6, c->key + 1, 8);
	if (inet_ntop(AF_INET6, v6, text, sizeof(text)) == NULL)
		snprintf(buf, len, "?");
	else
		snprintf(buf, len, "%s/64", text);
	return buf;
}

bool
clients_may_refuse(struct clients *t, const struct addr *a, double now)
{
	uint8_t key[CLIENT_KEYLEN];
	struct refusal *r;

	if (!client_key(a, key))
		return true;
	r = &t->refusals[siphash24(t->hashkey, key, CLIENT_KEYLEN) &
	    (CLIENTS_REFUSAL_SLOTS - 1)];
	if (memcmp(r->key, key, CLIENT_KEYLEN) != 0) {
		memcpy(r->key, key, CLIENT_KEYLEN);
		r->budget = CLIENTS_REFUSALS_BURST;
		r->at = now;
	}
	return bucket_take(&r->budget, &r->at, now, 1.,
	    CLIENTS_REFUSALS_BURST);
}
