/*
 * netaddr: a listen address as the config file writes it ("127.0.0.1:9464",
 * "[::1]:9464" or "/run/x.sock") turned into a socket address. No DNS.
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

#endif
