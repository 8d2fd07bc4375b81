/* log.c: the error log, the access log and the TLS key log.
 *
 * The error log goes to stderr, which systemd sends to journald, or to a
 * file, where each line starts with an ISO 8601 UTC timestamp. Lines to
 * the journal start with their priority ("<4>"), which journald takes.
 * The access log takes one line per request, as text or JSON, to stderr
 * or a file.
 * The key log (keylog_file, for debugging) takes TLS secrets in the NSS
 * key log format, in a file only the service can read.
 * Every line is built in a buffer and written with a single write(2), so
 * lines from several writers never interleave. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <systemd/sd-daemon.h>

#include "bytes.h"
#include "clock.h"
#include "log.h"
#include "strbuf.h"

#define LOG_FILE_MODE	0640
/*
 * No symbolic link as the last component: qproxy opens its logs as root
 * and hands them to [global] user, who may write to their directory; a
 * link put there could have made root append to, and give away, any file.
 */
#define LOG_FILE_FLAGS	(O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | \
			    O_NOFOLLOW | O_NOCTTY)
#define KEYLOG_MODE	0600
/* A label, a 32-byte client random and a secret of up to 64 bytes, in hex. */
#define KEYLOG_LINE_MAX	256
/* Room for a timestamp (24 characters; gcc wants room for any int). */
#define LOG_TIME_SIZE	96

#define ACCESS_CLIENT_MAX	256
#define ACCESS_BACKEND_MAX	1024
#define ACCESS_FIELD_MAX	256	/* combined's user, referer, agent */
/* The fields after the path, as written: at most */
#define ACCESS_TAIL_MAX		(ACCESS_BACKEND_MAX + 1000)
_Static_assert(ACCESS_CLIENT_MAX + ACCESS_AUTHORITY_MAX + ACCESS_METHOD_MAX +
    2 * ACCESS_BACKEND_MAX + 1024 < ACCESS_LINE_MAX,
    "the path must keep room in an access log line");
/*
 * A pipe (standard error under Docker, a named pipe to a logger) takes a
 * write of PIPE_BUF bytes or fewer whole, but may put another process's
 * bytes into the middle of a longer one: the workers each write to the
 * pipe they have from the supervisor. A line for a pipe is kept to
 * PIPE_BUF bytes, its authority to ACCESS_PIPE_AUTHORITY_MAX; the path
 * takes what is left, at least 512 bytes less the timestamp and the
 * separators.
 */
#define ACCESS_PIPE_AUTHORITY_MAX	1024
_Static_assert(ACCESS_CLIENT_MAX + ACCESS_PIPE_AUTHORITY_MAX +
    ACCESS_METHOD_MAX + ACCESS_TAIL_MAX + 512 < PIPE_BUF,
    "the path must keep room in an access log line for a pipe");
/* Failed access log writes are reported at most this often, in seconds. */
#define ACCESS_WARN_INTERVAL	60

static int log_level = LOG_LEVEL_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };
/* The same levels as syslog priorities, for the journal. */
static const char *const level_prios[] = { SD_ERR, SD_WARNING, SD_INFO,
    SD_DEBUG };
/* Whether stderr is the journal: its lines start with their priority. */
static int	 err_journal;

/* The error log: -1 for stderr, else a file opened from err_path. */
static int	 err_fd = -1;
static char	*err_path;

/* The access log: -1 when off; STDERR_FILENO, or a file from acc_path. */
static int	 acc_fd = -1;
/* Its longest line, newline included, and authority: less for a pipe. */
static size_t	 acc_line_max = ACCESS_LINE_MAX;
static size_t	 acc_authority_max = ACCESS_AUTHORITY_MAX;
static char	*acc_path;
static int	 acc_format;	/* enum access_format */
/* The TLS key log: -1 when off, else a file from key_path. */
static int	 key_fd = -1;
static char	*key_path;
/* Who besides root and qproxy's own user may own it: [global] user. */
static uid_t	 key_user = (uid_t)-1;
static unsigned long long acc_errors;
static int	 acc_warned;
static time_t	 acc_warn_time;

