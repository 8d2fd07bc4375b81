/* config.h: the configuration file, parsed into plain data. */
#ifndef QPROXY_CONFIG_H
#define QPROXY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "addr.h"
#include "auth.h"

#define CONFIG_DEFAULT_PATH	"/etc/qproxy.conf"

/*
 * A listener's certificate and its key, paired in the order of their keys:
 * the first is the default, the others are served to clients that ask
 * for one of their names (SNI).
 */
struct config_cert {
	char		*certificate;	/* PEM chain, leaf first */
	char		*private_key;
	int		 line;		/* of the certificate key */
	int		 key_line;	/* of the private_key key */
	mode_t		 key_mode;	/* of the key file, as read */
};

struct config_listener {
	char		*name;
	int		 line;		/* of the section header */
	struct addr	*addrs;
	int		*addr_lines;	/* of each address key */
	size_t		 naddrs;
	struct config_cert *certs;
	size_t		 ncerts;	/* certificate keys seen */
	size_t		 nkeys;		/* private_key keys seen */
	int		 retry;		/* enum config_retry */
	int		 early_data;	/* accept 0-RTT */
	char		*early_data_methods;	/* " GET HEAD OPTIONS " */
	uint64_t	 max_connections;	/* per address; 0: no own limit */
	/* client_ca: the CAs a client's certificate is verified against
	   (NULL: none asked for) and its key's line */
	char		*client_ca;
	int		 client_ca_line;
	char		*client_crl;	/* its CRLs (NULL: none) */
	int		 client_crl_line;
	int		 client_verify;	/* enum config_client_verify */
	char		*client_cert_header;	/* lowercase; NULL: off */
};

enum config_client_verify {
	CONFIG_CLIENT_REQUIRE,	/* no certificate, no handshake */
	CONFIG_CLIENT_OPTIONAL,	/* one sent must verify */
};

enum config_retry {
	CONFIG_RETRY_AUTO,	/* while unvalidated handshakes pass the bar */
	CONFIG_RETRY_ALWAYS,
	CONFIG_RETRY_NEVER,
};

/* A route's access_log: which of its requests the access log writes. */
enum config_route_log {
	CONFIG_ROUTE_LOG_OFF,
	CONFIG_ROUTE_LOG_ON,
	CONFIG_ROUTE_LOG_ERRORS,	/* status 400 or more, or none */
};

enum config_balance {
	CONFIG_BALANCE_ROUND_ROBIN,
	CONFIG_BALANCE_LEAST_CONN,
	CONFIG_BALANCE_CLIENT_HASH,
};

enum config_cc {
	CONFIG_CC_CUBIC,
	CONFIG_CC_BBR,
	CONFIG_CC_RENO,
};

/* aes_gcm_vaes: the widest of gcm.c's paths to take */
enum config_vaes {
	CONFIG_VAES_OFF,	/* none: wolfSSL's AES-GCM alone */
	CONFIG_VAES_ON,		/* AVX-512's where the CPU has it, else AVX2's */
	CONFIG_VAES_AVX2,	/* AVX2's even with AVX-512 */
};

/* compress: the content codings qproxy may give a response (compress.h) */
enum config_compress {
	CONFIG_COMPRESS_OFF,
	CONFIG_COMPRESS_GZIP,
};

/*
 * compress_types' default: text that compresses well, and not
 * text/event-stream, whose events a client wants as they come.
 */
#define CONFIG_COMPRESS_TYPES	"text/html text/plain text/css " \
	"text/javascript text/xml text/csv text/markdown " \
	"application/javascript application/json application/xml " \
	"application/wasm application/*+json application/*+xml image/svg+xml"

struct config_server {
	char		*text;		/* as written: "127.0.0.1:8080" */
	struct addr	 addr;
	unsigned	 weight;	/* 1 to 100 */
	int		 backup;	/* only when no other is open */
	int		 line;		/* of the configuration */
};

struct config_backend {
	char			*name;
	int			 line;
	struct config_server	*servers;
	size_t			 nservers;
	double			 connect_timeout;	/* seconds */
	double			 read_timeout;		/* seconds */
	double			 tunnel_timeout;	/* a WebSocket's idle
						   seconds */
	double			 fail_timeout;	/* seconds a failed server is
						   passed over */
	uint64_t		 max_fails;	/* failed responses in a row
						   that fail it; 0: none do */
	/* retry_on: what sends a request that may go twice to the next
	   server, rather than to the client */
	bool			 retry_error;	/* closed, or not HTTP/1.1,
						   before the head */
	bool			 retry_timeout;	/* no head in read_timeout */
	bool			 retry_status[100];	/* 500 to 599 */
	bool			 retry_any;	/* any of those three */
	int			 balance;	/* enum config_balance */
	int			 weighted;	/* a server's weight is not 1 */
	int			 has_backup;	/* a server is a backup */
	size_t			 max_idle;	/* pooled idle connections per server */
	double			 idle_timeout;	/* seconds one stays pooled;
						   0: no limit */
	size_t			 max_conns;	/* open per server; 0: no limit */
	uint64_t		 request_buffer;	/* body bytes held before a
						   server is asked; 0: half
						   stream_window */
	char			*health_check;	/* a path; NULL: none */
	char			*health_host;	/* its Host; NULL: the server's */
	double			 health_interval;	/* seconds */
	double			 health_timeout;	/* seconds */
	uint64_t		 health_fails;	/* in a row: unhealthy */
	uint64_t		 health_passes;	/* in a row: healthy again */
};

