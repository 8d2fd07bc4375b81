/* test_replay.c: NEW_TOKEN tokens taken once, remembered in a bounded table. */
#include <stdio.h>
#include <stdlib.h>

#include "replay.h"
#include "unit.h"

/* token i: 40 bytes, as ngtcp2's regular tokens are about */
static const uint8_t *
token(unsigned i)
{
	static uint8_t t[40];

	memset(t, 0xa5, sizeof(t));
	memcpy(t, &i, sizeof(i));
	return t;
}

/* As the daemon does once a token's connection is under way. */
static bool
replay_first(struct replay *r, const uint8_t *t, size_t len, double now)
{
	return replay_add(r, replay_key(r, t, len), now);
}

static struct replay *
new_or_die(size_t max, double lifetime)
{
	struct replay *r = replay_new(max, lifetime);

	if (r == NULL) {
		perror("replay_new");
		exit(1);
	}
	return r;
}

static void
test_once(void)
{
	struct replay *r = new_or_die(4096, 100.);

	/* looked at, not taken: still new */
	CHECK(!replay_seen(r, replay_key(r, token(1), 40), 0.));
	CHECK(!replay_seen(r, replay_key(r, token(1), 40), 0.));
	CHECK(replay_first(r, token(1), 40, 0.));
	CHECK(replay_seen(r, replay_key(r, token(1), 40), 0.5));
	CHECK(!replay_first(r, token(1), 40, 1.));
	CHECK(replay_first(r, token(2), 40, 1.));
	CHECK(replay_first(r, token(2), 39, 1.));	/* another token */
	CHECK_EQ_INT((int)replay_count(r, 1.), 3);
	/* past its lifetime a token is forgotten (it is void anyway) */
	CHECK(replay_first(r, token(1), 40, 100.));
	CHECK(!replay_first(r, token(2), 40, 100.));
	CHECK_EQ_INT((int)replay_count(r, 100.), 3);
	/* the count itself lets the expired go: none is taken after 200 s */
	CHECK_EQ_INT((int)replay_count(r, 200.), 0);
	replay_free(r);
}

static void
test_growth_and_expiry(void)
{
	struct replay *r = new_or_die(4096, 10.);
	unsigned i;
	int again = 0;

	/* past the first ring size, kept in order through each doubling */
	for (i = 0; i < 3000; i++)
		CHECK_EQ_INT(replay_first(r, token(i), 40, i / 1000.), 1);
	CHECK_EQ_INT((int)replay_count(r, 3.), 3000);
	for (i = 0; i < 3000; i++)
		again += replay_first(r, token(i), 40, 3.);
	CHECK_EQ_INT(again, 0);
	CHECK_EQ_INT((int)replay_evicted(r), 0);
	/* at 11.5 s those taken by 1.5 s have expired: 1499 left, and one */
	CHECK(replay_first(r, token(5000), 40, 11.5));
	CHECK_EQ_INT((int)replay_count(r, 11.5), 1500);
	CHECK(replay_first(r, token(10), 40, 11.5));
	CHECK(!replay_first(r, token(2999), 40, 11.5));
	replay_free(r);
}

static void
test_bounded(void)
{
	struct replay *r = new_or_die(256, 1000.);
	unsigned i;

	CHECK(replay_evicted_at(r) == 0.);
	for (i = 0; i < 300; i++)
		CHECK_EQ_INT(replay_first(r, token(i), 40, i / 100.), 1);
	/* full: the oldest went first, and no more than 256 are held */
	CHECK_EQ_INT((int)replay_count(r, 3.), 256);
	CHECK_EQ_INT((int)replay_evicted(r), 44);
	/* the last forgotten, token 43, was added at 0.43 s */
	CHECK(replay_evicted_at(r) > 0.4299 && replay_evicted_at(r) < 0.4301);
	CHECK(!replay_first(r, token(299), 40, 3.));
	CHECK(!replay_first(r, token(44), 40, 3.));
	CHECK(replay_first(r, token(0), 40, 3.));	/* forgotten */
	CHECK_EQ_INT((int)replay_count(r, 3.), 256);
	CHECK(replay_evicted_at(r) > 0.4399 && replay_evicted_at(r) < 0.4401);
	replay_free(r);
}

int
main(void)
{
	test_once();
	test_growth_and_expiry();
	test_bounded();
	UNIT_DONE();
}
