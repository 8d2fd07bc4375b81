/*
 * workers.c: the supervisor of [global] workers, and what a worker asks
 * of it. See workers.h.
 *
 * The supervisor runs a small libev loop of its own, on the poll backend:
 * a worker forked from inside it leaves it (and the control clients it
 * serves) behind without touching kernel state the supervisor still uses,
 * and goes on to make the loop a lone qproxy makes. Its control socket is
 * served as a lone qproxy's is (control.c: clients at once, each with a
 * deadline), so that a local client that says nothing or reads nothing
 * holds up neither signals nor restarts. A command is answered by asking
 * every worker at once, with a deadline: the supervisor waits for its
 * own workers only.
 */
#include <sys/param.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "clock.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "log.h"
#include "merge.h"
#include "state.h"
#include "strbuf.h"
#include "udp.h"
#include "upgrade.h"
#include "upstream.h"
#include "workers.h"

#define WORKER_RESTART_DELAY	1.	/* s after one died, */
#define WORKER_RESTART_MAX	60.	/* doubled up to this while one */
#define WORKER_RESTART_QUICK	10.	/* dies within this of its start */
#define WORKER_ASK_TIMEOUT	3000	/* ms for the workers' replies, */
#define WORKER_PREPARE_TIMEOUT	7000	/* or to make a reload ready, */
#define WORKER_COMMIT_TIMEOUT	2000	/* then to apply it (qproxyctl
					   waits 10 s in all) */
#define WORKER_HANDOVER_TIMEOUT	1000	/* ms for them to stop reading
					   at an upgrade */

unsigned worker_index, worker_count = 1;

struct worker {
	pid_t		 pid;		/* 0: not running */
	double		 last_ping;
	bool		 pinged;	/* since it started */
	double		 started;
	double		 restart_at;	/* 0: none due */
	double		 restart_delay;	/* the last one's */
	int		 link;		/* this end of its link (upgrade.h) */
};

/* A listener address's sockets, fds[i] worker i's. */
struct group {
	struct addr	 addr;
	int		 fds[WORKERS_MAX];
};

static struct {
	struct group	*groups;
	size_t		 ngroups;
	char		*ctl_path;		/* the supervisor's */
	int		 ctl_fd;
	char		*wctl_paths[WORKERS_MAX];
	int		 wctl_fds[WORKERS_MAX];
	/*
	 * Which of those files this process made, not took from the running
	 * one at an upgrade: removed by a new supervisor that fails too
	 */
	bool		 ctl_made, wctl_made[WORKERS_MAX];
	int		 sigfd;
	int		 ping[2];
	struct worker	 w[WORKERS_MAX];
	bool		 steered[WORKERS_MAX];	/* given their datagrams */
	unsigned long long restarts;
	bool		 ready, stopping;
	int		 status;		/* to exit with */
	sigset_t	 held;
	pid_t		 pid;			/* the supervisor's */
	struct config	*cfg;			/* for a worker started now */
	const struct workers_hooks *hooks;
	double		 watchdog_every, watchdog_next;	/* systemd's */
	struct ev_loop	*loop;
	struct control	*ctl;			/* serves ctl_fd */
	ev_io		 sig_io, ping_io;
	ev_prepare	 prepare;
	ev_timer	 tick, watchdog;
	bool		 forked;		/* a worker, left the loop */
	struct upgrade_keys keys;		/* for an upgrade */
	bool		 handed_over;		/* to a new binary's */
	bool		 own_files;		/* the control sockets' */
	bool		 hold_workers;		/* not to read yet (upgrade.h) */
	size_t		 cid_off;		/* of the byte steered by */
	unsigned long long reloads;		/* the last one's ID */
} sv = { .ctl_fd = -1, .sigfd = -1, .ping = { -1, -1 } };

size_t
workers_cid_offset(const struct config *cfg)
{
	return cid_worker_offset(cfg->cid_sidlen);
}

static struct group *
group_find(const struct addr *a)
{
	for (size_t i = 0; i < sv.ngroups; i++)
		if (addr_equal(&sv.groups[i].addr, a))
			return &sv.groups[i];
	return NULL;
}

/* Closes this process's copies of group k's sockets, and drops it. */
static void
group_drop(size_t k)
{
	for (unsigned j = 0; j < worker_count; j++)
		if (sv.groups[k].fds[j] != -1)
			close(sv.groups[k].fds[j]);
	sv.groups[k] = sv.groups[--sv.ngroups];
}

void
workers_forget_socket(const struct addr *a)
{
	struct group *g = group_find(a);

	if (g != NULL)
		group_drop((size_t)(g - sv.groups));
}

/* After a reload all took: the addresses it dropped are let go. */
static void
groups_keep(const struct config *cfg)
{
	char text[ADDR_STRLEN];
	size_t k = 0;

	while (k < sv.ngroups) {
		bool kept = false;

		for (size_t i = 0; i < cfg->nlisteners && !kept; i++)
			for (size_t j = 0; j < cfg->listeners[i].naddrs; j++)
				if (addr_equal(&cfg->listeners[i].addrs[j],
				    &sv.groups[k].addr))
					kept = true;
		if (kept) {
			k++;
			continue;
		}
		log_info("udp %s: no longer configured; the workers let it go "
		    "once drained", addr_format(&sv.groups[k].addr, text,
		    sizeof(text)));
		group_drop(k);
	}
}

bool
workers_have_socket(const struct addr *a)
{
	return group_find(a) != NULL;
}

/* A copy: the worker closes it when a reload drops the address. */
int
workers_socket(const struct addr *a)
{
	const struct group *g = group_find(a);

	if (g == NULL) {
		errno = EADDRNOTAVAIL;
		return -1;
	}
	return fcntl(g->fds[worker_index], F_DUPFD_CLOEXEC, 0);
}

int
workers_control_fd(const char **path)
{
	*path = sv.wctl_paths[worker_index];
	return sv.wctl_fds[worker_index];
}

void
workers_ping(void)
{
	uint8_t b = (uint8_t)worker_index;

	/* a full pipe drops it: the supervisor is behind, not this one */
	(void)!write(sv.ping[1], &b, 1);
}

/*
 * In the child: keeps what worker i uses and closes the rest; rx is its
 * end of its link.
 */
static void
worker_setup(unsigned i, int rx)
{
	char prefix[32];

	worker_index = i;
	snprintf(prefix, sizeof(prefix), "worker %u: ", i);
	log_set_prefix(prefix);
	close(sv.sigfd);
	if (sv.ctl != NULL) {
		/* no unlink: the file is the supervisor's */
		control_close(sv.ctl);	/* its clients' sockets too */
		sv.ctl = NULL;
	} else
		close(sv.ctl_fd);
	close(sv.ping[0]);
	explicit_bzero(&sv.keys, sizeof(sv.keys));
	for (unsigned j = 0; j < worker_count; j++) {
		if (sv.w[j].link != -1)
			close(sv.w[j].link);
		sv.w[j].link = -1;
		if (j == i)
			continue;
		close(sv.wctl_fds[j]);
		for (size_t g = 0; g < sv.ngroups; g++) {
			close(sv.groups[g].fds[j]);
			sv.groups[g].fds[j] = -1;	/* (group_drop) */
		}
	}
	/* a worker without its supervisor stops, as after SIGTERM */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1 || getppid() != sv.pid)
		fatalx("worker %u: the supervisor is gone", i);
	/* systemd hears from the supervisor, the main process, only */
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	upgrade_worker_start(i, rx, sv.hold_workers);
	if (sigprocmask(SIG_SETMASK, &sv.held, NULL) == -1)
		fatal("sigprocmask");
}

