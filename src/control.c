/*
 * control.c: the control socket. Each client sends one request line and
 * gets one reply; the daemon then closes the connection. Nothing a client
 * sends can make the daemon block, grow without bound or fail: lines are
 * read into a fixed buffer, requests and replies have deadlines, and the
 * number of clients is bounded. A reply's deadline moves on while the
 * client takes it, up to a bound of its own. A reply of no bounded length
 * (conns; metrics, when the daemon makes it so) is streamed: made a piece
 * at a time, each once the one before is sent, so that a client holds
 * about CONTROL_CHUNK bytes of it at most.
 */
#include <sys/fsuid.h>
#include <sys/param.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <linux/capability.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "log.h"

#define CONTROL_TIMEOUT		5.	/* to send a request; to take more */
#define CONTROL_REPLY_TIME	300.	/* to take all the reply */
#define CONTROL_ACCEPT_PAUSE	1.	/* after running out of descriptors */
#define CONTROL_BACKLOG		32
#define CONTROL_ACCEPT_BATCH	32
#define CONTROL_HEAD_MAX	160	/* "OK\n", "ERR message\n" */
#define CONTROL_TURN_PIECES	8	/* of a stream made in one callback */

struct control_client {
	LIST_ENTRY(control_client) entry;
	struct control		*ctl;
	int			 fd;
	ev_io			 rio, wio;
	ev_timer		 timer;
	char			 line[CONTROL_MAX_LINE];
	size_t			 len;		/* bytes in line */
	char			 head[CONTROL_HEAD_MAX];
	size_t			 headlen;
	struct strbuf		 text;		/* the reply after head */
	char			 tail[CONTROL_HEAD_MAX]; /* its end line */
	size_t			 taillen;	/* 0 until it is due */
	size_t			 sent;		/* of head, text, then tail */
	struct control_stream	 stream;	/* its next piece: text */
	bool			 streaming;	/* until done is called */
	bool			 end_line;	/* QPROXY/2: tail, once due */
	ev_tstamp		 begun;		/* the reply's first write */
	ev_tstamp		 taken;		/* the last that took any */
	ev_tstamp		 looked;	/* the timer's last look */
};

struct control {
	struct ev_loop		*loop;
	int			 fd;
	char			*path;
	bool			 owner;		/* removes path at the end */
	ev_io			 accept_io;
	ev_timer		 pause;		/* accept paused (EMFILE) */
	const struct control_ops *ops;
	void			*arg;
	LIST_HEAD(, control_client) clients;
	unsigned		 nclients;
	double			 idle, most;	/* a reply's deadlines */
};

const char *const control_commands[] = {
	"stats", "conns", "peers", "tls", "backends", "routes", "metrics",
	"reload", "reopen", "version", "disable", "enable", "upgrade",
};
const size_t control_ncommands =
    sizeof(control_commands) / sizeof(control_commands[0]);

static size_t reply_rows;

size_t
control_reply_max(void)
{
	return CONTROL_MAX_REPLY + reply_rows * CONTROL_ROW_MAX;
}

void
control_reply_rows(size_t rows)
{
	/* never less: a reply to an older configuration may be made yet */
	if (rows > reply_rows)
		reply_rows = rows;
}

bool
control_takes_args(const char *cmd)
{
	return strcmp(cmd, "disable") == 0 || strcmp(cmd, "enable") == 0;
}

bool
control_has_json(const char *cmd)
{
	return strcmp(cmd, "reload") != 0 && strcmp(cmd, "reopen") != 0 &&
	    strcmp(cmd, "upgrade") != 0 && !control_takes_args(cmd);
}

/*
 * Whether a request line (len bytes, whole or not) is QPROXY/2's, whose
 * reply has an end line; even one refused as malformed or too long.
 */
static bool
control_wants_end(const char *line, size_t len)
{
	size_t n = sizeof(CONTROL_MAGIC_END) - 1;

	return len >= n && memcmp(line, CONTROL_MAGIC_END, n) == 0 &&
	    (len == n || line[n] == ' ' || (len == n + 1 && line[n] == '\r'));
}

/*
 * How often a reply's timer looks whether the client took some of it, so
 * that one that stopped is let go within a fifth of idle of its time.
 */
static double
control_look_every(const struct control *ctl)
{
	return MIN(1., ctl->idle / 5.);
}

/* Best effort, for short messages to a client about to be closed. */
static void
control_send_now(int fd, const char *msg)
{
	ssize_t n;

	n = send(fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)n;
}

