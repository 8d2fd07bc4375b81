/*
 * gcm.c: AES-GCM of packets with VAES and VPCLMULQDQ (AVX-512 or AVX2).
 *
 * AES-GCM is about a quarter of the CPU of a download (every packet
 * sealed) and of an upload (every packet opened). wolfSSL 5.7.2's fastest
 * path (AVX2) works one 128-bit block per instruction and works out the
 * powers of the hash key again for each message; on a CPU with VAES and
 * VPCLMULQDQ, four blocks go through each instruction on 512-bit
 * registers (AVX-512), or two on 256-bit ones where the CPU has VAES
 * without AVX-512 (AMD Zen 3, Intel's client cores from Alder Lake on),
 * and the powers are worked out once per key. The two paths share the
 * keys, their powers of H and all but the run of a message (crypt_512,
 * crypt_256); gcm_cpu picks the wider the CPU can take.
 *
 * GHASH is done on byte-reversed blocks, so that a block read as a
 * little-endian 128-bit integer has the coefficient of x^(127-j) at bit j
 * (SP 800-38D's bit order); a carry-less product of two of them then has
 * that of x^(254-m) at bit m. A packet's blocks (AAD, ciphertext,
 * lengths: n of them) are each multiplied by their own power of H, worked
 * out once per key, and the sum is reduced once: B1 H^n + B2 H^(n-1) + ...
 * + Bn H, GHASH's Horner form multiplied out. A longer message is left to
 * wolfSSL.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gcm.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <cpuid.h>
#include <immintrin.h>

/*
 * Keys remembered: sets of two, by the address of wolfSSL's Aes.
 * Expanding a key (its powers of H) costs what this path saves on about
 * five packets, so a key that would push out one in use waits (wolfSSL
 * seals for it meanwhile): each use of a key adds to its credit, up to
 * GCM_CREDIT, every GCM_MISSES misses in its set take one from the poorer
 * of the two, and only a key without credit is replaced. More connections
 * taking turns than there are places then cost no more than before, not
 * a key's powers per packet.
 */
#define GCM_SETS	64
#define GCM_WAYS	2
#define GCM_CREDIT	64
#define GCM_MISSES	8
/*
 * What each part is compiled for: the key's expansion and a message's
 * first and last steps are shared by the paths, so they take no AVX-512
 * instruction (nor its EVEX encoding) that a CPU of the 256-bit path
 * lacks.
 */
#define TARGET_SHARED	__attribute__((target("avx,aes,pclmul")))
#define TARGET_256	__attribute__((target("avx2,vaes,vpclmulqdq,aes," \
			    "pclmul")))
#define TARGET_512	__attribute__((target("avx512f,avx512bw,avx512vl," \
			    "vaes,vpclmulqdq,aes,pclmul")))

/*
 * A key wolfSSL expanded, as this code uses it, and the powers of its hash
 * key: kept while the key is in use, wiped when it is deleted (gcm_forget),
 * so that a past connection's keys do not outlive it here.
 */
struct gcm_key {
	const Aes	*aes;		/* where wolfSSL keeps it */
	uint8_t		 head[32];	/* its first round keys: the key */
	uint32_t	 rounds;
	uint32_t	 credit;	/* see GCM_SETS */
	uint32_t	 seen;		/* uses before expansion */
	bool		 tried;		/* expanded, or found unusable */
	bool		 usable;	/* the schedule proved to be AES-NI's */
	__m128i		 rk[15];
	__m128i		 pow[GCM_RUN_BLOCKS];	/* H^(GCM_RUN_BLOCKS - i) */
};

static struct gcm_key cache[GCM_SETS][GCM_WAYS];
static uint8_t misses[GCM_SETS];
static uint64_t fills;
static int cpu = -1;			/* cpu_path(), once asked */
static enum gcm_path widest = GCM_VAES512;	/* aes_gcm_vaes */
static uint64_t runs[GCM_VAES512 + 1];

/*
 * The widest path this CPU and OS can take: CPUID, and the OS's saving of
 * the registers each uses (XCR0: SSE and AVX state for both, opmask and
 * ZMM state as well for AVX-512); compilers' __builtin_cpu_supports does
 * not know VAES in all the versions that build this.
 */
static enum gcm_path
cpu_path(void)
{
	unsigned int a, b, c, d, xlo, xhi;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) ||
	    !(c & bit_AVX) || !(c & bit_AES) || !(c & bit_PCLMUL))
		return GCM_WOLFSSL;
	__asm__ volatile ("xgetbv" : "=a" (xlo), "=d" (xhi) : "c" (0));
	if ((xlo & 0x6) != 0x6 ||
	    !__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & bit_AVX2) ||
	    !(c & bit_VAES) || !(c & bit_VPCLMULQDQ))
		return GCM_WOLFSSL;
	if ((xlo & 0xe6) == 0xe6 && (b & bit_AVX512F) &&
	    (b & bit_AVX512BW) && (b & bit_AVX512VL))
		return GCM_VAES512;
	return GCM_VAES256;
}

