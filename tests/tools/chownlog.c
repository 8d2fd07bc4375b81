/*
 * chownlog.c: preloaded into qproxy by test_ops. Each chown(2), lchown,
 * fchownat and fchown it makes is passed on, and a line saying it, the
 * file (an fchown's by its descriptor's link in /proc) and the owner,
 * appended to the file $CHOWNLOG: "lchown /run/x.sock 65534 65534". A test
 * can so tell which files qproxy gave away by their path.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static void
note(const char *call, const char *path, uid_t uid, gid_t gid)
{
	const char *log = getenv("CHOWNLOG");
	char line[4200];
	int fd, n, saved = errno;

	if (log == NULL)
		return;
	n = snprintf(line, sizeof(line), "%s %s %d %d\n", call, path,
	    (int)uid, (int)gid);
	if (n > 0 && (size_t)n < sizeof(line) &&
	    (fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	    0600)) != -1) {
		if (write(fd, line, (size_t)n) != n)
			perror("chownlog");
		close(fd);
	}
	errno = saved;
}

int
chown(const char *path, uid_t uid, gid_t gid)
{
	int (*next)(const char *, uid_t, gid_t) =
	    (int (*)(const char *, uid_t, gid_t))dlsym(RTLD_NEXT, "chown");

	note("chown", path, uid, gid);
	return next(path, uid, gid);
}

int
lchown(const char *path, uid_t uid, gid_t gid)
{
	int (*next)(const char *, uid_t, gid_t) =
	    (int (*)(const char *, uid_t, gid_t))dlsym(RTLD_NEXT, "lchown");

	note("lchown", path, uid, gid);
	return next(path, uid, gid);
}

int
fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags)
{
	int (*next)(int, const char *, uid_t, gid_t, int) =
	    (int (*)(int, const char *, uid_t, gid_t, int))dlsym(RTLD_NEXT,
	    "fchownat");

	note("fchownat", path, uid, gid);
	return next(dirfd, path, uid, gid, flags);
}

int
fchown(int fd, uid_t uid, gid_t gid)
{
	int (*next)(int, uid_t, gid_t) =
	    (int (*)(int, uid_t, gid_t))dlsym(RTLD_NEXT, "fchown");
	char link[64], path[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((n = readlink(link, path, sizeof(path) - 1)) == -1)
		n = 0;
	path[n] = '\0';
	note("fchown", path, uid, gid);
	return next(fd, uid, gid);
}
