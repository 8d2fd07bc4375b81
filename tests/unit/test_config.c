/* test_config.c: the configuration file parser and addresses. */
#include <sys/stat.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "config.h"
#include "log.h"
#include "unit.h"

static char	test_dir[PATH_MAX / 2];
static char	test_example_path[PATH_MAX];	/* conf/qproxy.conf */

/* four lines: a listener that is enough for a valid file */
#define LISTENER							\
	"[listener main]\n"						\
	"address = 127.0.0.1:4433\n"					\
	"certificate = cert.pem\n"					\
	"private_key = key.pem\n"

/* six lines: a backend and a route to it */
#define BACKEND								\
	"[backend app]\n"						\
	"server = 127.0.0.1:8080\n"					\
	"[route all]\n"							\
	"backend = app\n"

/* replaces every occurrence of from in s by to; s is reallocated */
static char *
test_replace(char *s, const char *from, const char *to)
{
	char	*out, *at, *o;
	size_t	 n = 0, fl = strlen(from), tl = strlen(to);

	for (at = s; (at = strstr(at, from)) != NULL; at += fl)
		n++;
	if ((out = malloc(strlen(s) + n * tl + 1)) == NULL)
		abort();
	o = out;
	for (at = s; (at = strstr(s, from)) != NULL; s = at + fl) {
		memcpy(o, s, (size_t)(at - s));
		o += at - s;
		memcpy(o, to, tl);
		o += tl;
	}
	strcpy(o, s);
	return out;
}

/*
 * Writes text to a new temporary file and loads it. *errs gets what
 * config_load wrote, with the file's name replaced by "FILE" and its
 * directory's by "DIR".
 */
static struct config *
test_load(const char *text, char **errs)
{
	struct config	*cfg;
	FILE		*mem;
	char		 path[PATH_MAX], *buf = NULL;
	size_t		 len = 0;
	int		 fd;

	snprintf(path, sizeof(path), "%s/test.conf.XXXXXX", test_dir);
	if ((fd = mkstemp(path)) == -1) {
		perror("mkstemp");
		exit(1);
	}
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		perror("write");
		exit(1);
	}
	close(fd);
	if ((mem = open_memstream(&buf, &len)) == NULL)
		abort();
	cfg = config_load(path, mem);
	fclose(mem);
	unlink(path);
	*errs = test_replace(buf, path, "FILE");
	free(buf);
	/* and the files it names, from its directory, under DIR */
	buf = *errs;
	*errs = test_replace(buf, test_dir, "DIR");
	free(buf);
	return cfg;
}

/* name in test_dir, where the configurations are: a relative path's */
static const char *
in_dir(const char *name)
{
	static char buf[4][PATH_MAX];
	static int next;
	char *b = buf[next++ % 4];

	snprintf(b, PATH_MAX, "%s/%s", test_dir, name);
	return b;
}

/* the file must fail with exactly these error lines */
#define CHECK_ERRS(text, expected) do {					\
	struct config	*c_;						\
	char		*e_;						\
									\
	c_ = test_load(text, &e_);					\
	CHECK(c_ == NULL);						\
	CHECK_EQ_STR(e_, expected);					\
	config_free(c_);						\
	free(e_);							\
} while (0)

/* the file must load without a word */
#define CHECK_LOADS(cfgp, text) do {					\
	char	*e_;							\
									\
	*(cfgp) = test_load(text, &e_);					\
	CHECK(*(cfgp) != NULL);						\
	CHECK_EQ_STR(e_, "");						\
	free(e_);							\
} while (0)

static void
test_full(void)
{
	struct config			*cfg;
	const struct config_listener	*l;
	const struct config_backend	*b;
	const struct config_route	*r;
	char				 buf[ADDR_STRLEN];

	CHECK_LOADS(&cfg,
	    "# a comment\n"
	    "; another\n"
	    "[global]\n"
	    "log_level = debug\n"
	    "shutdown_timeout = 2m\n"
	    "idle_timeout = 500ms ; inline comment\n"
	    "stream_window = 128k\n"
	    "response_buffer_size = 1m\n"
	    "\n"
	    "[listener public]\n"
	    "  address = 127.0.0.1:443\n"
	    "address=[::1]:443\n"
	    "certificate = cert.pem\n"
	    "private_key = key.pem\n"
	    "[ global ]\n"
	    "max_header_size = 16k\n"
	    "qpack_table_size = 0\n"
	    "qpack_blocked_streams = 0\n"
	    "max_streams_bidi = 10000\n"
	    "[listener other]\n"
	    "address = 127.0.0.1:4433\n"
	    "certificate = cert.pem\n"
	    "private_key = key.pem\n"
	    "[backend app]\n"
	    "server = 127.0.0.1:8080\n"
	    "server = unix:/run/app.sock\n"
	    "server = [::1]:8081\n"
	    "connect_timeout = 1.5s\n"
	    "read_timeout = 1h\n"
	    "fail_timeout = 0\n"
	    "max_idle_connections = 0\n"
	    "[backend static]\n"
	    "server = 127.0.0.2:80\n"
	    "[route api]\n"
	    "host = API.Example.COM\n"
	    "path_prefix = /v1/\n"
	    "backend = app\n"
	    "[route wild]\n"
	    "host = *.Example.com\n"
	    "backend = static\n"
	    "[route v6]\n"
	    "host = [0:0::1]\n"
	    "backend = static\n"
	    "[route all]\n"
	    "backend = app\n");
	if (cfg == NULL)
		return;
	CHECK_EQ_INT(cfg->log_level, LOG_LEVEL_DEBUG);
	CHECK(cfg->shutdown_timeout == 120);
	CHECK(cfg->idle_timeout == 0.5);
	CHECK_EQ_INT(cfg->stream_window, 128 * 1024);
	CHECK_EQ_INT(cfg->response_buffer_size, 1024 * 1024);
	CHECK_EQ_INT(cfg->max_header_size, 16 * 1024);
	CHECK_EQ_INT(cfg->qpack_table_size, 0);
	CHECK_EQ_INT(cfg->qpack_blocked_streams, 0);
	CHECK_EQ_INT(cfg->max_streams_bidi, 10000);
	CHECK(strstr(cfg->path, "test.conf") != NULL);

	CHECK_EQ_INT(cfg->nlisteners, 2);
	l = &cfg->listeners[0];
	CHECK_EQ_STR(l->name, "public");
	CHECK_EQ_INT(l->line, 10);
	CHECK_EQ_INT(l->naddrs, 2);
	CHECK_EQ_STR(addr_format(&l->addrs[0], buf, sizeof(buf)),
	    "127.0.0.1:443");
	CHECK_EQ_STR(addr_format(&l->addrs[1], buf, sizeof(buf)), "[::1]:443");
	CHECK_EQ_INT(l->ncerts, 1);
	CHECK_EQ_INT(l->nkeys, 1);
	CHECK_EQ_STR(l->certs[0].certificate, in_dir("cert.pem"));
	CHECK_EQ_STR(l->certs[0].private_key, in_dir("key.pem"));
	l = &cfg->listeners[1];
	CHECK_EQ_STR(l->name, "other");
	CHECK_EQ_INT(l->line, 20);
	CHECK_EQ_INT(l->naddrs, 1);

	CHECK_EQ_INT(cfg->nbackends, 2);
	b = &cfg->backends[0];
	CHECK_EQ_STR(b->name, "app");
	CHECK_EQ_INT(b->line, 24);
	CHECK_EQ_INT(b->nservers, 3);
	CHECK_EQ_STR(b->servers[0].text, "127.0.0.1:8080");
	CHECK_EQ_INT(b->servers[0].addr.u.sa.sa_family, AF_INET);
	CHECK_EQ_STR(b->servers[1].text, "unix:/run/app.sock");
	CHECK_EQ_INT(b->servers[1].addr.u.sa.sa_family, AF_UNIX);
	CHECK_EQ_STR(addr_format(&b->servers[1].addr, buf, sizeof(buf)),
	    "unix:/run/app.sock");
	CHECK_EQ_STR(addr_format(&b->servers[2].addr, buf, sizeof(buf)),
	    "[::1]:8081");
	CHECK(b->connect_timeout == 1.5);
	CHECK(b->read_timeout == 3600);
	CHECK(b->fail_timeout == 0);
	CHECK_EQ_INT(b->max_idle, 0);
	b = &cfg->backends[1];
	CHECK_EQ_STR(b->name, "static");
	CHECK_EQ_INT(b->nservers, 1);
	CHECK(b->connect_timeout == 5);
	CHECK(b->read_timeout == 60);
	CHECK(b->fail_timeout == 10);
	CHECK_EQ_INT(b->max_idle, 32);
	CHECK(b->request_buffer == 0);

	CHECK_EQ_INT(cfg->nroutes, 4);
	r = &cfg->routes[0];
	CHECK_EQ_STR(r->name, "api");
	CHECK_EQ_INT(r->line, 34);
	CHECK_EQ_STR(r->host, "api.example.com");
	CHECK_EQ_STR(r->path_prefix, "/v1/");
	CHECK_EQ_INT(r->backend, 0);
	r = &cfg->routes[1];
	CHECK_EQ_STR(r->name, "wild");
	CHECK_EQ_STR(r->host, "*.example.com");
	CHECK(r->path_prefix == NULL);
	CHECK_EQ_INT(r->backend, 1);
	r = &cfg->routes[2];
	CHECK_EQ_STR(r->host, "::1");
	r = &cfg->routes[3];
	CHECK_EQ_STR(r->name, "all");
	CHECK(r->host == NULL);
	CHECK(r->path_prefix == NULL);
	CHECK_EQ_INT(r->backend, 0);
	config_free(cfg);
}

static void
test_defaults(void)
{
	struct config	*cfg;

	CHECK_LOADS(&cfg, LISTENER);
	if (cfg == NULL)
		return;
	CHECK_EQ_INT(cfg->log_level, LOG_LEVEL_INFO);
	CHECK(cfg->shutdown_timeout == 30);
	CHECK(cfg->idle_timeout == 30);
	CHECK(cfg->initial_rtt == 0.333);
	CHECK_EQ_INT(cfg->stream_window, 64 * 1024);
	CHECK_EQ_INT(cfg->response_buffer_size, 256 * 1024);
	CHECK_EQ_INT(cfg->max_header_size, 64 * 1024);
	CHECK_EQ_INT(cfg->qpack_table_size, 4096);
	CHECK_EQ_INT(cfg->qpack_blocked_streams, 100);
	CHECK_EQ_INT(cfg->max_streams_bidi, 100);
	CHECK_EQ_INT(cfg->max_conns_per_client, 0);
	CHECK(cfg->request_rate == 0);
	CHECK_EQ_INT(cfg->request_burst, 0);
	CHECK_EQ_INT(cfg->nlisteners, 1);
	CHECK_EQ_INT(cfg->nbackends, 0);
	CHECK_EQ_INT(cfg->nroutes, 0);
	CHECK_EQ_INT(cfg->aes_gcm_vaes, CONFIG_VAES_ON);
	config_free(cfg);
	config_free(NULL);
}

