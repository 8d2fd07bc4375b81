/* tls.c: wolfSSL for QUIC: contexts per listener, a session per connection. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/quic.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/hmac.h>
#include <wolfssl/wolfcrypt/sha256.h>
#include <wolfssl/openssl/evp.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

/* client_ca's verify callback is called for a good certificate too */
#ifndef WOLFSSL_ALWAYS_VERIFY_CB
#error "wolfSSL must be built with WOLFSSL_ALWAYS_VERIFY_CB: run make deps"
#endif

#include "clock.h"
#include "config.h"
#include "file.h"
#include "gcm.h"
#include "log.h"
#include "replay.h"
#include "stats.h"
#include "taken.h"
#include "tls.h"

/*
 * ALPN: h3 only. wolfSSL's select callback runs only in its OpenSSL-ALL,
 * nginx or HAProxy builds, so each session names the protocol itself; a
 * client offering no h3 gets no_application_protocol (RFC 9001 8.1).
 */
static char alpn_h3[] = "h3";

#define TICKET_EPOCH	(12 * 3600)	/* seconds a ticket key is current */
#define TICKET_IVLEN	12
#define TICKETS_TAKEN_MAX 65536		/* remembered: see ticket_taken */

static uint8_t ticket_secret[32];

/*
 * A replay of a ClientHello resumes only within 12 seconds of it: wolfSSL
 * refuses a ticket whose age, as its client gives it, falls short of the
 * time since the ticket was issued by more than 11 s (its
 * MAX_TICKET_AGE_DIFF, 10 s, and a second; RFC 8446 8.3). A second more
 * for the clocks. test_transport checks wolfSSL's part.
 */
#define TICKET_FRESH	12.

/*
 * Tickets resumed with, each taken once (RFC 8446 8.1): a ClientHello
 * replayed, with its 0-RTT requests, would resume again and have them
 * served twice. A ticket seen before is refused, and its client makes a
 * whole handshake with no early data; a client given a new ticket by
 * every connection, as qproxy does, never sees it. Remembered for two
 * key epochs (a ticket is good for one), TICKETS_TAKEN_MAX at most, the
 * oldest of a window forgotten first (taken.h), in a table that the
 * workers of a supervisor share: it is made before they are forked
 * (tls_tickets_share), so a replay that reaches another worker, or a
 * worker started again, finds its ticket taken.
 *
 * What the table does not remember, it cannot tell from a ticket never
 * taken: one taken by the process before it (a restart, an upgrade), or
 * one let go for room. Such a ticket could be a replay's for TICKET_FRESH
 * after the table's start, or after an upgrade's old process (each old
 * worker) stopped taking them (tls_tickets_fresh), both kept in the table
 * for the workers started again in that time; after one was let go that
 * was taken less than TICKET_FRESH before (taken.c doubts it); and
 * after the new process stopped and the old one takes them again
 * (tls_tickets_doubt). Then one that may carry early data resumes nothing
 * (wolfSSL cannot resume a ticket and refuse its early data), and is
 * taken all the same, so that a replay after that time finds it. In the
 * first two cases, the tickets the process issued itself in that time
 * resume, as no other process could have taken them.
 */
static struct taken *tickets_taken;
static struct replay *tickets_issued;
static uint64_t tickets_forgotten;	/* by this process */

int
tls_tickets_share(void)
{
	double now = mono_now();

	if (tickets_taken != NULL)
		return 0;
	if ((tickets_taken = taken_new(TICKETS_TAKEN_MAX, 2. * TICKET_EPOCH,
	    TICKET_FRESH, now)) == NULL)
		return -1;
	taken_fresh(tickets_taken, now + TICKET_FRESH);
	return 0;
}

void
tls_tickets_doubt(double now)
{
	if (tickets_taken != NULL)
		taken_doubt(tickets_taken, now + TICKET_FRESH);
}

void
tls_tickets_fresh(double now)
{
	if (tickets_taken == NULL)
		return;
	if (tickets_issued == NULL && now >= taken_fresh_until(tickets_taken))
		tickets_issued = replay_new(TICKETS_TAKEN_MAX, TICKET_FRESH);
	taken_fresh(tickets_taken, now + TICKET_FRESH);
}

size_t
tls_tickets_remembered(void)
{
	return tickets_taken != NULL ? taken_count(tickets_taken,
	    mono_now()) : 0;
}

uint64_t
tls_tickets_forgotten(void)
{
	return tickets_forgotten;
}

/*
 * wolfSSL checks a ticket's age by the wall clock: set back by S seconds
 * between a ClientHello and its replay, it takes the replay up to S + 11
 * s after, past what the windows above allow. A step back seen (the wall
 * clock's lead on the monotonic one fallen by more than a second) doubts
 * every unknown ticket for S + TICKET_FRESH.
 */
static double tickets_wall_lead;	/* the largest seen; 0: none yet */

static void
tickets_watch_wall(double now)
{
	struct timespec ts;
	double lead;

	if (clock_gettime(CLOCK_REALTIME, &ts) == -1)
		return;
	lead = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 - now;
	if (tickets_wall_lead != 0. && lead < tickets_wall_lead - 1.) {
		log_warnx("the wall clock went back %.0f s: session tickets "
		    "not known taken resume nothing for %.0f s",
		    tickets_wall_lead - lead, tickets_wall_lead - lead +
		    TICKET_FRESH);
		tls_tickets_doubt(now + tickets_wall_lead - lead);
		tickets_wall_lead = lead;
	} else if (lead > tickets_wall_lead)
		tickets_wall_lead = lead;
}

void
tls_tickets_start(double now)
{
	tickets_wall_lead = 0.;
	tickets_watch_wall(now);
	(void)tls_tickets_share();	/* none: no resumption */
	replay_free(tickets_issued);
	tickets_issued = NULL;
	/* a worker started again later: the table remembers for it */
	if (tickets_taken == NULL || now >= taken_fresh_until(tickets_taken))
		return;
	tickets_issued = replay_new(TICKETS_TAKEN_MAX, TICKET_FRESH);
}

/* A ticket's identity: its IV and tag, which no two tickets share. */
static void
ticket_id(uint8_t id[TICKET_IVLEN + WOLFSSL_TICKET_MAC_SZ],
    const uint8_t *iv, const uint8_t *mac)
{
	memcpy(id, iv, TICKET_IVLEN);
	memcpy(id + TICKET_IVLEN, mac, WOLFSSL_TICKET_MAC_SZ);
}

/*
 * Those issued in the process's first TICKET_FRESH, then; NULL after it
 * (the table let go), or for no memory.
 */
static struct replay *
tickets_issued_now(double now)
{
	if (tickets_issued != NULL && now >= taken_fresh_until(tickets_taken)) {
		replay_free(tickets_issued);
		tickets_issued = NULL;
	}
	return tickets_issued;
}

/* A ticket issued now. */
static void
ticket_issued(const uint8_t *iv, const uint8_t *mac)
{
	uint8_t id[TICKET_IVLEN + WOLFSSL_TICKET_MAC_SZ];
	double now = mono_now();

	tickets_watch_wall(now);
	if (tickets_issued_now(now) == NULL)
		return;
	ticket_id(id, iv, mac);
	(void)replay_add(tickets_issued, replay_key(tickets_issued, id,
	    sizeof(id)), now);
}

/* Whether a ticket not taken may have been, by the process before. */
static bool
ticket_unsure(const uint8_t *id, size_t idlen, double now)
{
	if (now < taken_doubt_until(tickets_taken))
		return true;
	return now < taken_fresh_until(tickets_taken) &&
	    (tickets_issued_now(now) == NULL || !replay_seen(tickets_issued,
	    replay_key(tickets_issued, id, idlen), now));
}

/* taken_add (which doubts a ticket let go for room), counted. */
static int
ticket_take(uint64_t key, double now)
{
	double taken;
	int rv;

	rv = taken_add(tickets_taken, key, now, &taken);
	if (taken > 0.) {
		tickets_forgotten++;
		/* the issued may be among those let go */
		replay_free(tickets_issued);
		tickets_issued = NULL;
	}
	return rv;
}

/*
 * Whether a ticket must resume nothing: taken before, here or by another
 * worker, or perhaps taken (above) when it may carry early data. A
 * ClientHello sent again after a HelloRetryRequest repeats its ticket
 * (RFC 8446 4.1.4): that is the same connection's, not a replay, and
 * resumes.
 */
static bool
ticket_taken(struct tls_conn *tc, const uint8_t *iv, const uint8_t *mac,
    bool early)
{
	uint8_t id[TICKET_IVLEN + WOLFSSL_TICKET_MAC_SZ];
	uint64_t key;
	double now = mono_now();
	int rv;

	if (tickets_taken == NULL && tls_tickets_share() == -1)
		return true;	/* no memory: no resumption */
	tickets_watch_wall(now);
	ticket_id(id, iv, mac);
	key = taken_key(tickets_taken, id, sizeof(id));
	if (tc != NULL && tc->took_ticket && tc->ticket == key)
		return tc->ticket_unsure;	/* as the first time, uncounted */
	if (taken_seen(tickets_taken, key, now)) {
		stats.tickets_reused++;
		return true;
	}
	if (early && ticket_unsure(id, sizeof(id), now)) {
		stats.tickets_unsure++;
		(void)ticket_take(key, now);
		if (tc != NULL) {
			tc->ticket = key;
			tc->took_ticket = tc->ticket_unsure = true;
		}
		return true;
	}
	rv = ticket_take(key, now);
	if (rv == 0) {		/* by another worker, just now */
		stats.tickets_reused++;
		return true;
	}
	if (rv == -1)		/* not remembered */
		return true;
	if (tc != NULL) {
		tc->ticket = key;
		tc->took_ticket = true;
	}
	return false;
}

