/*
 * main.c: command line, start-up order, signals, reload, the control
 * socket's commands, and the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <ev.h>
#include <systemd/sd-daemon.h>

#include "clock.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "log.h"
#include "cid.h"
#include "secret.h"
#include "state.h"
#include "strbuf.h"
#include "tls.h"
#include "upgrade.h"
#include "workers.h"

#ifndef QPROXY_VERSION
#define QPROXY_VERSION "unknown"
#endif

static struct quic_server *server;
static struct control *control;
static const char *config_path = CONFIG_DEFAULT_PATH;
static ev_timer shutdown_deadline, watchdog;
/* a SIGTERM or SIGINT came: the next one stops at once */
static bool signalled;

static bool	cid_changed(const struct config *);
static void	keys_give(struct upgrade_keys *, const uint8_t *secret);
/* the file the secret in use came from: what an upgrade is told */
static char	secret_from[sizeof(((struct upgrade_keys *)0)->secret_file)];
_Static_assert(sizeof(((struct upgrade_keys *)0)->secret) == SECRET_LEN,
    "upgrade_keys holds secret_file's secret");
_Static_assert(sizeof(((struct upgrade_keys *)0)->cid_key) == CID_LB_KEYLEN,
    "upgrade_keys holds the QUIC-LB key");

static void
usage(void)
{
	fprintf(stderr, "usage: qproxy [-fTtv] [-c file]\n");
	exit(1);
}

/* Where a global key is set: file:line, or the file for a default. */
static const char *
key_at(const struct config *cfg, const char *key)
{
	int line = config_global_line(cfg, key);

	return line > 0 ? config_at(cfg, line) : cfg->path;
}

/*
 * The log files cfg names, opened but not in use yet: all of them, or none
 * with every reason in errs.
 */
static int
logs_prepare(const struct config *cfg, struct log_file lf[3],
    struct strbuf *errs)
{
	static const char *const key[] = { "error_log", "access_log",
	    "keylog_file" };
	const char *path[] = { cfg->error_log, cfg->access_log,
	    cfg->keylog_file };
	int i, rv = 0;

	for (i = 0; i < 3; i++) {
		if (log_file_prepare(&lf[i], (enum log_kind)i, path[i],
		    cfg->user != NULL ? cfg->uid : (uid_t)-1) == -1) {
			strbuf_printf(errs, "%s: %s %s: %s\n", key_at(cfg,
			    key[i]), key[i], path[i], log_file_strerror(errno));
			rv = -1;
		}
	}
	if (rv == -1)
		for (i = 0; i < 3; i++)
			log_file_discard(&lf[i]);
	return rv;
}

static void
logs_install(const struct config *cfg, struct log_file lf[3])
{
	log_setlevel(cfg->log_level);
	for (int i = 0; i < 3; i++)
		log_file_install(&lf[i], (enum log_kind)i,
		    cfg->access_log_format);
	if (cfg->keylog_file != NULL)
		log_warnx("keylog_file is on: the TLS secrets of new connections "
		    "are written to %s; turn it off when done debugging",
		    cfg->keylog_file);
}

/*
 * The next line of *text, its length (without the newline) in *len;
 * *text moves past it. NULL at the end.
 */
static const char *
line_next(const char **text, int *len)
{
	const char *line = *text, *nl;

	if (*line == '\0')
		return NULL;
	if ((nl = strchr(line, '\n')) == NULL)
		nl = line + strlen(line);
	*len = (int)(nl - line);
	*text = *nl == '\0' ? nl : nl + 1;
	return line;
}

/* Each line of text as a log line of its own, after prefix. */
static void
log_lines(int level, const char *prefix, const char *text)
{
	const char *line;
	int len;

	while ((line = line_next(&text, &len)) != NULL) {
		if (level == LOG_LEVEL_ERROR)
			log_errx("%s%.*s", prefix, len, line);
		else
			log_warnx("%s%.*s", prefix, len, line);
	}
}

/*
 * Errors that stop a start, as they are (file:line: message), to stderr;
 * to the journal with their priority, or journalctl -p err misses them.
 */
static void
stderr_errors(const char *text)
{
	const char *line;
	int len;

	while ((line = line_next(&text, &len)) != NULL)
		fprintf(stderr, "%s%.*s\n", log_stderr_prio(LOG_LEVEL_ERROR),
		    len, line);
}