/* aes_gcm_vaes: on, off, avx2 (gcm.c's 256-bit path even with AVX-512) */
static void
test_vaes(void)
{
	static const char *const words[] = { "off", "on", "avx2" };
	struct config	*cfg;
	char		 text[256];

	for (int i = CONFIG_VAES_OFF; i <= CONFIG_VAES_AVX2; i++) {
		snprintf(text, sizeof(text), "[global]\naes_gcm_vaes = %s\n"
		    LISTENER, words[i]);
		CHECK_LOADS(&cfg, text);
		if (cfg != NULL)
			CHECK_EQ_INT(cfg->aes_gcm_vaes, i);
		config_free(cfg);
	}
	CHECK_ERRS("[global]\naes_gcm_vaes = avx512\n" LISTENER,
	    "FILE:2: aes_gcm_vaes: invalid value \"avx512\": expected on, "
	    "off or avx2\n");
}

static void
test_sections(void)
{
	/* unknown type; its keys are not reported */
	CHECK_ERRS(LISTENER
	    "[frontend x]\n"
	    "colour = blue\n",
	    "FILE:5: unknown section type \"frontend\": expected global, "
	    "listener, backend or route\n");

	/* no name */
	CHECK_ERRS(LISTENER BACKEND
	    "[backend]\n"
	    "server = 127.0.0.1:80\n"
	    "[route]\n"
	    "[listener]\n",
	    "FILE:9: [backend] needs a name, as in [backend NAME]\n"
	    "FILE:11: [route] needs a name, as in [route NAME]\n"
	    "FILE:12: [listener] needs a name, as in [listener NAME]\n");

	/* duplicates of one type; the same name in two types is fine */
	CHECK_ERRS(LISTENER BACKEND
	    "[backend main]\n"
	    "server = 127.0.0.1:80\n"
	    "[backend app]\n"
	    "server = 127.0.0.1:81\n"
	    "[route all]\n"
	    "backend = app\n"
	    "[listener main]\n",
	    "FILE:11: duplicate [backend app], first at line 5\n"
	    "FILE:13: duplicate [route all], first at line 7\n"
	    "FILE:15: duplicate [listener main], first at line 1\n");

	/* names */
	CHECK_ERRS(LISTENER
	    "[backend a/b]\n"
	    "[global x]\n",
	    "FILE:5: invalid backend name \"a/b\": expected up to 64 letters, "
	    "digits, '.', '-' or '_'\n"
	    "FILE:6: [global] takes no name\n");

	/* syntax */
	CHECK_ERRS("log_level = info\n"
	    LISTENER
	    "[global\n"
	    "log_level info\n"
	    "[global] junk\n"
	    "[global]\n"
	    "= info\n"
	    "[]\n",
	    "FILE:1: key \"log_level\" is outside any section\n"
	    "FILE:6: syntax error: missing ']' in section header\n"
	    "FILE:7: syntax error: expected [section] or key = value\n"
	    "FILE:8: syntax error: unexpected text after ']'\n"
	    "FILE:10: syntax error: missing key name\n"
	    "FILE:11: unknown section type \"\": expected global, listener, "
	    "backend or route\n");
}

static void
test_keys(void)
{
	/* unknown keys, in each kind of section */
	CHECK_ERRS("[global]\n"
	    "colour = blue\n"
	    LISTENER
	    "server = 127.0.0.1:80\n"
	    BACKEND
	    "address = 127.0.0.1:80\n"
	    "max_idle = 3\n",
	    "FILE:2: unknown key \"colour\" in [global]\n"
	    "FILE:7: unknown key \"server\" in [listener main]\n"
	    "FILE:12: unknown key \"address\" in [route all]\n"
	    "FILE:13: unknown key \"max_idle\" in [route all]\n");

	/* a wildcard takes its port on every address of its family */
	CHECK_ERRS(LISTENER
	    "address = 0.0.0.0:4433\n"
	    "address = [::1]:4433\n"
	    "address = 0.0.0.0:4434\n"
	    "[listener two]\n"
	    "address = [::]:4433\n"
	    "address = 127.0.0.2:4434\n"
	    "certificate = cert.pem\n"
	    "private_key = key.pem\n"
	    BACKEND,
	    "FILE:5: address: \"0.0.0.0:4433\" overlaps 127.0.0.1:4433 of "
	    "[listener main] (a wildcard address takes its port on every "
	    "address)\n"
	    "FILE:9: address: \"[::]:4433\" overlaps [::1]:4433 of "
	    "[listener main] (a wildcard address takes its port on every "
	    "address)\n"
	    "FILE:10: address: \"127.0.0.2:4434\" overlaps 0.0.0.0:4434 of "
	    "[listener main] (a wildcard address takes its port on every "
	    "address)\n");

	/* [global] twice merges, but a key may not come back */
	CHECK_ERRS("[global]\n"
	    "log_level = warn\n"
	    LISTENER
	    "retry = never\n"
	    "address = 127.0.0.2:4433\n"
	    "retry = always\n"
	    "[global]\n"
	    "max_streams_bidi = 5\n"
	    "log_level = debug\n"
	    BACKEND
	    "backend = app\n"
	    "[backend two]\n"
	    "server = 127.0.0.1:80\n"
	    "server = 127.0.0.1:81\n"
	    "connect_timeout = 1s\n"
	    "connect_timeout = 2s\n",
	    "FILE:9: duplicate key \"retry\" in [listener main], first "
	    "at line 7\n"
	    "FILE:12: duplicate key \"log_level\" in [global], first at "
	    "line 2\n"
	    "FILE:17: duplicate key \"backend\" in [route all], first at "
	    "line 16\n"
	    "FILE:22: duplicate key \"connect_timeout\" in [backend two], "
	    "first at line 21\n");

	/* bad values */
	CHECK_ERRS("[global]\n"
	    "log_level = loud\n"
	    "shutdown_timeout = soon\n"
	    "stream_window = 1k\n"
	    "max_streams_bidi = 0\n"
	    "qpack_blocked_streams =\n"
	    LISTENER
	    "address = 127.0.0.1\n"
	    "address = unix:/run/q.sock\n"
	    "address = 127.0.0.1:4433\n"
	    BACKEND
	    "host = a..b\n"
	    "path_prefix = api\n"
	    "[backend b]\n"
	    "server = unix:run/b.sock\n"
	    "server = 10.0.0.1:0\n"
	    "max_idle_connections = -1\n"
	    "read_timeout = 0\n",
	    "FILE:2: log_level: invalid value \"loud\": expected error, warn, "
	    "info or debug\n"
	    "FILE:3: shutdown_timeout: invalid value \"soon\": expected a "
	    "duration from 0s to 24h, such as 500ms, 5s, 2m or 1h\n"
	    "FILE:4: stream_window: invalid value \"1k\": expected a "
	    "size from 4k to 16m, in bytes or with k, m or g\n"
	    "FILE:5: max_streams_bidi: invalid value \"0\": expected an integer "
	    "from 1 to 10000\n"
	    "FILE:6: qpack_blocked_streams: missing value\n"
	    "FILE:11: address: invalid address \"127.0.0.1\": missing port\n"
	    "FILE:12: address: invalid address \"unix:/run/q.sock\": unix "
	    "sockets are not allowed here\n"
	    "FILE:13: address: \"127.0.0.1:4433\" is already used by "
	    "[listener main]\n"
	    "FILE:18: host: invalid value \"a..b\": expected a host name, "
	    "\"*.\" and a domain, or an IP address\n"
	    "FILE:19: path_prefix: invalid value \"api\": expected a path "
	    "starting with \"/\"\n"
	    "FILE:21: server: invalid address \"unix:run/b.sock\": unix socket "
	    "path must be absolute\n"
	    "FILE:22: server: invalid address \"10.0.0.1:0\": invalid port: "
	    "expected a number from 1 to 65535\n"
	    "FILE:23: max_idle_connections: invalid value \"-1\": expected an "
	    "integer from 0 to 10000\n"
	    "FILE:24: read_timeout: invalid value \"0\": expected a duration "
	    "from 1ms to 24h, such as 500ms, 5s, 2m or 1h\n");

	/* short durations get short examples */
	CHECK_ERRS(LISTENER "[global]\n"
	    "batch_delay = 2ms\n"
	    "batch_busy = 101\n",
	    "FILE:6: batch_delay: invalid value \"2ms\": expected a duration "
	    "from 0s to 1ms, such as 0, 50us or 1ms\n"
	    "FILE:7: batch_busy: invalid value \"101\": expected an integer "
	    "from 0 to 100\n");
}

static void
test_required(void)
{
	/* missing keys are reported at the section's header */
	CHECK_ERRS(LISTENER
	    "[listener empty]\n"
	    "\n"
	    "[listener nokey]\n"
	    "address = 127.0.0.2:4433\n"
	    "certificate = cert.pem\n"
	    "[backend none]\n"
	    "connect_timeout = 1s\n"
	    "[route r]\n"
	    "host = example.com\n",
	    "FILE:5: [listener empty]: missing required key \"address\"\n"
	    "FILE:5: [listener empty]: missing required key \"certificate\"\n"
	    "FILE:5: [listener empty]: missing required key \"private_key\"\n"
	    "FILE:7: [listener nokey]: missing required key \"private_key\"\n"
	    "FILE:10: [backend none]: missing required key \"server\"\n"
	    "FILE:12: [route r]: missing required key \"backend\" (or "
	    "\"return\" or \"redirect\")\n");

	/* a route's backend must exist, anywhere in the file */
	CHECK_ERRS(LISTENER
	    "[route early]\n"
	    "backend = later\n"
	    "[route bad]\n"
	    "host = example.com\n"
	    "backend = nowhere\n"
	    "[backend later]\n"
	    "server = 127.0.0.1:80\n",
	    "FILE:9: backend: no [backend nowhere] in the configuration\n");

	/* no listener: reported at the end of the file */
	CHECK_ERRS(BACKEND "\n",
	    "FILE:5: no [listener] section\n");
	CHECK_ERRS("", "FILE:1: no [listener] section\n");
	CHECK_ERRS("# nothing\n\n[global]\n",
	    "FILE:3: no [listener] section\n");
}

