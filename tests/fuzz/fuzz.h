/*
 * fuzz.h: what the libFuzzer targets share: the entry points' prototypes
 * and a check that aborts with a message, so a broken invariant is a crash
 * libFuzzer records like any other.
 */
#ifndef QPROXY_FUZZ_H
#define QPROXY_FUZZ_H

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

#endif
