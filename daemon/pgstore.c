/*
 * pgstore: PostgreSQL connections driven by libev, in pipeline mode.
 * Requests wait in FIFOs; an idle session takes a batch and sends it as
 * one statement, or as one transaction per request, each ended by a sync.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backoff.h"
#include "log.h"
#include "pgstore.h"

#define MAX_BATCH	512
#define MAX_SEGMENTS	128	/* transactions of one flight */
#define ERROR_MAX	1000	/* bytes of an error written to error_column */
#define INT8OID		20

/* In the order an idle session serves them: finishing work comes first. */
enum req_kind { REQ_COMPLETE, REQ_FAIL, REQ_SQL, REQ_LOAD, NKINDS };

struct pgreq {
	struct pgreq *next;
	enum req_kind kind;
	int solo;		/* failed inside a batch: now sent alone */
	int64_t id;
	int final;		/* REQ_FAIL: write failed_status */
	int attempts;		/* REQ_FAIL */
	char *error;		/* REQ_FAIL, bounded */
	pgstore_fn *fn;		/* NULL once cancelled */
	void *arg;
};

struct reqfifo {
	struct pgreq *head, *tail;
	int n;
};

enum conn_state {
	PC_DOWN,		/* waiting for the retry timer */
	PC_CONNECTING,		/* PQconnectPoll in progress */
	PC_PREPARING,		/* the statements are being prepared */
	PC_IDLE,
	PC_BUSY,		/* a batch is out */
};

struct pgconn {
	struct pgstore *ps;
	int idx;
	PGconn *conn;
	enum conn_state state;
	int prep_step;
	ev_io io;
	int io_fd, io_events;
	ev_timer timer;		/* retry, connect timeout, command timeout */
	struct backoff bo;
	struct outage outage;
	int ready;		/* counted in pgstore.nready */
	int connected_once;	/* later sessions count as reconnects */
	ev_tstamp sent_at;	/* the flight out */
	enum req_kind batch_kind;
	int per_req;		/* one transaction per request, not one statement */
	struct pgreq *batch[MAX_BATCH];
	int nbatch;
	int nseg, seg;		/* transactions sent; the one being read */
	PGresult *seg_rows;	/* REQ_LOAD: the rows of this transaction */
	PGresult *seg_err;	/* its first error */
	PGresult *prep_res;	/* the answer to a PREPARE */
};

struct pgstore {
	struct ev_loop *loop;
	const struct config *cfg;
	struct bstats *st;
	pgstore_state_fn *state_fn;
	void *arg;
	struct pgconn *conns;
	int nconns;
	int nready;
	struct reqfifo pending[NKINDS];
	ev_prepare dispatch;
	char *sql[5];		/* by enum stmt */
	int nstmts;		/* prepared per session */
	int fail_params;	/* of tw_fail: 3, plus attempts and error */
	int ncols;
	char last_error[640];	/* why the last session or statement failed */
	char batch_error[640];	/* the last statement error logged */
	ev_tstamp batch_error_at;
};

static void conn_start(struct pgconn *c);
static void conn_lost(struct pgconn *c, const char *why);
static void conn_dispatch(struct pgconn *c);
static int flight_timeout(const struct pgconn *c);

static void
fifo_push(struct reqfifo *f, struct pgreq *r)
{
	r->next = NULL;
	if (f->tail)
		f->tail->next = r;
	else
		f->head = r;
	f->tail = r;
	f->n++;
}

static void
fifo_push_front(struct reqfifo *f, struct pgreq *r)
{
	r->next = f->head;
	f->head = r;
	if (f->tail == NULL)
		f->tail = r;
	f->n++;
}

static struct pgreq *
fifo_pop(struct reqfifo *f)
{
	struct pgreq *r = f->head;

	if (r == NULL)
		return NULL;
	f->head = r->next;
	if (f->head == NULL)
		f->tail = NULL;
	f->n--;
	return r;
}

/* libpq's messages end in a newline; log lines should not. */
static const char *
pq_message(const char *msg, char *buf, size_t len)
{
	size_t n;

	snprintf(buf, len, "%s", msg && *msg ? msg : "unknown error");
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	for (char *p = buf; *p; p++)
		if (*p == '\n')
			*p = ' ';
	return buf;
}

static void
set_ready(struct pgconn *c, int ready)
{
	struct pgstore *ps = c->ps;

	if (c->ready == ready)
		return;
	c->ready = ready;
	ps->nready += ready ? 1 : -1;
	if (ready)
		ev_prepare_start(ps->loop, &ps->dispatch);
	if (ps->state_fn)
		ps->state_fn(ps->arg);
}

static void
io_watch(struct pgconn *c, int events)
{
	int fd = c->conn ? PQsocket(c->conn) : -1;

	if (fd == c->io_fd && events == c->io_events)
		return;
	ev_io_stop(c->ps->loop, &c->io);
	c->io_fd = fd;
	c->io_events = events;
	if (fd >= 0 && events) {
		ev_io_set(&c->io, fd, events);
		ev_io_start(c->ps->loop, &c->io);
	}
}