void
tls_set_ticket_secret(const uint8_t *secret, size_t len)
{
	if (len > sizeof(ticket_secret))
		len = sizeof(ticket_secret);
	memcpy(ticket_secret, secret, len);
}

/*
 * One certificate of a context. The first is the context's own; another
 * is loaded into a session whose client asks for one of its names, from
 * the DER kept here.
 */
struct tls_cert {
	uint8_t		*chain;		/* DER, leaf first; NULL for the first */
	size_t		 chainlen;
	uint8_t		*key;		/* DER; NULL for the first */
	size_t		 keylen;
	char		**names;	/* DNS names, lowercase; "*.example.com" */
	size_t		 nnames;
	uint8_t		 id[32];	/* SHA-256 of the leaf */
	char		*file;
	time_t		 not_before, not_after;	/* 0: unknown */
	char		*missing;	/* the issuer the chain lacks, or NULL */
};

/*
 * What a context carries, hung on it as its ticket context: its
 * certificates, and what its tickets are bound to (tls_ctx_new's zrtt).
 */
/* A certificate's name, in byname: sorted by name, then certificate. */
struct cert_name {
	const char	*name;
	size_t		 cert;
};

/* A CRL of client_crl: when it was issued and when the next is due. */
struct tls_crl {
	time_t		 this_update, next_update;	/* 0: unknown */
};

struct tls_ctx_data {
	struct tls_cert	*certs;
	size_t		 ncerts;
	struct cert_name *byname;	/* every certificate's names */
	size_t		 nbyname;
	bool		 early;		/* its tickets may carry early data */
	bool		 client_auth;	/* client_ca: no tickets */
	struct tls_crl	*crls;		/* client_crl's, in file order */
	size_t		 ncrls;
	const char	*crl_file;	/* the listener's (its config's) */
	/* the SHA-256 of client_ca's and client_crl's bytes (0s: none),
	   what a client's certificate was verified against */
	uint8_t		 ca_hash[32], crl_hash[32];
	size_t		 len;
	uint8_t		 data[];
};

/*
 * HMAC-SHA256(secret, label || epoch || context || certificate): the
 * epoch's key name or key, for tickets of that context and certificate.
 * A ticket resumes only where it was issued: a client that asks for
 * another name gets a full handshake and that name's certificate.
 */
static int
ticket_derive(const char *label, uint64_t epoch, const struct tls_ctx_data *tc,
    const uint8_t *cert_id, uint8_t out[32])
{
	Hmac hmac;
	uint8_t e[8];
	int rv;

	for (int i = 0; i < 8; i++)
		e[i] = (uint8_t)(epoch >> (56 - 8 * i));
	if (wc_HmacInit(&hmac, NULL, INVALID_DEVID) != 0)
		return -1;
	rv = wc_HmacSetKey(&hmac, WC_SHA256, ticket_secret,
	    sizeof(ticket_secret));
	if (rv == 0)
		rv = wc_HmacUpdate(&hmac, (const uint8_t *)label,
		    (word32)strlen(label));
	if (rv == 0)
		rv = wc_HmacUpdate(&hmac, e, sizeof(e));
	if (rv == 0 && tc != NULL && tc->len > 0)
		rv = wc_HmacUpdate(&hmac, tc->data, (word32)tc->len);
	if (rv == 0 && cert_id != NULL)
		rv = wc_HmacUpdate(&hmac, cert_id, 32);
	if (rv == 0)
		rv = wc_HmacFinal(&hmac, out);
	wc_HmacFree(&hmac);
	return rv == 0 ? 0 : -1;
}

/* AES-256-GCM over the ticket; the key name is authenticated too. */
static int
ticket_cb(WOLFSSL *ssl, unsigned char name[WOLFSSL_TICKET_NAME_SZ],
    unsigned char iv[WOLFSSL_TICKET_IV_SZ],
    unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc, unsigned char *ticket,
    int len, int *outlen, void *arg)
{
	uint64_t now = (uint64_t)time(NULL) / TICKET_EPOCH;
	const struct tls_ctx_data *d = arg;
	struct tls_conn *tc = wolfSSL_get_app_data(ssl);
	const uint8_t *cert_id = NULL;
	uint8_t kname[32], key[32];
	Aes aes;
	int rv = WOLFSSL_TICKET_RET_REJECT;

	/*
	 * A client_ca's listener takes no ticket (nor sends one): a resumed
	 * connection shows no certificate. One of its earlier configuration,
	 * without client_ca, would resume it as though the client had.
	 */
	if (d != NULL && d->client_auth)
		return WOLFSSL_TICKET_RET_REJECT;
	if (d != NULL && d->ncerts > 0)
		cert_id = d->certs[tc != NULL && tc->cert < d->ncerts ?
		    tc->cert : 0].id;
	if (wc_AesInit(&aes, NULL, INVALID_DEVID) != 0)
		return WOLFSSL_TICKET_RET_FATAL;
	for (uint64_t epoch = now; epoch + 1 >= now && epoch <= now; epoch--) {
		if (ticket_derive("qproxy ticket name", epoch, d, cert_id,
		    kname) == -1 ||
		    ticket_derive("qproxy ticket key", epoch, d, cert_id,
		    key) == -1) {
			rv = WOLFSSL_TICKET_RET_FATAL;
			break;
		}
		if (enc) {
			memcpy(name, kname, WOLFSSL_TICKET_NAME_SZ);
			if (getrandom(iv, TICKET_IVLEN, 0) != TICKET_IVLEN ||
			    wc_AesGcmSetKey(&aes, key, sizeof(key)) != 0 ||
			    wc_AesGcmEncrypt(&aes, ticket, ticket, (word32)len,
			    iv, TICKET_IVLEN, mac, 16, name,
			    WOLFSSL_TICKET_NAME_SZ) != 0) {
				rv = WOLFSSL_TICKET_RET_FATAL;
				break;
			}
			*outlen = len;
			ticket_issued(iv, mac);
			rv = WOLFSSL_TICKET_RET_OK;
			break;
		}
		if (memcmp(name, kname, WOLFSSL_TICKET_NAME_SZ) != 0)
			continue;
		if (wc_AesGcmSetKey(&aes, key, sizeof(key)) != 0 ||
		    wc_AesGcmDecrypt(&aes, ticket, ticket, (word32)len, iv,
		    TICKET_IVLEN, mac, 16, name, WOLFSSL_TICKET_NAME_SZ) != 0)
			break;
		*outlen = len;
		if (ticket_taken(tc, iv, mac, d != NULL && d->early))
			break;
		/*
		 * The last epoch's ticket is as good (its age is wolfSSL's to
		 * check, against TICKET_EPOCH); every connection gets a new
		 * ticket anyway. Not WOLFSSL_TICKET_RET_CREATE: TLS 1.3 in
		 * wolfSSL takes only RET_OK and skips such a ticket, so every
		 * ticket died at the turn of an epoch.
		 */
		rv = WOLFSSL_TICKET_RET_OK;
		break;
	}
	explicit_bzero(key, sizeof(key));
	wc_AesFree(&aes);
	return rv;
}

int
tls_init(void)
{
	return wolfSSL_Init() == WOLFSSL_SUCCESS ? 0 : -1;
}

/*
 * Whether a client's server name is a host name (RFC 6066 3: letters,
 * digits, '-' and '.'; '_' too, as some use it). Anything else (wolfSSL
 * passes any bytes on) is not kept: it would reach qproxyctl's output and
 * an operator's terminal as it came.
 */
static bool
sni_is_hostname(const void *name, size_t n)
{
	const unsigned char *p = name;

	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum(p[i]) && p[i] != '-' && p[i] != '.' &&
		    p[i] != '_')
			return false;
	return true;
}

bool
tls_host_matches(const char *name, const char *host)
{
	const char *dot;

	if (name[0] != '*')
		return strcmp(name, host) == 0;
	/* "*.example.com": one label, not empty, then ".example.com" */
	dot = strchr(host, '.');
	return dot != NULL && dot != host && strcmp(dot, name + 1) == 0;
}

static int
cert_name_cmp(const void *x, const void *y)
{
	const struct cert_name *a = x, *b = y;
	int d = strcmp(a->name, b->name);

	if (d != 0)
		return d;
	return a->cert < b->cert ? -1 : a->cert > b->cert;
}

/*
 * The first certificate with this name, as it is spelt (a wildcard's
 * "*.example.com" too), or ncerts when none has it: a look in byname,
 * where a walk of every name cost a handshake of a listener of 10,000
 * certificates about as much as the handshake itself.
 */
