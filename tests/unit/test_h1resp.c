/*
 * test_h1resp: the HTTP/1.x answer parser, with no socket. Each answer is
 * fed whole, then in two pieces split at every byte, then byte by byte:
 * however the bytes arrive, the parser must read the same answer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h1resp.h"
#include "tap.h"

#define MAXB	65536		/* the handler's default max_response_bytes */
#define MIB	(1024 * 1024)

/* What the parser made of one input. */
struct res {
	enum h1_step step;
	int status;
	char phrase[H1_PHRASE_MAX + 1];
	char retry_after[H1_RETRY_AFTER_MAX + 1];
	size_t headlen;
	char head[HTTP_BODY_IN_REASON];
	size_t got;
	int cut;
	int close;
	size_t end;		/* of the input, where the answer ended */
	size_t fed;		/* bytes of the input given to h1_resp_feed */
	const char *err;
	const char *odd;	/* a promise broken on the way, or NULL */
};

/* What it should have made of it. */
struct want {
	enum h1_step step;
	int status;
	const char *phrase;		/* NULL: "" */
	const char *retry_after;	/* NULL: "" */
	const char *head;		/* NULL: no body */
	size_t headlen;			/* 0: strlen(head) */
	size_t got;
	int cut;
	int close;
	size_t end;
	const char *err;		/* H1_ERROR: all that is compared */
};

/* A growing input. */
struct buf {
	char *p;
	size_t len, cap;
};