/* The stream's end, whatever it is. */
static void
control_stream_end(struct control_client *c)
{
	if (!c->streaming)
		return;
	c->streaming = false;
	c->stream.done(c->stream.state);
}

static void
control_client_free(struct control_client *c)
{
	struct control *ctl = c->ctl;

	control_stream_end(c);
	ev_io_stop(ctl->loop, &c->rio);
	ev_io_stop(ctl->loop, &c->wio);
	ev_timer_stop(ctl->loop, &c->timer);
	LIST_REMOVE(c, entry);
	ctl->nclients--;
	close(c->fd);
	strbuf_free(&c->text);
	free(c);
}

/*
 * The reply's end line, for a QPROXY/2 client: whole (why NULL), or not,
 * and why, on one line of printable bytes, cut to fit.
 */
static void
control_tail(struct control_client *c, const char *why)
{
	size_t n;

	if (!c->end_line)
		return;
	if (why == NULL) {
		memcpy(c->tail, CONTROL_END, CONTROL_END_LEN);
		c->taillen = CONTROL_END_LEN;
		return;
	}
	memcpy(c->tail, CONTROL_CUT, CONTROL_CUT_LEN);
	for (n = CONTROL_CUT_LEN; *why != '\0' && n < sizeof(c->tail) - 1;
	    why++)
		c->tail[n++] = *why >= 0x20 && *why < 0x7f ? *why : '?';
	c->tail[n++] = '\n';
	c->taillen = n;
}

/*
 * A stream's next piece in text, in place of the one sent, and after the
 * last the end line. false when the reply cannot go on and ends here
 * without one (QPROXY/1).
 */
static bool
control_stream_next(struct control_client *c)
{
	const char *why = NULL;
	int rv;

	c->sent = c->headlen;
	strbuf_clear(&c->text);
	rv = c->stream.next(&c->text, &why, c->stream.state);
	if (c->text.nomem) {
		rv = -1;	/* a piece that lost some of its text */
		why = "out of memory";
	} else if (rv != -1 && c->text.truncated) {
		rv = -1;	/* not a piece, nor a last: too long for text */
		why = "a piece of the reply too long";
	}
	if (rv == -1) {
		log_warnx("control: a reply cut short%s%s",
		    why != NULL ? ": " : "", why != NULL ? why : "");
		strbuf_clear(&c->text);
		if (why == NULL)
			why = "the reply could not go on";
	}
	/* (why may be the stream's, which done frees) */
	if (rv != 1)
		control_tail(c, why);
	if (rv != 1)
		control_stream_end(c);
	return rv != -1 || c->end_line;
}

/*
 * Writes what it can of the reply, a stream's pieces as each is sent;
 * closes the client when all is sent, or when it went away: true then (c
 * is freed).
 */
static bool
control_client_write(struct control_client *c)
{
	struct control *ctl = c->ctl;
	struct iovec iov[3];
	struct msghdr msg;
	size_t total, off;
	ssize_t n;
	int niov, pieces = 0;

	for (;;) {
		total = c->headlen + c->text.len + c->taillen;
		if (c->sent == total && c->streaming) {
			/* the loop's other work between some pieces and more */
			if (pieces++ == CONTROL_TURN_PIECES)
				goto wait;
			if (!control_stream_next(c)) {
				control_client_free(c);
				return true;
			}
			continue;
		}
		if (c->sent == total)
			break;
		/* what is left of head, text and tail */
		niov = 0;
		off = c->sent;
		if (off < c->headlen) {
			iov[niov].iov_base = c->head + off;
			iov[niov++].iov_len = c->headlen - off;
			off = c->headlen;
		}
		if (off < c->headlen + c->text.len) {
			iov[niov].iov_base = c->text.s + (off - c->headlen);
			iov[niov++].iov_len = c->headlen + c->text.len - off;
			off = c->headlen + c->text.len;
		}
		if (off < total) {
			iov[niov].iov_base = c->tail +
			    (off - c->headlen - c->text.len);
			iov[niov++].iov_len = total - off;
		}
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = niov;
		n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				goto wait;
			log_debug("control: client went away: %s",
			    strerror(errno));
			control_client_free(c);
			return true;
		}
		c->sent += (size_t)n;
		if (n > 0) {
			/* (a stream's piece may have kept the loop a while) */
			ev_now_update(ctl->loop);
			c->taken = ev_now(ctl->loop);
		}
	}
	control_client_free(c);
	return true;
