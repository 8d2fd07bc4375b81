/* test_upstream.c: the line of requests waiting for room at a backend. */
#include <stdlib.h>

#include "config.h"
#include "upstream.h"
#include "unit.h"

struct waiter {
	struct upstream_waiter	 w;
	int			 id;
};

static int	woken[8];
static int	nwoken;

static void
record(struct upstream_waiter *w)
{
	woken[nwoken++] = ((struct waiter *)(void *)w)->id;
}

/*
 * Wakes everyone in the line, first to last, and returns their ids as
 * digits: "123".
 */
static const char *
drain(struct upstream_pool *pools)
{
	static char	 order[9];
	int		 i;

	nwoken = 0;
	while (upstream_has_waiters(pools, 0))
		upstream_wake(pools, 0);
	for (i = 0; i < nwoken && i < 8; i++)
		order[i] = (char)('0' + woken[i]);
	order[i] = '\0';
	return order;
}

static void
test_line_order(void)
{
	struct config_server	 server;
	struct config_backend	 backend;
	struct config		 cfg;
	struct upstream_pool	*pools;
	struct waiter		 w[5];
	int			 i;

	memset(&server, 0, sizeof(server));
	memset(&backend, 0, sizeof(backend));
	memset(&cfg, 0, sizeof(cfg));
	server.text = "127.0.0.1:1";
	backend.name = "b";
	backend.servers = &server;
	backend.nservers = 1;
	backend.max_conns = 1;
	cfg.backends = &backend;
	cfg.nbackends = 1;
	if ((pools = upstream_pools_new(NULL, &cfg)) == NULL) {
		perror("upstream_pools_new");
		exit(1);
	}
	for (i = 0; i < 5; i++) {
		w[i].w.wake = record;
		w[i].w.queued = false;
		w[i].id = i + 1;
	}

	/* in order of coming */
	for (i = 0; i < 3; i++)
		upstream_wait(pools, 0, &w[i].w, false);
	CHECK_EQ_STR(drain(pools), "123");

	/*
	 * Two woken at once that find no room come back, in the order they
	 * were woken, ahead of those who came after them.
	 */
	for (i = 0; i < 4; i++)
		upstream_wait(pools, 0, &w[i].w, false);
	nwoken = 0;
	upstream_wake(pools, 0);
	upstream_wake(pools, 0);
	CHECK_EQ_INT(nwoken, 2);
	upstream_wait(pools, 0, &w[0].w, true);
	upstream_wait(pools, 0, &w[1].w, true);
	upstream_wait(pools, 0, &w[4].w, false);
	CHECK_EQ_STR(drain(pools), "12345");

	/* one woken from the middle goes back between its neighbours */
	for (i = 0; i < 3; i++)
		upstream_wait(pools, 0, &w[i].w, false);
	upstream_unwait(pools, 0, &w[1].w);
	upstream_wait(pools, 0, &w[1].w, true);
	CHECK_EQ_STR(drain(pools), "123");
	CHECK(!upstream_has_waiters(pools, 0));

	upstream_pools_free(pools);
}

int
main(void)
{
	test_line_order();
	UNIT_DONE();
}