/*
 * Whether stderr is the journal: systemd names the stream it gives a
 * service in JOURNAL_STREAM, as "DEV:INODE" (systemd.exec(5)). Anything
 * else, a terminal or a file or a pipe to another logger, is left without
 * "<N>" at the start of its lines.
 */
static int
log_stderr_is_journal(void)
{
	const char		*s = getenv("JOURNAL_STREAM");
	unsigned long long	 dev, ino;
	struct stat		 st;
	char			*end;

	if (s == NULL || fstat(STDERR_FILENO, &st) == -1)
		return 0;
	errno = 0;
	dev = strtoull(s, &end, 10);
	if (end == s || *end != ':' || errno != 0)
		return 0;
	s = end + 1;
	ino = strtoull(s, &end, 10);
	if (end == s || *end != '\0' || errno != 0)
		return 0;
	return dev == (unsigned long long)st.st_dev &&
	    ino == (unsigned long long)st.st_ino;
}

const char *
log_stderr_prio(int level)
{
	return err_journal ? level_prios[level] : "";
}

void
log_init(int level)
{
	log_level = level;
	setvbuf(stderr, NULL, _IOLBF, 0);
	err_journal = log_stderr_is_journal();
}

void
log_setlevel(int level)
{
	log_level = level;
}

int
log_getlevel(void)
{
	return log_level;
}

