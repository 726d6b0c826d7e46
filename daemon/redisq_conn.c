/*
 * redisq connections: one carries scripts, acks and dead letters; one
 * per queue waits in BLMOVE while all are empty. Each says its handshake.
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
 * The connection is gone (already freed or being freed by hiredis). The
 * link logs and counts it and reconnects after a backoff (AT_ONCE: on the
 * next turn).
 */
static void
lost(struct rconn *c, const char *why, int at_once)
{
	struct redisq *q = c->q;

	if (c->link.state == LINK_DOWN || c->link.state == LINK_BACKOFF)
		return;
	c->ac = NULL;
	c->pending = 0;
	c->unblock_sent = 0;
	c->blocked = 0;		/* a BLMOVE moves nothing: nothing lost */
	link_lost(&c->link, why, at_once);
	/* The master may have moved: where is it now? */
	if (q->sent != NULL && !at_once)
		sentinel_ask(q->sent);
	if (c->qi < 0) {
		if (q->script_inflight)
			rq_need_recovery(q);
		q->script_inflight = 0;
		q->moves_out = 0;
		ev_timer_stop(q->loop, &q->mover);
		q->recovered = 0;
		q->reconcile_left = 0;
		q->reconcile_all = 0;
		q->claimed = 0;
		q->claimed_mask = 0;
		q->sample_out = 0;
		rq_state_changed(q);
		rq_requeue_answer(q, 0);
	}
}

void
rc_lost(struct rconn *c, const char *why)
{
	lost(c, why, 0);
}

static void
drop(struct rconn *c, const char *why, int at_once)
{
	redisAsyncContext *ac = c->ac;

	lost(c, why, at_once);
	if (ac)
		redisAsyncFree(ac);
}

/* Closes the connection on purpose; its pending callbacks see NULL. */
void
rc_drop(struct rconn *c, const char *why)
{
	drop(c, why, 0);
}

/* Closes the connection, if up or on its way, and connects again now. */
void
rc_restart(struct rconn *c, const char *why)
{
	if (c->link.state == LINK_DOWN || c->link.state == LINK_BACKOFF)
		link_start(&c->link);
	else
		drop(c, why, 1);
}

static void
await(struct rconn *c)
{
	const struct config *cfg = c->q->cfg;

	link_wait(&c->link, cfg->redis.command_timeout_ms,
	    c->qi >= 0 ? BLOCK_SECONDS * 1000 : 0);
}

/*
 * Every reply callback starts here. Returns the connection when the reply
 * belongs to its live context, NULL for a context being torn down.
 */
struct rconn *
rc_reply(redisAsyncContext *ac, const redisReply *reply)
{
	struct rconn *c = ac->data;

	if (c == NULL || c->ac != ac)
		return NULL;
	/* A replica now: the sentinels say where the master went. */
	if (c->q->sent != NULL && reply != NULL &&
	    reply->type == REDIS_REPLY_ERROR &&
	    strncmp(reply->str, "READONLY", 8) == 0) {
		c->q->master_suspect = 1;
		sentinel_ask(c->q->sent);
	}
	if (--c->pending > 0)
		await(c);
	else
		link_idle(&c->link);
	return c;
}

int
rc_command(struct rconn *c, redisCallbackFn *fn, void *priv, int argc,
    const char **argv, const size_t *lens)
{
	if (c->ac == NULL)
		return -1;
	if (redisAsyncCommandArgv(c->ac, fn, priv, argc, argv, lens) !=
	    REDIS_OK)
		return -1;
	if (c->pending++ == 0)
		await(c);
	return 0;
}

/* The link's timeout: no answer in time. */
static void
expired(void *arg, const char *why)
{
	rc_drop(arg, why);
}

