/*
 * websocket.c: a WebSocket's key and its accept (RFC 6455 4.1, 4.2.2),
 * with wolfCrypt's SHA-1 and base64.
 *
 * An HTTP/3 client opens a WebSocket without a key (RFC 8441 5, RFC 9220
 * 3): qproxy makes the one an HTTP/1.1 backend needs, and takes its 101
 * for an upgrade only with the accept of that key, so that a response a
 * backend did not mean as a WebSocket's never opens a tunnel.
 */
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/coding.h>
#include <wolfssl/wolfcrypt/hash.h>

#include "rng.h"
#include "websocket.h"

#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_ACCEPT_LEN	28	/* 20 bytes of SHA-1 in base64 */

void
ws_key_new(char key[WS_KEY_LEN + 1])
{
	byte raw[16], out[WS_KEY_LEN + 4];
	word32 outlen = sizeof(out);

	rng_fill(raw, sizeof(raw));
	/* 16 bytes always take 24 characters */
	if (Base64_Encode_NoNl(raw, sizeof(raw), out, &outlen) != 0 ||
	    outlen != WS_KEY_LEN)
		memset(out, 'A', WS_KEY_LEN);
	memcpy(key, out, WS_KEY_LEN);
	key[WS_KEY_LEN] = '\0';
}

bool
ws_accept_ok(const char *key, const char *accept, size_t len)
{
	byte in[WS_KEY_LEN + sizeof(WS_GUID) - 1];
	byte hash[WC_SHA_DIGEST_SIZE], out[WS_ACCEPT_LEN + 4];
	word32 outlen = sizeof(out);

	if (len != WS_ACCEPT_LEN || strlen(key) != WS_KEY_LEN)
		return false;
	memcpy(in, key, WS_KEY_LEN);
	memcpy(in + WS_KEY_LEN, WS_GUID, sizeof(WS_GUID) - 1);
	if (wc_ShaHash(in, sizeof(in), hash) != 0 ||
	    Base64_Encode_NoNl(hash, sizeof(hash), out, &outlen) != 0 ||
	    outlen != WS_ACCEPT_LEN)
		return false;
	return memcmp(out, accept, WS_ACCEPT_LEN) == 0;
}