int
log_level_parse(const char *s)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *
log_level_name(int level)
{
	if (level < 0 || level > LOG_LEVEL_DEBUG)
		return "?";
	return level_names[level];
}

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 characters) and a NUL to buf. */
static void
log_fmt_time(char buf[LOG_TIME_SIZE], time_t sec, long msec)
{
	struct tm	tm;

	if (gmtime_r(&sec, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	snprintf(buf, LOG_TIME_SIZE, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, msec);
}

/* The Common Log Format's time, in UTC: 04/Dec/2026:22:49:30 +0000. */
static void
log_fmt_clf_time(char buf[LOG_TIME_SIZE], time_t sec)
{
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May",
	    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm	tm;

	if (gmtime_r(&sec, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	snprintf(buf, LOG_TIME_SIZE, "%02d/%s/%04d:%02d:%02d:%02d +0000",
	    tm.tm_mday, mon[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour,
	    tm.tm_min, tm.tm_sec);
}

/*
 * The files whose last write stopped within its line (a disk that filled
 * up): the next line there goes after a newline, so that it is whole and
 * not the end of the one cut short, which is lost.
 */
static int	 log_cut[4] = { -1, -1, -1, -1 };

static bool
log_cut_take(int fd)
{
	for (size_t i = 0; i < sizeof(log_cut) / sizeof(log_cut[0]); i++)
		if (log_cut[i] == fd) {
			log_cut[i] = -1;
			return true;
		}
	return false;
}

static void
log_cut_put(int fd)
{
	for (size_t i = 0; i < sizeof(log_cut) / sizeof(log_cut[0]); i++)
		if (log_cut[i] == -1 || log_cut[i] == fd) {
			log_cut[i] = fd;
			return;
		}
}

/* One write(2), retried only when a signal came before anything was
 * written; 0, or -1 with errno (ENOSPC for a short write). */
static int
log_write_line(int fd, const char *buf, size_t len)
{
	struct iovec iov[2] = { { (void *)(uintptr_t)"\n", 1 },
	    { (void *)(uintptr_t)buf, len } };
	bool cut = log_cut_take(fd);
	ssize_t	n;

	do
		n = writev(fd, iov + !cut, 2 - !cut);
	while (n == -1 && errno == EINTR);
	if (n == -1 || (cut && n == 0)) {
		if (cut)
			log_cut_put(fd);
		return -1;
	}
	n -= cut;
	if ((size_t)n != len) {
		if (n > 0)
			log_cut_put(fd);
		errno = ENOSPC;
		return -1;
	}
	return 0;
}

/* Put before every message: "worker 2: " in a worker, else nothing. */
static char log_prefix[32];

void
log_set_prefix(const char *prefix)
{
	snprintf(log_prefix, sizeof(log_prefix), "%s", prefix);
}

static void
log_vwrite(int level, int errnum, const char *fmt, va_list ap)
{
	char		msg[1024], line[1280], ts[LOG_TIME_SIZE];
	const char	*prio;
	struct timespec	now;
	size_t		plen = strlen(log_prefix);
	int		n;

	if (level > log_level)
		return;
	memcpy(msg, log_prefix, plen);
	vsnprintf(msg + plen, sizeof(msg) - plen, fmt, ap);
	if (err_fd == -1) {
		prio = log_stderr_prio(level);
		if (errnum)
			fprintf(stderr, "%sqproxy[%s]: %s: %s\n", prio,
			    level_names[level], msg, strerror(errnum));
		else
			fprintf(stderr, "%sqproxy[%s]: %s\n", prio,
			    level_names[level], msg);
		return;
	}

	clock_gettime(CLOCK_REALTIME, &now);
	log_fmt_time(ts, now.tv_sec, now.tv_nsec / 1000000);
	if (errnum)
		n = snprintf(line, sizeof(line), "%s qproxy[%s]: %s: %s\n", ts,
		    level_names[level], msg, strerror(errnum));
	else
		n = snprintf(line, sizeof(line), "%s qproxy[%s]: %s\n", ts,
		    level_names[level], msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* A line the file does not take goes to stderr instead. */
	if (log_write_line(err_fd, line, (size_t)n) == -1)
		(void)log_write_line(STDERR_FILENO, line, (size_t)n);
}

#define LOG_FN(name, level, with_errno)				\
void								\
name(const char *fmt, ...)					\
{								\
	int saved = errno;					\
	va_list ap;						\
	va_start(ap, fmt);					\
	log_vwrite(level, (with_errno) ? saved : 0, fmt, ap);	\
	va_end(ap);						\
	errno = saved;						\
}

static void
log_put(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, 0, fmt, ap);
	va_end(ap);
}

void
log_limited(struct log_limit *l, int level, const char *fmt, ...)
{
	char msg[1024];
	double now;
	int saved = errno;
	va_list ap;

	if (level > log_level)
		return;
	now = mono_now();
	if (l->last != 0 && now - l->last < 1.0) {
		l->held++;
		return;
	}
	l->last = now;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (l->held > 0)
		log_put(level, "%s (and %llu more like it since the last, not "
		    "shown)", msg, l->held);
	else
		log_put(level, "%s", msg);
	l->held = 0;
	errno = saved;
}

LOG_FN(log_err, LOG_LEVEL_ERROR, 1)
LOG_FN(log_errx, LOG_LEVEL_ERROR, 0)
LOG_FN(log_warn, LOG_LEVEL_WARN, 1)
LOG_FN(log_warnx, LOG_LEVEL_WARN, 0)
LOG_FN(log_info, LOG_LEVEL_INFO, 0)
LOG_FN(log_debug, LOG_LEVEL_DEBUG, 0)

void
fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}

/*
 * The key log's secrets are for root and qproxy's users only: a file
 * another user made in its place (in /tmp, say) would have been written to
 * as root, and read by that user whatever its mode; a FIFO of theirs, read
 * by them. A device (/dev/null) is root's.
 */
int
log_keylog_owner_ok(mode_t mode, uid_t owner, uid_t user)
{
	return S_ISCHR(mode) || owner == 0 || owner == geteuid() ||
	    owner == user;
}

/*
 * Opens path for appending with the given mode, not through a symbolic link
 * (ELOOP) and not a file with other hard links (EMLINK); the key log, not
 * a file of a user other than root, qproxy's or user (EPERM), a FIFO's
 * too. The descriptor, or -1 with errno.
 */
static int
log_file_fd(const char *path, mode_t mode, uid_t user)
{
	struct stat st;
	int	 fd, saved;

	if ((fd = open(path, LOG_FILE_FLAGS, mode)) == -1)
		return -1;
	if (fstat(fd, &st) == -1)
		goto fail;
	/*
	 * Nor a file with other names: for the same reason as a symbolic
	 * link, a hard link to a file of root's put in the log's place
	 * would have been appended to and given away.
	 */
	if (S_ISREG(st.st_mode) && st.st_nlink > 1) {
		errno = EMLINK;
		goto fail;
	}
	if (mode == KEYLOG_MODE &&
	    !log_keylog_owner_ok(st.st_mode, st.st_uid, user)) {
		errno = EPERM;
		goto fail;
	}
	/*
	 * An existing file keeps its mode: make it no wider than asked (a
	 * device such as /dev/null is left alone).
	 */
	if (mode == KEYLOG_MODE && S_ISREG(st.st_mode) &&
	    fchmod(fd, mode) == -1)
		goto fail;
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* Opens path (log_file_fd) and copies it; 0 with *fdp and *copyp set, or
 * -1 with errno. */
static int
log_file_open_mode(const char *path, mode_t mode, uid_t user, int *fdp,
    char **copyp)
{
	char	*copy;
	int	 fd;

	if ((fd = log_file_fd(path, mode, user)) == -1)
		return -1;
	if ((copy = strdup(path)) == NULL) {
		close(fd);
		errno = ENOMEM;
		return -1;
	}
	*fdp = fd;
	*copyp = copy;
	return 0;
}

int
log_file_prepare(struct log_file *lf, enum log_kind kind, const char *path,
    uid_t user)
{
	lf->fd = -1;
	lf->path = NULL;
	lf->user = user;
	if (path == NULL)
		return 0;
	if (strcmp(path, "stderr") == 0 && kind != LOG_KEYS) {
		if (kind == LOG_ACCESS)
			lf->fd = STDERR_FILENO;	/* the error log's -1 is stderr */
		return 0;
	}
	return log_file_open_mode(path, kind == LOG_KEYS ? KEYLOG_MODE :
	    LOG_FILE_MODE, user, &lf->fd, &lf->path);
}

/* Sizes the access log's lines for what acc_fd is: a pipe or not. */
static void
access_fit(void)
{
	struct stat	st;
	int		fifo = acc_fd != -1 && fstat(acc_fd, &st) == 0 &&
			    S_ISFIFO(st.st_mode);

	acc_line_max = fifo ? PIPE_BUF : ACCESS_LINE_MAX;
	acc_authority_max = fifo ? ACCESS_PIPE_AUTHORITY_MAX :
	    ACCESS_AUTHORITY_MAX;
}

void
log_file_install(struct log_file *lf, enum log_kind kind, int format)
{
	switch (kind) {
	case LOG_ERROR:
		if (err_fd != -1)
			close(err_fd);
		free(err_path);
		err_fd = lf->fd;
		err_path = lf->path;
		break;
	case LOG_ACCESS:
		access_log_close();
		acc_fd = lf->fd;
		acc_path = lf->path;
		acc_format = format;
		access_fit();
		break;
	case LOG_KEYS:
		keylog_close();
		key_fd = lf->fd;
		key_path = lf->path;
		key_user = lf->user;
		break;
	}
	lf->fd = -1;
	lf->path = NULL;
}

void
log_file_discard(struct log_file *lf)
{
	if (lf->path != NULL)
		close(lf->fd);
	free(lf->path);
	lf->fd = -1;
	lf->path = NULL;
}

static int
log_file_set(enum log_kind kind, const char *path, int format)
{
	struct log_file lf;

	if (log_file_prepare(&lf, kind, path, (uid_t)-1) == -1)
		return -1;
	log_file_install(&lf, kind, format);
	return 0;
}

int
log_open(const char *path)
{
	return log_file_set(LOG_ERROR, path, 0);
}

int
access_log_open(const char *path, int format)
{
	return log_file_set(LOG_ACCESS, path, format);
}

int
access_log_enabled(void)
{
	return acc_fd != -1;
}

int
access_log_combined(void)
{
	return acc_fd != -1 && acc_format == ACCESS_COMBINED;
}

void
access_log_close(void)
{
	if (acc_path != NULL) {
		(void)log_cut_take(acc_fd);
		close(acc_fd);
	}
	free(acc_path);
	acc_path = NULL;
	acc_fd = -1;
}

int
keylog_open(const char *path)
{
	return log_file_set(LOG_KEYS, path, 0);
}

void
keylog_close(void)
{
	if (key_fd != -1)
		close(key_fd);
	free(key_path);
	key_path = NULL;
	key_fd = -1;
}

int
keylog_enabled(void)
{
	return key_fd != -1;
}

void
keylog_write(const char *label, const uint8_t *client_random, size_t rlen,
    const uint8_t *secret, size_t slen)
{
	static const char hex[] = "0123456789abcdef";
	static struct log_limit lim;
	char	 line[KEYLOG_LINE_MAX];
	size_t	 n, i;
	ssize_t	 w;

	if (key_fd == -1 || strlen(label) + 2 * (rlen + slen) + 3 > sizeof(line))
		return;
	n = strlen(label);
	memcpy(line, label, n);
	line[n++] = ' ';
	for (i = 0; i < rlen; i++) {
		line[n++] = hex[client_random[i] >> 4];
		line[n++] = hex[client_random[i] & 15];
	}
	line[n++] = ' ';
	for (i = 0; i < slen; i++) {
		line[n++] = hex[secret[i] >> 4];
		line[n++] = hex[secret[i] & 15];
	}
	line[n++] = '\n';
	/* once a second at most: a full disk would have one a secret */
	if ((w = write(key_fd, line, n)) != (ssize_t)n)
		log_limited(&lim, LOG_LEVEL_WARN, "key log %s: %s", key_path,
		    w == -1 ? strerror(errno) : "short write");
}

/* Reopens one file by its path; the old descriptor stays on failure. */
static int
log_file_reopen(int *fdp, const char *path, mode_t mode)
{
	int	fd;

	if ((fd = log_file_fd(path, mode, key_user)) == -1)
		return -1;
	(void)log_cut_take(*fdp);
	close(*fdp);
	*fdp = fd;
	return 0;
}

const char *
log_file_strerror(int errnum)
{
	if (errnum == EMLINK)
		return "the file has other hard links, which is refused";
	return strerror(errnum);
}

int
log_files_chown(uid_t uid, gid_t gid)
{
	const int fds[] = { err_path != NULL ? err_fd : -1,
	    acc_path != NULL ? acc_fd : -1, key_path != NULL ? key_fd : -1 };
	const char *paths[] = { err_path, acc_path, key_path };
	struct stat st;

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (fds[i] == -1)
			continue;
		if (fstat(fds[i], &st) == -1)
			return -1;
		/* files only: not /dev/null, should a log go there */
		if (!S_ISREG(st.st_mode))
			continue;
		/*
		 * Only what is ours to give: a link made since the open
		 * (log_file_fd), or a file of another user's, stays as it is.
		 */
		if (st.st_nlink > 1) {
			log_warnx("%s: %s; not given to uid %ld", paths[i],
			    log_file_strerror(EMLINK), (long)uid);
			continue;
		}
		if (st.st_uid != geteuid() && st.st_uid != uid) {
			log_warnx("%s: owned by uid %ld; not given to uid %ld",
			    paths[i], (long)st.st_uid, (long)uid);
			continue;
		}
		if (fchown(fds[i], uid, gid) == -1)
			return -1;
	}
	return 0;
}

/* One log file reopened, or its failure logged and put in why. */
static int
log_reopen_one(int *fdp, const char *what, const char *path, mode_t mode,
    struct strbuf *why)
{
	int	saved;

	if (path == NULL || log_file_reopen(fdp, path, mode) == 0)
		return 0;
	saved = errno;
	log_warnx("log_reopen: %s %s: %s", what, path,
	    log_file_strerror(saved));
	if (why != NULL)
		strbuf_printf(why, "%s %s: %s\n", what, path,
		    log_file_strerror(saved));
	errno = saved;
	return -1;
}

int
log_reopen(struct strbuf *why)
{
	int	rv = 0, saved = 0;

	if (log_reopen_one(&err_fd, "error log", err_path, LOG_FILE_MODE,
	    why) == -1) {
		saved = errno;
		rv = -1;
	}
	if (log_reopen_one(&acc_fd, "access log", acc_path, LOG_FILE_MODE,
	    why) == -1) {
		saved = errno;
		rv = -1;
	}
	access_fit();
	if (log_reopen_one(&key_fd, "key log", key_path, KEYLOG_MODE,
	    why) == -1) {
		saved = errno;
		rv = -1;
	}
	if (rv == -1)
		errno = saved;
	return rv;
}

/* Escapes s for the text format into dst, at most cap bytes, whole escapes
 * only: bytes below 0x20 or above 0x7e, '"', '\\' and, when esc_space, ' '
 * become \xHH. Returns the length written; NULL or "" give "-". */
static size_t
access_esc_text(char *dst, size_t cap, const char *s, int esc_space)
{
	static const char	 hex[] = "0123456789ABCDEF";
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 n = 0;

	if (s == NULL || *s == '\0') {
		if (cap > 0)
			dst[n++] = '-';
		return n;
	}
	for (; *p != '\0'; p++) {
		if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\' ||
		    (esc_space && *p == ' ')) {
			if (cap - n < 4)
				break;
			dst[n++] = '\\';
			dst[n++] = 'x';
			dst[n++] = hex[*p >> 4];
			dst[n++] = hex[*p & 0xf];
		} else {
			if (cap - n < 1)
				break;
			dst[n++] = (char)*p;
		}
	}
	return n;
}

/* Escapes s as the inside of a JSON string into dst, at most cap bytes,
 * whole escapes and whole UTF-8 sequences only: '"' and '\\' get a
 * backslash, control characters and DEL become \u00XX, and so does each
 * byte that is not part of valid UTF-8 (as the code point of its value);
 * the C1 controls, U+2028 and U+2029 become \uXXXX (bytes_json_escaped).
 * Returns the length written; NULL gives "". */
static size_t
access_esc_json(char *dst, size_t cap, const char *s)
{
	static const char	 hex[] = "0123456789abcdef";
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 n = 0, len;
	uint32_t		 cp;

	if (s == NULL)
		return 0;
	while (*p != '\0') {
		if (*p == '"' || *p == '\\') {
			if (cap - n < 2)
				break;
			dst[n++] = '\\';
			dst[n++] = (char)*p++;
		} else if (*p >= 0x20 && *p < 0x7f) {
			if (cap - n < 1)
				break;
			dst[n++] = (char)*p++;
		} else if (*p >= 0x80 && (len = bytes_utf8_len(p)) != 0) {
			cp = bytes_utf8_cp(p, len);
			if (bytes_json_escaped(cp)) {
				if (cap - n < 6)
					break;
				memcpy(dst + n, "\\u", 2);
				dst[n + 2] = hex[cp >> 12 & 0xf];
				dst[n + 3] = hex[cp >> 8 & 0xf];
				dst[n + 4] = hex[cp >> 4 & 0xf];
				dst[n + 5] = hex[cp & 0xf];
				n += 6;
			} else {
				if (cap - n < len)
					break;
				memcpy(dst + n, p, len);
				n += len;
			}
			p += len;
		} else {
			if (cap - n < 6)
				break;
			memcpy(dst + n, "\\u00", 4);
			dst[n + 4] = hex[*p >> 4];
			dst[n + 5] = hex[*p & 0xf];
			n += 6;
			p++;
		}
	}
	return n;
}

static size_t
access_esc(char *dst, size_t cap, const char *s, int esc_space)
{
	if (acc_format == ACCESS_JSON)
		return access_esc_json(dst, cap, s);
	return access_esc_text(dst, cap, s, esc_space);
}

/* Appends the string s to buf, if it fits. */
static void
access_put(char *buf, size_t cap, size_t *pos, const char *s)
{
	size_t	len = strlen(s);

	if (cap - *pos >= len) {
		memcpy(buf + *pos, s, len);
		*pos += len;
	}
}

/* Appends a field escaped, after the text before it, with at most max
 * bytes for the field. */
static void
access_put_field(char *buf, size_t cap, size_t *pos, const char *before,
    const char *s, size_t max, int esc_space)
{
	access_put(buf, cap, pos, before);
	if (max > cap - *pos)
		max = cap - *pos;
	*pos += access_esc(buf + *pos, max, s, esc_space);
}

/* A JSON member ",\"key\":\"s\"", s escaped; null when s is NULL. */
static void
access_put_string(char *buf, size_t cap, size_t *pos, const char *key,
    const char *s, size_t max)
{
	char	 before[32];

	snprintf(before, sizeof(before), ",\"%s\":%s", key,
	    s != NULL ? "\"" : "null");
	if (s == NULL) {
		access_put(buf, cap, pos, before);
		return;
	}
	access_put_field(buf, cap, pos, before, s, max, 1);
	access_put(buf, cap, pos, "\"");
}

static void
access_write_failed(void)
{
	struct timespec	now;

	acc_errors++;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (acc_warned && now.tv_sec - acc_warn_time < ACCESS_WARN_INTERVAL)
		return;
	acc_warned = 1;
	acc_warn_time = now.tv_sec;
	log_warn("access log %s: write failed, %llu line%s lost so far",
	    acc_path != NULL ? acc_path : "stderr", acc_errors,
	    acc_errors == 1 ? "" : "s");
}

void
access_log_write(const struct access_entry *e)
{
	static char	line[ACCESS_LINE_MAX];
	char		tail[ACCESS_TAIL_MAX], num[256];
	char		ts[LOG_TIME_SIZE], status[16];
	const size_t	cap = acc_line_max - 1;		/* room for '\n' */
	size_t		pos = 0, tlen = 0, pathmax;
	double		t = e->time, d = e->duration, sec;
	long		msec;

	if (acc_fd == -1)
		return;

	if (!(t >= 0 && t < 253402300800.0))		/* year 10000 */
		t = 0;
	sec = (double)(long long)t;
	msec = (long)((t - sec) * 1000 + 0.5);
	if (msec >= 1000) {
		sec += 1;
		msec -= 1000;
	}
	log_fmt_time(ts, (time_t)sec, msec);
	if (!(d >= 0))
		d = 0;
	else if (d > 1e12)
		d = 1e12;

	if (e->status == 0)	/* none sent */
		snprintf(status, sizeof(status), "%s",
		    acc_format == ACCESS_JSON ? "null" : "-");
	else
		snprintf(status, sizeof(status), "%d", e->status);

	/* The fields after the path, first, to know what is left for it. */
	if (acc_format == ACCESS_COMBINED) {
		if (e->resp_bytes == 0)
			snprintf(num, sizeof(num), " HTTP/3\" %s - \"", status);
		else
			snprintf(num, sizeof(num), " HTTP/3\" %s %llu \"",
			    status, e->resp_bytes);
		access_put_field(tail, sizeof(tail), &tlen, num, e->referer,
		    ACCESS_FIELD_MAX, 0);
		access_put_field(tail, sizeof(tail), &tlen, "\" \"",
		    e->user_agent, ACCESS_FIELD_MAX, 0);
		access_put(tail, sizeof(tail), &tlen, "\"");
	} else if (acc_format == ACCESS_JSON) {
		snprintf(num, sizeof(num), "\",\"status\":%s,"
		    "\"request_bytes\":%llu,\"response_bytes\":%llu,"
		    "\"duration\":%.3f,\"backend\":\"", status, e->req_bytes,
		    e->resp_bytes, d);
		access_put_field(tail, sizeof(tail), &tlen, num, e->backend,
		    ACCESS_BACKEND_MAX, 1);
		snprintf(num, sizeof(num), "\",\"quic_version\":\"0x%x\"",
		    e->quic_version);
		access_put(tail, sizeof(tail), &tlen, num);
		access_put_string(tail, sizeof(tail), &tlen, "route", e->route,
		    256);
		access_put_string(tail, sizeof(tail), &tlen, "user", e->user,
		    256);
		access_put_string(tail, sizeof(tail), &tlen, "client_cert",
		    e->client_cert, 400);
		if (e->backend_time >= 0 && e->backend_time < 1e9)
			snprintf(num, sizeof(num), ",\"backend_time\":%.3f",
			    e->backend_time);
		else
			snprintf(num, sizeof(num), ",\"backend_time\":null");
		access_put(tail, sizeof(tail), &tlen, num);
		if (e->gzip)
			snprintf(num, sizeof(num), ",\"gzip_bytes\":%llu",
			    e->gzip_bytes);
		else
			snprintf(num, sizeof(num), ",\"gzip_bytes\":null");
		access_put(tail, sizeof(tail), &tlen, num);
		if (e->request_id != NULL)
			access_put_field(tail, sizeof(tail), &tlen,
			    ",\"request_id\":\"", e->request_id, 64, 1);
		access_put(tail, sizeof(tail), &tlen,
		    e->request_id != NULL ? "\"}" : "}");
	} else {
		snprintf(num, sizeof(num), "\" %s %llu %llu %.3f ", status,
		    e->req_bytes, e->resp_bytes, d);
		access_put_field(tail, sizeof(tail), &tlen, num, e->backend,
		    ACCESS_BACKEND_MAX, 1);
		snprintf(num, sizeof(num), " 0x%x", e->quic_version);
		access_put(tail, sizeof(tail), &tlen, num);
		if (e->request_id != NULL)
			access_put_field(tail, sizeof(tail), &tlen, " ",
			    e->request_id, 64, 1);
	}

	if (acc_format == ACCESS_COMBINED) {
		access_put_field(line, cap, &pos, "", e->client,
		    ACCESS_CLIENT_MAX, 1);
		access_put_field(line, cap, &pos, " - ", e->user,
		    ACCESS_FIELD_MAX, 1);
		log_fmt_clf_time(ts, (time_t)sec);
		access_put(line, cap, &pos, " [");
		access_put(line, cap, &pos, ts);
		access_put_field(line, cap, &pos, "] \"", e->method,
		    ACCESS_METHOD_MAX, 1);
		access_put(line, cap, &pos, " ");
	} else if (acc_format == ACCESS_JSON) {
		access_put(line, cap, &pos, "{\"time\":\"");
		access_put(line, cap, &pos, ts);
		access_put_field(line, cap, &pos, "\",\"client\":\"",
		    e->client, ACCESS_CLIENT_MAX, 1);
		access_put_field(line, cap, &pos, "\",\"authority\":\"",
		    e->authority, acc_authority_max, 1);
		access_put_field(line, cap, &pos, "\",\"method\":\"",
		    e->method, ACCESS_METHOD_MAX, 1);
		access_put(line, cap, &pos, "\",\"path\":\"");
	} else {
		access_put(line, cap, &pos, ts);
		access_put_field(line, cap, &pos, " ", e->client,
		    ACCESS_CLIENT_MAX, 1);
		access_put_field(line, cap, &pos, " ", e->authority,
		    acc_authority_max, 1);
		access_put_field(line, cap, &pos, " \"", e->method,
		    ACCESS_METHOD_MAX, 1);
		access_put(line, cap, &pos, " ");
	}
	pathmax = cap - pos - tlen;
	pos += access_esc(line + pos, pathmax, e->path, 0);
	memcpy(line + pos, tail, tlen);
	pos += tlen;
	line[pos++] = '\n';

	if (log_write_line(acc_fd, line, pos) == -1)
		access_write_failed();
}
