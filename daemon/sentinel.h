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
 * Asks cfg->redis.sentinels in turn for cfg->redis.sentinel_master (each
 * within redis.connect_timeout_ms to resolve its name, again to connect,
 * and then redis.command_timeout_ms to answer), from the one that
 * answered last; after a round where none did, again after a backoff
 * (worker.retry_min_ms..retry_max_ms), with one warning per outage.
 * Keeps a subscription to +switch-master on a sentinel that answered (on
 * the next one after a loss). The first ask goes out on the next loop
 * turn. RES looks the sentinels' names up off the loop; it may be NULL,
 * and names then go to hiredis, whose lookup blocks the loop. CFG must
 * outlive S (until sentinel_reconfigure gives another). Returns NULL
 * when out of memory or CFG names no sentinel.
 */
struct sentinel *sentinel_new(struct ev_loop *loop, const struct config *cfg,
    struct resolver *res, sentinel_fn *on_master, void *arg);
/* Closes everything; no callback runs, now or later. NULL is allowed. */
void sentinel_free(struct sentinel *s);
/*
 * New settings (a reload): when the Redis connection settings changed
 * (config_redis_conn_changed: the sentinels, the master's name, the
 * credentials, the timeouts), drops both connections and asks again; a
 * new master name forgets the address known. CFG replaces the old one,
 * which may be freed after the call.
 */
void sentinel_reconfigure(struct sentinel *s, const struct config *cfg);
/*
 * The master known may be wrong (READONLY, a lost connection, ROLE says
 * replica): ask the sentinels again (at once, even during a backoff; a
 * round already out is not doubled). ON_MASTER follows with the next
 * answer, even when it did not change; until one comes, nothing does.
 */
void sentinel_ask(struct sentinel *s);
/* The master last told, or NULL (PORT untouched) before any answer. */
const char *sentinel_master(const struct sentinel *s, int *port);
/*
 * Why the last round found no master (every sentinel failed, the last
 * one's reason included), "no sentinel has answered yet" before the first
 * round ends, or "" since a sentinel answered.
 */
const char *sentinel_last_error(const struct sentinel *s);

#endif
