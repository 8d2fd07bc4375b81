/*
 * test_compress.c: compress.c's readings of Accept-Encoding and of media
 * types, and its streams: what they write into a bufq is read back by
 * zlib's inflate as the bytes given, whatever the pieces and flushes, and
 * their memory is counted, bounded and given back.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include <zlib.h>

#include "bufq.h"
#include "compress.h"
#include "unit.h"

static bool
takes(const char *a, const char *b)
{
	int gzip = -1, star = -1;

	compress_accept_value(a, &gzip, &star);
	if (b != NULL)
		compress_accept_value(b, &gzip, &star);
	return compress_accept_result(gzip, star);
}

static void
test_accept(void)
{
	CHECK(takes("gzip", NULL));
	CHECK(takes("deflate, gzip;q=0.8, br", NULL));
	CHECK(takes("X-GZIP", NULL));
	CHECK(takes("gzip;Q=1.000", NULL));
	CHECK(takes("gzip ;\tq=0.001", NULL));
	CHECK(takes("*", NULL));
	CHECK(takes("br;q=1, *;q=0.5", NULL));
	CHECK(takes("br", "gzip"));
	CHECK(takes(",, gzip ,", NULL));
	/* the later "gzip" does not take back an earlier one's yes */
	CHECK(takes("gzip", "gzip;q=0"));
	CHECK(!takes("gzip;q=0", NULL));
	CHECK(!takes("gzip;q=0.", NULL));
	CHECK(!takes("gzip;q=0.000", NULL));
	CHECK(!takes("gzip;q=0, *", NULL));
	CHECK(!takes("*;q=0", NULL));
	CHECK(!takes("", NULL));
	CHECK(!takes("identity", NULL));
	CHECK(!takes("gzip;q=1.001", NULL));
	CHECK(!takes("gzip;q=0.0001", NULL));
	CHECK(!takes("gzip;q=00", NULL));
	CHECK(!takes("gzip;q=", NULL));
	CHECK(!takes("gzip;x=1", NULL));
	CHECK(!takes("gzip x", NULL));
	CHECK(!takes("gzipx, xgzip, gz", NULL));
	/* a malformed element counts for nothing, the others do */
	CHECK(takes("gzip;q=2, *", NULL));
	CHECK(!takes("gzip;q=2", NULL));
}

static void
test_types(void)
{
	const char *list = " text/html text/* application/*+json image/svg+xml ";

	CHECK(compress_type_valid("text/html", 9));
	CHECK(compress_type_valid("text/*", 6));
	CHECK(compress_type_valid("application/*+json", 18));
	CHECK(compress_type_valid("image/svg+xml", 13));
	CHECK(!compress_type_valid("text", 4));
	CHECK(!compress_type_valid("text/", 5));
	CHECK(!compress_type_valid("/html", 5));
	CHECK(!compress_type_valid("*/*", 3));
	CHECK(!compress_type_valid("text/h*", 7));
	CHECK(!compress_type_valid("text/*+", 7));
	CHECK(!compress_type_valid("text/*+*", 8));
	CHECK(!compress_type_valid("text/a/b", 8));
	CHECK(!compress_type_valid("Text/html", 9));

	CHECK(compress_type_listed(list, "text/html", 9));
	CHECK(compress_type_listed(list, " TEXT/HTML ; charset=utf-8", 26));
	CHECK(compress_type_listed(list, "text/plain", 10));
	CHECK(compress_type_listed(list, "application/ld+json", 19));
	CHECK(compress_type_listed(list, "image/svg+xml", 13));
	CHECK(!compress_type_listed(list, "application/+json", 17));
	CHECK(!compress_type_listed(list, "application/json", 16));
	CHECK(!compress_type_listed(list, "image/png", 9));
	CHECK(!compress_type_listed(list, "texts/html", 10));
	CHECK(!compress_type_listed(list, "", 0));
	CHECK(!compress_type_listed(list, "; charset=utf-8", 15));
	/* the length given bounds the value, not its NUL */
	CHECK(compress_type_listed(list, "image/svg+xmlz", 13));
	CHECK(!compress_type_listed(list, "image/svg+xml", 12));
}

/* Everything out of q, inflated (gzip's wrapper) into out; its length. */
static size_t
inflate_all(struct bufq *q, uint8_t *out, size_t cap, int *rc)
{
	struct iovec iov[64];
	z_stream z;
	size_t n;

	memset(&z, 0, sizeof(z));
	inflateInit2(&z, 15 + 16);
	z.next_out = out;
	z.avail_out = (uInt)cap;
	*rc = Z_OK;
	while ((n = bufq_peek_unsent(q, iov, 64)) > 0) {
		size_t total = 0;

		for (size_t i = 0; i < n && *rc == Z_OK; i++) {
			z.next_in = iov[i].iov_base;
			z.avail_in = (uInt)iov[i].iov_len;
			*rc = inflate(&z, Z_NO_FLUSH);
			total += iov[i].iov_len;
		}
		bufq_drain(q, total);
	}
	n = cap - z.avail_out;
	inflateEnd(&z);
	return n;
}

