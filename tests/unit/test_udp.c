/*
 * test_udp.c: the kernel's steering of a group (udp_steer), on loopback:
 * each worker's connection IDs (cid.c, workers.h) reach its socket in
 * short and long headers, for every place of the byte that names it, and
 * a client's first DCID goes to one socket whatever follows it.
 */
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "addr.h"
#include "cid.h"
#include "udp.h"
#include "unit.h"

#define GROUP	5

static int tx = -1;
static struct addr group;

/* The socket of fds that gets p, or -1: none within a second. */
static int
which(const int *fds, size_t n, const uint8_t *p, size_t len)
{
	struct pollfd pfd[GROUP];
	uint8_t buf[1500];

	if (sendto(tx, p, len, 0, &group.u.sa, group.len) != (ssize_t)len)
		return -1;
	for (size_t i = 0; i < n; i++)
		pfd[i] = (struct pollfd){ fds[i], POLLIN, 0 };
	if (poll(pfd, n, 1000) <= 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (pfd[i].revents & POLLIN) {
			(void)recv(fds[i], buf, sizeof(buf), 0);
			return (int)i;
		}
	return -1;
}

/* A free port on loopback for the group (another may take it: then -1). */
static int
group_open(int *fds, size_t n, size_t off)
{
	socklen_t len = sizeof(struct sockaddr_in);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	memset(&group, 0, sizeof(group));
	group.u.in.sin_family = AF_INET;
	group.u.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	group.len = sizeof(struct sockaddr_in);
	if (fd == -1 || bind(fd, &group.u.sa, group.len) == -1 ||
	    getsockname(fd, &group.u.sa, &len) == -1) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	close(fd);
	return udp_open_group(&group, fds, n, off);
}

static void
group_close(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
}

/*
 * n workers, a server ID of sl bytes (0: none, random IDs): each one's IDs
 * in a short header, and in a long one (a Handshake's), reach its socket.
 */
static void
test_ids(size_t n, size_t sl, const uint8_t *key)
{
	uint8_t sid[CID_LB_MAX_SID], p[1200], cid[20];
	size_t off = sl > 0 ? 1 + sl : 0, cidlen = sl > 0 ? 1 + CID_LB_MAX_PLAIN :
	    16;
	int fds[GROUP];

	if (group_open(fds, n, off) == -1) {
		CHECK(!"a group on loopback");
		return;
	}
	for (size_t i = 0; i < sizeof(sid); i++)
		sid[i] = (uint8_t)unit_rand();
	for (unsigned w = 0; w < n; w++) {
		struct cid_lb *lb = NULL;

		if (sl > 0) {
			lb = cid_lb_new(sid, sl, CID_LB_MAX_PLAIN - sl, 0, key);
			CHECK(lb != NULL);
			if (lb == NULL)
				break;
			cid_lb_set_worker(lb, w, (unsigned)n);
		}
		for (int k = 0; k < 8; k++) {
			for (size_t i = 0; i < sizeof(p); i++)
				p[i] = (uint8_t)unit_rand();
			if (lb != NULL)
				cid_lb_make(lb, cid);
			else {
				for (size_t i = 0; i < cidlen; i++)
					cid[i] = (uint8_t)unit_rand();
				cid[0] = cid_worker_byte(cid[0], w,
				    (unsigned)n);
			}
			/* short: the flags, then the ID */
			p[0] = 0x40 | (p[0] & 0x3f);
			memcpy(p + 1, cid, cidlen);
			CHECK_EQ_INT(which(fds, n, p, 1 + cidlen + 20), w);
			/* long: flags, version, the ID's length, the ID */
			p[0] = 0xe0 | (p[0] & 0x0f);
			memcpy(p + 1, "\x00\x00\x00\x01", 4);
			p[5] = (uint8_t)cidlen;
			memcpy(p + 6, cid, cidlen);
			CHECK_EQ_INT(which(fds, n, p, sizeof(p)), w);
		}
		cid_lb_free(lb);
	}
	group_close(fds, n);
}

/*
 * A client's first DCID of every length 1 to 20, with all that follows
 * it changed from datagram to datagram (SCID, Length, packet number):
 * every datagram goes to the same socket, the one the byte at off names
 * when the ID has it, else its first byte's (none: the byte after).
 */
static void
test_first_flight(size_t n, size_t off)
{
	uint8_t p[1200];
	int fds[GROUP];

	if (group_open(fds, n, off) == -1) {
		CHECK(!"a group on loopback");
		return;
	}
	for (size_t dl = 0; dl <= 20; dl++) {
		uint8_t dcid[20];
		int want;

		for (size_t i = 0; i < dl; i++)
			dcid[i] = (uint8_t)unit_rand();
		want = dl > off ? dcid[off] % (int)n : dcid[0] % (int)n;
		for (int k = 0; k < 4; k++) {
			for (size_t i = 0; i < sizeof(p); i++)
				p[i] = (uint8_t)unit_rand();
			p[0] = 0xc0 | (p[0] & 0x0f);
			memcpy(p + 1, "\x00\x00\x00\x01", 4);
			p[5] = (uint8_t)dl;
			memcpy(p + 6, dcid, dl);
			if (dl == 0)	/* none: the SCID's length, then */
				want = p[6] % (int)n;
			CHECK_EQ_INT(which(fds, n, p, sizeof(p)), want);
		}
	}
	/* too short for the load: the first socket */
	p[0] = 0x40;
	CHECK_EQ_INT(which(fds, n, p, 1 + off), 0);
	group_close(fds, n);
}

/* A worker not running: its datagrams go to the next one that runs. */
static void
test_not_running(void)
{
	bool running[GROUP] = { true, false, false, true, true };
	uint8_t p[64] = { 0x40 };
	int fds[GROUP];

	if (group_open(fds, GROUP, 4) == -1) {
		CHECK(!"a group on loopback");
		return;
	}
	CHECK(udp_steer(fds[0], GROUP, running, 4) == 0);
	for (unsigned w = 0; w < GROUP; w++) {
		p[1 + 4] = (uint8_t)(w + GROUP * (unit_rand() % 40));
		CHECK_EQ_INT(which(fds, GROUP, p, sizeof(p)),
		    w == 1 || w == 2 ? 3 : w);
	}
	group_close(fds, GROUP);
}

int
main(void)
{
	uint8_t key[CID_LB_KEYLEN];

	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)unit_rand();
	if ((tx = socket(AF_INET, SOCK_DGRAM, 0)) == -1) {
		perror("socket");
		return 1;
	}
	for (size_t n = 2; n <= GROUP; n += 3) {
		test_ids(n, 0, NULL);
		for (size_t sl = 1; sl <= CID_LB_MAX_SID; sl++) {
			test_ids(n, sl, sl % 2 ? key : NULL);
			test_first_flight(n, 1 + sl);
		}
		test_first_flight(n, 0);
	}
	test_not_running();
	close(tx);
	UNIT_DONE();
}
