/*
 * test_state.c: state_file (state.c): the servers disabled written down
 * and read back; lines not understood left out, the others taken,
 * whatever their ends, once; a file others may write, a link to one or a
 * file of two names not read; a link left where the new file is made not
 * followed; nor a list the memory was lacking for.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "state.h"
#include "upstream.h"
#include "unit.h"
#include "unit_realloc.h"

static char dir[] = "/tmp/qproxy-test-state-XXXXXX";
static char path[64], other[80], newpath[80];

static void
put(const char *text, size_t len, mode_t mode)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
	chmod(path, mode);
}

/* Every server of the list enabled, as at a start. */
static void
clear(void)
{
	const char *b, *s;
	char bb[128], ss[128];

	while ((b = upstream_disabled_at(0, &s)) != NULL) {
		snprintf(bb, sizeof(bb), "%s", b);
		snprintf(ss, sizeof(ss), "%s", s);
		upstream_set_disabled(bb, ss, false);
	}
}

int
main(void)
{
	static const char odd[] = "# kept\r\n\r\ndisabled app 127.0.0.1:8080\r\n"
	    "disabled\nenabled app x\ndisabled app\ndisabled  a b\n"
	    "disabled app unix:/run/my app.sock \t\ndisabled b\0ad c\n"
	    "disabled app 127.0.0.1:8080\n"
	    "disabled last 10.0.0.1:80";
	char err[256], *text;
	FILE *f;
	long n;

	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(path, sizeof(path), "%s/state", dir);
	snprintf(other, sizeof(other), "%s/other", dir);
	snprintf(newpath, sizeof(newpath), "%s/state.new", dir);

	/* missing: nothing, quietly */
	CHECK_EQ_INT((int)state_load(path, 0), 0);

	put(odd, sizeof(odd) - 1, 0600);
	CHECK_EQ_INT((int)state_load(path, 0), 3);
	CHECK(upstream_disabled("app", "127.0.0.1:8080"));
	CHECK(upstream_disabled("app", "unix:/run/my app.sock"));
	CHECK(upstream_disabled("last", "10.0.0.1:80"));
	CHECK(!upstream_disabled("app", "x"));
	CHECK(!upstream_disabled("b", "c"));

	/* written and read back: the same list */
	CHECK_EQ_INT(state_save(path, err, sizeof(err)), 0);
	clear();
	CHECK(!upstream_disabled("app", "127.0.0.1:8080"));
	CHECK_EQ_INT((int)state_load(path, 0), 3);
	CHECK(upstream_disabled("app", "unix:/run/my app.sock"));
	CHECK(upstream_disabled("last", "10.0.0.1:80"));
	if ((f = fopen(path, "r")) != NULL) {
		text = calloc(1, 4096);
		n = (long)fread(text, 1, 4095, f);
		fclose(f);
		CHECK(n > 0 && strstr(text, "\ndisabled app 127.0.0.1:8080\n") != NULL);
		free(text);
	}

	/* no memory for the list: not written, the file left as it was */
	unit_realloc_fails = true;
	CHECK_EQ_INT(state_save(path, err, sizeof(err)), -1);
	unit_realloc_fails = false;
	CHECK_EQ_STR(err, "out of memory");
	clear();
	CHECK_EQ_INT((int)state_load(path, 0), 3);

	/* the group may write it: not read */
	clear();
	chmod(path, 0620);
	CHECK_EQ_INT((int)state_load(path, 0), 0);
	CHECK(!upstream_disabled("last", "10.0.0.1:80"));

	/* a link to a good file, or a good file of a second name: not read */
	chmod(path, 0600);
	CHECK_EQ_INT(rename(path, other), 0);
	CHECK_EQ_INT(symlink(other, path), 0);
	CHECK_EQ_INT((int)state_load(path, 0), 0);
	unlink(path);
	CHECK_EQ_INT(link(other, path), 0);
	CHECK_EQ_INT((int)state_load(path, 0), 0);
	CHECK(!upstream_disabled("last", "10.0.0.1:80"));
	unlink(path);

	/* a link where the new file is made: replaced, not followed */
	CHECK_EQ_INT(symlink(other, newpath), 0);
	upstream_set_disabled("x", "y", true);
	CHECK_EQ_INT(state_save(path, err, sizeof(err)), 0);
	clear();
	CHECK_EQ_INT((int)state_load(path, 0), 1);
	CHECK(upstream_disabled("x", "y"));
	CHECK_EQ_INT((int)state_load(other, 0), 3);	/* as it was */
	CHECK(access(newpath, F_OK) == -1);
	clear();
	unlink(other);

	/* made when missing, empty, left alone when there */
	unlink(path);
	CHECK_EQ_INT(state_prepare(path, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err)), 0);
	CHECK_EQ_INT((int)state_load(path, 0), 0);
	put("disabled a b\n", 13, 0600);
	CHECK_EQ_INT(state_prepare(path, (uid_t)-1, (gid_t)-1, err,
	    sizeof(err)), 0);
	CHECK_EQ_INT((int)state_load(path, 0), 1);
	clear();

	unlink(path);
	rmdir(dir);
	UNIT_DONE();
}
