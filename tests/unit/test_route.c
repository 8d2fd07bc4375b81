/* test_route.c: picking the route for a request. */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "request.h"
#include "route.h"
#include "unit.h"

#define nitems(a)	(sizeof(a) / sizeof((a)[0]))

/* the name of the route that matches, or "-" when none does */
static const char *
test_match(const struct config *cfg, const char *authority, const char *path)
{
	const struct config_route	*r;

	r = route_match(cfg, authority, authority ? strlen(authority) : 0,
	    path, path ? strlen(path) : 0);
	return r == NULL ? "-" : r->name;
}

#define CHECK_ROUTE(cfg, authority, path, name)				\
	CHECK_EQ_STR(test_match(cfg, authority, path), name)

/* a configuration filled by hand, as configuration loading leaves it */
static void
test_by_hand(void)
{
	struct config_route	 routes[] = {
		{ .name = "api", .host = "example.com",
		    .path_prefix = "/api/" },
		{ .name = "exact", .host = "example.com" },
		{ .name = "wild", .host = "*.example.com" },
		{ .name = "wildimg", .host = "*.example.com",
		    .path_prefix = "/img" },
		{ .name = "v6", .host = "::1" },
		{ .name = "v4", .host = "127.0.0.1", .path_prefix = "/" },
		{ .name = "static", .path_prefix = "/static/" },
	};
	struct config		 cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.routes = routes;
	cfg.nroutes = sizeof(routes) / sizeof(routes[0]);

	/* exact host, path prefix, order */
	CHECK_ROUTE(&cfg, "example.com", "/api/v1/users", "api");
	CHECK_ROUTE(&cfg, "example.com", "/api/", "api");
	CHECK_ROUTE(&cfg, "example.com", "/api", "exact");
	CHECK_ROUTE(&cfg, "example.com", "/", "exact");
	CHECK_ROUTE(&cfg, "example.com", "/static/a.css", "exact");
	CHECK_ROUTE(&cfg, "example.org", "/api/", "-");
	CHECK_ROUTE(&cfg, "example.co", "/", "-");
	CHECK_ROUTE(&cfg, "example.comm", "/", "-");
	CHECK_ROUTE(&cfg, "xexample.com", "/", "-");

	/* the query is part of the path */
	CHECK_ROUTE(&cfg, "example.com", "/api/?q=1", "api");
	CHECK_ROUTE(&cfg, "example.com", "/api?x=/api/", "exact");

	/* case does not matter in the host, only there */
	CHECK_ROUTE(&cfg, "EXAMPLE.Com", "/api/x", "api");
	CHECK_ROUTE(&cfg, "example.com", "/API/x", "exact");
	CHECK_ROUTE(&cfg, "WWW.Example.COM", "/", "wild");

	/* port and a final dot go */
	CHECK_ROUTE(&cfg, "example.com:443", "/api/x", "api");
	CHECK_ROUTE(&cfg, "example.com:8443", "/", "exact");
	CHECK_ROUTE(&cfg, "example.com.", "/", "exact");
	CHECK_ROUTE(&cfg, "example.com.:443", "/", "exact");
	CHECK_ROUTE(&cfg, "example.com:", "/", "exact");

	/* wildcards: one label or more, never the domain itself */
	CHECK_ROUTE(&cfg, "a.example.com", "/", "wild");
	CHECK_ROUTE(&cfg, "a.b.example.com:443", "/img/x.png", "wild");
	CHECK_ROUTE(&cfg, "aexample.com", "/", "-");
	CHECK_ROUTE(&cfg, ".example.com", "/", "-");
	CHECK_ROUTE(&cfg, "example.com.evil.org", "/", "-");

	/* IPv6 and IPv4 literals */
	CHECK_ROUTE(&cfg, "[::1]:4433", "/", "v6");
	CHECK_ROUTE(&cfg, "[::1]", "/", "v6");
	CHECK_ROUTE(&cfg, "[0:0::1]:443", "/", "v6");
	CHECK_ROUTE(&cfg, "[::2]:4433", "/", "-");
	CHECK_ROUTE(&cfg, "[::1", "/", "-");
	CHECK_ROUTE(&cfg, "127.0.0.1:4433", "/x", "v4");
	CHECK_ROUTE(&cfg, "127.0.0.1", "", "-");

	/* any host */
	CHECK_ROUTE(&cfg, "other.org", "/static/x", "static");
	CHECK_ROUTE(&cfg, "", "/static/x", "static");
	CHECK_ROUTE(&cfg, NULL, "/static/x", "static");
	CHECK_ROUTE(&cfg, "other.org", "/stat", "-");

	/*
	 * a run of "/" in the path matches one of the prefix's, as backends
	 * that merge slashes read it; the span says how much it took
	 */
	CHECK_ROUTE(&cfg, "example.com", "//api/x", "api");
	CHECK_ROUTE(&cfg, "example.com", "/api//x", "api");
	CHECK_ROUTE(&cfg, "other.org", "///static///x", "static");
	CHECK_ROUTE(&cfg, "other.org", "/static/", "static");
	CHECK_EQ_INT(route_prefix_span("/api/", "//api//x", 8), 7);
	CHECK_EQ_INT(route_prefix_span("/api/", "/api/x", 6), 5);
	CHECK_EQ_INT(route_prefix_span("/api", "/api//x", 7), 4);
	CHECK_EQ_INT(route_prefix_span("/api/", "/api", 4), -1);
	CHECK_EQ_INT(route_prefix_span("/api/", "/ap//i/", 7), -1);
	CHECK_EQ_INT(route_prefix_span("/", "//", 2), 2);
	/* a prefix that has "//" itself wants it */
	CHECK_EQ_INT(route_prefix_span("/a//b", "/a//b", 5), 5);
	CHECK_EQ_INT(route_prefix_span("/a//b", "/a/b", 4), -1);
	CHECK_EQ_INT(route_prefix_span(NULL, "/x", 2), 0);
	/*
	 * so does "%2F" or "%5C", in either case, which backends may decode
	 * and read as "/": a route guarding "/api/" holds for those spellings
	 */
	CHECK_ROUTE(&cfg, "example.com", "/api%2Fx", "api");
	CHECK_ROUTE(&cfg, "example.com", "/%2fapi%5cx", "api");
	CHECK_ROUTE(&cfg, "example.com", "/%5C/api/%2F/x", "api");
	CHECK_ROUTE(&cfg, "other.org", "/static%2f", "static");
	CHECK_ROUTE(&cfg, "other.org", "/static%2", "-");
	CHECK_ROUTE(&cfg, "other.org", "/static%2E", "-");
	/* in the query it is no slash */
	CHECK_ROUTE(&cfg, "other.org", "/static?%2Fx", "-");
	CHECK_EQ_INT(route_prefix_span("/api/", "/api%2F%2fx", 11), 10);
	CHECK_EQ_INT(route_prefix_span("/api/", "/%5Capi/x", 9), 8);
	CHECK_EQ_INT(route_prefix_span("/api/", "/api%2", 6), -1);
	CHECK_EQ_INT(route_prefix_span("/a%2Fb", "/a%2Fb", 6), 6);
	/*
	 * and so does a segment's parameters before a "/" of the prefix,
	 * which Tomcat and Jetty take off: "/api;x/" is "/api/" to them
	 */
	CHECK_ROUTE(&cfg, "example.com", "/api;x/y", "api");
	CHECK_ROUTE(&cfg, "example.com", "/api;/y", "api");
	CHECK_ROUTE(&cfg, "other.org", "/static;a=1;b=2%2F/x", "static");
	CHECK_ROUTE(&cfg, "other.org", "/;x/static/x", "static");
	CHECK_ROUTE(&cfg, "other.org", "/stat;x/ic/x", "-");
	CHECK_ROUTE(&cfg, "other.org", "/static;x", "-");
	CHECK_ROUTE(&cfg, "other.org", "/static?;x/", "-");
	CHECK_EQ_INT(route_prefix_span("/api/", "/api;x/y", 8), 7);
	CHECK_EQ_INT(route_prefix_span("/api/", "/api;x//y", 9), 8);
	/* an encoded "/" is part of the parameters (Tomcat) */
	CHECK_EQ_INT(route_prefix_span("/api/v/", "/api;a/v;b%2Fy", 14), -1);
	CHECK_EQ_INT(route_prefix_span("/app/admin/", "/app;%2Fx/admin/", 16),
	    16);
	/* empty segments' parameters go with the run of "/" */
	CHECK_EQ_INT(route_prefix_span("/static/", "/;x/static/x", 12), 11);
	CHECK_EQ_INT(route_prefix_span("/api/v/", "/api/;x/v/", 10), 10);
	CHECK_EQ_INT(route_prefix_span("/api/", "/api/;x/;y//z", 13), 12);
	CHECK_EQ_INT(route_prefix_span("/api/", "/api;x", 6), -1);
	CHECK_EQ_INT(route_prefix_span("/api", "/api;x/y", 8), 4);
	CHECK_EQ_INT(route_prefix_span("/a;b/", "/a;b/c", 6), 5);

	/* lengths are honoured: no NUL needed */
	CHECK(route_match(&cfg, "example.com.org", 11, "/api/zzz", 5) ==
	    &routes[0]);
	CHECK(route_match(&cfg, "example.com", 11, "/api/", 4) == &routes[1]);

	/* no routes at all */
	cfg.nroutes = 0;
	CHECK_ROUTE(&cfg, "example.com", "/", "-");
}

