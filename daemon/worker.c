/*
 * worker: every task's state machine, from fetched to acknowledged, and
 * the in-flight window that is the daemon's only back-pressure.
 */
#include <sys/queue.h>

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "handler.h"
#include "idmap.h"
#include "log.h"
#include "notify.h"
#include "pgstore.h"
#include "redisq.h"
#include "resolve.h"
#include "taskid.h"
#include "worker.h"

enum tstate {
	T_WAITING,	/* taken, waits for a slot */
	T_LOADING,	/* row requested */
	T_DELAY,	/* timer running */
	T_RUNNING,	/* the handler runs */
	T_COMPLETING,	/* UPDATE sent */
	T_ACKING,	/* LREM sent */
	T_MARKING,	/* the failed attempt is being recorded in postgres */
	T_RETRYING,	/* move to QUEUE:retry sent */
	T_DEAD,		/* move to the dead list sent */
	T_BACKOFF,	/* a step failed; the timer retries it */
	T_VERIFYING,	/* the completion changed nothing: the row is read */
	T_NSTATES
};

struct task {
	TAILQ_ENTRY(task) all;	/* every task in memory */
	TAILQ_ENTRY(task) wait;	/* T_WAITING: the FIFO of tasks without a slot */
	struct idnode held;	/* in worker.held, by queue and value */
	struct worker *w;
	int64_t id;
	ev_timer timer;
	ev_tstamp delay_start;
	ev_tstamp missing_since;
	ev_tstamp taken_at;	/* for the task duration */
	ev_tstamp run_at;	/* the handler started */
	struct pgreq *req;
	struct pgrow *row;
	struct pgtable *table;	/* where the row was loaded from */
	struct hrun *run;
	char *why;		/* why the attempt failed or the task is dead */
	size_t len;
	int qi;
	int failures;		/* steps retried, while their wait grew */
	int attempt;		/* this run, 1-based (QUEUE:attempts + 1) */
	int retry_ms;		/* the wait before the next attempt */
	/* Small fields last and narrow: one of these per task in flight. */
	uint8_t state;		/* enum tstate */
	uint8_t resume;		/* enum tstate: the step a T_BACKOFF retries */
	uint8_t dead;		/* enum dead_reason: why, when it goes dead */
	uint8_t passing;	/* statements that failed for a passing reason */
	uint8_t final;		/* the failed attempt was the last */
	char val[];		/* the value as taken, NUL added */
};
_Static_assert(T_NSTATES <= 256 && DEAD_NREASONS <= 256,
    "a task's state and dead reason fit in a byte");

/*
 * The row of the id an idle daemon is woken for, loaded while the fetch
 * script that takes the id is on its way: the two round trips overlap.
 */
struct hint {
	int64_t id;		/* 0: none */
	int qi;
	struct pgreq *req;	/* the load, while out */
	struct task *t;		/* the task that took the id meanwhile */
	int done;
	ev_tstamp done_at;	/* when the row was read */
	enum pgstore_result res;
	struct pgrow *row;
};

/* A row read for a hint is used this long at most; then it is read again. */
#define HINT_FRESH	0.5

struct worker {
	struct ev_loop *loop;
	const struct config *cfg;
	worker_exit_fn *exit_fn;
	void *exit_arg;
	struct redisq *q;
	struct pgstore *ps;
	struct handler *h;
	struct resolver *res;	/* host names of both, off the loop */
	uint64_t rng;		/* jitter of task retries */
	TAILQ_HEAD(, task) tasks;
	TAILQ_HEAD(, task) waiting;
	struct idmap held;	/* every task, by queue and value */
	int ntasks;
	int nstate[T_NSTATES];	/* tasks in each state */
	int nrows;		/* tasks holding their row */
	size_t row_bytes;	/* the memory of those rows */
	size_t row_est;		/* a row's likely size: 0 until one is seen */
	int stopping;
	int abandoning;
	int requeueing;
	int exiting;
	ev_timer shutdown;
	struct stats *st;
	struct hint hint;
	char status[512];
};

static void task_load(struct task *t);
static void task_run(struct task *t);
static void task_complete(struct task *t);
static void task_ack(struct task *t);
static void task_mark(struct task *t);
static void task_fail(struct task *t, const char *reason);
static void task_fail_after(struct task *t, const char *reason,
    long long after_ms, int refused);
static void task_dead(struct task *t, enum dead_reason dead,
    const char *reason);
static void task_verify(struct task *t);
static void retry_send(struct task *t);
static void dead_send(struct task *t);
static void check_drained(struct worker *w);
static int nawaited(const struct worker *w);

/* A value as it may safely appear in a log line: printable, bounded. */
static const char *
printable(const struct task *t, char *buf, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < t->len && o + 5 < len; i++) {
		unsigned char ch = t->val[i];

		if (i == 40) {
			o += snprintf(buf + o, len - o, "...(%zu bytes)",
			    t->len);
			break;
		}
		if (isprint(ch) && ch != '"' && ch != '\\')
			buf[o++] = ch;
		else
			o += snprintf(buf + o, len - o, "\\x%02x", ch);
	}
	buf[o < len ? o : len - 1] = '\0';
	return buf;
}

