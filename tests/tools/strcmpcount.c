/*
 * strcmpcount.c: preloaded into qproxy by test_config. Counts the calls
 * qproxy makes to strcmp(3), and at exit writes how many to the file
 * $STRCMPCOUNT. A test can so tell a lookup that walks every name from
 * one that does not, by the work and not by the time it takes.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long long calls;

int
strcmp(const char *a, const char *b)
{
	const unsigned char *x = (const unsigned char *)a;
	const unsigned char *y = (const unsigned char *)b;

	__atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
	while (*x != '\0' && *x == *y) {
		x++;
		y++;
	}
	return *x - *y;
}

__attribute__((destructor)) static void
strcmpcount_write(void)
{
	const char *path = getenv("STRCMPCOUNT");
	char line[32];
	int fd, n;

	if (path == NULL)
		return;
	n = snprintf(line, sizeof(line), "%llu\n", calls);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1)
		return;
	if (write(fd, line, (size_t)n) != n)
		perror("strcmpcount");
	close(fd);
}
