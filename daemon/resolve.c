/*
 * resolve: host names to addresses off the loop (c-ares on libev, see
 * evares.c), with a small cache that honours each answer's TTL.
 *
 * A name's lookup is one "entry": while asking, its waiters queue on it
 * and share one ares_getaddrinfo (the entry is dropped when the last of
 * them cancels, its query left to end unheard: the next lookup asks
 * anew); once answered with a TTL above 0 it is kept, least recently used
 * first out, until the TTL runs out. /etc/hosts answers carry no TTL
 * (c-ares gives 0), so they are read anew each time; failures are never
 * kept. Answers go to a ready list that a 0 s timer empties on the next
 * loop turn, so no callback runs inside a call.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <ev.h>

#include "evares.h"
#include "log.h"
#include "resolve.h"

#define RESOLVE_CACHE_MAX	64	/* names kept once answered */
#define RESOLVE_BUCKETS		128	/* hash chains; a power of two */
#define RESOLVE_TTL_MAX		300	/* seconds an answer is kept at most */
#define RESOLVE_TRIES		2	/* per server; each waits twice the last */
#define RESOLVE_NAME_MAX	254	/* 253 and a final dot (RFC 1035) */
#define RESOLVE_ERRLEN		96

/* One ares_getaddrinfo out; ENTRY is NULL once nobody waits for it. */
struct query {
	struct resolver *r;
	struct entry *e;
};

/* A name: being asked (q set) or answered and kept (cached). */
struct entry {
	LIST_ENTRY(entry) chain;
	TAILQ_ENTRY(entry) lru;		/* cached only, oldest use first */
	TAILQ_HEAD(, resolve_req) waiters;
	struct resolver *r;
	struct query *q;
	int cached;
	ev_timer deadline;		/* the whole lookup's bound */
	ev_tstamp expires;		/* cached: ev_now() past which it is stale */
	struct resolve_answer answer;
	uint32_t hash;
	char name[];
};

struct resolve_req {
	TAILQ_ENTRY(resolve_req) link;	/* an entry's waiters, or ready */
	struct resolver *r;
	struct entry *e;		/* waited on; NULL once ready */
	resolve_fn *fn;
	void *arg;
	unsigned long long seq;		/* ready: its place in line */
	int found;
	struct resolve_answer answer;
	char err[RESOLVE_ERRLEN];
	char name[];
};

struct resolver {
	struct ev_loop *loop;
	struct evares ares;
	int timeout_ms;
	int destroying;			/* in ares_destroy: ignore answers */
	int freed;			/* resolver_free from inside a callback */
	ev_timer deliver;		/* 0 s: answers on the next loop turn */
	LIST_HEAD(, entry) buckets[RESOLVE_BUCKETS];
	TAILQ_HEAD(, entry) lru;
	int ncached;
	TAILQ_HEAD(, resolve_req) ready;
	unsigned long long seq;
	struct resolve_req *current;	/* whose callback runs now */
};

/* c-ares statuses in words for a log line; ARES_ETIMEOUT is apart. */
static const struct {
	int status;
	const char *text;
} ares_errors[] = {
	{ ARES_ENOTFOUND, "no such name" },
	{ ARES_ENONAME, "no such name" },
	{ ARES_ENODATA, "the name has no address" },
	{ ARES_ECONNREFUSED, "DNS server refused the connection" },
	{ ARES_EREFUSED, "DNS server refused the query" },
	{ ARES_ESERVFAIL, "DNS server failed (SERVFAIL)" },
	{ ARES_EFORMERR, "DNS server could not read the query" },
	{ ARES_ENOTIMP, "DNS server does not answer such queries" },
	{ ARES_EBADRESP, "bad answer from the DNS server" },
	{ ARES_EOF, "DNS server closed the connection" },
	{ ARES_EBADNAME, "not a valid host name" },
	{ ARES_EFILE, "cannot read the resolver's files" },
	{ ARES_ENOMEM, "out of memory" },
};

static void
error_text(const struct resolver *r, int status, char *buf, size_t len)
{
	size_t i;

	if (status == ARES_ETIMEOUT) {
		snprintf(buf, len, "timed out after %d ms", r->timeout_ms);
		return;
	}
	for (i = 0; i < sizeof(ares_errors) / sizeof(ares_errors[0]); i++)
		if (ares_errors[i].status == status) {
			snprintf(buf, len, "%s", ares_errors[i].text);
			return;
		}
	snprintf(buf, len, "DNS lookup failed: %s", ares_strerror(status));
}