/*
 * How many more ids may be taken so that what loaded rows hold, and a
 * likely row for every task waiting for a slot or loading, stay within
 * worker.max_bytes_in_flight. Until a row is seen, rows are taken to be
 * as large as postgres.max_row_bytes lets them be.
 */
static int
byte_room(const struct worker *w)
{
	size_t max = (size_t)w->cfg->worker.max_bytes_in_flight;
	size_t est = w->row_est ? w->row_est :
	    (size_t)w->cfg->postgres.max_row_bytes;
	size_t used = w->row_bytes + (size_t)(w->nstate[T_WAITING] +
	    w->nstate[T_LOADING]) * est;

	/* One task at a time however large its row may be. */
	if (w->ntasks == 0)
		return 1 + (used + est <= max ? (int)((max - used) / est) - 1 :
		    0);
	if (used >= max)
		return 0;
	return (max - used) / est > INT32_MAX ? INT32_MAX :
	    (int)((max - used) / est);
}

static void task_drop_row(struct task *t);

static void
task_hold_row(struct task *t, struct pgrow *row)
{
	struct worker *w = t->w;

	task_drop_row(t);
	t->row = row;
	w->nrows++;
	w->row_bytes += row->size;
	/* A larger row counts at once; smaller ones bring it down slowly. */
	if (row->size > w->row_est)
		w->row_est = row->size;
	else
		w->row_est -= (w->row_est - row->size) / 8;
}

static void
task_drop_row(struct task *t)
{
	struct worker *w = t->w;

	if (t->row == NULL)
		return;
	w->nrows--;
	w->row_bytes -= t->row->size;
	pgrow_free(t->row);
	t->row = NULL;
}

static int
room(void *arg)
{
	struct worker *w = arg;
	int n, bytes;

	/*
	 * While PostgreSQL is away nothing new is taken; nor while as many
	 * tasks wait for a handler process or connection as may run at once.
	 */
	if (w->stopping || pgstore_nready(w->ps) == 0 ||
	    handler_full(w->h))
		return 0;
	n = w->cfg->worker.concurrency - w->ntasks;
	bytes = byte_room(w);
	return bytes < n ? bytes : n;
}

/* Tasks holding a slot of the window: every one not waiting for one. */
static int
nactive(const struct worker *w)
{
	return w->ntasks - w->nstate[T_WAITING];
}

/* Every change of state goes here, so the counts stay true. */
static void
set_state(struct task *t, enum tstate s)
{
	struct worker *w = t->w;

	if (t->state == T_WAITING)
		TAILQ_REMOVE(&w->waiting, t, wait);
	w->nstate[t->state]--;
	w->nstate[s]++;
	t->state = s;
}

static void
task_free(struct task *t)
{
	struct worker *w = t->w;

	if (t->state == T_WAITING)
		TAILQ_REMOVE(&w->waiting, t, wait);
	if (w->hint.t == t)
		w->hint.t = NULL;	/* its load is dropped when it comes */
	TAILQ_REMOVE(&w->tasks, t, all);
	idmap_del(&w->held, &t->held);
	w->nstate[t->state]--;
	w->ntasks--;
	ev_timer_stop(w->loop, &t->timer);
	pgstore_cancel(t->req);
	if (t->run)
		handler_cancel(t->run);
	task_drop_row(t);
	pgtable_unref(t->table);
	free(t->why);
	free(t);
}

/* Starts waiting tasks, oldest first, while there are free slots. */
static void
start_waiting(struct worker *w)
{
	struct task *t;

	while (nactive(w) < w->cfg->worker.concurrency &&
	    (t = TAILQ_FIRST(&w->waiting)) != NULL)
		task_load(t);
}

/*
 * The id is acknowledged (completed, moved to the retry set or the dead
 * list): the task's time is counted, it leaves memory, the next comes.
 */
static void
task_done(struct task *t)
{
	struct worker *w = t->w;

	stats_observe(&w->st->q[t->qi].task, ev_now(w->loop) - t->taken_at);
	task_free(t);
	if (w->exiting)
		return;
	if (w->stopping) {
		check_drained(w);
		return;
	}
	start_waiting(w);
	redisq_kick(w->q);
}

static void
retry_cb(struct ev_loop *loop, ev_timer *timer, int revents)
{
	struct task *t = timer->data;

	(void)loop;
	(void)revents;
	switch ((enum tstate)t->resume) {
	case T_LOADING:
		task_load(t);
		break;
	case T_RUNNING:
		task_run(t);
		break;
	case T_MARKING:
		task_mark(t);
		break;
	case T_RETRYING:
		retry_send(t);
		break;
	case T_COMPLETING:
		task_complete(t);
		break;
	case T_ACKING:
		task_ack(t);
		break;
	case T_DEAD:
		dead_send(t);
		break;
	case T_VERIFYING:
		task_verify(t);
		break;
	default:
		log_errorx("task %lld: cannot resume state %d",
		    (long long)t->id, (int)t->resume);
		break;
	}
}

