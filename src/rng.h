/* rng.h: random bytes from the kernel (rng.c), for keys, IDs and nonces. */
#ifndef QPROXY_RNG_H
#define QPROXY_RNG_H

#include <stddef.h>

/* wolfSSL's source: 0, or -1 if the kernel gave nothing. */
int	qproxy_rand_block(unsigned char *, unsigned int);
/* Fills buf; aborts if the kernel gives nothing, which it never should. */
void	rng_fill(void *buf, size_t len);

#endif
