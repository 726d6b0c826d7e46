/*
 * redisq: Redis connections on the loop. One connection carries scripts,
 * acks and dead letters; one per queue waits in BLMOVE while all are empty.
 * Ids taken are members of QUEUE:processing:WORKER, a sorted set scored by
 * the order they were taken in: every step costs O(log n) in what is held.
 */
#include <sys/stat.h>

#include <errno.h>
#include <signal.h>
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
#define FETCH_DOWN_RECHECK 1.0	/* a queue whose BLMOVE connection is down */

/*
 * Lua shared by the scripts. A script that moves an id checks the type of
 * every key it touches before its first write, and writes the destination
 * before it removes the source: Redis does not roll back a script that
 * fails halfway, so one that cannot complete must fail before it writes.
 * BADTYPE(key, type, ...) names the first key of another type, or nil.
 * COUNT(v) reads an attempt count, bounded, whatever the key held.
 */
#define CHECK_LUA \
	"local function badtype(...)\n" \
	"  local a = {...}\n" \
	"  for i = 1, #a, 2 do\n" \
	"    local ty = redis.call('TYPE', a[i]).ok\n" \
	"    if ty ~= 'none' and ty ~= a[i+1] then\n" \
	"      return 'WRONGTYPE ' .. a[i] .. ' holds a ' .. ty .. ', not a ' .. a[i+1]\n" \
	"    end\n" \
	"  end\n" \
	"  return nil\n" \
	"end\n" \
	"local function count(v)\n" \
	"  v = tonumber(v)\n" \
	"  if v == nil or v ~= v or v < 0 then return 0 end\n" \
	"  if v > 1000000 then return 1000000 end\n" \
	"  return math.floor(v)\n" \
	"end\n"

/*
 * KEYS: queue1, processing1, attempts1, paused1, queue2, ...; ARGV: most
 * ids to take, the sequence number of the first, and a string of "0" and
 * "1", one a queue: "1" skips it (its recovery is pending). Each id taken
 * becomes a
 * member of the processing set scored by that sequence (before it leaves
 * the queue); a queue whose QUEUE:paused exists is not taken from.
 * Returns {paused, queue index, id, failed runs so far, ...}, PAUSED a
 * string of "0" and "1", one a queue; a queue whose keys are of the wrong
 * type gives {-(index + 1), message, 0} and is left as it is.
 */
static const char fetch_lua[] =
	CHECK_LUA
	"local n = tonumber(ARGV[1])\n"
	"local seq = tonumber(ARGV[2])\n"
	"local paused = ''\n"
	"for i = 4, #KEYS, 4 do\n"
	"  paused = paused .. redis.call('EXISTS', KEYS[i])\n"
	"end\n"
	"local out = {paused}\n"
	"for i = 1, #KEYS, 4 do\n"
	"  if n == 0 then break end\n"
	"  local qi = (i - 1) / 4\n"
	"  if string.sub(paused, qi + 1, qi + 1) == '0' and\n"
	"      string.sub(ARGV[3], qi + 1, qi + 1) ~= '1' then\n"
	"    local e = badtype(KEYS[i], 'list', KEYS[i+1], 'zset', KEYS[i+2], 'hash')\n"
	"    if e then\n"
	"      out[#out+1] = -(qi + 1); out[#out+1] = e; out[#out+1] = 0\n"
	"    else\n"
	"      local vs = redis.call('LRANGE', KEYS[i], 0, n - 1)\n"
	"      for _, v in ipairs(vs) do\n"
	"        redis.call('ZADD', KEYS[i+1], 'NX', seq, v); seq = seq + 1\n"
	"        out[#out+1] = qi; out[#out+1] = v\n"
	"        out[#out+1] = count(redis.call('HGET', KEYS[i+2], v))\n"
	"      end\n"
	"      if #vs > 0 then redis.call('LTRIM', KEYS[i], #vs, -1) end\n"
	"      n = n - #vs\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return out\n";

/*
 * Puts every member of the processing set P back at the head of the
 * queue Q, in the order they were taken, except those in the table HELD.
 * A list there (left by a taskworkerd before 0.2) goes back whole.
 * Returns how many went back, or nil and why when a key has the wrong
 * type (nothing moved).
 */
