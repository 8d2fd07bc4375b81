/*
 * test_control.c: the control protocol's parser, strbuf, and a scenario: a
 * daemon (a forked child running an ev loop with fake commands) serving
 * well-behaved, hostile and idle clients on a real Unix socket.
 */
#include <sys/fsuid.h>
#include <sys/param.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "control.h"
#include "log.h"
#include "strbuf.h"
#include "unit.h"
#include "unit_realloc.h"

/* ---- control_parse ---- */

static void
parse_ok(const char *line, const char *want, bool want_json)
{
	const char *cmd = NULL, *err = NULL, *args = "x";
	bool json = !want_json;

	CHECK_EQ_INT(control_parse(line, &cmd, &json, &args, &err), 0);
	CHECK_EQ_STR(cmd, want);
	CHECK_EQ_INT(json, want_json);
	CHECK(args == NULL);
}

static void
parse_bad(const char *line, const char *want_err)
{
	const char *cmd = "x", *err = NULL, *args;
	bool json = false;

	CHECK_EQ_INT(control_parse(line, &cmd, &json, &args, &err), -1);
	CHECK(cmd == NULL);
	CHECK_EQ_STR(err, want_err);
}

static void
test_parse(void)
{
	static const char *const cmds[] = {
		"stats", "conns", "peers", "tls", "backends", "routes", "reload",
		"reopen", "version",
	};
	char line[2048];
	const char *cmd, *err, *args;
	bool json;

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		snprintf(line, sizeof(line), "QPROXY/1 %s", cmds[i]);
		parse_ok(line, cmds[i], false);
		snprintf(line, sizeof(line), "QPROXY/1 %s json", cmds[i]);
		if (strcmp(cmds[i], "reload") == 0 ||
		    strcmp(cmds[i], "reopen") == 0)
			parse_bad(line, "unexpected argument");
		else
			parse_ok(line, cmds[i], true);
	}

	parse_bad("", "empty request");
	/* QPROXY/2 asks the same, for a reply with an end line */
	parse_ok("QPROXY/2 stats", "stats", false);
	parse_ok("QPROXY/2 conns json", "conns", true);
	parse_bad("QPROXY/2 reload json", "unexpected argument");
	parse_bad("QPROXY/2", "missing command");
	parse_bad("QPROXY/3 stats", "bad protocol version");
	parse_bad("QPROXY/21 stats", "bad protocol version");
	parse_bad("qproxy/1 stats", "bad protocol version");
	parse_bad("QPROXY/1stats", "bad protocol version");
	parse_bad("QPROXY/ stats", "bad protocol version");
	parse_bad("stats", "bad protocol version");
	parse_bad(" QPROXY/1 stats", "bad protocol version");
	parse_bad("\x01\x02\xff\xfe garbage", "bad protocol version");
	parse_bad("QPROXY/1", "missing command");
	parse_bad("QPROXY/1 ", "missing command");
	parse_bad("QPROXY/1  stats", "malformed request");
	parse_bad("QPROXY/1 frobnicate", "unknown command \"frobnicate\"");
	/* exact words only: prefixes are the client's business */
	parse_bad("QPROXY/1 st", "unknown command \"st\"");
	parse_bad("QPROXY/1 statsx", "unknown command \"statsx\"");
	parse_bad("QPROXY/1 STATS", "unknown command \"STATS\"");
	parse_bad("QPROXY/1 stats json json", "unexpected argument");
	parse_bad("QPROXY/1 stats  json", "unexpected argument");
	parse_bad("QPROXY/1 stats JSON", "unexpected argument");
	parse_bad("QPROXY/1 stats ", "unexpected argument");
	parse_bad("QPROXY/1 stats yaml", "unexpected argument");
	parse_bad("QPROXY/1 version --json", "unexpected argument");
	parse_bad("QPROXY/1 reload now", "unexpected argument");

	/* a worker's reload in steps, as its supervisor asks it */
	CHECK_EQ_INT(control_parse("QPROXY/2 reload prepare 12", &cmd, &json,
	    &args, &err), 0);
	CHECK_EQ_STR(cmd, "reload");
	CHECK_EQ_STR(args, "prepare 12");
	CHECK(!json);
	/* with the digest of the file the supervisor read */
	CHECK_EQ_INT(control_parse("QPROXY/2 reload prepare 12 "
	    "0123456789abcdef", &cmd, &json, &args, &err), 0);
	CHECK_EQ_STR(args, "prepare 12 0123456789abcdef");
	parse_bad("QPROXY/2 reload prepare 12 0123456789abcde",
	    "unexpected argument");
	parse_bad("QPROXY/2 reload prepare 12 0123456789abcdef0",
	    "unexpected argument");
	parse_bad("QPROXY/2 reload prepare 12 0123456789ABCDEF",
	    "unexpected argument");
	parse_bad("QPROXY/2 reload prepare 12 0123456789abcdef ",
	    "unexpected argument");
	parse_bad("QPROXY/2 reload commit 12 0123456789abcdef",
	    "unexpected argument");
	CHECK_EQ_INT(control_parse("QPROXY/2 reload commit 1", &cmd, &json,
	    &args, &err), 0);
	CHECK_EQ_STR(args, "commit 1");
	CHECK_EQ_INT(control_parse("QPROXY/2 reload abort "
	    "1234567890123456789", &cmd, &json, &args, &err), 0);
	CHECK_EQ_STR(args, "abort 1234567890123456789");
	parse_bad("QPROXY/2 reload abort 12345678901234567890",
	    "unexpected argument");
	parse_bad("QPROXY/2 reload prepare", "unexpected argument");
	parse_bad("QPROXY/2 reload prepare ", "unexpected argument");
	parse_bad("QPROXY/2 reload prepare  1", "unexpected argument");
	parse_bad("QPROXY/2 reload prepare x", "unexpected argument");
	parse_bad("QPROXY/2 reload prepare 1 ", "unexpected argument");
	parse_bad("QPROXY/2 reload commit 1 2", "unexpected argument");
	parse_bad("QPROXY/2 reload apply 1", "unexpected argument");
	parse_bad("QPROXY/2 reload prepare -1", "unexpected argument");
	parse_bad("QPROXY/2 reopen prepare 1", "unexpected argument");

	/* disable and enable: "BACKEND SERVER", the rest of the line */
	CHECK_EQ_INT(control_parse("QPROXY/1 disable app unix:/run/a b.sock",
	    &cmd, &json, &args, &err), 0);
	CHECK_EQ_STR(cmd, "disable");
	CHECK_EQ_STR(args, "app unix:/run/a b.sock");
	CHECK(!json);
	CHECK_EQ_INT(control_parse("QPROXY/1 enable app 127.0.0.1:8080",
	    &cmd, &json, &args, &err), 0);
	CHECK_EQ_STR(cmd, "enable");
	CHECK_EQ_STR(args, "app 127.0.0.1:8080");
	parse_bad("QPROXY/1 disable", "expected BACKEND SERVER");
	parse_bad("QPROXY/1 disable app", "expected BACKEND SERVER");
	parse_bad("QPROXY/1 disable app ", "expected BACKEND SERVER");
	parse_bad("QPROXY/1 disable  app x", "expected BACKEND SERVER");
	parse_bad("QPROXY/1 enable app x\x7f", "expected BACKEND SERVER");
	parse_bad("QPROXY/1 enable json", "expected BACKEND SERVER");

	/* a hostile word comes back printable, quoted once, and short */
	parse_bad("QPROXY/1 \x01\xff\"x\x1b[2J", "unknown command \"???x?[2J\"");
	memset(line, 0, sizeof(line));
	memcpy(line, "QPROXY/1 ", 9);
	memset(line + 9, 'a', 1000);
	CHECK_EQ_INT(control_parse(line, &cmd, &json, &args, &err), -1);
	CHECK(strlen(err) < 64);
	CHECK(strncmp(err, "unknown command \"aaaa", 21) == 0);
	CHECK(strcmp(err + strlen(err) - 4, "...\"") == 0);
}

