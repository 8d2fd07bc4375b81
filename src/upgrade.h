/*
 * upgrade.h: a new qproxy binary taking over from the running one
 * (qproxyctl upgrade), without a client being refused or cut off.
 *
 * The running process forks (under systemd, clones a sibling: systemd's
 * child, as the main process it becomes) and executes its binary again
 * (the file now at the path it was started from), handing down its UDP
 * sockets, its control socket and one end of a Unix socket pair, the
 * link. The new process takes the sockets in place of binding them, and
 * says it is ready over the link. From then on the new process reads every
 * datagram: one for a connection it does not know (any but an Initial
 * that begins a connection) goes over the link to the old process, which
 * serves its connections until they end or shutdown_timeout, answering
 * through its copy of the same sockets. The old process stops reading
 * the sockets, gives systemd the new process as the service's main
 * process, and exits when its last connection has gone.
 *
 * With workers the supervisors do it: the new one takes each group of
 * sockets in worker order, and each worker's link is made when the
 * worker starts (upgrade_worker_start), so that new worker i passes old
 * worker i its datagrams; the old supervisor tells each old worker when
 * to stop reading (upgrade_tell_workers).
 */
#ifndef QPROXY_UPGRADE_H
#define QPROXY_UPGRADE_H

#include <sys/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "strbuf.h"

#define UPGRADE_ENV		"QPROXY_UPGRADE"
#define UPGRADE_WORKERS_ENV	"QPROXY_UPGRADE_WORKERS"
#define UPGRADE_WAIT		8	/* s for the new process to be ready
					   (qproxyctl waits 10 s) */
#define UPGRADE_FDS_MAX		512	/* UDP sockets handed down */
#define UPGRADE_ADDRS_MAX	64	/* addresses among them (the new
					   process tells which it took) */

struct ev_loop;
struct quic_server;
struct udp_sock;

/*
 * What the new process is given rather than reads: the running one's
 * keys (it may have read them as root), so that its tokens, tickets and
 * stateless resets stay good.
 */
struct upgrade_keys {
	uint8_t		secret[32];		/* secret_file's, */
	uint8_t		cid_key[16];		/* QUIC-LB's, */
	char		cid_key_file[1024];	/* from this file ("": none) */
	char		secret_file[1024];	/* the first from this one ("":
						   from a build not saying) */
};

/*
 * What the running process hands down. A supervisor of workers hands
 * each listener address's group of sockets in worker order, and for each
 * worker its control socket and the supervisor's end of its link.
 */
struct upgrade_fds {
	int		 control;		/* -1: none */
	const int	*udp;
	size_t		 nudp;
	unsigned	 workers;		/* 0: a lone process */
	const int	*worker_control;	/* [workers] */
	const int	*worker_link;		/* [workers] */
	size_t		 cid_off;		/* workers_cid_offset's */
};

/* At start: where the binary is and how it was started; the environment. */
void	upgrade_init(char *argv[]);

/*
 * The running process's side. Starts the new process with the sockets of
 * fds, and waits up to UPGRADE_WAIT for it to be ready; systemd is told
 * it is the main process. 0 with its id in *pid and the link to it in
 * *link, the new process reading every datagram from now on; -1 with why
 * not in out (the new process, if any, is gone and this one goes on).
 */
int	upgrade_spawn(const struct upgrade_fds *, const struct upgrade_keys *,
	    pid_t *pid, int *link, struct strbuf *out);
/*
 * A lone process, once upgrade_spawn took: the new process passes it the
 * datagrams of its connections over link, until it has none left.
 */
void	upgrade_handed_over(struct quic_server *, int link, pid_t pid);
/*
 * A supervisor of workers, once upgrade_spawn took: link stays open for
 * the new supervisor's word to reopen the log files (upgrade_reopen).
 */
void	upgrade_supervisor_handed_over(struct ev_loop *, int link);
/*
 * A reopen of the log files (qproxyctl reopen, SIGUSR1) in a process that
 * took over: the process before, which may still drain, is told to reopen
 * its own too, as logrotate moved them under it as well. A lone process's
 * and a worker's go to the process (worker of its number) before, a
 * supervisor's to the supervisor before.
 */