/* Forks worker i: 0 in the child, 1 in the supervisor, -1 on failure. */
static int
worker_start(unsigned i)
{
	int fd, pair[2], sndbuf = 4 << 20;
	pid_t pid;

	/*
	 * Requests the last one took no more of wait on its control socket,
	 * which this process keeps: their clients have gone, and a reload
	 * among them is not the new one's to carry out.
	 */
	while ((fd = accept4(sv.wctl_fds[i], NULL, NULL, SOCK_CLOEXEC)) != -1)
		close(fd);
	/* a new link for each start: the one before's other end is closed */
	if (sv.w[i].link != -1)
		close(sv.w[i].link);
	sv.w[i].link = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) ==
	    -1) {
		log_warn("worker %u: socketpair (no upgrade for it)", i);
		pair[0] = pair[1] = -1;
	} else {
		/* room for a burst of datagrams while the worker is busy */
		(void)setsockopt(pair[1], SOL_SOCKET, SO_SNDBUF, &sndbuf,
		    sizeof(sndbuf));
		sv.w[i].link = pair[1];
	}
	if ((pid = fork()) == -1) {
		log_warn("worker %u: fork", i);
		if (pair[0] != -1)
			close(pair[0]);
		return -1;
	}
	if (pid == 0) {
		worker_setup(i, pair[0]);
		return 0;
	}
	if (pair[0] != -1)
		close(pair[0]);
	sv.w[i].pid = pid;
	sv.w[i].pinged = false;
	sv.w[i].started = sv.w[i].last_ping = mono_now();
	sv.w[i].restart_at = 0.;
	log_debug("worker %u: pid %ld", i, (long)pid);
	return 1;
}

/* systemd's watchdog: taking over, not its main process until ready */
static void
feed_watchdog(void)
{
	if (sv.watchdog_every > 0. && sv.own_files) {
		sd_notify(0, "WATCHDOG=1");
		sv.watchdog_next = mono_now() + sv.watchdog_every;
	}
}

/* The workers' pings since the last look, and systemd's watchdog. */
static void
take_pings(void)
{
	double now = mono_now();
	uint8_t b[256];
	ssize_t n;

	while ((n = read(sv.ping[0], b, sizeof(b))) > 0)
		for (ssize_t k = 0; k < n; k++)
			if (b[k] < worker_count) {
				sv.w[b[k]].pinged = true;
				sv.w[b[k]].last_ping = now;
			}
	if (now >= sv.watchdog_next)
		feed_watchdog();
}

/*
 * A poll's timeout outside the loop, left seconds at most: a second at
 * most too, and none past the watchdog's next feed (take_pings after it).
 */
static int
poll_ms(double left)
{
	double feed = sv.watchdog_next - mono_now();

	if (sv.watchdog_every > 0. && sv.own_files && feed < left)
		left = feed > 0. ? feed : 0.;
	return MIN((int)(left * 1000) + 1, 1000);
}

static void
signal_workers(int sig)
{
	for (unsigned i = 0; i < worker_count; i++)
		if (sv.w[i].pid > 0)
			kill(sv.w[i].pid, sig);
}

static void
sv_cleanup(void)
{
	explicit_bzero(&sv.keys, sizeof(sv.keys));
	/* the running process's, before an upgrade is ready, or after */
	if (sv.ctl_path != NULL && (sv.own_files || sv.ctl_made))
		unlink(sv.ctl_path);
	for (unsigned i = 0; i < worker_count; i++)
		if (sv.wctl_paths[i] != NULL &&
		    (sv.own_files || sv.wctl_made[i]))
			unlink(sv.wctl_paths[i]);
}

static __attribute__((noreturn)) void
sv_exit(int status)
{
	sv_cleanup();
	if (sv.cfg != NULL)
		upgrade_await_elder(sv.cfg->shutdown_timeout + 1);
	log_info("qproxy stopped");
	exit(status);
}

static void
describe_exit(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d",
		    WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "ended");
}

/* Takes the workers that ended; restarts are due a second later. */
static void
reap(void)
{
	struct worker *w;
	char how[64];
	double now;
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		unsigned i;

		for (i = 0; i < worker_count; i++)
			if (sv.w[i].pid == pid)
				break;
		if (i == worker_count) {
			/* the process an upgrade started */
			describe_exit(status, how, sizeof(how));
			if (sv.handed_over)
				log_warnx("upgrade: the new process %ld %s while "
				    "the workers here still served connections",
				    (long)pid, how);
			continue;
		}
		sv.w[i].pid = 0;
		if (sv.stopping)
			continue;
		describe_exit(status, how, sizeof(how));
		if (!sv.ready) {
			log_warnx("worker %u (pid %ld) %s while starting; "
			    "stopping", i, (long)pid, how);
			sv.status = 1;
			sv.stopping = true;
			signal_workers(SIGTERM);
			continue;
		}
		w = &sv.w[i];
		now = mono_now();
		/* one that cannot run is not started a thousand times */
		if (now - w->started < WORKER_RESTART_QUICK &&
		    w->restart_delay > 0.)
			w->restart_delay = MIN(w->restart_delay * 2,
			    WORKER_RESTART_MAX);
		else
			w->restart_delay = WORKER_RESTART_DELAY;
		w->restart_at = now + w->restart_delay;
		log_warnx("worker %u (pid %ld) %s; starting it again in %.0f s",
		    i, (long)pid, how, w->restart_delay);
	}
}

#define ASK_HEAD_MAX	160	/* "OK", "ERR message" */

/* A question to one worker, under way. */
struct asking {
	int		 fd;
	bool		 in_head;
	char		 head[ASK_HEAD_MAX];
	size_t		 hlen;
};

