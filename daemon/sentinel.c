/*
 * sentinel: where the Redis master is, asked of each sentinel in turn on
 * a link of its own; the subscription that follows it is sentinel_sub.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sentinel_int.h"

/* ---- connections ---- */

struct sconn *
sc_of(const redisAsyncContext *ac)
{
	struct sconn *c = ac->data;

	return c != NULL && c->ac == ac ? c : NULL;
}

/*
 * Its callbacks, which hiredis runs with a NULL reply as it frees the
 * context (at once, or after the reply callback it is in), find no sconn
 * and do nothing.
 */
void
sc_close(struct sconn *c)
{
	redisAsyncContext *ac = c->ac;

	c->ac = NULL;
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);
	}
}

void
sc_drop(struct sconn *c, const char *why)
{
	sc_close(c);
	link_lost(&c->link, why, 0);
}

/* AC, C's context, is lost, and hiredis frees it. */
static void
sc_gone(struct sconn *c, const redisAsyncContext *ac, const char *dflt)
{
	char why[200];

	snprintf(why, sizeof(why), "%s", ac->errstr[0] ? ac->errstr : dflt);
	c->ac = NULL;
	link_lost(&c->link, why, 0);
}

static void
connect_cb(CONNECT_CB_CONST redisAsyncContext *ac, int status)
{
	struct sconn *c = sc_of(ac);

	if (c == NULL)
		return;
	/* AUTH and the one command: answered within the command timeout. */
	if (status == REDIS_OK)
		link_handshake_wait(&c->link,
		    c->s->cfg->redis.command_timeout_ms);
	else	/* hiredis frees the context after this; no disconnect_cb */
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

/* The link's timeout: no connection or no answer in time. */
void
sc_expired(void *arg, const char *why)
{
	sc_drop(arg, why);
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

void
sc_init(struct sconn *c, struct sentinel *s, const char *name,
    const struct link_ops *ops)
{
	const struct config *cfg = s->cfg;

	c->s = s;
	link_init(&c->link, s->loop, name, ops, c, s->res, NULL,
	    cfg->worker.retry_min_ms, cfg->worker.retry_max_ms,
	    cfg->redis.connect_timeout_ms);
	/* Told of only when it was down. */
	c->link.quiet = 1;
}

int
sc_locate(struct sconn *c, int idx, const char **names)
{
	c->idx = idx;
	names[0] = c->s->addrs[idx].host;
	return 1;
}

int
sc_open(struct sconn *c, const char *const *addrs, int n, int argc,
    const char **argv, redisCallbackFn *fn, char *why, size_t len)
{
	struct sentinel *s = c->s;
	const struct config *cfg = s->cfg;
	const char *auth[3] = { "AUTH" };
	redisAsyncContext *ac;
	int nauth = 1;

	if (n < 1 || addrs[0] == NULL)
		return -1;	/* WHY says why the name had no address */
	ac = rconnect(s->loop, addrs[0], s->addrs[c->idx].port, c, connect_cb,
	    disconnect_cb, why, len);
	if (ac == NULL)
		return -1;
	c->ac = ac;
	if (cfg->redis.sentinel_password[0] != '\0') {
		if (cfg->redis.sentinel_username[0] != '\0')
			auth[nauth++] = cfg->redis.sentinel_username;
		auth[nauth++] = cfg->redis.sentinel_password;
	}
	if ((nauth > 1 && redisAsyncCommandArgv(ac, auth_cb, NULL, nauth,
	    auth, NULL) != REDIS_OK) ||
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
void
sn_learn(struct sentinel *s, const char *host, int port, int force,
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

/*
 * "HOST" and "PORT" of an answer into HOST and *PORT; -1 if not that. A
 * host is printable and has no space: it goes to the resolver and to
 * log lines.
 */
int
sn_parse_addr(const char *h, size_t hlen, const char *p, char *host,
    int *port)
{
	char *end;
	long v;

	if (hlen == 0 || hlen > NETADDR_HOSTLEN)
		return -1;
	for (size_t i = 0; i < hlen; i++)
		if ((unsigned char)h[i] <= ' ' || (unsigned char)h[i] >= 0x7f)
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
	int port;

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
	    sn_parse_addr(reply->element[0]->str, reply->element[0]->len,
	    reply->element[1]->str, host, &port) == -1) {
		sc_drop(c, "unexpected answer to SENTINEL "
		    "GET-MASTER-ADDR-BY-NAME");
		return;
	}
	/* Answered: the outage ends, and the connection has done its job. */
	sc_close(c);
	link_ready(&c->link);
	link_stop(&c->link);
	s->asking = 0;
	s->start = c->idx;
	s->last_error[0] = '\0';
	snprintf(from, sizeof(from), "sentinel %s", s->addrs[c->idx].name);
	sn_learn(s, host, port, s->force, from);
	s->force = 0;
	sub_follow(s, c->idx);
}

/* A round starts from the sentinel that answered last. */
static int
ask_locate(void *arg, const char **names, char *why, size_t len)
{
	struct sconn *c = arg;
	struct sentinel *s = c->s;

	(void)why;
	(void)len;
	if (!s->asking) {
		s->asking = 1;
		s->tried = 0;
		c->idx = s->start;
	}
	return sc_locate(c, c->idx, names);
}

static int
ask_open(void *arg, const char *const *addrs, int n, char *why, size_t len)
{
	struct sconn *c = arg;
	const char *argv[] = { "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
	    c->s->cfg->redis.sentinel_master };

	return sc_open(c, addrs, n, 3, argv, addr_cb, why, len);
}

/* The sentinel asked failed: the next one at once, or the round is over. */
static int
ask_next(void *arg, char *why, size_t len)
{
	struct sconn *c = arg;
	struct sentinel *s = c->s;
	const char *name;
	char msg[sizeof(s->last_error)];

	if (!s->asking || s->n == 0)
		return 0;
	name = s->addrs[c->idx].name;
	if (++s->tried < s->n) {
		snprintf(msg, sizeof(msg), "sentinel %s: %s", name, why);
		snprintf(why, len, "%s", msg);
		c->idx = (c->idx + 1) % s->n;
		return 1;
	}
	s->asking = 0;
	snprintf(msg, sizeof(msg), "no sentinel answered for master %s "
	    "(%d asked; the last, %s: %s)", s->cfg->redis.sentinel_master,
	    s->n, name, why);
	memcpy(s->last_error, msg, sizeof(msg));
	snprintf(why, len, "%s", msg);
	return 0;
}

static const struct link_ops ask_ops = { ask_locate, ask_open, sc_expired,
    ask_next };

void
sn_recheck(struct sentinel *s)
{
	if (!s->asking && s->n > 0)
		link_start(&s->ask.link);
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
	sc_init(&s->ask, s, "redis sentinels", &ask_ops);
	sub_init(s);
	ev_timer_init(&s->defer, defer_cb, 0., 0.);
	s->defer.data = s;
	snprintf(s->last_error, sizeof(s->last_error),
	    "no sentinel has answered yet");
	link_start(&s->ask.link);
	return s;
}

/* Both connections closed, and their links stopped: nothing runs. */
static void
close_all(struct sentinel *s)
{
	link_stop(&s->ask.link);
	sc_close(&s->ask);
	link_stop(&s->sub.link);
	sc_close(&s->sub);
	s->asking = 0;
}

void
sentinel_free(struct sentinel *s)
{
	if (s == NULL)
		return;
	close_all(s);
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
	link_limits(&s->ask.link, cfg->worker.retry_min_ms,
	    cfg->worker.retry_max_ms, cfg->redis.connect_timeout_ms);
	link_limits(&s->sub.link, cfg->worker.retry_min_ms,
	    cfg->worker.retry_max_ms, cfg->redis.connect_timeout_ms);
	if (!config_redis_conn_changed(old, cfg))
		return;
	close_all(s);
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
		return;
	}
	link_start(&s->ask.link);
}

void
sentinel_ask(struct sentinel *s)
{
	s->force = 1;
	sn_recheck(s);
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
