/*
 * redisq fetching: ids taken into the processing sets as the worker has
 * room, waits on empty queues, and the reconcile that puts back the rest.
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
 * KEYS, for each queue: queue, processing, attempts, paused, then for a
 * rate QUEUE:limit, and for max_in_flight QUEUE:workers and the
 * processing set of each other worker the daemon knows registered.
 * ARGV: most ids to take, the sequence number of the first, a string of
 * "0" and "1", one a queue ("1" skips it: its recovery is pending, or its
 * rate allows no id yet), this worker, the number of queues, then for
 * each queue: the rate's interval between two ids in microseconds (0:
 * none), its burst, max_in_flight (0: none), the number of other workers
 * named and their names.
 *
 * Each id taken becomes a member of the processing set scored by that
 * sequence (before it leaves the queue); one ZADD and one HMGET serve a
 * batch of ids (a call from Lua costs more than the member it adds; up to
 * 1,000 ids a call keeps unpack() within Lua's stack); a queue whose
 * QUEUE:paused exists
 * is not taken from. A queue's limits bound how many it gives, in the
 * same step: a GCRA on the server's clock, whose theoretical arrival time
 * (microseconds) is QUEUE:limit, worked out as its distance from now so
 * that a tiny interval is not lost in the clock's digits; a time more
 * than a burst ahead (limits changed by a reload, the clock set back, a
 * hostile value) is brought back to one burst and written so. And the
 * ids in every registered worker's
 * processing set. A worker registered that the daemon did not name stops
 * that queue for this call (its ids would not be counted); the answer
 * names them all.
 * Returns {paused, limited, queue index, id, failed runs so far, ...},
 * PAUSED a string of "0" and "1", one a queue, LIMITED {queue index,
 * "rate", microseconds until the next id may be taken | "in_flight", ids
 * held | "workers", {every registered worker}, ...} for each queue a
 * limit held back; a queue whose keys are of the wrong type gives
 * {-(index + 1), message, 0} and is left as it is.
 */
