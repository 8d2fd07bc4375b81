/*
 * bufq.h: a byte queue in fixed-size chunks. Bytes never move once queued,
 * so pointers handed to nghttp3 stay valid until they are consumed. Three
 * positions: consumed (freed) <= sent <= tail.
 */
#ifndef QPROXY_BUFQ_H
#define QPROXY_BUFQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define BUFQ_CHUNK_SIZE	16384

struct bufq_chunk;

struct bufq {
	struct bufq_chunk	*head, *tail;
	struct bufq_chunk	*reserved;	/* bufq_reserve's fresh chunks */
	size_t			 head_off;	/* consumed bytes in head */
	struct bufq_chunk	*send;		/* chunk holding the send position */
	size_t			 send_off;
	size_t			 len;		/* queued, not consumed */
	size_t			 unsent;	/* queued, not yet marked sent */
	size_t			 nchunks;	/* holding bytes (linked) */
	size_t			*count;		/* of them, also counted there
						   (bufq_count), or NULL */
};

void	bufq_init(struct bufq *);
/*
 * From now on, *count also counts the chunks holding this queue's bytes
 * (the caller's total over many queues); bufq_free keeps the link.
 */
void	bufq_count(struct bufq *, size_t *count);
/* Frees every chunk. */
void	bufq_free(struct bufq *);
/* Appends all of data (memory grows by chunks); 0, or -1 when out of memory. */
int	bufq_append(struct bufq *, const void *data, size_t len);
/*
 * Room to write into at the tail, for readv(2) straight into the queue: up
 * to iovcnt vectors, the free end of the last chunk and fresh chunks after
 * it; returns how many (0 when out of memory). bufq_commit must follow
 * before any other call on the queue.
 */
size_t	bufq_reserve(struct bufq *, struct iovec *, size_t iovcnt);
/* Queues the first n bytes written into the reserved room, frees the rest. */
void	bufq_commit(struct bufq *, size_t n);
/* Fills at most iovcnt vectors with unsent bytes; returns how many. */
size_t	bufq_peek_unsent(const struct bufq *, struct iovec *, size_t iovcnt);
/* Marks n unsent bytes as sent. */
void	bufq_mark_sent(struct bufq *, size_t n);
/* Drops the oldest n bytes, which must have been marked sent. */
void	bufq_consume(struct bufq *, size_t n);
/* Marks sent and consumes: for queues whose bytes are done once written. */
void	bufq_drain(struct bufq *, size_t n);
/* Moves every unsent byte of src to the end of dst; src is left empty. */
int	bufq_move(struct bufq *dst, struct bufq *src);

/* Frees the chunks kept for reuse (at exit). */
void	bufq_cache_free(void);
/* For the statistics: chunks holding bytes now, and kept for reuse. */
size_t	bufq_chunks_in_use(void);
size_t	bufq_chunks_free(void);

#endif