/* loads path as it is; returns what config_load wrote */
static char *
test_load_path(const char *path, struct config **cfgp)
{
	FILE	*mem;
	char	*buf = NULL;
	size_t	 len = 0;

	if ((mem = open_memstream(&buf, &len)) == NULL)
		abort();
	*cfgp = config_load(path, mem);
	fclose(mem);
	return buf;
}

/* "key: value" as "key = value", split at the first '=' or ':' */
static void
test_colon(void)
{
	struct config	*cfg;

	CHECK_LOADS(&cfg, "[listener main]\n"
	    "address: 127.0.0.1:4433\n"
	    "certificate:cert.pem\n"
	    "private_key = key.pem\n"
	    "[backend app]\n"
	    "server : [::1]:8080 weight=2\n"
	    "[route all]\n"
	    "backend: app\n"
	    "set_response_header: X-A: b=c\n"
	    "set_request_header = X-B: d:e\n");
	if (cfg != NULL) {
		CHECK_EQ_STR(cfg->backends[0].servers[0].text, "[::1]:8080");
		CHECK_EQ_STR(cfg->routes[0].set_response.v[0].value, "b=c");
		CHECK_EQ_STR(cfg->routes[0].set_request.v[0].value, "d:e");
	}
	config_free(cfg);
}

/*
 * Lines longer than inih's buffer (200 bytes) are split as inih would and
 * read, up to 8192 characters; the lines after them keep their numbers.
 */
/* A route of two settings too long for inih's buffer, and then extra. */
static char *
long_lines_text(const char *url, const char *csp, const char *extra)
{
	char *text;

	if (asprintf(&text, LISTENER
	    "[backend app]\n"
	    "server = 127.0.0.1:8080\n"
	    "[route old]\n"
	    "  redirect :  308 https://example.com/%s  ; to the new site\n"
	    "set_response_header =\tContent-Security-Policy: %s \n"
	    "%s"
	    "[route all]\n"
	    "backend = app\n", url, csp, extra) == -1)
		abort();
	return text;
}

static void
test_long_lines(void)
{
	struct config	*cfg;
	char		 url[2001], csp[601], big[8200], *text, *errs;

	memset(url, 'u', sizeof(url) - 1);
	url[sizeof(url) - 1] = '\0';
	memset(csp, 'c', sizeof(csp) - 1);
	csp[sizeof(csp) - 1] = '\0';
	/* with a bad line after them, then without */
	text = long_lines_text(url, csp, "health_check = /x\n");
	/* the line after them is still line 10 */
	CHECK_ERRS(text, "FILE:10: unknown key \"health_check\" in "
	    "[route old]\n");
	free(text);
	text = long_lines_text(url, csp, "");
	CHECK_LOADS(&cfg, text);
	free(text);
	if (cfg != NULL) {
		const struct config_route *r = &cfg->routes[0];

		CHECK_EQ_INT(r->answer, 308);
		CHECK(r->answer_text != NULL &&
		    strlen(r->answer_text) == 20 + 2000 &&
		    strncmp(r->answer_text, "https://example.com/u", 21) == 0 &&
		    r->answer_text[strlen(r->answer_text) - 1] == 'u');
		CHECK_EQ_INT(r->set_response.n, 1);
		if (r->set_response.n == 1) {
			CHECK_EQ_STR(r->set_response.v[0].name,
			    "content-security-policy");
			CHECK_EQ_STR(r->set_response.v[0].value, csp);
		}
	}
	config_free(cfg);

	/* 8192 characters and no more, blanks around and comments aside */
	memset(big, 'a', sizeof(big));
	memcpy(big, "log_level = ", 12);
	big[8192] = '\0';
	if (asprintf(&text, LISTENER "[global]\n"
	    "\t%s   ; and a comment\n" "max_streams_bidi = x\n", big) == -1)
		abort();
	cfg = test_load(text, &errs);
	free(text);
	CHECK(cfg == NULL);
	CHECK(strncmp(errs, "FILE:6: log_level: invalid value \"aaa", 37) == 0);
	CHECK(strstr(errs, "\nFILE:7: max_streams_bidi: invalid value") != NULL);
	config_free(cfg);
	free(errs);
	big[8192] = 'a';
	big[8193] = '\0';
	if (asprintf(&text, LISTENER "[global]\n"
	    "%s\n" "max_streams_bidi = x\n", big) == -1)
		abort();
	CHECK_ERRS(text, "FILE:6: line too long: at most 8192 characters\n"
	    "FILE:7: max_streams_bidi: invalid value \"x\": expected an "
	    "integer from 1 to 10000\n");
	free(text);
}

static void
test_files(void)
{
	struct config	*cfg;
	char		*errs;

	/* certificate and key must be readable regular files */
	CHECK_ERRS("[listener main]\n"
	    "address = 127.0.0.1:4433\n"
	    "certificate = missing.pem\n"
	    "private_key = .\n",
	    "FILE:3: certificate: cannot open \"DIR/missing.pem\": No such file "
	    "or directory\n"
	    "FILE:4: private_key: cannot open \"DIR/.\": Is a directory\n");

	/*
	 * More than one certificate: the nth certificate key takes the nth
	 * private_key, in whatever order they come.
	 */
	CHECK_LOADS(&cfg, "[listener main]\n"
	    "address = 127.0.0.1:4433\n"
	    "private_key = key.pem\n"
	    "certificate = cert.pem\n"
	    "certificate = cert2.pem\n"
	    "certificate = cert3.pem\n"
	    "private_key = key2.pem\n"
	    "private_key = key3.pem\n"
	    BACKEND);
	if (cfg != NULL) {
		const struct config_listener *l = &cfg->listeners[0];

		CHECK_EQ_INT(l->ncerts, 3);
		CHECK_EQ_INT(l->nkeys, 3);
		CHECK_EQ_STR(l->certs[0].certificate, in_dir("cert.pem"));
		CHECK_EQ_STR(l->certs[0].private_key, in_dir("key.pem"));
		CHECK_EQ_INT(l->certs[0].line, 4);
		CHECK_EQ_INT(l->certs[0].key_line, 3);
		CHECK_EQ_STR(l->certs[1].certificate, in_dir("cert2.pem"));
		CHECK_EQ_STR(l->certs[1].private_key, in_dir("key2.pem"));
		CHECK_EQ_INT(l->certs[1].line, 5);
		CHECK_EQ_STR(l->certs[2].certificate, in_dir("cert3.pem"));
		CHECK_EQ_STR(l->certs[2].private_key, in_dir("key3.pem"));
		CHECK_EQ_INT(l->certs[2].key_line, 8);
	}
	config_free(cfg);
	/* one without a partner is named by its line */
	CHECK_ERRS("[listener main]\n"
	    "address = 127.0.0.1:4433\n"
	    "certificate = cert.pem\n"
	    "private_key = key.pem\n"
	    "certificate = cert2.pem\n"
	    BACKEND,
	    "FILE:5: certificate: no private_key goes with it (certificates: "
	    "2, private keys: 1; the nth certificate takes the nth key)\n");
	CHECK_ERRS("[listener main]\n"
	    "address = 127.0.0.1:4433\n"
	    "private_key = key.pem\n"
	    "private_key = key2.pem\n"
	    "certificate = cert.pem\n"
	    "private_key = key3.pem\n"
	    BACKEND,
	    "FILE:4: private_key: no certificate goes with it (certificates: "
	    "1, private keys: 3; the nth certificate takes the nth key)\n");
	/*
	 * a relative path is taken from the configuration's directory, not
	 * the directory qproxy runs in (/ for the service; wherever
	 * qproxy -t was run)
	 */
	{
		char cwd[PATH_MAX];

		CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
		CHECK(chdir("/") == 0);
		cfg = test_load("[listener main]\n"
		    "address = 127.0.0.1:4433\n"
		    "certificate = cert.pem\n"
		    "private_key = key.pem\n"
		    BACKEND, &errs);
		CHECK(cfg != NULL);
		CHECK_EQ_STR(errs, "");
		if (cfg != NULL)
			CHECK_EQ_STR(cfg->listeners[0].certs[0].certificate,
			    in_dir("cert.pem"));
		config_free(cfg);
		free(errs);
		CHECK(chdir(cwd) == 0);
	}
	/* a file refused still holds its place: no pairing error besides */
	CHECK_ERRS("[listener main]\n"
	    "address = 127.0.0.1:4433\n"
	    "certificate = cert.pem\n"
	    "certificate = missing.pem\n"
	    "private_key = key.pem\n"
	    "private_key = key2.pem\n"
	    BACKEND,
	    "FILE:4: certificate: cannot open \"DIR/missing.pem\": No such "
	    "file or directory\n");

	/* the configuration file itself: line 0 */
	errs = test_load_path("no-such-dir/qproxy.conf", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs, "no-such-dir/qproxy.conf:0: cannot open: "
	    "No such file or directory\n");
	free(errs);
	errs = test_load_path(".", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs, ".:0: cannot open: Is a directory\n");
	free(errs);
	cfg = config_load("no-such-dir/qproxy.conf", NULL);
	CHECK(cfg == NULL);

	test_long_lines();
	test_colon();
}

/* config_load of path; what it wrote, with test_dir as "DIR" */
static char *
test_load_dir(const char *path, struct config **cfgp)
{
	char	*buf = test_load_path(path, cfgp), *out;

	out = test_replace(buf, test_dir, "DIR");
	free(buf);
	return out;
}

/* The n files dir/0000.conf on, of width digits, and dir, removed. */
static void
remove_numbered(const char *dir, int width, int n)
{
	char name[64];

	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s/%0*d.conf", dir, width, i);
		unlink(name);
	}
	rmdir(dir);
}

/*
 * include: the files of a pattern read in name order where it stands,
 * each from outside any section, the includer going on in its own after
 * them; a relative pattern from the includer's directory; errors and
 * config_at by file and line.
 */