/* Both NULL, or the same text. */
static bool
same_string(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/*
 * A warning of a reload: logged, and kept in reload_notes (set while the
 * new configuration is checked) for the reply to qproxyctl, which gets
 * them if the reload is taken; a SIGHUP has no one to tell.
 */
static struct strbuf *reload_notes;
static size_t reload_unsaid;	/* warnings past reload_notes' room */

#define RELOAD_NOTES_MAX	(1 << 16)

static void QP_PRINTF(1, 2)
reload_warn(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warnx("%s", msg);
	if (reload_notes == NULL)
		return;
	/* whole lines only, and room kept to say how many more the log has */
	if (reload_unsaid > 0 || n < 0 || reload_notes->len + (size_t)n +
	    11 + 80 > RELOAD_NOTES_MAX)
		reload_unsaid++;
	else
		strbuf_printf(reload_notes, "warning: %s\n", msg);
}

/*
 * The keys that only a restart applies, as the process started with them
 * (the supervisor's, for workers, which it starts again with others'
 * configurations): a reload is warned against these, not the last
 * configuration loaded, which may have asked for others in vain. The
 * secret_file in use is secret_from.
 */
static struct {
	char		*control_socket, *user;
	uint64_t	 workers;
} started;

static void
started_remember(const struct config *cfg)
{
	if ((cfg->control_socket != NULL && (started.control_socket =
	    strdup(cfg->control_socket)) == NULL) || (cfg->user != NULL &&
	    (started.user = strdup(cfg->user)) == NULL))
		fatal("strdup");
	started.workers = cfg->workers;
}

/* A global key that only a restart applies, changed by a reload. */
static void
reload_at_restart(const struct config *cfg, const char *key)
{
	int line = config_global_line(cfg, key);

	if (line > 0)
		reload_warn("%s: %s changes take effect at restart",
		    config_at(cfg, line), key);
	else
		reload_warn("%s changes take effect at restart", key);
}

/*
 * Room for the replies that show a row of each of its routes, backends'
 * servers and certificates (qproxyctl metrics, routes, backends, tls).
 */
static void
reply_room(const struct config *cfg)
{
	size_t rows = cfg->nroutes;

	for (size_t i = 0; i < cfg->nbackends; i++)
		rows += cfg->backends[i].nservers;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		rows += cfg->listeners[i].ncerts;
	control_reply_rows(rows);
}

/* The configuration file read anew: NULL, with its errors in errs. */
static struct config *
config_reread(struct strbuf *errs)
{
	struct config *cfg;
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	if ((f = open_memstream(&text, &len)) == NULL) {
		strbuf_printf(errs, "out of memory\n");
		return NULL;
	}
	cfg = config_load(config_path, f);
	fclose(f);
	if (cfg == NULL)
		strbuf_append(errs, text, len);
	else
		reply_room(cfg);
	free(text);
	return cfg;
}

/* A reload made ready (reload_prepare), to apply or let go. */
struct reload_ready {
	struct config		*cfg;
	struct log_file		 lf[3];
	struct server_staged	*staged;
};

/*
 * All of a reload that can fail: the file read and checked, its log files
 * opened and the server's part staged (server_stage), into r. 0 with the
 * warnings in out, if any; -1 with every reason in out.
 */
static int
reload_prepare(struct reload_ready *r, struct strbuf *out)
{
	struct config *cfg;
	struct strbuf notes;	/* the warnings, said on success only */
	int rv = -1;

	strbuf_init(&notes, RELOAD_NOTES_MAX);
	if ((cfg = config_reread(out)) == NULL)
		goto done;
	reload_notes = &notes;
	reload_unsaid = 0;
	config_warnings(cfg, reload_warn);
	if (!same_string(started.control_socket, cfg->control_socket))
		reload_at_restart(cfg, "control_socket");
	if (!same_string(started.user, cfg->user))
		reload_at_restart(cfg, "user");
	if (!same_string(secret_from, cfg->secret_file))
		reload_at_restart(cfg, "secret_file");
	if (started.workers != cfg->workers)
		reload_at_restart(cfg, "workers");
	if (cid_changed(cfg))
		reload_warn("cid_server_id, cid_nonce_length, cid_config_id "
		    "and cid_key_file changes take effect at restart");
	reload_notes = NULL;
	if (reload_unsaid > 0)
		strbuf_printf(&notes, "warning: %zu more warning(s) in the "
		    "log\n", reload_unsaid);
	if (logs_prepare(cfg, r->lf, out) == -1) {
		config_free(cfg);
		goto done;
	}
	if ((r->staged = server_stage(server, cfg, out)) == NULL) {
		for (int i = 0; i < 3; i++)
			log_file_discard(&r->lf[i]);
		config_free(cfg);
		goto done;
	}
	r->cfg = cfg;
	strbuf_append(out, strbuf_str(&notes), notes.len);
	out->nomem |= notes.nomem;
	rv = 0;
done:
	strbuf_free(&notes);
	return rv;
}

/* The reload r made ready applied: nothing here fails. */
static void
reload_commit(struct reload_ready *r)
{
	bool moved = state_moved(server_config(server), r->cfg);

	server_commit(server, r->staged);
	logs_install(r->cfg, r->lf);
	/* a new state_file has the list at once (the supervisor's, with
	   workers) */
	if (moved && worker_count <= 1)
		state_keep(r->cfg, NULL);
	log_info("configuration reloaded");
}

static void
reload_discard(struct reload_ready *r)
{
	server_unstage(r->staged);
	for (int i = 0; i < 3; i++)
		log_file_discard(&r->lf[i]);
	config_free(r->cfg);
}

/*
 * A worker's reload as its supervisor asks it, in steps, so that every
 * worker takes the file or none does (workers.c, cmd_reload): "prepare
 * ID" makes it ready and holds it; "commit ID" applies it; "abort ID" lets
 * it go. One is held at a time, and is let go when another reload comes
 * (a later prepare, or a reload asked of this worker alone), at the exit,
 * and RELOAD_HOLD_TIME after its prepare without a word (its supervisor
 * gone, or the abort lost): the supervisor gives up on a reload 9 s after
 * it asked (workers.c), and kills a worker that did not apply one taken.
 * A worker that was stopped finds both the prepare and the abort behind
 * it, and libev may have it take the abort first: then the prepare finds
 * nothing to do.
 */
#define RELOAD_HOLD_TIME	10.

static struct {
	struct reload_ready	 r;
	unsigned long long	 id;		/* held; 0: none */
	unsigned long long	 aborted;	/* one let go before its
						   prepare came */
	unsigned long long	 committed;	/* the last applied */
	ev_timer		 timer;
} prepared;

static void
prepared_drop(const char *why)
{
	if (prepared.id == 0)
		return;
	log_info("reload %llu: let go (%s)", prepared.id, why);
	ev_timer_stop(server->loop, &prepared.timer);
	reload_discard(&prepared.r);
	prepared.id = 0;
}

static void
prepared_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	prepared_drop("no word from the supervisor");
}

