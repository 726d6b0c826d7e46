/*
 * h1conn: plain HTTP/1.1 over keep-alive connections. A connection is
 * idle (on the pool's idle list, watched for the server closing it),
 * connecting (for the one request that opened it) or busy with one
 * request. A request has one ev_timer, armed for whichever of its
 * deadlines (the whole request, the connect) comes first. Reads land in
 * one buffer of the pool and go through h1resp; only what the reason
 * needs is kept. Idle connections are reused newest first, and the oldest
 * is closed after H1_IDLE_MAX seconds unused, so a quiet pool shrinks.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h1conn.h"
#include "h1resp.h"
#include "resolve.h"

#define H1_READ_BUFFER	(64 * 1024)	/* one for the pool */
#define H1_IDLE_MAX	60.		/* seconds a connection idles at most */
#define WRITING		(EV_READ | EV_WRITE)	/* an early answer is read */
#define H1_RESOLVE_MS	30000		/* a lookup at most: connect_timeout_ms
					   bounds it for each request */

/* Where requests go: a request and its connection each hold a ref. */
struct h1_origin {
	int refs;
	int port;
	char host[];			/* a name or a numeric address */
};

struct h1_conn {
	struct h1_pool *p;
	ev_io io;
	int fd;				/* -1 while resolving */
	int connected;
	int reused;			/* an answer came over it already */
	int ai;				/* index of the address tried */
	struct h1_origin *o;
	struct h1_req *q;		/* the request it carries, if any */
	struct resolve_req *lookup;
	struct resolve_answer addrs;
	int idle;			/* on the pool's idle list */
	ev_tstamp idle_since;
	TAILQ_ENTRY(h1_conn) entry;
};

struct h1_req {
	struct h1_pool *p;
	struct h1_origin *o;		/* of its config, kept for a resend */
	struct h1_conn *c;
	const char *buf;
	size_t len, off;
	long timeout_ms, connect_timeout_ms;
	size_t max_body;
	ev_tstamp deadline;		/* of the request; 0: none */
	ev_tstamp cdeadline;		/* of the connect under way; 0: none */
	ev_timer timer;
	int again;			/* sent once more on a new connection */
	const char *later;		/* a failure told on the next turn */
	char why[160];
	struct h1_resp resp;
	h1_done_fn *fn;
	void *arg;
};

struct h1_pool {
	struct ev_loop *loop;
	struct resolver *resolver;	/* made at the first name */
	struct h1_origin *o;		/* where new requests go */
	int max;			/* connections open at most */
	int open;
	int nidle;
	TAILQ_HEAD(h1_idle, h1_conn) idle;	/* newest first */
	ev_timer age;			/* closes the oldest idle */
	char rbuf[H1_READ_BUFFER];
};

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void start_connect(struct h1_req *q);

/* ---- connections ----------------------------------------------------------- */

static struct h1_origin *
origin_ref(struct h1_origin *o)
{
	o->refs++;
	return o;
}

static void
origin_unref(struct h1_origin *o)
{
	if (o != NULL && --o->refs == 0)
		free(o);
}

/* C watches EVENTS on its socket (always restarted: the socket may be new). */
static void
watch(struct h1_conn *c, int events)
{
	ev_io_stop(c->p->loop, &c->io);
	ev_io_set(&c->io, c->fd, events);
	ev_io_start(c->p->loop, &c->io);
}

static void
idle_del(struct h1_pool *p, struct h1_conn *c)
{
	TAILQ_REMOVE(&p->idle, c, entry);
	c->idle = 0;
	p->nidle--;
}

static struct h1_conn *
oldest(struct h1_pool *p)
{
	return TAILQ_LAST(&p->idle, h1_idle);
}

static void
conn_close(struct h1_conn *c)
{
	struct h1_pool *p = c->p;

	if (c->idle)
		idle_del(p, c);
	resolve_cancel(c->lookup);
	ev_io_stop(p->loop, &c->io);
	if (c->fd != -1)
		close(c->fd);
	origin_unref(c->o);
	free(c);
	p->open--;
}