static void
test_include(void)
{
	struct config	*cfg;
	char		*errs, *abs;
	unsigned long	 looked;

	if (mkdir("inc.d", 0700) == -1)
		abort();
	unit_write_file("main.conf", "[global]\n"
	    "include = inc.d/*.conf\n"
	    "log_level = debug\n"
	    LISTENER);
	unit_write_file("inc.d/a.conf", "[backend app]\n"
	    "server = 127.0.0.1:8080\n"
	    "include = ../more.conf   ; in the directory above\n"
	    "max_connections = 7\n"
	    "request_buffer_size = 2m\n");
	unit_write_file("inc.d/b.conf", "; only a comment\n");
	unit_write_file("inc.d/c.txt", "not read\n");
	unit_write_file("more.conf", "[route all]\nbackend = app\n");
	errs = test_load_dir("main.conf", &cfg);
	CHECK_EQ_STR(errs, "");
	free(errs);
	CHECK(cfg != NULL);
	if (cfg != NULL) {
		CHECK_EQ_INT(cfg->log_level, LOG_LEVEL_DEBUG);
		CHECK_EQ_INT(cfg->nbackends, 1);
		CHECK_EQ_INT(cfg->backends[0].max_conns, 7);
		CHECK(cfg->backends[0].request_buffer == 2 * 1024 * 1024);
		CHECK_EQ_INT(cfg->nroutes, 1);
		CHECK_EQ_INT(cfg->routes[0].backend, 0);
		CHECK_EQ_STR(config_at(cfg, cfg->backends[0].line),
		    "inc.d/a.conf:1");
		CHECK_EQ_STR(config_at(cfg, cfg->routes[0].line),
		    "inc.d/../more.conf:1");
		CHECK_EQ_STR(config_at(cfg, cfg->listeners[0].line),
		    "main.conf:4");
		CHECK_EQ_STR(config_at(cfg, config_global_line(cfg,
		    "log_level")), "main.conf:3");
		CHECK_EQ_STR(config_at(cfg, cfg->listeners[0].certs[0].line),
		    "main.conf:6");
	}
	config_free(cfg);

	/*
	 * errors where they are: an included file's own, a key before its
	 * first section (it is not in the includer's), a section twice
	 */
	unit_write_file("inc.d/b.conf", "log_level = loud\n"
	    "[backend app]\n"
	    "server = 127.0.0.1:8080\n"
	    "connect_timeout = soon\n");
	errs = test_load_dir("main.conf", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs,
	    "inc.d/b.conf:1: key \"log_level\" is outside any section\n"
	    "inc.d/b.conf:2: duplicate [backend app], first at "
	    "inc.d/a.conf:1\n");
	free(errs);
	unit_write_file("inc.d/b.conf", "[backend other]\n"
	    "server = 127.0.0.1:8080\n"
	    "connect_timeout = soon\n"
	    "[global]\nlog_level = info\n");
	errs = test_load_dir("main.conf", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs,
	    "inc.d/b.conf:3: connect_timeout: invalid value \"soon\": "
	    "expected a duration from 1ms to 24h, such as 500ms, 5s, 2m or "
	    "1h\n"
	    "main.conf:3: duplicate key \"log_level\" in [global], first at "
	    "inc.d/b.conf:5\n");
	free(errs);
	unlink("inc.d/b.conf");

	/*
	 * the digest: of the text read, the included files' too (a reload's
	 * workers must have read what their supervisor did)
	 */
	{
		uint64_t d[3];

		for (int i = 0; i < 3; i++) {
			unit_write_file("main.conf", LISTENER
			    "include = backends.conf\n"
			    "[route app]\nbackend = app\n");
			unit_write_file("backends.conf", i == 2 ?
			    "[backend app]\nserver = 127.0.0.1:8081\n" :
			    "[backend app]\nserver = 127.0.0.1:8080\n");
			free(test_load_dir("main.conf", &cfg));
			CHECK(cfg != NULL);
			d[i] = cfg != NULL ? cfg->digest : 0;
			config_free(cfg);
		}
		CHECK(d[0] == d[1]);
		CHECK(d[1] != d[2]);

		/*
		 * and of where each file begins and ends: a line moved from
		 * after an include to the end of the file included reads as
		 * the same text, in another section
		 */
		for (int i = 0; i < 2; i++) {
			unit_write_file("main.conf", i == 0 ? LISTENER
			    "[backend a]\nserver = 127.0.0.1:8080\n"
			    "include = backends.conf\n"
			    "connect_timeout = 3s\n"
			    "[route app]\nbackend = a\n" : LISTENER
			    "[backend a]\nserver = 127.0.0.1:8080\n"
			    "include = backends.conf\n"
			    "[route app]\nbackend = a\n");
			unit_write_file("backends.conf", i == 0 ?
			    "[backend b]\nserver = 127.0.0.1:8081\n" :
			    "[backend b]\nserver = 127.0.0.1:8081\n"
			    "connect_timeout = 3s\n");
			free(test_load_dir("main.conf", &cfg));
			CHECK(cfg != NULL && cfg->nbackends == 2);
			if (cfg != NULL && cfg->nbackends == 2)
				CHECK(cfg->backends[i].connect_timeout == 3.);
			d[i] = cfg != NULL ? cfg->digest : 0;
			config_free(cfg);
		}
		CHECK(d[0] != d[1]);
		unlink("backends.conf");
	}

	/* no listener: at the main file's last line, not an included one's */
	unit_write_file("main.conf", "[global]\n"
	    "include = backends.conf\n");
	unit_write_file("backends.conf", "[backend app]\n"
	    "server = 127.0.0.1:8080\n"
	    "; the end\n");
	errs = test_load_dir("main.conf", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs, "main.conf:2: no [listener] section\n");
	free(errs);
	unlink("backends.conf");

	/* a file named must be there; a pattern may match nothing */
	unit_write_file("main.conf", LISTENER
	    "include = /nonexistent/*.conf\n"
	    "include = more.conf\n"
	    "include = inc.d/none.conf\n"
	    "[backend app]\nserver = 127.0.0.1:8080\n");
	errs = test_load_dir("main.conf", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs, "main.conf:7: include: inc.d/none.conf: "
	    "No such file or directory\n");
	free(errs);
	/* the absolute path of the file: patterns from its directory */
	abs = test_replace("DIR/main.conf", "DIR", test_dir);
	errs = test_load_dir(abs, &cfg);
	free(abs);
	CHECK_EQ_STR(errs, "DIR/main.conf:7: include: DIR/inc.d/none.conf: "
	    "No such file or directory\n");
	free(errs);

	/* a file that includes itself, by another name too */
	unit_write_file("main.conf", LISTENER "include = ./main.conf\n");
	errs = test_load_dir("main.conf", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs, "main.conf:5: include: ./main.conf includes "
	    "itself\n");
	free(errs);
	/* or through another; not the same file twice in a row */
	unit_write_file("main.conf", LISTENER "include = more.conf\n"
	    "include = more.conf\n");
	unit_write_file("more.conf", "include = main.conf\n");
	errs = test_load_dir("main.conf", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs,
	    "more.conf:1: include: main.conf includes itself\n"
	    "more.conf:1: include: main.conf includes itself\n");
	free(errs);
	/* nor too deep: a chain of nine */
	for (int i = 0; i < 9; i++) {
		char name[32], text[64];

		snprintf(name, sizeof(name), "d%d.conf", i);
		snprintf(text, sizeof(text), "include = d%d.conf\n", i + 1);
		unit_write_file(name, text);
	}
	unit_write_file("d9.conf", "");
	unit_write_file("main.conf", LISTENER "include = d0.conf\n");
	errs = test_load_dir("main.conf", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs, "d7.conf:1: include: more than 8 files deep\n");
	free(errs);
	for (int i = 0; i < 10; i++) {
		char name[32];

		snprintf(name, sizeof(name), "d%d.conf", i);
		unlink(name);
	}
	/*
	 * 20,000 files in all, each counted once, open or not: main.conf,
	 * one.conf and 19,998 that one.conf includes are read; a 19,999th
	 * is one too many.
	 */
	if (mkdir("many.d", 0700) == -1)
		abort();
	for (int i = 0; i < 19999; i++) {
		char name[32];

		snprintf(name, sizeof(name), "many.d/%05d.conf", i);
		unit_write_file(name, i == 19998 ? "; the 20,001st\n" : "");
		if (i == 19997) {
			unit_write_file("one.conf", "include = many.d/*\n");
			unit_write_file("main.conf", LISTENER
			    "include = one.conf\n");
			errs = test_load_dir("main.conf", &cfg);
			CHECK_EQ_STR(errs, "");
			CHECK(cfg != NULL);
			config_free(cfg);
			free(errs);
		}
	}
	errs = test_load_dir("main.conf", &cfg);
	CHECK(cfg == NULL);
	CHECK_EQ_STR(errs, "one.conf:1: include: more than 20000 files in "
	    "all\n");
	free(errs);
	remove_numbered("many.d", 5, 19999);
	unlink("one.conf");
	/*
	 * 3,000 files of one include, each including one more: a file's
	 * loop check looks at those that include it, not at every file
	 * still to read (13.5 million looks before).
	 */
	if (mkdir("sites.d", 0700) == -1)
		abort();
	unit_write_file("common.conf", "; shared\n");
	for (int i = 0; i < 3000; i++) {
		char name[32];

		snprintf(name, sizeof(name), "sites.d/%04d.conf", i);
		unit_write_file(name, "include = ../common.conf\n");
	}
	unit_write_file("main.conf", LISTENER "include = sites.d/*\n");
	looked = config_inputs_looked;
	errs = test_load_dir("main.conf", &cfg);
	CHECK_EQ_STR(errs, "");
	CHECK(cfg != NULL);
	CHECK_EQ_INT(cfg != NULL ? cfg->nfiles : 0, 6001);
	CHECK(config_inputs_looked - looked <= 3 * 6000);
	config_free(cfg);
	free(errs);
	remove_numbered("sites.d", 4, 3000);
	unlink("common.conf");

	unlink("main.conf");
	unlink("more.conf");
	unlink("inc.d/a.conf");
	unlink("inc.d/c.txt");
	rmdir("inc.d");
}

