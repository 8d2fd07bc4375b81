/* test_cid.c: QUIC-LB connection IDs, against the draft's test vectors. */
#include <stdlib.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

#include "cid.h"
#include "unit.h"

/* wolfCrypt's key set-ups, counted (the Makefile wraps the function) */
static unsigned key_setups;

int	__real_wc_AesSetKeyDirect(Aes *, const byte *, word32, const byte *,
	    int);
int	__wrap_wc_AesSetKeyDirect(Aes *, const byte *, word32, const byte *,
	    int);

int
__wrap_wc_AesSetKeyDirect(Aes *aes, const byte *key, word32 len,
    const byte *iv, int dir)
{
	key_setups++;
	return __real_wc_AesSetKeyDirect(aes, key, len, iv, dir);
}

static size_t
unhex(const char *hex, uint8_t *out)
{
	size_t n = 0;

	for (; hex[0] != '\0' && hex[1] != '\0'; hex += 2) {
		unsigned v;

		if (sscanf(hex, "%2x", &v) != 1)
			exit(2);
		out[n++] = (uint8_t)v;
	}
	return n;
}

/* One vector: the ID made of sid and nonce, and the sid decoded back. */
static void
vector(unsigned config_id, const char *sid_hex, const char *nonce_hex,
    const char *key_hex, const char *cid_hex)
{
	uint8_t sid[32], nonce[32], key[16], want[32], got[32], plain[32];
	size_t sidlen = unhex(sid_hex, sid), noncelen = unhex(nonce_hex, nonce);
	size_t cidlen = unhex(cid_hex, want);
	struct cid_lb *lb;

	if (key_hex != NULL)
		(void)unhex(key_hex, key);
	lb = cid_lb_new(sid, sidlen, noncelen, config_id,
	    key_hex != NULL ? key : NULL);
	CHECK(lb != NULL);
	if (lb == NULL)
		return;
	CHECK_EQ_INT(cid_lb_len(lb), cidlen);
	cid_lb_encode(lb, nonce, got);
	if (memcmp(got, want, cidlen) != 0) {
		fprintf(stderr, "vector %s/%s: wrong ID\n", sid_hex, nonce_hex);
		CHECK(0);
	} else
		CHECK(1);
	CHECK(cid_lb_decode(lb, want, cidlen, plain));
	CHECK(memcmp(plain, sid, sidlen) == 0);
	CHECK(memcmp(plain + sidlen, nonce, noncelen) == 0);
	cid_lb_free(lb);
}

static const char key[] = "8f95f09245765f80256934e50c66207f";

static void
test_vectors(void)
{
	vector(0, "c4605e", "4504cc4f", NULL, "07c4605e4504cc4f");
	vector(0, "ed793a", "ee080dbf", key, "0720b1d07b359d3c");
	vector(1, "ed793a51d49b8f5fab65", "ee080dbf48", key,
	    "2fcc381bc74cb4fbad2823a3d1f8fed2");
	vector(2, "ed793a51d49b8f5f", "ee080dbf48c0d1e5", key,
	    "504dd2d05a7b0de9b2b9907afb5ecf8cc3");
	/* listed with config ID 3, but its first octet, 0x12, says 0 */
	vector(0, "ed793a51d49b8f5fab", "ee080dbf48c0d1e55d", key,
	    "125779c9cc86beb3a3a4a3ca96fce4bfe0cdbc");
	/* the draft's worked example of four passes */
	vector(0, "31441a", "9c69c275", "fdf726a9893ec05c0632d3956680baf0",
	    "0767947d29be054a");
}

/*
 * An ID of another server ID, another configuration ID, or another length
 * does not name lb's server.
 */
static bool
names_another(const struct cid_lb *lb, const uint8_t *sid, size_t sl,
    size_t nl, const uint8_t *k)
{
	uint8_t other[CID_LB_MAX_SID], nonce[CID_LB_MAX_PLAIN] = { 0 }, c[20];
	struct cid_lb *o;
	bool ok;

	memcpy(other, sid, sl);
	other[sl - 1] ^= 1;
	if ((o = cid_lb_new(other, sl, nl, 5, k)) == NULL)
		return false;
	cid_lb_encode(o, nonce, c);
	ok = !cid_lb_names_us(lb, c, 1 + sl + nl);
	cid_lb_free(o);
	if ((o = cid_lb_new(sid, sl, nl, 4, k)) == NULL)
		return false;
	cid_lb_encode(o, nonce, c);
	ok = ok && !cid_lb_names_us(lb, c, 1 + sl + nl);
	cid_lb_free(o);
	cid_lb_encode(lb, nonce, c);
	return ok && cid_lb_names_us(lb, c, 1 + sl + nl) &&
	    !cid_lb_names_us(lb, c, sl + nl);
}

