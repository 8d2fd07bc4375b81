/*
 * qproxyctl.c: asks a running qproxy for its statistics, connections and
 * backends, or to reload its configuration, over the control socket.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "control.h"
#include "strbuf.h"

#define CTL_DEFAULT_SOCKET	"/run/qproxy/control.sock"
#define CTL_TIMEOUT_MS		10000
/*
 * for the reply to a reload or an upgrade to begin: the daemon's own
 * deadlines for them come near ten seconds (with workers, 7 s for them to
 * make a reload ready and 2 s to apply it, after the supervisor's read;
 * 8 s for a new process to be ready), and its answer comes after them
 */
#define CTL_LONG_TIMEOUT_MS	20000
/* a reply is read whole, to its end: conns has no bound */
#define CTL_MAX_READ		(SIZE_MAX / 2)

static const char *ctl_socket = CTL_DEFAULT_SOCKET;
/* --http: one HTTP request on standard input, its answer on the output */
static int ctl_http;

#define CTL_HTTP_HEAD_MAX	8192	/* bytes of request head read */
#define CTL_HTTP_TIMEOUT_MS	5000	/* for the whole head */

/*
 * Writes a reply's text as it came, but for control bytes other than a
 * newline or a tab, C1 controls (U+0080 to U+009F, which terminals may
 * take for their 8-bit escapes) and bytes of no valid UTF-8 sequence,
 * which are written as \xNN: whatever is bound at the socket path cannot
 * move a terminal's cursor, retitle it or the like. A NUL follows p's len
 * bytes, somewhere (a strbuf's or a string's), which ends a sequence.
 */
static void
ctl_print(FILE *f, const char *p, size_t len)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = 0, run = 0, n;

	while (i < len) {
		if (u[i] < 0x80)
			n = (u[i] >= 0x20 && u[i] != 0x7f) || u[i] == '\n' ||
			    u[i] == '\t';
		else if ((n = bytes_utf8_len(u + i)) > len - i ||
		    (n > 0 && bytes_utf8_cp(u + i, n) <= 0x9f))
			n = 0;	/* cut short, or a C1 control */
		if (n > 0) {
			i += n;
			continue;
		}
		fwrite(p + run, 1, i - run, f);
		fprintf(f, "\\x%02x", u[i]);
		run = ++i;
	}
	fwrite(p + run, 1, len - run, f);
}

/* Writes an HTTP response; HEAD gets the head only. */
static void
ctl_http_respond(int status, const char *reason, const char *type,
    const char *body, size_t len, int head_only)
{
	printf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n", status,
	    reason, type, len);
	if (!head_only)
		fwrite(body, 1, len, stdout);
	fflush(stdout);
}

static void
ctl_http_error(int status, const char *reason)
{
	char body[128];
	int n = snprintf(body, sizeof(body), "%d %s\n", status, reason);

	ctl_http_respond(status, reason, "text/plain; charset=utf-8", body,
	    (size_t)n, 0);
}

/* The daemon could not be asked (said on stderr): exit 1. */
static __attribute__((noreturn)) void
ctl_die(void)
{
	if (ctl_http)
		ctl_http_error(503, "Service Unavailable");
	exit(1);
}

static void
ctl_usage(FILE *f)
{
	fprintf(f,
	    "usage: qproxyctl [-s socket] command [--json]\n"
	    "       qproxyctl [-s socket] disable|enable BACKEND SERVER\n"
	    "       qproxyctl [-s socket] --http metrics\n"
	    "commands:\n"
	    "  stats      counters: connections, requests, traffic, "
	    "listeners, backends\n"
	    "  conns      one line per live QUIC connection\n"
	    "  peers      the clients with the most connections open\n"
	    "  tls        each listener's certificates: expiry, host names\n"
	    "  backends   backend servers: state, requests, failures\n"
	    "  routes     each route: where to, requests by class, time\n"
	    "  metrics    the counters in Prometheus's text format\n"
	    "  reload     reload the configuration (like SIGHUP)\n"
	    "  reopen     reopen the log files (like SIGUSR1), for logrotate\n"
	    "  version    client and daemon versions\n"
	    "  upgrade    the binary on disk takes over, and the running\n"
	    "             process serves its connections until they end\n"
	    "  disable BACKEND SERVER\n"
	    "             new requests pass the server over (as written in\n"
	    "             the configuration); those under way finish\n"
	    "  enable BACKEND SERVER\n"
	    "             the server takes its turn again\n"
	    "Commands may be abbreviated to a unique prefix.\n"
	    "--http answers one HTTP GET of /metrics on standard input, as a\n"
	    "systemd socket with Accept=yes runs it (qproxy-metrics.socket).\n"
	    "The default socket is " CTL_DEFAULT_SOCKET ".\n");
}

