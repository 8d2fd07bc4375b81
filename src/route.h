/* route.h: picks the route, and so the backend, for a request. */
#ifndef QPROXY_ROUTE_H
#define QPROXY_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"

/*
 * The first route in file order whose host and path_prefix both match (and
 * methods and header: see route_match_host), or NULL when none does. authority is the request's :authority, with or
 * without a port ("example.com:443", "[::1]:4433"); its host is compared
 * without regard to case. path is the request target, query included. Neither
 * needs a NUL. The result points into cfg.
 */
const struct config_route *route_match(const struct config *cfg,
    const char *authority, size_t authoritylen, const char *path,
    size_t pathlen);
struct request;
/*
 * The same for the host of an authority, as route_host gives it, and the
 * request, for the routes' methods and header keys (which are not looked
 * at when it is NULL).
 */
const struct config_route *route_match_host(const struct config *cfg,
    const char *host, size_t hostlen, const char *path, size_t pathlen,
    const struct request *);
/*
 * An index of routes by their host, which config_load makes for its
 * configuration: a request's route is looked for among the routes of
 * its host, of the wildcards that take it and of those without a host,
 * in file order, not in every route. NULL when out of memory.
 */
struct route_index *route_index_new(const struct config_route *, size_t n);
void	route_index_free(struct route_index *);

/*
 * The routes that may take a request for a host and path, one at a time
 * in file order, from a configuration's index (every route when it has
 * none): those of the host itself, of the wildcards for its names, those
 * without a host whose path_prefix the path (or merged, the same made
 * as route_match_host makes it, when not NULL) starts with, and those
 * with neither. The host is compared without regard to case, a path as
 * it is; a NULL host has none of the first two, a NULL path none of the
 * third. A host such as a route's "*.example.com" has those wildcards
 * that cover it, itself included.
 */
#define ROUTE_RUNS	32
struct route_cursor {
	const struct config_route *routes;
	size_t		 nroutes, next;	/* every route: no index */
	bool		 all;
	size_t		 nruns;
	struct route_run {
		const struct route_key *k;
		size_t	 n;
	}		 runs[ROUTE_RUNS];
};
void	route_cursor_init(struct route_cursor *, const struct config *,
	    const char *host, size_t hostlen, const char *path,
	    size_t pathlen, const char *merged, size_t mergedlen);
/* The next route's index, or nroutes when none is left. */
size_t	route_cursor_next(struct route_cursor *);
/*
 * The routes route_match_host tried, and the entries or groups of them
 * (acl_index) that route_allows and route_trusted_proxy tried, counted
 * (for tests).
 */
extern unsigned long route_tries, route_acl_tries;

/*
 * How many bytes of path (query included, no NUL needed) a path_prefix
 * takes, a run of "/" in path matching one "/" of it; -1 when it does not
 * match; 0 for none.
 */
ssize_t route_prefix_span(const char *prefix, const char *path,
    size_t pathlen);
/* Whether a method is in a list of them, as a methods key keeps it
   (" GET HEAD "). */
bool route_method_in(const char *list, const char *method);

/*
 * The host part of an authority: the port and a final dot go; an IPv6
 * literal loses its brackets and is put in the canonical form the
 * configuration keeps (buf, of INET6_ADDRSTRLEN bytes or more, holds it
 * then). host points into auth or buf, hostlen bytes, with no NUL.
 */
void route_host(const char *auth, size_t len, char *buf, size_t buflen,
    const char **host, size_t *hostlen);

/*
 * A redirect route's Location: its URL with $host put in (lowercased, no
 * port) and $request_uri (the path and query as a backend would be sent
 * them: "/" when slash, then uri). NUL-terminated, from malloc, its length
 * in *len; NULL when out of memory.
 */
char *route_location(const struct config_route *, const char *host,
    size_t hostlen, bool slash, const char *uri, size_t urilen,
    size_t *len);

/*
 * An index of a list of allow and deny, or of trusted_proxies, which
 * config_load makes: a client's first entry found by its address cut to
 * each prefix length the list has, not by a walk of the list. NULL when
 * out of memory.
 */
struct acl_index *acl_index_new(const struct config_acl *, size_t n);
void	acl_index_free(struct acl_index *);

struct sockaddr;
/*
 * Whether the route's allow and deny let a client at this address in:
 * the first that matches decides, and with none matching it is let in.
 */
bool route_allows(const struct config_route *, const struct sockaddr *);
/*
 * Whether a client at this address is one of trusted_proxies, whose
 * X-Forwarded-For and Forwarded fields are passed on.
 */
bool route_trusted_proxy(const struct config *, const struct sockaddr *);

#endif