#define GIVE_BACK_LUA \
	"local function give_back(p, q, held)\n" \
	"  local ty = redis.call('TYPE', p).ok\n" \
	"  if ty == 'none' then return 0 end\n" \
	"  if ty ~= 'zset' and ty ~= 'list' then\n" \
	"    return nil, 'WRONGTYPE ' .. p .. ' holds a ' .. ty .. ', not a zset'\n" \
	"  end\n" \
	"  local e = badtype(q, 'list')\n" \
	"  if ty == 'list' then\n" \
	"    if e then return nil, e end\n" \
	"    local n = 0\n" \
	"    while redis.call('LMOVE', p, q, 'RIGHT', 'LEFT') do n = n + 1 end\n" \
	"    return n\n" \
	"  end\n" \
	"  local items = redis.call('ZRANGE', p, 0, -1)\n" \
	"  local back = {}\n" \
	"  for i = 1, #items do\n" \
	"    if not held[items[i]] then back[#back+1] = items[i] end\n" \
	"  end\n" \
	"  if #back == 0 then return 0 end\n" \
	"  if e then return nil, e end\n" \
	"  for i = #back, 1, -1 do redis.call('LPUSH', q, back[i]) end\n" \
	"  for i = 1, #back, 1000 do\n" \
	"    redis.call('ZREM', p, unpack(back, i, math.min(i + 999, #back)))\n" \
	"  end\n" \
	"  return #back\n" \
	"end\n"

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

/*
 * KEYS: queue:workers, queue:heartbeat:SELF; ARGV: self, ttl ms,
 * "host=HOST pid=PID" (to which " at=MS", the server's clock, is added),
 * "1" to take over a heartbeat another holder left. Renews this worker's
 * heartbeat unless another daemon with the same worker id holds it:
 * then {"held", its value, its PTTL} and nothing is written. The renewal
 * is a PEXPIRE first, a write Redis allows under maxmemory, after which
 * the script's other writes are allowed too: a heartbeat survives OOM.
 * Returns {"ok", every other registered worker...}.
 */
static const char beat_lua[] =
	CHECK_LUA
	"local e = badtype(KEYS[1], 'set', KEYS[2], 'string')\n"
	"if e then return {err = e} end\n"
	"local cur = redis.call('GET', KEYS[2])\n"
	"if cur then\n"
	"  local holder = string.match(cur, '^(.-) at=') or cur\n"
	"  if holder ~= ARGV[3] and ARGV[4] ~= '1' then\n"
	"    return {'held', cur, redis.call('PTTL', KEYS[2])}\n"
	"  end\n"
	"  redis.call('PEXPIRE', KEYS[2], ARGV[2])\n"
	"end\n"
	"local t = redis.call('TIME')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"redis.call('SET', KEYS[2], ARGV[3] .. ' at=' .. now, 'PX', ARGV[2])\n"
	"redis.call('SADD', KEYS[1], ARGV[1])\n"
	"local out = {'ok'}\n"
	"for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
	"  if w ~= ARGV[1] then out[#out+1] = w end\n"
	"end\n"
	"return out\n";

/*
 * KEYS: queue, queue:workers, then per worker its processing set and its
 * heartbeat; ARGV: the workers. Gives every worker whose heartbeat is
 * gone its ids back to the head of the queue, in order, and forgets it.
 * Being one script, it runs once even when several workers find the same
 * dead one. Returns {worker, count, ...} for what it moved, and {worker,
 * -1, why} for one whose keys are of the wrong type (left registered).
 */
static const char reclaim_lua[] =
	CHECK_LUA
	GIVE_BACK_LUA
	"local out = {}\n"
	"for j = 1, #ARGV do\n"
	"  local p, hb = KEYS[2 * j + 1], KEYS[2 * j + 2]\n"
	"  if redis.call('EXISTS', hb) == 0 and\n"
	"      redis.call('SISMEMBER', KEYS[2], ARGV[j]) == 1 then\n"
	"    local n, e = give_back(p, KEYS[1], {})\n"
	"    if e then\n"
	"      out[#out+1] = ARGV[j]; out[#out+1] = -1; out[#out+1] = e\n"
	"    else\n"
	"      redis.call('SREM', KEYS[2], ARGV[j])\n"
	"      out[#out+1] = ARGV[j]; out[#out+1] = n; out[#out+1] = ''\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return out\n";

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

