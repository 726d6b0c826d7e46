/*
 * h1conn: plain HTTP/1.1 over keep-alive connections, and HTTP/2 by prior
 * knowledge (h2c) over the same connections. An HTTP/1.1 connection is
 * idle (on the pool's idle list, watched for the server closing it),
 * connecting (for the one request that opened it) or busy with one
 * request. An h2c connection carries up to H2_STREAMS requests at once
 * (fewer if the server says so), each a stream of its nghttp2 session;
 * it is on the pool's avail list while it may take more, on the idle
 * list when it carries none. Its frames are written once a loop turn
 * (an ev_prepare), so the requests of a turn share a send(). A request has one ev_timer, armed for whichever of its
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

#include <nghttp2/nghttp2.h>

#include "h1conn.h"
#include "h1resp.h"
#include "h2mem.h"
#include "resolve.h"

#define H1_READ_BUFFER	(64 * 1024)	/* one for the pool */
#define H1_IDLE_MAX	60.		/* seconds a connection idles at most */
#define WRITING		(EV_READ | EV_WRITE)	/* an early answer is read */
#define H1_RESOLVE_MS	30000		/* a lookup at most: connect_timeout_ms
					   bounds it for each request */
#define H2_STREAMS	100		/* a connection's requests at most */
#define H2_OUT_BUFFER	(16 * 1024)	/* frames gathered for one send() */
#define H2_REFUSED_MAX	16		/* sends of a request servers refuse */

/* Where requests go: a request and its connection each hold a ref. */
struct h1_origin {
	int refs;
	int port;
	int h2;				/* h2c, prior knowledge */
	int streams;			/* its last SETTINGS' bound; -1: none yet */
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
	TAILQ_ENTRY(h1_conn) entry;	/* on the idle or the avail list */
	/* h2c: */
	nghttp2_session *h2;
	TAILQ_HEAD(h1_reqs, h1_req) reqs;	/* its streams, ended ones
						   (orphans) too */
	int nreq;
	int settled;			/* the server's SETTINGS came */
	ev_tstamp cdeadline;		/* of its connect, that of its first */
	long cms;			/* its connect's timeout, in ms */
	char ended[64];			/* a GOAWAY's error, sent or received */
	int avail;			/* on the pool's avail list */
	int dirty;			/* on the pool's dirty list */
	int wev;			/* the events watched */
	TAILQ_ENTRY(h1_conn) dentry;	/* on the dirty list */
	TAILQ_ENTRY(h1_conn) hentry;	/* on the pool's h2 list */
	char *out;			/* frames not yet sent */
	size_t outlen, outoff, outcap;
};

enum again { AGAIN_CLOSED, AGAIN_REFUSED, AGAIN_SHED };

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
	int refused;			/* h2c: times a server did not take it */
	int shed;			/* h2c: taken back, past a new bound */
	const char *later;		/* a failure told on the next turn */
	char why[160];
	struct h1_resp resp;
	h1_done_fn *fn;			/* NULL: an orphan, its stream ending */
	void *arg;
	/* h2c: */
	const nghttp2_nv *nv, *own;
	size_t nnv, nown;
	int32_t sid;			/* its stream; 0: none yet */
	enum { Q_NONE, Q_CONN, Q_PENDING, Q_DONE } on;
	const char *reason;		/* on the done list: failed, saying */
	TAILQ_ENTRY(h1_req) entry;	/* on the list of ON */
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
	/* h2c: */
	struct h1_idle avail;		/* with streams, and room for more */
	TAILQ_HEAD(h1_dirty, h1_conn) dirty;	/* frames to send */
	TAILQ_HEAD(h1_h2s, h1_conn) h2s;	/* every h2c connection */
	struct h1_reqs pending;		/* to be sent again, for room */
	struct h1_reqs done;		/* ended, to be told */
	ev_prepare turn;		/* sends and tells, once a turn */
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;		/* one stream until the SETTINGS */
	nghttp2_option *opt0;		/* none until them (a server took none) */
	struct h2mem *mem;		/* nghttp2's blocks, for its sessions */
	char rbuf[H1_READ_BUFFER];
};

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void start_connect(struct h1_req *q);
static void req_free(struct h1_req *q);
static void conn_fail(struct h1_conn *c, const char *why);
static void conn_fail_later(struct h1_conn *c, const char *why);
static void turn_start(struct h1_pool *p);
static void dial(struct h1_conn *c);
static void h2_connected(struct h1_conn *c);
static void h2_io(struct h1_conn *c, int revents);
static int h2_session(struct h1_conn *c);
static void h2_fail(struct h1_conn *c, const char *why);
static void h2_timeout(struct h1_req *q, const char *why);
static int h2_others(const struct h1_conn *c, const struct h1_req *q);

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
	c->wev = events;
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

