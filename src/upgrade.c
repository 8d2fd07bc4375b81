/*
 * upgrade.c: a new binary takes over from the running one. See upgrade.h.
 *
 * The link is a SOCK_SEQPACKET pair: a message is the running process's
 * keys (the first, there before the exec), the new process's word that it
 * is ready (with the addresses it took), or one datagram with its
 * addresses; either side learns of the other's end by reading nothing
 * (its close). Its size is
 * the kernel's socket buffer: a datagram that finds it full is dropped
 * and counted, as a full UDP receive buffer would.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <systemd/sd-daemon.h>

#include "clock.h"
#include "conn.h"
#include "log.h"
#include "stats.h"
#include "upgrade.h"

#define UPGRADE_MSG_READY	1
#define UPGRADE_MSG_DATAGRAM	2
#define UPGRADE_MSG_KEYS	3	/* struct upgrade_keys follows */
#define UPGRADE_INHERIT_MAX	64	/* sockets handed down */
#define UPGRADE_ADDR_MAX	sizeof(struct sockaddr_in6)
#define UPGRADE_FEED_MAX	64	/* datagrams a turn of the loop */
#define UPGRADE_LINK_BUF	(4 << 20)	/* bytes asked for (wmem_max
						   may give fewer) */

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

static struct {
	char		 exe[PATH_MAX];	/* "" when /proc told nothing */
	char		**argv;
	/* the running process's side, once handed over */
	bool		 handed_over;
	struct quic_server *srv;
	ev_io		 link_io;
	ev_child	 child_w;
	int		 link;		/* -1: none */
	/* the new process's side, while it takes the sockets */
	bool		 inheriting;
	int		 fds[UPGRADE_INHERIT_MAX];
	size_t		 nfds;
	/* the addresses the new process took (either side's view) */
	struct addr	 taken[UPGRADE_INHERIT_MAX];
	size_t		 ntaken;
	int		 control;	/* -1: none */
} up = { .link = -1, .control = -1 };

static void	link_read_cb(struct ev_loop *, ev_io *, int);

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

void
upgrade_init(char *argv[])
{
	const char *env;
	char *end;
	ssize_t n;
	long fd;

	up.argv = argv;
	/* the path it was started from: the new binary is put there */
	n = readlink("/proc/self/exe", up.exe, sizeof(up.exe) - 1);
	up.exe[n > 0 ? n : 0] = '\0';

	/* "LINK CONTROL UDP...", descriptors; CONTROL -1 for none */
	if ((env = getenv(UPGRADE_ENV)) == NULL)
		return;
	up.inheriting = true;
	for (int i = 0; *env != '\0'; i++) {
		errno = 0;
		fd = strtol(env, &end, 10);
		if (end == env || errno != 0 || fd < -1 || fd > INT_MAX ||
		    (*end != ' ' && *end != '\0'))
			fatalx("%s: not a list of descriptors", UPGRADE_ENV);
		if (i == 0)
			up.link = (int)fd;
		else if (i == 1)
			up.control = (int)fd;
		else if (up.nfds < UPGRADE_INHERIT_MAX)
			up.fds[up.nfds++] = (int)fd;
		env = *end == ' ' ? end + 1 : end;
	}
	/* not for processes this one starts */
	unsetenv(UPGRADE_ENV);
	if (up.link < 0)
		fatalx("%s: no link to the running process", UPGRADE_ENV);
	for (size_t i = 0; i < up.nfds; i++)
		(void)fcntl(up.fds[i], F_SETFD, FD_CLOEXEC);
	(void)fcntl(up.link, F_SETFD, FD_CLOEXEC);
	if (up.control != -1)
		(void)fcntl(up.control, F_SETFD, FD_CLOEXEC);
}

bool
upgrade_inheriting(void)
{
	return up.inheriting;
}