/* Every length: what is made decodes to the server ID, never twice. */
static void
test_round_trip(void)
{
	uint8_t k[16], sid[CID_LB_MAX_SID], a[20], b[20], plain[20];

	for (size_t i = 0; i < sizeof(k); i++)
		k[i] = (uint8_t)unit_rand();
	for (size_t i = 0; i < sizeof(sid); i++)
		sid[i] = (uint8_t)unit_rand();
	for (size_t sl = 1; sl <= CID_LB_MAX_SID; sl++)
		for (size_t nl = CID_LB_MIN_NONCE; sl + nl <= CID_LB_MAX_PLAIN;
		    nl++)
			for (int keyed = 0; keyed < 2; keyed++) {
				struct cid_lb *lb = cid_lb_new(sid, sl, nl, 5,
				    keyed ? k : NULL);
				bool ok = lb != NULL;

				for (int j = 0; ok && j < 50; j++) {
					cid_lb_make(lb, a);
					cid_lb_make(lb, b);
					ok = a[0] == (5 << 5 | (sl + nl)) &&
					    memcmp(a, b, 1 + sl + nl) != 0 &&
					    cid_lb_decode(lb, a, 1 + sl + nl,
					    plain) &&
					    memcmp(plain, sid, sl) == 0 &&
					    cid_lb_names_us(lb, a, 1 + sl + nl);
				}
				ok = ok && names_another(lb, sid, sl, nl,
				    keyed ? k : NULL);
				if (!ok)
					fprintf(stderr, "sid %zu nonce %zu "
					    "key %d\n", sl, nl, keyed);
				CHECK(ok);
				cid_lb_free(lb);
			}
	/* out of range */
	CHECK(cid_lb_new(sid, 0, 8, 0, NULL) == NULL);
	CHECK(cid_lb_new(sid, 4, 3, 0, NULL) == NULL);
	CHECK(cid_lb_new(sid, 10, 10, 0, NULL) == NULL);
	CHECK(cid_lb_new(sid, 4, 4, 7, NULL) == NULL);
}

/* The nonces come round to the first: then unroutable IDs, never again. */
static void
test_exhausted(void)
{
	uint8_t sid[1] = { 0x42 }, k[16] = { 1 }, cid[3][6], plain[5];
	uint8_t next[4] = { 0xff, 0xff, 0xff, 0xfe }, first[4] = { 0 };
	struct cid_lb *lb = cid_lb_new(sid, 1, 4, 2, k);

	CHECK(lb != NULL);
	if (lb == NULL)
		return;
	cid_lb_set_nonce(lb, next, first);
	cid_lb_make(lb, cid[0]);
	CHECK(!cid_lb_exhausted(lb));
	cid_lb_make(lb, cid[1]);	/* ff ff ff ff, the last */
	CHECK(cid_lb_exhausted(lb));
	CHECK(cid_lb_decode(lb, cid[1], 6, plain) && plain[0] == 0x42 &&
	    memcmp(plain + 1, "\xff\xff\xff\xff", 4) == 0);
	cid_lb_make(lb, cid[2]);
	CHECK_EQ_INT(cid[2][0] >> 5, CID_LB_UNROUTABLE);
	CHECK_EQ_INT(cid[2][0] & 0x1f, 5);
	CHECK(!cid_lb_decode(lb, cid[2], 6, plain));
	/* unroutable: named by no server, this one's neither */
	CHECK(cid_lb_names_us(lb, cid[1], 6));
	CHECK(!cid_lb_names_us(lb, cid[2], 6));
	cid_lb_free(lb);
}

/*
 * n workers' IDs of one configuration, 4 each: every one names its worker
 * at the byte after the server ID, decodes to the server ID, and none
 * comes twice, of one worker or of two.
 */
static bool
test_workers_case(const uint8_t *sid, size_t sl, size_t nl, const uint8_t *k,
    unsigned n)
{
	uint8_t cid[20], plain[20], seen[64 * 4][20];
	size_t len = 1 + sl + nl, nseen = 0;
	bool ok = true;

	for (unsigned w = 0; w < n && ok; w++) {
		struct cid_lb *lb = cid_lb_new(sid, sl, nl, 1, k);

		if (lb == NULL)
			return false;
		cid_lb_set_worker(lb, w, n);
		ok = cid_lb_worker_offset(lb) == 1 + sl;
		for (int j = 0; ok && j < 4; j++) {
			cid_lb_make(lb, cid);
			ok = cid[1 + sl] % n == w &&
			    cid[0] == (1 << 5 | (sl + nl)) &&
			    cid_lb_decode(lb, cid, len, plain) &&
			    memcmp(plain, sid, sl) == 0;
			for (size_t m = 0; ok && m < nseen; m++)
				ok = memcmp(seen[m], cid, len) != 0;
			memcpy(seen[nseen++], cid, len);
		}
		cid_lb_free(lb);
	}
	return ok;
}

