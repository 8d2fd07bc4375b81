/* udp.c: UDP sockets for the listeners. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <linux/filter.h>

#include "log.h"
#include "udp.h"

static int
setopt(int fd, int level, int name, int value)
{
	return setsockopt(fd, level, name, &value, sizeof(value));
}

static int
udp_socket(const struct addr *a, bool reuseport)
{
	char text[ADDR_STRLEN];
	int fd, family = a->u.sa.sa_family;

	fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("%s: socket", __func__);
		return -1;
	}
	if (family == AF_INET6) {
		if (setopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) == -1 ||
		    setopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1) == -1 ||
		    setopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, 1) == -1 ||
		    setopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER,
		    IP_PMTUDISC_PROBE) == -1)
			goto fail;
	} else {
		if (setopt(fd, IPPROTO_IP, IP_PKTINFO, 1) == -1 ||
		    setopt(fd, IPPROTO_IP, IP_RECVTOS, 1) == -1 ||
		    setopt(fd, IPPROTO_IP, IP_MTU_DISCOVER,
		    IP_PMTUDISC_PROBE) == -1)
			goto fail;
	}
	/*
	 * Coalesced receive where the kernel has it; fine without. Not for
	 * a group: the datagrams of one address and port would be coalesced
	 * whatever their connection IDs, and go where the first one goes.
	 */
	if (!reuseport)
		(void)setopt(fd, SOL_UDP, UDP_GRO, 1);
	/* Room for bursts of a few hundred datagrams. */
	(void)setopt(fd, SOL_SOCKET, SO_RCVBUF, 4 << 20);
	(void)setopt(fd, SOL_SOCKET, SO_SNDBUF, 4 << 20);
	if (reuseport && setopt(fd, SOL_SOCKET, SO_REUSEPORT, 1) == -1)
		goto fail;
	if (bind(fd, &a->u.sa, a->len) == -1) {
		log_warn("bind %s", addr_format(a, text, sizeof(text)));
		close(fd);
		return -1;
	}
	return fd;
fail:
	log_warn("%s: setsockopt", __func__);
	close(fd);
	return -1;
}

int
udp_open(const struct addr *a)
{
	return udp_socket(a, false);
}

/*
 * The kernel's choice of socket in a SO_REUSEPORT group, by a classic BPF
 * program run on the UDP payload: the index of the socket is the byte at
 * off of the destination connection ID (the first, or with QUIC-LB the
 * one after the server ID) modulo n. A short header has the ID at offset
 * 1; a long one after its version and the ID's length, at 6. A long
 * header's ID no longer than off (a client's first, which can be 8 bytes)
 * has its first byte taken instead: past the ID come the SCID, Length and
 * packet number, which may differ between the datagrams of one first
 * flight. A datagram too short for the load gets 0. (RFC 9000 17.2,
 * 17.3.)
 *
 * An index whose worker does not run (running[i] false; NULL: all run)
 * is turned into the next one that does: its socket would hold the
 * datagrams, unread, until the worker is back (a minute, for one that
 * keeps dying), and leave new connections unanswered meanwhile.
 */
int
udp_steer(int fd, size_t n, const bool *running, size_t off)
{
	struct sock_filter code[11 + 2 * UDP_GROUP_MAX];
	struct sock_fprog prog;
	size_t len = 0, i, j;
	bool any = false;

	if (n > UDP_GROUP_MAX) {
		errno = EINVAL;
		return -1;
	}
	code[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS,
	    0);
	/* long: on; short: to its load, 6 on */
	code[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K,
	    0x80, 0, 6);
	code[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS,
	    5);
	/* the ID's length: past off, on; else to its first byte, 2 on */
	code[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K,
	    (uint32_t)off, 0, 2);
	code[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS,
	    (uint32_t)(6 + off));
	code[len++] = (struct sock_filter)BPF_STMT(BPF_JMP | BPF_JA, 3);
	code[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS,
	    6);
	code[len++] = (struct sock_filter)BPF_STMT(BPF_JMP | BPF_JA, 1);
	code[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS,
	    (uint32_t)(1 + off));
	code[len++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K,
	    (uint32_t)n);
	/* none running (all stopping): each keeps its own */
	for (i = 0; running != NULL && i < n && !any; i++)
		any = running[i];
	for (i = 0; any && i < n; i++) {
		if (running[i])
			continue;
		for (j = 1; !running[(i + j) % n]; j++)
			;
		code[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ |
		    BPF_K, (uint32_t)i, 0, 1);
		code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K,
		    (uint32_t)((i + j) % n));
	}
	code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);
	prog.len = (unsigned short)len;
	prog.filter = code;
	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
	    sizeof(prog));
}