int
upgrade_take_keys(struct upgrade_keys *keys)
{
	uint8_t buf[sizeof(struct upgrade_msg) + sizeof(*keys)];
	ssize_t n;

	/* the first message, there before the exec */
	while ((n = recv(up.link, buf, sizeof(buf), MSG_DONTWAIT)) == -1 &&
	    errno == EINTR)
		;
	if (n != (ssize_t)sizeof(buf) || buf[0] != UPGRADE_MSG_KEYS) {
		log_warnx("upgrade: no keys from the running process");
		return -1;
	}
	memcpy(keys, buf + sizeof(struct upgrade_msg), sizeof(*keys));
	keys->cid_key_file[sizeof(keys->cid_key_file) - 1] = '\0';
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
		up.fds[i] = up.fds[--up.nfds];
		up.taken[up.ntaken++] = bound;
		return fd;
	}
	return -1;
}

int
upgrade_take_control(const char *path)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	int fd = up.control;

	if (fd == -1 || path == NULL)
		return -1;
	memset(&sun, 0, sizeof(sun));
	if (getsockname(fd, (struct sockaddr *)&sun, &len) == -1 ||
	    sun.sun_family != AF_UNIX ||
	    strncmp(sun.sun_path, path, sizeof(sun.sun_path)) != 0)
		return -1;
	up.control = -1;
	return fd;
}

/* Either side's: the other one has gone (its end closed). */
static void
link_close(struct ev_loop *loop)
{
	if (up.link == -1)
		return;
	ev_io_stop(loop, &up.link_io);
	close(up.link);
	up.link = -1;
}

int
upgrade_ready(struct quic_server *srv)
{
	struct upgrade_msg m, taken[UPGRADE_INHERIT_MAX];
	struct iovec iov[2];
	struct msghdr mh;

	if (!up.inheriting)
		return 0;
	up.inheriting = false;
	while (up.nfds > 0)
		close(up.fds[--up.nfds]);
	if (up.control != -1) {
		close(up.control);
		up.control = -1;
	}
	/* the message, then the addresses it took, one a slot */
	memset(&m, 0, sizeof(m));
	m.type = UPGRADE_MSG_READY;
	memset(&taken, 0, sizeof(taken));
	for (size_t i = 0; i < up.ntaken; i++)
		msg_addr(&taken[i], 0, &up.taken[i]);
	iov[0].iov_base = &m;
	iov[0].iov_len = sizeof(m);
	iov[1].iov_base = taken;
	iov[1].iov_len = up.ntaken * sizeof(taken[0]);
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 2;
	if (sendmsg(up.link, &mh, MSG_NOSIGNAL) !=
	    (ssize_t)(sizeof(m) + iov[1].iov_len)) {
		log_warn("upgrade: telling the running process");
		close(up.link);
		up.link = -1;
		return -1;
	}
	up.ntaken = 0;		/* the old one's to know */
	(void)fcntl(up.link, F_SETFL, O_NONBLOCK);
	up.srv = srv;
	ev_io_init(&up.link_io, link_read_cb, up.link, EV_READ);
	ev_io_start(srv->loop, &up.link_io);
	log_info("upgrade: took over from the process before, which serves "
	    "its connections until they end");
	return 0;
}