/*
 * worker.retry_max_ms was lowered: a step retry already waiting longer
 * than the new bound waits a delay drawn at it instead, as one after very
 * many failures would (in [max/2, max]), so the reload does not wait out
 * the old bound, nor start every such task at the same moment.
 */
static void
step_cut(struct task *t)
{
	struct worker *w = t->w;
	int delay;

	/* Fired already, its retry_cb due in this turn: nothing to cut. */
	if (!ev_is_active(&t->timer) ||
	    (delay = backoff_cut(ev_timer_remaining(w->loop, &t->timer) * 1000,
	    w->cfg->worker.retry_min_ms, w->cfg->worker.retry_max_ms,
	    &w->rng)) == 0)
		return;
	ev_timer_stop(w->loop, &t->timer);
	ev_timer_set(&t->timer, delay / 1000.0, 0.);
	ev_timer_start(w->loop, &t->timer);
}

/* A step failed for a reason that may pass: try it again later. */
static void
task_retry(struct task *t, enum tstate step, const char *why)
{
	struct worker *w = t->w;
	int delay;

	delay = backoff_step(&t->failures, w->cfg->worker.retry_min_ms,
	    w->cfg->worker.retry_max_ms, &w->rng);
	w->st->step_retries++;
	log_debug("task %lld: %s; retrying in %d ms", (long long)t->id, why,
	    delay);
	set_state(t, T_BACKOFF);
	t->resume = step;
	ev_timer_stop(w->loop, &t->timer);
	ev_init(&t->timer, retry_cb);
	ev_timer_set(&t->timer, delay / 1000.0, 0.);
	ev_timer_start(w->loop, &t->timer);
	if (w->stopping && w->abandoning)
		check_drained(w);
}

/*
 * A statement of STEP failed for a reason that may pass (a statement
 * timeout, a lock, a conflict): tried again a few times, then the attempt
 * fails with WHY, so a task whose statement never gets through ends.
 */
#define PASSING_MAX	5
_Static_assert(PASSING_MAX < 255, "a task's passing count fits in a byte");

static void
task_passing(struct task *t, enum tstate step, const char *why)
{
	if (++t->passing < PASSING_MAX) {
		task_retry(t, step, why);
		return;
	}
	t->passing = 0;
	task_fail(t, why);
}

static void
ack_cb(void *arg, int ok)
{
	struct task *t = arg;

	if (t->w->exiting)
		return;
	if (!ok) {
		task_retry(t, T_ACKING, "acknowledgement not confirmed");
		return;
	}
	log_debug("task %lld: acknowledged", (long long)t->id);
	task_done(t);
}

static void
task_ack(struct task *t)
{
	struct worker *w = t->w;

	set_state(t, T_ACKING);
	if (redisq_ack(w->q, t->qi, t->val, t->len, t->attempt - 1, ack_cb,
	    t) == -1)
		task_retry(t, T_ACKING, "redis is not connected");
}

static void
dead_cb(void *arg, int ok)
{
	struct task *t = arg;
	struct worker *w = t->w;

	if (w->exiting)
		return;
	if (!ok) {
		task_retry(t, T_DEAD, "dead-lettering not confirmed");
		return;
	}
	w->st->q[t->qi].dead[t->dead]++;
	if (t->dead == DEAD_FAILED)
		w->st->q[t->qi].failed++;
	task_done(t);
}

static void
dead_send(struct task *t)
{
	set_state(t, T_DEAD);
	if (redisq_dead(t->w->q, t->qi, t->val, t->len, t->why, dead_cb,
	    t) == -1)
		task_retry(t, T_DEAD, "redis is not connected");
}

/* REASON is recorded with the id in QUEUE:dead:reason. */
static void
task_dead(struct task *t, enum dead_reason dead, const char *reason)
{
	struct worker *w = t->w;
	char buf[128];

	log_warnx("task \"%s\" from %s is dead: %s; moved to %s",
	    printable(t, buf, sizeof(buf)), redisq_queue(w->q, t->qi), reason,
	    redisq_dead_key(w->q, t->qi));
	t->dead = dead;
	if (reason != t->why) {
		free(t->why);
		t->why = strdup(reason);
		if (t->why == NULL) {
			task_retry(t, T_DEAD, "out of memory");
			return;
		}
	}
	dead_send(t);
}

static void
retried_cb(void *arg, int ok)
{
	struct task *t = arg;

	if (t->w->exiting)
		return;
	if (!ok) {
		task_retry(t, T_RETRYING, "the move to the retry set was not "
		    "confirmed");
		return;
	}
	t->w->st->q[t->qi].retried++;
	task_done(t);
}

static void
retry_send(struct task *t)
{
	set_state(t, T_RETRYING);
	if (redisq_retry(t->w->q, t->qi, t->val, t->len, t->retry_ms,
	    t->attempt, retried_cb, t) == -1)
		task_retry(t, T_RETRYING, "redis is not connected");
}

