/* state.c: the state a restart keeps. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "config.h"
#include "file.h"
#include "log.h"
#include "state.h"
#include "strbuf.h"
#include "upstream.h"

int
state_prepare(const char *path, uid_t uid, gid_t gid, char *err,
    size_t errlen)
{
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd == -1) {
		if (errno == EEXIST)
			return 0;
		snprintf(err, errlen, "cannot create \"%s\": %s", path,
		    strerror(errno));
		return -1;
	}
	if (uid != (uid_t)-1 && fchown(fd, uid, gid) == -1) {
		snprintf(err, errlen, "cannot give \"%s\" to user %u: %s",
		    path, (unsigned)uid, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

/*
 * One line, without its newline: 1 for a server disabled, 0 for a comment
 * or a blank line, -1 for one not understood (or past the list's room).
 */
static int
state_line(char *line)
{
	char *backend, *server, *end = line + strlen(line);

	/* a CRLF's CR, and blanks left by a hand */
	while (end > line && (end[-1] == '\r' || end[-1] == ' ' ||
	    end[-1] == '\t'))
		*--end = '\0';
	if (line[0] == '#' || line[0] == '\0')
		return 0;
	if (strncmp(line, "disabled ", 9) != 0)
		return -1;
	backend = line + 9;
	if ((server = strchr(backend, ' ')) == NULL || server == backend ||
	    server[1] == '\0')
		return -1;
	*server++ = '\0';
	if (upstream_disabled(backend, server))
		return 0;	/* twice */
	return upstream_set_disabled(backend, server, true) == 0 ? 1 : -1;
}

size_t
state_load(const char *path, uid_t uid)
{
	struct stat st;
	char *text, *line, *next, err[512];
	size_t len, n = 0;
	int fd, lineno = 0, rv;

	/* what is checked is what is read: no link followed, one name */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1) {
		if (errno != ENOENT)
			log_warn("state_file: \"%s\": not read, so no server "
			    "is disabled", path);
		return 0;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_nlink != 1 || (st.st_uid != 0 && st.st_uid != geteuid() &&
	    st.st_uid != uid) || (st.st_mode & (S_IWGRP | S_IWOTH))) {
		log_warnx("state_file: \"%s\": not read, so no server is "
		    "disabled: it must be a regular file of one name that only "
		    "root or qproxy's user may write", path);
		close(fd);
		return 0;
	}
	rv = file_read_fd(fd, STATE_MAX, &text, &len);
	if (rv == -1)
		file_error(err, sizeof(err), path, STATE_MAX);	/* its errno */
	close(fd);
	if (rv == -1) {
		log_warnx("state_file: %s: not read, so no server is "
		    "disabled", err);
		return 0;
	}
	for (line = text; line < text + len; line = next + 1) {
		lineno++;
		if ((next = memchr(line, '\n', len - (size_t)(line - text))) ==
		    NULL)
			next = text + len;
		*next = '\0';
		if (strlen(line) != (size_t)(next - line) ||
		    (rv = state_line(line)) == -1)
			log_warnx("state_file: %s:%d: not understood, left out",
			    path, lineno);
		else
			n += (size_t)rv;
	}
	free(text);
	return n;
}

/* All of text to fd, then to the disk; fd closed either way. */
static int
write_all(int fd, const char *text, size_t len)
{
	ssize_t w;
	int saved;

	while (len > 0) {
		if ((w = write(fd, text, len)) == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		text += w;
		len -= (size_t)w;
	}
	if (fsync(fd) == -1)
		goto fail;
	return close(fd);
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* The directory path is in, into dir; false if it does not fit. */
static bool
dir_of(const char *path, char *dir, size_t size)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL || (size_t)(slash - path) >= size)
		return false;
	snprintf(dir, size, "%.*s", slash == path ? 1 : (int)(slash - path),
	    path);
	return true;
}

