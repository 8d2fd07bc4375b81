/*
 * compress.h: gzip of response bodies (RFC 9110 8.4.1.3) with zlib: which
 * requests take it, which media types get it, and the streams themselves,
 * whose memory is counted against a limit.
 */
#ifndef QPROXY_COMPRESS_H
#define QPROXY_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bufq;
struct compressor;

/*
 * Whether one Accept-Encoding value takes gzip, updating what the values
 * before it said (*gzip, *star: -1 not named, 0 refused by q=0, 1 taken;
 * both start at -1). x-gzip is gzip (RFC 9110 8.4.1.3); an element whose
 * weight is malformed is left out.
 */
void	compress_accept_value(const char *value, int *gzip, int *star);
/* What the values said, all of them read: gzip named with q > 0, or "*"
   with q > 0 and gzip not named (RFC 9110 12.5.3). */
bool	compress_accept_result(int gzip, int star);

/*
 * Whether one entry of compress_types is well formed: type/subtype,
 * type with "*" for any subtype, or "*+suffix" for any subtype ending in
 * the suffix ("application" and "*+json"); tokens of RFC 9110 5.6.2,
 * lowercase.
 */
bool	compress_type_valid(const char *entry, size_t len);
/*
 * Whether a Content-Type value's media type (before any parameter, in any
 * case) is in list, entries between single spaces with one at each end
 * (" text/html image/svg+xml ").
 */
bool	compress_type_listed(const char *list, const char *value, size_t len);

/*
 * A gzip stream at level (1 to 9) for a body of length bytes (0: not
 * known), its window no larger than the body needs. NULL when its memory
 * would take all streams' past limit, or none is left.
 */
struct compressor *compress_new(int level, uint64_t length, size_t limit);
/*
 * Compresses len bytes onto the end of out; with flush, what the stream
 * holds back too, ending on a byte (a sync flush: what the client has
 * can be read out whole). 0, or -1 when out of memory.
 */
int	compress_put(struct compressor *, const void *data, size_t len,
	    bool flush, struct bufq *out);
/* Ends the stream onto out (its last block and the gzip trailer). 0 or -1. */
int	compress_end(struct compressor *, struct bufq *out);
void	compress_free(struct compressor *);

/* Bytes that zlib holds for every stream now (the statistics). */
size_t	compress_memory(void);

#endif
