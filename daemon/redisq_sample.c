/*
 * redisq sampling: what the metrics show of each queue, read now and
 * then in one script.
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
 * KEYS: per queue: queue, retry, scheduled, dead, workers, paused. What
 * the metrics show of each queue: {length, retry, scheduled, dead,
 * paused, head id or "", the earliest due time in retry and in scheduled
 * or -1, {registered workers}, ...}, then the server's time in ms. A key
 * of another type counts as empty. What the workers hold is asked next
 * (held_lua), with their keys named. Its cost grows with the workers,
 * never with the ids.
 */
static const char sample_lua[] =
	"local t = redis.call('TIME')\n"
	"local out = {}\n"
	"local function kind(k) return redis.call('TYPE', k).ok end\n"
	"local function first(z)\n"
	"  if kind(z) ~= 'zset' then return -1 end\n"
	"  local r = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')\n"
	"  if #r == 0 then return -1 end\n"
	"  local v = tonumber(r[2])\n"
	"  if v == nil or v ~= v or v > 1e15 or v < -1e15 then return -1 end\n"
	"  return math.floor(v)\n"
	"end\n"
	"local function size(k)\n"
	"  local ty = kind(k)\n"
	"  if ty == 'zset' then return redis.call('ZCARD', k) end\n"
	"  if ty == 'list' then return redis.call('LLEN', k) end\n"
	"  return 0\n"
	"end\n"
	"for i = 1, #KEYS, 6 do\n"
	"  local head = ''\n"
	"  if kind(KEYS[i]) == 'list' then\n"
	"    head = redis.call('LINDEX', KEYS[i], 0) or ''\n"
	"  end\n"
	"  local ws = {}\n"
	"  if kind(KEYS[i+4]) == 'set' then\n"
	"    ws = redis.call('SMEMBERS', KEYS[i+4])\n"
	"  end\n"
	"  out[#out+1] = size(KEYS[i]); out[#out+1] = size(KEYS[i+1])\n"
	"  out[#out+1] = size(KEYS[i+2]); out[#out+1] = size(KEYS[i+3])\n"
	"  out[#out+1] = redis.call('EXISTS', KEYS[i+5]); out[#out+1] = head\n"
	"  out[#out+1] = first(KEYS[i+1]); out[#out+1] = first(KEYS[i+2])\n"
	"  out[#out+1] = ws\n"
	"end\n"
	"out[#out+1] = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"return out\n";

#define SAMPLE_FIELDS	9	/* answered per queue by sample_lua */

/*
 * KEYS: a processing set and a heartbeat per worker. Returns {ids held,
 * heartbeat alive, ...}; a key of another type holds nothing.
 */
static const char held_lua[] =
	"local out = {}\n"
	"for i = 1, #KEYS, 2 do\n"
	"  local ty = redis.call('TYPE', KEYS[i]).ok\n"
	"  local n = 0\n"
	"  if ty == 'zset' then n = redis.call('ZCARD', KEYS[i])\n"
	"  elseif ty == 'list' then n = redis.call('LLEN', KEYS[i]) end\n"
	"  out[#out+1] = n; out[#out+1] = redis.call('EXISTS', KEYS[i+1])\n"
	"end\n"
	"return out\n";

static long long
int_of(const redisReply *r)
{
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	if (r->type == REDIS_REPLY_STRING)
		return strtoll(r->str, NULL, 10);
	return -1;
}

/* The oldest id waiting, as far as sampling can tell (see README). */
static double
oldest_age(struct redisq *q, struct qwatch *k, const redisReply *head,
    long long retry_due, long long sched_due, long long now_ms)
{
	ev_tstamp now = ev_now(q->loop);
	double age = 0;

	if (head->type != REDIS_REPLY_STRING || head->len == 0) {
		free(k->head);
		k->head = NULL;
	} else if (k->head == NULL || strcmp(k->head, head->str) != 0) {
		free(k->head);
		k->head = strndup(head->str, head->len);
		k->head_since = now;
	} else
		age = now - k->head_since;
	/* Due ids not moved yet have waited since their due time. */
	if (retry_due >= 0 && (now_ms - retry_due) / 1000.0 > age)
		age = (now_ms - retry_due) / 1000.0;
	if (sched_due >= 0 && (now_ms - sched_due) / 1000.0 > age)
		age = (now_ms - sched_due) / 1000.0;
	return age;
}

static void
sample_failed(struct redisq *q, const redisReply *reply)
{
	q->sample_out = 0;
	if (reply->type == REDIS_REPLY_ERROR) {
		q->st->redis.errors++;
		log_warnx("redis: cannot sample the queues: %s", reply->str);
	}
}