static size_t
set_of(const Aes *aes)
{
	uintptr_t p = (uintptr_t)aes;

	return ((p >> 4) ^ (p >> 10) ^ (p >> 16)) % GCM_SETS;
}

/*
 * Shuffles of each block: its bytes reversed (GHASH's order), and a
 * counter block's last word made big-endian (the others, the nonce's,
 * kept as read).
 */
#define REV_BYTES	_mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, \
			    12, 13, 14, 15)
#define CTR_BYTES	_mm_set_epi8(12, 13, 14, 15, 11, 10, 9, 8, 7, 6, 5, \
			    4, 3, 2, 1, 0)

TARGET_SHARED static inline __m128i
bswap128(__m128i x)
{
	return _mm_shuffle_epi8(x, REV_BYTES);
}

/*
 * The product [hi:lo] (bit m: x^(254-m)) modulo x^128 + x^7 + x^2 + x + 1.
 * Shifted left by one, bit n holds x^(255-n): the upper half is then the
 * part of degree below 128, and the lower half E the part of degree
 * 128 and up, divided by x^128, as a field element. x^128 = x^7 + x^2 +
 * x + 1, and multiplying by x^k is a right shift by k here; the bits
 * shifted out (E's low ones, times x^128) fold back the same way through
 * the left shifts by 127, 126 and 121 (into the top word only).
 */
TARGET_SHARED static inline __m128i
gf_reduce(__m128i lo, __m128i hi)
{
	__m128i c, y, z, s;

	c = _mm_srli_epi64(lo, 63);
	y = _mm_srli_epi64(hi, 63);
	lo = _mm_or_si128(_mm_slli_epi64(lo, 1), _mm_slli_si128(c, 8));
	hi = _mm_or_si128(_mm_or_si128(_mm_slli_epi64(hi, 1),
	    _mm_slli_si128(y, 8)), _mm_srli_si128(c, 8));

	y = _mm_slli_si128(lo, 8);
	z = _mm_xor_si128(lo, _mm_xor_si128(_mm_slli_epi64(y, 63),
	    _mm_xor_si128(_mm_slli_epi64(y, 62), _mm_slli_epi64(y, 57))));
	s = _mm_srli_si128(z, 8);
	hi = _mm_xor_si128(hi, z);
	hi = _mm_xor_si128(hi, _mm_xor_si128(_mm_srli_epi64(z, 1),
	    _mm_slli_epi64(s, 63)));
	hi = _mm_xor_si128(hi, _mm_xor_si128(_mm_srli_epi64(z, 2),
	    _mm_slli_epi64(s, 62)));
	hi = _mm_xor_si128(hi, _mm_xor_si128(_mm_srli_epi64(z, 7),
	    _mm_slli_epi64(s, 57)));
	return hi;
}

TARGET_SHARED static __m128i
gf_mul(__m128i a, __m128i b)
{
	__m128i ll, hh, mid;

	ll = _mm_clmulepi64_si128(a, b, 0x00);
	hh = _mm_clmulepi64_si128(a, b, 0x11);
	mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x01),
	    _mm_clmulepi64_si128(a, b, 0x10));
	return gf_reduce(_mm_xor_si128(ll, _mm_slli_si128(mid, 8)),
	    _mm_xor_si128(hh, _mm_srli_si128(mid, 8)));
}

TARGET_SHARED static __m128i
aes_block(const struct gcm_key *k, __m128i x)
{
	uint32_t r;

	x = _mm_xor_si128(x, k->rk[0]);
	for (r = 1; r < k->rounds; r++)
		x = _mm_aesenc_si128(x, k->rk[r]);
	return _mm_aesenclast_si128(x, k->rk[k->rounds]);
}

/*
 * The nonce in a block's first three words and 0 in its last, read as 12
 * bytes (the caller's may end there) into a register: a block stored in
 * parts and loaded whole stalls.
 */
TARGET_SHARED static inline __m128i
nonce_block(const uint8_t *nonce)
{
	uint64_t lo;
	uint32_t hi;

	memcpy(&lo, nonce, sizeof(lo));
	memcpy(&hi, nonce + sizeof(lo), sizeof(hi));
	return _mm_set_epi64x((long long)hi, (long long)lo);
}

/*
 * A message's tag, from the sums [l, u, m] of the products of its blocks
 * with their powers of H (low, high and middle halves) and its tag block
 * t (the nonce's first counter through AES): the lengths in bits, two
 * big-endian words, byte-reversed, times h (H itself), added, all reduced
 * once, byte-reversed back and added to t.
 */
