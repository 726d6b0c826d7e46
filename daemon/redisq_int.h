/*
 * redisq_int: what the files of redisq share: its state, the connections,
 * the Lua they all use, and the functions one file calls in another.
 */
#ifndef TASKWORKERD_REDISQ_INT_H
#define TASKWORKERD_REDISQ_INT_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "backoff.h"
#include "log.h"
#include "qkeys.h"
#include "rconnect.h"
#include "link.h"
#include "redisq.h"
#include "resolve.h"
#include "rhello.h"
#include "sentinel.h"


#define FETCH_BATCH	128
#define BLOCK_SECONDS	5	/* a BLMOVE returns at least this often */
#define UNBLOCK_RETRY	0.02	/* CLIENT UNBLOCK raced the BLMOVE: again */
#define QERR_RECHECK	1.0	/* a queue of the wrong type is retried */
#define PAUSE_CHECK	0.5	/* a paused queue is looked at again */
#define FETCH_DOWN_RECHECK 1.0	/* a queue whose BLMOVE connection is down */
#define IN_FLIGHT_RECHECK 0.025	/* a queue at max_in_flight: others' acks */

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

/* What this worker knows of one queue, beside its key names. */
/* An answer owed to a request whose connection was torn down. */
struct owed {
	redisq_done_fn *fn;
	void *arg;
};

/* Another worker registered on a queue, and its processing set. */
struct peer {
	char *name;
	size_t len;
	char *processing;
	size_t plen;
};

struct qwatch {
	int is_paused;		/* the last fetch found QUEUE:paused */
	/*
	 * A limit said no at the last fetch: LIMIT_RATE + 1 (no id before
	 * LIMITED_UNTIL, ev_now) or LIMIT_IN_FLIGHT + 1 (HELD ids held by
	 * every worker); 0 when none did.
	 */
	int limited;
	ev_tstamp limited_until;
	long long held;
	int skipped;		/* the fetch out does not look at it */
	/* The other workers of QUEUE:workers, as the fetch names them. */
	struct peer *peers;
	size_t npeers;
	char *head;		/* the id at its head at the last sample */
	ev_tstamp head_since;	/* ... first seen there */
	struct outage move_outage;	/* why its due ids cannot move */
	/*
	 * Its processing set may hold ids not in memory (a fetch reply lost,
	 * a reconnect): reconciled before anything is taken from it again.
	 */
	int unrecovered;
};

/* Acks wait here until the loop is about to block, then go together. */
struct ackreq {
	struct ackreq *next;
	redisq_done_fn *fn;
	void *arg;
	size_t len;
	char val[];
};

struct rconn {
	struct redisq *q;
	int qi;			/* -1: the command connection */
	struct link link;
	redisAsyncContext *ac;
	struct rhello_cmd hello[RHELLO_MAX];	/* the handshake sent */
	struct rhello_buf hello_buf;
	char host[256];		/* where it connects: the master, or the host */
	int port;
	int handshake_left;
	int pending;		/* replies outstanding */
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
	struct owed *owed;	/* answers owed: see rq_owe() */
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
	ev_timer limit_timer;	/* a limited queue may give ids again */
	int fetch_stopped;
	redisq_done_fn *requeue_fn;	/* set while everything goes back */
	void *requeue_arg;
	ev_timer recheck;
	ev_timer beat;
	int left;		/* said goodbye: no more heartbeats */
	int npaused;		/* queues found paused */
	ev_timer pause_check;	/* while some are: is it over? */
	ev_timer sampler;
	int sample_out;
	ev_tstamp sample_sent;
	struct qsample *sample_next;	/* per queue: the sample being taken */
	int *sample_nworkers;	/* ... and the workers asked of it */
	char host[256];
	struct outage fetch_outage;	/* the fetch script's */
	struct resolver *res;	/* NULL: names go to hiredis */
	/* With redis.sentinels: where they say the master is. */
	struct sentinel *sent;
	char master[256];	/* "" until they answer */
	int master_port;
	int master_suspect;	/* it answered READONLY: a replica now */
};

struct argv_buf {
	const char **argv;
	size_t *lens;
	int n, cap;
	int failed;
};

void rq_ack_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents);
char * rq_worker_key(const char *prefix, const redisReply *w, size_t *len);
void rq_beat_cb(struct ev_loop *loop, ev_timer *w, int revents);
void rq_make_holder(struct redisq *q);
void rq_send_beat(struct redisq *q);
int rc_command(struct rconn *c, redisCallbackFn *fn, void *priv, int argc,
    const char **argv, const size_t *lens);
struct rconn *rc_reply(redisAsyncContext *ac, const redisReply *reply);
void rc_close(struct rconn *c);
void rc_drop(struct rconn *c, const char *why);
void rc_init(struct redisq *q, struct rconn *c, int qi);
void rc_lost(struct rconn *c, const char *why);
void rc_start(struct rconn *c);
void rc_restart(struct rconn *c, const char *why);
void rc_limits(struct rconn *c);
void rc_master_moved(void *arg, const char *host, int port);
static inline int
rc_up(const struct rconn *c)
{
	return link_is_ready(&c->link);
}
void rq_argv_add(void *ctx, const char *val, size_t len);
void rq_defer(struct redisq *q);
void rq_fatal(struct redisq *q, int code, const char *why);
void rq_need_recovery(struct redisq *q);
void rq_owe(struct redisq *q, redisq_done_fn *fn, void *arg);
void rq_requeue_answer(struct redisq *q, int ok);
void rq_state_changed(struct redisq *q);
void rq_look_again_cb(struct ev_loop *loop, ev_timer *w, int revents);
void rq_quiesce(struct redisq *q);
void rq_recheck_cb(struct ev_loop *loop, ev_timer *w, int revents);
void rq_move_due(struct redisq *q);
void rq_mover_cb(struct ev_loop *loop, ev_timer *w, int revents);
void rq_sampler_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* redisq_limit.c: the limits' part of the fetch (README "Limits"). */
void rq_limit_peers(struct redisq *q, int qi, redisReply **w, size_t n);
int rq_limit_keys(struct redisq *q, int qi, struct argv_buf *b);
void rq_limit_args(struct redisq *q, int qi, struct argv_buf *b,
    char *tbuf, size_t size);
int rq_limit_note(struct redisq *q, const redisReply *limited);
void rq_limit_idle(struct redisq *q);
void rq_limit_reset(struct redisq *q);
void rq_limit_free(struct redisq *q);

#endif
