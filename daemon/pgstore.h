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

/*
 * The statements of one configuration: the table, its columns and the sql
 * handler's statement. A loaded row keeps the set it was loaded with, so
 * its completion goes where the row came from whatever a reload changes.
 */
struct pgtable;

/*
 * A loaded row: its status and the configured extra columns (NULL = SQL
 * NULL) under the names the load returned them with.
 */
struct pgrow {
	struct pgtable *table;	/* held by the row */
	size_t size;		/* bytes of the row in memory */
	char *status;
	int ncols;
	char **names;
	char *cols[];
};

enum pgstore_result {
	PGSTORE_OK,		/* loaded / completed */
	PGSTORE_NOTFOUND,	/* no row with that id */
	PGSTORE_ERROR,		/* a passing trouble (connection, conflict); retry later */
	PGSTORE_FAILED,		/* the row's own statement failed; MSG says why */
	PGSTORE_UNCHANGED,	/* the completion changed no row: look at it */
	PGSTORE_TRANSIENT,	/* this statement failed for a reason that may
				   pass (a timeout, a lock, a conflict): worth
				   a few more tries, not endless ones */
};

/*
 * Answer to a request; runs exactly once unless the request was cancelled,
 * and never from inside a pgstore_*() call. On a successful load ROW
 * belongs to the callee (pgrow_free). MSG says why on PGSTORE_ERROR,
 * PGSTORE_FAILED and PGSTORE_TRANSIENT.
 */
typedef void pgstore_fn(void *arg, enum pgstore_result res, struct pgrow *row,
    const char *msg);
/* Called (on a later loop turn) when the number of ready sessions changed. */
typedef void pgstore_state_fn(void *arg);

struct pgstore;
struct pgreq;

struct resolver;

/*
 * Connection figures go to ST->postgres; RES (may be NULL: libpq looks
 * names up itself) resolves the conninfo's host names.
 */
struct pgstore *pgstore_new(struct ev_loop *loop, const struct config *cfg,
    struct stats *st, struct resolver *res, pgstore_state_fn *state_fn,
    void *arg);
/* Pending requests are dropped; no answer runs. */
void pgstore_free(struct pgstore *ps);
/*
 * New settings. Rows loaded before keep their table; when the sessions'
 * own settings change, all reconnect and what was unanswered is sent
 * again (every request may be sent twice: see pgstore_run_sql).
 */
void pgstore_reconfigure(struct pgstore *ps, const struct config *cfg);

/*
 * TABLE is the set a row was loaded with (pgrow.table) or NULL for the
 * current one; requests take their own reference.
 */
struct pgreq *pgstore_load(struct pgstore *ps, struct pgtable *table,
    int64_t id, pgstore_fn *fn, void *arg);
/* PGSTORE_UNCHANGED when the UPDATE changed no row. */
struct pgreq *pgstore_complete(struct pgstore *ps, struct pgtable *table,
    int64_t id, pgstore_fn *fn, void *arg);
/*
 * The sql handler: in one transaction, the completion of the row first,
 * and the configured statement ($1 = ID) only when it changed the row.
 * The two commit together at most once per row, however often the
 * transaction is sent; PGSTORE_UNCHANGED when the row was not changed.
 */
struct pgreq *pgstore_run_sql(struct pgstore *ps, struct pgtable *table,
    int64_t id, pgstore_fn *fn, void *arg);
/*
 * Records a failed run: attempts_column and error_column when configured
 * and, when FINAL, failed_status (a completed row is left as it is).
 */
struct pgreq *pgstore_fail(struct pgstore *ps, struct pgtable *table,
    int64_t id, int final, int attempts, const char *error, pgstore_fn *fn,
    void *arg);
/* The callback of REQ will not run; REQ must not be used again. */
void pgstore_cancel(struct pgreq *req);
/*
 * Whether REQ has gone out to a server and may have had its effect (not
 * when the only server it went to answered that it is read-only).
 */
int pgstore_sent(const struct pgreq *req);

int pgstore_nready(const struct pgstore *ps);
int pgstore_nconns(const struct pgstore *ps);
/* Why the last session or statement failed, or NULL. */
const char *pgstore_last_error(const struct pgstore *ps);
void pgrow_free(struct pgrow *row);
struct pgtable *pgtable_ref(struct pgtable *t);
/* The completed status of T's rows. */
const char *pgtable_completed(const struct pgtable *t);
void pgtable_unref(struct pgtable *t);

#endif
