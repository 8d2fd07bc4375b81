/*
 * gcmbench: nanoseconds per packet sealed and opened with AES-GCM by each
 * path this CPU can take (wolfSSL's alone, gcm.c on 256-bit registers, on
 * 512-bit registers), one key, as tls.c calls them: gcm_seal or
 * gcm_open, and wolfSSL when they leave the packet. Not a test; build and
 * run it by hand:
 *
 *	make build/tests/gcmbench && build/tests/gcmbench [-l len] [-a aadlen]
 *	    [-k 16|32] [-n packets] [-r rounds]
 *
 * Each round times every path in turn (so that a host whose speed drifts
 * moves them alike); the median and the best round are printed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

#include "gcm.h"

#define MAXLEN		1500
#define MAXROUNDS	101

static uint8_t buf[MAXLEN + 16], sealed[MAXLEN + 16], out[MAXLEN + 16];
static uint8_t aad[64], nonce[GCM_NONCE_LEN];

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
seal(Aes *aes, uint8_t *p, size_t len, size_t aadlen)
{
	if (!gcm_seal(aes, p, p, len, nonce, aad, aadlen) &&
	    wc_AesGcmEncrypt(aes, p, p, (word32)len, nonce, sizeof(nonce),
	    p + len, 16, aad, (word32)aadlen) != 0) {
		fprintf(stderr, "gcmbench: wc_AesGcmEncrypt failed\n");
		exit(1);
	}
}

static void
open_(Aes *aes, size_t len, size_t aadlen)
{
	int rv;

	rv = gcm_open(aes, out, sealed, len, nonce, aad, aadlen);
	if (rv == -1)
		rv = wc_AesGcmDecrypt(aes, out, sealed, (word32)len, nonce,
		    sizeof(nonce), sealed + len, 16, aad, (word32)aadlen) == 0;
	if (rv != 1) {
		fprintf(stderr, "gcmbench: a packet did not open\n");
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	static const char *const names[] = { "wolfSSL", "gcm.c AVX2",
	    "gcm.c AVX-512" };
	static double s[GCM_VAES512 + 1][MAXROUNDS];
	static double o[GCM_VAES512 + 1][MAXROUNDS];
	size_t len = 1400, aadlen = 20, keylen = 16;
	long n = 200000, rounds = 7;
	uint8_t key[32];
	double t;
	Aes aes;
	int c, p, r;

	while ((c = getopt(argc, argv, "a:k:l:n:r:")) != -1) {
		switch (c) {
		case 'a':
			aadlen = strtoul(optarg, NULL, 10);
			break;
		case 'k':
			keylen = strtoul(optarg, NULL, 10);
			break;
		case 'l':
			len = strtoul(optarg, NULL, 10);
			break;
		case 'n':
			n = strtol(optarg, NULL, 10);
			break;
		case 'r':
			rounds = strtol(optarg, NULL, 10);
			break;
		default:
			goto usage;
		}
	}
	if (len > MAXLEN || aadlen > sizeof(aad) || (keylen != 16 &&
	    keylen != 32) || n < 1 || rounds < 1 || rounds > MAXROUNDS)
		goto usage;
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 37 + 1);
	if (wc_AesInit(&aes, NULL, INVALID_DEVID) != 0 ||
	    wc_AesGcmSetKey(&aes, key, (word32)keylen) != 0)
		return 1;
	memset(buf, 0x5a, sizeof(buf));
	memcpy(sealed, buf, len);
	seal(&aes, sealed, len, aadlen);
	/* past the key's probation: expanded for gcm.c's paths */
	for (int i = 0; i < GCM_PROBATION; i++)
		open_(&aes, len, aadlen);
	for (r = 0; r < rounds; r++) {
		for (p = GCM_WOLFSSL; p <= (int)gcm_cpu(); p++) {
			gcm_select((enum gcm_path)p);
			t = now();
			for (long i = 0; i < n; i++)
				seal(&aes, buf, len, aadlen);
			s[p][r] = (now() - t) / n;
			t = now();
			for (long i = 0; i < n; i++)
				open_(&aes, len, aadlen);
			o[p][r] = (now() - t) / n;
		}
	}
	printf("%zu-byte packets, %zu bytes of AAD, AES-%zu-GCM, %ld x %ld "
	    "each: ns per packet, median (best)\n", len, aadlen, keylen * 8,
	    rounds, n);
	for (p = GCM_WOLFSSL; p <= (int)gcm_cpu(); p++) {
		qsort(s[p], rounds, sizeof(double), cmp);
		qsort(o[p], rounds, sizeof(double), cmp);
		printf("%-14s sealing %6.1f (%6.1f)  opening %6.1f (%6.1f)\n",
		    names[p], s[p][rounds / 2], s[p][0], o[p][rounds / 2],
		    o[p][0]);
	}
	return 0;
usage:
	fprintf(stderr, "usage: gcmbench [-l len (0-%d)] [-a aadlen (0-%zu)] "
	    "[-k 16|32] [-n packets] [-r rounds (1-%d)]\n", MAXLEN,
	    sizeof(aad), MAXROUNDS);
	return 2;
}
