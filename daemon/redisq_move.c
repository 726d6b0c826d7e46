/*
 * redisq moves: retries and scheduled ids whose time has come go to the
 * tail of their queue.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "redisq_int.h"

/*
 * KEYS: queue, retry, scheduled; ARGV[1]: most ids per set. Ids whose
 * time has come (the server's clock, ms) go to the tail of the queue,
 * then leave their set. One script: an id moves once however many
 * workers run it. Returns {moved from retry, moved from scheduled, why
 * a set was skipped or ""}; a set of the wrong type counts -1 and does
 * not hold up the other.
 */
static const char move_lua[] =
	CHECK_LUA
	"local e = badtype(KEYS[1], 'list')\n"
	"if e then return {err = e} end\n"
	"local t = redis.call('TIME')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"local out = {}\n"
	"local why = ''\n"
	"for i = 2, 3 do\n"
	"  e = badtype(KEYS[i], 'zset')\n"
	"  if e then\n"
	"    out[#out+1] = -1; why = e\n"
	"  else\n"
	"    local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, ARGV[1])\n"
	"    if #due > 0 then\n"
	"      redis.call('RPUSH', KEYS[1], unpack(due))\n"
	"      redis.call('ZREM', KEYS[i], unpack(due))\n"
	"    end\n"
	"    out[#out+1] = #due\n"
	"  end\n"
	"end\n"
	"out[#out+1] = why\n"
	"return out\n";

#define MOVE_INTERVAL	0.05	/* seconds between looks at the sets */
#define MOVE_BATCH	1000	/* most ids per set and script */

static void
move_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r, **e;
	struct redisq *q;
	struct qwatch *w;
	int qi = (int)(intptr_t)priv, more = 0;
	const char *why = NULL;

	if (c == NULL || reply == NULL)
		return;
	q = c->q;
	w = &q->qw[qi];
	q->moves_out--;
	e = reply->element;
	if (reply->type == REDIS_REPLY_ERROR)
		why = reply->str;
	else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    e[0]->type != REDIS_REPLY_INTEGER ||
	    e[1]->type != REDIS_REPLY_INTEGER ||
	    e[2]->type != REDIS_REPLY_STRING)
		why = "unexpected answer";
	else {
		long long a = e[0]->integer, b = e[1]->integer;

		/* A set of the wrong type does not hold up the other. */
		if (e[2]->len > 0)
			why = e[2]->str;
		if (a > 0 || b > 0) {
			log_debug("redis: %lld retry and %lld scheduled id(s) "
			    "went to %s", a, b, q->k[qi].queue);
			q->known_empty = 0;
		}
		more = a >= MOVE_BATCH || b >= MOVE_BATCH;
	}
	if (why != NULL) {
		q->move_failed = 1;
		if (outage_note(&w->move_outage, why))
			log_warnx("redis: cannot move due ids of %s: %s; "
			    "trying again", q->k[qi].queue, why);
	} else if (outage_end(&w->move_outage))
		log_info("redis: due ids of %s move again", q->k[qi].queue);
	if (q->moves_out == 0) {
		ev_timer_stop(q->loop, &q->mover);
		ev_timer_set(&q->mover, more ? 0. : q->move_failed ?
		    QERR_RECHECK : MOVE_INTERVAL, 0.);
		ev_timer_start(q->loop, &q->mover);
		q->move_failed = 0;
		redisq_kick(q);
	}
}

/* One script per queue; the next round is armed once all have answered. */
void
rq_move_due(struct redisq *q)
{
	char nbuf[16];

	snprintf(nbuf, sizeof(nbuf), "%d", MOVE_BATCH);
	if (!rc_up(&q->cmd) || q->left || q->moves_out > 0)
		return;
	for (int qi = 0; qi < q->nq; qi++) {
		const char *argv[7] = { "EVAL", move_lua, "3", q->k[qi].queue,
		    q->k[qi].retry, q->k[qi].scheduled, nbuf };

		if (rc_command(&q->cmd, move_cb, (void *)(intptr_t)qi, 7, argv,
		    NULL) == -1)
			return;
		q->moves_out++;
	}
}

void
rq_mover_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	rq_move_due(w->data);
}
