/*
 * handler: the work a task does once its delay has passed: "none" (the
 * delay is the work), "exec" (a program), "sql" (a statement) or "http"
 * (a request). A run answers later, exactly once; worker.c never knows
 * which handler runs.
 */
#ifndef TASKWORKERD_HANDLER_H
#define TASKWORKERD_HANDLER_H

#include <stdint.h>
#include <ev.h>

#include "config.h"

struct handler;
struct hrun;
struct pgstore;
struct pgrow;

enum handler_result {
	HR_DONE,	/* the work is done; the row is still to be completed */
	HR_COMPLETED,	/* done, and the row completed with it (sql) */
	HR_FAILED,	/* this attempt failed; REASON says why, and AFTER_MS
			   (when >= 0) how long to wait before the next */
	HR_REFUSED,	/* failed for good: another attempt cannot help */
	HR_RETRY,	/* could not run for a passing reason: not an attempt */
	HR_STOPPED,	/* handler_stop ended it */
	HR_UNCHANGED,	/* sql: the completion changed no row, so nothing
			   ran; the caller looks at the row to know why */
	HR_TRANSIENT,	/* sql: the statement failed for a reason that may
			   pass (a timeout, a lock): counted, then retried */
};

/*
 * REASON lives during the call; AFTER_MS is -1 unless the work said when
 * to try again. Never called from inside handler_*().
 */
typedef void handler_done_fn(void *arg, enum handler_result res,
    const char *reason, long long after_ms);

/* What a run is given; handler_start copies what it keeps. */
struct handler_task {
	int64_t id;
	const char *queue;
	int attempt;			/* 1-based */
	const struct pgrow *row;
};

struct handler *handler_new(struct ev_loop *loop, const struct config *cfg,
    struct pgstore *ps);
/* Runs started later use CFG; running ones finish under their settings. */
int handler_reconfigure(struct handler *h, const struct config *cfg);
/* Stops every run at once (children are killed); no callback runs. */
void handler_free(struct handler *h);

/* NULL when out of memory. */
struct hrun *handler_start(struct handler *h, const struct handler_task *t,
    handler_done_fn *fn, void *arg);
/*
 * Asks the run to end (a program: SIGTERM, SIGKILL after the grace time;
 * a request is aborted); FN runs once it has.
 */
void handler_stop(struct hrun *r);
/* Forgets the run: FN never runs, a program is killed. */
void handler_cancel(struct hrun *r);

/*
 * Programs or requests running, and runs waiting for a slot
 * (handler.max_processes, handler.max_connections).
 */
int handler_running(const struct handler *h);
int handler_waiting(const struct handler *h);
/* As many runs wait as may run at once: take no more work for now. */
int handler_full(const struct handler *h);

#endif