/* ---- control_end: a QPROXY/2 reply's end line ---- */

static void
end_is(const char *text, size_t len, int want_rv, size_t want_len,
    const char *want_why)
{
	char why[16] = "x";

	CHECK_EQ_INT(control_end(text, &len, why, sizeof(why)), want_rv);
	CHECK_EQ_INT(len, want_len);
	CHECK_EQ_STR(why, want_why);
}

#define END_IS(text, rv, len, why) \
	end_is(text, sizeof(text) - 1, rv, len, why)

static void
test_end(void)
{
	size_t len;

	END_IS("rows\n\0END\n", 1, 5, "");
	END_IS("\0END\n", 1, 0, "");
	END_IS("rows\n\0CUT worker 1: no answer\n", 0, 5, "worker 1: no an");
	END_IS("\0CUT \n", 0, 0, "");
	/* none, or not where it belongs: cut short */
	END_IS("rows\n", -1, 5, "");
	END_IS("", -1, 0, "");
	END_IS("rows\n\0EN", -1, 5, "");
	END_IS("rows\n\0END", -1, 5, "");
	END_IS("rows\n\0END\nmore\n", -1, 5, "");
	END_IS("rows\n\0END\n\0END\n", -1, 5, "");
	END_IS("rows\n\0CUT", -1, 5, "");
	END_IS("rows\n\0OK\n", -1, 5, "");
	/* no room for why: still told apart */
	len = 7;
	CHECK_EQ_INT(control_end("\0CUT x\n", &len, NULL, 0), 0);
	CHECK_EQ_INT(len, 0);
}

/* ---- strbuf ---- */

static void
test_strbuf(void)
{
	struct strbuf b;
	char big[5000];

	strbuf_init(&b, 1 << 20);
	CHECK_EQ_STR(strbuf_str(&b), "");
	CHECK_EQ_INT(b.len, 0);
	for (int i = 0; i < 1000; i++)
		strbuf_printf(&b, "%d,", i % 10);
	CHECK_EQ_INT(b.len, 2000);
	CHECK(!b.truncated);
	CHECK(strncmp(strbuf_str(&b), "0,1,2,3,", 8) == 0);
	CHECK(strcmp(strbuf_str(&b) + 1996, "8,9,") == 0);
	/* one printf longer than strbuf_printf's stack buffer */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	strbuf_printf(&b, "[%s]", big);
	CHECK_EQ_INT(b.len, 2000 + 2 + sizeof(big) - 1);
	CHECK_EQ_INT(strlen(strbuf_str(&b)), b.len);
	CHECK(b.s[2000] == '[' && b.s[b.len - 1] == ']');
	strbuf_free(&b);
	CHECK_EQ_STR(strbuf_str(&b), "");
	CHECK_EQ_INT(b.len, 0);
	CHECK_EQ_INT(b.max, 1 << 20);

	/* the limit: cut, flagged, and never past it */
	strbuf_init(&b, 10);
	strbuf_append(&b, "hello", 5);
	CHECK(!b.truncated);
	strbuf_printf(&b, " %s!", "world");
	CHECK(b.truncated);
	CHECK_EQ_STR(strbuf_str(&b), "hello worl");
	strbuf_append(&b, "more", 4);
	CHECK_EQ_STR(strbuf_str(&b), "hello worl");
	CHECK_EQ_INT(b.len, 10);
	CHECK(b.cap <= 11);
	strbuf_free(&b);

	strbuf_init(&b, 100);
	strbuf_printf(&b, "%s", big);
	CHECK(b.truncated);
	CHECK_EQ_INT(b.len, 100);
	CHECK_EQ_INT(strlen(strbuf_str(&b)), 100);
	CHECK(!b.nomem);
	strbuf_free(&b);

	/* no memory: the text lost is said (nomem), not taken for too long */
	strbuf_init(&b, 1 << 20);
	strbuf_printf(&b, "kept\n");
	unit_realloc_fails = true;
	strbuf_printf(&b, "%s", big);		/* past the stack's buffer */
	CHECK(b.nomem);
	CHECK(!b.truncated);
	CHECK_EQ_STR(strbuf_str(&b), "kept\n");
	strbuf_clear(&b);
	CHECK(!b.nomem);
	strbuf_printf(&b, "%.300s", big);	/* within it, past the 256 */
	CHECK(b.nomem && !b.truncated);
	CHECK_EQ_STR(strbuf_str(&b), "");
	strbuf_clear(&b);
	strbuf_append(&b, big, 300);
	CHECK(b.nomem && !b.truncated);
	unit_realloc_fails = false;
	strbuf_clear(&b);
	strbuf_printf(&b, "%s", big);
	CHECK(!b.nomem);
	CHECK_EQ_INT(b.len, sizeof(big) - 1);
	/* over the limit and without memory: both said */
	strbuf_free(&b);
	strbuf_init(&b, 1000);
	unit_realloc_fails = true;
	strbuf_printf(&b, "%s", big);
	unit_realloc_fails = false;
	CHECK(b.nomem && b.truncated);
	CHECK_EQ_INT(b.len, 0);
	strbuf_free(&b);
	CHECK(!b.nomem && !b.truncated);

	/* JSON strings */
	strbuf_init(&b, 1024);
	strbuf_json_string(&b, "plain");
	CHECK_EQ_STR(strbuf_str(&b), "\"plain\"");
	strbuf_free(&b);
	strbuf_json_string(&b, "");
	CHECK_EQ_STR(strbuf_str(&b), "\"\"");
	strbuf_free(&b);
	strbuf_json_string(&b, "a\"b\\c\nd\te\x01\x1f\x7f/\xc3\xa9");
	CHECK_EQ_STR(strbuf_str(&b),
	    "\"a\\\"b\\\\c\\u000ad\\u0009e\\u0001\\u001f\\u007f/\xc3\xa9\"");
	strbuf_free(&b);
	/* bytes that are not UTF-8 (a lone, a cut, an overlong, a surrogate) */
	strbuf_json_string(&b, "\xff|\xc3|\xc0\xaf|\xed\xa0\x80|\xf0\x9f\x98\x80");
	CHECK_EQ_STR(strbuf_str(&b), "\"\\u00ff|\\u00c3|\\u00c0\\u00af|"
	    "\\u00ed\\u00a0\\u0080|\xf0\x9f\x98\x80\"");
	strbuf_free(&b);
	/* valid UTF-8 that ends lines or starts escapes: C1, U+2028, U+2029 */
	strbuf_json_string(&b, "\xc2\x80|\xc2\x85|\xc2\x9b|\xc2\x9f|\xc2\xa0|"
	    "\xe2\x80\xa7|\xe2\x80\xa8|\xe2\x80\xa9|\xe2\x80\xaa");
	CHECK_EQ_STR(strbuf_str(&b), "\"\\u0080|\\u0085|\\u009b|\\u009f|\xc2\xa0|"
	    "\xe2\x80\xa7|\\u2028|\\u2029|\xe2\x80\xaa\"");
	strbuf_free(&b);
}

