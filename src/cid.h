/*
 * cid.h: connection IDs a load balancer can route (QUIC-LB,
 * draft-ietf-quic-load-balancers-21).
 *
 * Several qproxy instances behind one UDP load balancer each get a server
 * ID. Every connection ID an instance issues carries it: a first octet
 * (three bits of configuration ID, five of the length that follows), then
 * the server ID and a nonce, encrypted with a key the load balancer shares
 * (AES-128-ECB: one block when the two make 16 bytes, a four-pass Feistel
 * network otherwise). The load balancer sends each packet to the instance
 * its DCID names, so a client that moves to a new address stays with its
 * connection.
 */
#ifndef QPROXY_CID_H
#define QPROXY_CID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CID_LB_MAX_SID		15
#define CID_LB_MIN_NONCE	4
#define CID_LB_MAX_PLAIN	19	/* server ID and nonce, at most */
#define CID_LB_KEYLEN		16
#define CID_LB_UNROUTABLE	7	/* the configuration ID of none */

struct cid_lb;

/*
 * Where in a connection ID the byte that names its worker is (workers.h):
 * the first of a random ID (sidlen 0), else the one after the server ID.
 */
static inline size_t
cid_worker_offset(size_t sidlen)
{
	return sidlen > 0 ? 1 + sidlen : 0;
}

/*
 * The random byte r made one whose remainder by count is index, the
 * worker's (workers.h); count need not divide 256.
 */
static inline uint8_t
cid_worker_byte(uint8_t r, unsigned index, unsigned count)
{
	return (uint8_t)(index + count * (r % (256 / count)));
}

/*
 * A configuration: the server ID, the nonce's length, the configuration ID
 * (0 to 6) and the key (NULL: none; the server ID is then in the clear).
 * NULL when the lengths are out of range or there is no memory.
 */
struct cid_lb	*cid_lb_new(const uint8_t *sid, size_t sidlen,
		    size_t noncelen, unsigned config_id,
		    const uint8_t key[CID_LB_KEYLEN]);
void		 cid_lb_free(struct cid_lb *);
/* How long its connection IDs are: the first octet, server ID, nonce. */
size_t		 cid_lb_len(const struct cid_lb *);
/*
 * A new connection ID, cid_lb_len() bytes. With a key the nonces count
 * up from a random start, and none comes twice: once they have all been
 * used the IDs are unroutable (configuration ID 7, random), and
 * cid_lb_exhausted says so. Without a key they are random.
 */
void		 cid_lb_make(struct cid_lb *, uint8_t *out);
/*
 * With workers (workers.h): each connection ID made from now on has, at
 * cid_lb_worker_offset() (the byte after the server ID's place), a byte
 * whose remainder by count is index, as the kernel's steering program
 * reads it (udp_steer). In the clear that byte of the nonce is chosen;
 * with a key, the nonces that give another worker's are passed over (so
 * they last count times fewer IDs). count 1: no worker of its own.
 */
void		 cid_lb_set_worker(struct cid_lb *, unsigned index,
		    unsigned count);
size_t		 cid_lb_worker_offset(const struct cid_lb *);
bool		 cid_lb_exhausted(const struct cid_lb *);
/* For tests: the next nonce, and the first (where the count ends). */
void		 cid_lb_set_nonce(struct cid_lb *, const uint8_t *next,
		    const uint8_t *first);
/* The ID of this server ID and nonce (the encoding alone, for tests). */
void		 cid_lb_encode(const struct cid_lb *, const uint8_t *nonce,
		    uint8_t *out);
/*
 * What a load balancer does, for tests: the server ID and nonce in a
 * connection ID of this configuration, into plain (cid_lb_len() - 1
 * bytes). False when the ID is of another length or configuration ID.
 */
bool		 cid_lb_decode(const struct cid_lb *, const uint8_t *cid,
		    size_t len, uint8_t *plain);
/*
 * Whether a connection ID names this server: of its configuration, with
 * its server ID. Not one made unroutable (configuration ID 7).
 */
bool		 cid_lb_names_us(const struct cid_lb *, const uint8_t *cid,
		    size_t len);

#endif
