/*
 * test_gcm.c: gcm_seal against wolfSSL's wc_AesGcmEncrypt, byte for byte,
 * and gcm_open of what wolfSSL sealed (and of it with one bit changed),
 * for every length of a packet and then some, both key sizes, in place and
 * not, a key changed under the same Aes; that the path is taken on a CPU
 * that has it, that a message too long for it is left alone, that a key
 * is expanded only at its GCM_PROBATION-th use, and that a key in use is
 * not pushed out by many used once.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

#include "gcm.h"
#include "unit.h"

#define MAXLEN	5000

static uint8_t plain[MAXLEN], want[MAXLEN + 16], got[MAXLEN + 16];
static uint8_t forged[MAXLEN + 16], dec[MAXLEN + 16];

static bool
cpu_has_path(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
	/* the compiler's view, not gcm.c's own */
	return __builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512vl") &&
	    __builtin_cpu_supports("vaes") &&
	    __builtin_cpu_supports("vpclmulqdq");
#else
	return gcm_available();
#endif
}

static void
fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)unit_rand();
}

/*
 * want (wolfSSL's ciphertext and tag of plain) opened by gcm_open, and
 * refused with one bit of it or of the AAD changed.
 */
static bool
opens(Aes *aes, size_t len, const uint8_t *nonce, uint8_t *aad,
    size_t aadlen, bool inplace, bool taken, bool must)
{
	size_t flip = unit_rand() % (len + 16 + aadlen);
	uint8_t *out = inplace ? dec : got;
	int rv;

	memcpy(dec, want, len + 16);
	rv = gcm_open(aes, out, dec, len, nonce, aad, aadlen);
	if (rv == 0 || (must && rv != (taken ? 1 : -1)))
		return false;
	if (rv == -1)
		return true;
	if (memcmp(out, plain, len) != 0)
		return false;
	/* one bit off in the ciphertext, the tag or the AAD */
	memcpy(forged, want, len + 16);
	if (flip < len + 16)
		forged[flip] ^= (uint8_t)(1 << (unit_rand() % 8));
	else
		aad[flip - len - 16] ^= 1;
	memset(out, 0xa5, len);
	if (inplace)
		memcpy(dec, forged, len + 16);
	rv = gcm_open(aes, out, inplace ? dec : forged, len, nonce, aad, aadlen);
	if (flip >= len + 16)
		aad[flip - len - 16] ^= 1;
	if (rv != 0)
		return false;
	/* nothing of a message that failed is left */
	for (size_t i = 0; i < len; i++)
		if (out[i] != 0)
			return false;
	return true;
}

/*
 * One message both ways; in place when inplace. A key the cache has no
 * place for may be left to wolfSSL unless must.
 */
static int taken_count;

static bool
same_as(Aes *aes, size_t len, size_t aadlen, bool inplace, bool must)
{
	uint8_t nonce[GCM_NONCE_LEN], aad[100];
	size_t nblocks = (aadlen + 15) / 16 + (len + 15) / 16 + 1;
	bool taken;

	fill(nonce, sizeof(nonce));
	fill(aad, aadlen);
	fill(plain, len);
	if (wc_AesGcmEncrypt(aes, want, plain, (word32)len, nonce,
	    sizeof(nonce), want + len, 16, aad, (word32)aadlen) != 0)
		return false;
	if (inplace) {
		memcpy(got, plain, len);
		taken = gcm_seal(aes, got, got, len, nonce, aad, aadlen);
	} else {
		memset(got, 0xa5, len + 16);
		taken = gcm_seal(aes, got, plain, len, nonce, aad, aadlen);
	}
	if (taken && !(cpu_has_path() && nblocks <= GCM_RUN_BLOCKS))
		return false;
	if (must && taken != (cpu_has_path() && nblocks <= GCM_RUN_BLOCKS))
		return false;
	taken_count += taken;
	if (!taken) {
		/* nothing written */
		if (inplace ? memcmp(got, plain, len) != 0 :
		    got[0] != 0xa5 || got[len + 15] != 0xa5)
			return false;
	} else if (memcmp(got, want, len + 16) != 0)
		return false;
	return opens(aes, len, nonce, aad, aadlen, inplace, taken, must);
}

static bool
same(Aes *aes, size_t len, size_t aadlen, bool inplace)
{
	return same_as(aes, len, aadlen, inplace, true);
}