/* many errors of every kind in one file, all reported in line order */
static void
test_many(void)
{
	CHECK_ERRS("[global]\n"			/* 1 */
	    "log_level = chatty\n"		/* 2 */
	    "[listener web]\n"			/* 3 */
	    "address = 127.0.0.1:99999\n"	/* 4 */
	    "certificate = nope.pem\n"		/* 5 */
	    "[backend]\n"			/* 6 */
	    "[backend app]\n"			/* 7 */
	    "colour = red\n"			/* 8 */
	    "[route r1]\n"			/* 9 */
	    "backend = ghost\n"			/* 10 */
	    "[route r2]\n"			/* 11 */
	    "[global]\n"			/* 12 */
	    "log_level = info\n"		/* 13 */
	    "oops\n",				/* 14 */
	    "FILE:2: log_level: invalid value \"chatty\": expected error, "
	    "warn, info or debug\n"
	    "FILE:3: [listener web]: missing required key \"private_key\"\n"
	    "FILE:4: address: invalid address \"127.0.0.1:99999\": invalid "
	    "port: expected a number from 1 to 65535\n"
	    "FILE:5: certificate: cannot open \"DIR/nope.pem\": No such file or "
	    "directory\n"
	    "FILE:6: [backend] needs a name, as in [backend NAME]\n"
	    "FILE:7: [backend app]: missing required key \"server\"\n"
	    "FILE:8: unknown key \"colour\" in [backend app]\n"
	    "FILE:10: backend: no [backend ghost] in the configuration\n"
	    "FILE:11: [route r2]: missing required key \"backend\" (or "
	    "\"return\" or \"redirect\")\n"
	    "FILE:13: duplicate key \"log_level\" in [global], first at "
	    "line 2\n"
	    "FILE:14: syntax error: expected [section] or key = value\n");
}

/* loads LISTENER plus "[global] key = value" */
static struct config *
test_global(const char *key, const char *value)
{
	struct config	*cfg;
	char		 text[512], *errs;

	snprintf(text, sizeof(text), LISTENER "[global]\n%s = %s\n", key,
	    value);
	cfg = test_load(text, &errs);
	if (cfg == NULL && strstr(errs, "FILE:6: ") != errs)
		fprintf(stderr, "unexpected: %s", errs);
	free(errs);
	return cfg;
}

static void
test_rates(void)
{
	static const struct {
		const char	*text;
		double		 per_second;	/* -1: rejected */
	} t[] = {
		{ "0", 0 }, { "20", 20 }, { "20/s", 20 }, { "30/m", 0.5 },
		{ "1/m", 1. / 60 }, { "1000000", 1000000 },
		{ "1000001", -1 }, { "1.5", -1 }, { "20/h", -1 },
		{ "20/", -1 }, { "/s", -1 }, { "20/s/", -1 }, { "-1", -1 },
		{ "20 /s", -1 }, { "20/S", -1 },
	};
	struct config	*cfg;
	size_t		 i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		cfg = test_global("max_request_rate_per_client", t[i].text);
		if (t[i].per_second < 0)
			CHECK(cfg == NULL);
		else
			CHECK(cfg != NULL &&
			    cfg->request_rate == t[i].per_second);
		config_free(cfg);
	}
}

static void
test_durations(void)
{
	static const struct {
		const char	*text;
		double		 secs;	/* -1: rejected */
	} t[] = {
		{ "0", 0 }, { "30", 30 }, { "5s", 5 }, { "500ms", 0.5 },
		{ "2m", 120 }, { "1h", 3600 }, { "1.5s", 1.5 },
		{ "0.25", 0.25 }, { "24h", 86400 }, { "1440m", 86400 },
		{ "2000000us", 2 }, { "1.5us", 0.0000015 }, { "5uS", -1 },
		{ "25h", -1 }, { "86401", -1 }, { "5x", -1 }, { "s", -1 },
		{ "-1s", -1 }, { "1.s", -1 }, { ".5s", -1 }, { "5 s", -1 },
		{ "5S", -1 }, { "1e3", -1 }, { "5sec", -1 }, { "0x10", -1 },
		{ "99999999999999999999", -1 }, { "1.500000000s", 1.5 },
		/* finer than a nanosecond of the unit: 24h passed the limit */
		{ "24.0000000001h", -1 }, { "1.5000000000s", -1 },
		/* numbers past 2^32 - 1 in range after their unit (refused) */
		{ "5000000000us", 5000 }, { "86400000000us", 86400 },
		{ "86400000001us", -1 }, { "4294967296ms", -1 },
	};
	struct config	*cfg;
	size_t		 i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		cfg = test_global("shutdown_timeout", t[i].text);
		if (t[i].secs < 0)
			CHECK(cfg == NULL);
		else {
			CHECK(cfg != NULL);
			if (cfg != NULL && cfg->shutdown_timeout != t[i].secs)
				fprintf(stderr, "%s: %g\n", t[i].text,
				    cfg->shutdown_timeout);
			CHECK(cfg != NULL && cfg->shutdown_timeout ==
			    t[i].secs);
		}
		config_free(cfg);
	}

	/* timeouts that must be positive */
	cfg = test_global("idle_timeout", "0");
	CHECK(cfg == NULL);
	cfg = test_global("idle_timeout", "1ms");
	CHECK(cfg != NULL && cfg->idle_timeout == 0.001);
	config_free(cfg);

	/* initial_rtt: 1ms to 10s */
	cfg = test_global("initial_rtt", "0");
	CHECK(cfg == NULL);
	cfg = test_global("initial_rtt", "11s");
	CHECK(cfg == NULL);
	cfg = test_global("initial_rtt", "20ms");
	CHECK(cfg != NULL && cfg->initial_rtt == 0.02);
	config_free(cfg);

	/* batch_delay: 0 to 1ms, 200us unless set */
	cfg = test_global("log_level", "info");
	CHECK(cfg != NULL && cfg->batch_delay == 0.0002);
	config_free(cfg);
	cfg = test_global("batch_delay", "0");
	CHECK(cfg != NULL && cfg->batch_delay == 0);
	config_free(cfg);
	cfg = test_global("batch_delay", "250us");
	CHECK(cfg != NULL && cfg->batch_delay == 0.00025);
	config_free(cfg);
	cfg = test_global("batch_delay", "1ms");
	CHECK(cfg != NULL && cfg->batch_delay == 0.001);
	config_free(cfg);
	CHECK(test_global("batch_delay", "1001us") == NULL);
	CHECK(test_global("batch_delay", "1s") == NULL);

	/*
	 * 0 for none or the default, else 1ms at least: 500us answered every
	 * request of the route with 504 at once, and closed every pooled
	 * connection at once, where 0 keeps the backend's, or has no limit
	 */
	CHECK_ERRS(LISTENER
	    "[backend app]\n"
	    "server = 127.0.0.1:8080\n"
	    "idle_timeout = 999us\n"
	    "[backend b]\n"
	    "server = 127.0.0.1:8081\n"
	    "idle_timeout = 0.5ms\n"
	    "[route all]\n"
	    "backend = app\n"
	    "read_timeout = 500us\n",
	    "FILE:7: idle_timeout: invalid value \"999us\": expected 0, or a "
	    "duration from 1ms to 24h, such as 500ms, 5s, 2m or 1h\n"
	    "FILE:10: idle_timeout: invalid value \"0.5ms\": expected 0, or a "
	    "duration from 1ms to 24h, such as 500ms, 5s, 2m or 1h\n"
	    "FILE:13: read_timeout: invalid value \"500us\": expected 0, or a "
	    "duration from 1ms to 24h, such as 500ms, 5s, 2m or 1h\n");
	CHECK_LOADS(&cfg, LISTENER
	    "[backend app]\n"
	    "server = 127.0.0.1:8080\n"
	    "idle_timeout = 0\n"
	    "[backend b]\n"
	    "server = 127.0.0.1:8081\n"
	    "idle_timeout = 1000us\n"
	    "[route all]\n"
	    "backend = app\n"
	    "read_timeout = 0s\n"
	    "[route other]\n"
	    "backend = b\n"
	    "read_timeout = 1ms\n");
	if (cfg != NULL) {
		CHECK(cfg->backends[0].idle_timeout == 0);
		CHECK(cfg->backends[1].idle_timeout == 0.001);
		CHECK(cfg->routes[0].read_timeout == 0);
		CHECK(cfg->routes[1].read_timeout == 0.001);
	}
	config_free(cfg);
}

static void
test_sizes(void)
{
	static const struct {
		const char	*key;
		const char	*text;
		long long	 bytes;	/* -1: rejected */
	} t[] = {
		{ "stream_window", "4k", 4096 },
		{ "stream_window", "4096", 4096 },
		{ "stream_window", "4095", -1 },
		{ "stream_window", "16m", 16 << 20 },
		{ "stream_window", "16M", 16 << 20 },
		{ "stream_window", "16777217", -1 },
		{ "stream_window", "1g", -1 },
		{ "stream_window", "64K", 64 << 10 },
		{ "stream_window", "64kb", -1 },
		{ "stream_window", "-64k", -1 },
		{ "stream_window", "k", -1 },
		{ "stream_window", "1.5m", -1 },
		{ "stream_window", "99999999999999999g", -1 },
		{ "response_buffer_size", "16k", 16 << 10 },
		{ "response_buffer_size", "15k", -1 },
		{ "response_buffer_size", "64m", 64 << 20 },
		{ "response_buffer_size", "65m", -1 },
		{ "max_header_size", "1k", 1024 },
		{ "max_header_size", "1023", -1 },
		{ "max_header_size", "1m", 1 << 20 },
		{ "max_header_size", "1025k", -1 },
		{ "qpack_table_size", "0", 0 },
		{ "qpack_table_size", "64k", 64 << 10 },
		{ "qpack_table_size", "65537", -1 },
		{ "qpack_blocked_streams", "0", 0 },
		{ "qpack_blocked_streams", "1000", 1000 },
		{ "qpack_blocked_streams", "1001", -1 },
		{ "qpack_blocked_streams", "1k", -1 },
		{ "max_streams_bidi", "1", 1 },
		{ "max_streams_bidi", "10000", 10000 },
		{ "max_streams_bidi", "10001", -1 },
		{ "max_streams_bidi", "+5", -1 },
		{ "max_streams_bidi", "5 5", -1 },
	};
	struct config	*cfg;
	long long	 got;
	size_t		 i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		cfg = test_global(t[i].key, t[i].text);
		if (t[i].bytes < 0) {
			if (cfg != NULL)
				fprintf(stderr, "%s = %s: accepted\n",
				    t[i].key, t[i].text);
			CHECK(cfg == NULL);
			config_free(cfg);
			continue;
		}
		CHECK(cfg != NULL);
		if (cfg == NULL) {
			fprintf(stderr, "%s = %s: rejected\n", t[i].key,
			    t[i].text);
			continue;
		}
		if (strcmp(t[i].key, "stream_window") == 0)
			got = (long long)cfg->stream_window;
		else if (strcmp(t[i].key, "response_buffer_size") == 0)
			got = (long long)cfg->response_buffer_size;
		else if (strcmp(t[i].key, "max_header_size") == 0)
			got = (long long)cfg->max_header_size;
		else if (strcmp(t[i].key, "qpack_table_size") == 0)
			got = (long long)cfg->qpack_table_size;
		else if (strcmp(t[i].key, "qpack_blocked_streams") == 0)
			got = (long long)cfg->qpack_blocked_streams;
		else
			got = (long long)cfg->max_streams_bidi;
		CHECK_EQ_INT(got, t[i].bytes);
		config_free(cfg);
	}

	/* a route's max_body_size: none by default, up to 1024g */
	CHECK_LOADS(&cfg, LISTENER BACKEND
	    "max_body_size = 10m\n"
	    "[route other]\n"
	    "backend = app\n");
	if (cfg != NULL) {
		CHECK_EQ_INT(cfg->routes[0].max_body_size, 10 << 20);
		CHECK_EQ_INT(cfg->routes[1].max_body_size, 0);
	}
	config_free(cfg);
	/*
	 * [global]'s is the default of the routes without their own, even
	 * when it comes after them; 0 in a route lifts it there
	 */
	CHECK_LOADS(&cfg, LISTENER BACKEND
	    "[route big]\n"
	    "backend = app\n"
	    "max_body_size = 5m\n"
	    "[route open]\n"
	    "backend = app\n"
	    "max_body_size = 0\n"
	    "[global]\n"
	    "max_body_size = 1m\n");
	if (cfg != NULL) {
		CHECK_EQ_INT(cfg->max_body_size, 1 << 20);
		CHECK_EQ_INT(cfg->routes[0].max_body_size, 1 << 20);
		CHECK_EQ_INT(cfg->routes[1].max_body_size, 5 << 20);
		CHECK_EQ_INT(cfg->routes[2].max_body_size, 0);
	}
	config_free(cfg);
	CHECK_ERRS(LISTENER BACKEND
	    "max_body_size = 1025g\n",
	    "FILE:9: max_body_size: invalid value \"1025g\": expected a size "
	    "from 0 to 1024g, in bytes or with k, m or g\n");
}

