/* file.c: a small file read whole. */
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "file.h"

int
file_read(const char *path, size_t max, char **bufp, size_t *lenp)
{
	int fd, rv, saved;

	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) == -1)
		return -1;
	rv = file_read_fd(fd, max, bufp, lenp);
	saved = errno;
	close(fd);
	errno = saved;
	return rv;
}

int
file_read_fd(int fd, size_t max, char **bufp, size_t *lenp)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int saved;

	if (fstat(fd, &st) == -1)
		goto fail;
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		errno = S_ISREG(st.st_mode) ? EFBIG : EINVAL;
		goto fail;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL)
		goto fail;
	while (len < (size_t)st.st_size) {
		n = read(fd, buf + len, (size_t)st.st_size - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;	/* shortened while read */
			goto fail;
		}
		len += (size_t)n;
	}
	buf[len] = '\0';
	*bufp = buf;
	*lenp = len;
	return 0;
fail:
	saved = errno;
	if (buf != NULL) {
		/* a key's first bytes, say: not left in freed memory */
		explicit_bzero(buf, len);
		free(buf);
	}
	errno = saved;
	return -1;
}

void
file_error(char *err, size_t errlen, const char *path, size_t max)
{
	if (errno == EFBIG)
		snprintf(err, errlen, "\"%s\": larger than %zu%s", path,
		    max % (1024 * 1024) == 0 ? max / (1024 * 1024) :
		    max / 1024, max % (1024 * 1024) == 0 ? "m" : "k");
	else if (errno == EINVAL)
		snprintf(err, errlen, "\"%s\": not a regular file", path);
	else
		snprintf(err, errlen, "cannot open \"%s\": %s", path,
		    strerror(errno));
}