/* A field a route sets on a request or response: name in lowercase. */
struct config_header {
	char		*name;
	char		*value;		/* "": the field is removed */
	size_t		 namelen, valuelen;
};

struct config_headers {
	struct config_header	*v;
	size_t			 n;
};

/*
 * error_page: the body of qproxy's own answers of some statuses, from a
 * file read with the configuration. A file's bytes are kept once, for all
 * the statuses of its line.
 */
struct config_page_file {
	char		*body;
	size_t		 len;
	const char	*type;		/* Content-Type, from the file's name */
};

struct config_page {
	int				 status;
	const struct config_page_file	*file;
};

struct config_pages {
	struct config_page	*v;
	size_t			 n;
};

/*
 * A route's allow or deny, or a trusted_proxies entry: an address block,
 * or every client (all).
 */
struct config_acl {
	bool		 allow;
	bool		 all;
	int		 family;	/* AF_INET or AF_INET6, unless all */
	unsigned	 prefix;	/* bits */
	uint8_t		 addr[16];	/* the block's first address */
};

struct config_route {
	char		*name;
	int		 line;
	char		*host;		/* NULL: any; "*.example.com": suffix */
	char		*path_prefix;	/* NULL: any */
	char		*methods;	/* " GET HEAD "; NULL: any */
	struct config_headers match_headers;	/* header: all of them;
						   a NULL value: any */
	int		 strip_prefix;	/* path_prefix cut from the path sent */
	int		 access_log;	/* enum config_route_log */
	size_t		 max_body_size;	/* request body bytes; 0: no limit
					   (the global one, unless set) */
	size_t		 backend;	/* index into config.backends */
	/*
	 * return and redirect: qproxy answers with this status itself (0:
	 * the backend does); text is return's body (NULL: none) or
	 * redirect's URL, with $request_uri and $host still in it.
	 */
	int		 answer;
	bool		 redirect;
	char		*answer_text;
	struct config_headers set_request;	/* set_request_header */
	struct config_headers set_response;	/* set_response_header */
	struct config_pages error_pages;	/* before [global]'s */
	struct auth_users *auth;	/* auth_basic_file's; NULL: none */
	char		*auth_realm;
	struct config_acl *acl;		/* allow and deny, in file order */
	size_t		 nacl;
	int		 require_client_cert;	/* client_ca's, verified */
	int		 compress;	/* enum config_compress */
	struct acl_index *acl_index;	/* route.h; NULL: none */
	double		 request_rate;	/* all clients', a second; 0: none */
	uint64_t	 request_burst;	/* 0: a second's worth */
	double		 read_timeout;	/* seconds; 0: the backend's */
	double		 tunnel_timeout;	/* seconds; 0: the backend's */
};

/*
 * Where the lines of included files are: a line's number in the
 * configuration (its position, counted across every file as read) is
 * line + (pos - this pos) of files[file], for the last span at or
 * before it.
 */
struct config_span {
	int		 pos;
	size_t		 file;
	int		 line;
};

#define CONFIG_MAX_KEYS	112	/* keys of all kinds of section */
#define WORKERS_MAX	64	/* [global] workers */

/*
 * All of it is owned by the struct config and freed by config_free. Its
 * line numbers are positions across the included files: config_at
 * says which file and line each is.
 */
