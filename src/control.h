/*
 * control.h: the control socket. A Unix stream socket; one request line per
 * connection, "QPROXY/2 COMMAND [ARG]\n"; the reply is "OK\n" followed by
 * the command's text, or "ERR message\n" (and text, for some); then an
 * end line, a NUL byte and "END\n" when the reply came whole, or a NUL
 * byte, "CUT ", why and "\n" when it could not (a stream's: conns), and
 * the daemon closes. Reply text has no NUL byte: the first one begins the
 * end line. A reply that ends without one (the daemon gave up on a client
 * that did not take it, or died) was cut short, and a client can tell.
 * "QPROXY/1 ..." gets the same reply without the end line, as daemons
 * before QPROXY/2 sent it (and answer "ERR bad protocol version" to a
 * QPROXY/2 line): its client reads to EOF and cannot tell a cut. conns has
 * no bound on its length. A client has 5 s to send its line; then the
 * daemon gives up on one that takes none of its reply for 5 s, or has not
 * taken all of it 5 minutes after it began.
 */
#ifndef QPROXY_CONTROL_H
#define QPROXY_CONTROL_H

#include <sys/types.h>

#include <stdbool.h>

#include <ev.h>

#include "strbuf.h"

#define CONTROL_MAGIC		"QPROXY/1"	/* replies end at EOF */
#define CONTROL_MAGIC_END	"QPROXY/2"	/* with an end line */
#define CONTROL_END		"\0END\n"	/* a whole reply's end line */
#define CONTROL_END_LEN		(sizeof(CONTROL_END) - 1)
#define CONTROL_CUT		"\0CUT "	/* another's, before why */
#define CONTROL_CUT_LEN		(sizeof(CONTROL_CUT) - 1)
#define CONTROL_MAX_LINE	1024	/* a request line, newline included */
#define CONTROL_MAX_REPLY	(16u << 20)	/* but a stream's (conns) */
#define CONTROL_ROW_MAX		(8u << 10)	/* and this a row more */
#define CONTROL_CHUNK		(16u << 10)	/* a stream's piece, about */
#define CONTROL_MAX_CLIENTS	16

/*
 * The longest reply held whole: CONTROL_MAX_REPLY, and CONTROL_ROW_MAX for
 * each row (a route, a backend's server, a certificate) of the largest
 * configuration read, which metrics shows some 24 lines of: 10,000 routes
 * and backends passed 16 MiB.
 */
size_t	control_reply_max(void);
void	control_reply_rows(size_t rows);

#define CONTROL_RELOAD_STOPPING	(-2)	/* answered "ERR shutting down" */

/*
 * A reply made a piece at a time as the client takes it, for one with no
 * bound on its length (conns: a row per connection), in bounded memory.
 * next appends the next piece, about CONTROL_CHUNK bytes, to out (empty):
 * 1 while more is to come; 0 after the last, with *why (NULL before the
 * call) set when some of what the reply was to hold is missing (a worker
 * that did not answer): the reply ends as it would, then "CUT why"; -1
 * when the reply cannot go on, out dropped, *why perhaps set: the reply
 * ends there, then "CUT why" (QPROXY/1: the client sees it end). *why
 * must last until the next call of next or done. done frees state, once,
 * however the reply ends (the client gone, its time up).
 */
struct control_stream {
	int	(*next)(struct strbuf *out, const char **why, void *state);
	void	(*done)(void *state);
	void	*state;
};

/*
 * What the commands do; each writes its reply text into out, but conns
 * and metrics_stream, which set up a stream: 0, or -1 with why not in err.
 */