TARGET_SHARED static inline __m128i
finish(__m128i l, __m128i u, __m128i m, const __m128i *h, size_t aadlen,
    size_t len, __m128i t)
{
	__m128i lens, x;

	lens = _mm_set_epi64x((long long)aadlen * 8, (long long)len * 8);
	l = _mm_xor_si128(l, _mm_clmulepi64_si128(lens, *h, 0x00));
	u = _mm_xor_si128(u, _mm_clmulepi64_si128(lens, *h, 0x11));
	m = _mm_xor_si128(m, _mm_xor_si128(_mm_clmulepi64_si128(lens, *h,
	    0x01), _mm_clmulepi64_si128(lens, *h, 0x10)));
	x = gf_reduce(_mm_xor_si128(l, _mm_slli_si128(m, 8)),
	    _mm_xor_si128(u, _mm_srli_si128(m, 8)));
	return _mm_xor_si128(t, bswap128(x));
}

/*
 * Expands k, claimed for aes: wolfSSL's schedule is used as it is when it
 * encrypts a block as wolfSSL does (its AES-NI layout); a key that does
 * not is remembered as unusable. The powers of H go four chains abreast.
 */
TARGET_SHARED static const struct gcm_key *
expand(struct gcm_key *k, Aes *aes)
{
	uint8_t zero[16] = { 0 }, want[16], got[16];
	__m128i h, h4;
	int i;

	fills++;
	k->tried = true;
	if (k->rounds != 10 && k->rounds != 12 && k->rounds != 14)
		return NULL;
	for (i = 0; i <= (int)k->rounds; i++)
		k->rk[i] = _mm_loadu_si128((const __m128i *)
		    ((const uint8_t *)aes->key + 16 * i));
	h = aes_block(k, _mm_setzero_si128());
	_mm_storeu_si128((__m128i *)got, h);
	if (wc_AesEncryptDirect(aes, want, zero) != 0 ||
	    memcmp(got, want, sizeof(got)) != 0)
		return NULL;
	h = bswap128(h);
	k->pow[GCM_RUN_BLOCKS - 1] = h;
	for (i = GCM_RUN_BLOCKS - 2; i >= GCM_RUN_BLOCKS - 4; i--)
		k->pow[i] = gf_mul(k->pow[i + 1], h);
	h4 = k->pow[GCM_RUN_BLOCKS - 4];
	for (i = GCM_RUN_BLOCKS - 5; i >= 0; i--)
		k->pow[i] = gf_mul(k->pow[i + 4], h4);
	k->usable = true;
	return k;
}

/*
 * The key of aes if it is expanded, else NULL (wolfSSL's turn): a key
 * gets a place when one is free (see GCM_SETS), and is expanded at its
 * GCM_PROBATION-th use, so that the keys of a handshake, which protect a
 * packet or two each, cost nothing here.
 */
TARGET_SHARED static const struct gcm_key *
key_lookup(Aes *aes)
{
	size_t si = set_of(aes);
	struct gcm_key *set = cache[si], *k = NULL;
	int w;

	for (w = 0; w < GCM_WAYS; w++) {
		if (set[w].aes != aes)
			continue;
		k = &set[w];
		if (k->rounds == aes->rounds &&
		    memcmp(k->head, aes->key, sizeof(k->head)) == 0) {
			if (k->credit < GCM_CREDIT)
				k->credit++;
			if (k->usable)
				return k;
			if (k->tried || ++k->seen < GCM_PROBATION)
				return NULL;
			return expand(k, aes);
		}
		break;	/* keyed again since: its place is free */
	}
	if (k == NULL) {
		for (w = 0; w < GCM_WAYS; w++) {
			if (set[w].credit == 0) {
				k = &set[w];
				break;
			}
		}
		if (k == NULL) {
			if (++misses[si] % GCM_MISSES == 0) {
				k = set[0].credit <= set[1].credit ?
				    &set[0] : &set[1];
				k->credit--;
			}
			return NULL;
		}
	}
	explicit_bzero(k, sizeof(*k));
	k->aes = aes;
	k->rounds = aes->rounds;
	memcpy(k->head, aes->key, sizeof(k->head));
	k->credit = 1;
	k->seen = 1;
	return NULL;
}

TARGET_512 static inline __m128i
fold4(__m512i v)
{
	__m256i a;

	a = _mm256_xor_si256(_mm512_extracti64x4_epi64(v, 0),
	    _mm512_extracti64x4_epi64(v, 1));
	return _mm_xor_si128(_mm256_extracti128_si256(a, 0),
	    _mm256_extracti128_si256(a, 1));
}

/* Four counter blocks through AES, four lanes per instruction. */
#define AES4(v, rkz, rounds) do {					\
	uint32_t r_;							\
	(v) = _mm512_xor_si512((v), (rkz)[0]);				\
	for (r_ = 1; r_ < (rounds); r_++)				\
		(v) = _mm512_aesenc_epi128((v), (rkz)[r_]);		\
	(v) = _mm512_aesenclast_epi128((v), (rkz)[rounds]);		\
} while (0)