/* Sends line to worker i; the socket, or -1 when it cannot be asked. */
static int
ask_send(unsigned i, const char *line)
{
	struct sockaddr_un sun;
	size_t len = strlen(line);
	int fd;

	/*
	 * One that is starting is asked too: it takes the question once it
	 * serves its socket (which this process made, so the question waits
	 * there meanwhile). Passed over, a reload or disable then was
	 * refused for want of its answer, while the others took it, and it
	 * ran what it was started with, not what they did, until the next.
	 * One that died and is not taken yet would not answer, and its
	 * socket, which this process keeps open for the next, would not
	 * refuse: ask_workers gives up on it once taken.
	 */
	if (sv.w[i].pid == 0)
		return -1;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sv.wctl_paths[i]);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
	    0)) == -1)
		return -1;
	/* a line of 1 KiB fits an empty socket's buffer: no partial write */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    write(fd, line, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Reads what came from a worker: the head line, then the text into out.
 * 1 while more may come, 0 at its end, -1 on an error.
 */
static int
ask_read(struct asking *a, struct strbuf *out)
{
	char buf[16384], *p;
	ssize_t n;

	while ((n = read(a->fd, buf, sizeof(buf))) > 0) {
		for (p = buf; a->in_head && n > 0; p++, n--) {
			if (*p == '\n') {
				a->in_head = false;
				a->head[a->hlen] = '\0';
			} else if (a->hlen + 1 < sizeof(a->head))
				a->head[a->hlen++] = *p;
		}
		strbuf_append(out, p, (size_t)n);
	}
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return 1;
	return n == 0 ? 0 : -1;
}

/* The workers' replies to one request. */
struct answers {
	struct strbuf	 replies[WORKERS_MAX];	/* worker i's text */
	int		 rv[WORKERS_MAX];	/* 0 "OK", 1 "ERR", -1 none */
	bool		 leaving[WORKERS_MAX];	/* "ERR shutting down" */
	/* "ERR reload refused": the command's own no, not its socket's */
	bool		 refused[WORKERS_MAX];
	/*
	 * "OK", its text lost here for want of memory (rv -1): a change
	 * it made all the same
	 */
	bool		 lost[WORKERS_MAX];
	const char	*texts[WORKERS_MAX];	/* the n that said OK, */
	unsigned	 which[WORKERS_MAX];	/* and their numbers */
	size_t		 n;
};

/*
 * A worker's reply, whole: its end line (control.h: the workers are asked
 * in QPROXY/2) taken off the text. false for an OK cut short, whose text
 * is not all the worker said.
 */
static bool
ask_whole(struct strbuf *text, bool ok)
{
	char why[64];
	size_t len = text->len;
	int rv;

	rv = control_end(strbuf_str(text), &len, why, sizeof(why));
	if (text->s != NULL) {
		text->len = len;
		text->s[len] = '\0';
	}
	return !ok || rv == 1;
}

/*
 * Asks every running worker the request line (QPROXY/2) at once, or those
 * of them that which says (NULL: all), and takes their replies until the
 * deadline: each one's text (after its first line, before its end line)
 * and how it began, then those that said OK and came whole, in order.
 * Pings and signals wait meanwhile; the watchdog does not. answers_free
 * frees what it holds.
 */
static void
ask_some(struct answers *ans, const char *line, int timeout_ms,
    const bool *which)
{
	struct strbuf *replies = ans->replies;
	int *rv = ans->rv;
	struct asking a[WORKERS_MAX];
	struct pollfd pfd[WORKERS_MAX];
	double deadline = mono_now() + timeout_ms / 1000.;
	unsigned i, pending = 0;

	reap();
	for (i = 0; i < worker_count; i++) {
		strbuf_init(&replies[i], control_reply_max());
		rv[i] = -1;
		ans->leaving[i] = ans->lost[i] = ans->refused[i] = false;
		a[i].in_head = true;
		a[i].hlen = 0;
		a[i].fd = -1;
		if ((which == NULL || which[i]) &&
		    (a[i].fd = ask_send(i, line)) != -1)
			pending++;
	}
	while (pending > 0) {
		double left = deadline - mono_now();
		unsigned n = 0, map[WORKERS_MAX];

		if (left <= 0.)
			break;
		for (i = 0; i < worker_count; i++)
			if (a[i].fd != -1) {
				pfd[n] = (struct pollfd){ a[i].fd, POLLIN, 0 };
				map[n++] = i;
			}
		if (poll(pfd, n, poll_ms(left)) == -1 && errno != EINTR)
			break;
		take_pings();
		for (unsigned k = 0; k < n; k++) {
			int r;

			if (pfd[k].revents == 0)
				continue;
			i = map[k];
			if ((r = ask_read(&a[i], &replies[i])) == 1)
				continue;
			if (r == 0 && !a[i].in_head) {
				/* a word, as a ping is: its reload may have
				   held its loop longer than worker_timeout */
				sv.w[i].pinged = true;
				sv.w[i].last_ping = mono_now();
				rv[i] = strcmp(a[i].head, "OK") == 0 ? 0 :
				    strncmp(a[i].head, "ERR ", 4) == 0 ? 1 : -1;
				ans->leaving[i] = strcmp(a[i].head,
				    "ERR shutting down") == 0;
				ans->refused[i] = strncmp(a[i].head,
				    "ERR reload refused", 18) == 0;
				if (replies[i].nomem)
					ans->lost[i] = rv[i] == 0;
				else if (!ask_whole(&replies[i], rv[i] == 0)) {
					log_warnx("worker %u: its reply to "
					    "\"%s\" was cut short", i, line);
					rv[i] = -1;
				}
			}
			close(a[i].fd);
			a[i].fd = -1;
			pending--;
		}
		/* one that ended (a worker starting, killed) will not answer */
		reap();
		for (i = 0; i < worker_count; i++)
			if (a[i].fd != -1 && sv.w[i].pid == 0) {
				close(a[i].fd);
				a[i].fd = -1;
				pending--;
			}
	}
	for (i = 0; i < worker_count; i++) {
		if (a[i].fd != -1) {
			close(a[i].fd);
			log_debug("worker %u: no answer to \"%s\"", i, line);
		}
		if (replies[i].nomem)
			log_warnx("worker %u: its reply to \"%s\" did not "
			    "fit in memory", i, line);
		if (replies[i].truncated || replies[i].nomem)
			rv[i] = -1;
	}
	ans->n = 0;
	for (i = 0; i < worker_count; i++)
		if (rv[i] == 0) {
			ans->texts[ans->n] = strbuf_str(&replies[i]);
			ans->which[ans->n++] = i;
		}
}

static void
ask_workers(struct answers *ans, const char *line, int timeout_ms)
{
	ask_some(ans, line, timeout_ms, NULL);
}

static void
answers_free(struct answers *ans)
{
	for (unsigned i = 0; i < worker_count; i++)
		strbuf_free(&ans->replies[i]);
}

/* The workers' texts one after the other, each under its number. */
static void
each_worker(struct strbuf *out, bool json, const char **texts,
    const unsigned *which, size_t n)
{
	if (json)
		strbuf_printf(out, "{\"workers\":[");
	for (size_t k = 0; k < n; k++) {
		size_t len = strlen(texts[k]);

		while (len > 0 && texts[k][len - 1] == '\n')
			len--;
		if (json)
			strbuf_printf(out, "%s{\"worker\":%u,\"reply\":%.*s}",
			    k > 0 ? "," : "", which[k], (int)len, texts[k]);
		else
			strbuf_printf(out, "%sworker %u\n%.*s\n",
			    k > 0 ? "\n" : "", which[k], (int)len, texts[k]);
	}
	if (json)
		strbuf_printf(out, "]}\n");
}

/*
 * stats and backends: the workers' replies merged, counts added up, with
 * the workers' own line first for stats. Replies that do not merge (a
 * reload half done) are shown each under its worker's number.
 */
static void
cmd_merged(struct strbuf *out, const char *line, bool json, bool head)
{
	struct answers a;
	struct strbuf merged;
	unsigned running = 0;
	size_t n;

	ask_workers(&a, line, WORKER_ASK_TIMEOUT);
	n = a.n;
	for (unsigned i = 0; i < worker_count; i++)
		running += sv.w[i].pid > 0;
	strbuf_init(&merged, control_reply_max());
	if (n > 0 && merge_replies(a.texts, n, &merged) == 0) {
		const char *m = strbuf_str(&merged);

		if (head && json && m[0] == '{')
			strbuf_printf(out, "{\"workers\":{\"count\":%u,"
			    "\"running\":%u,\"answered\":%zu,\"restarts\":%llu},"
			    "%s", worker_count, running, n, sv.restarts, m + 1);
		else if (head)
			strbuf_printf(out, "%-12s count %u, running %u, "
			    "answered %zu, restarts %llu\n%s", "workers",
			    worker_count, running, n, sv.restarts, m);
		else
			strbuf_printf(out, "%s", m);
	} else
		each_worker(out, json, a.texts, a.which, n);
	out->nomem |= merged.nomem;
	strbuf_free(&merged);
	answers_free(&a);
}

/*
 * metrics: the workers' merged as stats are, after the supervisor's own.
 * Replies of another shape (a reload under way) leave theirs out: a
 * scrape then has the supervisor's only, rather than figures of part of
 * the workers.
 */
static void
cmd_metrics(struct strbuf *out, const char *line)
{
	struct answers a;
	struct strbuf merged;
	unsigned running = 0;

	ask_workers(&a, line, WORKER_ASK_TIMEOUT);
	for (unsigned i = 0; i < worker_count; i++)
		running += sv.w[i].pid > 0;
	strbuf_printf(out, "# TYPE qproxy_workers gauge\nqproxy_workers %u\n"
	    "# TYPE qproxy_workers_running gauge\nqproxy_workers_running %u\n"
	    "# TYPE qproxy_workers_answered gauge\n"
	    "qproxy_workers_answered %zu\n"
	    "# TYPE qproxy_workers_restarts_total counter\n"
	    "qproxy_workers_restarts_total %llu\n", worker_count, running,
	    a.n, sv.restarts);
	strbuf_init(&merged, control_reply_max());
	if (a.n > 0 && merge_replies(a.texts, a.n, &merged) == 0)
		strbuf_printf(out, "%s", strbuf_str(&merged));
	else if (a.n > 0)
		strbuf_printf(out, "# the workers' replies differ (a reload "
		    "under way?): their counters are left out\n");
	out->nomem |= merged.nomem;
	strbuf_free(&merged);
	answers_free(&a);
}

/*
 * conns: every worker's rows, under the first one's heading or in one JSON
 * list, relayed a piece at a time as the client takes them (control.h's
 * stream), in bounded memory. The workers are asked one after the other,
 * each once the one before has answered whole: a reply left waiting while
 * the others' were sent could outlast the time a worker gives it
 * (CONTROL_TIMEOUT). Each has WORKER_ASK_TIMEOUT, as ask_workers gives,
 * from its last byte (a client that takes a long reply slowly holds up
 * the reads); pings and signals wait meanwhile. A worker's reply is whole once its end
 * line came (QPROXY/2). One that says ERR, or does not answer, or breaks
 * off before any of its rows is out, is left out, and the reply ends with
 * "CUT" and which (control.h); one whose reply breaks off once some of it
 * is out cuts the whole reply there, "CUT" too.
 */
#define CONNS_LIST	"{\"connections\":["
#define CONNS_END	"]}\n"

struct conns_relay {
	char		 line[64];	/* the question */
	bool		 json;
	unsigned	 next;		/* the worker to ask next */
	unsigned	 i;		/* the one asked, */
	struct asking	 a;		/* its socket (-1 between two) */
	double		 deadline;	/* and when it is given up */
					/* (its last byte's time on) */
	bool		 begun;		/* the reply's first piece is out */
	bool		 heading;	/* text: a heading is out */
	bool		 rows;		/* JSON: a row is out */
	/* of the worker asked, after its head line */
	bool		 refused;	/* dropped: not OK, not a list */
	bool		 skipping;	/* text: in its heading, dropped */
	size_t		 matched;	/* JSON: of CONNS_LIST */
	bool		 passed;	/* some of its text is out */
	char		 last;		/* text: its last byte out */
	char		 tail[sizeof(CONNS_END) - 1];	/* JSON: held back */
	size_t		 ntail;
	char		 end[64];	/* its end line, from its NUL on */
	size_t		 nend;
	char		 why[256];	/* the workers left out, and why */
};

/* Worker i is left out of the reply, or cut it short: said at its end. */
static void
relay_missing(struct conns_relay *r, unsigned i, const char *what)
{
	size_t len = strlen(r->why);

	log_warnx("worker %u: conns: %s", i, what);
	snprintf(r->why + len, sizeof(r->why) - len, "%sworker %u: %s",
	    len > 0 ? "; " : "", i, what);
}

/* Asks the next worker; false when none is left. */
static bool
relay_ask(struct conns_relay *r)
{
	int fd;

	while (r->next < worker_count) {
		r->i = r->next++;
		if ((fd = ask_send(r->i, r->line)) == -1) {
			/* one not running has no connections */
			if (sv.w[r->i].pid != 0)
				relay_missing(r, r->i, "not asked");
			continue;
		}
		r->a.fd = fd;
		r->a.in_head = true;
		r->a.hlen = 0;
		r->deadline = mono_now() + WORKER_ASK_TIMEOUT / 1000.;
		r->refused = r->skipping = r->passed = false;
		r->matched = r->ntail = r->nend = 0;
		r->last = '\n';
		return true;
	}
	return false;
}

/* The JSON rows of n bytes of a worker's list, in out. */
static void
relay_rows(struct conns_relay *r, const char *p, size_t n,
    struct strbuf *out)
{
	if (n == 0)
		return;
	if (!r->passed) {
		if (r->rows)
			strbuf_append(out, ",", 1);
		r->passed = r->rows = true;
	}
	strbuf_append(out, p, n);
}

/* What came from the worker asked, after its head line, into out. */
static void
relay_take(struct conns_relay *r, const char *p, size_t n,
    struct strbuf *out)
{
	const size_t listlen = sizeof(CONNS_LIST) - 1;
	const size_t hold = sizeof(r->tail);
	const char *nl, *end;
	size_t k;

	/* its text has no NUL: the first begins its end line, kept aside */
	if (r->nend == 0 && (end = memchr(p, '\0', n)) != NULL) {
		k = n - (size_t)(end - p);
		n = (size_t)(end - p);
		memcpy(r->end, end, MIN(k, sizeof(r->end)));
		r->nend = k;
	} else if (r->nend > 0) {
		if (r->nend < sizeof(r->end))
			memcpy(r->end + r->nend, p, MIN(n, sizeof(r->end) -
			    r->nend));
		r->nend += n;
		return;
	}
	if (r->refused || n == 0)
		return;
	if (!r->json) {
		if (r->skipping) {
			if ((nl = memchr(p, '\n', n)) == NULL)
				return;
			r->skipping = false;
			n -= (size_t)(nl + 1 - p);
			p = nl + 1;
			if (n == 0)
				return;
		}
		strbuf_append(out, p, n);
		r->passed = true;
		r->last = p[n - 1];
		return;
	}
	/* {"connections":[ ROWS ]}\n: the rows, the list's end held back */
	for (; r->matched < listlen && n > 0; r->matched++, p++, n--)
		if (*p != CONNS_LIST[r->matched]) {
			snprintf(r->a.head, sizeof(r->a.head), "not a list");
			r->refused = true;
			return;
		}
	if (r->ntail + n <= hold) {
		memcpy(r->tail + r->ntail, p, n);
		r->ntail += n;
		return;
	}
	/* out go the bytes held and those of p but its last hold */
	k = r->ntail + n - hold;	/* bytes to pass */
	if (k <= r->ntail) {
		relay_rows(r, r->tail, k, out);
		memmove(r->tail, r->tail + k, r->ntail - k);
		r->ntail -= k;
	} else {
		relay_rows(r, r->tail, r->ntail, out);
		relay_rows(r, p, k - r->ntail, out);
		p += k - r->ntail;
		n -= k - r->ntail;
		r->ntail = 0;
	}
	memcpy(r->tail + r->ntail, p, n);
	r->ntail += n;
}

/*
 * The worker asked is done with: its reply came to its EOF (eof), or it
 * is given up on. -1 when what of it is out is not whole (the reply is
 * cut there).
 */
static int
relay_worker_end(struct conns_relay *r, bool eof)
{
	char why[sizeof(r->end)], what[sizeof(why) + 32];
	size_t len = MIN(r->nend, sizeof(r->end));
	bool ended;
	int rv = -1;

	close(r->a.fd);
	r->a.fd = -1;
	if (eof && r->nend <= sizeof(r->end))
		rv = control_end(r->end, &len, why, sizeof(why));
	if (r->a.in_head)
		snprintf(what, sizeof(what), "no answer");
	else if (rv == 0)
		snprintf(what, sizeof(what), "%s", why);
	else
		snprintf(what, sizeof(what), "its reply broke off");
	if (r->refused) {
		relay_missing(r, r->i, r->a.head);
		return 0;
	}
	if (r->json)
		ended = r->matched == sizeof(CONNS_LIST) - 1 &&
		    r->ntail == sizeof(r->tail) &&
		    memcmp(r->tail, CONNS_END, sizeof(r->tail)) == 0;
	else
		ended = r->last == '\n';
	if (rv == 1 && ended)
		return 0;
	relay_missing(r, r->i, what);
	return r->passed ? -1 : 0;
}

/* The head line of the worker asked came: its reply is taken, or not. */
static void
relay_head(struct conns_relay *r)
{
	if (strcmp(r->a.head, "OK") != 0) {
		/* "ERR why": why, said at the end */
		if (strncmp(r->a.head, "ERR ", 4) == 0)
			memmove(r->a.head, r->a.head + 4,
			    strlen(r->a.head + 4) + 1);
		r->refused = true;
		return;
	}
	if (!r->json) {
		r->skipping = r->heading;
		r->heading = true;
	}
}

static int
relay_next(struct strbuf *out, const char **why, void *arg)
{
	struct conns_relay *r = arg;
	char buf[CONTROL_CHUNK], *p;
	struct pollfd pfd;
	double left;
	ssize_t n;

	if (!r->begun) {
		if (r->json)
			strbuf_printf(out, "%s", CONNS_LIST);
		r->begun = true;
	}
	while (out->len < CONTROL_CHUNK) {
		if (r->a.fd == -1) {
			if (relay_ask(r))
				continue;
			if (r->json)
				strbuf_printf(out, "%s", CONNS_END);
			if (r->why[0] != '\0')
				*why = r->why;
			return 0;
		}
		if ((n = read(r->a.fd, buf, sizeof(buf))) > 0) {
			r->deadline = mono_now() + WORKER_ASK_TIMEOUT / 1000.;
			for (p = buf; r->a.in_head && n > 0; p++, n--) {
				if (*p == '\n') {
					r->a.in_head = false;
					r->a.head[r->a.hlen] = '\0';
					relay_head(r);
				} else if (r->a.hlen + 1 < sizeof(r->a.head))
					r->a.head[r->a.hlen++] = *p;
			}
			relay_take(r, p, (size_t)n, out);
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN) {
			/* what there is goes first */
			if (out->len > 0)
				return 1;
			left = r->deadline - mono_now();
			/* one that ended (killed, say) will not answer */
			reap();
			if (left > 0. && sv.w[r->i].pid != 0) {
				pfd = (struct pollfd){ r->a.fd, POLLIN, 0 };
				if (poll(&pfd, 1, poll_ms(left)) == -1 &&
				    errno != EINTR)
					return -1;
				take_pings();
				continue;
			}
			n = -1;
		}
		if (relay_worker_end(r, n == 0) == -1) {
			*why = r->why;
			return -1;
		}
	}
	return 1;
}

static void
relay_done(void *arg)
{
	struct conns_relay *r = arg;

	if (r->a.fd != -1)
		close(r->a.fd);
	free(r);
}

/* tls: the first worker's, the same in all. */
static void
cmd_tls(struct strbuf *out, const char *line, bool json)
{
	struct answers a;

	ask_workers(&a, line, WORKER_ASK_TIMEOUT);
	if (a.n > 0)
		strbuf_printf(out, "%s", a.texts[0]);
	else if (json)
		strbuf_printf(out, "{\"certificates\":[]}\n");
	answers_free(&a);
}

static int
peer_cmp(const void *a, const void *b)
{
	const struct peer_row *x = a, *y = b;

	if (x->conns != y->conns)
		return x->conns > y->conns ? -1 : 1;
	return strcmp(x->client, y->client);
}

/*
 * Adds the rows of a worker's "peers json" reply, {"clients":N,"limit":L,
 * "top":[{"client":"...","connections":C,"proven":P},...]}, to rows[], a
 * client's counts to its row.
 */
static void
peers_add(const char *t, struct peer_row *rows, size_t *n, size_t max,
    size_t *clients, unsigned long long *limit)
{
	const char *p;
	size_t c;

	if ((p = strstr(t, "\"clients\":")) != NULL &&
	    sscanf(p, "\"clients\":%zu,\"limit\":%llu", &c, limit) == 2)
		*clients += c;
	for (p = t; (p = strstr(p, "{\"client\":\"")) != NULL; ) {
		struct peer_row r;
		size_t len, i;

		p += 11;
		len = strcspn(p, "\"");
		if (len >= sizeof(r.client) || sscanf(p + len,
		    "\",\"connections\":%u,\"proven\":%u", &r.conns,
		    &r.proven) != 2)
			continue;
		memcpy(r.client, p, len);
		r.client[len] = '\0';
		for (i = 0; i < *n; i++)
			if (strcmp(rows[i].client, r.client) == 0)
				break;
		if (i < *n) {
			rows[i].conns += r.conns;
			rows[i].proven += r.proven;
		} else if (*n < max)
			rows[(*n)++] = r;
	}
}

/*
 * peers: the workers' lists as one, a client's connections in every
 * worker added up. A client is in a worker's list when it is among that
 * worker's QUIC_PEERS_SHOWN: one with few in each of many may be missed,
 * and clients counts a client once per worker it has connections in.
 */
static void
cmd_peers(struct strbuf *out, bool json)
{
	static struct peer_row rows[WORKERS_MAX * QUIC_PEERS_SHOWN];
	struct answers a;
	unsigned long long limit = 0;
	size_t nrows = 0, clients = 0;

	ask_workers(&a, CONTROL_MAGIC_END " peers json", WORKER_ASK_TIMEOUT);
	for (size_t k = 0; k < a.n; k++)
		peers_add(a.texts[k], rows, &nrows,
		    sizeof(rows) / sizeof(rows[0]), &clients, &limit);
	qsort(rows, nrows, sizeof(rows[0]), peer_cmp);
	quic_render_peers(out, json, clients, limit, rows,
	    MIN(nrows, QUIC_PEERS_SHOWN));
	answers_free(&a);
}

/*
 * Every running worker lets reload id go. Its answer is not awaited: one
 * stopped, or slow, takes the question once it goes on (before or after
 * the prepare it has yet to take: either way it holds nothing), and one
 * it never reaches lets the reload go RELOAD_HOLD_TIME (main.c) later.
 */
static void
abort_workers(unsigned long long id)
{
	char line[64];
	int fd;

	snprintf(line, sizeof(line), "%s reload abort %llu",
	    CONTROL_MAGIC_END, id);
	for (unsigned i = 0; i < worker_count; i++)
		if ((fd = ask_send(i, line)) != -1)
			close(fd);
}

/*
 * Worker i did not say it applied the reload: see commit_workers. Whether
 * it was killed.
 */
static bool
commit_failed(unsigned i, const char *why, struct strbuf *out)
{
	if (sv.w[i].pid <= 0)	/* ended: it starts again with it */
		return false;
	log_warnx("worker %u (pid %ld): the reload not applied (%s); killing "
	    "it, to start it again with the configuration the others took",
	    i, (long)sv.w[i].pid, why);
	strbuf_printf(out, "worker %u: did not apply it (%s); started again, "
	    "it runs this configuration\n", i, why);
	kill(sv.w[i].pid, SIGKILL);
	return true;
}

/*
 * Each worker that made reload id ready (left) applies it, which cannot
 * fail there; one whose answer does not come (the question or the answer
 * lost, for want of memory, say) is asked again, up to
 * WORKER_COMMIT_TIMEOUT. One that has not said it applied it by then, or
 * says it does not hold it, is killed: started again, it runs the file
 * the others run, where it would have gone on with the one before. One
 * that ends meanwhile starts again with it too. How many were killed.
 */
static unsigned
commit_workers(unsigned long long id, bool *left, struct strbuf *out)
{
	double deadline = mono_now() + WORKER_COMMIT_TIMEOUT / 1000.;
	struct answers a;
	char line[64];
	unsigned killed = 0;
	bool more;
	int ms;

	snprintf(line, sizeof(line), "%s reload commit %llu",
	    CONTROL_MAGIC_END, id);
	for (;;) {
		more = false;
		for (unsigned i = 0; i < worker_count; i++) {
			left[i] &= sv.w[i].pid > 0;
			more |= left[i];
		}
		ms = (int)((deadline - mono_now()) * 1000.);
		if (!more || ms <= 0)
			break;
		ask_some(&a, line, ms, left);
		more = false;
		for (unsigned i = 0; i < worker_count; i++) {
			if (!left[i])
				continue;
			if (a.rv[i] == 0 || a.lost[i] || a.leaving[i])
				left[i] = false;
			else if (a.refused[i]) {
				killed += commit_failed(i,
				    "it no longer held it", out);
				left[i] = false;
			}
			more |= left[i];
		}
		answers_free(&a);
		/* a moment before asking again ("ERR busy", say) */
		if (more)
			(void)poll(NULL, 0, 50);
	}
	for (unsigned i = 0; i < worker_count; i++)
		if (left[i])
			killed += commit_failed(i, "no answer", out);
	return killed;
}

/*
 * reload: every worker takes the file, or none does. The supervisor reads
 * it first, and refuses it, with its errors, when it cannot (the workers
 * are not asked). Then every worker is asked at once to make it ready,
 * "reload prepare ID" (main.c: the file read, its certificates, log files
 * and sockets; all that can fail), and holds it. When one refused or did
 * not answer, every worker is told to let it go, "reload abort ID", and
 * the reload is refused: taken by some, it left the workers on two
 * configurations. Else the file is what a worker started from now on
 * runs, with its log files, and each worker that made it ready is told to
 * apply it, "reload commit ID".
 */
static bool
reload_workers(struct strbuf *out)
{
	struct answers a;
	struct config *cfg;
	char line[64];
	bool ok = true, moved, ready[WORKERS_MAX];
	unsigned long long id;
	unsigned killed;

	/*
	 * Read after the workers took it, the file could fail here (out of
	 * memory): the reload was said taken, and a worker started later
	 * ran the configuration before.
	 */
	if ((cfg = sv.hooks->load(out)) == NULL) {
		log_info("reload: refused by the supervisor");
		return false;
	}
	id = ++sv.reloads;
	log_info("reload: asking the %u workers to make it ready (reload "
	    "%llu)", worker_count, id);
	/* what it read: a worker that reads another text refuses it */
	snprintf(line, sizeof(line), "%s reload prepare %llu %016llx",
	    CONTROL_MAGIC_END, id, (unsigned long long)cfg->digest);
	ask_workers(&a, line, WORKER_PREPARE_TIMEOUT);
	/*
	 * One not running (it died, and waits to start again) starts with
	 * the supervisor's configuration: this one, if the others take it;
	 * one leaving (SIGTERM) is started again likewise. A worker whose
	 * OK was lost here (out of memory) made it ready.
	 */
	for (unsigned i = 0; i < worker_count; i++) {
		ready[i] = a.rv[i] == 0 || a.lost[i];
		if (!ready[i] && sv.w[i].pid > 0 && !a.leaving[i])
			ok = false;
	}
	for (unsigned i = 0; i < worker_count; i++) {
		const char *t = strbuf_str(&a.replies[i]);

		if (a.lost[i])
			out->nomem = true;
		else if (a.rv[i] != 0 && sv.w[i].pid <= 0)
			strbuf_printf(out, "worker %u: not running%s\n", i,
			    ok ? "; it starts with this configuration" : "");
		else if (a.leaving[i])
			strbuf_printf(out, "worker %u: shutting down%s\n", i,
			    ok ? "; the one started after it runs this "
			    "configuration" : "");
		else if (a.rv[i] == -1)
			strbuf_printf(out, "worker %u: no answer\n", i);
		else if (i == 0 || strcmp(t, strbuf_str(&a.replies[0])) != 0)
			/* the workers read the same file: the same is said once */
			strbuf_printf(out, "%s", t);
	}
	answers_free(&a);
	if (!ok) {
		abort_workers(id);
		sv.hooks->loaded(cfg, false);
		log_info("reload: refused by a worker; see its lines; none "
		    "took it");
		return false;
	}
	/* from here, a worker started again (one that ends now) runs it */
	sv.hooks->loaded(cfg, true);
	moved = state_moved(sv.cfg, cfg);
	sv.hooks->free(sv.cfg);
	sv.cfg = cfg;
	groups_keep(cfg);
	if (moved)	/* a new state_file has the list at once */
		state_keep(cfg, NULL);
	if ((killed = commit_workers(id, ready, out)) > 0)
		log_info("reload: every worker took the configuration, %u "
		    "of them started again with it", killed);
	else
		log_info("reload: every worker took the configuration");
	return true;
}

void
workers_notify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL);
}

