/*
 * secret.h: the key material behind Retry and NEW_TOKEN tokens and
 * stateless reset tokens, kept in a file so restarts keep them valid.
 */
#ifndef QPROXY_SECRET_H
#define QPROXY_SECRET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SECRET_LEN	32

/*
 * Reads the secret from path, creating the file (mode 0600, random bytes)
 * when it does not exist. A file that group or others may read, or that
 * belongs to someone other than root, the effective user or user (the one
 * qproxy becomes), is refused. 0, or -1 with a message in err.
 */
int	secret_load(const char *path, uid_t user, uint8_t out[SECRET_LEN],
	    char *err, size_t errlen);
/*
 * A key of len bytes written as hexadecimal digits on one line (the
 * QUIC-LB key, which load balancers are given in that form), from a file
 * that must exist and pass the checks of secret_load.
 */
int	secret_load_hex(const char *path, uid_t user, uint8_t *out,
	    size_t len, char *err, size_t errlen);
/* As secret_load would, without creating it: for qproxy -t. */
int	secret_check(const char *path, uid_t user, char *err, size_t errlen);

#endif
