/*
 * redisq: Redis connections on the loop. One connection carries scripts,
 * acks and dead letters; one per queue waits in BLMOVE while all are empty.
 * Ids taken are members of QUEUE:processing:WORKER, a sorted set scored by
 * the order they were taken in: every step costs O(log n) in what is held.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

#include "backoff.h"
#include "log.h"
#include "qkeys.h"
#include "redisq.h"

/* hiredis 1.0 alone took the connect callback's context without const. */
#if HIREDIS_MAJOR == 1 && HIREDIS_MINOR == 0
#define CONNECT_CB_CONST
#else
#define CONNECT_CB_CONST const
#endif

#define FETCH_BATCH	128
#define BLOCK_SECONDS	5	/* a BLMOVE returns at least this often */
#define UNBLOCK_RETRY	0.02	/* CLIENT UNBLOCK raced the BLMOVE: again */
#define QERR_RECHECK	1.0	/* a queue of the wrong type is retried */
#define PAUSE_CHECK	0.5	/* a paused queue is looked at again */

/*
 * KEYS: queue1, processing1, attempts1, paused1, queue2, ...; ARGV: most
 * ids to take, the sequence number of the first. Each id taken becomes a
 * member of the processing set scored by that sequence; a queue whose
 * QUEUE:paused exists is not taken from. Returns {paused, queue index, id,
 * failed runs so far, ...}, PAUSED a string of "0" and "1", one a queue;
 * a queue that answers with an error gives {-(index + 1), message, 0}.
 */
static const char fetch_lua[] =
	"local n = tonumber(ARGV[1])\n"
	"local seq = tonumber(ARGV[2])\n"
	"local paused = ''\n"
	"for i = 4, #KEYS, 4 do\n"
	"  paused = paused .. redis.call('EXISTS', KEYS[i])\n"
	"end\n"
	"local out = {paused}\n"
	"for i = 1, #KEYS, 4 do\n"
	"  if n == 0 then break end\n"
	"  local vs = false\n"
	"  if string.sub(paused, (i+3)/4, (i+3)/4) == '0' then\n"
	"    vs = redis.pcall('LPOP', KEYS[i], n)\n"
	"  end\n"
	"  if type(vs) == 'table' and vs.err then\n"
	"    out[#out+1] = -(i+3)/4; out[#out+1] = vs.err; out[#out+1] = 0\n"
	"  elseif vs then\n"
	"    for _, v in ipairs(vs) do\n"
	"      redis.call('ZADD', KEYS[i+1], 'NX', seq, v); seq = seq + 1\n"
	"      local a = redis.call('HGET', KEYS[i+2], v)\n"
	"      out[#out+1] = (i-1)/4; out[#out+1] = v; out[#out+1] = tonumber(a) or 0\n"
	"    end\n"
	"    n = n - #vs\n"
	"  end\n"
	"end\n"
	"return out\n";

/*
 * Puts every member of the processing set KEYS[1] back at the head of the
 * queue KEYS[2], in the order they were taken, except those in the table
 * HELD. A list there (left by a taskworkerd before 0.2) goes back whole.
 * Returns how many went back.
 */
#define GIVE_BACK_LUA \
	"local function give_back(p, q, held)\n" \
	"  if redis.call('TYPE', p).ok == 'list' then\n" \
	"    local n = 0\n" \
	"    while redis.call('LMOVE', p, q, 'RIGHT', 'LEFT') do n = n + 1 end\n" \
	"    return n\n" \
	"  end\n" \
	"  local items = redis.call('ZRANGE', p, 0, -1)\n" \
	"  local back = {}\n" \
	"  for i = 1, #items do\n" \
	"    if not held[items[i]] then back[#back+1] = items[i] end\n" \
	"  end\n" \
	"  for i = #back, 1, -1 do redis.call('LPUSH', q, back[i]) end\n" \
	"  for i = 1, #back, 1000 do\n" \
	"    redis.call('ZREM', p, unpack(back, i, math.min(i + 999, #back)))\n" \
	"  end\n" \
	"  return #back\n" \
	"end\n"

/*
 * KEYS: queue, processing; ARGV: the values held in memory. Everything
 * else in the processing set goes back to the head of the queue.
 */
static const char reconcile_lua[] =
	GIVE_BACK_LUA
	"local held = {}\n"
	"for i = 1, #ARGV do held[ARGV[i]] = true end\n"
	"return give_back(KEYS[2], KEYS[1], held)\n";

/*
 * KEYS: processing, attempts; ARGV: values. Acknowledges tasks of which
 * some ran more than once: their attempt counts go with them.
 */
static const char ack_lua[] =
	"local n = redis.call('ZREM', KEYS[1], unpack(ARGV))\n"
	"redis.call('HDEL', KEYS[2], unpack(ARGV))\n"
	"return n\n";

/*
 * KEYS: processing, retry, attempts; ARGV: the value, delay ms, failed
 * runs so far. Moves the id to the retry set, due by the server's clock.
 * An id no longer in the processing list (reclaimed) is left alone.
 */
static const char retry_lua[] =
	"if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end\n"
	"local t = redis.call('TIME')\n"
	"local due = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2])\n"
	"redis.call('ZADD', KEYS[2], due, ARGV[1])\n"
	"redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])\n"
	"return 1\n";

/*
 * KEYS: processing, dead, dead:reason, attempts; ARGV: the value, the
 * reason, dead_max. Moves the id to the dead list with its reason; past
 * dead_max the oldest go, with their reasons. Returns {moved, dropped}.
 */
