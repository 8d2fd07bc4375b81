/* route.c: picks the route, and so the backend, for a request. */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "route.h"

static int
route_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* ASCII only, whatever the locale */
static bool
route_caseeq(const char *a, const char *b, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++)
		if (route_lower((unsigned char)a[i]) !=
		    route_lower((unsigned char)b[i]))
			return false;
	return true;
}

/* Writes the Location to out, when not NULL; returns its length. */
static size_t
route_location_put(const char *url, const char *host, size_t hostlen,
    bool slash, const char *uri, size_t urilen, char *out)
{
	size_t	 n = 0;

	for (const char *c = url; *c != '\0'; c++) {
		if (*c == '$' && strncmp(c + 1, "request_uri", 11) == 0) {
			if (slash && out != NULL)
				out[n] = '/';
			n += slash;
			if (out != NULL)
				memcpy(out + n, uri, urilen);
			n += urilen;
			c += 11;
		} else if (*c == '$' && strncmp(c + 1, "host", 4) == 0) {
			/* an IPv6 address goes in brackets again */
			bool v6 = memchr(host, ':', hostlen) != NULL;

			if (v6 && out != NULL)
				out[n] = '[';
			n += v6;
			for (size_t i = 0; out != NULL && i < hostlen; i++)
				out[n + i] = (char)route_lower(
				    (unsigned char)host[i]);
			n += hostlen;
			if (v6 && out != NULL)
				out[n] = ']';
			n += v6;
			c += 4;
		} else {
			if (out != NULL)
				out[n] = *c;
			n++;
		}
	}
	return n;
}

char *
route_location(const struct config_route *r, const char *host,
    size_t hostlen, bool slash, const char *uri, size_t urilen, size_t *len)
{
	char	*out;

	*len = route_location_put(r->answer_text, host, hostlen, slash, uri,
	    urilen, NULL);
	if ((out = malloc(*len + 1)) == NULL)
		return NULL;
	route_location_put(r->answer_text, host, hostlen, slash, uri, urilen,
	    out);
	out[*len] = '\0';
	return out;
}

void
route_host(const char *auth, size_t len, char *buf, size_t buflen,
    const char **host, size_t *hostlen)
{
	struct in6_addr	 in6;
	const char	*end;
	char		 lit[INET6_ADDRSTRLEN];

	if (len == 0) {
		*host = "";
		*hostlen = 0;
		return;
	}
	if (auth[0] == '[' &&
	    (end = memchr(auth, ']', len)) != NULL) {
		*host = auth + 1;
		*hostlen = (size_t)(end - auth) - 1;
		if (*hostlen < sizeof(lit)) {
			memcpy(lit, *host, *hostlen);
			lit[*hostlen] = '\0';
			if (inet_pton(AF_INET6, lit, &in6) == 1 &&
			    inet_ntop(AF_INET6, &in6, buf,
			    (socklen_t)buflen) != NULL) {
				*host = buf;
				*hostlen = strlen(buf);
			}
		}
		return;
	}
	if ((end = memchr(auth, ':', len)) != NULL)
		len = (size_t)(end - auth);
	if (len > 1 && auth[len - 1] == '.')
		len--;
	*host = auth;
	*hostlen = len;
}

static bool
route_host_match(const char *pattern, const char *host, size_t hostlen)
{
	size_t	 plen;

	if (pattern == NULL)
		return true;
	if (pattern[0] == '*' && pattern[1] == '.') {
		/* "*.example.com": one or more labels before ".example.com" */
		pattern++;
		plen = strlen(pattern);
		return hostlen > plen &&
		    route_caseeq(host + hostlen - plen, pattern, plen);
	}
	plen = strlen(pattern);
	return hostlen == plen && route_caseeq(host, pattern, plen);
}

/*
 * How many bytes of a path the "/" at its start takes: 1, 3 for an
 * encoded one (request_encoded_slash), 0 for none.
 */
static size_t
route_slash(const char *p, size_t len)
{
	if (len > 0 && p[0] == '/')
		return 1;
	return request_encoded_slash(p, len) ? 3 : 0;
}

