/* tls.h: wolfSSL contexts (TLS 1.3 only, ALPN h3) and per-connection sessions. */
#ifndef QPROXY_TLS_H
#define QPROXY_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <ngtcp2/ngtcp2_crypto.h>

/*
 * A connection's TLS side: ngtcp2's reference first (wolfSSL's app data
 * points here), then what the handshake told us.
 */
struct tls_conn {
	ngtcp2_crypto_conn_ref	 ref;
	/*
	 * the name the client asked for, lowercase (qproxyctl conns); NULL
	 * when none was sent. Allocated: a connection holds it for its life,
	 * and most names are far shorter than the 253 bytes one may have.
	 */
	char			*sni;
	unsigned int		 cert;		/* the certificate it got */
	WOLFSSL_CTX		*ctx;		/* its listener's; lives as
						   long as its generation */
	uint64_t		 ticket;	/* the one it took (taken.h) */
	bool			 took_ticket;
	bool			 ticket_unsure;	/* took it to refuse it */
	bool			 client_auth;	/* its listener has client_ca */
	struct tls_peer		*peer;		/* a client_ca's client */
};

/*
 * The certificate a client gave a listener with client_ca, verified: the
 * value of client_cert_header, Hash=<SHA-256 of its DER, in hexadecimal>;
 * Subject="<its subject as RFC 4514 writes it: tls_cert_subject>".
 */
struct tls_peer {
	char		 value[1];
};
/* That value for a certificate's digest and subject; NULL when out of
   memory. In the subject '"' and '\\' are escaped with '\\', a control
   character or DEL written \\xHH. */
struct tls_peer	*tls_peer_new(const uint8_t hash[32], const char *subject);
/*
 * A certificate's (DER) subject as RFC 4514 writes a distinguished name:
 * the last RDN first, RDNs separated by ',' and the attributes of one by
 * '+', each type=value ("CN=alice,O=Example"); a value's octets outside
 * printable ASCII as hex pairs, a value not a string as '#' and its DER in
 * hex. Allocated; NULL when the subject cannot be read, or out of memory.
 */
char		*tls_cert_subject(const uint8_t *cert, size_t len);

struct config;
struct config_cert;
struct config_listener;

int		 tls_init(void);
/*
 * Session tickets are encrypted with keys derived from this secret (the
 * secret_file), rotating every 12 hours with the previous key still
 * accepted, so restarts and reloads keep tickets, and 0-RTT, working.
 */
void		 tls_set_ticket_secret(const uint8_t *, size_t);
/*
 * Makes the table of session tickets taken (see tls.c), shared by the
 * processes forked after: a supervisor's workers. At most once; -1 when
 * it cannot be mapped. tls_tickets_start makes it if no one did.
 */
int		 tls_tickets_share(void);
/*
 * A process that serves begins here (now: mono_now()): for 12 seconds
 * after the table was made, a ticket that may carry early data and that
 * the process did not issue resumes nothing, as the process before it
 * may have taken it (see tls.c).
 */
void		 tls_tickets_start(double now);
/*
 * For 12 seconds from now, a ticket that may carry early data and that
 * the table does not remember resumes nothing: with fresh, unless this
 * process issued it (a new process of an upgrade, once the one before
 * takes no more connections); with doubt, whoever did (the process
 * before, taking them again as the new one stopped). See tls.c.
 */
void		 tls_tickets_fresh(double now);
void		 tls_tickets_doubt(double now);
/* The session tickets remembered as taken now, by every worker. */
size_t		 tls_tickets_remembered(void);
/* Those this process let go early for room (the oldest first). */
uint64_t	 tls_tickets_forgotten(void);
/*
 * A server context for one listener: its certificates (ncerts, at least
 * one; the first for a client that names none of the others' hosts).
 * NULL with a message in err, and in bad_line the configuration line at
 * fault: the private_key's for a key that cannot be read or used, else
 * the certificate's. early_data: accept 0-RTT on resumed sessions. Its
 * session tickets are bound to zrtt (zrttlen bytes) and to the
 * certificate: one issued under other bytes, or for another certificate,
 * resumes nothing (see quic_0rtt_context).
 */
WOLFSSL_CTX	*tls_ctx_new(const struct config_listener *,
		    const void *zrtt, size_t zrttlen, int *bad_line,
		    char *err, size_t errlen);
void		 tls_ctx_free(WOLFSSL_CTX *);
/*
 * Whether both contexts have client_ca, with the same CAs and CRLs (the
 * files' bytes): a client's certificate one verified, the other would.
 */
bool		 tls_ctx_same_client_ca(WOLFSSL_CTX *, WOLFSSL_CTX *);