/* The failed attempt is recorded: on to the retry set or the dead list. */
static void
task_settle(struct task *t)
{
	if (t->final)
		task_dead(t, DEAD_FAILED, t->why);
	else
		retry_send(t);
}

static void
mark_cb(void *arg, enum pgstore_result res, struct pgrow *row,
    const char *msg)
{
	struct task *t = arg;

	pgrow_free(row);
	t->req = NULL;
	if (res == PGSTORE_ERROR || (res == PGSTORE_TRANSIENT &&
	    ++t->passing < PASSING_MAX)) {
		task_retry(t, T_MARKING, msg ? msg : "update failed");
		return;
	}
	/* The row refuses even this: Redis still records why. */
	if (res == PGSTORE_FAILED || res == PGSTORE_TRANSIENT)
		log_warnx("task %lld: cannot record the failure in its row: %s",
		    (long long)t->id, msg);
	task_settle(t);
}

static void
task_mark(struct task *t)
{
	set_state(t, T_MARKING);
	t->req = pgstore_fail(t->w->ps, t->table, t->id, t->final, t->attempt,
	    t->why, mark_cb, t);
	if (t->req == NULL)
		task_retry(t, T_MARKING, "out of memory");
}

/*
 * The failure policy, in one place: an attempt failed for REASON. Before
 * the last attempt the id waits in QUEUE:retry; after it, the row gets
 * failed_status and the id goes to the dead list.
 */
static void
task_fail(struct task *t, const char *reason)
{
	task_fail_after(t, reason, -1, 0);
}

/*
 * The attempt failed for REASON. The next one waits the backoff, or
 * AFTER_MS when the work asked for longer (Retry-After); there is none
 * when the attempts are spent or the work said none can help (REFUSED).
 */
static void
task_fail_after(struct task *t, const char *reason, long long after_ms,
    int refused)
{
	struct worker *w = t->w;
	const struct config *cfg = w->cfg;
	char *why;

	if (asprintf(&why, "attempt %d/%d: %s", t->attempt,
	    cfg->retry.attempts, reason) == -1) {
		/* The attempt is run again from its load, uncounted. */
		task_retry(t, T_LOADING, "out of memory");
		return;
	}
	free(t->why);
	t->why = why;
	task_drop_row(t);
	t->final = refused || t->attempt >= cfg->retry.attempts;
	if (!t->final) {
		t->retry_ms = backoff_retry_delay(t->attempt,
		    cfg->retry.min_ms, cfg->retry.max_ms, &w->rng);
		if (after_ms > t->retry_ms)
			t->retry_ms = (int)after_ms;
		log_notice("task %lld: %s; next attempt in %d ms",
		    (long long)t->id, why, t->retry_ms);
	}
	if (t->final || cfg->postgres.attempts_column[0] != '\0' ||
	    cfg->postgres.error_column[0] != '\0')
		task_mark(t);
	else
		task_settle(t);
}

static void
complete_cb(void *arg, enum pgstore_result res, struct pgrow *row,
    const char *msg)
{
	struct task *t = arg;
	struct worker *w = t->w;

	pgrow_free(row);
	t->req = NULL;
	if (w->abandoning && res != PGSTORE_OK) {
		/* Out of time: not committed, so the id may go back. */
		task_free(t);
		check_drained(w);
		return;
	}
	switch (res) {
	case PGSTORE_OK:
		break;
	case PGSTORE_FAILED:
		task_fail(t, msg);
		return;
	case PGSTORE_UNCHANGED:
	case PGSTORE_NOTFOUND:
		task_verify(t);
		return;
	case PGSTORE_TRANSIENT:
		task_passing(t, T_COMPLETING, msg);
		return;
	case PGSTORE_ERROR:
		task_retry(t, T_COMPLETING, msg ? msg : "update failed");
		return;
	}
	t->w->st->q[t->qi].completed++;
	log_debug("task %lld: completed", (long long)t->id);
	task_ack(t);
}

static void
task_complete(struct task *t)
{
	set_state(t, T_COMPLETING);
	t->req = pgstore_complete(t->w->ps, t->table, t->id, complete_cb, t);
	if (t->req == NULL)
		task_retry(t, T_COMPLETING, "out of memory");
}

/* A row completed already is only acknowledged; 1 when it was (ROW freed). */
static int
acked_if_completed(struct task *t, struct pgrow *row)
{
	if (row->status == NULL ||
	    strcmp(row->status, pgtable_completed(row->table)) != 0)
		return 0;
	log_debug("task %lld: already %s, acknowledging", (long long)t->id,
	    row->status);
	pgrow_free(row);
	t->w->st->q[t->qi].already++;
	task_ack(t);
	return 1;
}