/* ---- the scenario: a fake daemon and real clients ---- */

/* past CONTROL_MAX_REPLY: streamed, a reply has no bound */
#define BIG_REPLY	(CONTROL_MAX_REPLY + (1u << 20))

static int reloads;

static void
fake_stats(struct strbuf *out, bool json, void *arg)
{
	strbuf_printf(out, "fake stats json=%d", json);	/* no newline */
}

/* conns streams: those begun and not done, in the daemon */
static int streams_open;

struct fake_stream {
	bool		 json;
	unsigned	 line;		/* the next */
	unsigned	 text;		/* text conns before this one */
	char		 why[64];
};

/*
 * Two lines as two pieces, or BIG_REPLY bytes of numbered lines, about
 * CONTROL_CHUNK at a time. A piece must come to an empty buffer no
 * larger than a piece needs (the reply's memory is bounded), or the
 * reply is cut, which the client sees. Of the text ones, every third
 * (the second, fifth...) cannot go on after its first line, and every
 * third (the third, sixth...) ends with something missing; the seventh
 * is one last piece, longer than a reply's text may be.
 */
static int
fake_conns_next(struct strbuf *out, const char **why, void *arg)
{
	struct fake_stream *st = arg;

	if (out->len != 0 || out->cap > 2 * CONTROL_CHUNK)
		return -1;
	if (!st->json) {
		if (st->text == 6) {
			while (!out->truncated)
				strbuf_printf(out, "%0999u\n", st->line++);
			return 0;
		}
		if (st->line == 1 && st->text % 3 == 1) {
			strbuf_printf(out, "dropped\n");
			snprintf(st->why, sizeof(st->why), "line 2 lost\n\x01");
			*why = st->why;
			return -1;
		}
		strbuf_printf(out, "conn line %u\n", ++st->line);
		if (st->line == 2 && st->text % 3 == 2) {
			snprintf(st->why, sizeof(st->why), "line 3 missing");
			*why = st->why;
		}
		return st->line < 2;
	}
	while (out->len < CONTROL_CHUNK && st->line < BIG_REPLY / 64)
		strbuf_printf(out, "%063u\n", st->line++);
	return st->line < BIG_REPLY / 64;
}

static void
fake_conns_done(void *arg)
{
	streams_open--;
	free(arg);
}

static int
fake_conns(struct control_stream *cs, bool json, const char **err,
    void *arg)
{
	struct fake_stream *st;

	static unsigned texts;

	if ((st = calloc(1, sizeof(*st))) == NULL) {
		*err = "out of memory";
		return -1;
	}
	st->json = json;
	if (!json)
		st->text = texts++;
	cs->next = fake_conns_next;
	cs->done = fake_conns_done;
	cs->state = st;
	streams_open++;
	return 0;
}

static void
fake_backends(struct strbuf *out, bool json, void *arg)
{
	if (!json)
		return;		/* empty text */
	/* past CONTROL_MAX_REPLY */
	for (unsigned i = 0; i < CONTROL_MAX_REPLY / 1000 + 100; i++)
		strbuf_printf(out, "%0999u\n", i);
}

static int
fake_reload(struct strbuf *out, void *arg)
{
	switch (reloads++ % 3) {
	case 0:
		strbuf_printf(out, "x.conf:3: bad\nx.conf:7: worse\n");
		return -1;
	case 1:
		strbuf_printf(out, "configuration reloaded\n");
		return 0;
	default:
		/* anything in out is not sent */
		strbuf_printf(out, "ignored\n");
		return CONTROL_RELOAD_STOPPING;
	}
}

/* a worker's reload step: refuses a commit, takes the rest */
static int
fake_reload_step(struct strbuf *out, const char *step, void *arg)
{
	strbuf_printf(out, "step %s\n", step);
	return strncmp(step, "commit ", 7) == 0 ? -1 : 0;
}