/* A request of this method, with fields "name: value" after it. */
static void
test_request(struct request *r, const char *method, const char *const *fields)
{
	request_init(r, 16384);
	(void)request_add(r, (const uint8_t *)":method", 7,
	    (const uint8_t *)method, strlen(method));
	for (; fields != NULL && *fields != NULL; fields++) {
		const char *colon = strchr(*fields, ':');

		(void)request_add(r, (const uint8_t *)*fields,
		    (size_t)(colon - *fields), (const uint8_t *)colon + 2,
		    strlen(colon + 2));
	}
}

/* The route a request of method and fields to path takes. */
static const char *
test_match_req(const struct config *cfg, const char *method,
    const char *path, const char *const *fields)
{
	const struct config_route *m;
	struct request r;

	test_request(&r, method, fields);
	m = route_match_host(cfg, "h", 1, path, strlen(path), &r);
	request_free(&r);
	return m != NULL ? m->name : "-";
}

/* methods: a route takes only the requests of its methods */
static void
test_methods(void)
{
	struct config_route	 routes[] = {
		{ .name = "read", .path_prefix = "/api/",
		    .methods = " GET HEAD " },
		{ .name = "write", .path_prefix = "/api/",
		    .methods = " POST PATCH-X " },
		{ .name = "rest" },
	};
	struct config		 cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.routes = routes;
	cfg.nroutes = sizeof(routes) / sizeof(routes[0]);
#define M(method, path) test_match_req(&cfg, method, path, NULL)
	CHECK_EQ_STR(M("GET", "/api/x"), "read");
	CHECK_EQ_STR(M("HEAD", "/api/x"), "read");
	CHECK_EQ_STR(M("POST", "/api/x"), "write");
	CHECK_EQ_STR(M("PATCH-X", "/api/x"), "write");
	/* whole names only, in their case */
	CHECK_EQ_STR(M("PATCH", "/api/x"), "rest");
	CHECK_EQ_STR(M("GE", "/api/x"), "rest");
	CHECK_EQ_STR(M("ET", "/api/x"), "rest");
	CHECK_EQ_STR(M("get", "/api/x"), "rest");
	CHECK_EQ_STR(M("DELETE", "/api/x"), "rest");
	CHECK_EQ_STR(M("GET", "/other"), "rest");
#undef M
	/*
	 * a method-override field's methods must be the route's too: an
	 * application that takes it would make a "read" request a DELETE
	 */
#define O(method, field) test_match_req(&cfg, method, "/api/x", \
	    (const char *const[]){ field, NULL })
	CHECK_EQ_STR(O("GET", "x-http-method-override: DELETE"), "rest");
	CHECK_EQ_STR(O("GET", "x-http-method: delete"), "rest");
	CHECK_EQ_STR(O("GET", "x-method-override: Delete"), "rest");
	CHECK_EQ_STR(O("GET", "x-http-method-override: HEAD"), "read");
	CHECK_EQ_STR(O("POST", "x-http-method-override: patch-x"), "write");
	CHECK_EQ_STR(O("POST", "x-http-method-override: GET"), "rest");
	/* every element of a list, an empty one being none */
	CHECK_EQ_STR(O("GET", "x-http-method-override: HEAD, ,GET"), "read");
	CHECK_EQ_STR(O("GET", "x-http-method-override: HEAD,DELETE"), "rest");
	CHECK_EQ_STR(O("GET", "x-http-method-override: HEAD GET"), "rest");
	CHECK_EQ_STR(O("GET", "x-http-method-override: "), "read");
	CHECK_EQ_STR(O("GET", "x-http-method-override: "
	    "GETGETGETGETGETGETGETGETGETGETGET"), "rest");
	CHECK_EQ_STR(O("GET", "x-http-method-overrides: DELETE"), "read");
