/*
 * websocket.h: what an HTTP/1.1 backend's WebSocket handshake needs of
 * qproxy (RFC 6455 4.1, 4.2.2): the Sec-WebSocket-Key sent with the
 * Upgrade, and the check of the Sec-WebSocket-Accept of its 101.
 */
#ifndef QPROXY_WEBSOCKET_H
#define QPROXY_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>

#define WS_KEY_LEN	24	/* 16 random bytes in base64 */

/* A new key, NUL-ended. */
void	ws_key_new(char key[WS_KEY_LEN + 1]);
/* Whether accept[0, len) is the Sec-WebSocket-Accept of that key. */
bool	ws_accept_ok(const char *key, const char *accept, size_t len);

#endif
