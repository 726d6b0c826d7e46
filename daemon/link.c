/*
 * link: the one supervisor of every Redis and PostgreSQL connection. It
 * keeps the state, the timers, the backoff, the log and the counts; the
 * adapter keeps its driver and what it says on the wire.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "link.h"

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void retry_in(struct link *l, int ms);

void
link_init(struct link *l, struct ev_loop *loop, const char *name,
    const struct link_ops *ops, void *arg, struct resolver *res,
    struct bstats *st, int min_ms, int max_ms, int connect_timeout_ms)
{
	uint64_t seed;

	memset(l, 0, sizeof(*l));
	l->loop = loop;
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->ops = ops;
	l->arg = arg;
	l->res = res;
	l->st = st;
	l->state = LINK_DOWN;
	l->others = -1;
	l->connect_timeout_ms = connect_timeout_ms;
	ev_init(&l->retry, retry_cb);
	l->retry.data = l;
	ev_init(&l->timeout, timeout_cb);
	l->timeout.data = l;
	/* Links of one process start apart: the name's bytes stir the seed. */
	seed = (uint64_t)(ev_time() * 1000.0) ^ (uint64_t)(uintptr_t)l;
	for (const char *p = name; *p; p++)
		seed = seed * 131 + (unsigned char)*p;
	backoff_init(&l->bo, min_ms, max_ms, seed);
}

void
link_limits(struct link *l, int min_ms, int max_ms, int connect_timeout_ms)
{
	int cut;

	backoff_limits(&l->bo, min_ms, max_ms);
	l->connect_timeout_ms = connect_timeout_ms;
	/* A reconnect waiting longer than a lowered max waits one drawn at it. */
	if (l->state == LINK_BACKOFF && ev_is_active(&l->retry) &&
	    (cut = backoff_cut(ev_timer_remaining(l->loop, &l->retry) * 1000,
	    l->bo.min_ms, l->bo.max_ms, &l->bo.rng)) > 0)
		retry_in(l, cut);
}

static void
cancel_lookups(struct link *l)
{
	for (int i = 0; i < LINK_MAX_NAMES; i++) {
		resolve_cancel(l->rq[i]);
		l->rq[i] = NULL;
	}
	l->nleft = 0;
}

static void
arm(struct link *l, double seconds)
{
	ev_timer_stop(l->loop, &l->timeout);
	ev_timer_set(&l->timeout, seconds, 0.);
	ev_timer_start(l->loop, &l->timeout);
}

static void
retry_in(struct link *l, int ms)
{
	ev_timer_stop(l->loop, &l->retry);
	ev_timer_set(&l->retry, ms / 1000.0, 0.);
	ev_timer_start(l->loop, &l->retry);
}

void
link_start(struct link *l)
{
	if (l->state != LINK_DOWN && l->state != LINK_BACKOFF)
		return;
	l->state = LINK_BACKOFF;
	retry_in(l, 0);
}

void
link_stop(struct link *l)
{
	cancel_lookups(l);
	ev_timer_stop(l->loop, &l->retry);
	ev_timer_stop(l->loop, &l->timeout);
	l->state = LINK_DOWN;
}

static void lose(struct link *l, const char *why, int at_once);

/* Down before it was up: the same as a loss, from the link's own turn. */
static void
fail(struct link *l, const char *why)
{
	lose(l, why, 0);
}

static void
open_now(struct link *l)
{
	const char *addrs[LINK_MAX_NAMES];
	char why[sizeof(l->last_error)];

	for (int i = 0; i < l->nnames; i++)
		addrs[i] = l->res == NULL ? l->names[i] :
		    l->addrs[i][0] ? l->addrs[i] : NULL;
	l->state = LINK_CONNECTING;
	arm(l, l->connect_timeout_ms / 1000.0);
	/* Why a name had no address, should the adapter be left with none. */
	snprintf(why, sizeof(why), "%s", l->rerr);
	if (l->ops->open(l->arg, addrs, l->nnames, why, sizeof(why)) == -1)
		fail(l, why[0] ? why : "cannot connect");
}

static void
resolved_cb(void *arg, const char *name, const struct resolve_answer *answer,
    const char *err)
{
	struct link *l = arg;
	int i;

	/* The first lookup of this name still out is this one. */
	for (i = 0; i < l->nnames; i++)
		if (l->rq[i] != NULL && strcmp(l->names[i], name) == 0)
			break;
	if (i == l->nnames)
		return;
	l->rq[i] = NULL;
	if (answer != NULL && answer->n > 0) {
		snprintf(l->addrs[i], sizeof(l->addrs[i]), "%s",
		    answer->addr[l->tries % (unsigned)answer->n]);
		/* One name: its other addresses are tried before a backoff. */
		if (l->nnames == 1 && l->others < 0)
			l->others = answer->n - 1;
	}
	else
		snprintf(l->rerr, sizeof(l->rerr), "cannot resolve %s: %s",
		    name, err ? err : "no address");
	if (--l->nleft == 0)
		open_now(l);
}

