/*
 * sentinel: where the Redis master is, asked of each sentinel in turn on
 * the loop, and followed through one subscription to +switch-master.
 */
#include <stdint.h>
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
#include "netaddr.h"
#include "sentinel.h"

/* hiredis 1.0 alone took the connect callback's context without const. */
#if HIREDIS_MAJOR == 1 && HIREDIS_MINOR == 0
#define CONNECT_CB_CONST
#else
#define CONNECT_CB_CONST const
#endif

#define CHANNEL		"+switch-master"
#define NAMELEN		(NETADDR_HOSTLEN + 10)	/* "[host]:port" */

struct sentinel;

/* One connection to a sentinel: the ask out, or the subscription. */
struct sconn {
	struct sentinel *s;
	redisAsyncContext *ac;	/* NULL: closed */
	int idx;		/* the sentinel it talks to */
	int up;			/* the connect callback said it is open */
	ev_timer timeout;	/* connect, then command */
};

struct saddr {
	char host[NETADDR_HOSTLEN + 1];
	int port;
	char name[NAMELEN];	/* as messages write it */
};

struct sentinel {
	struct ev_loop *loop;
	const struct config *cfg;
	struct resolver *res;	/* not used yet: names go to hiredis */
	sentinel_fn *on_master;
	void *arg;
	struct saddr *addrs;
	int n;

	/* A round asks each sentinel once, from START, until one answers. */
	struct sconn ask;
	int asking;		/* a round is out */
	int start;		/* the sentinel that last answered */
	int cur;		/* the one asked now */
	int tried;		/* ... and how many before it this round */
	int force;		/* sentinel_ask(): tell the next answer anyway */
	ev_timer round;		/* the next ask: next turn, or a backoff */
	struct backoff bo;
	struct outage outage;

	/* The subscription to +switch-master, on one sentinel. */
	struct sconn sub;
	int sub_next;		/* where it goes after a loss */
	ev_timer resub;
	struct backoff sub_bo;
	struct outage sub_outage;

	char host[NETADDR_HOSTLEN + 1];	/* the master known */
	int port;
	int known;
	char last_error[400];

	ev_timer defer;		/* on_master owed, on a turn of its own */
	int owed;
};

static void ask_failed(struct sentinel *s, const char *why);
static void sub_lost(struct sentinel *s, const char *why);

/* ---- connections ---- */

static void
sc_wait(struct sconn *c, int ms)
{
	ev_timer_stop(c->s->loop, &c->timeout);
	ev_timer_set(&c->timeout, ms / 1000.0, 0.);
	ev_timer_start(c->s->loop, &c->timeout);
}

/*
 * Closes C on purpose. Its callbacks, which hiredis runs with a NULL
 * reply as it frees the context (at once, or after the reply callback it
 * is in), find no sconn and do nothing.
 */
static void
sc_close(struct sconn *c)
{
	redisAsyncContext *ac = c->ac;

	ev_timer_stop(c->s->loop, &c->timeout);
	c->ac = NULL;
	c->up = 0;
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);
	}
}

/* C failed (and is closed, or being freed by hiredis): its owner decides. */
static void
sc_failed(struct sconn *c, const char *why)
{
	if (c == &c->s->ask)
		ask_failed(c->s, why);
	else
		sub_lost(c->s, why);
}

static void
sc_drop(struct sconn *c, const char *why)
{
	sc_close(c);
	sc_failed(c, why);
}

/* The sconn of a callback's context, or NULL for one being torn down. */
static struct sconn *
sc_of(const redisAsyncContext *ac)
{
	struct sconn *c = ac->data;

	return c != NULL && c->ac == ac ? c : NULL;
}

/* AC, C's context, is lost, and hiredis frees it: C is closed. */
static void
sc_gone(struct sconn *c, const redisAsyncContext *ac, const char *dflt)
{
	char why[200];

	snprintf(why, sizeof(why), "%s", ac->errstr[0] ? ac->errstr : dflt);
	ev_timer_stop(c->s->loop, &c->timeout);
	c->ac = NULL;
	c->up = 0;
	sc_failed(c, why);
}