static void
test_addr(void)
{
	struct addr	 a, b;
	const char	*err;
	char		 buf[ADDR_STRLEN];

	CHECK_EQ_INT(addr_parse("127.0.0.1:80", false, &a, &err), 0);
	CHECK_EQ_STR(addr_format(&a, buf, sizeof(buf)), "127.0.0.1:80");
	CHECK_EQ_STR(addr_format_host(&a, buf, sizeof(buf)), "127.0.0.1");
	CHECK_EQ_INT(a.len, sizeof(struct sockaddr_in));
	CHECK_EQ_INT(addr_parse("[::1]:443", false, &b, &err), 0);
	CHECK_EQ_STR(addr_format(&b, buf, sizeof(buf)), "[::1]:443");
	CHECK_EQ_STR(addr_format_host(&b, buf, sizeof(buf)), "::1");
	CHECK_EQ_INT(b.len, sizeof(struct sockaddr_in6));
	CHECK(!addr_equal(&a, &b));
	CHECK_EQ_INT(addr_parse("[::]:443", false, &b, &err), 0);
	CHECK_EQ_STR(addr_format(&b, buf, sizeof(buf)), "[::]:443");
	CHECK_EQ_INT(addr_parse("0.0.0.0:443", false, &b, &err), 0);
	CHECK_EQ_STR(addr_format(&b, buf, sizeof(buf)), "0.0.0.0:443");

	CHECK_EQ_INT(addr_parse("127.0.0.1:81", false, &b, &err), 0);
	CHECK(!addr_equal(&a, &b));
	CHECK_EQ_INT(addr_parse("127.0.0.1:80", false, &b, &err), 0);
	CHECK(addr_equal(&a, &b));
	addr_set(&b, &a.u.sa, a.len);
	CHECK(addr_equal(&a, &b));
	CHECK_EQ_INT(b.len, a.len);

	/* a name resolves to its first address */
	CHECK_EQ_INT(addr_parse("localhost:8080", false, &a, &err), 0);
	CHECK(a.u.sa.sa_family == AF_INET || a.u.sa.sa_family == AF_INET6);
	CHECK(strstr(addr_format(&a, buf, sizeof(buf)), ":8080") != NULL);

	CHECK_EQ_INT(addr_parse("unix:/run/x.sock", true, &a, &err), 0);
	CHECK_EQ_STR(addr_format(&a, buf, sizeof(buf)), "unix:/run/x.sock");
	CHECK_EQ_INT(a.u.sa.sa_family, AF_UNIX);
	CHECK_EQ_INT(addr_parse("unix:/run/x.sock", true, &b, &err), 0);
	CHECK(addr_equal(&a, &b));
	CHECK_EQ_INT(addr_parse("unix:/run/y.sock", true, &b, &err), 0);
	CHECK(!addr_equal(&a, &b));

	/* addr_cmp orders them, 0 for the same address only */
	{
		/* by family (AF_UNIX, AF_INET, AF_INET6), address, port */
		static const char *const sorted[] = { "unix:/run/x.sock",
		    "unix:/run/x.socket", "10.0.0.2:80", "10.0.0.2:443",
		    "10.0.0.10:80", "[::1]:80", "[::2]:1" };
		struct addr v[7];

		for (size_t i = 0; i < 7; i++)
			CHECK_EQ_INT(addr_parse(sorted[i], true, &v[i], &err),
			    0);
		for (size_t i = 0; i < 7; i++)
			for (size_t j = 0; j < 7; j++) {
				int rc = addr_cmp(&v[i], &v[j]);

				CHECK(i < j ? rc < 0 : i > j ? rc > 0 : rc == 0);
				CHECK(addr_equal(&v[i], &v[j]) == (i == j));
			}
		CHECK_EQ_INT(addr_parse("[0::0:1]:80", true, &b, &err), 0);
		CHECK_EQ_INT(addr_cmp(&v[5], &b), 0);
	}

	/* a short buffer truncates */
	CHECK_EQ_INT(addr_parse("127.0.0.1:80", false, &a, &err), 0);
	CHECK_EQ_STR(addr_format(&a, buf, 5), "127.");

#define BAD(s, unix, msg) do {						\
	err = NULL;							\
	CHECK_EQ_INT(addr_parse(s, unix, &a, &err), -1);		\
	CHECK_EQ_STR(err, msg);						\
} while (0)
	BAD("", true, "empty address");
	BAD("127.0.0.1", true, "missing port");
	BAD("127.0.0.1:", true, "missing port");
	BAD(":80", true, "missing host");
	BAD("127.0.0.1:0", true, "invalid port: expected a number from 1 "
	    "to 65535");
	BAD("127.0.0.1:65536", true, "invalid port: expected a number from "
	    "1 to 65535");
	BAD("127.0.0.1:http", true, "invalid port: expected a number from "
	    "1 to 65535");
	BAD("127.0.0.1:-1", true, "invalid port: expected a number from 1 "
	    "to 65535");
	BAD("::1:80", true, "an IPv6 address must be written in brackets, "
	    "as in [::1]:443");
	BAD("[::1]", true, "missing port");
	BAD("[::1:80", true, "missing ']' after the IPv6 address");
	BAD("[::1]80", true, "expected ':' and a port after ']'");
	BAD("[1.2.3.4]:80", true, "invalid IPv6 address");
	BAD("[]:80", true, "missing host");
	BAD("unix:/run/x.sock", false, "unix sockets are not allowed here");
	BAD("unix:", true, "missing unix socket path");
	BAD("unix:x.sock", true, "unix socket path must be absolute");
	/* inet_aton's forms: each was taken as another address */
#define BAD4(s) BAD(s, true, "invalid IPv4 address: expected four decimal " \
	    "numbers, as in 192.0.2.1")
	BAD4("127.0.0.010:80");		/* was 127.0.0.8 */
	BAD4("127.1:80");
	BAD4("0x7f.0.0.1:80");
	BAD4("2130706433:80");
	BAD4("0x7f000001:80");
	BAD4("1.2.3.4.5:80");
	BAD4("256.0.0.1:80");
#undef BAD4
#undef BAD
	CHECK_EQ_INT(addr_parse("10.0.0.10:8080", false, &a, &err), 0);
	CHECK_EQ_STR(addr_format(&a, buf, sizeof(buf)), "10.0.0.10:8080");
	{
		char	long_path[200];

		memset(long_path, 'a', sizeof(long_path) - 1);
		long_path[sizeof(long_path) - 1] = '\0';
		memcpy(long_path, "unix:/", 6);
		CHECK_EQ_INT(addr_parse(long_path, true, &a, &err), -1);
		CHECK_EQ_STR(err, "unix socket path is too long");
	}
}

/*
 * server: the address, then options, each known and once; a word that is
 * neither is an error, not a part of a Unix socket's path.
 */
static void
test_server_options(void)
{
	struct config			*cfg;
	const struct config_backend	*b;

	CHECK_LOADS(&cfg, LISTENER
	    "[backend app]\n"
	    "server = 127.0.0.1:8080 weight=3\n"
	    "server = unix:/run/app.sock\tbackup  weight=2\n"
	    "server = 127.0.0.1:8081 backup\n"
	    "[route all]\n"
	    "backend = app\n");
	if (cfg != NULL) {
		b = &cfg->backends[0];
		CHECK_EQ_INT(b->nservers, 3);
		CHECK_EQ_STR(b->servers[0].text, "127.0.0.1:8080");
		CHECK_EQ_INT(b->servers[0].weight, 3);
		CHECK_EQ_INT(b->servers[0].backup, 0);
		CHECK_EQ_STR(b->servers[1].text, "unix:/run/app.sock");
		CHECK_EQ_INT(b->servers[1].weight, 2);
		CHECK_EQ_INT(b->servers[1].backup, 1);
		CHECK_EQ_INT(b->servers[2].weight, 1);
		CHECK_EQ_INT(b->servers[2].backup, 1);
	}
	config_free(cfg);

	CHECK_ERRS(LISTENER
	    "[backend app]\n"
	    "server = unix:/tmp/x.sock wieght=2\n"
	    "server = 127.0.0.1:8080 bakup\n"
	    "server = 127.0.0.1:8081 weight=3 weight=1\n"
	    "server = 127.0.0.1:8082 backup backup\n"
	    "server = unix:/run/my app.sock\n"
	    "server = 127.0.0.1:8083 weight=\n"
	    "server = 127.0.0.1:8084 weight=2x\n"
	    "server = 127.0.0.1:8085 Backup\n"
	    "server = 127.0.0.1 8085\n"
	    "server = 127.0.0.1:8086\n"
	    "[route all]\n"
	    "backend = app\n",
	    "FILE:6: server: unknown option \"wieght=2\": expected weight=N "
	    "or backup\n"
	    "FILE:7: server: unknown option \"bakup\": expected weight=N or "
	    "backup\n"
	    "FILE:8: server: \"weight=\" is given twice\n"
	    "FILE:9: server: \"backup\" is given twice\n"
	    "FILE:10: server: unknown option \"app.sock\": expected weight=N "
	    "or backup (a Unix socket's path holds no blank)\n"
	    "FILE:11: server: invalid weight \"\": expected an integer from "
	    "1 to 100\n"
	    "FILE:12: server: invalid weight \"2x\": expected an integer from "
	    "1 to 100\n"
	    "FILE:13: server: unknown option \"Backup\": expected weight=N or "
	    "backup\n"
	    "FILE:14: server: invalid address \"127.0.0.1\": missing port\n");
}

