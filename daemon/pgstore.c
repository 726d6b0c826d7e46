/*
 * pgstore: PostgreSQL connections driven by libev. Requests wait in a FIFO;
 * each idle session takes a batch and answers it with one prepared statement.
 */
#include <errno.h>
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

enum req_kind { REQ_LOAD, REQ_COMPLETE };

struct pgreq {
	struct pgreq *next;
	enum req_kind kind;
	int64_t id;
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
	PGresult *res;		/* the result being collected */
	enum req_kind batch_kind;
	struct pgreq *batch[MAX_BATCH];
	int nbatch;
};

struct pgstore {
	struct ev_loop *loop;
	const struct config *cfg;
	pgstore_state_fn *state_fn;
	void *arg;
	struct pgconn *conns;
	int nconns;
	int nready;
	struct reqfifo pending[2];	/* by enum req_kind */
	ev_prepare dispatch;
	char *sql_load;
	char *sql_complete;
	int ncols;
	char last_error[256];	/* why the last session or statement failed */
	char batch_error[256];	/* the last statement error logged */
	ev_tstamp batch_error_at;
};

static void conn_start(struct pgconn *c);
static void conn_lost(struct pgconn *c, const char *why);
static void conn_dispatch(struct pgconn *c);

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

/* Requests of a batch that did not get an answer go back to the front. */
static void
batch_requeue(struct pgconn *c)
{
	struct reqfifo *f = &c->ps->pending[c->batch_kind];

	for (int i = c->nbatch - 1; i >= 0; i--)
		fifo_push_front(f, c->batch[i]);
	c->nbatch = 0;
	if (f->n)
		ev_prepare_start(c->ps->loop, &c->ps->dispatch);
}