static const char fetch_lua[] =
	CHECK_LUA
	"local n = tonumber(ARGV[1])\n"
	"local seq = tonumber(ARGV[2])\n"
	"local qs, k, a = {}, 1, 6\n"
	"for qi = 1, tonumber(ARGV[5]) do\n"
	"  local q = {k = k, t = tonumber(ARGV[a]), burst = tonumber(ARGV[a+1]),\n"
	"    max = tonumber(ARGV[a+2]), nw = tonumber(ARGV[a+3]), w = a + 4}\n"
	"  k = k + 4\n"
	"  if q.t > 0 then q.limit = k; k = k + 1 end\n"
	"  if q.max > 0 then q.workers = k; k = k + 1 + q.nw end\n"
	"  a = a + 4 + q.nw\n"
	"  qs[qi] = q\n"
	"end\n"
	"local paused = ''\n"
	"for qi = 1, #qs do\n"
	"  paused = paused .. redis.call('EXISTS', KEYS[qs[qi].k + 3])\n"
	"end\n"
	"local limited = {}\n"
	"local out = {paused, limited}\n"
	"local now\n"
	"for qi = 1, #qs do\n"
	"  if n == 0 then break end\n"
	"  local q = qs[qi]\n"
	"  local i = q.k\n"
	"  if string.sub(paused, qi, qi) == '0' and\n"
	"      string.sub(ARGV[3], qi, qi) ~= '1' then\n"
	"    local e = badtype(KEYS[i], 'list', KEYS[i+1], 'zset', KEYS[i+2], 'hash')\n"
	"    if not e and q.limit then e = badtype(KEYS[q.limit], 'string') end\n"
	"    if not e and q.workers then\n"
	"      e = badtype(KEYS[q.workers], 'set')\n"
	"      for j = 1, q.nw do e = e or badtype(KEYS[q.workers + j], 'zset') end\n"
	"    end\n"
	"    if e then\n"
	"      out[#out+1] = -qi; out[#out+1] = e; out[#out+1] = 0\n"
	"    else\n"
	"      local take = n\n"
	"      if q.limit or q.workers then\n"
	"        take = math.min(n, redis.call('LLEN', KEYS[i]))\n"
	"      end\n"
	"      if q.workers and take > 0 then\n"
	"        local known = {[ARGV[4]] = true}\n"
	"        for j = 1, q.nw do known[ARGV[q.w + j - 1]] = true end\n"
	"        local ws = redis.call('SMEMBERS', KEYS[q.workers])\n"
	"        local held = redis.call('ZCARD', KEYS[i+1])\n"
	"        for j = 1, q.nw do\n"
	"          held = held + redis.call('ZCARD', KEYS[q.workers + j])\n"
	"        end\n"
	"        for _, w in ipairs(ws) do\n"
	"          if not known[w] then\n"
	"            limited[#limited+1] = {qi - 1, 'workers', ws}; take = 0\n"
	"            break\n"
	"          end\n"
	"        end\n"
	"        if take > 0 and held + take > q.max then\n"
	"          take = math.max(q.max - held, 0)\n"
	"          limited[#limited+1] = {qi - 1, 'in_flight', held}\n"
	"        end\n"
	"      end\n"
	"      if q.limit and take > 0 then\n"
	"        if not now then\n"
	"          local t = redis.call('TIME')\n"
	"          now = t[1] * 1000000 + t[2]\n"
	"        end\n"
	"        local room = q.burst * q.t\n"
	"        local tat = tonumber(redis.call('GET', KEYS[q.limit]))\n"
	"        local d, stale = 0, false\n"
	"        if tat and tat == tat and tat > now then d = tat - now end\n"
	"        if d > room then d = room; stale = true end\n"
	"        local allowed = math.floor((room - d) / q.t + 1e-9)\n"
	"        if allowed < take then\n"
	"          take = math.max(allowed, 0)\n"
	"          limited[#limited+1] = {qi - 1, 'rate',\n"
	"            math.max(math.ceil(d + (take + 1) * q.t - room), 1)}\n"
	"        end\n"
	"        if take > 0 or stale then\n"
	"          d = d + take * q.t\n"
	"          redis.call('SET', KEYS[q.limit], string.format('%.17g', now + d),\n"
	"            'PX', math.ceil(d / 1000) + 1)\n"
	"        end\n"
	"      end\n"
	"      if take > 0 then\n"
	"        local vs = redis.call('LRANGE', KEYS[i], 0, take - 1)\n"
	"        for s = 1, #vs, 1000 do\n"
	"          local e = math.min(#vs, s + 999)\n"
	"          local za, hm = {'ZADD', KEYS[i+1], 'NX'}, {'HMGET', KEYS[i+2]}\n"
	"          for j = s, e do\n"
	"            za[#za+1] = seq; za[#za+1] = vs[j]; seq = seq + 1\n"
	"            hm[#hm+1] = vs[j]\n"
	"          end\n"
	"          redis.call(unpack(za))\n"
	"          local at = redis.call(unpack(hm))\n"
	"          for j = s, e do\n"
	"            out[#out+1] = qi - 1; out[#out+1] = vs[j]\n"
	"            out[#out+1] = count(at[j - s + 1])\n"
	"          end\n"
	"        end\n"
	"        if #vs > 0 then redis.call('LTRIM', KEYS[i], #vs, -1) end\n"
	"        n = n - #vs\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return out\n";

/*
 * KEYS: queue, processing, and for a clean exit also queue:workers and
 * queue:heartbeat:SELF; ARGV: self, then the values held in memory.
 * Everything else in the processing set goes back to the head of the
 * queue; at a clean exit the worker then leaves the registry, and only
 * then: one whose ids could not go back stays registered, so that its
 * set is reclaimed once its heartbeat is gone.
 */
static const char reconcile_lua[] =
	CHECK_LUA
	GIVE_BACK_LUA
	"local held = {}\n"
	"for i = 2, #ARGV do held[ARGV[i]] = true end\n"
	"local n, e = give_back(KEYS[2], KEYS[1], held)\n"
	"if e then return {err = e} end\n"
	"if #KEYS == 4 then\n"
	"  redis.call('DEL', KEYS[4])\n"
	"  redis.call('SREM', KEYS[3], ARGV[1])\n"
	"end\n"
	"return n\n";

static void
recheck_in(struct redisq *q, double seconds)
{
	if (ev_is_active(&q->recheck) &&
	    ev_timer_remaining(q->loop, &q->recheck) <= seconds)
		return;
	ev_timer_stop(q->loop, &q->recheck);
	ev_timer_set(&q->recheck, seconds, 0.);
	ev_timer_start(q->loop, &q->recheck);
}

