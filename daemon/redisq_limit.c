/*
 * redisq limits: what the fetch script is told of each queue's rate and
 * in-flight bound, and what this daemon does with its answer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redisq_int.h"

static void
peers_free(struct peer *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(p[i].name);
		free(p[i].processing);
	}
	free(p);
}

/*
 * The workers registered on queue QI are W (N of them, this one among
 * them or not): the fetch counts their processing sets from now on.
 */
void
rq_limit_peers(struct redisq *q, int qi, redisReply **w, size_t n)
{
	const char *self = q->cfg->worker.id;
	struct qwatch *qw = &q->qw[qi];
	struct peer *p = calloc(n + 1, sizeof(*p));
	size_t np = 0;

	if (p == NULL) {
		log_warnx("redis: out of memory for the workers of %s",
		    q->k[qi].queue);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (w[i]->type != REDIS_REPLY_STRING || (w[i]->len ==
		    strlen(self) && memcmp(w[i]->str, self, w[i]->len) == 0))
			continue;
		p[np].processing = rq_worker_key(q->k[qi].processing_of, w[i],
		    &p[np].plen);
		p[np].name = malloc(w[i]->len + 1);
		if (p[np].processing == NULL || p[np].name == NULL) {
			peers_free(p, np + 1);
			log_warnx("redis: out of memory for the workers of %s",
			    q->k[qi].queue);
			return;
		}
		memcpy(p[np].name, w[i]->str, w[i]->len);
		p[np].name[w[i]->len] = '\0';
		p[np].len = w[i]->len;
		np++;
	}
	peers_free(qw->peers, qw->npeers);
	qw->peers = p;
	qw->npeers = np;
}

/*
 * Adds the keys the fetch script reads for the limits of queue QI to B:
 * QUEUE:limit for a rate, QUEUE:workers and every other worker's
 * processing set for max_in_flight. Returns how many.
 */
int
rq_limit_keys(struct redisq *q, int qi, struct argv_buf *b)
{
	const struct limit *l = config_limit(q->cfg, q->k[qi].queue);
	const struct qwatch *qw = &q->qw[qi];
	int n = 0;

	if (l == NULL)
		return 0;
	if (l->rate > 0) {
		rq_argv_add(b, q->k[qi].limit, strlen(q->k[qi].limit));
		n++;
	}
	if (l->max_in_flight > 0) {
		rq_argv_add(b, q->k[qi].workers, strlen(q->k[qi].workers));
		for (size_t i = 0; i < qw->npeers; i++)
			rq_argv_add(b, qw->peers[i].processing,
			    qw->peers[i].plen);
		n += 1 + (int)qw->npeers;
	}
	return n;
}

/*
 * Adds the arguments of queue QI to B: the rate's interval between two
 * ids in microseconds (0: none), the burst, max_in_flight (0: none), the
 * number of other workers and their names. TBUF (SIZE bytes) holds the
 * numbers until the command is sent.
 */
void
rq_limit_args(struct redisq *q, int qi, struct argv_buf *b, char *tbuf,
    size_t size)
{
	const struct limit *l = config_limit(q->cfg, q->k[qi].queue);
	const struct qwatch *qw = &q->qw[qi];
	size_t npeers = l != NULL && l->max_in_flight > 0 ? qw->npeers : 0;

	snprintf(tbuf, size, "%.17g%c%d%c%d%c%zu",
	    l != NULL && l->rate > 0 ? l->per_ms * 1000.0 / l->rate : 0.0, 0,
	    l != NULL ? l->burst : 1, 0, l != NULL ? l->max_in_flight : 0, 0,
	    npeers);
	for (int i = 0, off = 0; i < 4; i++) {
		size_t sl = strlen(tbuf + off);

		rq_argv_add(b, tbuf + off, sl);
		off += (int)sl + 1;
	}
	for (size_t i = 0; i < npeers; i++)
		rq_argv_add(b, qw->peers[i].name, qw->peers[i].len);
}

/* The earliest a limited queue may give ids again; the timer then. */
static void
arm(struct redisq *q)
{
	ev_tstamp now = ev_now(q->loop), at = 0;

	for (int i = 0; i < q->nq; i++) {
		ev_tstamp t;

		if (q->qw[i].limited == LIMIT_RATE + 1)
			t = q->qw[i].limited_until;
		else if (q->qw[i].limited == LIMIT_IN_FLIGHT + 1)
			t = now + IN_FLIGHT_RECHECK;
		else
			continue;
		if (at == 0 || t < at)
			at = t;
	}
	ev_timer_stop(q->loop, &q->limit_timer);
	if (at == 0)
		return;
	ev_timer_set(&q->limit_timer, at > now ? at - now : 0., 0.);
	ev_timer_start(q->loop, &q->limit_timer);
}