/*
 * Where the parameters (RFC 3986 3.3) of a segment that p[0] ends end: at
 * the next "/", at the query's "?", or at len; p[0] when it is no ";". An
 * encoded "/" is part of them, as Tomcat takes them off before it decodes
 * the path.
 */
static size_t
route_params(const char *p, size_t len)
{
	size_t i = 0;

	if (len > 0 && p[0] == ';')
		while (i < len && p[i] != '/' && p[i] != '?')
			i++;
	return i;
}

/*
 * How many bytes of path a route's prefix takes: its own length, or more
 * where the path spells one of its "/" otherwise: as several
 * ("/app//admin/" for "/app/admin/"), which nginx (merge_slashes), Apache
 * and Tomcat read as one, or encoded (route_slash), or after parameters
 * ("/app;x/admin/"), which Tomcat and Jetty take off a segment before
 * they route it. A route guarding "/app/admin/" holds for those spellings
 * too, though the path goes to the backend as it came. -1 when it does
 * not match.
 */
ssize_t
route_prefix_span(const char *prefix, const char *path, size_t pathlen)
{
	size_t i, j, k, n;

	if (prefix == NULL)
		return 0;
	for (i = j = 0; prefix[i] != '\0'; i++) {
		if (prefix[i] == '/' && prefix[i + 1] != '/') {
			k = j + route_params(path + j, pathlen - j);
			if ((n = route_slash(path + k, pathlen - k)) > 0) {
				/* the run, with empty segments' parameters */
				do {
					j = k + n;
					k = j + route_params(path + j,
					    pathlen - j);
				} while ((n = route_slash(path + k,
				    pathlen - k)) > 0);
				continue;
			}
		}
		if (j >= pathlen || path[j] != prefix[i])
			return -1;
		j++;
	}
	return (ssize_t)j;
}

bool
route_method_in(const char *list, const char *method)
{
	size_t n = strlen(method);

	if (n == 0)
		return false;
	for (const char *p = strstr(list, method); p != NULL;
	    p = strstr(p + 1, method))
		if (p > list && p[-1] == ' ' && p[n] == ' ')
			return true;
	return false;
}

/* A route's methods and header keys, against the request's. */
static bool
route_request_match(const struct config_route *r, const struct request *req)
{
	if (req == NULL)
		return true;
	if (r->methods != NULL && !request_methods_in(req, r->methods))
		return false;
	for (size_t i = 0; i < r->match_headers.n; i++)
		if (!request_has_field(req, r->match_headers.v[i].name,
		    r->match_headers.v[i].value))
			return false;
	return true;
}

/*
 * The path before its query with each run of "/" (route_slash's, encoded
 * ones too) made one "/" and its segments' parameters taken off, then the
 * query as it is: into buf when it fits, else from malloc (*heap set).
 * NULL when out of memory.
 */
static char *
route_merge_slashes(const char *path, size_t len, char *buf, size_t buflen,
    size_t *outlen, bool *heap)
{
	const char *q = memchr(path, '?', len);
	size_t plen = q != NULL ? (size_t)(q - path) : len, i, n, w = 0;
	char *m = buf;

	*heap = len > buflen;
	if (*heap && (m = malloc(len)) == NULL)
		return NULL;
	for (i = 0; i < plen; i += n) {
		if ((n = route_params(path + i, plen - i)) > 0)
			continue;
		if ((n = route_slash(path + i, plen - i)) == 0) {
			m[w++] = path[i];
			n = 1;
		} else if (w == 0 || m[w - 1] != '/')
			m[w++] = '/';
	}
	memcpy(m + w, path + plen, len - plen);
	*outlen = w + len - plen;
	return m;
}

/* Whether the path before its query spells a "/" as route_slash reads it
   but not as itself alone: a run, or an encoding; or has parameters. */
static bool
route_odd_slashes(const char *path, size_t len)
{
	const char *q = memchr(path, '?', len);

	if (q != NULL)
		len = (size_t)(q - path);
	if ((len > 1 && memmem(path, len, "//", 2) != NULL) ||
	    memchr(path, ';', len) != NULL)
		return true;
	for (const char *p = path; (p = memchr(p, '%', len -
	    (size_t)(p - path))) != NULL; p++)
		if (route_slash(p, len - (size_t)(p - path)) == 3)
			return true;
	return false;
}