/* fails with two lines, then succeeds without a word */
static int
fake_reopen(struct strbuf *out, void *arg)
{
	static unsigned reopens;

	if (reopens++ == 0) {
		strbuf_printf(out, "access log /x/a.log: Permission denied\n"
		    "worker 1: no answer\n");
		return -1;
	}
	return 0;
}

static void
fake_version(struct strbuf *out, bool json, void *arg)
{
	if (json)
		strbuf_printf(out, "{\"version\": \"test\"}\n");
	else
		strbuf_printf(out, "qproxy test\n");
}

/* refuses, with a message as long as its arguments make it */
static int
fake_set_server(struct strbuf *out, const char *args, bool on, void *arg)
{
	strbuf_printf(out, "no server %s in this backend\nsecond line\n", args);
	return -1;
}

/* refuses with two lines, then takes it */
static int
fake_upgrade(struct strbuf *out, void *arg)
{
	static unsigned upgrades;

	if (upgrades++ == 0) {
		strbuf_printf(out, "the new process exited before it was "
		    "ready\nprocess 7: exit status 1\n");
		return -1;
	}
	strbuf_printf(out, "process 8 took over\n");
	return 0;
}

/* A daemon started with it set has its text lose memory (fake_nomem). */
static bool lose_memory;

/* A line, then one lost for want of memory. */
static void
fake_metrics(struct strbuf *out, bool json, void *arg)
{
	strbuf_printf(out, "qproxy_fake 1\n");
	unit_realloc_fails = lose_memory;
	strbuf_printf(out, "qproxy_fake_label{x=\"%0600u\"} 2\n", 0);
	unit_realloc_fails = false;
}

/* Three pieces: the second loses memory (with more to come). */
static int
fake_nomem_next(struct strbuf *out, const char **why, void *arg)
{
	unsigned *piece = arg;

	switch ((*piece)++) {
	case 0:
		strbuf_printf(out, "conn line 1\n");
		return 1;
	case 1:
		strbuf_printf(out, "conn line 2\n");
		unit_realloc_fails = true;
		strbuf_printf(out, "%0600u\n", 3);
		unit_realloc_fails = false;
		return 1;
	default:
		strbuf_printf(out, "conn line 4\n");
		return 0;
	}
}

static int
fake_conns_nomem(struct control_stream *cs, bool json, const char **err,
    void *arg)
{
	unsigned *piece;

	if ((piece = calloc(1, sizeof(*piece))) == NULL) {
		*err = "out of memory";
		return -1;
	}
	cs->next = fake_nomem_next;
	cs->done = fake_conns_done;
	cs->state = piece;
	streams_open++;
	return 0;
}

static const struct control_ops fake_ops = {
	.set_server = fake_set_server,
	.stats = fake_stats,
	.conns = fake_conns,
	.backends = fake_backends,
	.reload = fake_reload,
	.reload_step = fake_reload_step,
	.reopen = fake_reopen,
	.version = fake_version,
	.upgrade = fake_upgrade,
	.metrics = fake_metrics,
};

/* Replies that lose memory: stats's whole, conns's second piece. */
static const struct control_ops nomem_ops = {
	.conns = fake_conns_nomem,
	.metrics = fake_metrics,
};

static void
daemon_sigterm(struct ev_loop *loop, ev_signal *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

/*
 * Forks a daemon serving path, with control_set_reply_time's idle and most
 * (but 0: the daemon's own). Returns its pid once it listens, or -1 when
 * control_open failed in it (the child has exited then).
 */
static pid_t
daemon_start_timed(const char *path, double idle, double most)
{
	struct ev_loop *loop;
	struct control *ctl;
	ev_signal sig;
	mode_t mask;
	int p[2];
	char ok;
	pid_t pid;

	if (pipe(p) == -1 || (pid = fork()) == -1) {
		perror("pipe/fork");
		exit(1);
	}
	if (pid == 0) {
		close(p[0]);
		loop = ev_default_loop(0);
		ev_signal_init(&sig, daemon_sigterm, SIGTERM);
		ev_signal_start(loop, &sig);
		mask = umask(0);
		umask(mask);
		ctl = control_open(loop, path, (uid_t)-1, (gid_t)-1,
		    lose_memory ? &nomem_ops : &fake_ops, NULL);
		if (ctl != NULL && idle > 0.)
			control_set_reply_time(ctl, idle, most);
		/* control_open puts the umask back */
		ok = ctl == NULL ? 'n' : umask(mask) != mask ? 'u' : 'y';
		if (write(p[1], &ok, 1) != 1)
			_exit(3);
		close(p[1]);
		if (ctl == NULL)
			exit(0);
		ev_run(loop, 0);
		control_close(ctl);
		ev_loop_destroy(loop);
		/* exit, not _exit: the leak checker runs; every stream done */
		exit(streams_open == 0 ? 0 : 4);
	}
	close(p[1]);
	if (read(p[0], &ok, 1) != 1)
		ok = '?';
	close(p[0]);
	CHECK(ok == 'y' || ok == 'n');
	if (ok != 'y') {
		waitpid(pid, NULL, 0);
		return -1;
	}
	return pid;
}

static pid_t
daemon_start(const char *path)
{
	return daemon_start_timed(path, 0., 0.);
}

/* SIGTERM, then the daemon must exit 0 (and leak-free under ASan). */
static void
daemon_stop(pid_t pid)
{
	int status;

	kill(pid, SIGTERM);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int
client_connect(const char *path)
{
	struct sockaddr_un sun;
	struct timeval tv = { 10, 0 };
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1) {
		perror("socket");
		exit(1);
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends what it can of data (the daemon may close early). */
static void
client_send(int fd, const char *data, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(fd, data, len, MSG_NOSIGNAL);
		if (n <= 0)
			return;
		data += n;
		len -= (size_t)n;
	}
}

/*
 * Reads until the daemon closes; *closed tells whether it did (EOF or
 * reset) rather than time out. The reply is NUL-terminated; free it.
 */
static char *
client_read(int fd, size_t *lenp, bool *closed)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap + 1);
	ssize_t n;

	*closed = false;
	for (;;) {
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
		}
		n = recv(fd, buf + len, cap - len, 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET)) {
			*closed = true;
			break;
		}
		if (n < 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (lenp != NULL)
		*lenp = len;
	return buf;
}

