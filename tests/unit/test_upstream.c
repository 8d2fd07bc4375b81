/*
 * test_upstream.c: the line of requests waiting for room at a backend, and
 * which pooled connections a request may take.
 */
#include <sys/socket.h>

#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
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

/* cfg of one backend, "b", of the n servers given; the rest zero. */
static void
one_backend(struct config *cfg, struct config_backend *backend,
    struct config_server *servers, size_t n)
{
	memset(backend, 0, sizeof(*backend));
	memset(cfg, 0, sizeof(*cfg));
	backend->name = "b";
	backend->servers = servers;
	backend->nservers = n;
	cfg->backends = backend;
	cfg->nbackends = 1;
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
	server.text = "127.0.0.1:1";
	one_backend(&cfg, &backend, &server, 1);
	backend.max_conns = 1;
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

/* A backend of one server listening on 127.0.0.1, and its pools. */
struct idle_fixture {
	struct ev_loop		*loop;
	int			 lfd;
	struct config_server	 server;
	struct config_backend	 backend;
	struct config		 cfg;
	struct upstream_pool	*pools;
	struct upstream_server	*s;
};

static void
idle_setup(struct idle_fixture *f)
{
	struct sockaddr_in *in = &f->server.addr.u.in;
	socklen_t len = sizeof(*in);
	size_t first = 0, n;

	memset(f, 0, sizeof(*f));
	f->loop = ev_loop_new(EVFLAG_AUTO);
	in->sin_family = AF_INET;
	in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (f->loop == NULL ||
	    (f->lfd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    bind(f->lfd, &f->server.addr.u.sa, sizeof(*in)) == -1 ||
	    listen(f->lfd, 8) == -1 ||
	    getsockname(f->lfd, &f->server.addr.u.sa, &len) == -1) {
		perror("idle_setup");
		exit(1);
	}
	f->server.addr.len = len;
	f->server.text = "127.0.0.1";
	one_backend(&f->cfg, &f->backend, &f->server, 1);
	f->backend.max_idle = 8;
	if ((f->pools = upstream_pools_new(f->loop, &f->cfg)) == NULL) {
		perror("upstream_pools_new");
		exit(1);
	}
	f->s = upstream_pick(f->pools, 0, &first, 0, &n, 0);
}

static void
idle_teardown(struct idle_fixture *f)
{
	struct upstream_conn *c;

	while ((c = upstream_take_idle(f->s, false, NULL, NULL)) != NULL)
		upstream_close(c);
	upstream_pools_free(f->pools);
	close(f->lfd);
	ev_loop_destroy(f->loop);
}

/* A connection to the server, put in the pool; the server's end. */
static int
pool_one(struct idle_fixture *f)
{
	struct upstream_conn *c;
	int fd;

	if ((c = upstream_connect(f->s, NULL, NULL)) == NULL ||
	    (fd = accept(f->lfd, NULL, NULL)) == -1) {
		perror("pool_one");
		exit(1);
	}
	upstream_release(c);
	return fd;
}

struct taker {
	ev_io			 w;
	struct idle_fixture	*f;
	bool			 ask;
	struct upstream_conn	*got;
	bool			 ran;
};

static void
take_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct taker *t = (struct taker *)(void *)w;

	(void)revents;
	t->got = upstream_take_idle(t->f->s, t->ask, NULL, NULL);
	t->ran = true;
	ev_io_stop(loop, w);
}

/*
 * A request read in the same turn of the loop as the server's close of a
 * pooled connection (its watcher's event pending, to run after): the
 * connection is not taken, whether the socket is asked or not.
 */
static void
test_idle_close_in_the_same_poll(bool ask)
{
	struct idle_fixture f;
	struct taker t;
	int sfd, pair[2];

	idle_setup(&f);
	sfd = pool_one(&f);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == -1) {
		perror("socketpair");
		exit(1);
	}
	memset(&t, 0, sizeof(t));
	t.f = &f;
	t.ask = ask;
	ev_io_init(&t.w, take_cb, pair[0], EV_READ);
	ev_set_priority(&t.w, EV_MAXPRI);	/* before the pool's watcher */
	ev_io_start(f.loop, &t.w);
	close(sfd);			/* the server's keep-alive timeout */
	CHECK(write(pair[1], "r", 1) == 1);	/* and a request */
	usleep(10000);
	ev_run(f.loop, EVRUN_ONCE);
	CHECK(t.ran);
	CHECK(t.got == NULL);
	CHECK_EQ_INT(f.s->nidle, 0);
	if (t.got != NULL)
		upstream_close(t.got);
	close(pair[0]);
	close(pair[1]);
	idle_teardown(&f);
}

