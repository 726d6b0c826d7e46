/*
 * redisq: the Redis side of the worker, its life and what it owes its
 * owner. Ids taken are members of QUEUE:processing:WORKER, a sorted set
 * scored by the order they were taken in: every step costs O(log n).
 */
#include <sys/stat.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "redisq_int.h"

void
rq_argv_add(void *ctx, const char *val, size_t len)
{
	struct argv_buf *b = ctx;

	if (b->failed)
		return;
	if (b->n == b->cap) {
		int cap = b->cap ? b->cap * 2 : 64;
		const char **argv = realloc(b->argv, cap * sizeof(*argv));
		size_t *lens = argv ? realloc(b->lens, cap * sizeof(*lens)) :
		    NULL;

		if (argv)
			b->argv = argv;
		if (lens)
			b->lens = lens;
		if (argv == NULL || lens == NULL) {
			b->failed = 1;
			return;
		}
		b->cap = cap;
	}
	b->argv[b->n] = val;
	b->lens[b->n] = len;
	b->n++;
}

/* Every processing set is reconciled before the next fetch. */
void
rq_need_recovery(struct redisq *q)
{
	q->need_reconcile = 1;
	for (int i = 0; i < q->nq; i++)
		q->qw[i].unrecovered = 1;
}

/* The owner hears it on the next loop turn (see defer_cb). */
void
rq_defer(struct redisq *q)
{
	if (!ev_is_active(&q->defer))
		ev_timer_start(q->loop, &q->defer);
}

void
rq_state_changed(struct redisq *q)
{
	q->defer_state = 1;
	rq_defer(q);
}

/* The answer owed to redisq_requeue_all. */
void
rq_requeue_answer(struct redisq *q, int ok)
{
	if (q->requeue_fn == NULL || q->defer_requeue >= 0)
		return;
	q->defer_requeue = ok;
	rq_defer(q);
}

/*
 * A request's answer while its connection is torn down: hiredis runs the
 * callbacks of a context it frees at once, maybe inside a call the owner
 * made (a reload). It is told "not done" on the next loop turn.
 */
void
rq_owe(struct redisq *q, redisq_done_fn *fn, void *arg)
{
	if (q->nowed == q->owed_cap) {
		size_t cap = q->owed_cap ? q->owed_cap * 2 : 64;
		struct owed *o = realloc(q->owed, cap * sizeof(*o));

		if (o == NULL) {
			fn(arg, 0);	/* out of memory: at once, as before */
			return;
		}
		q->owed = o;
		q->owed_cap = cap;
	}
	q->owed[q->nowed].fn = fn;
	q->owed[q->nowed].arg = arg;
	q->nowed++;
	rq_defer(q);
}

/* Something no retry fixes: the owner is told once, then exits CODE. */
void
rq_fatal(struct redisq *q, int code, const char *why)
{
	if (q->fatal_why != NULL)
		return;
	q->fatal_code = code;
	q->fatal_why = strdup(why);
	if (q->fatal_why == NULL)
		q->fatal_why = strdup("out of memory");
	rq_defer(q);
}

/*
 * A module never calls its owner back from inside a call the owner made:
 * what redisq owes it is noted and delivered here. Each callback may
 * start the owner's exit, so the next waits for another turn.
 */
static void
defer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct redisq *q = w->data;

	(void)revents;
	if (q->fatal_why != NULL && !q->fatal_told && q->cb.on_fatal) {
		q->fatal_told = 1;
		q->cb.on_fatal(q->arg, q->fatal_code, q->fatal_why);
		return;		/* the owner exits */
	}
	if (q->defer_state) {
		q->defer_state = 0;
		if (q->cb.on_state)
			q->cb.on_state(q->arg);
	} else if (q->nowed > 0) {
		struct owed *o = q->owed;
		size_t n = q->nowed;

		q->owed = NULL;
		q->nowed = q->owed_cap = 0;
		for (size_t i = 0; i < n; i++)
			o[i].fn(o[i].arg, 0);
		free(o);
	} else if (q->defer_requeue >= 0) {
		redisq_done_fn *fn = q->requeue_fn;
		int ok = q->defer_requeue;

		q->defer_requeue = -1;
		q->requeue_fn = NULL;
		if (fn)
			fn(q->requeue_arg, ok);
	}
	if (q->defer_state || q->nowed > 0 || q->defer_requeue >= 0)
		ev_timer_start(loop, w);
}