static const char dead_lua[] =
	"if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return {0, 0} end\n"
	"redis.call('RPUSH', KEYS[2], ARGV[1])\n"
	"redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])\n"
	"redis.call('HDEL', KEYS[4], ARGV[1])\n"
	"local over = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[3])\n"
	"if over <= 0 then return {1, 0} end\n"
	"local old = redis.call('LPOP', KEYS[2], over)\n"
	"for _, v in ipairs(old) do\n"
	"  if v ~= ARGV[1] then redis.call('HDEL', KEYS[3], v) end\n"
	"end\n"
	"return {1, #old}\n";

/*
 * KEYS: queue, retry, scheduled; ARGV[1]: most ids per set. Ids whose
 * time has come (the server's clock, ms) go to the tail of the queue.
 * One script: an id moves once however many workers run it. Returns
 * {moved from retry, moved from scheduled}.
 */
static const char move_lua[] =
	"local t = redis.call('TIME')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"local out = {}\n"
	"for i = 2, 3 do\n"
	"  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, ARGV[1])\n"
	"  if #due > 0 then\n"
	"    redis.call('ZREM', KEYS[i], unpack(due))\n"
	"    redis.call('RPUSH', KEYS[1], unpack(due))\n"
	"  end\n"
	"  out[#out+1] = #due\n"
	"end\n"
	"return out\n";

/*
 * KEYS: queue, queue:workers, queue:heartbeat:SELF; ARGV: self, ttl ms,
 * "host=HOST pid=PID", to which " at=MS" (the server's clock) is added.
 * Renews this worker's heartbeat, then gives
 * every registered worker whose heartbeat is gone its ids back to the
 * head of the queue, in order, and forgets it. Being one script, it runs
 * once even when several workers find the same dead one. Returns
 * {worker, count, ...} for what it moved.
 */
static const char beat_lua[] =
	GIVE_BACK_LUA
	"local t = redis.call('TIME')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"redis.call('SET', KEYS[3], ARGV[3] .. ' at=' .. now, 'PX', ARGV[2])\n"
	"redis.call('SADD', KEYS[2], ARGV[1])\n"
	"local out = {}\n"
	"for _, w in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
	"  if w ~= ARGV[1] and\n"
	"      redis.call('EXISTS', KEYS[1] .. ':heartbeat:' .. w) == 0 then\n"
	"    local n = give_back(KEYS[1] .. ':processing:' .. w, KEYS[1], {})\n"
	"    redis.call('SREM', KEYS[2], w)\n"
	"    out[#out+1] = w; out[#out+1] = n\n"
	"  end\n"
	"end\n"
	"return out\n";

/*
 * KEYS: per queue: queue, processing prefix ("QUEUE:processing:"), retry,
 * scheduled, dead, workers, paused. What the metrics show of each queue,
 * in one round trip: {length, processing (every worker), retry,
 * scheduled, dead, workers alive, paused, head id or "", the earliest
 * due time in retry and in scheduled or -1, ...}, then the server's time
 * in ms. Its cost grows with the workers, never with the ids held.
 */
static const char sample_lua[] =
	"local t = redis.call('TIME')\n"
	"local out = {}\n"
	"local function first(z)\n"
	"  local r = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')\n"
	"  if #r == 0 then return -1 end\n"
	"  return tonumber(r[2])\n"
	"end\n"
	"local function size(k)\n"
	"  local ty = redis.call('TYPE', k).ok\n"
	"  if ty == 'zset' then return redis.call('ZCARD', k) end\n"
	"  if ty == 'list' then return redis.call('LLEN', k) end\n"
	"  return 0\n"
	"end\n"
	"for i = 1, #KEYS, 7 do\n"
	"  local held, alive = 0, 0\n"
	"  local hb = string.gsub(KEYS[i+1], 'processing:$', 'heartbeat:')\n"
	"  for _, w in ipairs(redis.call('SMEMBERS', KEYS[i+5])) do\n"
	"    held = held + size(KEYS[i+1] .. w)\n"
	"    alive = alive + redis.call('EXISTS', hb .. w)\n"
	"  end\n"
	"  local head = redis.call('LINDEX', KEYS[i], 0) or ''\n"
	"  out[#out+1] = size(KEYS[i]); out[#out+1] = held\n"
	"  out[#out+1] = redis.call('ZCARD', KEYS[i+2])\n"
	"  out[#out+1] = redis.call('ZCARD', KEYS[i+3])\n"
	"  out[#out+1] = size(KEYS[i+4]); out[#out+1] = alive\n"
	"  out[#out+1] = redis.call('EXISTS', KEYS[i+6]); out[#out+1] = head\n"
	"  out[#out+1] = first(KEYS[i+2]); out[#out+1] = first(KEYS[i+3])\n"
	"end\n"
	"out[#out+1] = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"return out\n";

#define SAMPLE_FIELDS	10	/* answered per queue by sample_lua */

/* KEYS: queue:workers, queue:heartbeat:SELF; ARGV: self. A clean exit. */
static const char leave_lua[] =
	"redis.call('DEL', KEYS[2])\n"
	"redis.call('SREM', KEYS[1], ARGV[1])\n"
	"return 0\n";

enum rc_state { RC_DOWN, RC_HANDSHAKE, RC_READY };

/* What this worker knows of one queue, beside its key names. */
struct qwatch {
	int is_paused;		/* the last fetch found QUEUE:paused */
	char *head;		/* the id at its head at the last sample */
	ev_tstamp head_since;	/* ... first seen there */
};

