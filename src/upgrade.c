/*
 * upgrade.c: a new binary takes over from the running one. See upgrade.h.
 *
 * A link is a SOCK_SEQPACKET pair: a message is the running process's
 * keys (the first, there before the exec), the new process's word that it
 * is ready (with the addresses it took), a supervisor's word to its
 * worker that the new workers took them (and the worker's answer), the
 * new one's word to reopen the log files, or one datagram with its
 * addresses; either side learns of the other's end
 * by reading nothing (its close). Its size is the kernel's socket buffer:
 * a datagram that finds it full is dropped and counted, as a full UDP
 * receive buffer would.
 *
 * A lone process's link to the new one is made at the upgrade. A
 * worker's is made when the worker starts, its supervisor keeping the
 * other end: at an upgrade that end goes to the new supervisor, whose
 * worker of the same index sends on it (SO_REUSEPORT gives it the
 * datagrams the old worker had). Only the supervisor before reads it, for
 * the worker's answer.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <systemd/sd-daemon.h>

#include "cid.h"
#include "clock.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "stats.h"
#include "tls.h"
#include "upgrade.h"

#define UPGRADE_MSG_READY	1	/* addresses follow, one a slot */
#define UPGRADE_MSG_DATAGRAM	2
#define UPGRADE_MSG_KEYS	3	/* struct upgrade_keys follows */
#define UPGRADE_MSG_HANDOVER	4	/* as READY: to a worker */
#define UPGRADE_MSG_HANDED	5	/* the worker's answer */
#define UPGRADE_MSG_GO		6	/* a new worker may read: the index
					   follows, from supervisor to
					   supervisor */
#define UPGRADE_MSG_DONE	7	/* every old worker was told */
#define UPGRADE_MSG_STOPPED	8	/* the new one reads no more, and
					   waits for the old one's end */
#define UPGRADE_MSG_REOPEN	9	/* the log files, which logrotate
					   moved: to the old one, which
					   drains */
#define UPGRADE_CONTROL_MAX	(1 + WORKERS_MAX)
#define UPGRADE_PATH_MAX	sizeof(((struct sockaddr_un *)0)->sun_path)
#define UPGRADE_ADDR_MAX	sizeof(struct sockaddr_in6)
#define UPGRADE_FEED_MAX	64	/* datagrams a turn of the loop */
#define UPGRADE_LINK_BUF	(4 << 20)	/* bytes asked for (wmem_max
						   may give fewer) */
#define UPGRADE_STACK		(64 << 10)	/* the cloned child's until
						   its exec */
#define UPGRADE_STOPPED_WAIT	1.	/* s for room on a full link for
					   the word STOPPED */

/*
 * What goes before a datagram. Both ends are builds of qproxy, perhaps
 * of different versions: the layout is spelled out, not a struct of
 * theirs (struct addr).
 */
struct upgrade_msg {
	uint8_t		type;
	uint8_t		ecn;
	uint8_t		lens[3];		/* bound, local, remote */
	uint8_t		pad[3];
	uint8_t		addrs[3][UPGRADE_ADDR_MAX];
};

/* READY or HANDOVER with the addresses taken, one a slot after the first */
#define UPGRADE_TAKEN_LEN	((UPGRADE_ADDRS_MAX + 1) * \
				 sizeof(struct upgrade_msg))

static struct {
	char		 exe[PATH_MAX];	/* "" when /proc told nothing */
	char		**argv;
	struct quic_server *srv;
	/* from the new process (worker): datagrams of this one's connections */
	int		 from_new;	/* -1: none */
	ev_io		 from_new_io;
	bool		 handed_over;
	bool		 new_stopped;	/* UPGRADE_MSG_STOPPED came */
	void		(*handover)(void);	/* a worker's */
	bool		 hold;		/* a new worker's: not reading yet */
	ev_child	 child_w;
	/* to the process (worker) before, while it serves */
	int		 to_old;	/* -1: none */
	ev_io		 to_old_io;	/* a lone process's: its close */
	bool		 to_old_told;	/* a lone process's: STOPPED sent */
	/* a supervisor's that handed over: from the new one, its reopens */
	int		 from_new_sv;	/* -1: none */
	ev_io		 from_new_sv_io;
	/* the new process's side, while it takes the sockets */
	bool		 inheriting;
	size_t		 cid_off;	/* the running workers' (workers.h) */
	pid_t		 elder;		/* the running one */
	bool		 elder_parent;	/* this one's parent */
	int		 elder_fd;	/* its pidfd, -1: none */
	/* the running process's side: the new one is its sibling */
	bool		 sibling;
	bool		 took_over;	/* READY taken: the elder drains */
	int		 link;		/* to the running one: -1 none */
	int		 fds[UPGRADE_FDS_MAX];
	size_t		 nfds;
	int		 ctls[UPGRADE_CONTROL_MAX];
	size_t		 nctls;
	/* the files of those no one took: a control_socket changed */
	char		 stale[UPGRADE_CONTROL_MAX][UPGRADE_PATH_MAX];
	size_t		 nstale;
	unsigned	 workers;	/* the running process's */
	int		 old_links[WORKERS_MAX];	/* its workers' */
	bool		 old_told[WORKERS_MAX];	/* STOPPED sent on it */
	/* the addresses the new process took (either side's view) */
	struct addr	 taken[UPGRADE_ADDRS_MAX];
	size_t		 ntaken;
} up = { .from_new = -1, .to_old = -1, .from_new_sv = -1, .link = -1,
    .elder_fd = -1 };

static void	from_new_cb(struct ev_loop *, ev_io *, int);
static void	to_old_cb(struct ev_loop *, ev_io *, int);

static void
msg_addr(struct upgrade_msg *m, int i, const struct addr *a)
{
	socklen_t len = a->len <= UPGRADE_ADDR_MAX ? a->len : 0;

	m->lens[i] = (uint8_t)len;
	memcpy(m->addrs[i], &a->u.sa, len);
}