static __attribute__((noreturn)) void
ctl_usage_error(void)
{
	ctl_usage(stderr);
	exit(2);
}

/* The command word abbreviated by s, or NULL (reported). */
static const char *
ctl_match(const char *s)
{
	const char *found = NULL;
	size_t i, n = strlen(s), nfound = 0;

	for (i = 0; i < control_ncommands; i++) {
		if (strcmp(s, control_commands[i]) == 0)
			return control_commands[i];
		if (n > 0 && strncmp(s, control_commands[i], n) == 0) {
			found = control_commands[i];
			nfound++;
		}
	}
	if (nfound == 1)
		return found;
	fprintf(stderr, "qproxyctl: %s command \"%s\"\n",
	    nfound == 0 ? "unknown" : "ambiguous", s);
	return NULL;
}

static long
ctl_remaining(const struct timespec *deadline)
{
	struct timespec now;
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (deadline->tv_sec - now.tv_sec) * 1000 +
	    (deadline->tv_nsec - now.tv_nsec) / 1000000;
	return ms > 0 ? ms : 0;
}

/* Waits for events on fd until the deadline: 0, or -1 on timeout. */
static int
ctl_wait(int fd, short events, const struct timespec *deadline)
{
	struct pollfd pfd;
	int n;

	for (;;) {
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		n = poll(&pfd, 1, (int)ctl_remaining(deadline));
		if (n > 0)
			return 0;
		if (n == 0)
			return -1;
		if (errno != EINTR) {
			fprintf(stderr, "qproxyctl: poll: %s\n",
			    strerror(errno));
			ctl_die();
		}
	}
}

static int
ctl_connect(const struct timespec *deadline)
{
	struct sockaddr_un sun;
	struct timeval tv;
	long ms;
	int fd, flags;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(ctl_socket) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "qproxyctl: %s: socket path too long\n",
		    ctl_socket);
		ctl_die();
	}
	memcpy(sun.sun_path, ctl_socket, strlen(ctl_socket));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		fprintf(stderr, "qproxyctl: socket: %s\n", strerror(errno));
		ctl_die();
	}
	/* a blocking connect waits while the backlog is full: bound it */
	ms = ctl_remaining(deadline);
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		if (errno == EINTR)
			continue;
		if (errno == ENOENT || errno == ECONNREFUSED)
			fprintf(stderr, "qproxyctl: cannot connect to %s: %s "
			    "(is qproxy running?)\n", ctl_socket,
			    strerror(errno));
		else if (errno == EAGAIN || errno == EINPROGRESS)
			fprintf(stderr, "qproxyctl: cannot connect to %s: "
			    "timed out\n", ctl_socket);
		else
			fprintf(stderr, "qproxyctl: cannot connect to %s: %s\n",
			    ctl_socket, strerror(errno));
		ctl_die();
	}
	if ((flags = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
		fprintf(stderr, "qproxyctl: fcntl: %s\n", strerror(errno));
		ctl_die();
	}
	return fd;
}

static __attribute__((noreturn)) void
ctl_timeout(size_t got, int first_ms)
{
	if (got == 0)
		fprintf(stderr, "qproxyctl: %s: no reply within %d seconds\n",
		    ctl_socket, first_ms / 1000);
	else
		fprintf(stderr, "qproxyctl: %s: nothing more of the reply "
		    "within %d seconds, after %zu bytes\n", ctl_socket,
		    CTL_TIMEOUT_MS / 1000, got);
	ctl_die();
}

