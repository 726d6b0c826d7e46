/*
 * rconnect: a hiredis async context opened, watched by the loop and given
 * its callbacks, the same way for every Redis connection of the daemon.
 */
#ifndef TASKWORKERD_RCONNECT_H
#define TASKWORKERD_RCONNECT_H

#include <stddef.h>

#include <ev.h>
#include <hiredis/async.h>

/* hiredis 1.0 alone took the connect callback's context without const. */
#if HIREDIS_MAJOR == 1 && HIREDIS_MINOR == 0
#define CONNECT_CB_CONST
#else
#define CONNECT_CB_CONST const
#endif

typedef void rconnect_cb(CONNECT_CB_CONST redisAsyncContext *ac, int status);

/*
 * Connects to HOST:PORT (PORT 0: HOST is a unix socket path), with TCP
 * keepalive, on LOOP, with DATA and the two callbacks. NULL (WHY filled)
 * when that failed at once.
 */
redisAsyncContext *rconnect(struct ev_loop *loop, const char *host, int port,
    void *data, rconnect_cb *on_connect, redisDisconnectCallback *on_lost,
    char *why, size_t len);

#endif