int
resolve_is_numeric(const char *name)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, name, &a4) == 1 ||
	    inet_pton(AF_INET6, name, &a6) == 1;
}

/* FNV-1a over the lower-cased name: DNS names ignore case. */
static uint32_t
name_hash(const char *name)
{
	uint32_t h = 2166136261u;

	for (; *name != '\0'; name++) {
		h ^= (uint32_t)tolower((unsigned char)*name);
		h *= 16777619u;
	}
	return h;
}

static struct entry *
entry_find(struct resolver *r, const char *name, uint32_t h)
{
	struct entry *e;

	LIST_FOREACH(e, &r->buckets[h & (RESOLVE_BUCKETS - 1)], chain)
		if (e->hash == h && strcasecmp(e->name, name) == 0)
			return e;
	return NULL;
}

static void deadline_cb(struct ev_loop *, ev_timer *, int);

static struct entry *
entry_new(struct resolver *r, const char *name, uint32_t h)
{
	struct entry *e;
	size_t n = strlen(name) + 1;

	if ((e = calloc(1, sizeof(*e) + n)) == NULL)
		return NULL;
	memcpy(e->name, name, n);
	e->r = r;
	e->hash = h;
	TAILQ_INIT(&e->waiters);
	ev_timer_init(&e->deadline, deadline_cb, 0., 0.);
	e->deadline.data = e;
	LIST_INSERT_HEAD(&r->buckets[h & (RESOLVE_BUCKETS - 1)], e, chain);
	return e;
}

static void
uncache(struct entry *e)
{
	if (e->cached) {
		TAILQ_REMOVE(&e->r->lru, e, lru);
		e->r->ncached--;
		e->cached = 0;
	}
}

/* Forgets E; its query, if one is out, ends unheard. No waiters left. */
static void
entry_free(struct entry *e)
{
	LIST_REMOVE(e, chain);
	uncache(e);
	ev_timer_stop(e->r->loop, &e->deadline);
	if (e->q != NULL)
		e->q->e = NULL;
	free(e);
}

static void
cache(struct entry *e, int ttl)
{
	struct resolver *r = e->r;

	e->expires = ev_now(r->loop) + ttl;
	e->cached = 1;
	TAILQ_INSERT_TAIL(&r->lru, e, lru);
	r->ncached++;
	while (r->ncached > RESOLVE_CACHE_MAX)
		entry_free(TAILQ_FIRST(&r->lru));
}

static void
deliver_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct resolver *r = t->data;
	struct resolve_req *req;
	unsigned long long last = r->seq;

	(void)loop;
	(void)revents;
	/* Only those ready before this turn: a callback's lookups wait. */
	while ((req = TAILQ_FIRST(&r->ready)) != NULL && req->seq <= last) {
		TAILQ_REMOVE(&r->ready, req, link);
		r->current = req;
		req->fn(req->arg, req->name, req->found ? &req->answer : NULL,
		    req->found ? NULL : req->err);
		r->current = NULL;
		free(req);
		if (r->freed) {
			r->freed = 0;
			resolver_free(r);
			return;
		}
	}
}

/* REQ is answered (found or err filled): its callback on the next turn. */
static void
make_ready(struct resolver *r, struct resolve_req *req)
{
	req->e = NULL;
	req->seq = ++r->seq;
	TAILQ_INSERT_TAIL(&r->ready, req, link);
	if (!ev_is_active(&r->deliver))
		ev_timer_start(r->loop, &r->deliver);
}

/* Every waiter of E gets ANSWER, or ERR when ANSWER is NULL. */
static void
answer_waiters(struct entry *e, const struct resolve_answer *answer,
    const char *err)
{
	struct resolve_req *req;

	while ((req = TAILQ_FIRST(&e->waiters)) != NULL) {
		TAILQ_REMOVE(&e->waiters, req, link);
		if (answer != NULL) {
			req->answer = *answer;
			req->found = 1;
		} else
			snprintf(req->err, sizeof(req->err), "%s", err);
		make_ready(e->r, req);
	}
}

/*
 * AI's first addresses as text into A, without repeats; returns the
 * smallest TTL of the whole answer (its CNAMEs too), 0 to RESOLVE_TTL_MAX.
 */