/* C leaves the idle or the avail list. */
static void
unlist(struct h1_conn *c)
{
	if (c->idle)
		idle_del(c->p, c);
	if (c->avail) {
		TAILQ_REMOVE(&c->p->avail, c, entry);
		c->avail = 0;
	}
}

static void
conn_close(struct h1_conn *c)
{
	struct h1_pool *p = c->p;
	struct h1_req *q;

	unlist(c);
	if (c->dirty) {
		TAILQ_REMOVE(&p->dirty, c, dentry);
		c->dirty = 0;
	}
	if (c->h2) {
		/* Only orphans are left here: their owners are gone. */
		while ((q = TAILQ_FIRST(&c->reqs)) != NULL) {
			TAILQ_REMOVE(&c->reqs, q, entry);
			req_free(q);
		}
		nghttp2_session_del(c->h2);
		TAILQ_REMOVE(&p->h2s, c, hentry);
		free(c->out);
		/* Room for a request waiting to be sent again. */
		if (!TAILQ_EMPTY(&p->pending))
			turn_start(p);
	}
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
	int cfirst, own;

	(void)loop;
	(void)revents;
	if (q->later) {
		snprintf(why, sizeof(why), "%s", q->later);
		req_fail(q, why);
		return;
	}
	if (q->o->h2 && (c == NULL || c->connected)) {
		snprintf(why, sizeof(why), "timed out after %ld ms",
		    q->timeout_ms);
		h2_timeout(q, why);
		return;
	}
	if (c && !c->connected) {
		/*
		 * Which came first: the connect's deadline, or the request's;
		 * and whether the connect's is the connection's, or a shorter
		 * one of the request's own (it joined the connect later).
		 */
		cfirst = q->cdeadline != 0 && (q->deadline == 0 ||
		    q->cdeadline <= q->deadline);
		own = cfirst && c->h2 && q->cdeadline < c->cdeadline;
		ms = !cfirst ? q->timeout_ms : own ? q->connect_timeout_ms :
		    c->cms;
		where(c, at, sizeof(at));
		snprintf(why, sizeof(why), "connect to %s: timed out after "
		    "%ld ms", at, ms);
		if (c->h2) {
			/*
			 * Its other requests wait for the same connect; if
			 * only its own time is up, the connect goes on.
			 */
			if ((cfirst && !own) || !h2_others(c, q))
				conn_fail(c, why);
			else
				h2_timeout(q, why);
			return;
		}
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
			dial(c);
			return;
		}
		conn_fail(c, why);
		return;
	}
	c->connected = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->h2) {
		h2_connected(c);
		return;
	}
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
	if (!c->connected) {
		connected(c);
		return;
	}
	if (c->h2) {
		h2_io(c, revents);
		return;
	}
	if (q == NULL) {
		/* Idle: whatever comes (a close, stray bytes) ends it. */
		if (recv(c->fd, b, sizeof(b), MSG_PEEK) < 0 &&
		    (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(c);
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
 * C's requests on the next turn.
 */
static void
dial(struct h1_conn *c)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	char why[sizeof(c->q->why)], at[RESOLVE_ADDRLEN + 16];
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
		conn_fail_later(c, why);
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
		conn_fail(c, why);
		return;
	}
	c->addrs = *answer;
	c->ai = 0;
	dial(c);
}

/* A new connection to O, counted open; NULL when out of memory. */
static struct h1_conn *
conn_new(struct h1_pool *p, struct h1_origin *o)
{
	struct h1_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->p = p;
	c->fd = -1;
	TAILQ_INIT(&c->reqs);
	ev_init(&c->io, conn_io_cb);
	c->io.data = c;
	c->o = o;
	if (o->h2 && h2_session(c) == -1) {
		free(c);
		return NULL;
	}
	/* A resend after a reload still goes where it was meant to. */
	c->o = origin_ref(o);
	p->open++;
	return c;
}

/* C looks its host up, or dials it: a failure is told on the next turn. */
static void
conn_begin(struct h1_conn *c)
{
	struct h1_pool *p = c->p;

	if (!resolve_is_numeric(c->o->host)) {
		if (p->resolver == NULL)
			p->resolver = resolver_new(p->loop, H1_RESOLVE_MS);
		c->lookup = p->resolver ? resolver_lookup(p->resolver,
		    c->o->host, resolved, c) : NULL;
		if (c->lookup == NULL)
			conn_fail_later(c, "cannot resolve names");
		return;
	}
	c->addrs.n = 1;
	snprintf(c->addrs.addr[0], sizeof(c->addrs.addr[0]), "%s",
	    c->o->host);
	c->ai = 0;
	dial(c);
}

/* Q (HTTP/1.1) gets a new connection. */
static void
start_connect(struct h1_req *q)
{
	struct h1_pool *p = q->p;
	struct h1_conn *c = conn_new(p, q->o);

	if (c == NULL) {
		req_fail_later(q, "no memory for a connection");
		return;
	}
	c->q = q;
	q->c = c;
	c->cms = q->connect_timeout_ms;
	if (q->connect_timeout_ms > 0)
		q->cdeadline = ev_now(p->loop) + q->connect_timeout_ms / 1000.;
	req_arm(q);
	conn_begin(c);
}

/* C failed, WHY: HTTP/1.1 tells its request now, h2c its requests in the turn. */
static void
conn_fail(struct h1_conn *c, const char *why)
{
	if (c->h2)
		h2_fail(c, why);
	else
		req_fail(c->q, why);
}

/* As conn_fail, from inside a call of the owner: nothing is told yet. */
static void
conn_fail_later(struct h1_conn *c, const char *why)
{
	if (c->h2)
		h2_fail(c, why);
	else
		req_fail_later(c->q, why);
}

/* ---- HTTP/2 by prior knowledge (h2c) ------------------------------------------ */

/*
 * How many requests C may carry: the server's bound, H2_STREAMS at most.
 * Before its SETTINGS come, nghttp2 sends one and holds the others: as
 * many as the origin's last connection allowed, or H2_STREAMS.
 */
static int
h2_limit(struct h1_conn *c)
{
	uint32_t n = nghttp2_session_get_remote_settings(c->h2,
	    NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

	if (!c->settled)
		return c->o->streams > 0 ? c->o->streams : H2_STREAMS;
	return n >= H2_STREAMS ? H2_STREAMS : (int)n;
}

/* Whether C may take a new request (of the pool's origin). */
static int
h2_room(struct h1_conn *c)
{
	return c->o == c->p->o && c->nreq < h2_limit(c) &&
	    nghttp2_session_check_request_allowed(c->h2);
}

/* C goes on the list its requests say: idle, avail, or none (full). */
static void
h2_relist(struct h1_conn *c)
{
	struct h1_pool *p = c->p;

	if (!h2_room(c)) {
		unlist(c);
	} else if (c->nreq == 0) {
		if (c->idle)
			return;
		unlist(c);
		c->idle_since = ev_now(p->loop);
		c->idle = 1;
		TAILQ_INSERT_HEAD(&p->idle, c, entry);
		p->nidle++;
		age_arm(p);
	} else if (!c->avail) {
		unlist(c);
		c->avail = 1;
		TAILQ_INSERT_HEAD(&p->avail, c, entry);
	}
}

static void
turn_start(struct h1_pool *p)
{
	if (!ev_is_active(&p->turn))
		ev_prepare_start(p->loop, &p->turn);
}

/* C has frames to send: they go in the turn, with those of its others. */
static void
mark_dirty(struct h1_conn *c)
{
	if (!c->dirty) {
		c->dirty = 1;
		TAILQ_INSERT_TAIL(&c->p->dirty, c, dentry);
	}
	turn_start(c->p);
}

/* Q leaves its connection's list of streams. */
static void
h2_detach(struct h1_req *q)
{
	struct h1_conn *c = q->c;

	TAILQ_REMOVE(&c->reqs, q, entry);
	c->nreq--;
	q->c = NULL;
	q->on = Q_NONE;
}

/* Q ended: told in the turn, its answer (REASON NULL) or REASON. */
static void
h2_told(struct h1_req *q, const char *reason)
{
	struct h1_pool *p = q->p;

	ev_timer_stop(p->loop, &q->timer);
	q->reason = NULL;
	if (reason != NULL) {
		snprintf(q->why, sizeof(q->why), "%s", reason);
		q->reason = q->why;
	}
	q->on = Q_DONE;
	TAILQ_INSERT_TAIL(&p->done, q, entry);
	turn_start(p);
}

/*
 * Q is sent again once there is room: its connection closed before its
 * answer began (AGAIN_CLOSED, once), the server did not take it
 * (AGAIN_REFUSED, up to H2_REFUSED_MAX times: such a request was not
 * processed, RFC 9113 8.7), or it was taken back unsent (AGAIN_SHED).
 */
static void
h2_again(struct h1_req *q, enum again why)
{
	struct h1_pool *p = q->p;

	if (why == AGAIN_REFUSED)
		q->refused++;
	else if (why == AGAIN_SHED)
		q->shed++;
	else
		q->again = 1;
	q->sid = 0;
	q->off = 0;
	q->cdeadline = 0;
	h1_resp_init(&q->resp);
	req_arm(q);
	q->on = Q_PENDING;
	TAILQ_INSERT_TAIL(&p->pending, q, entry);
	turn_start(p);
}

/*
 * Whether C carries a live request besides Q: while it connects, a
 * connect no request waits for any more ends (others would come on it
 * with later deadlines, and it would never time out).
 */
static int
h2_others(const struct h1_conn *c, const struct h1_req *q)
{
	const struct h1_req *o;

	TAILQ_FOREACH(o, &c->reqs, entry)
		if (o != q && o->fn != NULL)
			return 1;
	return 0;
}

/* Whether Q's HEADERS went out on its connection (its stream is open). */
static int
h2_sent(const struct h1_req *q)
{
	return nghttp2_session_find_stream(q->c->h2, q->sid) != NULL;
}

/*
 * Q, whose HEADERS nghttp2 still holds, leaves its connection: they are
 * cancelled (CODE) and nghttp2 keeps no pointer to Q.
 */
static void
h2_withdraw(struct h1_req *q, uint32_t code)
{
	nghttp2_session *h2 = q->c->h2;

	nghttp2_session_set_stream_user_data(h2, q->sid, NULL);
	nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, q->sid, code);
	h2_detach(q);
}

/*
 * C ended (WHY; NULL: the server closed it). A request whose HEADERS never
 * went to a server that spoke HTTP/2 (its SETTINGS came) is sent again, as
 * one it refused; one the server did not start answering on a connection
 * that answered before, once; the others are told. C closes.
 */
static void
h2_fail(struct h1_conn *c, const char *why)
{
	struct h1_req *q;
	int sent;

	while ((q = TAILQ_FIRST(&c->reqs)) != NULL) {
		sent = h2_sent(q);
		h2_detach(q);
		if (q->fn == NULL)
			req_free(q);
		else if (!sent && c->settled && q->refused < H2_REFUSED_MAX)
			h2_again(q, AGAIN_REFUSED);
		else if (!q->resp.started && c->reused && !q->again)
			h2_again(q, AGAIN_CLOSED);
		else if (why == NULL && c->ended[0] != '\0')
			h2_told(q, c->ended);
		else
			h2_told(q, why ? why : q->resp.started ? "bad response: "
			    "the connection closed before the answer ended" :
			    "bad response: the server closed the connection "
			    "without an answer");
	}
	conn_close(c);
}

/* Q's stream closed with CODE: its answer is whole, or it is not. */
static void
h2_end(struct h1_req *q, uint32_t code)
{
	struct h1_conn *c = q->c;
	char why[sizeof(q->why)];

	h2_detach(q);
	if (q->fn == NULL) {
		req_free(q);
	} else if (q->resp.err != NULL) {
		snprintf(why, sizeof(why), "bad response: %s", q->resp.err);
		h2_told(q, why);
	} else if (q->resp.status >= 200 && (code == NGHTTP2_NO_ERROR ||
	    q->resp.cut)) {
		c->reused = 1;
		h2_told(q, NULL);
	} else if (code == NGHTTP2_REFUSED_STREAM &&
	    q->refused < H2_REFUSED_MAX) {
		h2_again(q, AGAIN_REFUSED);	/* the server did not take it */
	} else {
		snprintf(why, sizeof(why), "bad response: HTTP/2 stream "
		    "reset (%s)", nghttp2_http2_strerror(code));
		h2_told(q, why);
	}
}

static ssize_t
h2_read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
    uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct h1_req *q = src->ptr;
	size_t n = q->len - q->off;

	(void)s;
	(void)sid;
	(void)user;
	if (q->fn == NULL)		/* ended: its body may be gone */
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (n > len)
		n = len;
	memcpy(buf, q->buf + q->off, n);
	q->off += n;
	if (q->off == q->len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* Q goes on C as a new stream. */
static void
h2_attach(struct h1_req *q, struct h1_conn *c)
{
	struct h1_pool *p = q->p;
	nghttp2_nv stack[32], *nva = stack;
	nghttp2_data_provider dp = { .source.ptr = q,
	    .read_callback = h2_read_body };
	size_t n = q->nnv + q->nown;
	char why[sizeof(q->why)];
	ev_tstamp own;
	int32_t sid;

	if (n > sizeof(stack) / sizeof(stack[0]) &&
	    (nva = malloc(n * sizeof(*nva))) == NULL) {
		h2_told(q, "no memory for a request");
		return;
	}
	memcpy(nva, q->nv, q->nnv * sizeof(*nva));
	memcpy(nva + q->nnv, q->own, q->nown * sizeof(*nva));
	sid = nghttp2_submit_request(c->h2, NULL, nva, n, &dp, q);
	if (nva != stack)
		free(nva);
	if (sid < 0) {
		snprintf(why, sizeof(why), "bad response: HTTP/2: %s",
		    nghttp2_strerror(sid));
		h2_told(q, why);
		return;
	}
	q->sid = sid;
	q->c = c;
	q->on = Q_CONN;
	TAILQ_INSERT_TAIL(&c->reqs, q, entry);
	c->nreq++;
	if (!c->connected) {
		/*
		 * The connect's deadline is its first request's; each waits
		 * no longer than it, nor than its own connect timeout.
		 */
		own = q->connect_timeout_ms > 0 ? ev_now(p->loop) +
		    q->connect_timeout_ms / 1000. : 0;
		if (c->cdeadline == 0 && own != 0) {
			c->cdeadline = own;
			c->cms = q->connect_timeout_ms;
		}
		q->cdeadline = c->cdeadline;
		if (own != 0 && own < q->cdeadline)
			q->cdeadline = own;
	}
	req_arm(q);
	h2_relist(c);
	mark_dirty(c);
}

/*
 * Q goes on a connection with room, an idle one or a new one (a resend
 * after a reload: to its own origin); 0 when there is no room for it.
 */
static int
h2_place(struct h1_req *q)
{
	struct h1_pool *p = q->p;
	struct h1_conn *c = NULL;

	if (q->o == p->o && (c = TAILQ_FIRST(&p->avail)) == NULL)
		c = TAILQ_FIRST(&p->idle);
	if (c != NULL) {
		h2_attach(q, c);
		return 1;
	}
	if (p->open >= p->max)
		return 0;
	if ((c = conn_new(p, q->o)) == NULL) {
		h2_told(q, "no memory for a connection");
		return 1;
	}
	h2_attach(q, c);
	if (q->c == c)
		conn_begin(c);
	else
		conn_close(c);
	return 1;
}

static void
place_pending(struct h1_pool *p)
{
	struct h1_req *q;

	while ((q = TAILQ_FIRST(&p->pending)) != NULL) {
		TAILQ_REMOVE(&p->pending, q, entry);
		q->on = Q_NONE;
		if (!h2_place(q)) {
			q->on = Q_PENDING;
			TAILQ_INSERT_HEAD(&p->pending, q, entry);
			return;
		}
	}
}

/*
 * Q's stream timed out or was aborted: reset, freed as it ends; if its
 * HEADERS have not gone yet, they are cancelled and Q is freed now.
 */
static void
h2_orphan(struct h1_req *q)
{
	struct h1_conn *c = q->c;

	q->fn = NULL;
	ev_timer_stop(q->p->loop, &q->timer);
	if (h2_sent(q)) {
		nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, q->sid,
		    NGHTTP2_CANCEL);
	} else {
		h2_withdraw(q, NGHTTP2_CANCEL);
		req_free(q);
	}
	mark_dirty(c);
}

/* Q's time is up (WHY): its stream, if it has one, is reset. */
static void
h2_timeout(struct h1_req *q, const char *why)
{
	h1_done_fn *fn = q->fn;
	void *arg = q->arg;

	if (q->on == Q_PENDING) {
		TAILQ_REMOVE(&q->p->pending, q, entry);
		req_free(q);
	} else {
		h2_orphan(q);
	}
	fn(arg, NULL, why);
}

/* Frames of C go out: 0, or -1 when C failed (and is gone). */
static int
h2_flush(struct h1_conn *c)
{
	char why[sizeof(c->q->why)];
	const uint8_t *d;
	ssize_t n = 0;
	char *out;

	if (!c->connected)
		return 0;		/* they go once it is */
	for (;;) {
		while (c->outoff < c->outlen) {
			n = send(c->fd, c->out + c->outoff, c->outlen -
			    c->outoff, MSG_NOSIGNAL);
			if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				if (c->wev != WRITING)
					watch(c, WRITING);
				return 0;
			}
			if (n < 0) {
				snprintf(why, sizeof(why), "bad response: "
				    "send failure: %s", strerror(errno));
				h2_fail(c, why);
				return -1;
			}
			c->outoff += (size_t)n;
		}
		c->outoff = c->outlen = 0;
		n = 0;
		while (c->outlen < H2_OUT_BUFFER &&
		    (n = nghttp2_session_mem_send(c->h2, &d)) > 0) {
			if (c->outlen + (size_t)n > c->outcap) {
				if ((out = realloc(c->out, c->outlen +
				    (size_t)n)) == NULL) {
					h2_fail(c, "bad response: no memory "
					    "for a frame");
					return -1;
				}
				c->out = out;
				c->outcap = c->outlen + (size_t)n;
			}
			memcpy(c->out + c->outlen, d, (size_t)n);
			c->outlen += (size_t)n;
		}
		if (n < 0) {
			snprintf(why, sizeof(why), "bad response: HTTP/2: %s",
			    nghttp2_strerror((int)n));
			h2_fail(c, why);
			return -1;
		}
		if (c->outlen == 0)
			break;
	}
	if (c->wev != EV_READ)
		watch(c, EV_READ);
	return 0;
}

