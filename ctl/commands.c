/*
 * commands: what each taskworkerctl command does in Redis. Every move of
 * ids between keys is one Lua script, so no id is lost or doubled while
 * daemons run; a move of every id goes in chunks so Redis is never held.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

#define PAGE		1000	/* ids read per script */
#define SCAN_PAGE	5000	/* ids read per LRANGE when looking for ids */
#define CHUNK_ALL	1000	/* ids moved per script by --all */
#define CHUNK_IDS	100	/* ids named per script */
#define ROUNDS		3	/* looks for ids the list shifted away from */
#define MAX_MS		253402300799999LL	/* 9999-12-31T23:59:59.999Z */

/*
 * Every script that writes starts with CHECK_LUA: check(type, ...) names
 * the type each of KEYS[1..] must have (or not exist), and answers the
 * error to return before anything is written. Then it writes the
 * destination first and removes from the source last, so a script that
 * cannot complete leaves every id where it was.
 */
#define CHECK_LUA							\
	"local function check(...)\n"					\
	"  local want = {...}\n"					\
	"  for i = 1, #want do\n"					\
	"    local t = redis.call('TYPE', KEYS[i]).ok\n"		\
	"    if t ~= 'none' and t ~= want[i] then\n"			\
	"      return {err = KEYS[i] .. ' is a ' .. t .. ', not a ' ..\n" \
	"        want[i] .. ': nothing was changed'}\n"			\
	"    end\n"							\
	"  end\n"							\
	"end\n"

/* KEYS[1]: QUEUE:workers. Its members, none when it is not a set. */
static const char workers_lua[] =
	"if redis.call('TYPE', KEYS[1]).ok ~= 'set' then return {} end\n"
	"return redis.call('SMEMBERS', KEYS[1])\n";

/*
 * KEYS: a queue, its retry, scheduled, dead, attempts, paused and workers,
 * then the heartbeat and processing set of each worker of ARGV. Its
 * sizes, its pause and those workers still registered with their
 * heartbeats and processing sets, read at one instant. A key of an
 * unexpected type has size -1.
 */
static const char status_lua[] =
	"local function size(key)\n"
	"  local t = redis.call('TYPE', key).ok\n"
	"  if t == 'none' then return 0\n"
	"  elseif t == 'list' then return redis.call('LLEN', key)\n"
	"  elseif t == 'zset' then return redis.call('ZCARD', key)\n"
	"  elseif t == 'hash' then return redis.call('HLEN', key)\n"
	"  elseif t == 'set' then return redis.call('SCARD', key) end\n"
	"  return -1\n"
	"end\n"
	"local function str(key)\n"
	"  local t = redis.call('TYPE', key).ok\n"
	"  if t == 'none' then return false end\n"
	"  if t ~= 'string' then return '?' end\n"
	"  return redis.call('GET', key)\n"
	"end\n"
	"local t = redis.call('TIME')\n"
	"local set = redis.call('TYPE', KEYS[7]).ok == 'set'\n"
	"local ws = {}\n"
	"for i = 1, #ARGV do\n"
	"  if set and redis.call('SISMEMBER', KEYS[7], ARGV[i]) == 1 then\n"
	"    local hb = KEYS[6 + 2 * i]\n"
	"    ws[#ws+1] = ARGV[i]\n"
	"    ws[#ws+1] = str(hb)\n"
	"    ws[#ws+1] = redis.call('PTTL', hb)\n"
	"    ws[#ws+1] = size(KEYS[7 + 2 * i])\n"
	"  end\n"
	"end\n"
	"return {t[1], t[2], size(KEYS[1]), size(KEYS[2]), size(KEYS[3]),\n"
	"  size(KEYS[4]), size(KEYS[5]), str(KEYS[6]), ws}\n";

/*
 * KEYS[1]: QUEUE:limit. The server's clock in microseconds and the
 * rate's theoretical arrival time, or false when none (or not a number).
 */
static const char limit_lua[] =
	"local t = redis.call('TIME')\n"
	"local v = false\n"
	"if redis.call('TYPE', KEYS[1]).ok == 'string' then\n"
	"  v = tonumber(redis.call('GET', KEYS[1])) or false\n"
	"  if v and (v ~= v or v < 0 or v > 1e18) then v = false end\n"
	"end\n"
	"return {string.format('%.0f', t[1] * 1000000 + t[2]),\n"
	"  v and string.format('%.0f', v)}\n";

/* KEYS[1]: a processing set (a list before 0.2). How many ids it holds. */
static const char size_lua[] =
	"local t = redis.call('TYPE', KEYS[1]).ok\n"
	"if t == 'zset' then return redis.call('ZCARD', KEYS[1]) end\n"
	"if t == 'list' then return redis.call('LLEN', KEYS[1]) end\n"
	"return -1\n";

/*
 * KEYS: dead, dead:reason; ARGV: first, last index. {ids, reasons}, or
 * {ids, {}, type} when the reasons are not a hash.
 */
static const char dead_page_lua[] =
	"local ids = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])\n"
	"if #ids == 0 then return {{}, {}} end\n"
	"local t = redis.call('TYPE', KEYS[2]).ok\n"
	"if t ~= 'hash' and t ~= 'none' then return {ids, {}, t} end\n"
	"return {ids, redis.call('HMGET', KEYS[2], unpack(ids))}\n";

/*
 * KEYS: a sorted set (retry, scheduled), attempts; ARGV: first, last
 * rank. {id, due, id, due, ...}, {failed attempts of each}, or
 * {..., {}, type} when the attempts are not a hash.
 */
static const char due_page_lua[] =
	"local z = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')\n"
	"local ids = {}\n"
	"for i = 1, #z, 2 do ids[#ids+1] = z[i] end\n"
	"if #ids == 0 then return {{}, {}} end\n"
	"local t = redis.call('TYPE', KEYS[2]).ok\n"
	"if t ~= 'hash' and t ~= 'none' then return {z, {}, t} end\n"
	"return {z, redis.call('HMGET', KEYS[2], unpack(ids))}\n";

/*
 * take(each): ARGV holds a marker, then index and id pairs found by a
 * read of the dead list KEYS[1]. Each id still at its index is handed to
 * EACH (which writes its destination), then marked, and the marks are
 * removed in one LREM from the end nearer to them: the work is bounded by
 * that distance, never by the ids named times the list. Returns 1 or 0
 * (the list shifted it away) for each pair, and the ids taken.
 */
#define TAKE_LUA							\
	"local function take(each)\n"					\
	"  local out, ids, lo, hi = {}, {}, nil, nil\n"		\
	"  for i = 2, #ARGV, 2 do\n"					\
	"    local at, id = tonumber(ARGV[i]), ARGV[i + 1]\n"		\
	"    if redis.call('LINDEX', KEYS[1], at) == id then\n"		\
	"      if each then each(id) end\n"				\
	"      redis.call('LSET', KEYS[1], at, ARGV[1])\n"		\
	"      ids[#ids + 1] = id\n"					\
	"      lo = lo and math.min(lo, at) or at\n"			\
	"      hi = hi and math.max(hi, at) or at\n"			\
	"      out[#out + 1] = 1\n"					\
	"    else\n"							\
	"      out[#out + 1] = 0\n"					\
	"    end\n"							\
	"  end\n"							\
	"  if #ids > 0 then\n"						\
	"    local len = redis.call('LLEN', KEYS[1])\n"		\
	"    local n = hi < len - lo and #ids or -#ids\n"		\
	"    redis.call('LREM', KEYS[1], n, ARGV[1])\n"		\
	"  end\n"							\
	"  return out, ids\n"						\
	"end\n"