static void
connect_cb(CONNECT_CB_CONST redisAsyncContext *ac, int status)
{
	struct sconn *c = sc_of(ac);

	if (c == NULL)
		return;
	if (status == REDIS_OK) {
		c->up = 1;
		sc_wait(c, c->s->cfg->redis.command_timeout_ms);
		return;
	}
	/* hiredis frees the context after this returns; no disconnect_cb. */
	sc_gone(c, ac, "cannot connect");
}

static void
disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct sconn *c = sc_of(ac);

	(void)status;
	/* hiredis frees the context after this returns. */
	if (c != NULL)
		sc_gone(c, ac, "the sentinel closed the connection");
}

static void
timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sconn *c = w->data;
	char why[96];

	(void)loop;
	(void)revents;
	snprintf(why, sizeof(why), "no answer within %d ms", c->up ?
	    c->s->cfg->redis.command_timeout_ms :
	    c->s->cfg->redis.connect_timeout_ms);
	sc_drop(c, why);
}

/* A reply to AUTH, on either connection. */
static void
auth_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct sconn *c = sc_of(ac);
	redisReply *reply = r;
	char why[300];

	(void)priv;
	if (c == NULL || reply == NULL || reply->type != REDIS_REPLY_ERROR)
		return;
	snprintf(why, sizeof(why), "AUTH failed: %s", reply->str);
	sc_drop(c, why);
}

/*
 * Opens C to sentinel IDX and sends AUTH (when the sentinels want a
 * password) and the command ARGV with FN for its replies. Returns -1
 * with WHY filled when that failed at once (C is closed then).
 */
static int
sc_open(struct sconn *c, int idx, int argc, const char **argv,
    redisCallbackFn *fn, char *why, size_t len)
{
	struct sentinel *s = c->s;
	const struct config *cfg = s->cfg;
	const char *auth[3] = { "AUTH" };
	redisAsyncContext *ac;
	int n = 1;

	c->idx = idx;
	c->up = 0;
	ac = redisAsyncConnect(s->addrs[idx].host, s->addrs[idx].port);
	if (ac == NULL) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	if (ac->err) {
		snprintf(why, len, "%s", ac->errstr);
		redisAsyncFree(ac);
		return -1;
	}
	c->ac = ac;
	ac->data = c;
	redisEnableKeepAlive(&ac->c);
	redisLibevAttach(s->loop, ac);
	redisAsyncSetConnectCallback(ac, connect_cb);
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
	sc_wait(c, cfg->redis.connect_timeout_ms);
	if (cfg->redis.sentinel_password[0] != '\0') {
		if (cfg->redis.sentinel_username[0] != '\0')
			auth[n++] = cfg->redis.sentinel_username;
		auth[n++] = cfg->redis.sentinel_password;
	}
	if ((n > 1 && redisAsyncCommandArgv(ac, auth_cb, NULL, n, auth,
	    NULL) != REDIS_OK) ||
	    redisAsyncCommandArgv(ac, fn, NULL, argc, argv, NULL) !=
	    REDIS_OK) {
		snprintf(why, len, "cannot send %s", argv[0]);
		sc_close(c);
		return -1;
	}
	return 0;
}

/* ---- what the owner hears ---- */

static void
defer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sentinel *s = w->data;
	char host[NETADDR_HOSTLEN + 1];

	(void)loop;
	(void)revents;
	if (!s->owed || !s->known)
		return;
	s->owed = 0;
	/* The owner may free S in the call: it gets a copy. */
	memcpy(host, s->host, sizeof(host));
	s->on_master(s->arg, host, s->port);
}

/* The master is at HOST:PORT, says FROM; FORCE: tell the owner anyway. */
static void
learn(struct sentinel *s, const char *host, int port, int force,
    const char *from)
{
	char was[NAMELEN], now[NAMELEN];
	int changed = !s->known || s->port != port ||
	    strcmp(s->host, host) != 0;

	if (changed) {
		netaddr_format(now, sizeof(now), host, port);
		if (s->known)
			log_notice("redis master %s moved from %s to %s (%s)",
			    s->cfg->redis.sentinel_master, netaddr_format(was,
			    sizeof(was), s->host, s->port), now, from);
		else
			log_info("redis master %s is at %s (%s)",
			    s->cfg->redis.sentinel_master, now, from);
		snprintf(s->host, sizeof(s->host), "%s", host);
		s->port = port;
		s->known = 1;
	}
	if (changed || force) {
		s->owed = 1;
		if (!ev_is_active(&s->defer))
			ev_timer_start(s->loop, &s->defer);
	}
}