/*
 * A close after the last poll: the socket, when asked, tells; a request
 * that may go again does not ask, and takes the connection.
 */
static void
test_idle_close_after_the_poll(void)
{
	struct idle_fixture f;
	struct upstream_conn *c;
	int sfd;

	idle_setup(&f);
	sfd = pool_one(&f);
	close(sfd);
	usleep(10000);
	CHECK(upstream_take_idle(f.s, true, NULL, NULL) == NULL);
	CHECK_EQ_INT(f.s->nidle, 0);

	sfd = pool_one(&f);
	close(sfd);
	usleep(10000);
	CHECK((c = upstream_take_idle(f.s, false, NULL, NULL)) != NULL);
	if (c != NULL)
		upstream_close(c);
	idle_teardown(&f);
}

/* A live pooled connection is taken, asked or not: the last first. */
static void
test_idle_live_taken(void)
{
	struct idle_fixture f;
	struct upstream_conn *a, *b;
	int s1, s2;

	idle_setup(&f);
	s1 = pool_one(&f);
	s2 = pool_one(&f);
	ev_run(f.loop, EVRUN_NOWAIT);
	CHECK_EQ_INT(f.s->nidle, 2);
	CHECK((a = upstream_take_idle(f.s, true, NULL, NULL)) != NULL);
	CHECK((b = upstream_take_idle(f.s, false, NULL, NULL)) != NULL);
	CHECK(upstream_take_idle(f.s, false, NULL, NULL) == NULL);
	if (a != NULL)
		upstream_close(a);
	if (b != NULL)
		upstream_close(b);
	close(s1);
	close(s2);
	idle_teardown(&f);
}

/*
 * The server a new request starts at: by weight, smoothly; the backups
 * only when no other is open; by least_conn, requests under way for the
 * weight.
 */
static void
test_pick(void)
{
	struct config_server	 server[3];
	struct config_backend	 backend;
	struct config		 cfg;
	struct upstream_pool	*pools;
	struct upstream_server	*s;
	char			 seq[13], name[16];
	const char		*srv;
	size_t			 first, n;

	memset(server, 0, sizeof(server));
	server[0].text = "a";
	server[0].weight = 3;
	server[1].text = "b";
	server[1].weight = 1;
	server[2].text = "c";
	server[2].weight = 1;
	server[2].backup = 1;
	one_backend(&cfg, &backend, server, 3);
	backend.weighted = 1;
	backend.has_backup = 1;
	if ((pools = upstream_pools_new(NULL, &cfg)) == NULL) {
		perror("upstream_pools_new");
		exit(1);
	}
	for (int i = 0; i < 12; i++)
		seq[i] = upstream_pick(pools, 0, &first, 0, &n, 0)->cfg->text[0];
	seq[12] = '\0';
	/* 3 to 1, never three of a in a row past the first, no backup */
	CHECK_EQ_INT(n, 3);
	CHECK_EQ_INT(strspn(seq, "ab"), 12);
	CHECK_EQ_INT((int)(strchr(seq, 'b') - seq) < 4, 1);
	{
		int na = 0;

		for (int i = 0; i < 12; i++)
			na += seq[i] == 'a';
		CHECK_EQ_INT(na, 9);
	}
	CHECK(strstr(seq + 1, "aaaa") == NULL);

	/* qproxyctl's arguments, named as the configuration has them */
	CHECK(upstream_check_args(&cfg, "b a", false, name, sizeof(name),
	    &srv) == NULL);
	CHECK_EQ_STR(name, "b");
	CHECK_EQ_STR(srv, "a");
	CHECK_EQ_STR(upstream_check_args(&cfg, "b x", false, name,
	    sizeof(name), &srv), "no server x in backend b");
	CHECK_EQ_STR(upstream_check_args(&cfg, "z a", false, name,
	    sizeof(name), &srv), "no backend z");
	CHECK_EQ_STR(upstream_check_args(&cfg, "b", false, name,
	    sizeof(name), &srv), "expected BACKEND SERVER");

	/* a and b set aside: c, the backup */
	upstream_mark(pools, "b", "a", true);
	upstream_mark(pools, "b", "b", true);
	CHECK_EQ_STR(upstream_pick(pools, 0, &first, 0, &n, 0)->cfg->text, "c");
	CHECK_EQ_STR(upstream_pick(pools, 0, &first, 0, &n, 0)->cfg->text, "c");
	upstream_mark(pools, "b", "b", false);
	CHECK_EQ_STR(upstream_pick(pools, 0, &first, 0, &n, 0)->cfg->text, "b");
	upstream_mark(pools, "b", "a", false);
	CHECK_EQ_STR(upstream_pick(pools, 0, &first, 0, &n, 0)->cfg->text, "a");
	upstream_pools_free(pools);

	/* least_conn: a, of weight 3, takes up to 3 for b's 1 */
	backend.balance = CONFIG_BALANCE_LEAST_CONN;
	if ((pools = upstream_pools_new(NULL, &cfg)) == NULL)
		exit(1);
	for (int i = 0; i < 8; i++) {
		s = upstream_pick(pools, 0, &first, 0, &n, 0);
		s->ctr->active++;
		seq[i] = s->cfg->text[0];
	}
	seq[8] = '\0';
	{
		int na = 0;

		for (int i = 0; i < 8; i++)
			na += seq[i] == 'a';
		CHECK_EQ_INT(na, 6);
		CHECK(strchr(seq, 'c') == NULL);
	}
	upstream_pools_free(pools);
}

