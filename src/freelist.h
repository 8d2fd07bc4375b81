/*
 * freelist.h: a bounded stack of freed objects of one size, kept to spare
 * malloc on busy paths (bufq chunks, exchanges). A kept object's first
 * bytes hold the link; the whole object is poisoned for AddressSanitizer
 * while it is kept, so a use after "free" is still reported.
 */
#ifndef QPROXY_FREELIST_H
#define QPROXY_FREELIST_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "asan.h"

struct freelist {
	void	*head;
	size_t	 n;		/* kept now */
	size_t	 max;
};

#define FREELIST_INIT(max)	{ NULL, 0, (max) }

/* A kept object of size bytes (contents undefined), or NULL. */
static inline void *
freelist_get(struct freelist *fl, size_t size)
{
	void *p = fl->head;

	if (p != NULL) {
		asan_unpoison(p, size);
		memcpy(&fl->head, p, sizeof(fl->head));
		fl->n--;
	}
	return p;
}

/* Keeps p (size bytes, at least a pointer's) while there is room. */
static inline void
freelist_put(struct freelist *fl, void *p, size_t size)
{
	if (fl->n >= fl->max) {
		free(p);
		return;
	}
	memcpy(p, &fl->head, sizeof(fl->head));
	fl->head = p;
	fl->n++;
	asan_poison(p, size);
}

/* Frees every kept object (at exit). */
static inline void
freelist_drain(struct freelist *fl, size_t size)
{
	void *p;

	while ((p = freelist_get(fl, size)) != NULL)
		free(p);
}

#endif