/* ---- asking ---- */

static void
round_in(struct sentinel *s, double seconds)
{
	ev_timer_stop(s->loop, &s->round);
	ev_timer_set(&s->round, seconds, 0.);
	ev_timer_start(s->loop, &s->round);
}

/* "HOST" and "PORT" of an answer into HOST and *PORT; -1 if not that. */
static int
parse_addr(const char *h, size_t hlen, const char *p, char *host, int *port)
{
	char *end;
	long v;

	if (hlen == 0 || hlen > NETADDR_HOSTLEN || memchr(h, '\0', hlen) ||
	    memchr(h, ' ', hlen))
		return -1;
	v = strtol(p, &end, 10);
	if (end == p || *end != '\0' || v < 1 || v > 65535)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (int)v;
	return 0;
}

static void
addr_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct sconn *c = sc_of(ac);
	struct sentinel *s;
	redisReply *reply = r;
	char host[NETADDR_HOSTLEN + 1], from[NAMELEN + 16], why[300];
	int port, was_down;

	(void)priv;
	if (c == NULL || reply == NULL)
		return;
	s = c->s;
	if (reply->type == REDIS_REPLY_NIL) {
		snprintf(why, sizeof(why), "does not know master %s",
		    s->cfg->redis.sentinel_master);
		sc_drop(c, why);
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "SENTINEL GET-MASTER-ADDR-BY-NAME "
		    "failed: %s", reply->str);
		sc_drop(c, why);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_STRING ||
	    parse_addr(reply->element[0]->str, reply->element[0]->len,
	    reply->element[1]->str, host, &port) == -1) {
		sc_drop(c, "unexpected answer to SENTINEL "
		    "GET-MASTER-ADDR-BY-NAME");
		return;
	}
	sc_close(c);
	s->asking = 0;
	s->start = s->cur;
	backoff_reset(&s->bo);
	was_down = outage_end(&s->outage);
	s->last_error[0] = '\0';
	snprintf(from, sizeof(from), "sentinel %s", s->addrs[s->cur].name);
	if (was_down)
		log_info("redis %s answers again", from);
	learn(s, host, port, s->force, from);
	s->force = 0;
	if (s->sub.ac == NULL && !ev_is_active(&s->resub)) {
		s->sub_next = s->cur;
		ev_timer_set(&s->resub, 0., 0.);
		ev_timer_start(s->loop, &s->resub);
	}
}

static void
round_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sentinel *s = w->data;
	const char *argv[] = { "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
	    s->cfg->redis.sentinel_master };
	char why[300];

	(void)loop;
	(void)revents;
	if (!s->asking) {
		s->asking = 1;
		s->tried = 0;
		s->cur = s->start;
	}
	if (sc_open(&s->ask, s->cur, 3, argv, addr_cb, why,
	    sizeof(why)) == -1)
		ask_failed(s, why);
}

/* The sentinel asked failed: the next one, or a backoff after them all. */
static void
ask_failed(struct sentinel *s, const char *why)
{
	char msg[sizeof(s->last_error)];
	int delay;

	log_debug("redis sentinel %s: %s", s->addrs[s->cur].name, why);
	snprintf(msg, sizeof(msg), "no sentinel answered for master %s "
	    "(%d asked; the last, %s: %s)", s->cfg->redis.sentinel_master,
	    s->n, s->addrs[s->cur].name, why);
	if (++s->tried < s->n) {
		s->cur = (s->cur + 1) % s->n;
		round_in(s, 0.);
		return;
	}
	s->asking = 0;
	memcpy(s->last_error, msg, sizeof(msg));
	delay = backoff_next(&s->bo);
	if (outage_note(&s->outage, msg))
		log_warnx("redis sentinels: %s; asking again", msg);
	else
		log_debug("redis sentinels: %s; again in %d ms", msg, delay);
	round_in(s, delay / 1000.0);
}