static void
add_n(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		while (b->len + n + 1 > b->cap)
			b->cap = b->cap ? b->cap * 2 : 1024;
		if ((b->p = realloc(b->p, b->cap)) == NULL)
			abort();
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void add(struct buf *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
add(struct buf *b, const char *fmt, ...)
{
	char s[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(s, sizeof(s), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(s))
		abort();
	add_n(b, s, (size_t)n);
}

static void
add_rep(struct buf *b, char c, size_t n)
{
	char s[4096];

	memset(s, c, sizeof(s));
	while (n > 0) {
		size_t k = n < sizeof(s) ? n : sizeof(s);

		add_n(b, s, k);
		n -= k;
	}
}

/* N bytes that do not repeat within 251, every byte value among them. */
static void
add_body(struct buf *b, size_t n)
{
	char s[4096];

	while (n > 0) {
		size_t k = n < sizeof(s) ? n : sizeof(s);

		for (size_t i = 0; i < k; i++)
			s[i] = (char)(((b->len + i) * 7 + 3) % 251);
		add_n(b, s, k);
		n -= k;
	}
}

/*
 * Feeds IN of LEN: a first piece of FIRST bytes, then pieces of STEP bytes
 * (0: all the rest at once), each in a buffer of its very size so that a
 * read past it shows under ASan. Stops at H1_DONE or H1_ERROR; with EOF,
 * the connection closes after the last byte if the answer goes on.
 */
static void
run(const char *in, size_t len, size_t max_body, size_t first, size_t step,
    int eof, struct res *out)
{
	enum h1_step s = H1_MORE;
	struct h1_resp r;
	size_t off = 0, n, used;
	char *p;

	memset(out, 0, sizeof(*out));
	h1_resp_init(&r);
	while (off < len) {
		n = off == 0 ? first : step ? step : len - off;
		if (n == 0 || n > len - off)
			n = len - off;
		if ((p = malloc(n)) == NULL)
			abort();
		memcpy(p, in + off, n);
		used = (size_t)-1;
		s = h1_resp_feed(&r, p, n, max_body, &used);
		free(p);
		out->fed = off + n;
		if (r.linecap > H1_HEADERS_MAX)
			out->odd = "the line buffer grew past H1_HEADERS_MAX";
		if (s == H1_ERROR)
			break;
		if (used > n) {
			out->odd = "*used past the piece";
			break;
		}
		if (s == H1_DONE) {
			out->end = off + used;
			break;
		}
		if (used != n)
			out->odd = "H1_MORE without taking the whole piece";
		off += n;
	}
	if (s == H1_MORE) {
		out->end = len;
		if (eof)
			s = h1_resp_eof(&r);
	}
	if (s != H1_ERROR && r.err != NULL)
		out->odd = "an err without H1_ERROR";
	if (s == H1_ERROR && r.err == NULL)
		out->odd = "H1_ERROR without an err";
	out->step = s;
	out->status = r.status;
	memcpy(out->phrase, r.phrase, sizeof(out->phrase));
	memcpy(out->retry_after, r.retry_after, sizeof(out->retry_after));
	out->headlen = r.headlen;
	memcpy(out->head, r.head, r.headlen <= sizeof(r.head) ? r.headlen :
	    sizeof(r.head));
	out->got = r.got;
	out->cut = r.cut;
	out->close = r.close;
	out->err = r.err;
	h1_resp_clear(&r);
	if (r.line != NULL || r.linecap != 0 || r.state != H1S_STATUS)
		out->odd = "h1_resp_clear left something";
}

static const char *
str(const char *s)
{
	return s ? s : "";
}

static size_t
headlen(const struct want *w)
{
	return w->head == NULL ? 0 : w->headlen ? w->headlen : strlen(w->head);
}

/* The first field of R not as W has it, or NULL. */
static const char *
differs(const struct res *r, const struct want *w)
{
	if (r->odd != NULL)
		return r->odd;
	if (r->step != w->step)
		return "the return value";
	if (w->step == H1_ERROR)
		return strcmp(str(r->err), str(w->err)) != 0 ? "err" : NULL;
	if (r->status != w->status)
		return "status";
	if (strcmp(r->phrase, str(w->phrase)) != 0)
		return "phrase";
	if (strcmp(r->retry_after, str(w->retry_after)) != 0)
		return "retry_after";
	if (r->headlen != headlen(w))
		return "headlen";
	if (memcmp(r->head, w->head ? w->head : "", headlen(w)) != 0)
		return "head";
	if (r->got != w->got)
		return "got";
	if (r->cut != w->cut)
		return "cut";
	if (r->close != w->close)
		return "close";
	if (r->end != w->end)
		return "*used";
	return NULL;
}

static const char *
step_name(enum h1_step s)
{
	return s == H1_MORE ? "H1_MORE" : s == H1_DONE ? "H1_DONE" :
	    s == H1_ERROR ? "H1_ERROR" : "?";
}

/* One assertion a field of R, all fields, for the input fed whole. */
static void
check(const char *name, const struct res *r, const struct want *w)
{
	if (!ok(r->odd == NULL, "%s: nothing odd on the way", name))
		diag("  %s", r->odd);
	if (!ok(r->step == w->step, "%s: %s", name, step_name(w->step)))
		diag("  got %s (err: %s)", step_name(r->step), str(r->err));
	if (w->step == H1_ERROR) {
		if (!ok(r->err != NULL && strcmp(r->err, w->err) == 0,
		    "%s: err \"%s\"", name, w->err))
			diag("  got \"%s\"", str(r->err));
		return;
	}
	ok(r->err == NULL, "%s: no err", name);
	if (!ok(r->status == w->status, "%s: status %d", name, w->status))
		diag("  got %d", r->status);
	if (!ok(strcmp(r->phrase, str(w->phrase)) == 0, "%s: phrase \"%s\"",
	    name, str(w->phrase)))
		diag("  got \"%s\"", r->phrase);
	if (!ok(strcmp(r->retry_after, str(w->retry_after)) == 0,
	    "%s: retry_after \"%s\"", name, str(w->retry_after)))
		diag("  got \"%s\"", r->retry_after);
	if (!ok(r->headlen == headlen(w) && memcmp(r->head,
	    w->head ? w->head : "", headlen(w)) == 0,
	    "%s: head, %zu bytes", name, headlen(w)))
		diag("  got %zu bytes: \"%.*s\"", r->headlen, (int)r->headlen,
		    r->head);
	if (!ok(r->got == w->got, "%s: got %zu", name, w->got))
		diag("  got %zu", r->got);
	if (!ok(r->cut == w->cut, "%s: cut %d", name, w->cut))
		diag("  got %d", r->cut);
	if (!ok(r->close == w->close, "%s: close %d", name, w->close))
		diag("  got %d", r->close);
	if (!ok(r->end == w->end, "%s: *used ends the answer at %zu", name,
	    w->end))
		diag("  got %zu", r->end);
}

enum { WHOLE, SPLIT };

#define ALL	((size_t)-1)	/* want.end: all of the input */

/*
 * IN of LEN should read as W: fed whole and, with SPLIT, in two pieces at
 * every split point and byte by byte.
 */
static void
expect(const char *name, const char *in, size_t len, size_t max_body,
    int eof, int how, const struct want *w)
{
	const char *bad = NULL;
	struct want wl = *w;
	struct res r;
	size_t at = 0;

	if (wl.end == ALL)
		wl.end = len;
	w = &wl;
	run(in, len, max_body, len, 0, eof, &r);
	check(name, &r, w);
	if (how != SPLIT)
		return;
	for (size_t s = 1; s < len && bad == NULL; s++) {
		run(in, len, max_body, s, 0, eof, &r);
		if ((bad = differs(&r, w)) != NULL)
			at = s;
	}
	if (!ok(bad == NULL, "%s: the same in two pieces, split at each of "
	    "%zu bytes", name, len > 0 ? len - 1 : 0))
		diag("  split after byte %zu: %s differs", at, bad);
	run(in, len, max_body, 1, 1, eof, &r);
	bad = differs(&r, w);
	if (!ok(bad == NULL, "%s: the same byte by byte", name))
		diag("  %s differs", bad);
}

/* EXPECT for a C string. */
#define EXPECT(name, in, max_body, eof, how, ...) do {			\
	struct want w_ = __VA_ARGS__;					\
	expect(name, in, strlen(in), max_body, eof, how, &w_);		\
} while (0)

/* A piece of an answer that gets it refused, with why. */
struct refused {
	const char *name;	/* NULL: WHAT "PART" */
	const char *part, *err;
};

/* FMT around each PART of T is H1_ERROR, with its err. */
static void
expect_refused(const char *what, const char *fmt, const struct refused *t,
    size_t n)
{
	char in[512], name[160];

	for (size_t i = 0; i < n; i++) {
		snprintf(in, sizeof(in), fmt, t[i].part);
		if (t[i].name != NULL)
			snprintf(name, sizeof(name), "%s", t[i].name);
		else
			snprintf(name, sizeof(name), "%s \"%s\"", what,
			    t[i].part);
		EXPECT(name, in, MAXB, 0, SPLIT, { .step = H1_ERROR,
		    .err = t[i].err });
	}
}

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

static void
test_no_body(void)
{
	const char *a = "HTTP/1.1 204 No Content\r\nDate: Sun, 06 Nov 1994 "
	    "08:49:37 GMT\r\n\r\n";
	const char *b = "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n";

	EXPECT("204", a, MAXB, 0, SPLIT, { .step = H1_DONE, .status = 204,
	    .phrase = "No Content", .end = strlen(a) });
	EXPECT("304, its length not of a body", b, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 304, .phrase = "Not Modified",
	    .end = strlen(b) });
	EXPECT("Content-Length: 0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
	    "\r\n", MAXB, 0, SPLIT, { .step = H1_DONE, .status = 200,
	    .phrase = "OK", .end = ALL });
}

static void
test_length(void)
{
	const char *a = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
	    "Content-Length: 11\r\n\r\nhello world";
	const char *b = "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi";
	const char *c = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nh";

	EXPECT("Content-Length", a, MAXB, 0, SPLIT, { .step = H1_DONE,
	    .status = 200, .phrase = "OK", .head = "hello world", .got = 11,
	    .end = strlen(a) });
	EXPECT("bare LF line ends", b, MAXB, 0, SPLIT, { .step = H1_DONE,
	    .status = 200, .phrase = "OK", .head = "hi", .got = 2,
	    .end = strlen(b) });
	EXPECT("a body short of its length", c, MAXB, 0, SPLIT,
	    { .step = H1_MORE, .status = 200, .phrase = "OK", .head = "h",
	    .got = 1, .end = strlen(c) });
	EXPECT("obsolete line folding is passed over", "HTTP/1.1 200 OK\r\n"
	    "X-A: b\r\n \tfolded: x\r\nContent-Length: 1\r\n\r\nz", MAXB, 0,
	    SPLIT, { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = "z", .got = 1, .end = ALL });
}

static void
test_length_values(void)
{
	static const struct refused bad[] = {
		{ NULL, "", "an empty Content-Length" },
		{ NULL, "   ", "an empty Content-Length" },
		{ NULL, "abc", "a bad Content-Length" },
		{ NULL, "-1", "a bad Content-Length" },
		{ NULL, "+5", "a bad Content-Length" },
		{ NULL, "1 2", "a bad Content-Length" },
		{ NULL, "5, 5", "a bad Content-Length" },
		{ NULL, "0x10", "a bad Content-Length" },
		{ NULL, "12a", "a bad Content-Length" },
		{ NULL, "99999999999999999999", "a bad Content-Length" },
		{ NULL, "9223372036854775808", "a bad Content-Length" },
	};
	const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
	    "content-length: 3\r\n\r\nabcX";
	const char *blanks = "HTTP/1.1 200 OK\r\nContent-Length: \t 3 \t\r\n"
	    "\r\nabc";

	expect_refused("Content-Length", "HTTP/1.1 200 OK\r\n"
	    "Content-Length: %s\r\n\r\nabc", bad, NELEM(bad));
	EXPECT("two different Content-Lengths", "HTTP/1.1 200 OK\r\n"
	    "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", MAXB, 0,
	    SPLIT, { .step = H1_ERROR,
	    .err = "two different Content-Lengths" });
	EXPECT("two equal Content-Lengths", two, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "abc",
	    .got = 3, .end = strlen(two) - 1 });
	EXPECT("Content-Length in blanks", blanks, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "abc",
	    .got = 3, .end = strlen(blanks) });
}