static int
msg_get_addr(const struct upgrade_msg *m, int i, struct addr *a)
{
	if (m->lens[i] == 0 || m->lens[i] > UPGRADE_ADDR_MAX)
		return -1;
	addr_set(a, (const struct sockaddr *)(const void *)m->addrs[i],
	    m->lens[i]);
	return 0;
}

static void
taken_add(const struct addr *a)
{
	if (!upgrade_taken(a) && up.ntaken < UPGRADE_ADDRS_MAX)
		up.taken[up.ntaken++] = *a;
}

/* READY or HANDOVER: the type, then the addresses taken. */
static ssize_t
send_taken(int fd, uint8_t type)
{
	struct upgrade_msg m[UPGRADE_ADDRS_MAX + 1];
	size_t len = (up.ntaken + 1) * sizeof(m[0]);

	memset(m, 0, len);
	m[0].type = type;
	for (size_t i = 0; i < up.ntaken; i++)
		msg_addr(&m[i + 1], 0, &up.taken[i]);
	return send(fd, m, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* The addresses of a READY or HANDOVER message of n bytes, as taken. */
static void
read_taken(const uint8_t *buf, size_t n)
{
	struct upgrade_msg m;
	struct addr a;

	up.ntaken = 0;
	for (size_t i = 1; (i + 1) * sizeof(m) <= n; i++) {
		memcpy(&m, buf + i * sizeof(m), sizeof(m));
		if (msg_get_addr(&m, 0, &a) == 0)
			taken_add(&a);
	}
}

/* A list of descriptors, "FD FD ...", into fds (at most max). */
static size_t
parse_fds(const char *name, const char *s, int *fds, size_t max)
{
	char *end;
	size_t n = 0;
	long fd;

	while (*s != '\0') {
		errno = 0;
		fd = strtol(s, &end, 10);
		if (end == s || errno != 0 || fd < -1 || fd > INT_MAX ||
		    (*end != ' ' && *end != '\0') || n == max)
			fatalx("%s: not a list of descriptors", name);
		fds[n++] = (int)fd;
		s = *end == ' ' ? end + 1 : end;
	}
	return n;
}

/*
 * The running process, which made the link (its credentials are the
 * socket pair's), waits for this one's word meanwhile: its pidfd tells
 * when it has exited. It is this one's parent, or under systemd its
 * sibling (upgrade_spawn).
 */
static void
find_elder(void)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(up.link, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
	    cred.pid > 1)
		up.elder = cred.pid;
	else
		up.elder = getppid();
	up.elder_parent = up.elder == getppid();
#ifdef SYS_pidfd_open
	up.elder_fd = (int)syscall(SYS_pidfd_open, up.elder, 0);
#endif
}

/* Whether the running process that this one took over from still runs. */
static bool
elder_runs(void)
{
	struct pollfd pfd;

	if (up.elder <= 1)
		return false;
	if (up.elder_fd == -1)
		/* no pidfd: a child's parent changes at its exit */
		return up.elder_parent ? getppid() == up.elder :
		    kill(up.elder, 0) == 0 || errno == EPERM;
	pfd.fd = up.elder_fd;
	pfd.events = POLLIN;
	/* readable once it has exited */
	return poll(&pfd, 1, 0) == 0;
}

static void
cloexec(int fd)
{
	if (fd != -1)
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
}

void
upgrade_init(char *argv[])
{
	int fds[2 + UPGRADE_FDS_MAX], wfds[2 + 2 * WORKERS_MAX];
	const char *env;
	size_t n;

	up.argv = argv;
	for (size_t i = 0; i < WORKERS_MAX; i++)
		up.old_links[i] = -1;
	/* the path it was started from: the new binary is put there */
	n = (size_t)readlink("/proc/self/exe", up.exe, sizeof(up.exe) - 1);
	up.exe[n < sizeof(up.exe) ? n : 0] = '\0';

	/* "LINK CONTROL UDP...", descriptors; CONTROL -1 for none */
	if ((env = getenv(UPGRADE_ENV)) == NULL)
		return;
	up.inheriting = true;
	n = parse_fds(UPGRADE_ENV, env, fds, sizeof(fds) / sizeof(fds[0]));
	if (n < 2 || fds[0] < 0)
		fatalx("%s: no link to the running process", UPGRADE_ENV);
	up.link = fds[0];
	find_elder();
	if (fds[1] != -1)
		up.ctls[up.nctls++] = fds[1];
	for (size_t i = 2; i < n; i++)
		up.fds[up.nfds++] = fds[i];
	/*
	 * From a supervisor: "N CONTROL0 LINK0 CONTROL1 LINK1 ...", then
	 * where the workers' connection IDs name them when not at the first
	 * byte (workers_cid_offset): in this list, which a build from before
	 * that refuses, as it would steer by the first byte.
	 */
	if ((env = getenv(UPGRADE_WORKERS_ENV)) != NULL) {
		n = parse_fds(UPGRADE_WORKERS_ENV, env, wfds,
		    sizeof(wfds) / sizeof(wfds[0]));
		if (n < 1 || wfds[0] < 2 || wfds[0] > WORKERS_MAX ||
		    (n != 1 + 2 * (size_t)wfds[0] &&
		    n != 2 + 2 * (size_t)wfds[0]) ||
		    (n == 2 + 2 * (size_t)wfds[0] && (wfds[n - 1] < 1 ||
		    wfds[n - 1] > 1 + CID_LB_MAX_SID)))
			fatalx("%s: not a count of workers and their "
			    "descriptors", UPGRADE_WORKERS_ENV);
		up.workers = (unsigned)wfds[0];
		for (unsigned i = 0; i < up.workers; i++) {
			if (wfds[1 + 2 * i] != -1)
				up.ctls[up.nctls++] = wfds[1 + 2 * i];
			up.old_links[i] = wfds[2 + 2 * i];
			cloexec(up.old_links[i]);
		}
		if (n == 2 + 2 * (size_t)wfds[0])
			up.cid_off = (size_t)wfds[n - 1];
	}
	/* not for processes this one starts */
	unsetenv(UPGRADE_ENV);
	unsetenv(UPGRADE_WORKERS_ENV);
	for (size_t i = 0; i < up.nfds; i++)
		cloexec(up.fds[i]);
	for (size_t i = 0; i < up.nctls; i++)
		cloexec(up.ctls[i]);
	cloexec(up.link);
}

bool
upgrade_inheriting(void)
{
	return up.inheriting;
}

unsigned
upgrade_workers(void)
{
	return up.workers;
}

size_t
upgrade_cid_offset(void)
{
	return up.cid_off;
}

int
upgrade_take_keys(struct upgrade_keys *keys)
{
	uint8_t buf[sizeof(struct upgrade_msg) + sizeof(*keys)];
	/* a build before secret_file was told sends the keys without it */
	const size_t older = sizeof(struct upgrade_msg) +
	    offsetof(struct upgrade_keys, secret_file);
	ssize_t n;

	/* the first message, there before the exec */
	while ((n = recv(up.link, buf, sizeof(buf), MSG_DONTWAIT)) == -1 &&
	    errno == EINTR)
		;
	if ((n != (ssize_t)sizeof(buf) && n != (ssize_t)older) ||
	    buf[0] != UPGRADE_MSG_KEYS) {
		log_warnx("upgrade: no keys from the running process");
		return -1;
	}
	memset(keys, 0, sizeof(*keys));
	memcpy(keys, buf + sizeof(struct upgrade_msg),
	    (size_t)n - sizeof(struct upgrade_msg));
	keys->cid_key_file[sizeof(keys->cid_key_file) - 1] = '\0';
	keys->secret_file[sizeof(keys->secret_file) - 1] = '\0';
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

bool
upgrade_taken(const struct addr *a)
{
	for (size_t i = 0; i < up.ntaken; i++)
		if (addr_equal(&up.taken[i], a))
			return true;
	return false;
}

/* The first inherited socket bound to a, in the order handed down. */
int
upgrade_take_udp(const struct addr *a)
{
	struct addr bound;
	socklen_t len;
	int fd;

	for (size_t i = 0; i < up.nfds; i++) {
		bound.len = len = sizeof(bound.u);
		if (getsockname(up.fds[i], &bound.u.sa, &len) == -1)
			continue;
		bound.len = len;
		if (!addr_equal(&bound, a))
			continue;
		fd = up.fds[i];
		memmove(&up.fds[i], &up.fds[i + 1],
		    (--up.nfds - i) * sizeof(up.fds[0]));
		taken_add(&bound);
		return fd;
	}
	return -1;
}

int
upgrade_take_group(const struct addr *a, int *fds, size_t n)
{
	size_t k = 0;
	int fd;

	while (k < n && (fd = upgrade_take_udp(a)) != -1)
		fds[k++] = fd;
	if (k == 0)
		return 0;
	if (k == n && (fd = upgrade_take_udp(a)) == -1)
		return 1;
	/* not a group of n: not this one's to use */
	if (k == n)
		close(fd);
	while (k > 0)
		close(fds[--k]);
	return -1;
}

/*
 * The path an inherited control socket listens at (a file's: as
 * control_listen binds them), into path; false when it has none.
 */
static bool
control_path(int fd, char path[UPGRADE_PATH_MAX])
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);

	memset(&sun, 0, sizeof(sun));
	if (getsockname(fd, (struct sockaddr *)&sun, &len) == -1 ||
	    sun.sun_family != AF_UNIX || sun.sun_path[0] == '\0' ||
	    sun.sun_path[sizeof(sun.sun_path) - 1] != '\0')
		return false;
	memcpy(path, sun.sun_path, sizeof(sun.sun_path));
	return true;
}

