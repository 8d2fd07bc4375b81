/*
 * test_h3fin.c: a response's FIN that nghttp3 1.8.0 offers alone, after
 * all of the body went, is not lost when QUIC does not take it (see
 * h3_writev). A real nghttp3 server connection answers a request with a
 * body whose end comes after its bytes were written (read_data's bare
 * EOF, as for a body delimited by the backend's close); the FIN is
 * offered and not taken, the ACK of the stream's bytes comes, and it is
 * offered and not taken again: nghttp3 1.8.0 then never offers it again,
 * h3_writev does, until it is taken.
 */
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "unit.h"

#define REQ_STREAM	0

static uint8_t body[1000];
static bool body_given, body_eof;

static nghttp3_ssize
read_body(nghttp3_conn *conn, int64_t stream_id, nghttp3_vec *vec,
    size_t veccnt, uint32_t *pflags, void *user_data, void *stream_user_data)
{
	if (!body_given) {
		body_given = true;
		vec[0].base = body;
		vec[0].len = sizeof(body);
		return 1;
	}
	if (!body_eof)
		return NGHTTP3_ERR_WOULDBLOCK;
	*pflags |= NGHTTP3_DATA_FLAG_EOF;
	return 0;
}

static bool got_request;

static int
end_headers(nghttp3_conn *conn, int64_t stream_id, int fin, void *user_data,
    void *stream_user_data)
{
	got_request = true;
	return 0;
}

/* Everything the client has to write, read by the server at once. */
static void
client_to_server(nghttp3_conn *cli, nghttp3_conn *srv)
{
	nghttp3_vec vec[16];
	int64_t sid;
	int fin;
	nghttp3_ssize n;
	size_t len;

	while ((n = nghttp3_conn_writev_stream(cli, &sid, &fin, vec, 16)) >= 0 &&
	    sid != -1) {
		len = 0;
		for (nghttp3_ssize i = 0; i < n; i++) {
			CHECK(nghttp3_conn_read_stream(srv, sid, vec[i].base,
			    vec[i].len, 0) >= 0);
			len += vec[i].len;
		}
		if (fin)
			CHECK(nghttp3_conn_read_stream(srv, sid, NULL, 0, 1) >=
			    0);
		CHECK(nghttp3_conn_add_write_offset(cli, sid, len) == 0);
	}
}

/*
 * A server connection with a response under way on REQ_STREAM: its head
 * and body written, the end of the body yet to come. Returns the bytes of
 * the request stream written.
 */
