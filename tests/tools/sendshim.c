/*
 * sendshim.so: UDP sends that fail on demand, for tests of qproxy's
 * fallbacks. Preloaded (LD_PRELOAD) with SENDSHIM_DIR naming a directory,
 * sendmsg on a datagram socket fails while a file there exists:
 *   gso-eio	with EIO, for a message asking for GSO (UDP_SEGMENT), as a
 *		device without checksum offload refuses it;
 *   eagain	with EAGAIN, for every message, as a full socket buffer.
 * Anything else goes through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT	103
#endif

static ssize_t	(*next_sendmsg)(int, const struct msghdr *, int);

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

static int
asks_gso(const struct msghdr *msg)
{
	struct cmsghdr *c;

	for (c = CMSG_FIRSTHDR(msg); c != NULL;
	    c = CMSG_NXTHDR((struct msghdr *)(uintptr_t)msg, c))
		if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_SEGMENT)
			return 1;
	return 0;
}

ssize_t
sendmsg(int fd, const struct msghdr *msg, int flags)
{
	int type;
	socklen_t len = sizeof(type);

	if (next_sendmsg == NULL)
		next_sendmsg = (ssize_t (*)(int, const struct msghdr *, int))
		    dlsym(RTLD_NEXT, "sendmsg");
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
	    type == SOCK_DGRAM) {
		if (flag("eagain")) {
			errno = EAGAIN;
			return -1;
		}
		if (asks_gso(msg) && flag("gso-eio")) {
			errno = EIO;
			return -1;
		}
	}
	return next_sendmsg(fd, msg, flags);
}