/* A new key's first uses, which are wolfSSL's (GCM_PROBATION). */
static bool
warm(Aes *aes)
{
	uint8_t nonce[GCM_NONCE_LEN] = { 0 };

	for (int i = 1; i < GCM_PROBATION; i++)
		if (gcm_seal(aes, got, plain, 100, nonce, NULL, 0))
			return false;
	return true;
}

static void
test_lengths(int keylen)
{
	static const size_t aadlens[] = { 0, 1, 15, 16, 17, 20, 21, 33, 64,
	    100 };
	uint8_t key[32];
	Aes aes;
	size_t len, bad = 0, i, n;

	fill(key, sizeof(key));
	CHECK_EQ_INT(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
	CHECK_EQ_INT(wc_AesGcmSetKey(&aes, key, (word32)keylen), 0);
	CHECK(warm(&aes));
	/* every packet length, with a QUIC short header's 20 bytes of AAD */
	for (len = 0; len <= 1600; len++)
		if (!same(&aes, len, 20, (len & 1) == 0))
			bad++;
	CHECK_EQ_INT(bad, 0);
	/* other AAD, and messages too long for one run */
	for (i = 0; i < sizeof(aadlens) / sizeof(aadlens[0]); i++) {
		for (len = 1530; len <= 1545; len++)
			if (!same(&aes, len, aadlens[i], true))
				bad++;
		if (!same(&aes, 3072, aadlens[i], false) ||
		    !same(&aes, MAXLEN, aadlens[i], true) ||
		    !same(&aes, 4000 + i, aadlens[i], false))
			bad++;
	}
	CHECK_EQ_INT(bad, 0);
	/* a new key in the same Aes: not the old one's cached schedule */
	key[0] ^= 1;
	CHECK_EQ_INT(wc_AesGcmSetKey(&aes, key, (word32)keylen), 0);
	CHECK(warm(&aes));
	CHECK(same(&aes, 1400, 20, true));
	key[keylen - 1] ^= 1;
	CHECK_EQ_INT(wc_AesGcmSetKey(&aes, key, (word32)keylen), 0);
	CHECK(warm(&aes));
	CHECK(same(&aes, 1400, 20, true));
	/* kept until forgotten, and wiped then */
	n = gcm_cached();
	CHECK_EQ_INT(n, cpu_has_path() ? 1 : 0);
	gcm_forget(&aes);
	CHECK_EQ_INT(gcm_cached(), 0);
	CHECK(warm(&aes));
	CHECK(same(&aes, 1400, 20, true));
	gcm_forget(&aes);
	wc_AesFree(&aes);
}

/* Several keys in turn, as connections take turns to send. */
static void
test_keys(void)
{
	uint8_t key[16];
	Aes aes[40];
	size_t bad = 0;

	for (int i = 0; i < 40; i++) {
		fill(key, sizeof(key));
		CHECK_EQ_INT(wc_AesInit(&aes[i], NULL, INVALID_DEVID), 0);
		CHECK_EQ_INT(wc_AesGcmSetKey(&aes[i], key, sizeof(key)), 0);
	}
	for (int i = 0; i < 40; i++)
		(void)warm(&aes[i]);
	taken_count = 0;
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 40; i++)
			if (!same_as(&aes[(i * 7) % 40], 1200 + i, 20, true,
			    false))
				bad++;
	CHECK_EQ_INT(bad, 0);
	/* most have a place of their own (64 sets of two) */
	if (cpu_has_path())
		CHECK(taken_count >= 90);
	for (int i = 0; i < 40; i++) {
		gcm_forget(&aes[i]);
		wc_AesFree(&aes[i]);
	}
	CHECK_EQ_INT(gcm_cached(), 0);
}

/*
 * A key in use keeps its place through a flood of keys used once (which
 * wolfSSL seals for rather than have the key's powers worked out again
 * and again): no new expansion for it afterwards.
 */
