/* main.c: command line, start-up order, signals, the loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "tls.h"

#ifndef QPROXY_VERSION
#define QPROXY_VERSION "unknown"
#endif

static struct quic_server *server;

static void
usage(void)
{
	fprintf(stderr, "usage: qproxy [-ftv] [-c file]\n");
	exit(1);
}

static void
shutdown_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	log_warnx("shutdown_timeout reached; closing the remaining "
	    "connections");
	quic_server_close_all(server);
	ev_break(loop, EVBREAK_ALL);
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	static ev_timer deadline;

	if (server->shutting_down) {
		log_info("second signal %d: stopping now", w->signum);
		quic_server_close_all(server);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	log_info("signal %d: shutting down gracefully (at most %.0f s)",
	    w->signum, server->cfg->shutdown_timeout);
	ev_timer_init(&deadline, shutdown_timeout_cb,
	    server->cfg->shutdown_timeout, 0.);
	ev_timer_start(loop, &deadline);
	ev_unref(loop);		/* the deadline alone keeps nothing alive */
	quic_server_shutdown(server);
}

int
main(int argc, char *argv[])
{
	const char *path = CONFIG_DEFAULT_PATH;
	struct config *cfg;
	struct ev_loop *loop;
	ev_signal sigterm, sigint;
	int ch, check = 0;

	while ((ch = getopt(argc, argv, "c:ftv")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'f':
			/* qproxy always stays in the foreground */
			break;
		case 't':
			check = 1;
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

	log_init(LOG_LEVEL_INFO);
	if ((cfg = config_load(path, stderr)) == NULL)
		return 1;
	if (check) {
		printf("configuration OK\n");
		config_free(cfg);
		return 0;
	}
	log_setlevel(cfg->log_level);
	signal(SIGPIPE, SIG_IGN);
	if (tls_init() == -1)
		fatalx("cannot initialise wolfSSL");

	loop = ev_default_loop(EVFLAG_AUTO);
	if ((server = quic_server_new(loop, cfg)) == NULL)
		fatalx("out of memory");
	if (quic_server_listen(server) == -1) {
		quic_server_free(server);
		config_free(cfg);
		return 1;
	}
	ev_signal_init(&sigterm, signal_cb, SIGTERM);
	ev_signal_init(&sigint, signal_cb, SIGINT);
	ev_signal_start(loop, &sigterm);
	ev_signal_start(loop, &sigint);
	log_info("qproxy %s started", QPROXY_VERSION);

	ev_run(loop, 0);

	log_info("qproxy stopped");
	quic_server_free(server);
	config_free(cfg);
	ev_loop_destroy(loop);
	wolfSSL_Cleanup();
	return 0;
}
