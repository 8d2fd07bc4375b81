/*
 * compress.c: gzip of response bodies with zlib.
 *
 * A stream's memory is zlib's own (its window and hash tables), allocated
 * through cz_alloc so that all of it is counted; a stream is begun only
 * when what it will take fits under the limit. A body of known length gets
 * a window no larger than it: a 2 KB page takes about 16 KB, not 268 KB.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

#include <zlib.h>

#include "bufq.h"
#include "bytes.h"
#include "compress.h"

#define CZ_WBITS_MIN	9	/* zlib's smallest window for deflate */
#define CZ_WBITS_MAX	15
#define CZ_GZIP		16	/* added to windowBits: a gzip wrapper */
/* deflate_state and the gzip header's: beside window and tables */
#define CZ_STATE	8192

struct compressor {
	z_stream	z;
};

/* Each allocation's size, ahead of it, aligned for anything. */
union cz_head {
	size_t		n;
	max_align_t	align;
};

static size_t cz_bytes;

static voidpf
cz_alloc(voidpf opaque, uInt items, uInt size)
{
	union cz_head *h;
	size_t n;

	(void)opaque;
	if (size != 0 && items > (SIZE_MAX - sizeof(*h)) / size)
		return Z_NULL;
	n = (size_t)items * size + sizeof(*h);
	if ((h = malloc(n)) == NULL)
		return Z_NULL;
	h->n = n;
	cz_bytes += n;
	return h + 1;
}

static void
cz_free(voidpf opaque, voidpf p)
{
	union cz_head *h = (union cz_head *)p - 1;

	(void)opaque;
	cz_bytes -= h->n;
	free(h);
}

size_t
compress_memory(void)
{
	return cz_bytes;
}

/* Skips spaces and tabs (OWS). */
static const char *
ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/*
 * A qvalue (RFC 9110 12.4.2): 1 when above 0, 0 when 0, -1 when
 * malformed; *p is moved past it.
 */
static int
qvalue(const char **p)
{
	const char *s = *p;
	bool one = *s == '1', above = one;

	if (*s != '0' && *s != '1')
		return -1;
	s++;
	if (*s == '.') {
		s++;
		for (int i = 0; i < 3 && *s >= '0' && *s <= '9'; i++, s++) {
			if (*s == '0')
				continue;
			if (one)
				return -1;	/* 1.5 */
			above = true;
		}
	}
	/* a fourth decimal, or a second digit before the point */
	if (*s >= '0' && *s <= '9')
		return -1;
	*p = s;
	return above ? 1 : 0;
}