static void
reconcile_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r;
	struct redisq *q = c ? c->q : NULL;
	int qi = (int)(intptr_t)priv;

	if (c == NULL || reply == NULL)
		return;		/* the command connection was lost: again later */
	/*
	 * An error (a key of the wrong type, -LOADING, -OOM, -READONLY)
	 * leaves that queue's ids where they are; the others go on, and the
	 * recovery is tried again before anything is fetched.
	 */
	if (reply->type != REDIS_REPLY_ERROR && !q->reconcile_all)
		q->qw[qi].unrecovered = 0;
	if (reply->type == REDIS_REPLY_ERROR) {
		q->reconcile_failed = 1;
		q->st->redis.errors++;
		if (outage_note(&q->reconcile_outage, reply->str))
			log_warnx("redis: cannot put the ids of %s back: %s; "
			    "trying again", q->k[qi].processing, reply->str);
	} else if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
		log_notice("redis: %lld id(s) from %s went back to the head "
		    "of %s", reply->integer, q->k[qi].processing, q->k[qi].queue);
	if (--q->reconcile_left > 0)
		return;
	if (q->reconcile_failed) {
		q->reconcile_failed = 0;
		if (q->reconcile_all) {
			/* Still registered: its set is reclaimed later. */
			q->reconcile_all = 0;
			rq_requeue_answer(q, 0);
			return;
		}
		/* The others are served meanwhile; this one is not. */
		q->reconcile_wait = 1;	/* until rq_recheck_cb */
		recheck_in(q, QERR_RECHECK);
		if (!q->recovered) {
			q->recovered = 1;
			rq_state_changed(q);
		}
		redisq_kick(q);
		return;
	}
	if (outage_end(&q->reconcile_outage))
		log_info("redis: the ids held are reconciled again");
	if (q->reconcile_all) {
		q->reconcile_all = 0;
		q->left = 1;
		rq_requeue_answer(q, 1);
		return;
	}
	q->need_reconcile = 0;
	if (!q->recovered) {
		q->recovered = 1;
		rq_state_changed(q);
	}
	redisq_kick(q);
}

/*
 * Sends one reconcile script per queue. HELD is nonzero to keep the ids
 * the worker holds; zero puts everything back and leaves (shutdown).
 */
static int
send_reconcile(struct redisq *q, int held)
{
	q->reconcile_left = 0;
	q->reconcile_failed = 0;
	q->reconcile_all = !held;
	if (!held)
		q->left = 1;	/* no more heartbeats */
	for (int qi = 0; qi < q->nq; qi++) {
		const struct qkeys *k = &q->k[qi];
		struct argv_buf b = { 0 };
		int rc;

		rq_argv_add(&b, "EVAL", 4);
		rq_argv_add(&b, reconcile_lua, sizeof(reconcile_lua) - 1);
		rq_argv_add(&b, held ? "2" : "4", 1);
		rq_argv_add(&b, k->queue, strlen(k->queue));
		rq_argv_add(&b, k->processing, strlen(k->processing));
		if (!held) {
			rq_argv_add(&b, k->workers, strlen(k->workers));
			rq_argv_add(&b, k->heartbeat, strlen(k->heartbeat));
		}
		rq_argv_add(&b, q->cfg->worker.id, strlen(q->cfg->worker.id));
		if (held && !q->qw[qi].unrecovered)
			continue;
		if (held && q->cb.foreach_held)
			q->cb.foreach_held(q->arg, qi, rq_argv_add, &b);
		rc = b.failed ? -1 : rc_command(&q->cmd, reconcile_cb,
		    (void *)(intptr_t)qi, b.n, b.argv, b.lens);
		free(b.argv);
		free(b.lens);
		if (rc == -1)
			return -1;
		q->reconcile_left++;
	}
	if (q->reconcile_left == 0)
		q->need_reconcile = 0;
	return 0;
}

static void
unblock_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r;
	struct rconn *b;

	if (c == NULL || reply == NULL)
		return;
	b = &c->q->blk[(int)(intptr_t)priv];
	b->unblock_sent = 0;
	if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)
		b->unblock_sent = 1;	/* its BLMOVE answers nil now */
	else if (b->blocked)
		recheck_in(c->q, UNBLOCK_RETRY);	/* raced: try again */
}