wait:
	ev_io_start(ctl->loop, &c->wio);
	return false;
}

static void
control_client_wcb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)control_client_write(w->data);
}

/* The reply's first line: "OK" or "ERR message". */
static void
control_head(struct control_client *c, const char *status, const char *msg)
{
	int n;

	n = snprintf(c->head, sizeof(c->head), "%s%s%s\n", status,
	    *msg != '\0' ? " " : "", msg);
	if (n < 0) {
		memcpy(c->head, "ERR internal error\n", 19);
		n = 19;
	} else if ((size_t)n >= sizeof(c->head)) {
		/* one that names long words: what fits, marked as cut */
		n = (int)sizeof(c->head) - 1;
		memcpy(c->head + n - 4, "...\n", 4);
	}
	c->headlen = (size_t)n;
}

static void
control_error(struct control_client *c, const char *msg)
{
	strbuf_free(&c->text);
	control_head(c, "ERR", msg);
}

/*
 * A command that changes the daemon (reload, reopen, upgrade), with its
 * arguments or NULL: refused when the daemon has no handler for it
 * (false), else logged with who asked, when the kernel says.
 */
static bool
control_may_change(struct control_client *c, const char *cmd,
    const char *args, bool handled)
{
	struct ucred cred;
	socklen_t credlen = sizeof(cred);

	if (!handled) {
		control_error(c, "command not supported");
		return false;
	}
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) == 0)
		log_info("control: %s%s%s requested by pid %ld uid %ld", cmd,
		    args != NULL ? " " : "", args != NULL ? args : "",
		    (long)cred.pid, (long)cred.uid);
	else
		log_info("control: %s%s%s requested", cmd, args != NULL ?
		    " " : "", args != NULL ? args : "");
	return true;
}

/*
 * The reply to cmd, its text in c->text: OK, or ERR refused (NULL: none).
 * changes: cmd changed the daemon, whatever became of its text.
 */
static void
control_answer(struct control_client *c, const char *cmd, bool changes,
    const char *refused)
{
	/* the text ends with a newline when there is any */
	if (!c->text.truncated && !c->text.nomem && c->text.len > 0 &&
	    c->text.s[c->text.len - 1] != '\n') {
		c->text.max++;
		strbuf_append(&c->text, "\n", 1);
	}
	if (c->text.nomem) {
		/* some of it lost: none of it, rather than less as if all */
		log_warnx("control: %s: out of memory for the reply", cmd);
		if (changes && refused == NULL) {
			static const char note[] = "warning: out of memory "
			    "for the rest of this reply; the log has it\n";
			_Static_assert(3 + sizeof(note) <= CONTROL_HEAD_MAX,
			    "OK and the note fit the head");

			/* done all the same: not to be taken for refused */
			strbuf_free(&c->text);
			control_head(c, "OK", "");
			memcpy(c->head + c->headlen, note, sizeof(note) - 1);
			c->headlen += sizeof(note) - 1;
		} else if (changes) {
			char why[CONTROL_HEAD_MAX - 5];

			snprintf(why, sizeof(why), "%s (out of memory for "
			    "why; the log has it)", refused);
			control_error(c, why);
		} else
			control_error(c, "out of memory");
		return;
	}
	if (c->text.truncated) {
		log_warnx("control: %s: reply longer than %zu bytes", cmd,
		    control_reply_max());
		control_error(c, "reply too long");
		return;
	}
	if (refused != NULL)
		control_head(c, "ERR", refused);
	else
		control_head(c, "OK", "");
}

