/*
 * config.c: the configuration file, parsed into plain data.
 *
 * inih splits lines into keys and values; our reader in front of it counts
 * lines, parses section headers, reads included files in place of their
 * include lines and reports malformed lines, so that every error carries
 * its file and line and parsing always goes on to the end. What each key
 * accepts comes from one table, config_keys.
 */
#include <sys/param.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <ini.h>
#include <limits.h>
#include <pwd.h>
#include <search.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "cid.h"
#include "compress.h"
#include "config.h"
#include "request.h"
#include "file.h"
#include "log.h"
#include "route.h"

#define nitems(a)	(sizeof(a) / sizeof((a)[0]))

#define KB		UINT64_C(1024)
#define MB		(KB * 1024)
#define GB		(MB * 1024)

/* durations are bounded in milliseconds */
#define MS_PER_S	UINT64_C(1000)
#define MS_PER_M	(MS_PER_S * 60)
#define MS_PER_H	(MS_PER_M * 60)
#define DURATION_MAX	(24 * MS_PER_H)

#define CONFIG_NAME_MAX	64
#define CONFIG_LINE_MAX	8192	/* a line's characters, trimmed */
#define CONFIG_URL_MAX	2048	/* redirect's */
#define CONFIG_PAGE_MAX	(64 * 1024)	/* error_page's file */

enum config_sect {
	SECT_GLOBAL,
	SECT_LISTENER,
	SECT_BACKEND,
	SECT_ROUTE,
	SECT_IGNORED,	/* a bad header: its keys are skipped */
};

static const char *const config_sect_names[] = {
	"global", "listener", "backend", "route",
};

/* one section of the file; [global] sections share one */
struct config_section {
	enum config_sect	 kind;
	size_t			 index;		/* into the config's array */
	int			 line;		/* of the header */
	const char		*name;		/* the config's copy */
	int			 keyline[CONFIG_MAX_KEYS];	/* first use */
	char			*backend;	/* route: backend as written */
	int			 backend_line;
};

/* A message at a line: an error, or a warning (config_warnings). */
struct config_msg {
	int		 line;
	size_t		 seq;		/* in finding order, for ties */
	char		*msg;
};

/* include: files in files at most this deep, and this many files in all */
#define CONFIG_INCLUDE_DEPTH	8
#define CONFIG_FILES_MAX	20000	/* a site a file: thousands of them */

/* A file being read: the configuration's, or one it includes. */
struct config_input {
	char			*path;		/* until opened */
	FILE			*fp;		/* NULL until read */
	size_t			 file;		/* into cfg->files, once open */
	int			 line;		/* its lines read */
	dev_t			 dev;		/* once open: the file, to */
	ino_t			 ino;		/* find include loops */
	int			 from;		/* its include line; 0: none */
	size_t			 up;		/* the input that includes it */
	unsigned		 depth;		/* includes around it */
	struct config_section	*resume;	/* the includer's section */
};

struct config_parser {
	const char		*path;
	struct config_input	*in;		/* a stack: the top is read */
	size_t			 nin;
	size_t			 npending;	/* of those, not yet opened */
	struct config		*cfg;
	int			 line;		/* across files: config_at */
	int			 main_line;	/* the main file's last read */
	char			*linebuf;
	size_t			 linecap;

	struct config_section	 global;
	struct config_section	**sections;	/* in file order */
	size_t			 nsections;
	void			*by_name;	/* the same, a tsearch tree */
	struct config_section	 ignored;
	struct config_section	*cur;		/* NULL before any header */

	bool			 listener_seen;

	struct config_msg	*errors;
	size_t			 nerrors;
	bool			 oom;
};

struct config_key;
typedef int (*config_setter)(struct config_parser *, const struct config_key *,
    struct config_section *, void *, const char *);

#define KEY_REPEAT	0x01	/* may be given more than once */
#define KEY_REQUIRED	0x02	/* must be given at least once */
#define KEY_STDERR	0x04	/* a path, or "stderr" */
#define KEY_OFF		0x08	/* a path, or "off" (stored as NULL) */
#define KEY_ZERO	0x10	/* 0 too, below min: none, or the default */

struct config_key {
	enum config_sect	 sect;
	const char		*name;
	config_setter		 set;
	uint64_t		 min, max;	/* sizes and counts; ms */
	const char		*def;		/* default, as written */
	int			 flags;
	size_t			 offset;	/* of the field it sets */
	size_t			 width;		/* of that field */
};