/*
 * Its supervisor's step, as "prepare ID DIGEST" (or "prepare ID", compared
 * with nothing), "commit ID" or "abort ID".
 */
static int
reload_step(struct strbuf *out, const char *step)
{
	unsigned long long id, digest;
	char what[8];
	int words;

	if (worker_count <= 1) {
		strbuf_printf(out, "a worker's step: reload takes none here\n");
		return -1;
	}
	/* (control_parse let no other words through) */
	if ((words = sscanf(step, "%7s %llu %llx", what, &id, &digest)) < 2 ||
	    id == 0) {
		strbuf_printf(out, "bad step\n");
		return -1;
	}
	if (server_stopping(server)) {
		prepared_drop("shutting down");
		log_warnx("reload refused: shutting down");
		return CONTROL_RELOAD_STOPPING;
	}
	if (strcmp(what, "commit") == 0) {
		if (prepared.id == id) {
			ev_timer_stop(server->loop, &prepared.timer);
			prepared.id = 0;
			prepared.committed = id;
			reload_commit(&prepared.r);
			return 0;
		}
		/* applied, and asked again: its answer was lost */
		if (prepared.committed == id)
			return 0;
		strbuf_printf(out, "reload %llu is not held here\n", id);
		log_warnx("reload %llu: asked to apply it, not held", id);
		return -1;
	}
	if (strcmp(what, "abort") == 0) {
		if (prepared.id == id)
			prepared_drop("another worker did not take it");
		else
			prepared.aborted = id;
		return 0;
	}
	if (id == prepared.aborted) {
		log_info("reload %llu: over already", id);
		strbuf_printf(out, "reload %llu is over\n", id);
		return -1;
	}
	prepared_drop("another reload");
	log_info("reload %llu: reading %s", id, config_path);
	memset(&prepared.r, 0, sizeof(prepared.r));
	if (reload_prepare(&prepared.r, out) == -1) {
		log_lines(LOG_LEVEL_WARN, "reload refused: ", strbuf_str(out));
		return -1;
	}
	/* the file changed between the supervisor's read and this one */
	if (words == 3 && prepared.r.cfg->digest != digest) {
		reload_discard(&prepared.r);
		strbuf_clear(out);
		strbuf_printf(out, "%s: changed while it was read; reload "
		    "again\n", config_path);
		log_warnx("reload %llu refused: %s changed since the "
		    "supervisor read it", id, config_path);
		return -1;
	}
	prepared.id = id;
	ev_timer_init(&prepared.timer, prepared_timer_cb, RELOAD_HOLD_TIME, 0.);
	ev_timer_start(server->loop, &prepared.timer);
	log_info("reload %llu: ready; applied once every worker is", id);
	return 0;
}

/*
 * SIGHUP and "qproxyctl reload": a new configuration, or the old one kept
 * with every reason in errs; on success errs has its warnings, if any.
 * Connections and requests under way go on. None once a graceful
 * shutdown began (CONTROL_RELOAD_STOPPING): systemd, told STOPPING=1,
 * would have been told READY=1 again, and a new listener could have been
 * bound while the old ones drain.
 */
static int
reload(struct strbuf *errs)
{
	struct reload_ready r;
	int rv;

	if (server_stopping(server)) {
		log_warnx("reload refused: shutting down");
		return CONTROL_RELOAD_STOPPING;
	}
	workers_notify_reloading();
	log_info("reloading %s", config_path);
	/* a worker asked alone: what its supervisor had it hold goes */
	prepared_drop("another reload");
	memset(&r, 0, sizeof(r));
	if ((rv = reload_prepare(&r, errs)) == 0)
		reload_commit(&r);
	else
		log_lines(LOG_LEVEL_WARN, "reload refused: ", strbuf_str(errs));
	sd_notify(0, "READY=1");
	return rv;
}

static void
shutdown_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	log_warnx("shutdown_timeout reached; closing the remaining "
	    "connections");
	server_close_all(server);
	ev_break(loop, EVBREAK_ALL);
}

/*
 * qproxyctl reopen and SIGUSR1 (out NULL): logrotate moved the logs, also
 * under the process before if it still drains.
 */
static int
op_reopen(struct strbuf *out, void *arg)
{
	upgrade_reopen();
	if (log_reopen(out) == -1)
		return -1;
	log_info("log files reopened");
	return 0;
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	double timeout = server_config(server)->shutdown_timeout;
	struct strbuf errs;

	switch (w->signum) {
	case SIGHUP:
		strbuf_init(&errs, 1 << 20);
		(void)reload(&errs);
		strbuf_free(&errs);
		return;
	case SIGUSR1:
		(void)op_reopen(NULL, NULL);
		return;
	}
	if (server_stopping(server) && signalled) {
		log_info("second signal %d: stopping now", w->signum);
		server_close_all(server);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	signalled = true;
	if (server_stopping(server)) {
		/* since an upgrade, as at a first SIGTERM: goes on draining */
		log_info("signal %d: draining already (upgraded)", w->signum);
		return;
	}
	log_info("signal %d: shutting down gracefully (at most %.0f s)",
	    w->signum, timeout);
	sd_notify(0, "STOPPING=1");
	ev_timer_init(&shutdown_deadline, shutdown_timeout_cb, timeout, 0.);
	ev_timer_start(loop, &shutdown_deadline);
	server_shutdown(server);
}

static void
watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	sd_notify(0, "WATCHDOG=1");
}

static void
ping_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	workers_ping();
}

/* control socket commands */

static void
op_stats(struct strbuf *out, bool json, void *arg)
{
	server_report_stats(server, out, json);
}

static int
conns_next(struct strbuf *out, const char **why, void *cur)
{
	return quic_conns_next(cur, out);
}

static void
conns_done(void *cur)
{
	quic_conns_end(cur);
}