static void
timer_arm(struct pgconn *c, int ms)
{
	ev_timer_stop(c->ps->loop, &c->timer);
	ev_timer_set(&c->timer, ms / 1000.0, 0.);
	ev_timer_start(c->ps->loop, &c->timer);
}


/* Drops what a flight kept of the transaction being read. */
static void
seg_clear(struct pgconn *c)
{
	PQclear(c->seg_rows);
	PQclear(c->seg_err);
	PQclear(c->prep_res);
	c->seg_rows = c->seg_err = c->prep_res = NULL;
}

/* Requests of the flight that did not get an answer go back to the front. */
static void
batch_requeue(struct pgconn *c)
{
	struct pgstore *ps = c->ps;
	int first = c->per_req ? c->seg : 0;

	for (int i = c->nbatch - 1; i >= first; i--)
		fifo_push_front(&ps->pending[c->batch[i]->kind], c->batch[i]);
	if (c->nbatch > first)
		ev_prepare_start(ps->loop, &ps->dispatch);
	c->nbatch = 0;
	c->nseg = c->seg = 0;
	seg_clear(c);
}

static void
conn_close(struct pgconn *c)
{
	set_ready(c, 0);
	io_watch(c, 0);
	ev_timer_stop(c->ps->loop, &c->timer);
	batch_requeue(c);
	if (c->conn)
		PQfinish(c->conn);
	c->conn = NULL;
	c->state = PC_DOWN;
}

static void
conn_lost(struct pgconn *c, const char *why)
{
	char buf[512];
	int delay;

	if (why == NULL && c->conn)
		why = pq_message(PQerrorMessage(c->conn), buf, sizeof(buf));
	if (why == NULL)
		why = "connection lost";
	/* Copied first: WHY may point into the session being closed. */
	snprintf(c->ps->last_error, sizeof(c->ps->last_error), "%s", why);
	why = c->ps->last_error;
	c->ps->st->errors++;
	conn_close(c);
	delay = backoff_next(&c->bo);
	if (outage_note(&c->outage, why))
		log_warnx("postgres connection %d: %s; reconnecting", c->idx,
		    why);
	else
		log_debug("postgres connection %d: %s; retrying in %d ms",
		    c->idx, why, delay);
	timer_arm(c, delay);
}

static char *
quote_ident(PGconn *conn, const char *name)
{
	char *q = PQescapeIdentifier(conn, name, strlen(name));
	char *copy;

	if (q == NULL)
		return NULL;
	copy = strdup(q);
	PQfreemem(q);
	return copy;
}

/* "schema.table" is quoted part by part. */
static char *
quote_table(PGconn *conn, const char *table)
{
	const char *dot = strchr(table, '.');
	char *schema, *name, *out = NULL;

	if (dot == NULL)
		return quote_ident(conn, table);
	schema = strndup(table, dot - table);
	name = quote_ident(conn, dot + 1);
	if (schema && name) {
		char *qs = quote_ident(conn, schema);
		if (qs && asprintf(&out, "%s.%s", qs, name) == -1)
			out = NULL;
		free(qs);
	}
	free(schema);
	free(name);
	return out;
}


/* Appends to the string *S; -1 (S unchanged) when out of memory. */
static int
appendf(char **s, const char *fmt, ...)
{
	char *more, *all;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&more, fmt, ap);
	va_end(ap);
	if (r == -1)
		return -1;
	r = asprintf(&all, "%s%s", *s, more);
	free(more);
	if (r == -1)
		return -1;
	free(*s);
	*s = all;
	return 0;
}

enum stmt { ST_LOAD, ST_COMPLETE, ST_FAIL, ST_HANDLER, ST_SETUP };

static const char *const stmt_names[] = { "tw_load", "tw_complete",
    "tw_fail", "tw_handler", "" };

/*
 * Builds the statements with identifiers quoted by this session's rules:
 * load and complete many rows by id, record a failure of one, and with the
 * sql handler, the operator's statement ($1 the id) and its timeout.
 */