static void
verify_cb(void *arg, enum pgstore_result res, struct pgrow *row,
    const char *msg)
{
	struct task *t = arg;

	t->req = NULL;
	switch (res) {
	case PGSTORE_ERROR:
	case PGSTORE_TRANSIENT:
		task_retry(t, T_VERIFYING, msg ? msg : "load failed");
		return;
	case PGSTORE_FAILED:
		task_fail(t, msg);
		return;
	case PGSTORE_NOTFOUND:
	case PGSTORE_UNCHANGED:
		task_dead(t, DEAD_NO_ROW, "the row is gone");
		return;
	case PGSTORE_OK:
		break;
	}
	if (acked_if_completed(t, row))
		return;
	pgrow_free(row);
	/* Row-level security, or a trigger that skipped the UPDATE. */
	task_fail(t, "the completion changed no row");
}

/*
 * The completion changed no row: the row says whether it is completed
 * already (a completion sent twice), gone, or refused the change.
 */
static void
task_verify(struct task *t)
{
	struct worker *w = t->w;

	set_state(t, T_VERIFYING);
	t->req = pgstore_load(w->ps, t->table, t->id, verify_cb, t);
	if (t->req == NULL)
		task_retry(t, T_VERIFYING, "out of memory");
}

static void
run_cb(void *arg, enum handler_result res, const char *reason,
    long long after_ms)
{
	struct task *t = arg;
	struct worker *w = t->w;

	t->run = NULL;
	if (w->exiting)
		return;
	stats_observe(&w->st->q[t->qi].handler, ev_now(w->loop) - t->run_at);
	if (w->abandoning) {
		/* Out of time: the id goes back with the rest. */
		log_debug("task %lld: handler stopped", (long long)t->id);
		task_free(t);
		check_drained(w);
		return;
	}
	switch (res) {
	case HR_DONE:
		log_debug("task %lld: handler done", (long long)t->id);
		task_drop_row(t);
		task_complete(t);
		break;
	case HR_COMPLETED:
		task_drop_row(t);
		w->st->q[t->qi].completed++;
		log_debug("task %lld: completed by its handler",
		    (long long)t->id);
		task_ack(t);
		break;
	case HR_FAILED:
	case HR_REFUSED:
		task_fail_after(t, reason ? reason : "the handler failed",
		    after_ms, res == HR_REFUSED);
		break;
	case HR_RETRY:
	case HR_STOPPED:
		task_retry(t, T_RUNNING, reason ? reason : "handler stopped");
		break;
	case HR_UNCHANGED:
		task_drop_row(t);
		task_verify(t);
		break;
	case HR_TRANSIENT:
		task_passing(t, T_RUNNING, reason ? reason : "the statement "
		    "failed");
		break;
	}
}

static void
task_run(struct task *t)
{
	struct worker *w = t->w;
	struct handler_task ht = {
		.id = t->id,
		.queue = redisq_queue(w->q, t->qi),
		.attempt = t->attempt,
		.row = t->row,
	};

	set_state(t, T_RUNNING);
	t->run_at = ev_now(w->loop);
	t->run = handler_start(w->h, &ht, run_cb, t);
	if (t->run == NULL)
		task_retry(t, T_RUNNING, "out of memory");
}

static void
delay_cb(struct ev_loop *loop, ev_timer *timer, int revents)
{
	(void)loop;
	(void)revents;
	task_run(timer->data);
}

static void
arm_delay(struct task *t)
{
	struct worker *w = t->w;
	ev_tstamp left = t->delay_start + w->cfg->worker.delay_ms / 1000.0 -
	    ev_now(w->loop);

	ev_timer_stop(w->loop, &t->timer);
	ev_init(&t->timer, delay_cb);
	ev_timer_set(&t->timer, left > 0 ? left : 0., 0.);
	ev_timer_start(w->loop, &t->timer);
}

static void
load_cb(void *arg, enum pgstore_result res, struct pgrow *row,
    const char *msg)
{
	struct task *t = arg;
	struct worker *w = t->w;
	ev_tstamp now = ev_now(w->loop);

	t->req = NULL;
	switch (res) {
	case PGSTORE_ERROR:
		task_retry(t, T_LOADING, msg ? msg : "load failed");
		return;
	case PGSTORE_TRANSIENT:
		task_passing(t, T_LOADING, msg);
		return;
	case PGSTORE_FAILED:
		task_fail(t, msg);
		return;
	case PGSTORE_UNCHANGED:
	case PGSTORE_NOTFOUND:
		/* A producer may push before its INSERT commits. */
		if (t->missing_since == 0)
			t->missing_since = now;
		if ((now - t->missing_since) * 1000 <
		    w->cfg->worker.missing_row_grace_ms) {
			task_retry(t, T_LOADING, "no row yet");
			return;
		}
		task_dead(t, DEAD_NO_ROW, "no row with that id");
		return;
	case PGSTORE_OK:
		break;
	}
	if (acked_if_completed(t, row))
		return;
	task_hold_row(t, row);
	/* Finished where it was loaded from, whatever a reload changes. */
	pgtable_unref(t->table);
	t->table = pgtable_ref(row->table);
	set_state(t, T_DELAY);
	t->delay_start = now;
	arm_delay(t);
	/* A row seen may leave room for more (worker.max_bytes_in_flight). */
	if (!w->stopping)
		redisq_kick(w->q);
}