void
compress_accept_value(const char *value, int *gzip, int *star)
{
	const char *p = value, *tok;
	size_t len;
	int q;

	for (;;) {
		p = ows(p);
		tok = p;
		while (bytes_istchar((uint8_t)*p))
			p++;
		len = (size_t)(p - tok);
		p = ows(p);
		q = 1;
		/* parameters: only q means anything here */
		while (*p == ';') {
			p = ows(p + 1);
			if ((p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
				p += 2;
				if ((q = qvalue(&p)) == -1)
					break;
			} else
				q = -1;
			p = ows(p);
		}
		/* anything else before the comma spoils the element */
		if (*p != ',' && *p != '\0')
			q = -1;
		if (q != -1 && len > 0) {
			if ((len == 4 && strncasecmp(tok, "gzip", 4) == 0) ||
			    (len == 6 && strncasecmp(tok, "x-gzip", 6) == 0))
				*gzip = *gzip == 1 ? 1 : q;
			else if (len == 1 && *tok == '*')
				*star = *star == 1 ? 1 : q;
		}
		if ((p = strchr(p, ',')) == NULL)
			return;
		p++;
	}
}

bool
compress_accept_result(int gzip, int star)
{
	return gzip == 1 || (gzip == -1 && star == 1);
}

/* Whether [p, end) is a token of lowercase tchars without a '*'. */
static bool
low_token(const char *p, const char *end)
{
	if (p == end)
		return false;
	for (; p < end; p++)
		if (!bytes_islowtchar((uint8_t)*p) || *p == '*')
			return false;
	return true;
}

bool
compress_type_valid(const char *e, size_t len)
{
	const char *slash = memchr(e, '/', len), *end = e + len, *sub;

	if (slash == NULL || !low_token(e, slash))
		return false;
	sub = slash + 1;
	if (end - sub == 1 && *sub == '*')
		return true;
	if (end - sub > 2 && sub[0] == '*' && sub[1] == '+')
		return low_token(sub + 2, end);
	return low_token(sub, end);
}

/* Whether a media type (lowercase) is matched by one entry of the list. */
static bool
type_entry_matches(const char *e, size_t elen, const char *t, size_t tlen)
{
	const char *eslash = memchr(e, '/', elen), *tslash = memchr(t, '/',
	    tlen);
	size_t etype, ttype, suffix;

	if (eslash == NULL || tslash == NULL)
		return false;
	etype = (size_t)(eslash - e);
	ttype = (size_t)(tslash - t);
	if (etype != ttype || memcmp(e, t, etype) != 0)
		return false;
	if (eslash[1] != '*')
		return elen == tlen && memcmp(e, t, elen) == 0;
	if (elen == etype + 2)
		return true;	/* any subtype */
	/* a suffix ("+json"): a subtype of a byte or more before it */
	suffix = elen - etype - 2;
	return tlen - ttype - 1 > suffix &&
	    memcmp(t + tlen - suffix, e + etype + 2, suffix) == 0;
}

bool
compress_type_listed(const char *list, const char *value, size_t len)
{
	char t[128];
	size_t n = 0;
	const char *e, *next;

	/* the media type, lowercase, without parameters or spaces */
	while (len > 0 && (*value == ' ' || *value == '\t')) {
		value++;
		len--;
	}
	while (n < len && value[n] != ';' && value[n] != ' ' &&
	    value[n] != '\t')
		n++;
	if (n == 0 || n > sizeof(t))
		return false;
	bytes_lower((uint8_t *)t, (const uint8_t *)value, n);
	for (e = list + 1; *e != '\0'; e = next + 1) {
		if ((next = strchr(e, ' ')) == NULL)
			break;
		if (type_entry_matches(e, (size_t)(next - e), t, n))
			return true;
	}
	return false;
}

/* What deflate takes for its window and tables (zlib's deflateInit2 notes). */
static size_t
cz_need(int wbits, int memlevel)
{
	return ((size_t)1 << (wbits + 2)) + ((size_t)1 << (memlevel + 9)) +
	    CZ_STATE;
}

struct compressor *
compress_new(int level, uint64_t length, size_t limit)
{
	struct compressor *c;
	int wbits = CZ_WBITS_MAX, memlevel = 8;

	if (length > 0) {
		for (wbits = CZ_WBITS_MIN; wbits < CZ_WBITS_MAX &&
		    ((uint64_t)1 << wbits) < length; wbits++)
			;
		/* zlib's default pairs window 15 with level 8 */
		memlevel = wbits - 7 < 1 ? 1 : wbits - 7;
	}
	if (cz_bytes + cz_need(wbits, memlevel) + sizeof(*c) > limit)
		return NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->z.zalloc = cz_alloc;
	c->z.zfree = cz_free;
	if (deflateInit2(&c->z, level, Z_DEFLATED, wbits + CZ_GZIP, memlevel,
	    Z_DEFAULT_STRATEGY) != Z_OK) {
		free(c);
		return NULL;
	}
	return c;
}

/* Runs deflate over the input set until it is taken and flush is done. */
static int
cz_run(struct compressor *c, int flush, struct bufq *out)
{
	struct iovec iov;
	size_t made;
	int rc;

	for (;;) {
		if (bufq_reserve(out, &iov, 1) == 0)
			return -1;
		c->z.next_out = iov.iov_base;
		c->z.avail_out = (uInt)iov.iov_len;
		rc = deflate(&c->z, flush);
		made = iov.iov_len - c->z.avail_out;
		bufq_commit(out, made);
		if (rc == Z_STREAM_END)
			return 0;
		/* Z_BUF_ERROR: nothing to do (a flush with nothing new) */
		if (rc != Z_OK && rc != Z_BUF_ERROR)
			return -1;
		if (c->z.avail_in == 0 && c->z.avail_out != 0 &&
		    flush != Z_FINISH)
			return 0;
		if (rc == Z_BUF_ERROR && made == 0)
			return flush == Z_FINISH ? -1 : 0;
	}
}

int
compress_put(struct compressor *c, const void *data, size_t len, bool flush,
    struct bufq *out)
{
	/* the pieces given are a read's at most: far below uInt's range */
	c->z.next_in = (Bytef *)(uintptr_t)data;
	c->z.avail_in = (uInt)len;
	return cz_run(c, flush ? Z_SYNC_FLUSH : Z_NO_FLUSH, out);
}

int
compress_end(struct compressor *c, struct bufq *out)
{
	c->z.next_in = Z_NULL;
	c->z.avail_in = 0;
	return cz_run(c, Z_FINISH, out);
}

void
compress_free(struct compressor *c)
{
	if (c == NULL)
		return;
	deflateEnd(&c->z);
	free(c);
}