enum rc_state { RC_DOWN, RC_HANDSHAKE, RC_READY };

/* What this worker knows of one queue, beside its key names. */
/* An answer owed to a request whose connection was torn down. */
struct owed {
	redisq_done_fn *fn;
	void *arg;
};

struct qwatch {
	int is_paused;		/* the last fetch found QUEUE:paused */
	char *head;		/* the id at its head at the last sample */
	ev_tstamp head_since;	/* ... first seen there */
	struct outage move_outage;	/* why its due ids cannot move */
	/*
	 * Its processing set may hold ids not in memory (a fetch reply lost,
	 * a reconnect): reconciled before anything is taken from it again.
	 */
	int unrecovered;
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
	int need_reconcile;	/* some queue's unrecovered is set */
	int reconcile_left;
	int reconcile_all;	/* the reconcile out gives everything back */
	int reconcile_failed;	/* ... and some queue answered an error */
	int reconcile_wait;	/* it failed: again at the next recheck */
	int fetch_wait;		/* the fetch script failed: likewise */
	struct outage reconcile_outage;
	/*
	 * The heartbeats of this worker id: held (all queues), or held by
	 * another daemon since CONTEST_SINCE (0: not seen so).
	 */
	int claimed;
	uint64_t claimed_mask;
	ev_tstamp contest_since;
	int contest_fatal;	/* told the owner: no more beats */
	int beat_failed;	/* the last heartbeat answered an error */
	struct outage beat_outage;
	char holder[400];	/* "host=H pid=P boot=B pidns=N nonce=X" */
	/* What the owner hears on the next loop turn, never inside its call. */
	ev_timer defer;
	int defer_state;	/* readiness changed */
	int defer_requeue;	/* -1, or the answer owed to requeue_fn */
	char *fatal_why;	/* on_fatal owed */
	int fatal_code;
	int fatal_told;
	struct owed *owed;	/* answers owed: see owe() */
	size_t nowed, owed_cap;
	int script_inflight;
	double seq;		/* take order of the next id (a Lua number) */
	struct ackreq **acks;	/* per queue: acks not sent yet */
	struct ackreq ***acks_tail;
	ev_prepare ack_flush;
	int moves_out;		/* mover scripts not yet answered */
	int move_failed;	/* one of them: the next round waits longer */
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
	struct qsample *sample_next;	/* per queue: the sample being taken */
	int *sample_nworkers;	/* ... and the workers asked of it */
	char host[256];
	struct outage fetch_outage;	/* the fetch script's */
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

/* Every processing set is reconciled before the next fetch. */
static void
need_recovery(struct redisq *q)
{
	q->need_reconcile = 1;
	for (int i = 0; i < q->nq; i++)
		q->qw[i].unrecovered = 1;
}

/* The owner hears it on the next loop turn (see defer_cb). */
static void
defer(struct redisq *q)
{
	if (!ev_is_active(&q->defer))
		ev_timer_start(q->loop, &q->defer);
}

static void
state_changed(struct redisq *q)
{
	q->defer_state = 1;
	defer(q);
}

/* The answer owed to redisq_requeue_all. */
static void
requeue_answer(struct redisq *q, int ok)
{
	if (q->requeue_fn == NULL || q->defer_requeue >= 0)
		return;
	q->defer_requeue = ok;
	defer(q);
}

/*
 * A request's answer while its connection is torn down: hiredis runs the
 * callbacks of a context it frees at once, maybe inside a call the owner
 * made (a reload). It is told "not done" on the next loop turn.
 */
static void
owe(struct redisq *q, redisq_done_fn *fn, void *arg)
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
	defer(q);
}