static void
control_dispatch(struct control_client *c)
{
	struct control *ctl = c->ctl;
	const struct control_ops *ops = ctl->ops;
	void (*show)(struct strbuf *, bool, void *) = NULL;
	const char *cmd, *err, *args, *refused = NULL;
	bool json, changes = false;	/* a command that changes the daemon */

	if (memchr(c->line, '\0', c->len) != NULL) {
		control_error(c, "malformed request");
		return;
	}
	c->line[c->len] = '\0';
	if (c->len > 0 && c->line[c->len - 1] == '\r')
		c->line[--c->len] = '\0';
	if (control_parse(c->line, &cmd, &json, &args, &err) == -1) {
		log_debug("control: bad request: %s", err);
		control_error(c, err);
		return;
	}
	log_debug("control: %s%s", cmd, json ? " json" : "");

	if (args != NULL && control_takes_args(cmd)) {
		if (ops->set_server == NULL) {
			control_error(c, "command not supported");
			return;
		}
		if (ops->set_server(&c->text, args, strcmp(cmd, "enable") == 0,
		    ctl->arg) == -1) {
			char why[200];

			/* one line, the text goes */
			snprintf(why, sizeof(why), "%.*s",
			    (int)strcspn(strbuf_str(&c->text), "\n"),
			    strbuf_str(&c->text));
			control_error(c, c->text.nomem ? "out of memory" : why);
			return;
		}
		/* done: a reply without memory is not taken for a refusal */
		control_answer(c, cmd, true, NULL);
		return;
	}

	if (strcmp(cmd, "conns") == 0 || (strcmp(cmd, "metrics") == 0 &&
	    ops->metrics_stream != NULL)) {
		int (*begin)(struct control_stream *, bool, const char **,
		    void *) = cmd[0] == 'c' ? ops->conns : ops->metrics_stream;

		if (begin == NULL) {
			control_error(c, "command not supported");
			return;
		}
		if (begin(&c->stream, json, &err, ctl->arg) == -1) {
			control_error(c, err);
			return;
		}
		c->streaming = true;
		control_head(c, "OK", "");
		return;
	}
	if (strcmp(cmd, "stats") == 0)
		show = ops->stats;
	else if (strcmp(cmd, "peers") == 0)
		show = ops->peers;
	else if (strcmp(cmd, "tls") == 0)
		show = ops->tls;
	else if (strcmp(cmd, "backends") == 0)
		show = ops->backends;
	else if (strcmp(cmd, "routes") == 0)
		show = ops->routes;
	else if (strcmp(cmd, "metrics") == 0)
		show = ops->metrics;
	else if (strcmp(cmd, "version") == 0)
		show = ops->version;

	if (strcmp(cmd, "upgrade") == 0) {
		if (!control_may_change(c, cmd, NULL, ops->upgrade != NULL))
			return;
		changes = true;
		if (ops->upgrade(&c->text, ctl->arg) == -1) {
			char why[300];
			const char *t = strbuf_str(&c->text);
			size_t len = 0;

			if (c->text.nomem) {
				control_error(c, "upgrade refused (out of "
				    "memory for why; the log has it)");
				return;
			}
			/* its lines on one, "; " between them */
			for (; *t != '\0' && len + 3 < sizeof(why); t++) {
				if (*t != '\n')
					why[len++] = *t;
				else if (t[1] != '\0') {
					why[len++] = ';';
					why[len++] = ' ';
				}
			}
			why[len] = '\0';
			control_error(c, why);
			return;
		}
	} else if (strcmp(cmd, "reload") == 0) {
		if (!control_may_change(c, cmd, args, args == NULL ?
		    ops->reload != NULL : ops->reload_step != NULL))
			return;
		changes = true;
		switch (args == NULL ? ops->reload(&c->text, ctl->arg) :
		    ops->reload_step(&c->text, args, ctl->arg)) {
		case 0:
			break;
		case CONTROL_RELOAD_STOPPING:
			control_error(c, "shutting down");
			return;
		default:
			refused = "reload refused";
			break;
		}
	} else if (strcmp(cmd, "reopen") == 0) {
		if (!control_may_change(c, cmd, NULL, ops->reopen != NULL))
			return;
		changes = true;
		if (ops->reopen(&c->text, ctl->arg) != 0)
			refused = "some log files were not reopened";
	} else if (show != NULL)
		show(&c->text, json, ctl->arg);
	else {
		control_error(c, "command not supported");
		return;
	}

	control_answer(c, cmd, changes, refused);
}

/*
 * Reads what the client sent; once its line is whole, answers it. True
 * while it is still to come, false once the client is answered or gone
 * (c may be freed).
 */