/*
 * KEYS: dead, queue, dead:reason, attempts; ARGV: as take() wants. Each
 * id still at its index goes to the tail of the queue, then leaves the
 * dead list, then loses its reason and attempt count.
 */
static const char requeue_ids_lua[] =
	CHECK_LUA TAKE_LUA
	"local e = check('list', 'list', 'hash', 'hash')\n"
	"if e then return e end\n"
	"local out, moved = take(function(id)\n"
	"  redis.call('RPUSH', KEYS[2], id)\n"
	"end)\n"
	"if #moved > 0 then\n"
	"  redis.call('HDEL', KEYS[3], unpack(moved))\n"
	"  redis.call('HDEL', KEYS[4], unpack(moved))\n"
	"end\n"
	"return out\n";

/*
 * KEYS: dead, queue, dead:reason, attempts; ARGV[1]: most ids. The oldest
 * dead ids go to the tail of the queue, oldest first, as the retry mover
 * moves them, then leave the dead list. Returns how many moved.
 */
static const char requeue_all_lua[] =
	CHECK_LUA
	"local e = check('list', 'list', 'hash', 'hash')\n"
	"if e then return e end\n"
	"local vs = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)\n"
	"if #vs == 0 then return 0 end\n"
	"redis.call('RPUSH', KEYS[2], unpack(vs))\n"
	"redis.call('LTRIM', KEYS[1], #vs, -1)\n"
	"redis.call('HDEL', KEYS[3], unpack(vs))\n"
	"redis.call('HDEL', KEYS[4], unpack(vs))\n"
	"return #vs\n";

/* KEYS: dead, dead:reason; ARGV: as take() wants. Forgets those ids. */
static const char purge_ids_lua[] =
	CHECK_LUA TAKE_LUA
	"local e = check('list', 'hash')\n"
	"if e then return e end\n"
	"local out, gone = take(nil)\n"
	"if #gone > 0 then redis.call('HDEL', KEYS[2], unpack(gone)) end\n"
	"return out\n";

/* KEYS: dead, dead:reason; ARGV[1]: most ids. Forgets the oldest. */
static const char purge_all_lua[] =
	CHECK_LUA
	"local e = check('list', 'hash')\n"
	"if e then return e end\n"
	"local vs = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)\n"
	"if #vs == 0 then return 0 end\n"
	"redis.call('LTRIM', KEYS[1], #vs, -1)\n"
	"redis.call('HDEL', KEYS[2], unpack(vs))\n"
	"return #vs\n";

/*
 * KEYS: retry; ARGV: ids. Each id in the set becomes due now (the
 * server's clock); XX never adds one that is not. 1 or 0 for each.
 */
static const char retry_now_lua[] =
	CHECK_LUA
	"local e = check('zset')\n"
	"if e then return e end\n"
	"local t = redis.call('TIME')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
	"local out = {}\n"
	"for i = 1, #ARGV do\n"
	"  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])\n"
	"  if s then\n"
	"    if tonumber(s) > now then\n"
	"      redis.call('ZADD', KEYS[1], 'XX', now, ARGV[i])\n"
	"    end\n"
	"    out[i] = 1\n"
	"  else\n"
	"    out[i] = 0\n"
	"  end\n"
	"end\n"
	"return out\n";

/*
 * KEYS: paused; ARGV[1]: who. Pauses the queue unless it is; returns
 * {1 when this call paused it, the value}.
 */
static const char pause_lua[] =
	CHECK_LUA
	"local e = check('string')\n"
	"if e then return e end\n"
	"local t = redis.call('TIME')\n"
	"local v = 'at=' .. t[1] .. string.format('%03d', math.floor(t[2] / 1000))\n"
	"  .. ' by=' .. ARGV[1]\n"
	"if redis.call('SET', KEYS[1], v, 'NX') then return {1, v} end\n"
	"return {0, redis.call('GET', KEYS[1])}\n";

/*
 * KEYS: paused. Resumes the queue, whatever the key holds (a daemon takes
 * any QUEUE:paused for a pause); returns the value it had, '?' when not a
 * string, or nil.
 */
static const char resume_lua[] =
	"local v = false\n"
	"if redis.call('TYPE', KEYS[1]).ok == 'string' then\n"
	"  v = redis.call('GET', KEYS[1])\n"
	"elseif redis.call('EXISTS', KEYS[1]) == 1 then\n"
	"  v = '?'\n"
	"end\n"
	"redis.call('DEL', KEYS[1])\n"
	"return v\n";

/* ---- small helpers ---- */

static int
is_str(const redisReply *r)
{
	return r != NULL && (r->type == REDIS_REPLY_STRING ||
	    r->type == REDIS_REPLY_STATUS);
}

static long long
reply_ll(const redisReply *r, long long dflt)
{
	if (r == NULL)
		return dflt;
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	if (r->type == REDIS_REPLY_STRING)
		return strtoll(r->str, NULL, 10);
	return dflt;
}

/* R is a count of failed attempts: digits, 0 to LLONG_MAX. */
static int
is_count(const redisReply *r, long long *n)
{
	char *end;

	if (r == NULL || r->type != REDIS_REPLY_STRING || r->len == 0 ||
	    !isdigit((unsigned char)r->str[0]))
		return 0;
	errno = 0;
	*n = strtoll(r->str, &end, 10);
	return errno == 0 && *end == '\0' && (size_t)(end - r->str) == r->len;
}

static int
bad_reply(struct ctl *c, const char *what)
{
	ctl_errx("Redis: unexpected reply to %s", what);
	c->status = EXIT_FAIL;
	return EXIT_FAIL;
}

static void
json_num(const char *name, long long v, int valid)
{
	if (valid)
		printf("\"%s\":%lld", name, v);
	else
		printf("\"%s\":null", name);
}

static void
json_strn(const char *name, const char *s, size_t len)
{
	printf("\"%s\":", name);
	if (s == NULL)
		fputs("null", stdout);
	else
		escape_json(stdout, s, len);
}

static void
json_s(const char *name, const char *s)
{
	json_strn(name, s, s ? strlen(s) : 0);
}

/* Parses "word=value" out of a space-separated S; value or NULL. */
static const char *
field(const char *s, const char *word, size_t *len)
{
	size_t wl = strlen(word);

	for (const char *p = s; *p; ) {
		size_t tl = strcspn(p, " ");

		if (tl > wl && strncmp(p, word, wl) == 0 && p[wl] == '=') {
			*len = tl - wl - 1;
			return p + wl + 1;
		}
		p += tl;
		p += strspn(p, " ");
	}
	return NULL;
}

static int
field_ll(const char *s, const char *word, long long *v)
{
	size_t len;
	const char *p = field(s, word, &len);
	char buf[32], *end;

	if (p == NULL || len == 0 || len >= sizeof(buf))
		return 0;
	memcpy(buf, p, len);
	buf[len] = '\0';
	errno = 0;
	*v = strtoll(buf, &end, 10);
	return *end == '\0' && errno == 0;
}

/*
 * A time in ms since the epoch that a person can be shown, and subtracted
 * from another without overflow: 1970 to 9999. "at=1e300" is not one.
 */
static int
field_ms(const char *s, const char *word, long long *v)
{
	return field_ll(s, word, v) && *v >= 0 && *v <= MAX_MS;
}

/*
 * KEY must be of type WANT, or not exist. Otherwise a message naming its
 * type, the status EXIT_FAIL, and 0.
 */
