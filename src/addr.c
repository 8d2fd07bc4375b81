/* addr.c: socket addresses as written in the configuration and in logs. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

#define ADDR_UNIX_PREFIX	"unix:"

static int
addr_parse_port(const char *s, in_port_t *port)
{
	unsigned long	 v = 0;
	size_t		 n;

	for (n = 0; s[n] != '\0'; n++) {
		if (s[n] < '0' || s[n] > '9' || n >= 5)
			return -1;
		v = v * 10 + (unsigned long)(s[n] - '0');
	}
	if (n == 0 || v < 1 || v > 65535)
		return -1;
	*port = htons((in_port_t)v);
	return 0;
}

static int
addr_parse_unix(const char *path, struct addr *a, const char **err)
{
	size_t	 len = strlen(path);

	if (len == 0) {
		*err = "missing unix socket path";
		return -1;
	}
	if (path[0] != '/') {
		*err = "unix socket path must be absolute";
		return -1;
	}
	if (len >= sizeof(a->u.un.sun_path)) {
		*err = "unix socket path is too long";
		return -1;
	}
	memset(a, 0, sizeof(*a));
	a->u.un.sun_family = AF_UNIX;
	memcpy(a->u.un.sun_path, path, len + 1);
	a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	return 0;
}

/* resolves host (a name or a numeric address) and takes the first answer */
static int
addr_resolve(const char *host, int family, int flags, struct addr *a,
    const char **err)
{
	struct addrinfo	 hints, *res, *ai;
	int		 rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = flags;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0) {
		switch (rc) {
		case EAI_MEMORY:
			*err = "out of memory";
			break;
		case EAI_NONAME:
#ifdef EAI_NODATA
		case EAI_NODATA:
#endif
			*err = "unknown host name";
			break;
		case EAI_AGAIN:
			*err = "temporary failure resolving the host name";
			break;
		default:
			*err = "cannot resolve the host name";
			break;
		}
		/* inside brackets only a numeric IPv6 address will do */
		if ((flags & AI_NUMERICHOST) && rc != EAI_MEMORY)
			*err = "invalid IPv6 address";
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next)
		if ((ai->ai_family == AF_INET &&
		    ai->ai_addrlen == sizeof(struct sockaddr_in)) ||
		    (ai->ai_family == AF_INET6 &&
		    ai->ai_addrlen == sizeof(struct sockaddr_in6)))
			break;
	if (ai == NULL) {
		freeaddrinfo(res);
		*err = "host name has no IPv4 or IPv6 address";
		return -1;
	}
	addr_set(a, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

/*
 * Whether host is meant as an IPv4 address: its last label is a number (no
 * top-level domain is). getaddrinfo takes such hosts in inet_aton's forms,
 * where "127.1" is 127.0.0.1 and "10.0.0.010" is 10.0.0.8; only the dotted
 * decimal form of inet_pton is accepted here, the one every log shows.
 */
static bool
addr_ipv4_like(const char *host)
{
	const char *label = strrchr(host, '.');

	label = label != NULL ? label + 1 : host;
	if (label[0] == '0' && (label[1] == 'x' || label[1] == 'X'))
		return true;			/* "0x7f000001" */
	return *label != '\0' && strspn(label, "0123456789") == strlen(label);
}

int
addr_parse(const char *s, bool allow_unix, struct addr *a, const char **err)
{
	char		 host[NI_MAXHOST];
	const char	*colon, *end;
	in_port_t	 port;
	struct in_addr	 in4;
	size_t		 hostlen;
	int		 family, flags;

	if (s == NULL || *s == '\0') {
		*err = "empty address";
		return -1;
	}
	if (strncmp(s, ADDR_UNIX_PREFIX, strlen(ADDR_UNIX_PREFIX)) == 0) {
		if (!allow_unix) {
			*err = "unix sockets are not allowed here";
			return -1;
		}
		return addr_parse_unix(s + strlen(ADDR_UNIX_PREFIX), a, err);
	}

	if (s[0] == '[') {
		if ((end = strchr(s, ']')) == NULL) {
			*err = "missing ']' after the IPv6 address";
			return -1;
		}
		if (end[1] != ':') {
			*err = end[1] == '\0' ? "missing port" :
			    "expected ':' and a port after ']'";
			return -1;
		}
		colon = end + 1;
		s++;
		hostlen = (size_t)(end - s);
		family = AF_INET6;
		flags = AI_NUMERICHOST;
	} else {
		if ((colon = strrchr(s, ':')) == NULL) {
			*err = "missing port";
			return -1;
		}
		if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
			*err = "an IPv6 address must be written in brackets, "
			    "as in [::1]:443";
			return -1;
		}
		hostlen = (size_t)(colon - s);
		family = AF_UNSPEC;
		flags = 0;
	}
	if (hostlen == 0) {
		*err = "missing host";
		return -1;
	}
	if (hostlen >= sizeof(host)) {
		*err = "host name is too long";
		return -1;
	}
	if (colon[1] == '\0') {
		*err = "missing port";
		return -1;
	}
	if (addr_parse_port(colon + 1, &port) == -1) {
		*err = "invalid port: expected a number from 1 to 65535";
		return -1;
	}
	memcpy(host, s, hostlen);
	host[hostlen] = '\0';
	if (family == AF_UNSPEC && addr_ipv4_like(host)) {
		if (inet_pton(AF_INET, host, &in4) != 1) {
			*err = "invalid IPv4 address: expected four decimal "
			    "numbers, as in 192.0.2.1";
			return -1;
		}
		flags = AI_NUMERICHOST;
	}
	if (addr_resolve(host, family, flags, a, err) == -1)
		return -1;
	if (a->u.sa.sa_family == AF_INET)
		a->u.in.sin_port = port;
	else
		a->u.in6.sin6_port = port;
	return 0;
}