/* With workers, in the clear and encrypted, lengths across the range. */
static void
test_workers(void)
{
	static const unsigned counts[] = { 2, 3, 7, 64 };
	uint8_t k[16], sid[CID_LB_MAX_SID];

	for (size_t i = 0; i < sizeof(k); i++)
		k[i] = (uint8_t)unit_rand();
	for (size_t i = 0; i < sizeof(sid); i++)
		sid[i] = (uint8_t)unit_rand();
	for (size_t sl = 1; sl <= CID_LB_MAX_SID; sl += 3)
		for (size_t nl = CID_LB_MIN_NONCE; sl + nl <= CID_LB_MAX_PLAIN;
		    nl += 5)
			for (size_t c = 0; c < 2 * 4; c++) {
				const uint8_t *kk = c % 2 ? k : NULL;
				unsigned n = counts[c / 2];
				bool ok;

				ok = test_workers_case(sid, sl, nl, kk, n);
				if (!ok)
					fprintf(stderr, "workers %u: sid %zu "
					    "nonce %zu key %d\n", n, sl, nl,
					    kk != NULL);
				CHECK(ok);
			}
}

/* With workers, the unroutable IDs after the last nonce name it too. */
static void
test_workers_exhausted(void)
{
	uint8_t sid[1] = { 0x42 }, k[16] = { 1 }, cid[6];
	uint8_t next[4] = { 0xff, 0xff, 0xff, 0xf0 }, first[4] = { 0 };
	struct cid_lb *lb = cid_lb_new(sid, 1, 4, 2, k);
	int made = 0;

	CHECK(lb != NULL);
	if (lb == NULL)
		return;
	cid_lb_set_worker(lb, 2, 3);
	cid_lb_set_nonce(lb, next, first);
	/* 16 nonces left: a third or so of them the worker's */
	while (!cid_lb_exhausted(lb) && made < 20) {
		cid_lb_make(lb, cid);
		CHECK_EQ_INT(cid[2] % 3, 2);
		made++;
	}
	CHECK(cid_lb_exhausted(lb) && made < 17);
	for (int j = 0; j < 20; j++) {
		cid_lb_make(lb, cid);
		CHECK_EQ_INT(cid[0] >> 5, CID_LB_UNROUTABLE);
		CHECK_EQ_INT(cid[2] % 3, 2);
	}
	cid_lb_free(lb);
}

/*
 * The keys are set up by cid_lb_new alone, from a key the caller may wipe
 * after: what is made and what is read, a packet at a time, sets up none,
 * for one block and for the Feistel network, of each configuration ID.
 */
static void
test_key_set_up_once(void)
{
	static const size_t lens[][2] = { { 8, 8 }, { 3, 4 }, { 10, 5 } };
	uint8_t k[16], sid[CID_LB_MAX_SID], cid[20], plain[20];

	for (size_t i = 0; i < sizeof(sid); i++)
		sid[i] = (uint8_t)unit_rand();
	for (unsigned config_id = 0; config_id < CID_LB_UNROUTABLE;
	    config_id++)
		for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
			size_t sl = lens[l][0], nl = lens[l][1];
			struct cid_lb *lb;
			bool ok = true;

			for (size_t i = 0; i < sizeof(k); i++)
				k[i] = (uint8_t)unit_rand();
			key_setups = 0;
			lb = cid_lb_new(sid, sl, nl, config_id, k);
			CHECK(lb != NULL && key_setups > 0);
			if (lb == NULL)
				continue;
			explicit_bzero(k, sizeof(k));
			key_setups = 0;
			for (int j = 0; ok && j < 20; j++) {
				cid_lb_make(lb, cid);
				ok = cid[0] == (config_id << 5 | (sl + nl)) &&
				    cid_lb_decode(lb, cid, 1 + sl + nl,
				    plain) && memcmp(plain, sid, sl) == 0 &&
				    cid_lb_names_us(lb, cid, 1 + sl + nl);
				cid[1] ^= 1;
				ok = ok && !cid_lb_names_us(lb, cid,
				    1 + sl + nl);
			}
			if (!ok || key_setups != 0)
				fprintf(stderr, "config %u sid %zu nonce %zu: "
				    "%u key set-ups\n", config_id, sl, nl,
				    key_setups);
			CHECK(ok && key_setups == 0);
			cid_lb_free(lb);
		}
}

int
main(void)
{
	test_vectors();
	test_round_trip();
	test_workers();
	test_workers_exhausted();
	test_exhausted();
	test_key_set_up_once();
	UNIT_DONE();
}