static int
op_conns(struct control_stream *st, bool json, const char **err, void *arg)
{
	if ((st->state = quic_conns_begin(server, json)) == NULL) {
		*err = "out of memory";
		return -1;
	}
	st->next = conns_next;
	st->done = conns_done;
	return 0;
}

static void
op_peers(struct strbuf *out, bool json, void *arg)
{
	quic_report_peers(server, out, json);
}

static void
op_tls(struct strbuf *out, bool json, void *arg)
{
	server_report_tls(server, out, json);
}

/* A report written as a JSON member ("backends":[...]), in an object. */
static void
op_object(struct strbuf *out, bool json,
    void (*report)(struct quic_server *, struct strbuf *, bool))
{
	if (json)
		strbuf_printf(out, "{");
	report(server, out, json);
	if (json)
		strbuf_printf(out, "}\n");
}

static void
op_backends(struct strbuf *out, bool json, void *arg)
{
	op_object(out, json, server_report_backends);
}

static void
op_routes(struct strbuf *out, bool json, void *arg)
{
	op_object(out, json, server_report_routes);
}

static int
metrics_next(struct strbuf *out, const char **why, void *cur)
{
	return server_metrics_next(cur, out, CONTROL_CHUNK);
}

static void
metrics_done(void *cur)
{
	server_metrics_end(cur);
}

static int
op_metrics(struct control_stream *st, bool json, const char **err,
    void *arg)
{
	(void)json;	/* one format only */
	if ((st->state = server_metrics_begin(server)) == NULL) {
		*err = "out of memory";
		return -1;
	}
	st->next = metrics_next;
	st->done = metrics_done;
	return 0;
}

static int
op_reload(struct strbuf *out, void *arg)
{
	return reload(out);
}

static int
op_reload_step(struct strbuf *out, const char *step, void *arg)
{
	return reload_step(out, step);
}

static int
op_set_server(struct strbuf *out, const char *args, bool on, void *arg)
{
	if (server_set_server(server, args, on, out) == -1)
		return -1;
	/* with workers, the supervisor keeps it */
	if (worker_count <= 1)
		state_keep(server_config(server), out);
	return 0;
}

static void
op_version(struct strbuf *out, bool json, void *arg)
{
	if (json)
		strbuf_printf(out, "{\"version\":\"%s\"}\n", QPROXY_VERSION);
	else
		strbuf_printf(out, "qproxy %s\n", QPROXY_VERSION);
}

/*
 * Once another process reads this one's sockets (upgrade.h): it serves
 * its connections until they end, for at most shutdown_timeout, as after
 * SIGTERM, but says nothing of stopping to systemd: the service goes on.
 */
static void
drain_handed_over(void)
{
	double timeout = server_config(server)->shutdown_timeout;

	control_disown(control);
	/* a worker draining since a SIGTERM keeps that deadline */
	if (!ev_is_active(&shutdown_deadline)) {
		ev_timer_init(&shutdown_deadline, shutdown_timeout_cb,
		    timeout, 0.);
		ev_timer_start(server->loop, &shutdown_deadline);
	}
	server_handover(server);
}

/* A worker, told by its supervisor that the new workers took over. */
static void
worker_handed_over(void)
{
	log_info("upgrade: the new worker serves new connections; this one "
	    "drains for at most %.0f s",
	    server_config(server)->shutdown_timeout);
	drain_handed_over();
}

/*
 * qproxyctl upgrade: the binary on disk takes over (upgrade.h), and this
 * process drains. Its supervisor does it for a worker.
 */
static int
op_upgrade(struct strbuf *out, void *arg)
{
	double timeout = server_config(server)->shutdown_timeout;
	struct upgrade_keys keys;
	struct upgrade_fds fds;
	int udp[UPGRADE_ADDRS_MAX], link;
	struct udp_sock *s;
	pid_t pid;
	int rv;

	if (worker_count > 1) {
		strbuf_printf(out, "a worker: ask the supervisor\n");
		return -1;
	}
	if (server_stopping(server)) {
		strbuf_printf(out, "shutting down\n");
		return -1;
	}
	memset(&fds, 0, sizeof(fds));
	fds.control = control_fd(control);
	fds.udp = udp;
	LIST_FOREACH(s, &server->socks, entry) {
		if (s->listener == NULL)
			continue;	/* draining: not the new one's */
		if (fds.nudp == UPGRADE_ADDRS_MAX) {
			strbuf_printf(out, "more than %d listening "
			    "addresses\n", UPGRADE_ADDRS_MAX);
			return -1;
		}
		udp[fds.nudp++] = s->fd;
	}
	keys_give(&keys, server->secret);
	rv = upgrade_spawn(&fds, &keys, &pid, &link, out);
	explicit_bzero(&keys, sizeof(keys));
	if (rv == -1) {
		log_lines(LOG_LEVEL_WARN, "upgrade refused: ",
		    strbuf_str(out));
		return -1;
	}
	upgrade_handed_over(server, link, pid);
	ev_timer_stop(server->loop, &watchdog);
	log_info("upgrade: process %d serves new connections; this one "
	    "drains for at most %.0f s", (int)pid, timeout);
	strbuf_printf(out, "process %d took over; process %d drains its "
	    "connections for at most %.0f s\n", (int)pid, (int)getpid(),
	    timeout);
	drain_handed_over();
	return 0;
}

static const struct control_ops ops = {
	.stats = op_stats,
	.conns = op_conns,
	.peers = op_peers,
	.tls = op_tls,
	.backends = op_backends,
	.routes = op_routes,
	.metrics_stream = op_metrics,
	.reload = op_reload,
	.reload_step = op_reload_step,
	.reopen = op_reopen,
	.set_server = op_set_server,
	.version = op_version,
	.upgrade = op_upgrade,
};