static int
take_answer(struct resolve_answer *a, const struct ares_addrinfo *ai)
{
	const struct ares_addrinfo_node *n;
	const struct ares_addrinfo_cname *c;
	char buf[RESOLVE_ADDRLEN];
	const void *src;
	int i, ttl = RESOLVE_TTL_MAX;

	a->n = 0;
	for (n = ai->nodes; n != NULL; n = n->ai_next) {
		if (n->ai_ttl < ttl)
			ttl = n->ai_ttl;
		if (n->ai_family == AF_INET)
			src = &((struct sockaddr_in *)n->ai_addr)->sin_addr;
		else if (n->ai_family == AF_INET6)
			src = &((struct sockaddr_in6 *)n->ai_addr)->sin6_addr;
		else
			continue;
		if (a->n == RESOLVE_MAX_ADDRS ||
		    inet_ntop(n->ai_family, src, buf, sizeof(buf)) == NULL)
			continue;
		for (i = 0; i < a->n; i++)
			if (strcmp(a->addr[i], buf) == 0)
				break;
		if (i == a->n)
			memcpy(a->addr[a->n++], buf, sizeof(buf));
	}
	for (c = ai->cnames; c != NULL; c = c->next)
		if (c->ttl < ttl)
			ttl = c->ttl;
	/* A TTL with its top bit set reads as negative: RFC 2181 says 0. */
	return ttl < 0 ? 0 : ttl;
}

static void
got_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
	struct query *q = arg;
	struct resolver *r = q->r;
	struct entry *e = q->e;
	char err[RESOLVE_ERRLEN];
	int ttl = 0;

	(void)timeouts;
	/* Being destroyed, c-ares may still end a query with its answer. */
	if (r->destroying || e == NULL) {
		ares_freeaddrinfo(ai);
		free(q);
		return;
	}
	free(q);
	e->q = NULL;
	ev_timer_stop(r->loop, &e->deadline);
	if (status == ARES_SUCCESS && ai != NULL) {
		ttl = take_answer(&e->answer, ai);
		if (e->answer.n == 0)
			status = ARES_ENODATA;
	}
	ares_freeaddrinfo(ai);
	if (status != ARES_SUCCESS) {
		error_text(r, status, err, sizeof(err));
		answer_waiters(e, NULL, err);
		entry_free(e);
		return;
	}
	answer_waiters(e, &e->answer, NULL);
	if (ttl > 0)
		cache(e, ttl);
	else
		entry_free(e);
}

/* Our own bound, whatever c-ares does: the query goes on unheard. */
static void
deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct entry *e = t->data;
	char err[RESOLVE_ERRLEN];

	(void)loop;
	(void)revents;
	error_text(e->r, ARES_ETIMEOUT, err, sizeof(err));
	answer_waiters(e, NULL, err);
	entry_free(e);
}

/* Asks c-ares about E. Its answer may come inside: E may be gone after. */
static int
ask(struct resolver *r, struct entry *e)
{
	struct ares_addrinfo_hints hints;
	struct query *q;

	if ((q = calloc(1, sizeof(*q))) == NULL)
		return -1;
	q->r = r;
	q->e = e;
	e->q = q;
	ev_timer_set(&e->deadline, r->timeout_ms / 1000., 0.);
	ev_timer_start(r->loop, &e->deadline);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	ares_getaddrinfo(r->ares.chan, e->name, NULL, &hints, got_addrinfo, q);
	evares_arm(&r->ares);
	return 0;
}

struct resolver *
resolver_new(struct ev_loop *loop, int timeout_ms)
{
	struct ares_options opts;
	struct resolver *r;
	int i, status;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->loop = loop;
	r->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
	for (i = 0; i < RESOLVE_BUCKETS; i++)
		LIST_INIT(&r->buckets[i]);
	TAILQ_INIT(&r->lru);
	TAILQ_INIT(&r->ready);
	ev_timer_init(&r->deliver, deliver_cb, 0., 0.);
	r->deliver.data = r;

	/*
	 * With one server the tries wait t, then 2t: 3t is the bound. More
	 * servers take longer; the entry's deadline cuts them off.
	 */
	memset(&opts, 0, sizeof(opts));
	opts.tries = RESOLVE_TRIES;
	opts.timeout = r->timeout_ms / ((1 << RESOLVE_TRIES) - 1);
	if (opts.timeout < 1)
		opts.timeout = 1;
	status = evares_open(&r->ares, loop, &opts,
	    ARES_OPT_TRIES | ARES_OPT_TIMEOUTMS);
	if (status != ARES_SUCCESS) {
		log_warnx("resolver: c-ares: %s", ares_strerror(status));
		free(r);
		return NULL;
	}
	return r;
}