int
upgrade_take_control(const char *path)
{
	char bound[UPGRADE_PATH_MAX];
	int fd;

	for (size_t i = 0; path != NULL && i < up.nctls; i++) {
		if (!control_path(up.ctls[i], bound) ||
		    strcmp(bound, path) != 0)
			continue;
		fd = up.ctls[i];
		up.ctls[i] = up.ctls[--up.nctls];
		return fd;
	}
	return -1;
}

void
upgrade_close_unused(void)
{
	while (up.nfds > 0)
		close(up.fds[--up.nfds]);
	while (up.nctls > 0) {
		if (control_path(up.ctls[--up.nctls], up.stale[up.nstale]))
			up.nstale++;
		close(up.ctls[up.nctls]);
	}
}

void
upgrade_unlink_stale(void)
{
	while (up.nstale > 0) {
		const char *path = up.stale[--up.nstale];

		if (unlink(path) == 0)
			log_info("upgrade: control socket %s of the process "
			    "before removed: control_socket changed", path);
		else if (errno != ENOENT)
			log_warn("upgrade: control socket %s of the process "
			    "before: unlink", path);
	}
}

/* The link to the process before, once it has gone (or a worker's). */
static void
close_to_old(void)
{
	if (up.to_old == -1)
		return;
	if (up.srv != NULL)
		ev_io_stop(up.srv->loop, &up.to_old_io);
	close(up.to_old);
	up.to_old = -1;
}

/*
 * The word that the new process (supervisor) reads no more, on a link:
 * whether it went.
 */
