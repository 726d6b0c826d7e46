/*
 * netaddr: listen addresses from the config file, parsed without a lookup:
 * an IPv4 or bracketed IPv6 literal with a port, or an absolute unix path.
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