/* Every BLMOVE out is asked to return. */
static void
unblock_all(struct redisq *q)
{
	char idbuf[32];
	const char *argv[3] = { "CLIENT", "UNBLOCK", idbuf };

	for (int i = 0; i < q->nq; i++) {
		struct rconn *b = &q->blk[i];

		if (!b->blocked || b->unblock_sent)
			continue;
		snprintf(idbuf, sizeof(idbuf), "%lld", b->client_id);
		if (rc_command(&q->cmd, unblock_cb, (void *)(intptr_t)i, 3,
		    argv, NULL) == 0)
			b->unblock_sent = 1;
	}
}

/*
 * Brings fetching to rest (no fetch script out), then reconciles or, when
 * asked, puts everything back.
 */
void
rq_quiesce(struct redisq *q)
{
	if (!rc_up(&q->cmd) || q->defer_requeue >= 0)
		return;
	/* A BLMOVE out moves nothing: only the fetch script is waited for. */
	if (q->script_inflight || q->reconcile_left > 0)
		return;
	/* Until this worker id is ours, its processing sets are not. */
	if (!q->claimed) {
		if (q->requeue_fn && (q->contest_since != 0 || q->beat_failed))
			rq_requeue_answer(q, 0);
		return;
	}
	if (q->requeue_fn) {
		if (send_reconcile(q, 0) == -1)
			rc_drop(&q->cmd, "cannot send the requeue");
		return;
	}
	if (q->need_reconcile && !q->reconcile_wait &&
	    send_reconcile(q, 1) == -1)
		rc_drop(&q->cmd, "cannot send the recovery");
}

static void
qerr_clear(struct redisq *q, int qi)
{
	if (!q->blk[qi].qerr)
		return;
	log_info("redis: %s can be taken from again", q->k[qi].queue);
	q->blk[qi].qerr = 0;
}

/* Failed runs so far, as the scripts or HGET answer it (nil: none). */
static int
attempts_of(const redisReply *a)
{
	long long n = 0;

	if (a == NULL)
		return 0;
	if (a->type == REDIS_REPLY_INTEGER)
		n = a->integer;
	else if (a->type == REDIS_REPLY_STRING)
		n = strtoll(a->str, NULL, 10);
	return n < 0 ? 0 : n > 1000000 ? 1000000 : (int)n;
}

/* PAUSED: "0" or "1" for each queue, as the fetch script found them. */
static void
note_paused(struct redisq *q, const char *paused, size_t len)
{
	for (int i = 0; i < q->nq && (size_t)i < len; i++) {
		int p = paused[i] == '1';

		if (p == q->qw[i].is_paused)
			continue;
		q->qw[i].is_paused = p;
		q->npaused += p ? 1 : -1;
		if (p)
			log_notice("redis: %s is paused (%s exists); taking no "
			    "ids from it", q->k[i].queue, q->k[i].paused);
		else
			log_notice("redis: %s is resumed", q->k[i].queue);
	}
	if (q->npaused > 0 && !ev_is_active(&q->pause_check))
		ev_timer_again(q->loop, &q->pause_check);
	else if (q->npaused == 0)
		ev_timer_stop(q->loop, &q->pause_check);
}

/*
 * A queue is paused (a resume is seen within PAUSE_CHECK), or a limit
 * may allow ids again: look at every queue again.
 */
void
rq_look_again_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct redisq *q = w->data;

	(void)loop;
	(void)revents;
	q->known_empty = 0;
	redisq_kick(q);
}