static bool
control_client_read(struct control_client *c)
{
	struct ev_loop *loop = c->ctl->loop;
	char *nl;
	ssize_t n;

	for (;;) {
		/* room for the NUL that replaces the newline */
		n = recv(c->fd, c->line + c->len, sizeof(c->line) - c->len,
		    MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return true;
			log_debug("control: read: %s", strerror(errno));
			control_client_free(c);
			return false;
		}
		if (n == 0) {
			/* EOF before a whole line: nothing to answer */
			control_client_free(c);
			return false;
		}
		nl = memchr(c->line + c->len, '\n', (size_t)n);
		c->len += (size_t)n;
		if (nl != NULL) {
			c->len = (size_t)(nl - c->line);
			break;
		}
		if (c->len == sizeof(c->line))
			break;		/* no newline in it */
	}
	c->end_line = control_wants_end(c->line, c->len);
	if (c->len == sizeof(c->line)) {
		log_debug("control: request longer than %d bytes",
		    CONTROL_MAX_LINE);
		control_error(c, "request too long");
	} else
		control_dispatch(c);
	if (!c->streaming)
		control_tail(c, NULL);
	/* one request per connection: whatever follows is ignored */
	ev_io_stop(loop, &c->rio);
	ev_timer_stop(loop, &c->timer);
	/* the reply's time from now: the command may have taken seconds */
	ev_now_update(loop);
	c->begun = c->taken = c->looked = ev_now(loop);
	ev_timer_set(&c->timer, control_look_every(c->ctl), 0.);
	ev_timer_start(loop, &c->timer);
	(void)control_client_write(c);
	return false;
}

static void
control_client_rcb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)control_client_read(w->data);
}

/*
 * A command that kept the loop for seconds (the supervisor of workers
 * asks them with a deadline) can leave a client's timer due in the same
 * turn as what the client sent in time, and the timer's callback may come
 * first: what came, or what it now takes, is looked at before giving up.
 */
static void
control_client_tcb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct control_client *c = w->data;
	struct control *ctl = c->ctl;
	double left, looked, taken;
	size_t sent;

	if (c->headlen == 0) {
		if (!control_client_read(c))
			return;
		log_debug("control: client sent no request in time");
		control_send_now(c->fd, "ERR timeout\n");
	} else {
		/*
		 * The socket says it is writable only once the client has
		 * taken most of what it holds: what this write finds room
		 * for was taken at some time since the last look, which is
		 * when it counts from (not now, which would give a client
		 * that stopped just after the last look a period more).
		 */
		looked = c->looked;
		taken = c->taken;
		sent = c->sent;
		c->looked = ev_now(loop);
		if (control_client_write(c))
			return;
		if (c->sent != sent)
			c->taken = MAX(looked, taken);
		/*
		 * Its time moves on while it takes some, up to a bound: a
		 * client that took a byte now and then could hold one of
		 * the CONTROL_MAX_CLIENTS places without end.
		 */
		left = MIN(c->taken + ctl->idle, c->begun + ctl->most) -
		    ev_now(loop);
		if (left > 0.) {
			ev_timer_set(&c->timer, MIN(left,
			    control_look_every(ctl)), 0.);
			ev_timer_start(loop, &c->timer);
			return;
		}
		if (c->taken + ctl->idle > c->begun + ctl->most)
			log_debug("control: client did not take its reply "
			    "within %.0f s", ctl->most);
		else
			log_debug("control: client took none of its reply "
			    "for %.0f s", ctl->idle);
	}
	control_client_free(c);
}

/*
 * Every place is taken: the one of the oldest client that has sent no
 * request yet goes to the new one. Clients that connect and say nothing
 * (local users with access to the socket) could otherwise keep the
 * operator out for as long as they kept coming; a real client sends its
 * request as it connects. Failing that, the one whose reply began the
 * longest ago, if that was at least the idle time ago: a client that
 * takes a byte of a long reply now and then holds its place up to the
 * reply's whole time (CONTROL_REPLY_TIME), and 16 such kept the operator
 * out for five minutes; its reply is cut (no end line). false when every
 * client is being answered, none for that long.
 */
static bool
control_make_room(struct control *ctl)
{
	struct control_client *c, *oldest = NULL, *slowest = NULL;
	double now = ev_now(ctl->loop);

	/* newest first in the list: the last idle one is the oldest */
	LIST_FOREACH(c, &ctl->clients, entry) {
		if (c->headlen == 0)
			oldest = c;
		else if (c->begun + ctl->idle <= now && (slowest == NULL ||
		    c->begun <= slowest->begun))
			slowest = c;
	}
	if (oldest != NULL) {
		log_debug("control: a client that sent nothing makes room");
		control_send_now(oldest->fd, "ERR busy\n");
		control_client_free(oldest);
		return true;
	}
	if (slowest == NULL)
		return false;
	log_info("control: a client that has taken its reply for %.0f s "
	    "makes room; its reply is cut", now - slowest->begun);
	control_client_free(slowest);
	return true;
}

