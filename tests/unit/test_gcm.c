/*
 * test_gcm.c: gcm_seal against wolfSSL's wc_AesGcmEncrypt, byte for byte,
 * and gcm_open of what wolfSSL sealed (and of it with one bit changed),
 * for every length of a packet and then some, both key sizes, in place and
 * not, a key changed under the same Aes; that the path is taken on a CPU
 * that has it, that a message too long for it is left alone, that a key
 * is expanded only at its GCM_PROBATION-th use, and that a key in use is
 * not pushed out by many used once. Then hostile cases: buffers that end
 * at a PROT_NONE page, AAD of up to three runs of 64 bytes on this path,
 * every bit forged, lengths near SIZE_MAX, an empty message into no
 * buffer, a key set up again in a freed Aes. All of it once for each path
 * this CPU can take (AVX-512, AVX2, and wolfSSL's alone, as with
 * aes_gcm_vaes off), each message checked to be that path's by the count
 * of messages each path ran; then keys taken from one path to another.
 */
#include <sys/mman.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

#include <unistd.h>

#include "gcm.h"
#include "unit.h"

#define MAXLEN	5000

static uint8_t plain[MAXLEN], want[MAXLEN + 16], got[MAXLEN + 16];
static uint8_t forged[MAXLEN + 16], dec[MAXLEN + 16];

/* The path under test, and each path's count of messages at the last look. */
static enum gcm_path on;
static uint64_t runs_seen[GCM_VAES512 + 1];