static void
fetch_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r;
	struct redisq *q;
	size_t got = 0, asked = (size_t)(intptr_t)priv;
	uint64_t failed = 0;	/* queues that answered with an error */
	int again = 0;

	if (c == NULL || reply == NULL)
		return;		/* rc_lost marked the need to reconcile */
	q = c->q;
	if (reply->type == REDIS_REPLY_ERROR) {
		q->script_inflight = 0;
		/*
		 * The script may have stopped halfway (-OOM, -BUSY): what it
		 * put in the processing set goes back before the next fetch.
		 */
		if (outage_note(&q->fetch_outage, reply->str))
			log_warnx("redis: fetch failed: %s; trying again",
			    reply->str);
		q->st->redis.errors++;
		rq_need_recovery(q);
		q->fetch_wait = 1;	/* until rq_recheck_cb */
		recheck_in(q, QERR_RECHECK);
		return;
	}
	if (outage_end(&q->fetch_outage))
		log_info("redis: fetching again");
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
	    reply->element[0]->type == REDIS_REPLY_STRING)
		note_paused(q, reply->element[0]->str, reply->element[0]->len);
	/* A queue whose workers changed is asked again at once. */
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 1)
		again = rq_limit_note(q, reply->element[1]);
	if (reply->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 2; i + 2 < reply->elements; i += 3) {
			redisReply *k = reply->element[i];
			redisReply *v = reply->element[i + 1];
			redisReply *a = reply->element[i + 2];
			long long qi = k->type == REDIS_REPLY_INTEGER ?
			    k->integer : -1000;

			if (qi < 0 && -qi <= q->nq &&
			    v->type == REDIS_REPLY_STRING) {
				struct rconn *b = &q->blk[-qi - 1];

				if (!b->qerr)
					log_warnx("redis: cannot take ids from "
					    "%s: %s", q->k[-qi - 1].queue,
					    v->str);
				b->qerr = 1;
				failed |= UINT64_C(1) << (-qi - 1);
				recheck_in(q, QERR_RECHECK);
				continue;
			}
			if (qi < 0 || qi >= q->nq ||
			    v->type != REDIS_REPLY_STRING)
				continue;
			qerr_clear(q, (int)qi);
			got++;
			q->cb.on_id(q->arg, (int)qi, v->str, v->len,
			    attempts_of(a));
		}
	}
	/*
	 * Only now is the fetch over: an id handed on above may free room
	 * (a row read ahead), and a kick from in there must not send a
	 * second fetch sized before the rest of these ids were counted.
	 */
	q->script_inflight = 0;
	/*
	 * Fewer ids than asked: the script went through every queue, so one
	 * that failed before and not now is usable again (a list, or gone).
	 */
	for (int i = 0; got < asked && i < q->nq; i++)
		if (!(failed & (UINT64_C(1) << i)))
			qerr_clear(q, i);
	q->known_empty = got == 0 && !again;
	redisq_kick(q);
}

static void
block_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r;
	struct redisq *q;
	int unblocked;

	(void)priv;
	if (c == NULL || reply == NULL)
		return;
	q = c->q;
	unblocked = c->unblock_sent;
	c->blocked = 0;
	c->unblock_sent = 0;
	if (reply->type == REDIS_REPLY_STRING) {
		/* The queue has ids now (the BLMOVE only rotated it): fetch. */
		q->known_empty = 0;
		if (q->cb.on_hint && !q->qw[c->qi].is_paused)
			q->cb.on_hint(q->arg, c->qi, reply->str, reply->len);
	} else if (reply->type == REDIS_REPLY_NIL && !unblocked) {
		/*
		 * A quiet BLOCK_SECONDS: one fetch script looks at every
		 * queue, so a pause (or its end) is seen while idle too.
		 */
		q->known_empty = 0;
	} else if (reply->type == REDIS_REPLY_ERROR) {
		if (!c->qerr)
			log_warnx("redis: cannot take ids from %s: %s",
			    q->k[c->qi].queue, reply->str);
		c->qerr = 1;
		recheck_in(q, QERR_RECHECK);
	}
	redisq_kick(q);
}