static void
test_chunked(void)
{
	const char *a = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "5;name=value\r\nhello\r\n"
	    "8 ; a=\"b;c\" ; d\r\n, chunky\r\n"
	    "1A\r\n abcdefghijklmnopqrstuvwxy\r\n"
	    "00000000000000000000000003\r\n!!!\r\n"
	    "0;last\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n";
	const char *body = "hello, chunky abcdefghijklmnopqrstuvwxy!!!";
	const char *b = "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, CHUNKED\r\n"
	    "Content-Length: 999\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
	const char *c = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "0\r\n\r\n";

	EXPECT("chunked: extensions, uppercase hex, trailers", a, MAXB, 0,
	    SPLIT, { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = body, .got = strlen(body), .end = strlen(a) });
	EXPECT("chunked last of codings, over Content-Length", b, MAXB, 0,
	    SPLIT, { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = "hi", .got = 2, .end = strlen(b) });
	EXPECT("chunked, empty", c, MAXB, 0, SPLIT, { .step = H1_DONE,
	    .status = 200, .phrase = "OK", .end = strlen(c) });
}

static void
test_chunked_bad(void)
{
	static const struct refused bad[] = {
		{ "a chunk size not hex", "zz\r\n", "a bad chunk size" },
		{ "a chunk size followed by junk", "5x\r\nhello\r\n0\r\n\r\n",
		    "a bad chunk size" },
		{ "no chunk size", "\r\nhello\r\n", "a bad chunk size" },
		{ "a chunk size after a blank", " 5\r\nhello\r\n",
		    "a bad chunk size" },
		{ "a chunk longer than its size", "3\r\nhello\r\n0\r\n\r\n",
		    "a chunk longer than its size" },
		{ "a second chunk longer than its size",
		    "2\r\nhi\r\n1\r\nab\r\n0\r\n\r\n",
		    "a chunk longer than its size" },
		{ "chunk size overflow, 17 hex digits",
		    "10000000000000000\r\nx\r\n", "a chunk size too large" },
		{ "chunk size overflow, 20 hex digits",
		    "FFFFFFFFFFFFFFFFFFFF\r\nx\r\n", "a chunk size too large" },
	};
	struct buf big = { 0 };

	expect_refused(NULL, "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n%s", bad, NELEM(bad));
	/* The largest size that fits: read as far as the body is let. */
	EXPECT("chunk size 2^64-1, cut", "HTTP/1.1 200 OK\r\nTransfer-Encoding:"
	    " chunked\r\n\r\nffffffffffffffff\r\nabcde", 4, 0, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "abcd",
	    .got = 5, .cut = 1, .close = 1, .end = ALL });
	add(&big, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
	add_rep(&big, 'e', 1100);
	add(&big, "\r\nx\r\n0\r\n\r\n");
	expect("a chunk size line of 1 KB", big.p, big.len, MAXB, 0, WHOLE,
	    &(struct want){ .step = H1_ERROR,
	    .err = "a chunk size line too long" });
	free(big.p);
}