static void
conn_close(struct pgconn *c)
{
	set_ready(c, 0);
	io_watch(c, 0);
	ev_timer_stop(c->ps->loop, &c->timer);
	if (c->res) {
		PQclear(c->res);
		c->res = NULL;
	}
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

/* Builds both statements with identifiers quoted by this session's rules. */
static int
build_sql(struct pgstore *ps, PGconn *conn)
{
	const struct config *cfg = ps->cfg;
	char *table = quote_table(conn, cfg->postgres.table);
	char *idc = quote_ident(conn, cfg->postgres.id_column);
	char *stc = quote_ident(conn, cfg->postgres.status_column);
	char *cols = strdup("");
	int ok = table && idc && stc && cols;

	for (int i = 0; ok && i < cfg->postgres.ncolumns; i++) {
		char *q = quote_ident(conn, cfg->postgres.columns[i]);
		char *more = NULL;

		ok = q && asprintf(&more, "%s, %s", cols, q) != -1;
		free(q);
		if (ok) {
			free(cols);
			cols = more;
		}
	}
	free(ps->sql_load);
	free(ps->sql_complete);
	ps->sql_load = ps->sql_complete = NULL;
	if (ok && asprintf(&ps->sql_load,
	    "SELECT %s::int8, %s::text%s FROM %s WHERE %s = ANY($1::int8[])",
	    idc, stc, cols, table, idc) == -1) {
		ps->sql_load = NULL;
		ok = 0;
	}
	if (ok && asprintf(&ps->sql_complete,
	    "UPDATE %s SET %s = $1 WHERE %s = ANY($2::int8[]) "
	    "AND %s IS DISTINCT FROM $1", table, stc, idc, stc) == -1) {
		ps->sql_complete = NULL;
		ok = 0;
	}
	ps->ncols = cfg->postgres.ncolumns;
	free(table);
	free(idc);
	free(stc);
	free(cols);
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

static int
prepare_next(struct pgconn *c)
{
	struct pgstore *ps = c->ps;
	static const char *names[] = { "tw_load", "tw_complete" };
	const char *sql;

	if (c->prep_step == 0 && build_sql(ps, c->conn) == -1)
		return -1;
	if (c->prep_step >= 2)
		return 1;
	sql = c->prep_step == 0 ? ps->sql_load : ps->sql_complete;
	if (!PQsendPrepare(c->conn, names[c->prep_step], sql, 0, NULL))
		return -1;
	timer_arm(c, ps->cfg->postgres.command_timeout_ms);
	return conn_flush(c);
}

static void
conn_became_ready(struct pgconn *c)
{
	ev_timer_stop(c->ps->loop, &c->timer);
	log_info("postgres connection %d: connected%s", c->idx,
	    outage_end(&c->outage) ? " again" : "");
	backoff_reset(&c->bo);
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
answer(struct pgreq *r, enum pgstore_result res, struct pgrow *row,
    const char *msg)
{
	if (r->fn)
		r->fn(r->arg, res, row, msg);
	else
		pgrow_free(row);
	free(r);
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

/* Hands every request of the batch its answer from RES. */
static void
batch_answer(struct pgconn *c, PGresult *res)
{
	struct pgreq *batch[MAX_BATCH];
	int n = c->nbatch;
	ExecStatusType st = PQresultStatus(res);
	char buf[512];
	const char *msg = NULL;

	memcpy(batch, c->batch, n * sizeof(batch[0]));
	c->nbatch = 0;

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		struct pgstore *ps = c->ps;
		ev_tstamp now = ev_now(ps->loop);

		msg = pq_message(PQresultErrorMessage(res), buf, sizeof(buf));
		/* The same error for every retry would drown the log. */
		if (strcmp(msg, ps->batch_error) != 0 ||
		    now - ps->batch_error_at >= 60) {
			log_warnx("postgres connection %d: %s of %d task(s) "
			    "failed, will retry: %s", c->idx,
			    c->batch_kind == REQ_LOAD ? "load" : "update", n,
			    msg);
			snprintf(ps->batch_error, sizeof(ps->batch_error),
			    "%s", msg);
			ps->batch_error_at = now;
		} else
			log_debug("postgres connection %d: %s of %d task(s) "
			    "failed again: %s", c->idx, c->batch_kind ==
			    REQ_LOAD ? "load" : "update", n, msg);
		snprintf(ps->last_error, sizeof(ps->last_error), "%s", msg);
		for (int i = 0; i < n; i++)
			answer(batch[i], PGSTORE_ERROR, NULL, msg);
		return;
	}
	if (c->batch_kind == REQ_COMPLETE) {
		for (int i = 0; i < n; i++)
			answer(batch[i], PGSTORE_OK, NULL, NULL);
		return;
	}
	/* Requests are sorted by id (batch_send); sort the rows and merge. */
	{
		int nt = PQntuples(res), t = 0;
		struct rowref *rows = calloc(nt ? nt : 1, sizeof(*rows));

		if (rows == NULL) {
			for (int i = 0; i < n; i++)
				answer(batch[i], PGSTORE_ERROR, NULL,
				    "out of memory");
			return;
		}
		for (int j = 0; j < nt; j++) {
			rows[j].id = strtoll(PQgetvalue(res, j, 0), NULL, 10);
			rows[j].idx = j;
		}
		qsort(rows, nt, sizeof(*rows), cmp_rowref);
		for (int i = 0; i < n; i++) {
			struct pgreq *r = batch[i];
			struct pgrow *row;

			while (t < nt && rows[t].id < r->id)
				t++;
			if (t == nt || rows[t].id != r->id) {
				answer(r, PGSTORE_NOTFOUND, NULL, NULL);
				continue;
			}
			row = row_from_result(res, rows[t].idx, c->ps->ncols);
			if (row == NULL)
				answer(r, PGSTORE_ERROR, NULL, "out of memory");
			else
				answer(r, PGSTORE_OK, row, NULL);
		}
		free(rows);
	}
}

static int
cmp_req_id(const void *a, const void *b)
{
	const struct pgreq *x = *(struct pgreq *const *)a;
	const struct pgreq *y = *(struct pgreq *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* Takes up to N live requests of KIND and sends them as one statement. */
static void
batch_send(struct pgconn *c, enum req_kind kind, int n)
{
	struct pgstore *ps = c->ps;
	struct reqfifo *f = &ps->pending[kind];
	const char *params[2];
	char *arr, *p;
	struct pgreq *r;
	int sent;

	c->nbatch = 0;
	c->batch_kind = kind;
	while (c->nbatch < n && (r = fifo_pop(f)) != NULL) {
		if (r->fn == NULL) {
			free(r);
			continue;
		}
		c->batch[c->nbatch++] = r;
	}
	if (c->nbatch == 0)
		return;
	/* A stable row order keeps two sessions from deadlocking. */
	qsort(c->batch, c->nbatch, sizeof(c->batch[0]), cmp_req_id);

	arr = malloc(c->nbatch * 21 + 3);
	if (arr == NULL) {
		batch_requeue(c);
		return;
	}
	p = arr;
	*p++ = '{';
	for (int i = 0; i < c->nbatch; i++)
		p += sprintf(p, "%s%lld", i ? "," : "",
		    (long long)c->batch[i]->id);
	*p++ = '}';
	*p = '\0';

	if (kind == REQ_LOAD) {
		params[0] = arr;
		sent = PQsendQueryPrepared(c->conn, "tw_load", 1, params,
		    NULL, NULL, 0);
	} else {
		params[0] = ps->cfg->postgres.completed_status;
		params[1] = arr;
		sent = PQsendQueryPrepared(c->conn, "tw_complete", 2, params,
		    NULL, NULL, 0);
	}
	free(arr);
	if (!sent || conn_flush(c) == -1) {
		conn_lost(c, NULL);
		return;
	}
	c->state = PC_BUSY;
	timer_arm(c, ps->cfg->postgres.command_timeout_ms);
}

/* An idle session takes its share of what waits; completions go first. */
static void
conn_dispatch(struct pgconn *c)
{
	struct pgstore *ps = c->ps;
	int idle = 0;

	if (c->state != PC_IDLE)
		return;
	for (int i = 0; i < ps->nconns; i++)
		idle += ps->conns[i].state == PC_IDLE;
	for (int k = REQ_COMPLETE; k >= REQ_LOAD; k--) {
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

/* Reads what the server sent; finishes the batch or the prepare step. */
static void
conn_read(struct pgconn *c)
{
	PGresult *res;

	if (!PQconsumeInput(c->conn)) {
		conn_lost(c, NULL);
		return;
	}
	while (c->conn && !PQisBusy(c->conn)) {
		res = PQgetResult(c->conn);
		if (res != NULL) {
			if (c->res)
				PQclear(c->res);
			c->res = res;
			continue;
		}
		/* The statement is over. */
		res = c->res;
		c->res = NULL;
		if (c->state == PC_PREPARING) {
			ExecStatusType st = res ? PQresultStatus(res) :
			    PGRES_FATAL_ERROR;
			char buf[512];

			if (st != PGRES_COMMAND_OK) {
				char why[600];

				snprintf(why, sizeof(why), "cannot prepare "
				    "statement: %s", pq_message(res ?
				    PQresultErrorMessage(res) :
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
			continue;
		}
		if (c->state == PC_BUSY) {
			ev_timer_stop(c->ps->loop, &c->timer);
			c->state = PC_IDLE;
			if (res)
				batch_answer(c, res);
			else
				batch_requeue(c);
			PQclear(res);
			/* Answers may have queued more; dispatch all sessions. */
			ev_prepare_start(c->ps->loop, &c->ps->dispatch);
			return;
		}
		/* Idle: nothing was asked; a result here is unexpected. */
		PQclear(res);
		break;
	}
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
    pgstore_state_fn *state_fn, void *arg)
{
	struct pgstore *ps = calloc(1, sizeof(*ps));

	if (ps == NULL)
		return NULL;
	ps->loop = loop;
	ps->cfg = cfg;
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
	for (int k = 0; k < 2; k++) {
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
	free(ps->sql_load);
	free(ps->sql_complete);
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