/* Something no retry fixes: the owner is told once, then exits CODE. */
static void
fatal(struct redisq *q, int code, const char *why)
{
	if (q->fatal_why != NULL)
		return;
	q->fatal_code = code;
	q->fatal_why = strdup(why);
	if (q->fatal_why == NULL)
		q->fatal_why = strdup("out of memory");
	defer(q);
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
			need_recovery(q);
		q->script_inflight = 0;
		q->moves_out = 0;
		ev_timer_stop(q->loop, &q->mover);
		q->recovered = 0;
		q->reconcile_left = 0;
		q->reconcile_all = 0;
		q->claimed = 0;
		q->claimed_mask = 0;
		q->sample_out = 0;
		state_changed(q);
		requeue_answer(q, 0);
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
reclaim_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r;
	struct redisq *q;
	int qi = (int)(intptr_t)priv;

	if (c == NULL || reply == NULL)
		return;
	q = c->q;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_warnx("redis: cannot reclaim the ids of dead workers of "
		    "%s: %s", q->k[qi].queue, reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY)
		return;
	for (size_t i = 0; i + 2 < reply->elements; i += 3) {
		redisReply *w = reply->element[i], *n = reply->element[i + 1];
		redisReply *e = reply->element[i + 2];

		if (w->type != REDIS_REPLY_STRING ||
		    n->type != REDIS_REPLY_INTEGER)
			continue;
		if (n->integer < 0) {
			log_warnx("redis: worker %s has no heartbeat, but its "
			    "ids cannot go back to %s: %s", w->str,
			    q->k[qi].queue, e->type == REDIS_REPLY_STRING ?
			    e->str : "?");
			continue;
		}
		q->st->q[qi].reclaimed += (uint64_t)n->integer;
		log_notice("redis: worker %s has no heartbeat; %lld id(s) "
		    "from its %s:processing set went back to the head of %s",
		    w->str, n->integer, q->k[qi].queue, q->k[qi].queue);
	}
}

/*
 * The key PREFIX + W (a worker's processing set or heartbeat), byte for
 * byte: a worker id may hold any byte. *LEN its length; NULL: no memory.
 */
static char *
worker_key(const char *prefix, const redisReply *w, size_t *len)
{
	size_t pl = strlen(prefix);
	char *k;

	if (w->type != REDIS_REPLY_STRING || (k = malloc(pl + w->len + 1)) ==
	    NULL)
		return NULL;
	memcpy(k, prefix, pl);
	memcpy(k + pl, w->str, w->len);
	k[pl + w->len] = '\0';
	*len = pl + w->len;
	return k;
}

/*
 * The other workers registered on queue QI (the beat's reply from
 * element FROM on): each whose heartbeat is gone gives its ids back.
 */
static void
send_reclaim(struct redisq *q, int qi, redisReply **w, size_t n)
{
	const struct qkeys *k = &q->k[qi];
	struct argv_buf b = { 0 };
	char numkeys[16];
	char **names;

	if (n == 0)
		return;
	if ((names = calloc(2 * n, sizeof(*names))) == NULL)
		return;
	snprintf(numkeys, sizeof(numkeys), "%zu", 2 + 2 * n);
	argv_add(&b, "EVAL", 4);
	argv_add(&b, reclaim_lua, sizeof(reclaim_lua) - 1);
	argv_add(&b, numkeys, strlen(numkeys));
	argv_add(&b, k->queue, strlen(k->queue));
	argv_add(&b, k->workers, strlen(k->workers));
	for (size_t i = 0; i < n; i++) {
		size_t pl = 0, hl = 0;

		names[2 * i] = worker_key(k->processing_of, w[i], &pl);
		names[2 * i + 1] = worker_key(k->heartbeat_of, w[i], &hl);
		if (names[2 * i] == NULL || names[2 * i + 1] == NULL) {
			b.failed = 1;
			break;
		}
		argv_add(&b, names[2 * i], pl);
		argv_add(&b, names[2 * i + 1], hl);
	}
	for (size_t i = 0; i < n; i++)
		argv_add(&b, w[i]->str, w[i]->len);
	if (!b.failed)
		rc_command(&q->cmd, reclaim_reply_cb, (void *)(intptr_t)qi,
		    b.n, b.argv, b.lens);
	for (size_t i = 0; i < 2 * n; i++)
		free(names[i]);
	free(names);
	free(b.argv);
	free(b.lens);
}

static void send_beat_one(struct redisq *q, int qi, int force);

/* Where "KEY=" starts in a heartbeat's value, and its length. */
static const char *
field_of(const char *v, const char *key, size_t *len)
{
	size_t kl = strlen(key);

	for (const char *p = v; p != NULL && *p; p = strchr(p, ' ')) {
		while (*p == ' ')
			p++;
		if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
			p += kl + 1;
			*len = strcspn(p, " ");
			return p;
		}
	}
	return NULL;
}