static void
age_arm(struct h1_pool *p)
{
	struct h1_conn *c = oldest(p);

	if (c == NULL || ev_is_active(&p->age))
		return;
	ev_timer_set(&p->age, c->idle_since + H1_IDLE_MAX - ev_now(p->loop),
	    0.);
	ev_timer_start(p->loop, &p->age);
}

static void
age_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct h1_pool *p = w->data;
	struct h1_conn *c;

	(void)revents;
	while ((c = oldest(p)) != NULL && c->idle_since + H1_IDLE_MAX <=
	    ev_now(loop) + 0.001)
		conn_close(c);
	age_arm(p);
}

/* C, its request answered, waits for the next (newest first). */
static void
conn_idle(struct h1_conn *c)
{
	struct h1_pool *p = c->p;

	c->q = NULL;
	c->reused = 1;
	c->idle_since = ev_now(p->loop);
	c->idle = 1;
	TAILQ_INSERT_HEAD(&p->idle, c, entry);
	p->nidle++;
	/* Still watched for reading: the server closing it is seen. */
	age_arm(p);
}

/* ---- the end of a request ---------------------------------------------------- */

static void
req_free(struct h1_req *q)
{
	ev_timer_stop(q->p->loop, &q->timer);
	h1_resp_clear(&q->resp);
	origin_unref(q->o);
	free(q);
}

/* Q failed: its connection closes, FN hears WHY. */
static void
req_fail(struct h1_req *q, const char *why)
{
	h1_done_fn *fn = q->fn;
	void *arg = q->arg;
	char reason[sizeof(q->why)];

	snprintf(reason, sizeof(reason), "%s", why);
	if (q->c) {
		q->c->q = NULL;
		conn_close(q->c);
	}
	req_free(q);
	fn(arg, NULL, reason);
}

/* Q's answer came whole; EXTRA: bytes after it (the connection is bad). */
static void
req_done(struct h1_req *q, int extra)
{
	struct h1_pool *p = q->p;
	struct h1_conn *c = q->c;
	struct h1_resp *r = &q->resp;
	struct h1_answer a = {
		.status = r->status, .phrase = r->phrase,
		.retry_after = r->retry_after, .head = r->head,
		.headlen = r->headlen,
	};
	h1_done_fn *fn = q->fn;
	void *arg = q->arg;

	c->q = NULL;
	if (r->close || extra || c->o != p->o || p->open > p->max)
		conn_close(c);
	else
		conn_idle(c);
	ev_timer_stop(p->loop, &q->timer);
	fn(arg, &a, NULL);
	/* The answer's bytes were read by FN: freed only now. */
	req_free(q);
}

/* Fails Q on the next turn (from inside h1_send, or for a later step). */
static void
req_fail_later(struct h1_req *q, const char *why)
{
	snprintf(q->why, sizeof(q->why), "%s", why);
	q->later = q->why;
	ev_timer_stop(q->p->loop, &q->timer);
	ev_timer_set(&q->timer, 0., 0.);
	ev_timer_start(q->p->loop, &q->timer);
}

/* "127.0.0.1:8080", "[::1]:8080" */
static void
where(const struct h1_conn *c, char *out, size_t size)
{
	const char *a = c->addrs.n > 0 ? c->addrs.addr[c->ai] : c->o->host;

	snprintf(out, size, strchr(a, ':') ? "[%s]:%d" : "%s:%d", a,
	    c->o->port);
}

/*
 * The request is sent again on a new connection when the reused one
 * turned out closed before any of the answer came: the server closed it
 * as it was being reused, and did not take the request.
 */
static int
try_again(struct h1_req *q)
{
	struct h1_conn *c = q->c;

	if (!c->reused || q->again || q->resp.started)
		return 0;
	q->again = 1;
	q->off = 0;
	c->q = NULL;
	q->c = NULL;
	conn_close(c);
	start_connect(q);
	return 1;
}