#undef O
	/* no request given: the methods are not looked at */
	CHECK_EQ_STR(route_match_host(&cfg, "h", 1, "/api/", 5, NULL)->name,
	    "read");
	CHECK(route_method_in(" GET HEAD OPTIONS ", "OPTIONS"));
	CHECK(!route_method_in(" GET HEAD OPTIONS ", "OPTION"));
	CHECK(!route_method_in(" ", "GET"));
	CHECK(!route_method_in(" GET ", ""));
}

/* header: a route takes only requests with all of its fields */
static void
test_headers(void)
{
	struct config_header	 canary[] = {
		{ .name = "x-canary", .value = "1", .namelen = 8,
		    .valuelen = 1 },
		{ .name = "x-team", .namelen = 6 },	/* any value */
	}, beta[] = {
		{ .name = "x-canary", .value = "beta", .namelen = 8,
		    .valuelen = 4 },
	};
	struct config_route	 routes[] = {
		{ .name = "canary", .match_headers = { canary, 2 } },
		{ .name = "beta", .match_headers = { beta, 1 } },
		{ .name = "rest" },
	};
	struct config		 cfg;
	static const char *const both[] = { "x-canary: 1", "x-team: a", NULL },
	    *one[] = { "x-canary: 1", NULL },
	    *empty_team[] = { "x-team: ", "x-canary: 1", NULL },
	    *two[] = { "x-canary: 2", "x-canary: beta", NULL },
	    *part[] = { "x-canary: 10", "x-team: a", NULL };

	memset(&cfg, 0, sizeof(cfg));
	cfg.routes = routes;
	cfg.nroutes = sizeof(routes) / sizeof(routes[0]);
	CHECK_EQ_STR(test_match_req(&cfg, "GET", "/", both), "canary");
	CHECK_EQ_STR(test_match_req(&cfg, "GET", "/", empty_team), "canary");
	CHECK_EQ_STR(test_match_req(&cfg, "GET", "/", one), "rest");
	/* any of the fields of that name */
	CHECK_EQ_STR(test_match_req(&cfg, "GET", "/", two), "beta");
	/* the whole value */
	CHECK_EQ_STR(test_match_req(&cfg, "GET", "/", part), "rest");
	CHECK_EQ_STR(test_match_req(&cfg, "GET", "/", NULL), "rest");
}