static bool
send_stopped(int fd)
{
	uint8_t m = UPGRADE_MSG_STOPPED;

	return fd != -1 && send(fd, &m, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1;
}

/*
 * The word that this one reads no more, on the link to the process before
 * or each of its workers' (most were told as the worker here of their
 * number ended): whether it went on every one. A full link, of datagrams
 * passed to an elder slow to read them, is tried again.
 */
static bool
tell_stopped(void)
{
	bool all;

	if (up.to_old != -1 && !up.to_old_told)
		up.to_old_told = send_stopped(up.to_old);
	all = up.to_old == -1 || up.to_old_told;
	for (unsigned i = 0; i < up.workers; i++) {
		upgrade_worker_stopped(i);
		all &= up.old_links[i] == -1 || up.old_told[i];
	}
	return all;
}

/* Then the links' close: the elder's word of this one's end, told or not. */
static void
close_links_to_old(void)
{
	close_to_old();
	for (unsigned i = 0; i < up.workers; i++)
		if (up.old_links[i] != -1) {
			close(up.old_links[i]);
			up.old_links[i] = -1;
		}
}

/*
 * A process that took over is systemd's main process, and the one before,
 * its parent or sibling, drains for up to its shutdown_timeout. With the
 * unit's KillMode=mixed, a stop sends SIGTERM to the main process alone
 * and kills whatever of the unit is left once it exits: the requests the
 * elder still serves with it. So, done, this process waits at most
 * timeout seconds for the elder to exit first (see elder_runs), telling
 * the watchdog it lives.
 */
void
upgrade_await_elder(double timeout)
{
	double now = mono_now(), end = now + timeout, ping = 0,
	    told_by = now + UPGRADE_STOPPED_WAIT;
	const struct timespec step = { 0, 50 * 1000 * 1000 };
	uint64_t usec = 0;
	/* the main process's watchdog; not one's that was taken over too */
	bool watched = !up.handed_over && sd_watchdog_enabled(0, &usec) > 0;
	bool told;

	if (!up.took_over || !elder_runs())
		return;
	/*
	 * This one reads no more: the elder reads again for its
	 * connections, told so over its link, or each of its workers over
	 * theirs, as no death; they learn of a death by the link's close,
	 * an old worker, not this one's child, no other way. The close
	 * follows the word, or a second without room for it: the elder
	 * reads again at either.
	 */
	if ((told = tell_stopped()))
		close_links_to_old();
	log_info("waiting for process %ld, which took no new connection since "
	    "this one started, to finish its requests", (long)up.elder);
	while (elder_runs() && mono_now() < end) {
		if (!told && (tell_stopped() || mono_now() >= told_by)) {
			close_links_to_old();
			told = true;
		}
		/* half a period, as the loop did (a step is 50 ms) */
		if (watched && mono_now() >= ping) {
			sd_notify(0, "WATCHDOG=1");
			ping = mono_now() + (double)usec / 2e6;
		}
		nanosleep(&step, NULL);
	}
	close_links_to_old();
	if (elder_runs())
		log_warnx("process %ld still runs after %.0f s; exiting",
		    (long)up.elder, timeout);
}

int
upgrade_ready(struct quic_server *srv)
{
	if (!up.inheriting)
		return 0;
	up.inheriting = false;
	upgrade_close_unused();
	if (send_taken(up.link, UPGRADE_MSG_READY) == -1) {
		log_warn("upgrade: telling the running process");
		close(up.link);
		up.link = -1;
		return -1;
	}
	up.took_over = true;
	if (srv == NULL) {
		/* a supervisor: the link says when its workers may read (and
		   its stale control sockets go then) */
		log_info("upgrade: took over from the process before, whose "
		    "workers serve their connections until they end");
		return 0;
	}
	up.ntaken = 0;		/* the old one's to know */
	up.to_old = up.link;
	up.link = -1;
	(void)fcntl(up.to_old, F_SETFL, O_NONBLOCK);
	up.srv = srv;
	ev_io_init(&up.to_old_io, to_old_cb, up.to_old, EV_READ);
	ev_io_start(srv->loop, &up.to_old_io);
	log_info("upgrade: took over from the process before, which serves "
	    "its connections until they end");
	upgrade_unlink_stale();
	return 0;
}

bool
upgrade_forward(const struct udp_sock *sock, const uint8_t *data, size_t len,
    const struct addr *remote, const struct addr *local, uint8_t ecn)
{
	struct upgrade_msg m;
	struct iovec iov[2];
	struct msghdr mh;

	/* the process before never has one to this one: none comes back */
	if (up.to_old == -1)
		return false;
	memset(&m, 0, sizeof(m));
	m.type = UPGRADE_MSG_DATAGRAM;
	m.ecn = ecn;
	msg_addr(&m, 0, &sock->local);
	msg_addr(&m, 1, local);
	msg_addr(&m, 2, remote);
	iov[0].iov_base = &m;
	iov[0].iov_len = sizeof(m);
	iov[1].iov_base = (void *)(uintptr_t)data;
	iov[1].iov_len = len;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 2;
	if (sendmsg(up.to_old, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) != -1) {
		stats.upgrade_forwarded++;
		return true;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS ||
	    errno == EMSGSIZE) {
		stats.upgrade_forward_dropped++;
		return true;
	}
	/* the process before has gone */
	log_info("upgrade: the process before has exited");
	close_to_old();
	return false;
}

/* The old process's: a socket of its own bound to the address. */
static struct udp_sock *
sock_bound_to(const struct addr *a)
{
	struct udp_sock *s;

	LIST_FOREACH(s, &up.srv->socks, entry)
		if (addr_equal(&s->local, a))
			return s;
	return NULL;
}

/* A lone new process's link: nothing comes on it but the old one's close. */
static void
to_old_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	uint8_t buf[64];
	ssize_t n;

	while ((n = recv(up.to_old, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		;
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	log_info("upgrade: the process before has exited");
	close_to_old();
}

static void
close_from_new(struct ev_loop *loop)
{
	ev_io_stop(loop, &up.from_new_io);
	close(up.from_new);
	up.from_new = -1;
}

/*
 * The process (worker, supervisor) before, asked by the new one: its log
 * files, moved by logrotate under both, reopened by their names.
 */
static void
reopen_logs(void)
{
	if (log_reopen(NULL) == 0)
		log_info("log files reopened, as the new process was asked");
}

/* The old process (worker), once the new one reads no more. */
static void
take_back(void)
{
	up.ntaken = 0;
	/* the new one took session tickets, which this one's table lacks */
	tls_tickets_doubt(mono_now());
	server_take_back(up.srv);
}

/* A worker told by its supervisor: the new workers took its sockets. */
static void
worker_handover(const uint8_t *buf, size_t n)
{
	uint8_t answer = UPGRADE_MSG_HANDED;

	if (up.handed_over)
		return;
	read_taken(buf, n);
	up.handed_over = true;
	up.handover();
	(void)send(up.from_new, &answer, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* The old process's (worker's) link: datagrams for its connections. */
static void
from_new_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	static uint8_t buf[sizeof(struct upgrade_msg) + 65536];
	struct upgrade_msg m;
	struct addr bound, local, remote;
	struct udp_sock *s;
	ssize_t n;

	for (int i = 0; i < UPGRADE_FEED_MAX; i++) {
		n = recv(up.from_new, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR))
			return;
		if (n <= 0) {
			/* it died: nobody else reads them */
			if (up.handed_over && !up.new_stopped) {
				log_warnx("upgrade: the new process has gone: "
				    "this one reads its sockets again for its "
				    "connections, and refuses new ones");
				take_back();
			}
			close_from_new(loop);
			return;
		}
		/*
		 * It reads no more and waits for this one's end (a stopped
		 * worker's supervisor while its other workers drain: this
		 * end stays open, its word that this one still serves).
		 */
		if (buf[0] == UPGRADE_MSG_STOPPED && up.handed_over &&
		    !up.new_stopped) {
			up.new_stopped = true;
			log_info("upgrade: the new process has stopped: this one "
			    "reads its sockets again for its connections, and "
			    "refuses new ones");
			take_back();
			continue;
		}
		if (buf[0] == UPGRADE_MSG_GO && up.hold) {
			/* the worker before of its number stopped reading */
			up.hold = false;
			log_debug("upgrade: reading the sockets");
			/* the one before took session tickets until now */
			tls_tickets_fresh(mono_now());
			server_take_back(up.srv);
			continue;
		}
		if (buf[0] == UPGRADE_MSG_REOPEN) {
			reopen_logs();
			continue;
		}
		if ((size_t)n < sizeof(m))
			continue;
		if (buf[0] == UPGRADE_MSG_HANDOVER && up.handover != NULL) {
			worker_handover(buf, (size_t)n);
			continue;
		}
		memcpy(&m, buf, sizeof(m));
		if (m.type != UPGRADE_MSG_DATAGRAM ||
		    msg_get_addr(&m, 0, &bound) == -1 ||
		    msg_get_addr(&m, 1, &local) == -1 ||
		    msg_get_addr(&m, 2, &remote) == -1 ||
		    (s = sock_bound_to(&bound)) == NULL)
			continue;
		quic_feed(s, buf + sizeof(m), (size_t)n - sizeof(m), &remote,
		    &local, m.ecn);
	}
}

static void
child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	ev_child_stop(loop, w);
	if (WIFEXITED(w->rstatus))
		log_warnx("upgrade: the new process %d exited with status %d "
		    "while this one still served connections", w->rpid,
		    WEXITSTATUS(w->rstatus));
	else if (WIFSIGNALED(w->rstatus))
		log_warnx("upgrade: the new process %d was ended by signal %d "
		    "while this one still served connections", w->rpid,
		    WTERMSIG(w->rstatus));
}

/*
 * The new process's environment: this one's with the variables of env
 * (NULL-ended) added, and WATCHDOG_PID, when there is one, in the slot
 * *wdp for the child to fill in (its id is not known before the fork).
 * NULL: out of memory.
 */
static char **
child_environ(char **env, char *wd, char ***wdp)
{
	extern char **environ;
	size_t n = 0, k = 0, nenv = 0;
	char **envp;

	while (environ[n] != NULL)
		n++;
	while (env[nenv] != NULL)
		nenv++;
	if ((envp = calloc(n + nenv + 1, sizeof(*envp))) == NULL)
		return NULL;
	*wdp = NULL;
	for (size_t i = 0; i < n; i++) {
		if (strncmp(environ[i], UPGRADE_ENV, sizeof(UPGRADE_ENV) - 1) ==
		    0)
			continue;	/* either of the two */
		/* systemd's watchdog goes with the main process: the new one */
		if (strncmp(environ[i], "WATCHDOG_PID=", 13) == 0) {
			*wdp = &envp[k];
			envp[k++] = wd;
			continue;
		}
		envp[k++] = environ[i];
	}
	for (size_t i = 0; i < nenv; i++)
		envp[k++] = env[i];
	return envp;
}

/*
 * In the child, between fork and exec: only async-signal-safe calls, and
 * nothing of this process's memory changed but its own copy. Signals
 * come blocked (upgrade_spawn): the ones qproxy takes stay so through the
 * exec, pending if they came, for the new process to take once its loop
 * runs; none is taken meanwhile by this process's handlers (libev's, which
 * would note it in this copy only, and wake the parent's loop).
 */
static void __attribute__((noreturn))
child_exec(const int *fds, size_t n, char **envp, char **wdp)
{
	char digits[24], *p;
	sigset_t held;
	long pid;

	for (size_t i = 0; i < n; i++)
		if (fds[i] != -1)
			(void)fcntl(fds[i], F_SETFD, 0);
	if (wdp != NULL) {
		/* "WATCHDOG_PID=" and this process's id, by hand */
		p = digits + sizeof(digits);
		*--p = '\0';
		pid = (long)getpid();
		do {
			*--p = (char)('0' + pid % 10);
			pid /= 10;
		} while (pid > 0);
		memcpy(*wdp + 13, p, (size_t)(digits + sizeof(digits) - p));
	}
	sigemptyset(&held);
	sigaddset(&held, SIGHUP);
	sigaddset(&held, SIGINT);
	sigaddset(&held, SIGTERM);
	sigaddset(&held, SIGUSR1);
	(void)sigprocmask(SIG_SETMASK, &held, NULL);
	execve(up.exe, up.argv, envp);
	_exit(127);
}

struct child_args {
	const int	 *fds;
	size_t		  n;
	char		**envp;
	char		**wdp;
};

static int
child_main(void *arg)
{
	struct child_args *a = arg;

	child_exec(a->fds, a->n, a->envp, a->wdp);
}

/*
 * The new process, into *pidfd a pidfd of it or -1. Under systemd (a
 * notify service's, as the unit is) it is started as this one's sibling,
 * systemd's child (CLONE_PARENT), as the main process it will be: systemd
 * 252 takes a main process not its own child for an alien one, and does
 * not notice its death while this one, its parent, still drains (the
 * service stayed "active", serving no new client, then stopped without a
 * restart). -1: fork or clone failed (errno).
 */
static pid_t
spawn_child(const int *fds, size_t n, char **envp, char **wdp, int *pidfd)
{
	struct child_args a = { fds, n, envp, wdp };
	char *stack;
	pid_t pid;

	*pidfd = -1;
	up.sibling = false;
	if (getenv("NOTIFY_SOCKET") != NULL &&
	    (stack = malloc(UPGRADE_STACK)) != NULL) {
		/* the stack is this process's; the child has its copy */
		pid = clone(child_main, stack + UPGRADE_STACK,
		    CLONE_PARENT | CLONE_PIDFD | SIGCHLD, &a, pidfd);
		free(stack);
		if (pid != -1) {
			up.sibling = true;
			return pid;
		}
		/* EINVAL: this one is init, or a kernel before 5.2 */
		*pidfd = -1;
	}
	if ((pid = fork()) == 0)
		child_exec(fds, n, envp, wdp);
	return pid;
}

/* Ends the new process that failed to take over. */
static void
end_child(pid_t pid, int pidfd, struct strbuf *out)
{
	int status;

	if (up.sibling) {
		/* systemd's child: it reaps it */
#ifdef SYS_pidfd_send_signal
		if (pidfd != -1)
			(void)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL,
			    NULL, 0);
		else
#endif
			(void)kill(pid, SIGKILL);
		return;
	}
	/* gone already, mostly; one that said something else is ended */
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	if (WIFEXITED(status))
		strbuf_printf(out, "process %d: exit status %d\n", (int)pid,
		    WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		strbuf_printf(out, "process %d: signal %d\n", (int)pid,
		    WTERMSIG(status));
}

void
upgrade_worker_stopped(unsigned i)
{
	if (!up.took_over || i >= up.workers || up.old_links[i] == -1 ||
	    up.old_told[i])
		return;
	/* a full link: again at the next turn */
	up.old_told[i] = send_stopped(up.old_links[i]);
}

bool
upgrade_worker_before(unsigned i)
{
	struct pollfd pfd;

	if (i >= up.workers || up.old_links[i] == -1)
		return false;
	pfd.fd = up.old_links[i];
	pfd.events = 0;
	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP)) {
		/* its end closed: it has exited */
		close(up.old_links[i]);
		up.old_links[i] = -1;
		return false;
	}
	return true;
}