/* The field KEY is in both values, and the same. */
static int
same_field(const char *a, const char *b, const char *key)
{
	size_t la, lb;
	const char *pa = field_of(a, key, &la), *pb = field_of(b, key, &lb);

	return pa != NULL && pb != NULL && la == lb && memcmp(pa, pb, la) == 0;
}

static long long
holder_field(const char *v, const char *key)
{
	size_t len;
	const char *p = field_of(v, key, &len);
	char buf[24];

	if (p == NULL || len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, p, len);
	buf[len] = '\0';
	return strtoll(buf, NULL, 10);
}

/*
 * Who this daemon is, as its heartbeats say: no two live daemons share
 * it, even in containers with one host name and the same pid.
 */
static void
make_holder(struct redisq *q)
{
	char boot[64] = "unknown";
	unsigned long long nonce = 0, ns = 0;
	struct stat sb;
	FILE *f;

	if ((f = fopen("/proc/sys/kernel/random/boot_id", "r")) != NULL) {
		if (fgets(boot, sizeof(boot), f) == NULL)
			snprintf(boot, sizeof(boot), "unknown");
		boot[strcspn(boot, " \t\r\n")] = '\0';
		fclose(f);
	}
	if (stat("/proc/self/ns/pid", &sb) == 0)
		ns = (unsigned long long)sb.st_ino;
	if ((f = fopen("/dev/urandom", "r")) != NULL) {
		if (fread(&nonce, sizeof(nonce), 1, f) != 1)
			nonce = 0;
		fclose(f);
	}
	if (nonce == 0)
		nonce = (unsigned long long)time(NULL) ^
		    ((unsigned long long)getpid() << 32) ^
		    (unsigned long long)(uintptr_t)q;
	snprintf(q->holder, sizeof(q->holder), "host=%s pid=%d boot=%s "
	    "pidns=%llu nonce=%016llx", q->host, (int)getpid(), boot, ns,
	    nonce);
}

/*
 * Another daemon holds the heartbeat of this worker id on queue QI: VAL,
 * "host=H pid=P at=MS". Our own previous life (this host, a pid that no
 * longer runs) is taken over at once; a live holder is waited for as
 * long as a heartbeat lives, then this daemon gives up.
 */
static void
contested(struct redisq *q, int qi, const char *val)
{
	const struct config *cfg = q->cfg;
	char why[600];
	long long pid = holder_field(val, "pid");
	int ms = cfg->worker.heartbeat_ttl_ms;
	ev_tstamp now = ev_now(q->loop);

	/*
	 * Our own previous life: the same host, kernel boot and pid
	 * namespace (two containers may share a host name and a pid), and a
	 * pid that no longer runs.
	 */
	if (same_field(val, q->holder, "host") &&
	    same_field(val, q->holder, "boot") &&
	    same_field(val, q->holder, "pidns") && pid > 0 &&
	    pid <= INT32_MAX && pid != getpid() &&
	    kill((pid_t)pid, 0) == -1 && errno == ESRCH) {
		log_notice("redis: the heartbeat of worker %s on %s was left "
		    "by pid %lld of this host, which is gone; taking it over",
		    cfg->worker.id, q->k[qi].queue, pid);
		send_beat_one(q, qi, 1);
		return;
	}
	if (q->contest_since == 0) {
		q->contest_since = now;
		log_warnx("redis: worker id %s is held by another daemon "
		    "(%s) on %s; taking no ids while waiting up to %d ms for "
		    "its heartbeat to lapse", cfg->worker.id, val,
		    q->k[qi].queue, ms);
		state_changed(q);
		quiesce(q);	/* a shutdown waiting for the claim gives up */
		return;
	}
	if ((now - q->contest_since) * 1000 < ms + 1000)
		return;
	snprintf(why, sizeof(why), "worker id %s is in use by a live daemon "
	    "(%s): its heartbeat %s was renewed for %d ms; give this daemon "
	    "another worker.id", cfg->worker.id, val, q->k[qi].heartbeat,
	    ms);
	q->contest_fatal = 1;
	fatal(q, 78, why);
}