/*
 * Started as root with [global] user: everything privileged is done (UDP
 * sockets bound, keys read, control socket made), so become that user for
 * good. The control socket is handed over so it can be removed at exit.
 */
static void
drop_privileges(const struct config *cfg)
{
	if (cfg->user == NULL || geteuid() != 0)
		return;
	/*
	 * What qproxy made as root and must reopen later: the log files,
	 * through their descriptors, so that nothing put in their place is
	 * given away. The control socket was made the user's by its bind
	 * (control_listen).
	 */
	if (log_files_chown(cfg->uid, cfg->gid) == -1)
		log_warn("chown of the log files");
	/* its groups from the group database: a key may be readable to one */
	if (initgroups(cfg->user, cfg->gid) == -1 ||
	    setresgid(cfg->gid, cfg->gid, cfg->gid) == -1 ||
	    setresuid(cfg->uid, cfg->uid, cfg->uid) == -1)
		fatal("cannot switch to user %s", cfg->user);
	if (setuid(0) != -1)
		fatalx("could switch back to root after dropping privileges");
	log_info("running as user %s", cfg->user);
}

/*
 * For the supervisor of workers, at a reload: the file read again, before
 * the workers are asked, and its log files opened; once every worker took
 * it, what the workers started from now on run, and its log files in
 * place of the old, for them and for the supervisor.
 */
static struct log_file supervisor_logs[3];

static struct config *
supervisor_load(struct strbuf *errs)
{
	struct config *cfg;

	cfg = config_reread(errs);
	if (cfg != NULL && logs_prepare(cfg, supervisor_logs, errs) == -1) {
		config_free(cfg);
		cfg = NULL;
	}
	if (cfg == NULL)
		log_lines(LOG_LEVEL_WARN, "reload refused: ",
		    strbuf_str(errs));
	return cfg;
}

static void
supervisor_loaded(struct config *cfg, bool take)
{
	if (take) {
		logs_install(cfg, supervisor_logs);
		return;
	}
	for (int i = 0; i < 3; i++)
		log_file_discard(&supervisor_logs[i]);
	config_free(cfg);
}

static const struct workers_hooks worker_hooks = {
	.drop = drop_privileges,
	.load = supervisor_load,
	.loaded = supervisor_loaded,
	.free = config_free,
};

/*
 * qproxy -t, past the parse: the files the configuration names are read as
 * the daemon would read them, so that a certificate, key or secret it
 * would refuse at start fails the check too. A secret_file that does not
 * exist yet is fine: qproxy creates it.
 */
/* The QUIC-LB key, when cid_server_id and cid_key_file are set. */
static int
load_cid_key(const struct config *cfg, uint8_t key[CID_LB_KEYLEN],
    char *err, size_t errlen)
{
	if (cfg->cid_sidlen == 0 || cfg->cid_key_file == NULL)
		return 0;
	return secret_load_hex(cfg->cid_key_file, cfg->user != NULL ?
	    cfg->uid : 0, key, CID_LB_KEYLEN, err, errlen);
}

/*
 * The connection ID settings the server took at start (server_set_cid):
 * a reload that asks for others is warned about, against these and not the
 * last configuration loaded.
 */
static struct {
	uint8_t		 sid[sizeof(((struct config *)0)->cid_sid)];
	size_t		 sidlen;
	uint64_t	 nonce_len, config_id;
	char		*key_file;
	bool		 keyed;		/* key_file set (its copy may be NULL) */
	uint8_t		 key[CID_LB_KEYLEN];
} cid_start;

static void
cid_remember(const struct config *cfg, const uint8_t *key)
{
	memcpy(cid_start.sid, cfg->cid_sid, sizeof(cid_start.sid));
	cid_start.sidlen = cfg->cid_sidlen;
	cid_start.nonce_len = cfg->cid_nonce_len;
	cid_start.config_id = cfg->cid_config_id;
	if (cfg->cid_sidlen > 0 && cfg->cid_key_file != NULL) {
		cid_start.key_file = strdup(cfg->cid_key_file);
		cid_start.keyed = true;
		memcpy(cid_start.key, key, CID_LB_KEYLEN);
	}
}

/*
 * What an upgrade is given: the secret in use, the file it came from, and
 * the QUIC-LB key taken at start.
 */
static void
keys_give(struct upgrade_keys *keys, const uint8_t *secret)
{
	memset(keys, 0, sizeof(*keys));
	memcpy(keys->secret, secret, sizeof(keys->secret));
	memcpy(keys->secret_file, secret_from, sizeof(keys->secret_file));
	if (cid_start.key_file == NULL)
		return;
	memcpy(keys->cid_key, cid_start.key, sizeof(keys->cid_key));
	snprintf(keys->cid_key_file, sizeof(keys->cid_key_file), "%s",
	    cid_start.key_file);
}

/*
 * Whether cfg asks for other connection IDs than the running ones. The key
 * file is read again where it can be (its owner may be root, and qproxy
 * another user by now); where not, its name is compared.
 */
static bool
cid_changed(const struct config *cfg)
{
	uint8_t key[CID_LB_KEYLEN];
	char err[512];
	bool changed;

	if (cfg->cid_sidlen != cid_start.sidlen ||
	    memcmp(cfg->cid_sid, cid_start.sid, cfg->cid_sidlen) != 0)
		return true;
	if (cfg->cid_sidlen == 0)
		return false;
	if (cfg->cid_nonce_len != cid_start.nonce_len ||
	    cfg->cid_config_id != cid_start.config_id ||
	    (cfg->cid_key_file == NULL) != (cid_start.key_file == NULL))
		return true;
	if (cfg->cid_key_file == NULL)
		return false;
	if (load_cid_key(cfg, key, err, sizeof(err)) == 0)
		changed = memcmp(key, cid_start.key, sizeof(key)) != 0;
	else
		changed = strcmp(cfg->cid_key_file, cid_start.key_file) != 0;
	explicit_bzero(key, sizeof(key));
	return changed;
}