static int
want_type(struct ctl *c, const char *key, const char *want)
{
	const char *argv[] = { "TYPE", key };
	redisReply *r = ctl_command(c, 2, argv, NULL);
	int fine;

	if (r == NULL)
		return 0;
	fine = is_str(r) && (strcmp(r->str, want) == 0 ||
	    strcmp(r->str, "none") == 0);
	if (!fine) {
		ctl_errx("%s is a %s, not a %s", key, is_str(r) ? r->str : "?",
		    want);
		c->status = EXIT_FAIL;
	}
	freeReplyObject(r);
	return fine;
}

/* ---- status ---- */

struct worker {
	char *id;
	char *beat;		/* the heartbeat's value, NULL when gone */
	long long ttl;		/* PTTL of the heartbeat */
	long long n;		/* ids in its processing set, -1 unknown */
	int registered;
};

struct qstatus {
	char *queue;
	int configured;
	long long len, retry, scheduled, dead, attempts, processing;
	char *paused;		/* the value of QUEUE:paused, NULL if none */
	struct worker *w;
	size_t nw;
	const struct limit *limit;	/* configured, or NULL */
	long long used;		/* of the burst, by QUEUE:limit */
	long long next_ms;	/* until the rate allows an id */
	long long in_flight;	/* held by registered workers, -1 unknown */
};

static int
worker_cmp(const void *a, const void *b)
{
	const struct worker *x = a, *y = b;

	if (x->registered != y->registered)
		return y->registered - x->registered;
	return strcmp(x->id, y->id);
}

static struct worker *
add_worker(struct qstatus *s, const char *id, size_t len)
{
	struct worker *w = realloc(s->w, (s->nw + 1) * sizeof(*w));

	if (w == NULL)
		return NULL;
	s->w = w;
	w = &s->w[s->nw];
	memset(w, 0, sizeof(*w));
	if ((w->id = strndup(id, len)) == NULL)
		return NULL;
	w->ttl = -2;
	s->nw++;
	return w;
}

/* PATTERN for SCAN MATCH: S with the glob characters escaped. */
static char *
glob_escape(const char *s, const char *suffix)
{
	char *out = malloc(2 * strlen(s) + strlen(suffix) + 1), *p = out;

	if (out == NULL)
		return NULL;
	for (; *s; s++) {
		if (strchr("*?[]\\", *s))
			*p++ = '\\';
		*p++ = *s;
	}
	strcpy(p, suffix);
	return out;
}

