/*
 * pgstore: the PostgreSQL side. A pool of nonblocking libpq connections on
 * the loop, statements prepared per session, loads and completions batched.
 */
#ifndef TASKWORKERD_PGSTORE_H
#define TASKWORKERD_PGSTORE_H

#include <stdint.h>
#include <ev.h>

#include "config.h"
#include "stats.h"

/* A loaded row: its status and the configured extra columns (NULL = SQL NULL). */
struct pgrow {
	char *status;
	int ncols;
	char *cols[];
};

enum pgstore_result {
	PGSTORE_OK,		/* loaded / completed */
	PGSTORE_NOTFOUND,	/* no row with that id */
	PGSTORE_ERROR,		/* a passing trouble (connection, conflict); retry later */
	PGSTORE_FAILED,		/* the row's own statement failed; MSG says why */
};

/*
 * Answer to a request; runs exactly once unless the request was cancelled.
 * On a successful load ROW belongs to the callee (pgrow_free). MSG says why
 * on PGSTORE_ERROR and PGSTORE_FAILED.
 */
typedef void pgstore_fn(void *arg, enum pgstore_result res, struct pgrow *row,
    const char *msg);
/* Called when the number of ready connections changes. */
typedef void pgstore_state_fn(void *arg);

struct pgstore;
struct pgreq;

/* Connection figures go to ST->postgres. */
struct pgstore *pgstore_new(struct ev_loop *loop, const struct config *cfg,
    struct stats *st, pgstore_state_fn *state_fn, void *arg);
void pgstore_free(struct pgstore *ps);
/* New settings; when they shape the sessions, all reconnect with them. */
void pgstore_reconfigure(struct pgstore *ps, const struct config *cfg);

struct pgreq *pgstore_load(struct pgstore *ps, int64_t id, pgstore_fn *fn,
    void *arg);
struct pgreq *pgstore_complete(struct pgstore *ps, int64_t id, pgstore_fn *fn,
    void *arg);
/*
 * The sql handler: the configured statement ($1 = ID) and the completion
 * of the row, in one transaction of their own.
 */
struct pgreq *pgstore_run_sql(struct pgstore *ps, int64_t id, pgstore_fn *fn,
    void *arg);
/*
 * Records a failed run: attempts_column and error_column when configured
 * and, when FINAL, failed_status (a completed row is left as it is).
 */
struct pgreq *pgstore_fail(struct pgstore *ps, int64_t id, int final,
    int attempts, const char *error, pgstore_fn *fn, void *arg);
/* The callback of REQ will not run; REQ must not be used again. */
void pgstore_cancel(struct pgreq *req);

int pgstore_nready(const struct pgstore *ps);
int pgstore_nconns(const struct pgstore *ps);
/* Why the last session or statement failed, or NULL. */
const char *pgstore_last_error(const struct pgstore *ps);
void pgrow_free(struct pgrow *row);

#endif