static void
free_keys(struct redisq *q)
{
	for (int i = 0; q->k != NULL && i < q->nq; i++)
		qkeys_free(&q->k[i]);
	for (int i = 0; q->qw != NULL && i < q->nq; i++)
		free(q->qw[i].head);
	free(q->k);
	free(q->qw);
}

struct redisq *
redisq_new(struct ev_loop *loop, const struct config *cfg, struct stats *st,
    struct resolver *res, const struct redisq_callbacks *cb, void *arg)
{
	struct redisq *q = calloc(1, sizeof(*q));
	int ok;

	if (q == NULL)
		return NULL;
	q->res = res;
	q->loop = loop;
	q->cfg = cfg;
	q->st = st;
	q->cb = *cb;
	if (gethostname(q->host, sizeof(q->host) - 1) == -1)
		snprintf(q->host, sizeof(q->host), "unknown");
	q->host[strcspn(q->host, " \t\r\n")] = '\0';
	rq_make_holder(q);
	q->arg = arg;
	q->nq = cfg->redis.nqueues;
	q->k = calloc(q->nq, sizeof(*q->k));
	q->qw = calloc(q->nq, sizeof(*q->qw));
	q->blk = calloc(q->nq, sizeof(*q->blk));
	q->acks = calloc(q->nq, sizeof(*q->acks));
	q->acks_tail = calloc(q->nq, sizeof(*q->acks_tail));
	q->sample_next = calloc(q->nq, sizeof(*q->sample_next));
	q->sample_nworkers = calloc(q->nq, sizeof(*q->sample_nworkers));
	ok = q->k && q->qw && q->blk && q->acks && q->acks_tail &&
	    q->sample_next && q->sample_nworkers;
	for (int i = 0; ok && i < q->nq; i++)
		q->acks_tail[i] = &q->acks[i];
	for (int i = 0; ok && i < q->nq; i++)
		ok = qkeys_make(&q->k[i], cfg->redis.queues[i],
		    cfg->worker.id) == 0;
	if (!ok) {
		free_keys(q);
		free(q->blk);
		free(q->acks);
		free(q->acks_tail);
		free(q->sample_next);
		free(q->sample_nworkers);
		free(q);
		return NULL;
	}
	ev_timer_init(&q->defer, defer_cb, 0., 0.);
	q->defer.data = q;
	q->defer_requeue = -1;
	ev_prepare_init(&q->ack_flush, rq_ack_flush_cb);
	q->ack_flush.data = q;
	ev_timer_init(&q->recheck, rq_recheck_cb, QERR_RECHECK, 0.);
	q->recheck.data = q;
	ev_init(&q->beat, rq_beat_cb);
	q->beat.data = q;
	ev_init(&q->mover, rq_mover_cb);
	q->mover.data = q;
	ev_init(&q->pause_check, rq_look_again_cb);
	q->pause_check.repeat = PAUSE_CHECK;
	q->pause_check.data = q;
	ev_init(&q->limit_timer, rq_look_again_cb);
	q->limit_timer.data = q;
	ev_init(&q->sampler, rq_sampler_cb);
	q->sampler.repeat = cfg->metrics.sample_interval_ms / 1000.0;
	q->sampler.data = q;
	ev_timer_again(loop, &q->sampler);
	rq_need_recovery(q);
	q->seq = 1;
	if (cfg->redis.nsentinels > 0 &&
	    (q->sent = sentinel_new(loop, cfg, res, rc_master_moved, q)) ==
	    NULL) {
		redisq_free(q);
		return NULL;
	}
	rc_init(q, &q->cmd, -1);
	for (int i = 0; i < q->nq; i++)
		rc_init(q, &q->blk[i], i);
	rc_start(&q->cmd);
	for (int i = 0; i < q->nq; i++)
		rc_start(&q->blk[i]);
	return q;
}

