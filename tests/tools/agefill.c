/*
 * agefill.c: preloaded into qproxy by test_transport. Every random byte
 * of qproxy's wolfSSL comes from getrandom(2) (src/rng.c), a call per
 * request, and the only request of exactly 4 bytes is a session ticket's
 * ticket_age_add (RFC 8446 4.6.1). With $AGEFILL, a number, such calls
 * get that value, big-endian as wolfSSL reads it; the others are passed
 * on. A test can so make every ticket's obfuscated age pass 2^32, which
 * the random value does for about one resumption in a hundred, 11 hours
 * after its ticket.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/types.h>

ssize_t
getrandom(void *buf, size_t len, unsigned int flags)
{
	static ssize_t (*next)(void *, size_t, unsigned int);
	const char *s = getenv("AGEFILL");
	unsigned char *p = buf;
	unsigned long v;

	if (s != NULL && len == 4) {
		v = strtoul(s, NULL, 0);
		p[0] = (unsigned char)(v >> 24);
		p[1] = (unsigned char)(v >> 16);
		p[2] = (unsigned char)(v >> 8);
		p[3] = (unsigned char)v;
		return 4;
	}
	if (next == NULL)
		next = (ssize_t (*)(void *, size_t, unsigned int))
		    dlsym(RTLD_NEXT, "getrandom");
	return next(buf, len, flags);
}