static void
test_informational(void)
{
	const char *a = "HTTP/1.1 100 Continue\r\n\r\n"
	    "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n"
	    "Retry-After: 5\r\nContent-Length: 7\r\n\r\n"
	    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
	const char *b = "HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n"
	    "HTTP/1.1 200 Fine\r\n\r\nuntil the end";
	const char *c = "HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: gzip\r\n"
	    "\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiXX";
	const char *d = "HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n"
	    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

	EXPECT("100 and 103 before the answer", a, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "hi",
	    .got = 2, .end = strlen(a) });
	EXPECT("a 103's headers are not the answer's", b, MAXB, 1, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "Fine",
	    .head = "until the end", .got = 13, .close = 1,
	    .end = strlen(b) });
	EXPECT("a 103's Transfer-Encoding is not the answer's", c, MAXB, 0,
	    SPLIT, { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = "hi", .got = 2, .end = strlen(c) - 2 });
	EXPECT("a 100's Connection: close holds", d, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "hi",
	    .got = 2, .close = 1, .end = strlen(d) });
	EXPECT("a 100 alone goes on", "HTTP/1.1 100 Continue\r\n\r\n", MAXB,
	    0, SPLIT, { .step = H1_MORE, .end = ALL });
	EXPECT("101 refused", "HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n", MAXB, 0, SPLIT,
	    { .step = H1_ERROR,
	    .err = "101 Switching Protocols was not asked for" });
}

static void
test_connection(void)
{
	const char *a = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi";
	const char *b = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
	    "Content-Length: 2\r\n\r\nhi";
	const char *c = "HTTP/1.1 200 OK\r\nConnection: close\r\n"
	    "Content-Length: 2\r\n\r\nhi";
	const char *d = "HTTP/1.1 200 OK\r\nCONNECTION: Upgrade , CLOSE\r\n"
	    "Content-Length: 2\r\n\r\nhi";
	const char *e = "HTTP/1.0 200 OK\r\nconnection: foo, Keep-Alive\r\n"
	    "Content-Length: 2\r\n\r\nhi";
	const char *f = "HTTP/1.1 200 OK\r\nConnection: closed, x-close\r\n"
	    "Content-Length: 2\r\n\r\nhi";
	const char *g = "HTTP/1.1 200 OK\r\nServer: x\r\n\r\nsome body";
	const char *h = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nab";

	EXPECT("HTTP/1.0: close", a, MAXB, 0, SPLIT, { .step = H1_DONE,
	    .status = 200, .phrase = "OK", .head = "hi", .got = 2, .close = 1,
	    .end = strlen(a) });
	EXPECT("HTTP/1.0 keep-alive: not close", b, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "hi",
	    .got = 2, .end = strlen(b) });
	EXPECT("Connection: close", c, MAXB, 0, SPLIT, { .step = H1_DONE,
	    .status = 200, .phrase = "OK", .head = "hi", .got = 2, .close = 1,
	    .end = strlen(c) });
	EXPECT("Connection: close in a list, any case", d, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "hi",
	    .got = 2, .close = 1, .end = strlen(d) });
	EXPECT("HTTP/1.0 keep-alive in a list, any case", e, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "hi",
	    .got = 2, .end = strlen(e) });
	EXPECT("tokens that only hold \"close\"", f, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "hi",
	    .got = 2, .end = strlen(f) });
	EXPECT("no length, not chunked: goes on", g, MAXB, 0, SPLIT,
	    { .step = H1_MORE, .status = 200, .phrase = "OK",
	    .head = "some body", .got = 9, .close = 1, .end = strlen(g) });
	EXPECT("no length, not chunked: done at the close", g, MAXB, 1, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = "some body", .got = 9, .close = 1, .end = strlen(g) });
	EXPECT("HTTP/1.0 keep-alive with no length: until the close", h, MAXB,
	    1, SPLIT, { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = "ab", .got = 2, .close = 1, .end = strlen(h) });
}

static void
test_until_close(void)
{
	const char *a = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
	    "\x1f\x8b\x08";
	const char *b = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n"
	    "\r\n2\r\nhi\r\n0\r\n\r\n";
	const char *c = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	    "Transfer-Encoding: gzip\r\n\r\nxyz";
	const char *d = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
	    "Content-Length: 3\r\n\r\nabcdef";

	EXPECT("Transfer-Encoding: gzip goes on", a, MAXB, 0, SPLIT,
	    { .step = H1_MORE, .status = 200, .phrase = "OK",
	    .head = "\x1f\x8b\x08", .got = 3, .close = 1, .end = strlen(a) });
	EXPECT("Transfer-Encoding: gzip, done at the close", a, MAXB, 1, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = "\x1f\x8b\x08", .got = 3, .close = 1, .end = strlen(a) });
	EXPECT("chunked, then gzip: until the close", b, MAXB, 1, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = "2\r\nhi\r\n0\r\n\r\n", .got = 12, .close = 1,
	    .end = strlen(b) });
	EXPECT("chunked, then gzip in a second field", c, MAXB, 1, SPLIT,
	    { .step = H1_DONE, .status = 200, .phrase = "OK", .head = "xyz",
	    .got = 3, .close = 1, .end = strlen(c) });
	/* RFC 9112 6.3: the Transfer-Encoding overrides the length. */
	EXPECT("Transfer-Encoding: gzip over a Content-Length", d, MAXB, 1,
	    SPLIT, { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = "abcdef", .got = 6, .close = 1, .end = strlen(d) });
}

