/*
 * h1conn: requests over plain TCP connections kept alive, on the daemon's
 * libev loop: HTTP/1.1, one request at a time on a connection, or HTTP/2
 * by prior knowledge (h2c, nghttp2), many at once. Names are resolved
 * with c-ares, connects are nonblocking, and a request and its answer
 * take one write and one read in the usual case. It never blocks the
 * loop. (TLS goes through libcurl: httpc.c.)
 */
#ifndef TASKWORKERD_H1CONN_H
#define TASKWORKERD_H1CONN_H

#include <stddef.h>
#include <ev.h>
#include <nghttp2/nghttp2.h>

struct h1_pool;		/* connections to one origin at a time, bounded */
struct h1_req;		/* one request and its answer */

struct h1_answer {
	int status;
	const char *phrase;		/* the server's; may be "" */
	const char *retry_after;	/* "" when none */
	const char *head;		/* the body's first bytes */
	size_t headlen;
	int h2;				/* it came over h2c */
};

/*
 * The end of a request: ANSWER (REASON NULL), or REASON, in words for the
 * task's reason ("connect to 127.0.0.1:8080: Connection refused", "timed
 * out after 30000 ms", "bad response: ..."). Both live during the call.
 * Never runs from inside a call into this module. The request is freed
 * before it runs.
 */
typedef void h1_done_fn(void *arg, const struct h1_answer *answer,
    const char *reason);

struct h1_target {
	const char *host;		/* a name, or a numeric address */
	int port;
	long timeout_ms;		/* the whole request; 0: none */
	long connect_timeout_ms;	/* resolving and connecting; 0: none */
	size_t max_response_bytes;	/* of the body, past which it is cut */
	int h2;				/* h2c, prior knowledge */
};

/* A request, kept by the caller until its end. */
struct h1_msg {
	const char *buf;		/* HTTP/1.1: all of it */
	size_t len;
	const nghttp2_nv *nv;		/* h2c: header fields shared ... */
	size_t nnv;
	const nghttp2_nv *own;		/* ... and its own, then its body */
	size_t nown;
	const char *body;
	size_t bodylen;
};

struct h1_pool *h1_pool_new(struct ev_loop *loop);
/* Closes every connection; requests must have ended or been aborted. */
void h1_pool_free(struct h1_pool *p);
/*
 * At most MAX connections open: idle ones past it close now, busy ones as
 * their requests end.
 */
void h1_pool_set_max(struct h1_pool *p, int max);
/*
 * Whether a request could be sent now: a connection is idle, or fewer
 * than MAX are open besides OTHERS (connections the caller has elsewhere).
 */
int h1_pool_room(const struct h1_pool *p, int others);
/* Connections open: connecting, busy and idle. */
int h1_pool_open(const struct h1_pool *p);
/* Closes the idle connections (their room is wanted elsewhere). */
void h1_pool_close_idle(struct h1_pool *p);

/*
 * Sends M to T: over HTTP/1.1 on an idle connection or a new one, over
 * h2c on a connection with a stream to spare, an idle one or a new one;
 * call only when h1_pool_room() says so. Connections to another origin
 * are closed as they free. A request that finds its reused connection
 * closed by the server before any answer, or that an h2c server refused
 * (REFUSED_STREAM, or above a GOAWAY's last stream), is sent once more.
 * NULL when out of memory.
 */
struct h1_req *h1_send(struct h1_pool *p, const struct h1_target *t,
    const struct h1_msg *m, h1_done_fn *fn, void *arg);
/*
 * Ends Q at once, FN never runs: over HTTP/1.1 its connection is closed,
 * over h2c its stream is reset.
 */
void h1_abort(struct h1_req *q);

#endif