/* The last digit of the server client c's hash takes. */
static char
test_hash_pick(struct upstream_pool *pools, uint32_t c)
{
	size_t first, n;

	return upstream_pick(pools, 0, &first, 0, &n,
	    upstream_client_hash((const uint8_t *)&c, sizeof(c)))->cfg->text[7];
}

/* The last digit of the server client c's request goes to when the one
   it took first fails. */
static char
test_hash_retry(struct upstream_pool *pools, uint32_t c)
{
	uint64_t h = upstream_client_hash((const uint8_t *)&c, sizeof(c));
	size_t first, n;

	(void)upstream_pick(pools, 0, &first, 0, &n, h);
	return upstream_pick(pools, 0, &first, 1, &n, h)->cfg->text[7];
}

/* balance = client_hash: a client keeps its server; one gone moves only
   its own clients; a retry goes where it would go if its server were
   gone; weights share them out */
static void
test_client_hash(void)
{
	struct config_server	 server[4];
	struct config_backend	 backend;
	struct config		 cfg;
	struct upstream_pool	*pools;
	size_t			 count[4] = { 0 };
	char			 was[3000], retry[3000];
	int			 moved = 0, strays = 0, to1 = 0;

	memset(server, 0, sizeof(server));
	server[0].text = "10.0.0.1:80";
	server[1].text = "10.0.0.2:80";
	server[2].text = "10.0.0.3:80";
	server[3].text = "10.0.0.4:80";
	for (int i = 0; i < 4; i++)
		server[i].weight = 1;
	server[3].backup = 1;
	one_backend(&cfg, &backend, server, 4);
	backend.has_backup = 1;
	backend.balance = CONFIG_BALANCE_CLIENT_HASH;
	if ((pools = upstream_pools_new(NULL, &cfg)) == NULL)
		exit(1);
#define PICK(c) test_hash_pick(pools, c)
	for (uint32_t c = 0; c < 3000; c++) {
		was[c] = PICK(c);
		count[was[c] - '1']++;
		/* and again, after others: the same */
		if (c > 0 && PICK(c - 1) != was[c - 1])
			strays++;
	}
	CHECK_EQ_INT(strays, 0);
	CHECK_EQ_INT(count[3], 0);		/* the backup */
	for (int i = 0; i < 3; i++)
		CHECK(count[i] > 850 && count[i] < 1150);
	for (uint32_t c = 0; c < 3000; c++)
		retry[c] = test_hash_retry(pools, c);
	/* the second set aside: its clients move, the others stay */
	upstream_mark(pools, "b", "10.0.0.2:80", true);
	for (uint32_t c = 0; c < 3000; c++) {
		char now = PICK(c);

		if (was[c] == '2') {
			moved += now == '1' || now == '3';
			to1 += now == '1';
		} else
			strays += now != was[c];
		strays += retry[c] == was[c];
		if (was[c] == '2')	/* its retry: where it moved */
			strays += retry[c] != now;
	}
	CHECK_EQ_INT(strays, 0);
	CHECK_EQ_INT(moved, (int)count[1]);
	/* spread over both others, not all to the next in the list */
	CHECK(to1 > (int)count[1] / 3 && to1 < (int)count[1] * 2 / 3);
	upstream_pools_free(pools);

	/* weights 3:1:1: the first takes about three fifths */
	server[0].weight = 3;
	backend.weighted = 1;
	memset(count, 0, sizeof(count));
	if ((pools = upstream_pools_new(NULL, &cfg)) == NULL)
		exit(1);
	for (uint32_t c = 0; c < 3000; c++)
		count[PICK(c) - '1']++;
#undef PICK
	CHECK(count[0] > 1650 && count[0] < 1950);
	CHECK(count[1] > 450 && count[1] < 750);
	upstream_pools_free(pools);
}