static void
test_retry_after(void)
{
	const char *a = "HTTP/1.1 503 Service Unavailable\r\n"
	    "retry-after: \t 120  \t\r\nContent-Length: 4\r\n\r\nbusy";
	const char *b = "HTTP/1.1 429 Too Many Requests\r\n"
	    "RETRY-AFTER: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
	    "CONTENT-LENGTH: 0\r\n\r\n";
	const char *c = "HTTP/1.1 503 x\r\nRetry-After: 1\r\nRetry-After: 2\r\n"
	    "Retry-After-Not: 3\r\nX-Retry-After: 4\r\nContent-Length: 0\r\n\r\n";
	char want[H1_RETRY_AFTER_MAX + 1];
	struct buf d = { 0 };

	EXPECT("Retry-After, trimmed", a, MAXB, 0, SPLIT, { .step = H1_DONE,
	    .status = 503, .phrase = "Service Unavailable",
	    .retry_after = "120", .head = "busy", .got = 4,
	    .end = strlen(a) });
	EXPECT("RETRY-AFTER as a date", b, MAXB, 0, SPLIT, { .step = H1_DONE,
	    .status = 429, .phrase = "Too Many Requests",
	    .retry_after = "Sun, 06 Nov 1994 08:49:37 GMT",
	    .end = strlen(b) });
	EXPECT("the last Retry-After, no other name", c, MAXB, 0, SPLIT,
	    { .step = H1_DONE, .status = 503, .phrase = "x",
	    .retry_after = "2", .end = strlen(c) });
	add(&d, "HTTP/1.1 503 Slow\r\nRetry-After:  ");
	for (int i = 0; i < 100; i++)
		add(&d, "%c", 'a' + i % 26);
	add(&d, "\r\nContent-Length: 0\r\n\r\n");
	for (int i = 0; i < H1_RETRY_AFTER_MAX; i++)
		want[i] = (char)('a' + i % 26);
	want[H1_RETRY_AFTER_MAX] = '\0';
	expect("Retry-After cut at H1_RETRY_AFTER_MAX", d.p, d.len, MAXB, 0,
	    SPLIT, &(struct want){ .step = H1_DONE, .status = 503,
	    .phrase = "Slow", .retry_after = want, .end = d.len });
	free(d.p);
}

static void
test_status_line(void)
{
	static const struct refused bad[] = {
		{ NULL, "garbage", "no HTTP/1.x status line" },
		{ NULL, "HTTP/1.1 abc", "the status is not 3 digits" },
		{ NULL, "HTTP/1.1 abc OK", "the status is not 3 digits" },
		{ NULL, "HTTP/2 200", "no HTTP/1.x status line" },
		{ NULL, "HTTP/2.0 200 OK", "no HTTP/1.x status line" },
		{ NULL, "HTTP/1.1 99 x", "the status is not 3 digits" },
		{ NULL, "HTTP/1.1 099 x", "a status below 100" },
		{ NULL, "HTTP/1.1 2000 OK", "the status is not 3 digits" },
		{ NULL, "HTTP/1.1 200OK", "the status is not 3 digits" },
		{ NULL, "HTTP/1.10 200 OK", "no HTTP/1.x status line" },
		{ NULL, "HTTP/1.x 200 OK", "no HTTP/1.x status line" },
		{ NULL, "http/1.1 200 OK", "no HTTP/1.x status line" },
		{ NULL, " HTTP/1.1 200 OK", "no HTTP/1.x status line" },
		{ NULL, "", "no HTTP/1.x status line" },
	};
	char in[256], phrase[200], want[H1_PHRASE_MAX + 1];

	expect_refused("status line", "%s\r\nContent-Length: 0\r\n\r\n",
	    bad, NELEM(bad));
	EXPECT("a header line with no colon", "HTTP/1.1 200 OK\r\nbogus\r\n"
	    "\r\n", MAXB, 0, SPLIT, { .step = H1_ERROR,
	    .err = "a header line without a name" });
	EXPECT("a header line with no name", "HTTP/1.1 200 OK\r\n: x\r\n\r\n",
	    MAXB, 0, SPLIT, { .step = H1_ERROR,
	    .err = "a header line without a name" });
	EXPECT("no phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", MAXB,
	    0, SPLIT, { .step = H1_DONE, .status = 200, .end = ALL });
	EXPECT("HTTP/1.1 with a blank, no phrase", "HTTP/1.1 404 \r\n"
	    "Content-Length: 0\r\n\r\n", MAXB, 0, SPLIT, { .step = H1_DONE,
	    .status = 404, .end = ALL });
	EXPECT("a phrase trimmed at its end", "HTTP/1.1 404  Not  Found \t \r\n"
	    "Content-Length: 0\r\n\r\n", MAXB, 0, SPLIT, { .step = H1_DONE,
	    .status = 404, .phrase = " Not  Found", .end = ALL });
	EXPECT("status 999", "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
	    MAXB, 0, SPLIT, { .step = H1_DONE, .status = 999,
	    .phrase = "Odd", .end = ALL });

	for (int i = 0; i < 150; i++)
		phrase[i] = (char)('A' + i % 26);
	phrase[150] = '\0';
	memcpy(want, phrase, H1_PHRASE_MAX);
	want[H1_PHRASE_MAX] = '\0';
	snprintf(in, sizeof(in), "HTTP/1.1 500 %s\r\nContent-Length: 0\r\n\r\n",
	    phrase);
	expect("a phrase cut at H1_PHRASE_MAX", in, strlen(in), MAXB, 0, SPLIT,
	    &(struct want){ .step = H1_DONE, .status = 500, .phrase = want,
	    .end = strlen(in) });
	snprintf(in, sizeof(in), "HTTP/1.1 500 %s\r\nContent-Length: 0\r\n\r\n",
	    want);
	expect("a phrase of H1_PHRASE_MAX, whole", in, strlen(in), MAXB, 0,
	    WHOLE, &(struct want){ .step = H1_DONE, .status = 500,
	    .phrase = want, .end = strlen(in) });
}