/* After nghttp2 let go of C: C closes if it is done, or takes its list. */
static void
h2_settle(struct h1_conn *c)
{
	struct h1_pool *p = c->p;

	if (!nghttp2_session_want_read(c->h2) &&
	    !nghttp2_session_want_write(c->h2) && c->outoff == c->outlen) {
		h2_fail(c, NULL);	/* a GOAWAY, its streams done */
		return;
	}
	if (c->nreq == 0 && (!c->connected || !h2_room(c) ||
	    p->open > p->max)) {
		conn_close(c);		/* a connect nobody waits for ends too */
		return;
	}
	h2_relist(c);
}

/* Q, on the done list, is told. */
static void
tell(struct h1_req *q)
{
	struct h1_pool *p = q->p;
	struct h1_resp *r = &q->resp;
	struct h1_answer a = {
		.status = r->status, .phrase = r->phrase,
		.retry_after = r->retry_after, .head = r->head,
		.headlen = r->headlen, .h2 = 1,
	};

	TAILQ_REMOVE(&p->done, q, entry);
	q->on = Q_NONE;
	if (q->reason)
		q->fn(q->arg, NULL, q->reason);
	else
		q->fn(q->arg, &a, NULL);
	req_free(q);
}

/*
 * Once a loop turn, before it waits: frames go out (a send() for each
 * connection), requests to send again find room, and ended ones are told.
 */