/* ---- following ---- */

/* "NAME OLDHOST OLDPORT NEWHOST NEWPORT" of a +switch-master message. */
static void
switch_master(struct sentinel *s, const char *msg, size_t len)
{
	const char *f[5], *p = msg, *end = msg + len, *sp;
	size_t flen[5];
	char host[NETADDR_HOSTLEN + 1], port[8], from[NAMELEN + 32];
	int i, newport;

	for (i = 0; i < 5 && p < end; i++) {
		sp = memchr(p, ' ', (size_t)(end - p));
		f[i] = p;
		flen[i] = (size_t)((sp != NULL ? sp : end) - p);
		p = sp != NULL ? sp + 1 : end;
	}
	if (i < 5 || p != end || flen[4] >= sizeof(port)) {
		log_warnx("redis sentinel %s: a " CHANNEL " message not "
		    "understood", s->addrs[s->sub.idx].name);
		return;
	}
	if (flen[0] != strlen(s->cfg->redis.sentinel_master) ||
	    memcmp(f[0], s->cfg->redis.sentinel_master, flen[0]) != 0)
		return;		/* another master's */
	memcpy(port, f[4], flen[4]);
	port[flen[4]] = '\0';
	if (parse_addr(f[3], flen[3], port, host, &newport) == -1) {
		log_warnx("redis sentinel %s: a " CHANNEL " message with no "
		    "address", s->addrs[s->sub.idx].name);
		return;
	}
	snprintf(from, sizeof(from), CHANNEL " from sentinel %s",
	    s->addrs[s->sub.idx].name);
	learn(s, host, newport, 0, from);
}

static void
sub_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct sconn *c = sc_of(ac);
	struct sentinel *s;
	redisReply *reply = r, *kind, *body;
	char why[300];

	(void)priv;
	if (c == NULL || reply == NULL)
		return;
	s = c->s;
	if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "SUBSCRIBE failed: %s", reply->str);
		sc_drop(c, why);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    (kind = reply->element[0])->type != REDIS_REPLY_STRING)
		return;
	body = reply->element[2];
	if (strcmp(kind->str, "message") == 0 &&
	    body->type == REDIS_REPLY_STRING) {
		switch_master(s, body->str, body->len);
		return;
	}
	if (strcmp(kind->str, "subscribe") != 0)
		return;
	/* Subscribed: no answer is awaited until the next message. */
	ev_timer_stop(s->loop, &c->timeout);
	backoff_reset(&s->sub_bo);
	if (outage_end(&s->sub_outage))
		log_info("redis sentinel %s: following failovers again",
		    s->addrs[c->idx].name);
	else
		log_debug("redis sentinel %s: following failovers",
		    s->addrs[c->idx].name);
	/* A switch before this is not heard: ask, to be sure. */
	if (!s->asking)
		round_in(s, 0.);
}

static void
resub_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sentinel *s = w->data;
	const char *argv[] = { "SUBSCRIBE", CHANNEL };
	char why[300];

	(void)loop;
	(void)revents;
	if (sc_open(&s->sub, s->sub_next, 2, argv, sub_cb, why,
	    sizeof(why)) == -1)
		sub_lost(s, why);
}

/* The subscription is gone: again after a backoff, on the next sentinel. */
static void
sub_lost(struct sentinel *s, const char *why)
{
	char msg[400];
	int delay = backoff_next(&s->sub_bo);

	snprintf(msg, sizeof(msg), "sentinel %s: %s", s->addrs[s->sub.idx].name,
	    why);
	if (outage_note(&s->sub_outage, msg))
		log_warnx("redis %s; failovers are not followed until a "
		    "sentinel takes the subscription", msg);
	else
		log_debug("redis %s; subscribing again in %d ms", msg, delay);
	s->sub_next = (s->sub.idx + 1) % s->n;
	ev_timer_set(&s->resub, delay / 1000.0, 0.);
	ev_timer_start(s->loop, &s->resub);
}

/* ---- the interface ---- */

