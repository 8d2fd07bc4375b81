/* secret.c: the secret file. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "secret.h"

static int
secret_create(const char *path, uint8_t out[SECRET_LEN], char *err,
    size_t errlen)
{
	ssize_t n;
	int fd;

	if (getrandom(out, SECRET_LEN, 0) != SECRET_LEN) {
		snprintf(err, errlen, "getrandom: %s", strerror(errno));
		return -1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd == -1) {
		snprintf(err, errlen, "cannot create %s: %s", path,
		    strerror(errno));
		return -1;
	}
	n = write(fd, out, SECRET_LEN);
	if (n != SECRET_LEN || fsync(fd) == -1) {
		snprintf(err, errlen, "cannot write %s: %s", path,
		    n == -1 ? strerror(errno) : "short write");
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

/*
 * Who may own it: whoever may write it chooses the keys of tokens, of
 * stateless resets and of session tickets. Root, qproxy's own user, or
 * the user it becomes (who holds the keys then anyway).
 */
static bool
owner_ok(uid_t owner, uid_t user)
{
	return owner == 0 || owner == geteuid() || owner == user;
}

static int
secret_read(const char *path, uid_t user, uint8_t out[SECRET_LEN],
    bool create, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd;

	/* not to wait on a FIFO's writer: it is refused below */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1 && errno == ENOENT)
		return create ? secret_create(path, out, err, errlen) : 0;
	if (fd == -1) {
		snprintf(err, errlen, "cannot open %s: %s", path,
		    strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", path);
		goto fail;
	}
	if (!owner_ok(st.st_uid, user)) {
		snprintf(err, errlen, "%s belongs to user %u; it must be "
		    "root's or qproxy's", path, (unsigned)st.st_uid);
		goto fail;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen, "%s is open to group or others "
		    "(mode %03o); it must be 0600", path,
		    (unsigned)(st.st_mode & 0777));
		goto fail;
	}
	n = read(fd, out, SECRET_LEN);
	if (n != SECRET_LEN) {
		snprintf(err, errlen, "%s: %s", path, n == -1 ?
		    strerror(errno) : "shorter than 32 bytes");
		goto fail;
	}
	close(fd);
	return 0;
fail:
	close(fd);
	explicit_bzero(out, SECRET_LEN);
	return -1;
}

int
secret_load(const char *path, uid_t user, uint8_t out[SECRET_LEN],
    char *err, size_t errlen)
{
	return secret_read(path, user, out, true, err, errlen);
}

int
secret_check(const char *path, uid_t user, char *err, size_t errlen)
{
	uint8_t secret[SECRET_LEN];
	int rv;

	rv = secret_read(path, user, secret, false, err, errlen);
	explicit_bzero(secret, sizeof(secret));
	return rv;
}