bool
upgrade_busy(struct strbuf *why)
{
	bool old = up.to_old != -1;

	if (up.handed_over || up.inheriting) {
		strbuf_printf(why, "an upgrade is under way already\n");
		return true;
	}
	/* a supervisor's: the workers before, while one still runs */
	for (unsigned i = 0; i < up.workers; i++)
		old |= upgrade_worker_before(i);
	if (old) {
		strbuf_printf(why, "the process before this one still serves "
		    "connections: upgrade once it has exited\n");
		return true;
	}
	return false;
}

/*
 * poll(2) until deadline (mono_now's): what it returned, 0 once the
 * deadline has passed, -1 on an error but EINTR.
 */
static int
poll_until(struct pollfd *pfd, nfds_t n, double deadline)
{
	int left, rv;

	do {
		if ((left = (int)((deadline - mono_now()) * 1000)) <= 0)
			return 0;
	} while ((rv = poll(pfd, n, left)) == -1 && errno == EINTR);
	return rv;
}

/* "NAME=FD FD ..." into a new string, NULL: out of memory. */
static char *
env_fds(const char *name, const int *fds, size_t n)
{
	size_t len = strlen(name) + 1 + 12 * n + 1, off;
	char *s;

	if ((s = malloc(len)) == NULL)
		return NULL;
	off = (size_t)snprintf(s, len, "%s=", name);
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(s + off, len - off, "%s%d",
		    i > 0 ? " " : "", fds[i]);
	return s;
}