struct rconn {
	struct redisq *q;
	int qi;			/* -1: the command connection */
	char name[32];
	redisAsyncContext *ac;
	enum rc_state state;
	int handshake_left;
	int pending;		/* replies outstanding */
	ev_timer retry;
	ev_timer timeout;
	struct backoff bo;
	struct outage outage;
	long long client_id;
	int blocked;		/* a BLMOVE is out */
	int unblock_sent;
	int qerr;		/* the queue answered with an error */
};

struct redisq {
	struct ev_loop *loop;
	const struct config *cfg;
	struct stats *st;
	struct redisq_callbacks cb;
	void *arg;
	int nq;
	struct qkeys *k;		/* the keys of each queue */
	struct qwatch *qw;		/* and what is known of it */
	struct rconn cmd;
	struct rconn *blk;
	int recovered;		/* reconciled since the command conn came up */
	int need_reconcile;	/* a fetch reply was lost */
	int reconcile_left;
	int script_inflight;
	double seq;		/* take order of the next id (a Lua number) */
	struct ackreq **acks;	/* per queue: acks not sent yet */
	struct ackreq ***acks_tail;
	char *ack_retried;	/* per queue: one of them ran more than once */
	ev_prepare ack_flush;
	int moves_out;		/* mover scripts not yet answered */
	ev_timer mover;
	int known_empty;	/* the last fetch found every queue empty */
	int fetch_stopped;
	redisq_done_fn *requeue_fn;	/* set while everything goes back */
	void *requeue_arg;
	ev_timer recheck;
	ev_timer beat;
	int left;		/* said goodbye: no more heartbeats */
	int connected_once;	/* the command connection came up before */
	int npaused;		/* queues found paused */
	ev_timer pause_check;	/* while some are: is it over? */
	ev_timer sampler;
	int sample_out;
	ev_tstamp sample_sent;
	char host[256];
	struct outage move_outage;	/* the mover's last error */
	char last_error[160];	/* why the command connection is down */
};

static void rc_start(struct rconn *c);
static void move_due(struct redisq *q);
static void mover_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void quiesce(struct redisq *q);
static void send_beat(struct redisq *q);
static void beat_cb(struct ev_loop *loop, ev_timer *w, int revents);

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

/* ---- connections ---- */

static void
rc_arm_timeout(struct rconn *c)
{
	const struct config *cfg = c->q->cfg;
	double s;

	if (c->state == RC_HANDSHAKE)
		s = cfg->redis.connect_timeout_ms / 1000.0;
	else
		s = cfg->redis.command_timeout_ms / 1000.0 +
		    (c->qi >= 0 ? BLOCK_SECONDS : 0);
	ev_timer_stop(c->q->loop, &c->timeout);
	ev_timer_set(&c->timeout, s, 0.);
	ev_timer_start(c->q->loop, &c->timeout);
}

static void
state_changed(struct redisq *q)
{
	if (q->cb.on_state)
		q->cb.on_state(q->arg);
}

/* The connection is gone (already freed or being freed by hiredis). */
static void
rc_lost(struct rconn *c, const char *why)
{
	struct redisq *q = c->q;
	int delay;

	if (c->state == RC_DOWN)
		return;
	c->ac = NULL;
	c->state = RC_DOWN;
	c->pending = 0;
	c->unblock_sent = 0;
	c->blocked = 0;		/* a BLMOVE moves nothing: nothing lost */
	ev_timer_stop(q->loop, &c->timeout);
	delay = backoff_next(&c->bo);
	if (why == NULL)
		why = "connection lost";
	q->st->redis.errors++;
	if (outage_note(&c->outage, why))
		log_warnx("redis %s: %s; reconnecting", c->name, why);
	else
		log_debug("redis %s: %s; retrying in %d ms", c->name, why,
		    delay);
	if (c->qi < 0)
		snprintf(q->last_error, sizeof(q->last_error), "%s", why);
	ev_timer_set(&c->retry, delay / 1000.0, 0.);
	ev_timer_start(q->loop, &c->retry);
	if (c->qi < 0) {
		if (q->script_inflight)
			q->need_reconcile = 1;
		q->script_inflight = 0;
		q->moves_out = 0;
		ev_timer_stop(q->loop, &q->mover);
		q->recovered = 0;
		q->reconcile_left = 0;
		state_changed(q);
		if (q->requeue_fn) {
			redisq_done_fn *fn = q->requeue_fn;

			q->requeue_fn = NULL;
			fn(q->requeue_arg, 0);
		}
	}
}

/* Closes the connection on purpose; its pending callbacks see NULL. */
static void
rc_drop(struct rconn *c, const char *why)
{
	redisAsyncContext *ac = c->ac;

	rc_lost(c, why);
	if (ac)
		redisAsyncFree(ac);
}

/*
 * Every reply callback starts here. Returns the connection when the reply
 * belongs to its live context, NULL for a context being torn down.
 */
static struct rconn *
rc_reply(redisAsyncContext *ac)
{
	struct rconn *c = ac->data;

	if (c == NULL || c->ac != ac)
		return NULL;
	if (--c->pending > 0)
		rc_arm_timeout(c);
	else
		ev_timer_stop(c->q->loop, &c->timeout);
	return c;
}

static int
rc_command(struct rconn *c, redisCallbackFn *fn, void *priv, int argc,
    const char **argv, const size_t *lens)
{
	if (c->ac == NULL)
		return -1;
	if (redisAsyncCommandArgv(c->ac, fn, priv, argc, argv, lens) !=
	    REDIS_OK)
		return -1;
	if (c->pending++ == 0)
		rc_arm_timeout(c);
	return 0;
}