/*
 * A server twice in a backend, by its address however written: refused at
 * the later line. Two backends may share one.
 */
static void
test_server_twice(void)
{
	struct config	*cfg;

	CHECK_ERRS(LISTENER
	    "[backend app]\n"
	    "server = 127.0.0.1:8080\n"
	    "server = 127.0.0.1:8081\n"
	    "server = 127.0.0.1:8080 backup\n"
	    "server = unix:/run/app.sock\n"
	    "server = [::1]:8080\n"
	    "server = [0:0::1]:8080 weight=2\n"
	    "server = unix:/run/app.sock\n"
	    "server = 127.0.0.1:8080\n"
	    "[route all]\n"
	    "backend = app\n",
	    "FILE:8: server: \"127.0.0.1:8080\" is already used at line 6\n"
	    "FILE:11: server: \"[0:0::1]:8080\" is already used at line 10, "
	    "as \"[::1]:8080\"\n"
	    "FILE:12: server: \"unix:/run/app.sock\" is already used at "
	    "line 9\n"
	    "FILE:13: server: \"127.0.0.1:8080\" is already used at line 6\n");

	CHECK_LOADS(&cfg, LISTENER
	    "[backend app]\n"
	    "server = 127.0.0.1:8080\n"
	    "server = 127.0.0.1:8081\n"
	    "server = [::1]:8080\n"
	    "server = unix:/run/app.sock\n"
	    "server = unix:/run/app.sock2\n"
	    "[backend other]\n"
	    "server = 127.0.0.1:8080\n"
	    "[route all]\n"
	    "backend = app\n");
	config_free(cfg);
}

/* conf/qproxy.conf is valid but for its certificate files */
static void
test_example(void)
{
	struct config	*cfg;
	FILE		*mem;
	char		*buf = NULL, *line, *next;
	size_t		 len = 0;
	int		 n = 0;

	if (test_example_path[0] == '\0') {
		fprintf(stderr, "conf/qproxy.conf not found: skipped\n");
		return;
	}
	if ((mem = open_memstream(&buf, &len)) == NULL)
		abort();
	cfg = config_load(test_example_path, mem);
	fclose(mem);
	for (line = buf; *line != '\0'; line = next) {
		next = strchr(line, '\n');
		*next++ = '\0';
		n++;
		if (strstr(line, ": cannot open \"/etc/qproxy/") == NULL) {
			fprintf(stderr, "%s\n", line);
			CHECK(0);
		}
	}
	/* only certificate and private_key may fail, and only when absent */
	if (access("/etc/qproxy/cert.pem", R_OK) == -1)
		CHECK_EQ_INT(n, 2);
	else
		CHECK(cfg != NULL);
	config_free(cfg);
	free(buf);
}

/* QUIC-LB: the nonce's length by default, and what is kept. */
static void
test_cid(void)
{
	static const struct {
		const char	*sid;
		size_t		 sidlen, nonce;
	} t[] = {
		{ "off", 0, 0 },
		{ "0a", 1, 15 },
		{ "A1b2C3", 3, 13 },
		{ "000102030405060708090a0b", 12, 4 },
		{ "000102030405060708090a0b0c", 13, 6 },
		{ "000102030405060708090a0b0c0d0e", 15, 4 },
	};
	struct config *cfg;
	char text[512];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		snprintf(text, sizeof(text), "[global]\ncid_server_id = %s\n"
		    LISTENER, t[i].sid);
		CHECK_LOADS(&cfg, text);
		if (cfg == NULL)
			continue;
		CHECK_EQ_INT(cfg->cid_sidlen, t[i].sidlen);
		if (t[i].sidlen > 0) {
			CHECK_EQ_INT(cfg->cid_nonce_len, t[i].nonce);
			CHECK_EQ_INT(cfg->cid_sid[0], i == 2 ? 0xa1 :
			    i == 1 ? 0x0a : 0);
			CHECK_EQ_INT(cfg->cid_sid[t[i].sidlen - 1],
			    i == 2 ? 0xc3 : i == 1 ? 0x0a : t[i].sidlen - 1);
		}
		CHECK(cfg->cid_key_file == NULL);
		config_free(cfg);
	}
	CHECK_LOADS(&cfg, "[global]\ncid_server_id = 0a0b\n"
	    "cid_nonce_length = 17\ncid_config_id = 6\n"
	    "cid_key_file = /etc/qproxy/lb.key\n" LISTENER);
	if (cfg != NULL) {
		CHECK_EQ_INT(cfg->cid_nonce_len, 17);
		CHECK_EQ_INT(cfg->cid_config_id, 6);
		CHECK_EQ_STR(cfg->cid_key_file, "/etc/qproxy/lb.key");
		config_free(cfg);
	}
}

/* return and redirect: qproxy answers the route's requests itself */
static void
test_answers(void)
{
	struct config	*cfg;
	char		*errs;

	cfg = test_load(LISTENER
	    "[route old]\n"
	    "path_prefix = /old/\n"
	    "strip_prefix = on\n"
	    "redirect = 308 https://$host/new$request_uri\n"
	    "[route maintenance]\n"
	    "return = 503 Back  at ten.\n"
	    "set_response_header = Retry-After: 600\n"
	    "[route gone]\n"
	    "return = 410\n", &errs);
	CHECK(cfg != NULL);
	CHECK_EQ_STR(errs, "");
	if (cfg != NULL) {
		CHECK_EQ_INT(cfg->routes[0].answer, 308);
		CHECK(cfg->routes[0].redirect);
		CHECK_EQ_STR(cfg->routes[0].answer_text,
		    "https://$host/new$request_uri");
		CHECK_EQ_INT(cfg->routes[1].answer, 503);
		CHECK(!cfg->routes[1].redirect);
		/* the text as written, and a newline */
		CHECK_EQ_STR(cfg->routes[1].answer_text, "Back  at ten.\n");
		CHECK_EQ_INT(cfg->routes[2].answer, 410);
		CHECK(cfg->routes[2].answer_text == NULL);
		config_free(cfg);
	}
	free(errs);

	CHECK_ERRS(LISTENER
	    "[backend b]\n"
	    "server = 127.0.0.1:1\n"
	    "[route a]\n"
	    "[route b]\n"
	    "backend = b\n"
	    "return = 200\n"
	    "[route c]\n"
	    "return = 301 /x\n"
	    "[route d]\n"
	    "redirect = 200 /x\n"
	    "[route e]\n"
	    "redirect = 301 x\n"
	    "[route f]\n"
	    "redirect = 301 /a$path\n"
	    "[route g]\n"
	    "return = 204 hi\n"
	    "[route h]\n"
	    "redirect = 302 /ok\n"
	    "return = 200\n"
	    "[route i]\n"
	    "return = 200 ok\n"
	    "set_request_header = X-A: b\n"
	    "[route j]\n"
	    "redirect = 301 /a\tb\n"
	    "[route k]\n"
	    "redirect = 307 /x\n"
	    "set_response_header = Location: /y\n"
	    "[route l]\n"
	    "return = 99\n"
	    "[route m]\n"
	    "redirect = 301\n"
	    "[route n]\n"
	    "return = 200 a\x01b\n"
	    "[route o]\n"
	    "redirect = 301 https://$hostname/\n"
	    "[route p]\n"
	    "redirect = 302 /a$\n"
	    "[route q]\n"
	    "redirect = 302 /a%24\n",
	    "FILE:7: [route a]: missing required key \"backend\" (or "
	    "\"return\" or \"redirect\")\n"
	    "FILE:10: [route b]: a route has a backend, a return or a "
	    "redirect, not more than one\n"
	    "FILE:12: return: 301 is a redirect: write redirect = 301 URL\n"
	    "FILE:14: redirect: invalid value \"200 /x\": expected a status "
	    "of 301, 302, 303, 307 or 308, then a URL\n"
	    "FILE:16: redirect: \"x\" is neither a path (\"/...\") nor an "
	    "absolute URL (\"https://...\")\n"
	    "FILE:18: redirect: unknown variable \"$path\": "
	    "$request_uri and $host are known\n"
	    "FILE:20: return: a 204 has no body\n"
	    "FILE:23: return: the route has a redirect already\n"
	    "FILE:26: set_request_header: the route sends no request on (it "
	    "has a return)\n"
	    "FILE:28: redirect: the URL has a space or a control character\n"
	    "FILE:30: redirect: the route also sets Location with "
	    "set_response_header\n"
	    "FILE:33: return: invalid value \"99\": expected a status from "
	    "200 to 599, then the body's text if any\n"
	    "FILE:35: redirect: invalid value \"301\": expected a URL after "
	    "the status\n"
	    "FILE:37: return: the text has a control character\n"
	    "FILE:39: redirect: unknown variable \"$hostname\": "
	    "$request_uri and $host are known\n"
	    "FILE:41: redirect: unknown variable \"$\": "
	    "$request_uri and $host are known\n");

	/* header: "Name: value" or "Name" alone, any name, repeated */
	cfg = test_load(LISTENER
	    BACKEND
	    "header = X-Canary:  1 \n"
	    "header = Cookie\n"
	    "header = x-canary: 2\n", &errs);
	CHECK(cfg != NULL);
	CHECK_EQ_STR(errs, "");
	if (cfg != NULL) {
		const struct config_headers *h = &cfg->routes[0].match_headers;

		CHECK_EQ_INT(h->n, 3);
		if (h->n == 3) {
			CHECK_EQ_STR(h->v[0].name, "x-canary");
			CHECK_EQ_STR(h->v[0].value, "1");
			CHECK_EQ_STR(h->v[1].name, "cookie");
			CHECK(h->v[1].value == NULL);
			CHECK_EQ_STR(h->v[2].value, "2");
		}
		config_free(cfg);
	}
	free(errs);
	CHECK_ERRS(LISTENER
	    BACKEND
	    "header = X Y: 1\n"
	    "header = : 1\n"
	    "header = HOST\n",
	    "FILE:9: header: \"X Y\" is not a field name\n"
	    "FILE:10: header: invalid value \": 1\": expected \"Name: "
	    "value\"\n"
	    "FILE:11: header: HTTP/3 requests carry their host in :authority, "
	    "seldom in \"Host\": match it with host =\n");

	/* methods and auth_realm, each with a value and what it needs */
	CHECK_ERRS(LISTENER
	    BACKEND
	    "methods = GET\n"
	    "[route none]\n"
	    "methods =\n"
	    "backend = app\n"
	    "[route lower]\n"
	    "methods = get\n"
	    "backend = app\n"
	    "[route realm]\n"
	    "auth_realm = Staging\n"
	    "backend = app\n"
	    "[route quote]\n"
	    "auth_realm = a\"b\n"
	    "backend = app\n",
	    "FILE:11: methods: missing value\n"
	    "FILE:14: methods: invalid value \"get\": expected method names "
	    "in capitals, separated by spaces\n"
	    "FILE:17: auth_realm: the route has no auth_basic_file\n"
	    "FILE:20: auth_realm: invalid value \"a\"b\": expected printable "
	    "ASCII, no quote or backslash\n");
}

