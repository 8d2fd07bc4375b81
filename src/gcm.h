/* gcm.h: AES-GCM with VAES and VPCLMULQDQ, where the CPU has them. */
#ifndef QPROXY_GCM_H
#define QPROXY_GCM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

/* The only nonce length taken: RFC 9001 5.3's, and TLS 1.3's. */
#define GCM_NONCE_LEN	12

/*
 * The most blocks of AAD, plaintext and lengths (16 bytes each, the last
 * of AAD and of plaintext padded) a message may have for this path. A
 * QUIC packet of 1,452 bytes has 93 or fewer.
 */
#define GCM_RUN_BLOCKS	96

/* A key's uses left to wolfSSL before this path expands it for its own. */
#define GCM_PROBATION	4

/* What seals and opens a message, narrowest first. */
enum gcm_path {
	GCM_WOLFSSL,	/* the caller, with wolfSSL */
	GCM_VAES256,	/* gcm.c on 256-bit registers (AVX2) */
	GCM_VAES512	/* gcm.c on 512-bit registers (AVX-512) */
};

/*
 * Encrypts len bytes of plain into dest (which may be plain) under aes, a
 * key wolfSSL set up for GCM, with a nonce of GCM_NONCE_LEN bytes, and
 * writes the 16-byte tag at dest + len: what wc_AesGcmEncrypt does.
 * false, with nothing written, when this CPU, key or length cannot take
 * this path (or aes_gcm_vaes is off): the caller then asks wolfSSL.
 */
bool	gcm_seal(Aes *aes, uint8_t *dest, const uint8_t *plain, size_t len,
	    const uint8_t *nonce, const uint8_t *aad, size_t aadlen);
/*
 * Decrypts len bytes of ciphertext, followed by its 16-byte tag, into dest
 * (which may be ciphertext): 1 when the tag matches, 0 when it does not
 * (dest then zeroed), -1 when this path cannot take it (nothing written;
 * the caller then asks wolfSSL).
 */
int	gcm_open(Aes *aes, uint8_t *dest, const uint8_t *ciphertext,
	    size_t len, const uint8_t *nonce, const uint8_t *aad,
	    size_t aadlen);
/* The widest path this CPU (and OS) can take. */
enum gcm_path	gcm_cpu(void);
/* The path gcm_seal and gcm_open take: the CPU's, or gcm_select's. */
enum gcm_path	gcm_path(void);
/*
 * aes_gcm_vaes: the widest path to take (GCM_VAES512 at the start);
 * GCM_WOLFSSL leaves every message to wolfSSL. Tests pick a path with it.
 */
void		gcm_select(enum gcm_path);
/* Wipes what gcm_seal keeps of aes's key: call it before aes goes. */
void	gcm_forget(const Aes *aes);
/*
 * How many keys gcm_seal keeps now, has expanded in all, and the messages
 * a path sealed or opened (tests).
 */
size_t		gcm_cached(void);
uint64_t	gcm_fills(void);
uint64_t	gcm_runs(enum gcm_path);

#endif