static const char *
addr_unix_path(const struct addr *a, size_t *len)
{
	size_t	 off = offsetof(struct sockaddr_un, sun_path);
	size_t	 max;

	if (a->len <= off) {
		*len = 0;
		return "";
	}
	max = a->len - off;
	if (max > sizeof(a->u.un.sun_path))
		max = sizeof(a->u.un.sun_path);
	if (a->u.un.sun_path[0] == '\0') {
		/* abstract: the name is every byte after the NUL */
		*len = max;
		return a->u.un.sun_path;
	}
	*len = strnlen(a->u.un.sun_path, max);
	return a->u.un.sun_path;
}

static char *
addr_format_unix(const struct addr *a, char *buf, size_t len)
{
	const char	*path;
	size_t		 plen;

	path = addr_unix_path(a, &plen);
	if (plen > 0 && path[0] == '\0')
		snprintf(buf, len, ADDR_UNIX_PREFIX "@%.*s", (int)(plen - 1),
		    path + 1);
	else
		snprintf(buf, len, ADDR_UNIX_PREFIX "%.*s", (int)plen, path);
	return buf;
}

char *
addr_format(const struct addr *a, char *buf, size_t len)
{
	char	 host[INET6_ADDRSTRLEN];

	if (len == 0)
		return buf;
	switch (a->u.sa.sa_family) {
	case AF_INET:
		snprintf(buf, len, "%s:%u",
		    addr_format_host(a, host, sizeof(host)),
		    (unsigned)ntohs(a->u.in.sin_port));
		break;
	case AF_INET6:
		snprintf(buf, len, "[%s]:%u",
		    addr_format_host(a, host, sizeof(host)),
		    (unsigned)ntohs(a->u.in6.sin6_port));
		break;
	default:
		addr_format_host(a, buf, len);
		break;
	}
	return buf;
}

char *
addr_format_host(const struct addr *a, char *buf, size_t len)
{
	if (len == 0)
		return buf;
	switch (a->u.sa.sa_family) {
	case AF_INET:
		if (inet_ntop(AF_INET, &a->u.in.sin_addr, buf,
		    (socklen_t)len) == NULL)
			buf[0] = '\0';
		break;
	case AF_INET6:
		if (inet_ntop(AF_INET6, &a->u.in6.sin6_addr, buf,
		    (socklen_t)len) == NULL)
			buf[0] = '\0';
		break;
	case AF_UNIX:
		addr_format_unix(a, buf, len);
		break;
	default:
		snprintf(buf, len, "?");
		break;
	}
	return buf;
}