struct config {
	char			*path;
	char			**files;	/* path, then the included */
	size_t			 nfiles;
	struct config_span	*spans;		/* in the order of pos */
	size_t			 nspans;
	/*
	 * FNV-1a of every line read, the included files' in their place,
	 * and of where each file begins and ends: two reads of the file that
	 * got the same text have the same (a reload's workers each read it,
	 * and must have read what the supervisor did)
	 */
	uint64_t		 digest;
	int			 log_level;		/* enum log_level */
	double			 shutdown_timeout;	/* seconds */
	double			 idle_timeout;		/* seconds */
	double			 initial_rtt;		/* seconds */
	double			 batch_delay;		/* seconds; 0: never */
	unsigned int		 batch_busy;		/* percent of CPU */
	size_t			 stream_window;	/* bytes per stream */
	size_t			 connection_window;	/* bytes per connection */
	size_t			 response_buffer_size;	/* bytes per stream */
	size_t			 response_buffer_total;	/* all streams */
	size_t			 request_buffer_total;	/* all streams */
	size_t			 quic_buffer_total;	/* ngtcp2's, all conns */
	size_t			 max_body_size;	/* routes' default; 0: none */
	size_t			 max_header_size;	/* request or response head */
	size_t			 qpack_table_size;	/* bytes */
	size_t			 qpack_blocked_streams;
	uint64_t		 max_streams_bidi;	/* concurrent per connection */
	uint64_t		 max_connections;	/* in all */
	uint64_t		 max_conns_per_client;	/* 0: no limit */
	uint64_t		 max_handshakes;	/* in progress */
	uint64_t		 max_requests_per_conn;	/* then GOAWAY */
	uint64_t		 max_stream_resets;	/* per 10 s, per connection */
	double			 request_rate;	/* per client, per second; 0: none */
	uint64_t		 request_burst;	/* 0: a second's worth */
	double			 send_timeout;	/* seconds without progress */

	/* QUIC-LB connection IDs (cid.h); cid_sidlen 0: random ones */
	uint8_t			 cid_sid[15];
	size_t			 cid_sidlen;
	uint64_t		 cid_nonce_len;	/* resolved at load */
	uint64_t		 cid_config_id;
	char			*cid_key_file;	/* NULL: IDs in the clear */

	uint64_t		 workers;	/* processes (workers.h) */
	double			 worker_timeout;	/* seconds without a ping */

	char			*user;		/* NULL: keep the starting user */
	uid_t			 uid;		/* of user, when set */
	gid_t			 gid;
	char			*control_socket;
	char			*error_log;	/* "stderr" or a path */
	char			*access_log;	/* NULL (off), "stderr" or a path */
	int			 access_log_format;	/* enum access_format */
	char			*request_id_header;	/* lowercase; NULL: off */
	/* trusted_proxies: clients whose X-Forwarded-For, Forwarded stay */
	struct config_acl	*trusted;
	size_t			 ntrusted;
	struct acl_index	*trusted_index;	/* route.h; NULL: none */
	struct config_pages	 error_pages;
	double			 auth_check_rate;	/* password checks a
							   second */
	double			 auth_check_rate_client;	/* of those,
							   one client's */
	struct config_page_file	**page_files;	/* every error_page's */
	size_t			 npage_files;
	char			*secret_file;
	char			*state_file;	/* NULL: off */
	uint64_t		 retry_threshold;	/* unvalidated handshakes */
	int			 congestion_control;	/* enum config_cc */
	int			 aes_gcm_vaes;	/* enum config_vaes */
	char			*qlog_dir;	/* NULL: off */
	char			*keylog_file;	/* NULL: off */
	int			 compress;	/* routes' default */
	char			*compress_types;	/* " text/html text/css " */
	size_t			 compress_min_length;	/* bytes */
	uint64_t		 compress_level;	/* zlib's, 1 to 9 */
	size_t			 compress_memory_total;	/* all streams' */

	struct config_listener	*listeners;
	size_t			 nlisteners;
	struct config_backend	*backends;
	size_t			 nbackends;
	struct config_route	*routes;	/* in file order */
	size_t			 nroutes;
	struct route_index	*route_index;	/* route.h; NULL: none */
	int			 global_keyline[CONFIG_MAX_KEYS];	/* 0: unset */
};

/*
 * Reads and validates a configuration file. Every error is written to errs as
 * "file:line: message" (line 0 when the file cannot be read); then NULL is
 * returned. The result is complete: names resolved, references checked.
 */
struct config	*config_load(const char *path, FILE *errs);
void		 config_free(struct config *);
/*
 * "file:line" of a line number of the configuration (a position across
 * its files), for messages; in a static buffer, good until the fourth
 * call after.
 */
const char	*config_at(const struct config *, int line);
/* The inputs include's loop check looked at, counted (for tests). */
extern unsigned long config_inputs_looked;
/* The line of the file where [global] set key; 0 when the default holds. */
int		 config_global_line(const struct config *, const char *key);
/*
 * Whether a field of this name, in lowercase as HTTP/3 has them, is among
 * a route's set_request_header or set_response_header.
 */
int		 header_is_set(const struct config_headers *, const char *name,
		    size_t len);
/*
 * The error_page of a status: the route's (when not NULL), else the
 * global one; NULL when neither has one.
 */
const struct config_page_file *config_error_page(const struct config *,
		    const struct config_route *, int status);
/* What is allowed but likely not meant, each as one line to warn. */
void		 config_warnings(const struct config *,
		    void (*)(const char *, ...));

#endif