static bool
route_path_match(const char *prefix, const char *path, size_t len)
{
	size_t plen;

	if (prefix == NULL)
		return true;
	plen = strlen(prefix);
	return len >= plen && memcmp(path, prefix, plen) == 0;
}

/*
 * The index: the routes' hosts, sorted without regard to case, each with
 * its route, which orders those of one host. A wildcard's key is its
 * ".example.com", which a name under it ends with. Routes without a host
 * are kept by their path_prefix (as spelt: a path is compared as it is),
 * with the lengths the prefixes have, so that a request's path is looked
 * up by its first bytes of each; those without either take any request.
 */
struct route_key {
	const char	*s;
	size_t		 len;
	size_t		 route;
};

struct route_index {
	struct route_key *exact, *wild, *paths, *any;	/* any: s NULL */
	size_t		 nexact, nwild, npaths, nany;
	size_t		*plens;		/* the paths' lengths, each once */
	size_t		 nplens;
};

unsigned long route_tries, route_acl_tries;

#define ROUTE_WALK	8	/* routes or fewer: no index looked at */

/* Hosts: without regard to case (ASCII). */
static int
route_strcmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int d;

	for (size_t i = 0; i < alen && i < blen; i++)
		if ((d = route_lower((unsigned char)a[i]) -
		    route_lower((unsigned char)b[i])) != 0)
			return d;
	return alen < blen ? -1 : alen > blen;
}

/* Paths: byte for byte. */
static int
route_pathcmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int d = memcmp(a, b, alen < blen ? alen : blen);

	if (d != 0)
		return d;
	return alen < blen ? -1 : alen > blen;
}

typedef int (*route_cmp)(const char *, size_t, const char *, size_t);

static int
route_key_cmp(const struct route_key *a, const struct route_key *b,
    route_cmp cmp)
{
	int d = cmp(a->s, a->len, b->s, b->len);

	if (d != 0)
		return d;
	return a->route < b->route ? -1 : a->route > b->route;
}

static int
route_host_key_cmp(const void *x, const void *y)
{
	return route_key_cmp(x, y, route_strcmp);
}

static int
route_path_key_cmp(const void *x, const void *y)
{
	return route_key_cmp(x, y, route_pathcmp);
}

static int
route_size_cmp(const void *x, const void *y)
{
	size_t a = *(const size_t *)x, b = *(const size_t *)y;

	return a < b ? -1 : a > b;
}

struct route_index *
route_index_new(const struct config_route *routes, size_t n)
{
	struct route_index *ix;
	struct route_key *k;
	const char *h;
	size_t i;

	if ((ix = calloc(1, sizeof(*ix))) == NULL)
		return NULL;
	if (n > 0 && ((ix->exact = calloc(n, sizeof(*k))) == NULL ||
	    (ix->wild = calloc(n, sizeof(*k))) == NULL ||
	    (ix->paths = calloc(n, sizeof(*k))) == NULL ||
	    (ix->any = calloc(n, sizeof(*k))) == NULL ||
	    (ix->plens = calloc(n, sizeof(*ix->plens))) == NULL)) {
		route_index_free(ix);
		return NULL;
	}
	for (i = 0; i < n; i++) {
		if ((h = routes[i].host) == NULL) {
			if (routes[i].path_prefix == NULL)
				k = &ix->any[ix->nany++];
			else {
				k = &ix->paths[ix->npaths++];
				k->s = routes[i].path_prefix;
			}
		} else if (h[0] == '*' && h[1] == '.') {
			k = &ix->wild[ix->nwild++];
			k->s = h + 1;
		} else {
			k = &ix->exact[ix->nexact++];
			k->s = h;
		}
		k->len = k->s != NULL ? strlen(k->s) : 0;
		k->route = i;
	}
	if (ix->nexact > 1)
		qsort(ix->exact, ix->nexact, sizeof(*k), route_host_key_cmp);
	if (ix->nwild > 1)
		qsort(ix->wild, ix->nwild, sizeof(*k), route_host_key_cmp);
	if (ix->npaths > 1)
		qsort(ix->paths, ix->npaths, sizeof(*k), route_path_key_cmp);
	for (i = 0; i < ix->npaths; i++)
		ix->plens[i] = ix->paths[i].len;
	if (ix->npaths > 1)
		qsort(ix->plens, ix->npaths, sizeof(*ix->plens),
		    route_size_cmp);
	for (i = 0; i < ix->npaths; i++)
		if (ix->nplens == 0 || ix->plens[ix->nplens - 1] !=
		    ix->plens[i])
			ix->plens[ix->nplens++] = ix->plens[i];
	return ix;
}

