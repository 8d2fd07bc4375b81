/*
 * test_tls.c: the packet protection callbacks that bypass wolfSSL's EVP
 * layer, against the test vectors of RFC 9001 appendix A, and without a
 * heap allocation per packet; and which host names a certificate's names
 * cover.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/memory.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/openssl/evp.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "gcm.h"
#include "tls.h"
#include "unit.h"

static size_t nallocs;

static void *
count_malloc(size_t n)
{
	nallocs++;
	return malloc(n);
}

static void
count_free(void *p)
{
	free(p);
}

static void *
count_realloc(void *p, size_t n)
{
	nallocs++;
	return realloc(p, n);
}

static void
hex(uint8_t *out, const char *s)
{
	for (size_t i = 0; s[2 * i] != '\0'; i++) {
		unsigned v;

		(void)sscanf(s + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
}

/* A.2: the client Initial's header protection mask. */
static void
test_hp_mask(void)
{
	/* the cipher and context as ngtcp2's wolfSSL backend makes them */
	ngtcp2_crypto_cipher hp = {
	    (void *)(uintptr_t)wolfSSL_EVP_aes_128_ctr() };
	ngtcp2_crypto_cipher_ctx hp_ctx;
	WOLFSSL_EVP_CIPHER_CTX *ctx;
	uint8_t key[16], sample[16], want[5], mask[NGTCP2_HP_MASKLEN];
	uint8_t packet[64];
	wolfSSL_Malloc_cb mf;
	wolfSSL_Free_cb ff;
	wolfSSL_Realloc_cb rf;

	hex(key, "9f50449e04a0e810283a1e9933adedd2");
	hex(sample, "d1b1c98dd7689fb8ec11d242b123dc9b");
	hex(want, "437b9aec36");
	ctx = wolfSSL_EVP_CIPHER_CTX_new();
	CHECK(ctx != NULL);
	CHECK_EQ_INT(wolfSSL_EVP_EncryptInit_ex(ctx, wolfSSL_EVP_aes_128_ctr(),
	    NULL, key, NULL), WOLFSSL_SUCCESS);
	hp_ctx.native_handle = ctx;
	CHECK_EQ_INT(wolfSSL_GetAllocators(&mf, &ff, &rf), 0);
	CHECK_EQ_INT(wolfSSL_SetAllocators(count_malloc, count_free,
	    count_realloc), 0);
	/* a sample at every alignment a packet can put it */
	for (size_t off = 0; off < 16; off++) {
		memcpy(packet + off, sample, sizeof(sample));
		memset(mask, 0, sizeof(mask));
		CHECK_EQ_INT(tls_hp_mask(mask, &hp, &hp_ctx, packet + off), 0);
		CHECK(memcmp(mask, want, sizeof(want)) == 0);
	}
	CHECK_EQ_INT(nallocs, 0);
	CHECK_EQ_INT(wolfSSL_SetAllocators(mf, ff, rf), 0);
	wolfSSL_EVP_CIPHER_CTX_free(ctx);
}

/* A.4: the Retry integrity tag is AES-128-GCM over an empty plaintext. */
static void
test_aead(void)
{
	ngtcp2_crypto_aead aead = {
	    (void *)(uintptr_t)wolfSSL_EVP_aes_128_gcm(), 16 };
	ngtcp2_crypto_aead_ctx actx;
	uint8_t key[16], nonce[12], aad[64], tag[16], out[16], plain[1];
	size_t aadlen, kept;
	const char *aadhex = "088394c8f03e515708"
	    "ff000000010008f067a5502a4262b5746f6b656e";

	hex(key, "be0c690b9f66575a1d766b54e368c84e");
	hex(nonce, "461599d35d632bf2239825bb");
	hex(tag, "04a265ba2eff4d829058fb3f0f2496ba");
	aadlen = strlen(aadhex) / 2;
	hex(aad, aadhex);
	CHECK_EQ_INT(ngtcp2_crypto_aead_ctx_encrypt_init(&actx, &aead, key,
	    sizeof(nonce)), 0);
	/* as often as gcm.c takes to expand the key for its own path */
	for (int i = 0; i < GCM_PROBATION; i++) {
		memset(out, 0, sizeof(out));
		CHECK_EQ_INT(tls_aead_encrypt(out, &aead, &actx,
		    (const uint8_t *)"", 0, nonce, sizeof(nonce), aad, aadlen),
		    0);
		CHECK(memcmp(out, tag, sizeof(tag)) == 0);
	}
	/* gcm.c's copy of the key (where the CPU has its path) goes with it */
	kept = gcm_cached();
	CHECK_EQ_INT(kept, gcm_path() != GCM_WOLFSSL ? 1 : 0);
	tls_aead_ctx_delete(NULL, &actx, NULL);
	CHECK_EQ_INT(gcm_cached(), kept > 0 ? kept - 1 : 0);

	CHECK_EQ_INT(ngtcp2_crypto_aead_ctx_decrypt_init(&actx, &aead, key,
	    sizeof(nonce)), 0);
	CHECK_EQ_INT(tls_aead_decrypt(plain, &aead, &actx, tag, sizeof(tag),
	    nonce, sizeof(nonce), aad, aadlen), 0);
	/* one bit off in the associated data: the packet is dropped */
	aad[aadlen - 1] ^= 1;
	CHECK_EQ_INT(tls_aead_decrypt(plain, &aead, &actx, tag, sizeof(tag),
	    nonce, sizeof(nonce), aad, aadlen), NGTCP2_ERR_DECRYPT);
	/* shorter than a tag */
	CHECK_EQ_INT(tls_aead_decrypt(plain, &aead, &actx, tag, 15, nonce,
	    sizeof(nonce), aad, aadlen), NGTCP2_ERR_DECRYPT);
	ngtcp2_crypto_aead_ctx_free(&actx);
}