/* error_page: files read with the configuration, the route's first */
static void
test_error_pages(void)
{
	const struct config_page_file *f;
	struct config	*cfg;
	char		*errs, big[65537];
	FILE		*fp;

	unit_write_file("50x.html", "<h1>Back soon</h1>\n");
	unit_write_file("404.json", "{\"error\": \"not found\"}\n");
	unit_write_file("empty.txt", "");
	unit_write_file("page.css", "p {}\n");
	memset(big, 'x', sizeof(big));
	if ((fp = fopen("big.html", "w")) == NULL) {
		perror("big.html");
		exit(1);
	}
	fwrite(big, 1, sizeof(big), fp);
	fclose(fp);

	cfg = test_load(LISTENER
	    "[global]\n"
	    "error_page = 502 503\t504 50x.html\n"
	    "error_page = 404 404.json\n"
	    BACKEND
	    "[route api]\n"
	    "path_prefix = /api/\n"
	    "backend = app\n"
	    "error_page = 502 empty.txt\n", &errs);
	CHECK(cfg != NULL);
	CHECK_EQ_STR(errs, "");
	if (cfg != NULL) {
		const struct config_route *all = &cfg->routes[0],
		    *api = &cfg->routes[1];

		f = config_error_page(cfg, NULL, 503);
		CHECK(f != NULL && f->len == 19 &&
		    memcmp(f->body, "<h1>Back soon</h1>\n", 19) == 0);
		CHECK(f != NULL &&
		    strcmp(f->type, "text/html; charset=utf-8") == 0);
		/* one file's bytes for the statuses of its line */
		CHECK(config_error_page(cfg, all, 502) == f);
		CHECK(config_error_page(cfg, all, 504) == f);
		f = config_error_page(cfg, api, 502);
		CHECK(f != NULL && f->len == 0 &&
		    strcmp(f->type, "text/plain; charset=utf-8") == 0);
		CHECK(config_error_page(cfg, api, 503) ==
		    config_error_page(cfg, NULL, 502));
		f = config_error_page(cfg, api, 404);
		CHECK(f != NULL && strcmp(f->type, "application/json") == 0);
		CHECK(config_error_page(cfg, api, 500) == NULL);
		CHECK_EQ_INT(cfg->npage_files, 3);
		config_free(cfg);
	}
	free(errs);

	CHECK_ERRS(LISTENER
	    "[global]\n"
	    "error_page = 502 page.css\n"
	    "error_page = 502 big.html\n"
	    "error_page = 502 nope.html\n"
	    "error_page = 50x.html\n"
	    "error_page = 200 50x.html\n"
	    "error_page = 502 502 50x.html\n"
	    "error_page = 503 50x.html\n"
	    "error_page = 503 50x.html\n"
	    "error_page = 404 .\n",
	    "FILE:6: error_page: \"DIR/page.css\": the name ends in none of "
	    ".html, .htm, .json and .txt, which give its type\n"
	    "FILE:7: error_page: \"DIR/big.html\": larger than 64k\n"
	    "FILE:8: error_page: cannot open \"DIR/nope.html\": No such file "
	    "or directory\n"
	    "FILE:9: error_page: invalid value \"50x.html\": expected "
	    "statuses from 400 to 599, then a file\n"
	    "FILE:10: error_page: invalid value \"200 50x.html\": expected "
	    "statuses from 400 to 599, then a file\n"
	    "FILE:11: error_page: 502 is given twice\n"
	    "FILE:13: error_page: 503 has a page already\n"
	    "FILE:14: error_page: \"DIR/.\": the name ends in none of .html, "
	    ".htm, .json and .txt, which give its type\n");
	unlink("50x.html");
	unlink("404.json");
	unlink("empty.txt");
	unlink("page.css");
	unlink("big.html");
}

/*
 * Every file a relative path names is taken from the directory of the
 * file it is written in, as certificate's is, whatever directory qproxy
 * runs in (/ for the service); the files of the daemon's own state, logs
 * and sockets take absolute paths only.
 */
static void
test_relative_files(void)
{
	struct config	*cfg;
	char		 cwd[PATH_MAX], *errs;

	CHECK(mkdir("sub", 0700) == 0);
	unit_write_file("50x.html", "<h1>Back soon</h1>\n");
	unit_write_file("users.txt", "bob:$6$abc$def\n");
	unit_write_file("sub/404.txt", "not here\n");
	unit_write_file("sub/site.conf", "[route site]\n"
	    "host = example.com\n"
	    "backend = app\n"
	    "error_page = 404 404.txt\n"
	    "auth_basic_file = ../users.txt\n");
	CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
	CHECK(chdir("/") == 0);
	cfg = test_load(LISTENER
	    "[global]\n"
	    "error_page = 502 50x.html\n"
	    BACKEND
	    "auth_basic_file = users.txt\n"
	    "include = sub/*.conf\n", &errs);
	CHECK(cfg != NULL);
	CHECK_EQ_STR(errs, "");
	if (cfg != NULL) {
		const struct config_page_file *f;

		CHECK_EQ_INT(cfg->nroutes, 2);
		f = config_error_page(cfg, NULL, 502);
		CHECK(f != NULL && f->len == 19);
		f = config_error_page(cfg, &cfg->routes[1], 404);
		CHECK(f != NULL && f->len == 9);
		CHECK(cfg->routes[0].auth != NULL &&
		    cfg->routes[0].auth->n == 1);
		CHECK(cfg->routes[1].auth != NULL &&
		    cfg->routes[1].auth->n == 1);
	}
	config_free(cfg);
	free(errs);
	CHECK(chdir(cwd) == 0);

	CHECK_ERRS(LISTENER
	    "[global]\n"
	    "error_page = 502 nope.html\n"
	    BACKEND
	    "auth_basic_file = nope.txt\n"
	    "[global]\n"
	    "access_log = access.log\n"
	    "error_log = error.log\n"
	    "secret_file = secret\n"
	    "state_file = state\n"
	    "cid_key_file = lb.key\n"
	    "keylog_file = keys.log\n"
	    "qlog_dir = qlog\n"
	    "control_socket = control.sock\n",
	    "FILE:6: error_page: cannot open \"DIR/nope.html\": No such file "
	    "or directory\n"
	    "FILE:11: auth_basic_file: cannot open \"DIR/nope.txt\": No such "
	    "file or directory\n"
	    "FILE:13: access_log: invalid value \"access.log\": expected an "
	    "absolute path, stderr or off\n"
	    "FILE:14: error_log: invalid value \"error.log\": expected an "
	    "absolute path or stderr\n"
	    "FILE:15: secret_file: invalid value \"secret\": expected an "
	    "absolute path\n"
	    "FILE:16: state_file: invalid value \"state\": expected an "
	    "absolute path or off\n"
	    "FILE:17: cid_key_file: invalid value \"lb.key\": expected an "
	    "absolute path or off\n"
	    "FILE:18: keylog_file: invalid value \"keys.log\": expected an "
	    "absolute path or off\n"
	    "FILE:19: qlog_dir: invalid value \"qlog\": expected an "
	    "absolute path or off\n"
	    "FILE:20: control_socket: invalid value \"control.sock\": "
	    "expected an absolute path\n");

	unlink("sub/site.conf");
	unlink("sub/404.txt");
	rmdir("sub");
	unlink("50x.html");
	unlink("users.txt");
}

int
main(void)
{
	char	 path[PATH_MAX];

	if (realpath("conf/qproxy.conf", test_example_path) == NULL)
		test_example_path[0] = '\0';
	snprintf(test_dir, sizeof(test_dir), "%s/qproxy-test.XXXXXX",
	    getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(test_dir) == NULL || chdir(test_dir) == -1) {
		perror(test_dir);
		return 1;
	}
	unit_write_file("cert.pem", "-----BEGIN CERTIFICATE-----\n");
	unit_write_file("key.pem", "-----BEGIN PRIVATE KEY-----\n");
	unit_write_file("cert2.pem", "-----BEGIN CERTIFICATE-----\n");
	unit_write_file("key2.pem", "-----BEGIN PRIVATE KEY-----\n");
	unit_write_file("cert3.pem", "-----BEGIN CERTIFICATE-----\n");
	unit_write_file("key3.pem", "-----BEGIN PRIVATE KEY-----\n");

	test_full();
	test_defaults();
	test_vaes();
	test_sections();
	test_keys();
	test_required();
	test_files();
	test_include();
	test_many();
	test_durations();
	test_rates();
	test_sizes();
	test_addr();
	test_server_options();
	test_server_twice();
	test_example();
	test_cid();
	test_answers();
	test_error_pages();
	test_relative_files();

	unlink("cert.pem");
	unlink("key.pem");
	unlink("cert2.pem");
	unlink("key2.pem");
	unlink("cert3.pem");
	unlink("key3.pem");
	snprintf(path, sizeof(path), "%s", test_dir);
	if (chdir("/") == -1 || rmdir(path) == -1)
		perror(path);
	UNIT_DONE();
}
