/*
 * fuzz.h: what the libFuzzer targets share: the entry points' prototypes
 * and a check that aborts with a message, so a broken invariant is a crash
 * libFuzzer records like any other.
 */
#ifndef QPROXY_FUZZ_H
#define QPROXY_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

#define FUZZ_CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: invariant broken: %s\n",	\
		    __FILE__, __LINE__, #cond);				\
		abort();						\
	}								\
} while (0)

/*
 * The next length-prefixed string of an input: one length byte, or 0xff
 * and two bytes (big-endian) for longer ones. false at the end.
 */
static inline bool
take(const uint8_t **p, const uint8_t *end, const uint8_t **s, size_t *len)
{
	size_t n;

	if (*p >= end)
		return false;
	n = *(*p)++;
	if (n == 0xff) {
		if (end - *p < 2)
			return false;
		n = (size_t)(*p)[0] << 8 | (*p)[1];
		*p += 2;
	}
	if ((size_t)(end - *p) < n)
		return false;
	*s = *p;
	*len = n;
	*p += n;
	return true;
}

#endif
