/*
 * test_taken.c: keys taken once in a table that forked processes share
 * (taken.c): taken and seen, expiry, the oldest of a full window let go,
 * and processes taking the same keys at once, one of them each.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "taken.h"
#include "unit.h"

/* A key in window w (of a table of windows windows) with tag tag. */
static uint64_t
key_in(uint32_t tag, size_t w)
{
	return (uint64_t)tag << 32 | w;
}

static struct taken *
new_or_die(size_t max, double lifetime, double span, double now)
{
	struct taken *t = taken_new(max, lifetime, span, now);

	if (t == NULL) {
		perror("taken_new");
		exit(1);
	}
	return t;
}

static void
test_once(void)
{
	struct taken *t = new_or_die(65536, 100., 0., 50.);
	uint8_t token[40];
	uint64_t k1, k2;
	double ev;

	memset(token, 0xa5, sizeof(token));
	k1 = taken_key(t, token, sizeof(token));
	k2 = taken_key(t, token, sizeof(token) - 1);
	CHECK(k1 != k2);
	/* looked at, not taken: still new */
	CHECK(!taken_seen(t, k1, 50.));
	CHECK(!taken_seen(t, k1, 50.));
	CHECK_EQ_INT(taken_add(t, k1, 50., &ev), 1);
	CHECK(ev == 0.);
	CHECK(taken_seen(t, k1, 50.5));
	CHECK_EQ_INT(taken_add(t, k1, 51., &ev), 0);
	CHECK(!taken_seen(t, k2, 51.));
	CHECK_EQ_INT(taken_add(t, k2, 51., &ev), 1);
	CHECK_EQ_INT((int)taken_count(t, 51.), 2);
	taken_free(t);
	taken_free(NULL);
}

static void
test_expiry(void)
{
	struct taken *t = new_or_die(1024, 10., 0., 0.);
	double ev;
	size_t i;

	/* taken in the table's first second: kept to its end, plus 10 s */
	for (i = 0; i < 64; i++)	/* a key in each window */
		CHECK_EQ_INT(taken_add(t, key_in(7, i), 0.5, &ev), 1);
	CHECK_EQ_INT(taken_add(t, key_in(8, 3), 5.5, &ev), 1);
	CHECK(taken_seen(t, key_in(7, 3), 10.9));
	CHECK_EQ_INT((int)taken_count(t, 10.9), 65);
	CHECK(!taken_seen(t, key_in(7, 3), 11.));
	CHECK_EQ_INT((int)taken_count(t, 11.), 1);
	/* expired: taken again, into its own slot or another's, no eviction */
	CHECK_EQ_INT(taken_add(t, key_in(7, 3), 11., &ev), 1);
	CHECK(ev == 0.);
	CHECK_EQ_INT(taken_add(t, key_in(7, 3), 11., &ev), 0);
	CHECK(taken_seen(t, key_in(8, 3), 15.9));
	CHECK(!taken_seen(t, key_in(8, 3), 16.));
	CHECK_EQ_INT((int)taken_count(t, 16.), 1);
	taken_free(t);
}

static void
test_eviction(void)
{
	struct taken *t = new_or_die(256, 1000., 0., 0.);
	size_t windows = 256 / TAKEN_WINDOW, i;
	double ev;

	/* a window full: the 17th key lets the oldest go, at 3.25 s */
	for (i = 0; i < TAKEN_WINDOW; i++) {
		CHECK_EQ_INT(taken_add(t, key_in((uint32_t)i + 1, 5),
		    3.25 + (double)i, &ev), 1);
		CHECK(ev == 0.);
	}
	/* the other windows hold their own */
	CHECK_EQ_INT(taken_add(t, key_in(1, 6), 30., &ev), 1);
	CHECK(ev == 0.);
	CHECK_EQ_INT(taken_add(t, key_in(100, 5 + windows), 30., &ev), 1);
	/* taken in the table's fourth second: its end, no earlier */
	CHECK(ev == 4.);
	CHECK(!taken_seen(t, key_in(1, 5), 30.));
	CHECK(taken_seen(t, key_in(2, 5), 30.));
	CHECK_EQ_INT((int)taken_count(t, 30.), TAKEN_WINDOW + 1);
	/* forgotten: taken again, and the next oldest goes */
	CHECK_EQ_INT(taken_add(t, key_in(1, 5), 31., &ev), 1);
	CHECK(ev == 5.);
	CHECK(!taken_seen(t, key_in(2, 5), 31.));
	CHECK(taken_seen(t, key_in(100, 5 + windows), 31.));
	taken_free(t);

	/* a slot expired goes before one that is not */
	t = new_or_die(16, 10., 0., 0.);
	CHECK_EQ_INT(taken_add(t, key_in(1, 0), 0., &ev), 1);
	for (i = 1; i < TAKEN_WINDOW; i++)
		CHECK_EQ_INT(taken_add(t, key_in((uint32_t)i + 1, 0), 5., &ev),
		    1);
	CHECK_EQ_INT(taken_add(t, key_in(99, 0), 12., &ev), 1);
	CHECK(ev == 0.);
	CHECK(taken_seen(t, key_in(2, 0), 12.));
	CHECK_EQ_INT((int)taken_count(t, 12.), TAKEN_WINDOW);
	taken_free(t);
}