static void
timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct rconn *c = w->data;
	char why[96];

	(void)loop;
	(void)revents;
	snprintf(why, sizeof(why), "no answer within %d ms",
	    c->state == RC_HANDSHAKE ? c->q->cfg->redis.connect_timeout_ms :
	    c->q->cfg->redis.command_timeout_ms);
	rc_drop(c, why);
}

static void
retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	rc_start(w->data);
}

static void
connect_cb(CONNECT_CB_CONST redisAsyncContext *ac, int status)
{
	struct rconn *c = ac->data;

	if (status == REDIS_OK || c == NULL || c->ac != ac)
		return;
	/* hiredis frees the context after this returns. */
	rc_lost(c, ac->errstr[0] ? ac->errstr : "cannot connect");
}

static void
disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct rconn *c = ac->data;

	(void)status;
	if (c == NULL || c->ac != ac)
		return;
	rc_lost(c, ac->errstr[0] ? ac->errstr : "server closed the connection");
}

static int
version_ok(const char *info, char *version, size_t len)
{
	const char *p = strstr(info, "redis_version:");
	int major = 0, minor = 0;

	snprintf(version, len, "unknown");
	if (p == NULL)
		return 0;
	p += strlen("redis_version:");
	snprintf(version, len, "%.*s", (int)strcspn(p, "\r\n"), p);
	if (sscanf(p, "%d.%d", &major, &minor) != 2)
		return 0;
	return major > 6 || (major == 6 && minor >= 2);
}

static void
beat_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r;
	struct redisq *q;
	int qi = (int)(intptr_t)priv;

	if (c == NULL || reply == NULL)
		return;
	q = c->q;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_warnx("redis: heartbeat on %s failed: %s", q->k[qi].queue,
		    reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY)
		return;
	for (size_t i = 0; i + 1 < reply->elements; i += 2) {
		redisReply *w = reply->element[i], *n = reply->element[i + 1];

		if (w->type != REDIS_REPLY_STRING ||
		    n->type != REDIS_REPLY_INTEGER)
			continue;
		q->st->q[qi].reclaimed += (uint64_t)n->integer;
		log_notice("redis: worker %s has no heartbeat; %lld id(s) "
		    "from its %s:processing list went back to the head of %s",
		    w->str, n->integer, q->k[qi].queue, q->k[qi].queue);
	}
}

/* Renews the heartbeat of every queue and reclaims dead workers' ids. */
static void
send_beat(struct redisq *q)
{
	const struct config *cfg = q->cfg;
	char ttl[16], info[300];

	snprintf(ttl, sizeof(ttl), "%d", cfg->worker.heartbeat_ttl_ms);
	snprintf(info, sizeof(info), "host=%s pid=%d", q->host, (int)getpid());
	for (int qi = 0; qi < q->nq; qi++) {
		const char *argv[] = { "EVAL", beat_lua, "3", q->k[qi].queue,
		    q->k[qi].workers, q->k[qi].heartbeat, cfg->worker.id, ttl, info };

		if (rc_command(&q->cmd, beat_reply_cb, (void *)(intptr_t)qi,
		    9, argv, NULL) == -1)
			return;
	}
	ev_timer_stop(q->loop, &q->beat);
	ev_timer_set(&q->beat, cfg->worker.heartbeat_ttl_ms / 3000.0, 0.);
	ev_timer_start(q->loop, &q->beat);
}

static void
beat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct redisq *q = w->data;

	(void)loop;
	(void)revents;
	if (q->cmd.state == RC_READY && !q->left)
		send_beat(q);
}

static void
rc_ready(struct rconn *c)
{
	struct redisq *q = c->q;
	int was_down;

	c->state = RC_READY;
	backoff_reset(&c->bo);
	was_down = outage_end(&c->outage);
	if (c->qi < 0 || was_down)
		log_info("redis %s: connected%s", c->name,
		    was_down ? " again" : "");
	if (c->qi < 0) {
		stats_connected(&q->st->redis, &q->connected_once);
		/* Whatever this worker left in its lists goes back first. */
		q->need_reconcile = 1;
		send_beat(q);
		move_due(q);
		state_changed(q);
	}
	redisq_kick(q);
}

enum hs_step { HS_AUTH, HS_SELECT, HS_NAME, HS_INFO, HS_ID };

static void
handshake_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r;
	enum hs_step step = (enum hs_step)(intptr_t)priv;
	static const char *names[] = { "AUTH", "SELECT", "CLIENT SETNAME",
	    "INFO", "CLIENT ID" };
	char why[300], version[64];

	if (c == NULL || reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "%s failed: %s", names[step],
		    reply->str);
		rc_drop(c, why);
		return;
	}
	if (step == HS_INFO) {
		if (reply->type != REDIS_REPLY_STRING ||
		    !version_ok(reply->str, version, sizeof(version))) {
			snprintf(why, sizeof(why), "the Redis server at %s is "
			    "version %s; taskworkerd needs Redis 6.2 or newer "
			    "(BLMOVE, LMOVE)", c->name, reply->type ==
			    REDIS_REPLY_STRING ? version : "unknown");
			if (c->q->cb.on_fatal)
				c->q->cb.on_fatal(c->q->arg, why);
			rc_drop(c, "server too old");
			return;
		}
		log_debug("redis %s: server version %s", c->name, version);
	}
	if (step == HS_ID && reply->type == REDIS_REPLY_INTEGER)
		c->client_id = reply->integer;
	if (--c->handshake_left == 0)
		rc_ready(c);
}