static void
turn_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct h1_pool *p = w->data;
	struct h1_conn *c;
	struct h1_req *q;

	(void)revents;
	for (;;) {
		if ((c = TAILQ_FIRST(&p->dirty)) != NULL) {
			TAILQ_REMOVE(&p->dirty, c, dentry);
			c->dirty = 0;
			if (h2_flush(c) == 0)
				h2_settle(c);
			continue;
		}
		place_pending(p);
		if (!TAILQ_EMPTY(&p->dirty))
			continue;
		if ((q = TAILQ_FIRST(&p->done)) == NULL)
			break;
		tell(q);
	}
	ev_prepare_stop(loop, w);
}

/* C's connect is done: its streams' frames go. */
static void
h2_connected(struct h1_conn *c)
{
	struct h1_req *q;

	TAILQ_FOREACH(q, &c->reqs, entry) {
		q->cdeadline = 0;
		if (q->fn)
			req_arm(q);
	}
	mark_dirty(c);
}

static void
h2_io(struct h1_conn *c, int revents)
{
	struct h1_pool *p = c->p;
	char why[sizeof(c->q->why)];
	ssize_t n;

	if (revents & EV_READ) {
		n = recv(c->fd, p->rbuf, sizeof(p->rbuf), 0);
		if (n == 0) {
			h2_fail(c, NULL);
			return;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			snprintf(why, sizeof(why), "bad response: recv failure: "
			    "%s", strerror(errno));
			h2_fail(c, why);
			return;
		}
		if (n > 0 && (n = nghttp2_session_mem_recv(c->h2,
		    (const uint8_t *)p->rbuf, (size_t)n)) < 0) {
			snprintf(why, sizeof(why), "bad response: HTTP/2: %s",
			    nghttp2_strerror((int)n));
			h2_fail(c, why);
			return;
		}
	}
	/* Answers to tell, room, frames to send (a WINDOW_UPDATE, an ACK). */
	mark_dirty(c);
}

