/*
 * timeshift.so - preloaded into qproxy or a client, it moves the wall
 * clock (time, gettimeofday, clock_gettime of CLOCK_REALTIME) TIMESHIFT
 * seconds ahead; CLOCK_MONOTONIC is left alone. For what depends on the
 * time of day across processes, such as the age of a session ticket,
 * without waiting for it. With TIMESHIFT_FILE, the shift is read from
 * that file (a number of seconds) at each call instead, so that a test
 * can step the clock of a process that runs, as NTP or a VM's resume
 * would. make tests builds it, as sendshim.so.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/time.h>
#include <time.h>

static long
shift(void)
{
	const char *s = getenv("TIMESHIFT"), *path = getenv("TIMESHIFT_FILE");
	char buf[32];
	ssize_t n;
	int fd;

	/* open and read, not stdio: no allocation inside a clock call */
	if (path != NULL && (fd = open(path, O_RDONLY | O_CLOEXEC)) != -1) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = '\0';
			return atol(buf);
		}
	}
	return s != NULL ? atol(s) : 0;
}

int
clock_gettime(clockid_t id, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	int rv;

	if (real == NULL)
		real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT,
		    "clock_gettime");
	rv = real(id, ts);
	if (rv == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		ts->tv_sec += shift();
	return rv;
}

int
gettimeofday(struct timeval *tv, void *tz)
{
	struct timespec ts;

	/* (tv is nonnull in glibc's declaration) */
	(void)tz;
	if (clock_gettime(CLOCK_REALTIME, &ts) == -1)
		return -1;
	tv->tv_sec = ts.tv_sec;
	tv->tv_usec = ts.tv_nsec / 1000;
	return 0;
}

time_t
time(time_t *t)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (t != NULL)
		*t = ts.tv_sec;
	return ts.tv_sec;
}