static size_t
cert_find(const struct tls_ctx_data *d, const char *name)
{
	size_t lo = 0, hi = d->nbyname, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (strcmp(d->byname[mid].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < d->nbyname && strcmp(d->byname[lo].name, name) == 0 ?
	    d->byname[lo].cert : d->ncerts;
}

/*
 * The first certificate whose wildcard takes host (lowercase): one whole
 * first label, as tls_host_matches has it; ncerts when none does.
 */
static size_t
cert_find_wild(const struct tls_ctx_data *d, const char *host)
{
	const char *dot = strchr(host, '.');
	char wild[256];

	if (dot == NULL || dot == host || strlen(dot) + 2 > sizeof(wild))
		return d->ncerts;
	wild[0] = '*';
	strcpy(wild + 1, dot);
	return cert_find(d, wild);
}

/* byname made, from the certificates' names; -1 when out of memory. */
static int
cert_index(struct tls_ctx_data *d)
{
	size_t n = 0;

	for (size_t i = 0; i < d->ncerts; i++)
		n += d->certs[i].nnames;
	if (n == 0)
		return 0;
	if ((d->byname = reallocarray(NULL, n, sizeof(*d->byname))) == NULL)
		return -1;
	for (size_t i = 0; i < d->ncerts; i++)
		for (size_t j = 0; j < d->certs[i].nnames; j++) {
			d->byname[d->nbyname].name = d->certs[i].names[j];
			d->byname[d->nbyname++].cert = i;
		}
	qsort(d->byname, d->nbyname, sizeof(*d->byname), cert_name_cmp);
	return 0;
}

/* Whether one of a certificate's names covers host (lowercase). */
static bool
cert_covers(const struct tls_cert *c, const char *host)
{
	for (size_t j = 0; j < c->nnames; j++)
		if (tls_host_matches(c->names[j], host))
			return true;
	return false;
}

/*
 * Whether certificate i is never chosen (cert_pick): each of its names,
 * a wildcard too, is one of an earlier certificate's, as it is spelt.
 */
static bool
cert_shadowed(const struct tls_ctx_data *d, size_t i)
{
	for (size_t n = 0; n < d->certs[i].nnames; n++)
		if (cert_find(d, d->certs[i].names[n]) >= i)
			return false;
	return d->certs[i].nnames > 0;
}

bool
tls_conn_may_serve(const struct tls_conn *tc, const char *host, size_t len)
{
	const struct tls_ctx_data *d = tc->ctx != NULL ?
	    wolfSSL_CTX_get_TicketEncCtx(tc->ctx) : NULL;
	char h[256];

	if (d == NULL || d->ncerts < 2 || tc->cert >= d->ncerts || len == 0 ||
	    len >= sizeof(h))
		return true;
	for (size_t i = 0; i < len; i++)
		h[i] = (char)tolower((unsigned char)host[i]);
	h[len] = '\0';
	if (cert_covers(&d->certs[tc->cert], h))
		return true;
	/* another certificate's names cover it: that one's connection */
	return cert_find(d, h) == d->ncerts && cert_find_wild(d, h) ==
	    d->ncerts;
}

/*
 * The certificate for a client's host name: the first whose names hold it
 * exactly, else the first with a wildcard for it, else the first of all.
 */
static size_t
cert_pick(const struct tls_ctx_data *d, const char *host)
{
	size_t i;

	/* (a host name has no "*": only a name without finds it) */
	if ((i = cert_find(d, host)) < d->ncerts ||
	    (i = cert_find_wild(d, host)) < d->ncerts)
		return i;
	return 0;
}

/*
 * Called while the ClientHello's extensions still exist, before wolfSSL
 * looks at the certificate: keep the name, and load the certificate that
 * serves it into the session (as the context's own is shared).
 */
static int
sni_cb(WOLFSSL *ssl, int *alert, void *arg)
{
	struct tls_conn *tc = wolfSSL_get_app_data(ssl);
	const struct tls_ctx_data *d = arg;
	const struct tls_cert *c;
	char host[254];
	void *name = NULL;
	unsigned short n;
	size_t i;

	if (tc == NULL || wolfSSL_SNI_Status(ssl, WOLFSSL_SNI_HOST_NAME) ==
	    WOLFSSL_SNI_NO_MATCH)
		return 0;
	n = wolfSSL_SNI_GetRequest(ssl, WOLFSSL_SNI_HOST_NAME, &name);
	if (name == NULL || !sni_is_hostname(name, n))
		return 0;
	for (i = 0; i < n; i++)
		host[i] = (char)tolower(((unsigned char *)name)[i]);
	host[n] = '\0';
	/* (a second ClientHello, after a HelloRetryRequest, names it again) */
	free(tc->sni);
	tc->sni = strdup(host);		/* NULL: shown as none, no more */
	if (d == NULL || (i = cert_pick(d, host)) == tc->cert)
		return 0;
	c = &d->certs[i];
	if (wolfSSL_use_certificate_chain_buffer_format(ssl, c->chain,
	    (long)c->chainlen, WOLFSSL_FILETYPE_ASN1) != WOLFSSL_SUCCESS ||
	    wolfSSL_use_PrivateKey_buffer(ssl, c->key, (long)c->keylen,
	    WOLFSSL_FILETYPE_ASN1) != WOLFSSL_SUCCESS) {
		log_warnx("cannot use the certificate for %s", host);
		*alert = internal_error;
		return fatal_return;
	}
	tc->cert = (unsigned int)i;
	return 0;
}

static void
tls_error(char *err, size_t errlen, const char *what, const char *file)
{
	char buf[WOLFSSL_MAX_ERROR_SZ];

	wolfSSL_ERR_error_string_n(wolfSSL_ERR_get_error(), buf, sizeof(buf));
	snprintf(err, errlen, "%s %s: %s", what, file, buf);
}

/* Frees what held key material. */
static void
free_secret(void *p, size_t len)
{
	if (p != NULL) {
		explicit_bzero(p, len);
		free(p);
	}
}

/* A certificate or key file, whole; NULL with a message in err. */
#define TLS_FILE_MAX	(1024 * 1024)

static char *
read_pem(const char *what, const char *path, size_t *lenp, char *err,
    size_t errlen)
{
	char *buf;

	if (file_read(path, TLS_FILE_MAX, &buf, lenp) == -1) {
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
		return NULL;
	}
	return buf;
}

/* A certificate's DNS name, as kept for matching; NULL if it is none. */
static char *
cert_name(const char *name, size_t len)
{
	size_t skip = len > 2 && name[0] == '*' && name[1] == '.' ? 2 : 0;
	char *s;

	/* a wildcard only as the whole first label, as clients match it */
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (!sni_is_hostname(name + skip, len - skip) ||
	    (s = strndup(name, len)) == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++)
		s[i] = (char)tolower((unsigned char)s[i]);
	return s;
}

/*
 * The certificates of a PEM chain, as DER one after the other (der has
 * room for len bytes, more than they take), as wolfSSL takes a chain
 * without decoding its base64 again: per handshake, that cost 30 us for a
 * chain of two. Returns how many, with the first one's length in leaflen;
 * 0 when there is none, or one is not a certificate.
 */
static int
chain_der(const char *pem, size_t len, uint8_t *der, size_t *derlen,
    size_t *leaflen)
{
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	static const char end[] = "-----END CERTIFICATE-----";
	const char *p = pem, *stop = pem + len, *b, *e;
	size_t off = 0;
	int n = 0, rv;

	while ((b = memmem(p, (size_t)(stop - p), begin, sizeof(begin) - 1)) !=
	    NULL) {
		if ((e = memmem(b, (size_t)(stop - b), end, sizeof(end) - 1)) ==
		    NULL)
			return 0;
		p = e + sizeof(end) - 1;
		rv = wc_CertPemToDer((const unsigned char *)b, (int)(p - b),
		    der + off, (int)(len - off), CERT_TYPE);
		if (rv <= 0)
			return 0;
		if (n++ == 0)
			*leaflen = (size_t)rv;
		off += (size_t)rv;
	}
	*derlen = off;
	return n;
}

/* The length of the DER element at der (tag, length, contents); 0. */
static size_t
der_len(const uint8_t *der, size_t avail)
{
	size_t n, len = 0, hdr = 2;

	if (avail < 2)
		return 0;
	if (der[1] < 0x80)
		len = der[1];
	else {
		n = der[1] & 0x7f;
		if (n == 0 || n > 3 || avail < 2 + n)
			return 0;
		for (size_t i = 0; i < n; i++)
			len = len << 8 | der[2 + i];
		hdr += n;
	}
	return hdr + len <= avail ? hdr + len : 0;
}

/*
 * Which certificate of the chain after the first (1, 2, ...) the key
 * belongs to, or 0: a chain in the wrong order, the server's certificate
 * not first, is said to be so rather than to have the wrong key.
 */
static int
chain_key_owner(const uint8_t *der, size_t derlen, size_t leaflen,
    const uint8_t *kder, int kderlen)
{
	size_t off = leaflen, len;
	int i = 1, found = 0;

	for (; found == 0 && off < derlen; off += len, i++) {
		WOLFSSL_CTX *ctx;

		if ((len = der_len(der + off, derlen - off)) == 0 ||
		    (ctx = wolfSSL_CTX_new(wolfTLSv1_3_server_method())) ==
		    NULL)
			break;
		if (wolfSSL_CTX_use_certificate_buffer(ctx, der + off,
		    (long)len, WOLFSSL_FILETYPE_ASN1) == WOLFSSL_SUCCESS &&
		    wolfSSL_CTX_use_PrivateKey_buffer(ctx, kder, kderlen,
		    WOLFSSL_FILETYPE_ASN1) == WOLFSSL_SUCCESS &&
		    wolfSSL_CTX_check_private_key(ctx) == WOLFSSL_SUCCESS)
			found = i;
		wolfSSL_CTX_free(ctx);
	}
	return found;
}

/* A certificate's validity date, as wolfSSL found it; 0 if it cannot tell. */
static time_t
cert_time(const uint8_t *raw, int rawlen)
{
	const uint8_t *date;
	uint8_t format;
	int len;
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (raw == NULL || wc_GetDateInfo(raw, rawlen, &date, &format,
	    &len) != 0 || wc_GetDateAsCalendarTime(date, len, format,
	    &tm) != 0)
		return 0;
	return timegm(&tm);
}

/*
 * The leaf's host names, validity and digest, into c. Its DNS
 * subjectAltNames only: clients no longer look at the common name (RFC
 * 9525, which replaced RFC 6125, dropped it), so a certificate without
 * them serves no name to them either. -1 with a message in err.
 */
static int
cert_names(struct tls_cert *c, const uint8_t *leaf, size_t leaflen,
    const char *path, char *err, size_t errlen)
{
	struct DecodedCert dc;
	const DNS_entry *e;
	char **names, *name;
	int rv = -1;

	if (wc_Sha256Hash(leaf, (word32)leaflen, c->id) != 0) {
		snprintf(err, errlen, "certificate %s: cannot hash it", path);
		return -1;
	}
	wc_InitDecodedCert(&dc, leaf, (word32)leaflen, NULL);
	if (wc_ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) != 0) {
		snprintf(err, errlen, "certificate %s: cannot parse it", path);
		goto done;
	}
	c->not_before = cert_time(dc.beforeDate, dc.beforeDateLen);
	c->not_after = cert_time(dc.afterDate, dc.afterDateLen);
	for (e = dc.altNames; e != NULL; e = e->next) {
		if (e->type != ASN_DNS_TYPE || e->len <= 0 ||
		    (name = cert_name(e->name, (size_t)e->len)) == NULL)
			continue;
		if ((names = reallocarray(c->names, c->nnames + 1,
		    sizeof(*names))) == NULL) {
			free(name);
			snprintf(err, errlen, "out of memory");
			goto done;
		}
		c->names = names;
		c->names[c->nnames++] = name;
	}
	rv = 0;
done:
	wc_FreeDecodedCert(&dc);
	return rv;
}

/*
 * The roots a client is likely to trust: those of this machine, where
 * Debian's ca-certificates keeps them, or the file SSL_CERT_FILE names as
 * it does for OpenSSL. Read when a chain needs them.
 */
#define TLS_ROOTS_FILE	"/etc/ssl/certs/ca-certificates.crt"

static const char *
roots_file(void)
{
	const char *f = getenv("SSL_CERT_FILE");

	return f != NULL && *f != '\0' ? f : TLS_ROOTS_FILE;
}

/* A certificate's names, as hashes of their DER, and its issuer's text. */
struct chain_link {
	uint8_t		 subject[KEYID_SIZE], issuer[KEYID_SIZE];
	bool		 self_signed;
	char		 issuer_text[WC_ASN_NAME_MAX];
};

static int
chain_link(const uint8_t *der, size_t len, struct chain_link *k)
{
	struct DecodedCert dc;
	int rv = -1;

	wc_InitDecodedCert(&dc, der, (word32)len, NULL);
	if (wc_ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) == 0) {
		memcpy(k->subject, dc.subjectHash, KEYID_SIZE);
		memcpy(k->issuer, dc.issuerHash, KEYID_SIZE);
		k->self_signed = memcmp(k->subject, k->issuer, KEYID_SIZE) == 0;
		snprintf(k->issuer_text, sizeof(k->issuer_text), "%s",
		    dc.issuer);
		rv = 0;
	}
	wc_FreeDecodedCert(&dc);
	return rv;
}