static int
build_sql(struct pgstore *ps, PGconn *conn)
{
	const struct config *cfg = ps->cfg;
	char *table = quote_table(conn, cfg->postgres.table);
	char *idc = quote_ident(conn, cfg->postgres.id_column);
	char *stc = quote_ident(conn, cfg->postgres.status_column);
	char *atc = cfg->postgres.attempts_column[0] ?
	    quote_ident(conn, cfg->postgres.attempts_column) : strdup("");
	char *erc = cfg->postgres.error_column[0] ?
	    quote_ident(conn, cfg->postgres.error_column) : strdup("");
	char *cols = strdup(""), *extra = NULL;
	int ok = table && idc && stc && atc && erc && cols, n = 3;

	for (int i = 0; ok && i < cfg->postgres.ncolumns; i++) {
		char *q = quote_ident(conn, cfg->postgres.columns[i]);

		ok = q && appendf(&cols, ", %s", q) == 0;
		free(q);
	}
	for (int i = 0; i < 5; i++) {
		free(ps->sql[i]);
		ps->sql[i] = NULL;
	}
	ps->nstmts = 0;
	/* tw_fail: $1 id, $2 status or NULL to keep it, $3 completed. */
	extra = strdup("");
	ok = ok && extra != NULL;
	if (ok && atc[0])
		ok = appendf(&extra, ", %s = $%d", atc, ++n) == 0;
	if (ok && erc[0])
		ok = appendf(&extra, ", %s = $%d", erc, ++n) == 0;
	ps->fail_params = n;
	ok = ok && asprintf(&ps->sql[ST_LOAD],
	    "SELECT %s::int8, %s::text%s FROM %s WHERE %s = ANY($1::int8[])",
	    idc, stc, cols, table, idc) != -1;
	ok = ok && asprintf(&ps->sql[ST_COMPLETE],
	    "UPDATE %s SET %s = $1 WHERE %s = ANY($2::int8[]) "
	    "AND %s IS DISTINCT FROM $1", table, stc, idc, stc) != -1;
	ok = ok && asprintf(&ps->sql[ST_FAIL],
	    "UPDATE %s SET %s = COALESCE($2, %s)%s WHERE %s = $1 "
	    "AND %s IS DISTINCT FROM $3", table, stc, stc, extra, idc,
	    stc) != -1;
	ps->nstmts = 3;
	if (ok && cfg->handler.type == HANDLER_SQL) {
		ok = (ps->sql[ST_HANDLER] = strdup(cfg->handler.statement)) !=
		    NULL && asprintf(&ps->sql[ST_SETUP],
		    "SET statement_timeout = %d", cfg->handler.timeout_ms) != -1;
		ps->nstmts = 5;
	}
	ps->ncols = cfg->postgres.ncolumns;
	free(table);
	free(idc);
	free(stc);
	free(atc);
	free(erc);
	free(cols);
	free(extra);
	return ok ? 0 : -1;
}

/* Sends what libpq holds; waits for writability while it cannot. */
static int
conn_flush(struct pgconn *c)
{
	int r = PQflush(c->conn);

	if (r == -1)
		return -1;
	io_watch(c, EV_READ | (r == 1 ? EV_WRITE : 0));
	return 0;
}


/* Sends the next statement to prepare (or the session setting); 1: all done. */
static int
prepare_next(struct pgconn *c)
{
	struct pgstore *ps = c->ps;
	static const Oid int8[] = { INT8OID };
	int ok;

	if (c->prep_step == 0 && build_sql(ps, c->conn) == -1)
		return -1;
	if (c->prep_step >= ps->nstmts)
		return 1;
	if (c->prep_step == ST_SETUP)
		ok = PQsendQuery(c->conn, ps->sql[ST_SETUP]);
	else
		ok = PQsendPrepare(c->conn, stmt_names[c->prep_step],
		    ps->sql[c->prep_step], c->prep_step == ST_HANDLER ? 1 : 0,
		    c->prep_step == ST_HANDLER ? int8 : NULL);
	if (!ok)
		return -1;
	timer_arm(c, ps->cfg->postgres.command_timeout_ms);
	return conn_flush(c);
}


static void
conn_became_ready(struct pgconn *c)
{
	ev_timer_stop(c->ps->loop, &c->timer);
	/* Every flight is a pipeline: one sync per transaction. */
	if (!PQenterPipelineMode(c->conn)) {
		conn_lost(c, NULL);
		return;
	}
	log_info("postgres connection %d: connected%s", c->idx,
	    outage_end(&c->outage) ? " again" : "");
	backoff_reset(&c->bo);
	stats_connected(c->ps->st, &c->connected_once);
	c->state = PC_IDLE;
	set_ready(c, 1);
	io_watch(c, EV_READ);
	conn_dispatch(c);
}

static void
notice_processor(void *arg, const char *msg)
{
	struct pgconn *c = arg;
	char buf[512];

	log_debug("postgres connection %d: %s", c->idx,
	    pq_message(msg, buf, sizeof(buf)));
}

static void
connect_poll(struct pgconn *c)
{
	switch (PQconnectPoll(c->conn)) {
	case PGRES_POLLING_READING:
		io_watch(c, EV_READ);
		return;
	case PGRES_POLLING_WRITING:
		io_watch(c, EV_WRITE);
		return;
	case PGRES_POLLING_FAILED:
		conn_lost(c, NULL);
		return;
	case PGRES_POLLING_OK:
	default:
		break;
	}
	if (PQsetnonblocking(c->conn, 1) == -1) {
		conn_lost(c, NULL);
		return;
	}
	PQsetNoticeProcessor(c->conn, notice_processor, c);
	c->state = PC_PREPARING;
	c->prep_step = 0;
	if (prepare_next(c) == -1)
		conn_lost(c, NULL);
}

