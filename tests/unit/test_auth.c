/* Unit tests for auth.c: files of users, Basic credentials, the cache. */
#include <crypt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/coding.h>

#include "auth.h"
#include "unit.h"

static char	test_dir[PATH_MAX / 2];
static int	test_checks;	/* may_check's calls */
static bool	test_allow;	/* its answer */

static bool
test_may_check(void *arg)
{
	(void)arg;
	test_checks++;
	return test_allow;
}

/* A hash of the password, of the kind prefix names, at a low cost. */
static char *
test_hash(const char *prefix, const char *pass)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data data;

	memset(&data, 0, sizeof(data));
	if (crypt_gensalt_rn(prefix, 0, NULL, 0, setting,
	    (int)sizeof(setting)) == NULL ||
	    crypt_rn(pass, setting, &data, (int)sizeof(data)) == NULL) {
		perror(prefix);
		exit(1);
	}
	return strdup(data.output);
}

/* "Basic " and the base64 of cred */
static char *
test_basic(const char *cred, size_t len)
{
	static char out[2048];
	word32 n = sizeof(out) - 6;

	memcpy(out, "Basic ", 6);
	if (Base64_Encode_NoNl((const byte *)cred, (word32)len,
	    (byte *)out + 6, &n) != 0) {
		fprintf(stderr, "Base64_Encode_NoNl failed\n");
		exit(1);
	}
	out[6 + n] = '\0';
	return out;
}

static int
test_result(const struct auth_users *u, const char *value, bool allow,
    bool *checked)
{
	const char *user;

	test_allow = allow;
	return (int)auth_check(u, value, test_may_check, NULL, checked, &user);
}