/*
 * systemd hears of it as of a lone process's, once told of the start
 * (not before every worker is up: READY=1 would tell it too soon).
 */
static bool
cmd_reload(struct strbuf *out)
{
	bool told = sv.ready && sv.own_files, ok;

	if (told)
		workers_notify_reloading();
	ok = reload_workers(out);
	if (told)
		sd_notify(0, "READY=1");
	return ok;
}

/*
 * disable and enable: for a server of the configuration, every worker's,
 * then the supervisor's own list, which workers started later inherit.
 * NULL, or why it was refused.
 */
static const char *
cmd_set_server(struct strbuf *out, const char *line, const char *args,
    bool on)
{
	static char why[256];
	struct answers a;
	const char *server, *bad;
	char backend[128];
	bool ok = true, took, was;

	if ((bad = upstream_check_args(sv.cfg, args, on, backend,
	    sizeof(backend), &server)) != NULL)
		return bad;
	/*
	 * A server disabled goes in the supervisor's list first, where it
	 * may find no memory: after the workers took it, a worker started
	 * later, and state_file, missed it.
	 */
	was = upstream_disabled(backend, server);
	if (!on && upstream_set_disabled(backend, server, true) == -1)
		return "out of memory";
	ask_workers(&a, line, WORKER_ASK_TIMEOUT);
	took = a.n > 0;
	/*
	 * One not running now starts with the supervisor's list; one whose
	 * answer was lost here for want of memory took it.
	 */
	for (unsigned w = 0; w < worker_count; w++) {
		if (a.lost[w])
			out->nomem = took = true;
		else if (a.rv[w] != 0 && sv.w[w].pid > 0 && ok) {
			snprintf(why, sizeof(why), "worker %u: %s", w,
			    a.rv[w] == -1 ? "no answer" : "refused");
			ok = false;
		}
	}
	/*
	 * Kept when any worker took it, even if one did not answer: that
	 * one may still take it, and one started later must (refused, the
	 * list and state_file missed what the others did).
	 */
	if (ok || took) {
		if (on)		/* never fails */
			(void)upstream_set_disabled(backend, server, false);
		if (a.n > 0)
			strbuf_printf(out, "%s", a.texts[0]);
		else
			strbuf_printf(out, "backend %s: server %s %s\n",
			    backend, server, on ? "enabled" : "disabled");
		state_keep(sv.cfg, out);
	} else if (!on && !was)
		(void)upstream_set_disabled(backend, server, false);
	answers_free(&a);
	return ok ? NULL : why;
}