static void
check_error(const struct config *cfg, const char *key, const char *msg)
{
	int line = config_global_line(cfg, key);

	if (line > 0)
		fprintf(stderr, "%s: %s: %s\n", config_at(cfg, line), key, msg);
	else
		fprintf(stderr, "%s: %s (by default): %s\n", cfg->path, key,
		    msg);
}

/*
 * A log that exists must be a file qproxy would open: not a symbolic link
 * or a file with other hard links (refused, see log.c), or a directory,
 * nor a key log of a user other than root or qproxy's. A missing
 * directory is not checked: systemd makes /var/log/qproxy (LogsDirectory)
 * only as the unit starts.
 */
static int
check_log_file(const struct config *cfg, const char *key, const char *path)
{
	char msg[PATH_MAX + 128], owner[96];
	const char *what;
	struct stat st;

	if (path == NULL || strcmp(path, "stderr") == 0 ||
	    lstat(path, &st) == -1)
		return 0;
	if (S_ISLNK(st.st_mode))
		what = "is a symbolic link, which is refused";
	else if (S_ISDIR(st.st_mode))
		what = "is a directory";
	else if (S_ISREG(st.st_mode) && st.st_nlink > 1)
		what = "has other hard links, which is refused";
	else if (strcmp(key, "keylog_file") == 0 &&
	    !log_keylog_owner_ok(st.st_mode, st.st_uid,
	    cfg->user != NULL ? cfg->uid : (uid_t)-1)) {
		snprintf(owner, sizeof(owner), "belongs to user %u; it must "
		    "be root's or qproxy's", (unsigned)st.st_uid);
		what = owner;
	} else
		return 0;
	snprintf(msg, sizeof(msg), "%s %s", path, what);
	check_error(cfg, key, msg);
	return -1;
}

static int
check_files(const struct config *cfg)
{
	char err[512], zrtt[512];
	size_t zrttlen = quic_0rtt_context(cfg, zrtt, sizeof(zrtt));
	WOLFSSL_CTX *ctx;
	int bad;
	int rv = 0;

	if (tls_init() == -1) {
		fprintf(stderr, "qproxy: cannot initialise wolfSSL\n");
		return -1;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		if ((ctx = tls_ctx_new(l, zrtt, zrttlen, &bad, err,
		    sizeof(err))) == NULL) {
			fprintf(stderr, "%s: listener %s: %s\n",
			    config_at(cfg, bad), l->name, err);
			rv = -1;
		} else {
			tls_ctx_warnings(ctx, cfg, l, time(NULL), log_warnx);
			tls_ctx_free(ctx);
		}
	}
	if (secret_check(cfg->secret_file, cfg->user != NULL ? cfg->uid : 0,
	    err, sizeof(err)) == -1) {
		check_error(cfg, "secret_file", err);
		rv = -1;
	}
	{
		uint8_t key[CID_LB_KEYLEN];

		if (load_cid_key(cfg, key, err, sizeof(err)) == -1) {
			check_error(cfg, "cid_key_file", err);
			rv = -1;
		}
		explicit_bzero(key, sizeof(key));
	}
	if (check_log_file(cfg, "error_log", cfg->error_log) == -1)
		rv = -1;
	if (check_log_file(cfg, "access_log", cfg->access_log) == -1)
		rv = -1;
	if (check_log_file(cfg, "keylog_file", cfg->keylog_file) == -1)
		rv = -1;
	return rv;
}

#define EV_ALLOC_PATIENCE	10.	/* s */

/*
 * libev's own allocations (its arrays of descriptors, timers and events
 * pending grow as they need): libev aborts the process when one fails,
 * with a message that stderr, line-buffered, keeps. Tried again instead,
 * a millisecond later, then less often, for EV_ALLOC_PATIENCE (the loop
 * waits meanwhile); then the process exits, saying why.
 */
static void *
ev_alloc(void *ptr, long size)
{
	struct timespec pause = { 0, 1000000 };
	double waited = 0.;
	void *p;

	if (size == 0) {
		free(ptr);
		return NULL;
	}
	while ((p = realloc(ptr, (size_t)size)) == NULL) {
		if (waited >= EV_ALLOC_PATIENCE)
			fatalx("event loop: out of memory for %ld bytes", size);
		if (waited == 0.)
			log_warnx("event loop: out of memory for %ld bytes; "
			    "trying again for %.0f s", size, EV_ALLOC_PATIENCE);
		nanosleep(&pause, NULL);
		waited += (double)pause.tv_nsec / 1e9;
		if (pause.tv_nsec < 100000000)
			pause.tv_nsec *= 2;
	}
	return p;
}

/*
 * Descriptors 0, 1 and 2 left closed by whoever started qproxy would go to
 * the first files it opens: an access log file would take fd 2 and the
 * error log lines meant for stderr, and after a reload closed that file, a
 * backend connection would. /dev/null takes each such place first. Nothing
 * can be said when it cannot be opened: stderr may be the closed one.
 */
static void
stdio_fill(void)
{
	for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
		if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
			continue;
		/* the lowest free descriptor: this one */
		if (open("/dev/null", O_RDWR) != fd)
			exit(1);
	}
}

/*
 * qproxy -T: the configuration's files, included ones too, each after a
 * line that names it, as they are on disk now.
 */
