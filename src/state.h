/*
 * state.h: what qproxyctl sets that a restart keeps (state_file): the
 * servers disabled. One line each, "disabled BACKEND SERVER", the server
 * as its server line writes it; lines of '#' and blank lines are left out.
 */
#ifndef QPROXY_STATE_H
#define QPROXY_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define STATE_MAX	(256 * 1024)	/* bytes of the file */

/*
 * At the start, as root when qproxy starts so: a file that is missing is
 * made, empty, for the user qproxy becomes (uid, gid; -1: stays root), so
 * that it may write it later where it could not make a file. 0, or -1
 * and why.
 */
int	state_prepare(const char *path, uid_t uid, gid_t gid, char *err,
	    size_t errlen);
/*
 * Reads the file into upstream_set_disabled's list: the servers disabled
 * before the restart. A file that is missing has nothing; one that cannot
 * be read, or that someone other than root, qproxy's user or uid may
 * write, is left out whole, a line that is not understood alone; each
 * with a warning. How many servers it disabled.
 */
size_t	state_load(const char *path, uid_t uid);
/*
 * Writes upstream_set_disabled's list: to a new file put in the old one's
 * place, or, where qproxy may not make one (a directory of root's), over
 * the old one. 0, or -1 and why.
 */
int	state_save(const char *path, char *err, size_t errlen);

struct config;
struct strbuf;

/*
 * At the start, before the workers and before qproxy becomes its user:
 * cfg's state_file made if need be, then read (warnings to the log).
 */
void	state_start(const struct config *cfg);
/*
 * After a disable or enable, or a reload that moved the file: the list
 * kept in cfg's state_file; one that could not be written is said in the
 * log and in out, the command's answer (if not NULL).
 */
void	state_keep(const struct config *cfg, struct strbuf *out);
/* Whether a reload from old to cfg names another state_file (for which
   state_keep writes the list at once). */
bool	state_moved(const struct config *old, const struct config *cfg);

#endif
