/*
 * handler: starts the configured handler for a task and turns its outcome
 * into one answer: "none" on the next loop turn, "exec" when the child is
 * reaped, "sql" when its transaction has committed or failed, "http" when
 * the answer (or its failure) is in.
 */
#include <stdlib.h>

#include "exec.h"
#include "handler.h"
#include "httpc.h"
#include "log.h"
#include "pgstore.h"

struct handler {
	struct ev_loop *loop;
	const struct config *cfg;
	struct pgstore *ps;
	struct exec_pool *pool;
	struct exec_conf *conf;	/* exec settings for runs started now */
	struct http_pool *http;	/* made when an http handler is first set */
	struct http_conf *hconf;	/* http settings for runs started now */
	struct hrun *soon_head, *soon_tail;	/* answers for the next turn */
	ev_timer soon;
};

struct hrun {
	struct handler *h;
	enum handler_type type;
	handler_done_fn *fn;	/* NULL once cancelled */
	void *arg;
	struct exec_run *er;
	struct pgreq *req;
	struct http_run *hr;
	enum handler_result res;	/* a deferred answer */
	int stopping;			/* handler_stop was called */
	struct hrun *next;		/* in the deferred FIFO */
};

/* Answers R on the next loop turn, never from inside the caller. */
static void
defer(struct hrun *r, enum handler_result res)
{
	struct handler *h = r->h;

	r->res = res;
	r->next = NULL;
	if (h->soon_tail)
		h->soon_tail->next = r;
	else
		h->soon_head = r;
	h->soon_tail = r;
	if (!ev_is_active(&h->soon)) {
		ev_timer_set(&h->soon, 0., 0.);
		ev_timer_start(h->loop, &h->soon);
	}
}

static void
soon_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct handler *h = w->data;
	struct hrun *r = h->soon_head, *next;

	(void)loop;
	(void)revents;
	/* Runs deferred by these answers wait for the next turn. */
	h->soon_head = h->soon_tail = NULL;
	for (; r != NULL; r = next) {
		next = r->next;
		if (r->fn)
			r->fn(r->arg, r->res, NULL, -1);
		free(r);
	}
}

static void
exec_cb(void *arg, enum exec_result res, const char *reason)
{
	struct hrun *r = arg;

	r->er = NULL;
	r->fn(r->arg, res == EXEC_DONE ? HR_DONE : res == EXEC_FAILED ?
	    HR_FAILED : HR_STOPPED, reason, -1);
	free(r);
}

static void
http_cb(void *arg, enum http_result res, const char *reason,
    long long after_ms)
{
	struct hrun *r = arg;
	static const enum handler_result as[] = {
		[HTTPR_DONE] = HR_DONE,
		[HTTPR_FAILED] = HR_FAILED,
		[HTTPR_REFUSED] = HR_REFUSED,
		[HTTPR_STOPPED] = HR_STOPPED,
	};

	r->hr = NULL;
	r->fn(r->arg, as[res], reason, after_ms);
	free(r);
}

static void
sql_cb(void *arg, enum pgstore_result res, struct pgrow *row, const char *msg)
{
	struct hrun *r = arg;

	pgrow_free(row);
	r->req = NULL;
	switch (res) {
	case PGSTORE_OK:
		r->fn(r->arg, HR_COMPLETED, NULL, -1);
		break;
	case PGSTORE_NOTFOUND:
	case PGSTORE_UNCHANGED:
		r->fn(r->arg, HR_UNCHANGED, NULL, -1);
		break;
	case PGSTORE_TRANSIENT:
		r->fn(r->arg, HR_TRANSIENT, msg, -1);
		break;
	case PGSTORE_FAILED:
		r->fn(r->arg, HR_FAILED, msg, -1);
		break;
	case PGSTORE_ERROR:
		r->fn(r->arg, HR_RETRY, msg ? msg : "postgres error", -1);
		break;
	}
	free(r);
}

/*
 * The exec or http settings of CFG for runs started from now on; runs
 * under way keep theirs.
 */
static int
conf_for(struct handler *h, const struct config *cfg)
{
	struct exec_conf *conf = NULL;
	struct http_conf *hconf = NULL;

	if (cfg->handler.type == HANDLER_EXEC) {
		conf = exec_conf_new(cfg->handler.command,
		    cfg->handler.environment, cfg->handler.working_directory,
		    cfg->handler.timeout_ms, cfg->handler.kill_grace_ms);
		if (conf == NULL)
			return -1;
	} else if (cfg->handler.type == HANDLER_HTTP) {
		int max = cfg->handler.max_connections;

		if (h->http == NULL) {
			if ((h->http = http_pool_new(h->loop, max)) == NULL)
				return -1;
		} else if (http_pool_set_max(h->http, max) == -1)
			return -1;
		if ((hconf = http_conf_new(cfg)) == NULL)
			return -1;
		/* The URL may have changed: HTTP/2 is learnt again. */
		http_pool_forget_mux(h->http);
	}
	if (h->conf)
		exec_conf_unref(h->conf);
	h->conf = conf;
	http_conf_unref(h->hconf);
	h->hconf = hconf;
	return 0;
}