bool
upgrade_forward(const struct udp_sock *sock, const uint8_t *data, size_t len,
    const struct addr *remote, const struct addr *local, uint8_t ecn)
{
	struct upgrade_msg m;
	struct iovec iov[2];
	struct msghdr mh;

	/* the old process has the link too: it never sends one back */
	if (up.link == -1 || up.inheriting || up.handed_over)
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
	if (sendmsg(up.link, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) != -1) {
		stats.upgrade_forwarded++;
		return true;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS ||
	    errno == EMSGSIZE) {
		stats.upgrade_forward_dropped++;
		return true;
	}
	/* the old process has gone */
	log_info("upgrade: the process before has exited");
	link_close(sock->srv->loop);
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

/*
 * Either side's link. The old process takes datagrams from it; the new
 * one reads nothing on it but the old one's close.
 */
static void
link_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	static uint8_t buf[sizeof(struct upgrade_msg) + 65536];
	struct upgrade_msg m;
	struct addr bound, local, remote;
	struct udp_sock *s;
	ssize_t n;

	for (int i = 0; i < UPGRADE_FEED_MAX; i++) {
		n = recv(up.link, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR))
			return;
		if (n <= 0) {
			if (!up.handed_over)
				log_info("upgrade: the process before has "
				    "exited");
			else {
				/* it died: nobody else reads them */
				log_warnx("upgrade: the new process has gone: "
				    "this one reads its sockets again for its "
				    "connections, and refuses new ones");
				up.ntaken = 0;
				server_take_back(up.srv);
			}
			link_close(loop);
			return;
		}
		if (!up.handed_over || (size_t)n < sizeof(m))
			continue;
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
 * The new process's environment: this one's with UPGRADE_ENV (env) added,
 * and WATCHDOG_PID, when there is one, in the slot *wdp for the child to
 * fill in (its id is not known before the fork). NULL: out of memory.
 */
static char **
child_environ(char *env, char *wd, char ***wdp)
{
	extern char **environ;
	size_t n = 0, k = 0;
	char **envp;

	while (environ[n] != NULL)
		n++;
	if ((envp = calloc(n + 2, sizeof(*envp))) == NULL)
		return NULL;
	*wdp = NULL;
	for (size_t i = 0; i < n; i++) {
		if (strncmp(environ[i], UPGRADE_ENV "=",
		    sizeof(UPGRADE_ENV)) == 0)
			continue;
		/* systemd's watchdog goes with the main process: the new one */
		if (strncmp(environ[i], "WATCHDOG_PID=", 13) == 0) {
			*wdp = &envp[k];
			envp[k++] = wd;
			continue;
		}
		envp[k++] = environ[i];
	}
	envp[k] = env;
	return envp;
}

/*
 * In the child, between fork and exec: only async-signal-safe calls, and
 * nothing of this process's memory changed but its own copy. Signals
 * come blocked (upgrade_start): the ones qproxy takes stay so through the
 * exec, pending if they came, for the new process to take once its loop
 * runs; none is taken meanwhile by this process's handlers (libev's, which
 * would note it in this copy only, and wake the parent's loop).
 */
static void __attribute__((noreturn))
child_exec(int link, int control_fd, const int *fds, size_t n, char **envp,
    char **wdp)
{
	char digits[24], *p;
	sigset_t held;
	long pid;

	(void)fcntl(link, F_SETFD, 0);
	if (control_fd != -1)
		(void)fcntl(control_fd, F_SETFD, 0);
	for (size_t i = 0; i < n; i++)
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

int
upgrade_start(struct quic_server *srv, int control_fd,
    const struct upgrade_keys *keys, pid_t *pidp, struct strbuf *out)
{
	uint8_t kbuf[sizeof(struct upgrade_msg) + sizeof(*keys)];
	struct upgrade_msg m;
	struct udp_sock *s;
	struct pollfd pfd;
	int pair[2], fds[UPGRADE_INHERIT_MAX], status, left;
	int sndbuf = UPGRADE_LINK_BUF, forkerr;
	char env[32 + 12 * (UPGRADE_INHERIT_MAX + 2)], wd[48], **envp, **wdp;
	sigset_t all, saved;
	size_t len;
	uint8_t ready[(UPGRADE_INHERIT_MAX + 1) * sizeof(struct upgrade_msg)];
	double deadline;
	size_t n = 0;
	ssize_t got;
	pid_t pid;

	if (up.handed_over || up.inheriting) {
		strbuf_printf(out, "an upgrade is under way already\n");
		return -1;
	}
	if (up.link != -1) {
		strbuf_printf(out, "the process before this one still serves "
		    "connections: upgrade once it has exited\n");
		return -1;
	}
	if (up.exe[0] == '\0') {
		strbuf_printf(out, "the path of the binary is not known\n");
		return -1;
	}
	if (access(up.exe, X_OK) == -1) {
		strbuf_printf(out, "%s: %s\n", up.exe, strerror(errno));
		return -1;
	}
	LIST_FOREACH(s, &srv->socks, entry) {
		if (s->listener == NULL)
			continue;	/* draining: not the new one's */
		if (n == UPGRADE_INHERIT_MAX) {
			strbuf_printf(out, "more than %d listening addresses\n",
			    UPGRADE_INHERIT_MAX);
			return -1;
		}
		fds[n++] = s->fd;
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
	memcpy(kbuf + sizeof(m), keys, sizeof(*keys));
	got = send(pair[0], kbuf, sizeof(kbuf), MSG_NOSIGNAL);
	explicit_bzero(kbuf, sizeof(kbuf));
	if (got != (ssize_t)sizeof(kbuf)) {
		strbuf_printf(out, "socketpair: %s\n", strerror(errno));
		close(pair[0]);
		close(pair[1]);
		return -1;
	}
	/* "LINK CONTROL UDP...", descriptors; CONTROL -1 for none */
	len = (size_t)snprintf(env, sizeof(env), "%s=%d %d", UPGRADE_ENV,
	    pair[1], control_fd);
	for (size_t i = 0; i < n && len < sizeof(env); i++)
		len += (size_t)snprintf(env + len, sizeof(env) - len, " %d",
		    fds[i]);
	memset(wd, 0, sizeof(wd));
	memcpy(wd, "WATCHDOG_PID=", 13);
	if ((envp = child_environ(env, wd, &wdp)) == NULL) {
		strbuf_printf(out, "out of memory\n");
		close(pair[0]);
		close(pair[1]);
		return -1;
	}
	sigfillset(&all);
	(void)sigprocmask(SIG_BLOCK, &all, &saved);
	if ((pid = fork()) == 0)
		child_exec(pair[1], control_fd, fds, n, envp, wdp);
	forkerr = errno;
	(void)sigprocmask(SIG_SETMASK, &saved, NULL);
	free(envp);
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
		left = (int)((deadline - mono_now()) * 1000);
		if (left <= 0) {
			strbuf_printf(out, "the new process was not ready "
			    "within %d s: ended\n", UPGRADE_WAIT);
			break;
		}
		if (poll(&pfd, 1, left) == -1) {
			if (errno == EINTR)
				continue;
			strbuf_printf(out, "poll: %s\n", strerror(errno));
			break;
		}
		if (pfd.revents == 0)
			continue;
		got = recv(pair[0], ready, sizeof(ready), 0);
		/* the type is a message's first byte */
		if (got >= (ssize_t)sizeof(m) &&
		    ready[0] == UPGRADE_MSG_READY) {
			for (size_t i = 1; i < sizeof(ready) / sizeof(m) &&
			    (ssize_t)((i + 1) * sizeof(m)) <= got; i++) {
				memcpy(&m, &ready[i * sizeof(m)], sizeof(m));
				if (msg_get_addr(&m, 0,
				    &up.taken[up.ntaken]) == 0)
					up.ntaken++;
			}
			(void)fcntl(pair[0], F_SETFL, O_NONBLOCK);
			up.link = pair[0];
			up.srv = srv;
			up.handed_over = true;
			ev_io_init(&up.link_io, link_read_cb, up.link,
			    EV_READ);
			ev_io_start(srv->loop, &up.link_io);
			ev_child_init(&up.child_w, child_cb, pid, 0);
			ev_child_start(srv->loop, &up.child_w);
			sd_notifyf(0, "MAINPID=%ld", (long)pid);
			*pidp = pid;
			return 0;
		}
		if (got == -1 && errno == EINTR)
			continue;
		strbuf_printf(out, "the new process exited before it was "
		    "ready: the log says why\n");
		break;
	}
	close(pair[0]);
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
	return -1;
}