static int
parse_sentinels(struct sentinel *s, const struct config *cfg)
{
	int n = cfg->redis.nsentinels;
	const char *why;

	free(s->addrs);
	s->n = 0;
	if ((s->addrs = calloc(n > 0 ? (size_t)n : 1, sizeof(*s->addrs))) ==
	    NULL)
		return -1;
	for (int i = 0; i < n; i++) {
		struct saddr *a = &s->addrs[s->n];

		why = netaddr_host_port(cfg->redis.sentinels[i], a->host,
		    sizeof(a->host), &a->port);
		if (why != NULL) {	/* config.c refuses it first */
			log_warnx("redis.sentinels[%d]: %s", i, why);
			continue;
		}
		netaddr_format(a->name, sizeof(a->name), a->host, a->port);
		s->n++;
	}
	return s->n > 0 ? 0 : -1;
}

struct sentinel *
sentinel_new(struct ev_loop *loop, const struct config *cfg,
    struct resolver *res, sentinel_fn *on_master, void *arg)
{
	struct sentinel *s = calloc(1, sizeof(*s));
	uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);

	if (s == NULL)
		return NULL;
	s->loop = loop;
	s->cfg = cfg;
	s->res = res;
	s->on_master = on_master;
	s->arg = arg;
	if (parse_sentinels(s, cfg) == -1) {
		free(s->addrs);
		free(s);
		return NULL;
	}
	s->ask.s = s->sub.s = s;
	ev_init(&s->ask.timeout, timeout_cb);
	s->ask.timeout.data = &s->ask;
	ev_init(&s->sub.timeout, timeout_cb);
	s->sub.timeout.data = &s->sub;
	ev_init(&s->round, round_cb);
	s->round.data = s;
	ev_init(&s->resub, resub_cb);
	s->resub.data = s;
	ev_timer_init(&s->defer, defer_cb, 0., 0.);
	s->defer.data = s;
	backoff_init(&s->bo, cfg->worker.retry_min_ms,
	    cfg->worker.retry_max_ms, seed ^ 0x5e);
	backoff_init(&s->sub_bo, cfg->worker.retry_min_ms,
	    cfg->worker.retry_max_ms, seed ^ 0x5b);
	snprintf(s->last_error, sizeof(s->last_error),
	    "no sentinel has answered yet");
	round_in(s, 0.);
	return s;
}

void
sentinel_free(struct sentinel *s)
{
	if (s == NULL)
		return;
	sc_close(&s->ask);
	sc_close(&s->sub);
	ev_timer_stop(s->loop, &s->round);
	ev_timer_stop(s->loop, &s->resub);
	ev_timer_stop(s->loop, &s->defer);
	free(s->addrs);
	free(s);
}

void
sentinel_reconfigure(struct sentinel *s, const struct config *cfg)
{
	const struct config *old = s->cfg;
	int renamed = strcmp(old->redis.sentinel_master,
	    cfg->redis.sentinel_master) != 0;

	s->cfg = cfg;
	backoff_limits(&s->bo, cfg->worker.retry_min_ms,
	    cfg->worker.retry_max_ms);
	backoff_limits(&s->sub_bo, cfg->worker.retry_min_ms,
	    cfg->worker.retry_max_ms);
	if (!config_redis_conn_changed(old, cfg))
		return;
	sc_close(&s->ask);
	sc_close(&s->sub);
	ev_timer_stop(s->loop, &s->resub);
	s->asking = 0;
	s->start = 0;
	if (renamed) {
		/* Another master: what was known is not its address. */
		s->known = 0;
		s->owed = 0;
		ev_timer_stop(s->loop, &s->defer);
	}
	if (parse_sentinels(s, cfg) == -1) {
		snprintf(s->last_error, sizeof(s->last_error),
		    "no sentinel configured");
		ev_timer_stop(s->loop, &s->round);
		return;
	}
	round_in(s, 0.);
}

void
sentinel_ask(struct sentinel *s)
{
	s->force = 1;
	if (!s->asking && s->n > 0)
		round_in(s, 0.);
}

const char *
sentinel_master(const struct sentinel *s, int *port)
{
	if (!s->known)
		return NULL;
	*port = s->port;
	return s->host;
}

const char *
sentinel_last_error(const struct sentinel *s)
{
	return s->last_error;
}
