/* auth.c: HTTP Basic authentication against a file of users. */
#include <crypt.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/coding.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "auth.h"
#include "file.h"
#include "rng.h"

static int
auth_user_cmp(const void *a, const void *b)
{
	return strcmp(((const struct auth_user *)a)->name,
	    ((const struct auth_user *)b)->name);
}

void
auth_users_free(struct auth_users *u)
{
	for (size_t i = 0; i < u->n; i++) {
		free(u->v[i].name);
		free(u->v[i].hash);
	}
	free(u->v);
	u->v = NULL;
	u->n = 0;
}

/*
 * Why a hash is refused, or NULL when crypt(3) takes it at a cost the one
 * loop can pay: a check is made on it, with every client waiting.
 */
static const char *
auth_hash_refused(const char *hash)
{
	unsigned long cost;

	switch (crypt_checksalt(hash)) {
	case CRYPT_SALT_OK:
	case CRYPT_SALT_TOO_CHEAP:
		/* bcrypt: "$2b$NN$", 2^NN rounds */
		if (hash[0] == '$' && hash[1] == '2' && hash[3] == '$' &&
		    (cost = strtoul(hash + 4, NULL, 10)) > AUTH_BCRYPT_COST_MAX)
			return "a bcrypt cost above 12 (each check takes "
			    "hundreds of milliseconds, with every client "
			    "waiting): make it again with htpasswd -B -C 10";
		/* SHA crypt: "$6$rounds=N$" */
		if ((strncmp(hash, "$5$rounds=", 10) == 0 ||
		    strncmp(hash, "$6$rounds=", 10) == 0) &&
		    strtoul(hash + 10, NULL, 10) > AUTH_SHA_ROUNDS_MAX)
			return "more than 100000 SHA crypt rounds (each check "
			    "takes too long, with every client waiting)";
		return NULL;
	case CRYPT_SALT_METHOD_LEGACY:
		return "an old, weak kind of hash (DES or MD5 crypt): make it "
		    "again with htpasswd -B (bcrypt)";
	case CRYPT_SALT_METHOD_DISABLED:
		return "a kind of hash this system's crypt(3) has disabled";
	default:
		if (strncmp(hash, "$apr1$", 6) == 0)
			return "Apache's MD5 hash ($apr1$, htpasswd's default) "
			    "is not supported: make it again with htpasswd -B "
			    "(bcrypt)";
		return "not a hash crypt(3) knows (bcrypt, yescrypt, SHA-512 "
		    "or SHA-256 crypt)";
	}
}