void
route_index_free(struct route_index *ix)
{
	if (ix == NULL)
		return;
	free(ix->exact);
	free(ix->wild);
	free(ix->paths);
	free(ix->any);
	free(ix->plens);
	free(ix);
}

/* Adds a run of keys; false when out of room. */
static bool
route_run_put(struct route_cursor *c, const struct route_key *k, size_t n)
{
	for (size_t i = 0; i < c->nruns; i++)
		if (c->runs[i].k == k)
			return true;	/* a path's and its merged form's */
	if (c->nruns == ROUTE_RUNS)
		return false;
	c->runs[c->nruns].k = k;
	c->runs[c->nruns++].n = n;
	return true;
}

/* Adds the run of v's keys equal to s, if any; false when out of room. */
static bool
route_run_add(struct route_cursor *c, const struct route_key *v, size_t n,
    const char *s, size_t len, route_cmp cmp)
{
	size_t lo = 0, hi = n, mid, end;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (cmp(v[mid].s, v[mid].len, s, len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (end = lo; end < n && cmp(v[end].s, v[end].len, s, len) == 0;
	    end++)
		;
	return end == lo || route_run_put(c, &v[lo], end - lo);
}

/* The runs of the path prefixes that path starts with. */
static bool
route_paths_add(struct route_cursor *c, const struct route_index *ix,
    const char *path, size_t pathlen)
{
	for (size_t i = 0; i < ix->nplens && ix->plens[i] <= pathlen; i++)
		if (!route_run_add(c, ix->paths, ix->npaths, path,
		    ix->plens[i], route_pathcmp))
			return false;
	return true;
}

void
route_cursor_init(struct route_cursor *c, const struct config *cfg,
    const char *host, size_t hostlen, const char *path, size_t pathlen,
    const char *merged, size_t mergedlen)
{
	const struct route_index *ix = cfg->route_index;
	bool room = true;

	c->routes = cfg->routes;
	c->nroutes = cfg->nroutes;
	c->next = 0;
	c->nruns = 0;
	/* a few routes are walked sooner than looked up */
	c->all = ix == NULL || c->nroutes <= ROUTE_WALK;
	if (c->all)
		return;
	if (host != NULL) {
		room = route_run_add(c, ix->exact, ix->nexact, host, hostlen,
		    route_strcmp);
		/* ".example.com" of "a.example.com", and ".com" */
		for (size_t i = 1; room && ix->nwild > 0 && i < hostlen; i++)
			if (host[i] == '.')
				room = route_run_add(c, ix->wild, ix->nwild,
				    host + i, hostlen - i, route_strcmp);
	}
	if (room && path != NULL)
		room = route_paths_add(c, ix, path, pathlen);
	if (room && merged != NULL)
		room = route_paths_add(c, ix, merged, mergedlen);
	if (room && ix->nany > 0)
		room = route_run_put(c, ix->any, ix->nany);
	/* more runs for one request than room: try every route */
	c->all = !room;
}

size_t
route_cursor_next(struct route_cursor *c)
{
	struct route_run *best = NULL;
	size_t r;

	if (c->all)
		return c->next < c->nroutes ? c->next++ : c->nroutes;
	for (size_t i = 0; i < c->nruns; i++)
		if (c->runs[i].n > 0 && (best == NULL ||
		    c->runs[i].k->route < best->k->route))
			best = &c->runs[i];
	if (best == NULL)
		return c->nroutes;
	r = best->k->route;
	best->k++;
	best->n--;
	return r;
}

/*
 * A path that spells a "/" as several, or encoded, or has parameters, is
 * matched with its runs made one "/" and its parameters taken off too
 * (route_prefix_span's rule), made so once: walking
 * a run again for each route cost a path of 60,000 "/" that many steps a
 * route.
 */
const struct config_route *
route_match_host(const struct config *cfg, const char *host, size_t hostlen,
    const char *path, size_t pathlen, const struct request *req)
{
	const struct config_route	*r, *found = NULL;
	struct route_cursor		 c;
	char				 small[512], *merged = NULL;
	size_t				 i, mlen = 0;
	bool				 heap = false;

	if (path == NULL)
		pathlen = 0;
	if (pathlen > 1 && route_odd_slashes(path, pathlen) &&
	    (merged = route_merge_slashes(path, pathlen, small,
	    sizeof(small), &mlen, &heap)) == NULL)
		return NULL;	/* out of memory: no guard is passed by */
	route_cursor_init(&c, cfg, host, hostlen, path, pathlen, merged,
	    mlen);
	while ((i = route_cursor_next(&c)) < cfg->nroutes) {
		r = &cfg->routes[i];
		route_tries++;
		if (route_host_match(r->host, host, hostlen) &&
		    (route_path_match(r->path_prefix, path, pathlen) ||
		    (merged != NULL && route_path_match(r->path_prefix, merged,
		    mlen))) && route_request_match(r, req)) {
			found = r;
			break;
		}
	}
	if (heap)
		free(merged);
	return found;
}

const struct config_route *
route_match(const struct config *cfg, const char *authority,
    size_t authoritylen, const char *path, size_t pathlen)
{
	const char	*host;
	char		 buf[INET6_ADDRSTRLEN];
	size_t		 hostlen;

	if (authority == NULL)
		authoritylen = 0;
	route_host(authority, authoritylen, buf, sizeof(buf), &host,
	    &hostlen);
	return route_match_host(cfg, host, hostlen, path, pathlen, NULL);
}

/* Whether the first prefix bits of a and b are the same. */
static bool
prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned whole = prefix / 8, rest = prefix % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	return rest == 0 ||
	    ((a[whole] ^ b[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

/*
 * An index of allow, deny or trusted_proxies entries: those before the
 * first "all" (which takes every client, so none after it is ever the
 * first to), grouped by family and prefix length, each group sorted by
 * its blocks' addresses. A client's first entry is the least of those
 * found by its address cut to each group's length, and the "all".
 */
struct acl_key {
	int		 family;
	unsigned	 prefix;
	uint8_t		 addr[16];	/* cut to prefix bits */
	size_t		 entry;
};

struct acl_group {
	int		 family;
	unsigned	 prefix;
	struct acl_key	*v;
	size_t		 n;
};

struct acl_index {
	struct acl_key	*keys;
	struct acl_group *groups;
	size_t		 ngroups;
	size_t		 all;		/* the first "all", or n */
};

static size_t
acl_addrlen(int family)
{
	return family == AF_INET ? 4 : 16;
}

/* An address's first prefix bits, the rest 0. */
static void
acl_cut(uint8_t out[16], const uint8_t *addr, size_t len, unsigned prefix)
{
	unsigned whole = prefix / 8, rest = prefix % 8;

	memset(out, 0, 16);
	memcpy(out, addr, whole < len ? whole : len);
	if (rest > 0 && whole < len)
		out[whole] = (uint8_t)(addr[whole] & (0xff << (8 - rest)));
}

/* keys by family, length, address, then file order */
static int
acl_key_cmp(const void *x, const void *y)
{
	const struct acl_key *a = x, *b = y;
	int d;

	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	if (a->prefix != b->prefix)
		return a->prefix < b->prefix ? -1 : 1;
	if ((d = memcmp(a->addr, b->addr, 16)) != 0)
		return d;
	return a->entry < b->entry ? -1 : a->entry > b->entry;
}

struct acl_index *
acl_index_new(const struct config_acl *v, size_t n)
{
	struct acl_index *ix;
	size_t i, nkeys = 0, ng;

	if ((ix = calloc(1, sizeof(*ix))) == NULL)
		return NULL;
	for (ix->all = 0; ix->all < n && !v[ix->all].all; ix->all++)
		;
	if (ix->all > 0 && ((ix->keys = calloc(ix->all,
	    sizeof(*ix->keys))) == NULL || (ix->groups = calloc(ix->all,
	    sizeof(*ix->groups))) == NULL)) {
		acl_index_free(ix);
		return NULL;
	}
	for (i = 0; i < ix->all; i++) {
		struct acl_key *k = &ix->keys[nkeys];

		if (v[i].family != AF_INET && v[i].family != AF_INET6)
			continue;	/* takes no client */
		k->family = v[i].family;
		k->prefix = v[i].prefix;
		acl_cut(k->addr, v[i].addr, acl_addrlen(k->family), k->prefix);
		k->entry = i;
		nkeys++;
	}
	if (nkeys > 1)
		qsort(ix->keys, nkeys, sizeof(*ix->keys), acl_key_cmp);
	for (i = 0; i < nkeys; i++) {
		const struct acl_key *e = &ix->keys[i];

		ng = ix->ngroups;
		if (ng == 0 || ix->groups[ng - 1].family != e->family ||
		    ix->groups[ng - 1].prefix != e->prefix) {
			ix->groups[ng].family = e->family;
			ix->groups[ng].prefix = e->prefix;
			ix->groups[ng].v = &ix->keys[i];
			ix->ngroups++;
		}
		ix->groups[ix->ngroups - 1].n++;
	}
	return ix;
}

void
acl_index_free(struct acl_index *ix)
{
	if (ix == NULL)
		return;
	free(ix->keys);
	free(ix->groups);
	free(ix);
}

/* The first entry of a group whose block holds addr, or SIZE_MAX. */
static size_t
acl_group_find(const struct acl_group *g, const uint8_t *addr)
{
	uint8_t cut[16];
	size_t lo = 0, hi = g->n, mid;

	acl_cut(cut, addr, acl_addrlen(g->family), g->prefix);
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (memcmp(g->v[mid].addr, cut, 16) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* the first of equal blocks is the first in the file */
	return lo < g->n && memcmp(g->v[lo].addr, cut, 16) == 0 ?
	    g->v[lo].entry : SIZE_MAX;
}

/* The first entry of v that takes a client at this address, or NULL. */
static const struct config_acl *
acl_find(const struct config_acl *v, size_t n, const struct acl_index *ix,
    const struct sockaddr *sa)
{
	const uint8_t *addr;
	int family = sa->sa_family;
	size_t best, e;

	if (family == AF_INET)
		addr = (const uint8_t *)
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	else if (family == AF_INET6)
		addr = ((const struct sockaddr_in6 *)(const void *)sa)->
		    sin6_addr.s6_addr;
	else
		addr = NULL;
	if (ix != NULL && n > ROUTE_WALK) {
		best = ix->all;
		for (size_t i = 0; addr != NULL && i < ix->ngroups; i++) {
			if (ix->groups[i].family != family)
				continue;
			route_acl_tries++;
			if ((e = acl_group_find(&ix->groups[i], addr)) < best)
				best = e;
		}
		return best < n ? &v[best] : NULL;
	}
	for (size_t i = 0; i < n; i++) {
		route_acl_tries++;
		if (v[i].all || (addr != NULL && v[i].family == family &&
		    prefix_equal(addr, v[i].addr, v[i].prefix)))
			return &v[i];
	}
	return NULL;
}

bool
route_allows(const struct config_route *r, const struct sockaddr *sa)
{
	const struct config_acl *a = acl_find(r->acl, r->nacl, r->acl_index,
	    sa);

	return a == NULL || a->allow;
}

bool
route_trusted_proxy(const struct config *cfg, const struct sockaddr *sa)
{
	return acl_find(cfg->trusted, cfg->ntrusted, cfg->trusted_index,
	    sa) != NULL;
}
