/*
 * nomem.so: allocations that fail on demand, for tests of what qproxy
 * does without memory. Preloaded (LD_PRELOAD) into qproxy with NOMEM_FILE
 * naming a control file, it passes every allocation on until the process
 * gets SIGURG (which it otherwise ignores, and which qproxy never asks
 * for), so that start-up is not affected. At each SIGURG the shim reads
 * the control file, whose first line is one of
 *   GEN nth N K		fail the N-th to the (N+K-1)-th allocation
 *			counted from this signal (N from 1)
 *   GEN random SEED PPM MAX	fail each allocation with probability
 *			PPM / 1000000, from a generator seeded with SEED,
 *			at most MAX of them (0: no bound)
 *   GEN off		fail none
 * where GEN is a number the test chooses. It then writes, to the same
 * path with ".report" added, "GEN ALLOCS FAILED\n": the generation it
 * took and, for the one it ended, the allocations counted and failed
 * (a test waits for its GEN there to know the signal was taken).
 * malloc, calloc, realloc (not to size 0), posix_memalign,
 * aligned_alloc, memalign, strdup and strndup are counted and may fail
 * (ENOMEM); free never fails. With NOMEM_TRACE set, each failure writes
 * a backtrace to stderr.
 *
 * Under AddressSanitizer the shim goes first in LD_PRELOAD with
 * ASAN_OPTIONS=verify_asan_link_order=0: its functions then come before
 * ASan's, which they call through dlsym(RTLD_NEXT), so ASan still sees
 * every allocation. ASan also intercepts strdup and strndup without
 * calling malloc, hence their own wrappers here. A lone process's:
 * workers each count for themselves.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum mode { OFF, NTH, RANDOM };

static void	*(*next_malloc)(size_t);
static void	*(*next_calloc)(size_t, size_t);
static void	*(*next_realloc)(void *, size_t);
static void	 (*next_free)(void *);
static int	 (*next_posix_memalign)(void **, size_t, size_t);
static void	*(*next_aligned_alloc)(size_t, size_t);
static void	*(*next_memalign)(size_t, size_t);
static char	*(*next_strdup)(const char *);
static char	*(*next_strndup)(const char *, size_t);

static volatile sig_atomic_t mode = OFF;
static unsigned long long nth, span, seed, ppm, most;
static unsigned long long allocs, failed;
static int	tracing;
/* nested: an allocation made inside another one (strdup's malloc) */
static __thread int inside __attribute__((tls_model("initial-exec")));

/* dlsym may allocate before the next calloc is known: from here then. */
static _Alignas(16) char early[4096];
static size_t	early_used;

static void *
early_alloc(size_t n)
{
	void *p;

	n = (n + 15) & ~(size_t)15;
	if (n > sizeof(early) - early_used)
		return NULL;
	p = early + early_used;
	early_used += n;
	return p;
}

static int
is_early(const void *p)
{
	return (const char *)p >= early && (const char *)p < early + sizeof(early);
}

static void
resolve(void)
{
	static int resolving;

	if (next_free != NULL || resolving)
		return;
	resolving = 1;
	next_malloc = dlsym(RTLD_NEXT, "malloc");
	next_calloc = dlsym(RTLD_NEXT, "calloc");
	next_realloc = dlsym(RTLD_NEXT, "realloc");
	next_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
	next_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
	next_memalign = dlsym(RTLD_NEXT, "memalign");
	next_strdup = dlsym(RTLD_NEXT, "strdup");
	next_strndup = dlsym(RTLD_NEXT, "strndup");
	next_free = dlsym(RTLD_NEXT, "free");
	resolving = 0;
}