static void
conn_start(struct pgconn *c)
{
	struct pgstore *ps = c->ps;
	/*
	 * Keepalives find a peer that vanished without a word; the conninfo
	 * string comes after them and so may override them.
	 */
	const char *keys[] = { "keepalives", "keepalives_idle",
	    "keepalives_interval", "keepalives_count", "dbname",
	    "fallback_application_name", NULL };
	const char *vals[] = { "1", "15", "5", "3", ps->cfg->postgres.conninfo,
	    "taskworkerd", NULL };

	c->conn = PQconnectStartParams(keys, vals, 1);
	c->state = PC_CONNECTING;
	c->io_fd = -1;
	c->io_events = 0;
	if (c->conn == NULL) {
		conn_lost(c, "out of memory");
		return;
	}
	if (PQstatus(c->conn) == CONNECTION_BAD) {
		conn_lost(c, NULL);
		return;
	}
	timer_arm(c, ps->cfg->postgres.connect_timeout_ms);
	io_watch(c, EV_WRITE);
}

static struct pgrow *
row_from_result(PGresult *res, int i, int ncols)
{
	size_t size = sizeof(struct pgrow) + ncols * sizeof(char *);
	struct pgrow *row;
	char *p;

	for (int j = 1; j < ncols + 2; j++)
		size += PQgetlength(res, i, j) + 1;
	row = malloc(size);
	if (row == NULL)
		return NULL;
	row->ncols = ncols;
	p = (char *)&row->cols[ncols];
	for (int j = 1; j < ncols + 2; j++) {
		char *v = NULL;

		if (!PQgetisnull(res, i, j)) {
			int len = PQgetlength(res, i, j);
			memcpy(p, PQgetvalue(res, i, j), len);
			p[len] = '\0';
			v = p;
			p += len + 1;
		}
		if (j == 1)
			row->status = v;
		else
			row->cols[j - 2] = v;
	}
	return row;
}


static void
req_free(struct pgreq *r)
{
	free(r->error);
	free(r);
}

static void
answer(struct pgreq *r, enum pgstore_result res, struct pgrow *row,
    const char *msg)
{
	if (r->fn)
		r->fn(r->arg, res, row, msg);
	else
		pgrow_free(row);
	req_free(r);
}

struct rowref {
	int64_t id;
	int idx;
};

static int
cmp_rowref(const void *a, const void *b)
{
	const struct rowref *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}


/* Hands every load request of REQS its row from RES, or "not found". */
static void
answer_rows(struct pgstore *ps, struct pgreq **reqs, int n, PGresult *res)
{
	int nt = res ? PQntuples(res) : 0, t = 0;
	struct rowref *rows = calloc(nt ? nt : 1, sizeof(*rows));

	if (rows == NULL) {
		for (int i = 0; i < n; i++)
			answer(reqs[i], PGSTORE_ERROR, NULL, "out of memory");
		return;
	}
	for (int j = 0; j < nt; j++) {
		rows[j].id = strtoll(PQgetvalue(res, j, 0), NULL, 10);
		rows[j].idx = j;
	}
	/* Requests are sorted by id (batch_send); sort the rows and merge. */
	qsort(rows, nt, sizeof(*rows), cmp_rowref);
	for (int i = 0; i < n; i++) {
		struct pgreq *r = reqs[i];
		struct pgrow *row;

		while (t < nt && rows[t].id < r->id)
			t++;
		if (t == nt || rows[t].id != r->id) {
			answer(r, PGSTORE_NOTFOUND, NULL, NULL);
			continue;
		}
		row = row_from_result(res, rows[t].idx, ps->ncols);
		if (row == NULL)
			answer(r, PGSTORE_ERROR, NULL, "out of memory");
		else
			answer(r, PGSTORE_OK, row, NULL);
	}
	free(rows);
}

/*
 * Errors that say nothing about the rows: the server or the session is in
 * trouble (connection, transaction conflicts, resources, shutdown, read
 * only). They are retried without counting against any task.
 */
static int
transient(const char *sqlstate)
{
	static const char *const classes[] = { "08", "25", "26", "40", "53",
	    "57", "58", "F0", NULL };

	if (sqlstate == NULL || strlen(sqlstate) != 5)
		return 1;
	if (strcmp(sqlstate, "55P03") == 0 || strcmp(sqlstate, "55006") == 0 ||
	    strcmp(sqlstate, "0A000") == 0)
		return 1;
	for (int i = 0; classes[i]; i++)
		if (strncmp(sqlstate, classes[i], 2) == 0)
			return 1;
	return 0;
}

/*
 * Errors that belong to one row: bad data, a constraint, a trigger or
 * function that raised, a row-level security check. Anything else that is
 * not passing (a missing privilege on the table, a dropped column) is the
 * setup's fault and would fail every row alike: it is retried, not
 * counted. The sql handler's statement is the operator's: any error of
 * its transaction that is not passing fails the task.
 */
