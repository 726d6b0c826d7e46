/*
 * netaddr: addresses from the config file, parsed without a lookup: an
 * IPv4 or bracketed IPv6 literal with a port, an absolute unix path, or a
 * server's host (a name too) and port.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "netaddr.h"

static int
parse_port(const char *s, in_port_t *port)
{
	long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > 65535)
			return -1;
	}
	if (v == 0)
		return -1;
	*port = htons((in_port_t)v);
	return 0;
}

const char *
netaddr_parse(const char *s, struct sockaddr_storage *sa, socklen_t *len,
    char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *end;
	size_t n;
	in_port_t port;

	memset(sa, 0, sizeof(*sa));
	if (s[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)sa;

		n = strlen(s);
		if (n >= sizeof(un->sun_path)) {
			snprintf(buf, size, "a unix socket path is at most %zu "
			    "bytes", sizeof(un->sun_path) - 1);
			return buf;
		}
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, s, n + 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
		return NULL;
	}
	if (s[0] == '[') {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;

		end = strchr(s, ']');
		if (end == NULL || end[1] != ':')
			return "expected \"[IPv6]:PORT\"";
		n = (size_t)(end - s - 1);
		if (n == 0 || n >= sizeof(host))
			return "not an IPv6 address";
		memcpy(host, s + 1, n);
		host[n] = '\0';
		if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
			return "not an IPv6 address (names are not looked up)";
		if (parse_port(end + 2, &port) == -1)
			return "the port must be 1 to 65535";
		in6->sin6_family = AF_INET6;
		in6->sin6_port = port;
		*len = sizeof(*in6);
		return NULL;
	}
	colon = strrchr(s, ':');
	if (colon == NULL)
		return "expected \"ADDRESS:PORT\", \"[IPv6]:PORT\" or an "
		    "absolute unix socket path";
	n = (size_t)(colon - s);
	if (n == 0 || n >= sizeof(host))
		return "expected \"ADDRESS:PORT\"";
	memcpy(host, s, n);
	host[n] = '\0';
	{
		struct sockaddr_in *in = (struct sockaddr_in *)sa;

		if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
			return "not an IPv4 address (names are not looked up; "
			    "write IPv6 as \"[::1]:PORT\")";
		if (parse_port(colon + 1, &port) == -1)
			return "the port must be 1 to 65535";
		in->sin_family = AF_INET;
		in->sin_port = port;
		*len = sizeof(*in);
	}
	return NULL;
}

/* A DNS name: dot-separated labels of letters, digits, '-' and '_'. */
static int
host_name_ok(const char *s)
{
	size_t label = 0;

	for (; *s != '\0'; s++) {
		if (*s == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
			return 0;
		if ((label == 0 && *s == '-') || ++label > 63)
			return 0;
	}
	return label > 0;
}

const char *
netaddr_host_port(const char *s, char *host, size_t hostsize, int *port)
{
	char buf[NETADDR_HOSTLEN + 1];
	struct in6_addr a6;
	struct in_addr a4;
	const char *colon, *end, *p;
	in_port_t nport;
	size_t n;

	if (hostsize < sizeof(buf))
		return "no room for the host";
	if (s[0] == '[') {
		end = strchr(s, ']');
		if (end == NULL || end[1] != ':')
			return "expected \"[IPv6]:PORT\"";
		n = (size_t)(end - s - 1);
		if (n == 0 || n >= INET6_ADDRSTRLEN)
			return "not an IPv6 address";
		memcpy(buf, s + 1, n);
		buf[n] = '\0';
		if (inet_pton(AF_INET6, buf, &a6) != 1)
			return "not an IPv6 address";
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return "expected \"HOST:PORT\"";
		n = (size_t)(colon - s);
		if (n == 0)
			return "the host is missing: expected \"HOST:PORT\"";
		if (memchr(s, ':', n) != NULL)
			return "an IPv6 address goes in brackets: "
			    "\"[::1]:PORT\"";
		if (n > NETADDR_HOSTLEN)
			return "the host name is longer than 253 bytes";
		memcpy(buf, s, n);
		buf[n] = '\0';
		for (p = buf; *p == '.' || (*p >= '0' && *p <= '9'); p++)
			;
		if (*p == '\0') {
			if (inet_pton(AF_INET, buf, &a4) != 1)
				return "not an IPv4 address";
		} else if (!host_name_ok(buf))
			return "not a host name (letters, digits, '-' and '_' "
			    "in dot-separated labels) or an address";
	}
	if (parse_port(colon + 1, &nport) == -1)
		return "the port must be 1 to 65535";
	memcpy(host, buf, strlen(buf) + 1);
	*port = ntohs(nport);
	return NULL;
}

char *
netaddr_format(char *buf, size_t size, const char *host, int port)
{
	snprintf(buf, size, strchr(host, ':') != NULL ? "[%s]:%d" : "%s:%d",
	    host, port);
	return buf;
}