static void
test_load_errors(void)
{
	struct auth_users u;
	char err[512], big[AUTH_FILE_MAX + 2];
	static const struct {
		const char	*text;
		const char	*err;
	} cases[] = {
		{ "alice\n", "users:1: expected name:hash" },
		{ "# x\n:$6$abc$def\n", "users:2: expected name:hash" },
		{ "a b:$6$abc$def\n", "users:1: a name with a blank or a "
		    "control character" },
		{ "alice:$apr1$abc$def\n", "users:1: user \"alice\": Apache's "
		    "MD5 hash ($apr1$, htpasswd's default) is not supported: "
		    "make it again with htpasswd -B (bcrypt)" },
		{ "alice:abJnggxhB/yWI\n", "users:1: user \"alice\": an old, "
		    "weak kind of hash (DES or MD5 crypt): make it again with "
		    "htpasswd -B (bcrypt)" },
		{ "alice:{SHA}x\n", "users:1: user \"alice\": not a hash "
		    "crypt(3) knows (bcrypt, yescrypt, SHA-512 or SHA-256 "
		    "crypt)" },
		{ "bob:$6$abc$def\nalice:$6$abc$def\nbob:$6$x$y\n",
		    "\"users\": user \"bob\" is there twice" },
		{ "a:$2b$13$abcdefghijklmnopqrstuu5Ms9IZA2xLhcIvY4wVXXYwb1aH/eCdu\n",
		    "users:1: user \"a\": a bcrypt cost above 12 (each check "
		    "takes hundreds of milliseconds, with every client "
		    "waiting): make it again with htpasswd -B -C 10" },
		{ "a:$6$rounds=100001$salt$abc\n",
		    "users:1: user \"a\": more than 100000 SHA crypt rounds "
		    "(each check takes too long, with every client waiting)" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unit_write_file("users", cases[i].text);
		err[0] = '\0';
		CHECK_EQ_INT(auth_users_load("users", &u, err, sizeof(err)), -1);
		CHECK_EQ_STR(err, cases[i].err);
		CHECK(u.v == NULL && u.n == 0);
	}
	CHECK_EQ_INT(auth_users_load("nope", &u, err, sizeof(err)), -1);
	CHECK_EQ_STR(err, "cannot open \"nope\": No such file or directory");
	memset(big, '#', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	unit_write_file("users", big);
	CHECK_EQ_INT(auth_users_load("users", &u, err, sizeof(err)), -1);
	CHECK_EQ_STR(err, "\"users\": larger than 1m");
	unlink("users");
}

static void
test_checks_and_cache(void)
{
	struct auth_users u;
	char err[512], text[1024], *bc, *sha, *yes, *sha2;
	bool checked;

	bc = test_hash("$2b$", "hunter2");
	sha = test_hash("$6$", "pa:ss word");
	yes = test_hash("$y$", "s3cret");
	/* comments, blank lines, CRLF and trailing blanks are no users */
	snprintf(text, sizeof(text), "# staging\r\nzed:%s\r\n\n"
	    "bob:%s  \nalice:%s\n", bc, sha, yes);
	unit_write_file("users", text);
	err[0] = '\0';
	CHECK_EQ_INT(auth_users_load("users", &u, err, sizeof(err)), 0);
	CHECK_EQ_STR(err, "");
	CHECK_EQ_INT(u.n, 3);
	if (u.n != 3)
		return;
	CHECK_EQ_STR(u.v[0].name, "alice");	/* sorted */
	CHECK_EQ_STR(u.v[2].hash, bc);

	test_checks = 0;
	CHECK_EQ_INT(test_result(&u, test_basic("zed:hunter2", 11), true,
	    &checked), AUTH_PASS);
	CHECK(checked);
	/* the same again: remembered, no check asked for */
	CHECK_EQ_INT(test_result(&u, test_basic("zed:hunter2", 11), false,
	    &checked), AUTH_PASS);
	CHECK(!checked);
	CHECK_EQ_INT(test_checks, 1);
	/* a password with a colon and a blank; the scheme in any case */
	CHECK_EQ_INT(test_result(&u, test_basic("bob:pa:ss word", 14), true,
	    &checked), AUTH_PASS);
	memcpy(text, test_basic("alice:s3cret", 12), 64);
	memcpy(text, "bASIC ", 6);
	CHECK_EQ_INT(test_result(&u, text, true, &checked), AUTH_PASS);
	/* wrong passwords: checked, or busy without the budget */
	CHECK_EQ_INT(test_result(&u, test_basic("zed:hunter3", 11), true,
	    &checked), AUTH_FAIL);
	CHECK(checked);
	CHECK_EQ_INT(test_result(&u, test_basic("zed:hunter3", 11), false,
	    &checked), AUTH_BUSY);
	CHECK(!checked);
	CHECK_EQ_INT(test_result(&u, test_basic("zed:hunter", 10), true,
	    &checked), AUTH_FAIL);
	/* turned away before any check: the budget is not asked */
	test_checks = 0;
	CHECK_EQ_INT(test_result(&u, NULL, true, &checked), AUTH_FAIL);
	CHECK_EQ_INT(test_result(&u, "Bearer abc", true, &checked), AUTH_FAIL);
	CHECK_EQ_INT(test_result(&u, "Basic", true, &checked), AUTH_FAIL);
	CHECK_EQ_INT(test_result(&u, "Basic !!!!", true, &checked), AUTH_FAIL);
	CHECK_EQ_INT(test_result(&u, test_basic("zed", 3), true, &checked),
	    AUTH_FAIL);
	CHECK_EQ_INT(test_result(&u, test_basic(":hunter2", 8), true,
	    &checked), AUTH_FAIL);
	/* crypt(3) would end the password at the NUL: "hunter2\0x" fails */
	CHECK_EQ_INT(test_result(&u, test_basic("zed:hunter2\0x", 13), true,
	    &checked), AUTH_FAIL);
	CHECK_EQ_INT(test_checks, 0);
	/* a name not in the file costs a check too, and 503 without one */
	CHECK_EQ_INT(test_result(&u, test_basic("carol:hunter2", 13), false,
	    &checked), AUTH_BUSY);
	CHECK_EQ_INT(test_result(&u, test_basic("carol:hunter2", 13), true,
	    &checked), AUTH_FAIL);
	CHECK(checked);
	CHECK_EQ_INT(test_checks, 2);
	auth_users_free(&u);

	/* a new hash for the same password (a reload): checked again */
	sha2 = test_hash("$6$", "hunter2");
	snprintf(text, sizeof(text), "zed:%s\n", sha2);
	unit_write_file("users", text);
	CHECK_EQ_INT(auth_users_load("users", &u, err, sizeof(err)), 0);
	CHECK_EQ_INT(test_result(&u, test_basic("zed:hunter2", 11), false,
	    &checked), AUTH_BUSY);
	CHECK_EQ_INT(test_result(&u, test_basic("zed:hunter2", 11), true,
	    &checked), AUTH_PASS);
	CHECK(checked);
	auth_users_free(&u);
	unlink("users");
	free(bc);
	free(sha);
	free(yes);
	free(sha2);
}

/* A file of comments alone: taken, no user, every check fails. */
static void
test_no_users(void)
{
	struct auth_users u;
	char err[512];
	bool checked;

	unit_write_file("users", "# nobody yet\n\n");
	err[0] = '\0';
	CHECK_EQ_INT(auth_users_load("users", &u, err, sizeof(err)), 0);
	CHECK_EQ_STR(err, "");
	CHECK_EQ_INT(u.n, 0);
	CHECK_EQ_INT(test_result(&u, test_basic("zed:hunter2", 11), true,
	    &checked), AUTH_FAIL);
	auth_users_free(&u);
	unlink("users");
}

int
main(void)
{
	snprintf(test_dir, sizeof(test_dir), "%s/qproxy-test.XXXXXX",
	    getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(test_dir) == NULL || chdir(test_dir) == -1) {
		perror(test_dir);
		return 1;
	}
	test_load_errors();
	test_checks_and_cache();
	test_no_users();
	if (chdir("/") == -1 || rmdir(test_dir) == -1)
		perror(test_dir);
	UNIT_DONE();
}
