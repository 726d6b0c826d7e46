/*
 * httpc: the http handler's requests, one per task, sent with libcurl's
 * multi interface driven by the daemon's libev loop; never blocks it.
 */
#ifndef TASKWORKERD_HTTPC_H
#define TASKWORKERD_HTTPC_H

#include <stdint.h>
#include <ev.h>

#include "config.h"
#include "runtask.h"

struct http_conf;	/* settings of one config generation, refcounted */
struct http_pool;	/* the connections, and the max_connections bound */
struct http_run;

enum http_result {
	HTTPR_DONE,	/* a 2xx answer */
	HTTPR_FAILED,	/* a failed attempt: REASON, and AFTER_MS when the
			   server said when to come back (Retry-After) */
	HTTPR_REFUSED,	/* a 4xx that says the request itself is wrong */
	HTTPR_STOPPED,	/* http_stop ended it */
};

/*
 * Runs once per request, never from inside http_start/http_stop. REASON
 * lives during the call; AFTER_MS is -1 when the answer set no time.
 */
typedef void http_done_fn(void *arg, enum http_result res,
    const char *reason, long long after_ms);

/* The http settings of CFG, copied. NULL when out of memory. */
struct http_conf *http_conf_new(const struct config *cfg);
void http_conf_unref(struct http_conf *c);

/* NULL when libcurl or memory fails. */
struct http_pool *http_pool_new(struct ev_loop *loop, int max_connections);
/* -1 when out of memory: the bound stays as it was. */
int http_pool_set_max(struct http_pool *p, int max_connections);
/* Aborts every request and frees everything; no callback runs. */
void http_pool_free(struct http_pool *p);
int http_pool_running(const struct http_pool *p);	/* requests sent */
int http_pool_waiting(const struct http_pool *p);	/* waiting for room */
/*
 * A new URL may not speak HTTP/2: until an answer says it does, one
 * request per connection.
 */
void http_pool_forget_mux(struct http_pool *p);
/* Requests that may be sent at once: more wait in the daemon. */
int http_pool_room(const struct http_pool *p);

/*
 * Sends (or queues, past the pool's room) a request; holds a ref on CONF
 * until it ends. NULL when out of memory.
 */
struct http_run *http_start(struct http_pool *p, struct http_conf *conf,
    const struct run_task *t, http_done_fn *fn, void *arg);
/* Aborts a request: FN runs with HTTPR_STOPPED on a later loop turn. */
void http_stop(struct http_run *r);
/* Forgets a request: it is aborted and FN never runs. */
void http_cancel(struct http_run *r);

#endif
