/*
 * pgstore: PostgreSQL connections driven by libev, in pipeline mode.
 * Requests wait in FIFOs; an idle session takes a batch and sends it as
 * one statement, or as one transaction per request, each ended by a sync.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "link.h"
#include "pghosts.h"
#include "log.h"
#include "pgstore.h"
#include "taskid.h"

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
	struct pgtable *pt;	/* the statements it is sent with */
	/*
	 * The times it went out and may have had its effect (a server that
	 * said it is read-only took it back): while nonzero, it may have.
	 */
	int sent;
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

/*
 * In the order a session prepares them: DEALLOCATE ALL (a session that
 * switches sets), the statement timeout, and the named statements.
 */
enum stmt { ST_RESET, ST_SETUP, ST_LOAD, ST_COMPLETE, ST_FAIL, ST_GUARD,
    ST_HANDLER, NSTMT };

static const char *const stmt_names[] = { "", "", "tw_load", "tw_complete",
    "tw_fail", "tw_guard", "tw_handler" };

struct pgtable {
	int refs;
	char *sql[NSTMT];	/* NULL: not prepared */
	char *where;		/* table, id, status, completed status */
	char *completed, *failed;
	int has_attempts, has_error;
	int timeout_ms;		/* of the sql handler */
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
	struct pgtable *pt;	/* the statements this session has prepared */
	struct pgtable *want;	/* the ones it is preparing */
	int reprepare;		/* a cached plan went stale: prepare again */
	int readonly;		/* the server refused a write: not a primary */
	struct pghosts hosts;	/* of the conninfo, read at each connect */
	ev_io io;
	int io_fd, io_events;
	struct link link;	/* its life: connect, timeouts, backoff */
	int ready;		/* counted in pgstore.nready */
	ev_tstamp sent_at;	/* the flight out */
	enum req_kind batch_kind;
	int per_req;		/* one transaction per request, not one statement */
	struct pgreq *batch[MAX_BATCH];
	int nbatch;
	int nseg, seg;		/* transactions sent; the one being read */
	PGresult *seg_rows;	/* REQ_LOAD, REQ_COMPLETE: the rows returned */
	PGresult *seg_err;	/* its first error */
	struct pgrow *rows[MAX_BATCH];	/* REQ_LOAD: by batch index */
	size_t too_big[MAX_BATCH];	/* the size of a row refused */
	int stmt_open;		/* a statement's results are being read */
	int seg_stmt;		/* statements of the transaction read so far */
	int err_stmt;		/* the one that failed */
	PGresult *prep_res;	/* the answer to a PREPARE */
};

struct pgstore {
	struct ev_loop *loop;
	const struct config *cfg;
	struct bstats *st;
	pgstore_state_fn *state_fn;
	void *arg;
	struct resolver *res;
	struct pgconn *conns;
	int nconns;
	int nready;
	struct reqfifo pending[NKINDS];
	ev_prepare dispatch;
	ev_timer state_soon;	/* state_fn, on the next loop turn */
	struct pgtable *cur;	/* the statements of the current settings */
	char last_error[640];	/* why the last session or statement failed */
	char batch_error[640];	/* the last statement error logged */
	ev_tstamp batch_error_at;
};

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

/* The owner hears of a change on the next loop turn, never from inside its own call. */
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
	if (ps->state_fn && !ev_is_active(&ps->state_soon)) {
		ev_timer_set(&ps->state_soon, 0., 0.);
		ev_timer_start(ps->loop, &ps->state_soon);
	}
}

static void
state_soon_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pgstore *ps = w->data;

	(void)loop;
	(void)revents;
	if (ps->state_fn)
		ps->state_fn(ps->arg);
}

/*
 * Watches the session's socket for EVENTS. ANEW: libpq may have replaced
 * the socket (connecting, or moving on to the next host) under the same
 * number, so the watcher is set again whatever it watched before.
 */