static void
connect_now(struct link *l)
{
	const char *names[LINK_MAX_NAMES];
	char why[sizeof(l->last_error)];
	int n;

	why[0] = '\0';
	n = l->ops->locate(l->arg, names, why, sizeof(why));
	if (n < 0) {
		fail(l, why[0] ? why : "nowhere to connect to");
		return;
	}
	if (n > LINK_MAX_NAMES)
		n = LINK_MAX_NAMES;
	l->tries++;
	l->nnames = n;
	l->rerr[0] = '\0';
	for (int i = 0; i < n; i++) {
		snprintf(l->namebuf[i], sizeof(l->namebuf[i]), "%s", names[i]);
		l->names[i] = l->namebuf[i];
		l->addrs[i][0] = '\0';
	}
	if (n == 0 || l->res == NULL) {
		open_now(l);
		return;
	}
	l->state = LINK_RESOLVING;
	arm(l, l->connect_timeout_ms / 1000.0);
	l->nleft = n;
	for (int i = 0; i < n; i++) {
		l->rq[i] = resolver_lookup(l->res, l->names[i], resolved_cb, l);
		if (l->rq[i] == NULL) {
			fail(l, "out of memory");
			return;
		}
	}
}

static void
retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct link *l = w->data;

	(void)loop;
	(void)revents;
	if (l->state == LINK_BACKOFF)
		connect_now(l);
}

static void
timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct link *l = w->data;
	char why[sizeof(l->last_error)];

	(void)loop;
	(void)revents;
	switch (l->state) {
	case LINK_RESOLVING:
		snprintf(why, sizeof(why), "no address for %s within %d ms",
		    l->names[0], l->connect_timeout_ms);
		fail(l, why);
		return;
	case LINK_CONNECTING:
		snprintf(why, sizeof(why), "no connection within %d ms",
		    l->connect_timeout_ms);
		break;
	case LINK_HANDSHAKE:
	case LINK_READY:
		snprintf(why, sizeof(why), "no answer within %d ms",
		    l->wait_ms);
		break;
	default:
		return;
	}
	l->ops->expired(l->arg, why);
}

void
link_handshake(struct link *l)
{
	link_handshake_wait(l, l->connect_timeout_ms);
}

void
link_handshake_wait(struct link *l, int ms)
{
	if (l->state != LINK_CONNECTING)
		return;
	l->state = LINK_HANDSHAKE;
	l->wait_ms = ms;
	arm(l, ms / 1000.0);
}

void
link_ready(struct link *l)
{
	int was_down;

	ev_timer_stop(l->loop, &l->timeout);
	l->state = LINK_READY;
	backoff_reset(&l->bo);
	l->others = -1;
	was_down = outage_end(&l->outage);
	if (!l->quiet || was_down)
		log_info("%s: connected%s", l->name, was_down ? " again" : "");
	if (l->st != NULL && !l->quiet)
		stats_connected(l->st, &l->connected_once);
}

static void
lose(struct link *l, const char *why, int at_once)
{
	char msg[400];		/* next() may say more than last_error keeps */
	int delay, other = 0, next = 0;

	/* Refused at one address of a name: the next one, at once. */
	if (l->state == LINK_CONNECTING && l->others > 0) {
		l->others--;
		other = 1;
	} else
		l->others = -1;		/* the next round tries them all again */

	cancel_lookups(l);
	ev_timer_stop(l->loop, &l->timeout);
	l->state = LINK_BACKOFF;
	if (why == NULL || why[0] == '\0')
		why = "connection lost";
	/* Copied first: WHY may live in the driver being closed. */
	snprintf(msg, sizeof(msg), "%s", why);
	if (!other && l->ops->next != NULL)
		next = l->ops->next(l->arg, msg, sizeof(msg));
	snprintf(l->last_error, sizeof(l->last_error), "%.*s",
	    (int)sizeof(l->last_error) - 1, msg);
	if (l->st != NULL)
		l->st->errors++;
	delay = at_once || other || next ? 0 : backoff_next(&l->bo);
	/* One address or server of several is no outage yet. */
	if (other || next)
		log_debug("%s: %s; the next %s now", l->name, msg,
		    other ? "address" : "server");
	else if (outage_note(&l->outage, msg))
		log_warnx("%s: %s; reconnecting", l->name, msg);
	else
		log_debug("%s: %s; retrying in %d ms", l->name, msg, delay);
	retry_in(l, delay);
}

void
link_wait(struct link *l, int ms, int extra_ms)
{
	if (l->state != LINK_READY)
		return;
	l->wait_ms = ms;
	arm(l, (ms + extra_ms) / 1000.0);
}

void
link_idle(struct link *l)
{
	if (l->state == LINK_READY)
		ev_timer_stop(l->loop, &l->timeout);
}

void
link_lost(struct link *l, const char *why, int at_once)
{
	if (l->state != LINK_DOWN && l->state != LINK_BACKOFF)
		lose(l, why, at_once);
}