/* One exchange; the reply (free it), or NULL when connect failed. */
static char *
request_raw(const char *path, const char *data, size_t len, size_t *replylen)
{
	bool closed;
	char *reply;
	int fd;

	if ((fd = client_connect(path)) == -1)
		return NULL;
	client_send(fd, data, len);
	reply = client_read(fd, replylen, &closed);
	CHECK(closed);
	close(fd);
	return reply;
}

static void
expect(const char *path, const char *req, const char *want)
{
	char *reply = request_raw(path, req, strlen(req), NULL);

	CHECK_EQ_STR(reply, want);
	free(reply);
}

/* expect for a reply with NUL bytes (QPROXY/2's end line): want, n bytes */
static void
expect_n(const char *path, const char *req, const char *want, size_t n)
{
	size_t len;
	char *reply = request_raw(path, req, strlen(req), &len);

	CHECK(reply != NULL && len == n && memcmp(reply, want, n) == 0);
	if (reply != NULL && (len != n || memcmp(reply, want, n) != 0)) {
		fprintf(stderr, "%s: got %zu bytes:\n", req, len);
		for (size_t i = 0; i < len; i++)
			fprintf(stderr, reply[i] == '\0' ? "\\0" : "%c",
			    reply[i]);
		fprintf(stderr, "\n");
	}
	free(reply);
}

/* want: a string literal, NUL bytes in it and all */
#define EXPECT_N(path, req, want) \
	expect_n(path, req, want, sizeof(want) - 1)

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether fd gets exactly want and then EOF within seconds. */
static bool
gets_then_eof(int fd, const char *want, double seconds)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[256];
	size_t len = 0;
	ssize_t n;
	double end = now() + seconds;

	for (;;) {
		int ms = (int)((end - now()) * 1000);

		if (ms <= 0 || poll(&pfd, 1, ms) <= 0)
			return false;
		n = recv(fd, buf + len, sizeof(buf) - 1 - len, MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			return false;
	}
	buf[len] = '\0';
	if (strcmp(buf, want) != 0)
		fprintf(stderr, "got \"%s\", expected \"%s\"\n", buf, want);
	return strcmp(buf, want) == 0;
}

static void
test_commands(const char *path)
{
	expect(path, "QPROXY/1 stats\n", "OK\nfake stats json=0\n");
	expect(path, "QPROXY/1 stats json\n", "OK\nfake stats json=1\n");
	expect(path, "QPROXY/1 stats\r\n", "OK\nfake stats json=0\n");
	expect(path, "QPROXY/1 conns\n", "OK\nconn line 1\nconn line 2\n");
	/* QPROXY/1: a stream that cannot go on just ends; one short, whole */
	expect(path, "QPROXY/1 conns\n", "OK\nconn line 1\n");
	expect(path, "QPROXY/1 conns\n", "OK\nconn line 1\nconn line 2\n");
	/* QPROXY/2: the end line says which is which */
	EXPECT_N(path, "QPROXY/2 conns\n",
	    "OK\nconn line 1\nconn line 2\n\0END\n");
	EXPECT_N(path, "QPROXY/2 conns\n",
	    "OK\nconn line 1\n\0CUT line 2 lost??\n");
	EXPECT_N(path, "QPROXY/2 conns\n",
	    "OK\nconn line 1\nconn line 2\n\0CUT line 3 missing\n");
	/* its last piece too long: not sent, as one before it would not be */
	EXPECT_N(path, "QPROXY/2 conns\n",
	    "OK\n\0CUT a piece of the reply too long\n");
	/* every reply to a QPROXY/2 line has its end line, an ERR's too */
	EXPECT_N(path, "QPROXY/2 stats\n", "OK\nfake stats json=0\n\0END\n");
	EXPECT_N(path, "QPROXY/2 stats json\r\n",
	    "OK\nfake stats json=1\n\0END\n");
	EXPECT_N(path, "QPROXY/2 backends\n", "OK\n\0END\n");
	EXPECT_N(path, "QPROXY/2 tls\n", "ERR command not supported\n\0END\n");
	expect(path, "QPROXY/1 backends\n", "OK\n");
	/* a command known to the protocol whose daemon has no handler */
	expect(path, "QPROXY/1 tls\n", "ERR command not supported\n");
	expect(path, "QPROXY/1 version\n", "OK\nqproxy test\n");
	expect(path, "QPROXY/1 version json\n",
	    "OK\n{\"version\": \"test\"}\n");
	expect(path, "QPROXY/1 reload\n",
	    "ERR reload refused\nx.conf:3: bad\nx.conf:7: worse\n");
	expect(path, "QPROXY/1 reload\n", "OK\nconfiguration reloaded\n");
	expect(path, "QPROXY/1 reload\n", "ERR shutting down\n");
	expect(path, "QPROXY/1 reopen\n", "ERR some log files were not "
	    "reopened\naccess log /x/a.log: Permission denied\n"
	    "worker 1: no answer\n");
	expect(path, "QPROXY/1 reopen\n", "OK\n");
	expect(path, "QPROXY/1 reopen json\n", "ERR unexpected argument\n");
	/* its lines on one: "; " between them */
	expect(path, "QPROXY/1 upgrade\n", "ERR the new process exited before "
	    "it was ready; process 7: exit status 1\n");
	expect(path, "QPROXY/1 upgrade json\n", "ERR unexpected argument\n");
	expect(path, "QPROXY/1 upgrade\n", "OK\nprocess 8 took over\n");
	/* what follows the first line is ignored */
	expect(path, "QPROXY/1 version\nQPROXY/1 reload\n", "OK\nqproxy test\n");
	expect(path, "QPROXY/1 stats\n", "OK\nfake stats json=0\n");
	EXPECT_N(path, "QPROXY/2 reload\n", "ERR reload refused\n"
	    "x.conf:3: bad\nx.conf:7: worse\n\0END\n");
	EXPECT_N(path, "QPROXY/2 reload\n",
	    "OK\nconfiguration reloaded\n\0END\n");
	EXPECT_N(path, "QPROXY/2 reload\n", "ERR shutting down\n\0END\n");
	/* a step goes to its own handler, not to set_server's */
	EXPECT_N(path, "QPROXY/2 reload prepare 4\n",
	    "OK\nstep prepare 4\n\0END\n");
	EXPECT_N(path, "QPROXY/2 reload commit 4\n",
	    "ERR reload refused\nstep commit 4\n\0END\n");
	EXPECT_N(path, "QPROXY/2 reload now\n",
	    "ERR unexpected argument\n\0END\n");
	EXPECT_N(path, "QPROXY/2 disable b s\n",
	    "ERR no server b s in this backend\n\0END\n");
}