int
udp_open_group(const struct addr *a, int *fds, size_t n, size_t off)
{
	size_t i = 0;
	int fd;

	/*
	 * Alone first: the group of another process of the same user (a
	 * qproxy running already) would take these sockets in, and their
	 * program would replace its.
	 */
	if ((fd = udp_socket(a, false)) == -1)
		return -1;
	close(fd);
	for (i = 0; i < n; i++)
		if ((fds[i] = udp_socket(a, true)) == -1)
			goto fail;
	if (udp_steer(fds[0], n, NULL, off) == -1) {
		log_warn("%s: SO_ATTACH_REUSEPORT_CBPF", __func__);
		goto fail;
	}
	return 0;
fail:
	while (i-- > 0)
		close(fds[i]);
	return -1;
}

/* Reads destination address, ECN bits and GRO segment size from cmsgs. */
static void
rx_cmsgs(struct msghdr *msg, struct udp_rx *rx)
{
	struct cmsghdr *c;

	rx->ecn = 0;
	rx->seg = 0;
	rx->not_unicast = false;
	for (c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;

			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			rx->local.u.in.sin_addr = pi.ipi_addr;
			/*
			 * Only to a unicast address is there an answer: for a
			 * broadcast (the kernel's reply address differs then)
			 * or multicast one it would go out from that address.
			 */
			rx->not_unicast =
			    IN_MULTICAST(ntohl(pi.ipi_addr.s_addr)) ||
			    pi.ipi_addr.s_addr == htonl(INADDR_BROADCAST) ||
			    pi.ipi_addr.s_addr != pi.ipi_spec_dst.s_addr;
		} else if (c->cmsg_level == IPPROTO_IPV6 &&
		    c->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi;

			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			rx->local.u.in6.sin6_addr = pi.ipi6_addr;
			rx->not_unicast = IN6_IS_ADDR_MULTICAST(&pi.ipi6_addr);
		} else if ((c->cmsg_level == IPPROTO_IP &&
		    c->cmsg_type == IP_TOS) ||
		    (c->cmsg_level == IPPROTO_IPV6 &&
		    c->cmsg_type == IPV6_TCLASS)) {
			uint8_t tos;

			if (c->cmsg_len - CMSG_LEN(0) == sizeof(int)) {
				int v;

				memcpy(&v, CMSG_DATA(c), sizeof(v));
				tos = (uint8_t)v;
			} else
				memcpy(&tos, CMSG_DATA(c), 1);
			rx->ecn = tos & 0x3;
		} else if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
			int seg;

			memcpy(&seg, CMSG_DATA(c), sizeof(seg));
			if (seg > 0)
				rx->seg = (size_t)seg;
		}
	}
	if (rx->seg == 0 || rx->seg > rx->len)
		rx->seg = rx->len;
}

