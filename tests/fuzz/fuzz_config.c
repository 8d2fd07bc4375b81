/*
 * fuzz_config.c: the configuration file parser. The input is the file:
 * config_load reads a path, so the bytes go into a memfd that is opened
 * again through /proc/self/fd. A file that loads must be complete: what
 * config.h promises about a returned struct config is checked.
 */
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <dlfcn.h>
#include <errno.h>
#include <glob.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "fuzz.h"

/*
 * Backend servers may be host names, which config.c resolves. A fuzzer
 * must not send what it makes up to the DNS: this getaddrinfo, which takes
 * the place of the C library's in this program, resolves numeric
 * addresses only, and "localhost".
 */
int	getaddrinfo(const char *, const char *, const struct addrinfo *,
	    struct addrinfo **);

int
getaddrinfo(const char *node, const char *service,
    const struct addrinfo *hints, struct addrinfo **res)
{
	static int (*real)(const char *, const char *,
	    const struct addrinfo *, struct addrinfo **);
	struct addrinfo h;

	if (real == NULL &&
	    (*(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo")) == NULL)
		abort();
	if (hints != NULL)
		h = *hints;
	else {
		memset(&h, 0, sizeof(h));
		h.ai_family = AF_UNSPEC;
	}
	h.ai_flags |= AI_NUMERICHOST;
	if (node != NULL && strcmp(node, "localhost") == 0)
		node = "127.0.0.1";
	return real(node, service, &h, res);
}

/*
 * include: the files a pattern matches are read. A fuzzer may write any
 * pattern: this glob, which takes the place of the C library's here, finds
 * files under /proc/self/fd/ only, none elsewhere on the machine: the
 * input itself (for files that include themselves), and descriptors that
 * are not regular files (pipes, sockets, /dev/null), which config.c
 * refuses. Not the process's other regular files: libFuzzer's log and, in
 * a merge, its control file, which grow as it runs (a merge stopped for
 * good on one input of "include = *" lines, each a read of them, whose
 * thousands of errors a sanitizer's realloc copied anew each time).
 */
static int	 memfd = -1;
static char	 path[64];

int	glob(const char *, int, int (*)(const char *, int), glob_t *);

int
glob(const char *pattern, int flags, int (*errfunc)(const char *, int),
    glob_t *g)
{
	static int (*real)(const char *, int, int (*)(const char *, int),
	    glob_t *);
	struct stat st;
	size_t kept = 0;
	char *p;
	int rc;

	if (real == NULL &&
	    (*(void **)&real = dlsym(RTLD_NEXT, "glob")) == NULL)
		abort();
	if (strncmp(pattern, "/proc/self/fd/", 14) != 0 ||
	    strstr(pattern, "..") != NULL) {
		memset(g, 0, sizeof(*g));
		return GLOB_NOMATCH;
	}
	if ((rc = real(pattern, flags, errfunc, g)) != 0)
		return rc;
	/* glibc's globfree frees each path and the array */
	for (size_t i = 0; i < g->gl_pathc; i++) {
		p = g->gl_pathv[g->gl_offs + i];
		if (strcmp(p, path) == 0 || stat(p, &st) == -1 ||
		    !S_ISREG(st.st_mode))
			g->gl_pathv[g->gl_offs + kept++] = p;
		else
			free(p);
	}
	g->gl_pathc = kept;
	g->gl_pathv[g->gl_offs + kept] = NULL;
	if (kept == 0) {
		globfree(g);
		memset(g, 0, sizeof(*g));
		return GLOB_NOMATCH;
	}
	return 0;
}

static FILE	*errs;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init(LOG_LEVEL_ERROR);
	if ((memfd = memfd_create("fuzz_config", MFD_CLOEXEC)) == -1) {
		perror("memfd_create");
		exit(1);
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	/* the messages are formatted, then dropped */
	if ((errs = fopen("/dev/null", "we")) == NULL) {
		perror("/dev/null");
		exit(1);
	}
	return 0;
}

static void
write_all(const uint8_t *data, size_t len)
{
	ssize_t n;

	if (ftruncate(memfd, 0) == -1 || lseek(memfd, 0, SEEK_SET) == -1) {
		perror("memfd");
		exit(1);
	}
	while (len > 0) {
		if ((n = write(memfd, data, len)) == -1) {
			if (errno == EINTR)
				continue;
			perror("memfd write");
			exit(1);
		}
		data += n;
		len -= (size_t)n;
	}
}

static void
check_config(const struct config *cfg)
{
	size_t i;

	FUZZ_CHECK(cfg->path != NULL);
	FUZZ_CHECK(cfg->nlisteners > 0);
	FUZZ_CHECK(cfg->control_socket == NULL ||
	    cfg->control_socket[0] == '/');
	FUZZ_CHECK(cfg->error_log != NULL);
	FUZZ_CHECK(cfg->secret_file != NULL && cfg->secret_file[0] == '/');
	FUZZ_CHECK(cfg->idle_timeout > 0);
	FUZZ_CHECK(cfg->stream_window >= 4096);
	FUZZ_CHECK(cfg->max_header_size >= 1024);
	FUZZ_CHECK(cfg->max_streams_bidi >= 1);
	for (i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		FUZZ_CHECK(l->name != NULL && l->name[0] != '\0');
		FUZZ_CHECK(l->naddrs > 0 && l->addrs != NULL);
		/* every certificate has its key, in pairs */
		FUZZ_CHECK(l->ncerts > 0 && l->ncerts == l->nkeys);
		for (size_t j = 0; j < l->ncerts; j++)
			FUZZ_CHECK(l->certs[j].certificate != NULL &&
			    l->certs[j].private_key != NULL);
		FUZZ_CHECK(l->early_data_methods != NULL);
		FUZZ_CHECK(l->retry >= CONFIG_RETRY_AUTO &&
		    l->retry <= CONFIG_RETRY_NEVER);
	}
	for (i = 0; i < cfg->nbackends; i++) {
		const struct config_backend *b = &cfg->backends[i];

		FUZZ_CHECK(b->name != NULL && b->name[0] != '\0');
		FUZZ_CHECK(b->nservers > 0 && b->servers != NULL);
		FUZZ_CHECK(b->connect_timeout > 0 && b->read_timeout > 0);
		for (size_t j = 0; j < b->nservers; j++)
			FUZZ_CHECK(b->servers[j].text != NULL);
	}
	for (i = 0; i < cfg->nroutes; i++) {
		const struct config_route *r = &cfg->routes[i];

		FUZZ_CHECK(r->name != NULL);
		FUZZ_CHECK(r->backend < cfg->nbackends);
		FUZZ_CHECK(r->path_prefix == NULL || r->path_prefix[0] == '/');
		if (r->host != NULL) {
			/* stored lowercase: route.c compares that way */
			for (const char *c = r->host; *c != '\0'; c++)
				FUZZ_CHECK(!(*c >= 'A' && *c <= 'Z'));
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg;

	/* inih and the reader work line by line; a few pages is plenty */
	if (size > 64 * 1024)
		return 0;
	write_all(data, size);
	if ((cfg = config_load(path, errs)) != NULL) {
		check_config(cfg);
		config_free(cfg);
	}
	return 0;
}