static int
row_error(enum req_kind kind, const char *sqlstate, const char *primary)
{
	static const char *const classes[] = { "09", "22", "23", "27", "2F",
	    "38", "39", "44", "P0", NULL };

	if (transient(sqlstate))
		return 0;
	if (kind == REQ_SQL)
		return 1;
	for (int i = 0; classes[i]; i++)
		if (strncmp(sqlstate, classes[i], 2) == 0)
			return 1;
	return strcmp(sqlstate, "42501") == 0 && primary != NULL &&
	    strstr(primary, "row-level security") != NULL;
}

/* The same error for every retry would drown the log. */
static void
log_batch_error(struct pgconn *c, int n, const char *msg)
{
	struct pgstore *ps = c->ps;
	ev_tstamp now = ev_now(ps->loop);
	static const char *const what[] = { "update", "failure record",
	    "sql handler", "load" };

	if (strcmp(msg, ps->batch_error) != 0 || now - ps->batch_error_at >= 60) {
		log_warnx("postgres connection %d: %s of %d task(s) failed, "
		    "will retry: %s", c->idx, what[c->batch_kind], n, msg);
		snprintf(ps->batch_error, sizeof(ps->batch_error), "%s", msg);
		ps->batch_error_at = now;
	} else
		log_debug("postgres connection %d: %s of %d task(s) failed "
		    "again: %s", c->idx, what[c->batch_kind], n, msg);
	snprintf(ps->last_error, sizeof(ps->last_error), "%s", msg);
}

/*
 * A transaction of N requests failed with ERR. A passing trouble is
 * retried; a batch is split so each row is tried alone; a row tried alone
 * has failed on its own.
 */
static void
seg_failed(struct pgconn *c, struct pgreq **reqs, int n, PGresult *err)
{
	struct pgstore *ps = c->ps;
	const char *state = PQresultErrorField(err, PG_DIAG_SQLSTATE);
	const char *primary = PQresultErrorField(err, PG_DIAG_MESSAGE_PRIMARY);
	char buf[512], msg[600];

	if (primary != NULL)
		snprintf(msg, sizeof(msg), "SQLSTATE %s: %s", state ? state :
		    "?????", primary);
	else
		snprintf(msg, sizeof(msg), "%s", pq_message(
		    PQresultErrorMessage(err), buf, sizeof(buf)));
	if (state != NULL && strcmp(state, "57014") == 0 &&
	    c->batch_kind == REQ_SQL && ps->cfg->handler.timeout_ms > 0) {
		snprintf(msg, sizeof(msg), "timed out after %d ms",
		    ps->cfg->handler.timeout_ms);
		answer(reqs[0], PGSTORE_FAILED, NULL, msg);
		return;
	}
	if (!row_error(c->batch_kind, state, primary)) {
		ps->st->errors++;
		log_batch_error(c, n, msg);
		for (int i = 0; i < n; i++)
			answer(reqs[i], PGSTORE_ERROR, NULL, msg);
		return;
	}
	if (n > 1) {
		log_debug("postgres connection %d: a batch of %d failed (%s); "
		    "trying each alone", c->idx, n, msg);
		for (int i = n - 1; i >= 0; i--) {
			reqs[i]->solo = 1;
			fifo_push_front(&ps->pending[reqs[i]->kind], reqs[i]);
		}
		ev_prepare_start(ps->loop, &ps->dispatch);
		return;
	}
	log_debug("postgres connection %d: task %lld failed: %s", c->idx,
	    (long long)reqs[0]->id, msg);
	answer(reqs[0], PGSTORE_FAILED, NULL, msg);
}

/* The sync of one transaction came back: answer its requests. */
static void
seg_end(struct pgconn *c)
{
	struct pgstore *ps = c->ps;
	struct pgreq *reqs[MAX_BATCH];
	PGresult *err = c->seg_err, *rows = c->seg_rows;
	int n = c->per_req ? 1 : c->nbatch;

	memcpy(reqs, &c->batch[c->per_req ? c->seg : 0], n * sizeof(reqs[0]));
	c->seg_err = c->seg_rows = NULL;
	/* The flight's state is settled before any answer runs. */
	if (++c->seg == c->nseg) {
		/* A load is a plain round trip: no commit waits on a flush. */
		if (c->batch_kind == REQ_LOAD)
			ps->st->rtt = ev_now(ps->loop) - c->sent_at;
		c->nbatch = c->nseg = c->seg = 0;
		c->state = PC_IDLE;
		ev_timer_stop(ps->loop, &c->timer);
		ev_prepare_start(ps->loop, &ps->dispatch);
	} else
		timer_arm(c, flight_timeout(c));
	if (err != NULL)
		seg_failed(c, reqs, n, err);
	else if (c->batch_kind == REQ_LOAD)
		answer_rows(ps, reqs, n, rows);
	else
		for (int i = 0; i < n; i++)
			answer(reqs[i], PGSTORE_OK, NULL, NULL);
	PQclear(err);
	PQclear(rows);
}