/* What is asked of the workers for a command of qproxyctl's. */
static const char *
fwd_line(const char *cmd, bool json)
{
	static char line[64];

	snprintf(line, sizeof(line), "%s %s%s", CONTROL_MAGIC_END, cmd,
	    json ? " json" : "");
	return line;
}

static void
op_stats(struct strbuf *out, bool json, void *arg)
{
	cmd_merged(out, fwd_line("stats", json), json, true);
}

static void
op_backends(struct strbuf *out, bool json, void *arg)
{
	cmd_merged(out, fwd_line("backends", json), json, false);
}

static void
op_routes(struct strbuf *out, bool json, void *arg)
{
	cmd_merged(out, fwd_line("routes", json), json, false);
}

static void
op_metrics(struct strbuf *out, bool json, void *arg)
{
	cmd_metrics(out, fwd_line("metrics", json));
}

static int
op_conns(struct control_stream *st, bool json, const char **err, void *arg)
{
	struct conns_relay *r;

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		*err = "out of memory";
		return -1;
	}
	snprintf(r->line, sizeof(r->line), "%s", fwd_line("conns", json));
	r->json = json;
	r->a.fd = -1;
	st->next = relay_next;
	st->done = relay_done;
	st->state = r;
	return 0;
}

static void
op_tls(struct strbuf *out, bool json, void *arg)
{
	cmd_tls(out, fwd_line("tls", json), json);
}