/* ---- timers ------------------------------------------------------------------ */

static void
req_arm(struct h1_req *q)
{
	ev_tstamp at = q->deadline;

	if (q->cdeadline && (at == 0 || q->cdeadline < at))
		at = q->cdeadline;
	ev_timer_stop(q->p->loop, &q->timer);
	if (at == 0)
		return;
	ev_timer_set(&q->timer, at > ev_now(q->p->loop) ? at -
	    ev_now(q->p->loop) : 0., 0.);
	ev_timer_start(q->p->loop, &q->timer);
}

static void
req_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct h1_req *q = w->data;
	struct h1_conn *c = q->c;
	char why[sizeof(q->why)], at[RESOLVE_ADDRLEN + 16];
	long ms;

	(void)loop;
	(void)revents;
	if (q->later) {
		snprintf(why, sizeof(why), "%s", q->later);
		req_fail(q, why);
		return;
	}
	if (c && !c->connected) {
		ms = q->timeout_ms > 0 && (q->connect_timeout_ms == 0 ||
		    q->timeout_ms < q->connect_timeout_ms) ? q->timeout_ms :
		    q->connect_timeout_ms;
		where(c, at, sizeof(at));
		snprintf(why, sizeof(why), "connect to %s: timed out after "
		    "%ld ms", at, ms);
	} else {
		snprintf(why, sizeof(why), "timed out after %ld ms",
		    q->timeout_ms);
	}
	req_fail(q, why);
}

/* ---- sending and reading ---------------------------------------------------- */

/*
 * Sends what is left of Q's request: 1 when it is all sent, 0 when more
 * waits for room, -1 (errno set) when the connection failed.
 */
static int
send_left(struct h1_req *q)
{
	ssize_t n = send(q->c->fd, q->buf + q->off, q->len - q->off,
	    MSG_NOSIGNAL);

	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	q->off += (size_t)n;
	return q->off == q->len;
}

static void
send_more(struct h1_req *q)
{
	char why[sizeof(q->why)];
	int rc = send_left(q);

	if (rc == -1) {
		if (try_again(q))
			return;
		snprintf(why, sizeof(why), "bad response: send failure: %s",
		    strerror(errno));
		req_fail(q, why);
		return;
	}
	watch(q->c, rc == 1 ? EV_READ : WRITING);
}

static void
read_answer(struct h1_req *q)
{
	struct h1_conn *c = q->c;
	struct h1_pool *p = q->p;
	char why[sizeof(q->why)];
	enum h1_step step;
	size_t used = 0;
	ssize_t n;

	n = recv(c->fd, p->rbuf, sizeof(p->rbuf), 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		if (try_again(q))
			return;
		snprintf(why, sizeof(why), "bad response: recv failure: %s",
		    strerror(errno));
		req_fail(q, why);
		return;
	}
	if (n == 0) {
		if (!q->resp.started && try_again(q))
			return;
		step = h1_resp_eof(&q->resp);
	} else {
		step = h1_resp_feed(&q->resp, p->rbuf, (size_t)n, q->max_body,
		    &used);
	}
	if (step == H1_MORE)
		return;
	if (step == H1_ERROR) {
		snprintf(why, sizeof(why), "bad response: %s", q->resp.err);
		req_fail(q, why);
		return;
	}
	/* Bytes after the answer, or a request not all sent: not reusable. */
	req_done(q, (n > 0 && used < (size_t)n) || q->off < q->len);
}