static void
send_fetch(struct redisq *q, int n)
{
	struct argv_buf b = { 0 };
	/* redis.queues holds at most 64 (config.c). */
	char nbuf[16], numkeys[16], seqbuf[32], skip[64 + 1], nqbuf[16];
	char tbuf[64][64];	/* each queue's limit numbers */
	ev_tstamp now = ev_now(q->loop);
	int nkeys = 0;

	snprintf(nbuf, sizeof(nbuf), "%d", n);
	snprintf(seqbuf, sizeof(seqbuf), "%.0f", q->seq);
	snprintf(nqbuf, sizeof(nqbuf), "%d", q->nq);
	q->seq += n;	/* numbers left unused cost nothing: only order counts */
	rq_argv_add(&b, "EVAL", 4);
	rq_argv_add(&b, fetch_lua, sizeof(fetch_lua) - 1);
	rq_argv_add(&b, numkeys, 0);	/* its length once counted */
	for (int i = 0; i < q->nq; i++) {
		rq_argv_add(&b, q->k[i].queue, strlen(q->k[i].queue));
		rq_argv_add(&b, q->k[i].processing, strlen(q->k[i].processing));
		rq_argv_add(&b, q->k[i].attempts, strlen(q->k[i].attempts));
		rq_argv_add(&b, q->k[i].paused, strlen(q->k[i].paused));
		nkeys += 4 + rq_limit_keys(q, i, &b);
	}
	if (!b.failed)
		b.lens[2] = (size_t)snprintf(numkeys, sizeof(numkeys), "%d",
		    nkeys);
	rq_argv_add(&b, nbuf, strlen(nbuf));
	rq_argv_add(&b, seqbuf, strlen(seqbuf));
	for (int i = 0; i < q->nq && i < (int)sizeof(skip) - 1; i++) {
		/* A rate that allows no id yet: its timer asks again. */
		q->qw[i].skipped = q->qw[i].limited == LIMIT_RATE + 1 &&
		    q->qw[i].limited_until > now + 0.0005;
		skip[i] = q->qw[i].unrecovered || q->qw[i].skipped ? '1' : '0';
	}
	skip[q->nq < (int)sizeof(skip) - 1 ? q->nq : (int)sizeof(skip) - 1] =
	    '\0';
	rq_argv_add(&b, skip, strlen(skip));
	rq_argv_add(&b, q->cfg->worker.id, strlen(q->cfg->worker.id));
	rq_argv_add(&b, nqbuf, strlen(nqbuf));
	for (int i = 0; i < q->nq; i++)
		rq_limit_args(q, i, &b, tbuf[i], sizeof(tbuf[i]));
	if (!b.failed && rc_command(&q->cmd, fetch_cb, (void *)(intptr_t)n,
	    b.n, b.argv, b.lens) == 0)
		q->script_inflight = 1;
	free(b.argv);
	free(b.lens);
}

static void
send_block(struct rconn *b)
{
	struct redisq *q = b->q;
	char tbuf[16];
	/*
	 * The queue onto itself, head to head: it wakes when an id arrives
	 * and moves nothing, so the fetch script alone takes ids.
	 */
	const char *argv[6] = { "BLMOVE", q->k[b->qi].queue, q->k[b->qi].queue,
	    "LEFT", "LEFT", tbuf };

	snprintf(tbuf, sizeof(tbuf), "%d", BLOCK_SECONDS);
	if (rc_command(b, block_cb, NULL, 6, argv, NULL) == 0)
		b->blocked = 1;
}

void
redisq_kick(struct redisq *q)
{
	int room;

	if (!rc_up(&q->cmd))
		return;
	if (!q->claimed || q->requeue_fn || q->reconcile_left ||
	    (q->need_reconcile && !q->reconcile_wait)) {
		rq_quiesce(q);
		return;
	}
	if (q->fetch_stopped) {
		rq_limit_idle(q);
		rq_quiesce(q);
		return;
	}
	if (q->script_inflight || q->fetch_wait)
		return;
	room = q->cb.room(q->arg);
	if (room <= 0) {
		/* No slot (or PostgreSQL is away): take nothing more. */
		rq_limit_idle(q);
		unblock_all(q);
		return;
	}
	if (!q->known_empty) {
		send_fetch(q, room > FETCH_BATCH ? FETCH_BATCH : room);
		return;
	}
	/* Every queue was empty: wait on all of them, to fetch at once. */
	for (int i = 0; i < q->nq; i++) {
		struct rconn *b = &q->blk[i];

		if (b->qerr)
			recheck_in(q, QERR_RECHECK);	/* not waited on */
		else if (q->qw[i].is_paused || q->qw[i].unrecovered ||
		    q->qw[i].limited)
			continue;	/* it has ids: a BLMOVE would spin */
		else if (rc_up(b) && !b->blocked)
			send_block(b);
		else if (!rc_up(b))
			recheck_in(q, FETCH_DOWN_RECHECK);	/* polled */
	}
}

void
rq_recheck_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct redisq *q = w->data;

	(void)loop;
	(void)revents;
	q->known_empty = 0;
	q->reconcile_wait = 0;
	q->fetch_wait = 0;
	for (int i = 0; i < q->nq; i++)
		q->blk[i].unblock_sent = 0;
	redisq_kick(q);
}