static int
cmp_req_id(const void *a, const void *b)
{
	const struct pgreq *x = *(struct pgreq *const *)a;
	const struct pgreq *y = *(struct pgreq *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}


/* How long one transaction of the flight may take. */
static int
flight_timeout(const struct pgconn *c)
{
	const struct config *cfg = c->ps->cfg;

	return cfg->postgres.command_timeout_ms + (c->batch_kind == REQ_SQL ?
	    cfg->handler.timeout_ms : 0);
}

static int
send_stmt(struct pgconn *c, enum stmt st, int n, const char *const *params)
{
	return PQsendQueryPrepared(c->conn, stmt_names[st], n, params, NULL,
	    NULL, 0);
}

/* Sends request R as a transaction of its own (without the sync). */
static int
send_one(struct pgconn *c, const struct pgreq *r)
{
	const struct config *cfg = c->ps->cfg;
	char id[24], arr[24], att[16];
	const char *p[5];
	int n = 3;

	snprintf(id, sizeof(id), "%lld", (long long)r->id);
	snprintf(arr, sizeof(arr), "{%lld}", (long long)r->id);
	switch (r->kind) {
	case REQ_LOAD:
		p[0] = arr;
		return send_stmt(c, ST_LOAD, 1, p);
	case REQ_SQL:
		p[0] = id;
		if (!send_stmt(c, ST_HANDLER, 1, p))
			return 0;
		/* completed in the same transaction */
		__attribute__((fallthrough));
	case REQ_COMPLETE:
		p[0] = cfg->postgres.completed_status;
		p[1] = arr;
		return send_stmt(c, ST_COMPLETE, 2, p);
	case REQ_FAIL:
		p[0] = id;
		p[1] = r->final ? cfg->postgres.failed_status : NULL;
		p[2] = cfg->postgres.completed_status;
		snprintf(att, sizeof(att), "%d", r->attempts);
		if (cfg->postgres.attempts_column[0])
			p[n++] = att;
		if (cfg->postgres.error_column[0])
			p[n++] = r->error;
		return send_stmt(c, ST_FAIL, n, p);
	case NKINDS:
		break;
	}
	return 0;
}

/* Sends the batch as one statement over every id. */
static int
send_many(struct pgconn *c)
{
	const char *params[2];
	char *arr, *p;
	int sent;

	/* A stable row order keeps two sessions from deadlocking. */
	qsort(c->batch, c->nbatch, sizeof(c->batch[0]), cmp_req_id);
	arr = malloc(c->nbatch * 21 + 3);
	if (arr == NULL)
		return 0;
	p = arr;
	*p++ = '{';
	for (int i = 0; i < c->nbatch; i++)
		p += sprintf(p, "%s%lld", i ? "," : "",
		    (long long)c->batch[i]->id);
	*p++ = '}';
	*p = '\0';
	if (c->batch_kind == REQ_LOAD) {
		params[0] = arr;
		sent = send_stmt(c, ST_LOAD, 1, params);
	} else {
		params[0] = c->ps->cfg->postgres.completed_status;
		params[1] = arr;
		sent = send_stmt(c, ST_COMPLETE, 2, params);
	}
	free(arr);
	return sent;
}

/*
 * Takes up to N live requests of KIND and sends them: loads and
 * completions as one statement, everything else (and a row that failed in
 * a batch) as one transaction per request, all in one pipeline.
 */
static void
batch_send(struct pgconn *c, enum req_kind kind, int n)
{
	struct pgstore *ps = c->ps;
	struct reqfifo *f = &ps->pending[kind];
	struct pgreq *r;
	int per_req = -1, ok = 1;

	c->nbatch = 0;
	c->batch_kind = kind;
	while (c->nbatch < n && (r = f->head) != NULL) {
		int alone = r->solo || kind == REQ_SQL || kind == REQ_FAIL;

		if (r->fn == NULL) {
			req_free(fifo_pop(f));
			continue;
		}
		if (per_req == -1)
			per_req = alone;
		else if (alone != per_req ||
		    (per_req && c->nbatch == MAX_SEGMENTS))
			break;
		c->batch[c->nbatch++] = fifo_pop(f);
	}
	if (c->nbatch == 0)
		return;
	c->per_req = per_req;
	c->nseg = per_req ? c->nbatch : 1;
	c->seg = 0;
	if (per_req)
		for (int i = 0; ok && i < c->nbatch; i++)
			ok = send_one(c, c->batch[i]) &&
			    PQpipelineSync(c->conn);
	else
		ok = send_many(c) && PQpipelineSync(c->conn);
	if (!ok || conn_flush(c) == -1) {
		conn_lost(c, NULL);
		return;
	}
	c->state = PC_BUSY;
	c->sent_at = ev_now(ps->loop);
	timer_arm(c, flight_timeout(c));
}


/* An idle session takes its share of what waits; finishing work first. */
static void
conn_dispatch(struct pgconn *c)
{
	struct pgstore *ps = c->ps;
	int idle = 0;

	if (c->state != PC_IDLE)
		return;
	for (int i = 0; i < ps->nconns; i++)
		idle += ps->conns[i].state == PC_IDLE;
	for (int k = 0; k < NKINDS; k++) {
		int n = ps->pending[k].n;

		if (n == 0)
			continue;
		n = (n + idle - 1) / idle;
		batch_send(c, k, n > MAX_BATCH ? MAX_BATCH : n);
		if (c->nbatch > 0 || c->state != PC_IDLE)
			return;
	}
}

static void
dispatch_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct pgstore *ps = w->data;

	(void)revents;
	/*
	 * Runs once per loop iteration while work waits, so requests made in
	 * one iteration leave together. A session that becomes idle or ready,
	 * and every new request, start it again.
	 */
	ev_prepare_stop(loop, w);
	for (int i = 0; i < ps->nconns; i++)
		conn_dispatch(&ps->conns[i]);
}