struct handler *
handler_new(struct ev_loop *loop, const struct config *cfg, struct pgstore *ps)
{
	struct handler *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return NULL;
	h->loop = loop;
	h->cfg = cfg;
	h->ps = ps;
	ev_init(&h->soon, soon_cb);
	h->soon.data = h;
	h->pool = exec_pool_new(loop, cfg->handler.max_processes);
	if (h->pool == NULL || conf_for(h, cfg) == -1) {
		handler_free(h);
		return NULL;
	}
	return h;
}

int
handler_reconfigure(struct handler *h, const struct config *cfg)
{
	h->cfg = cfg;
	exec_pool_set_max(h->pool, cfg->handler.max_processes);
	if (conf_for(h, cfg) == -1) {
		log_errorx("reload: out of memory for the handler's settings");
		return -1;
	}
	return 0;
}

void
handler_free(struct handler *h)
{
	struct hrun *r, *next;

	if (h == NULL)
		return;
	ev_timer_stop(h->loop, &h->soon);
	for (r = h->soon_head; r != NULL; r = next) {
		next = r->next;
		free(r);
	}
	exec_pool_free(h->pool);
	http_pool_free(h->http);
	if (h->conf)
		exec_conf_unref(h->conf);
	http_conf_unref(h->hconf);
	free(h);
}

struct hrun *
handler_start(struct handler *h, const struct handler_task *t,
    handler_done_fn *fn, void *arg)
{
	const struct config *cfg = h->cfg;
	struct hrun *r = calloc(1, sizeof(*r));
	/* The names the row was loaded with, whatever a reload changed. */
	struct run_task rt = {
		.id = t->id,
		.queue = t->queue,
		.attempt = t->attempt,
		.ncols = t->row->ncols,
		.names = (const char *const *)t->row->names,
		.values = (const char *const *)t->row->cols,
	};

	if (r == NULL)
		return NULL;
	r->h = h;
	r->type = cfg->handler.type;
	r->fn = fn;
	r->arg = arg;
	switch (r->type) {
	case HANDLER_NONE:
		defer(r, HR_DONE);
		return r;
	case HANDLER_SQL:
		r->req = pgstore_run_sql(h->ps, t->row->table, t->id, sql_cb,
		    r);
		break;
	case HANDLER_EXEC:
		if (h->conf != NULL)	/* NULL: a reload ran out of memory */
			r->er = exec_start(h->pool, h->conf, &rt, exec_cb, r);
		break;
	case HANDLER_HTTP:
		if (h->hconf != NULL)
			r->hr = http_start(h->http, h->hconf, &rt, http_cb, r);
		break;
	}
	if (r->req == NULL && r->er == NULL && r->hr == NULL) {
		free(r);
		return NULL;
	}
	return r;
}

void
handler_stop(struct hrun *r)
{
	if (r->stopping++)
		return;		/* asked already: a second SIGTERM */
	switch (r->type) {
	case HANDLER_EXEC:
		exec_stop(r->er);
		break;
	case HANDLER_HTTP:
		http_stop(r->hr);
		break;
	case HANDLER_SQL:
		/* A statement sent cannot be called back; its answer is ignored. */
		pgstore_cancel(r->req);
		r->req = NULL;
		defer(r, HR_STOPPED);
		break;
	case HANDLER_NONE:
		r->res = HR_STOPPED;	/* already deferred */
		break;
	}
}

void
handler_cancel(struct hrun *r)
{
	switch (r->type) {
	case HANDLER_EXEC:
		exec_cancel(r->er);
		free(r);
		break;
	case HANDLER_HTTP:
		http_cancel(r->hr);
		free(r);
		break;
	case HANDLER_SQL:
		if (r->req) {
			pgstore_cancel(r->req);
			free(r);
		} else
			r->fn = NULL;	/* stopped: in the deferred FIFO */
		break;
	case HANDLER_NONE:
		r->fn = NULL;		/* freed when the FIFO is drained */
		break;
	}
}

int
handler_running(const struct handler *h)
{
	return exec_pool_running(h->pool) +
	    (h->http ? http_pool_running(h->http) : 0);
}

int
handler_waiting(const struct handler *h)
{
	return exec_pool_waiting(h->pool) +
	    (h->http ? http_pool_waiting(h->http) : 0);
}

int
handler_full(const struct handler *h)
{
	if (exec_pool_waiting(h->pool) >= h->cfg->handler.max_processes)
		return 1;
	return h->http != NULL &&
	    http_pool_waiting(h->http) >= http_pool_room(h->http);
}