TARGET_512 static inline void
mul4(__m512i d, __m512i h, __m512i *ll, __m512i *hh, __m512i *mid)
{
	*ll = _mm512_xor_si512(*ll, _mm512_clmulepi64_epi128(d, h, 0x00));
	*hh = _mm512_xor_si512(*hh, _mm512_clmulepi64_epi128(d, h, 0x11));
	*mid = _mm512_ternarylogic_epi64(*mid,
	    _mm512_clmulepi64_epi128(d, h, 0x01),
	    _mm512_clmulepi64_epi128(d, h, 0x10), 0x96);
}

/*
 * CTR and GHASH of a message whose GHASH (AAD, ciphertext, lengths:
 * nblocks blocks) is one run: each 256 bytes of ciphertext is hashed as
 * soon as it is made or read, while the next goes through AES (different
 * execution units), and all is reduced once. Returns the tag. open: src is
 * the ciphertext (hashed as read), else the plaintext. Inlined into its
 * two callers, so that open is a constant in each.
 */
TARGET_512 static inline __attribute__((always_inline)) __m128i
crypt_512(const struct gcm_key *k, uint8_t *dest, const uint8_t *src,
    size_t len, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
    size_t nblocks, bool open)
{
	const __m512i rev = _mm512_broadcast_i32x4(REV_BYTES);
	const __m512i swap = _mm512_broadcast_i32x4(CTR_BYTES);
	const __m512i four = _mm512_set_epi32(4, 0, 0, 0, 4, 0, 0, 0,
	    4, 0, 0, 0, 4, 0, 0, 0);
	const __m128i *pw = k->pow + (GCM_RUN_BLOCKS - nblocks);
	__m512i rkz[15], c, c1, c2, c3, v0, v1, v2, v3, s0, s1, s2, s3;
	__m512i ll, hh, mid;
	__m128i t;
	uint32_t r;
	size_t off, left, nb;
	__mmask64 bm;
	__mmask8 qm;

	for (r = 0; r <= k->rounds; r++)
		rkz[r] = _mm512_broadcast_i32x4(k->rk[r]);
	/* the tag's block first, its rounds beside the AAD's hashing */
	t = nonce_block(nonce);
	c = _mm512_add_epi32(_mm512_broadcast_i32x4(_mm_insert_epi32(t, 2,
	    3)), _mm512_set_epi32(3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0,
	    0, 0, 0, 0));
	t = aes_block(k, _mm_insert_epi32(t, 0x01000000, 3));
	ll = hh = mid = _mm512_setzero_si512();
	for (off = 0; off < aadlen; off += 64) {
		left = aadlen - off;
		bm = left >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << left) - 1;
		nb = left >= 64 ? 4 : (left + 15) / 16;
		qm = (__mmask8)((1u << (2 * nb)) - 1);
		mul4(_mm512_shuffle_epi8(_mm512_maskz_loadu_epi8(bm, aad + off),
		    rev), _mm512_maskz_loadu_epi64(qm, pw), &ll, &hh, &mid);
		pw += nb;
	}
	for (off = 0; len - off >= 256; off += 256) {
		c1 = _mm512_add_epi32(c, four);
		c2 = _mm512_add_epi32(c1, four);
		c3 = _mm512_add_epi32(c2, four);
		v0 = _mm512_xor_si512(_mm512_shuffle_epi8(c, swap), rkz[0]);
		v1 = _mm512_xor_si512(_mm512_shuffle_epi8(c1, swap), rkz[0]);
		v2 = _mm512_xor_si512(_mm512_shuffle_epi8(c2, swap), rkz[0]);
		v3 = _mm512_xor_si512(_mm512_shuffle_epi8(c3, swap), rkz[0]);
		c = _mm512_add_epi32(c3, four);
		for (r = 1; r < k->rounds; r++) {
			v0 = _mm512_aesenc_epi128(v0, rkz[r]);
			v1 = _mm512_aesenc_epi128(v1, rkz[r]);
			v2 = _mm512_aesenc_epi128(v2, rkz[r]);
			v3 = _mm512_aesenc_epi128(v3, rkz[r]);
		}
		s0 = _mm512_loadu_si512(src + off);
		s1 = _mm512_loadu_si512(src + off + 64);
		s2 = _mm512_loadu_si512(src + off + 128);
		s3 = _mm512_loadu_si512(src + off + 192);
		v0 = _mm512_xor_si512(_mm512_aesenclast_epi128(v0,
		    rkz[k->rounds]), s0);
		v1 = _mm512_xor_si512(_mm512_aesenclast_epi128(v1,
		    rkz[k->rounds]), s1);
		v2 = _mm512_xor_si512(_mm512_aesenclast_epi128(v2,
		    rkz[k->rounds]), s2);
		v3 = _mm512_xor_si512(_mm512_aesenclast_epi128(v3,
		    rkz[k->rounds]), s3);
		_mm512_storeu_si512(dest + off, v0);
		_mm512_storeu_si512(dest + off + 64, v1);
		_mm512_storeu_si512(dest + off + 128, v2);
		_mm512_storeu_si512(dest + off + 192, v3);
		mul4(_mm512_shuffle_epi8(open ? s0 : v0, rev),
		    _mm512_loadu_si512(pw), &ll, &hh, &mid);
		mul4(_mm512_shuffle_epi8(open ? s1 : v1, rev),
		    _mm512_loadu_si512(pw + 4), &ll, &hh, &mid);
		mul4(_mm512_shuffle_epi8(open ? s2 : v2, rev),
		    _mm512_loadu_si512(pw + 8), &ll, &hh, &mid);
		mul4(_mm512_shuffle_epi8(open ? s3 : v3, rev),
		    _mm512_loadu_si512(pw + 12), &ll, &hh, &mid);
		pw += 16;
	}
	for (; off < len; off += 64) {
		left = len - off;
		bm = left >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << left) - 1;
		nb = left >= 64 ? 4 : (left + 15) / 16;
		qm = (__mmask8)((1u << (2 * nb)) - 1);
		v0 = _mm512_shuffle_epi8(c, swap);
		c = _mm512_add_epi32(c, four);
		AES4(v0, rkz, k->rounds);
		/* the bytes past the end hashed as zeros */
		s0 = _mm512_maskz_loadu_epi8(bm, src + off);
		v0 = _mm512_maskz_mov_epi8(bm, _mm512_xor_si512(v0, s0));
		_mm512_mask_storeu_epi8(dest + off, bm, v0);
		mul4(_mm512_shuffle_epi8(open ? s0 : v0, rev),
		    _mm512_maskz_loadu_epi64(qm, pw), &ll, &hh, &mid);
		pw += nb;
	}
	/* pw is H: the lengths' block is the last */
	return finish(fold4(ll), fold4(hh), fold4(mid), pw, aadlen, len, t);
}

