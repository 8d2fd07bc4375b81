/*
 * workers.h: [global] workers, several processes on the same UDP ports.
 *
 * The process qproxy starts as becomes their supervisor: it makes each
 * listener address's sockets, one per worker in a SO_REUSEPORT group that
 * gives every datagram to the worker its connection ID names, and each
 * worker's control socket; forks the workers, which then run as a lone
 * qproxy would; restarts one that dies; passes signals on; and answers
 * the control socket with what the workers answer, merged.
 */
#ifndef QPROXY_WORKERS_H
#define QPROXY_WORKERS_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "addr.h"
#include "cid.h"

struct config;
struct strbuf;
struct upgrade_keys;

/* In a worker: which one, of how many. A lone process: 0 of 1. */
extern unsigned	 worker_index, worker_count;

/* What the supervisor asks of main.c. */
struct workers_hooks {
	/* becomes [global] user, once the sockets are made */
	void		 (*drop)(const struct config *);
	/*
	 * At a reload, before the workers are asked: the configuration file
	 * read again, its log files opened but not in use yet; NULL when it
	 * does not load, with every reason in errs (logged).
	 */
	struct config	*(*load)(struct strbuf *errs);
	/*
	 * Then, once every worker took the file (take), its log files put in
	 * place: it is what a worker started later runs; else they are let
	 * go, and it is freed.
	 */
	void		 (*loaded)(struct config *, bool take);
	void		 (*free)(struct config *);
};

/*
 * Turns this process into the supervisor of (*cfgp)->workers workers,
 * and returns 0 in each worker, with worker_index set, *cfgp the
 * configuration it is to run and the signals of held still blocked. The
 * supervisor never returns: it exits when the workers have ended after a
 * SIGTERM or SIGINT, or with 1 when one fails to start (its reasons in
 * the error log). -1 when the sockets cannot be made (logged). keys
 * are what it hands a new binary at qproxyctl upgrade (upgrade.h).
 */
int		 workers_run(struct config **cfgp, const sigset_t *held,
		    const struct workers_hooks *hooks,
		    const struct upgrade_keys *keys);

/*
 * In a worker: its socket for a listener address, or -1 when the address
 * is not one of those the supervisor made at the start.
 */
int		 workers_socket(const struct addr *);
bool		 workers_have_socket(const struct addr *);
/*
 * In a worker: a reload dropped the address. Its copy of the group's
 * socket is closed (the one it serves on closes once drained), as the
 * supervisor closes its own, so that the port is free once drained;
 * adding the address again takes a restart.
 */
void		 workers_forget_socket(const struct addr *);
/* In a worker: its control socket, made by the supervisor; -1: none. */
int		 workers_control_fd(const char **path);
/* In a worker: tells the supervisor it is alive (once a second). */
void		 workers_ping(void);
/*
 * Tells systemd that a reload begins (RELOADING=1, READY=1 once done):
 * its main process's word, a lone process's or the supervisor's.
 */
void		 workers_notify_reloading(void);

/*
 * Where in a connection ID the byte that names its worker is: the first,
 * or with cid_server_id the one after the server ID (cid_lb_worker_offset).
 */
size_t		 workers_cid_offset(const struct config *);

/*
 * The byte of a connection ID that names its worker, made by this worker
 * from r, random: the first, or with QUIC-LB the one after the server ID
 * (cid_lb_worker_offset, workers_cid_offset).
 */
static inline uint8_t
workers_cid_byte(uint8_t r)
{
	if (worker_count < 2)
		return r;
	return cid_worker_byte(r, worker_index, worker_count);
}

#endif
