/*
 * sentinel_sub: the subscription to +switch-master on one sentinel, so
 * that a failover is followed the moment the sentinels announce it.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "sentinel_int.h"

#define CHANNEL		"+switch-master"

/* "NAME OLDHOST OLDPORT NEWHOST NEWPORT" of a +switch-master message. */
static void
switch_master(struct sentinel *s, const char *msg, size_t len)
{
	const char *f[5], *p = msg, *end = msg + len, *sp;
	const char *name = s->addrs[s->sub.idx].name;
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
		    "understood", name);
		return;
	}
	if (flen[0] != strlen(s->cfg->redis.sentinel_master) ||
	    memcmp(f[0], s->cfg->redis.sentinel_master, flen[0]) != 0)
		return;		/* another master's */
	memcpy(port, f[4], flen[4]);
	port[flen[4]] = '\0';
	if (sn_parse_addr(f[3], flen[3], port, host, &newport) == -1) {
		log_warnx("redis sentinel %s: a " CHANNEL " message with no "
		    "address", name);
		return;
	}
	snprintf(from, sizeof(from), CHANNEL " from sentinel %s", name);
	sn_learn(s, host, newport, 0, from);
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
	link_ready(&c->link);
	log_debug("redis sentinel %s: following failovers",
	    s->addrs[c->idx].name);
	/* A switch before this is not heard: ask, to be sure. */
	sn_recheck(s);
}

static int
sub_locate(void *arg, const char **names, char *why, size_t len)
{
	struct sconn *c = arg;

	(void)why;
	(void)len;
	return sc_locate(c, c->s->sub_next, names);
}

static int
sub_open(void *arg, const char *const *addrs, int n, char *why, size_t len)
{
	const char *argv[] = { "SUBSCRIBE", CHANNEL };

	return sc_open(arg, addrs, n, 2, argv, sub_cb, why, len);
}

/* Lost: again after a backoff, on the next sentinel. */
static int
sub_next(void *arg, char *why, size_t len)
{
	struct sconn *c = arg;
	struct sentinel *s = c->s;
	char msg[400];

	snprintf(msg, sizeof(msg), "sentinel %s: %s", s->addrs[c->idx].name,
	    why);
	snprintf(why, len, "%s", msg);
	if (s->n > 0)
		s->sub_next = (c->idx + 1) % s->n;
	return 0;
}

static const struct link_ops sub_ops = { sub_locate, sub_open, sc_expired,
    sub_next };

void
sub_init(struct sentinel *s)
{
	sc_init(&s->sub, s, "redis " CHANNEL " subscription", &sub_ops);
}

void
sub_follow(struct sentinel *s, int idx)
{
	if (s->sub.link.state != LINK_DOWN)
		return;
	s->sub_next = idx;
	link_start(&s->sub.link);
}
