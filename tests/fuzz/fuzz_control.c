/*
 * fuzz_control.c: the control socket's request parser, alone and behind a
 * real socket. The input is what a client sends: its first line goes to
 * control_parse, then all of it, followed by EOF, to a control socket
 * served in this process by an ev loop with fake commands. The reply must
 * be the one the parser's verdict calls for, with the end line of
 * QPROXY/2 (control.h) after it when the line was one.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "control.h"
#include "log.h"
#include "strbuf.h"
#include "fuzz.h"

static struct ev_loop	*loop;
static struct control	*ctl;
static char		 dir[] = "/tmp/fuzz_control.XXXXXX";
static struct sockaddr_un sun;

static void
fake_show(struct strbuf *out, bool json, void *arg)
{
	strbuf_printf(out, json ? "{\"ok\":true}" : "ok");
}

/* a long reply, streamed, so that writes take several rounds */
static int	conns_line;

static int
fake_conns_next(struct strbuf *out, const char **why, void *arg)
{
	while (out->len < CONTROL_CHUNK && conns_line < 4000)
		strbuf_printf(out, "%-60d\n", conns_line++);
	return conns_line < 4000;
}

static void
fake_conns_done(void *arg)
{
}

static int
fake_conns(struct control_stream *st, bool json, const char **err,
    void *arg)
{
	conns_line = 0;
	st->next = fake_conns_next;
	st->done = fake_conns_done;
	st->state = NULL;
	return 0;
}

static int
fake_reload(struct strbuf *out, void *arg)
{
	strbuf_printf(out, "test.conf:1: refused\n");
	return -1;
}

/* disable and enable: refused for a backend named "bad" */
static int
fake_set_server(struct strbuf *out, const char *args, bool on, void *arg)
{
	if (strncmp(args, "bad ", 4) == 0) {
		strbuf_printf(out, "no backend bad");
		return -1;
	}
	strbuf_printf(out, "%s %s\n", on ? "enabled" : "disabled", args);
	return 0;
}

static const struct control_ops ops = {
	.stats = fake_show,
	.conns = fake_conns,
	.tls = fake_show,
	.backends = fake_show,
	.reload = fake_reload,
	.set_server = fake_set_server,
	.version = fake_show,
};