/* The tag of plain sealed into dest. */
TARGET_512 static __m128i
seal_512(const struct gcm_key *k, uint8_t *dest, const uint8_t *plain,
    size_t len, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
    size_t nblocks)
{
	return crypt_512(k, dest, plain, len, nonce, aad, aadlen, nblocks,
	    false);
}

/* The tag src's ciphertext should have, opened into dest. */
TARGET_512 static __m128i
open_512(const struct gcm_key *k, uint8_t *dest, const uint8_t *src,
    size_t len, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
    size_t nblocks)
{
	return crypt_512(k, dest, src, len, nonce, aad, aadlen, nblocks,
	    true);
}

TARGET_256 static inline __m128i
fold2(__m256i v)
{
	return _mm_xor_si128(_mm256_extracti128_si256(v, 0),
	    _mm256_extracti128_si256(v, 1));
}

TARGET_256 static inline void
mul2(__m256i d, __m256i h, __m256i *ll, __m256i *hh, __m256i *mid)
{
	*ll = _mm256_xor_si256(*ll, _mm256_clmulepi64_epi128(d, h, 0x00));
	*hh = _mm256_xor_si256(*hh, _mm256_clmulepi64_epi128(d, h, 0x11));
	*mid = _mm256_xor_si256(*mid, _mm256_xor_si256(
	    _mm256_clmulepi64_epi128(d, h, 0x01),
	    _mm256_clmulepi64_epi128(d, h, 0x10)));
}

/* Two counter blocks through AES, two lanes per instruction. */
TARGET_256 static inline __m256i
aes2(const __m256i *rky, uint32_t rounds, __m256i v)
{
	uint32_t r;

	v = _mm256_xor_si256(v, rky[0]);
	for (r = 1; r < rounds; r++)
		v = _mm256_aesenc_epi128(v, rky[r]);
	return _mm256_aesenclast_epi128(v, rky[rounds]);
}

/*
 * The n bytes (at most 8) at p as a little-endian word, read within them:
 * two loads of 4 that may overlap, or each byte of 3 or fewer (the bytes
 * read twice land in the same place).
 */
static inline uint64_t
load_word(const uint8_t *p, size_t n)
{
	uint32_t lo, hi;

	if (n >= 4) {
		memcpy(&lo, p, sizeof(lo));
		memcpy(&hi, p + n - 4, sizeof(hi));
		return lo | (uint64_t)hi << (8 * (n - 4));
	}
	if (n == 0)
		return 0;
	return p[0] | (uint64_t)p[n / 2] << (8 * (n / 2)) |
	    (uint64_t)p[n - 1] << (8 * (n - 1));
}

/* The n bytes (fewer than 16) at p and zeros after them. */
TARGET_256 static inline __m128i
load_half(const uint8_t *p, size_t n)
{
	uint64_t lo;

	if (n < 8)
		return _mm_set_epi64x(0, (long long)load_word(p, n));
	memcpy(&lo, p, sizeof(lo));
	return _mm_set_epi64x((long long)load_word(p + 8, n - 8),
	    (long long)lo);
}

/*
 * The n bytes (fewer than 32) at p and zeros after them, read as words
 * into registers: none past p + n may be read (it may be another page),
 * a masked load (VPMASKMOVD) is not relied on to leave the words it
 * masks off alone (qemu's faults on them), and a copy's stores would
 * stall the load of the whole (about 10 ns a packet, measured).
 */