static void
test_headers_max(void)
{
	struct buf a = { 0 }, b = { 0 }, c = { 0 };
	struct res r;
	size_t fill;

	/* One header line of 200 KB, in pieces of 4 KB. */
	add(&a, "HTTP/1.1 200 OK\r\nX-Big: ");
	add_rep(&a, 'b', 200 * 1024);
	add(&a, "\r\nContent-Length: 0\r\n\r\n");
	run(a.p, a.len, MAXB, 4096, 4096, 0, &r);
	if (!ok(r.odd == NULL, "a 200 KB header in 4 KB pieces: the line "
	    "buffer stays within H1_HEADERS_MAX"))
		diag("  %s", r.odd);
	ok(r.step == H1_ERROR && r.err != NULL && strcmp(r.err,
	    "headers longer than 65536 bytes") == 0,
	    "a 200 KB header in 4 KB pieces: H1_ERROR, headers too long");
	if (!ok(r.fed <= H1_HEADERS_MAX + 4096, "a 200 KB header: refused "
	    "within 4 KB past H1_HEADERS_MAX"))
		diag("  fed %zu bytes", r.fed);
	expect("a 200 KB header, whole", a.p, a.len, MAXB, 0, WHOLE,
	    &(struct want){ .step = H1_ERROR,
	    .err = "headers longer than 65536 bytes" });

	/* Many short headers, none long. */
	add(&b, "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i < 2000; i++)
		add(&b, "X-Many-%04d: 0123456789012345678901234567890\r\n", i);
	add(&b, "Content-Length: 0\r\n\r\n");
	run(b.p, b.len, MAXB, 1, 1, 0, &r);
	ok(r.odd == NULL && r.step == H1_ERROR && r.err != NULL &&
	    strcmp(r.err, "headers longer than 65536 bytes") == 0,
	    "2000 headers, 90 KB, byte by byte: H1_ERROR, headers too long");

	/* Headers (status line and blank line too) of exactly the bound. */
	add(&c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Fill: ");
	fill = H1_HEADERS_MAX - c.len - 4;
	add_rep(&c, 'f', fill);
	add(&c, "\r\n\r\nz");
	expect("headers of H1_HEADERS_MAX bytes", c.p, c.len, MAXB, 0, WHOLE,
	    &(struct want){ .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = "z", .got = 1, .end = c.len });
	run(c.p, c.len, MAXB, 1, 1, 0, &r);
	ok(differs(&r, &(struct want){ .step = H1_DONE, .status = 200,
	    .phrase = "OK", .head = "z", .got = 1, .end = c.len }) == NULL,
	    "headers of H1_HEADERS_MAX bytes, byte by byte");
	c.len = 0;
	add(&c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Fill: ");
	add_rep(&c, 'f', fill + 1);
	add(&c, "\r\n\r\nz");
	expect("headers of H1_HEADERS_MAX + 1 bytes", c.p, c.len, MAXB, 0,
	    WHOLE, &(struct want){ .step = H1_ERROR,
	    .err = "headers longer than 65536 bytes" });
	run(c.p, c.len, MAXB, 4096, 4096, 0, &r);
	ok(r.odd == NULL && r.step == H1_ERROR,
	    "headers of H1_HEADERS_MAX + 1 bytes, in 4 KB pieces");
	free(a.p);
	free(b.p);
	free(c.p);
}

/* A body of N, fed whole, in 4 KB pieces and byte by byte, cut at MAXB. */
static void
cut_three_ways(const char *name, const struct buf *in, size_t hdr)
{
	struct want w = { .step = H1_DONE, .status = 200, .phrase = "OK",
	    .got = MAXB + 1, .cut = 1, .close = 1 };
	const char *bad;
	char body[HTTP_BODY_IN_REASON];
	struct res r;
	size_t at;

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)(((hdr + i) * 7 + 3) % 251);
	w.head = body;
	w.headlen = sizeof(body);
	w.end = in->len;
	expect(name, in->p, in->len, MAXB, 0, WHOLE, &w);
	/* In pieces the cut takes the piece that passed the bound. */
	at = hdr + MAXB;		/* the byte past the bound */
	w.end = (at / 4096 + 1) * 4096;
	run(in->p, in->len, MAXB, 4096, 4096, 0, &r);
	bad = differs(&r, &w);
	if (!ok(bad == NULL, "%s: the same in 4 KB pieces", name))
		diag("  %s differs", bad);
	w.end = at + 1;
	run(in->p, in->len, MAXB, 1, 1, 0, &r);
	bad = differs(&r, &w);
	if (!ok(bad == NULL, "%s: the same byte by byte", name))
		diag("  %s differs", bad);
}

static void
test_max_body(void)
{
	struct buf a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
	size_t hdr;

	add(&a, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", MIB);
	hdr = a.len;
	add_body(&a, MIB);
	cut_three_ways("1 MiB with max_body 65536", &a, hdr);

	/* Until the close: cut before it. */
	add(&b, "HTTP/1.1 200 OK\r\n\r\n");
	hdr = b.len;
	add_body(&b, MIB);
	cut_three_ways("1 MiB until the close, max_body 65536", &b, hdr);

	/* Exactly max_body: not cut. */
	add(&c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", MAXB);
	hdr = c.len;
	add_body(&c, MAXB);
	{
		char body[HTTP_BODY_IN_REASON];
		struct want w = { .step = H1_DONE, .status = 200,
		    .phrase = "OK", .head = body, .headlen = sizeof(body),
		    .got = MAXB, .end = c.len };
		struct res r;

		for (size_t i = 0; i < sizeof(body); i++)
			body[i] = c.p[hdr + i];
		expect("a body of max_body bytes", c.p, c.len, MAXB, 0, WHOLE,
		    &w);
		run(c.p, c.len, MAXB, 1, 1, 0, &r);
		ok(differs(&r, &w) == NULL,
		    "a body of max_body bytes, byte by byte");
		/* One byte more, until the close. */
		c.len = 0;
		add(&c, "HTTP/1.1 200 OK\r\n\r\n");
		add_n(&c, b.p + strlen("HTTP/1.1 200 OK\r\n\r\n"), MAXB + 1);
		memcpy(body, b.p + strlen("HTTP/1.1 200 OK\r\n\r\n"),
		    sizeof(body));
		w.got = MAXB + 1;
		w.cut = w.close = 1;
		w.end = c.len;
		expect("max_body + 1 until the close", c.p, c.len, MAXB, 0,
		    WHOLE, &w);
	}

	/* Chunked, 4 KB chunks. */
	add(&d, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (size_t i = 0; i < MIB / 4096; i++) {
		struct buf t = { 0 };

		add(&d, "1000\r\n");
		add_body(&t, 4096);
		add_n(&d, t.p, t.len);
		add(&d, "\r\n");
		free(t.p);
	}
	add(&d, "0\r\n\r\n");
	{
		struct want w = { .step = H1_DONE, .status = 200,
		    .phrase = "OK", .headlen = HTTP_BODY_IN_REASON,
		    .got = MAXB + 1, .cut = 1, .close = 1, .end = d.len };
		const char *hb = d.p + strlen("HTTP/1.1 200 OK\r\n"
		    "Transfer-Encoding: chunked\r\n\r\n1000\r\n");
		struct res r;

		w.head = hb;
		expect("1 MiB chunked with max_body 65536", d.p, d.len, MAXB, 0,
		    WHOLE, &w);
		run(d.p, d.len, MAXB, 1, 1, 0, &r);
		/* 16 chunks of 4 KB, then the first byte of the 17th. */
		w.end = (size_t)(hb - d.p) + 16 * (4096 + 8) + 1;
		ok(differs(&r, &w) == NULL,
		    "1 MiB chunked with max_body 65536, byte by byte");
	}
	free(a.p);
	free(b.p);
	free(c.p);
	free(d.p);
}

static void
test_many_chunks(void)
{
	struct buf a = { 0 };
	char head[HTTP_BODY_IN_REASON];

	/*
	 * A chunked body of 20000 one-byte chunks: 13 KB of body, well under
	 * max_body, and no header is long; chunk framing is body, not
	 * headers.
	 */
	add(&a, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 20000; i++)
		add(&a, "1\r\n%c\r\n", 'a' + i % 26);
	add(&a, "0\r\n\r\n");
	for (size_t i = 0; i < sizeof(head); i++)
		head[i] = (char)('a' + i % 26);
	expect("20000 chunks of one byte", a.p, a.len, MAXB, 0, WHOLE,
	    &(struct want){ .step = H1_DONE, .status = 200, .phrase = "OK",
	    .head = head, .headlen = sizeof(head), .got = 20000,
	    .end = a.len });
	free(a.p);
}

static void
test_after_end(void)
{
	static const struct {
		const char *name, *first;
	} firsts[] = {
		{ "after a length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
		    "\r\nhi" },
		{ "after chunks", "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
		    "chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n" },
		{ "after a 204", "HTTP/1.1 204 No Content\r\n\r\n" },
		{ "after a 100 and a length 0", "HTTP/1.1 100 Continue\r\n\r\n"
		    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	};
	const char *next = "HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew";
	char in[512], name[160];

	for (size_t i = 0; i < NELEM(firsts); i++) {
		const char *f = firsts[i].first;
		struct h1_resp r;
		size_t used = 0;
		enum h1_step s;
		int st = strstr(f, "204") ? 204 : 200;

		snprintf(in, sizeof(in), "%s%s", f, next);
		snprintf(name, sizeof(name), "bytes %s", firsts[i].name);
		expect(name, in, strlen(in), MAXB, 0, SPLIT, &(struct want){
		    .step = H1_DONE, .status = st,
		    .phrase = st == 204 ? "No Content" : "OK",
		    .head = st == 204 || strstr(f, "Length: 0") ? NULL : "hi",
		    .got = st == 204 || strstr(f, "Length: 0") ? 0 : 2,
		    .end = strlen(f) });
		/* What is left is the next answer, whole. */
		h1_resp_init(&r);
		s = h1_resp_feed(&r, in + strlen(f), strlen(next), MAXB, &used);
		ok(s == H1_DONE && r.status == 201 && r.got == 3 &&
		    used == strlen(next) && memcmp(r.head, "new", 3) == 0,
		    "%s: the rest is the next answer", name);
		h1_resp_clear(&r);
	}
}

static void
test_eof(void)
{
	static const struct {
		const char *name, *in;
	} mid[] = {
		{ "in the status line", "HTTP/1.1 2" },
		{ "at the end of the status line", "HTTP/1.1 200 OK\r\n" },
		{ "in the headers", "HTTP/1.1 200 OK\r\nContent-Le" },
		{ "before the blank line", "HTTP/1.1 200 OK\r\n"
		    "Content-Length: 5\r\n" },
		{ "in a body of known length", "HTTP/1.1 200 OK\r\n"
		    "Content-Length: 5\r\n\r\nabc" },
		{ "in a chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
		    "chunked\r\n\r\n5\r\nab" },
		{ "before the last chunk", "HTTP/1.1 200 OK\r\n"
		    "Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n" },
		{ "in the trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
		    "chunked\r\n\r\n0\r\nX-T: 1\r\n" },
		{ "after a 100 Continue", "HTTP/1.1 100 Continue\r\n\r\n" },
	};
	const char *in_middle = "the connection closed in the middle of the "
	    "answer";
	const char *none = "the server closed the connection without an "
	    "answer";
	char name[160];
	struct h1_resp r;
	size_t used = 7;

	expect("eof before any byte", "", 0, MAXB, 1, WHOLE,
	    &(struct want){ .step = H1_ERROR, .err = none });
	h1_resp_init(&r);
	ok(h1_resp_feed(&r, "x", 0, MAXB, &used) == H1_MORE && used == 0,
	    "feeding no byte: H1_MORE, none used");
	ok(h1_resp_eof(&r) == H1_ERROR && r.err != NULL &&
	    strcmp(r.err, none) == 0, "eof after no byte: without an answer");
	h1_resp_clear(&r);
	for (size_t i = 0; i < NELEM(mid); i++) {
		snprintf(name, sizeof(name), "eof %s", mid[i].name);
		EXPECT(name, mid[i].in, MAXB, 1, SPLIT, { .step = H1_ERROR,
		    .err = in_middle });
	}
	ok(strcmp(in_middle, none) != 0, "the two eof errors differ");
}

static void
test_clear(void)
{
	const char *part = "HTTP/1.1 200 OK\r\nX-Partial: abc";
	const char *next = "HTTP/1.1 204 No Content\r\n\r\n";
	struct buf big = { 0 };
	struct h1_resp r;
	size_t used;

	h1_resp_init(&r);
	ok(r.clen == -1 && r.state == H1S_STATUS && r.line == NULL &&
	    r.got == 0 && r.err == NULL, "init: no length, nothing held");
	ok(h1_resp_feed(&r, part, strlen(part), MAXB, &used) == H1_MORE &&
	    used == strlen(part) && r.line != NULL && r.linelen == strlen("X-Partial: abc"),
	    "a header line begun is held");
	h1_resp_clear(&r);
	ok(r.line == NULL && r.linelen == 0 && r.linecap == 0 &&
	    r.state == H1S_STATUS && r.clen == -1 && r.status == 0 &&
	    !r.started && r.err == NULL, "clear frees the line, inits again");
	ok(h1_resp_feed(&r, next, strlen(next), MAXB, &used) == H1_DONE &&
	    r.status == 204 && used == strlen(next),
	    "a cleared parser reads a new answer");
	h1_resp_clear(&r);
	h1_resp_clear(&r);
	ok(r.line == NULL, "clear twice");

	/* Cleared after an error with a long line held. */
	add(&big, "HTTP/1.1 200 OK\r\nX-Big: ");
	add_rep(&big, 'b', 60000);
	h1_resp_init(&r);
	ok(h1_resp_feed(&r, big.p, big.len, MAXB, &used) == H1_MORE &&
	    r.line != NULL && r.linecap >= 60000 &&
	    r.linecap <= H1_HEADERS_MAX, "a 60 KB line held");
	ok(h1_resp_feed(&r, big.p + 17, 8000, MAXB, &used) == H1_ERROR &&
	    r.err != NULL, "then too long");
	h1_resp_clear(&r);
	ok(r.line == NULL && r.linecap == 0 && r.err == NULL,
	    "clear after the error");
	free(big.p);

	/* A long line once read is not kept. */
	h1_resp_init(&r);
	big.p = NULL;
	big.len = big.cap = 0;
	add(&big, "HTTP/1.1 200 OK\r\nX-Big: ");
	add_rep(&big, 'b', 30000);
	ok(h1_resp_feed(&r, big.p, big.len, MAXB, &used) == H1_MORE &&
	    r.linecap > 4096, "a 30 KB line held");
	ok(h1_resp_feed(&r, "\r\nX-A: b\r\n", 10, MAXB, &used) == H1_MORE &&
	    r.linecap <= 4096, "its buffer given back once it is read");
	/* The last LF alone: the CR before it was held. */
	ok(h1_resp_feed(&r, "Content-Length: 0\r\n\r", 20, MAXB, &used) ==
	    H1_MORE && r.line != NULL, "a CR held");
	ok(h1_resp_feed(&r, "\n", 1, MAXB, &used) == H1_DONE && used == 1 &&
	    r.line == NULL && r.linecap == 0, "nothing held once done");
	h1_resp_clear(&r);
	free(big.p);
}

int
main(void)
{
	test_no_body();
	test_length();
	test_length_values();
	test_chunked();
	test_chunked_bad();
	test_informational();
	test_connection();
	test_until_close();
	test_retry_after();
	test_status_line();
	test_headers_max();
	test_max_body();
	test_many_chunks();
	test_after_end();
	test_eof();
	test_clear();
	return done_testing();
}
