/*
 * test_h3ctrl.c: h3_ctrl_feed hands a client's control stream to nghttp3
 * cut anywhere, without the cuts nghttp3 1.8.0 reads wrongly: a call
 * ending just after a PRIORITY_UPDATE's element ID (the process aborts),
 * or within the first 8 bytes of a longer value (the bytes stay in
 * nghttp3's buffer, and the next PRIORITY_UPDATE is refused). A real
 * nghttp3 server connection reads the stream here, cut at every place
 * (and at every pair of places): without h3_ctrl_feed this test aborts.
 */
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "unit.h"

#define CTRL_STREAM	2	/* the client's first unidirectional stream */

/* Type 0 (control), SETTINGS, then frames as Chromium sends them. */
static const uint8_t chromium_like[] = {
	0x00,
	/* SETTINGS: QPACK table 0, blocked streams 0, a GREASE setting */
	0x04, 0x07, 0x01, 0x00, 0x07, 0x00, 0x40, 0x21, 0x00,
	/* PRIORITY_UPDATE (request): element 0, "u=1" */
	0x80, 0x0f, 0x07, 0x00, 0x04, 0x00, 'u', '=', '1',
	/* a reserved (GREASE) frame type, 3 bytes of payload */
	0x40, 0x21, 0x03, 'a', 'b', 'c',
	/* PRIORITY_UPDATE: element 4 as a 2-byte varint, "u=0, i" */
	0x80, 0x0f, 0x07, 0x00, 0x08, 0x40, 0x04, 'u', '=', '0', ',', ' ',
	'i',
	/* PRIORITY_UPDATE: element 8, no field value at all */
	0x80, 0x0f, 0x07, 0x00, 0x01, 0x08,
	/* PRIORITY_UPDATE: element 12, "i" */
	0x80, 0x0f, 0x07, 0x00, 0x02, 0x0c, 'i',
	/* PRIORITY_UPDATE: element 16 as an 8-byte varint, "u=2" */
	0x80, 0x0f, 0x07, 0x00, 0x0b, 0xc0, 0, 0, 0, 0, 0, 0, 0x10,
	'u', '=', '2',
};

/*
 * What nghttp3 1.8.0 reads as nghttp3 does, not as the frames' lengths
 * say: a control stream type as a 2-byte varint; a GOAWAY and a MAX_PUSH_ID
 * that claim more than their ID, the rest read as frames of their own.
 */
static const uint8_t unusual[] = {
	0x40, 0x00,
	0x04, 0x00,
	/* GOAWAY of 7 bytes: ID 0, then a PRIORITY_UPDATE of element 0 */
	0x07, 0x07, 0x00, 0x80, 0x0f, 0x07, 0x00, 0x04, 0x00,
	'u', '=', '1',
	/* MAX_PUSH_ID of 9 bytes: ID 0, then a PRIORITY_UPDATE of element 4 */
	0x0d, 0x09, 0x00, 0x80, 0x0f, 0x07, 0x00, 0x04, 0x04,
	'u', '=', '3',
};

/*
 * Values longer than nghttp3's 8-byte buffer, which it ignores, each
 * followed by one it reads: were the first bytes of a long one left in
 * the buffer, the next would be read after them ("u=1u=1") and refused.
 */
static const uint8_t long_values[] = {
	0x00,
	0x04, 0x00,
	/* PRIORITY_UPDATE: element 0, "u=1,i,u=2,x" (11 bytes) */
	0x80, 0x0f, 0x07, 0x00, 0x0c, 0x00,
	'u', '=', '1', ',', 'i', ',', 'u', '=', '2', ',', 'x',
	/* element 4, "u=1" */
	0x80, 0x0f, 0x07, 0x00, 0x04, 0x04, 'u', '=', '1',
	/* element 8, "u=1,  i,u" (9 bytes: one more than the buffer) */
	0x80, 0x0f, 0x07, 0x00, 0x0a, 0x08,
	'u', '=', '1', ',', ' ', ' ', 'i', ',', 'u',
	/* element 12, "u=2,   i" (8 bytes: as much as the buffer holds) */
	0x80, 0x0f, 0x07, 0x00, 0x09, 0x0c,
	'u', '=', '2', ',', ' ', ' ', ' ', 'i',
	/* element 16, "u=3" */
	0x80, 0x0f, 0x07, 0x00, 0x04, 0x10, 'u', '=', '3',
};

