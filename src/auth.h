/*
 * auth.h: HTTP Basic authentication (RFC 7617) of a route's requests,
 * against a file of users and their password hashes, in the format of
 * Apache's htpasswd ("name:hash", one a line), hashed as crypt(3) does
 * (libxcrypt: bcrypt, yescrypt, SHA-512 and SHA-256 crypt).
 *
 * A hash is slow to check on purpose (tens of milliseconds for bcrypt),
 * and this process has one thread for every client: a password found good
 * is remembered (a keyed SHA-256 of the user's hash and the password, in
 * a table of AUTH_CACHE entries), so that a client's next requests cost a
 * digest, and the checks that remain come from a budget the caller keeps.
 */
#ifndef QPROXY_AUTH_H
#define QPROXY_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#define AUTH_FILE_MAX	(1024 * 1024)	/* bytes of a file of users */
#define AUTH_USERS_MAX	100000
#define AUTH_CACHE	1024		/* passwords remembered as good */
#define AUTH_CRED_MAX	1024		/* bytes of "name:password" */
#define AUTH_BCRYPT_COST_MAX	12	/* 2^12 rounds: about 250 ms */
#define AUTH_SHA_ROUNDS_MAX	100000

struct auth_user {
	char	*name;
	char	*hash;
};

/* A file's users, sorted by name. */
struct auth_users {
	struct auth_user	*v;
	size_t			 n;
};

/*
 * Reads a file of users: lines "name:hash", blank ones and "#" comments
 * skipped. 0, or -1 with the reason in err ("line 3: ..." for a line's)
 * and nothing kept.
 */
int	auth_users_load(const char *path, struct auth_users *, char *err,
	    size_t errlen);
void	auth_users_free(struct auth_users *);

enum auth_result {
	AUTH_PASS,		/* a user of the file, with its password */
	AUTH_FAIL,		/* no credentials, or not good ones */
	AUTH_BUSY,		/* a check was needed and the budget had none */
};

/*
 * An Authorization field's value (NULL: none) against the users. A check
 * of a hash is made only when may_check(arg) says so, which takes it from
 * the caller's budget; *checked says whether one was. On AUTH_PASS, *user
 * is the user's name, in users.
 */
enum auth_result auth_check(const struct auth_users *, const char *value,
	    bool (*may_check)(void *), void *arg, bool *checked,
	    const char **user);

#endif