static void
op_peers(struct strbuf *out, bool json, void *arg)
{
	cmd_peers(out, json);
}

static void
op_version(struct strbuf *out, bool json, void *arg)
{
	if (json)
		strbuf_printf(out, "{\"version\":\"%s\",\"workers\":%u}\n",
		    QPROXY_VERSION, worker_count);
	else
		strbuf_printf(out, "qproxy %s (%u workers)\n", QPROXY_VERSION,
		    worker_count);
}

static int
op_reload(struct strbuf *out, void *arg)
{
	if (sv.stopping) {
		log_warnx("reload refused: shutting down");
		return CONTROL_RELOAD_STOPPING;
	}
	return cmd_reload(out) ? 0 : -1;
}

/*
 * qproxyctl upgrade (upgrade.h) with workers. The new supervisor is given
 * each group of sockets in worker order, so that its worker i reads the
 * socket worker i read, and each worker's link: the new worker i passes
 * the old worker i the datagrams of its connections. Once the new workers
 * all run, each old one is told to stop reading, and drains; this process
 * exits when they have, restarting none, and its files are the new one's.
 */
static int
op_upgrade(struct strbuf *out, void *arg)
{
	int *udp, links[WORKERS_MAX], link;
	struct upgrade_fds fds;
	unsigned told, running = 0;
	size_t n = 0;
	pid_t pid;
	int rv;

	if (sv.stopping) {
		strbuf_printf(out, "shutting down\n");
		return -1;
	}
	if (sv.ngroups > UPGRADE_ADDRS_MAX) {
		strbuf_printf(out, "more than %d listening addresses\n",
		    UPGRADE_ADDRS_MAX);
		return -1;
	}
	if ((udp = calloc(sv.ngroups * worker_count + 1, sizeof(*udp))) ==
	    NULL) {
		strbuf_printf(out, "out of memory\n");
		return -1;
	}
	for (size_t k = 0; k < sv.ngroups; k++)
		for (unsigned i = 0; i < worker_count; i++)
			udp[n++] = sv.groups[k].fds[i];
	for (unsigned i = 0; i < worker_count; i++) {
		links[i] = sv.w[i].link;
		running += sv.w[i].pid > 0;
	}
	memset(&fds, 0, sizeof(fds));
	fds.control = sv.ctl_fd;
	fds.udp = udp;
	fds.nudp = n;
	fds.workers = worker_count;
	fds.worker_control = sv.wctl_fds;
	fds.worker_link = links;
	fds.cid_off = sv.cid_off;
	rv = upgrade_spawn(&fds, &sv.keys, &pid, &link, out);
	free(udp);
	if (rv == -1) {
		log_warnx("upgrade refused: %.*s",
		    (int)strcspn(strbuf_str(out), "\n"), strbuf_str(out));
		return -1;
	}
	for (unsigned i = 0; i < worker_count; i++)
		if (sv.w[i].pid <= 0)
			links[i] = -1;
	/* the new worker i reads once the one here has stopped */
	told = upgrade_tell_workers(links, worker_count,
	    WORKER_HANDOVER_TIMEOUT, link);
	/* the workers' links carry the datagrams; this one, reopens */
	upgrade_supervisor_handed_over(sv.loop, link);
	/* their other ends' close is the old workers' word of the new end */
	for (unsigned i = 0; i < worker_count; i++) {
		if (sv.w[i].link != -1)
			close(sv.w[i].link);
		sv.w[i].link = -1;
	}
	control_disown(sv.ctl);
	sv.own_files = false;
	/* the new supervisor took the files it did not make anew */
	sv.ctl_made = false;
	memset(sv.wctl_made, 0, sizeof(sv.wctl_made));
	sv.handed_over = true;
	sv.stopping = true;	/* none started again; exits after the last */
	sv.watchdog_every = 0.;
	explicit_bzero(&sv.keys, sizeof(sv.keys));
	log_info("upgrade: process %d serves new connections; %u of %u "
	    "workers here drain for at most %.0f s", (int)pid, told, running,
	    sv.cfg->shutdown_timeout);
	strbuf_printf(out, "process %d took over; the %u workers of process "
	    "%d drain their connections for at most %.0f s\n", (int)pid,
	    told, (int)getpid(), sv.cfg->shutdown_timeout);
	return 0;
}