static const uint8_t *ctrl_bytes;
static size_t ctrl_len;

struct reader {
	nghttp3_conn	*h3;
	size_t		 fed;	/* bytes nghttp3 took */
	int		 calls;
};

static int
read_h3(void *arg, int64_t stream_id, const uint8_t *data, size_t len,
    bool fin)
{
	struct reader *r = arg;
	nghttp3_ssize n;

	r->calls++;
	n = nghttp3_conn_read_stream(r->h3, stream_id, data, len, fin);
	if (n < 0) {
		fprintf(stderr, "nghttp3_conn_read_stream: %s\n",
		    nghttp3_strerror((int)n));
		return -1;
	}
	r->fed += (size_t)n;
	return 0;
}

/* Feeds ctrl_bytes cut before each offset in cuts[]; whether all went. */
static bool
feed_cut(const size_t *cuts, int ncuts)
{
	nghttp3_callbacks cb;
	nghttp3_settings settings;
	struct h3_ctrl c;
	struct reader r;
	size_t from = 0, to;
	int i, rv = 0;

	memset(&cb, 0, sizeof(cb));
	nghttp3_settings_default(&settings);
	memset(&r, 0, sizeof(r));
	if (nghttp3_conn_server_new(&r.h3, &cb, &settings, NULL, NULL) != 0)
		return false;
	/* the elements the frames name are streams the client may open */
	nghttp3_conn_set_max_client_streams_bidi(r.h3, 100);
	memset(&c, 0, sizeof(c));
	c.stream = -1;
	for (i = 0; i <= ncuts && rv == 0; i++) {
		to = i < ncuts ? cuts[i] : ctrl_len;
		rv = h3_ctrl_feed(&c, CTRL_STREAM, ctrl_bytes + from,
		    to - from, false, read_h3, &r);
		from = to;
	}
	nghttp3_conn_del(r.h3);
	/* everything handed on, nothing left held */
	return rv == 0 && r.fed == ctrl_len && c.nheld == 0 &&
	    c.stream == CTRL_STREAM;
}

static void
test_every_cut(void)
{
	size_t cuts[2];
	size_t n = ctrl_len;

	for (cuts[0] = 1; cuts[0] < n; cuts[0]++) {
		CHECK(feed_cut(cuts, 1));
		for (cuts[1] = cuts[0] + 1; cuts[1] < n; cuts[1]++)
			CHECK(feed_cut(cuts, 2));
	}
}

/* A byte at a time: every element ID ends a call, and none is let be. */
static void
test_byte_by_byte(void)
{
	size_t cuts[256];
	size_t i;

	for (i = 0; i + 1 < ctrl_len; i++)
		cuts[i] = i + 1;
	CHECK(feed_cut(cuts, (int)(ctrl_len - 1)));
}

/* Streams other than the control stream go through as they come. */
static void
test_other_streams_pass(void)
{
	static const uint8_t enc[] = { 0x02 };	/* a QPACK encoder stream */
	nghttp3_callbacks cb;
	nghttp3_settings settings;
	struct h3_ctrl c;
	struct reader r;

	memset(&cb, 0, sizeof(cb));
	nghttp3_settings_default(&settings);
	memset(&r, 0, sizeof(r));
	CHECK(nghttp3_conn_server_new(&r.h3, &cb, &settings, NULL, NULL) == 0);
	memset(&c, 0, sizeof(c));
	c.stream = -1;
	CHECK(h3_ctrl_feed(&c, 6, enc, sizeof(enc), false, read_h3,
	    &r) == 0);
	CHECK_EQ_INT(r.calls, 1);
	CHECK_EQ_INT(c.stream, -1);
	nghttp3_conn_del(r.h3);
}

int
main(void)
{
	ctrl_bytes = chromium_like;
	ctrl_len = sizeof(chromium_like);
	test_every_cut();
	test_byte_by_byte();
	ctrl_bytes = unusual;
	ctrl_len = sizeof(unusual);
	test_every_cut();
	test_byte_by_byte();
	ctrl_bytes = long_values;
	ctrl_len = sizeof(long_values);
	test_every_cut();
	test_byte_by_byte();
	test_other_streams_pass();
	UNIT_DONE();
}