static void
test_errors(const char *path)
{
	static const char nul[] = "QPROXY/1 stats\0 json\n";
	char line[CONTROL_MAX_LINE + 2], *reply, *bin;
	size_t len;
	bool closed;
	int fd, bad = 0;

	expect(path, "\n", "ERR empty request\n");
	expect(path, "hello\n", "ERR bad protocol version\n");
	expect(path, "QPROXY/9 stats\n", "ERR bad protocol version\n");
	expect(path, "QPROXY/1 frobnicate\n",
	    "ERR unknown command \"frobnicate\"\n");
	expect(path, "QPROXY/1 reload json\n", "ERR unexpected argument\n");
	expect(path, "QPROXY/1 st\n", "ERR unknown command \"st\"\n");
	/* QPROXY/2's refusals have their end line; another version's not */
	EXPECT_N(path, "QPROXY/2 st\n", "ERR unknown command \"st\"\n\0END\n");
	EXPECT_N(path, "QPROXY/2\n", "ERR missing command\n\0END\n");
	EXPECT_N(path, "QPROXY/2 reload json\n",
	    "ERR unexpected argument\n\0END\n");
	expect(path, "QPROXY/2x stats\n", "ERR bad protocol version\n");
	expect(path, "QPROXY/3 stats\n", "ERR bad protocol version\n");

	/* a NUL inside the line */
	reply = request_raw(path, nul, sizeof(nul) - 1, NULL);
	CHECK_EQ_STR(reply, "ERR malformed request\n");
	free(reply);

	/* binary garbage: every byte value but newline, then without NUL */
	bin = malloc(600);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < 599; i++) {
			int v = (i * 37 + 11) % 256;

			if (v == '\n' || (pass == 1 && v == 0))
				v = 0xff;
			bin[i] = (char)v;
		}
		bin[599] = '\n';
		reply = request_raw(path, bin, 600, &len);
		CHECK(strncmp(reply, "ERR ", 4) == 0);
		CHECK(len > 4 && reply[len - 1] == '\n' &&
		    memchr(reply, '\n', len) == reply + len - 1);
		for (size_t i = 0; i < len - 1; i++)
			if ((unsigned char)reply[i] < 0x20 ||
			    (unsigned char)reply[i] >= 0x7f)
				bad++;
		free(reply);
	}
	CHECK_EQ_INT(bad, 0);
	free(bin);

	/* the longest line taken: CONTROL_MAX_LINE bytes with its newline */
	memset(line, 'a', sizeof(line));
	memcpy(line, "QPROXY/1 ", 9);
	line[CONTROL_MAX_LINE - 1] = '\n';
	reply = request_raw(path, line, CONTROL_MAX_LINE, NULL);
	CHECK(strncmp(reply, "ERR unknown command \"aaa", 24) == 0);
	free(reply);
	/* one byte more is too long */
	line[CONTROL_MAX_LINE - 1] = 'a';
	line[CONTROL_MAX_LINE] = '\n';
	reply = request_raw(path, line, CONTROL_MAX_LINE + 1, NULL);
	CHECK_EQ_STR(reply, "ERR request too long\n");
	free(reply);
	memcpy(line, "QPROXY/2 ", 9);
	reply = request_raw(path, line, CONTROL_MAX_LINE + 1, &len);
	CHECK(len == 21 + CONTROL_END_LEN &&
	    memcmp(reply, "ERR request too long\n" CONTROL_END, len) == 0);
	free(reply);

	/* 1 MiB without a newline: refused after CONTROL_MAX_LINE bytes */
	bin = malloc(1 << 20);
	memset(bin, 'x', 1 << 20);
	reply = request_raw(path, bin, 1 << 20, NULL);
	CHECK_EQ_STR(reply, "ERR request too long\n");
	free(reply);
	free(bin);

	/* a refusal too long for its line: cut, and said so */
	memset(line, 0, sizeof(line));
	snprintf(line, sizeof(line), "QPROXY/1 disable b %0200d\n", 0);
	reply = request_raw(path, line, strlen(line), &len);
	CHECK(strncmp(reply, "ERR no server b 000", 19) == 0);
	CHECK(len < 200 && len > 100 && strcmp(reply + len - 4, "...\n") == 0);
	free(reply);
	expect(path, "QPROXY/1 disable b s\n",
	    "ERR no server b s in this backend\n");

	/* EOF before a newline: closed without a word */
	fd = client_connect(path);
	CHECK(fd != -1);
	client_send(fd, "QPROXY/1 stats", 14);
	shutdown(fd, SHUT_WR);
	reply = client_read(fd, &len, &closed);
	CHECK(closed);
	CHECK_EQ_INT(len, 0);
	free(reply);
	close(fd);

}

static void
test_replies(const char *path)
{
	char *reply;
	size_t len;
	bool closed;
	int fd, bad = 0;

	/*
	 * a reply past CONTROL_MAX_REPLY to a slow reader: made as the
	 * client takes it, a piece at a time
	 */
	fd = client_connect(path);
	CHECK(fd != -1);
	client_send(fd, "QPROXY/1 conns json\n", 20);
	usleep(300 * 1000);
	reply = client_read(fd, &len, &closed);
	close(fd);
	CHECK(closed);
	CHECK_EQ_INT(len, 3 + BIG_REPLY);
	CHECK(strncmp(reply, "OK\n", 3) == 0);
	for (unsigned i = 0; i < BIG_REPLY / 64 && len == 3 + BIG_REPLY;
	    i++) {
		char want[65];

		snprintf(want, sizeof(want), "%063u\n", i);
		if (memcmp(reply + 3 + i * 64, want, 64) != 0)
			bad++;
	}
	CHECK_EQ_INT(bad, 0);
	free(reply);

	/* a reader that goes away in the middle */
	fd = client_connect(path);
	CHECK(fd != -1);
	client_send(fd, "QPROXY/1 conns json\n", 20);
	usleep(100 * 1000);
	close(fd);

	/* a reply past CONTROL_MAX_REPLY is refused, not cut */
	expect(path, "QPROXY/1 backends json\n", "ERR reply too long\n");
	expect(path, "QPROXY/1 backends\n", "OK\n");
}