/*
 * The subjects of this machine's roots (roots_file), read once and again
 * only when the file changes: a listener of many certificates (one host
 * for many names) had the whole bundle, about 150 certificates, read and
 * parsed for each of them at every start and reload, 2 ms a certificate
 * here.
 */
static struct {
	char		*path;
	dev_t		 dev;
	ino_t		 ino;
	off_t		 size;
	struct timespec	 mtime;
	uint8_t		(*subject)[KEYID_SIZE];
	size_t		 n;
} roots;

static void
roots_forget(void)
{
	free(roots.path);
	free(roots.subject);
	memset(&roots, 0, sizeof(roots));
}

/* The roots of the PEM file path, read unless they were already: 0 or -1. */
static int
roots_read(const char *path)
{
	struct chain_link k;
	struct stat st;
	char *pem = NULL;
	uint8_t *der = NULL, (*subject)[KEYID_SIZE] = NULL;
	size_t pemlen, derlen = 0, leaflen, off, len, n = 0;
	int fd, rv = -1;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) ==
	    -1)
		goto fail;
	if (fstat(fd, &st) == -1)
		goto fail;
	if (roots.path != NULL && strcmp(roots.path, path) == 0 &&
	    roots.dev == st.st_dev && roots.ino == st.st_ino &&
	    roots.size == st.st_size &&
	    roots.mtime.tv_sec == st.st_mtim.tv_sec &&
	    roots.mtime.tv_nsec == st.st_mtim.tv_nsec) {
		close(fd);
		return 0;
	}
	if (file_read_fd(fd, TLS_FILE_MAX, &pem, &pemlen) == -1 ||
	    (der = malloc(pemlen + 1)) == NULL ||
	    chain_der(pem, pemlen, der, &derlen, &leaflen) <= 0 ||
	    (subject = calloc(derlen / 64 + 1, sizeof(*subject))) == NULL)
		goto fail;
	for (off = 0; off < derlen && n < derlen / 64 + 1; off += len) {
		if ((len = der_len(der + off, derlen - off)) == 0)
			break;
		if (chain_link(der + off, len, &k) == 0)
			memcpy(subject[n++], k.subject, KEYID_SIZE);
	}
	roots_forget();
	if ((roots.path = strdup(path)) == NULL)
		goto fail;
	roots.dev = st.st_dev;
	roots.ino = st.st_ino;
	roots.size = st.st_size;
	roots.mtime = st.st_mtim;
	roots.subject = subject;
	roots.n = n;
	subject = NULL;
	log_debug("roots: %zu certificate%s read from %s", n,
	    n == 1 ? "" : "s", path);
	rv = 0;
fail:
	if (rv == -1)
		roots_forget();
	if (fd != -1)
		close(fd);
	free(subject);
	free(der);
	free(pem);
	return rv;
}

/*
 * Whether a certificate of the PEM file path names this subject: 1, 0, or
 * -1 when the file cannot be read (nothing can then be said).
 */
static int
roots_hold(const char *path, const uint8_t subject[KEYID_SIZE])
{
	size_t i;

	if (roots_read(path) == -1)
		return -1;
	for (i = 0; i < roots.n; i++)
		if (memcmp(roots.subject[i], subject, KEYID_SIZE) == 0)
			return 1;
	return 0;
}

/*
 * The chain followed from the server's certificate, each to its issuer in
 * the file, to one signed by itself or one whose issuer this machine's
 * roots hold. Ending elsewhere, the chain lacks an intermediate, as a
 * file with the server's certificate alone does: clients that do not have
 * it refuse the chain (browsers may find it on their own; curl, other
 * programs and the servers a client library talks to do not), and into
 * c->missing goes the issuer's name. -1 when out of memory.
 */
static int
chain_gap(struct tls_cert *c, const uint8_t *der, size_t derlen)
{
	struct chain_link *links;
	size_t n = 0, off, len, cur = 0, steps;
	int rv = 0;

	if ((links = calloc(derlen / 64 + 1, sizeof(*links))) == NULL)
		return -1;
	for (off = 0; off < derlen && n < derlen / 64 + 1; off += len) {
		if ((len = der_len(der + off, derlen - off)) == 0 ||
		    chain_link(der + off, len, &links[n]) == -1)
			goto done;	/* wolfSSL took it: not to be said here */
		n++;
	}
	for (steps = 0; steps < n && !links[cur].self_signed; steps++) {
		size_t j;

		for (j = 0; j < n; j++)
			if (j != cur && memcmp(links[j].subject,
			    links[cur].issuer, KEYID_SIZE) == 0)
				break;
		if (j == n) {
			if (roots_hold(roots_file(), links[cur].issuer) == 0 &&
			    (c->missing = strdup(links[cur].issuer_text)) ==
			    NULL)
				rv = -1;
			break;
		}
		cur = j;
	}
done:
	free(links);
	return rv;
}

/*
 * A certificate and its key, read, turned into DER and checked, into ctx
 * (the first) or c. What is checked is what a session is given.
 */