void
redisq_free(struct redisq *q)
{
	if (q == NULL)
		return;
	q->requeue_fn = NULL;
	for (int i = 0; i < q->nq; i++)
		rc_close(&q->blk[i]);
	rc_close(&q->cmd);
	ev_timer_stop(q->loop, &q->recheck);
	ev_timer_stop(q->loop, &q->beat);
	ev_timer_stop(q->loop, &q->mover);
	ev_timer_stop(q->loop, &q->pause_check);
	ev_timer_stop(q->loop, &q->sampler);
	ev_prepare_stop(q->loop, &q->ack_flush);
	for (int i = 0; i < q->nq; i++) {
		struct ackreq *a, *next;

		for (a = q->acks[i]; a != NULL; a = next) {	/* unsent */
			next = a->next;
			free(a);
		}
	}
	free(q->acks);
	free(q->acks_tail);
	free(q->sample_next);
	free(q->sample_nworkers);
	free(q->fatal_why);
	free(q->owed);
	ev_timer_stop(q->loop, &q->defer);
	rq_limit_free(q);
	free_keys(q);
	sentinel_free(q->sent);
	free(q->blk);
	free(q);
}

void
redisq_reconfigure(struct redisq *q, const struct config *cfg)
{
	int changed = config_redis_conn_changed(q->cfg, cfg);

	q->cfg = cfg;
	if (q->sampler.repeat != cfg->metrics.sample_interval_ms / 1000.0) {
		q->sampler.repeat = cfg->metrics.sample_interval_ms / 1000.0;
		ev_timer_again(q->loop, &q->sampler);
	}
	rc_limits(&q->cmd);
	for (int i = 0; i < q->nq; i++)
		rc_limits(&q->blk[i]);
	rq_limit_reset(q);	/* the new limits from the next fetch on */
	/*
	 * The sentinel client reads the settings it was given until it gets
	 * others, and the old ones are freed after this call: it takes those
	 * of every reload, changed or not (and then asks anew if they did).
	 */
	if (cfg->redis.nsentinels > 0 && q->sent != NULL)
		sentinel_reconfigure(q->sent, cfg);
	if (!changed)
		return;
	/* Sentinels taken up or dropped. */
	if (cfg->redis.nsentinels == 0 || q->sent == NULL) {
		sentinel_free(q->sent);
		q->sent = NULL;
		if (cfg->redis.nsentinels > 0 && (q->sent = sentinel_new(q->loop,
		    cfg, q->res, rc_master_moved, q)) == NULL)
			log_errorx("redis: out of memory for the sentinels");
	}
	/*
	 * The master is forgotten until the sentinels answer again: that
	 * answer is told even when it names the same master, or nothing
	 * would connect again.
	 */
	q->master[0] = '\0';
	q->master_suspect = 0;
	if (q->sent != NULL)
		sentinel_ask(q->sent);
	log_info("redis: connection settings changed, reconnecting");
	/* At once, not after a backoff. */
	rc_restart(&q->cmd, "settings changed");
	for (int i = 0; i < q->nq; i++)
		rc_restart(&q->blk[i], "settings changed");
}

void
redisq_stop_fetch(struct redisq *q)
{
	q->fetch_stopped = 1;
	rq_quiesce(q);
}

void
redisq_requeue_all(struct redisq *q, redisq_done_fn *fn, void *arg)
{
	q->fetch_stopped = 1;
	q->requeue_fn = fn;
	q->requeue_arg = arg;
	if (!rc_up(&q->cmd)) {
		rq_requeue_answer(q, 0);	/* on the next loop turn */
		return;
	}
	rq_quiesce(q);
}

int
redisq_ready(const struct redisq *q)
{
	return rc_up(&q->cmd) && q->recovered;
}

const char *
redisq_last_error(const struct redisq *q)
{
	const char *why = link_last_error(&q->cmd.link);

	return why[0] ? why : NULL;
}

const char *
redisq_queue(const struct redisq *q, int qi)
{
	return q->k[qi].queue;
}

int
redisq_paused(const struct redisq *q, int qi)
{
	return q->qw[qi].is_paused;
}

int
redisq_limited(const struct redisq *q, int qi)
{
	return q->qw[qi].limited;
}

int
redisq_npaused(const struct redisq *q)
{
	return q->npaused;
}

const char *
redisq_dead_key(const struct redisq *q, int qi)
{
	return q->k[qi].dead;
}
