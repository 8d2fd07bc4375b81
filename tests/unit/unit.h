/* unit.h: the unit tests' few macros. Each test binary prints one closing
 * line "N passed, N failed" and exits non-zero when anything failed. */
#ifndef QPROXY_UNIT_H
#define QPROXY_UNIT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unit_passed, unit_failed;

/* A repeatable sequence for randomized tests; set unit_seed to pick one. */
static uint32_t unit_seed = 12345;

static inline uint32_t
unit_rand(void)
{
	unit_seed = unit_seed * 1103515245u + 12345u;
	return unit_seed >> 8;
}

/* A file of this text, made or emptied; the test ends if it cannot be. */
static inline void
unit_write_file(const char *path, const char *text)
{
	FILE	*fp;

	if ((fp = fopen(path, "w")) == NULL) {
		perror(path);
		exit(1);
	}
	fputs(text, fp);
	fclose(fp);
}

#define CHECK(cond) do {						\
	if (cond)							\
		unit_passed++;						\
	else {								\
		unit_failed++;						\
		fprintf(stderr, "%s:%d: CHECK(%s) failed\n",		\
		    __FILE__, __LINE__, #cond);				\
	}								\
} while (0)

#define CHECK_EQ_INT(a, b) do {						\
	long long a_ = (long long)(a), b_ = (long long)(b);		\
	if (a_ == b_)							\
		unit_passed++;						\
	else {								\
		unit_failed++;						\
		fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", \
		    __FILE__, __LINE__, #a, a_, #b, b_);		\
	}								\
} while (0)

#define CHECK_EQ_STR(a, b) do {						\
	const char *a_ = (a), *b_ = (b);				\
	if (a_ != NULL && b_ != NULL && strcmp(a_, b_) == 0)		\
		unit_passed++;						\
	else {								\
		unit_failed++;						\
		fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", \
		    __FILE__, __LINE__, #a, a_ ? a_ : "(null)",		\
		    b_ ? b_ : "(null)");				\
	}								\
} while (0)

#define UNIT_DONE() do {						\
	printf("%s: %d passed, %d failed\n", __FILE__, unit_passed,	\
	    unit_failed);						\
	return unit_failed ? 1 : 0;					\
} while (0)

#endif