static int
op_set_server(struct strbuf *out, const char *args, bool on, void *arg)
{
	char fwd[CONTROL_MAX_LINE + 16];
	const char *why;

	snprintf(fwd, sizeof(fwd), "%s %s %s", CONTROL_MAGIC_END,
	    on ? "enable" : "disable", args);
	if ((why = cmd_set_server(out, fwd, args, on)) == NULL)
		return 0;
	/* the reply is "ERR why", whatever the workers said */
	strbuf_clear(out);
	strbuf_printf(out, "%s", why);
	return -1;
}

/* Each line of text into out, after its prefix. */
static void
put_lines(struct strbuf *out, const char *prefix, const char *text)
{
	size_t len;

	for (; *text != '\0'; text += len + (text[len] == '\n')) {
		len = strcspn(text, "\n");
		strbuf_printf(out, "%s%.*s\n", prefix, (int)len, text);
	}
}

/*
 * reopen: the supervisor's log files, then every running worker's (one
 * not running opens them when it starts again). The failures are said
 * under who had them. After an upgrade, the supervisor and workers before
 * are told by the ones here, as they drain.
 */
static int
op_reopen(struct strbuf *out, void *arg)
{
	struct answers a;
	struct strbuf own;
	char who[32];
	bool ok;

	upgrade_reopen();
	strbuf_init(&own, CONTROL_MAX_REPLY);
	ok = log_reopen(&own) == 0;
	put_lines(out, "supervisor: ", strbuf_str(&own));
	out->nomem |= own.nomem;
	strbuf_free(&own);
	ask_workers(&a, CONTROL_MAGIC_END " reopen", WORKER_ASK_TIMEOUT);
	for (unsigned i = 0; i < worker_count; i++) {
		/* reopened; what it said is lost (out of memory) */
		if (a.lost[i])
			out->nomem = true;
		if (a.rv[i] == 0 || sv.w[i].pid <= 0 || a.leaving[i] ||
		    a.lost[i])
			continue;
		ok = false;
		snprintf(who, sizeof(who), "worker %u: ", i);
		put_lines(out, who, a.rv[i] == -1 ? "no answer" :
		    strbuf_str(&a.replies[i]));
	}
	answers_free(&a);
	if (ok)
		log_info("log files reopened");
	return ok ? 0 : -1;
}

static const struct control_ops sv_ops = {
	.stats = op_stats,
	.conns = op_conns,
	.peers = op_peers,
	.tls = op_tls,
	.backends = op_backends,
	.routes = op_routes,
	.metrics = op_metrics,
	.reload = op_reload,
	.reopen = op_reopen,
	.set_server = op_set_server,
	.version = op_version,
	.upgrade = op_upgrade,
};

static int
make_sockets(const struct config *cfg)
{
	uid_t uid = cfg->user != NULL ? cfg->uid : (uid_t)-1;
	char *path;
	int fd;

	/* first: a running qproxy's are in use, and nothing else is touched */
	if ((sv.ctl_fd = upgrade_take_control(cfg->control_socket)) == -1) {
		if ((sv.ctl_fd = control_listen(cfg->control_socket, uid,
		    cfg->gid)) == -1)
			return -1;
		sv.ctl_made = true;
	}
	if ((sv.ctl_path = strdup(cfg->control_socket)) == NULL)
		return -1;
	for (unsigned i = 0; i < worker_count; i++) {
		if (asprintf(&path, "%s.%u", cfg->control_socket, i) == -1)
			return -1;
		if ((fd = upgrade_take_control(path)) == -1) {
			if ((fd = control_listen(path, uid, cfg->gid)) == -1) {
				free(path);
				return -1;
			}
			sv.wctl_made[i] = true;
		}
		sv.wctl_paths[i] = path;	/* removed at the end */
		sv.wctl_fds[i] = fd;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		for (size_t j = 0; j < l->naddrs; j++) {
			struct group *g;
			char text[ADDR_STRLEN];
			size_t k;
			int took;

			for (k = 0; k < sv.ngroups; k++)
				if (addr_equal(&sv.groups[k].addr,
				    &l->addrs[j]))
					break;
			if (k < sv.ngroups)
				continue;
			g = reallocarray(sv.groups, sv.ngroups + 1,
			    sizeof(*g));
			if (g == NULL)
				return -1;
			sv.groups = g;
			g = &sv.groups[sv.ngroups];
			g->addr = l->addrs[j];
			/* an upgrade's: the running workers' sockets */
			took = upgrade_take_group(&l->addrs[j], g->fds,
			    worker_count);
			if (took == -1)
				log_warnx("%s: listener %s: udp %s: the running "
				    "process's sockets are not one a worker",
				    config_at(cfg, l->addr_lines[j]), l->name,
				    addr_format(&l->addrs[j], text,
				    sizeof(text)));
			if (took == -1 || (took == 0 &&
			    udp_open_group(&l->addrs[j], g->fds,
			    worker_count, sv.cid_off) == -1)) {
				log_warnx("%s: listener %s: cannot listen "
				    "on udp %s",
				    config_at(cfg, l->addr_lines[j]),
				    l->name, addr_format(&l->addrs[j], text,
				    sizeof(text)));
				return -1;
			}
			sv.ngroups++;
		}
	}
	return 0;
}

/*
 * The datagrams of a worker that does not run, one that died and waits
 * to start again or has yet to say it runs, go to another that does
 * (udp_steer): left in its socket, a new connection's waited unanswered
 * until it was back, a minute for one that keeps dying, and a client of
 * the one that died learnt only then that its connection was gone. The
 * other has the same secret: it makes the connection, or sends the
 * stateless reset the one that died would. Once it runs, they are its
 * own again.
 */
static void
steer(void)
{
	bool running[WORKERS_MAX], changed = false;
	char text[ADDR_STRLEN];

	if (!sv.ready)
		return;
	for (unsigned i = 0; i < worker_count; i++) {
		/*
		 * Not away from one whose worker before (an upgrade's) still
		 * drains: only this one's worker i passes that one its
		 * connections' datagrams. Steered to another, they went to
		 * the other worker before, which has none of them and ended
		 * them with a stateless reset; left in the socket, they wait
		 * for this one's worker i to start again.
		 */
		running[i] = (sv.w[i].pid > 0 && sv.w[i].pinged) ||
		    upgrade_worker_before(i);
		changed |= running[i] != sv.steered[i];
	}
	if (!changed)
		return;
	for (size_t k = 0; k < sv.ngroups; k++)
		/*
		 * Handed over, the groups the new supervisor took are its to
		 * steer; one it left (its configuration dropped the address)
		 * is still the workers here's, and steered away from one
		 * that has exited: left to it, a new client there waited for
		 * an answer that never came, rather than being refused.
		 */
		if ((!sv.handed_over || !upgrade_taken(&sv.groups[k].addr)) &&
		    udp_steer(sv.groups[k].fds[0], worker_count, running,
		    sv.cid_off) == -1)
			log_warn("udp %s: SO_ATTACH_REUSEPORT_CBPF",
			    addr_format(&sv.groups[k].addr, text,
			    sizeof(text)));
	memcpy(sv.steered, running, worker_count * sizeof(running[0]));
}