/* The answers to the PREPAREs (and the SET) sent one by one. */
static void
prepare_read(struct pgconn *c)
{
	while (c->conn && c->state == PC_PREPARING && !PQisBusy(c->conn)) {
		PGresult *res = PQgetResult(c->conn);
		ExecStatusType st;
		char buf[512], why[600];

		if (res != NULL) {
			PQclear(c->prep_res);
			c->prep_res = res;
			continue;
		}
		/* The statement is over. */
		res = c->prep_res;
		c->prep_res = NULL;
		st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
		if (st != PGRES_COMMAND_OK) {
			snprintf(why, sizeof(why), "cannot prepare statement: %s",
			    pq_message(res ? PQresultErrorMessage(res) :
			    PQerrorMessage(c->conn), buf, sizeof(buf)));
			PQclear(res);
			conn_lost(c, why);
			return;
		}
		PQclear(res);
		c->prep_step++;
		switch (prepare_next(c)) {
		case 1:
			conn_became_ready(c);
			return;
		case -1:
			conn_lost(c, NULL);
			return;
		}
	}
}

/*
 * The results of a flight, in order: each statement's results end with a
 * NULL, each transaction with PGRES_PIPELINE_SYNC. After an error the rest
 * of that transaction comes back PGRES_PIPELINE_ABORTED.
 */
static void
flight_read(struct pgconn *c)
{
	int nulls = 0;

	while (c->conn && c->state == PC_BUSY && !PQisBusy(c->conn)) {
		PGresult *res = PQgetResult(c->conn);

		if (res == NULL) {
			if (++nulls > 1)
				break;	/* nothing more has arrived */
			continue;
		}
		nulls = 0;
		switch (PQresultStatus(res)) {
		case PGRES_PIPELINE_SYNC:
			PQclear(res);
			seg_end(c);
			continue;
		case PGRES_TUPLES_OK:
			if (c->batch_kind == REQ_LOAD && c->seg_rows == NULL) {
				c->seg_rows = res;
				continue;
			}
			break;
		case PGRES_FATAL_ERROR:
			if (c->seg_err == NULL) {
				c->seg_err = res;
				continue;
			}
			break;
		default:
			break;
		}
		PQclear(res);
	}
}

/* Reads what the server sent. */
static void
conn_read(struct pgconn *c)
{
	if (!PQconsumeInput(c->conn)) {
		conn_lost(c, NULL);
		return;
	}
	if (c->state == PC_PREPARING)
		prepare_read(c);
	else if (c->state == PC_BUSY)
		flight_read(c);
	if (c->conn && PQstatus(c->conn) == CONNECTION_BAD)
		conn_lost(c, NULL);
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct pgconn *c = w->data;

	(void)loop;
	if (c->state == PC_CONNECTING) {
		connect_poll(c);
		return;
	}
	if (revents & EV_WRITE) {
		if (conn_flush(c) == -1) {
			conn_lost(c, NULL);
			return;
		}
	}
	if (revents & EV_READ)
		conn_read(c);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pgconn *c = w->data;
	char why[128];

	(void)loop;
	(void)revents;
	switch (c->state) {
	case PC_DOWN:
		conn_start(c);
		break;
	case PC_CONNECTING:
		snprintf(why, sizeof(why), "no connection within %d ms",
		    c->ps->cfg->postgres.connect_timeout_ms);
		conn_lost(c, why);
		break;
	default:
		snprintf(why, sizeof(why), "no answer within %d ms",
		    c->ps->cfg->postgres.command_timeout_ms);
		conn_lost(c, why);
		break;
	}
}

/* Opens cfg->postgres.connections sessions; the old ones must be closed. */
static int
conns_open(struct pgstore *ps)
{
	const struct config *cfg = ps->cfg;

	ps->nconns = cfg->postgres.connections;
	ps->conns = calloc(ps->nconns, sizeof(*ps->conns));
	if (ps->conns == NULL) {
		ps->nconns = 0;
		return -1;
	}
	for (int i = 0; i < ps->nconns; i++) {
		struct pgconn *c = &ps->conns[i];

		c->ps = ps;
		c->idx = i + 1;
		c->io_fd = -1;
		ev_init(&c->io, io_cb);
		c->io.data = c;
		ev_init(&c->timer, timer_cb);
		c->timer.data = c;
		backoff_init(&c->bo, cfg->worker.retry_min_ms,
		    cfg->worker.retry_max_ms,
		    (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16) ^ i);
		conn_start(c);
	}
	return 0;
}