static void
beat_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
	redisReply *reply = r, *tag;
	struct redisq *q;
	int qi = (int)(intptr_t)priv;

	if (c == NULL || reply == NULL)
		return;
	q = c->q;
	if (reply->type == REDIS_REPLY_ERROR) {
		q->st->redis.errors++;
		if (outage_note(&q->beat_outage, reply->str))
			log_warnx("redis: heartbeat on %s failed: %s; trying "
			    "again", q->k[qi].queue, reply->str);
		q->beat_failed = 1;
		quiesce(q);	/* a shutdown waiting for the claim gives up */
		return;
	}
	q->beat_failed = 0;
	if (outage_end(&q->beat_outage))
		log_info("redis: heartbeats are renewed again");
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
	    (tag = reply->element[0])->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(tag->str, "held") == 0 && reply->elements >= 2 &&
	    reply->element[1]->type == REDIS_REPLY_STRING) {
		int was = q->claimed;

		q->claimed = 0;
		q->claimed_mask &= ~(UINT64_C(1) << qi);
		if (was)
			state_changed(q);
		contested(q, qi, reply->element[1]->str);
		return;
	}
	if (strcmp(tag->str, "ok") != 0)
		return;
	send_reclaim(q, qi, reply->element + 1, reply->elements - 1);
	q->claimed_mask |= UINT64_C(1) << qi;
	if (q->claimed || q->claimed_mask != (q->nq == 64 ? ~UINT64_C(0) :
	    (UINT64_C(1) << q->nq) - 1))
		return;
	if (q->contest_since != 0)
		log_notice("redis: worker id %s is ours now", q->cfg->worker.id);
	q->contest_since = 0;
	q->claimed = 1;
	/* What another holder left in the set goes back first. */
	need_recovery(q);
	redisq_kick(q);
}

static void
send_beat_one(struct redisq *q, int qi, int force)
{
	const struct config *cfg = q->cfg;
	char ttl[16];
	const char *argv[] = { "EVAL", beat_lua, "2", q->k[qi].workers,
	    q->k[qi].heartbeat, cfg->worker.id, ttl, q->holder,
	    force ? "1" : "0" };

	snprintf(ttl, sizeof(ttl), "%d", cfg->worker.heartbeat_ttl_ms);
	rc_command(&q->cmd, beat_reply_cb, (void *)(intptr_t)qi, 9, argv, NULL);
}

/*
 * Renews the heartbeat of every queue and reclaims dead workers' ids;
 * while another daemon holds this worker id, looks again every second.
 */
static void
send_beat(struct redisq *q)
{
	double every = q->cfg->worker.heartbeat_ttl_ms / 3000.0;

	if (q->contest_fatal)
		return;
	for (int qi = 0; qi < q->nq; qi++)
		send_beat_one(q, qi, 0);
	if (!q->claimed && every > 1.0)
		every = 1.0;
	ev_timer_stop(q->loop, &q->beat);
	ev_timer_set(&q->beat, every, 0.);
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
		need_recovery(q);
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
			fatal(c->q, 70, why);
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
			requeue_answer(q, 0);
			return;
		}
		/* The others are served meanwhile; this one is not. */
		q->reconcile_wait = 1;	/* until recheck_cb */
		recheck_in(q, QERR_RECHECK);
		if (!q->recovered) {
			q->recovered = 1;
			state_changed(q);
		}
		redisq_kick(q);
		return;
	}
	if (outage_end(&q->reconcile_outage))
		log_info("redis: the ids held are reconciled again");
	if (q->reconcile_all) {
		q->reconcile_all = 0;
		q->left = 1;
		requeue_answer(q, 1);
		return;
	}
	q->need_reconcile = 0;
	if (!q->recovered) {
		q->recovered = 1;
		state_changed(q);
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

		argv_add(&b, "EVAL", 4);
		argv_add(&b, reconcile_lua, sizeof(reconcile_lua) - 1);
		argv_add(&b, held ? "2" : "4", 1);
		argv_add(&b, k->queue, strlen(k->queue));
		argv_add(&b, k->processing, strlen(k->processing));
		if (!held) {
			argv_add(&b, k->workers, strlen(k->workers));
			argv_add(&b, k->heartbeat, strlen(k->heartbeat));
		}
		argv_add(&b, q->cfg->worker.id, strlen(q->cfg->worker.id));
		if (held && !q->qw[qi].unrecovered)
			continue;
		if (held && q->cb.foreach_held)
			q->cb.foreach_held(q->arg, qi, argv_add, &b);
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
	if (q->cmd.state != RC_READY || q->defer_requeue >= 0)
		return;
	/* A BLMOVE out moves nothing: only the fetch script is waited for. */
	if (q->script_inflight || q->reconcile_left > 0)
		return;
	/* Until this worker id is ours, its processing sets are not. */
	if (!q->claimed) {
		if (q->requeue_fn && (q->contest_since != 0 || q->beat_failed))
			requeue_answer(q, 0);
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
		need_recovery(q);
		q->fetch_wait = 1;	/* until recheck_cb */
		recheck_in(q, QERR_RECHECK);
		return;
	}
	if (outage_end(&q->fetch_outage))
		log_info("redis: fetching again");
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
	/* redis.queues holds at most 64 (config.c). */
	char nbuf[16], numkeys[16], seqbuf[32], skip[64 + 1];

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
	for (int i = 0; i < q->nq && i < (int)sizeof(skip) - 1; i++)
		skip[i] = q->qw[i].unrecovered ? '1' : '0';
	skip[q->nq < (int)sizeof(skip) - 1 ? q->nq : (int)sizeof(skip) - 1] =
	    '\0';
	argv_add(&b, skip, strlen(skip));
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
	if (!q->claimed || q->requeue_fn || q->reconcile_left ||
	    (q->need_reconcile && !q->reconcile_wait)) {
		quiesce(q);
		return;
	}
	if (q->fetch_stopped) {
		quiesce(q);
		return;
	}
	if (q->script_inflight || q->fetch_wait)
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
		else if (q->qw[i].is_paused || q->qw[i].unrecovered)
			continue;	/* it has ids: a BLMOVE would spin */
		else if (b->state == RC_READY && !b->blocked)
			send_block(b);
		else if (b->state != RC_READY)
			recheck_in(q, FETCH_DOWN_RECHECK);	/* polled */
	}
}