static enum gcm_path
cpu_widest(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
	/* the compiler's view, not gcm.c's own */
	if (!__builtin_cpu_supports("avx2") ||
	    !__builtin_cpu_supports("vaes") ||
	    !__builtin_cpu_supports("vpclmulqdq"))
		return GCM_WOLFSSL;
	if (__builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512vl"))
		return GCM_VAES512;
	return GCM_VAES256;
#else
	return gcm_cpu();
#endif
}

/* Whether gcm.c takes messages now (the CPU has the path under test). */
static bool
cpu_has_path(void)
{
	return on != GCM_WOLFSSL;
}

/*
 * Whether the messages since the last look were taken messages of the
 * path under test, and none of another path.
 */
static bool
ran(uint64_t taken)
{
	bool ok = true;

	for (int p = GCM_VAES256; p <= GCM_VAES512; p++) {
		if (gcm_runs(p) != runs_seen[p] + (p == (int)on ? taken : 0))
			ok = false;
		runs_seen[p] = gcm_runs(p);
	}
	return ok;
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
	if (!ran(rv != -1) || rv == 0 || (must && rv != (taken ? 1 : -1)))
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
	if (!ran(1) || rv != 0)
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
	if (!ran(taken) ||
	    (taken && !(cpu_has_path() && nblocks <= GCM_RUN_BLOCKS)))
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
	return ran(0);
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
	CHECK(ran(0));
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
	CHECK(ran(cpu_has_path() ? 3 : 0));
	gcm_forget(&aes);
	wc_AesFree(&aes);
}

/*
 * Buffers that end where a PROT_NONE page begins, so that a byte read or
 * written past a message, its AAD, nonce or tag faults: the masked loads
 * and stores of a last partial block must not touch what they mask off.
 */
#define GUARDS	5
#define AREA	(4 * 4096)

static uint8_t *guard[GUARDS];
static uint8_t loose[GUARDS][AREA];

static bool
guards_init(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint8_t *p;

	if (guard[0] != NULL)
		return true;	/* an earlier path's */
	for (int i = 0; i < GUARDS; i++) {
		p = mmap(NULL, AREA + pg, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED || mprotect(p + AREA, pg, PROT_NONE) != 0)
			return false;
		guard[i] = p + AREA;
	}
	return true;
}

/* n bytes in place i: ending at its guard page, or at an odd offset */
static uint8_t *
place(int i, size_t n, bool atguard)
{
	return atguard ? guard[i] - n : loose[i] + 1 + unit_rand() % 63;
}

/*
 * One message sealed and opened as wolfSSL does it, each buffer placed
 * as above; then refused with one bit of ciphertext, tag or AAD changed
 * (every one of them when allbits, else a few), dest zeroed each time.
 */
static bool
hostile(Aes *aes, size_t len, size_t aadlen, bool allbits)
{
	bool atguard = unit_rand() % 2, inplace = unit_rand() % 2, taken;
	size_t nblocks = (aadlen + 15) / 16 + (len + 15) / 16 + 1;
	size_t bits = (len + 16 + aadlen) * 8, n, bit, i;
	uint8_t *nonce, *aad, *src, *dst, iv[16];
	int rv;

	nonce = place(0, GCM_NONCE_LEN, atguard);
	aad = place(1, aadlen, atguard);
	fill(nonce, GCM_NONCE_LEN);
	fill(aad, aadlen);
	fill(plain, len);
	/* wolfSSL's AVX2 path reads 16 bytes of a 12-byte nonce: a copy */
	memcpy(iv, nonce, GCM_NONCE_LEN);
	if (wc_AesGcmEncrypt(aes, want, plain, (word32)len, iv,
	    GCM_NONCE_LEN, want + len, 16, aad, (word32)aadlen) != 0)
		return false;
	src = place(2, inplace ? len + 16 : len, atguard);
	memcpy(src, plain, len);
	dst = inplace ? src : place(3, len + 16, atguard);
	if (!inplace)
		memset(dst, 0xa5, len + 16);
	taken = gcm_seal(aes, dst, src, len, nonce, aad, aadlen);
	if (!ran(taken) ||
	    taken != (cpu_has_path() && nblocks <= GCM_RUN_BLOCKS))
		return false;
	if (!taken)
		return inplace ? memcmp(dst, plain, len) == 0 :
		    dst[len + 15] == 0xa5;
	if (memcmp(dst, want, len + 16) != 0)
		return false;
	src = place(2, len + 16, atguard);
	dst = inplace ? src : place(3, len, atguard);
	memcpy(src, want, len + 16);
	if (gcm_open(aes, dst, src, len, nonce, aad, aadlen) != 1 ||
	    !ran(1) || memcmp(dst, plain, len) != 0)
		return false;
	for (n = 0; n < (allbits ? bits : 8); n++) {
		bit = allbits ? n : unit_rand() % bits;
		memcpy(src, want, len + 16);
		if (bit / 8 < len + 16)
			src[bit / 8] ^= 1 << (bit % 8);
		else
			aad[bit / 8 - len - 16] ^= 1 << (bit % 8);
		if (!inplace)
			memset(dst, 0xa5, len);
		rv = gcm_open(aes, dst, src, len, nonce, aad, aadlen);
		if (bit / 8 >= len + 16)
			aad[bit / 8 - len - 16] ^= 1 << (bit % 8);
		if (!ran(1) || rv != 0)
			return false;
		for (i = 0; i < len; i++)
			if (dst[i] != 0)
				return false;
	}
	return true;
}

/*
 * Many keys of both sizes, AAD of 0 to 130 bytes (one to three runs of
 * 64), messages of 0 to 1,600 bytes and within 24 of the last that fits
 * GCM_RUN_BLOCKS; then every bit forged on a few.
 */
static void
test_hostile(void)
{
	static const size_t allbits[][2] = { { 0, 0 }, { 0, 1 }, { 1, 0 },
	    { 17, 13 }, { 64, 64 }, { 255, 65 }, { 1400, 20 } };
	uint8_t key[32];
	size_t len, aadlen, bad = 0, fit;
	Aes aes;

	CHECK(guards_init());
	for (int k = 0; k < 24; k++) {
		fill(key, sizeof(key));
		CHECK_EQ_INT(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
		CHECK_EQ_INT(wc_AesGcmSetKey(&aes, key, k % 2 ? 32 : 16), 0);
		CHECK(warm(&aes));
		for (int m = 0; m < 60; m++) {
			aadlen = unit_rand() % 2 ? unit_rand() % 131 : 20;
			fit = 16 * (GCM_RUN_BLOCKS - 1 - (aadlen + 15) / 16);
			switch (unit_rand() % 3) {
			case 0:
				len = unit_rand() % 1601;
				break;
			case 1:
				len = fit - 24 + unit_rand() % 48;
				break;
			default:
				len = unit_rand() % 80;
			}
			if (!hostile(&aes, len, aadlen, false))
				bad++;
		}
		if (k < 2)
			for (size_t i = 0; i < sizeof(allbits) /
			    sizeof(allbits[0]); i++)
				if (!hostile(&aes, allbits[i][0], allbits[i][1],
				    true))
					bad++;
		gcm_forget(&aes);
		wc_AesFree(&aes);
	}
	CHECK_EQ_INT(bad, 0);
}

/*
 * A key freed and another set up in the same Aes, at every stage of the
 * first one (new, on probation, expanded), with the same first 16 bytes
 * and the other size: never the first one's schedule or powers of H.
 */
static void
test_reuse(void)
{
	uint8_t key[32];
	size_t bad = 0;
	Aes aes;

	fill(key, sizeof(key));
	for (int stage = 0; stage < 3 * GCM_PROBATION; stage++) {
		CHECK_EQ_INT(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
		if (stage % 3 == 0)
			fill(key, sizeof(key));
		else
			fill(key + 16, 16);
		CHECK_EQ_INT(wc_AesGcmSetKey(&aes, key, stage % 2 ? 32 : 16),
		    0);
		for (int use = 0; use < stage % (GCM_PROBATION + 2); use++)
			if (!same_as(&aes, 300 + use, 20, use % 2, false))
				bad++;
		wc_AesFree(&aes);
	}
	CHECK_EQ_INT(bad, 0);
	gcm_forget(&aes);
}

/*
 * Keys expanded on one path and used on another, as after a reload of
 * aes_gcm_vaes: the schedule and powers of H are the same for both.
 */
static void
test_switch(void)
{
	uint8_t key[32];
	size_t bad = 0;
	Aes aes[2];

	on = gcm_cpu();
	gcm_select(on);
	for (int i = 0; i < 2; i++) {
		fill(key, sizeof(key));
		CHECK_EQ_INT(wc_AesInit(&aes[i], NULL, INVALID_DEVID), 0);
		CHECK_EQ_INT(wc_AesGcmSetKey(&aes[i], key, i ? 32 : 16), 0);
		CHECK(warm(&aes[i]));
	}
	for (int n = 0; n < 60; n++) {
		on = (enum gcm_path)(n % 3);
		if (on > gcm_cpu())
			continue;
		gcm_select(on);
		if (!same(&aes[n % 2], 1 + unit_rand() % 1600,
		    unit_rand() % 64, n % 4 < 2))
			bad++;
	}
	CHECK_EQ_INT(bad, 0);
	for (int i = 0; i < 2; i++) {
		gcm_forget(&aes[i]);
		wc_AesFree(&aes[i]);
	}
}

int
main(void)
{
	static const char *const names[] = { "wolfSSL alone", "AVX2",
	    "AVX-512" };
	uint64_t before;

	CHECK_EQ_INT(gcm_cpu(), cpu_widest());
	CHECK_EQ_INT(gcm_path(), gcm_cpu());
	for (int p = GCM_VAES512; p >= GCM_WOLFSSL; p--) {
		on = (enum gcm_path)p;
		if (on > gcm_cpu()) {
			printf("test_gcm: %s: not on this CPU, not run\n",
			    names[p]);
			continue;
		}
		/* (a failure below is this path's) */
		printf("test_gcm: %s\n", names[p]);
		fflush(stdout);
		gcm_select(on);
		CHECK_EQ_INT(gcm_path(), on);
		before = gcm_runs(on);
		(void)ran(0);
		test_lengths(16);
		test_lengths(32);
		test_keys();
		test_credit();
		test_probation();
		test_huge();
		test_empty();
		test_hostile();
		test_reuse();
		/* most of it on this path, none on another */
		CHECK(ran(0));
		if (on != GCM_WOLFSSL)
			CHECK(gcm_runs(on) - before > 10000);
		printf("test_gcm: %s: %llu messages on this path\n", names[p],
		    (unsigned long long)(gcm_runs(on) - before));
		fflush(stdout);
	}
	test_switch();
	gcm_select(GCM_VAES512);
	UNIT_DONE();
}