static int
cert_load(WOLFSSL_CTX *ctx, struct tls_cert *c, const struct config_cert *cc,
    bool first, bool *at_key, char *err, size_t errlen)
{
	WOLFSSL_CTX *check = ctx;
	char *pem = NULL, *kpem = NULL;
	uint8_t *der = NULL, *kder = NULL;
	size_t pemlen = 0, kpemlen = 0, derlen = 0, leaflen = 0;
	int kderlen, rv = -1;

	*at_key = false;
	if ((pem = read_pem("certificate", cc->certificate, &pemlen, err,
	    errlen)) == NULL)
		goto done;
	if ((kpem = read_pem("private key", cc->private_key, &kpemlen, err,
	    errlen)) == NULL) {
		*at_key = true;
		goto done;
	}
	if ((der = malloc(pemlen + 1)) == NULL ||
	    (kder = malloc(kpemlen + 1)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	if (chain_der(pem, pemlen, der, &derlen, &leaflen) == 0) {
		snprintf(err, errlen, "certificate %s: no PEM certificate in it, "
		    "or a damaged one", cc->certificate);
		goto done;
	}
	if ((kderlen = wc_KeyPemToDer((const unsigned char *)kpem,
	    (int)kpemlen, kder, (int)kpemlen, NULL)) <= 0) {
		snprintf(err, errlen, "private key %s: no unencrypted PEM "
		    "private key in it", cc->private_key);
		*at_key = true;
		goto done;
	}
	if ((c->file = strdup(cc->certificate)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	if (cert_names(c, der, leaflen, cc->certificate, err, errlen) == -1)
		goto done;
	if (chain_gap(c, der, derlen) == -1) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	if (!first && c->nnames == 0) {
		snprintf(err, errlen, "certificate %s names no host (no DNS "
		    "subjectAltName): only a listener's first certificate may, "
		    "as the others are chosen by name", cc->certificate);
		goto done;
	}
	/* the others are checked in a context of their own */
	if (!first && (check = wolfSSL_CTX_new(wolfTLSv1_3_server_method())) ==
	    NULL) {
		snprintf(err, errlen, "wolfSSL_CTX_new failed");
		goto done;
	}
	if (wolfSSL_CTX_use_certificate_chain_buffer_format(check, der,
	    (long)derlen, WOLFSSL_FILETYPE_ASN1) != WOLFSSL_SUCCESS) {
		tls_error(err, errlen, "certificate", cc->certificate);
		goto done;
	}
	if (wolfSSL_CTX_use_PrivateKey_buffer(check, kder, kderlen,
	    WOLFSSL_FILETYPE_ASN1) != WOLFSSL_SUCCESS) {
		tls_error(err, errlen, "private key", cc->private_key);
		*at_key = true;
		goto done;
	}
	if (wolfSSL_CTX_check_private_key(check) != WOLFSSL_SUCCESS) {
		int owner = chain_key_owner(der, derlen, leaflen, kder,
		    kderlen);

		if (owner > 0)
			snprintf(err, errlen, "certificate %s: the chain is in "
			    "the wrong order: private key %s is that of its "
			    "certificate %d (from 0), and the server's own "
			    "comes first", cc->certificate, cc->private_key,
			    owner);
		else
			snprintf(err, errlen, "private key %s does not match "
			    "certificate %s", cc->private_key,
			    cc->certificate);
		goto done;
	}
	if (!first) {
		c->chain = der;
		c->chainlen = derlen;
		c->key = kder;
		c->keylen = (size_t)kderlen;
		der = kder = NULL;
	}
	rv = 0;
done:
	if (check != ctx)
		wolfSSL_CTX_free(check);
	free(pem);
	free(der);
	free_secret(kpem, kpemlen);
	free_secret(kder, kpemlen);
	return rv;
}

static void
ctx_data_free(struct tls_ctx_data *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->ncerts; i++) {
		struct tls_cert *c = &d->certs[i];

		for (size_t j = 0; j < c->nnames; j++)
			free(c->names[j]);
		free(c->names);
		free(c->file);
		free(c->missing);
		free(c->chain);
		free_secret(c->key, c->keylen);
	}
	free(d->certs);
	free(d->byname);
	free(d->crls);
	free(d);
}

struct tls_peer *
tls_peer_new(const uint8_t hash[32], const char *subject)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u;
	struct tls_peer *peer;
	size_t n = sizeof("Hash=;Subject=\"\"") + 64;
	char *o;

	for (u = (const unsigned char *)subject; *u != '\0'; u++)
		n += *u < 0x20 || *u == 0x7f ? 4 : *u == '"' || *u == '\\' ?
		    2 : 1;
	if ((peer = malloc(n)) == NULL)
		return NULL;
	o = peer->value;
	o += sprintf(o, "Hash=");
	for (int i = 0; i < 32; i++) {
		*o++ = hex[hash[i] >> 4];
		*o++ = hex[hash[i] & 0xf];
	}
	o += sprintf(o, ";Subject=\"");
	for (u = (const unsigned char *)subject; *u != '\0'; u++) {
		if (*u < 0x20 || *u == 0x7f) {
			*o++ = '\\';
			*o++ = 'x';
			*o++ = hex[*u >> 4];
			*o++ = hex[*u & 0xf];
			continue;
		}
		if (*u == '"' || *u == '\\')
			*o++ = '\\';
		*o++ = (char)*u;
	}
	*o++ = '"';
	*o = '\0';
	return peer;
}

/* The contents of the DER element at *p (of avail bytes), its tag in
   *tag; *p moves past it. NULL when it is cut short. */
static const uint8_t *
der_next(const uint8_t **p, size_t *avail, uint8_t *tag, size_t *len)
{
	size_t whole = der_len(*p, *avail), hdr;
	const uint8_t *in;

	if (whole == 0)
		return NULL;
	hdr = (*p)[1] < 0x80 ? 2 : 2 + ((*p)[1] & 0x7f);
	*tag = (*p)[0];
	in = *p + hdr;
	*len = whole - hdr;
	*p += whole;
	*avail -= whole;
	return in;
}

/*
 * The fields of a signed structure's to-be-signed part (a Certificate's
 * TBSCertificate, RFC 5280 4.1; a CertificateList's TBSCertList, 5.1),
 * past its first one when that has the tag opt (the optional version) and
 * skip more: *p and *avail are left at the next. false when cut short.
 */
static bool
der_tbs_at(const uint8_t *der, size_t len, uint8_t opt, int skip,
    const uint8_t **p, size_t *avail)
{
	const uint8_t *in = der;
	size_t left = len, n;
	uint8_t tag;

	for (int level = 0; level < 2; level++) {
		if ((in = der_next(&in, &left, &tag, &n)) == NULL ||
		    tag != 0x30)
			return false;
		left = n;
	}
	if (left > 0 && in[0] == opt && der_next(&in, &left, &tag, &n) ==
	    NULL)
		return false;
	while (skip-- > 0)
		if (der_next(&in, &left, &tag, &n) == NULL)
			return false;
	*p = in;
	*avail = left;
	return true;
}

/* RFC 4514 3: the attribute types written by name; others by their OID */
static const struct dn_type {
	const char	*name;
	uint8_t		 len;
	uint8_t		 oid[10];
} dn_types[] = {
	{ "CN", 3, { 0x55, 0x04, 0x03 } },
	{ "L", 3, { 0x55, 0x04, 0x07 } },
	{ "ST", 3, { 0x55, 0x04, 0x08 } },
	{ "O", 3, { 0x55, 0x04, 0x0a } },
	{ "OU", 3, { 0x55, 0x04, 0x0b } },
	{ "C", 3, { 0x55, 0x04, 0x06 } },
	{ "STREET", 3, { 0x55, 0x04, 0x09 } },
	{ "DC", 10, { 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01,
	    0x19 } },
	{ "UID", 10, { 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01,
	    0x01 } },
};

static const char *
dn_type_name(const uint8_t *oid, size_t len)
{
	for (size_t i = 0; i < sizeof(dn_types) / sizeof(dn_types[0]); i++)
		if (dn_types[i].len == len &&
		    memcmp(dn_types[i].oid, oid, len) == 0)
			return dn_types[i].name;
	return NULL;
}

/* What dn_put writes into, never past its end. */
struct dn_out {
	char	*p, *end;
	bool	 full;
};

static void
dn_put(struct dn_out *o, const char *s, size_t n)
{
	if (o->full || (size_t)(o->end - o->p) < n) {
		o->full = true;
		return;
	}
	memcpy(o->p, s, n);
	o->p += n;
}

/* An OID's dotted decimals (X.690 8.19), or false for a broken one. */
static bool
dn_oid(struct dn_out *o, const uint8_t *oid, size_t len)
{
	char num[24];
	uint64_t v = 0;
	bool first = true;

	for (size_t i = 0; i < len; i++) {
		/* an arc's leading 0x80 (not DER) would spell a known OID */
		if (v > (UINT64_MAX >> 7) || (v == 0 && oid[i] == 0x80))
			return false;
		v = v << 7 | (oid[i] & 0x7f);
		if (oid[i] & 0x80)
			continue;
		if (first)
			snprintf(num, sizeof(num), "%u.%llu", v < 80 ?
			    (unsigned)(v / 40) : 2, (unsigned long long)(v <
			    80 ? v % 40 : v - 80));
		else
			snprintf(num, sizeof(num), ".%llu",
			    (unsigned long long)v);
		dn_put(o, num, strlen(num));
		first = false;
		v = 0;
	}
	return !first && (oid[len - 1] & 0x80) == 0;
}

/*
 * An attribute's value: a string's characters, escaped as RFC 4514 2.4
 * says (any octet outside printable ASCII as a hex pair, so that the name
 * is ASCII whatever its strings hold); any other type as '#' and the hex
 * of its DER.
 */
static void
dn_value(struct dn_out *o, uint8_t tag, const uint8_t *v, size_t len,
    const uint8_t *der, size_t derlen)
{
	static const char hex[] = "0123456789ABCDEF";
	char e[3];

	if (tag != 0x0c && tag != 0x13 && tag != 0x16 && tag != 0x14) {
		/* not UTF8String, PrintableString, IA5String, T61String */
		dn_put(o, "#", 1);
		for (size_t i = 0; i < derlen; i++) {
			e[0] = hex[der[i] >> 4];
			e[1] = hex[der[i] & 0xf];
			dn_put(o, e, 2);
		}
		return;
	}
	for (size_t i = 0; i < len; i++) {
		uint8_t c = v[i];

		if (c < 0x20 || c >= 0x7f) {
			e[0] = '\\';
			e[1] = hex[c >> 4];
			e[2] = hex[c & 0xf];
			dn_put(o, e, 3);
			continue;
		}
		if (strchr("\"+,;<>\\", c) != NULL ||
		    (i == 0 && (c == ' ' || c == '#')) ||
		    (i == len - 1 && c == ' '))
			dn_put(o, "\\", 1);
		dn_put(o, (const char *)&c, 1);
	}
}

#define DN_RDNS_MAX	64

char *
tls_cert_subject(const uint8_t *cert, size_t certlen)
{
	const uint8_t *p, *name, *rdn[DN_RDNS_MAX];
	size_t avail, n, rdnlen[DN_RDNS_MAX], nrdn = 0;
	struct dn_out o;
	uint8_t tag;
	char *dn;

	/* [0] version, serialNumber, signature, issuer, validity */
	if (!der_tbs_at(cert, certlen, 0xa0, 4, &p, &avail))
		return NULL;
	if ((name = der_next(&p, &avail, &tag, &n)) == NULL || tag != 0x30)
		return NULL;
	for (p = name, avail = n; avail > 0; ) {
		if (nrdn == DN_RDNS_MAX || (rdn[nrdn] = der_next(&p, &avail,
		    &tag, &rdnlen[nrdn])) == NULL || tag != 0x31 ||
		    rdnlen[nrdn] == 0)	/* SET SIZE (1..MAX) */
			return NULL;
		nrdn++;
	}
	/* a DER byte is at most 3 characters written, or 5 of an OID's */
	if ((dn = malloc(6 * n + 1)) == NULL)
		return NULL;
	o.p = dn;
	o.end = dn + 6 * n;
	o.full = false;
	while (nrdn-- > 0) {
		const uint8_t *atv, *oid, *v, *vder;
		const char *type;
		size_t ravail = rdnlen[nrdn], aavail, oidlen, vlen;
		uint8_t vtag;
		bool first = true;

		for (p = rdn[nrdn]; ravail > 0; first = false) {
			if ((atv = der_next(&p, &ravail, &tag, &aavail)) ==
			    NULL || tag != 0x30 || (oid = der_next(&atv,
			    &aavail, &tag, &oidlen)) == NULL || tag != 0x06 ||
			    oidlen == 0)
				goto bad;
			vder = atv;
			if ((v = der_next(&atv, &aavail, &vtag, &vlen)) ==
			    NULL || aavail != 0)
				goto bad;
			if (!first)
				dn_put(&o, "+", 1);
			if ((type = dn_type_name(oid, oidlen)) != NULL)
				dn_put(&o, type, strlen(type));
			else if (!dn_oid(&o, oid, oidlen))
				goto bad;
			dn_put(&o, "=", 1);
			dn_value(&o, vtag, v, vlen, vder, (size_t)(atv - vder));
		}
		if (nrdn > 0)
			dn_put(&o, ",", 1);
	}
	if (o.full)
		goto bad;
	*o.p = '\0';
	return dn;
bad:
	free(dn);
	return NULL;
}

/*
 * client_ca's client, once wolfSSL has verified its chain (called for
 * the leaf with ok set: WOLFSSL_ALWAYS_VERIFY_CB) or found it wanting. What
 * its backend is told of it is kept (tls_peer_new).
 */
static int
client_verify_cb(int ok, WOLFSSL_X509_STORE_CTX *store)
{
	struct tls_conn *tc = store->userCtx;
	const WOLFSSL_BUFFER_INFO *leaf;
	struct tls_peer *peer;
	uint8_t hash[32];
	char *dn;

	if (!ok) {
		stats.client_certs_refused++;
		log_debug("client certificate refused: %s",
		    wolfSSL_ERR_reason_error_string(store->error));
		return 0;
	}
	/* (none shown, where client_verify = optional lets it be) */
	if (store->error_depth != 0 || tc == NULL || tc->peer != NULL ||
	    store->certs == NULL || store->totalCerts < 1)
		return 1;
	leaf = &store->certs[0];
	if ((dn = tls_cert_subject(leaf->buffer, leaf->length)) == NULL) {
		log_debug("client certificate refused: its subject cannot be "
		    "read");
		return 0;
	}
	peer = wc_Sha256Hash(leaf->buffer, leaf->length, hash) == 0 ?
	    tls_peer_new(hash, dn) : NULL;
	free(dn);
	if (peer == NULL)
		return 0;
	tc->peer = peer;
	return 1;
}

/*
 * A CRL's thisUpdate and nextUpdate (RFC 5280 5.1: CertificateList,
 * whose TBSCertList has an optional version, the signature's algorithm
 * and the issuer before them); 0 for one it does not have.
 */
static void
crl_dates(const uint8_t *der, size_t len, struct tls_crl *c)
{
	const uint8_t *p, *at;
	size_t avail, n;
	uint8_t tag;

	c->this_update = c->next_update = 0;
	/* [version INTEGER], signature, issuer */
	if (!der_tbs_at(der, len, 0x02, 2, &p, &avail))
		return;
	for (time_t *t = &c->this_update; t <= &c->next_update; t++) {
		at = p;
		if (avail == 0 || (p[0] != 0x17 && p[0] != 0x18) ||
		    der_next(&p, &avail, &tag, &n) == NULL)
			return;
		*t = cert_time(at, (int)(p - at));
	}
}

/* When a CRL's end is warned of: its last quarter (an hour when its
   start is unknown) */
static time_t
crl_warn_from(const struct tls_crl *c)
{
	if (c->this_update == 0 || c->this_update >= c->next_update)
		return c->next_update - 3600;
	return c->next_update - (c->next_update - c->this_update) / 4;
}

/* A CRL of PEM text loaded: its dates kept. -1 when out of memory. */
static int
client_crl_note(struct tls_ctx_data *d, const char *pem, size_t len)
{
	struct tls_crl *crls;
	DerBuffer *der = NULL;

	if ((crls = reallocarray(d->crls, d->ncrls + 1, sizeof(*crls))) ==
	    NULL)
		return -1;
	d->crls = crls;
	crls[d->ncrls].this_update = crls[d->ncrls].next_update = 0;
	/* wolfSSL took it; one whose dates are not read here goes unwatched */
	if (wc_PemToDer((const unsigned char *)pem, (long)len, CRL_TYPE, &der,
	    NULL, NULL, NULL) == 0 && der != NULL)
		crl_dates(der->buffer, der->length, &crls[d->ncrls]);
	wc_FreeDer(&der);
	d->ncrls++;
	return 0;
}

/*
 * client_crl: each CRL of the file (wolfSSL reads one a call), signed by
 * a CA of client_ca, in force now. A client's certificate is looked up in
 * its issuer's; one whose issuer has none is refused. Their dates are
 * kept for tls_ctx_warnings and tls_ctx_expiry.
 */
static int
client_crl_load(WOLFSSL_CTX *ctx, struct tls_ctx_data *d,
    const struct config_listener *l, char *err, size_t errlen)
{
	static const char begin[] = "-----BEGIN X509 CRL-----";
	static const char end[] = "-----END X509 CRL-----";
	char *pem, *at, *stop;
	size_t len;
	int n = 0, rv = 0;

	if ((pem = read_pem("client_crl", l->client_crl, &len, err,
	    errlen)) == NULL)
		return -1;
	if (wc_Sha256Hash((const uint8_t *)pem, (word32)len, d->crl_hash) !=
	    0) {
		snprintf(err, errlen, "client_crl %s: cannot hash it",
		    l->client_crl);
		free(pem);
		return -1;
	}
	if (wolfSSL_CTX_EnableCRL(ctx, 0) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot turn CRL checks on");
		free(pem);
		return -1;
	}
	for (at = memmem(pem, len, begin, sizeof(begin) - 1); at != NULL;
	    at = memmem(stop, len - (size_t)(stop - pem), begin,
	    sizeof(begin) - 1)) {
		if ((stop = memmem(at, len - (size_t)(at - pem), end,
		    sizeof(end) - 1)) == NULL) {
			/* a file cut short: not the CRLs before it alone */
			snprintf(err, errlen, "client_crl %s: CRL %d: no "
			    "\"%s\" line", l->client_crl, n + 1, end);
			rv = -1;
			break;
		}
		stop += sizeof(end) - 1;
		if ((rv = wolfSSL_CTX_LoadCRLBuffer(ctx,
		    (const unsigned char *)at, (long)(stop - at),
		    WOLFSSL_FILETYPE_PEM)) != WOLFSSL_SUCCESS) {
			snprintf(err, errlen, "client_crl %s: CRL %d: %s",
			    l->client_crl, n + 1,
			    wolfSSL_ERR_reason_error_string(rv));
			rv = -1;
			break;
		}
		rv = 0;
		if (client_crl_note(d, at, (size_t)(stop - at)) == -1) {
			snprintf(err, errlen, "out of memory");
			rv = -1;
			break;
		}
		n++;
	}
	free(pem);
	if (rv == 0 && n == 0) {
		snprintf(err, errlen, "client_crl %s: no PEM CRL in it, or a "
		    "damaged one", l->client_crl);
		rv = -1;
	}
	return rv;
}

/*
 * client_ca: a client shows a certificate these CAs issued (or may not
 * show one, with client_verify = optional). Such a listener sends no
 * session tickets (ticket_cb takes none either).
 */
static int
client_ca_load(WOLFSSL_CTX *ctx, struct tls_ctx_data *d,
    const struct config_listener *l, int *bad_line, char *err, size_t errlen)
{
	char *pem;
	size_t len;
	int rv, mode = WOLFSSL_VERIFY_PEER;

	if ((pem = read_pem("client_ca", l->client_ca, &len, err,
	    errlen)) == NULL)
		return -1;
	rv = wolfSSL_CTX_load_verify_buffer(ctx, (const unsigned char *)pem,
	    (long)len, WOLFSSL_FILETYPE_PEM);
	if (rv == WOLFSSL_SUCCESS && wc_Sha256Hash((const uint8_t *)pem,
	    (word32)len, d->ca_hash) != 0) {
		snprintf(err, errlen, "client_ca %s: cannot hash it",
		    l->client_ca);
		free(pem);
		return -1;
	}
	free(pem);
	if (rv != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "client_ca %s: %s", l->client_ca,
		    wolfSSL_ERR_reason_error_string(rv));
		return -1;
	}
	if (l->client_crl != NULL) {
		*bad_line = l->client_crl_line;
		if (client_crl_load(ctx, d, l, err, errlen) == -1)
			return -1;
	}
	if (l->client_verify == CONFIG_CLIENT_REQUIRE)
		mode |= WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	wolfSSL_CTX_set_verify(ctx, mode, client_verify_cb);
	if (wolfSSL_CTX_no_ticket_TLSv13(ctx) != 0) {
		snprintf(err, errlen, "cannot turn session tickets off");
		return -1;
	}
	return 0;
}

WOLFSSL_CTX *
tls_ctx_new(const struct config_listener *l, const void *zrtt,
    size_t zrttlen, int *bad_line, char *err, size_t errlen)
{
	const struct config_cert *certs = l->certs;
	size_t ncerts = l->ncerts;
	bool early_data = l->early_data;
	WOLFSSL_CTX *ctx;
	struct tls_ctx_data *d;
	bool at_key;

	*bad_line = certs[0].line;
	/* errors left by connections would be reported as this load's */
	wolfSSL_ERR_clear_error();
	if ((ctx = wolfSSL_CTX_new(wolfTLSv1_3_server_method())) == NULL) {
		snprintf(err, errlen, "wolfSSL_CTX_new failed");
		return NULL;
	}
	/*
	 * First, so that tls_ctx_free always frees what it finds there
	 * (wolfSSL points it into the context itself until then).
	 */
	if ((d = calloc(1, sizeof(*d) + zrttlen)) == NULL ||
	    (d->certs = calloc(ncerts, sizeof(*d->certs))) == NULL) {
		free(d);
		wolfSSL_CTX_free(ctx);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->ncerts = ncerts;
	d->early = early_data;
	d->len = zrttlen;
	if (zrttlen > 0)
		memcpy(d->data, zrtt, zrttlen);
	if (wolfSSL_CTX_set_TicketEncCtx(ctx, d) != WOLFSSL_SUCCESS) {
		ctx_data_free(d);
		wolfSSL_CTX_free(ctx);
		snprintf(err, errlen, "cannot set the session ticket keys");
		return NULL;
	}
	if (ngtcp2_crypto_wolfssl_configure_server_context(ctx) != 0) {
		snprintf(err, errlen, "cannot configure QUIC in wolfSSL");
		goto fail;
	}
	/*
	 * wolfSSL keeps the client's server name only when the context has
	 * one of its own: a placeholder that any name may mismatch.
	 */
	if (wolfSSL_CTX_UseSNI(ctx, WOLFSSL_SNI_HOST_NAME, "qproxy.invalid",
	    14) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot enable SNI in wolfSSL");
		goto fail;
	}
	wolfSSL_CTX_SNI_SetOptions(ctx, WOLFSSL_SNI_HOST_NAME,
	    WOLFSSL_SNI_CONTINUE_ON_MISMATCH | WOLFSSL_SNI_ANSWER_ON_MISMATCH);
	wolfSSL_CTX_set_servername_callback(ctx, sni_cb);
	wolfSSL_CTX_set_servername_arg(ctx, d);
	if (wolfSSL_CTX_set_TicketEncCb(ctx, ticket_cb) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot set the session ticket keys");
		goto fail;
	}
	/*
	 * A ticket lives an epoch: a key is taken for two (ticket_cb), so
	 * one issued at any time in an epoch is good that long. wolfSSL's
	 * defaults told clients 300 s and refused a ticket after 500: a
	 * client back after five minutes had no resumption, no 0-RTT.
	 */
	if (wolfSSL_CTX_set_TicketHint(ctx, TICKET_EPOCH) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot set the session ticket lifetime");
		goto fail;
	}
	/* (returns the old timeout in some builds: fails for no context) */
	(void)wolfSSL_CTX_set_timeout(ctx, TICKET_EPOCH);
	/*
	 * RFC 9001 4.6.1: QUIC announces 0-RTT with 0xffffffff, or not at
	 * all; wolfSSL must be told either way.
	 */
	if (wolfSSL_CTX_set_max_early_data(ctx, early_data ? UINT32_MAX : 0) !=
	    WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot enable early data in wolfSSL");
		goto fail;
	}
	for (size_t i = 0; i < ncerts; i++)
		if (cert_load(ctx, &d->certs[i], &certs[i], i == 0, &at_key,
		    err, errlen) == -1) {
			*bad_line = at_key ? certs[i].key_line : certs[i].line;
			goto fail;
		}
	if (cert_index(d) == -1) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (l->client_ca != NULL) {
		*bad_line = l->client_ca_line;
		d->client_auth = true;
		d->crl_file = l->client_crl;
		if (client_ca_load(ctx, d, l, bad_line, err, errlen) == -1)
			goto fail;
	}
	return ctx;
fail:
	tls_ctx_free(ctx);
	return NULL;
}

bool
tls_ctx_same_client_ca(WOLFSSL_CTX *a, WOLFSSL_CTX *b)
{
	const struct tls_ctx_data *da = a != NULL ?
	    wolfSSL_CTX_get_TicketEncCtx(a) : NULL;
	const struct tls_ctx_data *db = b != NULL ?
	    wolfSSL_CTX_get_TicketEncCtx(b) : NULL;

	return da != NULL && db != NULL && da->client_auth &&
	    db->client_auth && memcmp(da->ca_hash, db->ca_hash,
	    sizeof(da->ca_hash)) == 0 && memcmp(da->crl_hash, db->crl_hash,
	    sizeof(da->crl_hash)) == 0;
}

bool
tls_ctx_cert(WOLFSSL_CTX *ctx, size_t n, struct tls_cert_info *info)
{
	const struct tls_ctx_data *d = wolfSSL_CTX_get_TicketEncCtx(ctx);
	const struct tls_cert *c;

	if (d == NULL || n >= d->ncerts)
		return false;
	c = &d->certs[n];
	info->file = c->file;
	info->names = c->names;
	info->nnames = c->nnames;
	info->not_before = c->not_before;
	info->not_after = c->not_after;
	info->missing = c->missing;
	return true;
}

void
tls_format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (t == 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "unknown");
}

long long
tls_days_left(time_t not_after, time_t now)
{
	long long secs = (long long)(not_after - now);

	return secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
}

void
tls_ctx_warnings(WOLFSSL_CTX *ctx, const struct config *cfg,
    const struct config_listener *l, time_t now,
    void (*warn)(const char *, ...))
{
	const struct tls_ctx_data *d = wolfSSL_CTX_get_TicketEncCtx(ctx);
	struct tls_cert_info ci;
	char when[32];

	for (size_t i = 0; d != NULL && i < d->ncrls; i++) {
		const struct tls_crl *c = &d->crls[i];

		if (c->next_update == 0 || crl_warn_from(c) > now)
			continue;
		tls_format_time(c->next_update, when, sizeof(when));
		if (c->next_update <= now)
			warn("%s: listener %s: client_crl %s: CRL %zu is out of "
			    "date since %s: every client is refused until a "
			    "reload reads a newer one", config_at(cfg,
			    l->client_crl_line), l->name, d->crl_file, i + 1,
			    when);
		else {
			/* hours from two on, as the certificates' days */
			long long m = (long long)(c->next_update - now) / 60;
			long long n = m >= 120 ? m / 60 : m;

			warn("%s: listener %s: client_crl %s: CRL %zu is out of "
			    "date at %s, in %lld %s%s: then every client is "
			    "refused until a reload reads a newer one",
			    config_at(cfg, l->client_crl_line), l->name,
			    d->crl_file, i + 1, when, n, m >= 120 ? "hour" :
			    "minute", n == 1 ? "" : "s");
		}
	}

	for (size_t i = 0; tls_ctx_cert(ctx, i, &ci); i++) {
		if (d != NULL && i > 0 && cert_shadowed(d, i))
			warn("%s: listener %s: certificate %s is never sent: "
			    "each of its names is an earlier certificate's, "
			    "which is chosen first", config_at(cfg,
			    l->certs[i].line), l->name, ci.file);
		if (ci.missing != NULL)
			warn("%s: listener %s: certificate %s: the chain ends "
			    "at a certificate signed by \"%s\", which neither "
			    "the file nor the roots in %s hold: a client that "
			    "does not have it refuses the chain (the file is "
			    "to hold the server's certificate, then each "
			    "intermediate)", config_at(cfg, l->certs[i].line),
			    l->name, ci.file, ci.missing, roots_file());
		if (ci.not_after == 0)
			continue;
		if (ci.not_before > now) {
			tls_format_time(ci.not_before, when, sizeof(when));
			warn("%s: listener %s: certificate %s is not valid "
			    "before %s", config_at(cfg, l->certs[i].line),
			    l->name,
			    ci.file, when);
		}
		tls_format_time(ci.not_after, when, sizeof(when));
		if (ci.not_after <= now)
			warn("%s: listener %s: certificate %s expired at %s",
			    config_at(cfg, l->certs[i].line), l->name, ci.file,
			    when);
		else if (ci.not_after - now < TLS_EXPIRY_WARN_DAYS * 86400) {
			long long days = tls_days_left(ci.not_after, now);

			warn("%s: listener %s: certificate %s expires at %s, "
			    "in %lld day%s", config_at(cfg, l->certs[i].line),
			    l->name, ci.file, when, days, days == 1 ? "" : "s");
		}
	}
}

/* The first of t after now, or *next if that comes first. */
static void
sooner(time_t t, time_t now, time_t *next)
{
	if (t > now && t < *next)
		*next = t;
}

void
tls_ctx_expiry(WOLFSSL_CTX *ctx, time_t now, uint64_t *expiring,
    uint64_t *not_valid, uint64_t *crls_expiring, uint64_t *crls_out,
    time_t *next)
{
	const struct tls_ctx_data *d = wolfSSL_CTX_get_TicketEncCtx(ctx);
	struct tls_cert_info ci;
	time_t warn_from;

	for (size_t i = 0; d != NULL && i < d->ncrls; i++) {
		const struct tls_crl *c = &d->crls[i];

		if (c->next_update == 0)
			continue;
		warn_from = crl_warn_from(c);
		if (c->next_update <= now)
			(*crls_out)++;
		else if (warn_from <= now)
			(*crls_expiring)++;
		sooner(warn_from, now, next);
		sooner(c->next_update, now, next);
	}

	for (size_t i = 0; tls_ctx_cert(ctx, i, &ci); i++) {
		if (ci.not_after == 0)
			continue;
		warn_from = ci.not_after - TLS_EXPIRY_WARN_DAYS * 86400;
		if (ci.not_before > now || ci.not_after <= now)
			(*not_valid)++;
		else if (warn_from <= now)
			(*expiring)++;
		sooner(ci.not_before, now, next);
		sooner(warn_from, now, next);
		sooner(ci.not_after, now, next);
	}
}

void
tls_ctx_free(WOLFSSL_CTX *ctx)
{
	if (ctx == NULL)
		return;
	ctx_data_free(wolfSSL_CTX_get_TicketEncCtx(ctx));
	wolfSSL_CTX_free(ctx);
}

/* keylog_file: each TLS 1.3 secret as wolfSSL derives it, NSS's labels. */
static int
keylog_cb(WOLFSSL *ssl, int id, const unsigned char *secret, int len,
    void *arg)
{
	static const char *const labels[] = {
		[CLIENT_EARLY_TRAFFIC_SECRET] = "CLIENT_EARLY_TRAFFIC_SECRET",
		[CLIENT_HANDSHAKE_TRAFFIC_SECRET] =
		    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
		[SERVER_HANDSHAKE_TRAFFIC_SECRET] =
		    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
		[CLIENT_TRAFFIC_SECRET] = "CLIENT_TRAFFIC_SECRET_0",
		[SERVER_TRAFFIC_SECRET] = "SERVER_TRAFFIC_SECRET_0",
		[EARLY_EXPORTER_SECRET] = "EARLY_EXPORTER_SECRET",
		[EXPORTER_SECRET] = "EXPORTER_SECRET",
	};
	uint8_t random[32];
	size_t rlen;

	(void)arg;
	if (id < 0 || (size_t)id >= sizeof(labels) / sizeof(labels[0]) ||
	    labels[id] == NULL || len <= 0)
		return 0;
	rlen = wolfSSL_get_client_random(ssl, random, sizeof(random));
	if (rlen != sizeof(random))
		return 0;
	keylog_write(labels[id], random, rlen, secret, (size_t)len);
	return 0;
}

WOLFSSL *
tls_session_new(WOLFSSL_CTX *ctx, struct tls_conn *tc, bool early_data)
{
	const struct tls_ctx_data *d = wolfSSL_CTX_get_TicketEncCtx(ctx);
	WOLFSSL *ssl;

	if ((ssl = wolfSSL_new(ctx)) == NULL)
		return NULL;
	if (wolfSSL_UseALPN(ssl, alpn_h3, sizeof(alpn_h3) - 1,
	    WOLFSSL_ALPN_FAILED_ON_MISMATCH) != WOLFSSL_SUCCESS) {
		wolfSSL_free(ssl);
		return NULL;
	}
	wolfSSL_set_quic_early_data_enabled(ssl, early_data ? 1 : 0);
	tc->sni = NULL;
	tc->cert = 0;
	tc->ctx = ctx;
	tc->peer = NULL;
	tc->client_auth = d != NULL && d->client_auth;
	wolfSSL_set_app_data(ssl, tc);
	wolfSSL_SetCertCbCtx(ssl, tc);
	wolfSSL_set_accept_state(ssl);
	if (keylog_enabled())
		wolfSSL_set_tls13_secret_cb(ssl, keylog_cb, NULL);
	return ssl;
}

void
tls_conn_clear(struct tls_conn *tc)
{
	free(tc->sni);
	tc->sni = NULL;
	free(tc->peer);
	tc->peer = NULL;
}

void
tls_session_free(WOLFSSL *ssl)
{
	if (ssl != NULL)
		wolfSSL_free(ssl);
}

/*
 * Packet protection with AES straight through wolfCrypt. ngtcp2's
 * wolfSSL glue goes through the EVP layer for each packet: an IV reset, two
 * updates (the AAD into a fresh allocation; on receive the whole packet
 * into another until the final call), a final call and a tag query. The
 * key schedule the EVP context holds is all one packet needs, so AES-GCM,
 * the cipher nearly every client picks, is done in one call on it; the
 * others (ChaCha20-Poly1305, AES-CCM) keep ngtcp2's path. Header
 * protection likewise: with AES, the mask is one block of the sample
 * encrypted (RFC 9001 5.4.3).
 */
static Aes *
gcm_key(const ngtcp2_crypto_aead_ctx *aead_ctx)
{
	WOLFSSL_EVP_CIPHER_CTX *ctx = aead_ctx->native_handle;

	if (ctx->cipherType != AES_128_GCM_TYPE &&
	    ctx->cipherType != AES_256_GCM_TYPE)
		return NULL;
	return &ctx->cipher.aes;
}

int
tls_aead_encrypt(uint8_t *dest, const ngtcp2_crypto_aead *aead,
    const ngtcp2_crypto_aead_ctx *aead_ctx, const uint8_t *plaintext,
    size_t plaintextlen, const uint8_t *nonce, size_t noncelen,
    const uint8_t *aad, size_t aadlen)
{
	Aes *aes = gcm_key(aead_ctx);

	if (aes == NULL)
		return ngtcp2_crypto_encrypt_cb(dest, aead, aead_ctx, plaintext,
		    plaintextlen, nonce, noncelen, aad, aadlen);
	/* four or two blocks per instruction where the CPU can (gcm.c) */
	if (noncelen == GCM_NONCE_LEN && gcm_seal(aes, dest, plaintext,
	    plaintextlen, nonce, aad, aadlen)) {
		stats.vaes_packets++;
		return 0;
	}
	if (wc_AesGcmEncrypt(aes, dest, plaintext, (word32)plaintextlen,
	    nonce, (word32)noncelen, dest + plaintextlen, AES_BLOCK_SIZE, aad,
	    (word32)aadlen) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return 0;
}

/*
 * ngtcp2's deletion of a packet protection key, which first has gcm.c
 * wipe its copy of it.
 */
void
tls_aead_ctx_delete(ngtcp2_conn *conn, ngtcp2_crypto_aead_ctx *aead_ctx,
    void *user_data)
{
	Aes *aes;

	if (aead_ctx->native_handle != NULL &&
	    (aes = gcm_key(aead_ctx)) != NULL)
		gcm_forget(aes);
	ngtcp2_crypto_delete_crypto_aead_ctx_cb(conn, aead_ctx, user_data);
}

int
tls_aead_decrypt(uint8_t *dest, const ngtcp2_crypto_aead *aead,
    const ngtcp2_crypto_aead_ctx *aead_ctx, const uint8_t *ciphertext,
    size_t ciphertextlen, const uint8_t *nonce, size_t noncelen,
    const uint8_t *aad, size_t aadlen)
{
	Aes *aes = gcm_key(aead_ctx);
	size_t len;
	int rv;

	if (aes == NULL)
		return ngtcp2_crypto_decrypt_cb(dest, aead, aead_ctx,
		    ciphertext, ciphertextlen, nonce, noncelen, aad, aadlen);
	if (ciphertextlen < AES_BLOCK_SIZE)
		return NGTCP2_ERR_DECRYPT;
	len = ciphertextlen - AES_BLOCK_SIZE;
	/* a packet that does not authenticate is dropped, not fatal */
	if (noncelen == GCM_NONCE_LEN && (rv = gcm_open(aes, dest, ciphertext,
	    len, nonce, aad, aadlen)) >= 0) {
		stats.vaes_packets++;
		return rv == 1 ? 0 : NGTCP2_ERR_DECRYPT;
	}
	if (wc_AesGcmDecrypt(aes, dest, ciphertext, (word32)len, nonce,
	    (word32)noncelen, ciphertext + len, AES_BLOCK_SIZE, aad,
	    (word32)aadlen) != 0)
		return NGTCP2_ERR_DECRYPT;
	return 0;
}

int
tls_hp_mask(uint8_t *dest, const ngtcp2_crypto_cipher *hp,
    const ngtcp2_crypto_cipher_ctx *hp_ctx, const uint8_t *sample)
{
	WOLFSSL_EVP_CIPHER_CTX *ctx = hp_ctx->native_handle;
	/*
	 * wolfSSL's AES-NI path copies an input block that is not 16-byte
	 * aligned into a buffer it allocates and frees on each call; a sample
	 * sits anywhere in a packet.
	 */
	_Alignas(16) uint8_t in[AES_BLOCK_SIZE], block[AES_BLOCK_SIZE];

	if (ctx->cipherType != AES_128_CTR_TYPE &&
	    ctx->cipherType != AES_256_CTR_TYPE)
		return ngtcp2_crypto_hp_mask_cb(dest, hp, hp_ctx, sample);
	memcpy(in, sample, sizeof(in));
	if (wc_AesEncryptDirect(&ctx->cipher.aes, block, in) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	memcpy(dest, block, NGTCP2_HP_MASKLEN);
	return 0;
}

bool
tls_alpn_is_h3(WOLFSSL *ssl)
{
	char *name;
	unsigned short len;

	return wolfSSL_ALPN_GetProtocol(ssl, &name, &len) == WOLFSSL_SUCCESS &&
	    len == sizeof(alpn_h3) - 1 && memcmp(name, alpn_h3, len) == 0;
}