static void
control_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct control *ctl = w->data;
	struct control_client *c;
	int fd, i;

	for (i = 0; i < CONTROL_ACCEPT_BATCH; i++) {
		fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			switch (errno) {
			case EINTR:
			case ECONNABORTED:
				continue;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				log_warn("control: accept");
				/* level triggered: pause rather than spin */
				ev_io_stop(loop, &ctl->accept_io);
				ev_timer_set(&ctl->pause, CONTROL_ACCEPT_PAUSE,
				    0.);
				ev_timer_start(loop, &ctl->pause);
				return;
			default:
				if (errno != EAGAIN && errno != EWOULDBLOCK)
					log_warn("control: accept");
				return;
			}
		}
		if (ctl->nclients >= CONTROL_MAX_CLIENTS &&
		    !control_make_room(ctl)) {
			log_debug("control: too many clients");
			control_send_now(fd, "ERR busy\n");
			close(fd);
			continue;
		}
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			log_warn("control: calloc");
			/* said, as busy is: not a socket closed unanswered */
			control_send_now(fd, "ERR out of memory\n");
			close(fd);
			continue;
		}
		c->ctl = ctl;
		c->fd = fd;
		strbuf_init(&c->text, control_reply_max() - CONTROL_HEAD_MAX -
		    1);
		ev_io_init(&c->rio, control_client_rcb, fd, EV_READ);
		ev_io_init(&c->wio, control_client_wcb, fd, EV_WRITE);
		ev_timer_init(&c->timer, control_client_tcb, CONTROL_TIMEOUT,
		    0.);
		c->rio.data = c->wio.data = c->timer.data = c;
		LIST_INSERT_HEAD(&ctl->clients, c, entry);
		ctl->nclients++;
		ev_io_start(loop, &c->rio);
		ev_timer_start(loop, &c->timer);
	}
}

static void
control_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct control *ctl = w->data;

	ev_io_start(loop, &ctl->accept_io);
}

/*
 * Removes a stale socket file at path. 0 when path is free now; -1 when it
 * is not a socket, or a daemon still listens on it (logged).
 */
static int
control_unlink_stale(const char *path, const struct sockaddr_un *sun)
{
	struct stat st;
	int fd, live;

	if (lstat(path, &st) == -1) {
		if (errno == ENOENT)
			return 0;
		log_err("control socket %s", path);
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_errx("control socket %s: exists and is not a socket",
		    path);
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		log_err("control socket %s: socket", path);
		return -1;
	}
	live = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
	if (live == -1 && (errno == EAGAIN || errno == EINPROGRESS))
		live = 0;	/* a listener with a full backlog */
	else if (live == -1 && errno != ECONNREFUSED && errno != ENOENT) {
		log_err("control socket %s: connect", path);
		close(fd);
		return -1;
	}
	close(fd);
	if (live == 0) {
		log_errx("control socket %s: in use by another running "
		    "daemon", path);
		return -1;
	}
	if (unlink(path) == -1 && errno != ENOENT) {
		log_err("control socket %s: unlink stale socket", path);
		return -1;
	}
	log_debug("control socket %s: removed a stale socket", path);
	return 0;
}

/*
 * bind() by root as uid and gid: the file is made theirs. Its file system
 * IDs are theirs for the call, which takes CAP_DAC_OVERRIDE away (raised
 * again: root may make it in a directory the user cannot write to), and
 * root's again after, which gives back every capability they took.
 */
static int
bind_as(int fd, const struct sockaddr_un *sun, uid_t uid, gid_t gid)
{
	struct __user_cap_header_struct hd = {
		.version = _LINUX_CAPABILITY_VERSION_3
	};
	struct __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3];
	int rc, saved;

	if (uid == (uid_t)-1 || geteuid() != 0)
		return bind(fd, (const struct sockaddr *)sun, sizeof(*sun));
	(void)setfsgid(gid);
	(void)setfsuid(uid);
	if ((gid_t)setfsgid((gid_t)-1) != gid ||
	    (uid_t)setfsuid((uid_t)-1) != uid) {
		rc = -1;
		saved = EPERM;
		goto back;
	}
	if (syscall(SYS_capget, &hd, caps) == 0) {
		caps[CAP_TO_INDEX(CAP_DAC_OVERRIDE)].effective |=
		    CAP_TO_MASK(CAP_DAC_OVERRIDE);
		(void)syscall(SYS_capset, &hd, caps);
	}
	rc = bind(fd, (const struct sockaddr *)sun, sizeof(*sun));
	saved = errno;
