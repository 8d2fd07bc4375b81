/*
 * upgrade.h: a new qproxy binary taking over from the running one
 * (qproxyctl upgrade), without a client being refused or cut off.
 *
 * The running process forks and executes its binary again (the file now
 * at the path it was started from), handing down its UDP sockets, its
 * control socket and one end of a Unix socket pair, the link. The new
 * process takes the sockets in place of binding them, and says it is
 * ready over the link. From then on the new process reads every
 * datagram: one for a connection it does not know (any but an Initial
 * that begins a connection) goes over the link to the old process, which
 * serves its connections until they end or shutdown_timeout, answering
 * through its copy of the same sockets. The old process stops reading
 * the sockets, gives systemd the new process as the service's main
 * process, and exits when its last connection has gone.
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
#define UPGRADE_WAIT		8	/* s for the new process to be ready
					   (qproxyctl waits 10 s) */

struct quic_server;
struct udp_sock;

/*
 * What the new process is given rather than reads: the running one's
 * keys (it may have read them as root), so that its tokens, tickets and
 * stateless resets stay good.
 */
struct upgrade_keys {
	uint8_t		secret[32];		/* secret_file's */
	uint8_t		cid_key[16];		/* QUIC-LB's, */
	char		cid_key_file[1024];	/* from this file ("": none) */
};

/* At start: where the binary is and how it was started; the environment. */
void	upgrade_init(char *argv[]);

/*
 * The running process's side. Starts the new process with the sockets of
 * srv and control_fd (-1: none), and waits up to UPGRADE_WAIT for it to be
 * ready. 0 with the new process's id in *pid, which now reads every
 * datagram; -1 with why not in out (the new process, if any, is gone and
 * this one goes on as before).
 */
int	upgrade_start(struct quic_server *, int control_fd,
	    const struct upgrade_keys *, pid_t *pid, struct strbuf *out);
/*
 * Whether the new process took this process's socket bound to the
 * address: one the new configuration dropped stays this one's to read.
 */
bool	upgrade_taken(const struct addr *);

/* The new process's side. Whether it was started by upgrade_start. */
bool	upgrade_inheriting(void);
/* The running process's keys, sent first. -1 when none came (logged). */
int	upgrade_take_keys(struct upgrade_keys *);
/* An inherited socket for a UDP address, or -1: bind one. */
int	upgrade_take_udp(const struct addr *);
/* The inherited control socket if it is the one at path, else -1. */
int	upgrade_take_control(const char *path);
/*
 * Once started: the inherited sockets not taken are closed, the old
 * process told it may hand over. -1 when it could not be told (logged).
 */
int	upgrade_ready(struct quic_server *);
/*
 * A datagram for no connection of this process, passed to the one it took
 * over from while that one lives: true when it went (or was dropped for a
 * full link, counted), false when there is none to pass it to.
 */
bool	upgrade_forward(const struct udp_sock *, const uint8_t *, size_t,
	    const struct addr *remote, const struct addr *local, uint8_t ecn);

#endif