static int
handshake(struct rconn *c)
{
	const struct config *cfg = c->q->cfg;
	const char *argv[3];
	char db[16], name[300];
	int n = 0;

#define HS(step, argc) do {						\
		if (rc_command(c, handshake_cb, (void *)(intptr_t)(step),	\
		    (argc), argv, NULL) == -1)				\
			return -1;					\
		n++;							\
	} while (0)

	if (cfg->redis.password[0]) {
		argv[0] = "AUTH";
		if (cfg->redis.username[0]) {
			argv[1] = cfg->redis.username;
			argv[2] = cfg->redis.password;
			HS(HS_AUTH, 3);
		} else {
			argv[1] = cfg->redis.password;
			HS(HS_AUTH, 2);
		}
	}
	if (cfg->redis.database != 0) {
		snprintf(db, sizeof(db), "%d", cfg->redis.database);
		argv[0] = "SELECT";
		argv[1] = db;
		HS(HS_SELECT, 2);
	}
	/* Client names may not hold spaces; worker ids have none. */
	snprintf(name, sizeof(name), "taskworkerd:%s:%s", cfg->worker.id,
	    c->qi < 0 ? "cmd" : "fetch");
	argv[0] = "CLIENT";
	argv[1] = "SETNAME";
	argv[2] = name;
	HS(HS_NAME, 3);
	if (c->qi < 0) {
		argv[0] = "INFO";
		argv[1] = "server";
		HS(HS_INFO, 2);
	} else {
		argv[0] = "CLIENT";
		argv[1] = "ID";
		HS(HS_ID, 2);
	}
#undef HS
	c->handshake_left = n;
	return 0;
}

static void
rc_start(struct rconn *c)
{
	const struct config *cfg = c->q->cfg;
	redisAsyncContext *ac;

	if (cfg->redis.unix_socket[0])
		ac = redisAsyncConnectUnix(cfg->redis.unix_socket);
	else
		ac = redisAsyncConnect(cfg->redis.host, cfg->redis.port);
	c->state = RC_HANDSHAKE;
	c->pending = 0;
	c->blocked = 0;
	c->unblock_sent = 0;
	if (ac == NULL) {
		rc_lost(c, "out of memory");
		return;
	}
	if (ac->err) {
		char why[160];

		snprintf(why, sizeof(why), "%s", ac->errstr);
		redisAsyncFree(ac);
		rc_lost(c, why);
		return;
	}
	c->ac = ac;
	ac->data = c;
	if (!cfg->redis.unix_socket[0])
		redisEnableKeepAlive(&ac->c);
	redisLibevAttach(c->q->loop, ac);
	redisAsyncSetConnectCallback(ac, connect_cb);
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
	if (handshake(c) == -1)
		rc_drop(c, "cannot send the handshake");
}

static void
rc_init(struct redisq *q, struct rconn *c, int qi)
{
	c->q = q;
	c->qi = qi;
	if (qi < 0)
		snprintf(c->name, sizeof(c->name), "command connection");
	else
		snprintf(c->name, sizeof(c->name), "fetch connection %d",
		    qi + 1);
	ev_init(&c->retry, retry_cb);
	c->retry.data = c;
	ev_init(&c->timeout, timeout_cb);
	c->timeout.data = c;
	backoff_init(&c->bo, q->cfg->worker.retry_min_ms,
	    q->cfg->worker.retry_max_ms,
	    (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20) ^ (qi + 7));
}

static void
rc_close(struct rconn *c)
{
	redisAsyncContext *ac = c->ac;

	c->ac = NULL;
	c->state = RC_DOWN;
	ev_timer_stop(c->q->loop, &c->retry);
	ev_timer_stop(c->q->loop, &c->timeout);
	if (ac)
		redisAsyncFree(ac);
}

/* ---- fetching ---- */

static void
reconcile_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r;
	struct redisq *q = c ? c->q : NULL;
	int qi = (int)(intptr_t)priv;

	if (c == NULL || reply == NULL)
		return;		/* the command connection was lost: again later */
	/*
	 * One queue whose key went bad (wrong type) must not hold up the
	 * others: its ids stay listed until the next recovery.
	 */
	if (reply->type == REDIS_REPLY_ERROR)
		log_warnx("redis: cannot put the ids of %s back: %s; they stay "
		    "there until the next recovery", q->k[qi].processing, reply->str);
	else if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
		log_notice("redis: %lld id(s) from %s went back to the head "
		    "of %s", reply->integer, q->k[qi].processing, q->k[qi].queue);
	if (--q->reconcile_left > 0)
		return;
	if (q->requeue_fn) {
		redisq_done_fn *fn = q->requeue_fn;

		q->requeue_fn = NULL;
		fn(q->requeue_arg, 1);
		return;
	}
	q->need_reconcile = 0;
	if (!q->recovered) {
		q->recovered = 1;
		state_changed(q);
	}
	redisq_kick(q);
}

struct argv_buf {
	const char **argv;
	size_t *lens;
	int n, cap;
	int failed;
};

static void
argv_add(void *ctx, const char *val, size_t len)
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

/*
 * Sends one reconcile script per queue. HELD is nonzero to keep the ids
 * the worker holds; zero puts everything back (shutdown).
 */