/* The wildcard address of its family: 0.0.0.0 or ::. */
static bool
addr_is_any(const struct addr *a)
{
	if (a->u.sa.sa_family == AF_INET)
		return a->u.in.sin_addr.s_addr == htonl(INADDR_ANY);
	return a->u.sa.sa_family == AF_INET6 &&
	    IN6_IS_ADDR_UNSPECIFIED(&a->u.in6.sin6_addr);
}

bool
addr_overlaps(const struct addr *a, const struct addr *b)
{
	if (addr_equal(a, b))
		return true;
	if (a->u.sa.sa_family != b->u.sa.sa_family ||
	    (!addr_is_any(a) && !addr_is_any(b)))
		return false;
	if (a->u.sa.sa_family == AF_INET)
		return a->u.in.sin_port == b->u.in.sin_port;
	return a->u.in6.sin6_port == b->u.in6.sin6_port;
}

bool
addr_equal(const struct addr *a, const struct addr *b)
{
	const char	*pa, *pb;
	size_t		 la, lb;

	if (a->u.sa.sa_family != b->u.sa.sa_family)
		return false;
	switch (a->u.sa.sa_family) {
	case AF_INET:
		return a->u.in.sin_port == b->u.in.sin_port &&
		    a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
	case AF_INET6:
		return a->u.in6.sin6_port == b->u.in6.sin6_port &&
		    a->u.in6.sin6_scope_id == b->u.in6.sin6_scope_id &&
		    memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr,
		    sizeof(a->u.in6.sin6_addr)) == 0;
	case AF_UNIX:
		pa = addr_unix_path(a, &la);
		pb = addr_unix_path(b, &lb);
		return la == lb && memcmp(pa, pb, la) == 0;
	default:
		return a->len == b->len && memcmp(&a->u, &b->u, a->len) == 0;
	}
}

/* -1, 0 or 1: shorter first, then by bytes */
static int
addr_cmp_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
	int	 rc;

	if (alen != blen)
		return alen < blen ? -1 : 1;
	rc = memcmp(a, b, alen);
	return rc < 0 ? -1 : rc > 0;
}

#define ADDR_CMP_FIELD(a, b, f) \
	addr_cmp_bytes(&(a)->f, sizeof((a)->f), &(b)->f, sizeof((b)->f))

int
addr_cmp(const struct addr *a, const struct addr *b)
{
	const char	*pa, *pb;
	size_t		 la, lb;
	int		 rc;

	if (a->u.sa.sa_family != b->u.sa.sa_family)
		return a->u.sa.sa_family < b->u.sa.sa_family ? -1 : 1;
	switch (a->u.sa.sa_family) {
	case AF_INET:
		if ((rc = ADDR_CMP_FIELD(a, b, u.in.sin_addr)) != 0)
			return rc;
		return ADDR_CMP_FIELD(a, b, u.in.sin_port);
	case AF_INET6:
		if ((rc = ADDR_CMP_FIELD(a, b, u.in6.sin6_addr)) != 0 ||
		    (rc = ADDR_CMP_FIELD(a, b, u.in6.sin6_port)) != 0)
			return rc;
		return ADDR_CMP_FIELD(a, b, u.in6.sin6_scope_id);
	case AF_UNIX:
		pa = addr_unix_path(a, &la);
		pb = addr_unix_path(b, &lb);
		return addr_cmp_bytes(pa, la, pb, lb);
	default:
		return addr_cmp_bytes(&a->u, a->len, &b->u, b->len);
	}
}

void
addr_set(struct addr *a, const struct sockaddr *sa, socklen_t len)
{
	memset(a, 0, sizeof(*a));
	if (len > sizeof(a->u))
		len = sizeof(a->u);
	memcpy(&a->u, sa, len);
	a->len = len;
}
