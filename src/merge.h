/* merge.h: one reply out of the workers' replies to a command. */
#ifndef QPROXY_MERGE_H
#define QPROXY_MERGE_H

#include <stddef.h>

#include "strbuf.h"

#define MERGE_MAX	64	/* texts at most: WORKERS_MAX */

/*
 * Appends to out the n texts (NUL-terminated, all of the same shape)
 * merged: counts added up, the rest as merge.c says. -1 when their shapes
 * differ; out then holds part of a merge, for the caller to drop.
 */
int	merge_replies(const char *const *texts, size_t n, struct strbuf *out);

#endif