int
udp_recv_batch(int fd, struct udp_rx *rx, size_t n, const struct addr *bound)
{
	union {
		struct cmsghdr	hdr;
		uint8_t		buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) +
				    CMSG_SPACE(sizeof(int)) +
				    CMSG_SPACE(sizeof(int))];
	} cbuf[UDP_RX_BATCH];
	struct mmsghdr mm[UDP_RX_BATCH];
	struct iovec iov[UDP_RX_BATCH];
	int got;

	if (n > UDP_RX_BATCH)
		n = UDP_RX_BATCH;
	memset(mm, 0, sizeof(mm[0]) * n);
	for (size_t i = 0; i < n; i++) {
		iov[i].iov_base = rx[i].buf;
		iov[i].iov_len = rx[i].cap;
		mm[i].msg_hdr.msg_name = &rx[i].remote.u.ss;
		mm[i].msg_hdr.msg_namelen = sizeof(rx[i].remote.u.ss);
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		mm[i].msg_hdr.msg_control = cbuf[i].buf;
		mm[i].msg_hdr.msg_controllen = sizeof(cbuf[i].buf);
	}
	do
		got = recvmmsg(fd, mm, (unsigned)n, 0, NULL);
	while (got == -1 && errno == EINTR);
	for (int i = 0; i < got; i++) {
		rx[i].len = mm[i].msg_len;
		rx[i].remote.len = mm[i].msg_hdr.msg_namelen;
		rx[i].local = *bound;
		rx_cmsgs(&mm[i].msg_hdr, &rx[i]);
	}
	return got;
}

int
udp_send(int fd, const uint8_t *buf, size_t len, const struct addr *remote,
    const struct addr *local, uint8_t ecn)
{
	return udp_send_gso(fd, buf, len, len, remote, local, ecn);
}

int
udp_send_gso(int fd, const uint8_t *buf, size_t len, size_t segsize,
    const struct addr *remote, const struct addr *local, uint8_t ecn)
{
	union {
		struct cmsghdr	hdr;
		uint8_t		buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) +
				    CMSG_SPACE(sizeof(int)) +
				    CMSG_SPACE(sizeof(uint16_t))];
	} cbuf;
	struct iovec iov = { (void *)(uintptr_t)buf, len };
	struct msghdr msg;
	struct cmsghdr *c;
	int tos = ecn;

	memset(&msg, 0, sizeof(msg));
	memset(&cbuf, 0, sizeof(cbuf));
	msg.msg_name = (void *)(uintptr_t)&remote->u.sa;
	msg.msg_namelen = remote->len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf.buf;
	c = (struct cmsghdr *)cbuf.buf;
	if (local->u.sa.sa_family == AF_INET6) {
		struct in6_pktinfo pi;

		memset(&pi, 0, sizeof(pi));
		pi.ipi6_addr = local->u.in6.sin6_addr;
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		msg.msg_controllen = CMSG_SPACE(sizeof(pi));
		c = (struct cmsghdr *)(cbuf.buf + CMSG_SPACE(sizeof(pi)));
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_TCLASS;
	} else {
		struct in_pktinfo pi;

		memset(&pi, 0, sizeof(pi));
		pi.ipi_spec_dst = local->u.in.sin_addr;
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		msg.msg_controllen = CMSG_SPACE(sizeof(pi));
		c = (struct cmsghdr *)(cbuf.buf + CMSG_SPACE(sizeof(pi)));
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_TOS;
	}
	c->cmsg_len = CMSG_LEN(sizeof(tos));
	memcpy(CMSG_DATA(c), &tos, sizeof(tos));
	msg.msg_controllen += CMSG_SPACE(sizeof(tos));
	if (len > segsize) {
		uint16_t seg = (uint16_t)segsize;

		c = (struct cmsghdr *)(cbuf.buf + msg.msg_controllen);
		c->cmsg_level = SOL_UDP;
		c->cmsg_type = UDP_SEGMENT;
		c->cmsg_len = CMSG_LEN(sizeof(seg));
		memcpy(CMSG_DATA(c), &seg, sizeof(seg));
		msg.msg_controllen += CMSG_SPACE(sizeof(seg));
	}

	for (;;) {
		if (sendmsg(fd, &msg, 0) != -1)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}