TARGET_256 static inline __attribute__((always_inline)) __m256i
load_part(const uint8_t *p, size_t n)
{
	if (n < 16)
		return _mm256_set_m128i(_mm_setzero_si128(), load_half(p, n));
	return _mm256_set_m128i(load_half(p + 16, n - 16),
	    _mm_loadu_si128((const __m128i *)p));
}

/*
 * crypt_512 with VAES and VPCLMULQDQ on 256-bit registers, for CPUs that
 * have them without AVX-512: two blocks per instruction, 128 bytes of
 * ciphertext hashed as soon as made or read, the same powers of H and
 * one reduction. A last part of AAD or of the message is read by
 * load_part and written through a copy (AVX2 masks words, not bytes);
 * when it is one block, it is multiplied by two powers all the same (the
 * second is the next block's, or H: within k->pow), its second block of
 * zeros adding nothing.
 */
TARGET_256 static inline __attribute__((always_inline)) __m128i
crypt_256(const struct gcm_key *k, uint8_t *dest, const uint8_t *src,
    size_t len, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
    size_t nblocks, bool open)
{
	const __m256i rev = _mm256_broadcastsi128_si256(REV_BYTES);
	const __m256i swap = _mm256_broadcastsi128_si256(CTR_BYTES);
	const __m256i two = _mm256_set_epi32(2, 0, 0, 0, 2, 0, 0, 0);
	const __m256i at = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
	    10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
	    26, 27, 28, 29, 30, 31);
	const __m128i *pw = k->pow + (GCM_RUN_BLOCKS - nblocks);
	__m256i rky[15], c, c1, c2, c3, v0, v1, v2, v3, s0, s1, s2, s3;
	__m256i ll, hh, mid;
	__m128i t;
	uint8_t part[32];
	uint32_t r;
	size_t off, left;

	for (r = 0; r <= k->rounds; r++)
		rky[r] = _mm256_broadcastsi128_si256(k->rk[r]);
	/* the tag's block first, its rounds beside the AAD's hashing */
	t = nonce_block(nonce);
	c = _mm256_add_epi32(_mm256_broadcastsi128_si256(_mm_insert_epi32(t,
	    2, 3)), _mm256_set_epi32(1, 0, 0, 0, 0, 0, 0, 0));
	t = aes_block(k, _mm_insert_epi32(t, 0x01000000, 3));
	ll = hh = mid = _mm256_setzero_si256();
	for (off = 0; aadlen - off >= 32; off += 32) {
		mul2(_mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)
		    (aad + off)), rev), _mm256_loadu_si256((const __m256i *)pw),
		    &ll, &hh, &mid);
		pw += 2;
	}
	if (off < aadlen) {
		left = aadlen - off;
		mul2(_mm256_shuffle_epi8(load_part(aad + off, left), rev),
		    _mm256_loadu_si256((const __m256i *)pw), &ll, &hh, &mid);
		pw += (left + 15) / 16;
	}
	for (off = 0; len - off >= 128; off += 128) {
		c1 = _mm256_add_epi32(c, two);
		c2 = _mm256_add_epi32(c1, two);
		c3 = _mm256_add_epi32(c2, two);
		v0 = _mm256_xor_si256(_mm256_shuffle_epi8(c, swap), rky[0]);
		v1 = _mm256_xor_si256(_mm256_shuffle_epi8(c1, swap), rky[0]);
		v2 = _mm256_xor_si256(_mm256_shuffle_epi8(c2, swap), rky[0]);
		v3 = _mm256_xor_si256(_mm256_shuffle_epi8(c3, swap), rky[0]);
		c = _mm256_add_epi32(c3, two);
		for (r = 1; r < k->rounds; r++) {
			v0 = _mm256_aesenc_epi128(v0, rky[r]);
			v1 = _mm256_aesenc_epi128(v1, rky[r]);
			v2 = _mm256_aesenc_epi128(v2, rky[r]);
			v3 = _mm256_aesenc_epi128(v3, rky[r]);
		}
		s0 = _mm256_loadu_si256((const __m256i *)(src + off));
		s1 = _mm256_loadu_si256((const __m256i *)(src + off + 32));
		s2 = _mm256_loadu_si256((const __m256i *)(src + off + 64));
		s3 = _mm256_loadu_si256((const __m256i *)(src + off + 96));
		v0 = _mm256_xor_si256(_mm256_aesenclast_epi128(v0,
		    rky[k->rounds]), s0);
		v1 = _mm256_xor_si256(_mm256_aesenclast_epi128(v1,
		    rky[k->rounds]), s1);
		v2 = _mm256_xor_si256(_mm256_aesenclast_epi128(v2,
		    rky[k->rounds]), s2);
		v3 = _mm256_xor_si256(_mm256_aesenclast_epi128(v3,
		    rky[k->rounds]), s3);
		_mm256_storeu_si256((__m256i *)(dest + off), v0);
		_mm256_storeu_si256((__m256i *)(dest + off + 32), v1);
		_mm256_storeu_si256((__m256i *)(dest + off + 64), v2);
		_mm256_storeu_si256((__m256i *)(dest + off + 96), v3);
		mul2(_mm256_shuffle_epi8(open ? s0 : v0, rev),
		    _mm256_loadu_si256((const __m256i *)pw), &ll, &hh, &mid);
		mul2(_mm256_shuffle_epi8(open ? s1 : v1, rev),
		    _mm256_loadu_si256((const __m256i *)(pw + 2)), &ll, &hh,
		    &mid);
		mul2(_mm256_shuffle_epi8(open ? s2 : v2, rev),
		    _mm256_loadu_si256((const __m256i *)(pw + 4)), &ll, &hh,
		    &mid);
		mul2(_mm256_shuffle_epi8(open ? s3 : v3, rev),
		    _mm256_loadu_si256((const __m256i *)(pw + 6)), &ll, &hh,
		    &mid);
		pw += 8;
	}
	/*
	 * The last 0 to 127 bytes: their keystream first, four vectors abreast
	 * when there are more than 32 of them (a vector's rounds alone wait
	 * on each other), then each 32 bytes of them made and hashed as above.
	 */
	if (len - off > 32) {
		c1 = _mm256_add_epi32(c, two);
		c2 = _mm256_add_epi32(c1, two);
		c3 = _mm256_add_epi32(c2, two);
		v0 = _mm256_xor_si256(_mm256_shuffle_epi8(c, swap), rky[0]);
		v1 = _mm256_xor_si256(_mm256_shuffle_epi8(c1, swap), rky[0]);
		v2 = _mm256_xor_si256(_mm256_shuffle_epi8(c2, swap), rky[0]);
		v3 = _mm256_xor_si256(_mm256_shuffle_epi8(c3, swap), rky[0]);
		for (r = 1; r < k->rounds; r++) {
			v0 = _mm256_aesenc_epi128(v0, rky[r]);
			v1 = _mm256_aesenc_epi128(v1, rky[r]);
			v2 = _mm256_aesenc_epi128(v2, rky[r]);
			v3 = _mm256_aesenc_epi128(v3, rky[r]);
		}
		v0 = _mm256_aesenclast_epi128(v0, rky[k->rounds]);
		v1 = _mm256_aesenclast_epi128(v1, rky[k->rounds]);
		v2 = _mm256_aesenclast_epi128(v2, rky[k->rounds]);
		v3 = _mm256_aesenclast_epi128(v3, rky[k->rounds]);
	} else {
		v0 = aes2(rky, k->rounds, _mm256_shuffle_epi8(c, swap));
		v1 = v2 = v3 = _mm256_setzero_si256();	/* not used */
	}
	/* v0 the next 32 bytes' keystream, v1 to v3 the ones after */
	for (; len - off >= 32; off += 32) {
		s0 = _mm256_loadu_si256((const __m256i *)(src + off));
		s1 = _mm256_xor_si256(v0, s0);
		_mm256_storeu_si256((__m256i *)(dest + off), s1);
		mul2(_mm256_shuffle_epi8(open ? s0 : s1, rev),
		    _mm256_loadu_si256((const __m256i *)pw), &ll, &hh, &mid);
		pw += 2;
		v0 = v1;
		v1 = v2;
		v2 = v3;
	}
	if (off < len) {
		left = len - off;
		s0 = load_part(src + off, left);
		/* the bytes past the end hashed as zeros */
		v0 = _mm256_and_si256(_mm256_xor_si256(v0, s0),
		    _mm256_cmpgt_epi8(_mm256_set1_epi8((char)left), at));
		_mm256_storeu_si256((__m256i *)part, v0);
		memcpy(dest + off, part, left);
		mul2(_mm256_shuffle_epi8(open ? s0 : v0, rev),
		    _mm256_loadu_si256((const __m256i *)pw), &ll, &hh, &mid);
		pw += (left + 15) / 16;
	}
	/* pw is H: the lengths' block is the last */
	return finish(fold2(ll), fold2(hh), fold2(mid), pw, aadlen, len, t);
}