/* splitmix64: the same failures for the same seed, on any libc. */
static uint64_t
next_random(void)
{
	uint64_t z = (seed += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Whether this allocation fails; counts it. */
static int
fails(void)
{
	int no = 0;
	void *frames[32];
	int n;

	if (mode == OFF || inside)
		return 0;
	allocs++;
	if (mode == NTH)
		no = allocs >= nth && allocs - nth < span;
	else if (mode == RANDOM)
		no = (most == 0 || failed < most) &&
		    next_random() % 1000000 < ppm;
	if (!no)
		return 0;
	failed++;
	if (tracing) {
		inside = 1;
		n = backtrace(frames, 32);
		write(2, "nomem: allocation failed\n", 25);
		backtrace_symbols_fd(frames, n, 2);
		inside = 0;
	}
	errno = ENOMEM;
	return 1;
}

static const char *
number(const char *s, unsigned long long *v)
{
	while (*s == ' ' || *s == '\t')
		s++;
	*v = 0;
	while (*s >= '0' && *s <= '9')
		*v = *v * 10 + (unsigned long long)(*s++ - '0');
	return s;
}

static int
word(const char **s, const char *w)
{
	size_t len = strlen(w);

	while (**s == ' ' || **s == '\t')
		(*s)++;
	if (strncmp(*s, w, len) != 0)
		return 0;
	*s += len;
	return 1;
}

/* Writes down "GEN ALLOCS FAILED\n" (async-signal-safe). */
static void
report(unsigned long long gen)
{
	const char *path = getenv("NOMEM_FILE");
	char rpath[4096], line[80], digits[24];
	unsigned long long v[3] = { gen, allocs, failed };
	size_t len = 0, plen;
	int fd;

	if (path == NULL || (plen = strlen(path)) + 8 > sizeof(rpath))
		return;
	memcpy(rpath, path, plen);
	memcpy(rpath + plen, ".report", 8);
	for (int i = 0; i < 3; i++) {
		int d = 0;

		do
			digits[d++] = (char)('0' + v[i] % 10);
		while ((v[i] /= 10) != 0);
		while (d > 0)
			line[len++] = digits[--d];
		line[len++] = i < 2 ? ' ' : '\n';
	}
	if ((fd = open(rpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) == -1)
		return;
	(void)!write(fd, line, len);
	close(fd);
}

static void
on_signal(int sig)
{
	const char *path = getenv("NOMEM_FILE");
	char buf[256];
	const char *s;
	unsigned long long gen, a, b, c;
	ssize_t n;
	int fd, saved = errno;

	(void)sig;
	if (path == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		goto out;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		goto out;
	buf[n] = '\0';
	s = number(buf, &gen);
	mode = OFF;
	if (word(&s, "nth")) {
		s = number(s, &a);
		number(s, &b);
		nth = a;
		span = b;
		report(gen);
		allocs = failed = 0;
		mode = NTH;
	} else if (word(&s, "random")) {
		s = number(s, &a);
		s = number(s, &b);
		number(s, &c);
		seed = a;
		ppm = b;
		most = c;
		report(gen);
		allocs = failed = 0;
		mode = RANDOM;
	} else
		report(gen);
 out:
	errno = saved;
}

__attribute__((constructor)) static void
nomem_init(void)
{
	struct sigaction sa;
	void *frames[1];

	resolve();
	tracing = getenv("NOMEM_TRACE") != NULL;
	if (tracing)
		backtrace(frames, 1);	/* loads libgcc now, not when failing */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigfillset(&sa.sa_mask);
	sigaction(SIGURG, &sa, NULL);
}

void *
malloc(size_t size)
{
	void *p;

	if (next_malloc == NULL) {
		resolve();
		if (next_malloc == NULL)
			return early_alloc(size);
	}
	if (fails())
		return NULL;
	inside++;
	p = next_malloc(size);
	inside--;
	return p;
}

void *
calloc(size_t n, size_t size)
{
	void *p;

	if (next_calloc == NULL) {
		resolve();
		if (next_calloc == NULL)
			return early_alloc(n * size);	/* early[] is zeroed */
	}
	if (fails())
		return NULL;
	inside++;
	p = next_calloc(n, size);
	inside--;
	return p;
}

void *
realloc(void *old, size_t size)
{
	void *p;

	if (is_early(old)) {
		p = malloc(size);
		if (p != NULL)
			memcpy(p, old, size < early_used ? size : early_used);
		return p;
	}
	if (next_realloc == NULL)
		resolve();
	if (size != 0 && fails())
		return NULL;
	inside++;
	p = next_realloc(old, size);
	inside--;
	return p;
}

void
free(void *p)
{
	if (p == NULL || is_early(p))
		return;
	if (next_free == NULL)
		resolve();
	next_free(p);
}

int
posix_memalign(void **out, size_t align, size_t size)
{
	int r;

	if (next_posix_memalign == NULL)
		resolve();
	if (fails())
		return ENOMEM;
	inside++;
	r = next_posix_memalign(out, align, size);
	inside--;
	return r;
}

void *
aligned_alloc(size_t align, size_t size)
{
	void *p;

	if (next_aligned_alloc == NULL)
		resolve();
	if (fails())
		return NULL;
	inside++;
	p = next_aligned_alloc(align, size);
	inside--;
	return p;
}

void *
memalign(size_t align, size_t size)
{
	void *p;

	if (next_memalign == NULL)
		resolve();
	if (fails())
		return NULL;
	inside++;
	p = next_memalign(align, size);
	inside--;
	return p;
}

char *
strdup(const char *s)
{
	char *p;

	if (next_strdup == NULL)
		resolve();
	if (fails())
		return NULL;
	inside++;
	p = next_strdup(s);
	inside--;
	return p;
}

char *
strndup(const char *s, size_t n)
{
	char *p;

	if (next_strndup == NULL)
		resolve();
	if (fails())
		return NULL;
	inside++;
	p = next_strndup(s, n);
	inside--;
	return p;
}