/* Sends the request, in version magic, and reads all the reply into reply. */
static void
ctl_exchange(const char *magic, const char *cmd, const char *args, int json,
    struct strbuf *reply)
{
	struct timespec deadline;
	char req[CONTROL_MAX_LINE + 1], buf[65536];
	size_t len, off = 0;
	ssize_t n;
	int fd, send_err = 0, first_ms;

	first_ms = strcmp(cmd, "reload") == 0 || strcmp(cmd, "upgrade") == 0 ?
	    CTL_LONG_TIMEOUT_MS : CTL_TIMEOUT_MS;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += first_ms / 1000;
	fd = ctl_connect(&deadline);

	len = (size_t)snprintf(req, sizeof(req), "%s %s%s%s\n",
	    magic, cmd, json ? " json" : args != NULL ? " " : "",
	    args != NULL ? args : "");
	while (off < len) {
		n = send(fd, req + off, len - off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (ctl_wait(fd, POLLOUT, &deadline) == -1)
					ctl_timeout(0, first_ms);
				continue;
			}
			/* a daemon that refuses us ("ERR busy") closes at once */
			if (errno == EPIPE || errno == ECONNRESET) {
				send_err = errno;
				break;
			}
			fprintf(stderr, "qproxyctl: %s: send: %s\n",
			    ctl_socket, strerror(errno));
			ctl_die();
		}
		off += (size_t)n;
	}

	for (;;) {
		n = recv(fd, buf, sizeof(buf), 0);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (ctl_wait(fd, POLLIN, &deadline) == -1)
					ctl_timeout(reply->len, first_ms);
				continue;
			}
			/* the answer came, then the reset of a refusal */
			if (errno == ECONNRESET && reply->len > 0)
				break;
			fprintf(stderr, "qproxyctl: %s: recv: %s\n",
			    ctl_socket, strerror(errno));
			ctl_die();
		}
		if (n == 0)
			break;
		send_err = 0;	/* there is an answer to show */
		strbuf_append(reply, buf, (size_t)n);
		/* a long reply (conns) has its time while it comes */
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += CTL_TIMEOUT_MS / 1000;
		if (reply->truncated || reply->nomem) {
			fprintf(stderr, "qproxyctl: %s: reply of %zu bytes "
			    "and more: out of memory\n", ctl_socket, reply->len);
			ctl_die();
		}
	}
	if (send_err != 0) {
		fprintf(stderr, "qproxyctl: %s: send: %s\n", ctl_socket,
		    strerror(send_err));
		ctl_die();
	}
	close(fd);
}

/*
 * --http: reads the request head from standard input (a socket that
 * systemd accepted, or inetd's) within CTL_HTTP_TIMEOUT_MS. Returns 0 for
 * a GET or HEAD of /metrics (*head_only set for HEAD), or the status to
 * answer with.
 */