static void
recheck_cb(struct ev_loop *loop, ev_timer *w, int revents)
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
	if (c == NULL) {
		owe(d.q, d.fn, d.arg);	/* torn down, maybe in a call of ours */
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
		if (c == NULL)
			owe(b->q, a->fn, a->arg);
		else
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

/* ---- retries and scheduled ids whose time has come ---- */

#define MOVE_INTERVAL	0.05	/* seconds between looks at the sets */
#define MOVE_BATCH	1000	/* most ids per set and script */

static void
move_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac);
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
	struct rconn *c = rc_reply(ac);
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
	struct rconn *c = rc_reply(ac);
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
	argv_add(&b, "EVAL", 4);
	argv_add(&b, held_lua, sizeof(held_lua) - 1);
	argv_add(&b, numkeys, strlen(numkeys));
	e = reply->element;
	for (int qi = 0; names && !b.failed && qi < q->nq; qi++,
	    e += SAMPLE_FIELDS) {
		for (int j = 0; j < q->sample_nworkers[qi]; j++) {
			const redisReply *w = e[8]->element[j];
			size_t pl = 0, hl = 0;

			names[n] = worker_key(q->k[qi].processing_of, w, &pl);
			names[n + 1] = worker_key(q->k[qi].heartbeat_of, w,
			    &hl);
			if (names[n] == NULL || names[n + 1] == NULL) {
				b.failed = 1;
				break;
			}
			argv_add(&b, names[n], pl);
			argv_add(&b, names[n + 1], hl);
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
	snprintf(numkeys, sizeof(numkeys), "%d", 6 * q->nq);
	argv_add(&b, "EVAL", 4);
	argv_add(&b, sample_lua, sizeof(sample_lua) - 1);
	argv_add(&b, numkeys, strlen(numkeys));
	for (int i = 0; i < q->nq; i++) {
		const struct qkeys *k = &q->k[i];
		const char *keys[6] = { k->queue, k->retry, k->scheduled,
		    k->dead, k->workers, k->paused };

		for (int j = 0; j < 6; j++)
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
	make_holder(q);
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
	need_recovery(q);
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
	free(q->sample_next);
	free(q->sample_nworkers);
	free(q->fatal_why);
	free(q->owed);
	ev_timer_stop(q->loop, &q->defer);
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
	q->requeue_fn = fn;
	q->requeue_arg = arg;
	if (q->cmd.state != RC_READY) {
		requeue_answer(q, 0);	/* on the next loop turn */
		return;
	}
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
