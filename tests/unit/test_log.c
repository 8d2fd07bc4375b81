/* test_log.c: the error log to a file, the access log in text and JSON,
 * escaping, the line cap, reopening after rotation, and write failures. */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "strbuf.h"
#include "unit.h"

static char dir[64], dir2[80];

/* dir/name, in one of four static buffers used in turn. */
static const char *
tpath(const char *name)
{
	static char	bufs[4][256];
	static int	i;

	i = (i + 1) % 4;
	snprintf(bufs[i], sizeof(bufs[i]), "%s/%s", dir, name);
	return bufs[i];
}

/* The whole of a file, NUL-terminated; free it. NULL if it is missing. */
static char *
slurp(const char *path)
{
	FILE	*f;
	char	*buf;
	long	 len;

	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	if ((buf = malloc((size_t)len + 1)) == NULL ||
	    fread(buf, 1, (size_t)len, f) != (size_t)len) {
		free(buf);
		fclose(f);
		return NULL;
	}
	buf[len] = '\0';
	fclose(f);
	return buf;
}

static int
count_lines(const char *s)
{
	int	n = 0;

	for (; s != NULL && *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

static int
json_valid(const char *path)
{
	char	cmd[512];

	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c 'import json,sys; "
	    "[json.loads(l) for l in open(sys.argv[1], encoding=\"utf-8\")]' "
	    "%s", path);
	return system(cmd) == 0;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
static int
is_timestamp(const char *s)
{
	const char	*pat = "dddd-dd-ddTdd:dd:dd.dddZ";

	for (; *pat != '\0'; pat++, s++) {
		if (*pat == 'd' ? (*s < '0' || *s > '9') : *s != *pat)
			return 0;
	}
	return 1;
}

/* Runs fn with fd 2 sent to a file, and returns what it wrote there. */
static char *
capture_stderr(void (*fn)(void))
{
	char	 path[256];
	int	 fd, saved;
	char	*out;

	snprintf(path, sizeof(path), "%s/stderr.out", dir);

	fflush(stderr);
	saved = dup(STDERR_FILENO);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (saved == -1 || fd == -1)
		return NULL;
	dup2(fd, STDERR_FILENO);
	close(fd);
	fn();
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	out = slurp(path);
	unlink(path);
	return out;
}

static const struct access_entry sample = {
	.time = 1764079200.5,
	.client = "192.0.2.1:4433",
	.authority = "example.com",
	.method = "GET",
	.path = "/a\"b c\r\n\x01" "d\\e",
	.status = 200,
	.req_bytes = 0,
	.resp_bytes = 1234,
	.duration = 0.25,
	.backend = "127.0.0.1:8080",
	.quic_version = 1,
	.route = "a\"pp",
	.user = "j\\o",
	.client_cert = "Hash=ab;Subject=\"/CN=a\\\"b\"",
	.backend_time = 0.125,
	.gzip = true,
	.gzip_bytes = 345,
};

static const struct access_entry reset = {
	.time = 1764079200.0004,
	.client = "[2001:db8::1]:443",
	.authority = "",
	.method = NULL,
	.path = "",
	.status = 0,
	.req_bytes = 7,
	.resp_bytes = 0,
	.duration = 1.9996,
	.backend = "-",
	.quic_version = 0x6b3343cf,
	.backend_time = -1,
};

static void
test_error_log(void)
{
	const char	*path = tpath("error.log");
	char		*s, before[16], after[16];
	time_t		 t;
	struct stat	 st;

	t = time(NULL);
	strftime(before, sizeof(before), "%Y-%m-%d", gmtime(&t));
	CHECK_EQ_INT(log_open(path), 0);
	log_warnx("hello %d", 1);
	errno = ENOENT;
	log_warn("open %s", "x");
	log_debug("not at this level");
	t = time(NULL);
	strftime(after, sizeof(after), "%Y-%m-%d", gmtime(&t));

	s = slurp(path);
	CHECK(s != NULL);
	if (s != NULL) {
		CHECK_EQ_INT(count_lines(s), 2);
		CHECK(is_timestamp(s));
		CHECK(strncmp(s, before, 10) == 0 || strncmp(s, after, 10) == 0);
		CHECK(strncmp(s + 24, " qproxy[warn]: hello 1\n", 23) == 0);
		CHECK(is_timestamp(s + 47));
		CHECK_EQ_STR(s + 71, " qproxy[warn]: open x: "
		    "No such file or directory\n");
		free(s);
	}
	CHECK_EQ_INT(stat(path, &st), 0);
	CHECK_EQ_INT(st.st_mode & 0777, 0640);

	/* A failed open keeps the file. */
	errno = 0;
	CHECK_EQ_INT(log_open(tpath("nodir/error.log")), -1);
	CHECK_EQ_INT(errno, ENOENT);
	log_warnx("still here");
	s = slurp(path);
	CHECK(s != NULL && count_lines(s) == 3 &&
	    strstr(s, "qproxy[warn]: still here\n") != NULL);
	free(s);

	/* A file with another name is refused, and so is that name. */
	CHECK_EQ_INT(link(path, tpath("linked.log")), 0);
	errno = 0;
	CHECK_EQ_INT(log_open(tpath("linked.log")), -1);
	CHECK_EQ_INT(errno, EMLINK);
	CHECK_EQ_STR(log_file_strerror(errno),
	    "the file has other hard links, which is refused");
	CHECK_EQ_INT(unlink(tpath("linked.log")), 0);
}

static void
say_warn(void)
{
	log_warnx("to stderr");
	log_errx("and %s", "again");
}

static void
test_error_stderr(void)
{
	char	*s;

	CHECK_EQ_INT(log_open("stderr"), 0);
	s = capture_stderr(say_warn);
	CHECK_EQ_STR(s, "qproxy[warn]: to stderr\nqproxy[error]: and again\n");
	free(s);
	CHECK_EQ_INT(log_open(NULL), 0);
	s = capture_stderr(say_warn);
	CHECK_EQ_STR(s, "qproxy[warn]: to stderr\nqproxy[error]: and again\n");
	free(s);
}

/* As if stderr, now the capture's file, were the journal systemd gave. */
static void
say_to_journal(void)
{
	char		env[64];
	struct stat	st;

	if (fstat(STDERR_FILENO, &st) == -1)
		return;
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
	    (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", env, 1);
	log_init(LOG_LEVEL_DEBUG);
	say_warn();
	log_info("then %s", "info");
	log_debug("and debug");
	/* another stream: not the journal */
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
	    (unsigned long long)st.st_ino + 1);
	setenv("JOURNAL_STREAM", env, 1);
	log_init(LOG_LEVEL_INFO);
	log_warnx("plain");
	unsetenv("JOURNAL_STREAM");
}

static void
test_error_journal(void)
{
	char	*s;

	CHECK_EQ_INT(log_open("stderr"), 0);
	s = capture_stderr(say_to_journal);
	CHECK_EQ_STR(s, "<4>qproxy[warn]: to stderr\n"
	    "<3>qproxy[error]: and again\n"
	    "<6>qproxy[info]: then info\n"
	    "<7>qproxy[debug]: and debug\n"
	    "qproxy[warn]: plain\n");
	free(s);
}

static void
test_access_text(void)
{
	const char		*path = tpath("access.log");
	struct access_entry	 e = sample;
	char			*s;
	struct stat		 st;

	CHECK_EQ_INT(access_log_open(path, 0), 0);
	access_log_write(&sample);
	access_log_write(&reset);
	e.authority = "a b\"";
	e.method = "G T";
	e.backend = "unix:/run/my app.sock";
	e.path = "/\xc3\xa9\xff";
	e.status = 404;
	e.duration = 12.3456;
	access_log_write(&e);
	/* request_id_header on: the ID last */
	e = sample;
	e.request_id = "0123456789abcdef0123456789abcdef";
	access_log_write(&e);
	s = slurp(path);
	CHECK_EQ_STR(s,
	    "2025-11-25T14:00:00.500Z 192.0.2.1:4433 example.com "
	    "\"GET /a\\x22b c\\x0D\\x0A\\x01d\\x5Ce\" 200 0 1234 0.250 "
	    "127.0.0.1:8080 0x1\n"
	    "2025-11-25T14:00:00.000Z [2001:db8::1]:443 - \"- -\" - 7 0 "
	    "2.000 - 0x6b3343cf\n"
	    "2025-11-25T14:00:00.500Z 192.0.2.1:4433 a\\x20b\\x22 "
	    "\"G\\x20T /\\xC3\\xA9\\xFF\" 404 0 1234 12.346 "
	    "unix:/run/my\\x20app.sock 0x1\n"
	    "2025-11-25T14:00:00.500Z 192.0.2.1:4433 example.com "
	    "\"GET /a\\x22b c\\x0D\\x0A\\x01d\\x5Ce\" 200 0 1234 0.250 "
	    "127.0.0.1:8080 0x1 0123456789abcdef0123456789abcdef\n");
	free(s);
	CHECK_EQ_INT(stat(path, &st), 0);
	CHECK_EQ_INT(st.st_mode & 0777, 0640);
	access_log_close();
	unlink(path);
}

/* combined: NCSA's fields, the text format's escapes, "-" for none */
static void
test_access_combined(void)
{
	const char		*path = tpath("access.combined");
	struct access_entry	 e = sample;
	char			*s;

	CHECK_EQ_INT(access_log_open(path, ACCESS_COMBINED), 0);
	e.referer = "https://example.com/a b";
	e.user_agent = "Mozilla/5.0 \"x\"\x01";
	access_log_write(&e);
	access_log_write(&reset);
	s = slurp(path);
	CHECK_EQ_STR(s,
	    "192.0.2.1:4433 - j\\x5Co [25/Nov/2025:14:00:00 +0000] "
	    "\"GET /a\\x22b c\\x0D\\x0A\\x01d\\x5Ce HTTP/3\" 200 1234 "
	    "\"https://example.com/a b\" \"Mozilla/5.0 \\x22x\\x22\\x01\"\n"
	    "[2001:db8::1]:443 - - [25/Nov/2025:14:00:00 +0000] "
	    "\"- - HTTP/3\" - - \"-\" \"-\"\n");
	free(s);
	access_log_close();
	unlink(path);
}

static void
test_access_json(void)
{
	const char		*path = tpath("access.json");
	struct access_entry	 e = sample;
	char			*s;

	CHECK_EQ_INT(access_log_open(path, 1), 0);
	access_log_write(&sample);
	access_log_write(&reset);
	e.authority = NULL;
	e.path = "/\xc3\xa9\xff\xc3(\xed\xa0\x80\xf0\x9f\x98\x80\x7f\t"
	    "\xc2\x85\xc2\x9b\xc2\xa0\xe2\x80\xa9";
	e.method = "\xe2\x80\xa8";
	access_log_write(&e);
	e = sample;
	e.request_id = "0123456789abcdef0123456789abcdef";
	access_log_write(&e);
	s = slurp(path);
	CHECK_EQ_STR(s,
	    "{\"time\":\"2025-11-25T14:00:00.500Z\",\"client\":\"192.0.2.1:4433\","
	    "\"authority\":\"example.com\",\"method\":\"GET\","
	    "\"path\":\"/a\\\"b c\\u000d\\u000a\\u0001d\\\\e\",\"status\":200,"
	    "\"request_bytes\":0,\"response_bytes\":1234,\"duration\":0.250,"
	    "\"backend\":\"127.0.0.1:8080\",\"quic_version\":\"0x1\","
	    "\"route\":\"a\\\"pp\",\"user\":\"j\\\\o\","
	    "\"client_cert\":\"Hash=ab;Subject=\\\"/CN=a\\\\\\\"b\\\"\","
	    "\"backend_time\":0.125,\"gzip_bytes\":345}\n"
	    "{\"time\":\"2025-11-25T14:00:00.000Z\","
	    "\"client\":\"[2001:db8::1]:443\",\"authority\":\"\","
	    "\"method\":\"\",\"path\":\"\",\"status\":null,"
	    "\"request_bytes\":7,\"response_bytes\":0,\"duration\":2.000,"
	    "\"backend\":\"-\",\"quic_version\":\"0x6b3343cf\","
	    "\"route\":null,\"user\":null,\"client_cert\":null,\"backend_time\":null,"
	    "\"gzip_bytes\":null}\n"
	    "{\"time\":\"2025-11-25T14:00:00.500Z\",\"client\":\"192.0.2.1:4433\","
	    "\"authority\":\"\",\"method\":\"\\u2028\","
	    "\"path\":\"/\xc3\xa9\\u00ff\\u00c3(\\u00ed\\u00a0\\u0080"
	    "\xf0\x9f\x98\x80\\u007f\\u0009\\u0085\\u009b\xc2\xa0\\u2029\","
	    "\"status\":200,"
	    "\"request_bytes\":0,\"response_bytes\":1234,\"duration\":0.250,"
	    "\"backend\":\"127.0.0.1:8080\",\"quic_version\":\"0x1\","
	    "\"route\":\"a\\\"pp\",\"user\":\"j\\\\o\","
	    "\"client_cert\":\"Hash=ab;Subject=\\\"/CN=a\\\\\\\"b\\\"\","
	    "\"backend_time\":0.125,\"gzip_bytes\":345}\n"
	    "{\"time\":\"2025-11-25T14:00:00.500Z\",\"client\":\"192.0.2.1:4433\","
	    "\"authority\":\"example.com\",\"method\":\"GET\","
	    "\"path\":\"/a\\\"b c\\u000d\\u000a\\u0001d\\\\e\",\"status\":200,"
	    "\"request_bytes\":0,\"response_bytes\":1234,\"duration\":0.250,"
	    "\"backend\":\"127.0.0.1:8080\",\"quic_version\":\"0x1\","
	    "\"route\":\"a\\\"pp\",\"user\":\"j\\\\o\","
	    "\"client_cert\":\"Hash=ab;Subject=\\\"/CN=a\\\\\\\"b\\\"\","
	    "\"backend_time\":0.125,\"gzip_bytes\":345,"
	    "\"request_id\":\"0123456789abcdef0123456789abcdef\"}\n");
	free(s);
	CHECK(json_valid(path));
	access_log_close();
	unlink(path);
}

/* Paths too long for a line are cut, never in the middle of an escape or
 * of a UTF-8 sequence; the rest of the line is kept. */
static void
test_access_cap(void)
{
	const char		*path = tpath("cap.log");
	struct access_entry	 e = sample;
	static char		 big[20001];
	char			*s, *nl, *p;
	size_t			 len;
	const char		*tail = "\" 200 0 1234 0.250 127.0.0.1:8080 0x1\n";

	CHECK_EQ_INT(access_log_open(path, 0), 0);
	memset(big, 0x01, sizeof(big) - 1);
	e.path = big;
	access_log_write(&e);
	s = slurp(path);
	CHECK(s != NULL);
	if (s != NULL) {
		len = strlen(s);
		CHECK(len <= 16384 && len > 15000);
		CHECK_EQ_INT(count_lines(s), 1);
		CHECK(len > strlen(tail) &&
		    strcmp(s + len - strlen(tail), tail) == 0);
		/* Whole escapes: the path is "/"-less, all "\x01". */
		nl = strstr(s, "\"GET ");
		CHECK(nl != NULL && (len - strlen(tail) -
		    (size_t)(nl + 5 - s)) % 4 == 0);
		CHECK(nl != NULL && strncmp(s + len - strlen(tail) - 4,
		    "\\x01", 4) == 0);
		free(s);
	}
	access_log_close();
	unlink(path);

	/* JSON: two-byte UTF-8 characters, and the line must still parse. */
	CHECK_EQ_INT(access_log_open(path, 1), 0);
	for (size_t i = 0; i + 1 < sizeof(big) - 1; i += 2) {
		big[i] = '\xc3';
		big[i + 1] = '\xa9';
	}
	big[sizeof(big) - 2] = '\xff';
	access_log_write(&e);
	e.path = "/";
	e.authority = big;
	access_log_write(&e);
	/* U+0085, two bytes written as six: whole escapes too */
	for (size_t i = 0; i + 1 < sizeof(big) - 1; i += 2) {
		big[i] = '\xc2';
		big[i + 1] = '\x85';
	}
	e.path = big;
	e.authority = "example.com";
	access_log_write(&e);
	s = slurp(path);
	CHECK(s != NULL);
	if (s != NULL) {
		CHECK_EQ_INT(count_lines(s), 3);
		nl = strchr(s, '\n');
		CHECK(nl != NULL && nl - s + 1 <= 16384 && nl - s > 15000);
		p = nl != NULL ? nl + 1 : s;
		nl = strchr(p, '\n');
		CHECK(nl != NULL && nl - p + 1 <= 16384);
		p = nl != NULL ? nl + 1 : s;
		nl = strchr(p, '\n');
		CHECK(nl != NULL && nl - p + 1 <= 16384 && nl - p > 15000);
		CHECK(strstr(p, "\\u0085\",\"status\":200,") != NULL);
		free(s);
	}
	CHECK(json_valid(path));
	access_log_close();
	unlink(path);
}

static void
write_sample(void)
{
	access_log_write(&sample);
}

static void
test_access_stderr_off(void)
{
	const char	*path = tpath("off.log");
	char		*s;

	CHECK_EQ_INT(access_log_open("stderr", 0), 0);
	s = capture_stderr(write_sample);
	CHECK(s != NULL && strncmp(s, "2025-11-25T14:00:00.500Z 192.0.2.1",
	    34) == 0 && count_lines(s) == 1);
	free(s);

	/* A failed open keeps the previous destination. */
	errno = 0;
	CHECK_EQ_INT(access_log_open(tpath("nodir/access.log"), 0), -1);
	CHECK_EQ_INT(errno, ENOENT);
	s = capture_stderr(write_sample);
	CHECK(s != NULL && count_lines(s) == 1);
	free(s);

	/* Off: nothing anywhere. */
	CHECK_EQ_INT(access_log_open(path, 0), 0);
	CHECK(access_log_enabled());
	CHECK_EQ_INT(access_log_open(NULL, 0), 0);
	CHECK(!access_log_enabled());
	s = capture_stderr(write_sample);
	CHECK_EQ_STR(s, "");
	free(s);
	s = slurp(path);
	CHECK_EQ_STR(s, "");
	free(s);
	access_log_close();
	unlink(path);
}

/* logrotate: both files renamed, then SIGUSR1. */
static void
test_reopen(void)
{
	char	 err[256], acc[256], err1[300], acc1[300], want[700];
	char	*s;
	struct strbuf why;

	snprintf(err, sizeof(err), "%s", tpath("error.log"));
	snprintf(acc, sizeof(acc), "%s", tpath("access.log"));
	snprintf(err1, sizeof(err1), "%s.1", err);
	snprintf(acc1, sizeof(acc1), "%s.1", acc);
	unlink(err);
	CHECK_EQ_INT(log_open(err), 0);
	CHECK_EQ_INT(access_log_open(acc, 0), 0);
	log_warnx("before");
	access_log_write(&sample);

	CHECK_EQ_INT(rename(err, err1), 0);
	CHECK_EQ_INT(rename(acc, acc1), 0);
	log_warnx("between");
	access_log_write(&reset);
	CHECK_EQ_INT(log_reopen(NULL), 0);
	log_warnx("after");
	access_log_write(&sample);

	s = slurp(err1);
	CHECK(s != NULL && count_lines(s) == 2 && strstr(s, "before") &&
	    strstr(s, "between") && !strstr(s, "after"));
	free(s);
	s = slurp(err);
	CHECK(s != NULL && count_lines(s) == 1 && strstr(s, "after"));
	free(s);
	s = slurp(acc1);
	CHECK(s != NULL && count_lines(s) == 2 && strstr(s, " 200 ") &&
	    strstr(s, " - 7 0 "));
	free(s);
	s = slurp(acc);
	CHECK(s != NULL && count_lines(s) == 1 && strstr(s, " 200 "));
	free(s);

	/* The directory is gone: -1, and the old files keep the lines. */
	CHECK_EQ_INT(rename(dir, dir2), 0);
	strbuf_init(&why, 4096);
	CHECK_EQ_INT(log_reopen(&why), -1);
	CHECK_EQ_INT(errno, ENOENT);
	/* one line a file, for qproxyctl reopen */
	snprintf(want, sizeof(want), "error log %s: %s\naccess log %s: %s\n",
	    err, strerror(ENOENT), acc, strerror(ENOENT));
	CHECK_EQ_STR(strbuf_str(&why), want);
	strbuf_free(&why);
	CHECK_EQ_INT(rename(dir2, dir), 0);
	log_warnx("kept");
	access_log_write(&reset);
	s = slurp(err);
	CHECK(s != NULL && strstr(s, "kept") != NULL &&
	    strstr(s, "log_reopen: error log ") != NULL &&
	    strstr(s, "log_reopen: access log ") != NULL);
	free(s);
	s = slurp(acc);
	CHECK(s != NULL && count_lines(s) == 2);
	free(s);

	CHECK_EQ_INT(log_open("stderr"), 0);
	access_log_close();
	/* Nothing to reopen. */
	CHECK_EQ_INT(log_reopen(NULL), 0);
	unlink(err);
	unlink(acc);
	unlink(err1);
	unlink(acc1);
}

/* A full disk: lines are lost, a warning goes out once a minute at most. */
static void
test_write_error(void)
{
	const char	*err = tpath("error.log");
	char		*s, *p;
	int		 n = 0;

	CHECK_EQ_INT(log_open(err), 0);
	CHECK_EQ_INT(access_log_open("/dev/full", 0), 0);
	access_log_write(&sample);
	access_log_write(&sample);
	access_log_write(&sample);
	s = slurp(err);
	for (p = s; p != NULL && (p = strstr(p, "access log")) != NULL; p++)
		n++;
	CHECK_EQ_INT(n, 1);
	CHECK(s != NULL && strstr(s, "qproxy[warn]: access log /dev/full: "
	    "write failed, 1 line lost so far: No space left on device\n"));
	free(s);
	access_log_close();
	CHECK_EQ_INT(log_open(NULL), 0);
	unlink(err);
}

int
main(void)
{
	umask(022);
	snprintf(dir, sizeof(dir), "/tmp/qproxy-test-log.XXXXXX");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(dir2, sizeof(dir2), "%s.moved", dir);
	/* the lines to stderr are compared without a journal's priorities */
	unsetenv("JOURNAL_STREAM");
	log_init(LOG_LEVEL_INFO);

	test_error_log();
	test_error_stderr();
	test_error_journal();
	test_access_text();
	test_access_json();
	test_access_combined();
	test_access_cap();
	test_access_stderr_off();
	test_reopen();
	test_write_error();

	log_open("stderr");
	access_log_close();
	unlink(tpath("error.log"));
	if (rmdir(dir) == -1)
		perror(dir);
	UNIT_DONE();
}