static int
show_files(const struct config *cfg)
{
	char buf[8192];
	size_t n, last = 0;
	FILE *f;

	for (size_t i = 0; i < cfg->nfiles; i++) {
		if ((f = fopen(cfg->files[i], "re")) == NULL) {
			fprintf(stderr, "qproxy: %s: %s\n", cfg->files[i],
			    strerror(errno));
			return -1;
		}
		printf("# configuration file %s:\n", cfg->files[i]);
		last = 0;
		while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
			fwrite(buf, 1, n, stdout);
			last = n;
		}
		if (last > 0 && buf[last - 1] != '\n')
			putchar('\n');
		putchar('\n');
		fclose(f);
	}
	return fflush(stdout) == 0 ? 0 : -1;
}

/*
 * The signals the loop takes are held from the start until its watchers
 * are in place: one that came before, such as a logrotate's SIGUSR1 or a
 * SIGTERM just after the start, ended the process at once (their default
 * action). Held, it is taken as the loop starts. SIGUSR2, which qproxy
 * does not use, is ignored rather than left to end the daemon.
 */
static void
signals_hold(sigset_t *held)
{
	sigemptyset(held);
	sigaddset(held, SIGHUP);
	sigaddset(held, SIGINT);
	sigaddset(held, SIGTERM);
	sigaddset(held, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, held, NULL) == -1)
		fatal("sigprocmask");
	signal(SIGUSR2, SIG_IGN);
}

