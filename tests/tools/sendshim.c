/*
 * sendshim.so: UDP sends that fail on demand, for tests of qproxy's
 * fallbacks. Preloaded (LD_PRELOAD) with SENDSHIM_DIR naming a directory,
 * sendmsg on a datagram socket fails while a file there exists:
 *   gso-eio	with EIO, for a message asking for GSO (UDP_SEGMENT), as a
 *		device without checksum offload refuses it;
 *   eagain	with EAGAIN, for every message, as a full socket buffer.
 * With SENDSHIM_GSO_EAGAIN=K in the environment (K of 2 or more), every
 * K-th message asking for GSO fails with EAGAIN, as a socket buffer full
 * now and then: the train is sent again later.
 * Anything else goes through. The messages with UDP_SEGMENT that went,
 * and the datagrams in them, are written to the file gso-sent there after
 * each one ("BATCHES DATAGRAMS\n"), for a test to compare qproxy's
 * gso_batches and gso_datagrams with (a lone process's: workers would
 * write over each other's).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT	103
#endif

static ssize_t	(*next_sendmsg)(int, const struct msghdr *, int);
static unsigned long long gso_calls, gso_batches, gso_datagrams;
static int	gso_fd = -1;

static int
flag(const char *name)
{
	const char *dir = getenv("SENDSHIM_DIR");
	char path[PATH_MAX];

	if (dir == NULL || (size_t)snprintf(path, sizeof(path), "%s/%s", dir,
	    name) >= sizeof(path))
		return 0;
	return access(path, F_OK) == 0;
}

/* The segment size a message asks for with UDP_SEGMENT, or 0. */
static size_t
asks_gso(const struct msghdr *msg)
{
	struct cmsghdr *c;
	uint16_t seg;

	for (c = CMSG_FIRSTHDR(msg); c != NULL;
	    c = CMSG_NXTHDR((struct msghdr *)(uintptr_t)msg, c))
		if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_SEGMENT) {
			memcpy(&seg, CMSG_DATA(c), sizeof(seg));
			return seg;
		}
	return 0;
}

/* Counts a message sent with UDP_SEGMENT, and writes the counts down. */
static void
gso_sent(const struct msghdr *msg, size_t seg)
{
	const char *dir = getenv("SENDSHIM_DIR");
	char path[PATH_MAX], line[64];
	size_t len = 0;
	ssize_t w;
	int n;

	for (size_t i = 0; i < msg->msg_iovlen; i++)
		len += msg->msg_iov[i].iov_len;
	gso_batches++;
	gso_datagrams += (len + seg - 1) / seg;
	if (gso_fd == -1) {
		if (dir == NULL || (size_t)snprintf(path, sizeof(path),
		    "%s/gso-sent", dir) >= sizeof(path) ||
		    (gso_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC |
		    O_CLOEXEC, 0644)) == -1)
			return;
	}
	/* as wide as a count can be: a shorter one leaves no tail */
	n = snprintf(line, sizeof(line), "%20llu %20llu\n", gso_batches,
	    gso_datagrams);
	w = pwrite(gso_fd, line, (size_t)n, 0);
	(void)w;
}

ssize_t
sendmsg(int fd, const struct msghdr *msg, int flags)
{
	const char *every = getenv("SENDSHIM_GSO_EAGAIN");
	int type, saved;
	socklen_t len = sizeof(type);
	size_t seg;
	ssize_t n;

	if (next_sendmsg == NULL)
		next_sendmsg = (ssize_t (*)(int, const struct msghdr *, int))
		    dlsym(RTLD_NEXT, "sendmsg");
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
	    type == SOCK_DGRAM) {
		if (flag("eagain")) {
			errno = EAGAIN;
			return -1;
		}
		seg = asks_gso(msg);
		if (seg > 0 && flag("gso-eio")) {
			errno = EIO;
			return -1;
		}
		if (seg > 0 && every != NULL && atoi(every) > 1 &&
		    ++gso_calls % (unsigned)atoi(every) == 0) {
			errno = EAGAIN;
			return -1;
		}
		if ((n = next_sendmsg(fd, msg, flags)) != -1 && seg > 0) {
			saved = errno;
			gso_sent(msg, seg);
			errno = saved;
		}
		return n;
	}
	return next_sendmsg(fd, msg, flags);
}