/* seal_512 and open_512 on this path. */
TARGET_256 static __m128i
seal_256(const struct gcm_key *k, uint8_t *dest, const uint8_t *plain,
    size_t len, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
    size_t nblocks)
{
	return crypt_256(k, dest, plain, len, nonce, aad, aadlen, nblocks,
	    false);
}

TARGET_256 static __m128i
open_256(const struct gcm_key *k, uint8_t *dest, const uint8_t *src,
    size_t len, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
    size_t nblocks)
{
	return crypt_256(k, dest, src, len, nonce, aad, aadlen, nblocks,
	    true);
}

/* Each path's run of a message: it returns the tag. */
typedef __m128i	run_fn(const struct gcm_key *, uint8_t *, const uint8_t *,
		    size_t, const uint8_t *, const uint8_t *, size_t, size_t);

static run_fn *const seal_run[] = {
	[GCM_VAES256] = seal_256,
	[GCM_VAES512] = seal_512,
};
static run_fn *const open_run[] = {
	[GCM_VAES256] = open_256,
	[GCM_VAES512] = open_512,
};

enum gcm_path
gcm_cpu(void)
{
	if (cpu < 0)
		cpu = cpu_path();
	return cpu;
}

enum gcm_path
gcm_path(void)
{
	return gcm_cpu() < widest ? gcm_cpu() : widest;
}