/* Processing sets of workers not in QUEUE:workers: nothing stuck hides. */
static int
scan_unregistered(struct ctl *c, struct qstatus *s)
{
	char *pattern = glob_escape(s->queue, ":processing:*");
	size_t plen = strlen(s->queue) + strlen(":processing:");
	char cursor[32] = "0";
	int rv = 0;

	if (pattern == NULL)
		return -1;
	do {
		const char *argv[] = { "SCAN", cursor, "MATCH", pattern,
		    "COUNT", "1000" };
		redisReply *r = ctl_command(c, 6, argv, NULL), *keys;

		if (r == NULL) {
			rv = -1;
			break;
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    !is_str(r->element[0]) ||
		    r->element[1]->type != REDIS_REPLY_ARRAY) {
			freeReplyObject(r);
			bad_reply(c, "SCAN");
			rv = -1;
			break;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		keys = r->element[1];
		for (size_t i = 0; i < keys->elements && rv == 0; i++) {
			redisReply *k = keys->element[i], *n;
			const char *id;
			size_t idlen, j;
			struct worker *w;

			if (!is_str(k) || k->len <= plen)
				continue;
			id = k->str + plen;
			idlen = k->len - plen;
			for (j = 0; j < s->nw; j++)
				if (strlen(s->w[j].id) == idlen &&
				    memcmp(s->w[j].id, id, idlen) == 0)
					break;
			if (j < s->nw)
				continue;	/* registered, counted */
			n = ctl_eval(c, size_lua, 1, (const char **)&k->str,
			    0, NULL, NULL);
			if (n == NULL || (w = add_worker(s, id, idlen)) == NULL)
				rv = -1;
			else {
				w->n = reply_ll(n, -1);
				if (w->n > 0 && s->processing >= 0)
					s->processing += w->n;
			}
			freeReplyObject(n);
		}
		freeReplyObject(r);
	} while (rv == 0 && strcmp(cursor, "0") != 0);
	free(pattern);
	return rv;
}

/* The registered workers of S and their keys, for the status script. */
struct status_keys {
	struct qkeys q;
	struct qkeys *w;	/* each worker's keys */
	size_t nw;
	const char **keys;	/* as status_lua wants them */
	const char **names;	/* the workers */
};

static void
status_keys_free(struct status_keys *sk)
{
	for (size_t i = 0; i < sk->nw; i++)
		qkeys_free(&sk->w[i]);
	qkeys_free(&sk->q);
	free(sk->w);
	free(sk->keys);
	free(sk->names);
}

/* Fills SK for the members M of QUEUE:workers; -1 when out of memory. */
static int
status_keys_make(struct status_keys *sk, const char *queue,
    const redisReply *m)
{
	memset(sk, 0, sizeof(*sk));
	if (qkeys_make(&sk->q, queue, NULL) == -1 ||
	    (sk->w = calloc(m->elements + 1, sizeof(*sk->w))) == NULL ||
	    (sk->keys = calloc(7 + 2 * m->elements, sizeof(char *))) == NULL ||
	    (sk->names = calloc(m->elements + 1, sizeof(char *))) == NULL)
		return -1;
	sk->keys[0] = sk->q.queue;
	sk->keys[1] = sk->q.retry;
	sk->keys[2] = sk->q.scheduled;
	sk->keys[3] = sk->q.dead;
	sk->keys[4] = sk->q.attempts;
	sk->keys[5] = sk->q.paused;
	sk->keys[6] = sk->q.workers;
	for (size_t i = 0; i < m->elements; i++) {
		const redisReply *e = m->element[i];

		if (!is_str(e) || strlen(e->str) != e->len)
			continue;	/* a NUL in it: not one of ours */
		if (qkeys_make(&sk->w[sk->nw], queue, e->str) == -1)
			return -1;
		sk->keys[7 + 2 * sk->nw] = sk->w[sk->nw].heartbeat;
		sk->keys[8 + 2 * sk->nw] = sk->w[sk->nw].processing;
		sk->names[sk->nw++] = e->str;
	}
	return 0;
}

/*
 * SCRIPT run on one key of QUEUE, the one at OFF in struct qkeys; its
 * reply, or NULL after a message.
 */
static redisReply *
eval_on_key(struct ctl *c, const char *script, const char *queue,
    size_t off)
{
	struct qkeys k;
	const char *key[1];
	redisReply *r;

	if (qkeys_make(&k, queue, NULL) == -1) {
		ctl_errx("out of memory");
		c->status = EXIT_FAIL;
		return NULL;
	}
	key[0] = *(char **)((char *)&k + off);
	r = ctl_eval(c, script, 1, key, 0, NULL, NULL);
	qkeys_free(&k);
	return r;
}

/*
 * How close S is to its limits: the burst its rate has used and when it
 * allows the next id (QUEUE:limit against the server's clock), and the
 * ids the registered workers hold (read before).
 */
static int
read_limit(struct ctl *c, struct qstatus *s)
{
	const struct limit *l = config_limit(c->cfg, s->queue);
	redisReply *r;

	s->limit = l;
	s->in_flight = 0;
	for (size_t i = 0; i < s->nw; i++)
		if (s->w[i].registered && s->in_flight >= 0)
			s->in_flight = s->w[i].n < 0 ? -1 : s->in_flight + s->w[i].n;
	if (l == NULL || l->rate == 0)
		return 0;
	if ((r = eval_on_key(c, limit_lua, s->queue,
	    offsetof(struct qkeys, limit))) == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    !is_str(r->element[0])) {
		freeReplyObject(r);
		return bad_reply(c, "the limit script");
	}
	if (r->elements > 1 && is_str(r->element[1])) {
		double t = l->per_ms * 1000.0 / l->rate;
		double ahead = strtod(r->element[1]->str, NULL) -
		    strtod(r->element[0]->str, NULL);
		double wait = ahead + t - l->burst * t;

		/* Past a full burst (a slower rate before): as the daemons. */
		if (!(ahead <= l->burst * t)) {
			ahead = l->burst * t;
			wait = t;
		}
		if (ahead < 0)
			ahead = 0;
		s->used = (long long)(ahead / t + 0.999999);
		if (s->used > l->burst)
			s->used = l->burst;
		s->next_ms = wait > 0 ? (long long)(wait / 1000 + 0.999) : 0;
	}
	freeReplyObject(r);
	return 0;
}

static int
read_status(struct ctl *c, struct qstatus *s, long long *now)
{
	struct status_keys sk;
	redisReply *m, *r, *ws;

	if ((m = eval_on_key(c, workers_lua, s->queue,
	    offsetof(struct qkeys, workers))) == NULL)
		return -1;
	if (m->type != REDIS_REPLY_ARRAY) {
		freeReplyObject(m);
		return bad_reply(c, "the workers script"), -1;
	}
	if (status_keys_make(&sk, s->queue, m) == -1) {
		status_keys_free(&sk);
		freeReplyObject(m);
		ctl_errx("out of memory");
		c->status = EXIT_FAIL;
		return -1;
	}
	r = ctl_eval(c, status_lua, 7 + 2 * (int)sk.nw, sk.keys, (int)sk.nw,
	    sk.names, NULL);
	status_keys_free(&sk);
	freeReplyObject(m);
	if (r == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 9 ||
	    r->element[8]->type != REDIS_REPLY_ARRAY) {
		freeReplyObject(r);
		return bad_reply(c, "the status script"), -1;
	}
	*now = reply_ll(r->element[0], 0) * 1000 +
	    reply_ll(r->element[1], 0) / 1000;
	s->len = reply_ll(r->element[2], -1);
	s->retry = reply_ll(r->element[3], -1);
	s->scheduled = reply_ll(r->element[4], -1);
	s->dead = reply_ll(r->element[5], -1);
	s->attempts = reply_ll(r->element[6], -1);
	if (is_str(r->element[7]))
		s->paused = strdup(r->element[7]->str);
	ws = r->element[8];
	s->processing = 0;
	for (size_t i = 0; i + 3 < ws->elements; i += 4) {
		struct worker *w;

		if (!is_str(ws->element[i]) || (w = add_worker(s,
		    ws->element[i]->str, ws->element[i]->len)) == NULL)
			continue;
		w->registered = 1;
		if (is_str(ws->element[i + 1]))
			w->beat = strdup(ws->element[i + 1]->str);
		w->ttl = reply_ll(ws->element[i + 2], -2);
		w->n = reply_ll(ws->element[i + 3], -1);
		if (w->n < 0)
			s->processing = -1;
		else if (s->processing >= 0)
			s->processing += w->n;
	}
	freeReplyObject(r);
	if (read_limit(c, s) == -1)
		return -1;
	if (scan_unregistered(c, s) == -1)
		return -1;
	if (s->nw > 1)	/* qsort may not be given a NULL array */
		qsort(s->w, s->nw, sizeof(*s->w), worker_cmp);
	return 0;
}

static void
free_status(struct qstatus *s)
{
	for (size_t i = 0; i < s->nw; i++) {
		free(s->w[i].id);
		free(s->w[i].beat);
	}
	free(s->w);
	free(s->paused);
}

/* What a heartbeat says: "host=H pid=P at=MS", or "pid N" from before. */
struct beat {
	const char *host;
	size_t hostlen;
	long long pid, at;
	int has_pid, has_at;
};

static void
parse_beat(const char *v, struct beat *b)
{
	memset(b, 0, sizeof(*b));
	if (v == NULL)
		return;
	b->host = field(v, "host", &b->hostlen);
	b->has_pid = field_ll(v, "pid", &b->pid);
	b->has_at = field_ms(v, "at", &b->at);
	if (!b->has_pid && strncmp(v, "pid ", 4) == 0) {
		char *end;

		b->pid = strtoll(v + 4, &end, 10);
		b->has_pid = end != v + 4 && *end == '\0';
	}
}

/* What QUEUE:paused says: "at=MS by=USER@HOST". */
static void
parse_pause(const char *v, long long *at, int *has_at, const char **by,
    size_t *bylen)
{
	*has_at = field_ms(v, "at", at);
	*by = field(v, "by", bylen);
}

static void
print_status_json(const struct qstatus *s, long long now, int first)
{
	long long at = 0;
	int has_at = 0;
	const char *by = NULL;
	size_t bylen = 0;

	if (s->paused)
		parse_pause(s->paused, &at, &has_at, &by, &bylen);
	printf("%s{", first ? "" : ",");
	json_s("queue", s->queue);
	printf(",\"configured\":%s,", s->configured ? "true" : "false");
	json_num("length", s->len, s->len >= 0);
	putchar(',');
	json_num("processing", s->processing, s->processing >= 0);
	putchar(',');
	json_num("retry", s->retry, s->retry >= 0);
	putchar(',');
	json_num("scheduled", s->scheduled, s->scheduled >= 0);
	putchar(',');
	json_num("dead", s->dead, s->dead >= 0);
	putchar(',');
	json_num("attempts", s->attempts, s->attempts >= 0);
	printf(",\"paused\":%s,", s->paused ? "true" : "false");
	json_num("paused_at_ms", at, has_at);
	putchar(',');
	json_strn("paused_by", by, bylen);
	putchar(',');
	json_s("paused_value", s->paused);
	printf(",\"limits\":");
	if (s->limit == NULL)
		printf("null");
	else {
		const struct limit *l = s->limit;

		putchar('{');
		json_num("rate", l->rate, l->rate > 0);
		putchar(',');
		json_num("per_ms", l->per_ms, l->rate > 0);
		putchar(',');
		json_num("burst", l->burst, l->rate > 0);
		putchar(',');
		json_num("burst_used", s->used, l->rate > 0);
		putchar(',');
		json_num("next_id_in_ms", s->next_ms, l->rate > 0);
		putchar(',');
		json_num("max_in_flight", l->max_in_flight,
		    l->max_in_flight > 0);
		putchar(',');
		json_num("in_flight", s->in_flight, s->in_flight >= 0);
		putchar('}');
	}
	printf(",\"workers\":[");
	for (size_t i = 0; i < s->nw; i++) {
		const struct worker *w = &s->w[i];
		struct beat b;

		parse_beat(w->beat, &b);
		printf("%s{", i ? "," : "");
		json_s("worker", w->id);
		printf(",\"registered\":%s,", w->registered ? "true" : "false");
		json_num("processing", w->n, w->n >= 0);
		printf(",\"alive\":%s,", w->beat ? "true" : "false");
		json_s("heartbeat", w->beat);
		putchar(',');
		json_strn("host", b.host, b.hostlen);
		putchar(',');
		json_num("pid", b.pid, b.has_pid);
		putchar(',');
		json_num("heartbeat_at_ms", b.at, b.has_at);
		putchar(',');
		json_num("heartbeat_age_ms", now - b.at, b.has_at);
		putchar(',');
		json_num("heartbeat_ttl_ms", w->ttl, w->beat && w->ttl >= 0);
		putchar('}');
	}
	printf("]}");
}

static void
print_size(const char *name, long long v, int first)
{
	printf("%s%s ", first ? "" : ", ", name);
	if (v >= 0)
		printf("%lld", v);
	else
		printf("?");
}

static void
print_status_text(const struct qstatus *s, long long now)
{
	char when[64], ago[32];

	printf("queue ");
	escape_text(stdout, s->queue, strlen(s->queue));
	if (s->paused) {
		long long at = 0;
		int has_at;
		const char *by;
		size_t bylen = 0;

		parse_pause(s->paused, &at, &has_at, &by, &bylen);
		printf(": PAUSED");
		if (has_at) {
			out_localtime(when, sizeof(when), at);
			out_duration(ago, sizeof(ago), now - at);
			printf(" since %s (%s ago)", when, ago);
		}
		if (by) {
			printf(" by ");
			escape_text(stdout, by, bylen);
		}
	} else
		printf(": taking ids");
	if (!s->configured)
		printf(" (not in the config)");
	printf("\n  ");
	print_size("waiting", s->len, 1);
	print_size("processing", s->processing, 0);
	print_size("retry", s->retry, 0);
	print_size("scheduled", s->scheduled, 0);
	print_size("dead", s->dead, 0);
	printf("\n");
	if (s->limit != NULL) {
		const struct limit *l = s->limit;

		printf("  limits:");
		if (l->rate > 0)
			printf(" rate %d per %d ms, burst %d: %lld of %d used, "
			    "next id in %lld ms%s", l->rate, l->per_ms,
			    l->burst, s->used, l->burst, s->next_ms,
			    l->max_in_flight > 0 ? ";" : "");
		if (l->max_in_flight > 0) {
			printf(" in flight ");
			if (s->in_flight >= 0)
				printf("%lld", s->in_flight);
			else
				printf("?");
			printf(" of %d", l->max_in_flight);
		}
		printf("\n");
	}
	for (size_t i = 0; i < s->nw; i++) {
		const struct worker *w = &s->w[i];
		struct beat b;

		parse_beat(w->beat, &b);
		printf("  worker ");
		escape_text(stdout, w->id, strlen(w->id));
		printf(": ");
		print_size("processing", w->n, 1);
		if (b.host) {
			printf(", host ");
			escape_text(stdout, b.host, b.hostlen);
		}
		if (b.has_pid)
			printf(", pid %lld", b.pid);
		if (!w->registered)
			printf(", not registered in %s:workers (its ids are "
			    "not reclaimed)", s->queue);
		else if (w->beat == NULL)
			printf(", no heartbeat (dead; a live worker will "
			    "reclaim its ids)");
		else if (b.has_at) {
			out_duration(ago, sizeof(ago), now - b.at);
			printf(", heartbeat %s ago", ago);
		} else if (w->ttl >= 0) {
			out_duration(ago, sizeof(ago), w->ttl);
			printf(", heartbeat expires in %s", ago);
		}
		printf("\n");
	}
	if (s->nw == 0)
		printf("  no workers\n");
}

int
cmd_status(struct ctl *c, char **queues, int nqueues)
{
	struct qstatus *st = calloc(nqueues, sizeof(*st));
	long long now = 0;
	int rv = 0;

	if (st == NULL) {
		ctl_errx("out of memory");
		return EXIT_FAIL;
	}
	for (int i = 0; i < nqueues && rv == 0; i++) {
		st[i].queue = queues[i];
		for (int j = 0; j < c->cfg->redis.nqueues; j++)
			if (strcmp(queues[i], c->cfg->redis.queues[j]) == 0)
				st[i].configured = 1;
		if (read_status(c, &st[i], &now) == -1)
			rv = c->status ? c->status : EXIT_FAIL;
	}
	if (rv == 0 && c->json) {
		printf("{\"time_ms\":%lld,\"queues\":[", now);
		for (int i = 0; i < nqueues; i++)
			print_status_json(&st[i], now, i == 0);
		printf("]}\n");
		c->whole = 1;
	} else if (rv == 0) {
		for (int i = 0; i < nqueues; i++)
			print_status_text(&st[i], now);
	}
	for (int i = 0; i < nqueues; i++)
		free_status(&st[i]);
	free(st);
	return rv;
}

/* ---- lists ---- */

/* The newest LIMIT of LEN (all when 0): the first index to show. */
static long long
first_shown(long long len, long limit, int newest)
{
	if (limit <= 0 || len <= limit)
		return 0;
	return newest ? len - limit : 0;
}

static long long
key_size(struct ctl *c, const char *cmd, const char *key)
{
	const char *argv[] = { cmd, key };
	redisReply *r = ctl_command(c, 2, argv, NULL);
	long long n = r ? reply_ll(r, -1) : -1;

	freeReplyObject(r);
	return n;
}

/*
 * One page of a list or sorted set: SCRIPT on K1, K2 for the indexes
 * FIRST.. (at most PAGE, below LEN). The reply is {items, values} with PER
 * items to a value; NULL after a message.
 */
static redisReply *
read_page(struct ctl *c, const char *script, const char *k1, const char *k2,
    long long first, long long len, size_t per)
{
	const char *keys[] = { k1, k2 };
	char a[32], b[32];
	const char *args[] = { a, b };
	redisReply *r;

	snprintf(a, sizeof(a), "%lld", first);
	snprintf(b, sizeof(b), "%lld", first + PAGE - 1 < len ?
	    first + PAGE - 1 : len - 1);
	if ((r = ctl_eval(c, script, 2, keys, 2, args, NULL)) == NULL)
		return NULL;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
	    r->elements > 3 || r->element[0]->type != REDIS_REPLY_ARRAY ||
	    r->element[1]->type != REDIS_REPLY_ARRAY ||
	    (r->elements == 2 &&
	    r->element[0]->elements != per * r->element[1]->elements) ||
	    (r->elements == 3 && (r->element[1]->elements != 0 ||
	    !is_str(r->element[2])))) {
		freeReplyObject(r);
		bad_reply(c, "a page read");
		return NULL;
	}
	return r;
}