/* client_hash: a server written twice has the same score twice; its
   retries still try every server once, the same for the same attempt */
static void
test_client_hash_twice(void)
{
	struct config_server	 server[3];
	struct config_backend	 backend;
	struct config		 cfg;
	struct upstream_pool	*pools;
	int			 bad = 0;

	memset(server, 0, sizeof(server));
	server[0].text = server[1].text = "10.0.0.1:80";
	server[2].text = "10.0.0.2:80";
	for (int i = 0; i < 3; i++)
		server[i].weight = 1;
	one_backend(&cfg, &backend, server, 3);
	backend.balance = CONFIG_BALANCE_CLIENT_HASH;
	if ((pools = upstream_pools_new(NULL, &cfg)) == NULL)
		exit(1);
	for (uint32_t c = 0; c < 200; c++) {
		uint64_t h = upstream_client_hash((const uint8_t *)&c,
		    sizeof(c));
		struct upstream_server *s[3];
		size_t first, n;

		for (size_t a = 0; a < 3; a++)
			s[a] = upstream_pick(pools, 0, &first, a, &n, h);
		bad += s[0] == s[1] || s[0] == s[2] || s[1] == s[2];
		bad += upstream_pick(pools, 0, &first, 1, &n, h) != s[1];
	}
	CHECK_EQ_INT(bad, 0);
	upstream_pools_free(pools);
}

/*
 * Failover's order (upstream_next_attempt): of the places a request has
 * not taken, those whose server new requests would take first, then
 * those passed over (down within fail_timeout, unhealthy), never a
 * disabled one; with UPSTREAM_NEXT_OPEN none passed over. Past
 * UPSTREAM_TRIED_MAX servers, simply the next not disabled. A down
 * server whose fail_timeout is up is open, and taking it (TAKE) starts
 * its trial.
 */
static struct upstream_counters *
nth(struct upstream_pool *pools, size_t k, size_t nservers)
{
	size_t first = 0, n;

	/* a later attempt's server is the list's (first + attempt)th */
	return upstream_pick(pools, 0, &first, k == 0 ? nservers : k, &n,
	    0)->ctr;
}

