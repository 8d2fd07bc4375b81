/*
 * strbuf.h: a growable text buffer with a hard size limit. An append that
 * does not fit is cut (truncated); one that finds no memory is dropped
 * (nomem). Either way the text is not all that was put in it.
 */
#ifndef QPROXY_STRBUF_H
#define QPROXY_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "log.h"

struct strbuf {
	char	*s;		/* NUL-terminated; NULL until first append */
	size_t	 len, cap;
	size_t	 max;		/* appends past it are cut; truncated is set */
	bool	 truncated;
	bool	 nomem;		/* some text lost for want of memory */
};

void	strbuf_init(struct strbuf *, size_t max);
void	strbuf_free(struct strbuf *);
/* Empties it for new text, keeping its memory. */
void	strbuf_clear(struct strbuf *);
void	strbuf_printf(struct strbuf *, const char *, ...) QP_PRINTF(2, 3);
void	strbuf_append(struct strbuf *, const char *, size_t);
/* Appends s as a JSON string, quotes included. */
void	strbuf_json_string(struct strbuf *, const char *s);
/* s as a Prometheus label value: quoted, with \\, \" and \n escaped. */
void	strbuf_metric_label(struct strbuf *, const char *s);
/* The text so far ("" when empty). */
const char *strbuf_str(const struct strbuf *);

#endif