back:
	(void)setfsuid(geteuid());
	(void)setfsgid(getegid());
	errno = saved;
	return rc;
}

int
control_listen(const char *path, uid_t uid, gid_t gid)
{
	struct sockaddr_un sun;
	mode_t old;
	int fd, rc;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (path == NULL || *path == '\0' ||
	    strlen(path) >= sizeof(sun.sun_path)) {
		log_errx("control socket %s: path empty or longer than %zu "
		    "bytes", path ? path : "", sizeof(sun.sun_path) - 1);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path));

	if (control_unlink_stale(path, &sun) == -1)
		return -1;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		log_err("control socket %s: socket", path);
		return -1;
	}
	/*
	 * Made 0660 by the umask and the user's by the bind, not chmod()ed
	 * or chown()ed by path after: the directory may be the user's qproxy
	 * becomes (who removes the socket at exit), and a link put in the
	 * socket's place meanwhile, symbolic or hard, would have had root
	 * give the file it names to that user or its group.
	 */
	old = umask(0117);
	rc = bind_as(fd, &sun, uid, gid);
	umask(old);
	if (rc == -1) {
		if (errno == ENOENT)
			log_errx("control socket %s: bind: its directory does "
			    "not exist", path);
		else
			log_err("control socket %s: bind", path);
		close(fd);
		return -1;
	}
	if (listen(fd, CONTROL_BACKLOG) == -1) {
		log_err("control socket %s: listen", path);
		goto fail;
	}
	return fd;
fail:
	unlink(path);
	close(fd);
	return -1;
}

struct control *
control_serve(struct ev_loop *loop, int fd, const char *path, bool owner,
    const struct control_ops *ops, void *arg)
{
	struct control *ctl;

	if ((ctl = calloc(1, sizeof(*ctl))) == NULL ||
	    (ctl->path = strdup(path)) == NULL) {
		log_warn("control socket %s", path);
		free(ctl);
		return NULL;
	}
	ctl->loop = loop;
	ctl->fd = fd;
	ctl->owner = owner;
	ctl->ops = ops;
	ctl->arg = arg;
	ctl->idle = CONTROL_TIMEOUT;
	ctl->most = CONTROL_REPLY_TIME;
	LIST_INIT(&ctl->clients);
	ev_io_init(&ctl->accept_io, control_accept_cb, fd, EV_READ);
	ctl->accept_io.data = ctl;
	ev_timer_init(&ctl->pause, control_pause_cb, CONTROL_ACCEPT_PAUSE, 0.);
	ctl->pause.data = ctl;
	ev_io_start(loop, &ctl->accept_io);
	log_debug("control socket %s: listening", path);
	return ctl;
}

struct control *
control_open(struct ev_loop *loop, const char *path, uid_t uid, gid_t gid,
    const struct control_ops *ops, void *arg)
{
	struct control *ctl;
	int fd;

	if ((fd = control_listen(path, uid, gid)) == -1)
		return NULL;
	if ((ctl = control_serve(loop, fd, path, true, ops, arg)) == NULL) {
		unlink(path);
		close(fd);
	}
	return ctl;
}

void
control_set_reply_time(struct control *ctl, double idle, double most)
{
	ctl->idle = idle;
	ctl->most = most;
}

int
control_fd(const struct control *ctl)
{
	return ctl != NULL ? ctl->fd : -1;
}

void
control_disown(struct control *ctl)
{
	if (ctl == NULL || ctl->fd == -1)
		return;
	ev_io_stop(ctl->loop, &ctl->accept_io);
	ev_timer_stop(ctl->loop, &ctl->pause);
	close(ctl->fd);
	ctl->fd = -1;
	ctl->owner = false;
}

void
control_close(struct control *ctl)
{
	struct control_client *c;

	if (ctl == NULL)
		return;
	while ((c = LIST_FIRST(&ctl->clients)) != NULL)
		control_client_free(c);
	ev_io_stop(ctl->loop, &ctl->accept_io);
	ev_timer_stop(ctl->loop, &ctl->pause);
	if (ctl->fd != -1)
		close(ctl->fd);
	if (ctl->owner && unlink(ctl->path) == -1 && errno != ENOENT)
		log_warn("control socket %s: unlink", ctl->path);
	free(ctl->path);
	free(ctl);
}

