/*
 * h1resp: an HTTP/1.x answer read as its bytes arrive, with no I/O: the
 * status line, the few headers the handler needs, and a body measured
 * (Content-Length, chunked, or until the connection closes) of which only
 * the first bytes are kept. A line split between two reads is the only
 * thing copied; headers are bounded, and a body past its bound is cut.
 */
#ifndef TASKWORKERD_H1RESP_H
#define TASKWORKERD_H1RESP_H

#include <stddef.h>

#include "httpreq.h"

#define H1_HEADERS_MAX	(64 * 1024)	/* status line, headers, trailers */
#define H1_PHRASE_MAX	100
#define H1_RETRY_AFTER_MAX	63

enum h1_step {
	H1_MORE,	/* the answer goes on: feed more */
	H1_DONE,	/* the answer ended (or was cut) */
	H1_ERROR,	/* not an HTTP answer: ERR says why */
};

enum h1_state {
	H1S_STATUS, H1S_HEADER, H1S_BODY, H1S_CHUNK_SIZE, H1S_CHUNK_DATA,
	H1S_CHUNK_END, H1S_TRAILER, H1S_UNTIL_CLOSE, H1S_END,
};

struct h1_resp {
	enum h1_state state;
	int status;
	int minor;			/* HTTP/1.MINOR */
	int started;			/* a byte of the answer came */
	int close;			/* the connection ends with it */
	int keep_alive;			/* "Connection: keep-alive" */
	int te;				/* a Transfer-Encoding came */
	int chunked;
	int cut;			/* the body passed its bound */
	long long clen;			/* Content-Length, -1: none */
	unsigned long long left;	/* of the body or the chunk */
	size_t hbytes;			/* of lines, for H1_HEADERS_MAX */
	size_t got;			/* body bytes */
	char *line;			/* a line begun in an earlier read */
	size_t linelen, linecap;
	const char *err;
	char phrase[H1_PHRASE_MAX + 1];
	char retry_after[H1_RETRY_AFTER_MAX + 1];
	size_t headlen;
	char head[HTTP_BODY_IN_REASON];	/* the body's first bytes */
};

void h1_resp_init(struct h1_resp *r);
/* Frees what R holds; R may be inited again. */
void h1_resp_clear(struct h1_resp *r);

/*
 * Reads N bytes of BUF. H1_DONE once the answer has ended, *USED bytes of
 * BUF being its end (more are not of this answer); a body longer than
 * MAX_BODY ends there, CUT set. Informational answers (1xx but 101) are
 * skipped. H1_ERROR says why in ERR. Not to be fed after either.
 */
enum h1_step h1_resp_feed(struct h1_resp *r, const char *buf, size_t n,
    size_t max_body, size_t *used);

/* The connection closed: H1_DONE when that ends the answer, else H1_ERROR. */
enum h1_step h1_resp_eof(struct h1_resp *r);

#endif
