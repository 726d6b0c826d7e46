/*
 * sentinel: where the Redis master is, asked of Redis Sentinel and told
 * at once when a +switch-master says it moved.
 */
#ifndef TASKWORKERD_SENTINEL_H
#define TASKWORKERD_SENTINEL_H

#include <ev.h>

#include "config.h"
#include "resolve.h"

/*
 * The master is (now) at HOST:PORT (HOST is what the sentinels name it:
 * an address or a name). Runs on a loop turn of its own, never inside a
 * sentinel_* call.
 */
typedef void sentinel_fn(void *arg, const char *host, int port);

struct sentinel;

/*
 * Asks cfg->redis.sentinels in turn for cfg->redis.sentinel_master and
 * keeps a subscription to +switch-master on one of them. RES may be NULL
 * (names go to hiredis).
 */
struct sentinel *sentinel_new(struct ev_loop *loop, const struct config *cfg,
    struct resolver *res, sentinel_fn *on_master, void *arg);
void sentinel_free(struct sentinel *s);
/* New settings (a reload): asks again when they changed. */
void sentinel_reconfigure(struct sentinel *s, const struct config *cfg);
/*
 * The master known may be wrong (READONLY, a lost connection, ROLE says
 * replica): ask the sentinels again. ON_MASTER follows with the answer,
 * even when it did not change.
 */
void sentinel_ask(struct sentinel *s);
/* The master last told, or NULL (PORT untouched) before any answer. */
const char *sentinel_master(const struct sentinel *s, int *port);
/* Why no master is known, or "" */
const char *sentinel_last_error(const struct sentinel *s);

#endif