void
resolver_free(struct resolver *r)
{
	struct resolve_req *req;
	struct entry *e;
	int i;

	if (r == NULL)
		return;
	if (r->current != NULL) {
		/* Inside a callback: deliver_cb ends the job on return. */
		r->freed = 1;
		return;
	}
	r->destroying = 1;
	evares_close(&r->ares);		/* frees every query, unheard */
	ev_timer_stop(r->loop, &r->deliver);
	for (i = 0; i < RESOLVE_BUCKETS; i++)
		while ((e = LIST_FIRST(&r->buckets[i])) != NULL) {
			while ((req = TAILQ_FIRST(&e->waiters)) != NULL) {
				TAILQ_REMOVE(&e->waiters, req, link);
				free(req);
			}
			e->q = NULL;	/* freed by ares_destroy */
			entry_free(e);
		}
	while ((req = TAILQ_FIRST(&r->ready)) != NULL) {
		TAILQ_REMOVE(&r->ready, req, link);
		free(req);
	}
	free(r);
}

struct resolve_req *
resolver_lookup(struct resolver *r, const char *name, resolve_fn *fn,
    void *arg)
{
	struct resolve_req *req;
	struct entry *e;
	size_t n = strlen(name) + 1;
	uint32_t h;

	if ((req = calloc(1, sizeof(*req) + n)) == NULL)
		return NULL;
	memcpy(req->name, name, n);
	req->r = r;
	req->fn = fn;
	req->arg = arg;

	if (resolve_is_numeric(name) && n <= RESOLVE_ADDRLEN) {
		req->answer.n = 1;
		memcpy(req->answer.addr[0], name, n);
		req->found = 1;
		make_ready(r, req);
		return req;
	}
	if (n == 1 || n > RESOLVE_NAME_MAX + 1) {
		error_text(r, ARES_EBADNAME, req->err, sizeof(req->err));
		make_ready(r, req);
		return req;
	}
	h = name_hash(name);
	e = entry_find(r, name, h);
	if (e != NULL && e->cached && ev_now(r->loop) < e->expires) {
		TAILQ_REMOVE(&r->lru, e, lru);
		TAILQ_INSERT_TAIL(&r->lru, e, lru);
		req->answer = e->answer;
		req->found = 1;
		make_ready(r, req);
		return req;
	}
	if (e == NULL && (e = entry_new(r, name, h)) == NULL) {
		free(req);
		return NULL;
	}
	uncache(e);			/* stale: asked again */
	req->e = e;
	TAILQ_INSERT_TAIL(&e->waiters, req, link);
	if (e->q == NULL && ask(r, e) == -1) {
		/* No query was out, so REQ is its only waiter. */
		TAILQ_REMOVE(&e->waiters, req, link);
		entry_free(e);
		free(req);
		return NULL;
	}
	return req;
}

void
resolve_cancel(struct resolve_req *req)
{
	struct resolver *r;

	if (req == NULL)
		return;
	r = req->r;
	if (req == r->current)
		return;			/* its callback runs: freed after */
	if (req->e != NULL) {
		TAILQ_REMOVE(&req->e->waiters, req, link);
		/*
		 * Nobody waits any more: the name is forgotten, its query
		 * goes on unheard. A later lookup asks anew rather than wait
		 * on a query whose tries may all have gone to a server that
		 * was silent then and answers now.
		 */
		if (TAILQ_EMPTY(&req->e->waiters))
			entry_free(req->e);
	} else
		TAILQ_REMOVE(&r->ready, req, link);
	free(req);
}

void
resolver_flush(struct resolver *r)
{
	while (!TAILQ_EMPTY(&r->lru))
		entry_free(TAILQ_FIRST(&r->lru));
}

int
resolver_set_servers(struct resolver *r, const char *csv)
{
	int status;

	status = ares_set_servers_ports_csv(r->ares.chan, csv);
	if (status != ARES_SUCCESS) {
		log_warnx("resolver: DNS servers \"%s\": %s", csv,
		    status == ARES_ENOTIMP ? "lookups are out" :
		    ares_strerror(status));
		return -1;
	}
	resolver_flush(r);
	return 0;
}