int
upgrade_spawn(const struct upgrade_fds *f, const struct upgrade_keys *keys,
    pid_t *pidp, int *linkp, struct strbuf *out)
{
	uint8_t kbuf[sizeof(struct upgrade_msg) + sizeof(*keys)];
	uint8_t ready[UPGRADE_TAKEN_LEN];
	int pair[2], rv, forkerr, pidfd, sndbuf = UPGRADE_LINK_BUF;
	int *pass = NULL, *wenv = NULL;
	char wd[48], *env[3] = { NULL, NULL, NULL }, **envp = NULL, **wdp;
	size_t npass = 0;
	struct pollfd pfd;
	sigset_t all, saved;
	double deadline, ping = 0.;
	uint64_t wd_usec = 0;
	/* still systemd's main process, watched, until the new one is */
	bool watched = sd_watchdog_enabled(0, &wd_usec) > 0;
	ssize_t got;
	pid_t pid;

	if (upgrade_busy(out))
		return -1;
	if (up.exe[0] == '\0') {
		strbuf_printf(out, "the path of the binary is not known\n");
		return -1;
	}
	if (access(up.exe, X_OK) == -1) {
		strbuf_printf(out, "%s: %s\n", up.exe, strerror(errno));
		return -1;
	}
	if (f->nudp > UPGRADE_FDS_MAX || f->workers > WORKERS_MAX) {
		strbuf_printf(out, "more than %d UDP sockets\n",
		    UPGRADE_FDS_MAX);
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) ==
	    -1) {
		strbuf_printf(out, "socketpair: %s\n", strerror(errno));
		return -1;
	}
	/* room for a burst of datagrams while the old one is busy */
	(void)setsockopt(pair[1], SOL_SOCKET, SO_SNDBUF, &sndbuf,
	    sizeof(sndbuf));
	/* the keys, waiting for the new process at its end */
	memset(kbuf, 0, sizeof(kbuf));
	kbuf[0] = UPGRADE_MSG_KEYS;
	memcpy(kbuf + sizeof(struct upgrade_msg), keys, sizeof(*keys));
	got = send(pair[0], kbuf, sizeof(kbuf), MSG_NOSIGNAL);
	explicit_bzero(kbuf, sizeof(kbuf));
	if (got != (ssize_t)sizeof(kbuf)) {
		strbuf_printf(out, "socketpair: %s\n", strerror(errno));
		goto fail;
	}
	/*
	 * What the new process keeps open: "LINK CONTROL UDP..." (CONTROL
	 * -1 for none), and from a supervisor "N CONTROL0 LINK0 ...".
	 */
	if ((pass = calloc(2 + f->nudp + 2 * f->workers, sizeof(*pass))) ==
	    NULL || (wenv = calloc(2 + 2 * f->workers, sizeof(*wenv))) ==
	    NULL)
		goto nomem;
	pass[npass++] = pair[1];
	pass[npass++] = f->control;
	for (size_t i = 0; i < f->nudp; i++)
		pass[npass++] = f->udp[i];
	if ((env[0] = env_fds(UPGRADE_ENV, pass, npass)) == NULL)
		goto nomem;
	if (f->workers > 0) {
		wenv[0] = (int)f->workers;
		for (unsigned i = 0; i < f->workers; i++) {
			pass[npass++] = wenv[1 + 2 * i] = f->worker_control[i];
			pass[npass++] = wenv[2 + 2 * i] = f->worker_link[i];
		}
		/* none from a build before: the first byte, as 0 says */
		wenv[1 + 2 * f->workers] = (int)f->cid_off;
		if ((env[1] = env_fds(UPGRADE_WORKERS_ENV, wenv,
		    1 + 2 * (size_t)f->workers + (f->cid_off > 0))) == NULL)
			goto nomem;
	}
	memset(wd, 0, sizeof(wd));
	memcpy(wd, "WATCHDOG_PID=", 13);
	if ((envp = child_environ(env, wd, &wdp)) == NULL)
		goto nomem;
	sigfillset(&all);
	(void)sigprocmask(SIG_BLOCK, &all, &saved);
	pid = spawn_child(pass, npass, envp, wdp, &pidfd);
	forkerr = errno;
	(void)sigprocmask(SIG_SETMASK, &saved, NULL);
	free(envp);
	free(env[0]);
	free(env[1]);
	free(pass);
	free(wenv);
	if (pid == -1) {
		strbuf_printf(out, "fork: %s\n", strerror(forkerr));
		close(pair[0]);
		close(pair[1]);
		return -1;
	}
	close(pair[1]);
	log_info("upgrade: started %s as process %d", up.exe, (int)pid);

	/*
	 * Waited for here: its start is a reload's work (the files read,
	 * TLS set up), and meanwhile the datagrams wait in the sockets.
	 */
	deadline = mono_now() + UPGRADE_WAIT;
	pfd.fd = pair[0];
	pfd.events = POLLIN;
	for (;;) {
		/* the loop that fed systemd's watchdog waits meanwhile */
		if (watched && mono_now() >= ping) {
			sd_notify(0, "WATCHDOG=1");
			ping = mono_now() + (double)wd_usec / 2e6;
		}
		if ((rv = poll_until(&pfd, 1, watched && ping < deadline ?
		    ping : deadline)) == 0 && mono_now() < deadline)
			continue;
		if (rv <= 0) {
			if (rv == 0)
				strbuf_printf(out, "the new process was not "
				    "ready within %d s: ended\n", UPGRADE_WAIT);
			else
				strbuf_printf(out, "poll: %s\n",
				    strerror(errno));
			break;
		}
		got = recv(pair[0], ready, sizeof(ready), 0);
		/* the type is a message's first byte */
		if (got >= (ssize_t)sizeof(struct upgrade_msg) &&
		    ready[0] == UPGRADE_MSG_READY) {
			read_taken(ready, (size_t)got);
			(void)fcntl(pair[0], F_SETFL, O_NONBLOCK);
			/*
			 * The new one is watched from now on, and must feed
			 * the watchdog within a period: it starts afresh here
			 * (its first WATCHDOG=1 comes half a period from its
			 * start, or once its workers read).
			 */
			if (watched)
				sd_notifyf(0, "MAINPID=%ld\nWATCHDOG=1",
				    (long)pid);
			else
				sd_notifyf(0, "MAINPID=%ld", (long)pid);
			*pidp = pid;
			*linkp = pair[0];
			if (pidfd != -1)
				close(pidfd);
			return 0;
		}
		if (got == -1 && errno == EINTR)
			continue;
		strbuf_printf(out, "the new process exited before it was "
		    "ready: the log says why\n");
		break;
	}
	close(pair[0]);
	end_child(pid, pidfd, out);
	if (pidfd != -1)
		close(pidfd);
	return -1;