/*
 * The value of the J-th item of a page: NULL when the page has none
 * (K2 was of another type, said once on stderr through *WARNED).
 */
static redisReply *
page_value(redisReply *r, size_t j, const char *k2, const char *want,
    int *warned)
{
	if (r->elements == 3) {
		if (!*warned) {
			ctl_errx("warning: %s is a %s, not a %s: left out", k2,
			    r->element[2]->str, want);
			*warned = 1;
		}
		return NULL;
	}
	return r->element[1]->element[j];
}

/* "2026-12-02T01:02:03.456Z why": the time in ms and where WHY starts. */
static int
parse_reason(const char *s, size_t len, long long *ms, size_t *text)
{
	struct tm tm = { 0 };
	int frac = 0, n = 0;
	const char *sp = memchr(s, ' ', len);

	if (sp == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year,
	    &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec,
	    &n) != 6)
		return 0;
	if (s[n] == '.')
		sscanf(s + n + 1, "%3d", &frac);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	*ms = (long long)timegm(&tm) * 1000 + frac;
	*text = (size_t)(sp - s) + 1;
	return 1;
}

int
cmd_dead_list(struct ctl *c)
{
	struct qkeys k;
	long long len, first, shown = 0;
	int rv = 0, warned = 0;

	if (qkeys_make(&k, c->queue, NULL) == -1) {
		ctl_errx("out of memory");
		return EXIT_FAIL;
	}
	if (!want_type(c, k.dead, "list") ||
	    (len = key_size(c, "LLEN", k.dead)) < 0) {
		qkeys_free(&k);
		return c->status;
	}
	first = first_shown(len, c->limit, 1);
	if (c->json) {
		printf("{");
		json_s("queue", c->queue);
		printf(",\"total\":%lld,\"ids\":[", len);
	} else {
		printf("%s: %lld dead id%s", k.dead, len, len == 1 ? "" : "s");
		if (first > 0)
			printf(", the newest %ld shown", c->limit);
		printf("%s\n", len ? ", oldest first" : "");
	}
	/*
	 * Page by page: ids that die or are trimmed meanwhile shift the
	 * pages, so a busy list may show an id twice or skip one.
	 */
	for (long long i = first; i < len && rv == 0; i += PAGE) {
		redisReply *r, *ids;

		if ((r = read_page(c, dead_page_lua, k.dead, k.reason, i, len,
		    1)) == NULL) {
			rv = c->status;
			break;
		}
		ids = r->element[0];
		if (ids->elements == 0)
			i = len;	/* the list shrank */
		for (size_t j = 0; j < ids->elements; j++) {
			redisReply *id = ids->element[j], *w = page_value(r, j,
			    k.reason, "hash", &warned);
			long long ms = 0;
			size_t text = 0;
			int timed = is_str(w) &&
			    parse_reason(w->str, w->len, &ms, &text);
			char when[64];

			if (!is_str(id))
				continue;
			if (c->json) {
				printf("%s{", shown ? "," : "");
				json_strn("id", id->str, id->len);
				putchar(',');
				json_strn("time", timed ? w->str : NULL,
				    timed ? text - 1 : 0);
				putchar(',');
				json_num("time_ms", ms, timed);
				putchar(',');
				json_strn("reason", is_str(w) ? w->str + text :
				    NULL, is_str(w) ? w->len - text : 0);
				putchar('}');
			} else {
				escape_text(stdout, id->str, id->len);
				if (timed)
					out_localtime(when, sizeof(when), ms);
				printf("  %s  ", timed ? when : "-");
				if (is_str(w))
					escape_text(stdout, w->str + text,
					    w->len - text);
				else
					printf("(no reason recorded)");
				putchar('\n');
			}
			shown++;
		}
		freeReplyObject(r);
	}
	if (c->json && rv == 0) {
		printf("]}\n");
		c->whole = 1;
	}
	qkeys_free(&k);
	return rv;
}

