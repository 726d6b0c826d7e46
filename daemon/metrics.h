/*
 * metrics: GET /metrics in the Prometheus text format, served by
 * libmicrohttpd from the daemon's own loop; it reads stats and never waits.
 */
#ifndef TASKWORKERD_METRICS_H
#define TASKWORKERD_METRICS_H

#include <ev.h>

#include "config.h"
#include "stats.h"
#include "worker.h"

struct metrics;

/*
 * Listens on CFG's metrics.listen (the caller checks it is set). ST and W
 * are read at each scrape and must outlive the endpoint. NULL when the
 * address cannot be listened on (logged), errno EADDRINUSE when that may
 * pass.
 */
struct metrics *metrics_new(struct ev_loop *loop, const struct config *cfg,
    const struct stats *st, struct worker *w);
void metrics_free(struct metrics *m);
/* The reloaded config; its queues and listen address are the same. */
void metrics_reconfigure(struct metrics *m, const struct config *cfg);

#endif
