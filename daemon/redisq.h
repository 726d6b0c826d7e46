/*
 * redisq: the Redis side. Moves ids from the queues into this worker's
 * processing lists, acknowledges, dead-letters and requeues them.
 */
#ifndef TASKWORKERD_REDISQ_H
#define TASKWORKERD_REDISQ_H

#include <stddef.h>
#include <ev.h>

#include "config.h"
#include "stats.h"

typedef void redisq_add_fn(void *ctx, const char *val, size_t len);

struct redisq_callbacks {
	/* How many more ids the worker can take now (may be <= 0). */
	int (*room)(void *arg);
	/*
	 * An id moved into QUEUE:processing:WORKER; VAL lives during the call.
	 * ATTEMPTS: its runs that failed so far (QUEUE:attempts).
	 */
	void (*on_id)(void *arg, int qi, const char *val, size_t len,
	    int attempts);
	/*
	 * While idle: VAL is at the head of queue QI and a fetch follows; the
	 * worker may start on it early. VAL lives during the call. Optional.
	 */
	void (*on_hint)(void *arg, int qi, const char *val, size_t len);
	/* Calls ADD for every value of queue QI the worker holds in memory. */
	void (*foreach_held)(void *arg, int qi, redisq_add_fn *add, void *ctx);
	/* Readiness changed (see redisq_ready). */
	void (*on_state)(void *arg);
	/*
	 * Something that no retry can fix, such as a server too old (exit
	 * CODE 70) or a worker id a live daemon holds (78).
	 */
	void (*on_fatal)(void *arg, int code, const char *why);
};

/* The answer to an ack or dead-letter: OK is 0 when it must be retried. */
typedef void redisq_done_fn(void *arg, int ok);

struct redisq;
struct resolver;

/*
 * Counters and queue samples go to ST; RES (may be NULL) resolves the
 * host name. No callback runs inside a redisq_*
 * call: each comes on a loop turn of its own.
 */
struct redisq *redisq_new(struct ev_loop *loop, const struct config *cfg,
    struct stats *st, struct resolver *res, const struct redisq_callbacks *cb,
    void *arg);
void redisq_free(struct redisq *q);
/* New settings; changed connection settings reconnect. */
void redisq_reconfigure(struct redisq *q, const struct config *cfg);

/* The worker has room again: fetch if possible. */
void redisq_kick(struct redisq *q);
/*
 * Removes VAL from QI's processing list (and its attempt count when
 * ATTEMPTS > 0). -1 (FN not called) when down.
 */
int redisq_ack(struct redisq *q, int qi, const char *val, size_t len,
    int attempts, redisq_done_fn *fn, void *arg);
/*
 * Moves VAL from QI's processing list to QUEUE:retry, due in DELAY_MS,
 * and records ATTEMPTS failed runs; one script.
 */
int redisq_retry(struct redisq *q, int qi, const char *val, size_t len,
    int delay_ms, int attempts, redisq_done_fn *fn, void *arg);
/*
 * Moves VAL from QI's processing list to its dead list and records REASON
 * (with the time) in QUEUE:dead:reason; trims the list to redis.dead_max.
 */
int redisq_dead(struct redisq *q, int qi, const char *val, size_t len,
    const char *reason, redisq_done_fn *fn, void *arg);
/* Takes no more ids. */
void redisq_stop_fetch(struct redisq *q);
/*
 * Puts every id still in this worker's processing lists back at the head
 * of its queue, in order, then calls FN (OK 0 when Redis could not be
 * reached: the ids stay where they are until the next start).
 */
void redisq_requeue_all(struct redisq *q, redisq_done_fn *fn, void *arg);

/* Connected, recovered and fetching. */
int redisq_ready(const struct redisq *q);
/* Why the command connection last went down, or NULL. */
const char *redisq_last_error(const struct redisq *q);
const char *redisq_queue(const struct redisq *q, int qi);
const char *redisq_dead_key(const struct redisq *q, int qi);
/* QUEUE:paused was found when ids were last taken (redisq_npaused: how many). */
int redisq_paused(const struct redisq *q, int qi);
int redisq_npaused(const struct redisq *q);
/* A limit held queue QI back at the last fetch: its LIMIT_* + 1, or 0. */
int redisq_limited(const struct redisq *q, int qi);

#endif