/*
 * Asks for the BIG_REPLY of "conns json" in QPROXY/2 and takes it a piece
 * of piece bytes at a time, every seconds, after waiting first seconds:
 * the reply as it came (free it), *len bytes of it, and how long it took
 * the daemon to close.
 */
static char *
slow_reader(const char *path, double first, size_t piece, double every,
    size_t *len, double *took)
{
	size_t cap = 3 + BIG_REPLY + 64, round;
	char *buf = malloc(cap);
	double t0 = now();
	ssize_t n;
	int fd;

	*len = 0;
	CHECK((fd = client_connect(path)) != -1);
	client_send(fd, "QPROXY/2 conns json\n", 20);
	usleep((useconds_t)(first * 1e6));
	for (;;) {
		for (round = 0; round < piece && *len < cap; round += (size_t)n)
			if ((n = recv(fd, buf + *len, MIN(piece - round,
			    cap - *len), 0)) <= 0)
				goto closed;
			else
				*len += (size_t)n;
		usleep((useconds_t)(every * 1e6));
	}
closed:
	*took = now() - t0;
	CHECK(n == 0 || (n == -1 && errno == ECONNRESET));
	close(fd);
	return buf;
}

/* Whether a QPROXY/2 reply of len bytes is "OK", whole, with its end line. */
static bool
came_whole(const char *reply, size_t len)
{
	len -= 3;
	return strncmp(reply, "OK\n", 3) == 0 &&
	    control_end(reply + 3, &len, NULL, 0) == 1;
}

/*
 * A reply's time moves on while the client takes some (here, of a daemon
 * whose clients have half a second without taking any, 6 s in all).
 */
static void
test_reply_time(const char *path)
{
	char *reply;
	size_t len;
	double took;

	/* none of it taken for 1.2 s: let go after half a second */
	reply = slow_reader(path, 1.2, 1 << 20, 0., &len, &took);
	CHECK(len > 3 && len < 3 + BIG_REPLY && !came_whole(reply, len));
	free(reply);
	/* 2 MiB every quarter second: all of it, in 2 s and more */
	reply = slow_reader(path, 0., 2 << 20, .25, &len, &took);
	CHECK_EQ_INT(len, 3 + BIG_REPLY + CONTROL_END_LEN);
	CHECK(came_whole(reply, len));
	CHECK(took > 2. && took < 5.5);
	free(reply);
	/* 256 KiB every quarter second: 17 s for it all; 6 s are given */
	reply = slow_reader(path, 0., 256 << 10, .25, &len, &took);
	CHECK(len > 3 && len < 3 + BIG_REPLY / 2 && !came_whole(reply, len));
	CHECK(took > 5.5 && took < 8.);
	free(reply);
}

static void
test_busy(const char *path)
{
	int idle[20], nbusy = 0, ntimeout = 0;
	char *reply;
	double t0;

	/*
	 * 20 idle clients: each past CONTROL_MAX_CLIENTS takes the place of
	 * the oldest, which is told busy
	 */
	for (int i = 0; i < 20; i++) {
		CHECK((idle[i] = client_connect(path)) != -1);
		usleep(20 * 1000);	/* accepted in this order */
	}
	/* half a line is as good as nothing */
	client_send(idle[5], "QPROXY/1 st", 11);
	for (int i = 0; i < 20 - CONTROL_MAX_CLIENTS; i++) {
		nbusy += gets_then_eof(idle[i], "ERR busy\n", 3);
		close(idle[i]);
	}
	CHECK_EQ_INT(nbusy, 20 - CONTROL_MAX_CLIENTS);
	/* a request takes the place of the oldest idle one, too */
	expect(path, "QPROXY/1 version\n", "OK\nqproxy test\n");
	nbusy = gets_then_eof(idle[20 - CONTROL_MAX_CLIENTS], "ERR busy\n", 3);
	CHECK_EQ_INT(nbusy, 1);
	close(idle[20 - CONTROL_MAX_CLIENTS]);
	/* the other idle ones are dropped after 5 s */
	t0 = now();
	for (int i = 20 - CONTROL_MAX_CLIENTS + 1; i < 20; i++) {
		ntimeout += gets_then_eof(idle[i], "ERR timeout\n", 8);
		close(idle[i]);
	}
	CHECK_EQ_INT(ntimeout, CONTROL_MAX_CLIENTS - 1);
	CHECK(now() - t0 > 3.5 && now() - t0 < 7.5);
	expect(path, "QPROXY/1 version\n", "OK\nqproxy test\n");

	/* clients that close free their places at once */
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		CHECK((idle[i] = client_connect(path)) != -1);
	usleep(100 * 1000);
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		close(idle[i]);
	usleep(100 * 1000);
	reply = request_raw(path, "QPROXY/1 version\n", 17, NULL);
	CHECK_EQ_STR(reply, "OK\nqproxy test\n");
	free(reply);
}

/*
 * What a user who may write to the socket's directory can do between the
 * bind and what follows it: put a symbolic link in the socket's place.
 */
static const char *bind_swap_link;

int	__real_bind(int, const struct sockaddr *, socklen_t);
int	__wrap_bind(int, const struct sockaddr *, socklen_t);

int
__wrap_bind(int fd, const struct sockaddr *sa, socklen_t len)
{
	const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
	int rv = __real_bind(fd, sa, len);

	if (rv == 0 && bind_swap_link != NULL && sa->sa_family == AF_UNIX &&
	    rename(bind_swap_link, sun->sun_path) == -1)
		perror("rename");
	return rv;
}