static void
test_doubt(void)
{
	struct taken *t = new_or_die(16, 10., 0., 100.);
	double ev;

	CHECK(taken_doubt_until(t) == 0.);
	taken_doubt(t, 99.);		/* before the start: nothing */
	CHECK(taken_doubt_until(t) == 0.);
	taken_doubt(t, 112.);
	CHECK(taken_doubt_until(t) >= 112. && taken_doubt_until(t) < 112.01);
	taken_doubt(t, 105.);		/* never lowered */
	CHECK(taken_doubt_until(t) >= 112. && taken_doubt_until(t) < 112.01);
	taken_doubt(t, 130.5);
	CHECK(taken_doubt_until(t) >= 130.5 &&
	    taken_doubt_until(t) < 130.51);
	/* the fresh time is another, kept alike */
	CHECK(taken_fresh_until(t) == 0.);
	taken_fresh(t, 120.);
	taken_fresh(t, 110.);
	CHECK(taken_fresh_until(t) >= 120. && taken_fresh_until(t) < 120.01);
	CHECK(taken_doubt_until(t) >= 130.5 &&
	    taken_doubt_until(t) < 130.51);
	taken_free(t);

	/*
	 * with a span, a key let go that was taken less than it before
	 * raises the doubt: taken in the table's first second, let go at
	 * 5 s, doubted until its second's end and 12 s more
	 */
	t = new_or_die(16, 1000., 12., 0.);
	for (size_t i = 0; i < TAKEN_WINDOW; i++)
		CHECK_EQ_INT(taken_add(t, key_in((uint32_t)i + 1, 0),
		    i == 0 ? 0.5 : 30., &ev), 1);
	CHECK(taken_doubt_until(t) == 0.);
	CHECK_EQ_INT(taken_add(t, key_in(99, 0), 31., &ev), 1);
	CHECK(ev == 1.);
	/* taken 30 s before: more than the span, no doubt */
	CHECK(taken_doubt_until(t) == 0.);
	CHECK_EQ_INT(taken_add(t, key_in(98, 0), 32., &ev), 1);
	CHECK(ev == 31.);
	CHECK(taken_doubt_until(t) >= 43. && taken_doubt_until(t) < 43.01);
	taken_free(t);
}

#define RACERS		6
#define RACE_KEYS	(4096 * 12)	/* 12 in each window */

/*
 * Processes forked after the table was made take the same keys at once,
 * a window's keys one after another: two by two from the same key, and
 * each pair from another key of the window than the others. Each key is
 * won by one of them, and no more.
 */
static void
test_race(void)
{
	struct taken *t = new_or_die(65536, 1000., 0., 0.);
	size_t windows = 65536 / TAKEN_WINDOW;
	struct shared {
		_Atomic unsigned	 ready;
		_Atomic unsigned	 failed;
		_Atomic unsigned char	 wins[RACE_KEYS];
	} *sh;
	pid_t pids[RACERS];
	unsigned once = 0, i;
	int status;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED |
	    MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	for (i = 0; i < RACERS; i++) {
		if ((pids[i] = fork()) == -1) {
			perror("fork");
			exit(1);
		}
		if (pids[i] != 0)
			continue;
		atomic_fetch_add(&sh->ready, 1);
		while (atomic_load(&sh->ready) < RACERS)
			;
		for (size_t k = 0; k < RACE_KEYS; k++) {
			double ev;
			/* a window's keys from the (i / 2)th on, in turn */
			size_t j = k / 12 * 12 + (k + i / 2) % 12;
			int rv = taken_add(t, key_in((uint32_t)(j % 12) + 1,
			    j / 12 % windows), 1., &ev);

			if (rv == 1)
				atomic_fetch_add(&sh->wins[j], 1);
			if (rv == -1 || ev != 0.)
				atomic_fetch_add(&sh->failed, 1);
		}
		_exit(0);
	}
	for (i = 0; i < RACERS; i++) {
		CHECK(waitpid(pids[i], &status, 0) == pids[i]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	for (i = 0; i < RACE_KEYS; i++)
		once += atomic_load(&sh->wins[i]) == 1;
	CHECK_EQ_INT(once, RACE_KEYS);
	CHECK_EQ_INT(atomic_load(&sh->failed), 0);
	/* the children's keys, seen here */
	CHECK_EQ_INT((int)taken_count(t, 1.), RACE_KEYS);
	CHECK(taken_seen(t, key_in(3, 17), 1.));
	munmap(sh, sizeof(*sh));
	taken_free(t);
}

int
main(void)
{
	test_once();
	test_expiry();
	test_eviction();
	test_doubt();
	test_race();
	UNIT_DONE();
}
