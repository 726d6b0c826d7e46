/*
 * redisq acks: acknowledgements in batches, retries and dead letters,
 * each answered to the worker once.
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
 * KEYS: processing, attempts; ARGV: values. Acknowledges tasks; their
 * attempt counts go with them (a copy pushed twice may have failed an
 * attempt elsewhere), unless QUEUE:attempts is of another type.
 */
static const char ack_lua[] =
	"if redis.call('TYPE', KEYS[2]).ok == 'hash' then\n"
	"  redis.call('HDEL', KEYS[2], unpack(ARGV))\n"
	"end\n"
	"return redis.call('ZREM', KEYS[1], unpack(ARGV))\n";

/*
 * KEYS: processing, retry, attempts; ARGV: the value, delay ms, failed
 * runs so far. Moves the id to the retry set, due by the server's clock.
 * An id no longer in the processing set (reclaimed) is left alone.
 */
static const char retry_lua[] =
	CHECK_LUA
	"local e = badtype(KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'hash')\n"
	"if e then return {err = e} end\n"
	"if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end\n"
	"local t = redis.call('TIME')\n"
	"local due = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2])\n"
	"redis.call('ZADD', KEYS[2], due, ARGV[1])\n"
	"redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])\n"
	"redis.call('ZREM', KEYS[1], ARGV[1])\n"
	"return 1\n";

#define DEAD_TRIM_MAX	10	/* most old ids one dead letter drops */

/*
 * KEYS: processing, dead, dead:reason, attempts; ARGV: the value, the
 * reason, dead_max, DEAD_TRIM_MAX. Moves the id to the dead list with its
 * reason; an id dead before (it has a reason) leaves its old place first,
 * so the list holds each id once and dropping the oldest (a few per call)
 * drops their reasons. Its cost grows with the list only for an id that
 * dies again. Returns {moved, dropped}.
 */
static const char dead_lua[] =
	CHECK_LUA
	"local e = badtype(KEYS[1], 'zset', KEYS[2], 'list', KEYS[3], 'hash',\n"
	"    KEYS[4], 'hash')\n"
	"if e then return {err = e} end\n"
	"if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {0, 0} end\n"
	"if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then\n"
	"  redis.call('LREM', KEYS[2], 0, ARGV[1])\n"
	"end\n"
	"redis.call('RPUSH', KEYS[2], ARGV[1])\n"
	"redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])\n"
	"redis.call('HDEL', KEYS[4], ARGV[1])\n"
	"redis.call('ZREM', KEYS[1], ARGV[1])\n"
	"local over = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[3])\n"
	"if over <= 0 then return {1, 0} end\n"
	"if over > tonumber(ARGV[4]) then over = tonumber(ARGV[4]) end\n"
	"local old = redis.call('LPOP', KEYS[2], over)\n"
	"if #old > 0 then redis.call('HDEL', KEYS[3], unpack(old)) end\n"
	"return {1, #old}\n";

struct done_ctx {
	struct redisq *q;
	int qi;
	redisq_done_fn *fn;
	void *arg;
};

static void
done_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r;
	struct done_ctx d = *(struct done_ctx *)priv;
	int ok = reply != NULL && reply->type != REDIS_REPLY_ERROR;

	free(priv);
	if (c == NULL) {
		rq_owe(d.q, d.fn, d.arg);	/* torn down, maybe in a call of ours */
		return;
	}
	if (c && reply && reply->type == REDIS_REPLY_ERROR)
		log_warnx("redis: %s", reply->str);
	/* The dead-letter script says how many old ids it dropped. */
	if (ok && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	    reply->element[1]->type == REDIS_REPLY_INTEGER &&
	    reply->element[1]->integer > 0)
		log_notice("redis: %s holds more than %d ids; dropped the "
		    "%lld oldest with their reasons", d.q->k[d.qi].dead,
		    d.q->cfg->redis.dead_max, reply->element[1]->integer);
	d.fn(d.arg, ok);
}

static int
send_done(struct redisq *q, int qi, int argc, const char **argv,
    const size_t *lens, redisq_done_fn *fn, void *arg)
{
	struct done_ctx *d;

	if (!rc_up(&q->cmd))
		return -1;
	d = malloc(sizeof(*d));
	if (d == NULL)
		return -1;
	d->q = q;
	d->qi = qi;
	d->fn = fn;
	d->arg = arg;
	if (rc_command(&q->cmd, done_cb, d, argc, argv, lens) == -1) {
		free(d);
		return -1;
	}
	return 0;
}

#define ACK_BATCH	1000	/* members of one ZREM */

struct ackbatch {
	struct redisq *q;
	int qi;
	struct ackreq *head;
};

static void
ack_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r;
	struct ackbatch *b = priv;
	struct ackreq *a, *next;
	int ok = reply != NULL && reply->type != REDIS_REPLY_ERROR;

	if (c && reply && reply->type == REDIS_REPLY_ERROR)
		log_warnx("redis: acknowledgement failed: %s", reply->str);
	for (a = b->head; a != NULL; a = next) {
		next = a->next;
		if (c == NULL)
			rq_owe(b->q, a->fn, a->arg);
		else
			a->fn(a->arg, ok);
		free(a);
	}
	/* Held back by max_in_flight: these ids free room for more. */
	if (c != NULL && ok && b->q->qw[b->qi].limited == LIMIT_IN_FLIGHT + 1) {
		b->q->known_empty = 0;
		redisq_kick(b->q);
	}
	free(b);
}

