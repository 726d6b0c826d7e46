/*
 * worker: the life of a task, from the id taken off a queue to the row
 * marked completed, and the window that keeps at most `concurrency` in flight.
 */
#ifndef TASKWORKERD_WORKER_H
#define TASKWORKERD_WORKER_H

#include <stdint.h>
#include <ev.h>

#include "config.h"
#include "stats.h"

struct worker;

/* The worker is done (after worker_stop) or cannot go on: exit with CODE. */
typedef void worker_exit_fn(void *arg, int code);

/* ST: the counters the worker adds to; it outlives the worker. */
struct worker *worker_new(struct ev_loop *loop, const struct config *cfg,
    struct stats *st, worker_exit_fn *exit_fn, void *arg);
void worker_free(struct worker *w);
/* CFG replaces the current config, which the caller may free afterwards. */
void worker_reconfigure(struct worker *w, const struct config *cfg);
/*
 * First call: take no more ids, let the tasks in flight finish within
 * shutdown_timeout_ms, put the rest back. NOW nonzero skips the wait.
 */
void worker_stop(struct worker *w, int now);
/* What the metrics endpoint reads at a scrape; counted, never walked. */
struct worker_gauges {
	int in_flight;		/* every task held */
	int waiting;		/* taken, waiting for a slot */
	int running;		/* a handler runs */
	int handler_waiting;	/* for a handler process or connection */
	int redis_up;
	int postgres_up;
};
void worker_gauges(const struct worker *w, struct worker_gauges *g);
/* Sends STATUS= to systemd when it changed. */
void worker_update_status(struct worker *w);

#endif