static void
hint_clear(struct worker *w)
{
	pgstore_cancel(w->hint.req);
	pgrow_free(w->hint.row);
	memset(&w->hint, 0, sizeof(w->hint));
}

static void
hint_cb(void *arg, enum pgstore_result res, struct pgrow *row,
    const char *msg)
{
	struct worker *w = arg;
	struct task *t = w->hint.t;

	w->hint.req = NULL;
	if (t != NULL) {
		/* Taken meanwhile: the task carries on as if it had asked. */
		w->hint.t = NULL;
		hint_clear(w);
		load_cb(t, res, row, msg);
		return;
	}
	w->hint.done = 1;
	w->hint.done_at = ev_now(w->loop);
	w->hint.res = res;
	w->hint.row = row;
}

/* Redis says ID is next in queue QI: load its row now. */
static void
on_hint(void *arg, int qi, const char *val, size_t len)
{
	struct worker *w = arg;
	int64_t id;
	const char *why;

	/* A hint a task waits on is that task's load: it stays. */
	if (w->stopping || w->hint.t != NULL ||
	    taskid_parse(val, len, &id, &why) == -1)
		return;
	hint_clear(w);
	w->hint.req = pgstore_load(w->ps, NULL, id, hint_cb, w);
	if (w->hint.req != NULL) {
		w->hint.id = id;
		w->hint.qi = qi;
	}
}

static void
task_load(struct task *t)
{
	struct worker *w = t->w;

	set_state(t, T_LOADING);
	if (w->hint.id == t->id && w->hint.qi == t->qi && w->hint.t == NULL &&
	    t->missing_since == 0) {
		if (!w->hint.done) {
			w->hint.t = t;	/* hint_cb hands it the answer */
			return;
		}
		if (w->hint.res == PGSTORE_OK &&
		    ev_now(w->loop) - w->hint.done_at <= HINT_FRESH) {
			struct pgrow *row = w->hint.row;

			w->hint.row = NULL;
			hint_clear(w);
			load_cb(t, PGSTORE_OK, row, NULL);
			return;
		}
		hint_clear(w);	/* not found, an error or old: ask again */
	}
	t->req = pgstore_load(w->ps, NULL, t->id, load_cb, t);
	if (t->req == NULL)
		task_retry(t, T_LOADING, "out of memory");
}

/* ---- what redisq asks of us ---- */

static void
on_id(void *arg, int qi, const char *val, size_t len, int attempts)
{
	struct worker *w = arg;
	struct task *t;
	const char *why;

	/*
	 * The value is held already (pushed twice): the processing set has
	 * it once, and so does memory. The task that holds it runs once and
	 * acknowledges it once; Redis answers on one connection in order, so
	 * this fetch ran before that task's acknowledgement.
	 */
	if (idmap_find(&w->held, qi, val, len) != NULL) {
		w->st->q[qi].joined++;
		log_debug("a value taken from %s is held already: joined",
		    redisq_queue(w->q, qi));
		return;
	}
	t = calloc(1, sizeof(*t) + len + 1);
	if (t == NULL) {
		/* It stays in the processing list; the next start has it. */
		log_errorx("out of memory for a task from %s",
		    redisq_queue(w->q, qi));
		return;
	}
	t->w = w;
	t->qi = qi;
	t->attempt = attempts + 1;
	t->len = len;
	t->taken_at = ev_now(w->loop);
	w->st->q[qi].taken++;
	memcpy(t->val, val, len);
	t->held.qi = qi;
	t->held.key = t->val;
	t->held.len = len;
	idmap_add(&w->held, &t->held);
	ev_init(&t->timer, delay_cb);
	t->timer.data = t;
	t->state = T_WAITING;
	TAILQ_INSERT_TAIL(&w->tasks, t, all);
	TAILQ_INSERT_TAIL(&w->waiting, t, wait);
	w->nstate[T_WAITING]++;
	w->ntasks++;

	if (taskid_parse(val, len, &t->id, &why) == -1) {
		char reason[128];

		snprintf(reason, sizeof(reason), "not an id: %s", why);
		task_dead(t, DEAD_NOT_AN_ID, reason);
		return;
	}
	log_debug("task %lld: taken from %s", (long long)t->id,
	    redisq_queue(w->q, qi));
	if (w->stopping)
		return;		/* goes back with the rest */
	start_waiting(w);
}

static void
foreach_held(void *arg, int qi, redisq_add_fn *add, void *ctx)
{
	struct worker *w = arg;
	struct task *t;

	TAILQ_FOREACH(t, &w->tasks, all)
		if (t->qi == qi)
			add(ctx, t->val, t->len);
}

static void
on_state(void *arg)
{
	struct worker *w = arg;

	worker_update_status(w);
	if (!w->stopping)
		redisq_kick(w->q);
}