static int
h2_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
    void *user)
{
	struct h1_req *q;
	struct h1_resp *r;

	(void)flags;
	(void)user;
	if (f->hd.type != NGHTTP2_HEADERS || (q =
	    nghttp2_session_get_stream_user_data(s, f->hd.stream_id)) == NULL ||
	    q->fn == NULL)
		return 0;
	r = &q->resp;
	r->started = 1;
	r->hbytes += namelen + valuelen + 32;	/* as SETTINGS count them */
	if (r->hbytes > H1_HEADERS_MAX) {
		r->err = "headers too long";
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	if (namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen == 3)
		r->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 +
		    (value[2] - '0');
	else if (namelen == 11 && memcmp(name, "retry-after", 11) == 0) {
		if (valuelen > H1_RETRY_AFTER_MAX)
			valuelen = H1_RETRY_AFTER_MAX;
		memcpy(r->retry_after, value, valuelen);
		r->retry_after[valuelen] = '\0';
	}
	return 0;
}

static int
h2_on_data(nghttp2_session *s, uint8_t flags, int32_t sid,
    const uint8_t *data, size_t len, void *user)
{
	struct h1_req *q = nghttp2_session_get_stream_user_data(s, sid);
	struct h1_resp *r;
	size_t k;

	(void)flags;
	(void)user;
	if (q == NULL || q->fn == NULL || q->resp.cut)
		return 0;
	r = &q->resp;
	if (r->headlen < sizeof(r->head)) {
		k = len < sizeof(r->head) - r->headlen ? len :
		    sizeof(r->head) - r->headlen;
		memcpy(r->head + r->headlen, data, k);
		r->headlen += k;
	}
	r->got += len;
	if (r->got > q->max_body) {
		/* Cut, not buffered: the status decides. */
		r->cut = 1;
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid,
		    NGHTTP2_CANCEL);
	}
	return 0;
}