nomem:
	strbuf_printf(out, "out of memory\n");
fail:
	free(env[0]);
	free(env[1]);
	free(pass);
	free(wenv);
	close(pair[0]);
	close(pair[1]);
	return -1;
}

void
upgrade_handed_over(struct quic_server *srv, int link, pid_t pid)
{
	up.srv = srv;
	up.from_new = link;
	up.handed_over = true;
	ev_io_init(&up.from_new_io, from_new_cb, up.from_new, EV_READ);
	ev_io_start(srv->loop, &up.from_new_io);
	/* a sibling's end is systemd's to see, and the link's close */
	if (up.sibling)
		return;
	ev_child_init(&up.child_w, child_cb, pid, 0);
	ev_child_start(srv->loop, &up.child_w);
}

void
upgrade_worker_start(unsigned index, int rx, bool hold)
{
	up.hold = hold && rx != -1;
	/* a new supervisor's worker: what it inherited is not its own */
	up.inheriting = false;
	if (up.elder_fd != -1) {
		close(up.elder_fd);
		up.elder_fd = -1;
	}
	if (up.link != -1) {
		close(up.link);
		up.link = -1;
	}
	upgrade_close_unused();
	for (unsigned i = 0; i < up.workers; i++) {
		if (i == index)
			up.to_old = up.old_links[i];
		else if (up.old_links[i] != -1)
			close(up.old_links[i]);
		up.old_links[i] = -1;
	}
	up.workers = 0;
	up.ntaken = 0;		/* the supervisor's to know */
	up.from_new = rx;
	if (rx != -1)
		(void)fcntl(rx, F_SETFL, O_NONBLOCK);
}