static void
on_fatal(void *arg, int code, const char *why)
{
	struct worker *w = arg;

	log_errorx("%s", why);
	w->exiting = 1;
	w->exit_fn(w->exit_arg, code);
}

static void
pg_state(void *arg)
{
	struct worker *w = arg;

	if (w->q)
		on_state(w);
}

/* ---- shutdown ---- */

static void
requeued_cb(void *arg, int ok)
{
	struct worker *w = arg;

	if (w->exiting)
		return;
	if (ok)
		log_info("stopped: unfinished ids are back at the head of "
		    "their queues");
	else
		log_warnx("stopped without reaching redis: unfinished ids "
		    "stay in the processing lists until the next start");
	w->exiting = 1;
	w->exit_fn(w->exit_arg, 0);
}

/* Once nothing is in flight, put the rest back and leave. */
static void
check_drained(struct worker *w)
{
	struct task *t;

	if (w->requeueing || w->exiting)
		return;
	/* Counted, not walked: this runs each time a task ends. */
	if (w->abandoning ? nawaited(w) > 0 : nactive(w) > 0)
		return;
	while ((t = TAILQ_FIRST(&w->tasks)) != NULL)
		task_free(t);
	w->requeueing = 1;
	ev_timer_stop(w->loop, &w->shutdown);
	redisq_requeue_all(w->q, requeued_cb, w);
}

/*
 * Out of time at shutdown, what must still be waited for: Redis' answers
 * (the id moves or not), handlers being stopped (a running task always
 * has its run; it gets one as it enters T_RUNNING), and completions sent
 * to PostgreSQL: one may commit, so its id cannot go back before the
 * answer says whether it did.
 */
static int
awaited(const struct task *t)
{
	return t->state == T_ACKING || t->state == T_DEAD ||
	    t->state == T_RETRYING || t->state == T_RUNNING ||
	    (t->state == T_COMPLETING && pgstore_sent(t->req));
}

/* Once abandoning, every task left in T_COMPLETING is awaited. */
static int
nawaited(const struct worker *w)
{
	return w->nstate[T_ACKING] + w->nstate[T_DEAD] +
	    w->nstate[T_RETRYING] + w->nstate[T_RUNNING] +
	    w->nstate[T_COMPLETING];
}

/*
 * Handlers are stopped; tasks not waiting on anyone are dropped now, so
 * none goes on to a step that would have to be awaited.
 */
static void
abandon(struct worker *w)
{
	struct task *t, *next;
	int n = 0;

	w->abandoning = 1;
	for (t = TAILQ_FIRST(&w->tasks); t != NULL; t = next) {
		next = TAILQ_NEXT(t, all);
		if (t->state == T_WAITING || awaited(t))
			n += t->state == T_RUNNING;
		else {
			n++;
			task_free(t);
			continue;
		}
		if (t->state == T_RUNNING && t->run)
			handler_stop(t->run);
	}
	if (n > 0)
		log_notice("shutdown: %d task(s) unfinished, putting them back",
		    n);
	check_drained(w);
}

static void
shutdown_cb(struct ev_loop *loop, ev_timer *timer, int revents)
{
	(void)loop;
	(void)revents;
	abandon(timer->data);
}

void
worker_stop(struct worker *w, int now)
{
	if (!w->stopping) {
		w->stopping = 1;
		log_info("stopping: %d task(s) in flight, waiting up to %d ms",
		    nactive(w), w->cfg->worker.shutdown_timeout_ms);
		redisq_stop_fetch(w->q);
		ev_timer_set(&w->shutdown,
		    w->cfg->worker.shutdown_timeout_ms / 1000.0, 0.);
		ev_timer_start(w->loop, &w->shutdown);
		worker_update_status(w);
		if (!now) {
			check_drained(w);
			return;
		}
	}
	abandon(w);
}

/* ---- the rest ---- */

