/*
 * cid.c: QUIC-LB connection IDs. AES-128-ECB comes from wolfCrypt, as
 * the packet protection does.
 */
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

#include "cid.h"
#include "rng.h"

struct cid_lb {
	uint8_t		 first;		/* config ID and length */
	uint8_t		 sid[CID_LB_MAX_SID];
	size_t		 sidlen, noncelen, plainlen;
	bool		 keyed;
	Aes		 aes;
	Aes		 dec;	/* the same key, decrypting (cid_lb_decode) */
	uint8_t		 nonce[CID_LB_MAX_PLAIN];	/* the next one */
	uint8_t		 nonce_start[CID_LB_MAX_PLAIN];
	bool		 exhausted;
	unsigned	 worker, workers;	/* cid_lb_set_worker's */
};

/* aes made ready with key, one way; false (and nothing held) on failure */
static bool
aes_key(Aes *aes, const uint8_t key[CID_LB_KEYLEN], int dir)
{
	if (wc_AesInit(aes, NULL, INVALID_DEVID) != 0)
		return false;
	if (wc_AesSetKeyDirect(aes, key, CID_LB_KEYLEN, NULL, dir) == 0)
		return true;
	wc_AesFree(aes);
	return false;
}

struct cid_lb *
cid_lb_new(const uint8_t *sid, size_t sidlen, size_t noncelen,
    unsigned config_id, const uint8_t key[CID_LB_KEYLEN])
{
	struct cid_lb *lb;

	if (sidlen < 1 || sidlen > CID_LB_MAX_SID ||
	    noncelen < CID_LB_MIN_NONCE ||
	    sidlen + noncelen > CID_LB_MAX_PLAIN ||
	    config_id >= CID_LB_UNROUTABLE)
		return NULL;
	if ((lb = calloc(1, sizeof(*lb))) == NULL)
		return NULL;
	lb->sidlen = sidlen;
	lb->noncelen = noncelen;
	lb->plainlen = sidlen + noncelen;
	lb->first = (uint8_t)(config_id << 5 | lb->plainlen);
	lb->workers = 1;
	memcpy(lb->sid, sid, sidlen);
	if (key != NULL) {
		/*
		 * The decryption's key schedule too, made once: an ID is
		 * decrypted for every short header packet of no connection
		 * (cid_lb_names_us), before the reset's rate is checked.
		 */
		if (!aes_key(&lb->aes, key, AES_ENCRYPTION))
			goto fail;
		if (!aes_key(&lb->dec, key, AES_DECRYPTION)) {
			wc_AesFree(&lb->aes);
			goto fail;
		}
		lb->keyed = true;
		rng_fill(lb->nonce, noncelen);
		memcpy(lb->nonce_start, lb->nonce, noncelen);
	}
	return lb;
fail:
	explicit_bzero(lb, sizeof(*lb));
	free(lb);
	return NULL;
}

void
cid_lb_free(struct cid_lb *lb)
{
	if (lb == NULL)
		return;
	if (lb->keyed) {
		wc_AesFree(&lb->aes);
		wc_AesFree(&lb->dec);
	}
	explicit_bzero(lb, sizeof(*lb));
	free(lb);
}

size_t
cid_lb_len(const struct cid_lb *lb)
{
	return 1 + lb->plainlen;
}

bool
cid_lb_exhausted(const struct cid_lb *lb)
{
	return lb->exhausted;
}

void
cid_lb_set_nonce(struct cid_lb *lb, const uint8_t *next, const uint8_t *first)
{
	memcpy(lb->nonce, next, lb->noncelen);
	memcpy(lb->nonce_start, first, lb->noncelen);
}

/*
 * One pass of the Feistel network: AES of the half `in', expanded to a
 * block with the plaintext's length and the pass, XORed into `out'.
 */
static void
feistel_pass(const struct cid_lb *lb, const uint8_t *in, uint8_t *out,
    size_t half, unsigned pass)
{
	uint8_t block[16] = { 0 }, mask[16];

	memcpy(block, in, half);
	block[14] = (uint8_t)lb->plainlen;
	block[15] = (uint8_t)pass;
	(void)wc_AesEncryptDirect((Aes *)(uintptr_t)&lb->aes, mask, block);
	for (size_t i = 0; i < half; i++)
		out[i] ^= mask[i];
}

/* For an odd length the halves share the middle byte's two nibbles. */
static void
clear_left(uint8_t *left, size_t half, bool odd)
{
	if (odd)
		left[half - 1] &= 0xf0;
}

static void
clear_right(uint8_t *right, bool odd)
{
	if (odd)
		right[0] &= 0x0f;
}

/*
 * The two halves of `in' (plainlen bytes): for an odd length both hold the
 * middle byte, the left its high nibble and the right its low one.
 */
static void
feistel_split(const struct cid_lb *lb, const uint8_t *in, uint8_t *left,
    uint8_t *right)
{
	size_t len = lb->plainlen, half = (len + 1) / 2;
	bool odd = len & 1;

	memcpy(left, in, half);
	memcpy(right, in + len / 2, half);
	clear_left(left, half, odd);
	clear_right(right, odd);
}

/* The halves joined again into `out', plainlen bytes. */
static void
feistel_join(const struct cid_lb *lb, const uint8_t *left,
    const uint8_t *right, uint8_t *out)
{
	size_t len = lb->plainlen, half = (len + 1) / 2;
	bool odd = len & 1;

	memcpy(out, left, half);
	if (odd)
		out[half - 1] |= right[0];
	memcpy(out + half, right + (odd ? 1 : 0), len - half);
}