/* A link put in the socket's place as it is bound: its file keeps its mode. */
static void
test_link_in_place(const char *dir)
{
	char path[256], link[256], target[256];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/swapped.sock", dir);
	snprintf(link, sizeof(link), "%s/link", dir);
	snprintf(target, sizeof(target), "%s/roots-file", dir);
	CHECK((fd = open(target, O_CREAT | O_WRONLY | O_EXCL, 0600)) != -1);
	close(fd);
	CHECK(chmod(target, 0600) == 0);
	CHECK(symlink(target, link) == 0);
	bind_swap_link = link;
	fd = control_listen(path, (uid_t)-1, (gid_t)-1);
	bind_swap_link = NULL;
	CHECK(lstat(path, &st) == 0 && S_ISLNK(st.st_mode));
	CHECK(stat(target, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 07777, 0600);
	if (fd != -1)
		close(fd);
	unlink(path);
	unlink(target);
}

/* This process's effective capabilities, as /proc says them. */
static unsigned long long
cap_eff(void)
{
	unsigned long long v = 0;
	char line[256];
	FILE *f;

	if ((f = fopen("/proc/self/status", "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "CapEff: %llx", &v) == 1)
			break;
	fclose(f);
	return v;
}

/*
 * Made by root for another user: the file is that user's from its bind, in
 * a directory only root may write to, and root makes files as root after.
 */
static void
test_owner(const char *dir)
{
	char path[256], after[256];
	unsigned long long caps = cap_eff();
	struct stat st;
	int fd;

	if (geteuid() != 0)
		return;
	snprintf(path, sizeof(path), "%s/owned.sock", dir);
	snprintf(after, sizeof(after), "%s/after", dir);
	CHECK(chmod(dir, 0700) == 0);
	CHECK((fd = control_listen(path, 4242, 4343)) != -1);
	CHECK(lstat(path, &st) == 0 && S_ISSOCK(st.st_mode));
	CHECK_EQ_INT(st.st_uid, 4242);
	CHECK_EQ_INT(st.st_gid, 4343);
	CHECK_EQ_INT(st.st_mode & 07777, 0660);
	CHECK_EQ_INT(setfsuid((uid_t)-1), 0);
	CHECK_EQ_INT(setfsgid((gid_t)-1), getegid());
	CHECK(caps != 0 && cap_eff() == caps);
	CHECK(mkdir(after, 0700) == 0 && lstat(after, &st) == 0 &&
	    st.st_uid == 0);
	if (fd != -1)
		close(fd);
	unlink(path);
	rmdir(after);
}

static void
test_scenario(void)
{
	char dir[] = "/tmp/qproxy-test-control.XXXXXX";
	char path[256], sub[256], file[256], timed[256], want[700];
	struct ev_loop *loop;
	struct stat st;
	pid_t pid, pid2;
	int fd, n;

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/control.sock", dir);
	snprintf(sub, sizeof(sub), "%s/missing/control.sock", dir);
	snprintf(file, sizeof(file), "%s/not-a-socket", dir);

	/* the umask must not decide the mode */
	umask(0);
	CHECK((pid = daemon_start(path)) > 0);
	CHECK(stat(path, &st) == 0);
	CHECK(S_ISSOCK(st.st_mode));
	CHECK_EQ_INT(st.st_mode & 07777, 0660);
	umask(022);

	test_commands(path);
	test_errors(path);
	test_replies(path);
	test_busy(path);
	/* after all that, it still serves */
	expect(path, "QPROXY/1 stats json\n", "OK\nfake stats json=1\n");

	/* one whose clients have half a second to take more, 6 s in all */
	snprintf(timed, sizeof(timed), "%s/timed.sock", dir);
	CHECK((pid2 = daemon_start_timed(timed, .5, 6.)) > 0);
	test_reply_time(timed);
	daemon_stop(pid2);

	/*
	 * one whose replies lose memory: refused, or cut after what was sent,
	 * and said so, never taken for whole or for too long
	 */
	snprintf(timed, sizeof(timed), "%s/nomem.sock", dir);
	lose_memory = true;
	CHECK((pid2 = daemon_start(timed)) > 0);
	lose_memory = false;
	EXPECT_N(timed, "QPROXY/2 metrics\n", "ERR out of memory\n\0END\n");
	/* (and one with no handler for a reload's steps) */
	EXPECT_N(timed, "QPROXY/2 reload prepare 1\n",
	    "ERR command not supported\n\0END\n");
	expect(timed, "QPROXY/1 metrics\n", "ERR out of memory\n");
	EXPECT_N(timed, "QPROXY/2 conns\n",
	    "OK\nconn line 1\n\0CUT out of memory\n");
	expect(timed, "QPROXY/1 conns\n", "OK\nconn line 1\n");
	daemon_stop(pid2);
	/* the same text with memory, whole */
	n = snprintf(want, sizeof(want), "OK\nqproxy_fake 1\n"
	    "qproxy_fake_label{x=\"%0600u\"} 2\n", 0);
	memcpy(want + n, "\0END\n", 5);
	expect_n(path, "QPROXY/2 metrics\n", want, (size_t)n + 5);

	/* a second daemon on a live socket is refused; the first lives on */
	loop = ev_loop_new(0);
	CHECK(control_open(loop, path, (uid_t)-1, (gid_t)-1, &fake_ops,
	    NULL) == NULL);
	ev_loop_destroy(loop);
	pid2 = daemon_start(path);
	CHECK(pid2 == -1);
	if (pid2 > 0)
		daemon_stop(pid2);
	expect(path, "QPROXY/1 version\n", "OK\nqproxy test\n");

	/* a daemon that dies leaves its socket; the next one replaces it */
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
	CHECK(request_raw(path, "QPROXY/1 version\n", 17, NULL) == NULL);
	CHECK((pid2 = daemon_start(path)) > 0);
	expect(path, "QPROXY/1 version\n", "OK\nqproxy test\n");
	CHECK(stat(path, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 07777, 0660);

	/* control_close removes the socket file */
	daemon_stop(pid2);
	CHECK(stat(path, &st) == -1 && errno == ENOENT);

	/* nothing but a stale socket is ever removed */
	CHECK((fd = open(file, O_CREAT | O_WRONLY, 0644)) != -1);
	close(fd);
	loop = ev_loop_new(0);
	CHECK(control_open(loop, file, (uid_t)-1, (gid_t)-1, &fake_ops,
	    NULL) == NULL);
	CHECK(stat(file, &st) == 0 && S_ISREG(st.st_mode));
	/* no directory: a clear failure */
	CHECK(control_open(loop, sub, (uid_t)-1, (gid_t)-1, &fake_ops,
	    NULL) == NULL);
	ev_loop_destroy(loop);

	test_link_in_place(dir);
	test_owner(dir);

	unlink(file);
	CHECK(rmdir(dir) == 0);
}

int
main(void)
{
	log_init(LOG_LEVEL_ERROR);
	signal(SIGPIPE, SIG_IGN);
	test_parse();
	test_end();
	test_strbuf();
	test_scenario();
	UNIT_DONE();
}