static int
kind_of(const redisReply *r)
{
	if (r->type != REDIS_REPLY_STRING)
		return -2;
	if (strcmp(r->str, "rate") == 0)
		return LIMIT_RATE;
	if (strcmp(r->str, "in_flight") == 0)
		return LIMIT_IN_FLIGHT;
	if (strcmp(r->str, "workers") == 0)
		return -1;
	return -2;
}

/* Which of two limits named in one answer speaks for the queue. */
static int
rank(int kind)
{
	return kind == -1 ? 0 : kind == LIMIT_RATE ? 1 : 2;
}

static void
log_change(struct redisq *q, int qi, int was, int now)
{
	if (was == now)
		return;
	if (now == LIMIT_RATE + 1)
		log_debug("redis: %s is at its rate; the next id in %.3f s",
		    q->k[qi].queue, q->qw[qi].limited_until - ev_now(q->loop));
	else if (now == LIMIT_IN_FLIGHT + 1)
		log_debug("redis: %s is at max_in_flight (%lld held)",
		    q->k[qi].queue, q->qw[qi].held);
	else
		log_debug("redis: %s is no longer limited", q->k[qi].queue);
}

/*
 * The fetch script's answer on the limits, LIMITED: {queue index, kind,
 * value} for every queue a limit held back. A queue it looked at and
 * does not name is not limited. Returns nonzero when a queue's workers
 * changed and the fetch must be sent again at once.
 */
int
rq_limit_note(struct redisq *q, const redisReply *limited)
{
	ev_tstamp now = ev_now(q->loop);
	int again = 0;

	for (int i = 0; i < q->nq; i++) {
		struct qwatch *qw = &q->qw[i];
		int kind = -1, was = qw->limited;
		const redisReply *v = NULL;

		if (qw->skipped)
			continue;
		/*
		 * Both limits may have held it back: a new registry first
		 * (counted anew at once), then the rate, whose wait is known,
		 * then max_in_flight, looked at again soon.
		 */
		for (size_t j = 0; limited != NULL &&
		    limited->type == REDIS_REPLY_ARRAY &&
		    j < limited->elements; j++) {
			const redisReply *e = limited->element[j];
			int k;

			if (e->type != REDIS_REPLY_ARRAY || e->elements != 3 ||
			    e->element[0]->type != REDIS_REPLY_INTEGER ||
			    e->element[0]->integer != i ||
			    (k = kind_of(e->element[1])) == -2)
				continue;
			if (v == NULL || rank(k) < rank(kind)) {
				v = e->element[2];
				kind = k;
			}
		}
		if (v != NULL && kind == -1) {
			/* Its registry changed: counted anew at once. */
			if (v->type == REDIS_REPLY_ARRAY)
				rq_limit_peers(q, i, v->element, v->elements);
			again = 1;
			continue;
		}
		qw->limited = v != NULL ? kind + 1 : 0;
		if (v != NULL && v->type == REDIS_REPLY_INTEGER) {
			if (kind == LIMIT_RATE)
				qw->limited_until = now + v->integer / 1e6;
			else
				qw->held = v->integer;
		}
		stats_limited(&q->st->q[i], v != NULL ? kind : -1, now);
		log_change(q, i, was, qw->limited);
	}
	arm(q);
	return again;
}

/* This daemon wants no ids now: no spell of a limit goes on. */
void
rq_limit_idle(struct redisq *q)
{
	for (int i = 0; i < q->nq; i++)
		stats_limited(&q->st->q[i], -1, ev_now(q->loop));
}

/* New limits: every queue is asked again, on the next loop turn. */
void
rq_limit_reset(struct redisq *q)
{
	for (int i = 0; i < q->nq; i++)
		q->qw[i].limited = 0;
	rq_limit_idle(q);
	ev_timer_stop(q->loop, &q->limit_timer);
	ev_timer_set(&q->limit_timer, 0., 0.);
	ev_timer_start(q->loop, &q->limit_timer);
}

void
rq_limit_free(struct redisq *q)
{
	ev_timer_stop(q->loop, &q->limit_timer);
	for (int i = 0; q->qw != NULL && i < q->nq; i++) {
		peers_free(q->qw[i].peers, q->qw[i].npeers);
		q->qw[i].peers = NULL;
		q->qw[i].npeers = 0;
	}
}