/* exact names, and a wildcard for one whole first label */
static void
test_host_matches(void)
{
	CHECK(tls_host_matches("a.test", "a.test"));
	CHECK(!tls_host_matches("a.test", "www.a.test"));
	CHECK(!tls_host_matches("a.test", "a.test.example"));
	CHECK(!tls_host_matches("www.a.test", "a.test"));
	CHECK(tls_host_matches("*.b.test", "x.b.test"));
	CHECK(tls_host_matches("*.b.test", "xn--bcher-kva.b.test"));
	CHECK(!tls_host_matches("*.b.test", "b.test"));
	CHECK(!tls_host_matches("*.b.test", ".b.test"));
	CHECK(!tls_host_matches("*.b.test", "x.y.b.test"));
	CHECK(!tls_host_matches("*.b.test", "xb.test"));
	CHECK(!tls_host_matches("*.b.test", "x.b.test.example"));
	CHECK(!tls_host_matches("*.b.test", "*.b.test.x"));
}

/* whole days, rounded down, also once the date has passed */
static void
test_days_left(void)
{
	CHECK_EQ_INT(tls_days_left(1000 + 2 * 86400, 1000), 2);
	CHECK_EQ_INT(tls_days_left(1000 + 2 * 86400 - 1, 1000), 1);
	CHECK_EQ_INT(tls_days_left(1000, 1000), 0);
	CHECK_EQ_INT(tls_days_left(999, 1000), -1);
	CHECK_EQ_INT(tls_days_left(1000 - 86400, 1000), -1);
	CHECK_EQ_INT(tls_days_left(1000 - 86401, 1000), -2);
}

/*
 * client_cert_header's value: the digest in hex, the subject quoted with
 * '"' and '\\' escaped and control characters written \\xHH, so that no
 * subject can end the quoted string, the field or the head.
 */
static void
test_peer_value(void)
{
	uint8_t hash[32];
	struct tls_peer *p;
	const char *want_hash = "Hash=000102030405060708090a0b0c0d0e0f"
	    "101112131415161718191a1b1c1d1e1f;Subject=\"";
	size_t n = strlen(want_hash);

	for (int i = 0; i < 32; i++)
		hash[i] = (uint8_t)i;
	CHECK((p = tls_peer_new(hash, "/O=Acme/CN=alice")) != NULL);
	CHECK(strncmp(p->value, want_hash, n) == 0);
	CHECK(strcmp(p->value + n, "/O=Acme/CN=alice\"") == 0);
	free(p);
	CHECK((p = tls_peer_new(hash, "/CN=a\"b\\c\r\nX: y\x7f\xc3\xa9")) != NULL);
	CHECK(strcmp(p->value + n,
	    "/CN=a\\\"b\\\\c\\x0d\\x0aX: y\\x7f\xc3\xa9\"") == 0);
	free(p);
	CHECK((p = tls_peer_new(hash, "")) != NULL);
	CHECK(strcmp(p->value + n, "\"") == 0);
	free(p);
	/* the longest (each byte of a whole WC_ASN_NAME_MAX subject grown
	   fourfold), to its last byte: ASan's build sees one past it */
	{
		char subject[WC_ASN_NAME_MAX];

		memset(subject, 0x01, sizeof(subject) - 1);
		subject[sizeof(subject) - 1] = '\0';
		CHECK((p = tls_peer_new(hash, subject)) != NULL);
		CHECK_EQ_INT((int)strlen(p->value), (int)(n + 4 *
		    (sizeof(subject) - 1) + 1));
		CHECK(strncmp(p->value + n, "\\x01\\x01", 8) == 0);
		free(p);
	}
}