static uint64_t
setup(nghttp3_conn **cli, nghttp3_conn **srv)
{
	static const nghttp3_data_reader reader = { read_body };
	nghttp3_callbacks ccb, scb;
	nghttp3_settings settings;
	nghttp3_nv req[] = {
		{ (uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0 },
		{ (uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0 },
		{ (uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0 },
		{ (uint8_t *)":path", (uint8_t *)"/", 5, 1, 0 },
	};
	nghttp3_nv resp[] = {
		{ (uint8_t *)":status", (uint8_t *)"200", 7, 3, 0 },
	};
	nghttp3_vec vec[16];
	int64_t sid, owed = -1;
	int fin;
	nghttp3_ssize n;
	uint64_t written = 0;
	size_t len;

	body_given = body_eof = got_request = false;
	memset(&ccb, 0, sizeof(ccb));
	memset(&scb, 0, sizeof(scb));
	scb.end_headers = end_headers;
	nghttp3_settings_default(&settings);
	CHECK(nghttp3_conn_client_new(cli, &ccb, &settings, NULL, NULL) == 0);
	CHECK(nghttp3_conn_server_new(srv, &scb, &settings, NULL, NULL) == 0);
	CHECK(nghttp3_conn_bind_control_stream(*cli, 2) == 0);
	CHECK(nghttp3_conn_bind_qpack_streams(*cli, 6, 10) == 0);
	CHECK(nghttp3_conn_bind_control_stream(*srv, 3) == 0);
	CHECK(nghttp3_conn_bind_qpack_streams(*srv, 7, 11) == 0);
	nghttp3_conn_set_max_client_streams_bidi(*srv, 100);
	CHECK(nghttp3_conn_submit_request(*cli, REQ_STREAM, req, 4, NULL,
	    NULL) == 0);
	client_to_server(*cli, *srv);
	CHECK(got_request);
	CHECK(nghttp3_conn_submit_response(*srv, REQ_STREAM, resp, 1,
	    &reader) == 0);
	/* all of it is taken: the head, the body, the server's own streams */
	while ((n = h3_writev(*srv, &owed, true, &sid, &fin, vec, 16)) >= 0 &&
	    sid != -1) {
		len = 0;
		for (nghttp3_ssize i = 0; i < n; i++)
			len += vec[i].len;
		CHECK(!fin);
		CHECK(nghttp3_conn_add_write_offset(*srv, sid, len) == 0);
		if (sid == REQ_STREAM)
			written += len;
	}
	CHECK(written > sizeof(body));
	return written;
}

/* What is offered next: the FIN alone on REQ_STREAM, or nothing. */
static bool
fin_offered(nghttp3_conn *srv, int64_t *owed, bool workaround)
{
	nghttp3_vec vec[16];
	int64_t sid;
	int fin;
	nghttp3_ssize n;

	if (workaround)
		n = h3_writev(srv, owed, true, &sid, &fin, vec, 16);
	else
		n = nghttp3_conn_writev_stream(srv, &sid, &fin, vec, 16);
	return n == 0 && sid == REQ_STREAM && fin;
}

/* Offers the stream's FIN alone (from nghttp3, or owed), not taken. */
static void
offer_not_taken(nghttp3_conn *srv, int64_t *owed, bool workaround)
{
	CHECK(fin_offered(srv, owed, workaround));
	if (workaround)
		h3_fin_offered(owed, REQ_STREAM, false);
}

/*
 * Offers the FIN (owed) and has it taken: nothing owed then, nghttp3 told
 * (add_write_offset of 0) and nothing more offered.
 */
static void
offer_taken(nghttp3_conn *srv, int64_t *owed)
{
	int64_t sid;
	int fin;
	nghttp3_vec vec[16];

	CHECK(fin_offered(srv, owed, true));
	h3_fin_offered(owed, REQ_STREAM, true);
	CHECK_EQ_INT(*owed, -1);
	CHECK(nghttp3_conn_add_write_offset(srv, REQ_STREAM, 0) == 0);
	CHECK_EQ_INT(h3_writev(srv, owed, true, &sid, &fin, vec, 16), 0);
	CHECK_EQ_INT(sid, -1);
}

/*
 * nghttp3 1.8.0 itself: the FIN offered alone, not taken, the stream's
 * bytes ACKed, the FIN not taken again: never offered after that.
 * (A later nghttp3 keeps offering it; this only says which one is here.)
 */
static bool
nghttp3_loses_fin(void)
{
	nghttp3_conn *cli, *srv;
	uint64_t written = setup(&cli, &srv);
	int64_t owed = -1;
	bool lost;

	body_eof = true;
	CHECK(nghttp3_conn_resume_stream(srv, REQ_STREAM) == 0);
	offer_not_taken(srv, &owed, false);
	CHECK(nghttp3_conn_add_ack_offset(srv, REQ_STREAM, written) == 0);
	offer_not_taken(srv, &owed, false);
	lost = !fin_offered(srv, &owed, false);
	nghttp3_conn_del(srv);
	nghttp3_conn_del(cli);
	return lost;
}

/* The same with h3_writev: the FIN stays owed until it is taken. */
static void
test_fin_kept(void)
{
	nghttp3_conn *cli, *srv;
	uint64_t written = setup(&cli, &srv);
	int64_t owed = -1;

	body_eof = true;
	CHECK(nghttp3_conn_resume_stream(srv, REQ_STREAM) == 0);
	offer_not_taken(srv, &owed, true);
	CHECK_EQ_INT(owed, REQ_STREAM);
	CHECK(nghttp3_conn_add_ack_offset(srv, REQ_STREAM, written) == 0);
	offer_not_taken(srv, &owed, true);
	offer_not_taken(srv, &owed, true);
	/* taken now: nghttp3 hears of it, and has nothing more to offer */
	offer_taken(srv, &owed);
	nghttp3_conn_del(srv);
	nghttp3_conn_del(cli);
}

/* Not ACKed in between: the FIN taken at its second offer, once only. */
static void
test_fin_taken_later(void)
{
	nghttp3_conn *cli, *srv;
	int64_t owed = -1;

	(void)setup(&cli, &srv);
	body_eof = true;
	CHECK(nghttp3_conn_resume_stream(srv, REQ_STREAM) == 0);
	offer_not_taken(srv, &owed, true);
	offer_taken(srv, &owed);
	nghttp3_conn_del(srv);
	nghttp3_conn_del(cli);
}

/* An owed FIN needs no connection credit; nghttp3's data does. */
static void
test_owed_without_credit(void)
{
	int64_t owed = 4, sid;
	int fin;
	nghttp3_vec vec[1];

	CHECK_EQ_INT(h3_writev(NULL, &owed, false, &sid, &fin, vec, 1), 0);
	CHECK_EQ_INT(sid, 4);
	CHECK(fin);
	owed = -1;
	CHECK_EQ_INT(h3_writev(NULL, &owed, false, &sid, &fin, vec, 1), 0);
	CHECK_EQ_INT(sid, -1);
	CHECK(!fin);
}

int
main(void)
{
	printf("nghttp3 %s: %s\n", nghttp3_version(0)->version_str,
	    nghttp3_loses_fin() ? "loses such a FIN by itself" :
	    "keeps such a FIN by itself");
	test_fin_kept();
	test_fin_taken_later();
	test_owed_without_credit();
	UNIT_DONE();
}
