/* test_bufq.c: the chunked byte queue: order, positions, stable pointers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "asan.h"
#include "bufq.h"
#include "unit.h"

/*
 * Appends (by copy or by writing into reserved room), sends and consumes in
 * random steps; the bytes must come out in order and pointers handed out
 * must keep their contents until consumed.
 */
static void
test_random(void)
{
	struct bufq q;
	static uint8_t in[400000];
	size_t wpos = 0, spos = 0, cpos = 0;
	static struct {
		const uint8_t	*p;
		size_t		 len, pos;
	} sent[65536];
	size_t nsent = 0, first = 0, count = 0;
	int bad = 0;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 7 + i / 251);
	bufq_init(&q);
	bufq_count(&q, &count);
	while (cpos < sizeof(in)) {
		switch (unit_rand() % 4) {
		case 3: {
			/* readv(2) into the queue, as exchange.c does */
			struct iovec iov[4];
			size_t n = bufq_reserve(&q, iov, 1 + unit_rand() % 4);
			size_t room = 0, want = unit_rand() % 40000, k;

			CHECK(n > 0);
			for (size_t i = 0; i < n; i++)
				room += iov[i].iov_len;
			if (want > room)
				want = room;
			if (want > sizeof(in) - wpos)
				want = sizeof(in) - wpos;
			for (size_t i = 0, done = 0; done < want; i++) {
				k = want - done < iov[i].iov_len ?
				    want - done : iov[i].iov_len;
				memcpy(iov[i].iov_base, in + wpos + done, k);
				done += k;
			}
			bufq_commit(&q, want);
			wpos += want;
			break;
		}
		case 0: {
			size_t n = unit_rand() % 5000;

			if (n > sizeof(in) - wpos)
				n = sizeof(in) - wpos;
			CHECK_EQ_INT(bufq_append(&q, in + wpos, n), 0);
			wpos += n;
			break;
		}
		case 1: {
			struct iovec iov[4];
			size_t n = bufq_peek_unsent(&q, iov, 1 + unit_rand() % 4);
			size_t total = 0;

			for (size_t i = 0; i < n && nsent < 65536; i++) {
				if (memcmp(iov[i].iov_base, in + spos + total,
				    iov[i].iov_len) != 0)
					bad++;
				sent[nsent].p = iov[i].iov_base;
				sent[nsent].len = iov[i].iov_len;
				sent[nsent].pos = spos + total;
				nsent++;
				total += iov[i].iov_len;
			}
			bufq_mark_sent(&q, total);
			spos += total;
			break;
		}
		case 2: {
			size_t n = unit_rand() % 7000;

			if (n > spos - cpos)
				n = spos - cpos;
			/* what was handed out is intact until consumed */
			for (size_t i = first; i < nsent; i++)
				if (memcmp(sent[i].p, in + sent[i].pos,
				    sent[i].len) != 0)
					bad++;
			bufq_consume(&q, n);
			cpos += n;
			while (first < nsent &&
			    sent[first].pos + sent[first].len <= cpos)
				first++;
			break;
		}
		}
		CHECK_EQ_INT(q.len, wpos - cpos);
		CHECK_EQ_INT(q.unsent, wpos - spos);
		/* the only queue: every chunk in use holds its bytes */
		CHECK_EQ_INT(count, bufq_chunks_in_use());
		CHECK_EQ_INT(q.nchunks, count);
		if (q.len != wpos - cpos || q.unsent != wpos - spos)
			return;		/* lost count: the loop would not end */
		if (wpos == sizeof(in) && spos == wpos && cpos < spos) {
			bufq_consume(&q, spos - cpos);
			cpos = spos;
		}
	}
	CHECK_EQ_INT(bad, 0);
	CHECK_EQ_INT(q.len, 0);
	CHECK(q.head == NULL);
	bufq_free(&q);
	/* room reserved and not used goes back: nothing stays allocated */
	CHECK_EQ_INT(bufq_chunks_in_use(), 0);
	CHECK_EQ_INT(count, 0);
	CHECK(q.count == &count);	/* bufq_free keeps the link */
}

static void
test_move(void)
{
	struct bufq a, b;
	struct iovec iov[8];
	char buf[40000];
	size_t n, len = 0;

	bufq_init(&a);
	bufq_init(&b);
	memset(buf, 'x', sizeof(buf));
	CHECK_EQ_INT(bufq_append(&a, "head", 4), 0);
	CHECK_EQ_INT(bufq_append(&b, buf, sizeof(buf)), 0);
	CHECK_EQ_INT(bufq_move(&a, &b), 0);
	CHECK_EQ_INT(a.len, 4 + sizeof(buf));
	CHECK_EQ_INT(b.len, 0);
	n = bufq_peek_unsent(&a, iov, 8);
	for (size_t i = 0; i < n; i++)
		len += iov[i].iov_len;
	CHECK_EQ_INT(len, 4 + sizeof(buf));
	CHECK(memcmp(iov[0].iov_base, "head", 4) == 0);
	bufq_drain(&a, a.len);
	CHECK_EQ_INT(a.len, 0);
	/* reusable after being emptied */
	CHECK_EQ_INT(bufq_append(&a, "z", 1), 0);
	CHECK_EQ_INT(bufq_peek_unsent(&a, iov, 8), 1);
	CHECK_EQ_INT(iov[0].iov_len, 1);
	bufq_free(&a);
	bufq_free(&b);
}

/*
 * A chunk kept on the free list is still off limits to AddressSanitizer:
 * a pointer into a freed queue must not read what the next stream wrote.
 */
static void
test_freed_chunks_poisoned(void)
{
	struct bufq q;
	struct iovec iov[1];

	bufq_init(&q);
	CHECK_EQ_INT(bufq_append(&q, "bytes", 5), 0);
	CHECK_EQ_INT(bufq_peek_unsent(&q, iov, 1), 1);
	bufq_free(&q);
	CHECK(bufq_chunks_free() > 0);
#ifdef QPROXY_ASAN
	CHECK(__asan_address_is_poisoned(iov[0].iov_base));
	/* and usable again once handed out */
	CHECK_EQ_INT(bufq_append(&q, "again", 5), 0);
	CHECK_EQ_INT(bufq_peek_unsent(&q, iov, 1), 1);
	CHECK(!__asan_address_is_poisoned(iov[0].iov_base));
	bufq_free(&q);
#endif
}

int
main(void)
{
	test_random();
	test_move();
	test_freed_chunks_poisoned();
	bufq_cache_free();
	CHECK_EQ_INT(bufq_chunks_free(), 0);
	UNIT_DONE();
}
