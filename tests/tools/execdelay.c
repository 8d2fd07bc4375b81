/*
 * execdelay.c: preloaded into qproxy by test_upgrade. In the child of
 * qproxyctl upgrade (an exec whose environment has QPROXY_UPGRADE), it
 * writes the child's id to the file $EXECDELAY_PIDFILE and waits a second
 * before the exec: the time between fork and exec, in which a signal to
 * the child is the new process's, made long enough to send one.
 *
 * With $EXECDELAY_WORKER_SLEEP seconds, in a new supervisor of workers
 * (started with QPROXY_UPGRADE_WORKERS, which qproxy unsets as it starts:
 * read here before), its second worker waits that long as it is forked:
 * the first runs meanwhile, while the workers before still read.
 *
 * With $EXECDELAY_RESTART_SLEEP as "N:S", a supervisor that was not
 * started by an upgrade has each worker it forks after its first N (one
 * started again) wait S seconds as it is forked, before it serves: the
 * time a test needs to stop it (SIGSTOP) at its start, whatever the load.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <unistd.h>

extern char **environ;

static unsigned worker_sleep;	/* s, in a new supervisor of workers */
static unsigned restart_after;	/* forks, in a first supervisor */
static unsigned restart_sleep;	/* s, for each fork after those */

__attribute__((constructor)) static void
init(void)
{
	const char *s = getenv("EXECDELAY_WORKER_SLEEP");
	const char *r = getenv("EXECDELAY_RESTART_SLEEP");

	if (getenv("QPROXY_UPGRADE_WORKERS") != NULL) {
		if (s != NULL)
			worker_sleep = (unsigned)atoi(s);
	} else if (r != NULL && strchr(r, ':') != NULL) {
		restart_after = (unsigned)atoi(r);
		restart_sleep = (unsigned)atoi(strchr(r, ':') + 1);
	}
}

typedef pid_t (*fork_fn)(void);

pid_t
fork(void)
{
	fork_fn real = (fork_fn)dlsym(RTLD_NEXT, "fork");
	static unsigned forks;
	unsigned k = forks++;
	pid_t pid = real();

	if (pid == 0 && k == 1 && worker_sleep > 0)
		sleep(worker_sleep);
	if (pid == 0 && k >= restart_after && restart_sleep > 0)
		sleep(restart_sleep);
	return pid;
}

static void
delay(char *const envp[])
{
	const char *pf = getenv("EXECDELAY_PIDFILE");
	struct timespec ts = { 1, 0 };
	char buf[32], tmp[4096];
	int fd, n, up = 0;

	for (size_t i = 0; envp != NULL && envp[i] != NULL; i++)
		if (strncmp(envp[i], "QPROXY_UPGRADE=", 15) == 0)
			up = 1;
	if (!up || pf == NULL)
		return;
	/* whole or not at all: written aside, then renamed */
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	(void)snprintf(tmp, sizeof(tmp), "%s.tmp", pf);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644)) != -1) {
		if (write(fd, buf, (size_t)n) == n)
			(void)rename(tmp, pf);
		close(fd);
	}
	/* through the signals that come meanwhile */
	while (nanosleep(&ts, &ts) == -1)
		;
}

typedef int (*execve_fn)(const char *, char *const[], char *const[]);

int
execve(const char *path, char *const argv[], char *const envp[])
{
	execve_fn real = (execve_fn)dlsym(RTLD_NEXT, "execve");

	delay(envp);
	return real(path, argv, envp);
}

int
execv(const char *path, char *const argv[])
{
	execve_fn real = (execve_fn)dlsym(RTLD_NEXT, "execve");

	delay(environ);
	return real(path, argv, environ);
}
