/* bufq.c: a chunked byte queue with stable addresses. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bufq.h"
#include "freelist.h"

struct bufq_chunk {
	struct bufq_chunk	*next;
	size_t			 len;		/* bytes written into data */
	uint8_t			 data[BUFQ_CHUNK_SIZE];
};

/* A few free chunks are kept to spare malloc on busy streams. */
static struct freelist chunk_cache = FREELIST_INIT(64);
static size_t nused;

static struct bufq_chunk *
chunk_new(void)
{
	struct bufq_chunk *c;

	if ((c = freelist_get(&chunk_cache, sizeof(*c))) == NULL &&
	    (c = malloc(sizeof(*c))) == NULL)
		return NULL;
	c->next = NULL;
	c->len = 0;
	nused++;
	return c;
}

static void
chunk_free(struct bufq_chunk *c)
{
	nused--;
	freelist_put(&chunk_cache, c, sizeof(*c));
}

void
bufq_cache_free(void)
{
	freelist_drain(&chunk_cache, sizeof(struct bufq_chunk));
}

size_t
bufq_chunks_in_use(void)
{
	return nused;
}

size_t
bufq_chunks_free(void)
{
	return chunk_cache.n;
}

void
bufq_init(struct bufq *q)
{
	memset(q, 0, sizeof(*q));
}

void
bufq_count(struct bufq *q, size_t *count)
{
	q->count = count;
}

/* Frees a chain of chunks; linked ones (holding bytes) are counted off. */
static void
chunks_free(struct bufq *q, struct bufq_chunk *c, bool linked)
{
	struct bufq_chunk *next;

	for (; c != NULL; c = next) {
		next = c->next;
		if (linked) {
			q->nchunks--;
			if (q->count != NULL)
				(*q->count)--;
		}
		chunk_free(c);
	}
}

void
bufq_free(struct bufq *q)
{
	size_t *count = q->count;

	chunks_free(q, q->head, true);
	chunks_free(q, q->reserved, false);
	bufq_init(q);
	q->count = count;
}

/* Links an empty chunk at the tail. */
static void
link_tail(struct bufq *q, struct bufq_chunk *c)
{
	c->next = NULL;
	if (q->tail != NULL)
		q->tail->next = c;
	else {
		q->head = c;
		q->head_off = 0;
	}
	q->tail = c;
	q->nchunks++;
	if (q->count != NULL)
		(*q->count)++;
	if (q->send == NULL) {
		q->send = c;
		q->send_off = 0;
	}
}

int
bufq_append(struct bufq *q, const void *data, size_t len)
{
	const uint8_t *p = data;
	struct bufq_chunk *c;
	size_t n;

	while (len > 0) {
		c = q->tail;
		if (c == NULL || c->len == BUFQ_CHUNK_SIZE) {
			if ((c = chunk_new()) == NULL)
				return -1;
			link_tail(q, c);
		}
		n = BUFQ_CHUNK_SIZE - c->len;
		if (n > len)
			n = len;
		memcpy(c->data + c->len, p, n);
		c->len += n;
		p += n;
		len -= n;
		q->len += n;
		q->unsent += n;
	}
	return 0;
}

size_t
bufq_reserve(struct bufq *q, struct iovec *iov, size_t iovcnt)
{
	struct bufq_chunk *c = q->tail, **link = &q->reserved;
	size_t i = 0;

	if (c != NULL && c->len < BUFQ_CHUNK_SIZE && iovcnt > 0) {
		iov[i].iov_base = c->data + c->len;
		iov[i].iov_len = BUFQ_CHUNK_SIZE - c->len;
		i++;
	}
	for (; i < iovcnt; i++) {
		if ((c = chunk_new()) == NULL)
			break;
		*link = c;
		link = &c->next;
		iov[i].iov_base = c->data;
		iov[i].iov_len = BUFQ_CHUNK_SIZE;
	}
	return i;
}

void
bufq_commit(struct bufq *q, size_t n)
{
	struct bufq_chunk *c = q->tail, *next;
	size_t k;

	q->len += n;
	q->unsent += n;
	if (c != NULL && c->len < BUFQ_CHUNK_SIZE) {
		k = BUFQ_CHUNK_SIZE - c->len;
		if (k > n)
			k = n;
		c->len += k;
		n -= k;
	}
	for (c = q->reserved; c != NULL; c = next) {
		next = c->next;
		if (n == 0) {
			chunk_free(c);		/* never linked */
			continue;
		}
		k = n < BUFQ_CHUNK_SIZE ? n : BUFQ_CHUNK_SIZE;
		link_tail(q, c);
		c->len = k;
		n -= k;
	}
	q->reserved = NULL;
}

size_t
bufq_peek_unsent(const struct bufq *q, struct iovec *iov, size_t iovcnt)
{
	const struct bufq_chunk *c;
	size_t off, i = 0;

	if (q->unsent == 0)
		return 0;
	for (c = q->send, off = q->send_off; c != NULL && i < iovcnt;
	    c = c->next, off = 0) {
		if (c->len == off)
			continue;
		iov[i].iov_base = (void *)(uintptr_t)(c->data + off);
		iov[i].iov_len = c->len - off;
		i++;
	}
	return i;
}

void
bufq_mark_sent(struct bufq *q, size_t n)
{
	size_t k;

	q->unsent -= n;
	while (n > 0) {
		k = q->send->len - q->send_off;
		if (k > n)
			k = n;
		q->send_off += k;
		n -= k;
		if (q->send_off == q->send->len && q->send->next != NULL) {
			q->send = q->send->next;
			q->send_off = 0;
		}
	}
	/* Skip a fully sent chunk so the next append can find its place. */
	if (q->send != NULL && q->send_off == q->send->len &&
	    q->send->next != NULL) {
		q->send = q->send->next;
		q->send_off = 0;
	}
}

void
bufq_consume(struct bufq *q, size_t n)
{
	struct bufq_chunk *c;
	size_t k;

	q->len -= n;
	while (n > 0 && (c = q->head) != NULL) {
		k = c->len - q->head_off;
		if (k > n)
			k = n;
		q->head_off += k;
		n -= k;
		if (q->head_off == c->len &&
		    (c->len == BUFQ_CHUNK_SIZE || c->next != NULL ||
		    q->len == 0)) {
			if (q->send == c) {
				/* everything in it was sent: move on */
				q->send = c->next;
				q->send_off = 0;
			}
			q->head = c->next;
			q->head_off = 0;
			if (q->tail == c)
				q->tail = NULL;
			q->nchunks--;
			if (q->count != NULL)
				(*q->count)--;
			chunk_free(c);
		}
	}
}

void
bufq_drain(struct bufq *q, size_t n)
{
	bufq_mark_sent(q, n);
	bufq_consume(q, n);
}

int
bufq_move(struct bufq *dst, struct bufq *src)
{
	struct iovec iov[16];
	size_t i, n;

	while ((n = bufq_peek_unsent(src, iov, 16)) > 0) {
		for (i = 0; i < n; i++) {
			if (bufq_append(dst, iov[i].iov_base,
			    iov[i].iov_len) == -1)
				return -1;
			bufq_drain(src, iov[i].iov_len);
		}
	}
	bufq_free(src);
	return 0;
}