void	upgrade_reopen(void);
/* Whether an upgrade is under way, or the process before still serves. */
bool	upgrade_busy(struct strbuf *why);
/*
 * Whether the new process took this process's socket bound to the
 * address: one the new configuration dropped stays this one's to read.
 */
bool	upgrade_taken(const struct addr *);

/* The new process's side. Whether it was started by upgrade_spawn. */
bool	upgrade_inheriting(void);
/* The running process's keys, sent first. -1 when none came (logged). */
int	upgrade_take_keys(struct upgrade_keys *);
/*
 * How many workers the running process had: 0 for a lone process, and
 * also when this one is not an upgrade.
 */
unsigned upgrade_workers(void);
/*
 * Where the running workers' connection IDs have the byte that names
 * their worker (workers_cid_offset): the new ones' must be the same.
 */
size_t	upgrade_cid_offset(void);
/* An inherited socket for a UDP address, or -1: bind one. */
int	upgrade_take_udp(const struct addr *);
/*
 * The n inherited sockets of a workers group for the address, in worker
 * order: 1 when taken, 0 when none is there (bind them), -1 when not n.
 */
int	upgrade_take_group(const struct addr *, int *fds, size_t n);
/* The inherited control socket listening at path, or -1. */
int	upgrade_take_control(const char *path);
/* Inherited sockets no one took, closed (before workers are forked). */
void	upgrade_close_unused(void);
/*
 * The files of the inherited control sockets no one took (their path
 * changed), removed once the process before has handed over.
 */
void	upgrade_unlink_stale(void);
/*
 * At the end of a process that took over: waits, at most timeout seconds,
 * for the process before to exit first (see upgrade.c).
 */
void	upgrade_await_elder(double timeout);
/*
 * Once started: the inherited sockets not taken are closed, the old
 * process told it may hand over. -1 when it could not be told (logged).
 * A lone process passes itself; a supervisor of workers NULL.
 */
int	upgrade_ready(struct quic_server *);
/*
 * A datagram for no connection of this process, passed to the one it took
 * over from while that one lives: true when it went (or was dropped for a
 * full link, counted), false when there is none to pass it to.
 */
bool	upgrade_forward(const struct udp_sock *, const uint8_t *, size_t,
	    const struct addr *remote, const struct addr *local, uint8_t ecn);

/*
 * Workers. Each has a link to its supervisor from its start: the
 * supervisor hands its end to the new supervisor at an upgrade, and the
 * new worker of the same index passes it the datagrams of its
 * connections. In a worker just forked: rx is its end; the link to the
 * worker it takes over from, if any, is kept and the rest closed.
 */
void	upgrade_worker_start(unsigned index, int rx, bool hold);
/*
 * Whether a new worker (hold above) waits to read its sockets until the
 * worker before of its number has stopped reading them: the two read the
 * same ones, and a datagram of a connection of either read by the other
 * would be answered with a stateless reset. Its server's sockets are not
 * read meanwhile; the word comes over rx.
 */
bool	upgrade_worker_held(void);
/*
 * In a worker, once its server runs: datagrams from the new worker are
 * fed to srv; handover is called when the supervisor says the new
 * workers have taken the sockets.
 */
void	upgrade_worker_serve(struct quic_server *, void (*handover)(void));
/*
 * A supervisor's, after an upgrade: whether worker i of the process
 * before still serves (the other end of its link is open).
 */
bool	upgrade_worker_before(unsigned i);
/*
 * A supervisor's that took over and stops, once its worker i has gone for
 * good: the old worker i reads its sockets again for its connections, at
 * once rather than when the last worker here has gone, and knows it for
 * no death. Its link stays open: its close says the old worker's end.
 */
void	upgrade_worker_stopped(unsigned i);
/*
 * The supervisor: tells the workers at the ends tx[0..n) (-1: none) that
 * their sockets are taken, and waits at most timeout_ms for each to say
 * it stopped reading them, telling the new supervisor over link as each
 * does. How many did.
 */
unsigned upgrade_tell_workers(const int *tx, unsigned n, int timeout_ms,
	    int link);
/*
 * The new supervisor, once ready: as the one before says its worker i
 * stopped reading, tells its own worker i (at tx[i]) to begin; every one
 * not told so within timeout_ms, or once the other has said all, begins.
 * Systemd's watchdog is fed meanwhile.
 */
void	upgrade_await_go(const int *tx, unsigned n, int timeout_ms);

#endif