static int
h2_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *user)
{
	struct h1_req *q = nghttp2_session_get_stream_user_data(s, sid);

	if (q != NULL && q->c == user && q->sid == sid && q->on == Q_CONN)
		h2_end(q, code);
	return 0;
}

/*
 * C's bound of streams is known: requests past it whose HEADERS nghttp2
 * still holds are taken back (their HEADERS cancelled), to go on other
 * connections rather than wait behind C's streams with their time running.
 */
static void
h2_shed(struct h1_conn *c)
{
	int limit = h2_limit(c), keep = limit;
	struct h1_req *q, *next;

	c->o->streams = limit;
	/* Oldest first: they go back in their order. */
	for (q = TAILQ_FIRST(&c->reqs); q != NULL; q = next) {
		next = TAILQ_NEXT(q, entry);
		if (keep-- > 0 || h2_sent(q) || q->fn == NULL)
			continue;
		if (q->shed >= H2_REFUSED_MAX && limit > 0)
			continue;	/* it waits here after all */
		h2_withdraw(q, NGHTTP2_REFUSED_STREAM);
		if (limit == 0)
			h2_told(q, "bad response: the server takes no streams "
			    "(SETTINGS_MAX_CONCURRENT_STREAMS 0)");
		else
			h2_again(q, AGAIN_SHED);
	}
	h2_relist(c);
	mark_dirty(c);
}

