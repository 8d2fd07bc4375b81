/* secret.c: the secret file. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "bytes.h"
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

/*
 * Opens a file of keys: a regular file, of root, qproxy's user or the
 * user it becomes, open to no one else. -1 with errno ENOENT when missing.
 */
static int
secret_open(const char *path, uid_t user, char *err, size_t errlen)
{
	struct stat st;
	int fd;

	/* not to wait on a FIFO's writer: it is refused below */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1) {
		int e = errno;

		snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
		errno = e;
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
	return fd;
fail:
	close(fd);
	errno = EPERM;
	return -1;
}

static int
secret_read(const char *path, uid_t user, uint8_t out[SECRET_LEN],
    bool create, char *err, size_t errlen)
{
	uint8_t more;
	ssize_t n;
	int fd;

	if ((fd = secret_open(path, user, err, errlen)) == -1)
		return errno == ENOENT ? (create ?
		    secret_create(path, out, err, errlen) : 0) : -1;
	n = read(fd, out, SECRET_LEN);
	if (n != SECRET_LEN) {
		snprintf(err, errlen, "%s: %s", path, n == -1 ?
		    strerror(errno) : "shorter than 32 bytes");
		goto fail;
	}
	/*
	 * A longer file is not one qproxy wrote: 64 hexadecimal digits
	 * would have given keys of their first 32 characters, silently.
	 */
	if ((n = read(fd, &more, 1)) != 0) {
		snprintf(err, errlen, "%s: %s", path, n == -1 ?
		    strerror(errno) : "longer than 32 bytes (remove it, and "
		    "qproxy makes one)");
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

int
secret_load_hex(const char *path, uid_t user, uint8_t *out, size_t len,
    char *err, size_t errlen)
{
	char text[130];
	ssize_t n;
	int fd;

	if (2 * len + 3 > sizeof(text)) {
		snprintf(err, errlen, "%s: key too long", path);
		return -1;
	}
	if ((fd = secret_open(path, user, err, errlen)) == -1)
		return -1;
	n = read(fd, text, 2 * len + 2);
	close(fd);
	if (n == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (!((size_t)n == 2 * len || ((size_t)n == 2 * len + 1 &&
	    text[2 * len] == '\n')) || !bytes_from_hex(text, len, out)) {
		explicit_bzero(text, sizeof(text));
		explicit_bzero(out, len);
		snprintf(err, errlen, "%s: expected a key of %zu hexadecimal "
		    "digits on one line", path, 2 * len);
		return -1;
	}
	explicit_bzero(text, sizeof(text));
	return 0;
}
