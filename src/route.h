/* route.h: picks the route, and so the backend, for a request. */
#ifndef QPROXY_ROUTE_H
#define QPROXY_ROUTE_H

#include <stddef.h>

#include "config.h"

/*
 * The first route in file order whose host and path_prefix both match, or
 * NULL when none does. authority is the request's :authority, with or
 * without a port ("example.com:443", "[::1]:4433"); its host is compared
 * without regard to case. path is the request target, query included. Neither
 * needs a NUL. The result points into cfg.
 */
const struct config_route *route_match(const struct config *cfg,
    const char *authority, size_t authoritylen, const char *path,
    size_t pathlen);

#endif
