/* udp.h: UDP sockets: options, receive with the local address, send from it. */
#ifndef QPROXY_UDP_H
#define QPROXY_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "addr.h"

/* A bound, non-blocking socket that reports destination addresses and ECN. */
int	udp_open(const struct addr *);
/*
 * n such sockets bound to the same address (SO_REUSEPORT), fds[i] the
 * socket of worker i: the kernel gives each datagram to the one its
 * destination connection ID names, by its byte at off (workers.h). 0, or
 * -1 (logged).
 */
int	udp_open_group(const struct addr *, int *fds, size_t n, size_t off);
#define UDP_GROUP_MAX	64	/* sockets in a group: WORKERS_MAX */
/*
 * The group's steering again, fd any of its sockets: a datagram for a
 * socket i with running[i] false goes to the next one's that runs
 * (NULL: all run). 0, or -1 with errno.
 */
int	udp_steer(int fd, size_t n, const bool *running, size_t off);
/* One received message: a datagram, or with GRO several of seg bytes. */
struct udp_rx {
	uint8_t		*buf;
	size_t		 cap;		/* of buf */
	size_t		 len;		/* received */
	size_t		 seg;		/* datagram size (len without GRO) */
	struct addr	 remote, local;
	uint8_t		 ecn;
	bool		 not_unicast;	/* to a broadcast or multicast address */
};

#define UDP_RX_BATCH	16

/*
 * Receives up to n messages with one recvmmsg. local starts as bound (the
 * socket's address) and gets the destination address of each. Returns
 * how many, or -1 with errno.
 */
int	udp_recv_batch(int fd, struct udp_rx *, size_t n,
	    const struct addr *bound);

/* Sends one datagram from local to remote. 0, or -1 with errno. */
int	udp_send(int fd, const uint8_t *buf, size_t len,
	    const struct addr *remote, const struct addr *local, uint8_t ecn);
/*
 * Sends len bytes as datagrams of segsize bytes (the last may be shorter)
 * in one call, with UDP_SEGMENT (GSO). 0, or -1 with errno.
 */
int	udp_send_gso(int fd, const uint8_t *buf, size_t len, size_t segsize,
	    const struct addr *remote, const struct addr *local, uint8_t ecn);

#endif
