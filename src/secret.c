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

static int
secret_read(const char *path, uint8_t out[SECRET_LEN], bool create,
    char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
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
secret_load(const char *path, uint8_t out[SECRET_LEN], char *err,
    size_t errlen)
{
	return secret_read(path, out, true, err, errlen);
}

int
secret_check(const char *path, char *err, size_t errlen)
{
	uint8_t secret[SECRET_LEN];
	int rv;

	rv = secret_read(path, secret, false, err, errlen);
	explicit_bzero(secret, sizeof(secret));
	return rv;
}
