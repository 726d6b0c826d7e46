/*
 * rconnect: one way to open a Redis connection on the loop.
 */
#include <stdio.h>

#include <hiredis/hiredis.h>
#include <hiredis/adapters/libev.h>

#include "rconnect.h"

redisAsyncContext *
rconnect(struct ev_loop *loop, const char *host, int port, void *data,
    rconnect_cb *on_connect, redisDisconnectCallback *on_lost, char *why,
    size_t len)
{
	redisAsyncContext *ac = port == 0 ? redisAsyncConnectUnix(host) :
	    redisAsyncConnect(host, port);

	if (ac == NULL) {
		snprintf(why, len, "out of memory");
		return NULL;
	}
	if (ac->err) {
		snprintf(why, len, "%s", ac->errstr);
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = data;
	if (port != 0)
		redisEnableKeepAlive(&ac->c);
	redisLibevAttach(loop, ac);
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_lost);
	return ac;
}