/* Four passes over sid || nonce in `plain', into `out' (plainlen bytes). */
static void
feistel_encrypt(const struct cid_lb *lb, const uint8_t *plain, uint8_t *out)
{
	size_t half = (lb->plainlen + 1) / 2;
	bool odd = lb->plainlen & 1;
	uint8_t left[10], right[10];

	feistel_split(lb, plain, left, right);
	feistel_pass(lb, left, right, half, 1);
	clear_right(right, odd);
	feistel_pass(lb, right, left, half, 2);
	clear_left(left, half, odd);
	feistel_pass(lb, left, right, half, 3);
	clear_right(right, odd);
	feistel_pass(lb, right, left, half, 4);
	clear_left(left, half, odd);
	feistel_join(lb, left, right, out);
}

/* The same passes the other way round. */
static void
feistel_decrypt(const struct cid_lb *lb, const uint8_t *in, uint8_t *plain)
{
	size_t half = (lb->plainlen + 1) / 2;
	bool odd = lb->plainlen & 1;
	uint8_t left[10], right[10];

	feistel_split(lb, in, left, right);
	feistel_pass(lb, right, left, half, 4);
	clear_left(left, half, odd);
	feistel_pass(lb, left, right, half, 3);
	clear_right(right, odd);
	feistel_pass(lb, right, left, half, 2);
	clear_left(left, half, odd);
	feistel_pass(lb, left, right, half, 1);
	clear_right(right, odd);
	feistel_join(lb, left, right, plain);
}

void
cid_lb_encode(const struct cid_lb *lb, const uint8_t *nonce, uint8_t *out)
{
	uint8_t plain[CID_LB_MAX_PLAIN];

	out[0] = lb->first;
	memcpy(plain, lb->sid, lb->sidlen);
	memcpy(plain + lb->sidlen, nonce, lb->noncelen);
	if (!lb->keyed)
		memcpy(out + 1, plain, lb->plainlen);
	else if (lb->plainlen == 16)
		(void)wc_AesEncryptDirect((Aes *)(uintptr_t)&lb->aes, out + 1,
		    plain);
	else
		feistel_encrypt(lb, plain, out + 1);
	explicit_bzero(plain, sizeof(plain));
}

/* The nonce after this one, big-endian; false when it comes round. */
static bool
nonce_next(struct cid_lb *lb)
{
	size_t i = lb->noncelen;

	while (i-- > 0)
		if (++lb->nonce[i] != 0)
			break;
	return memcmp(lb->nonce, lb->nonce_start, lb->noncelen) != 0;
}

void
cid_lb_set_worker(struct cid_lb *lb, unsigned index, unsigned count)
{
	lb->worker = count > 1 ? index : 0;
	lb->workers = count > 1 ? count : 1;
}

size_t
cid_lb_worker_offset(const struct cid_lb *lb)
{
	return cid_worker_offset(lb->sidlen);
}

/* Whether the kernel gives this ID's datagrams to this worker. */
static bool
cid_lb_mine(const struct cid_lb *lb, const uint8_t *cid)
{
	return cid[cid_lb_worker_offset(lb)] % lb->workers == lb->worker;
}

static void
cid_lb_unroutable(const struct cid_lb *lb, uint8_t *out)
{
	size_t off = cid_lb_worker_offset(lb);

	rng_fill(out, cid_lb_len(lb));
	out[0] = (uint8_t)(CID_LB_UNROUTABLE << 5 | lb->plainlen);
	out[off] = cid_worker_byte(out[off], lb->worker, lb->workers);
}

void
cid_lb_make(struct cid_lb *lb, uint8_t *out)
{
	uint8_t nonce[CID_LB_MAX_PLAIN];

	if (lb->exhausted) {
		cid_lb_unroutable(lb, out);
		return;
	}
	if (!lb->keyed) {
		/* in the clear, nonces must not be linkable: random; the
		   first byte, right after the server ID, names the worker */
		rng_fill(nonce, lb->noncelen);
		nonce[0] = cid_worker_byte(nonce[0], lb->worker,
		    lb->workers);
		cid_lb_encode(lb, nonce, out);
		return;
	}
	/*
	 * Encrypted, the byte that names the worker is one of the
	 * ciphertext's: the nonces are counted until one gives this worker's
	 * (one in `workers' does). Each nonce gives one worker's, so no two
	 * workers give the same ID.
	 */
	for (;;) {
		cid_lb_encode(lb, lb->nonce, out);
		if (!nonce_next(lb))
			lb->exhausted = true;
		if (cid_lb_mine(lb, out))
			return;
		if (lb->exhausted) {
			cid_lb_unroutable(lb, out);
			return;
		}
	}
}

bool
cid_lb_decode(const struct cid_lb *lb, const uint8_t *cid, size_t len,
    uint8_t *plain)
{
	if (len != cid_lb_len(lb) || cid[0] != lb->first)
		return false;
	if (!lb->keyed)
		memcpy(plain, cid + 1, lb->plainlen);
	else if (lb->plainlen == 16) {
		if (wc_AesDecryptDirect((Aes *)(uintptr_t)&lb->dec, plain,
		    cid + 1) != 0)
			return false;
	} else
		feistel_decrypt(lb, cid + 1, plain);
	return true;
}

bool
cid_lb_names_us(const struct cid_lb *lb, const uint8_t *cid, size_t len)
{
	uint8_t plain[CID_LB_MAX_PLAIN];
	bool ours;

	ours = cid_lb_decode(lb, cid, len, plain) &&
	    memcmp(plain, lb->sid, lb->sidlen) == 0;
	explicit_bzero(plain, sizeof(plain));
	return ours;
}