/* A context's certificate, as qproxyctl tls shows it. */
struct tls_cert_info {
	const char	*file;
	char *const	*names;		/* its DNS names, lowercase */
	size_t		 nnames;
	time_t		 not_before, not_after;	/* 0: unknown */
	const char	*missing;	/* the issuer the chain lacks, or NULL */
};
/* The nth certificate of a context, the first the default; false past. */
bool		 tls_ctx_cert(WOLFSSL_CTX *, size_t n, struct tls_cert_info *);
/* Whole days from now to not_after, less than 0 once it has passed. */
long long	 tls_days_left(time_t not_after, time_t now);
/* "2026-12-03T18:00:00Z", or "unknown" for 0 */
void		 tls_format_time(time_t, char *buf, size_t len);
/*
 * A listener's certificates that are not valid yet, have expired or expire
 * within TLS_EXPIRY_WARN_DAYS, are never sent, or lack an issuer that
 * neither the file nor this machine's roots hold, each warned about at its
 * line of the file.
 */
#define TLS_EXPIRY_WARN_DAYS	14
void		 tls_ctx_warnings(WOLFSSL_CTX *, const struct config *,
		    const struct config_listener *, time_t now,
		    void (*warn)(const char *, ...));
/*
 * Adds to *not_valid a context's certificates that have expired or are
 * not valid yet, and to *expiring those valid that expire within
 * TLS_EXPIRY_WARN_DAYS; *next becomes the first time after now, if before
 * *next, at which one of them passes from one state to another.
 */
void		 tls_ctx_expiry(WOLFSSL_CTX *, time_t now, uint64_t *expiring,
		    uint64_t *not_valid, uint64_t *crls_expiring,
		    uint64_t *crls_out_of_date, time_t *next);
/*
 * Whether a certificate's DNS name (lowercase; "*.example.com" for any
 * one label before example.com) covers a host name (lowercase).
 */
bool		 tls_host_matches(const char *name, const char *host);
/*
 * Whether a connection may serve a request for host (len bytes, any case,
 * no port): false when its certificate does not cover the host and
 * another of its listener's certificates does. Such a request is answered
 * 421 (RFC 9110 15.5.20), so that the client opens a connection of its
 * own and checks that certificate (RFC 9114 3.3): a client may reuse a
 * connection only for the hosts its certificate covers. A host no
 * certificate names (an address, a name of none) is served on any.
 */
bool		 tls_conn_may_serve(const struct tls_conn *tc, const char *host,
		    size_t len);
/* Frees what tc holds beyond its session (the connection's end). */
void		 tls_conn_clear(struct tls_conn *tc);
/* A session bound to a connection through tc (ngtcp2's convention). */
WOLFSSL		*tls_session_new(WOLFSSL_CTX *, struct tls_conn *tc,
		    bool early_data);
void		 tls_session_free(WOLFSSL *);
/* RFC 8446 6.2: what a client that offered no usable ALPN gets. */
#define TLS_ALERT_NO_APPLICATION_PROTOCOL	120
#define TLS_ALERT_UNEXPECTED_MESSAGE		10
#define TLS_ALERT_MISSING_EXTENSION		109
#define TLS_ALERT_CERTIFICATE_REQUIRED		116
/* RFC 8446 4: a handshake message's type */
#define TLS_HS_CERTIFICATE			11
#define TLS_HS_CERTIFICATE_VERIFY		15
#define TLS_HS_FINISHED				20
/* RFC 8446 4.1.2: a ClientHello's legacy_session_id length, at this offset */
#define TLS_CH_SESSION_ID_OFF			(4 + 2 + 32)
/* RFC 8446 4.4.4: its verify_data, as long as the hash (SHA-384's) */
#define TLS_FINISHED_MAX			48
/* a client's certificate chain (client_ca), and its signature (RSA-8192's
   1 KiB and its header) */
#define TLS_CLIENT_CHAIN_MAX			(32 * 1024)
#define TLS_CERT_VERIFY_MAX			(4 + 1024)
/* Whether the session agreed on "h3". */
bool		 tls_alpn_is_h3(WOLFSSL *);
/* ngtcp2's packet protection callbacks, AES without the EVP layer. */
int		 tls_aead_encrypt(uint8_t *, const ngtcp2_crypto_aead *,
		    const ngtcp2_crypto_aead_ctx *, const uint8_t *, size_t,
		    const uint8_t *, size_t, const uint8_t *, size_t);
int		 tls_aead_decrypt(uint8_t *, const ngtcp2_crypto_aead *,
		    const ngtcp2_crypto_aead_ctx *, const uint8_t *, size_t,
		    const uint8_t *, size_t, const uint8_t *, size_t);
void		 tls_aead_ctx_delete(ngtcp2_conn *, ngtcp2_crypto_aead_ctx *,
		    void *);
int		 tls_hp_mask(uint8_t *, const ngtcp2_crypto_cipher *,
		    const ngtcp2_crypto_cipher_ctx *, const uint8_t *);

#endif
