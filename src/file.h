/*
 * file.h: a small file read whole: certificates and keys, error pages, a
 * route's users. Opened without waiting (a FIFO named in place of a file
 * does not hang the caller) and read to the size it had when looked at.
 */
#ifndef QPROXY_FILE_H
#define QPROXY_FILE_H

#include <stddef.h>

/*
 * A regular file of at most max bytes, into a buffer from malloc with a
 * NUL after its len bytes. 0, or -1 with errno: EINVAL for a file that is
 * not a regular one, EFBIG for one larger than max, EIO for one that
 * shrank while it was read, or the system's.
 */
int	file_read(const char *path, size_t max, char **buf, size_t *len);
/* The same, from a descriptor open for reading, which stays open. */
int	file_read_fd(int fd, size_t max, char **buf, size_t *len);
/*
 * Why file_read failed, from its errno, for a message: "cannot open
 * \"path\": ...", "\"path\": not a regular file" or "\"path\": larger
 * than 64k" (max in k, or m when whole megabytes).
 */
void	file_error(char *err, size_t errlen, const char *path, size_t max);

#endif
