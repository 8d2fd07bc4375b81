/* addr.h: socket addresses as written in the configuration and in logs. */
#ifndef QPROXY_ADDR_H
#define QPROXY_ADDR_H

#include <stdbool.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

struct addr {
	union {
		struct sockaddr		sa;
		struct sockaddr_in	in;
		struct sockaddr_in6	in6;
		struct sockaddr_un	un;
		struct sockaddr_storage	ss;
	} u;
	socklen_t	len;
};

/* Longest text addr_format writes, with its NUL. */
#define ADDR_STRLEN	(INET6_ADDRSTRLEN + 16 > 112 ? INET6_ADDRSTRLEN + 16 : 112)

/*
 * Parses "HOST:PORT", "[V6]:PORT" or "unix:/path" (the last only when
 * allow_unix). HOST may be a name; it is resolved once, here (start-up and
 * reload only). Returns 0, or -1 with a static message in *err.
 */
int	addr_parse(const char *, bool allow_unix, struct addr *, const char **err);
/* "1.2.3.4:443", "[::1]:443" or "unix:/path". Returns buf. */
char	*addr_format(const struct addr *, char *buf, size_t len);
/* The address alone, without port: "1.2.3.4", "::1". Returns buf. */
char	*addr_format_host(const struct addr *, char *buf, size_t len);
bool	addr_equal(const struct addr *, const struct addr *);
/* A total order of addresses, for sorting: 0 exactly when addr_equal. */
int	addr_cmp(const struct addr *, const struct addr *);
/* Whether a socket bound to one stops the other's bind: the same address,
 * or the wildcard of the same family (IPv6 sockets are IPv6 only), on the
 * same port. */
bool	addr_overlaps(const struct addr *, const struct addr *);
/* Copies a sockaddr of known length into an addr. */
void	addr_set(struct addr *, const struct sockaddr *, socklen_t);

#endif