int
main(int argc, char *argv[])
{
	struct config *cfg;
	struct ev_loop *loop;
	struct strbuf errs;
	struct log_file lf[3];
	ev_signal sigterm, sigint, sighup, sigusr1;
	sigset_t held;
	uint8_t secret[SECRET_LEN], key[CID_LB_KEYLEN];
	uint64_t usec;
	int ch, check = 0, rv;
	bool ctl_made = false;	/* not taken from the running process */

	stdio_fill();
	ev_set_allocator(ev_alloc);
	upgrade_init(argv);
	while ((ch = getopt(argc, argv, "c:fTtv")) != -1) {
		switch (ch) {
		case 'c':
			config_path = optarg;
			break;
		case 'f':
			/* qproxy always stays in the foreground */
			break;
		case 't':
			check = 1;
			break;
		case 'T':
			check = 2;	/* and show the files */
			break;
		case 'v':
			printf("qproxy %s\n", QPROXY_VERSION);
			return 0;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	/* -t keeps the default actions: ^C ends a check */
	if (!check)
		signals_hold(&held);

	log_init(LOG_LEVEL_INFO);
	if (check)
		cfg = config_load(config_path, stderr);
	else {
		char *text = NULL;
		size_t len = 0;
		FILE *f;

		if ((f = open_memstream(&text, &len)) == NULL)
			fatal("open_memstream");
		cfg = config_load(config_path, f);
		fclose(f);
		stderr_errors(text);
		free(text);
	}
	if (cfg == NULL)
		return 1;
	if (check) {
		config_warnings(cfg, log_warnx);
		rv = check_files(cfg);
		if (rv == 0 && check == 2)
			rv = show_files(cfg);
		config_free(cfg);
		if (rv == -1)
			return 1;
		printf("configuration OK\n");
		return 0;
	}
	started_remember(cfg);
	reply_room(cfg);
	strbuf_init(&errs, 1 << 20);
	if (logs_prepare(cfg, lf, &errs) == -1) {
		log_lines(LOG_LEVEL_ERROR, "", strbuf_str(&errs));
		exit(1);
	}
	logs_install(cfg, lf);
	/* where error_log says, as at a reload; not only to a terminal */
	config_warnings(cfg, log_warnx);
	signal(SIGPIPE, SIG_IGN);
	if (tls_init() == -1)
		fatalx("cannot initialise wolfSSL");

	{
		char err[512];

		struct upgrade_keys keys;

		memset(&keys, 0, sizeof(keys));
		/*
		 * read once, as root: reloads keep it, so tokens stay valid;
		 * so does an upgrade, which is given the running one's
		 */
		if (upgrade_inheriting()) {
			if (upgrade_take_keys(&keys) == -1)
				return 1;
			memcpy(secret, keys.secret, sizeof(secret));
			memcpy(key, keys.cid_key, sizeof(key));
			if (keys.secret_file[0] != '\0') {
				snprintf(secret_from, sizeof(secret_from),
				    "%s", keys.secret_file);
				if (strcmp(secret_from, cfg->secret_file) != 0)
					log_warnx("%s: secret_file %s: the "
					    "running process's secret, from "
					    "%s, is kept; a new one takes "
					    "effect at a restart",
					    key_at(cfg, "secret_file"),
					    cfg->secret_file, secret_from);
			}
		} else if (secret_load(cfg->secret_file, cfg->user != NULL ?
		    cfg->uid : 0, secret, err, sizeof(err)) == -1)
			fatalx("%s: secret_file: %s", key_at(cfg,
			    "secret_file"), err);
		if (secret_from[0] == '\0')
			snprintf(secret_from, sizeof(secret_from), "%s",
			    cfg->secret_file);
		/* a QUIC-LB key from another file than the running one's */
		if ((!upgrade_inheriting() || cfg->cid_key_file == NULL ||
		    strcmp(cfg->cid_key_file, keys.cid_key_file) != 0) &&
		    load_cid_key(cfg, key, err, sizeof(err)) == -1)
			fatalx("%s: cid_key_file: %s", key_at(cfg,
			    "cid_key_file"), err);
		explicit_bzero(&keys, sizeof(keys));
		state_start(cfg);
	}
	/* before the workers: their supervisor hands the key to an upgrade */
	cid_remember(cfg, key);
	if (upgrade_inheriting() && upgrade_workers() != (cfg->workers > 1 ?
	    (unsigned)cfg->workers : 0))
		fatalx("%s: workers %llu, where the running process has %u: "
		    "their number changes at a restart, not an upgrade",
		    key_at(cfg, "workers"), (unsigned long long)(cfg->workers >
		    1 ? cfg->workers : 1), upgrade_workers() > 0 ?
		    upgrade_workers() : 1);
	/*
	 * The kernel steers by a byte of the connection ID (workers.h):
	 * where the running workers' IDs have it, the new ones' must, or
	 * their datagrams would go to other workers while they drain.
	 */
	if (upgrade_inheriting() && upgrade_workers() > 0 &&
	    upgrade_cid_offset() != workers_cid_offset(cfg))
		fatalx("%s: the running workers' connection IDs name their "
		    "worker at byte %zu, where this configuration's would at "
		    "byte %zu: with workers, a change of cid_server_id's "
		    "length, or between off and a server ID, takes a restart, "
		    "not an upgrade", key_at(cfg, "cid_server_id"),
		    upgrade_cid_offset(), workers_cid_offset(cfg));
	/* before the workers, which share it */
	if (tls_tickets_share() == -1)
		fatal("tickets taken: mmap");
	/* the supervisor stays in there; each worker goes on from here */
	if (cfg->workers > 1) {
		struct upgrade_keys keys;

		/* the supervisor hands them to an upgrade */
		keys_give(&keys, secret);
		rv = workers_run(&cfg, &held, &worker_hooks, &keys);
		explicit_bzero(&keys, sizeof(keys));
		if (rv == -1)
			return 1;
	}

	loop = ev_default_loop(EVFLAG_AUTO);
	if ((server = server_new(loop)) == NULL)
		fatalx("out of memory");
	server_set_secret(server, secret, sizeof(secret));
	tls_set_ticket_secret(secret, sizeof(secret));
	explicit_bzero(secret, sizeof(secret));
	/*
	 * The start's, not cfg's: a worker started again after a reload that
	 * asked for others (at restart, it was warned) makes the IDs the
	 * others make, at the byte the kernel steers by.
	 */
	if (server_set_cid(server, cid_start.sid, cid_start.sidlen,
	    (size_t)cid_start.nonce_len, (unsigned)cid_start.config_id,
	    cid_start.keyed ? cid_start.key : NULL) == -1)
		fatalx("cid_server_id: out of memory");
	explicit_bzero(key, sizeof(key));
	if (server_apply(server, cfg, &errs) == -1) {
		stderr_errors(strbuf_str(&errs));
		strbuf_free(&errs);
		config_free(cfg);
		server_free(server);
		return 1;
	}
	cfg = NULL;	/* the server's now */
	if (worker_count > 1) {
		const char *path;
		int fd = workers_control_fd(&path);

		if ((control = control_serve(loop, fd, path, false, &ops,
		    NULL)) == NULL) {
			server_free(server);
			return 1;
		}
		upgrade_worker_serve(server, worker_handed_over);
		if (upgrade_worker_held())
			server_hold(server);
	} else if (server_config(server)->control_socket != NULL) {
		const struct config *sc = server_config(server);
		const char *path = sc->control_socket;
		int fd = upgrade_take_control(path);

		control = fd != -1 ? control_serve(loop, fd, path, true, &ops,
		    NULL) : control_open(loop, path, sc->user != NULL ?
		    sc->uid : (uid_t)-1, sc->gid, &ops, NULL);
		ctl_made = fd == -1;
		if (control == NULL) {
			server_free(server);
			return 1;
		}
	}
	drop_privileges(server_config(server));

	ev_signal_init(&sigterm, signal_cb, SIGTERM);
	ev_signal_init(&sigint, signal_cb, SIGINT);
	ev_signal_init(&sighup, signal_cb, SIGHUP);
	ev_signal_init(&sigusr1, signal_cb, SIGUSR1);
	ev_signal_start(loop, &sigterm);
	ev_signal_start(loop, &sigint);
	ev_signal_start(loop, &sighup);
	ev_signal_start(loop, &sigusr1);
	/*
	 * libev takes them with a handler of its own and a pipe (no
	 * EVFLAG_SIGNALFD, which would want them blocked): the ones held
	 * since the start come in now, and the loop sees them first thing.
	 * Unblocked even if they came blocked from the parent.
	 */
	if (sigprocmask(SIG_UNBLOCK, &held, NULL) == -1)
		fatal("sigprocmask");
	if (worker_count > 1) {
		/* to the supervisor, which tells systemd */
		ev_timer_init(&watchdog, ping_cb, 0., 1.);
		ev_timer_again(loop, &watchdog);
		workers_ping();
		log_info("qproxy %s started", QPROXY_VERSION);
	} else {
		if (sd_watchdog_enabled(0, &usec) > 0) {
			ev_timer_init(&watchdog, watchdog_cb, 0., usec / 2e6);
			ev_timer_again(loop, &watchdog);
		}
		log_info("qproxy %s started", QPROXY_VERSION);
		/* taking over, systemd hears of this one from the old one */
		if (upgrade_inheriting()) {
			if (upgrade_ready(server) == -1) {
				/* the running process's file stays */
				if (ctl_made)
					control_close(control);
				return 1;
			}
			/* the old one took session tickets until now */
			tls_tickets_fresh(mono_now());
		} else
			sd_notify(0, "READY=1");
	}

	ev_run(loop, 0);

	upgrade_await_elder(server_config(server)->shutdown_timeout + 1);
	prepared_drop("stopped");
	log_info("qproxy stopped");
	control_close(control);
	server_free(server);
	strbuf_free(&errs);
	access_log_close();
	keylog_close();
	ev_loop_destroy(loop);
	wolfSSL_Cleanup();
	return 0;
}