static int
send_reconcile(struct redisq *q, int held)
{
	q->reconcile_left = 0;
	for (int qi = 0; qi < q->nq; qi++) {
		struct argv_buf b = { 0 };
		int rc;

		argv_add(&b, "EVAL", 4);
		argv_add(&b, reconcile_lua, sizeof(reconcile_lua) - 1);
		argv_add(&b, "2", 1);
		argv_add(&b, q->k[qi].queue, strlen(q->k[qi].queue));
		argv_add(&b, q->k[qi].processing, strlen(q->k[qi].processing));
		if (held && q->cb.foreach_held)
			q->cb.foreach_held(q->arg, qi, argv_add, &b);
		rc = b.failed ? -1 : rc_command(&q->cmd, reconcile_cb,
		    (void *)(intptr_t)qi, b.n, b.argv, b.lens);
		free(b.argv);
		free(b.lens);
		if (rc == -1)
			return -1;
		q->reconcile_left++;
		if (!held) {
			/* Nothing of ours is left: no heartbeat to watch. */
			const char *argv[] = { "EVAL", leave_lua, "2",
			    q->k[qi].workers, q->k[qi].heartbeat, q->cfg->worker.id };

			if (rc_command(&q->cmd, reconcile_cb,
			    (void *)(intptr_t)qi, 6, argv, NULL) == -1)
				return -1;
			q->reconcile_left++;
			q->left = 1;
		}
	}
	return 0;
}

static void
unblock_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
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
static void
quiesce(struct redisq *q)
{
	if (q->cmd.state != RC_READY)
		return;
	/* A BLMOVE out moves nothing: only the fetch script is waited for. */
	if (q->script_inflight || q->reconcile_left > 0)
		return;
	if (q->requeue_fn) {
		if (send_reconcile(q, 0) == -1)
			rc_drop(&q->cmd, "cannot send the requeue");
		return;
	}
	if (q->need_reconcile && send_reconcile(q, 1) == -1)
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

/* A queue is paused: look again, so a resume is seen within PAUSE_CHECK. */
static void
pause_check_cb(struct ev_loop *loop, ev_timer *w, int revents)
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
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r;
	struct redisq *q;
	size_t got = 0, asked = (size_t)(intptr_t)priv;
	uint64_t failed = 0;	/* queues that answered with an error */

	if (c == NULL || reply == NULL)
		return;		/* rc_lost marked the need to reconcile */
	q = c->q;
	q->script_inflight = 0;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_warnx("redis: fetch failed: %s", reply->str);
		q->st->redis.errors++;
		q->known_empty = 1;
		recheck_in(q, QERR_RECHECK);
		return;
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
	    reply->element[0]->type == REDIS_REPLY_STRING)
		note_paused(q, reply->element[0]->str, reply->element[0]->len);
	if (reply->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 1; i + 2 < reply->elements; i += 3) {
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
	 * Fewer ids than asked: the script went through every queue, so one
	 * that failed before and not now is usable again (a list, or gone).
	 */
	for (int i = 0; got < asked && i < q->nq; i++)
		if (!(failed & (UINT64_C(1) << i)))
			qerr_clear(q, i);
	q->known_empty = got == 0;
	redisq_kick(q);
}

static void
block_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
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
	char nbuf[16], numkeys[16], seqbuf[32];

	snprintf(nbuf, sizeof(nbuf), "%d", n);
	snprintf(numkeys, sizeof(numkeys), "%d", 4 * q->nq);
	snprintf(seqbuf, sizeof(seqbuf), "%.0f", q->seq);
	q->seq += n;	/* numbers left unused cost nothing: only order counts */
	argv_add(&b, "EVAL", 4);
	argv_add(&b, fetch_lua, sizeof(fetch_lua) - 1);
	argv_add(&b, numkeys, strlen(numkeys));
	for (int i = 0; i < q->nq; i++) {
		argv_add(&b, q->k[i].queue, strlen(q->k[i].queue));
		argv_add(&b, q->k[i].processing, strlen(q->k[i].processing));
		argv_add(&b, q->k[i].attempts, strlen(q->k[i].attempts));
		argv_add(&b, q->k[i].paused, strlen(q->k[i].paused));
	}
	argv_add(&b, nbuf, strlen(nbuf));
	argv_add(&b, seqbuf, strlen(seqbuf));
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

	if (q->cmd.state != RC_READY)
		return;
	if (q->requeue_fn || q->need_reconcile || q->reconcile_left) {
		quiesce(q);
		return;
	}
	if (q->fetch_stopped) {
		quiesce(q);
		return;
	}
	if (q->script_inflight)
		return;
	room = q->cb.room(q->arg);
	if (room <= 0) {
		/* No slot (or PostgreSQL is away): take nothing more. */
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
		else if (q->qw[i].is_paused)
			continue;	/* it has ids: a BLMOVE would spin */
		else if (b->state == RC_READY && !b->blocked)
			send_block(b);
	}
}

static void
recheck_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct redisq *q = w->data;

	(void)loop;
	(void)revents;
	q->known_empty = 0;
	for (int i = 0; i < q->nq; i++)
		q->blk[i].unblock_sent = 0;
	redisq_kick(q);
}

/* ---- acks and dead letters ---- */

struct done_ctx {
	struct redisq *q;
	int qi;
	redisq_done_fn *fn;
	void *arg;
};

static void
done_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r;
	struct done_ctx d = *(struct done_ctx *)priv;
	int ok = reply != NULL && reply->type != REDIS_REPLY_ERROR;

	free(priv);
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

	if (q->cmd.state != RC_READY)
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


