/*
 * clients.h: QUIC connections counted by client, for
 * max_connections_per_client.
 *
 * A client is an IPv4 address, or an IPv6 /64: a host is given a whole /64
 * and may send from any address in it, so counting IPv6 addresses one by
 * one would bound nothing. An IPv4 address mapped into IPv6 (::ffff:0:0/96,
 * or NAT64's well-known 64:ff9b::/96) counts as that IPv4 address. A connection is counted under the address it began from, even
 * if the client moves to another later.
 *
 * The table holds the clients that have a connection now, no more: at most
 * as many entries as connections. The request and password check
 * allowances of one whose last connection closed are kept in a fixed table
 * beside it, direct-mapped, so that coming back on a new connection does
 * not refill them; a client may take another's slot there, and that one
 * then comes back to full ones.
 */
#ifndef QPROXY_CLIENTS_H
#define QPROXY_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "addr.h"

/* The family (4 or 6), then the IPv4 address or the IPv6 /64. */
#define CLIENT_KEYLEN	9

struct client {
	struct client	*next;		/* in its hash chain */
	uint8_t		 key[CLIENT_KEYLEN];
	uint32_t	 conns;		/* connections from it now */
	/* of those, the ones from a proven address: begun with a valid
	   token, or with their handshake done */
	uint32_t	 proven;
	/* max_request_rate_per_client's budget (bucket.h), from its first
	   request; while req_at is 0 it has taken none */
	double		 req_budget, req_at;
	/* auth_check_rate_per_client's, the same way */
	double		 auth_budget, auth_at;
};

struct clients;

struct clients	*clients_new(void);
void		 clients_free(struct clients *);
/* An address's client key; false for an address of no IP family. */
bool		 client_key(const struct addr *, uint8_t key[CLIENT_KEYLEN]);
/* The client of the address, if it has a connection now. */
struct client	*clients_find(struct clients *, const struct addr *);
/* Counts one more connection from the address; NULL: no memory. */
struct client	*clients_add(struct clients *, const struct addr *);
/*
 * One of its connections is gone; the client is forgotten with its last,
 * but for its allowances, which its next connection takes up.
 */
void		 clients_release(struct clients *, struct client *);
/* How many clients have a connection now. */
size_t		 clients_count(const struct clients *);
/*
 * The n clients with the most connections (after them, by address), into
 * top, most first; returns how many there were. -1: no memory.
 */
ssize_t		 clients_top(const struct clients *, const struct client **top,
		    size_t n);
/* "192.0.2.1", or "2001:db8:1:2::/64". Returns buf. */
char		*client_format(const struct client *, char *buf, size_t len);

/*
 * Whether the client of the address may be told once more, now, that it is
 * refused (a stateless CONNECTION_CLOSE): CLIENTS_REFUSALS_BURST at once,
 * then one a second. libcurl answers CONNECTION_REFUSED with a new Initial
 * at once, thousands a second until its connect timeout; one it hears
 * nothing from waits for its retransmission timer instead. The clients
 * refused lately are kept in a fixed table, where one may take another's
 * place: that one is then allowed a burst again.
 */
#define CLIENTS_GONE_SLOTS	2048	/* allowances kept; a power of two */
#define CLIENTS_REFUSALS_BURST	4
#define CLIENTS_REFUSAL_SLOTS	1024	/* a power of two */
bool		 clients_may_refuse(struct clients *, const struct addr *,
		    double now);

#endif