/*
 * RFC 4514's form of a subject: the last RDN first; a type it does not
 * name by its OID; a multi-valued RDN joined by '+' (in its DER order); a
 * control character as a hex pair; a BMPString as '#' and its DER.
 * (A certificate the cryptography package made: issuer and subject
 * C=NL / O=Example+OU=ops / CN=a<tab>b / title=x as a BMPString.)
 */
static void
test_cert_subject(void)
{
	static const char hex[] =
	    "308201783082011fa003020102020101300a06082a8648ce3d04030230463"
	    "10b3009060355040613024e4c311c300a060355040b0c036f7073300e0603"
	    "55040a0c074578616d706c65310c300a06035504030c03610962310b30090"
	    "60355040c1e020078301e170d3236303130313030303030305a170d323630"
	    "3130323030303030305a3046310b3009060355040613024e4c311c300a060"
	    "355040b0c036f7073300e060355040a0c074578616d706c65310c300a0603"
	    "5504030c03610962310b3009060355040c1e0200783059301306072a8648c"
	    "e3d020106082a8648ce3d03010703420004a5f3baf1c438700a70d1da01cf"
	    "bccc58827a1e538a253df0da0aa1f2f87f6e96c4a4ec52870047c173c8b44"
	    "473d11075c486221bf7b79eed523d332fdb4b459e300a06082a8648ce3d04"
	    "0302034700304402203de747c6ce84e49c54600f5137ca4cc4e4ee206676d"
	    "a3f836f9e4adee5a728b302200817c6dda3025fcb6140b798eec9dbbe6361"
	    "ef66a7332ce1decf07b4bd42023b";
	uint8_t der[sizeof(hex) / 2];
	size_t n = (sizeof(hex) - 1) / 2;
	char *dn;

	for (size_t i = 0; i < n; i++) {
		unsigned int b;

		sscanf(hex + 2 * i, "%2x", &b);
		der[i] = (uint8_t)b;
	}
	CHECK((dn = tls_cert_subject(der, n)) != NULL);
	CHECK_EQ_STR(dn, "2.5.4.12=#1E020078,CN=a\\09b,OU=ops+O=Example,C=NL");
	free(dn);
	/* cut short anywhere: no name, and nothing read past the end */
	for (size_t cut = 0; cut < 0xf0; cut++) {
		uint8_t *copy = malloc(cut + 1);

		memcpy(copy, der, cut);
		dn = tls_cert_subject(copy, cut);
		CHECK(dn == NULL);
		free(copy);
	}
}

/*
 * Subjects tls_cert_subject refuses rather than write: an OID arc spelt
 * with a leading 0x80 (X.690 8.19.2), which would read as a name's own
 * OID ("2.5.4.3=alice" is CN=alice to a backend's RFC 4514 parser), and
 * an empty RDN (RFC 5280's SET SIZE (1..MAX)), which wrote ",," or a
 * trailing ",".
 */
static void
test_cert_subject_refused(void)
{
	static const char *const hexes[] = {
		/* CN=a, {}, CN=b */
		"303b3034a003020102020101300a06082a8648ce3d04030230003000301a"
		"310a300806035504030c01613100310a300806035504030c016230000301"
		"00",
		/* {}, CN=a */
		"302f3028a003020102020101300a06082a8648ce3d04030230003000300e"
		"3100310a300806035504030c01613000030100",
		/* 55 04 80 03 = alice */
		"3032302ba003020102020101300a06082a8648ce3d040302300030003011"
		"310f300d0604550480030c05616c6963653000030100",
		/* 80 55 04 03 = alice */
		"3032302ba003020102020101300a06082a8648ce3d040302300030003011"
		"310f300d0604805504030c05616c6963653000030100",
	};

	for (size_t h = 0; h < sizeof(hexes) / sizeof(hexes[0]); h++) {
		uint8_t der[128];
		size_t n = strlen(hexes[h]) / 2;
		char *dn;

		for (size_t i = 0; i < n; i++) {
			unsigned int b;

			sscanf(hexes[h] + 2 * i, "%2x", &b);
			der[i] = (uint8_t)b;
		}
		dn = tls_cert_subject(der, n);
		if (dn != NULL)
			fprintf(stderr, "subject %zu: %s\n", h, dn);
		CHECK(dn == NULL);
		free(dn);
	}
}

int
main(void)
{
	wolfSSL_Init();
	test_hp_mask();
	test_aead();
	test_host_matches();
	test_days_left();
	test_peer_value();
	test_cert_subject();
	test_cert_subject_refused();
	wolfSSL_Cleanup();
	UNIT_DONE();
}