/* Acks wait here until the loop is about to block, then go together. */
struct ackreq {
	struct ackreq *next;
	redisq_done_fn *fn;
	void *arg;
	size_t len;
	char val[];
};

#define ACK_BATCH	1000	/* members of one ZREM */

struct ackbatch {
	struct redisq *q;
	struct ackreq *head;
};

static void
ack_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r;
	struct ackbatch *b = priv;
	struct ackreq *a, *next;
	int ok = reply != NULL && reply->type != REDIS_REPLY_ERROR;

	if (c && reply && reply->type == REDIS_REPLY_ERROR)
		log_warnx("redis: acknowledgement failed: %s", reply->str);
	for (a = b->head; a != NULL; a = next) {
		next = a->next;
		a->fn(a->arg, ok);
		free(a);
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
	int n = 0, retried = q->ack_retried[qi];

	if (b == NULL)
		return -1;
	if (retried) {
		argv[n] = "EVAL", lens[n++] = 4;
		argv[n] = ack_lua, lens[n++] = sizeof(ack_lua) - 1;
		argv[n] = "2", lens[n++] = 1;
		argv[n] = k->processing, lens[n++] = strlen(k->processing);
		argv[n] = k->attempts, lens[n++] = strlen(k->attempts);
	} else {
		argv[n] = "ZREM", lens[n++] = 4;
		argv[n] = k->processing, lens[n++] = strlen(k->processing);
	}
	/* Detach the first ACK_BATCH of the list; they share the reply. */
	b->q = q;
	b->head = *list;
	tail = list;
	for (int i = 0; i < ACK_BATCH && (a = *tail) != NULL; i++) {
		argv[n] = a->val;
		lens[n++] = a->len;
		tail = &a->next;
	}
	*list = *tail;
	*tail = NULL;
	if (*list == NULL)
		q->ack_retried[qi] = 0;
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

static void
ack_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
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

	if (q->cmd.state != RC_READY)
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
	if (attempts > 0)
		q->ack_retried[qi] = 1;
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
	char mbuf[16], rbuf[600];
	struct timespec ts;
	struct tm tm;
	size_t n;
	const char *argv[10] = { "EVAL", dead_lua, "4", k->processing,
	    k->dead, k->reason, k->attempts, val, rbuf, mbuf };
	size_t lens[10] = { 4, sizeof(dead_lua) - 1, 1, strlen(k->processing),
	    strlen(k->dead), strlen(k->reason), strlen(k->attempts), len, 0,
	    0 };

	/* The reason as an operator reads it: when, then why. */
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(rbuf, sizeof(rbuf), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(rbuf + n, sizeof(rbuf) - n, ".%03ldZ %s",
	    ts.tv_nsec / 1000000, reason);
	lens[8] = n < sizeof(rbuf) ? n : sizeof(rbuf) - 1;
	lens[9] = (size_t)snprintf(mbuf, sizeof(mbuf), "%d",
	    q->cfg->redis.dead_max);
	return send_done(q, qi, 10, argv, lens, fn, arg);
}

/* ---- retries and scheduled ids whose time has come ---- */

#define MOVE_INTERVAL	0.05	/* seconds between looks at the sets */
#define MOVE_BATCH	1000	/* most ids per set and script */

static void
move_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r;
	struct redisq *q;
	int qi = (int)(intptr_t)priv, more = 0;

	if (c == NULL || reply == NULL)
		return;
	q = c->q;
	q->moves_out--;
	if (reply->type == REDIS_REPLY_ERROR) {
		if (outage_note(&q->move_outage, reply->str))
			log_warnx("redis: cannot move due ids of %s: %s",
			    q->k[qi].queue, reply->str);
	} else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
		long long a = reply->element[0]->integer;
		long long b = reply->element[1]->integer;

		if (outage_end(&q->move_outage))
			log_info("redis: due ids of %s move again",
			    q->k[qi].queue);
		if (a > 0 || b > 0) {
			log_debug("redis: %lld retry and %lld scheduled id(s) "
			    "went to %s", a, b, q->k[qi].queue);
			q->known_empty = 0;
		}
		more = a >= MOVE_BATCH || b >= MOVE_BATCH;
	}
	if (q->moves_out == 0) {
		ev_timer_stop(q->loop, &q->mover);
		ev_timer_set(&q->mover, more ? 0. : MOVE_INTERVAL, 0.);
		ev_timer_start(q->loop, &q->mover);
		redisq_kick(q);
	}
}

/* One script per queue; the next round is armed once all have answered. */
static void
move_due(struct redisq *q)
{
	char nbuf[16];

	snprintf(nbuf, sizeof(nbuf), "%d", MOVE_BATCH);
	if (q->cmd.state != RC_READY || q->left || q->moves_out > 0)
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

static void
mover_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	move_due(w->data);
}

/* ---- what the metrics show of each queue ---- */

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
sample_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r, **e;
	struct redisq *q;
	long long now_ms;

	(void)priv;
	if (c == NULL || reply == NULL)
		return;
	q = c->q;
	q->sample_out = 0;
	if (reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != (size_t)q->nq * SAMPLE_FIELDS + 1) {
		if (reply->type == REDIS_REPLY_ERROR) {
			q->st->redis.errors++;
			log_warnx("redis: cannot sample the queues: %s",
			    reply->str);
		}
		return;
	}
	q->st->redis.rtt = ev_time() - q->sample_sent;
	e = reply->element;
	now_ms = int_of(e[reply->elements - 1]);
	for (int qi = 0; qi < q->nq; qi++, e += SAMPLE_FIELDS) {
		struct qsample *s = &q->st->q[qi].sample;

		s->length = int_of(e[0]);
		s->processing = int_of(e[1]);
		s->retry = int_of(e[2]);
		s->scheduled = int_of(e[3]);
		s->dead = int_of(e[4]);
		s->workers = int_of(e[5]);
		s->paused = int_of(e[6]) == 1;
		s->oldest_age = oldest_age(q, &q->qw[qi], e[7], int_of(e[8]),
		    int_of(e[9]), now_ms);
		q->st->q[qi].sampled = 1;
	}
}

