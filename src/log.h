/* log.h: the error log (stderr, with levels). */
#ifndef QPROXY_LOG_H
#define QPROXY_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct strbuf;

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

#define QP_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Also looks at whether stderr is the journal (JOURNAL_STREAM). */
void	log_init(int level);
/* Text put before every message of the error log ("worker 2: "). */
void	log_set_prefix(const char *);
/* What a line to stderr at that level starts with: "<3>" to the journal. */
const char *log_stderr_prio(int level);
void	log_setlevel(int level);
int	log_getlevel(void);
/* Parses "error", "warn", "info", "debug"; -1 when unknown. */
int	log_level_parse(const char *);
const char *log_level_name(int);

/* log_warn and log_err append strerror(errno); the x variants do not. */
void	log_err(const char *, ...) QP_PRINTF(1, 2);
void	log_errx(const char *, ...) QP_PRINTF(1, 2);
void	log_warn(const char *, ...) QP_PRINTF(1, 2);
void	log_warnx(const char *, ...) QP_PRINTF(1, 2);
void	log_info(const char *, ...) QP_PRINTF(1, 2);
void	log_debug(const char *, ...) QP_PRINTF(1, 2);
/*
 * For what a client or a backend can cause once per request or stream: at
 * most one line a second from each place (its struct log_limit, zeroed);
 * those held back are counted, and the next line says how many.
 */
struct log_limit {
	double			 last;		/* CLOCK_MONOTONIC seconds */
	unsigned long long	 held;
};
void	log_limited(struct log_limit *, int level, const char *, ...)
	    QP_PRINTF(3, 4);
/* Start-up only: log and exit(1). */
void	fatal(const char *, ...) QP_PRINTF(1, 2) __attribute__((noreturn));
void	fatalx(const char *, ...) QP_PRINTF(1, 2) __attribute__((noreturn));

#define log_debug_enabled() (log_getlevel() >= LOG_LEVEL_DEBUG)

/* The error log goes to stderr, or to path; 0, or -1 with errno. */
int	log_open(const char *path);

/*
 * A reload opens its log files first and installs them only once the new
 * configuration stands: a file that cannot be opened refuses the reload
 * and leaves every log as it was.
 */
enum log_kind { LOG_ERROR, LOG_ACCESS, LOG_KEYS };
struct log_file {
	int	 fd;		/* -1: stderr (error log) or off */
	char	*path;		/* NULL: not a file of ours */
	uid_t	 user;		/* [global] user's, or -1 */
};
/*
 * Opens path for kind (NULL: off, or stderr for the error log); 0, or -1
 * with errno. A key log that exists must be root's, qproxy's or user's
 * ((uid_t)-1: none), else EPERM.
 */
int	log_file_prepare(struct log_file *, enum log_kind, const char *path,
	    uid_t user);
/*
 * Whether a key log of this owner and type may be written: a device
 * (/dev/null), or a file or FIFO of root's, qproxy's or user's ((uid_t)-1:
 * none). For log_file_prepare and for qproxy -t alike.
 */
int	log_keylog_owner_ok(mode_t mode, uid_t owner, uid_t user);
/* Makes it the log of its kind, closing the one before; json: access log. */
void	log_file_install(struct log_file *, enum log_kind, int format);
void	log_file_discard(struct log_file *);
/*
 * SIGUSR1, qproxyctl reopen: reopens the error, access and key log files by
 * their names (logrotate moved them). 0, or -1 with errno, each failure
 * logged and, when why is not NULL, put in it as a line ("access log
 * PATH: reason"); a file that failed keeps its old descriptor.
 */
int	log_reopen(struct strbuf *why);
/* Gives the log files (regular files: not stderr, not a device) to uid:gid,
 * but for one with other hard links or of another user's (warned about);
 * 0, or -1 with errno. */
int	log_files_chown(uid_t uid, gid_t gid);
/* strerror, but for the errno of a log file refused for its hard links. */
const char *log_file_strerror(int errnum);

/* One line per request. The longest, its newline included: */
#define ACCESS_LINE_MAX		16384
/*
 * Caps on the escaped fields other than the path, which takes the rest
 * (client and backend: log.c's). A field never shows more bytes of its
 * value than its cap.
 */
#define ACCESS_AUTHORITY_MAX	4096
#define ACCESS_METHOD_MAX	256

/* access_log_format */
enum access_format {
	ACCESS_TEXT,
	ACCESS_JSON,
	ACCESS_COMBINED,	/* NCSA combined, as Apache's and nginx's */
};

struct access_entry {
	double		 time;		/* wall clock, seconds since the epoch */
	const char	*client;	/* address */
	const char	*authority;
	const char	*method;
	const char	*path;
	int		 status;	/* 0: reset before a status */
	unsigned long long req_bytes, resp_bytes;	/* body bytes */
	double		 duration;	/* seconds */
	const char	*backend;	/* server as configured, or "-" */
	unsigned	 quic_version;
	const char	*request_id;	/* NULL: request_id_header is off */
	/* JSON only: the route that took it, the user its auth_basic_file
	   let in, the certificate the client showed (client_ca), the seconds
	   its backend took to the response head (NULL, negative: none) */
	const char	*route;
	const char	*user;
	const char	*client_cert;	/* client_cert_header's value */
	double		 backend_time;
	/* the body's bytes as gzip made them, when it was given gzip */
	bool		 gzip;
	unsigned long long gzip_bytes;
	/* combined only (and the user): NULL, none */
	const char	*referer;
	const char	*user_agent;
};

/* path NULL: off; "stderr"; or a file. 0, or -1 with errno. */
int	access_log_open(const char *path, int format);
/* Whether access_log_write writes anything: callers skip gathering it. */
int	access_log_enabled(void);
/* Whether it writes the combined format (which wants more of a request). */
int	access_log_combined(void);
void	access_log_write(const struct access_entry *);
void	access_log_close(void);

/*
 * keylog_file: TLS secrets in the NSS key log format, so that captures can
 * be decrypted while debugging. path NULL: off. The file is made mode 0600.
 * 0, or -1 with errno.
 */
int	keylog_open(const char *path);
void	keylog_close(void);
int	keylog_enabled(void);
void	keylog_write(const char *label, const uint8_t *client_random,
	    size_t rlen, const uint8_t *secret, size_t slen);

#endif