void
upgrade_worker_serve(struct quic_server *srv, void (*handover)(void))
{
	up.srv = srv;
	up.handover = handover;
	if (up.from_new == -1)
		return;
	ev_io_init(&up.from_new_io, from_new_cb, up.from_new, EV_READ);
	ev_io_start(srv->loop, &up.from_new_io);
}

bool
upgrade_worker_held(void)
{
	return up.hold;
}

/* Tells a new worker, or the new supervisor (index: which), to read. */
static void
send_go(int fd, int index)
{
	uint8_t m[2] = { UPGRADE_MSG_GO, (uint8_t)index };

	if (fd != -1)
		(void)send(fd, m, index < 0 ? 1 : 2, MSG_NOSIGNAL |
		    MSG_DONTWAIT);
}

/*
 * This supervisor is systemd's main process from its READY on (the one
 * before says MAINPID= at once), and its loop, which feeds the watchdog,
 * waits meanwhile: up to timeout_ms when the one before is slow to answer.
 */
void
upgrade_await_go(const int *tx, unsigned n, int timeout_ms)
{
	double deadline = mono_now() + timeout_ms / 1000., every = 0., ping;
	bool sent[WORKERS_MAX] = { false };
	struct pollfd pfd;
	uint64_t usec = 0;
	uint8_t m[64];
	ssize_t got;
	int rv;

	if (sd_watchdog_enabled(0, &usec) > 0)
		every = (double)usec / 2e6;
	ping = every > 0. ? mono_now() + every : deadline;
	pfd.fd = up.link;
	pfd.events = POLLIN;
	while (up.link != -1) {
		if (every > 0. && mono_now() >= ping) {
			sd_notify(0, "WATCHDOG=1");
			ping = mono_now() + every;
		}
		if ((rv = poll_until(&pfd, 1, ping < deadline ? ping :
		    deadline)) == 0 && mono_now() < deadline)
			continue;
		if (rv <= 0)
			break;
		if ((got = recv(up.link, m, sizeof(m), MSG_DONTWAIT)) == -1 &&
		    (errno == EINTR || errno == EAGAIN))
			continue;
		if (got == 2 && m[0] == UPGRADE_MSG_GO && m[1] < n) {
			send_go(tx[m[1]], -1);
			sent[m[1]] = true;
			continue;
		}
		if (got <= 0) {
			/* the one before has gone */
			close(up.link);
			up.link = -1;
			break;
		}
		if (m[0] == UPGRADE_MSG_DONE)
			break;
	}
	/* the rest: the old ones did not answer in time, or had gone */
	for (unsigned i = 0; i < n && i < WORKERS_MAX; i++)
		if (!sent[i])
			send_go(tx[i], -1);
	/* the link stays, for reopens (upgrade_reopen) while they drain */
}

/* A reopen passed on over a link; false once its other end has gone. */
static bool
send_reopen(int fd)
{
	uint8_t m = UPGRADE_MSG_REOPEN;

	if (send(fd, &m, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
		return true;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
		log_warnx("upgrade: the process before, which drains, was not "
		    "asked to reopen its log files: its link is full");
	return errno != EPIPE && errno != ECONNRESET;
}

void
upgrade_reopen(void)
{
	/* a lone process's, or a worker's to the worker before */
	if (up.to_old != -1)
		(void)send_reopen(up.to_old);
	/* a supervisor's, from its READY on (upgrade_await_go) */
	if (up.took_over && up.link != -1 && !send_reopen(up.link)) {
		close(up.link);
		up.link = -1;
	}
}

/* The new supervisor's link: reopens, until its close. */
static void
from_new_sv_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	uint8_t m[64];
	ssize_t n;

	while ((n = recv(up.from_new_sv, m, sizeof(m), MSG_DONTWAIT)) > 0)
		if (m[0] == UPGRADE_MSG_REOPEN)
			reopen_logs();
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	ev_io_stop(loop, w);
	close(up.from_new_sv);
	up.from_new_sv = -1;
}

void
upgrade_supervisor_handed_over(struct ev_loop *loop, int link)
{
	up.from_new_sv = link;
	ev_io_init(&up.from_new_sv_io, from_new_sv_cb, link, EV_READ);
	ev_io_start(loop, &up.from_new_sv_io);
}

unsigned
upgrade_tell_workers(const int *tx, unsigned n, int timeout_ms, int link)
{
	struct pollfd pfd[WORKERS_MAX];
	unsigned waiting = 0, done = 0, gone = 0, map[WORKERS_MAX];
	double deadline = mono_now() + timeout_ms / 1000.;
	uint8_t answer[64], end = UPGRADE_MSG_DONE;

	for (unsigned i = 0; i < n && i < WORKERS_MAX; i++) {
		if (tx[i] == -1 || send_taken(tx[i], UPGRADE_MSG_HANDOVER) ==
		    -1)
			continue;
		pfd[waiting].fd = tx[i];
		pfd[waiting].events = POLLIN;
		map[waiting++] = i;
	}
	while (done + gone < waiting && poll_until(pfd, waiting, deadline) >
	    0) {
		for (unsigned k = 0; k < waiting; k++) {
			if (pfd[k].fd == -1 || pfd[k].revents == 0)
				continue;
			if (recv(pfd[k].fd, answer, sizeof(answer),
			    MSG_DONTWAIT) >= 1 && answer[0] ==
			    UPGRADE_MSG_HANDED) {
				/* its successor may read the socket now */
				send_go(link, (int)map[k]);
				done++;
			} else if (!(pfd[k].revents & POLLHUP))
				continue;	/* a stray datagram: not ours */
			else {
				log_warnx("upgrade: worker %u has gone",
				    map[k]);
				gone++;
			}
			pfd[k].fd = -1;
		}
	}
	(void)send(link, &end, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	return done;
}