/* The connect of C ended (well or not). */
static void
connected(struct h1_conn *c)
{
	struct h1_req *q = c->q;
	char why[sizeof(q->why)], at[RESOLVE_ADDRLEN + 16];
	int err = 0, one = 1;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		where(c, at, sizeof(at));
		snprintf(why, sizeof(why), "connect to %s: %s", at,
		    strerror(err));
		if (c->ai + 1 < c->addrs.n) {
			/* The next address of the name. */
			ev_io_stop(c->p->loop, &c->io);
			close(c->fd);
			c->fd = -1;
			c->ai++;
			start_connect(q);
			return;
		}
		req_fail(q, why);
		return;
	}
	c->connected = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	q->cdeadline = 0;
	req_arm(q);
	send_more(q);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct h1_conn *c = w->data;
	struct h1_req *q = c->q;
	char b[1];

	(void)loop;
	if (q == NULL) {
		/* Idle: whatever comes (a close, stray bytes) ends it. */
		if (recv(c->fd, b, sizeof(b), MSG_PEEK) < 0 &&
		    (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(c);
		return;
	}
	if (!c->connected) {
		connected(c);
		return;
	}
	/* An answer may come before the whole request went (a 413). */
	if (revents & EV_READ)
		read_answer(q);
	else
		send_more(q);
}

/* ---- connecting ------------------------------------------------------------- */

/*
 * C's socket to its address of index ai, or the next that can be tried;
 * the outcome comes by EV_WRITE. Failing at once, the last address fails
 * the request on the next turn.
 */
static void
dial(struct h1_conn *c)
{
	struct h1_req *q = c->q;
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	char why[sizeof(q->why)], at[RESOLVE_ADDRLEN + 16];
	socklen_t len;
	int one = 1;

	for (;; c->ai++) {
		const char *a = c->addrs.addr[c->ai];
		int err;

		memset(&ss, 0, sizeof(ss));
		if (inet_pton(AF_INET, a, &sin->sin_addr) == 1) {
			sin->sin_family = AF_INET;
			sin->sin_port = htons((uint16_t)c->o->port);
			len = sizeof(*sin);
		} else if (inet_pton(AF_INET6, a, &sin6->sin6_addr) == 1) {
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons((uint16_t)c->o->port);
			len = sizeof(*sin6);
		} else {
			len = 0;
		}
		c->fd = len ? socket(ss.ss_family, SOCK_STREAM |
		    SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
		if (c->fd != -1 && (connect(c->fd, (struct sockaddr *)&ss,
		    len) == 0 || errno == EINPROGRESS)) {
			setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one,
			    sizeof(one));
			watch(c, EV_WRITE);
			return;
		}
		err = errno;
		if (c->fd != -1) {
			close(c->fd);
			c->fd = -1;
		}
		if (c->ai + 1 < c->addrs.n)
			continue;
		where(c, at, sizeof(at));
		snprintf(why, sizeof(why), "connect to %s: %s", at, len ?
		    strerror(err) : "not an address");
		req_fail_later(q, why);
		return;
	}
}

static void
resolved(void *arg, const char *name, const struct resolve_answer *answer,
    const char *err)
{
	struct h1_conn *c = arg;
	char why[sizeof(c->q->why)];

	c->lookup = NULL;
	if (answer == NULL) {
		snprintf(why, sizeof(why), "resolve %s: %s", name, err);
		req_fail(c->q, why);
		return;
	}
	c->addrs = *answer;
	c->ai = 0;
	dial(c);
}

/* Q gets a new connection (or its connection the next address). */
static void
start_connect(struct h1_req *q)
{
	struct h1_pool *p = q->p;
	struct h1_conn *c = q->c;

	if (c == NULL) {
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			req_fail_later(q, "no memory for a connection");
			return;
		}
		c->p = p;
		c->fd = -1;
		/* A resend after a reload still goes where it was meant to. */
		c->o = origin_ref(q->o);
		c->q = q;
		ev_init(&c->io, conn_io_cb);
		c->io.data = c;
		q->c = c;
		p->open++;
		if (q->connect_timeout_ms > 0)
			q->cdeadline = ev_now(p->loop) +
			    q->connect_timeout_ms / 1000.;
		req_arm(q);
		if (!resolve_is_numeric(c->o->host)) {
			if (p->resolver == NULL)
				p->resolver = resolver_new(p->loop,
				    H1_RESOLVE_MS);
			c->lookup = p->resolver ? resolver_lookup(p->resolver,
			    c->o->host, resolved, c) : NULL;
			if (c->lookup == NULL)
				req_fail_later(q, "cannot resolve names");
			return;
		}
		c->addrs.n = 1;
		snprintf(c->addrs.addr[0], sizeof(c->addrs.addr[0]), "%s",
		    c->o->host);
		c->ai = 0;
	}
	dial(c);
}