/* The second step: what the workers of each queue hold; the sample ends. */
static void
held_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r, **e;
	struct redisq *q;
	size_t want = 0;

	(void)priv;
	if (c == NULL || reply == NULL)
		return;
	q = c->q;
	for (int qi = 0; qi < q->nq; qi++)
		want += 2 * (size_t)q->sample_nworkers[qi];
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != want) {
		sample_failed(q, reply);
		return;
	}
	q->sample_out = 0;
	q->st->redis.rtt = ev_time() - q->sample_sent;
	e = reply->element;
	for (int qi = 0; qi < q->nq; qi++) {
		struct qsample *s = &q->sample_next[qi];

		s->processing = s->workers = 0;
		for (int j = 0; j < q->sample_nworkers[qi]; j++, e += 2) {
			s->processing += int_of(e[0]) > 0 ? int_of(e[0]) : 0;
			s->workers += int_of(e[1]) == 1;
		}
		s->at = ev_time();
		q->st->q[qi].sample = *s;
		q->st->q[qi].sampled = 1;
	}
}

static void
sample_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r, **e;
	struct redisq *q;
	struct argv_buf b = { 0 };
	long long now_ms;
	char numkeys[16], **names = NULL;
	size_t nnames = 0, n = 0;

	(void)priv;
	if (c == NULL || reply == NULL)
		return;
	q = c->q;
	if (reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != (size_t)q->nq * SAMPLE_FIELDS + 1) {
		sample_failed(q, reply);
		return;
	}
	e = reply->element;
	now_ms = int_of(e[reply->elements - 1]);
	for (int qi = 0; qi < q->nq; qi++, e += SAMPLE_FIELDS) {
		struct qsample *s = &q->sample_next[qi];

		s->length = int_of(e[0]);
		s->retry = int_of(e[1]);
		s->scheduled = int_of(e[2]);
		s->dead = int_of(e[3]);
		s->paused = int_of(e[4]) == 1;
		s->oldest_age = oldest_age(q, &q->qw[qi], e[5], int_of(e[6]),
		    int_of(e[7]), now_ms);
		q->sample_nworkers[qi] = e[8]->type == REDIS_REPLY_ARRAY ?
		    (int)e[8]->elements : 0;
		nnames += 2 * (size_t)q->sample_nworkers[qi];
	}
	/* Every worker's keys, named here: a script builds none. */
	names = calloc(nnames ? nnames : 1, sizeof(*names));
	snprintf(numkeys, sizeof(numkeys), "%zu", nnames);
	rq_argv_add(&b, "EVAL", 4);
	rq_argv_add(&b, held_lua, sizeof(held_lua) - 1);
	rq_argv_add(&b, numkeys, strlen(numkeys));
	e = reply->element;
	for (int qi = 0; names && !b.failed && qi < q->nq; qi++,
	    e += SAMPLE_FIELDS) {
		for (int j = 0; j < q->sample_nworkers[qi]; j++) {
			const redisReply *w = e[8]->element[j];
			size_t pl = 0, hl = 0;

			names[n] = rq_worker_key(q->k[qi].processing_of, w, &pl);
			names[n + 1] = rq_worker_key(q->k[qi].heartbeat_of, w,
			    &hl);
			if (names[n] == NULL || names[n + 1] == NULL) {
				b.failed = 1;
				break;
			}
			rq_argv_add(&b, names[n], pl);
			rq_argv_add(&b, names[n + 1], hl);
			n += 2;
		}
	}
	if (names == NULL || b.failed || rc_command(&q->cmd, held_cb, NULL,
	    b.n, b.argv, b.lens) == -1)
		q->sample_out = 0;
	for (size_t i = 0; names && i < nnames; i++)
		free(names[i]);
	free(names);
	free(b.argv);
	free(b.lens);
}

void
rq_sampler_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct redisq *q = w->data;
	struct argv_buf b = { 0 };
	char numkeys[16];

	(void)loop;
	(void)revents;
	if (!rc_up(&q->cmd) || q->sample_out || q->left)
		return;
	snprintf(numkeys, sizeof(numkeys), "%d", 6 * q->nq);
	rq_argv_add(&b, "EVAL", 4);
	rq_argv_add(&b, sample_lua, sizeof(sample_lua) - 1);
	rq_argv_add(&b, numkeys, strlen(numkeys));
	for (int i = 0; i < q->nq; i++) {
		const struct qkeys *k = &q->k[i];
		const char *keys[6] = { k->queue, k->retry, k->scheduled,
		    k->dead, k->workers, k->paused };

		for (int j = 0; j < 6; j++)
			rq_argv_add(&b, keys[j], strlen(keys[j]));
	}
	q->sample_sent = ev_time();
	if (!b.failed && rc_command(&q->cmd, sample_cb, NULL, b.n, b.argv,
	    b.lens) == 0)
		q->sample_out = 1;
	free(b.argv);
	free(b.lens);
}