/* retry list and scheduled list: a sorted set scored by due time. */
static int
due_list(struct ctl *c, const char *key, const char *attempts_key,
    int show_attempts)
{
	long long len, now, shown = 0;
	int rv = 0, warned = 0;

	if (!want_type(c, key, "zset") ||
	    (len = key_size(c, "ZCARD", key)) < 0 ||
	    (now = ctl_now_ms(c)) < 0)
		return c->status;
	if (c->json) {
		printf("{");
		json_s("queue", c->queue);
		printf(",\"now_ms\":%lld,\"total\":%lld,\"ids\":[", now, len);
	} else {
		printf("%s: %lld id%s", key, len, len == 1 ? "" : "s");
		if (c->limit > 0 && len > c->limit)
			printf(", the first %ld due shown", c->limit);
		printf("%s\n", len ? ", soonest due first" : "");
	}
	if (c->limit > 0 && len > c->limit)
		len = c->limit;
	for (long long i = 0; i < len && rv == 0; i += PAGE) {
		redisReply *r, *z;

		if ((r = read_page(c, due_page_lua, key, attempts_key, i, len,
		    2)) == NULL) {
			rv = c->status;
			break;
		}
		z = r->element[0];
		if (z->elements == 0)
			i = len;
		for (size_t j = 0; j + 1 < z->elements; j += 2) {
			redisReply *id = z->element[j], *sc = z->element[j + 1];
			redisReply *a = show_attempts ? page_value(r, j / 2,
			    attempts_key, "hash", &warned) : NULL;
			long long due = 0, n = 0;
			int timed, counted;
			char when[64], rel[48];
			double d;

			if (!is_str(id) || !is_str(sc))
				continue;
			/* inf, or 1e300: no time to show nor to count from. */
			d = strtod(sc->str, NULL);
			timed = isfinite(d) && d >= 0 && d <= (double)MAX_MS;
			if (timed)
				due = llround(d);
			counted = is_count(a, &n);
			if (c->json) {
				printf("%s{", shown ? "," : "");
				json_strn("id", id->str, id->len);
				putchar(',');
				json_num("due_ms", due, timed);
				putchar(',');
				json_num("due_in_ms", due - now, timed);
				if (show_attempts) {
					putchar(',');
					json_num("attempts_failed", n, counted);
				}
				putchar('}');
			} else {
				escape_text(stdout, id->str, id->len);
				if (timed) {
					out_localtime(when, sizeof(when), due);
					out_due(rel, sizeof(rel), due, now);
					printf("  %s  %s", when, rel);
				} else {
					printf("  %s (score ", d > (double)MAX_MS ?
					    "never" : "invalid due time");
					escape_text(stdout, sc->str, sc->len);
					putchar(')');
				}
				if (counted)
					printf("  (%lld failed attempt%s)", n,
					    n == 1 ? "" : "s");
				else if (is_str(a)) {
					printf("  (failed attempts: ");
					escape_text(stdout, a->str, a->len);
					putchar(')');
				}
				putchar('\n');
			}
			shown++;
		}
		freeReplyObject(r);
	}
	if (c->json && rv == 0) {
		printf("]}\n");
		c->whole = 1;
	}
	return rv;
}

/* retry list (with the failed attempts) or scheduled list. */
static int
due_cmd(struct ctl *c, int retry)
{
	struct qkeys k;
	int rv;

	if (qkeys_make(&k, c->queue, NULL) == -1) {
		ctl_errx("out of memory");
		return EXIT_FAIL;
	}
	rv = due_list(c, retry ? k.retry : k.scheduled, k.attempts, retry);
	qkeys_free(&k);
	return rv;
}

int
cmd_retry_list(struct ctl *c)
{
	return due_cmd(c, 1);
}

int
cmd_scheduled_list(struct ctl *c)
{
	return due_cmd(c, 0);
}

/* ---- moves ---- */

/*
 * Runs SCRIPT on KEYS for the ids of the command line, CHUNK_IDS per
 * call; each answers how many it found. Adds them to *DONE and marks the
 * ids found in FOUND. 0, or -1 after a message.
 */
static int
by_ids(struct ctl *c, const char *script, int nkeys, const char **keys,
    long long *done, char *found)
{
	for (int i = 0; i < c->nids; i += CHUNK_IDS) {
		int n = c->nids - i < CHUNK_IDS ? c->nids - i : CHUNK_IDS;
		redisReply *r = ctl_eval(c, script, nkeys, keys, n,
		    (const char **)c->ids + i, NULL);

		if (r == NULL)
			return -1;
		if (r->type != REDIS_REPLY_ARRAY || (int)r->elements != n) {
			freeReplyObject(r);
			bad_reply(c, "the script");
			return -1;
		}
		for (int j = 0; j < n; j++) {
			long long k = reply_ll(r->element[j], 0);

			*done += k;
			found[i + j] = k > 0;
		}
		freeReplyObject(r);
	}
	return 0;
}