static void
test_next_attempt(void)
{
	static struct config_server server[UPSTREAM_TRIED_MAX + 1];
	static char names[UPSTREAM_TRIED_MAX + 1][8];
	struct config_backend backend;
	struct config cfg;
	struct upstream_pool *pools;
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	size_t first = 0, n;
	uint64_t tried;
	double now;

	if (loop == NULL)
		exit(1);
	now = mono_now();
	memset(server, 0, sizeof(server));
	for (size_t i = 0; i <= UPSTREAM_TRIED_MAX; i++) {
		snprintf(names[i], sizeof(names[i]), "s%zu", i);
		server[i].text = names[i];
		server[i].weight = 1;
	}
	one_backend(&cfg, &backend, server, 5);
	backend.fail_timeout = 10;
	if ((pools = upstream_pools_new(loop, &cfg)) == NULL)
		exit(1);
	/* the first request starts at s1 (the round robin's next) */
	CHECK_EQ_STR(upstream_pick(pools, 0, &first, 0, &n, 0)->cfg->text,
	    "s1");
	nth(pools, 2, n)->unhealthy = true;
	nth(pools, 3, n)->state = UPSTREAM_DOWN;
	nth(pools, 3, n)->down_since = now;
	nth(pools, 4, n)->disabled = true;
	/* places 1..4 from s1: s2 (unhealthy), s3 (down), s4, s0 */
	tried = UPSTREAM_TRIED(0);
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, 1, tried, 0, 0), 4);
	tried |= UPSTREAM_TRIED(4);
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, 1, tried, 0, 0), 1);
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, 1, tried, 0,
	    UPSTREAM_NEXT_OPEN), 5);
	tried |= UPSTREAM_TRIED(1);
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, 1, tried, 0, 0), 2);
	tried |= UPSTREAM_TRIED(2);
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, 1, tried, 0, 0), 5);
	/* s3's fail_timeout up: open, ahead of s2; taken, its trial starts */
	nth(pools, 3, n)->down_since = now - 11;
	tried = UPSTREAM_TRIED(0);
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, 1, tried, 0, 0), 2);
	CHECK(nth(pools, 3, n)->down_since == now - 11);
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, 1, tried, 0,
	    UPSTREAM_NEXT_TAKE), 2);
	CHECK(nth(pools, 3, n)->down_since >= now);
	upstream_pools_free(pools);

	/* past UPSTREAM_TRIED_MAX: in turn, whatever is passed over */
	one_backend(&cfg, &backend, server, UPSTREAM_TRIED_MAX + 1);
	if ((pools = upstream_pools_new(loop, &cfg)) == NULL)
		exit(1);
	first = 0;
	n = UPSTREAM_TRIED_MAX + 1;
	nth(pools, 5, n)->unhealthy = true;
	nth(pools, 6, n)->disabled = true;
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, 5, 0, 0, 0), 5);
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, 6, 0, 0, 0), 7);
	CHECK_EQ_INT(upstream_next_attempt(pools, 0, first, UPSTREAM_TRIED_MAX +
	    1, 0, 0, 0), UPSTREAM_TRIED_MAX + 1);
	upstream_pools_free(pools);
	ev_loop_destroy(loop);
}

/*
 * 1,000 backends of one server: a connection to it that closes or goes
 * back to its pool wakes the first waiter of each other backend's line,
 * and walks none of their lines when no request waits anywhere.
 */
/* N backends of one server, a listener on loopback (*lfd): their pools. */
static struct upstream_pool *
shared_server_pools(struct ev_loop *loop, struct config *cfg,
    struct config_backend *backends, size_t n, struct config_server *server,
    int *lfd)
{
	struct upstream_pool *pools;
	struct sockaddr_in *in;
	socklen_t len = sizeof(*in);

	memset(server, 0, sizeof(*server));
	in = &server->addr.u.in;
	in->sin_family = AF_INET;
	in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (loop == NULL || (*lfd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    bind(*lfd, &server->addr.u.sa, sizeof(*in)) == -1 ||
	    listen(*lfd, 8) == -1 ||
	    getsockname(*lfd, &server->addr.u.sa, &len) == -1) {
		perror("shared_server_pools");
		exit(1);
	}
	server->addr.len = len;
	server->text = "127.0.0.1";
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < n; i++) {
		memset(&backends[i], 0, sizeof(backends[i]));
		backends[i].name = "b";
		backends[i].servers = server;
		backends[i].nservers = 1;
		backends[i].max_idle = 8;
	}
	cfg->backends = backends;
	cfg->nbackends = n;
	if ((pools = upstream_pools_new(loop, cfg)) == NULL) {
		perror("upstream_pools_new");
		exit(1);
	}
	return pools;
}

/* A connection to s made and closed, accepted at lfd. */
static void
shared_server_release(struct upstream_server *s, int lfd)
{
	struct upstream_conn *c;
	int fd;

	if (s == NULL || (c = upstream_connect(s, NULL, NULL)) == NULL ||
	    (fd = accept(lfd, NULL, NULL)) == -1) {
		perror("upstream_connect");
		exit(1);
	}
	upstream_release(c);
	if ((c = upstream_take_idle(s, false, NULL, NULL)) != NULL)
		upstream_close(c);
	close(fd);
}

/*
 * 1,000 backends of one server: a connection to it that closes or goes
 * back to its pool wakes the first waiter of each other backend's line,
 * and walks none of their lines when no request waits anywhere.
 */