/* The server's SETTINGS (its bound of streams), its GOAWAY with an error. */
static int
h2_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct h1_conn *c = user;

	(void)s;
	if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags &
	    NGHTTP2_FLAG_ACK)) {
		c->settled = 1;
		h2_shed(c);
	} else if (f->hd.type == NGHTTP2_GOAWAY &&
	    f->goaway.error_code != NGHTTP2_NO_ERROR)
		snprintf(c->ended, sizeof(c->ended), "bad response: the server "
		    "ended the connection (%s)",
		    nghttp2_http2_strerror(f->goaway.error_code));
	return 0;
}

/* Our GOAWAY: nghttp2 found the server's frames wrong. */
static int
h2_on_sent(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct h1_conn *c = user;

	(void)s;
	if (f->hd.type == NGHTTP2_GOAWAY &&
	    f->goaway.error_code != NGHTTP2_NO_ERROR)
		snprintf(c->ended, sizeof(c->ended), "bad response: HTTP/2 "
		    "connection error (%s)",
		    nghttp2_http2_strerror(f->goaway.error_code));
	return 0;
}

/*
 * A request's HEADERS not sent: a GOAWAY came first (the server will not
 * take it), it was reset (an orphan), or they cannot be (ERR: too big).
 */
static int
h2_on_not_send(nghttp2_session *s, const nghttp2_frame *f, int err,
    void *user)
{
	struct h1_conn *c = user;
	struct h1_req *q;
	char why[sizeof(q->why)];

	if (f->hd.type != NGHTTP2_HEADERS)
		return 0;
	TAILQ_FOREACH(q, &c->reqs, entry)
		if (q->sid == f->hd.stream_id) {
			nghttp2_session_set_stream_user_data(s, q->sid, NULL);
			if (q->fn == NULL ||
			    err == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED) {
				h2_end(q, NGHTTP2_REFUSED_STREAM);
				break;
			}
			h2_detach(q);
			snprintf(why, sizeof(why), "bad response: HTTP/2: %s",
			    nghttp2_strerror(err));
			h2_told(q, why);
			break;
		}
	return 0;
}

/* C's session, its SETTINGS queued: 0, or -1 when out of memory. */
static int
h2_session(struct h1_conn *c)
{
	nghttp2_settings_entry set[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H1_HEADERS_MAX },
	};

	if ((c->out = malloc(H2_OUT_BUFFER)) == NULL)
		return -1;
	c->outcap = H2_OUT_BUFFER;
	if (nghttp2_session_client_new3(&c->h2, c->p->cbs, c, c->o->streams == 0 ?
	    c->p->opt0 : c->p->opt, h2mem_nghttp2(c->p->mem)) != 0) {
		free(c->out);
		return -1;
	}
	if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, set,
	    sizeof(set) / sizeof(set[0])) != 0) {
		nghttp2_session_del(c->h2);
		free(c->out);
		return -1;
	}
	TAILQ_INSERT_TAIL(&c->p->h2s, c, hentry);
	return 0;
}

static nghttp2_session_callbacks *
h2_callbacks(void)
{
	nghttp2_session_callbacks *cbs;

	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return NULL;
	nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
	    h2_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
	    h2_on_close);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs,
	    h2_on_not_send);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, h2_on_sent);
	return cbs;
}

/* ---- the pool ----------------------------------------------------------------- */

