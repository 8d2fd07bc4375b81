/*
 * gznomem.so: zlib's deflate out of memory for a flush, for tests of what
 * qproxy does when what gzip holds cannot be given out. Preloaded into
 * qproxy (which links zlib as a shared library) with $GZNOMEM_FILE naming
 * a file: while it exists, a deflate call with Z_SYNC_FLUSH fails as a
 * bufq_reserve would without memory, errno ENOMEM (what a malloc that
 * fails leaves), the stream unchanged. The other calls are passed on.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include <zlib.h>

typedef int	deflate_fn(z_streamp, int);

int
deflate(z_streamp strm, int flush)
{
	static deflate_fn *next;
	const char *path = getenv("GZNOMEM_FILE");

	if (flush == Z_SYNC_FLUSH && path != NULL && access(path, F_OK) == 0) {
		errno = ENOMEM;
		return Z_MEM_ERROR;
	}
	if (next == NULL)
		next = (deflate_fn *)dlsym(RTLD_NEXT, "deflate");
	return next(strm, flush);
}