struct pgstore *
pgstore_new(struct ev_loop *loop, const struct config *cfg,
    struct stats *st, pgstore_state_fn *state_fn, void *arg)
{
	struct pgstore *ps = calloc(1, sizeof(*ps));

	if (ps == NULL)
		return NULL;
	ps->loop = loop;
	ps->cfg = cfg;
	ps->st = &st->postgres;
	ps->state_fn = state_fn;
	ps->arg = arg;
	ev_prepare_init(&ps->dispatch, dispatch_cb);
	ps->dispatch.data = ps;
	if (conns_open(ps) == -1) {
		free(ps);
		return NULL;
	}
	return ps;
}


static void
fail_pending(struct pgstore *ps)
{
	for (int k = 0; k < NKINDS; k++) {
		struct pgreq *r;

		while ((r = fifo_pop(&ps->pending[k])) != NULL)
			answer(r, PGSTORE_ERROR, NULL, "shutting down");
	}
}

void
pgstore_free(struct pgstore *ps)
{
	if (ps == NULL)
		return;
	ps->state_fn = NULL;
	for (int i = 0; i < ps->nconns; i++) {
		struct pgconn *c = &ps->conns[i];

		conn_close(c);
	}
	fail_pending(ps);
	ev_prepare_stop(ps->loop, &ps->dispatch);
	free(ps->conns);
	for (int i = 0; i < 5; i++)
		free(ps->sql[i]);
	free(ps);
}

void
pgstore_reconfigure(struct pgstore *ps, const struct config *cfg)
{
	if (!config_postgres_changed(ps->cfg, cfg)) {
		ps->cfg = cfg;
		for (int i = 0; i < ps->nconns; i++)
			backoff_limits(&ps->conns[i].bo,
			    cfg->worker.retry_min_ms, cfg->worker.retry_max_ms);
		return;
	}
	log_info("postgres: settings changed, reconnecting %d session(s)",
	    cfg->postgres.connections);
	for (int i = 0; i < ps->nconns; i++)
		conn_close(&ps->conns[i]);
	free(ps->conns);
	ps->cfg = cfg;
	if (cfg->handler.type != HANDLER_SQL) {
		struct pgreq *r;

		/* No session prepares the statement now: they run anew. */
		while ((r = fifo_pop(&ps->pending[REQ_SQL])) != NULL)
			answer(r, PGSTORE_ERROR, NULL, "the sql handler was "
			    "replaced by a reload");
	}
	if (conns_open(ps) == -1)
		log_errorx("postgres: out of memory opening sessions");
}

static struct pgreq *
enqueue(struct pgstore *ps, enum req_kind kind, int64_t id, pgstore_fn *fn,
    void *arg)
{
	struct pgreq *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->kind = kind;
	r->id = id;
	r->fn = fn;
	r->arg = arg;
	fifo_push(&ps->pending[kind], r);
	if (ps->nready > 0)
		ev_prepare_start(ps->loop, &ps->dispatch);
	return r;
}

struct pgreq *
pgstore_run_sql(struct pgstore *ps, int64_t id, pgstore_fn *fn, void *arg)
{
	return enqueue(ps, REQ_SQL, id, fn, arg);
}

struct pgreq *
pgstore_fail(struct pgstore *ps, int64_t id, int final, int attempts,
    const char *error, pgstore_fn *fn, void *arg)
{
	size_t len = strlen(error);
	char *copy;
	struct pgreq *r;

	/* Bounded, and cut where a UTF-8 character starts. */
	if (len > ERROR_MAX) {
		len = ERROR_MAX;
		while (len > 0 && ((unsigned char)error[len] & 0xc0) == 0x80)
			len--;
	}
	if ((copy = strndup(error, len)) == NULL)
		return NULL;
	if ((r = enqueue(ps, REQ_FAIL, id, fn, arg)) == NULL) {
		free(copy);
		return NULL;
	}
	r->final = final;
	r->attempts = attempts;
	r->error = copy;
	return r;
}

struct pgreq *
pgstore_load(struct pgstore *ps, int64_t id, pgstore_fn *fn, void *arg)
{
	return enqueue(ps, REQ_LOAD, id, fn, arg);
}

struct pgreq *
pgstore_complete(struct pgstore *ps, int64_t id, pgstore_fn *fn, void *arg)
{
	return enqueue(ps, REQ_COMPLETE, id, fn, arg);
}

void
pgstore_cancel(struct pgreq *req)
{
	if (req)
		req->fn = NULL;
}

int
pgstore_nready(const struct pgstore *ps)
{
	return ps->nready;
}

const char *
pgstore_last_error(const struct pgstore *ps)
{
	return ps->last_error[0] ? ps->last_error : NULL;
}

int
pgstore_nconns(const struct pgstore *ps)
{
	return ps->nconns;
}

void
pgrow_free(struct pgrow *row)
{
	free(row);
}