static void
test_stream(void)
{
	static uint8_t in[300000], out[300000];
	struct compressor *c;
	struct bufq q;
	size_t off, got;
	int rc;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i % 7 == 0 ? unit_rand() : 'a' + i % 13);
	bufq_init(&q);
	CHECK((c = compress_new(5, 0, 64 << 20)) != NULL);
	/* 268 KB or so: the largest window, the largest tables */
	CHECK(compress_memory() > 256 * 1024 && compress_memory() < 280 * 1024);
	/* pieces of every size, a flush now and then */
	for (off = 0; off < sizeof(in); ) {
		size_t n = 1 + unit_rand() % 20000;

		if (n > sizeof(in) - off)
			n = sizeof(in) - off;
		CHECK_EQ_INT(compress_put(c, in + off, n, n % 3 == 0, &q), 0);
		off += n;
		/* what a flush gives out reads back as all that was given */
		if (n % 3 == 0) {
			z_stream z;
			struct iovec iov[64];
			size_t m = bufq_peek_unsent(&q, iov, 64), done = 0;

			memset(&z, 0, sizeof(z));
			inflateInit2(&z, 15 + 16);
			z.next_out = out;
			z.avail_out = sizeof(out);
			for (size_t i = 0; i < m; i++) {
				z.next_in = iov[i].iov_base;
				z.avail_in = (uInt)iov[i].iov_len;
				inflate(&z, Z_SYNC_FLUSH);
			}
			done = sizeof(out) - z.avail_out;
			inflateEnd(&z);
			CHECK_EQ_INT(done, off);
			CHECK(memcmp(out, in, off) == 0);
		}
	}
	CHECK_EQ_INT(compress_end(c, &q), 0);
	compress_free(c);
	CHECK_EQ_INT(compress_memory(), 0);
	got = inflate_all(&q, out, sizeof(out), &rc);
	CHECK_EQ_INT(rc, Z_STREAM_END);
	CHECK_EQ_INT(got, sizeof(in));
	CHECK(memcmp(out, in, sizeof(in)) == 0);
	bufq_free(&q);

	/* an empty body: a gzip stream of nothing */
	bufq_init(&q);
	CHECK((c = compress_new(1, 0, 64 << 20)) != NULL);
	CHECK_EQ_INT(compress_put(c, NULL, 0, true, &q), 0);
	CHECK_EQ_INT(compress_end(c, &q), 0);
	compress_free(c);
	got = inflate_all(&q, out, sizeof(out), &rc);
	CHECK_EQ_INT(rc, Z_STREAM_END);
	CHECK_EQ_INT(got, 0);
	bufq_free(&q);
}

static void
test_memory(void)
{
	struct compressor *c[8];
	size_t n;

	/* a short body of known length: a window as small as it */
	CHECK((c[0] = compress_new(9, 2000, 64 << 20)) != NULL);
	CHECK(compress_memory() > 16 * 1024 && compress_memory() < 24 * 1024);
	compress_free(c[0]);
	CHECK((c[0] = compress_new(9, 100, 64 << 20)) != NULL);
	CHECK(compress_memory() < 12 * 1024);
	compress_free(c[0]);
	CHECK((c[0] = compress_new(9, 16385, 64 << 20)) != NULL);
	CHECK(compress_memory() > 256 * 1024);
	compress_free(c[0]);
	CHECK_EQ_INT(compress_memory(), 0);
	/* 1 MiB: three of the largest, not four */
	for (n = 0; n < 8 && (c[n] = compress_new(5, 0, 1 << 20)) != NULL; n++)
		;
	CHECK_EQ_INT(n, 3);
	CHECK(compress_memory() <= 1 << 20);
	/* one of a short body still fits */
	CHECK((c[n] = compress_new(5, 500, 1 << 20)) != NULL);
	n++;
	while (n > 0)
		compress_free(c[--n]);
	CHECK_EQ_INT(compress_memory(), 0);
	compress_free(NULL);
}

int
main(void)
{
	test_accept();
	test_types();
	test_stream();
	test_memory();
	bufq_cache_free();
	printf("test_compress: %d passed, %d failed\n", unit_passed,
	    unit_failed);
	return unit_failed != 0;
}