static void
serve_control(void)
{
	if ((sv.ctl = control_serve(sv.loop, sv.ctl_fd, sv.ctl_path, false,
	    &sv_ops, NULL)) == NULL)
		fatalx("supervisor: out of memory");
}

/* Once every worker has said it runs: systemd is told. */
static void
check_ready(void)
{
	int links[WORKERS_MAX];
	unsigned up = 0;

	if (sv.ready || sv.stopping)
		return;
	for (unsigned i = 0; i < worker_count; i++)
		up += sv.w[i].pinged;
	if (up < worker_count)
		return;
	sv.ready = true;
	log_info("qproxy %s started with %u workers", QPROXY_VERSION,
	    worker_count);
	if (!upgrade_inheriting()) {
		sd_notify(0, "READY=1");
		return;
	}
	/* systemd hears of this one from the process taken over from */
	if (upgrade_ready(NULL) == -1) {
		sv.status = 1;
		sv.stopping = true;
		signal_workers(SIGTERM);
		return;
	}
	sv.own_files = true;
	/* each worker reads once the one before of its number has stopped */
	for (unsigned i = 0; i < worker_count; i++)
		links[i] = sv.w[i].link;
	upgrade_await_go(links, worker_count, WORKER_HANDOVER_TIMEOUT + 2000);
	sv.hold_workers = false;
	upgrade_unlink_stale();
	/* and the control socket is answered once they all read */
	serve_control();
	/*
	 * The main process since the old one told systemd, before it had
	 * its workers hand over: systemd's watchdog, fed meanwhile by
	 * upgrade_await_go, is fed now, and then every half period.
	 */
	if (sv.watchdog_every > 0.)
		sd_notify(0, "WATCHDOG=1");
	sv.watchdog_next = mono_now() + sv.watchdog_every;
}

static void
take_signal(int signo)
{
	struct strbuf out;

	switch (signo) {
	case SIGCHLD:
		reap();
		break;
	case SIGHUP:
		/* as qproxyctl reload: so the supervisor knows the outcome */
		if (sv.stopping) {
			log_warnx("reload refused: shutting down");
			break;
		}
		log_info("signal %d: reloading", signo);
		strbuf_init(&out, CONTROL_MAX_REPLY);
		(void)cmd_reload(&out);
		strbuf_free(&out);
		break;
	case SIGUSR1:
		upgrade_reopen();
		if (log_reopen(NULL) == 0)
			log_info("log files reopened");
		signal_workers(SIGUSR1);
		break;
	default:
		if (!sv.stopping) {
			log_info("signal %d: stopping the workers", signo);
			sd_notify(0, "STOPPING=1");
		}
		sv.stopping = true;
		signal_workers(signo);
		break;
	}
}

static void
sv_signal_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct signalfd_siginfo si;

	while (read(sv.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		take_signal((int)si.ssi_signo);
}

static void
sv_ping_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	take_pings();
}

/* Wakes the loop each second, for sv_prepare_cb's look. */
static void
sv_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
}

/*
 * Every half period of systemd's watchdog, as a lone process's loop: the
 * loop's other wakes, the tick and each worker's ping, come a second
 * apart, too seldom for a WatchdogSec of a second or less.
 */
static void
sv_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	feed_watchdog();
}

/*
 * Before each wait: restarts due, workers silent too long, and the end
 * once all have stopped. A worker started here leaves the loop: nothing
 * else of this iteration runs in it.
 */
static void
sv_prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
	unsigned running = 0;
	double now;

	/* pings that waited behind a control request count first */
	take_pings();
	check_ready();
	steer();
	now = mono_now();
	for (unsigned i = 0; i < worker_count; i++) {
		struct worker *w = &sv.w[i];

		/* not started again: the old worker of its number reads */
		if (w->pid == 0 && sv.stopping)
			upgrade_worker_stopped(i);
		if (w->pid == 0 && w->restart_at > 0. && !sv.stopping &&
		    w->restart_at <= now) {
			sv.restarts++;
			if (worker_start(i) == 0) {
				sv.forked = true;
				ev_break(loop, EVBREAK_ALL);
				return;
			}
		}
		/*
		 * One that never said it runs counts from its start: a
		 * worker started again that hung before it served was left
		 * so for good (its datagrams went to another meanwhile).
		 */
		if (w->pid > 0 && now - w->last_ping > sv.cfg->worker_timeout) {
			log_warnx("worker %u (pid %ld): no word for %g s%s; "
			    "killing it", i, (long)w->pid, sv.cfg->worker_timeout,
			    w->pinged ? "" : " since it started");
			kill(w->pid, SIGKILL);
			w->pinged = false;
			w->last_ping = now;	/* once, until it is reaped */
		}
		running += w->pid > 0;
	}
	steer();	/* (one killed just now) */
	if (sv.stopping && running == 0)
		sv_exit(sv.status);
}

int
workers_run(struct config **cfgp, const sigset_t *held,
    const struct workers_hooks *hooks, const struct upgrade_keys *keys)
{
	sigset_t mask;
	uint64_t usec = 0;

	sv.cfg = *cfgp;
	sv.hooks = hooks;
	sv.pid = getpid();
	sv.keys = *keys;
	sv.own_files = !upgrade_inheriting();
	sv.hold_workers = upgrade_inheriting();
	worker_count = (unsigned)sv.cfg->workers;
	/* connection IDs are as at the start until a restart */
	sv.cid_off = workers_cid_offset(sv.cfg);
	sv.held = *held;
	for (unsigned i = 0; i < worker_count; i++) {
		/* as udp_open_group has it; taken over, as may not be */
		sv.steered[i] = !upgrade_inheriting();
		sv.w[i].link = -1;
	}
	if (make_sockets(sv.cfg) == -1 ||
	    pipe2(sv.ping, O_CLOEXEC | O_NONBLOCK) == -1) {
		sv_cleanup();
		return -1;
	}
	/* not for the workers: what the running process handed and no one took */
	upgrade_close_unused();
	mask = *held;
	sigaddset(&mask, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) == -1 ||
	    (sv.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) ==
	    -1) {
		log_warn("signalfd");
		sv_cleanup();
		return -1;
	}
	for (unsigned i = 0; i < worker_count; i++) {
		int rv = worker_start(i);

		if (rv == 0) {
			*cfgp = sv.cfg;
			return 0;
		}
		if (rv == -1) {
			sv.status = 1;
			sv.stopping = true;
			signal_workers(SIGTERM);
			break;
		}
	}
	hooks->drop(sv.cfg);
	if (sd_watchdog_enabled(0, &usec) > 0)
		sv.watchdog_every = (double)usec / 2e6;

	sv.loop = ev_loop_new(EVBACKEND_POLL | EVFLAG_NOSIGMASK);
	if (sv.loop == NULL)
		fatalx("supervisor: cannot make its event loop");
	/* taking over, once its workers read (check_ready) */
	if (!sv.hold_workers)
		serve_control();
	ev_io_init(&sv.sig_io, sv_signal_cb, sv.sigfd, EV_READ);
	ev_io_start(sv.loop, &sv.sig_io);
	ev_io_init(&sv.ping_io, sv_ping_cb, sv.ping[0], EV_READ);
	ev_io_start(sv.loop, &sv.ping_io);
	ev_prepare_init(&sv.prepare, sv_prepare_cb);
	ev_prepare_start(sv.loop, &sv.prepare);
	ev_timer_init(&sv.tick, sv_tick_cb, 1., 1.);
	ev_timer_start(sv.loop, &sv.tick);
	if (sv.watchdog_every > 0.) {
		ev_timer_init(&sv.watchdog, sv_watchdog_cb, sv.watchdog_every,
		    sv.watchdog_every);
		ev_timer_start(sv.loop, &sv.watchdog);
	}
	ev_run(sv.loop, 0);
	/* only a worker, started again from the loop, comes out of it */
	if (!sv.forked)
		fatalx("supervisor: its event loop ended");
	ev_loop_destroy(sv.loop);
	sv.loop = NULL;
	*cfgp = sv.cfg;
	return 0;
}