/* ---- the pool ----------------------------------------------------------------- */

struct h1_pool *
h1_pool_new(struct ev_loop *loop)
{
	struct h1_pool *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->loop = loop;
	TAILQ_INIT(&p->idle);
	ev_init(&p->age, age_cb);
	p->age.data = p;
	return p;
}

void
h1_pool_free(struct h1_pool *p)
{
	if (p == NULL)
		return;
	h1_pool_close_idle(p);
	ev_timer_stop(p->loop, &p->age);
	resolver_free(p->resolver);
	origin_unref(p->o);
	free(p);
}

void
h1_pool_set_max(struct h1_pool *p, int max)
{
	p->max = max;
	/* Idle ones past a lower bound close now, the busy as they end. */
	while (p->open > max && oldest(p) != NULL)
		conn_close(oldest(p));
}

int
h1_pool_room(const struct h1_pool *p, int others)
{
	return p->nidle > 0 || p->open + others < p->max;
}

int
h1_pool_open(const struct h1_pool *p)
{
	return p->open;
}

void
h1_pool_close_idle(struct h1_pool *p)
{
	while (!TAILQ_EMPTY(&p->idle))
		conn_close(TAILQ_FIRST(&p->idle));
}

/*
 * Requests go to HOST:PORT from now on: idle connections elsewhere close,
 * and names are looked up afresh.
 */
static int
set_origin(struct h1_pool *p, const char *host, int port)
{
	size_t len = strlen(host);
	struct h1_origin *o;

	if (p->o && strcmp(p->o->host, host) == 0 && p->o->port == port)
		return 0;
	if ((o = malloc(sizeof(*o) + len + 1)) == NULL)
		return -1;
	o->refs = 1;
	o->port = port;
	memcpy(o->host, host, len + 1);
	h1_pool_close_idle(p);
	origin_unref(p->o);
	p->o = o;
	if (p->resolver)
		resolver_flush(p->resolver);
	return 0;
}

struct h1_req *
h1_send(struct h1_pool *p, const struct h1_target *t, const char *buf,
    size_t len, h1_done_fn *fn, void *arg)
{
	struct h1_req *q;
	struct h1_conn *c;
	int rc;

	if (set_origin(p, t->host, t->port) == -1 ||
	    (q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	q->p = p;
	q->o = origin_ref(p->o);
	q->buf = buf;
	q->len = len;
	q->timeout_ms = t->timeout_ms;
	q->connect_timeout_ms = t->connect_timeout_ms;
	q->max_body = t->max_response_bytes;
	q->fn = fn;
	q->arg = arg;
	h1_resp_init(&q->resp);
	ev_init(&q->timer, req_timer_cb);
	q->timer.data = q;
	if (t->timeout_ms > 0)
		q->deadline = ev_now(p->loop) + t->timeout_ms / 1000.;
	if ((c = TAILQ_FIRST(&p->idle)) != NULL) {
		idle_del(p, c);
		c->q = q;
		q->c = c;
		req_arm(q);
		/*
		 * All sent, its watcher reads already. Nothing calls back
		 * from here: a failure waits a turn.
		 */
		rc = send_left(q);
		if (rc == 0)
			watch(c, WRITING);
		else if (rc == -1 && !try_again(q))
			req_fail_later(q, "the connection failed");
		return q;
	}
	start_connect(q);
	return q;
}

void
h1_abort(struct h1_req *q)
{
	if (q->c) {
		q->c->q = NULL;
		conn_close(q->c);
	}
	req_free(q);
}