struct control_ops {
	void	(*stats)(struct strbuf *out, bool json, void *arg);
	int	(*conns)(struct control_stream *, bool json, const char **err,
		    void *arg);
	void	(*peers)(struct strbuf *out, bool json, void *arg);
	void	(*tls)(struct strbuf *out, bool json, void *arg);
	void	(*backends)(struct strbuf *out, bool json, void *arg);
	void	(*routes)(struct strbuf *out, bool json, void *arg);
	void	(*metrics)(struct strbuf *out, bool json, void *arg);
	/* metrics as a stream, as conns is; in place of metrics when set */
	int	(*metrics_stream)(struct control_stream *, bool json,
		    const char **err, void *arg);
	/*
	 * 0 when the new configuration took; -1 with its errors in out;
	 * CONTROL_RELOAD_STOPPING when the daemon, shutting down, takes none
	 */
	int	(*reload)(struct strbuf *out, void *arg);
	/*
	 * a worker's reload in steps, as its supervisor asks (workers.c):
	 * step is "prepare ID", "commit ID" or "abort ID"; answered as
	 * reload is
	 */
	int	(*reload_step)(struct strbuf *out, const char *step,
		    void *arg);
	/* the log files reopened: 0, or -1 with the failures in out */
	int	(*reopen)(struct strbuf *out, void *arg);
	/*
	 * disable (on false) or enable a backend server, named by args:
	 * 0 with what was done in out, or -1 with why not
	 */
	int	(*set_server)(struct strbuf *out, const char *args, bool on,
		    void *arg);
	void	(*version)(struct strbuf *out, bool json, void *arg);
	/*
	 * a new binary takes over (upgrade.h): 0 with what was done in out,
	 * or -1 with why not
	 */
	int	(*upgrade)(struct strbuf *out, void *arg);
};

struct control;

/*
 * Listens on path: a stale socket file is removed first, the socket is
 * created with mode 0660, by root as uid and gid (the user it becomes;
 * -1: as it is). NULL on failure (logged).
 */
struct control	*control_open(struct ev_loop *, const char *path, uid_t uid,
		    gid_t gid, const struct control_ops *, void *arg);
/*
 * control_open in two steps, for a socket made in one process and served
 * in another (workers.c): the listening socket, or -1 (logged); then its
 * service, which removes the file at the end when owner is set.
 */
int		 control_listen(const char *path, uid_t uid, gid_t gid);
struct control	*control_serve(struct ev_loop *, int fd, const char *path,
		    bool owner, const struct control_ops *, void *arg);
/*
 * Stops listening and closes the socket, whose file is another process's
 * now (upgrade.h): the clients already in are answered.
 */
void		 control_disown(struct control *);
/* Its listening socket, or -1 (none, or ctl NULL). */
int		 control_fd(const struct control *);
/* Stops listening, closes every client, removes the socket file (owner). */
void		 control_close(struct control *);

/*
 * For tests: a client that takes none of its reply for idle seconds, or
 * has not taken all of it most seconds after it began, is let go
 * (CONTROL_TIMEOUT and CONTROL_REPLY_TIME in control.c: 5 s and 5 min).
 */
void		 control_set_reply_time(struct control *, double idle,
		    double most);
/*
 * A QPROXY/2 reply's text (after its first line) of *len bytes: *len is
 * shortened to what comes before its end line. 1 when the end line says
 * the reply is whole; 0 when it says it is not, why in why (whylen bytes
 * at most, NUL included); -1 when there is none where it belongs (the
 * reply was cut short).
 */
int		 control_end(const char *text, size_t *len, char *why,
		    size_t whylen);

/*
 * Parses one request line (without its newline), QPROXY/1 or QPROXY/2. On
 * success sets *cmd to the command word and *json to whether "json"
 * followed, or for a command that takes arguments (disable, enable:
 * "BACKEND SERVER"; a supervisor's reload of a worker: "prepare ID",
 * "commit ID" or "abort ID") *arg to them (else NULL), and returns 0;
 * otherwise returns -1 with a message for the "ERR" reply in *err.
 */
int		 control_parse(const char *line, const char **cmd, bool *json,
		    const char **arg, const char **err);
/* The command words, for the daemon and for qproxyctl. */
extern const char *const control_commands[];
extern const size_t control_ncommands;
/* Whether a command (a word control_parse gave) takes arguments. */
bool		 control_takes_args(const char *cmd);
/* Whether it may be followed by "json" (reload, reopen, upgrade and the
 * commands with arguments may not). */
bool		 control_has_json(const char *cmd);

#endif