static int
ctl_http_request(int *head_only)
{
	struct timespec deadline;
	char buf[CTL_HTTP_HEAD_MAX + 1], *sp, *sp2, *eol, *target, *p;
	size_t len = 0, mlen, tlen, slen;
	ssize_t n;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += CTL_HTTP_TIMEOUT_MS / 1000;
	for (;;) {
		buf[len] = '\0';
		if (strstr(buf, "\r\n\r\n") != NULL ||
		    strstr(buf, "\n\n") != NULL)
			break;
		if (len == CTL_HTTP_HEAD_MAX)
			return 431;
		if (ctl_wait(STDIN_FILENO, POLLIN, &deadline) == -1)
			return 408;
		n = read(STDIN_FILENO, buf + len, CTL_HTTP_HEAD_MAX - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return 400;
		if (memchr(buf + len, '\0', (size_t)n) != NULL)
			return 400;
		len += (size_t)n;
	}
	/* METHOD SP TARGET SP HTTP/1.x */
	if ((eol = strchr(buf, '\n')) == NULL ||
	    (sp = memchr(buf, ' ', (size_t)(eol - buf))) == NULL ||
	    (sp2 = memchr(sp + 1, ' ', (size_t)(eol - sp - 1))) == NULL ||
	    strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
		return 400;
	mlen = (size_t)(sp - buf);
	if (!(mlen == 3 && memcmp(buf, "GET", 3) == 0) &&
	    !(mlen == 4 && memcmp(buf, "HEAD", 4) == 0))
		return 405;
	*head_only = mlen == 4;
	target = sp + 1;
	tlen = (size_t)(sp2 - target);
	/* absolute-form (RFC 9112 3.2.2), as a proxy sends: its path counts */
	slen = tlen > 7 && strncasecmp(target, "http://", 7) == 0 ? 7 :
	    tlen > 8 && strncasecmp(target, "https://", 8) == 0 ? 8 : 0;
	if (slen > 0) {
		if ((p = memchr(target + slen, '/', tlen - slen)) == NULL)
			return 404;
		tlen -= (size_t)(p - target);
		target = p;
	}
	if (!(tlen == 8 && memcmp(target, "/metrics", 8) == 0) &&
	    !(tlen > 8 && strncmp(target, "/metrics?", 9) == 0))
		return 404;
	return 0;
}

/*
 * After an answer to a request not read whole: the rest is read and
 * dropped for a moment, as a close with unread bytes would send the
 * client a reset that may come before the answer.
 */
static void
ctl_http_linger(void)
{
	struct timespec deadline;
	char buf[4096];
	size_t total = 0;
	ssize_t n;

	(void)shutdown(STDOUT_FILENO, SHUT_WR);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += 1;
	while (total < 65536 && ctl_wait(STDIN_FILENO, POLLIN, &deadline) == 0) {
		if ((n = read(STDIN_FILENO, buf, sizeof(buf))) == -1 &&
		    errno == EINTR)
			continue;
		if (n <= 0)
			break;
		total += (size_t)n;
	}
}

/* A reply that is not whole: said, after what of it came. */
static void
ctl_cut(int whole, const char *why)
{
	if (whole == 0) {
		fprintf(stderr, "qproxyctl: %s: the reply is incomplete: ",
		    ctl_socket);
		ctl_print(stderr, why, strlen(why));
		fputc('\n', stderr);
	} else
		fprintf(stderr, "qproxyctl: %s: the reply was cut short\n",
		    ctl_socket);
}

static const char *
ctl_http_reason(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 431: return "Request Header Fields Too Large";
	default: return "Service Unavailable";
	}
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "json",	no_argument,		NULL,	'j' },
		{ "socket",	required_argument,	NULL,	's' },
		{ "help",	no_argument,		NULL,	'h' },
		{ "http",	no_argument,		NULL,	'H' },
		{ NULL,		0,			NULL,	0 },
	};
	static const char old[] = "ERR bad protocol version\n";
	struct strbuf reply;
	const char *cmd, *p, *nl;
	char args[CONTROL_MAX_LINE], why[CONTROL_MAX_LINE];
	size_t len;
	int ch, json = 0, head_only = 0, status, n, whole = 1;

	while ((ch = getopt_long(argc, argv, "hHjs:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			ctl_usage(stdout);
			return 0;
		case 'H':
			ctl_http = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 's':
			ctl_socket = optarg;
			break;
		default:
			ctl_usage_error();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		fprintf(stderr, "qproxyctl: missing command\n");
		ctl_usage_error();
	}
	if ((cmd = ctl_match(argv[0])) == NULL)
		ctl_usage_error();
	if (control_takes_args(cmd)) {
		if (argc != 3) {
			fprintf(stderr, "qproxyctl: %s takes BACKEND SERVER\n",
			    cmd);
			ctl_usage_error();
		}
		n = snprintf(args, sizeof(args), "%s %s", argv[1], argv[2]);
		if (n < 0 || (size_t)n >= sizeof(args) - 32) {
			fprintf(stderr, "qproxyctl: arguments too long\n");
			ctl_usage_error();
		}
	} else if (argc != 1) {
		fprintf(stderr, "qproxyctl: too many arguments\n");
		ctl_usage_error();
	}
	if (json && (!control_has_json(cmd) || strcmp(cmd, "metrics") == 0)) {
		fprintf(stderr, "qproxyctl: %s has no JSON output\n", cmd);
		ctl_usage_error();
	}

	if (ctl_http && strcmp(cmd, "metrics") != 0) {
		fprintf(stderr, "qproxyctl: --http answers metrics only\n");
		ctl_usage_error();
	}
	if (ctl_http && (status = ctl_http_request(&head_only)) != 0) {
		ctl_http_error(status, ctl_http_reason(status));
		ctl_http_linger();
		return 1;
	}

	if (strcmp(cmd, "version") == 0 && !json) {
		printf("qproxyctl %s\n", QPROXY_VERSION);
		fflush(stdout);
	}

	/*
	 * QPROXY/2, whose reply ends with an end line; a daemon of a version
	 * before it (the one running while an upgrade installs this one)
	 * refuses it, having done nothing, and is asked again in QPROXY/1,
	 * whose reply ends at EOF, cut short or not.
	 */
	strbuf_init(&reply, CTL_MAX_READ);
	ctl_exchange(CONTROL_MAGIC_END, cmd, control_takes_args(cmd) ? args :
	    NULL, json, &reply);
	len = reply.len;
	if (len == sizeof(old) - 1 && memcmp(strbuf_str(&reply), old,
	    len) == 0) {
		strbuf_free(&reply);
		ctl_exchange(CONTROL_MAGIC, cmd, control_takes_args(cmd) ?
		    args : NULL, json, &reply);
		len = reply.len;
	} else if (len >= 3 && memcmp(strbuf_str(&reply), "OK\n", 3) == 0) {
		len -= 3;
		whole = control_end(strbuf_str(&reply) + 3, &len, why,
		    sizeof(why));
		len += 3;
	} else	/* an ERR's end line, if it has one (not "ERR busy") */
		(void)control_end(strbuf_str(&reply), &len, why, sizeof(why));

	p = strbuf_str(&reply);
	if (len >= 3 && memcmp(p, "OK\n", 3) == 0 && ctl_http) {
		if (whole != 1) {
			/* not to be taken for every figure there is */
			ctl_http_error(503, ctl_http_reason(503));
			ctl_cut(whole, why);
			strbuf_free(&reply);
			return 1;
		}
		ctl_http_respond(200, "OK", "text/plain; version=0.0.4; "
		    "charset=utf-8", p + 3, len - 3, head_only);
		strbuf_free(&reply);
		return ferror(stdout) ? 1 : 0;
	}
	if (len >= 3 && memcmp(p, "OK\n", 3) == 0) {
		/* what came, cut short or not, then whether it is whole */
		ctl_print(stdout, p + 3, len - 3);
		strbuf_free(&reply);
		if (fflush(stdout) == EOF || ferror(stdout)) {
			fprintf(stderr, "qproxyctl: stdout: %s\n",
			    strerror(errno));
			return 1;
		}
		if (whole != 1) {
			ctl_cut(whole, why);
			return 1;
		}
		return 0;
	}
	if (len >= 4 && memcmp(p, "ERR ", 4) == 0 &&
	    (nl = memchr(p, '\n', len)) != NULL) {
		if (ctl_http)
			ctl_http_error(503, ctl_http_reason(503));
		fputs("qproxyctl: ", stderr);
		ctl_print(stderr, p + 4, (size_t)(nl + 1 - (p + 4)));
		ctl_print(stderr, nl + 1, len - (size_t)(nl + 1 - p));
		strbuf_free(&reply);
		return 1;
	}
	if (ctl_http)
		ctl_http_error(503, ctl_http_reason(503));
	if (len == 0)
		fprintf(stderr, "qproxyctl: %s: the daemon closed the "
		    "connection without a reply\n", ctl_socket);
	else
		fprintf(stderr, "qproxyctl: %s: malformed reply\n",
		    ctl_socket);
	strbuf_free(&reply);
	return 1;
}