void
worker_update_status(struct worker *w)
{
	char buf[sizeof(w->status)];
	int retrying = w->nstate[T_BACKOFF];
	if (w->stopping)
		snprintf(buf, sizeof(buf), "stopping: %d task(s) in flight",
		    nactive(w));
	else if (!redisq_ready(w->q))
		snprintf(buf, sizeof(buf), "waiting for redis at %s%s%s",
		    w->cfg->redis.unix_socket[0] ? w->cfg->redis.unix_socket :
		    w->cfg->redis.host, redisq_last_error(w->q) ? ": " : "",
		    redisq_last_error(w->q) ? redisq_last_error(w->q) : "");
	else if (pgstore_nready(w->ps) == 0)
		snprintf(buf, sizeof(buf), "waiting for postgres%s%s",
		    pgstore_last_error(w->ps) ? ": " : "",
		    pgstore_last_error(w->ps) ? pgstore_last_error(w->ps) : "");
	else
		snprintf(buf, sizeof(buf), "serving: %d in flight, %d "
		    "retrying, %d running, %llu completed, %llu already done, "
		    "%llu retried, %llu dead; postgres %d/%d", nactive(w),
		    retrying, handler_running(w->h),
		    (unsigned long long)STATS_SUM(w->st, completed),
		    (unsigned long long)STATS_SUM(w->st, already),
		    (unsigned long long)STATS_SUM(w->st, retried),
		    (unsigned long long)stats_dead_total(w->st),
		    pgstore_nready(w->ps), pgstore_nconns(w->ps));
	if (!w->stopping && redisq_npaused(w->q) > 0) {
		size_t n = strlen(buf);

		n += snprintf(buf + n, sizeof(buf) - n, "; paused:");
		for (int i = 0; i < w->cfg->redis.nqueues && n < sizeof(buf);
		    i++)
			if (redisq_paused(w->q, i))
				n += snprintf(buf + n, sizeof(buf) - n, " %s",
				    redisq_queue(w->q, i));
	}
	if (!w->stopping) {
		static const char *const why[] = { "rate", "max_in_flight" };
		size_t n = strlen(buf);
		int first = 1;

		for (int i = 0; i < w->cfg->redis.nqueues && n < sizeof(buf);
		    i++) {
			int l = redisq_limited(w->q, i);

			if (l == 0)
				continue;
			n += snprintf(buf + n, sizeof(buf) - n, "%s %s (%s)",
			    first ? "; limited:" : ",", redisq_queue(w->q, i),
			    why[l - 1]);
			first = 0;
		}
	}
	if (strcmp(buf, w->status) == 0)
		return;
	memcpy(w->status, buf, sizeof(buf));
	notify_status("%s", buf);
}

struct worker *
worker_new(struct ev_loop *loop, const struct config *cfg,
    struct stats *st, worker_exit_fn *exit_fn, void *arg)
{
	static const struct redisq_callbacks cbs = {
		.room = room,
		.on_id = on_id,
		.on_hint = on_hint,
		.foreach_held = foreach_held,
		.on_state = on_state,
		.on_fatal = on_fatal,
	};
	struct worker *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->loop = loop;
	w->cfg = cfg;
	w->st = st;
	w->exit_fn = exit_fn;
	w->exit_arg = arg;
	TAILQ_INIT(&w->tasks);
	TAILQ_INIT(&w->waiting);
	if (idmap_init(&w->held, (uint64_t)time(NULL) ^
	    ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)w) == -1) {
		free(w);
		return NULL;
	}
	ev_init(&w->shutdown, shutdown_cb);
	w->shutdown.data = w;
	w->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
	    (uint64_t)(uintptr_t)w;
	w->res = resolver_new(loop, cfg->redis.connect_timeout_ms >
	    cfg->postgres.connect_timeout_ms ? cfg->redis.connect_timeout_ms :
	    cfg->postgres.connect_timeout_ms);
	if (w->res == NULL) {
		worker_free(w);
		return NULL;
	}
	w->ps = pgstore_new(loop, cfg, st, w->res, pg_state, w);
	if (w->ps)
		w->h = handler_new(loop, cfg, w->ps);
	if (w->h)
		w->q = redisq_new(loop, cfg, st, w->res, &cbs, w);
	if (w->ps == NULL || w->h == NULL || w->q == NULL) {
		worker_free(w);
		return NULL;
	}
	worker_update_status(w);
	return w;
}

void
worker_free(struct worker *w)
{
	struct task *t;

	if (w == NULL)
		return;
	w->exiting = 1;
	ev_timer_stop(w->loop, &w->shutdown);
	/* Redis answers what is pending (ignored: exiting) while it closes. */
	redisq_free(w->q);
	while ((t = TAILQ_FIRST(&w->tasks)) != NULL)
		task_free(t);
	hint_clear(w);
	handler_free(w->h);
	pgstore_free(w->ps);
	resolver_free(w->res);
	idmap_free(&w->held);
	free(w);
}

void
worker_gauges(const struct worker *w, struct worker_gauges *g)
{
	g->in_flight = w->ntasks;
	g->waiting = w->nstate[T_WAITING];
	g->running = handler_running(w->h);
	g->handler_waiting = handler_waiting(w->h);
	g->redis_up = redisq_ready(w->q);
	g->postgres_up = pgstore_nready(w->ps) > 0;
}

void
worker_reconfigure(struct worker *w, const struct config *cfg)
{
	int delay_changed = cfg->worker.delay_ms != w->cfg->worker.delay_ms;
	int max_cut = cfg->worker.retry_max_ms < w->cfg->worker.retry_max_ms;
	struct task *t;

	pgstore_reconfigure(w->ps, cfg);
	redisq_reconfigure(w->q, cfg);
	handler_reconfigure(w->h, cfg);
	w->cfg = cfg;
	if (delay_changed || max_cut)
		TAILQ_FOREACH(t, &w->tasks, all) {
			if (delay_changed && t->state == T_DELAY)
				arm_delay(t);
			else if (max_cut && t->state == T_BACKOFF)
				step_cut(t);
		}
	if (!w->stopping) {
		start_waiting(w);
		redisq_kick(w->q);
	}
	worker_update_status(w);
}