/* The rename of a new file into path, to the disk too. */
static void
sync_dir(const char *path)
{
	char dir[4096];
	int fd;

	if (!dir_of(path, dir, sizeof(dir)))
		return;
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		(void)fsync(fd);
		close(fd);
	}
}

int
state_save(const char *path, char *err, size_t errlen)
{
	struct strbuf out;
	const char *backend, *server;
	char tmp[4096];
	int fd, rv = -1;

	strbuf_init(&out, STATE_MAX);
	strbuf_printf(&out, "# qproxy's state, written by qproxy: the "
	    "servers qproxyctl disabled\n");
	for (size_t i = 0; (backend = upstream_disabled_at(i, &server)) !=
	    NULL; i++)
		strbuf_printf(&out, "disabled %s %s\n", backend, server);
	if (out.nomem) {
		/* never a list with a server left out */
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	if (out.truncated) {
		snprintf(err, errlen, "more than %dk", STATE_MAX / 1024);
		goto done;
	}
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new", path) >=
	    sizeof(tmp)) {
		snprintf(err, errlen, "\"%s\": path too long", path);
		goto done;
	}
	/* a new file of qproxy's own, not one left there by another */
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd != -1) {
		if (write_all(fd, strbuf_str(&out), out.len) == -1 ||
		    rename(tmp, path) == -1) {
			snprintf(err, errlen, "cannot write \"%s\": %s", tmp,
			    strerror(errno));
			unlink(tmp);
			goto done;
		}
		sync_dir(path);
		rv = 0;
		goto done;
	}
	if (errno != EACCES) {
		snprintf(err, errlen, "cannot create \"%s\": %s", tmp,
		    strerror(errno));
		goto done;
	}
	/* a directory of root's: over the file state_prepare made */
	if ((fd = open(path, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC)) ==
	    -1 || write_all(fd, strbuf_str(&out), out.len) == -1) {
		snprintf(err, errlen, "cannot write \"%s\": %s", path,
		    strerror(errno));
		goto done;
	}
	rv = 0;
done:
	strbuf_free(&out);
	return rv;
}

/* Whether uid owns the file, or the directory it would be made in. */
static bool
user_may_write(const char *path, uid_t uid)
{
	char dir[4096];
	struct stat st;

	if (lstat(path, &st) == 0 && st.st_uid == uid)
		return true;
	return dir_of(path, dir, sizeof(dir)) && stat(dir, &st) == 0 &&
	    st.st_uid == uid;
}

void
state_start(const struct config *cfg)
{
	bool becomes = cfg->user != NULL && geteuid() == 0;
	char err[512];
	size_t n;

	if (cfg->state_file == NULL)
		return;
	if (becomes && state_prepare(cfg->state_file, cfg->uid, cfg->gid,
	    err, sizeof(err)) == -1)
		log_warnx("state_file: %s: qproxyctl disable and enable will "
		    "not be kept across a restart", err);
	else if (becomes && !user_may_write(cfg->state_file, cfg->uid))
		log_warnx("state_file: \"%s\": neither it nor its directory is "
		    "user %s's: qproxyctl disable and enable will not be kept "
		    "across a restart", cfg->state_file, cfg->user);
	n = state_load(cfg->state_file, becomes ? cfg->uid : geteuid());
	if (n > 0)
		log_info("state_file: %zu server%s disabled, as before the "
		    "restart", n, n == 1 ? "" : "s");
}

void
state_keep(const struct config *cfg, struct strbuf *out)
{
	char err[512];

	if (cfg->state_file == NULL ||
	    state_save(cfg->state_file, err, sizeof(err)) == 0)
		return;
	log_warnx("state_file: %s: a restart will not keep the servers "
	    "disabled", err);
	if (out != NULL)
		strbuf_printf(out, "not kept across a restart: state_file: "
		    "%s\n", err);
}

bool
state_moved(const struct config *old, const struct config *cfg)
{
	return cfg->state_file != NULL && (old->state_file == NULL ||
	    strcmp(old->state_file, cfg->state_file) != 0);
}