/*
 * Runs SCRIPT on KEYS in chunks of CHUNK_ALL until it has moved the TOTAL
 * ids the list held at the start (ids that die meanwhile wait for the
 * next run) or the list is empty. 0, or -1 after a message.
 */
static int
all_chunks(struct ctl *c, const char *script, int nkeys, const char **keys,
    long long total, long long *done)
{
	while (*done < total) {
		char nbuf[32];
		const char *args[] = { nbuf };
		long long n = total - *done < CHUNK_ALL ? total - *done :
		    CHUNK_ALL;
		redisReply *r;

		snprintf(nbuf, sizeof(nbuf), "%lld", n);
		if ((r = ctl_eval(c, script, nkeys, keys, 1, args,
		    NULL)) == NULL)
			return -1;
		n = reply_ll(r, 0);
		freeReplyObject(r);
		if (n <= 0)
			break;
		*done += n;
	}
	return 0;
}

/* Prints the outcome of a move; the exit status. */
static int
report_move(struct ctl *c, const char *key, const char *verb,
    const char *from, long long done, const char *found, int failed)
{
	int missing = 0;

	for (int i = 0; found && i < c->nids; i++)
		missing += !found[i];
	if (failed) {
		fflush(stdout);
		fputs("taskworkerctl: stopped: ", stderr);
		fprintf(stderr, verb, done, done == 1 ? "" : "s");
		fputc('\n', stderr);
		return c->status ? c->status : EXIT_FAIL;
	}
	if (c->json) {
		printf("{");
		json_s("queue", c->queue);
		printf(",\"%s\":%lld,\"not_found\":[", key, done);
		for (int i = 0, n = 0; found && i < c->nids; i++)
			if (!found[i]) {
				printf("%s", n++ ? "," : "");
				escape_json(stdout, c->ids[i],
				    strlen(c->ids[i]));
			}
		printf("]}\n");
		c->whole = 1;
	} else {
		printf(verb, done, done == 1 ? "" : "s");
		putchar('\n');
	}
	for (int i = 0; found && i < c->nids; i++)
		if (!found[i]) {
			fflush(stdout);
			fputs("taskworkerctl: ", stderr);
			escape_text(stderr, c->ids[i], strlen(c->ids[i]));
			fprintf(stderr, ": not in %s\n", from);
		}
	return missing ? EXIT_FAIL : 0;
}

/* Where in the dead list an id of the command line was seen. */
struct spot {
	long long at;		/* its index, from the head */
	int id;			/* which of c->ids */
};

static const struct ctl *sort_ctl;	/* for qsort, which takes no arg */

static int
order_cmp(const void *a, const void *b)
{
	return strcmp(sort_ctl->ids[*(const int *)a],
	    sort_ctl->ids[*(const int *)b]);
}

