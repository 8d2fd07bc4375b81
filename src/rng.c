/*
 * rng.c: the random source of wolfSSL as qproxy builds it
 * (CUSTOM_RAND_GENERATE_BLOCK, see scripts/setup-deps.sh): the kernel's
 * CSPRNG through getrandom(2). Every program linking that wolfSSL links
 * this file.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/random.h>

#include "rng.h"

int	wc_GenerateSeed(void *, unsigned char *, unsigned int);

/* 0, or -1 if the kernel gave nothing (wolfSSL then fails the operation). */
int
qproxy_rand_block(unsigned char *out, unsigned int len)
{
	size_t	 off = 0;
	ssize_t	 n;

	while (off < len) {
		n = getrandom(out + off, len - off, 0);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		off += (size_t)n;
	}
	return 0;
}

void
rng_fill(void *buf, size_t len)
{
	unsigned char *p = buf;

	for (size_t off = 0; off < len; off += 65536)
		if (qproxy_rand_block(p + off, (unsigned int)(len - off <
		    65536 ? len - off : 65536)) == -1)
			abort();
}

/*
 * wolfSSL_RAND_poll (its OpenSSL layer) still calls wc_GenerateSeed, which
 * wolfSSL leaves out when CUSTOM_RAND_GENERATE_BLOCK is set: the same source.
 * (Its first argument is an OS_Seed, unused here.)
 */
int
wc_GenerateSeed(void *os, unsigned char *seed, unsigned int len)
{
	(void)os;
	return qproxy_rand_block(seed, len) == 0 ? 0 : -1;
}