struct h1_pool *
h1_pool_new(struct ev_loop *loop)
{
	struct h1_pool *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	if ((p->cbs = h2_callbacks()) == NULL ||
	    nghttp2_option_new(&p->opt) != 0 ||
	    nghttp2_option_new(&p->opt0) != 0 ||
	    (p->mem = h2mem_new(h2mem_checked() ? 0 : H2MEM_KEEP)) == NULL) {
		/* Each of them takes NULL. */
		nghttp2_session_callbacks_del(p->cbs);
		nghttp2_option_del(p->opt);
		nghttp2_option_del(p->opt0);
		free(p);
		return NULL;
	}
	/* The server's bound is kept from the first stream on. */
	nghttp2_option_set_peer_max_concurrent_streams(p->opt, 1);
	nghttp2_option_set_peer_max_concurrent_streams(p->opt0, 0);
	p->loop = loop;
	TAILQ_INIT(&p->idle);
	TAILQ_INIT(&p->avail);
	TAILQ_INIT(&p->dirty);
	TAILQ_INIT(&p->h2s);
	TAILQ_INIT(&p->pending);
	TAILQ_INIT(&p->done);
	ev_init(&p->age, age_cb);
	p->age.data = p;
	ev_prepare_init(&p->turn, turn_cb);
	p->turn.data = p;
	return p;
}

void
h1_pool_free(struct h1_pool *p)
{
	struct h1_req *q;

	if (p == NULL)
		return;
	h1_pool_close_idle(p);
	/* h2c connections still closing the streams of aborted requests. */
	while (!TAILQ_EMPTY(&p->h2s))
		conn_close(TAILQ_FIRST(&p->h2s));
	while ((q = TAILQ_FIRST(&p->pending)) != NULL) {
		TAILQ_REMOVE(&p->pending, q, entry);
		req_free(q);
	}
	while ((q = TAILQ_FIRST(&p->done)) != NULL) {
		TAILQ_REMOVE(&p->done, q, entry);
		req_free(q);
	}
	ev_prepare_stop(p->loop, &p->turn);
	ev_timer_stop(p->loop, &p->age);
	resolver_free(p->resolver);
	origin_unref(p->o);
	nghttp2_session_callbacks_del(p->cbs);
	nghttp2_option_del(p->opt);
	nghttp2_option_del(p->opt0);
	h2mem_free(p->mem);		/* its sessions are gone */
	free(p);
}

void
h1_pool_set_max(struct h1_pool *p, int max)
{
	p->max = max;
	/* Idle ones past a lower bound close now, the busy as they end. */
	while (p->open > max && oldest(p) != NULL)
		conn_close(oldest(p));
	turn_start(p);			/* more room, maybe, to send again */
}

int
h1_pool_room(const struct h1_pool *p, int others)
{
	/* Requests to send again go first. */
	return TAILQ_EMPTY(&p->pending) && (p->nidle > 0 ||
	    !TAILQ_EMPTY(&p->avail) || p->open + others < p->max);
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
 * Requests go to HOST:PORT (over h2c if H2) from now on: idle connections
 * elsewhere close, busy ones take no more, and names are looked up afresh.
 */
static int
set_origin(struct h1_pool *p, const char *host, int port, int h2)
{
	size_t len = strlen(host);
	struct h1_origin *o;

	if (p->o && strcmp(p->o->host, host) == 0 && p->o->port == port &&
	    p->o->h2 == h2)
		return 0;
	if ((o = malloc(sizeof(*o) + len + 1)) == NULL)
		return -1;
	o->refs = 1;
	o->port = port;
	o->h2 = h2;
	o->streams = -1;
	memcpy(o->host, host, len + 1);
	h1_pool_close_idle(p);
	while (!TAILQ_EMPTY(&p->avail))
		unlist(TAILQ_FIRST(&p->avail));
	origin_unref(p->o);
	p->o = o;
	if (p->resolver)
		resolver_flush(p->resolver);
	return 0;
}

struct h1_req *
h1_send(struct h1_pool *p, const struct h1_target *t, const struct h1_msg *m,
    h1_done_fn *fn, void *arg)
{
	struct h1_req *q;
	struct h1_conn *c;
	int rc;

	if (set_origin(p, t->host, t->port, t->h2) == -1 ||
	    (q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	q->p = p;
	q->o = origin_ref(p->o);
	q->buf = t->h2 ? m->body : m->buf;
	q->len = t->h2 ? m->bodylen : m->len;
	q->nv = m->nv;
	q->nnv = m->nnv;
	q->own = m->own;
	q->nown = m->nown;
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
	if (t->h2) {
		/* Nothing is told from here: failures wait for the turn. */
		if (!h2_place(q)) {
			q->on = Q_PENDING;
			TAILQ_INSERT_TAIL(&p->pending, q, entry);
			req_arm(q);
		}
		return q;
	}
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
	struct h1_pool *p = q->p;

	switch (q->on) {
	case Q_CONN:
		h2_orphan(q);		/* freed as its stream ends */
		return;
	case Q_PENDING:
		TAILQ_REMOVE(&p->pending, q, entry);
		break;
	case Q_DONE:
		TAILQ_REMOVE(&p->done, q, entry);
		break;
	case Q_NONE:
		if (q->c) {
			q->c->q = NULL;
			conn_close(q->c);
		}
		break;
	}
	req_free(q);
}
