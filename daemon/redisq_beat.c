/*
 * redisq heartbeats: this worker's claim on its id, and the processing
 * sets of workers whose heartbeat is gone, given back to their queues.
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

static void send_beat_one(struct redisq *q, int qi, int force);

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

static void
reclaim_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
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
char *
rq_worker_key(const char *prefix, const redisReply *w, size_t *len)
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
	rq_argv_add(&b, "EVAL", 4);
	rq_argv_add(&b, reclaim_lua, sizeof(reclaim_lua) - 1);
	rq_argv_add(&b, numkeys, strlen(numkeys));
	rq_argv_add(&b, k->queue, strlen(k->queue));
	rq_argv_add(&b, k->workers, strlen(k->workers));
	for (size_t i = 0; i < n; i++) {
		size_t pl = 0, hl = 0;

		names[2 * i] = rq_worker_key(k->processing_of, w[i], &pl);
		names[2 * i + 1] = rq_worker_key(k->heartbeat_of, w[i], &hl);
		if (names[2 * i] == NULL || names[2 * i + 1] == NULL) {
			b.failed = 1;
			break;
		}
		rq_argv_add(&b, names[2 * i], pl);
		rq_argv_add(&b, names[2 * i + 1], hl);
	}
	for (size_t i = 0; i < n; i++)
		rq_argv_add(&b, w[i]->str, w[i]->len);
	if (!b.failed)
		rc_command(&q->cmd, reclaim_reply_cb, (void *)(intptr_t)qi,
		    b.n, b.argv, b.lens);
	for (size_t i = 0; i < 2 * n; i++)
		free(names[i]);
	free(names);
	free(b.argv);
	free(b.lens);
}

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
void
rq_make_holder(struct redisq *q)
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
		rq_state_changed(q);
		rq_quiesce(q);	/* a shutdown waiting for the claim gives up */
		return;
	}
	if ((now - q->contest_since) * 1000 < ms + 1000)
		return;
	snprintf(why, sizeof(why), "worker id %s is in use by a live daemon "
	    "(%s): its heartbeat %s was renewed for %d ms; give this daemon "
	    "another worker.id", cfg->worker.id, val, q->k[qi].heartbeat,
	    ms);
	q->contest_fatal = 1;
	rq_fatal(q, 78, why);
}

static void
beat_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
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
		rq_quiesce(q);	/* a shutdown waiting for the claim gives up */
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
			rq_state_changed(q);
		contested(q, qi, reply->element[1]->str);
		return;
	}
	if (strcmp(tag->str, "ok") != 0)
		return;
	send_reclaim(q, qi, reply->element + 1, reply->elements - 1);
	rq_limit_peers(q, qi, reply->element + 1, reply->elements - 1);
	q->claimed_mask |= UINT64_C(1) << qi;
	if (q->claimed || q->claimed_mask != (q->nq == 64 ? ~UINT64_C(0) :
	    (UINT64_C(1) << q->nq) - 1))
		return;
	if (q->contest_since != 0)
		log_notice("redis: worker id %s is ours now", q->cfg->worker.id);
	q->contest_since = 0;
	q->claimed = 1;
	/* What another holder left in the set goes back first. */
	rq_need_recovery(q);
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
void
rq_send_beat(struct redisq *q)
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

void
rq_beat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct redisq *q = w->data;

	(void)loop;
	(void)revents;
	if (rc_up(&q->cmd) && !q->left)
		rq_send_beat(q);
}