static void
test_credit(void)
{
	static Aes others[300];
	uint8_t key[16];
	Aes hot;
	uint64_t before;
	size_t bad = 0;

	fill(key, sizeof(key));
	CHECK_EQ_INT(wc_AesInit(&hot, NULL, INVALID_DEVID), 0);
	CHECK_EQ_INT(wc_AesGcmSetKey(&hot, key, sizeof(key)), 0);
	CHECK(warm(&hot));
	for (int i = 0; i < 20; i++)
		if (!same(&hot, 1000, 20, true))
			bad++;
	for (int i = 0; i < 300; i++) {
		fill(key, sizeof(key));
		CHECK_EQ_INT(wc_AesInit(&others[i], NULL, INVALID_DEVID), 0);
		CHECK_EQ_INT(wc_AesGcmSetKey(&others[i], key, sizeof(key)), 0);
		if (!same_as(&others[i], 1000, 20, true, false))
			bad++;
	}
	before = gcm_fills();
	if (!same(&hot, 1000, 20, true))
		bad++;
	CHECK_EQ_INT(gcm_fills(), before);
	CHECK_EQ_INT(bad, 0);
	for (int i = 0; i < 300; i++) {
		gcm_forget(&others[i]);
		wc_AesFree(&others[i]);
	}
	gcm_forget(&hot);
	wc_AesFree(&hot);
	CHECK_EQ_INT(gcm_cached(), 0);
}

/* A key used fewer than GCM_PROBATION times is never expanded. */
static void
test_probation(void)
{
	uint8_t key[16];
	uint64_t before = gcm_fills();
	Aes aes;

	fill(key, sizeof(key));
	CHECK_EQ_INT(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
	CHECK_EQ_INT(wc_AesGcmSetKey(&aes, key, sizeof(key)), 0);
	CHECK(warm(&aes));
	CHECK_EQ_INT(gcm_fills(), before);
	CHECK(same(&aes, 1000, 20, false));
	CHECK_EQ_INT(gcm_fills(), before + (cpu_has_path() ? 1 : 0));
	gcm_forget(&aes);
	wc_AesFree(&aes);
}

/*
 * Lengths within 15 of SIZE_MAX, whose blocks rounded up wrap to a few:
 * left to wolfSSL (which takes 32-bit lengths), not run over the buffers.
 */
static void
test_huge(void)
{
	uint8_t key[16], nonce[GCM_NONCE_LEN] = { 0 };
	Aes aes;

	fill(key, sizeof(key));
	CHECK_EQ_INT(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
	CHECK_EQ_INT(wc_AesGcmSetKey(&aes, key, sizeof(key)), 0);
	CHECK(warm(&aes));
	CHECK(same(&aes, 100, 20, false));
	for (size_t d = 1; d <= 15; d += 7) {
		CHECK(!gcm_seal(&aes, got, plain, SIZE_MAX - d, nonce, NULL,
		    0));
		CHECK(!gcm_seal(&aes, got, plain, 16, nonce, plain,
		    SIZE_MAX - d));
		CHECK_EQ_INT(gcm_open(&aes, got, want, SIZE_MAX - d, nonce,
		    NULL, 0), -1);
		CHECK_EQ_INT(gcm_open(&aes, got, want, 16, nonce, plain,
		    SIZE_MAX - d), -1);
	}
	/* the key is still taken */
	CHECK(same(&aes, 100, 20, false));
	gcm_forget(&aes);
	wc_AesFree(&aes);
}

/*
 * An empty message opened into no buffer at all: its tag alone decides
 * (and nothing is written, nor a null pointer handed on).
 */
static void
test_empty(void)
{
	uint8_t key[32], nonce[GCM_NONCE_LEN], tag[16], aad[8];
	Aes aes;

	fill(key, sizeof(key));
	fill(nonce, sizeof(nonce));
	fill(aad, sizeof(aad));
	CHECK_EQ_INT(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
	CHECK_EQ_INT(wc_AesGcmSetKey(&aes, key, sizeof(key)), 0);
	CHECK(warm(&aes));
	CHECK(same(&aes, 0, 0, false));
	CHECK_EQ_INT(wc_AesGcmEncrypt(&aes, NULL, NULL, 0, nonce,
	    sizeof(nonce), tag, sizeof(tag), aad, sizeof(aad)), 0);
	CHECK_EQ_INT(gcm_open(&aes, NULL, tag, 0, nonce, aad, sizeof(aad)),
	    cpu_has_path() ? 1 : -1);
	tag[15] ^= 0x80;
	CHECK_EQ_INT(gcm_open(&aes, NULL, tag, 0, nonce, aad, sizeof(aad)),
	    cpu_has_path() ? 0 : -1);
	tag[15] ^= 0x80;
	CHECK_EQ_INT(gcm_open(&aes, NULL, tag, 0, nonce, NULL, 0),
	    cpu_has_path() ? 0 : -1);
	gcm_forget(&aes);
	wc_AesFree(&aes);
}

int
main(void)
{
	test_lengths(16);
	test_lengths(32);
	test_keys();
	test_credit();
	test_probation();
	test_huge();
	test_empty();
	UNIT_DONE();
}
