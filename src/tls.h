/* tls.h: wolfSSL contexts (TLS 1.3 only, ALPN h3) and per-connection sessions. */
#ifndef QPROXY_TLS_H
#define QPROXY_TLS_H

#include <stddef.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <ngtcp2/ngtcp2_crypto.h>

/*
 * A connection's TLS side: ngtcp2's reference first (wolfSSL's app data
 * points here), then what the handshake told us.
 */
struct tls_conn {
	ngtcp2_crypto_conn_ref	 ref;
	char			 sni[256];	/* "" when none was sent */
};

int		 tls_init(void);
/* A server context for one listener; NULL with a message in err. */
WOLFSSL_CTX	*tls_ctx_new(const char *certificate, const char *private_key,
		    char *err, size_t errlen);
void		 tls_ctx_free(WOLFSSL_CTX *);
/* A session bound to a connection through tc (ngtcp2's convention). */
WOLFSSL		*tls_session_new(WOLFSSL_CTX *, struct tls_conn *tc);
void		 tls_session_free(WOLFSSL *);

#endif