static void
io_watch_fd(struct pgconn *c, int events, int anew)
{
	int fd = c->conn ? PQsocket(c->conn) : -1;

	if (!anew && fd == c->io_fd && events == c->io_events)
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
io_watch(struct pgconn *c, int events)
{
	io_watch_fd(c, events, 0);
}

/* Answers are awaited: the link drops the session after the timeout. */
static void
await(struct pgconn *c, int extra_ms)
{
	link_wait(&c->link, c->ps->cfg->postgres.command_timeout_ms, extra_ms);
}


/* Drops what a flight kept of the transaction being read. */
static void
seg_clear(struct pgconn *c)
{
	PQclear(c->seg_rows);
	PQclear(c->seg_err);
	PQclear(c->prep_res);
	c->seg_rows = c->seg_err = c->prep_res = NULL;
	c->stmt_open = c->seg_stmt = c->err_stmt = 0;
	for (int i = 0; i < MAX_BATCH; i++) {
		pgrow_free(c->rows[i]);
		c->rows[i] = NULL;
		c->too_big[i] = 0;
	}
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
	batch_requeue(c);
	if (c->conn)
		PQfinish(c->conn);
	c->conn = NULL;
	c->state = PC_DOWN;
	c->reprepare = 0;
	c->readonly = 0;
	pgtable_unref(c->pt);
	pgtable_unref(c->want);
	c->pt = c->want = NULL;
}

static void
conn_lost(struct pgconn *c, const char *why)
{
	char buf[512];

	if (why == NULL && c->conn)
		why = pq_message(PQerrorMessage(c->conn), buf, sizeof(buf));
	if (why == NULL)
		why = "connection lost";
	/* Copied first: WHY may point into the session being closed. */
	snprintf(c->ps->last_error, sizeof(c->ps->last_error), "%s", why);
	why = c->ps->last_error;
	conn_close(c);
	link_lost(&c->link, why, 0);
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

/* NAME as an SQL identifier: in double quotes, each one inside doubled. */
static int
append_ident(char **s, const char *name)
{
	size_t n = strlen(name);
	char *q = malloc(2 * n + 3), *o = q;
	int r;

	if (q == NULL)
		return -1;
	*o++ = '"';
	for (; *name; name++) {
		if (*name == '"')
			*o++ = '"';
		*o++ = *name;
	}
	*o++ = '"';
	*o = '\0';
	r = appendf(s, "%s", q);
	free(q);
	return r;
}

/* "schema.table" is quoted part by part. */
static int
append_table(char **s, const char *table)
{
	const char *dot = strchr(table, '.');
	char *schema;
	int r;

	if (dot == NULL)
		return append_ident(s, table);
	if ((schema = strndup(table, dot - table)) == NULL)
		return -1;
	r = append_ident(s, schema) == 0 && appendf(s, ".") == 0 &&
	    append_ident(s, dot + 1) == 0 ? 0 : -1;
	free(schema);
	return r;
}

struct pgtable *
pgtable_ref(struct pgtable *t)
{
	if (t)
		t->refs++;
	return t;
}

void
pgtable_unref(struct pgtable *t)
{
	if (t == NULL || --t->refs > 0)
		return;
	for (int i = 0; i < NSTMT; i++)
		free(t->sql[i]);
	free(t->where);
	free(t->completed);
	free(t->failed);
	free(t);
}

const char *
pgtable_completed(const struct pgtable *t)
{
	return t->completed;
}

/* Whether A and B would send the same statements. */
static int
pgtable_same(const struct pgtable *a, const struct pgtable *b)
{
	for (int i = 0; i < NSTMT; i++)
		if ((a->sql[i] == NULL) != (b->sql[i] == NULL) ||
		    (a->sql[i] && strcmp(a->sql[i], b->sql[i]) != 0))
			return 0;
	return strcmp(a->completed, b->completed) == 0 &&
	    strcmp(a->failed, b->failed) == 0 && a->timeout_ms == b->timeout_ms;
}

/*
 * The statements of CFG: load and complete many rows by id, record a
 * failure of one, and with the sql handler, the guarded completion of
 * one, the operator's statement ($1 the id) and its timeout. NULL when
 * out of memory.
 */
static struct pgtable *
pgtable_new(const struct config *cfg)
{
	const char *atc = cfg->postgres.attempts_column;
	const char *erc = cfg->postgres.error_column;
	struct pgtable *t = calloc(1, sizeof(*t));
	char *tab = strdup(""), *idc = strdup(""), *stc = strdup("");
	char *cols = strdup(""), *extra = strdup("");
	int ok, n = 3;

	ok = t && tab && idc && stc && cols && extra &&
	    append_table(&tab, cfg->postgres.table) == 0 &&
	    append_ident(&idc, cfg->postgres.id_column) == 0 &&
	    append_ident(&stc, cfg->postgres.status_column) == 0;
	for (int i = 0; ok && i < cfg->postgres.ncolumns; i++)
		ok = appendf(&cols, ", ") == 0 &&
		    append_ident(&cols, cfg->postgres.columns[i]) == 0;
	/* tw_fail: $1 id, $2 status or NULL to keep it, $3 completed. */
	if (ok && atc[0])
		ok = appendf(&extra, ", ") == 0 && append_ident(&extra, atc) == 0 &&
		    appendf(&extra, " = $%d", ++n) == 0;
	if (ok && erc[0])
		ok = appendf(&extra, ", ") == 0 && append_ident(&extra, erc) == 0 &&
		    appendf(&extra, " = $%d", ++n) == 0;
	if (ok) {
		t->refs = 1;
		t->has_attempts = atc[0] != '\0';
		t->has_error = erc[0] != '\0';
		t->timeout_ms = cfg->handler.type == HANDLER_SQL ?
		    cfg->handler.timeout_ms : 0;
		ok = (t->completed = strdup(cfg->postgres.completed_status)) &&
		    (t->failed = strdup(cfg->postgres.failed_status)) &&
		    (t->sql[ST_RESET] = strdup("DEALLOCATE ALL")) &&
		    asprintf(&t->where, "%s\n%s\n%s\n%s", tab, idc, stc,
		    t->completed) != -1;
	}
	ok = ok && (cfg->handler.type == HANDLER_SQL ?
	    asprintf(&t->sql[ST_SETUP], "SET statement_timeout = %d",
	    cfg->handler.timeout_ms) != -1 :
	    (t->sql[ST_SETUP] = strdup("RESET statement_timeout")) != NULL);
	ok = ok && asprintf(&t->sql[ST_LOAD],
	    "SELECT %s::int8, %s::text%s FROM %s WHERE %s = ANY($1::int8[])",
	    idc, stc, cols, tab, idc) != -1;
	/* Only what it changed comes back: a row it did not is looked at. */
	ok = ok && asprintf(&t->sql[ST_COMPLETE],
	    "UPDATE %s SET %s = $1 WHERE %s = ANY($2::int8[]) "
	    "AND %s IS DISTINCT FROM $1 RETURNING %s::int8", tab, stc, idc, stc,
	    idc) != -1;
	ok = ok && asprintf(&t->sql[ST_FAIL],
	    "UPDATE %s SET %s = COALESCE($2, %s)%s WHERE %s = $1 "
	    "AND %s IS DISTINCT FROM $3", tab, stc, stc, extra, idc,
	    stc) != -1;
	/*
	 * The sql handler's transaction starts with this: when it changed
	 * no row (completed already, by a copy of this transaction sent
	 * before a session was lost, or refused) it divides by zero at run
	 * time, and the pipeline skips the operator's statement. The count
	 * comes from the UPDATE, so no plan can fold it to a constant.
	 */
	if (ok && cfg->handler.type == HANDLER_SQL)
		ok = asprintf(&t->sql[ST_GUARD],
		    "WITH u AS (UPDATE %s SET %s = $2 WHERE %s = $1 "
		    "AND %s IS DISTINCT FROM $2 RETURNING 1) "
		    "SELECT 1 / (SELECT count(*) FROM u)::int", tab, stc, idc,
		    stc) != -1 &&
		    (t->sql[ST_HANDLER] = strdup(cfg->handler.statement)) != NULL;
	free(tab);
	free(idc);
	free(stc);
	free(cols);
	free(extra);
	if (!ok && t) {
		t->refs = 1;
		pgtable_unref(t);
		t = NULL;
	}
	return t;
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


/* Sends the next statement of c->want to prepare (or a setting); 1: all done. */
static int
prepare_next(struct pgconn *c)
{
	struct pgtable *t = c->want;
	static const Oid int8[] = { INT8OID };
	int ok, st;

	while (c->prep_step < NSTMT && t->sql[c->prep_step] == NULL)
		c->prep_step++;
	if ((st = c->prep_step) == NSTMT)
		return 1;
	if (st == ST_RESET || st == ST_SETUP)
		ok = PQsendQuery(c->conn, t->sql[st]);
	else
		ok = PQsendPrepare(c->conn, stmt_names[st], t->sql[st],
		    st == ST_HANDLER ? 1 : 0, st == ST_HANDLER ? int8 : NULL);
	if (!ok)
		return -1;
	await(c, 0);
	return conn_flush(c);
}

/*
 * Prepares the statements of T: a new session from its start, a session
 * that served another set (or whose plans went stale) after DEALLOCATE ALL.
 */
static int
prepare_start(struct pgconn *c, struct pgtable *t)
{
	pgtable_unref(c->want);
	c->want = pgtable_ref(t);
	c->reprepare = 0;
	c->state = PC_PREPARING;
	c->prep_step = c->pt ? ST_RESET : ST_SETUP;
	return prepare_next(c);
}

/* Switches an idle session to the statements of T, outside the pipeline. */
static void
conn_switch(struct pgconn *c, struct pgtable *t)
{
	log_debug("postgres connection %d: preparing the statements again",
	    c->idx);
	if (!PQexitPipelineMode(c->conn) || prepare_start(c, t) == -1)
		conn_lost(c, NULL);
}

static void
conn_became_ready(struct pgconn *c)
{
	link_idle(&c->link);
	pgtable_unref(c->pt);
	c->pt = c->want;
	c->want = NULL;
	/* Every flight is a pipeline: one sync per transaction. */
	if (!PQenterPipelineMode(c->conn)) {
		conn_lost(c, NULL);
		return;
	}
	c->state = PC_IDLE;
	if (!c->ready) {
		link_ready(&c->link);
		set_ready(c, 1);
	}
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

static int
on(const char *v)
{
	return v != NULL && strcmp(v, "on") == 0;
}

static void
connect_poll(struct pgconn *c)
{
	switch (PQconnectPoll(c->conn)) {
	case PGRES_POLLING_READING:
		io_watch_fd(c, EV_READ, 1);
		return;
	case PGRES_POLLING_WRITING:
		io_watch_fd(c, EV_WRITE, 1);
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
	/* Rows are written: a standby will not do (servers since 14 say). */
	if (on(PQparameterStatus(c->conn, "in_hot_standby")) ||
	    on(PQparameterStatus(c->conn, "default_transaction_read_only"))) {
		conn_lost(c, "the server is a standby or read-only: looking "
		    "for a primary");
		return;
	}
	/* The socket is final now. */
	io_watch_fd(c, EV_READ, 1);
	link_handshake(&c->link);
	if (prepare_start(c, c->ps->cur) == -1)
		conn_lost(c, NULL);
}

/* The conninfo's host names, which the link resolves. */
static int
locate(void *arg, const char **names, char *why, size_t len)
{
	struct pgconn *c = arg;

	pghosts_clear(&c->hosts);
	if (pghosts_parse(c->ps->cfg->postgres.conninfo, &c->hosts, why,
	    len) == -1)
		return -1;
	return pghosts_names(&c->hosts, names);
}

static int
open_conn(void *arg, const char *const *addrs, int n, char *why, size_t len)
{
	struct pgconn *c = arg;
	struct pgstore *ps = c->ps;
	/*
	 * Keepalives find a peer that vanished without a word. A standby is
	 * of no use (rows are written): of several hosts, libpq keeps the
	 * first that takes writes, within one connect, rather than the first
	 * that answers, which would be dropped and tried again for good. The
	 * conninfo string comes after these and so may override them.
	 */
	const char *keys[] = { "keepalives", "keepalives_idle",
	    "keepalives_interval", "keepalives_count", "target_session_attrs",
	    "dbname", "fallback_application_name", NULL, NULL, NULL, NULL };
	const char *vals[] = { "1", "15", "5", "3", "read-write",
	    ps->cfg->postgres.conninfo, "taskworkerd", NULL, NULL, NULL, NULL };
	char buf[512], *host, *hostaddr, *port;
	int k = 7, rv;

	/*
	 * The addresses found go in as hostaddr after the conninfo, host
	 * kept (TLS checks the name against it), so libpq looks nothing up.
	 */
	if (ps->res != NULL && (rv = pghosts_params(&c->hosts, addrs, n,
	    c->link.tries - 1, &host, &hostaddr, &port)) != 0) {
		if (rv == -1) {
			if (why[0] == '\0')
				snprintf(why, len, "no address for any host");
			return -1;
		}
		keys[k] = "host";
		vals[k++] = host;
		keys[k] = "hostaddr";
		vals[k++] = hostaddr;
		if (port != NULL) {
			keys[k] = "port";
			vals[k++] = port;
		}
		c->conn = PQconnectStartParams(keys, vals, 1);
		free(host);
		free(hostaddr);
		free(port);
	} else
		c->conn = PQconnectStartParams(keys, vals, 1);
	c->io_fd = -1;
	c->io_events = 0;
	if (c->conn == NULL) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	if (PQstatus(c->conn) == CONNECTION_BAD) {
		snprintf(why, len, "%s", pq_message(PQerrorMessage(c->conn),
		    buf, sizeof(buf)));
		snprintf(ps->last_error, sizeof(ps->last_error), "%s", why);
		PQfinish(c->conn);
		c->conn = NULL;
		return -1;
	}
	c->state = PC_CONNECTING;
	io_watch(c, EV_WRITE);
	return 0;
}

/* The link's timeout: no connection or no answer in time. */
static void
expired(void *arg, const char *why)
{
	conn_lost(arg, why);
}

static const struct link_ops pg_ops = { locate, open_conn, expired, NULL };

/*
 * Row I of a load's RES, in one allocation: the values and the names the
 * columns came back with, so a later reload cannot pair them with others.
 */
static size_t
row_size(const PGresult *res, int i)
{
	int nf = PQnfields(res), ncols = nf > 2 ? nf - 2 : 0;
	size_t size = sizeof(struct pgrow) + 2 * ncols * sizeof(char *);

	for (int j = 1; j < nf; j++)
		size += PQgetlength(res, i, j) + 1;
	for (int j = 2; j < nf; j++)
		size += strlen(PQfname(res, j)) + 1;
	return size;
}

static struct pgrow *
row_from_result(PGresult *res, int i, struct pgtable *t)
{
	int nf = PQnfields(res), ncols = nf > 2 ? nf - 2 : 0;
	size_t size = row_size(res, i);
	struct pgrow *row;
	char *p;

	row = malloc(size);
	if (row == NULL)
		return NULL;
	row->table = pgtable_ref(t);
	row->size = size;
	row->ncols = ncols;
	row->names = (char **)&row->cols[ncols];
	p = (char *)&row->names[ncols];
	row->status = NULL;
	for (int j = 1; j < nf; j++) {
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
	for (int j = 2; j < nf; j++) {
		size_t len = strlen(PQfname(res, j)) + 1;

		row->names[j - 2] = memcpy(p, PQfname(res, j), len);
		p += len;
	}
	return row;
}


static void
req_free(struct pgreq *r)
{
	pgtable_unref(r->pt);
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

static int
cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* Answers the completions of REQS: done when RES returned its id. */
static void
answer_completed(struct pgreq **reqs, int n, PGresult *res)
{
	int nt = res ? PQntuples(res) : 0;
	int64_t *ids = calloc(nt ? nt : 1, sizeof(*ids));

	if (ids == NULL) {
		for (int i = 0; i < n; i++)
			answer(reqs[i], PGSTORE_ERROR, NULL, "out of memory");
		return;
	}
	for (int j = 0; j < nt; j++)
		ids[j] = strtoll(PQgetvalue(res, j, 0), NULL, 10);
	qsort(ids, nt, sizeof(*ids), cmp_id);
	for (int i = 0; i < n; i++)
		answer(reqs[i], bsearch(&reqs[i]->id, ids, nt, sizeof(*ids),
		    cmp_id) ? PGSTORE_OK : PGSTORE_UNCHANGED, NULL, NULL);
	free(ids);
}

/*
 * The rows of a load as they come (one at a time: single-row mode), each
 * kept by the request it answers; a row larger than max_row_bytes is
 * refused, so no batch holds more than its rows' worth.
 */
static void
rows_take(struct pgconn *c, PGresult *res)
{
	int first = c->per_req ? c->seg : 0;
	int last = c->per_req ? c->seg + 1 : c->nbatch;
	size_t max = (size_t)c->ps->cfg->postgres.max_row_bytes;

	for (int j = 0; j < PQntuples(res); j++) {
		int64_t id = strtoll(PQgetvalue(res, j, 0), NULL, 10);
		size_t size = row_size(res, j);
		int lo = first, hi = last, mid;

		/* The batch is in id order (send_many): its first with ID. */
		while (lo < hi) {
			mid = lo + (hi - lo) / 2;
			if (c->batch[mid]->id < id)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (int i = lo; i < last && c->batch[i]->id == id; i++) {
			if (c->rows[i] != NULL || c->too_big[i] != 0)
				continue;
			if (size > max)
				c->too_big[i] = size;
			else if ((c->rows[i] = row_from_result(res, j,
			    c->batch[i]->pt)) == NULL)
				c->too_big[i] = SIZE_MAX;	/* out of memory */
		}
	}
}

/* Answers the loads of REQS with what rows_take kept for them. */
static void
answer_loads(struct pgstore *ps, struct pgreq **reqs, int n,
    struct pgrow **rows, size_t *too_big)
{
	char msg[160];

	for (int i = 0; i < n; i++) {
		if (rows[i] != NULL)
			answer(reqs[i], PGSTORE_OK, rows[i], NULL);
		else if (too_big[i] == SIZE_MAX)
			answer(reqs[i], PGSTORE_ERROR, NULL, "out of memory");
		else if (too_big[i] != 0) {
			snprintf(msg, sizeof(msg), "the row is %zu bytes, more "
			    "than postgres.max_row_bytes (%d)", too_big[i],
			    ps->cfg->postgres.max_row_bytes);
			answer(reqs[i], PGSTORE_FAILED, NULL, msg);
		} else
			answer(reqs[i], PGSTORE_NOTFOUND, NULL, NULL);
	}
}

/*
 * Errors of one statement that may pass when it is sent again: a
 * statement timeout or a cancel, a lock not granted, a conflict or a
 * deadlock, a cached plan gone stale. Retried, but a task counts them.
 */
static int
statement_passing(const char *sqlstate)
{
	static const char *const states[] = { "57014", "55P03", "55006",
	    "40001", "40P01", "0A000", NULL };

	for (int i = 0; sqlstate && states[i]; i++)
		if (strcmp(sqlstate, states[i]) == 0)
			return 1;
	return 0;
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
	if (statement_passing(sqlstate))
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
	/*
	 * A read-only server (a standby, or a primary being demoted) wrote
	 * nothing: the requests go back to the head of their queues and the
	 * session is dropped once this read is over, to find the primary.
	 */
	if (state != NULL && strcmp(state, "25006") == 0) {
		/*
		 * Not sent, as far as this flight goes: unless an earlier
		 * one may have written, a stop need not wait for its answer.
		 */
		for (int i = n - 1; i >= 0; i--) {
			reqs[i]->sent--;
			fifo_push_front(&ps->pending[reqs[i]->kind], reqs[i]);
		}
		c->readonly = 1;
		return;
	}
	/* The guard of the sql handler changed no row. */
	if (c->batch_kind == REQ_SQL && c->err_stmt == 0 && state != NULL &&
	    strcmp(state, "22012") == 0) {
		answer(reqs[0], PGSTORE_UNCHANGED, NULL, NULL);
		return;
	}
	if (state != NULL && strcmp(state, "57014") == 0 &&
	    c->batch_kind == REQ_SQL && reqs[0]->pt->timeout_ms > 0) {
		snprintf(msg, sizeof(msg), "timed out after %d ms",
		    reqs[0]->pt->timeout_ms);
		answer(reqs[0], PGSTORE_FAILED, NULL, msg);
		return;
	}
	/* "cached plan must not change result type": a column changed. */
	if (state != NULL && strcmp(state, "0A000") == 0)
		c->reprepare = 1;
	if (!row_error(c->batch_kind, state, primary)) {
		int passing = statement_passing(state);

		ps->st->errors++;
		log_batch_error(c, n, msg);
		for (int i = 0; i < n; i++)
			answer(reqs[i], passing ? PGSTORE_TRANSIENT :
			    PGSTORE_ERROR, NULL, msg);
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
	int n = c->per_req ? 1 : c->nbatch, first = c->per_req ? c->seg : 0;
	struct pgrow *loaded[MAX_BATCH];
	size_t too_big[MAX_BATCH];

	memcpy(reqs, &c->batch[first], n * sizeof(reqs[0]));
	memcpy(loaded, &c->rows[first], n * sizeof(loaded[0]));
	memcpy(too_big, &c->too_big[first], n * sizeof(too_big[0]));
	memset(&c->rows[first], 0, n * sizeof(loaded[0]));
	memset(&c->too_big[first], 0, n * sizeof(too_big[0]));
	c->seg_err = c->seg_rows = NULL;
	c->stmt_open = c->seg_stmt = 0;
	/* The flight's state is settled before any answer runs. */
	if (++c->seg == c->nseg) {
		/* A load is a plain round trip: no commit waits on a flush. */
		if (c->batch_kind == REQ_LOAD)
			ps->st->rtt = ev_now(ps->loop) - c->sent_at;
		c->nbatch = c->nseg = c->seg = 0;
		c->state = PC_IDLE;
		link_idle(&c->link);
		ev_prepare_start(ps->loop, &ps->dispatch);
	} else
		await(c, flight_timeout(c));
	if (err != NULL) {
		for (int i = 0; i < n; i++)
			pgrow_free(loaded[i]);
		seg_failed(c, reqs, n, err);
	} else if (c->batch_kind == REQ_LOAD)
		answer_loads(ps, reqs, n, loaded, too_big);
	else if (c->batch_kind == REQ_COMPLETE)
		answer_completed(reqs, n, rows);
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


/* How much longer than command_timeout_ms a transaction may take. */
static int
flight_timeout(const struct pgconn *c)
{
	const struct config *cfg = c->ps->cfg;

	(void)cfg;
	return c->batch_kind == REQ_SQL && c->pt ? c->pt->timeout_ms : 0;
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
	const struct pgtable *t = r->pt;
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
		/* The completion first; the statement runs only if it changed the row. */
		p[0] = id;
		p[1] = t->completed;
		return send_stmt(c, ST_GUARD, 2, p) &&
		    send_stmt(c, ST_HANDLER, 1, p);
	case REQ_COMPLETE:
		p[0] = t->completed;
		p[1] = arr;
		return send_stmt(c, ST_COMPLETE, 2, p);
	case REQ_FAIL:
		p[0] = id;
		p[1] = r->final ? t->failed : NULL;
		p[2] = t->completed;
		snprintf(att, sizeof(att), "%d", r->attempts);
		if (t->has_attempts)
			p[n++] = att;
		if (t->has_error)
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
	arr = malloc((size_t)c->nbatch * TASKID_TEXT_SIZE + 3);
	if (arr == NULL)
		return 0;
	p = arr;
	*p++ = '{';
	for (int i = 0; i < c->nbatch; i++) {
		if (i > 0)
			*p++ = ',';
		p += taskid_format(p, c->batch[i]->id);
	}
	*p++ = '}';
	*p = '\0';
	if (c->batch_kind == REQ_LOAD) {
		params[0] = arr;
		sent = send_stmt(c, ST_LOAD, 1, params);
	} else {
		params[0] = c->pt->completed;
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
		if (r->pt != c->pt)
			break;		/* another set: prepared for the next flight */
		if (per_req == -1)
			per_req = alone;
		else if (alone != per_req ||
		    (per_req && c->nbatch == MAX_SEGMENTS))
			break;
		c->batch[c->nbatch++] = fifo_pop(f);
	}
	if (c->nbatch == 0)
		return;
	for (int i = 0; i < c->nbatch; i++)
		c->batch[i]->sent++;
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
	await(c, flight_timeout(c));
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
		struct reqfifo *f = &ps->pending[k];
		struct pgreq *head;
		int n;

		while ((head = f->head) != NULL && head->fn == NULL)
			req_free(fifo_pop(f));
		if (head == NULL)
			continue;
		/* A row loaded before a reload is finished in its own table. */
		if (head->pt != c->pt || c->reprepare) {
			conn_switch(c, head->pt);
			return;
		}
		if (k == REQ_SQL && head->pt->sql[ST_HANDLER] == NULL) {
			answer(fifo_pop(f), PGSTORE_FAILED, NULL, "the sql "
			    "handler came with a reload that also changed the "
			    "table; the next attempt loads the row again");
			ev_prepare_start(ps->loop, &ps->dispatch);
			return;
		}
		n = f->n;
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

	while (c->conn && c->state == PC_BUSY) {
		PGresult *res;

		/*
		 * A load's rows come one by one, each kept or refused as it
		 * comes, not as one result of the whole batch. Set before
		 * the statement's first result is parsed (PQisBusy parses).
		 */
		if (c->batch_kind == REQ_LOAD && !c->stmt_open)
			(void)PQsetSingleRowMode(c->conn);
		if (PQisBusy(c->conn))
			break;
		res = PQgetResult(c->conn);

		if (res == NULL) {
			/* One statement's results are over. */
			if (c->stmt_open) {
				c->stmt_open = 0;
				c->seg_stmt++;
			}
			if (++nulls > 1)
				break;	/* nothing more has arrived */
			continue;
		}
		nulls = 0;
		if (PQresultStatus(res) != PGRES_PIPELINE_SYNC)
			c->stmt_open = 1;
		switch (PQresultStatus(res)) {
		case PGRES_PIPELINE_SYNC:
			PQclear(res);
			seg_end(c);
			continue;
		case PGRES_SINGLE_TUPLE:
		case PGRES_TUPLES_OK:
			if (c->batch_kind == REQ_LOAD && c->seg_err == NULL)
				rows_take(c, res);
			else if (c->batch_kind == REQ_COMPLETE &&
			    c->seg_rows == NULL) {
				c->seg_rows = res;
				continue;
			}
			break;
		case PGRES_FATAL_ERROR:
			if (c->seg_err == NULL) {
				c->seg_err = res;
				c->err_stmt = c->seg_stmt;
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
	if (c->conn && c->readonly) {
		conn_lost(c, "the server is read-only (SQLSTATE 25006): "
		    "looking for a primary");
		return;
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

/* Opens cfg->postgres.connections sessions; the old ones must be closed. */
static int
conns_open(struct pgstore *ps)
{
	const struct config *cfg = ps->cfg;
	char name[48];

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
		snprintf(name, sizeof(name), "postgres connection %d", c->idx);
		link_init(&c->link, ps->loop, name, &pg_ops, c, ps->res, ps->st,
		    cfg->worker.retry_min_ms, cfg->worker.retry_max_ms,
		    cfg->postgres.connect_timeout_ms);
		link_start(&c->link);
	}
	return 0;
}

struct pgstore *
pgstore_new(struct ev_loop *loop, const struct config *cfg,
    struct stats *st, struct resolver *res, pgstore_state_fn *state_fn,
    void *arg)
{
	struct pgstore *ps = calloc(1, sizeof(*ps));

	if (ps == NULL)
		return NULL;
	ps->loop = loop;
	ps->cfg = cfg;
	ps->st = &st->postgres;
	ps->res = res;
	ps->state_fn = state_fn;
	ps->arg = arg;
	ev_prepare_init(&ps->dispatch, dispatch_cb);
	ps->dispatch.data = ps;
	ev_init(&ps->state_soon, state_soon_cb);
	ps->state_soon.data = ps;
	if ((ps->cur = pgtable_new(cfg)) == NULL || conns_open(ps) == -1) {
		pgtable_unref(ps->cur);
		free(ps);
		return NULL;
	}
	return ps;
}

void
pgstore_free(struct pgstore *ps)
{
	if (ps == NULL)
		return;
	ps->state_fn = NULL;
	for (int i = 0; i < ps->nconns; i++) {
		conn_close(&ps->conns[i]);
		link_stop(&ps->conns[i].link);
		pghosts_clear(&ps->conns[i].hosts);
	}
	for (int k = 0; k < NKINDS; k++) {
		struct pgreq *r;

		while ((r = fifo_pop(&ps->pending[k])) != NULL)
			req_free(r);
	}
	ev_prepare_stop(ps->loop, &ps->dispatch);
	ev_timer_stop(ps->loop, &ps->state_soon);
	free(ps->conns);
	pgtable_unref(ps->cur);
	free(ps);
}

void
pgstore_reconfigure(struct pgstore *ps, const struct config *cfg)
{
	int reconnect = strcmp(ps->cfg->postgres.conninfo,
	    cfg->postgres.conninfo) != 0 ||
	    ps->cfg->postgres.connections != cfg->postgres.connections;
	struct pgtable *t = pgtable_new(cfg);

	/*
	 * New statements serve rows loaded from now on; a row loaded before
	 * keeps its set, prepared again by a session when its turn comes.
	 */
	if (t == NULL)
		log_errorx("postgres: out of memory for the new statements; "
		    "keeping the old ones");
	else if (pgtable_same(t, ps->cur))
		pgtable_unref(t);
	else {
		log_info("postgres: statements changed; rows loaded before "
		    "are finished with theirs");
		pgtable_unref(ps->cur);
		ps->cur = t;
	}
	ps->cfg = cfg;
	if (!reconnect) {
		for (int i = 0; i < ps->nconns; i++)
			link_limits(&ps->conns[i].link,
			    cfg->worker.retry_min_ms, cfg->worker.retry_max_ms,
			    cfg->postgres.connect_timeout_ms);
		ev_prepare_start(ps->loop, &ps->dispatch);
		return;
	}
	/* What was unanswered is sent again on the new sessions. */
	log_info("postgres: settings changed, reconnecting %d session(s)",
	    cfg->postgres.connections);
	for (int i = 0; i < ps->nconns; i++) {
		conn_close(&ps->conns[i]);
		link_stop(&ps->conns[i].link);
		pghosts_clear(&ps->conns[i].hosts);
	}
	free(ps->conns);
	if (conns_open(ps) == -1)
		log_errorx("postgres: out of memory opening sessions");
}

/*
 * A request of KIND for ID, sent with the statements of T (NULL: the
 * current ones). Rows whose table is where the current settings put it
 * are served by the current set, which sessions have prepared already.
 */
static struct pgreq *
enqueue(struct pgstore *ps, enum req_kind kind, struct pgtable *t, int64_t id,
    pgstore_fn *fn, void *arg)
{
	struct pgreq *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	if (t == NULL || strcmp(t->where, ps->cur->where) == 0)
		t = ps->cur;
	r->kind = kind;
	r->id = id;
	r->pt = pgtable_ref(t);
	r->fn = fn;
	r->arg = arg;
	fifo_push(&ps->pending[kind], r);
	if (ps->nready > 0)
		ev_prepare_start(ps->loop, &ps->dispatch);
	return r;
}

struct pgreq *
pgstore_run_sql(struct pgstore *ps, struct pgtable *table, int64_t id,
    pgstore_fn *fn, void *arg)
{
	return enqueue(ps, REQ_SQL, table, id, fn, arg);
}

struct pgreq *
pgstore_fail(struct pgstore *ps, struct pgtable *table, int64_t id, int final,
    int attempts, const char *error, pgstore_fn *fn, void *arg)
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
	if ((r = enqueue(ps, REQ_FAIL, table, id, fn, arg)) == NULL) {
		free(copy);
		return NULL;
	}
	r->final = final;
	r->attempts = attempts;
	r->error = copy;
	return r;
}

struct pgreq *
pgstore_load(struct pgstore *ps, struct pgtable *table, int64_t id,
    pgstore_fn *fn, void *arg)
{
	return enqueue(ps, REQ_LOAD, table, id, fn, arg);
}

struct pgreq *
pgstore_complete(struct pgstore *ps, struct pgtable *table, int64_t id,
    pgstore_fn *fn, void *arg)
{
	return enqueue(ps, REQ_COMPLETE, table, id, fn, arg);
}

void
pgstore_cancel(struct pgreq *req)
{
	if (req)
		req->fn = NULL;
}

int
pgstore_sent(const struct pgreq *req)
{
	return req != NULL && req->sent;
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
	if (row == NULL)
		return;
	pgtable_unref(row->table);
	free(row);
}
