/*
 * h3nomem.so: nghttp3 out of memory for the response heads of one
 * status, for tests of what qproxy does when a head cannot be submitted.
 * Preloaded into qproxy (which links nghttp3 as a shared library) with
 * $H3NOMEM_FILE naming a file: while it exists and begins with a
 * three-digit status, nghttp3_conn_submit_response and
 * nghttp3_conn_submit_info fail with NGHTTP3_ERR_NOMEM, as nghttp3 does
 * when an allocation fails, for a head whose :status is that one. The
 * file is read at each call, so that a test can start qproxy first (its
 * readiness probe is answered 404). The other heads are passed on.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nghttp3/nghttp3.h>

typedef int	submit_fn(nghttp3_conn *, int64_t, const nghttp3_nv *, size_t,
		    const nghttp3_data_reader *);
typedef int	info_fn(nghttp3_conn *, int64_t, const nghttp3_nv *, size_t);

/* Whether the head's :status is the one in $H3NOMEM_FILE. */
static int
refused(const nghttp3_nv *nva, size_t nvlen)
{
	const char *path = getenv("H3NOMEM_FILE");
	char s[3];
	int fd;
	ssize_t n;

	if (path == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return 0;
	n = read(fd, s, sizeof(s));
	close(fd);
	if (n != 3)
		return 0;
	for (size_t i = 0; i < nvlen; i++)
		if (nva[i].namelen == 7 &&
		    memcmp(nva[i].name, ":status", 7) == 0)
			return nva[i].valuelen == 3 &&
			    memcmp(nva[i].value, s, 3) == 0;
	return 0;
}

int
nghttp3_conn_submit_response(nghttp3_conn *conn, int64_t stream_id,
    const nghttp3_nv *nva, size_t nvlen, const nghttp3_data_reader *dr)
{
	static submit_fn *next;

	if (refused(nva, nvlen))
		return NGHTTP3_ERR_NOMEM;
	if (next == NULL)
		next = (submit_fn *)dlsym(RTLD_NEXT,
		    "nghttp3_conn_submit_response");
	return next(conn, stream_id, nva, nvlen, dr);
}

int
nghttp3_conn_submit_info(nghttp3_conn *conn, int64_t stream_id,
    const nghttp3_nv *nva, size_t nvlen)
{
	static info_fn *next;

	if (refused(nva, nvlen))
		return NGHTTP3_ERR_NOMEM;
	if (next == NULL)
		next = (info_fn *)dlsym(RTLD_NEXT, "nghttp3_conn_submit_info");
	return next(conn, stream_id, nva, nvlen);
}