/* The id equal to S (LEN bytes) among those WANTED, or -1. */
static int
lookup(const struct ctl *c, const int *order, const char *wanted,
    const char *s, size_t len)
{
	int lo = 0, hi = c->nids - 1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2, i = order[mid];
		size_t il = strlen(c->ids[i]);
		int cmp = memcmp(s, c->ids[i], len < il ? len : il);

		if (cmp == 0)
			cmp = len < il ? -1 : len > il;
		if (cmp == 0)
			return wanted[i] ? i : -1;
		if (cmp < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return -1;
}

/*
 * Reads KEY, a list, SCAN_PAGE entries per LRANGE (so Redis is never held
 * however long it is), for the ids marked in WANTED; their places, in
 * list order, in *SPOTS (*NSPOTS of them). 0, or -1 after a message.
 */
static int
find_spots(struct ctl *c, const char *key, const int *order,
    const char *wanted, struct spot **spots, size_t *nspots)
{
	long long len = key_size(c, "LLEN", key);
	size_t cap = 0;

	*spots = NULL;
	*nspots = 0;
	if (len < 0)
		return -1;
	for (long long i = 0; i < len; i += SCAN_PAGE) {
		char from[32], to[32];
		const char *argv[] = { "LRANGE", key, from, to };
		redisReply *r;

		snprintf(from, sizeof(from), "%lld", i);
		snprintf(to, sizeof(to), "%lld", i + SCAN_PAGE - 1);
		if ((r = ctl_command(c, 4, argv, NULL)) == NULL)
			return -1;
		if (r->type != REDIS_REPLY_ARRAY) {
			freeReplyObject(r);
			return bad_reply(c, "LRANGE"), -1;
		}
		for (size_t j = 0; j < r->elements; j++) {
			redisReply *e = r->element[j];
			int id;

			if (!is_str(e) || (id = lookup(c, order, wanted, e->str,
			    e->len)) == -1)
				continue;
			if (*nspots == cap) {
				struct spot *more = realloc(*spots,
				    (cap = cap ? 2 * cap : 64) * sizeof(**spots));

				if (more == NULL) {
					freeReplyObject(r);
					ctl_errx("out of memory");
					c->status = EXIT_FAIL;
					return -1;
				}
				*spots = more;
			}
			(*spots)[*nspots].at = i + (long long)j;
			(*spots)[(*nspots)++].id = id;
		}
		if (r->elements < SCAN_PAGE)
			i = len;	/* the list shrank meanwhile */
		freeReplyObject(r);
	}
	return 0;
}

/*
 * Runs SCRIPT (requeue_ids_lua or purge_ids_lua) on KEYS for SPOTS,
 * CHUNK_IDS per call: each id still at its place moves (counted in *DONE
 * and FOUND), each that the list shifted away is marked in WANTED to be
 * looked for again. 0, or -1 after a message.
 */
static int
move_spots(struct ctl *c, const char *script, int nkeys, const char **keys,
    const struct spot *spots, size_t nspots, const char *marker,
    long long *done, char *found, char *wanted)
{
	const char **args = calloc(1 + 2 * CHUNK_IDS, sizeof(char *));
	char (*at)[24] = calloc(CHUNK_IDS, sizeof(*at));
	int rv = 0;

	if (args == NULL || at == NULL) {
		ctl_errx("out of memory");
		c->status = EXIT_FAIL;
		rv = -1;
	}
	for (size_t i = 0; rv == 0 && i < nspots; i += CHUNK_IDS) {
		size_t n = nspots - i < CHUNK_IDS ? nspots - i : CHUNK_IDS;
		redisReply *r;

		args[0] = marker;
		for (size_t j = 0; j < n; j++) {
			snprintf(at[j], sizeof(at[j]), "%lld", spots[i + j].at);
			args[1 + 2 * j] = at[j];
			args[2 + 2 * j] = c->ids[spots[i + j].id];
		}
		if ((r = ctl_eval(c, script, nkeys, keys, 1 + 2 * (int)n, args,
		    NULL)) == NULL) {
			rv = -1;
			break;
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
			freeReplyObject(r);
			bad_reply(c, "the script");
			rv = -1;
			break;
		}
		for (size_t j = 0; j < n; j++) {
			int id = spots[i + j].id;

			if (reply_ll(r->element[j], 0) == 1) {
				(*done)++;
				found[id] = 1;
			} else
				wanted[id] = 1;
		}
		freeReplyObject(r);
	}
	free(args);
	free(at);
	return rv;
}

/*
 * dead requeue/purge of the ids named. The dead list may hold a million
 * ids: rather than one LREM per id over all of it, the ids are looked up
 * by reading the list in pages, then each script moves those still at
 * the place they were seen, and removes them in one pass from the nearer
 * end. Ids the daemons shifted meanwhile (a trim, another requeue) are
 * looked for again, ROUNDS times at most.
 */
static int
dead_by_ids(struct ctl *c, const char *script, int nkeys, const char **keys,
    long long *done, char *found)
{
	char *wanted = malloc(c->nids);
	int *order = calloc(c->nids, sizeof(int));
	char marker[96];
	struct timespec ts;
	int rv = 0;

	if (wanted == NULL || order == NULL) {
		free(wanted);
		free(order);
		ctl_errx("out of memory");
		c->status = EXIT_FAIL;
		return -1;
	}
	/* A value no producer or daemon writes: not an id, a control byte. */
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(marker, sizeof(marker), "\001taskworkerctl %ld %lld.%09ld",
	    (long)getpid(), (long long)ts.tv_sec, ts.tv_nsec);
	memset(wanted, 1, c->nids);
	for (int i = 0; i < c->nids; i++)
		order[i] = i;
	sort_ctl = c;
	qsort(order, c->nids, sizeof(int), order_cmp);
	for (int round = 0; round < ROUNDS && rv == 0; round++) {
		struct spot *spots;
		size_t nspots;

		if (memchr(wanted, 1, c->nids) == NULL)
			break;
		if (find_spots(c, keys[0], order, wanted, &spots,
		    &nspots) == -1) {
			rv = -1;
			break;
		}
		memset(wanted, 0, c->nids);
		rv = move_spots(c, script, nkeys, keys, spots, nspots, marker,
		    done, found, wanted);
		free(spots);
	}
	free(wanted);
	free(order);
	return rv;
}

/* dead requeue and dead purge. */
static int
dead_move(struct ctl *c, const char *key, const char *verb,
    const char *ids_lua, const char *all_lua, int requeue)
{
	struct qkeys k;
	const char *keys[4];
	long long done = 0, total;
	char *found = NULL;
	int failed = 0, rv;

	if (qkeys_make(&k, c->queue, NULL) == -1 ||
	    (c->nids > 0 && (found = calloc(c->nids, 1)) == NULL)) {
		ctl_errx("out of memory");
		return EXIT_FAIL;
	}
	keys[0] = k.dead;
	if (requeue) {
		keys[1] = k.queue;
		keys[2] = k.reason;
		keys[3] = k.attempts;
	} else
		keys[1] = k.reason;
	if (!want_type(c, k.dead, "list"))
		failed = 1;
	else if (c->all) {
		if ((total = key_size(c, "LLEN", k.dead)) < 0)
			failed = 1;
		else
			failed = all_chunks(c, all_lua, requeue ? 4 : 2, keys,
			    total, &done) == -1;
	} else
		failed = dead_by_ids(c, ids_lua, requeue ? 4 : 2, keys, &done,
		    found) == -1;
	rv = report_move(c, key, verb, k.dead, done, found, failed);
	free(found);
	qkeys_free(&k);
	return rv;
}

int
cmd_dead_requeue(struct ctl *c)
{
	return dead_move(c, "requeued", "requeued %lld id%s", requeue_ids_lua,
	    requeue_all_lua, 1);
}

int
cmd_dead_purge(struct ctl *c)
{
	return dead_move(c, "purged", "purged %lld id%s", purge_ids_lua,
	    purge_all_lua, 0);
}

int
cmd_retry_now(struct ctl *c)
{
	struct qkeys k;
	const char *keys[1];
	long long done = 0;
	char *found;
	int failed, rv;

	if (qkeys_make(&k, c->queue, NULL) == -1 ||
	    (found = calloc(c->nids, 1)) == NULL) {
		ctl_errx("out of memory");
		return EXIT_FAIL;
	}
	keys[0] = k.retry;
	failed = by_ids(c, retry_now_lua, 1, keys, &done, found) == -1;
	rv = report_move(c, "due_now", "made %lld id%s due now", k.retry, done,
	    found, failed);
	free(found);
	qkeys_free(&k);
	return rv;
}

/* ---- pause ---- */

/* "USER@HOST" of whoever runs this, for QUEUE:paused. */
static void
who(char *buf, size_t size)
{
	struct passwd *pw = getpwuid(getuid());
	char host[256] = "";

	if (gethostname(host, sizeof(host) - 1) == -1 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	if (pw != NULL)
		snprintf(buf, size, "%s@%s", pw->pw_name, host);
	else
		snprintf(buf, size, "%u@%s", (unsigned)getuid(), host);
	for (char *p = buf; *p; p++)
		if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
			*p = '_';
}

static void
print_pause(struct ctl *c, const char *value, const char *text)
{
	long long at = 0, now;
	int has_at = 0;
	const char *by = NULL;
	size_t bylen = 0;
	char when[64], ago[32];

	if (value)
		parse_pause(value, &at, &has_at, &by, &bylen);
	if (c->json) {
		putchar(',');
		json_num("at_ms", at, has_at);
		putchar(',');
		json_strn("by", by, bylen);
		putchar(',');
		json_s("value", value);
		printf("}\n");
		c->whole = 1;
		return;
	}
	fputs(text, stdout);
	escape_text(stdout, c->queue, strlen(c->queue));
	if (has_at && (now = ctl_now_ms(c)) >= 0) {
		out_localtime(when, sizeof(when), at);
		out_duration(ago, sizeof(ago), now - at);
		printf(" (paused since %s, %s ago", when, ago);
	} else
		printf(" (paused");
	if (by) {
		printf(", by ");
		escape_text(stdout, by, bylen);
	}
	printf(")\n");
}

int
cmd_pause(struct ctl *c)
{
	struct qkeys k;
	char me[600];
	const char *keys[1], *args[] = { me };
	redisReply *r;
	int rv = 0;

	if (qkeys_make(&k, c->queue, NULL) == -1) {
		ctl_errx("out of memory");
		return EXIT_FAIL;
	}
	who(me, sizeof(me));
	keys[0] = k.paused;
	if ((r = ctl_eval(c, pause_lua, 1, keys, 1, args, NULL)) == NULL)
		rv = c->status;
	else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
		rv = bad_reply(c, "the pause script");
	else {
		int fresh = reply_ll(r->element[0], 0) == 1;
		const char *v = is_str(r->element[1]) ? r->element[1]->str :
		    NULL;

		if (c->json) {
			printf("{");
			json_s("queue", c->queue);
			printf(",\"paused\":true,\"already\":%s",
			    fresh ? "false" : "true");
		}
		print_pause(c, v, fresh ? "paused " : "already paused: ");
	}
	freeReplyObject(r);
	qkeys_free(&k);
	return rv;
}

int
cmd_resume(struct ctl *c)
{
	struct qkeys k;
	const char *keys[1];
	redisReply *r;
	int rv = 0;

	if (qkeys_make(&k, c->queue, NULL) == -1) {
		ctl_errx("out of memory");
		return EXIT_FAIL;
	}
	keys[0] = k.paused;
	if ((r = ctl_eval(c, resume_lua, 1, keys, 0, NULL, NULL)) == NULL)
		rv = c->status;
	else {
		const char *v = is_str(r) ? r->str : NULL;

		if (c->json) {
			printf("{");
			json_s("queue", c->queue);
			printf(",\"paused\":false,\"was_paused\":%s",
			    v ? "true" : "false");
			print_pause(c, v, "");
		} else if (v)
			print_pause(c, v, "resumed ");
		else {
			printf("not paused: ");
			escape_text(stdout, c->queue, strlen(c->queue));
			putchar('\n');
		}
	}
	freeReplyObject(r);
	qkeys_free(&k);
	return rv;
}