/* a catch-all route after the others takes what they do not */
static void
test_catch_all(void)
{
	struct config_route	 routes[] = {
		{ .name = "first", .path_prefix = "/a" },
		{ .name = "shadowed", .path_prefix = "/ab" },
		{ .name = "all" },
		{ .name = "never", .host = "example.com" },
	};
	struct config		 cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.routes = routes;
	cfg.nroutes = sizeof(routes) / sizeof(routes[0]);
	CHECK_ROUTE(&cfg, "example.com", "/abc", "first");
	CHECK_ROUTE(&cfg, "example.com", "/b", "all");
	CHECK_ROUTE(&cfg, "x", "", "all");
}

/* A client at the address text, for route_allows and route_trusted_proxy. */
static const struct sockaddr *
client_at(const char *text)
{
	static struct sockaddr_in	 in;
	static struct sockaddr_in6	 in6;

	memset(&in, 0, sizeof(in));
	memset(&in6, 0, sizeof(in6));
	if (inet_pton(AF_INET, text, &in.sin_addr) == 1) {
		in.sin_family = AF_INET;
		return (struct sockaddr *)&in;
	}
	if (inet_pton(AF_INET6, text, &in6.sin6_addr) != 1)
		abort();
	in6.sin6_family = AF_INET6;
	return (struct sockaddr *)&in6;
}

static bool
allows(const struct config_route *r, const char *text)
{
	return route_allows(r, client_at(text));
}

/* A configuration file's text loaded, in a directory of its own. */
static char	 load_dir[PATH_MAX / 2];