static void
sampler_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct redisq *q = w->data;
	struct argv_buf b = { 0 };
	char numkeys[16];

	(void)loop;
	(void)revents;
	if (q->cmd.state != RC_READY || q->sample_out || q->left)
		return;
	snprintf(numkeys, sizeof(numkeys), "%d", 7 * q->nq);
	argv_add(&b, "EVAL", 4);
	argv_add(&b, sample_lua, sizeof(sample_lua) - 1);
	argv_add(&b, numkeys, strlen(numkeys));
	for (int i = 0; i < q->nq; i++) {
		const struct qkeys *k = &q->k[i];
		const char *keys[7] = { k->queue, k->processing_of, k->retry,
		    k->scheduled, k->dead, k->workers, k->paused };

		for (int j = 0; j < 7; j++)
			argv_add(&b, keys[j], strlen(keys[j]));
	}
	q->sample_sent = ev_time();
	if (!b.failed && rc_command(&q->cmd, sample_cb, NULL, b.n, b.argv,
	    b.lens) == 0)
		q->sample_out = 1;
	free(b.argv);
	free(b.lens);
}

/* ---- lifecycle ---- */

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
    const struct redisq_callbacks *cb, void *arg)
{
	struct redisq *q = calloc(1, sizeof(*q));
	int ok;

	if (q == NULL)
		return NULL;
	q->loop = loop;
	q->cfg = cfg;
	q->st = st;
	q->cb = *cb;
	if (gethostname(q->host, sizeof(q->host) - 1) == -1)
		snprintf(q->host, sizeof(q->host), "unknown");
	q->host[strcspn(q->host, " \t\r\n")] = '\0';
	q->arg = arg;
	q->nq = cfg->redis.nqueues;
	q->k = calloc(q->nq, sizeof(*q->k));
	q->qw = calloc(q->nq, sizeof(*q->qw));
	q->blk = calloc(q->nq, sizeof(*q->blk));
	q->acks = calloc(q->nq, sizeof(*q->acks));
	q->acks_tail = calloc(q->nq, sizeof(*q->acks_tail));
	q->ack_retried = calloc(q->nq, 1);
	ok = q->k && q->qw && q->blk && q->acks && q->acks_tail &&
	    q->ack_retried;
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
		free(q->ack_retried);
		free(q);
		return NULL;
	}
	ev_prepare_init(&q->ack_flush, ack_flush_cb);
	q->ack_flush.data = q;
	ev_timer_init(&q->recheck, recheck_cb, QERR_RECHECK, 0.);
	q->recheck.data = q;
	ev_init(&q->beat, beat_cb);
	q->beat.data = q;
	ev_init(&q->mover, mover_cb);
	q->mover.data = q;
	ev_init(&q->pause_check, pause_check_cb);
	q->pause_check.repeat = PAUSE_CHECK;
	q->pause_check.data = q;
	ev_init(&q->sampler, sampler_cb);
	q->sampler.repeat = cfg->metrics.sample_interval_ms / 1000.0;
	q->sampler.data = q;
	ev_timer_again(loop, &q->sampler);
	q->need_reconcile = 1;
	q->seq = 1;
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
	free(q->ack_retried);
	free_keys(q);
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
	backoff_limits(&q->cmd.bo, cfg->worker.retry_min_ms,
	    cfg->worker.retry_max_ms);
	for (int i = 0; i < q->nq; i++)
		backoff_limits(&q->blk[i].bo, cfg->worker.retry_min_ms,
		    cfg->worker.retry_max_ms);
	if (!changed)
		return;
	log_info("redis: connection settings changed, reconnecting");
	rc_drop(&q->cmd, "settings changed");
	for (int i = 0; i < q->nq; i++)
		rc_drop(&q->blk[i], "settings changed");
	/* Reconnect at once, not after the backoff the drop armed. */
	ev_timer_stop(q->loop, &q->cmd.retry);
	rc_start(&q->cmd);
	for (int i = 0; i < q->nq; i++) {
		ev_timer_stop(q->loop, &q->blk[i].retry);
		rc_start(&q->blk[i]);
	}
}

void
redisq_stop_fetch(struct redisq *q)
{
	q->fetch_stopped = 1;
	quiesce(q);
}

void
redisq_requeue_all(struct redisq *q, redisq_done_fn *fn, void *arg)
{
	q->fetch_stopped = 1;
	if (q->cmd.state != RC_READY) {
		fn(arg, 0);
		return;
	}
	q->requeue_fn = fn;
	q->requeue_arg = arg;
	quiesce(q);
}

int
redisq_ready(const struct redisq *q)
{
	return q->cmd.state == RC_READY && q->recovered;
}

const char *
redisq_last_error(const struct redisq *q)
{
	return q->last_error[0] ? q->last_error : NULL;
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
redisq_npaused(const struct redisq *q)
{
	return q->npaused;
}

const char *
redisq_dead_key(const struct redisq *q, int qi)
{
	return q->k[qi].dead;
}