static void
connect_cb(CONNECT_CB_CONST redisAsyncContext *ac, int status)
{
	struct rconn *c = ac->data;

	if (c == NULL || c->ac != ac)
		return;
	if (status == REDIS_OK) {
		link_handshake(&c->link);
		return;
	}
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
rc_ready(struct rconn *c)
{
	struct redisq *q = c->q;

	link_ready(&c->link);
	if (c->qi < 0) {
		/* Whatever this worker left in its lists goes back first. */
		rq_need_recovery(q);
		rq_send_beat(q);
		rq_move_due(q);
		rq_state_changed(q);
	}
	redisq_kick(q);
}

/* A handshake reply's PRIV: an index into rconn.hello, or one of these. */
#define HS_INFO		(RHELLO_MAX + 0)
#define HS_ID		(RHELLO_MAX + 1)
#define HS_ROLE		(RHELLO_MAX + 2)

static const char *
hs_what(const struct rconn *c, int step)
{
	return step == HS_INFO ? "INFO" : step == HS_ID ? "CLIENT ID" :
	    step == HS_ROLE ? "ROLE" : c->hello[step].what;
}

/* ROLE's first element: "master", "slave" or "sentinel". */
static int
is_master(const redisReply *r)
{
	return r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
	    r->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(r->element[0]->str, "master") == 0;
}

static void
handshake_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = rc_reply(ac, r);
	redisReply *reply = r;
	int step = (int)(intptr_t)priv;
	char why[300], version[64];

	if (c == NULL || reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR &&
	    (step >= RHELLO_MAX || !c->hello[step].optional)) {
		snprintf(why, sizeof(why), "%s failed: %s", hs_what(c, step),
		    reply->str);
		rc_drop(c, why);
		return;
	}
	if (step == HS_ROLE && !is_master(reply)) {
		snprintf(why, sizeof(why), "%s:%d is not the master (ROLE)",
		    c->host, c->port);
		rc_drop(c, why);	/* and the sentinels are asked again */
		return;
	}
	if (step == HS_INFO) {
		if (reply->type != REDIS_REPLY_STRING ||
		    !version_ok(reply->str, version, sizeof(version))) {
			snprintf(why, sizeof(why), "the Redis server of the "
			    "%s is version %s; taskworkerd needs Redis 6.2 or "
			    "newer (BLMOVE, LMOVE)", c->link.name,
			    reply->type == REDIS_REPLY_STRING ? version :
			    "unknown");
			rq_fatal(c->q, 70, why);
			rc_drop(c, "server too old");
			return;
		}
		log_debug("%s: server version %s", c->link.name, version);
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
	char name[300];
	const char *argv[2];
	int n;

	/* Client names may not hold spaces; worker ids have none. */
	snprintf(name, sizeof(name), "taskworkerd:%s:%s", cfg->worker.id,
	    c->qi < 0 ? "cmd" : "fetch");
	n = rhello(cfg, name, c->hello, &c->hello_buf);
	for (int i = 0; i < n; i++)
		if (rc_command(c, handshake_cb, (void *)(intptr_t)i,
		    c->hello[i].argc, c->hello[i].argv, NULL) == -1)
			return -1;
	if (c->qi < 0) {
		argv[0] = "INFO";
		argv[1] = "server";
	} else {
		argv[0] = "CLIENT";
		argv[1] = "ID";
	}
	if (rc_command(c, handshake_cb, (void *)(intptr_t)(c->qi < 0 ?
	    HS_INFO : HS_ID), 2, argv, NULL) == -1)
		return -1;
	n++;
	/* Where the sentinels sent it, the server must still be the master. */
	if (c->q->sent != NULL) {
		argv[0] = "ROLE";
		if (rc_command(c, handshake_cb, (void *)(intptr_t)HS_ROLE, 1,
		    argv, NULL) == -1)
			return -1;
		n++;
	}
	c->handshake_left = n;
	return 0;
}

/* Where the link connects next: the host, or nothing to resolve. */
static int
locate(void *arg, const char **names, char *why, size_t len)
{
	struct rconn *c = arg;
	const struct config *cfg = c->q->cfg;

	if (c->q->sent != NULL) {
		if (c->q->master[0] == '\0') {
			const char *last = sentinel_last_error(c->q->sent);

			/* "": a sentinel answered before (a reload asks anew). */
			snprintf(why, len, "no master known yet: %s", last[0] ?
			    last : "the sentinels are being asked");
			return -1;
		}
		snprintf(c->host, sizeof(c->host), "%s", c->q->master);
		c->port = c->q->master_port;
	} else {
		if (cfg->redis.unix_socket[0]) {
			snprintf(c->host, sizeof(c->host), "%s",
			    cfg->redis.unix_socket);
			c->port = 0;
			return 0;
		}
		snprintf(c->host, sizeof(c->host), "%s", cfg->redis.host);
		c->port = cfg->redis.port;
	}
	names[0] = c->host;
	return 1;
}

static int
open_conn(void *arg, const char *const *addrs, int n, char *why, size_t len)
{
	struct rconn *c = arg;
	const struct config *cfg = c->q->cfg;
	redisAsyncContext *ac;

	if (n > 0 && addrs[0] == NULL)
		return -1;	/* WHY says why the name had no address */
	c->pending = 0;
	c->blocked = 0;
	c->unblock_sent = 0;
	ac = rconnect(c->q->loop, n == 0 ? cfg->redis.unix_socket : addrs[0],
	    n == 0 ? 0 : c->port, c, connect_cb, disconnect_cb, why, len);
	if (ac == NULL)
		return -1;
	c->ac = ac;
	if (handshake(c) == -1) {
		c->ac = NULL;	/* its callbacks see a context torn down */
		redisAsyncFree(ac);
		snprintf(why, len, "cannot send the handshake");
		return -1;
	}
	return 0;
}

static const struct link_ops rc_ops = { locate, open_conn, expired, NULL };

/* Connects on the next loop turn. */
void
rc_start(struct rconn *c)
{
	link_start(&c->link);
}

void
rc_init(struct redisq *q, struct rconn *c, int qi)
{
	const struct config *cfg = q->cfg;
	char name[48];

	c->q = q;
	c->qi = qi;
	if (qi < 0)
		snprintf(name, sizeof(name), "redis command connection");
	else
		snprintf(name, sizeof(name), "redis fetch connection %d",
		    qi + 1);
	link_init(&c->link, q->loop, name, &rc_ops, c, q->res, &q->st->redis,
	    cfg->worker.retry_min_ms, cfg->worker.retry_max_ms,
	    cfg->redis.connect_timeout_ms);
	/* A fetch connection is told of only when it was down. */
	c->link.quiet = qi >= 0;
}

/* New limits of a reload. */
void
rc_limits(struct rconn *c)
{
	const struct config *cfg = c->q->cfg;

	link_limits(&c->link, cfg->worker.retry_min_ms,
	    cfg->worker.retry_max_ms, cfg->redis.connect_timeout_ms);
}

void
rc_close(struct rconn *c)
{
	redisAsyncContext *ac = c->ac;

	c->ac = NULL;
	link_stop(&c->link);
	if (ac)
		redisAsyncFree(ac);
}

/*
 * The sentinels' answer, on a loop turn of its own. A master that moved
 * (or one that said READONLY) gets every connection anew, and the
 * recovery of a reconnect follows; the same master again changes
 * nothing, so that a master that is down is not asked of in a spin.
 */
void
rc_master_moved(void *arg, const char *host, int port)
{
	struct redisq *q = arg;
	int moved = strcmp(q->master, host) != 0 || q->master_port != port;

	if (!moved && !q->master_suspect)
		return;
	if (moved)
		log_notice("redis: the sentinels name %s:%d as the master%s",
		    host, port, q->master[0] ? " now" : "");
	snprintf(q->master, sizeof(q->master), "%s", host);
	q->master_port = port;
	q->master_suspect = 0;
	rc_restart(&q->cmd, "the master moved");
	for (int i = 0; i < q->nq; i++)
		rc_restart(&q->blk[i], "the master moved");
}