static void
test_shared_server_wake(void)
{
	enum { N = 1000 };
	static struct config_backend backends[N];
	struct config_server server;
	struct config cfg;
	struct upstream_pool *pools;
	struct upstream_server *s;
	struct waiter w;
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	unsigned long before;
	size_t first = 0, n;
	int lfd;

	pools = shared_server_pools(loop, &cfg, backends, N, &server, &lfd);
	s = upstream_pick(pools, 0, &first, 0, &n, 0);
	w.w.wake = record;
	w.w.queued = false;
	w.id = 7;
	nwoken = 0;
	for (int round = 0; round < 2; round++) {
		if (round == 1)
			upstream_wait(pools, N - 1, &w.w, false);
		before = upstream_lines_looked;
		shared_server_release(s, lfd);
		/* none waits: no line looked at; one does: it is woken */
		if (round == 0)
			CHECK_EQ_INT(upstream_lines_looked - before, 0);
		else	/* each line, until none has a waiter left */
			CHECK(upstream_lines_looked - before >= N);
		CHECK_EQ_INT(nwoken, round);
	}
	CHECK(!upstream_has_waiters(pools, N - 1));
	upstream_pools_free(pools);
	close(lfd);
	ev_loop_destroy(loop);
}

static int	woken_many[1000];
static size_t	nwoken_many;

static void
record_many(struct upstream_waiter *w)
{
	woken_many[nwoken_many++] = ((struct waiter *)(void *)w)->id;
}

/*
 * 1,000 backends of one server, each with a request in line, the last
 * backend's first: one connection's room wakes each line's first in the
 * order they came, looking at each line a few times, not once for each
 * line woken (a million looks).
 */
static void
test_shared_server_wake_many(void)
{
	enum { N = 1000 };
	static struct config_backend backends[N];
	static struct waiter w[N];
	struct config_server server;
	struct config cfg;
	struct upstream_pool *pools;
	struct upstream_server *s;
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	unsigned long before;
	size_t first = 0, n, inorder = 0;
	int lfd;

	pools = shared_server_pools(loop, &cfg, backends, N, &server, &lfd);
	s = upstream_pick(pools, 0, &first, 0, &n, 0);
	for (int i = 0; i < N; i++) {
		w[i].w.wake = record_many;
		w[i].w.queued = false;
		w[i].id = i;
		upstream_wait(pools, N - 1 - (size_t)i, &w[i].w, false);
	}
	nwoken_many = 0;
	before = upstream_lines_looked;
	shared_server_release(s, lfd);
	CHECK(upstream_lines_looked - before <= 4 * N);
	CHECK_EQ_INT(nwoken_many, N);
	for (size_t i = 0; i < nwoken_many; i++)
		if (woken_many[i] == (int)i)
			inorder++;
	CHECK_EQ_INT(inorder, N);
	upstream_pools_free(pools);
	close(lfd);
	ev_loop_destroy(loop);
}

/*
 * 2,000 backends of one server, and a reload that keeps them: each pool's
 * line is added to the server's load, the new ones' swapped for the old
 * ones' and the old ones dropped by a look-up of their places, not a walk
 * of the server's lines each (15 million before).
 */
static void
test_shared_server_reload(void)
{
	enum { N = 2000 };
	static struct config_backend backends[N];
	static char names[N][8];
	struct config_server server;
	struct config cfg;
	struct upstream_pool *old, *pools;
	struct upstream_server *s;
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct waiter w;
	unsigned long before = upstream_places_looked;
	size_t first = 0, n;
	int lfd;

	old = shared_server_pools(loop, &cfg, backends, N, &server, &lfd);
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "b%d", i);
		backends[i].name = names[i];
	}
	if ((pools = upstream_pools_new(loop, &cfg)) == NULL) {
		perror("upstream_pools_new");
		exit(1);
	}
	upstream_pools_inherit(pools, old);
	upstream_pools_free(old);
	CHECK(upstream_places_looked - before <= 200 * N);
	/* one line each, the old one: its waiter is woken */
	s = upstream_pick(pools, 0, &first, 0, &n, 0);
	CHECK_EQ_INT(s->load->nlines, N);
	w.w.wake = record;
	w.w.queued = false;
	w.id = 9;
	nwoken = 0;
	upstream_wait(pools, N / 2, &w.w, false);
	shared_server_release(s, lfd);
	CHECK_EQ_INT(nwoken, 1);
	upstream_pools_free(pools);
	close(lfd);
	ev_loop_destroy(loop);
}

int
main(void)
{
	test_pick();
	test_next_attempt();
	test_client_hash();
	test_client_hash_twice();
	test_line_order();
	test_idle_close_in_the_same_poll(false);
	test_idle_close_in_the_same_poll(true);
	test_idle_close_after_the_poll();
	test_idle_live_taken();
	test_shared_server_wake();
	test_shared_server_wake_many();
	test_shared_server_reload();
	UNIT_DONE();
}
