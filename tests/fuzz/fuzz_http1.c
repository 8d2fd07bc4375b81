/*
 * fuzz_http1.c: the HTTP/1.1 response parser, driven the way exchange.c
 * drives it: heads parsed from an accumulating buffer (1xx skipped,
 * keep-alive responses followed by the next one), bodies decoded from
 * whatever arrived, EOF at the end.
 *
 * Input: byte 0 holds flags (bit 0: the request was HEAD; bit 1: the
 * backend closes after the last byte), bytes 1-4 seed the generator that
 * cuts the rest into reads of random sizes. The same bytes are run twice,
 * cut up and in one piece, and must give the same result: heads, body
 * bytes and the final state. Every parse works on a heap copy of exactly
 * the bytes available, so AddressSanitizer sees any read past them.
 */
#include <stdbool.h>
#include <string.h>

#include "http1.h"
#include "fuzz.h"

#define MAX_RESPONSES	32

enum end {
	END_AGAIN,		/* more input wanted */
	END_DONE,		/* last response complete */
	END_BAD_HEAD,
	END_BAD_BODY,
};

struct result {
	int		 status[MAX_RESPONSES];
	int		 framing[MAX_RESPONSES];
	uint64_t	 length[MAX_RESPONSES];
	size_t		 nresp;
	uint8_t		*body;		/* every payload byte, in order */
	size_t		 bodylen, bodycap;
	enum end	 end;
};

/* xorshift32: the read sizes */
static uint32_t
next_rand(uint32_t *s)
{
	uint32_t x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x ? x : 1;
}

static size_t
read_size(uint32_t *s, size_t left)
{
	uint32_t r = next_rand(s);
	size_t n;

	/* mostly tiny reads, so every framing byte lands at a cut */
	switch (r & 3) {
	case 0:
		n = 1;
		break;
	case 1:
		n = 1 + (r >> 8) % 8;
		break;
	case 2:
		n = 1 + (r >> 8) % 64;
		break;
	default:
		n = 1 + (r >> 8) % 4096;
		break;
	}
	return n < left ? n : left;
}

static void
body_add(struct result *res, const uint8_t *p, size_t n)
{
	if (res->bodylen + n > res->bodycap) {
		size_t cap = res->bodycap ? res->bodycap : 256;

		while (cap < res->bodylen + n)
			cap *= 2;
		if ((res->body = realloc(res->body, cap)) == NULL)
			abort();
		res->bodycap = cap;
	}
	memcpy(res->body + res->bodylen, p, n);
	res->bodylen += n;
}