/* Sends up to ACK_BATCH acks of queue QI as one command; 0 when sent. */
static int
ack_send(struct redisq *q, int qi, struct ackreq **list)
{
	const struct qkeys *k = &q->k[qi];
	const char *argv[ACK_BATCH + 5];
	size_t lens[ACK_BATCH + 5];
	struct ackbatch *b = malloc(sizeof(*b));
	struct ackreq *a, **tail;
	int n = 0;

	if (b == NULL) {
		/* Each task hears it and acknowledges again later. */
		while ((a = *list) != NULL) {
			*list = a->next;
			a->fn(a->arg, 0);
			free(a);
		}
		return -1;
	}
	argv[n] = "EVAL", lens[n++] = 4;
	argv[n] = ack_lua, lens[n++] = sizeof(ack_lua) - 1;
	argv[n] = "2", lens[n++] = 1;
	argv[n] = k->processing, lens[n++] = strlen(k->processing);
	argv[n] = k->attempts, lens[n++] = strlen(k->attempts);
	/* Detach the first ACK_BATCH of the list; they share the reply. */
	b->q = q;
	b->qi = qi;
	b->head = *list;
	tail = list;
	for (int i = 0; i < ACK_BATCH && (a = *tail) != NULL; i++) {
		argv[n] = a->val;
		lens[n++] = a->len;
		tail = &a->next;
	}
	*list = *tail;
	*tail = NULL;
	if (rc_command(&q->cmd, ack_cb, b, n, argv, lens) == -1) {
		/* Lost: each task hears it and acknowledges again later. */
		for (a = b->head; a != NULL; a = b->head) {
			b->head = a->next;
			a->fn(a->arg, 0);
			free(a);
		}
		free(b);
		return -1;
	}
	return 0;
}

void
rq_ack_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct redisq *q = w->data;

	(void)revents;
	ev_prepare_stop(loop, w);
	for (int qi = 0; qi < q->nq; qi++) {
		struct ackreq *list = q->acks[qi];

		q->acks[qi] = NULL;
		q->acks_tail[qi] = &q->acks[qi];
		while (list != NULL)
			ack_send(q, qi, &list);
	}
}

int
redisq_ack(struct redisq *q, int qi, const char *val, size_t len,
    int attempts, redisq_done_fn *fn, void *arg)
{
	struct ackreq *a;

	if (!rc_up(&q->cmd))
		return -1;
	if ((a = malloc(sizeof(*a) + len)) == NULL)
		return -1;
	a->next = NULL;
	a->fn = fn;
	a->arg = arg;
	a->len = len;
	memcpy(a->val, val, len);
	*q->acks_tail[qi] = a;
	q->acks_tail[qi] = &a->next;
	(void)attempts;
	ev_prepare_start(q->loop, &q->ack_flush);
	return 0;
}

int
redisq_retry(struct redisq *q, int qi, const char *val, size_t len,
    int delay_ms, int attempts, redisq_done_fn *fn, void *arg)
{
	const struct qkeys *k = &q->k[qi];
	char dbuf[16], abuf[16];
	const char *argv[9] = { "EVAL", retry_lua, "3", k->processing,
	    k->retry, k->attempts, val, dbuf, abuf };
	size_t lens[9] = { 4, sizeof(retry_lua) - 1, 1, strlen(k->processing),
	    strlen(k->retry), strlen(k->attempts), len, 0, 0 };

	lens[7] = (size_t)snprintf(dbuf, sizeof(dbuf), "%d", delay_ms);
	lens[8] = (size_t)snprintf(abuf, sizeof(abuf), "%d", attempts);
	return send_done(q, qi, 9, argv, lens, fn, arg);
}

int
redisq_dead(struct redisq *q, int qi, const char *val, size_t len,
    const char *reason, redisq_done_fn *fn, void *arg)
{
	const struct qkeys *k = &q->k[qi];
	char mbuf[16], rbuf[600], trim[16];
	struct timespec ts;
	struct tm tm;
	size_t n;
	const char *argv[11] = { "EVAL", dead_lua, "4", k->processing,
	    k->dead, k->reason, k->attempts, val, rbuf, mbuf, trim };
	size_t lens[11] = { 4, sizeof(dead_lua) - 1, 1, strlen(k->processing),
	    strlen(k->dead), strlen(k->reason), strlen(k->attempts), len, 0,
	    0, 0 };

	/* The reason as an operator reads it: when, then why. */
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(rbuf, sizeof(rbuf), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(rbuf + n, sizeof(rbuf) - n, ".%03ldZ %s",
	    ts.tv_nsec / 1000000, reason);
	lens[8] = n < sizeof(rbuf) ? n : sizeof(rbuf) - 1;
	lens[9] = (size_t)snprintf(mbuf, sizeof(mbuf), "%d",
	    q->cfg->redis.dead_max);
	lens[10] = (size_t)snprintf(trim, sizeof(trim), "%d", DEAD_TRIM_MAX);
	return send_done(q, qi, 11, argv, lens, fn, arg);
}