int
control_end(const char *text, size_t *len, char *why, size_t whylen)
{
	const char *end, *nl;
	size_t n;

	if (whylen > 0)
		*why = '\0';
	if ((end = memchr(text, '\0', *len)) == NULL)
		return -1;
	n = *len - (size_t)(end - text);
	*len = (size_t)(end - text);
	/* one line, the reply's last */
	if ((nl = memchr(end, '\n', n)) == NULL || nl != end + n - 1)
		return -1;
	if (n == CONTROL_END_LEN && memcmp(end, CONTROL_END, n) == 0)
		return 1;
	if (n <= CONTROL_CUT_LEN || memcmp(end, CONTROL_CUT,
	    CONTROL_CUT_LEN) != 0)
		return -1;
	if (whylen > 0) {
		n -= CONTROL_CUT_LEN + 1;
		if (n >= whylen)
			n = whylen - 1;
		memcpy(why, end + CONTROL_CUT_LEN, n);
		why[n] = '\0';
	}
	return 0;
}

/*
 * "prepare ID [DIGEST]", "commit ID" or "abort ID": a worker's reload
 * step; DIGEST, 16 hex digits, that of the file the supervisor read.
 */
static bool
control_reload_step(const char *s)
{
	static const char *const steps[] = { "prepare ", "commit ", "abort " };
	size_t n;

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		if (strncmp(s, steps[i], strlen(steps[i])) != 0)
			continue;
		s += strlen(steps[i]);
		n = strspn(s, "0123456789");
		if (n == 0 || n > 19)
			return false;
		if (i == 0 && s[n] == ' ') {
			s += n + 1;
			n = strspn(s, "0123456789abcdef");
			return n == 16 && s[n] == '\0';
		}
		return s[n] == '\0';
	}
	return false;
}

/* Quotes a word from a request for an error message, printable only. */
static const char *
control_quote(const char *what, const char *word, size_t len)
{
	static char msg[96];
	char w[33];
	size_t i, n;

	n = len < sizeof(w) - 1 ? len : sizeof(w) - 1;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)word[i];

		w[i] = (ch >= 0x20 && ch < 0x7f && ch != '"') ? (char)ch : '?';
	}
	w[n] = '\0';
	snprintf(msg, sizeof(msg), "%s \"%s%s\"", what, w,
	    len > n ? "..." : "");
	return msg;
}

int
control_parse(const char *line, const char **cmd, bool *json,
    const char **args, const char **err)
{
	const char *p, *word, *arg;
	size_t magiclen = strlen(CONTROL_MAGIC), len, i;

	*cmd = NULL;
	*json = false;
	*args = NULL;
	if (*line == '\0') {
		*err = "empty request";
		return -1;
	}
	if ((strncmp(line, CONTROL_MAGIC, magiclen) != 0 &&
	    strncmp(line, CONTROL_MAGIC_END, magiclen) != 0) ||
	    (line[magiclen] != ' ' && line[magiclen] != '\0')) {
		*err = "bad protocol version";
		return -1;
	}
	p = line + magiclen;
	if (*p == '\0' || p[1] == '\0') {
		*err = "missing command";
		return -1;
	}
	word = ++p;
	len = strcspn(word, " ");
	if (len == 0) {
		*err = "malformed request";
		return -1;
	}
	for (i = 0; i < control_ncommands; i++)
		if (strlen(control_commands[i]) == len &&
		    strncmp(word, control_commands[i], len) == 0)
			break;
	if (i == control_ncommands) {
		*err = control_quote("unknown command", word, len);
		return -1;
	}
	p = word + len;
	if (control_takes_args(control_commands[i])) {
		/* "BACKEND SERVER": two words at least, printable */
		for (arg = p; *arg != '\0'; arg++)
			if (*arg < 0x20 || *arg > 0x7e)
				break;
		if (*p != ' ' || *arg != '\0' || p[1] == ' ' ||
		    strchr(p + 1, ' ') == NULL || p[strlen(p) - 1] == ' ') {
			*err = "expected BACKEND SERVER";
			return -1;
		}
		*args = p + 1;
	} else if (*p == ' ' && strcmp(control_commands[i], "reload") == 0 &&
	    control_reload_step(p + 1)) {
		*args = p + 1;
	} else if (*p == ' ') {
		arg = p + 1;
		if (strcmp(arg, "json") != 0 ||
		    !control_has_json(control_commands[i])) {
			*err = "unexpected argument";
			return -1;
		}
		*json = true;
	}
	*cmd = control_commands[i];
	return 0;
}