static struct config *
load_text(const char *text)
{
	struct config	*cfg;
	char		 path[PATH_MAX];

	snprintf(load_dir, sizeof(load_dir), "%s/qproxy-test.XXXXXX",
	    getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(load_dir) == NULL) {
		perror(load_dir);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/cert.pem", load_dir);
	unit_write_file(path, "");
	if (chdir(load_dir) == -1) {
		perror(load_dir);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/qproxy.conf", load_dir);
	unit_write_file(path, text);
	cfg = config_load(path, stderr);
	unlink(path);
	snprintf(path, sizeof(path), "%s/cert.pem", load_dir);
	unlink(path);
	if (chdir("/") == -1 || rmdir(load_dir) == -1)
		perror(load_dir);
	return cfg;
}

#define LOAD_HEAD							\
	"[listener l]\n"						\
	"address = 127.0.0.1:4433\n"					\
	"certificate = cert.pem\n"					\
	"private_key = cert.pem\n"					\
	"[backend b]\n"						\
	"server = 127.0.0.1:8080\n"

/* what config_load keeps matches as it should */
static void
test_loaded(void)
{
	struct config	*cfg;
	const char	*text =
	    "[global]\n"
	    "trusted_proxies = 10.0.0.0/8\n"
	    "trusted_proxies = 2001:db8::1\n"
	    LOAD_HEAD
	    "[route upper]\n"
	    "host = WWW.Example.COM\n"
	    "backend = b\n"
	    "[route wild]\n"
	    "host = *.EXAMPLE.com.\n"
	    "path_prefix = /Img/\n"
	    "backend = b\n"
	    "[route v6]\n"
	    "host = [::0:1]\n"
	    "backend = b\n"
	    "[route acl]\n"
	    "host = acl.test\n"
	    "deny = 10.1.2.3\n"
	    "allow = 10.0.0.0/8\n"
	    "allow = 192.0.2.128/25\n"
	    "allow = 2001:db8:8000::/33\n"
	    "deny = all\n"
	    "backend = b\n";

	cfg = load_text(text);
	CHECK(cfg != NULL);
	if (cfg != NULL) {
		CHECK_ROUTE(cfg, "www.example.com", "/", "upper");
		CHECK_ROUTE(cfg, "WWW.EXAMPLE.COM:443", "/", "upper");
		CHECK_ROUTE(cfg, "a.example.com", "/Img/x", "wild");
		CHECK_ROUTE(cfg, "a.example.com", "/img/x", "-");
		CHECK_ROUTE(cfg, "A.Example.Com.", "/Img/", "wild");
		CHECK_ROUTE(cfg, "[::1]:4433", "/", "v6");
		CHECK_ROUTE(cfg, "example.com", "/Img/", "-");
		CHECK_EQ_INT(cfg->routes[0].backend, 0);
		CHECK(allows(&cfg->routes[0], "203.0.113.1"));
		CHECK_EQ_INT(cfg->ntrusted, 2);
		CHECK(route_trusted_proxy(cfg, client_at("10.200.0.1")));
		CHECK(route_trusted_proxy(cfg, client_at("2001:db8::1")));
		CHECK(!route_trusted_proxy(cfg, client_at("2001:db8::2")));
		CHECK(!route_trusted_proxy(cfg, client_at("11.0.0.1")));
		CHECK_EQ_INT(cfg->routes[3].nacl, 5);
		CHECK(!allows(&cfg->routes[3], "10.1.2.3"));
		CHECK(allows(&cfg->routes[3], "10.1.2.4"));
		CHECK(allows(&cfg->routes[3], "10.255.255.255"));
		CHECK(!allows(&cfg->routes[3], "11.0.0.0"));
		CHECK(allows(&cfg->routes[3], "192.0.2.128"));
		CHECK(allows(&cfg->routes[3], "192.0.2.255"));
		CHECK(!allows(&cfg->routes[3], "192.0.2.127"));
		CHECK(allows(&cfg->routes[3], "2001:db8:8000::1"));
		CHECK(allows(&cfg->routes[3], "2001:db8:ffff:ffff::1"));
		CHECK(!allows(&cfg->routes[3], "2001:db8:7fff::1"));
		/* an IPv4 rule says nothing of IPv6 clients, nor the reverse */
		CHECK(!allows(&cfg->routes[3], "::ffff:10.0.0.1"));
		CHECK(!allows(&cfg->routes[3], "::1"));
	}
	config_free(cfg);
}

static const char *const index_hosts[] = {
	"a.x", "b.a.x", "c.b.a.x", "x", "A.X", "*.x", "*.a.x", "*.b.a.x",
	"*.c.b.a.x", "[::1]", "127.0.0.1", "a_b.x", "*.y", "y", "q.y",
};
static const char *const index_prefixes[] = { "/", "/a", "/a/b", "/z" };
static const char *const index_methods[] = { "GET", "POST", "GET HEAD" };

/*
 * 600 routes of a few hosts, wildcards, no host, prefixes and methods, in
 * a random order, so that the first to match may be any of them.
 */
static struct config *
load_random_routes(void)
{
	struct config	*cfg;
	char		*text = NULL;
	size_t		 len = 0;
	FILE		*fp = open_memstream(&text, &len);

	if (fp == NULL)
		abort();
	fputs(LOAD_HEAD, fp);
	for (int i = 0; i < 600; i++) {
		unsigned h = unit_rand() % (nitems(index_hosts) + 3);

		bool any = h >= nitems(index_hosts);

		/* few take every request of a host, none of every host */
		fprintf(fp, "[route r%d]\nbackend = b\n", i);
		if (!any)
			fprintf(fp, "host = %s\n", index_hosts[h]);
		if (any)	/* not "/" */
			fprintf(fp, "path_prefix = %s\n", index_prefixes[1 +
			    unit_rand() % (nitems(index_prefixes) - 1)]);
		else if (unit_rand() % 4 != 0)
			fprintf(fp, "path_prefix = %s\n", index_prefixes[
			    unit_rand() % nitems(index_prefixes)]);
		if (any || unit_rand() % 3 == 0)
			fprintf(fp, "methods = %s\n",
			    index_methods[unit_rand() % nitems(index_methods)]);
	}
	fclose(fp);
	cfg = load_text(text);
	free(text);
	return cfg;
}

/* route_match_host by the index, and by a walk of every route */
static const struct config_route *
match_both(struct config *cfg, const char *authority, const char *path,
    const struct request *req, const struct config_route **walked)
{
	struct route_index *ix = cfg->route_index;
	const struct config_route *r;
	const char *host;
	char buf[INET6_ADDRSTRLEN];
	size_t hostlen;

	route_host(authority, strlen(authority), buf, sizeof(buf), &host,
	    &hostlen);
	r = route_match_host(cfg, host, hostlen, path, strlen(path), req);
	cfg->route_index = NULL;
	*walked = route_match_host(cfg, host, hostlen, path, strlen(path),
	    req);
	cfg->route_index = ix;
	return r;
}

/* The route the index finds is the one a walk of them all finds. */
static void
test_index_agrees_with_walk(void)
{
	static const char *const authorities[] = {
		"a.x", "A.x:443", "a.x.", "b.a.x", "B.A.X", "c.b.a.x",
		"d.c.b.a.x", "e.d.c.b.a.x", "x", "X", "z.x", ".x", "..x",
		"q.y", "y", "yy", "p.q.y", "[::1]:4433", "[0::1]",
		"127.0.0.1:8443", "", "a_b.x", "nosuch.example", "a..x",
	};
	static const char *const paths[] = { "/", "/a", "/a/b/c", "/z",
	    "//a", "/A" };
	static const char *const methods[] = { "GET", "POST", "HEAD" };
	const struct config_route *r, *walked;
	struct config *cfg = load_random_routes();
	struct request req;
	unsigned n = 0, differ = 0, found = 0, nwinners = 0;
	bool won[600] = { false };

	CHECK(cfg != NULL && cfg->route_index != NULL);
	if (cfg == NULL)
		return;
	for (size_t a = 0; a < nitems(authorities); a++)
		for (size_t p = 0; p < nitems(paths); p++)
			for (size_t m = 0; m <= nitems(methods); m++) {
				struct request *rq = NULL;

				if (m < nitems(methods)) {
					test_request(&req, methods[m], NULL);
					rq = &req;
				}
				r = match_both(cfg, authorities[a], paths[p],
				    rq, &walked);
				if (rq != NULL)
					request_free(rq);
				n++;
				found += r != NULL;
				if (r != NULL && !won[r - cfg->routes]) {
					won[r - cfg->routes] = true;
					nwinners++;
				}
				if (r != walked) {
					differ++;
					fprintf(stderr, "%s %s: %s, walked "
					    "%s\n", authorities[a], paths[p],
					    r != NULL ? r->name : "-",
					    walked != NULL ? walked->name :
					    "-");
				}
			}
	CHECK_EQ_INT(differ, 0);
	/* most requests find a route, and many routes are found */
	CHECK(found > n / 2);
	CHECK(nwinners > 15);
	config_free(cfg);
}

/*
 * 10,000 hosts and 2,000 prefixes without one: a request's route is found
 * among those of its host and of the prefixes its path starts with.
 */
static void
test_index_tries(void)
{
	struct config	*cfg;
	char		*text = NULL, host[64], name[16];
	size_t		 len = 0;
	unsigned long	 before;
	FILE		*fp = open_memstream(&text, &len);

	if (fp == NULL)
		abort();
	fputs(LOAD_HEAD, fp);
	for (int i = 1; i <= 10000; i++)
		fprintf(fp, "[route r%d]\nhost = site%d.example.com\n"
		    "backend = b\n", i, i);
	for (int i = 1; i <= 2000; i++)
		fprintf(fp, "[route p%d]\npath_prefix = /svc%d/\n"
		    "backend = b\n", i, i);
	fputs("[route rest]\nbackend = b\n", fp);
	fclose(fp);
	cfg = load_text(text);
	free(text);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	for (int i = 1; i <= 10000; i += 999) {
		snprintf(host, sizeof(host), "Site%d.example.com:443", i);
		snprintf(name, sizeof(name), "r%d", i);
		before = route_tries;
		CHECK_EQ_STR(test_match(cfg, host, "/"), name);
		CHECK(route_tries - before == 1);
	}
	before = route_tries;
	CHECK_ROUTE(cfg, "site10001.example.com", "/", "rest");
	CHECK(route_tries - before == 1);
	/* 2,000 prefixes without a host: those the path starts with */
	before = route_tries;
	CHECK_ROUTE(cfg, "site10001.example.com", "/svc2000/x", "p2000");
	CHECK_ROUTE(cfg, "site10001.example.com", "//svc1999//x", "p1999");
	CHECK_ROUTE(cfg, "site1.example.com", "/svc1999/x", "r1");
	CHECK(route_tries - before == 3);
	before = route_tries;
	CHECK_ROUTE(cfg, "site10001.example.com", "/svc20000/x", "rest");
	CHECK(route_tries - before == 1);
	config_free(cfg);
}

static char	*warned;
static size_t	 warnedlen;

static void
collect(const char *fmt, ...)
{
	va_list	 ap;
	char	 line[512];
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((warned = realloc(warned, warnedlen + strlen(line) + 2)) == NULL)
		abort();
	warnedlen += (size_t)sprintf(warned + warnedlen, "%s\n", line);
}

/* "never used" warnings: the same found by the index as by a walk */
static void
test_index_warnings(void)
{
	struct config	*cfg = load_random_routes();
	struct route_index *ix;
	char		*first;

	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	warnedlen = 0;
	config_warnings(cfg, collect);
	first = strndup(warned != NULL ? warned : "", warnedlen);
	ix = cfg->route_index;
	cfg->route_index = NULL;
	warnedlen = 0;
	config_warnings(cfg, collect);
	cfg->route_index = ix;
	CHECK(first != NULL && warned != NULL);
	if (first != NULL && warned != NULL) {
		CHECK_EQ_STR(first, warned);
		CHECK(strstr(first, "is never used") != NULL);
	}
	free(first);
	free(warned);
	warned = NULL;
	config_free(cfg);
}

/* A random address of a few blocks, so that entries overlap often. */
static void
random_addr(char *out, size_t len, bool v6)
{
	if (v6)
		snprintf(out, len, "2001:db8:%x:%x::%x", unit_rand() % 3,
		    unit_rand() % 4, unit_rand() % 3);
	else
		snprintf(out, len, "10.%u.%u.%u", unit_rand() % 3,
		    unit_rand() % 4, unit_rand() % 6);
}

/* An entry of an allow, deny or trusted_proxies list: a random block. */
static void
random_block(char *out, size_t len)
{
	static const unsigned v4[] = { 8, 16, 20, 24, 30, 32 };
	static const unsigned v6[] = { 32, 44, 48, 64, 127, 128 };
	char a[64];
	unsigned char b[16];
	bool six = unit_rand() % 3 == 0;
	unsigned prefix = six ? v6[unit_rand() % 6] : v4[unit_rand() % 6];

	random_addr(a, sizeof(a), six);
	/* the block's first address: config_load refuses host bits */
	inet_pton(six ? AF_INET6 : AF_INET, a, b);
	for (unsigned i = prefix; i < (six ? 128u : 32u); i++)
		b[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
	inet_ntop(six ? AF_INET6 : AF_INET, b, a, sizeof(a));
	snprintf(out, len, "%s/%u", a, prefix);
}

/*
 * Routes of up to 300 random allow and deny entries, some with "all" in
 * their midst, and trusted_proxies of 300: each client is let in, or
 * trusted, by the index as by a walk of the list.
 */
static void
test_acl_index_agrees_with_walk(void)
{
	struct config	*cfg;
	char		*text = NULL, block[80], a[64];
	size_t		 len = 0;
	unsigned	 differ = 0, in = 0, n = 0;
	FILE		*fp = open_memstream(&text, &len);

	if (fp == NULL)
		abort();
	fputs("[global]\n", fp);
	for (int i = 0; i < 300; i++) {
		random_block(block, sizeof(block));
		fprintf(fp, "trusted_proxies = %s\n", block);
	}
	fputs(LOAD_HEAD, fp);
	for (int r = 0; r < 20; r++) {
		int entries = 1 + (int)(unit_rand() % 300);

		fprintf(fp, "[route r%d]\nhost = r%d.test\nbackend = b\n", r,
		    r);
		/* a few single addresses, then "all", which most reach */
		for (int i = 0; r % 4 == 3 && i < 12; i++) {
			random_addr(a, sizeof(a), unit_rand() % 3 == 0);
			fprintf(fp, "%s = %s\n", unit_rand() % 2 ? "allow" :
			    "deny", a);
		}
		if (r % 4 == 3)
			fprintf(fp, "%s = all\n", r % 8 == 3 ? "allow" :
			    "deny");
		for (int i = 0; i < entries; i++) {
			random_block(block, sizeof(block));
			fprintf(fp, "%s = %s\n", unit_rand() % 2 ? "allow" :
			    "deny", block);
		}
	}
	fclose(fp);
	cfg = load_text(text);
	free(text);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	for (int i = 0; i < 3000; i++) {
		struct config_route *r = &cfg->routes[unit_rand() % 20];
		struct acl_index *ix = r->acl_index, *tx = cfg->trusted_index;
		const struct sockaddr *sa;
		bool by_index, walked, t_index, t_walked;

		random_addr(a, sizeof(a), unit_rand() % 3 == 0);
		sa = client_at(a);
		by_index = route_allows(r, sa);
		t_index = route_trusted_proxy(cfg, sa);
		r->acl_index = NULL;
		cfg->trusted_index = NULL;
		walked = route_allows(r, sa);
		t_walked = route_trusted_proxy(cfg, sa);
		r->acl_index = ix;
		cfg->trusted_index = tx;
		if (by_index != walked || t_index != t_walked) {
			differ++;
			fprintf(stderr, "%s at %s: %d %d, walked %d %d\n", a,
			    r->name, by_index, t_index, walked, t_walked);
		}
		n++;
		in += by_index;
	}
	CHECK_EQ_INT(differ, 0);
	/* both outcomes, often */
	CHECK(in > n / 10 && in < n - n / 10);
	config_free(cfg);
}

/* 10,000 entries: a client's is found in a try of each prefix length. */
static void
test_acl_index_tries(void)
{
	struct config	*cfg;
	char		*text = NULL;
	size_t		 len = 0;
	unsigned long	 before;
	FILE		*fp = open_memstream(&text, &len);

	if (fp == NULL)
		abort();
	fputs(LOAD_HEAD "[route r]\nbackend = b\n", fp);
	for (int i = 0; i < 10000; i++)
		fprintf(fp, "deny = 10.%d.%d.0/24\n", i / 256, i % 256);
	fputs("deny = 2001:db8::/32\nallow = all\n", fp);
	fclose(fp);
	cfg = load_text(text);
	free(text);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	before = route_acl_tries;
	CHECK(!allows(&cfg->routes[0], "10.39.15.7"));
	CHECK(allows(&cfg->routes[0], "10.39.16.7"));
	CHECK(!allows(&cfg->routes[0], "10.0.0.1"));
	CHECK(allows(&cfg->routes[0], "192.0.2.1"));
	CHECK(!allows(&cfg->routes[0], "2001:db8::1"));
	CHECK(allows(&cfg->routes[0], "2001:db9::1"));
	CHECK(route_acl_tries - before == 6);
	config_free(cfg);
}

/* A redirect's Location: $host and $request_uri put in its URL. */
static void
test_location(void)
{
	struct config_route	 r;
	char			*loc;
	size_t			 len;

	memset(&r, 0, sizeof(r));
	r.answer = 301;
	r.redirect = true;
	r.answer_text = "https://$host/new$request_uri#$host";
	loc = route_location(&r, "WWW.Example.com", 15, false, "/a?b=$host",
	    10, &len);
	CHECK_EQ_STR(loc, "https://www.example.com/new/a?b=$host"
	    "#www.example.com");
	CHECK_EQ_INT(len, strlen(loc));
	free(loc);
	/* what strip_prefix leaves gets its "/"; an IPv6 host its brackets */
	loc = route_location(&r, "2001:db8::1", 11, true, "?x=1", 4, &len);
	CHECK_EQ_STR(loc, "https://[2001:db8::1]/new/?x=1#[2001:db8::1]");
	CHECK_EQ_INT(len, strlen(loc));
	free(loc);
	r.answer_text = "/maintenance.html";
	loc = route_location(&r, "example.com", 11, false, "/", 1, &len);
	CHECK_EQ_STR(loc, "/maintenance.html");
	CHECK_EQ_INT(len, 17);
	free(loc);
	r.answer_text = "/$host$request_uri$request_uri";
	loc = route_location(&r, "h", 1, false, "/p", 2, &len);
	CHECK_EQ_STR(loc, "/h/p/p");
	free(loc);
}

/*
 * Every path of up to 5 pieces from a small alphabet of the spellings a
 * route's guard reads ("/", runs, encoded ones, parameters) against each
 * prefix: the prefix's route takes the path exactly when route_prefix_span
 * says how much of it the prefix takes, so that strip_prefix takes off what
 * the match read, never nothing of a path it routed.
 */
static void
test_span_agrees_with_match(void)
{
	static const char *const pieces[] = {
		"/", "a", "b", ";x", "%2F", "%5c", "//", ";", "?/a",
	};
	static const char *const prefixes[] = {
		"/", "/a", "/a/", "/a/b/", "/ab", "/b/a",
	};
	const size_t np = sizeof(pieces) / sizeof(pieces[0]);
	struct config_route	 route = { .name = "r" };
	struct config		 cfg;
	char			 path[64], prefix[8];
	size_t			 n, idx[5], k, checked = 0, bad = 0;
	ssize_t			 span;
	bool			 taken;

	memset(&cfg, 0, sizeof(cfg));
	cfg.routes = &route;
	cfg.nroutes = 1;
	for (size_t pi = 0; pi < sizeof(prefixes) / sizeof(prefixes[0]);
	    pi++) {
		strcpy(prefix, prefixes[pi]);
		route.path_prefix = prefix;
		for (n = 1; n <= 5; n++) {
			memset(idx, 0, sizeof(idx));
			for (;;) {
				strcpy(path, "/");
				for (k = 0; k < n; k++)
					strcat(path, pieces[idx[k]]);
				taken = strcmp(test_match(&cfg, NULL, path),
				    "r") == 0;
				span = route_prefix_span(route.path_prefix,
				    path, strlen(path));
				checked++;
				if (taken != (span >= 0) && bad++ < 5)
					printf("  prefix %s, path %s: %s, "
					    "span %zd\n", route.path_prefix,
					    path, taken ? "taken" : "not taken",
					    span);
				for (k = 0; k < n && ++idx[k] == np; k++)
					idx[k] = 0;
				if (k == n)
					break;
			}
		}
	}
	CHECK(checked > 300000);
	CHECK_EQ_INT((int)bad, 0);
}

int
main(void)
{
	test_by_hand();
	test_methods();
	test_headers();
	test_catch_all();
	test_loaded();
	test_index_agrees_with_walk();
	test_index_tries();
	test_index_warnings();
	test_acl_index_agrees_with_walk();
	test_acl_index_tries();
	test_location();
	test_span_agrees_with_match();
	UNIT_DONE();
}
