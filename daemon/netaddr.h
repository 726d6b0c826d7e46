/*
 * netaddr: addresses as the config file writes them: a listen address
 * ("127.0.0.1:9464", "[::1]:9464", "/run/x.sock") turned into a socket
 * address, and a server's "HOST:PORT" split in two. No DNS.
 */
#ifndef TASKWORKERD_NETADDR_H
#define TASKWORKERD_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

/*
 * Parses S into SA/LEN. Returns NULL, or why S is not an address (in BUF
 * when it names S, else a constant).
 */
const char *netaddr_parse(const char *s, struct sockaddr_storage *sa,
    socklen_t *len, char *buf, size_t size);

/*
 * Splits S, "HOST:PORT" or "[IPv6]:PORT", into HOST (brackets removed, a
 * string of at most NETADDR_HOSTLEN bytes; HOSTSIZE must hold it) and
 * PORT (1..65535). HOST is a name ("redis-1.example"), an IPv4 address
 * or, in brackets, an IPv6 one; it is not looked up. Returns NULL, or why
 * S is not such an address (a constant).
 */
#define NETADDR_HOSTLEN	253
const char *netaddr_host_port(const char *s, char *host, size_t hostsize,
    int *port);
/* HOST and PORT as the config writes them: "[::1]:26379" for IPv6. */
char *netaddr_format(char *buf, size_t size, const char *host, int port);

#endif