/* One line, NUL-ended, into users: 0, or -1 with err set. */
static int
auth_add_line(struct auth_users *u, char *line, char *err, size_t errlen)
{
	struct auth_user *v;
	char *colon, *end = line + strlen(line);
	const char *why;

	while (end > line && (end[-1] == ' ' || end[-1] == '\t' ||
	    end[-1] == '\r'))
		*--end = '\0';
	if (*line == '\0' || *line == '#')
		return 0;
	if ((colon = strchr(line, ':')) == NULL || colon == line) {
		snprintf(err, errlen, "expected name:hash");
		return -1;
	}
	*colon = '\0';
	for (const char *c = line; *c != '\0'; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f) {
			snprintf(err, errlen, "a name with a blank or a control "
			    "character");
			return -1;
		}
	if ((why = auth_hash_refused(colon + 1)) != NULL) {
		snprintf(err, errlen, "user \"%.64s\": %s", line, why);
		return -1;
	}
	if (u->n == AUTH_USERS_MAX) {
		snprintf(err, errlen, "more than %d users", AUTH_USERS_MAX);
		return -1;
	}
	if ((v = reallocarray(u->v, u->n + 1, sizeof(*v))) == NULL) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	u->v = v;
	v[u->n].name = strdup(line);
	v[u->n].hash = strdup(colon + 1);
	if (v[u->n].name == NULL || v[u->n].hash == NULL) {
		free(v[u->n].name);
		free(v[u->n].hash);
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	u->n++;
	return 0;
}

int
auth_users_load(const char *path, struct auth_users *u, char *err,
    size_t errlen)
{
	char *buf, *line, *next, why[256];
	size_t len, lineno = 0;

	memset(u, 0, sizeof(*u));
	if (file_read(path, AUTH_FILE_MAX, &buf, &len) == -1) {
		file_error(err, errlen, path, AUTH_FILE_MAX);
		return -1;
	}
	if (memchr(buf, '\0', len) != NULL) {
		snprintf(err, errlen, "\"%s\": not a text file", path);
		goto fail;
	}
	for (line = buf; line != NULL && *line != '\0'; line = next) {
		lineno++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if (auth_add_line(u, line, why, sizeof(why)) == -1) {
			snprintf(err, errlen, "%s:%zu: %s", path, lineno, why);
			goto fail;
		}
	}
	if (u->n > 1)	/* (none: no array at all) */
		qsort(u->v, u->n, sizeof(*u->v), auth_user_cmp);
	for (size_t i = 1; i < u->n; i++)
		if (strcmp(u->v[i - 1].name, u->v[i].name) == 0) {
			snprintf(err, errlen, "\"%s\": user \"%.64s\" is there "
			    "twice", path, u->v[i].name);
			goto fail;
		}
	free(buf);
	return 0;
fail:
	free(buf);
	auth_users_free(u);
	return -1;
}

/* Equal lengths, compared in a time that does not depend on where they
   differ. */
static bool
auth_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
	uint8_t d = 0;

	for (size_t i = 0; i < len; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}

/*
 * Passwords found good: a keyed digest of the user's hash and the
 * password, one in each slot, the slot chosen by the digest. A changed
 * hash (a reload with the user's password changed) finds nothing.
 */
static struct {
	bool	 keyed;
	uint8_t	 key[32];
	uint8_t	 slot[AUTH_CACHE][WC_SHA256_DIGEST_SIZE];
	bool	 used[AUTH_CACHE];
} auth_cache;

static int
auth_digest(const char *hash, const char *pass, size_t passlen,
    uint8_t out[WC_SHA256_DIGEST_SIZE])
{
	wc_Sha256 sha;
	int rv;

	if (!auth_cache.keyed) {
		rng_fill(auth_cache.key, sizeof(auth_cache.key));
		auth_cache.keyed = true;
	}
	if (wc_InitSha256(&sha) != 0)
		return -1;
	rv = wc_Sha256Update(&sha, auth_cache.key, sizeof(auth_cache.key)) ||
	    wc_Sha256Update(&sha, (const uint8_t *)hash,
	    (word32)strlen(hash) + 1) ||
	    wc_Sha256Update(&sha, (const uint8_t *)pass, (word32)passlen) ||
	    wc_Sha256Final(&sha, out);
	wc_Sha256Free(&sha);
	return rv != 0 ? -1 : 0;
}

static size_t
auth_slot(const uint8_t d[WC_SHA256_DIGEST_SIZE])
{
	return ((size_t)d[0] | (size_t)d[1] << 8) % AUTH_CACHE;
}

/* Whether crypt(3) makes the user's hash of the password. */
static bool
auth_crypt_matches(const char *hash, const char *pass)
{
	/* about 32 KiB: not on the stack */
	static struct crypt_data data;
	const char *out;
	size_t len = strlen(hash);

	memset(&data, 0, sizeof(data));
	out = crypt_rn(pass, hash, &data, (int)sizeof(data));
	return out != NULL && strlen(out) == len &&
	    auth_equal((const uint8_t *)out, (const uint8_t *)hash, len);
}

enum auth_result
auth_check(const struct auth_users *u, const char *value,
    bool (*may_check)(void *), void *arg, bool *checked, const char **who)
{
	uint8_t cred[AUTH_CRED_MAX + 1], d[WC_SHA256_DIGEST_SIZE];
	word32 credlen = AUTH_CRED_MAX;
	struct auth_user key, *user;
	const char *b64;
	char *colon;
	size_t b64len, slot;

	*checked = false;
	/* "Basic" token68 (RFC 7617 2), the scheme in any case */
	if (value == NULL || strncasecmp(value, "Basic ", 6) != 0)
		return AUTH_FAIL;
	for (b64 = value + 6; *b64 == ' '; b64++)
		;
	b64len = strlen(b64);
	while (b64len > 0 && b64[b64len - 1] == ' ')
		b64len--;
	if (b64len == 0 || b64len > AUTH_CRED_MAX / 3 * 4 ||
	    Base64_Decode((const byte *)b64, (word32)b64len, cred,
	    &credlen) != 0)
		return AUTH_FAIL;
	cred[credlen] = '\0';
	/* a password with a NUL in it would be cut short by crypt(3) */
	if (memchr(cred, '\0', credlen) != NULL ||
	    (colon = strchr((char *)cred, ':')) == NULL ||
	    colon == (char *)cred)	/* no user has no name */
		return AUTH_FAIL;
	*colon = '\0';
	if (u->n == 0)		/* a file of no users: nothing to tell */
		return AUTH_FAIL;
	key.name = (char *)cred;
	if ((user = bsearch(&key, u->v, u->n, sizeof(*u->v),
	    auth_user_cmp)) == NULL) {
		/*
		 * A name not in the file costs what a user's does, a check
		 * (of another user's hash) from the budget, so that neither
		 * the time nor a 503 tells which names are there.
		 */
		if (!may_check(arg))
			return AUTH_BUSY;
		*checked = true;
		(void)auth_crypt_matches(u->v[0].hash, colon + 1);
		return AUTH_FAIL;
	}
	if (auth_digest(user->hash, colon + 1,
	    credlen - (size_t)(colon + 1 - (char *)cred), d) == -1)
		return AUTH_FAIL;
	slot = auth_slot(d);
	if (auth_cache.used[slot] &&
	    auth_equal(auth_cache.slot[slot], d, sizeof(d))) {
		*who = user->name;
		return AUTH_PASS;
	}
	if (!may_check(arg))
		return AUTH_BUSY;
	*checked = true;
	if (!auth_crypt_matches(user->hash, colon + 1))
		return AUTH_FAIL;
	memcpy(auth_cache.slot[slot], d, sizeof(d));
	auth_cache.used[slot] = true;
	*who = user->name;
	return AUTH_PASS;
}