static int	config_set_level(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_duration(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_size(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_count(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_client_ca(struct config_parser *,
    const struct config_key *, struct config_section *, void *, const char *);
static int	config_set_file(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_listen(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_server(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_host(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_prefix(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_backend(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_answer(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_error_page(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_auth_file(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_realm(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_user(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_path(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_format(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_choice(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_header(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_health_host(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static const char *config_earlier(struct config_parser *, int);
static const char *config_earlier_than(struct config_parser *, int, int);
static bool	config_has_error(const struct config_parser *, int);
static int	config_set_request_id(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_health_path(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_acl(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_rate(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_workers(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_server_id(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_retry_on(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_methods(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);
static int	config_set_types(struct config_parser *,
		    const struct config_key *, struct config_section *, void *,
		    const char *);

#define F(type, field)	offsetof(struct type, field), \
			sizeof(((struct type *)0)->field)
#define NOF		0, 0

static const struct config_key config_keys[] = {
	{ SECT_GLOBAL, "log_level", config_set_level,
	    0, 0, "info", 0, F(config, log_level) },
	{ SECT_GLOBAL, "shutdown_timeout", config_set_duration,
	    0, DURATION_MAX, "30s", 0, F(config, shutdown_timeout) },
	{ SECT_GLOBAL, "idle_timeout", config_set_duration,
	    1, DURATION_MAX, "30s", 0, F(config, idle_timeout) },
	{ SECT_GLOBAL, "initial_rtt", config_set_duration,
	    1, 10 * MS_PER_S, "333ms", 0, F(config, initial_rtt) },
	{ SECT_GLOBAL, "batch_delay", config_set_duration,
	    0, 1, "200us", 0, F(config, batch_delay) },
	{ SECT_GLOBAL, "batch_busy", config_set_count,
	    0, 100, "70", 0, F(config, batch_busy) },
	{ SECT_GLOBAL, "stream_window", config_set_size,
	    4 * KB, 16 * MB, "64k", 0, F(config, stream_window) },
	{ SECT_GLOBAL, "connection_window", config_set_size,
	    64 * KB, 256 * MB, "4m", 0, F(config, connection_window) },
	{ SECT_GLOBAL, "response_buffer_size", config_set_size,
	    16 * KB, 64 * MB, "256k", 0, F(config, response_buffer_size) },
	{ SECT_GLOBAL, "response_buffer_total", config_set_size,
	    1 * MB, 1024 * GB, "256m", 0, F(config, response_buffer_total) },
	{ SECT_GLOBAL, "request_buffer_total", config_set_size,
	    1 * MB, 1024 * GB, "256m", 0, F(config, request_buffer_total) },
	{ SECT_GLOBAL, "quic_buffer_total", config_set_size,
	    1 * MB, 1024 * GB, "1g", 0, F(config, quic_buffer_total) },
	{ SECT_GLOBAL, "max_header_size", config_set_size,
	    1 * KB, 1 * MB, "64k", 0, F(config, max_header_size) },
	{ SECT_GLOBAL, "max_body_size", config_set_size,
	    0, 1024 * GB, "0", 0, F(config, max_body_size) },
	{ SECT_GLOBAL, "qpack_table_size", config_set_size,
	    0, 64 * KB, "4096", 0, F(config, qpack_table_size) },
	{ SECT_GLOBAL, "qpack_blocked_streams", config_set_count,
	    0, 1000, "100", 0, F(config, qpack_blocked_streams) },
	{ SECT_GLOBAL, "max_streams_bidi", config_set_count,
	    1, 10000, "100", 0, F(config, max_streams_bidi) },
	{ SECT_GLOBAL, "max_connections", config_set_count,
	    1, 10000000, "10000", 0, F(config, max_connections) },
	{ SECT_GLOBAL, "max_connections_per_client", config_set_count,
	    0, 10000000, "0", 0, F(config, max_conns_per_client) },
	{ SECT_GLOBAL, "max_handshakes", config_set_count,
	    1, 1000000, "1000", 0, F(config, max_handshakes) },
	{ SECT_GLOBAL, "max_requests_per_connection", config_set_count,
	    1, 1000000000, "10000", 0, F(config, max_requests_per_conn) },
	{ SECT_GLOBAL, "max_stream_resets", config_set_count,
	    1, 1000000, "200", 0, F(config, max_stream_resets) },
	{ SECT_GLOBAL, "max_request_rate_per_client", config_set_rate,
	    0, 1000000, "0", 0, F(config, request_rate) },
	{ SECT_GLOBAL, "request_burst_per_client", config_set_count,
	    0, 10000000, "0", 0, F(config, request_burst) },
	{ SECT_GLOBAL, "send_timeout", config_set_duration,
	    1, DURATION_MAX, "60s", 0, F(config, send_timeout) },
	{ SECT_GLOBAL, "workers", config_set_workers,
	    1, WORKERS_MAX, "1", 0, F(config, workers) },
	{ SECT_GLOBAL, "worker_timeout", config_set_duration,
	    3 * MS_PER_S, MS_PER_H, "30s", 0, F(config, worker_timeout) },
	{ SECT_GLOBAL, "user", config_set_user,
	    0, 0, NULL, 0, F(config, user) },
	{ SECT_GLOBAL, "control_socket", config_set_path,
	    0, 0, "/run/qproxy/control.sock", 0, F(config, control_socket) },
	{ SECT_GLOBAL, "error_log", config_set_path,
	    0, 0, "stderr", KEY_STDERR, F(config, error_log) },
	{ SECT_GLOBAL, "access_log", config_set_path,
	    0, 0, "off", KEY_STDERR | KEY_OFF, F(config, access_log) },
	{ SECT_GLOBAL, "access_log_format", config_set_format,
	    0, 0, "text", 0, F(config, access_log_format) },
	{ SECT_GLOBAL, "request_id_header", config_set_request_id,
	    0, 0, "off", 0, F(config, request_id_header) },
	{ SECT_GLOBAL, "trusted_proxies", config_set_acl,
	    1, 0, NULL, KEY_REPEAT, NOF },
	{ SECT_GLOBAL, "error_page", config_set_error_page,
	    0, 0, NULL, KEY_REPEAT, F(config, error_pages) },
	{ SECT_GLOBAL, "auth_check_rate", config_set_rate,
	    1, 1000000, "5", 0, F(config, auth_check_rate) },
	{ SECT_GLOBAL, "auth_check_rate_per_client", config_set_rate,
	    1, 1000000, "1", 0, F(config, auth_check_rate_client) },
	{ SECT_GLOBAL, "secret_file", config_set_path,
	    0, 0, "/var/lib/qproxy/secret", 0, F(config, secret_file) },
	/* unset: "state" beside secret_file (config_finish_state) */
	{ SECT_GLOBAL, "state_file", config_set_path,
	    0, 0, NULL, KEY_OFF, F(config, state_file) },
	{ SECT_GLOBAL, "retry_threshold", config_set_count,
	    0, 1000000, "100", 0, F(config, retry_threshold) },
	{ SECT_GLOBAL, "congestion_control", config_set_choice,
	    0, 0, "cubic", 0, F(config, congestion_control) },
	{ SECT_GLOBAL, "aes_gcm_vaes", config_set_choice,
	    0, 0, "on", 0, F(config, aes_gcm_vaes) },
	{ SECT_GLOBAL, "qlog_dir", config_set_path,
	    0, 0, "off", KEY_OFF, F(config, qlog_dir) },
	{ SECT_GLOBAL, "keylog_file", config_set_path,
	    0, 0, "off", KEY_OFF, F(config, keylog_file) },
	{ SECT_GLOBAL, "cid_server_id", config_set_server_id,
	    0, 0, "off", 0, NOF },
	{ SECT_GLOBAL, "cid_nonce_length", config_set_count,
	    CID_LB_MIN_NONCE, CID_LB_MAX_PLAIN - 1, NULL, 0,
	    F(config, cid_nonce_len) },
	{ SECT_GLOBAL, "cid_config_id", config_set_count,
	    0, CID_LB_UNROUTABLE - 1, "0", 0, F(config, cid_config_id) },
	{ SECT_GLOBAL, "cid_key_file", config_set_path,
	    0, 0, "off", KEY_OFF, F(config, cid_key_file) },
	{ SECT_GLOBAL, "compress", config_set_choice,
	    0, 0, "off", 0, F(config, compress) },
	{ SECT_GLOBAL, "compress_types", config_set_types,
	    0, 0, CONFIG_COMPRESS_TYPES, 0, F(config, compress_types) },
	{ SECT_GLOBAL, "compress_min_length", config_set_size,
	    0, 1 * GB, "256", 0, F(config, compress_min_length) },
	{ SECT_GLOBAL, "compress_level", config_set_count,
	    1, 9, "5", 0, F(config, compress_level) },
	{ SECT_GLOBAL, "compress_memory_total", config_set_size,
	    1 * MB, 1024 * GB, "64m", 0, F(config, compress_memory_total) },

	{ SECT_LISTENER, "address", config_set_listen,
	    0, 0, NULL, KEY_REPEAT | KEY_REQUIRED, NOF },
	{ SECT_LISTENER, "certificate", config_set_file,
	    0, 0, NULL, KEY_REPEAT | KEY_REQUIRED, NOF },
	{ SECT_LISTENER, "private_key", config_set_file,
	    0, 0, NULL, KEY_REPEAT | KEY_REQUIRED, NOF },
	{ SECT_LISTENER, "retry", config_set_choice,
	    0, 0, "auto", 0, F(config_listener, retry) },
	{ SECT_LISTENER, "early_data", config_set_choice,
	    0, 0, "off", 0, F(config_listener, early_data) },
	{ SECT_LISTENER, "early_data_methods", config_set_methods,
	    0, 0, "GET HEAD OPTIONS", 0,
	    F(config_listener, early_data_methods) },
	{ SECT_LISTENER, "max_connections", config_set_count,
	    0, 10000000, "0", 0, F(config_listener, max_connections) },
	{ SECT_LISTENER, "client_ca", config_set_client_ca,
	    0, 0, NULL, 0, NOF },
	{ SECT_LISTENER, "client_crl", config_set_client_ca,
	    0, 0, NULL, 0, NOF },
	{ SECT_LISTENER, "client_verify", config_set_choice,
	    0, 0, "require", 0, F(config_listener, client_verify) },
	{ SECT_LISTENER, "client_cert_header", config_set_request_id,
	    0, 0, "x-client-cert", 0, F(config_listener, client_cert_header) },

	{ SECT_BACKEND, "server", config_set_server,
	    0, 0, NULL, KEY_REPEAT | KEY_REQUIRED, NOF },
	{ SECT_BACKEND, "connect_timeout", config_set_duration,
	    1, DURATION_MAX, "5s", 0, F(config_backend, connect_timeout) },
	{ SECT_BACKEND, "read_timeout", config_set_duration,
	    1, DURATION_MAX, "60s", 0, F(config_backend, read_timeout) },
	{ SECT_BACKEND, "tunnel_timeout", config_set_duration,
	    1, DURATION_MAX, "1h", 0, F(config_backend, tunnel_timeout) },
	{ SECT_BACKEND, "fail_timeout", config_set_duration,
	    0, DURATION_MAX, "10s", 0, F(config_backend, fail_timeout) },
	{ SECT_BACKEND, "max_fails", config_set_count,
	    0, 1000, "3", 0, F(config_backend, max_fails) },
	{ SECT_BACKEND, "retry_on", config_set_retry_on,
	    0, 0, "off", 0, NOF },
	{ SECT_BACKEND, "balance", config_set_choice,
	    0, 0, "round_robin", 0, F(config_backend, balance) },
	{ SECT_BACKEND, "max_idle_connections", config_set_count,
	    0, 10000, "32", 0, F(config_backend, max_idle) },
	{ SECT_BACKEND, "idle_timeout", config_set_duration,
	    1, DURATION_MAX, "4s", KEY_ZERO, F(config_backend, idle_timeout) },
	{ SECT_BACKEND, "max_connections", config_set_count,
	    0, 1000000, "0", 0, F(config_backend, max_conns) },
	{ SECT_BACKEND, "request_buffer_size", config_set_size,
	    0, 1 * GB, "0", 0, F(config_backend, request_buffer) },
	{ SECT_BACKEND, "health_check", config_set_health_path,
	    0, 0, NULL, 0, F(config_backend, health_check) },
	{ SECT_BACKEND, "health_check_host", config_set_health_host,
	    0, 0, NULL, 0, F(config_backend, health_host) },
	{ SECT_BACKEND, "health_interval", config_set_duration,
	    100, DURATION_MAX, "5s", 0, F(config_backend, health_interval) },
	{ SECT_BACKEND, "health_timeout", config_set_duration,
	    1, DURATION_MAX, "2s", 0, F(config_backend, health_timeout) },
	{ SECT_BACKEND, "health_fails", config_set_count,
	    1, 100, "2", 0, F(config_backend, health_fails) },
	{ SECT_BACKEND, "health_passes", config_set_count,
	    1, 100, "2", 0, F(config_backend, health_passes) },

	{ SECT_ROUTE, "host", config_set_host,
	    0, 0, NULL, 0, F(config_route, host) },
	{ SECT_ROUTE, "path_prefix", config_set_prefix,
	    0, 0, NULL, 0, F(config_route, path_prefix) },
	{ SECT_ROUTE, "methods", config_set_methods,
	    0, 0, NULL, 0, F(config_route, methods) },
	{ SECT_ROUTE, "header", config_set_header,
	    2, 0, NULL, KEY_REPEAT, F(config_route, match_headers) },
	{ SECT_ROUTE, "strip_prefix", config_set_choice,
	    0, 0, "off", 0, F(config_route, strip_prefix) },
	{ SECT_ROUTE, "require_client_cert", config_set_choice,
	    0, 0, "off", 0, F(config_route, require_client_cert) },
	{ SECT_ROUTE, "access_log", config_set_choice,
	    0, 0, "on", 0, F(config_route, access_log) },
	/* one of backend, return and redirect: config_finish_route */
	{ SECT_ROUTE, "backend", config_set_backend,
	    0, 0, NULL, 0, NOF },
	{ SECT_ROUTE, "return", config_set_answer,
	    0, 0, NULL, 0, NOF },
	{ SECT_ROUTE, "redirect", config_set_answer,
	    1, 0, NULL, 0, NOF },
	{ SECT_ROUTE, "read_timeout", config_set_duration,
	    1, DURATION_MAX, "0", KEY_ZERO, F(config_route, read_timeout) },
	{ SECT_ROUTE, "tunnel_timeout", config_set_duration,
	    1, DURATION_MAX, "0", KEY_ZERO, F(config_route, tunnel_timeout) },
	{ SECT_ROUTE, "max_body_size", config_set_size,
	    0, 1024 * GB, "0", 0, F(config_route, max_body_size) },
	/* unset: [global]'s (config_finish_route) */
	{ SECT_ROUTE, "compress", config_set_choice,
	    0, 0, "off", 0, F(config_route, compress) },
	{ SECT_ROUTE, "allow", config_set_acl,
	    1, 0, NULL, KEY_REPEAT, NOF },
	{ SECT_ROUTE, "deny", config_set_acl,
	    0, 0, NULL, KEY_REPEAT, NOF },
	{ SECT_ROUTE, "max_request_rate", config_set_rate,
	    0, 1000000, "0", 0, F(config_route, request_rate) },
	{ SECT_ROUTE, "request_burst", config_set_count,
	    0, 10000000, "0", 0, F(config_route, request_burst) },
	{ SECT_ROUTE, "set_request_header", config_set_header,
	    0, 0, NULL, KEY_REPEAT, F(config_route, set_request) },
	{ SECT_ROUTE, "set_response_header", config_set_header,
	    1, 0, NULL, KEY_REPEAT, F(config_route, set_response) },
	{ SECT_ROUTE, "error_page", config_set_error_page,
	    0, 0, NULL, KEY_REPEAT, F(config_route, error_pages) },
	{ SECT_ROUTE, "auth_basic_file", config_set_auth_file,
	    0, 0, NULL, 0, NOF },
	{ SECT_ROUTE, "auth_realm", config_set_realm,
	    0, 0, "restricted", 0, F(config_route, auth_realm) },
};

_Static_assert(nitems(config_keys) <= CONFIG_MAX_KEYS,
    "config_section.keyline is too short");

static void	config_error(struct config_parser *, int, const char *, ...)
		    QP_PRINTF(3, 4);

static void
config_error(struct config_parser *p, int line, const char *fmt, ...)
{
	struct config_msg	*e;
	va_list			 ap;
	char			*msg;
	int			 rc;

	va_start(ap, fmt);
	rc = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (rc == -1) {
		p->oom = true;
		return;
	}
	e = reallocarray(p->errors, p->nerrors + 1, sizeof(*e));
	if (e == NULL) {
		free(msg);
		p->oom = true;
		return;
	}
	p->errors = e;
	e[p->nerrors].line = line;
	e[p->nerrors].seq = p->nerrors;
	e[p->nerrors].msg = msg;
	p->nerrors++;
}

static char *
config_strdup(struct config_parser *p, const char *s)
{
	char	*d;

	if ((d = strdup(s)) == NULL)
		p->oom = true;
	return d;
}

/*
 * arr of n elements, with room for one more, zeroed; NULL if no memory.
 * The room doubles as n reaches a power of two. Grown by one element, an
 * array was moved whole each time realloc could not grow it in place (ASan's
 * never does): a backend of 8,000 servers took 30 s to read. Every array
 * given here was made here, and grows one element at a time.
 */
static void *
config_grow(struct config_parser *p, void *arr, size_t n, size_t size)
{
	char	*a = arr;

	if ((n & (n - 1)) == 0 &&
	    (a = reallocarray(arr, n == 0 ? 1 : 2 * n, size)) == NULL) {
		p->oom = true;
		return NULL;
	}
	memset(a + n * size, 0, size);
	return a;
}

static void *
config_section_obj(struct config_parser *p, const struct config_section *s)
{
	switch (s->kind) {
	case SECT_GLOBAL:
		return p->cfg;
	case SECT_LISTENER:
		return &p->cfg->listeners[s->index];
	case SECT_BACKEND:
		return &p->cfg->backends[s->index];
	case SECT_ROUTE:
		return &p->cfg->routes[s->index];
	default:
		return NULL;
	}
}

/* "[global]", "[backend app]"; for messages */
static const char *
config_section_label(const struct config_section *s, char *buf, size_t len)
{
	if (s->kind == SECT_GLOBAL)
		snprintf(buf, len, "[global]");
	else
		snprintf(buf, len, "[%s %s]", config_sect_names[s->kind],
		    s->name);
	return buf;
}

/* numbers */

/* digits only, no sign; -1 on anything else or overflow */
static int
config_parse_uint(const char *s, const char **end, uint64_t *v)
{
	uint64_t	 n = 0;
	const char	*c;

	for (c = s; *c >= '0' && *c <= '9'; c++) {
		if (n > (UINT64_MAX - 9) / 10)
			return -1;
		n = n * 10 + (uint64_t)(*c - '0');
	}
	if (c == s)
		return -1;
	*end = c;
	*v = n;
	return 0;
}

static int
config_parse_size(const char *s, uint64_t *v)
{
	const char	*end;
	uint64_t	 n, mul = 1;

	if (config_parse_uint(s, &end, &n) == -1)
		return -1;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mul = KB;
		break;
	case 'm':
	case 'M':
		mul = MB;
		break;
	case 'g':
	case 'G':
		mul = GB;
		break;
	default:
		return -1;
	}
	if (*end != '\0' && end[1] != '\0')
		return -1;
	if (n > UINT64_MAX / mul)
		return -1;
	*v = n * mul;
	return 0;
}

/* "50us", "500ms", "1.5s", "2m", "1h", "30" (seconds); into milliseconds */
static int
config_parse_duration(const char *s, double *ms)
{
	const char	*end, *frac;
	uint64_t	 n, f = 0;
	double		 v, scale = 1, unit;
	size_t		 nfrac = 0;

	/* any number: the key's bounds, after the unit, refuse a large one */
	if (config_parse_uint(s, &end, &n) == -1)
		return -1;
	v = (double)n;
	if (*end == '.') {
		frac = end + 1;
		for (end = frac; *end >= '0' && *end <= '9'; end++) {
			/* to the nanosecond of a second: no finer */
			if (++nfrac > 9)
				return -1;
			f = f * 10 + (uint64_t)(*end - '0');
			scale *= 10;
		}
		if (end == frac)
			return -1;
		v += (double)f / scale;
	}
	if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
		unit = MS_PER_S;
	else if (strcmp(end, "ms") == 0)
		unit = 1;
	else if (strcmp(end, "us") == 0)
		unit = 0.001;
	else if (strcmp(end, "m") == 0)
		unit = MS_PER_M;
	else if (strcmp(end, "h") == 0)
		unit = MS_PER_H;
	else
		return -1;
	*ms = v * unit;
	return 0;
}

static const char *
config_fmt_size(uint64_t v, char *buf, size_t len)
{
	if (v != 0 && v % GB == 0)
		snprintf(buf, len, "%llug", (unsigned long long)(v / GB));
	else if (v != 0 && v % MB == 0)
		snprintf(buf, len, "%llum", (unsigned long long)(v / MB));
	else if (v != 0 && v % KB == 0)
		snprintf(buf, len, "%lluk", (unsigned long long)(v / KB));
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
	return buf;
}

static const char *
config_fmt_duration(uint64_t ms, char *buf, size_t len)
{
	unsigned long long	 v = ms;

	if (v == 0)
		snprintf(buf, len, "0s");
	else if (v % MS_PER_H == 0)
		snprintf(buf, len, "%lluh", v / MS_PER_H);
	else if (v % MS_PER_M == 0)
		snprintf(buf, len, "%llum", v / MS_PER_M);
	else if (v % MS_PER_S == 0)
		snprintf(buf, len, "%llus", v / MS_PER_S);
	else
		snprintf(buf, len, "%llums", v);
	return buf;
}

static void
config_store_uint(void *obj, const struct config_key *k, uint64_t v)
{
	char	*field = (char *)obj + k->offset;

	switch (k->width) {
	case sizeof(uint32_t): {
		uint32_t	 u = (uint32_t)v;

		memcpy(field, &u, sizeof(u));
		break;
	}
	case sizeof(uint64_t):
		memcpy(field, &v, sizeof(v));
		break;
	default:
		abort();
	}
}

static void
config_bad_value(struct config_parser *p, const struct config_key *k,
    const char *value, const char *expected)
{
	config_error(p, p->line, "%s: invalid value \"%s\": expected %s",
	    k->name, value, expected);
}

/* the setters: each checks one value and stores it, or reports why not */

static int
config_set_level(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	int	 level;

	if ((level = log_level_parse(value)) == -1) {
		config_bad_value(p, k, value, "error, warn, info or debug");
		return -1;
	}
	memcpy((char *)obj + k->offset, &level, sizeof(level));
	return 0;
}

static int
config_set_duration(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char	 expect[128], lo[32], hi[32];
	double	 ms, secs;

	if (config_parse_duration(value, &ms) == -1 ||
	    (ms < (double)k->min && !(ms == 0 && (k->flags & KEY_ZERO))) ||
	    ms > (double)k->max) {
		snprintf(expect, sizeof(expect), "%sa duration from %s to %s, "
		    "such as %s", (k->flags & KEY_ZERO) ? "0, or " : "",
		    config_fmt_duration(k->min, lo, sizeof(lo)),
		    config_fmt_duration(k->max, hi, sizeof(hi)),
		    k->max <= 1 ? "0, 50us or 1ms" : "500ms, 5s, 2m or 1h");
		config_bad_value(p, k, value, expect);
		return -1;
	}
	secs = ms / 1000;
	memcpy((char *)obj + k->offset, &secs, sizeof(secs));
	return 0;
}

static int
config_set_size(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char		 expect[128], lo[32], hi[32];
	uint64_t	 v;

	if (config_parse_size(value, &v) == -1 || v < k->min || v > k->max) {
		snprintf(expect, sizeof(expect), "a size from %s to %s, "
		    "in bytes or with k, m or g",
		    config_fmt_size(k->min, lo, sizeof(lo)),
		    config_fmt_size(k->max, hi, sizeof(hi)));
		config_bad_value(p, k, value, expect);
		return -1;
	}
	config_store_uint(obj, k, v);
	return 0;
}

static int
config_set_count(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char		 expect[128];
	const char	*end;
	uint64_t	 v;

	if (config_parse_uint(value, &end, &v) == -1 || *end != '\0' ||
	    v < k->min || v > k->max) {
		snprintf(expect, sizeof(expect), "an integer from %llu to %llu",
		    (unsigned long long)k->min, (unsigned long long)k->max);
		config_bad_value(p, k, value, expect);
		return -1;
	}
	config_store_uint(obj, k, v);
	return 0;
}

/*
 * A rate: a count of events per second ("20" or "20/s") or per minute
 * ("30/m"), kept as a number per second.
 */
static int
config_set_rate(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char		 expect[128];
	const char	*end;
	uint64_t	 n;
	double		 per = 1, v;

	(void)s;
	if (config_parse_uint(value, &end, &n) == -1 || n < k->min ||
	    n > k->max)
		goto bad;
	if (strcmp(end, "/m") == 0)
		per = 60;
	else if (*end != '\0' && strcmp(end, "/s") != 0)
		goto bad;
	v = (double)n / per;
	memcpy((char *)obj + k->offset, &v, sizeof(v));
	return 0;
bad:
	snprintf(expect, sizeof(expect), "a count from %llu to %llu, per "
	    "second (\"20\" or \"20/s\") or per minute (\"30/m\")",
	    (unsigned long long)k->min, (unsigned long long)k->max);
	config_bad_value(p, k, value, expect);
	return -1;
}

/*
 * workers: a count, or auto for one per CPU this process may run on (its
 * affinity, which systemd's CPUAffinity= and taskset narrow), at most
 * the key's maximum.
 */
static int
config_set_workers(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	cpu_set_t	 set;
	int		 n = 1;

	if (strcmp(value, "auto") != 0)
		return config_set_count(p, k, s, obj, value);
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	config_store_uint(obj, k, (uint64_t)MAX(1, MIN(n, (int)k->max)));
	return 0;
}

/* A user to run as after start-up; resolved now, so a typo fails early. */
static int
config_set_user(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config	*cfg = obj;
	struct passwd	*pw;

	errno = 0;
	if ((pw = getpwnam(value)) == NULL) {
		config_error(p, p->line, "%s: no such user \"%s\"", k->name,
		    value);
		return -1;
	}
	free(cfg->user);
	if ((cfg->user = config_strdup(p, value)) == NULL)
		return -1;
	cfg->uid = pw->pw_uid;
	cfg->gid = pw->pw_gid;
	return 0;
}

/* An absolute path, or the words the key's flags allow. */
static int
config_set_path(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char	**field = (char **)((char *)obj + k->offset);

	if ((k->flags & KEY_OFF) && strcmp(value, "off") == 0) {
		free(*field);
		*field = NULL;
		return 0;
	}
	if (value[0] != '/' && !((k->flags & KEY_STDERR) &&
	    strcmp(value, "stderr") == 0)) {
		config_error(p, p->line, "%s: invalid value \"%s\": expected "
		    "an absolute path%s%s", k->name, value,
		    !(k->flags & KEY_STDERR) ? "" : (k->flags & KEY_OFF) ?
		    ", stderr" : " or stderr",
		    (k->flags & KEY_OFF) ? " or off" : "");
		return -1;
	}
	if (strlen(value) >= sizeof(((struct sockaddr_un *)0)->sun_path) &&
	    strcmp(k->name, "control_socket") == 0) {
		config_error(p, p->line, "%s: path too long", k->name);
		return -1;
	}
	free(*field);
	if ((*field = config_strdup(p, value)) == NULL)
		return -1;
	return 0;
}

/* A QUIC-LB server ID: 1 to 15 bytes in hexadecimal, or off. */
static int
config_set_server_id(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config	*cfg = obj;
	size_t		 n = strlen(value);

	(void)s;
	if (strcmp(value, "off") == 0) {
		cfg->cid_sidlen = 0;
		return 0;
	}
	if (n == 0 || n % 2 != 0 || n / 2 > sizeof(cfg->cid_sid) ||
	    !bytes_from_hex(value, n / 2, cfg->cid_sid)) {
		config_bad_value(p, k, value, "1 to 15 bytes in hexadecimal "
		    "(2 to 30 digits), or off");
		return -1;
	}
	cfg->cid_sidlen = n / 2;
	return 0;
}

static int
config_set_format(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	int	*field = (int *)(void *)((char *)obj + k->offset);

	if (strcmp(value, "text") == 0)
		*field = ACCESS_TEXT;
	else if (strcmp(value, "json") == 0)
		*field = ACCESS_JSON;
	else if (strcmp(value, "combined") == 0)
		*field = ACCESS_COMBINED;
	else {
		config_error(p, p->line, "%s: invalid value \"%s\": expected "
		    "text, json or combined", k->name, value);
		return -1;
	}
	return 0;
}

/* Words for enumerated keys, in the order of their enum values. */
static const struct {
	const char	*key;
	const char	*words[4];
	const char	*expected;
} config_choices[] = {
	{ "retry", { "auto", "always", "never" }, "auto, always or never" },
	{ "early_data", { "off", "on" }, "on or off" },
	{ "client_verify", { "require", "optional" }, "require or optional" },
	{ "strip_prefix", { "off", "on" }, "on or off" },
	{ "require_client_cert", { "off", "on" }, "on or off" },
	/* a route's; [global]'s is a path */
	{ "access_log", { "off", "on", "errors" }, "on, off or errors" },
	{ "balance", { "round_robin", "least_conn", "client_hash" },
	    "round_robin, least_conn or client_hash" },
	{ "congestion_control", { "cubic", "bbr", "reno" },
	    "cubic, bbr or reno" },
	{ "aes_gcm_vaes", { "off", "on", "avx2" }, "on, off or avx2" },
	{ "compress", { "off", "gzip" }, "gzip or off" },
};

static int
config_set_choice(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	int	*field = (int *)(void *)((char *)obj + k->offset);

	for (size_t i = 0; i < nitems(config_choices); i++) {
		if (strcmp(config_choices[i].key, k->name) != 0)
			continue;
		for (int w = 0; config_choices[i].words[w] != NULL; w++) {
			if (strcmp(config_choices[i].words[w], value) == 0) {
				*field = w;
				return 0;
			}
		}
		config_error(p, p->line, "%s: invalid value \"%s\": expected "
		    "%s", k->name, value, config_choices[i].expected);
		return -1;
	}
	config_error(p, p->line, "%s: no choices known", k->name);
	return -1;
}

/* retry_on: off, or any of error, timeout and statuses 500 to 599. */
static int
config_set_retry_on(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_backend	*b = obj;
	const char		*w = value, *end, *num_end;
	uint64_t		 st;

	(void)s;
	b->retry_error = b->retry_timeout = b->retry_any = false;
	memset(b->retry_status, 0, sizeof(b->retry_status));
	if (strcmp(value, "off") == 0)
		return 0;
	b->retry_any = true;	/* or the value is refused */
	for (; *w != '\0'; w = end) {
		while (*w == ' ')
			w++;
		if (*w == '\0')
			break;
		end = w + strcspn(w, " ");
		if (end - w == 5 && strncmp(w, "error", 5) == 0)
			b->retry_error = true;
		else if (end - w == 7 && strncmp(w, "timeout", 7) == 0)
			b->retry_timeout = true;
		else if (end - w == 3 && config_parse_uint(w, &num_end,
		    &st) == 0 && num_end == end && st >= 500 && st <= 599)
			b->retry_status[st - 500] = true;
		else {
			config_error(p, p->line, "%s: invalid value \"%.*s\": "
			    "expected off, or error, timeout and statuses from "
			    "500 to 599", k->name, (int)(end - w), w);
			return -1;
		}
	}
	return 0;
}

/*
 * compress_types: media types (any subtype, or any with a suffix, too:
 * compress_type_valid) between spaces; kept lowercase, between single
 * spaces with one at each end, for compress_type_listed.
 */
static int
config_set_types(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char	**field = (char **)((char *)obj + k->offset);
	char	 *v, *o;
	size_t	  len = strlen(value), n;

	(void)s;
	if ((v = malloc(len + 3)) == NULL) {
		p->oom = true;
		return -1;
	}
	o = v;
	*o++ = ' ';
	for (const char *e = value; *e != '\0'; e += n) {
		if (*e == ' ' || *e == '\t') {
			n = 1;
			continue;
		}
		n = strcspn(e, " \t");
		bytes_lower((uint8_t *)o, (const uint8_t *)e, n);
		if (!compress_type_valid(o, n)) {
			config_error(p, p->line, "%s: invalid media type "
			    "\"%.*s\": expected type/subtype, type/* or "
			    "type/*+suffix", k->name, (int)n, e);
			free(v);
			return -1;
		}
		o += n;
		*o++ = ' ';
	}
	*o = '\0';
	if (o == v + 1) {
		config_bad_value(p, k, value, "one media type or more");
		free(v);
		return -1;
	}
	free(*field);
	*field = v;
	return 0;
}

/* Method names separated by spaces; kept as " A B C " for lookups. */
static int
config_set_methods(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char	**field = (char **)((char *)obj + k->offset);
	char	 *v;
	size_t	  len = strlen(value);

	for (size_t i = 0; i < len; i++) {
		if (value[i] != ' ' && (value[i] < 'A' || value[i] > 'Z') &&
		    value[i] != '-' && value[i] != '_') {
			config_error(p, p->line, "%s: invalid value \"%s\": "
			    "expected method names in capitals, separated by "
			    "spaces", k->name, value);
			return -1;
		}
	}
	if ((v = malloc(len + 3)) == NULL) {
		p->oom = true;
		return -1;
	}
	snprintf(v, len + 3, " %s ", value);
	free(*field);
	*field = v;
	return 0;
}

/*
 * A path as written in the file being read: one that does not begin with
 * "/" is taken from that file's directory (as the file's own path has
 * it), whatever the directory qproxy runs in. 0, or -1 when too long.
 */
static int
config_relative(struct config_parser *p, const char *path, char *full,
    size_t size)
{
	const char	*file = p->cfg->files[p->in[p->nin - 1].file];
	const char	*slash = strrchr(file, '/');
	int		 n;

	if (path[0] == '/' || slash == NULL)
		n = snprintf(full, size, "%s", path);
	else
		n = snprintf(full, size, "%.*s/%s", (int)(slash - file), file,
		    path);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

/*
 * A file key's value, relative to the file it is in, into full: a regular
 * file that can be opened, its stat in st. -1 with the error reported.
 */
static int
config_regular_file(struct config_parser *p, const struct config_key *k,
    const char *value, char full[PATH_MAX], struct stat *st)
{
	int fd;

	if (config_relative(p, value, full, PATH_MAX) == -1) {
		config_error(p, p->line, "%s: path too long", k->name);
		return -1;
	}
	fd = open(full, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1) {
		config_error(p, p->line, "%s: cannot open \"%s\": %s",
		    k->name, full, strerror(errno));
		return -1;
	}
	if (fstat(fd, st) == -1) {
		config_error(p, p->line, "%s: cannot open \"%s\": %s",
		    k->name, full, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	if (!S_ISREG(st->st_mode)) {
		config_error(p, p->line, "%s: cannot open \"%s\": %s",
		    k->name, full, S_ISDIR(st->st_mode) ? strerror(EISDIR) :
		    "not a regular file");
		return -1;
	}
	return 0;
}

static int
config_set_file(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_listener	*l = obj;
	struct config_cert	*c;
	struct stat		 st;
	char			 full[PATH_MAX];
	bool			 key = strcmp(k->name, "private_key") == 0;
	size_t			 n = key ? l->nkeys : l->ncerts;

	(void)s;
	/*
	 * The nth certificate goes with the nth private_key: each key takes
	 * its place, even when its file is refused.
	 */
	if (n == MAX(l->ncerts, l->nkeys)) {
		if ((c = config_grow(p, l->certs, n, sizeof(*c))) == NULL)
			return -1;
		l->certs = c;
	}
	c = &l->certs[n];
	if (key) {
		c->key_line = p->line;
		l->nkeys++;
	} else {
		c->line = p->line;
		l->ncerts++;
	}
	if (config_regular_file(p, k, value, full, &st) == -1)
		return -1;
	if (key)
		c->key_mode = st.st_mode;
	if ((*(key ? &c->private_key : &c->certificate) =
	    config_strdup(p, full)) == NULL)
		return -1;
	return 0;
}

/* client_ca and client_crl: files of PEM certificates and CRLs, read
   when the listener's TLS context is made (tls_ctx_new) */
static int
config_set_client_ca(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_listener	*l = obj;
	struct stat		 st;
	char			 full[PATH_MAX];
	bool			 crl = strcmp(k->name, "client_crl") == 0;
	char			**path = crl ? &l->client_crl : &l->client_ca;

	(void)s;
	if (config_regular_file(p, k, value, full, &st) == -1)
		return -1;
	free(*path);
	if ((*path = config_strdup(p, full)) == NULL)
		return -1;
	*(crl ? &l->client_crl_line : &l->client_ca_line) = p->line;
	return 0;
}

static int
config_set_listen(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_listener	*l = obj, *o;
	struct addr		 a, *addrs;
	int			*lines;
	const char		*err;
	char			 buf[ADDR_STRLEN];
	size_t			 i, j;

	if (addr_parse(value, false, &a, &err) == -1) {
		config_error(p, p->line, "%s: invalid address \"%s\": %s",
		    k->name, value, err);
		return -1;
	}
	/* IPv6 sockets are IPv6 only: the bind would fail at start */
	if (a.u.sa.sa_family == AF_INET6 &&
	    IN6_IS_ADDR_V4MAPPED(&a.u.in6.sin6_addr)) {
		config_error(p, p->line, "%s: \"%s\" is an IPv4 address in "
		    "IPv6 form; write it as IPv4", k->name, value);
		return -1;
	}
	for (i = 0; i < p->cfg->nlisteners; i++) {
		o = &p->cfg->listeners[i];
		for (j = 0; j < o->naddrs; j++) {
			if (addr_equal(&o->addrs[j], &a)) {
				config_error(p, p->line, "%s: \"%s\" is already "
				    "used by [listener %s]", k->name, value,
				    o->name);
				return -1;
			}
			if (addr_overlaps(&o->addrs[j], &a)) {
				config_error(p, p->line, "%s: \"%s\" overlaps "
				    "%s of [listener %s] (a wildcard address "
				    "takes its port on every address)", k->name,
				    value, addr_format(&o->addrs[j], buf,
				    sizeof(buf)), o->name);
				return -1;
			}
		}
	}
	if ((addrs = config_grow(p, l->addrs, l->naddrs,
	    sizeof(*addrs))) == NULL)
		return -1;
	l->addrs = addrs;
	if ((lines = config_grow(p, l->addr_lines, l->naddrs,
	    sizeof(*lines))) == NULL)
		return -1;
	l->addr_lines = lines;
	l->addrs[l->naddrs] = a;
	l->addr_lines[l->naddrs++] = p->line;
	return 0;
}

/*
 * "ADDRESS [weight=N] [backup]": the address is the first word (a Unix
 * socket's path holds no blank), and every word after it an option, each
 * once.
 */
static int
config_set_server(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_backend	*b = obj;
	struct config_server	*srv;
	struct addr		 a;
	const char		*err, *w, *end, *num_end, *twice = NULL;
	char			*text;
	uint64_t		 weight = 1;
	bool			 weighted = false, backup = false;
	size_t			 n;

	(void)s;
	n = strcspn(value, " \t");
	if ((text = strndup(value, n)) == NULL) {
		p->oom = true;
		return -1;
	}
	if (addr_parse(text, true, &a, &err) == -1) {
		config_error(p, p->line, "%s: invalid address \"%s\": %s",
		    k->name, text, err);
		free(text);
		return -1;
	}
	for (w = value + n; *(w += strspn(w, " \t")) != '\0'; w = end) {
		end = w + strcspn(w, " \t");
		n = (size_t)(end - w);
		if (n == 6 && strncmp(w, "backup", 6) == 0) {
			if (backup) {
				twice = "backup";
				break;
			}
			backup = true;
		} else if (n >= 7 && strncmp(w, "weight=", 7) == 0) {
			if (weighted) {
				twice = "weight=";
				break;
			}
			weighted = true;
			if (config_parse_uint(w + 7, &num_end, &weight) == -1 ||
			    num_end != end || weight < 1 || weight > 100) {
				config_error(p, p->line, "%s: invalid weight "
				    "\"%.*s\": expected an integer from 1 to "
				    "100", k->name, (int)MIN(n - 7, 64), w + 7);
				free(text);
				return -1;
			}
		} else {
			config_error(p, p->line, "%s: unknown option \"%.*s\": "
			    "expected weight=N or backup%s", k->name,
			    (int)MIN(n, 64), w, a.u.sa.sa_family == AF_UNIX &&
			    memchr(w, '=', n) == NULL ?
			    " (a Unix socket's path holds no blank)" : "");
			free(text);
			return -1;
		}
	}
	if (twice != NULL) {
		config_error(p, p->line, "%s: \"%s\" is given twice", k->name,
		    twice);
		free(text);
		return -1;
	}
	if ((srv = config_grow(p, b->servers, b->nservers,
	    sizeof(*srv))) == NULL) {
		free(text);
		return -1;
	}
	b->servers = srv;
	srv = &b->servers[b->nservers++];
	srv->text = text;
	srv->addr = a;
	srv->line = p->line;
	srv->weight = (unsigned)weight;
	srv->backup = backup;
	b->weighted |= weight != 1;
	b->has_backup |= backup;
	return 0;
}

static bool
config_valid_hostname(const char *h)
{
	size_t	 label = 0, total = 0;

	for (; *h != '\0'; h++, total++) {
		if (*h == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((*h >= 'a' && *h <= 'z') || (*h >= '0' && *h <= '9') ||
		    *h == '-' || *h == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0 && total <= 253;
}

static int
config_set_host(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct in6_addr	 in6;
	char		**field = (char **)((char *)obj + k->offset);
	char		 buf[INET6_ADDRSTRLEN];
	char		*h, *name, *c;
	size_t		 len;
	bool		 wild;

	if ((h = config_strdup(p, value)) == NULL)
		return -1;
	for (c = h; *c != '\0'; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	wild = strncmp(h, "*.", 2) == 0;
	name = wild ? h + 2 : h;
	len = strlen(name);
	if (!wild && (name[0] == '[' || strchr(name, ':') != NULL)) {
		/* an IPv6 literal, kept in its canonical form */
		if (name[0] == '[' && len > 2 && name[len - 1] == ']') {
			name[len - 1] = '\0';
			name++;
		}
		if (inet_pton(AF_INET6, name, &in6) != 1 ||
		    inet_ntop(AF_INET6, &in6, buf, sizeof(buf)) == NULL)
			goto bad;
		free(h);
		if ((*field = config_strdup(p, buf)) == NULL)
			return -1;
		return 0;
	}
	if (len > 1 && name[len - 1] == '.')
		name[len - 1] = '\0';
	if (!config_valid_hostname(name))
		goto bad;
	*field = h;
	return 0;

 bad:
	free(h);
	config_bad_value(p, k, value,
	    "a host name, \"*.\" and a domain, or an IP address");
	return -1;
}

static int
config_set_prefix(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char		**field = (char **)((char *)obj + k->offset);
	const char	*c;

	for (c = value; *c != '\0'; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f)
			break;
	if (value[0] != '/' || *c != '\0') {
		config_bad_value(p, k, value, "a path starting with \"/\"");
		return -1;
	}
	if ((*field = config_strdup(p, value)) == NULL)
		return -1;
	return 0;
}

static bool
config_in_list(const char *const *list, const char *s)
{
	for (; *list != NULL; list++)
		if (strcmp(*list, s) == 0)
			return true;
	return false;
}

/*
 * A field name that the configuration sets, the first namelen bytes of
 * value: a token, written to name in lowercase, and not one of the fields
 * qproxy writes itself (of a request's too, unless response_only).
 */
static int
config_field_name(struct config_parser *p, const struct config_key *k,
    const char *value, size_t namelen, bool response_only, char *name,
    size_t namesize)
{
	/* framing and connection fields, and the ones qproxy adds */
	static const char *const both[] = { "connection", "content-length",
	    "keep-alive", "proxy-connection", "te", "transfer-encoding",
	    "upgrade", NULL };
	static const char *const request[] = { "host", "cookie", "via",
	    "forwarded", "x-forwarded-for", "x-forwarded-proto", "early-data",
	    NULL };
	size_t i;

	for (i = 0; i < namelen; i++)
		if (!bytes_istchar((uint8_t)value[i]))
			break;
	if (namelen == 0 || i < namelen || namelen >= namesize) {
		config_error(p, p->line, "%s: \"%.*s\" is not a field name",
		    k->name, (int)MIN(namelen, 200), value);
		return -1;
	}
	for (i = 0; i < namelen; i++)
		name[i] = (char)tolower((unsigned char)value[i]);
	name[namelen] = '\0';
	if (k->min == 2) {
		/* header: any field may be looked at, but one seldom there */
		if (strcmp(name, "host") != 0)
			return 0;
		config_error(p, p->line, "%s: HTTP/3 requests carry their host "
		    "in :authority, seldom in \"Host\": match it with host =",
		    k->name);
		return -1;
	}
	if (config_in_list(both, name) ||
	    (!response_only && config_in_list(request, name))) {
		config_error(p, p->line, "%s: qproxy writes \"%s\" itself",
		    k->name, name);
		return -1;
	}
	return 0;
}

/*
 * set_request_header and set_response_header (k->min 1): "Name: value".
 * The name is config_field_name's; the value has no control character
 * but tab, and loses the blanks around it. Each name once per key and
 * route. header (k->min 2), which a route matches on: the same, or
 * "Name" alone (a NULL value), any name, as often as need be.
 */
static int
config_set_header(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_headers	*hs = (struct config_headers *)
				    ((char *)obj + k->offset);
	struct config_header	*h, *v;
	const char		*colon, *val, *end, *c;
	char			 name[128];
	size_t			 namelen, i;

	(void)s;
	/* header (k->min 2): "Name" alone asks for the field, any value */
	if (k->min == 2 && strchr(value, ':') == NULL)
		colon = value + strlen(value);
	else if ((colon = strchr(value, ':')) == NULL || colon == value) {
		config_bad_value(p, k, value, "\"Name: value\"");
		return -1;
	}
	namelen = (size_t)(colon - value);
	if (config_field_name(p, k, value, namelen, k->min == 1, name,
	    sizeof(name)) == -1)
		return -1;
	for (val = *colon == '\0' ? colon : colon + 1;
	    *val == ' ' || *val == '\t'; val++)
		;
	for (end = val + strlen(val); end > val &&
	    (end[-1] == ' ' || end[-1] == '\t'); end--)
		;
	for (c = val; c < end; c++)
		if (((unsigned char)*c < ' ' && *c != '\t') || *c == 0x7f) {
			config_error(p, p->line, "%s: the value of \"%s\" "
			    "has a control character", k->name, name);
			return -1;
		}
	for (i = 0; i < hs->n && k->min != 2; i++)
		if (strcmp(hs->v[i].name, name) == 0) {
			config_error(p, p->line, "%s: \"%s\" is set twice "
			    "in this route", k->name, name);
			return -1;
		}
	if ((v = config_grow(p, hs->v, hs->n, sizeof(*v))) == NULL)
		return -1;
	hs->v = v;
	h = &hs->v[hs->n];
	if ((h->name = config_strdup(p, name)) == NULL ||
	    (*colon != '\0' &&
	    (h->value = strndup(val, (size_t)(end - val))) == NULL)) {
		free(h->name);
		p->oom = true;
		return -1;
	}
	h->namelen = namelen;
	h->valuelen = (size_t)(end - val);
	hs->n++;
	return 0;
}

/*
 * request_id_header: the field that carries each request's ID to the
 * backend and back to the client, a name as set_request_header's; or off.
 */
static int
config_set_request_id(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char	**field = (char **)((char *)obj + k->offset);
	char	  name[128];

	(void)s;
	free(*field);
	*field = NULL;
	if (strcmp(value, "off") == 0)
		return 0;
	if (config_field_name(p, k, value, strlen(value), false, name,
	    sizeof(name)) == -1)
		return -1;
	if ((*field = config_strdup(p, name)) == NULL)
		return -1;
	return 0;
}

/* health_check: a path as path_prefix's, short enough for one request */
static int
config_set_health_path(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	if (strlen(value) > 512) {
		config_bad_value(p, k, value, "a path of at most 512 bytes");
		return -1;
	}
	return config_set_prefix(p, k, s, obj, value);
}

/*
 * allow (k->min 1) and deny: "all", an address, or an address block
 * ("192.0.2.0/24", "2001:db8::/32") whose bits past its length are 0;
 * trusted_proxies likewise, in [global].
 */
static int
config_set_acl(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_acl	**list, a, *v;
	struct in6_addr		 in6;
	size_t			*n;
	const char		*slash, *end;
	char			 host[INET6_ADDRSTRLEN];
	uint64_t		 bits;
	size_t			 len, i;

	if (s->kind == SECT_GLOBAL) {
		list = &((struct config *)obj)->trusted;
		n = &((struct config *)obj)->ntrusted;
	} else {
		list = &((struct config_route *)obj)->acl;
		n = &((struct config_route *)obj)->nacl;
	}
	memset(&a, 0, sizeof(a));
	a.allow = k->min == 1;
	if (strcmp(value, "all") == 0)
		a.all = true;
	else {
		slash = strchr(value, '/');
		len = slash != NULL ? (size_t)(slash - value) : strlen(value);
		if (len >= sizeof(host))
			goto bad;
		memcpy(host, value, len);
		host[len] = '\0';
		if (inet_pton(AF_INET, host, a.addr) == 1)
			a.family = AF_INET;
		else if (inet_pton(AF_INET6, host, a.addr) == 1)
			a.family = AF_INET6;
		else
			goto bad;
		a.prefix = a.family == AF_INET ? 32 : 128;
		if (slash != NULL) {
			if (config_parse_uint(slash + 1, &end, &bits) == -1 ||
			    *end != '\0' || bits > a.prefix)
				goto bad;
			a.prefix = (unsigned)bits;
		}
		for (i = a.prefix; i < (a.family == AF_INET ? 32u : 128u); i++)
			if (a.addr[i / 8] & (0x80 >> (i % 8))) {
				config_error(p, p->line, "%s: \"%s\" has bits "
				    "set past its /%u", k->name, value,
				    a.prefix);
				return -1;
			}
		/* IPv6 sockets are IPv6 only (udp.c): it would match none */
		memcpy(&in6, a.addr, sizeof(in6));
		if (a.family == AF_INET6 && a.prefix >= 96 &&
		    IN6_IS_ADDR_V4MAPPED(&in6)) {
			config_error(p, p->line, "%s: \"%s\" is an IPv4 "
			    "address in IPv6 form, which no client has: write "
			    "it as IPv4", k->name, value);
			return -1;
		}
	}
	if ((v = config_grow(p, *list, *n, sizeof(*v))) == NULL)
		return -1;
	*list = v;
	v[(*n)++] = a;
	return 0;
bad:
	config_bad_value(p, k, value, "all, an IP address, or an address "
	    "block such as 192.0.2.0/24 or 2001:db8::/32");
	return -1;
}

/* health_check_host: a Host field's value, as a request's authority */
static int
config_set_health_host(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char	**field = (char **)((char *)obj + k->offset);
	size_t	  i, n = strlen(value);

	(void)s;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)value[i]) &&
		    strchr("-._~:[]", value[i]) == NULL)
			break;
	if (n == 0 || i < n || n > 255) {
		config_bad_value(p, k, value, "a host name or address, with "
		    "a port or not, such as app.example.com");
		return -1;
	}
	if ((*field = config_strdup(p, value)) == NULL)
		return -1;
	return 0;
}

/* resolved once every backend is known, in config_finish */
static int
config_set_backend(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	if ((s->backend = config_strdup(p, value)) == NULL)
		return -1;
	s->backend_line = p->line;
	return 0;
}

static bool
config_is_redirect(uint64_t status)
{
	return status == 301 || status == 302 || status == 303 ||
	    status == 307 || status == 308;
}

/*
 * redirect's URL: a path ("/new/") or an absolute URL ("https://..."),
 * no space or control character, and no variable but $request_uri and
 * $host.
 */
static int
config_check_url(struct config_parser *p, const struct config_key *k,
    const char *url)
{
	const char	*c = url;
	size_t		 n;

	if (strlen(url) > CONFIG_URL_MAX) {
		config_bad_value(p, k, url, "a URL of at most 2048 bytes");
		return -1;
	}
	if (*c != '/') {
		while (isalnum((unsigned char)*c) || *c == '+' || *c == '-' ||
		    *c == '.')
			c++;
		if (!isalpha((unsigned char)*url) || strncmp(c, "://", 3) != 0) {
			config_error(p, p->line, "%s: \"%.64s\" is neither a "
			    "path (\"/...\") nor an absolute URL "
			    "(\"https://...\")", k->name, url);
			return -1;
		}
	}
	for (c = url; *c != '\0'; c++) {
		if ((unsigned char)*c <= ' ' || *c == 0x7f) {
			config_error(p, p->line, "%s: the URL has a space or "
			    "a control character", k->name);
			return -1;
		}
		if (*c != '$')
			continue;
		for (n = 1; isalnum((unsigned char)c[n]) || c[n] == '_'; n++)
			;
		if (!(n == 12 && strncmp(c + 1, "request_uri", 11) == 0) &&
		    !(n == 5 && strncmp(c + 1, "host", 4) == 0)) {
			config_error(p, p->line, "%s: unknown variable \"%.*s\":"
			    " $request_uri and $host are known", k->name,
			    (int)MIN(n, 32), c);
			return -1;
		}
		c += n - 1;
	}
	return 0;
}

/*
 * return (k->min 0): "STATUS" or "STATUS TEXT", the body's text; redirect
 * (k->min 1): "STATUS URL". The route's requests are answered by qproxy.
 */
static int
config_set_answer(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_route	*r = obj;
	bool			 redirect = k->min == 1;
	const char		*end, *text;
	uint64_t		 st;

	(void)s;
	if (config_parse_uint(value, &end, &st) == -1 || end - value != 3 ||
	    (*end != '\0' && *end != ' ' && *end != '\t') ||
	    (redirect ? !config_is_redirect(st) : st < 200 || st > 599)) {
		config_bad_value(p, k, value, redirect ?
		    "a status of 301, 302, 303, 307 or 308, then a URL" :
		    "a status from 200 to 599, then the body's text if any");
		return -1;
	}
	for (text = end; *text == ' ' || *text == '\t'; text++)
		;
	if (redirect && *text == '\0') {
		config_bad_value(p, k, value, "a URL after the status");
		return -1;
	}
	if (redirect && config_check_url(p, k, text) == -1)
		return -1;
	if (!redirect && config_is_redirect(st)) {
		config_error(p, p->line, "%s: %llu is a redirect: write "
		    "redirect = %llu URL", k->name, (unsigned long long)st,
		    (unsigned long long)st);
		return -1;
	}
	if (!redirect && *text != '\0' && (st == 204 || st == 304)) {
		config_error(p, p->line, "%s: a %llu has no body",
		    k->name, (unsigned long long)st);
		return -1;
	}
	for (const char *c = text; !redirect && *c != '\0'; c++)
		if (((unsigned char)*c < ' ' && *c != '\t') || *c == 0x7f) {
			config_error(p, p->line, "%s: the text has a control "
			    "character", k->name);
			return -1;
		}
	if (r->answer != 0) {
		config_error(p, p->line, "%s: the route has a %s already",
		    k->name, r->redirect ? "redirect" : "return");
		return -1;
	}
	/* return's body is the text and a newline */
	if (*text != '\0' && asprintf(&r->answer_text, redirect ? "%s" : "%s\n",
	    text) == -1) {
		r->answer_text = NULL;
		p->oom = true;
		return -1;
	}
	r->answer = (int)st;
	r->redirect = redirect;
	return 0;
}

/* error_page's file types, by the end of the file's name */
static const struct {
	const char	*suffix;
	const char	*type;
} config_page_types[] = {
	{ ".html", "text/html; charset=utf-8" },
	{ ".htm", "text/html; charset=utf-8" },
	{ ".json", "application/json" },
	{ ".txt", "text/plain; charset=utf-8" },
};

/* A page's file, read whole: NULL, with the error said, if it cannot be. */
static struct config_page_file *
config_read_page(struct config_parser *p, const struct config_key *k,
    const char *path)
{
	struct config_page_file	*f;
	const char		*type = NULL;
	char			 err[512];
	size_t			 plen = strlen(path), n;

	for (size_t i = 0; i < nitems(config_page_types); i++) {
		n = strlen(config_page_types[i].suffix);
		if (plen > n && strcmp(path + plen - n,
		    config_page_types[i].suffix) == 0)
			type = config_page_types[i].type;
	}
	if (type == NULL) {
		config_error(p, p->line, "%s: \"%s\": the name ends in none "
		    "of .html, .htm, .json and .txt, which give its type",
		    k->name, path);
		return NULL;
	}
	if ((f = calloc(1, sizeof(*f))) == NULL) {
		p->oom = true;
		return NULL;
	}
	if (file_read(path, CONFIG_PAGE_MAX, &f->body, &f->len) == -1) {
		file_error(err, sizeof(err), path, CONFIG_PAGE_MAX);
		config_error(p, p->line, "%s: %s", k->name, err);
		free(f);
		return NULL;
	}
	f->type = type;
	return f;
}

/*
 * error_page: "STATUS... FILE", statuses from 400 to 599, each once in a
 * section; the file is read now, and at each reload (a relative path from
 * the directory of the file it is written in, as certificate's).
 */
static int
config_set_error_page(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_pages	*pages = (struct config_pages *)
				    ((char *)obj + k->offset);
	struct config_page_file	*f, **files;
	struct config_page	*v;
	const char		*c = value, *end, *path;
	char			 full[PATH_MAX];
	int			 statuses[200];
	size_t			 n = 0;
	uint64_t		 st;

	(void)s;
	/* the last word is the file's; the others are statuses */
	for (path = value + strlen(value); path > value && path[-1] != ' ' &&
	    path[-1] != '\t'; path--)
		;
	while (c < path) {
		if (config_parse_uint(c, &end, &st) == -1 || end - c != 3 ||
		    (*end != ' ' && *end != '\t') || st < 400 || st > 599) {
			config_bad_value(p, k, value, "statuses from 400 to "
			    "599, then a file");
			return -1;
		}
		for (size_t i = 0; i < pages->n; i++)
			if (pages->v[i].status == (int)st) {
				config_error(p, p->line, "%s: %llu has a page "
				    "already", k->name, (unsigned long long)st);
				return -1;
			}
		for (size_t i = 0; i < n; i++)
			if (statuses[i] == (int)st) {
				config_error(p, p->line, "%s: %llu is given "
				    "twice", k->name, (unsigned long long)st);
				return -1;
			}
		statuses[n++] = (int)st;
		for (c = end; *c == ' ' || *c == '\t'; c++)
			;
	}
	if (n == 0) {
		config_bad_value(p, k, value, "statuses from 400 to 599, then "
		    "a file");
		return -1;
	}
	if (config_relative(p, path, full, sizeof(full)) == -1) {
		config_error(p, p->line, "%s: path too long", k->name);
		return -1;
	}
	if ((f = config_read_page(p, k, full)) == NULL)
		return -1;
	files = reallocarray(p->cfg->page_files, p->cfg->npage_files + 1,
	    sizeof(*files));
	v = files == NULL ? NULL :
	    reallocarray(pages->v, pages->n + n, sizeof(*v));
	if (files != NULL)
		p->cfg->page_files = files;
	if (v == NULL) {
		free(f->body);
		free(f);
		p->oom = true;
		return -1;
	}
	files[p->cfg->npage_files++] = f;
	pages->v = v;
	for (size_t i = 0; i < n; i++)
		v[pages->n++] = (struct config_page){ statuses[i], f };
	return 0;
}

const struct config_page_file *
config_error_page(const struct config *cfg, const struct config_route *r,
    int status)
{
	const struct config_pages *in[2] = { r != NULL ? &r->error_pages :
	    NULL, &cfg->error_pages };

	for (size_t j = 0; j < 2; j++)
		for (size_t i = 0; in[j] != NULL && i < in[j]->n; i++)
			if (in[j]->v[i].status == status)
				return in[j]->v[i].file;
	return NULL;
}

/*
 * auth_basic_file: its users are read now, and at each reload; a relative
 * path from the directory of the file it is written in, as certificate's.
 */
static int
config_set_auth_file(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	struct config_route	*r = obj;
	char			 err[512], full[PATH_MAX];

	(void)s;
	if (config_relative(p, value, full, sizeof(full)) == -1) {
		config_error(p, p->line, "%s: path too long", k->name);
		return -1;
	}
	if ((r->auth = calloc(1, sizeof(*r->auth))) == NULL) {
		p->oom = true;
		return -1;
	}
	if (auth_users_load(full, r->auth, err, sizeof(err)) == -1) {
		config_error(p, p->line, "%s: %s", k->name, err);
		free(r->auth);
		r->auth = NULL;
		return -1;
	}
	return 0;
}

/* auth_realm: sent in a quoted string, so no quote, backslash or control */
static int
config_set_realm(struct config_parser *p, const struct config_key *k,
    struct config_section *s, void *obj, const char *value)
{
	char	**field = (char **)((char *)obj + k->offset);

	(void)s;
	for (const char *c = value; *c != '\0'; c++)
		if ((unsigned char)*c < ' ' || *c == '"' || *c == '\\' ||
		    (unsigned char)*c >= 0x7f) {
			config_bad_value(p, k, value, "printable ASCII, no "
			    "quote or backslash");
			return -1;
		}
	if (*value == '\0' || strlen(value) > 128) {
		config_bad_value(p, k, value, "1 to 128 characters");
		return -1;
	}
	free(*field);
	if ((*field = config_strdup(p, value)) == NULL)
		return -1;
	return 0;
}

/* sections */

static void
config_defaults(struct config_parser *p, struct config_section *s)
{
	const struct config_key	*k;
	size_t			 i, nerrors = p->nerrors;

	for (i = 0; i < nitems(config_keys); i++) {
		k = &config_keys[i];
		if (k->sect == s->kind && k->def != NULL)
			k->set(p, k, s, config_section_obj(p, s), k->def);
	}
	/* a default that does not parse is a bug in the table */
	if (p->nerrors != nerrors)
		abort();
}

/* Sections by kind, then name (by_name's order). */
static int
config_section_cmp(const void *x, const void *y)
{
	const struct config_section *a = x, *b = y;

	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	return strcmp(a->name, b->name);
}

static struct config_section *
config_find_section(struct config_parser *p, enum config_sect kind,
    const char *name)
{
	struct config_section	 key = { .kind = kind, .name = name };
	struct config_section	**found;

	found = tfind(&key, &p->by_name, config_section_cmp);
	return found != NULL ? *found : NULL;
}

static bool
config_valid_name(const char *name)
{
	const char	*c;

	if (strlen(name) > CONFIG_NAME_MAX)
		return false;
	for (c = name; *c != '\0'; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		    (*c >= '0' && *c <= '9') || *c == '.' || *c == '-' ||
		    *c == '_'))
			return false;
	return true;
}

static struct config_section *
config_new_section(struct config_parser *p, enum config_sect kind,
    const char *name)
{
	struct config_section	*s, **ss;
	struct config_listener	*l;
	struct config_backend	*b;
	struct config_route	*r;
	struct config		*cfg = p->cfg;
	char			*dup;
	size_t			 index;

	ss = reallocarray(p->sections, p->nsections + 1, sizeof(*ss));
	if (ss == NULL) {
		p->oom = true;
		return NULL;
	}
	p->sections = ss;
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		p->oom = true;
		return NULL;
	}
	s->kind = kind;
	s->line = p->line;
	if ((dup = config_strdup(p, name)) == NULL) {
		free(s);
		return NULL;
	}
	s->name = dup;
	/* from here the config owns the name */
	switch (kind) {
	case SECT_LISTENER:
		l = config_grow(p, cfg->listeners, cfg->nlisteners, sizeof(*l));
		if (l == NULL)
			goto fail;
		cfg->listeners = l;
		index = cfg->nlisteners++;
		l[index].name = dup;
		l[index].line = s->line;
		break;
	case SECT_BACKEND:
		b = config_grow(p, cfg->backends, cfg->nbackends, sizeof(*b));
		if (b == NULL)
			goto fail;
		cfg->backends = b;
		index = cfg->nbackends++;
		b[index].name = dup;
		b[index].line = s->line;
		break;
	default:
		r = config_grow(p, cfg->routes, cfg->nroutes, sizeof(*r));
		if (r == NULL)
			goto fail;
		cfg->routes = r;
		index = cfg->nroutes++;
		r[index].name = dup;
		r[index].line = s->line;
		break;
	}
	s->index = index;
	p->sections[p->nsections++] = s;
	if (tsearch(s, &p->by_name, config_section_cmp) == NULL) {
		p->oom = true;	/* freed with the sections */
		return NULL;
	}
	config_defaults(p, s);
	return s;

 fail:
	free(dup);
	free(s);
	return NULL;
}

/* "[type name]" with the brackets already removed and the ends trimmed */
static void
config_header(struct config_parser *p, char *inner)
{
	struct config_section	*s;
	enum config_sect	 kind;
	char			*name;
	size_t			 i;

	p->cur = &p->ignored;
	name = inner + strcspn(inner, " \t");
	if (*name != '\0') {
		*name++ = '\0';
		name += strspn(name, " \t");
	}
	for (i = 0; i < nitems(config_sect_names); i++)
		if (strcmp(inner, config_sect_names[i]) == 0)
			break;
	if (i == nitems(config_sect_names)) {
		config_error(p, p->line, "unknown section type \"%s\": "
		    "expected global, listener, backend or route", inner);
		return;
	}
	kind = (enum config_sect)i;
	if (kind == SECT_LISTENER)
		p->listener_seen = true;
	if (kind == SECT_GLOBAL) {
		if (*name != '\0')
			config_error(p, p->line, "[global] takes no name");
		if (p->global.line == 0)
			p->global.line = p->line;
		p->cur = &p->global;
		return;
	}
	if (*name == '\0') {
		config_error(p, p->line, "[%s] needs a name, as in [%s NAME]",
		    inner, inner);
		return;
	}
	if (!config_valid_name(name)) {
		config_error(p, p->line, "invalid %s name \"%s\": expected up "
		    "to %d letters, digits, '.', '-' or '_'", inner, name,
		    CONFIG_NAME_MAX);
		return;
	}
	if ((s = config_find_section(p, kind, name)) != NULL) {
		config_error(p, p->line, "duplicate [%s %s], first at %s",
		    inner, name, config_earlier(p, s->line));
		return;
	}
	if ((s = config_new_section(p, kind, name)) != NULL)
		p->cur = s;
}

static char *
config_trim(char *s)
{
	size_t	 len;

	s += strspn(s, " \t\r\n\f\v");
	len = strlen(s);
	while (len > 0 && strchr(" \t\r\n\f\v", s[len - 1]) != NULL)
		s[--len] = '\0';
	return s;
}

/* cuts an inline comment: ';' at the start or after white space */
static void
config_cut_comment(char *s)
{
	char	*c;

	for (c = s; *c != '\0'; c++)
		if (*c == ';' && (c == s || c[-1] == ' ' || c[-1] == '\t')) {
			*c = '\0';
			return;
		}
}

/*
 * A configuration file opened to be read: a regular file only, so that a
 * FIFO without a writer cannot hold a reload and the whole daemon, and a
 * device that a pattern matched is not even opened (opening some, such as
 * a watchdog, does something). NULL with errno set (EINVAL: not a
 * regular file).
 */
static FILE *
config_fopen(const char *path)
{
	struct stat	 st;
	FILE		*fp;
	int		 fd, saved;

	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		return NULL;
	}
	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) == -1)
		return NULL;
	if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		close(fd);
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		return NULL;
	}
	if (fcntl(fd, F_SETFL, O_RDONLY) == -1 ||
	    (fp = fdopen(fd, "r")) == NULL) {
		saved = errno;
		close(fd);
		errno = saved;
		return NULL;
	}
	return fp;
}

static const char *
config_ferror(int err)
{
	return err == EINVAL ? "not a regular file" : strerror(err);
}

/* From the next line on, the lines are file's from line on. */
static void
config_span_add(struct config_parser *p, size_t file, int line)
{
	struct config		*cfg = p->cfg;
	struct config_span	*sp;

	sp = reallocarray(cfg->spans, cfg->nspans + 1, sizeof(*sp));
	if (sp == NULL) {
		p->oom = true;
		return;
	}
	cfg->spans = sp;
	sp[cfg->nspans++] = (struct config_span){ p->line + 1, file, line };
}

/* The file and the line in it of a line number of the configuration. */
static void
config_locate(const struct config *cfg, int pos, const char **path,
    int *line)
{
	size_t lo = 0, hi = cfg->nspans, mid;

	/* the last span at or before pos: spans are in the order of pos */
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (cfg->spans[mid].pos <= pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	*path = cfg->path;
	*line = pos;
	if (lo > 0) {
		*path = cfg->files[cfg->spans[lo - 1].file];
		*line = cfg->spans[lo - 1].line + (pos - cfg->spans[lo - 1].pos);
	}
}

const char *
config_at(const struct config *cfg, int pos)
{
	static char	 buf[4][PATH_MAX + 16];
	static unsigned	 next;
	char		*b = buf[next++ % 4];
	const char	*path;
	int		 line;

	config_locate(cfg, pos, &path, &line);
	snprintf(b, sizeof(buf[0]), "%s:%d", path, line);
	return b;
}

/*
 * Where an earlier line was, for "first at": "line 5" in the file being
 * read, "file:5" in another.
 */
static const char *
config_earlier(struct config_parser *p, int pos)
{
	return config_earlier_than(p, pos, p->line);
}

/* The same, for line pos as seen from line from. */
static const char *
config_earlier_than(struct config_parser *p, int pos, int from)
{
	static char	 buf[PATH_MAX + 16];
	const char	*path, *here;
	int		 line, hline;

	config_locate(p->cfg, pos, &path, &line);
	config_locate(p->cfg, from, &here, &hline);
	if (path == here)
		snprintf(buf, sizeof(buf), "line %d", line);
	else
		snprintf(buf, sizeof(buf), "%s:%d", path, line);
	return buf;
}

/*
 * Adds bytes to the digest (FNV-1a). A file's beginning and its end add
 * "\0<" and "\0>", which no line of a file read without error has: a
 * line moved across an include (the same text, in another section)
 * changes the digest.
 */
static void
config_digest(struct config *cfg, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cfg->digest = (cfg->digest ^ (uint8_t)s[i]) * 0x100000001b3ULL;
}

/* Takes note of what file an input is, for config_input_open. */
static void
config_input_id(struct config_input *in)
{
	struct stat st;

	if (fstat(fileno(in->fp), &st) == 0) {
		in->dev = st.st_dev;
		in->ino = st.st_ino;
	}
}

unsigned long config_inputs_looked;

/*
 * Opens the top input, an included file: -1 when it cannot be read, or
 * when it is one of the files that include it (the open ones under it,
 * found through its up: a walk of every input under it, most of them
 * still to open, took 20,000 files of one include 0.2 s).
 */
static int
config_input_open(struct config_parser *p, struct config_input *in)
{
	struct config	*cfg = p->cfg;
	char		**files;

	if ((in->fp = config_fopen(in->path)) == NULL) {
		config_error(p, in->from, "include: %s: %s", in->path,
		    config_ferror(errno));
		return -1;
	}
	config_input_id(in);
	config_digest(cfg, "\0<", 2);
	for (struct config_input *up = in; up != p->in;) {
		up = &p->in[up->up];
		config_inputs_looked++;
		if (up->dev == in->dev && up->ino == in->ino) {
			config_error(p, in->from, "include: %s includes "
			    "itself", in->path);
			return -1;
		}
	}
	if ((files = reallocarray(cfg->files, cfg->nfiles + 1,
	    sizeof(*files))) == NULL) {
		p->oom = true;
		return -1;
	}
	cfg->files = files;
	in->file = cfg->nfiles;
	files[cfg->nfiles++] = in->path;	/* the config's from here */
	in->path = NULL;
	config_span_add(p, in->file, 1);
	p->cur = NULL;		/* each file opens its own sections */
	return 0;
}

/* Done with the top input: the one under it goes on, in its section. */
static void
config_input_pop(struct config_parser *p)
{
	struct config_input *in = &p->in[--p->nin];

	if (in->fp != NULL) {
		config_digest(p->cfg, "\0>", 2);
		fclose(in->fp);
	}
	free(in->path);
	p->cur = in->resume;
	if (p->nin > 0) {
		in = &p->in[p->nin - 1];
		config_span_add(p, in->file, in->line + 1);
	}
}

/*
 * "include = pattern": the files that match it (glob(3), in the order of
 * their names; a pattern relative to the directory of the file it is in)
 * are read next, each as if its lines stood here, beginning outside any
 * section; after them this file goes on in the section it was in.
 */
static void
config_include(struct config_parser *p, const char *pattern)
{
	struct config_input	*in;
	char			 full[PATH_MAX];
	size_t			 up = p->nin - 1;
	unsigned		 depth = p->in[up].depth + 1;
	struct config_section	*resume = p->cur;
	glob_t			 g;
	int			 rc;

	if (*pattern == '\0') {
		config_error(p, p->line, "include: missing value");
		return;
	}
	if (depth > CONFIG_INCLUDE_DEPTH) {
		config_error(p, p->line, "include: more than %d files deep",
		    CONFIG_INCLUDE_DEPTH);
		return;
	}
	if (config_relative(p, pattern, full, sizeof(full)) == -1) {
		config_error(p, p->line, "include: path too long");
		return;
	}
	rc = glob(full, 0, NULL, &g);
	if (rc == GLOB_NOMATCH) {
		/* a pattern may match nothing; a file must be there */
		if (strpbrk(full, "*?[") == NULL)
			config_error(p, p->line, "include: %s: %s", full,
			    strerror(ENOENT));
		return;
	}
	if (rc != 0) {
		if (rc == GLOB_NOSPACE)
			p->oom = true;
		else
			config_error(p, p->line, "include: %s: cannot read "
			    "its directory", full);
		globfree(&g);
		return;
	}
	/* the files read or open (nfiles), those still to open, and these */
	if (p->cfg->nfiles + p->npending + g.gl_pathc > CONFIG_FILES_MAX) {
		config_error(p, p->line, "include: more than %d files in all",
		    CONFIG_FILES_MAX);
		globfree(&g);
		return;
	}
	in = reallocarray(p->in, p->nin + g.gl_pathc, sizeof(*in));
	if (in == NULL) {
		p->oom = true;
		globfree(&g);
		return;
	}
	p->in = in;
	/* the first on top */
	for (size_t i = g.gl_pathc; i-- > 0;) {
		in = &p->in[p->nin];
		memset(in, 0, sizeof(*in));
		if ((in->path = config_strdup(p, g.gl_pathv[i])) == NULL)
			break;
		in->from = p->line;
		in->up = up;
		in->depth = depth;
		in->resume = resume;
		p->nin++;
		p->npending++;
	}
	globfree(&g);
}

/* Whether the key of "key = value", len bytes before the '=', is include. */
static bool
config_is_include(const char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	return len == 7 && strncmp(line, "include", 7) == 0;
}

static int	config_handler(void *, const char *, const char *,
		    const char *);

/*
 * The ini_reader: hands inih exactly one line per line read, so that
 * p->line is the line of whatever inih passes to config_handler, counted
 * across the included files. Headers and includes are handled here, and
 * settings too long for inih's buffer; blank, comment and malformed lines
 * reach inih as empty ones.
 */
static char *
config_reader(char *buf, int num, void *arg)
{
	struct config_parser	*p = arg;
	struct config_input	*in;
	ssize_t			 n;
	size_t			 len;
	char			*line, *end;

	for (;;) {
		if (p->nin == 0 || p->oom)
			return NULL;
		in = &p->in[p->nin - 1];
		if (in->fp == NULL) {
			p->npending--;
			if (config_input_open(p, in) == -1) {
				config_input_pop(p);
				continue;
			}
		}
		errno = 0;
		if ((n = getline(&p->linebuf, &p->linecap, in->fp)) != -1)
			break;
		if (ferror(in->fp))
			config_error(p, p->nin > 1 ? in->from : p->line + 1,
			    "read error: %s", strerror(errno));
		config_input_pop(p);
	}
	p->line++;
	in->line++;
	if (p->nin == 1)
		p->main_line = p->line;
	line = p->linebuf;
	config_digest(p->cfg, line, (size_t)n);
	snprintf(buf, (size_t)num, "\n");
	if (strlen(line) != (size_t)n) {
		config_error(p, p->line, "syntax error: NUL byte in line");
		return buf;
	}
	if (in->line == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0)
		line += 3;
	line = config_trim(line);
	if (*line == '\0' || *line == '#' || *line == ';')
		return buf;

	if (*line == '[') {
		if ((end = strchr(line, ']')) == NULL) {
			config_error(p, p->line, "syntax error: missing ']' "
			    "in section header");
			p->cur = &p->ignored;
			return buf;
		}
		*end++ = '\0';
		config_cut_comment(end);
		end = config_trim(end);
		if (*end != '\0' && *end != '#') {
			config_error(p, p->line, "syntax error: unexpected "
			    "text after ']'");
			p->cur = &p->ignored;
			return buf;
		}
		config_header(p, config_trim(line + 1));
		snprintf(buf, (size_t)num, "[]\n");
		return buf;
	}

	config_cut_comment(line);
	line = config_trim(line);
	len = strcspn(line, "=:");
	if (line[len] == '\0') {
		config_error(p, p->line, "syntax error: expected [section] "
		    "or key = value");
		return buf;
	}
	if (len == 0) {
		config_error(p, p->line, "syntax error: missing key name");
		return buf;
	}
	if (config_is_include(line, len)) {
		config_include(p, config_trim(line + len + 1));
		return buf;
	}
	if (strlen(line) > CONFIG_LINE_MAX) {
		config_error(p, p->line, "line too long: at most %d characters",
		    CONFIG_LINE_MAX);
		return buf;
	}
	if (strlen(line) + 2 > (size_t)num) {
		/*
		 * Too long for inih's buffer (200 bytes in Debian's
		 * libinih): split as inih splits, at the first '=' or ':'
		 * with both sides trimmed, and handled here; inih gets an
		 * empty line, so that its count of lines stays right.
		 */
		line[len] = '\0';
		config_handler(p, "", config_trim(line),
		    config_trim(line + len + 1));
		return buf;
	}
	snprintf(buf, (size_t)num, "%s\n", line);
	return buf;
}

static int
config_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct config_parser	*p = user;
	struct config_section	*s = p->cur;
	const struct config_key	*k = NULL;
	char			 label[CONFIG_NAME_MAX + 32];
	size_t			 i;

	if (s == NULL) {
		config_error(p, p->line, "key \"%s\" is outside any section",
		    name);
		return 1;
	}
	if (s->kind == SECT_IGNORED)
		return 1;
	for (i = 0; i < nitems(config_keys); i++)
		if (config_keys[i].sect == s->kind &&
		    strcmp(config_keys[i].name, name) == 0) {
			k = &config_keys[i];
			break;
		}
	if (k == NULL) {
		config_error(p, p->line, "unknown key \"%s\" in %s", name,
		    config_section_label(s, label, sizeof(label)));
		return 1;
	}
	if (s->keyline[i] != 0 && !(k->flags & KEY_REPEAT)) {
		config_error(p, p->line, "duplicate key \"%s\" in %s, first "
		    "at %s", name,
		    config_section_label(s, label, sizeof(label)),
		    config_earlier(p, s->keyline[i]));
		return 1;
	}
	if (s->keyline[i] == 0)
		s->keyline[i] = p->line;
	if (*value == '\0') {
		config_error(p, p->line, "%s: missing value", name);
		return 1;
	}
	k->set(p, k, s, config_section_obj(p, s), value);
	return 1;
}

/*
 * Each certificate needs its key; one missing is named by the line of the
 * key that has no partner (none at all is a missing required key).
 */
static void
config_finish_certs(struct config_parser *p, struct config_listener *l)
{
	const struct config_cert	*c;

	if (l->ncerts == 0 || l->nkeys == 0 || l->ncerts == l->nkeys)
		return;
	if (l->ncerts > l->nkeys) {
		c = &l->certs[l->nkeys];
		config_error(p, c->line, "certificate: no private_key goes "
		    "with it (certificates: %zu, private keys: %zu; the nth "
		    "certificate takes the nth key)", l->ncerts, l->nkeys);
	} else {
		c = &l->certs[l->ncerts];
		config_error(p, c->key_line, "private_key: no certificate "
		    "goes with it (certificates: %zu, private keys: %zu; the "
		    "nth certificate takes the nth key)", l->ncerts,
		    l->nkeys);
	}
}

/* The line of a key's first use in the section, however its value fared;
   0 when it has none. */
static int
config_keyline(const struct config_section *s, const char *name)
{
	for (size_t j = 0; j < nitems(config_keys); j++)
		if (config_keys[j].sect == s->kind &&
		    strcmp(config_keys[j].name, name) == 0)
			return s->keyline[j];
	return 0;
}

/*
 * client_verify and client_crl need client_ca; early_data = on goes
 * without it, as a listener with client_ca takes no tickets.
 */
static void
config_finish_client_ca(struct config_parser *p,
    const struct config_section *s, const struct config_listener *l)
{
	int vline = config_keyline(s, "client_verify");

	if (l->client_ca == NULL && vline != 0)
		config_error(p, vline, "client_verify: the listener has no "
		    "client_ca");
	if (l->client_ca == NULL && l->client_crl != NULL)
		config_error(p, l->client_crl_line, "client_crl: the listener "
		    "has no client_ca");
	if (l->client_ca != NULL && l->early_data)
		config_error(p, config_keyline(s, "early_data"), "early_data: "
		    "a listener with client_ca resumes no session, so takes "
		    "no 0-RTT");
}

/*
 * client_cert_header: one name for every listener that has client_ca or
 * sets the key, which a listener that does neither drops too, once any
 * has client_ca (a client of one could send what the backend trusts from
 * another); on none otherwise. It may be no field qproxy or a route sets.
 */
static void
config_finish_cert_header(struct config_parser *p, struct config *cfg)
{
	const struct config_section *s, *first = NULL;
	struct config_listener *l;
	const char *name = NULL, *h;
	bool any = false;
	int line, at = 0;

	for (size_t i = 0; i < p->nsections; i++) {
		s = p->sections[i];
		if (s->kind != SECT_LISTENER)
			continue;
		l = &cfg->listeners[s->index];
		line = config_keyline(s, "client_cert_header");
		any = any || l->client_ca != NULL;
		if (l->client_ca == NULL && line == 0)
			continue;
		/* off too: a listener that drops no field lets its clients
		   send the one another's backend trusts */
		h = l->client_cert_header;
		if (first == NULL) {
			name = h;
			first = s;
			at = line != 0 ? line : s->line;
		} else if ((name == NULL) != (h == NULL) || (h != NULL &&
		    strcmp(name, h) != 0))
			config_error(p, line != 0 ? line : s->line,
			    "client_cert_header: %s%s%s, where listener %s has "
			    "%s%s%s: every listener's is the same, as a client "
			    "of one could send the other's",
			    h != NULL ? "\"" : "", h != NULL ? h : "off",
			    h != NULL ? "\"" : "", first->name,
			    name != NULL ? "\"" : "", name != NULL ? name : "off",
			    name != NULL ? "\"" : "");
	}
	for (size_t i = 0; i < p->nsections; i++) {
		s = p->sections[i];
		if (s->kind != SECT_LISTENER)
			continue;
		l = &cfg->listeners[s->index];
		if (l->client_ca != NULL ||
		    config_keyline(s, "client_cert_header") != 0)
			continue;
		free(l->client_cert_header);
		l->client_cert_header = NULL;
		if (any && name != NULL &&
		    (l->client_cert_header = config_strdup(p, name)) == NULL)
			return;
	}
	if (name == NULL)
		return;
	/*
	 * A route's header key reads the client's fields, before that name
	 * is dropped: a client with no certificate that sends the field
	 * would take the route, one with a certificate would not.
	 */
	for (size_t i = 0; i < p->nsections; i++) {
		const struct config_headers *m;

		s = p->sections[i];
		if (s->kind != SECT_ROUTE)
			continue;
		m = &cfg->routes[s->index].match_headers;
		for (size_t k = 0; k < m->n; k++)
			if (request_name_is(name, m->v[k].name,
			    m->v[k].namelen))
				config_error(p, config_keyline(s, "header"),
				    "header: \"%s\" is client_cert_header, "
				    "which no route sees: use "
				    "require_client_cert", m->v[k].name);
	}
	if (cfg->request_id_header != NULL &&
	    strcmp(name, cfg->request_id_header) == 0)
		config_error(p, at, "client_cert_header: \"%s\" is "
		    "request_id_header's too", name);
	for (size_t i = 0; i < cfg->nroutes; i++)
		if (header_is_set(&cfg->routes[i].set_request, name,
		    strlen(name)))
			config_error(p, at, "client_cert_header: route %s sets "
			    "\"%s\" too (set_request_header)",
			    cfg->routes[i].name, name);
}

/*
 * What a route leaves unset that [global] gives, wherever that comes; a
 * strip_prefix that has a path_prefix to strip; and one of backend, return
 * and redirect, with no request fields set when no request goes on.
 */
static void
config_finish_route(struct config_parser *p, const struct config_section *s,
    struct config_route *r)
{
	char	 label[CONFIG_NAME_MAX + 32];
	int	 answer_line = MAX(config_keyline(s, "return"),
		    config_keyline(s, "redirect"));
	int	 set_line = config_keyline(s, "set_request_header");
	int	 realm_line = config_keyline(s, "auth_realm");

	config_section_label(s, label, sizeof(label));
	if (s->backend == NULL && r->answer == 0 && answer_line == 0)
		config_error(p, s->line, "%s: missing required key "
		    "\"backend\" (or \"return\" or \"redirect\")", label);
	if (s->backend != NULL && answer_line != 0)
		config_error(p, answer_line > s->backend_line ? answer_line :
		    s->backend_line, "%s: a route has a backend, a return or "
		    "a redirect, not more than one", label);
	if (realm_line != 0 && config_keyline(s, "auth_basic_file") == 0 &&
	    !config_has_error(p, realm_line))
		config_error(p, realm_line, "auth_realm: the route has no "
		    "auth_basic_file");
	if (r->redirect && header_is_set(&r->set_response, "location", 8))
		config_error(p, answer_line, "redirect: the route also sets "
		    "Location with set_response_header");
	if (r->answer != 0 && set_line != 0)
		config_error(p, set_line, "set_request_header: the route "
		    "sends no request on (it has a %s)",
		    r->redirect ? "redirect" : "return");
	if (config_keyline(s, "max_body_size") == 0)
		r->max_body_size = p->cfg->max_body_size;
	if (config_keyline(s, "compress") == 0)
		r->compress = p->cfg->compress;
	if (r->strip_prefix && r->path_prefix == NULL)
		config_error(p, config_keyline(s, "strip_prefix"),
		    "strip_prefix: the route has no path_prefix to strip");
}

static int
config_server_cmp(const void *a, const void *b)
{
	const struct config_server	*const *pa = a, *const *pb = b;
	const struct config_server	*sa = *pa, *sb = *pb;
	int				 rc;

	if ((rc = addr_cmp(&sa->addr, &sb->addr)) != 0)
		return rc;
	return sa->line < sb->line ? -1 : sa->line > sb->line;
}

/*
 * No server twice in a backend, however its address is written: each
 * would be a row of its own in qproxyctl, with the same labels in the
 * metrics. Sorted, not compared pairwise: a backend may have thousands.
 */
static void
config_finish_servers(struct config_parser *p, const struct config_backend *b)
{
	const struct config_server	**v, *first;
	size_t				 i;

	if (b->nservers < 2)
		return;
	if ((v = calloc(b->nservers, sizeof(*v))) == NULL) {
		p->oom = true;
		return;
	}
	for (i = 0; i < b->nservers; i++)
		v[i] = &b->servers[i];
	qsort(v, b->nservers, sizeof(*v), config_server_cmp);
	for (first = v[0], i = 1; i < b->nservers; i++) {
		if (addr_cmp(&first->addr, &v[i]->addr) != 0) {
			first = v[i];
			continue;
		}
		if (strcmp(first->text, v[i]->text) == 0)
			config_error(p, v[i]->line, "server: \"%s\" is already "
			    "used at %s", v[i]->text, config_earlier_than(p,
			    first->line, v[i]->line));
		else
			config_error(p, v[i]->line, "server: \"%s\" is already "
			    "used at %s, as \"%s\"", v[i]->text,
			    config_earlier_than(p, first->line, v[i]->line),
			    first->text);
	}
	free(v);
}

/* the checks that need the whole file */
/*
 * QUIC-LB: the nonce fills the server ID up to one AES block unless set
 * (or, for a server ID past 12 bytes, to the longest connection ID),
 * and a connection ID keeps 8 bytes at least (RFC 9000 7.2 wants that many
 * of a client's first, and a Retry's becomes its next one).
 */
static void
config_finish_cid(struct config_parser *p, struct config *cfg)
{
	int sline = config_global_line(cfg, "cid_server_id");
	int nline = config_global_line(cfg, "cid_nonce_length");
	size_t total;

	if (cfg->cid_sidlen == 0)
		return;
	if (nline == 0)
		cfg->cid_nonce_len = cfg->cid_sidlen <= 12 ?
		    16 - cfg->cid_sidlen : CID_LB_MAX_PLAIN - cfg->cid_sidlen;
	total = cfg->cid_sidlen + (size_t)cfg->cid_nonce_len;
	if (total > CID_LB_MAX_PLAIN)
		config_error(p, nline > sline ? nline : sline, "a %zu-byte "
		    "cid_server_id and a cid_nonce_length of %llu make more "
		    "than %d bytes", cfg->cid_sidlen,
		    (unsigned long long)cfg->cid_nonce_len, CID_LB_MAX_PLAIN);
	else if (total < 7)
		config_error(p, nline > sline ? nline : sline, "a %zu-byte "
		    "cid_server_id and a cid_nonce_length of %llu make fewer "
		    "than 7 bytes: a connection ID has 8 at least",
		    cfg->cid_sidlen,
		    (unsigned long long)cfg->cid_nonce_len);
}

/*
 * Each worker serves its own control socket, at the path with ".N" added:
 * control_socket must leave room for it.
 */
static void
config_finish_workers(struct config_parser *p, struct config *cfg)
{
	int line = config_global_line(cfg, "workers");

	if (cfg->workers < 2)
		return;
	if (cfg->control_socket != NULL && strlen(cfg->control_socket) + 3 >=
	    sizeof(((struct sockaddr_un *)0)->sun_path))
		config_error(p, line, "workers: control_socket is too long for "
		    "the workers' sockets (its path with \".%llu\" added)",
		    (unsigned long long)cfg->workers - 1);
}

int
header_is_set(const struct config_headers *set, const char *name,
    size_t len)
{
	for (size_t i = 0; i < set->n; i++)
		if (set->v[i].namelen == len &&
		    memcmp(set->v[i].name, name, len) == 0)
			return 1;
	return 0;
}

/* A request's ID is not also a field that a route sets. */
static void
config_finish_request_id(struct config_parser *p, struct config *cfg)
{
	const char *id = cfg->request_id_header;

	for (size_t i = 0; id != NULL && i < cfg->nroutes; i++) {
		const struct config_route *r = &cfg->routes[i];

		if (header_is_set(&r->set_request, id, strlen(id)) ||
		    header_is_set(&r->set_response, id, strlen(id)))
			config_error(p, config_global_line(cfg,
			    "request_id_header"), "request_id_header: route "
			    "%s sets \"%s\" too (set_request_header or "
			    "set_response_header)", r->name, id);
	}
}

/*
 * A route's require_client_cert would refuse every request where no
 * listener asks for a certificate.
 */
static void
config_finish_require_cert(struct config_parser *p, const struct config *cfg)
{
	const struct config_section *s;

	for (size_t i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].client_ca != NULL)
			return;
	for (size_t i = 0; i < p->nsections; i++) {
		s = p->sections[i];
		if (s->kind == SECT_ROUTE &&
		    cfg->routes[s->index].require_client_cert)
			config_error(p, config_keyline(s,
			    "require_client_cert"), "require_client_cert: no "
			    "listener has client_ca");
	}
}

/* Whether state_file, or the new file written beside it, is path. */
static bool
state_is(const char *state, const char *path)
{
	size_t n = strlen(state);

	return path != NULL && strncmp(state, path, n) == 0 &&
	    (path[n] == '\0' || strcmp(path + n, ".new") == 0);
}

/*
 * state_file, unset: the file "state" in secret_file's directory. Never
 * a file of keys, which the state's text would replace.
 */
static void
config_finish_state(struct config_parser *p, struct config *cfg)
{
	int line = config_global_line(cfg, "state_file");
	const char *slash;
	int n;

	if (line == 0 && cfg->secret_file != NULL) {
		slash = strrchr(cfg->secret_file, '/');
		n = (int)(slash - cfg->secret_file);
		if (asprintf(&cfg->state_file, "%.*s/state", n,
		    cfg->secret_file) == -1) {
			cfg->state_file = NULL;
			p->oom = true;
			return;
		}
		line = config_global_line(cfg, "secret_file");
	}
	if (cfg->state_file == NULL)
		return;
	if (state_is(cfg->state_file, cfg->secret_file) ||
	    state_is(cfg->state_file, cfg->cid_key_file))
		config_error(p, line > 0 ? line : 1, "state_file: \"%s\" would "
		    "write over %s: name another file", cfg->state_file,
		    state_is(cfg->state_file, cfg->secret_file) ?
		    "secret_file" : "cid_key_file");
}

static void
config_finish(struct config_parser *p)
{
	const struct config_section	*s, *b;
	const struct config_key		*k;
	struct config			*cfg = p->cfg;
	char				 label[CONFIG_NAME_MAX + 32];
	size_t				 i, j;

	for (i = 0; i < p->nsections; i++) {
		s = p->sections[i];
		for (j = 0; j < nitems(config_keys); j++) {
			k = &config_keys[j];
			if (k->sect != s->kind || !(k->flags & KEY_REQUIRED) ||
			    s->keyline[j] != 0)
				continue;
			config_error(p, s->line, "%s: missing required key "
			    "\"%s\"", config_section_label(s, label,
			    sizeof(label)), k->name);
		}
		if (s->kind == SECT_LISTENER) {
			config_finish_certs(p, &cfg->listeners[s->index]);
			config_finish_client_ca(p, s,
			    &cfg->listeners[s->index]);
		}
		if (s->kind == SECT_BACKEND)
			config_finish_servers(p, &cfg->backends[s->index]);
		if (s->kind == SECT_ROUTE)
			config_finish_route(p, s, &cfg->routes[s->index]);
		if (s->kind != SECT_ROUTE || s->backend == NULL)
			continue;
		if ((b = config_find_section(p, SECT_BACKEND,
		    s->backend)) == NULL)
			config_error(p, s->backend_line, "backend: no "
			    "[backend %s] in the configuration", s->backend);
		else
			cfg->routes[s->index].backend = b->index;
	}
	config_finish_cert_header(p, cfg);
	config_finish_require_cert(p, cfg);
	memcpy(cfg->global_keyline, p->global.keyline,
	    sizeof(cfg->global_keyline));
	config_finish_cid(p, cfg);
	config_finish_workers(p, cfg);
	config_finish_request_id(p, cfg);
	config_finish_state(p, cfg);
	/*
	 * A bad [listener] header has had its error already. At the main
	 * file's last line, even when an included file's came after it.
	 */
	if (cfg->nlisteners == 0 && !p->listener_seen)
		config_error(p, p->main_line > 0 ? p->main_line : 1,
		    "no [listener] section");
}

static bool
config_has_error(const struct config_parser *p, int line)
{
	size_t	 i;

	for (i = 0; i < p->nerrors; i++)
		if (p->errors[i].line == line)
			return true;
	return false;
}

/* In line order; of one line, in finding order. */
static int
config_msg_cmp(const void *a, const void *b)
{
	const struct config_msg	*ea = a, *eb = b;

	if (ea->line != eb->line)
		return ea->line < eb->line ? -1 : 1;
	return ea->seq < eb->seq ? -1 : ea->seq > eb->seq;
}

static void
config_report(struct config_parser *p, FILE *errs)
{
	size_t	 i;

	if (p->nerrors > 1)	/* (none: perhaps no array at all) */
		qsort(p->errors, p->nerrors, sizeof(*p->errors),
		    config_msg_cmp);
	for (i = 0; i < p->nerrors && errs != NULL; i++)
		fprintf(errs, "%s: %s\n", config_at(p->cfg, p->errors[i].line),
		    p->errors[i].msg);
	if (p->oom && errs != NULL)
		fprintf(errs, "%s: out of memory\n", config_at(p->cfg,
		    p->line));
	if (errs != NULL)
		fflush(errs);
}

static void
config_keep(void *node)
{
	(void)node;
}

static void
config_parser_free(struct config_parser *p)
{
	size_t	 i;

	tdestroy(p->by_name, config_keep);	/* the sections go below */
	for (i = 0; i < p->nsections; i++) {
		free(p->sections[i]->backend);
		free(p->sections[i]);
	}
	free(p->sections);
	for (i = 0; i < p->nerrors; i++)
		free(p->errors[i].msg);
	free(p->errors);
	free(p->linebuf);
	/*
	 * Those a parse stopped for want of memory left open, without
	 * config_input_pop's span: the configuration may be freed already.
	 */
	while (p->nin > 0) {
		struct config_input *in = &p->in[--p->nin];

		if (in->fp != NULL)
			fclose(in->fp);
		free(in->path);
	}
	free(p->in);
}

/* The tables requests are looked up in (route.h). */
static void
config_index(struct config_parser *p, struct config *cfg)
{
	if ((cfg->route_index = route_index_new(cfg->routes,
	    cfg->nroutes)) == NULL ||
	    (cfg->trusted_index = acl_index_new(cfg->trusted,
	    cfg->ntrusted)) == NULL) {
		p->oom = true;
		return;
	}
	for (size_t i = 0; i < cfg->nroutes; i++)
		if ((cfg->routes[i].acl_index = acl_index_new(
		    cfg->routes[i].acl, cfg->routes[i].nacl)) == NULL) {
			p->oom = true;
			return;
		}
}

struct config *
config_load(const char *path, FILE *errs)
{
	struct config_parser	 p;
	struct config		*cfg;
	FILE			*fp;
	int			 rc;

	memset(&p, 0, sizeof(p));
	p.path = path;
	p.global.kind = SECT_GLOBAL;
	p.ignored.kind = SECT_IGNORED;

	if ((fp = config_fopen(path)) == NULL) {
		if (errs != NULL)
			fprintf(errs, "%s:0: cannot open: %s\n", path,
			    config_ferror(errno));
		return NULL;
	}
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL ||
	    (cfg->path = strdup(path)) == NULL ||
	    (cfg->files = calloc(1, sizeof(*cfg->files))) == NULL ||
	    (cfg->files[0] = strdup(path)) == NULL ||
	    (p.in = calloc(1, sizeof(*p.in))) == NULL) {
		if (cfg != NULL) {
			if (cfg->files != NULL)
				free(cfg->files[0]);
			free(cfg->files);
			free(cfg->path);
		}
		free(cfg);
		fclose(fp);
		if (errs != NULL)
			fprintf(errs, "%s:0: out of memory\n", path);
		return NULL;
	}
	cfg->nfiles = 1;
	cfg->digest = 0xcbf29ce484222325ULL;	/* FNV-1a's offset basis */
	p.in[0].fp = fp;
	config_input_id(&p.in[0]);
	config_digest(cfg, "\0<", 2);
	p.nin = 1;
	p.cfg = cfg;
	config_defaults(&p, &p.global);

	rc = ini_parse_stream(config_reader, &p, config_handler, &p);
	if (rc == -2)
		p.oom = true;
	else if (rc > 0 && !config_has_error(&p, rc))
		config_error(&p, rc, "syntax error");
	if (!p.oom)
		config_finish(&p);
	if (p.nerrors == 0 && !p.oom)
		config_index(&p, cfg);

	if (p.nerrors > 0 || p.oom) {
		config_report(&p, errs);
		config_free(cfg);
		cfg = NULL;
	}
	config_parser_free(&p);
	return cfg;
}

static void
config_headers_free(struct config_headers *hs)
{
	for (size_t i = 0; i < hs->n; i++) {
		free(hs->v[i].name);
		free(hs->v[i].value);
	}
	free(hs->v);
}

void
config_free(struct config *cfg)
{
	size_t	 i, j;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nlisteners; i++) {
		free(cfg->listeners[i].name);
		free(cfg->listeners[i].addrs);
		free(cfg->listeners[i].addr_lines);
		for (j = 0; j < MAX(cfg->listeners[i].ncerts,
		    cfg->listeners[i].nkeys); j++) {
			free(cfg->listeners[i].certs[j].certificate);
			free(cfg->listeners[i].certs[j].private_key);
		}
		free(cfg->listeners[i].certs);
		free(cfg->listeners[i].early_data_methods);
		free(cfg->listeners[i].client_ca);
		free(cfg->listeners[i].client_crl);
		free(cfg->listeners[i].client_cert_header);
	}
	free(cfg->listeners);
	for (i = 0; i < cfg->nbackends; i++) {
		for (j = 0; j < cfg->backends[i].nservers; j++)
			free(cfg->backends[i].servers[j].text);
		free(cfg->backends[i].servers);
		free(cfg->backends[i].name);
		free(cfg->backends[i].health_check);
		free(cfg->backends[i].health_host);
	}
	free(cfg->backends);
	route_index_free(cfg->route_index);
	for (i = 0; i < cfg->nroutes; i++) {
		free(cfg->routes[i].name);
		free(cfg->routes[i].host);
		free(cfg->routes[i].path_prefix);
		free(cfg->routes[i].methods);
		free(cfg->routes[i].acl);
		acl_index_free(cfg->routes[i].acl_index);
		free(cfg->routes[i].answer_text);
		free(cfg->routes[i].error_pages.v);
		if (cfg->routes[i].auth != NULL)
			auth_users_free(cfg->routes[i].auth);
		free(cfg->routes[i].auth);
		free(cfg->routes[i].auth_realm);
		config_headers_free(&cfg->routes[i].set_request);
		config_headers_free(&cfg->routes[i].set_response);
		config_headers_free(&cfg->routes[i].match_headers);
	}
	free(cfg->routes);
	free(cfg->user);
	free(cfg->control_socket);
	free(cfg->error_log);
	free(cfg->access_log);
	free(cfg->request_id_header);
	free(cfg->trusted);
	acl_index_free(cfg->trusted_index);
	free(cfg->error_pages.v);
	for (i = 0; i < cfg->npage_files; i++) {
		free(cfg->page_files[i]->body);
		free(cfg->page_files[i]);
	}
	free(cfg->page_files);
	for (i = 0; i < cfg->nfiles; i++)
		free(cfg->files[i]);
	free(cfg->files);
	free(cfg->spans);
	free(cfg->secret_file);
	free(cfg->state_file);
	free(cfg->qlog_dir);
	free(cfg->keylog_file);
	free(cfg->cid_key_file);
	free(cfg->compress_types);
	free(cfg->path);
	free(cfg);
}

/* The line of whichever of two global keys was written later. */
static int
config_later_line(const struct config *cfg, const char *k1, const char *k2)
{
	int a = config_global_line(cfg, k1), b = config_global_line(cfg, k2);

	return a > b ? a : b;
}

/* The line of the last written of three global keys (0: none). */
static int
config_max_line(const struct config *cfg, const char *k1, const char *k2,
    const char *k3)
{
	int a = config_later_line(cfg, k1, k2), c = config_global_line(cfg, k3);

	return a > c ? a : c;
}

/* Whether a route's host takes every request the other's takes. */
static bool
config_host_covers(const char *a, const char *b)
{
	size_t alen, blen;

	if (a == NULL)
		return true;
	if (b == NULL)
		return false;
	if (strcmp(a, b) == 0)
		return true;
	/* "*.example.com": every name under it, wildcards too */
	if (a[0] != '*')
		return false;
	alen = strlen(a + 1);
	blen = strlen(b);
	return blen > alen && strcmp(b + blen - alen, a + 1) == 0 &&
	    (b[0] != '*' || blen > alen + 1);
}

/* Whether route a, before b, takes every request b would take. */
static bool
config_route_covers(const struct config_route *a, const struct config_route *b)
{
	const char *m;

	if (!config_host_covers(a->host, b->host))
		return false;
	if (a->path_prefix != NULL && (b->path_prefix == NULL ||
	    strncmp(b->path_prefix, a->path_prefix,
	    strlen(a->path_prefix)) != 0))
		return false;
	if (a->methods != NULL) {
		if (b->methods == NULL)
			return false;
		/* each of b's, " GET HEAD ", in a's */
		for (m = b->methods; *m != '\0'; m += strcspn(m, " ")) {
			char one[64];
			size_t n;

			m += strspn(m, " ");
			if ((n = strcspn(m, " ")) == 0)
				break;
			if (n >= sizeof(one))
				return false;
			memcpy(one, m, n);
			one[n] = '\0';
			if (!route_method_in(a->methods, one))
				return false;
		}
	}
	for (size_t i = 0; i < a->match_headers.n; i++) {
		const struct config_header *h = &a->match_headers.v[i];
		bool found = false;

		for (size_t j = 0; j < b->match_headers.n && !found; j++) {
			const struct config_header *o = &b->match_headers.v[j];

			found = strcmp(h->name, o->name) == 0 &&
			    (h->value == NULL || (o->value != NULL &&
			    strcmp(h->value, o->value) == 0));
		}
		if (!found)
			return false;
	}
	return true;
}

/* What config_warnings finds ("file:line: message"), said in line order. */
struct config_warnings {
	struct config_msg	*v;
	size_t			 n;
};

static void QP_PRINTF(4, 5)
config_warn(const struct config *cfg, struct config_warnings *w, int pos,
    const char *fmt, ...)
{
	struct config_msg *v;
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* out of memory, a warning is lost: no more than that */
	if ((v = reallocarray(w->v, w->n + 1, sizeof(*v))) == NULL)
		return;
	w->v = v;
	if (asprintf(&v[w->n].msg, "%s: %s", config_at(cfg, pos), msg) == -1)
		return;
	v[w->n].line = pos;
	v[w->n].seq = w->n;
	w->n++;
}

void
config_warnings(const struct config *cfg,
    void (*warn)(const char *, ...))
{
	struct config_warnings w = { NULL, 0 };
	bool auto_retry = false;

	for (size_t i = 0; i < cfg->nlisteners; i++)
		auto_retry |= cfg->listeners[i].retry == CONFIG_RETRY_AUTO;
	if (auto_retry && cfg->retry_threshold >= cfg->max_handshakes)
		config_warn(cfg, &w, config_later_line(cfg, "retry_threshold",
		    "max_handshakes"), "retry_threshold %llu is not below "
		    "max_handshakes %llu: handshakes are refused before any "
		    "Retry is sent", (unsigned long long)cfg->retry_threshold,
		    (unsigned long long)cfg->max_handshakes);
	if (cfg->stream_window > cfg->connection_window)
		config_warn(cfg, &w, config_later_line(cfg, "stream_window",
		    "connection_window"), "stream_window is larger than "
		    "connection_window: a stream can use no more than the "
		    "connection's");
	if (cfg->response_buffer_total < cfg->response_buffer_size)
		config_warn(cfg, &w, config_later_line(cfg,
		    "response_buffer_total", "response_buffer_size"),
		    "response_buffer_total is smaller than "
		    "response_buffer_size: a stream can hold no more than "
		    "all streams together");
	if (3 * cfg->initial_rtt >= cfg->idle_timeout)
		config_warn(cfg, &w, config_later_line(cfg, "initial_rtt",
		    "idle_timeout"), "initial_rtt is a third of idle_timeout "
		    "or more: a lost handshake flight is not sent again "
		    "before the handshake times out");
	if (cfg->cid_sidlen == 0 && (config_global_line(cfg,
	    "cid_nonce_length") > 0 || config_global_line(cfg,
	    "cid_config_id") > 0 || cfg->cid_key_file != NULL))
		config_warn(cfg, &w, config_max_line(cfg, "cid_nonce_length",
		    "cid_config_id", "cid_key_file"), "cid_nonce_length, "
		    "cid_config_id and cid_key_file do nothing without "
		    "cid_server_id");
	if (cfg->cid_sidlen > 0 && cfg->cid_key_file != NULL &&
	    cfg->cid_nonce_len < 6)
		config_warn(cfg, &w, config_later_line(cfg, "cid_nonce_length",
		    "cid_server_id"), "a cid_nonce_length of %llu runs out "
		    "after %s connection IDs%s (each Retry, and each Initial "
		    "from an address not proven, takes one too): then they "
		    "are unroutable until a restart",
		    (unsigned long long)cfg->cid_nonce_len,
		    cfg->cid_nonce_len == 4 ? "4 billion" : "a trillion",
		    cfg->workers > 1 ? " over all the workers" : "");
	if (cfg->cid_sidlen > 0 && cfg->cid_key_file == NULL)
		config_warn(cfg, &w, config_global_line(cfg, "cid_server_id"),
		    "cid_server_id without cid_key_file: the server ID is in "
		    "the clear in every connection ID, so that anyone on the "
		    "path can tell a client's connections by their server and "
		    "follow them to a new address");
	if (cfg->request_buffer_total < 4 * cfg->stream_window)
		config_warn(cfg, &w, config_later_line(cfg,
		    "request_buffer_total", "stream_window"),
		    "request_buffer_total is smaller than four times "
		    "stream_window, the most autotuning widens a stream's "
		    "window to: one upload to a slow backend can fill it");
	if (cfg->quic_buffer_total / (64 * KB) < cfg->max_connections)
		config_warn(cfg, &w, config_later_line(cfg,
		    "quic_buffer_total", "max_connections"),
		    "quic_buffer_total is smaller than max_connections times "
		    "64 KiB: connections that hold nothing out of the way may "
		    "be closed when they are many");
	if (cfg->request_rate == 0 &&
	    config_global_line(cfg, "request_burst_per_client") > 0)
		config_warn(cfg, &w, config_global_line(cfg,
		    "request_burst_per_client"), "request_burst_per_client "
		    "does nothing without max_request_rate_per_client");
	/*
	 * A body held there whole, or up to the size, waits on for its
	 * server with what the client had credit for beyond it: a stream's
	 * window, which autotuning may widen four times. A size below half
	 * a window holds what none does.
	 */
	for (size_t i = 0; i < cfg->nbackends; i++) {
		const struct config_backend *b = &cfg->backends[i];
		uint64_t ahead = 4 * (uint64_t)cfg->stream_window;
		char held[32], more[32], total[32];

		if (b->request_buffer > cfg->stream_window / 2 &&
		    b->request_buffer + ahead > cfg->request_buffer_total)
			config_warn(cfg, &w, b->line, "backend %s: its "
			    "request_buffer_size, %s, and the four stream "
			    "windows a client may send beyond it (%s) are above "
			    "request_buffer_total, %s: an upload to it can be "
			    "given up (503)", b->name,
			    config_fmt_size(b->request_buffer, held,
			    sizeof(held)), config_fmt_size(ahead, more,
			    sizeof(more)), config_fmt_size(
			    cfg->request_buffer_total, total, sizeof(total)));
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		if (l->max_connections > cfg->max_connections)
			config_warn(cfg, &w, l->line, "listener %s: its "
			    "max_connections, %llu, is above the global "
			    "max_connections, %llu, which bounds it", l->name,
			    (unsigned long long)l->max_connections,
			    (unsigned long long)cfg->max_connections);
		for (size_t j = 0; j < l->ncerts; j++)
			if (l->certs[j].key_mode & S_IROTH)
				config_warn(cfg, &w, l->certs[j].key_line,
				    "private_key %s may be read by every user "
				    "(mode %04o)", l->certs[j].private_key,
				    (unsigned)(l->certs[j].key_mode & 07777));
	}
	for (size_t j = 1; j < cfg->nroutes; j++) {
		struct route_cursor c;
		const char *h = cfg->routes[j].host;
		const char *path = cfg->routes[j].path_prefix;
		size_t i;

		/* those that may cover it: of hosts and prefixes of its own */
		route_cursor_init(&c, cfg, h, h != NULL ? strlen(h) : 0, path,
		    path != NULL ? strlen(path) : 0, NULL, 0);
		while ((i = route_cursor_next(&c)) < j) {
			if (!config_route_covers(&cfg->routes[i],
			    &cfg->routes[j]))
				continue;
			config_warn(cfg, &w, cfg->routes[j].line, "route %s is "
			    "never used: route %s, at %s, comes first and "
			    "takes every request it would",
			    cfg->routes[j].name, cfg->routes[i].name,
			    config_at(cfg, cfg->routes[i].line));
			break;
		}
	}
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const struct config_route *r = &cfg->routes[i];
		/* the field RFC 9110 asks of the answer, as set (lowercase) */
		const char *needs = r->answer == 405 ? "Allow" :
		    r->answer == 401 ? "WWW-Authenticate" : NULL;
		const char *set = r->answer == 405 ? "allow" :
		    "www-authenticate";

		if (needs != NULL && !header_is_set(&r->set_response, set,
		    strlen(set)))
			config_warn(cfg, &w, r->line, "route %s answers %d "
			    "without the %s field that RFC 9110 asks of it: add "
			    "set_response_header = %s: ...", r->name, r->answer,
			    needs, needs);
		if (r->auth != NULL && r->auth->n == 0)
			config_warn(cfg, &w, r->line, "route %s: its "
			    "auth_basic_file has no users: every request is "
			    "refused (401)", r->name);
		if (r->request_rate == 0 && r->request_burst > 0)
			config_warn(cfg, &w, r->line, "route %s: request_burst "
			    "does nothing without max_request_rate", r->name);
	}
	if (w.n > 0)
		qsort(w.v, w.n, sizeof(*w.v), config_msg_cmp);
	for (size_t i = 0; i < w.n; i++) {
		warn("%s", w.v[i].msg);
		free(w.v[i].msg);
	}
	free(w.v);
}

int
config_global_line(const struct config *cfg, const char *key)
{
	for (size_t i = 0; i < nitems(config_keys); i++)
		if (config_keys[i].sect == SECT_GLOBAL &&
		    strcmp(config_keys[i].name, key) == 0)
			return cfg->global_keyline[i];
	return 0;
}