void
gcm_select(enum gcm_path path)
{
	widest = path;
}

uint64_t
gcm_runs(enum gcm_path path)
{
	return path == GCM_WOLFSSL ? 0 : runs[path];
}

/*
 * The key to seal or open a message with, its blocks and the path that
 * takes it; NULL when the path is wolfSSL's (off, or the CPU has no other),
 * the message's GHASH is not one run, or the key is wolfSSL's for now
 * (key_lookup). Each length is bounded first: rounded up to blocks, one
 * within 15 of SIZE_MAX would wrap to a few blocks and let the run read
 * and write far past the buffers.
 */
static const struct gcm_key *
run_key(Aes *aes, size_t len, size_t aadlen, size_t *nblocks,
    enum gcm_path *path)
{
	if ((*path = gcm_path()) == GCM_WOLFSSL)
		return NULL;
	if (len > 16 * GCM_RUN_BLOCKS || aadlen > 16 * GCM_RUN_BLOCKS)
		return NULL;
	*nblocks = (aadlen + 15) / 16 + (len + 15) / 16 + 1;
	if (*nblocks > GCM_RUN_BLOCKS)
		return NULL;
	return key_lookup(aes);
}

bool
gcm_seal(Aes *aes, uint8_t *dest, const uint8_t *plain, size_t len,
    const uint8_t *nonce, const uint8_t *aad, size_t aadlen)
{
	const struct gcm_key *k;
	enum gcm_path path;
	size_t nblocks;

	/* (a packet's GHASH is one run: the caller's packets fit) */
	if ((k = run_key(aes, len, aadlen, &nblocks, &path)) == NULL)
		return false;
	_mm_storeu_si128((__m128i *)(dest + len), seal_run[path](k, dest,
	    plain, len, nonce, aad, aadlen, nblocks));
	runs[path]++;
	return true;
}

int
gcm_open(Aes *aes, uint8_t *dest, const uint8_t *ciphertext, size_t len,
    const uint8_t *nonce, const uint8_t *aad, size_t aadlen)
{
	const struct gcm_key *k;
	enum gcm_path path;
	size_t nblocks;
	__m128i same;

	if ((k = run_key(aes, len, aadlen, &nblocks, &path)) == NULL)
		return -1;
	same = _mm_cmpeq_epi8(open_run[path](k, dest, ciphertext, len, nonce,
	    aad, aadlen, nblocks), _mm_loadu_si128((const __m128i *)
	    (ciphertext + len)));
	runs[path]++;
	/* one test of all 128 bits: no early exit to time */
	if (_mm_movemask_epi8(same) == 0xffff)
		return 1;
	/*
	 * decrypted before it was checked: none of it may be used (dest may
	 * be NULL when len is 0, which explicit_bzero is declared not to take)
	 */
	if (len > 0)
		explicit_bzero(dest, len);
	return 0;
}

void
gcm_forget(const Aes *aes)
{
	struct gcm_key *set = cache[set_of(aes)];
	int w;

	for (w = 0; w < GCM_WAYS; w++)
		if (set[w].aes == aes)
			explicit_bzero(&set[w], sizeof(set[w]));
}

size_t
gcm_cached(void)
{
	size_t i, w, n = 0;

	for (i = 0; i < GCM_SETS; i++)
		for (w = 0; w < GCM_WAYS; w++)
			if (cache[i][w].usable)
				n++;
	return n;
}

uint64_t
gcm_fills(void)
{
	return fills;
}

#else

enum gcm_path
gcm_cpu(void)
{
	return GCM_WOLFSSL;
}

enum gcm_path
gcm_path(void)
{
	return GCM_WOLFSSL;
}

void
gcm_select(enum gcm_path path)
{
}

uint64_t
gcm_runs(enum gcm_path path)
{
	return 0;
}

int
gcm_open(Aes *aes, uint8_t *dest, const uint8_t *ciphertext, size_t len,
    const uint8_t *nonce, const uint8_t *aad, size_t aadlen)
{
	return -1;
}

void
gcm_forget(const Aes *aes)
{
}

size_t
gcm_cached(void)
{
	return 0;
}

uint64_t
gcm_fills(void)
{
	return 0;
}

bool
gcm_seal(Aes *aes, uint8_t *dest, const uint8_t *plain, size_t len,
    const uint8_t *nonce, const uint8_t *aad, size_t aadlen)
{
	return false;
}

#endif
