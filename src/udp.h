/* udp.h: UDP sockets: options, receive with the local address, send from it. */
#ifndef QPROXY_UDP_H
#define QPROXY_UDP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "addr.h"

/* A bound, non-blocking socket that reports destination addresses and ECN. */
int	udp_open(const struct addr *);
/*
 * Receives one datagram. Sets remote, local (the address the peer sent to)
 * and ecn (the two ECN bits). Returns its length, or -1 with errno.
 */
ssize_t	udp_recv(int fd, uint8_t *buf, size_t len, struct addr *remote,
	    struct addr *local, uint8_t *ecn);
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