static void
cleanup(void)
{
	control_close(ctl);
	rmdir(dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init(LOG_LEVEL_ERROR);
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/control.sock", dir);
	loop = ev_loop_new(EVFLAG_AUTO);
	if ((ctl = control_open(loop, sun.sun_path, (uid_t)-1,
	    (gid_t)-1, &ops, NULL)) == NULL) {
		fprintf(stderr, "control_open failed\n");
		exit(1);
	}
	atexit(cleanup);
	return 0;
}

/* The parser alone, on the first line as control.c cuts it. */
static void
check_parse(const char *line)
{
	const char *cmd, *err = NULL, *args;
	bool json, ok = false;
	size_t len = strlen(line);
	int rc = control_parse(line, &cmd, &json, &args, &err);

	if (rc == 0 && args != NULL && strcmp(cmd, "reload") == 0) {
		/*
		 * a worker's step: "prepare ID", "prepare ID DIGEST" (16
		 * lowercase hex digits), "commit ID", "abort ID"
		 */
		size_t w = strcspn(args, " "), id;
		const char *rest;

		FUZZ_CHECK(!json && args == line + 16);
		FUZZ_CHECK((w == 7 && strncmp(args, "prepare", 7) == 0) ||
		    (w == 6 && strncmp(args, "commit", 6) == 0) ||
		    (w == 5 && strncmp(args, "abort", 5) == 0));
		FUZZ_CHECK(args[w] == ' ');
		id = strspn(args + w + 1, "0123456789");
		rest = args + w + 1 + id;
		FUZZ_CHECK(id > 0 && id <= 19);
		FUZZ_CHECK(*rest == '\0' || (w == 7 && rest[0] == ' ' &&
		    strlen(rest + 1) == 16 &&
		    strspn(rest + 1, "0123456789abcdef") == 16));
	} else if (rc == 0 && args != NULL) {
		/* "QPROXY/N cmd BACKEND SERVER": printable, two words */
		FUZZ_CHECK(control_takes_args(cmd) && !json);
		FUZZ_CHECK(args == line + 9 + strlen(cmd) + 1);
		FUZZ_CHECK(strchr(args, ' ') != NULL && args[0] != ' ');
		for (const char *c = args; *c != '\0'; c++)
			FUZZ_CHECK(*c >= 0x20 && *c < 0x7f);
	} else if (rc == 0) {
		FUZZ_CHECK(cmd != NULL);
		for (size_t i = 0; i < control_ncommands; i++)
			if (strcmp(cmd, control_commands[i]) == 0)
				ok = true;
		FUZZ_CHECK(ok);
		FUZZ_CHECK(strncmp(line, "QPROXY/1 ", 9) == 0 ||
		    strncmp(line, "QPROXY/2 ", 9) == 0);
		FUZZ_CHECK(json == (len > 5 &&
		    strcmp(line + len - 5, " json") == 0));
		FUZZ_CHECK(strcmp(line + 9, cmd) == 0 ||
		    (json && strncmp(line + 9, cmd, len - 14) == 0 &&
		    strlen(cmd) == len - 14));
		FUZZ_CHECK(!json || control_has_json(cmd));
	} else {
		FUZZ_CHECK(cmd == NULL && err != NULL);
		FUZZ_CHECK(strlen(err) < 100);
		for (const char *c = err; *c != '\0'; c++)
			FUZZ_CHECK(*c >= 0x20 && *c < 0x7f);
	}
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Sends data then EOF, runs the loop until the daemon closes; returns the
 * reply (NUL-terminated, *len bytes).
 */
static char *
exchange(const uint8_t *data, size_t size, size_t *len)
{
	struct pollfd pfd;
	size_t sent = 0, cap = 1 << 16;
	char *reply;
	double deadline = now() + 20;
	bool shut = false;
	ssize_t n;
	int fd;

	if ((reply = malloc(cap)) == NULL)
		abort();
	*len = 0;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1 || connect(fd, (struct sockaddr *)&sun,
	    sizeof(sun)) == -1) {
		perror("connect");
		abort();
	}
	for (;;) {
		FUZZ_CHECK(now() < deadline);	/* the daemon answers */
		if (sent < size) {
			n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
			else if (n == -1 && errno != EAGAIN)
				sent = size;	/* closed early: fine */
		}
		if (sent == size && !shut) {
			(void)shutdown(fd, SHUT_WR);
			shut = true;
		}
		ev_run(loop, EVRUN_NOWAIT);
		n = recv(fd, reply + *len, cap - *len - 1, 0);
		if (n > 0) {
			*len += (size_t)n;
			if (cap - *len < 4096) {
				cap *= 2;
				if ((reply = realloc(reply, cap)) == NULL)
					abort();
			}
			continue;
		}
		if (n == 0 || (n == -1 && errno != EAGAIN))
			break;
		pfd.fd = fd;
		pfd.events = POLLIN;
		(void)poll(&pfd, 1, 0);
	}
	close(fd);
	reply[*len] = '\0';
	return reply;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl;
	char *line, *reply, *err_line;
	const char *cmd, *err, *args;
	size_t len, linelen, rawlen;
	bool json;
	int rc;

	if (size > 4 * CONTROL_MAX_LINE)
		return 0;
	nl = memchr(data, '\n', size);
	linelen = nl != NULL ? (size_t)(nl - data) : size;
	if ((line = malloc(linelen + 1)) == NULL)
		abort();
	memcpy(line, data, linelen);
	line[linelen] = '\0';
	if (linelen > 0 && line[linelen - 1] == '\r')
		line[linelen - 1] = '\0';
	check_parse(line);

	reply = exchange(data, size, &len);
	if (nl == NULL && size < CONTROL_MAX_LINE) {
		/* EOF before a whole line: no answer */
		FUZZ_CHECK(len == 0);
		goto out;
	}
	/*
	 * QPROXY/2, then a space or nothing (a CR before the newline): the
	 * end line of a whole reply, after the same reply as QPROXY/1's
	 */
	rawlen = nl != NULL && linelen < CONTROL_MAX_LINE ? linelen :
	    CONTROL_MAX_LINE;
	if (rawlen >= 8 && memcmp(data, "QPROXY/2", 8) == 0 && (rawlen == 8 ||
	    data[8] == ' ' || (rawlen == 9 && data[8] == '\r'))) {
		FUZZ_CHECK(len >= CONTROL_END_LEN && memcmp(reply + len -
		    CONTROL_END_LEN, CONTROL_END, CONTROL_END_LEN) == 0);
		len -= CONTROL_END_LEN;
		reply[len] = '\0';
	}
	FUZZ_CHECK(strlen(reply) == len);
	FUZZ_CHECK(len > 0 && reply[len - 1] == '\n');
	if (nl == NULL || linelen >= CONTROL_MAX_LINE) {
		FUZZ_CHECK(strcmp(reply, "ERR request too long\n") == 0);
		goto out;
	}
	if (memchr(data, '\0', linelen) != NULL) {
		FUZZ_CHECK(strcmp(reply, "ERR malformed request\n") == 0);
		goto out;
	}
	rc = control_parse(line, &cmd, &json, &args, &err);
	if (rc == -1) {
		if (asprintf(&err_line, "ERR %s\n", err) == -1)
			abort();
		FUZZ_CHECK(strcmp(reply, err_line) == 0);
		free(err_line);
	} else if (args != NULL && strcmp(cmd, "reload") == 0)
		/* a worker's step: no handler in ops */
		FUZZ_CHECK(strcmp(reply, "ERR command not supported\n") == 0);
	else if (args != NULL) {
		if (strncmp(args, "bad ", 4) == 0)
			FUZZ_CHECK(strcmp(reply, "ERR no backend bad\n") == 0);
		else {
			if (asprintf(&err_line, "OK\n%s %s\n",
			    strcmp(cmd, "enable") == 0 ? "enabled" :
			    "disabled", args) == -1)
				abort();
			FUZZ_CHECK(strcmp(reply, err_line) == 0);
			free(err_line);
		}
	} else if (strcmp(cmd, "peers") == 0 || strcmp(cmd, "metrics") == 0 ||
	    strcmp(cmd, "routes") == 0 || strcmp(cmd, "reopen") == 0 ||
	    strcmp(cmd, "upgrade") == 0)
		/* no handler in ops */
		FUZZ_CHECK(strcmp(reply, "ERR command not supported\n") == 0);
	else if (strcmp(cmd, "reload") == 0)
		FUZZ_CHECK(strcmp(reply,
		    "ERR reload refused\ntest.conf:1: refused\n") == 0);
	else if (strcmp(cmd, "conns") == 0)
		FUZZ_CHECK(strncmp(reply, "OK\n", 3) == 0 &&
		    len == 3 + 4000 * 61);
	else
		FUZZ_CHECK(strcmp(reply, json ? "OK\n{\"ok\":true}\n" :
		    "OK\nok\n") == 0);
out:
	free(reply);
	free(line);
	return 0;
}