static bool
is_tchar(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') ||
	    (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* What http1.h promises about a parsed head of n bytes at buf. */
static void
check_head(const uint8_t *buf, long n, bool head_req,
    const struct http1_response *r)
{
	FUZZ_CHECK(n >= 16);
	FUZZ_CHECK(memcmp(buf + n - 2, "\r\n", 2) == 0);
	FUZZ_CHECK(memcmp(buf + n - 4, "\r\n\r\n", 4) == 0 ||
	    r->nheaders == 0);
	FUZZ_CHECK(r->status >= 100 && r->status <= 599);
	FUZZ_CHECK(r->minor_version == 0 || r->minor_version == 1);
	FUZZ_CHECK(r->nheaders <= HTTP1_MAX_HEADERS);
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct http1_header *h = &r->headers[i];
		const uint8_t *name = (const uint8_t *)h->name;
		const uint8_t *value = (const uint8_t *)h->value;

		FUZZ_CHECK(name > buf && name + h->namelen < buf + n);
		FUZZ_CHECK(value >= buf && value + h->valuelen <= buf + n);
		FUZZ_CHECK(h->namelen > 0);
		for (size_t j = 0; j < h->namelen; j++)
			FUZZ_CHECK(is_tchar(name[j]));
		for (size_t j = 0; j < h->valuelen; j++)
			FUZZ_CHECK(value[j] != '\r' && value[j] != '\n' &&
			    value[j] != '\0');
		if (h->valuelen > 0) {
			FUZZ_CHECK(value[0] != ' ' && value[0] != '\t');
			FUZZ_CHECK(value[h->valuelen - 1] != ' ' &&
			    value[h->valuelen - 1] != '\t');
		}
	}
	if (head_req || r->status < 200 || r->status == 204 ||
	    r->status == 304)
		FUZZ_CHECK(r->framing == HTTP1_BODY_NONE);
	if (r->framing == HTTP1_BODY_LENGTH)
		FUZZ_CHECK(r->has_content_length && r->content_length > 0);
	if (!r->has_content_length)
		FUZZ_CHECK(r->content_length == 0);
	if (r->framing == HTTP1_BODY_CLOSE)
		FUZZ_CHECK(!r->keep_alive);
}

/* A heap copy of exactly len bytes (at least one, for malloc's sake). */
static uint8_t *
exact_copy(const uint8_t *p, size_t len)
{
	uint8_t *c;

	if ((c = malloc(len ? len : 1)) == NULL)
		abort();
	if (len > 0)
		memcpy(c, p, len);
	return c;
}

struct run {
	struct result		*res;
	bool			 head_req;
	struct http1_response	 resp;
	struct http1_body	 body;
	uint8_t			*rbuf;
	size_t			 rlen;
	uint64_t		 delivered;
	size_t			 completed;	/* whole responses */
	bool			 head_done;
	bool			 finished;	/* not keep-alive: no more */
	enum end		 error;		/* END_AGAIN: none */
};

/* Heads, then body bytes, as far as the buffer goes; as ex_parse does. */
static void
process(struct run *r)
{
	struct http1_response again;
	enum http1_body_status st;
	const uint8_t *data;
	size_t consumed, datalen;
	uint8_t *copy;
	long n;

	for (;;) {
		while (!r->head_done) {
			copy = exact_copy(r->rbuf, r->rlen);
			n = http1_parse_response(copy, r->rlen, r->head_req,
			    &r->resp);
			FUZZ_CHECK(n >= -1 && n <= (long)r->rlen);
			if (n > 0) {
				check_head(copy, n, r->head_req, &r->resp);
				/* the head alone parses the same */
				FUZZ_CHECK(http1_parse_response(copy,
				    (size_t)n, r->head_req, &again) == n);
				FUZZ_CHECK(again.status == r->resp.status &&
				    again.framing == r->resp.framing &&
				    again.content_length ==
				    r->resp.content_length &&
				    again.keep_alive == r->resp.keep_alive &&
				    again.nheaders == r->resp.nheaders);
			}
			free(copy);
			if (n == 0)
				return;
			if (n < 0 || r->resp.status == 101) {
				r->error = END_BAD_HEAD;
				return;
			}
			if (r->res->nresp < MAX_RESPONSES) {
				size_t i = r->res->nresp++;

				r->res->status[i] = r->resp.status;
				r->res->framing[i] = r->resp.framing;
				r->res->length[i] = r->resp.content_length;
			}
			memmove(r->rbuf, r->rbuf + n, r->rlen - (size_t)n);
			r->rlen -= (size_t)n;
			if (r->resp.status < 200)
				continue;
			r->head_done = true;
			r->delivered = 0;
			http1_body_init(&r->body, &r->resp);
		}

		st = HTTP1_BODY_AGAIN;
		while (r->rlen > 0) {
			copy = exact_copy(r->rbuf, r->rlen);
			st = http1_body_parse(&r->body, copy, r->rlen,
			    &consumed, &data, &datalen);
			FUZZ_CHECK(consumed <= r->rlen);
			if (datalen > 0) {
				FUZZ_CHECK(data >= copy &&
				    data + datalen <= copy + consumed);
				body_add(r->res, data, datalen);
				r->delivered += datalen;
			} else
				FUZZ_CHECK(data == NULL);
			/* trailer bytes: a chunked body's, in what it took */
			if (r->body.trailerlen > 0) {
				struct http1_header th[4];
				size_t nt;

				FUZZ_CHECK(r->resp.framing ==
				    HTTP1_BODY_CHUNKED &&
				    r->body.trailer >= copy &&
				    r->body.trailer + r->body.trailerlen <=
				    copy + consumed);
				nt = http1_trailers(r->body.trailer,
				    r->body.trailerlen, th, 4);
				for (size_t i = 0; i < nt; i++)
					FUZZ_CHECK(th[i].namelen > 0 &&
					    (const uint8_t *)th[i].name >=
					    r->body.trailer &&
					    (const uint8_t *)th[i].value +
					    th[i].valuelen <= r->body.trailer +
					    r->body.trailerlen);
			} else
				FUZZ_CHECK(r->body.trailer == NULL);
			free(copy);
			if (r->resp.framing == HTTP1_BODY_LENGTH)
				FUZZ_CHECK(r->delivered <=
				    r->resp.content_length);
			if (r->resp.framing == HTTP1_BODY_NONE)
				FUZZ_CHECK(r->delivered == 0);
			memmove(r->rbuf, r->rbuf + consumed,
			    r->rlen - consumed);
			r->rlen -= consumed;
			if (st != HTTP1_BODY_AGAIN || consumed == 0)
				break;
		}
		if (st == HTTP1_BODY_AGAIN && r->rlen == 0 &&
		    r->body.framing == HTTP1_BODY_NONE)
			st = http1_body_parse(&r->body, r->rbuf, 0, &consumed,
			    &data, &datalen);
		switch (st) {
		case HTTP1_BODY_AGAIN:
			return;
		case HTTP1_BODY_ERROR:
			r->error = END_BAD_BODY;
			return;
		case HTTP1_BODY_DONE:
			break;
		}
		if (r->resp.framing == HTTP1_BODY_LENGTH)
			FUZZ_CHECK(r->delivered == r->resp.content_length);
		FUZZ_CHECK(r->resp.framing != HTTP1_BODY_CLOSE);
		/* done stays done */
		FUZZ_CHECK(http1_body_parse(&r->body, r->rbuf, r->rlen,
		    &consumed, &data, &datalen) == HTTP1_BODY_DONE &&
		    consumed == 0 && datalen == 0);
		r->completed++;
		r->head_done = false;
		if (!r->resp.keep_alive) {
			/* the connection is not reused: the rest is dropped */
			r->finished = true;
			return;
		}
		/* a pooled connection: what follows is the next response */
		if (r->rlen == 0)
			return;
	}
}

/*
 * Runs the bytes through the parser in reads of random sizes (seed 0:
 * in one read). Returns in res what came out.
 */
static void
run(const uint8_t *in, size_t inlen, bool head_req, bool eof, uint32_t seed,
    struct result *res)
{
	struct run r;
	size_t pos = 0, k;

	memset(res, 0, sizeof(*res));
	memset(&r, 0, sizeof(r));
	r.res = res;
	r.head_req = head_req;
	r.error = END_AGAIN;
	if ((r.rbuf = malloc(inlen ? inlen : 1)) == NULL)
		abort();
	while (pos < inlen) {
		k = seed == 0 ? inlen - pos : read_size(&seed, inlen - pos);
		memcpy(r.rbuf + r.rlen, in + pos, k);
		r.rlen += k;
		pos += k;
		process(&r);
		if (r.error != END_AGAIN || r.finished)
			break;
	}
	if (r.error != END_AGAIN)
		res->end = r.error;
	else if (r.finished)
		res->end = END_DONE;
	else if (r.head_done) {
		if (!eof)
			res->end = END_AGAIN;
		else if (http1_body_eof(&r.body) == HTTP1_BODY_DONE) {
			FUZZ_CHECK(r.body.framing == HTTP1_BODY_CLOSE);
			res->end = END_DONE;
		} else
			res->end = END_BAD_BODY;
	} else
		res->end = r.rlen == 0 && r.completed > 0 ? END_DONE :
		    END_AGAIN;
	free(r.rbuf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct result cut, whole;
	uint32_t seed;
	bool head_req, eof;

	if (size < 5 || size > 1 << 20)
		return 0;
	head_req = data[0] & 1;
	eof = (data[0] & 2) != 0;
	seed = (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 |
	    (uint32_t)data[3] << 8 | data[4];
	if (seed == 0)
		seed = 1;
	data += 5;
	size -= 5;

	run(data, size, head_req, eof, seed, &cut);
	run(data, size, head_req, eof, 0, &whole);
	FUZZ_CHECK(cut.end == whole.end);
	FUZZ_CHECK(cut.nresp == whole.nresp);
	for (size_t i = 0; i < cut.nresp; i++)
		FUZZ_CHECK(cut.status[i] == whole.status[i] &&
		    cut.framing[i] == whole.framing[i] &&
		    cut.length[i] == whole.length[i]);
	/*
	 * The body bytes must match, except after bad framing: a call that
	 * fails drops the span it found, and that span may have been handed
	 * out by an earlier call when the input came in pieces. The stream is
	 * reset then, so those bytes do not matter.
	 */
	if (cut.end != END_BAD_BODY) {
		FUZZ_CHECK(cut.bodylen == whole.bodylen);
		FUZZ_CHECK(cut.bodylen == 0 ||
		    memcmp(cut.body, whole.body, cut.bodylen) == 0);
	}
	free(cut.body);
	free(whole.body);
	return 0;
}
